"""The emulated host's queues of one synthetic NIC, sans-IO: the subchannels it grants, the send
indirection table it sends, and the queue a frame from the network goes to.

What lives here: `HostQueues`, the queue bookkeeping inside HostNvsp — the subchannels the last
grant gave (`count`; channel 0 is the primary, 1..count its subchannels), the answer to a
subchannel request, when the NVSP v5+ send indirection table (message 134) goes out and what it
holds, and the channel `rx_queue` gives a network frame under the guest's RSS state (rss.py).

Behaviour follows OpenVMM's netvsp ([OV] microsoft/openvmm vm/devices/net/netvsp/src/lib.rs):
* Subchannel request: granted in full (SUCCESS, the count asked) only for op ALLOCATE, a count
  below the host's queues (profile.max_subchannels + 1) and a receive buffer that leaves every
  queue (count + 1) at least one data section; anything else is FAILURE with count 0, never a
  smaller grant ([OV] the worker's SubChannelRequest case, RxBufferRanges::validate_params).
* Send indirection table (NVSP >= 5): 16 entries `i % channels` ([OV]
  `guest_send_indirection_table`). With profile.indirection_table "after_subchannels" (OpenVMM's)
  it goes out once as many channels are open as the last grant made queues, more than one
  ([OV] main_loop: `num_sub_channels_opened == requested_num_queues`), once per grant
  (`tx_spread_sent`, cleared by a grant); "after_rndis_init" sends it after the RNDIS INITIALIZE
  completion instead (over the channels granted by then), "never" not at all (emulator choices).
* A frame from the network goes to the guest's RSS table entry for its hash; to channel 0 while
  RSS is off, for a frame that cannot be hashed, or for an entry past the granted queues (rss.py).

What must not live here: NVSP message dispatch, checks and replies (nvsp.py: it reads the request,
sends the answer this module gives and knows whether the channel is running), the RSS parameters
and hash (rss.py), channels, rings and their opening (hvuio.sim.vsp).
"""

from __future__ import annotations

from hvuio.errors import LocalProtocolError
from hvuio.sim.host import profile as hp
from hvuio.sim.host import wire as w
from hvuio.sim.host.events import HostEvent, Rejection, RejectionLog, SubchannelsOffered
from hvuio.sim.host.rss import RssState
from hvuio.sim.host.wire import HostPacket

__all__ = ["HostQueues"]


class HostQueues:
    """One NIC's queues as the host keeps them (see the module docstring)."""

    def __init__(self, profile: hp.HostProfile, log: RejectionLog) -> None:
        self.profile = profile
        self.log = log
        self.count = 0  # subchannels of the last grant
        self._table_sent = False  # the send indirection table went out for the last grant

    def check_channel(self, channel: int) -> None:
        """LocalProtocolError unless `channel` is the primary or a granted subchannel."""
        if not 0 <= channel <= self.count:
            raise LocalProtocolError(f"deliver on channel {channel}: only {self.count} subchannels granted")

    def rx_queue(self, rss: RssState | None, frame: bytes) -> int:
        """The channel a frame from the network goes to (see the module docstring)."""
        return 0 if rss is None else rss.queue(frame, self.count + 1)

    def request(self, op: int, count: int, data_sections: int, events: list[HostEvent]) -> tuple[int, int]:
        """A guest subchannel request (`op`, `count`) with `data_sections` in the receive buffer:
        the (status, count) to answer with. A refusal is logged into `events`, a grant reported
        there as SubchannelsOffered (when it offers any)."""
        if op != w.SUBCHANNEL_ALLOCATE:
            events.append(self.log.add(Rejection(
                "subchannel operation is not ALLOCATE", w.NVSP_SUBCHANNEL, "op", op, "failure-status")))
            return w.NVSP_STAT_FAIL, 0
        queues = self.profile.max_subchannels + 1  # [OV] adapter max_queues
        if count >= queues or data_sections < count + 1:
            events.append(self.log.add(Rejection(
                f"subchannel request asks for more than the host's {queues} queue(s) less the "
                f"primary, or more than the receive buffer can give each queue a section",
                w.NVSP_SUBCHANNEL, "num_subchannels", count, "failure-status")))
            return w.NVSP_STAT_FAIL, 0
        if count:
            self.count = count
            self._table_sent = False  # [OV] tx_spread_sent = false: sent again once all are open
            events.append(SubchannelsOffered(count))
        return w.NVSP_STAT_SUCCESS, count

    def table_after_rndis_init(self, version: int) -> HostPacket | None:
        """The table to send after the RNDIS INITIALIZE completion, if the profile sends it then."""
        if version >= w.NVSP_VERSION_5 and self.profile.indirection_table == "after_rndis_init":
            return self._table(self.count + 1)
        return None

    def opened(self, opened: int, version: int) -> HostPacket | None:
        """`opened` channels of a running NIC are open, the primary included: the table to send
        now, if this is when the profile sends it."""
        if (self.count and not self._table_sent and opened == self.count + 1
                and version >= w.NVSP_VERSION_5 and self.profile.indirection_table == "after_subchannels"):
            self._table_sent = True
            return self._table(opened)
        return None

    @staticmethod
    def _table(channels: int) -> HostPacket:
        entries = tuple(i % channels for i in range(w.SEND_INDIRECTION_ENTRIES))  # [OV] i % channels open
        return HostPacket(0, w.PKT_INBAND, 0, 0, w.indirection_table(entries))
