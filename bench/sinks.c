/* bench/sinks.c — the same caption rows through each output format behind
 * io/sink.h (JSONL, Parquet, WebDataset), one part each, timed from the
 * first row to the published part (sync included); one JSON line.
 *
 *   sinks DIR [ROWS=20000] [IMAGE_BYTES=0] [PASS_THROUGH=0]
 *
 * A row: id, path, a caption of 50-70 random letters, three token counts,
 * seed, seven timings (JSONL's "timings" object) and error null, the
 * pass-through columns none. IMAGE_BYTES > 0 adds an image_bytes cell of
 * that many random bytes to the Parquet and WebDataset rows;
 * JSONL cannot hold bytes and writes the rows without. PASS_THROUGH 1
 * gives each row input columns as a LLaVA manifest's (a conversation of two
 * turns, a list of tags, a source), typed from the first 100 rows for
 * Parquet as the job does (JSONL and WebDataset write each row's columns as
 * they come, unplanned), and times apart the Parquet sink's check that each value fits
 * its column (`fits_s`, `fits_cpu_s`: sl_columns_fits over every row's
 * columns, the figures to set against the Parquet part's `s`, `cpu_s`,
 * which include it). PASS_THROUGH 2 gives each row 200 scalar input
 * columns instead (a wide table's: ints, reals and short strings), where
 * the sink's per-row work over the columns shows. Single-threaded; the rows
 * are generated before the clock starts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"
#include "io/columns.h"
#include "io/sink.h"

static const sl_schema_column head[] = {
    {"id", SL_PQ_STRING, false, NULL, false, false},
    {"path", SL_PQ_STRING, true, NULL, false, false},
    {"caption", SL_PQ_STRING, true, NULL, false, false},
    {"prompt_tokens", SL_PQ_INT64, false, NULL, false, false},
    {"generated_tokens", SL_PQ_INT64, false, NULL, false, false},
    {"cached_tokens", SL_PQ_INT64, false, NULL, false, false},
    {"seed", SL_PQ_INT64, false, NULL, false, false},
    {"decode_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    {"queue_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    {"prefill_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    {"encode_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    {"ttft_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    {"generate_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    {"total_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    {"error", SL_PQ_STRING, true, NULL, false, false},
};
enum { N_HEAD = sizeof head / sizeof *head };
static const sl_schema_column tail[] = {{"image_bytes", SL_PQ_BINARY, true, NULL, false, false}};

static int die(const char *what)
{
    fprintf(stderr, "sinks bench: %s: %s\n", what, sl_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sinks DIR [ROWS] [IMAGE_BYTES] [PASS_THROUGH: 0, 1 or 2]\n");
        return 2;
    }
    const char *dir = argv[1];
    long rows = argc > 2 ? atol(argv[2]) : 20000;
    size_t image_len = argc > 3 ? (size_t)atol(argv[3]) : 0;
    size_t *off;
    char *text = bench_letters(rows, &off);
    /* 256 random images in turn: a repeat is 256 images back, past zstd's
     * window and Parquet's dictionary (which would keep one copy of a value
     * seen again), as distinct JPEGs would be. */
    enum { IMAGES = 256 };
    size_t pool = image_len * IMAGES;
    unsigned char *image = pool ? malloc(pool) : NULL;
    if (!text || (image_len && !image))
        return 1;
    unsigned long long seed = 7;
    for (size_t k = 0; k < pool; k++) { /* incompressible, as a JPEG's data is */
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        image[k] = (unsigned char)(seed >> 56);
    }

    int pass = argc > 4 ? atoi(argv[4]) : 0;
    enum { WIDE = 200 };
    json_t **extra = pass ? calloc((size_t)rows, sizeof *extra) : NULL;
    sl_columns *cols = NULL, *unsampled = NULL; /* Parquet's columns, and the others' (as the job) */
    if (pass) {
        const char *reserved[N_HEAD + 1];
        for (size_t k = 0; k < N_HEAD; k++)
            reserved[k] = head[k].name;
        reserved[N_HEAD] = tail[0].name;
        if (!extra || sl_columns_new(reserved, N_HEAD + 1, NULL, 0, &cols) != SL_OK ||
            sl_columns_new(reserved, N_HEAD + 1, NULL, 0, &unsampled) != SL_OK)
            return die("columns");
        for (long r = 0; r < rows; r++) {
            if (pass == 2) {
                extra[r] = json_object();
                for (int k = 0; extra[r] && k < WIDE; k++) {
                    char key[16];
                    snprintf(key, sizeof key, "c%03d", k);
                    json_object_set_new(extra[r], key, k % 3 == 0   ? json_integer(r + k)
                                                       : k % 3 == 1 ? json_real((double)r / (k + 1))
                                                                    : json_string(r % 2 ? "yes" : "no"));
                }
            } else {
                extra[r] = json_pack("{s:[{s:s, s:s}, {s:s, s:s#}], s:[s, s, s], s:s, s:i}", "conversations",
                                     "from", "human", "value", "<image>\nWhat is shown here?", "from", "gpt", "value",
                                     text + off[r], (int)(off[r + 1] - off[r]), "tags", "photo",
                                     r % 2 ? "outdoor" : "indoor", "color", "source", "laion", "width", (int)(r % 1000));
            }
            if (!extra[r] || (r < 100 && sl_columns_sample(cols, extra[r]) != SL_OK))
                return die("rows");
        }
    }
    double fits_s = 0, fits_cpu_s = 0;
    if (pass) {
        double t0 = bench_now(), c0 = bench_cpu_s();
        char why[256];
        long misfits = 0;
        for (long r = 0; r < rows; r++)
            for (size_t k = 0; k < sl_columns_count(cols); k++)
                misfits += !sl_columns_fits(cols, k, json_object_get(extra[r], sl_columns_input_name(cols, k)), why,
                                            sizeof why);
        fits_s = bench_now() - t0;
        fits_cpu_s = bench_cpu_s() - c0;
        if (misfits)
            return die("a value that does not fit");
    }

    static const char *const formats[] = {"jsonl", "parquet", "webdataset"};
    printf("{\"rows\": %ld, \"image_bytes\": %zu, \"pass_through\": %s, \"fits_s\": %.4f, \"fits_cpu_s\": %.4f",
           rows, image_len, pass == 2 ? "\"wide\"" : pass ? "true" : "false", fits_s, fits_cpu_s);
    for (size_t f = 0; f < 3; f++) {
        bool bytes = image_len > 0 && strcmp(formats[f], "jsonl") != 0;
        sl_schema schema = {head, N_HEAD, strcmp(formats[f], "parquet") == 0 ? cols : unsampled,
                            bytes ? tail : NULL, bytes ? 1 : 0};
        sl_sink *sink;
        char name[64];
        double t0 = bench_now(), c0 = bench_cpu_s();
        if (sl_sink_open(formats[f], dir, true, &schema, &sink) != SL_OK)
            return die("open");
        snprintf(name, sizeof name, "part-00000.%s", sl_sink_extension(sink));
        if (sl_sink_part_open(sink, name) != SL_OK)
            return die("part open");
        sl_pq_value v[N_HEAD + 1];
        memset(v, 0, sizeof v);
        char id[32], path[64];
        for (long r = 0; r < rows; r++) {
            snprintf(id, sizeof id, "img%08ld.jpg", r);
            snprintf(path, sizeof path, "/data/images/img%08ld.jpg", r);
            v[0] = (sl_pq_value){.ptr = id, .len = strlen(id)};
            v[1] = (sl_pq_value){.ptr = path, .len = strlen(path)};
            v[2] = (sl_pq_value){.ptr = text + off[r], .len = off[r + 1] - off[r]};
            v[3].i64 = 600;
            v[4].i64 = 14;
            v[5].i64 = 6;
            v[6].i64 = r * 2654435761LL;
            for (int k = 0; k < 7; k++)
                v[7 + k].f64 = (double)r * 0.001 + k;
            v[14] = (sl_pq_value){.is_null = true};
            v[15] = (sl_pq_value){.ptr = image ? image + (size_t)(r % IMAGES) * image_len : NULL,
                                  .len = image_len};
            if (sl_sink_write(sink, &(sl_schema_row){.cells = v, .extra = pass ? extra[r] : NULL}) != SL_OK)
                return die("write");
        }
        if (sl_sink_commit(sink, NULL, NULL) != SL_OK)
            return die("commit");
        double s = bench_now() - t0, cpu = bench_cpu_s() - c0;
        struct stat st;
        long long size = stat(sl_sink_part_path(sink), &st) == 0 ? (long long)st.st_size : -1;
        sl_sink_free(sink);
        printf(", \"%s\": {\"file_bytes\": %lld, \"s\": %.4f, \"cpu_s\": %.4f, "
               "\"rows_per_s\": %.0f, \"mb_per_s\": %.1f}",
               formats[f], size, s, cpu, (double)rows / s, (double)size / 1e6 / s);
    }
    printf("}\n");
    for (long r = 0; pass && r < rows; r++)
        json_decref(extra[r]);
    free(extra);
    sl_columns_free(cols);
    sl_columns_free(unsampled);
    free(text);
    free(off);
    free(image);
    return 0;
}
