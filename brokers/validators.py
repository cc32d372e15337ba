"""Model validators for text a trader, an operator or an API client types (the rules: brokers.providers.text)."""

from django.core.exceptions import ValidationError

from brokers.providers.text import has_control_characters


def refuse_control_characters(value) -> None:
    """Line breaks, tabs, escape codes and the like have no place in a label or a credential."""
    if isinstance(value, str) and has_control_characters(value):
        raise ValidationError(
            "Must not contain control characters (line breaks, tabs or escape codes).", code="control_characters"
        )
