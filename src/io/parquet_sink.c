/* io/parquet_sink.c — see parquet_sink.h; and the Parquet format behind
 * io/sink.h: the schema's columns flattened (a JSONL group's members are
 * columns of their own), the pass-through columns typed from samples. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "core/utf8.h"
#include "io/parquet_shape.h"
#include "io/parquet_sink.h"
#include "io/sink.h"

struct sl_parquet_sink {
    sl_shard shard;
    sl_pq_writer *writer;
};

sl_status sl_parquet_sink_open(const char *dir, const char *name, bool overwrite,
                               const sl_pq_column_def *columns, size_t num_columns,
                               const sl_pq_writer_params *params, sl_parquet_sink **out)
{
    *out = NULL;
    sl_parquet_sink *sink = sl_calloc(1, sizeof *sink);
    if (!sink)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    sl_status st = sl_shard_init(&sink->shard, dir, name, overwrite);
    if (st == SL_OK)
        st = sl_pq_writer_open(sink->shard.tmp_path, columns, num_columns, params, &sink->writer);
    if (st != SL_OK) {
        sl_parquet_sink_free(sink);
        return st;
    }
    *out = sink;
    return SL_OK;
}

sl_status sl_parquet_sink_append(sl_parquet_sink *sink, const sl_pq_value *values)
{
    return sl_pq_writer_append(sink->writer, values);
}

sl_status sl_parquet_sink_finish(sl_parquet_sink *sink) { return sl_pq_writer_close(sink->writer); }

sl_status sl_parquet_sink_publish(sl_parquet_sink *sink) { return sl_shard_publish(&sink->shard); }

sl_status sl_parquet_sink_commit(sl_parquet_sink *sink)
{
    sl_status st = sl_parquet_sink_finish(sink);
    return st == SL_OK ? sl_parquet_sink_publish(sink) : st;
}

const char *sl_parquet_sink_path(const sl_parquet_sink *sink) { return sink->shard.final_path; }

void sl_parquet_sink_free(sl_parquet_sink *sink)
{
    if (!sink)
        return;
    sl_pq_writer_free(sink->writer);
    sl_shard_clear(&sink->shard);
    sl_free(sink);
}

/* --- behind io/sink.h --------------------------------------------------------- */

/* Values of one column the parts could not hold, and the first row's. */
typedef struct unfit_count {
    char *name; /* an unplanned column's (a planned one's is the column's) */
    uint64_t rows;
    char *first_id, *why;
} unfit_count;

/* Columns first seen after the planning, counted by name up to this many;
 * the rest together. */
#define MAX_UNPLANNED 64

/* What every part of one sink shares: the columns, and one row's cells with
 * the repaired strings they point into. */
typedef struct pq_shared {
    const sl_schema *schema;
    sl_pq_codec codec;      /* the parts' compression */
    sl_pq_column_def *defs; /* head, pass-through, tail */
    size_t n_defs, n_pass;
    sl_pq_value *values;
    char **owned;
    char *shapes; /* the nested columns' shapes (parquet_shape.h), or NULL when none */
    unfit_count *unfit; /* n_pass: values not of their column's type */
    unfit_count unplanned[MAX_UNPLANNED];
    size_t n_unplanned;
    unfit_count unplanned_other; /* past MAX_UNPLANNED names */
    void (*on_unfit)(void *user, const char *column);
    void *on_unfit_user;
} pq_shared;

static void unfit_clear(unfit_count *u)
{
    sl_free(u->name);
    sl_free(u->first_id);
    sl_free(u->why);
}

static void pq_release(void *shared)
{
    pq_shared *ps = shared;
    if (!ps)
        return;
    for (size_t i = 0; ps->unfit && i < ps->n_pass; i++)
        unfit_clear(&ps->unfit[i]);
    sl_free(ps->unfit);
    for (size_t i = 0; i < ps->n_unplanned; i++)
        unfit_clear(&ps->unplanned[i]);
    unfit_clear(&ps->unplanned_other);
    sl_free(ps->defs);
    sl_free(ps->shapes);
    sl_free(ps->values);
    sl_free(ps->owned);
    sl_free(ps);
}

static sl_status pq_prepare(const sl_schema *schema, void **shared)
{
    pq_shared *ps = sl_calloc(1, sizeof *ps);
    if (!ps)
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    ps->schema = schema;
    ps->codec = sl_pq_writer_default_params().codec;
    ps->n_pass = schema->passthrough ? sl_columns_count(schema->passthrough) : 0;
    ps->n_defs = schema->n_head + ps->n_pass + schema->n_tail;
    ps->defs = sl_calloc(ps->n_defs, sizeof *ps->defs);
    ps->values = sl_calloc(ps->n_defs, sizeof *ps->values);
    ps->owned = sl_calloc(ps->n_defs, sizeof *ps->owned);
    ps->unfit = sl_calloc(ps->n_pass ? ps->n_pass : 1, sizeof *ps->unfit);
    if (!ps->defs || !ps->values || !ps->owned || !ps->unfit) {
        pq_release(ps);
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    }
    size_t k = 0;
    for (size_t i = 0; i < schema->n_head; i++, k++)
        ps->defs[k] = (sl_pq_column_def){schema->head[i].name, schema->head[i].type,
                                         schema->head[i].nullable, NULL};
    json_t *shapes = json_object();
    bool nested = false;
    for (size_t i = 0; i < ps->n_pass; i++, k++) {
        const sl_pq_node *shape = sl_columns_shape(schema->passthrough, i);
        const char *name = sl_columns_output_name(schema->passthrough, i);
        ps->defs[k] = (sl_pq_column_def){name, sl_columns_type(schema->passthrough, i), true, shape};
        if (shape && shapes) {
            nested = true;
            json_t *j = sl_pq_shape_json(shape);
            if (!j || json_object_set_new(shapes, name, j) != 0) {
                json_decref(shapes);
                shapes = NULL;
            }
        }
    }
    /* A part read back (--retry-failed) is written again with these. */
    if (!shapes || (nested && !(ps->shapes = sl_json_dump(shapes, JSON_COMPACT | JSON_PRESERVE_ORDER, NULL)))) {
        json_decref(shapes);
        pq_release(ps);
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    }
    json_decref(shapes);
    for (size_t i = 0; i < schema->n_tail; i++, k++)
        ps->defs[k] = (sl_pq_column_def){schema->tail[i].name, schema->tail[i].type,
                                         schema->tail[i].nullable, NULL};
    *shared = ps;
    return SL_OK;
}

/* A cell as written: invalid UTF-8 in a string is repaired into *owned. */
static sl_pq_value pq_cell(sl_pq_type type, sl_pq_value v, char **owned)
{
    if (v.is_null || type != SL_PQ_STRING || sl_utf8_valid(v.ptr, v.len))
        return v;
    if ((*owned = sl_utf8_sanitize(v.ptr, v.len)))
        v = (sl_pq_value){.ptr = *owned, .len = strlen(*owned)};
    return v;
}

/* Counts a row whose value of `column` (the input's name, the one
 * --columns takes) the parts do not hold; the first one of each column is
 * logged, naming the row and why. */
static void count_unfit(const pq_shared *ps, unfit_count *u, const char *column, const char *id,
                        const char *why)
{
    if (ps->on_unfit) /* the names past MAX_UNPLANNED together, as counted */
        ps->on_unfit(ps->on_unfit_user, u == &ps->unplanned_other ? "..." : column);
    if (u->rows++ > 0)
        return;
    u->first_id = sl_strdup(id ? id : "");
    u->why = sl_strdup(why);
    sl_log(SL_LOG_WARN,
           "Parquet output: row '%s', column '%s': %s, so it is not written there (_summary.json's "
           "unfit_values counts each column's rows like it). To keep such values, declare the "
           "column (%s:string keeps any value as its JSON text): an input's in --columns, one a "
           "stage sets in that stage's columns",
           id ? id : "?", column, why, column);
}

/* The row's columns that no part has: seen first after the columns were
 * planned from the first rows. `planned`: how many of the row's columns
 * are planned ones (all of them, as a row mostly has: nothing to look up). */
static void count_unplanned(pq_shared *ps, const sl_schema_row *row, size_t planned)
{
    const sl_columns *cols = ps->schema->passthrough;
    if (!json_is_object(row->extra) || !cols || sl_columns_declared(cols) ||
        planned == json_object_size(row->extra))
        return;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)row->extra, key, v) {
        size_t i = 0;
        while (i < ps->n_pass && strcmp(sl_columns_input_name(cols, i), key) != 0)
            i++;
        if (i < ps->n_pass || json_is_null(v))
            continue;
        size_t k = 0;
        while (k < ps->n_unplanned && strcmp(ps->unplanned[k].name, key) != 0)
            k++;
        unfit_count *u = &ps->unplanned_other;
        if (k < ps->n_unplanned) {
            u = &ps->unplanned[k];
        } else if (k < MAX_UNPLANNED && (ps->unplanned[k].name = sl_strdup(key))) {
            u = &ps->unplanned[k];
            ps->n_unplanned++;
        }
        count_unfit(ps, u, key, row->id,
                    "a column first seen after the Parquet columns were planned (from the first "
                    "100 input rows and the columns the stages declare)");
    }
}

static sl_status pq_write_row(void *shared, void *part, const sl_schema_row *row)
{
    pq_shared *ps = shared;
    const sl_schema *s = ps->schema;
    memset(ps->owned, 0, ps->n_defs * sizeof *ps->owned);
    size_t k = 0;
    for (size_t i = 0; i < s->n_head; i++, k++)
        ps->values[k] = pq_cell(ps->defs[k].type, row->cells[i], &ps->owned[k]);
    size_t planned = 0;
    for (size_t i = 0; i < ps->n_pass; i++, k++) {
        const json_t *v = sl_columns_value(s->passthrough, i, row->extra);
        ps->values[k] = sl_columns_value_cell(s->passthrough, i, v, &ps->owned[k]);
        char why[512];
        planned += v != NULL;
        if (!sl_columns_fits(s->passthrough, i, v, why, sizeof why))
            count_unfit(ps, &ps->unfit[i], sl_columns_input_name(s->passthrough, i), row->id, why);
    }
    count_unplanned(ps, row, planned);
    for (size_t i = 0; i < s->n_tail; i++, k++)
        ps->values[k] = pq_cell(ps->defs[k].type, row->cells[s->n_head + i], &ps->owned[k]);
    sl_status st = sl_parquet_sink_append(part, ps->values);
    for (size_t i = 0; i < ps->n_defs; i++)
        sl_free(ps->owned[i]);
    return st;
}

static sl_status pq_open(void *shared, const char *dir, const char *name, bool overwrite,
                         void **part)
{
    pq_shared *ps = shared;
    sl_pq_writer_params wp = sl_pq_writer_default_params();
    wp.codec = ps->codec;
    sl_status st = sl_parquet_sink_open(dir, name, overwrite, ps->defs, ps->n_defs, &wp, (sl_parquet_sink **)part);
    if (st == SL_OK && ps->shapes &&
        (st = sl_pq_writer_set_metadata(((sl_parquet_sink *)*part)->writer, SL_PQ_SHAPES_KEY, ps->shapes)) != SL_OK) {
        sl_parquet_sink_free(*part);
        *part = NULL;
    }
    return st;
}

static sl_status pq_finish(void *part) { return sl_parquet_sink_finish(part); }
static sl_status pq_publish(void *part) { return sl_parquet_sink_publish(part); }
static const char *pq_path(const void *part) { return sl_parquet_sink_path(part); }
static const char *pq_temp_path(const void *part)
{
    return ((const sl_parquet_sink *)part)->shard.tmp_path;
}
static void pq_free(void *part) { sl_parquet_sink_free(part); }
static sl_status pq_set_codec(void *shared, const char *name)
{
    pq_shared *ps = shared;
    if (!sl_pq_codec_parse(name, &ps->codec))
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet compression must be zstd, snappy, gzip or "
                                           "none, got '%s'", name);
    return SL_OK;
}
static int64_t pq_bytes(const void *part)
{
    return sl_pq_writer_bytes(((const sl_parquet_sink *)part)->writer);
}

static json_t *unfit_json(const unfit_count *u)
{
    return json_pack("{s:I, s:s, s:s}", "rows", (json_int_t)u->rows, "first_id",
                     u->first_id ? u->first_id : "", "why", u->why ? u->why : "");
}

static json_t *pq_unfit(const void *shared)
{
    const pq_shared *ps = shared;
    json_t *o = json_object();
    for (size_t i = 0; o && i < ps->n_pass; i++)
        if (ps->unfit[i].rows)
            json_object_set_new(o, sl_columns_input_name(ps->schema->passthrough, i), unfit_json(&ps->unfit[i]));
    for (size_t i = 0; o && i < ps->n_unplanned; i++)
        json_object_set_new(o, ps->unplanned[i].name, unfit_json(&ps->unplanned[i]));
    if (o && ps->unplanned_other.rows)
        json_object_set_new(o, "...", unfit_json(&ps->unplanned_other));
    if (o && json_object_size(o) == 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

static void pq_on_unfit(void *shared, void (*fn)(void *user, const char *column), void *user)
{
    pq_shared *ps = shared;
    ps->on_unfit = fn;
    ps->on_unfit_user = user;
}

const sl_sink_ops sl_sink_parquet = {
    .format = "parquet",
    .prepare = pq_prepare,
    .release = pq_release,
    .open = pq_open,
    .write = pq_write_row,
    .finish = pq_finish,
    .publish = pq_publish,
    .path = pq_path,
    .temp_path = pq_temp_path,
    .free = pq_free,
    .bytes = pq_bytes,
    .set_codec = pq_set_codec,
    .extension = "parquet",
    .unfit = pq_unfit,
    .on_unfit = pq_on_unfit,
};
