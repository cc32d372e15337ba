"""`manage.py recompute_positions`: round trips and positions of every account rebuilt from its fills."""

from django.core.management.base import BaseCommand

from brokers.models import BrokerAccount
from journal.positions import positions_recompute_account


class Command(BaseCommand):
    help = (
        "Rebuilds every account's round trips from its stored fills: once after upgrading (fills imported "
        "before round trips existed), or after fills were deleted outside the journal's services."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account", type=int, help="Only this account (its id).")

    def handle(self, *args, account=None, **options):
        accounts = BrokerAccount.objects.order_by("pk")
        if account is not None:
            accounts = accounts.filter(pk=account)
        for row in accounts:
            count = positions_recompute_account(account_id=row.pk)
            self.stdout.write(f"{row.external_id}: {count} round trip{'s' if count != 1 else ''}")
