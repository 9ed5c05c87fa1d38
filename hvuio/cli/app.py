"""What every `hvuio` command receives from the group: the `App` (sysroot, debug, verbosity) and
the `pass_app` decorator that hands it over.

It stands apart from hvuio/cli/__init__.py so the command modules (device, net, sim, demo) can
take the App without importing the group: __init__ imports them, never the other way round.

What must not live here: commands, option parsing, library code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click


@dataclass
class App:
    """What every command gets: where sysfs and /dev live, and how loud to be."""

    sysroot: Path
    debug: bool
    verbose: int
    quiet: int = 0


pass_app = click.make_pass_decorator(App)
