/* The inside of a virtio-net device, shared by the files that implement
 * it: virtio_net.c (the model: features, config space, queue pairs, the
 * control queue, construction, migration), net_tap.c (the userspace
 * datapath between the rings and the TAP) and net_vhost.c (the vhost-net
 * vrings of each pair). Nothing else includes this. */
#ifndef VMM_VIRTIO_NET_PRIV_H
#define VMM_VIRTIO_NET_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "loop.h"
#include "tap.h"
#include "vhost_net.h"
#include "virtio_net.h"

/* Feature bits (5.1.3). */
#define NET_F_CSUM        0
#define NET_F_GUEST_CSUM  1
#define NET_F_MAC         5
#define NET_F_GUEST_TSO4  7
#define NET_F_GUEST_TSO6  8
#define NET_F_GUEST_ECN   9
#define NET_F_GUEST_UFO   10
#define NET_F_HOST_TSO4   11
#define NET_F_HOST_TSO6   12
#define NET_F_HOST_ECN    13
#define NET_F_HOST_UFO    14
#define NET_F_MRG_RXBUF   15
#define NET_F_STATUS      16
#define NET_F_CTRL_VQ     17
#define NET_F_MQ          22

#define NET_S_LINK_UP 1

/* Control queue (5.1.6.5). */
#define NET_CTRL_MQ 4
#define NET_CTRL_MQ_VQ_PAIRS_SET 0
#define NET_OK  0
#define NET_ERR 1

#define NET_HDR_LEN TAP_VNET_HDR_LEN /* struct virtio_net_hdr_mrg_rxbuf */
#define NET_NUM_BUFFERS_OFF 10
/* The largest packet a TAP hands us: 64 KiB of GSO payload plus headers. */
#define RX_BUF_LEN (NET_HDR_LEN + 65536 + 1024)
#define TX_BUDGET 256
#define RX_BUDGET 256
#define RX_VIOV_MAX 1024 /* UIO_MAXIOV */
#define TX_IOV_CAP 256
#define CTRL_IOV_CAP 64
/* Config space: mac[6], status, max_virtqueue_pairs, mtu (mtu present but
 * VIRTIO_NET_F_MTU not offered, so drivers do not read it). */
#define NET_CONFIG_SIZE 12

/* Features vhost-net must also support for us to offer them with vhost. */
#define VHOST_HANDLED (VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX) | VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC) | \
		       VIRTIO_BIT(NET_F_MRG_RXBUF) | VIRTIO_BIT(VIRTIO_F_VERSION_1))

struct net_pair {
	struct virtio_net *n;
	unsigned index;
	int tap_fd;
	struct loop_fd *watch;
	bool enabled;      /* in use (pair < active_pairs) */
	bool rx_waiting;   /* out of rx buffers: waiting for an rx kick */
	bool tx_backlog;   /* tx stopped early: resume when the TAP is writable */
	bool rx_pending;   /* rxbuf holds a packet not yet delivered */
	size_t rx_len;
	uint8_t *rxbuf;
	struct iovec *rx_iov;   /* queue_max_size entries */
	uint16_t *rx_heads;     /* chains of the packet being delivered */
	uint32_t *rx_lens;
	struct iovec *rx_viov;  /* RX_VIOV_MAX: the guest buffers one readv fills */
	struct iovec tx_iov[TX_IOV_CAP];
	struct vhost_net vhost;
	bool vhost_open;
	bool vhost_running;
	bool quiesce_stopped; /* vhost stopped by virtio_net_quiesce */
};

struct virtio_net {
	struct virtio_device vd;
	char name[32];
	uint8_t config[NET_CONFIG_SIZE];
	unsigned pairs;
	unsigned active_pairs;
	bool vhost;
	bool running;      /* datapath started (activate) and not broken */
	bool quiesced;     /* virtio_net_quiesce: datapath held for migration */
	bool incoming;     /* adopted a migration's TAP: untouched until activation */
	bool offloads_assumed; /* tap_offloads not probed (incoming): probe at activation unless loaded */
	unsigned restore_pairs; /* active pairs loaded by virtio_net_load, for the next activation */
	unsigned tap_offloads; /* TUN_F_* the TAP accepted at probe */
	struct tap tap;
	struct uv_loop_s *loop;
	struct net_pair pair[VIRTIO_NET_MAX_PAIRS];
	struct virtio_net_stats st;
};

static inline unsigned rxq(unsigned pair) { return 2 * pair; }
static inline unsigned txq(unsigned pair) { return 2 * pair + 1; }
static inline unsigned ctrlq(const struct virtio_net *n) { return 2 * n->pairs; }


/* virtio_net.c */
/* Marks the device NEEDS_RESET (a driver error) and stops its datapath. */
void net_device_broken(struct virtio_net *n, const char *why);
/* Interrupts the driver for queue q if its notification rules want it. */
void net_signal_if_needed(struct virtio_net *n, unsigned q);
/* Watches the pair's TAP for what its rx and tx wait for, or nothing. */
void net_pair_update_watch(struct net_pair *p);
void net_stop_all_watches(struct virtio_net *n);
size_t net_iov_copy_to(const struct iovec *iov, unsigned n, size_t off, const void *src, size_t len);
size_t net_iov_copy_from(const struct iovec *iov, unsigned n, void *dst, size_t len);

/* net_tap.c: the userspace datapath of one pair. */
void net_pair_tx(struct net_pair *p);      /* a tx kick, or the TAP writable */
void net_pair_rx(struct net_pair *p);      /* the TAP readable */
void net_pair_rx_kick(struct net_pair *p); /* an rx kick: buffers were added */
void net_on_tap(void *opaque, int events); /* the TAP watch's callback */

/* net_vhost.c: the vhost-net vrings of one pair. */
/* Starts both vrings from the virtqueues' indices (kicks and calls through
 * the transport's eventfds). */
int net_vhost_pair_start(struct virtio_net *n, struct net_pair *p);
/* Stops both and saves where they stopped in the virtqueues; -1 (both
 * tried) if one could not be stopped: its indices are unknown. */
int net_vhost_pair_stop(struct virtio_net *n, struct net_pair *p);
void net_vhost_pair_stop_logged(struct virtio_net *n, struct net_pair *p);

#endif
