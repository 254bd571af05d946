/* Unit tests: io/jsonl_sink.c — temp then rename, refusal to overwrite, and
 * write and sync errors (injected through core/fault.h) that must never let
 * a part be committed without all its rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "io/jsonl_sink.h"
#include "test_util.h"

static int exists(const char *p) { return access(p, F_OK) == 0; }

static void shard_appears_only_on_commit(void **state)
{
    char *base = tu_tmpdir();
    char dir[512], final_path[600], tmp[700];
    snprintf(dir, sizeof dir, "%s/out/nested", base);
    snprintf(final_path, sizeof final_path, "%s/part-00000.jsonl", dir);
    snprintf(tmp, sizeof tmp, "%s/.part-00000.jsonl.tmp-%ld", dir, (long)getpid());

    sl_jsonl_sink *sink;
    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", false, &sink), SL_OK);
    assert_string_equal(sl_jsonl_sink_path(sink), final_path);
    json_t *row = json_pack("{s:s, s:i}", "id", "a\"b\n.jpg", "n", 1);
    assert_int_equal(sl_jsonl_sink_write(sink, row), SL_OK);
    assert_int_equal(sl_jsonl_sink_write(sink, row), SL_OK);
    json_decref(row);
    assert_true(exists(tmp));
    assert_false(exists(final_path));
    assert_int_equal(sl_jsonl_sink_commit(sink), SL_OK);
    sl_jsonl_sink_free(sink);
    assert_false(exists(tmp));

    FILE *fp = fopen(final_path, "r");
    assert_non_null(fp);
    char line[256];
    int lines = 0;
    while (fgets(line, sizeof line, fp)) {
        json_error_t err;
        json_t *back = json_loads(line, 0, &err);
        assert_non_null(back);
        assert_string_equal(json_string_value(json_object_get(back, "id")), "a\"b\n.jpg");
        json_decref(back);
        lines++;
    }
    fclose(fp);
    assert_int_equal(lines, 2);

    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", false, &sink), SL_ERR_EXISTS);
    assert_non_null(strstr(sl_last_error(), "--overwrite"));
    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", true, &sink), SL_OK);
    sl_jsonl_sink_free(sink); /* uncommitted: the old shard stays, the temp goes */
    assert_true(exists(final_path));
    assert_false(exists(tmp));
    tu_rmtree(base);
}

/* A temporary's name is known in advance (.part-N.jsonl.tmp-PID, the PID
 * is in /proc): whoever may write in a shared output folder could put a
 * symlink there under that name, and the part's rows went through it into
 * the file it names (truncated, then overwritten). The link is replaced,
 * the file it names kept as it was. */
static void a_symlink_at_the_temporary_name_is_not_written_through(void **state)
{
    (void)state;
    char *base = tu_tmpdir();
    char dir[512], tmp[700], victim[600], final_path[600];
    snprintf(dir, sizeof dir, "%s/out", base);
    snprintf(victim, sizeof victim, "%s/victim.txt", base);
    snprintf(final_path, sizeof final_path, "%s/part-00000.jsonl", dir);
    snprintf(tmp, sizeof tmp, "%s/.part-00000.jsonl.tmp-%ld", dir, (long)getpid());
    assert_int_equal(mkdir(dir, 0777), 0);
    FILE *fp = fopen(victim, "w");
    assert_non_null(fp);
    fputs("keep me\n", fp);
    fclose(fp);
    assert_int_equal(symlink(victim, tmp), 0);

    sl_jsonl_sink *sink;
    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", false, &sink), SL_OK);
    json_t *row = json_pack("{s:s}", "id", "a.jpg");
    assert_int_equal(sl_jsonl_sink_write(sink, row), SL_OK);
    json_decref(row);
    assert_int_equal(sl_jsonl_sink_commit(sink), SL_OK);
    sl_jsonl_sink_free(sink);

    char text[64] = "";
    fp = fopen(victim, "r");
    assert_non_null(fp);
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    assert_string_equal(text, "keep me\n");
    struct stat sb;
    assert_int_equal(lstat(final_path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode)); /* the part is a file of its own, not the link */
    assert_int_equal(sb.st_size, (off_t)strlen("{\"id\":\"a.jpg\"}\n"));
    tu_rmtree(base);
}

/* U+0085, U+2028 and U+2029 end a line for Python's str.splitlines(): a
 * row holding one raw (a scraped caption, a pass-through column) read as
 * two or more lines there. They are escaped, in keys too; the row is the
 * same JSON, and the characters around them (U+2027) stay as they are. */
static void line_ends_past_ascii_are_escaped(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s, s:s}", "caption", "a\xe2\x80\xa8" "b\xc2\x85" "c\xe2\x80\xa9\xe2\x80\xa7",
                          "note\xe2\x80\xa8", "x");
    assert_non_null(o);
    sl_buf b = {0};
    assert_true(sl_buf_append(&b, "{}\n", 3)); /* a row before: left as it is */
    assert_int_equal(sl_jsonl_dump(o, &b, "t"), SL_OK);
    static const char want[] = "{}\n{\"caption\":\"a\\u2028b\\u0085c\\u2029\xe2\x80\xa7\","
                               "\"note\\u2028\":\"x\"}";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.data, want, b.len);
    /* Out of memory at each allocation in turn (the dump's, the escaped
     * copy's): an error that leaves the rows before as they were, no half
     * row and no leak (ASan's build), until the row fits whole. */
    bool whole = false;
    for (long k = 0; !whole && k < 1000; k++) {
        b.len = 3;
        sl_alloc_fail_after(k);
        sl_status st = sl_jsonl_dump(o, &b, "t");
        sl_alloc_fail_after(-1);
        whole = st == SL_OK;
        if (!whole) {
            assert_int_equal(st, SL_ERR_NOMEM);
            assert_int_equal(b.len, 3);
        }
    }
    assert_true(whole);
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.data, want, b.len);
    sl_buf_free(&b);
    json_decref(o);
}

static void unwritable_output_is_an_error(void **state)
{
    char *base = tu_tmpdir();
    tu_write(base, "file", "x", 1);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/file/out", base);
    sl_jsonl_sink *sink = (void *)1;
    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", false, &sink), SL_ERR_IO);
    assert_null(sink);
    assert_non_null(strstr(sl_last_error(), base));
    tu_rmtree(base);
}

struct paths {
    char *base;
    char dir[512], final_path[600], tmp[700];
};

static void paths_init(struct paths *p)
{
    p->base = tu_tmpdir();
    snprintf(p->dir, sizeof p->dir, "%s/out", p->base);
    snprintf(p->final_path, sizeof p->final_path, "%s/part-00000.jsonl", p->dir);
    snprintf(p->tmp, sizeof p->tmp, "%s/.part-00000.jsonl.tmp-%ld", p->dir, (long)getpid());
}

static json_t *padded_row(void)
{
    char pad[1000];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    return json_pack("{s:s, s:s}", "id", "a.jpg", "pad", pad);
}

/* glibc's stdio dropped its buffer when a write failed, so rows already
 * reported written were lost and the next fflush() succeeded: a full disk
 * could commit a part missing rows. A failed write now breaks the sink for
 * good. */
static void failed_write_never_commits(void **state)
{
    struct paths p;
    paths_init(&p);
    assert_int_equal(sl_fault_configure("write=enospc@1"), 0);
    sl_jsonl_sink *sink;
    assert_int_equal(sl_jsonl_sink_open(p.dir, "part-00000.jsonl", false, &sink), SL_OK);
    json_t *row = padded_row();
    int written = 0;
    sl_status st;
    while ((st = sl_jsonl_sink_write(sink, row)) == SL_OK && written < 1000)
        written++;
    assert_int_equal(st, SL_ERR_IO); /* at 64 KiB, well before 1000 rows */
    assert_true(written > 10);
    assert_non_null(strstr(sl_last_error(), p.tmp));
    assert_non_null(strstr(sl_last_error(), "No space left on device"));
    /* The disk has room again (the fault hit once), yet nothing more goes
     * in and the part cannot be committed. */
    assert_int_equal(sl_jsonl_sink_write(sink, row), SL_ERR_IO);
    assert_int_equal(sl_jsonl_sink_finish(sink), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "incomplete"));
    assert_int_equal(sl_jsonl_sink_commit(sink), SL_ERR_IO);
    assert_false(exists(p.final_path));
    sl_jsonl_sink_free(sink);
    assert_false(exists(p.tmp));
    json_decref(row);
    sl_fault_configure(NULL);
    tu_rmtree(p.base);
}

static void failed_sync_never_commits(void **state)
{
    struct paths p;
    paths_init(&p);
    assert_int_equal(sl_fault_configure("fsync=eio@1"), 0);
    sl_jsonl_sink *sink;
    assert_int_equal(sl_jsonl_sink_open(p.dir, "part-00000.jsonl", false, &sink), SL_OK);
    json_t *row = padded_row();
    assert_int_equal(sl_jsonl_sink_write(sink, row), SL_OK);
    assert_int_equal(sl_jsonl_sink_commit(sink), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "cannot sync"));
    assert_non_null(strstr(sl_last_error(), "Input/output error"));
    /* A sync that failed is not tried again: the data may be gone. */
    assert_int_equal(sl_jsonl_sink_commit(sink), SL_ERR_IO);
    assert_false(exists(p.final_path));
    sl_jsonl_sink_free(sink);
    assert_false(exists(p.tmp));
    json_decref(row);
    sl_fault_configure(NULL);
    tu_rmtree(p.base);
}

/* The folder's sync after the rename used to be unchecked. */
static void failed_folder_sync_is_reported(void **state)
{
    struct paths p;
    paths_init(&p);
    assert_int_equal(sl_fault_configure("fsync=eio@2"), 0);
    sl_jsonl_sink *sink;
    assert_int_equal(sl_jsonl_sink_open(p.dir, "part-00000.jsonl", false, &sink), SL_OK);
    json_t *row = padded_row();
    assert_int_equal(sl_jsonl_sink_write(sink, row), SL_OK);
    assert_int_equal(sl_jsonl_sink_commit(sink), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "cannot sync folder"));
    assert_non_null(strstr(sl_last_error(), p.dir));
    sl_jsonl_sink_free(sink);
    /* Renamed already, and whole (synced first): the ledger's reconcile
     * commits it on the next run (ledger/ledger.h). */
    assert_true(exists(p.final_path));
    assert_false(exists(p.tmp));
    json_decref(row);
    sl_fault_configure(NULL);
    tu_rmtree(p.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shard_appears_only_on_commit),
        cmocka_unit_test(unwritable_output_is_an_error),
        cmocka_unit_test(a_symlink_at_the_temporary_name_is_not_written_through),
        cmocka_unit_test(line_ends_past_ascii_are_escaped),
        cmocka_unit_test(failed_write_never_commits),
        cmocka_unit_test(failed_sync_never_commits),
        cmocka_unit_test(failed_folder_sync_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
