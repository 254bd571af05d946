/* job/schema.c — see schema.h. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "job/batch.h"
#include "job/job.h"
#include "io/parquet_shape.h"
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
    /* Only with sampling.logprobs: JSON (JSONL the value, Parquet its text). */
    [CF_LOGPROBS] = {"logprobs", SL_PQ_STRING, true, NULL, false, true},
    /* Only with choices: each one's probability, a JSON object. */
    [CF_SCORES] = {"scores", SL_PQ_STRING, true, NULL, false, true},
    [CF_WIDTH] = {"width", SL_PQ_INT64, true, NULL, true, false},
    [CF_HEIGHT] = {"height", SL_PQ_INT64, true, NULL, true, false},
    [CF_SOURCE_WIDTH] = {"source_width", SL_PQ_INT64, true, NULL, true, false},
    [CF_SOURCE_HEIGHT] = {"source_height", SL_PQ_INT64, true, NULL, true, false},
    /* Rows with a list of images only (absent from JSONL, null in Parquet
     * for the others): how many. */
    [CF_IMAGE_COUNT] = {"image_count", SL_PQ_INT64, true, NULL, true, false},
    /* Videos only (absent from JSONL, null in Parquet for images). */
    [CF_VIDEO_FRAMES] = {"video_frames", SL_PQ_INT64, true, NULL, true, false},
    [CF_VIDEO_SECONDS] = {"video_seconds", SL_PQ_DOUBLE, true, NULL, true, false},
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

static const char *const answer_suffix[TC_COUNT] = {
    [TC_TEXT] = "", [TC_FINISH] = "_finish_reason", [TC_PROMPT_TOKENS] = "_prompt_tokens",
    [TC_GENERATED_TOKENS] = "_generated_tokens", [TC_CACHED_TOKENS] = "_cached_tokens",
    [TC_LOGPROBS] = "_logprobs", [TC_SCORES] = "_scores"};
static const sl_pq_type answer_type[TC_COUNT] = {SL_PQ_STRING, SL_PQ_STRING, SL_PQ_INT64,
                                                 SL_PQ_INT64, SL_PQ_INT64, SL_PQ_STRING,
                                                 SL_PQ_STRING};
static const sl_schema_column task_column = {"task", SL_PQ_STRING, false, NULL, false, false};
static const sl_schema_column sample_column = {"sample", SL_PQ_INT64, false, NULL, false, false};

/* A dry run's columns (null when not known: a file that cannot be read). */
static const sl_schema_column dry_run_columns[3] = {
    {"format", SL_PQ_STRING, true, NULL, false, false},
    {"input_bytes", SL_PQ_INT64, true, NULL, false, false},
    {"jpeg_bytes", SL_PQ_INT64, true, NULL, false, false},
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

sl_status caption_task_name_check(const char *name, bool rows_per_task)
{
    size_t len = strlen(name);
    bool ok = len > 0 && len <= 64;
    for (size_t i = 0; ok && i < len; i++) {
        char c = name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
             (i > 0 && c >= '0' && c <= '9');
    }
    if (!ok)
        return sl_fail(SL_ERR_INVALID_ARG, "task name '%.80s': letters, digits and _ (not first a "
                       "digit), at most 64 bytes: it names output columns", name);
    if (rows_per_task)
        return SL_OK; /* the name is a value of column `task` */
    char col[128];
    for (int k = 0; k < TC_COUNT; k++) {
        snprintf(col, sizeof col, "%s%s", name, answer_suffix[k]);
        for (int f = 0; f < CF_COUNT; f++)
            if (f == CF_CAPTION || f == CF_FINISH)
                continue; /* not written when there are tasks */
            else if (!strcmp(col, caption_fields[f].name) ||
                (caption_fields[f].group && !strcmp(col, caption_fields[f].group)))
                return sl_fail(SL_ERR_INVALID_ARG, "task name '%s': its column '%s' is one of "
                               "sluice's own; choose another name", name, col);
        if (!strcmp(col, task_column.name) || !strcmp(col, sample_column.name) ||
            !strcmp(col, image_bytes_column.name))
            return sl_fail(SL_ERR_INVALID_ARG, "task name '%s': its column '%s' is one of "
                           "sluice's own; choose another name", name, col);
    }
    return SL_OK;
}

sl_status caption_task_columns_check(const sl_caption_task *tasks, int i)
{
    char mine[128], theirs[128];
    for (int k = 0; k < i; k++)
        for (int a = 0; a < TC_COUNT; a++) {
            snprintf(mine, sizeof mine, "%s%s", tasks[i].name, answer_suffix[a]);
            for (int b = 0; b < TC_COUNT; b++) {
                snprintf(theirs, sizeof theirs, "%s%s", tasks[k].name, answer_suffix[b]);
                if (!strcmp(mine, theirs))
                    return sl_fail(SL_ERR_INVALID_ARG, "task names '%s' and '%s' both make the "
                                   "column '%s' (a task's answer is NAME, with NAME_finish_reason, "
                                   "NAME_scores, ...): rename one", tasks[k].name,
                                   tasks[i].name, mine);
            }
        }
    return SL_OK;
}

/* Whether every answer the job writes in `caption` is JSON. */
static bool all_structured(const sl_caption_params *p)
{
    if (p->n_tasks == 0 || p->json_schema)
        return p->json_schema != NULL;
    for (int t = 0; t < p->n_tasks; t++)
        if (!p->tasks[t].json_schema)
            return false;
    return true;
}

/* Whether the column `logprobs` is written: the job asks for them, or
 * with one row per task, any task. */
static bool logprobs_column(const sl_caption_params *p)
{
    if (p->n_tasks == 0)
        return p->sampling.logprobs;
    for (int t = 0; p->rows_per_task && t < p->n_tasks; t++)
        if (p->tasks[t].sampling.logprobs)
            return true;
    return false;
}

/* Whether the column `scores` is written: the job has choices and no
 * tasks, or with one row per task, any task has some (the job's count);
 * one row per image holds a task's in NAME_scores. */
static bool scores_column(const sl_caption_params *p)
{
    const char *const *choices;
    if (p->n_tasks == 0)
        return job_choices(p, 0, &choices) > 0;
    for (int t = 0; p->rows_per_task && t < p->n_tasks; t++)
        if (job_choices(p, t, &choices) > 0)
            return true;
    return false;
}

/* The job's columns in output order: with several tasks, each task's five
 * (six with logprobs, one more with choices) after `path` in place of caption and finish_reason;
 * with one row per task, `task` after `path`. */
static sl_status plan_head(const sl_caption_params *p, caption_schema *out)
{
    int n_tasks = p->n_tasks > 0 && !p->rows_per_task ? p->n_tasks : 0;
    size_t cap = CF_COUNT + 5 + (size_t)n_tasks * TC_COUNT, names_len = 0;
    for (int t = 0; t < n_tasks; t++)
        names_len += TC_COUNT * (strlen(p->tasks[t].name) + 20);
    out->head = sl_calloc(cap, sizeof *out->head);
    out->head_cell = sl_calloc(cap, sizeof *out->head_cell);
    out->names = sl_malloc(names_len + 1);
    if (!out->head || !out->head_cell || !out->names)
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    size_t n = 0, used = 0;
    for (int f = 0; f < CF_COUNT; f++) {
        if ((n_tasks > 0 && (f == CF_CAPTION || f == CF_FINISH)) ||
            (f == CF_LOGPROBS && !logprobs_column(p)) || (f == CF_SCORES && !scores_column(p)))
            continue;
        out->head_cell[n] = f;
        out->head[n] = caption_fields[f];
        /* A structured answer is JSON (checked by the engine): JSONL writes
         * the value, Parquet its text. With one row per task, only when
         * every task has a schema (the column holds all their answers). */
        if (f == CF_CAPTION)
            out->head[n].json = all_structured(p);
        n++;
        if (f == CF_SOURCE_HEIGHT && p->dry_run) {
            int k = job_uses_openai(p) ? 3 : 2;
            for (int c = 0; c < k; c++) {
                out->head_cell[n] = CELL_FORMAT + c;
                out->head[n++] = dry_run_columns[c];
            }
        }
        if (f != CF_PATH)
            continue;
        if (p->n_tasks > 0 && p->rows_per_task) {
            out->head_cell[n] = CELL_TASK;
            out->head[n++] = task_column;
        }
        if (p->sampling.n > 1) {
            out->head_cell[n] = CELL_SAMPLE;
            out->head[n++] = sample_column;
        }
        for (int t = 0; t < n_tasks; t++)
            for (int k = 0; k < TC_COUNT; k++) {
                const char *const *choices;
                if ((k == TC_LOGPROBS && !p->tasks[t].sampling.logprobs) ||
                    (k == TC_SCORES && !job_choices(p, t, &choices)))
                    continue;
                char *name = out->names + used;
                used += (size_t)snprintf(name, names_len + 1 - used, "%s%s", p->tasks[t].name,
                                         answer_suffix[k]) + 1;
                out->head_cell[n] = CELL_ANSWER(t, k);
                /* A failed row has no answers; token counts are then 0. */
                out->head[n] = (sl_schema_column){name, answer_type[k],
                                                  k <= TC_FINISH || k >= TC_LOGPROBS, NULL,
                                                  false, k >= TC_LOGPROBS};
                if (k == TC_TEXT)
                    out->head[n].json = p->tasks[t].json_schema || p->json_schema;
                n++;
            }
    }
    out->schema.head = out->head;
    out->schema.n_head = n;
    return SL_OK;
}

/* The columns' types as the sampled input files declare them (Parquet,
 * Arrow): what the schema says beats what 100 rows' values suggest (a map
 * with few keys is no struct, a column null so far has a type). A shape the
 * writer cannot take leaves its column to the samples. */
/* The shape (io/parquet_shape.h's JSON) of a struct's field at a dotted
 * path (as core/json.h's sl_json_column walks values), or NULL. */
static const json_t *field_shape(const json_t *types, const char *path)
{
    char key[512];
    if (strlen(path) >= sizeof key)
        return NULL;
    snprintf(key, sizeof key, "%s", path);
    const json_t *shape = NULL;
    for (char *part = key, *dot; part; part = dot ? dot + 1 : NULL) {
        if ((dot = strchr(part, '.')))
            *dot = '\0';
        if (!*part)
            return NULL;
        const json_t *fields = shape ? json_object_get(shape, "struct") : NULL, *found = NULL;
        if (!shape) {
            found = json_object_get(types, part);
        } else {
            size_t k;
            json_t *f;
            json_array_foreach(fields, k, f)
                if (json_is_string(json_array_get(f, 0)) && strcmp(json_string_value(json_array_get(f, 0)), part) == 0)
                    found = json_array_get(f, 1);
        }
        if (!(shape = found))
            return NULL;
    }
    return shape;
}

static sl_status apply_type(sl_columns *cols, const char *name, const json_t *j)
{
    char why[256];
    sl_pq_node *shape = sl_pq_shape_parse(j, why, sizeof why);
    if (!shape)
        return SL_OK;
    sl_status st = sl_columns_input_type(cols, name, shape);
    sl_pq_shape_free(shape);
    return st;
}

/* The input's schema types applied: to each column it types, and to a
 * declared dotted column that names a struct's field, the field's. */
static sl_status schema_types(sl_columns *cols, const json_t *types)
{
    const char *name;
    json_t *j;
    sl_status st = SL_OK;
    json_object_foreach((json_t *)types, name, j)
        if ((st = apply_type(cols, name, j)) != SL_OK)
            return st;
    for (size_t i = 0; sl_columns_declared(cols) && i < sl_columns_count(cols) && st == SL_OK; i++) {
        const char *in = sl_columns_input_name(cols, i);
        const json_t *field = strchr(in, '.') && !json_object_get(types, in) ? field_shape(types, in) : NULL;
        if (field)
            st = apply_type(cols, in, field);
    }
    return st;
}

/* The declared columns (--columns) with each one an answer column has
 * under its other name (answer_columns_input_name), in *out (free with
 * free_declared, n of them); a spec that is not one stays as it is, for
 * sl_columns_new to name. */
static sl_status declared_columns(const sl_caption_params *p, const answer_columns *ac,
                                  char ***out)
{
    size_t n = (size_t)p->n_columns;
    *out = p->columns ? sl_calloc(n ? n : 1, sizeof **out) : NULL;
    if (p->columns && !*out)
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    for (size_t i = 0; p->columns && i < n; i++) {
        const char *spec = p->columns[i];
        size_t len;
        bool typed;
        sl_pq_type type;
        char *name = sl_columns_input_spec(spec, &len, &typed, &type) == SL_OK
                         ? sl_strndup(spec, len) : NULL;
        char *to = name ? answer_columns_input_name(ac, name, NULL) : NULL;
        (*out)[i] = !name ? sl_strdup(spec) : to ? sl_asprintf("%s%s", to, spec + len) : NULL;
        sl_free(name);
        sl_free(to);
        if (!(*out)[i])
            return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    }
    return SL_OK;
}

static void free_declared(char **specs, int n)
{
    for (int i = 0; specs && i < n; i++)
        sl_free(specs[i]);
    sl_free(specs);
}

/* The input schema's column types (an object, or NULL) with each one an
 * answer column has under its other name; NULL and *nomem when out of
 * memory. */
static json_t *renamed_types(const answer_columns *ac, const json_t *types, bool *nomem)
{
    json_t *out = types ? json_object() : NULL;
    *nomem = types && !out;
    const char *name;
    json_t *t;
    json_object_foreach((json_t *)types, name, t) {
        char *to = out ? answer_columns_input_name(ac, name, types) : NULL;
        *nomem = *nomem || !to || json_object_set(out, to, t) != 0;
        sl_free(to);
        if (*nomem)
            break;
    }
    if (*nomem) {
        json_decref(out);
        out = NULL;
    }
    return out;
}

sl_status caption_schema_plan_head(const sl_caption_params *p, caption_schema *out)
{
    memset(out, 0, sizeof *out);
    return plan_head(p, out);
}

sl_status caption_schema_plan(const sl_caption_params *p, const sl_source *src,
                              const char *const *stage_columns, size_t n_stage_columns,
                              const answer_columns *ac, caption_schema *out)
{
    memset(out, 0, sizeof *out);
    if (job_is_batch(p))
        return batch_schema_plan(p, stage_columns, n_stage_columns, out);
    sl_status st0 = plan_head(p, out);
    if (st0 != SL_OK)
        return st0;
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
    char **declared = NULL;
    if ((st = declared_columns(p, ac, &declared)) == SL_OK)
        st = sl_columns_new(reserved, n_reserved, (const char *const *)declared,
                            declared ? (size_t)p->n_columns : 0, &out->cols);
    free_declared(declared, p->n_columns);
    sl_free(reserved);
    if (st != SL_OK)
        return st;
    out->schema.passthrough = out->cols;
    /* JSONL writes each row's own columns; Parquet needs one type per
     * column before the first row: the first rows of the inputs say. */
    if (parquet_output(p) && strcmp(sl_source_kind(src), "folder") != 0) {
        sl_source *peek;
        if ((st = sl_source_reopen(src, &peek)) != SL_OK)
            return st;
        sl_source_item it = {0};
        bool done = false;
        for (int k = 0; k < SCHEMA_SAMPLE_ROWS && st == SL_OK; k++) {
            if ((st = sl_source_next(peek, &it, &done)) != SL_OK || done)
                break;
            if ((st = answer_columns_make_room(ac, it.extra)) == SL_OK)
                st = sl_columns_sample(out->cols, it.extra);
        }
        sl_source_item_clear(&it);
        bool nomem = false;
        json_t *types = st == SL_OK ? renamed_types(ac, sl_source_column_types(peek), &nomem) : NULL;
        if (nomem)
            st = sl_fail(SL_ERR_NOMEM, "out of memory typing the input's columns");
        else if (st == SL_OK)
            st = schema_types(out->cols, types);
        json_decref(types);
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
    for (size_t i = 0; !bad && i < np; i++) {
        const sl_pq_node *shape = sl_columns_shape(s->cols, i);
        if (shape) /* a nested column: its shape as io/parquet_shape.h writes it */
            bad = json_array_append_new(a, json_pack("{s:s, s:o*}", "name", sl_columns_output_name(s->cols, i),
                                                     "type", sl_pq_shape_json(shape)));
        else
            bad = add_column(a, NULL, sl_columns_output_name(s->cols, i), sl_columns_type(s->cols, i));
    }
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
    sl_free(s->head_cell);
    sl_free(s->names);
    memset(s, 0, sizeof *s);
}
