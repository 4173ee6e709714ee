#include "rtc.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "migstream.h"

enum {
	RTC_SECONDS = 0x00, RTC_MINUTES = 0x02, RTC_HOURS = 0x04, RTC_WEEKDAY = 0x06,
	RTC_DAY = 0x07, RTC_MONTH = 0x08, RTC_YEAR = 0x09,
	RTC_REG_A = 0x0a, RTC_REG_B = 0x0b, RTC_REG_C = 0x0c, RTC_REG_D = 0x0d,
	RTC_CENTURY = 0x32,
};

#define RTC_REG_A_DEFAULT 0x26 /* 32.768 kHz time base, 1024 Hz rate, UIP clear */
#define RTC_REG_B_24H     0x02 /* 24-hour mode, BCD, no interrupts */
#define RTC_REG_D_VRT     0x80 /* valid RAM and time */

struct rtc {
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t nvram[128];
};

struct rtc *rtc_new(void)
{
	struct rtc *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	r->nvram[RTC_REG_A] = RTC_REG_A_DEFAULT;
	r->nvram[RTC_REG_B] = RTC_REG_B_24H;
	r->nvram[RTC_REG_D] = RTC_REG_D_VRT;
	return r;
}

void rtc_free(struct rtc *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static uint8_t bcd(int v)
{
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t clock_register(uint8_t index)
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	switch (index) {
	case RTC_SECONDS: return bcd(tm.tm_sec);
	case RTC_MINUTES: return bcd(tm.tm_min);
	case RTC_HOURS:   return bcd(tm.tm_hour);
	case RTC_WEEKDAY: return bcd(tm.tm_wday + 1);
	case RTC_DAY:     return bcd(tm.tm_mday);
	case RTC_MONTH:   return bcd(tm.tm_mon + 1);
	case RTC_YEAR:    return bcd(tm.tm_year % 100);
	case RTC_CENTURY: return bcd((tm.tm_year + 1900) / 100);
	default:          return 0;
	}
}

static bool is_clock(uint8_t index)
{
	return index <= RTC_YEAR || index == RTC_CENTURY;
}

static void rtc_read(void *opaque, uint64_t offset, void *data, unsigned len)
{
	struct rtc *r = opaque;
	uint8_t v = 0xff;
	memset(data, 0, len);
	pthread_mutex_lock(&r->lock);
	if (offset == 0)
		v = r->index;
	else if (is_clock(r->index))
		v = clock_register(r->index);
	else if (r->index == RTC_REG_C)
		v = 0; /* no interrupt flags; reading clears them */
	else
		v = r->nvram[r->index];
	pthread_mutex_unlock(&r->lock);
	*(uint8_t *)data = v;
}

static void rtc_write(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	struct rtc *r = opaque;
	uint8_t v = *(const uint8_t *)data;
	(void)len;
	pthread_mutex_lock(&r->lock);
	if (offset == 0)
		r->index = v & 0x7f; /* bit 7 gates NMI on a PC */
	else if (!is_clock(r->index) && r->index != RTC_REG_C && r->index != RTC_REG_D)
		r->nvram[r->index] = r->index == RTC_REG_A ? (v & 0x7f) : v; /* UIP is read-only */
	pthread_mutex_unlock(&r->lock);
}

const struct bus_ops rtc_bus_ops = { .read = rtc_read, .write = rtc_write };

int rtc_save(struct rtc *r, struct mig_buf *b)
{
	pthread_mutex_lock(&r->lock);
	mig_put_u8(b, r->index);
	mig_put_bytes(b, r->nvram, sizeof(r->nvram));
	pthread_mutex_unlock(&r->lock);
	return mig_buf_ok(b, "rtc");
}

int rtc_load(struct rtc *r, const void *p, size_t len)
{
	struct mig_cursor c;
	mig_cursor_init(&c, p, len, "rtc");
	uint8_t index = mig_get_u8(&c);
	uint8_t nvram[sizeof(r->nvram)];
	mig_get_bytes(&c, nvram, sizeof(nvram));
	if (mig_cursor_finish(&c))
		return -1;
	if (index > 0x7f)
		return vmm_fail("rtc: index register 0x%02x (0..0x7f)", index);
	if (nvram[RTC_REG_A] & 0x80)
		return vmm_fail("rtc: register A 0x%02x has the read-only UIP bit set", nvram[RTC_REG_A]);
	if (nvram[RTC_REG_C] != 0)
		return vmm_fail("rtc: register C is 0x%02x (always 0 here)", nvram[RTC_REG_C]);
	if (nvram[RTC_REG_D] != RTC_REG_D_VRT)
		return vmm_fail("rtc: register D is 0x%02x (always 0x%02x here)", nvram[RTC_REG_D], RTC_REG_D_VRT);
	pthread_mutex_lock(&r->lock);
	r->index = index;
	memcpy(r->nvram, nvram, sizeof(nvram));
	pthread_mutex_unlock(&r->lock);
	return 0;
}
