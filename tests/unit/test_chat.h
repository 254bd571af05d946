/* Helpers of the conversation tests (test_engine_chat.c, test_openai_chat.c):
 * test images, and the checks of a chat.completion object (its fields
 * against the result; the OpenAI Python SDK's ChatCompletion model where
 * SLUICE_PYTHON names a Python that has it). Include after cmocka.h. */
#ifndef SL_TEST_CHAT_H
#define SL_TEST_CHAT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "sluice/sluice.h"

/* A w x h colour gradient; `k` varies the pattern. */
static inline sl_image *tc_gradient(int w, int h, int k)
{
    uint8_t *px = malloc((size_t)w * (size_t)h * 3);
    if (!px)
        return NULL;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * (size_t)w + (size_t)x) * 3;
            p[0] = (uint8_t)(k ? 255 - x * 2 : x * 2);
            p[1] = (uint8_t)(y * 4);
            p[2] = (uint8_t)((x + y + 90 * k) & 0xff);
        }
    sl_image *im = NULL;
    sl_status st = sl_image_from_rgb(w, h, px, &im);
    free(px);
    return st == SL_OK ? im : NULL;
}

/* The fields of a chat.completion object, against the result it came with:
 * OpenAI's shape (id chatcmpl-..., object, created, model, one choice with
 * the assistant's message, its finish reason and null logprobs, usage with
 * a total). created is at least `not_before` and at most now; model NULL:
 * any. */
static inline void tc_check_chat_completion(const char *text, const sl_result *r,
                                            const char *model, long long not_before)
{
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    if (!root)
        fail_msg("response_json is not JSON (%s): %s", err.text, text);
    const char *id = json_string_value(json_object_get(root, "id"));
    assert_non_null(id);
    assert_true(strlen(id) > 9);
    assert_string_equal(json_string_value(json_object_get(root, "object")), "chat.completion");
    json_t *created = json_object_get(root, "created");
    assert_true(json_is_integer(created));
    assert_true(json_integer_value(created) >= not_before &&
                json_integer_value(created) <= (json_int_t)time(NULL));
    if (model)
        assert_string_equal(json_string_value(json_object_get(root, "model")), model);
    json_t *choices = json_object_get(root, "choices");
    assert_int_equal(json_array_size(choices), 1);
    json_t *c0 = json_array_get(choices, 0);
    assert_int_equal(json_integer_value(json_object_get(c0, "index")), 0);
    json_t *msg = json_object_get(c0, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), r->text);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), r->finish_reason);
    json_t *logprobs = json_object_get(c0, "logprobs"); /* servers may leave it out */
    assert_true(!logprobs || json_is_null(logprobs));
    json_t *usage = json_object_get(root, "usage");
    assert_int_equal(json_integer_value(json_object_get(usage, "prompt_tokens")), r->prompt_tokens);
    assert_int_equal(json_integer_value(json_object_get(usage, "completion_tokens")),
                     r->generated_tokens);
    assert_int_equal(json_integer_value(json_object_get(usage, "total_tokens")),
                     r->prompt_tokens + r->generated_tokens);
    json_decref(root);
}

/* The OpenAI Python SDK's ChatCompletion model accepts the object: run
 * where SLUICE_PYTHON has the `openai` package, skipped (said once)
 * elsewhere. */
static inline void tc_sdk_validates(const char *json_text)
{
    static int unavailable;
    const char *py = getenv("SLUICE_PYTHON");
    if (unavailable || !py || access(py, X_OK) != 0) {
        if (!unavailable++)
            fprintf(stderr, "(no SLUICE_PYTHON with the openai package: SDK check skipped)\n");
        return;
    }
    char path[] = "/tmp/sluice-chat-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    fputs(json_text, fp);
    fclose(fp);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import sys\n"
             "try:\n from openai.types.chat import ChatCompletion\n"
             "except ImportError:\n sys.exit(77)\n"
             "c = ChatCompletion.model_validate_json(open(sys.argv[1]).read())\n"
             "assert c.object == \"chat.completion\" and c.usage is not None\n"
             "' '%s'",
             py, path);
    int rc = system(cmd);
    unlink(path);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
        if (!unavailable++)
            fprintf(stderr, "(%s has no openai package: SDK check skipped)\n", py);
        return;
    }
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
        fail_msg("the OpenAI SDK's ChatCompletion refuses: %s", json_text);
}

#endif
