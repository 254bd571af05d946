/* llm/engine.c — the engine handle: argument checks, then dispatch to a
 * backend's ops; the synchronous call built on submit + poll. */
#include <string.h>

#include "core/alloc.h"
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

sl_status sl_engine_submit(sl_engine *engine, const sl_request *request, void *tag)
{
    const char *id = request->id ? request->id : "(request)";
    if (!request->prompt)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: request has no prompt", id);
    if (request->sampling.max_tokens <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: max_tokens must be positive, got %d", id,
                       request->sampling.max_tokens);
    if (request->n_stop < 0 || (request->n_stop > 0 && !request->stop))
        return sl_fail(SL_ERR_INVALID_ARG, "%s: bad stop strings", id);
    /* Chat templates and JSON bodies need text: a prompt read from a
     * manifest may be any bytes. */
    if (!sl_utf8_valid(request->prompt, strlen(request->prompt)))
        return sl_fail(SL_ERR_INVALID_ARG, "%s: the prompt is not valid UTF-8", id);
    if (request->system_prompt &&
        !sl_utf8_valid(request->system_prompt, strlen(request->system_prompt)))
        return sl_fail(SL_ERR_INVALID_ARG, "%s: the system prompt is not valid UTF-8", id);
    for (int i = 0; i < request->n_stop; i++)
        if (!request->stop[i] || !sl_utf8_valid(request->stop[i], strlen(request->stop[i])))
            return sl_fail(SL_ERR_INVALID_ARG, "%s: stop string %d is not valid UTF-8", id, i + 1);
    return engine->ops->submit(engine->impl, request, tag);
}

sl_status sl_engine_poll(sl_engine *engine, sl_completion *out, size_t max, int timeout_ms,
                         size_t *n)
{
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
    *out = (sl_result){0};
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

void sl_result_clear(sl_result *result)
{
    if (!result)
        return;
    sl_free(result->text);
    sl_free(result->trace_tokens);
    sl_free(result->trace_margins);
    *result = (sl_result){0};
}

void sl_completion_clear(sl_completion *c)
{
    if (!c)
        return;
    sl_free(c->error);
    sl_result_clear(&c->result);
    *c = (sl_completion){0};
}

const char *sl_engine_kind(const sl_engine *engine) { return engine->ops->kind; }

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
