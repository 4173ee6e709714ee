/* Split virtqueue walking: the test plays the driver, laying rings and
 * descriptors in a buffer wrapped as guest RAM, and checks that every rule
 * the guest can break is refused with a message and no state change. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "check.h"
#include "err.h"
#include "memory.h"
#include "virtqueue.h"

#define MEM_SIZE (1u << 20)
#define DESC_GPA 0x1000u
#define AVAIL_GPA 0x2000u
#define USED_GPA 0x3000u
#define DATA_GPA 0x10000u
#define TABLE_GPA 0x40000u
#define QSIZE 16
#define IOV_CAP 8

static uint8_t ram[MEM_SIZE] __attribute__((aligned(4096)));

/* The device side under test, plus the driver's view of the rings. */
struct env {
	struct guest_mem mem;
	struct virtqueue vq;
	struct iovec iov[IOV_CAP];
	struct vq_chain c;
	uint16_t avail_idx; /* driver's next avail index */
};

static struct env E;

static void put16(uint64_t gpa, uint16_t v) { memcpy(ram + gpa, &v, 2); }
static uint16_t get16(uint64_t gpa) { uint16_t v; memcpy(&v, ram + gpa, 2); return v; }
static uint32_t get32(uint64_t gpa) { uint32_t v; memcpy(&v, ram + gpa, 4); return v; }

static void put_desc_at(uint64_t gpa, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct vq_desc d = { .addr = addr, .len = len, .flags = flags, .next = next };
	memcpy(ram + gpa, &d, sizeof(d));
}

static void put_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	put_desc_at(DESC_GPA + 16ull * i, addr, len, flags, next);
}

/* Makes chain `head` available and publishes the new avail index. */
static void make_avail(uint16_t head)
{
	put16(AVAIL_GPA + 4 + 2ull * (E.avail_idx % E.vq.size), head);
	E.avail_idx++;
	put16(AVAIL_GPA + 2, E.avail_idx);
}

/* Starts queue 1 of `size` over the rings as they are. */
static void start_ring(uint16_t size, bool event_idx)
{
	memset(&E, 0, sizeof(E));
	CHECK_EQ(guest_mem_wrap(&E.mem, ram, MEM_SIZE), 0);
	vq_reset(&E.vq, 1, size);
	E.vq.desc_gpa = DESC_GPA;
	E.vq.avail_gpa = AVAIL_GPA;
	E.vq.used_gpa = USED_GPA;
	E.vq.enabled = true;
	CHECK_EQ(vq_start(&E.vq, &E.mem, event_idx), 0);
	E.c = (struct vq_chain){ .iov = E.iov, .cap = IOV_CAP };
}

static void setup_ring(uint16_t size, bool event_idx)
{
	memset(ram, 0, sizeof(ram));
	start_ring(size, event_idx);
}

static void setup(void)
{
	setup_ring(QSIZE, false);
}

static int pop(void)
{
	return vq_pop(&E.vq, &E.c);
}

/* pop() must fail naming `what`, leaving last_avail alone. */
static void check_refused(const char *what)
{
	uint16_t before = E.vq.last_avail;
	vmm_fail("%s", "");
	CHECK_EQ(pop(), -1);
	CHECK_EQ(E.vq.last_avail, before);
	CHECK_CONTAINS(vmm_error(), "queue 1: ");
	CHECK_CONTAINS(vmm_error(), what);
}

/* ---- vq_start ---- */

static int try_start(uint16_t size, uint64_t desc, uint64_t avail, uint64_t used)
{
	struct virtqueue vq;
	vq_reset(&vq, 2, size);
	vq.desc_gpa = desc;
	vq.avail_gpa = avail;
	vq.used_gpa = used;
	return vq_start(&vq, &E.mem, false);
}

static void test_reset_and_stop(void)
{
	setup();
	CHECK_EQ(E.vq.size, QSIZE);
	CHECK_EQ(E.vq.index, 1);
	CHECK_EQ(E.vq.msix_vector, 0xffff);
	CHECK(E.vq.started);
	put_desc(0, DATA_GPA, 8, 0, 0);
	make_avail(0);
	CHECK_EQ(vq_pending(&E.vq), 1);
	CHECK_EQ(pop(), 1);
	vq_push(&E.vq, 0, 0);
	vq_stop(&E.vq);
	CHECK(!E.vq.started);
	CHECK(E.vq.desc == NULL && E.vq.avail == NULL && E.vq.used == NULL);
	CHECK_EQ(E.vq.last_avail, 1); /* kept for migration */
	CHECK_EQ(E.vq.used_idx, 1);
	make_avail(0);
	CHECK_EQ(vq_pending(&E.vq), 0);
	CHECK_EQ(pop(), 0);
	vq_reset(&E.vq, 1, 64);
	CHECK_EQ(E.vq.last_avail, 0);
	CHECK_EQ(E.vq.used_idx, 0);
	CHECK_EQ(E.vq.size, 64);
	CHECK(!E.vq.enabled);
	CHECK_EQ(E.vq.desc_gpa, 0);
}

static void test_start_refuses_bad_size(void)
{
	setup();
	CHECK_EQ(try_start(0, DESC_GPA, AVAIL_GPA, USED_GPA), -1);
	CHECK_CONTAINS(vmm_error(), "size 0 is not a power of 2");
	CHECK_EQ(try_start(3, DESC_GPA, AVAIL_GPA, USED_GPA), -1);
	CHECK_CONTAINS(vmm_error(), "queue 2: size 3 is not a power of 2");
	CHECK_EQ(try_start(100, DESC_GPA, AVAIL_GPA, USED_GPA), -1);
	CHECK_EQ(try_start(1, DESC_GPA, AVAIL_GPA, USED_GPA), 0);
	CHECK_EQ(try_start(256, DESC_GPA, 0x8000, 0x9000), 0);
	/* the largest: 512 KiB of descriptors, 64 KiB avail, 256 KiB used */
	CHECK_EQ(try_start(32768, 0x1000, 0x81000, 0x92000), 0);
}

static void test_start_refuses_misaligned(void)
{
	setup();
	CHECK_EQ(try_start(QSIZE, DESC_GPA + 8, AVAIL_GPA, USED_GPA), -1);
	CHECK_CONTAINS(vmm_error(), "descriptor table address 0x1008 is not 16-byte aligned");
	CHECK_EQ(try_start(QSIZE, DESC_GPA, AVAIL_GPA + 1, USED_GPA), -1);
	CHECK_CONTAINS(vmm_error(), "avail ring address 0x2001 is not 2-byte aligned");
	CHECK_EQ(try_start(QSIZE, DESC_GPA, AVAIL_GPA, USED_GPA + 2), -1);
	CHECK_CONTAINS(vmm_error(), "used ring address 0x3002 is not 4-byte aligned");
	/* the minimum alignments are enough */
	CHECK_EQ(try_start(QSIZE, DESC_GPA + 16, AVAIL_GPA + 2, USED_GPA + 4), 0);
}

static void test_start_refuses_outside_ram(void)
{
	setup();
	CHECK_EQ(try_start(QSIZE, MEM_SIZE - 16 * 8, AVAIL_GPA, USED_GPA), -1);
	CHECK_CONTAINS(vmm_error(), "descriptor table 0xfff80+0x100 is outside guest RAM");
	CHECK_EQ(try_start(QSIZE, DESC_GPA, MEM_SIZE - 2 * QSIZE, USED_GPA), -1);
	CHECK_CONTAINS(vmm_error(), "avail ring");
	CHECK_EQ(try_start(QSIZE, DESC_GPA, AVAIL_GPA, 0xfffffffffffffff0ull), -1);
	CHECK_CONTAINS(vmm_error(), "used ring");
	/* the event-index words are part of the areas */
	uint64_t used_bytes = 6 + 8 * QSIZE, avail_bytes = 6 + 2 * QSIZE;
	CHECK_EQ(vq_used_bytes(QSIZE), used_bytes);
	CHECK_EQ(vq_avail_bytes(QSIZE), avail_bytes);
	CHECK_EQ(vq_desc_bytes(QSIZE), 16 * QSIZE);
	CHECK_EQ(try_start(QSIZE, DESC_GPA, AVAIL_GPA, MEM_SIZE - used_bytes + 2), -1);
	CHECK_CONTAINS(vmm_error(), "used ring");
	CHECK_EQ(try_start(QSIZE, DESC_GPA, AVAIL_GPA, MEM_SIZE - used_bytes - 2), 0);
	CHECK_EQ(try_start(QSIZE, DESC_GPA, MEM_SIZE - avail_bytes + 2, USED_GPA), -1);
	CHECK_EQ(try_start(QSIZE, DESC_GPA, MEM_SIZE - avail_bytes, USED_GPA), 0);
}

/* ---- popping good chains ---- */

static void test_pop_empty(void)
{
	setup();
	CHECK_EQ(vq_pending(&E.vq), 0);
	CHECK_EQ(pop(), 0);
	CHECK_EQ(E.vq.last_avail, 0);
}

static void test_pop_simple_chain(void)
{
	setup();
	put_desc(3, DATA_GPA, 100, VQ_DESC_F_NEXT, 7);
	put_desc(7, DATA_GPA + 0x1000, 1500, VQ_DESC_F_WRITE, 0);
	make_avail(3);
	CHECK_EQ(vq_pending(&E.vq), 1);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.head, 3);
	CHECK_EQ(E.c.nout, 1);
	CHECK_EQ(E.c.nin, 1);
	CHECK_EQ(E.c.out_len, 100);
	CHECK_EQ(E.c.in_len, 1500);
	CHECK(E.iov[0].iov_base == ram + DATA_GPA);
	CHECK_EQ(E.iov[0].iov_len, 100);
	CHECK(E.iov[1].iov_base == ram + DATA_GPA + 0x1000);
	CHECK_EQ(E.iov[1].iov_len, 1500);
	CHECK_EQ(E.vq.last_avail, 1);
	CHECK_EQ(vq_pending(&E.vq), 0);
	CHECK_EQ(pop(), 0);
}

static void test_pop_zero_length_descriptor(void)
{
	setup();
	put_desc(0, 0xdeadbeef00000000ull, 0, VQ_DESC_F_NEXT, 1); /* no bytes: address unused */
	put_desc(1, DATA_GPA, 10, 0, 0);
	make_avail(0);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.nout, 1);
	CHECK_EQ(E.c.out_len, 10);
	CHECK(E.iov[0].iov_base == ram + DATA_GPA);
}

static void test_pop_several_and_wrap(void)
{
	setup();
	E.vq.last_avail = E.avail_idx = 0xfffe; /* the free-running indices wrap */
	put16(AVAIL_GPA + 2, E.avail_idx);
	for (uint16_t i = 0; i < 4; i++) {
		put_desc(i, DATA_GPA + 0x100ull * i, 0x10 + i, VQ_DESC_F_WRITE, 0);
		make_avail(i);
	}
	CHECK_EQ(vq_pending(&E.vq), 4);
	for (uint16_t i = 0; i < 4; i++) {
		CHECK_EQ(pop(), 1);
		CHECK_EQ(E.c.head, i);
		CHECK_EQ(E.c.in_len, 0x10 + i);
	}
	CHECK_EQ(E.vq.last_avail, 2);
	CHECK_EQ(pop(), 0);
}

static void test_indirect_ok(void)
{
	setup();
	uint64_t table = TABLE_GPA + 3; /* the spec does not require alignment */
	put_desc_at(table + 0, DATA_GPA, 10, VQ_DESC_F_NEXT, 2);
	put_desc_at(table + 32, DATA_GPA + 0x100, 20, VQ_DESC_F_NEXT | VQ_DESC_F_WRITE, 1);
	put_desc_at(table + 16, DATA_GPA + 0x200, 30, VQ_DESC_F_WRITE, 0);
	put_desc(5, table, 48, VQ_DESC_F_INDIRECT, 0);
	make_avail(5);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.head, 5);
	CHECK_EQ(E.c.nout, 1);
	CHECK_EQ(E.c.nin, 2);
	CHECK_EQ(E.c.out_len, 10);
	CHECK_EQ(E.c.in_len, 50);
	CHECK(E.iov[0].iov_base == ram + DATA_GPA);
	CHECK(E.iov[1].iov_base == ram + DATA_GPA + 0x100);
	CHECK(E.iov[2].iov_base == ram + DATA_GPA + 0x200);
	CHECK_EQ(E.iov[2].iov_len, 30);
}

static void test_direct_then_indirect(void)
{
	/* 2.7.5.3.2: zero or more chained descriptors, then one indirect */
	setup();
	put_desc_at(TABLE_GPA, DATA_GPA + 0x100, 20, VQ_DESC_F_WRITE, 0);
	put_desc(0, DATA_GPA, 10, VQ_DESC_F_NEXT, 1);
	put_desc(1, TABLE_GPA, 16, VQ_DESC_F_INDIRECT, 0);
	make_avail(0);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.nout, 1);
	CHECK_EQ(E.c.nin, 1);
	CHECK_EQ(E.c.in_len, 20);
}

/* ---- popping broken chains ---- */

static void test_desc_outside_ram(void)
{
	setup();
	put_desc(0, MEM_SIZE - 4, 8, 0, 0);
	make_avail(0);
	check_refused("descriptor 0: buffer 0xffffc+0x8 is outside guest RAM");
}

static void test_desc_addr_wraps(void)
{
	setup();
	put_desc(0, DATA_GPA, 8, VQ_DESC_F_NEXT, 1);
	put_desc(1, 0xfffffffffffffff0ull, 0x20, 0, 0);
	make_avail(0);
	check_refused("descriptor 1: buffer 0xfffffffffffffff0+0x20 is outside guest RAM");
}

static void test_next_out_of_table(void)
{
	setup_ring(256, false);
	put_desc(7, DATA_GPA, 8, VQ_DESC_F_NEXT, 300);
	make_avail(7);
	check_refused("queue 1: descriptor 7: next 300 is outside the table of 256");
}

static void test_loop_refused(void)
{
	setup_ring(4, false);
	put_desc(0, DATA_GPA, 8, VQ_DESC_F_NEXT, 1);
	put_desc(1, DATA_GPA, 8, VQ_DESC_F_NEXT, 0);
	make_avail(0);
	check_refused("descriptor 0: chain longer than the queue size of 4");
	/* empty descriptors use no iovec: the loop is still caught */
	setup();
	put_desc(0, DATA_GPA, 0, VQ_DESC_F_NEXT, 1);
	put_desc(1, DATA_GPA, 0, VQ_DESC_F_NEXT, 0);
	make_avail(0);
	check_refused("chain longer than the queue size of 16");
}

static void test_chain_longer_than_queue(void)
{
	setup_ring(4, false);
	for (uint16_t i = 0; i < 4; i++)
		put_desc(i, DATA_GPA, 8, VQ_DESC_F_NEXT, (uint16_t)((i + 1) % 4));
	make_avail(0);
	check_refused("chain longer than the queue size of 4");
	/* exactly `size` descriptors is fine */
	put_desc(3, DATA_GPA, 8, 0, 0);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.nout, 4);
}

static void test_readable_after_writable(void)
{
	setup();
	put_desc(0, DATA_GPA, 8, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 1);
	put_desc(1, DATA_GPA, 8, 0, 0);
	make_avail(0);
	check_refused("descriptor 1: device-readable descriptor after a device-writable one");
}

static void test_indirect_inside_indirect(void)
{
	setup();
	put_desc_at(TABLE_GPA, DATA_GPA, 8, VQ_DESC_F_NEXT, 1);
	put_desc_at(TABLE_GPA + 16, TABLE_GPA, 32, VQ_DESC_F_INDIRECT, 0);
	put_desc(2, TABLE_GPA, 32, VQ_DESC_F_INDIRECT, 0);
	make_avail(2);
	check_refused("descriptor 2: indirect entry 1: indirect descriptor inside an indirect table");
}

static void test_indirect_with_next(void)
{
	setup();
	put_desc_at(TABLE_GPA, DATA_GPA, 8, 0, 0);
	put_desc(0, TABLE_GPA, 16, VQ_DESC_F_INDIRECT | VQ_DESC_F_NEXT, 1);
	put_desc(1, DATA_GPA, 8, 0, 0);
	make_avail(0);
	check_refused("descriptor 0: both INDIRECT and NEXT set");
}

static void test_indirect_bad_len(void)
{
	setup();
	put_desc_at(TABLE_GPA, DATA_GPA, 8, 0, 0);
	put_desc(0, TABLE_GPA, 0, VQ_DESC_F_INDIRECT, 0);
	make_avail(0);
	check_refused("indirect table length 0 is not a non-zero multiple of 16");
	put_desc(0, TABLE_GPA, 24, VQ_DESC_F_INDIRECT, 0);
	check_refused("indirect table length 24 is not a non-zero multiple of 16");
	put_desc(0, TABLE_GPA, 16 * (VQ_MAX_SIZE + 1), VQ_DESC_F_INDIRECT, 0);
	check_refused("indirect table of 32769 entries is larger than 32768");
	put_desc(0, TABLE_GPA, 16, VQ_DESC_F_INDIRECT, 0);
	CHECK_EQ(pop(), 1);
}

static void test_indirect_outside_ram(void)
{
	setup();
	put_desc(0, MEM_SIZE - 16, 32, VQ_DESC_F_INDIRECT, 0);
	make_avail(0);
	check_refused("indirect table 0xffff0+0x20 is outside guest RAM");
	put_desc(0, 0xfffffffffffffff0ull, 32, VQ_DESC_F_INDIRECT, 0);
	check_refused("is outside guest RAM");
}

static void test_indirect_bad_entries(void)
{
	setup();
	put_desc_at(TABLE_GPA, DATA_GPA, 8, VQ_DESC_F_NEXT, 2); /* table of 2 */
	put_desc(4, TABLE_GPA, 32, VQ_DESC_F_INDIRECT, 0);
	make_avail(4);
	check_refused("descriptor 4: indirect entry 0: next 2 is outside the table of 2");
	put_desc_at(TABLE_GPA, DATA_GPA, 8, VQ_DESC_F_NEXT, 1);
	put_desc_at(TABLE_GPA + 16, DATA_GPA, 8, VQ_DESC_F_NEXT, 0);
	check_refused("chain longer than the indirect table of 2");
	put_desc_at(TABLE_GPA + 16, MEM_SIZE, 8, 0, 0);
	check_refused("indirect entry 1: buffer 0x100000+0x8 is outside guest RAM");
}

static void test_too_many_segments(void)
{
	setup();
	for (uint16_t i = 0; i < 3; i++)
		put_desc(i, DATA_GPA, 8, i < 2 ? VQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	make_avail(0);
	E.c.cap = 2;
	check_refused("descriptor 2: chain needs more than 2 segments");
	E.c.cap = 3;
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.nout, 3);
	CHECK_EQ(E.c.out_len, 24);
}

static void test_avail_idx_too_far(void)
{
	setup();
	put16(AVAIL_GPA + 2, QSIZE + 1);
	check_refused("driver made 17 buffers available in a queue of size 16");
	put16(AVAIL_GPA + 2, 0xffff); /* behind is "too far ahead" too */
	check_refused("driver made 65535 buffers");
	put16(AVAIL_GPA + 2, QSIZE); /* a full ring is fine */
	CHECK_EQ(vq_pending(&E.vq), QSIZE);
	CHECK_EQ(pop(), 1);
}

static void test_head_out_of_table(void)
{
	setup();
	make_avail(QSIZE);
	check_refused("queue 1: avail entry 0: head 16 is outside the table of 16");
}

static void test_error_leaves_state(void)
{
	setup();
	put_desc(0, DATA_GPA, 8, VQ_DESC_F_NEXT, 99);
	make_avail(0);
	check_refused("next 99");
	check_refused("next 99"); /* same answer again */
	put_desc(0, DATA_GPA, 8, VQ_DESC_F_NEXT, 1);
	put_desc(1, DATA_GPA + 8, 4, VQ_DESC_F_WRITE, 0);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.head, 0);
	CHECK_EQ(E.c.nout, 1);
	CHECK_EQ(E.c.nin, 1);
	CHECK_EQ(E.c.out_len, 8);
	CHECK_EQ(E.c.in_len, 4);
	CHECK_EQ(E.vq.last_avail, 1);
}

static void test_unpop(void)
{
	setup();
	put_desc(0, DATA_GPA, 8, VQ_DESC_F_NEXT, 1);
	put_desc(1, DATA_GPA + 8, 4, VQ_DESC_F_WRITE, 0);
	put_desc(2, DATA_GPA + 16, 2, 0, 0);
	make_avail(0);
	make_avail(2);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.head, 2);
	vq_unpop(&E.vq, 2);
	CHECK_EQ(vq_pending(&E.vq), 2);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.head, 0);
	CHECK_EQ(E.c.nout, 1);
	CHECK_EQ(E.c.nin, 1);
	CHECK(E.iov[1].iov_base == ram + DATA_GPA + 8);
	vq_unpop(&E.vq, 1);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.head, 0);
	CHECK_EQ(pop(), 1);
	CHECK_EQ(E.c.head, 2);
	CHECK_EQ(pop(), 0);
}

/* ---- used ring and notifications ---- */

static void test_push_used(void)
{
	setup();
	vq_push(&E.vq, 5, 1234);
	CHECK_EQ(get16(USED_GPA + 2), 1);
	CHECK_EQ(E.vq.used_idx, 1);
	CHECK_EQ(get32(USED_GPA + 4), 5);
	CHECK_EQ(get32(USED_GPA + 8), 1234);
	/* fill without flush publishes nothing */
	vq_fill(&E.vq, 0, 6, 10);
	vq_fill(&E.vq, 1, 7, 20);
	CHECK_EQ(get16(USED_GPA + 2), 1);
	CHECK_EQ(get32(USED_GPA + 12), 6);
	CHECK_EQ(get32(USED_GPA + 20), 7);
	CHECK_EQ(get32(USED_GPA + 24), 20);
	vq_flush(&E.vq, 2);
	CHECK_EQ(get16(USED_GPA + 2), 3);
	/* the slot wraps with the ring, the index at 2^16 */
	E.vq.used_idx = 0xffff;
	vq_push(&E.vq, 9, 99);
	CHECK_EQ(get32(USED_GPA + 4 + 8 * (0xffff % QSIZE)), 9);
	CHECK_EQ(get16(USED_GPA + 2), 0);
	CHECK_EQ(E.vq.used_idx, 0);
	/* nothing beyond the used area was touched */
	CHECK_EQ(get16(USED_GPA + 4 + 8 * QSIZE), 0);
}

static void test_should_signal_flags(void)
{
	setup();
	vq_push(&E.vq, 0, 0);
	CHECK(vq_should_signal(&E.vq));
	put16(AVAIL_GPA, VQ_AVAIL_F_NO_INTERRUPT);
	vq_push(&E.vq, 0, 0);
	CHECK(!vq_should_signal(&E.vq));
	put16(AVAIL_GPA, 0);
	CHECK(vq_should_signal(&E.vq));
}

static void test_should_signal_event_idx(void)
{
	setup_ring(QSIZE, true);
	uint64_t used_event = AVAIL_GPA + 4 + 2 * QSIZE;
	put16(AVAIL_GPA, VQ_AVAIL_F_NO_INTERRUPT); /* ignored with EVENT_IDX */
	put16(used_event, 2);                      /* interrupt when entry 2 is used */
	vq_push(&E.vq, 0, 0);
	CHECK(vq_should_signal(&E.vq)); /* the first is always signalled */
	CHECK_EQ(E.vq.signalled_used, 1);
	CHECK(E.vq.signalled_used_valid);
	vq_push(&E.vq, 0, 0); /* used_idx 2: entry 2 not used yet */
	CHECK(!vq_should_signal(&E.vq));
	CHECK_EQ(E.vq.signalled_used, 2); /* each check covers what was published since the last */
	vq_push(&E.vq, 0, 0); /* used_idx 3: entry 2 is used */
	CHECK(vq_should_signal(&E.vq));
	CHECK_EQ(E.vq.signalled_used, 3);
	vq_push(&E.vq, 0, 0); /* event already passed: no more */
	CHECK(!vq_should_signal(&E.vq));
	/* several at once, passing the event: one interrupt */
	put16(used_event, 5);
	vq_push(&E.vq, 0, 0);
	vq_push(&E.vq, 0, 0);
	vq_push(&E.vq, 0, 0);
	CHECK(vq_should_signal(&E.vq));
	CHECK(!vq_should_signal(&E.vq));
	/* across the 16-bit wrap */
	E.vq.used_idx = 0xfffe;
	E.vq.signalled_used = 0xfffe;
	put16(used_event, 0xffff);
	vq_push(&E.vq, 0, 0);
	CHECK(!vq_should_signal(&E.vq));
	vq_push(&E.vq, 0, 0);
	CHECK(vq_should_signal(&E.vq));
	CHECK_EQ(E.vq.signalled_used, 0);
}

/* A driver that polls with interrupts off (used_event left behind) while
 * more than 2^16 entries are used, then re-arms, must get its interrupt. */
static void test_should_signal_after_long_polling(void)
{
	setup_ring(QSIZE, true);
	uint64_t used_event = AVAIL_GPA + 4 + 2 * QSIZE;
	put16(used_event, 0);
	vq_push(&E.vq, 0, 0);
	CHECK(vq_should_signal(&E.vq));
	unsigned signals = 0;
	for (unsigned i = 0; i < 70000; i++) {
		vq_push(&E.vq, 0, 0);
		signals += vq_should_signal(&E.vq);
	}
	CHECK_EQ(signals, 1); /* once, when the 16-bit index came round to used_event again */
	put16(used_event, E.vq.used_idx); /* re-armed: interrupt on the next entry */
	vq_push(&E.vq, 0, 0);
	CHECK(vq_should_signal(&E.vq));
}

static void test_set_notification_flags(void)
{
	setup();
	CHECK(!vq_set_notification(&E.vq, false));
	CHECK_EQ(get16(USED_GPA), VQ_USED_F_NO_NOTIFY);
	CHECK(!vq_set_notification(&E.vq, true));
	CHECK_EQ(get16(USED_GPA), 0);
	/* a buffer arrived while notifications were off */
	vq_set_notification(&E.vq, false);
	put_desc(0, DATA_GPA, 8, 0, 0);
	make_avail(0);
	CHECK(vq_set_notification(&E.vq, true));
	CHECK_EQ(get16(USED_GPA), 0);
	CHECK_EQ(get16(USED_GPA + 4 + 8 * QSIZE), 0); /* avail_event untouched */
}

static void test_set_notification_event_idx(void)
{
	setup_ring(QSIZE, true);
	uint64_t avail_event = USED_GPA + 4 + 8 * QSIZE;
	put_desc(0, DATA_GPA, 8, 0, 0);
	make_avail(0);
	make_avail(0);
	CHECK_EQ(pop(), 1);
	CHECK(!vq_set_notification(&E.vq, false));
	CHECK_EQ(get16(USED_GPA), 0);   /* flags untouched with EVENT_IDX */
	CHECK_EQ(get16(avail_event), 0);
	CHECK(vq_set_notification(&E.vq, true)); /* one still pending */
	CHECK_EQ(get16(avail_event), 2); /* kick on the next new buffer, not on the pending one */
	CHECK_EQ(pop(), 1);
	CHECK(!vq_set_notification(&E.vq, true));
	CHECK_EQ(get16(avail_event), 2);
	CHECK_EQ(get16(USED_GPA), 0);
}

/* vq_describe: the driver's and the device's indices as they are now. */
static void test_describe(void)
{
	setup_ring(QSIZE, true);
	char line[200];
	put_desc(0, DATA_GPA, 8, 0, 0);
	make_avail(0);
	make_avail(0);
	make_avail(0);
	CHECK_EQ(pop(), 1);
	vq_push(&E.vq, 0, 8);
	CHECK(vq_set_notification(&E.vq, true));
	put16(AVAIL_GPA + 4 + 2 * QSIZE, 7); /* used_event */
	vq_describe(&E.vq, line, sizeof(line));
	CHECK_CONTAINS(line, "avail 3 (flags 0x0, used_event 7), popped 1, used 1 (ring 1, flags 0x0, avail_event 3), event_idx");
	/* "used" is the device's own index, "ring" what the used ring says */
	put16(USED_GPA + 2, 9);
	vq_describe(&E.vq, line, sizeof(line));
	CHECK_CONTAINS(line, "used 1 (ring 9,");
	/* clipped, terminated */
	char small[12];
	CHECK(vq_describe(&E.vq, small, sizeof(small)) > (int)sizeof(small));
	CHECK_EQ(strlen(small), sizeof(small) - 1);
	vq_stop(&E.vq);
	vq_describe(&E.vq, line, sizeof(line));
	CHECK_CONTAINS(line, "not started");
}

/* ---- guest RAM with the PCI hole ---- */

static void test_desc_across_hole(void)
{
	const uint64_t low = GUEST_PCI_HOLE_START, size = low + MEM_SIZE;
	uint8_t *host = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(host != MAP_FAILED);
	if (host == MAP_FAILED)
		return;
	CHECK_EQ(mprotect(host, 0x10000, PROT_READ | PROT_WRITE), 0);
	struct guest_mem mem;
	CHECK_EQ(guest_mem_wrap(&mem, host, size), 0);
	struct virtqueue vq;
	vq_reset(&vq, 1, QSIZE);
	vq.desc_gpa = DESC_GPA;
	vq.avail_gpa = AVAIL_GPA;
	vq.used_gpa = USED_GPA;
	CHECK_EQ(vq_start(&vq, &mem, false), 0);
	struct vq_desc d = { .addr = low - 8, .len = 16 };
	memcpy(host + DESC_GPA, &d, sizeof(d));
	uint16_t avail[3] = { 0, 1, 0 };
	memcpy(host + AVAIL_GPA, avail, sizeof(avail));
	struct iovec iov[2];
	struct vq_chain c = { .iov = iov, .cap = 2 };
	CHECK_EQ(vq_pop(&vq, &c), -1);
	CHECK_CONTAINS(vmm_error(), "buffer 0xbffffff8+0x10 is outside guest RAM");
	d.addr = GUEST_HIGH_RAM_START; /* high RAM is fine */
	memcpy(host + DESC_GPA, &d, sizeof(d));
	CHECK_EQ(vq_pop(&vq, &c), 1);
	CHECK(iov[0].iov_base == host + low);
	/* a ring in the hole */
	vq.used_gpa = low;
	CHECK_EQ(vq_start(&vq, &mem, false), -1);
	CHECK_CONTAINS(vmm_error(), "used ring 0xc0000000");
	munmap(host, size);
}

/* ---- random rings ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Mostly plausible, sometimes wild: exercises the checks, not just the
 * first one. */
static void random_desc(uint64_t gpa, unsigned count)
{
	static const uint64_t addrs[] = { DATA_GPA, TABLE_GPA, MEM_SIZE - 8, 0, DESC_GPA };
	uint64_t addr = rnd() % 16 == 0 ? rnd() : addrs[rnd() % 5] + rnd() % 64;
	uint32_t len = rnd() % 16 == 0 ? (uint32_t)rnd() : (uint32_t)(rnd() % 8) * 16 + (rnd() % 4 == 0);
	uint16_t flags = rnd() % 16 == 0 ? (uint16_t)rnd() : (uint16_t)(rnd() % 8);
	uint16_t next = rnd() % 16 == 0 ? (uint16_t)rnd() : (uint16_t)(rnd() % (count + 2));
	put_desc_at(gpa, addr, len, flags, next);
}

static bool iov_inside_ram(const struct iovec *v)
{
	const uint8_t *p = v->iov_base;
	return p >= ram && p <= ram + MEM_SIZE && v->iov_len <= (size_t)(ram + MEM_SIZE - p);
}

static void check_chain_sane(void)
{
	uint64_t out = 0, in = 0;
	CHECK(E.c.nout + E.c.nin <= E.c.cap);
	CHECK(E.c.head < E.vq.size);
	for (unsigned k = 0; k < E.c.nout + E.c.nin; k++) {
		CHECK(iov_inside_ram(&E.iov[k]));
		CHECK(E.iov[k].iov_len > 0);
		*(k < E.c.nout ? &out : &in) += E.iov[k].iov_len;
	}
	CHECK_EQ(out, E.c.out_len);
	CHECK_EQ(in, E.c.in_len);
}

static void fuzz_once(void)
{
	uint16_t size = (uint16_t)(1u << (rnd() % 5));
	start_ring(size, rnd() & 1); /* every ring word read is rewritten below */
	E.vq.last_avail = E.avail_idx = (uint16_t)rnd();
	E.c.cap = 1 + rnd() % IOV_CAP;
	for (unsigned i = 0; i < size; i++)
		random_desc(DESC_GPA + 16ull * i, size);
	for (unsigned i = 0; i < 16; i++)
		random_desc(TABLE_GPA + 16ull * i, 8);
	for (unsigned i = 0; i < size; i++)
		put16(AVAIL_GPA + 4 + 2ull * i, (uint16_t)(rnd() % 16 ? rnd() % (size + 1) : rnd()));
	put16(AVAIL_GPA + 2, (uint16_t)(E.avail_idx + (rnd() % 16 ? rnd() % (size + 2) : rnd())));
	for (int n = 0; n < 4; n++) {
		uint16_t before = E.vq.last_avail;
		int r = pop();
		if (r == 1) {
			check_chain_sane();
			CHECK_EQ(E.vq.last_avail, (uint16_t)(before + 1));
			continue;
		}
		CHECK_EQ(E.vq.last_avail, before);
		if (r == -1)
			CHECK_CONTAINS(vmm_error(), "queue 1: ");
		else
			CHECK_EQ(r, 0);
		break;
	}
}

static void test_fuzz_random_rings(void)
{
	int before = check_failures;
	for (int i = 0; i < 20000 && check_failures == before; i++)
		fuzz_once();
}

int main(void)
{
	RUN(test_reset_and_stop);
	RUN(test_start_refuses_bad_size);
	RUN(test_start_refuses_misaligned);
	RUN(test_start_refuses_outside_ram);
	RUN(test_pop_empty);
	RUN(test_pop_simple_chain);
	RUN(test_pop_zero_length_descriptor);
	RUN(test_pop_several_and_wrap);
	RUN(test_indirect_ok);
	RUN(test_direct_then_indirect);
	RUN(test_desc_outside_ram);
	RUN(test_desc_addr_wraps);
	RUN(test_next_out_of_table);
	RUN(test_loop_refused);
	RUN(test_chain_longer_than_queue);
	RUN(test_readable_after_writable);
	RUN(test_indirect_inside_indirect);
	RUN(test_indirect_with_next);
	RUN(test_indirect_bad_len);
	RUN(test_indirect_outside_ram);
	RUN(test_indirect_bad_entries);
	RUN(test_too_many_segments);
	RUN(test_avail_idx_too_far);
	RUN(test_head_out_of_table);
	RUN(test_error_leaves_state);
	RUN(test_unpop);
	RUN(test_push_used);
	RUN(test_should_signal_flags);
	RUN(test_should_signal_event_idx);
	RUN(test_should_signal_after_long_polling);
	RUN(test_set_notification_flags);
	RUN(test_set_notification_event_idx);
	RUN(test_describe);
	RUN(test_desc_across_hole);
	RUN(test_fuzz_random_rings);
	return CHECK_DONE();
}
