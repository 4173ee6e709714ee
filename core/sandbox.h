/* Per-thread seccomp filters (libseccomp) for the threads that run guest
 * work once the VM is set up: vCPU threads (KVM_RUN, the port and MMIO
 * handlers of the devices) and disk I/O threads (preadv, pwritev, flush,
 * discard). A filter is per thread and cannot be lifted. The main thread has
 * none unless the process is locked (vmm --sandbox, vmm.lock, a VM's
 * `locked` field): then it may run the event loop, the datapaths, the
 * control socket and migration, but opens no file (EACCES) and starts no
 * program (EPERM; host commands go through core/launcher.h), and threads it
 * starts from then on inherit its filter.
 *
 * A refused system call raises SIGSYS, whose handler writes one line naming
 * the thread and the call and ends the process (exit status 128 + SIGSYS):
 * a VMM whose device path was turned into something else stops rather than
 * run on. clone3 fails with ENOSYS (seccomp cannot look into its argument
 * struct; glibc falls back to clone), and open/openat with EACCES (glibc
 * looks for message catalogs on the first strerror of an error path).
 *
 * The mode is process-wide and read when such a thread starts:
 * VMM_SECCOMP=off|log|on (default on), or sandbox_set_mode. "log" lets
 * everything through and has the kernel log what the filter would refuse
 * (audit type 1326 in dmesg), for finding what a new device path needs. */
#ifndef VMM_SANDBOX_H
#define VMM_SANDBOX_H

/* SANDBOX_MAIN: the main thread in locked mode (sandbox_lock). */
enum sandbox_role { SANDBOX_VCPU, SANDBOX_IO, SANDBOX_MAIN };
enum sandbox_mode { SANDBOX_ON, SANDBOX_OFF, SANDBOX_LOG };

/* The mode threads get from now on. */
void sandbox_set_mode(enum sandbox_mode mode);
enum sandbox_mode sandbox_mode(void);
/* "on", "off", "log" -> 0 and *mode, or -1 with a message naming the value. */
int sandbox_parse_mode(const char *text, enum sandbox_mode *mode);
const char *sandbox_mode_name(enum sandbox_mode mode);

/* Puts the calling thread under role's filter (nothing when the mode is
 * off). Call it from the thread itself, after its setup. -1 with a
 * message if the filter cannot be built or loaded. */
int sandbox_enter(enum sandbox_role role);

/* Locks the calling (main) thread: sandbox_enter(SANDBOX_MAIN) once; a
 * second call fails. 0 (also when the mode is off: then nothing is
 * loaded), or -1 with a message. */
int sandbox_lock(void);
/* Whether sandbox_lock succeeded (with the filters on or off). */
int sandbox_locked(void);

#endif
