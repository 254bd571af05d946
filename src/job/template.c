/* job/template.c — see template.h. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/decimal.h"
#include "core/error.h"
#include "core/json.h"
#include "job/template.h"

enum { FIELD_MAX = 256 }; /* a longer run is no column name: kept as text */
/* A filled prompt at most: a template naming a column many times made one
 * of (copies x the column's size) bytes, a 1 MB manifest line and a
 * thousand {label}s 1 GB a row in flight (3.4 GB resident for four rows of
 * the tiny model), the memory budget not counting it; and far more text
 * than any model's context takes. */
#define TEMPLATE_MAX_BYTES ((size_t)16 << 20)

/* The length of the field name at s (after its '{'), up to its '}'; 0 when
 * s does not start a field. A byte past ASCII is part of a name: a CSV
 * header or a DataFrame names columns in any language ({名前}, {café}),
 * and such a field stayed in the prompt as text, braces and all. */
static size_t field_len(const char *s)
{
    size_t n = 0;
    while (n <= FIELD_MAX && s[n] &&
           ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
            (s[n] >= '0' && s[n] <= '9') || s[n] == '_' || s[n] == '.' || s[n] == '-' ||
            (unsigned char)s[n] >= 0x80))
        n++;
    return n > 0 && n <= FIELD_MAX && s[n] == '}' ? n : 0;
}

bool template_has_fields(const char *tmpl)
{
    for (const char *s = tmpl; *s; s++)
        if ((s[0] == '{' && (s[1] == '{' || field_len(s + 1))) || (s[0] == '}' && s[1] == '}'))
            return true;
    return false;
}

void template_each_column(const char *tmpl, void (*fn)(const char *name, size_t n, void *user),
                          void *user)
{
    for (const char *s = tmpl; s && *s; s++) {
        size_t n;
        if ((s[0] == '{' && s[1] == '{') || (s[0] == '}' && s[1] == '}')) {
            s++;
        } else if (s[0] == '{' && (n = field_len(s + 1)) > 0) {
            fn(s + 1, n, user);
            s += n + 1;
        }
    }
}

sl_status template_fill_in(const char *tmpl, const json_t *columns, const char *where,
                           char **out)
{
    *out = NULL;
    sl_buf b = {0};
    bool ok = true;
    for (const char *s = tmpl; *s && ok;) {
        size_t n;
        if ((s[0] == '{' && s[1] == '{') || (s[0] == '}' && s[1] == '}')) {
            ok = sl_buf_append(&b, s, 1);
            s += 2;
        } else if (s[0] == '{' && (n = field_len(s + 1)) > 0) {
            const json_t *v = json_is_object(columns) ? sl_json_column(columns, s + 1, n) : NULL;
            if (!v || json_is_null(v)) {
                sl_buf_free(&b);
                return sl_fail(SL_ERR_INVALID_ARG, "no column '%.*s' for {%.*s} in %s%s",
                               (int)n, s + 1, (int)n, s + 1, where, v ? " (it is null)" : "");
            }
            char num[32], *text = NULL;
            const char *add;
            size_t len;
            if ((add = sl_json_decimal_text(v, &len)) != NULL) {
                /* a decimal column's exact text (1.10) */
            } else if (json_is_string(v)) {
                add = json_string_value(v);
                len = json_string_length(v);
            } else if (json_is_real(v)) {
                /* its shortest text: jansson writes 17 digits, so a price
                 * of 19.99 (a DECIMAL column's double) reached the prompt
                 * as "19.989999999999998" */
                len = sl_double_shortest(json_real_value(v), num);
                add = num;
            } else {
                add = text = sl_json_dump(v, JSON_COMPACT | JSON_ENCODE_ANY, &len);
            }
            if (!add) {
                ok = false;
            } else if (b.len + len > TEMPLATE_MAX_BYTES) {
                sl_free(text);
                sl_buf_free(&b);
                return sl_fail(SL_ERR_INVALID_ARG, "the prompt filled from the row's columns "
                               "would be over %d MiB at {%.*s} (%zu bytes a time): shorten the "
                               "template or the column", (int)(TEMPLATE_MAX_BYTES >> 20), (int)n, s + 1,
                               len);
            } else {
                ok = sl_buf_append(&b, add, len);
            }
            sl_free(text);
            s += n + 2;
        } else {
            ok = sl_buf_append(&b, s, 1);
            s++;
        }
    }
    if (ok)
        ok = sl_buf_append(&b, "", 1); /* the NUL */
    if (!ok) {
        sl_buf_free(&b);
        return sl_fail(SL_ERR_NOMEM, "out of memory filling the prompt");
    }
    *out = (char *)b.data;
    return SL_OK;
}

sl_status template_fill(const char *tmpl, const json_t *columns, char **out)
{
    return template_fill_in(tmpl, columns, "the prompt", out);
}
