/* fuzz/fuzz_tags.c — the tags plugin (examples/plugins/tags.c) on any
 * answer a model may write: its process() runs through a stand-in host
 * table, and what it sets is checked against a plain reference written
 * here (split at non-alphanumeric bytes, lowercase, >= 3 bytes, not a
 * stopword, first appearance, 16 at most), the JSON text it sets must parse
 * as that array, and min_length must count the answer's characters when
 * jansson calls it UTF-8 and its bytes otherwise. The first byte is
 * min_length, the rest (to a NUL) the answer. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../examples/plugins/tags.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *answer;
static char *set_json;
static int drops, fails;

static const char *fake_answer(const sl_row *row)
{
    (void)row;
    return answer;
}

static const char *fake_id(const sl_row *row)
{
    (void)row;
    return "fuzz";
}

static void fake_drop(sl_row *row)
{
    (void)row;
    drops++;
}

static void fake_fail(sl_row *row, const char *fmt, ...)
{
    (void)row, (void)fmt;
    fails++;
}

static sl_status fake_set_json(sl_row *row, const char *name, const char *json)
{
    (void)row;
    if (strcmp(name, "tags") != 0)
        abort();
    free(set_json);
    set_json = strdup(json);
    return SL_OK;
}

static const char *const stopwords[] = {"the", "and", "cat", "a1b"};

/* The reference: the tags of s as the JSON text tags.c writes. */
static char *reference(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(4 * n + 8), *words[MAX_TAGS];
    size_t o = 0, k = 0;
    out[o++] = '[';
    for (size_t i = 0; i < n && k < MAX_TAGS;) {
        size_t start = i;
        while (i < n && (unsigned char)s[i] < 0x80 && isalnum((unsigned char)s[i]))
            i++;
        if (i == start) {
            i++;
            continue;
        }
        char *w = strndup(s + start, i - start);
        for (char *c = w; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        bool skip = strlen(w) < 3;
        for (size_t j = 0; !skip && j < sizeof stopwords / sizeof *stopwords; j++)
            skip = strcmp(w, stopwords[j]) == 0;
        for (size_t j = 0; !skip && j < k; j++)
            skip = strcmp(w, words[j]) == 0;
        if (skip) {
            free(w);
            continue;
        }
        o += (size_t)sprintf(out + o, "%s\"%s\"", k ? "," : "", w);
        words[k++] = w;
    }
    strcpy(out + o, "]");
    for (size_t j = 0; j < k; j++)
        free(words[j]);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static sl_plugin_host host;
    host.row_answer = fake_answer;
    host.row_id = fake_id;
    host.row_drop = fake_drop;
    host.row_fail = fake_fail;
    host.row_set_column_json = fake_set_json;
    tags *t = calloc(1, sizeof *t);
    t->host = &host;
    t->min_length = data[0];
    for (size_t j = 0; j < sizeof stopwords / sizeof *stopwords; j++)
        if (!add_stopword(t, strdup(stopwords[j])))
            abort();
    char *text = strndup((const char *)data + 1, size - 1); /* to the first NUL */
    size_t len = strlen(text);
    answer = text;
    drops = fails = 0;
    free(set_json);
    set_json = NULL;

    /* Twice: the second call reuses the worker's grown buffer. */
    for (int round = 0; round < 2; round++) {
        sl_row *row = (sl_row *)&host;
        if (tags_process(t, &row, 1) != SL_OK || fails)
            abort();
    }
    json_t *as_text = json_stringn(text, len); /* NULL: not UTF-8 */
    size_t chars = 0;
    for (size_t i = 0; i < len; i++)
        chars += ((unsigned char)text[i] & 0xC0) != 0x80;
    size_t want_len = as_text ? chars : len;
    json_decref(as_text);
    if (text_length((const unsigned char *)text, len) != want_len)
        abort();
    if (want_len < t->min_length) {
        if (drops != 2 || set_json)
            abort();
    } else {
        char *want = reference(text);
        json_t *parsed = set_json ? json_loads(set_json, 0, NULL) : NULL;
        if (drops || !set_json || strcmp(set_json, want) != 0 || !json_is_array(parsed) ||
            json_array_size(parsed) > MAX_TAGS)
            abort();
        json_decref(parsed);
        free(want);
    }
    free(text);
    tags_close(t, SL_END_COMPLETE);
    return 0;
}
