/* llm/engines/openai.c — the "openai" engine: OpenAI-compatible HTTP
 * servers (vLLM, SGLang, llama-server) driven from one libcurl multi
 * event-loop thread.
 *
 * submit() builds the request body on the caller's thread (JSON, the JPEG as
 * a base64 data: URL) and hands it to the loop. The loop owns everything
 * else: it dispatches ready requests to the endpoint with the fewest
 * outstanding (llm/http_policy.c decides), keeps connections alive in the
 * multi handle's cache, parses answers, schedules retries, takes failing
 * endpoints out of rotation and, when all of them have failed too long,
 * gives up. Completions go to a list poll() drains. A request may bring
 * back several answers ("n") and a choices request may send probes of its
 * own (requests continuing its answer) before it completes: the loop makes
 * them, and their row waits meanwhile in the `probing` list. libcurl's
 * multi interface is used only here (http_policy.c holds the pure
 * decisions, openai_parse.c reads the answers, bounds their size and walks
 * the choices). */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/data_url.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/log.h"
#include "core/redact.h"
#include "io/curl_conn.h"
#include "llm/engine_impl.h"
#include "llm/engines/openai_parse.h"
#include "llm/http_policy.h"
#include "llm/json_schema.h"

/* A GET /v1/models listing is kept up to this (a router lists many models). */
enum { PROBE_BODY_MAX = 8 << 20, WINDOW_MIN_S = 2 };

sl_openai_params sl_openai_default_params(void)
{
    return (sl_openai_params){
        .max_in_flight = 8,
        .adaptive_max_in_flight = 64,
        .request_timeout_s = 600.0,
        .connect_timeout_s = 10.0,
        .max_attempts = 8,
        .backoff_base_s = 0.5,
        .backoff_max_s = 30.0,
        .endpoint_failures = 3,
        .cooldown_s = 15.0,
        .all_down_s = 120.0,
        .check_endpoints = true,
        .retry_after_max_s = 60.0,
    };
}

/* --- requests ---------------------------------------------------------------- */

typedef struct oa_req {
    struct oa_req *next, *prev; /* in one list: incoming, ready, delayed or active */
    void *tag;
    char *id;
    char *body;
    size_t body_len;
    int attempts;
    int busy;                   /* of them answered 429: not counted against max_attempts */
    uint64_t sent_seq;          /* the attempt's number among all sent (pick_seq) */
    int ep;                     /* the endpoint of the attempt in progress */
    double submitted, sent_at, next_at, first_sent;
    double retry_after;         /* from the last answer; -1: none */
    char location[512];         /* a redirect's Location (its start); "": none */
    CURL *easy;
    /* The answer so far: a 2xx body up to body_max, an error body up to
     * OPENAI_ERROR_BODY_MAX; a stream's unparsed rest (one partial event). */
    sl_buf resp;
    size_t text_max, body_max;  /* from the request's max_tokens (openai_parse.h) */
    size_t idle_max;            /* ... and the stream's lines without text */
    bool too_large;             /* the answer passed its bound: the attempt was cut */
    bool error_cut;             /* an error body passed its bound: its start is kept */
    char errbuf[CURL_ERROR_SIZE];
    /* Streaming: the answer's server-sent events, parsed as they arrive;
     * reset by each attempt. */
    bool stream;
    /* A streamed request answered 2xx with Content-Type application/json:
     * a server or gateway that does not stream sent the whole completion
     * as one body. It is read as one (before, it was taken for a stream
     * cut before its first event and asked again max_attempts times). */
    bool plain;
    openai_stream st;
    sl_json_schema *schema;     /* the request's: sent, and the answer checked against it */
    sl_task_group *grp;         /* one task of a request with several; NULL: none */
    char *task_name;            /* a task's: its answer cut short names the task's limit */
    int task;                   /* its first task (answer) in grp ... */
    int n_answers;              /* ... and how many it brings back: "n" sent (or a choices
                                   request's picks: one scoring, a draw each); a share of
                                   grp each */
    bool want_json;             /* the answer as a chat.completion object too */
    bool follows;               /* a conversation's next turn (sl_request.follows): its row
                                   is begun, so a stop does not cancel it */
    /* Choices (sl_request.choices, copied): one token is asked for with its
     * top alternatives, which score them (openai_choice_scores); the row's
     * temperature and seed pick one. */
    char **choices;
    int n_choices;
    float choice_temperature;
    uint64_t choice_seed;
    /* ... and, where choices begin alike, probes: requests of its own
     * continuing the answer from a prefix (openai_parse.h). The request
     * waits in the engine's `probing` list while probes_out > 0; held is
     * its first answer (counts and timings, no text), probe_error the first
     * probe failure, which fails it. */
    openai_choice_walk *walk;
    int probes_out;
    sl_result held;
    long held_code;
    char *probe_error;
    /* A probe: the choices request it reads for (alive until its last
     * probe is back) and what it continues. */
    struct oa_req *parent;
    openai_choice_probe probe;
} oa_req;

typedef struct req_list {
    oa_req *head, *tail;
    size_t n;
} req_list;

static void list_push(req_list *l, oa_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_remove(req_list *l, oa_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
    l->n--;
}

static void req_free(oa_req *r)
{
    if (!r)
        return;
    for (int k = 0; r->grp && k < r->n_answers; k++)
        sl_task_group_drop(r->grp); /* a task that never came back: the engine is going away */
    sl_free(r->id);
    sl_free(r->task_name);
    sl_free(r->body);
    sl_buf_free(&r->resp);
    openai_stream_free(&r->st);
    sl_json_schema_free(r->schema);
    for (int i = 0; i < r->n_choices; i++)
        sl_free(r->choices[i]);
    sl_free(r->choices);
    sl_free(r->walk);
    sl_result_clear(&r->held);
    sl_free(r->probe_error);
    sl_free(r);
}

/* --- the engine ---------------------------------------------------------------- */

typedef struct oa_endpoint {
    char *url;       /* base, without a trailing slash or /v1, nor a password
                        (core/redact.h): what messages and metrics name */
    char *chat_url, *models_url; /* what is asked, with the password if any */
    char *query;     /* the --endpoint's "?..." or "", appended to each URL */
    /* Loop-owned; in_flight, limit and the counters are also read by
     * stats callers, so they change under the engine's smu. */
    int in_flight, limit;
    int fails_in_row;
    bool unhealthy;      /* fails_in_row has reached the threshold; under smu */
    double down_until;   /* 0: in rotation */
    bool probing;
    bool refused;        /* answered 401/403 mid-run: out of rotation for good */
    /* 429s cut the limit (http_policy_busy_cut), answers raise it back
     * towards max_in_flight (the adaptive mode's own rule raises it there). */
    uint64_t cut_seq;
    int answered_since_cut;
    uint64_t last_pick;
    uint64_t requests, retries;
    int n_codes;
    int codes[16];
    uint64_t code_counts[16];
    /* The adaptive window. */
    double win_start, win_latency, prev_rps, prev_latency;
    int win_done;
    bool win_saturated;
} oa_endpoint;

typedef struct oa_engine {
    sl_openai_params p;
    char *model;
    int model_from;             /* the endpoint whose listing named it; -1: --served-model */
    json_t *response_format;    /* read-only once open: deep-copied per request */
    struct curl_slist *headers; /* may hold the API key: never logged */
    char *api_key;              /* the key alone, hidden in what servers answer */
    CURLM *multi;
    oa_endpoint *eps;
    int n_eps;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;         /* incoming, done, in_flight, stopping, fatal, cancel_queued */
    pthread_cond_t done_cv;
    req_list incoming;
    sl_completion *done;
    size_t n_done, cap_done;
    size_t in_flight;           /* submitted and not yet polled */
    bool stopping;
    bool fatal;
    bool cancel_queued;         /* sl_engine_cancel_queued: nothing more is sent */
    char fatal_msg[1024];

    /* Loop-owned: choices requests waiting for their probes. */
    req_list probing;

    pthread_mutex_t smu;        /* the figures stats callers read */
    uint64_t prompt_tokens, generation_tokens;
    uint64_t choice_probes;     /* probes answered */
    size_t waiting, running;

    /* Loop-owned. */
    req_list ready, delayed, active;
    CURL **pool;
    size_t n_pool, cap_pool;
    uint64_t pick_seq, rng;
    double all_failing_since;   /* -1: some endpoint is healthy */
    /* Since when every attempt that ended has failed with an outcome worth
     * retrying (429s too) while requests waited; -1: a request was answered
     * since, or none waits. The last such failure, for the message. */
    double failing_since;
    char last_failure[512];
    size_t n_cancelled;         /* requests not sent since cancel_queued */
} oa_engine;

static void set_waiting(oa_engine *e)
{
    pthread_mutex_lock(&e->smu);
    e->waiting = e->ready.n + e->delayed.n;
    e->running = e->active.n;
    pthread_mutex_unlock(&e->smu);
}

static void probe_done(oa_engine *e, oa_req *probe, sl_result *res, const char *error);

/* Hands a finished request to poll(), or a probe to its choices request.
 * `error` NULL: res holds its r->n_answers results, each checked against
 * the request's schema (SL_ERR_INVALID_OUTPUT keeps it); else the request
 * fails with `fail` (SL_ERR_ENGINE; SL_ERR_STOPPED: not sent, a stop). */
static void complete_as(oa_engine *e, oa_req *r, sl_result *res, sl_status fail,
                        const char *error)
{
    if (r->parent) {
        probe_done(e, r, res, error);
        return;
    }
    sl_completion c = {.tag = r->tag, .status = SL_OK};
    bool last = true;
    if (r->grp) {
        /* The request's completion once its last task is back; an answer
         * its schema refuses fails the task. */
        for (int k = 0; k < r->n_answers; k++) {
            sl_result *one = res ? &res[k] : NULL;
            char *invalid = NULL;
            sl_status st = error ? fail : SL_OK;
            if (!error && r->schema &&
                sl_json_schema_check_answer(r->schema, r->id, r->task_name,
                                            one->text ? one->text : "", one->finish_reason,
                                            &invalid) != SL_OK)
                st = SL_ERR_INVALID_OUTPUT;
            last = sl_task_group_record(r->grp, r->task + k, st, error ? error : invalid, one,
                                        &c);
            if (st != SL_OK && one)
                sl_result_clear(one); /* not taken by a failed task */
            sl_free(invalid);
        }
        r->grp = NULL;
    } else if (error) {
        c.status = fail;
        c.error = sl_strdup(error);
    } else {
        c.result = *res;
        char *invalid = NULL;
        if (r->schema && sl_json_schema_check_answer(r->schema, r->id, r->task_name,
                                                     res->text ? res->text : "",
                                                     res->finish_reason, &invalid) != SL_OK) {
            c.status = SL_ERR_INVALID_OUTPUT;
            c.error = invalid; /* NULL when out of memory: poll()'s callers say so */
        }
    }
    req_free(r);
    if (!last)
        return;
    pthread_mutex_lock(&e->mu);
    if (e->n_done == e->cap_done) {
        size_t cap = e->cap_done ? 2 * e->cap_done : 64;
        sl_completion *grown = sl_realloc(e->done, cap * sizeof *grown);
        if (!grown) {
            /* Nowhere to put it: the row would be lost silently, so stop. */
            e->fatal = true;
            snprintf(e->fatal_msg, sizeof e->fatal_msg, "out of memory queuing a completion");
            pthread_mutex_unlock(&e->mu);
            sl_completion_clear(&c);
            return;
        }
        e->done = grown;
        e->cap_done = cap;
    }
    e->done[e->n_done++] = c;
    pthread_cond_broadcast(&e->done_cv);
    pthread_mutex_unlock(&e->mu);
}

static void complete(oa_engine *e, oa_req *r, sl_result *res, const char *error)
{
    complete_as(e, r, res, SL_ERR_ENGINE, error);
}

static void fail_request(oa_engine *e, oa_req *r, const char *fmt, ...) SL_PRINTF(3, 4);
static void fail_request(oa_engine *e, oa_req *r, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    complete(e, r, NULL, msg);
}

/* --- request bodies ---------------------------------------------------------------- */

static int set_new(json_t *o, const char *key, json_t *v)
{
    return v ? json_object_set_new(o, key, v) : -1;
}

/* A part of `type` ("image_url", "video_url") holding `url` (taken; NULL:
 * out of memory) as {"type": type, type: {"url": url}}; NULL when out of
 * memory. */
static json_t *url_part(const char *type, char *url, size_t url_len)
{
    json_t *part = json_object(), *inner = json_object();
    int bad = !url || !part || !inner || set_new(inner, "url", json_stringn_nocheck(url, url_len)) ||
              set_new(part, "type", json_string(type)) || json_object_set(part, type, inner);
    json_decref(inner);
    sl_free(url);
    if (bad) {
        json_decref(part);
        return NULL;
    }
    return part;
}

/* An image_url part: the image as a base64 data: URL. */
static json_t *image_part(const uint8_t *image, size_t image_len, const char *mime)
{
    size_t n = 0;
    char *url = sl_data_url(image, image_len, mime, &n);
    return url_part("image_url", url, n);
}

/* A video_url part of a video's frames (their JPEGs): vLLM's
 * data:video/jpeg form, comma-separated frames that its video processor
 * reads as one clip, where image_url parts would be so many images. */
static json_t *video_part(const uint8_t *const *frames, const size_t *len, int n)
{
    size_t url_len = 0;
    char *url = sl_data_url_parts(frames, len, n, "video/jpeg", &url_len);
    return url_part("video_url", url, url_len);
}

static json_t *text_part(const char *text)
{
    json_t *part = json_object();
    if (part && (set_new(part, "type", json_string("text")) ||
                 set_new(part, "text", json_string(text)))) {
        json_decref(part);
        return NULL;
    }
    return part;
}

/* The messages of a request of a prompt: the system prompt, then the user
 * message with the image (if any) before the text. NULL when out of memory. */
static json_t *prompt_messages(const sl_request *q, const uint8_t *image, size_t image_len,
                               const char *mime)
{
    json_t *messages = json_array(), *content = json_array();
    int bad = !messages || !content;
    if (!bad && q->system_prompt && *q->system_prompt) {
        json_t *m = json_object();
        bad |= !m || set_new(m, "role", json_string("system")) ||
               set_new(m, "content", json_string(q->system_prompt)) ||
               json_array_append_new(messages, m);
    }
    if (!bad && image)
        bad |= json_array_append_new(content, image_part(image, image_len, mime));
    if (!bad) {
        json_t *m = json_object();
        bad |= json_array_append_new(content, text_part(q->prompt)) || !m ||
               set_new(m, "role", json_string("user")) || json_object_set(m, "content", content) ||
               json_array_append_new(messages, m);
    }
    json_decref(content);
    if (bad) {
        json_decref(messages);
        return NULL;
    }
    return messages;
}

/* A conversation's images, encoded, in the order of their parts. */
typedef struct oa_images {
    const uint8_t *data[SL_MAX_IMAGES];
    size_t len[SL_MAX_IMAGES];
    const char *mime[SL_MAX_IMAGES];
} oa_images;

/* The messages of a conversation: a message of one text part (or none)
 * keeps its content a string; others are arrays of text and image_url
 * parts. NULL when out of memory. */
static json_t *conversation_messages(const sl_request *q, const oa_images *im)
{
    json_t *messages = json_array();
    int bad = !messages, next_image = 0;
    for (int i = 0; !bad && i < q->n_messages; i++) {
        const sl_message *msg = &q->messages[i];
        json_t *m = json_object(), *content = NULL;
        if (msg->n_parts == 1 && msg->parts[0].text) {
            content = json_string(msg->parts[0].text);
        } else if (msg->n_parts == 0) { /* an empty answer in a conversation's history */
            content = json_string("");
        } else {
            content = json_array();
            for (int k = 0; content && !bad && k < msg->n_parts; k++) {
                const char *text = msg->parts[k].text;
                int j = next_image;
                next_image += !text;
                if (!text && q->images_are_video && j > 0)
                    continue; /* in the video_url part of frame 0 */
                bad |= json_array_append_new(
                    content, text                    ? text_part(text)
                             : q->images_are_video ? video_part(im->data, im->len, q->n_images)
                                                   : image_part(im->data[j], im->len[j],
                                                                im->mime[j]));
            }
        }
        bad |= !m || !content || set_new(m, "role", json_string(msg->role)) ||
               json_object_set(m, "content", content) || json_array_append(messages, m);
        json_decref(content);
        json_decref(m);
    }
    if (bad) {
        json_decref(messages);
        return NULL;
    }
    return messages;
}

/* A sampling value as the user wrote it: the float it is held in,
 * widened to double, would go out as 0.699999988 for 0.7. */
static json_t *param_real(float v)
{
    char text[32];
    snprintf(text, sizeof text, "%.6g", (double)v);
    return json_real(strtod(text, NULL));
}

/* A request of a video's frames (images_are_video) sends them in one
 * video_url part: JPEGs, side by side in the conversation. */
static sl_status check_video_frames(const sl_request *q, const oa_images *im)
{
    const char *id = q->id ? q->id : "(request)";
    if (q->n_images < 1)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: a video without frames (images_are_video with "
                                           "no images)", id);
    for (int i = 0; i < q->n_images; i++)
        if (im->mime[i] && strcmp(im->mime[i], "image/jpeg") != 0)
            return sl_fail(SL_ERR_INVALID_ARG, "%s: frame %d is %s; a video_url part holds JPEG "
                                               "frames", id, i + 1, im->mime[i]);
    sl_prompt_conversation pc;
    const sl_request *c = sl_prompt_as_conversation(q, &pc);
    enum { BEFORE, IN, AFTER } at = BEFORE;
    for (int i = 0; i < c->n_messages; i++) {
        for (int k = 0; k < c->messages[i].n_parts; k++) {
            bool frame = !c->messages[i].parts[k].text;
            if (frame && at == AFTER)
                return sl_fail(SL_ERR_INVALID_ARG, "%s: text between a video's frames; a "
                                                   "video_url part holds them side by side", id);
            at = frame ? IN : at == IN ? AFTER : at;
        }
        at = at == IN ? AFTER : at;
    }
    return SL_OK;
}

/* Sets key to v (taken) unless root holds key already; nonzero when out of
 * memory. */
static int set_absent(json_t *o, const char *key, json_t *v)
{
    if (json_object_get(o, key)) {
        json_decref(v);
        return 0;
    }
    return set_new(o, key, v);
}

/* Sampling s, q's stop strings and schema's response_format into root, each
 * key only where root leaves it out: a body built here gets them all; a
 * forwarded body (openai_body: a batch request's) keeps its own, and what it
 * leaves out takes the job's settings, as the llama engine gives them to
 * such a request. Nonzero when out of memory. */
static int set_sampling(const oa_engine *e, const sl_request *q, const sl_sampling *s,
                        const sl_json_schema *schema, json_t *root)
{
    /* A top-p of 0 keeps the most likely token alone, as llama.cpp's top-p
     * does in the embedded engine: greedy, whatever the temperature. Sent
     * as that, since vLLM refuses a top_p of 0 (it takes (0, 1]). */
    bool greedy = s->top_p <= 0.0f;
    int bad = set_absent(root, "temperature", param_real(greedy ? 0.0f : s->temperature)) ||
              /* 31 bits: every server takes it (llama-server reads a uint32). */
              set_absent(root, "seed", json_integer((json_int_t)(s->seed & 0x7fffffff)));
    /* Either field is the answer's length: a body with one keeps it alone. */
    sl_openai_max_tokens_field field = e->p.max_tokens_field;
    if (!json_object_get(root, "max_tokens") && !json_object_get(root, "max_completion_tokens")) {
        if (field != SL_OPENAI_MAX_COMPLETION_TOKENS)
            bad |= set_new(root, "max_tokens", json_integer(s->max_tokens));
        if (field != SL_OPENAI_MAX_TOKENS)
            bad |= set_new(root, "max_completion_tokens", json_integer(s->max_tokens));
    }
    /* What is off is left out: OpenAI's API and strict gateways refuse
     * the fields they do not know (min_p, top_k, repeat_penalty). */
    if (s->top_p < 1.0f && !greedy)
        bad |= set_absent(root, "top_p", param_real(s->top_p));
    if (s->min_p > 0.0f)
        bad |= set_absent(root, "min_p", param_real(s->min_p));
    if (s->top_k > 0)
        bad |= set_absent(root, "top_k", json_integer(s->top_k));
    if (s->presence_penalty != 0.0f)
        bad |= set_absent(root, "presence_penalty", param_real(s->presence_penalty));
    if (s->frequency_penalty != 0.0f)
        bad |= set_absent(root, "frequency_penalty", param_real(s->frequency_penalty));
    if (s->logprobs && !json_object_get(root, "logprobs"))
        bad |= set_new(root, "logprobs", json_true()) ||
               set_absent(root, "top_logprobs", json_integer(s->top_logprobs));
    if (s->repeat_penalty != 1.0f && !json_object_get(root, "repeat_penalty") &&
        !json_object_get(root, "repetition_penalty")) /* llama-server's name and vLLM's */
        bad |= set_new(root, "repeat_penalty", param_real(s->repeat_penalty)) ||
               set_new(root, "repetition_penalty", param_real(s->repeat_penalty));
    if (!bad && q->n_stop > 0 && !json_object_get(root, "stop")) {
        json_t *stop = json_array();
        bad |= !stop;
        for (int i = 0; !bad && i < q->n_stop; i++)
            bad |= json_array_append_new(stop, json_string(q->stop[i]));
        bad |= set_new(root, "stop", stop);
    }
    if (json_object_get(root, "response_format"))
        return bad;
    if (!bad && schema) {
        /* OpenAI's structured output, which vLLM, SGLang and llama-server
         * take as it is; the request's schema takes the place of the
         * engine's response_format. */
        json_t *rf = json_object(), *js = json_object();
        bad |= !rf || !js || set_new(js, "name", json_string("answer")) ||
               set_new(js, "schema", json_deep_copy(sl_json_schema_json(schema))) ||
               set_new(js, "strict", json_true()) ||
               set_new(rf, "type", json_string("json_schema")) ||
               json_object_set(rf, "json_schema", js) || set_new(root, "response_format", rf);
        json_decref(js);
        if (bad)
            json_decref(rf);
    } else if (!bad && e->response_format) {
        bad |= set_new(root, "response_format", json_deep_copy(e->response_format));
    }
    return bad;
}

/* The JSON body of one chat completion around `messages` (taken; NULL: out
 * of memory), streamed or not (the request's oa_req.stream); NULL (with
 * sl_fail) on failure. A request with choices asks for one token, greedy,
 * with its OPENAI_CHOICE_TOP alternatives: those score the choices. */
static char *build_body(const oa_engine *e, const sl_request *q, const sl_json_schema *schema,
                        json_t *messages, bool stream, int n, size_t *len)
{
    json_t *root = json_object();
    int bad = !root || !messages;
    sl_sampling choosing;
    const sl_sampling *s = &q->sampling;
    if (q->n_choices > 0) {
        choosing = q->sampling;
        choosing.max_tokens = 1;
        choosing.temperature = 0.0f;
        choosing.logprobs = true;
        choosing.top_logprobs = OPENAI_CHOICE_TOP;
        s = &choosing;
    }
    if (!bad) {
        bad |= set_new(root, "model", json_string(e->model)) ||
               json_object_set(root, "messages", messages) ||
               set_new(root, "stream", json_boolean(stream));
        if (stream) { /* the token counts come in a last chunk (vLLM needs asking) */
            json_t *opts = json_object();
            bad |= !opts || set_new(opts, "include_usage", json_true()) ||
                   set_new(root, "stream_options", opts);
        }
        if (n > 1)
            bad |= set_new(root, "n", json_integer(n));
        bad |= set_sampling(e, q, s, schema, root);
    }
    char *text = bad ? NULL : sl_json_dump(root, JSON_COMPACT, len);
    json_decref(root);
    json_decref(messages);
    if (!text)
        sl_fail(SL_ERR_NOMEM, "%s: out of memory building the request (or a string is not UTF-8)",
                q->id ? q->id : "(request)");
    return text;
}

/* The engine's copy of request q (one without tasks), bringing back
 * n_answers answers (q's sampling.n, or 1), its JSON schema parsed; NULL
 * with the message set when the schema is refused or memory runs out. */
static oa_req *req_new(const oa_engine *e, const sl_request *q, int n_answers,
                       const uint8_t *image, size_t image_len, const char *mime,
                       const oa_images *images, void *tag, sl_status *st)
{
    const char *id = q->id ? q->id : "(request)";
    sl_json_schema *schema = NULL;
    *st = SL_OK;
    if (q->json_schema) {
        char name[320];
        snprintf(name, sizeof name, "%s: json_schema", id);
        if ((*st = sl_json_schema_parse(q->json_schema, strlen(q->json_schema), name,
                                        &schema)) != SL_OK)
            return NULL;
    }
    oa_req *r = sl_calloc(1, sizeof *r);
    if (!r) {
        sl_json_schema_free(schema);
        *st = sl_fail(SL_ERR_NOMEM, "%s: out of memory", id);
        return NULL;
    }
    r->tag = tag;
    r->n_answers = n_answers;
    /* A choices request is scored once whatever the answers; n answers
     * come in one body, not streamed (a stream interleaves them). */
    int n_sent = q->n_choices > 0 ? 1 : n_answers;
    r->stream = e->p.stream && q->n_choices == 0 && n_sent == 1;
    r->id = sl_strdup(id);
    bool task_name_ok = !q->task_name || (r->task_name = sl_strdup(q->task_name));
    int max_tokens = q->n_choices > 0 ? 1 : q->sampling.max_tokens;
    r->text_max = openai_text_max(max_tokens);
    r->body_max = openai_body_max(max_tokens, n_sent);
    r->idle_max = openai_idle_max(max_tokens);
    r->choice_temperature = q->sampling.temperature;
    r->choice_seed = q->sampling.seed;
    bool choices_ok = q->n_choices == 0 ||
                      (r->choices = sl_calloc((size_t)q->n_choices, sizeof *r->choices));
    for (int i = 0; choices_ok && i < q->n_choices; i++, r->n_choices++)
        choices_ok = (r->choices[i] = sl_strdup(q->choices[i])) != NULL;
    r->want_json = q->want_response_json;
    sl_status body_st = SL_ERR_NOMEM; /* build_body fails only for want of memory */
    if (q->openai_body) {
        char why[512];
        json_t *root = openai_forward_body(q->openai_body, strlen(q->openai_body), e->model,
                                           r->stream, why, sizeof why);
        if (!root && strcmp(why, "out of memory") != 0)
            body_st = sl_fail(SL_ERR_INVALID_ARG, "%s: the request body %s", id, why);
        else if (root && set_sampling(e, q, &q->sampling, schema, root) == 0)
            r->body = sl_json_dump(root, JSON_COMPACT, &r->body_len);
        if (!r->body && body_st == SL_ERR_NOMEM)
            body_st = sl_fail(SL_ERR_NOMEM, "%s: out of memory building the request", id);
        json_decref(root);
    }
    else {
        sl_prompt_conversation pc;
        const sl_request *conv = sl_prompt_as_conversation(q, &pc);
        r->body = build_body(e, q, schema,
                             conv->n_messages > 0 ? conversation_messages(conv, images)
                                                  : prompt_messages(q, image, image_len, mime),
                             r->stream, n_sent, &r->body_len);
    }
    r->schema = schema;
    r->submitted = sl_mono_s();
    r->retry_after = -1.0;
    if (!r->id || !r->body || !choices_ok || !task_name_ok) {
        /* The body's builder said why; a missing id is memory. */
        *st = r->id && !r->body ? body_st : sl_fail(SL_ERR_NOMEM, "%s: out of memory", id);
        req_free(r);
        return NULL;
    }
    return r;
}

static sl_status oa_submit(void *impl, const sl_request *q, void *tag)
{
    oa_engine *e = impl;
    const char *id = q->id ? q->id : "(request)";
    if (q->grammar)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s: the openai engine sends no GBNF grammar (servers differ in what they "
                       "take): give a JSON schema instead, or use the llama engine", id);
    uint8_t *encoded = NULL;
    const uint8_t *image = q->image_encoded;
    size_t image_len = q->image_encoded_len;
    const char *mime = q->image_mime;
    if (!image && q->image && !q->openai_body) {
        /* Pixels only (sl_engine_generate callers): encode at full size. */
        sl_status st = sl_image_encode_jpeg(q->image, 0, 90, &encoded, &image_len);
        if (st != SL_OK)
            return st;
        image = encoded;
        mime = NULL;
    }
    /* A conversation's images: encoded by the caller, or (pixels only)
     * encoded here at full size. */
    oa_images images;
    memset(&images, 0, sizeof images);
    uint8_t *own[SL_MAX_IMAGES] = {0};
    sl_status ist = SL_OK;
    for (int i = 0; !q->openai_body && i < q->n_images && ist == SL_OK; i++) {
        if (q->images_encoded && q->images_encoded[i]) {
            images.data[i] = q->images_encoded[i];
            images.len[i] = q->images_encoded_len ? q->images_encoded_len[i] : 0;
            images.mime[i] = q->images_mime ? q->images_mime[i] : NULL;
        } else if (q->images && q->images[i]) {
            ist = sl_image_encode_jpeg(q->images[i], 0, 90, &own[i], &images.len[i]);
            images.data[i] = own[i];
        } else {
            ist = sl_fail(SL_ERR_INVALID_ARG, "%s: image %d is missing (neither encoded nor "
                          "decoded)", id, i);
        }
        if (ist == SL_OK && images.len[i] == 0)
            ist = sl_fail(SL_ERR_INVALID_ARG, "%s: image %d is empty", id, i);
    }
    if (ist == SL_OK && q->images_are_video && !q->openai_body)
        ist = check_video_frames(q, &images);
    /* A request with tasks: one HTTP request per task, each with the same
     * image and message prefix (a server's prefix cache can reuse the
     * image's encoding), all built before any is queued. N answers (of the
     * request, or of each task): one request with "n" (the server computes
     * the prompt once and draws the answers from the request's seed), a
     * choices request scored once and drawn from N times, or
     * (split_samples, for a server without "n") one request per answer with
     * its answer's seed. A caller's whole body sends its own "n". The
     * group's results: task t's answer k at t * N + k. */
    int answers = !q->openai_body && q->sampling.n > 1 ? q->sampling.n : 1;
    int n_parts = q->n_tasks > 0 ? q->n_tasks : 1;
    oa_req *reqs[SL_MAX_TASKS * SL_MAX_ANSWERS] = {0};
    int first[SL_MAX_TASKS * SL_MAX_ANSWERS];
    int n = 0;
    bool grouped = q->n_tasks > 0 || answers > 1;
    sl_task_group *grp = grouped ? sl_task_group_new(tag, n_parts * answers) : NULL;
    sl_status st = ist != SL_OK        ? ist
                   : !grouped || grp ? SL_OK
                                     : sl_fail(SL_ERR_NOMEM, "%s: out of memory", id);
    for (int t = 0; st == SL_OK && t < n_parts; t++) {
        sl_request task = *q;
        char *task_id = NULL;
        if (q->n_tasks > 0) {
            sl_task_request(q, t, &task, &task_id);
            if (!task_id)
                st = sl_fail(SL_ERR_NOMEM, "%s: out of memory", id);
        }
        bool split = answers > 1 && e->p.split_samples && task.n_choices == 0;
        for (int k = 0; st == SL_OK && k < (split ? answers : 1); k++) {
            sl_request one = task;
            char *answer_id = NULL;
            if (split) {
                sl_answer_request(&task, k, &one, &answer_id);
                if (!answer_id)
                    st = sl_fail(SL_ERR_NOMEM, "%s: out of memory", id);
            }
            if (st == SL_OK &&
                (reqs[n] = req_new(e, &one, split ? 1 : answers, image, image_len, mime, &images,
                                   tag, &st))) {
                first[n] = t * answers + k;
                n++;
            }
            sl_free(answer_id);
        }
        sl_free(task_id);
    }
    sl_image_buffer_free(encoded);
    for (int i = 0; i < SL_MAX_IMAGES; i++)
        sl_image_buffer_free(own[i]);
    if (st != SL_OK) {
        for (int i = 0; i < n; i++)
            req_free(reqs[i]);
        for (int i = 0; grp && i < n_parts * answers; i++)
            sl_task_group_drop(grp); /* the reqs did not hold it yet */
        return st;
    }
    for (int i = 0; grp && i < n; i++) {
        reqs[i]->grp = grp;
        reqs[i]->task = first[i];
    }
    for (int i = 0; i < n; i++)
        reqs[i]->follows = q->follows;
    pthread_mutex_lock(&e->mu);
    if (e->fatal) {
        pthread_mutex_unlock(&e->mu);
        for (int i = 0; i < n; i++)
            req_free(reqs[i]);
        return sl_fail(SL_ERR_IO, "%s", e->fatal_msg);
    }
    for (int i = 0; i < n; i++)
        list_push(&e->incoming, reqs[i]);
    e->in_flight++;
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->multi);
    return SL_OK;
}

/* --- answers ------------------------------------------------------------------------ */

/* Returning less than len aborts the transfer: finish() then looks at
 * too_large and error_cut, else retries it as a failed attempt. */
static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    oa_req *r = user;
    size_t len = size * n;
    long code = 0;
    if (r->easy)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    bool ok = code >= 200 && code < 300;
    /* A server that never stops (a stream without end, a body without
     * end) must not take the memory: each answer has its bound. An error
     * answer is kept only for its message, so its start is enough. */
    size_t max = ok ? r->body_max : OPENAI_ERROR_BODY_MAX;
    if (len > max - r->resp.len) {
        if (ok) {
            r->too_large = true;
        } else {
            r->error_cut = true;
            sl_buf_append(&r->resp, data, max - r->resp.len);
        }
        return 0;
    }
    if (!sl_buf_append(&r->resp, data, len))
        return 0;
    /* A stream is parsed now, for the time of its first token. */
    if (r->stream && ok && !r->plain) {
        openai_stream_feed(&r->st, &r->resp, false, sl_mono_s());
        if (r->st.too_large) {
            r->too_large = true;
            return 0;
        }
        if (r->st.stuck) /* finish() reads why in the stream */
            return 0;
    }
    return len;
}

/* The value of header line data[0..len) when its name is `name` (with its
 * ':', any case): *v to *end, without the blanks before it nor the CR LF
 * after; NULL when the line is another header. */
static const char *header_value(const char *data, size_t len, const char *name, const char **end)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(data, name, n) != 0)
        return NULL;
    const char *v = data + n, *e = data + len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
        e--;
    *end = e;
    return v;
}

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
    oa_req *r = user;
    size_t len = size * n;
    const char *v, *end;
    if (len > 5 && strncmp(data, "HTTP/", 5) == 0) { /* a new answer's head (after a 100) */
        r->plain = false;
        r->location[0] = '\0';
    } else if ((v = header_value(data, len, "location:", &end))) {
        size_t k = (size_t)(end - v) < sizeof r->location ? (size_t)(end - v)
                                                           : sizeof r->location - 1;
        memcpy(r->location, v, k);
        r->location[k] = '\0';
    } else if ((v = header_value(data, len, "content-type:", &end))) {
        static const char json[] = "application/json";
        r->plain = r->stream && (size_t)(end - v) >= sizeof json - 1 &&
                   strncasecmp(v, json, sizeof json - 1) == 0;
    } else if (len < 256 && (v = header_value(data, len, "retry-after:", &end))) {
        char value[256];
        memcpy(value, v, (size_t)(end - v));
        value[end - v] = '\0';
        r->retry_after = http_policy_retry_after(value, time(NULL));
    }
    return len;
}

/* --- endpoints ------------------------------------------------------------------------ */

static void count_code(oa_engine *e, oa_endpoint *ep, long code)
{
    pthread_mutex_lock(&e->smu);
    int i = 0;
    while (i < ep->n_codes && ep->codes[i] != (int)code)
        i++;
    if (i == ep->n_codes && ep->n_codes < 16) {
        ep->codes[i] = (int)code;
        ep->n_codes++;
    }
    if (i < 16)
        ep->code_counts[i]++;
    pthread_mutex_unlock(&e->smu);
}

static bool healthy(const oa_engine *e, const oa_endpoint *ep)
{
    return ep->fails_in_row < e->p.endpoint_failures;
}

static void set_fails(oa_engine *e, oa_endpoint *ep, int fails)
{
    ep->fails_in_row = fails;
    pthread_mutex_lock(&e->smu);
    ep->unhealthy = !healthy(e, ep);
    pthread_mutex_unlock(&e->smu);
}

static void endpoint_fault(oa_engine *e, oa_endpoint *ep, double now, const char *why)
{
    set_fails(e, ep, ep->fails_in_row + 1);
    if ((ep->probing || ep->fails_in_row == e->p.endpoint_failures) && ep->down_until <= now) {
        ep->probing = false;
        ep->down_until = now + e->p.cooldown_s;
        sl_log(SL_LOG_WARN, "endpoint %s out of rotation for %.0f s after %d failures in a row: %s",
               ep->url, e->p.cooldown_s, ep->fails_in_row, why);
    }
}

static void endpoint_ok(oa_engine *e, oa_endpoint *ep, double latency)
{
    if (ep->probing || !healthy(e, ep))
        sl_log(SL_LOG_INFO, "endpoint %s is answering again", ep->url);
    if (ep->fails_in_row)
        set_fails(e, ep, 0);
    ep->probing = false;
    e->all_failing_since = -1.0;
    if (!e->p.adaptive) {
        int limit = http_policy_busy_recover(ep->limit, e->p.max_in_flight,
                                             &ep->answered_since_cut);
        if (limit != ep->limit) {
            pthread_mutex_lock(&e->smu);
            ep->limit = limit;
            pthread_mutex_unlock(&e->smu);
        }
    }
    ep->win_done++;
    ep->win_latency += latency;
}

static void set_in_flight(oa_engine *e, oa_endpoint *ep, int delta)
{
    pthread_mutex_lock(&e->smu);
    ep->in_flight += delta;
    if (delta > 0)
        ep->requests++;
    pthread_mutex_unlock(&e->smu);
}

/* --- the loop ------------------------------------------------------------------------ */

static CURL *easy_get(oa_engine *e)
{
    return e->n_pool ? e->pool[--e->n_pool] : curl_easy_init();
}

static void easy_put(oa_engine *e, CURL *h)
{
    if (e->n_pool == e->cap_pool) {
        size_t cap = e->cap_pool ? 2 * e->cap_pool : 16;
        CURL **grown = sl_realloc(e->pool, cap * sizeof *grown);
        if (!grown) {
            curl_easy_cleanup(h);
            return;
        }
        e->pool = grown;
        e->cap_pool = cap;
    }
    e->pool[e->n_pool++] = h;
}

static bool probe_body(oa_req *p);

static bool start_attempt(oa_engine *e, oa_req *r, int epi, double now)
{
    oa_endpoint *ep = &e->eps[epi];
    if (!r->body && r->parent && !probe_body(r)) {
        fail_request(e, r, "%s: out of memory for its body", r->id);
        return false;
    }
    CURL *h = easy_get(e);
    if (!h) {
        fail_request(e, r, "%s: cannot create an HTTP handle", r->id);
        return false;
    }
    r->easy = h;
    r->ep = epi;
    r->attempts++;
    r->sent_at = now;
    if (r->attempts == 1)
        r->first_sent = now;
    r->resp.len = 0;
    r->too_large = r->error_cut = r->plain = false;
    openai_stream_reset(&r->st, r->text_max, r->idle_max);
    r->retry_after = -1.0;
    r->location[0] = '\0';
    r->errbuf[0] = '\0';
    sl_curl_trust(h);
    curl_easy_setopt(h, CURLOPT_URL, ep->chat_url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, e->headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(e->p.request_timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(e->p.connect_timeout_s * 1000));
    if (curl_multi_add_handle(e->multi, h) != CURLM_OK) {
        easy_put(e, h);
        r->easy = NULL;
        fail_request(e, r, "%s: cannot start the HTTP request", r->id);
        return false;
    }
    list_push(&e->active, r);
    ep->last_pick = r->sent_seq = ++e->pick_seq;
    set_in_flight(e, ep, +1);
    if (ep->in_flight >= ep->limit)
        ep->win_saturated = true;
    return true;
}

static void cancel_unsent(oa_engine *e);

/* A continuation of work already sent (a choices request's probe, a
 * conversation's next turn): a stop lets it go on. */
static bool continuation(const oa_req *r) { return r->parent || r->follows; }

/* Whether r may go on the wire now: a continuation always; another only
 * while no stop came. The loop's pass read the flag at its top, and a
 * stop between that read and this send would let a whole pass of queued
 * requests out after the stop hook returned; so each send reads it again,
 * under the mu that oa_cancel_queued sets it under. */
static bool may_send(oa_engine *e, const oa_req *r)
{
    if (continuation(r))
        return true;
    pthread_mutex_lock(&e->mu);
    bool cancel = e->cancel_queued;
    pthread_mutex_unlock(&e->mu);
    return !cancel;
}

static void dispatch(oa_engine *e, double now)
{
    http_endpoint_view views[e->n_eps];
    for (int i = 0; i < e->n_eps; i++) {
        oa_endpoint *ep = &e->eps[i];
        if (ep->down_until > 0 && ep->down_until <= now) {
            ep->down_until = 0; /* back in rotation, one request at a time until one succeeds */
            ep->probing = true;
        }
        views[i] = (http_endpoint_view){ep->in_flight, ep->limit, ep->down_until, ep->probing,
                                        ep->last_pick};
    }
    while (e->ready.head) {
        int i = http_policy_pick(views, (size_t)e->n_eps, now);
        if (i < 0)
            break;
        /* tests: a stop that lands between the pass's start and a send */
        sl_fault("openai.send", e->ready.head->id);
        if (!may_send(e, e->ready.head)) {
            cancel_unsent(e); /* the continuations stay in ready */
            continue;
        }
        oa_req *r = e->ready.head;
        list_remove(&e->ready, r);
        if (start_attempt(e, r, i, now)) {
            views[i].in_flight = e->eps[i].in_flight;
            views[i].last_pick = e->eps[i].last_pick;
        }
    }
}

/* A request got a final answer (a completion, or an answer not worth
 * retrying): the fleet is doing its work, whatever else fails. */
static void answered(oa_engine *e) { e->failing_since = -1.0; }

/* A 429: the server is busy, the request was not worked on. Refused
 * attempts do not count against max_attempts (rows were lost to a rate
 * limit that a slower pace meets); the endpoint's in-flight limit halves
 * once per burst, so the pace does slow. A fleet that only ever says busy
 * is still given up after all_down_s (check_all_down). */
static void busy(oa_engine *e, oa_req *r, oa_endpoint *ep)
{
    r->busy++;
    int limit = http_policy_busy_cut(ep->limit, r->sent_seq, e->pick_seq, &ep->cut_seq);
    if (limit == ep->limit)
        return;
    sl_log(SL_LOG_DEBUG, "endpoint %s answered 429: in-flight limit %d -> %d", ep->url, ep->limit,
           limit);
    pthread_mutex_lock(&e->smu);
    ep->limit = limit;
    pthread_mutex_unlock(&e->smu);
    ep->answered_since_cut = 0;
}

static void retry_or_fail(oa_engine *e, oa_req *r, oa_endpoint *ep, long code, const char *why,
                          double now)
{
    if (http_policy_endpoint_fault(code))
        endpoint_fault(e, ep, now, why);
    if (code == 429)
        busy(e, r, ep);
    if (e->failing_since < 0)
        e->failing_since = now;
    snprintf(e->last_failure, sizeof e->last_failure, "%s: %s", ep->url, why);
    if (r->attempts - r->busy >= e->p.max_attempts) {
        fail_request(e, r, "%s: gave up after %d attempt%s; the last, to %s: %s", r->id,
                     r->attempts, r->attempts == 1 ? "" : "s", ep->url, why);
        return;
    }
    pthread_mutex_lock(&e->smu);
    ep->retries++;
    pthread_mutex_unlock(&e->smu);
    r->next_at = now + http_policy_backoff_s(r->attempts, e->p.backoff_base_s,
                                             e->p.backoff_max_s, r->retry_after,
                                             e->p.retry_after_max_s, &e->rng);
    sl_log(SL_LOG_DEBUG, "%s: attempt %d to %s failed (%s); retrying in %.2f s", r->id,
           r->attempts, ep->url, why, r->next_at - now);
    list_push(&e->delayed, r);
}

/* n answers of r done: each with its chat.completion object when asked
 * for (the server's own when `body` is it, else one assembled as the llama
 * engine makes it, with a stream's id), then handed over. */
static void answers_done(oa_engine *e, oa_req *r, sl_result *out, const char *body,
                         size_t body_len)
{
    for (int k = 0; r->want_json && k < r->n_answers; k++) {
        out[k].response_json =
            body ? sl_strndup(body, body_len)
                 : sl_chat_completion_json(r->st.id[0] ? r->st.id : NULL,
                                           r->st.model[0] ? r->st.model : e->model,
                                           r->st.created, &out[k]);
        if (!out[k].response_json) {
            for (int j = 0; j < r->n_answers; j++)
                sl_result_clear(&out[j]);
            fail_request(e, r, "%s: out of memory for the answer's JSON", r->id);
            return;
        }
    }
    complete(e, r, out, NULL);
}

/* A probe's body, made when it is first sent (a queued probe holds no
 * copy of its row's image): its row's body continuing the answer from the
 * probe's prefix (an assistant message, continue_final_message: vLLM's
 * and llama-server's way). false when out of memory. */
static bool probe_body(oa_req *p)
{
    json_t *root = json_loadb(p->parent->body, p->parent->body_len, 0, NULL);
    json_t *msg = json_pack("{s:s, s:s%}", "role", "assistant", "content", p->probe.prefix,
                            p->probe.len);
    if (root && msg && json_array_append(json_object_get(root, "messages"), msg) == 0 &&
        json_object_set_new(root, "continue_final_message", json_true()) == 0 &&
        json_object_set_new(root, "add_generation_prompt", json_false()) == 0)
        p->body = sl_json_dump(root, JSON_COMPACT, &p->body_len);
    json_decref(msg);
    json_decref(root);
    return p->body != NULL;
}

/* A probe of choices request r, its body not made yet (probe_body); NULL
 * when out of memory. */
static oa_req *probe_new(const oa_req *r, const openai_choice_probe *q)
{
    oa_req *p = sl_calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->parent = (oa_req *)r;
    p->probe = *q;
    p->tag = r->tag;
    p->n_answers = 1;
    p->text_max = r->text_max;
    p->body_max = r->body_max;
    p->submitted = sl_mono_s();
    p->retry_after = -1.0;
    p->id = sl_asprintf("%s, probe '%.60s'", r->id, q->prefix);
    if (!p->id) {
        req_free(p);
        return NULL;
    }
    return p;
}

/* The probes r's walk queued, sent (ready for dispatch). */
static void send_probes(oa_engine *e, oa_req *r)
{
    for (int i = 0; i < r->walk->n_probes && !r->probe_error; i++) {
        oa_req *p = probe_new(r, &r->walk->probes[i]);
        if (!p) {
            r->probe_error = sl_asprintf("%s: out of memory for a probe of its choices", r->id);
            break;
        }
        list_push(&e->ready, p);
        r->probes_out++;
    }
    r->walk->n_probes = 0;
}

/* Choices request r with its walk read through: each answer drawn from the
 * scores with its answer's seed (the choice its text, the scores the
 * result's; the alternatives themselves were not asked for). */
static void settle_choices(oa_engine *e, oa_req *r)
{
    char why[512];
    double p[SL_MAX_CHOICES];
    if (r->probe_error) {
        snprintf(why, sizeof why, "%s", r->probe_error);
        fail_request(e, r, "%s", why);
        return;
    }
    if (!openai_choice_walk_end(r->walk, p, why, sizeof why)) {
        fail_request(e, r, "%s: %s answered HTTP %ld but %s", r->id, r->held.endpoint,
                     r->held_code, why);
        return;
    }
    /* One scoring: every answer's scores are the same text. */
    char *scores = sl_choice_scores_json((const char *const *)r->choices, p, r->n_choices);
    sl_result out[SL_MAX_ANSWERS];
    bool ok = scores != NULL;
    for (int k = 0; k < r->n_answers; k++) {
        uint64_t seed = sl_sampling_answer_seed(r->choice_seed, k);
        int pick = sl_choice_pick(p, r->n_choices, r->choice_temperature, seed);
        out[k] = r->held;
        out[k].text = sl_strdup(r->choices[pick]);
        out[k].scores = k == 0 ? scores : scores ? sl_strdup(scores) : NULL;
        ok &= out[k].text && out[k].scores;
    }
    if (!ok) {
        for (int k = 0; k < r->n_answers; k++)
            sl_result_clear(&out[k]);
        fail_request(e, r, "%s: out of memory for its scores", r->id);
        return;
    }
    answers_done(e, r, out, NULL, 0);
}

/* A choices request's first answer (out, its text and logprobs taken):
 * the first token's alternatives read, then probes sent where choices
 * begin alike, or the row settled now. */
static void start_choices(oa_engine *e, oa_req *r, sl_result *out, long code)
{
    char why[512];
    r->walk = sl_malloc(sizeof *r->walk);
    if (r->walk) {
        openai_choice_walk_init(r->walk, (const char *const *)r->choices, r->n_choices);
        if (!openai_choice_walk_read(r->walk, "", 0, 1.0, out->logprobs, why, sizeof why)) {
            const char *url = out->endpoint;
            sl_result_clear(out);
            fail_request(e, r, "%s: %s answered HTTP %ld but %s", r->id, url, code, why);
            return;
        }
    }
    sl_free(out->text);
    sl_free(out->logprobs);
    out->text = out->logprobs = NULL;
    out->finish_reason = "stop";
    r->held = *out;
    r->held_code = code;
    if (!r->walk) {
        fail_request(e, r, "%s: out of memory for its choices", r->id);
        return;
    }
    send_probes(e, r);
    if (r->probes_out > 0)
        list_push(&e->probing, r);
    else
        settle_choices(e, r);
}

/* A probe back (res its answer, or error): read into its request's walk,
 * which may send more; the request settles with its last probe. */
static void probe_done(oa_engine *e, oa_req *probe, sl_result *res, const char *error)
{
    oa_req *r = probe->parent;
    char why[512];
    if (!r->probe_error && error) {
        r->probe_error = sl_asprintf("%s (a probe continues the answer from '%.60s' to tell "
                                     "choices that begin alike apart: the server must take an "
                                     "assistant message to continue, continue_final_message)",
                                     error, probe->probe.prefix);
    } else if (!r->probe_error &&
               !openai_choice_walk_read(r->walk, probe->probe.prefix, probe->probe.len,
                                        probe->probe.mass, res[0].logprobs, why, sizeof why)) {
        r->probe_error = sl_asprintf("%s: %s answered but %s", probe->id,
                                     res[0].endpoint ? res[0].endpoint : "the server", why);
    } else if (!r->probe_error) {
        send_probes(e, r);
    }
    if (res)
        sl_result_clear(&res[0]);
    r->probes_out--;
    req_free(probe);
    if (r->probes_out == 0) {
        list_remove(&e->probing, r);
        settle_choices(e, r);
    }
}

static void key_refused(oa_engine *e, oa_req *r, oa_endpoint *ep, const char *why);

static void finish(oa_engine *e, CURL *h, CURLcode res)
{
    oa_req *r = NULL;
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&r);
    /* An answer cut at its bound is still the server's answer. */
    if (res == CURLE_WRITE_ERROR && (r->too_large || r->error_cut || r->st.stuck))
        res = CURLE_OK;
    if (res == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_multi_remove_handle(e->multi, h);
    easy_put(e, h);
    r->easy = NULL;
    list_remove(&e->active, r);
    oa_endpoint *ep = &e->eps[r->ep];
    set_in_flight(e, ep, -1);
    count_code(e, ep, res == CURLE_OK ? code : 0);
    double now = sl_mono_s();
    char why[1024];
    if (res != CURLE_OK) {
        int n = snprintf(why, sizeof why, "%s", sl_curl_why(res, r->errbuf));
        /* curl's words name no setting: a server slower than the limit
         * (a long answer, a deep queue) needs the user to raise it. A
         * connect timeout that ends sooner is not this limit; the two are
         * told apart halfway between them, not at the limit itself: curl
         * rounds its elapsed milliseconds up, so it ends an attempt up to
         * 1 ms before our clock says the limit has passed. */
        bool request_limit =
            e->p.request_timeout_s <= e->p.connect_timeout_s ||
            now - r->sent_at >= (e->p.connect_timeout_s + e->p.request_timeout_s) / 2;
        if (res == CURLE_OPERATION_TIMEDOUT && request_limit && n > 0 && (size_t)n < sizeof why)
            snprintf(why + n, sizeof why - (size_t)n,
                     " (--request-timeout %g s, each attempt's limit: raise it for slower answers)",
                     e->p.request_timeout_s);
        retry_or_fail(e, r, ep, 0, why, now);
        return;
    }
    if (code >= 200 && code < 300) {
        sl_result out[SL_MAX_ANSWERS];
        int n = r->n_answers;
        int n_sent = r->n_choices > 0 ? 1 : n;
        const char *body = r->resp.data ? (const char *)r->resp.data : "";
        /* Read as a stream unless it came as one JSON object; a stream
         * labelled application/json is still a stream. */
        size_t lead = 0;
        while (lead < r->resp.len && (body[lead] == ' ' || body[lead] == '\t' ||
                                      body[lead] == '\r' || body[lead] == '\n'))
            lead++;
        bool streamed = r->stream && (!r->plain || lead == r->resp.len || body[lead] != '{');
        if (r->too_large && !r->st.too_large) {
            /* The same request would be answered the same way: not retried. */
            answered(e);
            fail_request(e, r, "%s: %s answered HTTP %ld but its %s passed %zu bytes, the bound "
                         "for max_tokens (does the server ignore max_tokens?)",
                         r->id, ep->url, code, streamed ? "event" : "body", r->body_max);
            return;
        }
        if (streamed)
            openai_stream_feed(&r->st, &r->resp, true, now);
        body = r->resp.data ? (const char *)r->resp.data : "";
        char cause[768];
        openai_verdict v =
            streamed ? openai_stream_result(&r->st, r->submitted, now, &out[0], cause,
                                             sizeof cause)
                      : openai_parse_completion(body, r->resp.len, r->text_max, n_sent, out,
                                                cause, sizeof cause);
        openai_hide_secret(cause, sizeof cause, e->api_key); /* an error event's words */
        if (v == OPENAI_ANSWER_CUT) {
            /* Half an answer is never kept: the row is asked again from
             * the start, as when the connection breaks with an error. The
             * server did answer, so the endpoint stays in rotation (a
             * gateway's "error" is its upstream's). */
            snprintf(why, sizeof why, "HTTP %ld but %s", code, cause);
            retry_or_fail(e, r, ep, code, why, now);
            return;
        }
        answered(e);
        if (v != OPENAI_ANSWER_OK) {
            fail_request(e, r, "%s: %s answered HTTP %ld but %s", r->id, ep->url, code, cause);
            return;
        }
        for (int k = 0; k < n_sent; k++) {
            out[k].endpoint = ep->url;
            out[k].attempts = r->attempts;
            out[k].queue_ms = (r->sent_at - r->submitted) * 1e3;
            if (!streamed)
                out[k].generate_ms = (now - r->sent_at) * 1e3;
        }
        endpoint_ok(e, ep, now - r->sent_at);
        /* The tokens the server computed, once: a choices request's answers
         * are drawn from one scoring. */
        uint64_t generated = 0;
        for (int k = 0; k < n_sent; k++)
            generated += (uint64_t)out[k].generated_tokens;
        pthread_mutex_lock(&e->smu);
        e->prompt_tokens += (uint64_t)out[0].prompt_tokens;
        e->generation_tokens += generated;
        e->choice_probes += r->parent != NULL;
        pthread_mutex_unlock(&e->smu);
        if (r->parent) /* a probe: read by its choices request */
            complete(e, r, out, NULL);
        else if (r->n_choices > 0)
            start_choices(e, r, &out[0], code);
        else if (streamed || n_sent > 1)
            answers_done(e, r, out, NULL, 0);
        else
            answers_done(e, r, out, body, r->resp.len);
        return;
    }
    char msg[768];
    openai_server_message((const char *)r->resp.data, r->resp.len, msg, sizeof msg);
    /* A server may quote the request's Authorization header in its error. */
    openai_hide_secret(msg, sizeof msg, e->api_key);
    if (code >= 300 && code < 400 && r->location[0])
        /* Not followed: a POST and its key go to the endpoint given, and
         * nowhere a server points (http -> https, a moved gateway). */
        snprintf(why, sizeof why, "HTTP %ld, a redirect to %.400s (not followed: give the "
                 "endpoint's URL as it is now, --endpoint)", code, r->location);
    else
        snprintf(why, sizeof why, "HTTP %ld: %s", code, msg);
    if (code == 401 || code == 403) {
        key_refused(e, r, ep, why);
    } else if (http_policy_retriable(code)) {
        retry_or_fail(e, r, ep, code, why, now);
    } else {
        answered(e);
        char refused[1536];
        snprintf(refused, sizeof refused, "%s: %s answered %s", r->id, ep->url, why);
        /* A 4xx is the server refusing this request (OpenAI's
         * invalid_request_error: a batch line's error code), not inference
         * failing. */
        complete_as(e, r, NULL, code >= 400 && code < 500 ? SL_ERR_INVALID_ARG : SL_ERR_ENGINE,
                    refused);
    }
}

static void give_up(oa_engine *e, const char *msg)
{
    pthread_mutex_lock(&e->mu);
    if (!e->fatal) {
        e->fatal = true;
        snprintf(e->fatal_msg, sizeof e->fatal_msg, "%s", msg);
        sl_log(SL_LOG_ERROR, "%s", msg);
    }
    pthread_cond_broadcast(&e->done_cv);
    pthread_mutex_unlock(&e->mu);
}

/* A 401/403 after the check at start (a key revoked or rotated, a gateway
 * that lets GET /v1/models through unauthenticated): every row sent there
 * would fail the same way, so the endpoint leaves rotation for the rest of
 * the run and its row goes to the others; with none left the engine gives up
 * at once rather than fail each remaining row with the same refusal. */
static void key_refused(oa_engine *e, oa_req *r, oa_endpoint *ep, const char *why)
{
    if (!ep->refused) {
        ep->refused = true;
        ep->down_until = INFINITY;
        sl_log(SL_LOG_ERROR, "endpoint %s refused the API key (%s): out of rotation for the rest "
               "of the run", ep->url, why);
    }
    for (int i = 0; i < e->n_eps; i++)
        if (!e->eps[i].refused) {
            list_push(&e->ready, r);
            return;
        }
    char msg[1024];
    snprintf(msg, sizeof msg,
             "every endpoint refused the API key (the last, %.200s: %.600s); stopping: rows finished so "
             "far are kept; check --api-key-env (the key, its access to the model) and run the "
             "same command again",
             ep->url, why);
    /* Held, not failed: the engine is broken and the executor fails the
     * rows it holds (this one with them). Failed as an answer, the last
     * row's refusal ended the run as one with failed rows (exit 3). */
    list_push(&e->ready, r);
    give_up(e, msg);
}

/* Every endpoint failing past the deadline: nothing will finish, so the
 * requests fail and poll() reports the engine broken. Failing is either
 * every endpoint out of rotation (no answer, 408, 5xx), or every attempt
 * ending in an outcome worth retrying (429s too: a fleet that only ever
 * says busy would otherwise keep the job forever). */
static void check_all_down(oa_engine *e, double now)
{
    if (!e->ready.n && !e->delayed.n && !e->active.n)
        e->failing_since = -1.0; /* nothing waits: nothing is failing */
    double running = e->active.head ? now - e->active.head->sent_at : 0.0;
    if (http_policy_stalled(now, e->failing_since, running, e->p.all_down_s)) {
        char msg[1024];
        snprintf(msg, sizeof msg,
                 "every endpoint has been failing for %.0f s: no request was answered, each "
                 "attempt failed in a way worth retrying (the last, %s); stopping: rows "
                 "finished so far are kept",
                 now - e->failing_since, e->last_failure);
        give_up(e, msg);
        return;
    }
    for (int i = 0; i < e->n_eps; i++)
        if (!e->eps[i].refused && healthy(e, &e->eps[i])) {
            e->all_failing_since = -1.0;
            return;
        }
    if (e->all_failing_since < 0) {
        e->all_failing_since = now;
        return;
    }
    if (now - e->all_failing_since < e->p.all_down_s)
        return;
    char msg[1024];
    snprintf(msg, sizeof msg,
             "every endpoint has been failing for %.0f s (%d endpoint%s, the first %s); "
             "stopping: rows finished so far are kept",
             now - e->all_failing_since, e->n_eps, e->n_eps == 1 ? "" : "s", e->eps[0].url);
    give_up(e, msg);
}

static void adapt(oa_engine *e, double now)
{
    if (!e->p.adaptive)
        return;
    for (int i = 0; i < e->n_eps; i++) {
        oa_endpoint *ep = &e->eps[i];
        double span = now - ep->win_start;
        if (span < WINDOW_MIN_S || ep->win_done < ep->limit)
            continue;
        double rps = ep->win_done / span, latency = ep->win_latency / ep->win_done;
        int limit = http_policy_adapt(ep->limit, e->p.adaptive_max_in_flight, ep->win_saturated,
                                      ep->prev_rps, rps, ep->prev_latency, latency);
        if (limit != ep->limit)
            sl_log(SL_LOG_DEBUG, "endpoint %s: %.1f req/s, %.3f s each: in-flight limit %d -> %d",
                   ep->url, rps, latency, ep->limit, limit);
        pthread_mutex_lock(&e->smu);
        ep->limit = limit;
        pthread_mutex_unlock(&e->smu);
        ep->prev_rps = rps;
        ep->prev_latency = latency;
        ep->win_start = now;
        ep->win_done = 0;
        ep->win_latency = 0;
        ep->win_saturated = false;
    }
}

/* How long the loop may sleep: until the next retry, cool-down end or
 * give-up deadline. */
static int next_wait_ms(const oa_engine *e, double now)
{
    double wake = now + 1.0;
    for (const oa_req *r = e->delayed.head; r; r = r->next)
        if (r->next_at < wake)
            wake = r->next_at;
    for (int i = 0; i < e->n_eps; i++)
        if (e->eps[i].down_until > 0 && e->eps[i].down_until < wake)
            wake = e->eps[i].down_until;
    /* The give-up deadlines: the job stops when they pass, not up to a
     * second later. */
    const double since[2] = {e->failing_since, e->all_failing_since};
    for (int i = 0; i < 2; i++)
        if (since[i] >= 0 && since[i] + e->p.all_down_s < wake)
            wake = since[i] + e->p.all_down_s;
    double ms = (wake - now) * 1e3;
    return ms <= 0 ? 0 : (int)ms + 1;
}

/* The run is stopping (sl_engine_cancel_queued): each request not on the
 * wire, queued or waiting to be retried, completes with SL_ERR_STOPPED
 * unsent, so its row is left for the resume rather than kept sending for
 * the stop's whole drain. Continuations stay: probes finish an answer
 * already given (a choices request's), a conversation's next turn
 * (follows) a row whose turns before were answered; dropping them would
 * throw that work away. */
static void cancel_unsent(oa_engine *e)
{
    size_t before = e->n_cancelled;
    req_list *lists[2] = {&e->ready, &e->delayed};
    for (int k = 0; k < 2; k++)
        for (oa_req *r = lists[k]->head, *next; r; r = next) {
            next = r->next;
            if (continuation(r))
                continue;
            list_remove(lists[k], r);
            char msg[600];
            snprintf(msg, sizeof msg, "%.500s: not sent: the run is stopping (a resume does it)",
                     r->id);
            complete_as(e, r, NULL, SL_ERR_STOPPED, msg);
            e->n_cancelled++;
        }
    if (before == 0 && e->n_cancelled > 0)
        sl_log(SL_LOG_INFO, "stopping: %zu queued request%s not sent (the rows are left for the "
               "resume); those on the wire finish", e->n_cancelled, e->n_cancelled == 1 ? "" : "s");
}

static void *oa_loop(void *arg)
{
    oa_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        bool stopping = e->stopping, fatal = e->fatal, cancel = e->cancel_queued;
        while (e->incoming.head) {
            oa_req *r = e->incoming.head;
            list_remove(&e->incoming, r);
            list_push(&e->ready, r);
        }
        pthread_mutex_unlock(&e->mu);
        if (stopping)
            break;
        if (cancel) /* before dispatch: nothing queued goes out */
            cancel_unsent(e);
        double now = sl_mono_s();
        for (oa_req *r = e->delayed.head, *next; r; r = next) {
            next = r->next;
            if (r->next_at <= now || fatal) {
                list_remove(&e->delayed, r);
                list_push(&e->ready, r);
            }
        }
        if (fatal) {
            /* Nothing more goes out; what was not answered is dropped with
             * the engine (the executor fails those rows). */
        } else {
            check_all_down(e, now);
            adapt(e, now);
            dispatch(e, now);
        }
        int running;
        curl_multi_perform(e->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(e->multi, &left)))
            if (m->msg == CURLMSG_DONE)
                finish(e, m->easy_handle, m->data.result);
        set_waiting(e);
        now = sl_mono_s();
        curl_multi_poll(e->multi, NULL, 0, fatal ? 1000 : next_wait_ms(e, now), NULL);
    }
    return NULL;
}

/* --- the ops ------------------------------------------------------------------------ */

static sl_status oa_poll(void *impl, sl_completion *out, size_t max, int timeout_ms, size_t *n)
{
    oa_engine *e = impl;
    pthread_mutex_lock(&e->mu);
    if (e->n_done == 0 && !e->fatal && timeout_ms > 0) {
        struct timespec ts;
        sl_deadline_after(timeout_ms, &ts);
        while (e->n_done == 0 && !e->fatal)
            if (pthread_cond_timedwait(&e->done_cv, &e->mu, &ts) != 0)
                break;
    }
    size_t k = 0;
    while (k < max && e->n_done > 0)
        out[k++] = e->done[--e->n_done];
    e->in_flight -= k;
    bool fatal = e->fatal && k == 0;
    pthread_mutex_unlock(&e->mu);
    *n = k;
    return fatal ? sl_fail(SL_ERR_IO, "%s", e->fatal_msg) : SL_OK;
}

static size_t oa_in_flight(const void *impl)
{
    oa_engine *e = (oa_engine *)impl;
    pthread_mutex_lock(&e->mu);
    size_t n = e->in_flight;
    pthread_mutex_unlock(&e->mu);
    return n;
}

static void oa_stats(const void *impl, sl_engine_stats *out)
{
    oa_engine *e = (oa_engine *)impl;
    pthread_mutex_lock(&e->smu);
    out->requests_running = e->running;
    out->requests_waiting = e->waiting;
    out->prompt_tokens = e->prompt_tokens;
    out->generation_tokens = e->generation_tokens;
    out->choice_probes = e->choice_probes;
    pthread_mutex_unlock(&e->smu);
}

static const char *oa_model_name(const void *impl) { return ((const oa_engine *)impl)->model; }

static size_t oa_endpoint_count(const void *impl) { return (size_t)((const oa_engine *)impl)->n_eps; }

static void oa_endpoint_stats(const void *impl, size_t i, sl_endpoint_stats *out)
{
    oa_engine *e = (oa_engine *)impl;
    oa_endpoint *ep = &e->eps[i];
    pthread_mutex_lock(&e->smu);
    out->url = ep->url;
    out->in_flight = ep->in_flight;
    out->limit = ep->limit;
    out->down = ep->unhealthy;
    out->requests = ep->requests;
    out->retries = ep->retries;
    out->n_codes = ep->n_codes;
    memcpy(out->codes, ep->codes, sizeof out->codes);
    memcpy(out->code_counts, ep->code_counts, sizeof out->code_counts);
    pthread_mutex_unlock(&e->smu);
}

static void oa_cancel_queued(void *impl)
{
    oa_engine *e = impl;
    pthread_mutex_lock(&e->mu);
    e->cancel_queued = true;
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->multi); /* the loop cancels before it next dispatches */
}

static void free_list(req_list *l)
{
    while (l->head) {
        oa_req *r = l->head;
        list_remove(l, r);
        req_free(r);
    }
}

static void oa_free(void *impl)
{
    oa_engine *e = impl;
    if (!e)
        return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = true;
        pthread_mutex_unlock(&e->mu);
        curl_multi_wakeup(e->multi);
        pthread_join(e->thread, NULL);
    }
    for (oa_req *r = e->active.head; r; r = r->next) {
        curl_multi_remove_handle(e->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    free_list(&e->active);
    free_list(&e->ready);
    free_list(&e->delayed);
    free_list(&e->incoming);
    free_list(&e->probing);
    for (size_t i = 0; i < e->n_pool; i++)
        curl_easy_cleanup(e->pool[i]);
    sl_free(e->pool);
    for (size_t i = 0; i < e->n_done; i++)
        sl_completion_clear(&e->done[i]);
    sl_free(e->done);
    if (e->multi)
        curl_multi_cleanup(e->multi);
    curl_slist_free_all(e->headers);
    sl_free(e->api_key);
    json_decref(e->response_format);
    for (int i = 0; i < e->n_eps; i++) {
        sl_free(e->eps[i].url);
        sl_free(e->eps[i].chat_url);
        sl_free(e->eps[i].models_url);
        sl_free(e->eps[i].query);
    }
    sl_free(e->eps);
    sl_free(e->model);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->smu);
    pthread_cond_destroy(&e->done_cv);
    sl_free(e);
}

/* Choices are scored from the alternatives the server gives (the first
 * token's, then probes' where choices begin alike): nothing to check
 * before a row but their shape (sl_engine_submit did); the tokens are the
 * server's, unknown here. */
static sl_status oa_check_choices(void *impl, const char *who, const char *system_prompt,
                                  const char *prompt, const char *const *choices, int n,
                                  int32_t *tokens)
{
    (void)impl, (void)system_prompt, (void)prompt;
    for (int k = 0; tokens && k < SL_CHOICE_VARIANTS * n; k++)
        tokens[k] = -1;
    return sl_choices_check(who, choices, n);
}

static const sl_engine_ops openai_ops = {
    .kind = "openai",
    .submit = oa_submit,
    .poll = oa_poll,
    .in_flight = oa_in_flight,
    .stats = oa_stats,
    .model_name = oa_model_name,
    .free = oa_free,
    .check_choices = oa_check_choices,
    .endpoint_count = oa_endpoint_count,
    .endpoint_stats = oa_endpoint_stats,
    .cancel_queued = oa_cancel_queued,
};

/* --- opening ------------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void init_curl(void) { curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* "http://h:8000/", "http://h:8000/v1" -> "http://h:8000". */
/* The base of an --endpoint URL: without its query (a gateway's
 * "?api-version=...", which *query gets, '?' included, to be appended to
 * each URL made from the base), trailing slashes and "/v1". */
static char *base_url(const char *url, char **query)
{
    size_t n = strcspn(url, "?");
    if (!(*query = sl_strdup(url + n)))
        return NULL;
    while (n > 0 && url[n - 1] == '/')
        n--;
    if (n >= 3 && strncmp(url + n - 3, "/v1", 3) == 0)
        n -= 3;
    return sl_strndup(url, n);
}

/* Does a GET /v1/models listing (a 200's body) name `model`? Its ids
 * are written into `names` (for the message when not). */
static bool lists_model(json_t *root, const char *model, char *names, size_t cap)
{
    size_t i, used = 0;
    json_t *m;
    bool found = false;
    names[0] = '\0';
    json_array_foreach(json_object_get(root, "data"), i, m) {
        const char *id = json_string_value(json_object_get(m, "id"));
        if (!id)
            continue;
        found |= strcmp(id, model) == 0;
        if (used < cap)
            used += (size_t)snprintf(names + used, cap - used, "%s'%s'", used ? ", " : "", id);
    }
    return found;
}

static bool stop_requested(const oa_engine *e)
{
    return e->p.stop_requests && atomic_load(e->p.stop_requests) > 0;
}

/* One round of GET /v1/models on every endpoint at once. An endpoint that
 * does not answer, or answers 5xx (llama-server's 503 "Loading model"),
 * starts out of rotation; when none answers and some said 5xx, SL_OK with
 * what they said in `waiting` (else ""): ask again. One that answers
 * 401/403 is a wrong key; 404 or a body that is no listing on every one
 * that answered, a wrong base URL; a listing without --served-model, a
 * wrong model. */
static sl_status check_endpoints_once(oa_engine *e, char *waiting, size_t waiting_cap)
{
    CURLM *m = curl_multi_init();
    int n = e->n_eps;
    oa_req *probes = sl_calloc((size_t)n, sizeof *probes);
    CURL **hs = sl_calloc((size_t)n, sizeof *hs);
    if (!m || !probes || !hs) {
        curl_multi_cleanup(m);
        sl_free(probes);
        sl_free(hs);
        return sl_fail(SL_ERR_NOMEM, "out of memory checking the endpoints");
    }
    char *urls[n];
    for (int i = 0; i < n; i++) {
        urls[i] = sl_strdup(e->eps[i].models_url);
        hs[i] = curl_easy_init();
        if (!urls[i] || !hs[i])
            continue;
        double t = e->p.connect_timeout_s < 10 ? e->p.connect_timeout_s : 10;
        sl_curl_trust(hs[i]);
        curl_easy_setopt(hs[i], CURLOPT_URL, urls[i]);
        curl_easy_setopt(hs[i], CURLOPT_HTTPHEADER, e->headers);
        curl_easy_setopt(hs[i], CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(hs[i], CURLOPT_WRITEDATA, &probes[i]);
        probes[i].easy = hs[i];
        probes[i].body_max = PROBE_BODY_MAX;
        curl_easy_setopt(hs[i], CURLOPT_ERRORBUFFER, probes[i].errbuf);
        curl_easy_setopt(hs[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(hs[i], CURLOPT_CONNECTTIMEOUT_MS, (long)(t * 1000));
        curl_easy_setopt(hs[i], CURLOPT_TIMEOUT_MS, (long)(t * 2000));
        curl_multi_add_handle(m, hs[i]);
    }
    int running = 1;
    while (running && !stop_requested(e)) { /* a hung server holds a probe 20 s */
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 200, NULL);
    }
    CURLcode res[n];
    for (int i = 0; i < n; i++)
        res[i] = CURLE_FAILED_INIT;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        for (int i = 0; i < n; i++)
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == hs[i])
                res[i] = msg->data.result;
    sl_status st = SL_OK;
    int answered = 0, listings = 0;
    char errors[2048] = "", wrong_base[512] = "";
    int not_ready = 0;
    waiting[0] = '\0';
    size_t used = 0;
    double now = sl_mono_s();
    for (int i = 0; i < n && st == SL_OK; i++) {
        oa_endpoint *ep = &e->eps[i];
        long code = 0;
        if (res[i] == CURLE_OK || probes[i].too_large || probes[i].error_cut)
            curl_easy_getinfo(hs[i], CURLINFO_RESPONSE_CODE, &code);
        if (code == 401 || code == 403) {
            char sm[512];
            openai_server_message((const char *)probes[i].resp.data, probes[i].resp.len, sm,
                                  sizeof sm);
            openai_hide_secret(sm, sizeof sm, e->api_key);
            st = sl_fail(SL_ERR_INVALID_ARG,
                         "endpoint %s refused the API key (HTTP %ld: %s); set the key's "
                         "environment variable and name it with --api-key-env",
                         ep->url, code, sm);
        } else if (code > 0 && code < 500) {
            answered++;
            const sl_buf *b = &probes[i].resp;
            json_t *root = code == 200 && !probes[i].too_large
                               ? json_loadb(b->data ? (const char *)b->data : "", b->len, 0, NULL)
                               : NULL;
            char names[1024];
            if (code == 200 && probes[i].too_large) {
                /* A router's listing past what is read: it cannot say the
                 * model, nor show one missing, so a named one is trusted. */
                listings++;
                if (!e->model)
                    st = sl_fail(SL_ERR_INVALID_ARG,
                                 "endpoint %s lists its models in over %d MiB (GET "
                                 "/v1/models), more than sluice reads to choose one; name the "
                                 "model with --served-model",
                                 ep->url, PROBE_BODY_MAX >> 20);
                else
                    sl_log(SL_LOG_WARN,
                           "endpoint %s lists its models in over %d MiB (GET /v1/models), more "
                           "than sluice reads: not checked that it serves '%s'",
                           ep->url, PROBE_BODY_MAX >> 20, e->model);
            } else if (!json_is_array(json_object_get(root, "data"))) {
                if (!wrong_base[0])
                    snprintf(wrong_base, sizeof wrong_base, "%s answered HTTP %ld%s for %s",
                             ep->url, code, code == 200 ? " but no model listing" : "",
                             urls[i]);
            } else if (listings++, e->model &&
                       !lists_model(root, e->model, names, sizeof names)) {
                if (e->model_from < 0)
                    st = sl_fail(SL_ERR_INVALID_ARG,
                                 "--served-model '%s': endpoint %s does not serve it (GET "
                                 "/v1/models lists %s); give one of those",
                                 e->model, ep->url, names[0] ? names : "no model");
                else
                    st = sl_fail(SL_ERR_INVALID_ARG,
                                 "endpoint %s does not serve '%s', the model endpoint %s lists "
                                 "first (GET /v1/models lists %s there): the fleet serves "
                                 "different models; name the one to use with --served-model "
                                 "and give only endpoints serving it",
                                 ep->url, e->model, e->eps[e->model_from].url,
                                 names[0] ? names : "no model");
            } else if (!e->model) {
                const char *id = json_string_value(
                    json_object_get(json_array_get(json_object_get(root, "data"), 0), "id"));
                if (id) {
                    e->model = sl_strdup(id);
                    e->model_from = i;
                }
            }
            json_decref(root);
        } else {
            char http[128];
            if (code > 0) {
                char sm[96];
                openai_server_message((const char *)probes[i].resp.data, probes[i].resp.len, sm,
                                      sizeof sm);
                openai_hide_secret(sm, sizeof sm, e->api_key);
                snprintf(http, sizeof http, "HTTP %ld: %s", code, sm);
                not_ready++;
            }
            const char *why = code > 0 ? http
                              : probes[i].errbuf[0] ? probes[i].errbuf
                              : res[i] == CURLE_FAILED_INIT ? "cannot start the request"
                                                            : sl_curl_why(res[i], NULL);
            if (used < sizeof errors)
                used += (size_t)snprintf(errors + used, sizeof errors - used, "%s%s: %s",
                                         used ? "; " : "", ep->url, why);
            set_fails(e, ep, e->p.endpoint_failures);
            ep->down_until = now + e->p.cooldown_s;
        }
    }
    if (st == SL_OK && answered > 0 && listings == 0)
        st = sl_fail(SL_ERR_INVALID_ARG,
                     "%s: no endpoint lists its models there; give each server's base URL "
                     "(http://host:8000 or http://host:8000/v1), not the chat completions URL",
                     wrong_base);
    else if (st == SL_OK && answered == 0 && not_ready > 0)
        snprintf(waiting, waiting_cap, "%s", errors);
    else if (st == SL_OK && answered == 0)
        st = sl_fail(SL_ERR_INVALID_ARG,
                     "no endpoint answers GET /v1/models (%s); check --endpoint and that the "
                     "servers are up", errors);
    else if (st == SL_OK && used)
        sl_log(SL_LOG_WARN, "starting without these endpoints (retried after %.0f s): %s",
               e->p.cooldown_s, errors);
    for (int i = 0; i < n; i++) {
        if (hs[i]) {
            curl_multi_remove_handle(m, hs[i]);
            curl_easy_cleanup(hs[i]);
        }
        sl_free(urls[i]);
        sl_buf_free(&probes[i].resp);
    }
    sl_free(probes);
    sl_free(hs);
    curl_multi_cleanup(m);
    return st;
}

/* The endpoints checked; while every one that answers is not ready yet
 * (5xx: a server loading its model), asked again each second up to
 * --give-up-after, or until a stop request: the run's first Ctrl-C went
 * unheeded for the two minutes of the default --give-up-after, nothing in
 * flight to finish, while the live page said the run was going on. */
static sl_status check_endpoints(oa_engine *e)
{
    double start = sl_mono_s(), said = -1e9;
    for (;;) {
        char waiting[2048] = ""; /* set by the probe, but not when it runs out of memory */
        sl_status st = check_endpoints_once(e, waiting, sizeof waiting);
        if (stop_requested(e)) /* (a probe it cut short says nothing of its server) */
            return sl_fail(SL_ERR_STOPPED,
                           "stopped on request while waiting for an endpoint to be ready%s%s%s",
                           waiting[0] ? " (" : "", waiting, waiting[0] ? ")" : "");
        if (st != SL_OK || !waiting[0])
            return st;
        double now = sl_mono_s();
        if (now - start >= e->p.all_down_s)
            return sl_fail(SL_ERR_IO,
                           "no endpoint was ready after %.0f s (--give-up-after): GET /v1/models "
                           "answered %s; is the model still loading?",
                           now - start, waiting);
        if (now - said >= 10) {
            sl_log(SL_LOG_WARN, "waiting for an endpoint to be ready: %s", waiting);
            said = now;
        }
        struct timespec slice = {0, 100 * 1000 * 1000}; /* a second, a stop heard within 0.1 s */
        for (int i = 0; i < 10 && !stop_requested(e); i++)
            nanosleep(&slice, NULL);
    }
}

/* An HTTP header's name: RFC 9110's token. */
static bool header_name_ok(const char *name, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

static sl_status check_headers(const sl_openai_params *p)
{
    if (p->api_key_header && *p->api_key_header &&
        !header_name_ok(p->api_key_header, strlen(p->api_key_header)))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--api-key-header '%s': not a header name (letters, digits and "
                       "!#$%%&'*+-.^_`|~, no ':')",
                       p->api_key_header);
    for (int i = 0; i < p->n_headers; i++) {
        const char *h = p->headers[i];
        size_t name = strcspn(h, ":");
        if (!h[name] || !header_name_ok(h, name))
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--header '%s': expected 'NAME: VALUE', NAME a header name", h);
        for (const char *c = h + name; *c; c++)
            if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
                return sl_fail(SL_ERR_INVALID_ARG,
                               "--header '%.*s: ...': the value holds a control character "
                               "(a line break?)",
                               (int)name, h);
    }
    return SL_OK;
}

sl_status sl_openai_check_params(const sl_openai_params *p)
{
    if (p->n_endpoints < 1 || !p->endpoints)
        return sl_fail(SL_ERR_INVALID_ARG, "the openai engine needs at least one --endpoint URL");
    for (int i = 0; i < p->n_endpoints; i++) {
        const char *u = p->endpoints[i];
        if (!u || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0))
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--endpoint '%s': expected a URL such as http://127.0.0.1:8000",
                           u ? u : "(null)");
    }
    sl_status st = check_headers(p);
    if (st != SL_OK)
        return st;
    if (p->max_in_flight < 1 || p->max_attempts < 1 || p->endpoint_failures < 1)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--max-in-flight and --max-attempts must be >= 1 (got %d and %d)",
                       p->max_in_flight, p->max_attempts);
    if (!(p->request_timeout_s > 0) || !(p->connect_timeout_s > 0))
        return sl_fail(SL_ERR_INVALID_ARG, "--request-timeout must be positive, got %g",
                       p->request_timeout_s);
    if (!(p->retry_after_max_s >= 0))
        return sl_fail(SL_ERR_INVALID_ARG, "retry_after_max_s must be >= 0, got %g",
                       p->retry_after_max_s);
    return SL_OK;
}

sl_status sl_engine_open_openai(const sl_openai_params *params, sl_engine **out)
{
    if (!params || !out)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_engine_open_openai: NULL %s",
                       !params ? "params" : "out");
    *out = NULL;
    sl_status st = sl_openai_check_params(params);
    if (st != SL_OK)
        return st;
    pthread_once(&curl_once, init_curl);
    if (curl_init_result != CURLE_OK)
        return sl_fail(SL_ERR_IO, "cannot initialise libcurl: %s",
                       curl_easy_strerror(curl_init_result));
    oa_engine *e = sl_calloc(1, sizeof *e);
    if (!e)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening the openai engine");
    e->p = *params;
    e->p.endpoints = NULL;
    if (e->p.adaptive_max_in_flight < e->p.max_in_flight)
        e->p.adaptive_max_in_flight = e->p.max_in_flight;
    e->all_failing_since = -1.0;
    e->failing_since = -1.0;
    e->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)e;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->smu, NULL);
    sl_cond_init_monotonic(&e->done_cv);
    e->n_eps = params->n_endpoints;
    e->eps = sl_calloc((size_t)e->n_eps, sizeof *e->eps);
    if (!e->eps)
        goto nomem;
    double now = sl_mono_s();
    for (int i = 0; i < e->n_eps; i++) {
        oa_endpoint *ep = &e->eps[i];
        if (!(ep->url = base_url(params->endpoints[i], &ep->query)) ||
            !(ep->chat_url = sl_asprintf("%s/v1/chat/completions%s", ep->url, ep->query)) ||
            !(ep->models_url = sl_asprintf("%s/v1/models%s", ep->url, ep->query)))
            goto nomem;
        /* http://user:PASSWORD@host (a proxy's basic auth): the password
         * goes to the server, not into messages, metrics' labels or rows. */
        if (sl_redact_needed(ep->url)) {
            char *shown = sl_redact_dup(ep->url);
            if (!shown)
                goto nomem;
            sl_free(ep->url);
            ep->url = shown;
        }
        /* Twice the same server would get twice its share, and its
         * failures would count as two endpoints'. */
        for (int k = 0; k < i; k++)
            if (strcmp(e->eps[k].chat_url, ep->chat_url) == 0) {
                st = sl_fail(SL_ERR_INVALID_ARG,
                             "endpoint %s is given twice ('%s' and '%s'): name each server once "
                             "(--max-in-flight sets how many requests it takes)",
                             ep->url, params->endpoints[k], params->endpoints[i]);
                goto fail;
            }
        ep->limit = params->max_in_flight;
        ep->win_start = now;
    }
    e->model_from = -1;
    if (params->served_model && *params->served_model && !(e->model = sl_strdup(params->served_model)))
        goto nomem;
    if (params->response_format) {
        json_error_t jerr;
        e->response_format = json_loads(params->response_format, 0, &jerr);
        if (!json_is_object(e->response_format)) {
            st = sl_fail(SL_ERR_INVALID_ARG, "--response-format: not a JSON object (%s, line %d)",
                         e->response_format ? "another JSON value" : jerr.text, jerr.line);
            goto fail;
        }
    }
    /* "Expect:" off: no 100-continue round trip before large bodies. */
    e->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!e->headers || !curl_slist_append(e->headers, "Expect:"))
        goto nomem;
    if (params->api_key_env && *params->api_key_env) {
        const char *key = getenv(params->api_key_env);
        /* A key read from a file (a Kubernetes secret, $(cat key.txt))
         * ends with a newline, which would end the header early. */
        size_t from = 0, to = key ? strlen(key) : 0;
        while (from < to && strchr(" \t\r\n", key[from]))
            from++;
        while (to > from && strchr(" \t\r\n", key[to - 1]))
            to--;
        if (from == to) {
            st = sl_fail(SL_ERR_INVALID_ARG,
                         "--api-key-env %s: that environment variable is not set or empty",
                         params->api_key_env);
            goto fail;
        }
        for (size_t i = from; i < to; i++)
            if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f) {
                st = sl_fail(SL_ERR_INVALID_ARG,
                             "--api-key-env %s: the key holds a control character (a line break "
                             "or tab inside it); set the variable to the key alone",
                             params->api_key_env);
                goto fail;
            }
        if (!(e->api_key = sl_strndup(key + from, to - from)))
            goto nomem;
        const char *named = params->api_key_header;
        char *auth = named && *named
                         ? sl_asprintf("%s: %.*s", named, (int)(to - from), key + from)
                         : sl_asprintf("Authorization: Bearer %.*s", (int)(to - from), key + from);
        if (!auth || !curl_slist_append(e->headers, auth)) {
            sl_free(auth);
            goto nomem;
        }
        sl_free(auth);
    }
    for (int i = 0; i < params->n_headers; i++)
        if (!curl_slist_append(e->headers, params->headers[i]))
            goto nomem;
    if (params->check_endpoints && (st = check_endpoints(e)) != SL_OK)
        goto fail;
    if (!e->model && !(e->model = sl_strdup("default")))
        goto nomem;
    if (!(e->multi = curl_multi_init()))
        goto nomem;
    long conns = (long)e->n_eps * e->p.adaptive_max_in_flight + 4;
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, conns);
    if (pthread_create(&e->thread, NULL, oa_loop, e) != 0) {
        st = sl_fail(SL_ERR_IO, "cannot start the openai engine's thread");
        goto fail;
    }
    e->thread_started = true;
    return sl_engine_wrap(&openai_ops, e, out);
nomem:
    st = sl_fail(SL_ERR_NOMEM, "out of memory opening the openai engine");
fail:
    oa_free(e);
    return st;
}
