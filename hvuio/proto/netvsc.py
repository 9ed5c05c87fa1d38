"""NetvscGuest: NVSP and RNDIS of one netvsc primary channel, composed into one sans-IO object.

What lives here: `NetvscGuest`, which owns NvspGuest and, once the send buffer is connected,
RndisGuest, and does everything joining the two takes (as h11's Connection does for HTTP):

* routing: a completion goes to the machine that expects its trans_id (proto/limits.py gives the
  two machines disjoint id ranges); one that no machine expects is dropped and reported as
  `CompletionDropped` (VMBUS.md §4.15); in-band packets go to NVSP, RNDIS messages to RNDIS (an
  RNDIS message before RNDIS was started is the host's error);
* starting RNDIS when the send buffer is ready (`SendBufReady`, the last NVSP bring-up step), with
  the offloads asked for: checksum and LSO, RSC from NVSP 6.1 (`offload=True`), or all off;
* the send buffer's split (data sections for the data path, a control range for RNDIS) and the
  placement of control messages (`ControlSections`, proto/sections.py): in control pages of the
  NIC's guest-memory pool, GPA-direct, when it was given `control_pages`, else in sections;
* the fallback from GPA-direct to sections: when the host does not take the RNDIS initialize
  sent GPA-direct (no reply within the RNDIS timeout, or a failed send completion), control
  messages move to send sections for good and the initialize is sent once more there
  (`ControlFallback`); as Hyper-V and OpenVMM accept GPA-direct control (Linux and DPDK send it),
  a host that does not looks like one that cannot read the page;
* subchannels, as Linux (rndis_filter_device_add, rndis_set_subchannel, netvsc_subchan_work):
  from NVSP 5 on RNDIS asks OID_GEN_RECEIVE_SCALE_CAPABILITIES; once RNDIS is configured, a NIC
  that wants `channels` > 1 asks for min(channels, the host's receive queues, 64) - 1 subchannels
  and is `ready` when the host answered. A failure answer (OpenVMM gives one when more are asked
  than it has queues) is `SubchannelsRefused` and the NIC runs on the primary only;
* vRSS, as Linux (rndis_filter_set_rss_param, rndis_set_rss_param_msg): once more than one
  channel was granted, OID_GEN_RECEIVE_SCALE_PARAMETERS is set twice on the primary, first with
  the DISABLE flag, then (if that was taken) enabled with Linux's key, the table `i % channels`
  at the size the host's capabilities name (proto/rss.py) and the hash types they offer;
  `RssConfigured` when the host took it. A refusal is no error (Linux goes on with its channels:
  frames then all arrive on the primary). The NIC is `ready` after that answer. Linux sets RSS
  after the subchannels are open; the host takes it on the primary at any time after RNDIS is
  initialized (OpenVMM oid_set_rss_parameters), so here it follows the grant directly;
* the send indirection table: `i % channels` from the grant on (Linux netvsc_device_add then
  rndis_set_subchannel), replaced by the host's NVSP 5 table (the offset workaround for NVSP
  <= 6.0 is proto/nvsp.py's); entries naming no channel are reduced modulo the channel count and
  reported as `SendTableFixed` (proto/rss.py check_send_table);
* accelerated networking: SR-IOV announced only when asked (`sriov`, from NVSP 5 as Linux), and
  the data-path switch passed through (`switch_datapath`); when to switch is hvuio/vfwatch.py's;
* time (`tick`) and the orderly teardown: packet filter 0, RNDIS halt, then NVSP revoke.

Every call returns effects, in the order they must be performed: `Send`s (write them to the
channel) and events (proto/events.py: update what is known about the NIC, follow the link, count).
The I/O side (hvuio/nic.py) feeds it the `Inbound`s it reads and performs the effects; it never
drives the machines itself::

    guest = NetvscGuest(recv_buf=BufferGrant(gpadl, size), send_buf=BufferGrant(gpadl, size))
    perform(guest.start())
    for each Inbound read from the primary channel: perform(guest.receive(item))
    on every loop turn: perform(guest.tick(time.monotonic()))
    until guest.ready (RndisConfigured, the subchannel answer and the RSS sets if any); at the end:
    perform(guest.close_filter()), wait while guest.filter_closing, perform(guest.halt()), wait
    while guest.halting, perform(guest.stop()), then close the channel.

What must not live here: rings, fds, clocks (callers pass `now`), logging, the NIC's record of
negotiated values (hvuio/nicinfo.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from hvuio.errors import HostProtocolError, HostRefusedError, HostTimeoutError, LocalProtocolError
from hvuio.proto import limits
from hvuio.proto.events import (
    CompletionDropped, ControlFallback, ControlSendComplete, Event, Inbound, InboundKind, NeedData,
    IndirectionTable, NvspReady, Outbound, RequestFailed, RndisConfigured, RssCaps, RssConfigured, Send,
    SendBufReady, SendTableFixed, SetComplete, SubchannelsGranted, SubchannelsRefused,
)
from hvuio.proto import rss
from hvuio.proto.nvsp import BufferGrant, NvspGuest, default_ndis_capabilities, rsc_ndis_capabilities, with_sriov
from hvuio.proto.offload import OffloadRequest, OffloadWanted
from hvuio.proto.rndis import RndisGuest
from hvuio.proto.sections import CONTROL_SECTIONS, ControlSections, SectionPool, split_send_sections
from hvuio.proto.states import NvspState, RndisState
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr

__all__ = ["Effect", "NetvscGuest"]

Effect = Send | Event
"""What NetvscGuest returns: a message to write, or an event to act on."""

#: A machine in one of these states no longer keeps time.
_STOPPED: Final = frozenset({NvspState.REVOKED, RndisState.HALTED})


class NetvscGuest:
    """The guest side of one netvsc primary channel: Inbound in, Sends and events out."""

    def __init__(self, *, recv_buf: BufferGrant, send_buf: BufferGrant, mtu: int = 1500,
                 versions: Sequence[int] = wn.SUPPORTED_NVSP_VERSIONS, offload: bool = False,
                 control_sections: int = CONTROL_SECTIONS, control_pages: int = 0,
                 channels: int = 1, name: str = "netvsc", sriov: bool = False) -> None:
        caps = rsc_ndis_capabilities if offload else default_ndis_capabilities
        self._nvsp = NvspGuest(recv_buf=recv_buf, send_buf=send_buf, mtu=mtu, versions=versions,
                               capabilities=with_sriov(caps) if sriov else caps)
        #: SR-IOV announced in the NDIS config (from NVSP 5): the host may offer a VF
        self.sriov = sriov
        self._rndis: RndisGuest | None = None
        #: negotiate NDIS offloads (checksum, LSOv2, RSC); False sets them all off
        self.offload = offload
        self.name = name
        self._reserve = control_sections
        if not 0 <= control_pages <= limits.CONTROL_PAGES:
            raise LocalProtocolError(f"{name}: control_pages {control_pages} outside [0, {limits.CONTROL_PAGES}]")
        #: GPA-direct control pages of the NIC's pool (0: control messages use send sections only)
        self.control_pages = control_pages
        if not 1 <= channels <= limits.MAX_SUBCHANNELS + 1:
            raise LocalProtocolError(f"{name}: channels {channels} outside [1, {limits.MAX_SUBCHANNELS + 1}]")
        #: channels wanted, the primary included (1: no subchannel request)
        self.channels_wanted = channels
        #: channels the host gave, the primary included (1 until subchannels are granted)
        self.channels = 1
        #: the host's receive queues (OID_GEN_RECEIVE_SCALE_CAPABILITIES; None: not known)
        self.host_queues: int | None = None
        #: the host's RSS capability bits and table entries (OID_GEN_RECEIVE_SCALE_CAPABILITIES)
        self.host_rss_caps = 0
        self.host_rss_entries = 0
        #: what the host took of OID_GEN_RECEIVE_SCALE_PARAMETERS (None: RSS not enabled)
        self.rss: RssConfigured | None = None
        #: send indirection table: entry (hash & 15) names the channel to send on
        self.send_table: tuple[int, ...] = (0,) * wn.INDIRECTION_TABLE_SIZE
        self._rss_step: str | None = None  # "disable" / "enable" while an RSS set is outstanding
        self._rss_wanted: RssConfigured | None = None
        #: why control messages left the control pages for send sections (None: they did not)
        self.fallback_reason: str | None = None
        self._ndis_version: int | None = None
        self._sections: ControlSections | None = None
        self._data_sections = 0
        self._ready = False
        self._subchannels_pending = False
        self._halt_xids: frozenset[int] = frozenset()
        self._closing_filter = False

    # ---- what is known ------------------------------------------------------------------------

    @property
    def nvsp(self) -> NvspGuest:
        return self._nvsp

    @property
    def rndis(self) -> RndisGuest | None:
        """The RNDIS machine, from the moment the send buffer is connected."""
        return self._rndis

    @property
    def ready(self) -> bool:
        """RNDIS finished its bring-up (RndisConfigured), and the subchannel request and the RSS
        sets, if made, were answered: the data path may start."""
        return self._ready

    def subchannels_to_ask(self) -> int:
        """Subchannels to ask for: min(channels wanted, the host's receive queues, 64) - 1 from
        NVSP 5 on (Linux rndis_filter_device_add), 0 when the host reported fewer than 2 queues
        or none at all."""
        version = self._nvsp.version
        if version is None or version < wn.NvspVersion.V5 or self.host_queues is None or self.host_queues < 2:
            return 0
        return min(self.channels_wanted, self.host_queues, limits.MAX_SUBCHANNELS + 1) - 1

    @property
    def sections(self) -> ControlSections | None:
        """The control placement (control pages and/or the send buffer's control range), from
        the moment the send buffer is connected."""
        return self._sections

    @property
    def gpa_direct(self) -> bool:
        """RNDIS control messages go GPA-direct (control pages given, no fallback happened)."""
        return self.control_pages > 0 and self.fallback_reason is None

    @property
    def data_sections(self) -> int:
        """Send sections [0, data_sections) belong to the data path (0 until known)."""
        return self._data_sections

    @property
    def halting(self) -> bool:
        """The RNDIS halt was sent and the host has not completed its send yet."""
        rndis = self._rndis
        return rndis is not None and any(rndis.expects(x) for x in self._halt_xids)

    # ---- commands -------------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        """NVSP INIT; the rest of the bring-up follows the host's replies."""
        return self._commit(self._nvsp.start())

    def receive(self, item: Inbound) -> list[Effect]:
        """One packet (or RNDIS message) from the primary channel: route it, act on the events."""
        nvsp, rndis = self._nvsp, self._rndis
        if item.kind is InboundKind.COMPLETION:
            if rndis is not None and rndis.expects(item.trans_id):
                may = (self._may_fall_back() and self._sections is not None
                       and self._sections.is_gpa_direct(item.trans_id))
                try:
                    return self._commit(rndis.receive(item))
                except HostRefusedError as err:
                    if not may:
                        raise
                    return self._fall_back(f"the host failed the GPA-direct RNDIS initialize ({err.message})")
            if not nvsp.expects(item.trans_id):
                return [CompletionDropped(trans_id=item.trans_id)]
            return self._commit(nvsp.receive(item))
        if item.kind is InboundKind.RNDIS:
            if rndis is None:
                raise HostProtocolError(f"RNDIS message (trans_id {item.trans_id:#x}) before RNDIS was started")
            return self._commit(rndis.receive(item))
        return self._commit(nvsp.receive(item))

    def tick(self, now: float) -> list[Effect]:
        """Advance time to `now` (seconds, monotonic); the machines raise HostTimeoutError for a
        reply that is late."""
        out: list[Effect] = []
        for machine in (self._nvsp, self._rndis):
            if machine is not None and machine.error is None and machine.state not in _STOPPED:
                may = machine is self._rndis and self._may_fall_back()
                try:
                    out += self._place(machine.tick(now))
                except HostTimeoutError as err:
                    if not may:
                        raise
                    out += self._fall_back(f"the host did not answer the RNDIS initialize sent GPA-direct "
                                           f"({err.message})")
        return out

    def request_subchannels(self, count: int) -> list[Effect]:
        """Ask the host for `count` subchannels (NVSP >= 5); answered by SubchannelsGranted."""
        return self._commit(self._nvsp.request_subchannels(count))

    @property
    def may_switch_datapath(self) -> bool:
        """A SWITCH_DATA_PATH may go now: NVSP >= 4 is READY (no other request of NVSP outstanding)."""
        nvsp = self._nvsp
        return nvsp.error is None and nvsp.state is NvspState.READY and (nvsp.version or 0) >= wn.NvspVersion.V4

    def switch_datapath(self, vf: bool) -> list[Effect]:
        """NVSP 4 SWITCH_DATA_PATH to the VF or back to synthetic (only while `may_switch_datapath`);
        answered by DatapathSwitched."""
        return self._commit(self._nvsp.switch_datapath(vf))

    def probe(self) -> list[Effect]:
        """An RNDIS query of OID_GEN_MEDIA_CONNECT_STATUS, only while RNDIS is READY with no request
        outstanding (nothing otherwise): a question the host must answer (QueryResult) within
        RNDIS_REPLY_TIMEOUT_S, or tick() raises HostTimeoutError. hvuio/nic.py asks it while the
        synthetic channel carries no data (the data path is on the VF), where a host that stopped
        the channel without a word would otherwise go unnoticed until the VF leaves."""
        rndis = self._rndis
        if (rndis is None or rndis.error is not None or rndis.state is not RndisState.READY
                or rndis.requests_outstanding):
            return []
        return self._commit(rndis.query(wr.Oid.GEN_MEDIA_CONNECT_STATUS))

    def close_filter(self) -> list[Effect]:
        """Packet filter 0, so the host stops delivering frames: the first teardown step, before
        the halt, as Linux's rndis_filter_close_device (netvsc_close) runs before
        rndis_filter_device_remove halts the device (VMBUS.md §4.24). Only when RNDIS is READY
        (nothing otherwise); `filter_closing` until the host answered (SetComplete or RequestFailed)."""
        rndis = self._rndis
        if rndis is None or rndis.error is not None or rndis.state is not RndisState.READY:
            return []
        self._closing_filter = True
        return self._commit(rndis.set_packet_filter(0))

    @property
    def filter_closing(self) -> bool:
        """close_filter() was sent and its reply has not come (nor has RNDIS failed)."""
        rndis = self._rndis
        return (self._closing_filter and rndis is not None and rndis.error is None
                and rndis.state is RndisState.READY and rndis.requests_outstanding > 0)

    def halt(self) -> list[Effect]:
        """RNDIS halt, when RNDIS runs (nothing otherwise); `halting` until the host completed it."""
        rndis = self._rndis
        if rndis is None or rndis.error is not None or rndis.state in (RndisState.HALTED, RndisState.IDLE):
            return []
        msgs = rndis.halt()
        self._halt_xids = frozenset(m.trans_id for m in msgs)
        return self._commit(msgs)

    def stop(self) -> list[Effect]:
        """NVSP revoke of the receive and send buffers, when NVSP runs; then close the channel."""
        nvsp = self._nvsp
        if nvsp.error is not None or nvsp.state in (NvspState.REVOKED, NvspState.IDLE):
            return []
        return self._commit(nvsp.stop())

    # ---- composition ------------------------------------------------------------------------------

    def _commit(self, outs: list[Outbound]) -> list[Effect]:
        """A machine's messages, then its queued events, each followed by what it sets off."""
        effects: list[Effect] = list(self._place(outs))
        for machine in (self._nvsp, self._rndis):
            while machine is not None and not isinstance(e := machine.next_event(), NeedData):
                effects.append(e)
                step = _ON_EVENT.get(type(e))
                if step is not None:
                    effects += step(self, e)
        return effects

    def _place(self, outs: list[Outbound]) -> list[Send]:
        if self._sections is not None:
            return self._sections.place(outs)
        if any(o.rndis is not None for o in outs):
            raise LocalProtocolError(f"{self.name}: RNDIS send before the send buffer was connected")
        return [Send(o) for o in outs]

    def _nvsp_ready(self, e: NvspReady) -> list[Effect]:
        self._ndis_version = e.ndis_version
        return []

    def _send_buffer_ready(self, e: SendBufReady) -> list[Effect]:
        self._data_sections, first = split_send_sections(e.count, self._reserve)
        pages = (SectionPool(0, self.control_pages, limits.CONTROL_PAGE_SIZE) if self.control_pages else None)
        self._sections = ControlSections(SectionPool(first, e.count - first, e.section_size), pages=pages,
                                         name=self.name)
        self._rndis = self._new_rndis()
        return list(self._place(self._rndis.start()))

    def _new_rndis(self, after: RndisGuest | None = None) -> RndisGuest:
        """The RNDIS machine; `after`: the one it replaces (ids continue after that one's)."""
        version = self._nvsp.version
        if self._ndis_version is None or version is None:
            raise LocalProtocolError(f"{self.name}: send buffer connected before NVSP was negotiated")
        offload = OffloadWanted(rsc=version >= wn.NvspVersion.V61) if self.offload else OffloadRequest()
        rss = version >= wn.NvspVersion.V5
        if after is None:
            return RndisGuest(ndis_version=self._ndis_version, offload=offload, rss=rss, nvsp_version=version)
        return RndisGuest(ndis_version=self._ndis_version, offload=offload, first_xid=after.next_xid,
                          first_request_id=after.next_request_id, rss=rss, nvsp_version=version)

    def _may_fall_back(self) -> bool:
        """Control messages go GPA-direct and RNDIS still waits for its initialize completion."""
        rndis = self._rndis
        return (self.gpa_direct and self._sections is not None and rndis is not None
                and rndis.state is RndisState.INIT_WAIT)

    def _fall_back(self, reason: str) -> list[Effect]:
        """GPA-direct -> send sections, for good: a fresh RNDIS machine sends INITIALIZE again."""
        assert self._sections is not None and self._rndis is not None
        self.fallback_reason = reason
        self._sections.fall_back()
        self._rndis = self._new_rndis(after=self._rndis)
        return [ControlFallback(reason=reason), *self._commit(self._rndis.start())]

    def _control_send_complete(self, e: ControlSendComplete) -> list[Effect]:
        return list(self._sections.release(e.trans_id)) if self._sections is not None else []

    def _rss_caps(self, e: RssCaps) -> list[Effect]:
        self.host_queues = e.receive_queues
        self.host_rss_caps, self.host_rss_entries = e.capabilities, e.table_entries
        return []

    def _configured(self, e: RndisConfigured) -> list[Effect]:
        count = self.subchannels_to_ask()
        if count == 0:
            self._ready = True
            return []
        self._subchannels_pending = True
        return list(self._place(self._nvsp.request_subchannels(count)))

    def _subchannels_answered(self, e: SubchannelsGranted | SubchannelsRefused) -> list[Effect]:
        if isinstance(e, SubchannelsGranted):
            self.channels = 1 + e.count
            self.send_table = rss.default_table(wn.INDIRECTION_TABLE_SIZE, self.channels)
            hash_info = rss.hash_info_for(self.host_rss_caps)
            if self.channels > 1 and hash_info and self._rndis is not None:
                table = rss.default_table(rss.table_size_for(self.host_rss_entries), self.channels)
                self._rss_wanted = RssConfigured(queues=self.channels, hash_info=hash_info, key=rss.LINUX_KEY,
                                                 table=table)
                return self._rss_send("disable")
        return self._rss_done()

    def _rss_send(self, step: str) -> list[Effect]:
        want, rndis = self._rss_wanted, self._rndis
        assert want is not None and rndis is not None
        self._rss_step = step
        info = rss.parameters(want.table, want.hash_info, key=want.key, disable=step == "disable")
        return list(self._place(rndis.set(wr.Oid.GEN_RECEIVE_SCALE_PARAMETERS, info)))

    def _rss_done(self) -> list[Effect]:
        """The subchannel answer and the RSS sets are over: ready, if bring-up waited for them."""
        self._rss_step = None
        if self._subchannels_pending:
            self._subchannels_pending = False
            self._ready = True
        return []

    def _set_answered(self, e: SetComplete | RequestFailed) -> list[Effect]:
        if e.oid != wr.Oid.GEN_RECEIVE_SCALE_PARAMETERS or self._rss_step is None:
            return []
        if isinstance(e, SetComplete) and self._rss_step == "disable":
            return self._rss_send("enable")
        out: list[Effect] = []
        if isinstance(e, SetComplete) and self._rss_wanted is not None:
            self.rss = self._rss_wanted
            out.append(self.rss)
        return out + self._rss_done()

    def _send_table(self, e: IndirectionTable) -> list[Effect]:
        self.send_table, bad = rss.check_send_table(e.channels, self.channels)
        return [SendTableFixed(queues=self.channels, bad=bad)] if bad else []


#: What an event of a machine sets off in the composition (other events only go to the caller).
_ON_EVENT: Final[dict[type[object], Callable[..., list[Effect]]]] = {
    NvspReady: NetvscGuest._nvsp_ready,
    SendBufReady: NetvscGuest._send_buffer_ready,
    ControlSendComplete: NetvscGuest._control_send_complete,
    RndisConfigured: NetvscGuest._configured,
    RssCaps: NetvscGuest._rss_caps,
    SubchannelsGranted: NetvscGuest._subchannels_answered,
    SubchannelsRefused: NetvscGuest._subchannels_answered,
    SetComplete: NetvscGuest._set_answered,
    RequestFailed: NetvscGuest._set_answered,
    IndirectionTable: NetvscGuest._send_table,
}
