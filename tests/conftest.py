import pytest
from rest_framework.test import APIClient

from tests.factories import make_api_key, make_merchant


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
