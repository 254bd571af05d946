/* Unit tests: core/fault.c — the test-only fault hook: which hits fail, pauses,
 * specs that do not parse; and core/file.c's checked calls failing through it. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "test_util.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void off_unless_configured(void **state)
{
    assert_int_equal(sl_fault_configure(NULL), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sl_fault("fsync", "x"), 0);
    assert_int_equal(sl_fault_configure(""), 0);
    assert_int_equal(sl_fault("fsync", NULL), 0);
}

static void nth_hit_only_or_from_nth_on(void **state)
{
    assert_int_equal(sl_fault_configure("fsync=eio@3,write=enospc@2+,rename=erofs"), 0);
    int got[5];
    for (int i = 0; i < 5; i++)
        got[i] = sl_fault("fsync", "f");
    assert_int_equal(got[0], 0);
    assert_int_equal(got[1], 0);
    assert_int_equal(got[2], EIO);
    assert_int_equal(got[3], 0);
    assert_int_equal(got[4], 0);
    assert_int_equal(sl_fault("write", NULL), 0);
    assert_int_equal(sl_fault("write", NULL), ENOSPC);
    assert_int_equal(sl_fault("write", NULL), ENOSPC);
    assert_int_equal(sl_fault("rename", NULL), EROFS);
    assert_int_equal(sl_fault("rename", NULL), EROFS);
    assert_int_equal(sl_fault("commit.begin", NULL), 0); /* not named: untouched */
    /* Configuring again starts the counts over. */
    assert_int_equal(sl_fault_configure("fsync=eio@1"), 0);
    assert_int_equal(sl_fault("fsync", NULL), EIO);
    assert_int_equal(sl_fault("fsync", NULL), 0);
    errno = 42;
    sl_fault("fsync", NULL);
    assert_int_equal(errno, 42); /* the caller's errno is left alone */
    sl_fault_configure(NULL);
}

/* NAME=N is a number the code reads in place of its own, not an action:
 * the point of that name goes on untouched. */
static void a_number_replaces_the_code_s_own(void **state)
{
    assert_int_equal(sl_fault_configure(NULL), 0);
    assert_int_equal(sl_fault_value("dist.warn_s", 30), 30);
    assert_int_equal(sl_fault_configure("fsync=eio@1,dist.warn_s=3"), 0);
    assert_int_equal(sl_fault_value("dist.warn_s", 30), 3);
    assert_int_equal(sl_fault_value("other", 7), 7);
    assert_int_equal(sl_fault("dist.warn_s", NULL), 0);
    assert_int_equal(sl_fault("fsync", NULL), EIO);
    sl_fault_configure(NULL);
    assert_int_equal(sl_fault_value("dist.warn_s", 30), 30);
}

/* Only the second hit pauses, and for its 80 ms at least. Which hit paused
 * is read from the trace on stderr (a file meanwhile): the first hit timed
 * under 50 ms failed when the thread was descheduled on a loaded machine. */
static void sleep_pauses_at_its_hit(void **state)
{
    char path[] = "/tmp/sluice-fault-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    assert_int_equal(sl_fault_configure("trace,commit.after_prepare=sleep:80@2"), 0);
    assert_int_equal(sl_fault("commit.after_prepare", "part-00000.jsonl"), 0);
    double t1 = now_s();
    assert_int_equal(sl_fault("commit.after_prepare", "part-00001.jsonl"), 0);
    double t2 = now_s();
    sl_fault_configure(NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char trace[1024] = "";
    ssize_t n = pread(fd, trace, sizeof trace - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    const char *want = "sluice: test fault point commit.after_prepare (part-00000.jsonl)\n"
                       "sluice: test fault point commit.after_prepare (part-00001.jsonl)\n"
                       "sluice: test fault point commit.after_prepare (part-00001.jsonl): "
                       "sleeping 80 ms\n";
    if (!strstr(trace, want))
        fail_msg("trace: %s", trace);
    assert_true(t2 - t1 >= 0.079);
}

static void bad_specs_are_refused_and_inject_nothing(void **state)
{
    const char *bad[] = {"fsync",       "=eio",         "fsync=boom",  "fsync=eio@0",
                         "fsync=eio@x", "fsync=eio@2x", "x=sleep:",    "x=sleep:0",
                         "x=sleep:-5",  "fsync=eio@",   "fsync=eio@3++", "x=0",
                         "x=3s",        "x=3@2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(sl_fault_configure(bad[i]), -1);
        assert_int_equal(sl_fault("fsync", NULL), 0);
        assert_int_equal(sl_fault("x", NULL), 0);
    }
}

static void checked_calls_fail_with_the_injected_errno(void **state)
{
    char *base = tu_tmpdir();
    char path[512], to[512];
    snprintf(path, sizeof path, "%s/f", base);
    snprintf(to, sizeof to, "%s/g", base);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    assert_true(fd >= 0);

    assert_int_equal(sl_fault_configure("write=enospc@2,fsync=eio@1,rename=eio@1"), 0);
    assert_int_equal(sl_file_write_all(fd, "0123456789", 10, path), SL_OK);
    assert_int_equal(sl_file_write_all(fd, "abcdefghij", 10, path), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), path));
    assert_non_null(strstr(sl_last_error(), "No space left on device"));
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_size, 15); /* as a disk that fills: half went in */
    assert_int_equal(sl_file_sync(fd, path), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "Input/output error"));
    assert_int_equal(sl_file_sync(fd, path), SL_OK);
    assert_int_equal(sl_file_rename(path, to), SL_ERR_IO);
    assert_true(access(path, F_OK) == 0 && access(to, F_OK) != 0);
    assert_int_equal(sl_file_rename(path, to), SL_OK);
    assert_int_equal(sl_fault_configure("fsync=eio@1"), 0);
    assert_int_equal(sl_file_sync_dir(base), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), base));
    assert_int_equal(sl_file_sync_dir(base), SL_OK);
    sl_fault_configure(NULL);
    close(fd);

    /* Real errors come through too. */
    assert_int_equal(sl_file_write_all(-1, "x", 1, "nowhere"), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "nowhere"));
    assert_int_equal(sl_file_sync_dir(path), SL_ERR_IO); /* gone: renamed */
    tu_rmtree(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(off_unless_configured),
        cmocka_unit_test(a_number_replaces_the_code_s_own),
        cmocka_unit_test(nth_hit_only_or_from_nth_on),
        cmocka_unit_test(sleep_pauses_at_its_hit),
        cmocka_unit_test(bad_specs_are_refused_and_inject_nothing),
        cmocka_unit_test(checked_calls_fail_with_the_injected_errno),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
