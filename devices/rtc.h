/* MC146818 CMOS real-time clock at ports 0x70 (index) / 0x71 (data): the
 * date and time in BCD from the host clock (UTC), status registers saying
 * "no update in progress, valid", and the rest of the 128 bytes as plain
 * NVRAM. Linux reads the wall clock from it at boot. No alarm, no IRQ 8. */
#ifndef VMM_RTC_H
#define VMM_RTC_H

#include <stddef.h>

#include "bus.h"

#define RTC_PORT_BASE 0x70
#define RTC_PORTS     2

struct rtc;

struct rtc *rtc_new(void);
void rtc_free(struct rtc *r);

extern const struct bus_ops rtc_bus_ops;

/* Migration (MIG_RTC). The payload: u8 index (0..127), then the 128 CMOS
 * bytes. The date and time are not in it: they are read from the host
 * clock, which the target shares. rtc_load checks the index and the
 * registers the guest cannot write (A's UIP bit clear, C 0, D "valid")
 * and the length before it changes anything; -1 with a message. */
struct mig_buf;
int rtc_save(struct rtc *r, struct mig_buf *b);
int rtc_load(struct rtc *r, const void *p, size_t len);

#endif
