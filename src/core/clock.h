/* core/clock.h — time for durations (monotonic seconds) and the absolute
 * deadline that pthread_cond_timedwait() takes, on the clock its condition
 * variable uses (CLOCK_REALTIME unless set with pthread_condattr_setclock). */
#ifndef SL_CORE_CLOCK_H
#define SL_CORE_CLOCK_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC: differences are durations. */
double sl_mono_s(void);

/* *out = now on `clock` plus ms milliseconds (ms >= 0). */
void sl_deadline_after(clockid_t clock, long ms, struct timespec *out);

#endif
