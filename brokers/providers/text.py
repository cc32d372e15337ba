"""Rules for text a trader, an operator or an API client types: the one owner of what a credential may hold."""

from __future__ import annotations

import unicodedata

# Longer than any broker's key or token; a longer value is a paste gone wrong (or an attack).
MAX_CREDENTIAL_LENGTH = 2000
# Line and paragraph separators break e-mail headers and terminal tables like CR and LF do.
_SEPARATORS = {"\u2028", "\u2029"}


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" or ch in _SEPARATORS for ch in text)


def printable(text: str) -> str:
    """Text for a terminal: control characters shown as escapes (\\n, \\x1b) instead of acting."""
    if not has_control_characters(text):
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii") if has_control_characters(ch) else ch for ch in text)


def has_invisible_characters(text: str) -> bool:
    """Format characters (zero-width spaces and joiners, byte-order marks, direction marks, soft
    hyphens): pasted along with a key, they make it a different key that looks the same."""
    return any(unicodedata.category(ch) == "Cf" for ch in text)


def credential_problem(label: str, value: str, *, required: bool = True, ascii_only: bool = True) -> str:
    """What is wrong with one typed credential value (already stripped), in the trader's words; "" if nothing.

    ascii_only: the broker receives the value in an HTTP header, a signature or a URL, which carry
    ASCII only (a curly quote there is a failed request on every sync); a password sent in a JSON
    body may hold any letter. The message never repeats the value: it may be a secret.
    """
    if required and not value:
        return f"{label} is required."
    if has_control_characters(value):
        return f"{label} must not contain control characters (line breaks, tabs or escape codes)."
    if has_invisible_characters(value):
        return (
            f"{label} contains an invisible character (such as a zero-width space), often copied along "
            "with it: type it again or paste it from the broker's page."
        )
    if ascii_only and not value.isascii():
        return (
            f"{label} may hold only plain ASCII characters (letters A-Z, digits, plain punctuation); it "
            "contains another character, such as a curly quote, a long dash or an accented letter, "
            "often put in by a word processor: type it again."
        )
    if len(value) > MAX_CREDENTIAL_LENGTH:
        return f"{label} is too long (at most {MAX_CREDENTIAL_LENGTH} characters)."
    return ""
