import pytest
from rest_framework.test import APIClient

from tests.factories import make_api_key, make_merchant

pytest_plugins = ["tests.nodes.fixtures", "tests.nodes.fixtures_litecoin"]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database allows TRUNCATE of the append-only audit log (tests flush it between tests); a
    production database never does (support/migrations/0001_audit_log.py)."""
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        name = connection.ops.quote_name(connection.settings_dict["NAME"])
        cursor.execute(f"ALTER DATABASE {name} SET gateway.audit_truncate_allowed = 'on'")
        cursor.execute("SET gateway.audit_truncate_allowed = 'on'")


@pytest.fixture
def merchant(db):
    return make_merchant()


@pytest.fixture
def api_secret(merchant):
    return make_api_key(merchant)[1]


@pytest.fixture
def api(api_secret):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_secret}")
    return client


@pytest.fixture
def loopback_webhooks(settings):
    """Webhook endpoints on 127.0.0.1 over plain http, as an operator may allow: the tests' receivers."""
    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = True
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]


@pytest.fixture(autouse=True)
def reference_data(request):
    """Transactional tests flush the database, data migrations included: put the seeded assets and
    networks, and the roles' groups, back (the same code as the migrations)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield
        return
    import importlib

    from django.apps import apps

    seed = importlib.import_module("payments.migrations.0002_reference_data").seed
    display = importlib.import_module("payments.migrations.0010_asset_display_decimals")
    request.getfixturevalue("transactional_db")
    seed(apps, None)
    display.seed_display_decimals(apps, None)
    importlib.import_module("payments.migrations.0015_network_explorer_tx_url").fill(apps, None)
    importlib.import_module("payments.migrations.0018_network_base58_versions").fill(apps, None)
    importlib.import_module("support.migrations.0003_roles").roles_create(apps, None)
    importlib.import_module("support.migrations.0005_roles_approvals").roles_extend(apps, None)
    importlib.import_module("support.migrations.0006_safe_actions").decision_views_grant(apps, None)
    importlib.import_module("support.migrations.0008_roles_treasury").roles_extend(apps, None)
    importlib.import_module("support.migrations.0010_roles_refunds").roles_extend(apps, None)
    importlib.import_module("support.migrations.0011_roles_finance").roles_extend(apps, None)
    importlib.import_module("support.migrations.0013_roles_close_verification").roles_extend(apps, None)
    yield


# What the tests give every network that has no node of its own: a URL that nothing listens on. Payments
# are offered and accepted only on watched networks (enabled, with a node), and development networks start
# disabled outside the demo and the tests; tests that scan point their network at a real node themselves.
UNREACHABLE_NODE = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def networks_watched(request, reference_data):
    """Every network enabled and with a node URL, for tests that use the database."""
    uses_db = {"db", "transactional_db", "django_db_setup"} & set(request.fixturenames)
    as_migrated = request.node.get_closest_marker("networks_as_migrated") is not None
    if as_migrated or (not uses_db and request.node.get_closest_marker("django_db") is None):
        yield
        return
    from payments.models import Network

    if "transactional_db" not in request.fixturenames:
        request.getfixturevalue("db")
    Network.objects.filter(rpc_url="").update(rpc_url=UNREACHABLE_NODE)
    Network.objects.update(enabled=True)
    yield


@pytest.fixture(autouse=True)
def fresh_reference_cache():
    """Each test sees the reference data and API keys as they are in its database, not as an earlier test
    cached them."""
    from payments.accounts import api_key_cache_clear
    from payments.services import reference_cache_clear

    reference_cache_clear()
    api_key_cache_clear()
    yield
    reference_cache_clear()
    api_key_cache_clear()


@pytest.fixture(autouse=True)
def no_checkout_rate_limit(settings):
    """Tests make many checkout requests from one address within a minute; the rate-limit test sets its
    own limit."""
    settings.GATEWAY_CHECKOUT_RATE_PER_MINUTE = 0
    settings.GATEWAY_CHECKOUT_POLLS_PER_MINUTE = 0
    settings.GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE = 0
