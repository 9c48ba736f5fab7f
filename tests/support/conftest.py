import pytest


@pytest.fixture(autouse=True)
def loopback_webhooks(settings):
    """Webhook endpoints of these tests point at 127.0.0.1 over plain http (nothing is delivered: the
    deliveries they queue wait for a commit that the test's transaction never makes)."""
    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = True
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
