#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char errbuf[1024];

const char *vmm_error(void)
{
	return errbuf;
}

int vmm_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	return -1;
}

int vmm_fail_errno(const char *fmt, ...)
{
	int saved = errno;
	char msg[sizeof(errbuf) - 64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(errbuf, sizeof(errbuf), "%s: %s", msg, strerror(saved));
	errno = saved;
	return -1;
}

int vmm_fail_context(const char *fmt, ...)
{
	char ctx[512], old[sizeof(errbuf)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx, sizeof(ctx), fmt, ap);
	va_end(ap);
	memcpy(old, errbuf, sizeof(old));
	size_t n = strlen(ctx);
	if (n > sizeof(errbuf) - 3)
		n = sizeof(errbuf) - 3;
	memcpy(errbuf, ctx, n);
	memcpy(errbuf + n, ": ", 2);
	size_t room = sizeof(errbuf) - n - 3, len = strnlen(old, room);
	memcpy(errbuf + n + 2, old, len);
	errbuf[n + 2 + len] = '\0';
	return -1;
}
