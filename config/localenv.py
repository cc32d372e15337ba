"""var/local.env: the settings `make run` made for this checkout, which plain manage.py reads too.

`make run` writes its keys, its private Redis address and its local defaults here. The
settings read the file only in local mode — no DJANGO_SECRET_KEY in the environment and the
file present — and only for variables the environment does not set, so a production
environment (which must set the key) never looks at it.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCAL_ENV = Path(__file__).resolve().parent.parent / "var" / "local.env"


def read(path: Path | None = None) -> dict[str, str]:
    path = path or LOCAL_ENV
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def update(values: dict[str, str | None], path: Path | None = None) -> dict[str, str]:
    """Set (or, with None, drop) variables in the file, keeping the others; readable by the owner only."""
    path = path or LOCAL_ENV
    merged = read(path)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    path.parent.mkdir(exist_ok=True)
    header = "# Written by `make run`; manage.py reads it when DJANGO_SECRET_KEY is not set. Keep the keys.\n"
    path.write_text(header + "".join(f"{key}={value}\n" for key, value in merged.items()))
    path.chmod(0o600)
    return merged


def apply_in_local_mode(environ=os.environ, path: Path | None = None) -> bool:
    """Fill unset variables from var/local.env when in local mode; returns whether it did."""
    path = path or LOCAL_ENV
    if environ.get("DJANGO_SECRET_KEY") or not path.exists():
        return False
    for key, value in read(path).items():
        environ.setdefault(key, value)
    return True
