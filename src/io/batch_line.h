/* io/batch_line.h — one line of an OpenAI batch file (`sluice batch`,
 * docs/batch.md): {"custom_id", "method": "POST", "url":
 * "/v1/chat/completions", "body": {chat-completions request}} checked and
 * read into a conversation (sl_message, image URLs in order) and the
 * request's own settings. A line that breaks a rule fails with the cause;
 * it never stops the file. Data URLs are decoded here too (base64), and
 * bytes encoded as one. Any thread; a request is one thread's at a time.
 * Ownership: the request owns its body; the messages, parts, image URLs,
 * stop strings and model point into it and live as long as it is unchanged. */
#ifndef SL_IO_BATCH_LINE_H
#define SL_IO_BATCH_LINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "sluice/engine.h"

/* Stop strings per request at most (OpenAI takes 4). */
#define SL_BATCH_MAX_STOP 16
/* Messages and content parts per request at most. */
#define SL_BATCH_MAX_MESSAGES 1024
#define SL_BATCH_MAX_PARTS 4096

typedef struct sl_batch_req {
    char *custom_id;           /* set when the line has one (a string), even if it failed */
    json_t *body;              /* the request body (owned; NULL when the line failed) */
    sl_message *messages;      /* the body's messages, roles "system", "user", "assistant" */
    int n_messages;
    sl_content_part *parts;    /* every message's parts, back to back */
    int n_parts;
    const char *images[SL_MAX_IMAGES]; /* the image parts' URLs, in order */
    int n_images;
    const char *model;         /* NULL: none given */
    int max_tokens;            /* max_completion_tokens, else max_tokens; 0: the job's */
    bool has_temperature, has_top_p, has_seed, has_top_k, has_min_p, has_repeat_penalty;
    bool has_presence_penalty, has_frequency_penalty;
    float temperature, top_p, min_p, presence_penalty, frequency_penalty;
    float repeat_penalty;      /* vLLM's repetition_penalty, else llama-server's repeat_penalty */
    int top_k;                 /* vLLM's -1 (off) read as 0 */
    uint64_t seed;
    bool has_logprobs, logprobs; /* body.logprobs given, and its value */
    int n;                     /* body.n (answers, 1..SL_MAX_ANSWERS); 0: not given */
    int top_logprobs;          /* body.top_logprobs (0..SL_MAX_TOP_LOGPROBS) */
    const char *stop[SL_BATCH_MAX_STOP];
    int n_stop;
    char *json_schema;         /* response_format json_schema's schema (or json_object's
                                  {"type":"object"}) as JSON text; NULL: none */
    const char *last_user_text; /* the last user message's first text part, or NULL */
    const char *unread_key;    /* the body's first key that the llama engine does not read
                                  and that may change an answer ("tools",
                                  "frequency_penalty", ...); NULL: none */
    char *line_id;             /* set by the source (io/source.c): "NAME:LINE", the row id
                                  of a line without a custom_id or repeating one */
} sl_batch_req;

/* Reads one line's text. SL_OK: *req is filled. SL_ERR_INVALID_ARG: the
 * line is malformed, err says why ("no custom_id", "url must be
 * /v1/chat/completions, got ..."); req->custom_id may still be set, and the
 * rest is cleared. SL_ERR_NOMEM: out of memory. Clear *req with
 * sl_batch_req_clear() either way. */
sl_status sl_batch_parse(const char *text, size_t len, sl_batch_req *req, char *err,
                         size_t errlen);

void sl_batch_req_clear(sl_batch_req *req);

/* Whether url is a data: URL; the bytes of one decoded into *data (sl_free)
 * and *len. SL_ERR_INVALID_ARG (err says why) when it is not base64 or holds
 * nothing. */
bool sl_batch_is_data_url(const char *url);
sl_status sl_batch_data_url_decode(const char *url, uint8_t **data, size_t *len, char *err,
                                   size_t errlen);


#endif
