/* Unit tests: obs/process.c — the process_* metrics read /proc at scrape
 * time, and every file they open there is close-on-exec: a child that
 * another thread starts meanwhile (llama-server, a Lua stage's command,
 * mpirun's daemons) must not inherit the descriptor. This executable
 * defines fopen and opendir, so the library's calls (linked in statically)
 * come here: each /proc open is checked for FD_CLOEXEC as it is made, a
 * deterministic test of what a race with fork would show only at times. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sluice/metrics.h"

static atomic_int proc_opens, proc_inheritable;
/* Only the test's own scrape counts: where this executable exports fopen
 * (a sanitizer's link), shared libraries' constructors come here too
 * (libnuma reads /proc/self/status with "r" before main). */
static atomic_bool watching;
static char first_inheritable[256]; /* the first /proc path opened without it */

static void check_proc_fd(const char *path, int fd)
{
    if (!atomic_load(&watching) || !path || strncmp(path, "/proc/", 6) != 0 || fd < 0)
        return;
    atomic_fetch_add(&proc_opens, 1);
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || !(flags & FD_CLOEXEC)) {
        if (atomic_fetch_add(&proc_inheritable, 1) == 0)
            snprintf(first_inheritable, sizeof first_inheritable, "%s", path);
    }
}

FILE *fopen(const char *path, const char *mode)
{
    FILE *(*real)(const char *, const char *);
    *(void **)&real = dlsym(RTLD_NEXT, "fopen"); /* POSIX's way past ISO C's cast rule */
    FILE *f = real(path, mode);
    if (f)
        check_proc_fd(path, fileno(f));
    return f;
}

DIR *opendir(const char *path)
{
    DIR *(*real)(const char *);
    *(void **)&real = dlsym(RTLD_NEXT, "opendir");
    DIR *d = real(path);
    if (d)
        check_proc_fd(path, dirfd(d));
    return d;
}

static void scrape_opens_proc_close_on_exec(void **state)
{
    (void)state;
    sl_metrics *m;
    assert_int_equal(sl_metrics_new(NULL, &m), SL_OK); /* process metrics on by default */
    char *text;
    atomic_store(&watching, true);
    assert_int_equal(sl_metrics_render(m, &text, NULL), SL_OK);
    atomic_store(&watching, false);
    assert_non_null(strstr(text, "\nprocess_open_fds "));
    sl_metrics_text_free(text);
    sl_metrics_free(m);
    /* /proc/self/stat, /proc/stat and /proc/self/fd: the test saw them */
    assert_true(atomic_load(&proc_opens) >= 3);
    if (atomic_load(&proc_inheritable))
        fail_msg("%d of %d /proc opens are inherited by a child (no close-on-exec), the "
                 "first '%s'", atomic_load(&proc_inheritable), atomic_load(&proc_opens),
                 first_inheritable);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scrape_opens_proc_close_on_exec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
