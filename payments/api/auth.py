"""Bearer API keys with scopes. Kept in its own module: DRF imports it from the settings."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.throttling import BaseThrottle

from payments.accounts import api_key_authenticate
from payments.ratelimit import hit


class MerchantPrincipal:
    """The authenticated caller: a merchant acting through one API key."""

    is_authenticated = True

    def __init__(self, api_key):
        self.api_key = api_key
        self.merchant = api_key.merchant


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword or len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "use 'Authorization: Bearer <api key>'", code="invalid_authorization_header"
            )
        try:
            presented = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("malformed API key", code="invalid_api_key") from None
        api_key = api_key_authenticate(presented=presented, now=timezone.now())
        if api_key is None:
            raise exceptions.AuthenticationFailed("unknown API key", code="invalid_api_key")
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("this API key was revoked", code="api_key_revoked")
        if not api_key.merchant.is_active:
            raise exceptions.AuthenticationFailed("the merchant is disabled", code="merchant_disabled")
        return (MerchantPrincipal(api_key), api_key)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class HasScope(BasePermission):
    """Reads need `payments:read`, writes `payments:write` (a view may name other scopes)."""

    message = "this API key lacks the scope this request needs"

    def has_permission(self, request, view):
        if request.auth is None:
            raise exceptions.NotAuthenticated("an API key is required", code="authentication_required")
        needed = getattr(view, "read_scope" if request.method in SAFE_METHODS else "write_scope", None)
        if needed is None:
            needed = "payments:read" if request.method in SAFE_METHODS else "payments:write"
        if needed not in request.auth.scopes:
            raise exceptions.PermissionDenied(f"this API key lacks the scope {needed}", code="missing_scope")
        return True


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of `ApiKeyAuthentication` (drf-spectacular finds it by subclassing)."""

    target_class = "payments.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "a merchant API key (create_api_key)"}


class ApiKeyRateThrottle(BaseThrottle):
    """At most GATEWAY_API_RATE_PER_SECOND requests a second per API key (0: no limit), counted in a
    fixed window in Django's cache (per process unless CACHE_URL is shared): a guard against a runaway
    client, answered with 429 `rate_limited` and Retry-After."""

    def allow_request(self, request, view):
        limit = settings.GATEWAY_API_RATE_PER_SECOND
        if limit <= 0 or request.auth is None:
            return True
        self._wait = hit("api", str(request.auth.pk), limit, window_s=1)
        return self._wait is None

    def wait(self):
        return self._wait
