#include "qsd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

#define QSD "qemu-storage-daemon"
#define MAX_DAEMONS 16

static pid_t running[MAX_DAEMONS]; /* killed at exit */

static void kill_all(void)
{
	for (unsigned i = 0; i < MAX_DAEMONS; i++)
		if (running[i] > 0) {
			kill(running[i], SIGKILL);
			waitpid(running[i], NULL, 0);
			running[i] = 0;
		}
}

bool qsd_available(void)
{
	return system("command -v " QSD " >/dev/null 2>&1") == 0;
}

static bool accepts(const char *socket_path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", socket_path);
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd); /* the daemon then re-listens for the next client */
	return ok;
}

int qsd_start(struct qsd *q, const char *image, uint64_t size, const char *socket_path)
{
	static bool registered;
	memset(q, 0, sizeof(*q));
	if (strlen(socket_path) >= sizeof(q->socket) || strlen(image) >= sizeof(q->image))
		return vmm_fail("qsd: path too long: %s", strlen(image) >= sizeof(q->image) ? image : socket_path);
	snprintf(q->image, sizeof(q->image), "%s", image);
	snprintf(q->socket, sizeof(q->socket), "%s", socket_path);
	int fd = open(image, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return vmm_fail_errno("qsd: %s", image);
	if (ftruncate(fd, (off_t)size)) {
		vmm_fail_errno("qsd: ftruncate %s", image);
		close(fd);
		return -1;
	}
	close(fd);
	unlink(socket_path);

	char blockdev[400], export[300];
	snprintf(blockdev, sizeof(blockdev), "driver=file,node-name=disk0,filename=%s", image);
	snprintf(export, sizeof(export),
		 "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=%s,writable=on", socket_path);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return vmm_fail_errno("qsd: fork");
	if (pid == 0) {
		/* dies with the test even when it aborts (atexit does not run
		 * then): a daemon left behind holds the test's stdout, and ctest
		 * waits for that pipe to close */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
			_exit(127);
		int null = open("/dev/null", O_RDWR);
		if (null >= 0)
			dup2(null, STDIN_FILENO);
		execlp(QSD, QSD, "--blockdev", blockdev, "--export", export, (char *)NULL);
		fprintf(stderr, "qsd: exec " QSD ": %s\n", strerror(errno));
		_exit(127);
	}
	if (!registered) {
		atexit(kill_all);
		registered = true;
	}
	for (unsigned i = 0; i < MAX_DAEMONS; i++)
		if (running[i] == 0) {
			running[i] = pid;
			break;
		}
	q->pid = pid;
	for (int tries = 0; tries < 200; tries++) { /* 10 s */
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			q->pid = 0;
			return vmm_fail("qsd: " QSD " exited (status %d) before serving %s", status, socket_path);
		}
		if (accepts(socket_path))
			return 0;
		struct timespec t = { 0, 50 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
	qsd_kill(q);
	return vmm_fail("qsd: %s did not appear in 10 s", socket_path);
}

void qsd_kill(struct qsd *q)
{
	if (q->pid <= 0)
		return;
	kill(q->pid, SIGKILL);
	waitpid(q->pid, NULL, 0);
	for (unsigned i = 0; i < MAX_DAEMONS; i++)
		if (running[i] == q->pid)
			running[i] = 0;
	q->pid = 0;
}
