/* io/columns.c — see columns.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/error.h"
#include "core/utf8.h"
#include "io/columns.h"

typedef enum { T_NONE, T_INT, T_DOUBLE, T_BOOL, T_STRING } col_type;

typedef struct column {
    char *in, *out;
    col_type t;
} column;

struct sl_columns {
    char **reserved;
    size_t n_reserved;
    column *cols;
    size_t n, cap;
    bool fixed; /* declared: no columns are added by samples */
};

static bool is_reserved(const sl_columns *c, const char *name)
{
    for (size_t i = 0; i < c->n_reserved; i++)
        if (strcmp(c->reserved[i], name) == 0)
            return true;
    return false;
}

/* A name a renamed column may not take: ours, another input column of the
 * row, or a column already planned. */
static bool taken(const sl_columns *c, const char *input_name, const char *name, const json_t *row)
{
    if (is_reserved(c, name))
        return true;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->cols[i].in, input_name) != 0 &&
            (strcmp(c->cols[i].out, name) == 0 ||
             (strcmp(name, input_name) != 0 && strcmp(c->cols[i].in, name) == 0)))
            return true;
    return strcmp(name, input_name) != 0 && row && json_object_get(row, name);
}

const char *sl_columns_rename(const sl_columns *c, const char *input_name, const json_t *row,
                              char *buf, size_t len)
{
    snprintf(buf, len, "%s", input_name);
    while (taken(c, input_name, buf, row)) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "input_%s", buf);
        snprintf(buf, len, "%s", tmp);
    }
    return buf;
}

static sl_status add_column(sl_columns *c, const char *name, const json_t *row)
{
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 16;
        column *grown = sl_realloc(c->cols, ncap * sizeof *grown);
        if (!grown)
            return sl_fail(SL_ERR_NOMEM, "out of memory adding column '%s'", name);
        c->cols = grown;
        c->cap = ncap;
    }
    char buf[512];
    column *col = &c->cols[c->n];
    *col = (column){sl_strdup(name), sl_strdup(sl_columns_rename(c, name, row, buf, sizeof buf)),
                    T_NONE};
    if (!col->in || !col->out) {
        sl_free(col->in);
        sl_free(col->out);
        return sl_fail(SL_ERR_NOMEM, "out of memory adding column '%s'", name);
    }
    c->n++;
    return SL_OK;
}

sl_status sl_columns_stage_spec(const char *spec, size_t *name_len, bool *typed,
                                sl_pq_type *type)
{
    static const struct {
        const char *name;
        sl_pq_type type;
    } types[] = {{"string", SL_PQ_STRING}, {"int64", SL_PQ_INT64}, {"double", SL_PQ_DOUBLE},
                 {"bool", SL_PQ_BOOL}};
    const char *colon = strchr(spec, ':');
    *name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    *typed = colon != NULL;
    *type = SL_PQ_STRING;
    if (*name_len == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "column '%s' has no name before its type", spec);
    if (!colon)
        return SL_OK;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (strcmp(colon + 1, types[i].name) == 0) {
            *type = types[i].type;
            return SL_OK;
        }
    return sl_fail(SL_ERR_INVALID_ARG,
                   "column '%s': the type after ':' is string, int64, double or bool", spec);
}

sl_status sl_columns_add(sl_columns *c, const char *spec)
{
    size_t len;
    bool typed;
    sl_pq_type type;
    sl_status st = sl_columns_stage_spec(spec, &len, &typed, &type);
    if (st != SL_OK)
        return st;
    char *name = sl_strndup(spec, len);
    if (!name)
        return sl_fail(SL_ERR_NOMEM, "out of memory adding column '%s'", spec);
    size_t i = 0;
    while (i < c->n && strcmp(c->cols[i].in, name) != 0)
        i++;
    if (i == c->n)
        st = add_column(c, name, NULL);
    sl_free(name);
    if (st == SL_OK && typed)
        c->cols[i].t = type == SL_PQ_INT64    ? T_INT
                       : type == SL_PQ_DOUBLE ? T_DOUBLE
                       : type == SL_PQ_BOOL   ? T_BOOL
                                              : T_STRING;
    return st;
}

void sl_columns_free(sl_columns *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_reserved; i++)
        sl_free(c->reserved[i]);
    sl_free(c->reserved);
    for (size_t i = 0; i < c->n; i++) {
        sl_free(c->cols[i].in);
        sl_free(c->cols[i].out);
    }
    sl_free(c->cols);
    sl_free(c);
}

sl_status sl_columns_new(const char *const *reserved, size_t n_reserved,
                         const char *const *declared, size_t n_declared, sl_columns **out)
{
    *out = NULL;
    sl_columns *c = sl_calloc(1, sizeof *c);
    if (!c || !(c->reserved = sl_calloc(n_reserved ? n_reserved : 1, sizeof *c->reserved))) {
        sl_free(c);
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    }
    sl_status st = SL_OK;
    for (size_t i = 0; i < n_reserved && st == SL_OK; i++, c->n_reserved++)
        if (!(c->reserved[i] = sl_strdup(reserved[i])))
            st = sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    for (size_t i = 0; declared && i < n_declared && st == SL_OK; i++)
        st = add_column(c, declared[i], NULL);
    c->fixed = declared != NULL;
    if (st != SL_OK) {
        sl_columns_free(c);
        return st;
    }
    *out = c;
    return SL_OK;
}

static col_type type_of(const json_t *v)
{
    if (json_is_integer(v))
        return T_INT;
    if (json_is_real(v))
        return T_DOUBLE;
    if (json_is_boolean(v))
        return T_BOOL;
    return json_is_null(v) ? T_NONE : T_STRING;
}

static col_type widen(col_type a, col_type b)
{
    if (a == T_NONE || a == b)
        return b;
    if (b == T_NONE)
        return a;
    if ((a == T_INT && b == T_DOUBLE) || (a == T_DOUBLE && b == T_INT))
        return T_DOUBLE;
    return T_STRING;
}

sl_status sl_columns_sample(sl_columns *c, const json_t *extra)
{
    if (!json_is_object(extra))
        return SL_OK;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)extra, key, v) {
        size_t i = 0;
        while (i < c->n && strcmp(c->cols[i].in, key) != 0)
            i++;
        if (i == c->n) {
            if (c->fixed)
                continue;
            sl_status st = add_column(c, key, extra);
            if (st != SL_OK)
                return st;
        }
        c->cols[i].t = widen(c->cols[i].t, type_of(v));
    }
    return SL_OK;
}

size_t sl_columns_count(const sl_columns *c) { return c->n; }

bool sl_columns_declared(const sl_columns *c) { return c->fixed; }
const char *sl_columns_input_name(const sl_columns *c, size_t i) { return c->cols[i].in; }
const char *sl_columns_output_name(const sl_columns *c, size_t i) { return c->cols[i].out; }

sl_pq_type sl_columns_type(const sl_columns *c, size_t i)
{
    switch (c->cols[i].t) {
    case T_INT: return SL_PQ_INT64;
    case T_DOUBLE: return SL_PQ_DOUBLE;
    case T_BOOL: return SL_PQ_BOOL;
    default: return SL_PQ_STRING;
    }
}

sl_pq_value sl_columns_cell(const sl_columns *c, size_t i, const json_t *extra, char **owned)
{
    *owned = NULL;
    const json_t *v = json_object_get(extra, c->cols[i].in);
    sl_pq_value null = {.is_null = true};
    if (!v || json_is_null(v))
        return null;
    switch (sl_columns_type(c, i)) {
    case SL_PQ_INT64:
        return json_is_integer(v) ? (sl_pq_value){.i64 = json_integer_value(v)} : null;
    case SL_PQ_DOUBLE:
        return json_is_number(v) ? (sl_pq_value){.f64 = json_number_value(v)} : null;
    case SL_PQ_BOOL:
        return json_is_boolean(v) ? (sl_pq_value){.b = json_is_true(v)} : null;
    default:
        break;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        /* jansson strings are UTF-8 but may hold NUL; the writer takes bytes. */
        if (sl_utf8_valid(s, n))
            return (sl_pq_value){.ptr = s, .len = n};
        if (!(*owned = sl_utf8_sanitize(s, n)))
            return null;
        return (sl_pq_value){.ptr = *owned, .len = strlen(*owned)};
    }
    size_t len;
    if (!(*owned = sl_json_dump(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER, &len)))
        return null;
    return (sl_pq_value){.ptr = *owned, .len = len};
}
