"""Read-only admin of trades: they come from brokers, never typed in; a deleted one stays as a tombstone."""

from django.contrib import admin

from journal.models import REPORTED_FIELDS, Trade
from journal.services import trades_delete


@admin.register(Trade)
class TradeAdmin(admin.ModelAdmin):
    list_display = ["executed_at", "account", "symbol", "side", "quantity", "price", "fees", "currency", "deleted_at"]
    list_filter = ["side", "asset_class", "currency", "account__connection__broker_type"]
    search_fields = ["symbol", "broker_trade_id", "account__external_id"]
    date_hierarchy = "executed_at"
    fields = ["account", *REPORTED_FIELDS, "imported_at", "deleted_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        trades_delete(trades=Trade.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        trades_delete(trades=queryset)
