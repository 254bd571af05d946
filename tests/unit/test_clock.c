/* Unit tests: core/clock.c — deadlines and timed waits on CLOCK_MONOTONIC.
 * A step of the wall clock cannot be made here (clock_settime would move
 * the machine's clock for everyone), so the tests check what makes a step
 * harmless: the deadline is on the monotonic clock, and a condition
 * variable made by sl_cond_init_monotonic() measures it there (one on the
 * default clock, CLOCK_REALTIME, would take a monotonic deadline for a
 * time decades past and return at once). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/clock.h"

static double seconds(const struct timespec *ts) { return (double)ts->tv_sec + ts->tv_nsec / 1e9; }

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return seconds(&ts);
}

static void a_deadline_is_ms_ahead_on_the_monotonic_clock(void **state)
{
    (void)state;
    const long waits[] = {0, 50, 999, 1000, 1999, 2500};
    for (size_t i = 0; i < sizeof waits / sizeof *waits; i++) {
        double before = mono_now();
        struct timespec at;
        sl_deadline_after(waits[i], &at);
        double after = mono_now();
        assert_true(at.tv_nsec >= 0 && at.tv_nsec < 1000000000L);
        /* between now-before-the-call + ms and now-after-it + ms */
        assert_true(seconds(&at) >= before + waits[i] / 1e3 - 1e-6);
        assert_true(seconds(&at) <= after + waits[i] / 1e3 + 1e-6);
    }
}

static void a_timed_wait_lasts_until_its_deadline(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    assert_int_equal(sl_cond_init_monotonic(&cv), 0);
    pthread_mutex_lock(&mu);
    double t0 = mono_now();
    struct timespec at;
    sl_deadline_after(50, &at);
    int rc;
    while ((rc = pthread_cond_timedwait(&cv, &mu, &at)) == 0)
        ; /* a spurious wake-up: nobody signals */
    double waited = mono_now() - t0;
    pthread_mutex_unlock(&mu);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(waited >= 0.050);
    assert_true(waited < 5.0);
    pthread_cond_destroy(&cv);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;
} box;

static void *signal_soon(void *arg)
{
    box *b = arg;
    struct timespec pause = {0, 20 * 1000000L};
    nanosleep(&pause, NULL);
    pthread_mutex_lock(&b->mu);
    b->ready = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void a_signal_ends_the_wait_before_its_deadline(void **state)
{
    (void)state;
    box b = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(sl_cond_init_monotonic(&b.cv), 0);
    pthread_t th;
    double t0 = mono_now();
    assert_int_equal(pthread_create(&th, NULL, signal_soon, &b), 0);
    struct timespec at;
    sl_deadline_after(60000, &at);
    pthread_mutex_lock(&b.mu);
    int rc = 0;
    while (!b.ready && rc == 0)
        rc = pthread_cond_timedwait(&b.cv, &b.mu, &at);
    pthread_mutex_unlock(&b.mu);
    pthread_join(th, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(b.ready, 1);
    assert_true(mono_now() - t0 < 30.0);
    pthread_cond_destroy(&b.cv);
}

int main(void)
{
    alarm(60); /* a wait that never ends (a deadline on another clock) fails the test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_deadline_is_ms_ahead_on_the_monotonic_clock),
        cmocka_unit_test(a_timed_wait_lasts_until_its_deadline),
        cmocka_unit_test(a_signal_ends_the_wait_before_its_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
