/* fuzz/fuzz_columns.c — pass-through columns from JSON rows to Parquet and
 * back: the input's lines are JSON objects (others skipped), sampled into
 * column types (io/columns.h: lists, structs, maps, widening, the limits),
 * written by the Parquet writer (small pages and row groups) and read back
 * by the reader. What must hold: the writer takes every shape the columns
 * choose; the file reads back with every row; and a value the columns say
 * fits (sl_columns_fits) reads back as it went in — flat columns and whole
 * lists, maps and structs (io/parquet_json.h), a string column's
 * non-strings as their JSON text, an integer in a double column as that
 * number; and a nested column's leaves read back give the shape it was
 * written with (sl_pq_column_shape: how a Parquet input's schema types its
 * columns). A first line that is a JSON array of texts declares the columns
 * instead (--columns' specs: "price:decimal(10,2)", shapes; refused ones
 * end the input): a decimal that fits reads back as the same number. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/decimal.h"
#include "core/json.h"
#include "io/columns.h"
#include "io/parquet_json.h"
#include "io/parquet_read.h"
#include "io/parquet_shape.h"
#include "io/parquet_write.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ROWS 32

static char path[64];

static void remove_file(void)
{
    unlink(path);
}

static void fail(const char *what, const json_t *a, const json_t *b)
{
    char *sa = a ? json_dumps(a, JSON_ENCODE_ANY) : NULL, *sb = b ? json_dumps(b, JSON_ENCODE_ANY) : NULL;
    fprintf(stderr, "fuzz_columns: %s\n  wrote %s\n  read  %s\n", what, sa ? sa : "(none)", sb ? sb : "(none)");
    abort();
}

static bool same(const sl_pq_node *n, sl_pq_type t, const json_t *in, const json_t *got);

/* Whether decimal `got` (read back from leaf n) is the number `in` was. */
static bool same_decimal(const sl_pq_node *n, const json_t *in, const json_t *got)
{
    sl_pq_value x;
    char *owned;
    size_t len;
    const char *digits = sl_json_decimal_text(got, &len);
    uint8_t a[16], b[16];
    size_t width = (size_t)sl_pq_decimal_width(n->precision);
    bool ok = sl_pq_value_from_json(SL_PQ_DECIMAL, in, &x, &owned) && !x.is_null && digits &&
              sl_decimal_from_text(x.ptr, x.len, n->precision, n->scale, a, width) &&
              sl_decimal_from_text(digits, len, n->precision, n->scale, b, width) && memcmp(a, b, width) == 0;
    sl_free(owned);
    return ok;
}

/* A struct (in a list or map): null as null (a struct whose leaves are
 * all in lists too), else field by field. */
static bool same_struct(const sl_pq_node *n, sl_pq_type t, const json_t *in, const json_t *got)
{
    if (!in || json_is_null(in))
        return !got || json_is_null(got);
    if (!json_is_object(got))
        return false;
    for (size_t f = 0; f < n->n_fields; f++)
        if (!same(n->fields[f], t, json_object_get(in, n->names[f]), json_object_get(got, n->names[f])))
            return false;
    return true;
}

/* Whether `got` (read back) is what `in` (written, fitting shape n; NULL n:
 * a flat column of type t) was. */
static bool same(const sl_pq_node *n, sl_pq_type t, const json_t *in, const json_t *got)
{
    if (n && n->kind == SL_PQ_NODE_STRUCT)
        return same_struct(n, t, in, got);
    if (!in || json_is_null(in))
        return !got || json_is_null(got);
    if (!got)
        return false;
    if (!n || n->kind == SL_PQ_NODE_LEAF) {
        switch (n ? n->type : t) {
        case SL_PQ_INT64: return json_is_integer(in) && json_equal(in, got);
        case SL_PQ_DOUBLE: return json_is_number(got) && json_number_value(in) == json_number_value(got);
        case SL_PQ_BOOL: return json_equal(in, got);
        case SL_PQ_DECIMAL: return same_decimal(n, in, got);
        default: break;
        }
        if (json_is_string(in))
            return json_equal(in, got);
        json_t *text = json_loads(json_string_value(got), JSON_DECODE_ANY, NULL);
        bool ok = text && json_equal(in, text);
        json_decref(text);
        return ok;
    }
    if (n->kind == SL_PQ_NODE_LIST) {
        if (!json_is_array(got) || json_array_size(got) != json_array_size(in))
            return false;
        for (size_t k = 0; k < json_array_size(in); k++)
            if (!same(n->element, t, json_array_get(in, k), json_array_get(got, k)))
                return false;
        return true;
    }
    if (n->kind == SL_PQ_NODE_MAP) {
        if (!json_is_object(got) || json_object_size(got) != json_object_size(in))
            return false;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)in, key, v)
            if (!same(n->element, t, v, json_object_get(got, key)))
                return false;
        return true;
    }
    return false;
}

/* Reads the file back and checks each fitting value against rows[]. */
static void read_back(const sl_columns *c, const sl_pq_column_def *defs, size_t n_cols, json_t *const *rows,
                      size_t n_rows)
{
    sl_pq_reader_params p = sl_pq_reader_default_params();
    sl_pq_reader *r;
    if (sl_pq_reader_open(path, &p, &r) != SL_OK)
        fail(sl_last_error(), NULL, NULL);
    if (sl_pq_reader_num_rows(r) != (int64_t)n_rows)
        fail("a row lost", NULL, NULL);
    size_t n_leaves = sl_pq_reader_num_columns(r);
    const char **names = calloc(n_leaves ? n_leaves : 1, sizeof *names);
    for (size_t i = 0; i < n_leaves; i++) {
        names[i] = sl_pq_reader_column(r, i)->name;
        for (size_t k = 0; k < i; k++)
            if (strcmp(names[k], names[i]) == 0) { /* "a.list.element" flat beside list a: by position only */
                free(names);
                sl_pq_reader_free(r);
                return;
            }
    }
    /* A nested column's leaves give back the shape it was written with. */
    for (size_t col = 0, first = 0; col < n_cols; col++) {
        const sl_pq_node *shape = defs[col].nested;
        size_t leaves = shape ? sl_pq_shape_leaves(shape) : 1;
        if (shape && first + leaves <= n_leaves) {
            const sl_pq_column_info *infos[256];
            for (size_t k = 0; k < leaves; k++)
                infos[k] = sl_pq_reader_column(r, first + k);
            json_t *want = sl_pq_shape_json(shape), *got = NULL;
            if (!want || sl_pq_column_shape(infos, leaves, strlen(sl_columns_output_name(c, col)), &got) != SL_OK ||
                !got || !json_equal(want, got))
                fail("a column's leaves give another shape", want, got);
            json_decref(want);
            json_decref(got);
        }
        first += leaves;
    }
    const sl_pq_batch *b;
    if (sl_pq_reader_select(r, names, n_leaves) != SL_OK)
        fail(sl_last_error(), NULL, NULL);
    size_t row0 = 0;
    while (sl_pq_reader_next(r, &b) == SL_OK && b) {
        for (int64_t i = 0; i < b->num_rows; i++) {
            const json_t *row = rows[row0 + (size_t)i];
            size_t first = 0;
            for (size_t col = 0; col < n_cols; col++) {
                const sl_pq_node *shape = defs[col].nested;
                size_t leaves = shape ? sl_pq_shape_leaves(shape) : 1;
                const json_t *in = sl_columns_value(c, col, row);
                char why[256];
                json_t *got = NULL;
                if (sl_columns_fits(c, col, in, why, sizeof why)) {
                    if (!shape) {
                        got = sl_pq_value_json(&b->columns[first], i);
                    } else {
                        const sl_pq_vector *cols[256];
                        for (size_t k = 0; k < leaves; k++)
                            cols[k] = &b->columns[first + k];
                        got = sl_pq_column_json(cols, leaves, strlen(sl_columns_output_name(c, col)), i,
                                                sl_pq_value_json);
                    }
                    if (!got)
                        fail("out of memory reading back", in, NULL);
                    if (!same(shape, defs[col].type, in, got))
                        fail("a value that fits read back otherwise", in, got);
                    json_decref(got);
                }
                first += leaves;
            }
        }
        row0 += (size_t)b->num_rows;
    }
    if (row0 != n_rows)
        fail(sl_last_error(), NULL, NULL);
    free(names);
    sl_pq_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fuzz-columns-%d.parquet", (int)getpid());
        atexit(remove_file);
    }
    json_t *rows[MAX_ROWS], *declared = NULL;
    size_t n_rows = 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    for (char *line = text, *next; line && n_rows < MAX_ROWS; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        json_t *j = json_loads(line, 0, NULL);
        if (json_is_object(j))
            rows[n_rows++] = j;
        else if (line == text && json_is_array(j) && json_array_size(j) <= 16)
            declared = j;
        else
            json_decref(j);
    }
    free(text);

    const char *specs[16];
    size_t n_specs = 0;
    for (; n_specs < json_array_size(declared) && json_is_string(json_array_get(declared, n_specs)); n_specs++)
        specs[n_specs] = json_string_value(json_array_get(declared, n_specs));
    sl_columns *c;
    sl_status made = sl_columns_new(NULL, 0, declared ? specs : NULL, n_specs, &c);
    json_decref(declared);
    if (made != SL_OK) {
        if (made != SL_ERR_INVALID_ARG)
            abort();
        for (size_t i = 0; i < n_rows; i++)
            json_decref(rows[i]);
        return 0; /* specs --columns refuses */
    }
    bool ok = true;
    for (size_t i = 0; ok && i < n_rows; i++)
        ok = sl_columns_sample(c, rows[i]) == SL_OK;
    size_t n_cols = sl_columns_count(c);
    sl_pq_column_def *defs = calloc(n_cols + 1, sizeof *defs);
    for (size_t i = 0; ok && i < n_cols; i++) {
        defs[i] = (sl_pq_column_def){sl_columns_output_name(c, i), sl_columns_type(c, i), true,
                                     sl_columns_shape(c, i)};
        json_t *shape = defs[i].nested ? sl_pq_shape_json(defs[i].nested) : NULL;
        char why[256];
        sl_pq_node *again = shape ? sl_pq_shape_parse(shape, why, sizeof why) : NULL;
        if (defs[i].nested && (!again || sl_pq_shape_leaves(again) != sl_pq_shape_leaves(defs[i].nested)))
            fail("a shape that does not parse back as itself", shape, NULL);
        sl_pq_shape_free(again);
        json_decref(shape);
    }
    sl_pq_writer_params wp = sl_pq_writer_default_params();
    wp.codec = SL_PQ_UNCOMPRESSED;
    wp.page_bytes = 64;
    wp.row_group_bytes = 512;
    sl_pq_writer *w = NULL;
    if (ok && n_cols > 0) {
        if (sl_pq_writer_open(path, defs, n_cols, &wp, &w) != SL_OK) {
            fail(sl_last_error(), NULL, NULL); /* the columns chose what the writer refuses */
        } else {
            sl_pq_value *values = calloc(n_cols, sizeof *values);
            char **owned = calloc(n_cols, sizeof *owned);
            for (size_t i = 0; ok && i < n_rows; i++) {
                for (size_t k = 0; k < n_cols; k++)
                    values[k] = sl_columns_cell(c, k, rows[i], &owned[k]);
                if (sl_pq_writer_append(w, values) != SL_OK)
                    fail(sl_last_error(), rows[i], NULL);
                for (size_t k = 0; k < n_cols; k++)
                    sl_free(owned[k]);
            }
            if (sl_pq_writer_close(w) != SL_OK)
                fail(sl_last_error(), NULL, NULL);
            read_back(c, defs, n_cols, rows, n_rows);
            free(values);
            free(owned);
        }
        sl_pq_writer_free(w);
    }
    free(defs);
    sl_columns_free(c);
    for (size_t i = 0; i < n_rows; i++)
        json_decref(rows[i]);
    return 0;
}
