#include "i8042.h"

#include <stdint.h>
#include <string.h>

static void data_read(void *opaque, uint64_t offset, void *data, unsigned len)
{
	(void)opaque;
	(void)offset;
	memset(data, 0, len); /* no keyboard: nothing was ever queued */
}

static void status_read(void *opaque, uint64_t offset, void *data, unsigned len)
{
	(void)opaque;
	(void)offset;
	memset(data, 0, len);
	*(uint8_t *)data = I8042_STATUS_OBF; /* see i8042.h: "no controller here" */
}

static void command_write(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	const struct i8042 *k = opaque;
	(void)offset;
	(void)len;
	if (*(const uint8_t *)data == I8042_CMD_RESET && k->reset)
		k->reset(k->opaque);
}

static void ignore_write(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	(void)opaque;
	(void)offset;
	(void)data;
	(void)len;
}

const struct bus_ops i8042_data_ops = { .read = data_read, .write = ignore_write };
const struct bus_ops i8042_command_ops = { .read = status_read, .write = command_write };
