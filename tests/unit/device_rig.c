#include "device_rig.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <net/if.h>

#include "err.h"
#include "qsd.h"
#include "registry.h"
#include "tap.h"

static bool net_ns; /* a private network namespace: TAPs can be made */

bool rig_private_netns(void)
{
	if (!net_ns)
		net_ns = unshare(CLONE_NEWNET) == 0;
	return net_ns;
}

static void irq_line(void *opaque, unsigned gsi, int level)
{
	(void)gsi, (void)level;
	((struct rig *)opaque)->irq_calls++;
}

static void console_output(void *opaque, const uint8_t *buf, size_t len)
{
	(void)opaque, (void)buf, (void)len;
}

static void guest_reset(void *opaque, const char *why)
{
	(void)opaque, (void)why;
}

static struct device *find(void *opaque, const char *kind)
{
	struct rig *r = opaque;
	for (unsigned i = 0; i < r->n; i++)
		if (!strcmp(r->devs[i]->type->kind, kind))
			return r->devs[i];
	return NULL;
}

static char image_dir[64];

static void remove_images(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", image_dir);
	if (image_dir[0] && system(cmd) != 0)
		fprintf(stderr, "device rig: could not remove %s\n", image_dir);
}

/* A disk image for instance n of kind: a sparse 1 MiB file in a private
 * directory removed at exit, made once and reused (as the TAPs are). */
static bool fixture_image(char *path, size_t size, const char *kind, unsigned n)
{
	if (!image_dir[0]) {
		snprintf(image_dir, sizeof(image_dir), "/tmp/device-rig.XXXXXX");
		if (!mkdtemp(image_dir)) {
			fprintf(stderr, "device rig: mkdtemp: %s\n", strerror(errno));
			image_dir[0] = 0;
			return false;
		}
		atexit(remove_images);
	}
	snprintf(path, size, "%s/%s%u.img", image_dir, kind, n);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, 1 << 20)) {
		fprintf(stderr, "device rig: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	close(fd);
	return true;
}

/* A vhost-user-blk backend for instance n of kind: a qemu-storage-daemon
 * on a 1 MiB image, both in the private directory, started once and kept
 * for the process (it serves one front end at a time and re-listens when
 * a device made again connects). false without qemu-storage-daemon. */
static bool fixture_vhost_user(char *path, size_t size, const char *kind, unsigned n)
{
	static struct qsd daemons[RIG_MAX_DEVS];
	static unsigned ndaemons;
	char image[256];
	if (!qsd_available() || !fixture_image(image, sizeof(image), kind, n))
		return false;
	snprintf(path, size, "%s/%s%u.sock", image_dir, kind, n);
	for (unsigned i = 0; i < ndaemons; i++)
		if (!strcmp(daemons[i].socket, path))
			return true;
	if (ndaemons == RIG_MAX_DEVS || qsd_start(&daemons[ndaemons], image, 1 << 20, path)) {
		fprintf(stderr, "device rig: %s\n", vmm_error());
		return false;
	}
	ndaemons++;
	return true;
}

/* The configuration the fixture gives type t: its defaults, and a backend
 * this process can open. false when this machine cannot give one. */
static bool fixture_config(const struct device_type *t, void *config, unsigned instance)
{
	memset(config, 0, t->config_size);
	if (t->config_defaults)
		t->config_defaults(config);
	for (const struct dev_field *f = t->fields; f && f->name; f++) {
		char *p = (char *)config + f->offset;
		if (f->kind == DEV_MAC && !(p[0] | p[1] | p[2] | p[3] | p[4] | p[5])) {
			const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, (uint8_t)instance };
			memcpy(p, mac, 6);
		}
		if (f->kind == DEV_STRING && t->backend_label && !strcmp(t->backend_label, "vhost-user socket") &&
		    !strcmp(f->name, "socket")) {
			if (!fixture_vhost_user(p, f->size, t->kind, instance))
				return false;
		} else if (f->backend && f->kind == DEV_STRING && t->backend_label && !strcmp(t->backend_label, "image")) {
			if (!fixture_image(p, f->size, t->kind, instance))
				return false;
		} else if (f->backend && f->kind == DEV_STRING) {
			if (!net_ns) /* a TAP */
				return false;
			snprintf(p, f->size, "dtt%s%u", t->kind, instance);
			p[f->size - 1] = '\0';
			if (strlen(p) > f->max) {
				p[f->max - 1] = (char)('0' + instance % 10);
				p[f->max] = '\0';
			}
			/* Persistent, so that a device made again opens it in
			 * microseconds rather than wait for a TAP to go and come. */
			if (!if_nametoindex(p) && tap_create_persistent(p, true))
				return false;
		}
	}
	return true;
}

static int rig_devices(struct rig *r);

int rig_up(struct rig *r)
{
	memset(r, 0, sizeof(*r));
	r->ram = calloc(1, RIG_RAM_SIZE);
	if (!r->ram)
		return vmm_fail("rig: out of memory");
	if (guest_mem_wrap(&r->mem, r->ram, RIG_RAM_SIZE))
		return -1;
	r->kvm.sys_fd = r->kvm.vm_fd = -1;
	return rig_devices(r);
}

int rig_up_kvm(struct rig *r, uint64_t ram_size)
{
	memset(r, 0, sizeof(*r));
	r->kvm.sys_fd = r->kvm.vm_fd = -1;
	r->mem.fd = -1;
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		vmm_fail_errno("rig: /dev/kvm");
		return 1;
	}
	if (kvm_create(&r->kvm)) {
		vmm_fail_context("rig");
		return 1;
	}
	if (guest_mem_create(&r->mem, ram_size, "rig") || kvm_map_memory(&r->kvm, &r->mem))
		return -1;
	r->ram = r->mem.host;
	r->with_kvm = true;
	return rig_devices(r);
}

static int rig_devices(struct rig *r)
{
	if (uv_loop_init(&r->loop))
		return vmm_fail("rig: uv_loop_init failed");
	bus_init(&r->pio, "pio");
	bus_init(&r->mmio, "mmio");
	r->host = (struct device_host){
		.vm_name = "rig", .kvm = &r->kvm, .mem = &r->mem, .pio = &r->pio, .mmio = &r->mmio,
		.loop = &r->loop, .opaque = r, .irq_line = irq_line, .console_output = console_output,
		.guest_reset = guest_reset, .find = find,
	};
	for (const struct device_type *const *t = device_registry.board_types; *t; t++) {
		struct device *d = (*t)->create(&r->host, (*t)->kind, NULL, NULL);
		if (!d)
			return -1;
		r->devs[r->n++] = d;
	}
	return 0;
}

void rig_down(struct rig *r)
{
	while (r->n > 0) {
		struct device *d = r->devs[--r->n];
		void *config = d->config;
		d->type->free(d);
		free(config);
	}
	uv_run(&r->loop, UV_RUN_NOWAIT);
	uv_loop_close(&r->loop);
	bus_destroy(&r->pio);
	bus_destroy(&r->mmio);
	if (r->with_kvm) {
		guest_mem_destroy(&r->mem);
		kvm_destroy(&r->kvm);
	} else {
		free(r->ram);
	}
	r->ram = NULL;
}

struct device *rig_instance(struct rig *r, const struct device_type *t, unsigned n)
{
	for (unsigned i = 0; i < r->n; i++)
		if (r->devs[i]->type == t)
			return r->devs[i];
	if (r->n == RIG_MAX_DEVS)
		return NULL;
	void *config = calloc(1, t->config_size ? t->config_size : 1);
	if (!config || !fixture_config(t, config, n) || dev_fields_check(t->fields, config, t->kind)) {
		free(config);
		return NULL;
	}
	char name[16];
	snprintf(name, sizeof(name), "dev%u", n);
	struct device *d = t->create(&r->host, name, config, NULL);
	if (!d) {
		fprintf(stderr, "  %s: create: %s\n", t->kind, vmm_error());
		free(config);
		return NULL;
	}
	d->config = config;
	r->devs[r->n++] = d;
	return d;
}

bool rig_ram_untouched(const struct rig *r)
{
	return r->ram[0] == 0 && !memcmp(r->ram, r->ram + 1, RIG_RAM_SIZE - 1);
}
