"""The SSRF guard: refused when an endpoint is saved and again at send time (DNS rebinding)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from payments.models import WebhookAttempt, WebhookEndpoint
from payments.webhooks import endpoints, guard
from payments.webhooks.delivery import deliver_due
from payments.webhooks.transport import Transport
from tests.factories import make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db
PUBLIC = "93.184.215.14"  # a global unicast address (nothing connects to it in these tests)


@pytest.fixture
def strict(settings):
    """The production defaults: https only, no private network allowed."""
    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = False
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = []


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://127.8.9.10/hook",
        "https://10.1.2.3/hook",
        "https://172.16.0.1/hook",
        "https://172.31.255.254/hook",
        "https://192.168.1.20/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
        "https://100.64.0.1/hook",
        "https://224.0.0.1/hook",
        "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 form of 169.254.169.254
        "https://[64:ff9b:1::a00:1]/hook",
        "https://[2002:a9fe:a9fe::1]/hook",  # 6to4
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
        "https://[::7f00:1]/hook",  # IPv4-compatible 127.0.0.1
        "https://[::ffff:0:7f00:1]/hook",  # IPv4-translated
        "https://[fec0::1]/hook",  # site-local
        "https://93.184.215.14:0/hook",  # port 0
        "https://localhost/hook",  # a name the system resolver maps to loopback
        "http://93.184.215.14/hook",  # plain http, not allowed by default
        "https://user:pass@93.184.215.14/hook",
        "ftp://93.184.215.14/hook",
        "https:///nohost",
        "https://no-such-host.invalid/hook",
    ],
)
def test_refused_when_an_endpoint_is_saved(strict, url):
    merchant = make_merchant()
    with pytest.raises(guard.UrlRefused) as refused:
        endpoints.endpoint_create(merchant=merchant, url=url, now=timezone.now())
    assert refused.value.code == "webhook_url_refused"
    assert not WebhookEndpoint.objects.exists()


def test_a_name_resolving_to_a_private_address_is_refused(strict):
    resolve = lambda host, port: ["10.0.0.7"]  # noqa: E731 (the answer a hostile DNS server gives)
    with pytest.raises(guard.UrlRefused, match="private"):
        guard.destination("https://hooks.example.com/x", resolve)
    # any one private answer among public ones is enough to refuse
    with pytest.raises(guard.UrlRefused):
        guard.destination("https://hooks.example.com/x", lambda h, p: [PUBLIC, "192.168.0.2"])


def test_public_https_is_accepted(strict):
    dest = guard.destination(f"https://{PUBLIC}:8443/hooks?x=1")
    assert dest.addresses == (PUBLIC,) and dest.port == 8443
    dest = guard.destination("https://hooks.example.com/x", lambda h, p: [PUBLIC, "2606:2800:220:1::1"])
    assert dest.host == "hooks.example.com"


def test_the_operator_may_allow_loopback_and_http(settings):
    settings.GATEWAY_WEBHOOK_ALLOW_HTTP = True
    settings.GATEWAY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert guard.destination("http://127.0.0.1:9/x").addresses == ("127.0.0.1",)
    with pytest.raises(guard.UrlRefused):
        guard.destination("http://10.0.0.1/x")


def test_dns_rebinding_is_refused_at_send_time(strict):
    """Public when saved, loopback when sent: the attempt fails without connecting."""
    merchant = make_merchant()
    answers = {"now": [PUBLIC]}
    resolve = lambda host, port: answers["now"]  # noqa: E731
    endpoints.endpoint_create(
        merchant=merchant, url="https://hooks.example.com/x", now=timezone.now(), resolve=resolve
    )
    new_intent(merchant)
    answers["now"] = ["127.0.0.1"]
    deliver_due(now=timezone.now(), transport=Transport(timeout_s=2, resolve=resolve))
    attempts = list(WebhookAttempt.objects.all())
    assert len(attempts) == 2
    assert all(a.outcome == "failed" and "SSRF guard" in a.error for a in attempts)
    assert all(a.status_code is None for a in attempts)
