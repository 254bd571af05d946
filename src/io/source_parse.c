/* io/source_parse.c — see source_parse.h. */
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "io/source_parse.h"

/* --- growable string list ---------------------------------------------------- */

typedef struct strlist {
    char **v;
    size_t n, cap;
    size_t bytes; /* brace expansion: the names' total length */
} strlist;

static int strlist_push(strlist *l, char *s)
{
    if (!s)
        return -1;
    char **grown = sl_grow(l->v, l->n, &l->cap, sizeof *grown);
    if (!grown) {
        sl_free(s);
        return -1;
    }
    l->v = grown;
    l->v[l->n++] = s;
    return 0;
}

void sl_strings_free(char **strings, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sl_free(strings[i]);
    sl_free(strings);
}

void sl_csv_fields_free(char **fields, size_t n) { sl_strings_free(fields, n); }

/* --- CSV ----------------------------------------------------------------------- */

int sl_csv_split(const char *s, size_t len, size_t max_fields, char ***fields, size_t *n,
                 char *err, size_t errlen)
{
    *fields = NULL;
    *n = 0;
    strlist out = {0};
    char *buf = sl_malloc(len + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t i = 0;
    for (;;) {
        size_t b = 0;
        if (i < len && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= len) {
                    sl_free(buf);
                    sl_strings_free(out.v, out.n);
                    return 1; /* the quoted field goes on past this line */
                }
                if (s[i] == '"') {
                    if (i + 1 < len && s[i + 1] == '"') {
                        buf[b++] = '"';
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                buf[b++] = s[i++];
            }
            if (i < len && s[i] != ',') {
                snprintf(err, errlen, "text after a closing quote in field %zu", out.n + 1);
                goto bad;
            }
        } else {
            while (i < len && s[i] != ',') {
                if (s[i] == '"') {
                    snprintf(err, errlen, "a quote inside unquoted field %zu", out.n + 1);
                    goto bad;
                }
                buf[b++] = s[i++];
            }
        }
        if (out.n == max_fields) {
            snprintf(err, errlen, "more than %zu fields", max_fields);
            goto bad;
        }
        /* A field is a C string from here on: a NUL byte would end it
         * there, in silence ("a.jpg\0junk" read a.jpg, "b\0c" passed as
         * "b"). Python's csv refuses such a line too. */
        if (memchr(buf, '\0', b)) {
            snprintf(err, errlen, "field %zu holds a NUL byte (0x00), which no path or value may "
                                  "hold", out.n + 1);
            goto bad;
        }
        if (strlist_push(&out, sl_strndup(buf, b)) != 0) {
            snprintf(err, errlen, "out of memory");
            goto bad;
        }
        if (i >= len)
            break;
        i++; /* the comma; a trailing comma makes a last empty field */
        if (i == len) {
            if (out.n == max_fields) {
                snprintf(err, errlen, "more than %zu fields", max_fields);
                goto bad;
            }
            if (strlist_push(&out, sl_strdup("")) != 0) {
                snprintf(err, errlen, "out of memory");
                goto bad;
            }
            break;
        }
    }
    sl_free(buf);
    *fields = out.v;
    *n = out.n;
    return 0;
bad:
    sl_free(buf);
    sl_strings_free(out.v, out.n);
    return -1;
}

int sl_csv_unique_names(char **names, size_t n)
{
    /* Each name given so far, with how many NAME_k were made from it (a
     * hashed object: a header may have max_columns names). */
    json_t *taken = json_object();
    int rc = taken ? 0 : -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *count;
        while (rc == 0 && (count = json_object_get(taken, names[i])) != NULL) {
            json_int_t k = json_integer_value(count) + 1;
            char *renamed = sl_asprintf("%s_%lld", names[i], (long long)k);
            if (!renamed) {
                rc = -1;
                break;
            }
            json_integer_set(count, k);
            sl_free(names[i]);
            names[i] = renamed;
        }
        /* nocheck: a name need not be UTF-8 to be told apart */
        if (rc == 0 && json_object_set_new_nocheck(taken, names[i], json_integer(0)) != 0)
            rc = -1;
    }
    json_decref(taken);
    return rc;
}

int sl_csv_scan(int state, const char *s, size_t len)
{
    for (size_t i = 0; i < len && state != SL_CSV_BAD; i++) {
        char c = s[i];
        switch (state) {
        case SL_CSV_FIELD_START:
            state = c == '"' ? SL_CSV_QUOTED : c == ',' ? SL_CSV_FIELD_START : SL_CSV_UNQUOTED;
            break;
        case SL_CSV_UNQUOTED:
            state = c == '"' ? SL_CSV_BAD : c == ',' ? SL_CSV_FIELD_START : SL_CSV_UNQUOTED;
            break;
        case SL_CSV_QUOTED:
            /* Runs of plain bytes are most of a quoted field. */
            if (c != '"') {
                const char *q = memchr(s + i, '"', len - i);
                i = q ? (size_t)(q - s) - 1 : len - 1;
                break;
            }
            state = SL_CSV_QUOTE_IN_QUOTED;
            break;
        default: /* SL_CSV_QUOTE_IN_QUOTED: "" is a quote, anything but ',' after a close is bad */
            state = c == '"' ? SL_CSV_QUOTED : c == ',' ? SL_CSV_FIELD_START : SL_CSV_BAD;
            break;
        }
    }
    return state;
}

/* --- brace lists ---------------------------------------------------------------- */

/* Is body (between the braces) a numeric range "A..B"? */
static bool parse_range(const char *body, size_t len, long *lo, long *hi, int *width)
{
    const char *dots = NULL;
    for (size_t k = 0; k + 1 < len; k++)
        if (body[k] == '.' && body[k + 1] == '.') {
            dots = body + k;
            break;
        }
    if (!dots || dots == body || dots + 2 >= body + len)
        return false;
    const char *parts[2] = {body, dots + 2};
    size_t lens[2] = {(size_t)(dots - body), (size_t)(body + len - dots - 2)};
    long v[2];
    *width = 0;
    for (int p = 0; p < 2; p++) {
        if (lens[p] > 18)
            return false;
        for (size_t k = 0; k < lens[p]; k++)
            if (!isdigit((unsigned char)parts[p][k]))
                return false;
        char tmp[20];
        memcpy(tmp, parts[p], lens[p]);
        tmp[lens[p]] = '\0';
        v[p] = strtol(tmp, NULL, 10);
        if (lens[p] > 1 && parts[p][0] == '0' && (int)lens[p] > *width)
            *width = (int)lens[p];
    }
    if (*width && (int)lens[0] > *width)
        *width = (int)lens[0];
    if (*width && (int)lens[1] > *width)
        *width = (int)lens[1];
    *lo = v[0];
    *hi = v[1];
    return true;
}

/* Adds s[0..len) to the names, within max names and SL_BRACE_MAX_BYTES. */
static int push_name(strlist *out, const char *s, size_t len, size_t max, char *err, size_t errlen)
{
    if (out->n >= max) {
        snprintf(err, errlen, "more than %zu names", max);
        return -1;
    }
    if (out->bytes + len > SL_BRACE_MAX_BYTES) {
        snprintf(err, errlen, "the names take more than %d bytes", SL_BRACE_MAX_BYTES);
        return -1;
    }
    out->bytes += len;
    return strlist_push(out, sl_strndup(s, len)) == 0 ? 0 : (snprintf(err, errlen, "out of memory"), -1);
}

static int expand(const char *pat, size_t len, size_t max, strlist *out, char *err, size_t errlen);

/* The texts a group stands for (body[0..len), between its braces) onto
 * out: a range's numbers, else each alternative's names in turn. */
static int expand_group(const char *body, size_t len, size_t max, strlist *out, char *err,
                        size_t errlen)
{
    long lo, hi;
    int width;
    if (parse_range(body, len, &lo, &hi, &width)) {
        long step = lo <= hi ? 1 : -1;
        for (long v = lo;; v += step) {
            char num[32];
            int k = snprintf(num, sizeof num, "%0*ld", width, v);
            if (push_name(out, num, (size_t)k, max, err, errlen) != 0)
                return -1;
            if (v == hi)
                return 0;
        }
    }
    /* Alternatives split at top-level commas. */
    const char *alt = body, *end = body + len;
    int depth = 0;
    for (const char *c = body;; c++) {
        if (c < end && *c == '{')
            depth++;
        else if (c < end && *c == '}')
            depth--;
        if (c == end || (*c == ',' && depth == 0)) {
            if (expand(alt, (size_t)(c - alt), max, out, err, errlen) != 0)
                return -1;
            if (c == end)
                return 0;
            alt = c + 1;
        }
    }
}

/* Appends the list as the next part of a product (taken: freed if it fails). */
static int add_part(strlist **parts, size_t *n, size_t *cap, strlist list)
{
    strlist *grown = sl_grow(*parts, *n, cap, sizeof *grown);
    if (!grown) {
        sl_strings_free(list.v, list.n);
        return -1;
    }
    *parts = grown;
    grown[(*n)++] = list;
    return 0;
}

/* Appends the text s[0..len) as the next part of a product. */
static int add_text(strlist **parts, size_t *n, size_t *cap, const char *s, size_t len)
{
    strlist one = {0};
    return strlist_push(&one, sl_strndup(s, len)) == 0 ? add_part(parts, n, cap, one) : -1;
}

/* Each name of the product of parts[0..n) (the last varying fastest) onto out. */
static int product(const strlist *parts, size_t n, size_t max, strlist *out, char *err,
                   size_t errlen)
{
    size_t *at = sl_calloc(n, sizeof *at); /* each part's text in the name being made */
    sl_buf name = {0};
    int rc = at ? 0 : -2;
    while (rc == 0) {
        name.len = 0;
        for (size_t k = 0; k < n && rc == 0; k++)
            if (!sl_buf_append(&name, parts[k].v[at[k]], strlen(parts[k].v[at[k]])))
                rc = -2;
        if (rc == 0)
            rc = push_name(out, name.len ? (const char *)name.data : "", name.len, max, err,
                           errlen);
        size_t k = n;
        while (k > 0 && ++at[k - 1] == parts[k - 1].n)
            at[--k] = 0;
        if (k == 0)
            break;
    }
    if (rc == -2) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    sl_free(at);
    sl_buf_free(&name);
    return rc;
}

/* The names of pat[0..len) onto out, in order: the product of its parts
 * (texts and groups). Each group is expanded once and each name made once
 * from the parts: re-expanding the whole pattern with one group replaced at
 * a time cost names x groups x pattern bytes, and 4 KB of "{}" after
 * "{a,b,c,d,e,f,g,h,i,j}" 4 times (10,000 names) ran for minutes. A group
 * of one text joins the text around it, so a name is made of a few parts,
 * not one a group. */
static int expand(const char *pat, size_t len, size_t max, strlist *out, char *err, size_t errlen)
{
    strlist *parts = NULL;
    size_t n_parts = 0, cap = 0;
    sl_buf text = {0}; /* since the last group of several texts */
    int rc = 0;
    for (size_t i = 0; rc == 0;) {
        const char *open = memchr(pat + i, '{', len - i);
        size_t plain = open ? (size_t)(open - pat) - i : len - i;
        if (!sl_buf_append(&text, pat + i, plain)) {
            rc = -2;
            break;
        }
        i += plain;
        if (!open)
            break;
        int depth = 0; /* the matching close brace, skipping nested groups */
        const char *close = NULL;
        for (const char *c = open; c < pat + len && !close; c++)
            if (*c == '{')
                depth++;
            else if (*c == '}' && --depth == 0)
                close = c;
        if (!close) {
            snprintf(err, errlen, "unbalanced '{' in '%.*s'", (int)len, pat);
            rc = -1;
            break;
        }
        i = (size_t)(close - pat) + 1;
        strlist group = {0};
        if (expand_group(open + 1, (size_t)(close - open - 1), max, &group, err, errlen) != 0) {
            sl_strings_free(group.v, group.n);
            rc = -1;
        } else if (group.n == 1) {
            if (!sl_buf_append(&text, group.v[0], strlen(group.v[0])))
                rc = -2;
            sl_strings_free(group.v, group.n);
        } else if (n_parts >= 2 * 64) { /* each such group at least doubles the names */
            sl_strings_free(group.v, group.n);
            snprintf(err, errlen, "more than %zu names", max);
            rc = -1;
        } else if (add_text(&parts, &n_parts, &cap, text.len ? (const char *)text.data : "",
                            text.len) != 0) {
            sl_strings_free(group.v, group.n);
            rc = -2;
        } else if (add_part(&parts, &n_parts, &cap, group) != 0) {
            rc = -2;
        } else {
            text.len = 0;
        }
    }
    if (rc == 0 && add_text(&parts, &n_parts, &cap, text.len ? (const char *)text.data : "",
                            text.len) != 0)
        rc = -2;
    if (rc == 0)
        rc = product(parts, n_parts, max, out, err, errlen);
    if (rc == -2) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    for (size_t k = 0; k < n_parts; k++)
        sl_strings_free(parts[k].v, parts[k].n);
    sl_free(parts);
    sl_buf_free(&text);
    return rc;
}

int sl_brace_expand(const char *pattern, size_t max, char ***out, size_t *n, char *err,
                    size_t errlen)
{
    *out = NULL;
    *n = 0;
    /* Each nested group is scanned again for its end and its commas: a
     * long pattern would cost its length squared. */
    if (strlen(pattern) > SL_BRACE_MAX_PATTERN) {
        snprintf(err, errlen, "longer than %d bytes", SL_BRACE_MAX_PATTERN);
        return -1;
    }
    for (const char *c = pattern, *last_open = NULL; *c; c++) {
        if (*c == '{')
            last_open = c;
        else if (*c == '}' && !last_open) {
            snprintf(err, errlen, "unbalanced '}' in '%s'", pattern);
            return -1;
        }
    }
    strlist l = {0};
    if (expand(pattern, strlen(pattern), max, &l, err, errlen) != 0) {
        sl_strings_free(l.v, l.n);
        return -1;
    }
    *out = l.v;
    *n = l.n;
    return 0;
}

/* --- input names in ids ---------------------------------------------------------- */

char *sl_path_lexical(const char *cwd, const char *path)
{
    char *joined = path[0] == '/' ? sl_strdup(path) : sl_asprintf("%s/%s", cwd, path);
    if (!joined)
        return NULL;
    char *out = sl_malloc(strlen(joined) + 2);
    if (!out) {
        sl_free(joined);
        return NULL;
    }
    size_t n = 0; /* out[0..n) is the path so far, without a trailing '/' ("" is the root) */
    for (char *c = joined; *c;) {
        char *end = strchr(c, '/');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len == 2 && c[0] == '.' && c[1] == '.') {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--; /* the '/' before the component taken away */
        } else if (len > 0 && !(len == 1 && c[0] == '.')) {
            out[n++] = '/';
            memcpy(out + n, c, len);
            n += len;
        }
        c += len;
        if (*c == '/')
            c++;
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
    sl_free(joined);
    return out;
}

/* The length of the folder holding `path` ("/a/b" -> 2; "/a" -> 0). */
static size_t parent_len(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? (size_t)(slash - path) : 0;
}

int sl_input_names(const char *const *paths, size_t n, bool folders, const char ***names)
{
    *names = NULL;
    const char **out = sl_calloc(n ? n : 1, sizeof *out);
    if (!out)
        return -1;
    /* root: the common folder, as a length of paths[0] ("" is "/"). */
    size_t root = 0;
    if (n > 0) {
        root = folders ? strlen(paths[0]) : parent_len(paths[0]);
        if (folders && root == 1)
            root = 0; /* the input "/" itself */
        for (size_t i = 1; i < n; i++) {
            size_t len = folders ? strlen(paths[i]) : parent_len(paths[i]);
            if (folders && len == 1)
                len = 0;
            size_t k = 0;
            while (k < root && k < len && paths[0][k] == paths[i][k])
                k++;
            /* Back to a whole component: "/data/en" and "/data/eu" share "/data". */
            bool ends0 = k == root || paths[0][k] == '/', endsi = k == len || paths[i][k] == '/';
            if ((!ends0 || !endsi) && k > 0)
                do
                    k--;
                while (k > 0 && paths[0][k] != '/');
            root = k;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = paths[i] + root;
        out[i] = *name == '/' ? name + 1 : name;
    }
    *names = out;
    return 0;
}

/* --- WebDataset names ------------------------------------------------------------ */

size_t sl_compression_suffix_len(const char *name)
{
    static const char *const suffixes[] = {".gz", ".zst", ".zstd", ".bz2", ".xz"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t k = strlen(suffixes[i]);
        if (n > k && strcasecmp(name + n - k, suffixes[i]) == 0)
            return k;
    }
    return 0;
}

bool sl_base_ends_with(const char *name, const char *suffix)
{
    size_t a = strlen(name) - sl_compression_suffix_len(name), b = strlen(suffix);
    return a >= b && strncasecmp(name + a - b, suffix, b) == 0;
}

bool sl_tar_name(const char *name)
{
    size_t n = strlen(name);
    return sl_base_ends_with(name, ".tar") || (n >= 4 && strcasecmp(name + n - 4, ".tgz") == 0);
}

bool sl_wds_split(const char *name, size_t *key_len, const char **ext)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strchr(base, '.');
    if (!dot || dot == base || !dot[1])
        return false;
    *key_len = (size_t)(dot - name);
    *ext = dot + 1;
    return true;
}

/* --- URLs and globs ---------------------------------------------------------------- */

void sl_url_scheme(const char *value, char scheme[16])
{
    scheme[0] = '\0';
    size_t k = 0;
    while (value[k] && (isalnum((unsigned char)value[k]) || value[k] == '+' || value[k] == '-' ||
                        value[k] == '.'))
        k++;
    /* RFC 3986: a letter first; one letter before ':' is a drive, not a scheme. */
    if (k < 2 || k >= 16 || !isalpha((unsigned char)value[0]) || strncmp(value + k, "://", 3) != 0)
        return;
    for (size_t i = 0; i < k; i++)
        scheme[i] = (char)tolower((unsigned char)value[i]);
    scheme[k] = '\0';
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int sl_file_url_path(const char *url, char **path, char **why)
{
    *path = *why = NULL;
    const char *rest = url + 7; /* past "file://", any case (sl_url_scheme's "file") */
    if (strncasecmp(rest, "localhost/", 10) == 0)
        rest += 9;
    if (*rest != '/') {
        *why = sl_asprintf("'%s': only file:///absolute/path URLs are read", url);
        return *why ? 1 : -1;
    }
    char *out = sl_malloc(strlen(rest) + 1), *o = out;
    if (!out)
        return -1;
    for (const char *c = rest; *c; c++) {
        if (*c != '%') {
            *o++ = *c;
            continue;
        }
        int hi = hex_digit(c[1]), lo = hi < 0 ? -1 : hex_digit(c[2]);
        if (hi < 0 || lo < 0 || (hi | lo) == 0) {
            sl_free(out);
            /* A name cannot hold a NUL; anything else is not an escape. */
            if (hi >= 0 && lo >= 0)
                *why = sl_asprintf("'%s': %%00 (a NUL byte) cannot be in a file name; a file:// "
                                   "URL spells a byte as %%XX (two hex digits) and a '%%' as %%25",
                                   url);
            else
                *why = sl_asprintf("'%s': '%.3s' is not a %%XX escape; a file:// URL spells a "
                                   "byte as %%XX (two hex digits) and a '%%' as %%25", url, c);
            return *why ? 1 : -1;
        }
        *o++ = (char)(hi << 4 | lo);
        c += 2;
    }
    *o = '\0';
    *path = out;
    return 0;
}

/* s[0..len) with its %XX escapes decoded, but for %00 and malformed ones,
 * which stay as written (a folder's name is what it is); NULL out of memory. */
static char *hive_unescape(const char *s, size_t len)
{
    char *out = sl_malloc(len + 1), *o = out;
    for (size_t i = 0; out && i < len; i++) {
        int hi = s[i] == '%' && i + 2 < len ? hex_digit(s[i + 1]) : -1;
        int lo = hi < 0 ? -1 : hex_digit(s[i + 2]);
        if (hi < 0 || lo < 0 || (hi | lo) == 0) {
            *o++ = s[i];
            continue;
        }
        *o++ = (char)(hi << 4 | lo);
        i += 2;
    }
    if (out)
        *o = '\0';
    return out;
}

void sl_hive_partitions_free(char **keys, char **values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sl_free(keys[i]);
        sl_free(values[i]);
    }
    sl_free(keys);
    sl_free(values);
}

int sl_hive_partitions(const char *rel, char ***keys, char ***values, size_t *n)
{
    *keys = *values = NULL;
    *n = 0;
    size_t cap = 0;
    for (const char *seg = rel, *slash; (slash = strchr(seg, '/')) != NULL; seg = slash + 1) {
        const char *eq = memchr(seg, '=', (size_t)(slash - seg));
        if (!eq || eq == seg)
            continue;
        static const char hive_null[] = "__HIVE_DEFAULT_PARTITION__";
        size_t value_len = (size_t)(slash - eq - 1);
        bool is_null = value_len == sizeof hive_null - 1 && memcmp(eq + 1, hive_null, value_len) == 0;
        char *key = hive_unescape(seg, (size_t)(eq - seg));
        char *value = NULL;
        bool ok = key && (is_null || (value = hive_unescape(eq + 1, value_len)));
        size_t at = 0;
        while (ok && at < *n && strcmp((*keys)[at], key) != 0)
            at++;
        if (ok && at < *n) { /* the deeper folder's value */
            sl_free(key);
            sl_free((*values)[at]);
            (*values)[at] = value;
            continue;
        }
        if (ok && *n == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            char **k = sl_realloc(*keys, ncap * sizeof *k);
            if (k)
                *keys = k;
            char **v = k ? sl_realloc(*values, ncap * sizeof *v) : NULL;
            if (v)
                *values = v;
            ok = v != NULL;
            cap = ok ? ncap : cap;
        }
        if (!ok) {
            sl_free(key);
            sl_free(value);
            sl_hive_partitions_free(*keys, *values, *n);
            *keys = *values = NULL;
            *n = 0;
            return -1;
        }
        (*keys)[*n] = key;
        (*values)[(*n)++] = value;
    }
    return 0;
}

bool sl_glob_filter(const char *rel, const char *const *include, size_t n_include,
                    const char *const *exclude, size_t n_exclude)
{
    bool in = n_include == 0;
    for (size_t i = 0; i < n_include && !in; i++)
        in = fnmatch(include[i], rel, 0) == 0;
    for (size_t i = 0; i < n_exclude && in; i++)
        in = fnmatch(exclude[i], rel, 0) != 0;
    return in;
}
