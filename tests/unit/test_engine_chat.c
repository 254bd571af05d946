/* Unit tests: conversations (sl_request.messages) in the llama engine,
 * through the public engine API, on the generated tiny model (models/tiny,
 * random weights): text-only requests that never run the vision encoder,
 * several images in one sequence, several turns rendered with the model's
 * chat template, the answer as a chat.completion object, the requests
 * refused at submit, and an engine opened without a vision projector (a
 * text model for text-only requests). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/fault.h"
#include "llama.h"
#include "sluice/sluice.h"
#include "test_chat.h"
#include "test_util.h"

static tu_tiny tiny;
static sl_image *img_a, *img_b, *img_big;

static int setup(void **state)
{
    tiny = tu_tiny_files();
    sl_log_set_level(SL_LOG_ERROR);
    img_a = tc_gradient(96, 64, 0);
    img_b = tc_gradient(64, 80, 1);
    img_big = tc_gradient(384, 384, 0);
    return img_a && img_b && img_big ? 0 : -1;
}

static int teardown(void **state)
{
    sl_image_free(img_a);
    sl_image_free(img_b);
    sl_image_free(img_big);
    return 0;
}

/* The sampler the engines open with (the sizing test runs both). */
static sl_llama_sampler sampler = SL_SAMPLER_AUTO;

static sl_engine *open_engine_with(const char *projector, int n_parallel, int n_ctx_per_seq,
                                   int encode_ahead)
{
    sl_llama_params p = tu_tiny_llama(&tiny, n_parallel);
    p.sampler = sampler;
    p.mmproj_path = projector;
    p.n_ctx_per_seq = n_ctx_per_seq;
    p.encode_ahead = encode_ahead;
    return tu_open_llama(&p);
}

static sl_engine *open_engine(int n_parallel, int n_ctx_per_seq, int encode_ahead)
{
    return open_engine_with(tiny.mmproj, n_parallel, n_ctx_per_seq, encode_ahead);
}

/* Waits for the one completion of `e` still to come. */
static sl_completion next_completion(sl_engine *e)
{
    sl_completion c;
    size_t n = 0;
    while (n == 0)
        assert_int_equal(sl_engine_poll(e, &c, 1, 1000, &n), SL_OK);
    return c;
}

static sl_request conversation(const char *id, const sl_message *msgs, int n,
                               const sl_image *const *images, int n_images, int max_tokens)
{
    sl_request r = {.id = id, .messages = msgs, .n_messages = n, .images = images,
                    .n_images = n_images, .sampling = sl_sampling_default()};
    r.sampling.max_tokens = max_tokens;
    return r;
}

/* `text` as the tiny model's tokens (with its BOS, special tokens parsed). */
static int text_tokens(const char *text)
{
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *m = llama_model_load_from_file(tiny.model, mp);
    assert_non_null(m);
    llama_token toks[4096];
    int32_t nt = llama_tokenize(llama_model_get_vocab(m), text, (int32_t)strlen(text), toks, 4096,
                                true, true);
    assert_true(nt > 0);
    llama_model_free(m);
    return nt;
}

/* The rendering llama.cpp gives these messages with template `tmpl` (NULL:
 * the model's own), as tokens: what a text-only conversation must feed the
 * model. */
static int template_tokens_with(const char *tmpl, const llama_chat_message *msgs, size_t n)
{
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *m = llama_model_load_from_file(tiny.model, mp);
    assert_non_null(m);
    if (!tmpl)
        tmpl = llama_model_chat_template(m, NULL);
    assert_non_null(tmpl);
    char buf[8192];
    int32_t len = llama_chat_apply_template(tmpl, msgs, n, true, buf, sizeof buf);
    assert_true(len > 0 && len < (int32_t)sizeof buf);
    buf[len] = '\0';
    llama_model_free(m);
    return text_tokens(buf);
}

static int template_tokens(const llama_chat_message *msgs, size_t n)
{
    return template_tokens_with(NULL, msgs, n);
}

/* The prompt tokens of a one-turn text request on an engine opened with
 * chat template `tmpl`; SL_ERR_* when the engine refuses the template. */
static char last_default_system[256]; /* sl_engine_default_system of tokens_with_template's engine */

static sl_status tokens_with_template(const char *tmpl, int *tokens)
{
    sl_llama_params p = tu_tiny_llama(&tiny, 1);
    p.mmproj_path = NULL;
    p.chat_template = tmpl;
    sl_engine *e = NULL;
    sl_status st = sl_engine_open_llama(&p, &e);
    if (st != SL_OK)
        return st;
    sl_content_part u[] = {{"Name a colour."}};
    sl_message msgs[] = {{"user", u, 1}};
    sl_request q = conversation("t", msgs, 1, NULL, 0, 2);
    sl_result r;
    assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
    *tokens = r.prompt_tokens;
    sl_result_clear(&r);
    assert_non_null(sl_engine_default_system(e));
    snprintf(last_default_system, sizeof last_default_system, "%s", sl_engine_default_system(e));
    sl_engine_free(e);
    return SL_OK;
}

/* --chat-template: a name llama.cpp knows renders with that format, a file
 * holding a template it recognises likewise, "plain" the User:/Assistant:
 * prompt; an unknown name or an unrecognised file is refused, named. */
static void a_chosen_chat_template_renders_the_prompts(void **state)
{
    llama_chat_message want = {"user", "Name a colour."};
    int own, chatml, llama3, plain, from_file;
    assert_int_equal(tokens_with_template(NULL, &own), SL_OK);
    assert_int_equal(own, template_tokens(&want, 1));
    assert_int_equal(tokens_with_template("chatml", &chatml), SL_OK);
    assert_int_equal(chatml, template_tokens_with("chatml", &want, 1));
    assert_int_equal(tokens_with_template("llama3", &llama3), SL_OK);
    assert_int_equal(llama3, template_tokens_with("llama3", &want, 1));
    assert_true(chatml != llama3 && chatml != own); /* the choices render differently */
    assert_int_equal(tokens_with_template("plain", &plain), SL_OK);
    assert_int_equal(plain, text_tokens("User: Name a colour.\nAssistant:"));

    char path[] = "/tmp/sluice-template-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    fputs("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
          "%}{{ '<|im_start|>assistant\n' }}{% endif %}", fp);
    fclose(fp);
    assert_int_equal(tokens_with_template(path, &from_file), SL_OK);
    assert_int_equal(from_file, chatml);

    fp = fopen(path, "w");
    fputs("{{ messages[0]['content'] }} -- a template in no format llama.cpp knows", fp);
    fclose(fp);
    int unused;
    assert_int_equal(tokens_with_template(path, &unused), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), path));
    assert_non_null(strstr(sl_last_error(), "does not recognise"));
    unlink(path);
    assert_int_equal(tokens_with_template("chatmlx", &unused), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'chatmlx'"));
    assert_non_null(strstr(sl_last_error(), "llama3")); /* the names it could be */
}

/* A ChatML template that writes its own system message where a
 * conversation has none (Qwen2.5's: the message in a Jinja string, beside
 * a branch that writes the conversation's own) renders it first, as its
 * Jinja would; written with escapes ("\\n") as well as with line breaks. */
static void a_template_system_message_is_the_default(void **state)
{
    static const char *const forms[2] = {"\n", "\\n"};
    llama_chat_message want[] = {
        {"system", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."},
        {"user", "Name a colour."}};
    int chatml, with_system = template_tokens_with("chatml", want, 2);
    assert_int_equal(tokens_with_template("chatml", &chatml), SL_OK);
    assert_string_equal(last_default_system, ""); /* a name has no text to take one from */
    assert_true(with_system > chatml + 10);
    for (int f = 0; f < 2; f++) {
        const char *nl = forms[f];
        char path[] = "/tmp/sluice-template-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        FILE *fp = fdopen(fd, "w");
        fprintf(fp,
                "{%%- if tools %%}{{- '<|im_start|>system%s' }}{%%- if messages[0]['role'] == "
                "'system' %%}{{- messages[0]['content'] }}{%%- else %%}{{- 'You are Qwen.' }}"
                "{%%- endif %%}{%%- else %%}{%%- if messages[0]['role'] == 'system' %%}"
                "{{- '<|im_start|>system%s' + messages[0]['content'] + '<|im_end|>%s' }}"
                "{%%- else %%}{{- '<|im_start|>system%sYou are Qwen, created by Alibaba Cloud. "
                "You are a helpful assistant.<|im_end|>%s' }}{%%- endif %%}{%%- endif %%}"
                "{%% for message in messages %%}{{'<|im_start|>' + message['role'] + '%s' + "
                "message['content'] + '<|im_end|>' + '%s'}}{%% endfor %%}{%% if "
                "add_generation_prompt %%}{{ '<|im_start|>assistant%s' }}{%% endif %%}",
                nl, nl, nl, nl, nl, nl, nl, nl);
        fclose(fp);
        int got;
        assert_int_equal(tokens_with_template(path, &got), SL_OK);
        unlink(path);
        assert_int_equal(got, with_system);
        /* what the resume ledger records (job_check_default_system) */
        assert_string_equal(last_default_system, want[0].content);
    }
}

/* A text-only conversation answers and the vision encoder never runs; with
 * several turns (system, user, assistant, user) the prompt is exactly the
 * model's chat template over all of them with a generation prompt. */
static void text_only_turns_render_the_template_and_encode_nothing(void **state)
{
    sl_engine *e = open_engine(2, 512, -1);
    sl_content_part sys[] = {{"You answer in one short line."}};
    sl_content_part u1[] = {{"Name a colour."}};
    sl_content_part a1[] = {{"Blue."}};
    sl_content_part u2[] = {{"Another one,"}, {"please."}};
    sl_message msgs[] = {{"system", sys, 1}, {"user", u1, 1}, {"assistant", a1, 1},
                         {"user", u2, 2}};
    sl_request q = conversation("turns", msgs, 4, NULL, 0, 12);
    sl_result r;
    assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
    assert_non_null(r.text);
    assert_true(r.generated_tokens > 0);
    assert_null(r.response_json); /* not asked for */
    /* Text parts join with a line break, as llama-server joins them. */
    llama_chat_message want[] = {{"system", "You answer in one short line."},
                                 {"user", "Name a colour."},
                                 {"assistant", "Blue."},
                                 {"user", "Another one,\nplease."}};
    assert_int_equal(r.prompt_tokens, template_tokens(want, 4));
    sl_result_clear(&r);

    sl_request one = conversation("one", msgs + 1, 1, NULL, 0, 12);
    assert_int_equal(sl_engine_generate(e, &one, &r), SL_OK);
    assert_int_equal(r.prompt_tokens, template_tokens(want + 1, 1));
    sl_result_clear(&r);

    sl_engine_stats st;
    sl_engine_stats_get(e, &st);
    assert_int_equal(st.images_encoded, 0);
    assert_int_equal(st.phase_n[SL_PHASE_ENCODE], 0);
    assert_int_equal(st.image_decode_calls, 0);
    assert_true(st.encode_s == 0.0);
    sl_engine_free(e);
}

/* A conversation of one user message, the image then the prompt, is the
 * request of a prompt and an image: the same rendering, so the same greedy
 * answer and positions (with a system message too). */
static void one_image_message_answers_as_a_prompt_and_image(void **state)
{
    for (int with_system = 0; with_system <= 1; with_system++) {
        sl_engine *e = open_engine(1, 0, 0);
        sl_request plain = {.id = "plain", .prompt = "Describe this image in one sentence.",
                            .image = img_a, .sampling = sl_sampling_default()};
        plain.sampling.max_tokens = 16;
        if (with_system)
            plain.system_prompt = "You are a careful annotator.";
        sl_result want;
        assert_int_equal(sl_engine_generate(e, &plain, &want), SL_OK);

        sl_content_part sys[] = {{"You are a careful annotator."}};
        sl_content_part user[] = {{NULL}, {"Describe this image in one sentence."}};
        sl_message msgs[] = {{"system", sys, 1}, {"user", user, 2}};
        const sl_image *images[] = {img_a};
        sl_request q = conversation("conv", msgs + !with_system, 1 + with_system, images, 1, 16);
        sl_result got;
        assert_int_equal(sl_engine_generate(e, &q, &got), SL_OK);
        assert_string_equal(got.text, want.text);
        assert_int_equal(got.prompt_tokens, want.prompt_tokens);
        assert_int_equal(got.generated_tokens, want.generated_tokens);
        sl_engine_stats st;
        sl_engine_stats_get(e, &st);
        /* The image's chunks were encoded (the conversation, alike, goes
         * on in the first request's kept sequence: its image is not
         * encoded again). */
        assert_true(st.images_encoded >= 1);
        assert_int_equal(got.cached_tokens, got.prompt_tokens - 1);
        sl_result_clear(&want);
        sl_result_clear(&got);
        sl_engine_free(e);
    }
}

/* Image chunks the vision encoder ran for this request alone. */
static uint64_t encodes_of(const sl_image *im, int *n_pos)
{
    sl_engine *e = open_engine(1, 0, 0);
    sl_content_part user[] = {{NULL}, {"What is this?"}};
    sl_message msg = {"user", user, 2};
    sl_request q = conversation("alone", &msg, 1, &im, 1, 4);
    sl_result r;
    assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
    *n_pos = r.prompt_tokens;
    sl_result_clear(&r);
    sl_engine_stats st;
    sl_engine_stats_get(e, &st);
    sl_engine_free(e);
    return st.images_encoded;
}

/* Two images in one request, in one sequence: both are encoded (the
 * encoder counters hold both images' chunks) and prefilled in order,
 * whether they are encoded at admission or ahead of it (the same answer);
 * their order matters to the prompt. */
static void two_images_in_one_sequence_are_both_encoded(void **state)
{
    int pos_a, pos_b;
    uint64_t enc_a = encodes_of(img_a, &pos_a), enc_b = encodes_of(img_b, &pos_b);
    assert_true(enc_a > 0 && enc_b > 0);
    sl_content_part user[] = {{"First:"}, {NULL}, {"Second:"}, {NULL}, {"Which is brighter?"}};
    sl_message msg = {"user", user, 5};
    const sl_image *images[] = {img_a, img_b};
    char *answers[2] = {NULL, NULL};
    int n_pos = 0;
    for (int ahead = 0; ahead <= 1; ahead++) {
        sl_engine *e = open_engine(2, 1024, ahead ? 2 : 0);
        sl_request q = conversation("two", &msg, 1, images, 2, 12);
        q.want_response_json = true;
        sl_result r;
        assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
        sl_engine_stats st;
        sl_engine_stats_get(e, &st);
        assert_int_equal(st.images_encoded, enc_a + enc_b);
        /* Each image's positions and more text than either request alone. */
        assert_true(r.prompt_tokens > pos_a + pos_b - 40);
        assert_true(r.prompt_tokens > pos_a && r.prompt_tokens > pos_b);
        if (ahead)
            assert_int_equal(r.prompt_tokens, n_pos);
        n_pos = r.prompt_tokens;
        answers[ahead] = r.text;
        r.text = NULL;
        sl_result_clear(&r);
        sl_engine_free(e);
    }
    assert_string_equal(answers[0], answers[1]);
    sl_free(answers[0]);
    sl_free(answers[1]);
}

/* A prompt with several images (a video's frames: n_images without
 * messages, a text before each) answers as the conversation it stands for,
 * with or without a system prompt; as tasks, each task answers as its own
 * prompt would and the images are encoded once for all of them. Mixing one
 * image with several, too many images and texts that are not UTF-8 are
 * refused at submit. */
static void a_prompt_with_images_answers_as_its_conversation(void **state)
{
    int pos_a, pos_b;
    uint64_t enc_two = encodes_of(img_a, &pos_a) + encodes_of(img_b, &pos_b);
    const sl_image *images[] = {img_a, img_b};
    const char *texts[] = {"Frame at 0.5 s:", "Frame at 1.5 s:"};
    sl_engine *e = open_engine(2, 1024, 0);
    for (int with_system = 0; with_system <= 1; with_system++) {
        sl_content_part sys[] = {{"You are a careful annotator."}};
        sl_content_part user[] = {{texts[0]}, {NULL}, {texts[1]}, {NULL}, {"What happens?"}};
        sl_message msgs[] = {{"system", sys, 1}, {"user", user, 5}};
        sl_request conv = conversation("conv", msgs + !with_system, 1 + with_system, images, 2, 12);
        sl_result want;
        assert_int_equal(sl_engine_generate(e, &conv, &want), SL_OK);

        sl_request q = {.id = "frames", .prompt = "What happens?", .images = images,
                        .image_texts = texts, .n_images = 2, .sampling = sl_sampling_default()};
        q.sampling.max_tokens = 12;
        if (with_system)
            q.system_prompt = "You are a careful annotator.";
        sl_result got;
        assert_int_equal(sl_engine_generate(e, &q, &got), SL_OK);
        assert_string_equal(got.text, want.text);
        assert_int_equal(got.prompt_tokens, want.prompt_tokens);
        /* Without the texts the prompt is shorter: they are not dropped. */
        q.image_texts = NULL;
        sl_result bare;
        assert_int_equal(sl_engine_generate(e, &q, &bare), SL_OK);
        assert_true(bare.prompt_tokens < got.prompt_tokens);
        sl_result_clear(&want);
        sl_result_clear(&got);
        sl_result_clear(&bare);
    }
    sl_engine_free(e);

    /* Tasks over the frames: each as its own prompt, the frames encoded once. */
    sl_task tasks[2] = {{.name = "what", .prompt = "What happens?", .sampling = sl_sampling_default()},
                        {.name = "where", .prompt = "Where is it?", .sampling = sl_sampling_default()}};
    char *alone[2];
    for (int t = 0; t < 2; t++) {
        tasks[t].sampling.max_tokens = 8;
        e = open_engine(2, 1024, 0);
        sl_request one = {.id = "alone", .prompt = tasks[t].prompt, .images = images,
                          .image_texts = texts, .n_images = 2, .sampling = tasks[t].sampling};
        sl_result r;
        assert_int_equal(sl_engine_generate(e, &one, &r), SL_OK);
        alone[t] = r.text;
        r.text = NULL;
        sl_result_clear(&r);
        sl_engine_free(e);
    }
    e = open_engine(2, 1024, 0);
    sl_request q = {.id = "tasks", .images = images, .image_texts = texts, .n_images = 2,
                    .tasks = tasks, .n_tasks = 2, .sampling = sl_sampling_default()};
    int tag;
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_OK);
    sl_completion c = next_completion(e);
    assert_int_equal(c.status, SL_OK);
    assert_int_equal(c.n_results, 2);
    for (int t = 0; t < 2; t++)
        assert_string_equal(c.results[t].text, alone[t]);
    sl_engine_stats st;
    sl_engine_stats_get(e, &st);
    assert_int_equal(st.images_encoded, enc_two);
    sl_completion_clear(&c);

    /* Refused at submit, naming the request. */
    sl_request bad = {.id = "bad", .prompt = "x", .image = img_a, .images = images,
                      .n_images = 2, .sampling = sl_sampling_default()};
    assert_int_equal(sl_engine_submit(e, &bad, &tag), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "bad: a request takes one image or several"));
    bad.image = NULL;
    bad.n_images = SL_MAX_IMAGES + 1;
    assert_int_equal(sl_engine_submit(e, &bad, &tag), SL_ERR_INVALID_ARG);
    const char *not_utf8[] = {"ok", "\xff\xfe"};
    bad.n_images = 2;
    bad.image_texts = not_utf8;
    assert_int_equal(sl_engine_submit(e, &bad, &tag), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "image 2 is not valid UTF-8"));
    assert_int_equal(sl_engine_in_flight(e), 0);
    sl_engine_free(e);
    sl_free(alone[0]);
    sl_free(alone[1]);
}

/* want_response_json: a chat.completion object with the answer's text,
 * finish reason and token counts, the model's name and a fresh id each
 * time; it parses with the OpenAI SDK's ChatCompletion where that is
 * installed. */
static void the_answer_as_a_chat_completion_object(void **state)
{
    sl_engine *e = open_engine(2, 512, -1);
    sl_content_part user[] = {{NULL}, {"Describe the picture."}};
    sl_message msg = {"user", user, 2};
    const sl_image *images[] = {img_a};
    sl_request q = conversation("json", &msg, 1, images, 1, 6);
    q.want_response_json = true;
    char *ids[2];
    for (int i = 0; i < 2; i++) {
        sl_result r;
        time_t before = time(NULL);
        assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
        assert_non_null(r.response_json);
        tc_check_chat_completion(r.response_json, &r, "sluice-tiny-random", (long long)before);
        tc_sdk_validates(r.response_json);
        json_t *root = json_loads(r.response_json, 0, NULL);
        ids[i] = sl_strdup(json_string_value(json_object_get(root, "id")));
        json_t *c0 = json_array_get(json_object_get(root, "choices"), 0);
        assert_true(json_is_null(json_object_get(c0, "logprobs"))); /* there, and null */
        json_decref(root);
        assert_string_equal(r.finish_reason, "length"); /* 6 tokens of a random model */
        sl_result_clear(&r);
    }
    assert_string_not_equal(ids[0], ids[1]);
    sl_free(ids[0]);
    sl_free(ids[1]);
    sl_engine_free(e);
}

/* What submit refuses, each message naming the request and the message. */
static void bad_conversations_are_refused_naming_the_message(void **state)
{
    sl_engine *e = open_engine(1, 256, 0);
    const sl_image *images[SL_MAX_IMAGES + 1];
    for (int i = 0; i <= SL_MAX_IMAGES; i++)
        images[i] = img_a;
    sl_content_part ok[] = {{"Hello."}};
    sl_content_part bad_utf8[] = {{"fine"}, {"\xff\xfe"}};
    sl_content_part one_image[] = {{NULL}, {"What is it?"}};
    sl_content_part marker[] = {{"a <__media__> here"}};
    sl_content_part many[SL_MAX_IMAGES + 1];
    for (int i = 0; i <= SL_MAX_IMAGES; i++)
        many[i].text = NULL;
    int tag = 0;
    struct {
        sl_message msgs[3];
        int n_msgs, n_images;
        const char *want;
    } cases[] = {
        {{{"user", ok, 1}, {"user", ok, 1}, {"tool", ok, 1}}, 3, 0, "bad: message 2: role 'tool'"},
        {{{"user", ok, 1}, {"user", bad_utf8, 2}}, 2, 0,
         "bad: message 1: part 1 is not valid UTF-8"},
        {{{"user", one_image, 2}}, 1, 0, "1 image parts but 0 images"},
        {{{"user", ok, 1}}, 1, 1, "0 image parts but 1 images"},
        {{{"user", many, SL_MAX_IMAGES + 1}}, 1, SL_MAX_IMAGES + 1,
         "17 images; a request takes at most 16"},
        {{{NULL, ok, 1}}, 1, 0, "bad: message 0: role '(none)'"},
        {{{"user", ok, -1}}, 1, 0, "bad: message 0: bad content parts"},
        {{{"user", marker, 1}}, 1, 0, "bad: message 0: part 0 holds '<__media__>'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sl_request q = conversation("bad", cases[i].msgs, cases[i].n_msgs, images,
                                    cases[i].n_images, 8);
        assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
        if (!strstr(sl_last_error(), cases[i].want))
            fail_msg("case %zu: '%s' does not say '%s'", i, sl_last_error(), cases[i].want);
    }
    sl_message one = {"user", ok, 1};
    sl_request q = conversation("bad", &one, 1, NULL, 0, 8);
    q.prompt = "also a prompt";
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "bad: a conversation (messages) takes no prompt"));
    q.prompt = NULL;
    q.image = img_a;
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
    q.image = NULL;
    sl_task task = {.name = "t", .prompt = "x", .sampling = sl_sampling_default()};
    q.tasks = &task;
    q.n_tasks = 1;
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "cannot have tasks"));
    q.tasks = NULL;
    q.n_tasks = 0;
    q.n_messages = 257;
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "257 messages; a conversation takes 1 to 256"));
    q.n_messages = 1;
    q.sampling.max_tokens = 0;
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
    q.sampling.max_tokens = 8;
    /* Images without messages go before a prompt: there must be one. */
    sl_request plain = {.id = "plain", .images = images, .n_images = 1,
                        .sampling = sl_sampling_default()};
    assert_int_equal(sl_engine_submit(e, &plain, &tag), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "plain: request has no prompt"));
    /* The llama engine needs the decoded images. */
    sl_content_part img_part[] = {{NULL}};
    sl_message with_image = {"user", img_part, 1};
    const sl_image *none[] = {NULL};
    sl_request missing = conversation("missing", &with_image, 1, none, 1, 8);
    assert_int_equal(sl_engine_submit(e, &missing, &tag), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "missing: image 0 is missing"));
    assert_int_equal(sl_engine_in_flight(e), 0);

    /* A conversation that takes more positions than a sequence has fails
     * alone, after submit. */
    sl_request big = conversation("big", &with_image, 1, images, 1, 250);
    assert_int_equal(sl_engine_submit(e, &big, &tag), SL_OK);
    sl_completion c = next_completion(e);
    assert_int_equal(c.status, SL_ERR_TOO_LONG);
    assert_non_null(strstr(c.error, "big:"));
    sl_completion_clear(&c);
    /* The engine goes on: the next request answers. */
    sl_result r;
    assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
    sl_result_clear(&r);
    sl_engine_free(e);
}

/* The engine copies messages and parts at submit: the caller may reuse
 * them at once; freed with conversations in flight, nothing leaks (ASan). */
static void messages_are_copied_and_freeing_in_flight_is_clean(void **state)
{
    sl_engine *e = open_engine(2, 512, 2);
    char text[64];
    snprintf(text, sizeof text, "Say something about this.");
    sl_content_part parts[] = {{NULL}, {text}};
    sl_message msg = {"user", parts, 2};
    const sl_image *images[] = {img_a};
    sl_request q = conversation("copied", &msg, 1, images, 1, 8);
    q.want_response_json = true;
    int tag = 0;
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_OK);
    memset(text, 'x', sizeof text - 1); /* the engine has its own copy */
    sl_completion c = next_completion(e);
    assert_int_equal(c.status, SL_OK);
    sl_completion_clear(&c);

    snprintf(text, sizeof text, "Say something about this.");
    sl_result want;
    assert_int_equal(sl_engine_generate(e, &q, &want), SL_OK);
    sl_result_clear(&want);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sl_engine_submit(e, &q, &tag), SL_OK);
    sl_engine_free(e);
}

/* The text-only requests of the tests below: a prompt alone, the same
 * with a system prompt, a one-message and a several-turn conversation. */
static sl_content_part to_sys[] = {{"You answer in one short line."}};
static sl_content_part to_u1[] = {{"Name a colour."}};
static sl_content_part to_a1[] = {{"Blue."}};
static sl_content_part to_u2[] = {{"Another one,"}, {"please."}};
static sl_message to_msgs[] = {{"system", to_sys, 1}, {"user", to_u1, 1},
                               {"assistant", to_a1, 1}, {"user", to_u2, 2}};

static sl_request text_request(int i)
{
    sl_request q;
    switch (i) {
    case 0:
        q = (sl_request){.id = "plain", .prompt = "Describe a red apple.",
                         .sampling = sl_sampling_default()};
        q.sampling.max_tokens = 16;
        return q;
    case 1:
        q = (sl_request){.id = "system", .system_prompt = "Be brief.",
                         .prompt = "Describe a red apple.", .sampling = sl_sampling_default()};
        q.sampling.max_tokens = 16;
        return q;
    case 2:
        return conversation("one", to_msgs + 1, 1, NULL, 0, 16);
    default:
        return conversation("turns", to_msgs, 4, NULL, 0, 16);
    }
}
#define N_TEXT_REQUESTS 4

/* Without a projector a text-only request is rendered and tokenized as
 * with one: the same greedy answer, prompt and generated tokens (the
 * later requests also take the cached prompt head of the first). */
static void text_only_without_a_projector_answers_as_with_one(void **state)
{
    sl_result want[N_TEXT_REQUESTS];
    sl_engine *e = open_engine(2, 512, 0);
    for (int i = 0; i < N_TEXT_REQUESTS; i++) {
        sl_request q = text_request(i);
        assert_int_equal(sl_engine_generate(e, &q, &want[i]), SL_OK);
    }
    sl_engine_free(e);
    const char *none[] = {NULL, ""};
    for (int k = 0; k < 2; k++) {
        e = open_engine_with(none[k], 2, 512, -1);
        for (int i = 0; i < N_TEXT_REQUESTS; i++) {
            sl_request q = text_request(i);
            sl_result r;
            assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
            assert_string_equal(r.text, want[i].text);
            assert_int_equal(r.prompt_tokens, want[i].prompt_tokens);
            assert_int_equal(r.generated_tokens, want[i].generated_tokens);
            assert_true(r.generated_tokens > 0);
            if (i > 0)
                assert_true(r.cached_tokens > 0); /* the prompt head computed once */
            sl_result_clear(&r);
        }
        sl_engine_stats st;
        sl_engine_stats_get(e, &st);
        assert_int_equal(st.images_encoded, 0);
        sl_engine_free(e);
    }
    llama_chat_message turns[] = {{"system", "You answer in one short line."},
                                  {"user", "Name a colour."},
                                  {"assistant", "Blue."},
                                  {"user", "Another one,\nplease."}};
    assert_int_equal(want[3].prompt_tokens, template_tokens(turns, 4));
    for (int i = 0; i < N_TEXT_REQUESTS; i++)
        sl_result_clear(&want[i]);
}

/* Sized by itself (no --ctx) and with requests in flight together, several
 * sequences each: every one answers with the prompt it has alone. */
static void text_only_without_a_projector_runs_requests_together(void **state)
{
    sl_engine *e = open_engine_with(NULL, 3, 0, -1);
    sl_result alone[N_TEXT_REQUESTS];
    for (int i = 0; i < N_TEXT_REQUESTS; i++) {
        sl_request q = text_request(i);
        assert_int_equal(sl_engine_generate(e, &q, &alone[i]), SL_OK);
    }
    int tags[3 * N_TEXT_REQUESTS];
    for (int i = 0; i < 3 * N_TEXT_REQUESTS; i++) {
        sl_request q = text_request(i % N_TEXT_REQUESTS);
        tags[i] = i % N_TEXT_REQUESTS;
        assert_int_equal(sl_engine_submit(e, &q, &tags[i]), SL_OK);
    }
    for (int got = 0; got < 3 * N_TEXT_REQUESTS;) {
        sl_completion c;
        size_t n = 0;
        assert_int_equal(sl_engine_poll(e, &c, 1, 5000, &n), SL_OK);
        if (n == 0)
            continue;
        got++;
        assert_int_equal(c.status, SL_OK);
        int i = *(int *)c.tag;
        assert_int_equal(c.result.prompt_tokens, alone[i].prompt_tokens);
        assert_true(c.result.generated_tokens > 0);
        sl_completion_clear(&c);
    }
    for (int i = 0; i < N_TEXT_REQUESTS; i++)
        sl_result_clear(&alone[i]);
    sl_engine_free(e);
}

/* Without a projector a request with an image (its own, a conversation's
 * image part, tasks about one) is refused at submit naming it; the
 * engine goes on answering text. */
static void images_without_a_projector_are_refused_naming_the_request(void **state)
{
    sl_engine *e = open_engine_with(NULL, 1, 256, -1);
    int tag = 0;
    const char *want = "this engine has no vision projector (--mmproj): it cannot take images";
    char msg[512];

    sl_request q = {.id = "pic", .prompt = "What is it?", .image = img_a,
                    .sampling = sl_sampling_default()};
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
    snprintf(msg, sizeof msg, "pic: %s", want);
    assert_string_equal(sl_last_error(), msg);

    sl_content_part parts[] = {{NULL}, {"What is it?"}};
    sl_message m = {"user", parts, 2};
    const sl_image *images[] = {img_b};
    q = conversation("chat-pic", &m, 1, images, 1, 8);
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
    snprintf(msg, sizeof msg, "chat-pic: %s", want);
    assert_string_equal(sl_last_error(), msg);

    sl_task tasks[] = {{.name = "a", .prompt = "Colour?", .sampling = sl_sampling_default()},
                       {.name = "b", .prompt = "Shape?", .sampling = sl_sampling_default()}};
    q = (sl_request){.id = "tasks", .image = img_a, .tasks = tasks, .n_tasks = 2,
                     .sampling = sl_sampling_default()};
    assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
    snprintf(msg, sizeof msg, "tasks: %s", want);
    assert_string_equal(sl_last_error(), msg);
    assert_int_equal(sl_engine_in_flight(e), 0);

    /* Text that looks like the media marker is plain text here. */
    sl_content_part marker[] = {{"a <__media__> here"}};
    sl_message mm = {"user", marker, 1};
    q = conversation("marker", &mm, 1, NULL, 0, 4);
    sl_result r;
    assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
    sl_result_clear(&r);
    sl_engine_free(e);
}

/* The images of a request of n, from the test's three (one of them large:
 * 3 x 3 tiles of the tiny projector's 128 px and a global view). */
static void many_images(const sl_image **images, int n)
{
    const sl_image *three[] = {img_big, img_a, img_b};
    for (int i = 0; i < n; i++)
        images[i] = three[i % 3];
}

/* A request of one user message: "Image k:" and the image, for each of
 * its n images, then a question. parts holds 2 n + 1 entries. */
static sl_request images_request(const char *id, sl_content_part *parts, const sl_image **images,
                                 int n, sl_message *msg)
{
    static char labels[SL_MAX_IMAGES][24];
    for (int i = 0; i < n; i++) {
        snprintf(labels[i], sizeof labels[i], "Image %d:", i + 1);
        parts[2 * i] = (sl_content_part){labels[i]};
        parts[2 * i + 1] = (sl_content_part){NULL};
    }
    parts[2 * n] = (sl_content_part){"Which is the brightest?"};
    *msg = (sl_message){"user", parts, 2 * n + 1};
    many_images(images, n);
    return conversation(id, msg, 1, images, n, 12);
}

/* Requests of 1, 3 and 16 images in flight together on an engine sized by
 * itself (no --ctx, for a one-image request): the sequences grow for the
 * ones that need more positions, and each answers as it does alone on an
 * engine given room for it up front (--ctx): the same greedy text and
 * token counts. Host and device sampling (the device's chains are made
 * again with the context; alone is on the host). */
static void many_images_with(sl_llama_sampler with)
{
    sampler = with;
    static const int counts[] = {1, 3, SL_MAX_IMAGES};
    static const char *ids[] = {"one", "three", "many"};
    sl_content_part parts[3][2 * SL_MAX_IMAGES + 1];
    const sl_image *images[3][SL_MAX_IMAGES];
    sl_message msgs[3];
    sl_request q[3];
    for (int k = 0; k < 3; k++)
        q[k] = images_request(ids[k], parts[k], images[k], counts[k], &msgs[k]);

    sl_engine *e = open_engine(2, 0, 0);
    sl_result first;
    assert_int_equal(sl_engine_generate(e, &q[0], &first), SL_OK);
    sl_engine_stats st;
    sl_engine_stats_get(e, &st);
    uint64_t cells_before = st.kv_cells_total;
    int tags[3] = {0, 1, 2};
    /* The one-image request first, so the 16-image one waits for a
     * running sequence to end before its sequence can grow. */
    for (int k = 0; k < 3; k++)
        assert_int_equal(sl_engine_submit(e, &q[k], &tags[k]), SL_OK);
    sl_result got[3] = {{0}};
    for (int left = 3; left > 0;) {
        sl_completion c;
        size_t n = 0;
        assert_int_equal(sl_engine_poll(e, &c, 1, 1000, &n), SL_OK);
        if (n == 0)
            continue;
        if (c.status != SL_OK)
            fail_msg("%s", c.error);
        int k = *(int *)c.tag;
        got[k] = c.result;
        memset(&c.result, 0, sizeof c.result);
        sl_completion_clear(&c);
        left--;
    }
    sl_engine_stats_get(e, &st);
    /* The 16 images did not fit the sequences as opened. */
    assert_true((uint64_t)(got[2].prompt_tokens + 12) > cells_before / 3);
    assert_true(st.kv_cells_total > cells_before);
    assert_string_equal(got[0].text, first.text);
    sl_result_clear(&first);
    sl_engine_free(e);

    sampler = SL_SAMPLER_HOST; /* greedy: the same tokens either way */
    for (int k = 0; k < 3; k++) {
        sl_engine *alone = open_engine(1, 1024, 0);
        sl_result want;
        assert_int_equal(sl_engine_generate(alone, &q[k], &want), SL_OK);
        assert_string_equal(got[k].text, want.text);
        assert_int_equal(got[k].prompt_tokens, want.prompt_tokens);
        assert_int_equal(got[k].generated_tokens, want.generated_tokens);
        sl_result_clear(&want);
        sl_result_clear(&got[k]);
        sl_engine_free(alone);
    }
    sampler = SL_SAMPLER_AUTO;
}

static void requests_with_many_images_are_sized_by_themselves(void **state)
{
    many_images_with(SL_SAMPLER_HOST);
    many_images_with(SL_SAMPLER_DEVICE);
}

/* A request that can never fit fails alone, its message naming it, the
 * positions it takes and the limit, and what to change: with --ctx, the
 * --ctx it needs; without, past the model's context (2048 positions for
 * the tiny model). A request beside it answers. */
static void a_request_that_never_fits_fails_alone_saying_why(void **state)
{
    sl_content_part parts[2][2 * SL_MAX_IMAGES + 1];
    const sl_image *images[2][SL_MAX_IMAGES];
    sl_message msgs[2];
    sl_request many = images_request("many", parts[0], images[0], SL_MAX_IMAGES, &msgs[0]);
    sl_request one = images_request("one", parts[1], images[1], 1, &msgs[1]);
    for (int fixed = 1; fixed >= 0; fixed--) {
        sl_engine *e = open_engine(2, fixed ? 512 : 0, 0);
        if (!fixed)
            many.sampling.max_tokens = 2000;
        int tags[2] = {0, 1};
        assert_int_equal(sl_engine_submit(e, &many, &tags[0]), SL_OK);
        assert_int_equal(sl_engine_submit(e, &one, &tags[1]), SL_OK);
        for (int k = 0; k < 2; k++) {
            sl_completion c = next_completion(e);
            if (*(int *)c.tag == 1) {
                assert_int_equal(c.status, SL_OK);
            } else {
                assert_int_equal(c.status, SL_ERR_TOO_LONG);
                assert_non_null(strstr(c.error, "many: the request takes "));
                assert_non_null(strstr(c.error, "(its prompt with 16 images: "));
                if (fixed) {
                    assert_non_null(strstr(c.error, "max_tokens is 12), more than the 512 "
                                                    "positions of a sequence (--ctx): give "
                                                    "--ctx "));
                } else {
                    assert_non_null(strstr(c.error, "max_tokens is 2000), more than the model's "
                                                    "context of 2048: lower its max_tokens"));
                }
            }
            sl_completion_clear(&c);
        }
        sl_engine_free(e);
    }
}

/* A growth that memory does not allow (a fault at engine.context in place
 * of llama.cpp's allocation): twice the size failing, just enough is
 * tried; both failing, the old size is made again, the request fails
 * alone saying to lower --parallel or give --ctx, and the next request
 * answers; nothing at all (the old size failing too), every request
 * fails naming the lost context and the engine still frees cleanly. */
static void a_context_that_cannot_grow_fails_only_the_long_request(void **state)
{
    sl_content_part parts[2][2 * SL_MAX_IMAGES + 1];
    const sl_image *images[2][SL_MAX_IMAGES];
    sl_message msgs[2];
    sl_request many = images_request("many", parts[0], images[0], SL_MAX_IMAGES, &msgs[0]);
    sl_request one = images_request("one", parts[1], images[1], 1, &msgs[1]);
    sl_engine_stats st;
    sl_result r;

    /* The first try (1,024 positions, twice 512) fails, 768 is enough. */
    sl_engine *e = open_engine(2, 0, 0);
    assert_int_equal(sl_fault_configure("engine.context=enospc@1"), 0);
    assert_int_equal(sl_engine_generate(e, &many, &r), SL_OK);
    sl_result_clear(&r);
    sl_engine_stats_get(e, &st);
    assert_int_equal(st.kv_cells_total, 3 * 768);
    sl_engine_free(e);

    e = open_engine(2, 0, 0);
    assert_int_equal(sl_fault_configure("engine.context=enospc@1,engine.context=enospc@2"), 0);
    assert_int_equal(sl_engine_generate(e, &many, &r), SL_ERR_TOO_LONG);
    assert_non_null(strstr(sl_last_error(), "many: the request takes "));
    assert_non_null(strstr(sl_last_error(), "the context cannot grow: llama.cpp cannot create"));
    assert_non_null(strstr(sl_last_error(), "lower --parallel, or give --ctx "));
    assert_int_equal(sl_engine_generate(e, &one, &r), SL_OK);
    sl_result_clear(&r);
    sl_engine_stats_get(e, &st);
    assert_int_equal(st.kv_cells_total, 3 * 512); /* as opened */
    sl_engine_free(e);

    e = open_engine(2, 0, 0);
    assert_int_equal(sl_fault_configure("engine.context=enospc"), 0);
    assert_int_equal(sl_engine_generate(e, &many, &r), SL_ERR_TOO_LONG);
    assert_int_equal(sl_engine_generate(e, &one, &r), SL_ERR_ENGINE);
    assert_non_null(strstr(sl_last_error(), "one: the engine lost its context"));
    sl_fault_configure(NULL);
    sl_engine_free(e);
}

int main(void)
{
    if (getenv("SLUICE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLUICE_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_only_turns_render_the_template_and_encode_nothing),
        cmocka_unit_test(one_image_message_answers_as_a_prompt_and_image),
        cmocka_unit_test(two_images_in_one_sequence_are_both_encoded),
        cmocka_unit_test(a_prompt_with_images_answers_as_its_conversation),
        cmocka_unit_test(the_answer_as_a_chat_completion_object),
        cmocka_unit_test(bad_conversations_are_refused_naming_the_message),
        cmocka_unit_test(messages_are_copied_and_freeing_in_flight_is_clean),
        cmocka_unit_test(text_only_without_a_projector_answers_as_with_one),
        cmocka_unit_test(text_only_without_a_projector_runs_requests_together),
        cmocka_unit_test(images_without_a_projector_are_refused_naming_the_request),
        cmocka_unit_test(requests_with_many_images_are_sized_by_themselves),
        cmocka_unit_test(a_request_that_never_fits_fails_alone_saying_why),
        cmocka_unit_test(a_context_that_cannot_grow_fails_only_the_long_request),
        cmocka_unit_test(a_chosen_chat_template_renders_the_prompts),
        cmocka_unit_test(a_template_system_message_is_the_default),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
