"""`manage.py check_beat`: exit 0 if beat dispatched recently (the compose healthcheck of beat)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from redis import RedisError

from telemetry import heartbeat


class Command(BaseCommand):
    help = "Checks that beat sent a message within BEAT_MAX_SILENCE_S; exits 1 saying what is wrong otherwise."

    def handle(self, *args, **options):
        try:
            silence = heartbeat.seconds_since_dispatch()
        except RedisError as exc:
            key = heartbeat.LAST_DISPATCH_KEY
            raise CommandError(f"Cannot read beat's heartbeat ({key}) from Redis: {exc}") from None
        if silence is None:
            raise CommandError("Beat has not dispatched anything yet (is it running against this Redis?).")
        if silence > settings.BEAT_MAX_SILENCE_S:
            limit = settings.BEAT_MAX_SILENCE_S
            raise CommandError(f"Beat's last dispatch was {silence:.0f} s ago (limit BEAT_MAX_SILENCE_S={limit}).")
        self.stdout.write(f"Beat dispatched {silence:.0f} s ago.")
