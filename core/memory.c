#include "memory.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

static void layout(struct guest_mem *m, uint64_t size)
{
	uint64_t low = size < GUEST_PCI_HOLE_START ? size : GUEST_PCI_HOLE_START;

	m->size = size;
	m->nregions = 1;
	m->regions[0] = (struct guest_region){ .gpa = 0, .size = low, .offset = 0 };
	if (size > low) {
		m->regions[1] = (struct guest_region){
			.gpa = GUEST_HIGH_RAM_START, .size = size - low, .offset = low };
		m->nregions = 2;
	}
}

static int check_size(uint64_t size)
{
	if (size < (1u << 20) || size % 4096)
		return vmm_fail("guest memory size %llu: must be a multiple of 4096 and at least 1 MiB",
				(unsigned long long)size);
	return 0;
}

/* Maps the whole of fd (size bytes) shared and lays it out; m takes fd. */
static int map_fd(struct guest_mem *m, int fd, uint64_t size, uintptr_t at)
{
	void *p = MAP_FAILED;
	if (at) { /* where asked, or anywhere if that range is taken here */
		p = mmap((void *)at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
			 fd, 0);
		if (p != MAP_FAILED && p != (void *)at) { /* a kernel before 4.17 took it as a hint */
			munmap(p, size);
			p = MAP_FAILED;
		}
	}
	if (p == MAP_FAILED)
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED)
		return vmm_fail_errno("mmap %llu bytes of guest memory", (unsigned long long)size);
	/* Advisory, both: transparent huge pages for shmem (effective where
	 * /sys/kernel/mm/transparent_hugepage/shmem_enabled allows "advise";
	 * fewer EPT/NPT misses), and KSM where it is on. */
	madvise(p, size, MADV_HUGEPAGE);
	madvise(p, size, MADV_MERGEABLE);
	m->fd = fd;
	m->host = p;
	layout(m, size);
	return 0;
}

int guest_mem_create(struct guest_mem *m, uint64_t size, const char *name)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (check_size(size))
		return -1;
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		return vmm_fail_errno("memfd_create(%s)", name);
	if (ftruncate(fd, (off_t)size)) {
		vmm_fail_errno("ftruncate guest memory to %llu bytes", (unsigned long long)size);
		close(fd);
		return -1;
	}
	if (map_fd(m, fd, size, 0)) {
		close(fd);
		return -1;
	}
	return 0;
}

int guest_mem_adopt(struct guest_mem *m, int fd, uint64_t size, uintptr_t at)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (check_size(size))
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return vmm_fail_errno("guest memory fd %d: fstat", fd);
	/* Only memfds (and shmem files) answer F_GET_SEALS. */
	if (!S_ISREG(st.st_mode) || fcntl(fd, F_GET_SEALS) < 0)
		return vmm_fail("guest memory fd %d: not a memfd", fd);
	if ((uint64_t)st.st_size != size)
		return vmm_fail("guest memory fd %d: %llu bytes, the description says %llu", fd,
				(unsigned long long)st.st_size, (unsigned long long)size);
	return map_fd(m, fd, size, at);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define POPULATE_CHUNK (64ull << 20) /* mincore() this much at a time */

/* Populates [start, end) of the mapping; 0, or -1 if the kernel lacks the
 * advice (the caller stops, populating nothing more). */
static int populate(struct guest_mem *m, uint64_t start, uint64_t end)
{
	if (madvise(m->host + start, end - start, MADV_POPULATE_WRITE) == 0)
		return 0;
	if (errno == EINVAL)
		return -1;
	/* EFAULT or ENOMEM: a page went away meanwhile; the guest faults it. */
	return 0;
}

int64_t guest_mem_populate_resident(struct guest_mem *m)
{
	if (m->fd < 0)
		return 0;
	long page = sysconf(_SC_PAGESIZE);
	unsigned char vec[POPULATE_CHUNK / 4096]; /* 16 KiB */
	if (page <= 0 || POPULATE_CHUNK / (uint64_t)page > sizeof(vec))
		return vmm_fail("guest memory: unexpected page size %ld", page);
	uint64_t done = 0, run = 0; /* run: where the resident pages being gathered start */
	bool in_run = false;
	for (uint64_t off = 0; off < m->size; off += POPULATE_CHUNK) {
		uint64_t len = m->size - off < POPULATE_CHUNK ? m->size - off : POPULATE_CHUNK;
		if (mincore(m->host + off, len, vec))
			return vmm_fail_errno("guest memory: mincore at offset %llu", (unsigned long long)off);
		for (uint64_t i = 0; i < len / (uint64_t)page; i++) {
			uint64_t at = off + i * (uint64_t)page;
			bool resident = vec[i] & 1;
			if (resident && !in_run) {
				run = at;
				in_run = true;
			} else if (!resident && in_run) {
				if (populate(m, run, at))
					return (int64_t)done;
				done += at - run;
				in_run = false;
			}
		}
	}
	if (in_run && populate(m, run, m->size) == 0)
		done += m->size - run;
	return (int64_t)done;
}

int guest_mem_wrap(struct guest_mem *m, void *buf, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (check_size(size))
		return -1;
	m->host = buf;
	layout(m, size);
	return 0;
}

void guest_mem_destroy(struct guest_mem *m)
{
	if (m->fd >= 0) {
		munmap(m->host, m->size);
		close(m->fd);
	}
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	if (len == 0)
		len = 1;
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_region *r = &m->regions[i];
		if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
			return m->host + r->offset + (gpa - r->gpa);
	}
	return NULL;
}

/* guest_mem_ptr, with a message naming the range when it is not RAM. */
static void *ram_range(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);
	if (!p)
		vmm_fail("guest range 0x%llx+0x%llx is not RAM", (unsigned long long)gpa,
			 (unsigned long long)len);
	return p;
}

int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = ram_range(m, gpa, len);
	if (!p)
		return -1;
	memcpy(p, src, len);
	return 0;
}

int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	void *p = ram_range(m, gpa, len);
	if (!p)
		return -1;
	memcpy(dst, p, len);
	return 0;
}

uint64_t guest_mem_low_end(const struct guest_mem *m)
{
	return m->regions[0].size;
}
