import pytest

from tests.webhooks.receiver import Receiver


@pytest.fixture(autouse=True)
def loopback_webhooks(settings):
    """The tests' receivers listen on 127.0.0.1 over plain http, as an operator may allow."""
    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = True
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()
