/* llm/json_schema.c — see json_schema.h. Two walks over the schema tree:
 * one when it is read (every keyword of the subset has a value of the right
 * kind, so the second walk need not ask), one per answer. Both recurse as
 * deep as the schema nests, which jansson bounds (2048 levels); the answer
 * walk follows the schema, so an answer nested deeper than its schema costs
 * nothing more. Places are written as "$.a.b[3]" into a fixed buffer, cut
 * with "..." when longer. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "llm/json_schema.h"

struct sl_json_schema {
    json_t *root;
};

enum { PATH_MAX_LEN = 256 };

typedef struct place {
    char text[PATH_MAX_LEN];
    size_t len;
    bool cut;
} place;

/* Appends seg (".name" or "[3]"); returns the length to restore. The
 * text keeps room for "..." after it, which ends a place that is cut. */
static size_t place_push(place *p, const char *seg)
{
    size_t old = p->len, n = strlen(seg);
    if (p->cut)
        return old;
    if (p->len + n + 4 > sizeof p->text) {
        memcpy(p->text + p->len, "...", 4);
        p->len += 3;
        p->cut = true;
    } else {
        memcpy(p->text + p->len, seg, n + 1);
        p->len += n;
    }
    return old;
}

static size_t place_key(place *p, const char *key)
{
    size_t old = place_push(p, ".");
    place_push(p, key);
    return old;
}

static size_t place_index(place *p, size_t i)
{
    char seg[32];
    snprintf(seg, sizeof seg, "[%zu]", i);
    return place_push(p, seg);
}

static void place_pop(place *p, size_t old)
{
    if (old < p->len)
        p->cut = false;
    p->len = old;
    p->text[old] = '\0';
}

/* --- reading a schema --------------------------------------------------------------- */

static const char *const type_names[] = {"null", "boolean", "integer", "number",
                                         "string", "array", "object"};

static int known_type(const char *name)
{
    for (size_t i = 0; i < sizeof type_names / sizeof *type_names; i++)
        if (strcmp(name, type_names[i]) == 0)
            return 1;
    return 0;
}

typedef struct reader {
    const char *name;
    sl_status st;
    place at;
} reader;

static int bad(reader *r, const char *keyword, const char *what)
{
    r->st = sl_fail(SL_ERR_INVALID_ARG, "%s: %s%s%s: %s", r->name, r->at.text,
                    keyword ? "." : "", keyword ? keyword : "", what);
    return 0;
}

static int read_schema(reader *r, const json_t *s);

static int read_list_of_schemas(reader *r, const json_t *s, const char *keyword)
{
    const json_t *a = json_object_get(s, keyword);
    if (!a)
        return 1;
    if (!json_is_array(a) || json_array_size(a) == 0)
        return bad(r, keyword, "expected a non-empty array of schemas");
    for (size_t i = 0; i < json_array_size(a); i++) {
        size_t old = place_key(&r->at, keyword);
        place_index(&r->at, i);
        int ok = read_schema(r, json_array_get(a, i));
        place_pop(&r->at, old);
        if (!ok)
            return 0;
    }
    return 1;
}

static int read_count(reader *r, const json_t *s, const char *keyword)
{
    const json_t *v = json_object_get(s, keyword);
    if (v && !(json_is_integer(v) && json_integer_value(v) >= 0))
        return bad(r, keyword, "expected a non-negative integer");
    return 1;
}

static int read_number(reader *r, const json_t *s, const char *keyword)
{
    const json_t *v = json_object_get(s, keyword);
    if (v && !json_is_number(v))
        return bad(r, keyword, "expected a number");
    return 1;
}

static int read_schema(reader *r, const json_t *s)
{
    if (json_is_boolean(s))
        return 1;
    if (!json_is_object(s))
        return bad(r, NULL, "a schema must be an object (or true or false)");
    const json_t *type = json_object_get(s, "type");
    if (type) {
        if (json_is_string(type)) {
            if (!known_type(json_string_value(type)))
                return bad(r, "type", "unknown type name (null, boolean, integer, number, "
                                      "string, array or object)");
        } else if (json_is_array(type) && json_array_size(type) > 0) {
            for (size_t i = 0; i < json_array_size(type); i++) {
                const json_t *t = json_array_get(type, i);
                if (!json_is_string(t) || !known_type(json_string_value(t)))
                    return bad(r, "type", "expected type names (null, boolean, integer, number, "
                                          "string, array or object)");
            }
        } else {
            return bad(r, "type", "expected a type name or an array of them");
        }
    }
    const json_t *e = json_object_get(s, "enum");
    if (e && !json_is_array(e))
        return bad(r, "enum", "expected an array of values");
    const json_t *props = json_object_get(s, "properties");
    if (props) {
        if (!json_is_object(props))
            return bad(r, "properties", "expected an object of schemas");
        const char *key;
        const json_t *sub;
        json_object_foreach((json_t *)props, key, sub) {
            size_t old = place_key(&r->at, "properties");
            place_key(&r->at, key);
            int ok = read_schema(r, sub);
            place_pop(&r->at, old);
            if (!ok)
                return 0;
        }
    }
    const json_t *req = json_object_get(s, "required");
    if (req) {
        if (!json_is_array(req))
            return bad(r, "required", "expected an array of property names");
        for (size_t i = 0; i < json_array_size(req); i++)
            if (!json_is_string(json_array_get(req, i)))
                return bad(r, "required", "expected an array of property names");
    }
    static const char *const sub_schemas[] = {"additionalProperties", "items"};
    for (size_t k = 0; k < 2; k++) {
        const json_t *sub = json_object_get(s, sub_schemas[k]);
        if (!sub)
            continue;
        if (k == 1 && json_is_array(sub))
            return bad(r, "items", "an array of schemas (tuples) is not supported: use "
                                   "prefixItems");
        size_t old = place_key(&r->at, sub_schemas[k]);
        int ok = read_schema(r, sub);
        place_pop(&r->at, old);
        if (!ok)
            return 0;
    }
    static const char *const lists[] = {"prefixItems", "anyOf", "oneOf", "allOf"};
    for (size_t k = 0; k < 4; k++)
        if (!read_list_of_schemas(r, s, lists[k]))
            return 0;
    static const char *const counts[] = {"minItems",  "maxItems",      "minLength",
                                         "maxLength", "minProperties", "maxProperties"};
    for (size_t k = 0; k < 6; k++)
        if (!read_count(r, s, counts[k]))
            return 0;
    static const char *const numbers[] = {"minimum", "maximum", "exclusiveMinimum",
                                          "exclusiveMaximum"};
    for (size_t k = 0; k < 4; k++)
        if (!read_number(r, s, numbers[k]))
            return 0;
    return 1;
}

sl_status sl_json_schema_parse(const char *text, size_t len, const char *name,
                               sl_json_schema **out)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return sl_fail(SL_ERR_INVALID_ARG, "%s is not JSON: %s (line %d, column %d)", name,
                       jerr.text, jerr.line, jerr.column);
    if (!json_is_object(root)) {
        json_decref(root);
        return sl_fail(SL_ERR_INVALID_ARG, "%s: a JSON schema must be an object", name);
    }
    reader r = {.name = name, .st = SL_OK, .at = {.text = "$", .len = 1}};
    if (!read_schema(&r, root)) {
        json_decref(root);
        return r.st;
    }
    sl_json_schema *s = sl_malloc(sizeof *s);
    if (!s) {
        json_decref(root);
        return sl_fail(SL_ERR_NOMEM, "out of memory reading %s", name);
    }
    s->root = root;
    *out = s;
    return SL_OK;
}

void sl_json_schema_free(sl_json_schema *schema)
{
    if (!schema)
        return;
    json_decref(schema->root);
    sl_free(schema);
}

const json_t *sl_json_schema_json(const sl_json_schema *schema) { return schema->root; }

/* --- checking a value --------------------------------------------------------------- */

typedef struct checker {
    place at;
    char *why;
    size_t size;
} checker;

static int mismatch(checker *c, const char *what)
{
    snprintf(c->why, c->size, "%s: %s", c->at.text, what);
    return 0;
}

static const char *kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static int is_type(const json_t *v, const char *type)
{
    if (strcmp(type, "null") == 0)
        return json_is_null(v);
    if (strcmp(type, "boolean") == 0)
        return json_is_boolean(v);
    if (strcmp(type, "number") == 0)
        return json_is_number(v);
    if (strcmp(type, "integer") == 0) {
        if (json_is_integer(v))
            return 1;
        double d = json_is_real(v) ? json_real_value(v) : NAN;
        return isfinite(d) && d == floor(d); /* 2.0 is an integer to JSON schema */
    }
    if (strcmp(type, "string") == 0)
        return json_is_string(v);
    if (strcmp(type, "array") == 0)
        return json_is_array(v);
    return json_is_object(v);
}

/* Characters, not bytes (jansson's strings are valid UTF-8). */
static size_t utf8_length(const char *s, size_t n)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)s[i] & 0xC0) != 0x80;
    return chars;
}

static int check(checker *c, const json_t *s, const json_t *v);

static int check_type(checker *c, const json_t *type, const json_t *v)
{
    if (!type)
        return 1;
    if (json_is_string(type)) {
        if (is_type(v, json_string_value(type)))
            return 1;
        char what[96];
        snprintf(what, sizeof what, "expected %s, got %s", json_string_value(type), kind_of(v));
        return mismatch(c, what);
    }
    for (size_t i = 0; i < json_array_size(type); i++)
        if (is_type(v, json_string_value(json_array_get(type, i))))
            return 1;
    char what[96];
    snprintf(what, sizeof what, "%s is none of the types allowed", kind_of(v));
    return mismatch(c, what);
}

static int check_object(checker *c, const json_t *s, const json_t *v)
{
    const json_t *props = json_object_get(s, "properties");
    const json_t *extra = json_object_get(s, "additionalProperties");
    const json_t *req = json_object_get(s, "required");
    for (size_t i = 0; req && i < json_array_size(req); i++) {
        const char *name = json_string_value(json_array_get(req, i));
        if (!json_object_get(v, name)) {
            char what[PATH_MAX_LEN];
            snprintf(what, sizeof what, "the required property \"%s\" is missing", name);
            return mismatch(c, what);
        }
    }
    const json_t *min = json_object_get(s, "minProperties");
    const json_t *max = json_object_get(s, "maxProperties");
    if (min && json_object_size(v) < (size_t)json_integer_value(min))
        return mismatch(c, "fewer properties than minProperties");
    if (max && json_object_size(v) > (size_t)json_integer_value(max))
        return mismatch(c, "more properties than maxProperties");
    const char *key;
    const json_t *member;
    json_object_foreach((json_t *)v, key, member) {
        const json_t *sub = props ? json_object_get(props, key) : NULL;
        if (!sub && extra && json_is_false(extra)) {
            char what[PATH_MAX_LEN];
            snprintf(what, sizeof what,
                     "the property \"%s\" is not allowed (additionalProperties: false)", key);
            return mismatch(c, what);
        }
        if (!sub)
            sub = extra;
        if (!sub)
            continue;
        size_t old = place_key(&c->at, key);
        int ok = check(c, sub, member);
        place_pop(&c->at, old);
        if (!ok)
            return 0;
    }
    return 1;
}

static int check_array(checker *c, const json_t *s, const json_t *v)
{
    size_t n = json_array_size(v);
    const json_t *min = json_object_get(s, "minItems");
    const json_t *max = json_object_get(s, "maxItems");
    char what[64];
    if ((min && n < (size_t)json_integer_value(min)) ||
        (max && n > (size_t)json_integer_value(max))) {
        snprintf(what, sizeof what, "%zu items, %s", n,
                 min && n < (size_t)json_integer_value(min) ? "fewer than minItems"
                                                            : "more than maxItems");
        return mismatch(c, what);
    }
    const json_t *prefix = json_object_get(s, "prefixItems");
    const json_t *items = json_object_get(s, "items");
    size_t n_prefix = prefix ? json_array_size(prefix) : 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *sub = i < n_prefix ? json_array_get(prefix, i) : items;
        if (!sub)
            continue;
        size_t old = place_index(&c->at, i);
        int ok = check(c, sub, json_array_get(v, i));
        place_pop(&c->at, old);
        if (!ok)
            return 0;
    }
    return 1;
}

static int check_number(checker *c, const json_t *s, const json_t *v)
{
    double d = json_number_value(v);
    static const char *const keys[] = {"minimum", "maximum", "exclusiveMinimum",
                                       "exclusiveMaximum"};
    for (int k = 0; k < 4; k++) {
        const json_t *bound = json_object_get(s, keys[k]);
        if (!bound)
            continue;
        double b = json_number_value(bound);
        int ok = k == 0 ? d >= b : k == 1 ? d <= b : k == 2 ? d > b : d < b;
        if (!ok) {
            char what[64];
            snprintf(what, sizeof what, "the number is outside %s", keys[k]);
            return mismatch(c, what);
        }
    }
    return 1;
}

static int check_string(checker *c, const json_t *s, const json_t *v)
{
    size_t n = utf8_length(json_string_value(v), json_string_length(v));
    const json_t *min = json_object_get(s, "minLength");
    const json_t *max = json_object_get(s, "maxLength");
    if (min && n < (size_t)json_integer_value(min))
        return mismatch(c, "the string is shorter than minLength");
    if (max && n > (size_t)json_integer_value(max))
        return mismatch(c, "the string is longer than maxLength");
    return 1;
}

/* anyOf, oneOf, allOf: how many of the list v matches, stopping early
 * where the answer is known. The first mismatch's reason is kept. */
static int check_combinators(checker *c, const json_t *s, const json_t *v)
{
    const json_t *all = json_object_get(s, "allOf");
    for (size_t i = 0; all && i < json_array_size(all); i++)
        if (!check(c, json_array_get(all, i), v))
            return 0;
    static const char *const names[] = {"anyOf", "oneOf"};
    for (int k = 0; k < 2; k++) {
        const json_t *list = json_object_get(s, names[k]);
        if (!list)
            continue;
        size_t matched = 0;
        for (size_t i = 0; i < json_array_size(list) && (k == 1 || matched == 0); i++) {
            place saved = c->at;
            matched += (size_t)check(c, json_array_get(list, i), v);
            c->at = saved;
        }
        char what[64];
        snprintf(what, sizeof what, "matches %s of the schemas of %s",
                 matched == 0 ? "none" : "more than one", names[k]);
        if (matched == 0 || (k == 1 && matched > 1))
            return mismatch(c, what);
    }
    return 1;
}

static int check(checker *c, const json_t *s, const json_t *v)
{
    if (json_is_true(s))
        return 1;
    if (json_is_false(s))
        return mismatch(c, "no value is allowed here (schema false)");
    if (!check_type(c, json_object_get(s, "type"), v))
        return 0;
    const json_t *cst = json_object_get(s, "const");
    char what[64];
    if (cst && !json_equal((json_t *)cst, (json_t *)v)) {
        snprintf(what, sizeof what, "%s that is not the const value", kind_of(v));
        return mismatch(c, what);
    }
    const json_t *e = json_object_get(s, "enum");
    if (e) {
        size_t i = 0;
        while (i < json_array_size(e) && !json_equal(json_array_get(e, i), (json_t *)v))
            i++;
        if (i == json_array_size(e)) {
            snprintf(what, sizeof what, "%s that is not one of the enum values", kind_of(v));
            return mismatch(c, what);
        }
    }
    int ok = 1;
    if (json_is_object(v))
        ok = check_object(c, s, v);
    else if (json_is_array(v))
        ok = check_array(c, s, v);
    else if (json_is_number(v))
        ok = check_number(c, s, v);
    else if (json_is_string(v))
        ok = check_string(c, s, v);
    return ok && check_combinators(c, s, v);
}

int sl_json_schema_match(const sl_json_schema *schema, const json_t *value, char *why,
                         size_t size)
{
    checker c = {.at = {.text = "$", .len = 1}, .why = why, .size = size};
    if (size)
        why[0] = '\0';
    return check(&c, schema->root, value);
}

sl_status sl_json_schema_check_answer(const sl_json_schema *schema, const char *id,
                                      const char *task, const char *text,
                                      const char *finish_reason, char **message)
{
    *message = NULL;
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    char why[PATH_MAX_LEN + 256];
    if (!v)
        snprintf(why, sizeof why, "the answer is not JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
    bool parsed = v != NULL;
    bool ok = parsed && sl_json_schema_match(schema, v, why, sizeof why);
    json_decref(v);
    if (ok)
        return SL_OK;
    bool cut = finish_reason && strcmp(finish_reason, "length") == 0;
    char more[256] = "";
    if (cut && task)
        snprintf(more, sizeof more, "; it was cut at the token limit (finish_reason \"length\"): "
                 "allow the task more tokens (--task-max-tokens %.64s=N, or \"max_tokens\" in "
                 "its \"sampling\")", task);
    else if (cut)
        snprintf(more, sizeof more, "; it was cut at the token limit (finish_reason \"length\"): "
                 "allow more tokens (--max-tokens, or max_tokens in the request)");
    *message = sl_asprintf("%s: %s%s%s; the answer was: %s", id ? id : "(request)",
                           parsed ? "the answer does not match the JSON schema: " : "", why, more,
                           text);
    return SL_ERR_INVALID_OUTPUT;
}
