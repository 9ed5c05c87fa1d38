"""Named protocol limits for the NVSP and RNDIS guest machines, each with its reason.

What lives here: numbers only, each next to the docs/VMBUS.md section or the Linux/DPDK value it mirrors.
The machines in hvuio/proto/nvsp.py and hvuio/proto/rndis.py and the control-section accounting
(hvuio/proto/sections.py) read them; tests refer to them by name so a change here changes the
tests' expectations too.

What must not live here: logic, I/O, clocks.
"""

from __future__ import annotations

#: Seconds a request may wait for its reply before tick() reports HostTimeoutError. DPDK waits
#: RNDIS_TIMEOUT_SEC = 5 for an RNDIS reply (hn_rndis.c hn_rndis_exec1). Linux and DPDK wait for
#: NVSP replies without a limit; we use the same 5 s so a dead host is reported, not waited on.
NVSP_REPLY_TIMEOUT_S = 5.0
RNDIS_REPLY_TIMEOUT_S = 5.0

#: Ethernet header added to the MTU in the NDIS config message (ETH_HLEN / RTE_ETHER_HDR_LEN).
ETH_HEADER_LEN = 14

#: Smallest and largest MTU we announce: ETH_MIN_MTU 68 (Linux NETVSC_MTU_MIN) and Linux's
#: NETVSC_MTU 65535 minus the Ethernet header.
MIN_MTU = 68
MAX_MTU = 65535 - ETH_HEADER_LEN

#: Receive-buffer sections accepted in the connect reply. Linux (`netvsc_init_buf`) and DPDK
#: (`hn_nvs_conn_rxbuf`) both refuse anything but exactly one section; the check is written for
#: "1 <= count <= limit" so the limit is the only thing to change if a host ever sends more.
MAX_RECV_BUF_SECTIONS = 1

#: Smallest receive or send section: one minimum-MTU frame (Linux rejects a recv section size
#: below NETVSC_MTU_MIN, and a send section size below it).
MIN_SECTION_SIZE = 68

#: Send sections must be 4-byte multiples (DPDK `hn_nvs_conn_chim` rejects others).
SEND_SECTION_ALIGN = 4

#: Largest NVSP message we read from the host: DPDK's response buffer NVS_RESPSIZE_MAX = 256.
#: Anything longer is rejected before parsing.
MAX_NVSP_MESSAGE = 256

#: Largest RNDIS control message accepted from the host. The biggest reply we solicit is the
#: offload-capabilities query completion, 24 + 156 = 180 bytes; 4 KiB is the page DPDK bounds its
#: control requests by (`hn_nvs_send_rndis_ctrl`) and leaves room for unknown status buffers.
MAX_RNDIS_CONTROL_MESSAGE = 4096

#: The max_transfer_size we ask for in RNDIS initialize (DPDK HN_RNDIS_XFER_SIZE = 0x4000).
RNDIS_MAX_TRANSFER_SIZE = 0x4000

#: Largest alignment the host may ask for in initialize-complete: 1 << 12 = one page. Linux and
#: DPDK take `1 << alignment` as is; a larger shift would make every packet pad past a section.
MAX_RNDIS_ALIGNMENT_SHIFT = 12

#: One GPA-direct control page: a control message sent by guest-physical address occupies one
#: 4 KiB page and never crosses into the next (VMBUS.md §3.7; DPDK hn_nvs_send_rndis_ctrl refuses
#: a request that would cross a page). Page numbers in GPA ranges count 4 KiB pages whatever the
#: guest's page size.
CONTROL_PAGE_SIZE = 4096

#: Control pages of one NIC's guest-memory pool: one RNDIS control message in flight per page.
#: 16 covers MAX_OUTSTANDING_RNDIS requests and the halt with room to spare, like
#: sections.CONTROL_SECTIONS for the send buffer.
CONTROL_PAGES = 16

#: RNDIS requests (queries/sets) in flight at once. DPDK allows one (`rndis_pending`); Linux
#: serialises the bring-up too. 8 gives an engine room to batch sets later.
MAX_OUTSTANDING_RNDIS = 8

#: RNDIS control messages that may wait for a free send section. Every one of them is a request
#: the machines made (at most MAX_OUTSTANDING_RNDIS requests and the halt; host keep-alives are
#: not answered, VMBUS.md §4 item 21); more than this waiting would mean messages pile up while
#: the host never completes our sends, so the channel is stopped instead of growing a queue.
MAX_QUEUED_CONTROL = 64

#: Subchannels we may ask for: Linux VRSS_CHANNEL_MAX = 64 channels, minus the primary.
MAX_SUBCHANNELS = 63

#: Transaction-id space: NVSP requests use ids from NVSP_XID_BASE, RNDIS control sends from
#: RNDIS_XID_BASE; both stay below the next base, so NetvscGuest routes a completion by its id.
#: Id 0 is never used: Hyper-V does not answer completion-requested packets with id 0
#: (VMBUS.md §3.5 item 56).
NVSP_XID_BASE = 1
RNDIS_XID_BASE = 1 << 32
XID_SPAN = 1 << 32
