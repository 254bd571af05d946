/* llm/engines/openai_parse.c — see openai_parse.h. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"
#include "llm/engine_impl.h"
#include "llm/engines/openai_parse.h"

enum {
    TEXT_BASE = 64 << 10,
    TEXT_PER_TOKEN = 256,
    TEXT_CEILING = 16 << 20,
    BODY_SLACK = 1 << 20,
    BODY_CEILING = 64 << 20,
    BODIES_CEILING = 256 << 20,
};

size_t openai_text_max(int max_tokens)
{
    size_t tokens = max_tokens > 0 ? (size_t)max_tokens : 0;
    if (tokens > (TEXT_CEILING - TEXT_BASE) / TEXT_PER_TOKEN)
        return TEXT_CEILING;
    return TEXT_BASE + TEXT_PER_TOKEN * tokens;
}

size_t openai_body_max(int max_tokens, int n)
{
    size_t text = openai_text_max(max_tokens);
    size_t one = text > (BODY_CEILING - BODY_SLACK) / 6 ? BODY_CEILING : 6 * text + BODY_SLACK;
    size_t answers = n > 1 ? (size_t)n : 1;
    return one > BODIES_CEILING / answers ? BODIES_CEILING : one * answers;
}

/* A finish_reason none of the known ones is kept as the server wrote it
 * (a gateway's own word says what happened better than "stop" would), so
 * it needs a home that outlives the result: this table. Bounded, since a
 * server could invent a word per answer. */
enum { FINISH_WORDS = 64, FINISH_WORD_MAX = 32 };
static pthread_mutex_t finish_mu = PTHREAD_MUTEX_INITIALIZER;
static char finish_words[FINISH_WORDS][FINISH_WORD_MAX];
static int n_finish_words;

const char *openai_finish_reason(const char *s)
{
    static const char *const known[] = {"stop",       "length",        "content_filter",
                                        "tool_calls", "function_call", "error",
                                        "abort",      "other"};
    if (!s)
        return NULL;
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(s, known[i]) == 0)
            return known[i];
    char word[FINISH_WORD_MAX];
    size_t n = 0;
    for (; s[n] && n < sizeof word - 1; n++)
        word[n] = s[n] > ' ' && s[n] < 0x7f ? s[n] : '?'; /* a metric label, a cell */
    word[n] = '\0';
    const char *found = known[sizeof known / sizeof *known - 1];
    pthread_mutex_lock(&finish_mu);
    int i = 0;
    while (i < n_finish_words && strcmp(finish_words[i], word) != 0)
        i++;
    if (i == n_finish_words && i < FINISH_WORDS)
        memcpy(finish_words[n_finish_words++], word, n + 1);
    if (i < n_finish_words)
        found = finish_words[i];
    pthread_mutex_unlock(&finish_mu);
    return found;
}

static bool is_cut(const char *finish)
{
    /* OpenRouter's "error" (its provider failed mid-answer) and vLLM's
     * "abort" (the request was dropped): the answer is not whole, and
     * another try may well be. */
    return finish && (strcmp(finish, "error") == 0 || strcmp(finish, "abort") == 0);
}

/* What an answer's parts say beyond its text: a text of text_len bytes
 * that ended with `finish` (NULL: none), a refusal (NULL or ""), tool
 * calls, reasoning_len bytes of reasoning, an error's message (NULL:
 * none). A caption, or why it is none. */
static openai_verdict judge(size_t text_len, const char *finish, const char *refusal,
                            bool tool_calls, size_t reasoning_len, const char *error, char *why,
                            size_t cap)
{
    if (is_cut(finish)) {
        snprintf(why, cap, "the answer ended with finish_reason \"%s\"%s%s (cut off)", finish,
                 error ? ": " : "", error ? error : "");
        return OPENAI_ANSWER_CUT;
    }
    if (refusal && *refusal) {
        snprintf(why, cap, "the model refused: %s", refusal);
        return OPENAI_ANSWER_BAD;
    }
    if (finish && strcmp(finish, "content_filter") == 0) {
        snprintf(why, cap, "the server's content filter stopped the answer (finish_reason "
                 "\"content_filter\")");
        return OPENAI_ANSWER_BAD;
    }
    if (text_len > 0)
        return OPENAI_ANSWER_OK;
    if (tool_calls || (finish && (strcmp(finish, "tool_calls") == 0 ||
                                  strcmp(finish, "function_call") == 0))) {
        snprintf(why, cap, "the server answered with a tool call, not text (does the request "
                 "or the server's chat template offer tools?)");
        return OPENAI_ANSWER_BAD;
    }
    if (reasoning_len > 0) {
        bool length = finish && strcmp(finish, "length") == 0;
        snprintf(why, cap, "the answer was all reasoning (%zu bytes of reasoning_content, no "
                 "content)%s",
                 reasoning_len,
                 length ? ": it reached max_tokens while thinking; raise --max-tokens" : "");
        return OPENAI_ANSWER_BAD;
    }
    return OPENAI_ANSWER_OK;
}

/* A message's or delta's reasoning: reasoning_content (vLLM, SGLang,
 * llama-server, DeepSeek) or reasoning (vLLM's newer name, OpenRouter). */
static size_t reasoning_len(json_t *message)
{
    size_t n = json_string_length(json_object_get(message, "reasoning_content"));
    return n ? n : json_string_length(json_object_get(message, "reasoning"));
}

/* A count from the answer: a JSON integer within int, else 0. */
static int count_of(json_t *v)
{
    json_int_t n = json_integer_value(v);
    return n >= 0 && n <= INT32_MAX ? (int)n : 0;
}

/* A content given as an array of parts (Mistral's reasoning models:
 * [{"type": "thinking", ...}, {"type": "text", "text": "..."}]) as the
 * string of its text parts, joined; NULL when it holds none or out of
 * memory (*nomem). The caller owns the result (json_decref). */
static json_t *content_of_parts(json_t *parts, bool *nomem)
{
    sl_buf text = {0};
    size_t i;
    json_t *part;
    bool any = false;
    *nomem = false;
    json_array_foreach(parts, i, part) {
        json_t *t = json_object_get(part, "text");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!json_is_string(t) || !type || strcmp(type, "text") != 0)
            continue;
        any = true;
        if (!sl_buf_append(&text, json_string_value(t), json_string_length(t))) {
            *nomem = true;
            break;
        }
    }
    json_t *joined = any && !*nomem
                         ? json_stringn_nocheck(text.data ? (const char *)text.data : "", text.len)
                         : NULL;
    *nomem |= any && !joined;
    sl_buf_free(&text);
    return joined;
}

/* The rest of parse_choice, once the content is a string or null. */
static openai_verdict parse_message(json_t *choice, json_t *message, json_t *content,
                                    const char *error, size_t text_max, sl_result *out,
                                    char *why, size_t cap)
{
    if (json_is_string(content) && json_string_length(content) > text_max) {
        snprintf(why, cap, "its text passed %zu bytes, the bound for max_tokens (does the server "
                 "ignore max_tokens?)",
                 text_max);
        return OPENAI_ANSWER_BAD;
    }
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    json_t *calls = json_object_get(message, "tool_calls");
    openai_verdict v =
        judge(json_string_length(content), finish,
              json_string_value(json_object_get(message, "refusal")),
              json_array_size(calls) > 0 || json_is_object(json_object_get(message, "function_call")),
              reasoning_len(message), error, why, cap);
    if (v != OPENAI_ANSWER_OK)
        return v;
    /* As the embedded engine keeps a caption: a NUL becomes U+FFFD. */
    out->text = json_is_string(content)
                    ? sl_utf8_sanitize(json_string_value(content), json_string_length(content))
                    : sl_strdup("");
    out->finish_reason = openai_finish_reason(finish);
    json_t *logprobs = json_object_get(choice, "logprobs");
    bool lp_ok = !json_is_object(logprobs) ||
                 (out->logprobs = sl_json_dump(logprobs, JSON_COMPACT, NULL)) != NULL;
    if (!out->text || !lp_ok) {
        snprintf(why, cap, "out of memory");
        return OPENAI_ANSWER_BAD;
    }
    return OPENAI_ANSWER_OK;
}

/* choices[] element `choice` into *out; else *why (`at` names it), `error`
 * the body's error message (NULL: none). */
static openai_verdict parse_choice(json_t *choice, const char *at, const char *error,
                                   size_t text_max, sl_result *out, char *why, size_t cap)
{
    json_t *message = json_object_get(choice, "message");
    json_t *content = json_object_get(message, "content");
    /* A refusal or a tool call may come without any content. */
    if (json_is_object(message) && !content)
        content = json_null();
    json_t *joined = NULL;
    if (json_is_array(content)) {
        bool nomem;
        joined = content_of_parts(content, &nomem);
        if (nomem) {
            snprintf(why, cap, "out of memory");
            return OPENAI_ANSWER_BAD;
        }
        content = joined ? joined : json_null();
    }
    if (!json_is_object(message) || !(json_is_string(content) || json_is_null(content))) {
        /* A 2xx that is an error object (a gateway's upstream failed): its words. */
        if (error)
            snprintf(why, cap, "the answer is an error, not a completion: %s", error);
        else
            snprintf(why, cap, "the answer has no %s.message.content", at);
        json_decref(joined);
        return OPENAI_ANSWER_BAD;
    }
    openai_verdict v = parse_message(choice, message, content, error, text_max, out, why, cap);
    json_decref(joined);
    return v;
}

/* An error object's (or string's) message beside an answer; NULL: none. */
static const char *error_message(json_t *err)
{
    return json_is_string(err) ? json_string_value(err)
                               : json_string_value(json_object_get(err, "message"));
}

/* Where choices[pos] goes among n: its "index" when that is 0..n-1, else
 * its position (a server that leaves "index" out, or numbers them all 0). */
static void place_choices(json_t *choices, int n, int *slot_of)
{
    bool by_index = true, seen[SL_MAX_ANSWERS] = {false};
    for (int pos = 0; pos < n; pos++) {
        json_t *index = json_object_get(json_array_get(choices, (size_t)pos), "index");
        json_int_t k = json_is_integer(index) ? json_integer_value(index) : -1;
        if (k < 0 || k >= n || seen[k]) {
            by_index = false;
            break;
        }
        seen[k] = true;
        slot_of[pos] = (int)k;
    }
    for (int pos = 0; !by_index && pos < n; pos++)
        slot_of[pos] = pos;
}

openai_verdict openai_parse_completion(const char *body, size_t len, size_t text_max, int n,
                                       sl_result *out, char *why, size_t cap)
{
    if (n < 1 || n > SL_MAX_ANSWERS) {
        snprintf(why, cap, "%d answers were asked for (1 to %d)", n, SL_MAX_ANSWERS);
        return OPENAI_ANSWER_BAD;
    }
    for (int k = 0; k < n; k++)
        out[k] = (sl_result){0};
    json_error_t jerr;
    /* A model may well generate a NUL byte (a byte token): "\u0000". A
     * figure no jansson value holds (usage.prompt_tokens 1e400, or an
     * integer past int64) lost the whole answer as "not JSON": read
     * leniently, it is no count and counts 0. */
    json_t *root = sl_json_load_data(body ? body : "", body ? len : 0, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        /* A connection closed mid-answer (no Content-Length to tell) ends
         * the body inside its JSON: cut, not the server's word. */
        if (json_error_code(&jerr) == json_error_premature_end_of_input) {
            snprintf(why, cap, "the body ends inside its JSON, at byte %zu (cut off)", len);
            return OPENAI_ANSWER_CUT;
        }
        snprintf(why, cap, "the answer is not JSON (%s)", jerr.text);
        return OPENAI_ANSWER_BAD;
    }
    json_t *choices = json_object_get(root, "choices");
    size_t got = json_array_size(choices);
    if (n > 1 && got != (size_t)n) {
        snprintf(why, cap, "it has %zu of the %d answers asked for with \"n\" (a server that "
                 "does not take \"n\" needs --split-samples)",
                 got, n);
        json_decref(root);
        return OPENAI_ANSWER_BAD;
    }
    int slot_of[SL_MAX_ANSWERS];
    place_choices(choices, n, slot_of);
    const char *error = error_message(json_object_get(root, "error"));
    openai_verdict v = OPENAI_ANSWER_OK;
    for (int pos = 0; v == OPENAI_ANSWER_OK && pos < n; pos++) {
        char at[32];
        snprintf(at, sizeof at, "choices[%d]", pos);
        v = parse_choice(json_array_get(choices, (size_t)pos), at, error, text_max,
                         &out[slot_of[pos]], why, cap);
    }
    bool ok = v == OPENAI_ANSWER_OK;
    /* Usage is the request's: each answer's prompt is the same, and the
     * completion tokens are shared out (a server counts them per request;
     * llama-server 0.3.36 counts the first answer's only). */
    json_t *usage = json_object_get(root, "usage");
    int prompt = count_of(json_object_get(usage, "prompt_tokens"));
    int generated = count_of(json_object_get(usage, "completion_tokens"));
    int cached = count_of(json_object_get(json_object_get(usage, "prompt_tokens_details"),
                                          "cached_tokens"));
    for (int k = 0; ok && k < n; k++) {
        out[k].prompt_tokens = prompt;
        out[k].cached_tokens = cached;
        out[k].generated_tokens = generated / n + (k < generated % n);
    }
    json_decref(root);
    if (!ok)
        for (int k = 0; k < n; k++)
            sl_result_clear(&out[k]);
    return v;
}

/* Does `key` read as choice c: 2 as written, 1 with c's first letter's
 * case swapped, 0 not? Leading white space of c is not compared. */
static int same_as(const char *key, size_t len, const char *c)
{
    c += strspn(c, " \t\r\n");
    if (strlen(c) != len)
        return 0;
    if (memcmp(key, c, len) == 0)
        return 2;
    char other = sl_choice_other_case(c[0]);
    return other && key[0] == other && memcmp(key + 1, c + 1, len - 1) == 0;
}

/* Does choice c begin with `key` (first letter in either case), and go on? */
static bool begins(const char *key, size_t len, const char *c)
{
    c += strspn(c, " \t\r\n");
    if (strlen(c) <= len)
        return false;
    char other = sl_choice_other_case(c[0]);
    return (key[0] == c[0] || (other && key[0] == other)) && memcmp(key + 1, c + 1, len - 1) == 0;
}

/* The white space text (len bytes) begins with: not compared with the
 * choices. */
static size_t space_len(const char *text, size_t len)
{
    size_t skip = 0;
    while (skip < len && strchr(" \t\r\n", text[skip]))
        skip++;
    return skip;
}

/* How text (leading white space dropped) reads among the choices: *exact
 * the one choice it is (as written, else first letter's case swapped;
 * -1: none), *begun how many it begins and goes on in, *one the last of
 * those. */
static void classify(const char *text, size_t len, const char *const *choices, int n,
                     int *exact, int *begun, int *one)
{
    size_t skip = space_len(text, len);
    const char *key = text + skip;
    len -= skip;
    *exact = -1;
    *begun = 0;
    *one = -1;
    if (len == 0)
        return;
    int best_how = 0, ties = 0;
    for (int i = 0; i < n; i++) {
        int how = same_as(key, len, choices[i]);
        if (how > best_how) {
            *exact = i;
            best_how = how;
            ties = 1;
        } else if (how && how == best_how) {
            ties++;
        }
        if (begins(key, len, choices[i])) {
            *one = i;
            ++*begun;
        }
    }
    if (ties > 1)
        *exact = -1;
}

/* A token's alternatives: its text (bytes) and probability. */
typedef struct alternative {
    char text[OPENAI_CHOICE_PREFIX];
    size_t len;
    double p;
} alternative;

/* The first token's alternatives of choices[0].logprobs (JSON text) into
 * alts (at most max; NUL bytes and texts too long are left out); -1 when
 * there are none. */
static int read_alternatives(const char *logprobs_json, alternative *alts, int max)
{
    json_t *root = logprobs_json ? json_loads(logprobs_json, 0, NULL) : NULL;
    json_t *first = json_array_get(json_object_get(root, "content"), 0);
    json_t *list = json_object_get(first, "top_logprobs");
    if (!json_is_array(list) || json_array_size(list) == 0) {
        json_decref(root);
        return -1;
    }
    int n = 0;
    size_t k;
    json_t *alt;
    json_array_foreach(list, k, alt) {
        if (n == max)
            break;
        json_t *bytes = json_object_get(alt, "bytes"), *lp = json_object_get(alt, "logprob");
        json_t *token = json_object_get(alt, "token");
        alternative *a = &alts[n];
        a->len = 0;
        bool fits = true;
        if (json_is_array(bytes)) {
            fits = json_array_size(bytes) < sizeof a->text;
            size_t b;
            json_t *v;
            json_array_foreach(bytes, b, v) if (fits) a->text[a->len++] =
                (char)json_integer_value(v);
        } else if (json_is_string(token)) {
            a->len = json_string_length(token);
            fits = a->len < sizeof a->text;
            if (fits)
                memcpy(a->text, json_string_value(token), a->len);
        }
        /* A log-probability above 0 is no probability (a little above:
         * rounding, taken as 0). */
        if (!fits || !json_is_number(lp) || json_number_value(lp) > 1e-3 ||
            memchr(a->text, '\0', a->len))
            continue;
        a->text[a->len] = '\0';
        a->p = fmin(1.0, exp(json_number_value(lp)));
        n++;
    }
    json_decref(root);
    return n;
}

void openai_choice_walk_init(openai_choice_walk *w, const char *const *choices, int n)
{
    memset(w, 0, sizeof *w);
    w->choices = choices;
    w->n = n;
}

/* Mass m for text t's candidates (the one it is and those it begins: t
 * has something to compare once its white space is dropped) shared
 * evenly: a probe not made. */
static void split_evenly(openai_choice_walk *w, int exact, const char *t, size_t len, double m)
{
    size_t skip = space_len(t, len);
    int who[SL_MAX_CHOICES], k = 0;
    for (int i = 0; i < w->n; i++)
        if (i == exact || begins(t + skip, len - skip, w->choices[i]))
            who[k++] = i;
    for (int i = 0; i < k; i++)
        w->p[who[i]] += m / k;
}

bool openai_choice_walk_read(openai_choice_walk *w, const char *prefix, size_t prefix_len,
                             double mass, const char *logprobs_json, char *why, size_t cap)
{
    alternative alts[OPENAI_CHOICE_TOP];
    int n_alts = read_alternatives(logprobs_json, alts, OPENAI_CHOICE_TOP);
    if (n_alts < 0) {
        snprintf(why, cap, "its answer has no top_logprobs for the %s token (does the server "
                 "give logprobs%s?)",
                 prefix_len ? "next" : "first",
                 prefix_len ? " and continue an assistant message (continue_final_message)" : "");
        return false;
    }
    bool first = prefix_len == 0;
    if (first) {
        w->n_alts = n_alts;
        snprintf(w->best_seen, sizeof w->best_seen, "%.60s", n_alts ? alts[0].text : "");
    }
    /* The choice the prefix itself is (a probe of "1" among 1 and 10):
     * it takes what does not go on into another. */
    int stop = -1, b0, o0;
    if (!first)
        classify(prefix, prefix_len, w->choices, w->n, &stop, &b0, &o0);
    size_t kept = prefix_len - space_len(prefix, prefix_len);
    /* Each alternative read as the prefix and it (t): how it reads among
     * the choices, and whether it counts (after a prefix, only what
     * lengthens it towards a choice). The first token's that count make
     * the root's mass, a probe's its share going on. */
    struct {
        size_t len;
        int exact, begun, one;
    } seen[OPENAI_CHOICE_TOP];
    double goes_on = 0;
    char t[OPENAI_CHOICE_PREFIX];
    for (int k = 0; k < n_alts; k++) {
        seen[k].len = prefix_len + alts[k].len;
        seen[k].exact = -1;
        seen[k].begun = 0;
        if (seen[k].len >= sizeof t)
            continue;
        memcpy(t, prefix, prefix_len);
        memcpy(t + prefix_len, alts[k].text, alts[k].len);
        classify(t, seen[k].len, w->choices, w->n, &seen[k].exact, &seen[k].begun, &seen[k].one);
        bool counts = (seen[k].exact >= 0 || seen[k].begun > 0) &&
                      (first || seen[k].len - space_len(t, seen[k].len) > kept);
        if (!counts)
            seen[k].exact = -1, seen[k].begun = 0;
        else if (first)
            w->root += mass * alts[k].p;
        else
            goes_on += alts[k].p;
    }
    for (int k = 0; k < n_alts; k++) {
        int exact = seen[k].exact, begun = seen[k].begun;
        if (exact < 0 && begun == 0)
            continue;
        size_t len = seen[k].len;
        double m = mass * alts[k].p;
        memcpy(t, prefix, prefix_len);
        memcpy(t + prefix_len, alts[k].text, alts[k].len);
        t[len] = '\0';
        if (begun == 0) {
            w->p[exact] += m;
        } else if (exact < 0 && begun == 1) {
            w->p[seen[k].one] += m; /* "Ye" for "yes": nothing else goes on from it */
        } else if (m >= OPENAI_CHOICE_NEGLIGIBLE * w->root && w->made < OPENAI_CHOICE_PROBES &&
                   sl_utf8_valid(t, len)) { /* a prefix is sent as JSON text */
            openai_choice_probe *q = &w->probes[w->n_probes++];
            memcpy(q->prefix, t, len + 1);
            q->len = len;
            q->mass = m;
            w->made++;
        } else {
            split_evenly(w, exact, t, len, m);
        }
    }
    if (stop >= 0)
        w->p[stop] += mass * fmax(0.0, 1.0 - goes_on);
    return true;
}

bool openai_choice_walk_end(openai_choice_walk *w, double *p, char *why, size_t cap)
{
    double total = 0;
    for (int i = 0; i < w->n; i++)
        total += w->p[i];
    if (!(total > 0)) {
        snprintf(why, cap, "none of the choices is among the %d most likely first tokens (the "
                 "most likely: '%s')",
                 w->n_alts, w->best_seen);
        return false;
    }
    for (int i = 0; i < w->n; i++)
        p[i] = w->p[i] / total;
    return true;
}

void openai_server_message(const char *body, size_t len, char *out, size_t cap)
{
    if (cap == 0)
        return;
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *msg = NULL;
    if (root) {
        json_t *err = json_object_get(root, "error");
        if (json_is_object(err))
            msg = json_string_value(json_object_get(err, "message"));
        else if (json_is_string(err))
            msg = json_string_value(err);
        if (!msg)
            msg = json_string_value(json_object_get(root, "message"));
        if (!msg)
            msg = json_string_value(json_object_get(root, "detail"));
    }
    if (msg)
        snprintf(out, cap, "%s", msg);
    else if (body && len)
        snprintf(out, cap, "%.*s", (int)(len < 300 ? len : 300), body);
    else
        snprintf(out, cap, "(empty body)");
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    json_decref(root);
}

void openai_hide_secret(char *s, size_t cap, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    if (n == 0 || cap == 0)
        return;
    static const char mask[] = "***";
    const size_t m = sizeof mask - 1;
    for (char *at = strstr(s, secret); at; at = strstr(at + m, secret)) {
        size_t before = (size_t)(at - s), after = strlen(at + n);
        if (before + m >= cap) { /* no room for the mask: the string ends here */
            *at = '\0';
            return;
        }
        size_t keep = after < cap - 1 - before - m ? after : cap - 1 - before - m;
        memmove(at + m, at + n, keep);
        memcpy(at, mask, m);
        at[m + keep] = '\0';
    }
}

/* --- streams -------------------------------------------------------------------------- */

size_t openai_idle_max(int max_tokens)
{
    enum { IDLE_BASE = 10000, IDLE_CEILING = 1 << 30 };
    size_t tokens = max_tokens > 0 ? (size_t)max_tokens : 0;
    return tokens > IDLE_CEILING - IDLE_BASE ? IDLE_CEILING : IDLE_BASE + tokens;
}

void openai_stream_reset(openai_stream *s, size_t text_max, size_t idle_max)
{
    sl_buf text = s->text, logprobs = s->logprobs;
    text.len = logprobs.len = 0;
    *s = (openai_stream){.text = text, .logprobs = logprobs, .text_max = text_max,
                         .idle_max = idle_max, .prev_blank = true};
}

void openai_stream_free(openai_stream *s)
{
    if (s) {
        sl_buf_free(&s->text);
        sl_buf_free(&s->logprobs);
    }
}

/* A chunk's choices[0].logprobs.content entries, appended to s->logprobs
 * (the entries' JSON text, comma-separated). */
static void stream_logprobs(openai_stream *s, json_t *choice)
{
    json_t *content = json_object_get(json_object_get(choice, "logprobs"), "content");
    size_t i;
    json_t *entry;
    json_array_foreach(content, i, entry) {
        size_t len = 0;
        char *text = sl_json_dump(entry, JSON_COMPACT, &len);
        bool ok = text != NULL;
        if (ok && len + 1 > OPENAI_LOGPROBS_MAX - s->logprobs.len)
            s->logprobs_too_large = true;
        else if (ok)
            ok = (!s->logprobs.len || sl_buf_append(&s->logprobs, ",", 1)) &&
                 sl_buf_append(&s->logprobs, text, len);
        sl_free(text);
        if (!ok)
            snprintf(s->error, sizeof s->error, "out of memory");
        if (!ok || s->logprobs_too_large)
            return;
        s->has_logprobs = true;
    }
}

/* One "data:" event: a chat.completion.chunk, an error event, or something
 * else (a keep-alive or an extension) that says nothing. True when it
 * brought content (the caption's text). */
static bool stream_chunk(openai_stream *s, const char *json, size_t len, double now)
{
    /* Leniently, as a whole answer (openai_parse_completion): the chunk
     * with the last text may hold the usage too. */
    json_error_t jerr;
    json_t *root = sl_json_load_data(json, len, JSON_ALLOW_NUL, &jerr);
    s->events++;
    if (!root) {
        /* Not JSON at all (a proxy's keep-alive word) says nothing, and the
         * end checks that some chunk came; but an object that does not
         * parse is a chunk whose text would be lost unseen (a character's
         * bytes split over two chunks, a lone surrogate escape). */
        size_t lead = 0;
        while (lead < len && (json[lead] == ' ' || json[lead] == '\t'))
            lead++;
        if (lead < len && json[lead] == '{' && !s->bad_event) {
            s->bad_event = s->events;
            snprintf(s->bad_json, sizeof s->bad_json, "%s", jerr.text);
        }
        return false;
    }
    json_t *err = json_object_get(root, "error");
    if (err && !s->error[0]) {
        const char *msg = error_message(err);
        snprintf(s->error, sizeof s->error, "%s", msg ? msg : "an error event");
        for (char *c = s->error; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
    }
    /* A chunk's identity, from the first that has it (each chunk repeats it). */
    const char *id = json_string_value(json_object_get(root, "id"));
    if (id && !s->id[0] && strlen(id) < sizeof s->id && sl_utf8_valid(id, strlen(id)))
        snprintf(s->id, sizeof s->id, "%s", id);
    const char *model = json_string_value(json_object_get(root, "model"));
    if (model && !s->model[0] && strlen(model) < sizeof s->model &&
        sl_utf8_valid(model, strlen(model)))
        snprintf(s->model, sizeof s->model, "%s", model);
    json_t *created = json_object_get(root, "created");
    if (!s->created && json_is_integer(created) && json_integer_value(created) > 0)
        s->created = (long long)json_integer_value(created);
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    json_t *delta = json_object_get(choice, "delta");
    json_t *content = json_object_get(delta, "content");
    const char *refusal = json_string_value(json_object_get(delta, "refusal"));
    size_t had = strlen(s->refusal);
    if (refusal && had < sizeof s->refusal - 1)
        snprintf(s->refusal + had, sizeof s->refusal - had, "%s", refusal);
    bool tool_call = json_array_size(json_object_get(delta, "tool_calls")) > 0 ||
                     json_is_object(json_object_get(delta, "function_call"));
    s->tool_calls |= tool_call;
    s->reasoning += reasoning_len(delta);
    bool said = false;
    /* Mistral's reasoning models stream their parts as arrays too: the
     * text parts are the content, the thinking ones not. */
    bool nomem = false;
    json_t *joined = json_is_array(content) ? content_of_parts(content, &nomem) : NULL;
    if (nomem)
        snprintf(s->error, sizeof s->error, "out of memory");
    if (joined)
        content = joined;
    size_t n = json_string_length(content);
    if (json_is_string(content) && n > 0) {
        if (n > s->text_max - s->text.len)
            s->too_large = true;
        else if (!sl_buf_append(&s->text, json_string_value(content), n))
            snprintf(s->error, sizeof s->error, "out of memory");
        if (!s->first_token_at)
            s->first_token_at = now;
        s->last_token_at = now;
        s->content_chunks++;
        said = true;
    }
    json_decref(joined);
    stream_logprobs(s, choice);
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    if (finish)
        snprintf(s->finish, sizeof s->finish, "%s", finish);
    json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage)) {
        s->has_usage = true;
        s->prompt_tokens = count_of(json_object_get(usage, "prompt_tokens"));
        s->completion_tokens = count_of(json_object_get(usage, "completion_tokens"));
        json_t *details = json_object_get(usage, "prompt_tokens_details");
        s->cached_tokens = count_of(json_object_get(details, "cached_tokens"));
    }
    json_decref(root);
    return said;
}

/* One more line without text; its start kept to show what the server sent. */
static void stream_idle(openai_stream *s, const char *line, size_t len)
{
    size_t n = len < sizeof s->idle_line - 1 ? len : sizeof s->idle_line - 1;
    for (size_t i = 0; i < n; i++)
        s->idle_line[i] = line[i] >= 0x20 && line[i] < 0x7f ? line[i] : '?';
    s->idle_line[n] = '\0';
    if (++s->idle > s->idle_max)
        s->stuck = true;
}

void openai_stream_feed(openai_stream *s, sl_buf *pending, bool last, double now)
{
    size_t pos = 0;
    const char *buf = (const char *)pending->data;
    while (pos < pending->len && !s->too_large && !s->stuck) {
        /* A line arriving in many pieces is searched once, not once a piece. */
        size_t from = pos == 0 && s->scanned <= pending->len ? s->scanned : pos;
        const char *nl = memchr(buf + from, '\n', pending->len - from);
        if (!nl && !last) {
            s->scanned = pending->len - pos;
            break;
        }
        size_t end = nl ? (size_t)(nl - buf) : pending->len, stop = end;
        if (stop > pos && buf[stop - 1] == '\r')
            stop--;
        bool said = false;
        if (stop - pos >= 5 && memcmp(buf + pos, "data:", 5) == 0) {
            size_t at = pos + 5;
            if (at < stop && buf[at] == ' ')
                at++;
            if (stop - at == 6 && memcmp(buf + at, "[DONE]", 6) == 0)
                s->done = true;
            else
                said = stream_chunk(s, buf + at, stop - at, now);
        }
        /* A blank line ends each event, and is part of it; only one
         * after another blank line is one more line that says nothing. */
        bool blank = stop == pos;
        if (!said && (!blank || s->prev_blank))
            stream_idle(s, buf + pos, stop - pos);
        s->prev_blank = blank;
        pos = nl ? end + 1 : end;
        s->scanned = 0;
    }
    if (pos) {
        memmove(pending->data, pending->data + pos, pending->len - pos);
        pending->len -= pos;
        if (s->scanned > pending->len)
            s->scanned = 0;
    }
}

openai_verdict openai_stream_result(openai_stream *s, double submitted, double now,
                                    sl_result *out, char *why, size_t cap)
{
    if (s->too_large) {
        snprintf(why, cap, "its text passed %zu bytes, the bound for max_tokens (does the server "
                 "ignore max_tokens?)",
                 s->text_max);
        return OPENAI_ANSWER_BAD;
    }
    if (s->stuck) {
        snprintf(why, cap, "its stream passed %zu lines without text (keep-alive comments, "
                 "deltas without content, blank lines), the bound for max_tokens: the server "
                 "sends and does not answer (the last: '%s', after %d content chunk%s)",
                 s->idle_max, s->idle_line, s->content_chunks, s->content_chunks == 1 ? "" : "s");
        return OPENAI_ANSWER_BAD;
    }
    if (s->logprobs_too_large) {
        snprintf(why, cap, "its log-probabilities passed %d bytes", OPENAI_LOGPROBS_MAX);
        return OPENAI_ANSWER_BAD;
    }
    if (s->error[0] && !is_cut(s->finish)) {
        snprintf(why, cap, "the stream carried an error: %s", s->error);
        return OPENAI_ANSWER_BAD;
    }
    /* A server ends every answer with a finish_reason, then [DONE]: a
     * stream with neither was cut (a connection closed cleanly mid-answer
     * reads as a whole transfer), whatever text came. */
    if (!s->finish[0] && !s->done) {
        snprintf(why, cap, "the stream ended without a finish_reason or data: [DONE], after %d "
                 "content chunk%s (cut off)",
                 s->content_chunks, s->content_chunks == 1 ? "" : "s");
        return OPENAI_ANSWER_CUT;
    }
    if (s->bad_event) {
        snprintf(why, cap, "event %d of its stream is not JSON (%s): its text would be lost",
                 s->bad_event, s->bad_json);
        return OPENAI_ANSWER_BAD;
    }
    if (!s->finish[0] && !s->content_chunks) {
        snprintf(why, cap, "the stream held no chat.completion.chunk");
        return OPENAI_ANSWER_BAD;
    }
    openai_verdict v = judge(s->text.len, s->finish[0] ? s->finish : NULL, s->refusal,
                             s->tool_calls, s->reasoning, s->error[0] ? s->error : NULL, why, cap);
    if (v != OPENAI_ANSWER_OK)
        return v;
    *out = (sl_result){0};
    out->text = sl_utf8_sanitize(s->text.data ? (const char *)s->text.data : "", s->text.len);
    if (out->text && s->has_logprobs) {
        size_t n = s->logprobs.len + sizeof "{\"content\":[]}";
        if ((out->logprobs = sl_malloc(n)))
            snprintf(out->logprobs, n, "{\"content\":[%.*s]}", (int)s->logprobs.len,
                     (const char *)s->logprobs.data);
    }
    if (!out->text || (s->has_logprobs && !out->logprobs)) {
        sl_result_clear(out);
        snprintf(why, cap, "out of memory");
        return OPENAI_ANSWER_BAD;
    }
    out->finish_reason = openai_finish_reason(s->finish[0] ? s->finish : NULL);
    /* Without usage (a server that ignores stream_options), one token per
     * content chunk: what servers send when they stream token by token. */
    out->prompt_tokens = s->prompt_tokens;
    out->generated_tokens = s->has_usage ? s->completion_tokens : s->content_chunks;
    out->cached_tokens = s->cached_tokens;
    double first = s->first_token_at ? s->first_token_at : now;
    out->ttft_ms = (first - submitted) * 1e3;
    out->generate_ms = ((s->last_token_at ? s->last_token_at : now) - first) * 1e3;
    return OPENAI_ANSWER_OK;
}

/* --- forwarded bodies ----------------------------------------------------------------- */

json_t *openai_forward_body(const char *body, size_t len, const char *model, bool stream,
                            char *why, size_t cap)
{
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", body ? len : 0,
                              JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(root)) {
        if (root)
            snprintf(why, cap, "is not a JSON object");
        else
            snprintf(why, cap, "is not JSON (%s, at byte %d)", jerr.text, jerr.position);
        json_decref(root);
        return NULL;
    }
    if (!json_is_array(json_object_get(root, "messages"))) {
        snprintf(why, cap, "has no \"messages\" array");
        json_decref(root);
        return NULL;
    }
    int bad = 0;
    if (!json_object_get(root, "model"))
        bad |= json_object_set_new(root, "model", json_string(model ? model : "default"));
    bad |= json_object_set_new(root, "stream", json_boolean(stream));
    if (stream) {
        /* The token counts come in a last chunk (vLLM needs asking). */
        json_t *opts = json_object_get(root, "stream_options");
        if (!json_is_object(opts))
            bad |= json_object_set_new(root, "stream_options", opts = json_object());
        bad |= !opts || json_object_set_new(opts, "include_usage", json_true());
    } else {
        json_object_del(root, "stream_options");
    }
    if (bad) {
        json_decref(root);
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    return root;
}
