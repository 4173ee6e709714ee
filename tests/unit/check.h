/* A minimal test harness: CHECK records a failure and goes on; each test file
 * lists its cases in main() with RUN(), and exits non-zero if any failed. */
#ifndef VMM_CHECK_H
#define VMM_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_cases;

#define CHECK(cond) do { if (!(cond)) { check_failures++; \
	fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_EQ(a, b) do { unsigned long long _a = (unsigned long long)(a), _b = (unsigned long long)(b); \
	if (_a != _b) { check_failures++; fprintf(stderr, "  %s:%d: %s == %s failed: 0x%llx != 0x%llx\n", \
	__FILE__, __LINE__, #a, #b, _a, _b); } } while (0)
#define CHECK_CONTAINS(hay, needle) do { const char *_h = (hay); if (!_h || !strstr(_h, (needle))) { \
	check_failures++; fprintf(stderr, "  %s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__, \
	_h ? _h : "(null)", (needle)); } } while (0)
#define RUN(fn) do { int _before = check_failures; check_cases++; fn(); \
	printf("%s %s\n", check_failures == _before ? "ok  " : "FAIL", #fn); } while (0)
#define CHECK_DONE() (printf("%d cases, %d failed checks\n", check_cases, check_failures), check_failures ? 1 : 0)

#endif
