"""Repair drift between connections and their beat schedules, and report what changed."""

from django.core.management.base import BaseCommand
from django.db import transaction

from brokers import periodic_tasks


class Command(BaseCommand):
    help = "Create missing, fix wrong and delete orphaned broker-sync PeriodicTasks; prints every change."

    def handle(self, *args, **options):
        with transaction.atomic():
            changes = periodic_tasks.reconcile()
        total = sum(len(names) for names in changes.values())
        for kind, names in changes.items():
            for name in names:
                self.stdout.write(f"{kind}: {name}")
        self.stdout.write(self.style.SUCCESS(f"{total} schedule(s) repaired." if total else "All schedules in step."))
