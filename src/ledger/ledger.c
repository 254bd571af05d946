/* ledger/ledger.c — the resume ledger on SQLite (see ledger.h for the
 * two-phase commit and the argument that it is exactly-once).
 *
 * Schema (format 1, PRAGMA user_version):
 *   meta(key PRIMARY KEY, value)            format_version, fingerprint, the caller's
 *                                           (sl_ledger_meta_set)
 *   parts(number PRIMARY KEY, name UNIQUE, state 0 pending | 1 committed, rows,
 *         inputs, written, failed, bytes)   the last four NULL in parts of a sluice
 *         that lacked them; bytes is the file's size when committed (or last
 *         found whole: sl_ledger_each_resized; a published part's as its
 *         sl_ledger_set_presence function gives it), NULL when not known
 *   rows(id PRIMARY KEY, part) WITHOUT ROWID, indexed by part
 *   retry_parts(part PRIMARY KEY, removed), retry_ids(part, id)   --retry-failed's
 *         parts begun and not finished (empty between runs; an older sluice that
 *         ignores them leaves them for a newer one to finish)
 * The file is opened in WAL mode with synchronous=FULL (a commit is durable
 * when it returns) and locking_mode=EXCLUSIVE (one run per output folder). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/log.h"
#include "io/shard.h"
#include "ledger/ledger.h"
#include "ledger/sqlbind.h"

enum { PART_PENDING = 0, PART_COMMITTED = 1 };

struct sl_ledger {
    pthread_mutex_t mu;
    sqlite3 *db;
    char *dir, *path;
    char *open_path; /* path below its folder's real path, as SQLite opens it */
    sqlite3_stmt *is_done, *add_row;
    bool in_part, prepared; /* a part's transaction is open / a part awaits commit */
    char *part_name;
    long part_number, part_rows;
    int64_t (*published)(void *user, const char *name); /* size; NULL: the file in dir */
    void *published_user;
    const char *output; /* the output the parts go to, when not dir (borrowed) */
};

/* --- helpers ------------------------------------------------------------------ */

/* SQLite's message says "database or disk is full" or "disk I/O error";
 * the system's cause behind it ("No space left on device") is added. */
static sl_status db_fail(sl_ledger *l, sl_status st, const char *doing)
{
    int rc = l->db ? sqlite3_errcode(l->db) : SQLITE_NOMEM;
    int sys = rc == SQLITE_FULL || rc == SQLITE_IOERR || rc == SQLITE_CANTOPEN
                  ? sqlite3_system_errno(l->db) : 0;
    if (rc == SQLITE_FULL && !sys)
        sys = ENOSPC; /* SQLite's unix VFS keeps no errno for a short write */
    /* Refused a read-write open, SQLite tries read-only and keeps that
     * attempt's errno: ENOENT for a ledger not made yet, on a read-only
     * file system or in a folder without write permission; for one that
     * exists, it opens it read-only and fails later (EBADF at the lock).
     * What it needed tells the real cause (EROFS, EACCES). */
    if (rc == SQLITE_CANTOPEN || rc == SQLITE_READONLY ||
        (rc == SQLITE_IOERR && l->db && sqlite3_db_readonly(l->db, "main") == 1)) {
        bool exists = access(l->path, F_OK) == 0;
        if (access(exists ? l->path : l->dir, W_OK) != 0 && errno != ENOENT)
            sys = errno;
    }
    return sl_fail(st, "resume ledger '%s': cannot %s: %s%s%s%s", l->path, doing,
                   l->db ? sqlite3_errmsg(l->db) : "out of memory", sys ? " (" : "",
                   sys ? strerror(sys) : "", sys ? ")" : "");
}

static sl_status exec_sql(sl_ledger *l, const char *sql, const char *doing)
{
    if (sqlite3_exec(l->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(l, SL_ERR_IO, doing);
    return SL_OK;
}

static sl_status prepare(sl_ledger *l, const char *sql, sqlite3_stmt **out)
{
    if (sqlite3_prepare_v2(l->db, sql, -1, out, NULL) != SQLITE_OK)
        return db_fail(l, SL_ERR_IO, "prepare a query");
    return SL_OK;
}

/* Runs a statement that returns no rows (bound by the caller), then resets it. */
static sl_status step_done(sl_ledger *l, sqlite3_stmt *s, const char *doing)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE)
        return db_fail(l, SL_ERR_IO, doing);
    return SL_OK;
}

/* A text SQLite refused to bind (past its string limit, SQLITE_MAX_LENGTH:
 * 1e9 bytes by default; out of memory) is bound as NULL, and the query
 * would run on that: an INSERT OR IGNORE passing a row over while its part
 * counts it, a lookup finding nothing (a row taken for not done). `len` is
 * the text's size (SIZE_MAX: up to its NUL); `what` names it in the
 * message and `fix` says what to change when it is too big. On a refusal
 * the statement is reset, so one kept for reuse binds afresh. */
static sl_status bind_text(sl_ledger *l, sqlite3_stmt *s, int at, const char *text, size_t len,
                           const char *what, const char *fix)
{
    if (len == SIZE_MAX)
        len = strlen(text);
    int rc = sqlite3_bind_text64(s, at, text, len, SQLITE_STATIC, SQLITE_UTF8);
    if (rc == SQLITE_OK)
        return SL_OK;
    return sl_sqlbind_refused(s, rc, "resume ledger", l->path, what, text, len,
                              "SQLite takes at most", fix);
}

/* bind_text's `what` and `fix` for a row id */
#define ROW_ID "the row id", "give the rows shorter ids"
/* and for a part's file name */
#define PART_NAME "the part name", "use a shorter one"

/* A number bound to parameter `at` (or NULL, when `null`): SQLite refuses
 * one only for a parameter the statement lacks, a mistake in this file. */
static sl_status bind_num(sl_ledger *l, sqlite3_stmt *s, int at, int64_t v, bool null)
{
    int rc = null ? sqlite3_bind_null(s, at) : sqlite3_bind_int64(s, at, (sqlite3_int64)v);
    if (rc == SQLITE_OK)
        return SL_OK;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return sl_fail(SL_ERR_IO, "resume ledger '%s': cannot bind parameter %d of '%s': %s", l->path,
                   at, sqlite3_sql(s), sqlite3_errstr(rc));
}

static sl_status bind_int(sl_ledger *l, sqlite3_stmt *s, int at, int64_t v)
{
    return bind_num(l, s, at, v, false);
}

static void rollback(sl_ledger *l)
{
    if (!sqlite3_get_autocommit(l->db))
        sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
}

bool sl_ledger_exists(const char *dir)
{
    char *path = sl_asprintf("%s/%s", dir, SL_LEDGER_FILE);
    bool yes = path && access(path, F_OK) == 0;
    sl_free(path);
    return yes;
}

const char *sl_ledger_path(const sl_ledger *l) { return l->path; }

/* --- open ------------------------------------------------------------------------ */

static void close_db(sl_ledger *l)
{
    sqlite3_finalize(l->is_done);
    sqlite3_finalize(l->add_row);
    l->is_done = l->add_row = NULL;
    sqlite3_close(l->db);
    l->db = NULL;
}

static void remove_db_files(const char *path)
{
    const char *suffix[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        char *p = sl_asprintf("%s%s", path, suffix[i]);
        if (p)
            unlink(p);
        sl_free(p);
    }
}

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS parts(number INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " state INTEGER NOT NULL, rows INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS rows(id TEXT PRIMARY KEY, part INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS rows_by_part ON rows(part);"
    "CREATE TABLE IF NOT EXISTS retry_parts(part INTEGER PRIMARY KEY, removed INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS retry_ids(part INTEGER NOT NULL, id TEXT NOT NULL,"
    " PRIMARY KEY(part, id)) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO meta(key, value) VALUES('format_version', '1');"
    "PRAGMA user_version = 1;";

/* SQLite opens the file a symlink names: one put under the ledger's name
 * in a shared output folder had sluice write its tables into another
 * SQLite database of the user's (or create one where the link pointed). */
static sl_status refuse_link(const sl_ledger *l)
{
    struct stat sb;
    if (lstat(l->path, &sb) == 0 && S_ISLNK(sb.st_mode))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "resume ledger '%s' is a symbolic link, not a file sluice made: it would "
                       "write into the file the link names; remove the link (or choose another "
                       "-o)", l->path);
    return SL_OK;
}

/* Opens the file, locks it, checks its format and creates the tables.
 * *unreadable is set when the file exists but is no ledger we can read. */
static sl_status open_db(sl_ledger *l, bool *unreadable)
{
    *unreadable = false;
    sl_fault("ledger.open", l->path); /* tests: a link put there after the check */
    /* NOFOLLOW refuses a link anywhere in the path SQLite is given, and
     * SQLite opens the file itself with O_NOFOLLOW: the lstat above alone
     * left a link put there after it followed. The folder's own path is
     * resolved first, so an -o that is a link to a folder is taken. */
    if (sqlite3_open_v2(l->open_path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                                  SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
                        NULL) != SQLITE_OK) {
        sl_status st = refuse_link(l);
        return st != SL_OK ? st : db_fail(l, SL_ERR_IO, "open it");
    }
    sqlite3_extended_result_codes(l->db, 0);
    /* The exclusive lock is taken by the first transaction and kept. */
    char *err = NULL;
    int rc = sqlite3_exec(l->db, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL;"
                                 "PRAGMA synchronous=FULL; BEGIN EXCLUSIVE;",
                          NULL, NULL, &err);
    sqlite3_free(err);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return sl_fail(SL_ERR_BUSY,
                       "output folder '%s' is in use by another sluice run (its resume ledger "
                       "'%s' is locked): wait for it to end or choose another -o", l->dir, l->path);
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) {
        *unreadable = true;
        return sl_fail(SL_ERR_IO, "'%s' is not a sluice resume ledger (%s): choose another -o, "
                                  "or pass --overwrite to start over", l->path,
                       sqlite3_errstr(rc));
    }
    if (rc != SQLITE_OK)
        return db_fail(l, SL_ERR_IO, "lock it");
    sqlite3_stmt *s;
    sl_status st = prepare(l, "PRAGMA user_version", &s);
    if (st != SL_OK)
        return st;
    int version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    if (version > SL_LEDGER_FORMAT || version < 0) {
        *unreadable = true;
        return sl_fail(SL_ERR_IO, "resume ledger '%s' has format %d, and this sluice reads "
                                  "format %d or older: use a newer sluice, choose another -o, or "
                                  "pass --overwrite to start over", l->path, version,
                       SL_LEDGER_FORMAT);
    }
    /* Format 0 is an empty file: make the tables. */
    if ((st = exec_sql(l, schema, "create its tables")) != SL_OK)
        return st;
    /* The input shard of each row (MPI runs, sl_ledger_part_record): a
     * column ledgers made before it lack; older readers name their columns,
     * so the format stays the same. */
    if (sqlite3_prepare_v2(l->db, "SELECT shard FROM rows LIMIT 0", -1, &s, NULL) == SQLITE_OK)
        sqlite3_finalize(s);
    else if ((st = exec_sql(l, "ALTER TABLE rows ADD COLUMN shard INTEGER", "add a column")) !=
             SL_OK)
        return st;
    /* What each part holds as inputs and as rows written (a rerun's counts:
     * with --rows-per-task or copies, neither is its ids): columns added
     * the same way. */
    if (sqlite3_prepare_v2(l->db, "SELECT inputs, written FROM parts LIMIT 0", -1, &s, NULL) ==
        SQLITE_OK)
        sqlite3_finalize(s);
    else if ((st = exec_sql(l, "ALTER TABLE parts ADD COLUMN inputs INTEGER;"
                               "ALTER TABLE parts ADD COLUMN written INTEGER", "add a column")) !=
             SL_OK)
        return st;
    /* The failed rows each part holds (--retry-failed reads only those
     * with some, and a rerun says how many): added the same way. */
    if (sqlite3_prepare_v2(l->db, "SELECT failed FROM parts LIMIT 0", -1, &s, NULL) == SQLITE_OK)
        sqlite3_finalize(s);
    else if ((st = exec_sql(l, "ALTER TABLE parts ADD COLUMN failed INTEGER", "add a column")) !=
             SL_OK)
        return st;
    /* Each committed part file's size (a part cut or edited by hand is
     * found by it: sl_ledger_each_resized): added the same way. */
    if (sqlite3_prepare_v2(l->db, "SELECT bytes FROM parts LIMIT 0", -1, &s, NULL) == SQLITE_OK)
        sqlite3_finalize(s);
    else if ((st = exec_sql(l, "ALTER TABLE parts ADD COLUMN bytes INTEGER", "add a column")) !=
             SL_OK)
        return st;
    if ((st = exec_sql(l, "CREATE INDEX IF NOT EXISTS rows_by_shard ON rows(shard) "
                          "WHERE shard IS NOT NULL", "create an index")) != SL_OK ||
        (st = exec_sql(l, "COMMIT", "create its tables")) != SL_OK)
        return st;
    if ((st = prepare(l, "SELECT 1 FROM rows r JOIN parts p ON p.number = r.part "
                         "WHERE r.id = ?1 AND p.state = 1", &l->is_done)) != SL_OK ||
        (st = prepare(l, "INSERT OR IGNORE INTO rows(id, part) VALUES(?1, ?2)", &l->add_row)) !=
            SL_OK)
        return st;
    return SL_OK;
}

sl_status sl_ledger_open(const char *dir, bool overwrite, sl_ledger **out)
{
    *out = NULL;
    sl_status st = sl_make_dirs(dir);
    if (st != SL_OK)
        return st;
    sl_ledger *l = sl_calloc(1, sizeof *l);
    if (!l || !(l->dir = sl_strdup(dir)) || !(l->path = sl_asprintf("%s/%s", dir, SL_LEDGER_FILE))) {
        sl_ledger_free(l);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening the resume ledger in '%s'", dir);
    }
    pthread_mutex_init(&l->mu, NULL);
    char *real_dir = realpath(dir, NULL); /* (malloc's) */
    if (real_dir) {
        l->open_path = sl_asprintf("%s/%s", real_dir, SL_LEDGER_FILE);
        free(real_dir);
        if (!l->open_path)
            st = sl_fail(SL_ERR_NOMEM, "out of memory opening the resume ledger in '%s'", dir);
    } else {
        st = sl_fail(SL_ERR_IO, "cannot open the resume ledger in '%s': %s", dir,
                     strerror(errno));
    }
    if (st == SL_OK)
        st = refuse_link(l);
    if (st != SL_OK) {
        sl_ledger_free(l);
        return st;
    }
    bool unreadable;
    st = open_db(l, &unreadable);
    if (st != SL_OK && unreadable && overwrite) {
        sl_log(SL_LOG_WARN, "--overwrite: replacing '%s', which cannot be read", l->path);
        close_db(l);
        remove_db_files(l->path);
        st = open_db(l, &unreadable);
    }
    if (st != SL_OK) {
        sl_ledger_free(l);
        return st;
    }
    *out = l;
    return SL_OK;
}

/* --- fingerprint ------------------------------------------------------------------ */

/* The next "key\tvalue" line of a fingerprint at *at (moved past it): its
 * key and value, as pointers and lengths; false past the last. */
static bool next_line(const char **at, const char **key, size_t *klen, const char **value,
                      size_t *vlen)
{
    while (*at && **at) {
        const char *line = *at, *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        const char *tab = memchr(line, '\t', n);
        *at = nl ? nl + 1 : NULL;
        if (tab) {
            *key = line;
            *klen = (size_t)(tab - line);
            *value = tab + 1;
            *vlen = n - *klen - 1;
            return true;
        }
    }
    return false;
}

/* The value of `key` in "key\tvalue" lines, as a pointer and length; NULL if absent. */
static const char *find_key(const char *text, const char *key, size_t klen, size_t *vlen)
{
    const char *k, *v;
    size_t kl;
    for (const char *at = text; next_line(&at, &k, &kl, &v, vlen);)
        if (kl == klen && memcmp(k, key, klen) == 0)
            return v;
    return NULL;
}

/* Whether `key` is an item of the ", "-separated `list`. */
static bool in_list(const char *list, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = list; (p = strstr(p, key)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* Whether the line `key` = `value` of one fingerprint differs in (or is
 * missing from) `other`. */
static bool line_differs(const char *key, size_t klen, const char *value, size_t vlen,
                         const char *other)
{
    size_t olen = 0;
    const char *o = find_key(other, key, klen, &olen);
    return !o || olen != vlen || memcmp(o, value, vlen) != 0;
}

/* Appends to `out` the keys of `a` whose value differs in (or is missing from) `b`. */
static void diff_keys(const char *a, const char *b, char *out, size_t cap)
{
    const char *k, *v;
    size_t klen, vlen;
    for (const char *at = a; next_line(&at, &k, &klen, &v, &vlen);) {
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(klen < 100 ? klen : 100), k);
        if (line_differs(k, klen, v, vlen, b) && !in_list(out, key)) {
            size_t used = strlen(out);
            snprintf(out + used, cap - used, "%s%s", used ? ", " : "", key);
        }
    }
}

/* How many keys differ between `a` and `b`: those whose values differ, and
 * those one holds and the other does not (as diff_keys names them, uncut). */
static size_t diff_count(const char *a, const char *b)
{
    size_t n = 0, vlen, olen;
    const char *k, *v;
    size_t klen;
    for (const char *at = a; next_line(&at, &k, &klen, &v, &vlen);)
        n += line_differs(k, klen, v, vlen, b);
    for (const char *at = b; next_line(&at, &k, &klen, &v, &vlen);)
        n += !find_key(a, k, klen, &olen); /* the keys a lacks; the others are counted */
    return n;
}

/* Whether `old` may have been written in `form`, a form of `today` without
 * some of its keys: it holds none of the keys the form lacks (a ledger
 * holding one was written in a form that had it). */
static bool form_fits(const char *today, const char *form, const char *old)
{
    const char *k, *v;
    size_t klen, vlen, olen;
    for (const char *at = today; next_line(&at, &k, &klen, &v, &vlen);)
        if (!find_key(form, k, klen, &olen) && find_key(old, k, klen, &olen))
            return false;
    return true;
}

/* Parts recorded, pending or committed; -1 on error. */
static long count_parts(sl_ledger *l)
{
    sqlite3_stmt *s = NULL;
    long n = -1;
    if (prepare(l, "SELECT count(*) FROM parts", &s) == SL_OK && sqlite3_step(s) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

sl_status sl_ledger_bind(sl_ledger *l, const char *fingerprint, bool reset)
{
    return sl_ledger_bind_near(l, fingerprint, NULL, 0, reset);
}

sl_status sl_ledger_bind_near(sl_ledger *l, const char *fingerprint, const char *const *forms,
                              size_t n_forms, bool reset)
{
    pthread_mutex_lock(&l->mu);
    sl_status st = SL_OK;
    sqlite3_stmt *s = NULL;
    if (reset) {
        st = exec_sql(l, "BEGIN IMMEDIATE; DELETE FROM rows; DELETE FROM parts;"
                         "DELETE FROM meta WHERE key <> 'format_version';",
                      "start over");
        if (st != SL_OK)
            goto out;
    } else {
        if ((st = prepare(l, "SELECT value FROM meta WHERE key = 'fingerprint'", &s)) != SL_OK)
            goto out;
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            const char *old = (const char *)sqlite3_column_text(s, 0);
            bool differs = old && strcmp(old, fingerprint) != 0;
            if (differs && count_parts(l) == 0) {
                /* Nothing was committed under the old settings (a run that
                 * failed to start, say): take the new ones. */
                sqlite3_finalize(s);
                s = NULL;
                st = exec_sql(l, "BEGIN IMMEDIATE; DELETE FROM meta WHERE key <> "
                                 "'format_version';", "store the settings");
                if (st != SL_OK)
                    goto out;
            } else if (differs) {
                /* Today's form unless an older one the ledger may have
                 * been written in is nearer (fewer keys differ): the keys
                 * an older sluice did not write are no change of the
                 * user's. */
                const char *near = fingerprint;
                size_t fewest = diff_count(fingerprint, old);
                for (size_t i = 0; i < n_forms; i++) {
                    size_t n = forms[i] && form_fits(fingerprint, forms[i], old)
                                   ? diff_count(forms[i], old)
                                   : SIZE_MAX;
                    if (n < fewest) {
                        fewest = n;
                        near = forms[i];
                    }
                }
                char keys[512] = "";
                diff_keys(near, old, keys, sizeof keys);
                diff_keys(old, near, keys, sizeof keys);
                st = sl_fail(SL_ERR_EXISTS,
                             "output %s'%s' holds rows made with other settings (%s "
                             "changed since): run the earlier command to resume it, choose "
                             "another -o, or pass --overwrite to start over",
                             l->output ? "" : "folder ", l->output ? l->output : l->dir,
                             keys[0] ? keys : "the settings");
            }
            if (!differs || st != SL_OK)
                goto out;
        } else if (rc != SQLITE_DONE) {
            st = db_fail(l, SL_ERR_IO, "read its settings");
            goto out;
        } else if ((st = exec_sql(l, "BEGIN IMMEDIATE", "store the settings")) != SL_OK) {
            goto out;
        }
    }
    sqlite3_finalize(s);
    if ((st = prepare(l, "INSERT INTO meta(key, value) VALUES('fingerprint', ?1)", &s)) == SL_OK) {
        if ((st = bind_text(l, s, 1, fingerprint, SIZE_MAX, "the settings",
                            "shorten the prompt or other settings")) == SL_OK)
            st = step_done(l, s, "store the settings");
    }
    if (st == SL_OK)
        st = exec_sql(l, "COMMIT", "store the settings");
    if (st != SL_OK)
        rollback(l);
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

/* --- the caller's facts ------------------------------------------------------------ */

sl_status sl_ledger_meta_get(sl_ledger *l, const char *key, char **value)
{
    *value = NULL;
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, "SELECT value FROM meta WHERE key = ?1", &s);
    if (st == SL_OK) {
        st = bind_text(l, s, 1, key, SIZE_MAX, "the key", "use a shorter one");
        int rc = st == SL_OK ? sqlite3_step(s) : SQLITE_DONE;
        if (rc == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(s, 0);
            if (!(*value = sl_strdup(v ? v : "")))
                st = sl_fail(SL_ERR_NOMEM, "out of memory reading resume ledger '%s'", l->path);
        } else if (rc != SQLITE_DONE) {
            st = db_fail(l, SL_ERR_IO, "read its settings");
        }
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_meta_set(sl_ledger *l, const char *key, const char *value)
{
    if (strcmp(key, "format_version") == 0 || strcmp(key, "fingerprint") == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': '%s' is the ledger's own key",
                       l->path, key);
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", &s);
    if (st == SL_OK) {
        if ((st = bind_text(l, s, 1, key, SIZE_MAX, "the key", "use a shorter one")) == SL_OK &&
            (st = bind_text(l, s, 2, value, SIZE_MAX, "the value", "store a shorter one")) ==
                SL_OK)
            st = step_done(l, s, "store the settings");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_retake(sl_ledger *l, const char *fingerprint)
{
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, "UPDATE meta SET value = ?1 WHERE key = 'fingerprint'", &s);
    if (st == SL_OK && (st = bind_text(l, s, 1, fingerprint, SIZE_MAX, "the settings",
                                       "shorten the prompt or other settings")) == SL_OK)
        st = step_done(l, s, "store the settings");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

/* --- reconcile ----------------------------------------------------------------------- */

typedef struct part_ref {
    long number;
    int state;
    char *name;
} part_ref;

static void free_parts(part_ref *parts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sl_free(parts[i].name);
    sl_free(parts);
}

/* The parts a query (number, state, name) gives, into *out (the caller
 * frees it with free_parts). The caller holds the mutex. */
static sl_status list_parts(sl_ledger *l, const char *sql, part_ref **out, size_t *count)
{
    part_ref *parts = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, sql, &s);
    int rc = SQLITE_DONE;
    while (st == SL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        void *grown = sl_grow(parts, n, &cap, sizeof *parts);
        if (!grown) {
            st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", l->path);
            break;
        }
        parts = grown;
        parts[n] = (part_ref){sqlite3_column_int64(s, 0), sqlite3_column_int(s, 1),
                              sl_strdup((const char *)sqlite3_column_text(s, 2))};
        if (!parts[n++].name)
            st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", l->path);
    }
    if (st == SL_OK && rc != SQLITE_DONE)
        st = db_fail(l, SL_ERR_IO, "read its parts");
    sqlite3_finalize(s);
    if (st != SL_OK) {
        free_parts(parts, n);
        parts = NULL;
        n = 0;
    }
    *out = parts;
    *count = n;
    return st;
}

static sl_status drop_part(sl_ledger *l, long number)
{
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, "DELETE FROM rows WHERE part = ?1", &s);
    if (st == SL_OK && (st = bind_int(l, s, 1, number)) == SL_OK)
        st = step_done(l, s, "forget a part");
    sqlite3_finalize(s);
    s = NULL;
    char sql[160];
    snprintf(sql, sizeof sql, "DELETE FROM retry_ids WHERE part = %ld;"
                              "DELETE FROM retry_parts WHERE part = %ld", number, number);
    if (st == SL_OK)
        st = exec_sql(l, sql, "forget a part");
    if (st == SL_OK && (st = prepare(l, "DELETE FROM parts WHERE number = ?1", &s)) == SL_OK &&
        (st = bind_int(l, s, 1, number)) == SL_OK)
        st = step_done(l, s, "forget a part");
    sqlite3_finalize(s);
    return st;
}

/* What the committed parts hold, into *got (its promoted/dropped counts
 * untouched). The caller holds the mutex. */
static sl_status committed_totals(sl_ledger *l, sl_ledger_info *got)
{
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l,
                           "SELECT count(*), coalesce(sum(rows), 0), coalesce(max(number), -1), "
                           "coalesce(sum(coalesce(inputs, rows)), 0), "
                           "coalesce(sum(coalesce(written, rows)), 0), coalesce(sum(failed), 0), "
                           "count(*) - count(failed) FROM parts WHERE state = 1",
                           &s);
    if (st == SL_OK && sqlite3_step(s) != SQLITE_ROW)
        st = db_fail(l, SL_ERR_IO, "count its parts");
    if (st == SL_OK) {
        got->parts = (long)sqlite3_column_int64(s, 0);
        got->rows = (long)sqlite3_column_int64(s, 1);
        got->max_part = (long)sqlite3_column_int64(s, 2);
        got->inputs = (long)sqlite3_column_int64(s, 3);
        got->written = (long)sqlite3_column_int64(s, 4);
        got->failed = (long)sqlite3_column_int64(s, 5);
        got->parts_failed_unknown = (long)sqlite3_column_int64(s, 6);
    }
    sqlite3_finalize(s);
    return st;
}

sl_status sl_ledger_counts(sl_ledger *l, sl_ledger_info *info)
{
    sl_ledger_info got = {.max_part = -1};
    pthread_mutex_lock(&l->mu);
    sl_status st = committed_totals(l, &got);
    pthread_mutex_unlock(&l->mu);
    if (st == SL_OK)
        *info = got;
    return st;
}

void sl_ledger_set_output(sl_ledger *l, const char *output)
{
    l->output = output;
}

void sl_ledger_set_presence(sl_ledger *l, int64_t (*published)(void *user, const char *name),
                            void *user)
{
    l->published = published;
    l->published_user = user;
}

/* The size of part `name`: its file in the folder, or the object the
 * caller published; -1 when it cannot be stat'ed (not published). */
static int64_t part_file_size(const sl_ledger *l, const char *name)
{
    if (l->published)
        return l->published(l->published_user, name);
    struct stat sb;
    char *file = sl_asprintf("%s/%s", l->dir, name);
    int64_t size = file && stat(file, &sb) == 0 ? (int64_t)sb.st_size : -1;
    sl_free(file);
    return size;
}

/* Binds parameter `at` of `s` to the size of part `name` (its file, or
 * its published object); to NULL when that is not known. */
static sl_status bind_bytes(sl_ledger *l, sqlite3_stmt *s, int at, const char *name)
{
    int64_t size = !name ? -1 : part_file_size(l, name);
    return bind_num(l, s, at, size, size < 0);
}

/* Part `number`'s name (sl_free), or NULL with *st set when none. The
 * caller holds the mutex. */
static char *name_of(sl_ledger *l, long number, sl_status *st)
{
    sqlite3_stmt *s = NULL;
    char *name = NULL;
    if ((*st = prepare(l, "SELECT name FROM parts WHERE number = ?1", &s)) != SL_OK)
        return NULL;
    if ((*st = bind_int(l, s, 1, number)) != SL_OK) {
        sqlite3_finalize(s);
        return NULL;
    }
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && !(name = sl_strdup((const char *)sqlite3_column_text(s, 0))))
        *st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", l->path);
    else if (rc == SQLITE_DONE)
        *st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s' holds no part %ld", l->path,
                      number);
    else if (rc != SQLITE_ROW)
        *st = db_fail(l, SL_ERR_IO, "look up a part");
    sqlite3_finalize(s);
    return name;
}

sl_status sl_ledger_reconcile(sl_ledger *l, sl_ledger_info *info)
{
    sl_ledger_info got = {.max_part = -1};
    part_ref *parts = NULL;
    size_t n = 0;
    sqlite3_stmt *s = NULL;
    pthread_mutex_lock(&l->mu);
    sl_status st = exec_sql(l, "BEGIN IMMEDIATE", "reconcile");
    if (st != SL_OK)
        goto out;
    if ((st = list_parts(l, "SELECT number, state, name FROM parts ORDER BY number", &parts,
                         &n)) != SL_OK)
        goto out;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        char *file = sl_asprintf("%s/%s", l->dir, parts[i].name);
        if (!file) {
            st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", l->path);
            break;
        }
        bool present = l->published ? part_file_size(l, parts[i].name) >= 0
                                    : access(file, F_OK) == 0;
        if (!present) {
            /* Pending: the crash came before the rename. Committed: removed by hand,
             * from where it was published (a bucket), not from the folder. */
            bool remote = l->published && l->output;
            if (parts[i].state == PART_COMMITTED)
                sl_log(SL_LOG_WARN, "'%s%s%s' is in the resume ledger but gone: its rows will be "
                                    "captioned again",
                       remote ? l->output : "", remote ? "/" : "", remote ? parts[i].name : file);
            st = drop_part(l, parts[i].number);
            got.parts_dropped++;
        } else if (parts[i].state == PART_PENDING) {
            /* The crash came after the rename: the file is complete. */
            if ((st = prepare(l, "UPDATE parts SET state = 1, bytes = ?2 WHERE number = ?1",
                              &s)) == SL_OK &&
                (st = bind_int(l, s, 1, parts[i].number)) == SL_OK &&
                (st = bind_bytes(l, s, 2, parts[i].name)) == SL_OK)
                st = step_done(l, s, "commit a pending part");
            sqlite3_finalize(s);
            s = NULL;
            got.parts_promoted++;
        }
        sl_free(file);
    }
    int err = st == SL_OK ? sl_fault("ledger.reconcile", l->path) : 0; /* before it is durable */
    if (err)
        st = sl_fail(SL_ERR_IO, "resume ledger '%s': cannot reconcile: %s", l->path, strerror(err));
    if (st == SL_OK)
        st = exec_sql(l, "COMMIT", "reconcile");
    if (st != SL_OK)
        goto out;
    sl_fault("ledger.reconciled", l->path); /* a trace: past the reconcile */
    st = committed_totals(l, &got);
out:
    if (st != SL_OK)
        rollback(l);
    sqlite3_finalize(s);
    free_parts(parts, n);
    pthread_mutex_unlock(&l->mu);
    if (st == SL_OK && info)
        *info = got;
    return st;
}

/* --- lookups and parts --------------------------------------------------------------- */

/* A pending part: number, name, its ids, inputs, rows written, failed rows. */
#define INSERT_PART                                                                            \
    "INSERT INTO parts(number, name, state, rows, inputs, written, failed) "                   \
    "VALUES(?1, ?2, 0, ?3, ?4, ?5, ?6)"

/* Binds INSERT_PART's parameters. */
static sl_status bind_part(sl_ledger *l, sqlite3_stmt *s, long number, const char *name,
                           int64_t rows, long inputs, long written, long failed)
{
    sl_status st = bind_int(l, s, 1, number);
    if (st == SL_OK)
        st = bind_text(l, s, 2, name, SIZE_MAX, PART_NAME);
    const int64_t counts[] = {rows, inputs, written, failed};
    for (int i = 0; st == SL_OK && i < 4; i++)
        st = bind_int(l, s, 3 + i, counts[i]);
    return st;
}

sl_status sl_ledger_is_done(sl_ledger *l, const char *id, bool *done)
{
    *done = false;
    pthread_mutex_lock(&l->mu);
    sl_status st = bind_text(l, l->is_done, 1, id, SIZE_MAX, ROW_ID);
    if (st != SL_OK)
        goto out;
    int rc = sqlite3_step(l->is_done);
    sqlite3_reset(l->is_done);
    sqlite3_clear_bindings(l->is_done);
    *done = rc == SQLITE_ROW;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = db_fail(l, SL_ERR_IO, "look up a row");
out:
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_has_part(sl_ledger *l, const char *name, bool *known)
{
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, "SELECT 1 FROM parts WHERE name = ?1", &s);
    *known = false;
    if (st == SL_OK) {
        st = bind_text(l, s, 1, name, SIZE_MAX, PART_NAME);
        int rc = st == SL_OK ? sqlite3_step(s) : SQLITE_DONE;
        *known = rc == SQLITE_ROW;
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            st = db_fail(l, SL_ERR_IO, "look up a part");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_part_begin(sl_ledger *l, const char *name, long number)
{
    pthread_mutex_lock(&l->mu);
    sl_status st = SL_OK;
    sqlite3_stmt *s = NULL;
    if (l->in_part || l->prepared) {
        st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': part '%s' begun while '%s' is open",
                     l->path, name, l->part_name);
        goto out;
    }
    if ((st = prepare(l, "SELECT 1 FROM parts WHERE number = ?1 OR name = ?2", &s)) != SL_OK)
        goto out;
    if ((st = bind_int(l, s, 1, number)) != SL_OK ||
        (st = bind_text(l, s, 2, name, SIZE_MAX, PART_NAME)) != SL_OK)
        goto out;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        st = sl_fail(SL_ERR_EXISTS, "resume ledger '%s' already holds part %ld ('%s')", l->path,
                     number, name);
        goto out;
    }
    if (rc != SQLITE_DONE) {
        st = db_fail(l, SL_ERR_IO, "look up a part");
        goto out;
    }
    sl_free(l->part_name);
    if (!(l->part_name = sl_strdup(name))) {
        st = sl_fail(SL_ERR_NOMEM, "out of memory starting part '%s'", name);
        goto out;
    }
    if ((st = exec_sql(l, "BEGIN IMMEDIATE", "start a part")) != SL_OK)
        goto out;
    l->in_part = true;
    l->part_number = number;
    l->part_rows = 0;
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_part_add(sl_ledger *l, const char *id)
{
    pthread_mutex_lock(&l->mu);
    sl_status st;
    if (!l->in_part) {
        st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': row '%s' added outside a part",
                     l->path, id);
    } else {
        /* A repeated id (the same input listed twice) keeps its first part. */
        int err = sl_fault("ledger.add", id);
        if (err)
            st = sl_fail(SL_ERR_IO, "resume ledger '%s': cannot record a row: %s", l->path,
                         strerror(err));
        else if ((st = bind_text(l, l->add_row, 1, id, SIZE_MAX, ROW_ID)) == SL_OK &&
                 (st = bind_int(l, l->add_row, 2, l->part_number)) == SL_OK)
            st = step_done(l, l->add_row, "record a row");
        if (st == SL_OK)
            l->part_rows++;
    }
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_part_prepare(sl_ledger *l, long inputs, long written, long failed)
{
    pthread_mutex_lock(&l->mu);
    sl_status st = SL_OK;
    sqlite3_stmt *s = NULL;
    if (!l->in_part) {
        st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': no part to prepare", l->path);
        goto out;
    }
    if ((st = prepare(l, INSERT_PART, &s)) == SL_OK &&
        (st = bind_part(l, s, l->part_number, l->part_name, l->part_rows, inputs, written,
                        failed)) == SL_OK)
        st = step_done(l, s, "record a pending part");
    if (st == SL_OK)
        st = exec_sql(l, "COMMIT", "record a pending part");
    if (st != SL_OK)
        rollback(l);
    l->in_part = false;
    l->prepared = st == SL_OK;
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_part_commit(sl_ledger *l)
{
    pthread_mutex_lock(&l->mu);
    sl_status st = SL_OK;
    sqlite3_stmt *s = NULL;
    if (!l->prepared) {
        st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': no prepared part to commit", l->path);
        goto out;
    }
    /* after the rename: the file's size as committed, in the same write */
    if ((st = prepare(l, "UPDATE parts SET state = 1, bytes = ?2 WHERE number = ?1", &s)) ==
        SL_OK &&
        (st = bind_int(l, s, 1, l->part_number)) == SL_OK &&
        (st = bind_bytes(l, s, 2, l->part_name)) == SL_OK)
        st = step_done(l, s, "commit a part");
    l->prepared = false;
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_part_record(sl_ledger *l, const char *name, long number, const char *ids,
                               const int64_t *shards, size_t n, long inputs, long written,
                               long failed)
{
    pthread_mutex_lock(&l->mu);
    sl_status st = SL_OK;
    sqlite3_stmt *known = NULL, *add = NULL, *part = NULL;
    if (l->in_part) {
        st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': part '%s' recorded while '%s' is "
                                         "open", l->path, name, l->part_name);
        goto out;
    }
    if ((st = prepare(l, "SELECT 1 FROM parts WHERE number = ?1 OR name = ?2", &known)) != SL_OK)
        goto out;
    if ((st = bind_int(l, known, 1, number)) != SL_OK ||
        (st = bind_text(l, known, 2, name, SIZE_MAX, PART_NAME)) !=
            SL_OK)
        goto out;
    int rc = sqlite3_step(known);
    if (rc != SQLITE_DONE) {
        st = rc == SQLITE_ROW ? sl_fail(SL_ERR_EXISTS, "resume ledger '%s' already holds part "
                                                       "%ld ('%s')", l->path, number, name)
                              : db_fail(l, SL_ERR_IO, "look up a part");
        goto out;
    }
    if ((st = prepare(l, "INSERT OR IGNORE INTO rows(id, part, shard) VALUES(?1, ?2, ?3)",
                      &add)) != SL_OK ||
        (st = prepare(l, INSERT_PART, &part)) != SL_OK ||
        (st = exec_sql(l, "BEGIN IMMEDIATE", "record a part")) != SL_OK)
        goto out;
    const char *id = ids;
    for (size_t i = 0; st == SL_OK && i < n; i++, id += strlen(id) + 1) {
        int err = sl_fault("ledger.add", id);
        if (err)
            st = sl_fail(SL_ERR_IO, "resume ledger '%s': cannot record a row: %s", l->path,
                         strerror(err));
        else if ((st = bind_text(l, add, 1, id, SIZE_MAX, ROW_ID)) == SL_OK &&
                 (st = bind_int(l, add, 2, number)) == SL_OK &&
                 (st = bind_num(l, add, 3, shards[i], shards[i] < 0)) == SL_OK)
            st = step_done(l, add, "record a row");
        sqlite3_reset(add);
        sqlite3_clear_bindings(add);
    }
    if (st == SL_OK &&
        (st = bind_part(l, part, number, name, (int64_t)n, inputs, written, failed)) == SL_OK)
        st = step_done(l, part, "record a pending part");
    if (st == SL_OK)
        st = exec_sql(l, "COMMIT", "record a pending part");
    if (st != SL_OK)
        rollback(l);
out:
    sqlite3_finalize(known);
    sqlite3_finalize(add);
    sqlite3_finalize(part);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_part_commit_number(sl_ledger *l, long number)
{
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *s = NULL;
    sl_status st = SL_OK;
    char *name = name_of(l, number, &st);
    if (st == SL_OK)
        st = prepare(l, "UPDATE parts SET state = 1, bytes = ?2 WHERE number = ?1 AND state = 0",
                     &s);
    if (st == SL_OK && (st = bind_int(l, s, 1, number)) == SL_OK &&
        (st = bind_bytes(l, s, 2, name)) == SL_OK) /* the rank wrote it into the same folder */
        st = step_done(l, s, "commit a part");
    sl_fault("ledger.commit", l->path); /* tests: a slow disk's sync, the write done */
    sl_free(name);
    if (st == SL_ERR_INVALID_ARG || (st == SL_OK && sqlite3_changes(l->db) != 1))
        st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': no pending part %ld to commit",
                     l->path, number);
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_shard_done(sl_ledger *l, int64_t shard,
                               sl_status (*each)(void *user, const char *id), void *user)
{
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, "SELECT r.id FROM rows r JOIN parts p ON p.number = r.part "
                              "WHERE r.shard = ?1 AND p.state = 1", &s);
    if (st == SL_OK)
        st = bind_int(l, s, 1, shard);
    int rc = SQLITE_DONE;
    while (st == SL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        st = each(user, (const char *)sqlite3_column_text(s, 0));
    if (st == SL_OK && rc != SQLITE_DONE)
        st = db_fail(l, SL_ERR_IO, "list a shard's rows");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

/* --- parts changed by hand ------------------------------------------------------- */

/* A committed part as sl_ledger_each_resized() finds it. */
typedef struct resized_ref {
    sl_ledger_part part;
    bool unsized; /* no size recorded: this one is kept */
    sqlite3_int64 bytes;
} resized_ref;

sl_status sl_ledger_each_resized(sl_ledger *l,
                                 sl_status (*each)(void *user, const sl_ledger_part *part),
                                 void *user)
{
    resized_ref *refs = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *s = NULL, *set = NULL;
    pthread_mutex_lock(&l->mu);
    sl_status st = prepare(l, "SELECT number, name, bytes, coalesce(written, rows), failed "
                              "FROM parts WHERE state = 1 ORDER BY number", &s);
    int rc = SQLITE_DONE;
    /* One stat a part (a listing's size for published ones): only those
     * whose size moved are read (by `each`). */
    while (st == SL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 1);
        int64_t size = part_file_size(l, name);
        bool unsized = sqlite3_column_type(s, 2) == SQLITE_NULL;
        if (size < 0 || (!unsized && sqlite3_column_int64(s, 2) == (sqlite3_int64)size))
            continue;
        void *grown = sl_grow(refs, n, &cap, sizeof *refs);
        if (!grown) {
            st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", l->path);
            break;
        }
        refs = grown;
        refs[n] = (resized_ref){
            .part = {.number = (long)sqlite3_column_int64(s, 0), .name = sl_strdup(name),
                     .written = (long)sqlite3_column_int64(s, 3),
                     .failed = sqlite3_column_type(s, 4) == SQLITE_NULL
                                   ? -1 : (long)sqlite3_column_int64(s, 4),
                     .bytes = size},
            .unsized = unsized};
        if (!refs[n++].part.name)
            st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", l->path);
    }
    if (st == SL_OK && rc != SQLITE_DONE)
        st = db_fail(l, SL_ERR_IO, "read its parts");
    /* Parts committed by a sluice that kept no size: taken as they are now,
     * in one write (nothing to compare them with). */
    bool any_unsized = false;
    for (size_t i = 0; i < n; i++)
        any_unsized |= refs[i].unsized;
    if (st == SL_OK && any_unsized &&
        (st = prepare(l, "UPDATE parts SET bytes = ?2 WHERE number = ?1", &set)) == SL_OK &&
        (st = exec_sql(l, "BEGIN IMMEDIATE", "record the parts' sizes")) == SL_OK) {
        for (size_t i = 0; st == SL_OK && i < n; i++) {
            if (!refs[i].unsized)
                continue;
            if ((st = bind_int(l, set, 1, refs[i].part.number)) == SL_OK &&
                (st = bind_int(l, set, 2, refs[i].part.bytes)) == SL_OK)
                st = step_done(l, set, "record a part's size");
            sqlite3_reset(set);
        }
        if (st == SL_OK)
            st = exec_sql(l, "COMMIT", "record the parts' sizes");
        if (st != SL_OK)
            rollback(l);
    }
    sqlite3_finalize(s);
    sqlite3_finalize(set);
    pthread_mutex_unlock(&l->mu);
    /* Outside the mutex: `each` may call the ledger (sl_ledger_part_sized). */
    for (size_t i = 0; st == SL_OK && i < n; i++)
        if (!refs[i].unsized)
            st = each(user, &refs[i].part);
    for (size_t i = 0; i < n; i++)
        sl_free((char *)refs[i].part.name);
    sl_free(refs);
    return st;
}

sl_status sl_ledger_part_sized(sl_ledger *l, long number, int64_t bytes)
{
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, "UPDATE parts SET bytes = ?2 WHERE number = ?1", &s);
    if (st == SL_OK && (st = bind_int(l, s, 1, number)) == SL_OK &&
        (st = bind_int(l, s, 2, bytes)) == SL_OK)
        st = step_done(l, s, "record a part's size");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

/* --- retrying failed rows --------------------------------------------------------- */

sl_status sl_ledger_each_part(sl_ledger *l,
                              sl_status (*each)(void *user, long number, const char *name),
                              void *user)
{
    /* Collected first: `each` may call back into the ledger. */
    part_ref *parts = NULL;
    size_t n = 0;
    pthread_mutex_lock(&l->mu);
    sl_status st = list_parts(l, "SELECT number, state, name FROM parts WHERE state = 1 AND "
                                 "(failed IS NULL OR failed > 0) ORDER BY number", &parts, &n);
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n && st == SL_OK; i++)
        st = each(user, parts[i].number, parts[i].name);
    free_parts(parts, n);
    return st;
}

sl_status sl_ledger_each_retry(sl_ledger *l,
                               sl_status (*each)(void *user, long number, const char *name),
                               void *user)
{
    part_ref *parts = NULL;
    size_t n = 0;
    pthread_mutex_lock(&l->mu);
    sl_status st = list_parts(l, "SELECT p.number, p.state, p.name FROM parts p JOIN "
                                 "retry_parts r ON r.part = p.number ORDER BY p.number",
                              &parts, &n);
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n && st == SL_OK; i++)
        st = each(user, parts[i].number, parts[i].name);
    free_parts(parts, n);
    return st;
}

sl_status sl_ledger_retry_begin(sl_ledger *l, long number, const char *ids, size_t n,
                                long removed)
{
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *add = NULL, *part = NULL;
    sl_status st = SL_OK;
    if (l->in_part) {
        st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': a retry begun while part '%s' is "
                                         "open", l->path, l->part_name);
        goto out;
    }
    if ((st = prepare(l, "INSERT OR IGNORE INTO retry_ids(part, id) VALUES(?1, ?2)", &add)) !=
            SL_OK ||
        (st = prepare(l, "INSERT INTO retry_parts(part, removed) SELECT number, ?2 FROM parts "
                         "WHERE number = ?1 AND state = 1", &part)) != SL_OK ||
        (st = exec_sql(l, "BEGIN IMMEDIATE", "begin a retry")) != SL_OK)
        goto out;
    const char *id = ids;
    for (size_t i = 0; st == SL_OK && i < n; i++, id += strlen(id) + 1) {
        if ((st = bind_int(l, add, 1, number)) == SL_OK &&
            (st = bind_text(l, add, 2, id, SIZE_MAX, ROW_ID)) == SL_OK)
            st = step_done(l, add, "record a row to retry");
    }
    if (st == SL_OK && (st = bind_int(l, part, 1, number)) == SL_OK &&
        (st = bind_int(l, part, 2, removed)) == SL_OK)
        st = step_done(l, part, "begin a retry");
    if (st == SL_OK && sqlite3_changes(l->db) != 1)
        st = sl_fail(SL_ERR_INVALID_ARG, "resume ledger '%s': no committed part %ld to retry "
                                         "rows of", l->path, number);
    int err = st == SL_OK ? sl_fault("retry.begin", l->path) : 0; /* before it is durable */
    if (err)
        st = sl_fail(SL_ERR_IO, "resume ledger '%s': cannot begin a retry: %s", l->path,
                     strerror(err));
    if (st == SL_OK)
        st = exec_sql(l, "COMMIT", "begin a retry");
    if (st != SL_OK)
        rollback(l);
out:
    sqlite3_finalize(add);
    sqlite3_finalize(part);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_retry_ids(sl_ledger *l, long number,
                              sl_status (*each)(void *user, const char *id), void *user)
{
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *s = NULL;
    sl_status st = prepare(l, "SELECT id FROM retry_ids WHERE part = ?1", &s);
    if (st == SL_OK)
        st = bind_int(l, s, 1, number);
    int rc = SQLITE_DONE;
    while (st == SL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        st = each(user, (const char *)sqlite3_column_text(s, 0));
    if (st == SL_OK && rc != SQLITE_DONE)
        st = db_fail(l, SL_ERR_IO, "list the rows to retry");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&l->mu);
    return st;
}

/* Statements of one retry's finish. */
typedef struct forget_ctx {
    sqlite3_stmt *del;   /* a ledger id: the part it was in */
    sqlite3_stmt *count; /* that part's counts lowered */
    sqlite3_stmt *has;   /* whether a ledger id is recorded */
} forget_ctx;

/* Forgets ledger id `id` (len bytes) wherever it is recorded, lowering its
 * part's counts (an input's id counts among the part's inputs); *gone says
 * whether it was recorded. */
static sl_status forget_id(sl_ledger *l, forget_ctx *f, const char *id, size_t len,
                           bool is_input, bool *gone)
{
    *gone = false;
    sl_status st = bind_text(l, f->del, 1, id, len, ROW_ID);
    if (st != SL_OK)
        return st;
    int rc = sqlite3_step(f->del);
    sqlite3_int64 part = rc == SQLITE_ROW ? sqlite3_column_int64(f->del, 0) : -1;
    if (rc == SQLITE_ROW)
        rc = sqlite3_step(f->del);
    sqlite3_reset(f->del);
    sqlite3_clear_bindings(f->del);
    if (rc != SQLITE_DONE)
        return db_fail(l, SL_ERR_IO, "forget a row");
    if (part < 0)
        return SL_OK;
    *gone = true;
    if ((st = bind_int(l, f->count, 1, part)) != SL_OK ||
        (st = bind_int(l, f->count, 2, is_input)) != SL_OK)
        return st;
    return step_done(l, f->count, "count a part's rows");
}

static sl_status is_recorded(sl_ledger *l, forget_ctx *f, const char *id, size_t len, bool *yes)
{
    *yes = false;
    sl_status st = bind_text(l, f->has, 1, id, len, ROW_ID);
    if (st != SL_OK)
        return st;
    int rc = sqlite3_step(f->has);
    *yes = rc == SQLITE_ROW;
    sqlite3_reset(f->has);
    sqlite3_clear_bindings(f->has);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SL_OK : db_fail(l, SL_ERR_IO, "look up a row");
}

/* The length of X when id is "X#k" (k decimal digits), else 0. */
static size_t copy_root_len(const char *id)
{
    const char *hash = strrchr(id, '#');
    if (!hash || hash == id || !hash[1])
        return 0;
    for (const char *c = hash + 1; *c; c++)
        if (*c < '0' || *c > '9')
            return 0;
    return (size_t)(hash - id);
}

/* A failed row's id Y, as the part file names it, to ledger ids (as
 * stage_write.c records them): a plain input is Y; an input X with copies
 * (a stage's fan-out) has members "X#0" (its own row, whose file id is X)
 * and "X#k" (copy k, file id "X#k"), and X itself recorded with the last.
 * The member that failed and its input are forgotten, the other members
 * kept: the rerun reads the input again and writes that member alone
 * (stage_write.c skips members already committed). */
static sl_status forget_row(sl_ledger *l, forget_ctx *f, const char *y)
{
    size_t len = strlen(y), root = copy_root_len(y);
    char *member = sl_asprintf("%s#0", y);
    if (!member)
        return sl_fail(SL_ERR_NOMEM, "out of memory retrying rows of '%s'", l->path);
    bool gone, copy = false;
    sl_status st = forget_id(l, f, member, len + 2, false, &gone);
    if (st == SL_OK && !gone && root) {
        /* "X#k": copy k of X when X has members, else an input named so */
        memcpy(member + root, "#0", 3);
        st = is_recorded(l, f, member, root + 2, &copy);
    }
    sl_free(member);
    if (st == SL_OK)
        st = forget_id(l, f, y, len, !copy, &gone);
    if (st == SL_OK && copy)
        st = forget_id(l, f, y, root, true, &gone);
    return st;
}

sl_status sl_ledger_retry_finish(sl_ledger *l, long number)
{
    pthread_mutex_lock(&l->mu);
    sqlite3_stmt *ids = NULL, *written = NULL;
    forget_ctx f = {0};
    sl_status st = SL_OK;
    char *name = name_of(l, number, &st);
    if (st != SL_OK)
        goto out;
    if ((st = prepare(l, "SELECT id FROM retry_ids WHERE part = ?1", &ids)) != SL_OK ||
        (st = prepare(l, "DELETE FROM rows WHERE id = ?1 RETURNING part", &f.del)) != SL_OK ||
        (st = prepare(l, "UPDATE parts SET rows = rows - 1, "
                         "inputs = coalesce(inputs, rows) - ?2 WHERE number = ?1", &f.count)) !=
            SL_OK ||
        (st = prepare(l, "SELECT 1 FROM rows WHERE id = ?1", &f.has)) != SL_OK ||
        (st = prepare(l, "UPDATE parts SET written = coalesce(written, rows) - (SELECT removed "
                         "FROM retry_parts WHERE part = ?1), failed = 0, bytes = ?2 "
                         "WHERE number = ?1",
                      &written)) != SL_OK ||
        (st = exec_sql(l, "BEGIN IMMEDIATE", "finish a retry")) != SL_OK)
        goto out;
    /* The rows the file lost first: an older ledger's part counts its ids. */
    if ((st = bind_int(l, written, 1, number)) == SL_OK &&
        (st = bind_bytes(l, written, 2, name)) == SL_OK) /* the file rewritten without them */
        st = step_done(l, written, "count a part's rows");
    if (st == SL_OK)
        st = bind_int(l, ids, 1, number);
    int rc = SQLITE_DONE;
    while (st == SL_OK && (rc = sqlite3_step(ids)) == SQLITE_ROW)
        st = forget_row(l, &f, (const char *)sqlite3_column_text(ids, 0));
    if (st == SL_OK && rc != SQLITE_DONE)
        st = db_fail(l, SL_ERR_IO, "list the rows to retry");
    char sql[128];
    snprintf(sql, sizeof sql, "DELETE FROM retry_ids WHERE part = %ld;"
                              "DELETE FROM retry_parts WHERE part = %ld", number, number);
    if (st == SL_OK)
        st = exec_sql(l, sql, "finish a retry");
    int err = st == SL_OK ? sl_fault("retry.finish", l->path) : 0; /* before it is durable */
    if (err)
        st = sl_fail(SL_ERR_IO, "resume ledger '%s': cannot finish a retry: %s", l->path,
                     strerror(err));
    if (st == SL_OK)
        st = exec_sql(l, "COMMIT", "finish a retry");
    if (st != SL_OK)
        rollback(l);
out:
    sl_free(name);
    sqlite3_finalize(ids);
    sqlite3_finalize(written);
    sqlite3_finalize(f.del);
    sqlite3_finalize(f.count);
    sqlite3_finalize(f.has);
    pthread_mutex_unlock(&l->mu);
    return st;
}

sl_status sl_ledger_part_abandon(sl_ledger *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->in_part)
        rollback(l);
    l->in_part = false;
    pthread_mutex_unlock(&l->mu);
    return SL_OK;
}

void sl_ledger_free(sl_ledger *l)
{
    if (!l)
        return;
    if (l->db) {
        if (l->in_part)
            rollback(l);
        close_db(l);
        pthread_mutex_destroy(&l->mu);
    }
    sl_free(l->part_name);
    sl_free(l->dir);
    sl_free(l->path);
    sl_free(l->open_path);
    sl_free(l);
}
