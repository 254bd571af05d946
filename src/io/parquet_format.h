/* io/parquet_format.h — what the Parquet writer and reader share: the format's
 * numbers (physical types, encodings, codecs, page types), our column types,
 * a growable byte buffer, the RLE/bit-packed hybrid codec (bit widths 0..32,
 * whole or streamed) and page (de)compression: zstd, snappy and gzip both
 * ways; brotli, LZ4_RAW and LZ4 (Hadoop's framing, or a bare block) read only.
 * Stateless and thread-safe, except that a zstd context passed in and an
 * sl_rle_stream each belong to one thread. Buffers are sl_malloc'd and released with sl_buf_free(). */
#ifndef SL_IO_PARQUET_FORMAT_H
#define SL_IO_PARQUET_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* parquet.thrift enums, by their wire values. */
enum { SL_PQT_BOOLEAN = 0, SL_PQT_INT32 = 1, SL_PQT_INT64 = 2, SL_PQT_INT96 = 3,
       SL_PQT_FLOAT = 4, SL_PQT_DOUBLE = 5, SL_PQT_BYTE_ARRAY = 6, SL_PQT_FIXED = 7 };
enum { SL_PQE_PLAIN = 0, SL_PQE_PLAIN_DICTIONARY = 2, SL_PQE_RLE = 3, SL_PQE_BIT_PACKED = 4,
       SL_PQE_DELTA_BINARY_PACKED = 5, SL_PQE_DELTA_LENGTH_BYTE_ARRAY = 6, SL_PQE_DELTA_BYTE_ARRAY = 7,
       SL_PQE_RLE_DICTIONARY = 8, SL_PQE_BYTE_STREAM_SPLIT = 9 };
enum { SL_PQP_DATA = 0, SL_PQP_INDEX = 1, SL_PQP_DICTIONARY = 2, SL_PQP_DATA_V2 = 3 };
enum { SL_PQR_REQUIRED = 0, SL_PQR_OPTIONAL = 1, SL_PQR_REPEATED = 2 };
#define SL_PQ_CONVERTED_UTF8 0

/* Compression codecs, by their wire values. */
typedef enum sl_pq_codec {
    SL_PQ_UNCOMPRESSED = 0, SL_PQ_SNAPPY = 1, SL_PQ_GZIP = 2, SL_PQ_LZO = 3, SL_PQ_BROTLI = 4, SL_PQ_LZ4 = 5,
    SL_PQ_ZSTD = 6, SL_PQ_LZ4_RAW = 7,
} sl_pq_codec;

/* Column types as sluice sees them. The writer takes the first five and
 * SL_PQ_DECIMAL (a precision and scale with it; the reader gives a
 * DECIMAL as SL_PQ_STRING of its exact text). */
typedef enum sl_pq_type {
    SL_PQ_STRING, SL_PQ_BINARY, SL_PQ_INT64, SL_PQ_DOUBLE, SL_PQ_BOOL,
    SL_PQ_INT32, SL_PQ_FLOAT,
    SL_PQ_UNSUPPORTED, /* reader: a column of a type sluice cannot read */
    SL_PQ_DECIMAL,
} sl_pq_type;

/* The precisions the writer's DECIMAL takes: 1..38 digits (Arrow's
 * decimal128), a scale of 0..precision (the spec's). */
#define SL_PQ_DECIMAL_MAX_PRECISION 38
bool sl_pq_decimal_valid(int precision, int scale);
/* The bytes of a FIXED_LEN_BYTE_ARRAY DECIMAL of precision (valid): the
 * fewest that hold every value of it, as pyarrow writes them (a value's
 * text into them: core/decimal.h's sl_decimal_from_text). */
int sl_pq_decimal_width(int precision);

const char *sl_pq_type_name(sl_pq_type type);      /* "string", "int64", ... */
bool sl_pq_type_parse(const char *name, sl_pq_type *out);
const char *sl_pq_codec_name(int codec);           /* "zstd", ...; "codec N" unknown */
bool sl_pq_codec_parse(const char *name, sl_pq_codec *out);
const char *sl_pq_encoding_name(int encoding);


/* An unsigned LEB128 varint at *p (before end), *p moved past it. False
 * when it runs past end or past 10 bytes. */
bool sl_pq_read_uleb(const uint8_t **p, const uint8_t *end, uint64_t *out);

/* Bits needed for values 0..max. */
int sl_pq_bit_width(uint32_t max);

/* Appends the RLE/bit-packed hybrid encoding of values[0..n) (no length
 * prefix). False when out of memory. */
bool sl_rle_encode(sl_buf *out, const uint32_t *values, size_t n, int bit_width);

/* Decodes exactly n values from data[0..len) into out. False when the input
 * ends early, a run is malformed or bit_width > 32. */
bool sl_rle_decode(const uint8_t *data, size_t len, int bit_width, uint32_t *out, size_t n);

/* The same hybrid read a few values at a time, so a page's levels and
 * indices are decoded one batch of rows after another. It borrows data. */
typedef struct sl_rle_stream {
    const uint8_t *p, *end;      /* the next run header */
    const uint8_t *q, *run_end;  /* bit-packed run: its next byte, the end of its stored bytes */
    uint64_t left;               /* values left in the current run */
    uint64_t acc;
    int acc_bits, bit_width;
    bool packed;
    bool msb;                    /* BIT_PACKED: the one run, packed most significant bit first */
    uint32_t value;              /* the value of the current RLE run */
} sl_rle_stream;

/* False when bit_width is not in 0..32. */
bool sl_rle_stream_init(sl_rle_stream *s, const uint8_t *data, size_t len, int bit_width);
/* The deprecated BIT_PACKED encoding (levels of v1 pages by old Hadoop-era
 * writers) read by the same calls: values back to back, no header, each
 * byte filled from its most significant bit (the hybrid fills from the
 * least). False when bit_width is not in 0..32. */
bool sl_bitpacked_stream_init(sl_rle_stream *s, const uint8_t *data, size_t len, int bit_width);
/* A stream of n copies of value, reading no bytes. */
void sl_rle_stream_repeat(sl_rle_stream *s, uint32_t value, uint64_t n);
/* The next n values into out; false when the input ends early or a run is
 * malformed (the stream is then unusable). */
bool sl_rle_stream_read(sl_rle_stream *s, uint32_t *out, size_t n);

/* snappy cannot expand data more than this (a 3-byte copy makes 64 bytes):
 * a claimed length past it is a lie, refused before allocating. */
#define SL_SNAPPY_MAX_RATIO 22
/* Nor LZ4 more than this (a match adds at most 255 bytes for each byte of
 * its length). */
#define SL_LZ4_MAX_RATIO 256

/* Appends the compressed form of src[0..n) to out. NULL on success, else a
 * static message. zstd_cctx: a ZSTD_CCtx* or NULL. */
const char *sl_pq_compress(int codec, const uint8_t *src, size_t n, sl_buf *out, void *zstd_cctx);

/* Decompresses src[0..n) into out (its contents replaced): exactly `expect`
 * bytes, or a static message. out grows with what the codec really produces
 * (zstd, gzip and brotli are streamed; snappy's and lz4's claimed lengths are
 * checked against their ratios first), never past expect, so a size that
 * lies costs little memory. zstd_dctx: a ZSTD_DCtx* or NULL. */
const char *sl_pq_decompress(int codec, const uint8_t *src, size_t n, size_t expect, sl_buf *out,
                             void *zstd_dctx);

#endif
