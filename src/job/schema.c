/* job/schema.c — see schema.h. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "job/schema.h"

/* JSONL nests these in "timings"; Parquet has a column for each. Width to
 * source_height are absent from JSONL (null in Parquet) until decoded. */
const sl_schema_column caption_fields[CF_COUNT] = {
    [CF_ID] = {"id", SL_PQ_STRING, false, NULL, false, false},
    [CF_PATH] = {"path", SL_PQ_STRING, true, NULL, false, false},
    [CF_CAPTION] = {"caption", SL_PQ_STRING, true, NULL, false, false},
    [CF_FINISH] = {"finish_reason", SL_PQ_STRING, true, NULL, false, false},
    [CF_PROMPT_TOKENS] = {"prompt_tokens", SL_PQ_INT64, false, NULL, false, false},
    [CF_GENERATED_TOKENS] = {"generated_tokens", SL_PQ_INT64, false, NULL, false, false},
    [CF_CACHED_TOKENS] = {"cached_tokens", SL_PQ_INT64, false, NULL, false, false},
    [CF_WIDTH] = {"width", SL_PQ_INT64, true, NULL, true, false},
    [CF_HEIGHT] = {"height", SL_PQ_INT64, true, NULL, true, false},
    [CF_SOURCE_WIDTH] = {"source_width", SL_PQ_INT64, true, NULL, true, false},
    [CF_SOURCE_HEIGHT] = {"source_height", SL_PQ_INT64, true, NULL, true, false},
    [CF_MODEL] = {"model", SL_PQ_STRING, false, NULL, false, false},
    [CF_SEED] = {"seed", SL_PQ_INT64, false, NULL, false, false},
    [CF_DECODE_MS] = {"decode_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    [CF_QUEUE_MS] = {"queue_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    [CF_PREFILL_MS] = {"prefill_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    [CF_ENCODE_MS] = {"encode_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    [CF_TTFT_MS] = {"ttft_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    [CF_GENERATE_MS] = {"generate_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    [CF_TOTAL_MS] = {"total_ms", SL_PQ_DOUBLE, false, "timings", false, false},
    [CF_ERROR_STAGE] = {"error_stage", SL_PQ_STRING, true, NULL, false, false},
    [CF_ERROR] = {"error", SL_PQ_STRING, true, NULL, false, false},
};

static const sl_schema_column image_bytes_column = {"image_bytes", SL_PQ_BINARY, true, NULL,
                                                    false, false};

int caption_field_index(const char *name)
{
    for (int i = 0; i < CF_COUNT; i++)
        if (strcmp(caption_fields[i].name, name) == 0)
            return i;
    if (strcmp(name, "timings") == 0 || strcmp(name, image_bytes_column.name) == 0)
        return CF_COUNT;
    return -1;
}

/* How many rows are read ahead to choose the pass-through columns' types. */
enum { SCHEMA_SAMPLE_ROWS = 100 };

static bool parquet_output(const sl_caption_params *p)
{
    return p->output_format && strcmp(p->output_format, "parquet") == 0;
}

static bool has_name(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* Every name of ours, which a pass-through column must not take: the
 * fields, their groups, the answers and image_bytes (even when not written:
 * a column of that name would change meaning with --include-image-bytes). */
static sl_status reserved_names(const caption_schema *s, const char ***out, size_t *n)
{
    size_t n_cols = s->schema.n_head + s->schema.n_tail, k = 0;
    const char **names = sl_calloc(2 * n_cols + 1, sizeof *names);
    if (!names)
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    for (size_t i = 0; i < n_cols; i++) {
        const sl_schema_column *c = i < s->schema.n_head ? &s->schema.head[i]
                                                         : &s->schema.tail[i - s->schema.n_head];
        names[k++] = c->name;
        if (c->group && !has_name(names, k, c->group))
            names[k++] = c->group;
    }
    if (!has_name(names, k, image_bytes_column.name))
        names[k++] = image_bytes_column.name;
    *out = names;
    *n = k;
    return SL_OK;
}

sl_status caption_schema_plan(const sl_caption_params *p, const char *const *inputs,
                              size_t n_inputs, const sl_source_params *src_params,
                              const sl_source *src, const char *const *stage_columns,
                              size_t n_stage_columns, caption_schema *out)
{
    memset(out, 0, sizeof *out);
    size_t n_answers = 0; /* the tasks of the next step add theirs here */
    out->head = sl_calloc(CF_COUNT + n_answers, sizeof *out->head);
    if (!out->head)
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    memcpy(out->head, caption_fields, sizeof caption_fields);
    /* A structured answer is JSON (checked by the engine): JSONL writes the
     * value, Parquet its text. */
    out->head[CF_CAPTION].json = p->json_schema != NULL;
    out->schema.head = out->head;
    out->schema.n_head = CF_COUNT + n_answers;
    if (p->include_image_bytes) {
        out->tail[0] = image_bytes_column;
        out->schema.tail = out->tail;
        out->schema.n_tail = 1;
    }
    const char **reserved = NULL;
    size_t n_reserved = 0;
    sl_status st = reserved_names(out, &reserved, &n_reserved);
    if (st != SL_OK)
        return st;
    st = sl_columns_new(reserved, n_reserved, p->columns, p->columns ? (size_t)p->n_columns : 0,
                        &out->cols);
    sl_free(reserved);
    if (st != SL_OK)
        return st;
    out->schema.passthrough = out->cols;
    /* JSONL writes each row's own columns; Parquet needs one type per
     * column before the first row: the first rows of the inputs say. */
    if (parquet_output(p) && strcmp(sl_source_kind(src), "folder") != 0) {
        sl_source *peek;
        if ((st = sl_source_open(inputs, n_inputs, src_params, &peek)) != SL_OK)
            return st;
        sl_source_item it = {0};
        bool done = false;
        for (int k = 0; k < SCHEMA_SAMPLE_ROWS && st == SL_OK; k++) {
            if ((st = sl_source_next(peek, &it, &done)) != SL_OK || done)
                break;
            st = sl_columns_sample(out->cols, it.extra);
        }
        sl_source_item_clear(&it);
        sl_source_free(peek);
    }
    for (size_t i = 0; i < n_stage_columns && st == SL_OK; i++)
        st = sl_columns_add(out->cols, stage_columns[i]);
    return st;
}

static const char *type_name(sl_pq_type t)
{
    switch (t) {
    case SL_PQ_STRING: return "string";
    case SL_PQ_INT64: return "int64";
    case SL_PQ_DOUBLE: return "double";
    case SL_PQ_BOOL: return "bool";
    case SL_PQ_BINARY: return "binary";
    default: return "?";
    }
}

static int add_column(json_t *a, const char *group, const char *name, sl_pq_type type)
{
    char full[512];
    if (group)
        snprintf(full, sizeof full, "%s.%s", group, name);
    return json_array_append_new(a, json_pack("{s:s, s:s}", "name", group ? full : name, "type",
                                              type_name(type)));
}

json_t *caption_schema_json(const caption_schema *s)
{
    json_t *a = json_array();
    int bad = !a;
    for (size_t i = 0; !bad && i < s->schema.n_head; i++)
        bad = add_column(a, s->head[i].group, s->head[i].name, s->head[i].type);
    size_t np = s->cols ? sl_columns_count(s->cols) : 0;
    for (size_t i = 0; !bad && i < np; i++)
        bad = add_column(a, NULL, sl_columns_output_name(s->cols, i), sl_columns_type(s->cols, i));
    for (size_t i = 0; !bad && i < s->schema.n_tail; i++)
        bad = add_column(a, NULL, s->tail[i].name, s->tail[i].type);
    if (bad) {
        json_decref(a);
        return NULL;
    }
    return a;
}

void caption_schema_clear(caption_schema *s)
{
    sl_columns_free(s->cols);
    sl_free(s->head);
    memset(s, 0, sizeof *s);
}
