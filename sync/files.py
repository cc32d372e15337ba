"""A broker export imported into one account: the same fills, the same unique key and the same positions as a sync.

The file is read row by row into BrokerTrade values (journal.files) and goes through
journal.importing.import_trades inside one transaction: a row we cannot read rolls back every
batch before it, so a bad file stores nothing. Each import leaves a SyncLog (trigger "file")
on the account's connection, so the card and the history say what it did, and the file imported
is kept, compressed, in the run's archive (sync.archiving).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from decimal import Decimal, InvalidOperation
from itertools import islice
from typing import IO

import structlog
from django.db import transaction
from django.utils import timezone

from brokers.models import BrokerAccount, SyncLog
from brokers.providers.types import BrokerTrade
from journal.files.formats import open_as
from journal.files.matching import already_synced, is_content_keyed, stored_by_broker_id
from journal.files.reading import CONTENT_KEY_PREFIX, FileProblem, NotAFill, Options, Parsed
from journal.importing import import_trades
from journal.models import Trade
from journal.positions import ChangedInstruments, positions_recompute
from sync import archiving, locks

log = structlog.get_logger("sync.files")

# Rows compared with the journal's fills at once, for fills the file names by content only.
MATCH_BATCH = 1000
CHUNK = 1 << 20


@dataclass
class FileImportResult:
    """What one file did: imported, already there (by id or by content), not a fill, for another account."""

    format: str = ""
    imported: int = 0
    already_there: int = 0
    # Of already_there: fills a sync had stored under the broker's id, recognised by their content.
    matched_by_content: int = 0
    # Fills passed to the import under a content key (a sync after it replaces them: has_file_fills).
    content_keyed: int = 0
    busted: int = 0
    not_a_fill: int = 0
    other_account: int = 0
    notes: list[str] = field(default_factory=list)
    error: str = ""
    sha256: str = ""
    # Where the error is, when it is in one row (the row is the file's line; 1 = the header).
    error_row: int | None = None
    error_column: str = ""
    sync_log_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.error


def file_import(
    *,
    account: BrokerAccount,
    stream: IO[bytes],
    name: str,
    format: str = "",
    time_zone: tzinfo | None = None,
    trader_zone: tzinfo = UTC,
    contract_sizes: dict[str, Decimal] | None = None,
) -> FileImportResult:
    """Import a seekable binary stream into `account`; a FileProblem becomes the result's error (nothing stored).

    The import holds its connection's run lock, as a sync does: a file and a sync of the same
    connection never import at once, so neither misses the other's fills when they compare.
    """
    started, clock = timezone.now(), time.monotonic()
    result = FileImportResult()
    digest = result.sha256 = _sha256(stream)
    run_id = f"file-{uuid.uuid4().hex}"
    if not locks.acquire(account.connection_id, run_id):
        _refused(result, "A sync of this connection is running: import the file again once it has finished.")
    else:
        try:
            with locks.kept_alive(account.connection_id, run_id):
                _import(account, stream, format, time_zone, trader_zone, contract_sizes or {}, result)
        finally:
            locks.release(account.connection_id, run_id)
    sync_log = _record(account, result, name, digest, started, clock, run_id)
    result.sync_log_id = sync_log.pk
    if result.ok:
        _archive(account, stream, name, result, sync_log)
    log.info(
        "file_imported" if result.ok else "file_refused",
        account=account.pk,
        format=result.format,
        imported=result.imported,
        already_there=result.already_there,
        error=result.error,
    )
    return result


def _import(account, stream, format, time_zone, trader_zone, contract_sizes, result: FileImportResult) -> None:
    try:
        chosen, encoding = open_as(stream, format)
        result.format = chosen.key
        options = _options(account, chosen.key, time_zone, trader_zone)
        options.known_contract_sizes = {**options.known_contract_sizes, **contract_sizes}
        changes = ChangedInstruments(account.pk)
        rows = chosen.read(stream, encoding, options)
        with transaction.atomic():
            counts = import_trades(
                account.pk,
                _fills(rows, account, result),
                on_batch_committed=lambda batch, voided, last: changes.add(batch, voided),
            )
            if result.content_keyed and not account.has_file_fills:
                BrokerAccount.objects.filter(pk=account.pk).update(has_file_fills=True)
        result.imported, result.busted = counts.imported, counts.busted
        result.already_there += counts.skipped
        result.notes = options.notes
        if not (counts.imported or counts.skipped or counts.busted or result.already_there or result.not_a_fill):
            result.notes.append("The file holds no fill for this account.")
    except FileProblem as problem:
        _refused(result, problem.described())
        result.error_row, result.error_column = problem.row, problem.column
    except Exception:
        # A bug or the database failing: the transaction rolled back, so nothing is stored either way.
        log.exception("file_import_failed", account=account.pk, format=result.format)
        _refused(result, "The import failed on our side and stored nothing; it was logged. Please try again later.")
    else:
        positions_recompute(changed=changes.since)


def _archive(account: BrokerAccount, stream: IO[bytes], name: str, result: FileImportResult, sync_log: SyncLog) -> None:
    """Keep the imported file in the run's archive; a file the cap leaves out is said in the result and the log."""
    not_kept = archiving.keep_file(sync_log.pk, account.pk, stream, name)
    if not_kept:
        result.notes.append(not_kept)
        sync_log.detail["file"]["notes"] = result.notes
        sync_log.save(update_fields=["detail"])


def _refused(result: FileImportResult, error: str) -> None:
    result.error = error
    result.imported = result.already_there = result.matched_by_content = result.busted = 0
    result.not_a_fill = result.other_account = result.content_keyed = 0


def _sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def _options(account: BrokerAccount, format_key: str, time_zone: tzinfo | None, trader_zone: tzinfo) -> Options:
    stored = Trade.objects.filter(account=account).exclude(broker_trade_id__startswith=CONTENT_KEY_PREFIX)
    options = Options(time_zone=time_zone, trader_zone=trader_zone, account_currency=account.currency or "USD")
    if format_key == "metatrader5":
        sizes = stored.exclude(raw__contractSize=None).values_list("symbol", "raw__contractSize").distinct()
        options.known_contract_sizes = {symbol: _decimal(size) for symbol, size in sizes if _decimal(size)}
    else:
        options.known_multipliers = dict(
            stored.filter(asset_class="FUT").values_list("symbol", "multiplier").distinct()
        )
    return options


def _decimal(value) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number > 0 else None


def _names_of(account: BrokerAccount) -> set[str]:
    """How a file may name this account: its id, its name, or a MetaTrader login without its server."""
    names = {account.external_id, account.name, account.external_id.split("@")[0]}
    return {n.strip().lower() for n in names if n and n.strip()}


def _fills(
    rows: Iterable[Parsed | NotAFill], account: BrokerAccount, result: FileImportResult
) -> Iterator[BrokerTrade]:
    """The file's fills for this account, without those a sync already stored under the broker's id."""
    names = _names_of(account)
    mine = (row for row in rows if _counted(row, names, result))
    while batch := list(islice(mine, MATCH_BATCH)):
        yield from _unmatched(account, batch, result)


def _counted(row: Parsed | NotAFill, names: set[str], result: FileImportResult) -> bool:
    if isinstance(row, NotAFill):
        result.not_a_fill += 1
        return False
    if row.account and row.account.strip().lower() not in names:
        result.other_account += 1
        return False
    _check_lengths(row)
    return True


def _check_lengths(row: Parsed) -> None:
    """A value longer than the journal's column is the file's problem, named before anything is written."""
    for name in ("broker_trade_id", "order_id", "symbol", "currency", "asset_class"):
        limit = Trade._meta.get_field(name).max_length
        if len(getattr(row.trade, name)) > limit:
            raise FileProblem(f"the {name.replace('_', ' ')} is longer than {limit} characters", row=row.row)


def _unmatched(account: BrokerAccount, batch: list[Parsed], result: FileImportResult) -> Iterator[BrokerTrade]:
    """Fills keyed by content that match a fill a sync stored under the broker's id are already there.

    A file without the broker's ids (Tradovate Orders, NinjaTrader, ProjectX trades) cannot
    meet a synced fill on the unique key, so it is compared by content (journal.files.matching).
    """
    by_content = [p.trade for p in batch if is_content_keyed(p.trade.broker_trade_id)]
    synced = stored_by_broker_id(account.pk, by_content)
    for parsed in batch:
        trade = parsed.trade
        if is_content_keyed(trade.broker_trade_id) and not trade.busted:
            if synced and already_synced(trade, synced):
                result.already_there += 1
                result.matched_by_content += 1
                continue
            result.content_keyed += 1
        # Where the fill came from, for audits (and for undoing an import later): the file and its line.
        origin = {"sha256": result.sha256, "row": parsed.row}
        if isinstance(trade.raw, dict):
            trade.raw["file"] = origin  # the parser's own dict, made for this row: no copy per row
            yield trade
        else:
            yield dataclasses.replace(trade, raw={**trade.raw, "file": origin})


def _record(
    account: BrokerAccount, result: FileImportResult, name: str, digest: str, started, clock, run_id: str
) -> SyncLog:
    detail = {
        account.external_id: {
            "imported": result.imported,
            "skipped": result.already_there,
            "busted": result.busted,
            "not_a_fill": result.not_a_fill,
            "other_account": result.other_account,
        },
        "file": {"name": name[:200], "format": result.format, "sha256": digest, "notes": result.notes},
    }
    return SyncLog.objects.create(
        connection_id=account.connection_id,
        trigger=SyncLog.Trigger.FILE,
        status=SyncLog.Status.SUCCESS if result.ok else SyncLog.Status.FAILED,
        started_at=started,
        finished_at=timezone.now(),
        duration_ms=round((time.monotonic() - clock) * 1000),
        trades_imported=result.imported,
        trades_skipped=result.already_there,
        task_id=run_id,
        error_message=result.error[:2000],
        detail=detail,
    )
