/* io/parquet_delta.h — the Parquet value encodings that writers of format
 * 2.x use (parquet-java's v2 writer, Spark with it, DuckDB's V2, pyarrow's
 * column_encoding): DELTA_BINARY_PACKED integers, read a few at a time, and
 * BYTE_STREAM_SPLIT values. DELTA_LENGTH_BYTE_ARRAY and DELTA_BYTE_ARRAY are
 * built by the reader from the first (lengths and prefix lengths are delta
 * streams followed by the bytes). Pure: a stream borrows its data, belongs
 * to one thread, and holds nothing to free. */
#ifndef SL_IO_PARQUET_DELTA_H
#define SL_IO_PARQUET_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Blocks of at most this many values (writers use 128), at most this many
 * miniblocks a block (writers use 4): a header past them is refused. */
#define SL_DELTA_MAX_BLOCK 65536
#define SL_DELTA_MAX_MINIBLOCKS 256

typedef struct sl_delta_stream {
    const uint8_t *p, *end;  /* the next block header, the data's end */
    const uint8_t *mb;       /* the current miniblock's bytes */
    uint64_t left;           /* values not read yet (the first one included) */
    uint64_t last;           /* the last value read, as unsigned (wraps like the writer's) */
    uint64_t min_delta;
    uint32_t block_size, miniblocks, per_mb; /* per_mb: values a miniblock */
    uint32_t mb_index;       /* which miniblock of the block is current */
    uint32_t mb_used;        /* values read from it */
    uint8_t widths[SL_DELTA_MAX_MINIBLOCKS];
    bool first_pending;      /* the header's first value not read yet */
} sl_delta_stream;

/* Reads the header at data[0..len). False when it is malformed: a block
 * size not a multiple of 128 or past SL_DELTA_MAX_BLOCK, miniblocks that do
 * not split it into multiples of 32, a varint that runs past len. */
bool sl_delta_init(sl_delta_stream *s, const uint8_t *data, size_t len);

/* Values the header says the stream holds that are not read yet. */
uint64_t sl_delta_left(const sl_delta_stream *s);

/* The next n values into out (as int64; an INT32 column's are its low 32
 * bits). False when fewer are left, a block is malformed (a bit width past
 * 64) or its bytes run past the data: the stream is then unusable. */
bool sl_delta_read(sl_delta_stream *s, int64_t *out, size_t n);

/* Where the stream's bytes end once every value is read (the last
 * miniblock counted whole, as writers pad it): *end. Reads nothing from s
 * (a copy walks the blocks). False when they are malformed or run past the
 * data. */
bool sl_delta_end(const sl_delta_stream *s, const uint8_t **end);

/* BYTE_STREAM_SPLIT: value i's byte k is data[k * count + i], for values of
 * `width` bytes and count = len / width. Copies values first..first+n into
 * out (n * width bytes). The caller checks first + n <= count. */
void sl_byte_stream_split_read(const uint8_t *data, size_t count, size_t width, size_t first, size_t n,
                               uint8_t *out);

#endif
