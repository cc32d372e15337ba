"""The product rule "the product manager is told of every new broker", applied on each deploy."""

import structlog
from django.core.mail import mail_managers
from django.db import IntegrityError, transaction

from brokers.models import KnownProvider
from brokers.providers.registry import provider_classes

log = structlog.get_logger("brokers.governance")

# Up to this many brokers are named in the subject; a family (93 exchanges) is counted there instead.
NAMED_IN_SUBJECT = 3


def announce_new_providers() -> list[str]:
    """Record provider keys never seen before and mail the site's MANAGERS once about them.

    One mail per deploy lists every change, however many brokers arrive at once. Keys seen
    before and no longer installed (a ccxt upgrade that drops an exchange, a module taken out
    of BROKER_PROVIDERS) are named in the same mail and forgotten, so a return is news again.
    """
    installed = provider_classes()
    new = []
    for key, cls in installed.items():
        try:
            with transaction.atomic():
                _, created = KnownProvider.objects.get_or_create(key=key)
        except IntegrityError:  # another process recorded it at the same moment: it announces it
            created = False
        if created:
            new.append(f"{cls.display_name} ({key})")
    gone = []
    for key in sorted(set(KnownProvider.objects.values_list("key", flat=True)) - set(installed)):
        deleted, _ = KnownProvider.objects.filter(key=key).delete()
        if deleted:  # the process that removed the row is the one that announces it
            gone.append(key)
    if new or gone:
        mail_managers(_subject(new, gone), _body(new, gone))
        log.info("provider_changes_announced", providers=new, removed=gone)
    return new


def _subject(new: list[str], gone: list[str]) -> str:
    parts = []
    if new:
        if len(new) <= NAMED_IN_SUBJECT:
            parts.append(f"New broker{'s' if len(new) > 1 else ''} available: {', '.join(new)}")
        else:
            parts.append(f"{len(new)} new brokers available")
    if gone:
        parts.append(f"{len(gone)} broker{'s' if len(gone) > 1 else ''} no longer offered")
    return "; ".join(parts)


def _body(new: list[str], gone: list[str]) -> str:
    text = ""
    if new:
        text += (
            "This deploy brought broker providers the journal did not offer before:\n\n"
            + "\n".join(f"- {name}" for name in new)
            + "\n\nTraders can connect them from the brokers page now. See docs/brokers/ for each one.\n"
        )
    if gone:
        text += (
            ("\n" if text else "")
            + "These broker providers are no longer installed; their connections cannot sync:\n\n"
            + "\n".join(f"- {key}" for key in gone)
            + "\n"
        )
    return text
