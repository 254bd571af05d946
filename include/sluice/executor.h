/* sluice/executor.h — the streaming executor: a chain of stages joined by
 * bounded queues, run by worker threads, in bounded memory.
 *
 * A pipeline is a source stage, any number of map or async stages, and a
 * sink stage. Each stage has its own worker count and batch size; each
 * worker gets its own state from init() (load a model once, reuse it for
 * every row) and gives it back through close(). Rows are owned by the
 * executor: stages read and replace a row's data but never free a row.
 * A row that fails keeps its error and skips every later stage except the
 * sink, which sees every row exactly once; so does a row a stage dropped.
 *
 * Lifetimes: an async stage holds a row from submit() until the poll() that
 * returns it, and may read it from its own threads meanwhile. The executor
 * never frees, fails or sends on a row an instance holds before that
 * instance's close() has returned: on abort, and on a worker failure, the
 * instance is closed first. So close() must stop whatever reads held rows
 * (join the engine thread) and may still read them itself.
 *
 * Thread rules: sl_exec_run() blocks the calling thread; sl_exec_request_stop()
 * is async-signal-safe; the stats calls may be made from any thread at any
 * time during the run.
 */
#ifndef SLUICE_EXECUTOR_H
#define SLUICE_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "status.h"

/* The stop counter's type: C11's atomic_int, and for a C++ program (a
 * plugin, an embedding) std::atomic<int>, which has the same representation
 * (C++23 spells it atomic_int in <stdatomic.h>; before, <stdatomic.h> is not
 * C++). */
#ifdef __cplusplus
#include <atomic>
typedef std::atomic<int> sl_atomic_int;
#else
#include <stdatomic.h>
typedef atomic_int sl_atomic_int;
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_exec sl_exec;
typedef struct sl_row sl_row;

/* --- rows ----------------------------------------------------------------- */

/* Position in input order (0, 1, 2, ... as the source produced them). */
uint64_t sl_row_seq(const sl_row *row);
void *sl_row_data(const sl_row *row);
/* Replaces the payload; the previous payload is freed with its free
 * function unless it is the same pointer. `free_data` may be NULL. */
void sl_row_set_data(sl_row *row, void *data, void (*free_data)(void *data));
/* The payload's real size in bytes, counted against the memory budget. */
void sl_row_set_bytes(sl_row *row, size_t bytes);
size_t sl_row_bytes(const sl_row *row);
/* Marks the row failed with a message naming the input and the cause. The
 * executor records the stage. Later map and async stages skip the row. */
void sl_row_fail(sl_row *row, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The same, with the status that caused it (its sl_status_class() labels
 * the failure in metrics and the run report). sl_row_fail() records
 * SL_ERR_STAGE. */
void sl_row_fail_status(sl_row *row, sl_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
bool sl_row_failed(const sl_row *row);
/* Drops the row (a filter): it skips every later map and async stage, like
 * a failed row, and still reaches the sink, which writes nothing for it but
 * may record it as done (the caption job's ledger does, so a rerun skips
 * it). A failed row cannot be dropped: its error is still written. */
void sl_row_drop(sl_row *row);
bool sl_row_dropped(const sl_row *row);
/* Leaves the row for a later run: a stop came before the stage started
 * on it (an async stage's stop()). It skips every later map and async
 * stage, like a failed row, and still reaches the sink, which writes
 * nothing for it and must not record it as done (the caption job's
 * ledger does not, so a resume does it). Its input is then not complete:
 * no row of its group has sl_row_completes_input(). A failed or dropped
 * row cannot be deferred. */
void sl_row_defer(sl_row *row);
bool sl_row_deferred(const sl_row *row);
/* Fan-out: inside a map stage's process(), makes a new row (empty: no
 * payload, 0 bytes) that goes on after `parent` as a row of its own, from
 * the next stage on. It shares the parent's seq and is the parent's input's
 * copy number k (sl_row_copy_index: 1, 2, ... per input, whichever of the
 * input's rows made it). The input's rows are a group for the sink: in
 * ordered output they come out together, in copy order; and the last of the
 * group to reach the sink has sl_row_completes_input() (a sink records the
 * input as done with it). The copy is counted against the memory budget
 * like a source row, but never waits for room (a stage waiting for room it
 * holds itself would stall): the source waits instead. At most 65535 copies
 * per input. SL_ERR_INVALID_ARG outside a map stage's process() (sources,
 * async stages, sinks cannot emit), SL_ERR_NOMEM, SL_ERR_TOO_LARGE past the
 * limit. */
sl_status sl_row_emit(sl_row *parent, sl_row **child);
unsigned sl_row_copy_index(const sl_row *row);
/* Whether the row's input has copies (its rows are a group). */
bool sl_row_in_group(const sl_row *row);
/* At the sink: whether no other row of its input is still to come (always
 * true for a row whose input has no copies). */
bool sl_row_completes_input(const sl_row *row);
const char *sl_row_error(const sl_row *row);       /* NULL unless failed */
const char *sl_row_error_stage(const sl_row *row); /* NULL unless failed */
sl_status sl_row_error_status(const sl_row *row);  /* SL_OK unless failed */

/* --- stages --------------------------------------------------------------- */

typedef enum sl_stage_kind {
    SL_STAGE_SOURCE, /* produce(): one row per call, one worker */
    SL_STAGE_MAP,    /* process(): a batch in place */
    SL_STAGE_ASYNC,  /* submit() now, poll() completions later, out of order */
    SL_STAGE_SINK,   /* process(): the last stage; sees failed rows too */
} sl_stage_kind;

/* Why a worker is closed. */
typedef enum sl_exec_end {
    SL_END_COMPLETE, /* every input went through */
    SL_END_STOPPED,  /* a stop was requested; rows in flight were drained */
    SL_END_ABORTED,  /* a second stop, or the drain deadline passed */
    SL_END_FAILED,   /* a stage failed beyond its restarts, or too many rows failed */
    SL_END_RESTART,  /* this worker failed and is being replaced */
} sl_exec_end;

typedef struct sl_stage_def {
    const char *name;
    sl_stage_kind kind;
    int workers;       /* >= 1 (a source has exactly 1) */
    int batch_size;    /* rows per process() call, >= 1 */
    int max_in_flight; /* async: rows submitted and not yet completed, per worker */
    void *config;      /* handed to init() */

    /* Once per worker. *state is handed to every other call. */
    sl_status (*init)(void *config, int worker, void **state);
    void (*close)(void *state, sl_exec_end end);

    /* SOURCE: fill `row` (sl_row_set_data/bytes) or set *done at the end.
     * A row may be failed here (e.g. an unreadable directory). */
    sl_status (*produce)(void *state, sl_row *row, bool *done);
    /* MAP, SINK: work on n rows in place; fail single rows with
     * sl_row_fail(). A non-OK return is a worker failure: the batch's rows
     * are failed and the worker is restarted. */
    sl_status (*process)(void *state, sl_row *const *rows, size_t n);
    /* ASYNC: take one row; complete it later through poll(). To refuse a
     * row this worker cannot take (a bad request), fail it with
     * sl_row_fail_status() and return SL_OK: it goes on to the sink at
     * once and the worker carries on. A non-OK return is a worker failure
     * (the rows it holds fail, the worker is restarted). */
    sl_status (*submit)(void *state, sl_row *row);
    /* ASYNC: wait up to timeout_ms for completions; return up to `max` of
     * them in done[] and their number in *n_done. */
    sl_status (*poll)(void *state, sl_row **done, size_t max, int timeout_ms, size_t *n_done);
    /* ASYNC, optional: the first stop request (sl_exec_request_stop or
     * stop_requests; not --max-failed nor a broken stage). Rows the
     * instance holds but has not started on (an engine's queue) are to
     * come back through poll() deferred (sl_row_defer) rather than be
     * started, and rows submitted from now on may be deferred at once
     * (submit() defers and returns SL_OK, as a refusal fails); rows
     * started finish as usual. Called once per instance, on its worker's
     * thread, between its submit() and poll() calls. */
    void (*stop)(void *state);
} sl_stage_def;

/* --- the executor ------------------------------------------------------------ */

typedef struct sl_exec_params {
    uint64_t memory_budget;  /* bytes in flight at most; 0: a quarter of RAM */
    uint64_t row_bytes_hint; /* bytes a row may grow to (reserved at admission) */
    int queue_rows;          /* rows per edge; 0: 2 x batch x workers of the consumer, or
                                of the producer when that is more */
    uint64_t queue_bytes;    /* bytes per edge; 0: the memory budget */
    int flush_ms;            /* a partial batch waits at most this long (default 10) */
    bool ordered;            /* the sink sees rows in input order */
    int reorder_window;      /* ordered: rows in flight at most (default 4096) */
    double max_failed;       /* stop when more than this fraction failed (default 1: never) */
    long max_failed_min_rows;/* ... judged once this many rows are done (default 100) */
    int max_restarts;        /* per stage (default 3) */
    int stop_deadline_ms;    /* drain time after a stop request (default 30000) */
    /* Optional, owned by the caller (a signal handler may increment it):
     * 1 = stop reading and drain, 2 = abort; read as sl_exec_request_stop(). */
    const sl_atomic_int *stop_requests;
} sl_exec_params;

sl_exec_params sl_exec_default_params(void);

/* Validates the chain (source first, sink last, functions present) and
 * copies the definitions (not the configs they point to). */
sl_status sl_exec_create(const sl_exec_params *params, const sl_stage_def *stages,
                         size_t n_stages, sl_exec **out);

/* Runs the pipeline to its end. SL_OK when every input reached the sink;
 * SL_ERR_STOPPED after a stop request; SL_ERR_STAGE when a stage failed
 * beyond its restarts; SL_ERR_TOO_MANY_FAILED past max_failed; the status
 * of a stage's init() when a worker could not start (nothing was read). */
sl_status sl_exec_run(sl_exec *exec);

/* First call: stop reading and drain (async stages with stop() are told:
 * what they have not started comes back deferred). Second call (or the
 * deadline): abort. Async-signal-safe. */
void sl_exec_request_stop(sl_exec *exec);

typedef struct sl_stage_stats {
    const char *name;
    int workers;
    /* rows_out: passed on (the sink: done), neither failed nor dropped
     * here, nor deferred here or before (drained unsent at a stop). */
    uint64_t rows_in, rows_out, rows_failed;
    uint64_t queue_rows, queue_bytes;   /* waiting in this stage's input queue */
    uint64_t in_flight;                 /* async: submitted, not completed */
    uint64_t restarts;
    double busy_s, idle_s, blocked_s;   /* summed over workers */
    uint64_t rows_dropped;              /* dropped here (sl_row_drop), not in rows_out */
} sl_stage_stats;

typedef struct sl_exec_stats {
    uint64_t rows_produced, rows_done, rows_failed;
    uint64_t bytes_in_flight, peak_bytes_in_flight, memory_budget;
    double seconds;
    uint64_t rows_dropped;  /* rows done that a stage dropped (in rows_done) */
    uint64_t rows_deferred; /* rows done that a stage deferred (sl_row_defer; in rows_done) */
} sl_exec_stats;

size_t sl_exec_stage_count(const sl_exec *exec);
void sl_exec_stage_stats(const sl_exec *exec, size_t stage, sl_stage_stats *out);
void sl_exec_stats_get(const sl_exec *exec, sl_exec_stats *out);

void sl_exec_free(sl_exec *exec);

#ifdef __cplusplus
}
#endif
#endif
