/* fuzz/fuzz_template.c — prompt templates (job/template.c). The input is a
 * template, a NUL, then a row's columns as JSON. The promises checked: a
 * fill ends in text or in an error naming a column; text without fields or
 * doubled braces comes back as it was; nothing leaks (ASan). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "job/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *tmpl = malloc(tlen + 1);
    if (!tmpl)
        return 0;
    memcpy(tmpl, data, tlen);
    tmpl[tlen] = '\0';
    json_t *cols = nul ? json_loadb((const char *)nul + 1, size - tlen - 1, 0, NULL) : NULL;
    char *out = NULL;
    sl_status st = template_fill(tmpl, cols, &out);
    if (st == SL_OK) {
        if (!out)
            abort();
        if (!template_has_fields(tmpl) && strcmp(out, tmpl) != 0) {
            fprintf(stderr, "a template without fields changed: '%s' -> '%s'\n", tmpl, out);
            abort();
        }
        sl_free(out);
    } else if (st != SL_ERR_NOMEM && !strstr(sl_last_error(), "no column '")) {
        fprintf(stderr, "a failure that names no column: %s\n", sl_last_error());
        abort();
    }
    json_decref(cols);
    free(tmpl);
    return 0;
}
