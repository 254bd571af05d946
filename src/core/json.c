/* core/json.c — see json.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/decimal.h"
#include "core/json.h"
#include "core/utf8.h"

/* jansson's dump (json_dump_callback) but for reals: JSON_REAL_PRECISION(0)
 * writes a real as its shortest text, where jansson writes 17 digits (a
 * Parquet double 19.99 came out 19.989999999999998). */
typedef struct dumper {
    size_t flags;
    json_dump_callback_t out;
    void *arg;
    bool *nomem; /* set when an allocation of the dump's own failed */
} dumper;

/* Deeper than jansson's parser reads: a value that holds itself (jansson's
 * dump refuses those too) rather than a recursion without end. */
#define DUMP_MAX_DEPTH 2048

static int put(const dumper *d, const char *s, size_t n) { return d->out(s, n, d->arg); }

static int put_indent(const dumper *d, int depth, bool space)
{
    int indent = (int)(d->flags & JSON_MAX_INDENT);
    if (indent == 0)
        return space && !(d->flags & JSON_COMPACT) ? put(d, " ", 1) : 0;
    if (put(d, "\n", 1))
        return -1;
    for (int k = 0; k < depth * indent; k++)
        if (put(d, " ", 1))
            return -1;
    return 0;
}

/* The code point of the UTF-8 sequence at s[0..n) into *cp; its length,
 * 0 when it is not one (jansson's strings are checked, but json_string_nocheck
 * takes anything). */
static size_t utf8_at(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len = s[0] < 0x80 ? 1 : s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    if (len == 0 || len > n || !sl_utf8_valid((const char *)s, len))
        return 0;
    *cp = len == 1 ? s[0] : (uint32_t)(s[0] & (0x7f >> len));
    for (size_t k = 1; k < len; k++)
        *cp = *cp << 6 | (s[k] & 0x3f);
    return len;
}

static int put_string(const dumper *d, const char *str, size_t n)
{
    if (put(d, "\"", 1))
        return -1;
    size_t run = 0; /* str[run..i) waits to go out as it is */
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_at((const unsigned char *)str + i, n - i, &cp);
        if (len == 0)
            return -1;
        bool plain = cp >= 0x20 && cp != '"' && cp != '\\' && !(cp == '/' && d->flags & JSON_ESCAPE_SLASH) &&
                     !(cp > 0x7f && d->flags & JSON_ENSURE_ASCII);
        if (plain) {
            i += len;
            continue;
        }
        if (i > run && put(d, str + run, i - run))
            return -1;
        static const char named[] = "\\\"\b\f\n\r\t/", letter[] = "\\\"bfnrt/";
        const char *at = cp < 0x80 && cp ? strchr(named, (int)cp) : NULL;
        char esc[32];
        if (at) {
            esc[0] = '\\';
            esc[1] = letter[at - named];
            esc[2] = '\0';
        } else if (cp < 0x10000) {
            snprintf(esc, sizeof esc, "\\u%04X", (unsigned)cp);
        } else { /* a UTF-16 surrogate pair */
            cp -= 0x10000;
            snprintf(esc, sizeof esc, "\\u%04X\\u%04X", (unsigned)(0xD800 | cp >> 10), (unsigned)(0xDC00 | (cp & 0x3ff)));
        }
        if (put(d, esc, strlen(esc)))
            return -1;
        i += len;
        run = i;
    }
    if (n > run && put(d, str + run, n - run))
        return -1;
    return put(d, "\"", 1);
}

/* As jansson writes a real, with a '.' or an 'e' (read back, it stays a
 * real) and no '+' or leading zeros in the exponent; precision 0: the
 * shortest text that reads back as d. */
static size_t real_text(double d, int precision, char out[40])
{
    size_t n = precision ? (size_t)snprintf(out, 40, "%.*g", precision, d) : sl_double_shortest(d, out);
    char *e = strchr(out, 'e');
    if (!e && !strchr(out, '.')) {
        memcpy(out + n, ".0", 3);
        return n + 2;
    }
    if (e) {
        char *digits = e + 1 + (e[1] == '-'), *from = e + 1;
        while (*from == '+' || *from == '-' || (*from == '0' && from[1]))
            from++;
        memmove(digits, from, strlen(from) + 1);
        n = strlen(out);
    }
    return n;
}

typedef struct key_len {
    const char *key;
    size_t len;
} key_len;

static int key_cmp(const void *pa, const void *pb)
{
    const key_len *a = pa, *b = pb;
    int c = memcmp(a->key, b->key, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int put_value(const dumper *d, const json_t *v, int depth);

/* An object's or an array's members, as jansson lays them out. */
static int put_container(const dumper *d, const json_t *v, int depth)
{
    bool object = json_is_object(v);
    size_t n = object ? json_object_size(v) : json_array_size(v);
    key_len *keys = NULL;
    if (put(d, object ? "{" : "[", 1))
        return -1;
    if (object && n) {
        if (!(keys = sl_malloc(n * sizeof *keys))) {
            *d->nomem = true;
            return -1;
        }
        size_t k = 0;
        for (void *it = json_object_iter((json_t *)v); it && k < n; it = json_object_iter_next((json_t *)v, it))
            keys[k++] = (key_len){json_object_iter_key(it), json_object_iter_key_len(it)};
        if (d->flags & JSON_SORT_KEYS)
            qsort(keys, n, sizeof *keys, key_cmp);
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = i ? put(d, ",", 1) || put_indent(d, depth + 1, true) : put_indent(d, depth + 1, false);
        if (rc == 0 && object)
            rc = put_string(d, keys[i].key, keys[i].len) || put(d, ": ", d->flags & JSON_COMPACT ? 1 : 2);
        if (rc == 0)
            rc = put_value(d, object ? json_object_getn(v, keys[i].key, keys[i].len) : json_array_get(v, i), depth + 1);
    }
    sl_free(keys);
    if (rc == 0 && n)
        rc = put_indent(d, depth, false);
    return rc ? -1 : put(d, object ? "}" : "]", 1);
}

static int put_value(const dumper *d, const json_t *v, int depth)
{
    char text[40];
    if (!v || depth > DUMP_MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY: return put_container(d, v, depth);
    case JSON_STRING: {
        size_t n;
        const char *digits = sl_json_decimal_text(v, &n);
        return digits ? put(d, digits, n) : put_string(d, json_string_value(v), json_string_length(v));
    }
    case JSON_INTEGER:
        return put(d, text, (size_t)snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v)));
    case JSON_REAL: return put(d, text, real_text(json_real_value(v), (int)(d->flags >> 11 & 0x1f), text));
    case JSON_TRUE: return put(d, "true", 4);
    case JSON_FALSE: return put(d, "false", 5);
    default: return put(d, "null", 4);
    }
}

int sl_json_dump_callback(const json_t *v, size_t flags, json_dump_callback_t out, void *arg)
{
    if (!(flags & JSON_ENCODE_ANY) && !json_is_object(v) && !json_is_array(v))
        return -1;
    bool nomem = false;
    dumper d = {flags, out, arg, &nomem};
    int rc = put_value(&d, v, 0);
    return rc && nomem ? -2 : rc;
}

static int to_buf(const char *data, size_t len, void *buf) { return sl_buf_append(buf, data, len) ? 0 : -1; }

char *sl_json_dump(const json_t *v, size_t flags, size_t *len)
{
    sl_buf b = {0};
    if (sl_json_dump_callback(v, flags, to_buf, &b) || !sl_buf_append(&b, "", 1)) {
        sl_buf_free(&b);
        return NULL;
    }
    if (len)
        *len = b.len - 1;
    return (char *)b.data; /* sl_buf's memory is sluice's allocator's */
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

json_t *sl_json_real_float(float f)
{
    char text[32];
    if (!isfinite(f))
        return json_null();
    for (int digits = 1; digits <= 9; digits++) { /* 9 digits always read back as the float */
        snprintf(text, sizeof text, "%.*g", digits, (double)f);
        if (strtof(text, NULL) == f)
            break;
    }
    return json_real(strtod(text, NULL));
}

/* What a decimal's string holds before its text (see sl_json_decimal):
 * 0xFF is in no UTF-8 text, and every data string is UTF-8 (jansson checks
 * what it parses, sl_json_text replaces what is not), so no data string
 * begins with it; "\0sluice-decimal\0" alone did, from a Parquet column. */
static const char decimal_mark[] = "\0\xFF" "sluice-decimal\0";
#define DECIMAL_MARK_LEN (sizeof decimal_mark - 1)

json_t *sl_json_decimal(const char *text, size_t len)
{
    char small[DECIMAL_MARK_LEN + SL_DECIMAL_TEXT_MAX];
    if (len >= SL_DECIMAL_TEXT_MAX)
        return NULL;
    memcpy(small, decimal_mark, DECIMAL_MARK_LEN);
    memcpy(small + DECIMAL_MARK_LEN, text, len);
    return json_stringn_nocheck(small, DECIMAL_MARK_LEN + len);
}

const char *sl_json_decimal_text(const json_t *v, size_t *len)
{
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    const char *s = n > DECIMAL_MARK_LEN ? json_string_value(v) : NULL;
    if (!s || memcmp(s, decimal_mark, DECIMAL_MARK_LEN) != 0)
        return NULL;
    s += DECIMAL_MARK_LEN;
    n -= DECIMAL_MARK_LEN;
    /* a JSON number's text, whatever sl_json_decimal was given:
     * -?digits(.digits)?(e[+-]?digits)? */
    size_t i = s[0] == '-', start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == start || (s[start] == '0' && i - start > 1))
        return NULL;
    if (i < n && s[i] == '.') {
        size_t frac = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == frac)
            return NULL;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) { /* a decimal past 32 bytes: its double's text */
        i += i + 1 < n && (s[i + 1] == '-' || s[i + 1] == '+') ? 2 : 1;
        size_t exp = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == exp)
            return NULL;
    }
    if (i != n)
        return NULL;
    if (len)
        *len = n;
    return s;
}

bool sl_json_number(const json_t *v, double *out)
{
    const char *digits = sl_json_decimal_text(v, NULL);
    if (!digits && !json_is_number(v))
        return false;
    *out = digits ? strtod(digits, NULL) : json_number_value(v);
    return true;
}

/* The bits of the IEEE half nearest d (ties to the even one; past 65520,
 * infinity), with d's sign. */
static unsigned half_bits(double d)
{
    unsigned sign = signbit(d) ? 0x8000u : 0, bits;
    double a = fabs(d);
    int e;
    frexp(a, &e); /* a in [2^(e-1), 2^e) */
    if (a < 0x1p-14) { /* subnormal: multiples of 2^-24; 1024 of them is the least normal */
        bits = (unsigned)nearbyint(a * 0x1p24);
    } else {
        double m = nearbyint(ldexp(a, 11 - e)); /* exact scaling: one rounding, to 1024..2048 */
        int exp = e - 1 + (m == 2048);
        bits = exp > 15 ? 0x7c00u : (unsigned)(exp + 15) << 10 | ((unsigned)m & 0x3ff);
    }
    return sign | bits;
}

json_t *sl_json_real_half(float f)
{
    char text[32];
    if (!isfinite(f))
        return json_null();
    unsigned want = half_bits(f);
    for (int digits = 1; digits <= 5; digits++) { /* 5 digits always read back as the half */
        snprintf(text, sizeof text, "%.*g", digits, (double)f);
        if (half_bits(strtod(text, NULL)) == want)
            break;
    }
    return json_real(strtod(text, NULL));
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
        snprintf(err->text, sizeof err->text, "byte 0x%02x is not UTF-8, which JSON text must be",
                 byte);
}

const char *sl_json_file_hint(const json_error_t *err)
{
    return json_error_code(err) == json_error_invalid_utf8 ? " (re-encode the file as UTF-8)" : "";
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
