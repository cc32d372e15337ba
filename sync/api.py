"""The JSON API of undoing a sync run."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from brokers.models import SyncLog
from sync.undo import UndoRefused, run_undo


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
