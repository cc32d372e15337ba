"""The sync app: runs a connection's sync and records the outcome."""

from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Sync"

    def ready(self):
        # Register the tasks in every process (web included), so brokers.periodic_tasks can
        # queue sync_connection by name without importing this app.
        from sync import tasks  # noqa: F401
