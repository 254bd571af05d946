/* fuzz/fuzz_parquet.c — the whole Parquet reader on arbitrary bytes: they
 * are written to a temporary file, which is opened, its columns and footer
 * listed, every readable column selected and every batch read, with the
 * reader's limits small so that what it promises can be checked: batches
 * keep to their limits and their vectors (list offsets too) are consistent,
 * and however the file lies, the most bytes allocated at once stay a small
 * multiple of the file plus the memory limit. Each batch's first rows'
 * lists are put back together as JSON (io/parquet_json.h) from all the
 * columns of each list, and its shape from their infos. At most 1 << 20
 * rows are read: a few bytes of RLE may honestly hold billions of null
 * rows. Inputs of even length are read with null_undecodable (as the
 * Parquet source reads), their lost rows checked: ranges in order, within
 * the batch, a flat column's values null there. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "io/parquet_json.h"
#include "io/parquet_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];
static int fd = -1;

static void remove_file(void)
{
    unlink(path);
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_parquet: %s\n", what);
    abort();
}

static bool is_bytes(const sl_pq_vector *v)
{
    return v->info->type == SL_PQ_STRING || v->info->type == SL_PQ_BINARY;
}

static uint64_t touch(const sl_pq_batch *b, const sl_pq_reader_params *p)
{
    uint64_t sum = 0;
    if (b->num_rows < 1 || (size_t)b->num_rows > p->batch_rows)
        fail("batch rows out of range");
    for (size_t c = 0; c < b->num_columns; c++) {
        const sl_pq_vector *v = &b->columns[c];
        int64_t n = b->num_rows; /* values: a list column's elements */
        if ((v->list_offsets != NULL) != (v->info->list_len > 0) || (v->list_offsets && !v->list_valid))
            fail("list vectors do not match the column's info");
        if ((v->info->depth > 0) != (v->info->list_len > 0) || v->info->depth > SL_PQ_MAX_DEPTH)
            fail("a list's depth does not match its names");
        if ((v->n_lost > 0) != (v->lost_why != NULL) || (v->n_lost && !p->null_undecodable))
            fail("lost rows without their cause, or unasked for");
        for (size_t j = 0; j < v->n_lost; j++) {
            int64_t lo = v->lost[2 * j], hi = v->lost[2 * j + 1];
            if (lo < 0 || lo >= hi || lo >= b->num_rows || (j && lo <= v->lost[2 * j - 1]))
                fail("lost rows out of order or past the batch");
            for (int64_t i = lo; i < hi && i < b->num_rows; i++)
                if (!sl_pq_vector_lost(v, i) || (!v->list_offsets && v->valid[i]))
                    fail("a lost row of a flat column holds a value");
        }
        for (unsigned d = 0; v->list_offsets && d < v->info->depth; d++) { /* n: entries at depth d */
            const int64_t *ofs = d ? v->nest_offsets[d - 1] : v->list_offsets;
            const uint8_t *ok = d ? v->nest_valid[d - 1] : v->list_valid;
            if (!ofs || !ok)
                fail("a list of lists without its offsets");
            if (ofs[0] != 0)
                fail("list offsets do not start at 0");
            for (int64_t i = 0; i < n; i++) {
                if (ofs[i] > ofs[i + 1] || ok[i] > 1 || (!ok[i] && ofs[i] != ofs[i + 1]))
                    fail("list offsets out of order, or a null list with elements");
                sum += ok[i];
            }
            n = ofs[n];
            if ((size_t)n > p->batch_rows && b->num_rows > 1) /* one row's may be more */
                fail("a batch's elements or lists past batch_rows");
        }
        for (int64_t i = 0; i < n; i++) {
            if (v->valid[i] > 1)
                fail("valid is not 0 or 1");
            sum += v->valid[i];
            switch (v->info->type) {
            case SL_PQ_BOOL:
                if (v->b[i] > 1)
                    fail("a bool is not 0 or 1");
                sum += v->b[i];
                break;
            case SL_PQ_INT32: sum += (uint32_t)v->i32[i]; break;
            case SL_PQ_INT64: sum += (uint64_t)v->i64[i]; break;
            case SL_PQ_FLOAT: sum += v->f32[i] == v->f32[i]; break;
            case SL_PQ_DOUBLE: sum += v->f64[i] == v->f64[i]; break;
            default:
                if (v->offsets[i] > v->offsets[i + 1] || (!v->valid[i] && v->offsets[i] != v->offsets[i + 1]))
                    fail("byte-array offsets out of order");
                for (int64_t k = v->offsets[i]; k < v->offsets[i + 1]; k += 97)
                    sum += v->data[k];
            }
        }
        if (is_bytes(v) && v->offsets[0] != 0)
            fail("byte-array offsets do not start at 0");
        if (is_bytes(v) && b->num_rows > 1 && v->offsets[n] > (int64_t)p->batch_bytes)
            fail("a batch of several rows past batch_bytes");
    }
    return sum;
}

static json_t *json_value(const sl_pq_vector *v, int64_t k)
{
    if (!v->valid[k])
        return json_null();
    switch (v->info->type) {
    case SL_PQ_INT32: return json_integer(v->i32[k]);
    case SL_PQ_INT64: return json_integer(v->i64[k]);
    case SL_PQ_STRING: return json_stringn_nocheck((const char *)v->data + v->offsets[k],
                                                  (size_t)(v->offsets[k + 1] - v->offsets[k]));
    default: return json_true();
    }
}

/* The length of the name of the nested column (a list, a struct) a leaf
 * is in, as the Parquet source groups leaves; 0: a flat column. */
static size_t column_len(const sl_pq_column_info *ci)
{
    return ci->n_groups ? ci->group_len[0] : ci->list_len;
}

/* The first rows' nested columns as JSON, each from all its leaves. */
static void lists_as_json(const sl_pq_batch *b)
{
    const sl_pq_vector **cols = calloc(b->num_columns ? b->num_columns : 1, sizeof *cols);
    for (size_t c = 0; cols && c < b->num_columns; c++) {
        const sl_pq_column_info *ci = b->columns[c].info;
        size_t len = column_len(ci);
        bool first = len > 0;
        for (size_t e = 0; first && e < c; e++)
            first = !(column_len(b->columns[e].info) == len && strncmp(b->columns[e].info->name, ci->name, len) == 0);
        if (!first)
            continue;
        size_t n = 0;
        for (size_t k = c; k < b->num_columns; k++)
            if (column_len(b->columns[k].info) == len && strncmp(b->columns[k].info->name, ci->name, len) == 0)
                cols[n++] = &b->columns[k];
        for (int64_t i = 0; i < b->num_rows && i < 8; i++)
            json_decref(sl_pq_column_json(cols, n, len, i, json_value));
        const sl_pq_column_info **infos = calloc(n, sizeof *infos);
        for (size_t k = 0; infos && k < n; k++)
            infos[k] = cols[k]->info;
        json_t *shape = NULL; /* the schema's shape of the column, as a Parquet input's columns are typed */
        if (infos && sl_pq_column_shape(infos, n, len, &shape) == SL_OK)
            json_decref(shape);
        free(infos);
    }
    free(cols);
}

static void read_batches(sl_pq_reader *r, const sl_pq_reader_params *p)
{
    int64_t rows = 0;
    volatile uint64_t sum = 0;
    for (int errors = 0; rows < (1 << 20) && errors < 4;) {
        const sl_pq_batch *b;
        sl_status st = sl_pq_reader_next(r, &b);
        if (st != SL_OK) {
            errors++; /* the next call goes on at the next row group */
            continue;
        }
        if (!b)
            break;
        sum += touch(b, p);
        lists_as_json(b);
        rows += b->num_rows;
    }
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0) {
        snprintf(path, sizeof path, "/tmp/fuzz-parquet-%d.parquet", (int)getpid());
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            fail("cannot create the temporary file");
        atexit(remove_file);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        fail("cannot write the temporary file");

    sl_pq_reader_params p = sl_pq_reader_default_params();
    p.max_page_bytes = 1 << 20;
    p.batch_rows = 500;
    p.batch_bytes = 16 << 10;
    p.memory_limit = 4 << 20;
    p.null_undecodable = size % 2 == 0;
    int64_t base = sl_alloc_live_bytes();
    sl_alloc_peak_reset();
    sl_pq_reader *r;
    if (sl_pq_reader_open(path, &p, &r) == SL_OK) {
        size_t n = sl_pq_reader_num_columns(r), k = 0;
        const char **names = calloc(n ? n : 1, sizeof *names);
        for (size_t i = 0; i < n; i++) {
            const sl_pq_column_info *ci = sl_pq_reader_column(r, i);
            if (!ci || !ci->name)
                fail("a listed column without a name");
            if (ci->type != SL_PQ_UNSUPPORTED)
                names[k++] = ci->name;
        }
        (void)sl_pq_reader_num_rows(r);
        (void)sl_pq_reader_num_row_groups(r);
        (void)sl_pq_reader_metadata(r, "sluice.version");
        (void)strlen(sl_pq_reader_created_by(r));
        if (sl_pq_reader_select(r, names, k) == SL_OK)
            read_batches(r, &p);
        /* Again with every other column: select restarts at row group 0. */
        for (size_t i = 0; 2 * i < k; i++)
            names[i] = names[2 * i];
        if (k > 1 && sl_pq_reader_select(r, names, (k + 1) / 2) == SL_OK)
            read_batches(r, &p);
        free(names);
        sl_pq_reader_free(r);
    }
    int64_t peak = sl_alloc_peak_bytes() - base;
    /* The footer's structures (a small multiple of the file, see
     * fuzz_thrift.c) plus what the memory limit lets the columns hold, and
     * one growth past it (a limit is checked after rows are decoded). */
    if (peak > 64 * (int64_t)size + 2 * (int64_t)p.memory_limit + (3 << 20)) {
        fprintf(stderr, "fuzz_parquet: a %zu-byte file allocated %lld bytes at its peak\n", size, (long long)peak);
        abort();
    }
    if (sl_alloc_live_bytes() != base)
        fail("the reader did not free everything");
    return 0;
}
