"""Security: keys for secrets at rest, HTTPS, the proxy header, cookies, HSTS, CSRF origins, and the
authentication backends."""

import base64
import hashlib
import os

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from gateway.env import env_number

from .core import DEBUG, SECRET_KEY, env_bool, env_list

# Keys for secrets at rest (webhook signing secrets; payments/encryption.py): comma-separated Fernet keys,
# the first encrypts, all decrypt. Required outside DEBUG, like the secret key; in DEBUG a key derived
# from SECRET_KEY stands in.
GATEWAY_SECRETS_KEYS = env_list("GATEWAY_SECRETS_KEYS")
if not GATEWAY_SECRETS_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "GATEWAY_SECRETS_KEYS is not set. Webhook secrets are stored encrypted with it: set it to a "
            "Fernet key, e.g. python3 -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())', and keep it apart from database backups."
        )
    GATEWAY_SECRETS_KEYS = [
        base64.urlsafe_b64encode(
            hashlib.sha256(b"gateway secrets at rest:" + SECRET_KEY.encode()).digest()
        ).decode()
    ]
for _key in GATEWAY_SECRETS_KEYS:
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            "GATEWAY_SECRETS_KEYS holds a value that is not a Fernet key (32 bytes, url-safe base64)"
        ) from None

# HTTPS (what `manage.py check --deploy` asks for). Secure by default when DEBUG is off; the demo and the
# tests serve plain http on 127.0.0.1 and turn these off explicitly. HSTS is sticky in browsers for its
# whole lifetime, so it is opted into (README: Production).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# load balancers' probes and the metrics scraper may speak plain http to the app
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_number("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Behind a TLS-terminating proxy that sets it (and strips it from clients), e.g. "X-Forwarded-Proto: https".
_proxy_ssl_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "")
if _proxy_ssl_header:
    _header, _, _value = _proxy_ssl_header.partition(":")
    if not _header.strip() or not _value.strip():
        raise ImproperlyConfigured('DJANGO_SECURE_PROXY_SSL_HEADER is "Header-Name: value"')
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _header.strip().upper().replace("-", "_"), _value.strip())
# Origins allowed to POST forms (the admin) when they differ from the host, e.g. https://pay.example.com
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: admin login lockouts (limits.py)
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
