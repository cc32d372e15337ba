"""The brokers app: connections, accounts, sync logs and the broker adapters."""
from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "brokers"
    verbose_name = "Brokers"

    def ready(self):
        from brokers import crypto

        crypto.check_keys()
