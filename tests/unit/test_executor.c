/* Unit tests: core/executor.c — delivery (ordered and not), batching and
 * flush, error rows, worker restart, async stages, stop and abort,
 * backpressure under the memory budget, --max-failed, and a stress run
 * with many workers and random delays (run it under TSan and ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "sluice/executor.h"
#include "sluice/log.h"

typedef struct tctx {
    /* knobs */
    long n_rows;            /* < 0: endless */
    size_t row_bytes, grow_to;
    int map_delay_us, sink_delay_us, source_delay_us;
    int fail_every;         /* map fails rows with seq % fail_every == 0 */
    int crash_calls;        /* map process() fails on its first N calls */
    bool crash_always, init_fail_map, allocate_payload;
    bool track_payloads;    /* payloads record their own free in freed[] */
    int refuse_every;       /* async: submit() refuses rows with seq % refuse_every == 1 */
    bool hold_forever;      /* holder: never completes a row */
    int fail_poll_holding;  /* holder: poll() fails once while holding this many rows */
    int fail_submit_at;     /* holder: the Nth submit() fails (once) */
    bool source_paced;      /* source: row k waits for rows 0..k-2 to reach the sink */
    /* observations */
    atomic_long map_inits, map_calls, max_map_batch, second_saw_failed, second_saw_deferred;
    atomic_long produced, sink_rows, sink_failed, async_inflight, async_max_inflight;
    atomic_long pace_stalls; /* source_paced: waits that timed out */
    atomic_int sink_end, map_end, holder_end;
    atomic_long released_before_close, held_at_close, holder_submits;
    atomic_bool holder_failed_once;
    _Atomic unsigned char *freed; /* track_payloads: payload of seq freed */
    sl_status first_status;
    pthread_mutex_t mu;
    unsigned char *seen;    /* sink: times each seq arrived */
    long seen_cap;
    uint64_t next_seq;
    bool in_order;
    char first_error[256], first_error_stage[64];
} tctx;

static tctx *new_ctx(long n_rows)
{
    tctx *c = calloc(1, sizeof *c);
    c->n_rows = n_rows;
    c->seen_cap = n_rows > 0 ? n_rows : 1 << 22;
    c->seen = calloc((size_t)c->seen_cap, 1);
    c->freed = calloc((size_t)c->seen_cap, 1);
    c->in_order = true;
    atomic_store(&c->sink_end, -1);
    atomic_store(&c->map_end, -1);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void free_ctx(tctx *c)
{
    free(c->seen);
    free((void *)c->freed);
    free(c);
}

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

/* A payload that records when it is freed, so a test can tell whether a
 * row was released while a stage still held it. */
typedef struct tracked { tctx *c; long seq; long value; } tracked;
static void tracked_free(void *p)
{
    tracked *t = p;
    if (t->seq < t->c->seen_cap)
        atomic_store(&t->c->freed[t->seq], 1);
    free(t);
}

/* --- source ---- */
typedef struct src_state { tctx *c; long next; } src_state;

/* Waits up to 30 s for *count to reach at_least: false if it did not. */
static bool wait_count(const atomic_long *count, long at_least)
{
    for (int ms = 0; atomic_load(count) < at_least; ms++) {
        if (ms >= 30000)
            return false;
        usleep(1000);
    }
    return true;
}

static sl_status src_init(void *cfg, int worker, void **state)
{
    src_state *s = calloc(1, sizeof *s);
    s->c = cfg;
    *state = s;
    return SL_OK;
}
static void src_close(void *state, sl_exec_end end) { free(state); }
static sl_status src_produce(void *state, sl_row *row, bool *done)
{
    src_state *s = state;
    if (s->c->n_rows >= 0 && s->next >= s->c->n_rows) {
        *done = true;
        return SL_OK;
    }
    if (s->c->source_delay_us)
        usleep((useconds_t)s->c->source_delay_us);
    /* Row k-2 left the source's batch when row k-1 came (source_delay_us
     * is past flush_ms): the executor has it, and must pass it on without
     * waiting for more rows. After one stall the rest go unpaced. */
    if (s->c->source_paced && !atomic_load(&s->c->pace_stalls) &&
        !wait_count(&s->c->sink_rows, s->next - 1))
        atomic_fetch_add(&s->c->pace_stalls, 1);
    atomic_fetch_add(&s->c->produced, 1);
    long *v = malloc(sizeof *v);
    *v = s->next++;
    if (s->c->track_payloads) {
        tracked *t = malloc(sizeof *t);
        *t = (tracked){s->c, *v, *v};
        sl_row_set_data(row, t, tracked_free);
        free(v);
    } else if (s->c->allocate_payload && s->c->row_bytes) {
        /* Untouched pages: real allocations, cheap even under TSan. */
        sl_row_set_data(row, malloc(s->c->row_bytes), free);
        free(v);
    } else {
        sl_row_set_data(row, v, free);
    }
    sl_row_set_bytes(row, s->c->row_bytes ? s->c->row_bytes : 16);
    return SL_OK;
}

/* --- map ---- */
typedef struct map_state { tctx *c; unsigned rng; int calls; } map_state;

static sl_status map_init(void *cfg, int worker, void **state)
{
    tctx *c = cfg;
    if (c->init_fail_map)
        return SL_ERR_MODEL; /* message left from the caller's thread is irrelevant */
    map_state *m = calloc(1, sizeof *m);
    m->c = c;
    m->rng = (unsigned)atomic_fetch_add(&c->map_inits, 1) * 7919u + 1;
    *state = m;
    return SL_OK;
}
static void map_close(void *state, sl_exec_end end)
{
    atomic_store(&((map_state *)state)->c->map_end, (int)end);
    free(state);
}
static sl_status map_process(void *state, sl_row *const *rows, size_t n)
{
    map_state *m = state;
    tctx *c = m->c;
    long calls = atomic_fetch_add(&c->map_calls, 1);
    long prev = atomic_load(&c->max_map_batch);
    while ((long)n > prev && !atomic_compare_exchange_weak(&c->max_map_batch, &prev, (long)n))
        ;
    if (c->crash_always || calls < c->crash_calls)
        return SL_ERR_ENGINE;
    for (size_t i = 0; i < n; i++) {
        if (c->map_delay_us)
            usleep(rnd(&m->rng) % (unsigned)c->map_delay_us);
        if (c->fail_every && sl_row_seq(rows[i]) % (uint64_t)c->fail_every == 0)
            sl_row_fail(rows[i], "row %llu: bad input", (unsigned long long)sl_row_seq(rows[i]));
        else if (c->grow_to)
            sl_row_set_bytes(rows[i], c->grow_to);
    }
    return SL_OK;
}
/* A second map stage that must never see failed or deferred rows. */
static sl_status check_process(void *state, sl_row *const *rows, size_t n)
{
    tctx *c = state;
    for (size_t i = 0; i < n; i++) {
        if (sl_row_failed(rows[i]))
            atomic_fetch_add(&c->second_saw_failed, 1);
        if (sl_row_deferred(rows[i]))
            atomic_fetch_add(&c->second_saw_deferred, 1);
    }
    return SL_OK;
}
static sl_status pass_init(void *cfg, int worker, void **state)
{
    *state = cfg;
    return SL_OK;
}

/* --- async: completes rows in random order from a private list ---- */
typedef struct async_state { tctx *c; sl_row *held[64]; size_t n; unsigned rng; } async_state;

static sl_status async_init(void *cfg, int worker, void **state)
{
    async_state *a = calloc(1, sizeof *a);
    a->c = cfg;
    a->rng = (unsigned)worker + 99;
    *state = a;
    return SL_OK;
}
static void async_close(void *state, sl_exec_end end) { free(state); }
static sl_status async_submit(void *state, sl_row *row)
{
    async_state *a = state;
    if (a->c->refuse_every && sl_row_seq(row) % (uint64_t)a->c->refuse_every == 1) {
        /* A request this engine cannot take: the row fails, the worker goes on. */
        sl_row_fail_status(row, SL_ERR_INVALID_ARG, "row %llu: refused",
                           (unsigned long long)sl_row_seq(row));
        return SL_OK;
    }
    if (a->n == 64)
        return SL_ERR_ENGINE;
    a->held[a->n++] = row;
    long now = atomic_fetch_add(&a->c->async_inflight, 1) + 1;
    long prev = atomic_load(&a->c->async_max_inflight);
    while (now > prev && !atomic_compare_exchange_weak(&a->c->async_max_inflight, &prev, now))
        ;
    return SL_OK;
}
static sl_status async_poll(void *state, sl_row **done, size_t max, int timeout_ms, size_t *n_done)
{
    async_state *a = state;
    *n_done = 0;
    if (a->c->map_delay_us)
        usleep(rnd(&a->rng) % (unsigned)a->c->map_delay_us);
    size_t k = a->n ? 1 + rnd(&a->rng) % a->n : 0; /* complete k rows, random picks */
    while (k-- && *n_done < max) {
        size_t i = rnd(&a->rng) % a->n;
        done[(*n_done)++] = a->held[i];
        a->held[i] = a->held[--a->n];
        atomic_fetch_sub(&a->c->async_inflight, 1);
    }
    return SL_OK;
}

/* --- sink ---- */
static void sink_close(void *state, sl_exec_end end) { atomic_store(&((tctx *)state)->sink_end, (int)end); }
static sl_status sink_process(void *state, sl_row *const *rows, size_t n)
{
    tctx *c = state;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        uint64_t s = sl_row_seq(rows[i]);
        if (s != c->next_seq)
            c->in_order = false;
        c->next_seq = s + 1;
        if ((long)s < c->seen_cap)
            c->seen[s]++;
        if (sl_row_failed(rows[i])) {
            atomic_fetch_add(&c->sink_failed, 1);
            if (!c->first_error[0]) {
                c->first_status = sl_row_error_status(rows[i]);
                snprintf(c->first_error, sizeof c->first_error, "%s", sl_row_error(rows[i]));
                snprintf(c->first_error_stage, sizeof c->first_error_stage, "%s",
                         sl_row_error_stage(rows[i]));
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(&c->sink_rows, (long)n);
    if (c->sink_delay_us)
        usleep((useconds_t)c->sink_delay_us * (useconds_t)n);
    return SL_OK;
}

/* --- holder: an engine-like async stage. Its own thread reads the payload
 * of every row it holds until close() joins it, as the llama engine reads
 * a request's image until sl_engine_free(). close() then checks that none
 * of its rows was freed or delivered while it held them, and touches each
 * (ASan reports a use after free if the executor released them early). */
#define HOLD_MAX 256
typedef struct holder {
    tctx *c;
    pthread_mutex_t mu;
    sl_row *held[HOLD_MAX];
    long seqs[HOLD_MAX];
    size_t n;
    bool stop;
    unsigned rng;
    pthread_t thread;
} holder;

static void *holder_main(void *arg)
{
    holder *h = arg;
    volatile long sink = 0;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        bool stop = h->stop;
        for (size_t i = 0; i < h->n; i++)
            sink += ((tracked *)sl_row_data(h->held[i]))->value;
        pthread_mutex_unlock(&h->mu);
        if (stop)
            return NULL;
        usleep(200);
    }
}
static sl_status holder_init(void *cfg, int worker, void **state)
{
    holder *h = calloc(1, sizeof *h);
    h->c = cfg;
    h->rng = (unsigned)worker + 7;
    pthread_mutex_init(&h->mu, NULL);
    pthread_create(&h->thread, NULL, holder_main, h);
    *state = h;
    return SL_OK;
}
static void holder_close(void *state, sl_exec_end end)
{
    holder *h = state;
    tctx *c = h->c;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    usleep(30000); /* rows released too early have reached the sink by now */
    atomic_fetch_add(&c->held_at_close, (long)h->n);
    for (size_t i = 0; i < h->n; i++) {
        long seq = h->seqs[i];
        pthread_mutex_lock(&c->mu);
        bool gone = atomic_load(&c->freed[seq]) || c->seen[seq];
        pthread_mutex_unlock(&c->mu);
        if (gone)
            atomic_fetch_add(&c->released_before_close, 1);
        else
            ((tracked *)sl_row_data(h->held[i]))->value++;
    }
    atomic_store(&c->holder_end, (int)end);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
static sl_status holder_submit(void *state, sl_row *row)
{
    holder *h = state;
    tctx *c = h->c;
    long k = atomic_fetch_add(&c->holder_submits, 1) + 1;
    if (c->fail_submit_at && k == c->fail_submit_at)
        return SL_ERR_ENGINE;
    pthread_mutex_lock(&h->mu);
    assert_true(h->n < HOLD_MAX);
    h->seqs[h->n] = (long)sl_row_seq(row);
    h->held[h->n++] = row;
    pthread_mutex_unlock(&h->mu);
    return SL_OK;
}
static sl_status holder_poll(void *state, sl_row **done, size_t max, int timeout_ms, size_t *n_done)
{
    holder *h = state;
    tctx *c = h->c;
    *n_done = 0;
    usleep(1000);
    pthread_mutex_lock(&h->mu);
    bool fail = c->fail_poll_holding && h->n >= (size_t)c->fail_poll_holding &&
                !atomic_exchange(&c->holder_failed_once, true);
    size_t k = c->hold_forever || fail || !h->n ? 0 : 1 + rnd(&h->rng) % h->n;
    while (k-- && *n_done < max) {
        size_t i = rnd(&h->rng) % h->n;
        done[(*n_done)++] = h->held[i];
        h->seqs[i] = h->seqs[h->n - 1];
        h->held[i] = h->held[--h->n];
    }
    pthread_mutex_unlock(&h->mu);
    return fail ? SL_ERR_ENGINE : SL_OK;
}

#define SOURCE(c) {.name = "read", .kind = SL_STAGE_SOURCE, .workers = 1, .batch_size = 64, \
                   .config = c, .init = src_init, .close = src_close, .produce = src_produce}
#define MAP(c, w, b) {.name = "decode", .kind = SL_STAGE_MAP, .workers = w, .batch_size = b, \
                      .config = c, .init = map_init, .close = map_close, .process = map_process}
#define CHECK(c) {.name = "check", .kind = SL_STAGE_MAP, .workers = 2, .batch_size = 16, \
                  .config = c, .init = pass_init, .process = check_process}
#define ASYNC(c, w, inflight) {.name = "engine", .kind = SL_STAGE_ASYNC, .workers = w, \
    .batch_size = 8, .max_in_flight = inflight, .config = c, .init = async_init, \
    .close = async_close, .submit = async_submit, .poll = async_poll}
#define HOLDER(c, inflight) {.name = "engine", .kind = SL_STAGE_ASYNC, .workers = 1, \
    .batch_size = 4, .max_in_flight = inflight, .config = c, .init = holder_init, \
    .close = holder_close, .submit = holder_submit, .poll = holder_poll}
#define SINK(c) {.name = "write", .kind = SL_STAGE_SINK, .workers = 1, .batch_size = 32, \
                 .config = c, .init = pass_init, .close = sink_close, .process = sink_process}

static void assert_each_once(tctx *c, long n)
{
    for (long i = 0; i < n; i++)
        if (c->seen[i] != 1)
            fail_msg("row %ld reached the sink %d times", i, c->seen[i]);
    assert_int_equal(atomic_load(&c->sink_rows), n);
}

static sl_status run(tctx *c, const sl_stage_def *defs, size_t n, sl_exec_params *p, sl_exec **out)
{
    sl_exec *e;
    assert_int_equal(sl_exec_create(p, defs, n, &e), SL_OK);
    sl_status st = sl_exec_run(e);
    if (out)
        *out = e;
    else
        sl_exec_free(e);
    return st;
}

static void unordered_delivers_every_row_once(void **state)
{
    tctx *c = new_ctx(5000);
    c->map_delay_us = 50;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 4, 16), CHECK(c), SINK(c)};
    sl_exec *e;
    assert_int_equal(run(c, defs, 4, NULL, &e), SL_OK);
    assert_each_once(c, 5000);
    assert_int_equal(atomic_load(&c->map_inits), 4); /* one instance per worker */
    assert_int_equal(atomic_load(&c->sink_end), SL_END_COMPLETE);
    sl_stage_stats s;
    sl_exec_stage_stats(e, 1, &s);
    assert_string_equal(s.name, "decode");
    assert_int_equal(s.rows_in, 5000);
    assert_int_equal(s.rows_out, 5000);
    assert_true(s.busy_s > 0);
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_int_equal(es.rows_produced, 5000);
    assert_int_equal(es.rows_done, 5000);
    assert_int_equal(es.bytes_in_flight, 0); /* everything released */
    sl_exec_free(e);
    free_ctx(c);
}

/* The live page and /metrics read the run's figures from the server's
 * thread while sl_exec_run goes: sl_exec_stats_get must be safe then (the
 * run's start and end times were plain fields written by the run's thread:
 * a data race ThreadSanitizer reported with the live page polled). */
typedef struct poller { sl_exec *e; atomic_bool stop; atomic_long reads; } poller;

static void *poll_stats(void *arg)
{
    poller *p = arg;
    while (!atomic_load(&p->stop)) {
        sl_exec_stats es;
        sl_exec_stats_get(p->e, &es);
        assert_true(es.seconds >= 0);
        atomic_fetch_add(&p->reads, 1);
        usleep(100);
    }
    return NULL;
}

static void stats_can_be_read_while_the_run_goes(void **state)
{
    tctx *c = new_ctx(2000);
    c->map_delay_us = 100;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 2, 8), CHECK(c), SINK(c)};
    sl_exec *e;
    assert_int_equal(sl_exec_create(NULL, defs, 4, &e), SL_OK);
    poller p = {.e = e};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, poll_stats, &p), 0);
    while (atomic_load(&p.reads) == 0) /* it reads before the run starts too */
        usleep(100);
    assert_int_equal(sl_exec_run(e), SL_OK);
    usleep(2000); /* and after it ended */
    atomic_store(&p.stop, true);
    pthread_join(t, NULL);
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_int_equal(es.rows_done, 2000);
    assert_true(es.seconds > 0);
    sl_exec_free(e);
    free_ctx(c);
}

static void ordered_mode_keeps_input_order(void **state)
{
    tctx *c = new_ctx(3000);
    c->map_delay_us = 200;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 4, 4), SINK(c)};
    sl_exec_params p = sl_exec_default_params();
    p.ordered = true;
    p.reorder_window = 64;
    assert_int_equal(run(c, defs, 3, &p, NULL), SL_OK);
    assert_each_once(c, 3000);
    assert_true(c->in_order);
    free_ctx(c);
}

static void batches_are_bounded_and_a_trickle_still_flows(void **state)
{
    tctx *c = new_ctx(2000);
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 1, 8), SINK(c)};
    assert_int_equal(run(c, defs, 3, NULL, NULL), SL_OK);
    assert_true(atomic_load(&c->max_map_batch) <= 8);
    assert_true(atomic_load(&c->max_map_batch) >= 2); /* batching happened */
    free_ctx(c);

    /* A slow source (20 ms a row, batches of 64): rows reach the sink long
     * before the end. Each row waits until the rows two before it have
     * reached the sink, so a row held back for a fuller batch stalls the
     * source (30 s, then it counts) instead of a sample of the sink's count
     * at a fixed time, which read 0 when the threads started late. */
    c = new_ctx(12);
    c->source_delay_us = 20000;
    c->source_paced = true;
    sl_stage_def slow[] = {SOURCE(c), MAP(c, 1, 64), SINK(c)};
    slow[0].batch_size = 64;
    assert_int_equal(run(c, slow, 3, NULL, NULL), SL_OK);
    if (atomic_load(&c->pace_stalls))
        fail_msg("a row waited 30 s for the rows two before it to reach the sink: rows were "
                 "held back for a fuller batch");
    assert_each_once(c, 12);
    free_ctx(c);
}

static void failed_rows_skip_later_stages_and_reach_the_sink(void **state)
{
    tctx *c = new_ctx(1000);
    c->fail_every = 10;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 3, 8), CHECK(c), SINK(c)};
    sl_exec *e;
    assert_int_equal(run(c, defs, 4, NULL, &e), SL_OK);
    assert_each_once(c, 1000);
    assert_int_equal(atomic_load(&c->sink_failed), 100);
    assert_int_equal(atomic_load(&c->second_saw_failed), 0);
    assert_string_equal(c->first_error_stage, "decode");
    assert_non_null(strstr(c->first_error, "bad input"));
    sl_stage_stats s;
    sl_exec_stage_stats(e, 1, &s);
    assert_int_equal(s.rows_failed, 100);
    assert_int_equal(s.rows_out, 900);
    sl_exec_free(e);
    free_ctx(c);
}

static void a_failing_worker_is_restarted(void **state)
{
    tctx *c = new_ctx(500);
    c->crash_calls = 2; /* the first two batches fail, then all is well */
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 1, 10), SINK(c)};
    sl_exec *e;
    assert_int_equal(run(c, defs, 3, NULL, &e), SL_OK);
    assert_each_once(c, 500); /* the crashed batches' rows are error rows, not lost */
    assert_int_equal(atomic_load(&c->map_inits), 3);
    long failed = atomic_load(&c->sink_failed);
    assert_true(failed >= 2 && failed <= 20);
    assert_non_null(strstr(c->first_error, "worker failed"));
    /* map_process returns a status and no message: the status is the cause */
    if (!strstr(c->first_error, "worker failed: process() returned "))
        fail_msg("%s", c->first_error);
    sl_stage_stats s;
    sl_exec_stage_stats(e, 1, &s);
    assert_int_equal(s.restarts, 2);
    sl_exec_free(e);
    free_ctx(c);
}

static void restarts_are_limited_and_nothing_is_lost(void **state)
{
    tctx *c = new_ctx(-1); /* endless: reading must stop by itself */
    c->crash_always = true;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 2, 4), SINK(c)};
    sl_exec_params p = sl_exec_default_params();
    p.max_restarts = 2;
    sl_exec *e;
    assert_int_equal(run(c, defs, 3, &p, &e), SL_ERR_STAGE);
    assert_non_null(strstr(sl_last_error(), "decode"));
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_int_equal(es.rows_produced, es.rows_done); /* every read row reached the sink */
    assert_int_equal(es.rows_failed, es.rows_done);
    assert_int_equal(atomic_load(&c->sink_end), SL_END_FAILED);
    sl_exec_free(e);
    free_ctx(c);
}

/* Log lines holding each of up to three texts, counted from any thread. */
typedef struct log_count {
    pthread_mutex_t mu;
    const char *text[3];
    int n[3];
} log_count;

static void count_log_lines(sl_log_level level, const char *message, void *user)
{
    log_count *l = user;
    (void)level;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < 3; i++)
        l->n[i] += l->text[i] && strstr(message, l->text[i]) != NULL;
    pthread_mutex_unlock(&l->mu);
}

/* The worker that fails past max_restarts said "restart 3 of 2" (or, with
 * none allowed, "restart 1 of 0"), as if one were made. */
static void the_log_says_when_no_restart_is_made(void **state)
{
    (void)state;
    for (int allowed = 0; allowed <= 2; allowed += 2) {
        /* restarting, the last, not restarted */
        log_count l = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .text = {"; restart ", "; no restart left", "; not restarted"}};
        sl_log_level quiet = sl_log_get_level(); /* main() keeps the other tests quiet */
        sl_log_set_level(SL_LOG_WARN);
        sl_log_set_callback(count_log_lines, &l);
        tctx *c = new_ctx(-1);
        c->crash_always = true;
        sl_stage_def defs[] = {SOURCE(c), MAP(c, 1, 4), SINK(c)};
        sl_exec_params p = sl_exec_default_params();
        p.max_restarts = allowed;
        sl_exec *e;
        assert_int_equal(run(c, defs, 3, &p, &e), SL_ERR_STAGE);
        sl_log_set_callback(NULL, NULL);
        sl_log_set_level(quiet);
        assert_int_equal(l.n[0], allowed);
        assert_int_equal(l.n[1] + l.n[2], 1);
        assert_int_equal(l.n[2], allowed == 0);
        sl_exec_free(e);
        free_ctx(c);
    }
}

static void init_failure_stops_before_reading(void **state)
{
    tctx *c = new_ctx(100);
    c->init_fail_map = true;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 2, 4), SINK(c)};
    sl_exec *e;
    assert_int_equal(run(c, defs, 3, NULL, &e), SL_ERR_MODEL); /* init's own status */
    assert_non_null(strstr(sl_last_error(), "'decode' could not start"));
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_int_equal(es.rows_produced, 0);
    sl_exec_free(e);
    free_ctx(c);
}

static void async_stage_completes_out_of_order_within_limit(void **state)
{
    tctx *c = new_ctx(4000);
    sl_stage_def defs[] = {SOURCE(c), ASYNC(c, 2, 16), CHECK(c), SINK(c)};
    c->fail_every = 0;
    sl_exec *e;
    assert_int_equal(run(c, defs, 4, NULL, &e), SL_OK);
    assert_each_once(c, 4000);
    assert_true(atomic_load(&c->async_max_inflight) <= 2 * 16);
    assert_true(atomic_load(&c->async_max_inflight) > 2); /* it did keep several in flight */
    sl_stage_stats s;
    sl_exec_stage_stats(e, 1, &s);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.rows_out, 4000);
    sl_exec_free(e);
    free_ctx(c);
}

/* `times` stop requests, `after_ms` apart, the first once *count has
 * reached at_least (up to 30 s; count NULL: at once): a stop timed from
 * the start alone came before the first row when the threads started late. */
typedef struct stopper {
    sl_exec *e;
    int after_ms, times;
    const atomic_long *count;
    long at_least;
} stopper;

static void *stop_later(void *arg)
{
    stopper *s = arg;
    if (s->count)
        wait_count(s->count, s->at_least); /* on a timeout the test's checks fail */
    for (int i = 0; i < s->times; i++) {
        usleep((useconds_t)s->after_ms * 1000);
        sl_exec_request_stop(s->e);
    }
    return NULL;
}

/* Runs the chain while a thread sends `times` stop requests, `after_ms`
 * apart, once the source has produced `produced` rows (c->produced); the
 * run's status, the executor in *out (sl_exec_free). */
static sl_status run_with_stops(tctx *c, long produced, const sl_stage_def *defs, size_t n,
                                const sl_exec_params *p, int after_ms, int times, sl_exec **out)
{
    sl_exec *e;
    assert_int_equal(sl_exec_create(p, defs, n, &e), SL_OK);
    stopper s = {e, after_ms, times, &c->produced, produced};
    pthread_t t;
    pthread_create(&t, NULL, stop_later, &s);
    sl_status st = sl_exec_run(e);
    pthread_join(t, NULL);
    *out = e;
    return st;
}

static void stop_drains_rows_in_flight(void **state)
{
    tctx *c = new_ctx(-1);
    c->map_delay_us = 300;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 2, 8), ASYNC(c, 1, 8), SINK(c)};
    sl_exec *e;
    assert_int_equal(run_with_stops(c, 1, defs, 4, NULL, 200, 1, &e), SL_ERR_STOPPED);
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_true(es.rows_produced > 0);
    assert_int_equal(es.rows_done, es.rows_produced); /* in-flight rows were finished */
    assert_each_once(c, (long)es.rows_done);
    assert_int_equal(atomic_load(&c->sink_end), SL_END_STOPPED);
    sl_exec_free(e);
    free_ctx(c);
}

static void second_stop_aborts(void **state)
{
    tctx *c = new_ctx(-1);
    c->sink_delay_us = 20000; /* a very slow sink: draining would take long */
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 2, 8), SINK(c)};
    sl_exec_params p = sl_exec_default_params();
    p.queue_rows = 512;
    sl_exec *e;
    /* 200 rows out when the first stop comes: a drain of seconds at 20 ms a
     * row (the source fills both queues of 512 in well under that) */
    assert_int_equal(run_with_stops(c, 200, defs, 3, &p, 100, 2, &e), SL_ERR_STOPPED);
    assert_non_null(strstr(sl_last_error(), "at once"));
    assert_int_equal(atomic_load(&c->sink_end), SL_END_ABORTED);
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_true(es.rows_done < es.rows_produced); /* it did not wait for the drain */
    sl_exec_free(e); /* frees rows left in queues (ASan checks) */
    free_ctx(c);
}

/* A caller's counter at 2 when the executor first looks (a program that
 * aborts, or two signals within one look): the log says it stops at once,
 * not that it finishes the rows in flight, which it then drops. */
static void a_first_look_at_two_stops_logs_no_drain(void **state)
{
    (void)state;
    /* the drain's line, the abort's */
    log_count l = {.mu = PTHREAD_MUTEX_INITIALIZER,
                   .text = {"finishing rows in flight", "stopping at once"}};
    sl_log_level quiet = sl_log_get_level();
    sl_log_set_level(SL_LOG_WARN);
    sl_log_set_callback(count_log_lines, &l);
    tctx *c = new_ctx(-1);
    c->sink_delay_us = 20000;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 2, 8), SINK(c)};
    static sl_atomic_int stops;
    atomic_store(&stops, 2);
    sl_exec_params p = sl_exec_default_params();
    p.stop_requests = &stops;
    sl_exec *e;
    assert_int_equal(run(c, defs, 3, &p, &e), SL_ERR_STOPPED);
    sl_log_set_callback(NULL, NULL);
    sl_log_set_level(quiet);
    assert_non_null(strstr(sl_last_error(), "at once"));
    assert_int_equal(l.n[0], 0);
    assert_int_equal(l.n[1], 1);
    sl_exec_free(e);
    free_ctx(c);
}

/* Abort while an engine-like stage holds rows: it is closed (its thread
 * joined) before the executor frees those rows. */
static void abort_closes_an_async_stage_before_freeing_its_rows(void **state)
{
    tctx *c = new_ctx(-1);
    c->track_payloads = true;
    c->hold_forever = true; /* the drain cannot finish: the second stop aborts */
    sl_stage_def defs[] = {SOURCE(c), HOLDER(c, 16), SINK(c)};
    sl_exec *e;
    assert_int_equal(sl_exec_create(NULL, defs, 3, &e), SL_OK);
    stopper s = {e, 150, 2, &c->holder_submits, 16}; /* once it holds all 16 */
    pthread_t t;
    pthread_create(&t, NULL, stop_later, &s);
    assert_int_equal(sl_exec_run(e), SL_ERR_STOPPED);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&c->holder_end), SL_END_ABORTED);
    assert_int_equal(atomic_load(&c->held_at_close), 16);
    assert_int_equal(atomic_load(&c->released_before_close), 0);
    sl_exec_free(e);
    for (long i = 0; i < 16; i++) /* and the held rows were freed after all */
        assert_int_equal(atomic_load(&c->freed[i]), 1);
    free_ctx(c);
}

/* A worker failure (poll, then submit) in an engine-like stage: the old
 * instance is closed before the rows it held are failed and sent on. */
static void failed_async_worker_is_closed_before_its_rows_move_on(void **state)
{
    for (int variant = 0; variant < 2; variant++) {
        tctx *c = new_ctx(300);
        c->track_payloads = true;
        if (variant == 0)
            c->fail_poll_holding = 8;
        else
            c->fail_submit_at = 12;
        sl_stage_def defs[] = {SOURCE(c), HOLDER(c, 16), SINK(c)};
        sl_exec *e;
        assert_int_equal(run(c, defs, 3, NULL, &e), SL_OK);
        assert_each_once(c, 300);
        assert_true(atomic_load(&c->held_at_close) >= (variant == 0 ? 8 : 1));
        assert_int_equal(atomic_load(&c->released_before_close), 0);
        assert_true(atomic_load(&c->sink_failed) >= 1);
        assert_non_null(strstr(c->first_error, "worker failed"));
        sl_stage_stats st;
        sl_exec_stage_stats(e, 1, &st);
        assert_int_equal(st.restarts, 1);
        assert_int_equal(st.in_flight, 0);
        sl_exec_free(e);
        free_ctx(c);
    }
}

/* submit() may refuse one row by failing it: that row fails alone, with
 * its own status, and the worker is not restarted. */
static void a_row_the_async_stage_refuses_fails_alone(void **state)
{
    tctx *c = new_ctx(300);
    c->refuse_every = 10;
    sl_stage_def defs[] = {SOURCE(c), ASYNC(c, 2, 8), CHECK(c), SINK(c)};
    sl_exec *e;
    assert_int_equal(sl_exec_create(NULL, defs, 4, &e), SL_OK);
    stopper s = {e, 20000, 2, NULL, 0}; /* a watchdog: a refused row that never comes back hangs */
    pthread_t t;
    pthread_create(&t, NULL, stop_later, &s);
    sl_status st = sl_exec_run(e);
    pthread_cancel(t);
    pthread_join(t, NULL);
    assert_int_equal(st, SL_OK);
    assert_each_once(c, 300);
    assert_int_equal(atomic_load(&c->sink_failed), 30);
    assert_int_equal(c->first_status, SL_ERR_INVALID_ARG);
    assert_non_null(strstr(c->first_error, "refused"));
    assert_string_equal(c->first_error_stage, "engine");
    assert_int_equal(atomic_load(&c->second_saw_failed), 0);
    sl_stage_stats ss;
    sl_exec_stage_stats(e, 1, &ss);
    assert_int_equal(ss.restarts, 0);
    assert_int_equal(ss.rows_failed, 30);
    assert_int_equal(ss.in_flight, 0);
    sl_exec_free(e);
    free_ctx(c);
}

static void slow_sink_keeps_bytes_under_budget(void **state)
{
    tctx *c = new_ctx(400);
    c->row_bytes = 1 << 20;
    c->allocate_payload = true;
    c->sink_delay_us = 500;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 4, 4), SINK(c)};
    sl_exec_params p = sl_exec_default_params();
    p.memory_budget = 16u << 20;
    sl_exec *e;
    assert_int_equal(run(c, defs, 3, &p, &e), SL_OK);
    assert_each_once(c, 400);
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_true(es.peak_bytes_in_flight <= p.memory_budget);
    assert_true(es.peak_bytes_in_flight >= 4u << 20); /* the budget was used, not idle */
    sl_stage_stats src;
    sl_exec_stage_stats(e, 0, &src);
    assert_true(src.blocked_s > 0); /* the source waited for room */
    sl_exec_free(e);
    free_ctx(c);

    /* Rows that grow in a later stage (small file -> decoded image) are
     * counted at their grown size; the hint reserves room up front. */
    c = new_ctx(300);
    c->row_bytes = 1000;
    c->grow_to = 1 << 20;
    c->sink_delay_us = 500;
    sl_stage_def grow[] = {SOURCE(c), MAP(c, 4, 4), SINK(c)};
    p.row_bytes_hint = 1 << 20;
    assert_int_equal(run(c, grow, 3, &p, &e), SL_OK);
    sl_exec_stats_get(e, &es);
    assert_true(es.peak_bytes_in_flight <= p.memory_budget);
    assert_true(es.peak_bytes_in_flight >= 4u << 20);
    sl_exec_free(e);
    free_ctx(c);
}

static void too_many_failures_stop_the_job(void **state)
{
    tctx *c = new_ctx(-1);
    c->fail_every = 2; /* half the rows fail */
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 2, 8), SINK(c)};
    sl_exec_params p = sl_exec_default_params();
    p.max_failed = 0.1;
    p.max_failed_min_rows = 50;
    sl_exec *e;
    assert_int_equal(run(c, defs, 3, &p, &e), SL_ERR_TOO_MANY_FAILED);
    assert_non_null(strstr(sl_last_error(), "rows had failed"));
    assert_non_null(strstr(sl_last_error(), "--max-failed"));
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_int_equal(es.rows_done, es.rows_produced);
    sl_exec_free(e);
    free_ctx(c);
}

static void invalid_chains_are_refused(void **state)
{
    tctx *c = new_ctx(1);
    sl_exec *e;
    sl_stage_def no_sink[] = {SOURCE(c), MAP(c, 1, 1)};
    assert_int_equal(sl_exec_create(NULL, no_sink, 2, &e), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "sink"));
    sl_stage_def zero_workers[] = {SOURCE(c), MAP(c, 0, 1), SINK(c)};
    assert_int_equal(sl_exec_create(NULL, zero_workers, 3, &e), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'decode'"));
    free_ctx(c);
}

static atomic_long stateless_calls;
static sl_status stateless_process(void *state, sl_row *const *rows, size_t n)
{
    assert_null(state);
    atomic_fetch_add(&stateless_calls, (long)n);
    return SL_OK;
}

static void stages_without_init_get_a_null_state_and_work(void **state)
{
    tctx *c = new_ctx(300);
    sl_stage_def defs[] = {SOURCE(c),
                           {.name = "plain", .kind = SL_STAGE_MAP, .workers = 2, .batch_size = 8,
                            .process = stateless_process},
                           SINK(c)};
    assert_int_equal(run(c, defs, 3, NULL, NULL), SL_OK);
    assert_each_once(c, 300);
    assert_int_equal(atomic_load(&c->sink_failed), 0);
    assert_int_equal(atomic_load(&stateless_calls), 300);
    free_ctx(c);
}

static void stress_many_workers_random_delays(void **state)
{
    tctx *c = new_ctx(20000);
    c->map_delay_us = 30;
    c->fail_every = 97;
    sl_stage_def defs[] = {SOURCE(c), MAP(c, 8, 3), ASYNC(c, 4, 12), CHECK(c), SINK(c)};
    sl_exec_params p = sl_exec_default_params();
    p.queue_rows = 7; /* tiny queues: lots of blocking and waking */
    p.flush_ms = 1;
    assert_int_equal(run(c, defs, 5, &p, NULL), SL_OK);
    assert_each_once(c, 20000);
    assert_int_equal(atomic_load(&c->second_saw_failed), 0);
    free_ctx(c);
}

/* --- fan-out: copies of rows (sl_row_emit) ------------------------------------ */

enum { FAN_ROWS = 4000 };

typedef struct fan {
    pthread_mutex_t mu;
    unsigned char rows[FAN_ROWS], completes[FAN_ROWS], copies_seen[FAN_ROWS];
    bool completed_early, out_of_order, bad_payload;
    uint64_t last_seq;
    unsigned last_copy;
    atomic_long emit_refused_in_sink, emit_errors;
    bool ordered;
} fan;

static void fan_payload(sl_row *row, long value)
{
    long *v = malloc(sizeof *v);
    *v = value;
    sl_row_set_data(row, v, free);
    sl_row_set_bytes(row, 16);
}

/* First stage: rows with seq % 4 == 1 become two copies (the row dropped);
 * seq % 4 == 2 gets one copy and goes on too. */
static sl_status fan_first(void *state, sl_row *const *rows, size_t n)
{
    fan *f = state;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = sl_row_seq(rows[i]);
        int copies = seq % 4 == 1 ? 2 : seq % 4 == 2 ? 1 : 0;
        for (int k = 0; k < copies; k++) {
            sl_row *c;
            if (sl_row_emit(rows[i], &c) != SL_OK) {
                atomic_fetch_add(&f->emit_errors, 1);
                continue;
            }
            fan_payload(c, (long)seq * 100 + (long)sl_row_copy_index(c));
        }
        if (seq % 4 == 1)
            sl_row_drop(rows[i]);
        if (seq % 7 == 0)
            usleep(50);
    }
    return SL_OK;
}

/* Second stage: a copy of a copy, for seq % 8 == 2 (numbered on from its
 * input's copies: 2). */
static sl_status fan_second(void *state, sl_row *const *rows, size_t n)
{
    fan *f = state;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = sl_row_seq(rows[i]);
        if (seq % 8 == 2 && sl_row_copy_index(rows[i]) == 1) {
            sl_row *c;
            if (sl_row_emit(rows[i], &c) != SL_OK)
                atomic_fetch_add(&f->emit_errors, 1);
            else
                fan_payload(c, (long)seq * 100 + (long)sl_row_copy_index(c));
        }
    }
    return SL_OK;
}

static unsigned fan_expected(uint64_t seq)
{
    return seq % 4 == 1 ? 3 : seq % 8 == 2 ? 3 : seq % 4 == 2 ? 2 : 1;
}

static sl_status fan_sink(void *state, sl_row *const *rows, size_t n)
{
    fan *f = state;
    sl_row *c;
    if (sl_row_emit(rows[0], &c) == SL_ERR_INVALID_ARG && !c)
        atomic_fetch_add(&f->emit_refused_in_sink, 1);
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = sl_row_seq(rows[i]);
        unsigned copy = sl_row_copy_index(rows[i]);
        if (seq >= FAN_ROWS)
            continue;
        if (f->ordered && (seq < f->last_seq || (seq == f->last_seq && copy <= f->last_copy &&
                                                  f->rows[seq])))
            f->out_of_order = true;
        f->last_seq = seq;
        f->last_copy = copy;
        long *v = sl_row_data(rows[i]);
        if (copy && (!v || *v != (long)seq * 100 + (long)copy))
            f->bad_payload = true;
        if (sl_row_in_group(rows[i]) != (fan_expected(seq) > 1))
            f->bad_payload = true;
        f->rows[seq]++;
        f->copies_seen[seq] |= (unsigned char)(1u << copy);
        if (sl_row_completes_input(rows[i])) {
            f->completes[seq]++;
            if (f->rows[seq] != fan_expected(seq))
                f->completed_early = true; /* rows of this input were still to come */
        }
    }
    pthread_mutex_unlock(&f->mu);
    return SL_OK;
}

static void run_fan_out(bool ordered)
{
    tctx *c = new_ctx(FAN_ROWS);
    static fan f;
    memset(&f, 0, sizeof f);
    pthread_mutex_init(&f.mu, NULL);
    f.ordered = ordered;
    sl_stage_def defs[] = {
        SOURCE(c),
        {.name = "first", .kind = SL_STAGE_MAP, .workers = 3, .batch_size = 5, .config = &f,
         .init = pass_init, .process = fan_first},
        {.name = "second", .kind = SL_STAGE_MAP, .workers = 2, .batch_size = 7, .config = &f,
         .init = pass_init, .process = fan_second},
        {.name = "sink", .kind = SL_STAGE_SINK, .workers = 1, .batch_size = 16, .config = &f,
         .init = pass_init, .process = fan_sink},
    };
    sl_exec_params p = sl_exec_default_params();
    p.ordered = ordered;
    p.reorder_window = 32;
    sl_exec *e;
    assert_int_equal(run(c, defs, 4, &p, &e), SL_OK);
    for (uint64_t seq = 0; seq < FAN_ROWS; seq++) {
        unsigned want = fan_expected(seq);
        if (f.rows[seq] != want || f.completes[seq] != 1 ||
            f.copies_seen[seq] != (unsigned char)((1u << want) - 1))
            fail_msg("input %llu: %u rows (want %u), completed %u times, copies seen %#x",
                     (unsigned long long)seq, f.rows[seq], want, f.completes[seq],
                     f.copies_seen[seq]);
    }
    assert_false(f.completed_early);
    assert_false(f.out_of_order);
    assert_false(f.bad_payload);
    assert_int_equal(atomic_load(&f.emit_errors), 0);
    assert_true(atomic_load(&f.emit_refused_in_sink) > 0);
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_int_equal(es.rows_produced, FAN_ROWS);
    assert_int_equal(es.bytes_in_flight, 0); /* the copies' bytes returned too */
    assert_int_equal(es.rows_dropped, FAN_ROWS / 4);
    sl_exec_free(e);
    pthread_mutex_destroy(&f.mu);
    free_ctx(c);
}

static void copies_reach_the_sink_as_one_group(void **state)
{
    (void)state;
    run_fan_out(false);
}

static void ordered_copies_follow_their_input_in_order(void **state)
{
    (void)state;
    run_fan_out(true);
}

/* --- stop(): an engine-like stage that never starts a source row (copy 0)
 * before the stop and runs copies at once; told of the stop, it hands back
 * what it holds deferred, and defers what comes after. ---- */
#define LAZY_ROWS 4096
typedef struct lazy {
    pthread_mutex_t mu;
    atomic_long stops;
    bool stopped;                /* the worker's thread alone */
    sl_row *held[64];
    size_t n;
    unsigned rows[LAZY_ROWS], deferred[LAZY_ROWS], completes[LAZY_ROWS];
} lazy;

static sl_status lazy_split(void *state, sl_row *const *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sl_row *c;
        if (sl_row_seq(rows[i]) % 2 == 0 && sl_row_emit(rows[i], &c) != SL_OK)
            return SL_ERR_NOMEM;
    }
    return SL_OK;
}
static void lazy_stop(void *state)
{
    lazy *z = state;
    atomic_fetch_add(&z->stops, 1);
    z->stopped = true;
}
static sl_status lazy_submit(void *state, sl_row *row)
{
    lazy *z = state;
    if (z->stopped) {
        sl_row_defer(row);
        return SL_OK;
    }
    if (z->n == 64)
        return SL_ERR_ENGINE;
    z->held[z->n++] = row;
    return SL_OK;
}
static sl_status lazy_poll(void *state, sl_row **done, size_t max, int timeout_ms, size_t *n_done)
{
    lazy *z = state;
    *n_done = 0;
    for (size_t i = 0; i < z->n && *n_done < max;) {
        sl_row *r = z->held[i];
        if (sl_row_copy_index(r) == 0 && !z->stopped) {
            i++;
            continue;
        }
        if (sl_row_copy_index(r) == 0)
            sl_row_defer(r);
        done[(*n_done)++] = r;
        z->held[i] = z->held[--z->n];
    }
    if (*n_done == 0)
        usleep(1000);
    return SL_OK;
}
static sl_status lazy_sink(void *state, sl_row *const *rows, size_t n)
{
    lazy *z = state;
    pthread_mutex_lock(&z->mu);
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = sl_row_seq(rows[i]);
        if (seq >= LAZY_ROWS)
            continue;
        z->rows[seq]++;
        z->deferred[seq] += sl_row_deferred(rows[i]);
        z->completes[seq] += sl_row_completes_input(rows[i]);
    }
    pthread_mutex_unlock(&z->mu);
    return SL_OK;
}

/* The first stop tells the async stage once: the rows it had not started
 * come back deferred, skip the later stage, reach the sink once, and an
 * input with a deferred row is not complete, even when its other row ran. */
static void a_stop_tells_async_stages_and_their_unstarted_rows_are_deferred(void **state)
{
    (void)state;
    tctx *c = new_ctx(LAZY_ROWS);
    static lazy z;
    memset(&z, 0, sizeof z);
    pthread_mutex_init(&z.mu, NULL);
    sl_stage_def defs[] = {
        SOURCE(c),
        {.name = "split", .kind = SL_STAGE_MAP, .workers = 1, .batch_size = 8, .config = &z,
         .init = pass_init, .process = lazy_split},
        {.name = "engine", .kind = SL_STAGE_ASYNC, .workers = 1, .batch_size = 4,
         .max_in_flight = 16, .config = &z, .init = pass_init, .submit = lazy_submit,
         .poll = lazy_poll, .stop = lazy_stop},
        CHECK(c),
        {.name = "sink", .kind = SL_STAGE_SINK, .workers = 1, .batch_size = 16, .config = &z,
         .init = pass_init, .process = lazy_sink},
    };
    sl_exec *e;
    assert_int_equal(run_with_stops(c, 1, defs, 5, NULL, 100, 1, &e), SL_ERR_STOPPED);
    sl_exec_stats es;
    sl_exec_stats_get(e, &es);
    assert_int_equal(atomic_load(&z.stops), 1);
    assert_int_equal(atomic_load(&c->second_saw_deferred), 0);
    assert_int_equal(atomic_load(&c->second_saw_failed), 0);
    assert_true(es.rows_produced > 0 && es.rows_produced < LAZY_ROWS);
    unsigned long deferred = 0;
    for (uint64_t seq = 0; seq < es.rows_produced; seq++) {
        unsigned want = seq % 2 == 0 ? 2 : 1;
        /* Every source row was held until the stop: each comes back deferred. */
        if (z.rows[seq] != want || z.deferred[seq] < 1 || z.completes[seq] != 0)
            fail_msg("input %llu: %u rows (want %u), %u deferred, completed %u times",
                     (unsigned long long)seq, z.rows[seq], want, z.deferred[seq],
                     z.completes[seq]);
        deferred += z.deferred[seq];
    }
    assert_int_equal(es.rows_deferred, deferred);
    assert_int_equal(es.rows_done, es.rows_produced + es.rows_produced / 2 +
                                   es.rows_produced % 2);
    /* A deferred row was drained unsent: it is "out" of no stage from the
     * one that deferred it on, while every stage before passed it on. The
     * sink's counts are the reference: rows it saw, and those deferred. */
    unsigned long seen = 0;
    for (uint64_t seq = 0; seq < es.rows_produced; seq++)
        seen += z.rows[seq];
    const char *names[] = {"read", "split", "engine", "check", "sink"};
    unsigned long want_out[] = {es.rows_produced, seen, seen - deferred, seen - deferred,
                                seen - deferred};
    for (size_t i = 0; i < 5; i++) {
        sl_stage_stats ss;
        sl_exec_stage_stats(e, i, &ss);
        if (ss.rows_out != want_out[i] || ss.rows_failed != 0)
            fail_msg("stage %s: %llu rows out, %llu failed (want %lu out, 0 failed)", names[i],
                     (unsigned long long)ss.rows_out, (unsigned long long)ss.rows_failed,
                     want_out[i]);
    }
    sl_exec_free(e);
    pthread_mutex_destroy(&z.mu);
    free_ctx(c);
}

int main(void)
{
    sl_log_set_level(SL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unordered_delivers_every_row_once),
        cmocka_unit_test(stats_can_be_read_while_the_run_goes),
        cmocka_unit_test(copies_reach_the_sink_as_one_group),
        cmocka_unit_test(ordered_copies_follow_their_input_in_order),
        cmocka_unit_test(ordered_mode_keeps_input_order),
        cmocka_unit_test(batches_are_bounded_and_a_trickle_still_flows),
        cmocka_unit_test(failed_rows_skip_later_stages_and_reach_the_sink),
        cmocka_unit_test(a_failing_worker_is_restarted),
        cmocka_unit_test(restarts_are_limited_and_nothing_is_lost),
        cmocka_unit_test(the_log_says_when_no_restart_is_made),
        cmocka_unit_test(init_failure_stops_before_reading),
        cmocka_unit_test(async_stage_completes_out_of_order_within_limit),
        cmocka_unit_test(stop_drains_rows_in_flight),
        cmocka_unit_test(second_stop_aborts),
        cmocka_unit_test(a_first_look_at_two_stops_logs_no_drain),
        cmocka_unit_test(a_stop_tells_async_stages_and_their_unstarted_rows_are_deferred),
        cmocka_unit_test(abort_closes_an_async_stage_before_freeing_its_rows),
        cmocka_unit_test(failed_async_worker_is_closed_before_its_rows_move_on),
        cmocka_unit_test(a_row_the_async_stage_refuses_fails_alone),
        cmocka_unit_test(slow_sink_keeps_bytes_under_budget),
        cmocka_unit_test(too_many_failures_stop_the_job),
        cmocka_unit_test(invalid_chains_are_refused),
        cmocka_unit_test(stages_without_init_get_a_null_state_and_work),
        cmocka_unit_test(stress_many_workers_random_delays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
