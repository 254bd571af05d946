/* sluice/dist.h — one job over several processes: the ranks of an MPI job
 * (mpirun, srun). Rank 0 owns the job (its input shards, its one resume
 * ledger, its summary and report); every rank runs the whole pipeline on
 * the shards it pulls from rank 0 and writes its own parts into the shared
 * output folder. docs/deploy.md says how to run it and what each failure
 * does.
 *
 * A program opens the job's handle once, before anything else, with
 * sl_dist_open(), gives it to the job (sl_caption_params.dist) and frees it
 * last. Ownership: the caller's handle; the job borrows it. Thread rules:
 * open and free on the main thread; the job's threads use it in between. */
#ifndef SLUICE_DIST_H
#define SLUICE_DIST_H

#include <stdbool.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_dist sl_dist;

/* Whether this sluice was built with MPI. */
bool sl_dist_available(void);

/* Started by an MPI launcher with more than one rank (its environment:
 * OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK with a size), and built with
 * MPI: initializes MPI and *out is the job's handle. Not under a launcher,
 * or one rank: *out is NULL (one process, as always). Under a launcher with
 * several ranks but built without MPI: SL_ERR_INVALID_ARG saying so. */
sl_status sl_dist_open(sl_dist **out);

/* The rank this process was started as, from its launcher's environment
 * (the variables sl_dist_open() reads; 0 when not under one, or with one
 * rank): known before sl_dist_open(), which a program may call late, so
 * that what every rank would say alike (a warning about the settings) is
 * said by rank 0 alone. */
int sl_dist_launched_rank(void);

/* The number of ranks the launcher started (1 when not under one): known
 * before sl_dist_open() too. */
int sl_dist_launched_size(void);

int sl_dist_rank(const sl_dist *d);
int sl_dist_size(const sl_dist *d);

/* Ends the whole job at once (MPI_Abort), for a rank that cannot go on and
 * could not tell rank 0 (a failure before the job started): the other ranks
 * would otherwise wait for it. Does not return. */
void sl_dist_abort(sl_dist *d, int exit_code);

/* Whether this rank told rank 0 how its part of the job ended (the job
 * does, on every way out once it started): when false after a failed run,
 * the caller should sl_dist_fail_start(), and sl_dist_abort() if that
 * returns false. */
bool sl_dist_reported(const sl_dist *d);

/* Every rank says, once, whether it can start the job: sl_caption_run does
 * at the end of its start check (the input opened, rank 0's output and
 * ledger checked), and when one rank cannot, every rank's run returns that
 * rank's status, no rank waiting for another. A rank that failed before it
 * got there (its settings, its model's download) says it here with its
 * failure st (its message the last error), so that the others stop with
 * it. Returns the status to end with: the first failed rank's, on every
 * rank alike (the message stays this rank's). sl_dist_reported() then says
 * whether the others were told: false when they could not be (the job had
 * started, or MPI failed): sl_dist_abort(). */
sl_status sl_dist_fail_start(sl_dist *d, sl_status st);

/* Every rank, right after sl_dist_open(): whether it took its command
 * line and job file (st SL_OK, or its failure, its message the last
 * error). When a rank did not, every rank stops here, as at
 * sl_dist_fail_start (its return, sl_dist_reported, sl_dist_quiet): a rank
 * refused there waited before for the others' start check, behind rank
 * 0's model download (minutes). On SL_OK the start check comes later. */
sl_status sl_dist_agree_settings(sl_dist *d, sl_status st);

/* After the job's start failed on some rank: true on every rank but the
 * first one that failed, which alone says why (the others' error would be
 * the same, or only "rank N could not start"); false otherwise. */
bool sl_dist_quiet(const sl_dist *d);

/* Finalizes MPI. Accepts NULL. */
void sl_dist_free(sl_dist *d);

#ifdef __cplusplus
}
#endif
#endif
