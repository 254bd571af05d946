/* llm/engine.c — the engine handle: dispatch to a backend's ops. */
#include "core/alloc.h"
#include "core/error.h"
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

sl_status sl_engine_generate(sl_engine *engine, const sl_request *request, sl_result *out)
{
    *out = (sl_result){0};
    if (!request->prompt)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: request has no prompt",
                       request->id ? request->id : "(request)");
    if (request->sampling.max_tokens <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: max_tokens must be positive, got %d",
                       request->id ? request->id : "(request)", request->sampling.max_tokens);
    sl_status st = engine->ops->generate(engine->impl, request, out);
    if (st != SL_OK)
        sl_result_clear(out);
    return st;
}

void sl_result_clear(sl_result *result)
{
    if (!result)
        return;
    sl_free(result->text);
    *result = (sl_result){0};
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
