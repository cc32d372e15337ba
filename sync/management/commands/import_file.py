"""Import a broker export into one account, as the page does, and print what it did."""

from pathlib import Path
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from brokers.models import BrokerAccount
from journal.files.formats import BY_KEY
from journal.files.metatrader import contract_sizes
from journal.middleware import trader_time_zone
from journal.models import validate_time_zone
from sync.files import file_import


class Command(BaseCommand):
    help = (
        "Import a broker file (Tradovate, NinjaTrader, ProjectX, IBKR Flex XML, MetaTrader 5 report, or the "
        "template CSV) into one account: every fill the journal does not hold, or nothing when a row is bad. "
        "Prints imported / already there / not a fill; exits non-zero when the file is refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account", type=int, required=True, help="The account's id (the API lists them).")
        parser.add_argument("path", help="The file, as downloaded from the broker.")
        parser.add_argument(
            "--format", default="", choices=["", *BY_KEY], help="Only when the file's format is not recognised."
        )
        parser.add_argument(
            "--contract-size",
            action="append",
            default=[],
            metavar="SYMBOL=SIZE",
            help="MetaTrader: the contract size of a symbol the sync has not met (repeat for each).",
        )
        parser.add_argument(
            "--time-zone", default="", help="The zone of times written without an offset (e.g. America/Chicago)."
        )

    def handle(self, *args, **options):
        account = BrokerAccount.objects.select_related("connection__owner").filter(pk=options["account"]).first()
        if account is None:
            raise CommandError(f"No account with id {options['account']}")
        zone = None
        if options["time_zone"]:
            try:
                validate_time_zone(options["time_zone"])
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            zone = ZoneInfo(options["time_zone"])
        try:
            sizes = contract_sizes(",".join(options["contract_size"]))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            stream = open(options["path"], "rb")  # noqa: SIM115 -- closed below, after the import
        except OSError as exc:
            raise CommandError(f"Cannot read {options['path']}: {exc.strerror}") from None
        with stream:
            result = file_import(
                account=account,
                stream=stream,
                name=Path(options["path"]).name,
                format=options["format"],
                time_zone=zone,
                trader_zone=trader_time_zone(account.connection.owner),
                contract_sizes=sizes,
            )
        if not result.ok:
            raise CommandError(f"Nothing imported: {result.error}")
        self.stdout.write(
            f"{result.format}: {result.imported} imported, {result.already_there} already there, "
            f"{result.not_a_fill} not a fill, {result.other_account} of another account (run {result.sync_log_id})"
        )
        for note in result.notes:
            self.stdout.write(f"Note: {note}")
