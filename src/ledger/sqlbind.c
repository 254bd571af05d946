/* ledger/sqlbind.c — see sqlbind.h. */
#include "ledger/sqlbind.h"

#include "core/error.h"

sl_status sl_sqlbind_refused(sqlite3_stmt *stmt, int rc, const char *place, const char *path,
                             const char *what, const char *text, size_t len,
                             const char *limit_is, const char *fix)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    int shown = len > 60 ? 60 : (int)len;
    const char *cut = len > 60 ? "..." : "";
    const char *q = path ? " '" : "", *q_end = path ? "'" : "";
    if (rc == SQLITE_TOOBIG)
        return sl_fail(SL_ERR_IO, "%s%s%s%s: cannot take %s '%.*s%s' (%zu bytes): %s; %s %d "
                       "bytes: %s", place, q, path ? path : "", q_end, what, shown, text, cut,
                       len, sqlite3_errstr(rc), limit_is,
                       sqlite3_limit(sqlite3_db_handle(stmt), SQLITE_LIMIT_LENGTH, -1), fix);
    return sl_fail(rc == SQLITE_NOMEM ? SL_ERR_NOMEM : SL_ERR_IO, "%s%s%s%s: cannot take %s "
                   "'%.*s%s' (%zu bytes): %s", place, q, path ? path : "", q_end, what, shown,
                   text, cut, len, sqlite3_errstr(rc));
}
