/* io/batch_line.c — see batch_line.h. The rules follow OpenAI's batch input
 * (and vLLM's run-batch): what sluice cannot run the same way on every
 * engine (n > 1, streaming, another endpoint) fails the line. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/error.h"
#include "io/batch_line.h"

static sl_status bad(char *err, size_t errlen, const char *fmt, ...) SL_PRINTF(3, 4);
static sl_status bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return SL_ERR_INVALID_ARG;
}

/* A JSON string's text, or NULL when v is not a string or holds a NUL (the
 * engines take C strings). */
static const char *text_of(const json_t *v)
{
    if (!json_is_string(v))
        return NULL;
    const char *s = json_string_value(v);
    return strlen(s) == json_string_length(v) ? s : NULL;
}

static const char *role_of(const char *role)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    if (strcmp(role, "developer") == 0) /* OpenAI's newer name for system */
        return "system";
    for (size_t i = 0; i < sizeof roles / sizeof *roles; i++)
        if (strcmp(role, roles[i]) == 0)
            return roles[i];
    return NULL;
}

/* The parts of message m (content a string or a list of parts) appended to
 * req->parts; image URLs to req->images. */
static sl_status read_content(sl_batch_req *req, int m, const json_t *content, const char *role,
                              char *err, size_t errlen)
{
    if (text_of(content)) {
        req->parts[req->n_parts++] = (sl_content_part){text_of(content)};
        return SL_OK;
    }
    if (!json_is_array(content))
        return bad(err, errlen, "body.messages[%d].content must be a string or a list of parts",
                   m);
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part) {
        if (req->n_parts >= SL_BATCH_MAX_PARTS)
            return bad(err, errlen, "more than %d content parts", SL_BATCH_MAX_PARTS);
        const char *type = text_of(json_object_get(part, "type"));
        if (!type)
            return bad(err, errlen, "body.messages[%d].content[%zu] has no \"type\"", m, i);
        if (strcmp(type, "text") == 0) {
            const char *t = text_of(json_object_get(part, "text"));
            if (!t)
                return bad(err, errlen, "body.messages[%d].content[%zu]: \"text\" must be a "
                           "string", m, i);
            req->parts[req->n_parts++] = (sl_content_part){t};
        } else if (strcmp(type, "image_url") == 0) {
            if (strcmp(role, "user") != 0)
                return bad(err, errlen, "body.messages[%d]: images are only in user messages", m);
            const json_t *iu = json_object_get(part, "image_url");
            const char *url = text_of(json_is_object(iu) ? json_object_get(iu, "url") : iu);
            if (!url || !*url)
                return bad(err, errlen, "body.messages[%d].content[%zu]: image_url.url must be "
                           "a non-empty string", m, i);
            if (req->n_images >= SL_MAX_IMAGES)
                return bad(err, errlen, "more than %d images in one request", SL_MAX_IMAGES);
            req->images[req->n_images++] = url;
            req->parts[req->n_parts++] = (sl_content_part){NULL};
        } else {
            return bad(err, errlen, "body.messages[%d].content[%zu]: part type '%.40s' is not "
                       "supported (text, image_url)", m, i, type);
        }
    }
    return SL_OK;
}

static sl_status read_messages(sl_batch_req *req, const json_t *messages, char *err,
                               size_t errlen)
{
    size_t n = json_array_size(messages);
    if (!json_is_array(messages) || n == 0)
        return bad(err, errlen, "body.messages must be a non-empty list");
    if (n > SL_BATCH_MAX_MESSAGES)
        return bad(err, errlen, "%zu messages, more than %d", n, SL_BATCH_MAX_MESSAGES);
    size_t n_parts = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_object_get(json_array_get(messages, i), "content");
        n_parts += json_is_array(c) ? json_array_size(c) : 1;
    }
    if (n_parts > SL_BATCH_MAX_PARTS)
        return bad(err, errlen, "more than %d content parts", SL_BATCH_MAX_PARTS);
    req->messages = sl_calloc(n, sizeof *req->messages);
    req->parts = sl_calloc(n_parts ? n_parts : 1, sizeof *req->parts);
    if (!req->messages || !req->parts)
        return SL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *msg = json_array_get(messages, i);
        if (!json_is_object(msg))
            return bad(err, errlen, "body.messages[%zu] is not an object", i);
        const char *r = text_of(json_object_get(msg, "role"));
        const char *role = r ? role_of(r) : NULL;
        if (!role)
            return bad(err, errlen, "body.messages[%zu]: role '%.40s' is not supported (system, "
                       "developer, user, assistant)", i, r ? r : "(none)");
        int first = req->n_parts;
        sl_status st = read_content(req, (int)i, json_object_get(msg, "content"), role, err,
                                    errlen);
        if (st != SL_OK)
            return st;
        req->messages[i] = (sl_message){role, req->parts + first, req->n_parts - first};
        if (strcmp(role, "user") == 0) {
            req->last_user_text = NULL;
            for (int k = first; k < req->n_parts && !req->last_user_text; k++)
                req->last_user_text = req->parts[k].text;
        }
    }
    req->n_messages = (int)n;
    return SL_OK;
}

/* A count from 1 to 2^30, or 0 when absent. */
static sl_status read_count(const json_t *body, const char *key, int *out, char *err,
                            size_t errlen)
{
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return SL_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 30)
        return bad(err, errlen, "body.%s must be an integer from 1 to %d", key, 1 << 30);
    *out = (int)json_integer_value(v);
    return SL_OK;
}

static sl_status read_real(const json_t *body, const char *key, double lo, double hi,
                           bool *has, float *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return SL_OK;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return bad(err, errlen, "body.%s must be a number from %g to %g", key, lo, hi);
    *has = true;
    *out = (float)json_number_value(v);
    return SL_OK;
}

/* The sampling keys vLLM and llama-server take beside OpenAI's, which the
 * llama engine has too: left unread, a vLLM batch file's top_k 1 was
 * answered as drawn from the whole vocabulary. And OpenAI's penalties. */
static sl_status read_vllm_sampling(sl_batch_req *req, const json_t *body, char *err,
                                    size_t errlen)
{
    const json_t *k = json_object_get(body, "top_k");
    if (k && !json_is_null(k)) {
        if (!json_is_integer(k) || json_integer_value(k) < -1 ||
            json_integer_value(k) > 1 << 20)
            return bad(err, errlen, "body.top_k must be an integer from -1 (off) to %d", 1 << 20);
        req->has_top_k = true;
        req->top_k = json_integer_value(k) < 0 ? 0 : (int)json_integer_value(k);
    }
    sl_status st = read_real(body, "min_p", 0.0, 1.0, &req->has_min_p, &req->min_p, err, errlen);
    const json_t *vllm = json_object_get(body, "repetition_penalty");
    const char *penalty = vllm && !json_is_null(vllm) ? "repetition_penalty" : "repeat_penalty";
    if (st == SL_OK)
        st = read_real(body, penalty, 0.01, 100.0, &req->has_repeat_penalty,
                       &req->repeat_penalty, err, errlen);
    if (st == SL_OK)
        st = read_real(body, "presence_penalty", -2.0, 2.0, &req->has_presence_penalty,
                       &req->presence_penalty, err, errlen);
    if (st == SL_OK)
        st = read_real(body, "frequency_penalty", -2.0, 2.0, &req->has_frequency_penalty,
                       &req->frequency_penalty, err, errlen);
    return st;
}

/* OpenAI's logprobs (a boolean) and top_logprobs (0 to 20, only with
 * logprobs true). */
static sl_status read_logprobs(sl_batch_req *req, const json_t *body, char *err, size_t errlen)
{
    const json_t *lp = json_object_get(body, "logprobs");
    const json_t *top = json_object_get(body, "top_logprobs");
    if (lp && !json_is_null(lp) && !json_is_boolean(lp))
        return bad(err, errlen, "body.logprobs must be true or false");
    req->has_logprobs = lp && !json_is_null(lp);
    req->logprobs = json_is_true(lp);
    if (!top || json_is_null(top))
        return SL_OK;
    if (!json_is_integer(top) || json_integer_value(top) < 0 ||
        json_integer_value(top) > SL_MAX_TOP_LOGPROBS)
        return bad(err, errlen, "body.top_logprobs must be an integer from 0 to %d",
                   SL_MAX_TOP_LOGPROBS);
    if (!req->logprobs)
        return bad(err, errlen, "body.top_logprobs needs body.logprobs true");
    req->top_logprobs = (int)json_integer_value(top);
    return SL_OK;
}

static sl_status read_stop(sl_batch_req *req, const json_t *stop, char *err, size_t errlen)
{
    if (!stop || json_is_null(stop))
        return SL_OK;
    if (text_of(stop)) {
        if (!*text_of(stop)) /* as in a list: an empty stop would end every answer at once */
            return bad(err, errlen, "body.stop must be a non-empty string");
        req->stop[req->n_stop++] = text_of(stop);
        return SL_OK;
    }
    if (!json_is_array(stop) || json_array_size(stop) > SL_BATCH_MAX_STOP)
        return bad(err, errlen, "body.stop must be a string or a list of at most %d strings",
                   SL_BATCH_MAX_STOP);
    size_t i;
    json_t *s;
    json_array_foreach(stop, i, s) {
        if (!text_of(s) || !*text_of(s))
            return bad(err, errlen, "body.stop[%zu] must be a non-empty string", i);
        req->stop[req->n_stop++] = text_of(s);
    }
    return SL_OK;
}

static sl_status read_response_format(sl_batch_req *req, const json_t *rf, char *err,
                                      size_t errlen)
{
    if (!rf || json_is_null(rf))
        return SL_OK;
    const char *type = text_of(json_object_get(rf, "type"));
    if (!type)
        return bad(err, errlen, "body.response_format must be an object with a \"type\"");
    if (strcmp(type, "text") == 0)
        return SL_OK;
    const json_t *schema = NULL;
    if (strcmp(type, "json_object") == 0) {
        req->json_schema = sl_strdup("{\"type\":\"object\"}");
        return req->json_schema ? SL_OK : SL_ERR_NOMEM;
    }
    if (strcmp(type, "json_schema") != 0)
        return bad(err, errlen, "body.response_format.type '%.40s' is not supported (text, "
                   "json_object, json_schema)", type);
    schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
    if (!json_is_object(schema))
        return bad(err, errlen, "body.response_format.json_schema.schema must be an object");
    req->json_schema = sl_json_dump(schema, JSON_COMPACT, NULL);
    return req->json_schema ? SL_OK : SL_ERR_NOMEM;
}

/* The body's first key the llama engine neither reads nor may leave
 * unread (bookkeeping that changes no answer), or NULL. */
static const char *unread_key(const json_t *body)
{
    static const char *const known[] = {
        /* read */
        "messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "seed", "stop", "n", "logprobs", "top_logprobs", "response_format", "stream",
        /* read: vLLM's and llama-server's sampling keys beyond OpenAI's */
        "top_k", "min_p", "repetition_penalty", "repeat_penalty", "presence_penalty",
        "frequency_penalty",
        /* bookkeeping */
        "metadata", "user", "store", "stream_options", "service_tier", "safety_identifier",
        "prompt_cache_key"};
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)body, key, value) {
        size_t i = 0;
        while (i < sizeof known / sizeof *known && strcmp(key, known[i]) != 0)
            i++;
        if (i == sizeof known / sizeof *known && !json_is_null(value))
            return key;
    }
    return NULL;
}

static sl_status read_body(sl_batch_req *req, char *err, size_t errlen)
{
    const json_t *body = req->body;
    const json_t *n = json_object_get(body, "n");
    if (n && !json_is_null(n)) {
        if (!json_is_integer(n) || json_integer_value(n) < 1 ||
            json_integer_value(n) > SL_MAX_ANSWERS)
            return bad(err, errlen, "body.n must be an integer from 1 to %d", SL_MAX_ANSWERS);
        req->n = (int)json_integer_value(n);
    }
    const json_t *stream = json_object_get(body, "stream");
    if (stream && !json_is_null(stream) && !json_is_false(stream))
        return bad(err, errlen, "body.stream is not supported in a batch");
    const json_t *model = json_object_get(body, "model");
    if (model && !json_is_null(model) && !(req->model = text_of(model)))
        return bad(err, errlen, "body.model must be a string");
    sl_status st = read_messages(req, json_object_get(body, "messages"), err, errlen);
    int mt = 0, mct = 0;
    if (st == SL_OK)
        st = read_count(body, "max_tokens", &mt, err, errlen);
    if (st == SL_OK)
        st = read_count(body, "max_completion_tokens", &mct, err, errlen);
    req->max_tokens = mct ? mct : mt;
    if (st == SL_OK)
        st = read_real(body, "temperature", 0.0, 2.0, &req->has_temperature, &req->temperature,
                       err, errlen);
    if (st == SL_OK)
        st = read_real(body, "top_p", 0.0, 1.0, &req->has_top_p, &req->top_p, err, errlen);
    if (st == SL_OK)
        st = read_vllm_sampling(req, body, err, errlen);
    const json_t *seed = json_object_get(body, "seed");
    if (st == SL_OK && seed && !json_is_null(seed)) {
        if (!json_is_integer(seed))
            return bad(err, errlen, "body.seed must be an integer");
        req->has_seed = true;
        req->seed = (uint64_t)json_integer_value(seed);
    }
    if (st == SL_OK)
        st = read_logprobs(req, body, err, errlen);
    if (st == SL_OK)
        st = read_stop(req, json_object_get(body, "stop"), err, errlen);
    if (st == SL_OK)
        st = read_response_format(req, json_object_get(body, "response_format"), err, errlen);
    req->unread_key = unread_key(body);
    return st;
}

void sl_batch_req_clear(sl_batch_req *req)
{
    if (!req)
        return;
    sl_free(req->custom_id);
    json_decref(req->body);
    sl_free(req->messages);
    sl_free(req->parts);
    sl_free(req->json_schema);
    sl_free(req->line_id);
    memset(req, 0, sizeof *req);
}

sl_status sl_batch_parse(const char *text, size_t len, sl_batch_req *req, char *err,
                         size_t errlen)
{
    memset(req, 0, sizeof *req);
    json_error_t jerr;
    json_t *line = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    sl_status st = SL_OK;
    if (!line) {
        sl_json_explain(&jerr);
        st = bad(err, errlen, "invalid JSON: %s%s", jerr.text, sl_json_file_hint(&jerr));
        /* A line jansson refuses only for an integer past 64 bits (a seed
         * of 2^70) is otherwise whole: its failed row keeps its custom_id,
         * found by reading the numbers as reals. */
        json_t *whole = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL,
                                   NULL);
        const char *id = text_of(json_object_get(whole, "custom_id"));
        if (id && *id && !(req->custom_id = sl_strdup(id)))
            st = SL_ERR_NOMEM;
        json_decref(whole);
        goto out;
    }
    if (!json_is_object(line)) {
        st = bad(err, errlen, "not a JSON object but %s", sl_json_kind(line));
        goto out;
    }
    const json_t *cid = json_object_get(line, "custom_id");
    if (!text_of(cid) || !*text_of(cid)) {
        st = bad(err, errlen, cid ? "custom_id must be a non-empty string" : "no custom_id");
        goto out;
    }
    if (!(req->custom_id = sl_strdup(text_of(cid)))) {
        st = SL_ERR_NOMEM;
        goto out;
    }
    const json_t *method = json_object_get(line, "method");
    if (method && !(text_of(method) && strcmp(text_of(method), "POST") == 0)) {
        st = bad(err, errlen, "method must be POST, got %.40s",
                 text_of(method) ? text_of(method) : "a value that is not a string");
        goto out;
    }
    const char *url = text_of(json_object_get(line, "url"));
    if (!url || (strcmp(url, "/v1/chat/completions") != 0 &&
                 strcmp(url, "/chat/completions") != 0)) {
        st = bad(err, errlen, "url must be /v1/chat/completions, got %.80s",
                 url ? url : "none");
        goto out;
    }
    json_t *body = json_object_get(line, "body");
    if (!json_is_object(body)) {
        st = bad(err, errlen, body ? "body must be an object" : "no body");
        goto out;
    }
    req->body = json_incref(body);
    st = read_body(req, err, errlen);
out:
    json_decref(line);
    if (st != SL_OK) {
        char *keep = req->custom_id;
        req->custom_id = NULL;
        sl_batch_req_clear(req);
        req->custom_id = keep;
        if (st == SL_ERR_NOMEM)
            snprintf(err, errlen, "out of memory");
    }
    return st;
}

/* --- data: URLs -------------------------------------------------------------------- */

bool sl_batch_is_data_url(const char *url)
{
    return strncmp(url, "data:", 5) == 0;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

sl_status sl_batch_data_url_decode(const char *url, uint8_t **data, size_t *len, char *err,
                                   size_t errlen)
{
    *data = NULL;
    *len = 0;
    const char *comma = strchr(url, ',');
    if (!sl_batch_is_data_url(url) || !comma)
        return bad(err, errlen, "not a data: URL");
    /* Only the header up to the comma says how the data is encoded. */
    size_t head = (size_t)(comma - url);
    if (head < 7 || memcmp(comma - 7, ";base64", 7) != 0)
        return bad(err, errlen, "a data: URL image must be base64 (data:image/...;base64,...)");
    const char *s = comma + 1;
    size_t n = strlen(s);
    uint8_t *out = sl_malloc(n / 4 * 3 + 3);
    if (!out)
        return SL_ERR_NOMEM;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    bool ended = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '=') {
            ended = true;
            continue;
        }
        if (c == '\n' || c == '\r' || c == ' ')
            continue;
        int v = b64_value(c);
        if (v < 0 || ended) {
            sl_free(out);
            return bad(err, errlen, "the data: URL's base64 has a bad character at byte %zu",
                       (size_t)(s - url) + i);
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    if (k == 0) {
        sl_free(out);
        return bad(err, errlen, "the data: URL holds no bytes");
    }
    *data = out;
    *len = k;
    return SL_OK;
}

