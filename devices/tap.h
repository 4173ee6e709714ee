/* TAP devices as a virtio-net backend: one fd per queue pair, each opened
 * with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE, non-blocking,
 * with a 12-byte vnet header (struct virtio_net_hdr_mrg_rxbuf, the virtio
 * 1.x header), so that a virtio-net buffer goes to the TAP as it is.
 * The TAP keeps its offload and vnet-header settings across processes: an
 * adopted fd is checked, never re-initialised. */
#ifndef VMM_TAP_H
#define VMM_TAP_H

#include <stdbool.h>
#include <linux/if_tun.h>
#include <net/if.h>

#define TAP_MAX_QUEUES 16
#define TAP_VNET_HDR_LEN 12

/* Every TUN_F_* offload this code knows. */
#define TAP_ALL_OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO)

struct tap {
	char ifname[IFNAMSIZ];
	unsigned nqueues;
	int fds[TAP_MAX_QUEUES];
	bool adopted;      /* fds were handed in, not opened here */
	unsigned offloads; /* TUN_F_* last set with tap_set_offloads */
	/* Queue q is detached (TUNSETQUEUE), as found at adoption or set with
	 * tap_set_queue_enabled. */
	bool detached[TAP_MAX_QUEUES];
	/* Detached queue adopted on a kernel that does not say which TAP a
	 * detached queue belongs to: checked when it is first attached. */
	bool unverified[TAP_MAX_QUEUES];
};

/* Opens nqueues queues of the TAP `ifname`, creating it if it is absent,
 * and sets its vnet header length to 12. With nqueues == 1 an existing
 * single-queue TAP is accepted too. Fails naming the interface and the
 * errno text, with a hint when it exists without IFF_MULTI_QUEUE (EINVAL)
 * or another process holds its queue (EBUSY). */
int tap_open(struct tap *t, const char *ifname, unsigned nqueues);
/* Takes over fds (queues of one TAP; e.g. received with SCM_RIGHTS),
 * changing nothing the TAP's other holders could see: checks with fstat
 * that each is /dev/net/tun (character device 10:200), with TUNGETIFF that
 * it is a TAP with IFF_NO_PI | IFF_VNET_HDR (and IFF_MULTI_QUEUE if n > 1),
 * all of the same interface, no fd twice, and with TUNGETVNETHDRSZ that
 * the header is 12 bytes (never changed here). A detached queue is adopted
 * as it is, never attached, and recorded in t->detached; kernels before
 * 6.x answer TUNGETIFF on it with EBADFD, so there it is taken on fstat
 * alone (t->unverified) and its TAP is checked when it is first attached.
 * At least one queue must be attached, to name the TAP. A blocking fd is
 * made non-blocking (never the reverse). On success the fds belong to t
 * (closed by tap_close); on failure they are left alone. */
int tap_adopt(struct tap *t, const int *fds, unsigned n);
void tap_close(struct tap *t);

/* TUN_F_* bits the TAP accepts (tried with TUNSETOFFLOAD, the full set
 * first, then backing off: UFO, ECN, TSO6, TSO4), e.g.
 * TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO.
 * Afterwards the TAP is set back to t->offloads (0 after open/adopt). */
int tap_probe_offloads(struct tap *t, unsigned *supported);
/* What the kernel may hand us (and so the guest): the guest's GUEST_*
 * features mapped to TUN_F_*. */
int tap_set_offloads(struct tap *t, unsigned tun_flags);

/* Attach or detach queue q (TUNSETQUEUE), so that the kernel steers
 * packets only to queues the guest uses. Idempotent. Attaching an
 * unverified queue checks that it joined t->ifname (else it is detached
 * again and -1 returned). */
int tap_set_queue_enabled(struct tap *t, unsigned q, bool enabled);

/* What the kernel says about the open TAP now (read-only ioctls), for a
 * migration's description of it: header length and which queues are
 * attached. */
struct tap_state {
	int vnet_hdr_len;
	bool attached[TAP_MAX_QUEUES];
};
int tap_get_state(const struct tap *t, struct tap_state *st);
/* Checks that queue q's fd is still a queue of t->ifname (read-only): -1
 * with a message saying what the fd is instead. A queue the kernel does
 * not identify (see tap_adopt) passes if it is detached. */
int tap_check_queue(const struct tap *t, unsigned q);

/* For management (vmm.net): a persistent TAP that outlives this process
 * (fails if an interface of that name exists), or removing one (fails if
 * there is none, or it is not a TAP). Names: 1..IFNAMSIZ-1 characters, no
 * '/', ' ' or '%'. */
int tap_create_persistent(const char *ifname, bool multi_queue);
int tap_delete_persistent(const char *ifname);

#endif
