/* Unit tests: llm/json_schema.c — schemas refused when read (naming the
 * place and the cause), each keyword of the subset accepting what matches
 * and refusing what does not (with the place), and an answer's message
 * keeping its raw text whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/error.h"
#include "llm/json_schema.h"

static sl_json_schema *parse(const char *text)
{
    sl_json_schema *s = NULL;
    if (sl_json_schema_parse(text, strlen(text), "test.json", &s) != SL_OK)
        fail_msg("%s: %s", text, sl_last_error());
    return s;
}

/* Whether `doc` matches `schema`; why into a static buffer. */
static char why[512];
static int matches(const char *schema, const char *doc)
{
    sl_json_schema *s = parse(schema);
    json_error_t jerr;
    json_t *v = json_loads(doc, JSON_DECODE_ANY, &jerr);
    if (!v)
        fail_msg("bad test document %s", doc);
    int ok = sl_json_schema_match(s, v, why, sizeof why);
    json_decref(v);
    sl_json_schema_free(s);
    return ok;
}

static void bad_schemas_are_refused_with_the_place(void **state)
{
    static const struct {
        const char *schema, *message;
    } cases[] = {
        {"{", "test.json is not JSON: "},
        {"[1]", "test.json: a JSON schema must be an object"},
        {"{\"type\": \"str\"}", "test.json: $.type: unknown type name"},
        {"{\"type\": 3}", "test.json: $.type: expected a type name or an array of them"},
        {"{\"properties\": {\"a\": {\"type\": \"list\"}}}",
         "test.json: $.properties.a.type: unknown type name"},
        {"{\"properties\": {\"a\": 5}}",
         "test.json: $.properties.a: a schema must be an object (or true or false)"},
        {"{\"required\": \"a\"}", "test.json: $.required: expected an array of property names"},
        {"{\"items\": [{}]}", "test.json: $.items: an array of schemas (tuples) is not supported"},
        {"{\"items\": {\"items\": {\"minItems\": -1}}}",
         "test.json: $.items.items.minItems: expected a non-negative integer"},
        {"{\"anyOf\": []}", "test.json: $.anyOf: expected a non-empty array of schemas"},
        {"{\"oneOf\": [{}, {\"type\": 1}]}",
         "test.json: $.oneOf[1].type: expected a type name"},
        {"{\"maximum\": \"3\"}", "test.json: $.maximum: expected a number"},
        {"{\"enum\": 3}", "test.json: $.enum: expected an array of values"},
        {"{\"a\": 1, \"a\": 2}", "test.json is not JSON: duplicate object key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sl_json_schema *s = NULL;
        sl_status st = sl_json_schema_parse(cases[i].schema, strlen(cases[i].schema), "test.json", &s);
        if (st != SL_ERR_INVALID_ARG || !strstr(sl_last_error(), cases[i].message))
            fail_msg("%s: got %d '%s', expected '%s'", cases[i].schema, (int)st, sl_last_error(),
                     cases[i].message);
        assert_null(s);
    }
}

static void types(void **state)
{
    assert_true(matches("{\"type\": \"integer\"}", "3"));
    assert_true(matches("{\"type\": \"integer\"}", "3.0"));
    assert_false(matches("{\"type\": \"integer\"}", "3.5"));
    assert_string_equal(why, "$: expected integer, got a number");
    assert_true(matches("{\"type\": \"number\"}", "3"));
    assert_false(matches("{\"type\": \"string\"}", "null"));
    assert_true(matches("{\"type\": [\"string\", \"null\"]}", "null"));
    assert_false(matches("{\"type\": [\"string\", \"null\"]}", "true"));
    assert_string_equal(why, "$: a boolean is none of the types allowed");
    assert_true(matches("{\"type\": \"boolean\"}", "false"));
    assert_true(matches("{}", "[1, {\"a\": null}]"));
    assert_true(matches("{\"type\": \"array\"}", "[]"));
    assert_false(matches("{\"type\": \"object\"}", "[]"));
}

static void objects(void **state)
{
    const char *schema =
        "{\"type\": \"object\", \"properties\": {\"caption\": {\"type\": \"string\"}, "
        "\"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"maxItems\": 3}, "
        "\"safe\": {\"enum\": [\"yes\", \"no\"]}}, \"required\": [\"caption\", \"safe\"], "
        "\"additionalProperties\": false}";
    assert_true(matches(schema, "{\"caption\": \"a cat\", \"tags\": [\"cat\"], \"safe\": \"yes\"}"));
    assert_false(matches(schema, "{\"caption\": \"a cat\"}"));
    assert_string_equal(why, "$: the required property \"safe\" is missing");
    assert_false(matches(schema, "{\"caption\": \"a\", \"safe\": \"maybe\"}"));
    assert_string_equal(why, "$.safe: a string that is not one of the enum values");
    assert_false(matches(schema, "{\"caption\": \"a\", \"safe\": \"no\", \"tags\": [\"x\", 2]}"));
    assert_string_equal(why, "$.tags[1]: expected string, got an integer");
    assert_false(matches(schema, "{\"caption\": \"a\", \"safe\": \"no\", \"tags\": [\"1\", \"2\", "
                                 "\"3\", \"4\"]}"));
    assert_string_equal(why, "$.tags: 4 items, more than maxItems");
    assert_false(matches(schema, "{\"caption\": \"a\", \"safe\": \"no\", \"colour\": \"red\"}"));
    assert_string_equal(why, "$: the property \"colour\" is not allowed (additionalProperties: false)");
    /* Extra properties checked against an additionalProperties schema. */
    assert_false(matches("{\"additionalProperties\": {\"type\": \"integer\"}}", "{\"a\": \"x\"}"));
    assert_string_equal(why, "$.a: expected integer, got a string");
    assert_false(matches("{\"minProperties\": 2}", "{\"a\": 1}"));
    assert_false(matches("{\"maxProperties\": 0}", "{\"a\": 1}"));
}

static void strings_numbers_and_combinators(void **state)
{
    /* Characters, not bytes: "été" is 3 long. */
    assert_true(matches("{\"maxLength\": 3}", "\"\xc3\xa9t\xc3\xa9\""));
    assert_false(matches("{\"minLength\": 4}", "\"\xc3\xa9t\xc3\xa9\""));
    assert_false(matches("{\"maxLength\": 2}", "\"abc\""));
    assert_true(matches("{\"minimum\": 0, \"maximum\": 1}", "0.5"));
    assert_false(matches("{\"minimum\": 0, \"maximum\": 1}", "1.5"));
    assert_string_equal(why, "$: the number is outside maximum");
    assert_false(matches("{\"exclusiveMinimum\": 0}", "0"));
    assert_true(matches("{\"exclusiveMaximum\": 1}", "0"));
    assert_true(matches("{\"const\": {\"a\": [1]}}", "{\"a\": [1]}"));
    assert_false(matches("{\"const\": 1}", "2"));
    assert_true(matches("{\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"integer\"}]}", "3"));
    assert_false(matches("{\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"integer\"}]}", "[]"));
    assert_string_equal(why, "$: matches none of the schemas of anyOf");
    assert_false(matches("{\"oneOf\": [{\"type\": \"number\"}, {\"type\": \"integer\"}]}", "3"));
    assert_string_equal(why, "$: matches more than one of the schemas of oneOf");
    assert_true(matches("{\"oneOf\": [{\"type\": \"number\"}, {\"type\": \"integer\"}]}", "3.5"));
    assert_false(matches("{\"allOf\": [{\"minimum\": 1}, {\"maximum\": 2}]}", "3"));
    assert_true(matches("{\"prefixItems\": [{\"type\": \"string\"}], \"items\": {\"type\": "
                        "\"integer\"}}", "[\"a\", 1, 2]"));
    assert_false(matches("{\"prefixItems\": [{\"type\": \"string\"}]}", "[1]"));
    assert_false(matches("{\"properties\": {\"a\": false}}", "{\"a\": 1}"));
    assert_string_equal(why, "$.a: no value is allowed here (schema false)");
    /* Keywords outside the subset are not checked. */
    assert_true(matches("{\"pattern\": \"^x\", \"format\": \"date\", \"$ref\": \"#/x\"}",
                        "\"y\""));
}

static void answers_keep_their_raw_text(void **state)
{
    sl_json_schema *s = parse("{\"type\": \"object\", \"required\": [\"a\"]}");
    char *msg = NULL;
    assert_int_equal(sl_json_schema_check_answer(s, "x.jpg", NULL, " {\"a\": 1}\n", "stop", &msg), SL_OK);
    assert_null(msg);
    assert_int_equal(sl_json_schema_check_answer(s, "x.jpg", NULL, "{\"a\": 1", "stop", &msg),
                     SL_ERR_INVALID_OUTPUT);
    assert_non_null(strstr(msg, "x.jpg: the answer is not JSON: "));
    assert_non_null(strstr(msg, "; the answer was: {\"a\": 1"));
    assert_null(strstr(msg, "token limit")); /* it stopped of itself: no cut to blame */
    sl_free(msg);
    /* The same text cut at the token limit says so, and what to raise. */
    assert_int_equal(sl_json_schema_check_answer(s, "x.jpg", NULL, "{\"a\": 1", "length", &msg),
                     SL_ERR_INVALID_OUTPUT);
    assert_string_equal(msg, "x.jpg: the answer is not JSON: '}' expected near end of file "
                             "(line 1, column 7); it was cut at the token limit (finish_reason "
                             "\"length\"): allow more tokens (--max-tokens, or max_tokens in the "
                             "request); the answer was: {\"a\": 1");
    sl_free(msg);
    /* A task's answer: the job's --max-tokens does not reach a task that
     * sets its own max_tokens, so the task's limit is named. */
    assert_int_equal(sl_json_schema_check_answer(s, "x.jpg, task tags", "tags", "{\"a\": 1",
                                                 "length", &msg),
                     SL_ERR_INVALID_OUTPUT);
    assert_non_null(strstr(msg, "; it was cut at the token limit (finish_reason \"length\"): "
                                "allow the task more tokens (--task-max-tokens tags=N, or "
                                "\"max_tokens\" in its \"sampling\"); the answer was: "));
    assert_null(strstr(msg, "--max-tokens,"));
    sl_free(msg);
    assert_int_equal(sl_json_schema_check_answer(s, "x.jpg", NULL, "{} {}", "stop", &msg),
                     SL_ERR_INVALID_OUTPUT);
    sl_free(msg);
    assert_int_equal(sl_json_schema_check_answer(s, "x.jpg", NULL, "{\"b\": 2}", "stop", &msg),
                     SL_ERR_INVALID_OUTPUT);
    assert_string_equal(msg, "x.jpg: the answer does not match the JSON schema: $: the required "
                             "property \"a\" is missing; the answer was: {\"b\": 2}");
    sl_free(msg);
    /* A long answer is kept whole, past any fixed buffer. */
    size_t n = 20000;
    char *long_text = sl_malloc(n + 3);
    long_text[0] = '[';
    memset(long_text + 1, '1', n);
    strcpy(long_text + n + 1, "x");
    assert_int_equal(sl_json_schema_check_answer(s, "x.jpg", NULL, long_text, "stop", &msg),
                     SL_ERR_INVALID_OUTPUT);
    assert_non_null(strstr(msg, long_text));
    sl_free(msg);
    sl_free(long_text);
    sl_json_schema_free(s);
}

static void deep_paths_are_cut(void **state)
{
    /* A place longer than the buffer ends in "..." rather than overflowing. */
    char schema[8192] = "", doc[8192] = "";
    size_t ls = 0, ld = 0;
    for (int i = 0; i < 60; i++) {
        ls += (size_t)snprintf(schema + ls, sizeof schema - ls,
                               "{\"properties\": {\"a_long_property_name\": ");
        ld += (size_t)snprintf(doc + ld, sizeof doc - ld, "{\"a_long_property_name\": ");
    }
    ls += (size_t)snprintf(schema + ls, sizeof schema - ls, "{\"type\": \"string\"}");
    ld += (size_t)snprintf(doc + ld, sizeof doc - ld, "1");
    for (int i = 0; i < 60; i++) {
        ls += (size_t)snprintf(schema + ls, sizeof schema - ls, "}}");
        ld += (size_t)snprintf(doc + ld, sizeof doc - ld, "}");
    }
    assert_false(matches(schema, doc));
    if (!strstr(why, "...: expected string, got an integer"))
        fail_msg("%s", why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_schemas_are_refused_with_the_place),
        cmocka_unit_test(types),
        cmocka_unit_test(objects),
        cmocka_unit_test(strings_numbers_and_combinators),
        cmocka_unit_test(answers_keep_their_raw_text),
        cmocka_unit_test(deep_paths_are_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
