import pytest

from tests.webhooks.receiver import Receiver


@pytest.fixture(autouse=True)
def loopback(loopback_webhooks):
    """The tests' receivers listen on 127.0.0.1 over plain http, as an operator may allow."""


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()
