/* io/parquet_json.c — lists put back together from their leaves: each leaf
 * carries a cursor (the depth and index of the entry it is at: a row at
 * depth 0, a list inside an element between, a value at its own depth),
 * and the leaves are walked down their names' shared path together. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "io/parquet_json.h"
#include "io/parquet_shape.h"

typedef struct cursor {
    const sl_pq_vector *v;
    unsigned d; /* depth of entry `at` */
    int64_t at;
} cursor;

static const int64_t *offsets_at(const sl_pq_vector *v, unsigned d)
{
    return d == 0 ? v->list_offsets : v->nest_offsets[d - 1];
}

static const uint8_t *valid_at(const sl_pq_vector *v, unsigned d)
{
    return d == 0 ? v->list_valid : v->nest_valid[d - 1];
}

/* The definition levels of the cursor's entries: its values' at its own
 * depth, else its lists' (NULL: none kept). */
static const uint8_t *defs_at(const cursor *c)
{
    if (c->d == c->v->info->depth)
        return c->v->defs;
    return c->d == 0 ? c->v->list_defs : c->v->nest_defs[c->d - 1];
}

/* Whether an entry of definition level `def` of a leaf of info ci is inside
 * a null group: the one named by the first `len` bytes of its name, or one
 * above it. */
static bool in_null_group(const sl_pq_column_info *ci, uint8_t def, size_t len)
{
    for (unsigned g = 0; g < ci->n_groups; g++)
        if (ci->group_len[g] == len)
            return def < ci->group_def[g];
    return false;
}

static json_t *node(const cursor *cs, size_t n, size_t prefix, sl_pq_json_value_fn value);
static json_t *struct_node(const cursor *cs, size_t n, size_t prefix, sl_pq_json_value_fn value);

/* What leaf ci is of a MAP's pairs at depth d: 1 a string key, 2 (a part
 * of) the value, 0 neither. */
static int map_part(const sl_pq_column_info *ci, unsigned d)
{
    if (ci->depth <= d || strlen(ci->name) < ci->nest_element_len[d])
        return 0;
    const char *field = ci->name + ci->nest_element_len[d];
    if (ci->type == SL_PQ_STRING && ci->depth == d + 1 && strcmp(field, ".key") == 0)
        return 1;
    return strncmp(field, ".value", 6) == 0 && (field[6] == '\0' || field[6] == '.') ? 2 : 0;
}

/* Whether the list the cursors reach at depth d is a MAP with string keys
 * and values (a value column not read, e.g. binary, leaves it pairs). */
static bool string_keyed_map(const cursor *cs, size_t n, unsigned d)
{
    if (!(cs[0].v->info->maps >> d & 1))
        return false;
    unsigned parts = 0;
    for (size_t i = 0; i < n; i++)
        parts |= 1u << map_part(cs[i].v->info, d);
    return (parts & 6) == 6;
}

/* A MAP's pairs as an object when every key is a string (the first of a
 * repeated key wins, as in most readers); otherwise the array as it is. */
static json_t *map_object(json_t *pairs)
{
    size_t k;
    json_t *p;
    json_array_foreach(pairs, k, p) {
        if (!json_is_string(json_object_get(p, "key")) || json_object_size(p) != 2 ||
            !json_object_get(p, "value"))
            return pairs;
    }
    json_t *o = json_object();
    json_array_foreach(pairs, k, p) {
        const char *key = json_string_value(json_object_get(p, "key"));
        if (!o || (!json_object_get(o, key) && json_object_set(o, key, json_object_get(p, "value")) != 0)) {
            json_decref(o);
            json_decref(pairs);
            return NULL;
        }
    }
    json_decref(pairs);
    return o;
}

/* The list the cursors' path reaches at their depth d: its elements, each
 * from the cursors moved to depth d + 1. */
static json_t *list_node(const cursor *cs, size_t n, sl_pq_json_value_fn value)
{
    const sl_pq_vector *v = cs[0].v;
    unsigned d = cs[0].d;
    if (!valid_at(v, d)[cs[0].at])
        return json_null();
    int64_t lo = offsets_at(v, d)[cs[0].at], hi = offsets_at(v, d)[cs[0].at + 1];
    cursor *below = sl_malloc(n * sizeof *below);
    json_t *a = json_array();
    if (!below || !a)
        goto nomem;
    for (int64_t k = 0; k < hi - lo; k++) {
        /* The reader checks that columns of one list agree; columns of two
         * lists that a corrupt schema gives the same name may not: only
         * those whose list is as long take part. */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            const sl_pq_column_info *ci = cs[i].v->info;
            if (cs[i].d != d || ci->depth <= d || ci->nest_list_len[d] != v->info->nest_list_len[d])
                continue;
            const int64_t *o = offsets_at(cs[i].v, d);
            if (o[cs[i].at + 1] - o[cs[i].at] == hi - lo)
                below[m++] = (cursor){cs[i].v, d + 1, o[cs[i].at] + k};
        }
        json_t *e = node(below, m, v->info->nest_element_len[d], value);
        if (!e || json_array_append_new(a, e) != 0)
            goto nomem;
    }
    sl_free(below);
    return string_keyed_map(cs, n, d) ? map_object(a) : a;
nomem:
    sl_free(below);
    json_decref(a);
    return NULL;
}

/* The next part of leaf ci's path after the first `prefix` bytes of its
 * name (and the dot after them): *len bytes at the pointer returned; NULL
 * when the name ends there. A part ends where the next group on the path
 * does (a field's name may hold dots: `s.x.y` is field "x.y" of struct s
 * when no group is named `s.x`), at a dot only past the groups listed. */
static const char *next_part(const sl_pq_column_info *ci, size_t prefix, size_t *len)
{
    const char *name = ci->name;
    size_t n = strlen(name);
    if (n <= prefix)
        return NULL;
    const char *part = name + prefix + (name[prefix] == '.');
    size_t end = n;
    bool known = !ci->groups_over; /* every group on the path is listed */
    for (unsigned g = 0; g < ci->n_groups; g++)
        if (ci->group_len[g] > (size_t)(part - name)) { /* outermost first: the nearest */
            end = ci->group_len[g];
            known = true;
            break;
        }
    if (!known) {
        const char *dot = strchr(part, '.');
        end = dot ? (size_t)(dot - name) : n;
    }
    *len = end - (size_t)(part - name);
    return part;
}

/* Whether leaf `other` (under the same first `prefix` bytes as leaf
 * `ci`) goes on to `part` (len bytes of ci's name): a leaf of the same
 * field. */
static bool same_part(const sl_pq_column_info *other, const sl_pq_column_info *ci, size_t prefix, const char *part,
                      size_t len)
{
    size_t other_len;
    const char *other_part = next_part(other, prefix, &other_len);
    return other_part && strncmp(other->name, ci->name, prefix) == 0 && other_len == len &&
           memcmp(other_part, part, len) == 0;
}

/* The value at the path of the first `prefix` bytes of the cursors' names. */
static json_t *node(const cursor *cs, size_t n, size_t prefix, sl_pq_json_value_fn value)
{
    if (n == 0)
        return json_null();
    const sl_pq_column_info *ci = cs[0].v->info;
    if (cs[0].d < ci->depth && ci->nest_list_len[cs[0].d] == prefix)
        return list_node(cs, n, value);
    if (n == 1 && strlen(ci->name) == prefix)
        return cs[0].d == ci->depth ? value(cs[0].v, cs[0].at) : json_null();
    /* A struct: null where a leaf's definition level says so (at a value
     * of its own, or at a list it is in); else a field for each next part
     * of the names, in their order. */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *defs = defs_at(&cs[i]);
        if (defs)
            return in_null_group(cs[i].v->info, defs[cs[i].at], prefix) ? json_null()
                                                                        : struct_node(cs, n, prefix, value);
    }
    return struct_node(cs, n, prefix, value);
}

static json_t *struct_node(const cursor *cs, size_t n, size_t prefix, sl_pq_json_value_fn value)
{
    json_t *o = json_object();
    cursor *group = sl_malloc(n * sizeof *group);
    if (!o || !group)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        const sl_pq_column_info *ci = cs[i].v->info;
        const char *name = ci->name;
        size_t len;
        const char *part = next_part(ci, prefix, &len);
        if (!part)
            continue; /* not below this path: a schema these names cannot come from */
        char *key = sl_strndup(part, len);
        if (!key)
            goto nomem;
        bool seen = json_object_get(o, key) != NULL;
        size_t m = 0;
        for (size_t j = i; !seen && j < n; j++)
            if (same_part(cs[j].v->info, ci, prefix, part, len))
                group[m++] = cs[j];
        json_t *f = seen ? NULL : node(group, m, (size_t)(part - name) + len, value);
        if (!seen && (!f || json_object_set_new(o, key, f) != 0)) {
            sl_free(key);
            goto nomem;
        }
        sl_free(key);
    }
    sl_free(group);
    return o;
nomem:
    sl_free(group);
    json_decref(o);
    return NULL;
}

json_t *sl_pq_column_json(const sl_pq_vector *const *cols, size_t n, size_t prefix, int64_t row,
                          sl_pq_json_value_fn value)
{
    if (n == 0)
        return json_null();
    cursor *cs = sl_malloc(n * sizeof *cs);
    if (!cs)
        return NULL;
    for (size_t i = 0; i < n; i++)
        cs[i] = (cursor){cols[i], 0, row};
    json_t *j = node(cs, n, prefix, value);
    sl_free(cs);
    return j;
}

bool sl_pq_in_null_group(const sl_pq_vector *v, int64_t row, size_t len)
{
    const uint8_t *defs = v->info->depth ? v->list_defs : v->defs;
    return defs && in_null_group(v->info, defs[row], len);
}

json_t *sl_pq_value_json(const sl_pq_vector *v, int64_t k)
{
    if (v->valid && !v->valid[k])
        return json_null();
    switch (v->info->type) {
    case SL_PQ_BOOL: return json_boolean(v->b[k]);
    case SL_PQ_INT32: return json_integer(v->i32[k]);
    case SL_PQ_INT64: /* a UINT_64 past INT64_MAX: a double, as an Arrow input's uint64 */
        return v->info->is_unsigned && v->i64[k] < 0 ? json_real((double)(uint64_t)v->i64[k]) : json_integer(v->i64[k]);
    case SL_PQ_FLOAT: return v->info->is_float16 ? sl_json_real_half(v->f32[k]) : sl_json_real_float(v->f32[k]);
    case SL_PQ_DOUBLE: return sl_json_real(v->f64[k]);
    case SL_PQ_STRING:
        if (v->info->is_decimal) /* a number, its digits kept */
            return sl_json_decimal((const char *)v->data + v->offsets[k], (size_t)(v->offsets[k + 1] - v->offsets[k]));
        return sl_json_text((const char *)v->data + v->offsets[k], (size_t)(v->offsets[k + 1] - v->offsets[k]));
    default: return json_null();
    }
}

/* ---- shapes: the same walk over the leaves' infos, no values ------------- */

const char *sl_pq_leaf_shape(sl_pq_type type)
{
    switch (type) {
    case SL_PQ_BOOL: return "bool";
    case SL_PQ_INT32:
    case SL_PQ_INT64: return "int64";
    case SL_PQ_FLOAT:
    case SL_PQ_DOUBLE: return "double";
    case SL_PQ_STRING: return "string";
    default: return NULL;
    }
}

static json_t *node_shape(const sl_pq_column_info *const *cs, size_t n, size_t prefix, unsigned d, bool *oom);

/* As list_node: the leaves of the list at depth d, taken below it; a MAP
 * whose pairs are exactly {key: string, value} reads as an object, so its
 * shape is a map of the value's. */
static json_t *list_shape(const sl_pq_column_info *const *cs, size_t n, unsigned d, bool *oom)
{
    const sl_pq_column_info *head = cs[0];
    const sl_pq_column_info **below = sl_malloc(n * sizeof *below);
    if (!below) {
        *oom = true;
        return NULL;
    }
    size_t m = 0;
    unsigned parts = 0;
    for (size_t i = 0; i < n; i++)
        if (cs[i]->depth > d && cs[i]->nest_list_len[d] == head->nest_list_len[d]) {
            below[m++] = cs[i];
            parts |= 1u << map_part(cs[i], d);
        }
    json_t *e = node_shape(below, m, head->nest_element_len[d], d + 1, oom);
    sl_free(below);
    /* As map_object: pairs of exactly a key and a value read as an object. */
    json_t *fields = json_object_get(e, "struct"), *value = NULL;
    for (size_t f = 0; (head->maps >> d & 1) && (parts & 6) == 6 && json_array_size(fields) == 2 && f < 2; f++)
        if (strcmp(json_string_value(json_array_get(json_array_get(fields, f), 0)), "value") == 0)
            value = json_array_get(json_array_get(fields, f), 1);
    json_t *shape = value ? json_pack("{s:O}", "map", value)
                          : json_pack("{s:o}", "list", e ? json_incref(e) : json_string("string"));
    json_decref(e);
    if (!shape)
        *oom = true;
    return shape;
}

/* As node: the shape at the path of the first `prefix` bytes of the
 * leaves' names, they at depth d; NULL where no leaf gives a value (or out
 * of memory: *oom set). */
static json_t *node_shape(const sl_pq_column_info *const *cs, size_t n, size_t prefix, unsigned d, bool *oom)
{
    if (n == 0)
        return NULL;
    const sl_pq_column_info *ci = cs[0];
    if (d < ci->depth && ci->nest_list_len[d] == prefix)
        return list_shape(cs, n, d, oom);
    if (n == 1 && strlen(ci->name) == prefix) {
        /* Inside a value a double holds all of a UINT_64's values. */
        const char *leaf = d != ci->depth ? NULL : ci->is_unsigned ? "double" : sl_pq_leaf_shape(ci->type);
        bool decimal = d == ci->depth && ci->is_decimal;
        json_t *shape = decimal ? sl_pq_decimal_shape(ci->precision, ci->scale) : leaf ? json_string(leaf) : NULL;
        *oom |= (decimal || leaf) && !shape;
        return shape;
    }
    json_t *fields = json_array();
    const sl_pq_column_info **group = sl_malloc(n * sizeof *group);
    for (size_t i = 0; fields && group && !*oom && i < n; i++) {
        const char *name = cs[i]->name;
        size_t len;
        const char *part = next_part(cs[i], prefix, &len);
        bool seen = false;
        for (size_t j = 0; part && j < i && !seen; j++)
            seen = same_part(cs[j], cs[i], prefix, part, len);
        if (!part || seen)
            continue;
        size_t m = 0;
        for (size_t j = i; j < n; j++)
            if (same_part(cs[j], cs[i], prefix, part, len))
                group[m++] = cs[j];
        json_t *f = node_shape(group, m, (size_t)(part - name) + len, d, oom);
        if (f && json_array_append_new(fields, json_pack("[s#o]", part, (int)len, f)) != 0)
            *oom = true;
    }
    *oom |= !fields || !group;
    sl_free(group);
    if (*oom || json_array_size(fields) == 0) {
        json_decref(fields);
        return NULL;
    }
    json_t *shape = json_pack("{s:o}", "struct", fields);
    *oom |= !shape;
    return shape;
}

sl_status sl_pq_column_shape(const sl_pq_column_info *const *cols, size_t n, size_t prefix, json_t **out)
{
    bool oom = false;
    *out = n ? node_shape(cols, n, prefix, 0, &oom) : NULL;
    if (oom) {
        json_decref(*out);
        *out = NULL;
        return sl_fail(SL_ERR_NOMEM, "out of memory typing column '%.*s'", (int)prefix, cols[0]->name);
    }
    return SL_OK;
}
