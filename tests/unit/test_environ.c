/* Unit tests: no library writes the environment while a run's threads are
 * up. setenv may move the environ array and free the old one, so a getenv
 * on another thread at that moment reads freed memory (CI, stop 34: curl's
 * getenv in a reader thread fetching from a hub crashed under ASan while an
 * engine replica, loading on its worker thread, ran ggml's first CPU init,
 * which sets KMP_BLOCKTIME). This executable defines setenv, putenv and
 * unsetenv (exported: ENABLE_EXPORTS), so every library's calls, glib's
 * g_setenv too, come here and are counted by the threads the process had
 * then: as many as when the test began is safe (one; a sanitizer may keep
 * a thread of its own from the start: ASan with soft_rss_limit_mb), more
 * is the bug, whichever thread writes. TSan starts its background thread
 * with the program's first thread and keeps it: a write after the run's
 * threads are joined would count too. The first use of each library is
 * what is tested, so this file holds one test. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "sluice/caption.h"
#include "test_util.h"

static atomic_int writes_alone, writes_beside_threads, vipshome_writes;
static int threads_at_start = 1;
static char beside_name[128]; /* the first variable written beside other threads */

/* The process's threads now (/proc/self/task). */
static int threads_now(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void count_write(const char *name)
{
    bool alone = threads_now() <= threads_at_start && syscall(SYS_gettid) == getpid();
    atomic_fetch_add(alone ? &writes_alone : &writes_beside_threads, 1);
    if (name && !strncmp(name, "VIPSHOME", 8))
        atomic_fetch_add(&vipshome_writes, 1);
    if (!alone && !beside_name[0] && name)
        snprintf(beside_name, sizeof beside_name, "%s", name);
}

int setenv(const char *name, const char *value, int overwrite)
{
    int (*real)(const char *, const char *, int);
    *(void **)&real = dlsym(RTLD_NEXT, "setenv"); /* POSIX's way past ISO C's cast rule */
    count_write(name);
    return real(name, value, overwrite);
}

int putenv(char *string)
{
    int (*real)(char *);
    *(void **)&real = dlsym(RTLD_NEXT, "putenv");
    count_write(string);
    return real(string);
}

int unsetenv(const char *name)
{
    int (*real)(const char *);
    *(void **)&real = dlsym(RTLD_NEXT, "unsetenv");
    count_write(name);
    return real(name);
}

/* A caption run on the tiny model: the engine replicas load on worker
 * threads while the reader and the decoders run. Before the fix, libvips
 * set VIPSHOME from the first decoder's thread (ggml's KMP_BLOCKTIME came
 * from the main thread by chance: the engine's sizing started it). */
static void a_run_writes_the_environment_before_its_threads_start(void **state)
{
    (void)state;
    threads_at_start = threads_now();
    unsetenv("KMP_BLOCKTIME"); /* ggml (with OpenMP) sets it when it is not set */
    unsetenv("VIPSHOME");
    atomic_store(&writes_alone, 0);
    atomic_store(&vipshome_writes, 0);
    static tu_job t;
    sl_caption_params p = tu_tiny_job(&t, 6);
    p.replicas = 2;
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    assert_int_equal(sum.rows_ok, 6);
    if (atomic_load(&writes_beside_threads))
        fail_msg("%d environment writes beside other threads, the first of %s", atomic_load(&writes_beside_threads),
                 beside_name);
    /* Not vacuous: libvips did write, with no other thread up. */
    assert_int_equal(atomic_load(&vipshome_writes), 1);
    assert_true(atomic_load(&writes_alone) >= 1);
    tu_rmtree(t.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_run_writes_the_environment_before_its_threads_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
