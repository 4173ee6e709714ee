/* TAP queues for virtio-net: open or adopt, offloads, queue steering,
 * persistent devices. See tap.h. */
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "err.h"

#define TUN_PATH "/dev/net/tun"
#define TUN_MAJOR 10 /* misc */
#define TUN_MINOR 200
#define TAP_FLAGS (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)


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

/* What one queue fd is, found with read-only calls. */
struct queue_info {
	bool identified;     /* TUNGETIFF answered: name, flags, vnet_hdr known */
	bool attached;
	char name[IFNAMSIZ];
	short flags;
	int vnet_hdr;
};

/* "a pipe", "character device 1:3", ...: for messages. */
static const char *fd_kind(const struct stat *st, char *buf, size_t len)
{
	if (S_ISFIFO(st->st_mode))
		return "a pipe";
	if (S_ISSOCK(st->st_mode))
		return "a socket";
	if (S_ISREG(st->st_mode))
		return "a regular file";
	if (S_ISDIR(st->st_mode))
		return "a directory";
	if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
		snprintf(buf, len, "%s device %u:%u", S_ISCHR(st->st_mode) ? "character" : "block",
			 major(st->st_rdev), minor(st->st_rdev));
		return buf;
	}
	return "not a device";
}

/* fstat first, so that no TUN ioctl ever reaches another driver. A
 * detached queue answers TUNGETIFF with IFF_DETACH_QUEUE on recent
 * kernels and with EBADFD on older ones (as does a /dev/net/tun fd that
 * never joined a TAP): the latter is reported unidentified, detached. */
static int query_queue(int fd, struct queue_info *qi)
{
	memset(qi, 0, sizeof(*qi));
	qi->vnet_hdr = -1;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return vmm_fail_errno("fd %d", fd);
	if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != TUN_MAJOR || minor(st.st_rdev) != TUN_MINOR) {
		char kind[64];
		return vmm_fail("fd %d is not a TAP queue: it is %s, not " TUN_PATH " (10:200)", fd,
				fd_kind(&st, kind, sizeof(kind)));
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
		if (errno == EBADFD)
			return 0; /* detached (or never attached), kernel says no more */
		return vmm_fail_errno("fd %d: TUNGETIFF", fd);
	}
	qi->identified = true;
	qi->flags = ifr.ifr_flags;
	qi->attached = !(ifr.ifr_flags & IFF_DETACH_QUEUE);
	snprintf(qi->name, sizeof(qi->name), "%.*s", IFNAMSIZ - 1, ifr.ifr_name);
	if (ioctl(fd, TUNGETVNETHDRSZ, &qi->vnet_hdr) < 0)
		return vmm_fail_errno("TAP %s: fd %d: TUNGETVNETHDRSZ", qi->name, fd);
	return 0;
}

/* The checks of an identified queue that do not depend on the others. */
static int check_identified(int fd, const struct queue_info *qi, unsigned n)
{
	if ((qi->flags & (IFF_TUN | IFF_TAP)) != IFF_TAP)
		return vmm_fail("TAP: fd %d is a TUN device (%s), not a TAP", fd, qi->name);
	if ((qi->flags & TAP_FLAGS) != TAP_FLAGS)
		return vmm_fail("TAP %s: fd %d lacks %s%s", qi->name, fd, qi->flags & IFF_NO_PI ? "" : "IFF_NO_PI ",
				qi->flags & IFF_VNET_HDR ? "" : "IFF_VNET_HDR");
	if (n > 1 && !(qi->flags & IFF_MULTI_QUEUE))
		return vmm_fail("TAP %s: %u fds but the TAP is not multi_queue", qi->name, n);
	if (qi->vnet_hdr != TAP_VNET_HDR_LEN)
		return vmm_fail("TAP %s: vnet header is %d bytes, %d needed (not changed on an adopted TAP)",
				qi->name, qi->vnet_hdr, TAP_VNET_HDR_LEN);
	return 0;
}

/* Making it non-blocking is safe for whoever shares the open file; the
 * reverse would not be. FD_CLOEXEC is this fd's own. */
static int make_nonblocking(int fd, const char *name)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return vmm_fail_errno("TAP %s: fd %d: F_GETFL", name, fd);
	if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return vmm_fail_errno("TAP %s: fd %d: setting O_NONBLOCK", name, fd);
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return vmm_fail_errno("TAP %s: fd %d: F_SETFD", name, fd);
	return 0;
}

int tap_adopt(struct tap *t, const int *fds, unsigned n)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < TAP_MAX_QUEUES; i++)
		t->fds[i] = -1;
	if (n < 1 || n > TAP_MAX_QUEUES)
		return vmm_fail("TAP: %u fds to adopt (1..%d)", n, TAP_MAX_QUEUES);
	struct queue_info qi[TAP_MAX_QUEUES];
	int named = -1; /* the first identified queue: it names the TAP */
	for (unsigned i = 0; i < n; i++) {
		int fd = fds[i];
		if (fd < 0)
			return vmm_fail("TAP: fd %u of %u is %d", i + 1, n, fd);
		for (unsigned j = 0; j < i; j++)
			if (fds[j] == fd)
				return vmm_fail("TAP: fd %d given twice", fd);
		if (query_queue(fd, &qi[i]))
			return vmm_fail_context("TAP: queue %u", i);
		if (!qi[i].identified)
			continue;
		if (check_identified(fd, &qi[i], n))
			return -1;
		if (named < 0)
			named = (int)i;
		else if (strcmp(qi[i].name, qi[named].name))
			return vmm_fail("TAP: fd %d belongs to %s, fd %d to %s: all queues must be of one TAP",
					fds[named], qi[named].name, fd, qi[i].name);
	}
	if (named < 0)
		return vmm_fail("TAP: none of the %u fds is an attached queue: cannot tell which TAP they are", n);
	for (unsigned i = 0; i < n; i++)
		if (make_nonblocking(fds[i], qi[named].name))
			return -1;
	snprintf(t->ifname, sizeof(t->ifname), "%s", qi[named].name);
	for (unsigned i = 0; i < n; i++) {
		t->fds[i] = fds[i];
		t->detached[i] = !qi[i].attached;
		t->unverified[i] = !qi[i].identified;
	}
	t->nqueues = n;
	t->adopted = true;
	return 0;
}

int tap_get_state(const struct tap *t, struct tap_state *st)
{
	memset(st, 0, sizeof(*st));
	st->vnet_hdr_len = -1;
	for (unsigned q = 0; q < t->nqueues; q++) {
		struct queue_info qi;
		if (query_queue(t->fds[q], &qi))
			return vmm_fail_context("TAP %s: queue %u", t->ifname, q);
		st->attached[q] = qi.attached;
		if (qi.identified && st->vnet_hdr_len < 0)
			st->vnet_hdr_len = qi.vnet_hdr;
	}
	return 0;
}

int tap_check_queue(const struct tap *t, unsigned q)
{
	if (q >= t->nqueues)
		return vmm_fail("TAP %s: no queue %u (%u queues)", t->ifname, q, t->nqueues);
	struct queue_info qi;
	if (query_queue(t->fds[q], &qi))
		return vmm_fail_context("TAP %s: queue %u", t->ifname, q);
	if (!qi.identified)
		return 0; /* a detached queue the kernel will not name */
	if (strcmp(qi.name, t->ifname))
		return vmm_fail("TAP %s: queue %u: fd %d is a queue of %s", t->ifname, q, t->fds[q], qi.name);
	return check_identified(t->fds[q], &qi, t->nqueues);
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

/* An attached queue, for the ioctls that act on the whole TAP. */
static int ctl_fd(const struct tap *t)
{
	for (unsigned q = 0; q < t->nqueues; q++)
		if (!t->detached[q])
			return t->fds[q];
	return t->fds[0];
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
		if (set_offload(ctl_fd(t), tries[i]) == 0) {
			found = tries[i];
			break;
		}
		if (errno != EINVAL)
			return vmm_fail_errno("TAP %s: TUNSETOFFLOAD 0x%x", t->ifname, tries[i]);
	}
	/* UFO alone may be what a kernel refuses while taking ECN. */
	if (found == (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) &&
	    set_offload(ctl_fd(t), found | TUN_F_UFO) == 0)
		found |= TUN_F_UFO;
	if (set_offload(ctl_fd(t), t->offloads) < 0)
		return vmm_fail_errno("TAP %s: restoring offloads 0x%x", t->ifname, t->offloads);
	*supported = found;
	return 0;
}

int tap_set_offloads(struct tap *t, unsigned tun_flags)
{
	if (t->nqueues == 0)
		return vmm_fail("TAP: not open");
	if (set_offload(ctl_fd(t), tun_flags) < 0)
		return vmm_fail_errno("TAP %s: TUNSETOFFLOAD 0x%x", t->ifname, tun_flags);
	t->offloads = tun_flags;
	return 0;
}

/* After attaching a queue the kernel would not name at adoption: it must
 * have joined our TAP, or it goes back to detached. */
static int verify_attached(struct tap *t, unsigned q)
{
	struct queue_info qi;
	int rc = query_queue(t->fds[q], &qi);
	if (rc == 0 && qi.identified && strcmp(qi.name, t->ifname) == 0) {
		t->unverified[q] = false;
		return 0;
	}
	char found[512];
	if (rc)
		snprintf(found, sizeof(found), "%s", vmm_error());
	else
		snprintf(found, sizeof(found), "it joined %s", qi.identified ? qi.name : "a TAP that has no name");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_DETACH_QUEUE;
	if (ioctl(t->fds[q], TUNSETQUEUE, &ifr) < 0)
		fprintf(stderr, "vmm: TAP %s: queue %u: detaching it again: %s\n", t->ifname, q, strerror(errno));
	return vmm_fail("TAP %s: queue %u (fd %d), adopted detached, is not a queue of %s: %s", t->ifname, q,
			t->fds[q], t->ifname, found);
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
	if (ioctl(t->fds[q], TUNSETQUEUE, &ifr) == 0) {
		if (enabled && t->unverified[q] && verify_attached(t, q))
			return -1;
		t->detached[q] = !enabled;
		return 0;
	}
	int e = errno;
	if (e == EINVAL) {
		struct ifreq cur;
		memset(&cur, 0, sizeof(cur));
		int rc = ioctl(t->fds[q], TUNGETIFF, &cur);
		/* kernels flag a detached queue with IFF_DETACH_QUEUE; older
		 * ones refuse TUNGETIFF on it with EBADFD */
		bool attached = rc == 0 ? !(cur.ifr_flags & IFF_DETACH_QUEUE) : errno != EBADFD;
		if (attached == enabled) {
			if (enabled && t->unverified[q] && verify_attached(t, q))
				return -1;
			t->detached[q] = !enabled;
			return 0;
		}
		if (enabled == false && !(cur.ifr_flags & IFF_MULTI_QUEUE))
			return vmm_fail("TAP %s: queue %u: cannot detach a queue of a TAP without multi_queue",
					t->ifname, q);
	}
	errno = e;
	return vmm_fail_errno("TAP %s: queue %u: TUNSETQUEUE %s%s", t->ifname, q, enabled ? "attach" : "detach",
			      enabled && t->unverified[q] ? " (adopted as detached, but the kernel did not say of which "
							    "TAP: not a queue of one?)" : "");
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
