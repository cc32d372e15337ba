from django.urls import path

from journal import positions_views, views

app_name = "journal"
urlpatterns = [
    path("", views.trade_list, name="trades"),
    path("round-trips/", positions_views.round_trip_list, name="round_trips"),
    path("round-trips/<int:pk>/fills/", positions_views.round_trip_fills, name="round_trip_fills"),
    path("positions/", positions_views.position_list, name="positions"),
    path("calendar/", positions_views.month_calendar, name="calendar"),
    path("profile/", views.profile, name="profile"),
]
