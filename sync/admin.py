"""The admin's sync runs gain "Undo": the run list is brokers' (SyncLogAdmin), the undo is the sync layer's."""

from django.contrib import admin, messages

from brokers.admin import SyncLogAdmin
from brokers.models import SyncLog
from sync.undo import UndoRefused, run_undo

# brokers registers the runs' admin; it cannot import the sync layer above it, so sync registers
# the same admin again with the action (brokers is installed, and its admin loaded, first).
admin.site.unregister(SyncLog)


@admin.register(SyncLog)
class SyncRunAdmin(SyncLogAdmin):
    actions = ["undo_runs"]
    list_display = [*SyncLogAdmin.list_display, "undone_at"]

    @admin.action(description="Undo the selected runs (remove the fills each added; the next sync reads them again)")
    def undo_runs(self, request, queryset):
        for run in queryset.select_related("connection"):
            try:
                removed = run_undo(run=run, by=request.user)
            except UndoRefused as refused:
                self.message_user(request, f"{run}: {refused.message}", messages.WARNING)
            else:
                self.message_user(request, f"{run}: undone, {removed.total} fills removed.", messages.SUCCESS)
