/* examples/plugins/tags.c — a C plugin (sluice/plugin.h) that turns the
 * engine's answer into tags, the same as the Lua example examples/tags.lua
 * (docs/stages.md, "The tag rule"): the answer lowercased (ASCII), split at
 * every byte that is not an ASCII letter or digit, stopwords and words under
 * 3 characters left out, each word once in order of first appearance, at
 * most 16, written as the column `tags` (a JSON array of strings); a row
 * whose answer is shorter than `min_length` characters (UTF-8; bytes when it
 * is not UTF-8) is dropped. Config: {"stopwords": "FILE" (one word a line,
 * `#` starts a comment; optional), "min_length": N (default 0)}. Each worker
 * loads its own stopword set in init() and keeps a scratch buffer that grows
 * to the longest answer it has seen.
 *
 *   cc -O2 -shared -fPIC -I include examples/plugins/tags.c -o libsluice_tags.so
 *
 * Placed after the engine (after: engine); before it a row has no answer,
 * taken as "" (as tags.lua does). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/plugin.h"

enum { MIN_WORD = 3, MAX_TAGS = 16 };

typedef struct tags {
    const sl_plugin_host *host;
    char **stop;     /* open addressing, NULL = empty; n_slots a power of two */
    size_t n_slots, n_stop;
    size_t min_length;
    char *buf;       /* the JSON array of a row's tags */
    size_t cap;
} tags;

/* ASCII only, whatever the locale (a Turkish one lowercases 'I' to
 * another letter). */
static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

static bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static uint64_t hash_of(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static bool is_stopword(const tags *t, const char *w, size_t n)
{
    if (!t->n_slots)
        return false;
    for (size_t i = hash_of(w, n) & (t->n_slots - 1);; i = (i + 1) & (t->n_slots - 1)) {
        const char *s = t->stop[i];
        if (!s)
            return false;
        if (strlen(s) == n && memcmp(s, w, n) == 0)
            return true;
    }
}

/* Adds w (owned) to the set, growing it at half full. */
static bool add_stopword(tags *t, char *w)
{
    size_t n = strlen(w);
    if (is_stopword(t, w, n)) {
        free(w);
        return true;
    }
    if (2 * (t->n_stop + 1) > t->n_slots) {
        size_t slots = t->n_slots ? 2 * t->n_slots : 64;
        char **grown = calloc(slots, sizeof *grown);
        if (!grown)
            return false;
        for (size_t i = 0; i < t->n_slots; i++)
            if (t->stop[i]) {
                size_t j = hash_of(t->stop[i], strlen(t->stop[i])) & (slots - 1);
                while (grown[j])
                    j = (j + 1) & (slots - 1);
                grown[j] = t->stop[i];
            }
        free(t->stop);
        t->stop = grown;
        t->n_slots = slots;
    }
    size_t j = hash_of(w, n) & (t->n_slots - 1);
    while (t->stop[j])
        j = (j + 1) & (t->n_slots - 1);
    t->stop[j] = w;
    t->n_stop++;
    return true;
}

static void tags_free(tags *t)
{
    for (size_t i = 0; i < t->n_slots; i++)
        free(t->stop[i]);
    free(t->stop);
    free(t->buf);
    free(t);
}

/* One word a line, lowercased; `#` to the end of the line, surrounding
 * spaces and blank lines ignored. */
static sl_status load_stopwords(tags *t, const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return t->host->fail(SL_ERR_INVALID_ARG, "tags: stopwords file '%s': %s", path,
                             strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    sl_status st = SL_OK;
    while (st == SL_OK && (len = getline(&line, &cap, fp)) >= 0) {
        char *s = line, *e = line + len, *hash = memchr(line, '#', (size_t)len);
        if (hash)
            e = hash;
        while (s < e && is_space(*s))
            s++;
        while (e > s && is_space(e[-1]))
            e--;
        if (e == s)
            continue;
        char *w = malloc((size_t)(e - s) + 1);
        if (!w) {
            st = t->host->fail(SL_ERR_NOMEM, "tags: out of memory loading '%s'", path);
            break;
        }
        for (size_t i = 0; i < (size_t)(e - s); i++)
            w[i] = lower(s[i]);
        w[e - s] = '\0';
        if (!add_stopword(t, w))
            st = t->host->fail(SL_ERR_NOMEM, "tags: out of memory loading '%s'", path);
    }
    if (st == SL_OK && ferror(fp))
        st = t->host->fail(SL_ERR_INVALID_ARG, "tags: reading stopwords file '%s' failed", path);
    free(line);
    fclose(fp);
    return st;
}

static sl_status tags_init(const sl_plugin_host *host, const char *config, int worker,
                           void **state)
{
    (void)worker;
    tags *t = calloc(1, sizeof *t);
    if (!t)
        return host->fail(SL_ERR_NOMEM, "tags: out of memory");
    t->host = host;
    double min_length = 0;
    sl_status st = host->config_number(config, "min_length", &min_length);
    if (st == SL_ERR_NOT_FOUND)
        st = SL_OK;
    else if (st != SL_OK || min_length < 0 || min_length > 1e9)
        st = host->fail(SL_ERR_INVALID_ARG, "tags: config min_length must be a number >= 0");
    t->min_length = (size_t)min_length;
    char *stopwords = st == SL_OK ? host->config_string(config, "stopwords") : NULL;
    if (stopwords) {
        st = load_stopwords(t, stopwords);
        host->text_free(stopwords);
    }
    if (st != SL_OK) {
        tags_free(t);
        return st;
    }
    *state = t;
    return SL_OK;
}

/* The characters of a UTF-8 text (as Lua's utf8.len: no overlong forms,
 * surrogates or code points past U+10FFFF), or its bytes when it is not
 * UTF-8. */
static size_t text_length(const unsigned char *s, size_t n)
{
    static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
    size_t chars = 0;
    for (size_t i = 0; i < n; chars++) {
        unsigned c = s[i];
        size_t more = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2
                                   : (c & 0xF8) == 0xF0 ? 3 : 4;
        if (more == 4 || more >= n - i)
            return n;
        uint32_t cp = more == 0 ? c : c & (0x3Fu >> more);
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return n;
            cp = cp << 6 | (s[i + k] & 0x3Fu);
        }
        if (cp < least[more] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return n;
        i += more + 1;
    }
    return chars;
}

static bool is_word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The tags of `answer` as a JSON array in t->buf. */
static sl_status tag(tags *t, const char *answer, size_t len)
{
    /* The array is at most the answer plus quotes and commas: 3 bytes a
     * word of >= 3 bytes, so twice the answer and the brackets suffice. */
    size_t need = 2 * len + 4;
    if (need > t->cap) {
        char *grown = realloc(t->buf, need);
        if (!grown)
            return SL_ERR_NOMEM;
        t->buf = grown;
        t->cap = need;
    }
    char *out = t->buf;
    size_t o = 0;
    const char *kept[MAX_TAGS];
    size_t kept_len[MAX_TAGS];
    int n_kept = 0;
    out[o++] = '[';
    for (size_t i = 0; i < len && n_kept < MAX_TAGS;) {
        while (i < len && !is_word_byte((unsigned char)answer[i]))
            i++;
        size_t start = i;
        while (i < len && is_word_byte((unsigned char)answer[i]))
            i++;
        size_t n = i - start;
        if (n < MIN_WORD)
            continue;
        /* the word, lowercased, written where it would go in the array */
        char *w = out + o + (n_kept ? 2 : 1);
        for (size_t k = 0; k < n; k++)
            w[k] = lower(answer[start + k]);
        bool dup = is_stopword(t, w, n);
        for (int k = 0; !dup && k < n_kept; k++)
            dup = kept_len[k] == n && memcmp(kept[k], w, n) == 0;
        if (dup)
            continue;
        if (n_kept)
            out[o++] = ',';
        out[o++] = '"';
        kept[n_kept] = out + o;
        kept_len[n_kept++] = n;
        o += n;
        out[o++] = '"';
    }
    out[o++] = ']';
    out[o] = '\0';
    return SL_OK;
}

static sl_status tags_process(void *state, sl_row *const *rows, size_t n)
{
    tags *t = state;
    const sl_plugin_host *h = t->host;
    for (size_t i = 0; i < n; i++) {
        sl_row *row = rows[i];
        const char *answer = h->row_answer(row);
        if (!answer)
            answer = "";
        size_t len = strlen(answer);
        if (text_length((const unsigned char *)answer, len) < t->min_length) {
            h->row_drop(row);
            continue;
        }
        sl_status st = tag(t, answer, len);
        if (st == SL_OK)
            st = h->row_set_column_json(row, "tags", t->buf);
        if (st != SL_OK)
            h->row_fail(row, "'%s': tags could not be set (%s)", h->row_id(row),
                        st == SL_ERR_NOMEM ? "out of memory" : "invalid");
    }
    return SL_OK;
}

static void tags_close(void *state, sl_exec_end end)
{
    (void)end;
    tags_free(state);
}

SL_PLUGIN_EXPORT const sl_plugin *sluice_plugin(void);

SL_PLUGIN_EXPORT const sl_plugin *sluice_plugin(void)
{
    static const sl_plugin plugin = {SL_PLUGIN_ABI_VERSION, "tags", tags_init, tags_process,
                                     tags_close};
    return &plugin;
}
