/* Unit tests: io/batch_line.c, one line of an OpenAI batch file read into a
 * conversation, and the data: URL codec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/data_url.h"
#include "io/batch_line.h"

static sl_status parse(const char *text, sl_batch_req *req, char *err)
{
    return sl_batch_parse(text, strlen(text), req, err, 256);
}

static void a_conversation_is_read_in_order(void **state)
{
    (void)state;
    sl_batch_req q;
    char err[256];
    assert_int_equal(parse("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\","
                           "\"body\":{\"model\":\"m\",\"messages\":["
                           "{\"role\":\"developer\",\"content\":\"sys\"},"
                           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},"
                           "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAEC\"}},"
                           "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.jpg\"}}]},"
                           "{\"role\":\"assistant\",\"content\":\"ok\"},"
                           "{\"role\":\"user\",\"content\":\"again\"}],"
                           "\"max_tokens\":7,\"max_completion_tokens\":9,\"temperature\":0.5,"
                           "\"seed\":11,\"stop\":[\"x\",\"y\"],"
                           "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
                           "{\"name\":\"n\",\"schema\":{\"type\":\"object\"}}}}}",
                           &q, err),
                     SL_OK);
    assert_string_equal(q.custom_id, "a");
    assert_string_equal(q.model, "m");
    assert_int_equal(q.n_messages, 4);
    assert_string_equal(q.messages[0].role, "system");
    assert_int_equal(q.messages[1].n_parts, 3);
    assert_string_equal(q.messages[1].parts[0].text, "look");
    assert_null(q.messages[1].parts[1].text);
    assert_null(q.messages[1].parts[2].text);
    assert_int_equal(q.n_images, 2);
    assert_string_equal(q.images[1], "https://x/y.jpg");
    assert_string_equal(q.messages[2].role, "assistant");
    assert_int_equal(q.max_tokens, 9); /* max_completion_tokens wins */
    assert_true(q.has_temperature && q.temperature == 0.5f && !q.has_top_p);
    assert_true(q.has_seed && q.seed == 11);
    assert_int_equal(q.n_stop, 2);
    assert_string_equal(q.json_schema, "{\"type\":\"object\"}");
    assert_string_equal(q.last_user_text, "again");
    sl_batch_req_clear(&q);
}

static void broken_lines_say_why(void **state)
{
    (void)state;
    static const struct {
        const char *line, *why;
        bool has_id;
    } cases[] = {
        {"nope", "invalid JSON", false},
        {"[1]", "not a JSON object", false},
        {"{\"url\":\"/v1/chat/completions\",\"body\":{}}", "no custom_id", false},
        {"{\"custom_id\":7}", "custom_id must be a non-empty string", false},
        {"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\"}", "no body", true},
        {"{\"custom_id\":\"a\",\"url\":\"/v1/embeddings\",\"body\":{}}", "url must be", true},
        {"{\"custom_id\":\"a\",\"method\":\"GET\",\"url\":\"/v1/chat/completions\",\"body\":{}}",
         "method must be POST", true},
        {"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{\"n\":17,"
         "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}",
         "body.n must be an integer from 1 to 16", true},
        {"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[]}}",
         "non-empty list", true},
        {"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":"
         "[{\"role\":\"tool\",\"content\":\"x\"}]}}", "role 'tool'", true},
        {"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":"
         "[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true}}", "stream", true},
        {"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":"
         "[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}}", "temperature", true},
        /* an empty stop string alone, as in a list */
        {"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":"
         "[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":\"\"}}",
         "body.stop must be a non-empty string", true},
        /* past 64 bits jansson refuses the line; its custom_id is still found */
        {"{\"custom_id\":\"big\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":"
         "[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":1180591620717411303424}}",
         "too big integer", true},
        /* a large count is positive: the message says the range, not "positive" */
        {"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":"
         "[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1000000000000}}",
         "body.max_tokens must be an integer from 1 to 1073741824", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sl_batch_req q;
        char err[256] = "";
        assert_int_equal(parse(cases[i].line, &q, err), SL_ERR_INVALID_ARG);
        if (!strstr(err, cases[i].why))
            fail_msg("line %zu: '%s' does not say '%s'", i, err, cases[i].why);
        assert_true((q.custom_id != NULL) == cases[i].has_id);
        assert_null(q.body);
        sl_batch_req_clear(&q);
    }
}

static void data_urls_round_trip(void **state)
{
    (void)state;
    const uint8_t bytes[] = {0, 1, 2, 250, 251, 252, 253};
    for (size_t n = 1; n <= sizeof bytes; n++) {
        char *url = sl_data_url(bytes, n, "image/png", NULL);
        assert_non_null(url);
        assert_true(strncmp(url, "data:image/png;base64,", 22) == 0);
        uint8_t *back;
        size_t len;
        char err[128];
        assert_int_equal(sl_batch_data_url_decode(url, &back, &len, err, sizeof err), SL_OK);
        assert_int_equal(len, n);
        assert_memory_equal(back, bytes, n);
        sl_free(back);
        sl_free(url);
    }
    /* Several payloads: one head, each in base64, joined by commas. */
    const uint8_t *parts[] = {bytes, bytes + 1, bytes + 3};
    const size_t lens[] = {1, 2, 4};
    size_t url_len;
    char *url = sl_data_url_parts(parts, lens, 3, "video/jpeg", &url_len);
    assert_non_null(url);
    assert_int_equal(url_len, strlen(url));
    assert_true(strncmp(url, "data:video/jpeg;base64,", 23) == 0);
    char *rest = url + 23;
    for (int k = 0; k < 3; k++) {
        char *comma = strchr(rest, ',');
        assert_true((comma == NULL) == (k == 2));
        char one[64];
        snprintf(one, sizeof one, "data:x;base64,%.*s",
                 (int)(comma ? comma - rest : (ptrdiff_t)strlen(rest)), rest);
        uint8_t *back;
        size_t len;
        char err[128];
        assert_int_equal(sl_batch_data_url_decode(one, &back, &len, err, sizeof err), SL_OK);
        assert_int_equal(len, lens[k]);
        assert_memory_equal(back, parts[k], lens[k]);
        sl_free(back);
        rest = comma ? comma + 1 : rest;
    }
    sl_free(url);
    uint8_t *d;
    size_t len;
    char err[128];
    assert_int_equal(sl_batch_data_url_decode("data:image/png,abc", &d, &len, err, sizeof err),
                     SL_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "base64"));
    assert_int_equal(sl_batch_data_url_decode("data:image/png;base64,a*b", &d, &len, err,
                                              sizeof err),
                     SL_ERR_INVALID_ARG);
    assert_int_equal(sl_batch_data_url_decode("data:image/png;base64,", &d, &len, err,
                                              sizeof err),
                     SL_ERR_INVALID_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_conversation_is_read_in_order),
        cmocka_unit_test(broken_lines_say_why),
        cmocka_unit_test(data_urls_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
