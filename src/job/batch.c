/* job/batch.c — see batch.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/data_url.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/hash.h"
#include "core/log.h"
#include "io/s3.h"
#include "io/source_parse.h"
#include "io/shard.h"
#include "job/batch.h"

bool job_is_batch(const sl_caption_params *p)
{
    return p->input_format && strcmp(p->input_format, "openai-batch") == 0;
}

void batch_row_free(batch_row *b)
{
    if (!b)
        return;
    sl_batch_req_clear(&b->req);
    for (int i = 0; i < SL_MAX_IMAGES; i++)
        sl_image_free(b->images[i]);
    json_decref(b->send_body);
    sl_free(b);
}

sl_status batch_check_params(const sl_caption_params *p)
{
    if (p->n_tasks > 0)
        return sl_fail(SL_ERR_INVALID_ARG, "a batch file's requests are whole conversations: "
                                           "tasks (--task, --tasks) do not apply; drop them");
    if (p->include_image_bytes)
        return sl_fail(SL_ERR_INVALID_ARG, "--include-image-bytes does not apply to a batch file");
    if (p->output_format && strcmp(p->output_format, "jsonl") != 0 &&
        strcmp(p->output_format, "parquet") != 0 && strcmp(p->output_format, "openai-batch") != 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--format must be openai-batch (jsonl) or parquet for "
                                           "a batch file, got '%s'", p->output_format);
    return SL_OK;
}

sl_status batch_row_take(caption_row *r, sl_source_item *it)
{
    batch_row *b = sl_calloc(1, sizeof *b);
    if (!b)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", it->id);
    if (it->batch) {
        b->req = *it->batch;
        memset(it->batch, 0, sizeof *it->batch);
    }
    /* The body is held whole while the row is in flight: its strings are
     * most of it (base64 images above all). */
    b->line_bytes = 512;
    for (int i = 0; i < b->req.n_images; i++)
        b->line_bytes += strlen(b->req.images[i]);
    for (int i = 0; i < b->req.n_parts; i++)
        b->line_bytes += b->req.parts[i].text ? strlen(b->req.parts[i].text) + 64 : 64;
    r->batch = b;
    return SL_OK;
}

/* --- decode: the images ---------------------------------------------------------- */

static const char *mime_of(const uint8_t *d, size_t n)
{
    const char *f = job_image_format(d, n);
    static const struct {
        const char *format, *mime;
    } types[] = {{"jpeg", "image/jpeg"}, {"png", "image/png"}, {"webp", "image/webp"},
                 {"gif", "image/gif"}};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (strcmp(f, types[i].format) == 0)
            return types[i].mime;
    return "application/octet-stream";
}

typedef enum { IMG_DATA, IMG_HTTP, IMG_LOCAL } img_kind;

static img_kind kind_of(const char *url)
{
    char scheme[16];
    if (sl_batch_is_data_url(url))
        return IMG_DATA;
    sl_url_scheme(url, scheme);
    if (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0)
        return IMG_HTTP;
    return IMG_LOCAL;
}

/* A local image (a path, or a file:// URL decoded as a manifest's is) read
 * into *data. */
static sl_status read_local(job *j, const char *url, int i, uint8_t **data, size_t *len)
{
    char scheme[16];
    sl_url_scheme(url, scheme);
    if (strcmp(scheme, "file") != 0)
        return job_read_local(url, j->src_params.max_item_bytes, data, len);
    char *path = NULL, *why = NULL;
    int rc = sl_file_url_path(url, &path, &why);
    if (rc < 0)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading image %d", i + 1);
    if (rc > 0) {
        sl_status st = sl_fail(SL_ERR_INVALID_ARG, "image %d: %s", i + 1, why);
        sl_free(why);
        return st;
    }
    sl_status st = job_read_local(path, j->src_params.max_item_bytes, data, len);
    sl_free(path);
    return st;
}

/* Image i's encoded bytes into *data (sl_free). */
static sl_status image_bytes(job *j, const char *url, int i, uint8_t **data, size_t *len)
{
    char err[256];
    switch (kind_of(url)) {
    case IMG_DATA:
        if (sl_batch_data_url_decode(url, data, len, err, sizeof err) != SL_OK)
            return sl_fail(SL_ERR_INVALID_ARG, "image %d: %s", i + 1, err);
        return SL_OK;
    case IMG_HTTP:
        return sl_fetch(url, &j->fetch, data, len);
    case IMG_LOCAL:
        if (!j->p->allow_local_images)
            return sl_fail(SL_ERR_INVALID_ARG, "image %d is a local path ('%.200s'): give "
                           "--allow-local-images to let requests read local files", i + 1, url);
        return read_local(j, url, i, data, len);
    }
    return SL_OK;
}

/* openai engine: the body as sent, local images as data: URLs (the server
 * cannot read our files); data: and http(s) URLs go as they are. */
static sl_status rewrite_local_images(job *j, batch_row *b, size_t *bytes)
{
    json_t *messages = NULL;
    size_t mi, ci;
    json_t *m, *part;
    int k = 0;
    json_array_foreach(json_object_get(b->req.body, "messages"), mi, m) {
        json_t *content = json_object_get(m, "content");
        if (!json_is_array(content))
            continue;
        json_array_foreach(content, ci, part) {
            const char *type = json_string_value(json_object_get(part, "type"));
            if (!type || strcmp(type, "image_url") != 0)
                continue;
            const char *url = b->req.images[k++];
            if (kind_of(url) != IMG_LOCAL)
                continue;
            uint8_t *data;
            size_t len;
            sl_status st = image_bytes(j, url, k - 1, &data, &len);
            if (st != SL_OK)
                return st;
            char *du = sl_data_url(data, len, mime_of(data, len), NULL);
            sl_free(data);
            if (!du)
                return sl_fail(SL_ERR_NOMEM, "out of memory encoding image %d", k);
            if (!b->send_body && !(b->send_body = json_deep_copy(b->req.body))) {
                sl_free(du);
                return sl_fail(SL_ERR_NOMEM, "out of memory rewriting the body");
            }
            messages = json_object_get(b->send_body, "messages");
            json_t *copy = json_array_get(json_object_get(json_array_get(messages, mi), "content"),
                                          ci);
            json_t *obj = json_pack("{s:s}", "url", du);
            *bytes += strlen(du);
            sl_free(du);
            if (!obj || json_object_set_new(copy, "image_url", obj) != 0)
                return sl_fail(SL_ERR_NOMEM, "out of memory rewriting the body");
        }
    }
    return SL_OK;
}

void batch_decode(job *j, sl_row *row, caption_row *r)
{
    batch_row *b = r->batch;
    if (!b || !b->req.body)
        return;
    double t0 = sl_mono_s();
    size_t bytes = 0;
    sl_status st = SL_OK;
    bool openai = job_uses_openai(j->p);
    bool thumb = b->req.n_images > 0 && gallery_wants_thumb(j->gallery, sl_row_seq(row));
    if (openai)
        st = rewrite_local_images(j, b, &bytes);
    for (int i = 0; st == SL_OK && i < b->req.n_images; i++) {
        /* The openai engine's server reads the images itself: only the
         * first is decoded here, for the report's thumbnail. */
        if (openai && !(i == 0 && thumb))
            break;
        uint8_t *data = NULL;
        size_t len = 0;
        const char *url = b->req.images[i];
        /* The row's error begins with its id (r->rel): the name is the
         * image's place alone. "ID image N" cut at 64 bytes lost the N
         * (the part a user needs) from a custom_id past 55 bytes. */
        char name[32];
        snprintf(name, sizeof name, "image %d", i + 1);
        st = image_bytes(j, url, i, &data, &len);
        if (st == SL_OK)
            st = sl_image_decode(data, len, name, &j->p->image, &b->images[i]);
        if (st == SL_OK && i == 0) {
            r->format = job_image_format(data, len);
            r->width = sl_image_width(b->images[0]);
            r->height = sl_image_height(b->images[0]);
            r->source_width = sl_image_source_width(b->images[0]);
            r->source_height = sl_image_source_height(b->images[0]);
        }
        sl_free(data);
        if (st == SL_OK) {
            bytes += sl_image_bytes(b->images[i]);
        } else if (openai) {
            /* The server reads the images, BMPs and all: a thumbnail sluice
             * cannot make fails nothing (it failed the rows the report
             * sampled, and those alone). */
            sl_log(SL_LOG_DEBUG, "no thumbnail for %s: %s", r->rel, sl_last_error());
            st = SL_OK;
        }
    }
    if (st == SL_OK && thumb && b->images[0]) {
        const gallery_params *gp = gallery_params_of(j->gallery);
        if (sl_image_encode_jpeg(b->images[0], gp->thumb_edge, gp->thumb_quality, &r->thumb,
                                 &r->thumb_len) != SL_OK)
            sl_log(SL_LOG_DEBUG, "no thumbnail for %s: %s", r->rel, sl_last_error());
        bytes += r->thumb_len;
    }
    if (openai) { /* the thumbnail's image is not sent */
        if (b->images[0])
            bytes -= sl_image_bytes(b->images[0]);
        sl_image_free(b->images[0]);
        b->images[0] = NULL;
    }
    b->bytes = bytes;
    sl_row_set_bytes(row, sl_row_bytes(row) + bytes);
    r->decode_ms = (sl_mono_s() - t0) * 1e3;
    if (st != SL_OK)
        sl_row_fail_status(row, st, "%s: %s", r->rel, sl_last_error());
}

/* --- engine: the request ----------------------------------------------------------- */

sl_status batch_submit(job *j, sl_engine *engine, sl_row *row, caption_row *r)
{
    const sl_caption_params *p = j->p;
    batch_row *b = r->batch;
    const sl_batch_req *q = &b->req;
    const char *model = sl_engine_model_name(engine);
    if (q->model && !p->ignore_model && (!model || strcmp(q->model, model) != 0)) {
        sl_row_fail_status(row, SL_ERR_INVALID_ARG, "%s: body.model is '%.200s' but the model "
                           "loaded is '%s' (--ignore-model runs it on this one)", r->rel, q->model,
                           model ? model : "?");
        return SL_OK;
    }
    sl_request req = {
        .id = r->rel,
        .sampling = p->sampling,
        .stop = p->n_stop ? p->stop : NULL,
        .n_stop = p->n_stop,
        .json_schema = q->json_schema ? q->json_schema : p->json_schema,
        .grammar = q->json_schema ? NULL : p->grammar,
        .messages = q->messages,
        .n_messages = q->n_messages,
        .images = (const sl_image *const *)b->images,
        .n_images = q->n_images,
        .want_response_json = true,
    };
    req.sampling.seed = r->seed;
    if (q->max_tokens > 0)
        req.sampling.max_tokens = q->max_tokens;
    if (q->has_temperature)
        req.sampling.temperature = q->temperature;
    if (q->has_top_p)
        req.sampling.top_p = q->top_p;
    if (q->has_top_k)
        req.sampling.top_k = q->top_k;
    if (q->has_min_p)
        req.sampling.min_p = q->min_p;
    if (q->has_repeat_penalty)
        req.sampling.repeat_penalty = q->repeat_penalty;
    if (q->has_presence_penalty)
        req.sampling.presence_penalty = q->presence_penalty;
    if (q->has_frequency_penalty)
        req.sampling.frequency_penalty = q->frequency_penalty;
    if (q->has_seed)
        req.sampling.seed = q->seed;
    if (q->has_logprobs) {
        req.sampling.logprobs = q->logprobs;
        req.sampling.top_logprobs = q->top_logprobs;
    }
    req.sampling.n = q->n; /* the openai engine sends the body's own */
    /* Tools, penalties, logit_bias ...: the answer is the one the request
     * gives without them, which a user who relies on them must be told. */
    if (!job_uses_openai(p) && q->unread_key && !atomic_exchange(&j->told_unread_key, true))
        sl_log(SL_LOG_WARN, "%s: body.%.60s is not read by the llama engine: the request is "
               "answered without it (--engine openai sends it to the server); other requests "
               "with keys it does not read are not named", r->rel, q->unread_key);
    if (q->n_stop) {
        req.stop = q->stop;
        req.n_stop = q->n_stop;
    }
    char *body_text = NULL;
    if (job_uses_openai(p)) {
        /* The body goes as it is (its own sampling and response_format),
         * but for what the endpoint needs. */
        json_t *body = b->send_body ? b->send_body : q->body;
        if (p->ignore_model && json_object_get(body, "model")) {
            if (!b->send_body && !(b->send_body = json_deep_copy(q->body))) {
                sl_row_fail_status(row, SL_ERR_NOMEM, "%s: out of memory", r->rel);
                return SL_OK;
            }
            body = b->send_body;
            json_object_del(body, "model");
        }
        body_text = json_dumps(body, JSON_COMPACT);
        if (!body_text) {
            sl_row_fail_status(row, SL_ERR_NOMEM, "%s: out of memory", r->rel);
            return SL_OK;
        }
        req.openai_body = body_text;
        req.messages = NULL; /* the body holds them */
        req.n_messages = 0;
        req.images = NULL;
        req.n_images = 0;
        req.grammar = NULL;
    }
    sl_status st = sl_engine_submit(engine, &req, row);
    free(body_text);
    if (st == SL_OK || st == SL_ERR_IO)
        return st;
    sl_row_fail_status(row, st, "%s", sl_last_error());
    return SL_OK;
}

/* --- write: OpenAI's batch output ---------------------------------------------------- */

enum { BC_ID, BC_CUSTOM_ID, BC_RESPONSE, BC_ERROR }; /* JSONL */
enum { BP_ID, BP_CUSTOM_ID, BP_STATUS, BP_REQUEST_ID, BP_BODY, BP_ERROR_CODE, BP_ERROR_MESSAGE };

static const sl_schema_column jsonl_columns[] = {
    [BC_ID] = {"id", SL_PQ_STRING, false, NULL, false, false},
    [BC_CUSTOM_ID] = {"custom_id", SL_PQ_STRING, true, NULL, false, false},
    [BC_RESPONSE] = {"response", SL_PQ_STRING, true, NULL, false, true},
    [BC_ERROR] = {"error", SL_PQ_STRING, true, NULL, false, true},
};

static const sl_schema_column parquet_columns[BATCH_CELLS] = {
    [BP_ID] = {"id", SL_PQ_STRING, false, NULL, false, false},
    [BP_CUSTOM_ID] = {"custom_id", SL_PQ_STRING, true, NULL, false, false},
    [BP_STATUS] = {"status_code", SL_PQ_INT64, true, NULL, false, false},
    [BP_REQUEST_ID] = {"request_id", SL_PQ_STRING, true, NULL, false, false},
    [BP_BODY] = {"body", SL_PQ_STRING, true, NULL, false, true},
    [BP_ERROR_CODE] = {"error_code", SL_PQ_STRING, true, NULL, false, false},
    [BP_ERROR_MESSAGE] = {"error_message", SL_PQ_STRING, true, NULL, false, false},
};

static bool parquet_output(const sl_caption_params *p)
{
    return p->output_format && strcmp(p->output_format, "parquet") == 0;
}

const sl_schema *batch_errors_schema(void)
{
    static const sl_schema lines = {.head = jsonl_columns,
                                    .n_head = sizeof jsonl_columns / sizeof *jsonl_columns};
    return &lines;
}

sl_status batch_schema_plan(const sl_caption_params *p, const char *const *stage_columns,
                            size_t n_stage_columns, caption_schema *out)
{
    memset(out, 0, sizeof *out);
    bool pq = parquet_output(p);
    size_t n = pq ? BATCH_CELLS : sizeof jsonl_columns / sizeof *jsonl_columns;
    out->head = sl_calloc(n, sizeof *out->head);
    out->head_cell = sl_calloc(n, sizeof *out->head_cell);
    if (!out->head || !out->head_cell)
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    for (size_t i = 0; i < n; i++) {
        out->head[i] = pq ? parquet_columns[i] : jsonl_columns[i];
        out->head_cell[i] = (int)i;
    }
    out->schema.head = out->head;
    out->schema.n_head = n;
    /* The columns stages set follow OpenAI's fields (they were dropped:
     * a stage's tags after the engine went nowhere); a request line's own
     * keys are not columns. */
    const char *reserved[BATCH_CELLS];
    for (size_t i = 0; i < n; i++)
        reserved[i] = out->head[i].name;
    sl_status st = sl_columns_new(reserved, n, NULL, 0, &out->cols);
    for (size_t i = 0; i < n_stage_columns && st == SL_OK; i++)
        st = sl_columns_add(out->cols, stage_columns[i]);
    out->schema.passthrough = out->cols;
    return st;
}

/* OpenAI's error codes where one fits; sluice's own otherwise. */
static const char *error_code(const char *stage, sl_status status)
{
    if (stage && strcmp(stage, "read") == 0)
        return "invalid_request";
    if (stage && strcmp(stage, "decode") == 0)
        switch (status) {
        case SL_ERR_INVALID_ARG: return "invalid_image_url";
        case SL_ERR_DECODE: return "invalid_image_format";
        case SL_ERR_TOO_LARGE: return "image_too_large";
        default: return "image_fetch_failed";
        }
    switch (status) {
    case SL_ERR_INVALID_ARG: return "invalid_request";
    case SL_ERR_TOO_LONG: return "context_length_exceeded";
    case SL_ERR_INVALID_OUTPUT: return "invalid_output";
    case SL_ERR_NOMEM: return "out_of_memory";
    default: return "server_error";
    }
}

/* A chat.completion of our own when the engine made none. */
static json_t *completion_of(const job *j, const caption_row *r, const char *id)
{
    const sl_result *res = &r->result;
    int total = res->prompt_tokens + res->generated_tokens;
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:o}, s:s?}], s:{s:i, s:i, s:i}}",
                     "id", id, "object", "chat.completion", "created", (json_int_t)time(NULL),
                     "model", j->model_name, "choices", "index", 0, "message", "role",
                     "assistant", "content", job_json_text(res->text ? res->text : ""),
                     "finish_reason", res->finish_reason, "usage",
                     "prompt_tokens", res->prompt_tokens, "completion_tokens",
                     res->generated_tokens, "total_tokens", total);
}

static char *dump(json_t *v)
{
    char *t = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    return t;
}

/* A request's n answers (body.n) as one chat.completion, as OpenAI answers
 * it: the first answer's object with every answer's choice (index k, in
 * order) and usage with the prompt counted once and the completions
 * summed. NULL when out of memory (sl_free). */
static char *answers_body(const job *j, const caption_row *r, const char *id)
{
    json_t *choices = json_array(), *root = NULL;
    int completion = 0, prompt = 0, cached = 0;
    bool ok = choices != NULL;
    for (int k = 0; ok && k < r->n_results; k++) {
        const sl_result *a = &r->results[k];
        json_t *one = a->response_json ? json_loads(a->response_json, 0, NULL) : NULL;
        json_t *choice = json_array_get(json_object_get(one, "choices"), 0);
        if (!choice)
            choice = json_pack("{s:{s:s, s:o}, s:s?, s:n}", "message", "role", "assistant",
                               "content", job_json_text(a->text ? a->text : ""),
                               "finish_reason", a->finish_reason,
                               "logprobs");
        else
            json_incref(choice);
        ok = choice && json_object_set_new(choice, "index", json_integer(k)) == 0 &&
             json_array_append_new(choices, choice) == 0;
        if (k == 0 && one) {
            root = one;
            one = NULL;
        }
        json_decref(one);
        completion += a->generated_tokens;
        if (k == 0) {
            prompt = a->prompt_tokens;
            cached = a->cached_tokens;
        }
    }
    if (ok && !root)
        root = json_pack("{s:s, s:s, s:I, s:s}", "id", id, "object", "chat.completion", "created",
                         (json_int_t)time(NULL), "model", j->model_name);
    ok = ok && root &&
         json_object_set(root, "choices", choices) == 0 &&
         json_object_set_new(root, "usage",
                             json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", prompt,
                                       "completion_tokens", completion, "total_tokens",
                                       prompt + completion, "prompt_tokens_details",
                                       "cached_tokens", cached)) == 0;
    json_decref(choices);
    char *text = ok ? sl_json_dump(root, JSON_COMPACT, NULL) : NULL;
    json_decref(root);
    return text;
}

bool batch_copy_without_request(const job *j, sl_row *row, const caption_row *r)
{
    if (!job_is_batch(j->p) || r->batch)
        return false;
    sl_row_fail_status(row, SL_ERR_INVALID_ARG,
                       "%s: a stage copied this batch request before the engine, and a copy "
                       "carries no request of its own (the input's row keeps it): place the "
                       "stage that copies after the engine (@engine)", r->rel);
    return true;
}

void batch_cells(const job *j, const caption_row *r, const sl_row *row, bool as_line,
                 sl_pq_value *v, batch_cells_text *owned)
{
    memset(owned, 0, sizeof *owned);
    const batch_row *b = r->batch;
    /* A copy (fan-out) answers under its own id, "<custom_id>#k": the one
     * the ledger records it by, unique in the output. A line without a
     * custom_id answers under its line's id ("FILE:LINE"), as the ledger
     * records it: readers (vLLM's BatchRequestOutput) take a string. */
    const char *custom_id = b && b->req.custom_id ? b->req.custom_id
                            : b || r->root_len    ? r->rel
                                                  : NULL;
    bool failed = sl_row_failed(row);
    uint64_t h = sl_hash_mix64(sl_hash_fnv1a64(r->rel));
    char id[64], request_id[64], chat_id[64];
    snprintf(id, sizeof id, "batch_req_%016llx", (unsigned long long)h);
    snprintf(request_id, sizeof request_id, "req_%016llx", (unsigned long long)(h ^ 0x5bd1e995));
    snprintf(chat_id, sizeof chat_id, "chatcmpl-%016llx", (unsigned long long)h);
    char *body = NULL, *code_json = NULL;
    const char *code = NULL, *message = NULL;
    if (!failed && r->has_result && r->n_results > 1) {
        body = answers_body(j, r, chat_id);
    } else if (!failed && r->has_result) {
        body = r->result.response_json ? sl_strdup(r->result.response_json) : NULL;
        if (!body) {
            char *t = dump(completion_of(j, r, chat_id));
            body = t ? sl_strdup(t) : NULL;
            free(t);
        }
    } else {
        code = error_code(sl_row_error_stage(row), sl_row_error_status(row));
        message = sl_row_error(row) ? sl_row_error(row) : "failed";
    }
    owned->text[0] = body;
    bool pq = parquet_output(j->p) && !as_line;
    sl_pq_value null = {.is_null = true};
    v[pq ? BP_ID : BC_ID] = (sl_pq_value){.ptr = id, .len = strlen(id)};
    v[pq ? BP_CUSTOM_ID : BC_CUSTOM_ID] =
        custom_id ? (sl_pq_value){.ptr = custom_id, .len = strlen(custom_id)} : null;
    /* The id strings live in this frame: copy them to owned text. */
    owned->text[1] = sl_strdup(id);
    v[pq ? BP_ID : BC_ID] = owned->text[1] ? (sl_pq_value){.ptr = owned->text[1],
                                                           .len = strlen(owned->text[1])}
                                           : null;
    if (pq) {
        owned->text[2] = body ? sl_strdup(request_id) : NULL;
        v[BP_STATUS] = body ? (sl_pq_value){.i64 = 200} : null;
        v[BP_REQUEST_ID] = owned->text[2] ? (sl_pq_value){.ptr = owned->text[2],
                                                          .len = strlen(owned->text[2])}
                                          : null;
        v[BP_BODY] = body ? (sl_pq_value){.ptr = body, .len = strlen(body)} : null;
        v[BP_ERROR_CODE] = code ? (sl_pq_value){.ptr = code, .len = strlen(code)} : null;
        v[BP_ERROR_MESSAGE] = message ? (sl_pq_value){.ptr = message, .len = strlen(message)}
                                      : null;
        return;
    }
    if (body) {
        json_t *parsed = json_loads(body, 0, NULL);
        char *t = dump(json_pack("{s:i, s:s, s:o}", "status_code", 200, "request_id", request_id,
                                 "body", parsed ? parsed : json_string(body)));
        owned->text[2] = t ? sl_strdup(t) : NULL;
        free(t);
    } else {
        char *t = dump(json_pack("{s:s, s:o}", "code", code, "message", job_json_text(message)));
        code_json = t ? sl_strdup(t) : NULL;
        free(t);
        owned->text[3] = code_json;
    }
    v[BC_RESPONSE] = owned->text[2] ? (sl_pq_value){.ptr = owned->text[2],
                                                    .len = strlen(owned->text[2])}
                                    : null;
    v[BC_ERROR] = code_json ? (sl_pq_value){.ptr = code_json, .len = strlen(code_json)} : null;
}

void batch_cells_free(batch_cells_text *owned)
{
    for (size_t i = 0; i < sizeof owned->text / sizeof *owned->text; i++)
        sl_free(owned->text[i]);
}

char *batch_show_text(const caption_row *r, const char *answer)
{
    const char *q = r->batch && r->batch->req.last_user_text ? r->batch->req.last_user_text : "";
    return sl_asprintf("%.500s\n→ %s", q, answer ? answer : "");
}

/* --- the errors file ----------------------------------------------------------------- */

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* Appends n to *list (grown by doubling). */
static bool push_number(long **list, size_t *n, size_t *cap, long v)
{
    long *grown = sl_grow(*list, *n, cap, sizeof *grown);
    if (!grown)
        return false;
    *list = grown;
    (*list)[(*n)++] = v;
    return true;
}

/* An s3:// output: its errors parts are objects beside the parts (uploaded
 * with each, before it), so every rank's are there; those of the part
 * objects in the bucket (the committed parts) go into out, in order. One
 * listing; what it holds is two numbers a part. */
static sl_status collect_remote(const job *j, FILE *out)
{
    const sl_s3 *s3 = sl_s3_shared();
    char *prefix = sl_asprintf("%s/", j->remote);
    sl_s3_list *l = NULL;
    sl_status st = !prefix ? sl_fail(SL_ERR_NOMEM, "out of memory")
                   : !s3   ? sl_fail(SL_ERR_INVALID_ARG, "no S3 client for '%s'", j->remote)
                           : sl_s3_list_open(s3, prefix, &l);
    /* Keys come whole: a name follows the prefix's key ("s3://b/k/" -> "k/"). */
    size_t skip = prefix ? strlen(strchr(prefix + 5, '/') + 1) : 0;
    long *parts = NULL, *errs = NULL;
    size_t n_parts = 0, n_errs = 0, cap_parts = 0, cap_errs = 0;
    const char *fmt = sl_sink_extension(j->sink);
    for (bool done = false; st == SL_OK && !done;) {
        const char *key;
        uint64_t size;
        if ((st = sl_s3_list_next(l, &key, &size, &done)) != SL_OK || done)
            break;
        if (strlen(key) < skip || strchr(key + skip, '/'))
            continue;
        const char *name = key + skip, *dot = strrchr(name, '.');
        long k = sl_shard_part_number(name);
        bool ok = true;
        if (k >= 0 && dot && strcmp(dot + 1, fmt) == 0)
            ok = push_number(&parts, &n_parts, &cap_parts, k);
        else if ((k = sl_shard_errors_number(name)) >= 0)
            ok = push_number(&errs, &n_errs, &cap_errs, k);
        if (!ok)
            st = sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", j->remote);
    }
    sl_s3_list_free(l);
    /* Key order is number order only up to 99999 (then a sixth digit). */
    qsort(parts, n_parts, sizeof *parts, cmp_long);
    qsort(errs, n_errs, sizeof *errs, cmp_long);
    for (size_t a = 0, b = 0; st == SL_OK && a < n_parts && b < n_errs;) {
        if (parts[a] < errs[b]) {
            a++;
        } else if (errs[b] < parts[a]) {
            b++;
        } else {
            char *url = sl_asprintf("%serrors-%05ld.jsonl", prefix, errs[b]);
            st = url ? sl_s3_download(s3, url, out) : sl_fail(SL_ERR_NOMEM, "out of memory");
            sl_free(url);
            a++;
            b++;
        }
    }
    sl_free(parts);
    sl_free(errs);
    sl_free(prefix);
    return st;
}

/* The errors file's temporary, beside it and its own: two runs (into
 * other folders) given the same --errors-file must not write one
 * temporary, so its name holds the pid and a random tail, and it is
 * created only if it does not exist (O_EXCL); another name is tried when
 * it does. *tmp (sl_free) and *out, or NULL with errno set. */
static FILE *open_errors_tmp(const char *file, char **tmp)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t r = sl_hash_mix64((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
                 sl_hash_mix64((uint64_t)getpid());
    for (int attempt = 0; attempt < 64; attempt++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL; /* another tail a try */
        *tmp = sl_asprintf("%s.tmp.%ld.%08lx", file, (long)getpid(),
                           (unsigned long)(r >> 32));
        if (!*tmp) {
            errno = ENOMEM;
            return NULL;
        }
        int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        FILE *out = fd >= 0 ? fdopen(fd, "wb") : NULL;
        if (out)
            return out;
        int err = errno;
        if (fd >= 0) {
            close(fd);
            unlink(*tmp);
        }
        sl_free(*tmp);
        *tmp = NULL;
        errno = err;
        if (fd >= 0 || err != EEXIST)
            return NULL;
    }
    return NULL; /* errno EEXIST */
}

sl_status batch_errors_collect(const job *j)
{
    const char *file = j->p->errors_file;
    if (!file)
        return SL_OK;
    char *tmp = NULL;
    FILE *out = open_errors_tmp(file, &tmp);
    if (!out)
        return sl_fail(SL_ERR_IO, "--errors-file '%s': cannot create its temporary beside it: "
                                  "%s", file, strerror(errno));
    if (j->remote) {
        sl_status st = collect_remote(j, out);
        bool ok = st == SL_OK && fflush(out) == 0 && fsync(fileno(out)) == 0;
        ok = fclose(out) == 0 && ok;
        if (st == SL_OK && (!ok || rename(tmp, file) != 0))
            st = sl_fail(SL_ERR_IO, "--errors-file '%s': %s", file, strerror(errno));
        if (st != SL_OK)
            unlink(tmp);
        sl_free(tmp);
        return st;
    }
    bool ok = true;
    char buf[1 << 16], unread[4200] = "";
    int unread_errno = 0;
    const char *fmt = sl_sink_extension(j->sink);
    /* Every part in the folder: under MPI the other ranks' too (rank 0
     * collects once all are done). */
    sl_part_scan scan = {.max_number = -1};
    long last = sl_shard_scan_parts(j->dir, &scan) == SL_OK && scan.max_number > j->shard
                    ? scan.max_number
                    : j->shard;
    for (long k = 0; ok && k <= last; k++) {
        char *part = sl_asprintf("%s/part-%05ld.%s", j->dir, k, fmt);
        char *errs = sl_asprintf("%s/errors-%05ld.jsonl", j->dir, k);
        /* Only the errors of committed parts (an errors part of a part that
         * was never committed is a leftover). */
        FILE *in = part && errs && access(part, F_OK) == 0 ? fopen(errs, "rbe") : NULL;
        size_t n;
        while (in && ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
            ok = fwrite(buf, 1, n, out) == n;
        /* A part that could not be read whole would leave the file short
         * while the run said it holds every failed request. */
        if (in && ok && ferror(in)) {
            unread_errno = errno;
            snprintf(unread, sizeof unread, "%s", errs);
            ok = false;
        }
        if (in)
            fclose(in);
        sl_free(part);
        sl_free(errs);
    }
    ok = ok && fflush(out) == 0 && fsync(fileno(out)) == 0;
    ok = fclose(out) == 0 && ok;
    sl_status st = SL_OK;
    if (unread[0]) {
        st = sl_fail(SL_ERR_IO, "--errors-file '%s': cannot read '%s': %s (the file is left as "
                                "it was)", file, unread, strerror(unread_errno));
        unlink(tmp);
    } else if (!ok || rename(tmp, file) != 0) {
        st = sl_fail(SL_ERR_IO, "--errors-file '%s': %s", file, strerror(errno));
        unlink(tmp);
    }
    sl_free(tmp);
    return st;
}
