"""The JSON API of file imports (a broker export posted into one of the trader's accounts) and of undoing a sync run."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from brokers.models import BrokerAccount, SyncLog
from journal.files.formats import CHOICES
from journal.files.metatrader import contract_sizes
from journal.middleware import trader_time_zone
from journal.models import validate_time_zone
from sync.files import file_import
from sync.undo import UndoRefused, run_undo


class FileImportRequestSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The broker's export as downloaded, or the template CSV.")
    format = serializers.ChoiceField(
        choices=[("", "recognise it from the file"), *CHOICES],
        required=False,
        allow_blank=True,
        help_text="Empty: recognised from the file's start; needed only when the answer asks for it.",
    )
    time_zone = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="The zone of the file's times without an offset (America/Chicago); empty: the format's default.",
    )

    contract_sizes = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=2000,
        help_text="MetaTrader only: contract sizes of symbols the sync has not met, e.g. EURUSD=100000, XAUUSD=100.",
    )

    def validate_contract_sizes(self, value):
        try:
            return contract_sizes(value or "")
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_file(self, value):
        if value.size > settings.FILE_IMPORT_MAX_BYTES:
            raise serializers.ValidationError(
                f"The file is larger than {settings.FILE_IMPORT_MAX_BYTES // 2**20} MB: export a shorter period."
            )
        return value

    def validate_time_zone(self, value):
        if value:
            try:
                validate_time_zone(value)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.messages) from None
        return value


class FileImportResultSerializer(serializers.Serializer):
    format = serializers.CharField(help_text="The format the file was read as.")
    imported = serializers.IntegerField(help_text="Fills the journal did not hold.")
    already_there = serializers.IntegerField(help_text="Fills the journal held already (by id, or by content).")
    matched_by_content = serializers.IntegerField(help_text="Of already_there: recognised by time, side, size, price.")
    busted = serializers.IntegerField(help_text="Fills the file marked busted, now removed.")
    not_a_fill = serializers.IntegerField(help_text="Rows that are no fill (cancelled orders, deposits, totals).")
    other_account = serializers.IntegerField(help_text="Rows naming another account, left out.")
    notes = serializers.ListField(child=serializers.CharField(), help_text="What the import assumed.")
    sync_log = serializers.IntegerField(help_text="The import's run in the connection's logs.")


class FileRefusedSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="Why nothing was imported, naming the row and column where there is one.")
    row = serializers.IntegerField(allow_null=True, help_text="The file's line (1 = the header), or null.")
    column = serializers.CharField(allow_blank=True, help_text="The column (or field), or empty.")
    sync_log = serializers.IntegerField(allow_null=True, help_text="The refused import's run, when the file was read.")


class AccountFileImportView(APIView):
    """Import a broker file into one of the trader's accounts: all of it, or nothing (the answer says why)."""

    parser_classes = [MultiPartParser]
    renderer_classes = [JSONRenderer]

    def handle_exception(self, exc):
        # A body that is no multipart form gets the same answer as a refused file.
        if isinstance(exc, ParseError):
            return _refused(f"The request is no file upload we can read ({exc.detail}).")
        return super().handle_exception(exc)

    @extend_schema(
        request={"multipart/form-data": FileImportRequestSerializer},
        responses={201: FileImportResultSerializer, 400: FileRefusedSerializer},
        operation_id="accounts_import_create",
    )
    def post(self, request, pk: int):
        account = get_object_or_404(BrokerAccount, pk=pk, connection__owner=request.user)
        given = FileImportRequestSerializer(data=request.data)
        if not given.is_valid():
            name, messages = next(iter(given.errors.items()))
            return _refused(f"{name}: {' '.join(str(m) for m in messages)}", column=name)
        upload = given.validated_data["file"]
        zone = given.validated_data.get("time_zone")
        result = file_import(
            account=account,
            stream=upload.file,
            name=upload.name or "",
            format=given.validated_data.get("format", ""),
            time_zone=ZoneInfo(zone) if zone else None,
            trader_zone=trader_time_zone(request.user),
            contract_sizes=given.validated_data.get("contract_sizes") or {},
        )
        if not result.ok:
            return _refused(result.error, row=result.error_row, column=result.error_column, sync_log=result.sync_log_id)
        shown = {name: getattr(result, name) for name in FileImportResultSerializer().fields if name != "sync_log"}
        return Response({**shown, "sync_log": result.sync_log_id}, status=status.HTTP_201_CREATED)


def _refused(error: str, *, row: int | None = None, column: str = "", sync_log: int | None = None) -> Response:
    body = {"error": error, "row": row, "column": column, "sync_log": sync_log}
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


class RunUndoneSerializer(serializers.Serializer):
    removed = serializers.IntegerField(help_text="Fills removed from the journal, all accounts together.")
    accounts = serializers.DictField(
        child=serializers.IntegerField(), help_text="Fills removed per account (the broker's account id)."
    )
    undone_at = serializers.DateTimeField()


class UndoRefusedSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why the run cannot be undone now; nothing was changed.")


class RunUndoView(APIView):
    """Undo one of the trader's sync runs: the fills it added leave the journal and the next sync reads them again."""

    renderer_classes = [JSONRenderer]

    @extend_schema(
        request=None,
        responses={200: RunUndoneSerializer, 409: UndoRefusedSerializer},
        operation_id="runs_undo_create",
    )
    def post(self, request, pk: int):
        run = get_object_or_404(SyncLog, pk=pk, connection__owner=request.user)
        try:
            removed = run_undo(run=run, by=request.user)
        except UndoRefused as refused:
            return Response({"detail": refused.message}, status=status.HTTP_409_CONFLICT)
        run.refresh_from_db(fields=["undone_at"])
        return Response({"removed": removed.total, "accounts": removed.by_account, "undone_at": run.undone_at})
