"""The merchant API: Django REST framework and its OpenAPI schema (drf-spectacular)."""

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["payments.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["payments.api.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["payments.api.auth.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["payments.api.edge.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "payments.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Payment gateway API",
    "DESCRIPTION": "Merchant API of the self-hosted, non-custodial crypto payment gateway.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several objects have a `kind` or a `state`: name each choice set after its object.
    "ENUM_NAME_OVERRIDES": {
        "RefundStateEnum": "payments.models.refunds.RefundState",
        "RefundAmountKindEnum": "payments.models.refunds.RefundAmountKind",
        "SettlementKindEnum": "payments.models.settlements.SettlementKind",
    },
}
