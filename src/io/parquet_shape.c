/* io/parquet_shape.c — see parquet_shape.h. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "io/parquet_read.h"
#include "io/parquet_shape.h"

static const struct {
    const char *name;
    sl_pq_type type;
} LEAVES[] = {{"string", SL_PQ_STRING}, {"int64", SL_PQ_INT64}, {"double", SL_PQ_DOUBLE}, {"bool", SL_PQ_BOOL}};

void sl_pq_shape_free(sl_pq_node *n)
{
    if (!n)
        return;
    sl_pq_shape_free((sl_pq_node *)n->element);
    for (size_t i = 0; i < n->n_fields; i++) {
        if (n->names)
            sl_free((char *)n->names[i]);
        if (n->fields)
            sl_pq_shape_free((sl_pq_node *)n->fields[i]);
    }
    sl_free((void *)n->names);
    sl_free((void *)n->fields);
    sl_free(n);
}

bool sl_pq_decimal_name(const char *s, int *precision, int *scale)
{
    if (strncmp(s, "decimal(", 8) != 0)
        return false;
    s += 8;
    int *into[] = {precision, scale};
    for (int k = 0; k < 2; k++) {
        while (*s == ' ')
            s++;
        bool neg = *s == '-';
        s += neg;
        int v = 0, digits = 0;
        for (; *s >= '0' && *s <= '9' && digits < 3; s++, digits++)
            v = v * 10 + (*s - '0');
        while (*s == ' ')
            s++;
        if (digits == 0 || *s != (k ? ')' : ','))
            return false;
        *into[k] = neg ? -v : v;
        s++;
    }
    return *s == '\0';
}

static sl_pq_node *parse(const json_t *j, int depth, int lists, char *why, size_t why_len)
{
    if (depth > 24 || lists > SL_PQ_WRITE_MAX_LISTS) {
        snprintf(why, why_len, "a shape nested more than 24 deep, or lists more than %d deep", SL_PQ_WRITE_MAX_LISTS);
        return NULL;
    }
    sl_pq_node *n = sl_calloc(1, sizeof *n);
    if (!n) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    int precision, scale;
    if (json_is_string(j) && sl_pq_decimal_name(json_string_value(j), &precision, &scale)) {
        if (sl_pq_decimal_valid(precision, scale)) {
            *n = (sl_pq_node){.kind = SL_PQ_NODE_LEAF, .type = SL_PQ_DECIMAL, .precision = precision, .scale = scale};
            return n;
        }
        snprintf(why, why_len, "no decimal(%d,%d): a precision of 1..%d and a scale of 0..precision", precision, scale,
                 SL_PQ_DECIMAL_MAX_PRECISION);
    } else if (json_is_string(j)) {
        for (size_t i = 0; i < sizeof LEAVES / sizeof *LEAVES; i++)
            if (strcmp(json_string_value(j), LEAVES[i].name) == 0) {
                n->kind = SL_PQ_NODE_LEAF;
                n->type = LEAVES[i].type;
                return n;
            }
        snprintf(why, why_len, "no leaf type '%.64s' (string, int64, double, bool, decimal(P,S))",
                 json_string_value(j));
    } else if (json_is_object(j) && json_object_size(j) == 1 &&
               (json_object_get(j, "list") || json_object_get(j, "map"))) {
        bool map = json_object_get(j, "map") != NULL;
        n->kind = map ? SL_PQ_NODE_MAP : SL_PQ_NODE_LIST;
        if ((n->element = parse(json_object_get(j, map ? "map" : "list"), depth + 1, lists + 1, why, why_len)))
            return n;
    } else if (json_is_object(j) && json_object_size(j) == 1 && json_is_array(json_object_get(j, "struct")) &&
               json_array_size(json_object_get(j, "struct")) > 0) {
        const json_t *fields = json_object_get(j, "struct");
        size_t count = json_array_size(fields);
        n->kind = SL_PQ_NODE_STRUCT;
        n->names = sl_calloc(count, sizeof *n->names);
        n->fields = sl_calloc(count, sizeof *n->fields);
        if (!n->names || !n->fields) {
            snprintf(why, why_len, "out of memory");
            sl_pq_shape_free(n);
            return NULL;
        }
        for (size_t i = 0; i < count; i++, n->n_fields++) {
            const json_t *f = json_array_get(fields, i);
            const char *name = json_string_value(json_array_get(f, 0));
            bool twice = false;
            for (size_t k = 0; name && k < i; k++)
                twice = twice || strcmp(n->names[k], name) == 0;
            if (!json_is_array(f) || json_array_size(f) != 2 || !name || !*name || twice) {
                snprintf(why, why_len, "a struct field is not [NAME, SHAPE] with a NAME of its own, not empty");
                sl_pq_shape_free(n);
                return NULL;
            }
            /* as io/parquet_write.c's count_leaves: past the groups a
             * leaf's path lists, the reader splits names at dots */
            if (strchr(name, '.') && depth + 1 + lists >= SL_PQ_MAX_GROUPS) {
                snprintf(why, why_len, "field '%.64s' is named with a '.' under %d or more groups (it would not read "
                                       "back)", name, SL_PQ_MAX_GROUPS);
                sl_pq_shape_free(n);
                return NULL;
            }
            ((const char **)n->names)[i] = sl_strdup(name);
            ((const sl_pq_node **)n->fields)[i] =
                n->names[i] ? parse(json_array_get(f, 1), depth + 1, lists, why, why_len) : NULL;
            if (!n->fields[i]) {
                if (!n->names[i])
                    snprintf(why, why_len, "out of memory");
                n->n_fields++; /* its name, freed with the rest */
                sl_pq_shape_free(n);
                return NULL;
            }
        }
        return n;
    } else {
        snprintf(why, why_len, "not a shape (a type name, {\"list\": ...}, {\"map\": ...} or {\"struct\": "
                               "[[NAME, ...], ...]})");
    }
    sl_pq_shape_free(n);
    return NULL;
}

sl_pq_node *sl_pq_shape_parse(const json_t *j, char *why, size_t why_len)
{
    why[0] = '\0';
    return parse(j, 0, 0, why, why_len);
}

json_t *sl_pq_decimal_shape(int precision, int scale)
{
    if (!sl_pq_decimal_valid(precision, scale))
        return json_string("string");
    char name[40];
    snprintf(name, sizeof name, "decimal(%d,%d)", precision, scale);
    return json_string(name);
}

bool sl_pq_shape_merge(const json_t *a, const json_t *b, json_t **out)
{
    *out = NULL;
    int pa, sa, pb, sb;
    if (json_equal(a, b)) {
        *out = json_incref((json_t *)a);
        return true;
    }
    if (json_is_string(a) && json_is_string(b)) {
        if (!sl_pq_decimal_name(json_string_value(a), &pa, &sa) ||
            !sl_pq_decimal_name(json_string_value(b), &pb, &sb))
            return true;
        int scale = sa > sb ? sa : sb, whole = pa - sa > pb - sb ? pa - sa : pb - sb;
        if (!sl_pq_decimal_valid(whole + scale, scale))
            return true; /* past 38 digits: no one decimal holds both */
        return (*out = sl_pq_decimal_shape(whole + scale, scale)) != NULL;
    }
    if (!json_is_object(a) || !json_is_object(b) || json_object_size(a) != 1 || json_object_size(b) != 1)
        return true;
    const char *key = json_object_iter_key(json_object_iter((json_t *)a));
    const json_t *in_a = json_object_get(a, key), *in_b = json_object_get(b, key);
    if (!in_b)
        return true;
    json_t *merged = NULL;
    if (strcmp(key, "list") == 0 || strcmp(key, "map") == 0) {
        if (!sl_pq_shape_merge(in_a, in_b, &merged))
            return false;
        if (merged && !(*out = json_pack("{s:o}", key, merged)))
            return false;
        return true;
    }
    size_t n = json_array_size(in_a);
    if (strcmp(key, "struct") != 0 || n == 0 || json_array_size(in_b) != n)
        return true;
    json_t *fields = json_array();
    for (size_t i = 0; fields && i < n; i++) {
        const json_t *fa = json_array_get(in_a, i), *fb = json_array_get(in_b, i);
        const json_t *name = json_array_get(fa, 0);
        if (!json_is_string(name) || !json_equal(name, json_array_get(fb, 0))) {
            json_decref(fields);
            return true; /* the fields named apart or in another order */
        }
        if (!sl_pq_shape_merge(json_array_get(fa, 1), json_array_get(fb, 1), &merged) ||
            (merged && json_array_append_new(fields, json_pack("[O,o]", name, merged)) != 0)) {
            json_decref(fields);
            return false;
        }
        if (!merged) {
            json_decref(fields);
            return true;
        }
    }
    return fields && (*out = json_pack("{s:o}", "struct", fields)) != NULL;
}

json_t *sl_pq_shape_json(const sl_pq_node *n)
{
    switch (n->kind) {
    case SL_PQ_NODE_LEAF:
        if (n->type == SL_PQ_DECIMAL)
            return sl_pq_decimal_shape(n->precision, n->scale);
        for (size_t i = 0; i < sizeof LEAVES / sizeof *LEAVES; i++)
            if (LEAVES[i].type == n->type)
                return json_string(LEAVES[i].name);
        return json_string("string");
    case SL_PQ_NODE_LIST:
    case SL_PQ_NODE_MAP: {
        json_t *e = sl_pq_shape_json(n->element);
        return e ? json_pack("{s:o}", n->kind == SL_PQ_NODE_MAP ? "map" : "list", e) : NULL;
    }
    case SL_PQ_NODE_STRUCT: {
        json_t *fields = json_array();
        for (size_t i = 0; fields && i < n->n_fields; i++) {
            json_t *f = sl_pq_shape_json(n->fields[i]);
            if (!f || json_array_append_new(fields, json_pack("[s,o]", n->names[i], f)) != 0) {
                json_decref(fields);
                return NULL;
            }
        }
        return fields ? json_pack("{s:o}", "struct", fields) : NULL;
    }
    }
    return NULL;
}

size_t sl_pq_shape_leaves(const sl_pq_node *n)
{
    if (n->kind == SL_PQ_NODE_LIST)
        return sl_pq_shape_leaves(n->element);
    if (n->kind == SL_PQ_NODE_MAP)
        return 1 + sl_pq_shape_leaves(n->element); /* its keys first */
    if (n->kind == SL_PQ_NODE_LEAF)
        return 1;
    size_t all = 0;
    for (size_t i = 0; i < n->n_fields; i++)
        all += sl_pq_shape_leaves(n->fields[i]);
    return all;
}
