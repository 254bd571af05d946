/* llm/engines/llama.c — the embedded llama.cpp engine. The only file in
 * sluice that includes llama.h or mtmd.h: a llama.cpp upgrade touches this
 * file alone.
 *
 * This first version runs one request at a time in one sequence: clear the
 * KV cache, tokenize prompt + image with mtmd, evaluate the chunks
 * (mtmd_helper_eval_chunks encodes the image and decodes its embeddings),
 * then sample token by token. Continuous batching across sequences comes
 * with the engine issue. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "llama.h"
#include "mtmd.h"
#include "mtmd-helper.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/utf8.h"
#include "llm/engine_impl.h"

typedef struct llama_engine {
    struct llama_model *model;
    struct llama_context *ctx;
    mtmd_context *mtmd;
    const struct llama_vocab *vocab;
    char *chat_template;  /* NULL: use the plain fallback prompt */
    char model_name[256];
    int n_ctx, n_batch;
} llama_engine;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* llama.cpp and mtmd log through ggml's callback; CONT lines continue the
 * previous line's level. Lines arrive with their own newline. */
static void ggml_to_sl_log(enum ggml_log_level level, const char *text, void *user)
{
    static _Thread_local sl_log_level last = SL_LOG_INFO;
    sl_log_level lv;
    switch (level) {
    case GGML_LOG_LEVEL_ERROR: lv = SL_LOG_ERROR; break;
    case GGML_LOG_LEVEL_WARN: lv = SL_LOG_WARN; break;
    case GGML_LOG_LEVEL_INFO: lv = SL_LOG_INFO; break;
    case GGML_LOG_LEVEL_CONT: lv = last; break;
    default: lv = SL_LOG_DEBUG; break;
    }
    last = lv;
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    if (n)
        sl_log(lv, "llama.cpp: %.*s", (int)n, text);
}

static void llama_engine_free(void *impl)
{
    llama_engine *e = impl;
    if (!e)
        return;
    if (e->mtmd)
        mtmd_free(e->mtmd);
    if (e->ctx)
        llama_free(e->ctx);
    if (e->model)
        llama_model_free(e->model);
    sl_free(e->chat_template);
    sl_free(e);
}

static const char *llama_engine_model_name(const void *impl)
{
    return ((const llama_engine *)impl)->model_name;
}

/* Renders the chat for one request into a new string (sl_free). */
static char *render_prompt(const llama_engine *e, const char *system_prompt, const char *user_text,
                           bool with_image)
{
    /* The image goes before the text, as SmolVLM and most VLMs are trained. */
    char *user = sl_asprintf("%s%s", with_image ? mtmd_get_marker(e->mtmd) : "", user_text);
    if (!user)
        return NULL;
    if (!e->chat_template) {
        char *plain = system_prompt && *system_prompt
                          ? sl_asprintf("%s\n\nUser: %s\nAssistant:", system_prompt, user)
                          : sl_asprintf("User: %s\nAssistant:", user);
        sl_free(user);
        return plain;
    }
    llama_chat_message msgs[2];
    size_t n = 0;
    if (system_prompt && *system_prompt)
        msgs[n++] = (llama_chat_message){"system", system_prompt};
    msgs[n++] = (llama_chat_message){"user", user};
    int32_t cap = (int32_t)(2 * (strlen(user) + (system_prompt ? strlen(system_prompt) : 0)) + 256);
    char *buf = sl_malloc((size_t)cap);
    int32_t len = buf ? llama_chat_apply_template(e->chat_template, msgs, n, true, buf, cap) : -1;
    if (buf && len >= cap) {
        char *grown = sl_realloc(buf, (size_t)len + 1);
        if (!grown) {
            sl_free(buf);
            buf = NULL;
        } else {
            buf = grown;
            len = llama_chat_apply_template(e->chat_template, msgs, n, true, buf, len + 1);
        }
    }
    sl_free(user);
    if (!buf || len < 0) {
        sl_free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static struct llama_sampler *make_sampler(const llama_engine *e, const sl_sampling *s)
{
    struct llama_sampler *chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (s->repeat_penalty != 1.0f)
        llama_sampler_chain_add(chain, llama_sampler_init_penalties(
                                           llama_vocab_n_tokens(e->vocab), 64,
                                           s->repeat_penalty, 0.0f, 0.0f));
    if (s->temperature <= 0.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        return chain;
    }
    if (s->top_k > 0)
        llama_sampler_chain_add(chain, llama_sampler_init_top_k(s->top_k));
    if (s->top_p < 1.0f)
        llama_sampler_chain_add(chain, llama_sampler_init_top_p(s->top_p, 1));
    if (s->min_p > 0.0f)
        llama_sampler_chain_add(chain, llama_sampler_init_min_p(s->min_p, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(s->temperature));
    /* LLAMA_DEFAULT_SEED (0xFFFFFFFF) means "random": never pass it. */
    uint32_t seed = (uint32_t)(s->seed ^ (s->seed >> 32));
    if (seed == LLAMA_DEFAULT_SEED)
        seed = 0x5EED;
    llama_sampler_chain_add(chain, llama_sampler_init_dist(seed));
    return chain;
}

typedef struct text_buf {
    char *data;
    size_t len, cap;
} text_buf;

static int text_append(text_buf *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 256;
        while (ncap < t->len + n + 1)
            ncap *= 2;
        char *grown = sl_realloc(t->data, ncap);
        if (!grown)
            return -1;
        t->data = grown;
        t->cap = ncap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
    return 0;
}

static sl_status llama_engine_generate(void *impl, const sl_request *req, sl_result *out)
{
    llama_engine *e = impl;
    const char *id = req->id ? req->id : "(request)";
    sl_status st = SL_OK;
    double t_start = now_ms();

    char *prompt = render_prompt(e, req->system_prompt, req->prompt, req->image != NULL);
    if (!prompt)
        return sl_fail(SL_ERR_ENGINE, "%s: cannot apply the model's chat template", id);

    sl_log(SL_LOG_DEBUG, "%s: prompt: %s", id, prompt);
    mtmd_bitmap *bitmap = NULL;
    if (req->image) {
        bitmap = mtmd_bitmap_init((uint32_t)sl_image_width(req->image),
                                  (uint32_t)sl_image_height(req->image),
                                  sl_image_pixels(req->image));
        if (!bitmap) {
            sl_free(prompt);
            return sl_fail(SL_ERR_NOMEM, "%s: out of memory for the image bitmap", id);
        }
    }
    mtmd_input_chunks *chunks = mtmd_input_chunks_init();
    mtmd_input_text text = {
        .text = prompt, .text_len = strlen(prompt), .add_special = true, .parse_special = true};
    const mtmd_bitmap *bitmaps[1] = {bitmap};
    int32_t rc = mtmd_tokenize(e->mtmd, chunks, &text, bitmaps, bitmap ? 1 : 0);
    struct llama_sampler *sampler = NULL;
    text_buf gen = {0};
    if (rc != 0) {
        st = rc == 2 ? sl_fail(SL_ERR_DECODE, "%s: the vision preprocessor rejected the image", id)
                     : sl_fail(SL_ERR_ENGINE, "%s: mtmd_tokenize failed (code %d): the prompt "
                               "and the image do not match", id, (int)rc);
        goto done;
    }
    llama_pos n_pos = mtmd_helper_get_n_pos(chunks);
    if ((long)n_pos + req->sampling.max_tokens > e->n_ctx) {
        st = sl_fail(SL_ERR_TOO_LONG,
                     "%s: prompt and image take %d positions and max_tokens is %d, more than the "
                     "context of %d tokens",
                     id, (int)n_pos, req->sampling.max_tokens, e->n_ctx);
        goto done;
    }

    llama_memory_clear(llama_get_memory(e->ctx), true);
    llama_pos n_past = 0;
    rc = mtmd_helper_eval_chunks(e->mtmd, e->ctx, chunks, 0, 0, e->n_batch, true, &n_past);
    double t_prefilled = now_ms();
    if (rc != 0) {
        st = sl_fail(SL_ERR_ENGINE, "%s: evaluating the prompt and image failed (code %d)", id,
                     (int)rc);
        goto done;
    }
    out->prompt_tokens = (int)n_pos;
    out->prefill_ms = t_prefilled - t_start;

    sampler = make_sampler(e, &req->sampling);
    out->finish_reason = "length";
    for (int i = 0; i < req->sampling.max_tokens; i++) {
        llama_token tok = llama_sampler_sample(sampler, e->ctx, -1);
        if (llama_vocab_is_eog(e->vocab, tok)) {
            out->finish_reason = "stop";
            break;
        }
        char piece[256];
        int32_t n = llama_token_to_piece(e->vocab, tok, piece, sizeof piece, 0, false);
        if (n < 0 || (n > 0 && text_append(&gen, piece, (size_t)n) != 0)) {
            st = sl_fail(n < 0 ? SL_ERR_ENGINE : SL_ERR_NOMEM,
                         "%s: cannot render token %d", id, (int)tok);
            goto done;
        }
        out->generated_tokens++;
        if (out->generated_tokens == req->sampling.max_tokens)
            break;
        struct llama_batch batch = llama_batch_get_one(&tok, 1);
        int32_t drc = llama_decode(e->ctx, batch);
        if (drc != 0) {
            st = sl_fail(SL_ERR_ENGINE, "%s: llama_decode failed (code %d) after %d tokens", id,
                         (int)drc, out->generated_tokens);
            goto done;
        }
    }
    out->generate_ms = now_ms() - t_prefilled;
    out->text = sl_utf8_sanitize(gen.data ? gen.data : "", gen.len);
    if (!out->text)
        st = sl_fail(SL_ERR_NOMEM, "%s: out of memory", id);

done:
    sl_free(gen.data);
    if (sampler)
        llama_sampler_free(sampler);
    mtmd_input_chunks_free(chunks);
    mtmd_bitmap_free(bitmap);
    sl_free(prompt);
    return st;
}

static const sl_engine_ops llama_ops = {
    .kind = "llama",
    .generate = llama_engine_generate,
    .model_name = llama_engine_model_name,
    .free = llama_engine_free,
};

sl_llama_params sl_llama_default_params(void)
{
    return (sl_llama_params){
        .model_path = NULL,
        .mmproj_path = NULL,
        .n_ctx = 0,
        .n_batch = 512,
        .n_threads = 0,
        .n_gpu_layers = -1,
    };
}

static sl_status check_readable(const char *flag, const char *path)
{
    if (!path || !*path)
        return sl_fail(SL_ERR_INVALID_ARG, "%s is required: the path of a GGUF file", flag);
    if (access(path, R_OK) != 0)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_INVALID_ARG,
                       "%s '%s': %s", flag, path, strerror(errno));
    return SL_OK;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void init_backend_once(void)
{
    llama_log_set(ggml_to_sl_log, NULL);
    mtmd_helper_log_set(ggml_to_sl_log, NULL);
    llama_backend_init();
}

sl_status sl_engine_open_llama(const sl_llama_params *params, sl_engine **out)
{
    *out = NULL;
    sl_status st = check_readable("--model", params->model_path);
    if (st == SL_OK)
        st = check_readable("--mmproj", params->mmproj_path);
    if (st != SL_OK)
        return st;

    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_backend_once);

    llama_engine *e = sl_calloc(1, sizeof *e);
    if (!e)
        return sl_fail(SL_ERR_NOMEM, "out of memory loading '%s'", params->model_path);

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params->n_gpu_layers;
    e->model = llama_model_load_from_file(params->model_path, mp);
    if (!e->model) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_MODEL,
                       "--model '%s': llama.cpp cannot load it as a GGUF language model "
                       "(see the llama.cpp messages above)",
                       params->model_path);
    }
    e->vocab = llama_model_get_vocab(e->model);
    if (llama_model_meta_val_str(e->model, "general.name", e->model_name, sizeof e->model_name) <= 0)
        snprintf(e->model_name, sizeof e->model_name, "%s", base_name(params->model_path));

    long threads = params->n_threads > 0 ? params->n_threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    int n_ctx = params->n_ctx;
    if (n_ctx <= 0) {
        int train = llama_model_n_ctx_train(e->model);
        n_ctx = train > 0 && train < 4096 ? train : 4096;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)(params->n_batch > 0 ? params->n_batch : 512);
    cp.n_ubatch = cp.n_batch;
    cp.n_seq_max = 1;
    cp.n_threads = (int32_t)threads;
    cp.n_threads_batch = (int32_t)threads;
    cp.no_perf = true;
    e->ctx = llama_init_from_model(e->model, cp);
    if (!e->ctx) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_MODEL, "--model '%s': cannot create a context of %d tokens",
                       params->model_path, n_ctx);
    }
    /* Read the effective sizes back: llama.cpp may round them. */
    e->n_ctx = (int)llama_n_ctx(e->ctx);
    e->n_batch = (int)llama_n_batch(e->ctx);

    struct mtmd_context_params vp = mtmd_context_params_default();
    vp.use_gpu = params->n_gpu_layers != 0;
    vp.print_timings = false;
    vp.n_threads = (int)threads;
    vp.warmup = false;
    e->mtmd = mtmd_init_from_file(params->mmproj_path, e->model, vp);
    if (!e->mtmd) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_MODEL,
                       "--mmproj '%s': libmtmd cannot load it as a vision projector for '%s' "
                       "(see the llama.cpp messages above)",
                       params->mmproj_path, params->model_path);
    }
    if (!mtmd_support_vision(e->mtmd)) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_MODEL, "--mmproj '%s' has no vision encoder", params->mmproj_path);
    }

    const char *tmpl = llama_model_chat_template(e->model, NULL);
    if (tmpl) {
        llama_chat_message probe = {"user", "x"};
        char buf[512];
        if (llama_chat_apply_template(tmpl, &probe, 1, true, buf, sizeof buf) >= 0) {
            if (!(e->chat_template = sl_strdup(tmpl))) {
                llama_engine_free(e);
                return sl_fail(SL_ERR_NOMEM, "out of memory loading '%s'", params->model_path);
            }
        } else {
            sl_log(SL_LOG_WARN,
                   "'%s': llama.cpp does not know this chat template; using a plain "
                   "'User: ... Assistant:' prompt",
                   params->model_path);
        }
    } else {
        sl_log(SL_LOG_WARN, "'%s' has no chat template; using a plain 'User: ... Assistant:' prompt",
               params->model_path);
    }
    return sl_engine_wrap(&llama_ops, e, out);
}
