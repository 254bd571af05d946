/* core/clock.h — time for durations (monotonic seconds) and timed waits on
 * condition variables, all on CLOCK_MONOTONIC: a step of the wall clock
 * (an NTP step on a node, a VM resumed) neither stretches nor cuts an
 * interval. The wall clock is for times of day written out (files, logs,
 * S3 signatures, HTTP dates), never for a wait. Thread rules: none. */
#ifndef SL_CORE_CLOCK_H
#define SL_CORE_CLOCK_H

#include <pthread.h>
#include <time.h>

/* Seconds on CLOCK_MONOTONIC: differences are durations. */
double sl_mono_s(void);

/* Initializes *cv (attributes otherwise the defaults) to measure
 * pthread_cond_timedwait() deadlines on CLOCK_MONOTONIC, the clock of
 * sl_deadline_after(); every condition variable waited on with a deadline
 * is made here (tests/unit/check_timed_waits.py holds src/ to it).
 * pthread_cond_init()'s result: 0, or an errno value. */
int sl_cond_init_monotonic(pthread_cond_t *cv);

/* *out = now on CLOCK_MONOTONIC plus ms milliseconds (ms >= 0): the
 * deadline of a pthread_cond_timedwait() on a condition variable made by
 * sl_cond_init_monotonic(). */
void sl_deadline_after(long ms, struct timespec *out);

#endif
