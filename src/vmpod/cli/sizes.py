"""Docker's size strings: `512m`, `1g`, `1048576`."""

from __future__ import annotations

import re

from vmpod.errors import VmpodError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([bkmgt]?)b?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        raise VmpodError(f"invalid size: {text!r}", "use a number with an optional unit b, k, m or g, e.g. 512m")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human_size(size: float) -> str:
    """As Docker prints sizes: 1.23MB (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"
