/* The public entry points refuse a NULL where a pointer is asked for with
 * SL_ERR_INVALID_ARG naming the function and the argument, instead of
 * crashing the program that embeds the library (docs/library.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/sluice.h"

static void refused(sl_status st, const char *said)
{
    assert_int_equal(st, SL_ERR_INVALID_ARG);
    if (!strstr(sl_last_error(), said))
        fail_msg("'%s' does not say '%s'", sl_last_error(), said);
}

static void null_arguments_are_refused(void **state)
{
    (void)state;
    sl_caption_params cp = sl_caption_default_params();
    sl_caption_summary sum;
    refused(sl_caption_run(NULL, &sum), "sl_caption_run: NULL params");
    refused(sl_caption_run(&cp, NULL), "sl_caption_run: NULL summary");
    refused(sl_caption_check(NULL), "sl_caption_check: NULL params");

    sl_llama_params lp = sl_llama_default_params();
    sl_engine *e = (sl_engine *)&lp; /* a value the call must not leave there */
    refused(sl_engine_open_llama(NULL, &e), "sl_engine_open_llama: NULL params");
    refused(sl_engine_open_llama(&lp, NULL), "sl_engine_open_llama: NULL out");
    sl_openai_params op = sl_openai_default_params();
    refused(sl_engine_open_openai(NULL, &e), "sl_engine_open_openai: NULL params");
    refused(sl_engine_open_openai(&op, NULL), "sl_engine_open_openai: NULL out");

    sl_image *img;
    refused(sl_image_load_file(NULL, NULL, &img), "sl_image_load_file: NULL path");
    refused(sl_image_load_file("x.jpg", NULL, NULL), "sl_image_load_file: NULL out");

    sl_request req = {0};
    sl_completion c;
    size_t n = 7;
    sl_result res;
    refused(sl_engine_submit(NULL, &req, NULL), "sl_engine_submit: NULL engine");
    refused(sl_engine_poll(NULL, &c, 1, 0, &n), "sl_engine_poll: NULL engine");
    refused(sl_engine_generate(NULL, &req, &res), "sl_engine_generate: NULL engine");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(null_arguments_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
