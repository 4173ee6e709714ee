/* The host command launcher (core/launcher.c): this test binary is its own
 * launcher (`test_launcher __launcher FD`, as the vmm binary is), started
 * through /proc/self/exe. Commands are real programs: sh, cat, true. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "launcher.h"

#define MAX_ENDS 16
static struct end {
	uint32_t id;
	int status, sig, lost;
} ends[MAX_ENDS];
static int nends;

static void on_exit_cb(uint32_t id, int status, int sig, int lost)
{
	if (nends < MAX_ENDS)
		ends[nends++] = (struct end){ id, status, sig, lost };
}

/* Waits up to 10 s for command id's end -> its record, or NULL. */
static struct end *wait_end(uint32_t id)
{
	for (int t = 0; t < 1000; t++) {
		for (int i = 0; i < nends; i++)
			if (ends[i].id == id)
				return &ends[i];
		struct pollfd p = { .fd = launcher_fd(), .events = POLLIN };
		if (p.fd < 0)
			return NULL;
		if (poll(&p, 1, 10) > 0 && launcher_dispatch() < 0)
			continue; /* gone: the lost ends are recorded */
	}
	return NULL;
}

/* All a pipe holds until its writers are gone. */
static void read_all(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	ssize_t k;
	while (n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) > 0)
		n += (size_t)k;
	buf[n] = '\0';
	close(fd);
}

/* Runs argv with its output in a pipe: 0 and the output, or -1. */
static int run(uint32_t id, char *const *argv, const char *in, const char *out, char *buf, size_t cap, pid_t *pid)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	struct launcher_cmd cmd = { .argv = argv, .stdin_path = in, .stdout_path = out, .out_fd = p[1], .in_fd = -1 };
	int rc = launcher_spawn(id, &cmd, pid);
	close(p[1]);
	if (rc < 0) {
		close(p[0]);
		return -1;
	}
	read_all(p[0], buf, cap);
	return 0;
}

static void a_command_runs_with_its_output_and_exit_status_reported(void)
{
	char out[256];
	pid_t pid = 0;
	char *argv[] = { "sh", "-c", "echo out; echo err >&2; exit 3", NULL };
	CHECK_EQ(run(1, argv, NULL, NULL, out, sizeof(out), &pid), 0);
	CHECK(pid > 0);
	CHECK(strcmp(out, "out\nerr\n") == 0);
	struct end *e = wait_end(1);
	CHECK(e && e->status == 3 && e->sig == 0 && !e->lost);
}

static void a_missing_program_fails_with_its_name_and_the_reason(void)
{
	char out[64];
	pid_t pid;
	char *argv[] = { "/nonexistent/program", NULL };
	CHECK(run(2, argv, NULL, NULL, out, sizeof(out), &pid) < 0);
	CHECK_CONTAINS(vmm_error(), "/nonexistent/program: No such file or directory");
}

static void redirections_are_opened_by_the_launcher(void)
{
	char src[] = "/tmp/test_launcher_in_XXXXXX", dst[] = "/tmp/test_launcher_out_XXXXXX";
	int fd = mkstemp(src);
	CHECK(fd >= 0 && write(fd, "payload\n", 8) == 8);
	close(fd);
	close(mkstemp(dst));
	char out[64];
	pid_t pid;
	char *argv[] = { "cat", NULL };
	CHECK_EQ(run(3, argv, src, dst, out, sizeof(out), &pid), 0);
	struct end *e = wait_end(3);
	CHECK(e && e->status == 0);
	char got[64] = "";
	fd = open(dst, O_RDONLY);
	CHECK(fd >= 0 && read(fd, got, sizeof(got) - 1) == 8);
	close(fd);
	CHECK(strcmp(got, "payload\n") == 0);
	CHECK(run(4, argv, "/nonexistent/in", NULL, out, sizeof(out), &pid) < 0);
	CHECK_CONTAINS(vmm_error(), "stdin /nonexistent/in: No such file or directory");
	unlink(src);
	unlink(dst);
}

static void a_kill_reaches_the_command_and_its_signal_is_reported(void)
{
	int p[2], in[2];
	CHECK(pipe2(p, O_CLOEXEC) == 0 && pipe2(in, O_CLOEXEC) == 0);
	char *argv[] = { "cat", NULL }; /* waits on its held stdin */
	struct launcher_cmd cmd = { .argv = argv, .out_fd = p[1], .in_fd = in[0] };
	pid_t pid;
	CHECK_EQ(launcher_spawn(5, &cmd, &pid), 0);
	close(p[1]);
	close(in[0]);
	CHECK_EQ(launcher_kill(5, SIGKILL), 0);
	struct end *e = wait_end(5);
	CHECK(e && e->status == -1 && e->sig == SIGKILL);
	close(in[1]);
	close(p[0]);
}

/* A kill reaches the whole pipeline: the command's process group. */
static void a_kill_reaches_every_process_of_a_pipeline(void)
{
	int p[2];
	CHECK(pipe2(p, O_CLOEXEC) == 0);
	char *argv[] = { "sh", "-c", "sleep 30 | sleep 31", NULL };
	struct launcher_cmd cmd = { .argv = argv, .out_fd = p[1], .in_fd = -1 };
	pid_t pid;
	CHECK_EQ(launcher_spawn(12, &cmd, &pid), 0);
	close(p[1]);
	usleep(100 * 1000);
	CHECK_EQ(launcher_kill(12, SIGKILL), 0);
	struct end *e = wait_end(12);
	CHECK(e && e->sig == SIGKILL);
	/* the sleeps held the pipe's write end: EOF means they are gone too */
	struct pollfd pf = { .fd = p[0], .events = POLLIN };
	CHECK(poll(&pf, 1, 5000) == 1);
	char c;
	CHECK(read(p[0], &c, 1) == 0);
	close(p[0]);
}

static void bad_requests_are_refused_by_the_parser(void)
{
	struct launcher_spawn_req req;
	char ok[] = "echo\0hi\0\0/tmp/out"; /* argc 2, no stdin, stdout /tmp/out */
	CHECK_EQ(launcher_parse_spawn(ok, sizeof(ok), 2, &req), 0);
	CHECK(req.argc == 2 && strcmp(req.argv[1], "hi") == 0 && !req.argv[2]);
	CHECK(!req.stdin_path && strcmp(req.stdout_path, "/tmp/out") == 0);
	char cut[] = { 'e', 'c', 'h', 'o' };
	CHECK(launcher_parse_spawn(cut, sizeof(cut), 1, &req) < 0);
	CHECK_CONTAINS(vmm_error(), "runs past the message");
	char few[] = "echo";
	CHECK(launcher_parse_spawn(few, sizeof(few), 3, &req) < 0);
	CHECK_CONTAINS(vmm_error(), "5 strings announced, 1 present");
	CHECK(launcher_parse_spawn(ok, sizeof(ok), 0, &req) < 0);
	CHECK(launcher_parse_spawn(ok, sizeof(ok), LAUNCHER_MAX_ARGS + 1, &req) < 0);
	CHECK_CONTAINS(vmm_error(), "argc 257 is not 1 to 256");
	char extra[] = "a\0\0\0junk";
	CHECK(launcher_parse_spawn(extra, sizeof(extra), 1, &req) < 0);
	CHECK_CONTAINS(vmm_error(), "bytes after the last string");
	char empty[] = "\0\0";
	CHECK(launcher_parse_spawn(empty, sizeof(empty), 1, &req) < 0);
	CHECK_CONTAINS(vmm_error(), "program name is empty");
	char *names[4];
	CHECK(launcher_parse_allow(ok, sizeof(ok), 9, names, 4) < 0);
	CHECK_CONTAINS(vmm_error(), "9 programs, at most 4");
}

static void after_an_allowlist_only_those_programs_run_and_it_cannot_change(void)
{
	const char *allowed[] = { "true" };
	CHECK_EQ(launcher_allow(allowed, 1), 0);
	char out[128];
	pid_t pid;
	char *t[] = { "true", NULL }, *abs_t[] = { "/bin/true", NULL }, *sh[] = { "sh", "-c", "echo no", NULL };
	CHECK_EQ(run(6, t, NULL, NULL, out, sizeof(out), &pid), 0);
	struct end *e = wait_end(6);
	CHECK(e && e->status == 0);
	/* the same program by another path (/bin -> /usr/bin) */
	CHECK_EQ(run(7, abs_t, NULL, NULL, out, sizeof(out), &pid), 0);
	CHECK(run(8, sh, NULL, NULL, out, sizeof(out), &pid) < 0);
	CHECK_CONTAINS(vmm_error(), "sh: not among the host commands allowed");
	const char *more[] = { "sh" };
	CHECK(launcher_allow(more, 1) < 0);
	CHECK_CONTAINS(vmm_error(), "cannot change");
	CHECK(run(9, sh, NULL, NULL, out, sizeof(out), &pid) < 0);
}

static void a_launcher_that_dies_loses_its_commands_and_a_new_one_starts(void)
{
	pid_t lpid = 0;
	char path[64];
	int in[2], p[2];
	CHECK(pipe2(in, O_CLOEXEC) == 0 && pipe2(p, O_CLOEXEC) == 0);
	char *argv[] = { "cat", NULL };
	struct launcher_cmd cmd = { .argv = argv, .out_fd = p[1], .in_fd = in[0] };
	pid_t pid;
	CHECK_EQ(launcher_spawn(10, &cmd, &pid), 0);
	close(in[0]);
	close(p[1]);
	/* the launcher is this process's child that is not the command */
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	char line[128];
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "PPid: %d", &lpid) == 1)
			break;
	if (f)
		fclose(f);
	CHECK(lpid > 0 && lpid != getpid());
	CHECK(kill(lpid, SIGKILL) == 0);
	struct end *e = wait_end(10);
	CHECK(e && e->lost);
	CHECK(launcher_fd() < 0);
	close(in[1]); /* cat, an orphan now, ends */
	close(p[0]);
	CHECK_EQ(launcher_start(on_exit_cb), 0);
	char out[64];
	char *t[] = { "sh", "-c", "echo again", NULL };
	CHECK_EQ(run(11, t, NULL, NULL, out, sizeof(out), &pid), 0);
	CHECK(strcmp(out, "again\n") == 0);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "__launcher") == 0)
		return launcher_main(atoi(argv[2]));
	signal(SIGPIPE, SIG_IGN);
	if (launcher_start(on_exit_cb) < 0) {
		fprintf(stderr, "launcher_start: %s\n", vmm_error());
		return 1;
	}
	RUN(bad_requests_are_refused_by_the_parser);
	RUN(a_command_runs_with_its_output_and_exit_status_reported);
	RUN(a_missing_program_fails_with_its_name_and_the_reason);
	RUN(redirections_are_opened_by_the_launcher);
	RUN(a_kill_reaches_the_command_and_its_signal_is_reported);
	RUN(a_kill_reaches_every_process_of_a_pipeline);
	RUN(a_launcher_that_dies_loses_its_commands_and_a_new_one_starts);
	/* last: the allowlist stays for the launcher's life */
	RUN(after_an_allowlist_only_those_programs_run_and_it_cannot_change);
	return CHECK_DONE();
}
