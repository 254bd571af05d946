/* Unit tests: io/unzip.c — sl_unzip_run fed by hand, in pieces cut where a
 * reader's buffers may cut them (inside a gzip member's header, exactly at
 * a zstd frame's end with the output exactly full), must give what the
 * same bytes give whole; xz streams with the Stream Padding between them
 * that xz(1) reads past are read as one; a window past the bound is said
 * as a refusal, not damage. The compressed inputs are made here with zlib,
 * libzstd and liblzma. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "core/error.h"
#include "io/unzip.h"

/* Numbered lines, from `from`, as a manifest's: n bytes of them. */
static uint8_t *lines(int from, size_t n)
{
    uint8_t *t = malloc(n);
    assert_non_null(t);
    for (size_t o = 0; o < n;) {
        char line[32];
        int k = snprintf(line, sizeof line, "line %d\n", from++);
        for (int i = 0; i < k && o < n; i++)
            t[o++] = (uint8_t)line[i];
    }
    return t;
}

static size_t gzip_of(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    return len;
}

static size_t xz_of(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t len = 0;
    assert_int_equal(lzma_easy_buffer_encode(1, LZMA_CHECK_CRC64, NULL, in, n, out, &len, cap),
                     LZMA_OK);
    return len;
}

static size_t zstd_of(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t len = ZSTD_compress(out, cap, in, n, 3);
    assert_false(ZSTD_isError(len));
    return len;
}

/* in[0..n) inflated, fed in reads of the sizes cuts[] gives (the last
 * repeated), into outputs of `piece` bytes: the bytes made into out (cap),
 * how many; *failed: it ended in a fault (sl_last_error says it). */
static size_t inflate_fed(sl_unzip_kind kind, const uint8_t *in, size_t n, const size_t *cuts,
                          size_t n_cuts, size_t piece, uint8_t *out, size_t cap, bool *failed)
{
    sl_unzip *z;
    assert_int_equal(sl_unzip_new(kind, &z), SL_OK);
    size_t total = 0, fed = 0, left = 0, read_no = 0;
    const uint8_t *at = in;
    *failed = false;
    for (int rounds = 0;; rounds++) {
        assert_true(rounds < 10 * 1000 * 1000); /* no progress: a loop that never ends */
        if (left == 0 && fed < n) {
            size_t want = cuts[read_no < n_cuts ? read_no : n_cuts - 1];
            read_no++;
            at = in + fed;
            left = n - fed < want ? n - fed : want;
            fed += left;
        }
        size_t room = cap - total < piece ? cap - total : piece, made;
        assert_true(room > 0); /* out is big enough for every test here */
        sl_status st = sl_unzip_run(z, &at, &left, fed == n, out + total, room, &made);
        if (st != SL_OK) {
            assert_int_equal(made, 0);
            *failed = true;
            break;
        }
        total += made;
        if (made == 0 && left == 0 && fed == n)
            break;
        assert_true(made > 0 || left == 0);
    }
    sl_unzip_free(z);
    return total;
}

/* in[0..n), fed as inflate_fed feeds it, inflates to ta[0..a) then
 * tb[0..b), with no fault. */
static void inflates_to(sl_unzip_kind kind, const uint8_t *in, size_t n, const size_t *cuts,
                        size_t n_cuts, size_t piece, const uint8_t *ta, size_t a,
                        const uint8_t *tb, size_t b)
{
    uint8_t *out = malloc(a + b + 1);
    assert_non_null(out);
    bool failed;
    size_t got = inflate_fed(kind, in, n, cuts, n_cuts, piece, out, a + b + 1, &failed);
    assert_false(failed);
    assert_int_equal(got, a + b);
    assert_memory_equal(out, ta, a);
    assert_memory_equal(out + a, tb, b);
    free(out);
}

/* xz streams with zero Stream Padding between them (what `xz -dc` and
 * libarchive, used before, read on past): every stream's text, fed whole
 * or byte by byte; padding after the last one is no data. It gave only the
 * first stream's text, with no error. */
static void xz_streams_with_padding_between_read_as_one(void **state)
{
    (void)state;
    enum { A = 30000, B = 20000, CAP = 1 << 17 };
    uint8_t *ta = lines(0, A), *tb = lines(100000, B), *packed = calloc(1, CAP);
    assert_non_null(packed);
    size_t n = xz_of(ta, A, packed, CAP);
    n += 8; /* the padding: a multiple of four zero bytes */
    n += xz_of(tb, B, packed + n, CAP - n);
    n += 512; /* zeros after the last stream too, as a tape block pads it */
    const size_t whole[] = {n}, bytes[] = {1}, odd[] = {7, 1, 3};
    inflates_to(SL_UNZIP_XZ, packed, n, whole, 1, A + B + 1, ta, A, tb, B);
    inflates_to(SL_UNZIP_XZ, packed, n, bytes, 1, 1, ta, A, tb, B);
    inflates_to(SL_UNZIP_XZ, packed, n, odd, 3, 13, ta, A, tb, B);
    free(ta), free(tb), free(packed);
}

/* Two streams made by pack, of a and b bytes of lines (*ta, *tb), one
 * after the other in *packed; *first: where the second begins. The total. */
typedef size_t packer(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
static size_t two_streams(packer *pack, size_t a, size_t b, uint8_t **ta, uint8_t **tb,
                          uint8_t **packed, size_t *first)
{
    enum { CAP = 1 << 16 };
    *ta = lines(0, a);
    *tb = lines(100000, b);
    *packed = malloc(CAP);
    assert_non_null(*packed);
    *first = pack(*ta, a, *packed, CAP);
    return *first + pack(*tb, b, *packed + *first, CAP - *first);
}

/* Two gzip members (pigz) with the read boundary at every byte of the
 * second member's 10-byte header, and around it: the same text each time. */
static void a_gzip_members_header_split_across_reads(void **state)
{
    (void)state;
    enum { A = 5000, B = 3000 };
    uint8_t *ta, *tb, *packed;
    size_t first, n = two_streams(gzip_of, A, B, &ta, &tb, &packed, &first);
    for (size_t cut = first - 9; cut <= first + 12; cut++)
        inflates_to(SL_UNZIP_GZIP, packed, n, (const size_t[]){cut, n}, 2, 4096, ta, A, tb, B);
    free(ta), free(tb), free(packed);
}

/* A zstd frame whose last byte ends a read and whose text exactly fills the
 * output (libzstd then holds that byte back until the output is drained),
 * then a second frame: nothing lost, nothing twice. */
static void a_zstd_frame_ending_at_a_read_and_filling_the_output(void **state)
{
    (void)state;
    enum { A = 4096, B = 1000 };
    uint8_t *ta, *tb, *packed;
    size_t first, n = two_streams(zstd_of, A, B, &ta, &tb, &packed, &first);
    for (size_t piece = A - 1; piece <= A + 1; piece++)
        inflates_to(SL_UNZIP_ZSTD, packed, n, (const size_t[]){first, n}, 2, piece, ta, A, tb, B);
    free(ta), free(tb), free(packed);
}

/* A zstd frame whose header asks for a 2 GiB window (zstd --long=31 writes
 * such frames; libzstd refuses past 128 MiB unless told, as `zstd -d`
 * does): the fault says the window, not damage. It said "zstd data damaged
 * near byte 0: Frame requires too much memory for decoding". */
static void a_zstd_window_past_the_bound_is_refused_not_damaged(void **state)
{
    (void)state;
    /* magic; descriptor: a window byte, no size; window 2^31; one raw last
     * block of 5 bytes */
    static const uint8_t frame[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, (31 - 10) << 3,
                                    (5 << 3) | 1, 0, 0, 'h', 'e', 'l', 'l', 'o'};
    uint8_t out[16];
    bool failed;
    size_t got = inflate_fed(SL_UNZIP_ZSTD, frame, sizeof frame, (const size_t[]){sizeof frame},
                             1, sizeof out, out, sizeof out, &failed);
    assert_true(failed);
    assert_int_equal(got, 0);
    const char *why = sl_last_error();
    if (!strstr(why, "cannot read the zstd data at byte") || !strstr(why, "memory") ||
        strstr(why, "damaged"))
        fail_msg("%s", why);
}

/* An xz stream whose LZMA2 window needs more memory than the cap (a block
 * header asking for a 512 MiB dictionary): refused, the message saying the
 * cap the code uses, not "damaged". */
static void an_xz_window_past_the_cap_is_refused_not_damaged(void **state)
{
    (void)state;
    static const uint8_t text[] = "hello\n";
    lzma_options_lzma opt;
    assert_false(lzma_lzma_preset(&opt, 1));
    opt.dict_size = 1u << 20;
    lzma_filter chain[] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, NULL}};
    uint8_t xz[256];
    size_t len = 0;
    assert_int_equal(lzma_stream_buffer_encode(chain, LZMA_CHECK_CRC32, NULL, text,
                                               sizeof text - 1, xz, &len, sizeof xz),
                     LZMA_OK);
    /* The block header follows the 12-byte stream header: its size byte,
     * flags, sizes, then the filter flags 0x21 (LZMA2), 1 (props size) and
     * the dictionary byte; a CRC32 of the rest ends it. */
    uint8_t *block = xz + 12;
    size_t header = ((size_t)block[0] + 1) * 4;
    uint8_t *lzma2 = memchr(block + 2, 0x21, header - 2);
    assert_non_null(lzma2);
    assert_int_equal(lzma2[1], 1);
    lzma2[2] = 34; /* 2 << (34 / 2 + 11): 512 MiB */
    uint32_t crc = lzma_crc32(block, header - 4, 0);
    for (int i = 0; i < 4; i++)
        block[header - 4 + i] = (uint8_t)(crc >> (8 * i));
    uint8_t out[16];
    bool failed;
    size_t got = inflate_fed(SL_UNZIP_XZ, xz, len, (const size_t[]){len}, 1, sizeof out, out,
                             sizeof out, &failed);
    assert_true(failed);
    assert_int_equal(got, 0);
    char want[64];
    snprintf(want, sizeof want, "more than %d MiB of memory", (int)(SL_UNZIP_XZ_MEMLIMIT >> 20));
    const char *why = sl_last_error();
    if (!strstr(why, "cannot read the xz data at byte") || !strstr(why, want) ||
        strstr(why, "damaged"))
        fail_msg("%s", why);
}

/* The magic says the kind; bzip2's needs its block size digit, since a
 * plain tar's first bytes are its first member's name ("BZh.txt"). */
static void the_magic_says_the_kind(void **state)
{
    (void)state;
    sl_unzip_kind k;
    assert_true(sl_unzip_sniff((const uint8_t *)"\x1f\x8b\x08", 3, &k) && k == SL_UNZIP_GZIP);
    assert_true(sl_unzip_sniff((const uint8_t *)"\x28\xb5\x2f\xfd", 4, &k) && k == SL_UNZIP_ZSTD);
    assert_true(sl_unzip_sniff((const uint8_t *)"\x50\x2a\x4d\x18", 4, &k) && k == SL_UNZIP_ZSTD);
    assert_true(sl_unzip_sniff((const uint8_t *)"\xfd" "7zXZ", 6, &k) && k == SL_UNZIP_XZ);
    assert_true(sl_unzip_sniff((const uint8_t *)"BZh9", 4, &k) && k == SL_UNZIP_BZIP2);
    assert_false(sl_unzip_sniff((const uint8_t *)"BZh.txt", 7, &k));
    assert_false(sl_unzip_sniff((const uint8_t *)"BZh", 3, &k));
    assert_false(sl_unzip_sniff((const uint8_t *)"{\"image\"", 8, &k));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_magic_says_the_kind),
        cmocka_unit_test(xz_streams_with_padding_between_read_as_one),
        cmocka_unit_test(a_gzip_members_header_split_across_reads),
        cmocka_unit_test(a_zstd_frame_ending_at_a_read_and_filling_the_output),
        cmocka_unit_test(a_zstd_window_past_the_bound_is_refused_not_damaged),
        cmocka_unit_test(an_xz_window_past_the_cap_is_refused_not_damaged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
