/* Unit tests: the llama engine's LoRA adapters (sl_llama_params.lora) and
 * KV cache types (cache_type_k/v), on the generated tiny model (models/tiny,
 * random weights) and adapters written for it by tools/gen_model.py
 * --lora-out into a temporary folder: an adapter whose lora_b is all zeros
 * answers exactly as the base model, a random one changes every answer and
 * at scale 0 does not, the adapter is still applied once the context has
 * been made again for a longer request, adapters that cannot load fail at
 * open naming the file and llama.cpp's cause; every cache type answers, its
 * KV memory is what llama.cpp allocates, and --parallel auto's arithmetic
 * holds more sequences in a quantized cache. */
#include <math.h>
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
static char dir[256];
static char zero_path[1100], random_path[1100], other_path[1100], text_path[1100];
static sl_image *imgs[3];

/* tools/gen_model.py --lora-out FILE for `shape`, `init` random or zero. */
static int gen_adapter(const char *shape, const char *init, char *path, size_t size)
{
    const char *py = getenv("SLUICE_PYTHON"), *gen = getenv("SLUICE_GEN_MODEL");
    snprintf(path, size, "%s/%s-%s.gguf", dir, shape, init);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' '%s' --shape %s --lora-init %s --lora-out '%s' >/dev/null",
             py ? py : ".venv/bin/python", gen ? gen : "tools/gen_model.py", shape, init, path);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    tiny = tu_tiny_files();
    sl_log_set_level(SL_LOG_ERROR);
    const char *tmp = tu_tmpdir();
    if (!tmp)
        return -1;
    snprintf(dir, sizeof dir, "%s", tmp);
    snprintf(text_path, sizeof text_path, "%s/notes.gguf", dir);
    FILE *fp = fopen(text_path, "w");
    if (!fp)
        return -1;
    fputs("not a GGUF file\n", fp);
    fclose(fp);
    imgs[0] = tc_gradient(96, 64, 0);
    imgs[1] = tc_gradient(64, 80, 1);
    imgs[2] = tc_gradient(384, 384, 0);
    if (!imgs[0] || !imgs[1] || !imgs[2])
        return -1;
    /* The smolvlm-256m shape is a llama of other widths: an adapter made
     * for another model of the same architecture. */
    return gen_adapter("tiny", "zero", zero_path, sizeof zero_path) ||
                   gen_adapter("tiny", "random", random_path, sizeof random_path) ||
                   gen_adapter("smolvlm-256m", "random", other_path, sizeof other_path)
               ? -1
               : 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        sl_image_free(imgs[i]);
    tu_rmtree(dir);
    return 0;
}

static sl_llama_params params(int n_parallel, int n_ctx_per_seq)
{
    sl_llama_params p = tu_tiny_llama(&tiny, n_parallel);
    p.n_ctx_per_seq = n_ctx_per_seq;
    p.encode_ahead = 0;
    return p;
}

/* The engine with one adapter (path NULL: none) at `scale`. */
static sl_engine *open_adapted(const char *path, float scale, int n_parallel, int n_ctx_per_seq)
{
    sl_llama_params p = params(n_parallel, n_ctx_per_seq);
    sl_llama_lora lora = {path, scale};
    p.lora = path ? &lora : NULL;
    p.n_lora = path ? 1 : 0;
    return tu_open_llama(&p);
}

enum { N_IMAGES = 3 };

/* The greedy answers of `e` about the test's three images, one at a time. */
static void answers(sl_engine *e, char *out[N_IMAGES])
{
    for (int i = 0; i < N_IMAGES; i++) {
        sl_request q = {.id = "row", .prompt = "Describe this image.", .image = imgs[i],
                        .sampling = sl_sampling_default()};
        q.sampling.max_tokens = 16;
        sl_result r;
        if (sl_engine_generate(e, &q, &r) != SL_OK)
            fail_msg("%s", sl_last_error());
        assert_true(r.generated_tokens > 0);
        out[i] = strdup(r.text);
        sl_result_clear(&r);
    }
}

static void free_answers(char *a[N_IMAGES])
{
    for (int i = 0; i < N_IMAGES; i++)
        free(a[i]);
}

/* lora_b all zeros: the adapter adds exactly 0.0 to every adapted matrix,
 * so the greedy answers are the base model's, bit for bit. The caller's
 * path and array are not kept past open (overwritten, then used). */
static void a_zero_adapter_answers_as_the_base_model(void **state)
{
    (void)state;
    char *base[N_IMAGES], *got[N_IMAGES];
    sl_engine *e = open_adapted(NULL, 1.0f, 2, 0);
    answers(e, base);
    sl_engine_free(e);

    char path[sizeof zero_path];
    snprintf(path, sizeof path, "%s", zero_path);
    sl_llama_params p = params(2, 0);
    sl_llama_lora lora = {path, 1.0f};
    p.lora = &lora;
    p.n_lora = 1;
    e = tu_open_llama(&p);
    memset(path, 'x', sizeof path - 1);
    lora = (sl_llama_lora){NULL, NAN};
    answers(e, got);
    for (int i = 0; i < N_IMAGES; i++)
        assert_string_equal(got[i], base[i]);
    sl_engine_free(e);
    free_answers(got);
    free_answers(base);
}

/* A random adapter at scale 1 changes every answer; the same adapter at
 * scale 0 (loaded, not applied) gives the base model's answers. */
static void a_random_adapter_changes_the_answers_unless_at_scale_0(void **state)
{
    (void)state;
    char *base[N_IMAGES], *on[N_IMAGES], *off[N_IMAGES];
    sl_engine *e = open_adapted(NULL, 1.0f, 2, 0);
    answers(e, base);
    sl_engine_free(e);
    e = open_adapted(random_path, 1.0f, 2, 0);
    answers(e, on);
    sl_engine_free(e);
    e = open_adapted(random_path, 0.0f, 2, 0);
    answers(e, off);
    sl_engine_free(e);
    for (int i = 0; i < N_IMAGES; i++) {
        if (strcmp(on[i], base[i]) == 0)
            fail_msg("image %d: the adapter changed nothing: '%s'", i, on[i]);
        assert_string_equal(off[i], base[i]);
    }
    free_answers(base);
    free_answers(on);
    free_answers(off);
}

/* One user message with 16 images (the large one among them): more
 * positions than a sequence sized for one image has. */
static sl_result sixteen_images(sl_engine *e)
{
    sl_content_part parts[SL_MAX_IMAGES + 1];
    const sl_image *images[SL_MAX_IMAGES];
    for (int i = 0; i < SL_MAX_IMAGES; i++) {
        parts[i] = (sl_content_part){NULL};
        images[i] = imgs[(i + 2) % 3];
    }
    parts[SL_MAX_IMAGES] = (sl_content_part){"Which is the brightest?"};
    sl_message msg = {"user", parts, SL_MAX_IMAGES + 1};
    sl_request q = {.id = "many", .messages = &msg, .n_messages = 1, .images = images,
                    .n_images = SL_MAX_IMAGES, .sampling = sl_sampling_default()};
    q.sampling.max_tokens = 12;
    sl_result r;
    if (sl_engine_generate(e, &q, &r) != SL_OK)
        fail_msg("%s", sl_last_error());
    return r;
}

/* The engine makes its context again for a request longer than its
 * sequences: the adapter belongs to the context, so it must be set on the
 * new one. The answer after the growth is the adapted model's (as on an
 * engine given the room from the start), not the base model's. */
static void the_adapter_survives_the_context_made_again(void **state)
{
    (void)state;
    sl_engine *e = open_adapted(random_path, 1.0f, 2, 0);
    sl_engine_stats st;
    sl_engine_stats_get(e, &st);
    uint64_t cells = st.kv_cells_total;
    sl_result grown = sixteen_images(e);
    sl_engine_stats_get(e, &st);
    assert_true(st.kv_cells_total > cells); /* the context was made again */
    sl_engine_free(e);

    e = open_adapted(random_path, 1.0f, 2, 1024);
    sl_result roomy = sixteen_images(e);
    sl_engine_free(e);
    e = open_adapted(NULL, 1.0f, 2, 1024);
    sl_result base = sixteen_images(e);
    sl_engine_free(e);

    assert_string_equal(grown.text, roomy.text);
    assert_int_equal(grown.generated_tokens, roomy.generated_tokens);
    if (strcmp(grown.text, base.text) == 0)
        fail_msg("after the growth the answer is the base model's: '%s'", base.text);
    sl_result_clear(&grown);
    sl_result_clear(&roomy);
    sl_result_clear(&base);
}

/* Opening with an adapter that cannot be used fails, naming the file and
 * the cause llama.cpp found; bad parameters are refused before loading. */
static void adapters_that_cannot_load_fail_at_open_saying_why(void **state)
{
    (void)state;
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/missing.gguf", dir);
    const struct {
        const char *path;
        sl_status status;
        const char *cause;
    } cases[] = {
        {missing, SL_ERR_NOT_FOUND, "No such file or directory"},
        {tiny.model, SL_ERR_MODEL, "expect general.type to be 'adapter', but got: model"},
        {text_path, SL_ERR_MODEL, "invalid magic characters"},
        {other_path, SL_ERR_MODEL, "has incorrect shape (hint: maybe wrong base model?)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sl_llama_params p = params(2, 0);
        /* A good one first: its loaded adapter is freed with the engine. */
        sl_llama_lora lora[2] = {{zero_path, 1.0f}, {cases[i].path, 1.0f}};
        p.lora = lora;
        p.n_lora = 2;
        sl_engine *e = NULL;
        assert_int_equal(sl_engine_open_llama(&p, &e), cases[i].status);
        assert_null(e);
        char want[1200];
        snprintf(want, sizeof want, "--lora '%s'", cases[i].path);
        if (!strstr(sl_last_error(), want) || !strstr(sl_last_error(), cases[i].cause))
            fail_msg("case %zu: %s", i, sl_last_error());
    }

    sl_llama_params p = params(2, 0);
    sl_llama_lora lora[SL_LLAMA_MAX_LORA + 1];
    for (int i = 0; i <= SL_LLAMA_MAX_LORA; i++)
        lora[i] = (sl_llama_lora){zero_path, 1.0f};
    p.lora = lora;
    p.n_lora = SL_LLAMA_MAX_LORA + 1;
    sl_engine *e = NULL;
    assert_int_equal(sl_engine_open_llama(&p, &e), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "from 0 to 8 adapters, got 9"));
    lora[0].scale = INFINITY;
    p.n_lora = 1;
    assert_int_equal(sl_engine_open_llama(&p, &e), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "the scale must be a finite number"));
}

/* What the engine's log says, while capturing. */
static char logged[16384];

static void keep_line(sl_log_level level, const char *message, void *user)
{
    (void)level;
    (void)user;
    size_t used = strlen(logged);
    snprintf(logged + used, sizeof logged - used, "%s\n", message);
}

/* The number before " MiB" after `after` in the captured log; -1: none. */
static double mib_after(const char *after)
{
    const char *at = strstr(logged, after);
    double v = -1;
    if (!at || sscanf(at + strlen(after), " %lf MiB", &v) != 1)
        return -1;
    return v;
}

/* Every cache type llama.cpp takes answers on the tiny model, and the KV
 * memory is what the format says: a row of head_dim x n_head_kv values (32
 * x 2 for the tiny model: gen_model.py's shape) for K and for V of each of
 * its 4 layers, in blocks of 32 values of 34 bytes for q8_0 (ggml's
 * block_q8_0: an f16 scale and 32 int8), 2 bytes a value for f16. That is
 * what the engine reports, and what llama.cpp's own log says it allocated
 * (llama_kv_cache: size = ...). */
static void every_cache_type_answers_in_the_memory_it_takes(void **state)
{
    (void)state;
    const uint64_t f16_bytes = 4 * 2 * (64 * 2), q8_bytes = 4 * 2 * (64 / 32 * 34);
    double f16_mib = 0, q8_mib = 0;
    for (int t = 0; t < SL_KV_TYPE_COUNT; t++) {
        sl_llama_params p = params(2, 512);
        p.cache_type_k = p.cache_type_v = (sl_kv_type)t;
        uint64_t per_pos = 0;
        assert_int_equal(sl_llama_kv_bytes_per_position(&p, &per_pos), SL_OK);
        if (t == SL_KV_F16)
            assert_int_equal(per_pos, f16_bytes);
        if (t == SL_KV_Q8_0)
            assert_int_equal(per_pos, q8_bytes);

        logged[0] = '\0';
        sl_log_set_level(SL_LOG_INFO);
        sl_log_set_callback(keep_line, NULL);
        sl_engine *e = tu_open_llama(&p);
        sl_log_set_callback(NULL, NULL);
        sl_log_set_level(SL_LOG_ERROR);
        double theirs = mib_after("llama_kv_cache: size =");
        char key[64];
        snprintf(key, sizeof key, "K %s, V %s:", sl_kv_type_name(t), sl_kv_type_name(t));
        double ours = mib_after(key);
        if (theirs < 0 || ours < 0)
            fail_msg("%s: no KV cache size in the log:\n%s", sl_kv_type_name(t), logged);
        /* 3 sequences x 512 positions */
        assert_true(fabs(ours - per_pos * 1536.0 / 1048576.0) < 0.006);
        assert_true(fabs(ours - theirs) < 0.006);
        if (t == SL_KV_F16)
            f16_mib = theirs;
        if (t == SL_KV_Q8_0)
            q8_mib = theirs;

        char *got[N_IMAGES];
        answers(e, got);
        free_answers(got);
        sl_engine_free(e);
    }
    assert_true(q8_mib > 0 && q8_mib < 0.6 * f16_mib);

    sl_llama_params p = params(2, 0);
    p.cache_type_v = SL_KV_TYPE_COUNT;
    sl_engine *e = NULL;
    assert_int_equal(sl_engine_open_llama(&p, &e), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "f16, f32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 and "
                                            "iq4_nl"));
    assert_null(sl_kv_type_name(SL_KV_TYPE_COUNT));
}

/* --parallel auto on a GPU divides three quarters of the free memory by
 * a sequence's KV bytes: in the same 16 MiB a q8_0 cache holds 64/34 as
 * many sequences of 512 positions as f16 (24 of 1024 x 512 bytes; 45 of
 * 544 x 512), and the count stops at 128. Checked on the CPU through the
 * same arithmetic the engine runs at open on a GPU. */
static void a_quantized_cache_holds_more_sequences(void **state)
{
    (void)state;
    sl_llama_params p = params(0, 0);
    int f16 = 0, q8 = 0, big = 0;
    assert_int_equal(sl_llama_parallel_for_memory(&p, 16u << 20, 512, &f16), SL_OK);
    p.cache_type_k = p.cache_type_v = SL_KV_Q8_0;
    assert_int_equal(sl_llama_parallel_for_memory(&p, 16u << 20, 512, &q8), SL_OK);
    assert_int_equal(f16, (16 << 20) / 4 * 3 / (1024 * 512));
    assert_int_equal(q8, (16 << 20) / 4 * 3 / (544 * 512));
    assert_true(q8 > f16);
    assert_int_equal(sl_llama_parallel_for_memory(&p, 1ull << 40, 512, &big), SL_OK);
    assert_int_equal(big, 128);
    p.model_path = dir; /* a folder: not a model */
    assert_int_not_equal(sl_llama_parallel_for_memory(&p, 16u << 20, 512, &big), SL_OK);
}

int main(void)
{
    if (getenv("SLUICE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLUICE_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_zero_adapter_answers_as_the_base_model),
        cmocka_unit_test(a_random_adapter_changes_the_answers_unless_at_scale_0),
        cmocka_unit_test(the_adapter_survives_the_context_made_again),
        cmocka_unit_test(adapters_that_cannot_load_fail_at_open_saying_why),
        cmocka_unit_test(every_cache_type_answers_in_the_memory_it_takes),
        cmocka_unit_test(a_quantized_cache_holds_more_sequences),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
