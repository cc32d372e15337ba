"""A table of every connection's sync state: status, last and next sync, last error."""

from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from brokers.models import BrokerConnection
from brokers.providers.text import printable
from brokers.selectors import next_sync_at, periodic_task_of, periodic_tasks_for
from brokers.vocabulary import display_status

COLUMNS = ("ID", "OWNER", "BROKER", "LABEL", "STATUS", "LAST SYNC", "NEXT SYNC", "LAST ERROR")


def utc_iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else "-"


class Command(BaseCommand):
    help = (
        "Show a table of connections: id, owner, broker, label, status (PAUSED when auto-sync is off), "
        "last sync, next sync and last error. Times are UTC, ISO 8601."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner", metavar="USERNAME", help="Only this trader's connections.")

    def handle(self, *args, **options):
        connections = BrokerConnection.objects.select_related("owner").order_by("pk")
        if options["owner"] is not None:
            try:
                owner = get_user_model().objects.get_by_natural_key(options["owner"])
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {printable(options['owner'])!r}.") from None
            connections = connections.filter(owner=owner)
        connections = list(connections)
        if not connections:
            self.stdout.write("No connections.")
            return

        # One query for all schedules rather than one per row.
        tasks = periodic_tasks_for(connections)
        rows = [
            (
                str(c.pk),
                printable(c.owner.get_username()),
                c.broker_type,
                printable(c.label),
                display_status(c),
                utc_iso(c.last_sync_at),
                utc_iso(next_sync_at(c, periodic_task_of(c, tasks))),
                # Broker messages may span lines; a table row must not, nor carry escape codes.
                printable(" ".join(c.last_sync_error.split())) or "-",
            )
            for c in connections
        ]
        widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS) - 1)]
        for row in [COLUMNS, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
