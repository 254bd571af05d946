/* job/progress.h — the caption job's two helper threads: the monitor that
 * hands the caller a snapshot (sl_caption_progress) every progress_ms and
 * once more at the end, and the counting walk that finds how many inputs
 * there are (over the files the run's source expanded), so progress and
 * metrics can say "of N". The monitor reads only
 * the executor's thread-safe counters and the job's atomics; the job owns
 * the handle, which must be stopped before the executor is freed. */
#ifndef SL_JOB_PROGRESS_H
#define SL_JOB_PROGRESS_H

#include "job/job.h"

typedef struct job_progress job_progress;

/* Starts the monitor when p->on_progress is set (else does nothing).
 * SL_ERR_NOMEM: *out is NULL. */
sl_status job_progress_start(const job *j, sl_exec *exec, job_progress **out);
/* Joins it, reports the final snapshot and frees it. Accepts NULL. */
void job_progress_stop(job_progress *pg);

/* Makes j->counter from j->src when the run is counted (not a sample, not
 * an MPI rank but 0): on the thread that owns j->src, before it is read.
 * SL_ERR_NOMEM only. */
sl_status job_count_prepare(job *j);
/* The counting walk (a thread's main; arg is the job): runs j->counter (it
 * alone touches it until joined) and sets input_total unless stop_counting
 * is set first. Nothing when j->counter is NULL. */
void *job_count_inputs(void *arg);
/* The read stage's, when it has read the last input: the run's total is
 * then what it read (the count's figure was an estimate). */
void job_count_read_to_end(job *j);

#endif
