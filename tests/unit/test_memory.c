/* Guest RAM layout and bounds. Large layouts are laid over a PROT_NONE
 * reservation: real addresses, nothing touched or committed. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "memory.h"

#define KiB 1024ull
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

static void *reserve(uint64_t size)
{
	void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(p != MAP_FAILED);
	return p == MAP_FAILED ? NULL : p;
}

static void test_layout_small(void)
{
	static uint8_t buf[2 * MiB];
	struct guest_mem m;
	CHECK_EQ(guest_mem_wrap(&m, buf, sizeof(buf)), 0);
	CHECK_EQ(m.fd, -1);
	CHECK_EQ(m.size, sizeof(buf));
	CHECK_EQ(m.nregions, 1);
	CHECK_EQ(m.regions[0].gpa, 0);
	CHECK_EQ(m.regions[0].size, sizeof(buf));
	CHECK_EQ(m.regions[0].offset, 0);
	CHECK_EQ(guest_mem_low_end(&m), sizeof(buf));
	guest_mem_destroy(&m);
	buf[0] = 1; /* destroy leaves the caller's buffer alone */
	CHECK_EQ(m.fd, -1);
}

static void test_layout_large(void)
{
	struct guest_mem m;
	uint8_t *host = reserve(5 * GiB);
	if (!host)
		return;

	/* exactly up to the hole: still one region */
	CHECK_EQ(guest_mem_wrap(&m, host, 3 * GiB), 0);
	CHECK_EQ(m.nregions, 1);
	CHECK_EQ(guest_mem_low_end(&m), 3 * GiB);
	CHECK(guest_mem_ptr(&m, GUEST_HIGH_RAM_START, 1) == NULL);

	CHECK_EQ(guest_mem_wrap(&m, host, 5 * GiB), 0);
	CHECK_EQ(m.size, 5 * GiB);
	CHECK_EQ(m.nregions, 2);
	CHECK_EQ(m.regions[0].gpa, 0);
	CHECK_EQ(m.regions[0].size, GUEST_PCI_HOLE_START);
	CHECK_EQ(m.regions[0].offset, 0);
	CHECK_EQ(m.regions[1].gpa, GUEST_HIGH_RAM_START);
	CHECK_EQ(m.regions[1].size, 2 * GiB);
	CHECK_EQ(m.regions[1].offset, 3 * GiB);
	CHECK_EQ(guest_mem_low_end(&m), GUEST_PCI_HOLE_START);

	const uint64_t low_end = GUEST_PCI_HOLE_START, high = GUEST_HIGH_RAM_START;
	const uint64_t high_end = high + 2 * GiB;
	/* low RAM */
	CHECK(guest_mem_ptr(&m, 0, 1) == host);
	CHECK(guest_mem_ptr(&m, low_end - 1, 1) == host + low_end - 1);
	CHECK(guest_mem_ptr(&m, low_end - 8, 8) == host + low_end - 8);
	CHECK(guest_mem_ptr(&m, low_end - 8, 9) == NULL);  /* into the hole */
	CHECK(guest_mem_ptr(&m, low_end, 1) == NULL);
	CHECK(guest_mem_ptr(&m, high - 1, 1) == NULL);
	CHECK(guest_mem_ptr(&m, high - 1, 2) == NULL);     /* from the hole into RAM */
	CHECK(guest_mem_ptr(&m, low_end - 16, high - low_end + 32) == NULL); /* across the hole */
	CHECK(guest_mem_ptr(&m, 0, low_end) == host);      /* all of low RAM */
	CHECK(guest_mem_ptr(&m, 0, low_end + 1) == NULL);
	/* high RAM: contiguous after low RAM in the memfd */
	CHECK(guest_mem_ptr(&m, high, 1) == host + low_end);
	CHECK(guest_mem_ptr(&m, high_end - 1, 1) == host + 5 * GiB - 1);
	CHECK(guest_mem_ptr(&m, high_end - 4, 4) == host + 5 * GiB - 4);
	CHECK(guest_mem_ptr(&m, high_end - 4, 5) == NULL);
	CHECK(guest_mem_ptr(&m, high_end, 1) == NULL);
	CHECK(guest_mem_ptr(&m, high, 2 * GiB) == host + low_end);
	/* wrapping */
	CHECK(guest_mem_ptr(&m, UINT64_MAX, 2) == NULL);
	CHECK(guest_mem_ptr(&m, high, UINT64_MAX) == NULL);
	CHECK(guest_mem_ptr(&m, high_end - 1, UINT64_MAX - high_end + 3) == NULL);
	CHECK(guest_mem_ptr(&m, 0, UINT64_MAX) == NULL);
	/* len 0 counts as 1 */
	CHECK(guest_mem_ptr(&m, high_end - 1, 0) == host + 5 * GiB - 1);
	CHECK(guest_mem_ptr(&m, high_end, 0) == NULL);
	CHECK(guest_mem_ptr(&m, low_end, 0) == NULL);
	guest_mem_destroy(&m);
	munmap(host, 5 * GiB);
}

static void test_ptr_small(void)
{
	static uint8_t buf[1 * MiB];
	struct guest_mem m;
	CHECK_EQ(guest_mem_wrap(&m, buf, sizeof(buf)), 0);
	CHECK(guest_mem_ptr(&m, sizeof(buf) - 1, 1) == buf + sizeof(buf) - 1);
	CHECK(guest_mem_ptr(&m, sizeof(buf), 1) == NULL);
	CHECK(guest_mem_ptr(&m, sizeof(buf) - 1, 2) == NULL);
	CHECK(guest_mem_ptr(&m, 0, sizeof(buf)) == buf);
	CHECK(guest_mem_ptr(&m, 1, sizeof(buf)) == NULL);
	CHECK(guest_mem_ptr(&m, 0, 0) == buf);
	CHECK(guest_mem_ptr(&m, sizeof(buf), 0) == NULL);
	CHECK(guest_mem_ptr(&m, GUEST_HIGH_RAM_START, 1) == NULL);

	/* copies */
	const char msg[] = "hello, guest";
	char back[sizeof(msg)] = { 0 };
	CHECK_EQ(guest_mem_write(&m, 0x1000, msg, sizeof(msg)), 0);
	CHECK(memcmp(buf + 0x1000, msg, sizeof(msg)) == 0);
	CHECK_EQ(guest_mem_read(&m, 0x1000, back, sizeof(back)), 0);
	CHECK(memcmp(back, msg, sizeof(msg)) == 0);
	CHECK_EQ(guest_mem_write(&m, sizeof(buf) - 4, msg, 5), -1);
	CHECK_CONTAINS(vmm_error(), "0xffffc+0x5");
	CHECK_CONTAINS(vmm_error(), "not RAM");
	CHECK_EQ(guest_mem_read(&m, sizeof(buf), back, 1), -1);
	CHECK_CONTAINS(vmm_error(), "0x100000+0x1");
	CHECK_EQ(guest_mem_write(&m, sizeof(buf) - 5, msg, 5), 0);
	guest_mem_destroy(&m);
}

static void test_size_validation(void)
{
	static uint8_t buf[2 * MiB];
	struct guest_mem m;
	const uint64_t bad[] = { 0, 4 * KiB, MiB - 4 * KiB, MiB + 1, MiB + 2048, 3 * GiB + 100 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&m, 0x55, sizeof(m));
		CHECK_EQ(guest_mem_wrap(&m, buf, bad[i]), -1);
		CHECK_CONTAINS(vmm_error(), "multiple of 4096");
		CHECK_EQ(m.fd, -1);
		CHECK_EQ(m.nregions, 0);
		CHECK(guest_mem_ptr(&m, 0, 1) == NULL);
		memset(&m, 0x55, sizeof(m));
		CHECK_EQ(guest_mem_create(&m, bad[i], "test"), -1);
		CHECK_CONTAINS(vmm_error(), "at least 1 MiB");
		CHECK_EQ(m.fd, -1);
		CHECK(guest_mem_ptr(&m, 0, 1) == NULL);
		guest_mem_destroy(&m); /* safe after a failure */
	}
	CHECK_EQ(guest_mem_wrap(&m, buf, MiB), 0);
	CHECK_EQ(guest_mem_wrap(&m, buf, MiB + 4 * KiB), 0);
}

static void test_create_memfd(void)
{
	struct guest_mem m;
	CHECK_EQ(guest_mem_create(&m, 2 * MiB, "luavmm-test"), 0);
	CHECK(m.fd >= 0);
	CHECK(m.host != NULL);
	CHECK_EQ(m.size, 2 * MiB);
	CHECK_EQ(m.nregions, 1);
	struct stat st;
	CHECK_EQ(fstat(m.fd, &st), 0);
	CHECK_EQ(st.st_size, 2 * MiB);
	CHECK(fcntl(m.fd, F_GETFD) & FD_CLOEXEC);

	/* what is written through the mapping is in the memfd */
	const uint8_t pattern[4] = { 0xde, 0xad, 0xbe, 0xef };
	CHECK_EQ(guest_mem_write(&m, 2 * MiB - 4, pattern, 4), 0);
	uint8_t back[4] = { 0 };
	CHECK_EQ(pread(m.fd, back, 4, 2 * MiB - 4), 4);
	CHECK(memcmp(back, pattern, 4) == 0);
	uint8_t zero = 0xff;
	CHECK_EQ(guest_mem_read(&m, 0, &zero, 1), 0);
	CHECK_EQ(zero, 0); /* fresh RAM reads as zeros */
	CHECK(guest_mem_ptr(&m, 2 * MiB, 1) == NULL);

	guest_mem_destroy(&m);
	CHECK_EQ(m.fd, -1);
	CHECK(m.host == NULL);
	CHECK_EQ(m.nregions, 0);
}

/* Whether the page at p is mapped in this process's page tables. */
static bool page_present(const void *p)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	uint64_t entry = 0;
	CHECK_EQ(pread(fd, &entry, sizeof(entry), (off_t)((uintptr_t)p / 4096 * sizeof(entry))), sizeof(entry));
	close(fd);
	return entry >> 63;
}

/* Pages resident in the memfd, counted through a mapping of its own. */
static unsigned resident_pages(int fd, uint64_t size)
{
	uint8_t *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED);
	static unsigned char vec[16 * MiB / 4096];
	CHECK_EQ(mincore(p, size, vec), 0);
	unsigned n = 0;
	for (uint64_t i = 0; i < size / 4096; i++)
		n += vec[i] & 1;
	munmap(p, size);
	return n;
}

static void test_populate_maps_resident_pages_only(void)
{
	const uint64_t size = 16 * MiB;
	int fd = memfd_create("test-populate", MFD_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_EQ(ftruncate(fd, (off_t)size), 0);
	/* The "source" writes three pages, two of them adjacent. */
	uint8_t *src = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(src != MAP_FAILED);
	const uint64_t touched[] = { 0, 5 * MiB, 5 * MiB + 4096, size - 4096 };
	for (unsigned i = 0; i < 4; i++)
		src[touched[i]] = (uint8_t)(i + 1);
	CHECK_EQ(resident_pages(fd, size), 4);

	struct guest_mem m;
	CHECK_EQ(guest_mem_adopt(&m, dup(fd), size, 0), 0);
	for (unsigned i = 0; i < 4; i++)
		CHECK(!page_present(m.host + touched[i]));
	CHECK_EQ(guest_mem_populate_resident(&m), 4 * 4096);
	for (unsigned i = 0; i < 4; i++) {
		CHECK(page_present(m.host + touched[i]));
		CHECK_EQ(m.host[touched[i]], i + 1);
	}
	CHECK(!page_present(m.host + 4096));
	CHECK(!page_present(m.host + 6 * MiB));
	CHECK_EQ(resident_pages(fd, size), 4); /* nothing allocated */
	guest_mem_destroy(&m);
	munmap(src, size);
	close(fd);
}

int main(void)
{
	RUN(test_layout_small);
	RUN(test_layout_large);
	RUN(test_ptr_small);
	RUN(test_size_validation);
	RUN(test_create_memfd);
	RUN(test_populate_maps_resident_pages_only);
	return CHECK_DONE();
}
