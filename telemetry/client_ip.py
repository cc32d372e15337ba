"""The client's address as our own proxies saw it (X-Forwarded-For trusted only that far): one helper for
login throttling (django-axes), the sign-in limits and /metrics' network rule."""

from django.conf import settings


def client_ip(request) -> str | None:
    """REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT proxies the address the outermost of them saw.

    Only the entries our proxies appended are believed: anything further left was written by
    the client and could name any address (and so escape or trigger another's lockout).
    """
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return request.META.get("REMOTE_ADDR")
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < count:
        return request.META.get("REMOTE_ADDR")
    return forwarded[-count]
