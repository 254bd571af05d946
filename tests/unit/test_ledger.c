/* Unit tests: ledger/ledger.c — the two-phase part commit, reconcile at each
 * crash point (a "crash" is freeing the handle mid-way: SQLite rolls back an
 * open transaction as a killed process's would be), lookups, fingerprints,
 * the lock, the counts and file size kept with each part (an older
 * ledger's too), an id SQLite cannot bind (an error, never a row passed
 * over or taken for not done), and parts/temps helpers of io/shard.c. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "io/shard.h"
#include "ledger/ledger.h"
#include "test_long_id.h"
#include "test_util.h"

static const char FP[] = "prompt\t\"Describe\"\nmax_tokens\t8\n";

static bool done(sl_ledger *l, const char *id)
{
    bool d = true;
    assert_int_equal(sl_ledger_is_done(l, id, &d), SL_OK);
    return d;
}

static sl_ledger *open_bound(const char *dir, sl_ledger_info *info)
{
    sl_ledger *l;
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK);
    assert_int_equal(sl_ledger_reconcile(l, info), SL_OK);
    return l;
}

/* A part holding the one row `id`, through both phases, its file written
 * between them as the rename would. */
static void commit_part(sl_ledger *l, const char *dir, const char *name, long number,
                        const char *id)
{
    assert_int_equal(sl_ledger_part_begin(l, name, number), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, id), SL_OK);
    assert_int_equal(sl_ledger_part_prepare(l, 1, 1, 0), SL_OK);
    tu_write(dir, name, "x\n", 2);
    assert_int_equal(sl_ledger_part_commit(l), SL_OK);
}

/* Phase 1 then 2 with the part file renamed between them: committed. */
static void full_commit_marks_rows_done(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    assert_false(sl_ledger_exists(dir));
    sl_ledger *l = open_bound(dir, &info);
    assert_true(sl_ledger_exists(dir));
    assert_int_equal(info.parts, 0);
    assert_int_equal(info.max_part, -1);
    assert_int_equal(sl_ledger_part_begin(l, "part-00000.jsonl", 0), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "a.jpg"), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "b.jpg"), SL_OK);
    assert_false(done(l, "a.jpg")); /* written, not committed */
    assert_int_equal(sl_ledger_part_prepare(l, 2, 6, 4), SL_OK); /* 2 inputs, 3 tasks each */
    assert_false(done(l, "a.jpg")); /* pending is not done */
    tu_write(dir, "part-00000.jsonl", "x\n", 2);
    assert_int_equal(sl_ledger_part_commit(l), SL_OK);
    assert_true(done(l, "a.jpg"));
    assert_true(done(l, "b.jpg"));
    assert_false(done(l, "c.jpg"));
    /* A name or number the ledger holds is never reused. */
    assert_int_equal(sl_ledger_part_begin(l, "part-00000.jsonl", 7), SL_ERR_EXISTS);
    assert_int_equal(sl_ledger_part_begin(l, "part-00009.jsonl", 0), SL_ERR_EXISTS);
    sl_ledger_free(l);

    l = open_bound(dir, &info);
    assert_int_equal(info.parts, 1);
    assert_int_equal(info.rows, 2);
    assert_int_equal(info.inputs, 2);
    assert_int_equal(info.written, 6);
    assert_int_equal(info.failed, 4);
    assert_int_equal(info.parts_failed_unknown, 0);
    assert_int_equal(info.max_part, 0);
    assert_int_equal(info.parts_promoted + info.parts_dropped, 0);
    assert_true(done(l, "b.jpg"));
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* Crash while rows are being written (or before the pending record is
 * durable): nothing of the part is in the ledger. */
static void crash_before_prepare_forgets_the_part(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    assert_int_equal(sl_ledger_part_begin(l, "part-00000.jsonl", 0), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "a.jpg"), SL_OK);
    sl_ledger_free(l); /* crash */

    l = open_bound(dir, &info);
    assert_int_equal(info.parts, 0);
    assert_int_equal(info.rows, 0);
    assert_int_equal(info.max_part, -1);
    assert_false(done(l, "a.jpg"));
    /* The same name can be used again: nothing of it was published. */
    assert_int_equal(sl_ledger_part_begin(l, "part-00000.jsonl", 0), SL_OK);
    assert_int_equal(sl_ledger_part_abandon(l), SL_OK);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* Crash after the pending record, before the rename: the file is missing,
 * the part is dropped and its rows are not done. */
static void pending_without_file_is_dropped(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    assert_int_equal(sl_ledger_part_begin(l, "part-00000.jsonl", 0), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "a.jpg"), SL_OK);
    assert_int_equal(sl_ledger_part_prepare(l, 1, 1, 0), SL_OK);
    sl_ledger_free(l); /* crash: no rename */

    l = open_bound(dir, &info);
    assert_int_equal(info.parts_dropped, 1);
    assert_int_equal(info.parts_promoted, 0);
    assert_int_equal(info.parts, 0);
    assert_int_equal(info.rows, 0);
    assert_false(done(l, "a.jpg"));
    /* Its rows are gone too: a.jpg can go into a new part. */
    commit_part(l, dir, "part-00001.jsonl", 1, "a.jpg");
    assert_true(done(l, "a.jpg"));
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* Crash after the rename, before the commit mark: the file exists and is
 * complete, so the part becomes committed and its rows are done. */
static void pending_with_file_is_committed(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    assert_int_equal(sl_ledger_part_begin(l, "part-00003.parquet", 3), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "x.tar/k1"), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "x.tar/k2"), SL_OK);
    assert_int_equal(sl_ledger_part_prepare(l, 1, 3, 0), SL_OK); /* k1 is k2's copy, say */
    tu_write(dir, "part-00003.parquet", "PAR1", 4); /* the rename happened */
    sl_ledger_free(l);                               /* crash before commit */

    l = open_bound(dir, &info);
    assert_int_equal(info.parts_promoted, 1);
    assert_int_equal(info.parts_dropped, 0);
    assert_int_equal(info.parts, 1);
    assert_int_equal(info.rows, 2);
    assert_int_equal(info.inputs, 1); /* the counts come with the pending record */
    assert_int_equal(info.written, 3);
    assert_int_equal(info.max_part, 3);
    assert_true(done(l, "x.tar/k1"));
    assert_true(done(l, "x.tar/k2"));
    sl_ledger_free(l);
    /* Settled: a second open has nothing left to do. */
    l = open_bound(dir, &info);
    assert_int_equal(info.parts_promoted + info.parts_dropped, 0);
    assert_int_equal(info.parts, 1);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* A committed part whose file was removed by hand is dropped: its rows are
 * captioned again rather than lost. */
static void committed_part_whose_file_is_gone_is_dropped(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    const char *names[2] = {"part-00000.jsonl", "part-00001.jsonl"};
    for (int k = 0; k < 2; k++) {
        char id[16];
        snprintf(id, sizeof id, "r%d", k);
        commit_part(l, dir, names[k], k, id);
    }
    sl_ledger_free(l);
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, names[0]);
    unlink(path);
    l = open_bound(dir, &info);
    assert_int_equal(info.parts_dropped, 1);
    assert_int_equal(info.parts, 1);
    assert_int_equal(info.max_part, 1);
    assert_false(done(l, "r0"));
    assert_true(done(l, "r1"));
    sl_ledger_free(l);
    tu_rmtree(dir);
}

static void other_settings_are_refused_unless_reset(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    commit_part(l, dir, "part-00000.jsonl", 0, "a.jpg");
    sl_ledger_free(l);

    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_bind(l, "prompt\t\"Other\"\nmax_tokens\t8\n", false), SL_ERR_EXISTS);
    const char *msg = sl_last_error();
    assert_non_null(strstr(msg, dir));
    assert_non_null(strstr(msg, "(prompt changed"));
    assert_non_null(strstr(msg, "--overwrite"));
    assert_non_null(strstr(msg, "-o"));
    assert_int_equal(sl_ledger_bind(l, "prompt\t\"Describe\"\nmax_tokens\t9\nseed\t1\n", false),
                     SL_ERR_EXISTS);
    assert_non_null(strstr(sl_last_error(), "(max_tokens, seed changed"));
    /* The same settings still resume. */
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK);
    assert_int_equal(sl_ledger_reconcile(l, &info), SL_OK);
    assert_int_equal(info.rows, 1);
    /* reset: every part forgotten, the new settings kept. */
    assert_int_equal(sl_ledger_bind(l, "prompt\t\"Other\"\n", true), SL_OK);
    assert_int_equal(sl_ledger_reconcile(l, &info), SL_OK);
    assert_int_equal(info.parts, 0);
    assert_false(done(l, "a.jpg"));
    sl_ledger_free(l);
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_bind(l, "prompt\t\"Other\"\n", false), SL_OK);
    /* With no part recorded, other settings are simply taken. */
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* A ledger an older sluice wrote lacks keys sluice writes today: a
 * refusal names the keys of the form of the job nearest the ledger's, not
 * the keys that sluice never wrote; a form without a key the ledger holds
 * is not one it was written in. */
static void a_refusal_names_the_keys_of_the_nearest_form(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger *l;
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK); /* an older sluice's: no kv key */
    commit_part(l, dir, "part-00000.jsonl", 0, "a.jpg");
    const char *today = "prompt\t\"Other\"\nmax_tokens\t8\nkv\t\"f16\"\n";
    const char *forms[] = {"prompt\t\"Other\"\nmax_tokens\t8\n", NULL};
    assert_int_equal(sl_ledger_bind_near(l, today, forms, 2, false), SL_ERR_EXISTS);
    assert_non_null(strstr(sl_last_error(), "(prompt changed since)"));
    /* without the forms, today's keys: kv is named too */
    assert_int_equal(sl_ledger_bind(l, today, false), SL_ERR_EXISTS);
    assert_non_null(strstr(sl_last_error(), "(prompt, kv changed since)"));
    sl_ledger_free(l);
    tu_rmtree(dir);

    /* A ledger of today holds kv: a form without it is not its own, even
     * where it differs in fewer keys (kv alone, not max_tokens and seed). */
    dir = tu_tmpdir();
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_bind(l, "prompt\t\"Describe\"\nkv\t\"f16\"\n", false), SL_OK);
    commit_part(l, dir, "part-00000.jsonl", 0, "a.jpg");
    const char *added = "prompt\t\"Describe\"\nmax_tokens\t8\nseed\t1\nkv\t\"f16\"\n";
    const char *older[] = {"prompt\t\"Describe\"\n"};
    assert_int_equal(sl_ledger_bind_near(l, added, older, 1, false), SL_ERR_EXISTS);
    assert_non_null(strstr(sl_last_error(), "(max_tokens, seed changed since)"));
    sl_ledger_free(l);
    tu_rmtree(dir);
    (void)state;
}

/* The caller's facts beside the fingerprint (the model an endpoint
 * served): kept across runs, replaced when set again, forgotten with the
 * fingerprint; the ledger's own keys are read, never written. */
static void facts_beside_the_fingerprint(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    char *v = (char *)"unset";
    assert_int_equal(sl_ledger_meta_get(l, "served_model", &v), SL_OK);
    assert_null(v);
    assert_int_equal(sl_ledger_meta_set(l, "served_model", "qwen-3b"), SL_OK);
    commit_part(l, dir, "part-00000.jsonl", 0, "a.jpg");
    sl_ledger_free(l);

    l = open_bound(dir, &info);
    assert_int_equal(sl_ledger_meta_get(l, "served_model", &v), SL_OK);
    assert_string_equal(v, "qwen-3b");
    sl_free(v);
    assert_int_equal(sl_ledger_meta_get(l, "fingerprint", &v), SL_OK);
    assert_string_equal(v, FP);
    sl_free(v);
    assert_int_equal(sl_ledger_meta_set(l, "served_model", "qwen-7b"), SL_OK);
    assert_int_equal(sl_ledger_meta_get(l, "served_model", &v), SL_OK);
    assert_string_equal(v, "qwen-7b");
    sl_free(v);
    assert_int_equal(sl_ledger_meta_set(l, "fingerprint", "x"), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_ledger_meta_set(l, "format_version", "9"), SL_ERR_INVALID_ARG);
    /* Starting over forgets them with the parts. */
    assert_int_equal(sl_ledger_bind(l, FP, true), SL_OK);
    assert_int_equal(sl_ledger_meta_get(l, "served_model", &v), SL_OK);
    assert_null(v);
    assert_int_equal(sl_ledger_meta_get(l, "format_version", &v), SL_OK);
    assert_string_equal(v, "1");
    sl_free(v);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

static void one_run_per_folder_and_damaged_files(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info), *l2 = NULL;
    assert_int_equal(sl_ledger_open(dir, false, &l2), SL_ERR_BUSY);
    assert_null(l2);
    assert_non_null(strstr(sl_last_error(), "in use by another sluice run"));
    sl_ledger_free(l);
    sl_ledger_free(NULL);

    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, SL_LEDGER_FILE);
    unlink(path);
    tu_write(dir, SL_LEDGER_FILE, "this is no database, not even close to one.......", 50);
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), path));
    assert_non_null(strstr(sl_last_error(), "--overwrite"));
    assert_int_equal(sl_ledger_open(dir, true, &l), SL_OK); /* replaced */
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

static void misuse_is_an_error_not_a_crash(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    assert_int_equal(sl_ledger_part_add(l, "a"), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_ledger_part_prepare(l, 0, 0, 0), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_ledger_part_commit(l), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_ledger_part_begin(l, "part-00000.jsonl", 0), SL_OK);
    assert_int_equal(sl_ledger_part_begin(l, "part-00001.jsonl", 1), SL_ERR_INVALID_ARG);
    /* A repeated id in one part is kept once. */
    assert_int_equal(sl_ledger_part_add(l, "a"), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "a"), SL_OK);
    assert_int_equal(sl_ledger_part_abandon(l), SL_OK);
    assert_false(done(l, "a"));
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* A ledger of a sluice that kept no counts with its parts (its parts table
 * without inputs and written): the columns are added, its parts count
 * their ids for both, and a part committed now adds its own counts. */
/* A ledger an older sluice wrote into dir: its parts table with the
 * columns it had past rows (`more`, ", NAME TYPE..."), the parts `insert`
 * puts in, rows a.jpg and b.jpg in part 0. */
static void old_ledger(const char *dir, const char *more, const char *insert)
{
    char path[600], sql[1024];
    snprintf(path, sizeof path, "%s/%s", dir, SL_LEDGER_FILE);
    snprintf(sql, sizeof sql,
             "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
             "CREATE TABLE parts(number INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
             " state INTEGER NOT NULL, rows INTEGER NOT NULL%s);"
             "CREATE TABLE rows(id TEXT PRIMARY KEY, part INTEGER NOT NULL) WITHOUT ROWID;"
             "INSERT INTO meta VALUES('format_version', '1');%s"
             "INSERT INTO rows VALUES('a.jpg', 0), ('b.jpg', 0);"
             "PRAGMA user_version = 1;", more, insert);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void a_ledger_without_counts_counts_its_ids(void **state)
{
    char *dir = tu_tmpdir();
    old_ledger(dir, "", "INSERT INTO parts VALUES(0, 'part-00000.jsonl', 1, 2);");
    tu_write(dir, "part-00000.jsonl", "x\ny\n", 4);
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    assert_int_equal(info.parts, 1);
    assert_int_equal(info.inputs, 2);
    assert_int_equal(info.written, 2);
    assert_int_equal(info.failed, 0);
    assert_int_equal(info.parts_failed_unknown, 1); /* --retry-failed reads it back */
    assert_true(done(l, "b.jpg"));
    assert_int_equal(sl_ledger_part_begin(l, "part-00001.jsonl", 1), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "c.jpg"), SL_OK);
    assert_int_equal(sl_ledger_part_prepare(l, 1, 4, 0), SL_OK);
    tu_write(dir, "part-00001.jsonl", "x\n", 2);
    assert_int_equal(sl_ledger_part_commit(l), SL_OK);
    sl_ledger_free(l);
    l = open_bound(dir, &info);
    assert_int_equal(info.rows, 3);
    assert_int_equal(info.inputs, 3);
    assert_int_equal(info.written, 6);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* sl_ledger_each_resized's parts, as "number:name:written:failed:bytes;"
 * in text; with `take` their new size recorded. */
typedef struct resized_seen {
    char text[256];
    bool take;
    sl_ledger *l;
} resized_seen;

static sl_status note_resized(void *user, const sl_ledger_part *part)
{
    resized_seen *r = user;
    size_t used = strlen(r->text);
    snprintf(r->text + used, sizeof r->text - used, "%ld:%s:%ld:%ld:%lld;", part->number,
             part->name, part->written, part->failed, (long long)part->bytes);
    return r->take ? sl_ledger_part_sized(r->l, part->number, part->bytes) : SL_OK;
}

static const char *resized(sl_ledger *l, resized_seen *r, bool take)
{
    *r = (resized_seen){.take = take, .l = l};
    assert_int_equal(sl_ledger_each_resized(l, note_resized, r), SL_OK);
    return r->text;
}

/* A part file whose size is not the one committed (cut or edited by hand)
 * is passed, until its new size is recorded; a part of a ledger that kept
 * no size is taken as it is when first seen. */
static void a_part_changed_by_hand_is_found_by_its_size(void **state)
{
    char *dir = tu_tmpdir(); /* a ledger of a sluice that kept no sizes, one part */
    old_ledger(dir, ", inputs INTEGER, written INTEGER, failed INTEGER",
               "INSERT INTO parts VALUES(0, 'part-00000.jsonl', 1, 2, 2, 2, 1);");
    tu_write(dir, "part-00000.jsonl", "x\ny\n", 4);
    sl_ledger_info info;
    resized_seen r;
    sl_ledger *l = open_bound(dir, &info);
    commit_part(l, dir, "part-00001.jsonl", 1, "c.jpg"); /* "x\n": its size kept */
    tu_write(dir, "part-00001.jsonl", "edited\n", 7);
    /* part 0 is taken at the size it has now; part 1 is not what was committed */
    assert_string_equal(resized(l, &r, false), "1:part-00001.jsonl:1:0:7;");
    tu_write(dir, "part-00000.jsonl", "x\n", 2); /* cut to one row */
    assert_string_equal(resized(l, &r, false),
                        "0:part-00000.jsonl:2:1:2;1:part-00001.jsonl:1:0:7;");
    sl_ledger_free(l); /* the sizes stay as committed until the caller takes them */
    l = open_bound(dir, &info);
    assert_string_equal(resized(l, &r, true),
                        "0:part-00000.jsonl:2:1:2;1:part-00001.jsonl:1:0:7;");
    assert_string_equal(resized(l, &r, false), "");
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* A part of several ids (NUL-separated in ids), committed with the counts
 * given. */
static void commit_ids(sl_ledger *l, const char *dir, const char *name, long number,
                       const char *const *ids, size_t n, long inputs, long written, long failed)
{
    assert_int_equal(sl_ledger_part_begin(l, name, number), SL_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sl_ledger_part_add(l, ids[i]), SL_OK);
    assert_int_equal(sl_ledger_part_prepare(l, inputs, written, failed), SL_OK);
    tu_write(dir, name, "x\n", 2);
    assert_int_equal(sl_ledger_part_commit(l), SL_OK);
}

static sl_status count_part(void *user, long number, const char *name)
{
    (void)number;
    (void)name;
    (*(int *)user)++;
    return SL_OK;
}

static sl_status collect_id(void *user, const char *id)
{
    char *all = user;
    strcat(all, id);
    strcat(all, ";");
    return SL_OK;
}

/* --retry-failed's steps: a begun retry outlives a crash (the handle freed
 * between begin and finish) and is listed until finished; finishing
 * forgets the ids and lowers the counts; an input with copies (a stage's
 * fan-out: members X#0, X#k and X) loses the failed member and its input,
 * not the other members; "a#1" with no "a#0" is an input of its own. */
static void a_retry_forgets_failed_rows_and_survives_a_crash(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    const char *p0[] = {"a.jpg", "b.jpg", "c.jpg"};
    commit_ids(l, dir, "part-00000.jsonl", 0, p0, 3, 3, 3, 2);
    /* a part without failed rows is not read back */
    const char *clean[] = {"k.jpg"};
    commit_ids(l, dir, "part-00003.jsonl", 3, clean, 1, 1, 1, 0);
    /* x has copies x#1, x#2 (members x#0.. and the input x); y#1 is an
     * input named so (no y#0), and so is plain input y */
    const char *p1[] = {"x#0", "x#1", "x#2", "x", "y#1", "y"};
    commit_ids(l, dir, "part-00001.jsonl", 1, p1, 6, 3, 5, 3);
    int n = 0;
    assert_int_equal(sl_ledger_each_part(l, count_part, &n), SL_OK);
    assert_int_equal(n, 2);
    /* part 0: b failed (twice: two tasks' rows) */
    assert_int_equal(sl_ledger_retry_begin(l, 0, "b.jpg\0b.jpg", 2, 2), SL_OK);
    assert_int_not_equal(sl_ledger_retry_begin(l, 0, "b.jpg", 1, 1), SL_OK); /* begun */
    assert_int_not_equal(sl_ledger_retry_begin(l, 7, "q", 1, 1), SL_OK);     /* no part 7 */
    sl_ledger_free(l); /* a crash between begin and finish */
    l = open_bound(dir, &info);
    assert_true(done(l, "b.jpg"));
    n = 0;
    assert_int_equal(sl_ledger_each_retry(l, count_part, &n), SL_OK);
    assert_int_equal(n, 1);
    char ids[256] = "";
    assert_int_equal(sl_ledger_retry_ids(l, 0, collect_id, ids), SL_OK);
    assert_string_equal(ids, "b.jpg;");
    assert_int_equal(sl_ledger_retry_finish(l, 0), SL_OK);
    assert_false(done(l, "b.jpg"));
    assert_true(done(l, "a.jpg") && done(l, "c.jpg"));
    n = 0;
    assert_int_equal(sl_ledger_each_retry(l, count_part, &n), SL_OK);
    assert_int_equal(n, 0);
    /* part 1: copy x#2 failed (its file id "x#2"), y#1 (an input) and y */
    assert_int_equal(sl_ledger_retry_begin(l, 1, "x#2\0y#1\0y", 3, 3), SL_OK);
    assert_int_equal(sl_ledger_retry_finish(l, 1), SL_OK);
    assert_false(done(l, "x#2"));
    assert_false(done(l, "x")); /* its input read again ... */
    assert_true(done(l, "x#0") && done(l, "x#1")); /* ... its other members kept */
    assert_false(done(l, "y#1"));
    assert_false(done(l, "y"));
    sl_ledger_info now;
    assert_int_equal(sl_ledger_counts(l, &now), SL_OK); /* the same as a reopen's below */
    assert_int_equal(now.parts, 3);
    assert_int_equal(now.rows, 5);
    assert_int_equal(now.inputs, 3);
    assert_int_equal(now.written, 4);
    assert_int_equal(now.failed, 0);
    assert_int_equal(now.parts_promoted + now.parts_dropped, 0);
    sl_ledger_free(l);
    l = open_bound(dir, &info);
    assert_int_equal(info.parts, 3);
    assert_int_equal(info.rows, 2 + 2 + 1);    /* ids: a, c; x#0, x#1; k */
    assert_int_equal(info.inputs, 2 + 0 + 1);  /* a, c; part 1 lost x, y#1, y; k */
    assert_int_equal(info.written, 1 + 2 + 1); /* 3 - 2 rows; 5 - 3; 1 */
    assert_int_equal(info.failed, 0);          /* the retried parts hold none now */
    n = 0;
    assert_int_equal(sl_ledger_each_part(l, count_part, &n), SL_OK);
    assert_int_equal(n, 0);
    /* the own row of an input with copies: file id x, ledger x#0 and x */
    sl_ledger_free(l);
    l = open_bound(dir, &info);
    const char *p2[] = {"z#0", "z#1", "z"};
    commit_ids(l, dir, "part-00002.jsonl", 2, p2, 3, 1, 2, 1);
    assert_int_equal(sl_ledger_retry_begin(l, 2, "z", 1, 1), SL_OK);
    assert_int_equal(sl_ledger_retry_finish(l, 2), SL_OK);
    assert_false(done(l, "z#0") || done(l, "z"));
    assert_true(done(l, "z#1"));
    /* a part dropped (its file gone) takes its begun retry with it */
    assert_int_equal(sl_ledger_retry_begin(l, 0, "a.jpg", 1, 1), SL_OK);
    sl_ledger_free(l);
    char path[600];
    snprintf(path, sizeof path, "%s/part-00000.jsonl", dir);
    assert_int_equal(unlink(path), 0);
    l = open_bound(dir, &info);
    n = 0;
    assert_int_equal(sl_ledger_each_retry(l, count_part, &n), SL_OK);
    assert_int_equal(n, 0);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

static void shard_helpers_find_parts_and_remove_temps(void **state)
{
    char *dir = tu_tmpdir();
    sl_part_scan scan;
    assert_int_equal(sl_shard_scan_parts(dir, &scan), SL_OK);
    assert_int_equal(scan.count, 0);
    assert_int_equal(scan.max_number, -1);
    tu_write(dir, "part-00000.jsonl", "", 0);
    tu_write(dir, "part-00012.parquet", "", 0);
    tu_write(dir, "part-7.jsonl", "", 0);       /* too few digits: not ours */
    tu_write(dir, "part-00013.jsonl.bak", "", 0);
    tu_write(dir, ".part-00013.jsonl.tmp-4242", "", 0);
    tu_write(dir, ".part-00014.parquet.tmp-1", "", 0);
    tu_write(dir, "_summary.json", "{}", 2);
    assert_int_equal(sl_shard_scan_parts(dir, &scan), SL_OK);
    assert_int_equal(scan.count, 2);
    assert_int_equal(scan.max_number, 12);
    assert_int_equal(sl_shard_remove_temps(dir), 2);
    assert_int_equal(sl_shard_remove_temps(dir), 0);
    assert_int_equal(sl_shard_remove_parts(dir), SL_OK);
    assert_int_equal(sl_shard_scan_parts(dir, &scan), SL_OK);
    assert_int_equal(scan.count, 0);
    char path[600];
    snprintf(path, sizeof path, "%s/part-7.jsonl", dir);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/_summary.json", dir);
    assert_int_equal(access(path, F_OK), 0);
    tu_rmtree(dir);
}

static sl_status count_file(void *user, const char *name)
{
    (void)name;
    ++*(int *)user;
    return SL_OK;
}

/* The parts a ledger knows, pending or committed, by name; not an
 * abandoned one, nor any after the ledger is emptied (job/resume.c refuses
 * the part files it does not know). */
static void a_ledger_knows_its_parts_by_name(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);
    bool known = true;
    assert_int_equal(sl_ledger_has_part(l, "part-00000.jsonl", &known), SL_OK);
    assert_false(known);
    commit_part(l, dir, "part-00000.jsonl", 0, "a.jpg");
    assert_int_equal(sl_ledger_part_begin(l, "part-00001.jsonl", 1), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "b.jpg"), SL_OK);
    assert_int_equal(sl_ledger_part_prepare(l, 1, 1, 0), SL_OK); /* pending */
    assert_int_equal(sl_ledger_part_commit(l), SL_OK);
    assert_int_equal(sl_ledger_part_begin(l, "part-00002.jsonl", 2), SL_OK);
    assert_int_equal(sl_ledger_part_abandon(l), SL_OK);
    assert_int_equal(sl_ledger_has_part(l, "part-00000.jsonl", &known), SL_OK);
    assert_true(known);
    assert_int_equal(sl_ledger_has_part(l, "part-00001.jsonl", &known), SL_OK);
    assert_true(known);
    assert_int_equal(sl_ledger_has_part(l, "part-00002.jsonl", &known), SL_OK);
    assert_false(known);
    sl_ledger_free(l);
    tu_write(dir, "_summary.json", "{}", 2);
    int n = 0;
    assert_int_equal(sl_shard_each_part(dir, count_file, &n), SL_OK);
    assert_int_equal(n, 1); /* part-00000.jsonl; part 1 has no file */
    /* Emptied: a new ledger, which knows none. */
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, SL_LEDGER_FILE);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_has_part(l, "part-00000.jsonl", &known), SL_OK);
    assert_false(known);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

typedef struct victim_paths {
    char *dir; /* tu_tmpdir's */
    char out[512], victim[512], link[600];
} victim_paths;

/* An empty output folder, and another database of the user's beside it
 * with one table of its own; link is the ledger's name in out. */
static victim_paths victim_setup(void)
{
    victim_paths v = {tu_tmpdir(), "", "", ""};
    snprintf(v.out, sizeof v.out, "%s/out", v.dir);
    snprintf(v.victim, sizeof v.victim, "%s/mine.sqlite", v.dir);
    snprintf(v.link, sizeof v.link, "%s/%s", v.out, SL_LEDGER_FILE);
    assert_int_equal(mkdir(v.out, 0777), 0);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(v.victim, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE mine(x);", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    return v;
}

static int victim_tables(const char *victim)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(victim, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int n = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
}

/* A symlink under the ledger's name (another user of a shared output
 * folder may put one there) had SQLite open the file it names: sluice's
 * tables went into another database of the user's. Refused, that file
 * untouched. */
static void a_ledger_that_is_a_symlink_is_refused(void **state)
{
    (void)state;
    victim_paths v = victim_setup();
    assert_int_equal(symlink(v.victim, v.link), 0);

    sl_ledger *l = NULL;
    assert_int_equal(sl_ledger_open(v.out, false, &l), SL_ERR_INVALID_ARG);
    assert_null(l);
    assert_non_null(strstr(sl_last_error(), "is a symbolic link"));
    assert_int_equal(sl_ledger_open(v.out, true, &l), SL_ERR_INVALID_ARG); /* --overwrite too */
    assert_int_equal(victim_tables(v.victim), 1); /* its one table, no ledger's */
    tu_rmtree(v.dir);
}

typedef struct planted {
    const char *victim, *link;
} planted;

static void *plant_link(void *arg)
{
    const planted *p = arg;
    usleep(300 * 1000); /* after the check, inside the open's pause */
    assert_int_equal(symlink(p->victim, p->link), 0);
    return NULL;
}

/* The link put there after the check (lstat) and before SQLite's open:
 * that window had sluice's tables go into the linked database all the
 * same. The open itself refuses the link now. */
static void a_ledger_link_put_after_the_check_is_not_followed(void **state)
{
    (void)state;
    victim_paths v = victim_setup();
    assert_int_equal(sl_fault_configure("ledger.open=sleep:1500@1"), 0);
    planted p = {v.victim, v.link};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, plant_link, &p), 0);
    sl_ledger *l = NULL;
    sl_status st = sl_ledger_open(v.out, false, &l);
    pthread_join(t, NULL);
    sl_fault_configure(NULL);
    assert_int_equal(st, SL_ERR_INVALID_ARG);
    assert_null(l);
    assert_non_null(strstr(sl_last_error(), "is a symbolic link"));
    assert_int_equal(victim_tables(v.victim), 1);
    tu_rmtree(v.dir);
}

/* An output folder that is a link to a folder is the user's choice: its
 * ledger is opened there. */
static void an_output_folder_that_is_a_link_is_taken(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char real[512], out[512], file[600];
    snprintf(real, sizeof real, "%s/real", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(file, sizeof file, "%s/%s", real, SL_LEDGER_FILE);
    assert_int_equal(mkdir(real, 0777), 0);
    assert_int_equal(symlink(real, out), 0);
    sl_ledger *l = NULL;
    assert_int_equal(sl_ledger_open(out, false, &l), SL_OK);
    sl_ledger_free(l);
    assert_true(tu_exists(file));
    tu_rmtree(dir);
}

/* The message of a call given `what` SQLite refused, of `n` bytes. */
static void refused(sl_status st, const char *call, const char *what, size_t n, int limit)
{
    char head[61], want[200];
    memset(head, 'x', 60); /* the id's first 60 bytes */
    head[60] = '\0';
    snprintf(want, sizeof want, "cannot take %s '%s...' (%zu bytes): string or blob too big; "
             "SQLite takes at most %d bytes", what, head, n, limit);
    if (st != SL_ERR_IO || !strstr(sl_last_error(), want))
        fail_msg("%s: status %d, '%.300s'; want '%s'", call, st, sl_last_error(), want);
}

static sl_status count_id(void *user, const char *id)
{
    (void)id;
    (*(int *)user)++;
    return SL_OK;
}

/* An id one byte past SQLite's string limit: SQLite refuses to bind it,
 * and a refused binding is NULL. Before, part_add returned SL_OK (INSERT
 * OR IGNORE passed the NULL row over) while the part counted the row, and
 * is_done answered SL_OK, not done; now each call that binds an id fails
 * naming it, its size and the limit, and the ledger goes on: a part with
 * the short ids beside it commits and counts only them. */
static void an_id_sqlite_cannot_take_is_an_error(void **state)
{
    int limit = tu_sqlite_limit();
    size_t mapped, n = (size_t)limit + 1;
    char *id = tu_long_id(n, &mapped);
    assert_int_equal(strlen(id), n);
    char dir[256], dir2[256]; /* tu_tmpdir's buffer is reused */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    snprintf(dir2, sizeof dir2, "%s", tu_tmpdir());
    sl_ledger_info info;
    sl_ledger *l = open_bound(dir, &info);

    assert_int_equal(sl_ledger_part_begin(l, "part-00000.jsonl", 0), SL_OK);
    assert_int_equal(sl_ledger_part_add(l, "a"), SL_OK);
    refused(sl_ledger_part_add(l, id), "part_add", "the row id", n, limit);
    assert_int_equal(sl_ledger_part_add(l, "b"), SL_OK);
    assert_int_equal(sl_ledger_part_prepare(l, 2, 2, 0), SL_OK);
    tu_write(dir, "part-00000.jsonl", "x\n", 2);
    assert_int_equal(sl_ledger_part_commit(l), SL_OK);
    assert_int_equal(sl_ledger_counts(l, &info), SL_OK);
    assert_int_equal(info.parts, 1);
    assert_int_equal(info.rows, 2); /* a and b: the refused id is not counted */
    assert_true(done(l, "a"));
    assert_true(done(l, "b"));

    bool d = true;
    refused(sl_ledger_is_done(l, id, &d), "is_done", "the row id", n, limit);
    assert_false(d);
    assert_true(done(l, "a")); /* the kept statement binds afresh */

    /* an MPI rank's part: none of it recorded */
    const char ids[] = "c";
    int64_t shards[1] = {-1};
    refused(sl_ledger_part_record(l, "part-00001.jsonl", 1, id, shards, 1, 1, 1, 0),
            "part_record", "the row id", n, limit);
    bool known = true;
    assert_int_equal(sl_ledger_has_part(l, "part-00001.jsonl", &known), SL_OK);
    assert_false(known);
    assert_int_equal(sl_ledger_part_record(l, "part-00001.jsonl", 1, ids, shards, 1, 1, 1, 0),
                     SL_OK);
    assert_int_equal(sl_ledger_has_part(l, "part-00001.jsonl", &known), SL_OK);
    assert_true(known);

    /* a retry of part 0 with the id among its failed rows: not begun */
    refused(sl_ledger_retry_begin(l, 0, id, 1, 1), "retry_begin", "the row id", n, limit);
    int retries = 0;
    assert_int_equal(sl_ledger_retry_ids(l, 0, count_id, &retries), SL_OK);
    assert_int_equal(retries, 0);

    /* the names and values bound beside ids */
    known = true;
    refused(sl_ledger_has_part(l, id, &known), "has_part", "the part name", n, limit);
    assert_false(known);
    refused(sl_ledger_part_begin(l, id, 2), "part_begin", "the part name", n, limit);
    refused(sl_ledger_meta_set(l, "model", id), "meta_set", "the value", n, limit);
    char *value = NULL;
    refused(sl_ledger_meta_get(l, id, &value), "meta_get", "the key", n, limit);
    assert_null(value);
    assert_int_equal(sl_ledger_meta_get(l, "model", &value), SL_OK);
    assert_null(value);

    sl_ledger_free(l);
    /* and the fingerprint, which a new ledger stores */
    assert_int_equal(sl_ledger_open(dir2, false, &l), SL_OK);
    refused(sl_ledger_bind(l, id, false), "bind", "the settings", n, limit);
    assert_int_equal(sl_ledger_meta_get(l, "fingerprint", &value), SL_OK);
    assert_null(value);
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK);
    sl_ledger_free(l);
    tu_rmtree(dir2);
    tu_rmtree(dir);
    munmap(id, mapped);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_commit_marks_rows_done),
        cmocka_unit_test(a_refusal_names_the_keys_of_the_nearest_form),
        cmocka_unit_test(a_ledger_that_is_a_symlink_is_refused),
        cmocka_unit_test(a_ledger_link_put_after_the_check_is_not_followed),
        cmocka_unit_test(an_output_folder_that_is_a_link_is_taken),
        cmocka_unit_test(crash_before_prepare_forgets_the_part),
        cmocka_unit_test(pending_without_file_is_dropped),
        cmocka_unit_test(pending_with_file_is_committed),
        cmocka_unit_test(committed_part_whose_file_is_gone_is_dropped),
        cmocka_unit_test(other_settings_are_refused_unless_reset),
        cmocka_unit_test(facts_beside_the_fingerprint),
        cmocka_unit_test(one_run_per_folder_and_damaged_files),
        cmocka_unit_test(misuse_is_an_error_not_a_crash),
        cmocka_unit_test(a_ledger_without_counts_counts_its_ids),
        cmocka_unit_test(a_retry_forgets_failed_rows_and_survives_a_crash),
        cmocka_unit_test(shard_helpers_find_parts_and_remove_temps),
        cmocka_unit_test(a_ledger_knows_its_parts_by_name),
        cmocka_unit_test(a_part_changed_by_hand_is_found_by_its_size),
        cmocka_unit_test(an_id_sqlite_cannot_take_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
