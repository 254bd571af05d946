/* Unit tests: no library writes the environment while a run's threads are
 * up. setenv may move the environ array and free the old one, so a getenv
 * on another thread at that moment reads freed memory (CI, stop 34: curl's
 * getenv in a reader thread fetching from a hub crashed under ASan while an
 * engine replica, loading on its worker thread, ran ggml's first CPU init,
 * which sets KMP_BLOCKTIME). This executable defines setenv, putenv and
 * unsetenv (exported: ENABLE_EXPORTS), so every library's calls, glib's
 * g_setenv too, come here and are counted by thread; each test runs in a
 * process of its own (the first use of each library is what is tested). */
#define _GNU_SOURCE
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

static atomic_int writes_on_main, writes_off_main, kmp_writes;
static char off_main_name[128]; /* the first variable written off the main thread */

static void count_write(const char *name)
{
    bool on_main = syscall(SYS_gettid) == getpid();
    atomic_fetch_add(on_main ? &writes_on_main : &writes_off_main, 1);
    if (name && !strncmp(name, "KMP_BLOCKTIME", 13))
        atomic_fetch_add(&kmp_writes, 1);
    if (!on_main && !off_main_name[0] && name)
        snprintf(off_main_name, sizeof off_main_name, "%s", name);
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
 * threads while the reader and the decoders run. Before the fix, ggml's
 * setenv came from a replica's thread. */
static void a_run_writes_the_environment_before_its_threads_start(void **state)
{
    (void)state;
    unsetenv("KMP_BLOCKTIME"); /* ggml sets it only when it is not set */
    atomic_store(&writes_on_main, 0);
    atomic_store(&kmp_writes, 0);
    static tu_job t;
    sl_caption_params p = tu_tiny_job(&t, 6);
    p.replicas = 2;
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    assert_int_equal(sum.rows_ok, 6);
    if (atomic_load(&writes_off_main))
        fail_msg("%d environment writes off the main thread, the first of %s",
                 atomic_load(&writes_off_main), off_main_name);
    /* Not vacuous: ggml (built with OpenMP) did write, on this thread. */
    assert_int_equal(atomic_load(&kmp_writes), 1);
    assert_int_equal(getenv("KMP_BLOCKTIME") != NULL, 1);
    tu_rmtree(t.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_run_writes_the_environment_before_its_threads_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
