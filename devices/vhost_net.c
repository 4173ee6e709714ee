/* vhost-net: hands one queue pair's rings, the guest memory table and the
 * queue's eventfds to the kernel. Every ioctl is checked and named in the
 * message, with the vring index where there is one. */
#include "vhost_net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vhost.h>

#include "err.h"

#define VHOST_NET_DEV "/dev/vhost-net"

int vhost_net_open(struct vhost_net *v, int fd)
{
	bool opened = false;
	*v = (struct vhost_net){ .fd = -1 };
	if (fd < 0) {
		fd = open(VHOST_NET_DEV, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				return vmm_fail(VHOST_NET_DEV ": no such file (is the vhost_net module loaded?)");
			return vmm_fail_errno("open " VHOST_NET_DEV);
		}
		opened = true;
	}
	uint64_t features = 0;
	if (ioctl(fd, VHOST_SET_OWNER) < 0) {
		vmm_fail_errno("vhost-net: VHOST_SET_OWNER");
		goto fail;
	}
	if (ioctl(fd, VHOST_GET_FEATURES, &features) < 0) {
		vmm_fail_errno("vhost-net: VHOST_GET_FEATURES");
		goto fail;
	}
	v->fd = fd;
	v->features = features;
	return 0;
fail:
	if (opened) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -1;
}

void vhost_net_close(struct vhost_net *v)
{
	if (v->fd >= 0)
		close(v->fd);
	*v = (struct vhost_net){ .fd = -1 };
}

/* Guest RAM the kernel can take as a memory table. */
static bool have_memory(const struct guest_mem *mem)
{
	return mem && mem->host && mem->nregions > 0 && mem->nregions <= 2;
}

int vhost_net_set_memory(struct vhost_net *v, const struct guest_mem *mem)
{
	if (v->fd < 0)
		return vmm_fail("vhost-net: memory table: the device is not open");
	if (!have_memory(mem))
		return vmm_fail("vhost-net: memory table: no guest memory");
	if (v->mem_host == mem->host && v->mem_size == mem->size)
		return 0;
	struct vhost_memory *table = calloc(1, sizeof(*table) + mem->nregions * sizeof(table->regions[0]));
	if (!table)
		return vmm_fail("vhost-net: out of memory");
	table->nregions = mem->nregions;
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct guest_region *r = &mem->regions[i];
		table->regions[i] = (struct vhost_memory_region){
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uint64_t)(uintptr_t)(mem->host + r->offset),
		};
	}
	int rc = ioctl(v->fd, VHOST_SET_MEM_TABLE, table);
	free(table);
	if (rc < 0)
		return vmm_fail_errno("vhost-net: VHOST_SET_MEM_TABLE (%u regions)", mem->nregions);
	v->mem_host = mem->host;
	v->mem_size = mem->size;
	return 0;
}

int vhost_net_setup(struct vhost_net *v, uint64_t features, const struct guest_mem *mem)
{
	if (v->fd < 0)
		return vmm_fail("vhost-net: setup: the device is not open");
	if (features & ~v->features)
		return vmm_fail("vhost-net: setup: features 0x%llx not offered by the kernel (it offers 0x%llx)",
				(unsigned long long)(features & ~v->features),
				(unsigned long long)v->features);
	if (!have_memory(mem)) /* refused before any ioctl */
		return vmm_fail("vhost-net: setup: no guest memory");
	if (ioctl(v->fd, VHOST_SET_FEATURES, &features) < 0)
		return vmm_fail_errno("vhost-net: VHOST_SET_FEATURES 0x%llx", (unsigned long long)features);
	return vhost_net_set_memory(v, mem);
}

/* The checks the kernel would make with a bare EINVAL, with a message. */
static int check_vring(const struct vhost_net *v, unsigned idx, const char *what)
{
	if (idx > 1)
		return vmm_fail("vhost-net: %s: vring %u: no such vring (0 rx, 1 tx)", what, idx);
	if (v->fd < 0)
		return vmm_fail("vhost-net: %s: vring %u: the device is not open", what, idx);
	return 0;
}

int vhost_net_start(struct vhost_net *v, unsigned idx, const struct vhost_vring *r, int tap_fd)
{
	if (check_vring(v, idx, "start") < 0)
		return -1;
	if (vhost_vring_check(r, "vhost-net: start", idx) < 0)
		return -1;
	if (tap_fd < 0)
		return vmm_fail("vhost-net: start: vring %u: no TAP fd", idx);
	if (v->running[idx])
		return vmm_fail("vhost-net: start: vring %u is already started", idx);

	struct vhost_vring_state num = { .index = idx, .num = r->size };
	if (ioctl(v->fd, VHOST_SET_VRING_NUM, &num) < 0)
		return vmm_fail_errno("vhost-net: VHOST_SET_VRING_NUM vring %u (size %u)", idx, r->size);
	struct vhost_vring_state base = { .index = idx, .num = r->last_avail };
	if (ioctl(v->fd, VHOST_SET_VRING_BASE, &base) < 0)
		return vmm_fail_errno("vhost-net: VHOST_SET_VRING_BASE vring %u (base %u)", idx, r->last_avail);
	struct vhost_vring_addr addr = {
		.index = idx,
		.flags = 0,
		.desc_user_addr = (uint64_t)(uintptr_t)r->desc,
		.used_user_addr = (uint64_t)(uintptr_t)r->used,
		.avail_user_addr = (uint64_t)(uintptr_t)r->avail,
		.log_guest_addr = 0,
	};
	if (ioctl(v->fd, VHOST_SET_VRING_ADDR, &addr) < 0)
		return vmm_fail_errno("vhost-net: VHOST_SET_VRING_ADDR vring %u", idx);
	struct vhost_vring_file kick = { .index = idx, .fd = r->kick_fd };
	if (ioctl(v->fd, VHOST_SET_VRING_KICK, &kick) < 0)
		return vmm_fail_errno("vhost-net: VHOST_SET_VRING_KICK vring %u (fd %d)", idx, r->kick_fd);
	struct vhost_vring_file call = { .index = idx, .fd = r->call_fd };
	if (ioctl(v->fd, VHOST_SET_VRING_CALL, &call) < 0)
		return vmm_fail_errno("vhost-net: VHOST_SET_VRING_CALL vring %u (fd %d)", idx, r->call_fd);
	struct vhost_vring_file backend = { .index = idx, .fd = tap_fd };
	if (ioctl(v->fd, VHOST_NET_SET_BACKEND, &backend) < 0)
		return vmm_fail_errno("vhost-net: VHOST_NET_SET_BACKEND vring %u (TAP fd %d)", idx, tap_fd);
	v->running[idx] = true;
	return 0;
}

int vhost_net_stop(struct vhost_net *v, unsigned idx, uint16_t *last_avail)
{
	if (check_vring(v, idx, "stop") < 0)
		return -1;
	if (!v->running[idx])
		return vmm_fail("vhost-net: stop: vring %u is not started", idx);
	struct vhost_vring_file backend = { .index = idx, .fd = VHOST_FILE_UNBIND };
	if (ioctl(v->fd, VHOST_NET_SET_BACKEND, &backend) < 0)
		return vmm_fail_errno("vhost-net: VHOST_NET_SET_BACKEND vring %u (detach)", idx);
	v->running[idx] = false;
	struct vhost_vring_state base = { .index = idx };
	if (ioctl(v->fd, VHOST_GET_VRING_BASE, &base) < 0)
		return vmm_fail_errno("vhost-net: VHOST_GET_VRING_BASE vring %u", idx);
	if (last_avail)
		*last_avail = (uint16_t)base.num;
	return 0;
}
