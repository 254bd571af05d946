/* bench/bench.h — what every benchmark measures with: the monotonic clock
 * and the process's CPU time (on a shared machine a steadier measure of work
 * than the wall clock), in seconds. */
#ifndef SL_BENCH_BENCH_H
#define SL_BENCH_BENCH_H

#include <stdlib.h>
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

/* `rows` strings of 50-70 random letters (the same every run), one after
 * the other: string r is text[off[r]..off[r + 1]). The caller frees both;
 * NULL when out of memory. */
static inline char *bench_letters(long rows, size_t **off_out)
{
    char *text = malloc((size_t)rows * 70);
    size_t *off = malloc(((size_t)rows + 1) * sizeof *off);
    if (!text || !off) {
        free(text);
        free(off);
        return NULL;
    }
    unsigned long long seed = 42;
    off[0] = 0;
    for (long r = 0; r < rows; r++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t len = 50 + (seed >> 33) % 21;
        for (size_t k = 0; k < len; k++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            text[off[r] + k] = (char)('a' + (seed >> 35) % 26);
        }
        off[r + 1] = off[r] + len;
    }
    *off_out = off;
    return text;
}

#endif
