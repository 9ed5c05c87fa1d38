"""Where things are: the repository root and the golden layouts file.

Tests find files of the clone (scripts/, udev/, _native/, the hvuio sources the layering checks
read) from ROOT, never from their own location, so a test module can move between folders.
"""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]   # tests/support/paths.py -> the clone
GOLDEN_PATH = ROOT / "tests" / "golden" / "wire-layouts.json"
