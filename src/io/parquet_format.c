/* io/parquet_format.c — Parquet constants, byte buffers, the RLE/bit-packed
 * hybrid and page compression shared by parquet_write.c and parquet_read.c. */
#include <limits.h>
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
    [SL_PQ_FLOAT] = "float",   [SL_PQ_UNSUPPORTED] = "unsupported",
};

const char *sl_pq_type_name(sl_pq_type type)
{
    return (unsigned)type <= SL_PQ_UNSUPPORTED ? type_names[type] : "unsupported";
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
    case 3: return "lzo";
    case 4: return "brotli";
    case 5: return "lz4";
    case SL_PQ_ZSTD: return "zstd";
    case 7: return "lz4_raw";
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
    case 5: return "DELTA_BINARY_PACKED";
    case 6: return "DELTA_LENGTH_BYTE_ARRAY";
    case 7: return "DELTA_BYTE_ARRAY";
    case SL_PQE_RLE_DICTIONARY: return "RLE_DICTIONARY";
    case 9: return "BYTE_STREAM_SPLIT";
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

static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
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

bool sl_rle_decode(const uint8_t *data, size_t len, int bit_width, uint32_t *out, size_t n)
{
    if (bit_width < 0 || bit_width > 32)
        return false;
    const uint8_t *p = data, *end = data + len;
    size_t value_bytes = ((size_t)bit_width + 7) / 8;
    uint64_t mask = bit_width == 32 ? 0xFFFFFFFFu : ((uint64_t)1 << bit_width) - 1;
    size_t i = 0;
    while (i < n) {
        uint64_t header;
        if (!get_varint(&p, end, &header))
            return false;
        if (header & 1) { /* bit-packed: (header >> 1) groups of 8 values */
            uint64_t groups = header >> 1;
            if (groups > (SIZE_MAX / 8) / 32)
                return false;
            size_t count = (size_t)groups * 8;
            size_t nbytes = (size_t)groups * (size_t)bit_width;
            /* The last run may be cut short when its padding is not stored. */
            size_t have = (size_t)(end - p);
            if (count > n - i)
                count = n - i;
            if (have < nbytes && have * 8 < count * (size_t)bit_width)
                return false;
            uint64_t acc = 0;
            int acc_bits = 0;
            const uint8_t *q = p;
            for (size_t k = 0; k < count; k++) {
                while (acc_bits < bit_width) {
                    acc |= (uint64_t)*q++ << acc_bits;
                    acc_bits += 8;
                }
                out[i++] = (uint32_t)(acc & mask);
                acc >>= bit_width;
                acc_bits -= bit_width;
            }
            p += nbytes < have ? nbytes : have;
        } else { /* RLE: a count, then the value in ceil(bit_width / 8) bytes */
            uint64_t count = header >> 1;
            if ((size_t)(end - p) < value_bytes)
                return false;
            uint32_t v = 0;
            for (size_t k = 0; k < value_bytes; k++)
                v |= (uint32_t)p[k] << (8 * k);
            p += value_bytes;
            if (bit_width < 32 && v > mask)
                return false;
            if (count > n - i)
                count = n - i;
            for (uint64_t k = 0; k < count; k++)
                out[i++] = v;
        }
    }
    return true;
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

const char *sl_pq_decompress(int codec, const uint8_t *src, size_t n, uint8_t *dst,
                             size_t dst_len, void *zstd_dctx)
{
    switch (codec) {
    case SL_PQ_UNCOMPRESSED:
        if (n != dst_len)
            return "uncompressed page size does not match its stored size";
        memcpy(dst, src, n);
        return NULL;
    case SL_PQ_SNAPPY: {
        size_t len;
        if (snappy_uncompressed_length((const char *)src, n, &len) != SNAPPY_OK || len != dst_len)
            return "corrupt snappy data (length does not match the page header)";
        if (snappy_uncompress((const char *)src, n, (char *)dst, &len) != SNAPPY_OK || len != dst_len)
            return "corrupt snappy data";
        return NULL;
    }
    case SL_PQ_ZSTD: {
        size_t r = zstd_dctx ? ZSTD_decompressDCtx(zstd_dctx, dst, dst_len, src, n)
                             : ZSTD_decompress(dst, dst_len, src, n);
        if (ZSTD_isError(r))
            return "corrupt zstd data";
        if (r != dst_len)
            return "zstd data shorter than the page header says";
        return NULL;
    }
    case SL_PQ_GZIP: {
        if (n > UINT_MAX || dst_len > UINT_MAX)
            return "page too large for gzip";
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (inflateInit2(&zs, 15 + 32) != Z_OK) /* gzip or zlib header */
            return "gzip initialisation failed";
        zs.next_in = (Bytef *)src;
        zs.avail_in = (uInt)n;
        zs.next_out = dst;
        zs.avail_out = (uInt)dst_len;
        int rc = inflate(&zs, Z_FINISH);
        size_t produced = zs.total_out;
        inflateEnd(&zs);
        if (rc != Z_STREAM_END)
            return "corrupt gzip data";
        if (produced != dst_len)
            return "gzip data shorter than the page header says";
        return NULL;
    }
    default:
        return "unsupported codec";
    }
}
