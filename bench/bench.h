/* bench/bench.h — what every benchmark measures with: the monotonic clock
 * and the process's CPU time (on a shared machine a steadier measure of work
 * than the wall clock), in seconds. */
#ifndef SL_BENCH_BENCH_H
#define SL_BENCH_BENCH_H

#include <sys/resource.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User and system seconds of this process, all threads. */
static inline double bench_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

#endif
