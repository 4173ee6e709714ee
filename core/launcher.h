/* The host-command launcher: a small process that starts the VMM's host
 * commands (vmm.command, vmm.background) on its behalf.
 *
 * seccomp filters are inherited across fork and exec, so a command forked
 * by a filtered VMM would run under the VMM's filter (ping, dd, md5sum do
 * not live by a VMM's rules), and a locked main thread may not fork at all.
 * The launcher is exec'd from the VMM's own binary (`vmm __launcher FD`)
 * before any filter the main thread gets, and from then on the VMM asks it
 * over a socketpair: SPAWN (argv, redirections, the output pipe as an fd),
 * KILL; it answers SPAWNED (pid, or what failed) and sends EXITED (status)
 * when a command ends.
 *
 * A launcher that runs whatever it is asked would hand a compromised VMM
 * back everything its filter took away; so an allowlist can be set once
 * (launcher_allow, at lock time) and from then on the launcher runs only
 * those programs, whatever the VMM sends. The launcher does not trust the
 * VMM's messages: launcher_parse_spawn bounds-checks them (and has a fuzz
 * target, tests/fuzz/fuzz_launcher.c).
 *
 * One launcher per VMM process; the calls below are for the main thread. */
#ifndef VMM_LAUNCHER_H
#define VMM_LAUNCHER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LAUNCHER_MAX_ARGS 256
#define LAUNCHER_MAX_MSG 65536

/* What to run: argv (NULL-terminated, 1 to LAUNCHER_MAX_ARGS strings);
 * stdin_path / stdout_path NULL or a file the launcher opens (stdout
 * created or truncated); out_fd receives stdout (unless stdout_path) and
 * stderr; in_fd, or -1, is stdin (exclusive with stdin_path; without
 * both, stdin is /dev/null). */
struct launcher_cmd {
	char *const *argv;
	const char *stdin_path, *stdout_path;
	int out_fd, in_fd;
};

/* Called for each command that ended, from launcher_dispatch or from inside
 * launcher_spawn: status is its exit code, or -1 with sig the signal that
 * killed it; lost is set when the launcher itself ended first (then the
 * command's fate is unknown). */
typedef void launcher_exit_fn(uint32_t id, int status, int sig, int lost);

/* Starts the launcher (exec of /proc/self/exe) if it is not running.
 * on_exit gets the commands' ends. -1 with a message on failure. */
int launcher_start(launcher_exit_fn *on_exit);
/* The VMM's end of the socket (for an fd watcher), or -1 if not started. */
int launcher_fd(void);

/* Starts cmd under id: 0 and *pid, or -1 with a message (the program not
 * found or not allowed, a redirection that cannot be opened, the launcher
 * gone). Waits for the launcher's answer. */
int launcher_spawn(uint32_t id, const struct launcher_cmd *cmd, pid_t *pid);
/* Sends sig to command id if it still runs. -1 with a message if the
 * launcher is gone. */
int launcher_kill(uint32_t id, int sig);
/* Reads what the launcher sent without blocking and calls on_exit for each
 * end. 0, or -1 with a message when the launcher has gone (every command
 * still known is reported lost; the next launcher_start starts a new one). */
int launcher_dispatch(void);

/* From now on only these programs run (names looked up in PATH, or paths;
 * compared after resolving symlinks). Once set, the list cannot change:
 * a second call fails. n == 0 forbids every command. */
int launcher_allow(const char *const *programs, size_t n);

/* ---- the launcher's side ---- */

/* The launcher process: serves fd until the VMM closes it. Returns the exit
 * status. */
int launcher_main(int fd);

/* A SPAWN message's payload decoded in place: argc strings, then the stdin
 * and stdout paths (empty: none). 0, or -1 with a message naming what is
 * wrong (no string may run past the end, argc within bounds). The strings
 * point into buf, which must end in a NUL (the parser checks). */
struct launcher_spawn_req {
	int argc;
	char *argv[LAUNCHER_MAX_ARGS + 1];
	const char *stdin_path, *stdout_path; /* NULL when empty */
};
int launcher_parse_spawn(char *buf, size_t len, uint32_t argc, struct launcher_spawn_req *req);

/* An ALLOW message's payload (n NUL-terminated names) decoded the same way:
 * 0 and up to max names in names[], or -1 with a message. */
int launcher_parse_allow(char *buf, size_t len, uint32_t n, char **names, size_t max);

#endif
