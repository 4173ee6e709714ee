/* The PS/2 controller, only as far as a guest without a keyboard needs it.
 * The status port always reads "output buffer full, input buffer empty":
 * Linux's probe flushes the output buffer, still finds it full after 16
 * reads and concludes at once that there is no controller (a status of 0
 * would instead make it wait about a second for a reply to "read CTR"), and
 * `reboot=k` finds the input buffer free and sends the CPU-reset command
 * (0xFE to the command port), which is reported to the VM. */
#ifndef VMM_I8042_H
#define VMM_I8042_H

#include "bus.h"

#define I8042_DATA_PORT    0x60
#define I8042_COMMAND_PORT 0x64
#define I8042_CMD_RESET    0xfe
#define I8042_STATUS_OBF   0x01 /* output buffer full */
#define I8042_STATUS_IBF   0x02 /* input buffer full */

struct i8042 {
	void (*reset)(void *opaque); /* the guest pulsed the CPU reset line */
	void *opaque;
};

/* Register once at I8042_DATA_PORT with length 1 and once at
 * I8042_COMMAND_PORT with length 1, both with the same struct i8042. */
extern const struct bus_ops i8042_data_ops;
extern const struct bus_ops i8042_command_ops;

#endif
