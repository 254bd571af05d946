/* bench/stages_noop.c — the no-op C plugin bench/stages times: it looks at
 * each row (its position) and changes nothing, the least a stage does. */
#include <stdlib.h>

#include "sluice/plugin.h"

typedef struct noop {
    const sl_plugin_host *host;
    uint64_t sum; /* so the look is not optimised away */
} noop;

static sl_status noop_init(const sl_plugin_host *host, const char *config, int worker,
                           void **state)
{
    (void)config, (void)worker;
    noop *s = calloc(1, sizeof *s);
    if (!s)
        return host->fail(SL_ERR_NOMEM, "noop: out of memory");
    s->host = host;
    *state = s;
    return SL_OK;
}

static void noop_close(void *state, sl_exec_end end)
{
    (void)end;
    free(state);
}

static sl_status noop_process(void *state, sl_row *const *rows, size_t n)
{
    noop *s = state;
    for (size_t i = 0; i < n; i++)
        s->sum += s->host->row_seq(rows[i]);
    return SL_OK;
}

SL_PLUGIN_EXPORT const sl_plugin *sluice_plugin(void);

SL_PLUGIN_EXPORT const sl_plugin *sluice_plugin(void)
{
    static const sl_plugin plugin = {SL_PLUGIN_ABI_VERSION, "noop", noop_init, noop_process,
                                     noop_close};
    return &plugin;
}
