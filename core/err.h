/* Error reporting for the core: a function that fails returns -1 (or NULL)
 * and leaves a one-line message, readable with vmm_error(), in a per-thread
 * buffer. Messages name what failed and, for syscalls, carry strerror(errno). */
#ifndef VMM_ERR_H
#define VMM_ERR_H

#include <stdarg.h>

/* The last error message of this thread ("" if none). */
const char *vmm_error(void);

/* Sets the message; returns -1 so callers can `return vmm_fail(...)`. */
int vmm_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Like vmm_fail, appending ": <strerror(errno)>" (errno read on entry). */
int vmm_fail_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prefixes the current message with "<fmt>: " to add context while an
 * error travels up. Returns -1. */
int vmm_fail_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
