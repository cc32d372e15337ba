"""Re-encrypt every stored credential and token with the newest FIELD_ENCRYPTION_KEYS key."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from brokers import crypto
from brokers.models import BrokerConnection, SnapTradeUser


class Command(BaseCommand):
    help = (
        "Re-encrypt all broker credentials and tokens with the first key of FIELD_ENCRYPTION_KEYS. "
        "Put the new key first, keep the old ones after it, run this, then remove the old keys."
    )

    def handle(self, *args, **options):
        rotated = 0
        with transaction.atomic():
            for connection in BrokerConnection.objects.select_for_update().only(
                "pk", "credentials_ciphertext", "session_ciphertext"
            ):
                try:
                    connection.credentials_ciphertext = crypto.rotate(connection.credentials_ciphertext)
                    if connection.session_ciphertext:
                        connection.session_ciphertext = crypto.rotate(connection.session_ciphertext)
                except crypto.CredentialsUnreadable:
                    raise CommandError(
                        f"Connection {connection.pk} cannot be decrypted with any configured key; "
                        "nothing was changed. Add the key that wrote it to FIELD_ENCRYPTION_KEYS."
                    ) from None
                connection.save(update_fields=["credentials_ciphertext", "session_ciphertext"])
                rotated += 1
            registrations = 0
            for user in SnapTradeUser.objects.select_for_update().only("pk", "secrets_ciphertext"):
                try:
                    user.secrets_ciphertext = crypto.rotate(user.secrets_ciphertext)
                except crypto.CredentialsUnreadable:
                    raise CommandError(
                        f"SnapTrade registration {user.pk} cannot be decrypted with any configured key; "
                        "nothing was changed. Add the key that wrote it to FIELD_ENCRYPTION_KEYS."
                    ) from None
                user.save(update_fields=["secrets_ciphertext"])
                registrations += 1
        self.stdout.write(
            self.style.SUCCESS(
                f"Re-encrypted {rotated} connection(s) and {registrations} SnapTrade registration(s) "
                "with the newest key."
            )
        )
