/* The one device interface. A VM holds a list of devices and never names a
 * type: composing it, describing it to a migration target, saving and
 * loading its state, and handing its backends over are loops over that list
 * through each device's type (struct device_type, one per kind of device,
 * listed in a struct device_registry that the caller gives the VM).
 *
 * A type's configuration is plain data described by a table of fields
 * (struct dev_field): the same table checks a configuration, writes and
 * parses its node in the machine description (machine.h), and is what the
 * Lua binding reads a config table with, so every limit lives in one place.
 *
 * Threads: every op is called on the main thread, the vCPUs parked unless
 * said otherwise. */
#ifndef VMM_DEVICE_H
#define VMM_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bus;
struct kvm;
struct guest_mem;
struct mig_buf;
struct uv_loop_s;
struct device;

/* ---- configuration fields ---------------------------------------------- */

enum dev_field_kind {
	DEV_STRING, /* char[size], NUL-terminated */
	DEV_U32,    /* uint32_t in min..max */
	DEV_U16,    /* uint16_t in min..max */
	DEV_FLAG,   /* bool */
	DEV_MAC,    /* uint8_t[6]; "52:54:00:12:34:56" in Lua */
};

struct dev_field {
	const char *name;          /* FDT property and Lua field: "queues" */
	enum dev_field_kind kind;
	size_t offset;             /* in the type's config struct */
	size_t size;               /* DEV_STRING: the array's size */
	uint32_t min, max;         /* DEV_U32 / DEV_U16; DEV_STRING: length */
	bool optional;             /* may be absent (stays 0, "" or false) */
	bool power_of_2;           /* numbers */
	bool backend;              /* names the backend (a TAP, an image):
	                            * what a migration target replaces when the
	                            * backend does not travel */
	/* Further checks of a present value; -1 with a message (where is
	 * "virtio-net net0"). */
	int (*check)(const char *where, const struct dev_field *f, const void *value);
};

/* Checks every field of config (a type's struct) against its table: -1 with
 * "<where>: <field> ..." naming the bad value. */
int dev_fields_check(const struct dev_field *fields, const void *config, const char *where);

/* The value of a DEV_U32 or DEV_U16 field of config. */
uint32_t dev_field_number(const struct dev_field *f, const void *config);

/* "52:54:00:12:34:56" <-> 6 bytes. */
int dev_mac_parse(const char *s, uint8_t mac[6]);
void dev_mac_format(const uint8_t mac[6], char out[18]);

/* ---- what the VM gives its devices ---------------------------------------- */

struct device_host {
	const char *vm_name;
	struct kvm *kvm;          /* created at start (vm_fd -1 before) */
	struct guest_mem *mem;    /* filled at start */
	struct bus *pio, *mmio;
	struct uv_loop_s *loop;   /* runs datapaths; may be NULL (no such device then) */
	void *opaque;             /* the VM */
	/* A migration target: a device whose backend is not handed in opens a
	 * new one at create, but takes no exclusive hold of it (an image's
	 * locks) before its state is loaded, since the source keeps its own
	 * hold until its freeze. */
	bool incoming;
	/* A legacy interrupt line changed (KVM_IRQ_LINE; vCPU threads too). */
	void (*irq_line)(void *opaque, unsigned gsi, int level);
	/* The guest wrote to its console (vCPU threads). */
	void (*console_output)(void *opaque, const uint8_t *buf, size_t len);
	/* The guest asked for a reset or power-off (vCPU threads). */
	void (*guest_reset)(void *opaque, const char *why);
	/* The first device of a kind on this VM, or NULL (a PCI function finds
	 * its host bridge this way). */
	struct device *(*find)(void *opaque, const char *kind);
	/* A migration target's device, at create: map the guest RAM that comes
	 * over at this address of this process if it is free there (the
	 * source's: a backend that holds the source's addresses then goes on
	 * with them). The first ask wins; mem->host says what happened. May
	 * be NULL. */
	void (*ram_address)(void *opaque, uintptr_t addr);
};

/* A backend handed over by a migration source: its fds (the device owns
 * them on success, they stay the caller's on failure) and what the source
 * said of it (backend_save), checked before they are used. */
struct dev_backend {
	const int *fds;
	unsigned nfds;
	const void *state;
	size_t len;
};

/* ---- the type ------------------------------------------------------------ */

#define DEVICE_NAME_MAX 16 /* bytes, with the NUL */

struct device_type {
	const char *kind;              /* the registry's name: "virtio-net" */
	const char *backend_label;     /* what the backend field names: "TAP" */
	size_t config_size;
	const struct dev_field *fields; /* NULL-named end; NULL for none */
	/* Fills a config with the defaults of optional fields. NULL: zeros. */
	void (*config_defaults)(void *config);

	/* State versions: save writes any version from state_min_save to
	 * state_version (the target may be an older build); load takes
	 * state_min_load..state_version. 0: the device has no state. */
	uint16_t state_version, state_min_save, state_min_load;

	/* Builds the device from a checked config (which it may complete, for
	 * example with the name of the TAP it opened: the description then
	 * says that). `in`: a backend adopted from a migration source, or
	 * NULL. NULL with a message. */
	struct device *(*create)(const struct device_host *h, const char *name, void *config,
				 const struct dev_backend *in);
	void (*free)(struct device *d);

	/* Optional ops; NULL where the type has nothing to do. */
	int (*realize)(struct device *d);        /* KVM exists: irqfds, routes */
	int (*quiesce)(struct device *d);        /* before the state is saved */
	int (*unquiesce)(struct device *d);      /* the migration failed */
	int (*save)(struct device *d, uint16_t version, struct mig_buf *b);
	/* Checks the whole payload before it changes anything. */
	int (*load)(struct device *d, uint16_t version, const void *p, size_t len);
	/* Target, after the commit: start from the loaded state. */
	int (*resume_loaded)(struct device *d);
	/* A preview of the state, saved on the running source before the
	 * freeze (in the same version as its state), so that the target can
	 * set up ahead what takes time and rarely changes (a PCI function's
	 * BARs and MSI-X routes: ioeventfds, irqfds). load then applies only
	 * what changed since. preview_load checks the whole payload before
	 * it changes anything. */
	int (*preview_save)(struct device *d, uint16_t version, struct mig_buf *b);
	int (*preview_load)(struct device *d, uint16_t version, const void *p, size_t len);

	/* Backend transfer: the fds (still the device's) and their state. */
	unsigned (*backend_fds)(struct device *d, int *fds, unsigned max);
	int (*backend_save)(struct device *d, struct mig_buf *b);

	/* Host input for the guest's console; bytes accepted. */
	size_t (*console_input)(struct device *d, const uint8_t *buf, size_t len);

	/* For Lua: counters, name/value pairs through emit; the datapath's
	 * state as text (length written, clipped to len - 1). */
	void (*stats)(struct device *d, void (*emit)(void *ctx, const char *name, uint64_t value), void *ctx);
	size_t (*describe_state)(struct device *d, char *buf, size_t len);
};

/* Every device starts with this; create fills type and name, the VM the
 * rest. */
struct device {
	const struct device_type *type;
	char name[DEVICE_NAME_MAX];
	void *config;                 /* type->config_size bytes, the VM's */
	bool backend_transfer;        /* its own opt-in (kept across migrations) */
	/* Migration source, from quiesce until unquiesce or the end: whether
	 * this device's backend went to the target (its fds were sent). One
	 * that stays must let go of any exclusive hold in quiesce (the target
	 * opens its own) and take it back in unquiesce. */
	bool backend_leaving;
};

/* For create: size bytes, zeroed, starting with a struct device whose
 * header is filled; NULL with "<name>: out of memory". */
void *device_alloc(size_t size, const struct device_type *t, const char *name);

/* The field that names a type's backend, or NULL. */
const struct dev_field *device_backend_field(const struct device_type *t);
/* The backend that config (of type t) names ("tap0"), or NULL when the
 * type has no backend field or the field is empty. */
const char *device_backend_name(const struct device_type *t, const void *config);
/* Whether two devices would share one backend: the same type, naming the
 * same backend. */
bool device_same_backend(const struct device_type *t, const void *config, const struct device_type *other,
			 const void *other_config);

/* ---- the registry ---------------------------------------------------------- */

struct device_registry {
	const char *board;                        /* "pc" */
	const struct device_type *const *board_types; /* created by every VM, in order; NULL-terminated */
	const struct device_type *const *types;   /* what can be added; NULL-terminated */
};

/* The type of kind, or NULL. */
const struct device_type *device_registry_find(const struct device_registry *r, const char *kind);
/* Whether t is one that a VM can be given (not the board's). */
bool device_registry_addable(const struct device_registry *r, const struct device_type *t);

#endif
