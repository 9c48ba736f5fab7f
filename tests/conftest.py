import pytest
from rest_framework.test import APIClient

from tests.factories import make_api_key, make_merchant

pytest_plugins = ["tests.nodes.fixtures", "tests.nodes.fixtures_litecoin"]


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


@pytest.fixture(autouse=True)
def reference_data(request):
    """Transactional tests flush the database, data migrations included: put the seeded assets and
    networks back (the same code as the migration)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield
        return
    import importlib

    from django.apps import apps

    seed = importlib.import_module("payments.migrations.0002_reference_data").seed
    request.getfixturevalue("transactional_db")
    seed(apps, None)
    yield


@pytest.fixture(autouse=True)
def fresh_reference_cache():
    """Each test sees the reference data as it is in its database, not as an earlier test cached it."""
    from payments.services import reference_cache_clear

    reference_cache_clear()
    yield
    reference_cache_clear()


@pytest.fixture(autouse=True)
def no_checkout_rate_limit(settings):
    """Tests make many checkout requests from one address within a minute; the rate-limit test sets its
    own limit."""
    settings.GATEWAY_CHECKOUT_RATE_PER_MINUTE = 0
    settings.GATEWAY_CHECKOUT_POLLS_PER_MINUTE = 0
    settings.GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE = 0
