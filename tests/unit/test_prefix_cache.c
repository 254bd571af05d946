/* Unit tests: the llama engine's kept sequences (sl_prefix_cache,
 * docs/engine.md "The prefix cache") on the generated tiny model: a
 * conversation's next turn and another question about the same picture go
 * on from the sequence the request before left, with the answers an engine
 * without the cache gives; rows of one picture running together copy its
 * positions from one another; a different picture gains nothing; newcomers
 * take the sequence kept longest ago; a follow-up is admitted ahead of the
 * queue; a context made again forgets what was kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sluice/sluice.h"
#include "test_chat.h"
#include "test_util.h"

static tu_tiny tiny;
static sl_image *img_a, *img_b, *img_c;

static int setup(void **state)
{
    (void)state;
    tiny = tu_tiny_files();
    sl_log_set_level(SL_LOG_ERROR);
    img_a = tc_gradient(96, 64, 0);
    img_b = tc_gradient(64, 80, 1);
    img_c = tc_gradient(80, 80, 1);
    return img_a && img_b && img_c ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    sl_image_free(img_a);
    sl_image_free(img_b);
    sl_image_free(img_c);
    return 0;
}

static sl_engine *open_engine(int n_parallel, sl_prefix_cache cache, int encode_ahead)
{
    sl_llama_params p = tu_tiny_llama(&tiny, n_parallel);
    p.prefix_cache = cache;
    p.encode_ahead = encode_ahead;
    return tu_open_llama(&p);
}

static sl_request ask(const char *id, const sl_image *im, const char *prompt, int max_tokens)
{
    sl_request r = {.id = id, .prompt = prompt, .image = im, .sampling = sl_sampling_default()};
    r.sampling.max_tokens = max_tokens;
    return r;
}

static sl_result answer(sl_engine *e, const sl_request *q)
{
    sl_result r;
    assert_int_equal(sl_engine_generate(e, q, &r), SL_OK);
    return r;
}

static uint64_t encoded(sl_engine *e)
{
    sl_engine_stats st;
    sl_engine_stats_get(e, &st);
    return st.images_encoded;
}

/* Turn 2 of a conversation about img_a, after the model's own turn 1. */
static sl_result second_turn(sl_engine *e, const char *first_answer)
{
    sl_content_part q1[] = {{NULL}, {"Describe this image in one sentence."}};
    sl_content_part a1[] = {{first_answer}};
    sl_content_part q2[] = {{"What colour is it?"}};
    sl_message msgs[] = {{"user", q1, 2}, {"assistant", a1, 1}, {"user", q2, 1}};
    const sl_image *images[] = {img_a};
    sl_request q = {.id = "turn2", .messages = msgs, .n_messages = 3, .images = images,
                    .n_images = 1, .sampling = sl_sampling_default(), .follows = true};
    q.sampling.max_tokens = 12;
    return answer(e, &q);
}

/* The next turn goes on in the sequence of the turn before: its prompt and
 * the answer's tokens are not computed again, the image not encoded again,
 * and the answer is the one computed whole. */
static void a_conversation_goes_on_in_its_kept_sequence(void **state)
{
    (void)state;
    sl_engine *on = open_engine(1, SL_PREFIX_CACHE_ON, 0);
    sl_engine *off = open_engine(1, SL_PREFIX_CACHE_OFF, 0);
    sl_content_part q1[] = {{NULL}, {"Describe this image in one sentence."}};
    sl_message m1 = {"user", q1, 2};
    const sl_image *images[] = {img_a};
    sl_request t1 = {.id = "turn1", .messages = &m1, .n_messages = 1, .images = images,
                     .n_images = 1, .sampling = sl_sampling_default()};
    t1.sampling.max_tokens = 12;
    sl_result r1 = answer(on, &t1), w1 = answer(off, &t1);
    assert_string_equal(r1.text, w1.text);
    assert_int_equal(w1.cached_tokens, 0);

    uint64_t before = encoded(on);
    sl_result r2 = second_turn(on, r1.text), w2 = second_turn(off, w1.text);
    assert_string_equal(r2.text, w2.text);
    assert_int_equal(r2.prompt_tokens, w2.prompt_tokens);
    assert_int_equal(w2.cached_tokens, 0);
    /* The first turn's whole prompt at least (and its answer's tokens
     * where they read back the same), never all of the second's. */
    assert_true(r2.cached_tokens >= r1.prompt_tokens);
    assert_true(r2.cached_tokens < r2.prompt_tokens);
    assert_int_equal(encoded(on), before);
    sl_engine_stats st;
    sl_engine_stats_get(on, &st);
    assert_true(st.prefix_hits >= 1);
    assert_true(st.prefix_cached_tokens >= (uint64_t)r2.cached_tokens);
    sl_result_clear(&r1);
    sl_result_clear(&w1);
    sl_result_clear(&r2);
    sl_result_clear(&w2);
    sl_engine_free(on);
    sl_engine_free(off);
}

/* Another question about the same picture takes the image's positions from
 * the sequence kept; another picture takes nothing from it (what the
 * shared prompt head gives, as on a fresh engine). */
static void the_same_picture_is_not_computed_again_another_is(void **state)
{
    (void)state;
    sl_engine *on = open_engine(1, SL_PREFIX_CACHE_ON, 0);
    sl_engine *off = open_engine(1, SL_PREFIX_CACHE_OFF, 0);
    sl_engine *fresh = open_engine(1, SL_PREFIX_CACHE_ON, 0);
    sl_request a = ask("a", img_a, "Describe this image in one sentence.", 10);
    sl_request b = ask("b", img_a, "What colour is it?", 10);
    sl_request v = ask("v", img_b, "Describe this image in one sentence.", 10);
    sl_result ra = answer(on, &a);
    uint64_t before = encoded(on);
    sl_result rb = answer(on, &b), wb = answer(off, &b);
    assert_string_equal(rb.text, wb.text);
    assert_int_equal(encoded(on), before); /* the image's positions were kept */
    assert_true(rb.cached_tokens > rb.prompt_tokens / 2);
    assert_true(rb.cached_tokens < rb.prompt_tokens);

    sl_result rv = answer(on, &v), wv = answer(off, &v), fv = answer(fresh, &v);
    assert_string_equal(rv.text, wv.text);
    assert_true(encoded(on) > before);
    assert_int_equal(rv.cached_tokens, fv.cached_tokens);

    /* The same request again: all but its last token. */
    sl_result again = answer(on, &v);
    assert_string_equal(again.text, rv.text);
    assert_int_equal(again.cached_tokens, again.prompt_tokens - 1);
    sl_result_clear(&ra);
    sl_result_clear(&rb);
    sl_result_clear(&wb);
    sl_result_clear(&rv);
    sl_result_clear(&wv);
    sl_result_clear(&fv);
    sl_result_clear(&again);
    sl_engine_free(on);
    sl_engine_free(off);
    sl_engine_free(fresh);
}

/* Runs reqs together on e; their results in order, and the images e encoded. */
static uint64_t run_together(sl_engine *e, const sl_request *reqs, int n, sl_result *out)
{
    uint64_t before = encoded(e);
    for (int i = 0; i < n; i++)
        assert_int_equal(sl_engine_submit(e, &reqs[i], (void *)&reqs[i]), SL_OK);
    for (int got = 0; got < n;) {
        sl_completion c;
        size_t k = 0;
        assert_int_equal(sl_engine_poll(e, &c, 1, 1000, &k), SL_OK);
        if (!k)
            continue;
        assert_int_equal(c.status, SL_OK);
        out[(const sl_request *)c.tag - reqs] = c.result;
        c.result = (sl_result){0};
        sl_completion_clear(&c);
        got++;
    }
    return encoded(e) - before;
}

/* Rows of one picture running together (a VQA file's questions of an
 * image): one computes the image's positions, the others copy them from
 * its sequence (not encoded, not prefilled); the answers are those
 * computed alone; another picture among them computes its own. */
static void rows_of_one_picture_running_together_share_it(void **state)
{
    (void)state;
    sl_request reqs[] = {ask("q0", img_a, "Describe this image in one sentence.", 8),
                         ask("q1", img_a, "What colour is it?", 8),
                         ask("other", img_b, "What colour is it?", 8),
                         ask("q2", img_a, "Is it day or night?", 8)};
    sl_result on[4], off[4];
    sl_engine *e_on = open_engine(4, SL_PREFIX_CACHE_ON, 0);
    sl_engine *e_off = open_engine(4, SL_PREFIX_CACHE_OFF, 0);
    uint64_t enc_on = run_together(e_on, reqs, 4, on);
    uint64_t enc_off = run_together(e_off, reqs, 4, off);
    int shared = 0;
    for (int i = 0; i < 4; i++) {
        assert_string_equal(on[i].text, off[i].text);
        assert_int_equal(on[i].prompt_tokens, off[i].prompt_tokens);
        assert_int_equal(off[i].cached_tokens, 0);
        shared += on[i].cached_tokens > on[i].prompt_tokens / 2;
    }
    assert_int_equal(shared, 2); /* two of img_a's three rows */
    assert_true(on[2].cached_tokens <= on[2].prompt_tokens / 2);
    assert_true(enc_off > 0 && enc_off % 4 == 0);
    assert_int_equal(enc_on, enc_off / 2); /* img_a once, img_b once */
    for (int i = 0; i < 4; i++) {
        sl_result_clear(&on[i]);
        sl_result_clear(&off[i]);
    }
    sl_engine_free(e_on);
    sl_engine_free(e_off);
}

/* A newcomer like no kept sequence takes a sequence that keeps nothing,
 * then the one kept longest ago; one like a kept sequence finds it. */
static void newcomers_take_the_sequence_kept_longest_ago(void **state)
{
    (void)state;
    sl_request a = ask("a", img_a, "Describe this image in one sentence.", 6);
    sl_request b = ask("b", img_a, "What colour is it?", 6);
    sl_request v = ask("v", img_b, "Describe this image in one sentence.", 6);
    sl_request w = ask("w", img_c, "Describe this image in one sentence.", 6);
    for (int third = 0; third <= 1; third++) {
        sl_engine *e = open_engine(2, SL_PREFIX_CACHE_ON, 0);
        sl_result ra = answer(e, &a), rv = answer(e, &v); /* v: the sequence a did not use */
        sl_result rw = {0};
        if (third)
            rw = answer(e, &w); /* both keep something: w takes a's, the older */
        sl_result rb = answer(e, &b);
        if (third)
            assert_true(rb.cached_tokens <= rv.cached_tokens); /* the head alone */
        else
            assert_true(rb.cached_tokens > rb.prompt_tokens / 2);
        sl_result_clear(&ra);
        sl_result_clear(&rv);
        sl_result_clear(&rw);
        sl_result_clear(&rb);
        sl_engine_free(e);
    }
}

/* A follow-up (sl_request.follows) is admitted ahead of the requests
 * queued before it that no one has begun preparing. */
static void a_follow_up_goes_ahead_of_the_queue(void **state)
{
    (void)state;
    for (int ahead = 0; ahead <= 1; ahead++) {
        sl_engine *e = open_engine(1, SL_PREFIX_CACHE_ON, ahead);
        static const char *const ids[] = {"x0", "x1", "x2", "x3", "x4"};
        for (int i = 0; i < 5; i++) {
            sl_request x = ask(ids[i], i % 2 ? img_b : img_c, "Describe this image.", 24);
            assert_int_equal(sl_engine_submit(e, &x, (void *)ids[i]), SL_OK);
        }
        sl_request f = ask("f", img_a, "What colour is it?", 4);
        f.follows = true;
        assert_int_equal(sl_engine_submit(e, &f, (void *)"f"), SL_OK);
        int at = -1;
        for (int got = 0; got < 6;) {
            sl_completion c;
            size_t n = 0;
            assert_int_equal(sl_engine_poll(e, &c, 1, 1000, &n), SL_OK);
            if (!n)
                continue;
            assert_int_equal(c.status, SL_OK);
            if (strcmp(c.tag, "f") == 0)
                at = got;
            got++;
            sl_completion_clear(&c);
        }
        /* Behind the one running and at most the one prepared ahead. */
        assert_true(at >= 0 && at <= 1 + ahead);
        sl_engine_free(e);
    }
}

/* A request that needs a longer context makes the context again: the kept
 * sequences are gone with the old one, and the next request is computed
 * whole (with the same answer). */
static void a_context_made_again_forgets_what_was_kept(void **state)
{
    (void)state;
    sl_llama_params p = tu_tiny_llama(&tiny, 1);
    p.max_tokens_hint = 16;
    sl_engine *e = tu_open_llama(&p);
    sl_request a = ask("a", img_a, "Describe this image in one sentence.", 8);
    sl_result first = answer(e, &a);
    sl_request grow = ask("grow", img_b, "Describe this image in one sentence.", 1500);
    sl_result rg = answer(e, &grow);
    uint64_t before = encoded(e);
    sl_result again = answer(e, &a);
    assert_string_equal(again.text, first.text);
    assert_true(encoded(e) > before); /* its image computed again */
    assert_true(again.cached_tokens < again.prompt_tokens / 2);
    sl_result_clear(&first);
    sl_result_clear(&rg);
    sl_result_clear(&again);
    sl_engine_free(e);
}

int main(void)
{
    if (getenv("SLUICE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLUICE_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_conversation_goes_on_in_its_kept_sequence),
        cmocka_unit_test(the_same_picture_is_not_computed_again_another_is),
        cmocka_unit_test(rows_of_one_picture_running_together_share_it),
        cmocka_unit_test(newcomers_take_the_sequence_kept_longest_ago),
        cmocka_unit_test(a_follow_up_goes_ahead_of_the_queue),
        cmocka_unit_test(a_context_made_again_forgets_what_was_kept),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
