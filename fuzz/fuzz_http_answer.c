/* fuzz/fuzz_http_answer.c — the openai engine's readers of a server's answer
 * (llm/engines/openai_parse.c) on arbitrary bytes: the input as a
 * chat.completion body, as an error body, and as a server-sent-event stream
 * fed whole, a byte at a time and in pieces of pseudo-random sizes, and a
 * completion's alternatives as choices' scores. What must hold: a stream
 * reads the same however it is cut into pieces, the text never passes its
 * bound, a server's message is one NUL-terminated line, and scores read
 * are a distribution. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "llm/engines/openai_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small, so that the fuzzer reaches the bounds. */
enum { TEXT_MAX = 200, IDLE_MAX = 64 };

typedef struct outcome {
    openai_stream s;
    bool ok;
    sl_result res;
    char why[512];
} outcome;

/* Feeds data in pieces: `piece` bytes each, or (piece 0) sizes drawn from
 * a xorshift seeded with `seed`. */
static void read_stream(const uint8_t *data, size_t size, size_t piece, uint64_t seed, outcome *o)
{
    memset(o, 0, sizeof *o);
    openai_stream_reset(&o->s, TEXT_MAX, IDLE_MAX);
    sl_buf pending = {0};
    size_t at = 0;
    while (at < size) {
        size_t n = piece;
        if (!n) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            n = 1 + (size_t)(seed % 97);
        }
        if (n > size - at)
            n = size - at;
        if (!sl_buf_append(&pending, data + at, n))
            abort();
        at += n;
        openai_stream_feed(&o->s, &pending, false, 1.0);
        if (o->s.too_large)
            break; /* the engine cuts the transfer here */
    }
    openai_stream_feed(&o->s, &pending, true, 2.0);
    if (o->s.text.len > TEXT_MAX)
        abort();
    o->ok = openai_stream_result(&o->s, 0.5, 3.0, &o->res, o->why, sizeof o->why) ==
            OPENAI_ANSWER_OK;
    sl_buf_free(&pending);
}

static void same(const outcome *a, const outcome *b)
{
    if (a->ok != b->ok || a->s.text.len != b->s.text.len ||
        (a->s.text.len && memcmp(a->s.text.data, b->s.text.data, a->s.text.len) != 0) ||
        a->s.content_chunks != b->s.content_chunks || a->s.has_usage != b->s.has_usage ||
        a->s.prompt_tokens != b->s.prompt_tokens ||
        a->s.completion_tokens != b->s.completion_tokens ||
        a->s.cached_tokens != b->s.cached_tokens || a->s.too_large != b->s.too_large ||
        strcmp(a->s.finish, b->s.finish) != 0 || strcmp(a->s.error, b->s.error) != 0 ||
        strcmp(a->s.id, b->s.id) != 0 || strcmp(a->s.model, b->s.model) != 0 ||
        a->s.created != b->s.created || strcmp(a->why, b->why) != 0)
        abort();
    if (a->ok && (a->res.generated_tokens != b->res.generated_tokens ||
                  a->res.finish_reason != b->res.finish_reason))
        abort();
}

static void release(outcome *o)
{
    if (o->ok)
        sl_result_clear(&o->res);
    openai_stream_free(&o->s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;

    sl_result res;
    char why[512];
    /* n answers in one body: each a text, or none at all. */
    sl_result three[3];
    if (openai_parse_completion(body, size, TEXT_MAX, 3, three, why, sizeof why) ==
        OPENAI_ANSWER_OK) {
        for (int k = 0; k < 3; k++) {
            if (!three[k].text)
                abort();
            sl_result_clear(&three[k]);
        }
    } else if (three[0].text) {
        abort();
    }
    if (openai_parse_completion(body, size, TEXT_MAX, 1, &res, why, sizeof why) ==
        OPENAI_ANSWER_OK) {
        if (!res.text)
            abort();
        /* A choices row's scores from the answer's alternatives, each
         * probe answered with the same alternatives: a distribution
         * whenever they are read, the probes bounded. */
        static const char *const choices[] = {"yes", "no", "1", "10", "Maybe so", "the cat",
                                              "the dog"};
        enum { N_CHOICES = 7 };
        static openai_choice_walk w;
        openai_choice_walk_init(&w, choices, N_CHOICES);
        bool read = openai_choice_walk_read(&w, "", 0, 1.0, res.logprobs, why, sizeof why);
        int answered = 0;
        while (read && w.n_probes > 0) {
            openai_choice_probe q = w.probes[--w.n_probes];
            if (q.len != strlen(q.prefix) || !(q.mass > 0) || ++answered > OPENAI_CHOICE_PROBES)
                abort();
            read = openai_choice_walk_read(&w, q.prefix, q.len, q.mass, res.logprobs, why,
                                           sizeof why);
        }
        double p[N_CHOICES], sum = 0;
        if (read && openai_choice_walk_end(&w, p, why, sizeof why)) {
            for (int i = 0; i < N_CHOICES; i++) {
                if (!(p[i] >= 0 && p[i] <= 1))
                    abort();
                sum += p[i];
            }
            if (sum < 1 - 1e-9 || sum > 1 + 1e-9)
                abort();
        }
        sl_result_clear(&res);
    }

    char msg[300];
    openai_server_message(body, size, msg, sizeof msg);
    size_t n = strnlen(msg, sizeof msg);
    if (n == sizeof msg || memchr(msg, '\n', n) || memchr(msg, '\r', n))
        abort();

    uint64_t seed = 0x9e3779b97f4a7c15ull ^ size;
    for (size_t i = 0; i < size && i < 16; i++)
        seed = seed * 31 + data[i];
    outcome whole, bytes, pieces;
    read_stream(data, size, size ? size : 1, 0, &whole);
    read_stream(data, size, 1, 0, &bytes);
    read_stream(data, size, 0, seed | 1, &pieces);
    same(&whole, &bytes);
    same(&whole, &pieces);
    release(&whole);
    release(&bytes);
    release(&pieces);
    return 0;
}
