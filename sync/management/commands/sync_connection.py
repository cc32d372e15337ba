"""Sync one connection now: inline in this process (printing the run), or queued on the workers."""

from django.core.management.base import BaseCommand, CommandError

from brokers.models import BrokerConnection, SyncLog
from sync.runs import run_inline
from sync.tasks import sync_connection


class Command(BaseCommand):
    help = (
        "Run one sync of a connection in this process and print its outcome (status, imported, skipped, "
        "duration, each account, error); exits non-zero when the sync fails. With --async, queue it "
        "for the Celery workers instead and print the task id."
    )

    def add_arguments(self, parser):
        parser.add_argument("connection_id", type=int, help="The connection's id (see sync_status).")
        parser.add_argument(
            "--async",
            action="store_true",
            dest="queue",
            help="Queue the sync on the workers (with their retries) instead of running it here.",
        )

    def handle(self, *args, **options):
        connection_id = options["connection_id"]
        if not BrokerConnection.objects.filter(pk=connection_id).exists():
            raise CommandError(f"No connection with id {connection_id}")
        if options["queue"]:
            result = sync_connection.apply_async(
                kwargs={"connection_id": connection_id, "trigger": SyncLog.Trigger.MANUAL}
            )
            self.stdout.write(f"Queued the sync of connection {connection_id}: task id {result.id}")
            return

        # Inline there is no scheduler to come back later: rate-limit pauses are waited out here,
        # and a failure is final (the workers' retries apply with --async).
        sync_log = run_inline(connection_id, trigger=SyncLog.Trigger.MANUAL)
        if sync_log is None:
            raise CommandError(f"Connection {connection_id} was deleted before its sync started.")
        self._print_summary(sync_log)
        if sync_log.status == SyncLog.Status.FAILED:
            raise CommandError(f"The sync of connection {connection_id} failed: {sync_log.error_message}")

    def _print_summary(self, sync_log: SyncLog) -> None:
        style = {
            SyncLog.Status.SUCCESS: self.style.SUCCESS,
            SyncLog.Status.PARTIAL: self.style.WARNING,
            SyncLog.Status.SKIPPED: self.style.WARNING,
        }.get(sync_log.status, self.style.ERROR)
        self.stdout.write(style(f"Sync of connection {sync_log.connection_id}: {sync_log.status}"))
        self.stdout.write(f"  imported: {sync_log.trades_imported}")
        self.stdout.write(f"  skipped:  {sync_log.trades_skipped}")
        self.stdout.write(f"  duration: {sync_log.duration_ms} ms")
        for account, outcome in sync_log.detail.items():
            line = f"  account {account}: imported {outcome['imported']}, skipped {outcome['skipped']}"
            if outcome.get("error"):
                line += f", error: {outcome['error']}"
            self.stdout.write(line)
        if sync_log.error_message:
            self.stdout.write(f"  error: {sync_log.error_message}")
