"""Create the demo trader and a demo connection with auto-sync on (idempotent)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from brokers import periodic_tasks, services
from brokers.models import BrokerConnection

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-trader"


class Command(BaseCommand):
    help = "Create the demo trader (demo / demo-trader) and a demo broker connection that syncs every 5 minutes."

    def handle(self, *args, **options):
        periodic_tasks.ensure_interval_schedules()
        user, created = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        if not BrokerConnection.objects.filter(owner=user, broker_type="demo").exists():
            services.connection_create(
                owner=user,
                broker_type="demo",
                label="Demo futures & stocks",
                credentials={"api_key": "demo-key", "scenario": "normal"},
                sync_interval_min=5,
            )
            self.stdout.write("Created a demo connection; its first sync starts now.")
        self.stdout.write(self.style.SUCCESS(f"Log in as {DEMO_USERNAME} / {DEMO_PASSWORD}"))
