"""The API's token check, apart from the API's views: DRF reads its authentication classes while it
defines its views, so a class in brokers/api.py would be imported half-made."""

from datetime import timedelta

from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from brokers.models import ApiToken

# last_used_at is written at most this often: a script polling every second must not write each time.
LAST_USED_GRAIN = timedelta(hours=1)


class HashedTokenAuthentication(TokenAuthentication):
    """Authorization: Token <key>, looked up by its SHA-256 (brokers.models.ApiToken): no key at rest."""

    def authenticate_credentials(self, key):
        now = timezone.now()
        token = ApiToken.objects.select_related("owner").filter(digest=ApiToken.digest_of(key)).first()
        if token is None or token.expires_at <= now or not token.owner.is_active:
            raise AuthenticationFailed("Invalid, expired or revoked token: ask for a new one.")
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRAIN:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.owner, token
