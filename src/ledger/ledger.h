/* ledger/ledger.h — what is done: the resume ledger of one output folder,
 * OUTPUT_DIR/_sluice_ledger.sqlite (SQLite, format SL_LEDGER_FORMAT). It owns
 * the record of which row ids each committed part-NNNNN file holds, the
 * fingerprint of the settings that made them, and the two-phase commit that
 * makes every row id land in exactly one committed part. The part files
 * themselves belong to the caller (io/shard.h). Thread rules: any function
 * from any thread; calls are serialized by a mutex inside. Ownership: one
 * handle from sl_ledger_open(), freed by sl_ledger_free(); strings passed in
 * are copied. Errors return a status with a message naming the ledger file.
 * An id, name or value SQLite cannot take (past its string limit, 1e9 bytes
 * by default; out of memory) is such an error, naming it and its size,
 * never a row passed over or taken for not done.
 *
 * Two-phase commit of a part P (the caller's order):
 *   1. sl_ledger_part_begin(P) opens a transaction T; sl_ledger_part_add()
 *      puts each row id written to P's temporary file into T, not yet durable.
 *   2. The caller fsyncs P's temporary file.
 *   3. sl_ledger_part_prepare() records P as PENDING and commits T (fsync).
 *   4. The caller renames the temporary to P's final name, fsyncs the folder.
 *   5. sl_ledger_part_commit() marks P COMMITTED.
 * Only rows of COMMITTED parts are done (sl_ledger_is_done). At open,
 * sl_ledger_reconcile() settles what a crash left, at each point:
 *   - during 1-2, or 3 before T is durable: T rolls back, P is unknown to the
 *     ledger and has no final file (the rename never happened); its rows are
 *     not done and are captioned again; its temporary is removed by the caller.
 *   - after 3, before 4 is durable: P is PENDING and its final file is missing:
 *     P and its rows are dropped, and captioned again.
 *   - after 4, before 5: P is PENDING and its file exists, complete (synced
 *     before the rename): P becomes COMMITTED. Its rows are not redone.
 *   - after 5: nothing to do.
 * The row ids were durable (3) before the file could appear (4), so a part
 * file that exists is always known to the ledger, and an id is done if and
 * only if a complete final file holds it: none lost, none written twice.
 * An error at a step (a full disk, EIO) leaves what a crash there would: the
 * caller stops and gives the part up, and the next reconcile settles it.
 * A part listed COMMITTED whose file has since gone (deleted by hand) is
 * dropped too, with a warning, so its rows are captioned again.
 * One whose file was cut short by hand is found by its size (below,
 * "Parts changed by hand") and refused by the caller (job/resume.c).
 * Part numbers are never reused: part_begin refuses a name the ledger holds.
 *
 * Retrying failed rows (--retry-failed) takes rows out of a committed part
 * P (the caller's order; job/retry.c):
 *   1. The caller finds P's failed rows' ids and writes P's replacement
 *      without them to a temporary file, synced.
 *   2. sl_ledger_retry_begin() records durably those ids and how many rows
 *      the file loses.
 *   3. The caller renames the temporary over P, fsyncs the folder, removes
 *      what else held those rows (P's errors file).
 *   4. sl_ledger_retry_finish() forgets the ids (they are no longer done:
 *      the run captions them again) and lowers P's counts.
 * A crash before 2 is durable leaves P as it was (its temporary is removed
 * as any part's). After 2, the retry is unfinished (sl_ledger_each_retry)
 * and the next run, whatever its flags, does 1, 3 and 4 again from the ids
 * recorded in 2: 1 and 3 give the same file whether they ran before or not,
 * so no row is both in P and forgotten, and none is lost. */
#ifndef SL_LEDGER_LEDGER_H
#define SL_LEDGER_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/status.h"

#define SL_LEDGER_FILE "_sluice_ledger.sqlite"
#define SL_LEDGER_FORMAT 1 /* the newest format this code reads and writes */

typedef struct sl_ledger sl_ledger;

/* What sl_ledger_reconcile() found. */
typedef struct sl_ledger_info {
    long parts;          /* committed parts, after reconciling */
    long rows;           /* row ids in them */
    long inputs;         /* inputs they finished (an input with copies has an id a row) */
    long written;        /* rows they hold as written (with --rows-per-task one per input
                            and task; a dropped row none); a part recorded by a sluice
                            that kept neither count counts its ids for both */
    long failed;         /* failed rows they hold (as written; parts that kept no count
                            add none) */
    long parts_failed_unknown; /* parts of a sluice that kept no count of failed rows */
    long parts_promoted; /* pending parts whose file existed: now committed */
    long parts_dropped;  /* parts whose file was missing: forgotten */
    long max_part;       /* the highest part number known; -1 when none */
} sl_ledger_info;

/* true when dir holds a ledger file. */
bool sl_ledger_exists(const char *dir);

/* Opens dir/_sluice_ledger.sqlite, creating it (and dir) if missing, and
 * takes an exclusive lock on it for the handle's life. With `overwrite`, a
 * file that is not a ledger this code can read is replaced rather than
 * refused. SL_ERR_BUSY when another process holds the lock; SL_ERR_IO when
 * the file cannot be read (damaged, or written by a newer sluice). */
sl_status sl_ledger_open(const char *dir, bool overwrite, sl_ledger **out);

/* Ties the ledger to the settings that determine the output: `fingerprint`
 * is "key\tvalue" lines (values without newlines). A new (or reset) ledger
 * stores it; an existing one compares it: SL_ERR_EXISTS when it differs, the
 * message naming the folder and the keys that differ (a ledger that records
 * no part yet takes the new fingerprint instead). `reset` forgets every
 * part first (the caller has removed their files) and stores the new one. */
sl_status sl_ledger_bind(sl_ledger *l, const char *fingerprint, bool reset);

/* sl_ledger_bind, where `fingerprint` may also be written in `n_forms` other
 * `forms` (as older sluice versions wrote this job's): a refusal names the
 * keys of whichever of them differs from the ledger's in the fewest, so a
 * folder an older sluice wrote is told the settings changed since, not the
 * keys that sluice did not write. Only `fingerprint` is ever stored. */
sl_status sl_ledger_bind_near(sl_ledger *l, const char *fingerprint, const char *const *forms,
                              size_t n_forms, bool reset);

/* Facts about the run the caller records beside the fingerprint and checks
 * itself, outside it (the model an endpoint served, found only once the
 * engine is up: job/stage_engine.c). sl_ledger_meta_get() sets *value to the
 * text stored under `key` (sl_free) or NULL when none is; it also reads the
 * ledger's own keys ("fingerprint"). sl_ledger_meta_set() stores it, durably,
 * replacing what was; SL_ERR_INVALID_ARG for the ledger's own keys
 * ("format_version", "fingerprint"). While a part is open the value commits
 * with it. A bind that starts over, or that takes a new fingerprint, forgets
 * every such key. */
sl_status sl_ledger_meta_get(sl_ledger *l, const char *key, char **value);
sl_status sl_ledger_meta_set(sl_ledger *l, const char *key, const char *value);

/* Replaces the fingerprint a bound ledger goes on with, keeping its rows,
 * parts and the keys beside it: a folder resumed by --retry-failed with
 * another token limit (job/resume.c) retries its failed rows, and goes on,
 * with the new one. The caller bound it first with the one it held. */
sl_status sl_ledger_retake(sl_ledger *l, const char *fingerprint);

/* The output the parts go to when it is not the ledger's folder (an
 * s3:// URL): named in place of the folder in the messages that ask the
 * user to choose another -o. Borrowed until the ledger is freed. */
void sl_ledger_set_output(sl_ledger *l, const char *output);

/* Where the parts are published elsewhere (object storage): the size of
 * part `name` where it was published, -1 when it was not (or its size is
 * not known), asked in place of a stat of dir/name: by
 * sl_ledger_reconcile() (present or not), by the commits (the size
 * recorded) and by sl_ledger_each_resized(). `user` is the caller's,
 * borrowed until the ledger is freed. */
void sl_ledger_set_presence(sl_ledger *l, int64_t (*published)(void *user, const char *name),
                            void *user);

/* Settles what an interrupted run left (see above); fills *info (optional). */
sl_status sl_ledger_reconcile(sl_ledger *l, sl_ledger_info *info);

/* What the committed parts hold now (*info as sl_ledger_reconcile fills it,
 * its promoted and dropped counts 0): after parts changed (--retry-failed),
 * without settling anything again. */
sl_status sl_ledger_counts(sl_ledger *l, sl_ledger_info *info);

/* *done = whether `id` is in a committed part. One indexed lookup. */
sl_status sl_ledger_is_done(sl_ledger *l, const char *id, bool *done);

/* *known = whether part file `name` is recorded, pending or committed. A
 * part file the ledger does not know was not written under it (a ledger
 * replaced, emptied or missing its -wal file): its rows are not done here,
 * and a run would write them again (job/resume.c refuses such a folder). */
sl_status sl_ledger_has_part(sl_ledger *l, const char *name, bool *known);

/* Phase 1: a new part `name` (number `number`) starts; its rows are added
 * with part_add. One part at a time. SL_ERR_EXISTS if the name is known. */
sl_status sl_ledger_part_begin(sl_ledger *l, const char *name, long number);
sl_status sl_ledger_part_add(sl_ledger *l, const char *id);
/* Records the open part as PENDING with its rows, durably, and what it
 * holds: the inputs it finished, the rows written to it and of those the
 * failed ones (summed by sl_ledger_reconcile for a rerun). Call after the
 * part's temporary file is synced and before it is renamed. */
sl_status sl_ledger_part_prepare(sl_ledger *l, long inputs, long written, long failed);
/* Phase 2: marks the prepared part COMMITTED; call after the rename. */
sl_status sl_ledger_part_commit(sl_ledger *l);
/* Forgets the open (unprepared) part and its rows: it will not be published. */
sl_status sl_ledger_part_abandon(sl_ledger *l);

/* Parts written by other processes (MPI ranks, dist/): each rank writes its
 * own parts and rank 0 holds the ledger, so several parts may be pending at
 * once. sl_ledger_part_record() is phases 1 and 3 in one call: part `name`
 * (number `number`) and its n rows (ids: n NUL-terminated ids one after
 * another; shards[i]: the input shard row i was read from, -1 for none)
 * recorded PENDING, durably, with its inputs, rows written and failed rows
 * (as sl_ledger_part_prepare's). SL_ERR_EXISTS if the name or number is known;
 * SL_ERR_INVALID_ARG while a part is open on this handle.
 * sl_ledger_part_commit_number() is phase 5 for a pending part named by
 * number. sl_ledger_shard_done() calls each(user, id) for every row of a
 * committed part that was read from input shard `shard`; an error from
 * `each` ends the walk and is returned. */
sl_status sl_ledger_part_record(sl_ledger *l, const char *name, long number, const char *ids,
                               const int64_t *shards, size_t n, long inputs, long written,
                               long failed);
sl_status sl_ledger_part_commit_number(sl_ledger *l, long number);
sl_status sl_ledger_shard_done(sl_ledger *l, int64_t shard,
                               sl_status (*each)(void *user, const char *id), void *user);

/* Parts changed by hand. The ledger records each committed part file's
 * size (at the commit, or after a retry rewrote it). A file cut short by
 * hand (`head -n 3 part > tmp && mv tmp part`) keeps its name, and its cut
 * rows would stay done and be in no file; a resize is how it shows, found
 * by one stat per part. sl_ledger_each_resized() calls each(user, part) for
 * every committed part whose file's size is not the one recorded, in number
 * order (the list read first: `each` may call the ledger; an error it
 * returns ends the walk). A part committed by a sluice that kept no size
 * has its size recorded as it is now and is not passed. Parts published
 * elsewhere (sl_ledger_set_presence) are sized by the caller's function
 * (an s3:// output: the listing), as are the commits. The caller counts
 * the file's rows; when none is missing, sl_ledger_part_sized() records its
 * size now (`bytes`), so it is not read again. */
typedef struct sl_ledger_part {
    long number;
    const char *name;  /* the file's name in the folder (borrowed for the call) */
    long written;      /* rows written to it (its errors file's included) */
    long failed;       /* of those, failed; -1 when not counted (an older sluice) */
    int64_t bytes;     /* the file's size now */
} sl_ledger_part;

sl_status sl_ledger_each_resized(sl_ledger *l,
                                 sl_status (*each)(void *user, const sl_ledger_part *part),
                                 void *user);
sl_status sl_ledger_part_sized(sl_ledger *l, long number, int64_t bytes);

/* --retry-failed (above). sl_ledger_each_part() calls each(user, number,
 * name) for every committed part that may hold failed rows (some counted,
 * or no count kept: an older sluice's part), in number order; sl_ledger_each_retry()
 * for every part whose retry is begun and not finished. The list is read
 * first, so `each` may call the ledger; an error it returns ends the walk.
 * sl_ledger_retry_begin(): part `number`'s failed rows, their n ids (NUL-
 * terminated one after another; an id may repeat) and the rows its file
 * loses (`removed`), recorded durably; SL_ERR_INVALID_ARG when the part is
 * not committed or a retry of it is begun. sl_ledger_retry_ids() calls
 * each(user, id) for the ids begun for part `number`.
 * sl_ledger_retry_finish(): forgets them, as ledger ids: a file's id Y is
 * the ledger's Y, or for an input with copies (stage_write.c) the member
 * that row was and the input's own id; lowers the parts' counts (part
 * `number` then holds no failed row). */
sl_status sl_ledger_each_part(sl_ledger *l,
                              sl_status (*each)(void *user, long number, const char *name),
                              void *user);
sl_status sl_ledger_each_retry(sl_ledger *l,
                               sl_status (*each)(void *user, long number, const char *name),
                               void *user);
sl_status sl_ledger_retry_begin(sl_ledger *l, long number, const char *ids, size_t n,
                                long removed);
sl_status sl_ledger_retry_ids(sl_ledger *l, long number,
                              sl_status (*each)(void *user, const char *id), void *user);
sl_status sl_ledger_retry_finish(sl_ledger *l, long number);

/* The ledger file's path (valid for the handle's life). */
const char *sl_ledger_path(const sl_ledger *l);

/* Closes the ledger. An open part's rows are rolled back; a prepared but
 * uncommitted part stays PENDING for the next reconcile. Accepts NULL. */
void sl_ledger_free(sl_ledger *l);

#endif
