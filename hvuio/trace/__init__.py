"""Traces of the bus: a pcapng file of the frames both ways and of every VMBus/NVSP/RNDIS control
message, and its decoding into one line per message (docs/TRACE.md).

The room holds three modules: `pcapng` (the file format: blocks, the control record, the reader;
sans-IO), `writer` (`Trace`: the file `up --trace` writes, over the C writer of
hvuio.native.trace, which the data path shares for frames) and `decode` (a record -> one line and
a JSON object, from hvuio.wire's structs and name tables). It depends on hvuio.wire, hvuio.native
and hvuio.errors only; the channel, the NIC, the engine and the CLI call it.
"""
