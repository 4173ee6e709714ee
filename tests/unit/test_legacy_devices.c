/* The CMOS RTC and the i8042 reset line, driven through the port bus. */
#include <stdint.h>

#include "bus.h"
#include "check.h"
#include "i8042.h"
#include "rtc.h"

static uint8_t inb(struct bus *b, uint16_t port)
{
	uint8_t v;
	bus_read(b, port, &v, 1);
	return v;
}

static void outb(struct bus *b, uint16_t port, uint8_t v)
{
	bus_write(b, port, &v, 1);
}

static int from_bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0xf);
}

static bool is_bcd(uint8_t v)
{
	return (v >> 4) < 10 && (v & 0xf) < 10;
}

static uint8_t cmos(struct bus *b, uint8_t index)
{
	outb(b, RTC_PORT_BASE, index);
	return inb(b, RTC_PORT_BASE + 1);
}

static void rtc_reports_a_valid_bcd_date_and_no_update_in_progress(void)
{
	struct bus b;
	bus_init(&b, "pio");
	struct rtc *r = rtc_new();
	CHECK(bus_register(&b, RTC_PORT_BASE, RTC_PORTS, &rtc_bus_ops, r, "rtc") == 0);
	CHECK((cmos(&b, 0x0a) & 0x80) == 0); /* UIP clear, or Linux would spin */
	CHECK(cmos(&b, 0x0b) & 0x02);          /* 24-hour mode */
	CHECK(cmos(&b, 0x0d) & 0x80);          /* valid RAM and time */
	uint8_t sec = cmos(&b, 0x00), min = cmos(&b, 0x02), hour = cmos(&b, 0x04);
	uint8_t day = cmos(&b, 0x07), month = cmos(&b, 0x08), year = cmos(&b, 0x09);
	uint8_t century = cmos(&b, 0x32);
	CHECK(is_bcd(sec) && from_bcd(sec) < 61);
	CHECK(is_bcd(min) && from_bcd(min) < 60);
	CHECK(is_bcd(hour) && from_bcd(hour) < 24);
	CHECK(is_bcd(day) && from_bcd(day) >= 1 && from_bcd(day) <= 31);
	CHECK(is_bcd(month) && from_bcd(month) >= 1 && from_bcd(month) <= 12);
	CHECK(is_bcd(year));
	CHECK(from_bcd(century) >= 20);
	bus_destroy(&b);
	rtc_free(r);
}

static void rtc_keeps_nvram_and_ignores_the_nmi_bit_and_read_only_bits(void)
{
	struct bus b;
	bus_init(&b, "pio");
	struct rtc *r = rtc_new();
	CHECK(bus_register(&b, RTC_PORT_BASE, RTC_PORTS, &rtc_bus_ops, r, "rtc") == 0);
	outb(&b, RTC_PORT_BASE, 0x80 | 0x40); /* NMI-disable bit set */
	outb(&b, RTC_PORT_BASE + 1, 0x5a);
	CHECK_EQ(cmos(&b, 0x40), 0x5a);
	outb(&b, RTC_PORT_BASE, 0x0a);
	outb(&b, RTC_PORT_BASE + 1, 0xff); /* the guest cannot set UIP */
	CHECK((cmos(&b, 0x0a) & 0x80) == 0);
	outb(&b, RTC_PORT_BASE, 0x0d);
	outb(&b, RTC_PORT_BASE + 1, 0x00); /* register D is read-only */
	CHECK(cmos(&b, 0x0d) & 0x80);
	bus_destroy(&b);
	rtc_free(r);
}

static int resets;
static void count_reset(void *opaque)
{
	(void)opaque;
	resets++;
}

/* Linux's i8042_flush(): reads data while OBF is set, gives up after 16
 * bytes and then reports "No controller found" without any timeout. */
static void i8042_looks_absent_to_linux_flush_within_16_reads(void)
{
	struct bus b;
	bus_init(&b, "pio");
	struct i8042 k = { .reset = count_reset };
	CHECK(bus_register(&b, I8042_DATA_PORT, 1, &i8042_data_ops, &k, "i8042-data") == 0);
	CHECK(bus_register(&b, I8042_COMMAND_PORT, 1, &i8042_command_ops, &k, "i8042-command") == 0);
	int count = 0;
	while ((inb(&b, I8042_COMMAND_PORT) & I8042_STATUS_OBF) && count < 16 + 1) {
		inb(&b, I8042_DATA_PORT);
		count++;
	}
	CHECK_EQ(count, 17); /* still full after the buffer size: not a controller */
	bus_destroy(&b);
}

static void i8042_reports_only_the_reset_command(void)
{
	struct bus b;
	bus_init(&b, "pio");
	struct i8042 k = { .reset = count_reset };
	CHECK(bus_register(&b, I8042_DATA_PORT, 1, &i8042_data_ops, &k, "i8042-data") == 0);
	CHECK(bus_register(&b, I8042_COMMAND_PORT, 1, &i8042_command_ops, &k, "i8042-command") == 0);
	/* input buffer free (reboot=k may write), output always "full" */
	CHECK_EQ(inb(&b, I8042_COMMAND_PORT) & (I8042_STATUS_OBF | I8042_STATUS_IBF), I8042_STATUS_OBF);
	outb(&b, I8042_COMMAND_PORT, 0x20);                /* read CTR: ignored */
	outb(&b, I8042_DATA_PORT, I8042_CMD_RESET);        /* 0xfe on the data port: not a reset */
	CHECK_EQ(resets, 0);
	outb(&b, I8042_COMMAND_PORT, I8042_CMD_RESET);
	CHECK_EQ(resets, 1);
	bus_destroy(&b);
}

int main(void)
{
	RUN(rtc_reports_a_valid_bcd_date_and_no_update_in_progress);
	RUN(rtc_keeps_nvram_and_ignores_the_nmi_bit_and_read_only_bits);
	RUN(i8042_looks_absent_to_linux_flush_within_16_reads);
	RUN(i8042_reports_only_the_reset_command);
	return CHECK_DONE();
}
