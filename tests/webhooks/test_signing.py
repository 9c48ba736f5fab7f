"""Signatures checked by `standardwebhooks` from PyPI, an implementation independent of ours."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from payments.errors import InvalidRequest
from payments.webhooks import secret_generate, secret_key, signature, signed_headers

BODY = json.dumps({"id": "evt_1", "type": "payment.paid", "data": {"amount": "10.00"}}).encode()


def headers_for(*secrets: str, body: bytes = BODY, msg_id: str = "evt_1", timestamp: int | None = None):
    return signed_headers(
        secrets=list(secrets), msg_id=msg_id, timestamp=timestamp or int(time.time()), body=body
    )


def test_a_signed_delivery_verifies_with_the_reference_library():
    secret = secret_generate()
    headers = headers_for(secret)
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_during_rotation_both_secrets_verify():
    old, new = secret_generate(), secret_generate()
    headers = headers_for(new, old)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_generate()).verify(BODY, headers)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h: (BODY.replace(b"10.00", b"99.00"), h),
        lambda h: (BODY, h | {"webhook-id": "evt_2"}),
        lambda h: (BODY, h | {"webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}),
    ],
    ids=["body", "id", "timestamp"],
)
def test_any_change_to_body_id_or_timestamp_fails_verification(tamper):
    secret = secret_generate()
    body, headers = tamper(headers_for(secret))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_a_stale_timestamp_is_refused_by_the_receiver():
    secret = secret_generate()
    headers = headers_for(secret, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_signature_matches_the_spec_example():
    # The example of the Standard Webhooks specification (its reference libraries' test vector).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        signature(secret=secret, msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330, body=body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="])
def test_malformed_secrets_are_refused_with_a_stable_code(bad):
    with pytest.raises(InvalidRequest) as raised:
        secret_key(bad)
    assert raised.value.code == "invalid_webhook_secret"
