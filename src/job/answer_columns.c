/* job/answer_columns.c — see answer_columns.h. */
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/parquet_write.h"
#include "job/answer_columns.h"
#include "job/batch.h"

/* The Parquet type a property's schema promises, as a column spec's TYPE
 * (a leaf type's name). */
static const char *type_of(const json_t *prop)
{
    const json_t *type = json_object_get(prop, "type");
    if (json_is_array(type)) { /* ["string", "null"]: the one that is not null */
        const json_t *one = NULL;
        size_t i;
        json_t *t;
        json_array_foreach(type, i, t) {
            if (json_is_string(t) && strcmp(json_string_value(t), "null") == 0)
                continue;
            if (one)
                return "string";
            one = t;
        }
        type = one;
    }
    const char *name = json_string_value(type);
    const json_t *values = json_object_get(prop, "enum");
    if (!name && json_array_size(values) > 0) { /* an enum: the type all its values share */
        size_t i, ints = 0, numbers = 0, bools = 0, n = json_array_size(values);
        json_t *v;
        json_array_foreach(values, i, v) {
            ints += json_is_integer(v);
            numbers += json_is_number(v);
            bools += json_is_boolean(v);
        }
        return ints == n ? "int64" : numbers == n ? "double" : bools == n ? "bool" : "string";
    }
    if (!name) /* the JSON text of whatever comes */
        return "string";
    if (strcmp(name, "integer") == 0)
        return "int64";
    if (strcmp(name, "number") == 0)
        return "double";
    if (strcmp(name, "boolean") == 0)
        return "bool";
    return "string";
}

/* The shape (io/parquet_shape.h) of a property whose schema is an array of
 * typed items or an object of typed properties, any depth (lists at most
 * SL_PQ_WRITE_MAX_LISTS); its leaves' types as type_of says; NULL for
 * other properties (and for shapes past the limits, written as JSON text). */
static json_t *shape_of(const json_t *prop, int depth, int lists)
{
    const char *kind = json_string_value(json_object_get(prop, "type"));
    if (depth > 8 || !kind)
        return NULL;
    if (strcmp(kind, "array") == 0) {
        const json_t *items = json_object_get(prop, "items");
        if (!json_is_object(items) || lists >= SL_PQ_WRITE_MAX_LISTS)
            return NULL;
        json_t *e = shape_of(items, depth + 1, lists + 1);
        return json_pack("{s:o}", "list", e ? e : json_string(type_of(items)));
    }
    const json_t *props = json_object_get(prop, "properties");
    if (strcmp(kind, "object") != 0 || !json_is_object(props) || json_object_size(props) == 0 ||
        json_object_size(props) > 64)
        return NULL;
    json_t *fields = json_array();
    const char *name;
    json_t *p;
    json_object_foreach((json_t *)props, name, p) {
        if (!*name || strchr(name, '.')) {
            json_decref(fields);
            return NULL; /* not a name a field can have */
        }
        json_t *f = shape_of(p, depth + 1, lists);
        json_array_append_new(fields, json_pack("[s,o]", name, f ? f : json_string(type_of(p))));
    }
    return json_pack("{s:o}", "struct", fields);
}

static sl_status add(answer_columns *ac, int task, const char *prefix, const char *property,
                     const json_t *prop)
{
    answer_column *grown = sl_realloc(ac->cols, (size_t)(ac->n + 1) * sizeof *grown);
    if (!grown)
        return sl_fail(SL_ERR_NOMEM, "out of memory planning the answer columns");
    ac->cols = grown;
    answer_column *c = &ac->cols[ac->n];
    *c = (answer_column){.task = task};
    c->name = prefix ? sl_asprintf("%s_%s", prefix, property) : sl_strdup(property);
    c->property = sl_strdup(property);
    json_t *shape = shape_of(prop, 0, 0);
    char *text = shape ? json_dumps(shape, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    c->spec = c->name ? sl_asprintf("%s:%s", c->name, text ? text : type_of(prop)) : NULL;
    free(text);
    json_decref(shape);
    ac->n++;
    return c->name && c->property && c->spec
               ? SL_OK
               : sl_fail(SL_ERR_NOMEM, "out of memory planning the answer columns");
}

/* The columns of one schema's properties (JSON text `schema`, named `from`
 * in messages). */
static sl_status plan_schema(answer_columns *ac, int task, const char *prefix, const char *schema,
                             const char *from)
{
    json_error_t err;
    json_t *root = json_loads(schema, 0, &err);
    json_t *props = json_object_get(root, "properties");
    const char *type = json_string_value(json_object_get(root, "type"));
    sl_status st = SL_OK;
    if (!json_is_object(props) || json_object_size(props) == 0 || (type && strcmp(type, "object")))
        st = sl_fail(SL_ERR_INVALID_ARG, "--answer-columns: %s is not an object with "
                     "properties (its answers have no fields to be columns)", from);
    const char *key;
    json_t *prop;
    json_object_foreach(props, key, prop) {
        if (st != SL_OK)
            break;
        if (!*key)
            st = sl_fail(SL_ERR_INVALID_ARG, "--answer-columns: %s has a property with an empty "
                         "name", from);
        else
            st = add(ac, task, prefix, key, prop);
    }
    json_decref(root);
    return st;
}

sl_status answer_columns_plan(const sl_caption_params *p, answer_columns *out)
{
    *out = (answer_columns){0};
    if (!p->answer_columns)
        return SL_OK;
    const char *why = p->dry_run        ? "--dry-run (no answers)"
                      : job_is_batch(p) ? "a batch file (its output lines are OpenAI's)"
                                        : NULL;
    if (why)
        return sl_fail(SL_ERR_INVALID_ARG, "--answer-columns cannot go with %s", why);
    sl_status st = SL_OK;
    if (p->n_tasks == 0) {
        if (!p->json_schema)
            return sl_fail(SL_ERR_INVALID_ARG, "--answer-columns needs --json-schema (the "
                           "properties of its answers become the columns)");
        st = plan_schema(out, 0, NULL, p->json_schema, "the --json-schema");
    }
    int with_schema = 0;
    for (int t = 0; st == SL_OK && t < p->n_tasks; t++) {
        const char *schema = p->tasks[t].json_schema ? p->tasks[t].json_schema : p->json_schema;
        if (!schema)
            continue;
        char from[160];
        snprintf(from, sizeof from, "task %.100s's json_schema", p->tasks[t].name);
        st = plan_schema(out, t, p->tasks[t].name, schema, from);
        with_schema++;
    }
    if (st == SL_OK && p->n_tasks > 0 && with_schema == 0)
        st = sl_fail(SL_ERR_INVALID_ARG, "--answer-columns needs a JSON schema: no task answers "
                     "under one (a task's json_schema, or --json-schema for all)");
    if (st != SL_OK)
        answer_columns_clear(out);
    return st;
}

sl_status answer_columns_free_of(const answer_columns *ac, const caption_schema *s)
{
    for (int i = 0; i < ac->n; i++) {
        const char *name = ac->cols[i].name;
        bool ours = caption_field_index(name) >= 0 || strcmp(name, "task") == 0 ||
                    strcmp(name, "sample") == 0;
        for (size_t h = 0; !ours && h < s->schema.n_head; h++)
            ours = strcmp(s->head[h].name, name) == 0;
        if (ours)
            return sl_fail(SL_ERR_INVALID_ARG, "--answer-columns: the property '%s' would be the "
                           "column '%s', one of the output's own: rename it in the schema",
                           ac->cols[i].property, name);
    }
    return SL_OK;
}

sl_status answer_columns_fill(const answer_columns *ac, int task, const char *answer,
                              json_t **extra)
{
    bool any = false;
    for (int i = 0; i < ac->n && !any; i++)
        any = ac->cols[i].task == task;
    if (!any || !answer)
        return SL_OK;
    json_t *obj = json_loads(answer, JSON_DECODE_ANY, NULL);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return SL_OK;
    }
    sl_status st = SL_OK;
    if (!*extra && !(*extra = json_object()))
        st = sl_fail(SL_ERR_NOMEM, "out of memory setting the answer columns");
    for (int i = 0; st == SL_OK && i < ac->n; i++) {
        const answer_column *c = &ac->cols[i];
        json_t *v = c->task == task ? json_object_get(obj, c->property) : NULL;
        if (v && json_object_set(*extra, c->name, v) != 0)
            st = sl_fail(SL_ERR_NOMEM, "out of memory setting the answer columns");
    }
    json_decref(obj);
    return st;
}

static bool planned(const answer_columns *ac, const char *name)
{
    for (int i = 0; i < ac->n; i++)
        if (strcmp(ac->cols[i].name, name) == 0)
            return true;
    return false;
}

char *answer_columns_input_name(const answer_columns *ac, const char *name, const json_t *row)
{
    char *out = sl_strdup(name);
    while (out && (planned(ac, out) || (strcmp(out, name) != 0 && json_object_get(row, out)))) {
        char *longer = sl_asprintf("input_%s", out);
        sl_free(out);
        out = longer;
    }
    return out;
}

sl_status answer_columns_make_room(const answer_columns *ac, json_t *extra)
{
    for (int i = 0; extra && i < ac->n; i++) {
        json_t *v = json_object_get(extra, ac->cols[i].name);
        if (!v)
            continue;
        char *to = answer_columns_input_name(ac, ac->cols[i].name, extra);
        bool moved = to && json_object_set(extra, to, v) == 0;
        sl_free(to);
        if (!moved)
            return sl_fail(SL_ERR_NOMEM, "out of memory renaming the input column '%s'",
                           ac->cols[i].name);
        json_object_del(extra, ac->cols[i].name);
    }
    return SL_OK;
}

void answer_columns_drop(const answer_columns *ac, json_t *extra)
{
    for (int i = 0; i < ac->n; i++)
        json_object_del(extra, ac->cols[i].name);
}

void answer_columns_clear(answer_columns *ac)
{
    for (int i = 0; ac && i < ac->n; i++) {
        sl_free(ac->cols[i].name);
        sl_free(ac->cols[i].spec);
        sl_free(ac->cols[i].property);
    }
    if (ac) {
        sl_free(ac->cols);
        *ac = (answer_columns){0};
    }
}
