/* Unit tests: llm/engines/openai_parse.c — the bounds on an answer, a
 * completion and a stream past them, a stream read the same in any pieces,
 * and a server's message. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "core/alloc.h"
#include "llm/engines/openai_parse.h"

static void bounds_follow_max_tokens(void **state)
{
    assert_int_equal(openai_text_max(64), 64 * 1024 + 256 * 64);
    assert_int_equal(openai_body_max(64, 1), 6 * (64 * 1024 + 256 * 64) + (1 << 20));
    assert_int_equal(openai_text_max(0), 64 * 1024);
    assert_int_equal(openai_text_max(-5), 64 * 1024);
    /* Ceilings, whatever max_tokens asks. */
    assert_int_equal(openai_text_max(1 << 20), 16 << 20);
    assert_int_equal(openai_text_max(2147483647), 16 << 20);
    assert_int_equal(openai_body_max(2147483647, 1), 64 << 20);
    /* n answers in one body: n times one's, 256 MiB at most. */
    assert_int_equal(openai_body_max(64, 3), 3 * openai_body_max(64, 1));
    assert_int_equal(openai_body_max(64, 0), openai_body_max(64, 1));
    assert_int_equal(openai_body_max(2147483647, 16), 256 << 20);
}

/* "n": 3 — the answers by their index, whatever order they come in; by
 * position when the indexes are not 0..n-1 once each; the usage shared;
 * a body with another number of answers refused naming the way out. */
static void n_answers_come_back_in_index_order(void **state)
{
    const char *body =
        "{\"choices\":[{\"index\":2,\"message\":{\"content\":\"two\"},\"finish_reason\":"
        "\"length\"},{\"index\":0,\"message\":{\"content\":\"zero\"},\"finish_reason\":"
        "\"stop\",\"logprobs\":{\"content\":[]}},{\"index\":1,\"message\":{\"content\":"
        "null}}],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":11,"
        "\"prompt_tokens_details\":{\"cached_tokens\":8}}}";
    sl_result r[3];
    char why[256];
    assert_int_equal(openai_parse_completion(body, strlen(body), 100, 3, r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r[0].text, "zero");
    assert_string_equal(r[0].finish_reason, "stop");
    assert_string_equal(r[0].logprobs, "{\"content\":[]}");
    assert_string_equal(r[1].text, "");
    assert_string_equal(r[2].text, "two");
    assert_string_equal(r[2].finish_reason, "length");
    assert_null(r[2].logprobs);
    int generated = 0;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(r[k].prompt_tokens, 40);
        assert_int_equal(r[k].cached_tokens, 8);
        assert_in_range(r[k].generated_tokens, 3, 4);
        generated += r[k].generated_tokens;
        sl_result_clear(&r[k]);
    }
    assert_int_equal(generated, 11);

    /* Indexes all 0 (or missing): by position. */
    const char *zeros = "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"a\"}},"
                        "{\"index\":0,\"message\":{\"content\":\"b\"}}]}";
    assert_int_equal(openai_parse_completion(zeros, strlen(zeros), 100, 2, r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r[0].text, "a");
    assert_string_equal(r[1].text, "b");
    sl_result_clear(&r[0]);
    sl_result_clear(&r[1]);

    /* A server that ignores "n" answers once. */
    const char *one = "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"a\"}}]}";
    assert_int_equal(openai_parse_completion(one, strlen(one), 100, 2, r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_non_null(strstr(why, "1 of the 2 answers"));
    assert_non_null(strstr(why, "--split-samples"));
    /* n 1 reads choices[0] whatever follows. */
    assert_int_equal(openai_parse_completion(zeros, strlen(zeros), 100, 1, r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r[0].text, "a");
    sl_result_clear(&r[0]);
    /* One answer past its bound fails them all, nothing left behind. */
    const char *long_one = "{\"choices\":[{\"message\":{\"content\":\"ok\"}},"
                           "{\"message\":{\"content\":\"far too long\"}}]}";
    assert_int_equal(openai_parse_completion(long_one, strlen(long_one), 5, 2, r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_non_null(strstr(why, "passed 5 bytes"));
    assert_null(r[0].text);
    assert_int_equal(openai_parse_completion(one, strlen(one), 100, 17, r, why, sizeof why), OPENAI_ANSWER_BAD);
}

static void completion_past_its_bound_fails(void **state)
{
    const char *body = "{\"choices\":[{\"message\":{\"content\":\"0123456789\"},"
                       "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,"
                       "\"completion_tokens\":-3}}";
    sl_result r;
    char why[256];
    assert_int_equal(openai_parse_completion(body, strlen(body), 10, 1, &r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r.text, "0123456789");
    assert_string_equal(r.finish_reason, "length");
    assert_int_equal(r.prompt_tokens, 5);
    assert_int_equal(r.generated_tokens, 0); /* a count below 0 is no count */
    sl_free(r.text);
    assert_int_equal(openai_parse_completion(body, strlen(body), 9, 1, &r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_non_null(strstr(why, "its text passed 9 bytes"));
}

/* A model may generate a NUL byte (a byte token such as <0x00>), which a
 * server sends as \u0000: the caption keeps it as U+FFFD, as the embedded
 * engine does. It failed the row as "not JSON" before. */
static void nul_in_the_text(void **state)
{
    const char *body = "{\"choices\":[{\"message\":{\"content\":\"a\\u0000b\"}}]}";
    sl_result r;
    char why[256];
    assert_int_equal(openai_parse_completion(body, strlen(body), 100, 1, &r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r.text, "a\xEF\xBF\xBD" "b");
    sl_free(r.text);
    openai_stream s = {0};
    openai_stream_reset(&s, 100, openai_idle_max(0));
    sl_buf pending = {0};
    const char *ev = "data: {\"choices\":[{\"delta\":{\"content\":\"x\\u0000\"}}]}\n\n"
                     "data: [DONE]\n\n";
    assert_true(sl_buf_append(&pending, ev, strlen(ev)));
    openai_stream_feed(&s, &pending, true, 1.0);
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r.text, "x\xEF\xBF\xBD");
    sl_free(r.text);
    sl_buf_free(&pending);
    openai_stream_free(&s);
}

/* An answer with a byte that is not UTF-8 fails as not JSON, saying so;
 * the advice "(re-encode the file as UTF-8)" that followed was for a
 * manifest's line, not a server's answer. */
static void answer_not_utf8_is_said_as_the_servers(void **state)
{
    (void)state;
    const char *body = "{\"choices\":[{\"message\":{\"content\":\"caf\xE9\"}}]}";
    sl_result r;
    char why[256];
    assert_int_equal(openai_parse_completion(body, strlen(body), 100, 1, &r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_string_equal(why, "the answer is not JSON (byte 0xe9 is not UTF-8, which JSON text must be)");
}

static void feed(openai_stream *s, const char *text, size_t piece)
{
    sl_buf pending = {0};
    size_t len = strlen(text);
    for (size_t at = 0; at < len && !s->too_large; at += piece) {
        size_t n = len - at < piece ? len - at : piece;
        assert_true(sl_buf_append(&pending, text + at, n));
        openai_stream_feed(s, &pending, false, 1.0);
    }
    openai_stream_feed(s, &pending, true, 2.0);
    sl_buf_free(&pending);
}

static const char stream[] =
    ": keep-alive\r\n\r\n"
    "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n"
    "data:{\"choices\":[{\"delta\":{\"content\":\"A cat\"}}]}\n\n"
    "data: not json\n\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\" sleeps.\"},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":87,\"completion_tokens\":3,"
    "\"prompt_tokens_details\":{\"cached_tokens\":64}}}\n\n"
    "data: [DONE]";

static void stream_reads_the_same_in_any_pieces(void **state)
{
    size_t pieces[] = {sizeof stream, 1, 2, 3, 7, 64};
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
        openai_stream s = {0};
        openai_stream_reset(&s, 1000, openai_idle_max(0));
        feed(&s, stream, pieces[i]);
        sl_result r;
        char why[256];
        assert_int_equal(openai_stream_result(&s, 0.5, 3.0, &r, why, sizeof why), OPENAI_ANSWER_OK);
        assert_string_equal(r.text, "A cat sleeps.");
        assert_string_equal(r.finish_reason, "stop");
        assert_int_equal(r.prompt_tokens, 87);
        assert_int_equal(r.generated_tokens, 3);
        assert_int_equal(r.cached_tokens, 64);
        assert_true(r.ttft_ms > 0);
        sl_free(r.text);
        openai_stream_free(&s);
    }
}

/* Lines that bring no content are counted, the blank line ending an event
 * not: `stream` has 5 (a keep-alive, the role delta, "not json", the usage
 * chunk, [DONE]). A server sending only such lines stopped at nothing but
 * --request-timeout. Reasoning deltas count (a model's reasoning is bounded
 * by max_tokens too), and so do blank lines after a blank line. */
static void stream_of_lines_without_text_is_bounded(void **state)
{
    (void)state;
    for (size_t max = 4; max <= 5; max++) {
        openai_stream s = {0};
        openai_stream_reset(&s, 1000, max);
        feed(&s, stream, 3);
        sl_result r;
        char why[512];
        openai_verdict v = openai_stream_result(&s, 0.5, 3.0, &r, why, sizeof why);
        if (max == 5) {
            assert_int_equal(v, OPENAI_ANSWER_OK);
            sl_free(r.text);
        } else {
            assert_int_equal(v, OPENAI_ANSWER_BAD);
            assert_string_equal(why, "its stream passed 4 lines without text (keep-alive "
                                     "comments, deltas without content, blank lines), the bound "
                                     "for max_tokens: the server sends and does not answer (the "
                                     "last: 'data: [DONE]', after 2 content chunks)");
        }
        openai_stream_free(&s);
    }
    static const char *const endless[] = {
        "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n",
        "\n", ": ping\n"};
    for (size_t k = 0; k < sizeof endless / sizeof *endless; k++) {
        openai_stream s = {0};
        openai_stream_reset(&s, 1000, 50);
        char text[4096] = "";
        for (int i = 0; i < 51; i++)
            strcat(text, endless[k]);
        feed(&s, text, 7);
        assert_true(s.stuck);
        openai_stream_free(&s);
    }
    assert_int_equal(openai_idle_max(64), 10064);
    assert_int_equal(openai_idle_max(-1), 10000);
    assert_int_equal(openai_idle_max(2147483647), 1 << 30);
}

/* A stream whose deltas carry the content as parts (Mistral's reasoning
 * models): the text parts are the caption, the thinking ones not. Its
 * text was empty before, the row failed as having no caption. */
static void stream_of_content_parts(void **state)
{
    (void)state;
    static const char parts[] =
        "data: {\"choices\":[{\"delta\":{\"content\":[{\"type\":\"thinking\",\"thinking\":"
        "[{\"type\":\"text\",\"text\":\"hmm\"}]}]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"content\":[{\"type\":\"text\",\"text\":\"A dog\"}]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"content\":\" runs.\"},\"finish_reason\":\"stop\"}]}\n\n"
        "data: [DONE]\n\n";
    openai_stream s = {0};
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, parts, 5);
    sl_result r;
    char why[256];
    assert_int_equal(openai_stream_result(&s, 0.5, 3.0, &r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r.text, "A dog runs.");
    sl_free(r.text);
    openai_stream_free(&s);
}

/* A chunk that is a JSON object but does not parse: a character's bytes
 * split over two chunks (sent raw, or as the two halves of a surrogate
 * pair), a byte that is not UTF-8, a lone surrogate. Each was skipped as a
 * keep-alive, and the row written as answered with that text missing
 * ("A \U0001F600 cat" written "A "); it fails, as a whole answer that
 * does not parse fails. A stream cut inside its last chunk stays cut. */
/* The verdict on a stream fed in pieces of 5 bytes; *why when not OK. */
static openai_verdict verdict_of(const char *text, char *why, size_t cap)
{
    openai_stream s = {0};
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, text, 5);
    sl_result r;
    openai_verdict v = openai_stream_result(&s, 0.5, 3.0, &r, why, cap);
    if (v == OPENAI_ANSWER_OK)
        sl_result_clear(&r);
    openai_stream_free(&s);
    return v;
}

static void stream_chunk_that_does_not_parse_fails(void **state)
{
    (void)state;
    static const char *const pieces[][2] = {
        {"\xF0\x9F", "\x98\x80 cat"}, {"\\ud83d", "\\ude00 cat"}, {"\xFF", " cat"},
        {"\\ud800", " cat"}};
    for (size_t k = 0; k < sizeof pieces / sizeof *pieces; k++) {
        char text[1024];
        snprintf(text, sizeof text,
                 "data: {\"choices\":[{\"delta\":{\"content\":\"A \"}}]}\n\n"
                 "data: {\"choices\":[{\"delta\":{\"content\":\"%s\"}}]}\n\n"
                 "data: {\"choices\":[{\"delta\":{\"content\":\"%s\"},"
                 "\"finish_reason\":\"stop\"}]}\n\n"
                 "data: [DONE]\n\n",
                 pieces[k][0], pieces[k][1]);
        char why[512];
        assert_int_equal(verdict_of(text, why, sizeof why), OPENAI_ANSWER_BAD);
        assert_non_null(strstr(why, "event 2 of its stream is not JSON ("));
        assert_non_null(strstr(why, "): its text would be lost"));
        assert_null(strstr(why, "re-encode the file")); /* a server's, not the user's */
    }
    char why[512];
    assert_int_equal(verdict_of("data: {\"choices\":[{\"delta\":{\"content\":\"A cat\"}}]}\n\n"
                                "data: {\"choi",
                                why, sizeof why),
                     OPENAI_ANSWER_CUT);
}

/* A server's logprobs: a chat.completion's choices[0].logprobs object kept
 * as it is; a stream's entries, chunk by chunk, joined in order into one
 * {"content": [...]} (read the same in any pieces); none asked, none kept. */
static void logprobs_are_kept_whole_and_joined_from_a_stream(void **state)
{
    const char *body = "{\"choices\":[{\"message\":{\"content\":\"Hi\"},\"logprobs\":{\"content\":"
                       "[{\"token\":\"Hi\",\"logprob\":-0.5,\"bytes\":[72,105],"
                       "\"top_logprobs\":[]}]}}]}";
    sl_result r;
    char why[256];
    assert_int_equal(openai_parse_completion(body, strlen(body), 100, 1, &r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r.logprobs, "{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.5,\"bytes\":"
                                    "[72,105],\"top_logprobs\":[]}]}");
    sl_result_clear(&r);
    const char *plain = "{\"choices\":[{\"message\":{\"content\":\"Hi\"},\"logprobs\":null}]}";
    assert_int_equal(openai_parse_completion(plain, strlen(plain), 100, 1, &r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_null(r.logprobs);
    sl_result_clear(&r);

    static const char events[] =
        "data: {\"choices\":[{\"delta\":{\"content\":\"A\"},\"logprobs\":{\"content\":"
        "[{\"token\":\"A\",\"logprob\":-1}]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"content\":\" cat\"},\"logprobs\":{\"content\":"
        "[{\"token\":\" c\",\"logprob\":-2},{\"token\":\"at\",\"logprob\":-3}]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
        "data: [DONE]\n\n";
    size_t pieces[] = {sizeof events, 1, 5, 33};
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
        openai_stream s = {0};
        openai_stream_reset(&s, 1000, openai_idle_max(0));
        feed(&s, events, pieces[i]);
        assert_int_equal(openai_stream_result(&s, 0.5, 3.0, &r, why, sizeof why), OPENAI_ANSWER_OK);
        assert_string_equal(r.text, "A cat");
        assert_string_equal(r.logprobs, "{\"content\":[{\"token\":\"A\",\"logprob\":-1},"
                                        "{\"token\":\" c\",\"logprob\":-2},"
                                        "{\"token\":\"at\",\"logprob\":-3}]}");
        sl_result_clear(&r);
        /* The same stream object, reset, keeps nothing of the last answer. */
        openai_stream_reset(&s, 1000, openai_idle_max(0));
        feed(&s, stream, sizeof stream);
        assert_int_equal(openai_stream_result(&s, 0.5, 3.0, &r, why, sizeof why), OPENAI_ANSWER_OK);
        assert_null(r.logprobs);
        sl_result_clear(&r);
        openai_stream_free(&s);
    }
}

/* A stream without end stops at its bound: the text never passes it. */
static void stream_past_its_bound_fails(void **state)
{
    openai_stream s = {0};
    openai_stream_reset(&s, 100, openai_idle_max(0));
    sl_buf pending = {0};
    const char ev[] = "data: {\"choices\":[{\"delta\":{\"content\":\"lorem ipsum \"}}]}\n\n";
    int events = 0;
    while (!s.too_large && events < 1000) {
        assert_true(sl_buf_append(&pending, ev, sizeof ev - 1));
        openai_stream_feed(&s, &pending, false, 1.0);
        events++;
    }
    assert_true(s.too_large);
    assert_int_equal(events, 9); /* 8 x 12 bytes fit in 100 */
    assert_true(s.text.len <= 100);
    sl_result r;
    char why[256];
    openai_stream_feed(&s, &pending, true, 2.0);
    assert_int_equal(openai_stream_result(&s, 0.0, 3.0, &r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_non_null(strstr(why, "its text passed 100 bytes"));
    sl_buf_free(&pending);
    openai_stream_free(&s);
}

static void stream_errors(void **state)
{
    openai_stream s = {0};
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, "data: {\"error\":{\"message\":\"boom\\nagain\",\"code\":500}}\n\n", 5);
    sl_result r;
    char why[256];
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_string_equal(why, "the stream carried an error: boom again");
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, ": nothing but keep-alives\n\ndata: [DONE]\n\n", 4);
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_non_null(strstr(why, "no chat.completion.chunk"));
    openai_stream_free(&s);
}

/* finish_reason as the server said it: none is none (not "stop"), a word
 * sluice does not know is kept (one string per word, so it can be a metric
 * label), and "error" (OpenRouter: its provider failed mid-answer) or
 * "abort" (vLLM) is a cut answer, to be asked again, never a caption. */
static void finish_reasons_are_kept_as_the_server_said(void **state)
{
    sl_result r;
    char why[256];
    const char *none = "{\"choices\":[{\"message\":{\"content\":\"a cat\"},"
                       "\"finish_reason\":null}]}";
    assert_int_equal(openai_parse_completion(none, strlen(none), 100, 1, &r, why, sizeof why),
                     OPENAI_ANSWER_OK);
    assert_null(r.finish_reason);
    sl_result_clear(&r);
    const char *eos = "{\"choices\":[{\"message\":{\"content\":\"a cat\"},"
                      "\"finish_reason\":\"eos_token\"}]}";
    assert_int_equal(openai_parse_completion(eos, strlen(eos), 100, 1, &r, why, sizeof why),
                     OPENAI_ANSWER_OK);
    assert_string_equal(r.finish_reason, "eos_token");
    assert_ptr_equal(r.finish_reason, openai_finish_reason("eos_token"));
    sl_result_clear(&r);
    assert_string_equal(openai_finish_reason("two words\n"), "two?words?");

    const char *error = "{\"choices\":[{\"message\":{\"content\":\"a ca\"},"
                        "\"finish_reason\":\"error\"}],\"error\":{\"message\":\"Provider "
                        "disconnected\",\"code\":502}}";
    assert_int_equal(openai_parse_completion(error, strlen(error), 100, 1, &r, why, sizeof why),
                     OPENAI_ANSWER_CUT);
    assert_non_null(strstr(why, "finish_reason \"error\": Provider disconnected"));
    assert_null(r.text);
    const char *aborted = "{\"choices\":[{\"message\":{\"content\":\"a\"},"
                          "\"finish_reason\":\"abort\"}]}";
    assert_int_equal(openai_parse_completion(aborted, strlen(aborted), 100, 1, &r, why,
                                             sizeof why),
                     OPENAI_ANSWER_CUT);
    assert_non_null(strstr(why, "\"abort\""));

    /* A body cut inside its JSON (a close-delimited answer whose
     * connection broke) is cut; one that is no JSON at all is not. */
    const char *whole = "{\"choices\":[{\"message\":{\"content\":\"a cat\"}}]}";
    assert_int_equal(openai_parse_completion(whole, strlen(whole) / 2, 100, 1, &r, why,
                                             sizeof why),
                     OPENAI_ANSWER_CUT);
    assert_non_null(strstr(why, "ends inside its JSON"));
    const char *html = "<html>a proxy's login page</html>";
    assert_int_equal(openai_parse_completion(html, strlen(html), 100, 1, &r, why, sizeof why),
                     OPENAI_ANSWER_BAD);
    assert_non_null(strstr(why, "not JSON"));
}

/* Answers that are no caption fail the row saying what they are: they
 * were kept as '' before. */
static void answers_that_are_no_caption_fail(void **state)
{
    static const struct {
        const char *body, *why;
    } cases[] = {
        {"{\"choices\":[{\"message\":{\"content\":null,\"refusal\":\"I can't help with that.\"},"
         "\"finish_reason\":\"stop\"}]}",
         "the model refused: I can't help with that."},
        {"{\"choices\":[{\"message\":{\"content\":null},\"finish_reason\":\"content_filter\"}]}",
         "content filter stopped the answer"},
        {"{\"choices\":[{\"message\":{\"content\":\"a c\"},\"finish_reason\":\"content_filter\"}]}",
         "content filter stopped the answer"},
        {"{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[{\"id\":\"c\",\"type\":"
         "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
         "\"finish_reason\":\"tool_calls\"}]}",
         "answered with a tool call"},
        {"{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"c\"}]}}]}",
         "answered with a tool call"},
        {"{\"choices\":[{\"message\":{\"content\":null,\"reasoning_content\":\"let me think\"},"
         "\"finish_reason\":\"length\"}]}",
         "all reasoning (12 bytes of reasoning_content, no content): it reached max_tokens "
         "while thinking; raise --max-tokens"},
        {"{\"choices\":[{\"message\":{\"content\":\"\",\"reasoning\":\"hmm\"},"
         "\"finish_reason\":\"stop\"}]}",
         "all reasoning (3 bytes of reasoning_content, no content)"},
    };
    sl_result r;
    char why[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *b = cases[i].body;
        assert_int_equal(openai_parse_completion(b, strlen(b), 100, 1, &r, why, sizeof why),
                         OPENAI_ANSWER_BAD);
        assert_non_null(strstr(why, cases[i].why));
        assert_null(r.text);
    }
    assert_null(strstr(why, "max_tokens")); /* only when it ended there */
    /* Reasoning beside an answer: the answer. */
    const char *both = "{\"choices\":[{\"message\":{\"content\":\"a cat\",\"reasoning_content\":"
                       "\"let me think\"},\"finish_reason\":\"stop\"}]}";
    assert_int_equal(openai_parse_completion(both, strlen(both), 100, 1, &r, why, sizeof why),
                     OPENAI_ANSWER_OK);
    assert_string_equal(r.text, "a cat");
    sl_result_clear(&r);
}

/* A stream is whole when it says so: a finish_reason or [DONE]. Content
 * chunks and then a clean end of the transfer (a server that died, a
 * proxy's timeout) were kept as the caption before. */
static void streams_without_their_end_are_cut(void **state)
{
    static const char chunk[] = "data: {\"choices\":[{\"delta\":{\"content\":\"hel\"},"
                                "\"finish_reason\":null}]}\n\n";
    static const char stop[] = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    openai_stream s = {0};
    sl_result r;
    char why[256], text[1024];
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, chunk, 7);
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_CUT);
    assert_non_null(strstr(why, "without a finish_reason or data: [DONE], after 1 content chunk"));

    snprintf(text, sizeof text, "%sdata: [DONE]\n\n", chunk); /* no finish_reason: null */
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, text, 5);
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r.text, "hel");
    assert_null(r.finish_reason);
    sl_result_clear(&r);

    snprintf(text, sizeof text, "%s%s", chunk, stop); /* no [DONE]: the finish says it */
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, text, 9);
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_OK);
    assert_string_equal(r.finish_reason, "stop");
    sl_result_clear(&r);

    /* OpenRouter's failure mid-stream: an error event with finish "error". */
    snprintf(text, sizeof text,
             "%sdata: {\"error\":{\"code\":502,\"message\":\"Provider disconnected\"},"
             "\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n"
             "data: [DONE]\n\n",
             chunk);
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, text, 11);
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_CUT);
    assert_non_null(strstr(why, "finish_reason \"error\": Provider disconnected"));

    /* What is no caption, streamed. */
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, "data: {\"choices\":[{\"delta\":{\"refusal\":\"I can't\"}}]}\n\n"
             "data: {\"choices\":[{\"delta\":{\"refusal\":\" help.\"},\"finish_reason\":\"stop\"}]}"
             "\n\ndata: [DONE]\n\n", 6);
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_string_equal(why, "the model refused: I can't help.");
    openai_stream_reset(&s, 1000, openai_idle_max(0));
    feed(&s, "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think\"}}]}\n\n"
             "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n",
         6);
    assert_int_equal(openai_stream_result(&s, 0.0, 1.0, &r, why, sizeof why), OPENAI_ANSWER_BAD);
    assert_non_null(strstr(why, "all reasoning (5 bytes"));
    openai_stream_free(&s);
}

static void server_messages(void **state)
{
    char m[64];
    const char *openai = "{\"error\":{\"message\":\"Invalid API Key\",\"type\":\"x\"}}";
    openai_server_message(openai, strlen(openai), m, sizeof m);
    assert_string_equal(m, "Invalid API Key");
    const char *fastapi = "{\"detail\":\"Not\\r\\nFound\"}";
    openai_server_message(fastapi, strlen(fastapi), m, sizeof m);
    assert_string_equal(m, "Not  Found");
    const char *vllm = "{\"object\":\"error\",\"message\":\"too long\"}";
    openai_server_message(vllm, strlen(vllm), m, sizeof m);
    assert_string_equal(m, "too long");
    const char *html = "<html>\nBad Gateway</html>";
    openai_server_message(html, strlen(html), m, sizeof m);
    assert_string_equal(m, "<html> Bad Gateway</html>");
    openai_server_message(NULL, 0, m, sizeof m);
    assert_string_equal(m, "(empty body)");
    char big[400];
    memset(big, 'x', sizeof big);
    openai_server_message(big, sizeof big, m, sizeof m);
    assert_int_equal(strlen(m), sizeof m - 1);
}

/* One answer of body read with a text bound of text_max: its text (the
 * caller frees it), or NULL with the cause in why. */
static char *text_of(const char *body, size_t text_max, char *why, size_t cap)
{
    sl_result out;
    if (openai_parse_completion(body, strlen(body), text_max, 1, &out, why, cap) !=
        OPENAI_ANSWER_OK)
        return NULL;
    char *text = out.text;
    out.text = NULL;
    sl_result_clear(&out);
    return text;
}

/* A content of parts is its text parts joined (Mistral's reasoning
 * models); parts with no text are an empty caption; a 2xx error object is
 * named by its message. */
static void content_parts_and_2xx_errors(void **state)
{
    (void)state;
    char why[256];
    const char *parts = "{\"choices\":[{\"finish_reason\":\"stop\",\"message\":{\"content\":"
                        "[{\"type\":\"thinking\",\"thinking\":\"x\"},{\"type\":\"text\","
                        "\"text\":\"a \"},{\"type\":\"text\",\"text\":\"b\"},7]}}]}";
    char *text = text_of(parts, 1024, why, sizeof why);
    assert_string_equal(text, "a b");
    sl_free(text);
    text = text_of("{\"choices\":[{\"message\":{\"content\":[{\"type\":\"image_url\"}]}}]}",
                   1024, why, sizeof why);
    assert_string_equal(text, "");
    sl_free(text);
    assert_null(text_of("{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\","
                        "\"text\":\"0123456789\"}]}}]}", 4, why, sizeof why));
    assert_non_null(strstr(why, "passed 4 bytes"));
    assert_null(text_of("{\"error\":{\"message\":\"upstream down\"}}", 1024, why, sizeof why));
    assert_string_equal(why, "the answer is an error, not a completion: upstream down");
}

/* The API key a server quotes is masked wherever it occurs, the message
 * kept around it and cut (never overflowing) when the mask is longer. */
static void secrets_hidden(void **state)
{
    (void)state;
    char m[64] = "bad key Bearer sk-123, sk-123 again";
    openai_hide_secret(m, sizeof m, "sk-123");
    assert_string_equal(m, "bad key Bearer ***, *** again");
    openai_hide_secret(m, sizeof m, NULL);
    openai_hide_secret(m, sizeof m, "");
    assert_string_equal(m, "bad key Bearer ***, *** again");
    char s[8] = "a1b1c1d"; /* a key shorter than the mask grows the text: cut at cap */
    openai_hide_secret(s, sizeof s, "1");
    assert_string_equal(s, "a***b");
    char t[6] = "xxxk";
    openai_hide_secret(t, sizeof t, "k"); /* the mask does not fit: the text ends there */
    assert_string_equal(t, "xxx");
    char u[16] = "kkkk";
    openai_hide_secret(u, sizeof u, "kk");
    assert_string_equal(u, "******");
}

/* A logprobs object whose first token has these alternatives (texts as
 * "token", log-probabilities). */
static char *alternatives(const char *const *tokens, const double *lps, int n)
{
    json_t *alts = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(alts, json_pack("{s:s, s:f}", "token", tokens[i], "logprob", lps[i]));
    json_t *root = json_pack("{s:[{s:s, s:f, s:o}]}", "content", "token", tokens[0], "logprob",
                             lps[0], "top_logprobs", alts);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

/* The walk over alternatives with no probe to make: the first answer's
 * alternatives scored, or why not. */
static bool scores_at_once(const char *lp, const char *const *choices, int n, double *p,
                           char *why, size_t cap)
{
    openai_choice_walk w;
    openai_choice_walk_init(&w, choices, n);
    if (!openai_choice_walk_read(&w, "", 0, 1.0, lp, why, cap))
        return false;
    assert_int_equal(w.n_probes, 0);
    return openai_choice_walk_end(&w, p, why, cap);
}

/* Probe k of w is `prefix` with `mass`; answered with alternatives lp. */
static void answer_probe(openai_choice_walk *w, int k, const char *prefix, double mass,
                         const char *lp)
{
    char why[256];
    openai_choice_probe q = w->probes[k];
    assert_string_equal(q.prefix, prefix);
    assert_int_equal(q.len, strlen(prefix));
    assert_float_equal(q.mass, mass, 1e-12);
    assert_true(openai_choice_walk_read(w, q.prefix, q.len, q.mass, lp, why, sizeof why));
}

/* Choices from the first token's alternatives: an alternative counts for
 * the choice it is (space and first-letter case aside) when it begins no
 * other, else for the one it begins; none at all fails. */
static void choices_are_scored_from_the_alternatives(void **state)
{
    const char *choices[3] = {"yes", "no", "maybe"};
    const char *toks[] = {" Yes", "no", " ma", "\n", " yes", "Maybe", " m", "NO"};
    const double lps[] = {-0.5, -1.0, -2.0, -2.5, -3.0, -3.5, -4.0, -4.5};
    char *lp = alternatives(toks, lps, 8);
    double p[3];
    char why[256];
    assert_true(scores_at_once(lp, choices, 3, p, why, sizeof why));
    /* " m" begins only "maybe"; "NO" is neither "no" nor "No". */
    double yes = exp(-0.5) + exp(-3.0), no = exp(-1.0),
           maybe = exp(-2.0) + exp(-3.5) + exp(-4.0), total = yes + no + maybe;
    assert_float_equal(p[0], yes / total, 1e-9);
    assert_float_equal(p[1], no / total, 1e-9);
    assert_float_equal(p[2], maybe / total, 1e-9);
    free(lp);

    /* None of them among the alternatives; no alternatives at all. */
    const char *ratings[2] = {"10", "12"};
    const char *other[] = {"7", "x"};
    const double other_lps[] = {-0.1, -0.2};
    lp = alternatives(other, other_lps, 2);
    assert_false(scores_at_once(lp, ratings, 2, p, why, sizeof why));
    assert_string_equal(why, "none of the choices is among the 2 most likely first tokens (the "
                             "most likely: '7')");
    free(lp);
    assert_false(scores_at_once("{\"content\":[{\"token\":\"a\"}]}", choices, 3, p, why,
                                sizeof why));
    assert_non_null(strstr(why, "no top_logprobs for the first token"));
    assert_false(scores_at_once(NULL, choices, 3, p, why, sizeof why));
}

/* Where choices begin alike the walk asks for probes and reads them:
 * worked out by hand. Ratings: "1" is a choice and begins "10" and "12";
 * after "1", "0" is 10, "2" is 12, "5" (15) none, and the rest is 1's. */
static void probes_tell_choices_apart_where_they_part(void **state)
{
    const char *digits[3] = {"1", "10", "12"};
    openai_choice_walk w;
    openai_choice_walk_init(&w, digits, 3);
    const char *first[] = {"1", "2", " 1"};
    const double first_lps[] = {log(0.5), log(0.1), log(0.2)};
    char *lp = alternatives(first, first_lps, 3);
    char why[256];
    assert_true(openai_choice_walk_read(&w, "", 0, 1.0, lp, why, sizeof why));
    free(lp);
    assert_int_equal(w.n_probes, 2);
    const char *next[] = {"0", "2", "5", ""};
    const double next_lps[] = {log(0.3), log(0.1), log(0.2), log(0.4)};
    lp = alternatives(next, next_lps, 4);
    answer_probe(&w, 0, "1", 0.5, lp);
    answer_probe(&w, 1, " 1", 0.2, lp);
    free(lp);
    assert_int_equal(w.n_probes, 2); /* the caller takes them */
    w.n_probes = 0;
    double p[3];
    assert_true(openai_choice_walk_end(&w, p, why, sizeof why));
    /* 1: 0.7 * (1 - 0.3 - 0.1); 10: 0.7 * 0.3; 12: 0.7 * 0.1; of 0.7. */
    assert_float_equal(p[0], 0.6, 1e-9);
    assert_float_equal(p[1], 0.3, 1e-9);
    assert_float_equal(p[2], 0.1, 1e-9);

    /* "the cat", "the dog", "a bird": " the" and "The" begin two each;
     * after " the", " bird" is none of them (and " the" no choice: no rest). */
    const char *pets[3] = {"the cat", "the dog", "a bird"};
    openai_choice_walk_init(&w, pets, 3);
    const char *t1[] = {" the", "a", "The"};
    const double t1_lps[] = {log(0.6), log(0.1), log(0.05)};
    lp = alternatives(t1, t1_lps, 3);
    assert_true(openai_choice_walk_read(&w, "", 0, 1.0, lp, why, sizeof why));
    free(lp);
    assert_int_equal(w.n_probes, 2);
    const char *t2[] = {" cat", " dog", " bird"};
    const double t2_lps[] = {log(0.5), log(0.25), log(0.1)};
    lp = alternatives(t2, t2_lps, 3);
    answer_probe(&w, 0, " the", 0.6, lp);
    free(lp);
    const char *t3[] = {" dog"};
    const double t3_lps[] = {0.0};
    lp = alternatives(t3, t3_lps, 1);
    answer_probe(&w, 1, "The", 0.05, lp);
    free(lp);
    assert_true(openai_choice_walk_end(&w, p, why, sizeof why));
    assert_float_equal(p[0], 0.3 / 0.6, 1e-9);
    assert_float_equal(p[1], 0.2 / 0.6, 1e-9);
    assert_float_equal(p[2], 0.1 / 0.6, 1e-9);

    /* Two partings deep: a probe's answer asks for another probe. */
    const char *big[2] = {"the big cat", "the big dog"};
    openai_choice_walk_init(&w, big, 2);
    const char *b1[] = {"the"};
    const double b1_lps[] = {0.0};
    lp = alternatives(b1, b1_lps, 1);
    assert_true(openai_choice_walk_read(&w, "", 0, 1.0, lp, why, sizeof why));
    free(lp);
    assert_int_equal(w.n_probes, 1);
    w.n_probes = 0;
    const char *b2[] = {" big", " small"};
    const double b2_lps[] = {log(0.8), log(0.2)};
    lp = alternatives(b2, b2_lps, 2);
    answer_probe(&w, 0, "the", 1.0, lp);
    free(lp);
    assert_int_equal(w.n_probes, 1);
    w.n_probes = 0;
    const char *b3[] = {" cat", " dog"};
    const double b3_lps[] = {log(0.5), log(0.25)};
    lp = alternatives(b3, b3_lps, 2);
    answer_probe(&w, 0, "the big", 0.8, lp);
    free(lp);
    assert_int_equal(w.made, 2);
    assert_true(openai_choice_walk_end(&w, p, why, sizeof why));
    assert_float_equal(p[0], 2.0 / 3, 1e-9);
    assert_float_equal(p[1], 1.0 / 3, 1e-9);

    /* A probe under 1e-7 of the first token's share is not made: its
     * sliver split evenly between the choices it could be. */
    const char *few[3] = {"1", "10", "2"};
    openai_choice_walk_init(&w, few, 3);
    const char *f1[] = {"2", "1"};
    const double f1_lps[] = {log(0.9), log(1e-9)};
    lp = alternatives(f1, f1_lps, 2);
    assert_true(openai_choice_walk_read(&w, "", 0, 1.0, lp, why, sizeof why));
    free(lp);
    assert_int_equal(w.n_probes, 0);
    assert_true(openai_choice_walk_end(&w, p, why, sizeof why));
    assert_float_equal(p[0], 0.5e-9 / (0.9 + 1e-9), 1e-15);
    assert_float_equal(p[1], 0.5e-9 / (0.9 + 1e-9), 1e-15);

    /* At most OPENAI_CHOICE_PROBES a row: 20 ambiguous first tokens (each
     * "kN" begins "kN", "kNx"), the rest split evenly. */
    const char *many[40];
    char names[40][8];
    for (int i = 0; i < 20; i++) {
        snprintf(names[2 * i], 8, "k%02d", i);
        snprintf(names[2 * i + 1], 8, "k%02dx", i);
        many[2 * i] = names[2 * i];
        many[2 * i + 1] = names[2 * i + 1];
    }
    openai_choice_walk_init(&w, many, 40);
    const char *m1[20];
    double m1_lps[20];
    for (int i = 0; i < 20; i++) {
        m1[i] = many[2 * i];
        m1_lps[i] = log(0.05);
    }
    lp = alternatives(m1, m1_lps, 20);
    assert_true(openai_choice_walk_read(&w, "", 0, 1.0, lp, why, sizeof why));
    free(lp);
    assert_int_equal(w.n_probes, OPENAI_CHOICE_PROBES);
    assert_float_equal(w.p[2 * 19], 0.025, 1e-12);
    assert_float_equal(w.p[2 * 19 + 1], 0.025, 1e-12);
    assert_float_equal(w.p[0], 0.0, 0);

    /* A probe's answer without alternatives: why names continuing. */
    openai_choice_walk_init(&w, digits, 3);
    assert_false(openai_choice_walk_read(&w, "1", 1, 0.5, "{\"content\":[]}", why, sizeof why));
    assert_non_null(strstr(why, "no top_logprobs for the next token"));
    assert_non_null(strstr(why, "continue_final_message"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(choices_are_scored_from_the_alternatives),
        cmocka_unit_test(probes_tell_choices_apart_where_they_part),
        cmocka_unit_test(bounds_follow_max_tokens),
        cmocka_unit_test(stream_of_lines_without_text_is_bounded),
        cmocka_unit_test(n_answers_come_back_in_index_order),
        cmocka_unit_test(completion_past_its_bound_fails),
        cmocka_unit_test(nul_in_the_text),
        cmocka_unit_test(answer_not_utf8_is_said_as_the_servers),
        cmocka_unit_test(stream_reads_the_same_in_any_pieces),
        cmocka_unit_test(stream_past_its_bound_fails),
        cmocka_unit_test(logprobs_are_kept_whole_and_joined_from_a_stream),
        cmocka_unit_test(stream_errors),
        cmocka_unit_test(finish_reasons_are_kept_as_the_server_said),
        cmocka_unit_test(answers_that_are_no_caption_fail),
        cmocka_unit_test(streams_without_their_end_are_cut),
        cmocka_unit_test(server_messages),
        cmocka_unit_test(secrets_hidden),
        cmocka_unit_test(content_parts_and_2xx_errors),
        cmocka_unit_test(stream_of_content_parts),
        cmocka_unit_test(stream_chunk_that_does_not_parse_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
