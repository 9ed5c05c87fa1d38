/* Trace capture declarations Python may call through cffi (cdef-only, like datapath_api.h: no
 * #include, no #if, no macros with arguments). trace.h includes this file so the compiler checks
 * the same prototypes; build.py adds it to the cdef.
 *
 * A trace is a pcapng file (docs/TRACE.md) that Python opens and starts (section header, the two
 * interface descriptions); struct hvu_trace then appends Enhanced Packet Blocks to its fd, from
 * the data path's threads (frames, interface 0) and from Python (control messages, interface 1),
 * each block one writev on an O_APPEND fd, within a byte cap shared by both.
 */

struct hvu_trace;              /* defined in trace.c; Python allocates hvu_trace_sizeof() bytes */
struct hvu_dp;

enum hvu_trace_const {
    HVU_TRACE_IF_FRAMES = 0,   /* interface 0: LINKTYPE_ETHERNET, the frames */
    HVU_TRACE_IF_CONTROL = 1,  /* interface 1: LINKTYPE_USER0, the control records */
    HVU_TRACE_IN = 1,          /* epb_flags direction: inbound (host -> guest) */
    HVU_TRACE_OUT = 2,         /* epb_flags direction: outbound (guest -> host) */
    HVU_TRACE_EPB_OVERHEAD = 44, /* block header 28 + epb_flags option 8 + end of options 4 + trailer 4 */
    HVU_TRACE_MAX_DATA = 262144  /* longest packet one block records (longer: refused, counted) */
};

enum hvu_trace_counter {
    HVU_TRACE_FRAMES = 0,          /* frame blocks written */
    HVU_TRACE_FRAMES_CAPPED = 1,   /* frames not written: the cap was reached */
    HVU_TRACE_CONTROL = 2,         /* control blocks written */
    HVU_TRACE_CONTROL_CAPPED = 3,  /* control records not written: the cap was reached */
    HVU_TRACE_WRITE_ERRORS = 4,    /* blocks a failed or short write lost (or too long to record) */
    HVU_TRACE_BYTES = 5,           /* bytes of the file, the section header included */
    HVU_TRACE_COUNTERS = 6
};

size_t hvu_trace_sizeof(void);
/* fd: an O_APPEND file already holding `used` bytes (the section header and interfaces);
 * max_bytes: the cap (the file never grows past it). 0, or -EINVAL. */
int hvu_trace_init(struct hvu_trace *t, int fd, uint64_t max_bytes, uint64_t used);
/* One Enhanced Packet Block on interface `iface` with direction `dir` (HVU_TRACE_IN/OUT), time
 * stamped now (CLOCK_REALTIME, microseconds). 1 written, 0 not written (cap reached, counted),
 * negative errno (write failed, counted). */
int hvu_trace_block(struct hvu_trace *t, uint32_t iface, uint32_t dir, const uint8_t *data, uint32_t len);
uint64_t hvu_trace_counter(const struct hvu_trace *t, int which);
/* The data path records its frames in `t` (NULL: no capture, the default). Set before the pump runs. */
void hvu_dp_set_trace(struct hvu_dp *dp, struct hvu_trace *t);
