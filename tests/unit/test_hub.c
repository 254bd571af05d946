/* Unit tests: llm/hub.c's reading of a repository listing (hub_impl.h) —
 * the .gguf names kept, names that could leave the cache dropped, and the
 * choice of model and projector. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/buf.h"
#include "llm/hub_impl.h"

static bool listed(const hub_files *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0)
            return true;
    return false;
}

static void listing_keeps_gguf_files(void **state)
{
    const char *body = "{\"id\":\"o/r\",\"sha\":\"abc\",\"siblings\":["
                       "{\"rfilename\":\".gitattributes\"},{\"rfilename\":\"README.md\"},"
                       "{\"rfilename\":\"m-Q8_0.gguf\"},{\"rfilename\":\"sub/m-F16.GGUF\"},"
                       "{\"rfilename\":\"mmproj-m-f16.gguf\"},{\"rfilename\":7},\"x\",null]}";
    hub_files f = {0};
    char why[256];
    assert_true(hub_listing_parse(body, strlen(body), &f, why, sizeof why));
    assert_int_equal(f.n, 3);
    assert_true(listed(&f, "m-Q8_0.gguf") && listed(&f, "sub/m-F16.GGUF") &&
                listed(&f, "mmproj-m-f16.gguf"));
    hub_files_clear(&f);
    assert_false(hub_listing_parse("{\"error\":\"Repository not found\"}", 32, &f, why, sizeof why));
    assert_non_null(strstr(why, "siblings"));
    assert_false(hub_listing_parse("<html>", 6, &f, why, sizeof why));
    assert_false(hub_listing_parse(NULL, 0, &f, why, sizeof why));
    /* A NUL inside a name would make it read as a shorter one: no listing. */
    const char *nul = "{\"siblings\":[{\"rfilename\":\"a.gguf\\u0000.txt\"}]}";
    assert_false(hub_listing_parse(nul, strlen(nul), &f, why, sizeof why));
    assert_int_equal(f.n, 0);
}

/* The listing is the server's word: a name that would put a file outside
 * the repository's snapshot folder (or cannot be a URL path as given) is
 * not a file of the repository. Before, "../../x.gguf" was kept, chosen,
 * and written to CACHE/models--ORG--REPO/snapshots/COMMIT/../../x.gguf. */
static void listing_drops_names_that_leave_the_cache(void **state)
{
    const char *body = "{\"siblings\":["
                       "{\"rfilename\":\"../../../../tmp/evil-Q8_0.gguf\"},"
                       "{\"rfilename\":\"a/../../evil.gguf\"},{\"rfilename\":\"/etc/evil.gguf\"},"
                       "{\"rfilename\":\"a/./b.gguf\"},{\"rfilename\":\"a//b.gguf\"},"
                       "{\"rfilename\":\"a\\\\b.gguf\"},{\"rfilename\":\"x y.gguf\"},"
                       "{\"rfilename\":\"q?.gguf\"},"
                       "{\"rfilename\":\"model-Q8_0.gguf\"}]}";
    hub_files f = {0};
    char why[256];
    assert_true(hub_listing_parse(body, strlen(body), &f, why, sizeof why));
    assert_int_equal(f.n, 1);
    assert_string_equal(f.names[0], "model-Q8_0.gguf");
    char model[HUB_MAX_NAME] = "", mmproj[HUB_MAX_NAME] = "";
    assert_int_equal(hub_choose_files("hf://o/r", "o", "r", &f, model, sizeof model, mmproj,
                                      sizeof mmproj),
                     SL_OK);
    assert_string_equal(model, "model-Q8_0.gguf");
    assert_string_equal(mmproj, "");
    hub_files_clear(&f);
    /* Too long a name is not a file of the repository. */
    char name[HUB_MAX_NAME + 8];
    memset(name, 'a', sizeof name);
    strcpy(name + HUB_MAX_NAME - 2, ".gguf");
    assert_true(hub_files_add(&f, name, why, sizeof why));
    assert_int_equal(f.n, 0);
}

static bool append(sl_buf *b, const char *s)
{
    return sl_buf_append(b, s, strlen(s));
}

/* A repository of many split quantizations: its Q8_0 model listed after
 * 300 others is still found. Before, only the first 256 .gguf names were
 * kept and the rest dropped without a word, so the choice said "name one"
 * of files that did not hold the Q8_0 at all. Past HUB_MAX_FILES the
 * listing is refused, saying so. */
static void a_long_listing_is_kept_whole_or_refused(void **state)
{
    sl_buf body = {0};
    assert_true(append(&body, "{\"siblings\":["));
    char entry[128];
    for (int i = 0; i < 300; i++) {
        snprintf(entry, sizeof entry, "{\"rfilename\":\"split/m-Q4_K-%05d-of-00300.gguf\"},", i);
        assert_true(append(&body, entry));
    }
    assert_true(append(&body, "{\"rfilename\":\"z-Q8_0.gguf\"},"
                              "{\"rfilename\":\"mmproj-z.gguf\"}]}"));
    hub_files f = {0};
    char why[256];
    assert_true(hub_listing_parse((const char *)body.data, body.len, &f, why, sizeof why));
    assert_int_equal(f.n, 302);
    char model[HUB_MAX_NAME] = "", mmproj[HUB_MAX_NAME] = "";
    assert_int_equal(hub_choose_files("hf://o/r", "o", "r", &f, model, sizeof model, mmproj,
                                      sizeof mmproj),
                     SL_OK);
    assert_string_equal(model, "z-Q8_0.gguf");
    assert_string_equal(mmproj, "mmproj-z.gguf");
    hub_files_clear(&f);
    sl_buf_free(&body);

    for (int i = 0; i < HUB_MAX_FILES; i++) {
        snprintf(entry, sizeof entry, "m%06d.gguf", i);
        assert_true(hub_files_add(&f, entry, why, sizeof why));
    }
    assert_false(hub_files_add(&f, "one-more.gguf", why, sizeof why));
    assert_non_null(strstr(why, "more than 65536 .gguf files"));
    assert_true(hub_files_add(&f, "README.md", why, sizeof why)); /* not a .gguf: skipped */
    assert_int_equal(f.n, HUB_MAX_FILES);
    hub_files_clear(&f);
    assert_int_equal(f.n, 0);
}

static void choice_of_model_and_projector(void **state)
{
    hub_files f = {0};
    char why[256];
    const char *names[] = {"a-Q4_K_M.gguf", "a-Q8_0.gguf", "mmproj-a-f32.gguf",
                           "mmproj-a-q8_0.gguf"};
    for (size_t i = 0; i < 4; i++)
        assert_true(hub_files_add(&f, names[i], why, sizeof why));
    char model[HUB_MAX_NAME] = "", mmproj[HUB_MAX_NAME] = "";
    assert_int_equal(hub_choose_files("hf://o/r", "o", "r", &f, model, sizeof model, mmproj,
                                      sizeof mmproj),
                     SL_OK);
    assert_string_equal(model, "a-Q8_0.gguf");
    assert_string_equal(mmproj, "mmproj-a-q8_0.gguf"); /* the model's precision */
    hub_files_clear(&f);
    /* Several models, none Q8_0: name one. */
    assert_true(hub_files_add(&f, "b-Q4_K_M.gguf", why, sizeof why));
    assert_true(hub_files_add(&f, "b-Q5_K_M.gguf", why, sizeof why));
    model[0] = '\0';
    assert_int_equal(hub_choose_files("hf://o/r", "o", "r", &f, model, sizeof model, NULL, 0),
                     SL_ERR_INVALID_ARG);
    hub_files_clear(&f);
    assert_true(hub_files_add(&f, "mmproj-only.gguf", why, sizeof why));
    assert_int_equal(hub_choose_files("hf://o/r", "o", "r", &f, model, sizeof model, NULL, 0),
                     SL_ERR_NOT_FOUND);
    hub_files_clear(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(listing_keeps_gguf_files),
        cmocka_unit_test(listing_drops_names_that_leave_the_cache),
        cmocka_unit_test(a_long_listing_is_kept_whole_or_refused),
        cmocka_unit_test(choice_of_model_and_projector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
