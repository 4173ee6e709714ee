/* tests/guest/diskwrite.c — write data to a disk so that it is known to be
 * written, and check it afterwards. Built static into the guest images by
 * scripts/guest-image and scripts/rootfs-image (/bin/diskwrite); the same
 * source builds on the host (cc -O2 tests/guest/diskwrite.c) to check an
 * image file there. Plain C11 + POSIX; O_DIRECT where the system has it.
 *
 * The range is COUNT_MIB MiB from OFFSET_MIB MiB on DEV (a block device or
 * a file), cut in 4 KiB blocks numbered from the start of DEV. Two patterns:
 *
 *   write/verify: each block is pseudo-random bytes derived from SEED and
 *     the block's number, so any block can be checked on its own.
 *   stream/check: every block carries a header, little-endian u64s:
 *     [0] magic "LVMMDSK1"  [8] SEED  [16] block number  [24] generation
 *     (pass number, from 1), then pseudo-random bytes, and at [4088] an
 *     FNV-1a checksum of bytes 0..4087. stream rewrites the blocks in order,
 *     pass after pass, each write durable (O_DIRECT|O_DSYNC, or --fsync:
 *     fdatasync after each write) before the next starts, and reports the
 *     last durable write as "acked GEN BLOCK". So on the disk the blocks up
 *     to some block hold generation G and the rest G-1 (never written = 0),
 *     and that point is at or after every position acked. With --timestamps
 *     each line also gives the guest's CLOCK_MONOTONIC in ms when the write
 *     was durable, "acked GEN BLOCK MS" (bench/migrate measures the longest
 *     gap between them: the I/O stall a migration causes), and a line on
 *     stderr first gives both CLOCK_MONOTONIC and CLOCK_REALTIME in ms.
 *
 * bench: a load generator for bench/disk. For SECONDS it reads or writes
 * BS-byte blocks (default 1 MiB for seq-*, 4 KiB for rand-*) in the first
 * SIZE_MIB MiB from OFFSET_MIB on DEV, always with O_DIRECT (no O_DSYNC: the
 * guest's page cache is bypassed, so each request goes to the device), from
 * JOBS threads at once (default 1: the queue depth). seq-*: each thread walks
 * its own slice of the range in order, wrapping around; rand-*: each picks
 * BS-aligned offsets at random. Written data is pseudo-random. It prints
 * one line:
 *   bench MODE bs=BS jobs=N bytes=B ops=N seconds=S
 * where S runs from the start of the first request to the end of the last.
 *
 * Exit status: 0 ok, 1 the data does not check, 2 usage or I/O error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096u                 /* block size */
#define BLKS_PER_MIB 256u
#define CHUNK_BLKS 256u           /* write/verify/check move 1 MiB per call */
#define MAGIC 0x314b53444d4d564cull /* "LVMMDSK1" read as a little-endian u64 */
#define HDR 32u                   /* magic, seed, block, generation */
#define SUM_AT (BLK - 8u)         /* where the checksum goes */
#define MAX_REPORTS 10            /* problems printed one by one */

static const char usage_text[] =
  "usage: diskwrite write  DEV OFFSET_MIB COUNT_MIB SEED [--direct] [--fsync]\n"
  "       diskwrite verify DEV OFFSET_MIB COUNT_MIB SEED [--direct]\n"
  "       diskwrite stream DEV OFFSET_MIB COUNT_MIB SEED [--direct] [--fsync] [--every N] [--passes N]\n"
  "                        [--timestamps]\n"
  "       diskwrite check  DEV OFFSET_MIB COUNT_MIB SEED [--direct] [--acked GEN:BLOCK]\n"
  "       diskwrite bench  DEV seq-read|seq-write|rand-read|rand-write SIZE_MIB SECONDS\n"
  "                        [--bs BYTES] [--jobs N] [--offset MIB]\n";

struct args {
  const char *cmd, *dev;
  uint64_t first, nblocks, seed;  /* first block, block count */
  bool direct, fsync;
  uint64_t every, passes;         /* stream: ack line every N writes; 0 passes = forever */
  bool timestamps;                /* stream: CLOCK_MONOTONIC ms on each ack line */
  bool acked;                     /* check: --acked given */
  uint64_t acked_gen, acked_block;
};

static void die(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("diskwrite: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void usage(void)
{
  fputs(usage_text, stderr);
  exit(2);
}

static uint64_t number(const char *s, const char *what)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s || *end || s[0] == '-')
    die("bad %s '%s' (want a non-negative integer)", what, s);
  return v;
}

/* The value after option argv[*i] (and *i moves on to it). */
static const char *value(int argc, char **argv, int *i)
{
  if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
  return argv[++*i];
}

/* --- patterns ---------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void put64(unsigned char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Bytes [from, to) of a block: a stream seeded by SEED, block and generation. */
static void fill(unsigned char *b, unsigned from, unsigned to, uint64_t seed, uint64_t block, uint64_t gen)
{
  uint64_t s = seed ^ (block * 0xd1342543de82ef95ull) ^ (gen * 0xa0761d6478bd642full);
  for (unsigned i = from; i < to; i += 8) put64(b + i, splitmix(&s));
}

static uint64_t checksum(const unsigned char *b)
{
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned i = 0; i < SUM_AT; i += 8) h = (h ^ get64(b + i)) * 0x100000001b3ull;
  return h;
}

static void stream_block(unsigned char *b, uint64_t seed, uint64_t block, uint64_t gen)
{
  put64(b, MAGIC);
  put64(b + 8, seed);
  put64(b + 16, block);
  put64(b + 24, gen);
  fill(b, HDR, SUM_AT, seed, block, gen);
  put64(b + SUM_AT, checksum(b));
}

/* A stream block's generation in *gen (0: never written); false and *why if invalid. */
static bool stream_decode(const unsigned char *b, uint64_t seed, uint64_t block, uint64_t *gen, const char **why)
{
  *gen = 0;
  if (get64(b) != MAGIC) return true;
  *why = get64(b + SUM_AT) != checksum(b) ? "bad checksum (torn or corrupt)"
       : get64(b + 8) != seed ? "written with another seed"
       : get64(b + 16) != block ? "holds another block's data"
       : get64(b + 24) == 0 ? "generation 0" : NULL;
  *gen = get64(b + 24);
  return *why == NULL;
}

/* --- I/O ---------------------------------------------------------------- */

static int open_dev(const struct args *a, int flags, bool direct)
{
  if (direct) {
#ifdef O_DIRECT
    flags |= O_DIRECT;
#else
    die("O_DIRECT is not available on this system");
#endif
  }
  int fd = open(a->dev, flags, 0644);
  if (fd < 0 && direct && errno == EINVAL)
    die("open %s: O_DIRECT refused (tmpfs? use --fsync, or a file on another filesystem)", a->dev);
  if (fd < 0) die("open %s: %s", a->dev, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat %s: %s", a->dev, strerror(errno));
  if (S_ISBLK(st.st_mode)) {  /* the range must fit on the device */
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0) die("lseek %s: %s", a->dev, strerror(errno));
    if ((a->first + a->nblocks) * BLK > (uint64_t)size)
      die("%s has %jd MiB; the range ends at %" PRIu64 " MiB", a->dev, (intmax_t)(size >> 20),
          (a->first + a->nblocks) / BLKS_PER_MIB);
  }
  return fd;
}

static void write_at(int fd, const struct args *a, const unsigned char *buf, size_t len, uint64_t block)
{
  off_t off = (off_t)(block * BLK);
  while (len > 0) {
    ssize_t n = pwrite(fd, buf, len, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("write %s at block %" PRIu64 ": %s", a->dev, block, strerror(errno));
    if (n == 0) die("write %s at block %" PRIu64 ": wrote nothing", a->dev, block);
    buf += n, len -= (size_t)n, off += n;
  }
}

/* Reads up to len bytes; returns how many (fewer at the end of a file). */
static size_t read_at(int fd, const struct args *a, unsigned char *buf, size_t len, uint64_t block)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, (off_t)(block * BLK + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("read %s at block %" PRIu64 ": %s", a->dev, block, strerror(errno));
    if (n == 0) break;
    got += (size_t)n;
  }
  return got;
}

static void sync_dev(int fd, const struct args *a)
{
  if (fdatasync(fd) < 0) die("fdatasync %s: %s", a->dev, strerror(errno));
}

static void close_dev(int fd, const struct args *a)
{
  if (close(fd) < 0) die("close %s: %s", a->dev, strerror(errno));
}

static unsigned char *buffer(size_t len)
{
  void *p;
  int err = posix_memalign(&p, BLK, len);  /* O_DIRECT wants aligned memory */
  if (err) die("posix_memalign %zu: %s", len, strerror(err));
  return p;
}

/* --- subcommands ------------------------------------------------------ */

static int cmd_write(const struct args *a)
{
  int fd = open_dev(a, O_WRONLY | O_CREAT | (a->direct ? O_DSYNC : 0), a->direct);
  unsigned char *buf = buffer(CHUNK_BLKS * BLK);
  for (uint64_t i = 0; i < a->nblocks; i += CHUNK_BLKS) {
    uint64_t n = a->nblocks - i < CHUNK_BLKS ? a->nblocks - i : CHUNK_BLKS;
    for (uint64_t j = 0; j < n; j++) fill(buf + j * BLK, 0, BLK, a->seed, a->first + i + j, 0);
    write_at(fd, a, buf, n * BLK, a->first + i);
  }
  if (a->fsync && fsync(fd) < 0) die("fsync %s: %s", a->dev, strerror(errno));
  close_dev(fd, a);
  printf("wrote %" PRIu64 " MiB at %" PRIu64 " MiB\n", a->nblocks / BLKS_PER_MIB, a->first / BLKS_PER_MIB);
  free(buf);
  return 0;
}

static int cmd_verify(const struct args *a)
{
  int fd = open_dev(a, O_RDONLY, a->direct);
  unsigned char *buf = buffer(CHUNK_BLKS * BLK), want[BLK];
  bool bad = false;
  for (uint64_t i = 0; i < a->nblocks && !bad; i += CHUNK_BLKS) {
    uint64_t n = a->nblocks - i < CHUNK_BLKS ? a->nblocks - i : CHUNK_BLKS;
    size_t got = read_at(fd, a, buf, n * BLK, a->first + i);
    for (uint64_t j = 0; j < n; j++) {
      uint64_t b = a->first + i + j;
      fill(want, 0, BLK, a->seed, b, 0);
      if ((j + 1) * BLK > got || memcmp(buf + j * BLK, want, BLK) != 0) {
        printf("mismatch at block %" PRIu64 " (MiB %" PRIu64 ")%s\n", b, b / BLKS_PER_MIB,
               (j + 1) * BLK > got ? ": past the end of the file" : "");
        bad = true;
        break;
      }
    }
  }
  close_dev(fd, a);
  free(buf);
  if (bad) return 1;
  printf("ok %" PRIu64 " MiB\n", a->nblocks / BLKS_PER_MIB);
  return 0;
}

static volatile sig_atomic_t want_report, want_stop;

static void on_signal(int sig)
{
  if (sig == SIGUSR1) want_report = 1;
  else want_stop = 1;
}

static void report(uint64_t gen, uint64_t block, const struct timespec *at)
{
  if (gen == 0) return;  /* nothing acknowledged yet */
  if (at)
    printf("acked %" PRIu64 " %" PRIu64 " %jd.%03ld\n", gen, block,
           (intmax_t)at->tv_sec * 1000 + at->tv_nsec / 1000000, (at->tv_nsec / 1000) % 1000);
  else
    printf("acked %" PRIu64 " %" PRIu64 "\n", gen, block);
  if (fflush(stdout) == EOF) die("stdout: %s", strerror(errno));
}

static int cmd_stream(const struct args *a)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;  /* a write under way completes; the loop then looks */
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR1, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0 ||
      sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGHUP, &sa, NULL) < 0)
    die("sigaction: %s", strerror(errno));

  bool direct = a->direct || !a->fsync;  /* O_DIRECT|O_DSYNC unless --fsync alone */
  int fd = open_dev(a, O_WRONLY | O_CREAT | (direct ? O_DSYNC : 0), direct);
  unsigned char *buf = buffer(BLK);
  fprintf(stderr, "diskwrite: stream to %s blocks %" PRIu64 "..%" PRIu64 ", seed %" PRIu64 ", %s\n",
          a->dev, a->first, a->first + a->nblocks - 1, a->seed,
          !direct ? "write + fdatasync" : a->fsync ? "O_DIRECT|O_DSYNC + fdatasync" : "O_DIRECT|O_DSYNC");
  uint64_t gen_ok = 0, block_ok = 0, writes = 0, reported = 0;
  struct timespec at_ok = { 0, 0 };  /* when the last acknowledged write was durable */
  const struct timespec *at = a->timestamps ? &at_ok : NULL;
  if (at) {  /* both clocks at once: the acks' times can be put on the wall clock */
    struct timespec mono, real;
    if (clock_gettime(CLOCK_MONOTONIC, &mono) < 0 || clock_gettime(CLOCK_REALTIME, &real) < 0)
      die("clock_gettime: %s", strerror(errno));
    fprintf(stderr, "diskwrite: clocks: monotonic %jd.%03ld ms, realtime %jd.%03ld ms\n",
            (intmax_t)mono.tv_sec * 1000 + mono.tv_nsec / 1000000, (mono.tv_nsec / 1000) % 1000,
            (intmax_t)real.tv_sec * 1000 + real.tv_nsec / 1000000, (real.tv_nsec / 1000) % 1000);
  }
  for (uint64_t gen = 1; (a->passes == 0 || gen <= a->passes) && !want_stop; gen++) {
    for (uint64_t i = 0; i < a->nblocks && !want_stop; i++) {
      uint64_t b = a->first + i;
      stream_block(buf, a->seed, b, gen);
      write_at(fd, a, buf, BLK, b);
      if (a->fsync) sync_dev(fd, a);
      gen_ok = gen, block_ok = b, writes++;  /* durable: acknowledged */
      if (at && clock_gettime(CLOCK_MONOTONIC, &at_ok) < 0) die("clock_gettime: %s", strerror(errno));
      if ((a->every && writes % a->every == 0) || want_report) {
        want_report = 0, reported = writes;
        report(gen_ok, block_ok, at);
      }
    }
  }
  if (reported != writes) report(gen_ok, block_ok, at);  /* the last one, once */
  close_dev(fd, a);
  fprintf(stderr, "diskwrite: stream stopped after %" PRIu64 " writes\n", writes);
  free(buf);
  return 0;
}

static int cmd_check(const struct args *a)
{
  int fd = open_dev(a, O_RDONLY, a->direct);
  unsigned char *buf = buffer(CHUNK_BLKS * BLK);
  uint64_t top = 0, newest = UINT64_MAX, unwritten = 0, problems = 0, prev = 0, prev_gen = 0;
  bool seen = false, dropped = false;  /* a valid block; the first of the older generation */
#define PROBLEM(...) do { if (problems++ < MAX_REPORTS) printf(__VA_ARGS__); } while (0)
  for (uint64_t i = 0; i < a->nblocks; i += CHUNK_BLKS) {
    uint64_t n = a->nblocks - i < CHUNK_BLKS ? a->nblocks - i : CHUNK_BLKS;
    size_t got = read_at(fd, a, buf, n * BLK, a->first + i);
    memset(buf + got, 0, n * BLK - got);  /* past the end of a file: never written */
    for (uint64_t j = 0; j < n; j++) {
      uint64_t b = a->first + i + j, gen;
      const char *why;
      if (!stream_decode(buf + j * BLK, a->seed, b, &gen, &why)) {
        PROBLEM("bad block %" PRIu64 ": %s\n", b, why);
        continue;
      }
      unwritten += gen == 0;
      /* Writes are sequential: generation top from the first block on, then
       * maybe top-1 to the end. Any other change is a lost or reordered write. */
      if (!seen) top = gen, seen = true;
      else if (gen != prev_gen) {
        if (!dropped && gen + 1 == top) dropped = true, newest = prev;
        else PROBLEM("bad order: block %" PRIu64 " has generation %" PRIu64 " after block %" PRIu64
                     " with %" PRIu64 " (a write lost or out of order)\n", b, gen, prev, prev_gen);
      }
      prev = b, prev_gen = gen;
      if (a->acked) {  /* acked G B: blocks up to B hold >= G, the later ones >= G-1 */
        uint64_t least = b <= a->acked_block ? a->acked_gen : a->acked_gen - 1;
        if (gen < least)
          PROBLEM("lost write: block %" PRIu64 " has generation %" PRIu64 ", acked %" PRIu64 " %" PRIu64 " needs >= %" PRIu64 "\n",
                  b, gen, a->acked_gen, a->acked_block, least);
      }
    }
  }
#undef PROBLEM
  close_dev(fd, a);
  free(buf);
  if (problems > MAX_REPORTS) printf("... %" PRIu64 " more\n", problems - MAX_REPORTS);
  if (problems) {
    printf("FAILED: %" PRIu64 " problem%s in %" PRIu64 " blocks\n", problems, problems == 1 ? "" : "s", a->nblocks);
    return 1;
  }
  if (newest == UINT64_MAX) newest = a->first + a->nblocks - 1;
  if (top == 0) printf("ok %" PRIu64 " blocks, never written\n", a->nblocks);
  else printf("ok %" PRIu64 " blocks, newest %" PRIu64 " %" PRIu64 ", %" PRIu64 " never written\n",
              a->nblocks, top, newest, unwritten);
  return 0;
}

/* --- bench -------------------------------------------------------------- */

#define MAX_JOBS 64

struct bench {
  int fd;
  const char *dev;
  bool write, random;
  uint64_t base, size, bs;   /* bytes: the range's start and length, the block size */
  unsigned jobs;
  struct timespec deadline;
};

struct job {
  const struct bench *b;
  unsigned index;
  uint64_t bytes, ops;
  pthread_t thread;
};

static struct timespec now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t;
}

static bool before(struct timespec a, struct timespec b)
{
  return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

static double seconds_between(struct timespec a, struct timespec b)
{
  return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

/* One thread: requests one after the other until the deadline, so JOBS
 * threads keep JOBS requests in flight. */
static void *bench_job(void *arg)
{
  struct job *j = arg;
  const struct bench *b = j->b;
  uint64_t nblocks = b->size / b->bs;
  /* seq: this job's slice of the range (at least one block) */
  uint64_t slice = nblocks / b->jobs ? nblocks / b->jobs : 1;
  uint64_t first = b->random ? 0 : (j->index * slice) % nblocks, pos = 0;
  uint64_t rng = 0x5eed0000u + j->index;
  unsigned char *buf = buffer(b->bs);
  fill(buf, 0, (unsigned)b->bs, rng, j->index, 1);  /* written data: not zeros */
  while (before(now(), b->deadline)) {
    uint64_t block = b->random ? splitmix(&rng) % nblocks : first + pos;
    if (!b->random) pos = (pos + 1) % slice;
    off_t off = (off_t)(b->base + block * b->bs);
    ssize_t n = b->write ? pwrite(b->fd, buf, b->bs, off) : pread(b->fd, buf, b->bs, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("%s %s at byte %jd: %s", b->write ? "write" : "read", b->dev, (intmax_t)off, strerror(errno));
    if ((uint64_t)n != b->bs) die("%s %s at byte %jd: %zd of %" PRIu64 " bytes", b->write ? "write" : "read",
                                  b->dev, (intmax_t)off, n, b->bs);
    j->bytes += (uint64_t)n, j->ops++;
  }
  free(buf);
  return NULL;
}

static int cmd_bench(int argc, char **argv)
{
  if (argc < 6) usage();
  const char *mode = argv[3];
  struct bench b = { .dev = argv[2], .jobs = 1 };
  if (!strcmp(mode, "seq-read")) b.bs = 1u << 20;
  else if (!strcmp(mode, "seq-write")) b.write = true, b.bs = 1u << 20;
  else if (!strcmp(mode, "rand-read")) b.random = true, b.bs = BLK;
  else if (!strcmp(mode, "rand-write")) b.random = b.write = true, b.bs = BLK;
  else die("bench: unknown mode '%s' (seq-read, seq-write, rand-read or rand-write)", mode);
  uint64_t size_mib = number(argv[4], "SIZE_MIB"), secs = number(argv[5], "SECONDS"), off_mib = 0;
  for (int i = 6; i < argc; i++) {
    const char *o = argv[i];
    if (!strcmp(o, "--bs")) b.bs = number(value(argc, argv, &i), "--bs");
    else if (!strcmp(o, "--jobs")) {
      uint64_t n = number(value(argc, argv, &i), "--jobs");
      if (n < 1 || n > MAX_JOBS) die("--jobs takes 1 to %d", MAX_JOBS);
      b.jobs = (unsigned)n;
    } else if (!strcmp(o, "--offset")) off_mib = number(value(argc, argv, &i), "--offset");
    else {
      fprintf(stderr, "diskwrite: %s: unknown option for bench\n", o);
      usage();
    }
  }
  if (size_mib == 0 || secs == 0) die("bench: SIZE_MIB and SECONDS must be at least 1");
  if (size_mib > UINT32_MAX || off_mib > UINT32_MAX || secs > 86400) die("bench: range or time too large");
  if (b.bs == 0 || b.bs % 512 || b.bs > (64u << 20)) die("--bs must be a multiple of 512, at most 64 MiB");
  b.base = off_mib << 20, b.size = size_mib << 20;
  if (b.bs > b.size) die("--bs %" PRIu64 " is larger than the range", b.bs);

  /* open_dev checks that the range fits on a block device */
  struct args a = { .cmd = "bench", .dev = b.dev, .first = off_mib * BLKS_PER_MIB,
                    .nblocks = size_mib * BLKS_PER_MIB };
  b.fd = open_dev(&a, b.write ? O_WRONLY : O_RDONLY, true);
  struct job jobs[MAX_JOBS];
  struct timespec start = now();
  b.deadline = start;
  b.deadline.tv_sec += (time_t)secs;
  for (unsigned i = 0; i < b.jobs; i++) {
    jobs[i] = (struct job){ .b = &b, .index = i };
    int err = pthread_create(&jobs[i].thread, NULL, bench_job, &jobs[i]);
    if (err) die("pthread_create: %s", strerror(err));
  }
  uint64_t bytes = 0, ops = 0;
  for (unsigned i = 0; i < b.jobs; i++) {
    int err = pthread_join(jobs[i].thread, NULL);
    if (err) die("pthread_join: %s", strerror(err));
    bytes += jobs[i].bytes, ops += jobs[i].ops;
  }
  double elapsed = seconds_between(start, now());
  close_dev(b.fd, &a);
  printf("bench %s bs=%" PRIu64 " jobs=%u bytes=%" PRIu64 " ops=%" PRIu64 " seconds=%.6f\n",
         mode, b.bs, b.jobs, bytes, ops, elapsed);
  return 0;
}

/* --- command line ----------------------------------------------------- */

int main(int argc, char **argv)
{
  if (argc >= 2 && !strcmp(argv[1], "bench")) return cmd_bench(argc, argv);
  if (argc < 6) usage();
  struct args a = { .cmd = argv[1], .dev = argv[2], .every = 256 };
  bool w = !strcmp(a.cmd, "write"), v = !strcmp(a.cmd, "verify");
  bool s = !strcmp(a.cmd, "stream"), c = !strcmp(a.cmd, "check");
  if (!w && !v && !s && !c) usage();
  uint64_t off = number(argv[3], "OFFSET_MIB"), count = number(argv[4], "COUNT_MIB");
  if (count == 0) die("COUNT_MIB must be at least 1");
  if (off > UINT64_MAX / 2 / BLK / BLKS_PER_MIB || count > UINT64_MAX / 2 / BLK / BLKS_PER_MIB - off)
    die("range too large");
  a.first = off * BLKS_PER_MIB, a.nblocks = count * BLKS_PER_MIB;
  a.seed = number(argv[5], "SEED");
  for (int i = 6; i < argc; i++) {
    const char *o = argv[i];
    if (!strcmp(o, "--direct")) a.direct = true;
    else if (!strcmp(o, "--fsync") && (w || s)) a.fsync = true;
    else if (!strcmp(o, "--every") && s) a.every = number(value(argc, argv, &i), "--every");
    else if (!strcmp(o, "--passes") && s) a.passes = number(value(argc, argv, &i), "--passes");
    else if (!strcmp(o, "--timestamps") && s) a.timestamps = true;
    else if (!strcmp(o, "--acked") && c) {
      const char *g = value(argc, argv, &i), *colon = strchr(g, ':');
      if (!colon) die("--acked wants GEN:BLOCK, not '%s'", g);
      char gen[32];
      if ((size_t)(colon - g) >= sizeof gen) die("bad --acked '%s'", g);
      memcpy(gen, g, (size_t)(colon - g));
      gen[colon - g] = '\0';
      a.acked = true;
      a.acked_gen = number(gen, "--acked GEN"), a.acked_block = number(colon + 1, "--acked BLOCK");
      if (a.acked_gen == 0) die("--acked GEN counts from 1");
      if (a.acked_block < a.first || a.acked_block >= a.first + a.nblocks)
        die("--acked block %" PRIu64 " is outside blocks %" PRIu64 "..%" PRIu64, a.acked_block,
            a.first, a.first + a.nblocks - 1);
    } else {
      fprintf(stderr, "diskwrite: %s: unknown option for %s\n", o, a.cmd);
      usage();
    }
  }
  return w ? cmd_write(&a) : v ? cmd_verify(&a) : s ? cmd_stream(&a) : cmd_check(&a);
}
