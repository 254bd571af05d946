/* tests/plugins/counting.c — the plugin tests/unit/test_plugin.c loads:
 * each worker counts its init, rows and batches and writes them out in
 * close() (a line appended to COUNTS/worker-W: a second close, or a close
 * without init, shows as a second line or a missing "init"), fails the rows
 * whose seq % fail_mod == 0 and drops those whose seq % drop_mod == 0, and
 * sets the column `plugin_worker` on the rest. Config: {"counts": DIR,
 * "fail_mod": N, "drop_mod": N, "fail_init": true}.
 *
 * Built also as the plugins sluice must refuse: TEST_PLUGIN_ABI (another
 * ABI version), TEST_PLUGIN_NO_ENTRY (no entry function),
 * TEST_PLUGIN_NO_PROCESS (no process()). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/plugin.h"

typedef struct counting {
    const sl_plugin_host *host;
    char *counts;
    char *note; /* config "fail_note": added to each failed row's message */
    int worker;
    long fail_mod, drop_mod;
    long rows, calls, max_batch;
} counting;

static long number(const sl_plugin_host *host, const char *config, const char *key)
{
    double v = 0;
    return host->config_number(config, key, &v) == SL_OK ? (long)v : 0;
}

static sl_status counting_init(const sl_plugin_host *host, const char *config, int worker,
                               void **state)
{
    if (host->abi_version != SL_PLUGIN_ABI_VERSION || !SL_PLUGIN_HOST_HAS(host, row_emit))
        return host->fail(SL_ERR_INVALID_ARG, "counting: a host table of another version");
    if (strstr(config, "\"fail_init\""))
        return host->fail(SL_ERR_INVALID_ARG, "counting: init refused on worker %d", worker);
    counting *c = calloc(1, sizeof *c);
    if (!c)
        return host->fail(SL_ERR_NOMEM, "counting: out of memory");
    c->host = host;
    c->worker = worker;
    c->counts = host->config_string(config, "counts");
    c->note = host->config_string(config, "fail_note");
    c->fail_mod = number(host, config, "fail_mod");
    c->drop_mod = number(host, config, "drop_mod");
    *state = c;
    return SL_OK;
}

/* unused in the build without process() */
__attribute__((unused)) static sl_status counting_process(void *state, sl_row *const *rows,
                                                          size_t n)
{
    counting *c = state;
    const sl_plugin_host *h = c->host;
    c->calls++;
    if ((long)n > c->max_batch)
        c->max_batch = (long)n;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = h->row_seq(rows[i]);
        c->rows++;
        if (c->fail_mod && seq % (uint64_t)c->fail_mod == 0) {
            h->row_fail(rows[i], "counting: row '%s' refused (seq %llu)%s", h->row_id(rows[i]),
                        (unsigned long long)seq, c->note ? c->note : "");
            continue;
        }
        if (c->drop_mod && seq % (uint64_t)c->drop_mod == 0) {
            h->row_drop(rows[i]);
            continue;
        }
        char v[16];
        snprintf(v, sizeof v, "%d", c->worker);
        if (h->row_set_column_json(rows[i], "plugin_worker", v) != SL_OK)
            return h->fail(SL_ERR_INVALID_ARG, "counting: cannot set a column");
    }
    return SL_OK;
}

static void counting_close(void *state, sl_exec_end end)
{
    counting *c = state;
    if (c->counts) {
        char path[1024];
        snprintf(path, sizeof path, "%s/worker-%d", c->counts, c->worker);
        FILE *fp = fopen(path, "a");
        if (fp) {
            fprintf(fp, "init rows %ld calls %ld max_batch %ld end %d\n", c->rows, c->calls,
                    c->max_batch, (int)end);
            fclose(fp);
        }
        c->host->text_free(c->counts);
    }
    c->host->text_free(c->note);
    free(c);
}

#ifdef TEST_PLUGIN_NO_ENTRY
#define ENTRY sluice_plugin_misspelt
#else
#define ENTRY sluice_plugin
#endif
#ifndef TEST_PLUGIN_ABI
#define TEST_PLUGIN_ABI SL_PLUGIN_ABI_VERSION
#endif

SL_PLUGIN_EXPORT const sl_plugin *ENTRY(void);

SL_PLUGIN_EXPORT const sl_plugin *ENTRY(void)
{
    static const sl_plugin plugin = {
        .abi_version = TEST_PLUGIN_ABI,
        .name = "counting",
        .init = counting_init,
#ifndef TEST_PLUGIN_NO_PROCESS
        .process = counting_process,
#endif
        .close = counting_close,
    };
    return &plugin;
}
