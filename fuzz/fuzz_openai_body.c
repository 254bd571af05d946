/* fuzz/fuzz_openai_body.c — what the openai engine makes of a caller's
 * request body (openai_forward_body in llm/engines/openai_parse.c; the
 * bodies of a batch file's lines) and the chat.completion object sluice
 * writes around an answer's text (sl_chat_completion_json), on arbitrary
 * bytes. What must hold: a body that is forwarded is a JSON object with its
 * "messages" array as it was, a "model", "stream" as asked and
 * stream_options.include_usage exactly when streaming, and every other key
 * as it was; one that is refused says why; the object around any text is
 * JSON whose content reads back as that text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/utf8.h"
#include "llm/engine_impl.h"
#include "llm/engines/openai_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_forwarded(const char *body, size_t size, bool stream)
{
    char why[256] = "";
    json_t *got = openai_forward_body(body, size, "served", stream, why, sizeof why);
    if (!got) {
        if (!why[0])
            abort();
        return;
    }
    json_t *in = json_loadb(body, size, JSON_ALLOW_NUL, NULL);
    if (!in || !json_is_object(got))
        abort();
    if (!json_equal(json_object_get(in, "messages"), json_object_get(got, "messages")))
        abort();
    json_t *model = json_object_get(got, "model");
    if (!model || (!json_object_get(in, "model") && strcmp(json_string_value(model), "served")))
        abort();
    if (json_object_get(in, "model") && !json_equal(model, json_object_get(in, "model")))
        abort();
    if (json_is_true(json_object_get(got, "stream")) != stream ||
        !json_is_boolean(json_object_get(got, "stream")))
        abort();
    json_t *opts = json_object_get(got, "stream_options");
    if (stream ? !json_is_true(json_object_get(opts, "include_usage")) : opts != NULL)
        abort();
    const char *key;
    json_t *value;
    json_object_foreach(in, key, value) {
        if (strcmp(key, "model") && strcmp(key, "stream") && strcmp(key, "stream_options") &&
            !json_equal(value, json_object_get(got, key)))
            abort();
    }
    json_decref(in);
    json_decref(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    check_forwarded(body, size, false);
    check_forwarded(body, size, true);

    /* The answer's text is sanitized UTF-8 by then, as the engines make it. */
    char *text = sl_utf8_sanitize(body, size);
    if (!text)
        return 0;
    sl_result res = {.text = text, .finish_reason = "length", .prompt_tokens = (int)size,
                     .generated_tokens = 3};
    char *json = sl_chat_completion_json(NULL, "model", 1, &res);
    json_t *root = json ? json_loads(json, 0, NULL) : NULL;
    json_t *content = json_object_get(
        json_object_get(json_array_get(json_object_get(root, "choices"), 0), "message"),
        "content");
    if (!json || !json_is_string(content) || strcmp(json_string_value(content), text) != 0 ||
        json_integer_value(json_object_get(json_object_get(root, "usage"), "total_tokens")) !=
            (json_int_t)size + 3)
        abort();
    json_decref(root);
    sl_free(json);
    sl_free(text);
    return 0;
}
