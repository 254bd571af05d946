/* bench/parquet.c — write then read one table with sluice's Parquet writer and
 * reader (io/parquet_write, io/parquet_read) and print the timings as JSON.
 *
 *   parquet OUT.parquet [ROWS=1000000] [CODEC=snappy] [--no-dictionary]
 *   parquet --read FILE.parquet    (times reading every column of FILE, as
 *                                   bench/parquet_encodings.py does)
 *
 * The table: ROWS x [string of 50-70 random letters, int64, double, bool],
 * generated before the clock starts; every column's values are unique, so
 * the writer tries a dictionary on each chunk's first page and drops it
 * (--no-dictionary: the cost of that try). data_bytes counts the raw values
 * (string bytes + 8 + 8 + 1 per row); MB/s figures divide it by the time. The
 * file is left at OUT for bench/parquet.py, which times pyarrow on the same
 * table. Single-threaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "io/parquet_read.h"
#include "io/parquet_write.h"

static int die(const char *what)
{
    fprintf(stderr, "parquet bench: %s: %s\n", what, sl_last_error());
    return 1;
}

/* Reads every column of `path` to its end: *rows read, and a value of each
 * column summed into *check so none is skipped. 0, or 1 after saying why. */
static int read_all(const char *path, long long *rows, double *check)
{
    sl_pq_reader *rd;
    if (sl_pq_reader_open(path, NULL, &rd) != SL_OK)
        return die("open for reading");
    *rows = 0;
    *check = 0;
    for (;;) {
        const sl_pq_batch *b;
        if (sl_pq_reader_next(rd, &b) != SL_OK) {
            sl_pq_reader_free(rd);
            return die("read");
        }
        if (!b)
            break;
        *rows += b->num_rows;
        for (size_t c = 0; c < b->num_columns; c++) {
            const sl_pq_vector *v = &b->columns[c];
            int64_t n = b->num_rows; /* values: a list column's are its elements, below its lists */
            if (v->list_offsets) {
                n = v->list_offsets[n];
                for (unsigned d = 1; d < v->info->depth; d++)
                    n = v->nest_offsets[d - 1][n];
            }
            if (n == 0)
                continue;
            *check += v->i64 ? (double)v->i64[0] : v->i32 ? v->i32[0] : v->f64 ? v->f64[0] : v->f32 ? v->f32[0]
                    : v->offsets ? (double)v->offsets[n] : v->b ? v->b[0] : 0;
        }
    }
    sl_pq_reader_free(rd);
    return 0;
}

/* Reads every column of a file written elsewhere; prints rows and seconds. */
static int read_only(const char *path)
{
    double t0 = bench_now(), check;
    long long got;
    if (read_all(path, &got, &check) != 0)
        return 1;
    printf("{\"rows\": %lld, \"read_s\": %.4f, \"check\": %.0f}\n", got, bench_now() - t0, check);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--read") == 0)
        return read_only(argv[2]);
    if (argc < 2) {
        fprintf(stderr, "usage: parquet OUT.parquet [ROWS] [CODEC] [--no-dictionary]\n");
        return 2;
    }
    const char *path = argv[1];
    long rows = argc > 2 ? atol(argv[2]) : 1000000;
    sl_pq_writer_params params = sl_pq_writer_default_params();
    params.codec = SL_PQ_SNAPPY;
    if (argc > 3 && !sl_pq_codec_parse(argv[3], &params.codec)) {
        fprintf(stderr, "parquet bench: unknown codec '%s'\n", argv[3]);
        return 2;
    }
    params.dictionary = !(argc > 4 && strcmp(argv[4], "--no-dictionary") == 0);

    size_t *off;
    char *text = bench_letters(rows, &off);
    if (!text)
        return 1;
    double data_bytes = (double)off[rows] + 17.0 * (double)rows;

    const sl_pq_column_def cols[] = {
        {"text", SL_PQ_STRING, false, NULL}, {"id", SL_PQ_INT64, false, NULL},
        {"score", SL_PQ_DOUBLE, false, NULL}, {"ok", SL_PQ_BOOL, false, NULL},
    };
    double t0 = bench_now();
    sl_pq_writer *w;
    if (sl_pq_writer_open(path, cols, 4, &params, &w) != SL_OK)
        return die("open for writing");
    sl_pq_value v[4];
    memset(v, 0, sizeof v);
    for (long r = 0; r < rows; r++) {
        v[0].ptr = text + off[r];
        v[0].len = off[r + 1] - off[r];
        v[1].i64 = r * 2654435761LL;
        v[2].f64 = (double)r * 0.001;
        v[3].b = r % 3 == 0;
        if (sl_pq_writer_append(w, v) != SL_OK)
            return die("append");
    }
    if (sl_pq_writer_close(w) != SL_OK)
        return die("close");
    long long groups = (long long)sl_pq_writer_num_row_groups(w);
    sl_pq_writer_free(w);
    double write_s = bench_now() - t0;

    t0 = bench_now();
    long long got;
    double check;
    if (read_all(path, &got, &check) != 0)
        return 1;
    double read_s = bench_now() - t0;
    if (got != rows) {
        fprintf(stderr, "parquet bench: read %lld rows, wrote %ld\n", got, rows);
        return 1;
    }
    free(text);
    free(off);
    printf("{\"rows\": %ld, \"codec\": \"%s\", \"dictionary\": %s, \"row_groups\": %lld, \"data_bytes\": %.0f, \"write_s\": %.4f, "
           "\"read_s\": %.4f, \"write_mb_s\": %.1f, \"read_mb_s\": %.1f, \"check\": %.0f}\n",
           rows, sl_pq_codec_name(params.codec), params.dictionary ? "true" : "false", groups, data_bytes, write_s, read_s, data_bytes / 1e6 / write_s,
           data_bytes / 1e6 / read_s, check);
    return 0;
}
