/* Fuzz target of the migration stream loader: the input is a byte stream
 * as the target receives it (without fds). It is walked section by section
 * with mig_parse(), and each section goes to its real decoder or loader,
 * on instances that need neither KVM nor a guest:
 *   MIG_HELLO         mig_hello_decode (what the source reads first)
 *   MIG_DESCRIPTION   machine_from_fdt
 *   MIG_VCPU          vcpu_state_load(fds -1)        } on fds -1: a payload that
 *   MIG_MACHINE       machine_state_load(kvm with    } passes the checks fails
 *                     fds -1)                        } at its first ioctl
 *                                                    } (EBADF)
 *   MIG_DEVICE        by device id, through the registry: every device
 *                     type with state is reached by its own load op on a
 *                     device rig (tests/unit/device_rig.h): ids 0..3 the
 *                     PC board's devices (serial8250, rtc, i8042,
 *                     pci-host), 5.. one of each type a VM can be given
 *                     (virtio-net, on a TAP in a private network
 *                     namespace; left out, and said so, without root);
 *                     id 4 is a bare virtio-pci function over a dummy
 *                     device (virtio_pci_load), seeded from a state a
 *                     driver left busy, which the registry's devices are
 *                     not driven into
 *   MIG_PREVIEW       by device id, the same instances: preview_load
 * A MIG_DEVICE section carries a state version before the state: a
 * registry device takes any version its type loads, the function only 1.
 * Not loaded: MIG_MEMORY and MIG_BACKEND (they carry fds, which a stream
 * from memory cannot have) and the protocol sections (FREEZE, END...),
 * which hold no state. A section goes to the instance as the previous
 * sections of the input left it: unlike the real target, which refuses a
 * repeated section, a repeat loads over a loaded device. Each input starts
 * from fresh instances.
 *
 * Beyond "never crash", it checks what the loaders promise (a broken
 * promise abort()s: the fuzzer's crash):
 *   - a parsed section has the length and type its header announced;
 *   - a HELLO that decodes encodes back to its own bytes;
 *   - a description that parses is within bounds and survives
 *     machine_to_fdt() and a second parse unchanged;
 *   - every refusal is -1 with a message; vCPU and machine loads always
 *     fail (fd -1);
 *   - decode-then-apply: a refused device load leaves the device as it was
 *     (its saved state is the same before and after) and moves no
 *     interrupt line;
 *   - an accepted serial or RTC load saves back exactly the payload it
 *     loaded; any other accepted load, which may normalise what it takes
 *     (virtio-pci drops the pending bit of an unmasked vector), saves a
 *     state that loads back and saves the same again;
 *   - the serial port reports its line level once per accepted load, and
 *     no load writes guest memory.
 *
 * Built with -DLIBFUZZER (clang -fsanitize=fuzzer) this is a libFuzzer
 * target. Otherwise main() below is a standalone driver:
 *   fuzz_migstream [-runs=N] [-seed=S] [-write-seeds=DIR] [FILE...]
 * It mutates valid streams built in code (descriptions with
 * machine_to_fdt; UART, RTC and virtio-pci states saved with the real save
 * functions from instances a driver put in a busy state; vCPU and machine
 * payloads built piece by piece as kvm_state.h documents them) with byte
 * flips, truncation, insertion, deletion, header and length-field edits,
 * FDT word edits in descriptions, little-endian field edits in state
 * payloads, piece edits in vCPU/machine payloads (tag, length, MSR count,
 * dropped, repeated or resized pieces), payload resizing and UART queue
 * edits, and, three times out of four, recomputes every section's CRC so
 * that mutations reach the payload parsers. FILEs are replayed once each
 * (a crash input). A failing input is written to fuzz_migstream-crash.bin
 * in the current directory. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "bus.h"
#include "device_rig.h"
#include "err.h"
#include "kvm_state.h"
#include "machine.h"
#include "memory.h"
#include "migstream.h"
#include "pci.h"
#include "registry.h"
#include "rtc.h"
#include "serial8250.h"
#include "virtio_net_pci.h"
#include "virtio.h"
#include "virtio_pci.h"
#include "virtqueue.h"

#define REQUIRE(cond, ...)                                                                   \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_migstream: %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                        \
			fputc('\n', stderr);                                                 \
			abort();                                                             \
		}                                                                            \
	} while (0)

static const uint8_t *current;
static size_t current_len;

/* Sections parsed and loads refused; per section type, loads reached and
 * accepted (for vCPU and machine: passed every check, failed at KVM). */
static unsigned long long stat_sections, stat_refused;
/* MIG_DEVICE sections count by device id. The fuzz machine's devices are
 * the PC board's (0 serial8250, 1 rtc, 2 i8042, 3 pci-host), a virtio-pci
 * function over a dummy device (4), then one device of each type a VM can
 * be given (5, 6, ...: virtio-net so far), in registry order. */
#define DEV_SERIAL     0
#define DEV_RTC        1
#define DEV_FUNCTION   4
#define DEV_FIRST_TYPE 5
#define MAX_DEV_IDS    (DEV_FIRST_TYPE + 8)
#define DEV_STAT(id)   (MIG_TYPE_MAX + 1 + (id))
#define NSTATS         (MIG_TYPE_MAX + 1 + MAX_DEV_IDS)
static unsigned long long stat_reached[NSTATS], stat_accepted[NSTATS];

static char last_refusal[512]; /* for the seed check's message */

static void clear_error(void)
{
	vmm_fail("%s", "");
}

static void count_refusal(const char *what)
{
	stat_refused++;
	snprintf(last_refusal, sizeof(last_refusal), "%s: %s", what, vmm_error());
}

/* --- the instances the loaders load into ------------------------------------- */

#define RAM_SIZE    (1u << 20) /* the smallest guest_mem_wrap takes */
#define NQUEUES     3
#define NVECTORS    (NQUEUES + 1)
#define QUEUE_MAX   256
#define CONFIG_SIZE 8
#define F_MAC       5
#define DEVICE_ID   1
#define HOST_FEATURES (VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(F_MAC) | VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX))

struct dummy_device {
	struct virtio_device vd;
	uint8_t config[CONFIG_SIZE];
};

/* A virtio-pci function on its own buses, without KVM. */
struct function {
	struct bus pio, mmio;
	struct pci_bus *pbus;
	struct dummy_device dev;
	struct virtio_pci *vp;
};

static uv_loop_t loop;
static uint8_t ram[RAM_SIZE]; /* zeros: the seed driver alone writes it, and clears it */
static struct guest_mem mem;
static struct function fn;
static struct kvm no_kvm = { .sys_fd = -1, .vm_fd = -1 };
static bool world_ready, rig_dirty, fn_dirty;
/* Every registered type with state, through the registry alone: the board's
 * devices and one of each addable type on a device rig (device_rig.h). */
static struct rig rig;
static struct device *by_id[MAX_DEV_IDS]; /* NULL: no device, or the function */

static void setup_failed(const char *what)
{
	fprintf(stderr, "fuzz_migstream: %s: %s\n", what, vmm_error());
	exit(1);
}

static void dummy_config_read(struct virtio_device *vd, uint32_t off, void *data, unsigned len)
{
	struct dummy_device *d = vd->opaque;
	memcpy(data, d->config + off, len);
}

static void dummy_config_write(struct virtio_device *vd, uint32_t off, const void *data, unsigned len)
{
	struct dummy_device *d = vd->opaque;
	memcpy(d->config + off, data, len);
}

static int dummy_activate(struct virtio_device *vd)
{
	(void)vd;
	return 0;
}

static void dummy_reset(struct virtio_device *vd)
{
	(void)vd;
}

static void dummy_notify(struct virtio_device *vd, unsigned q)
{
	(void)vd;
	(void)q;
}

static const struct virtio_device_ops dummy_ops = {
	dummy_config_read, dummy_config_write, dummy_activate, dummy_reset, dummy_notify,
};

static void pump(void)
{
	for (int i = 0; i < 4; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
}

static void function_up(struct function *f)
{
	memset(f, 0, sizeof(*f));
	bus_init(&f->pio, "pio");
	bus_init(&f->mmio, "mmio");
	f->pbus = pci_bus_new(&f->pio, &f->mmio);
	if (!f->pbus)
		setup_failed("pci_bus_new");
	virtio_init(&f->dev.vd, "fuzz0", DEVICE_ID, &dummy_ops, &f->dev, NQUEUES, QUEUE_MAX, CONFIG_SIZE);
	f->dev.vd.host_features = HOST_FEATURES;
	f->dev.vd.mem = &mem;
	f->dev.vd.loop = &loop;
	f->vp = virtio_pci_new(f->pbus, &f->dev.vd, NULL, &loop);
	if (!f->vp || virtio_pci_realize(f->vp))
		setup_failed("virtio-pci function");
}

static void function_down(struct function *f)
{
	virtio_pci_free(f->vp);
	f->vp = NULL;
	pump();
	virtio_destroy(&f->dev.vd);
	pci_bus_free(f->pbus);
	bus_destroy(&f->pio);
	bus_destroy(&f->mmio);
}

/* The rig's devices by id: the board's, then one of each addable type
 * with state that this process can give a backend. */
static void rig_build(void)
{
	if (rig_up(&rig))
		setup_failed("rig_up");
	memset(by_id, 0, sizeof(by_id));
	for (unsigned i = 0; device_registry.board_types[i] && i < DEV_FUNCTION; i++)
		by_id[i] = rig.devs[i];
	unsigned id = DEV_FIRST_TYPE;
	for (const struct device_type *const *t = device_registry.types; *t && id < MAX_DEV_IDS; t++)
		if ((*t)->state_version) {
			by_id[id] = rig_instance(&rig, *t, id);
			id++;
		}
}

/* Once per process: the loop, guest RAM and the instances. */
static void world_up(void)
{
	if (world_ready)
		return;
	if (uv_loop_init(&loop))
		setup_failed("uv_loop_init");
	if (guest_mem_wrap(&mem, ram, RAM_SIZE))
		setup_failed("guest_mem_wrap");
	rig_private_netns(); /* without one, network devices are left out */
	rig_build();
	function_up(&fn);
	world_ready = true;
}

/* After each input: the instances a load changed are made new. */
static void world_reset(void)
{
	if (rig_dirty) {
		rig_down(&rig);
		rig_build();
	}
	if (fn_dirty) {
		function_down(&fn);
		function_up(&fn);
	}
	rig_dirty = fn_dirty = false;
}

static bool ram_untouched(void)
{
	return ram[0] == 0 && !memcmp(ram, ram + 1, RAM_SIZE - 1);
}

/* --- the loaders --------------------------------------------------------------- */

/* A device whose state can be saved and loaded. The load wrappers check
 * the device-specific promises. */
struct device_loader {
	const char *name;
	int (*load)(const void *p, size_t len);
	int (*save)(struct mig_buf *b);
	bool *dirty;
	bool exact; /* saves back exactly what it loaded */
};

/* The registry device a section goes to, and its version. */
static struct device *cur_dev;
static uint16_t cur_version;

/* Any type's load, through its ops: it never writes guest memory, a
 * refusal leaves the interrupt lines alone, and the serial port reports
 * its line level once per accepted load. */
static int registry_load(const void *p, size_t len)
{
	const char *kind = cur_dev->type->kind;
	unsigned calls = rig.irq_calls;
	int rc = cur_dev->type->load(cur_dev, cur_version, p, len);
	REQUIRE(rig_ram_untouched(&rig), "%s: a load (returned %d) wrote guest memory", kind, rc);
	if (rc)
		REQUIRE(rig.irq_calls == calls, "%s: a refused load moved an interrupt line", kind);
	else if (!strcmp(kind, "serial8250"))
		REQUIRE(rig.irq_calls == calls + 1, "serial8250: %u irq calls after an accepted load",
			rig.irq_calls - calls);
	return rc;
}

static int registry_save(struct mig_buf *b)
{
	if (cur_dev->type->quiesce && cur_dev->type->quiesce(cur_dev))
		return -1;
	return cur_dev->type->save(cur_dev, cur_version, b);
}

static int function_load(const void *p, size_t len)
{
	int rc = virtio_pci_load(fn.vp, p, len);
	REQUIRE(ram_untouched(), "virtio_pci_load (returned %d) wrote guest memory", rc);
	return rc;
}

static int function_save(struct mig_buf *b)
{
	return virtio_pci_save(fn.vp, b);
}

static const struct device_loader function_loader = { "pci function", function_load, function_save, &fn_dirty,
						      false };

/* The first offset where a and b differ (a length counts); SIZE_MAX if equal. */
static size_t first_difference(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return i;
	return alen == blen ? SIZE_MAX : n;
}

static void save_state(const struct device_loader *l, struct mig_buf *b, const char *when)
{
	mig_buf_init(b);
	REQUIRE(l->save(b) == 0, "%s: cannot save the device %s a load: %s", l->name, when, vmm_error());
}

/* What the device saves now is `want` (n bytes); `what` says why. */
static void require_saved(const struct device_loader *l, const struct mig_buf *saved, const uint8_t *want, size_t n,
			  const char *what)
{
	size_t at = first_difference(saved->data, saved->len, want, n);
	REQUIRE(at == SIZE_MAX, "%s: %s: differs at byte %zu (saved 0x%02x of %zu bytes, expected 0x%02x of %zu)",
		l->name, what, at, at < saved->len ? saved->data[at] : 0, saved->len, at < n ? want[at] : 0, n);
}

/* After an accepted load: what the device saves is what it loaded; or,
 * for a loader that may normalise what it accepts (virtio-pci drops the
 * pending bit of an unmasked vector), what it saves loads back and saves
 * the same again. */
static void check_accepted(const struct mig_section *s, const struct device_loader *l, const struct mig_buf *after)
{
	if (l->exact) {
		require_saved(l, after, s->payload, s->len, "the state saved after a load is not the one loaded");
		return;
	}
	clear_error();
	REQUIRE(l->load(after->data, after->len) == 0, "%s: refuses the state it saved after a load: %s", l->name,
		vmm_error());
	struct mig_buf again;
	save_state(l, &again, "after reloading");
	require_saved(l, &again, after->data, after->len, "reloading the state it saved changed it");
	mig_buf_free(&again);
}

static void load_device(const struct mig_section *s, const struct device_loader *l, unsigned stat)
{
	struct mig_buf before, after;
	save_state(l, &before, "before");
	clear_error();
	int rc = l->load(s->payload, s->len);
	save_state(l, &after, "after");
	if (rc) {
		count_refusal(l->name);
		REQUIRE(rc == -1, "%s: load returned %d", l->name, rc);
		REQUIRE(vmm_error()[0], "%s: a refusal without a message", l->name);
		require_saved(l, &after, before.data, before.len, "a refused load changed the device");
	} else {
		stat_accepted[stat]++;
		*l->dirty = true;
		check_accepted(s, l, &after);
	}
	mig_buf_free(&before);
	mig_buf_free(&after);
}

/* A vCPU or machine payload. Loading it into fd -1 always fails: before
 * any syscall if a check refuses it, else at /dev/kvm or an ioctl, whose
 * message names KVM (no check's message does: "open /dev/kvm", "KVM_SET_REGS"). */
static void load_kvm_state(const struct mig_section *s)
{
	clear_error();
	int rc = s->type == MIG_VCPU ? vcpu_state_load(-1, s->id, -1, s->payload, s->len)
				     : machine_state_load(&no_kvm, s->payload, s->len);
	REQUIRE(rc == -1, "%s: load into fd -1 returned %d", mig_type_name(s->type), rc);
	REQUIRE(vmm_error()[0], "%s: a refusal without a message", mig_type_name(s->type));
	if (strstr(vmm_error(), "KVM") || strstr(vmm_error(), "/dev/kvm"))
		stat_accepted[s->type]++;
	else
		count_refusal(mig_type_name(s->type));
}

static void load_description(const struct mig_section *s)
{
	struct machine_desc d, again;
	clear_error();
	if (machine_from_fdt(s->payload, s->len, &device_registry, &d)) {
		count_refusal("description");
		REQUIRE(vmm_error()[0], "a refusal without a message");
		return;
	}
	stat_accepted[MIG_DESCRIPTION]++;
	REQUIRE(machine_desc_check(&d, &device_registry) == 0, "parsed description out of bounds: %s", vmm_error());
	REQUIRE(d.ndevices <= MACHINE_MAX_DEVICES, "ndevices %u", d.ndevices);

	void *blob;
	size_t len;
	REQUIRE(machine_to_fdt(&d, &device_registry, &blob, &len) == 0, "cannot rebuild a parsed description: %s",
		vmm_error());
	REQUIRE(machine_from_fdt(blob, len, &device_registry, &again) == 0,
		"cannot reparse a rebuilt description: %s", vmm_error());
	REQUIRE(machine_desc_equal(&d, &again), "round trip changed the description");
	free(blob);
	machine_desc_free(&d);
	machine_desc_free(&again);
}

/* A MIG_DEVICE section: a state version, then the device's state, to the
 * loader of the device it names: the function's (version 1, as the
 * description gives it), or a registry device's ops (any version its type
 * loads). */
static void load_device_section(const struct mig_section *s)
{
	if (s->id >= MAX_DEV_IDS || (s->id != DEV_FUNCTION && (!by_id[s->id] || !by_id[s->id]->type->load)))
		return; /* no device, or one without state: the target refuses it by id */
	stat_reached[DEV_STAT(s->id)]++;
	uint16_t version = s->len < 2 ? 0 : (uint16_t)(s->payload[0] | s->payload[1] << 8);
	struct mig_section state = *s;
	state.payload += 2;
	state.len -= 2;
	if (s->id == DEV_FUNCTION) {
		if (version != 1) {
			stat_refused++; /* the target refuses a version the description did not give */
			return;
		}
		load_device(&state, &function_loader, DEV_STAT(s->id));
		return;
	}
	cur_dev = by_id[s->id];
	const struct device_type *t = cur_dev->type;
	if (s->len < 2 || version < t->state_min_load || version > t->state_version) {
		stat_refused++; /* the description could not have given that version */
		return;
	}
	cur_version = version;
	/* the serial port and the RTC save back exactly what they loaded */
	const struct device_loader l = { t->kind, registry_load, registry_save, &rig_dirty,
					 !strcmp(t->kind, "serial8250") || !strcmp(t->kind, "rtc") };
	load_device(&state, &l, DEV_STAT(s->id));
}

/* A MIG_PREVIEW section (no version: the description's, the type's
 * newest here) to the preview_load of the device it names. A refused
 * preview changes nothing; after an accepted one the device still saves
 * a state that loads back and saves the same again, and guest memory is
 * untouched. */
static int function_preview(const void *p, size_t len)
{
	return virtio_pci_preview_load(fn.vp, p, len);
}

static int registry_preview(const void *p, size_t len)
{
	return cur_dev->type->preview_load(cur_dev, cur_version, p, len);
}

static void load_preview_section(const struct mig_section *s)
{
	struct device_loader l = function_loader;
	int (*preview)(const void *, size_t) = function_preview;
	if (s->id != DEV_FUNCTION) {
		if (s->id >= MAX_DEV_IDS || !by_id[s->id] || !by_id[s->id]->type->preview_load)
			return; /* the description cannot announce a preview for it */
		cur_dev = by_id[s->id];
		cur_version = cur_dev->type->state_version;
		l = (struct device_loader){ cur_dev->type->kind, registry_load, registry_save, &rig_dirty, false };
		preview = registry_preview;
	}
	stat_reached[MIG_PREVIEW]++;
	struct mig_buf before, after;
	save_state(&l, &before, "before");
	clear_error();
	int rc = preview(s->payload, s->len);
	REQUIRE(s->id == DEV_FUNCTION ? ram_untouched() : rig_ram_untouched(&rig),
		"%s: a preview (returned %d) wrote guest memory", l.name, rc);
	save_state(&l, &after, "after");
	if (rc) {
		count_refusal(l.name);
		REQUIRE(rc == -1, "%s: preview_load returned %d", l.name, rc);
		REQUIRE(vmm_error()[0], "%s: a refusal without a message", l.name);
		require_saved(&l, &after, before.data, before.len, "a refused preview changed the device");
	} else {
		stat_accepted[MIG_PREVIEW]++;
		*l.dirty = true;
		check_accepted(s, &l, &after);
	}
	mig_buf_free(&before);
	mig_buf_free(&after);
}

/* A HELLO: what the source decodes before anything else. One that decodes
 * encodes back to exactly its bytes. */
static void load_hello(const struct mig_section *s)
{
	struct mig_hello h;
	clear_error();
	if (mig_hello_decode(s->payload, s->len, &h)) {
		count_refusal("hello");
		REQUIRE(vmm_error()[0], "a refusal without a message");
		return;
	}
	stat_accepted[MIG_HELLO]++;
	REQUIRE(h.pid >= 1 && h.pid <= INT32_MAX && h.nkinds <= MIG_HELLO_MAX_KINDS, "hello out of bounds");
	struct mig_buf b;
	mig_buf_init(&b);
	mig_hello_encode(&b, &h);
	REQUIRE(b.len == s->len && (!b.len || memcmp(b.data, s->payload, b.len) == 0),
		"hello: a decoded HELLO encodes to other bytes");
	mig_buf_free(&b);
}

/* One section that mig_parse() accepted. */
static void load_section(const struct mig_section *s)
{
	switch (s->type) {
	case MIG_HELLO:
		stat_reached[s->type]++;
		load_hello(s);
		break;
	case MIG_DESCRIPTION:
		stat_reached[s->type]++;
		load_description(s);
		break;
	case MIG_VCPU:
	case MIG_MACHINE:
		stat_reached[s->type]++;
		load_kvm_state(s);
		break;
	case MIG_DEVICE:
		load_device_section(s);
		break;
	case MIG_PREVIEW:
		load_preview_section(s);
		break;
	default: /* the others hold no state or carry fds */
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	current = data;
	current_len = size;
	world_up();
	size_t off = 0;
	while (off < size) {
		struct mig_section s;
		size_t used;
		clear_error();
		if (mig_parse(data + off, size - off, &used, &s)) {
			REQUIRE(vmm_error()[0], "a refusal without a message");
			REQUIRE(s.payload == NULL && s.nfds == 0, "a failed parse left a payload or fds");
			break;
		}
		stat_sections++;
		REQUIRE(used >= MIG_HEADER_SIZE && used <= size - off, "used %zu of %zu", used, size - off);
		REQUIRE(s.len == used - MIG_HEADER_SIZE, "len %u, used %zu", s.len, used);
		REQUIRE(s.len == 0 || s.payload, "no payload for %u bytes", s.len);
		REQUIRE(s.nfds == 0, "%u fds from memory", s.nfds);
		REQUIRE(mig_type_known(s.type), "type %u", s.type);
		load_section(&s);
		mig_section_free(&s);
		off += used;
	}
	world_reset();
	return 0;
}

#ifndef LIBFUZZER
/* --- the standalone driver -------------------------------------------------- */

#define FUZZ_MAX_INPUT (256u << 10)
#define MAX_SEEDS 16

struct bytes {
	uint8_t *p;
	size_t len;
};

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static size_t below(size_t n)
{
	return n ? (size_t)(rng() % n) : 0;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fprintf(stderr, "fuzz_migstream: out of memory\n");
		exit(1);
	}
	return p;
}

static void append_section(struct bytes *b, uint32_t type, uint32_t id, const void *payload, uint32_t len)
{
	b->p = xrealloc(b->p, b->len + MIG_HEADER_SIZE + len);
	mig_header_encode(b->p + b->len, type, id, payload, len, 0);
	if (len)
		memcpy(b->p + b->len + MIG_HEADER_SIZE, payload, len);
	b->len += MIG_HEADER_SIZE + len;
}

/* Appends what b holds as one section, and frees b. */
static void append_buf(struct bytes *out, uint32_t type, uint32_t id, struct mig_buf *b)
{
	if (mig_buf_ok(b, mig_type_name(type)))
		setup_failed("seed payload");
	append_section(out, type, id, b->data, (uint32_t)b->len);
	mig_buf_free(b);
}

/* --- seed payloads: the machine description --- */

static void sample_desc(struct machine_desc *d, unsigned nnets)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "fuzz-%u", nnets);
	d->mem_size = (64ull + nnets) << 20;
	d->ncpus = 1 + nnets;
	snprintf(d->board, sizeof(d->board), "%s", device_registry.board);
	d->ncpuid = 2 + nnets % 3;
	for (unsigned i = 0; i < d->ncpuid; i++)
		d->cpuid[i] = (struct machine_cpuid){ .function = i, .index = 0, .eax = 0x10 + i, .ebx = 0x756e6547 };
	for (unsigned i = 0; device_registry.board_types[i]; i++) {
		struct machine_device *m = &d->devices[d->ndevices++];
		m->type = device_registry.board_types[i];
		snprintf(m->name, sizeof(m->name), "%s", m->type->kind);
		m->state_version = m->type->state_version;
	}
	for (unsigned i = 0; i < nnets; i++) {
		struct machine_device *m = &d->devices[d->ndevices++];
		struct virtio_net_pci_config *n = calloc(1, sizeof(*n));
		if (!n)
			setup_failed("sample description");
		m->type = &virtio_net_pci_type;
		m->config = n;
		m->state_version = 1;
		snprintf(m->name, sizeof(m->name), "net%u", i);
		snprintf(n->ifname, sizeof(n->ifname), "tap%u", i);
		uint8_t mac[6] = { 0x52, 0x54, 0, 0, 0, (uint8_t)i };
		memcpy(n->mac, mac, 6);
		n->queues = 1 + i % 8;
		n->queue_size = (uint16_t)(64u << (i % 5));
		n->vhost = i & 1;
		m->transfer = (i & 2) != 0;
	}
}

static void append_description(struct bytes *b, unsigned nnets)
{
	struct machine_desc d;
	void *blob;
	size_t len;
	sample_desc(&d, nnets);
	if (machine_to_fdt(&d, &device_registry, &blob, &len))
		setup_failed("machine_to_fdt");
	machine_desc_free(&d);
	append_section(b, MIG_DESCRIPTION, 0, blob, (uint32_t)len);
	free(blob);
}

/* A device's state as its MIG_DEVICE section: version 1, then the state. */
static void append_device(struct bytes *out, uint32_t id, struct mig_buf *state)
{
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u16(&b, 1);
	mig_put_bytes(&b, state->data, state->len);
	mig_buf_free(state);
	append_buf(out, MIG_DEVICE, id, &b);
}

static void append_u64_section(struct bytes *b, uint32_t type, uint64_t v)
{
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(v >> (8 * i));
	append_section(b, type, 0, le, sizeof(le));
}

/* --- seed payloads: vCPU and machine, as kvm_state.h lays them out --- */

#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_TSC          0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0      /* restored after the LAPIC */
#define MSR_KVM_ASYNC_PF_EN   0x4b564d02 /* restored last of the others */

static void put_piece(struct mig_buf *b, uint32_t tag, const void *p, size_t n)
{
	mig_put_u32(b, tag);
	mig_put_u32(b, (uint32_t)n);
	mig_put_bytes(b, p, n);
}

static void put_msrs(struct mig_buf *b)
{
	static const struct {
		uint32_t index;
		uint64_t value;
	} msrs[] = {
		{ MSR_IA32_SYSENTER_CS, 0x10 },
		{ MSR_IA32_TSC_DEADLINE, 0x123456789 },
		{ MSR_KVM_ASYNC_PF_EN, 0 },
		{ MSR_IA32_TSC, 1000000 },
	};
	uint32_t n = sizeof(msrs) / sizeof(msrs[0]);
	mig_put_u32(b, KVM_STATE_MSRS);
	mig_put_u32(b, 4 + 12 * n);
	mig_put_u32(b, n);
	for (uint32_t i = 0; i < n; i++) {
		mig_put_u32(b, msrs[i].index);
		mig_put_u64(b, msrs[i].value);
	}
}

/* vCPU `id` of a VM paused in real mode at the reset vector, every piece
 * present once, in save order. */
static void append_vcpu(struct bytes *out, unsigned id)
{
	struct kvm_regs regs = { .rax = 10 + id, .rsp = 0x7000, .rip = 0xfff0, .rflags = 2 };
	static uint8_t xsave[4096];
	xsave[0] = 0x7f, xsave[1] = 0x03;  /* FCW */
	xsave[24] = 0x80, xsave[25] = 0x1f; /* MXCSR */
	xsave[512] = 3;                    /* XSTATE_BV: x87, SSE */
	struct kvm_xcrs xcrs = { .nr_xcrs = 1, .xcrs = { { .xcr = 0, .value = 3 } } };
	struct kvm_sregs sregs = { .cr0 = 0x60000010, .apic_base = 0xfee00900 };
	sregs.cs = (struct kvm_segment){ .base = 0xffff0000, .limit = 0xffff, .selector = 0xf000, .type = 11,
					 .present = 1, .s = 1 };
	struct kvm_mp_state mp = { .mp_state = id ? KVM_MP_STATE_INIT_RECEIVED : KVM_MP_STATE_RUNNABLE };
	struct kvm_lapic_state lapic;
	memset(&lapic, 0, sizeof(lapic));
	lapic.regs[0x20 + 3] = (char)id; /* APIC ID */
	lapic.regs[0xf0] = (char)0xff;    /* spurious vector, APIC enabled */
	lapic.regs[0xf1] = 1;
	struct kvm_vcpu_events ev = { .flags = KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM };
	ev.nmi.masked = 1;
	struct kvm_debugregs dr = { .dr6 = 0xffff0ff0, .dr7 = 0x400 };

	struct mig_buf b;
	mig_buf_init(&b);
	put_piece(&b, KVM_STATE_REGS, &regs, sizeof(regs));
	put_piece(&b, KVM_STATE_XSAVE, xsave, sizeof(xsave));
	put_piece(&b, KVM_STATE_XCRS, &xcrs, sizeof(xcrs));
	put_piece(&b, KVM_STATE_SREGS, &sregs, sizeof(sregs));
	put_msrs(&b);
	put_piece(&b, KVM_STATE_MP_STATE, &mp, sizeof(mp));
	put_piece(&b, KVM_STATE_LAPIC, &lapic, sizeof(lapic));
	put_piece(&b, KVM_STATE_EVENTS, &ev, sizeof(ev));
	put_piece(&b, KVM_STATE_DEBUGREGS, &dr, sizeof(dr));
	append_buf(out, MIG_VCPU, id, &b);
}

static void append_machine(struct bytes *out)
{
	struct kvm_irqchip chips[3];
	memset(chips, 0, sizeof(chips));
	for (uint32_t i = 0; i < 3; i++)
		chips[i].chip_id = i;
	chips[0].chip.pic.imr = 0xfb;
	chips[0].chip.pic.irq_base = 0x30;
	chips[1].chip.pic.irq_base = 0x38;
	chips[2].chip.ioapic.base_address = 0xfec00000;
	chips[2].chip.ioapic.redirtbl[5].bits = 0x10035 | (3ull << 56);
	struct kvm_pit_state2 pit;
	memset(&pit, 0, sizeof(pit));
	pit.channels[0].count = 0x1234;
	pit.channels[0].mode = 2;
	struct kvm_clock_data clock = { .clock = 5000000000ull };

	struct mig_buf b;
	mig_buf_init(&b);
	put_piece(&b, KVM_STATE_PIC_MASTER, &chips[0], sizeof(chips[0]));
	put_piece(&b, KVM_STATE_PIC_SLAVE, &chips[1], sizeof(chips[1]));
	put_piece(&b, KVM_STATE_IOAPIC, &chips[2], sizeof(chips[2]));
	put_piece(&b, KVM_STATE_PIT, &pit, sizeof(pit));
	put_piece(&b, KVM_STATE_CLOCK, &clock, sizeof(clock));
	append_buf(out, MIG_MACHINE, 0, &b);
}

/* --- seed payloads: serial and RTC, saved from devices a driver used --- */

static void port_out(const struct bus *pio, uint64_t port, uint8_t v)
{
	bus_write(pio, port, &v, 1);
}

/* A UART at 115200 8N1 with FIFOs, interrupts on, loopback off, bytes
 * queued for the guest (some read), a transmit pending; or fresh. */
static void append_serial(struct bytes *out, bool busy)
{
	struct serial8250 *s = serial8250_new(NULL);
	struct bus pio;
	bus_init(&pio, "pio");
	if (!s || bus_register(&pio, SERIAL_COM1_BASE, SERIAL_PORTS, &serial8250_bus_ops, s, "serial"))
		setup_failed("serial seed");
	if (busy) {
		static const char input[] = "bytes queued for the guest while it migrates";
		uint64_t base = SERIAL_COM1_BASE;
		port_out(&pio, base + 3, 0x80); /* LCR: DLAB */
		port_out(&pio, base + 0, 1);    /* DLL */
		port_out(&pio, base + 1, 0);    /* DLM */
		port_out(&pio, base + 3, 0x03); /* 8N1 */
		port_out(&pio, base + 2, 0xc7); /* FIFOs on, cleared, trigger 14 */
		port_out(&pio, base + 1, 0x07); /* IER: rx, thre, line status */
		port_out(&pio, base + 4, 0x0b); /* MCR: DTR, RTS, OUT2 */
		port_out(&pio, base + 7, 0x5a); /* SCR */
		serial8250_input(s, (const uint8_t *)input, sizeof(input) - 1);
		uint8_t v;
		bus_read(&pio, base + 0, &v, 1); /* the guest reads one */
		port_out(&pio, base + 0, 'x');   /* and sends one */
	}
	struct mig_buf b;
	mig_buf_init(&b);
	if (serial8250_save(s, &b))
		setup_failed("serial8250_save");
	append_device(out, DEV_SERIAL, &b);
	bus_destroy(&pio);
	serial8250_free(s);
}

static void append_rtc(struct bytes *out)
{
	struct rtc *r = rtc_new();
	if (!r)
		setup_failed("rtc_new");
	for (uint8_t i = 0x0e; i < 0x80; i += 3) { /* NVRAM written by the guest */
		uint8_t v = (uint8_t)(i * 7);
		rtc_bus_ops.write(r, 0, &i, 1);
		rtc_bus_ops.write(r, 1, &v, 1);
	}
	uint8_t index = 0x34;
	rtc_bus_ops.write(r, 0, &index, 1);
	struct mig_buf b;
	mig_buf_init(&b);
	if (rtc_save(r, &b))
		setup_failed("rtc_save");
	append_device(out, DEV_RTC, &b);
	rtc_free(r);
}

/* --- seed payloads: a virtio-pci function a driver set up --- */

static void cfg_write(struct function *f, unsigned reg, unsigned len, uint32_t v)
{
	uint32_t slot = (uint32_t)virtio_pci_device(f->vp)->slot;
	uint32_t a = 0x80000000u | (slot << 11) | (reg & 0xfc);
	bus_write(&f->pio, 0xcf8, &a, 4);
	bus_write(&f->pio, 0xcfc + (reg & 3), &v, len);
}

static void mmio_write(struct function *f, uint64_t addr, unsigned len, uint64_t v)
{
	bus_write(&f->mmio, addr, &v, len);
}

static uint64_t ring_gpa(unsigned q, unsigned which)
{
	return 0x10000 + q * 0x8000 + which * 0x2000;
}

static void setup_queue(struct function *f, uint64_t common, unsigned q, uint16_t size, uint16_t vector,
			bool enable)
{
	mmio_write(f, common + VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
	mmio_write(f, common + VIRTIO_PCI_COMMON_Q_SIZE, 2, size);
	mmio_write(f, common + VIRTIO_PCI_COMMON_Q_MSIX, 2, vector);
	mmio_write(f, common + VIRTIO_PCI_COMMON_Q_DESCLO, 8, ring_gpa(q, 0));
	mmio_write(f, common + VIRTIO_PCI_COMMON_Q_AVAILLO, 8, ring_gpa(q, 1));
	mmio_write(f, common + VIRTIO_PCI_COMMON_Q_USEDLO, 8, ring_gpa(q, 2));
	if (enable)
		mmio_write(f, common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
}

/* The driver makes chain i (one 256-byte buffer) available on queue q. */
static void driver_add(struct function *f, unsigned q, uint16_t i)
{
	uint16_t slot = (uint16_t)(i % f->dev.vd.vqs[q].size), idx = (uint16_t)(i + 1);
	uint64_t addr = 0x40000 + q * 0x10000 + slot * 0x100;
	uint32_t len = 0x100;
	uint8_t *desc = ram + ring_gpa(q, 0) + 16 * slot;
	memset(desc, 0, 16);
	memcpy(desc, &addr, 8);
	memcpy(desc + 8, &len, 4);
	uint8_t *avail = ram + ring_gpa(q, 1);
	memcpy(avail + 4 + 2 * slot, &slot, 2);
	memcpy(avail + 2, &idx, 2);
}

/* The device takes `pop` chains off queue q and gives back `push` of them. */
static void device_work(struct function *f, unsigned q, unsigned pop, unsigned push)
{
	struct iovec iov[4];
	struct vq_chain c = { .iov = iov, .cap = 4 };
	for (unsigned i = 0; i < pop; i++) {
		if (vq_pop(&f->dev.vd.vqs[q], &c) != 1)
			setup_failed("vq_pop in the seed driver");
		if (i < push)
			vq_push(&f->dev.vd.vqs[q], c.head, 0);
	}
}

/* As Linux's virtio_pci_modern leaves a device: BAR 0 moved, features
 * with EVENT_IDX, MSI-X on with vector 2 masked and pending, queues 0 and
 * 1 live with chains in flight (queue 1's indices wrapped), queue 2 set
 * up but not enabled, the select registers not 0. */
static void drive_function(struct function *f)
{
	struct pci_device *pd = virtio_pci_device(f->vp);
	struct virtio_device *vd = &f->dev.vd;
	uint64_t bar = pci_bar_address(pd, VIRTIO_PCI_BAR) + 0x100000;
	uint64_t common = bar + VIRTIO_PCI_COMMON_OFFSET, table = bar + VIRTIO_PCI_MSIX_TABLE_OFFSET;
	cfg_write(f, 0x10, 4, (uint32_t)bar);
	cfg_write(f, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	uint8_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
	mmio_write(f, common + VIRTIO_PCI_COMMON_STATUS, 1, st);
	mmio_write(f, common + VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	mmio_write(f, common + VIRTIO_PCI_COMMON_GF, 4, (uint32_t)HOST_FEATURES);
	mmio_write(f, common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	mmio_write(f, common + VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(HOST_FEATURES >> 32));
	st |= VIRTIO_STATUS_FEATURES_OK;
	mmio_write(f, common + VIRTIO_PCI_COMMON_STATUS, 1, st);
	unsigned msix = pci_find_capability(pd, PCI_CAP_ID_MSIX);
	cfg_write(f, msix + 2, 2, 0xc000); /* enable, all masked */
	for (unsigned v = 0; v < NVECTORS; v++) {
		mmio_write(f, table + 16 * v, 4, 0xfee00000 + v * 0x1000);
		mmio_write(f, table + 16 * v + 4, 4, 0);
		mmio_write(f, table + 16 * v + 8, 4, 0x4040 + v);
		mmio_write(f, table + 16 * v + 12, 4, 1);
	}
	cfg_write(f, msix + 2, 2, 0x8000);
	mmio_write(f, common + VIRTIO_PCI_COMMON_MSIX, 2, 0);
	setup_queue(f, common, 0, 128, 1, true);
	setup_queue(f, common, 1, 64, 2, true);
	setup_queue(f, common, 2, 32, 3, false);
	mmio_write(f, common + VIRTIO_PCI_COMMON_STATUS, 1, st | VIRTIO_STATUS_DRIVER_OK);
	pump();
	if (!vd->active)
		setup_failed("the seed device did not start");
	for (unsigned v = 0; v < NVECTORS; v++)
		if (v != 2)
			mmio_write(f, table + 16 * v + 12, 4, 0);
	for (uint16_t i = 0; i < 5; i++)
		driver_add(f, 0, i);
	device_work(f, 0, 3, 2);
	for (uint16_t i = 0; i < 70; i++) {
		driver_add(f, 1, i);
		device_work(f, 1, 1, 1);
	}
	driver_add(f, 1, 70);
	virtio_signal_queue(vd, 1); /* masked: pending */
	virtio_config_changed(vd);
	mmio_write(f, common + VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
	mmio_write(f, common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	mmio_write(f, common + VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
}

/* The state of registry device id (fresh) in every version its type writes. */
static void append_registry_device(struct bytes *out, unsigned id)
{
	cur_dev = by_id[id];
	if (!cur_dev)
		return;
	const struct device_type *t = cur_dev->type;
	for (uint16_t v = t->state_min_save; v <= t->state_version; v++) {
		cur_version = v;
		struct mig_buf state, b;
		mig_buf_init(&state);
		if (registry_save(&state))
			setup_failed("a registry device's save");
		mig_buf_init(&b);
		mig_put_u16(&b, v);
		mig_put_bytes(&b, state.data, state.len);
		mig_buf_free(&state);
		append_buf(out, MIG_DEVICE, id, &b);
	}
}

/* The state of a function like the target's: fresh, or driven. */
static void append_function(struct bytes *out, bool driven)
{
	struct function src;
	function_up(&src);
	if (driven)
		drive_function(&src);
	struct mig_buf b;
	mig_buf_init(&b);
	if (virtio_pci_save(src.vp, &b))
		setup_failed("virtio_pci_save");
	append_device(out, DEV_FUNCTION, &b);
	function_down(&src);
	memset(ram, 0, RAM_SIZE); /* the target's loads must leave it as it is */
}

/* The preview of a driven function, and of each registry device that
 * has one. */
static void append_previews(struct bytes *out)
{
	struct function src;
	function_up(&src);
	drive_function(&src);
	struct mig_buf b;
	mig_buf_init(&b);
	if (virtio_pci_preview_save(src.vp, &b))
		setup_failed("virtio_pci_preview_save");
	append_buf(out, MIG_PREVIEW, DEV_FUNCTION, &b);
	function_down(&src);
	memset(ram, 0, RAM_SIZE);
	for (unsigned id = DEV_FIRST_TYPE; id < MAX_DEV_IDS; id++) {
		struct device *d = by_id[id];
		if (!d || !d->type->preview_save)
			continue;
		mig_buf_init(&b);
		if (d->type->preview_save(d, d->type->state_version, &b))
			setup_failed("a registry device's preview_save");
		append_buf(out, MIG_PREVIEW, id, &b);
	}
}

/* Valid streams: what a source sends, as far as it is fd-free. */
static unsigned build_seeds(struct bytes *seeds)
{
	/* pid 12345, backend transfer, the state versions of two kinds */
	static const uint8_t hello[] = { 0x39, 0x30, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0,
					 3, 'r', 't', 'c', 1, 0, 1, 0,
					 10, 'v', 'i', 'r', 't', 'i', 'o', '-', 'n', 'e', 't', 1, 0, 2, 0 };
	static const char err[] = "source: out of patience";
	memset(seeds, 0, MAX_SEEDS * sizeof(*seeds));

	append_section(&seeds[0], MIG_HELLO, 0, hello, sizeof(hello));
	append_description(&seeds[0], 8);
	append_section(&seeds[0], MIG_END, 0, NULL, 0);

	append_description(&seeds[1], 0);
	append_u64_section(&seeds[1], MIG_FREEZE, 123456789);
	append_section(&seeds[1], MIG_END, 0, NULL, 0);
	append_section(&seeds[1], MIG_COMMIT, 0, NULL, 0);

	append_description(&seeds[2], 2);

	append_section(&seeds[3], MIG_HELLO, 0, hello, sizeof(hello));
	append_description(&seeds[3], 1);
	append_section(&seeds[3], MIG_ERROR, 0, err, sizeof(err) - 1);

	/* a whole state, in the order the source sends it */
	append_description(&seeds[4], 1);
	append_u64_section(&seeds[4], MIG_FREEZE, 987654321);
	append_vcpu(&seeds[4], 0);
	append_vcpu(&seeds[4], 1);
	append_machine(&seeds[4]);
	append_serial(&seeds[4], true);
	append_rtc(&seeds[4]);
	append_function(&seeds[4], true);
	for (unsigned id = DEV_FIRST_TYPE; id < MAX_DEV_IDS; id++)
		append_registry_device(&seeds[4], id);
	append_section(&seeds[4], MIG_END, 0, NULL, 0);

	/* one device each, so that most mutations land in its payload */
	append_serial(&seeds[5], true);
	append_serial(&seeds[5], false);
	append_rtc(&seeds[6]);
	append_function(&seeds[7], true);
	append_function(&seeds[8], false);
	append_function(&seeds[8], true);
	append_vcpu(&seeds[9], 0);
	append_machine(&seeds[10]);
	append_previews(&seeds[11]);
	unsigned n = 12;
	for (unsigned id = DEV_FIRST_TYPE; id < MAX_DEV_IDS && n < MAX_SEEDS; id++)
		if (by_id[id])
			append_registry_device(&seeds[n++], id);
	return n;
}

/* Header fields, little-endian, at these offsets (migstream.h). */
#define H_TYPE 6
#define H_ID 8
#define H_LEN 12
#define H_NFDS 16

static uint64_t load_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void store_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)load_le(p, 4);
}

static void store_le32(uint8_t *p, uint32_t v)
{
	store_le(p, v, 4);
}

/* Offsets of the section headers found by walking the length fields (at
 * most max); a header whose payload runs past the end still counts. */
static size_t find_headers(const struct bytes *b, size_t *offs, size_t max)
{
	size_t n = 0;
	for (size_t off = 0; off + MIG_HEADER_SIZE <= b->len && n < max;) {
		offs[n++] = off;
		off += MIG_HEADER_SIZE + (size_t)load_le32(b->p + off + H_LEN);
	}
	return n;
}

static uint32_t section_type(const struct bytes *b, size_t h)
{
	return (uint32_t)b->p[h + H_TYPE] | (uint32_t)b->p[h + H_TYPE + 1] << 8;
}

static uint32_t section_len(const struct bytes *b, size_t h)
{
	return load_le32(b->p + h + H_LEN);
}

/* The header offset of a random section whose payload is all there and
 * whose type is in the bit mask `types`; SIZE_MAX if none. */
static size_t pick_section(const struct bytes *b, uint32_t types)
{
	size_t offs[64];
	size_t n = find_headers(b, offs, 64), start = below(n);
	for (size_t i = 0; i < n; i++) {
		size_t h = offs[(start + i) % n];
		uint32_t type = section_type(b, h);
		if (type <= MIG_TYPE_MAX && (types >> type & 1) && section_len(b, h) <= b->len - h - MIG_HEADER_SIZE)
			return h;
	}
	return SIZE_MAX;
}

/* The same, for the MIG_DEVICE section of device id. */
static size_t pick_device(const struct bytes *b, uint32_t id)
{
	size_t offs[64];
	size_t n = find_headers(b, offs, 64), start = below(n);
	for (size_t i = 0; i < n; i++) {
		size_t h = offs[(start + i) % n];
		if (section_type(b, h) == MIG_DEVICE && load_le32(b->p + h + H_ID) == id &&
		    section_len(b, h) <= b->len - h - MIG_HEADER_SIZE)
			return h;
	}
	return SIZE_MAX;
}

#define TYPE_BIT(t)  (1u << (t))
#define KVM_TYPES    (TYPE_BIT(MIG_VCPU) | TYPE_BIT(MIG_MACHINE))
#define STATE_TYPES  (KVM_TYPES | TYPE_BIT(MIG_DEVICE) | TYPE_BIT(MIG_PREVIEW))

/* Rewrites every complete section's header with a correct CRC (and the
 * right magic and version). */
static void fix_crcs(struct bytes *b)
{
	size_t off = 0;
	while (off + MIG_HEADER_SIZE <= b->len) {
		uint8_t *h = b->p + off;
		uint32_t len = load_le32(h + H_LEN);
		if (len > b->len - off - MIG_HEADER_SIZE)
			break;
		mig_header_encode(h, section_type(b, off), load_le32(h + 8), h + MIG_HEADER_SIZE, len,
				  load_le32(h + H_NFDS));
		off += MIG_HEADER_SIZE + len;
	}
}

static void insert_bytes(struct bytes *b, size_t at, const uint8_t *src, size_t n)
{
	if (b->len + n > FUZZ_MAX_INPUT)
		return;
	b->p = xrealloc(b->p, b->len + n);
	memmove(b->p + at + n, b->p + at, b->len - at);
	memcpy(b->p + at, src, n);
	b->len += n;
}

/* Replaces `del` bytes at offset `at` of the payload of the section at h
 * with n bytes (a copy of src, or random if src is NULL; src may point
 * into b), and fixes the section's length field. */
static void splice_payload(struct bytes *b, size_t h, size_t at, size_t del, const uint8_t *src, size_t n)
{
	uint32_t len = section_len(b, h);
	if (at + del > len || (size_t)len - del + n > MIG_MAX_SECTION || b->len - del + n > FUZZ_MAX_INPUT)
		return;
	uint8_t *copy = xrealloc(NULL, n);
	for (size_t i = 0; i < n; i++)
		copy[i] = src ? src[i] : (uint8_t)rng();
	size_t start = h + MIG_HEADER_SIZE + at;
	if (n > del)
		b->p = xrealloc(b->p, b->len - del + n);
	memmove(b->p + start + n, b->p + start + del, b->len - start - del);
	memcpy(b->p + start, copy, n);
	b->len = b->len - del + n;
	store_le32(b->p + h + H_LEN, (uint32_t)(len - del + n));
	free(copy);
}

static const uint32_t interesting[] = {
	0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 24, 63, 64, 65, 255, 256, 1023, 1024, 1025, 4096,
	0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffff0, 0xfffffffc, 0xffffffff,
	0xd00dfeed, /* FDT magic */ 0x00000001, 0x00000002, 0x00000003, 0x00000009, /* FDT tokens */
	MIG_MAX_SECTION, MIG_MAX_SECTION + 1, MIG_MAX_FDS, MIG_MAX_FDS + 1,
	KVM_STATE_MAX_MSRS, KVM_STATE_MAX_MSRS + 1, KVM_STATE_MAX_XSAVE, KVM_STATE_MAX_XSAVE + 1,
	SERIAL_INPUT_MAX, SERIAL_INPUT_MAX + 1, 0xfee00000, 0x1af4, 0x1041, 0x1042, 0x7f, 0x80,
};
#define NINTERESTING (sizeof(interesting) / sizeof(interesting[0]))

static uint32_t pick_value(const struct bytes *b)
{
	switch (rng() % 4) {
	case 0:
		return (uint32_t)rng();
	case 1:
		return (uint32_t)b->len + (uint32_t)below(9) - 4;
	default:
		return interesting[below(NINTERESTING)];
	}
}

/* A big-endian word edit inside a description payload: reaches the FDT
 * header fields, tokens, offsets and property lengths. */
static void edit_fdt_word(struct bytes *b)
{
	size_t h = pick_section(b, TYPE_BIT(MIG_DESCRIPTION));
	if (h == SIZE_MAX || section_len(b, h) < 4)
		return;
	uint8_t *at = b->p + h + MIG_HEADER_SIZE + 4 * below(section_len(b, h) / 4);
	uint32_t v = pick_value(b);
	if (rng() & 1) /* small deltas of what is there */
		v = ((uint32_t)at[0] << 24 | (uint32_t)at[1] << 16 | (uint32_t)at[2] << 8 | at[3]) +
		    (uint32_t)below(17) - 8;
	for (int k = 0; k < 4; k++)
		at[k] = (uint8_t)(v >> (24 - 8 * k));
}

/* A little-endian field (1, 2, 4 or 8 bytes) somewhere in p[0..len): a
 * small delta of what is there, an interesting value or random bits. */
static void edit_field(uint8_t *p, size_t len)
{
	unsigned width = 1u << below(4);
	if (len < width)
		return;
	uint8_t *at = p + below(len - width + 1);
	uint64_t v;
	switch (rng() % 3) {
	case 0:
		v = load_le(at, width) + below(17) - 8;
		break;
	case 1:
		v = rng();
		break;
	default:
		v = interesting[below(NINTERESTING)];
		break;
	}
	store_le(at, v, width);
}

/* A field edit anywhere in a state payload. */
static void edit_payload_field(struct bytes *b)
{
	size_t h = pick_section(b, STATE_TYPES);
	if (h != SIZE_MAX)
		edit_field(b->p + h + MIG_HEADER_SIZE, section_len(b, h));
}

static const uint32_t piece_tags[] = {
	KVM_STATE_REGS, KVM_STATE_XSAVE, KVM_STATE_XCRS, KVM_STATE_SREGS, KVM_STATE_MSRS, KVM_STATE_MP_STATE,
	KVM_STATE_LAPIC, KVM_STATE_EVENTS, KVM_STATE_DEBUGREGS, KVM_STATE_PIC_MASTER, KVM_STATE_PIC_SLAVE,
	KVM_STATE_IOAPIC, KVM_STATE_PIT, KVM_STATE_CLOCK, 0, KVM_STATE_VCPU_TAGS + 1, 0x100, KVM_STATE_CLOCK + 1,
};
#define NPIECE_TAGS (sizeof(piece_tags) / sizeof(piece_tags[0]))

/* Payload offsets of the pieces (u32 tag, u32 len, data) of a vCPU or
 * machine payload, walking the lengths (at most max). */
static size_t find_pieces(const uint8_t *p, uint32_t len, size_t *offs, size_t max)
{
	size_t n = 0;
	for (size_t off = 0; off + 8 <= len && n < max;) {
		offs[n++] = off;
		uint32_t plen = load_le32(p + off + 4);
		if (plen > len - off - 8)
			break;
		off += 8 + (size_t)plen;
	}
	return n;
}

/* An MSR piece grows or shrinks by whole entries, its count and length
 * following (the payload stays well-formed if the count stays in bounds). */
static void resize_msrs(struct bytes *b, size_t h, size_t at, uint32_t plen)
{
	uint8_t *p = b->p + h + MIG_HEADER_SIZE + at;
	uint32_t count = load_le32(p + 8);
	if (plen < 4 || plen != 4 + 12ull * count)
		return;
	if ((rng() & 1) && count) {
		store_le32(p + 4, plen - 12);
		store_le32(p + 8, count - 1);
		splice_payload(b, h, at + 12 + 12 * below(count), 12, NULL, 0);
		return;
	}
	size_t n = 1 + below(rng() % 8 ? 4 : 1100);
	store_le32(p + 4, plen + 12 * (uint32_t)n);
	store_le32(p + 8, count + (uint32_t)n);
	splice_payload(b, h, at + 12 + 12 * below(count + 1), 0, NULL, 12 * n);
}

/* An edit that knows the piece structure of vCPU and machine payloads. */
static void edit_piece(struct bytes *b)
{
	size_t h = pick_section(b, KVM_TYPES);
	if (h == SIZE_MAX)
		return;
	uint32_t len = section_len(b, h);
	size_t offs[32];
	size_t n = find_pieces(b->p + h + MIG_HEADER_SIZE, len, offs, 32);
	if (!n)
		return;
	size_t at = offs[below(n)];
	uint8_t *p = b->p + h + MIG_HEADER_SIZE + at;
	uint32_t tag = load_le32(p), plen = load_le32(p + 4);
	size_t whole = plen <= len - at - 8 ? 8 + (size_t)plen : len - at;
	switch (rng() % 8) {
	case 0: /* another tag */
		store_le32(p, piece_tags[below(NPIECE_TAGS)]);
		break;
	case 1: /* a wrong length */
		store_le32(p + 4, (rng() & 1) ? plen + (uint32_t)below(17) - 8 : pick_value(b));
		break;
	case 2: /* the piece dropped */
		splice_payload(b, h, at, whole, NULL, 0);
		break;
	case 3: /* the piece repeated, here or elsewhere */
		splice_payload(b, h, offs[below(n)], 0, p, whole);
		break;
	case 4: /* a consistent length, a wrong size: n bytes in or out */
		if (tag == KVM_STATE_MSRS) {
			resize_msrs(b, h, at, plen);
		} else if ((rng() & 1) && plen) {
			size_t cut = 1 + below(plen < 16 ? plen : 16);
			store_le32(p + 4, plen - (uint32_t)cut);
			splice_payload(b, h, at + 8 + below(plen - cut + 1), cut, NULL, 0);
		} else {
			size_t add = (rng() & 1) ? 1 + below(16) : 4096 * (1 + below(4));
			store_le32(p + 4, plen + (uint32_t)add);
			splice_payload(b, h, at + 8 + below(plen + 1), 0, NULL, add);
		}
		break;
	case 5:
	case 6: /* a field inside the piece (each piece as likely, the 4 KiB xsave too) */
		edit_field(p + 8, whole - 8);
		break;
	default: /* the MSR count */
		if (tag == KVM_STATE_MSRS && plen >= 4)
			store_le32(p + 8, (rng() & 1) ? load_le32(p + 8) + (uint32_t)below(5) - 2 : pick_value(b));
		break;
	}
}

/* A state payload grows (random bytes) or shrinks somewhere, its section
 * length following. */
static void resize_payload(struct bytes *b)
{
	size_t h = pick_section(b, STATE_TYPES | TYPE_BIT(MIG_DESCRIPTION) | TYPE_BIT(MIG_HELLO));
	if (h == SIZE_MAX)
		return;
	uint32_t len = section_len(b, h);
	if ((rng() & 1) && len) {
		size_t cut = 1 + below(len < 64 ? len : 64);
		splice_payload(b, h, below(len - cut + 1), cut, NULL, 0);
	} else {
		splice_payload(b, h, below(len + 1), 0, NULL, 1 + below(64));
	}
}

/* The UART's queue: bytes added or removed with the count following, or
 * a FIFO fill level set. Offsets after the 2-byte version: 10 fifo, 14
 * count (serial8250.h). */
static void edit_serial_queue(struct bytes *b)
{
	size_t h = pick_device(b, DEV_SERIAL);
	if (h == SIZE_MAX || section_len(b, h) < 20)
		return;
	uint8_t *p = b->p + h + MIG_HEADER_SIZE + 2;
	uint32_t len = section_len(b, h), count = load_le32(p + 14);
	if (rng() % 3 == 0) {
		store_le32(p + 10, (uint32_t)below(18));
		return;
	}
	if ((rng() & 1) && count && len > 20) {
		size_t cut = 1 + below(count < 32 ? count : 32);
		if (cut > len - 20)
			cut = len - 20;
		store_le32(p + 14, count - (uint32_t)cut);
		splice_payload(b, h, len - cut, cut, NULL, 0);
	} else {
		size_t add = 1 + below(40);
		store_le32(p + 14, count + (uint32_t)add);
		splice_payload(b, h, len, 0, NULL, add);
	}
}

/* A header field edit: len (most often), type or nfds. */
static void edit_header(struct bytes *b)
{
	size_t offs[64];
	size_t n = find_headers(b, offs, 64);
	if (!n)
		return;
	uint8_t *h = b->p + offs[below(n)];
	switch (rng() % 5) {
	case 0:
		h[H_TYPE] = (uint8_t)below(MIG_TYPE_MAX + 2);
		h[H_TYPE + 1] = (rng() % 8) ? 0 : (uint8_t)rng();
		break;
	case 1:
		store_le32(h + H_NFDS, (rng() & 1) ? 0 : pick_value(b));
		break;
	case 2: /* the id: vCPU index, device index */
		store_le32(h + 8, (rng() & 1) ? (uint32_t)below(4) : pick_value(b));
		break;
	default: {
		uint32_t len = load_le32(h + H_LEN);
		store_le32(h + H_LEN, (rng() & 1) ? len + (uint32_t)below(17) - 8 : pick_value(b));
	}
	}
}

static void mutate_once(struct bytes *b)
{
	uint8_t junk[16];
	size_t n;
	switch (rng() % 15) {
	case 0: /* flip a bit */
		if (b->len)
			b->p[below(b->len)] ^= (uint8_t)(1u << below(8));
		break;
	case 1: /* set a byte */
		if (b->len)
			b->p[below(b->len)] = (uint8_t)rng();
		break;
	case 2: /* truncate */
		b->len = below(b->len + 1);
		break;
	case 3: /* insert random bytes */
		n = 1 + below(sizeof(junk));
		for (size_t i = 0; i < n; i++)
			junk[i] = (uint8_t)rng();
		insert_bytes(b, below(b->len + 1), junk, n);
		break;
	case 4: /* delete a range */
		if (b->len) {
			size_t at = below(b->len);
			size_t cut = 1 + below(b->len - at < 64 ? b->len - at : 64);
			memmove(b->p + at, b->p + at + cut, b->len - at - cut);
			b->len -= cut;
		}
		break;
	case 5: /* duplicate a range (e.g. a whole section) elsewhere */
		if (b->len) {
			size_t at = below(b->len);
			size_t cnt = 1 + below(b->len - at);
			uint8_t *copy = xrealloc(NULL, cnt);
			memcpy(copy, b->p + at, cnt);
			insert_bytes(b, below(b->len + 1), copy, cnt);
			free(copy);
		}
		break;
	case 6:
		edit_header(b);
		break;
	case 7:
	case 8:
		edit_fdt_word(b);
		break;
	case 9:
	case 10:
		edit_payload_field(b);
		break;
	case 11:
	case 12:
		edit_piece(b);
		break;
	case 13:
		resize_payload(b);
		break;
	default:
		edit_serial_queue(b);
		break;
	}
}

/* Saves the input being run (async-signal-safe: also called from a
 * crash's signal handler). */
static void dump_current(void)
{
	static const char msg[] = "fuzz_migstream: input written to fuzz_migstream-crash.bin\n";
	if (!current)
		return;
	int fd = open("fuzz_migstream-crash.bin", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	for (size_t done = 0; done < current_len;) {
		ssize_t n = write(fd, current + done, current_len - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	close(fd);
	if (write(2, msg, sizeof(msg) - 1) < 0)
		return;
}

/* ASan calls this before its report (deadly signals included). */
void __asan_on_error(void);
void __asan_on_error(void)
{
	dump_current();
}

static void on_crash(int sig)
{
	dump_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void on_hang(int sig)
{
	static const char msg[] = "fuzz_migstream: one input ran for more than 10 s (a hang)\n";
	(void)sig;
	dump_current();
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* Without a sanitizer owning them, crash signals save the input first;
 * an input running 10 s (alarm() before each) counts as a hang. */
static void catch_crashes(void)
{
	signal(SIGALRM, on_hang);
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		struct sigaction old;
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
		    !(old.sa_flags & SA_SIGINFO))
			signal(sigs[i], on_crash);
	}
}

static int parse_u64_arg(const char *arg, const char *prefix, unsigned long long *out)
{
	size_t n = strlen(prefix);
	if (strncmp(arg, prefix, n))
		return 0;
	char *end;
	errno = 0;
	*out = strtoull(arg + n, &end, 0);
	if (errno || end == arg + n || *end) {
		fprintf(stderr, "fuzz_migstream: bad %s\n", arg);
		exit(2);
	}
	return 1;
}

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fuzz_migstream: %s: %s\n", path, strerror(errno));
		return 1;
	}
	struct bytes b = { xrealloc(NULL, FUZZ_MAX_INPUT), 0 };
	b.len = fread(b.p, 1, FUZZ_MAX_INPUT, f);
	fclose(f);
	alarm(10);
	LLVMFuzzerTestOneInput(b.p, b.len);
	printf("fuzz_migstream: %s: %zu bytes replayed\n", path, b.len);
	free(b.p);
	return 0;
}

static int write_seeds(const char *dir, const struct bytes *seeds, unsigned nseeds)
{
	for (unsigned i = 0; i < nseeds; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/seed-%u.bin", dir, i);
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(seeds[i].p, 1, seeds[i].len, f) != seeds[i].len || fclose(f)) {
			fprintf(stderr, "fuzz_migstream: %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	printf("fuzz_migstream: %u seeds written to %s\n", nseeds, dir);
	return 0;
}

static void print_stats(unsigned long long runs, unsigned long long seed)
{
	static const struct { unsigned stat; const char *name; } loaded[] = {
		{ MIG_HELLO, "hello" }, { MIG_DESCRIPTION, "description" }, { MIG_VCPU, "vcpu" },
		{ MIG_MACHINE, "machine" }, { DEV_STAT(DEV_FUNCTION), "pci-function" }, { MIG_PREVIEW, "preview" },
	};
	printf("fuzz_migstream: %llu runs, seed %llu: %llu sections parsed; loads accepted/reached:", runs, seed,
	       stat_sections);
	for (size_t i = 0; i < sizeof(loaded) / sizeof(loaded[0]); i++)
		printf(" %s %llu/%llu", loaded[i].name, stat_accepted[loaded[i].stat], stat_reached[loaded[i].stat]);
	for (unsigned id = 0; id < MAX_DEV_IDS; id++)
		if (by_id[id] && by_id[id]->type->load)
			printf(" %s %llu/%llu", by_id[id]->type->kind, stat_accepted[DEV_STAT(id)],
			       stat_reached[DEV_STAT(id)]);
	printf(" (vcpu, machine: passed the checks, failed at KVM)\n");
	const struct device_type *const *t = device_registry.types;
	for (; *t; t++) {
		bool reached = false;
		for (unsigned id = DEV_FIRST_TYPE; id < MAX_DEV_IDS; id++)
			reached |= by_id[id] && by_id[id]->type == *t;
		if ((*t)->state_version && !reached)
			printf("fuzz_migstream: note: %s left out (no backend this process can open)\n", (*t)->kind);
	}
}

int main(int argc, char **argv)
{
	unsigned long long runs = 10000, seed = 1;
	const char *seed_dir = NULL;
	int nfiles = 0, rc = 0;
	catch_crashes();
	for (int i = 1; i < argc; i++) {
		if (parse_u64_arg(argv[i], "-runs=", &runs) || parse_u64_arg(argv[i], "-seed=", &seed))
			continue;
		if (!strncmp(argv[i], "-write-seeds=", 13)) {
			seed_dir = argv[i] + 13;
			continue;
		}
		if (argv[i][0] == '-') {
			fprintf(stderr, "usage: fuzz_migstream [-runs=N] [-seed=S] [-write-seeds=DIR] [FILE...]\n");
			return 2;
		}
		rc |= replay_file(argv[i]);
		nfiles++;
	}
	if (nfiles)
		return rc;

	world_up();
	struct bytes seeds[MAX_SEEDS];
	unsigned nseeds = build_seeds(seeds);
	if (seed_dir)
		return write_seeds(seed_dir, seeds, nseeds);

	/* Each valid seed must load entirely: the baseline the mutations break. */
	for (unsigned i = 0; i < nseeds; i++) {
		unsigned long long refused = stat_refused, sections = stat_sections;
		size_t offs[64];
		LLVMFuzzerTestOneInput(seeds[i].p, seeds[i].len);
		REQUIRE(stat_refused == refused, "seed %u: a section was refused: %s", i, last_refusal);
		REQUIRE(stat_sections - sections == find_headers(&seeds[i], offs, 64), "seed %u: not every section parsed: %s",
			i, vmm_error());
	}
	memset(stat_reached, 0, sizeof(stat_reached));
	memset(stat_accepted, 0, sizeof(stat_accepted));
	stat_sections = stat_refused = 0;

	rng_state = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
	struct bytes b = { NULL, 0 };
	for (unsigned long long run = 0; run < runs; run++) {
		const struct bytes *s = &seeds[below(nseeds)];
		b.p = xrealloc(b.p, s->len);
		memcpy(b.p, s->p, s->len);
		b.len = s->len;
		unsigned nmut = 1 + (unsigned)below(4);
		for (unsigned m = 0; m < nmut; m++)
			mutate_once(&b);
		if (rng() % 4)
			fix_crcs(&b);
		alarm(10);
		LLVMFuzzerTestOneInput(b.p, b.len);
	}
	print_stats(runs, seed);
	free(b.p);
	for (unsigned i = 0; i < nseeds; i++)
		free(seeds[i].p);
	return 0;
}
#endif
