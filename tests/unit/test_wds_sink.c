/* Unit tests: io/wds_sink.c behind io/sink.h, read back with libarchive —
 * a sample per row (KEY.json then KEY.EXT, keys of the part number and the
 * row's index), each .json the very text the JSONL sink writes for the row
 * (bytes column left out), image members by sniffed extension with their
 * bytes, mode 0644 and mtime 0, the same rows giving the same bytes; the
 * temporary name until publish, a member streamed to disk before the part
 * ends, an abandoned part gone, a failed write that breaks the part; and
 * io/sniff.h's extensions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "io/sink.h"
#include "io/sniff.h"
#include "test_util.h"
#include "test_tar.h"

static const sl_schema_column head[] = {
    {"id", SL_PQ_STRING, false, NULL, false, false},
    {"w", SL_PQ_INT64, true, NULL, true, false},
    {"a_ms", SL_PQ_DOUBLE, false, "t", false, false},
    {"b_ms", SL_PQ_DOUBLE, false, "t", false, false},
    {"answer", SL_PQ_STRING, true, NULL, false, true},
    {"err", SL_PQ_STRING, true, NULL, false, false},
};
enum { N_HEAD = sizeof head / sizeof *head };
static const sl_schema_column tail[] = {{"image_bytes", SL_PQ_BINARY, true, NULL, false, false}};

/* Four rows: a JPEG, a PNG with w null (omitted), a failed row without
 * bytes, bytes of no known kind; pass-through columns on the first. */
enum { N_ROWS = 4 };
static const uint8_t jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0, 'j', 'p', 'e', 'g', 0, 1};
static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 'p', 'n', 'g', 0};
static const uint8_t other[] = {'?', '?', '?'};

static void row_cells(int i, sl_pq_value cells[N_HEAD + 1])
{
    static const char *const ids[N_ROWS] = {"a/x.jpg", "b.png", "bad.jpg", "c.dat"};
    static const char *const answers[N_ROWS] = {"{\"k\": [1, 2]}", "plain", NULL, "3"};
    cells[0] = (sl_pq_value){.ptr = ids[i], .len = strlen(ids[i])};
    cells[1] = i == 1 ? (sl_pq_value){.is_null = true} : (sl_pq_value){.i64 = 100 + i};
    cells[2] = (sl_pq_value){.f64 = 1.5 * i};
    cells[3] = (sl_pq_value){.f64 = 2};
    cells[4] = answers[i] ? (sl_pq_value){.ptr = answers[i], .len = strlen(answers[i])}
                          : (sl_pq_value){.is_null = true};
    cells[5] = i == 2 ? (sl_pq_value){.ptr = "decode failed", .len = 13}
                      : (sl_pq_value){.is_null = true};
    const uint8_t *bytes[N_ROWS] = {jpeg, png, NULL, other};
    size_t lens[N_ROWS] = {sizeof jpeg, sizeof png, 0, sizeof other};
    cells[N_HEAD] = bytes[i] ? (sl_pq_value){.ptr = bytes[i], .len = lens[i]}
                             : (sl_pq_value){.is_null = true};
}

static sl_columns *passthrough(void)
{
    sl_columns *cols;
    const char *reserved[] = {"id", "w", "t", "a_ms", "b_ms", "answer", "err", "image_bytes"};
    assert_int_equal(sl_columns_new(reserved, 8, NULL, 0, &cols), SL_OK);
    return cols;
}

static json_t *row_extra(int i)
{
    return i == 0 ? json_pack("{s:s, s:i, s:{s:b}}", "tag", "t0", "w", 7, "meta", "ok", 1) : NULL;
}

static void write_rows(sl_sink *sink)
{
    for (int i = 0; i < N_ROWS; i++) {
        sl_pq_value cells[N_HEAD + 1];
        row_cells(i, cells);
        json_t *extra = row_extra(i);
        assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells, .extra = extra}), SL_OK);
        json_decref(extra);
    }
}

/* A sink of the image schema in dir with part `name` open. */
static sl_sink *open_part(const char *dir, const char *name)
{
    static const sl_schema schema = {head, N_HEAD, NULL, tail, 1};
    sl_sink *sink;
    assert_int_equal(sl_sink_open("webdataset", dir, false, &schema, &sink), SL_OK);
    assert_int_equal(sl_sink_part_open(sink, name), SL_OK);
    return sink;
}

/* Row 0's cells with an image of `len` bytes (PNG's magic first). */
static uint8_t *big_image_row(size_t len, sl_pq_value cells[N_HEAD + 1])
{
    uint8_t *image = calloc(1, len);
    memcpy(image, png, sizeof png);
    row_cells(0, cells);
    cells[N_HEAD] = (sl_pq_value){.ptr = image, .len = len};
    return image;
}

static int durable_calls;
static char durable_saw[64];

/* The ledger's place: the part is whole under its temporary name only. */
static sl_status durable(void *user)
{
    char **paths = user; /* final, temporary */
    durable_calls++;
    snprintf(durable_saw, sizeof durable_saw, "%s %s", tu_exists(paths[0]) ? "final" : "-",
             tu_exists(paths[1]) ? "temp" : "-");
    return SL_OK;
}

static void rows_become_samples(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    sl_columns *cols = passthrough();
    sl_schema schema = {head, N_HEAD, cols, tail, 1};
    sl_sink *sink;
    assert_int_equal(sl_sink_open("webdataset", dir, false, &schema, &sink), SL_OK);
    assert_string_equal(sl_sink_format(sink), "webdataset");
    assert_string_equal(sl_sink_extension(sink), "tar");
    assert_int_equal(sl_sink_part_open(sink, "part-00003.tar"), SL_OK);
    char final_path[600], temp_path[700];
    snprintf(final_path, sizeof final_path, "%s/part-00003.tar", dir);
    snprintf(temp_path, sizeof temp_path, "%s/.part-00003.tar.tmp-%ld", dir, (long)getpid());
    assert_string_equal(sl_sink_part_path(sink), final_path);
    write_rows(sink);
    assert_true(tu_exists(temp_path));
    assert_false(tu_exists(final_path));
    durable_calls = 0;
    assert_int_equal(sl_sink_commit(sink, durable, (char *[]){final_path, temp_path}), SL_OK);
    assert_int_equal(durable_calls, 1);
    assert_string_equal(durable_saw, "- temp");
    assert_true(tu_exists(final_path));
    assert_false(tu_exists(temp_path));

    /* The same rows through the JSONL sink (which holds no bytes column). */
    sl_schema lines = {head, N_HEAD, cols, NULL, 0};
    sl_sink *jsonl;
    assert_int_equal(sl_sink_open("jsonl", dir, false, &lines, &jsonl), SL_OK);
    assert_int_equal(sl_sink_part_open(jsonl, "part-00000.jsonl"), SL_OK);
    write_rows(jsonl);
    assert_int_equal(sl_sink_commit(jsonl, NULL, NULL), SL_OK);
    char jsonl_path[600];
    snprintf(jsonl_path, sizeof jsonl_path, "%s/part-00000.jsonl", dir);
    char *text = tt_slurp(jsonl_path, NULL);

    tt_member m[16];
    int n = tt_read_tar(final_path, m, 16);
    static const char *const names[] = {"00003_000000.json", "00003_000000.jpg",
                                        "00003_000001.json", "00003_000001.png",
                                        "00003_000002.json", "00003_000003.json",
                                        "00003_000003.bin"};
    assert_int_equal(n, 7);
    char *line = text;
    for (int i = 0; i < n; i++) {
        assert_string_equal(m[i].name, names[i]);
        assert_int_equal(m[i].perm, 0644);
        assert_int_equal(m[i].mtime, 0);
        if (strstr(m[i].name, ".json")) {
            char *end = strchr(line, '\n');
            assert_non_null(end);
            *end = '\0';
            assert_string_equal(m[i].data, line);
            line = end + 1;
        }
    }
    assert_string_equal(line, ""); /* every JSONL row was a sample */
    assert_memory_equal(m[1].data, jpeg, sizeof jpeg);
    assert_int_equal(m[1].len, sizeof jpeg);
    assert_memory_equal(m[3].data, png, sizeof png);
    assert_memory_equal(m[6].data, other, sizeof other);
    /* What the JSON holds, said once by hand (not only "as JSONL does"). */
    assert_string_equal(m[0].data, "{\"id\":\"a/x.jpg\",\"w\":100,"
                                   "\"t\":{\"a_ms\":0.0,\"b_ms\":2.0},\"answer\":{\"k\":[1,2]},\"err\":null,\"tag\":\"t0\","
                                   "\"input_w\":7,\"meta\":{\"ok\":true}}");
    assert_null(strstr(m[2].data, "image_bytes"));
    tt_free_members(m, n);
    free(text);

    /* The same rows, the same bytes (another folder, the same part name). */
    char dir2[256];
    snprintf(dir2, sizeof dir2, "%s/again", dir);
    sl_sink *again;
    assert_int_equal(sl_sink_open("webdataset", dir2, false, &schema, &again), SL_OK);
    assert_int_equal(sl_sink_part_open(again, "part-00003.tar"), SL_OK);
    write_rows(again);
    assert_int_equal(sl_sink_commit(again, NULL, NULL), SL_OK);
    size_t len1, len2;
    char *t1 = tt_slurp(final_path, &len1), *t2 = tt_slurp(sl_sink_part_path(again), &len2);
    assert_int_equal(len1, len2);
    assert_int_equal(len1 % 512, 0);
    assert_memory_equal(t1, t2, len1);
    free(t1);
    free(t2);
    sl_sink_free(again);
    sl_sink_free(jsonl);
    sl_sink_free(sink);
    sl_columns_free(cols);
    tu_rmtree(dir);
}

/* An image goes to the file as it is written, not when the part ends. */
static void members_are_streamed(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    sl_sink *sink = open_part(dir, "part-00000.tar");
    size_t big = 4u << 20;
    sl_pq_value cells[N_HEAD + 1];
    uint8_t *image = big_image_row(big, cells);
    sl_alloc_peak_reset();
    int64_t before = sl_alloc_live_bytes();
    assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells}), SL_OK);
    assert_true(sl_alloc_peak_bytes() - before < (int64_t)(big / 8));
    char temp_path[700];
    snprintf(temp_path, sizeof temp_path, "%s/.part-00000.tar.tmp-%ld", dir, (long)getpid());
    struct stat stt;
    assert_int_equal(stat(temp_path, &stt), 0);
    assert_true(stt.st_size >= (off_t)big);
    assert_int_equal(sl_sink_commit(sink, NULL, NULL), SL_OK);
    char final_path[600];
    snprintf(final_path, sizeof final_path, "%s/part-00000.tar", dir);
    tt_member m[4];
    int n = tt_read_tar(final_path, m, 4);
    assert_int_equal(n, 2);
    assert_string_equal(m[1].name, "00000_000000.png");
    assert_int_equal(m[1].len, big);
    assert_memory_equal(m[1].data, image, big);
    tt_free_members(m, n);
    free(image);
    sl_sink_free(sink);
    tu_rmtree(dir);
}

static void abandoned_part_leaves_nothing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    sl_sink *sink = open_part(dir, "part-00000.tar");
    write_rows(sink);
    assert_int_equal(tu_count_entries(dir), 1); /* the temporary */
    sl_sink_abandon(sink);
    assert_false(sl_sink_part_is_open(sink));
    assert_int_equal(tu_count_entries(dir), 0);
    /* Freed with a part open: the same. */
    assert_int_equal(sl_sink_part_open(sink, "part-00001.tar"), SL_OK);
    write_rows(sink);
    sl_sink_free(sink);
    assert_int_equal(tu_count_entries(dir), 0);
    tu_rmtree(dir);
}

/* A failed write breaks the part for good: nothing is committed. */
static void failed_write_never_commits(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    sl_sink *sink = open_part(dir, "part-00000.tar");
    assert_int_equal(sl_fault_configure("write=enospc@1"), 0);
    sl_pq_value cells[N_HEAD + 1];
    uint8_t *image = big_image_row(256u << 10, cells); /* past libarchive's block */
    assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells}), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "No space left on device"));
    assert_non_null(strstr(sl_last_error(), ".part-00000.tar.tmp-"));
    /* The disk has room again, yet nothing more goes in. */
    assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells}), SL_ERR_IO);
    assert_int_equal(sl_sink_commit(sink, NULL, NULL), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "incomplete"));
    sl_fault_configure(NULL);
    sl_sink_abandon(sink);
    assert_int_equal(tu_count_entries(dir), 0);
    free(image);
    sl_sink_free(sink);
    tu_rmtree(dir);
}

static void two_bytes_columns_refused(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    static const sl_schema_column two[] = {{"image_bytes", SL_PQ_BINARY, true, NULL, false, false},
                                           {"mask", SL_PQ_BINARY, true, NULL, false, false}};
    sl_schema schema = {head, N_HEAD, NULL, two, 2};
    sl_sink *sink = NULL;
    assert_int_equal(sl_sink_open("webdataset", dir, false, &schema, &sink), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'mask'"));
    assert_null(sink);
    tu_rmtree(dir);
}

static void extensions_from_bytes(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        const char *ext;
    } cases[] = {
        {"\xFF\xD8\xFF\xDB", 4, "jpg"},
        {"\x89PNG\r\n\x1a\n", 8, "png"},
        {"RIFF\0\0\0\0WEBPVP8 ", 16, "webp"},
        {"GIF89a", 6, "gif"},
        {"II*\0\x08\0\0\0", 8, "tif"},
        {"MM\0*\0\0\0\x08", 8, "tif"},
        {"BM\0\0\0\0", 6, "bmp"},
        {"\0\0\0\x1c" "ftypavif", 12, "avif"},
        {"\0\0\0\x18" "ftypheic", 12, "heic"},
        {"\0\0\0\x18" "ftypmif1", 12, "heic"},
        {"\0\0\0\x20" "ftypisom\0\0\x02\0", 16, "mp4"},
        {"\0\0\0\x14" "ftypqt  \0\0\x02\0", 16, "mov"},
        {"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\x82\x84webm", 16, "webm"},
        {"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\x82\x88matroska", 20, "mkv"},
        {"RIFF\0\0\0\0AVI LIST", 16, "avi"},
        {"%PDF-1.4", 8, "bin"},
        {"", 0, "bin"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *ext = sl_sniff_extension((const uint8_t *)cases[i].bytes, cases[i].len);
        if (strcmp(ext, cases[i].ext) != 0)
            fail_msg("case %zu: '%s', expected '%s'", i, ext, cases[i].ext);
    }
    assert_string_equal(sl_sniff_image_format((const uint8_t *)"\xFF\xD8\xFF", 3), "jpeg");
    assert_null(sl_sniff_image_format((const uint8_t *)"\0\0\0\x20" "ftypisom", 12));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rows_become_samples),
        cmocka_unit_test(members_are_streamed),
        cmocka_unit_test(abandoned_part_leaves_nothing),
        cmocka_unit_test(failed_write_never_commits),
        cmocka_unit_test(two_bytes_columns_refused),
        cmocka_unit_test(extensions_from_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
