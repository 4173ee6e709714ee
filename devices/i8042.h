/* The PS/2 controller, only as far as a guest without a keyboard needs it:
 * the status port reads "nothing to read, ready for input", so Linux's probe
 * finds no controller quickly, and the CPU-reset command (0xFE written to the
 * command port, what `reboot=k` does) is reported to the VM. */
#ifndef VMM_I8042_H
#define VMM_I8042_H

#include "bus.h"

#define I8042_DATA_PORT    0x60
#define I8042_COMMAND_PORT 0x64
#define I8042_CMD_RESET    0xfe

struct i8042 {
	void (*reset)(void *opaque); /* the guest pulsed the CPU reset line */
	void *opaque;
};

/* Register once at I8042_DATA_PORT with length 1 and once at
 * I8042_COMMAND_PORT with length 1, both with the same struct i8042. */
extern const struct bus_ops i8042_data_ops;
extern const struct bus_ops i8042_command_ops;

#endif
