/* ledger/idset.h — the row ids one run has read and where each was read, so
 * that inputs which repeat an id (exactly once is then impossible: the
 * ledger would take the second row for done) are caught however many ids a
 * run reads. The ids live in a private temporary SQLite database, on disk in
 * SQLite's temporary folder ($SQLITE_TMPDIR, else $TMPDIR, else /var/tmp or
 * /tmp), unlinked as soon as it is created so nothing outlives the process,
 * behind a 16 MiB page cache: memory does not grow with the input.
 * One thread at a time. The handle copies what it is given. */
#ifndef SL_LEDGER_IDSET_H
#define SL_LEDGER_IDSET_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/status.h"

typedef struct sl_idset sl_idset;

/* A new, empty set. SL_ERR_IO when SQLite cannot make its database. */
sl_status sl_idset_open(sl_idset **out);

/* Records `id`, read at (input, at) (two numbers the caller gives meaning
 * to). *seen is false for a new id; true for one recorded before, with
 * *first_input / *first_at where it was read first (the set keeps the
 * first). Ids are written in batches: one transaction per 4096 ids. */
sl_status sl_idset_add(sl_idset *s, const char *id, int64_t input, int64_t at, bool *seen,
                       int64_t *first_input, int64_t *first_at);

/* *has = whether `id` was recorded (nothing is added).
 * Both: an id SQLite cannot take (past its string limit, 1e9 bytes by
 * default; out of memory) is an error naming it, never an id taken for
 * new. */
sl_status sl_idset_has(sl_idset *s, const char *id, bool *has);

/* How many distinct ids the set holds. */
int64_t sl_idset_count(const sl_idset *s);

/* Frees the set and its database. Accepts NULL. */
void sl_idset_free(sl_idset *s);

#endif
