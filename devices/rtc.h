/* MC146818 CMOS real-time clock at ports 0x70 (index) / 0x71 (data): the
 * date and time in BCD from the host clock (UTC), status registers saying
 * "no update in progress, valid", and the rest of the 128 bytes as plain
 * NVRAM. Linux reads the wall clock from it at boot. No alarm, no IRQ 8. */
#ifndef VMM_RTC_H
#define VMM_RTC_H

#include "bus.h"

#define RTC_PORT_BASE 0x70
#define RTC_PORTS     2

struct rtc;

struct rtc *rtc_new(void);
void rtc_free(struct rtc *r);

extern const struct bus_ops rtc_bus_ops;

#endif
