"""Reads of trades that the pages, the API and the commands share."""

from journal.models import Trade


def trades_visible_to(user):
    """The trader's own trades, the ones they deleted left out: the only trades any page or API shows them."""
    return Trade.objects.filter(account__connection__owner=user, deleted_at__isnull=True)
