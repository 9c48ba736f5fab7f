"""Node URLs carry credentials: `http://user:pass@host:port` for Bitcoin Core, an API key in the path for
hosted EVM nodes (`https://mainnet.infura.io/v3/KEY`), sometimes in the query. What the admin shows, the
logs and the exception messages get only `scheme://host:port` and a mark that more was there.

`redact_url` is the one way a node URL is shown; `redact_text` takes any message (an exception's text, a
traceback) and removes every part of the URL that may be a secret, however the library that wrote it
quoted the URL (whole, only its path as requests does, or its userinfo).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

HIDDEN = "…"
HIDDEN_USERINFO = "***"
# A path segment or query value this long may be an API key; shorter ones (`api`, `v3`) are left alone.
_SECRET_MIN_LENGTH = 8
_USERINFO_IN_ANY_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")


def redact_url(url: str) -> str:
    """`scheme://host:port`, with `***@` where the URL had a user or password and `/…` where it had
    anything after the host; "" for an empty URL. Never raises: an unparsable URL gives only its scheme."""
    if not url:
        return ""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme}://{HIDDEN}" if scheme.isascii() and scheme.isalnum() else HIDDEN
    if ":" in host:
        host = f"[{host}]"  # IPv6
    shown = f"{parts.scheme}://" if parts.scheme else ""
    if parts.username is not None or parts.password is not None:
        shown += f"{HIDDEN_USERINFO}@"
    shown += host + (f":{port}" if port is not None else "")
    if parts.path.strip("/") or parts.query or parts.fragment:
        shown += f"/{HIDDEN}"
    return shown


def redact_text(text: str, *, url: str) -> str:
    """`text` with `url` shown as `redact_url(url)` and its userinfo, path, query and their long parts
    removed wherever they appear; the userinfo of any other URL in `text` is removed too."""
    if url:
        for secret, shown in _secrets(url):
            text = text.replace(secret, shown)
    return _USERINFO_IN_ANY_URL.sub(lambda m: f"{m['scheme']}{HIDDEN_USERINFO}@", text)


def _secrets(url: str) -> list[tuple[str, str]]:
    """(what to look for, what to show instead), longest first so that a whole URL is replaced before
    its parts."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port, like the HTTP libraries would
    except ValueError:
        return [(url, redact_url(url))]
    pairs: dict[str, str] = {url: redact_url(url), url.strip(): redact_url(url)}
    if "+" in parts.scheme:  # esplora+https://...: the backend is given the URL without the prefix
        bare = url.strip().split("+", 1)[1]
        pairs[bare] = redact_url(bare)
    after_host = (
        parts.path
        + (f"?{parts.query}" if parts.query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )
    if after_host.strip("/"):
        pairs[after_host] = f"/{HIDDEN}"
        if parts.query:
            pairs[f"?{parts.query}"] = f"?{HIDDEN}"
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        pairs[userinfo + "@"] = f"{HIDDEN_USERINFO}@"
        pairs[unquote(userinfo) + "@"] = f"{HIDDEN_USERINFO}@"
    for value in (parts.password, unquote(parts.password or "")):
        if value and len(value) >= 4:
            pairs[value] = HIDDEN_USERINFO
    pieces = parts.path.split("/") + re.split(r"[&=;]", parts.query)
    for piece in pieces:
        for value in (piece, unquote(piece)):
            if len(value) >= _SECRET_MIN_LENGTH:
                pairs[value] = HIDDEN
    return sorted(pairs.items(), key=lambda pair: len(pair[0]), reverse=True)
