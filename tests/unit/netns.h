/* For tests that need TAP devices: a private network namespace, so that
 * what they create never touches the host's links. */
#ifndef VMM_TEST_NETNS_H
#define VMM_TEST_NETNS_H

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NETNS_SKIP 77 /* CTest's SKIP_RETURN_CODE */

/* 0 inside a fresh namespace with /dev/net/tun usable; otherwise prints why
 * the test is skipped and returns NETNS_SKIP for main() to return. */
static inline int enter_private_netns(void)
{
	if (unshare(CLONE_NEWNET) < 0) {
		printf("skipped: needs root (unshare CLONE_NEWNET: %s)\n", strerror(errno));
		return NETNS_SKIP;
	}
	if (access("/dev/net/tun", R_OK | W_OK) < 0) {
		printf("skipped: no usable /dev/net/tun (%s)\n", strerror(errno));
		return NETNS_SKIP;
	}
	return 0;
}

#endif
