/* vCPU threads: each loops on KVM_RUN and hands port and MMIO exits to the
 * buses. All vCPUs of a VM share one control block through which the main
 * thread pauses, resumes and stops them.
 *
 * Pausing is a barrier: the main thread sets the request, sets immediate_exit
 * in every kvm_run and kicks each thread with a signal; a thread parks only
 * once KVM_RUN has returned EINTR, i.e. after any pending port or MMIO access
 * was completed by KVM, so a parked vCPU's state is complete and consistent. */
#ifndef VMM_VCPU_H
#define VMM_VCPU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/kvm.h>

#include "bus.h"

enum vcpu_request { VCPU_RUN, VCPU_PAUSE, VCPU_STOP };

struct vcpu;

/* What the vCPU threads report to the VM that owns them. Called on the vCPU
 * thread; must not block for long. */
struct vcpu_host {
	/* The guest asked to power off or reset, or the vCPU hit an error it
	 * cannot continue from: the VM should stop. `why` is a message. */
	void (*fatal)(void *opaque, unsigned vcpu_id, const char *why);
	void *opaque;
};

struct vcpu_group {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum vcpu_request request;
	unsigned parked;   /* threads parked for the current pause */
	unsigned live;     /* threads still in their run loop */
	struct bus *pio, *mmio;
	struct vcpu_host host;
	unsigned n;
	struct vcpu *vcpus;
};

/* What a vCPU thread has done so far, for telling a guest that spins from
 * one that waits (vcpu_stats): returns from KVM_RUN, by kind. Written by the
 * vCPU thread, read by any. */
struct vcpu_stats {
	pid_t tid;            /* the thread's id (0 until it started) */
	uint64_t runs;        /* KVM_RUN returns, EINTR included */
	uint64_t io_exits, mmio_exits;
};

struct vcpu {
	struct vcpu_group *group;
	unsigned id;
	int fd;
	struct kvm_run *run;
	int run_size;
	pthread_t thread;
	bool started;
	_Atomic pid_t tid;
	_Atomic uint64_t runs, io_exits, mmio_exits;
};

int vcpu_group_init(struct vcpu_group *g, unsigned n, struct bus *pio, struct bus *mmio,
		    const struct vcpu_host *host);
/* Joins any threads still running, unmaps and closes every vCPU. */
void vcpu_group_destroy(struct vcpu_group *g);

/* Starts one thread per vCPU (their fds must be set up). `paused`: the
 * threads park before their first KVM_RUN, until vcpu_group_resume, so
 * that a VM arriving by migration has them ready before its freeze. */
int vcpu_group_start(struct vcpu_group *g, bool paused);
#define VCPU_PAUSE_TIMEOUT_MS 10000
#define VCPU_KICK_INTERVAL_MS 100

/* Returns once every live thread is parked, or fails (and resumes the
 * parked ones) if some vCPU is still in KVM_RUN after VCPU_PAUSE_TIMEOUT_MS. */
int vcpu_group_pause(struct vcpu_group *g);
int vcpu_group_resume(struct vcpu_group *g);
/* Stops and joins every thread. Safe to call more than once. */
void vcpu_group_stop(struct vcpu_group *g);
/* vCPU i's counters so far (i < g->n). */
void vcpu_stats(struct vcpu_group *g, unsigned i, struct vcpu_stats *out);

#endif
