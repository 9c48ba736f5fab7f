"""The edge every request passes before a view: input that no part of the gateway can store (NUL bytes,
lone surrogates, nesting deeper than any real payload) is refused here once, and the errors Django
answers itself under /api/ (unknown paths, oversized bodies, crashes) keep the API's error envelope.

Every refusal is {"error": {"code", "message", "param"}} with a stable code, like the API's own errors."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from .errors import error_body

logger = logging.getLogger(__name__)

# PostgreSQL text cannot hold NUL, and UTF-8 cannot encode a lone surrogate: neither can be stored, so
# neither is ever accepted.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Deeper than any payment payload needs (metadata is an object inside the body), far below the depth
# at which parsing or encoding would exhaust the stack.
MAX_JSON_DEPTH = 32


class PublicIdConverter:
    """A public id or checkout token in a path: base62/base64url characters only, so nothing else
    (NUL, '%', quotes, spaces) ever reaches a query; anything else is a 404."""

    regex = "[A-Za-z0-9_-]{1,64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


def unstorable(text: str) -> bool:
    return _UNSTORABLE.search(text) is not None


class InputGuardMiddleware:
    """Refuses a path or query parameter holding a NUL byte or a lone surrogate with a 400
    `invalid_characters`, for the API and the checkout alike, before any view or query runs; drops such
    cookies."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # A cookie that cannot be stored (a forged session id with a NUL) is dropped, as if never sent:
        # the session and CSRF machinery would otherwise take it to the database.
        for name in [n for n, v in request.COOKIES.items() if unstorable(n) or unstorable(v)]:
            del request.COOKIES[name]
        if unstorable(request.path):
            return JsonResponse(
                error_body("invalid_characters", "the path holds a NUL byte or an invalid character"),
                status=400,
            )
        for name, values in request.GET.lists():
            if unstorable(name) or any(unstorable(v) for v in values):
                return JsonResponse(
                    error_body(
                        "invalid_characters",
                        "a query parameter holds a NUL byte or an invalid character",
                        None if unstorable(name) else name,
                    ),
                    status=400,
                )
        response = self.get_response(request)
        if response.status_code == 404 and _is_api(request) and not _is_json(response):
            # With DEBUG on (the demo), Django answers an unknown path with its own page, not handler404.
            return not_found(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # A body over the size limit surfaces while the view reads it: the same answer with DEBUG on or off.
        if isinstance(exception, RequestDataTooBig):
            return bad_request(request, exception)
        return None


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


def _check_parsed(data: Any) -> None:
    """Walk a parsed body without recursion: every key and string storable, nesting bounded."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ParseError(
                    f"the body is nested deeper than {MAX_JSON_DEPTH} levels", "nesting_too_deep"
                )
            if isinstance(value, dict):
                for key, item in value.items():
                    if unstorable(key):
                        raise ParseError("a key holds a NUL byte or a lone surrogate", "invalid_characters")
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and unstorable(value):
            raise ParseError("a string holds a NUL byte or a lone surrogate", "invalid_characters")


# A JSON string (escapes included) or one bracket: what the depth count looks at in the raw body.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_depth(raw: bytes) -> None:
    """Nesting counted on the raw bytes, before any parser recurses: the C parser's own guard depends on
    the interpreter's recursion limit, which imported libraries raise (web3's py_ecc sets 100,000), and
    past the stack's real depth the process dies instead of raising."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ParseError(
                    f"the body is nested deeper than {MAX_JSON_DEPTH} levels", "nesting_too_deep"
                )
        elif token in (b"]", b"}"):
            depth -= 1


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys repeat is ambiguous (parsers differ on which value wins): refused."""
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ParseError("an object has the same key twice", "duplicate_key")
    return data


class StrictJSONParser(JSONParser):
    """JSON bodies, refused with a 400 when they hold what cannot be stored, repeat a key or are nested
    too deeply (checked on the raw bytes first)."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        _check_depth(raw)
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        try:
            data = json.loads(
                raw.decode(encoding),
                parse_constant=_no_constant if self.strict else None,
                object_pairs_hook=_unique_keys,
            )
        except RecursionError:
            raise ParseError(
                f"the body is nested deeper than {MAX_JSON_DEPTH} levels", "nesting_too_deep"
            ) from None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            raise ParseError(f"JSON parse error - {exc}") from None
        _check_parsed(data)
        return data


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        if _is_api(request):
            return JsonResponse(
                error_body("request_too_large", "the request body is larger than the server accepts"),
                status=413,
            )
        return HttpResponse("Request body too large", status=413, content_type="text/plain")
    if _is_api(request):
        return JsonResponse(error_body("bad_request", "the request could not be understood"), status=400)
    return defaults.bad_request(request, exception)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("not_found", "no such object or path"), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            error_body("internal_error", "the server failed; the request may be retried"), status=500
        )
    return defaults.server_error(request)
