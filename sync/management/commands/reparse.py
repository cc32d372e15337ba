"""Run today's parsers over a connection's archived broker answers and import what they now find."""

from datetime import date, datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from brokers.models import BrokerConnection, SyncLog
from sync.reparse import ReparseRefused, connection_reparse


class Command(BaseCommand):
    help = (
        "Replay the broker answers archived by a connection's runs since a date through today's parser, "
        "without asking the broker: fills the journal lacks are imported (the unique key drops what it "
        "holds) and stored fills are corrected where the parser now reads them differently. Prints each "
        "account's counts; exits non-zero when nothing could be reparsed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--connection", type=int, required=True, help="The connection's id (see sync_status).")
        parser.add_argument(
            "--since", required=True, help="The runs started on or after this day (YYYY-MM-DD, this server's zone)."
        )
        parser.add_argument("--run", type=int, help="Only this run (a SyncLog id of the connection).")

    def handle(self, *args, **options):
        connection = BrokerConnection.objects.filter(pk=options["connection"]).first()
        if connection is None:
            raise CommandError(f"No connection with id {options['connection']}.")
        try:
            day = date.fromisoformat(options["since"])
        except ValueError:
            raise CommandError(f"--since must be a day written YYYY-MM-DD, got {options['since']!r}.") from None
        run_id = options["run"]
        if run_id is not None and not SyncLog.objects.filter(pk=run_id, connection=connection).exists():
            raise CommandError(f"Connection {connection.pk} has no run with id {run_id}.")
        since = timezone.make_aware(datetime.combine(day, time.min))
        try:
            run = connection_reparse(connection=connection, since=since, run_id=run_id)
        except ReparseRefused as refused:
            raise CommandError(refused.message) from None
        self.stdout.write(
            f"Reparse of {connection} (run {run.pk}): {run.get_status_display()}, "
            f"{run.trades_imported} imported, {run.trades_skipped} already there."
        )
        for account, counts in run.detail.items():
            line = (
                f"  {account}: {counts['imported']} imported, {counts['skipped']} already there, "
                f"{counts['corrected']} corrected, from {counts['reads']} archived reads"
            )
            self.stdout.write(line + (f" — {counts['error']}" if counts.get("error") else ""))
        if run.status == SyncLog.Status.FAILED:
            raise CommandError(run.error_message)
