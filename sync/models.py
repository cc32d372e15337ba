"""Notices to traders about their syncs: repeated failures, and recovery afterwards."""

from django.conf import settings
from django.db import models


class Notice(models.Model):
    class Kind(models.TextChoices):
        REPEATED_FAILURE = "repeated_failure", "Sync keeps failing"
        RECOVERED = "recovered", "Sync recovered"
        CREDENTIALS = "credentials", "Credentials need attention"
        CREDENTIALS_EXPIRING = "expiring", "Credentials expire soon"
        LINK_EXPIRING = "link_expiring", "Sign-in link ends soon"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sync_notices")
    connection = models.ForeignKey("brokers.BrokerConnection", on_delete=models.CASCADE, related_name="notices")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "dismissed_at"], name="notice_owner_open")]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.connection}"
