/* Unit tests: conversations and forwarded bodies in the openai engine.
 * Against a recording fake server (libmicrohttpd, in this process): the
 * body that goes out (a conversation's messages with text and image_url
 * parts; a caller's body as given but for model and stream) and the
 * server's chat.completion handed back as received. Against llama-server on
 * the tiny model (SLUICE_LLAMA_PREFIX/bin/llama-server; skipped without
 * it): text-only, one-image, two-image and multi-turn conversations and a
 * forwarded body with its own seed and max_tokens answer, streamed or not,
 * with a chat.completion object the OpenAI SDK accepts. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>

#include "core/alloc.h"
#include "sluice/sluice.h"
#include "test_chat.h"

extern char **environ;

static sl_image *img_a, *img_b;

/* --- the recording fake server ------------------------------------------------ */

static const char canned[] =
    "{\"id\":\"chatcmpl-fake1\",\"object\":\"chat.completion\",\"created\":1700000000,"
    "\"model\":\"fake-model\",\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,"
    "\"message\":{\"role\":\"assistant\",\"content\":\"A red square.\"},\"finish_reason\":"
    "\"stop\",\"logprobs\":null}],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":4,"
    "\"total_tokens\":46}}";

static const char canned_stream[] =
    "data: {\"id\":\"chatcmpl-s1\",\"object\":\"chat.completion.chunk\",\"created\":1700000001,"
    "\"model\":\"fake-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"A red\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-s1\",\"object\":\"chat.completion.chunk\",\"created\":1700000001,"
    "\"model\":\"fake-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" square.\"},"
    "\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"chatcmpl-s1\",\"object\":\"chat.completion.chunk\",\"created\":1700000001,"
    "\"model\":\"fake-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":42,"
    "\"completion_tokens\":4,\"total_tokens\":46}}\n\ndata: [DONE]\n\n";

/* What it answers a request for logprobs: one token and its alternatives. */
static const char canned_choice[] =
    "{\"id\":\"chatcmpl-fake2\",\"object\":\"chat.completion\",\"created\":1700000002,"
    "\"model\":\"fake-model\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\" Yes\"},\"finish_reason\":\"length\",\"logprobs\":{\"content\":[{\"token\":"
    "\" Yes\",\"logprob\":-0.25,\"top_logprobs\":[{\"token\":\" Yes\",\"logprob\":-0.25},"
    "{\"token\":\" No\",\"logprob\":-1.75},{\"token\":\" maybe\",\"logprob\":-3.5},"
    "{\"token\":\"no\",\"logprob\":-4.0}]}]}}],\"usage\":{\"prompt_tokens\":42,"
    "\"completion_tokens\":1,\"total_tokens\":43}}";

/* Its answers for the choices 1, 10, 2: the first token "1" or "2"; after
 * "1" (a probe continuing the answer), "0" or the end. */
static const char canned_digit[] =
    "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"1\"},"
    "\"finish_reason\":\"length\",\"logprobs\":{\"content\":[{\"token\":\"1\",\"logprob\":"
    "-0.5108,\"top_logprobs\":[{\"token\":\"1\",\"logprob\":-0.5108256},{\"token\":\"2\","
    "\"logprob\":-1.2039728},{\"token\":\"x\",\"logprob\":-2.3025851}]}]}}],\"usage\":"
    "{\"prompt_tokens\":40,\"completion_tokens\":1}}";
static const char canned_after_1[] =
    "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":\"stop\",\"logprobs\":{\"content\":[{\"token\":\"\",\"logprob\":"
    "-0.69,\"top_logprobs\":[{\"token\":\"\",\"logprob\":-0.6931472},{\"token\":\"0\","
    "\"logprob\":-1.3862944}]}]}}],\"usage\":{\"prompt_tokens\":41,\"completion_tokens\":1}}";

static struct {
    struct MHD_Daemon *d;
    char url[64];
    pthread_mutex_t mu;
    char *last_body; /* the last POST's body */
    int posts;
} fake = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct upload {
    char *data;
    size_t len;
} upload;

static enum MHD_Result fake_reply(struct MHD_Connection *c, const char *body, const char *type)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result fake_handler(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *data, size_t *size, void **con_cls)
{
    if (strcmp(method, "GET") == 0)
        return fake_reply(c, "{\"data\":[{\"id\":\"fake-model\"}]}", "application/json");
    upload *u = *con_cls;
    if (!u) {
        *con_cls = calloc(1, sizeof *u);
        return MHD_YES;
    }
    if (*size) {
        u->data = realloc(u->data, u->len + *size + 1);
        memcpy(u->data + u->len, data, *size);
        u->len += *size;
        u->data[u->len] = '\0';
        *size = 0;
        return MHD_YES;
    }
    json_t *root = json_loads(u->data ? u->data : "", 0, NULL);
    bool stream = json_is_true(json_object_get(root, "stream"));
    bool logprobs = json_is_true(json_object_get(root, "logprobs"));
    json_int_t n = json_integer_value(json_object_get(root, "n"));
    json_t *msgs = json_object_get(root, "messages");
    json_t *content = json_object_get(json_array_get(msgs, 0), "content");
    const char *prompt = json_is_string(content)
                             ? json_string_value(content)
                             : json_string_value(json_object_get(json_array_get(content, 0), "text"));
    bool digits = prompt && strncmp(prompt, "Rate", 4) == 0;
    bool probe = json_is_true(json_object_get(root, "continue_final_message")) &&
                 json_is_false(json_object_get(root, "add_generation_prompt"));
    bool failing = prompt && strcmp(prompt, "Rate, failing probes.") == 0;
    json_decref(root);
    pthread_mutex_lock(&fake.mu);
    free(fake.last_body);
    fake.last_body = strdup(u->data ? u->data : "");
    fake.posts++;
    pthread_mutex_unlock(&fake.mu);
    if (digits && probe && failing) {
        struct MHD_Response *r = MHD_create_response_from_buffer(
            strlen("{\"error\":{\"message\":\"no prefill here\"}}"),
            (void *)"{\"error\":{\"message\":\"no prefill here\"}}", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret = MHD_queue_response(c, 400, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (digits)
        return fake_reply(c, probe ? canned_after_1 : canned_digit, "application/json");
    if (n > 1 && n < 10 && !stream && !logprobs) {
        /* n answers "answer K", last first (the index puts them in order). */
        char body[2048];
        int at = snprintf(body, sizeof body, "{\"id\":\"chatcmpl-n\",\"object\":"
                          "\"chat.completion\",\"model\":\"fake-model\",\"choices\":[");
        for (json_int_t k = n - 1; k >= 0; k--)
            at += snprintf(body + at, sizeof body - (size_t)at,
                           "%s{\"index\":%d,\"message\":{\"role\":\"assistant\",\"content\":"
                           "\"answer %d\"},\"finish_reason\":\"stop\"}",
                           k == n - 1 ? "" : ",", (int)k, (int)k);
        snprintf(body + at, sizeof body - (size_t)at, "],\"usage\":{\"prompt_tokens\":42,"
                 "\"completion_tokens\":%d}}", (int)(2 * n));
        return fake_reply(c, body, "application/json");
    }
    return stream     ? fake_reply(c, canned_stream, "text/event-stream")
           : logprobs ? fake_reply(c, canned_choice, "application/json")
                      : fake_reply(c, canned, "application/json");
}

static void fake_done(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode why)
{
    upload *u = *con_cls;
    if (u) {
        free(u->data);
        free(u);
        *con_cls = NULL;
    }
}

/* A free loopback port for a server started later, below the kernel's
 * ephemeral range (32768-60999): one that bind(0) hands out may be taken
 * by any connect() on the machine before llama-server has loaded its model
 * and binds it (tests/e2e/localserver.py free_ports says more). */
static int free_port(void)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int tries = 0; tries < 200; tries++) {
        int port = 20000 + (int)(rand_r(&seed) % 12000);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (fd < 0)
            abort();
        bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return port;
    }
    abort();
}

static int posts(void)
{
    pthread_mutex_lock(&fake.mu);
    int n = fake.posts;
    pthread_mutex_unlock(&fake.mu);
    return n;
}

static char *last_body(void)
{
    pthread_mutex_lock(&fake.mu);
    char *b = fake.last_body ? strdup(fake.last_body) : NULL;
    pthread_mutex_unlock(&fake.mu);
    return b;
}

/* --- llama-server ---------------------------------------------------------------- */

static struct {
    pid_t pid;
    char url[64];
    char log[64];
} server;

static bool server_healthy(const char *url)
{
    char health[128];
    snprintf(health, sizeof health, "%s/health", url);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, health);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    return code == 200;
}

/* Starts llama-server on the tiny model; false (the tests that need it
 * skip) when there is none. */
static bool start_llama_server(void)
{
    const char *prefix = getenv("SLUICE_LLAMA_PREFIX");
    const char *tiny = getenv("SLUICE_TINY_MODEL");
    char bin[1024], model[1024], mmproj[1024], port[16];
    if (!prefix || !tiny)
        return false;
    snprintf(bin, sizeof bin, "%s/bin/llama-server", prefix);
    if (access(bin, X_OK) != 0)
        return false;
    snprintf(model, sizeof model, "%s/model.gguf", tiny);
    snprintf(mmproj, sizeof mmproj, "%s/mmproj.gguf", tiny);
    int p = free_port();
    snprintf(port, sizeof port, "%d", p);
    snprintf(server.url, sizeof server.url, "http://127.0.0.1:%d", p);
    snprintf(server.log, sizeof server.log, "/tmp/sluice-llama-server-%d.log", (int)getpid());
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, server.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {bin, "-m", model, "--mmproj", mmproj, "--parallel", "2", "--port", port,
                    "--host", "127.0.0.1", "-t", "1", "-c", "4096", NULL};
    int rc = posix_spawn(&server.pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return false;
    for (int i = 0; i < 600; i++) { /* 60 s */
        if (server_healthy(server.url))
            return true;
        int status;
        if (waitpid(server.pid, &status, WNOHANG) == server.pid)
            fail_msg("llama-server exited; see %s", server.log);
        usleep(100000);
    }
    fail_msg("llama-server not healthy after 60 s; see %s", server.log);
    return false;
}

static int setup(void **state)
{
    sl_log_set_level(SL_LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    img_a = tc_gradient(96, 64, 0);
    img_b = tc_gradient(64, 80, 1);
    int port = free_port();
    fake.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL,
                              fake_handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, fake_done, NULL,
                              MHD_OPTION_END);
    snprintf(fake.url, sizeof fake.url, "http://127.0.0.1:%d", port);
    if (!start_llama_server())
        server.pid = 0;
    return img_a && img_b && fake.d ? 0 : -1;
}

static int teardown(void **state)
{
    if (server.pid > 0) {
        kill(server.pid, SIGTERM);
        waitpid(server.pid, NULL, 0);
        unlink(server.log);
    }
    MHD_stop_daemon(fake.d);
    free(fake.last_body);
    sl_image_free(img_a);
    sl_image_free(img_b);
    curl_global_cleanup();
    return 0;
}

static sl_engine *open_split(const char *url, bool stream, bool split_samples)
{
    sl_openai_params p = sl_openai_default_params();
    const char *eps[] = {url};
    p.endpoints = eps;
    p.n_endpoints = 1;
    p.stream = stream;
    p.split_samples = split_samples;
    p.max_attempts = 2;
    sl_engine *e = NULL;
    if (sl_engine_open_openai(&p, &e) != SL_OK)
        fail_msg("cannot open the openai engine at %s: %s", url, sl_last_error());
    return e;
}

static sl_engine *open_at(const char *url, bool stream)
{
    return open_split(url, stream, false);
}

/* q's completion (all its answers), or the test fails. */
static sl_completion complete_one(sl_engine *e, const sl_request *q)
{
    if (sl_engine_submit(e, q, NULL) != SL_OK)
        fail_msg("%s: %s", q->id, sl_last_error());
    sl_completion c;
    size_t n = 0;
    while (n == 0)
        if (sl_engine_poll(e, &c, 1, 1000, &n) != SL_OK)
            fail_msg("%s: poll: %s", q->id, sl_last_error());
    if (c.status != SL_OK)
        fail_msg("%s: %s", q->id, c.error ? c.error : "failed");
    return c;
}

static sl_request conversation(const char *id, const sl_message *msgs, int n, int max_tokens)
{
    sl_request r = {.id = id, .messages = msgs, .n_messages = n,
                    .sampling = sl_sampling_default()};
    r.sampling.max_tokens = max_tokens;
    return r;
}

/* --- against the fake server ------------------------------------------------------ */

/* A conversation goes out as OpenAI's messages: roles in order, a message
 * of one text part as a string, others as text and image_url parts (data:
 * URLs of the caller's encoded images with their types, in order); the
 * server's answer comes back as received. */
static void a_conversation_goes_out_as_openai_messages(void **state)
{
    sl_engine *e = open_at(fake.url, false);
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', 1, 2, 3};
    static const uint8_t jpg[] = {0xff, 0xd8, 0xff, 9, 9};
    const uint8_t *enc[] = {png, jpg};
    const size_t lens[] = {sizeof png, sizeof jpg};
    const char *mimes[] = {"image/png", NULL};
    sl_content_part sys[] = {{"Be brief."}};
    sl_content_part u1[] = {{"Look:"}, {NULL}, {"and"}, {NULL}};
    sl_content_part a1[] = {{"Two pictures."}};
    sl_content_part u2[] = {{"Which is red?"}};
    sl_message msgs[] = {{"system", sys, 1}, {"user", u1, 4}, {"assistant", a1, 1},
                         {"user", u2, 1}};
    sl_request q = conversation("conv", msgs, 4, 16);
    q.images_encoded = enc;
    q.images_encoded_len = lens;
    q.images_mime = mimes;
    q.n_images = 2;
    q.want_response_json = true;
    sl_result r;
    assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
    assert_string_equal(r.text, "A red square.");
    assert_string_equal(r.response_json, canned); /* byte for byte */
    assert_int_equal(r.prompt_tokens, 42);

    char *body = last_body();
    json_t *root = json_loads(body, 0, NULL);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "model")), "fake-model");
    assert_int_equal(json_integer_value(json_object_get(root, "max_tokens")), 16);
    json_t *m = json_object_get(root, "messages");
    assert_int_equal(json_array_size(m), 4);
    const char *roles[] = {"system", "user", "assistant", "user"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(m, i), "role")),
                            roles[i]);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")),
                        "Be brief.");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 3), "content")),
                        "Which is red?");
    json_t *parts = json_object_get(json_array_get(m, 1), "content");
    assert_int_equal(json_array_size(parts), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 0), "text")),
                        "Look:");
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 2), "text")),
                        "and");
    const char *url1 = json_string_value(
        json_object_get(json_object_get(json_array_get(parts, 1), "image_url"), "url"));
    const char *url3 = json_string_value(
        json_object_get(json_object_get(json_array_get(parts, 3), "image_url"), "url"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 1), "type")),
                        "image_url");
    assert_string_equal(url1, "data:image/png;base64,iVBORwECAw==");
    assert_string_equal(url3, "data:image/jpeg;base64,/9j/CQk=");
    json_decref(root);
    free(body);
    sl_result_clear(&r);

    /* Decoded images only: encoded here as JPEG. */
    const sl_image *pixels[] = {img_a, img_b};
    q.images_encoded = NULL;
    q.images = pixels;
    assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
    sl_result_clear(&r);
    body = last_body();
    assert_non_null(strstr(body, "data:image/jpeg;base64,/9j/"));
    free(body);
    sl_engine_free(e);
}

/* The body q went out in (its answer dropped); json_decref it. */
static json_t *sent_body(sl_engine *e, const sl_request *q)
{
    sl_result r;
    assert_int_equal(sl_engine_generate(e, q, &r), SL_OK);
    sl_result_clear(&r);
    char *body = last_body();
    json_t *root = json_loads(body, 0, NULL);
    free(body);
    assert_non_null(root);
    return root;
}

/* A prompt with several images (a video's frames) goes out as a system
 * message and one user message of parts: each image after its text, the
 * prompt last; as tasks, one request per task with the same parts. */
static void a_prompt_with_images_goes_out_as_one_user_message(void **state)
{
    sl_engine *e = open_at(fake.url, false);
    static const uint8_t jpg1[] = {0xff, 0xd8, 0xff, 1}, jpg2[] = {0xff, 0xd8, 0xff, 2};
    const uint8_t *enc[] = {jpg1, jpg2};
    const size_t lens[] = {sizeof jpg1, sizeof jpg2};
    const char *texts[] = {"Frame at 0.5 s:", NULL};
    sl_request q = {.id = "frames", .system_prompt = "Be brief.", .prompt = "What happens?",
                    .images_encoded = enc, .images_encoded_len = lens, .image_texts = texts,
                    .n_images = 2, .sampling = sl_sampling_default()};
    q.sampling.max_tokens = 16;
    json_t *root = sent_body(e, &q);
    json_t *m = json_object_get(root, "messages");
    assert_int_equal(json_array_size(m), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "role")), "system");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")),
                        "Be brief.");
    json_t *parts = json_object_get(json_array_get(m, 1), "content");
    assert_int_equal(json_array_size(parts), 4); /* text, image, image (no text), prompt */
    const char *types[] = {"text", "image_url", "image_url", "text"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(parts, i), "type")),
                            types[i]);
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 0), "text")),
                        "Frame at 0.5 s:");
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 3), "text")),
                        "What happens?");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(parts, 1), "image_url"), "url")),
                        "data:image/jpeg;base64,/9j/AQ==");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(parts, 2), "image_url"), "url")),
                        "data:image/jpeg;base64,/9j/Ag==");
    json_decref(root);
    sl_engine_free(e);
}

/* A video's frames (images_are_video) go out as one video_url part of
 * vLLM's data:video/jpeg form, where the first frame's part would be, in a
 * prompt's message or a conversation's; text between frames, or a frame
 * that is not a JPEG, is refused at submit. */
static void a_videos_frames_go_out_as_one_video_url_part(void **state)
{
    sl_engine *e = open_at(fake.url, false);
    static const uint8_t jpg1[] = {0xff, 0xd8, 0xff, 1}, jpg2[] = {0xff, 0xd8, 0xff, 2};
    const uint8_t *enc[] = {jpg1, jpg2};
    const size_t lens[] = {sizeof jpg1, sizeof jpg2};
    sl_request q = {.id = "clip", .prompt = "What happens?", .images_encoded = enc,
                    .images_encoded_len = lens, .n_images = 2, .images_are_video = true,
                    .sampling = sl_sampling_default()};
    q.sampling.max_tokens = 16;
    json_t *root = sent_body(e, &q);
    json_t *parts = json_object_get(json_array_get(json_object_get(root, "messages"), 0),
                                    "content");
    assert_int_equal(json_array_size(parts), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 0), "type")),
                        "video_url");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(parts, 0), "video_url"), "url")),
                        "data:video/jpeg;base64,/9j/AQ==,/9j/Ag==");
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 1), "text")),
                        "What happens?");
    json_decref(root);

    /* In a conversation: at its frames' place, between the texts. */
    sl_content_part u[] = {{"Watch"}, {NULL}, {NULL}, {"then answer."}};
    sl_message msgs[] = {{"user", u, 4}};
    sl_request c = conversation("clip-conv", msgs, 1, 16);
    c.images_encoded = enc;
    c.images_encoded_len = lens;
    c.n_images = 2;
    c.images_are_video = true;
    root = sent_body(e, &c);
    parts = json_object_get(json_array_get(json_object_get(root, "messages"), 0), "content");
    assert_int_equal(json_array_size(parts), 3);
    const char *types[] = {"text", "video_url", "text"};
    for (int i = 0; i < 3; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(parts, i), "type")),
                            types[i]);
    json_decref(root);

    /* Refused: a text between the frames, a frame that is not a JPEG. */
    const char *texts[] = {NULL, "Frame 2:"};
    q.image_texts = texts;
    assert_int_equal(sl_engine_submit(e, &q, NULL), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "text between a video's frames"));
    q.image_texts = NULL;
    const char *mimes[] = {NULL, "image/png"};
    q.images_mime = mimes;
    assert_int_equal(sl_engine_submit(e, &q, NULL), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "frame 2 is image/png"));
    sl_engine_free(e);
}

/* A caller's body goes out as given (keys the engine knows nothing of
 * too), but for the model (set when absent, kept when present), stream
 * (the engine's; stream_options only when streaming, with usage asked) and
 * the sampling keys it leaves out (the request's sampling). */
static void a_body_is_forwarded_as_given_but_model_and_stream(void **state)
{
    for (int stream = 0; stream <= 1; stream++) {
        sl_engine *e = open_at(fake.url, stream);
        sl_request q = {.id = "fwd", .sampling = sl_sampling_default(),
                        .want_response_json = true};
        q.sampling.max_tokens = 64;
        q.openai_body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"seed\":7,"
                        "\"max_tokens\":5,\"stream\":true,\"stream_options\":{\"x\":1},"
                        "\"logit_bias\":{\"42\":-100},\"my_extension\":[1,2]}";
        sl_result r;
        assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
        assert_string_equal(r.text, "A red square.");
        char *body = last_body();
        json_t *root = json_loads(body, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(root, "model")), "fake-model");
        assert_int_equal(json_integer_value(json_object_get(root, "seed")), 7);
        assert_int_equal(json_integer_value(json_object_get(root, "max_tokens")), 5);
        assert_int_equal(json_integer_value(
                             json_object_get(json_object_get(root, "logit_bias"), "42")), -100);
        assert_int_equal(json_array_size(json_object_get(root, "my_extension")), 2);
        assert_true(json_is_boolean(json_object_get(root, "stream")));
        assert_int_equal(json_is_true(json_object_get(root, "stream")), stream);
        json_t *opts = json_object_get(root, "stream_options");
        /* What the body leaves out comes from the request's sampling, as
         * in a body the engine builds: its temperature (0), not top_p (1 is
         * off), and no second field for the max_tokens the body has. */
        assert_true(json_is_real(json_object_get(root, "temperature")));
        assert_true(json_real_value(json_object_get(root, "temperature")) == 0.0);
        assert_null(json_object_get(root, "top_p"));
        assert_null(json_object_get(root, "max_completion_tokens"));
        if (stream) {
            assert_true(json_is_true(json_object_get(opts, "include_usage")));
            assert_int_equal(json_integer_value(json_object_get(opts, "x")), 1);
            /* Assembled from the stream: the stream's id, model and created. */
            tc_check_chat_completion(r.response_json, &r, "fake-model", 1700000001);
            json_t *got = json_loads(r.response_json, 0, NULL);
            assert_string_equal(json_string_value(json_object_get(got, "id")), "chatcmpl-s1");
            json_decref(got);
            tc_sdk_validates(r.response_json);
        } else {
            assert_null(opts);
            assert_string_equal(r.response_json, canned);
        }
        json_decref(root);
        free(body);
        sl_result_clear(&r);

        /* A model given is kept (the caller decides what to do about it). */
        q.openai_body = "{\"model\":\"other\",\"messages\":[]}";
        assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
        sl_result_clear(&r);
        body = last_body();
        root = json_loads(body, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(root, "model")), "other");
        json_decref(root);
        free(body);

        /* Bodies that cannot be sent are refused at submit, naming the request. */
        int tag = 0;
        const char *bad[] = {"not json", "[1]", "{\"model\":\"m\"}", "{\"messages\":{}}",
                             "{\"messages\":[],\"a\":1,\"a\":2}"};
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            q.openai_body = bad[i];
            assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
            assert_non_null(strstr(sl_last_error(), "fwd: the request body"));
        }
        q.openai_body = "{\"messages\":[]}";
        q.sampling.max_tokens = 0;
        assert_int_equal(sl_engine_submit(e, &q, &tag), SL_ERR_INVALID_ARG);
        assert_int_equal(sl_engine_in_flight(e), 0);
        sl_engine_free(e);
    }
}

/* --- against llama-server ------------------------------------------------------------ */

/* Choices through a server: one token asked for, greedy, not streamed
 * (even on a streaming engine), with its 20 alternatives; the choices
 * scored from those (" Yes" and " No" are yes and no: space and first
 * letter's case aside), the best taken, the scores the result's. */
static void choices_ask_for_one_token_and_its_alternatives(void **state)
{
    const char *choices[3] = {"yes", "no", "maybe"};
    double yes = exp(-0.25), no = exp(-1.75) + exp(-4.0), maybe = exp(-3.5),
           total = yes + no + maybe;
    for (int stream = 0; stream < 2; stream++) {
        sl_engine *e = open_at(fake.url, stream);
        sl_request q = {.id = "pick", .prompt = "Is it?", .sampling = sl_sampling_default(),
                        .choices = choices, .n_choices = 3};
        q.sampling.max_tokens = 64;
        q.sampling.temperature = 0.7f;
        sl_result r;
        assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
        char *body = last_body();
        json_t *sent = json_loads(body, 0, NULL);
        assert_int_equal(json_integer_value(json_object_get(sent, "max_tokens")), 1);
        assert_true(json_is_true(json_object_get(sent, "logprobs")));
        assert_int_equal(json_integer_value(json_object_get(sent, "top_logprobs")), 20);
        assert_true(json_number_value(json_object_get(sent, "temperature")) == 0.0);
        assert_true(json_is_false(json_object_get(sent, "stream")));
        json_decref(sent);
        free(body);
        json_t *scores = json_loads(r.scores, 0, NULL);
        assert_non_null(scores);
        assert_float_equal(json_real_value(json_object_get(scores, "yes")), yes / total, 1e-5);
        assert_float_equal(json_real_value(json_object_get(scores, "no")), no / total, 1e-5);
        assert_float_equal(json_real_value(json_object_get(scores, "maybe")), maybe / total, 1e-5);
        json_decref(scores);
        /* The row's temperature draws among the scores with its seed:
         * the same seed, the same choice. */
        assert_true(strcmp(r.text, "yes") == 0 || strcmp(r.text, "no") == 0 ||
                    strcmp(r.text, "maybe") == 0);
        char *first = strdup(r.text);
        sl_result_clear(&r);
        assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
        assert_string_equal(r.text, first);
        free(first);
        assert_null(r.logprobs); /* not asked for */
        assert_string_equal(r.finish_reason, "stop");
        sl_result_clear(&r);
        q.sampling.temperature = 0.0f;
        assert_int_equal(sl_engine_generate(e, &q, &r), SL_OK);
        assert_string_equal(r.text, "yes");
        sl_result_clear(&r);
        sl_engine_free(e);
    }
}

/* --samples 3: one request with "n": 3 and the row's seed, not streamed
 * even by a streaming engine, its answers in index order; split_samples: a
 * request per answer with its answer's seed. A choices row asks once and
 * draws each answer with its answer's seed: the same picks as a request
 * each. */
static void samples_go_out_as_one_request_with_n(void **state)
{
    sl_engine *e = open_at(fake.url, true);
    sl_request q = {.id = "many", .prompt = "Say something.", .sampling = sl_sampling_default()};
    q.sampling.n = 3;
    q.sampling.seed = 1234;
    q.sampling.temperature = 0.8f;
    int before = posts();
    sl_completion c = complete_one(e, &q);
    assert_int_equal(posts(), before + 1);
    assert_int_equal(c.n_results, 3);
    int generated = 0;
    for (int k = 0; k < 3; k++) {
        char want[16];
        snprintf(want, sizeof want, "answer %d", k);
        assert_string_equal(c.results[k].text, want);
        assert_int_equal(c.results[k].prompt_tokens, 42);
        generated += c.results[k].generated_tokens;
    }
    assert_int_equal(generated, 6);
    sl_completion_clear(&c);
    char *body = last_body();
    json_t *sent = json_loads(body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(sent, "n")), 3);
    assert_int_equal(json_integer_value(json_object_get(sent, "seed")), 1234);
    assert_true(json_is_false(json_object_get(sent, "stream")));
    json_decref(sent);
    free(body);
    /* A server that ignores "n" (this one, from 10) fails the row,
     * naming the way out. */
    q.sampling.n = 12;
    assert_int_equal(sl_engine_submit(e, &q, NULL), SL_OK);
    size_t got = 0;
    while (got == 0)
        assert_int_equal(sl_engine_poll(e, &c, 1, 1000, &got), SL_OK);
    assert_int_equal(c.status, SL_ERR_ENGINE);
    assert_non_null(strstr(c.error, "1 of the 12 answers"));
    assert_non_null(strstr(c.error, "--split-samples"));
    sl_completion_clear(&c);
    q.sampling.n = 3;
    sl_engine_free(e);

    e = open_split(fake.url, false, true);
    before = posts();
    c = complete_one(e, &q);
    assert_int_equal(posts(), before + 3);
    assert_int_equal(c.n_results, 3);
    body = last_body();
    sent = json_loads(body, 0, NULL);
    assert_null(json_object_get(sent, "n"));
    assert_int_equal(json_integer_value(json_object_get(sent, "seed")),
                     (json_int_t)(sl_sampling_answer_seed(1234, 2) & 0x7fffffff));
    json_decref(sent);
    free(body);
    sl_completion_clear(&c);

    const char *choices[3] = {"yes", "no", "maybe"};
    q.choices = choices;
    q.n_choices = 3;
    q.sampling.temperature = 1.0f;
    /* Each answer alone, with its answer's seed, ... */
    char *split_picks[8];
    for (int k = 0; k < 8; k++) {
        sl_request alone = q;
        alone.sampling.n = 1;
        alone.sampling.seed = sl_sampling_answer_seed(1234, k);
        sl_result r;
        assert_int_equal(sl_engine_generate(e, &alone, &r), SL_OK);
        split_picks[k] = strdup(r.text);
        sl_result_clear(&r);
    }
    /* ... as the 8 of one request (split or not: choices are scored once). */
    q.sampling.n = 8;
    before = posts();
    c = complete_one(e, &q);
    assert_int_equal(posts(), before + 1);
    assert_int_equal(c.n_results, 8);
    for (int k = 0; k < 8; k++)
        assert_string_equal(c.results[k].text, split_picks[k]);
    sl_completion_clear(&c);
    sl_engine_free(e);
    e = open_at(fake.url, false);
    before = posts();
    c = complete_one(e, &q);
    assert_int_equal(posts(), before + 1);
    body = last_body();
    sent = json_loads(body, 0, NULL);
    assert_null(json_object_get(sent, "n"));
    assert_int_equal(json_integer_value(json_object_get(sent, "max_tokens")), 1);
    json_decref(sent);
    free(body);
    assert_int_equal(c.n_results, 8);
    int distinct = 0;
    for (int k = 0; k < 8; k++) {
        assert_string_equal(c.results[k].text, split_picks[k]);
        assert_non_null(c.results[k].scores);
        distinct += strcmp(split_picks[k], split_picks[0]) != 0;
    }
    for (int k = 0; k < 8; k++)
        free(split_picks[k]);
    /* Drawn with each answer's seed, not the row's: at temperature 1 over
     * 0.67/0.26/0.07, eight draws alike would be a 4% chance for these
     * fixed seeds, and they are not. */
    assert_true(distinct > 0);
    sl_completion_clear(&c);
    sl_engine_free(e);
}

/* Choices 1, 10 and 2: "1" is a choice and begins 10, so a probe asks for
 * what comes after "1" (the same body with an assistant message "1" to
 * continue); 1 takes what is not "0". A probe the server refuses fails the
 * row naming it. */
static void choices_that_begin_alike_send_a_probe(void **state)
{
    sl_engine *e = open_at(fake.url, false);
    const char *choices[3] = {"1", "10", "2"};
    sl_request q = {.id = "rate", .prompt = "Rate it.", .sampling = sl_sampling_default(),
                    .choices = choices, .n_choices = 3};
    int before = posts();
    sl_result r;
    if (sl_engine_generate(e, &q, &r) != SL_OK)
        fail_msg("%s", sl_last_error());
    assert_int_equal(posts(), before + 2);
    char *body = last_body(); /* the probe's */
    json_t *sent = json_loads(body, 0, NULL);
    json_t *msgs = json_object_get(sent, "messages");
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    assert_string_equal(json_string_value(json_object_get(last, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(last, "content")), "1");
    assert_true(json_is_true(json_object_get(sent, "continue_final_message")));
    assert_int_equal(json_integer_value(json_object_get(sent, "max_tokens")), 1);
    json_decref(sent);
    free(body);
    /* 1: 0.6 * (1 - 0.25); 10: 0.6 * 0.25; 2: 0.3 ("x" is none): of 0.9. */
    json_t *scores = json_loads(r.scores, 0, NULL);
    assert_float_equal(json_real_value(json_object_get(scores, "1")), 0.45 / 0.9, 1e-6);
    assert_float_equal(json_real_value(json_object_get(scores, "10")), 0.15 / 0.9, 1e-6);
    assert_float_equal(json_real_value(json_object_get(scores, "2")), 0.3 / 0.9, 1e-6);
    json_decref(scores);
    assert_string_equal(r.text, "1");
    assert_int_equal(r.prompt_tokens, 40); /* the row's first answer's */
    sl_result_clear(&r);

    q.prompt = "Rate, failing probes.";
    assert_int_equal(sl_engine_generate(e, &q, &r), SL_ERR_ENGINE);
    assert_non_null(strstr(sl_last_error(), "rate, probe '1'"));
    assert_non_null(strstr(sl_last_error(), "HTTP 400: no prefill here"));
    assert_non_null(strstr(sl_last_error(), "continue_final_message"));
    sl_engine_free(e);
}

static void run_llama_server_conversations(bool stream)
{
    if (server.pid <= 0)
        skip();
    sl_engine *e = open_at(server.url, stream);
    const sl_image *pixels[] = {img_a, img_b};
    sl_content_part text_only[] = {{"Name a colour."}};
    sl_content_part one[] = {{NULL}, {"Describe this image."}};
    sl_content_part two[] = {{NULL}, {NULL}, {"Compare the two images."}};
    sl_content_part sys[] = {{"You answer briefly."}};
    sl_content_part a1[] = {{"Blue."}};
    sl_content_part u2[] = {{"Another one."}};
    sl_message convs[4][4] = {
        {{"user", text_only, 1}},
        {{"user", one, 2}},
        {{"user", two, 3}},
        {{"system", sys, 1}, {"user", text_only, 1}, {"assistant", a1, 1}, {"user", u2, 1}},
    };
    const int n_msgs[4] = {1, 1, 1, 4}, n_imgs[4] = {0, 1, 2, 0};
    int prompt_tokens[4];
    for (int k = 0; k < 4; k++) {
        sl_request q = conversation("ls", convs[k], n_msgs[k], 8);
        q.images = pixels;
        q.n_images = n_imgs[k];
        q.want_response_json = true;
        sl_result r;
        time_t before = time(NULL);
        if (sl_engine_generate(e, &q, &r) != SL_OK)
            fail_msg("conversation %d: %s", k, sl_last_error());
        assert_non_null(r.text);
        assert_true(r.generated_tokens > 0 && r.generated_tokens <= 8);
        tc_check_chat_completion(r.response_json, &r, NULL, (long long)before);
        tc_sdk_validates(r.response_json);
        prompt_tokens[k] = r.prompt_tokens;
        sl_result_clear(&r);
    }
    /* Each image took its positions; the turns are all there. */
    assert_true(prompt_tokens[1] > prompt_tokens[0] + 10);
    assert_true(prompt_tokens[2] > prompt_tokens[1] + 10);
    assert_true(prompt_tokens[3] > prompt_tokens[0] + 8);

    /* A forwarded body with its own seed, temperature and max_tokens: they
     * are what the server used (the same seed, the same text; max_tokens 3
     * bounds the answer, not the engine's 50). */
    static const char b1[] =
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"Tell me a story.\"}]}],\"seed\":7,\"temperature\":1.5,\"max_tokens\":3}";
    char b2[sizeof b1];
    memcpy(b2, b1, sizeof b1); /* the same body, not the same pointer */
    sl_request q = {.id = "fwd", .openai_body = b1, .sampling = sl_sampling_default(),
                    .want_response_json = true};
    q.sampling.max_tokens = 50;
    sl_result r1, r2;
    assert_int_equal(sl_engine_generate(e, &q, &r1), SL_OK);
    q.openai_body = b2;
    assert_int_equal(sl_engine_generate(e, &q, &r2), SL_OK);
    assert_int_equal(r1.generated_tokens, 3);
    assert_string_equal(r1.finish_reason, "length");
    assert_string_equal(r1.text, r2.text);
    tc_sdk_validates(r1.response_json);
    sl_result_clear(&r1);
    sl_result_clear(&r2);
    sl_engine_free(e);
}

/* llama-server takes "n" (its n_cmpl, up to its --parallel): one request,
 * the prompt and image computed once, the first answer the one a request
 * of its own with the row's seed gives, the other answers drawn with other
 * seeds. */
static void samples_through_llama_server(void **state)
{
    if (server.pid <= 0)
        skip();
    sl_engine *e = open_at(server.url, false);
    const sl_image *pixels[] = {img_a};
    sl_content_part one[] = {{NULL}, {"Describe this image."}};
    sl_message conv[] = {{"user", one, 2}};
    sl_request q = conversation("n", conv, 1, 8);
    q.images = pixels;
    q.n_images = 1;
    q.sampling.temperature = 1.0f;
    q.sampling.seed = 99;
    sl_result single;
    if (sl_engine_generate(e, &q, &single) != SL_OK)
        fail_msg("one answer: %s", sl_last_error());
    q.sampling.n = 2;
    sl_completion c = complete_one(e, &q);
    assert_int_equal(c.n_results, 2);
    assert_string_equal(c.results[0].text, single.text);
    assert_string_not_equal(c.results[1].text, single.text);
    for (int k = 0; k < 2; k++)
        assert_int_equal(c.results[k].prompt_tokens, single.prompt_tokens);
    sl_completion_clear(&c);
    sl_result_clear(&single);
    sl_engine_free(e);
}

static void conversations_through_llama_server(void **state)
{
    run_llama_server_conversations(false);
}

static void conversations_through_llama_server_streamed(void **state)
{
    run_llama_server_conversations(true);
}

int main(void)
{
    if (getenv("SLUICE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLUICE_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_conversation_goes_out_as_openai_messages),
        cmocka_unit_test(a_prompt_with_images_goes_out_as_one_user_message),
        cmocka_unit_test(a_videos_frames_go_out_as_one_video_url_part),
        cmocka_unit_test(a_body_is_forwarded_as_given_but_model_and_stream),
        cmocka_unit_test(choices_ask_for_one_token_and_its_alternatives),
        cmocka_unit_test(samples_go_out_as_one_request_with_n),
        cmocka_unit_test(choices_that_begin_alike_send_a_probe),
        cmocka_unit_test(samples_through_llama_server),
        cmocka_unit_test(conversations_through_llama_server),
        cmocka_unit_test(conversations_through_llama_server_streamed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
