/* fuzz/fuzz_tasks.c — the tasks file reader (config/config_tasks.c). The
 * input is a tasks file. The promises checked: any text ends in tasks or
 * in an error whose message names the file; tasks read have a valid name,
 * a non-empty UTF-8 prompt, sampling in range and 0 or 2..64 choices;
 * nothing leaks (ASan). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_impl.h"
#include "core/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_task_spec t[SL_MAX_TASKS];
    int n = 0;
    sl_sampling base = sl_sampling_default();
    sl_status st = sl_config_parse_tasks((const char *)data, size, "t.json", &base, t,
                                         SL_MAX_TASKS, &n);
    if (st != SL_OK) {
        if (n != 0 || strncmp(sl_last_error(), "t.json", 6) != 0) {
            fprintf(stderr, "a failure that names no file or keeps tasks: %s\n", sl_last_error());
            abort();
        }
        return 0;
    }
    if (n < 1 || n > SL_MAX_TASKS)
        abort();
    for (int i = 0; i < n; i++) {
        if (!sl_config_task_name_ok(t[i].name, strlen(t[i].name)) || !t[i].prompt ||
            !*t[i].prompt || !sl_utf8_valid(t[i].prompt, strlen(t[i].prompt)) ||
            t[i].sampling.max_tokens < 1 || t[i].sampling.max_tokens > (1 << 20) ||
            !(t[i].sampling.temperature >= 0.0f) || !(t[i].sampling.top_p <= 1.0f)) {
            fprintf(stderr, "task %d read with a bad value\n", i);
            abort();
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(t[k].name, t[i].name))
                abort();
        if (t[i].n_choices != 0 && (t[i].n_choices < 2 || t[i].n_choices > SL_MAX_CHOICES)) {
            fprintf(stderr, "task %d read with %d choices\n", i, t[i].n_choices);
            abort();
        }
        for (int k = 0; k < t[i].n_choices; k++)
            if (!t[i].choices[k])
                abort();
    }
    sl_task_specs_free(t, n);
    return 0;
}
