/* job/record.c — the ledger as the read and write stages see it (job.h):
 * one process records in its output folder's ledger; the ranks of an MPI
 * job record in rank 0's through the coordinator (dist/dist.h), each part
 * whole, and look up what earlier runs did in the ids sent with each of
 * their shards. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "job/job.h"

bool job_records(const job *j) { return j->ledger || j->dist; }

sl_status job_is_done(job *j, const char *id, bool *done)
{
    *done = false;
    if (!j->dist)
        return j->ledger ? sl_ledger_is_done(j->ledger, id, done) : SL_OK;
    pthread_mutex_lock(&j->done_mu);
    sl_status st = j->done ? sl_idset_has(j->done, id, done) : SL_OK;
    pthread_mutex_unlock(&j->done_mu);
    return st;
}

sl_status job_part_begin(job *j, const char *name, long number)
{
    if (!j->dist)
        return j->ledger ? sl_ledger_part_begin(j->ledger, name, number) : SL_OK;
    dist_part_start(&j->dpart, name, number);
    return SL_OK;
}

sl_status job_part_add(job *j, const char *id, int64_t shard)
{
    if (!j->dist)
        return j->ledger ? sl_ledger_part_add(j->ledger, id) : SL_OK;
    dist_part_row(&j->dpart, id, shard);
    return SL_OK;
}

/* The part's counts are final here: its rows were all written. */
sl_status job_part_prepare(job *j)
{
    if (!j->dist)
        return j->ledger ? sl_ledger_part_prepare(j->ledger, j->part.inputs, j->part.rows,
                                                  j->part.failed)
                         : SL_OK;
    j->dpart.inputs = j->part.inputs;
    j->dpart.written = j->part.rows;
    j->dpart.failed = j->part.failed;
    return dist_part_record(j->dist, &j->dpart);
}

sl_status job_part_commit(job *j)
{
    if (!j->dist)
        return j->ledger ? sl_ledger_part_commit(j->ledger) : SL_OK;
    coord_counts c = {.rows = j->part.rows, .ok = j->part.ok,
                      .failed = j->part.failed, .prompt_tokens = j->part.prompt_tokens,
                      .generated_tokens = j->part.generated_tokens,
                      .dropped = j->part.dropped, .inputs = j->part.inputs,
                      .input_bytes = (int64_t)j->part.input_bytes,
                      .jpeg_bytes = (int64_t)j->part.jpeg_bytes};
    /* The choices the part's rows took and its failed rows' kinds ride
     * along: rank 0 sums them. */
    _Static_assert(sizeof j->part.answers == COORD_TALLY_SIZE * sizeof(long),
                   "a part's answers are the coordinator's tally");
    return dist_part_commit(j->dist, j->dpart.number, &c, &j->part.answers[0][0],
                            &j->part.failures);
}

void job_part_abandon(job *j)
{
    if (!j->dist && j->ledger)
        sl_ledger_part_abandon(j->ledger);
    /* under MPI nothing reached rank 0 before the record */
}

static sl_status add_done(void *user, const char *id)
{
    job *j = user;
    bool seen;
    int64_t a, b;
    pthread_mutex_lock(&j->done_mu);
    sl_status st = SL_OK;
    if (!j->done)
        st = sl_idset_open(&j->done);
    if (st == SL_OK)
        st = sl_idset_add(j->done, id, 0, 0, &seen, &a, &b);
    pthread_mutex_unlock(&j->done_mu);
    return st;
}

/* Shards come in increasing order; this rank reads those rank 0 hands it
 * and skips the rest. It asks for the next one when its stream comes past
 * the last it was given: the stream is then at the shard after it, which
 * rank 0 has handed out already (coord.h), so nothing is passed over. */
sl_status job_take_shard(void *user, uint64_t shard, bool end, int *take)
{
    job *j = user;
    if (end)
        return dist_shards_end(j->dist, (int64_t)shard);
    int64_t k = (int64_t)shard;
    if (k < j->assigned) {
        *take = SL_SHARD_SKIP;
        return SL_OK;
    }
    if (k == j->assigned) {
        *take = SL_SHARD_TAKE;
        return SL_OK;
    }
    if (j->exhausted) {
        *take = SL_SHARD_NONE;
        return SL_OK;
    }
    int64_t next;
    sl_status st = dist_next_shard(j->dist, k, &next, add_done, j);
    if (st != SL_OK)
        return st;
    if (next < 0) {
        j->exhausted = true;
        *take = SL_SHARD_NONE;
        return SL_OK;
    }
    j->assigned = next;
    *take = next == k ? SL_SHARD_TAKE : SL_SHARD_SKIP;
    return SL_OK;
}
