/* llm/engine_impl.h — what an engine backend provides: a table of
 * functions behind the opaque sl_engine. Backends live in llm/engines/.
 * submit() copies what it keeps of the request; poll() hands over
 * completions the caller clears. */
#ifndef SL_LLM_ENGINE_IMPL_H
#define SL_LLM_ENGINE_IMPL_H

#include "sluice/engine.h"

typedef struct sl_engine_ops {
    const char *kind;
    sl_status (*submit)(void *impl, const sl_request *request, void *tag);
    sl_status (*poll)(void *impl, sl_completion *out, size_t max, int timeout_ms, size_t *n);
    size_t (*in_flight)(const void *impl);
    void (*stats)(const void *impl, sl_engine_stats *out);
    const char *(*model_name)(const void *impl);
    void (*free)(void *impl);
    /* Optional (HTTP engines): per-endpoint state. */
    size_t (*endpoint_count)(const void *impl);
    void (*endpoint_stats)(const void *impl, size_t i, sl_endpoint_stats *out);
} sl_engine_ops;

/* Wraps a backend; takes ownership of impl (freed by ops->free even when
 * this fails). */
sl_status sl_engine_wrap(const sl_engine_ops *ops, void *impl, sl_engine **out);

#endif
