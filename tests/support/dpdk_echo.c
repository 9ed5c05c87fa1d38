/*
 * dpdk_echo: a minimal DPDK application that answers ARP and ICMP echo on one ethdev port.
 *
 * The DPDK interop test (tests/e2e/test_dpdk_interop.py) builds it against Debian 12's DPDK 22.11
 * (tests/support/dpdk.py) and runs it on an emulated NIC through the netvsc PMD. It is a test
 * program, never part of the installed package.
 *
 * Usage:  dpdk_echo <EAL args> -- --ip A.B.C.D [--queues N] [--timeout SECONDS]
 *
 * It initialises the EAL, configures the first available port with N rx and N tx queues (RSS
 * over IPv4 addresses when N > 1), starts it, and polls every rx queue with rte_eth_rx_burst.
 * An ARP request for --ip and an IPv4 ICMP echo request to --ip are turned into their replies in
 * the same mbuf (checksums recomputed in software, no offloads) and sent back with
 * rte_eth_tx_burst on the queue they came from; everything else is counted and freed. Queues
 * are polled directly because testpmd 22.11 never forwards on netvsc (the PMD does not mark its
 * queues started; fixed upstream in DPDK 23.11).
 *
 * Output (stdout, one JSON object per line, flushed):
 *   {"event": "ready", "port": P, "mac": ..., "mtu": ..., "link": {...}, "queues": N}
 *     once the port is started;
 *   {"event": "exit", "reason": "signal"|"timeout", "queues": [{rx, tx, arp, icmp, other,
 *     tx_failed}...], "stats": {...}, "xstats": {name: value}, "mac", "mtu", "link"}
 *     at the end, before the port is stopped and closed.
 * It stops on SIGTERM or SIGINT, or after --timeout seconds (default 60). Any failure before the
 * ready line is one line "dpdk_echo: <reason>" on stderr and exit status 2 (usage: 64).
 */

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>

#include <rte_arp.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>

#define MAX_QUEUES 16
#define BURST 32
#define RING_SIZE 512
#define POOL_SIZE 8191

struct queue_counts {
    uint64_t rx, tx, arp, icmp, other, tx_failed;
};

static volatile sig_atomic_t stop_signal;
static struct queue_counts counts[MAX_QUEUES];
static struct rte_ether_addr our_mac;
static uint32_t our_ip; /* network order */

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void fail(const char *what, int err)
{
    if (err)
        fprintf(stderr, "dpdk_echo: %s: %s\n", what, rte_strerror(err < 0 ? -err : err));
    else
        fprintf(stderr, "dpdk_echo: %s\n", what);
    exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ARP request for our address -> reply in place. 1 when the mbuf is now a reply. */
static int arp_reply(struct rte_mbuf *m, struct rte_ether_hdr *eth)
{
    struct rte_arp_hdr *arp;

    if (rte_pktmbuf_data_len(m) < sizeof(*eth) + sizeof(*arp))
        return 0;
    arp = (struct rte_arp_hdr *)(eth + 1);
    if (arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
        arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
        arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4 ||
        arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) ||
        arp->arp_data.arp_tip != our_ip)
        return 0;
    arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
    arp->arp_data.arp_tha = arp->arp_data.arp_sha;
    arp->arp_data.arp_tip = arp->arp_data.arp_sip;
    arp->arp_data.arp_sha = our_mac;
    arp->arp_data.arp_sip = our_ip;
    eth->dst_addr = eth->src_addr;
    eth->src_addr = our_mac;
    return 1;
}

/* IPv4 ICMP echo request to our address -> echo reply in place. 1 when the mbuf is a reply. */
static int icmp_reply(struct rte_mbuf *m, struct rte_ether_hdr *eth)
{
    struct rte_ipv4_hdr *ip;
    struct rte_icmp_hdr *icmp;
    uint32_t tmp;
    uint16_t ihl, total, len = rte_pktmbuf_data_len(m);

    if (m->nb_segs != 1 || len < sizeof(*eth) + sizeof(*ip))
        return 0;
    ip = (struct rte_ipv4_hdr *)(eth + 1);
    ihl = (uint16_t)((ip->version_ihl & 0xf) * 4);
    total = rte_be_to_cpu_16(ip->total_length);
    if ((ip->version_ihl >> 4) != 4 || ihl < sizeof(*ip) || total < ihl + sizeof(*icmp) ||
        sizeof(*eth) + total > len || ip->next_proto_id != IPPROTO_ICMP || ip->dst_addr != our_ip ||
        (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)))
        return 0;
    icmp = (struct rte_icmp_hdr *)((char *)ip + ihl);
    if (icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || icmp->icmp_code != 0)
        return 0;
    icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
    icmp->icmp_cksum = 0;
    icmp->icmp_cksum = (uint16_t)~rte_raw_cksum(icmp, total - ihl);
    tmp = ip->src_addr;
    ip->src_addr = ip->dst_addr;
    ip->dst_addr = tmp;
    ip->time_to_live = 64;
    ip->hdr_checksum = 0;
    ip->hdr_checksum = (uint16_t)~rte_raw_cksum(ip, ihl);
    eth->dst_addr = eth->src_addr;
    eth->src_addr = our_mac;
    m->ol_flags = 0;
    return 1;
}

/* Poll one queue once: answer what is ours, free the rest. Returns the frames received. */
static uint16_t serve(uint16_t port, uint16_t q)
{
    struct rte_mbuf *rx[BURST], *tx[BURST];
    struct queue_counts *c = &counts[q];
    uint16_t n, i, ntx = 0, sent;

    n = rte_eth_rx_burst(port, q, rx, BURST);
    for (i = 0; i < n; i++) {
        struct rte_mbuf *m = rx[i];
        struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
        uint16_t type;

        c->rx++;
        if (rte_pktmbuf_data_len(m) < sizeof(*eth)) {
            c->other++;
            rte_pktmbuf_free(m);
            continue;
        }
        type = rte_be_to_cpu_16(eth->ether_type);
        if (type == RTE_ETHER_TYPE_ARP && arp_reply(m, eth)) {
            c->arp++;
            tx[ntx++] = m;
        } else if (type == RTE_ETHER_TYPE_IPV4 && icmp_reply(m, eth)) {
            c->icmp++;
            tx[ntx++] = m;
        } else {
            c->other++;
            rte_pktmbuf_free(m);
        }
    }
    if (ntx) {
        sent = rte_eth_tx_burst(port, q, tx, ntx);
        c->tx += sent;
        for (i = sent; i < ntx; i++) {
            c->tx_failed++;
            rte_pktmbuf_free(tx[i]);
        }
    }
    return n;
}

static void print_mac_link(uint16_t port)
{
    struct rte_eth_link link;
    uint16_t mtu = 0;
    char mac[RTE_ETHER_ADDR_FMT_SIZE];

    memset(&link, 0, sizeof(link));
    rte_eth_link_get_nowait(port, &link);
    rte_eth_dev_get_mtu(port, &mtu);
    rte_ether_format_addr(mac, sizeof(mac), &our_mac);
    printf("\"mac\": \"%s\", \"mtu\": %u, \"link\": {\"up\": %s, \"speed_mbps\": %u, \"full_duplex\": %s}",
           mac, mtu, link.link_status ? "true" : "false", link.link_speed,
           link.link_duplex ? "true" : "false");
}

static void print_exit(uint16_t port, uint16_t nq, const char *reason)
{
    struct rte_eth_stats st;
    struct rte_eth_xstat_name *names = NULL;
    struct rte_eth_xstat *xs = NULL;
    int nx, i;

    printf("{\"event\": \"exit\", \"reason\": \"%s\", \"queues\": [", reason);
    for (i = 0; i < nq; i++)
        printf("%s{\"rx\": %" PRIu64 ", \"tx\": %" PRIu64 ", \"arp\": %" PRIu64 ", \"icmp\": %" PRIu64
               ", \"other\": %" PRIu64 ", \"tx_failed\": %" PRIu64 "}", i ? ", " : "", counts[i].rx,
               counts[i].tx, counts[i].arp, counts[i].icmp, counts[i].other, counts[i].tx_failed);
    memset(&st, 0, sizeof(st));
    rte_eth_stats_get(port, &st);
    printf("], \"stats\": {\"ipackets\": %" PRIu64 ", \"opackets\": %" PRIu64 ", \"ibytes\": %" PRIu64
           ", \"obytes\": %" PRIu64 ", \"imissed\": %" PRIu64 ", \"ierrors\": %" PRIu64
           ", \"oerrors\": %" PRIu64 ", \"rx_nombuf\": %" PRIu64 "}, \"xstats\": {",
           st.ipackets, st.opackets, st.ibytes, st.obytes, st.imissed, st.ierrors, st.oerrors,
           st.rx_nombuf);
    nx = rte_eth_xstats_get_names(port, NULL, 0);
    if (nx > 0) {
        names = calloc((size_t)nx, sizeof(*names));
        xs = calloc((size_t)nx, sizeof(*xs));
    }
    if (names && xs && rte_eth_xstats_get_names(port, names, nx) == nx &&
        rte_eth_xstats_get(port, xs, nx) == nx) {
        for (i = 0; i < nx; i++)
            printf("%s\"%s\": %" PRIu64, i ? ", " : "", names[xs[i].id].name, xs[i].value);
    }
    free(names);
    free(xs);
    printf("}, ");
    print_mac_link(port);
    printf("}\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct rte_eth_conf conf;
    struct rte_eth_dev_info info;
    struct rte_mempool *pool;
    struct sigaction sa;
    struct in_addr addr;
    const char *ip = NULL, *reason;
    double timeout = 60.0, deadline;
    uint16_t port, nq = 1, q;
    unsigned int idle = 0;
    int ret, i;

    ret = rte_eal_init(argc, argv);
    if (ret < 0)
        fail("EAL initialisation failed", rte_errno);
    argc -= ret;
    argv += ret;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ip") && i + 1 < argc)
            ip = argv[++i];
        else if (!strcmp(argv[i], "--queues") && i + 1 < argc)
            nq = (uint16_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            timeout = atof(argv[++i]);
        else {
            fprintf(stderr, "dpdk_echo: unknown argument %s; usage: <EAL args> -- --ip A.B.C.D "
                    "[--queues N] [--timeout SECONDS]\n", argv[i]);
            exit(64);
        }
    }
    if (ip == NULL || inet_pton(AF_INET, ip, &addr) != 1 || nq < 1 || nq > MAX_QUEUES) {
        fprintf(stderr, "dpdk_echo: needs --ip A.B.C.D and 1 <= --queues <= %d\n", MAX_QUEUES);
        exit(64);
    }
    our_ip = addr.s_addr;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (rte_eth_dev_count_avail() == 0)
        fail("no ethdev port: the PMD probed no device (check the -a device and its driver)", 0);
    port = (uint16_t)rte_eth_find_next(0);
    ret = rte_eth_dev_info_get(port, &info);
    if (ret)
        fail("rte_eth_dev_info_get", ret);
    if (nq > info.max_rx_queues || nq > info.max_tx_queues) {
        fprintf(stderr, "dpdk_echo: %s offers %u rx / %u tx queues, %u asked\n", info.driver_name,
                info.max_rx_queues, info.max_tx_queues, nq);
        exit(2);
    }
    pool = rte_pktmbuf_pool_create("echo_pool", POOL_SIZE, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                   (int)rte_eth_dev_socket_id(port));
    if (pool == NULL)
        fail("mbuf pool", rte_errno);
    memset(&conf, 0, sizeof(conf));
    if (nq > 1) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = RTE_ETH_RSS_IP & info.flow_type_rss_offloads;
    }
    ret = rte_eth_dev_configure(port, nq, nq, &conf);
    if (ret)
        fail("rte_eth_dev_configure", ret);
    for (q = 0; q < nq; q++) {
        ret = rte_eth_rx_queue_setup(port, q, RING_SIZE, (unsigned int)rte_eth_dev_socket_id(port),
                                     NULL, pool);
        if (ret)
            fail("rte_eth_rx_queue_setup", ret);
        ret = rte_eth_tx_queue_setup(port, q, RING_SIZE, (unsigned int)rte_eth_dev_socket_id(port),
                                     NULL);
        if (ret)
            fail("rte_eth_tx_queue_setup", ret);
    }
    ret = rte_eth_dev_start(port);
    if (ret)
        fail("rte_eth_dev_start", ret);
    ret = rte_eth_macaddr_get(port, &our_mac);
    if (ret)
        fail("rte_eth_macaddr_get", ret);

    printf("{\"event\": \"ready\", \"port\": %u, \"driver\": \"%s\", \"queues\": %u, ", port,
           info.driver_name, nq);
    print_mac_link(port);
    printf("}\n");
    fflush(stdout);

    deadline = now() + timeout;
    reason = "timeout";
    while (!stop_signal) {
        uint32_t got = 0;

        for (q = 0; q < nq; q++)
            got += serve(port, q);
        if (got) {
            idle = 0;
            continue;
        }
        /* Idle: check the clock now and then and yield the CPU to the emulator (2-core CI). */
        if (++idle % 64 == 0) {
            struct timespec nap = {0, 50000};

            if (now() > deadline)
                break;
            nanosleep(&nap, NULL);
        }
    }
    if (stop_signal)
        reason = "signal";
    print_exit(port, nq, reason);
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
    rte_eal_cleanup();
    return 0;
}
