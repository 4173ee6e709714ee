/* What the standalone drivers of the fuzz targets share: their command line,
 * `NAME [-runs=N] [-seed=S]`. */
#ifndef VMM_FUZZ_DRIVER_H
#define VMM_FUZZ_DRIVER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0 with *runs and *seed set (defaults kept), or 2 after a usage line. */
static inline int fuzz_driver_args(int argc, char **argv, const char *name, unsigned long *runs, unsigned long *seed)
{
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "-runs=", 6))
			*runs = strtoul(argv[i] + 6, NULL, 10);
		else if (!strncmp(argv[i], "-seed=", 6))
			*seed = strtoul(argv[i] + 6, NULL, 10);
		else {
			fprintf(stderr, "usage: %s [-runs=N] [-seed=S]\n", name);
			return 2;
		}
	}
	return 0;
}

#endif
