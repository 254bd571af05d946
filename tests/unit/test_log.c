/* Unit tests for core/log.c: the process-wide sink (sluice/log.h). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/log.h"

static atomic_int calls;

/* As a program's logger might on shutdown: back to the default sink, from
 * inside the callback. */
static void unset_from_inside(sl_log_level level, const char *message, void *user)
{
    (void)level, (void)message, (void)user;
    atomic_fetch_add(&calls, 1);
    sl_log_set_callback(NULL, NULL);
}

/* A callback that calls something of sluice's that logs. */
static void log_from_inside(sl_log_level level, const char *message, void *user)
{
    (void)level, (void)user;
    atomic_fetch_add(&calls, 1);
    sl_log(SL_LOG_WARN, "inside the callback, about: %s", message);
}

struct logger {
    sl_log_fn fn;
    atomic_bool done;
};

static void *log_twice(void *arg)
{
    struct logger *l = arg;
    sl_log_set_callback(l->fn, NULL);
    sl_log(SL_LOG_WARN, "first line");
    sl_log(SL_LOG_WARN, "second line");
    atomic_store(&l->done, true);
    return NULL;
}

/* Runs log_twice on a thread and waits up to 5 s: a deadlock in the sink
 * fails the test instead of hanging it (the stuck thread is left). */
static bool logs_without_hanging(sl_log_fn fn)
{
    struct logger l = {.fn = fn};
    atomic_store(&calls, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, log_twice, &l), 0);
    for (int i = 0; i < 500 && !atomic_load(&l.done); i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    if (!atomic_load(&l.done))
        return false;
    pthread_join(t, NULL);
    sl_log_set_callback(NULL, NULL);
    return true;
}

static void the_callback_may_unset_itself(void **state)
{
    (void)state;
    assert_true(logs_without_hanging(unset_from_inside));
    /* the first line reached it; the second went to the default sink */
    assert_int_equal(atomic_load(&calls), 1);
}

static void the_callback_may_call_what_logs(void **state)
{
    (void)state;
    assert_true(logs_without_hanging(log_from_inside));
    /* each line once; the lines logged from inside did not come back to it */
    assert_int_equal(atomic_load(&calls), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_callback_may_unset_itself),
        cmocka_unit_test(the_callback_may_call_what_logs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
