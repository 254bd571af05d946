/* dist/coord.h — the coordinator of one job over several ranks: what rank 0
 * owns. It hands out input shards on demand (pull: a rank asks for the next
 * one when it has read its last, so a slow rank takes fewer), sends with
 * each shard the ids an earlier run committed from it (resume without a
 * per-row round trip), records each part a rank wrote in the one resume
 * ledger (two phases, as ledger/ledger.h: PENDING before the rank renames
 * the file, COMMITTED after), and sums what every rank committed for the
 * job's progress and summary.
 *
 * Start: no shard is handed out until every rank has said hello (or a
 * grace period has passed), so the first rank up does not take the others'.
 * Shard order: shards are handed out in increasing order, each once, and a
 * rank asks for the next one at the shard after the one it read (its
 * "position"), which is never past the next unhanded shard: no shard is
 * skipped by every rank. A rank whose stream ends before the shard it was
 * given tells how many shards there are (coord_shards_end); later asks get
 * none.
 *
 * Thread rules: every function from any thread. Requests run one at a
 * time, the ledger's writes included; the getters (coord_progress and
 * those below it, which a /metrics scrape calls) read a copy that a request
 * updates after its ledger write, so they never wait on the disk. Ownership: the
 * coordinator borrows the ledger (which must outlive it) and copies
 * strings. coord_handle() is the whole protocol: one request in, its reply
 * out, for any transport (MPI in dist/dist.c, threads in bench/coord.c). */
#ifndef SL_DIST_COORD_H
#define SL_DIST_COORD_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "dist/wire.h"
#include "ledger/ledger.h"
#include "sluice/status.h"

typedef struct coord coord;

/* What committed parts held, summed (rows as written: with
 * --rows-per-task an input is a row per task; `inputs`, the inputs whose
 * last row they hold); `skipped`, the inputs the ranks skipped as done by
 * an earlier run, and `deferred`, the rows a stop left unsent for the
 * resume (sl_caption_summary.rows_deferred): each rank tells its own at
 * FINISH (coord_put_finish). */
typedef struct coord_counts {
    int64_t parts, rows, ok, failed, prompt_tokens, generated_tokens, dropped;
    int64_t inputs, skipped, deferred;
    int64_t input_bytes, jpeg_bytes; /* a dry run's (sl_caption_summary) */
} coord_counts;

void coord_counts_add(coord_counts *into, const coord_counts *c);

/* A tally the parts carry besides their counts: COORD_TALLY_GROUPS x
 * COORD_TALLY_KEYS counts, flat (group * COORD_TALLY_KEYS + key): the
 * choices a part's rows took, by task, the written rows' then the dropped
 * rows' (a job's answers). Summed over the committed parts; sent as its
 * non-zero entries. */
#define COORD_TALLY_GROUPS 64
#define COORD_TALLY_KEYS 64
#define COORD_TALLY_SIZE (COORD_TALLY_GROUPS * COORD_TALLY_KEYS)

/* Failed rows by the stage that failed them and the class of their error
 * (sl_status_class's word): _summary.json's "failures", which sum to the
 * failed rows. A part's go to rank 0 with its commit, so the job's are
 * those of the parts its counts are (a rank's own rows would leave out the
 * other ranks'). Kinds past COORD_FAILURE_KINDS are left out. */
#define COORD_FAILURE_KINDS 64
typedef struct coord_failures {
    struct {
        char stage[32], cls[32];
        int64_t rows;
    } kind[COORD_FAILURE_KINDS];
    int n;
} coord_failures;

/* Adds `rows` failed rows of (stage, cls) to f. */
void coord_failures_add(coord_failures *f, const char *stage, const char *cls, int64_t rows);

/* The COMMIT request of part `number` with its counts (all but parts and
 * skipped), its tally and its failed rows' kinds (NULL: none), into w
 * (reset first): how a rank, and a test or bench acting as one, says a
 * part is committed. */
void coord_put_commit(wire_buf *w, int64_t number, const coord_counts *c, const long *tally,
                      const coord_failures *failures);

/* The FINISH request into w (reset first): the rank's part ended with
 * `status` (message: why, NULL ""), having skipped `skipped` inputs as
 * done and left `deferred` rows unsent for a stop; unfit: the sink's unfit
 * values as JSON text (NULL: none). */
void coord_put_finish(wire_buf *w, sl_status status, int64_t skipped, int64_t deferred,
                      const char *message, const char *unfit);

/* One rank's share of the job: its committed parts, the shards it took,
 * whether it finished and how. */
typedef struct coord_rank {
    coord_counts committed;
    int64_t shards;       /* handed to it that the input holds */
    int64_t last_shard;   /* the last handed to it */
    bool finished;
    sl_status status;
    bool said_hello;
} coord_rank;

/* The shard a NEXT reply holds while the job waits for its ranks: ask again
 * shortly. */
#define COORD_WAIT (-2)

/* Requests (rank -> rank 0), the first byte of a message; each gets one
 * reply that starts with a status byte (sl_status) and, when it is not
 * SL_OK, the error message. */
enum {
    COORD_HELLO = 1,  /* str fingerprint -> i64 first part number */
    COORD_NEXT,       /* i64 position -> i64 shard (-1: none; COORD_WAIT: not yet),
                         i64 n, n ids (str) */
    COORD_END,        /* i64 shards in the input -> */
    COORD_RECORD,     /* str name, i64 number, i64 n, i64 inputs, i64 written, i64 failed,
                         n x (str id, i64 shard) -> */
    COORD_COMMIT,     /* i64 number, the part's coord_counts, i64 k, k x (i64 group,
                         i64 key, i64 count), i64 m, m x (str stage, str class, i64 rows)
                         (coord_put_commit) -> */
    COORD_FINISH,     /* i64 status, i64 inputs skipped as done, i64 rows deferred by a
                         stop, str message, str the values its Parquet parts could not
                         hold (the sink's unfit JSON object; "" none) (coord_put_finish)
                         -> */
};

/* ledger: NULL for a coordinator without one (bench/coord.c: parts are
 * counted, not recorded). fingerprint: the job's settings (job/resume.c);
 * a rank whose own differ is refused at hello. first_part: the part number
 * the job's parts start at. */
coord *coord_new(sl_ledger *ledger, const char *fingerprint, long first_part, int n_ranks);
void coord_free(coord *c);

/* Handles one request from `rank`, writing the reply into *reply (reset
 * first). A malformed request gets an error reply. */
void coord_handle(coord *c, int rank, const void *msg, size_t len, wire_buf *reply);

/* The job so far: committed parts summed, shards handed out (none past the
 * input's end once it is known), and how many shards the input holds (-1
 * while unknown). */
void coord_progress(coord *c, coord_counts *committed, int64_t *shards_handed,
                    int64_t *shards_total);

/* Rank `rank`'s share (false for a rank outside the job), and how many
 * ranks the job has. */
bool coord_rank_progress(coord *c, int rank, coord_rank *out);
/* The committed parts' tallies summed, into out (COORD_TALLY_SIZE). */
void coord_tally(coord *c, long *out);
/* The committed parts' failed rows by kind, summed, into *out. */
void coord_failures_get(coord *c, coord_failures *out);
/* The unfit values every finished rank told of (io/sink.h's
 * sl_sink_unfit: {COLUMN: {"rows", "first_id", "why"}}), merged: rows
 * summed per column, first_id and why the lowest rank's. A new object
 * (the caller's; {} when none), NULL when out of memory. */
json_t *coord_unfit(coord *c);
/* The names of the parts every rank committed, by part number: a new array
 * (the caller's), NULL when out of memory. */
json_t *coord_parts(coord *c);
/* No shard is handed out until every rank has said hello or `seconds` have
 * passed since coord_new (default 10): a fair start. */
void coord_set_start_grace(coord *c, double seconds);
/* Asked before each part a rank records (NULL: none): an error refuses the
 * record, that rank's commit failing with its message (an s3:// output
 * whose lock rank 0 lost: job/bucket_lock.c). Set before the ranks call. */
void coord_set_guard(coord *c, sl_status (*guard)(void *user), void *user);

/* Every rank but rank 0 has finished (COORD_FINISH), or `timeout_ms` passed:
 * returns whether all have. *failed_rank: the first rank that finished with
 * an error (-1: none), its status and message in *status / msg (cap bytes). */
bool coord_wait_finished(coord *c, int timeout_ms, int *failed_rank, sl_status *status, char *msg,
                         size_t cap);

#endif
