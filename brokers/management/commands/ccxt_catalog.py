"""Write the ccxt family's generated parts: its catalog, rate_limits.toml entries and docs/brokers/ccxt.md rows."""

from django.core.management.base import BaseCommand, CommandError

from brokers.providers.ccxt import catalog as ccxt_catalog


class Command(BaseCommand):
    help = (
        "Regenerate the ccxt exchanges' catalog, limits entries and documentation rows from the installed ccxt "
        "(run after upgrading ccxt). Without --write, only say whether the files are current."
    )

    def add_arguments(self, parser):
        parser.add_argument("--write", action="store_true", help="rewrite the generated parts of both files")

    def handle(self, *args, **options):
        if options["write"]:
            ccxt_catalog.write()
            written = (ccxt_catalog.CATALOG_FILE, ccxt_catalog.LIMITS_FILE, ccxt_catalog.DOC_FILE)
            self.stdout.write(f"Wrote {', '.join(str(path) for path in written)}.")
            return
        stale = [
            str(path)
            for path, rendered in (
                (ccxt_catalog.CATALOG_FILE, ccxt_catalog.rendered_catalog()),
                (ccxt_catalog.LIMITS_FILE, ccxt_catalog.rendered_limits()),
                (ccxt_catalog.DOC_FILE, ccxt_catalog.rendered_doc()),
            )
            if path.read_text() != rendered
        ]
        if stale:
            raise CommandError(f"Out of date with the installed ccxt: {', '.join(stale)}. Run with --write.")
        self.stdout.write("The ccxt catalog, limits and documentation rows match the installed ccxt.")
