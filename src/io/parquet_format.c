/* io/parquet_format.c — Parquet constants, byte buffers, the RLE/bit-packed
 * hybrid and page compression shared by parquet_write.c and parquet_read.c. */
#include <brotli/decode.h>
#include <limits.h>
#include <lz4.h>
#include <snappy-c.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "core/alloc.h"
#include "io/parquet_format.h"
#include "io/thrift_compact.h"

/* ---- names ------------------------------------------------------------- */

static const char *const type_names[] = {
    [SL_PQ_STRING] = "string", [SL_PQ_BINARY] = "binary", [SL_PQ_INT64] = "int64",
    [SL_PQ_DOUBLE] = "double", [SL_PQ_BOOL] = "bool",     [SL_PQ_INT32] = "int32",
    [SL_PQ_FLOAT] = "float",   [SL_PQ_UNSUPPORTED] = "unsupported", [SL_PQ_DECIMAL] = "decimal",
};

const char *sl_pq_type_name(sl_pq_type type)
{
    return (unsigned)type <= SL_PQ_DECIMAL ? type_names[type] : "unsupported";
}

/* ---- decimals ---------------------------------------------------------- */

bool sl_pq_decimal_valid(int precision, int scale)
{
    return precision >= 1 && precision <= SL_PQ_DECIMAL_MAX_PRECISION && scale >= 0 && scale <= precision;
}

int sl_pq_decimal_width(int precision)
{
    /* The most digits n bytes hold: floor(log10(2^(8n - 1) - 1)). */
    static const int most[] = {2, 4, 6, 9, 11, 14, 16, 18, 21, 23, 26, 28, 31, 33, 35, 38};
    int n = 1;
    while (n < 16 && most[n - 1] < precision)
        n++;
    return n;
}

bool sl_pq_type_parse(const char *name, sl_pq_type *out)
{
    for (int t = 0; t < SL_PQ_UNSUPPORTED; t++)
        if (strcmp(name, type_names[t]) == 0) {
            *out = (sl_pq_type)t;
            return true;
        }
    return false;
}

const char *sl_pq_codec_name(int codec)
{
    switch (codec) {
    case SL_PQ_UNCOMPRESSED: return "none";
    case SL_PQ_SNAPPY: return "snappy";
    case SL_PQ_GZIP: return "gzip";
    case SL_PQ_LZO: return "lzo";
    case SL_PQ_BROTLI: return "brotli";
    case SL_PQ_LZ4: return "lz4";
    case SL_PQ_ZSTD: return "zstd";
    case SL_PQ_LZ4_RAW: return "lz4_raw";
    default: return "unknown";
    }
}

bool sl_pq_codec_parse(const char *name, sl_pq_codec *out)
{
    static const sl_pq_codec all[] = {SL_PQ_UNCOMPRESSED, SL_PQ_SNAPPY, SL_PQ_GZIP, SL_PQ_ZSTD};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, sl_pq_codec_name(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    return false;
}

const char *sl_pq_encoding_name(int encoding)
{
    switch (encoding) {
    case SL_PQE_PLAIN: return "PLAIN";
    case SL_PQE_PLAIN_DICTIONARY: return "PLAIN_DICTIONARY";
    case SL_PQE_RLE: return "RLE";
    case SL_PQE_BIT_PACKED: return "BIT_PACKED";
    case SL_PQE_DELTA_BINARY_PACKED: return "DELTA_BINARY_PACKED";
    case SL_PQE_DELTA_LENGTH_BYTE_ARRAY: return "DELTA_LENGTH_BYTE_ARRAY";
    case SL_PQE_DELTA_BYTE_ARRAY: return "DELTA_BYTE_ARRAY";
    case SL_PQE_RLE_DICTIONARY: return "RLE_DICTIONARY";
    case SL_PQE_BYTE_STREAM_SPLIT: return "BYTE_STREAM_SPLIT";
    default: return "unknown";
    }
}

/* ---- RLE / bit-packed hybrid ------------------------------------------- */

int sl_pq_bit_width(uint32_t max)
{
    int w = 0;
    while (max) {
        w++;
        max >>= 1;
    }
    return w;
}

static bool put_varint(sl_buf *out, uint64_t v)
{
    uint8_t tmp[10];
    return sl_buf_append(out, tmp, sl_tc_encode_varint(v, tmp));
}

static size_t run_length(const uint32_t *v, size_t i, size_t n)
{
    size_t j = i + 1;
    while (j < n && v[j] == v[i])
        j++;
    return j - i;
}

/* Runs of 8 or more equal values become RLE runs; the rest go into bit-packed
 * runs of whole groups of 8 (the last group padded with zeros), at most 63
 * groups each so the header stays one byte as other writers do. */
bool sl_rle_encode(sl_buf *out, const uint32_t *values, size_t n, int bit_width)
{
    size_t value_bytes = ((size_t)bit_width + 7) / 8;
    size_t i = 0;
    while (i < n) {
        size_t run = run_length(values, i, n);
        if (run >= 8) {
            uint8_t v[4];
            for (size_t k = 0; k < value_bytes; k++)
                v[k] = (uint8_t)(values[i] >> (8 * k));
            if (!put_varint(out, (uint64_t)run << 1) || !sl_buf_append(out, v, value_bytes))
                return false;
            i += run;
            continue;
        }
        size_t groups = 0, start = i;
        while (i < n && groups < 63) {
            i += 8;
            groups++;
            if (i < n && run_length(values, i, n) >= 8)
                break;
        }
        if (i > n)
            i = n;
        size_t nbytes = groups * (size_t)bit_width; /* 8 values per group */
        if (!put_varint(out, (uint64_t)groups << 1 | 1) || !sl_buf_reserve(out, nbytes))
            return false;
        uint8_t *dst = out->data + out->len;
        memset(dst, 0, nbytes);
        size_t bit = 0;
        for (size_t k = start; k < i; k++)
            for (int b = 0; b < bit_width; b++, bit++)
                if (values[k] >> b & 1)
                    dst[bit / 8] |= (uint8_t)(1u << (bit % 8));
        out->len += nbytes;
    }
    return true;
}

bool sl_pq_read_uleb(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return false;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

static bool next_run(sl_rle_stream *s)
{
    uint64_t header;
    if (!sl_pq_read_uleb(&s->p, s->end, &header))
        return false;
    if (header & 1) { /* bit-packed: (header >> 1) groups of 8 values */
        uint64_t groups = header >> 1;
        if (groups > (SIZE_MAX / 8) / 32)
            return false;
        /* The last run may be cut short when its padding is not stored: it
         * fails only if a value past the stored bytes is asked for. */
        size_t nbytes = (size_t)groups * (size_t)s->bit_width, have = (size_t)(s->end - s->p);
        s->q = s->p;
        s->run_end = s->p + (nbytes < have ? nbytes : have);
        s->p = s->run_end;
        s->left = groups * 8;
        s->packed = true;
        s->acc = 0;
        s->acc_bits = 0;
        return true;
    }
    /* RLE: a count, then the value in ceil(bit_width / 8) bytes */
    size_t value_bytes = ((size_t)s->bit_width + 7) / 8;
    if ((size_t)(s->end - s->p) < value_bytes)
        return false;
    uint32_t v = 0;
    for (size_t k = 0; k < value_bytes; k++)
        v |= (uint32_t)s->p[k] << (8 * k);
    s->p += value_bytes;
    if (s->bit_width < 32 && v >> s->bit_width)
        return false;
    s->left = header >> 1;
    s->packed = false;
    s->value = v;
    return true;
}

bool sl_rle_stream_init(sl_rle_stream *s, const uint8_t *data, size_t len, int bit_width)
{
    memset(s, 0, sizeof *s);
    s->p = data;
    s->end = data + len;
    s->bit_width = bit_width;
    return bit_width >= 0 && bit_width <= 32;
}

bool sl_bitpacked_stream_init(sl_rle_stream *s, const uint8_t *data, size_t len, int bit_width)
{
    if (!sl_rle_stream_init(s, data, 0, bit_width)) /* no run header after the one run */
        return false;
    s->q = data;
    s->run_end = data + len;
    s->packed = s->msb = true;
    /* the values len bytes hold, without overflowing len * 8 */
    s->left = bit_width ? len / (size_t)bit_width * 8 + len % (size_t)bit_width * 8 / (size_t)bit_width : UINT64_MAX;
    return true;
}

void sl_rle_stream_repeat(sl_rle_stream *s, uint32_t value, uint64_t n)
{
    memset(s, 0, sizeof *s); /* p == end: no run after this one */
    s->bit_width = 32;
    s->left = n;
    s->value = value;
}

bool sl_rle_stream_read(sl_rle_stream *s, uint32_t *out, size_t n)
{
    int bw = s->bit_width;
    uint64_t mask = bw == 32 ? 0xFFFFFFFFu : ((uint64_t)1 << bw) - 1;
    size_t i = 0;
    while (i < n) {
        if (s->left == 0) {
            if (!next_run(s)) {
                s->p = s->end = NULL; /* unusable from here on */
                return false;
            }
            continue;
        }
        size_t take = s->left < n - i ? (size_t)s->left : n - i;
        s->left -= take;
        if (!s->packed) {
            for (size_t k = 0; k < take; k++)
                out[i++] = s->value;
            continue;
        }
        uint64_t acc = s->acc;
        int acc_bits = s->acc_bits;
        const uint8_t *q = s->q;
        for (size_t k = 0; k < take; k++) {
            while (acc_bits < bw) {
                if (q >= s->run_end) {
                    s->p = s->end = NULL;
                    s->left = 0;
                    return false;
                }
                /* msb: the next byte goes below the bits held (those above
                 * acc_bits, long taken, are masked off) */
                acc = s->msb ? acc << 8 | *q++ : acc | (uint64_t)*q++ << acc_bits;
                acc_bits += 8;
            }
            acc_bits -= bw;
            if (s->msb) {
                out[i++] = (uint32_t)(acc >> acc_bits & mask);
            } else {
                out[i++] = (uint32_t)(acc & mask);
                acc >>= bw;
            }
        }
        s->acc = acc;
        s->acc_bits = acc_bits;
        s->q = q;
    }
    return true;
}

bool sl_rle_decode(const uint8_t *data, size_t len, int bit_width, uint32_t *out, size_t n)
{
    sl_rle_stream s;
    return sl_rle_stream_init(&s, data, len, bit_width) && sl_rle_stream_read(&s, out, n);
}

/* ---- compression ------------------------------------------------------- */

const char *sl_pq_compress(int codec, const uint8_t *src, size_t n, sl_buf *out, void *zstd_cctx)
{
    switch (codec) {
    case SL_PQ_UNCOMPRESSED:
        return sl_buf_append(out, src, n) ? NULL : "out of memory";
    case SL_PQ_SNAPPY: {
        size_t cap = snappy_max_compressed_length(n);
        if (!sl_buf_reserve(out, cap))
            return "out of memory";
        if (snappy_compress((const char *)src, n, (char *)out->data + out->len, &cap) != SNAPPY_OK)
            return "snappy compression failed";
        out->len += cap;
        return NULL;
    }
    case SL_PQ_ZSTD: {
        size_t cap = ZSTD_compressBound(n);
        if (!sl_buf_reserve(out, cap))
            return "out of memory";
        size_t r = zstd_cctx ? ZSTD_compressCCtx(zstd_cctx, out->data + out->len, cap, src, n, 1)
                             : ZSTD_compress(out->data + out->len, cap, src, n, 1);
        if (ZSTD_isError(r))
            return "zstd compression failed";
        out->len += r;
        return NULL;
    }
    case SL_PQ_GZIP: {
        if (n > UINT_MAX)
            return "page too large for gzip";
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return "gzip initialisation failed";
        size_t cap = deflateBound(&zs, (uLong)n);
        if (!sl_buf_reserve(out, cap)) {
            deflateEnd(&zs);
            return "out of memory";
        }
        zs.next_in = (Bytef *)src;
        zs.avail_in = (uInt)n;
        zs.next_out = out->data + out->len;
        zs.avail_out = (uInt)cap;
        int rc = deflate(&zs, Z_FINISH);
        size_t produced = zs.total_out;
        deflateEnd(&zs);
        if (rc != Z_STREAM_END)
            return "gzip compression failed";
        out->len += produced;
        return NULL;
    }
    default:
        return "unsupported codec";
    }
}

/* Room for `cap` bytes in b, never more than asked: a decompressed page's
 * buffer grows toward its claimed size only as output arrives. */
static bool reserve_exact(sl_buf *b, size_t cap)
{
    if (cap == 0)
        cap = 1;
    if (b->cap >= cap)
        return true;
    uint8_t *data = sl_realloc(b->data, cap);
    if (!data)
        return false;
    b->data = data;
    b->cap = cap;
    return true;
}

/* The first size for a streamed output: a guess from the input, at most
 * the claim; it doubles as output arrives. */
static size_t first_cap(size_t n, size_t expect)
{
    size_t guess = n < SIZE_MAX / 4 ? 4 * n : SIZE_MAX;
    if (guess < (64u << 10))
        guess = 64u << 10;
    return guess < expect ? guess : expect;
}

/* A streamed decompressor's output, grown (doubling, never past expect)
 * once what it produced fills it. False when out of memory. */
static bool grow_when_full(sl_buf *out, size_t *cap, size_t produced, size_t expect)
{
    if (produced < *cap || *cap >= expect)
        return true;
    *cap = *cap < expect / 2 ? 2 * *cap : expect;
    return reserve_exact(out, *cap);
}

static const char *unzstd(const uint8_t *src, size_t n, size_t expect, sl_buf *out, ZSTD_DCtx *d)
{
    size_t cap = first_cap(n, expect), produced = 0;
    if (!reserve_exact(out, cap))
        return "out of memory";
    ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
    ZSTD_inBuffer in = {src, n, 0};
    for (;;) {
        if (!grow_when_full(out, &cap, produced, expect))
            return "out of memory";
        ZSTD_outBuffer o = {out->data, cap, produced};
        size_t in_before = in.pos;
        size_t rc = ZSTD_decompressStream(d, &o, &in);
        if (ZSTD_isError(rc))
            return "corrupt zstd data";
        bool progress = o.pos > produced || in.pos > in_before;
        produced = o.pos;
        if (rc == 0 && in.pos == in.size)
            break; /* every frame ended, all input used */
        if (!progress)
            return produced == expect ? "zstd data longer than the page header says"
                                      : "corrupt zstd data (truncated)";
    }
    out->len = produced;
    return produced == expect ? NULL : "zstd data shorter than the page header says";
}

static const char *ungzip(const uint8_t *src, size_t n, size_t expect, sl_buf *out)
{
    if (n > UINT_MAX || expect > UINT_MAX)
        return "page too large for gzip";
    size_t cap = first_cap(n, expect), produced = 0;
    if (!reserve_exact(out, cap))
        return "out of memory";
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 32) != Z_OK) /* gzip or zlib header */
        return "gzip initialisation failed";
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)n;
    const char *err = NULL;
    for (;;) {
        if (!grow_when_full(out, &cap, produced, expect)) {
            err = "out of memory";
            break;
        }
        zs.next_out = out->data + produced;
        zs.avail_out = (uInt)(cap - produced);
        int rc = inflate(&zs, Z_NO_FLUSH);
        produced = zs.total_out;
        if (rc == Z_STREAM_END)
            break;
        if (rc == Z_OK)
            continue;
        if (rc == Z_BUF_ERROR) /* no progress possible: output full or input used up */
            err = produced == expect ? "gzip data longer than the page header says" : "corrupt gzip data (truncated)";
        else
            err = "corrupt gzip data";
        break;
    }
    inflateEnd(&zs);
    out->len = produced;
    if (!err && produced != expect)
        err = "gzip data shorter than the page header says";
    return err;
}

static const char *unbrotli(const uint8_t *src, size_t n, size_t expect, sl_buf *out)
{
    size_t cap = first_cap(n, expect);
    if (!reserve_exact(out, cap))
        return "out of memory";
    BrotliDecoderState *d = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    if (!d)
        return "out of memory";
    const uint8_t *in = src;
    size_t in_left = n, produced = 0;
    const char *err = NULL;
    for (;;) {
        if (!grow_when_full(out, &cap, produced, expect)) {
            err = "out of memory";
            break;
        }
        uint8_t *next_out = out->data + produced;
        size_t out_left = cap - produced;
        BrotliDecoderResult rc = BrotliDecoderDecompressStream(d, &in_left, &in, &out_left, &next_out, NULL);
        produced = (size_t)(next_out - out->data);
        if (rc == BROTLI_DECODER_RESULT_SUCCESS) {
            if (in_left)
                err = "corrupt brotli data (bytes after its end)";
            break;
        }
        if (rc == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT && produced < expect)
            continue;
        err = rc == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT ? "brotli data longer than the page header says"
              : rc == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT ? "corrupt brotli data (truncated)"
                                                              : "corrupt brotli data";
        break;
    }
    BrotliDecoderDestroyInstance(d);
    out->len = produced;
    if (!err && produced != expect)
        err = "brotli data shorter than the page header says";
    return err;
}

/* An LZ4 block of n bytes, `expect` bytes decompressed, appended to out at
 * `at` (out reserved to at + expect). */
static const char *lz4_into(const uint8_t *src, size_t n, size_t expect, sl_buf *out, size_t at)
{
    if (n > INT_MAX || expect > INT_MAX)
        return "page too large for lz4";
    int got = LZ4_decompress_safe((const char *)src, (char *)out->data + at, (int)n, (int)expect);
    if (got < 0 || (size_t)got != expect)
        return "corrupt lz4 data";
    return NULL;
}

/* LZ4_RAW (codec 7): one block, no framing. */
static const char *unlz4_block(const uint8_t *src, size_t n, size_t expect, sl_buf *out)
{
    if (expect / SL_LZ4_MAX_RATIO > n)
        return "corrupt lz4 data (claims more than its bytes can hold)";
    if (!reserve_exact(out, expect))
        return "out of memory";
    const char *err = lz4_into(src, n, expect, out, 0);
    out->len = err ? 0 : expect;
    return err;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* LZ4 (codec 5, deprecated): parquet-java wrote Hadoop's framing (blocks
 * of a big-endian decompressed then compressed length, then the data);
 * older parquet-cpp wrote a bare block. The framing is tried first, as
 * Arrow does. */
static const char *unlz4_hadoop(const uint8_t *src, size_t n, size_t expect, sl_buf *out)
{
    if (expect / SL_LZ4_MAX_RATIO > n)
        return "corrupt lz4 data (claims more than its bytes can hold)";
    if (!reserve_exact(out, expect))
        return "out of memory";
    size_t at = 0, produced = 0;
    bool framed = n >= 8;
    while (framed && at < n) {
        if (n - at < 8) {
            framed = false;
            break;
        }
        size_t usize = be32(src + at), csize = be32(src + at + 4);
        at += 8;
        if (csize > n - at || usize > expect - produced || lz4_into(src + at, csize, usize, out, produced)) {
            framed = false;
            break;
        }
        at += csize;
        produced += usize;
    }
    if (framed && produced == expect) {
        out->len = expect;
        return NULL;
    }
    return unlz4_block(src, n, expect, out);
}

const char *sl_pq_decompress(int codec, const uint8_t *src, size_t n, size_t expect, sl_buf *out,
                             void *zstd_dctx)
{
    out->len = 0;
    switch (codec) {
    case SL_PQ_UNCOMPRESSED:
        if (n != expect)
            return "uncompressed page size does not match its stored size";
        return sl_buf_append(out, src, n) ? NULL : "out of memory";
    case SL_PQ_SNAPPY: {
        size_t len;
        if (snappy_uncompressed_length((const char *)src, n, &len) != SNAPPY_OK || len != expect)
            return "corrupt snappy data (length does not match the page header)";
        if (n > SIZE_MAX / SL_SNAPPY_MAX_RATIO || len > n * SL_SNAPPY_MAX_RATIO)
            return "corrupt snappy data (claims more than its bytes can hold)";
        if (!reserve_exact(out, len))
            return "out of memory";
        if (snappy_uncompress((const char *)src, n, (char *)out->data, &len) != SNAPPY_OK || len != expect)
            return "corrupt snappy data";
        out->len = len;
        return NULL;
    }
    case SL_PQ_ZSTD: {
        if (zstd_dctx)
            return unzstd(src, n, expect, out, zstd_dctx);
        ZSTD_DCtx *d = ZSTD_createDCtx();
        if (!d)
            return "out of memory";
        const char *err = unzstd(src, n, expect, out, d);
        ZSTD_freeDCtx(d);
        return err;
    }
    case SL_PQ_GZIP:
        return ungzip(src, n, expect, out);
    case SL_PQ_BROTLI:
        return unbrotli(src, n, expect, out);
    case SL_PQ_LZ4_RAW:
        return unlz4_block(src, n, expect, out);
    case SL_PQ_LZ4:
        return unlz4_hadoop(src, n, expect, out);
    default:
        return "unsupported codec";
    }
}
