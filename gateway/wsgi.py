"""The WSGI application (gunicorn `gateway.wsgi:application`).

Everything a request can import is imported here, at start, and then frozen out of the garbage
collector's reach (`gc.freeze`): Django, DRF, the URLconf's views and what they import (web3 and its
ABI machinery among them) are hundreds of thousands of long-lived objects that every full collection
walked. Measured in a process with the gateway loaded, creating intents: full collections of 116-183
ms before, 11-25 ms after, each a pause in the middle of some request every few seconds under load."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
application = get_wsgi_application()


def _warm_and_freeze() -> None:
    from django.urls import get_resolver

    get_resolver().check()  # imports the URLconf: every view module and what it imports
    gc.collect()
    gc.freeze()


_warm_and_freeze()
