/* Local migration: moving a running VM to a new VMM process on the same
 * host over a connected UNIX stream socket (core/migstream.h is the wire
 * format). Guest RAM travels as its memfd; a device's backend (a TAP's
 * queues) travels as fds when it is transferred. Everything about devices
 * is a loop over the VM's device list (device.h): the description has one
 * node per device, the plan one entry, the state one section each, with its
 * own version.
 *
 *   target                                  source
 *   HELLO (pid, accepts backends?,   --->
 *     the state versions it loads)
 *                                    <---   DESCRIPTION (FDT, machine.h): the
 *                                           guest's CPUID table, the devices,
 *                                           each with the version its state
 *                                           will have and whether its backend
 *                                           is offered
 *   PLAN (which backends it takes)   --->
 *                                    <---   MEMORY (memfd), BACKEND x k (fds)
 *   builds the VM: KVM, vCPUs,
 *   devices (new backends opened)
 *   PREPARED                         --->
 *                                           freeze: vCPUs paused, devices
 *                                           quiesced
 *                                    <---   FREEZE, VCPU x n, MACHINE,
 *                                           DEVICE x m, END
 *   loads it all (no guest memory
 *   written, no backend touched)
 *   READY                            --->
 *                                    <---   COMMIT; the source stays paused
 *   the caller's switch-over
 *   STARTING                         --->   the source stops the VM and
 *   datapaths, vCPUs                        frees its devices
 *
 * Versions: a source writes each device's state in the newest version the
 * target loads and it can write; where there is none it refuses in one
 * line, before anything is frozen. So an older build can hand its VM to a
 * newer one, and back while the formats allow it.
 *
 * Until COMMIT the source owns the VM: any failure (a refused or corrupt
 * section, a timeout, the target gone) makes it send ERROR if it can, undo
 * the freeze and resume with its backends as they were; the target then
 * frees what it built and reports one error. Between COMMIT and STARTING
 * the target must not run the guest or touch a backend; if it fails there
 * (dies, gives up, times out), the source kills it through a pidfd taken
 * from HELLO's pid, waits until it is gone, and only then resumes -- unless
 * a STARTING reached the socket before it died, in which case the guest
 * may have run there and the VM is lost rather than run twice. The source
 * never reads a backend while it waits: its main thread, which runs the
 * datapaths, is in here. */
#ifndef VMM_VM_MIGRATE_H
#define VMM_VM_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "machine.h"
#include "vm.h"

#define MIGRATE_DEFAULT_TIMEOUT_MS 30000

/* Source policy. A device's backend goes over only if backend_transfer,
 * device[i] (0: the device's own opt-in, device.backend_transfer; 1: yes;
 * -1: no) and the target's HELLO all allow it, and the target's PLAN
 * takes it. */
struct migrate_options {
	bool backend_transfer;
	signed char device[MACHINE_MAX_DEVICES]; /* by device index */
	int timeout_ms;         /* bound on each wait for the peer; 0: default */
};

/* What happened, for both sides. Times are CLOCK_MONOTONIC ns (the same
 * clock in both processes). */
struct migrate_report {
	pid_t peer_pid;
	uint64_t freeze_ns;     /* the source's vCPUs stopped */
	uint64_t sent_ns;       /* the state saved, sent in one write (source) / arrived (target) */
	uint64_t loaded_ns;     /* READY sent (target) / received (source) */
	uint64_t commit_ns;     /* COMMIT sent (source) / received (target) */
	bool after_commit;      /* source: failed after COMMIT (the target was killed) */
	unsigned ndevices;
	bool transferred[MACHINE_MAX_DEVICES]; /* by device index */
};

/* Source: sends `vm` over fd, the target speaking first. 0: the target
 * has the VM, which is stopped here ("migrated to process N") with its
 * devices gone. -1: the VM runs on here as before. fd stays the caller's. */
int migrate_send(struct vm *vm, int fd, const struct migrate_options *o, struct migrate_report *r);

/* The same in two steps, so that the caller's loop (the VM's userspace
 * datapath, its console) keeps running while the target builds its VM:
 * begin runs HELLO to BACKEND with the VM running (NULL and a message on
 * failure, the VM untouched); the caller waits until migrate_source_fd()
 * is readable (PREPARED or an error), then finish freezes and sends the
 * state. cancel gives up between the two (the target is told why). begin's
 * options are copied. A VM that stopped in between fails finish cleanly.
 * The VM must not be freed before finish or cancel. */
struct migrate_source;
struct migrate_source *migrate_source_begin(struct vm *vm, int fd, const struct migrate_options *o);
int migrate_source_fd(const struct migrate_source *s);
int migrate_source_finish(struct migrate_source *s, struct migrate_report *r); /* frees s */
void migrate_source_cancel(struct migrate_source *s, const char *why);        /* frees s */

/* Target. */
struct migrate_target;
struct migrate_target *migrate_target_new(int fd, int timeout_ms); /* fd stays the caller's */
void migrate_target_free(struct migrate_target *t);
/* HELLO, then the source's DESCRIPTION, checked against the registry:
 * what the VM is and which backends are offered (d->devices[i].transfer).
 * *d stays the target's (do not free it). */
int migrate_offer(struct migrate_target *t, bool backend_transfer, const struct device_registry *r,
		  const struct machine_desc **d);

/* By device index. A device with a backend field either takes the offered
 * backend or names the one to open here (its backend field, "tap1"). */
struct migrate_plan {
	bool take_backend[MACHINE_MAX_DEVICES];
	char backend[MACHINE_MAX_DEVICES][64];
};

/* Runs the protocol up to COMMIT. The VM comes back loaded and paused,
 * with no datapath started, and vm_resume() refuses it: the caller does
 * the rest of its work (the network switch-over), then migrate_start().
 * `local` gives this process's console_fd, loop and registry (the rest
 * comes from the description). NULL with a message on failure, after
 * telling the source (which then resumes). */
struct vm *migrate_receive(struct migrate_target *t, const struct migrate_plan *p,
			   const struct vm_config *local, struct migrate_report *r);

/* Tells the source that the VM starts here (MIG_STARTING, the point of no
 * return), then starts its datapaths and vCPUs. If the source cannot be
 * told, the VM does not start (-1). A target that gives up instead, or
 * dies, is killed by the source, which then resumes the VM. */
int migrate_start(struct migrate_target *t, struct vm *vm);

#endif
