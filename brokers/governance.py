"""The product rule "the product manager is told of every new broker", applied on each deploy."""

import structlog
from django.core.mail import mail_managers
from django.db import IntegrityError, transaction

from brokers.models import KnownProvider
from brokers.providers.registry import provider_classes

log = structlog.get_logger("brokers.governance")


def announce_new_providers() -> list[str]:
    """Record provider keys never seen before and mail the site's MANAGERS once about them."""
    new = []
    for key, cls in provider_classes().items():
        try:
            with transaction.atomic():
                _, created = KnownProvider.objects.get_or_create(key=key)
        except IntegrityError:  # another process recorded it at the same moment: it announces it
            created = False
        if created:
            new.append(f"{cls.display_name} ({key})")
    if new:
        mail_managers(
            f"New broker{'s' if len(new) > 1 else ''} available: {', '.join(new)}",
            "This deploy brought broker providers the journal did not offer before:\n\n"
            + "\n".join(f"- {name}" for name in new)
            + "\n\nTraders can connect them from the brokers page now. See docs/brokers/ for each one.",
        )
        log.info("new_providers_announced", providers=new)
    return new
