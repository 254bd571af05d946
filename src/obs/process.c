/* obs/process.c — the standard process_* metrics, named and explained as
 * the Prometheus client libraries do, read from /proc at scrape time by
 * callback children: CPU seconds, resident and virtual memory, start time,
 * open and maximum file descriptors. Linux only; where /proc cannot be read
 * a value is NaN.
 * CLOEXEC: a scrape runs on the server's thread while others may start a
 * child (llama-server, a Lua stage's command); every file opened here is
 * close-on-exec ("e"; opendir's always is), so none is inherited. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "obs/metrics_impl.h"

enum { STAT_UTIME, STAT_STIME, STAT_STARTTIME, STAT_VSIZE, STAT_RSS, STAT_N };

/* Reads fields 14, 15, 22, 23 and 24 of /proc/self/stat. */
static bool read_self_stat(double out[STAT_N])
{
    char text[1024];
    FILE *fp = fopen("/proc/self/stat", "re"); /* CLOEXEC above */
    if (!fp)
        return false;
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    /* The command name (field 2) is in parentheses and may hold spaces. */
    char *p = strrchr(text, ')');
    if (!p)
        return false;
    p++;
    /* Field 3 is the first token after ')'. */
    static const int want[STAT_N] = {14, 15, 22, 23, 24};
    int field = 3, found = 0;
    char *save = NULL;
    for (char *tok = strtok_r(p, " \n", &save); tok && found < STAT_N;
         tok = strtok_r(NULL, " \n", &save), field++)
        if (field == want[found])
            out[found++] = strtod(tok, NULL);
    return found == STAT_N;
}

static double stat_field(int i)
{
    double v[STAT_N];
    return read_self_stat(v) ? v[i] : NAN;
}

static double cpu_seconds(void *user)
{
    double v[STAT_N];
    if (!read_self_stat(v))
        return NAN;
    return (v[STAT_UTIME] + v[STAT_STIME]) / (double)sysconf(_SC_CLK_TCK);
}

static double resident_bytes(void *user)
{
    return stat_field(STAT_RSS) * (double)sysconf(_SC_PAGESIZE);
}

static double virtual_bytes(void *user) { return stat_field(STAT_VSIZE); }

static double boot_time(void)
{
    FILE *fp = fopen("/proc/stat", "re");
    if (!fp)
        return NAN;
    char line[256];
    double bt = NAN;
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "btime ", 6) == 0) {
            bt = strtod(line + 6, NULL);
            break;
        }
    fclose(fp);
    return bt;
}

static double start_time(void *user)
{
    return boot_time() + stat_field(STAT_STARTTIME) / (double)sysconf(_SC_CLK_TCK);
}

static double open_fds(void *user)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return NAN;
    double n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* not the one opendir() holds */
}

static double max_fds(void *user)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

sl_status sl_obs_process_register(sl_metrics *m)
{
    static const struct {
        const char *name, *help;
        sl_metrics_type type;
        sl_metrics_value_fn fn;
    } defs[] = {
        {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
         SL_METRICS_COUNTER, cpu_seconds},
        {"process_resident_memory_bytes", "Resident memory size in bytes.", SL_METRICS_GAUGE,
         resident_bytes},
        {"process_virtual_memory_bytes", "Virtual memory size in bytes.", SL_METRICS_GAUGE,
         virtual_bytes},
        {"process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
         SL_METRICS_GAUGE, start_time},
        {"process_open_fds", "Number of open file descriptors.", SL_METRICS_GAUGE, open_fds},
        {"process_max_fds", "Maximum number of open file descriptors.", SL_METRICS_GAUGE,
         max_fds},
    };
    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) {
        sl_metrics_family_params p = sl_metrics_family_default_params();
        p.type = defs[i].type;
        p.name = defs[i].name;
        p.help = defs[i].help;
        sl_metrics_family *f;
        sl_status st = sl_metrics_register(m, &p, &f);
        if (st != SL_OK)
            return st;
        sl_metrics_child *c = sl_metrics_with(f);
        if (!c)
            return SL_ERR_NOMEM;
        sl_metrics_child_set_fn(c, defs[i].fn, NULL);
    }
    return SL_OK;
}
