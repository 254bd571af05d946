/* job/progress.c — see progress.h. */
#include <pthread.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "job/progress.h"

sl_status job_count_prepare(job *j)
{
    if (j->p->sample < 1.0)
        return SL_OK; /* a sample's size is known only once it is read */
    if (j->dist && sl_dist_rank(j->dist) != 0)
        return SL_OK; /* rank 0 counts for the job */
    /* MPI: rank 0 counts the whole input (the counter drops take_shard). */
    return sl_source_counter_new(j->src, &j->counter);
}

/* A second pass over the files the run's source expanded (nothing expanded
 * or resolved again; an s3:// folder is listed again, keeping no key), that
 * only counts (footers, lines, tar headers), so progress and metrics can
 * say "of N" and give an ETA. It is cheap next to captioning; it stops
 * early when the run does. */
void *job_count_inputs(void *arg)
{
    job *j = arg;
    if (!j->counter)
        return NULL;
    int64_t n = sl_source_counter_run(j->counter, &j->stop_counting);
    if (n < 0 || atomic_load(&j->stop_counting))
        return NULL;
    /* A resumed run counts what is left: the inputs less those done;
     * a slice (--limit), at most its size. */
    n = n > j->done_before ? n - j->done_before : 0;
    if (j->p->limit > 0 && n > j->p->limit)
        n = j->p->limit;
    /* Unless the read stage got to the end first and set the exact figure
     * (job_count_read_to_end). */
    int_fast64_t unknown = -1;
    atomic_compare_exchange_strong(&j->input_total, &unknown, n);
    return NULL;
}

void job_count_read_to_end(job *j)
{
    /* The count less the inputs done before is an estimate: a failed row
     * that stood for the rest of an input (a listing stopped midway) is
     * done, yet no longer one of its inputs once a rerun lists them all,
     * and the rerun said "4 of 3 (133%)". At the end of the input what
     * this run reads is known. Under MPI rank 0 reads only its shards. */
    if (j->counter && !j->dist)
        atomic_store(&j->input_total, atomic_load(&j->inputs_read));
}

struct job_progress {
    const sl_caption_params *p;
    sl_exec *exec;
    const atomic_int_fast64_t *input_total;
    const atomic_int_fast64_t *rows_skipped;
    int64_t inputs_before, rows_before; /* what earlier runs committed */
    bool retry_failed;
    int64_t rows_retried, parts_retried, failed_before, retry_kept;
    double retry_seconds;
    sl_dist *dist;             /* rank 0 of an MPI job: the job's figures too */
    double load_seconds;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    pthread_t thread;
    bool started;
};

static void progress_report(job_progress *pg, bool final)
{
    sl_caption_progress snap = {.final = final};
    sl_exec_stats es;
    caption_exec_stats(pg->exec, &es, &snap.rows_write_failed);
    snap.elapsed_s = es.seconds;
    snap.rows_read = es.rows_produced;
    snap.rows_done = es.rows_done;
    snap.rows_failed = es.rows_failed;
    snap.rows_total = atomic_load(pg->input_total);
    snap.eta_s = caption_eta_seconds(&es, snap.rows_total);
    snap.bytes_in_flight = es.bytes_in_flight;
    snap.memory_budget = es.memory_budget;
    snap.rows_skipped = (uint64_t)atomic_load(pg->rows_skipped);
    snap.rows_done_before = pg->rows_before;
    snap.inputs_done_before = pg->inputs_before;
    snap.retry_failed = pg->retry_failed;
    snap.rows_failed_before = pg->failed_before;
    snap.rows_retried = pg->rows_retried;
    snap.rows_retry_kept = pg->retry_kept;
    snap.retry_seconds = pg->retry_seconds;
    snap.parts_retried = pg->parts_retried;
    snap.n_stages = sl_exec_stage_count(pg->exec);
    if (snap.n_stages > sizeof snap.stages / sizeof *snap.stages)
        snap.n_stages = sizeof snap.stages / sizeof *snap.stages;
    for (size_t i = 0; i < snap.n_stages; i++)
        sl_exec_stage_stats(pg->exec, i, &snap.stages[i]);
    coord_counts job_rows;
    if (dist_progress(pg->dist, &job_rows, NULL, NULL)) {
        snap.ranks = sl_dist_size(pg->dist);
        snap.job_rows = job_rows.rows;
        coord_rank r;
        for (int k = 0; k < snap.ranks; k++)
            snap.ranks_finished += dist_rank_progress(pg->dist, k, &r) && r.finished;
    }
    pg->p->on_progress(&snap, pg->p->on_row_user);
}

static void *progress_main(void *arg)
{
    job_progress *pg = arg;
    pthread_mutex_lock(&pg->mu);
    while (!pg->done) {
        struct timespec ts;
        sl_deadline_after(pg->p->progress_ms > 0 ? pg->p->progress_ms : 1000, &ts);
        if (pthread_cond_timedwait(&pg->cv, &pg->mu, &ts) != 0 && !pg->done) {
            pthread_mutex_unlock(&pg->mu);
            progress_report(pg, false);
            pthread_mutex_lock(&pg->mu);
        }
    }
    pthread_mutex_unlock(&pg->mu);
    return NULL;
}

sl_status job_progress_start(const job *j, sl_exec *exec, job_progress **out)
{
    const sl_caption_params *p = j->p;
    job_progress *pg = sl_calloc(1, sizeof *pg);
    *out = pg;
    if (!pg)
        return sl_fail(SL_ERR_NOMEM, "out of memory starting the progress monitor");
    *pg = (job_progress){.p = p, .exec = exec, .input_total = &j->input_total,
                         .rows_skipped = &j->rows_skipped, .inputs_before = j->done_before,
                         .rows_before = j->sum->rows_done_before, .dist = j->dist,
                         .retry_failed = p->retry_failed, .rows_retried = j->sum->rows_retried,
                         .parts_retried = j->sum->parts_retried,
                         .failed_before = j->sum->rows_failed_before,
                         .retry_kept = j->sum->rows_retry_kept,
                         .retry_seconds = j->sum->retry_seconds};
    pthread_mutex_init(&pg->mu, NULL);
    sl_cond_init_monotonic(&pg->cv);
    if (p->on_progress)
        pg->started = pthread_create(&pg->thread, NULL, progress_main, pg) == 0;
    return SL_OK;
}

void job_progress_stop(job_progress *pg)
{
    if (!pg)
        return;
    if (pg->started) {
        pthread_mutex_lock(&pg->mu);
        pg->done = true;
        pthread_cond_broadcast(&pg->cv);
        pthread_mutex_unlock(&pg->mu);
        pthread_join(pg->thread, NULL);
        progress_report(pg, true);
    }
    pthread_mutex_destroy(&pg->mu);
    pthread_cond_destroy(&pg->cv);
    sl_free(pg);
}
