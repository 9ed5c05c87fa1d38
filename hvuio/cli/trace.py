"""`hvuio trace FILE`: the trace `up --trace` or `demo --trace` wrote, one line per packet.

What lives here: the click command (added to the group by hvuio/cli/__init__.py): it reads the
file, prints each record hvuio.trace.decode.Decoder makes of it (frames and VMBus/NVSP/RNDIS
control messages, like `tcpdump -v`) or, with --json, one JSON object per line. A file that is not
a readable pcapng (missing, truncated, foreign) ends with one sentence and a hint after the
records read before the fault.

What must not live here: the file format and decoding (hvuio/trace/).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hvuio.cli.app import App, pass_app

#: a trace is capped by --trace-max-mb; a file far larger is not one we wrote
_MAX_FILE = 4 << 30


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
@click.option("--control-only", is_flag=True, help="Leave the frames out; show the VMBus control messages.")
@pass_app
def trace(app: App, file: Path, as_json: bool, control_only: bool) -> None:
    """Decode a trace written by 'hvuio up --trace FILE': frames both ways and every
    VMBus/NVSP/RNDIS control message, one line each. The frames are ordinary pcapng packets
    (tcpdump -r FILE, Wireshark)."""
    from hvuio.errors import TraceFileError
    from hvuio.trace.decode import Decoder
    from hvuio.trace.pcapng import is_control, read_trace

    try:
        with open(file, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as err:
        raise TraceFileError(f"cannot read {file}: {(err.strerror or str(err)).lower()}") from None
    if len(data) > _MAX_FILE:
        raise TraceFileError(f"{file} is larger than {_MAX_FILE >> 30} GiB, not a trace hvuio wrote")
    decoder = Decoder()
    for rec in read_trace(data, str(file)):
        if control_only and not is_control(rec):
            continue
        out = decoder.decode(rec)
        click.echo(json.dumps(out.fields, sort_keys=True) if as_json else out.line)
