/* TAP queues for virtio-net: open or adopt, offloads, queue steering,
 * persistent devices. See tap.h. */
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "err.h"

#define TUN_PATH "/dev/net/tun"
#define TAP_FLAGS (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)

/* Every TUN_F_* bit we know, in the order we give them up when probing:
 * UFO first (newer kernels may refuse it), then ECN, then the TSOs. */
#define TAP_ALL_OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO)

static int check_name(const char *ifname)
{
	if (!ifname || !ifname[0])
		return vmm_fail("TAP name is empty");
	if (strlen(ifname) >= IFNAMSIZ)
		return vmm_fail("TAP name \"%s\" is too long (at most %d characters)", ifname, IFNAMSIZ - 1);
	if (strchr(ifname, '/') || strchr(ifname, ' ') || strchr(ifname, '%'))
		return vmm_fail("TAP name \"%s\": '/', ' ' and '%%' are not allowed", ifname);
	return 0;
}

static int open_tun(const char *ifname)
{
	int fd = open(TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return vmm_fail_errno("%s: open %s", ifname, TUN_PATH);
	return fd;
}

/* TUNSETIFF on fd; a message naming ifname and explaining the usual
 * refusals. */
static int set_iff(int fd, const char *ifname, short flags)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	ifr.ifr_flags = flags;
	if (ioctl(fd, TUNSETIFF, &ifr) == 0)
		return 0;
	int e = errno;
	const char *hint = "";
	if (e == EINVAL)
		hint = flags & IFF_MULTI_QUEUE
			       ? " (it exists as another kind of device, or as a TAP without multi_queue)"
			       : " (it exists as another kind of device, or as a multi_queue TAP)";
	else if (e == EBUSY)
		hint = " (its queue is held by another process; pass its fd instead of opening it again)";
	else if (e == EPERM)
		hint = " (not allowed: needs CAP_NET_ADMIN, or the TAP belongs to another user)";
	errno = e;
	return vmm_fail_errno("TAP %s: TUNSETIFF%s", ifname, hint);
}

static void close_fds(struct tap *t)
{
	for (unsigned i = 0; i < t->nqueues; i++)
		if (t->fds[i] >= 0)
			close(t->fds[i]);
	t->nqueues = 0;
}

int tap_open(struct tap *t, const char *ifname, unsigned nqueues)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < TAP_MAX_QUEUES; i++)
		t->fds[i] = -1;
	if (check_name(ifname))
		return -1;
	if (nqueues < 1 || nqueues > TAP_MAX_QUEUES)
		return vmm_fail("TAP %s: %u queues (1..%d)", ifname, nqueues, TAP_MAX_QUEUES);
	snprintf(t->ifname, sizeof(t->ifname), "%s", ifname);

	short flags = TAP_FLAGS | IFF_MULTI_QUEUE;
	for (unsigned i = 0; i < nqueues; i++) {
		int fd = open_tun(ifname);
		if (fd < 0)
			goto fail;
		int rc = set_iff(fd, ifname, flags);
		/* One queue: an existing single-queue TAP is fine too. */
		if (rc && i == 0 && nqueues == 1 && errno == EINVAL) {
			char first[1024];
			snprintf(first, sizeof(first), "%s", vmm_error());
			rc = set_iff(fd, ifname, TAP_FLAGS);
			if (rc && errno == EINVAL)
				vmm_fail("%s", first); /* not a TAP at all */
			else
				flags = TAP_FLAGS;
		}
		if (rc) {
			close(fd);
			goto fail;
		}
		t->fds[t->nqueues++] = fd;
	}
	/* The header length belongs to the device (all queues); set once. */
	int hdr = TAP_VNET_HDR_LEN;
	if (ioctl(t->fds[0], TUNSETVNETHDRSZ, &hdr) < 0) {
		vmm_fail_errno("TAP %s: TUNSETVNETHDRSZ %d", ifname, hdr);
		goto fail;
	}
	return 0;
fail:
	if (t->nqueues > 0)
		vmm_fail_context("TAP %s: queue %u of %u", ifname, t->nqueues + 1, nqueues);
	close_fds(t);
	return -1;
}

/* TUNGETIFF of one fd; on older kernels a detached queue answers EBADFD,
 * so attach it first (it stays attached: the device decides which queues
 * it uses). Newer kernels answer with IFF_DETACH_QUEUE set. */
static int get_iff(int fd, struct ifreq *ifr)
{
	memset(ifr, 0, sizeof(*ifr));
	if (ioctl(fd, TUNGETIFF, ifr) == 0)
		return 0;
	if (errno != EBADFD)
		return -1;
	struct ifreq q;
	memset(&q, 0, sizeof(q));
	q.ifr_flags = IFF_ATTACH_QUEUE;
	if (ioctl(fd, TUNSETQUEUE, &q) < 0) {
		errno = EBADFD;
		return -1;
	}
	return ioctl(fd, TUNGETIFF, ifr);
}

int tap_adopt(struct tap *t, const int *fds, unsigned n)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < TAP_MAX_QUEUES; i++)
		t->fds[i] = -1;
	if (n < 1 || n > TAP_MAX_QUEUES)
		return vmm_fail("TAP: %u fds to adopt (1..%d)", n, TAP_MAX_QUEUES);
	for (unsigned i = 0; i < n; i++) {
		int fd = fds[i];
		struct ifreq ifr;
		if (fd < 0)
			return vmm_fail("TAP: fd %u of %u is %d", i + 1, n, fd);
		if (get_iff(fd, &ifr) < 0) {
			if (errno == ENOTTY || errno == EINVAL || errno == EBADF)
				return vmm_fail_errno("TAP: fd %d is not a TAP queue (TUNGETIFF)", fd);
			return vmm_fail_errno("TAP: fd %d: TUNGETIFF", fd);
		}
		char name[IFNAMSIZ];
		snprintf(name, sizeof(name), "%.*s", IFNAMSIZ - 1, ifr.ifr_name);
		if ((ifr.ifr_flags & (IFF_TUN | IFF_TAP)) != IFF_TAP)
			return vmm_fail("TAP: fd %d is a TUN device (%s), not a TAP", fd, name);
		if ((ifr.ifr_flags & TAP_FLAGS) != TAP_FLAGS)
			return vmm_fail("TAP %s: fd %d lacks %s%s", name, fd,
					ifr.ifr_flags & IFF_NO_PI ? "" : "IFF_NO_PI ",
					ifr.ifr_flags & IFF_VNET_HDR ? "" : "IFF_VNET_HDR");
		if (n > 1 && !(ifr.ifr_flags & IFF_MULTI_QUEUE))
			return vmm_fail("TAP %s: %u fds but the TAP is not multi_queue", name, n);
		if (i == 0)
			snprintf(t->ifname, sizeof(t->ifname), "%s", name);
		else if (strcmp(name, t->ifname))
			return vmm_fail("TAP: fd %d belongs to %s, fd %d to %s: all queues must be of one TAP",
					fds[0], t->ifname, fd, name);
		for (unsigned j = 0; j < i; j++)
			if (fds[j] == fd)
				return vmm_fail("TAP %s: fd %d given twice", name, fd);
		int hdr = 0;
		if (ioctl(fd, TUNGETVNETHDRSZ, &hdr) < 0)
			return vmm_fail_errno("TAP %s: fd %d: TUNGETVNETHDRSZ", name, fd);
		if (hdr != TAP_VNET_HDR_LEN)
			return vmm_fail("TAP %s: vnet header is %d bytes, %d needed (not changed on an adopted TAP)",
					name, hdr, TAP_VNET_HDR_LEN);
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0)
			return vmm_fail_errno("TAP %s: fd %d: F_GETFL", name, fd);
		/* Making it non-blocking is safe for whoever shares the open file;
		 * the reverse would not be. */
		if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
			return vmm_fail_errno("TAP %s: fd %d: setting O_NONBLOCK", name, fd);
		if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
			return vmm_fail_errno("TAP %s: fd %d: F_SETFD", name, fd);
	}
	for (unsigned i = 0; i < n; i++)
		t->fds[i] = fds[i];
	t->nqueues = n;
	t->adopted = true;
	return 0;
}

void tap_close(struct tap *t)
{
	close_fds(t);
	for (unsigned i = 0; i < TAP_MAX_QUEUES; i++)
		t->fds[i] = -1;
}

static int set_offload(int fd, unsigned flags)
{
	return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags);
}

/* Tries the whole set, then smaller ones; TSO, ECN and UFO need CSUM, so
 * the kernel refuses them alone. Leaves the TAP as t->offloads (what was
 * last set with tap_set_offloads; 0 after tap_open and tap_adopt), so a
 * probe never changes what the kernel hands us. */
int tap_probe_offloads(struct tap *t, unsigned *supported)
{
	static const unsigned tries[] = {
		TAP_ALL_OFFLOADS,
		TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
		TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
		TUN_F_CSUM | TUN_F_TSO4,
		TUN_F_CSUM,
	};
	*supported = 0;
	if (t->nqueues == 0)
		return vmm_fail("TAP: not open");
	unsigned found = 0;
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		if (set_offload(t->fds[0], tries[i]) == 0) {
			found = tries[i];
			break;
		}
		if (errno != EINVAL)
			return vmm_fail_errno("TAP %s: TUNSETOFFLOAD 0x%x", t->ifname, tries[i]);
	}
	/* UFO alone may be what a kernel refuses while taking ECN. */
	if (found == (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) &&
	    set_offload(t->fds[0], found | TUN_F_UFO) == 0)
		found |= TUN_F_UFO;
	if (set_offload(t->fds[0], t->offloads) < 0)
		return vmm_fail_errno("TAP %s: restoring offloads 0x%x", t->ifname, t->offloads);
	*supported = found;
	return 0;
}

int tap_set_offloads(struct tap *t, unsigned tun_flags)
{
	if (t->nqueues == 0)
		return vmm_fail("TAP: not open");
	if (set_offload(t->fds[0], tun_flags) < 0)
		return vmm_fail_errno("TAP %s: TUNSETOFFLOAD 0x%x", t->ifname, tun_flags);
	t->offloads = tun_flags;
	return 0;
}

/* Idempotent: attaching an attached queue (or detaching a detached one)
 * is EINVAL for the kernel, so on EINVAL we look at the queue's state with
 * TUNGETIFF. */
int tap_set_queue_enabled(struct tap *t, unsigned q, bool enabled)
{
	if (q >= t->nqueues)
		return vmm_fail("TAP %s: no queue %u (%u queues)", t->ifname, q, t->nqueues);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
	if (ioctl(t->fds[q], TUNSETQUEUE, &ifr) == 0)
		return 0;
	int e = errno;
	if (e == EINVAL) {
		struct ifreq cur;
		memset(&cur, 0, sizeof(cur));
		int rc = ioctl(t->fds[q], TUNGETIFF, &cur);
		/* kernels flag a detached queue with IFF_DETACH_QUEUE; older
		 * ones refuse TUNGETIFF on it with EBADFD */
		bool attached = rc == 0 ? !(cur.ifr_flags & IFF_DETACH_QUEUE) : errno != EBADFD;
		if (attached == enabled)
			return 0;
		if (enabled == false && !(cur.ifr_flags & IFF_MULTI_QUEUE))
			return vmm_fail("TAP %s: queue %u: cannot detach a queue of a TAP without multi_queue",
					t->ifname, q);
	}
	errno = e;
	return vmm_fail_errno("TAP %s: queue %u: TUNSETQUEUE %s", t->ifname, q, enabled ? "attach" : "detach");
}

static int set_persist(const char *ifname, short flags, int on)
{
	int fd = open_tun(ifname);
	if (fd < 0)
		return -1;
	if (set_iff(fd, ifname, flags)) {
		close(fd);
		return -1;
	}
	if (ioctl(fd, TUNSETPERSIST, (unsigned long)on) < 0) {
		vmm_fail_errno("TAP %s: TUNSETPERSIST %d", ifname, on);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int tap_create_persistent(const char *ifname, bool multi_queue)
{
	if (check_name(ifname))
		return -1;
	if (if_nametoindex(ifname))
		return vmm_fail("TAP %s: an interface of that name exists", ifname);
	return set_persist(ifname, TAP_FLAGS | (multi_queue ? IFF_MULTI_QUEUE : 0), 1);
}

int tap_delete_persistent(const char *ifname)
{
	if (check_name(ifname))
		return -1;
	if (!if_nametoindex(ifname))
		return vmm_fail("TAP %s: no such interface", ifname);
	/* Attaching needs the right IFF_MULTI_QUEUE; try both. */
	if (set_persist(ifname, TAP_FLAGS | IFF_MULTI_QUEUE, 0) == 0)
		return 0;
	if (errno != EINVAL)
		return -1;
	if (set_persist(ifname, TAP_FLAGS, 0) == 0)
		return 0;
	if (errno == EINVAL)
		return vmm_fail("TAP %s: cannot delete: not a TAP device", ifname);
	return -1;
}
