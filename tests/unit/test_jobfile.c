/* Unit tests: config/ — job files read into settings (valid files, each kind
 * of error with its line and column, flags over a file, lists replaced by a
 * later layer), every setting printed and read back to the same settings,
 * and the loader's error paths under failing allocations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "sluice/config.h"

static sl_config *load(const char *yaml)
{
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    sl_status st = sl_config_load_text(c, yaml, strlen(yaml), "job.yaml");
    if (st != SL_OK)
        fail_msg("load failed: %s", sl_last_error());
    assert_int_equal(sl_config_resolve(c), SL_OK);
    return c;
}

/* The YAML that sl_config_write_yaml() gives; free() it. */
static char *printed(const sl_config *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    assert_non_null(fp);
    assert_int_equal(sl_config_write_yaml(c, fp), SL_OK);
    fclose(fp);
    return text;
}

static void a_valid_file_sets_the_parameters(void **state)
{
    sl_config *c = load(
        "# a comment\n"
        "version: 1\n"
        "engine: llama\n"
        "input:\n"
        "  paths: [photos/, 'more/*.jpg']\n"
        "  include: ['**/*.jpg']\n"
        "  shard: 1/4\n"
        "image: {workers: 3, max_edge: 384, background: '#000000'}\n"
        "llama:\n"
        "  model: m.gguf\n"
        "  mmproj: p.gguf\n"
        "  parallel: 8\n"
        "  gpus: [0, 2]\n"
        "prompt:\n"
        "  text: |\n"
        "    Describe it.\n"
        "    Briefly.\n"
        "sampling: {max_tokens: 32, temperature: 0.5, seed: 42, stop: [\"\\n\", END]}\n"
        "pipeline: {ordered: true, memory_budget: 512M, max_failed: 10%}\n"
        "output: {dir: out, format: parquet, columns: 'a,b'}\n"
        "metrics: {addr: '127.0.0.1:0'}\n"
        "console: {show: 0, quiet: true}\n");
    const sl_caption_params *p = sl_config_params(c);
    assert_int_equal(p->n_inputs, 2);
    assert_string_equal(p->inputs[0], "photos/");
    assert_string_equal(p->inputs[1], "more/*.jpg");
    assert_string_equal(p->input_dir, "photos/");
    assert_int_equal(p->n_include, 1);
    assert_int_equal(p->input_shard_index, 1);
    assert_int_equal(p->input_shard_count, 4);
    assert_int_equal(p->decode_workers, 3);
    assert_int_equal(p->image.max_edge, 384);
    assert_int_equal(p->image.background[0], 0);
    assert_string_equal(p->llama.model_path, "m.gguf");
    assert_int_equal(p->llama.n_parallel, 8);
    assert_int_equal(p->n_gpus, 2);
    assert_int_equal(p->gpus[1], 2);
    assert_int_equal(p->replicas, 2); /* one per GPU when replicas is not set */
    assert_string_equal(p->prompt, "Describe it.\nBriefly.\n");
    assert_int_equal(p->sampling.max_tokens, 32);
    assert_true(p->sampling.temperature == 0.5f);
    assert_int_equal(p->sampling.seed, 42);
    assert_int_equal(p->n_stop, 2);
    assert_string_equal(p->stop[0], "\n");
    assert_string_equal(p->stop[1], "END");
    assert_true(p->ordered);
    assert_int_equal(p->memory_budget, 512u << 20);
    assert_true(p->max_failed == 0.1);
    assert_string_equal(p->output_dir, "out");
    assert_string_equal(p->output_format, "parquet");
    assert_int_equal(p->n_columns, 2);
    assert_string_equal(p->columns[1], "b");
    assert_string_equal(p->metrics_addr, "127.0.0.1:0");
    assert_false(p->metrics_optional); /* an address someone chose must be served */
    sl_config_console con = sl_config_console_settings(c);
    assert_int_equal(con.show, 0);
    assert_true(con.quiet);
    assert_true(sl_config_is_set(c, "llama.parallel"));
    assert_false(sl_config_is_set(c, "llama.threads"));
    sl_config_free(c);
}

static void a_dotted_key_is_the_nested_one(void **state)
{
    sl_config *c = load("llama.parallel: 7\nsampling: {max_tokens: 3}\n");
    assert_int_equal(sl_config_params(c)->llama.n_parallel, 7);
    assert_int_equal(sl_config_params(c)->sampling.max_tokens, 3);
    sl_config_free(c);
}

static void defaults_and_empty_files(void **state)
{
    const char *empties[] = {"", "# nothing\n", "~\n", "---\n...\n", "llama:\n"};
    for (size_t i = 0; i < sizeof empties / sizeof *empties; i++) {
        sl_config *c = load(empties[i]);
        const sl_caption_params *p = sl_config_params(c);
        sl_caption_params d = sl_caption_default_params();
        assert_int_equal(p->llama.n_parallel, d.llama.n_parallel);
        assert_string_equal(p->prompt, d.prompt);
        assert_int_equal(p->n_inputs, 0);
        assert_null(p->columns);
        assert_string_equal(p->metrics_addr, "127.0.0.1:9797");
        assert_true(p->metrics_optional); /* the default address may be taken */
        sl_config_free(c);
    }
}

/* Each kind of mistake: refused, naming file:line:column, and the message
 * says what is allowed. */
static void errors_name_the_line_and_what_is_allowed(void **state)
{
    static const struct {
        const char *yaml, *want1, *want2;
    } cases[] = {
        {"engine: llama\nllama:\n  paralel: 2\n", "job.yaml:3:3: unknown key 'paralel' in llama",
         "did you mean 'parallel'? allowed: model, mmproj,"},
        {"egnine: llama\n", "job.yaml:1:1: unknown section or key 'egnine'",
         "allowed: version, engine, input,"},
        {"llama:\n  parallel: many\n", "job.yaml:2:13: llama.parallel expects an integer from 0 "
         "to 255, got 'many'", NULL},
        {"llama:\n  parallel: 256\n", "job.yaml:2:13: llama.parallel expects an integer", "256"},
        {"llama: {parallel: [1, 2]}\n", "job.yaml:1:19: llama.parallel takes one value (N), not "
         "a list", NULL},
        {"sampling:\n  stop: {a: 1}\n", "job.yaml:2:9: sampling.stop takes a list", "not a mapping"},
        {"sampling:\n  stop:\n    - [x]\n", "job.yaml:3:7: sampling.stop is a list of single "
         "values", NULL},
        {"llama: gguf\n", "job.yaml:1:8: llama is a section: write its keys (model, mmproj,", NULL},
        {"engine: vllm\n", "job.yaml:1:9: engine expects one of llama, openai; got 'vllm'", NULL},
        {"pipeline:\n  ordered: yes\n", "job.yaml:2:12: pipeline.ordered expects true or false",
         NULL},
        {"pipeline:\n  memory_budget: 12\n", "job.yaml:2:18: pipeline.memory_budget expects a "
         "size of at least 1M", NULL},
        {"input:\n  shard: 4/4\n", "job.yaml:2:10: input.shard takes I/N with 0 <= I < N", NULL},
        {"image:\n  background: white\n", "job.yaml:2:15: image.background expects a colour as "
         "RRGGBB", NULL},
        {"llama:\n  parallel: 2\n  model: a\n  parallel: 3\n", "job.yaml:4:3: llama.parallel is "
         "given twice (first on line 2)", NULL},
        /* A dotted key is its nested form: one key, either way round. */
        {"llama.parallel: 4\nllama:\n  parallel: 5\n", "job.yaml:3:3: llama.parallel is given "
         "twice (first on line 1)", NULL},
        {"llama:\n  parallel: 5\nllama.parallel: 4\n", "job.yaml:3:1: llama.parallel is given "
         "twice (first on line 2)", NULL},
        {"output: {dir: a}\noutput.dir: b\n", "job.yaml:2:1: output.dir is given twice (first "
         "on line 1)", NULL},
        {"sampling:\n  stop: [a, b\n", "job.yaml:3:1: YAML syntax: did not find expected ',' "
         "or ']'", NULL},
        {"llama:\n model: a\n  mmproj: b\n", "job.yaml:3:9: YAML syntax: mapping values are not "
         "allowed", NULL},
        {"llama:\n  model: &m a\n", "job.yaml:2:10: anchors (&name) are not used", NULL},
        {"llama:\n  model: *m\n", "job.yaml:2:10: aliases (*name) are not used", NULL},
        {"llama:\n  parallel: !!int 3\n", "job.yaml:2:13: tags (!name) are not used", NULL},
        {"prompt:\n  text: \"a\\0b\"\n", "job.yaml:2:9: prompt.text holds a NUL character", NULL},
        {"version: 2\n", "job.yaml:1:10: version 2: this sluice reads job files of version 1",
         NULL},
        {"- a\n- b\n", "job.yaml:1:1: a job file is a mapping of sections and keys", "a list"},
        {"engine: llama\n---\nengine: openai\n", "job.yaml:2:1: a job file holds one YAML "
         "document", NULL},
        {"input:\n  paths: [a, ~]\n", "job.yaml:2:14: input.paths: an item is empty", NULL},
        {"llama:\n  gpus: [0, 0]\n", "job.yaml:2:13: llama.gpus takes distinct device numbers",
         NULL},
        {"sampling:\n  stop: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q]\n",
         "sampling.stop takes at most 16 items", NULL},
        {"openai:\n  response_format: /nonexistent/schema.json\n", "job.yaml:2:20: "
         "openai.response_format '/nonexistent/schema.json': No such file", NULL},
        {"openai:\n  max_in_flight: 16\n  adaptive_max: 8\n", "job.yaml:3:17: "
         "openai.adaptive_max 8 is below openai.max_in_flight 16", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sl_config *c;
        assert_int_equal(sl_config_new(&c), SL_OK);
        sl_status st = sl_config_load_text(c, cases[i].yaml, strlen(cases[i].yaml), "job.yaml");
        if (st == SL_OK)
            st = sl_config_resolve(c);
        const char *msg = sl_last_error();
        if (st == SL_OK || !strstr(msg, cases[i].want1) ||
            (cases[i].want2 && !strstr(msg, cases[i].want2)))
            fail_msg("case %zu (%s): status %d, message '%s'", i, cases[i].yaml, st, msg);
        assert_true(st == SL_ERR_INVALID_ARG || st == SL_ERR_NOT_FOUND);
        sl_config_free(c);
    }
}

static void flags_override_the_file(void **state)
{
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    const char *yaml = "llama: {parallel: 8, model: m.gguf}\n"
                       "sampling: {stop: [a, b]}\n"
                       "pipeline: {ordered: true}\n"
                       "input: {paths: [x, y]}\n";
    assert_int_equal(sl_config_load_text(c, yaml, strlen(yaml), "job.yaml"), SL_OK);
    sl_config_begin_layer(c);
    assert_int_equal(sl_config_set_flag(c, "parallel", "2"), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "--stop", "c"), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "stop", "d"), SL_OK); /* same layer: grows */
    assert_int_equal(sl_config_set_flag(c, "ordered", "false"), SL_OK);
    assert_int_equal(sl_config_set(c, "input.paths", "z"), SL_OK);
    assert_int_equal(sl_config_set(c, "llama.model", NULL), SL_OK); /* back to the default */
    assert_int_equal(sl_config_resolve(c), SL_OK);
    const sl_caption_params *p = sl_config_params(c);
    assert_int_equal(p->llama.n_parallel, 2);
    assert_int_equal(p->n_stop, 2);
    assert_string_equal(p->stop[0], "c");
    assert_string_equal(p->stop[1], "d");
    assert_false(p->ordered);
    assert_int_equal(p->n_inputs, 1);
    assert_string_equal(p->inputs[0], "z");
    assert_null(p->llama.model_path);
    assert_false(sl_config_is_set(c, "llama.model"));
    /* A flag's message names the flag; a key's the key. */
    assert_int_equal(sl_config_set_flag(c, "max-tokens", "lots"), SL_ERR_INVALID_ARG);
    assert_string_equal(sl_last_error(), "--max-tokens expects an integer from 1 to 1048576, got "
                                         "'lots'");
    assert_int_equal(sl_config_set(c, "sampling.max_tokens", "0"), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "sampling.max_tokens expects"));
    assert_int_equal(sl_config_set_flag(c, "no-such-flag", "1"), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_config_set(c, "llama.nope", "1"), SL_ERR_INVALID_ARG);
    /* Set flags replace the gpus and recount the replicas. */
    assert_int_equal(sl_config_set_flag(c, "gpus", "1,3,5"), SL_OK);
    assert_int_equal(sl_config_resolve(c), SL_OK);
    assert_int_equal(p->n_gpus, 3);
    assert_int_equal(p->replicas, 3);
    /* Both from flags: named as flags, as the command line always did. */
    assert_int_equal(sl_config_set_flag(c, "max-in-flight", "4"), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "adaptive-max", "2"), SL_OK);
    assert_int_equal(sl_config_resolve(c), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--adaptive-max 2 is below --max-in-flight 4"));
    sl_config_free(c);
}

/* A sample value for every setting, unlike its default: a new row in the
 * table without one here fails the test below. */
static const struct {
    const char *key, *value;
} samples[] = {
    {"version", "1"}, {"engine", "openai"}, {"input.paths", "a b/*.tar"},
    {"input.format", "webdataset"}, {"input.include", "**/*.jpg"}, {"input.exclude", "tmp/*"},
    {"input.image_column", "url"}, {"input.id_column", "image_id"}, {"input.allow_file_urls", "true"},
    {"input.image_root", "/data/images"}, {"input.max_download_bytes", "3M"}, {"input.max_line_bytes", "2M"}, {"input.max_item_bytes", "100M"},
    {"input.download_timeout", "2.5"},
    {"input.download_retries", "7"}, {"input.shard", "2/9"}, {"input.shard_size", "77"},
    {"image.workers", "5"}, {"image.max_edge", "0"}, {"image.max_pixels", "12345"},
    {"image.max_aspect_ratio", "0"},
    {"image.background", "#10ab0C"}, {"image.text", "Image {index}:"}, {"image.placeholder", "<image>"}, {"video.frames", "4"}, {"video.fps", "0.5"},
    {"video.frame_text", "Frame {index} at {time}s:"}, {"llama.model", "hf://org/repo"}, {"llama.chat_template", "chatml"},
    {"llama.mmproj", "p q.gguf"}, {"llama.lora", "run:1/a b.gguf:0.25"},
    {"llama.replicas", "3"}, {"llama.gpus", "4,1"},
    {"llama.parallel", "16"}, {"llama.ctx", "4096"}, {"llama.cache_type_k", "q8_0"},
    {"llama.cache_type_v", "iq4_nl"}, {"llama.threads", "6"},
    {"llama.gpu_layers", "0"}, {"llama.cpu_poll", "0"}, {"llama.sampler", "device"},
    {"llama.encode_ahead", "5"}, {"llama.encoders", "3"}, {"llama.image_cache", "0"}, {"llama.image_min_tokens", "64"},
    {"llama.image_max_tokens", "1024"},
    {"llama.prefix_cache", "off"},
    {"openai.endpoints", "http://h:1"}, {"openai.endpoints_file", NULL},
    {"openai.served_model", "m"}, {"openai.api_key_env", "KEY"},
    {"openai.api_key_header", "api-key"}, {"openai.headers", "X-Title: a, b"},
    {"openai.max_in_flight", "3"}, {"openai.adaptive", "true"}, {"openai.adaptive_max", "9"},
    {"openai.request_timeout", "0.25"}, {"openai.max_attempts", "2"},
    {"openai.endpoint_failures", "5"}, {"openai.endpoint_cooldown", "1e-3"},
    {"openai.give_up_after", "33.3"}, {"openai.jpeg_edge", "640"},
    {"openai.jpeg_quality", "75"}, {"openai.send_original", "true"},
    {"openai.video_part", "video_url"},
    {"openai.response_format", NULL}, {"openai.stream", "true"}, {"openai.split_samples", "true"},
    {"openai.max_tokens_field", "max_completion_tokens"},
    {"prompt.text", "\"Quotes\", \\backslash\\, tab\t, line\nbreak, \xc3\xa9t\xc3\xa9, \x01, "
                    "\xe2\x80\xa8 ~ # : - [x] {y}"},
    {"prompt.system", "null"}, {"prompt.column", "q"}, {"prompt.turns", "last"},
    {"tasks.prompts", "a=Describe {label}: \"{{x}}\""}, {"tasks.file", NULL},
    {"tasks.max_tokens", "a=7"}, {"tasks.temperature", "t=0.25"}, {"tasks.rows_per_task", "true"},
    {"sampling.max_tokens", "9"}, {"sampling.temperature", "0.7"}, {"sampling.top_p", "0.9"},
    {"sampling.top_k", "40"}, {"sampling.min_p", "0.05"}, {"sampling.repeat_penalty", "1.1"},
    {"sampling.presence_penalty", "-0.5"}, {"sampling.frequency_penalty", "0.25"},
    {"sampling.samples", "3"}, {"sampling.logprobs", "5"},
    {"sampling.seed", "9223372036854775807"}, {"sampling.stop", "~"},
    {"sampling.json_schema", NULL}, {"sampling.grammar", NULL},
    {"sampling.choices", " yes, maybe so ,no"},
    {"pipeline.ordered", "true"}, {"pipeline.memory_budget", "1.5G"},
    {"pipeline.max_failed", "12.5%"}, {"pipeline.limit", "12"}, {"pipeline.sample", "0.25"},
    {"pipeline.dry_run", "true"},
    {"pipeline.stages", "{\"lua\": \"s t.lua\", \"after\": \"engine\", \"workers\": 2, "
                        "\"config\": {\"k\": [1, \"x\\\"y\"], \"e\": {}}, \"columns\": [\"tags\"], "
                        "\"time_limit\": 1.5}"},
    {"output.dir", "-o"}, {"output.state_dir", "st"}, {"output.format", "parquet"},
    {"output.overwrite", "true"}, {"output.retry_failed", "true"}, {"output.shard_bytes", "500M"},
    {"output.compression", "snappy"}, {"output.columns", "a,b c"},
    {"output.include_image_bytes", "true"}, {"output.answer_columns", "true"}, {"output.shard_rows", "1"},
    {"batch.allow_local_images", "true"}, {"batch.ignore_model", "true"},
    {"output.errors_file", "errs.jsonl"},
    {"metrics.addr", "off"}, {"metrics.token_file", "/home/me/.sluice-token"},
    {"metrics.optional", "false"}, {"console.show", "100"},
    {"console.quiet", "true"}, {"console.verbose", "true"}, {"console.progress_every", "0.1"},
};

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* True for the settings a job with tasks cannot hold beside them (the
 * prompts the tasks replace) and for the tasks' own. */
static bool is_task_key(const char *key) { return strncmp(key, "tasks.", 6) == 0; }
static bool is_prompt_key(const char *key)
{
    return strcmp(key, "prompt.text") == 0 || strcmp(key, "prompt.column") == 0 ||
           strcmp(key, "prompt.turns") == 0;
}

/* Every setting set to its sample (but the prompts when `tasks`, the tasks
 * when not: they do not go together), printed, read back and printed again
 * to the same text; checks what was read back. */
static void round_trip(const char *dir, bool tasks)
{
    char schema[256], urls[256], json_schema[256], grammar[256], task_file[256];
    snprintf(schema, sizeof schema, "%s/schema.json", dir);
    snprintf(task_file, sizeof task_file, "%s/tasks.json", dir);
    snprintf(urls, sizeof urls, "%s/urls.txt", dir);
    snprintf(json_schema, sizeof json_schema, "%s/answer.schema.json", dir);
    snprintf(grammar, sizeof grammar, "%s/answer.gbnf", dir);

    size_t n = sl_config_option_count();
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    for (size_t i = 0; i < n; i++) {
        sl_config_option o;
        assert_true(sl_config_option_at(i, &o));
        const char *value = NULL;
        bool found = false;
        for (size_t j = 0; j < sizeof samples / sizeof *samples && !found; j++)
            if (strcmp(samples[j].key, o.key) == 0) {
                found = true;
                value = samples[j].value;
            }
        if (!found)
            fail_msg("no sample value for %s: add one to samples[]", o.key);
        if (tasks ? is_prompt_key(o.key) : is_task_key(o.key))
            continue;
        if (strcmp(o.key, "openai.response_format") == 0)
            value = schema;
        if (strcmp(o.key, "openai.endpoints_file") == 0)
            value = urls;
        if (strcmp(o.key, "tasks.file") == 0)
            value = task_file;
        if (strcmp(o.key, "sampling.json_schema") == 0)
            value = json_schema;
        if (strcmp(o.key, "sampling.grammar") == 0)
            value = grammar;
        if (sl_config_set(c, o.key, value) != SL_OK)
            fail_msg("%s: %s", o.key, sl_last_error());
    }
    assert_false(sl_config_option_at(n, &(sl_config_option){0}));
    assert_int_equal(sl_config_resolve(c), SL_OK);
    char *first = printed(c);

    sl_config *back = load(first);
    char *second = printed(back);
    assert_string_equal(first, second);
    const sl_caption_params *p = sl_config_params(c), *q = sl_config_params(back);
    assert_string_equal(q->prompt, p->prompt);
    assert_string_equal(q->system_prompt, "null"); /* quoted when printed: a string */
    assert_int_equal(q->n_stop, 1);
    assert_string_equal(q->stop[0], "~");
    assert_int_equal(q->openai.n_endpoints, 3);
    assert_string_equal(q->openai.endpoints[2], "http://b:2");
    assert_string_equal(q->openai.response_format, "{\"type\": \"json_object\"}");
    assert_string_equal(q->json_schema, "{\"type\": \"array\", \"items\": {\"enum\": [1, 2]}}");
    assert_string_equal(q->grammar, "root ::= \"yes\" | \"no\"\n");
    assert_true(q->sampling.temperature == 0.7f);
    assert_true(q->openai.cooldown_s == 1e-3);
    assert_int_equal(q->sampling.seed, 9223372036854775807ull);
    assert_int_equal(q->memory_budget, 3ull << 29);
    assert_true(q->max_failed == 0.125);
    assert_null(q->metrics_addr);
    assert_int_equal(q->input_shard_index, 2);
    assert_int_equal(q->input_shard_count, 9);
    assert_int_equal(q->n_gpus, 2);
    assert_int_equal(q->gpus[0], 4);
    assert_int_equal(q->replicas, 3); /* set: not counted from the gpus */
    assert_int_equal(q->image.background[1], 0xab);
    assert_string_equal(q->id_column, "image_id");
    assert_int_equal(q->n_columns, 2);
    assert_string_equal(q->columns[1], "b c");
    assert_int_equal(q->llama.n_lora, 1);
    assert_string_equal(q->llama.lora[0].path, "run:1/a b.gguf");
    assert_true(q->llama.lora[0].scale == 0.25f);
    assert_int_equal(q->llama.cache_type_k, SL_KV_Q8_0);
    assert_int_equal(q->llama.cache_type_v, SL_KV_IQ4_NL);
    assert_int_equal(q->n_stages, 1);
    assert_string_equal(q->stages[0].lua, "s t.lua");
    assert_string_equal(q->stages[0].config, "{\"k\":[1,\"x\\\"y\"],\"e\":{}}");
    assert_string_equal(q->stages[0].columns[0], "tags");
    assert_true(q->stages[0].time_limit_s == 1.5);
    assert_int_equal(memcmp(&p->sampling, &q->sampling, sizeof p->sampling), 0);
    assert_int_equal(p->image.max_edge, q->image.max_edge);
    assert_int_equal(p->image.max_input_pixels, q->image.max_input_pixels);
    assert_int_equal(memcmp(p->image.background, q->image.background, 3), 0);
    if (!tasks) {
        for (size_t j = 0; j < sizeof samples / sizeof *samples; j++)
            if (strcmp(samples[j].key, "prompt.text") == 0)
                assert_string_equal(q->prompt, samples[j].value);
        assert_string_equal(q->prompt_column, "q");
        assert_int_equal(q->turns, SL_TURNS_LAST);
        assert_int_equal(q->n_tasks, 0);
        assert_false(q->rows_per_task);
    } else {
        /* The tasks file's first, then --task's; each one's own settings
         * over the job's sampling. The prompt they replace prints as ~ (its
         * default text would be refused beside them when read back). */
        assert_non_null(strstr(first, "\nprompt:\n  text: ~"));
        assert_string_equal(q->prompt, "Describe this image in one sentence.");
        assert_null(q->prompt_column);
        assert_non_null(strstr(first, "\n  turns: ~"));
        assert_int_equal(q->turns, SL_TURNS_FIRST);
        assert_int_equal(q->n_tasks, 2);
        assert_true(q->rows_per_task);
        assert_string_equal(q->tasks[0].name, "t");
        assert_string_equal(q->tasks[0].system_prompt, "S");
        assert_string_equal(q->tasks[0].json_schema, "{\"type\":\"object\"}");
        assert_int_equal(q->tasks[0].sampling.max_tokens, 3);
        assert_int_equal(q->tasks[0].sampling.seed, 4);
        assert_true(q->tasks[0].sampling.temperature == 0.25f);
        assert_true(q->tasks[0].sampling.top_p == 0.9f);
        assert_string_equal(q->tasks[1].name, "a");
        assert_string_equal(q->tasks[1].prompt, "Describe {label}: \"{{x}}\"");
        assert_null(q->tasks[1].system_prompt);
        assert_int_equal(q->tasks[1].sampling.max_tokens, 7);
        assert_true(q->tasks[1].sampling.temperature == 0.7f);
    }
    free(first);
    free(second);
    sl_config_free(back);
    sl_config_free(c);
}

/* llama.lora's items: a path may hold ':', so an item is split on its last
 * ':' only when a decimal number follows; the number is the scale (1 when
 * none). A number out of a float's range, or nothing before it, is
 * refused naming the item. */
static void lora_items_split_on_the_last_colon_before_a_number(void **state)
{
    (void)state;
    static const struct {
        const char *item, *path;
        float scale;
    } ok[] = {
        {"a.gguf", "a.gguf", 1.0f},         {"a.gguf:0.5", "a.gguf", 0.5f},
        {"run:1/a.gguf", "run:1/a.gguf", 1.0f}, {"run:1/a.gguf:-2", "run:1/a.gguf", -2.0f},
        {"a.gguf:", "a.gguf:", 1.0f},       {"a:nan", "a:nan", 1.0f},
        {"a:b:1e-1", "a:b", 0.1f},          {"a:-", "a:-", 1.0f},
        {"C:\\x.gguf", "C:\\x.gguf", 1.0f},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        sl_config *c;
        assert_int_equal(sl_config_new(&c), SL_OK);
        assert_int_equal(sl_config_set_flag(c, "lora", ok[i].item), SL_OK);
        assert_int_equal(sl_config_resolve(c), SL_OK);
        const sl_llama_params *p = &sl_config_params(c)->llama;
        assert_int_equal(p->n_lora, 1);
        assert_string_equal(p->lora[0].path, ok[i].path);
        if (p->lora[0].scale != ok[i].scale)
            fail_msg("'%s': scale %g, want %g", ok[i].item, p->lora[0].scale, ok[i].scale);
        sl_config_free(c);
    }
    static const struct {
        const char *item, *message;
    } bad[] = {
        {"a.gguf:1e99", "--lora 'a.gguf:1e99': the scale after the last ':' is out of range"},
        {":0.5", "--lora ':0.5': no file before the scale (FILE:SCALE)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sl_config *c;
        assert_int_equal(sl_config_new(&c), SL_OK);
        assert_int_equal(sl_config_set_flag(c, "lora", bad[i].item), SL_ERR_INVALID_ARG);
        assert_string_equal(sl_last_error(), bad[i].message);
        sl_config_free(c);
    }
    /* A job file's item is named by its key and place; 8 at most. */
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    const char *yaml = "llama:\n  lora: [':1', a.gguf]\n";
    assert_int_equal(sl_config_load_text(c, yaml, strlen(yaml), "job.yaml"), SL_ERR_INVALID_ARG);
    assert_string_equal(sl_last_error(), "job.yaml:2:10: llama.lora ':1': no file before the "
                                         "scale (FILE:SCALE)");
    sl_config_free(c);
    assert_int_equal(sl_config_new(&c), SL_OK);
    for (int i = 0; i < SL_LLAMA_MAX_LORA; i++)
        assert_int_equal(sl_config_set_flag(c, "lora", "a.gguf"), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "lora", "a.gguf"), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--lora takes at most 8 items"));
    sl_config_free(c);
}

/* --columns splits on the commas outside a type's brackets, parentheses
 * and quotes after an item's ':' (a name may hold ':' and quotes); --choices
 * splits on every comma (a choice may hold a quote). A shape or a decimal
 * that is none is refused naming the flag and the item. */
static void column_items_keep_their_shapes_whole(void **state)
{
    (void)state;
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "columns",
                                        "exif:Model, m:{\"struct\": [[\"a,b\", \"int64\"], [\"c\", \"bool\"]]},a\"b,n,"
                                        "price:decimal(10,2), q:decimal(5, 2)"),
                     SL_OK);
    assert_int_equal(sl_config_set_flag(c, "choices", "12\",24\",27\""), SL_OK);
    const sl_caption_params *p = sl_config_params(c);
    assert_int_equal(p->n_columns, 6);
    assert_string_equal(p->columns[0], "exif:Model");
    assert_string_equal(p->columns[1], "m:{\"struct\": [[\"a,b\", \"int64\"], [\"c\", \"bool\"]]}");
    assert_string_equal(p->columns[2], "a\"b");
    assert_string_equal(p->columns[3], "n");
    assert_string_equal(p->columns[4], "price:decimal(10,2)"); /* was "price:decimal(10" and "2)" */
    assert_string_equal(p->columns[5], "q:decimal(5, 2)");
    assert_int_equal(p->n_choices, 3);
    assert_string_equal(p->choices[2], "27\"");
    sl_config_free(c);
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "columns", "n:{\"list\": \"int32\"}"), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--columns: column 'n:{\"list\": \"int32\"}'"));
    sl_config_free(c);
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "columns", "a,price:decimal(39,2)"), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--columns: column 'price:decimal(39,2)': decimal(P,S) takes a "
                                            "precision P of 1..38 digits and a scale S of 0..P"));
    sl_config_free(c);
    /* an unclosed '(' took the rest of the list as one name, in silence */
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "columns", "x,price:decimal(10,2,y"), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--columns: 'price:decimal(10,2,y' opens a bracket or "
                                            "parenthesis after its ':' that is never closed"));
    sl_config_free(c);
}

/* One input column declared twice took the last type in silence; it is
 * refused naming both entries, across --columns flags of one layer too. A
 * later layer's list replaces the earlier one's, so it repeats no name. */
static void an_input_column_is_declared_once(void **state)
{
    (void)state;
    static const struct {
        const char *first, *second, *want;
    } cases[] = {
        {"a:int64,a:string", NULL, "--columns: the columns name 'a' twice ('a:int64', 'a:string')"},
        {"a", "b,a:decimal(5, 2)", "--columns: the columns name 'a' twice ('a', 'a:decimal(5, 2)')"},
        {"exif:Model,exif:Model:int64", NULL, "name 'exif:Model' twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_config *c;
        assert_int_equal(sl_config_new(&c), SL_OK);
        sl_status st = sl_config_set_flag(c, "columns", cases[i].first);
        if (cases[i].second) {
            assert_int_equal(st, SL_OK);
            st = sl_config_set_flag(c, "columns", cases[i].second);
        }
        assert_int_equal(st, SL_ERR_INVALID_ARG);
        if (!strstr(sl_last_error(), cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, sl_last_error(), cases[i].want);
        sl_config_free(c);
    }
    /* names that differ only after a shared prefix, or a name holding ':', are two columns */
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "columns", "a,ab:int64,a:b,exif:Model"), SL_OK);
    assert_int_equal(sl_config_params(c)->n_columns, 4);
    sl_config_free(c);
    /* a job file's columns, then the command line's: replaced, not repeated */
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set(c, "output.columns", "a:int64"), SL_OK);
    sl_config_begin_layer(c);
    assert_int_equal(sl_config_set_flag(c, "columns", "a:string"), SL_OK);
    assert_int_equal(sl_config_params(c)->n_columns, 1);
    assert_string_equal(sl_config_params(c)->columns[0], "a:string");
    sl_config_free(c);
}

/* The cache types' names are sl_kv_type's, in its order. */
static void cache_types_are_the_engines_names(void **state)
{
    (void)state;
    for (int t = 0; t < SL_KV_TYPE_COUNT; t++) {
        sl_config *c;
        assert_int_equal(sl_config_new(&c), SL_OK);
        assert_int_equal(sl_config_set(c, "llama.cache_type_k", sl_kv_type_name(t)), SL_OK);
        assert_int_equal(sl_config_set_flag(c, "cache-type-v", sl_kv_type_name(t)), SL_OK);
        assert_int_equal(sl_config_resolve(c), SL_OK);
        assert_int_equal(sl_config_params(c)->llama.cache_type_k, t);
        assert_int_equal(sl_config_params(c)->llama.cache_type_v, t);
        sl_config_free(c);
    }
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_params(c)->llama.cache_type_k, SL_KV_F16);
    assert_int_equal(sl_config_set(c, "llama.cache_type_v", "q8"), SL_ERR_INVALID_ARG);
    assert_string_equal(sl_last_error(), "llama.cache_type_v expects one of f16, f32, bf16, "
                                         "q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl; got 'q8'");
    sl_config_free(c);
}

/* Every setting, set to its sample, survives print -> load -> print, and
 * the parameters read back are those set: in two jobs, as the prompts and
 * the tasks that replace them are not given together. */
static void every_setting_round_trips(void **state)
{
    char dir[] = "/tmp/test_jobfile_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char schema[256], urls[256], json_schema[256], grammar[256], tasks[256];
    snprintf(schema, sizeof schema, "%s/schema.json", dir);
    snprintf(tasks, sizeof tasks, "%s/tasks.json", dir);
    write_file(tasks, "{\"t\": {\"prompt\": \"Tags?\", \"system\": \"S\", \"sampling\": "
                      "{\"max_tokens\": 3, \"seed\": 4}, \"json_schema\": {\"type\": \"object\"}}}");
    snprintf(urls, sizeof urls, "%s/urls.txt", dir);
    snprintf(json_schema, sizeof json_schema, "%s/answer.schema.json", dir);
    snprintf(grammar, sizeof grammar, "%s/answer.gbnf", dir);
    write_file(schema, "{\"type\": \"json_object\"}");
    write_file(json_schema, "{\"type\": \"array\", \"items\": {\"enum\": [1, 2]}}");
    write_file(grammar, "root ::= \"yes\" | \"no\"\n");
    write_file(urls, "# servers\nhttp://a:1\n\n  http://b:2  \n");
    round_trip(dir, false);
    round_trip(dir, true);

    sl_config *back;
    char *first, *second;
    /* The defaults round-trip too (null where 0 means "the default"). */
    sl_config *d;
    assert_int_equal(sl_config_new(&d), SL_OK);
    assert_int_equal(sl_config_resolve(d), SL_OK);
    first = printed(d);
    back = load(first);
    second = printed(back);
    assert_string_equal(first, second);
    assert_non_null(strstr(first, "  memory_budget: ~"));
    assert_non_null(strstr(first, "  adaptive_max: ~"));
    assert_int_equal(sl_config_params(back)->input_shard_count, 0);
    assert_int_equal(sl_config_params(back)->input_shard_size, 0);
    assert_true(sl_config_params(back)->metrics_optional);
    free(first);
    free(second);
    sl_config_free(back);
    sl_config_free(d);
    unlink(schema);
    unlink(urls);
    unlink(tasks);
    unlink(json_schema);
    unlink(grammar);
    rmdir(dir);
}

/* A prompt beside tasks would not be used (each task brings its own):
 * refused when the settings are resolved, naming both and what to do, from
 * a job file, flags, or one over the other. ~ and the system prompt (every
 * task's default) are fine. */
static void a_prompt_beside_tasks_is_refused(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *flag, *value, *message;
    } cases[] = {
        {"prompt:\n  text: hi\ntasks:\n  prompts: [a=x]\n", NULL, NULL,
         "job.yaml:2:9: prompt.text is not used beside tasks (tasks.prompts at job.yaml:4:13): "
         "each task brings its own prompt. Drop prompt.text, or make it a task of its own "
         "(NAME=PROMPT)"},
        {"prompt: {column: q}\ntasks: {prompts: [a=x]}\n", NULL, NULL,
         "job.yaml:1:18: prompt.column is not used beside tasks (tasks.prompts at job.yaml:2:19): "
         "each task brings its own prompt. Drop prompt.column, or name the row's columns in the "
         "tasks' prompts ({NAME})"},
        {"", "prompt", "hi", "--prompt is not used beside tasks (--task): each task brings its "
                             "own prompt. Drop --prompt, or make it a task"},
        {"tasks: {prompts: [a=x]}\n", "prompt", "hi",
         "--prompt is not used beside tasks (tasks.prompts at job.yaml:1:19)"},
        {"prompt: {text: hi}\n", "task", "b=y",
         "job.yaml:1:16: prompt.text is not used beside tasks (--task)"},
        {"prompt: {column: q}\n", "prompt-column", "r", "--prompt-column is not used beside"},
        {"prompt: {turns: last}\ntasks: {prompts: [a=x]}\n", NULL, NULL,
         "job.yaml:1:17: prompt.turns is not used beside tasks (tasks.prompts at job.yaml:2:19): "
         "each task brings its own prompt. Drop prompt.turns, or answer the conversations in a "
         "job without tasks"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sl_config *c;
        assert_int_equal(sl_config_new(&c), SL_OK);
        assert_int_equal(sl_config_load_text(c, cases[i].yaml, strlen(cases[i].yaml), "job.yaml"),
                         SL_OK);
        sl_config_begin_layer(c);
        if (cases[i].flag)
            assert_int_equal(sl_config_set_flag(c, cases[i].flag, cases[i].value), SL_OK);
        if (i == 2)
            assert_int_equal(sl_config_set_flag(c, "task", "a=x"), SL_OK);
        if (i == 5)
            assert_int_equal(sl_config_set_flag(c, "task", "a=x"), SL_OK);
        assert_int_equal(sl_config_resolve(c), SL_ERR_INVALID_ARG);
        if (!strstr(sl_last_error(), cases[i].message))
            fail_msg("case %zu: got '%s', want '%s'", i, sl_last_error(), cases[i].message);
        sl_config_free(c);
    }
    /* ~ is the default: not a prompt given; the system prompt applies. */
    sl_config *c = load("prompt: {text: ~, column: ~, system: S}\ntasks: {prompts: [a=x]}\n");
    assert_int_equal(sl_config_params(c)->n_tasks, 1);
    assert_string_equal(sl_config_params(c)->system_prompt, "S");
    sl_config_free(c);
}

/* pipeline.stages: mappings in a job file (config any YAML, typed as YAML
 * reads it), the short form, a JSON object on the command line; each kind
 * of mistake named with its line. */
static void stages_in_a_job_file(void **state)
{
    (void)state;
    sl_config *c = load("pipeline:\n"
                        "  stages:\n"
                        "    - lua: dedup.lua\n"
                        "      workers: 1\n"
                        "      time_limit: 2.5\n"
                        "      batch_size: 8\n"
                        "      config: {max_distance: 4, words: [a, 'b'], f: 1.5, on: true,\n"
                        "               text: '12', none: ~}\n"
                        "    - tags.so@engine\n"
                        "    - {plugin: x.so, after: read, name: first, columns: [a, b]}\n");
    const sl_caption_params *p = sl_config_params(c);
    assert_int_equal(p->n_stages, 3);
    assert_string_equal(p->stages[0].lua, "dedup.lua");
    assert_null(p->stages[0].plugin);
    assert_null(p->stages[0].after); /* the default place: after decode */
    assert_int_equal(p->stages[0].workers, 1);
    assert_int_equal(p->stages[0].batch_size, 8);
    assert_true(p->stages[0].time_limit_s == 2.5);
    assert_true(p->stages[1].time_limit_s == 0); /* the default */
    assert_string_equal(p->stages[0].config, "{\"max_distance\":4,\"words\":[\"a\",\"b\"],"
                                             "\"f\":1.5,\"on\":true,\"text\":\"12\",\"none\":null}");
    assert_string_equal(p->stages[1].plugin, "tags.so");
    assert_string_equal(p->stages[1].after, "engine");
    assert_null(p->stages[1].config);
    assert_string_equal(p->stages[2].name, "first");
    assert_string_equal(p->stages[2].after, "read");
    assert_int_equal(p->stages[2].n_columns, 2);
    assert_string_equal(p->stages[2].columns[1], "b");

    /* A flag replaces the file's list; several flags build the new one. */
    sl_config_begin_layer(c);
    assert_int_equal(sl_config_set_flag(c, "stage", "{\"lua\": \"a.lua\", \"after\": \"engine\"}"),
                     SL_OK);
    assert_int_equal(sl_config_set_flag(c, "stage", "b.lua@read"), SL_OK);
    p = sl_config_params(c);
    assert_int_equal(p->n_stages, 2);
    assert_string_equal(p->stages[0].lua, "a.lua");
    assert_string_equal(p->stages[1].lua, "b.lua");
    assert_string_equal(p->stages[1].after, "read");
    sl_config_free(c);
    c = load("pipeline:\n  stages:\n    - {lua: a.lua, time_limit: 0}\n");
    assert_true(sl_config_params(c)->stages[0].time_limit_s < 0); /* none */
    sl_config_free(c);

    static const struct {
        const char *yaml, *message;
    } bad[] = {
        {"pipeline:\n  stages:\n    - lua: a.lua\n      worker: 2\n",
         "job.yaml:3:7: pipeline.stages: a stage has no key 'worker'; did you mean 'workers'? "
         "its keys are name,"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, plugin: b.so}\n",
         "job.yaml:3:7: pipeline.stages: a stage is a Lua script"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, after: write}\n",
         "not 'write'"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, workers: 0}\n",
         "workers is an integer from 1 to 1024, got 0"},
        /* what was given, and a number in quotes told so */
        {"pipeline:\n  stages:\n    - {lua: a.lua, workers: \"2\"}\n",
         "workers is an integer from 1 to 1024, got \"2\" (a string: write the number without "
         "quotes)"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, batch_size: 1e3}\n",
         "batch_size is an integer from 1 to 65536, got 1000.0"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, config: [1, 2]}\n",
         "config is a mapping"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, columns: [1]}\n", "columns are names"},
        /* the last type won in silence */
        {"pipeline:\n  stages:\n    - {lua: a.lua, columns: [x, y, \"x:int64\"]}\n",
         "the stage's columns name 'x' twice ('x', 'x:int64')"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, lua: b.lua}\n", "'lua' is given twice"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, config: {a: &x 1}}\n", "anchors"},
        {"pipeline:\n  stages: {lua: a.lua}\n", "pipeline.stages takes a list"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, time_limit: -1}\n",
         "time_limit is seconds, 0 (none) to 86400"},
        {"pipeline:\n  stages:\n    - {lua: a.lua, time_limit: '5'}\n",
         "time_limit is seconds, 0 (none) to 86400, got \"5\" (a string"},
        {"pipeline:\n  stages:\n    - {plugin: a.so, time_limit: 5}\n",
         "time_limit is for Lua stages"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(sl_config_new(&c), SL_OK);
        assert_int_equal(sl_config_load_text(c, bad[i].yaml, strlen(bad[i].yaml), "job.yaml"),
                         SL_ERR_INVALID_ARG);
        if (!strstr(sl_last_error(), bad[i].message))
            fail_msg("case %zu: got '%s', want '%s'", i, sl_last_error(), bad[i].message);
        sl_config_free(c);
    }
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "stage", "{\"lua\": "), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--stage: a stage given as text must be a JSON"));
    /* No file: said so, with what a stage looks like (not "plugin"). */
    static const char *const empty[][2] = {{"", "--stage: the stage spec is empty"},
                                           {"@engine", "--stage: the stage file name is empty"}};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(sl_config_set_flag(c, "stage", empty[i][0]), SL_ERR_INVALID_ARG);
        if (!strstr(sl_last_error(), empty[i][1]) ||
            !strstr(sl_last_error(), "FILE.lua or FILE.so[@read|@decode|@engine]") ||
            strstr(sl_last_error(), "plugin is"))
            fail_msg("'%s': %s", empty[i][0], sl_last_error());
    }
    /* A file name that is not UTF-8 (a Latin-1 'é'): a stage is kept as
     * JSON, which cannot hold it; said so, not "out of memory". */
    assert_int_equal(sl_config_set_flag(c, "stage", "caf\xe9.lua@decode"), SL_ERR_INVALID_ARG);
    if (!strstr(sl_last_error(), "--stage: the stage file name 'caf\xe9.lua@decode' is not UTF-8"))
        fail_msg("a Latin-1 stage file name: %s", sl_last_error());
    sl_config_free(c);
}

static void printing_refuses_what_yaml_cannot_hold(void **state)
{
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set(c, "input.paths", "bad\xff.jpg"), SL_OK);
    FILE *fp = fopen("/dev/null", "w");
    assert_int_equal(sl_config_write_yaml(c, fp), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "input.paths is not UTF-8"));
    fclose(fp);
    sl_config_free(c);
}

static void files_too_large_or_missing(void **state)
{
    sl_config *c;
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_load_file(c, "/nonexistent/job.yaml"), SL_ERR_NOT_FOUND);
    assert_non_null(strstr(sl_last_error(), "job file '/nonexistent/job.yaml'"));
    size_t big = SL_CONFIG_MAX_FILE_BYTES + 1;
    char *text = malloc(big);
    memset(text, '#', big);
    assert_int_equal(sl_config_load_text(c, text, big, "big.yaml"), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "big.yaml is larger than"));
    free(text);
    sl_config_free(c);
}

/* Each allocation of a load failing in turn: an error, never a crash or a
 * leak (ASan), and a load that got through gives the full settings. */
static void allocation_failures(void **state)
{
    const char *yaml = "input: {paths: [a, b, c]}\nllama: {model: m, parallel: 3}\n"
                       "sampling: {stop: [x, y]}\noutput: {dir: o}\n";
    for (long n = 0;; n++) {
        sl_config *c = NULL;
        sl_alloc_fail_after(n);
        sl_status st = sl_config_new(&c);
        if (st == SL_OK)
            st = sl_config_load_text(c, yaml, strlen(yaml), "job.yaml");
        if (st == SL_OK)
            st = sl_config_resolve(c);
        sl_alloc_fail_after(-1);
        if (st == SL_OK) {
            assert_int_equal(sl_config_params(c)->n_inputs, 3);
            assert_int_equal(sl_config_params(c)->n_stop, 2);
            sl_config_free(c);
            assert_true(n > 5);
            break;
        }
        assert_int_equal(st, SL_ERR_NOMEM);
        sl_config_free(c);
    }
}

/* sl_config_explain(): a flag the file set becomes its key at its line; a
 * flag given as a flag, a word that only contains a flag's letters and a
 * flag of another program stay; what does not fit is cut, terminated. */
static void messages_name_settings_as_they_were_given(void **state)
{
    (void)state;
    sl_config *c = load("output:\n  dir: o\nllama.image_max_tokens: 100\n");
    assert_int_equal(sl_config_set_flag(c, "image-min-tokens", "300"), SL_OK);
    char buf[256];
    sl_config_explain(c, "--image-min-tokens 300 is above --image-max-tokens 100 (-o, "
                         "non--o, --image-max-tokens-x, vLLM's --max-model-len)", buf,
                      sizeof buf);
    assert_string_equal(buf, "job.yaml:3:25: --image-min-tokens 300 is above "
                             "llama.image_max_tokens 100 (output.dir, non--o, "
                             "--image-max-tokens-x, vLLM's --max-model-len)");
    /* a default named beside a flag keeps the flag's style */
    sl_config_explain(c, "--image-min-tokens needs --format parquet", buf, sizeof buf);
    assert_string_equal(buf, "--image-min-tokens needs --format parquet");
    sl_config_explain(c, "--include-image-bytes needs --format parquet", buf, sizeof buf);
    assert_string_equal(buf, "output.include_image_bytes needs output.format parquet");
    sl_config_explain(c, "-o is a file", buf, 12);
    assert_string_equal(buf, "job.yaml:2:");
    sl_config_free(c);
    /* flags alone: the message as it is */
    assert_int_equal(sl_config_new(&c), SL_OK);
    assert_int_equal(sl_config_set_flag(c, "output", "o"), SL_OK);
    sl_config_explain(c, "--include-image-bytes needs --format parquet (-o)", buf, sizeof buf);
    assert_string_equal(buf, "--include-image-bytes needs --format parquet (-o)");
    sl_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_valid_file_sets_the_parameters),
        cmocka_unit_test(a_dotted_key_is_the_nested_one),
        cmocka_unit_test(defaults_and_empty_files),
        cmocka_unit_test(errors_name_the_line_and_what_is_allowed),
        cmocka_unit_test(flags_override_the_file),
        cmocka_unit_test(every_setting_round_trips),
        cmocka_unit_test(lora_items_split_on_the_last_colon_before_a_number),
        cmocka_unit_test(column_items_keep_their_shapes_whole),
        cmocka_unit_test(an_input_column_is_declared_once),
        cmocka_unit_test(cache_types_are_the_engines_names),
        cmocka_unit_test(a_prompt_beside_tasks_is_refused),
        cmocka_unit_test(stages_in_a_job_file),
        cmocka_unit_test(printing_refuses_what_yaml_cannot_hold),
        cmocka_unit_test(files_too_large_or_missing),
        cmocka_unit_test(allocation_failures),
        cmocka_unit_test(messages_name_settings_as_they_were_given),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
