"""CLI commands about VMBus devices: list, bind, unbind, doctor (issue 3)."""

from __future__ import annotations
