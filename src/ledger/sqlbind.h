/* ledger/sqlbind.h — the refusal of a text SQLite would not bind, worded
 * once for the resume ledger (ledger.c) and the run's row ids (idset.c).
 * Sets the thread's last error; holds nothing. */
#ifndef SL_LEDGER_SQLBIND_H
#define SL_LEDGER_SQLBIND_H

#include <stddef.h>

#include <sqlite3.h>

#include "sluice/status.h"

/* The error for `text` (`len` bytes; it may go on past them) that
 * sqlite3_bind_* refused with `rc` on `stmt`. The statement is reset and
 * its bindings cleared first: a refused binding is NULL, and a query run
 * on it would take a row for new or pass it over; one kept for reuse
 * binds afresh. Named by `place` (and `path`, quoted after it; NULL:
 * none) and `what`: its first 60 bytes, its size and SQLite's reason.
 * Past SQLite's length limit (SQLITE_TOOBIG) `limit_is` and the limit
 * say how long it may be, and `fix` what to change. SL_ERR_NOMEM when
 * SQLite ran out of memory, else SL_ERR_IO. */
sl_status sl_sqlbind_refused(sqlite3_stmt *stmt, int rc, const char *place, const char *path,
                             const char *what, const char *text, size_t len,
                             const char *limit_is, const char *fix);

#endif
