"""Every brokerage this installation reaches, once each, grouped by route, with the total (brokers.catalogue)."""

from django.core.management.base import BaseCommand

from brokers.catalogue import catalogue


class Command(BaseCommand):
    help = (
        "List every reachable brokerage once, grouped by how it connects (direct, ccxt, SnapTrade, "
        "ProjectX firms, Tradovate prop firms), with the total; MetaTrader through MetaApi is one route to any "
        "MT4/MT5 broker."
    )

    def handle(self, *args, **options):
        found = catalogue()
        for route, names in found.routes.items():
            self.stdout.write(self.style.MIGRATE_HEADING(f"{route} ({len(names)})"))
            for name in names:
                self.stdout.write(f"  {name}")
            if found.also[route]:
                self.stdout.write(f"  also reached here, counted above: {', '.join(found.also[route])}")
        if found.metatrader:
            self.stdout.write(self.style.MIGRATE_HEADING("MetaTrader through MetaApi"))
            self.stdout.write("  any MT4/MT5 broker (not counted: one route, not a named brokerage)")
        self.stdout.write(f"Total: {found.total} named brokerages")
