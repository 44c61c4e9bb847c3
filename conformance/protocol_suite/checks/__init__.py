"""The checks. Importing this package registers them, module by module, in the order they run."""

from __future__ import annotations

import importlib

ORDER = (
    "handshake",
    "auth",
    "config",
    "conversation",
    "states",
    "inputs",
    "limits",
    "bargein",
    "lifecycle",
    "speakers",
    "turns",
    "tools",
    "shapes",  # last: it judges every frame the other checks recorded
)

for _module in ORDER:
    importlib.import_module(f"{__name__}.{_module}")
