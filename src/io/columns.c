/* io/columns.c — see columns.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/decimal.h"
#include "core/error.h"
#include "core/json.h"
#include "io/columns.h"
#include "io/parquet_shape.h"

/* T_DECIMAL only from a schema (sl_columns_input_type) or a declared type
 * (NAME:decimal(P,S)): samples see a decimal's value as a number
 * (T_DOUBLE). */
typedef enum { T_NONE, T_INT, T_DOUBLE, T_BOOL, T_STRING, T_LIST, T_STRUCT, T_MAP, T_DECIMAL } col_type;

/* What the samples showed of a value: a scalar type, or a list of elements,
 * a struct of fields or a map of values (each widened in turn). */
typedef struct ctype {
    col_type t;
    struct ctype *elem;    /* T_LIST, T_MAP (its values) */
    char **names;          /* T_STRUCT, n fields */
    struct ctype **fields;
    size_t n;
    int precision, scale; /* T_DECIMAL */
} ctype;

/* A nested column at most this big; past it, its JSON text. */
#define MAX_FIELDS 64
#define MAX_LEAVES 256
#define MAX_NESTING 8

typedef struct column {
    char *in, *out;
    ctype *shape;      /* what the samples (or a stage's spec) said */
    sl_pq_node *node;  /* the writer's shape, made from it once asked */
    bool typed;        /* declared with a type: samples leave it as it is */
} column;

static sl_pq_type leaf_type(col_type t)
{
    return t == T_INT ? SL_PQ_INT64 : t == T_DOUBLE ? SL_PQ_DOUBLE : t == T_BOOL ? SL_PQ_BOOL
           : t == T_DECIMAL ? SL_PQ_DECIMAL : SL_PQ_STRING;
}

static col_type col_type_of(sl_pq_type t)
{
    return t == SL_PQ_INT64 ? T_INT : t == SL_PQ_DOUBLE ? T_DOUBLE : t == SL_PQ_BOOL ? T_BOOL
           : t == SL_PQ_DECIMAL ? T_DECIMAL : T_STRING;
}

/* Names are looked up by hash (JSON objects as sets and maps), not by
 * walking them: a row of a wide table renames each of its columns. */
struct sl_columns {
    json_t *reserved;      /* the output's own names -> true */
    json_t *by_in, *by_out; /* each column's input and output name -> its index */
    column *cols;
    size_t n, cap;
    bool fixed; /* declared: no columns are added by samples */
};

/* The index of the column json name map `by` gives for name; SIZE_MAX for none. */
static size_t index_in(const json_t *by, const char *name)
{
    json_t *i = json_object_get(by, name);
    return i ? (size_t)json_integer_value(i) : SIZE_MAX;
}

/* A name a renamed column may not take: none (Parquet's columns have
 * names), ours, another input column of the row, or a column already
 * planned (another's output name, or another's input name). */
static bool taken(const sl_columns *c, const char *input_name, const char *name, const json_t *row)
{
    if (!*name || json_object_get(c->reserved, name))
        return true;
    size_t out = index_in(c->by_out, name);
    if (out != SIZE_MAX && strcmp(c->cols[out].in, input_name) != 0)
        return true;
    return strcmp(name, input_name) != 0 &&
           (index_in(c->by_in, name) != SIZE_MAX || (row && json_object_get(row, name)));
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

static void ctype_free(ctype *t);

static void ctype_clear(ctype *t)
{
    if (!t)
        return;
    ctype_free(t->elem);
    for (size_t i = 0; i < t->n; i++) {
        sl_free(t->names[i]);
        ctype_free(t->fields[i]);
    }
    sl_free(t->names);
    sl_free(t->fields);
    *t = (ctype){.t = T_NONE};
}

static void ctype_free(ctype *t)
{
    ctype_clear(t);
    sl_free(t);
}

static col_type scalar_type(const json_t *v)
{
    if (json_is_integer(v))
        return T_INT;
    if (json_is_real(v) || sl_json_decimal_text(v, NULL)) /* a decimal is a number in a string */
        return T_DOUBLE;
    if (json_is_boolean(v))
        return T_BOOL;
    return json_is_null(v) ? T_NONE : T_STRING;
}

static bool is_number(col_type t) { return t == T_INT || t == T_DOUBLE || t == T_DECIMAL; }

static col_type widen(col_type a, col_type b)
{
    if (a == T_NONE || a == b)
        return b;
    if (b == T_NONE)
        return a;
    return is_number(a) && is_number(b) ? T_DOUBLE : T_STRING;
}

static bool is_nested(col_type t) { return t == T_LIST || t == T_STRUCT || t == T_MAP; }

static void to_string(ctype *t)
{
    ctype_clear(t);
    t->t = T_STRING;
}

/* The index of struct t's field `name`; t->n when it has none. */
static size_t field_index(const ctype *t, const char *name)
{
    size_t i = 0;
    while (i < t->n && strcmp(t->names[i], name) != 0)
        i++;
    return i;
}

/* The index of struct t's field `name`, added (a T_NONE) when it has none;
 * -1 when out of memory. */
static long field_of(ctype *t, const char *name)
{
    size_t i = field_index(t, name);
    if (i < t->n)
        return (long)i;
    char **names = sl_realloc(t->names, (t->n + 1) * sizeof *names);
    if (names)
        t->names = names;
    ctype **fields = names ? sl_realloc(t->fields, (t->n + 1) * sizeof *fields) : NULL;
    if (fields)
        t->fields = fields;
    if (!fields || !(t->fields[t->n] = sl_calloc(1, sizeof **t->fields)))
        return -1;
    if (!(t->names[t->n] = sl_strdup(name))) {
        sl_free(t->fields[t->n]);
        return -1;
    }
    return (long)t->n++;
}

static bool to_map(ctype *t);

/* Widens t with what u says (u's samples as if t had seen them too).
 * false: out of memory. */
static bool absorb(ctype *t, const ctype *u)
{
    if (u->t == T_NONE || t->t == T_STRING)
        return true;
    if (!is_nested(u->t) && !is_nested(t->t)) {
        bool other_decimal = t->t == T_DECIMAL && u->t == T_DECIMAL &&
                             (t->precision != u->precision || t->scale != u->scale);
        if (t->t == T_NONE && u->t == T_DECIMAL) {
            t->precision = u->precision;
            t->scale = u->scale;
        }
        t->t = other_decimal ? T_DOUBLE : widen(t->t, u->t);
        return true;
    }
    if (t->t == T_NONE && (u->t == T_LIST || u->t == T_MAP)) {
        if (!(t->elem = sl_calloc(1, sizeof *t->elem)))
            return false; /* typed once it has its element */
        t->t = u->t;
        return absorb(t->elem, u->elem);
    }
    if (t->t == T_NONE)
        t->t = u->t; /* a struct: its fields below */
    if (t->t == T_STRUCT && u->t == T_STRUCT) {
        size_t more = 0;
        for (size_t i = 0; i < u->n; i++)
            more += field_index(t, u->names[i]) == t->n;
        if (t->n + more > MAX_FIELDS) { /* as sampling does: a map of them all */
            if (!to_map(t))
                return false;
            return absorb(t, u);
        }
        for (size_t i = 0; i < u->n; i++) {
            long k = field_of(t, u->names[i]);
            if (k < 0 || !absorb(t->fields[k], u->fields[i]))
                return false;
        }
        return true;
    }
    if (t->t == T_STRUCT && u->t == T_MAP && !to_map(t))
        return false;
    if (t->t == T_MAP && u->t == T_STRUCT) {
        for (size_t i = 0; i < u->n; i++)
            if (!absorb(t->elem, u->fields[i]))
                return false;
        return true;
    }
    if (t->t == u->t) /* two lists or two maps */
        return absorb(t->elem, u->elem);
    to_string(t);
    return true;
}

/* Struct t as a map whose values are what its fields were. */
static bool to_map(ctype *t)
{
    ctype *value = sl_calloc(1, sizeof *value);
    if (!value)
        return false;
    for (size_t i = 0; i < t->n; i++)
        if (!absorb(value, t->fields[i])) {
            ctype_free(value);
            return false;
        }
    ctype_clear(t);
    t->t = T_MAP;
    t->elem = value;
    return true;
}

/* Whether struct t can take every key of object v as a field: a name
 * (not empty; a '.' in it is kept, the Parquet schema's path being a list
 * of names), and no more than MAX_FIELDS in all. */
static bool takes_keys(const ctype *t, const json_t *v)
{
    size_t more = 0;
    const char *key;
    json_t *f;
    json_object_foreach((json_t *)v, key, f) {
        if (!*key)
            return false;
        more += field_index(t, key) == t->n;
    }
    return t->n + more <= MAX_FIELDS;
}

/* Widens t with one sample value: lists and objects keep their shape while
 * every sample agrees on it (within the limits above), else t becomes a
 * string (their JSON text); objects with more keys in all than a struct
 * takes, or keys no field can be named, make a map. false: out of memory. */
static bool widen_with(ctype *t, const json_t *v, int depth, int lists)
{
    if (json_is_null(v) || t->t == T_STRING)
        return true;
    if (json_is_array(v)) {
        if (t->t == T_NONE && depth < MAX_NESTING && lists < SL_PQ_WRITE_MAX_LISTS) {
            if (!(t->elem = sl_calloc(1, sizeof *t->elem)))
                return false;
            t->t = T_LIST;
        }
        if (t->t != T_LIST) {
            to_string(t);
            return true;
        }
        size_t k;
        json_t *e;
        json_array_foreach(v, k, e)
            if (!widen_with(t->elem, e, depth + 1, lists + 1))
                return false;
        return true;
    }
    if (json_is_object(v)) {
        if (t->t == T_NONE && depth < MAX_NESTING)
            t->t = T_STRUCT;
        if (t->t == T_STRUCT && !takes_keys(t, v)) {
            if (lists >= SL_PQ_WRITE_MAX_LISTS) {
                to_string(t);
                return true;
            }
            if (!to_map(t))
                return false;
        }
        if (t->t != T_STRUCT && t->t != T_MAP) {
            to_string(t); /* an object where a list or a scalar was, or nested too deep */
            return true;
        }
        const char *key;
        json_t *f;
        json_object_foreach((json_t *)v, key, f) {
            long i = t->t == T_STRUCT ? field_of(t, key) : 0;
            if (i < 0 || !(t->t == T_MAP ? widen_with(t->elem, f, depth + 1, lists + 1)
                                         : widen_with(t->fields[i], f, depth + 1, lists)))
                return false;
        }
        return true;
    }
    col_type s = scalar_type(v);
    if (is_nested(t->t)) {
        ctype_clear(t);
        s = T_STRING;
    }
    t->t = widen(t->t, s);
    return true;
}

/* The lists (and maps) nested in t at most. */
static int list_depth(const ctype *t)
{
    int most = 0;
    for (size_t i = 0; t->t == T_STRUCT && i < t->n; i++) {
        int d = list_depth(t->fields[i]);
        most = d > most ? d : most;
    }
    return t->t == T_LIST || t->t == T_MAP ? 1 + list_depth(t->elem) : most;
}

static size_t count_leaves(const ctype *t)
{
    if (t->t == T_LIST)
        return count_leaves(t->elem);
    if (t->t == T_MAP)
        return 1 + count_leaves(t->elem); /* and its keys */
    if (t->t != T_STRUCT)
        return 1;
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        n += count_leaves(t->fields[i]);
    return n;
}

/* The writer's shape of t; a part never seen with a value (an element of
 * lists always empty, a struct of no fields) is a string. */
static sl_pq_node *make_node(const ctype *t)
{
    sl_pq_node *n = sl_calloc(1, sizeof *n);
    if (!n)
        return NULL;
    if (t->t == T_LIST || t->t == T_MAP) {
        n->kind = t->t == T_MAP ? SL_PQ_NODE_MAP : SL_PQ_NODE_LIST;
        if (!(n->element = make_node(t->elem))) {
            sl_free(n);
            return NULL;
        }
        return n;
    }
    if (t->t == T_STRUCT && t->n > 0) {
        n->kind = SL_PQ_NODE_STRUCT;
        n->names = sl_calloc(t->n, sizeof *n->names);
        n->fields = sl_calloc(t->n, sizeof *n->fields);
        for (size_t i = 0; n->names && n->fields && i < t->n; i++, n->n_fields++)
            if (!(((const char **)n->names)[i] = sl_strdup(t->names[i])) ||
                !(((const sl_pq_node **)n->fields)[i] = make_node(t->fields[i]))) {
                n->n_fields++;
                sl_pq_shape_free(n);
                return NULL;
            }
        if (!n->names || !n->fields) {
            sl_pq_shape_free(n);
            return NULL;
        }
        return n;
    }
    n->kind = SL_PQ_NODE_LEAF;
    n->type = leaf_type(t->t);
    n->precision = t->precision;
    n->scale = t->scale;
    return n;
}

/* The index of input column `name`; c->n when there is none. */
static size_t column_index(const sl_columns *c, const char *name)
{
    size_t i = index_in(c->by_in, name);
    return i == SIZE_MAX ? c->n : i;
}

static sl_status add_column(sl_columns *c, const char *name, const json_t *row)
{
    column *grown = sl_grow(c->cols, c->n, &c->cap, sizeof *grown);
    if (!grown)
        return sl_fail(SL_ERR_NOMEM, "out of memory adding column '%s'", name);
    c->cols = grown;
    char buf[512];
    column *col = &c->cols[c->n];
    *col = (column){sl_strdup(name), sl_strdup(sl_columns_rename(c, name, row, buf, sizeof buf)),
                    sl_calloc(1, sizeof(ctype)), NULL, false};
    if (!col->in || !col->out || !col->shape ||
        json_object_set_new_nocheck(c->by_in, col->in, json_integer((json_int_t)c->n)) != 0 ||
        json_object_set_new_nocheck(c->by_out, col->out, json_integer((json_int_t)c->n)) != 0) {
        if (col->in)
            json_object_del(c->by_in, col->in);
        sl_free(col->in);
        sl_free(col->out);
        sl_free(col->shape);
        return sl_fail(SL_ERR_NOMEM, "out of memory adding column '%s'", name);
    }
    c->n++;
    return SL_OK;
}

/* The shape JSON text `text` of column spec `spec` describes. */
static sl_status parse_shape(const char *text, const char *spec, sl_pq_node **out)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    char why[256];
    *out = j ? sl_pq_shape_parse(j, why, sizeof why) : NULL;
    json_decref(j);
    if (!*out)
        return sl_fail(SL_ERR_INVALID_ARG, "column '%s': %s", spec, j ? why : jerr.text);
    return SL_OK;
}

/* t as the samples of a value of shape n would have made it. */
static bool ctype_of(ctype *t, const sl_pq_node *n)
{
    switch (n->kind) {
    case SL_PQ_NODE_LIST:
    case SL_PQ_NODE_MAP:
        if (!(t->elem = sl_calloc(1, sizeof *t->elem)))
            return false;
        t->t = n->kind == SL_PQ_NODE_MAP ? T_MAP : T_LIST;
        return ctype_of(t->elem, n->element);
    case SL_PQ_NODE_STRUCT:
        t->t = T_STRUCT;
        if (!(t->names = sl_calloc(n->n_fields, sizeof *t->names)) ||
            !(t->fields = sl_calloc(n->n_fields, sizeof *t->fields)))
            return false;
        for (size_t i = 0; i < n->n_fields; i++, t->n++)
            if (!(t->names[i] = sl_strdup(n->names[i])) || !(t->fields[i] = sl_calloc(1, sizeof **t->fields)) ||
                !ctype_of(t->fields[i], n->fields[i])) {
                t->n++;
                return false;
            }
        return true;
    case SL_PQ_NODE_LEAF:
        t->t = col_type_of(n->type);
        t->precision = n->precision;
        t->scale = n->scale;
        return true;
    }
    return false;
}

static const struct {
    const char *name;
    sl_pq_type type;
} TYPES[] = {{"string", SL_PQ_STRING}, {"int64", SL_PQ_INT64}, {"double", SL_PQ_DOUBLE}, {"bool", SL_PQ_BOOL}};

/* The type text (after a NAME's ':') names: true with *type for a type name,
 * a decimal ("decimal(" begins it: check_type says whether it is one) or a
 * shape ('{'; *type string), false for none. */
static bool type_named(const char *text, sl_pq_type *type)
{
    *type = SL_PQ_STRING;
    if (*text == '{')
        return true;
    if (strncmp(text, "decimal(", 8) == 0) {
        *type = SL_PQ_DECIMAL;
        return true;
    }
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
        if (strcmp(text, TYPES[i].name) == 0) {
            *type = TYPES[i].type;
            return true;
        }
    return false;
}

static const char *skip_spaces(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Checks spec's type (at type_text; a shape parsed as the writer would). */
static sl_status check_type(const char *spec, const char *type_text, sl_pq_type *type)
{
    if (!type_named(type_text, type))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "column '%s': the type after ':' is string, int64, double, bool, decimal(P,S) or a "
                       "shape ({\"list\": ...}, {\"map\": ...} or {\"struct\": [[NAME, ...], ...]})", spec);
    int precision, scale;
    if (*type == SL_PQ_DECIMAL && !(sl_pq_decimal_name(type_text, &precision, &scale) &&
                                    sl_pq_decimal_valid(precision, scale)))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "column '%s': decimal(P,S) takes a precision P of 1..%d digits and a scale S of 0..P "
                       "(decimal(10,2))", spec, SL_PQ_DECIMAL_MAX_PRECISION);
    if (*type_text != '{')
        return SL_OK;
    sl_pq_node *shape = NULL;
    sl_status st = parse_shape(type_text, spec, &shape);
    sl_pq_shape_free(shape);
    return st;
}

sl_status sl_columns_stage_spec(const char *spec, size_t *name_len, bool *typed,
                                sl_pq_type *type)
{
    const char *colon = strchr(spec, ':');
    *name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    *typed = colon != NULL;
    *type = SL_PQ_STRING;
    if (*name_len == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "column '%s' has no name before its type", spec);
    return colon ? check_type(spec, skip_spaces(colon + 1), type) : SL_OK;
}

sl_status sl_columns_input_spec(const char *spec, size_t *name_len, bool *typed, sl_pq_type *type)
{
    *name_len = strlen(spec);
    *typed = false;
    *type = SL_PQ_STRING;
    const char *at = NULL;
    for (const char *c = strchr(spec, ':'); c && !at; c = strchr(c + 1, ':'))
        if (*skip_spaces(c + 1) == '{')
            at = c; /* a shape: from the first ":{" */
    const char *last = strrchr(spec, ':');
    if (!at && last && type_named(skip_spaces(last + 1), type))
        at = last;
    if (!at)
        return SL_OK; /* "exif:Model": a name that holds a ':' */
    *name_len = (size_t)(at - spec);
    *typed = true;
    if (*name_len == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "column '%s' has no name before its type", spec);
    return check_type(spec, skip_spaces(at + 1), type);
}

/* Column i takes the type spec gives (checked; the name is spec's first
 * name_len bytes, the type after the ':' there). */
static sl_status set_type(sl_columns *c, size_t i, const char *spec, size_t name_len, sl_pq_type type)
{
    column *col = &c->cols[i];
    ctype_clear(col->shape);
    sl_pq_shape_free(col->node);
    col->node = NULL;
    col->shape->t = col_type_of(type);
    col->typed = true;
    const char *text = skip_spaces(spec + name_len + 1);
    if (type == SL_PQ_DECIMAL && sl_pq_decimal_name(text, &col->shape->precision, &col->shape->scale))
        return SL_OK; /* check_type took it */
    if (*text != '{')
        return SL_OK;
    sl_pq_node *shape = NULL;
    sl_status st = parse_shape(text, spec, &shape);
    if (st == SL_OK && !ctype_of(col->shape, shape))
        st = sl_fail(SL_ERR_NOMEM, "out of memory adding column '%s'", spec);
    sl_pq_shape_free(shape);
    return st;
}

/* The index of the column spec names (read as a stage's spec or, input,
 * as an input column's), added when it is not there yet. */
static sl_status add_spec(sl_columns *c, const char *spec, bool input, size_t *index, size_t *name_len,
                          bool *typed, sl_pq_type *type)
{
    sl_status st = input ? sl_columns_input_spec(spec, name_len, typed, type)
                         : sl_columns_stage_spec(spec, name_len, typed, type);
    if (st != SL_OK)
        return st;
    char *name = sl_strndup(spec, *name_len);
    if (!name)
        return sl_fail(SL_ERR_NOMEM, "out of memory adding column '%s'", spec);
    size_t i = column_index(c, name);
    if (i == c->n)
        st = add_column(c, name, NULL);
    sl_free(name);
    *index = i;
    return st;
}

sl_status sl_columns_add(sl_columns *c, const char *spec)
{
    size_t i = 0, len = 0;
    bool typed;
    sl_pq_type type;
    sl_status st = add_spec(c, spec, false, &i, &len, &typed, &type);
    return st == SL_OK && typed ? set_type(c, i, spec, len, type) : st;
}

/* The levels of nodes from t down to its deepest leaf. */
static int levels(const ctype *t)
{
    int most = 0;
    for (size_t i = 0; t->t == T_STRUCT && i < t->n; i++) {
        int d = levels(t->fields[i]);
        most = d > most ? d : most;
    }
    return 1 + (t->t == T_LIST || t->t == T_MAP ? levels(t->elem) : most);
}

/* Whether nested t passes the limits (columns.h) a column's shape is held
 * to: its JSON text instead. Sampling never nests past MAX_NESTING; a
 * schema's shape may. */
static bool too_big(const ctype *t)
{
    return is_nested(t->t) && (count_leaves(t) > MAX_LEAVES || list_depth(t) > SL_PQ_WRITE_MAX_LISTS ||
                               levels(t) > MAX_NESTING + 1);
}

sl_status sl_columns_input_type(sl_columns *c, const char *name, const sl_pq_node *shape)
{
    size_t i = column_index(c, name);
    if (i < c->n && c->cols[i].typed)
        return SL_OK; /* the user's type */
    if (i == c->n && c->fixed)
        return SL_OK;
    ctype *t = sl_calloc(1, sizeof *t);
    if (!t || !ctype_of(t, shape)) {
        ctype_free(t);
        return sl_fail(SL_ERR_NOMEM, "out of memory typing column '%s'", name);
    }
    if (too_big(t)) { /* the samples' type stays */
        ctype_free(t);
        return SL_OK;
    }
    sl_status st = i == c->n ? add_column(c, name, NULL) : SL_OK;
    if (st != SL_OK) {
        ctype_free(t);
        return st;
    }
    column *col = &c->cols[i];
    ctype_free(col->shape);
    sl_pq_shape_free(col->node);
    col->node = NULL;
    col->shape = t;
    col->typed = true;
    return SL_OK;
}

void sl_columns_free(sl_columns *c)
{
    if (!c)
        return;
    json_decref(c->reserved);
    json_decref(c->by_in);
    json_decref(c->by_out);
    for (size_t i = 0; i < c->n; i++) {
        sl_free(c->cols[i].in);
        sl_free(c->cols[i].out);
        ctype_free(c->cols[i].shape);
        sl_pq_shape_free(c->cols[i].node);
    }
    sl_free(c->cols);
    sl_free(c);
}

sl_status sl_columns_new(const char *const *reserved, size_t n_reserved,
                         const char *const *declared, size_t n_declared, sl_columns **out)
{
    *out = NULL;
    sl_columns *c = sl_calloc(1, sizeof *c);
    if (!c || !(c->reserved = json_object()) || !(c->by_in = json_object()) || !(c->by_out = json_object())) {
        sl_columns_free(c);
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    }
    sl_status st = SL_OK;
    for (size_t i = 0; i < n_reserved && st == SL_OK; i++)
        if (json_object_set_new_nocheck(c->reserved, reserved[i], json_true()) != 0)
            st = sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    for (size_t i = 0; declared && i < n_declared && st == SL_OK; i++) {
        size_t k = 0, len = 0;
        bool typed;
        sl_pq_type type;
        if ((st = add_spec(c, declared[i], true, &k, &len, &typed, &type)) == SL_OK && typed)
            st = set_type(c, k, declared[i], len, type);
    }
    c->fixed = declared != NULL;
    if (st != SL_OK) {
        sl_columns_free(c);
        return st;
    }
    *out = c;
    return SL_OK;
}

const json_t *sl_columns_value(const sl_columns *c, size_t i, const json_t *extra)
{
    const char *in = c->cols[i].in;
    const json_t *v = json_object_get(extra, in);
    return v || !c->fixed ? v : sl_json_column(extra, in, strlen(in));
}

/* Widens column i's type with a value of it. */
static sl_status widen_column(sl_columns *c, size_t i, const json_t *v)
{
    column *col = &c->cols[i];
    if (col->typed)
        return SL_OK;
    if (!widen_with(col->shape, v, 0, 0))
        return sl_fail(SL_ERR_NOMEM, "out of memory sampling column '%s'", col->in);
    if (too_big(col->shape))
        to_string(col->shape); /* a struct made a map may hold lists too deep */
    sl_pq_shape_free(col->node); /* made again when asked */
    col->node = NULL;
    return SL_OK;
}

sl_status sl_columns_sample(sl_columns *c, const json_t *extra)
{
    if (!json_is_object(extra))
        return SL_OK;
    sl_status st = SL_OK;
    if (c->fixed) { /* the declared columns, a dotted one maybe inside a struct */
        for (size_t i = 0; i < c->n && st == SL_OK; i++) {
            const json_t *v = sl_columns_value(c, i, extra);
            if (v)
                st = widen_column(c, i, v);
        }
        return st;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)extra, key, v) {
        size_t i = column_index(c, key);
        if (i == c->n && (st = add_column(c, key, extra)) != SL_OK)
            return st;
        if ((st = widen_column(c, i, v)) != SL_OK)
            return st;
    }
    return SL_OK;
}

const sl_pq_node *sl_columns_shape(const sl_columns *c, size_t i)
{
    column *col = &((sl_columns *)c)->cols[i]; /* the shape is made once, when first asked */
    if (col->shape->t != T_LIST && col->shape->t != T_MAP && col->shape->t != T_DECIMAL &&
        (col->shape->t != T_STRUCT || col->shape->n == 0))
        return NULL; /* flat; a struct of no fields (only {} seen) is its JSON text */
    if (!col->node && !(col->node = make_node(col->shape)))
        sl_fail(SL_ERR_NOMEM, "out of memory choosing the type of column '%s'", col->in);
    return col->node;
}

size_t sl_columns_count(const sl_columns *c) { return c->n; }

bool sl_columns_declared(const sl_columns *c) { return c->fixed; }
const char *sl_columns_input_name(const sl_columns *c, size_t i) { return c->cols[i].in; }
const char *sl_columns_output_name(const sl_columns *c, size_t i) { return c->cols[i].out; }

sl_pq_type sl_columns_type(const sl_columns *c, size_t i)
{
    /* A nested column's cells are JSON (sl_columns_shape), a decimal's too:
     * flat, as when its leaf could not be made, it is its exact text. */
    col_type t = c->cols[i].shape->t;
    return t == T_DECIMAL ? SL_PQ_STRING : leaf_type(t);
}

static const char *kind_of(const json_t *v)
{
    if (sl_json_decimal_text(v, NULL))
        return "a real number";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    default: return "a bool";
    }
}

/* t's name, as a message says what a column holds (a decimal's in buf, spelt
 * as _summary.json's columns spell it). */
static const char *type_of(const ctype *t, char buf[32])
{
    if (t->t == T_DECIMAL) {
        snprintf(buf, 32, "decimal(%d,%d)", t->precision, t->scale);
        return buf;
    }
    return t->t == T_INT ? "int64" : t->t == T_DOUBLE ? "double" : "bool";
}

/* Whether v is written whole as t (make_node's shape of it). With path
 * (cap bytes, path[0..at) naming where v is), why says where and why not;
 * without, nothing is named (the quick check: most values fit). */
static bool fits(const ctype *t, const json_t *v, char *path, size_t at, size_t cap, char *why,
                 size_t why_len)
{
    if (json_is_null(v))
        return true;
    const char *holds = NULL;
    char decimal[32];
    if (t->t == T_LIST) {
        if (json_is_array(v)) {
            size_t k;
            json_t *e;
            json_array_foreach(v, k, e) {
                size_t end = at;
                if (path) {
                    int n = snprintf(path + at, cap - at, "[%zu]", k);
                    end = n > 0 && (size_t)n < cap - at ? at + (size_t)n : at;
                }
                if (!fits(t->elem, e, path, end, cap, why, why_len))
                    return false;
            }
            return true;
        }
        holds = "a list";
    } else if ((t->t == T_STRUCT && t->n > 0) || t->t == T_MAP) {
        if (json_is_object(v)) {
            const char *key;
            json_t *f;
            json_object_foreach((json_t *)v, key, f) {
                const ctype *field = t->elem;
                if (t->t == T_STRUCT) {
                    size_t i = field_index(t, key);
                    if (i == t->n && json_is_null(f))
                        continue; /* nothing to write: nothing lost */
                    if (i == t->n) {
                        if (path) {
                            path[at] = '\0';
                            snprintf(why, why_len, "%s%skey '%s' is not one of its struct's %zu fields", path,
                                     at ? ": " : "", key, t->n);
                        }
                        return false;
                    }
                    field = t->fields[i];
                }
                size_t end = at;
                if (path) {
                    int n = snprintf(path + at, cap - at, "%s%s", at ? "." : "", key);
                    end = n > 0 && (size_t)n < cap - at ? at + (size_t)n : at;
                }
                if (!fits(field, f, path, end, cap, why, why_len))
                    return false;
            }
            return true;
        }
        holds = t->t == T_MAP ? "a map" : "a struct";
    } else if (t->t == T_INT || t->t == T_DOUBLE || t->t == T_BOOL || t->t == T_DECIMAL) {
        sl_pq_value x;
        char *owned; /* a decimal's text from an integer or a real; a string leaf's dump not here */
        uint8_t unscaled[16];
        bool ok = sl_pq_value_from_json(leaf_type(t->t), v, &x, &owned) && !x.is_null &&
                  (t->t != T_DECIMAL || sl_decimal_from_text(x.ptr, x.len, t->precision, t->scale, unscaled,
                                                             (size_t)sl_pq_decimal_width(t->precision)));
        sl_free(owned);
        if (ok)
            return true; /* what the writer takes there */
        holds = type_of(t, decimal);
    } else {
        return true; /* a string column holds any value as its JSON text */
    }
    if (path) {
        path[at] = '\0';
        snprintf(why, why_len, "%s%s%s where it holds %s", path, at ? ": " : "", kind_of(v), holds);
    }
    return false;
}

bool sl_columns_fits(const sl_columns *c, size_t i, const json_t *v, char *why, size_t why_len)
{
    if (why_len)
        why[0] = '\0';
    if (!v || fits(c->cols[i].shape, v, NULL, 0, 0, NULL, 0))
        return true;
    char path[256] = "";
    fits(c->cols[i].shape, v, path, 0, sizeof path, why, why_len); /* again, naming where */
    return false;
}

sl_pq_value sl_columns_cell(const sl_columns *c, size_t i, const json_t *extra, char **owned)
{
    return sl_columns_value_cell(c, i, sl_columns_value(c, i, extra), owned);
}

sl_pq_value sl_columns_value_cell(const sl_columns *c, size_t i, const json_t *v, char **owned)
{
    *owned = NULL;
    if (v && !json_is_null(v) && sl_columns_shape(c, i))
        return (sl_pq_value){.json = v}; /* shredded by the writer: what does not fit is null there */
    sl_pq_value cell;
    sl_pq_value_from_json(sl_columns_type(c, i), v, &cell, owned); /* out of memory: null */
    return cell;
}
