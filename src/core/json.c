/* core/json.c — see json.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"

char *sl_json_dump(const json_t *v, size_t flags, size_t *len)
{
    char *dumped = json_dumps(v, flags); /* malloc's: copied into ours */
    size_t n = dumped ? strlen(dumped) : 0;
    char *text = dumped ? sl_strndup(dumped, n) : NULL;
    free(dumped);
    if (text && len)
        *len = n;
    return text;
}

json_t *sl_json_text(const char *s, size_t n)
{
    if (!s)
        return json_null();
    if (sl_utf8_valid(s, n))
        return json_stringn(s, n);
    char *fixed = sl_utf8_sanitize(s, n);
    json_t *j = fixed ? json_string(fixed) : NULL;
    sl_free(fixed);
    return j;
}

json_t *sl_json_column(const json_t *row, const char *name, size_t n)
{
    char small[256];
    char *key = n < sizeof small ? small : sl_malloc(n + 1);
    if (!key)
        return NULL;
    memcpy(key, name, n);
    key[n] = '\0';
    json_t *v = json_object_get(row, key);
    if (!v && n && memchr(key, '.', n)) { /* a path: every part named */
        v = (json_t *)row;
        for (char *part = key; v;) {
            char *dot = strchr(part, '.');
            if (dot)
                *dot = '\0';
            v = *part && json_is_object(v) ? json_object_get(v, part) : NULL;
            if (!dot)
                break;
            part = dot + 1;
        }
    }
    if (key != small)
        sl_free(key);
    return v;
}

json_t *sl_json_real(double d)
{
    return isfinite(d) ? json_real(d) : json_null();
}

/* Whether text[i..len) starts with the bare word w (not part of a longer one). */
static bool word_at(const char *text, size_t len, size_t i, const char *w)
{
    size_t n = strlen(w);
    if (len - i < n || memcmp(text + i, w, n) != 0)
        return false;
    char next = i + n < len ? text[i + n] : ' ';
    return !((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') || (next >= '0' && next <= '9'));
}

/* Whether s[0..n) is an integer as JSON writes one: no '+', no leading
 * zero (strtoll reads these too; quoted they would become valid text). */
static bool json_integer_text(const char *s, size_t n)
{
    size_t i = s[0] == '-';
    if (i >= n || (s[i] == '0' && n - i > 1))
        return false;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* text with what jansson cannot read of a data row rewritten (see
 * sl_json_load_data; huge_digits: sl_json_load_digits), NUL-terminated in
 * *out (sl_free); false when out of memory. *changed counts the rewrites. */
static bool widen_numbers(const char *text, size_t len, bool huge_digits, char **out, size_t *out_len,
                          size_t *changed)
{
    /* "null" for "NaN" or "1e999", ".0" after or quotes around 19 digits or
     * more: at most twice */
    char *w = sl_malloc(len * 2 + 1), *o = w;
    if (!w)
        return false;
    *changed = 0;
    bool in_string = false;
    for (size_t i = 0; i < len;) {
        char ch = text[i];
        if (in_string) {
            *o++ = ch;
            i++;
            if (ch == '\\' && i < len)
                *o++ = text[i++];
            else if (ch == '"')
                in_string = false;
            continue;
        }
        const char *word = word_at(text, len, i, "NaN")         ? "NaN"
                           : word_at(text, len, i, "Infinity")  ? "Infinity"
                           : word_at(text, len, i, "-Infinity") ? "-Infinity"
                                                                : NULL;
        if (word) { /* Python's json.dumps writes these for floats JSON has no form of */
            memcpy(o, "null", 4);
            o += 4;
            i += strlen(word);
            ++*changed;
            continue;
        }
        if (ch != '-' && (ch < '0' || ch > '9')) {
            in_string = ch == '"';
            *o++ = ch;
            i++;
            continue;
        }
        size_t end = i;
        bool real = false;
        while (end < len && text[end] && strchr("+-0123456789.eE", text[end])) {
            real |= text[end] == '.' || text[end] == 'e' || text[end] == 'E';
            end++;
        }
        size_t n = end - i;
        char *token = sl_strndup(text + i, n);
        if (!token) {
            sl_free(w);
            return false;
        }
        errno = 0;
        if (!real)
            (void)strtoll(token, NULL, 10);
        bool huge = !real && errno == ERANGE;
        bool inf = (real || huge) && isinf(strtod(token, NULL));
        sl_free(token);
        *changed += inf || huge;
        if (inf) {
            memcpy(o, "null", 4);
            o += 4;
        } else {
            bool quote = huge && huge_digits && json_integer_text(text + i, n);
            if (quote)
                *o++ = '"';
            memcpy(o, text + i, n);
            o += n;
            if (quote) {
                *o++ = '"';
            } else if (huge) {
                memcpy(o, ".0", 2);
                o += 2;
            }
        }
        i = end;
    }
    *o = '\0';
    *out = w;
    *out_len = (size_t)(o - w);
    return true;
}

void sl_json_explain(json_error_t *err)
{
    /* A NUL would cut the string where sluice reads it as C text. */
    unsigned byte;
    if (!err) /* the load functions' callers may pass none (a line read once already) */
        return;
    if (strstr(err->text, "JSON_ALLOW_NUL"))
        snprintf(err->text, sizeof err->text,
                 "a string holds \\u0000 (NUL), which sluice does not take");
    else if (sscanf(err->text, "unable to decode byte 0x%x", &byte) == 1) /* Latin-1 text, say */
        snprintf(err->text, sizeof err->text, "byte 0x%02x is not UTF-8, which JSON text must be "
                 "(re-encode the file as UTF-8)", byte);
}

static json_t *load_data(const char *text, size_t len, size_t flags, bool huge_digits, json_error_t *err)
{
    json_t *v = json_loadb(text, len, flags, err);
    if (v)
        return v;
    sl_json_explain(err);
    char *wide;
    size_t wide_len, changed;
    if (!widen_numbers(text, len, huge_digits, &wide, &wide_len, &changed))
        return NULL;
    json_error_t again;
    v = changed ? json_loadb(wide, wide_len, flags, &again) : NULL;
    sl_free(wide);
    return v; /* else the first error stands: the line as written */
}

json_t *sl_json_load_data(const char *text, size_t len, size_t flags, json_error_t *err)
{
    return load_data(text, len, flags, false, err);
}

json_t *sl_json_load_digits(const char *text, size_t len, size_t flags, json_error_t *err)
{
    return load_data(text, len, flags, true, err);
}

const char *sl_json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return "null";
    }
}
