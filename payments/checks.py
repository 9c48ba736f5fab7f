"""System checks of the payments app's deployment (`manage.py check --deploy`)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def ratelimit_counts_shared(app_configs, **kwargs) -> list[Warning]:
    """Rate limits counted per process let a client multiply its budget by the number of processes."""
    backend = settings.CACHES.get("ratelimit", {}).get("BACKEND", "")
    if backend.endswith("RedisCache"):
        return []
    return [
        Warning(
            "Rate limits (API and checkout) are counted in each process on its own.",
            hint="Set GATEWAY_RATELIMIT_CACHE_URL (or CACHE_URL) to a Redis shared by every web process, "
            "one that never evicts keys (maxmemory-policy noeviction).",
            id="payments.W001",
        )
    ]
