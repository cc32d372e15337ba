"""Rules for text a trader, an operator or an API client types, shared by every model and provider."""

import unicodedata

from django.core.exceptions import ValidationError

# Line and paragraph separators break e-mail headers and terminal tables like CR and LF do.
_SEPARATORS = {"\u2028", "\u2029"}


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" or ch in _SEPARATORS for ch in text)


def refuse_control_characters(value) -> None:
    """Line breaks, tabs, escape codes and the like have no place in a label or a credential."""
    if isinstance(value, str) and has_control_characters(value):
        raise ValidationError(
            "Must not contain control characters (line breaks, tabs or escape codes).", code="control_characters"
        )


def printable(text: str) -> str:
    """Text for a terminal: control characters shown as escapes (\\n, \\x1b) instead of acting."""
    if not has_control_characters(text):
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii") if has_control_characters(ch) else ch for ch in text)
