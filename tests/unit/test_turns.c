/* Unit tests: job/turns.c, a row's conversation as the engine's messages
 * (--turns last). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/error.h"
#include "job/turns.h"

/* The messages as "role: part|part" lines; an image part is "#". */
static void render(const turns *t, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < t->n_messages; i++) {
        const sl_message *m = &t->messages[i];
        len += (size_t)snprintf(out + len, cap - len, "%s%s:", i ? "\n" : "", m->role);
        for (int k = 0; k < m->n_parts; k++)
            len += (size_t)snprintf(out + len, cap - len, "%s%s", k ? "|" : " ",
                                    m->parts[k].text ? m->parts[k].text : "#");
    }
}

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    assert_non_null(v);
    return v;
}

static const sl_content_part one_image[] = {{NULL}};
static const turn_slot single[] = {{one_image, 1}};

static void expect(const char *conversation, const char *system, const char *mark,
                   const turn_slot *slots, int n_slots, const char *want)
{
    json_t *c = parse(conversation);
    turns t;
    assert_int_equal(turns_build(c, system, mark, slots, n_slots, false, -1, "row7", &t), SL_OK);
    char got[2048];
    render(&t, got, sizeof got);
    assert_string_equal(got, want);
    turns_clear(&t);
    json_decref(c);
}

static void expect_failure(const char *conversation, int n_slots, bool video, const char *want)
{
    static const sl_content_part frames[] = {{"0.0s:"}, {NULL}, {"1.0s:"}, {NULL}};
    static const turn_slot video_slot[] = {{frames, 4}};
    const turn_slot *slots = video ? video_slot : single;
    json_t *c = parse(conversation);
    turns t;
    assert_int_equal(turns_build(c, NULL, "<image>", slots, n_slots, video, -1, "row7", &t),
                     SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), want));
    assert_non_null(strstr(sl_last_error(), "row7"));
    assert_int_equal(t.n_messages, 0);
    json_decref(c);
}

static void llava_turns_up_to_the_last_question(void **state)
{
    (void)state;
    const char *llava = "[{\"from\": \"human\", \"value\": \"<image>\\nWhat is it?\"},"
                        " {\"from\": \"gpt\", \"value\": \"A cat.\"},"
                        " {\"from\": \"human\", \"value\": \"What colour?\"},"
                        " {\"from\": \"gpt\", \"value\": \"Grey.\"}]";
    expect(llava, NULL, "<image>", single, 1,
           "user: #|\nWhat is it?\nassistant: A cat.\nuser: What colour?");
    /* The job's system prompt goes first when the conversation has none. */
    expect(llava, "Be brief.", "<image>", single, 1,
           "system: Be brief.\nuser: #|\nWhat is it?\nassistant: A cat.\nuser: What colour?");
    /* Without a placeholder the marker is text, and the image goes first. */
    expect(llava, NULL, NULL, single, 1,
           "user: #|<image>\nWhat is it?\nassistant: A cat.\nuser: What colour?");
}

static void chat_messages_with_parts_and_their_own_system(void **state)
{
    (void)state;
    expect("[{\"role\": \"system\", \"content\": \"Answer in French.\"},"
           " {\"role\": \"user\", \"content\": [{\"type\": \"image\"},"
           "  {\"type\": \"text\", \"text\": \"What is it?\"}, {\"type\": \"audio\"},"
           "  {\"type\": \"text\", \"text\": \"Briefly.\"}]},"
           " {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Un chat.\"}]},"
           " {\"role\": \"user\", \"content\": \"Et la couleur ?\"}]",
           "Ignored: the conversation has a system turn.", "<image>", single, 1,
           "system: Answer in French.\nuser: #|What is it?|Briefly.\nassistant: Un chat.\n"
           "user: Et la couleur ?");
}

static void unmarked_images_go_before_the_first_user_text(void **state)
{
    (void)state;
    static const sl_content_part first[] = {{"Image 1:"}, {NULL}};
    static const sl_content_part second[] = {{"Image 2:"}, {NULL}};
    static const turn_slot two[] = {{first, 2}, {second, 2}};
    /* After a system turn: the messages after the insertion keep their parts. */
    expect("[{\"from\": \"system\", \"value\": \"S\"}, {\"from\": \"human\", \"value\": \"Q1\"},"
           " {\"from\": \"gpt\", \"value\": \"A1\"}, {\"from\": \"human\", \"value\": \"Q2\"}]",
           NULL, "<image>", two, 2,
           "system: S\nuser: Image 1:|#|Image 2:|#|Q1\nassistant: A1\nuser: Q2");
    /* Marked, each image at its marker, in whichever turn. */
    expect("[{\"from\": \"human\", \"value\": \"<image> and\"}, {\"from\": \"gpt\", \"value\": \"ok\"},"
           " {\"from\": \"human\", \"value\": \"then <image>?\"}]",
           NULL, "<image>", two, 2,
           "user: Image 1:|#| and\nassistant: ok\nuser: then |Image 2:|#|?");
}

static void what_says_nothing_is_left_out(void **state)
{
    (void)state;
    /* Empty turns are no messages; a last human turn with nothing in it is
     * not the one answered; markers after the cut do not count. */
    expect("[{\"from\": \"human\", \"value\": \"\"}, {\"from\": \"human\", \"value\": \"<image>Q1\"},"
           " {\"from\": \"gpt\", \"value\": \"see <image>\"}, {\"from\": \"human\", \"value\": null},"
           " {\"from\": \"human\", \"value\": []}]",
           NULL, "<image>", single, 1, "user: #|Q1");
    /* An empty answer stays a message (the roles keep alternating); the
     * placeholder in an answer, or an image part there, marks nothing. */
    expect("[{\"from\": \"human\", \"value\": \"<image>Q1\"}, {\"from\": \"gpt\", \"value\": \"\"},"
           " {\"from\": \"human\", \"value\": \"Q2\"},"
           " {\"role\": \"assistant\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"a <image>\"}]},"
           " {\"from\": \"human\", \"value\": \"Q3\"}]",
           NULL, "<image>", single, 1, "user: #|Q1\nassistant:\nuser: Q2\nassistant: a <image>\nuser: Q3");
    /* No user turn, or no conversation: the row keeps its prompt. */
    const char *none[] = {"[{\"from\": \"gpt\", \"value\": \"A\"}]", "[]", "\"a string\"",
                          "{\"from\": \"human\"}", "[{\"from\": \"human\", \"value\": 3}]"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        json_t *c = parse(none[i]);
        turns t;
        assert_int_equal(turns_build(c, "S", "<image>", single, 1, false, -1, "r", &t), SL_OK);
        assert_int_equal(t.n_messages, 0);
        assert_null(t.messages);
        json_decref(c);
    }
}

static void conversations_that_cannot_be_sent_fail_their_row(void **state)
{
    (void)state;
    expect_failure("[{\"from\": \"human\", \"value\": \"<image><image>Q\"}]", 1, false,
                   "2 image markers ('<image>' or image parts) for 1 image");
    expect_failure("[{\"from\": \"human\", \"value\": \"<image>Q\"},"
                   " {\"from\": \"human\", \"value\": \"<image>Q\"}]", 1, true,
                   "a video's frames go at one marker");
    expect_failure("[{\"from\": \"human\", \"value\": \"Q\"}, {\"from\": \"narrator\", \"value\": \"x\"}]",
                   1, false, "turn 1 of the conversation is by 'narrator'");
    expect_failure("[{\"from\": \"human\", \"value\": \"Q\"}, \"loose text\"]", 1, false,
                   "turn 1 of the conversation is not a turn");
    /* More messages than a request may have. */
    char *many = sl_malloc(300 * 40 + 8);
    size_t len = 0;
    many[len++] = '[';
    for (int i = 0; i < 300; i++)
        len += (size_t)sprintf(many + len, "%s{\"from\": \"%s\", \"value\": \"t%d\"}", i ? "," : "",
                               i % 2 ? "gpt" : "human", i);
    strcpy(many + len, "]");
    expect_failure(many, 1, false, "more than the 256 a request may have");
    sl_free(many);
}

static void out_of_memory_anywhere_leaks_nothing(void **state)
{
    (void)state;
    json_t *c = parse("[{\"from\": \"system\", \"value\": \"S\"}, {\"from\": \"human\", \"value\": \"Q1\"},"
                      " {\"from\": \"gpt\", \"value\": \"A1\"}, {\"from\": \"human\", \"value\": \"Q2\"},"
                      " {\"from\": \"gpt\", \"value\": \"A2\"}, {\"from\": \"human\", \"value\": \"Q3\"}]");
    int failed = 0;
    for (long n = 0;; n++) {
        sl_alloc_fail_after(n);
        turns t;
        sl_status st = turns_build(c, NULL, "<image>", single, 1, false, -1, "row7", &t);
        sl_alloc_fail_after(-1);
        if (st == SL_OK) {
            assert_int_equal(t.n_messages, 6);
            turns_clear(&t);
            break;
        }
        assert_int_equal(st, SL_ERR_NOMEM);
        assert_null(t.messages);
        failed++;
    }
    assert_true(failed > 5);
    json_decref(c);
}

static void each_question_in_turn(void **state)
{
    (void)state;
    json_t *c = parse("[{\"from\": \"system\", \"value\": \"S\"}, {\"from\": \"human\", \"value\": \"<image>Q1\"},"
                      " {\"from\": \"gpt\", \"value\": \"A1\"}, {\"from\": \"human\", \"value\": \"\"},"
                      " {\"from\": \"human\", \"value\": \"Q2\"}, {\"from\": \"gpt\", \"value\": \"A2\"},"
                      " {\"from\": \"human\", \"value\": \"Q3\"}]");
    const char *want[] = {"system: S\nuser: #|Q1",
                          "system: S\nuser: #|Q1\nassistant: A1\nuser: Q2",
                          "system: S\nuser: #|Q1\nassistant: A1\nuser: Q2\nassistant: A2\nuser: Q3"};
    for (int q = 0; q < 4; q++) {
        turns t;
        assert_int_equal(turns_build(c, NULL, "<image>", single, 1, false, q, "row7", &t), SL_OK);
        if (q == 3) { /* past the last question: nothing to ask */
            assert_int_equal(t.n_messages, 0);
            continue;
        }
        assert_int_equal(t.n_questions, 3); /* the empty human turn asks nothing */
        char got[1024];
        render(&t, got, sizeof got);
        assert_string_equal(got, want[q]);
        turns_clear(&t);
    }
    json_decref(c);
    /* A later question's image joins when that question is asked. */
    static const sl_content_part first[] = {{"1:"}, {NULL}}, second[] = {{"2:"}, {NULL}};
    static const turn_slot two[] = {{first, 2}, {second, 2}};
    c = parse("[{\"from\": \"human\", \"value\": \"<image>Q1\"}, {\"from\": \"gpt\", \"value\": \"A1\"},"
              " {\"from\": \"human\", \"value\": \"<image>Q2\"}]");
    const char *with[] = {"user: 1:|#|Q1", "user: 1:|#|Q1\nassistant: A1\nuser: 2:|#|Q2"};
    for (int q = 0; q < 2; q++) {
        turns t;
        assert_int_equal(turns_build(c, NULL, "<image>", two, 2, false, q, "row7", &t), SL_OK);
        assert_int_equal(t.n_images, q + 1);
        char got[1024];
        render(&t, got, sizeof got);
        assert_string_equal(got, with[q]);
        turns_clear(&t);
    }
    json_decref(c);
}

static void answer_into(const char *conversation, const char *const *answers, int n,
                        const char *want)
{
    json_t *c = parse(conversation), *w = parse(want);
    for (int q = 0; q < n; q++)
        assert_int_equal(turns_answer(c, q, answers[q]), SL_OK);
    if (!json_equal(c, w)) {
        char *got = json_dumps(c, 0);
        fail_msg("got %s", got);
    }
    assert_int_equal(turns_answer(c, n, "x"), SL_ERR_INVALID_ARG);
    json_decref(c);
    json_decref(w);
}

static void answers_go_into_the_conversation(void **state)
{
    (void)state;
    const char *answers[] = {"N1", "N2", "N3"};
    /* In place of the dataset's answer (the extra ones after it go), or a
     * new turn in the question's form. */
    answer_into("[{\"from\": \"human\", \"value\": \"Q1\", \"id\": 1}, {\"from\": \"gpt\", \"value\": \"A1\"},"
                " {\"from\": \"human\", \"value\": \"Q2\"}, {\"from\": \"gpt\", \"value\": \"A2a\"},"
                " {\"from\": \"gpt\", \"value\": \"A2b\"}, {\"from\": \"human\", \"value\": \"Q3\"}]",
                answers, 3,
                "[{\"from\": \"human\", \"value\": \"Q1\", \"id\": 1}, {\"from\": \"gpt\", \"value\": \"N1\"},"
                " {\"from\": \"human\", \"value\": \"Q2\"}, {\"from\": \"gpt\", \"value\": \"N2\"},"
                " {\"from\": \"human\", \"value\": \"Q3\"}, {\"from\": \"gpt\", \"value\": \"N3\"}]");
    /* Chat messages: parts where the question or the turn replaced has them. */
    answer_into("[{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"Q1\"}]},"
                " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"\"}]},"
                " {\"role\": \"user\", \"content\": \"Q2\"},"
                " {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"A2\"}]}]",
                answers, 2,
                "[{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"Q1\"}]},"
                " {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"N1\"}]},"
                " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"\"}]},"
                " {\"role\": \"user\", \"content\": \"Q2\"},"
                " {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"N2\"}]}]");
}

/* turns_answer must put answer K after the turn turns_build asked as
 * question K: a turn that is an image alone asks, one of empty texts or
 * unknown parts does not, a system turn between keeps its place. */
static void the_question_asked_is_the_one_answered(void **state)
{
    (void)state;
    json_t *c = parse("[{\"role\": \"user\", \"content\": [{\"type\": \"image\"}]},"
                      " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"\"},"
                      "  {\"type\": \"audio\"}]},"
                      " {\"role\": \"system\", \"content\": \"S\"},"
                      " {\"role\": \"user\", \"content\": \"Q2\"},"
                      " {\"role\": \"assistant\", \"content\": \"A2\"}]");
    const char *want[] = {"user: #",
                          "user: #\nassistant: N1\nsystem: S\nuser: Q2"};
    const char *answers[] = {"N1", "N2"};
    for (int q = 0; q < 2; q++) {
        turns t;
        assert_int_equal(turns_build(c, NULL, "<image>", single, 1, false, q, "row7", &t), SL_OK);
        assert_int_equal(t.n_questions, 2);
        char got[1024];
        render(&t, got, sizeof got);
        assert_string_equal(got, want[q]);
        turns_clear(&t);
        assert_int_equal(turns_answer(c, q, answers[q]), SL_OK);
    }
    json_t *w = parse("[{\"role\": \"user\", \"content\": [{\"type\": \"image\"}]},"
                      " {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"N1\"}]},"
                      " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"\"},"
                      "  {\"type\": \"audio\"}]},"
                      " {\"role\": \"system\", \"content\": \"S\"},"
                      " {\"role\": \"user\", \"content\": \"Q2\"},"
                      " {\"role\": \"assistant\", \"content\": \"N2\"}]");
    assert_true(json_equal(c, w));
    json_decref(c);
    json_decref(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(llava_turns_up_to_the_last_question),
        cmocka_unit_test(chat_messages_with_parts_and_their_own_system),
        cmocka_unit_test(unmarked_images_go_before_the_first_user_text),
        cmocka_unit_test(what_says_nothing_is_left_out),
        cmocka_unit_test(conversations_that_cannot_be_sent_fail_their_row),
        cmocka_unit_test(out_of_memory_anywhere_leaks_nothing),
        cmocka_unit_test(each_question_in_turn),
        cmocka_unit_test(answers_go_into_the_conversation),
        cmocka_unit_test(the_question_asked_is_the_one_answered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
