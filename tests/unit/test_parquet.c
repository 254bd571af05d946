/* Unit tests: io/thrift_compact.c (known bytes, round trips, corrupt input),
 * the RLE/bit-packed hybrid and the deprecated BIT_PACKED levels in
 * io/parquet_format.c (the spec's byte vectors),
 * io/parquet_delta.c (the spec's examples, truncations), the read-only
 * codecs (LZ4 framed by Hadoop or bare, brotli), and io/parquet_write.c ->
 * io/parquet_read.c round trips and errors. Files of the 2.x encodings that
 * pyarrow writes are read in tests/e2e/test_parquet.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>

#include <brotli/encode.h>
#include <lz4.h>

#include "core/alloc.h"
#include "core/decimal.h"
#include "core/json.h"
#include "io/columns.h"
#include "io/parquet_delta.h"
#include "io/parquet_format.h"
#include "io/parquet_json.h"
#include "io/parquet_read.h"
#include "io/parquet_shape.h"
#include "io/parquet_write.h"
#include "io/thrift_compact.h"
#include "test_util.h"

#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

static void assert_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len)
{
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
}

/* ---- Thrift compact ---------------------------------------------------- */

static void thrift_varint_zigzag_round_trip(void **state)
{
    const int64_t values[] = {0, 1, -1, 63, -64, 64, 127, 128, 300, -300, INT32_MAX, INT32_MIN,
                              INT64_MAX, INT64_MIN, 1LL << 40, -(1LL << 40)};
    sl_tc_writer w;
    sl_tc_writer_init(&w);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        sl_tc_write_i64(&w, values[i]);
    assert_false(w.err);
    sl_tc_reader r;
    sl_tc_reader_init(&r, w.buf, w.len);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        assert_true(sl_tc_read_i64(&r) == values[i]);
    assert_false(r.err);
    assert_int_equal(sl_tc_reader_pos(&r), w.len);
    sl_tc_writer_free(&w);

    /* Known encodings: zigzag(0)=0, (-1)=1, (1)=2, (-64)=127, (64)=128 -> 80 01. */
    sl_tc_writer_init(&w);
    sl_tc_write_i64(&w, 0);
    sl_tc_write_i64(&w, -1);
    sl_tc_write_i64(&w, 1);
    sl_tc_write_i64(&w, -64);
    sl_tc_write_i64(&w, 64);
    assert_bytes(w.buf, w.len, BYTES(0x00, 0x01, 0x02, 0x7F, 0x80, 0x01));
    sl_tc_writer_free(&w);
}

static void thrift_field_headers_known_bytes(void **state)
{
    sl_tc_writer w;
    sl_tc_writer_init(&w);
    sl_tc_write_struct_begin(&w);
    sl_tc_write_i32_field(&w, 1, 3);      /* delta 1, i32: 0x15, zigzag 3 = 6 */
    sl_tc_write_bool_field(&w, 2, true);  /* delta 1, true: 0x11 */
    sl_tc_write_bool_field(&w, 3, false); /* delta 1, false: 0x12 */
    sl_tc_write_i64_field(&w, 20, 5);     /* delta 17 > 15: long form 0x06, zigzag(20)=40, then 10 */
    sl_tc_write_binary_field(&w, 21, "ab", 2); /* delta 1, binary: 0x18, len 2, 'a' 'b' */
    sl_tc_write_field(&w, SL_TC_LIST, 22);     /* 0x19, list of 3 i32: 0x35 */
    sl_tc_write_list_begin(&w, SL_TC_I32, 3);
    sl_tc_write_i64(&w, 1);
    sl_tc_write_i64(&w, 2);
    sl_tc_write_i64(&w, 3);
    sl_tc_write_field(&w, SL_TC_STRUCT, 24);   /* delta 2: 0x2C, nested struct */
    sl_tc_write_struct_begin(&w);
    sl_tc_write_i32_field(&w, 1, -1);          /* nested ids restart: 0x15 0x01 */
    sl_tc_write_struct_end(&w);                /* 0x00 */
    sl_tc_write_i32_field(&w, 25, 0);          /* delta from 24 (not from 1): 0x15 0x00 */
    sl_tc_write_struct_end(&w);
    assert_false(w.err);
    assert_bytes(w.buf, w.len,
                 BYTES(0x15, 0x06, 0x11, 0x12, 0x06, 0x28, 0x0A, 0x18, 0x02, 'a', 'b', 0x19, 0x35, 0x02, 0x04,
                       0x06, 0x2C, 0x15, 0x01, 0x00, 0x15, 0x00, 0x00));
    sl_tc_writer_free(&w);
}

static void thrift_long_list_header(void **state)
{
    sl_tc_writer w;
    sl_tc_writer_init(&w);
    sl_tc_write_list_begin(&w, SL_TC_BINARY, 20);
    sl_tc_write_list_begin(&w, SL_TC_STRUCT, 14);
    assert_bytes(w.buf, w.len, BYTES(0xF8, 0x14, 0xEC));
    sl_tc_writer_free(&w);
}

static void thrift_struct_round_trip_and_skip(void **state)
{
    sl_tc_writer w;
    sl_tc_writer_init(&w);
    sl_tc_write_struct_begin(&w);
    sl_tc_write_i32_field(&w, 1, 42);
    sl_tc_write_field(&w, SL_TC_STRUCT, 2); /* unknown to the reader below: skipped */
    sl_tc_write_struct_begin(&w);
    sl_tc_write_string_field(&w, 1, "skip me");
    sl_tc_write_field(&w, SL_TC_LIST, 2);
    sl_tc_write_list_begin(&w, SL_TC_TRUE, 2); /* bool elements, one byte each */
    sl_tc_write_byte(&w, 1);
    sl_tc_write_byte(&w, 2);
    sl_tc_write_field(&w, SL_TC_DOUBLE, 3);
    sl_tc_write_double(&w, 2.5);
    sl_tc_write_struct_end(&w);
    sl_tc_write_field(&w, SL_TC_LIST, 3);
    sl_tc_write_list_begin(&w, SL_TC_BINARY, 16);
    for (int i = 0; i < 16; i++)
        sl_tc_write_binary(&w, "xyz", (size_t)(i % 4));
    sl_tc_write_i64_field(&w, 300, -7); /* long-form id */
    sl_tc_write_struct_end(&w);
    assert_false(w.err);

    sl_tc_reader r;
    sl_tc_reader_init(&r, w.buf, w.len);
    sl_tc_read_struct_begin(&r);
    int type, et;
    int16_t id;
    int seen = 0;
    while (sl_tc_read_field(&r, &type, &id)) {
        if (id == 1) {
            assert_int_equal(type, SL_TC_I32);
            assert_int_equal(sl_tc_read_i32(&r), 42);
            seen |= 1;
        } else if (id == 3) {
            assert_int_equal(type, SL_TC_LIST);
            assert_int_equal(sl_tc_read_list_begin(&r, &et), 16);
            assert_int_equal(et, SL_TC_BINARY);
            for (int i = 0; i < 16; i++) {
                size_t len;
                const uint8_t *s = sl_tc_read_binary(&r, &len);
                assert_int_equal(len, (size_t)(i % 4));
                assert_memory_equal(s, "xyz", len);
            }
            seen |= 2;
        } else if (id == 300) {
            assert_int_equal(type, SL_TC_I64);
            assert_int_equal(sl_tc_read_i64(&r), -7);
            seen |= 4;
        } else {
            assert_int_equal(id, 2);
            sl_tc_skip(&r, type);
        }
    }
    sl_tc_read_struct_end(&r);
    assert_false(r.err);
    assert_int_equal(seen, 7);
    assert_int_equal(sl_tc_reader_pos(&r), w.len);

    /* Every truncation of the input is an error, never a crash or a hang. */
    for (size_t cut = 0; cut < w.len; cut++) {
        sl_tc_reader_init(&r, w.buf, cut);
        sl_tc_skip(&r, SL_TC_STRUCT);
        assert_true(r.err);
    }
    sl_tc_writer_free(&w);
}

static void thrift_corrupt_input(void **state)
{
    sl_tc_reader r;
    int et;
    /* A list claiming more elements than bytes remain. */
    sl_tc_reader_init(&r, BYTES(0xF5, 0xFF, 0xFF, 0xFF, 0x7F, 0x00));
    assert_int_equal(sl_tc_read_list_begin(&r, &et), 0);
    assert_true(r.err);
    /* A varint longer than 64 bits. */
    sl_tc_reader_init(&r, BYTES(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F));
    sl_tc_read_varint(&r);
    assert_true(r.err);
    /* An i32 out of range. */
    sl_tc_reader_init(&r, BYTES(0x80, 0x80, 0x80, 0x80, 0x20));
    sl_tc_read_i32(&r);
    assert_true(r.err);
    /* A binary longer than its input. */
    sl_tc_reader_init(&r, BYTES(0x05, 'a', 'b'));
    size_t len;
    assert_null(sl_tc_read_binary(&r, &len));
    assert_true(r.err);
    /* Structs nested past the depth limit. */
    uint8_t deep[200];
    for (size_t i = 0; i < sizeof deep; i++)
        deep[i] = 0x1C; /* field delta 1, struct */
    sl_tc_reader_init(&r, deep, sizeof deep);
    sl_tc_skip(&r, SL_TC_STRUCT);
    assert_true(r.err);
    /* Lists nested in lists past the depth limit. */
    for (size_t i = 0; i < sizeof deep; i++)
        deep[i] = 0x19; /* one element of type list */
    sl_tc_reader_init(&r, deep, sizeof deep);
    sl_tc_skip(&r, SL_TC_LIST);
    assert_true(r.err);
}

/* ---- RLE / bit-packed hybrid ------------------------------------------- */

static void rle_spec_vectors(void **state)
{
    /* The spec's bit-packing example: 0..7 at width 3 -> 10001000 11000110 11111010. */
    const uint32_t seq[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    sl_buf b = {0};
    assert_true(sl_rle_encode(&b, seq, 8, 3));
    assert_bytes(b.data, b.len, BYTES(0x03, 0x88, 0xC6, 0xFA));
    uint32_t out[100];
    assert_true(sl_rle_decode(b.data, b.len, 3, out, 8));
    assert_memory_equal(out, seq, sizeof seq);

    /* An RLE run: 100 x 4 at width 3 -> header 200 (varint C8 01), value 04. */
    uint32_t fours[100];
    for (int i = 0; i < 100; i++)
        fours[i] = 4;
    b.len = 0;
    assert_true(sl_rle_encode(&b, fours, 100, 3));
    assert_bytes(b.data, b.len, BYTES(0xC8, 0x01, 0x04));
    memset(out, 0, sizeof out);
    assert_true(sl_rle_decode(b.data, b.len, 3, out, 100));
    assert_memory_equal(out, fours, sizeof fours);

    /* Definition levels as writers emit them: width 1, 1 0 1 1 0 0 1 0 then
     * ten 1s -> one bit-packed group (0x4D), then an RLE run of 10. */
    const uint32_t defs[18] = {1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    b.len = 0;
    assert_true(sl_rle_encode(&b, defs, 18, 1));
    assert_bytes(b.data, b.len, BYTES(0x03, 0x4D, 0x14, 0x01));
    assert_true(sl_rle_decode(b.data, b.len, 1, out, 18));
    assert_memory_equal(out, defs, sizeof defs);

    /* Wider values: the RLE value takes ceil(width / 8) bytes, little-endian. */
    assert_true(sl_rle_decode(BYTES(0x10, 0x34, 0x12), 13, out, 8));
    for (int i = 0; i < 8; i++)
        assert_int_equal(out[i], 0x1234);
    sl_buf_free(&b);
}

/* The deprecated BIT_PACKED levels, most significant bit first: the
 * spec's example (0..7 at width 3 -> 00000101 00111001 01110111), read in
 * pieces that split values across bytes; its bytes are not the hybrid's. */
static void bitpacked_spec_vectors(void **state)
{
    const uint32_t seq[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    uint32_t out[16];
    sl_rle_stream s;
    assert_true(sl_bitpacked_stream_init(&s, BYTES(0x05, 0x39, 0x77), 3));
    assert_true(sl_rle_stream_read(&s, out, 3));
    assert_true(sl_rle_stream_read(&s, out + 3, 5));
    assert_memory_equal(out, seq, sizeof seq);
    assert_false(sl_rle_stream_read(&s, out, 1)); /* 24 bits hold 8 values, no more */

    /* Definition levels at width 1: 1 0 1 1 0 0 1 0 | 1 1 1 (then padding). */
    const uint32_t defs[11] = {1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1};
    assert_true(sl_bitpacked_stream_init(&s, BYTES(0xB2, 0xE0), 1));
    assert_true(sl_rle_stream_read(&s, out, 11));
    assert_memory_equal(out, defs, sizeof defs);

    /* Width 9 across bytes (0x1FF, 0x001, 0x100): 11111111 10000000 01100000 000.... */
    assert_true(sl_bitpacked_stream_init(&s, BYTES(0xFF, 0x80, 0x60, 0x00), 9));
    assert_true(sl_rle_stream_read(&s, out, 3));
    assert_int_equal(out[0], 0x1FF);
    assert_int_equal(out[1], 0x001);
    assert_int_equal(out[2], 0x100);

    /* Too few bytes for the values asked for. */
    assert_true(sl_bitpacked_stream_init(&s, BYTES(0x05, 0x39), 3));
    assert_false(sl_rle_stream_read(&s, out, 8));
    assert_false(sl_bitpacked_stream_init(&s, BYTES(0x00), 33));

    sl_rle_stream_repeat(&s, 2, 5);
    assert_true(sl_rle_stream_read(&s, out, 5));
    for (int i = 0; i < 5; i++)
        assert_int_equal(out[i], 2);
    assert_false(sl_rle_stream_read(&s, out, 1));
}

/* The examples of parquet-format's Encodings.md, DELTA_BINARY_PACKED. */
static void delta_spec_vectors(void **state)
{
    (void)state;
    /* 1 2 3 4 5: block 128 of 4 miniblocks, 5 values, first 1; min delta 1,
     * every width 0 (no miniblock bytes). */
    const uint8_t ones[] = {0x80, 0x01, 0x04, 0x05, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00};
    sl_delta_stream s;
    const uint8_t *end = NULL;
    int64_t out[16];
    assert_true(sl_delta_init(&s, ones, sizeof ones));
    assert_int_equal(sl_delta_left(&s), 5);
    assert_true(sl_delta_end(&s, &end));
    assert_ptr_equal(end, ones + sizeof ones);
    assert_true(sl_delta_read(&s, out, 5));
    for (int i = 0; i < 5; i++)
        assert_int_equal(out[i], i + 1);
    assert_false(sl_delta_read(&s, out, 1)); /* no sixth */

    /* 7 5 3 1 2 3 4 5: deltas -2 -2 -2 1 1 1 1, min -2, so 0 0 0 3 3 3 3 at
     * width 2 in the first miniblock (32 values: 8 bytes, padded). */
    const uint8_t ramp[] = {0x80, 0x01, 0x04, 0x08, 0x0e, 0x03, 0x02, 0x00, 0x00, 0x00,
                            0xc0, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    const int64_t want[] = {7, 5, 3, 1, 2, 3, 4, 5};
    assert_true(sl_delta_init(&s, ramp, sizeof ramp));
    assert_true(sl_delta_end(&s, &end));
    assert_ptr_equal(end, ramp + sizeof ramp);
    assert_true(sl_delta_read(&s, out, 3)); /* read in pieces */
    assert_true(sl_delta_end(&s, &end));    /* the end does not move as values are read */
    assert_ptr_equal(end, ramp + sizeof ramp);
    assert_true(sl_delta_read(&s, out + 3, 5));
    assert_memory_equal(out, want, sizeof want);

    /* Cut short: the values need the first 12 bytes, the end all 18. */
    for (size_t len = 0; len < sizeof ramp; len++) {
        bool whole = sl_delta_init(&s, ramp, len) && sl_delta_end(&s, &end);
        assert_false(whole);
        bool values = sl_delta_init(&s, ramp, len) && sl_delta_read(&s, out, 8);
        assert_true(values == (len >= 12));
    }

    /* One value: the header alone, no block. */
    const uint8_t one[] = {0x80, 0x01, 0x04, 0x01, 0x07};
    assert_true(sl_delta_init(&s, one, sizeof one));
    assert_true(sl_delta_end(&s, &end));
    assert_ptr_equal(end, one + sizeof one);
    assert_true(sl_delta_read(&s, out, 1));
    assert_int_equal(out[0], -4);

    /* Deltas wrap like the writer's: INT64_MAX then INT64_MIN is a delta of
     * 1 (min 1, width 0); -1 then INT64_MAX has min delta INT64_MIN. */
    const uint8_t wrap[] = {0x80, 0x01, 0x04, 0x02, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                            0x02, 0x00, 0x00, 0x00, 0x00};
    assert_true(sl_delta_init(&s, wrap, sizeof wrap));
    assert_true(sl_delta_read(&s, out, 2));
    assert_true(out[0] == INT64_MAX && out[1] == INT64_MIN);

    /* Headers and blocks that cannot be: a block size not a multiple of
     * 128, miniblocks of other than multiples of 32 values, a width past 64,
     * a varint that never ends. */
    assert_false(sl_delta_init(&s, BYTES(0x64, 0x04, 0x01, 0x00)));
    assert_false(sl_delta_init(&s, BYTES(0x80, 0x01, 0x03, 0x01, 0x00)));
    assert_false(sl_delta_init(&s, BYTES(0x80, 0x01, 0x08, 0x01, 0x00)));
    assert_false(sl_delta_init(&s, BYTES(0x80, 0x01, 0x00, 0x01, 0x00)));
    assert_false(sl_delta_init(&s, BYTES(0x80, 0x01, 0x04, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                         0x80, 0x80, 0x80, 0x80)));
    const uint8_t wide[] = {0x80, 0x01, 0x04, 0x02, 0x00, 0x00, 0x41, 0x00, 0x00, 0x00};
    assert_true(sl_delta_init(&s, wide, sizeof wide));
    assert_false(sl_delta_read(&s, out, 2));
    /* A width an unused miniblock gives may be anything (the spec says so). */
    const uint8_t unused[] = {0x80, 0x01, 0x04, 0x02, 0x00, 0x02, 0x00, 0xff, 0xff, 0xff};
    assert_true(sl_delta_init(&s, unused, sizeof unused));
    assert_true(sl_delta_end(&s, &end));
    assert_true(sl_delta_read(&s, out, 2));
    assert_true(out[0] == 0 && out[1] == 1);
}

static void byte_stream_split_spreads_bytes(void **state)
{
    (void)state;
    /* Three 4-byte values 0x04030201, 0x14131211, 0x24232221: their first
     * bytes, then their second bytes, ... */
    const uint8_t data[] = {0x01, 0x11, 0x21, 0x02, 0x12, 0x22, 0x03, 0x13, 0x23, 0x04, 0x14, 0x24};
    uint32_t v[3];
    sl_byte_stream_split_read(data, 3, 4, 0, 3, (uint8_t *)v);
    assert_true(v[0] == 0x04030201 && v[1] == 0x14131211 && v[2] == 0x24232221);
    sl_byte_stream_split_read(data, 3, 4, 2, 1, (uint8_t *)v);
    assert_int_equal(v[0], 0x24232221);
}

static void lz4_and_brotli_pages(void **state)
{
    (void)state;
    char text[5000];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = "sluice reads parquet pages "[i % 27] + (char)(i / 1000);
    char raw[LZ4_COMPRESSBOUND(sizeof text)];
    int n = LZ4_compress_default(text, raw, (int)sizeof text, (int)sizeof raw);
    assert_true(n > 0 && n < (int)sizeof text);
    sl_buf out = {0};
    assert_null(sl_pq_decompress(SL_PQ_LZ4_RAW, (const uint8_t *)raw, (size_t)n, sizeof text, &out, NULL));
    assert_int_equal(out.len, sizeof text);
    assert_memory_equal(out.data, text, sizeof text);
    /* A bare block under the old LZ4 codec (older parquet-cpp) reads too. */
    assert_null(sl_pq_decompress(SL_PQ_LZ4, (const uint8_t *)raw, (size_t)n, sizeof text, &out, NULL));
    assert_memory_equal(out.data, text, sizeof text);

    /* Hadoop's framing, as parquet-java writes LZ4: two blocks, each a
     * big-endian decompressed and compressed length before its data. */
    uint8_t framed[2 * (8 + LZ4_COMPRESSBOUND(2500))];
    size_t at = 0;
    for (int half = 0; half < 2; half++) {
        int c = LZ4_compress_default(text + half * 2500, (char *)framed + at + 8, 2500, LZ4_COMPRESSBOUND(2500));
        assert_true(c > 0);
        const uint8_t head[8] = {0, 0, 2500 >> 8, 2500 & 0xff, 0, 0, (uint8_t)(c >> 8), (uint8_t)c};
        memcpy(framed + at, head, 8);
        at += 8 + (size_t)c;
    }
    assert_null(sl_pq_decompress(SL_PQ_LZ4, framed, at, sizeof text, &out, NULL));
    assert_int_equal(out.len, sizeof text);
    assert_memory_equal(out.data, text, sizeof text);
    /* Lies: a size the block cannot hold, one past what 256x can make, data
     * cut short. */
    assert_non_null(sl_pq_decompress(SL_PQ_LZ4_RAW, (const uint8_t *)raw, (size_t)n, sizeof text + 1, &out, NULL));
    assert_non_null(sl_pq_decompress(SL_PQ_LZ4_RAW, (const uint8_t *)raw, 8, 1u << 30, &out, NULL));
    assert_true(out.cap < (1u << 20)); /* refused before reserving */
    assert_non_null(sl_pq_decompress(SL_PQ_LZ4_RAW, (const uint8_t *)raw, (size_t)n / 2, sizeof text, &out, NULL));
    assert_non_null(sl_pq_decompress(SL_PQ_LZ4, framed, at - 9, sizeof text, &out, NULL));

    uint8_t br[6000];
    size_t bn = sizeof br;
    assert_true(BrotliEncoderCompress(5, 22, BROTLI_MODE_TEXT, sizeof text, (const uint8_t *)text, &bn, br));
    assert_null(sl_pq_decompress(SL_PQ_BROTLI, br, bn, sizeof text, &out, NULL));
    assert_int_equal(out.len, sizeof text);
    assert_memory_equal(out.data, text, sizeof text);
    assert_non_null(sl_pq_decompress(SL_PQ_BROTLI, br, bn, sizeof text - 1, &out, NULL));
    assert_non_null(sl_pq_decompress(SL_PQ_BROTLI, br, bn, sizeof text + 1, &out, NULL));
    assert_non_null(sl_pq_decompress(SL_PQ_BROTLI, br, bn / 2, sizeof text, &out, NULL));
    /* A brotli bomb costs what its header claims, not what it expands to:
     * 64 MiB of zeros claimed as 100 bytes stops at 100. */
    size_t big = 64u << 20, bomb_n = 1u << 20;
    uint8_t *zeros = sl_calloc(1, big), *bomb = sl_malloc(bomb_n);
    assert_true(BrotliEncoderCompress(5, 22, BROTLI_MODE_GENERIC, big, zeros, &bomb_n, bomb));
    assert_true(bomb_n < 100000);
    sl_free(zeros);
    sl_buf small = {0};
    const char *err = sl_pq_decompress(SL_PQ_BROTLI, bomb, bomb_n, 100, &small, NULL);
    assert_non_null(err);
    assert_non_null(strstr(err, "longer than the page header says"));
    assert_true(small.cap <= 64u << 10);
    sl_buf_free(&small);
    sl_free(bomb);
    sl_buf_free(&out);
}

static void rle_round_trip_and_truncation(void **state)
{
    uint32_t in[1000], out[1000];
    unsigned seed = 7;
    for (int width = 0; width <= 32; width += (width < 4 ? 1 : 7)) {
        uint64_t mask = width == 32 ? 0xFFFFFFFFu : ((uint64_t)1 << width) - 1;
        for (int i = 0; i < 1000; i++) {
            seed = seed * 1103515245u + 12345u;
            /* runs and noise mixed */
            in[i] = (uint32_t)(((i / 50) % 2 ? (uint64_t)(i / 100) : seed >> 3) & mask);
        }
        sl_buf b = {0};
        assert_true(sl_rle_encode(&b, in, 1000, width));
        memset(out, 0xAB, sizeof out);
        assert_true(sl_rle_decode(b.data, b.len, width, out, 1000));
        assert_memory_equal(out, in, sizeof in);
        if (width > 0) /* too little input for 1000 values */
            assert_false(sl_rle_decode(b.data, b.len / 2, width, out, 1000));
        sl_buf_free(&b);
    }
    assert_false(sl_rle_decode(BYTES(0x02, 0x01), 33, out, 1));
    /* An RLE value wider than the bit width is corrupt. */
    assert_false(sl_rle_decode(BYTES(0x02, 0x02), 1, out, 1));
}

/* ---- writer -> reader -------------------------------------------------- */

static const sl_pq_column_def COLS[] = {
    {"s", SL_PQ_STRING, true, NULL}, {"i", SL_PQ_INT64, false, NULL}, {"d", SL_PQ_DOUBLE, true, NULL},
    {"b", SL_PQ_BOOL, true, NULL},   {"x", SL_PQ_BINARY, false, NULL},
};
#define NCOLS 5

/* Row n's values, nulls at fixed strides. */
static void make_row(int64_t n, sl_pq_value v[NCOLS], char *sbuf, uint8_t *xbuf)
{
    memset(v, 0, NCOLS * sizeof *v);
    snprintf(sbuf, 64, "row %lld ✓", (long long)n);
    v[0].is_null = n % 7 == 3;
    v[0].ptr = sbuf;
    v[0].len = n % 11 == 0 ? 0 : strlen(sbuf);
    v[1].i64 = n % 2 ? INT64_MAX - n : INT64_MIN + n;
    v[2].is_null = n % 5 == 1;
    v[2].f64 = (double)n / 3.0;
    v[3].is_null = n % 13 == 2;
    v[3].b = n % 3 == 0;
    size_t xl = (size_t)(n % 300);
    for (size_t k = 0; k < xl; k++)
        xbuf[k] = (uint8_t)(n + (int64_t)k);
    v[4].ptr = xbuf;
    v[4].len = xl;
}

static char *write_file(const char *dir, sl_pq_codec codec, int64_t rows, int64_t rg_bytes, int64_t *num_rgs)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/t-%d.parquet", dir, (int)codec);
    sl_pq_writer_params p = sl_pq_writer_default_params();
    p.codec = codec;
    p.row_group_bytes = rg_bytes;
    p.page_bytes = 4096; /* several pages per chunk */
    sl_pq_writer *w;
    assert_int_equal(sl_pq_writer_open(path, COLS, NCOLS, &p, &w), SL_OK);
    assert_int_equal(sl_pq_writer_set_metadata(w, "sluice.version", "old"), SL_OK);
    assert_int_equal(sl_pq_writer_set_metadata(w, "sluice.version", "0.1.0"), SL_OK);
    sl_pq_value v[NCOLS];
    char s[64];
    uint8_t x[300];
    for (int64_t n = 0; n < rows; n++) {
        make_row(n, v, s, x);
        assert_int_equal(sl_pq_writer_append(w, v), SL_OK);
    }
    assert_int_equal(sl_pq_writer_close(w), SL_OK);
    *num_rgs = sl_pq_writer_num_row_groups(w);
    assert_int_equal(sl_pq_writer_num_rows(w), rows);
    sl_pq_writer_free(w);
    return path;
}

/* Reads `path` back with the reader's limits `p` (NULL: defaults) and checks
 * every value, and that batches follow each other within those limits. */
static void check_file_with(const char *path, int64_t rows, int64_t num_rgs, const sl_pq_reader_params *p)
{
    sl_pq_reader *r;
    assert_int_equal(sl_pq_reader_open(path, p, &r), SL_OK);
    assert_int_equal(sl_pq_reader_num_rows(r), rows);
    assert_int_equal(sl_pq_reader_num_row_groups(r), (size_t)num_rgs);
    assert_string_equal(sl_pq_reader_metadata(r, "sluice.version"), "0.1.0");
    assert_null(sl_pq_reader_metadata(r, "absent"));
    assert_non_null(strstr(sl_pq_reader_created_by(r), "sluice"));
    assert_int_equal(sl_pq_reader_num_columns(r), NCOLS);
    for (size_t c = 0; c < NCOLS; c++) {
        assert_string_equal(sl_pq_reader_column(r, c)->name, COLS[c].name);
        assert_int_equal(sl_pq_reader_column(r, c)->type, COLS[c].type);
        assert_int_equal(sl_pq_reader_column(r, c)->nullable, COLS[c].nullable);
    }
    int64_t n = 0, in_rg = 0;
    size_t rg = 0;
    const sl_pq_batch *b;
    sl_pq_value v[NCOLS];
    char s[64];
    uint8_t x[300];
    sl_pq_reader_params lim = p ? *p : sl_pq_reader_default_params();
    for (;;) {
        assert_int_equal(sl_pq_reader_next(r, &b), SL_OK);
        if (!b)
            break;
        assert_int_equal(b->num_columns, NCOLS);
        assert_true(b->num_rows >= 1 && b->num_rows <= (int64_t)lim.batch_rows);
        if (b->row_group != rg) {
            assert_int_equal(b->row_group, rg + 1);
            rg = b->row_group;
            in_rg = 0;
        }
        assert_int_equal(b->first_row, in_rg);
        in_rg += b->num_rows;
        const sl_pq_vector *col = b->columns;
        /* Byte arrays stay within the batch's bytes, unless one row is more. */
        for (int c = 0; c < NCOLS; c += 4)
            assert_true(col[c].offsets[b->num_rows] <= (int64_t)lim.batch_bytes || b->num_rows == 1);
        for (int64_t i = 0; i < b->num_rows; i++, n++) {
            make_row(n, v, s, x);
            for (int c = 0; c < NCOLS; c++)
                assert_int_equal(col[c].valid[i], !v[c].is_null);
            if (!v[0].is_null) {
                assert_int_equal(col[0].offsets[i + 1] - col[0].offsets[i], v[0].len);
                assert_memory_equal(col[0].data + col[0].offsets[i], v[0].ptr, v[0].len);
            }
            assert_true(col[1].i64[i] == v[1].i64);
            if (!v[2].is_null)
                assert_true(col[2].f64[i] == v[2].f64);
            if (!v[3].is_null)
                assert_int_equal(col[3].b[i], v[3].b);
            assert_int_equal(col[4].offsets[i + 1] - col[4].offsets[i], v[4].len);
            if (v[4].len)
                assert_memory_equal(col[4].data + col[4].offsets[i], v[4].ptr, v[4].len);
        }
    }
    assert_int_equal(n, rows);

    /* Projection: only "x" then "b", in that order; restarts at row group 0. */
    const char *names[] = {"x", "b"};
    assert_int_equal(sl_pq_reader_select(r, names, 2), SL_OK);
    assert_int_equal(sl_pq_reader_next(r, &b), SL_OK);
    if (rows > 0) {
        assert_non_null(b);
        assert_int_equal(b->row_group, 0);
        assert_int_equal(b->num_columns, 2);
        assert_string_equal(b->columns[0].info->name, "x");
        assert_non_null(b->columns[0].offsets);
        assert_non_null(b->columns[1].b);
        assert_null(b->columns[1].i64);
    } else {
        assert_null(b);
    }
    const char *unknown[] = {"nope"};
    assert_int_equal(sl_pq_reader_select(r, unknown, 1), SL_ERR_NOT_FOUND);
    assert_non_null(strstr(sl_last_error(), "nope"));
    assert_non_null(strstr(sl_last_error(), path));
    sl_pq_reader_free(r);
}

static void check_file(const char *path, int64_t rows, int64_t num_rgs)
{
    check_file_with(path, rows, num_rgs, NULL);
}

static void round_trip_every_codec(void **state)
{
    char *dir = tu_tmpdir();
    const sl_pq_codec codecs[] = {SL_PQ_UNCOMPRESSED, SL_PQ_SNAPPY, SL_PQ_GZIP, SL_PQ_ZSTD};
    for (size_t k = 0; k < 4; k++) {
        int64_t rgs;
        /* ~200 bytes a row: a 64 KiB target gives several row groups. */
        char *path = write_file(dir, codecs[k], 3000, 64 << 10, &rgs);
        assert_true(rgs >= 5);
        check_file(path, 3000, rgs);
        /* Several batches per row group, cut by rows or by bytes; batches
         * that end inside a page go on from there. */
        sl_pq_reader_params p = sl_pq_reader_default_params();
        p.batch_rows = 37;
        check_file_with(path, 3000, rgs, &p);
        p.batch_rows = 100000;
        p.batch_bytes = 1000;
        check_file_with(path, 3000, rgs, &p);
        p.batch_bytes = 1; /* every batch one row */
        check_file_with(path, 3000, rgs, &p);
    }
    tu_rmtree(dir);
}

static void empty_file_and_one_row_group(void **state)
{
    char *dir = tu_tmpdir();
    int64_t rgs;
    char *path = write_file(dir, SL_PQ_ZSTD, 0, 64 << 20, &rgs);
    assert_int_equal(rgs, 0);
    check_file(path, 0, 0);
    path = write_file(dir, SL_PQ_SNAPPY, 100, 64 << 20, &rgs);
    assert_int_equal(rgs, 1);
    check_file(path, 100, 1);
    tu_rmtree(dir);
}

static void writer_rejects_bad_rows(void **state)
{
    char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/bad.parquet", dir);
    sl_pq_writer *w;
    assert_int_equal(sl_pq_writer_open(path, COLS, NCOLS, NULL, &w), SL_OK);
    sl_pq_value v[NCOLS];
    char s[64];
    uint8_t x[300];
    make_row(0, v, s, x);
    v[1].is_null = true; /* "i" is required */
    assert_int_equal(sl_pq_writer_append(w, v), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'i'"));
    make_row(0, v, s, x);
    v[0].ptr = "\xff\xfe";
    v[0].len = 2;
    v[0].is_null = false;
    assert_int_equal(sl_pq_writer_append(w, v), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "UTF-8"));
    make_row(1, v, s, x);
    assert_int_equal(sl_pq_writer_append(w, v), SL_OK); /* still usable */
    assert_int_equal(sl_pq_writer_num_rows(w), 1);
    assert_int_equal(access(path, F_OK), 0);
    sl_pq_writer_free(w); /* not closed: the partial file goes */
    assert_int_not_equal(access(path, F_OK), 0);

    const sl_pq_column_def dup[] = {{"a", SL_PQ_INT64, false, NULL}, {"a", SL_PQ_BOOL, false, NULL}};
    assert_int_equal(sl_pq_writer_open(path, dup, 2, NULL, &w), SL_ERR_INVALID_ARG);
    assert_null(w);
    const sl_pq_column_def int32col[] = {{"a", SL_PQ_INT32, false, NULL}};
    assert_int_equal(sl_pq_writer_open(path, int32col, 1, NULL, &w), SL_ERR_INVALID_ARG);
    snprintf(path, sizeof path, "%s/no/such/dir/x.parquet", dir);
    assert_int_equal(sl_pq_writer_open(path, COLS, NCOLS, NULL, &w), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), path));
    tu_rmtree(dir);
}

/* One row of `n` incompressible bytes in a binary column, each row its
 * own page, under `codec`, with pages limited to LIMIT bytes
 * (sl_pq_writer_test_page_limit, in place of the format's 2 GiB): the
 * status of the row's append and, when that passed, of the close. */
enum { PAGE_LIMIT = 4096 };

static char page_error[512]; /* write_one_page's error message */

static sl_status write_one_page(const char *dir, sl_pq_codec codec, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/page.parquet", dir);
    static const sl_pq_column_def col[] = {{"b", SL_PQ_BINARY, false, NULL}};
    sl_pq_writer_params p = sl_pq_writer_default_params();
    p.codec = codec;
    p.page_bytes = 1; /* a page per row: the append flushes it */
    uint8_t *bytes = malloc(n);
    assert_non_null(bytes);
    uint64_t x = 0x9e3779b97f4a7c15u; /* xorshift: no codec shrinks it */
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes[i] = (uint8_t)x;
    }
    sl_pq_writer *w;
    assert_int_equal(sl_pq_writer_open(path, col, 1, &p, &w), SL_OK);
    sl_pq_value v = {.ptr = bytes, .len = n};
    sl_status st = sl_pq_writer_append(w, &v);
    if (st == SL_OK)
        st = sl_pq_writer_close(w);
    snprintf(page_error, sizeof page_error, "%s", st == SL_OK ? "" : sl_last_error());
    if (st != SL_OK && !sl_pq_writer_num_rows(w)) /* unusable after that: it says so */
        assert_int_equal(sl_pq_writer_append(w, &v), SL_ERR_INVALID_ARG);
    sl_pq_writer_free(w);
    free(bytes);
    return st;
}

/* A page's compressed size goes into its header as an i32: a page that
 * fits before compression but not after (incompressible bytes just under
 * the limit, grown by the codec's framing) is refused, naming the column,
 * the codec and the size, where the size cast to i32 was written as it
 * came (negative past 2 GiB: a corrupt file). */
static void writer_refuses_a_page_too_large_after_compression(void **state)
{
    char *dir = tu_tmpdir();
    sl_pq_writer_test_page_limit(PAGE_LIMIT);
    /* the page body: the value's 4-byte length, then its bytes */
    size_t fits = PAGE_LIMIT - 4;
    assert_int_equal(write_one_page(dir, SL_PQ_UNCOMPRESSED, fits), SL_OK);
    assert_int_equal(write_one_page(dir, SL_PQ_UNCOMPRESSED, fits + 1), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(page_error, "column 'b' exceeds 2 GiB (4097 bytes"));
    const sl_pq_codec codecs[] = {SL_PQ_ZSTD, SL_PQ_SNAPPY, SL_PQ_GZIP};
    for (size_t i = 0; i < sizeof codecs / sizeof *codecs; i++) {
        assert_int_equal(write_one_page(dir, codecs[i], fits), SL_ERR_INVALID_ARG);
        char want[128];
        snprintf(want, sizeof want, "column 'b' exceeds 2 GiB under %s compression",
                 sl_pq_codec_name(codecs[i]));
        if (!strstr(page_error, want))
            fail_msg("%s: '%s'", sl_pq_codec_name(codecs[i]), page_error);
        assert_non_null(strstr(page_error, "4096 before"));
        /* well under the limit, the same bytes write */
        assert_int_equal(write_one_page(dir, codecs[i], fits / 2), SL_OK);
    }
    sl_pq_writer_test_page_limit(0);
    tu_rmtree(dir);
}

static void reader_errors_name_the_file(void **state)
{
    char *dir = tu_tmpdir();
    int64_t rgs;
    char *good = write_file(dir, SL_PQ_SNAPPY, 500, 16 << 10, &rgs);
    FILE *fp = fopen(good, "rb");
    assert_non_null(fp);
    uint8_t *data = malloc(1 << 20);
    size_t len = fread(data, 1, 1 << 20, fp);
    fclose(fp);
    assert_true(len > 1000 && len < (1 << 20));

    char path[512];
    snprintf(path, sizeof path, "%s/bad.parquet", dir);
    sl_pq_reader *r = (void *)1;

    /* Bad magic at the start. */
    memcpy(data, "PAR2", 4);
    tu_write(dir, "bad.parquet", data, len);
    assert_int_equal(sl_pq_reader_open(path, NULL, &r), SL_ERR_DECODE);
    assert_null(r);
    assert_non_null(strstr(sl_last_error(), path));
    assert_non_null(strstr(sl_last_error(), "not a Parquet file"));
    memcpy(data, "PAR1", 4);

    /* Truncated at many points: each an error naming the file, never a crash. */
    for (size_t cut = 0; cut < len; cut += 97) {
        tu_write(dir, "bad.parquet", data, cut);
        sl_status st = sl_pq_reader_open(path, NULL, &r);
        assert_int_not_equal(st, SL_OK);
        assert_non_null(strstr(sl_last_error(), path));
    }

    /* Footer length out of range. */
    uint8_t saved[4];
    memcpy(saved, data + len - 8, 4);
    memcpy(data + len - 8, "\xff\xff\xff\x00", 4);
    tu_write(dir, "bad.parquet", data, len);
    assert_int_equal(sl_pq_reader_open(path, NULL, &r), SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), "footer length"));
    memcpy(data + len - 8, saved, 4);

    /* A corrupt page header (the first page starts at offset 4): the footer
     * opens, reading names the row group and the column. */
    memset(data + 4, 0xFF, 6);
    tu_write(dir, "bad.parquet", data, len);
    assert_int_equal(sl_pq_reader_open(path, NULL, &r), SL_OK);
    const sl_pq_batch *b;
    assert_int_equal(sl_pq_reader_next(r, &b), SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), path));
    assert_non_null(strstr(sl_last_error(), "row group 0, column 's'"));
    sl_pq_reader_free(r);

    snprintf(path, sizeof path, "%s/absent.parquet", dir);
    assert_int_equal(sl_pq_reader_open(path, NULL, &r), SL_ERR_NOT_FOUND);
    free(data);
    tu_rmtree(dir);
}

/* Byte arrays that are all null or empty have no data bytes at all: batches
 * of them (several per page) hand out empty ranges. */
static void empty_byte_arrays_in_batches(void **state)
{
    char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/empty.parquet", dir);
    const sl_pq_column_def cols[] = {{"s", SL_PQ_STRING, true, NULL}, {"x", SL_PQ_BINARY, false, NULL}};
    sl_pq_writer *w;
    assert_int_equal(sl_pq_writer_open(path, cols, 2, NULL, &w), SL_OK);
    for (int i = 0; i < 100; i++) {
        sl_pq_value v[2] = {{.is_null = true}, {.ptr = "", .len = 0}};
        assert_int_equal(sl_pq_writer_append(w, v), SL_OK);
    }
    assert_int_equal(sl_pq_writer_close(w), SL_OK);
    sl_pq_writer_free(w);
    sl_pq_reader_params p = sl_pq_reader_default_params();
    p.batch_rows = 7;
    sl_pq_reader *r;
    assert_int_equal(sl_pq_reader_open(path, &p, &r), SL_OK);
    const sl_pq_batch *b;
    int64_t rows = 0;
    while (sl_pq_reader_next(r, &b) == SL_OK && b) {
        for (int64_t i = 0; i < b->num_rows; i++) {
            assert_int_equal(b->columns[0].valid[i], 0);
            assert_int_equal(b->columns[1].valid[i], 1);
            assert_int_equal(b->columns[1].offsets[i + 1], 0);
        }
        rows += b->num_rows;
    }
    assert_int_equal(rows, 100);
    sl_pq_reader_free(r);
    tu_rmtree(dir);
}

/* ---- hostile files ------------------------------------------------------ */

/* A one-column file made by hand: "PAR1", one page (header + body), then a
 * footer that may lie about every count and size. */
typedef struct forged {
    int physical, repetition; /* SL_PQT_*, SL_PQR_* */
    int codec;
    int64_t num_rows;         /* file and row group */
    int64_t chunk_values;     /* ColumnMetaData.num_values */
    int64_t chunk_bytes;      /* total_compressed_size; 0: the real size */
    int page_type;            /* SL_PQP_* */
    int32_t page_values, usize, csize; /* csize -1: the body's real size */
    int encoding;
    const uint8_t *body;
    size_t body_len;
} forged;

static size_t forge(const forged *f, uint8_t *out, size_t cap)
{
    sl_tc_writer h;
    sl_tc_writer_init(&h);
    sl_tc_write_struct_begin(&h);
    sl_tc_write_i32_field(&h, 1, f->page_type);
    sl_tc_write_i32_field(&h, 2, f->usize);
    sl_tc_write_i32_field(&h, 3, f->csize >= 0 ? f->csize : (int32_t)f->body_len);
    sl_tc_write_field(&h, SL_TC_STRUCT, f->page_type == SL_PQP_DICTIONARY ? 7 : 5);
    sl_tc_write_struct_begin(&h);
    sl_tc_write_i32_field(&h, 1, f->page_values);
    sl_tc_write_i32_field(&h, 2, f->encoding);
    if (f->page_type != SL_PQP_DICTIONARY) {
        sl_tc_write_i32_field(&h, 3, SL_PQE_RLE);
        sl_tc_write_i32_field(&h, 4, SL_PQE_RLE);
    }
    sl_tc_write_struct_end(&h);
    sl_tc_write_struct_end(&h);
    assert_false(h.err);
    int64_t chunk = f->chunk_bytes ? f->chunk_bytes : (int64_t)(h.len + f->body_len);

    sl_tc_writer t;
    sl_tc_writer_init(&t);
    sl_tc_write_struct_begin(&t);
    sl_tc_write_i32_field(&t, 1, 1);
    sl_tc_write_field(&t, SL_TC_LIST, 2);
    sl_tc_write_list_begin(&t, SL_TC_STRUCT, 2);
    sl_tc_write_struct_begin(&t);
    sl_tc_write_string_field(&t, 4, "schema");
    sl_tc_write_i32_field(&t, 5, 1);
    sl_tc_write_struct_end(&t);
    sl_tc_write_struct_begin(&t);
    sl_tc_write_i32_field(&t, 1, f->physical);
    sl_tc_write_i32_field(&t, 3, f->repetition);
    sl_tc_write_string_field(&t, 4, "c");
    sl_tc_write_struct_end(&t);
    sl_tc_write_i64_field(&t, 3, f->num_rows);
    sl_tc_write_field(&t, SL_TC_LIST, 4);
    sl_tc_write_list_begin(&t, SL_TC_STRUCT, 1);
    sl_tc_write_struct_begin(&t); /* RowGroup */
    sl_tc_write_field(&t, SL_TC_LIST, 1);
    sl_tc_write_list_begin(&t, SL_TC_STRUCT, 1);
    sl_tc_write_struct_begin(&t); /* ColumnChunk */
    sl_tc_write_i64_field(&t, 2, 4);
    sl_tc_write_field(&t, SL_TC_STRUCT, 3);
    sl_tc_write_struct_begin(&t); /* ColumnMetaData */
    sl_tc_write_i32_field(&t, 1, f->physical);
    sl_tc_write_field(&t, SL_TC_LIST, 2);
    sl_tc_write_list_begin(&t, SL_TC_I32, 1);
    sl_tc_write_i64(&t, f->encoding);
    sl_tc_write_field(&t, SL_TC_LIST, 3);
    sl_tc_write_list_begin(&t, SL_TC_BINARY, 1);
    sl_tc_write_binary(&t, "c", 1);
    sl_tc_write_i32_field(&t, 4, f->codec);
    sl_tc_write_i64_field(&t, 5, f->chunk_values);
    sl_tc_write_i64_field(&t, 6, f->usize);
    sl_tc_write_i64_field(&t, 7, chunk);
    sl_tc_write_i64_field(&t, 9, 4);
    sl_tc_write_struct_end(&t);
    sl_tc_write_struct_end(&t);
    sl_tc_write_i64_field(&t, 2, f->usize);
    sl_tc_write_i64_field(&t, 3, f->num_rows);
    sl_tc_write_struct_end(&t);
    sl_tc_write_struct_end(&t);
    assert_false(t.err);

    size_t n = 4 + h.len + f->body_len + t.len + 8;
    assert_true(n <= cap);
    uint8_t *p = out;
    memcpy(p, "PAR1", 4), p += 4;
    memcpy(p, h.buf, h.len), p += h.len;
    if (f->body_len)
        memcpy(p, f->body, f->body_len), p += f->body_len;
    memcpy(p, t.buf, t.len), p += t.len;
    for (int k = 0; k < 4; k++)
        *p++ = (uint8_t)(t.len >> (8 * k));
    memcpy(p, "PAR1", 4);
    sl_tc_writer_free(&h);
    sl_tc_writer_free(&t);
    return n;
}

/* Opens and reads every batch of `path`; returns the first error (or SL_OK)
 * and the most bytes allocated at once on the way, above what was live. */
static sl_status read_all(const char *path, int64_t *peak, int64_t *rows)
{
    int64_t base = sl_alloc_live_bytes();
    sl_alloc_peak_reset();
    sl_pq_reader *r;
    sl_status st = sl_pq_reader_open(path, NULL, &r);
    *rows = 0;
    if (st == SL_OK) {
        const sl_pq_batch *b;
        while ((st = sl_pq_reader_next(r, &b)) == SL_OK && b)
            *rows += b->num_rows;
        sl_pq_reader_free(r);
    }
    *peak = sl_alloc_peak_bytes() - base;
    return st;
}

#define BOMB_PEAK (4 << 20) /* what reading any file below may allocate at once */

static void expect_bomb_refused(const char *dir, const forged *f, const char *why)
{
    uint8_t file[4096];
    size_t n = forge(f, file, sizeof file);
    tu_write(dir, "bomb.parquet", file, n);
    char path[512];
    snprintf(path, sizeof path, "%s/bomb.parquet", dir);
    int64_t peak, rows;
    sl_status st = read_all(path, &peak, &rows);
    print_message("%s: %zu-byte file, status %d, peak %lld bytes: %s\n", why, n, st, (long long)peak,
                  sl_last_error());
    assert_int_equal(st, SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), path));
    assert_true(peak < BOMB_PEAK);
}

/* Issue 11, defect 3: a footer and page headers that claim huge counts and
 * sizes over a few real bytes must fail as corrupt data, having allocated
 * next to nothing (an 81-byte file once made the reader allocate 1.05 GB). */
static void lying_sizes_are_refused_without_allocating(void **state)
{
    char *dir = tu_tmpdir();
    const uint8_t eight[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    /* A row group of 50 million rows whose one page holds one value. */
    forged rows = {.physical = SL_PQT_INT64, .repetition = SL_PQR_REQUIRED, .codec = SL_PQ_UNCOMPRESSED,
                   .num_rows = 50000000, .chunk_values = 50000000, .page_type = SL_PQP_DATA,
                   .page_values = 50000000, .usize = 8, .csize = -1, .encoding = SL_PQE_PLAIN,
                   .body = eight, .body_len = 8};
    expect_bomb_refused(dir, &rows, "num_rows and num_values");
    /* The same rows as nullable byte arrays (an image column). */
    forged images = rows;
    images.physical = SL_PQT_BYTE_ARRAY;
    images.repetition = SL_PQR_OPTIONAL;
    expect_bomb_refused(dir, &images, "num_rows of a nullable byte array");
    /* A page whose header claims 200 MiB uncompressed, over a few bytes of
     * zstd (a frame of "abcd"), gzip and snappy. */
    const uint8_t zstd_frame[] = {0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x04, 0x21, 0x00, 0x00, 'a', 'b', 'c', 'd'};
    forged page = {.physical = SL_PQT_INT32, .repetition = SL_PQR_REQUIRED, .codec = SL_PQ_ZSTD,
                   .num_rows = 1, .chunk_values = 1, .page_type = SL_PQP_DATA, .page_values = 1,
                   .usize = 200 << 20, .csize = -1, .encoding = SL_PQE_PLAIN, .body = zstd_frame,
                   .body_len = sizeof zstd_frame};
    expect_bomb_refused(dir, &page, "uncompressed page size (zstd)");
    const uint8_t gzip_member[] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x4b, 0x4c,
                                   0x4a, 0x4e, 0x01, 0x00, 0x11, 0xcd, 0x82, 0xed, 0x04, 0x00, 0x00, 0x00};
    page.codec = SL_PQ_GZIP;
    page.body = gzip_member;
    page.body_len = sizeof gzip_member;
    expect_bomb_refused(dir, &page, "uncompressed page size (gzip)");
    /* snappy's own length (a varint of 200 MiB) agrees with the page header. */
    const uint8_t snappy_block[] = {0x80, 0x80, 0x80, 0x64, 0x0C, 'a', 'b', 'c', 'd'};
    page.codec = SL_PQ_SNAPPY;
    page.body = snappy_block;
    page.body_len = sizeof snappy_block;
    expect_bomb_refused(dir, &page, "uncompressed page size (snappy)");
    /* A dictionary page claiming 100 million entries in 8 bytes. */
    forged dict = {.physical = SL_PQT_BYTE_ARRAY, .repetition = SL_PQR_OPTIONAL, .codec = SL_PQ_UNCOMPRESSED,
                   .num_rows = 10, .chunk_values = 10, .page_type = SL_PQP_DICTIONARY,
                   .page_values = 100000000, .usize = 8, .csize = -1, .encoding = SL_PQE_PLAIN,
                   .body = eight, .body_len = 8};
    expect_bomb_refused(dir, &dict, "dictionary entries");
    /* A column chunk that claims to run past the file. */
    forged chunk = rows;
    chunk.num_rows = chunk.chunk_values = chunk.page_values = 1;
    chunk.chunk_bytes = (int64_t)1 << 40;
    expect_bomb_refused(dir, &chunk, "column chunk size");
    /* A page claiming more bytes than its chunk holds. */
    forged past = chunk;
    past.chunk_bytes = 0;
    past.csize = 1 << 30;
    past.usize = 1 << 30;
    expect_bomb_refused(dir, &past, "page size past its chunk");
    tu_rmtree(dir);
}

/* Leaf columns are named by their dotted path, so a long group name over
 * many short leaves once made a 55 KB footer cost 50 MB of names. */
static void long_names_over_many_leaves_are_refused(void **state)
{
    enum { NAME = 10000, LEAVES = 5000 };
    char *name = malloc(NAME + 1);
    memset(name, 'g', NAME);
    name[NAME] = '\0';
    sl_tc_writer t;
    sl_tc_writer_init(&t);
    sl_tc_write_struct_begin(&t);
    sl_tc_write_i32_field(&t, 1, 1);
    sl_tc_write_field(&t, SL_TC_LIST, 2);
    sl_tc_write_list_begin(&t, SL_TC_STRUCT, 2 + LEAVES);
    sl_tc_write_struct_begin(&t);
    sl_tc_write_string_field(&t, 4, "schema");
    sl_tc_write_i32_field(&t, 5, 1);
    sl_tc_write_struct_end(&t);
    sl_tc_write_struct_begin(&t);
    sl_tc_write_string_field(&t, 4, name);
    sl_tc_write_i32_field(&t, 5, LEAVES);
    sl_tc_write_struct_end(&t);
    for (int i = 0; i < LEAVES; i++) {
        sl_tc_write_struct_begin(&t);
        sl_tc_write_i32_field(&t, 1, SL_PQT_INT32);
        sl_tc_write_string_field(&t, 4, "x");
        sl_tc_write_struct_end(&t);
    }
    sl_tc_write_i64_field(&t, 3, 0);
    sl_tc_write_struct_end(&t);
    assert_false(t.err);
    size_t n = 4 + t.len + 8;
    uint8_t *file = malloc(n);
    memcpy(file, "PAR1", 4);
    memcpy(file + 4, t.buf, t.len);
    for (int k = 0; k < 4; k++)
        file[4 + t.len + (size_t)k] = (uint8_t)(t.len >> (8 * k));
    memcpy(file + 4 + t.len + 4, "PAR1", 4);
    char *dir = tu_tmpdir();
    tu_write(dir, "names.parquet", file, n);
    char path[512];
    snprintf(path, sizeof path, "%s/names.parquet", dir);
    int64_t peak, rows;
    sl_status st = read_all(path, &peak, &rows);
    print_message("%zu-byte footer: status %d, peak %lld bytes: %s\n", t.len, st, (long long)peak, sl_last_error());
    assert_int_equal(st, SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), path));
    assert_non_null(strstr(sl_last_error(), "column names"));
    assert_true(peak < BOMB_PEAK);
    sl_tc_writer_free(&t);
    free(file);
    free(name);
    tu_rmtree(dir);
}

/* Every allocation failure on the way is reported, and nothing leaks. */
static void allocation_failures_are_clean(void **state)
{
    char *dir = tu_tmpdir();
    int64_t rgs;
    char *path = write_file(dir, SL_PQ_ZSTD, 300, 8 << 10, &rgs);
    char other[512];
    snprintf(other, sizeof other, "%s/fail.parquet", dir);
    int64_t base = sl_alloc_live_bytes();
    bool all_ok = false;
    /* Fail the nth allocation for n = 0, 1, 2, ... until a pass needs fewer. */
    for (long n = 0; n < 5000 && !all_ok; n++) {
        sl_alloc_fail_after(n);
        bool read_ok = false, write_ok = false;
        sl_pq_reader *r;
        if (sl_pq_reader_open(path, NULL, &r) == SL_OK) {
            const sl_pq_batch *b;
            sl_status st;
            int64_t rows = 0;
            while ((st = sl_pq_reader_next(r, &b)) == SL_OK && b)
                rows += b->num_rows;
            read_ok = st == SL_OK && rows == 300;
            sl_pq_reader_free(r);
        }
        sl_pq_writer *w;
        sl_pq_writer_params p = sl_pq_writer_default_params();
        p.row_group_bytes = 4096;
        if (sl_pq_writer_open(other, COLS, NCOLS, &p, &w) == SL_OK) {
            sl_pq_value v[NCOLS];
            char s[64];
            uint8_t x[300];
            bool ok = sl_pq_writer_set_metadata(w, "k", "v") == SL_OK;
            for (int64_t i = 0; i < 50 && ok; i++) {
                make_row(i, v, s, x);
                ok = sl_pq_writer_append(w, v) == SL_OK;
            }
            write_ok = ok && sl_pq_writer_close(w) == SL_OK;
            sl_pq_writer_free(w);
            if (!write_ok) /* a failed writer leaves no file behind */
                assert_int_not_equal(access(other, F_OK), 0);
        }
        sl_alloc_fail_after(-1);
        assert_int_equal(sl_alloc_live_bytes(), base);
        all_ok = read_ok && write_ok;
    }
    assert_true(all_ok);
    tu_rmtree(dir);
}

/* ---- lists: files from tests/unit/gen_parquet_lists.py ----------------- */

static char list_dir[256];
static json_t *list_expected; /* what the generator wrote, per file */

/* Runs the generator once; the files stay until the process ends. */
static void need_list_files(void)
{
    if (!list_expected)
        list_expected = tu_parquet_lists(list_dir, sizeof list_dir);
    assert_non_null(list_expected);
}

static void list_path(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", list_dir, name);
}

/* A value as the generator prints it: bytes as 0x + hex. */
static json_t *pq_value(const sl_pq_vector *v, int64_t k)
{
    if (!v->valid[k])
        return json_null();
    switch (v->info->type) {
    case SL_PQ_INT32: return json_integer(v->i32[k]);
    case SL_PQ_INT64: return json_integer(v->i64[k]);
    case SL_PQ_DOUBLE: return json_real(v->f64[k]);
    case SL_PQ_BOOL: return json_boolean(v->b[k]);
    case SL_PQ_STRING: return json_stringn((const char *)v->data + v->offsets[k], (size_t)(v->offsets[k + 1] - v->offsets[k]));
    case SL_PQ_BINARY: {
        size_t n = (size_t)(v->offsets[k + 1] - v->offsets[k]);
        char *hex = malloc(2 * n + 3);
        strcpy(hex, "0x");
        for (size_t i = 0; i < n; i++)
            snprintf(hex + 2 + 2 * i, 3, "%02x", v->data[v->offsets[k] + (int64_t)i]);
        json_t *j = json_string(hex);
        free(hex);
        return j;
    }
    default: fail_msg("unexpected type %d", v->info->type); return NULL;
    }
}

/* Entry `at` of depth d of a leaf: a row (d 0) or an inner list as an
 * array (of arrays, for lists of lists) of the leaf's values, or at the
 * leaf's depth its value. */
static json_t *pq_nest(const sl_pq_vector *v, unsigned d, int64_t at)
{
    if (d == v->info->depth)
        return pq_value(v, at);
    const int64_t *ofs = d ? v->nest_offsets[d - 1] : v->list_offsets;
    const uint8_t *ok = d ? v->nest_valid[d - 1] : v->list_valid;
    assert_non_null(ofs);
    assert_true(ofs[at] <= ofs[at + 1]);
    if (!ok[at]) {
        assert_int_equal(ofs[at], ofs[at + 1]); /* a null list has no elements */
        return json_null();
    }
    json_t *a = json_array();
    for (int64_t k = ofs[at]; k < ofs[at + 1]; k++)
        json_array_append_new(a, pq_nest(v, d + 1, k));
    return a;
}

static json_t *pq_cell(const sl_pq_vector *v, int64_t i)
{
    return v->list_offsets ? pq_nest(v, 0, i) : pq_value(v, i);
}

/* Elements and inner lists of a row's list as the generator wrote it: what
 * batch_rows must hold. */
static size_t list_items(const json_t *list)
{
    size_t k, n = 0;
    json_t *e;
    json_array_foreach(list, k, e) n += 1 + (json_is_array(e) ? list_items(e) : 0);
    return n;
}

/* Every row of `path` as objects of column -> cell, checking each batch
 * keeps to p's limits; NULL with *st set at the first error. */
static json_t *read_rows(const char *path, const sl_pq_reader_params *p, sl_status *st)
{
    sl_pq_reader *r;
    json_t *rows = json_array();
    *st = sl_pq_reader_open(path, p, &r);
    assert_int_equal(*st, SL_OK);
    const sl_pq_batch *b;
    while ((*st = sl_pq_reader_next(r, &b)) == SL_OK && b) {
        assert_true(b->num_rows >= 1 && (size_t)b->num_rows <= p->batch_rows);
        for (size_t c = 0; c < b->num_columns; c++) {
            const sl_pq_vector *v = &b->columns[c];
            assert_int_equal(v->list_offsets != NULL, v->info->list_len > 0);
            if (!v->list_offsets)
                continue;
            assert_int_equal(v->list_offsets[0], 0);
            /* lists at each depth, then elements, within batch_rows (a row
             * holding more is a batch of its own) */
            int64_t e = b->num_rows;
            for (unsigned d = 0; d < v->info->depth; d++) {
                e = (d ? v->nest_offsets[d - 1] : v->list_offsets)[e];
                assert_true(e <= (int64_t)p->batch_rows || b->num_rows == 1);
            }
            if (v->offsets && b->num_rows > 1)
                assert_true(v->offsets[e] <= (int64_t)p->batch_bytes);
        }
        for (int64_t i = 0; i < b->num_rows; i++) {
            json_t *row = json_object();
            for (size_t c = 0; c < b->num_columns; c++)
                json_object_set_new(row, b->columns[c].info->name, pq_cell(&b->columns[c], i));
            json_array_append_new(rows, row);
        }
    }
    sl_pq_reader_free(r);
    if (*st != SL_OK) {
        json_decref(rows);
        return NULL;
    }
    return rows;
}

static void assert_json_equal(json_t *got, json_t *want, const char *what)
{
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT), *w = json_dumps(want, JSON_COMPACT);
        fail_msg("%s:\n got  %s\n want %s", what, g, w);
    }
}

/* ---- dictionary encoding ------------------------------------------------ */

/* Row n of the dictionary test: a constant, a few labels and scores with
 * nulls, a unique caption, and `grows`, four values for 1,500 rows and then
 * unique 300-byte ones, so its dictionary passes SL_PQ_DICT_MAX_BYTES within
 * a page and the chunk goes on PLAIN. */
#define DICT_ROWS 6000
static const sl_pq_column_def DICT_COLS[] = {
    {"model", SL_PQ_STRING, false, NULL}, {"label", SL_PQ_INT64, true, NULL}, {"score", SL_PQ_DOUBLE, true, NULL},
    {"caption", SL_PQ_STRING, true, NULL}, {"grows", SL_PQ_STRING, true, NULL}, {"ok", SL_PQ_BOOL, false, NULL},
};
#define DICT_NCOLS (sizeof DICT_COLS / sizeof DICT_COLS[0])

static json_t *dict_row(int n)
{
    char caption[128], grows[320];
    snprintf(caption, sizeof caption, "caption %d: a tabby cat %x on a sofa", n, (unsigned)(n * 2654435761u));
    if (n < 1500)
        snprintf(grows, sizeof grows, "w%d", n % 4);
    else
        snprintf(grows, sizeof grows, "%0300d", n);
    return json_pack("{s:s, s:o, s:o, s:s, s:o, s:b}", "model", "SmolVLM 256M Instruct",
                     "label", n % 7 == 3 ? json_null() : json_integer(n % 5 - 2),
                     "score", n % 11 == 4 ? json_null() : json_real((n % 3) * 0.5 - 0.25),
                     "caption", caption, "grows", n % 13 == 0 ? json_null() : json_string(grows),
                     "ok", n % 2);
}

static int64_t write_dict_file(const char *path, bool dictionary, int64_t rg_bytes, sl_pq_codec codec)
{
    sl_pq_writer_params p = sl_pq_writer_default_params();
    p.dictionary = dictionary;
    p.row_group_bytes = rg_bytes;
    p.page_bytes = 64 << 10;
    p.codec = codec;
    sl_pq_writer *w;
    assert_int_equal(sl_pq_writer_open(path, DICT_COLS, DICT_NCOLS, &p, &w), SL_OK);
    for (int n = 0; n < DICT_ROWS; n++) {
        json_t *row = dict_row(n);
        sl_pq_value v[DICT_NCOLS];
        for (size_t c = 0; c < DICT_NCOLS; c++) {
            json_t *j = json_object_get(row, DICT_COLS[c].name);
            char *owned = NULL;
            assert_true(sl_pq_value_from_json(DICT_COLS[c].type, j, &v[c], &owned));
            assert_null(owned);
        }
        assert_int_equal(sl_pq_writer_append(w, v), SL_OK);
        json_decref(row);
    }
    assert_int_equal(sl_pq_writer_close(w), SL_OK);
    int64_t bytes = sl_pq_writer_bytes(w);
    sl_pq_writer_free(w);
    return bytes;
}

static void dictionary_encodes_where_it_pays(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    json_t *want = json_array();
    for (int n = 0; n < DICT_ROWS; n++)
        json_array_append_new(want, dict_row(n));
    char on[512], off[512];
    snprintf(on, sizeof on, "%s/on.parquet", dir);
    snprintf(off, sizeof off, "%s/off.parquet", dir);
    sl_pq_reader_params rp = sl_pq_reader_default_params();
    /* One row group, then many (the dictionary starts again in each). */
    const int64_t rgs[] = {64 << 20, 200 << 10};
    for (size_t g = 0; g < 2; g++) {
        int64_t with = write_dict_file(on, true, rgs[g], SL_PQ_UNCOMPRESSED);
        int64_t without = write_dict_file(off, false, rgs[g], SL_PQ_UNCOMPRESSED);
        const char *paths[] = {on, off};
        for (size_t k = 0; k < 2; k++) {
            sl_status st;
            json_t *got = read_rows(paths[k], &rp, &st);
            assert_non_null(got);
            assert_json_equal(got, want, paths[k]);
            json_decref(got);
        }
        /* model's 6,000 PLAIN copies (150 KB) are a few bytes of indices;
         * the unique captions are PLAIN in both. */
        assert_true(without - with > 130000);
        assert_true(with > 6000 * 40); /* the captions are all there */
    }
    /* Under zstd: the dictionary page compressed too. */
    write_dict_file(on, true, 64 << 20, SL_PQ_ZSTD);
    sl_status st;
    json_t *got = read_rows(on, &rp, &st);
    assert_non_null(got);
    assert_json_equal(got, want, on);
    json_decref(got);
    json_decref(want);
    tu_rmtree(dir);
}

/* 40 rows each holding one 500 KB value, dictionary-encoded (one entry)
 * and PLAIN, read under a 4 MiB memory limit with the default 64 MiB
 * batch: the reader ends each batch where the limit leaves no room for
 * another value, every row read back, and never holds more than the limit
 * (it copied a step's values into the batch first and counted them after:
 * 20 MB and "needs more than the reader's memory limit"). */
static void repeated_large_values_stay_within_the_memory_limit(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    enum { ROWS = 40, LEN = 500000 };
    char *big = malloc(LEN);
    assert_non_null(big);
    for (size_t i = 0; i < LEN; i++)
        big[i] = (char)('a' + i % 26);
    const sl_pq_column_def cols[] = {{"text", SL_PQ_STRING, true, NULL}, {"n", SL_PQ_INT64, false, NULL}};
    for (int dictionary = 0; dictionary < 2; dictionary++) {
        char path[512];
        snprintf(path, sizeof path, "%s/big-%d.parquet", dir, dictionary);
        sl_pq_writer_params wp = sl_pq_writer_default_params();
        wp.dictionary = dictionary;
        sl_pq_writer *w;
        assert_int_equal(sl_pq_writer_open(path, cols, 2, &wp, &w), SL_OK);
        for (int n = 0; n < ROWS; n++) {
            sl_pq_value v[2] = {{.ptr = big, .len = LEN}, {.i64 = n}};
            assert_int_equal(sl_pq_writer_append(w, v), SL_OK);
        }
        assert_int_equal(sl_pq_writer_close(w), SL_OK);
        sl_pq_writer_free(w);

        sl_pq_reader_params p = sl_pq_reader_default_params();
        p.memory_limit = 4 << 20;
        int64_t base = sl_alloc_live_bytes();
        sl_alloc_peak_reset();
        sl_pq_reader *r;
        assert_int_equal(sl_pq_reader_open(path, &p, &r), SL_OK);
        const sl_pq_batch *b;
        sl_status st;
        int64_t rows = 0, batches = 0;
        while ((st = sl_pq_reader_next(r, &b)) == SL_OK && b) {
            const sl_pq_vector *text = &b->columns[0], *n = &b->columns[1];
            for (int64_t i = 0; i < b->num_rows; i++) {
                assert_int_equal(n->i64[i], rows + i);
                assert_int_equal(text->offsets[i + 1] - text->offsets[i], LEN);
                assert_memory_equal(text->data + text->offsets[i], big, LEN);
            }
            rows += b->num_rows;
            batches++;
        }
        print_message("dictionary %d: status %d (%s), %lld rows in %lld batches, peak %lld bytes\n", dictionary, st,
                      st == SL_OK ? "" : sl_last_error(), (long long)rows, (long long)batches,
                      (long long)(sl_alloc_peak_bytes() - base));
        assert_int_equal(st, SL_OK);
        assert_int_equal(rows, ROWS);
        assert_true(batches > 1);
        sl_pq_reader_free(r);
        assert_true(sl_alloc_peak_bytes() - base <= (int64_t)p.memory_limit + (256 << 10)); /* + the footer's own */
        assert_int_equal(sl_alloc_live_bytes(), base);
    }
    free(big);
    tu_rmtree(dir);
}

/* pyarrow's lists (every codec, dictionary and plain, pages v1 and v2,
 * several row groups, null and empty lists, null elements and structs) and
 * the hand-written ones (rows across pages, the 2-level legacy forms) read
 * as the generator wrote them, whole and in small batches. */
static void lists_read_as_written(void **state)
{
    (void)state;
    need_list_files();
    const char *name;
    json_t *want;
    int files = 0;
    json_object_foreach(list_expected, name, want) {
        json_t *rows = json_object_get(want, "rows");
        if (!rows || json_object_get(want, "images"))
            continue;
        char path[512];
        list_path(path, sizeof path, name);
        sl_pq_reader *r;
        assert_int_equal(sl_pq_reader_open(path, NULL, &r), SL_OK);
        assert_int_equal(sl_pq_reader_num_row_groups(r), json_integer_value(json_object_get(want, "row_groups")));
        json_t *lists = json_object_get(want, "lists");
        assert_int_equal(sl_pq_reader_num_columns(r), json_object_size(lists));
        for (size_t i = 0; i < sl_pq_reader_num_columns(r); i++) {
            const sl_pq_column_info *ci = sl_pq_reader_column(r, i);
            json_t *l = json_object_get(lists, ci->name);
            assert_non_null(json_object_get(lists, ci->name));
            if (json_is_null(l)) {
                assert_int_equal(ci->list_len, 0);
                continue;
            }
            assert_int_equal(ci->list_len, strlen(json_string_value(json_array_get(l, 0))));
            assert_int_equal(ci->element_len, strlen(json_string_value(json_array_get(l, 1))));
            assert_memory_equal(ci->name, json_string_value(json_array_get(l, 1)), ci->element_len);
            json_t *nest = json_object_get(json_object_get(want, "nest"), ci->name);
            assert_int_equal(ci->depth, nest ? json_array_size(nest) : 1);
            for (size_t d = 0; nest && d < ci->depth; d++) { /* each list's and its elements' names */
                json_t *names = json_array_get(nest, d);
                assert_int_equal(ci->nest_list_len[d], strlen(json_string_value(json_array_get(names, 0))));
                assert_int_equal(ci->nest_element_len[d], strlen(json_string_value(json_array_get(names, 1))));
                assert_memory_equal(ci->name, json_string_value(json_array_get(names, 1)), ci->nest_element_len[d]);
            }
            json_t *maps = json_object_get(json_object_get(want, "maps"), ci->name);
            assert_int_equal(ci->maps, maps ? json_integer_value(maps) : 0);
        }
        sl_pq_reader_free(r);
        /* The longest list sets the smallest batch_rows that can read it. */
        size_t longest = 1, k;
        json_t *row;
        json_array_foreach(rows, k, row) {
            const char *col;
            json_t *cell;
            json_object_foreach(row, col, cell) if (list_items(cell) > longest) longest = list_items(cell);
        }
        sl_pq_reader_params small = sl_pq_reader_default_params();
        small.batch_rows = longest > 3 ? longest : 3;
        small.batch_bytes = 24;
        sl_pq_reader_params one = small;
        one.batch_rows = longest;
        one.batch_bytes = 1;
        sl_pq_reader_params d = sl_pq_reader_default_params();
        const sl_pq_reader_params *ps[] = {&d, &small, &one};
        for (size_t i = 0; i < 3; i++) {
            sl_status st;
            json_t *got = read_rows(path, ps[i], &st);
            if (!got)
                fail_msg("%s: %s", name, sl_last_error());
            char what[600];
            snprintf(what, sizeof what, "%s, batch_rows %zu", name, ps[i]->batch_rows);
            assert_json_equal(got, rows, what);
            json_decref(got);
        }
        files++;
    }
    assert_int_equal(files, 16);
}

/* The shape sl_pq_column_shape gives list `list` of file `name` is the one the
 * generator declared, and every row's value of the list fits it. */
static void check_list_shape(const sl_pq_vector *const *cols, size_t n, const char *list, json_t *want,
                             const char *name)
{
    const sl_pq_column_info *infos[16];
    for (size_t k = 0; k < n; k++)
        infos[k] = cols[k]->info;
    json_t *shape;
    assert_int_equal(sl_pq_column_shape(infos, n, infos[0]->list_len, &shape), SL_OK);
    char what[600];
    snprintf(what, sizeof what, "%s: the shape of %s", name, list);
    assert_json_equal(shape, json_object_get(json_object_get(want, "shapes"), list), what);
    char why[256];
    sl_pq_node *node = sl_pq_shape_parse(shape, why, sizeof why);
    assert_non_null(node);
    sl_columns *c;
    assert_int_equal(sl_columns_new(NULL, 0, NULL, 0, &c), SL_OK);
    assert_int_equal(sl_columns_input_type(c, list, node), SL_OK);
    assert_int_equal(sl_columns_count(c), 1);
    json_t *row;
    size_t k;
    json_array_foreach(json_object_get(want, "whole"), k, row) {
        if (!sl_columns_fits(c, 0, json_object_get(row, list), why, sizeof why))
            fail_msg("%s: row %zu does not fit: %s", what, k, why);
    }
    sl_columns_free(c);
    sl_pq_shape_free(node);
    json_decref(shape);
}

/* pyarrow's lists of lists, lists of structs with list fields and maps put
 * back together whole by sl_pq_column_json from all the leaves of each list,
 * as the generator built them (a map with string keys an object), in
 * batches of 16 and 64 rows and of one row's bytes. */
static void whole_lists_put_back_together(void **state)
{
    (void)state;
    need_list_files();
    const char *name;
    json_t *want;
    int files = 0;
    json_object_foreach(list_expected, name, want) {
        json_t *whole = json_object_get(want, "whole");
        if (!whole)
            continue;
        char path[512];
        list_path(path, sizeof path, name);
        for (size_t batch = 1; batch <= 64; batch *= 4) {
            sl_pq_reader_params p = sl_pq_reader_default_params();
            p.batch_rows = batch < 16 ? 16 : batch; /* a row's items fit */
            if (batch == 1)
                p.batch_bytes = 1;
            sl_pq_reader *r;
            assert_int_equal(sl_pq_reader_open(path, &p, &r), SL_OK);
            json_t *got = json_array();
            const sl_pq_batch *b;
            sl_status st;
            while ((st = sl_pq_reader_next(r, &b)) == SL_OK && b) {
                for (int64_t i = 0; i < b->num_rows; i++) {
                    json_t *row = json_object();
                    for (size_t c = 0; c < b->num_columns; c++) {
                        const sl_pq_column_info *ci = b->columns[c].info;
                        if (!ci->depth)
                            continue;
                        char *list = sl_strndup(ci->name, ci->list_len);
                        if (!json_object_get(row, list)) { /* its first leaf: gather the list's */
                            const sl_pq_vector *cols[16];
                            size_t n = 0;
                            for (size_t k = c; k < b->num_columns; k++)
                                if (b->columns[k].info->list_len == ci->list_len &&
                                    strncmp(b->columns[k].info->name, list, ci->list_len) == 0)
                                    cols[n++] = &b->columns[k];
                            json_object_set_new(row, list, sl_pq_column_json(cols, n, ci->list_len, i, pq_value));
                            if (i == 0)
                                check_list_shape(cols, n, list, want, name);
                        }
                        sl_free(list);
                    }
                    json_array_append_new(got, row);
                }
            }
            assert_int_equal(st, SL_OK);
            sl_pq_reader_free(r);
            char what[600];
            snprintf(what, sizeof what, "%s, batch_rows %zu", name, p.batch_rows);
            assert_json_equal(got, whole, what);
            json_decref(got);
        }
        files++;
    }
    assert_int_equal(files, 5);
}

/* A DECIMAL's unscaled value, big-endian two's complement in the fewest
 * bytes its precision needs (pyarrow's widths): negatives, values that
 * take every byte of their width, scale 0, a text of another scale
 * rescaled, and numbers that are none of the DECIMAL's values refused. */
static void decimals_encode_as_big_endian_twos_complement(void **state)
{
    (void)state;
    const int widths[][2] = {{1, 1}, {2, 1}, {3, 2}, {4, 2}, {9, 4}, {10, 5}, {18, 8}, {19, 9}, {38, 16}};
    for (size_t i = 0; i < sizeof widths / sizeof *widths; i++)
        assert_int_equal(sl_pq_decimal_width(widths[i][0]), widths[i][1]);
    static const struct {
        const char *text;
        int precision, scale;
        const char *hex; /* NULL: not one of the DECIMAL's values */
    } cases[] = {
        {"1.10", 5, 2, "00006e"},
        {"1.1", 5, 2, "00006e"},           /* the scale made up with zeros */
        {"-19.99", 5, 2, "fff831"},
        {"12300", 5, 0, "00300c"},          /* scale 0 */
        {"2e2", 5, 2, "004e20"},            /* an exponent */
        {"1.50e-1", 3, 2, "000f"},          /* 0.15 */
        {"0.00", 5, 2, "000000"},
        {"-0", 5, 2, "000000"},
        {"99", 2, 0, "63"},
        {"-99", 2, 0, "9d"},
        {"-1", 2, 0, "ff"},
        {"99999999999999999999999999999999999999", 38, 0, "4b3b4ca85a86c47a098a223fffffffff"},
        {"-99999999999999999999999999999999999999", 38, 0, "b4c4b357a5793b85f675ddc000000001"},
        {"-9999999999.99999999", 18, 8, "f21f494c589c0001"},
        {"0.0000000001", 38, 10, "00000000000000000000000000000001"},
        {"1.105", 5, 2, NULL},              /* a digit past the scale */
        {"1000", 5, 2, NULL},               /* 6 digits */
        {"100", 2, 0, NULL},
        {"999999999999999999999999999999999999990", 38, 0, NULL},
        {"", 5, 2, NULL},
        {"-", 5, 2, NULL},
        {"1e", 5, 2, NULL},
        {"1.2.3", 5, 2, NULL},
        {"x", 5, 2, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t out[16];
        bool ok = sl_decimal_from_text(cases[i].text, strlen(cases[i].text), cases[i].precision, cases[i].scale, out,
                                       (size_t)sl_pq_decimal_width(cases[i].precision));
        if (!cases[i].hex) {
            if (ok)
                fail_msg("'%s' taken as a decimal(%d,%d)", cases[i].text, cases[i].precision, cases[i].scale);
            continue;
        }
        if (!ok)
            fail_msg("'%s' refused as a decimal(%d,%d)", cases[i].text, cases[i].precision, cases[i].scale);
        char hex[40] = "";
        for (int b = 0; b < sl_pq_decimal_width(cases[i].precision); b++)
            snprintf(hex + 2 * b, 3, "%02x", out[b]);
        if (strcmp(hex, cases[i].hex) != 0)
            fail_msg("'%s' as a decimal(%d,%d): %s, not %s", cases[i].text, cases[i].precision, cases[i].scale, hex,
                     cases[i].hex);
    }
}

/* A column an input's schema types decimal(5,2) is one leaf of that
 * type (the writer's way to a DECIMAL), its schema's JSON "decimal(5,2)"
 * (read with spaces or without); a number past its digits or scale, or a
 * string of no number, does not fit, named; a string of a number does. */
static void a_decimal_input_column_is_a_decimal_leaf(void **state)
{
    (void)state;
    char why[256];
    json_t *j = json_string("decimal(5,2)");
    sl_pq_node *node = sl_pq_shape_parse(j, why, sizeof why);
    assert_non_null(node);
    sl_columns *c;
    assert_int_equal(sl_columns_new(NULL, 0, NULL, 0, &c), SL_OK);
    assert_int_equal(sl_columns_input_type(c, "price", node), SL_OK);
    const sl_pq_node *leaf = sl_columns_shape(c, 0);
    assert_non_null(leaf);
    assert_int_equal(leaf->kind, SL_PQ_NODE_LEAF);
    assert_int_equal(leaf->type, SL_PQ_DECIMAL);
    assert_int_equal(leaf->precision, 5);
    assert_int_equal(leaf->scale, 2);
    json_t *back = sl_pq_shape_json(leaf);
    assert_json_equal(back, j, "the shape of a decimal(5,2) column");
    json_t *ok[] = {sl_json_decimal("-19.99", 6), json_integer(7), json_real(0.5), json_null()};
    for (size_t k = 0; k < 4; k++) {
        assert_true(sl_columns_fits(c, 0, ok[k], why, sizeof why));
        json_decref(ok[k]);
    }
    json_t *bad = sl_json_decimal("1.105", 5);
    assert_false(sl_columns_fits(c, 0, bad, why, sizeof why));
    assert_string_equal(why, "a real number where it holds decimal(5,2)");
    json_decref(bad);
    json_t *digits = json_string("1.10"); /* a manifest's number in a string */
    assert_true(sl_columns_fits(c, 0, digits, why, sizeof why));
    json_decref(digits);
    bad = json_string("1.1x");
    assert_false(sl_columns_fits(c, 0, bad, why, sizeof why));
    assert_string_equal(why, "a string where it holds decimal(5,2)");
    json_decref(bad);
    sl_columns_free(c);
    sl_pq_shape_free(node);
    json_decref(back);
    /* Spaces around the numbers, as --columns takes them: the same leaf. */
    json_t *spaced = json_string("decimal( 5, 2 )");
    node = sl_pq_shape_parse(spaced, why, sizeof why);
    assert_non_null(node);
    assert_int_equal(node->precision, 5);
    assert_int_equal(node->scale, 2);
    back = sl_pq_shape_json(node);
    assert_json_equal(back, j, "the shape of a decimal(5, 2) column");
    sl_pq_shape_free(node);
    json_decref(back);
    json_decref(spaced);
    json_decref(j);
    const char *not_shapes[] = {"decimal(39,0)", "decimal(5,6)", "decimal(5,-1)", "decimal(5,2", "decimal(5,2)x",
                                "decimal(5)", "decimal(1234,2)", "decimal(,2)"};
    for (size_t k = 0; k < sizeof not_shapes / sizeof *not_shapes; k++) {
        json_t *text = json_string(not_shapes[k]);
        sl_pq_node *none = sl_pq_shape_parse(text, why, sizeof why);
        if (none)
            fail_msg("'%s' taken as a shape", not_shapes[k]);
        assert_true(why[0] != '\0');
        json_decref(text);
    }
    /* Parquet has no DECIMAL of these: their exact text. */
    const int none[][2] = {{39, 0}, {5, -2}, {5, 6}, {0, 0}};
    for (size_t k = 0; k < 4; k++) {
        json_t *shape = sl_pq_decimal_shape(none[k][0], none[k][1]);
        assert_string_equal(json_string_value(shape), "string");
        json_decref(shape);
    }
}

/* Two files' shapes of a column merged: the same shape, or one whose
 * decimals hold both files' values (the larger scale, the more integer
 * digits), nested too; none past 38 digits or where they differ
 * otherwise (a decimal and an int64, a list and a map, fields in another
 * order). */
static void two_shapes_merge_to_the_decimal_that_holds_both(void **state)
{
    (void)state;
    const char *cases[][3] = {
        {"\"int64\"", "\"int64\"", "\"int64\""},
        {"\"decimal(5,2)\"", "\"decimal(10,4)\"", "\"decimal(10,4)\""},
        {"\"decimal(7,0)\"", "\"decimal(3, 3)\"", "\"decimal(10,3)\""},
        {"\"decimal(38,2)\"", "\"decimal(38,2)\"", "\"decimal(38,2)\""},
        {"\"decimal(38,0)\"", "\"decimal(10,5)\"", NULL},
        {"\"decimal(5,2)\"", "\"int64\"", NULL},
        {"\"string\"", "\"decimal(5,2)\"", NULL},
        {"{\"list\": \"decimal(4,1)\"}", "{\"list\": \"decimal(6,3)\"}", "{\"list\": \"decimal(6,3)\"}"},
        {"{\"map\": \"decimal(4,1)\"}", "{\"list\": \"decimal(4,1)\"}", NULL},
        {"{\"struct\": [[\"a\", \"decimal(5,2)\"], [\"b\", \"int64\"]]}",
         "{\"struct\": [[\"a\", \"decimal(5,3)\"], [\"b\", \"int64\"]]}",
         "{\"struct\": [[\"a\", \"decimal(6,3)\"], [\"b\", \"int64\"]]}"},
        {"{\"struct\": [[\"a\", \"decimal(5,2)\"], [\"b\", \"int64\"]]}",
         "{\"struct\": [[\"b\", \"int64\"], [\"a\", \"decimal(5,3)\"]]}", NULL},
        {"{\"struct\": [[\"a\", \"decimal(5,2)\"], [\"b\", \"int64\"]]}",
         "{\"struct\": [[\"a\", \"decimal(5,3)\"], [\"b\", \"bool\"]]}", NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        json_t *a = json_loads(cases[k][0], JSON_DECODE_ANY, NULL), *b = json_loads(cases[k][1], JSON_DECODE_ANY, NULL);
        json_t *want = cases[k][2] ? json_loads(cases[k][2], JSON_DECODE_ANY, NULL) : NULL, *got = NULL, *back = NULL;
        assert_non_null(a);
        assert_non_null(b);
        assert_true(sl_pq_shape_merge(a, b, &got));
        assert_true(sl_pq_shape_merge(b, a, &back)); /* either file first */
        if (!want && (got || back))
            fail_msg("%s and %s merged", cases[k][0], cases[k][1]);
        if (want) {
            assert_json_equal(got, want, cases[k][0]);
            assert_json_equal(back, want, cases[k][1]);
        }
        json_decref(a);
        json_decref(b);
        json_decref(want);
        json_decref(got);
        json_decref(back);
    }
}

/* A decimal leaf (a flat column, and a list's elements) is written as a
 * FIXED_LEN_BYTE_ARRAY DECIMAL the reader reads back as the same exact
 * text, of the same precision and scale: a decimal's text, an integer, a
 * real, a string of a number ("1.00"); what is none of its values (too many
 * digits, a string of no number) is null. */
static void decimal_leaves_read_as_written(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/dec.parquet", dir);
    const sl_pq_node price = {.kind = SL_PQ_NODE_LEAF, .type = SL_PQ_DECIMAL, .precision = 5, .scale = 2};
    const sl_pq_node wide = {.kind = SL_PQ_NODE_LEAF, .type = SL_PQ_DECIMAL, .precision = 38, .scale = 10};
    const sl_pq_node list = {.kind = SL_PQ_NODE_LIST, .element = &price};
    const sl_pq_column_def cols[] = {{.name = "price", .nested = &price}, {.name = "wide", .nested = &wide},
                                     {.name = "prices", .nested = &list}};
    sl_pq_writer *w;
    assert_int_equal(sl_pq_writer_open(path, cols, 3, NULL, &w), SL_OK);
    json_t *rows[] = {
        json_pack("[o,o,[o,o]]", sl_json_decimal("1.10", 4), sl_json_decimal("12345678901234567.1234567890", 28),
                  sl_json_decimal("-19.99", 6), json_null()),
        json_pack("[i,f,[s,i]]", -7, 0.5, "1.00", 1000),
        json_pack("[s,o,[s]]", "1.1x", sl_json_decimal("-0.0000000001", 13), "1e1"),
    };
    for (size_t r = 0; r < 3; r++) {
        sl_pq_value row[3];
        for (size_t c = 0; c < 3; c++)
            row[c] = (sl_pq_value){.json = json_array_get(rows[r], c)};
        assert_int_equal(sl_pq_writer_append(w, row), SL_OK);
    }
    assert_int_equal(sl_pq_writer_close(w), SL_OK);
    sl_pq_writer_free(w);

    sl_pq_reader_params p = sl_pq_reader_default_params();
    sl_pq_reader *r;
    assert_int_equal(sl_pq_reader_open(path, &p, &r), SL_OK);
    const sl_pq_batch *b;
    assert_int_equal(sl_pq_reader_next(r, &b), SL_OK);
    assert_int_equal(b->num_rows, 3);
    assert_int_equal(b->num_columns, 3);
    const char *want[3][5] = {{"1.10", "-7.00", NULL}, {"12345678901234567.1234567890", "0.5000000000",
                              "-0.0000000001"}, {"-19.99", NULL, "1.00", NULL, "10.00"}}; /* the list's elements */
    const int precision[] = {5, 38, 5}, scale[] = {2, 10, 2};
    for (size_t c = 0; c < 3; c++) {
        const sl_pq_vector *v = &b->columns[c];
        assert_true(v->info->is_decimal);
        assert_int_equal(v->info->precision, precision[c]);
        assert_int_equal(v->info->scale, scale[c]);
        size_t n = c == 2 ? (size_t)v->list_offsets[3] : 3;
        assert_int_equal(n, c == 2 ? 5 : 3); /* [-19.99, null], [1.00, null], [10.00] */
        for (size_t k = 0; k < n; k++) {
            if (!want[c][k]) {
                assert_int_equal(v->valid[k], 0);
                continue;
            }
            assert_int_equal(v->valid[k], 1);
            size_t len = (size_t)(v->offsets[k + 1] - v->offsets[k]);
            assert_int_equal(len, strlen(want[c][k]));
            assert_memory_equal(v->data + v->offsets[k], want[c][k], len);
        }
    }
    sl_pq_reader_free(r);
    for (size_t k = 0; k < 3; k++)
        json_decref(rows[k]);
    tu_rmtree(dir);
}

/* Corrupt lists and lists nested too deep: SL_ERR_DECODE naming the file,
 * the column and the cause; a file's other columns still read. */
static void list_errors_name_the_cause(void **state)
{
    (void)state;
    need_list_files();
    const char *name;
    json_t *want;
    int files = 0;
    json_object_foreach(list_expected, name, want) {
        const char *why = json_string_value(json_object_get(want, "error"));
        if (!why)
            continue;
        char path[512];
        list_path(path, sizeof path, name);
        sl_pq_reader_params d = sl_pq_reader_default_params();
        sl_status st;
        assert_null(read_rows(path, &d, &st));
        assert_int_equal(st, SL_ERR_DECODE);
        const char *msg = sl_last_error();
        if (!strstr(msg, why) || !strstr(msg, path))
            fail_msg("%s: '%s' does not say '%s'", name, msg, why);
        const char *col = json_string_value(json_object_get(want, "unsupported"));
        if (col) { /* the column is listed as unsupported, refused when chosen, and the others read */
            sl_pq_reader *r;
            assert_int_equal(sl_pq_reader_open(path, NULL, &r), SL_OK);
            assert_int_equal(sl_pq_reader_column(r, 0)->type, SL_PQ_UNSUPPORTED);
            assert_string_equal(sl_pq_reader_column(r, 0)->name, col);
            const char *names[] = {col};
            assert_int_equal(sl_pq_reader_select(r, names, 1), SL_ERR_DECODE);
            assert_non_null(strstr(sl_last_error(), why));
            names[0] = "n";
            assert_int_equal(sl_pq_reader_select(r, names, 1), SL_OK);
            const sl_pq_batch *b;
            assert_int_equal(sl_pq_reader_next(r, &b), SL_OK);
            assert_int_equal(b->num_rows, 3);
            assert_int_equal(b->columns[0].i64[2], 3);
            sl_pq_reader_free(r);
        }
        files++;
    }
    assert_int_equal(files, 7);
}

/* A row's list is held whole in a batch: one longer than batch_rows is a
 * batch of its own, and the rows around it read as before; one that needs
 * more than the memory limit fails, naming it. */
static void a_list_longer_than_batch_rows_is_a_batch_of_its_own(void **state)
{
    (void)state;
    need_list_files();
    char path[512];
    list_path(path, sizeof path, "ten.parquet");
    json_t *want = json_object_get(json_object_get(list_expected, "ten.parquet"), "rows");
    const size_t limits[] = {10, 9, 4, 1};
    for (size_t i = 0; i < 4; i++) {
        sl_pq_reader_params p = sl_pq_reader_default_params();
        p.batch_rows = limits[i];
        sl_status st;
        json_t *rows = read_rows(path, &p, &st);
        assert_non_null(rows);
        assert_json_equal(rows, want, "ten.parquet");
        json_decref(rows);
    }

    /* 300,000 int64s in one row's list, between two short rows. */
    char *dir = tu_tmpdir(), big[512];
    snprintf(big, sizeof big, "%s/long.parquet", dir);
    const sl_pq_node leaf = {.kind = SL_PQ_NODE_LEAF, .type = SL_PQ_INT64};
    const sl_pq_node list = {.kind = SL_PQ_NODE_LIST, .element = &leaf};
    const sl_pq_column_def col = {.name = "counts", .nested = &list};
    sl_pq_writer *w;
    assert_int_equal(sl_pq_writer_open(big, &col, 1, NULL, &w), SL_OK);
    json_t *lists[3] = {json_pack("[i,i]", 1, 2), json_array(), json_pack("[i]", 3)};
    for (int k = 0; k < 300000; k++)
        json_array_append_new(lists[1], json_integer(k));
    for (int r = 0; r < 3; r++)
        assert_int_equal(sl_pq_writer_append(w, &(sl_pq_value){.json = lists[r]}), SL_OK);
    assert_int_equal(sl_pq_writer_close(w), SL_OK);
    sl_pq_writer_free(w);
    sl_pq_reader_params p = sl_pq_reader_default_params();
    p.batch_rows = 1000;
    sl_pq_reader *r;
    int64_t base = sl_alloc_live_bytes();
    assert_int_equal(sl_pq_reader_open(big, &p, &r), SL_OK);
    const sl_pq_batch *b;
    int64_t live[3];
    for (int row = 0; row < 3; row++) {
        assert_int_equal(sl_pq_reader_next(r, &b), SL_OK);
        assert_non_null(b);
        live[row] = sl_alloc_live_bytes() - base;
        const sl_pq_vector *v = &b->columns[0];
        int64_t n = (int64_t)json_array_size(lists[row]);
        /* the long row alone; the one before it ends its batch */
        assert_int_equal(b->num_rows, 1);
        assert_int_equal(v->list_offsets[1], n);
        for (int64_t k = 0; k < n; k++)
            assert_true(v->i64[k] == json_integer_value(json_array_get(lists[row], (size_t)k)));
    }
    /* The long row's arrays (2.4 MB of values alone) are given back after
     * it, so the memory is there for the next long row of any column. */
    assert_true(live[1] > 2400000);
    assert_true(live[2] < live[1] - 2000000);
    assert_int_equal(sl_pq_reader_next(r, &b), SL_OK);
    assert_null(b);
    sl_pq_reader_free(r);
    p.memory_limit = 1 << 20; /* 300,000 elements take more */
    sl_status st;
    assert_null(read_rows(big, &p, &st));
    assert_int_equal(st, SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), "memory limit"));
    for (int k = 0; k < 3; k++)
        json_decref(lists[k]);
    tu_rmtree(dir);
}

/* 300,000 rows of null and empty lists in a few KB of RLE are handed out
 * batch by batch: the most allocated at once stays far below what holding
 * them all would take (9 bytes a row). */
static void null_lists_read_in_bounded_memory(void **state)
{
    (void)state;
    need_list_files();
    char path[512];
    list_path(path, sizeof path, "many-null-lists.parquet");
    int64_t base = sl_alloc_live_bytes();
    sl_alloc_peak_reset();
    sl_pq_reader_params p = sl_pq_reader_default_params();
    p.batch_rows = 1000;
    sl_pq_reader *r;
    assert_int_equal(sl_pq_reader_open(path, &p, &r), SL_OK);
    const sl_pq_batch *b;
    int64_t rows = 0;
    sl_status st;
    while ((st = sl_pq_reader_next(r, &b)) == SL_OK && b) {
        const sl_pq_vector *v = &b->columns[0];
        assert_int_equal(v->list_offsets[b->num_rows], 0);
        for (int64_t i = 0; i < b->num_rows; i++)
            assert_int_equal(v->list_valid[i], (rows + i) % 2 == 0); /* odd rows are null, even ones empty */
        rows += b->num_rows;
    }
    assert_int_equal(st, SL_OK);
    sl_pq_reader_free(r);
    int64_t peak = sl_alloc_peak_bytes() - base;
    assert_int_equal(rows, 300000);
    assert_true(peak < (1 << 20));
    assert_int_equal(sl_alloc_live_bytes(), base);
}

/* The offset of the encoding varint of data page `page` of the generator's
 * hand-written files: each page header is {1: type, 2: size, 3: size,
 * 5: {1: values, 2: encoding, 3: RLE, 4: RLE}}, one-byte field headers. */
static size_t hand_page_encoding(const uint8_t *d, size_t len, int page)
{
    size_t at = 4;
    for (int k = 0;; k++) {
        uint64_t v[4];
        size_t i = at;
        for (int f = 0; f < 4; f++) { /* type, sizes, then (inside field 5) the values */
            i += 1 + (f == 3); /* a field header (field 5's too before the values) */
            v[f] = 0;
            for (int shift = 0; i < len; shift += 7) {
                v[f] |= (uint64_t)(d[i] & 0x7F) << shift;
                if (!(d[i++] & 0x80))
                    break;
            }
        }
        assert_true(i + 8 <= len && d[at] == 0x15 && d[i] == 0x15);
        if (k == page)
            return i + 1;
        at = i + 2 + 4 + 2 + (size_t)(v[2] >> 1); /* encoding, levels' encodings, two struct ends, the body */
    }
}

/* A page whose header names an encoding there is no decoder for (63), in a
 * list whose rows span pages (hand-3level: pages of 5 levels): strict, the
 * row group fails naming it; with null_undecodable the page's values are
 * null, its levels kept, and exactly the rows its levels reach are lost,
 * across batches of 2 rows (a long list a batch of its own), the others
 * read as written. */
static void an_undecodable_page_loses_only_its_rows(void **state)
{
    (void)state;
    need_list_files();
    char path[512], bad[512];
    list_path(path, sizeof path, "hand-3level.parquet");
    list_path(bad, sizeof bad, "enc63.parquet");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t d[4096];
    size_t len = fread(d, 1, sizeof d, f);
    fclose(f);
    assert_true(len > 0 && len < sizeof d);
    const json_t *want = json_object_get(json_object_get(list_expected, "hand-3level.parquet"), "rows");
    /* rows ["a","bb",null,"ccc"], null, [], ["d"], 23 long ones, [null],
     * ["e","f"]: page 0 holds rows 0 and 1; page 1 rows 2, 3 and row 4's
     * first 3 elements; page 2 only row 4's next 5 */
    struct {
        int page;
        int64_t lo, hi;      /* the lost rows */
        size_t from, to;     /* row 4's elements in the page */
    } cases[] = {{0, 0, 2, 0, 0}, {1, 2, 5, 0, 3}, {2, 4, 5, 3, 8}};
    for (size_t c = 0; c < 3; c++) {
        uint8_t copy[4096];
        memcpy(copy, d, len);
        size_t at = hand_page_encoding(copy, len, cases[c].page);
        assert_int_equal(copy[at], 0); /* PLAIN */
        copy[at] = 63 << 1;
        tu_write(list_dir, "enc63.parquet", copy, len);
        sl_pq_reader_params p = sl_pq_reader_default_params();
        p.batch_rows = 2;
        sl_status st;
        json_t *rows = read_rows(bad, &p, &st);
        assert_int_equal(st, SL_ERR_DECODE);
        assert_non_null(strstr(sl_last_error(), "column 'tags.list.element': unsupported encoding unknown (63)"));
        json_decref(rows);

        p.null_undecodable = true;
        int64_t base = sl_alloc_live_bytes();
        sl_pq_reader *r;
        assert_int_equal(sl_pq_reader_open(bad, &p, &r), SL_OK);
        const sl_pq_batch *b;
        int64_t row = 0;
        while ((st = sl_pq_reader_next(r, &b)) == SL_OK && b) {
            const sl_pq_vector *v = &b->columns[0];
            assert_true((v->n_lost > 0) == (v->lost_why != NULL));
            for (int64_t i = 0; i < b->num_rows; i++, row++) {
                bool lost = row >= cases[c].lo && row < cases[c].hi;
                assert_int_equal(sl_pq_vector_lost(v, i), lost);
                json_t *got = pq_cell(v, i);
                const json_t *as = json_object_get(json_array_get(want, (size_t)row), "tags.list.element");
                if (!lost) {
                    assert_true(json_equal(got, as));
                } else if (!json_is_array(as)) {
                    assert_true(json_is_null(got));
                } else { /* its shape, the page's elements null */
                    size_t n = json_array_size(as), from = row == 4 ? cases[c].from : 0, to = row == 4 ? cases[c].to : n;
                    assert_int_equal(json_array_size(got), n);
                    for (size_t e = 0; e < n; e++)
                        assert_true(json_equal(json_array_get(got, e),
                                               e >= from && e < to ? json_null() : json_array_get(as, e)));
                }
                json_decref(got);
                if (lost)
                    assert_non_null(strstr(v->lost_why, "row group 0, column 'tags.list.element': unsupported "
                                                        "encoding unknown (63)"));
            }
        }
        assert_int_equal(st, SL_OK);
        assert_int_equal(row, (int64_t)json_array_size(want));
        sl_pq_reader_free(r);
        assert_int_equal(sl_alloc_live_bytes(), base);
        unlink(bad);
    }
}

/* Each allocation failing in turn while reading list files (pyarrow's, with
 * dictionaries and image structs, and one whose rows span pages): reading
 * batches fails with SL_ERR_NOMEM or reads every row, and nothing leaks. */
static void list_allocation_failures_are_clean(void **state)
{
    (void)state;
    need_list_files();
    const char *files[] = {"arrow-zstd-dict-v1.parquet", "hand-3level.parquet", "hand-2level-struct.parquet"};
    for (size_t f = 0; f < 3; f++) {
        char path[512];
        list_path(path, sizeof path, files[f]);
        size_t want = json_array_size(json_object_get(json_object_get(list_expected, files[f]), "rows"));
        int64_t base = sl_alloc_live_bytes();
        bool ok = false;
        sl_pq_reader_params p = sl_pq_reader_default_params();
        p.batch_rows = 64;
        p.batch_bytes = 100;
        for (long n = 0; n < 5000 && !ok; n++) {
            sl_alloc_fail_after(n);
            sl_pq_reader *r;
            sl_status st = sl_pq_reader_open(path, &p, &r); /* a footer's failure may read as corrupt */
            size_t rows = 0;
            if (st == SL_OK) {
                const sl_pq_batch *b;
                while ((st = sl_pq_reader_next(r, &b)) == SL_OK && b)
                    rows += (size_t)b->num_rows;
                sl_pq_reader_free(r);
                if (st != SL_OK && st != SL_ERR_NOMEM)
                    fail_msg("%s, allocation %ld failing: %s", files[f], n, sl_last_error());
            }
            sl_alloc_fail_after(-1);
            assert_int_equal(sl_alloc_live_bytes(), base);
            ok = st == SL_OK;
            if (ok)
                assert_int_equal(rows, want);
        }
        assert_true(ok);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(thrift_varint_zigzag_round_trip),
        cmocka_unit_test(thrift_field_headers_known_bytes),
        cmocka_unit_test(thrift_long_list_header),
        cmocka_unit_test(thrift_struct_round_trip_and_skip),
        cmocka_unit_test(thrift_corrupt_input),
        cmocka_unit_test(rle_spec_vectors),
        cmocka_unit_test(rle_round_trip_and_truncation),
        cmocka_unit_test(bitpacked_spec_vectors),
        cmocka_unit_test(delta_spec_vectors),
        cmocka_unit_test(byte_stream_split_spreads_bytes),
        cmocka_unit_test(lz4_and_brotli_pages),
        cmocka_unit_test(round_trip_every_codec),
        cmocka_unit_test(empty_file_and_one_row_group),
        cmocka_unit_test(writer_rejects_bad_rows),
        cmocka_unit_test(writer_refuses_a_page_too_large_after_compression),
        cmocka_unit_test(reader_errors_name_the_file),
        cmocka_unit_test(empty_byte_arrays_in_batches),
        cmocka_unit_test(lying_sizes_are_refused_without_allocating),
        cmocka_unit_test(long_names_over_many_leaves_are_refused),
        cmocka_unit_test(allocation_failures_are_clean),
        cmocka_unit_test(lists_read_as_written),
        cmocka_unit_test(whole_lists_put_back_together),
        cmocka_unit_test(list_errors_name_the_cause),
        cmocka_unit_test(a_list_longer_than_batch_rows_is_a_batch_of_its_own),
        cmocka_unit_test(null_lists_read_in_bounded_memory),
        cmocka_unit_test(list_allocation_failures_are_clean),
        cmocka_unit_test(dictionary_encodes_where_it_pays),
        cmocka_unit_test(decimals_encode_as_big_endian_twos_complement),
        cmocka_unit_test(decimal_leaves_read_as_written),
        cmocka_unit_test(a_decimal_input_column_is_a_decimal_leaf),
        cmocka_unit_test(two_shapes_merge_to_the_decimal_that_holds_both),
        cmocka_unit_test(repeated_large_values_stay_within_the_memory_limit),
        cmocka_unit_test(an_undecodable_page_loses_only_its_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
