"""The JSON API under /api/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from brokers.api import (
    ConnectionLogList,
    ConnectionSyncView,
    ConnectionViewSet,
    ProviderList,
)
from journal.api import CalendarView, PositionList, RoundTripList, TradeList
from sync.api import AccountFileImportView, RunUndoView

app_name = "api"

router = SimpleRouter(use_regex_path=False)
router.register("connections", ConnectionViewSet, basename="connection")

urlpatterns = [
    *router.urls,
    path("connections/<int:pk>/sync/", ConnectionSyncView.as_view(), name="connection-sync"),
    path("connections/<int:pk>/logs/", ConnectionLogList.as_view(), name="connection-logs"),
    path("accounts/<int:pk>/import/", AccountFileImportView.as_view(), name="account-import"),
    path("runs/<int:pk>/undo/", RunUndoView.as_view(), name="run-undo"),
    path("providers/", ProviderList.as_view(), name="providers"),
    path("trades/", TradeList.as_view(), name="trades"),
    path("round-trips/", RoundTripList.as_view(), name="round-trips"),
    path("positions/", PositionList.as_view(), name="positions"),
    path("calendar/", CalendarView.as_view(), name="calendar"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI comes from our own static files (drf-spectacular-sidecar); the split view serves
    # its start-up script as a file, so the page passes the Content Security Policy.
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api:schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
]
