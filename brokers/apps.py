"""The brokers app: connections, accounts, sync logs and the broker adapters."""

from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "brokers"
    verbose_name = "Brokers"

    def ready(self):
        from django.db.models.signals import post_migrate

        from brokers import crypto

        crypto.check_keys()
        # Every deploy migrates: that is when a new provider arrives and the managers hear of it.
        post_migrate.connect(_announce_after_migrate, sender=self)


def _announce_after_migrate(sender, **kwargs):
    from brokers.governance import announce_new_providers

    announce_new_providers()
