/* dist/dist.h — the job's side of sluice/dist.h: the calls a rank makes to
 * the coordinator (dist/coord.h). On rank 0 they reach the coordinator in
 * the process; on the others they are MPI messages to rank 0 and its reply
 * (one request at a time per rank, under a mutex: the read and write stages
 * both call). Rank 0 serves the other ranks from a thread of its own
 * between dist_serve() and dist_wait_all().
 *
 * Thread rules: any thread after dist_hello(). Ownership: the coordinator
 * made by dist_serve() belongs to the handle; the ledger it records in is
 * the caller's and must outlive dist_wait_all(). */
#ifndef SL_DIST_DIST_H
#define SL_DIST_DIST_H

#include <stdint.h>

#include "dist/coord.h"
#include "ledger/ledger.h"
#include "sluice/dist.h"

/* The waits that warn (rank 0 for the others, a rank for rank 0, the
 * ranks at the start) warn first after dist_first_warning_s(), 30 s (the
 * tests set it lower: SLUICE_TEST_FAULTS=dist.warn_s=N, core/fault.h),
 * then at 60, 120, ... 960 s, then every 10 minutes:
 * dist_next_warning_s(now, first) is the next after `now`. */
int dist_first_warning_s(void);
int dist_next_warning_s(int now, int first);

/* Rank 0: starts coordinating with `ledger` (already reconciled), the job's
 * fingerprint and the number its parts start at, and serves the others;
 * guard (NULL: none) as coord_set_guard's. */
sl_status dist_serve(sl_dist *d, sl_ledger *ledger, const char *fingerprint, long first_part,
                     sl_status (*guard)(void *user), void *guard_user);

/* Every rank, once, before rank 0 serves and the others say hello: st is
 * whether this rank can start (its message the last error). SL_OK when
 * every rank can; else the first rank that cannot ends every rank's job
 * (sluice/dist.h, sl_dist_fail_start): this rank's own message, or "rank N
 * could not start", with rank N's status. Called by sl_dist_fail_start for
 * a rank that fails before the job reached it; a later call returns st. */
sl_status dist_start(sl_dist *d, sl_status st);

/* Every rank, before it reads: checks its settings against rank 0's and
 * learns where part numbers start. */
sl_status dist_hello(sl_dist *d, const char *fingerprint, long *first_part);

/* The next shard for a rank whose stream is at `position` (see coord.h):
 * *shard, or -1 when none is left; each id an earlier run committed from it
 * is passed to each(user, id). */
sl_status dist_next_shard(sl_dist *d, int64_t position, int64_t *shard,
                          sl_status (*each)(void *user, const char *id), void *user);
/* The input holds n shards (this rank's stream ended). */
sl_status dist_shards_end(sl_dist *d, int64_t n);

/* A part this rank writes: its rows gathered as they are written
 * (dist_part_start, then dist_part_row for each), recorded PENDING by rank
 * 0 before the rank renames the file (dist_part_record), then COMMITTED
 * with its counts (dist_part_commit). The part's memory grows with its
 * rows (a part is at most --shard-rows rows) and is kept for the next. */
typedef struct dist_part {
    wire_buf msg;
    size_t count_at;
    int64_t n;
    long number;
    int64_t inputs, written, failed; /* the caller's, before the record: what the part
                                        holds */
} dist_part;

void dist_part_start(dist_part *p, const char *name, long number);
void dist_part_row(dist_part *p, const char *id, int64_t shard);
/* The message as sent: its row count, inputs, written and failed filled in
 * (dist_part_record does it;
 * for a caller that hands p->msg to coord_handle itself). */
void dist_part_seal(dist_part *p);
sl_status dist_part_record(sl_dist *d, dist_part *p);
/* tally, failures: the part's (coord_put_commit), NULL: none. */
sl_status dist_part_commit(sl_dist *d, long number, const coord_counts *counts,
                           const long *tally, const coord_failures *failures);
void dist_part_free(dist_part *p);

/* This rank's part of the job ended with `status` (and message), having
 * skipped `skipped` inputs as done by an earlier run and left `deferred`
 * rows unsent for a stop (the job's summary sums both), its Parquet parts
 * leaving out the values `unfit` counts (sl_sink_unfit's object, borrowed;
 * NULL: none). */
sl_status dist_finish(sl_dist *d, sl_status status, const char *message, int64_t skipped,
                      int64_t deferred, const json_t *unfit);

/* Rank 0, after its own part: waits until every rank finished, stops
 * serving, and gives the job's totals; SL_OK, or the first failed rank's
 * status with a message naming it. */
sl_status dist_wait_all(sl_dist *d, coord_counts *totals);
/* Rank 0, after dist_wait_all: the committed parts' tallies summed, into
 * out (COORD_TALLY_SIZE). */
void dist_tally(sl_dist *d, long *out);
/* Rank 0, after dist_wait_all: the committed parts' failed rows by kind,
 * every rank's (coord_failures_get); none on the other ranks. */
void dist_failures(sl_dist *d, coord_failures *out);
/* Rank 0, after dist_wait_all: every rank's unfit values merged
 * (coord_unfit; the caller's); NULL on the other ranks or out of memory. */
json_t *dist_unfit(sl_dist *d);
/* Rank 0: the names of the parts every rank committed (coord_parts; the
 * caller's); NULL on the other ranks or out of memory. */
json_t *dist_parts(sl_dist *d);

/* Rank 0: stops serving (idempotent) — before the ledger it records in is
 * freed, on every way out of the job. The other ranks' requests then go
 * unanswered: a rank 0 that leaves early ends the job (sl_dist_abort). */
void dist_stop(sl_dist *d);

/* Rank 0 once serving: the job's progress (coord_progress), and each
 * rank's (coord_rank_progress); false elsewhere. */
bool dist_progress(sl_dist *d, coord_counts *committed, int64_t *shards_handed,
                   int64_t *shards_total);
bool dist_rank_progress(sl_dist *d, int rank, coord_rank *out);

#endif
