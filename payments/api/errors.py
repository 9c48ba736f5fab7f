"""One error format for the whole API: {"error": {"code", "message", "param"}}, codes stable."""

from __future__ import annotations

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from payments.errors import GatewayError

# DRF's own codes, renamed to ours where they differ.
_DRF_CODES = {
    "parse_error": "invalid_json",
    "unsupported_media_type": "unsupported_media_type",
    "required": "parameter_missing",
    "null": "parameter_missing",
    "blank": "parameter_missing",
    "invalid": "invalid_parameter",
    "max_length": "parameter_too_long",
    "not_authenticated": "authentication_required",
    "authentication_failed": "invalid_api_key",
    "permission_denied": "missing_scope",
    "method_not_allowed": "method_not_allowed",
    "not_found": "not_found",
    "throttled": "rate_limited",
}


def error_body(code: str, message: str, param: str | None = None) -> dict:
    """The envelope of every error answer, from DRF views and from the edge (payments/api/edge.py) alike."""
    return {"error": {"code": code, "message": message, "param": param}}


def error_response(
    status_code: int, code: str, message: str, param: str | None = None, headers=None
) -> Response:
    return Response(error_body(code, message, param), status=status_code, headers=headers)


def _first_field_error(detail, path: tuple[str, ...] = ()) -> tuple[str | None, object]:
    """The dotted name of the first failing field and its error detail."""
    if isinstance(detail, dict) and detail:
        name, value = next(iter(detail.items()))
        if name != "non_field_errors":
            path = (*path, str(name))
        return _first_field_error(value, path)
    if isinstance(detail, list) and detail:
        return _first_field_error(detail[0], path)
    return (".".join(path) or None), detail


def exception_handler(exc, context):
    if isinstance(exc, GatewayError):
        return error_response(exc.http_status, exc.code, exc.message, exc.param)
    if isinstance(exc, Http404):
        return error_response(404, "not_found", "no such object")
    if isinstance(exc, exceptions.ValidationError):
        param, detail = _first_field_error(exc.detail)
        code = getattr(detail, "code", None) or "invalid_parameter"
        return error_response(400, _DRF_CODES.get(code, code), str(detail), param)
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            status_code = status.HTTP_401_UNAUTHORIZED
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
        else:
            status_code = exc.status_code
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return error_response(status_code, _DRF_CODES.get(code, code), str(exc.detail), None, headers)
    return None
