/* The virtio 1.x PCI transport, modern only (virtio 1.2, section 4.1), for
 * one struct virtio_device.
 *
 * The function: vendor 0x1af4, device 0x1040 + virtio device ID, revision 1,
 * subsystem 0x1af4 / device ID; one 32-bit memory BAR (BAR 0) holding every
 * region below, found by the guest through vendor capabilities (common,
 * notify, ISR, device) and an MSI-X capability with nqueues + 1 vectors.
 *
 * Threads. Register accesses come on vCPU threads and are serialised by
 * vd->lock. What must happen on the main thread (the device's activate and
 * reset, queue notifications without ioeventfd) is handed over with a loop
 * wake-up: after the driver writes 0 to device_status, the register keeps
 * reading its old value until the main thread has reset the device.
 *
 * With KVM (virtio_pci_realize after kvm_create): each queue's notify
 * address is an ioeventfd watched on the loop (unless the device took the
 * queue's kicks, vhost), each MSI-X vector an eventfd bound with an irqfd to
 * an MSI route that follows the guest's table entry; a masked vector's irqfd
 * is unbound, so signals (ours or vhost's) wait in the eventfd counter and
 * fire on unmask. Without KVM (tests), notify writes are queued for the loop
 * and interrupts are counted per vector (virtio_pci_interrupts). */
#ifndef VMM_VIRTIO_PCI_H
#define VMM_VIRTIO_PCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvm.h"
#include "pci.h"
#include "virtio.h"

#define VIRTIO_PCI_VENDOR    0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040
#define VIRTIO_PCI_NO_VECTOR 0xffff

/* Capability cfg_type values (4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG    3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

/* Layout of BAR 0: one 4 KiB page per region. */
#define VIRTIO_PCI_BAR            0
#define VIRTIO_PCI_BAR_SIZE       0x8000
#define VIRTIO_PCI_COMMON_OFFSET  0x0000
#define VIRTIO_PCI_COMMON_LEN     0x40   /* through queue_reset (1.2) */
#define VIRTIO_PCI_ISR_OFFSET     0x1000
#define VIRTIO_PCI_DEVICE_OFFSET  0x2000
#define VIRTIO_PCI_NOTIFY_OFFSET  0x3000
#define VIRTIO_PCI_NOTIFY_MULTIPLIER 4   /* queue q notifies at NOTIFY_OFFSET + 4 q */
#define VIRTIO_PCI_MSIX_TABLE_OFFSET 0x4000
#define VIRTIO_PCI_MSIX_PBA_OFFSET   0x5000
#define VIRTIO_PCI_REGION_SIZE    0x1000

/* Common configuration registers (4.1.4.3). */
#define VIRTIO_PCI_COMMON_DFSELECT   0x00
#define VIRTIO_PCI_COMMON_DF         0x04
#define VIRTIO_PCI_COMMON_GFSELECT   0x08
#define VIRTIO_PCI_COMMON_GF         0x0c
#define VIRTIO_PCI_COMMON_MSIX       0x10
#define VIRTIO_PCI_COMMON_NUMQ       0x12
#define VIRTIO_PCI_COMMON_STATUS     0x14
#define VIRTIO_PCI_COMMON_CFGGENERATION 0x15
#define VIRTIO_PCI_COMMON_Q_SELECT   0x16
#define VIRTIO_PCI_COMMON_Q_SIZE     0x18
#define VIRTIO_PCI_COMMON_Q_MSIX     0x1a
#define VIRTIO_PCI_COMMON_Q_ENABLE   0x1c
#define VIRTIO_PCI_COMMON_Q_NOFF     0x1e
#define VIRTIO_PCI_COMMON_Q_DESCLO   0x20
#define VIRTIO_PCI_COMMON_Q_DESCHI   0x24
#define VIRTIO_PCI_COMMON_Q_AVAILLO  0x28
#define VIRTIO_PCI_COMMON_Q_AVAILHI  0x2c
#define VIRTIO_PCI_COMMON_Q_USEDLO   0x30
#define VIRTIO_PCI_COMMON_Q_USEDHI   0x34

struct uv_loop_s;
struct virtio_pci;

/* At compose time: builds the PCI function for vd, puts it on the bus
 * (BAR assigned) and becomes vd's transport (vd->transport and
 * transport_opaque). `kvm` may be a VM not created yet (vm_fd -1) or NULL;
 * `loop` runs the main-thread work. NULL with a message on failure. */
struct virtio_pci *virtio_pci_new(struct pci_bus *bus, struct virtio_device *vd, struct kvm *kvm,
				  struct uv_loop_s *loop);

/* After kvm_create, before the vCPUs run: eventfds, MSI routes, irqfds and
 * ioeventfds (registered once the guest enables the BAR). Does nothing
 * without KVM (kvm NULL or vm_fd -1). */
int virtio_pci_realize(struct virtio_pci *vp);

/* Takes the function off the bus and releases its eventfds, KVM bindings
 * and loop handles. The vCPUs must be stopped. NULL is fine. */
void virtio_pci_free(struct virtio_pci *vp);

/* Backend transfer (vhost-user): the eventfds another process holds.
 * virtio_pci_eventfds writes each queue's ioeventfd (kick), then each MSI-X
 * vector's irqfd eventfd, and returns how many (nqueues + nqueues + 1),
 * also when max is smaller. They are the function's, -1 before realize. */
unsigned virtio_pci_eventfds(struct virtio_pci *vp, int *fds, unsigned max);
/* TARGET, before realize: takes fds (laid out as virtio_pci_eventfds gives
 * them) instead of making new eventfds, so that a backend holding them
 * goes on kicking and interrupting through them. Each must be an eventfd.
 * The function owns them on success; they stay the caller's on failure. */
int virtio_pci_adopt_eventfds(struct virtio_pci *vp, const int *fds, unsigned n);
/* SOURCE, at the freeze: hold = true unbinds every vector's irqfd, so that
 * what a backend signals waits in the eventfds (for the target's irqfds,
 * which interrupt once when bound) rather than reach this VM after its
 * interrupt controller was saved. false binds them again (unmasked
 * vectors), each interrupting once: a rollback loses nothing. */
void virtio_pci_hold_interrupts(struct virtio_pci *vp, bool hold);

/* The PCI function (its slot, config space). */
struct pci_device *virtio_pci_device(struct virtio_pci *vp);

/* Without KVM: interrupts delivered on MSI-X vector `vector` so far. */
uint64_t virtio_pci_interrupts(struct virtio_pci *vp, unsigned vector);

/* --- local migration ---------------------------------------------------------
 * One MIG_PCI_FUNCTION payload: the function's config space
 * (pci_config_save), the virtio-pci registers (feature selects, the
 * driver's feature register, msix_config, queue_select, ISR), every MSI-X
 * table entry with its pending bit, then the virtio state (virtio_save). */

struct mig_buf;

/* SOURCE, main thread, vCPUs paused, loop callbacks not running, a vhost
 * backend already stopped (its last_avail written back into the queues).
 * Appends the payload to b and changes nothing, so the source can resume
 * if migration fails later. A pending bit is read by polling the vector's
 * eventfd, never consuming it. Fails if the driver's reset or DRIVER_OK
 * is still waiting for the loop ("net0: the driver is resetting the
 * device; retry"), or if b ran out of memory. */
int virtio_pci_save(struct virtio_pci *vp, struct mig_buf *b);

/* TARGET, after virtio_pci_realize, vCPUs not running, the device never
 * started. Checks the whole payload first (identity, every count, index,
 * vector, flag, ring address; no trailing bytes) and changes nothing if any
 * check fails (-1, a message naming the field). Then applies it: config
 * space through the guest write path (BAR moves take the ioeventfds along),
 * the MSI-X table with routes and irqfds following it, pending bits of
 * masked vectors (their eventfd written), registers, virtio state. Starts
 * no datapath and does not touch guest memory: if the source resumes the
 * VM after all, this process just exits. */
int virtio_pci_load(struct virtio_pci *vp, const void *payload, size_t len);

/* TARGET, main thread, after the source committed, once per successful
 * load. If the loaded status is live (DRIVER_OK, not NEEDS_RESET or
 * FAILED), activates the device from the restored indices and kicks every
 * enabled queue once (kicks lost with the source's ioeventfds); then
 * signals every vector in use once (a masked one only becomes pending).
 * -1 if nothing was loaded, or if activation failed: then the device is
 * marked NEEDS_RESET and the driver told, and the VM can run on. */
int virtio_pci_resume_loaded(struct virtio_pci *vp);

/* SOURCE, the VM running: the function's config space and MSI-X table,
 * what a target sets up ahead of the freeze (device.h preview_save):
 * u8 slot, config space, u16 vectors, per vector u32 address low, high,
 * data, vector control. Changes nothing. */
int virtio_pci_preview_save(struct virtio_pci *vp, struct mig_buf *b);

/* TARGET, where virtio_pci_load may come (it comes later and applies the
 * final state over it). Checks the whole payload first, like the load;
 * then applies the config space and the MSI-X table as the load does, so
 * the BAR's ioeventfds and the vectors' routes and irqfds are in place,
 * and the load finds them unchanged. Nothing else: the device stays
 * never started, no pending bit is set. */
int virtio_pci_preview_load(struct virtio_pci *vp, const void *payload, size_t len);

/* A virtio-pci device type's state section: u32 length of the function's
 * part (virtio_pci_save), that part, then the device's own part. */
struct virtio_pci_part_ops {
	int (*save)(void *dev, struct mig_buf *b);
	/* Decodes and checks the device's part, changing nothing except what
	 * undo gives back (a disk's deferred locks). */
	int (*check)(void *dev, const void *p, size_t len);
	void (*undo)(void *dev); /* the function refused its part; may be NULL */
	/* Applies a part that check accepted. */
	int (*apply)(void *dev, const void *p, size_t len);
};
int virtio_pci_save_section(struct virtio_pci *vp, const char *name, const struct virtio_pci_part_ops *ops,
			    void *dev, struct mig_buf *b);
/* Decode, then apply: the device's part is checked first, the function
 * checks its part before it applies it, and the device's part, checked
 * already, then cannot be refused. A refusal changes nothing. */
int virtio_pci_load_section(struct virtio_pci *vp, const char *name, const struct virtio_pci_part_ops *ops,
			    void *dev, const void *p, size_t len);

#endif
