"""Settings from the environment. PostgreSQL only: DATABASE_URL, or an embedded server when unset.

One module per domain, imported below in the order they are computed in; a part that needs an earlier
part's value imports it by name (`from .core import DEBUG`). The order matters: core sets
PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client, and core and security refuse to start
without the production keys before database starts an embedded PostgreSQL.
"""

# isort: skip_file
from .core import *  # noqa: F403
from .security import *  # noqa: F403
from .database import *  # noqa: F403
from .api import *  # noqa: F403
from .caches import *  # noqa: F403
from .limits import *  # noqa: F403
from .policy import *  # noqa: F403
from .logs import *  # noqa: F403
from .webhooks import *  # noqa: F403
from .console import *  # noqa: F403
from .finance import *  # noqa: F403
from .queues import *  # noqa: F403
from .observability import *  # noqa: F403

# Django reads every uppercase name of this module as a setting, this one too (a star import leaves it out).
from .caches import _REDIS_CACHE  # noqa: F401
