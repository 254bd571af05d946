/* fuzz/fuzz_json_schema.c — the structured-output check (llm/json_schema.c):
 * a schema read from a job's --json-schema file, and a model's answer
 * checked against it. The input is the schema, a NUL byte, then the answer
 * (without a NUL: the input is both). The promises checked: any schema ends
 * read or refused with a message naming it; any answer ends accepted or
 * refused with a message that holds the answer whole. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "llm/json_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nul = memchr(text, '\0', size);
    size_t schema_len = nul ? (size_t)(nul - text) : size;
    sl_json_schema *s = NULL;
    if (sl_json_schema_parse(text, schema_len, "f.json", &s) != SL_OK) {
        if (strncmp(sl_last_error(), "f.json", 6) != 0)
            abort();
        return 0;
    }
    /* The answer as the engines hand it over: NUL-terminated text. */
    size_t answer_len = nul ? size - schema_len - 1 : size;
    char *answer = sl_strndup(nul ? nul + 1 : text, answer_len);
    if (!answer)
        abort();
    char *msg = NULL;
    const char *finish = size % 2 ? "length" : "stop";
    sl_status st = sl_json_schema_check_answer(s, "row", size % 3 ? NULL : "t", answer, finish, &msg);
    if (st != SL_OK && (st != SL_ERR_INVALID_OUTPUT || !msg || strncmp(msg, "row: ", 5) != 0 ||
                        !strstr(msg, answer)))
        abort();
    sl_free(msg);
    sl_free(answer);
    sl_json_schema_free(s);
    return 0;
}
