/* The console buffer between vCPU threads, the sink fd and scripts. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "check.h"
#include "console.h"

static void put_str(struct console *c, const char *s)
{
	console_put(c, (const uint8_t *)s, strlen(s));
}

static void output_is_peeked_then_consumed(void)
{
	struct console c;
	CHECK(console_init(&c, -1, -1) == 0);
	put_str(&c, "hello ");
	put_str(&c, "world");
	char buf[64];
	size_t n = console_peek(&c, buf, sizeof(buf));
	CHECK_EQ(n, 11);
	CHECK(memcmp(buf, "hello world", 11) == 0);
	console_consume(&c, 6);
	n = console_peek(&c, buf, sizeof(buf));
	CHECK_EQ(n, 5);
	CHECK(memcmp(buf, "world", 5) == 0);
	console_consume(&c, 100); /* more than there is: clamps */
	CHECK_EQ(console_unread(&c), 0);
	console_destroy(&c);
}

static void new_output_signals_the_eventfd(void)
{
	int efd = eventfd(0, EFD_NONBLOCK);
	struct console c;
	CHECK(console_init(&c, -1, efd) == 0);
	uint64_t v = 0;
	CHECK(read(efd, &v, sizeof(v)) < 0); /* nothing yet */
	put_str(&c, "x");
	CHECK(read(efd, &v, sizeof(v)) == sizeof(v));
	CHECK(v >= 1);
	console_destroy(&c);
	close(efd);
}

static void flush_writes_everything_to_the_sink_once(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	struct console c;
	CHECK(console_init(&c, p[1], -1) == 0);
	put_str(&c, "line 1\n");
	CHECK(console_flush(&c) == 0);
	put_str(&c, "line 2\n");
	CHECK(console_flush(&c) == 0);
	CHECK(console_flush(&c) == 0);
	char buf[64] = { 0 };
	ssize_t n = read(p[0], buf, sizeof(buf) - 1);
	CHECK_EQ(n, 14);
	CHECK(strcmp(buf, "line 1\nline 2\n") == 0);
	/* scripts still see all of it: the sink and the capture are independent */
	CHECK_EQ(console_unread(&c), 14);
	console_destroy(&c);
	close(p[0]);
	close(p[1]);
}

static void flush_to_a_closed_pipe_reports_the_error(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	close(p[0]);
	signal(SIGPIPE, SIG_IGN);
	struct console c;
	CHECK(console_init(&c, p[1], -1) == 0);
	put_str(&c, "lost");
	CHECK(console_flush(&c) == -1);
	console_destroy(&c);
	close(p[1]);
}

static void overflow_drops_the_oldest_and_counts_it(void)
{
	struct console c;
	CHECK(console_init(&c, -1, -1) == 0);
	size_t big = CONSOLE_CAPTURE_MAX + 1000;
	uint8_t *data = malloc(big);
	for (size_t i = 0; i < big; i++)
		data[i] = (uint8_t)('a' + i % 26);
	console_put(&c, data, big);
	CHECK_EQ(console_unread(&c), CONSOLE_CAPTURE_MAX);
	CHECK_EQ(c.dropped, 1000);
	char first;
	CHECK_EQ(console_peek(&c, &first, 1), 1);
	CHECK_EQ((uint8_t)first, data[1000]); /* the newest CONSOLE_CAPTURE_MAX bytes stay */
	free(data);
	console_destroy(&c);
}

static void ring_wraparound_keeps_order(void)
{
	struct console c;
	CHECK(console_init(&c, -1, -1) == 0);
	size_t chunk = CONSOLE_CAPTURE_MAX / 3;
	uint8_t *data = calloc(1, chunk);
	for (int round = 0; round < 4; round++) {
		console_put(&c, data, chunk);
		console_consume(&c, chunk);
	}
	put_str(&c, "ABCDEF");
	char buf[8];
	CHECK_EQ(console_peek(&c, buf, sizeof(buf)), 6);
	CHECK(memcmp(buf, "ABCDEF", 6) == 0);
	free(data);
	console_destroy(&c);
}

/* The line editor's guard: told once before and once after a flush that
 * writes to stdout, in order around the output; never for other sinks or
 * for a flush with nothing to write. */
static char guard_log[64];
static int guard_pipe = -1;

static void guard_note(char what)
{
	/* what the sink holds so far is drained, so the log shows the order */
	char buf[64];
	ssize_t n = read(guard_pipe, buf, sizeof(buf));
	size_t len = strlen(guard_log);
	if (n > 0 && len + 1 < sizeof(guard_log))
		guard_log[len++] = 'W';
	if (len + 1 < sizeof(guard_log))
		guard_log[len] = what;
}

static void guard_before(void) { guard_note('['); }
static void guard_after(void) { guard_note(']'); }

static void a_flush_to_stdout_is_guarded_for_the_prompt(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	CHECK(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
	guard_pipe = p[0];
	int saved = dup(STDOUT_FILENO);
	CHECK(dup2(p[1], STDOUT_FILENO) == STDOUT_FILENO);
	console_set_sink_guard(guard_before, guard_after);

	struct console c;
	CHECK(console_init(&c, STDOUT_FILENO, -1) == 0);
	CHECK(console_flush(&c) == 0); /* nothing to write: no guard */
	CHECK(strcmp(guard_log, "") == 0);
	put_str(&c, "guest output\n");
	CHECK(console_flush(&c) == 0);
	CHECK(strcmp(guard_log, "[W]") == 0);
	console_destroy(&c);

	/* another sink is not the prompt's terminal */
	guard_log[0] = '\0';
	CHECK(console_init(&c, p[1], -1) == 0);
	put_str(&c, "to a pipe");
	CHECK(console_flush(&c) == 0);
	CHECK(strcmp(guard_log, "") == 0);
	console_destroy(&c);

	console_set_sink_guard(NULL, NULL);
	CHECK(dup2(saved, STDOUT_FILENO) == STDOUT_FILENO);
	close(saved);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	RUN(output_is_peeked_then_consumed);
	RUN(new_output_signals_the_eventfd);
	RUN(flush_writes_everything_to_the_sink_once);
	RUN(flush_to_a_closed_pipe_reports_the_error);
	RUN(overflow_drops_the_oldest_and_counts_it);
	RUN(ring_wraparound_keeps_order);
	RUN(a_flush_to_stdout_is_guarded_for_the_prompt);
	return CHECK_DONE();
}
