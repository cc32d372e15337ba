"""Log in to a connection's broker with its stored credentials and list the accounts found."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from brokers import crypto, services
from brokers.management.commands.create_connection import validation_message
from brokers.models import BrokerConnection
from brokers.providers.errors import BrokerConfigurationError, BrokerError
from brokers.providers.text import printable


class Command(BaseCommand):
    help = (
        "Check a connection's stored credentials: log in to its broker and list the accounts, "
        "saving nothing. Exits non-zero with the broker's message when the login or listing fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("connection_id", type=int, help="The connection's id (see sync_status).")

    def handle(self, *args, **options):
        connection_id = options["connection_id"]
        connection = BrokerConnection.objects.filter(pk=connection_id).first()
        if connection is None:
            raise CommandError(f"No connection with id {connection_id}")
        try:
            accounts = services.verify_credentials(
                broker_type=connection.broker_type,
                credentials=connection.credentials,
                environment=connection.environment,
            )
        except crypto.CredentialsUnreadable as exc:
            raise CommandError(str(exc)) from None
        except ValidationError as exc:
            raise CommandError(f"The stored credentials are incomplete: {validation_message(exc)}") from None
        except (BrokerError, BrokerConfigurationError) as exc:
            raise CommandError(printable(f"{connection.provider_name}: {exc}")) from None

        self.stdout.write(
            self.style.SUCCESS(
                f"Connection {connection.pk} ({printable(connection.label)}): logged in to {connection.provider_name}, "
                f"{len(accounts)} account(s)."
            )
        )
        for account in accounts:
            self.stdout.write(printable(f"  {account.external_id}  {account.name}  {account.currency}"))
