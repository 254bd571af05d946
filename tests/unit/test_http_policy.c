/* Unit tests: llm/http_policy.c — what is retried, backoff with full jitter
 * and Retry-After (bounded), Retry-After parsing, giving up on a fleet that
 * only fails, endpoint choice, the adaptive limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "llm/http_policy.h"

static void retriable_answers(void **state)
{
    long yes[] = {0, 408, 409, 429, 500, 502, 503, 504, 599};
    long no[] = {200, 400, 401, 403, 404, 413, 422, 600};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        assert_true(http_policy_retriable(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        assert_false(http_policy_retriable(no[i]));
    /* Busy is not broken: 429 and 409 leave the endpoint in rotation. */
    assert_true(http_policy_endpoint_fault(0));
    assert_true(http_policy_endpoint_fault(503));
    assert_true(http_policy_endpoint_fault(408));
    assert_false(http_policy_endpoint_fault(429));
    assert_false(http_policy_endpoint_fault(409));
    assert_false(http_policy_endpoint_fault(400));
}

/* Full jitter: every wait within [0, min(cap, base * 2^(n-1))], spread
 * over that range rather than bunched at its top. */
static void backoff_is_bounded_and_spread(void **state)
{
    uint64_t rng = 12345;
    for (int attempt = 1; attempt <= 12; attempt++) {
        double ceiling = 0.5 * (double)(1 << (attempt - 1));
        if (ceiling > 30.0)
            ceiling = 30.0;
        double lo = 1e9, hi = 0, sum = 0;
        int n = 2000;
        for (int i = 0; i < n; i++) {
            double w = http_policy_backoff_s(attempt, 0.5, 30.0, -1.0, 60.0, &rng);
            assert_true(w >= 0.0 && w <= ceiling);
            lo = w < lo ? w : lo;
            hi = w > hi ? w : hi;
            sum += w;
        }
        assert_true(lo < 0.05 * ceiling);
        assert_true(hi > 0.95 * ceiling);
        double mean = sum / n;
        assert_true(mean > 0.45 * ceiling && mean < 0.55 * ceiling);
    }
    /* A huge attempt count does not overflow past the cap. */
    assert_true(http_policy_backoff_s(10000, 0.5, 30.0, -1.0, 60.0, &rng) <= 30.0);
}

static void backoff_honours_retry_after(void **state)
{
    uint64_t rng = 99;
    for (int i = 0; i < 200; i++) {
        double w = http_policy_backoff_s(1, 0.5, 30.0, 7.0, 60.0, &rng);
        assert_true(w >= 7.0 && w <= 7.0);
    }
    /* A shorter Retry-After than the jitter drew does not shorten the wait. */
    int longer = 0;
    for (int i = 0; i < 200; i++)
        longer += http_policy_backoff_s(6, 0.5, 30.0, 0.01, 60.0, &rng) > 0.01;
    assert_true(longer > 190);
}

/* A server cannot park a request: a Retry-After past the bound (60 s, as
 * OpenAI's client) is not obeyed, and the wait is the jitter alone. */
static void backoff_bounds_retry_after(void **state)
{
    uint64_t rng = 7;
    for (int i = 0; i < 200; i++) {
        assert_true(http_policy_backoff_s(1, 0.5, 30.0, 60.0, 60.0, &rng) == 60.0);
        double w = http_policy_backoff_s(1, 0.5, 30.0, 86400.0, 60.0, &rng);
        assert_true(w >= 0.0 && w <= 0.5);
        w = http_policy_backoff_s(3, 0.5, 30.0, 60.5, 60.0, &rng);
        assert_true(w >= 0.0 && w <= 2.0);
        /* The bound is the caller's: 0 obeys only "Retry-After: 0". */
        w = http_policy_backoff_s(2, 0.5, 30.0, 5.0, 0.0, &rng);
        assert_true(w >= 0.0 && w <= 1.0);
    }
}

/* Every attempt failing (429s included) for all_down_s: give up; an answer
 * clears the clock (failing_since < 0); a long attempt in progress holds it
 * off. */
static void stalled_fleet(void **state)
{
    /* Not failing. */
    assert_false(http_policy_stalled(1000.0, -1.0, 0.0, 120.0));
    /* Failing, not yet long enough. */
    assert_false(http_policy_stalled(1000.0, 900.0, 0.0, 120.0));
    assert_false(http_policy_stalled(1000.0, 880.5, 0.0, 120.0));
    /* Long enough: whatever failed, with nothing or only quick attempts running. */
    assert_true(http_policy_stalled(1000.0, 880.0, 0.0, 120.0));
    assert_true(http_policy_stalled(1000.0, 0.0, 0.2, 120.0));
    /* An attempt running for HTTP_POLICY_BUSY_S is a generation, not a refusal. */
    assert_false(http_policy_stalled(1000.0, 0.0, HTTP_POLICY_BUSY_S, 120.0));
    assert_true(http_policy_stalled(1000.0, 0.0, HTTP_POLICY_BUSY_S - 0.1, 120.0));
    /* A zero deadline gives up at the first failure. */
    assert_true(http_policy_stalled(5.0, 5.0, 0.0, 0.0));
}

static void retry_after_values(void **state)
{
    time_t now = 1700000000; /* Tue, 14 Nov 2023 22:13:20 GMT */
    assert_true(http_policy_retry_after("120", now) == 120.0);
    assert_true(http_policy_retry_after(" 0\r\n", now) == 0.0);
    assert_true(http_policy_retry_after("1.5", now) == 1.5);
    assert_true(http_policy_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now) == 30.0);
    /* A date already past: retry now. */
    assert_true(http_policy_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0.0);
    assert_true(http_policy_retry_after("soon", now) < 0);
    assert_true(http_policy_retry_after("12abc", now) < 0);
    assert_true(http_policy_retry_after("", now) < 0);
    assert_true(http_policy_retry_after(NULL, now) < 0);
}

static void pick_fewest_outstanding_in_rotation(void **state)
{
    http_endpoint_view eps[3] = {
        {.in_flight = 3, .limit = 4, .last_pick = 1},
        {.in_flight = 1, .limit = 4, .last_pick = 2},
        {.in_flight = 2, .limit = 4, .last_pick = 3},
    };
    assert_int_equal(http_policy_pick(eps, 3, 100.0), 1);
    /* Down: skipped until its cool-down ends. */
    eps[1].down_until = 150.0;
    assert_int_equal(http_policy_pick(eps, 3, 100.0), 2);
    assert_int_equal(http_policy_pick(eps, 3, 150.0), 1);
    /* Full: skipped. */
    eps[1].down_until = 0;
    eps[1].in_flight = 4;
    eps[2].in_flight = 4;
    assert_int_equal(http_policy_pick(eps, 3, 100.0), 0);
    eps[0].in_flight = 4;
    assert_int_equal(http_policy_pick(eps, 3, 100.0), -1);
    /* Probing: one request at a time whatever its limit. */
    http_endpoint_view probe[2] = {{.in_flight = 1, .limit = 8, .probing = true},
                                   {.in_flight = 5, .limit = 8}};
    assert_int_equal(http_policy_pick(probe, 2, 0.0), 1);
    probe[0].in_flight = 0;
    assert_int_equal(http_policy_pick(probe, 2, 0.0), 0);
}

static void pick_spreads_ties(void **state)
{
    http_endpoint_view eps[3] = {{.limit = 2}, {.limit = 2}, {.limit = 2}};
    int count[3] = {0};
    for (uint64_t seq = 1; seq <= 30; seq++) {
        int i = http_policy_pick(eps, 3, 0.0);
        assert_true(i >= 0);
        count[i]++;
        eps[i].last_pick = seq; /* picked and finished at once: a tie again */
    }
    assert_int_equal(count[0], 10);
    assert_int_equal(count[1], 10);
    assert_int_equal(count[2], 10);
}

static void adaptive_limit(void **state)
{
    /* Throughput rising at the limit: raise it. */
    assert_int_equal(http_policy_adapt(8, 64, true, 10.0, 12.0, 0.8, 0.8), 9);
    assert_int_equal(http_policy_adapt(32, 64, true, 10.0, 12.0, 0.8, 0.8), 36);
    /* The first window at the limit: try more. */
    assert_int_equal(http_policy_adapt(8, 64, true, 0.0, 12.0, 0.0, 0.8), 9);
    /* Not at the limit: the limit was not what held it back. */
    assert_int_equal(http_policy_adapt(8, 64, false, 10.0, 12.0, 0.8, 0.8), 8);
    /* Latency up, throughput flat: back off. */
    assert_int_equal(http_policy_adapt(16, 64, true, 10.0, 10.1, 0.8, 1.2), 14);
    /* Latency up but throughput up too: keep climbing. */
    assert_int_equal(http_policy_adapt(16, 64, true, 10.0, 13.0, 0.8, 1.2), 18);
    /* Bounds. */
    assert_int_equal(http_policy_adapt(64, 64, true, 10.0, 20.0, 0.8, 0.8), 64);
    assert_int_equal(http_policy_adapt(1, 64, true, 10.0, 9.0, 0.8, 2.0), 1);
}

static void busy_cuts_once_a_burst_and_recovers_slowly(void **state)
{
    (void)state;
    uint64_t cut = 0;
    /* Requests 1..8 in flight, three of them refused: one halving. */
    assert_int_equal(http_policy_busy_cut(8, 3, 8, &cut), 4);
    assert_int_equal(cut, 8u);
    assert_int_equal(http_policy_busy_cut(4, 5, 8, &cut), 4);
    assert_int_equal(http_policy_busy_cut(4, 8, 8, &cut), 4);
    /* A request sent after the cut refused too: the slower pace is still
     * too fast. */
    assert_int_equal(http_policy_busy_cut(4, 9, 12, &cut), 2);
    assert_int_equal(http_policy_busy_cut(2, 13, 13, &cut), 1);
    assert_int_equal(http_policy_busy_cut(1, 14, 14, &cut), 1);
    /* Back up one at a time, after `limit` answers each, to the ceiling. */
    int answered = 0, limit = 2, steps = 0;
    while (limit < 4) {
        limit = http_policy_busy_recover(limit, 4, &answered);
        steps++;
    }
    assert_int_equal(steps, 2 + 3);
    assert_int_equal(http_policy_busy_recover(4, 4, &answered), 4);
    assert_int_equal(answered, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retriable_answers),
        cmocka_unit_test(backoff_is_bounded_and_spread),
        cmocka_unit_test(backoff_honours_retry_after),
        cmocka_unit_test(backoff_bounds_retry_after),
        cmocka_unit_test(stalled_fleet),
        cmocka_unit_test(retry_after_values),
        cmocka_unit_test(pick_fewest_outstanding_in_rotation),
        cmocka_unit_test(pick_spreads_ties),
        cmocka_unit_test(adaptive_limit),
        cmocka_unit_test(busy_cuts_once_a_burst_and_recovers_slowly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
