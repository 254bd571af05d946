/* ledger/idset.c — the ids of one run in a temporary SQLite database (see
 * idset.h). One table, ids(id PRIMARY KEY, input, at) WITHOUT ROWID: the id
 * is the B-tree key, so an insert is one descent and a duplicate is found by
 * the insert itself. Nothing needs to survive a crash, so there is no
 * journal and no sync; inserts are grouped into transactions so pages are
 * written once per batch rather than once per id. */
#include <string.h>

#include <sqlite3.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ledger/idset.h"
#include "ledger/sqlbind.h"

enum { BATCH = 4096 };

struct sl_idset {
    sqlite3 *db;
    sqlite3_stmt *insert, *lookup;
    int in_batch; /* ids added in the open transaction; 0: none open */
    int64_t count;
};

static sl_status db_fail(sl_idset *s, const char *doing)
{
    return sl_fail(SL_ERR_IO, "the temporary database of row ids: cannot %s: %s", doing,
                   s->db ? sqlite3_errmsg(s->db) : "out of memory");
}

/* A bind of `id` (or of a number beside it) that SQLite refused: its
 * binding is then NULL, and the query would run on that (an insert failing
 * as a NOT NULL breach, a lookup finding nothing: an id taken for new). */
static sl_status bind_fail(int rc, const char *id, sqlite3_stmt *stmt)
{
    return sl_sqlbind_refused(stmt, rc, "the temporary database of row ids", NULL, "the id",
                              id, strlen(id), "an id may be at most", "give the rows a shorter id");
}

sl_status sl_idset_open(sl_idset **out)
{
    *out = NULL;
    sl_idset *s = sl_calloc(1, sizeof *s);
    if (!s)
        return sl_fail(SL_ERR_NOMEM, "out of memory for the row ids");
    sl_status st = SL_OK;
    /* "": a private on-disk database SQLite deletes itself (unlinked at once). */
    if (sqlite3_open_v2("", &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK)
        st = db_fail(s, "create it");
    else if (sqlite3_exec(s->db,
                          "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                          "PRAGMA locking_mode=EXCLUSIVE; PRAGMA cache_size=-16384;"
                          "CREATE TABLE ids(id TEXT PRIMARY KEY, input INTEGER NOT NULL,"
                          " at INTEGER NOT NULL) WITHOUT ROWID;",
                          NULL, NULL, NULL) != SQLITE_OK)
        st = db_fail(s, "create its table");
    else if (sqlite3_prepare_v2(s->db, "INSERT OR IGNORE INTO ids(id, input, at) "
                                       "VALUES(?1, ?2, ?3)", -1, &s->insert, NULL) != SQLITE_OK ||
             sqlite3_prepare_v2(s->db, "SELECT input, at FROM ids WHERE id = ?1", -1,
                                &s->lookup, NULL) != SQLITE_OK)
        st = db_fail(s, "prepare a query");
    if (st != SL_OK) {
        sl_idset_free(s);
        return st;
    }
    *out = s;
    return SL_OK;
}

sl_status sl_idset_add(sl_idset *s, const char *id, int64_t input, int64_t at, bool *seen,
                       int64_t *first_input, int64_t *first_at)
{
    *seen = false;
    if (s->in_batch == 0 && sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(s, "start a batch");
    s->in_batch++;
    int rc = sqlite3_bind_text(s->insert, 1, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s->insert, 2, input);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s->insert, 3, at);
    if (rc != SQLITE_OK)
        return bind_fail(rc, id, s->insert);
    rc = sqlite3_step(s->insert);
    sqlite3_reset(s->insert);
    sqlite3_clear_bindings(s->insert);
    if (rc != SQLITE_DONE)
        return db_fail(s, "record an id");
    if (sqlite3_changes(s->db) == 0) {
        if ((rc = sqlite3_bind_text(s->lookup, 1, id, -1, SQLITE_STATIC)) != SQLITE_OK)
            return bind_fail(rc, id, s->lookup);
        rc = sqlite3_step(s->lookup);
        if (rc == SQLITE_ROW) {
            *seen = true;
            *first_input = sqlite3_column_int64(s->lookup, 0);
            *first_at = sqlite3_column_int64(s->lookup, 1);
        }
        sqlite3_reset(s->lookup);
        sqlite3_clear_bindings(s->lookup);
        if (rc != SQLITE_ROW)
            return db_fail(s, "look up an id");
    } else {
        s->count++;
    }
    if (s->in_batch == BATCH) {
        s->in_batch = 0;
        if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            return db_fail(s, "write a batch");
    }
    return SL_OK;
}

sl_status sl_idset_has(sl_idset *s, const char *id, bool *has)
{
    *has = false;
    int rc = sqlite3_bind_text(s->lookup, 1, id, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return bind_fail(rc, id, s->lookup);
    rc = sqlite3_step(s->lookup);
    sqlite3_reset(s->lookup);
    sqlite3_clear_bindings(s->lookup);
    *has = rc == SQLITE_ROW;
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SL_OK : db_fail(s, "look up an id");
}

int64_t sl_idset_count(const sl_idset *s) { return s->count; }

void sl_idset_free(sl_idset *s)
{
    if (!s)
        return;
    sqlite3_finalize(s->insert);
    sqlite3_finalize(s->lookup);
    sqlite3_close(s->db); /* an open batch is dropped with the file */
    sl_free(s);
}
