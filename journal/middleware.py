"""Show every time in the trader's own time zone (their profile setting), for the whole request."""

from zoneinfo import ZoneInfo

from django.utils import timezone

from journal.models import TraderProfile


def trader_time_zone(user) -> ZoneInfo:
    name = TraderProfile.objects.filter(user=user).values_list("time_zone", flat=True).first()
    return ZoneInfo(name or "UTC")


class TraderTimeZoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.user.is_authenticated:
            return self.get_response(request)
        # override(), not activate(): the zone ends with the request and never leaks into the
        # next request this thread serves.
        with timezone.override(trader_time_zone(request.user)):
            return self.get_response(request)
