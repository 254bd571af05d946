/* tests/plugins/answers.c — a plugin after the engine that reads a row's
 * answers through the host table's later functions (tests/e2e/
 * test_plugin.py): it sets the column `answers` to the JSON list of every
 * answer (row_answer_count, row_answer_at), `task_answer` to the answer
 * of the task named in its config's "task" (row_task_answer; null without
 * one), and `logprobs_copy` to the answer's log-probabilities
 * (row_logprobs, the task's with "task"), for a video `frames_seen` to its
 * frames taken (row_video), and for a row with a list of images
 * `images_seen` to their number (row_image_count). A host without those
 * functions fails init. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/plugin.h"

typedef struct answers {
    const sl_plugin_host *host;
    char *task;
} answers;

static sl_status answers_init(const sl_plugin_host *host, const char *config, int worker,
                              void **state)
{
    (void)worker;
    if (!SL_PLUGIN_HOST_HAS(host, row_image_count))
        return host->fail(SL_ERR_INVALID_ARG, "answers: the host has no row_image_count");
    answers *a = calloc(1, sizeof *a);
    if (!a)
        return host->fail(SL_ERR_NOMEM, "answers: out of memory");
    a->host = host;
    a->task = host->config_string(config, "task");
    *state = a;
    return SL_OK;
}

/* s as a JSON string into out (at most cap bytes; ASCII escapes only). */
static size_t json_string(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    if (n < cap)
        out[n++] = '"';
    for (; s && *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            n += (size_t)snprintf(out + n, cap - n, "\\%c", c);
        else if (c < 0x20)
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        else
            out[n++] = (char)c;
    }
    if (n < cap)
        out[n++] = '"';
    return n;
}

static sl_status answers_process(void *state, sl_row *const *rows, size_t n)
{
    answers *a = state;
    const sl_plugin_host *h = a->host;
    for (size_t i = 0; i < n; i++) {
        char list[16384];
        size_t len = 0;
        list[len++] = '[';
        for (int k = 0; k < h->row_answer_count(rows[i]) && len < sizeof list - 4096; k++) {
            if (k)
                list[len++] = ',';
            len += json_string(h->row_answer_at(rows[i], k), list + len, sizeof list - len - 2);
        }
        list[len++] = ']';
        list[len] = '\0';
        sl_status st = h->row_set_column_json(rows[i], "answers", list);
        const char *task = a->task ? h->row_task_answer(rows[i], a->task) : NULL;
        if (st == SL_OK && task)
            st = h->row_set_column_string(rows[i], "task_answer", task);
        const char *lp = h->row_logprobs(rows[i], a->task);
        if (st == SL_OK && lp)
            st = h->row_set_column_json(rows[i], "logprobs_copy", lp);
        int frames;
        double seconds;
        char count[32];
        if (st == SL_OK && h->row_video(rows[i], &frames, &seconds)) {
            snprintf(count, sizeof count, "%d", frames);
            st = h->row_set_column_json(rows[i], "frames_seen", count);
        }
        int images = h->row_image_count(rows[i]);
        if (st == SL_OK && images > 0) {
            snprintf(count, sizeof count, "%d", images);
            st = h->row_set_column_json(rows[i], "images_seen", count);
        }
        if (st != SL_OK)
            return st;
    }
    return SL_OK;
}

static void answers_close(void *state, sl_exec_end end)
{
    (void)end;
    answers *a = state;
    if (a) {
        a->host->text_free(a->task);
        free(a);
    }
}

SL_PLUGIN_EXPORT const sl_plugin *sluice_plugin(void);

SL_PLUGIN_EXPORT const sl_plugin *sluice_plugin(void)
{
    static const sl_plugin plugin = {
        .abi_version = SL_PLUGIN_ABI_VERSION,
        .name = "answers",
        .init = answers_init,
        .process = answers_process,
        .close = answers_close,
    };
    return &plugin;
}
