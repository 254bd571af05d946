/* Unit tests: llm/engines/llama.c through the public engine API, on the
 * generated tiny model (models/tiny, random weights). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sluice/sluice.h"
#include "test_util.h"

static char model_path[1024], mmproj_path[1024];
static sl_image *gradient;

static int setup(void **state)
{
    const char *dir = getenv("SLUICE_TINY_MODEL");
    if (!dir)
        dir = "models/tiny";
    snprintf(model_path, sizeof model_path, "%s/model.gguf", dir);
    snprintf(mmproj_path, sizeof mmproj_path, "%s/mmproj.gguf", dir);
    uint8_t px[96 * 64 * 3];
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 96; x++) {
            uint8_t *p = px + (y * 96 + x) * 3;
            p[0] = (uint8_t)(x * 2);
            p[1] = (uint8_t)(y * 4);
            p[2] = (uint8_t)((x + y) & 0xff);
        }
    sl_log_set_level(SL_LOG_ERROR);
    return sl_image_from_rgb(96, 64, px, &gradient) == SL_OK ? 0 : -1;
}

static int teardown(void **state)
{
    sl_image_free(gradient);
    return 0;
}

static sl_engine *open_tiny(int n_ctx)
{
    sl_llama_params p = sl_llama_default_params();
    p.model_path = model_path;
    p.mmproj_path = mmproj_path;
    p.n_ctx = n_ctx;
    p.n_threads = 2;
    sl_engine *e = NULL;
    if (sl_engine_open_llama(&p, &e) != SL_OK)
        fail_msg("cannot open the tiny model: %s", sl_last_error());
    return e;
}

static sl_request request(const char *id, int max_tokens)
{
    sl_request r = {.id = id, .prompt = "Describe this image.", .image = gradient,
                    .sampling = sl_sampling_default()};
    r.sampling.max_tokens = max_tokens;
    return r;
}

static void missing_files_fail_fast_with_the_path(void **state)
{
    sl_llama_params p = sl_llama_default_params();
    p.model_path = "/nonexistent/model.gguf";
    p.mmproj_path = mmproj_path;
    sl_engine *e = (void *)1;
    assert_int_equal(sl_engine_open_llama(&p, &e), SL_ERR_NOT_FOUND);
    assert_null(e);
    assert_non_null(strstr(sl_last_error(), "--model '/nonexistent/model.gguf'"));

    p.model_path = model_path;
    p.mmproj_path = NULL;
    assert_int_equal(sl_engine_open_llama(&p, &e), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--mmproj"));
}

static void a_file_that_is_not_gguf_is_a_model_error(void **state)
{
    char *dir = tu_tmpdir();
    tu_write(dir, "fake.gguf", "definitely not gguf", 19);
    char path[512];
    snprintf(path, sizeof path, "%s/fake.gguf", dir);
    sl_llama_params p = sl_llama_default_params();
    p.model_path = path;
    p.mmproj_path = mmproj_path;
    sl_engine *e = NULL;
    assert_int_equal(sl_engine_open_llama(&p, &e), SL_ERR_MODEL);
    assert_non_null(strstr(sl_last_error(), path));
    tu_rmtree(dir);
}

static void greedy_is_deterministic_and_bounded(void **state)
{
    sl_engine *e = open_tiny(0);
    assert_string_equal(sl_engine_model_name(e), "sluice-tiny-random");
    sl_request req = request("gradient", 24);
    sl_result a, b;
    assert_int_equal(sl_engine_generate(e, &req, &a), SL_OK);
    assert_int_equal(sl_engine_generate(e, &req, &b), SL_OK);
    assert_string_equal(a.text, b.text);
    assert_int_equal(a.generated_tokens, b.generated_tokens);
    assert_true(a.generated_tokens >= 1 && a.generated_tokens <= 24);
    /* The image adds positions beyond the few prompt tokens. */
    assert_true(a.prompt_tokens > 20);
    assert_true(strcmp(a.finish_reason, "stop") == 0 || strcmp(a.finish_reason, "length") == 0);
    if (strcmp(a.finish_reason, "length") == 0)
        assert_int_equal(a.generated_tokens, 24);

    req.sampling.max_tokens = 2;
    sl_result c;
    assert_int_equal(sl_engine_generate(e, &req, &c), SL_OK);
    assert_true(c.generated_tokens <= 2);
    if (c.generated_tokens == 2) {
        assert_string_equal(c.finish_reason, "length");
        /* The first two tokens of a greedy run are a prefix of the longer run. */
        assert_int_equal(strncmp(a.text, c.text, strlen(c.text)), 0);
    }
    sl_result_clear(&a);
    sl_result_clear(&b);
    sl_result_clear(&c);
    sl_engine_free(e);
}

static void seeds_reproduce_when_sampling(void **state)
{
    sl_engine *e = open_tiny(0);
    sl_request req = request("seeded", 32);
    req.sampling.temperature = 1.0f;
    req.sampling.seed = 42;
    sl_result a, b, c;
    assert_int_equal(sl_engine_generate(e, &req, &a), SL_OK);
    assert_int_equal(sl_engine_generate(e, &req, &b), SL_OK);
    req.sampling.seed = 43;
    assert_int_equal(sl_engine_generate(e, &req, &c), SL_OK);
    assert_string_equal(a.text, b.text);
    /* 32 tokens sampled at temperature 1 from a random model: a different
     * seed gives a different text. */
    assert_string_not_equal(a.text, c.text);
    sl_result_clear(&a);
    sl_result_clear(&b);
    sl_result_clear(&c);
    assert_int_not_equal(sl_sampling_row_seed(0, "a.jpg"), sl_sampling_row_seed(0, "b.jpg"));
    assert_int_equal(sl_sampling_row_seed(7, "a.jpg"), sl_sampling_row_seed(7, "a.jpg"));
    sl_engine_free(e);
}

static void too_long_fails_only_that_request(void **state)
{
    sl_engine *e = open_tiny(256);
    sl_request req = request("long-one", 1000);
    sl_result r;
    assert_int_equal(sl_engine_generate(e, &req, &r), SL_ERR_TOO_LONG);
    assert_non_null(strstr(sl_last_error(), "long-one"));
    assert_null(r.text);
    req.sampling.max_tokens = 4; /* the engine is still usable */
    assert_int_equal(sl_engine_generate(e, &req, &r), SL_OK);
    sl_result_clear(&r);
    sl_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(missing_files_fail_fast_with_the_path),
        cmocka_unit_test(a_file_that_is_not_gguf_is_a_model_error),
        cmocka_unit_test(greedy_is_deterministic_and_bounded),
        cmocka_unit_test(seeds_reproduce_when_sampling),
        cmocka_unit_test(too_long_fails_only_that_request),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
