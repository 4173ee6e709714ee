/* What the virtio-net tests share: the spec's constants, where the guest
 * driver keeps its buffers, Ethernet/IPv4 frames, and the host end of a TAP
 * (an AF_PACKET socket with vnet headers, in the test's network namespace).
 * No CHECKs here (check.h's counters are per file): the tests check what
 * these return. */
#ifndef VMM_TEST_NET_HARNESS_H
#define VMM_TEST_NET_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "guest_driver.h"

/* virtio 1.x 5.1 (the tests' own, not <linux/virtio_net.h>) */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_MQ 22
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_GSO_NONE 0
#define VIRTIO_NET_HDR_GSO_TCPV4 1
#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1
#define VIRTIO_NET_CTRL_RX 0
#define VIRTIO_NET_CTRL_RX_PROMISC 0
#define VIRTIO_NET_CTRL_MQ 4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0

struct virtio_net_hdr { /* what PACKET_VNET_HDR carries: 10 bytes */
	uint8_t flags, gso_type;
	uint16_t hdr_len, gso_size, csum_start, csum_offset;
};

struct virtio_net_hdr_mrg_rxbuf { /* the 12-byte virtio 1.x header */
	struct virtio_net_hdr hdr;
	uint16_t num_buffers;
};

/* What the tests' driver accepts: mergeable rx buffers, checksum and TSO4
 * offloads, control queue, multiqueue, link status, MAC, indirect chains. */
#define NET_BASE_FEATURES                                                                                  \
	(VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF) | VIRTIO_BIT(VIRTIO_NET_F_CSUM) | \
	 VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4) |                           \
	 VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ) | VIRTIO_BIT(VIRTIO_NET_F_MQ) | \
	 VIRTIO_BIT(VIRTIO_NET_F_STATUS) | VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC))

#define NQ 5 /* 2 pairs + control */
#define CTRLQ 4

/* Where the driver keeps its buffers in guest RAM. */
#define TX_HDR_GPA   0x100000ull
#define TX_FRAME_GPA 0x100100ull
#define CTRL_GPA     0x180000ull
#define RX_GPA       0x200000ull
#define RX_STRIDE    0x800ull
#define RX_BUF       1500u

extern const uint8_t guest_mac[6], peer_mac[6];

/* The vnet header of build_frame's TCP frames sent as TCPv4 GSO (MSS 1448). */
extern const struct virtio_net_hdr tcp4_gso_hdr;

/* Ethernet + IPv4 + UDP (proto 17) or TCP (6), payload starting with marker; returns its length. */
size_t build_frame(uint8_t *f, const uint8_t *dst, const uint8_t *src, int proto, size_t payload,
		   const char *marker);

/* Queues a UDP frame from the guest on tx queue q (header, frame); no kick. */
void queue_tx_frame(unsigned q, size_t payload, const char *marker);

/* Takes one received packet (header + frame) off rx queue q; its length, 0 if none is complete. */
size_t take_packet(unsigned q, uint8_t *out, size_t cap, unsigned *nbufs);

/* CLOCK_MONOTONIC in milliseconds. */
double now_ms(void);

/* Sends a frame with its vnet header from the host end; 0 if all went. */
int host_send(int fd, const struct virtio_net_hdr *h, const void *frame, size_t len);

/* Receives until a frame with marker arrives: its length with the vnet header, -1 on timeout. */
ssize_t host_recv(int fd, uint8_t *buf, size_t cap, const char *marker, unsigned timeout_ms);

/* Sets IFF_UP on a link; 0 or -1. */
int link_up(const char *ifname);

/* The host end of TAP ifname, receiving what the guest sends; -1 on failure. */
int open_host(const char *ifname);

/* Unbuffered stdout, a private netns without IPv6 chatter; 0, or NETNS_SKIP for main() to return. */
int start_net_test(void);

#endif
