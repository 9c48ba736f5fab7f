"""Node URLs shown and quoted without their credentials: the expected texts are written out by hand from
the rule (scheme://host:port, `***@` for userinfo, `/…` for anything after the host)."""

import pytest
import requests

from payments.chains.redaction import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:s3cret@127.0.0.1:18443", "http://***@127.0.0.1:18443"),
        ("https://mainnet.infura.io/v3/APIKEY123", "https://mainnet.infura.io/…"),
        ("https://node.example:8443/?apikey=APIKEY123", "https://node.example:8443/…"),
        ("esplora+https://blockstream.info/api", "esplora+https://blockstream.info/…"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
        ("http://[::1]:8545/secret-path", "http://[::1]:8545/…"),
        ("", ""),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_text_removes_every_quoted_part_of_the_url():
    url = "http://us%40er:p%2Fss-word@127.0.0.1:9/v3/APIKEY123?token=TOKEN4567"
    # what requests itself says about this URL (only its path and query), and other ways code quotes it
    try:
        requests.post(url, timeout=2)
    except requests.ConnectionError as exc:
        library_text = str(exc)
    assert "APIKEY123" in library_text  # the leak this guards against
    texts = [
        library_text,
        f"cannot reach {url}",
        "password p/ss-word",
        "user us@er:p/ss-word@host",
        "TOKEN4567",
    ]
    for text in texts:
        redacted = redact_text(text, url=url)
        for secret in ("APIKEY123", "TOKEN4567", "p/ss-word", "p%2Fss-word"):
            assert secret not in redacted, (text, redacted)
    assert redact_text(f"cannot reach {url}", url=url) == "cannot reach http://***@127.0.0.1:9/…"
    # another URL's userinfo in the same text goes too
    assert redact_text("via https://a:b@proxy.example/x", url=url) == "via https://***@proxy.example/x"
