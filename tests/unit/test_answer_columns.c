/* Unit tests: job/answer_columns.c — the columns a JSON schema's
 * properties become (names, Parquet types from the schema, refusals) and
 * an answer's values set into a row's columns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/error.h"
#include "job/answer_columns.h"

static const char schema[] =
    "{\"type\": \"object\", \"properties\": {"
    "\"s\": {\"type\": \"string\"}, \"i\": {\"type\": \"integer\"}, \"n\": {\"type\": "
    "\"number\"}, \"b\": {\"type\": \"boolean\"}, \"opt\": {\"type\": [\"integer\", \"null\"]}, "
    "\"either\": {\"type\": [\"integer\", \"string\"]}, \"e_int\": {\"enum\": [1, 2]}, "
    "\"e_num\": {\"enum\": [1, 2.5]}, \"e_str\": {\"enum\": [\"a\", \"b\"]}, "
    "\"e_mix\": {\"enum\": [\"a\", 1]}, \"arr\": {\"type\": \"array\"}, \"any\": {}}}";

static void properties_become_typed_columns(void **state)
{
    sl_caption_params p = {.answer_columns = true, .json_schema = schema,
                           .sampling = {.n = 1}};
    answer_columns ac;
    assert_int_equal(answer_columns_plan(&p, &ac), SL_OK);
    static const char *const want[] = {"s:string", "i:int64", "n:double", "b:bool",
                                       "opt:int64", "either:string", "e_int:int64",
                                       "e_num:double", "e_str:string", "e_mix:string",
                                       "arr:string", "any:string"};
    assert_int_equal(ac.n, 12);
    for (int k = 0; k < ac.n; k++) {
        assert_string_equal(ac.cols[k].spec, want[k]);
        assert_int_equal(ac.cols[k].task, 0);
    }
    json_t *extra = NULL;
    assert_int_equal(answer_columns_fill(&ac, 0, "{\"s\": \"x\", \"i\": 3, \"arr\": [1, {}], "
                                                 "\"other\": 1}", &extra),
                     SL_OK);
    assert_int_equal(json_object_size(extra), 3); /* what the answer has; not "other" */
    assert_string_equal(json_string_value(json_object_get(extra, "s")), "x");
    assert_int_equal(json_integer_value(json_object_get(extra, "i")), 3);
    assert_true(json_is_array(json_object_get(extra, "arr")));
    /* Not an object (or not JSON): nothing set. */
    assert_int_equal(answer_columns_fill(&ac, 0, "[1]", &extra), SL_OK);
    assert_int_equal(answer_columns_fill(&ac, 0, "not json", &extra), SL_OK);
    assert_int_equal(json_object_size(extra), 3);
    answer_columns_drop(&ac, extra); /* the planned ones go, nothing else */
    assert_int_equal(json_object_size(extra), 0);
    json_object_set_new(extra, "mine", json_true());
    answer_columns_drop(&ac, extra);
    assert_int_equal(json_object_size(extra), 1);
    json_decref(extra);
    answer_columns_clear(&ac);
    answer_columns_clear(&ac); /* twice: nothing left */
}

static void tasks_prefix_their_columns(void **state)
{
    sl_caption_task tasks[3] = {
        {.name = "free", .prompt = "Describe."},
        {.name = "own", .prompt = "Fill.", .json_schema = "{\"properties\": {\"k\": {}}}"},
        {.name = "job", .prompt = "Fill."}};
    sl_caption_params p = {.answer_columns = true, .tasks = tasks, .n_tasks = 2,
                           .sampling = {.n = 1}};
    answer_columns ac;
    assert_int_equal(answer_columns_plan(&p, &ac), SL_OK);
    assert_int_equal(ac.n, 1);
    assert_string_equal(ac.cols[0].name, "own_k");
    assert_int_equal(ac.cols[0].task, 1);
    json_t *extra = NULL;
    /* Task 0's answer sets nothing (it has no schema), task 1's its column. */
    assert_int_equal(answer_columns_fill(&ac, 0, "{\"k\": 1}", &extra), SL_OK);
    assert_null(extra);
    assert_int_equal(answer_columns_fill(&ac, 1, "{\"k\": 2}", &extra), SL_OK);
    assert_int_equal(json_integer_value(json_object_get(extra, "own_k")), 2);
    json_decref(extra);
    answer_columns_clear(&ac);
    /* The job's schema answers the tasks without one of their own. */
    p.json_schema = "{\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"boolean\"}}}";
    p.n_tasks = 3;
    assert_int_equal(answer_columns_plan(&p, &ac), SL_OK);
    assert_int_equal(ac.n, 3);
    assert_string_equal(ac.cols[0].spec, "free_x:bool");
    assert_string_equal(ac.cols[1].spec, "own_k:string");
    assert_string_equal(ac.cols[2].spec, "job_x:bool");
    answer_columns_clear(&ac);
}

static void what_cannot_be_columns_is_refused(void **state)
{
    answer_columns ac;
    sl_caption_params p = {.answer_columns = true, .sampling = {.n = 1}};
    assert_int_equal(answer_columns_plan(&p, &ac), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "needs --json-schema"));
    p.json_schema = "{\"type\": \"array\", \"items\": {}}";
    assert_int_equal(answer_columns_plan(&p, &ac), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "not an object with properties"));
    p.json_schema = "{\"type\": \"object\", \"properties\": {\"a\": {}}}";
    p.dry_run = true;
    assert_int_equal(answer_columns_plan(&p, &ac), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--dry-run"));
    p.dry_run = false;
    p.input_format = "openai-batch";
    assert_int_equal(answer_columns_plan(&p, &ac), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "a batch file"));
    /* Not asked for: nothing planned, nothing checked. */
    p = (sl_caption_params){.sampling = {.n = 4}};
    assert_int_equal(answer_columns_plan(&p, &ac), SL_OK);
    assert_int_equal(ac.n, 0);
}

/* An input column a planned column has moves to input_<name>, input_
 * again while the row (or a planned column) has that name; the answer then
 * takes the name. */
static void input_columns_of_their_names_move_aside(void **state)
{
    (void)state;
    sl_caption_params p = {.answer_columns = true, .sampling = {.n = 1},
                           .json_schema = "{\"type\": \"object\", \"properties\": {"
                                          "\"label\": {\"type\": \"integer\"}, "
                                          "\"input_n\": {}, \"n\": {}}}"};
    answer_columns ac;
    assert_int_equal(answer_columns_plan(&p, &ac), SL_OK);
    json_t *extra = json_pack("{s:s, s:i, s:i, s:b}", "label", "L", "input_label", 7, "n", 1,
                              "other", 1);
    assert_int_equal(answer_columns_make_room(&ac, extra), SL_OK);
    json_t *want = json_pack("{s:s, s:i, s:i, s:b}", "input_input_label", "L", "input_label", 7,
                             "input_input_n", 1, "other", 1);
    assert_true(json_equal(extra, want));
    assert_int_equal(answer_columns_fill(&ac, 0, "{\"label\": 3}", &extra), SL_OK);
    assert_int_equal(json_integer_value(json_object_get(extra, "label")), 3);
    assert_string_equal(json_string_value(json_object_get(extra, "input_input_label")), "L");
    char *name = answer_columns_input_name(&ac, "label", NULL);
    assert_string_equal(name, "input_label");
    sl_free(name);
    name = answer_columns_input_name(&ac, "other", NULL);
    assert_string_equal(name, "other");
    sl_free(name);
    json_decref(want);
    json_decref(extra);
    answer_columns_clear(&ac);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(properties_become_typed_columns),
        cmocka_unit_test(tasks_prefix_their_columns),
        cmocka_unit_test(what_cannot_be_columns_is_refused),
        cmocka_unit_test(input_columns_of_their_names_move_aside),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
