/* llm/engines/openai_parse.h — the openai engine's readers of what a server
 * answers, apart from any socket: a chat.completion body, an error body's
 * message, a stream of server-sent events fed in pieces of any size, and the
 * bounds put on each (a server that never stops must not exhaust memory);
 * and the one reader of what a caller sends, a whole request body to
 * forward. Pure but for the table of finish reasons (openai_finish_reason:
 * process-wide, locked); no I/O; one openai_stream per
 * request, used by one thread at a time; the caller owns every struct and
 * buffer. Used by openai.c and by the fuzz targets fuzz/fuzz_http_answer.c
 * and fuzz/fuzz_openai_body.c. */
#ifndef SL_LLM_OPENAI_PARSE_H
#define SL_LLM_OPENAI_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "core/buf.h"
#include "sluice/engine.h"

/* Bounds on an answer, from the request's max_tokens: the text (content) at
 * most 64 KiB + 256 bytes a token (no vocabulary has longer tokens), 16 MiB
 * at most; its JSON (a 2xx body, or one event of a stream) at most 6 times
 * that (escapes such as \u0000) + 1 MiB, 64 MiB at most, n times that for a
 * request of n answers (256 MiB at most). An error answer is kept only for
 * its message: 64 KiB. */
size_t openai_text_max(int max_tokens);
size_t openai_body_max(int max_tokens, int n);
enum { OPENAI_ERROR_BODY_MAX = 64 << 10 };
/* A streamed answer's log-probabilities at most (20 alternatives a token
 * take about 2 KiB of JSON). */
enum { OPENAI_LOGPROBS_MAX = 64 << 20 };
/* A stream's lines that bring no content (keep-alive comments, deltas
 * without content: reasoning, the role's, empty ones; a blank line after a
 * blank line, the blank line ending an event being part of it) at most:
 * max_tokens (a reasoning model sends a delta a token of its reasoning) +
 * 10000 (a keep-alive a second would take hours to reach it), 2^30 at
 * most. A server past it is stuck sending nothing, which would otherwise
 * hold each attempt to --request-timeout. */
size_t openai_idle_max(int max_tokens);

/* What an answer read is worth. */
typedef enum openai_verdict {
    OPENAI_ANSWER_OK,  /* an answer: keep it */
    OPENAI_ANSWER_BAD, /* none, and the same request would get the same: fail the row */
    OPENAI_ANSWER_CUT, /* cut or aborted mid-answer (a body ending inside its JSON, a
                          stream without its end, finish_reason "error" or "abort"):
                          worth sending again */
} openai_verdict;

/* An answer's finish_reason as sl_result keeps it: NULL for none; the
 * server's word otherwise, as a string that lives as long as the process
 * (the known ones, and up to 64 others kept as written: printable ASCII,
 * at most 31 bytes; past those 64, "other": the words are metric labels
 * too). Thread-safe. */
const char *openai_finish_reason(const char *s);

/* A 2xx body (a chat.completion) of n answers (1 to SL_MAX_ANSWERS: the
 * request's "n") into out[0..n-1] (the caller's, each cleared with
 * sl_result_clear: text, and the choice's logprobs as JSON text when it is
 * an object), in the order of the choices' "index" (their positions when
 * those are not 0..n-1 once each); the usage's prompt and cached tokens are
 * each answer's, its completion tokens shared out evenly. With n 1 only
 * choices[0] is read. OPENAI_ANSWER_OK, else (nothing left in out) with
 * *why: BAD when it is not one, has another number of choices than n > 1,
 * a content longer than text_max, or an answer that is no caption (a
 * refusal, the content filter's stop, a tool call, reasoning without
 * content); CUT when the body ends inside its JSON or an answer ended with
 * finish_reason "error" or "abort". */
openai_verdict openai_parse_completion(const char *body, size_t len, size_t text_max, int n,
                                       sl_result *out, char *why, size_t cap);

/* The server's own words from an error body into out (one line, at most
 * cap - 1 bytes): OpenAI's {"error":{"message"}}, vLLM's {"message"},
 * FastAPI's {"detail"}; else the body's first 300 bytes. */
void openai_server_message(const char *body, size_t len, char *out, size_t cap);

/* Replaces each occurrence of `secret` in the string s (of cap bytes) by
 * "***", in place, cutting the end if it no longer fits: what a server
 * echoes of the API key (an error body quoting the Authorization header)
 * never reaches a message, a row or a log. NULL or "" secret: nothing. */
void openai_hide_secret(char *s, size_t cap, const char *secret);

/* A streamed answer being read. */
typedef struct openai_stream {
    sl_buf text;             /* the content so far, at most text_max bytes */
    size_t text_max;
    size_t scanned;          /* bytes of the pending input searched for a newline */
    double first_token_at;   /* 0: no content yet */
    double last_token_at;
    int content_chunks;
    int prompt_tokens, completion_tokens, cached_tokens;
    bool has_usage;
    bool too_large;          /* the content passed text_max (the rest was dropped) */
    size_t idle, idle_max;   /* lines without text so far, and their bound */
    bool stuck;              /* idle passed idle_max: the rest was not read */
    char idle_line[48];      /* the last of them (its start, bytes outside ASCII as '?') */
    bool prev_blank;         /* the line before was blank (or none came yet) */
    bool done;               /* "data: [DONE]" came */
    bool tool_calls;         /* a delta held tool_calls */
    size_t reasoning;        /* bytes of reasoning_content (or reasoning) in the deltas */
    char refusal[512];       /* the deltas' refusal text (its start) */
    /* choices[0].logprobs.content entries of the chunks so far (their JSON,
     * comma-separated), at most OPENAI_LOGPROBS_MAX bytes */
    sl_buf logprobs;
    bool has_logprobs;
    bool logprobs_too_large;
    char finish[32];
    char error[512];         /* an error event in the stream, or "out of memory" */
    int events;              /* "data:" events so far, [DONE] aside */
    /* The first event that set out as a JSON object but did not parse (a
     * chunk holding bytes that are not UTF-8 or a lone surrogate escape):
     * its number and why, "" when none. */
    int bad_event;
    char bad_json[160];
    /* The first chunk's id, model and created, for a chat.completion object
     * assembled from the stream ("" and 0 when none came or did not fit). */
    char id[128];
    char model[256];
    long long created;
} openai_stream;

/* Starts a stream over (keeps the text's memory). */
void openai_stream_reset(openai_stream *s, size_t text_max, size_t idle_max);
void openai_stream_free(openai_stream *s);

/* Parses the complete lines of *pending (all of it with `last`: the stream
 * ended) and drops them from it; only "data:" lines carry anything, and
 * "data: [DONE]" nothing. `now` stamps the content chunks. Stops (and
 * sets `stuck`) past idle_max lines without text. */
void openai_stream_feed(openai_stream *s, sl_buf *pending, bool last, double now);

/* A finished stream (fed with `last`) into *out (cleared with
 * sl_result_clear): the text, the chunks' logprobs entries (as one
 * {"content":[...]} object), finish reason,
 * token counts (one per content chunk without usage), ttft_ms from
 * `submitted` and generate_ms from the first content to the last.
 * OPENAI_ANSWER_OK, else with *why: CUT when it ended without a
 * finish_reason and without "data: [DONE]" (a connection closed
 * mid-answer), or with finish_reason "error" or "abort"; BAD when it
 * carried an error event, no chunk, too much text, too many lines without
 * text (stuck), or an answer that is no caption (as openai_parse_completion). */
openai_verdict openai_stream_result(openai_stream *s, double submitted, double now,
                                    sl_result *out, char *why, size_t cap);

/* The alternatives a choices request asks for: the most servers give
 * (vLLM's default --max-logprobs, OpenAI's and llama-server's bound). */
enum { OPENAI_CHOICE_TOP = 20 };

/* A choices row's scores, read over one request or more. The first asks
 * for one token (max_tokens 1, top_logprobs OPENAI_CHOICE_TOP); each
 * alternative's text, without leading white space, counts for the choice
 * it is (as written, else with the first letter's case swapped) when it
 * begins no other, for the one choice it begins when it is none ("Ye" for
 * "yes"). One that begins several, or is one and begins others ("1" among
 * 1..10, "the" of "the cat" and "the dog"), is a probe: the same request
 * with that text as the start of the answer (an assistant message to
 * continue) for the next token's alternatives; its probability is shared
 * out the same way at the text they lengthen it to, and a choice the probe's
 * text is takes the rest (what the model says after "1", if not "0", is 1).
 * Probes are made under OPENAI_CHOICE_PROBES a row, above
 * OPENAI_CHOICE_NEGLIGIBLE of the first token's share and for texts of
 * whole UTF-8 characters; else their share is split evenly among the
 * choices they could be. Texts at most
 * OPENAI_CHOICE_PREFIX - 1 bytes. Pure: the caller sends the probes. */
enum { OPENAI_CHOICE_PROBES = 16, OPENAI_CHOICE_PREFIX = 256 };
#define OPENAI_CHOICE_NEGLIGIBLE 1e-7

typedef struct openai_choice_probe {
    char prefix[OPENAI_CHOICE_PREFIX]; /* the answer's start, as the model wrote it */
    size_t len;
    double mass;                       /* its probability */
} openai_choice_probe;

typedef struct openai_choice_walk {
    const char *const *choices;        /* borrowed: alive while the walk is */
    int n;
    double p[SL_MAX_CHOICES];          /* each choice's probability read so far */
    openai_choice_probe probes[OPENAI_CHOICE_PROBES];
    int n_probes;                      /* queued by the last read; the caller takes them and
                                          sets it to 0 */
    int made;                          /* probes queued in all */
    double root;                       /* the first token's share on the choices */
    int n_alts;
    char best_seen[64];                /* the first token's most likely alternative */
} openai_choice_walk;

void openai_choice_walk_init(openai_choice_walk *w, const char *const *choices, int n);

/* Reads an answer's alternatives (choices[0].logprobs as JSON text): the
 * first request's with prefix "" and mass 1, a probe's with its prefix and
 * mass; queues the probes they call for. false with *why when it has no
 * alternatives. */
bool openai_choice_walk_read(openai_choice_walk *w, const char *prefix, size_t prefix_len,
                             double mass, const char *logprobs_json, char *why, size_t cap);

/* When no probe is left: each choice's score into p (n values summing to
 * 1); false with *why when nothing counted for any choice. */
bool openai_choice_walk_end(openai_choice_walk *w, double *p, char *why, size_t cap);

/* A caller's chat-completions body (sl_request.openai_body, len bytes) as
 * it goes out: the same JSON object but for "model" (set to `model` when
 * absent; kept when present) and "stream" (set to `stream`; when
 * streaming, stream_options.include_usage is set too, other stream_options
 * kept; when not, stream_options is dropped: servers refuse it then); the
 * caller adds the sampling keys it leaves out. The object (json_decref);
 * NULL with *why ("is not JSON (...)", "is not a JSON object", "has no
 * \"messages\" array", or "out of memory") otherwise. Duplicate keys are
 * refused: which one a server reads would be a guess. */
json_t *openai_forward_body(const char *body, size_t len, const char *model, bool stream,
                            char *why, size_t cap);

#endif
