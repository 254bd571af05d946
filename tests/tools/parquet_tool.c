/* tests/tools/parquet_tool.c — a test driver for io/parquet_write and
 * io/parquet_read (built, not installed):
 *
 *   parquet_tool write OUT --schema NAME:TYPE[?],... [--codec none|snappy|gzip|zstd]
 *                [--row-group-bytes N] [--page-bytes N] [--no-dictionary]
 *                [--meta KEY=VALUE]... < rows.jsonl
 *   parquet_tool dump FILE... [--columns A,B,...] [--batch-rows N] [--batch-bytes N]
 *                                                      -> one JSON object per row
 *   parquet_tool info FILE                             -> one JSON object
 *
 * TYPE is string, binary, int64, double or bool; a trailing '?' makes the
 * column nullable. In rows and dumps, binary values are base64 strings and
 * non-finite doubles the strings "NaN", "Infinity", "-Infinity". Exit status:
 * 0 ok, 1 error (message on stderr), 2 wrong command line. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"
#include "io/parquet_read.h"
#include "io/parquet_shape.h"
#include "io/parquet_write.h"

static int usage(const char *msg)
{
    fprintf(stderr, "parquet_tool: %s\nusage: parquet_tool write OUT [--schema NAME:TYPE[?],...] "
                    "[--nested NAME=SHAPE]... [--codec C] "
                    "[--row-group-bytes N] [--page-bytes N] [--no-dictionary] [--meta K=V]... < rows.jsonl\n"
                    "       (SHAPE: JSON as io/parquet_shape.h says; nested columns follow --schema's)\n"
                    "       parquet_tool dump FILE... [--columns A,B] [--batch-rows N] [--batch-bytes N]\n"
                    "       parquet_tool info FILE\n", msg);
    return 2;
}

static int fail(void)
{
    fprintf(stderr, "parquet_tool: %s\n", sl_last_error());
    return 1;
}

/* ---- base64 ------------------------------------------------------------ */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const uint8_t *p, size_t n)
{
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        *o++ = B64[v >> 18 & 63];
        *o++ = B64[v >> 12 & 63];
        *o++ = i + 1 < n ? B64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? B64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Decodes into a new buffer; NULL when `s` is not base64. */
static uint8_t *b64_decode(const char *s, size_t n, size_t *len)
{
    uint8_t *out = malloc(n / 4 * 3 + 1);
    if (!out || n % 4)
        goto bad;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char ch = s[i + k];
            const char *at = ch ? strchr(B64, ch) : NULL;
            if (ch == '=' && i + 4 == n && k >= 2) {
                pad++;
                v <<= 6;
            } else if (at && !pad) {
                v = v << 6 | (uint32_t)(at - B64);
            } else {
                goto bad;
            }
        }
        out[o++] = (uint8_t)(v >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(v >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)v;
    }
    *len = o;
    return out;
bad:
    free(out);
    return NULL;
}

/* ---- write ------------------------------------------------------------- */

static int parse_schema(char *spec, sl_pq_column_def **out, size_t *n)
{
    size_t cap = 1;
    for (const char *s = spec; *s; s++)
        cap += *s == ',';
    sl_pq_column_def *cols = calloc(cap, sizeof *cols);
    size_t k = 0;
    for (char *tok = strtok(spec, ","); tok; tok = strtok(NULL, ",")) {
        char *colon = strrchr(tok, ':');
        if (!colon) {
            free(cols);
            return usage("--schema: each column is NAME:TYPE[?]");
        }
        *colon = '\0';
        char *type = colon + 1;
        size_t tl = strlen(type);
        cols[k].nullable = tl > 0 && type[tl - 1] == '?';
        if (cols[k].nullable)
            type[tl - 1] = '\0';
        if (!sl_pq_type_parse(type, &cols[k].type) || cols[k].type > SL_PQ_BOOL) {
            free(cols);
            return usage("--schema: TYPE is string, binary, int64, double or bool");
        }
        cols[k].name = tok;
        k++;
    }
    *out = cols;
    *n = k;
    return 0;
}

/* Converts one JSON value into v; returns an error message or NULL. *owned
 * receives a buffer to free after the row is appended. */
static const char *to_value(const sl_pq_column_def *col, json_t *j, sl_pq_value *v, uint8_t **owned)
{
    memset(v, 0, sizeof *v);
    if (col->nested) {
        v->json = j;
        return NULL;
    }
    if (!j || json_is_null(j)) {
        v->is_null = true;
        return NULL;
    }
    switch (col->type) {
    case SL_PQ_STRING:
        if (!json_is_string(j))
            return "expected a string";
        v->ptr = json_string_value(j);
        v->len = json_string_length(j);
        return NULL;
    case SL_PQ_BINARY:
        if (!json_is_string(j) || !(*owned = b64_decode(json_string_value(j), json_string_length(j), &v->len)))
            return "expected a base64 string";
        v->ptr = *owned;
        return NULL;
    case SL_PQ_INT64:
        if (!json_is_integer(j))
            return "expected an integer";
        v->i64 = json_integer_value(j);
        return NULL;
    case SL_PQ_DOUBLE:
        if (json_is_number(j)) {
            v->f64 = json_number_value(j);
        } else if (json_is_string(j)) {
            const char *s = json_string_value(j);
            if (strcmp(s, "NaN") == 0)
                v->f64 = NAN;
            else if (strcmp(s, "Infinity") == 0)
                v->f64 = INFINITY;
            else if (strcmp(s, "-Infinity") == 0)
                v->f64 = -INFINITY;
            else
                return "expected a number";
        } else {
            return "expected a number";
        }
        return NULL;
    case SL_PQ_BOOL:
        if (!json_is_boolean(j))
            return "expected true or false";
        v->b = json_is_true(j);
        return NULL;
    default:
        return "unsupported type";
    }
}

static int cmd_write(int argc, char **argv)
{
    const char *out = NULL;
    char *schema = NULL;
    sl_pq_writer_params params = sl_pq_writer_default_params();
    const char *metas[64], *nested[64];
    size_t nmetas = 0, nnested = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_next = i + 1 < argc;
        if (strcmp(a, "--schema") == 0 && has_next) {
            schema = argv[++i];
        } else if (strcmp(a, "--codec") == 0 && has_next) {
            if (!sl_pq_codec_parse(argv[++i], &params.codec))
                return usage("--codec is none, snappy, gzip or zstd");
        } else if (strcmp(a, "--row-group-bytes") == 0 && has_next) {
            params.row_group_bytes = strtoll(argv[++i], NULL, 10);
        } else if (strcmp(a, "--page-bytes") == 0 && has_next) {
            params.page_bytes = strtoll(argv[++i], NULL, 10);
        } else if (strcmp(a, "--no-dictionary") == 0) {
            params.dictionary = false;
        } else if (strcmp(a, "--nested") == 0 && has_next && nnested < 64) {
            nested[nnested++] = argv[++i];
        } else if (strcmp(a, "--meta") == 0 && has_next && nmetas < 64) {
            metas[nmetas++] = argv[++i];
        } else if (a[0] != '-' && !out) {
            out = a;
        } else {
            return usage("unknown or incomplete option");
        }
    }
    if (!out || (!schema && !nnested))
        return usage("write needs OUT and --schema or --nested");
    sl_pq_column_def *cols = NULL;
    size_t ncols = 0;
    char empty[] = "";
    int rc = parse_schema(schema ? schema : empty, &cols, &ncols);
    if (rc)
        return rc;
    sl_pq_node *shapes[64] = {0};
    sl_pq_column_def *all = realloc(cols, (ncols + nnested + 1) * sizeof *cols);
    if (!all)
        return usage("out of memory");
    cols = all;
    for (size_t k = 0; k < nnested && !rc; k++) {
        const char *eq = strchr(nested[k], '=');
        json_error_t jerr;
        json_t *j = eq ? json_loads(eq + 1, 0, &jerr) : NULL;
        char why[256];
        if (!eq || !j || !(shapes[k] = sl_pq_shape_parse(j, why, sizeof why))) {
            fprintf(stderr, "parquet_tool: --nested %s: %s\n", nested[k], !eq ? "not NAME=SHAPE" : !j ? jerr.text : why);
            rc = 2;
        }
        json_decref(j);
        if (!rc)
            cols[ncols++] = (sl_pq_column_def){.name = strndup(nested[k], (size_t)(eq - nested[k])),
                                               .nested = shapes[k]};
    }
    if (rc)
        return rc;
    sl_pq_writer *w;
    if (sl_pq_writer_open(out, cols, ncols, &params, &w) != SL_OK) {
        free(cols);
        return fail();
    }
    for (size_t i = 0; i < nmetas && !rc; i++) {
        char *kv = strdup(metas[i]), *eq = strchr(kv, '=');
        if (!eq) {
            rc = usage("--meta is KEY=VALUE");
        } else {
            *eq = '\0';
            if (sl_pq_writer_set_metadata(w, kv, eq + 1) != SL_OK)
                rc = fail();
        }
        free(kv);
    }
    sl_pq_value *vals = calloc(ncols, sizeof *vals);
    uint8_t **owned = calloc(ncols, sizeof *owned);
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    ssize_t n;
    while (!rc && (n = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        json_error_t jerr;
        json_t *row = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &jerr);
        if (!row || !json_is_object(row)) {
            fprintf(stderr, "parquet_tool: stdin line %ld: not a JSON object: %s\n", lineno, row ? "" : jerr.text);
            json_decref(row);
            rc = 1;
            break;
        }
        for (size_t c = 0; c < ncols && !rc; c++) {
            const char *err = to_value(&cols[c], json_object_get(row, cols[c].name), &vals[c], &owned[c]);
            if (err) {
                fprintf(stderr, "parquet_tool: stdin line %ld, column '%s': %s\n", lineno, cols[c].name, err);
                rc = 1;
            }
        }
        if (!rc && sl_pq_writer_append(w, vals) != SL_OK)
            rc = fail();
        for (size_t c = 0; c < ncols; c++) {
            free(owned[c]);
            owned[c] = NULL;
        }
        json_decref(row);
    }
    if (!rc && sl_pq_writer_close(w) != SL_OK)
        rc = fail();
    sl_pq_writer_free(w); /* removes the file when not closed */
    free(line);
    free(owned);
    free(vals);
    for (size_t k = 0; k < nnested; k++) {
        free((char *)cols[ncols - nnested + k].name);
        sl_pq_shape_free(shapes[k]);
    }
    free(cols);
    return rc;
}

/* ---- dump and info ----------------------------------------------------- */

static json_t *double_json(double d)
{
    if (isnan(d))
        return json_string("NaN");
    if (isinf(d))
        return json_string(d > 0 ? "Infinity" : "-Infinity");
    return json_real(d);
}

static json_t *value(const sl_pq_vector *v, int64_t i)
{
    if (!v->valid[i])
        return json_null();
    switch (v->info->type) {
    case SL_PQ_BOOL: return json_boolean(v->b[i]);
    case SL_PQ_INT32: return json_integer(v->i32[i]);
    case SL_PQ_INT64: return json_integer(v->i64[i]);
    case SL_PQ_FLOAT: return double_json(v->f32[i]);
    case SL_PQ_DOUBLE: return double_json(v->f64[i]);
    case SL_PQ_STRING: {
        if (v->info->is_decimal) /* a number, its digits kept */
            return sl_json_decimal((const char *)v->data + v->offsets[i],
                                   (size_t)(v->offsets[i + 1] - v->offsets[i]));
        return sl_json_text((const char *)v->data + v->offsets[i],
                            (size_t)(v->offsets[i + 1] - v->offsets[i]));
    }
    default: {
        char *b = b64_encode(v->data + v->offsets[i], (size_t)(v->offsets[i + 1] - v->offsets[i]));
        json_t *j = b ? json_string(b) : NULL;
        free(b);
        return j;
    }
    }
}

/* Entry `at` of depth d of a column: a row (d 0) or a list inside a list's
 * elements as an array of what it holds, null for a null list; at the
 * column's depth its value. */
static json_t *nest(const sl_pq_vector *v, unsigned d, int64_t at)
{
    if (d == v->info->depth)
        return value(v, at);
    const int64_t *ofs = d ? v->nest_offsets[d - 1] : v->list_offsets;
    if (!(d ? v->nest_valid[d - 1] : v->list_valid)[at])
        return json_null();
    json_t *a = json_array();
    for (int64_t k = ofs[at]; a && k < ofs[at + 1]; k++)
        json_array_append_new(a, nest(v, d + 1, k));
    return a;
}

/* Row i: its value, or for a list column an array of its elements (arrays
 * of arrays for lists of lists; null for a null list). */
static json_t *cell(const sl_pq_vector *v, int64_t i)
{
    return v->list_offsets ? nest(v, 0, i) : value(v, i);
}

static int dump_file(const char *path, const char *columns, const sl_pq_reader_params *p)
{
    sl_pq_reader *r;
    if (sl_pq_reader_open(path, p, &r) != SL_OK)
        return fail();
    int rc = 0;
    if (columns) {
        const char *names[256];
        size_t n = 0;
        char *copy = strdup(columns);
        for (char *tok = strtok(copy, ","); tok && n < 256; tok = strtok(NULL, ","))
            names[n++] = tok;
        if (sl_pq_reader_select(r, names, n) != SL_OK)
            rc = fail();
        free(copy);
    }
    while (!rc) {
        const sl_pq_batch *b;
        if (sl_pq_reader_next(r, &b) != SL_OK) {
            rc = fail();
            break;
        }
        if (!b)
            break;
        for (int64_t i = 0; i < b->num_rows; i++) {
            json_t *row = json_object();
            for (size_t c = 0; c < b->num_columns; c++)
                json_object_set_new(row, b->columns[c].info->name, cell(&b->columns[c], i));
            /* sl_json_dump: a decimal as its digits */
            char *s = sl_json_dump(row, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17), NULL);
            if (s)
                puts(s);
            sl_free(s);
            json_decref(row);
        }
    }
    sl_pq_reader_free(r);
    return rc;
}

static int cmd_dump(int argc, char **argv)
{
    const char *columns = NULL;
    sl_pq_reader_params p = sl_pq_reader_default_params();
    int nfiles = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--columns") == 0 && i + 1 < argc)
            columns = argv[++i];
        else if (strcmp(argv[i], "--batch-rows") == 0 && i + 1 < argc)
            p.batch_rows = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--batch-bytes") == 0 && i + 1 < argc)
            p.batch_bytes = strtoul(argv[++i], NULL, 10);
        else if (argv[i][0] == '-')
            return usage("unknown option");
        else
            nfiles++;
    }
    if (!nfiles)
        return usage("dump needs a FILE");
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-') { /* an option and its value */
            i++;
            continue;
        }
        int rc = dump_file(argv[i], columns, &p);
        if (rc)
            return rc;
    }
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    if (argc != 1)
        return usage("info needs one FILE");
    sl_pq_reader *r;
    if (sl_pq_reader_open(argv[0], NULL, &r) != SL_OK)
        return fail();
    json_t *cols = json_array();
    for (size_t i = 0; i < sl_pq_reader_num_columns(r); i++) {
        const sl_pq_column_info *c = sl_pq_reader_column(r, i);
        json_t *col = json_pack("{s:s, s:s, s:b}", "name", c->name, "type",
                                c->is_decimal ? "decimal" : sl_pq_type_name(c->type), "nullable", c->nullable);
        if (col && c->list_len) { /* a column in a list: the list's and its elements' names */
            json_object_set_new(col, "list", json_stringn(c->name, c->list_len));
            json_object_set_new(col, "element", json_stringn(c->name, c->element_len));
        }
        json_array_append_new(cols, col);
    }
    const char *ver = sl_pq_reader_metadata(r, "sluice.version");
    json_t *info = json_pack("{s:I, s:I, s:s, s:o, s:s?}", "num_rows", (json_int_t)sl_pq_reader_num_rows(r),
                             "num_row_groups", (json_int_t)sl_pq_reader_num_row_groups(r), "created_by",
                             sl_pq_reader_created_by(r), "columns", cols, "sluice.version", ver);
    char *s = json_dumps(info, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s)
        puts(s);
    free(s);
    json_decref(info);
    sl_pq_reader_free(r);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage("missing command");
    if (strcmp(argv[1], "write") == 0)
        return cmd_write(argc - 2, argv + 2);
    if (strcmp(argv[1], "dump") == 0)
        return cmd_dump(argc - 2, argv + 2);
    if (strcmp(argv[1], "info") == 0)
        return cmd_info(argc - 2, argv + 2);
    return usage("unknown command");
}
