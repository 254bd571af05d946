/* Unit tests: llm/engines/llama_choice.c — choices scored whole: which
 * prefixes are probed, and the scores from made-up logits, against the
 * probabilities worked out here from the softmax by hand. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "core/error.h"
#include "llm/engines/llama_choice.h"

#define VOCAB 16
#define FORMS 4

/* Logits whose softmax is p (p sums to at most 1; the rest is spread over
 * the tokens not named). */
static void logits_of(float *logits, const int *toks, const double *p, int n)
{
    double named = 0;
    for (int i = 0; i < n; i++)
        named += p[i];
    double rest = (1 - named) / (VOCAB - n);
    for (int v = 0; v < VOCAB; v++)
        logits[v] = (float)log(rest);
    for (int i = 0; i < n; i++)
        logits[toks[i]] = (float)log(p[i]);
}

static sl_choice_tree *tree_of(int n_choices, const int32_t *const *forms, const int *lens)
{
    sl_choice_tree *t = sl_choice_tree_new(n_choices, FORMS);
    assert_non_null(t);
    for (int k = 0; k < n_choices * FORMS; k++)
        if (lens[k] > 0)
            sl_choice_tree_set(t, k / FORMS, k % FORMS, forms[k], lens[k]);
    return t;
}

static const char *const names[] = {"a", "b", "c", "d"};

/* Forms that all begin differently: no probe; the first tokens' shares,
 * a choice's forms together. */
static void first_tokens_alone_decide(void **state)
{
    (void)state;
    const int32_t yes[] = {1}, yes2[] = {2}, no[] = {3};
    const int32_t *forms[2 * FORMS] = {yes, yes2, NULL, NULL, no};
    int lens[2 * FORMS] = {1, 1, 0, 0, 1};
    sl_choice_tree *t = tree_of(2, forms, lens);
    assert_int_equal(sl_choice_tree_plan(t, "row", names), SL_OK);
    assert_int_equal(sl_choice_tree_probes(t), 0);
    assert_int_equal(sl_choice_tree_room(t), 1);
    float logits[VOCAB];
    logits_of(logits, (int[]){1, 2, 3}, (double[]){0.2, 0.1, 0.3}, 3);
    sl_choice_tree_read_root(t, logits);
    double p[2];
    sl_choice_tree_scores(t, p);
    assert_float_equal(p[0], 0.3 / 0.6, 1e-6);
    assert_float_equal(p[1], 0.3 / 0.6, 1e-6);
    sl_choice_tree_free(t);
}

/* "the cat", "the dog", "a bird": one probe of "the", read after it. */
static void choices_that_begin_alike_are_read_where_they_part(void **state)
{
    (void)state;
    const int32_t cat[] = {5, 7}, dog[] = {5, 8}, bird[] = {9, 10};
    const int32_t *forms[3 * FORMS] = {cat, NULL, NULL, NULL, dog, NULL, NULL, NULL, bird};
    int lens[3 * FORMS] = {2, 0, 0, 0, 2, 0, 0, 0, 2};
    sl_choice_tree *t = tree_of(3, forms, lens);
    assert_int_equal(sl_choice_tree_plan(t, "row", names), SL_OK);
    assert_int_equal(sl_choice_tree_probes(t), 1);
    const int32_t *toks;
    uint32_t reads;
    assert_int_equal(sl_choice_tree_probe(t, 0, &toks, &reads), 1);
    assert_int_equal(toks[0], 5);
    assert_int_equal(reads, 1u);
    assert_int_equal(sl_choice_tree_room(t), 1);
    float root[VOCAB], after_the[VOCAB];
    logits_of(root, (int[]){5, 9}, (double[]){0.6, 0.2}, 2);
    logits_of(after_the, (int[]){7, 8}, (double[]){0.3, 0.1}, 2);
    sl_choice_tree_read_root(t, root);
    assert_true(sl_choice_tree_probe_needed(t, 0));
    sl_choice_tree_read(t, 0, 0, after_the, VOCAB);
    double p[3];
    sl_choice_tree_scores(t, p);
    /* "the" takes 0.6 / 0.8 of the answers; cat 3/4 of those. */
    assert_float_equal(p[0], 0.75 * 0.75, 1e-6);
    assert_float_equal(p[1], 0.75 * 0.25, 1e-6);
    assert_float_equal(p[2], 0.25, 1e-6);
    sl_choice_tree_free(t);

    /* "the" all but never begins the answer: its probe is not needed, and
     * its sliver is split evenly without it. */
    t = tree_of(3, forms, lens);
    assert_int_equal(sl_choice_tree_plan(t, "row", names), SL_OK);
    logits_of(root, (int[]){5, 9}, (double[]){1e-9, 0.5}, 2);
    sl_choice_tree_read_root(t, root);
    assert_false(sl_choice_tree_probe_needed(t, 0));
    sl_choice_tree_scores(t, p);
    double sliver = 1e-9 / (1e-9 + 0.5);
    assert_float_equal(p[0], sliver / 2, 1e-15);
    assert_float_equal(p[1], sliver / 2, 1e-15);
    assert_float_equal(p[2], 1 - sliver, 1e-12);
    sl_choice_tree_free(t);
}

/* "1", "10", "100": a form that ends where others go on takes the rest. */
static void a_choice_inside_another_takes_the_rest(void **state)
{
    (void)state;
    const int32_t one[] = {1}, ten[] = {1, 0}, hundred[] = {1, 0, 0}, two[] = {2};
    const int32_t *forms[4 * FORMS] = {one, NULL, NULL, NULL, ten, NULL, NULL, NULL,
                                       hundred, NULL, NULL, NULL, two};
    int lens[4 * FORMS] = {1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1};
    sl_choice_tree *t = tree_of(4, forms, lens);
    assert_int_equal(sl_choice_tree_plan(t, "row", names), SL_OK);
    /* One probe, "1 0", read after each of its tokens. */
    assert_int_equal(sl_choice_tree_probes(t), 1);
    const int32_t *toks;
    uint32_t reads;
    assert_int_equal(sl_choice_tree_probe(t, 0, &toks, &reads), 2);
    assert_int_equal(toks[0], 1);
    assert_int_equal(toks[1], 0);
    assert_int_equal(reads, 3u);
    assert_int_equal(sl_choice_tree_room(t), 2);
    float root[VOCAB], after1[VOCAB], after10[VOCAB];
    logits_of(root, (int[]){1, 2}, (double[]){0.4, 0.4}, 2);
    logits_of(after1, (int[]){0}, (double[]){0.3}, 1);
    logits_of(after10, (int[]){0}, (double[]){0.9}, 1);
    sl_choice_tree_read_root(t, root);
    sl_choice_tree_read(t, 0, 0, after1, VOCAB);
    sl_choice_tree_read(t, 0, 1, after10, VOCAB);
    double p[4];
    sl_choice_tree_scores(t, p);
    assert_float_equal(p[0], 0.5 * 0.7, 1e-6);
    assert_float_equal(p[1], 0.5 * 0.3 * 0.1, 1e-6);
    assert_float_equal(p[2], 0.5 * 0.3 * 0.9, 1e-6);
    assert_float_equal(p[3], 0.5, 1e-6);
    double sum = p[0] + p[1] + p[2] + p[3];
    assert_float_equal(sum, 1.0, 1e-9);
    sl_choice_tree_free(t);
}

/* Two subtrees that part at different depths: a probe for each, and a
 * choice whose own forms part needs no reading there. */
static void each_parting_is_probed_once(void **state)
{
    (void)state;
    /* a: "x p q", b: "x p r", c: "y s", d: "y t"; a's variant "x u" and
     * "x p q" both a's below "x": no parting of a's own is read. */
    const int32_t a[] = {11, 12, 13}, a2[] = {11, 14}, b[] = {11, 12, 15}, c[] = {6, 4},
                  d[] = {6, 3};
    const int32_t *forms[4 * FORMS] = {a, a2, NULL, NULL, b, NULL, NULL, NULL,
                                       c, NULL, NULL, NULL, d};
    int lens[4 * FORMS] = {3, 2, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
    sl_choice_tree *t = tree_of(4, forms, lens);
    assert_int_equal(sl_choice_tree_plan(t, "row", names), SL_OK);
    assert_int_equal(sl_choice_tree_probes(t), 2);
    int seen = 0;
    for (int k = 0; k < 2; k++) {
        const int32_t *toks;
        uint32_t reads;
        int n = sl_choice_tree_probe(t, k, &toks, &reads);
        if (toks[0] == 11) { /* "x p": read after x (a/b vs a's "x u") and after p */
            assert_int_equal(n, 2);
            assert_int_equal(toks[1], 12);
            assert_int_equal(reads, 3u);
            seen |= 1;
        } else {
            assert_int_equal(toks[0], 6);
            assert_int_equal(n, 1);
            assert_int_equal(reads, 1u);
            seen |= 2;
        }
    }
    assert_int_equal(seen, 3);
    float root[VOCAB], after_x[VOCAB], after_xp[VOCAB], after_y[VOCAB];
    logits_of(root, (int[]){11, 6}, (double[]){0.5, 0.5}, 2);
    logits_of(after_x, (int[]){12, 14}, (double[]){0.2, 0.6}, 2);
    logits_of(after_xp, (int[]){13, 15}, (double[]){0.4, 0.4}, 2);
    logits_of(after_y, (int[]){4, 3}, (double[]){0.05, 0.15}, 2);
    sl_choice_tree_read_root(t, root);
    for (int k = 0; k < 2; k++) {
        const int32_t *toks;
        uint32_t reads;
        sl_choice_tree_probe(t, k, &toks, &reads);
        if (toks[0] == 11) {
            sl_choice_tree_read(t, k, 0, after_x, VOCAB);
            sl_choice_tree_read(t, k, 1, after_xp, VOCAB);
        } else {
            sl_choice_tree_read(t, k, 0, after_y, VOCAB);
        }
    }
    double p[4];
    sl_choice_tree_scores(t, p);
    /* Below x: "x u" (a) 0.6 of 0.8, "x p" 0.2 of 0.8 split evenly. */
    assert_float_equal(p[0], 0.5 * (0.75 + 0.25 * 0.5), 1e-6);
    assert_float_equal(p[1], 0.5 * 0.25 * 0.5, 1e-6);
    assert_float_equal(p[2], 0.5 * 0.25, 1e-6);
    assert_float_equal(p[3], 0.5 * 0.75, 1e-6);
    sl_choice_tree_free(t);
}

/* Forms with the same tokens: one choice's count once, a variant like
 * another choice's form counts for neither, two choices as written are
 * refused; so are two alike for SL_CHOICE_DEPTH tokens. */
static void forms_alike_whole_are_settled_or_refused(void **state)
{
    (void)state;
    const int32_t yes[] = {1}, Yes[] = {2}, spaced[] = {3};
    /* yes: "yes", " yes", "Yes"; Yes: "Yes", " Yes"=" yes" */
    const int32_t *forms[2 * FORMS] = {yes, spaced, Yes, NULL, Yes, spaced, yes};
    int lens[2 * FORMS] = {1, 1, 1, 0, 1, 1, 1};
    sl_choice_tree *t = tree_of(2, forms, lens);
    assert_int_equal(sl_choice_tree_plan(t, "row", names), SL_OK);
    assert_int_equal(sl_choice_tree_first(t, 0, 0), 1);
    assert_int_equal(sl_choice_tree_first(t, 0, 1), -1);
    assert_int_equal(sl_choice_tree_first(t, 0, 2), -1);
    assert_int_equal(sl_choice_tree_first(t, 1, 0), 2);
    assert_int_equal(sl_choice_tree_first(t, 1, 1), -1);
    assert_int_equal(sl_choice_tree_first(t, 1, 2), -1);
    assert_int_equal(sl_choice_tree_probes(t), 0);
    sl_choice_tree_free(t);

    const int32_t dup[] = {4, 5};
    const int32_t *same[2 * FORMS] = {dup, dup, NULL, NULL, dup};
    int same_lens[2 * FORMS] = {2, 2, 0, 0, 2};
    t = tree_of(2, same, same_lens);
    assert_int_equal(sl_choice_tree_plan(t, "row 7", names), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "row 7: choices 'a' and 'b' are the same tokens"));
    sl_choice_tree_free(t);

    int32_t long_a[SL_CHOICE_DEPTH + 2], long_b[SL_CHOICE_DEPTH + 2];
    for (int i = 0; i < SL_CHOICE_DEPTH + 2; i++)
        long_a[i] = long_b[i] = i % VOCAB;
    long_b[SL_CHOICE_DEPTH] = 99;
    const int32_t *longs[2 * FORMS] = {long_a, NULL, NULL, NULL, long_b};
    int long_lens[2 * FORMS] = {SL_CHOICE_DEPTH + 2, 0, 0, 0, SL_CHOICE_DEPTH + 2};
    t = tree_of(2, longs, long_lens);
    assert_int_equal(sl_choice_tree_plan(t, "row", names), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "begin with the same 32 tokens"));
    sl_choice_tree_free(t);
    /* Parting at the last token looked at is still told apart. */
    long_b[SL_CHOICE_DEPTH] = long_a[SL_CHOICE_DEPTH];
    long_b[SL_CHOICE_DEPTH - 1] = 99;
    t = tree_of(2, longs, long_lens);
    assert_int_equal(sl_choice_tree_plan(t, "row", names), SL_OK);
    assert_int_equal(sl_choice_tree_room(t), SL_CHOICE_DEPTH - 1);
    sl_choice_tree_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_tokens_alone_decide),
        cmocka_unit_test(choices_that_begin_alike_are_read_where_they_part),
        cmocka_unit_test(a_choice_inside_another_takes_the_rest),
        cmocka_unit_test(each_parting_is_probed_once),
        cmocka_unit_test(forms_alike_whole_are_settled_or_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
