/* Unit tests: io/part_filter_tar.c on parts the real WebDataset sink writes
 * (io/sink.h), read back with libarchive — the failed rows' ids in file
 * order (an id once per failed row), the copy without the samples of some
 * ids (every member of each, images included; the others' names and bytes
 * unchanged, in order, as the sink writes them), the counts, a copy that
 * drops nothing being the same bytes, a copy made in chunks; and the parts
 * refused: truncated, garbage, missing, a .json without "id", not JSON or
 * over 64 MiB, a member that is not a file, a failed write — each with an
 * error naming the file and no tmp_path left. Tars that are not the sink's
 * are made here with libarchive or by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "io/part_filter.h"
#include "io/sink.h"
#include "test_util.h"
#include "test_tar.h"

static const sl_schema_column head[] = {
    {"id", SL_PQ_STRING, false, NULL, false, false},
    {"answer", SL_PQ_STRING, true, NULL, false, false},
    {"error", SL_PQ_STRING, true, NULL, false, false},
};
enum { N_HEAD = sizeof head / sizeof *head };
static const sl_schema_column tail[] = {{"image_bytes", SL_PQ_BINARY, true, NULL, false, false}};
static const sl_schema schema = {head, N_HEAD, NULL, tail, 1};

static const uint8_t jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0, 'j', 'p', 'e', 'g', 0, 1};
static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 'p', 'n', 'g', 0};

/* The part's rows: ok and failed, with and without an image; "r1" twice
 * (two tasks of one input), failed both times; the last row's image spans
 * several of libarchive's 64 KiB blocks. */
enum { N_ROWS = 7, BIG = 300000 };
static const char *const ids[N_ROWS] = {"r0", "r1", "r2", "r3", "r4", "r1", "r6"};
static const char *const errors[N_ROWS] = {NULL, "decode failed", NULL, "engine failed", NULL,
                                           "too long", NULL};
static uint8_t big[BIG];

static sl_pq_value text_cell(const char *s)
{
    return s ? (sl_pq_value){.ptr = s, .len = strlen(s)} : (sl_pq_value){.is_null = true};
}

static sl_pq_value image_cell(int i)
{
    switch (i) {
    case 0: case 5: return (sl_pq_value){.ptr = jpeg, .len = sizeof jpeg};
    case 3: case 4: return (sl_pq_value){.ptr = png, .len = sizeof png};
    case 6: return (sl_pq_value){.ptr = big, .len = sizeof big};
    default: return (sl_pq_value){.is_null = true};
    }
}

/* dir/part-00000.tar, written and committed by the sink; its path. */
static char *write_part(const char *dir)
{
    memcpy(big, png, sizeof png);
    for (size_t k = sizeof png; k < sizeof big; k++)
        big[k] = (uint8_t)(k * 131 + (k >> 9));
    sl_sink *sink;
    assert_int_equal(sl_sink_open("webdataset", dir, false, &schema, &sink), SL_OK);
    assert_int_equal(sl_sink_part_open(sink, "part-00000.tar"), SL_OK);
    for (int i = 0; i < N_ROWS; i++) {
        sl_pq_value cells[N_HEAD + 1] = {text_cell(ids[i]), text_cell("a caption"),
                                         text_cell(errors[i]), image_cell(i)};
        assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells}), SL_OK);
    }
    assert_int_equal(sl_sink_commit(sink, NULL, NULL), SL_OK);
    char *path = strdup(sl_sink_part_path(sink));
    sl_sink_free(sink);
    return path;
}

/* The ids failed_ids gives, joined by spaces; it stops with `stop_at`'s
 * status at that call (0: never). */
typedef struct collected {
    char text[256];
    int calls, stop_at;
} collected;

static sl_status collect(void *user, const char *id)
{
    collected *c = user;
    c->calls++;
    if (c->calls == c->stop_at)
        return sl_fail(SL_ERR_STOPPED, "stopped by the test");
    size_t n = strlen(c->text);
    snprintf(c->text + n, sizeof c->text - n, "%s%s", n ? " " : "", id);
    return SL_OK;
}

static void failed_ids_in_order(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *part = write_part(dir);
    collected c = {0};
    assert_int_equal(sl_part_failed_ids_tar(part, collect, &c), SL_OK);
    assert_string_equal(c.text, "r1 r3 r1");
    /* An error from the callback ends the walk and is returned. */
    collected stop = {.stop_at = 2};
    assert_int_equal(sl_part_failed_ids_tar(part, collect, &stop), SL_ERR_STOPPED);
    assert_int_equal(stop.calls, 2);
    assert_string_equal(stop.text, "r1");
    free(part);
    tu_rmtree(dir);
}

/* The samples of rows 1, 3 and 5 (ids r1, r3; images on 3 and 5) go; the
 * others' members stay, byte for byte, in order, written as the sink does. */
static void filter_drops_whole_samples(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *part = write_part(dir);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/.part-00000.tar.tmp", dir);
    sl_idset *drop = tu_idset_of((const char *[]){"r3", "r1", "not-here"}, 3);
    long removed = -1, kept = -1;
    sl_alloc_peak_reset();
    int64_t before = sl_alloc_live_bytes();
    assert_int_equal(sl_part_filter_tar(part, tmp, drop, &removed, &kept), SL_OK);
    /* The 300 kB image went through in chunks, never whole. */
    assert_true(sl_alloc_peak_bytes() - before < BIG / 2);
    assert_int_equal(removed, 3);
    assert_int_equal(kept, 4);

    tt_member orig[16], copy[16];
    int n_orig = tt_read_tar(part, orig, 16), n_copy = tt_read_tar(tmp, copy, 16);
    assert_int_equal(n_orig, 12); /* 7 .json, 5 images */
    static const char *const want[] = {"00000_000000.json", "00000_000000.jpg",
                                       "00000_000002.json", "00000_000004.json",
                                       "00000_000004.png",  "00000_000006.json",
                                       "00000_000006.png"};
    assert_int_equal(n_copy, 7);
    int j = 0;
    for (int i = 0; i < n_orig; i++) {
        const char *key = orig[i].name + strlen("00000_00000");
        if (*key == '1' || *key == '3' || *key == '5')
            continue; /* a dropped row's member */
        assert_string_equal(copy[j].name, want[j]);
        assert_string_equal(copy[j].name, orig[i].name);
        assert_int_equal(copy[j].len, orig[i].len);
        assert_memory_equal(copy[j].data, orig[i].data, orig[i].len);
        assert_int_equal(copy[j].perm, 0644);
        assert_int_equal(copy[j].mtime, 0);
        assert_int_equal(copy[j].uid, 0);
        assert_int_equal(copy[j].gid, 0);
        j++;
    }
    assert_int_equal(j, n_copy);
    assert_int_equal(copy[6].len, BIG);
    assert_memory_equal(copy[6].data, big, BIG);
    assert_non_null(strstr(copy[2].data, "\"id\":\"r2\""));
    /* The copy's failed rows: none left. */
    collected c = {0};
    assert_int_equal(sl_part_failed_ids_tar(tmp, collect, &c), SL_OK);
    assert_string_equal(c.text, "");
    tt_free_members(orig, n_orig);
    tt_free_members(copy, n_copy);

    /* Every row dropped: an empty tar, still a tar. */
    sl_idset_free(drop);
    drop = tu_idset_of(ids, N_ROWS);
    assert_int_equal(sl_part_filter_tar(part, tmp, drop, &removed, &kept), SL_OK);
    assert_int_equal(removed, N_ROWS);
    assert_int_equal(kept, 0);
    assert_int_equal(tt_read_tar(tmp, copy, 16), 0);
    sl_idset_free(drop);
    free(part);
    tu_rmtree(dir);
}

/* Nothing to drop: the copy is the original, byte for byte. */
static void filter_dropping_nothing_copies(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *part = write_part(dir);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/copy.tar", dir);
    tu_write(dir, "copy.tar", "stale", 5); /* replaced */
    sl_idset *drop = tu_idset_of((const char *[]){"r", "r10", "00000_000001"}, 3);
    long removed = -1, kept = -1;
    assert_int_equal(sl_part_filter_tar(part, tmp, drop, &removed, &kept), SL_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(kept, N_ROWS);
    size_t len1, len2;
    char *t1 = tt_slurp(part, &len1), *t2 = tt_slurp(tmp, &len2);
    assert_int_equal(len1, len2);
    assert_memory_equal(t1, t2, len1);
    free(t1);
    free(t2);
    sl_idset_free(drop);
    free(part);
    tu_rmtree(dir);
}

/* Both walks refuse `path` with `status` and a message naming it and
 * holding `cause`; the filter leaves no tmp_path. */
static void refused(const char *path, sl_status status, const char *cause)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    collected c = {0};
    sl_status st = sl_part_failed_ids_tar(path, collect, &c);
    if (st != status)
        fail_msg("'%s': %s", path, sl_last_error());
    assert_non_null(strstr(sl_last_error(), path));
    if (!strstr(sl_last_error(), cause))
        fail_msg("'%s' lacks '%s'", sl_last_error(), cause);
    sl_idset *drop = tu_idset_of((const char *[]){"r1"}, 1);
    long removed, kept;
    if ((st = sl_part_filter_tar(path, tmp, drop, &removed, &kept)) != status)
        fail_msg("'%s': %s", path, sl_last_error());
    assert_non_null(strstr(sl_last_error(), path));
    if (!strstr(sl_last_error(), cause))
        fail_msg("'%s' lacks '%s'", sl_last_error(), cause);
    assert_false(tu_exists(tmp));
    sl_idset_free(drop);
}

static void damaged_parts_refused(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *part = write_part(dir);
    size_t len;
    char *whole = tt_slurp(part, &len);
    char path[600];
    /* Cut inside row 0's JSON, inside the big image (whose data the walk
     * for failed ids skips), one byte into row 2's header, and where row 2
     * begins (a tar without its end: rows lost, not a shorter part). */
    const size_t cuts[] = {600, len - 200000, 6 * 512 + 1, 6 * 512};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        snprintf(path, sizeof path, "%s/cut%zu.tar", dir, k);
        tu_write(dir, strrchr(path, '/') + 1, whole, cuts[k]);
        refused(path, SL_ERR_DECODE, "not a whole tar part");
    }
    /* Cut inside the big image and given a tar's end: libarchive finds the
     * image short, whether read (the copy) or skipped (the failed ids). */
    size_t cut = (len - 200000) / 512 * 512;
    memset(whole + cut, 0, 1024);
    snprintf(path, sizeof path, "%s/cut-ended.tar", dir);
    tu_write(dir, "cut-ended.tar", whole, cut + 1024);
    refused(path, SL_ERR_DECODE, "not a whole tar part");
    /* Garbage; garbage ending as a tar does. */
    char junk[3072];
    memset(junk, 'x', sizeof junk);
    snprintf(path, sizeof path, "%s/garbage.tar", dir);
    tu_write(dir, "garbage.tar", junk, sizeof junk - 100);
    refused(path, SL_ERR_DECODE, "not a whole tar part");
    memset(junk + 2048, 0, 1024);
    snprintf(path, sizeof path, "%s/garbage0.tar", dir);
    tu_write(dir, "garbage0.tar", junk, sizeof junk);
    refused(path, SL_ERR_DECODE, "is not a tar part");
    snprintf(path, sizeof path, "%s/missing.tar", dir);
    refused(path, SL_ERR_NOT_FOUND, "cannot open");
    free(whole);
    free(part);
    tu_rmtree(dir);
}

/* A tar of these members, written with libarchive; type 0: a file. */
typedef struct spec {
    const char *name;
    const char *data;
    int type;
} spec;

static void write_tar(const char *path, const spec *m, int n)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    struct archive_entry *e = archive_entry_new();
    for (int i = 0; i < n; i++) {
        archive_entry_clear(e);
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_filetype(e, m[i].type ? (unsigned)m[i].type : AE_IFREG);
        archive_entry_set_perm(e, 0600);
        archive_entry_set_mtime(e, 1700000000, 0);
        size_t len = m[i].type ? 0 : strlen(m[i].data);
        archive_entry_set_size(e, (la_int64_t)len);
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (len)
            assert_int_equal(archive_write_data(a, m[i].data, len), (la_ssize_t)len);
    }
    archive_entry_free(e);
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

static void rows_not_sluices_refused(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/noid.tar", dir);
    write_tar(path, (spec[]){{"k0.json", "{\"id\":\"r0\",\"error\":null}", 0},
                             {"k1.json", "{\"error\":\"x\"}", 0}},
              2);
    refused(path, SL_ERR_DECODE, "member 'k1.json'");
    snprintf(path, sizeof path, "%s/numid.tar", dir);
    write_tar(path, (spec[]){{"k1.json", "{\"id\":7,\"error\":\"x\"}", 0}}, 1);
    refused(path, SL_ERR_DECODE, "no string \"id\"");
    snprintf(path, sizeof path, "%s/notjson.tar", dir);
    write_tar(path, (spec[]){{"k1.json", "{\"id\":\"r1\",", 0}}, 1);
    refused(path, SL_ERR_DECODE, "not JSON");
    snprintf(path, sizeof path, "%s/dir.tar", dir);
    write_tar(path, (spec[]){{"k0.json", "{\"id\":\"r0\"}", 0}, {"sub", NULL, AE_IFDIR}}, 2);
    refused(path, SL_ERR_DECODE, "member 'sub");

    /* A .json member whose header says 65 MiB: refused before any is read
     * (the header by hand: ustar, its checksum over the 512 bytes with the
     * checksum field as spaces; then zero blocks, as a tar ends). */
    char hdr[512 + 1024] = {0};
    strcpy(hdr, "k9.json");
    strcpy(hdr + 100, "0000644");
    strcpy(hdr + 108, "0000000");
    strcpy(hdr + 116, "0000000");
    snprintf(hdr + 124, 12, "%011llo", 65ULL << 20);
    strcpy(hdr + 136, "00000000000");
    hdr[156] = '0';
    memcpy(hdr + 257, "ustar\0" "00", 8);
    memset(hdr + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)hdr[i];
    snprintf(hdr + 148, 8, "%06o", sum);
    snprintf(path, sizeof path, "%s/huge.tar", dir);
    tu_write(dir, "huge.tar", hdr, sizeof hdr);
    refused(path, SL_ERR_DECODE, "over the 64 MiB");
    tu_rmtree(dir);
}

/* Samples the sink would not write: one opening with its image (kept
 * whole, never reported: it could not be dropped), a member without a key. */
static void odd_samples_kept(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char path[600], tmp[700];
    snprintf(path, sizeof path, "%s/odd.tar", dir);
    snprintf(tmp, sizeof tmp, "%s/odd.tar.tmp", dir);
    write_tar(path,
              (spec[]){{"k1.jpg", "JPEG", 0},
                       {"k1.json", "{\"id\":\"r1\",\"error\":\"x\"}", 0},
                       {"README", "no key", 0},
                       {"k2.json", "{\"id\":\"r2\",\"error\":\"y\"}", 0},
                       {"k2.txt", "two", 0},
                       {"k3.json", "{\"id\":\"r3\"}", 0},
                       {"k3.seg.json", "{\"id\":\"r2\"}", 0}},
              7);
    collected c = {0};
    assert_int_equal(sl_part_failed_ids_tar(path, collect, &c), SL_OK);
    assert_string_equal(c.text, "r2"); /* r3 has no "error": not failed */
    sl_idset *drop = tu_idset_of((const char *[]){"r1", "r2"}, 2);
    long removed, kept;
    assert_int_equal(sl_part_filter_tar(path, tmp, drop, &removed, &kept), SL_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(kept, 1);
    tt_member m[8];
    int n = tt_read_tar(tmp, m, 8);
    static const char *const want[] = {"k1.jpg", "k1.json", "README", "k3.json", "k3.seg.json"};
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++) {
        assert_string_equal(m[i].name, want[i]);
        assert_int_equal(m[i].perm, 0644); /* written as the sink writes */
        assert_int_equal(m[i].mtime, 0);
    }
    assert_memory_equal(m[0].data, "JPEG", 4);
    assert_memory_equal(m[2].data, "no key", 6);
    tt_free_members(m, n);
    sl_idset_free(drop);
    tu_rmtree(dir);
}

/* A write that fails (a full disk) fails the copy and removes it. */
static void failed_write_leaves_nothing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *part = write_part(dir);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/.part-00000.tar.tmp", dir);
    sl_idset *drop = tu_idset_of((const char *[]){"r1"}, 1);
    long removed, kept;
    for (int k = 1; k <= 2; k++) { /* a write in the middle; the sync */
        assert_int_equal(sl_fault_configure(k == 1 ? "write=enospc@2" : "fsync=eio@1"), 0);
        assert_int_equal(sl_part_filter_tar(part, tmp, drop, &removed, &kept), SL_ERR_IO);
        sl_fault_configure(NULL);
        assert_non_null(strstr(sl_last_error(), tmp));
        if (!strstr(sl_last_error(), k == 1 ? "No space left" : "Input/output error"))
            fail_msg("%s", sl_last_error());
        assert_false(tu_exists(tmp));
    }
    /* A folder that is not there: nothing made, the cause said. */
    char nowhere[700];
    snprintf(nowhere, sizeof nowhere, "%s/no/such/dir.tar", dir);
    assert_int_equal(sl_part_filter_tar(part, nowhere, drop, &removed, &kept), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "cannot create"));
    assert_non_null(strstr(sl_last_error(), nowhere));
    sl_idset_free(drop);
    free(part);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(failed_ids_in_order),
        cmocka_unit_test(filter_drops_whole_samples),
        cmocka_unit_test(filter_dropping_nothing_copies),
        cmocka_unit_test(damaged_parts_refused),
        cmocka_unit_test(rows_not_sluices_refused),
        cmocka_unit_test(odd_samples_kept),
        cmocka_unit_test(failed_write_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
