/* llm/engine.c — the engine handle: argument checks, then dispatch to a
 * backend's ops; the synchronous call built on submit + poll. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <math.h>
#include <jansson.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/error.h"
#include "core/utf8.h"
#include "llm/engine_impl.h"

struct sl_engine {
    const sl_engine_ops *ops;
    void *impl;
};

sl_status sl_engine_wrap(const sl_engine_ops *ops, void *impl, sl_engine **out)
{
    sl_engine *e = sl_calloc(1, sizeof *e);
    if (!e) {
        ops->free(impl);
        return sl_fail(SL_ERR_NOMEM, "out of memory creating the %s engine", ops->kind);
    }
    e->ops = ops;
    e->impl = impl;
    *out = e;
    return SL_OK;
}

/* `who`: "" or " task NAME". */
static sl_status check_sampling(const char *id, const char *who, const sl_sampling *sampling)
{
    if (sampling->max_tokens <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "%s:%s max_tokens must be positive, got %d", id, who,
                       sampling->max_tokens);
    if (sampling->top_logprobs < 0 || sampling->top_logprobs > SL_MAX_TOP_LOGPROBS)
        return sl_fail(SL_ERR_INVALID_ARG, "%s:%s top_logprobs is %d; it takes 0 to %d", id, who,
                       sampling->top_logprobs, SL_MAX_TOP_LOGPROBS);
    if (sampling->n < 0 || sampling->n > SL_MAX_ANSWERS)
        return sl_fail(SL_ERR_INVALID_ARG, "%s:%s n is %d; a request takes 1 to %d answers", id,
                       who, sampling->n, SL_MAX_ANSWERS);
    return SL_OK;
}

/* The checks of one prompt; `task` NULL for a request without tasks. */
static sl_status check_prompt(const char *id, const char *task, const char *prompt,
                              const char *system_prompt, const sl_sampling *sampling)
{
    char who[64] = "";
    if (task)
        snprintf(who, sizeof who, " task %.40s", task);
    if (!prompt)
        return sl_fail(SL_ERR_INVALID_ARG, "%s:%s request has no prompt", id, who);
    sl_status st = check_sampling(id, who, sampling);
    if (st != SL_OK)
        return st;
    /* Chat templates and JSON bodies need text: a prompt read from a
     * manifest may be any bytes. */
    if (!sl_utf8_valid(prompt, strlen(prompt)))
        return sl_fail(SL_ERR_INVALID_ARG, "%s:%s the prompt is not valid UTF-8", id, who);
    if (system_prompt && !sl_utf8_valid(system_prompt, strlen(system_prompt)))
        return sl_fail(SL_ERR_INVALID_ARG, "%s:%s the system prompt is not valid UTF-8", id, who);
    return SL_OK;
}

static sl_status check_stops(const char *id, const sl_request *request)
{
    if (request->n_stop < 0 || (request->n_stop > 0 && !request->stop))
        return sl_fail(SL_ERR_INVALID_ARG, "%s: bad stop strings", id);
    for (int i = 0; i < request->n_stop; i++)
        if (!request->stop[i] || !sl_utf8_valid(request->stop[i], strlen(request->stop[i])))
            return sl_fail(SL_ERR_INVALID_ARG, "%s: stop string %d is not valid UTF-8", id, i + 1);
    return SL_OK;
}

sl_status sl_choices_check(const char *who, const char *const *choices, int n)
{
    if (n == 0)
        return SL_OK;
    if (n < 2 || n > SL_MAX_CHOICES || !choices)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: %d given; the answer is one of 2 to %d", who, n,
                       SL_MAX_CHOICES);
    for (int i = 0; i < n; i++) {
        if (!choices[i] || !*choices[i] || !sl_utf8_valid(choices[i], strlen(choices[i])))
            return sl_fail(SL_ERR_INVALID_ARG, "%s: choice %d is empty or not valid UTF-8", who,
                           i + 1);
        for (int k = 0; k < i; k++)
            if (strcmp(choices[k], choices[i]) == 0)
                return sl_fail(SL_ERR_INVALID_ARG, "%s: '%.60s' is given twice", who, choices[i]);
    }
    return SL_OK;
}

int sl_choice_pick(const double *p, int n, float temperature, uint64_t seed)
{
    int pick = 0;
    for (int i = 0; i < n; i++)
        if (p[i] > p[pick])
            pick = i;
    if (!(temperature > 0) || !(p[pick] > 0))
        return pick;
    /* Drawn from the scores sharpened (or flattened) by the temperature. */
    double w[SL_MAX_CHOICES], total = 0, lp_top = log(p[pick]);
    for (int i = 0; i < n; i++)
        total += w[i] = p[i] > 0 ? exp((log(p[i]) - lp_top) / (double)temperature) : 0;
    uint64_t z = seed + 0x9e3779b97f4a7c15u; /* splitmix64's finalizer */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    double u = (double)(z >> 11) * 0x1.0p-53 * total;
    for (pick = 0; pick < n - 1 && (u -= w[pick]) >= 0; pick++)
        ;
    while (pick > 0 && w[pick] == 0) /* u landed past the last with weight */
        pick--;
    return pick;
}

char *sl_choice_scores_json(const char *const *choices, const double *p, int n)
{
    json_t *o = json_object();
    for (int i = 0; o && i < n; i++)
        if (json_object_set_new(o, choices[i], json_real(p[i])) != 0) {
            json_decref(o);
            o = NULL;
        }
    char *text = o ? sl_json_dump(o, JSON_COMPACT | JSON_REAL_PRECISION(6), NULL) : NULL;
    json_decref(o);
    return text;
}

/* The checks of a prompt's choices (request or task; `who` as for
 * check_sampling): their shape, and nothing else constraining the answer. */
static sl_status check_choices(const char *id, const char *who,
                               const char *const *choices, int n, const sl_sampling *sampling,
                               const char *json_schema, const char *grammar)
{
    if (n == 0)
        return SL_OK;
    char named[160];
    snprintf(named, sizeof named, "%s:%s choices", id, who);
    sl_status st = sl_choices_check(named, choices, n);
    if (st != SL_OK)
        return st;
    if (json_schema || grammar || sampling->logprobs)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s take no %s: the answer is one of the choices, with its scores", named,
                       json_schema ? "JSON schema" : grammar ? "grammar" : "logprobs");
    return SL_OK;
}

/* Messages in a conversation at most: a bound on what one request may ask
 * the engine to copy and render, far above any chat a batch file holds. */
#define MAX_MESSAGES 256

/* The checks of a conversation (request->n_messages > 0): its shape, roles
 * and text, and that its image parts match the images given. Each message
 * names the request and the message's index (0-based, as in the body's
 * "messages" array). */
static sl_status check_conversation(const char *id, const sl_request *q)
{
    if (q->n_messages > MAX_MESSAGES || !q->messages)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: %d messages; a conversation takes 1 to %d", id,
                       q->n_messages, MAX_MESSAGES);
    if (q->prompt || q->system_prompt || q->image || q->image_encoded)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s: a conversation (messages) takes no prompt, system prompt or image of "
                       "its own: put them in its messages",
                       id);
    if (q->n_tasks != 0)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: a conversation (messages) cannot have tasks", id);
    sl_status st = check_sampling(id, "", &q->sampling);
    if (st != SL_OK)
        return st;
    int image_parts = 0;
    for (int i = 0; i < q->n_messages; i++) {
        const sl_message *m = &q->messages[i];
        if (!m->role || (strcmp(m->role, "system") != 0 && strcmp(m->role, "user") != 0 &&
                         strcmp(m->role, "assistant") != 0))
            return sl_fail(SL_ERR_INVALID_ARG,
                           "%s: message %d: role '%.40s' is not system, user or assistant", id, i,
                           m->role ? m->role : "(none)");
        if (m->n_parts < 0 || (m->n_parts > 0 && !m->parts))
            return sl_fail(SL_ERR_INVALID_ARG, "%s: message %d: bad content parts (%d)", id, i,
                           m->n_parts);
        for (int k = 0; k < m->n_parts; k++) {
            const char *text = m->parts[k].text;
            if (!text)
                image_parts++;
            else if (!sl_utf8_valid(text, strlen(text))) {
                return sl_fail(SL_ERR_INVALID_ARG, "%s: message %d: part %d is not valid UTF-8",
                               id, i, k);
            }
        }
    }
    if (image_parts > SL_MAX_IMAGES)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: %d images; a request takes at most %d", id,
                       image_parts, SL_MAX_IMAGES);
    if (image_parts != q->n_images)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s: the messages have %d image parts but %d images were given", id,
                       image_parts, q->n_images);
    return SL_OK;
}

/* The checks of a prompt's several images (n_images > 0, no messages). */
static sl_status check_prompt_images(const char *id, const sl_request *q)
{
    if (q->n_images < 0 || q->n_images > SL_MAX_IMAGES)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: %d images; a request takes at most %d", id,
                       q->n_images, SL_MAX_IMAGES);
    if (q->image || q->image_encoded)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s: a request takes one image or several images, not both", id);
    if (!q->images && !q->images_encoded)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: %d images said but none given", id, q->n_images);
    if (q->openai_body)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s: images without messages go with a prompt, not a request body", id);
    for (int i = 0; q->image_texts && i < q->n_images; i++)
        if (q->image_texts[i] && !sl_utf8_valid(q->image_texts[i], strlen(q->image_texts[i])))
            return sl_fail(SL_ERR_INVALID_ARG, "%s: the text of image %d is not valid UTF-8", id,
                           i + 1);
    return SL_OK;
}

const sl_request *sl_prompt_as_conversation(const sl_request *q, sl_prompt_conversation *c)
{
    if (q->n_messages > 0 || q->n_images <= 0)
        return q;
    c->req = *q;
    int n_msgs = 0, n_parts = 0;
    if (q->system_prompt && *q->system_prompt) {
        c->system.text = q->system_prompt;
        c->messages[n_msgs++] = (sl_message){.role = "system", .parts = &c->system, .n_parts = 1};
    }
    for (int i = 0; i < q->n_images && i < SL_MAX_IMAGES; i++) {
        const char *text = q->image_texts ? q->image_texts[i] : NULL;
        if (text && *text)
            c->parts[n_parts++].text = text;
        c->parts[n_parts++].text = NULL;
    }
    c->parts[n_parts++].text = q->prompt ? q->prompt : "";
    c->messages[n_msgs++] = (sl_message){.role = "user", .parts = c->parts, .n_parts = n_parts};
    c->req.messages = c->messages;
    c->req.n_messages = n_msgs;
    c->req.prompt = NULL;
    c->req.system_prompt = NULL;
    c->req.image_texts = NULL;
    return &c->req;
}

sl_status sl_engine_submit(sl_engine *engine, const sl_request *request, void *tag)
{
    if (!engine || !request)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_engine_submit: NULL %s",
                       !engine ? "engine" : "request");
    const char *id = request->id ? request->id : "(request)";
    if (request->n_messages < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: %d messages", id, request->n_messages);
    if (request->n_images != 0 && request->n_messages == 0) {
        sl_status st = check_prompt_images(id, request);
        if (st != SL_OK)
            return st;
    }
    if (request->openai_body && !sl_utf8_valid(request->openai_body, strlen(request->openai_body)))
        return sl_fail(SL_ERR_INVALID_ARG, "%s: the request body is not valid UTF-8", id);
    /* The openai engine sends a whole body in place of the prompt (the
     * llama engine ignores it: it needs messages or a prompt). */
    bool body_only = request->openai_body && request->n_messages == 0 &&
                     strcmp(engine->ops->kind, "openai") == 0;
    if (request->n_messages > 0 || body_only) {
        sl_status st = SL_OK;
        if (request->n_choices != 0)
            return sl_fail(SL_ERR_INVALID_ARG, "%s: choices go with a prompt, not messages or "
                                               "a request body", id);
        if (request->n_messages > 0)
            st = check_conversation(id, request);
        else if (request->n_tasks != 0)
            st = sl_fail(SL_ERR_INVALID_ARG, "%s: a request body cannot have tasks", id);
        else
            st = check_sampling(id, "", &request->sampling);
        if (st == SL_OK)
            st = check_stops(id, request);
        return st == SL_OK ? engine->ops->submit(engine->impl, request, tag) : st;
    }
    if (request->n_tasks < 0 || request->n_tasks > SL_MAX_TASKS ||
        (request->n_tasks > 0 && !request->tasks))
        return sl_fail(SL_ERR_INVALID_ARG, "%s: %d tasks; a request takes 1 to %d", id,
                       request->n_tasks, SL_MAX_TASKS);
    sl_status st = SL_OK;
    if (request->n_tasks == 0) {
        st = check_prompt(id, NULL, request->prompt, request->system_prompt, &request->sampling);
        if (st == SL_OK)
            st = check_choices(id, "", request->choices, request->n_choices,
                               &request->sampling, request->json_schema, request->grammar);
    }
    for (int i = 0; st == SL_OK && i < request->n_tasks; i++) {
        const sl_task *t = &request->tasks[i];
        st = check_prompt(id, t->name ? t->name : "(unnamed)", t->prompt,
                          t->system_prompt ? t->system_prompt : request->system_prompt,
                          &t->sampling);
        if (st == SL_OK && t->sampling.n > 1)
            st = sl_fail(SL_ERR_INVALID_ARG, "%s: task %.40s: a task takes one answer (n is %d)",
                         id, t->name ? t->name : "(unnamed)", t->sampling.n);
        if (st == SL_OK) {
            char who[64];
            snprintf(who, sizeof who, " task %.40s", t->name ? t->name : "(unnamed)");
            bool own = t->n_choices > 0;
            st = check_choices(id, who, own ? t->choices : request->choices,
                               own ? t->n_choices : request->n_choices, &t->sampling,
                               t->json_schema ? t->json_schema : request->json_schema,
                               request->grammar);
        }
    }
    if (st == SL_OK)
        st = check_stops(id, request);
    return st == SL_OK ? engine->ops->submit(engine->impl, request, tag) : st;
}

sl_status sl_engine_poll(sl_engine *engine, sl_completion *out, size_t max, int timeout_ms,
                         size_t *n)
{
    if (!engine || !n || (!out && max > 0))
        return sl_fail(SL_ERR_INVALID_ARG, "sl_engine_poll: NULL %s",
                       !engine ? "engine" : !n ? "n" : "out");
    *n = 0;
    return engine->ops->poll(engine->impl, out, max, timeout_ms, n);
}

size_t sl_engine_in_flight(const sl_engine *engine) { return engine->ops->in_flight(engine->impl); }

void sl_engine_stats_get(const sl_engine *engine, sl_engine_stats *out)
{
    memset(out, 0, sizeof *out);
    engine->ops->stats(engine->impl, out);
}

sl_status sl_engine_generate(sl_engine *engine, const sl_request *request, sl_result *out)
{
    if (!engine || !request || !out)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_engine_generate: NULL %s",
                       !engine ? "engine" : !request ? "request" : "out");
    *out = (sl_result){0};
    if (request->n_tasks > 0)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_engine_generate: a request with tasks needs "
                                           "sl_engine_submit and sl_engine_poll");
    if (sl_engine_in_flight(engine) != 0)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_engine_generate: other requests are in flight");
    int tag;
    sl_status st = sl_engine_submit(engine, request, &tag);
    if (st != SL_OK)
        return st;
    sl_completion c;
    size_t n = 0;
    while (n == 0)
        if ((st = sl_engine_poll(engine, &c, 1, 1000, &n)) != SL_OK)
            return st;
    if (c.status != SL_OK) {
        st = sl_fail(c.status, "%s", c.error ? c.error : "request failed");
        sl_completion_clear(&c);
        return st;
    }
    *out = c.result;
    c.result = (sl_result){0};
    sl_completion_clear(&c);
    return SL_OK;
}

/* The engine's tokens for choices (its op), or its refusal. */
static sl_status choice_op(sl_engine *engine, const char *who, const char *system_prompt,
                           const char *prompt, const char *const *choices, int n, int32_t *tokens)
{
    return engine->ops->check_choices(engine->impl, who, system_prompt, prompt ? prompt : "",
                                      choices, n, tokens);
}

sl_status sl_engine_check_choices(sl_engine *engine, const char *who, const char *system_prompt,
                                  const char *prompt, const char *const *choices, int n_choices)
{
    return n_choices == 0 ? SL_OK
                          : choice_op(engine, who, system_prompt, prompt, choices, n_choices,
                                      NULL);
}

sl_status sl_engine_choice_tokens(sl_engine *engine, const char *system_prompt,
                                  const char *prompt, const char *const *choices, int n,
                                  int32_t *tokens)
{
    return choice_op(engine, "choices", system_prompt, prompt, choices, n, tokens);
}

void sl_result_clear(sl_result *result)
{
    if (!result)
        return;
    sl_free(result->text);
    sl_free(result->trace_tokens);
    sl_free(result->trace_margins);
    sl_free(result->response_json);
    sl_free(result->logprobs);
    sl_free(result->scores);
    *result = (sl_result){0};
}

void sl_completion_clear(sl_completion *c)
{
    if (!c)
        return;
    sl_free(c->error);
    sl_result_clear(&c->result);
    for (int i = 0; c->results && i < c->n_results; i++)
        sl_result_clear(&c->results[i]);
    sl_free(c->results);
    *c = (sl_completion){0};
}

/* --- tasks -------------------------------------------------------------------- */

struct sl_task_group {
    void *tag;
    int n, shares, recorded;
    sl_status status;          /* the first failure */
    char *error;
    sl_result results[];
};

sl_task_group *sl_task_group_new(void *tag, int n_tasks)
{
    sl_task_group *g = sl_calloc(1, sizeof *g + (size_t)n_tasks * sizeof(sl_result));
    if (g)
        *g = (sl_task_group){.tag = tag, .n = n_tasks, .shares = n_tasks};
    return g;
}

void sl_answer_request(const sl_request *q, int k, sl_request *out, char **id_out)
{
    *out = *q;
    out->sampling.seed = sl_sampling_answer_seed(q->sampling.seed, k);
    out->sampling.n = 1;
    *id_out = sl_asprintf("%s, answer %d", q->id ? q->id : "(request)", k + 1);
    out->id = *id_out;
}

void sl_task_request(const sl_request *q, int i, sl_request *out, char **id_out)
{
    const sl_task *t = &q->tasks[i];
    *out = *q;
    out->prompt = t->prompt;
    if (t->system_prompt)
        out->system_prompt = t->system_prompt;
    out->sampling = t->sampling;
    out->sampling.n = q->sampling.n; /* every task answered as many times */
    if (t->json_schema)
        out->json_schema = t->json_schema;
    if (t->n_choices > 0) {
        out->choices = t->choices;
        out->n_choices = t->n_choices;
    }
    out->tasks = NULL;
    out->n_tasks = 0;
    out->task_name = t->name ? t->name : "?";
    *id_out = sl_asprintf("%s, task %s", q->id ? q->id : "(request)", t->name ? t->name : "?");
    out->id = *id_out;
}

void sl_piece_request(const sl_request *q, int i, sl_request *out, char **id_out)
{
    int n = q->sampling.n > 1 ? q->sampling.n : 1;
    if (q->n_tasks == 0) {
        sl_answer_request(q, i, out, id_out);
        return;
    }
    sl_request task;
    char *task_id;
    sl_task_request(q, i / n, &task, &task_id);
    if (n == 1 || !task_id) {
        *out = task;
        *id_out = task_id;
        return;
    }
    sl_answer_request(&task, i % n, out, id_out);
    sl_free(task_id);
}

static void group_free(sl_task_group *g)
{
    for (int i = 0; i < g->n; i++)
        sl_result_clear(&g->results[i]);
    sl_free(g->error);
    sl_free(g);
}

bool sl_task_group_record(sl_task_group *g, int i, sl_status status, const char *error,
                          sl_result *result, sl_completion *out)
{
    if (status == SL_OK || status == SL_ERR_INVALID_OUTPUT) {
        g->results[i] = *result;
        *result = (sl_result){0};
    }
    if (status != SL_OK &&
        (g->status == SL_OK || (status == SL_ERR_STOPPED && g->status != SL_ERR_STOPPED))) {
        /* A task not run because of a stop makes the whole request one to
         * do again (its row is left for the resume), whatever else failed. */
        sl_free(g->error);
        g->status = status;
        g->error = sl_strdup(error ? error : "failed");
    }
    g->recorded++;
    if (--g->shares > 0)
        return false;
    if (g->recorded < g->n) { /* some were dropped: the engine is going away */
        group_free(g);
        return false;
    }
    *out = (sl_completion){.tag = g->tag, .status = g->status, .error = g->error};
    g->error = NULL; /* NULL when every task answered */
    if (g->status != SL_OK && g->status != SL_ERR_INVALID_OUTPUT) {
        /* no answers to write: the row fails without them */
    } else if ((out->results = sl_calloc((size_t)g->n, sizeof *out->results))) {
        memcpy(out->results, g->results, (size_t)g->n * sizeof *out->results);
        memset(g->results, 0, (size_t)g->n * sizeof *g->results);
        out->n_results = g->n;
    } else {
        out->status = SL_ERR_NOMEM;
        sl_free(out->error);
        out->error = sl_strdup("out of memory gathering the tasks' answers");
    }
    group_free(g);
    return true;
}

void sl_task_group_drop(sl_task_group *g)
{
    if (g && --g->shares == 0)
        group_free(g);
}

/* --- chat.completion objects ------------------------------------------------ */

static uint64_t id_seed;
static atomic_uint_fast64_t id_counter;

static void id_seed_init(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    id_seed = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    id_seed ^= (uint64_t)getpid() << 40;
}

/* splitmix64: consecutive counters give ids that look unrelated. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15u;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
    return x ^ (x >> 31);
}

void sl_chat_completion_id(char *out, size_t cap)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, id_seed_init);
    uint64_t n = atomic_fetch_add(&id_counter, 1);
    /* The process's random part, then the counter (from a random start):
     * unique within the process for 2^32 answers whatever the mix does. */
    snprintf(out, cap, "chatcmpl-%016llx%08lx", (unsigned long long)mix64(id_seed),
             (unsigned long)((n + (mix64(id_seed + 1) >> 32)) & 0xffffffffu));
}

char *sl_chat_completion_json(const char *id, const char *model, long long created,
                              const sl_result *res)
{
    char fresh[40];
    if (!id) {
        sl_chat_completion_id(fresh, sizeof fresh);
        id = fresh;
    }
    json_t *root = json_object(), *choice = json_object(), *message = json_object(),
           *usage = json_object(), *details = json_object(), *choices = json_array();
    /* The engine's own text: loads unless memory runs out. */
    json_t *logprobs = res->logprobs ? json_loads(res->logprobs, 0, NULL) : NULL;
    int bad = !root || !choice || !message || !usage || !details || !choices ||
              (res->logprobs && !logprobs);
    const char *text = res->text ? res->text : "";
    if (!bad)
        bad = json_object_set_new(message, "role", json_string("assistant")) ||
              json_object_set_new(message, "content", json_stringn_nocheck(text, strlen(text))) ||
              json_object_set_new(choice, "index", json_integer(0)) ||
              json_object_set(choice, "message", message) ||
              /* none given (a server's null): null, as OpenAI writes it */
              json_object_set_new(choice, "finish_reason",
                                  res->finish_reason ? json_string(res->finish_reason)
                                                     : json_null()) ||
              json_object_set_new(choice, "logprobs",
                                  logprobs ? json_incref(logprobs) : json_null()) ||
              json_array_append(choices, choice) ||
              json_object_set_new(usage, "prompt_tokens", json_integer(res->prompt_tokens)) ||
              json_object_set_new(usage, "completion_tokens",
                                  json_integer(res->generated_tokens)) ||
              json_object_set_new(usage, "total_tokens",
                                  json_integer((json_int_t)res->prompt_tokens +
                                               res->generated_tokens)) ||
              json_object_set_new(details, "cached_tokens", json_integer(res->cached_tokens)) ||
              json_object_set(usage, "prompt_tokens_details", details) ||
              json_object_set_new(root, "id", json_string(id)) ||
              json_object_set_new(root, "object", json_string("chat.completion")) ||
              json_object_set_new(root, "created",
                                  json_integer(created ? created : (json_int_t)time(NULL))) ||
              json_object_set_new(root, "model", json_string(model ? model : "")) ||
              json_object_set(root, "choices", choices) ||
              json_object_set(root, "usage", usage);
    char *out = NULL;
    if (!bad) {
        /* The answer's text is sanitized UTF-8 already; a model name or id
         * that is not makes json_string() fail above. */
        out = sl_json_dump(root, JSON_COMPACT, NULL);
    }
    json_decref(root);
    json_decref(choice);
    json_decref(message);
    json_decref(usage);
    json_decref(details);
    json_decref(choices);
    json_decref(logprobs);
    return out;
}

const char *sl_engine_kind(const sl_engine *engine) { return engine->ops->kind; }

bool sl_engine_cancel_queued(sl_engine *engine)
{
    if (!engine->ops->cancel_queued)
        return false;
    engine->ops->cancel_queued(engine->impl);
    return true;
}

size_t sl_engine_endpoint_count(const sl_engine *engine)
{
    return engine->ops->endpoint_count ? engine->ops->endpoint_count(engine->impl) : 0;
}

void sl_engine_endpoint_stats(const sl_engine *engine, size_t i, sl_endpoint_stats *out)
{
    memset(out, 0, sizeof *out);
    if (engine->ops->endpoint_stats && i < sl_engine_endpoint_count(engine))
        engine->ops->endpoint_stats(engine->impl, i, out);
}

const char *sl_engine_model_name(const sl_engine *engine)
{
    return engine->ops->model_name(engine->impl);
}

const char *sl_engine_default_system(const sl_engine *engine)
{
    return engine->ops->default_system ? engine->ops->default_system(engine->impl) : NULL;
}

void sl_engine_free(sl_engine *engine)
{
    if (!engine)
        return;
    engine->ops->free(engine->impl);
    sl_free(engine);
}

const char *sl_engine_phase_name(sl_engine_phase phase)
{
    static const char *const names[SL_PHASE_COUNT] = {
        [SL_PHASE_ADMIT] = "admit",           [SL_PHASE_BATCH] = "batch",
        [SL_PHASE_DECODE] = "decode",         [SL_PHASE_LOGITS] = "logits",
        [SL_PHASE_SAMPLE] = "sample",         [SL_PHASE_DETOKENIZE] = "detokenize",
        [SL_PHASE_BOOKKEEPING] = "bookkeeping", [SL_PHASE_PREPROCESS] = "preprocess",
        [SL_PHASE_ENCODE] = "encode",         [SL_PHASE_IMAGE_PREFILL] = "image_prefill",
    };
    return (unsigned)phase < SL_PHASE_COUNT ? names[phase] : "unknown";
}
