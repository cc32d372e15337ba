"""Tables of prop firms shipped as TOML beside a provider, which the operator extends without code.

One `[key]` table per firm with at least its `name`; a route may ask for more (ProjectX: the firm's
host). The operator's file, named by a setting, is read after the shipped one and replaces a firm
of the same key, so a firm can be added or corrected without a release.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from brokers.providers.errors import BrokerConfigurationError

# A firm's fields beyond its name, checked; None when the table does not hold them as the route needs.
Fields = Callable[[Mapping[str, Any]], dict[str, str] | None]


def load_firms(
    shipped: Path, extra_file: str, setting: str, *, needs: str = "a name", fields: Fields = lambda row: {}
) -> dict[str, dict[str, str]]:
    """Firm key -> {"name", and the route's fields}: the shipped table, then the operator's file over it."""
    firms = _read(shipped, f"brokers/providers/{shipped.name}", needs, fields)
    if extra_file:
        firms.update(_read(Path(extra_file), f"{setting} ({extra_file})", needs, fields))
    return firms


def _read(path: Path, source: str, needs: str, fields: Fields) -> dict[str, dict[str, str]]:
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BrokerConfigurationError(f"{source} cannot be read as TOML: {exc}") from None
    firms = {}
    for key, row in table.items():
        name = str(row.get("name", "")).strip() if isinstance(row, dict) else ""
        more = fields(row) if name else None
        if more is None:
            raise BrokerConfigurationError(f"{source}: firm [{key}] needs {needs}.")
        firms[key] = {"name": name, **more}
    return firms
