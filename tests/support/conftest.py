import pytest


@pytest.fixture(autouse=True)
def loopback(loopback_webhooks):
    """Webhook endpoints of these tests point at 127.0.0.1 over plain http (nothing is delivered: the
    deliveries they queue wait for a commit that the test's transaction never makes)."""
