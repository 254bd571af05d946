/* job/progress.h — the caption job's two helper threads: the monitor that
 * hands the caller a snapshot (sl_caption_progress) every progress_ms and
 * once more at the end, and the counting walk that finds how many inputs
 * there are, so progress and metrics can say "of N". The monitor reads only
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

/* The counting walk (a thread's main; arg is the job): sets input_total
 * unless stop_counting is set first. */
void *job_count_inputs(void *arg);

#endif
