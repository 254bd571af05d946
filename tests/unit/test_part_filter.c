/* Unit tests: io/part_filter.c, the JSONL and Parquet halves — failed ids
 * in file order (a row failed when "error" is set and not null), the copy
 * without the rows of some ids (every row of an id; the kept lines byte for
 * byte, ids found by their leading "id" or, for a line that does not start
 * so, by parsing it; escaped ids), the counts; a Parquet part's copy with
 * the same columns, types, nulls and values; and the errors: a line that
 * is not a row names the file and line, a part without "id" is refused,
 * and no temporary is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "io/parquet_read.h"
#include "io/parquet_write.h"
#include "io/part_filter.h"
#include "test_util.h"

typedef struct ids_seen {
    char all[512];
} ids_seen;

static sl_status collect(void *user, const char *id)
{
    ids_seen *s = user;
    strcat(s->all, id);
    strcat(s->all, ";");
    return SL_OK;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static const char part[] =
    "{\"id\":\"a\",\"caption\":\"x\",\"error\":null}\n"
    "{\"caption\":null,\"id\":\"b\",\"error\":\"b.jpg: not found\"}\n" /* id not first */
    "{\"id\":\"c\\\"q\",\"caption\":null,\"error\":\"boom\"}\n"        /* an escaped id */
    "{\"id\":\"d\",\"task\":\"t1\",\"error\":null}\n"
    "{\"id\":\"d\",\"task\":\"t2\",\"error\":\"timeout\"}\n" /* d's second task failed */
    "{\"id\":\"e\",\"meta\":{\"error\":\"not ours\"}}\n";    /* no error of its own */

static void jsonl_failed_rows_go_and_the_others_stay(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), path[600], tmp[600];
    tu_write(dir, "part-00000.jsonl", part, sizeof part - 1);
    snprintf(path, sizeof path, "%s/part-00000.jsonl", dir);
    snprintf(tmp, sizeof tmp, "%s/.part-00000.jsonl.tmp-1", dir);
    ids_seen seen = {{0}};
    assert_int_equal(sl_part_failed_ids(path, collect, &seen), SL_OK);
    assert_string_equal(seen.all, "b;c\"q;d;");
    const char *gone[] = {"b", "c\"q", "d"};
    sl_idset *drop = tu_idset_of(gone, 3);
    long removed = -1, kept = -1;
    assert_int_equal(sl_part_filter(path, tmp, drop, NULL, &removed, &kept), SL_OK);
    assert_int_equal(removed, 4); /* b, c"q and both of d's rows */
    assert_int_equal(kept, 2);
    assert_string_equal(slurp(tmp), "{\"id\":\"a\",\"caption\":\"x\",\"error\":null}\n"
                                    "{\"id\":\"e\",\"meta\":{\"error\":\"not ours\"}}\n");
    /* the copy filtered again drops nothing and is the same bytes */
    char again[600];
    snprintf(again, sizeof again, "%s/.again", dir);
    assert_int_equal(sl_part_filter(tmp, again, drop, NULL, &removed, &kept), SL_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(kept, 2);
    assert_string_equal(slurp(again), "{\"id\":\"a\",\"caption\":\"x\",\"error\":null}\n"
                                      "{\"id\":\"e\",\"meta\":{\"error\":\"not ours\"}}\n");
    /* a line that is not a row: the file and line named, no temporary left */
    tu_write(dir, "part-00001.jsonl", "{\"id\":\"a\"}\nnot json\n", 21);
    snprintf(path, sizeof path, "%s/part-00001.jsonl", dir);
    assert_int_equal(sl_part_filter(path, tmp, drop, NULL, &removed, &kept), SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), "part-00001.jsonl:2"));
    assert_int_not_equal(access(tmp, F_OK), 0);
    tu_write(dir, "part-00002.jsonl", "{\"name\":\"a\",\"error\":\"x\"}\n", 26);
    snprintf(path, sizeof path, "%s/part-00002.jsonl", dir);
    assert_int_equal(sl_part_failed_ids(path, collect, &seen), SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), "no string \"id\""));
    sl_idset_free(drop);
    tu_rmtree(dir);
}

static void parquet_copy_keeps_columns_types_and_values(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), path[600], tmp[600];
    snprintf(path, sizeof path, "%s/part-00000.parquet", dir);
    snprintf(tmp, sizeof tmp, "%s/.part-00000.parquet.tmp-1", dir);
    const sl_pq_column_def cols[] = {{"id", SL_PQ_STRING, false, NULL}, {"n", SL_PQ_INT64, true, NULL},
                                     {"score", SL_PQ_DOUBLE, true, NULL}, {"ok", SL_PQ_BOOL, false, NULL},
                                     {"image_bytes", SL_PQ_BINARY, true, NULL},
                                     {"error", SL_PQ_STRING, true, NULL}};
    sl_pq_writer *w;
    assert_int_equal(sl_pq_writer_open(path, cols, 6, NULL, &w), SL_OK);
    const char *ids[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        bool failed = i == 1 || i == 3;
        sl_pq_value row[6] = {
            {.ptr = ids[i], .len = 1},
            {.is_null = i == 2, .i64 = 10 + i},
            {.f64 = 0.5 * i},
            {.b = i % 2 == 0},
            {.is_null = i == 0, .ptr = "\x00\xff", .len = 2},
            {.is_null = !failed, .ptr = "boom", .len = 4}};
        assert_int_equal(sl_pq_writer_append(w, row), SL_OK);
    }
    assert_int_equal(sl_pq_writer_close(w), SL_OK);
    sl_pq_writer_free(w);
    ids_seen seen = {{0}};
    assert_int_equal(sl_part_failed_ids(path, collect, &seen), SL_OK);
    assert_string_equal(seen.all, "b;d;");
    const char *gone[] = {"b", "d"};
    sl_idset *drop = tu_idset_of(gone, 2);
    long removed, kept;
    assert_int_equal(sl_part_filter(path, tmp, drop, NULL, &removed, &kept), SL_OK);
    assert_int_equal(removed, 2);
    assert_int_equal(kept, 2);
    sl_pq_reader *r;
    assert_int_equal(sl_pq_reader_open(tmp, NULL, &r), SL_OK);
    assert_int_equal(sl_pq_reader_num_columns(r), 6);
    for (size_t c = 0; c < 6; c++) {
        assert_string_equal(sl_pq_reader_column(r, c)->name, cols[c].name);
        assert_int_equal(sl_pq_reader_column(r, c)->type, cols[c].type);
        assert_int_equal(sl_pq_reader_column(r, c)->nullable, cols[c].nullable);
    }
    const sl_pq_batch *b;
    assert_int_equal(sl_pq_reader_next(r, &b), SL_OK);
    assert_non_null(b);
    assert_int_equal(b->num_rows, 2); /* a and c */
    assert_memory_equal(b->columns[0].data + b->columns[0].offsets[1], "c", 1);
    assert_int_equal(b->columns[1].valid[0], 1);
    assert_int_equal(b->columns[1].i64[0], 10);
    assert_int_equal(b->columns[1].valid[1], 0); /* c's null n */
    assert_true(b->columns[2].f64[1] == 1.0);
    assert_int_equal(b->columns[3].b[0], 1);
    assert_int_equal(b->columns[4].valid[0], 0);
    assert_int_equal(b->columns[4].offsets[2] - b->columns[4].offsets[1], 2);
    assert_int_equal(b->columns[5].valid[0] | b->columns[5].valid[1], 0);
    sl_pq_reader_free(r);
    sl_idset_free(drop);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jsonl_failed_rows_go_and_the_others_stay),
        cmocka_unit_test(parquet_copy_keeps_columns_types_and_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
