"""How the journal's pages write a duration and a signed amount."""

from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def held_for(value: timedelta | None) -> str:
    """A round trip's duration as a trader reads it: 45s, 12m 5s, 3h 20m, 2d 4h."""
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


@register.filter
def pnl_class(value) -> str:
    """The CSS class that colours a P&L: gains green, losses red."""
    if value is None or value == 0:
        return "flat"
    return "gain" if value > 0 else "loss"
