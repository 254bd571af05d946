/* core/executor.c — runs a chain of stages on worker threads joined by
 * bounded queues (core/queue.h), in bounded memory.
 *
 * Memory: before the source makes a row it reserves max(row_bytes_hint,
 * largest row seen) bytes of the budget; a row that grows past its
 * reservation reserves the difference. Reservations only return when the
 * sink is done with a row, so the bytes of all live rows never exceed the
 * sum of reservations, which admission keeps within the budget (a row is
 * always admitted into an empty pipeline, so a huge row still moves).
 *
 * Failure: a stage function that returns an error fails the rows it held
 * and its worker is replaced (init again), up to max_restarts per stage.
 * Past that the stage fails every row it receives, reading stops, and the
 * run ends with SL_ERR_STAGE once the rows in flight have reached the sink:
 * no row is lost. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/queue.h"
#include "core/row.h"

typedef struct stage {
    sl_stage_def def;
    char *name;
    sl_queue *in;           /* NULL for the source */
    atomic_uint_fast64_t rows_in, rows_out, rows_failed, rows_dropped, in_flight, restarts;
    atomic_uint_fast64_t busy_ns, idle_ns, blocked_ns;
    atomic_bool broken;     /* restarts exhausted: fail every row */
    pthread_mutex_t restart_mu;
    char broken_msg[1024];
} stage;

typedef struct worker {
    struct sl_exec *exec;
    stage *st;
    size_t stage_index;
    int index;
    pthread_t thread;
    bool started;
    bool live;              /* an instance is open: init() succeeded, close() not yet called */
} worker;

struct sl_exec {
    sl_exec_params p;
    stage *stages;
    size_t n_stages;
    worker *workers;
    size_t n_workers;

    /* budget */
    pthread_mutex_t budget_mu;
    pthread_cond_t budget_cv;
    uint64_t reserved;
    atomic_uint_fast64_t bytes_in_flight, peak_bytes, peak_row_bytes;

    /* run state */
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* workers ready / exited, failures */
    size_t ready, exited;
    bool init_failed;
    atomic_int stop_requests;   /* written by signal handlers */
    atomic_bool stopping;       /* the source stops reading */
    atomic_bool stop_asked;     /* ... because of a stop request: async stages are told */
    atomic_bool aborting;
    sl_status result;           /* first failure wins */
    char result_msg[1024];
    atomic_uint_fast64_t rows_produced, rows_done, rows_failed, rows_dropped, rows_deferred;
    /* Atomic: the metrics server's thread reads them (sl_exec_stats_get)
     * while the run's thread sets them; plain fields were a data race. */
    atomic_uint_fast64_t t_start, t_end;
};

/* --- accounting ------------------------------------------------------------------ */

static void atomic_max(atomic_uint_fast64_t *a, uint64_t v)
{
    uint64_t cur = atomic_load_explicit(a, memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

void sl_exec_row_bytes_changed(sl_exec *exec, sl_row *row, uint64_t old_bytes)
{
    if (row->bytes > old_bytes) {
        uint64_t now = atomic_fetch_add(&exec->bytes_in_flight, row->bytes - old_bytes) +
                       (row->bytes - old_bytes);
        atomic_max(&exec->peak_bytes, now);
    } else {
        atomic_fetch_sub(&exec->bytes_in_flight, old_bytes - row->bytes);
    }
    atomic_max(&exec->peak_row_bytes, row->bytes);
    if (row->bytes > row->reserved) {
        pthread_mutex_lock(&exec->budget_mu);
        exec->reserved += row->bytes - row->reserved;
        pthread_mutex_unlock(&exec->budget_mu);
        row->reserved = row->bytes;
    }
}

/* Reserves room for one more row. Returns false when it would have to wait
 * and !wait, or when the run is aborting. */
static bool reserve(sl_exec *exec, uint64_t amount, bool wait, uint64_t *blocked_ns)
{
    pthread_mutex_lock(&exec->budget_mu);
    bool fits = exec->reserved == 0 || exec->reserved + amount <= exec->p.memory_budget;
    if (!fits && wait) {
        uint64_t t0 = sl_now_ns();
        while (!(exec->reserved == 0 || exec->reserved + amount <= exec->p.memory_budget) &&
               !atomic_load(&exec->aborting))
            pthread_cond_wait(&exec->budget_cv, &exec->budget_mu);
        *blocked_ns += sl_now_ns() - t0;
        fits = !atomic_load(&exec->aborting);
    }
    if (fits)
        exec->reserved += amount;
    pthread_mutex_unlock(&exec->budget_mu);
    return fits;
}

/* What a new row reserves: the largest row seen, or the hint if larger. */
static uint64_t row_reservation(sl_exec *exec)
{
    uint64_t amount = atomic_load(&exec->peak_row_bytes);
    return amount < exec->p.row_bytes_hint ? exec->p.row_bytes_hint : amount;
}

static void release(sl_exec *exec, uint64_t amount, uint64_t bytes)
{
    atomic_fetch_sub(&exec->bytes_in_flight, bytes);
    pthread_mutex_lock(&exec->budget_mu);
    exec->reserved -= amount;
    pthread_cond_broadcast(&exec->budget_cv);
    pthread_mutex_unlock(&exec->budget_mu);
}

static void free_row(sl_row *row, void *user)
{
    sl_exec *exec = user;
    if (row->free_data && row->data)
        row->free_data(row->data);
    if (exec)
        release(exec, row->reserved, row->bytes);
    if (row->group && atomic_fetch_sub(&row->group->refs, 1) == 1)
        sl_free(row->group);
    sl_free(row->error);
    sl_free(row);
}

/* Ends the run with `status` unless an earlier failure already did. */
static void set_result(sl_exec *exec, sl_status status, const char *msg)
{
    pthread_mutex_lock(&exec->mu);
    if (exec->result == SL_OK || exec->result == SL_ERR_STOPPED) {
        exec->result = status;
        snprintf(exec->result_msg, sizeof exec->result_msg, "%s", msg);
    }
    pthread_cond_broadcast(&exec->cv);
    pthread_mutex_unlock(&exec->mu);
}

static void abort_all(sl_exec *exec)
{
    atomic_store(&exec->aborting, true);
    atomic_store(&exec->stopping, true);
    for (size_t i = 0; i < exec->n_stages; i++)
        if (exec->stages[i].in)
            sl_queue_abort(exec->stages[i].in);
    pthread_mutex_lock(&exec->budget_mu);
    pthread_cond_broadcast(&exec->budget_cv);
    pthread_mutex_unlock(&exec->budget_mu);
}

/* --- fan-out ----------------------------------------------------------------------- */

/* The copies a map worker's process() made, each after its parent. */
typedef struct emitted {
    struct sl_exec *exec;
    const stage *st;
    sl_row **rows, **parents;
    size_t n, cap;
} emitted;

/* Set on a map worker's thread while its process() runs. */
static _Thread_local emitted *emitting;

enum { MAX_COPIES = 65535 };

sl_status sl_row_emit(sl_row *parent, sl_row **child)
{
    *child = NULL;
    emitted *em = emitting;
    if (!em || parent->exec != em->exec || parent->stage != em->st->name)
        return sl_fail(SL_ERR_INVALID_ARG, "a row can be copied only by a map stage, inside "
                                           "process(), from a row of its batch");
    if (parent->group && atomic_load(&parent->group->copies) >= MAX_COPIES)
        return sl_fail(SL_ERR_TOO_LARGE, "stage '%s' made more than %d rows of one input",
                       em->st->name, MAX_COPIES);
    if (em->n == em->cap) {
        size_t cap = em->cap ? 2 * em->cap : 16;
        sl_row **rows = sl_realloc(em->rows, 2 * cap * sizeof *rows);
        if (!rows)
            return sl_fail(SL_ERR_NOMEM, "out of memory copying a row");
        memmove(rows + cap, rows + em->cap, em->n * sizeof *rows); /* the parents' half */
        em->rows = rows;
        em->parents = rows + cap;
        em->cap = cap;
    }
    sl_row *row = sl_calloc(1, sizeof *row);
    if (!parent->group && row) {
        if ((parent->group = sl_calloc(1, sizeof *parent->group)) != NULL) {
            atomic_init(&parent->group->members, 1);
            atomic_init(&parent->group->refs, 1);
        }
    }
    if (!row || !parent->group) {
        sl_free(row);
        return sl_fail(SL_ERR_NOMEM, "out of memory copying a row");
    }
    sl_exec *exec = em->exec;
    uint64_t amount = row_reservation(exec);
    pthread_mutex_lock(&exec->budget_mu); /* never waits: see sluice/executor.h */
    exec->reserved += amount;
    pthread_mutex_unlock(&exec->budget_mu);
    row->seq = parent->seq;
    row->reserved = amount;
    row->exec = exec;
    row->stage = parent->stage;
    row->group = parent->group;
    row->copy = atomic_fetch_add(&row->group->copies, 1) + 1;
    atomic_fetch_add(&row->group->refs, 1);
    atomic_fetch_add(&row->group->members, 1); /* before the row can move on */
    em->rows[em->n] = row;
    em->parents[em->n++] = parent;
    *child = row;
    return SL_OK;
}

/* The batch with each parent's copies after it, in out (room for n +
 * em->n rows). */
static size_t with_copies(sl_row **batch, size_t n, const emitted *em, sl_row **out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        out[k++] = batch[i];
        for (size_t c = 0; c < em->n; c++)
            if (em->parents[c] == batch[i])
                out[k++] = em->rows[c];
    }
    return k;
}

/* --- worker plumbing ----------------------------------------------------------- */

static sl_queue *next_queue(worker *w)
{
    return w->stage_index + 1 < w->exec->n_stages ? w->exec->stages[w->stage_index + 1].in : NULL;
}

/* Sends rows on; false if the run is aborting (the rows are then freed). */
static bool forward(worker *w, sl_row **rows, size_t n)
{
    if (n == 0)
        return true;
    stage *st = w->st;
    size_t failed = 0, dropped = 0, deferred = 0;
    for (size_t i = 0; i < n; i++) {
        bool mine = rows[i]->mark_stage == st->name;
        if (rows[i]->error && mine)
            failed++;
        else if (rows[i]->dropped && !rows[i]->error && mine)
            dropped++;
        else if (rows[i]->deferred) /* here or before: drained unsent at a stop, so no
                                       stage passed it on (the run's rows_deferred) */
            deferred++;
    }
    atomic_fetch_add(&st->rows_failed, failed);
    atomic_fetch_add(&st->rows_dropped, dropped);
    atomic_fetch_add(&st->rows_out, n - failed - dropped - deferred);
    uint64_t blocked = 0;
    size_t pushed = sl_queue_push(next_queue(w), rows, n, &blocked);
    atomic_fetch_add(&st->blocked_ns, blocked);
    for (size_t i = pushed; i < n; i++) /* aborting: the queue frees what it holds */
        free_row(rows[i], w->exec);
    return pushed == n;
}

static sl_exec_end end_reason(sl_exec *exec)
{
    if (atomic_load(&exec->aborting))
        return SL_END_ABORTED;
    pthread_mutex_lock(&exec->mu);
    sl_status r = exec->result;
    pthread_mutex_unlock(&exec->mu);
    if (r != SL_OK && r != SL_ERR_STOPPED)
        return SL_END_FAILED;
    return atomic_load(&exec->stopping) ? SL_END_STOPPED : SL_END_COMPLETE;
}

/* Ends the worker's instance (if it has a live one) with close(). */
static void close_instance(worker *w, void **state, sl_exec_end end)
{
    if (w->live && w->st->def.close)
        w->st->def.close(*state, end);
    w->live = false;
    *state = NULL;
}

/* A stage function failed with `why`: replace the worker's instance, or
 * mark the stage broken. Returns whether the worker has a live instance
 * again. */
static bool restart_worker(worker *w, void **state, const char *why)
{
    stage *st = w->st;
    close_instance(w, state, SL_END_RESTART);
    uint64_t n = atomic_fetch_add(&st->restarts, 1) + 1;
    if ((int)n <= w->exec->p.max_restarts)
        sl_log(SL_LOG_WARN, "stage '%s' worker %d failed (%s); restart %llu of %d", st->name,
               w->index, why, (unsigned long long)n, w->exec->p.max_restarts);
    else /* "restart 1 of 0" read as if one were made */
        sl_log(SL_LOG_WARN, "stage '%s' worker %d failed (%s); %s", st->name, w->index, why,
               w->exec->p.max_restarts ? "no restart left" : "not restarted");
    if ((int)n <= w->exec->p.max_restarts &&
        (!st->def.init || st->def.init(st->def.config, w->index, state) == SL_OK)) {
        w->live = true;
        return true;
    }
    pthread_mutex_lock(&st->restart_mu);
    if (!atomic_load(&st->broken)) {
        const char *last = (int)n <= w->exec->p.max_restarts ? sl_last_error() : why;
        if (n == 1)
            snprintf(st->broken_msg, sizeof st->broken_msg, "stage '%s' failed: %s", st->name, last);
        else
            snprintf(st->broken_msg, sizeof st->broken_msg, "stage '%s' failed %llu times, last: %s",
                     st->name, (unsigned long long)n, last);
        atomic_store(&st->broken, true);
    }
    pthread_mutex_unlock(&st->restart_mu);
    *state = NULL;
    set_result(w->exec, SL_ERR_STAGE, st->broken_msg);
    atomic_store(&w->exec->stopping, true); /* stop reading; drain what is in flight */
    return false;
}

static void fail_rows(stage *st, sl_row **rows, size_t n, const char *msg)
{
    for (size_t i = 0; i < n; i++)
        if (!rows[i]->error) {
            rows[i]->stage = st->name;
            sl_row_fail(rows[i], "%s", msg);
        }
}

static void mark_ready(sl_exec *exec, bool ok)
{
    pthread_mutex_lock(&exec->mu);
    exec->ready++;
    if (!ok)
        exec->init_failed = true;
    pthread_cond_broadcast(&exec->cv);
    pthread_mutex_unlock(&exec->mu);
}

/* The source starts reading only when every worker is ready, so a model
 * that cannot load fails the run before any input is read. */
static bool wait_all_ready(sl_exec *exec)
{
    pthread_mutex_lock(&exec->mu);
    while (exec->ready < exec->n_workers && !exec->init_failed)
        pthread_cond_wait(&exec->cv, &exec->mu);
    bool ok = !exec->init_failed;
    pthread_mutex_unlock(&exec->mu);
    return ok;
}

/* --- the four worker loops -------------------------------------------------------- */

static void run_source(worker *w, void *state)
{
    sl_exec *exec = w->exec;
    stage *st = w->st;
    sl_queue *sink_in = exec->stages[exec->n_stages - 1].in;
    size_t cap = (size_t)st->def.batch_size;
    sl_row **batch = sl_malloc(cap * sizeof *batch);
    size_t n = 0;
    uint64_t seq = 0, blocked = 0, first_ns = 0;
    if (!batch) {
        set_result(exec, SL_ERR_NOMEM, "out of memory starting the source");
        return;
    }
    while (!atomic_load(&exec->stopping)) {
        uint64_t amount = row_reservation(exec);
        /* Never wait while holding unsent rows: they may be what frees room. */
        if (!reserve(exec, amount, false, &blocked)) {
            if (!forward(w, batch, n))
                break;
            n = 0;
            if (!reserve(exec, amount, true, &blocked))
                break;
        }
        if (exec->p.ordered && seq >= (uint64_t)exec->p.reorder_window) {
            if (n && !forward(w, batch, n)) {
                release(exec, amount, 0);
                n = 0;
                break;
            }
            n = 0;
            if (!sl_queue_wait_window(sink_in, seq, &blocked)) {
                release(exec, amount, 0);
                break;
            }
        }
        sl_row *row = sl_calloc(1, sizeof *row);
        if (!row) {
            release(exec, amount, 0);
            set_result(exec, SL_ERR_NOMEM, "out of memory making a row");
            break;
        }
        row->seq = seq;
        row->reserved = amount;
        row->exec = exec;
        row->stage = st->name;
        bool done = false;
        uint64_t t0 = sl_now_ns();
        sl_status rc = st->def.produce(state, row, &done);
        atomic_fetch_add(&st->busy_ns, sl_now_ns() - t0);
        if (rc != SL_OK || done) {
            free_row(row, exec);
            if (rc != SL_OK) {
                char msg[1024];
                snprintf(msg, sizeof msg, "source '%s' failed: %s", st->name, sl_last_error());
                set_result(exec, rc, msg);
            }
            break;
        }
        seq++;
        atomic_fetch_add(&exec->rows_produced, 1);
        if (n == 0)
            first_ns = sl_now_ns();
        batch[n++] = row;
        if (n == cap || sl_now_ns() - first_ns > (uint64_t)exec->p.flush_ms * 1000000ull) {
            if (!forward(w, batch, n)) {
                n = 0;
                break;
            }
            n = 0;
        }
    }
    forward(w, batch, n);
    atomic_fetch_add(&st->blocked_ns, blocked);
    sl_free(batch);
}

static void run_map(worker *w, void **state, bool is_sink)
{
    bool alive = true;
    sl_exec *exec = w->exec;
    stage *st = w->st;
    size_t cap = (size_t)st->def.batch_size;
    sl_row **batch = sl_malloc(2 * cap * sizeof *batch);
    if (!batch) {
        set_result(exec, SL_ERR_NOMEM, "out of memory starting a worker");
        return;
    }
    sl_row **ok_rows = batch + cap;
    emitted em = {.exec = exec, .st = st};
    sl_row **out = NULL; /* the batch and its copies */
    size_t out_cap = 0;
    for (;;) {
        bool closed;
        uint64_t idle = 0;
        size_t n = sl_queue_pop(st->in, batch, cap, true, exec->p.flush_ms, &idle, &closed);
        atomic_fetch_add(&st->idle_ns, idle);
        if (n == 0)
            break;
        atomic_fetch_add(&st->rows_in, n);
        size_t n_ok = 0;
        for (size_t i = 0; i < n; i++) {
            if (is_sink || (!batch[i]->error && !batch[i]->dropped && !batch[i]->deferred)) {
                batch[i]->stage = st->name;
                ok_rows[n_ok++] = batch[i];
            }
        }
        if (atomic_load(&st->broken) || !alive) {
            fail_rows(st, ok_rows, n_ok, st->broken_msg);
            n_ok = 0; /* a broken sink cannot write: the rows are lost with it */
        }
        if (n_ok) {
            uint64_t t0 = sl_now_ns();
            emitting = is_sink ? NULL : &em;
            sl_clear_error(); /* not an earlier call's message as this one's cause */
            sl_status rc = st->def.process(*state, ok_rows, n_ok);
            emitting = NULL;
            atomic_fetch_add(&st->busy_ns, sl_now_ns() - t0);
            if (rc != SL_OK) {
                char why[512], msg[1024];
                if (*sl_last_error())
                    snprintf(why, sizeof why, "%s", sl_last_error());
                else /* a plugin that returned a status alone: the rows said "failed: " */
                    snprintf(why, sizeof why, "process() returned status '%s' with no message",
                             sl_status_name(rc));
                snprintf(msg, sizeof msg, "stage '%s' worker failed: %s", st->name, why);
                fail_rows(st, ok_rows, n_ok, msg);
                fail_rows(st, em.rows, em.n, msg);
                alive = restart_worker(w, state, why); /* closes it before the rows move on */
            }
        }
        if (!is_sink) {
            sl_row **send = batch;
            size_t n_send = n;
            if (em.n && n + em.n > out_cap) {
                sl_row **grown = sl_realloc(out, (n + em.n) * sizeof *grown);
                if (!grown) {
                    /* The copies cannot be placed: they fail, with the reason. */
                    fail_rows(st, em.rows, em.n, "out of memory sending copies of rows on");
                    for (size_t c = 0; c < em.n; c++)
                        forward(w, &em.rows[c], 1);
                    em.n = 0;
                } else {
                    out = grown;
                    out_cap = n + em.n;
                }
            }
            if (em.n) {
                n_send = with_copies(batch, n, &em, out);
                send = out;
                em.n = 0;
            }
            if (!forward(w, send, n_send))
                break;
            continue;
        }
        uint64_t failed = 0, dropped = 0, deferred = 0;
        for (size_t i = 0; i < n; i++) {
            failed += batch[i]->error != NULL;
            dropped += batch[i]->dropped;
            deferred += batch[i]->deferred;
            if (batch[i]->error && batch[i]->mark_stage == st->name)
                atomic_fetch_add(&st->rows_failed, 1);
            else if (!batch[i]->deferred) /* not written: left for the resume */
                atomic_fetch_add(&st->rows_out, 1);
            free_row(batch[i], exec);
        }
        atomic_fetch_add(&exec->rows_dropped, dropped);
        atomic_fetch_add(&exec->rows_deferred, deferred);
        uint64_t done = atomic_fetch_add(&exec->rows_done, n) + n;
        uint64_t all_failed = atomic_fetch_add(&exec->rows_failed, failed) + failed;
        if (exec->p.max_failed < 1.0 && done >= (uint64_t)exec->p.max_failed_min_rows &&
            (double)all_failed > exec->p.max_failed * (double)done) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "stopped when %llu of %llu rows had failed (%.1f%%), more than the allowed %.1f%% (--max-failed)",
                     (unsigned long long)all_failed, (unsigned long long)done,
                     100.0 * (double)all_failed / (double)done, 100.0 * exec->p.max_failed);
            set_result(exec, SL_ERR_TOO_MANY_FAILED, msg);
            atomic_store(&exec->stopping, true);
        }
    }
    for (size_t c = 0; c < em.n; c++) /* aborting: copies not sent on */
        free_row(em.rows[c], exec);
    sl_free(em.rows);
    sl_free(out);
    sl_free(batch);
}

static void unlink_inflight(sl_row **head, sl_row *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        *head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* The async instance failed: close it first (it may still be reading the
 * rows it holds, as an engine thread does), then fail and send on those
 * rows, then start a new instance. Returns whether one is live. */
static bool async_worker_failed(worker *w, void **state, sl_row **held, size_t *n_held)
{
    stage *st = w->st;
    char why[512], msg[1024];
    snprintf(why, sizeof why, "%s", sl_last_error());
    snprintf(msg, sizeof msg, "stage '%s' worker failed: %s", st->name, why);
    close_instance(w, state, SL_END_RESTART);
    while (*held) {
        sl_row *r = *held;
        unlink_inflight(held, r);
        atomic_fetch_sub(&st->in_flight, 1);
        fail_rows(st, &r, 1, msg);
        forward(w, &r, 1);
    }
    *n_held = 0;
    return restart_worker(w, state, why);
}

static void run_async(worker *w, void **state)
{
    sl_exec *exec = w->exec;
    stage *st = w->st;
    size_t cap = (size_t)st->def.batch_size, limit = (size_t)st->def.max_in_flight;
    size_t done_cap = limit > cap ? limit : cap;
    sl_row **batch = sl_malloc((cap + done_cap) * sizeof *batch);
    if (!batch) {
        set_result(exec, SL_ERR_NOMEM, "out of memory starting a worker");
        return;
    }
    sl_row **done = batch + cap;
    sl_row *inflight = NULL;
    size_t n_inflight = 0;
    bool input_done = false, alive = true;
    bool told = false; /* this instance was told of the stop */
    while (!atomic_load(&exec->aborting)) {
        if (!told && alive && st->def.stop && atomic_load(&exec->stop_asked)) {
            st->def.stop(*state);
            told = true;
        }
        if (!input_done && n_inflight < limit) {
            size_t want = limit - n_inflight < cap ? limit - n_inflight : cap;
            bool closed;
            uint64_t idle = 0;
            size_t n = sl_queue_pop(st->in, batch, want, n_inflight == 0,
                                    n_inflight == 0 ? exec->p.flush_ms : 0, &idle, &closed);
            atomic_fetch_add(&st->idle_ns, idle);
            input_done = closed;
            atomic_fetch_add(&st->rows_in, n);
            size_t n_fwd = 0;
            uint64_t t0 = sl_now_ns();
            for (size_t i = 0; i < n; i++) {
                sl_row *r = batch[i];
                if (r->dropped || r->deferred) {
                    batch[n_fwd++] = r;
                    continue;
                }
                if (r->error || atomic_load(&st->broken) || !alive) {
                    if (!r->error)
                        fail_rows(st, &r, 1, st->broken_msg);
                    batch[n_fwd++] = r;
                    continue;
                }
                r->stage = st->name;
                r->next = inflight;
                if (inflight)
                    inflight->prev = r;
                inflight = r;
                n_inflight++;
                atomic_fetch_add(&st->in_flight, 1);
                if (st->def.submit(*state, r) != SL_OK) {
                    alive = async_worker_failed(w, state, &inflight, &n_inflight);
                    told = false; /* a new instance: told again */
                } else if (r->error || r->deferred) {
                    /* Refused (the stage failed this row alone) or deferred
                     * (stopping): the stage does not hold it. */
                    unlink_inflight(&inflight, r);
                    n_inflight--;
                    atomic_fetch_sub(&st->in_flight, 1);
                    batch[n_fwd++] = r;
                }
            }
            atomic_fetch_add(&st->busy_ns, sl_now_ns() - t0);
            if (!forward(w, batch, n_fwd))
                break;
        }
        if (n_inflight == 0) {
            if (input_done)
                break;
            continue;
        }
        size_t n_done = 0;
        int timeout = (n_inflight >= limit || input_done) ? 50 : 1;
        uint64_t t0 = sl_now_ns();
        sl_status rc = st->def.poll(*state, done, done_cap, timeout, &n_done);
        atomic_fetch_add(&st->busy_ns, sl_now_ns() - t0);
        if (rc != SL_OK) {
            alive = async_worker_failed(w, state, &inflight, &n_inflight);
            told = false;
            continue;
        }
        for (size_t i = 0; i < n_done; i++) {
            unlink_inflight(&inflight, done[i]);
            n_inflight--;
            atomic_fetch_sub(&st->in_flight, 1);
        }
        if (!forward(w, done, n_done))
            break;
    }
    /* Aborting: the instance may still be reading the rows it holds, so it
     * is closed before they are freed. */
    if (inflight)
        close_instance(w, state, SL_END_ABORTED);
    while (inflight) {
        sl_row *r = inflight;
        unlink_inflight(&inflight, r);
        atomic_fetch_sub(&st->in_flight, 1);
        free_row(r, exec);
    }
    sl_free(batch);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    sl_exec *exec = w->exec;
    stage *st = w->st;
    void *state = NULL;
    bool ok = true;
    sl_status init_rc = st->def.init ? st->def.init(st->def.config, w->index, &state) : SL_OK;
    if (init_rc != SL_OK) {
        /* The init's own status (a model that cannot load is SL_ERR_MODEL)
         * tells the caller more than "a stage failed". */
        char msg[1024], named[300];
        const char *why = sl_last_error();
        /* A stage that named itself already (a Lua script's "stage 'x': ...")
         * is named once. */
        int n = snprintf(named, sizeof named, "stage '%s': ", st->name);
        if (n > 0 && (size_t)n < sizeof named && strncmp(why, named, (size_t)n) == 0)
            why += n;
        snprintf(msg, sizeof msg, "stage '%s' could not start: %s", st->name, why);
        set_result(exec, init_rc, msg);
        ok = false;
    }
    w->live = ok;
    mark_ready(exec, ok);
    if (ok && wait_all_ready(exec)) {
        switch (st->def.kind) {
        case SL_STAGE_SOURCE: run_source(w, state); break;
        case SL_STAGE_MAP: run_map(w, &state, false); break;
        case SL_STAGE_SINK: run_map(w, &state, true); break;
        case SL_STAGE_ASYNC: run_async(w, &state); break;
        }
    }
    close_instance(w, &state, end_reason(exec));
    if (!ok || !wait_all_ready(exec))
        abort_all(exec); /* nothing was read: unblock everyone and end */
    sl_queue *out = next_queue(w);
    if (out)
        sl_queue_producer_done(out);
    pthread_mutex_lock(&exec->mu);
    exec->exited++;
    pthread_cond_broadcast(&exec->cv);
    pthread_mutex_unlock(&exec->mu);
    return NULL;
}

/* --- public API ---------------------------------------------------------------- */

sl_exec_params sl_exec_default_params(void)
{
    return (sl_exec_params){
        .memory_budget = 0,
        .row_bytes_hint = 0,
        .queue_rows = 0,
        .queue_bytes = 0,
        .flush_ms = 10,
        .ordered = false,
        .reorder_window = 4096,
        .max_failed = 1.0,
        .max_failed_min_rows = 100,
        .max_restarts = 3,
        .stop_deadline_ms = 30000,
    };
}

static uint64_t default_budget(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0)
        return 1ull << 30;
    return (uint64_t)pages * (uint64_t)page / 4;
}

static sl_status check_stage(const sl_stage_def *d, size_t i, size_t n)
{
    const char *name = d->name ? d->name : "(unnamed)";
    if (!d->name || !*d->name)
        return sl_fail(SL_ERR_INVALID_ARG, "stage %zu has no name", i);
    if ((i == 0) != (d->kind == SL_STAGE_SOURCE))
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': the first stage, and only it, must be a source", name);
    if ((i == n - 1) != (d->kind == SL_STAGE_SINK))
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': the last stage, and only it, must be a sink", name);
    if (d->workers < 1 || (d->kind == SL_STAGE_SOURCE && d->workers != 1))
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': workers must be >= 1 (a source has 1), got %d",
                       name, d->workers);
    if (d->batch_size < 1)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': batch_size must be >= 1, got %d", name, d->batch_size);
    bool fns = d->kind == SL_STAGE_SOURCE  ? d->produce != NULL
               : d->kind == SL_STAGE_ASYNC ? d->submit && d->poll && d->max_in_flight >= 1
                                           : d->process != NULL;
    if (!fns)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': missing the functions its kind needs", name);
    return SL_OK;
}

sl_status sl_exec_create(const sl_exec_params *params, const sl_stage_def *defs, size_t n,
                         sl_exec **out)
{
    *out = NULL;
    if (n < 2)
        return sl_fail(SL_ERR_INVALID_ARG, "a pipeline needs a source and a sink, got %zu stages", n);
    for (size_t i = 0; i < n; i++) {
        sl_status st = check_stage(&defs[i], i, n);
        if (st != SL_OK)
            return st;
    }
    sl_exec *exec = sl_calloc(1, sizeof *exec);
    if (!exec)
        return sl_fail(SL_ERR_NOMEM, "out of memory creating the executor");
    exec->p = params ? *params : sl_exec_default_params();
    if (!exec->p.memory_budget)
        exec->p.memory_budget = default_budget();
    if (exec->p.flush_ms < 0)
        exec->p.flush_ms = 0;
    if (exec->p.reorder_window < 1)
        exec->p.reorder_window = 1;
    exec->stages = sl_calloc(n, sizeof *exec->stages);
    exec->n_stages = n;
    pthread_mutex_init(&exec->mu, NULL);
    sl_cond_init_monotonic(&exec->cv);
    pthread_mutex_init(&exec->budget_mu, NULL);
    pthread_cond_init(&exec->budget_cv, NULL);
    if (!exec->stages)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        stage *st = &exec->stages[i];
        st->def = defs[i];
        pthread_mutex_init(&st->restart_mu, NULL);
        exec->n_workers += (size_t)defs[i].workers;
        if (!(st->name = sl_strdup(defs[i].name)))
            goto nomem;
        if (i == 0)
            continue;
        bool sink_ordered = exec->p.ordered && i == n - 1;
        size_t rows = sink_ordered ? (size_t)exec->p.reorder_window
                      : exec->p.queue_rows > 0 ? (size_t)exec->p.queue_rows
                                               : 2 * (size_t)defs[i].batch_size * (size_t)defs[i].workers;
        /* Room for two of the producer's batches too: a small-batch stage
         * behind a large-batch one otherwise hands over every few rows. */
        size_t producer = 2 * (size_t)defs[i - 1].batch_size * (size_t)defs[i - 1].workers;
        if (!sink_ordered && exec->p.queue_rows <= 0 && rows < producer)
            rows = producer;
        uint64_t bytes = exec->p.queue_bytes ? exec->p.queue_bytes : exec->p.memory_budget;
        st->in = sl_queue_new(rows, bytes, defs[i - 1].workers, sink_ordered);
        if (!st->in)
            goto nomem;
        if (i == n - 1)
            sl_queue_set_sink(st->in);
        sl_queue_set_row_free(st->in, free_row, NULL);
    }
    *out = exec;
    return SL_OK;
nomem:
    sl_exec_free(exec);
    return sl_fail(SL_ERR_NOMEM, "out of memory creating the executor");
}

void sl_exec_request_stop(sl_exec *exec) { atomic_fetch_add(&exec->stop_requests, 1); }

sl_status sl_exec_run(sl_exec *exec)
{
    exec->workers = sl_calloc(exec->n_workers, sizeof *exec->workers);
    if (!exec->workers)
        return sl_fail(SL_ERR_NOMEM, "out of memory starting the executor");
    atomic_store(&exec->t_start, sl_now_ns());
    size_t k = 0;
    for (size_t i = 0; i < exec->n_stages; i++)
        for (int j = 0; j < exec->stages[i].def.workers; j++, k++) {
            worker *w = &exec->workers[k];
            *w = (worker){.exec = exec, .st = &exec->stages[i], .stage_index = i, .index = j};
            if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
                set_result(exec, SL_ERR_NOMEM, "cannot start a worker thread");
                mark_ready(exec, false);
                pthread_mutex_lock(&exec->mu);
                exec->exited++;
                pthread_mutex_unlock(&exec->mu);
                abort_all(exec);
                continue;
            }
            w->started = true;
        }

    uint64_t stop_deadline = 0;
    pthread_mutex_lock(&exec->mu);
    while (exec->exited < exec->n_workers) {
        struct timespec ts;
        sl_deadline_after(20, &ts);
        pthread_cond_timedwait(&exec->cv, &exec->mu, &ts);
        int stops = atomic_load(&exec->stop_requests);
        if (exec->p.stop_requests && atomic_load(exec->p.stop_requests) > stops)
            stops = atomic_load(exec->p.stop_requests);
        if (stops >= 1 && !stop_deadline) {
            stop_deadline = sl_now_ns() + (uint64_t)exec->p.stop_deadline_ms * 1000000ull;
            if (exec->result == SL_OK) {
                exec->result = SL_ERR_STOPPED;
                snprintf(exec->result_msg, sizeof exec->result_msg,
                         "stopped on request; rows in flight were finished and written");
            }
            atomic_store(&exec->stop_asked, true);
            atomic_store(&exec->stopping, true);
            /* A counter already at 2 (a program's abort, or two signals
             * within one look) drops the rows in flight just below. */
            if (stops >= 2)
                sl_log(SL_LOG_WARN, "stop requested: stopping at once, rows in flight are dropped");
            else
                sl_log(SL_LOG_WARN,
                       "stop requested: finishing rows in flight (a second request stops at once)");
        }
        bool past_deadline = stop_deadline && sl_now_ns() > stop_deadline;
        if ((stops >= 2 || past_deadline) && !atomic_load(&exec->aborting)) {
            snprintf(exec->result_msg, sizeof exec->result_msg,
                     "stopped at once (%s); rows in flight were dropped, finished rows were kept",
                     stops >= 2 ? "second stop request" : "drain deadline passed");
            exec->result = SL_ERR_STOPPED;
            pthread_mutex_unlock(&exec->mu);
            abort_all(exec);
            pthread_mutex_lock(&exec->mu);
        }
    }
    pthread_mutex_unlock(&exec->mu);
    for (size_t i = 0; i < exec->n_workers; i++)
        if (exec->workers[i].started)
            pthread_join(exec->workers[i].thread, NULL);
    atomic_store(&exec->t_end, sl_now_ns());
    if (exec->result != SL_OK)
        return sl_fail(exec->result, "%s", exec->result_msg);
    return SL_OK;
}

size_t sl_exec_stage_count(const sl_exec *exec) { return exec->n_stages; }

void sl_exec_stage_stats(const sl_exec *exec, size_t i, sl_stage_stats *out)
{
    stage *st = &exec->stages[i];
    *out = (sl_stage_stats){
        .name = st->name,
        .workers = st->def.workers,
        .rows_in = atomic_load(&st->rows_in),
        .rows_out = atomic_load(&st->rows_out),
        .rows_failed = atomic_load(&st->rows_failed),
        .in_flight = atomic_load(&st->in_flight),
        .restarts = atomic_load(&st->restarts),
        .busy_s = (double)atomic_load(&st->busy_ns) / 1e9,
        .idle_s = (double)atomic_load(&st->idle_ns) / 1e9,
        .blocked_s = (double)atomic_load(&st->blocked_ns) / 1e9,
        .rows_dropped = atomic_load(&st->rows_dropped),
    };
    if (st->in)
        sl_queue_depth(st->in, &out->queue_rows, &out->queue_bytes);
}

void sl_exec_stats_get(const sl_exec *exec, sl_exec_stats *out)
{
    uint64_t start = atomic_load(&exec->t_start), end = atomic_load(&exec->t_end);
    if (!end)
        end = sl_now_ns();
    *out = (sl_exec_stats){
        .rows_produced = atomic_load(&exec->rows_produced),
        .rows_done = atomic_load(&exec->rows_done),
        .rows_failed = atomic_load(&exec->rows_failed),
        .bytes_in_flight = atomic_load(&exec->bytes_in_flight),
        .peak_bytes_in_flight = atomic_load(&exec->peak_bytes),
        .memory_budget = exec->p.memory_budget,
        .seconds = start ? (double)(end - start) / 1e9 : 0.0,
        .rows_dropped = atomic_load(&exec->rows_dropped),
        .rows_deferred = atomic_load(&exec->rows_deferred),
    };
}

void sl_exec_free(sl_exec *exec)
{
    if (!exec)
        return;
    for (size_t i = 0; i < exec->n_stages && exec->stages; i++) {
        stage *st = &exec->stages[i];
        if (st->in) {
            sl_queue_set_row_free(st->in, free_row, exec);
            sl_queue_free(st->in);
        }
        pthread_mutex_destroy(&st->restart_mu);
        sl_free(st->name);
    }
    sl_free(exec->stages);
    sl_free(exec->workers);
    pthread_mutex_destroy(&exec->mu);
    pthread_cond_destroy(&exec->cv);
    pthread_mutex_destroy(&exec->budget_mu);
    pthread_cond_destroy(&exec->budget_cv);
    sl_free(exec);
}
