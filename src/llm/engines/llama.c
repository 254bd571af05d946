/* llm/engines/llama.c — the embedded llama.cpp engine. With its host
 * token choice (llama_sample.c), the only files in sluice that include
 * llama.h or mtmd.h: a llama.cpp upgrade touches these alone.
 *
 * One engine is one replica: a model, a context with n_parallel sequences,
 * and a thread running continuous batching. Each step of that thread
 *   1. admits waiting requests into free sequences (tokenized with mtmd;
 *      an engine opened without a vision projector takes text-only
 *      requests, tokenized with llama_tokenize into one text chunk, and
 *      refuses images at submit; the shared prompt prefix is copied from a
 *      cached sequence with llama_memory_seq_cp instead of being computed
 *      again),
 *   2. encodes the images of newcomers (mtmd's batched encoder) and decodes
 *      their embeddings into their sequences,
 *   3. builds one token batch: the next token of every generating sequence
 *      plus as much newcomer prompt text as fits in n_batch, and calls
 *      llama_decode once,
 *   4. chooses the next token of each sequence that has logits in the
 *      batch (greedy: an argmax straight over the logits; other settings:
 *      the sequence's own llama.cpp sampler chain and seed; a row with a
 *      grammar, its own or its JSON schema's: under llama.cpp's grammar
 *      sampler, on the host), spread over the OpenMP threads that ran the
 *      decode (llama_sample.c chooses), then turns
 *      tokens into text and completes the sequences that end (an answer
 *      checked against the row's JSON schema).
 * A request with several tasks is queued as one req per task: the first to
 * run computes the image's positions, the others copy its sequence once it
 * has them (resolve_tasks) and prefill only their own text.
 * KV cells are reserved per request (prompt positions + max_tokens) so a
 * decode never runs out of room; a request that does not fit now waits. A
 * request longer than a sequence waits until every sequence is free, and
 * the context is made again with longer ones (size_for, grow_context).
 * LoRA adapters are loaded onto the model at open and set on every
 * context made (set_adapters); the KV cache's types (sl_kv_type) size it
 * and --parallel auto (kv_bytes_per_pos).
 * Every phase of the loop is timed (sl_engine_phase): the loop runs once
 * per generated token of 100+ sequences, so host work between decodes is
 * what keeps a fast GPU idle. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ggml-cpu.h"
#include <jansson.h>
#include "llama.h"
#include "mtmd.h"
#include "mtmd-helper.h"
#include "llama_build.h" /* SL_LLAMA_BUILD, which CMake writes */

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/json.h"
#include "core/log.h"
#include "core/utf8.h"
#include "llm/engine_impl.h"
#include "llm/engines/llama_choice.h"
#include "llm/engines/image_cache.h"
#include "llm/engines/llama_grammar.h"
#include "llm/engines/llama_sample.h"
#include "llm/json_schema.h"

#define LLAMA_MAX_DUE 64
#define SAMPLE_THREADS_MAX 8
/* How long a sequence kept for a conversation's next turn waits for it
 * (sl_request.followed): the stage asks it as soon as it polls the answer. */
#define HOLD_MS 1000.0
#define GRAMMAR_CACHE 8
#define CHOICE_VARIANTS SL_CHOICE_VARIANTS /* engine_impl.h */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Some llama.cpp calls say why they failed only in their log (a LoRA
 * adapter that does not load returns NULL): while a capture is set on a
 * thread, the error lines llama.cpp logs on it are kept there too, each
 * without its leading "function_name: ", so our message can name the
 * cause. */
typedef struct log_capture {
    char text[512];
    size_t len;
    bool quiet; /* the lines kept are not printed (-v prints them) */
} log_capture;

static _Thread_local log_capture *capture;

static void capture_error(const char *text, size_t n)
{
    /* "llama_adapter_lora_init_from_file_ptr: failed to apply lora adapter:
     * expect general.type ..." -> "expect general.type ..." */
    static const char *const noise[] = {"failed to apply lora adapter: "};
    size_t id = strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
    if (id > 0 && id + 2 <= n && text[id] == ':' && text[id + 1] == ' ') {
        text += id + 2;
        n -= id + 2;
    }
    for (size_t i = 0; i < sizeof noise / sizeof *noise; i++)
        if (n >= strlen(noise[i]) && memcmp(text, noise[i], strlen(noise[i])) == 0) {
            text += strlen(noise[i]);
            n -= strlen(noise[i]);
        }
    size_t room = sizeof capture->text - capture->len;
    int w = snprintf(capture->text + capture->len, room, "%s%.*s", capture->len ? "; " : "",
                     (int)n, text);
    if (w > 0)
        capture->len += (size_t)w < room ? (size_t)w : room - 1;
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
    /* Said at open in sluice's terms, naming --ctx and the model
     * (sl_engine_open_llama); llama.cpp's "n_ctx_seq (4096) > n_ctx_train
     * (2048)" beside it is for -v. */
    if (lv == SL_LOG_WARN && strstr(text, "possible training context overflow"))
        lv = SL_LOG_INFO;
    last = lv;
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    if (n && capture && lv == SL_LOG_ERROR) {
        capture_error(text, n);
        if (capture->quiet)
            lv = SL_LOG_DEBUG;
    }
    if (n)
        sl_log(lv, "llama.cpp: %.*s", (int)n, text);
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


/* A request as the engine keeps it (strings copied). */
typedef struct req {
    struct req *next;
    void *tag;
    char *id, *system_prompt, *prompt;
    char **stop;
    int n_stop;
    const sl_image *image;
    sl_sampling sampling;
    mtmd_input_chunks *chunks; /* tokenized on admission, or ahead of it */
    llama_token *tokens;       /* instead of chunks on an engine without a vision
                                  projector: the prompt's one text chunk */
    int n_tokens;
    float **embd;              /* encoded ahead: per chunk, its embeddings (NULL for text) */
    bool prepared;             /* tokenized and encoded ahead (or failed: prep_status) */
    bool preparing;            /* the encoder thread has it */
    sl_status prep_status;
    char *prep_error;
    double prep_encode_ms;
    int n_pos;                 /* positions of the whole prompt */
    int n_cells;               /* its KV cells: n_pos, but an M-RoPE image
                                  (Qwen2-VL) gives all its tokens max(rows,
                                  cols) positions */
    double t_submit;
    bool trace;
    /* One task of a request with several, or one of its n answers (NULL:
     * a request of its own). The image's positions are shared: chunks [0,
     * n_shared) hold the text before the image and the image, and for
     * answers (same_prompt: the whole prompt is the same) the first
     * shared_tok tokens of chunk n_shared too (all but the last token,
     * which each decodes for its own logits); shared_pos positions in all. */
    sl_task_group *grp;
    int task;
    char *task_name; /* a task's: its answer cut short names the task's own limit */
    bool same_prompt;
    size_t n_shared;
    size_t shared_tok;
    int shared_pos;
    char *grammar;             /* GBNF the row samples under (given, or from its schema) */
    sl_json_schema *schema;    /* the answer is checked against it */
    /* A conversation (n_msgs > 0; prompt, system_prompt and image unused):
     * each message's role (a static string) and its text with the media
     * marker where its images go; the images in that order (the caller's,
     * alive until the completion). */
    int n_msgs;
    const char **msg_role;
    char **msg_text;
    const sl_image *images[SL_MAX_IMAGES];
    int n_images;
    bool want_json;            /* answer as a chat.completion object too */
    bool follows, followed;    /* sl_request's */
    /* Choices (sl_request.choices): the answer is one of them. choice_tree
     * holds the forms the model may answer each in, as tokens (made at
     * tokenize(): choice_tokens), and what is read of the model to score
     * them; choice_p each choice's score once read, `choice` the one taken. */
    char **choices;
    int n_choices;
    sl_choice_tree *choice_tree;
    double *choice_p;
    int choice;
} req;

/* An image chunk a free sequence holds: what tells it apart (its image's
 * id, the pixels' hash) and its size. */
typedef struct kept_image {
    char id[SL_IMAGE_CACHE_ID];
    size_t n_tokens;
    llama_pos n_pos;
} kept_image;

typedef struct slot {
    int seq;
    req *r;                    /* NULL: free */
    size_t chunk, tok;         /* next chunk; next token inside a text chunk */
    llama_pos n_past;
    int reserved;              /* KV cells held: n_cells + max_tokens */
    struct llama_sampler *smpl;
    struct llama_sampler *grammar; /* the row's grammar (NULL: none): host sampling only */
    text_buf text;
    int n_gen, cached;
    llama_token last;
    bool generating;           /* prompt done: `last` goes into the next batch */
    bool await;                /* a task waiting for a sibling's image positions */
    int32_t *trace_tokens;     /* with req.trace */
    float *trace_margins;
    int n_trace;
    /* With sampling.logprobs: per generated token n, lp_stride entries from
     * n * lp_stride: the token and its log-probability, then the
     * top_logprobs most likely; entry n is written when n is chosen. */
    int32_t *lp_ids;
    float *lp_vals;
    int lp_stride;
    bool lp_end;               /* the model ended the answer: entry n_gen is that token */
    int logits_idx;            /* index in this step's batch, -1: none */
    bool fast_greedy;          /* argmax over the logits: no sampler chain needed */
    bool own_top_p;            /* the host runs top-p; smpl was made without it */
    bool on_device;            /* the graph samples this sequence (e->attached[seq]) */
    const float *logits;       /* this step's row, set before sampling */
    llama_token next;          /* chosen by a sampling thread ... */
    float next_margin;         /* ... with its logit margin (trace) */
    /* Choices whose forms begin alike: the next probe of r->choice_tree to
     * decode (-1: none is due), and where this step's batch holds it (-1:
     * not in it). */
    int probe, probe_at;
    double t_admit, t_prefilled, t_first, encode_ms;
    /* While running: the generated tokens that went into the cache, in
     * order (kept for the next request; a buffer the slot keeps). */
    llama_token *fed;
    int n_fed, cap_fed;
    bool fed_full;             /* out of memory for more: the notes end there */
    /* Free: what its sequence still holds of the request before (the
     * prefix cache, keep_kv): n_units units in position order, a token
     * (>= 0) or -(k + 1) for image chunk k of kept_images, the prompt's
     * and then the generated ones. A newcomer that begins the same way
     * goes on from where they part: the next turn of a conversation,
     * another question about the same picture. kept_at: when it was kept;
     * a newcomer that matches none takes the oldest. */
    int32_t *units;
    size_t n_units;
    kept_image *kept_images;
    uint64_t kept_at;
    double held_until;         /* for a follow-up (sl_request.followed) until then */
} slot;

typedef struct llama_engine {
    struct llama_model *model;
    struct llama_context *ctx;
    mtmd_context *mtmd;
    sl_image_cache *image_cache; /* NULL: every image is encoded (thread-safe) */
    const struct llama_vocab *vocab;
    char *chat_template;       /* NULL: use the plain fallback prompt */
    char *template_system;     /* the system message the template writes where a prompt
                                  has none (template_default_system), or NULL */
    char model_name[256];
    int n_ctx, n_ctx_seq, n_batch, n_parallel;
    /* Sizing by the request (grow_context): the context's settings as
     * opened, and the positions a sequence may grow to (the model's
     * context; n_ctx_seq itself with --ctx). */
    struct llama_context_params cparams;
    int max_ctx_seq;
    bool ctx_fixed;            /* --ctx given: the sequences keep that size */
    /* LoRA adapters, loaded onto the model at open (freed before it) with
     * their scales: set on every context made (open, new_context). */
    struct llama_adapter_lora *lora[SL_LLAMA_MAX_LORA];
    float lora_scale[SL_LLAMA_MAX_LORA];
    int n_lora;
    sl_kv_type type_k, type_v; /* the KV cache's types */

    slot *slots;
    struct llama_batch batch;
    struct llama_batch ebatch; /* image embeddings of several sequences */
    int n_embd_inp;
    bool mrope;                /* M-RoPE positions: images go through mtmd's helper */
    struct ggml_threadpool *threadpool; /* ours: its polling level is a parameter */
    llama_token *prefix;       /* the cached prompt head, in sequence n_parallel */
    int n_prefix;
    bool prefix_cache;         /* the prompt head above and keep_kv: --prefix-cache on */
    bool keep_kv;              /* a free sequence keeps its KV for a newcomer alike (not
                                  with sliding-window or recurrent memory: those forget) */
    uint64_t n_kept;           /* sequences kept so far: their order */
    int kv_reserved;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    req *pending, *pending_tail;
    size_t n_pending;
    req *cancelled;            /* taken out of pending by cancel_queued, for the engine
                                  thread to complete as stopped */
    bool cancel_asked;         /* cancel_queued was called: admission starts no request it
                                  would have cancelled (stopped_in_admission, requeue) */
    size_t n_follows;          /* of them follow-ups (sl_request.follows) */
    sl_completion *done;
    size_t n_done, cap_done;
    size_t in_flight;
    bool stopping;
    sl_engine_stats work;      /* the engine thread's own counters, no lock ... */
    sl_engine_stats stats;     /* ... published here under mu after each step */

    sl_llama_sampler sampler;  /* HOST, DEVICE or REFERENCE once opened */
    /* DEVICE: the chain attached to each sequence with llama_set_sampler
     * (owned here, not by the slot: the context holds on to it until
     * another replaces it, so it outlives the row) and whether it is a
     * plain greedy one, which any greedy row may reuse. */
    struct llama_sampler **attached;
    bool *attached_greedy;
    bool device_all;           /* --sampler device: rows with their own settings too */
    int n_vocab;
    slot **to_sample;          /* this step's sequences with logits ... */
    int n_to_sample;
    int n_host_sample;         /* ... of which the first n_host_sample the host samples */
    /* Sampling threads: the engine thread and, where a step has the work,
     * the OpenMP threads that computed its llama_decode (llama.cpp's CPU
     * backend runs its graphs in OpenMP teams of this thread): they spin
     * in libgomp a while after a graph, so they take work at once and no
     * other thread competes with them for the cores. Each takes the next
     * sequence of the step's list until none is left; the logits are
     * read-only by then and each sequence's chain is touched by one. */
    llama_token_data *cand[SAMPLE_THREADS_MAX]; /* a candidate array per sampling thread */
    int n_sample;              /* sampling threads at most, the engine thread among them */
    bool sample_always;        /* sample_threads was given: use them for any work */
    atomic_int sample_next;    /* the next entry of the step's list to take */
    atomic_int sample_done;    /* shares finished: orders the choices before their use */
    sl_engine_phase_fn on_phase;
    void *on_phase_user;
    double pending_admit_ms;   /* admission work of loop turns that decoded nothing */
    int32_t reused_seen;       /* llama_perf_context's n_reused of this context, counted */
    double pending_book_ms;    /* this step's completions, until published */

    /* Encoding ahead: a thread tokenizes and encodes the requests at the
     * head of the queue while this one decodes, so newcomers arrive with
     * their embeddings ready. pending is then [prepared...][preparing or
     * not yet...]; admission takes only prepared ones. Under mu. */
    int encode_ahead;          /* requests prepared and not admitted, at most */
    int n_prepared;            /* in pending, prepared or being prepared */
    req *prep_next;            /* the first pending request not taken by the encoder */
    struct encoder *encoders;  /* n_encoders threads (--encoders), each its own vision
                                  context but the first, which is mtmd */
    int n_encoders;
    pthread_cond_t encoder_cv;
    /* The image each encoder encodes now (encoder.encoding_id): another
     * encoder wanting the same one waits for it, then takes it from the
     * image cache, rather than encode it again side by side. */
    pthread_mutex_t encoding_mu;
    pthread_cond_t encoding_cv;
    sl_engine_stats enc;       /* the encoder's counters (images, encode and preprocess
                                  time), added into stats when published */
    /* mtmd's vision encoder (its compute buffers and output) is one per
     * context: the encoder thread and admission (a task whose siblings
     * have ended encodes at admission) take turns, each holding it until
     * the output is copied out or decoded. */
    pthread_mutex_t vision_mu;

    /* JSON schemas already turned into grammars (llama.cpp's converter
     * takes milliseconds, and a job has a schema or a few): submit's
     * threads share them under grammar_mu; replaced round robin. */
    pthread_mutex_t grammar_mu;
    struct {
        char *schema, *gbnf;
    } grammars[GRAMMAR_CACHE];
    int grammar_next;
} llama_engine;

/* An encoder thread and the vision context it encodes with. The first
 * uses the engine's own (e->mtmd, under e->vision_mu, which admission
 * shares); every other one loads the projector again into a context of
 * its own, so that their encodes run side by side (on a GPU each context
 * has its own stream: one encode of a 3B model's vision tower keeps a few
 * percent of an H200 busy). The engine owns the array, the other
 * contexts and their mutexes until llama_engine_free, which joins the
 * threads first. */
typedef struct encoder {
    llama_engine *e;
    mtmd_context *mtmd;
    pthread_mutex_t *mu;       /* held while mtmd encodes and its output is read */
    pthread_mutex_t own_mu;    /* mu of all but the first */
    pthread_t thread;
    bool started;
    const char *encoding_id;   /* the chunk id it encodes now (its request's), or NULL;
                                  under e->encoding_mu */
    int encoding_part;         /* and which of that image's chunks */
} encoder;

/* Adds the counters the encoder thread keeps (images, encode and
 * preprocess time) from `from` into `into`. */
static void add_encoder_counters(sl_engine_stats *into, const sl_engine_stats *from)
{
    into->images_encoded += from->images_encoded;
    into->encode_s += from->encode_s;
    for (int i = 0; i < SL_PHASE_COUNT; i++) {
        into->phase_s[i] += from->phase_s[i];
        into->phase_n[i] += from->phase_n[i];
    }
}

/* e->stats = the engine thread's counters plus the encoder's. Under mu. */
static void snapshot_locked(llama_engine *e)
{
    e->stats = e->work;
    add_encoder_counters(&e->stats, &e->enc);
}

/* Counts one observation of a phase into *into (the calling thread's own
 * counters) and hands it to the observer. */
static void phase_count(const llama_engine *e, sl_engine_stats *into, sl_engine_phase phase,
                        double ms)
{
    into->phase_s[phase] += ms / 1e3;
    into->phase_n[phase]++;
    if (e->on_phase)
        e->on_phase(e->on_phase_user, phase, ms / 1e3);
}

/* On the engine thread. */
static void phase_add(llama_engine *e, sl_engine_phase phase, double ms)
{
    phase_count(e, &e->work, phase, ms);
}

/* Renders messages as they are with the model's chat template and a
 * generation prompt after the last, into *out (sl_free); without a
 * template, the plain "User: ... Assistant:" prompt. SL_ERR_NOMEM,
 * SL_ERR_TOO_LONG, or SL_ERR_ENGINE when llama.cpp cannot apply the
 * template. */
static sl_status render_messages(const llama_engine *e, const char *id,
                                 const llama_chat_message *msgs, size_t n, char **out)
{
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += strlen(msgs[i].content) + 16;
    /* llama_chat_apply_template sizes in int32. */
    if (total > INT32_MAX / 8)
        return sl_fail(SL_ERR_TOO_LONG, "%s: the prompt is too long (%zu bytes)", id, total);
    if (!e->chat_template) {
        text_buf t = {0};
        int bad = 0;
        for (size_t i = 0; i < n && !bad; i++) {
            const char *c = msgs[i].content;
            if (strcmp(msgs[i].role, "system") == 0)
                bad = !*c ? 0 : text_append(&t, c, strlen(c)) || text_append(&t, "\n\n", 2);
            else if (strcmp(msgs[i].role, "user") == 0)
                bad = text_append(&t, "User: ", 6) || text_append(&t, c, strlen(c)) ||
                      text_append(&t, "\n", 1);
            else
                bad = text_append(&t, "Assistant: ", 11) || text_append(&t, c, strlen(c)) ||
                      text_append(&t, "\n", 1);
        }
        if (bad || text_append(&t, "Assistant:", 10) != 0) {
            sl_free(t.data);
            return sl_fail(SL_ERR_NOMEM, "%s: out of memory rendering the prompt", id);
        }
        *out = t.data;
        return SL_OK;
    }
    int32_t cap = (int32_t)(2 * total + 256);
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
    if (!buf)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory rendering the prompt", id);
    if (len < 0) {
        sl_free(buf);
        return sl_fail(SL_ERR_ENGINE, "%s: cannot apply the model's chat template", id);
    }
    buf[len] = '\0';
    *out = buf;
    return SL_OK;
}

/* render_messages, with the template's own system message first where
 * the messages have none (e->template_system), as its Jinja would. */
static sl_status render_chat(const llama_engine *e, const char *id, const llama_chat_message *msgs,
                             size_t n, char **out)
{
    if (!e->template_system || (n > 0 && strcmp(msgs[0].role, "system") == 0))
        return render_messages(e, id, msgs, n, out);
    *out = NULL;
    llama_chat_message *with = sl_malloc((n + 1) * sizeof *with);
    if (!with)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory rendering the prompt", id);
    with[0] = (llama_chat_message){"system", e->template_system};
    if (n > 0)
        memcpy(with + 1, msgs, n * sizeof *msgs);
    sl_status st = render_messages(e, id, with, n + 1, out);
    sl_free(with);
    return st;
}

/* Renders the chat for one request of a prompt (and an image) into *out
 * (sl_free): a system message when there is a system prompt, then the user
 * message, the image's marker before the text. */
static sl_status render_prompt(const llama_engine *e, const char *id, const char *system_prompt,
                               const char *user_text, bool with_image, char **out)
{
    *out = NULL;
    /* mtmd takes each marker in the text for an image: one typed in a
     * prompt (a dataset's text, a --system) made the image count wrong,
     * and the row failed as "the vision preprocessor rejected the 512x512
     * px image" (copy_conversation refuses it in messages the same way). */
    const char *marker = e->mtmd ? mtmd_get_marker(e->mtmd) : NULL;
    const char *holder = !marker || !*marker                            ? NULL
                         : system_prompt && strstr(system_prompt, marker) ? "the system prompt"
                         : strstr(user_text, marker)                      ? "the prompt"
                                                                          : NULL;
    if (holder)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s: %s holds '%s', the marker the engine puts where an image goes "
                       "(libmtmd would take it for an image): remove it", id, holder, marker);
    /* The image goes before the text, as SmolVLM and most VLMs are trained. */
    char *user = sl_asprintf("%s%s", with_image && marker ? marker : "", user_text);
    if (!user)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory rendering the prompt", id);
    llama_chat_message msgs[2];
    size_t n = 0;
    if (system_prompt && *system_prompt)
        msgs[n++] = (llama_chat_message){"system", system_prompt};
    msgs[n++] = (llama_chat_message){"user", user};
    sl_status st = render_chat(e, id, msgs, n, out);
    sl_free(user);
    return st;
}

/* Renders a conversation (r->n_msgs > 0) into *out (sl_free). */
static sl_status render_conversation(const llama_engine *e, const req *r, char **out)
{
    llama_chat_message *msgs = sl_calloc((size_t)r->n_msgs, sizeof *msgs);
    if (!msgs)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory rendering the prompt", r->id);
    for (int i = 0; i < r->n_msgs; i++)
        msgs[i] = (llama_chat_message){r->msg_role[i], r->msg_text[i]};
    sl_status st = render_chat(e, r->id, msgs, (size_t)r->n_msgs, out);
    sl_free(msgs);
    return st;
}

static struct llama_sampler *make_sampler(const llama_engine *e, const sl_sampling *s,
                                          bool without_top_p)
{
    return sl_llama_make_chain(s, llama_vocab_n_tokens(e->vocab), without_top_p);
}


/* A request's tokens are mtmd chunks on an engine with a vision projector
 * and a plain token array without one (mtmd needs the projector even for
 * text); these read either as a list of chunks, the array being one text
 * chunk. */
static bool req_tokenized(const req *r)
{
    return r->chunks || r->tokens;
}

static size_t req_n_chunks(const req *r)
{
    return r->chunks ? mtmd_input_chunks_size(r->chunks) : r->tokens ? 1 : 0;
}

static bool req_chunk_is_text(const req *r, size_t chunk)
{
    return !r->chunks || mtmd_input_chunk_get_type(mtmd_input_chunks_get(r->chunks, chunk)) ==
                             MTMD_INPUT_CHUNK_TYPE_TEXT;
}

/* The tokens of text chunk `chunk` (*n of them). */
static const llama_token *req_chunk_tokens(const req *r, size_t chunk, size_t *n)
{
    if (!r->chunks) {
        *n = chunk == 0 && r->tokens ? (size_t)r->n_tokens : 0;
        return chunk == 0 ? r->tokens : NULL;
    }
    return mtmd_input_chunk_get_tokens_text(mtmd_input_chunks_get(r->chunks, chunk), n);
}

/* The KV cells r's prompt takes before chunk `chunk`, token `tok` (the
 * tokens counted, not the positions: see n_cells). */
static int req_cells_before(const req *r, size_t chunk, size_t tok)
{
    size_t cells = tok;
    for (size_t i = 0; i < chunk; i++) {
        size_t n = 0;
        if (req_chunk_is_text(r, i))
            req_chunk_tokens(r, i, &n);
        else
            n = mtmd_input_chunk_get_n_tokens(mtmd_input_chunks_get(r->chunks, i));
        cells += n;
    }
    return (int)cells;
}

/* Frees what tokenize() made (and the embeddings encoded ahead). */
static void req_drop_tokens(req *r)
{
    if (r->chunks) {
        for (size_t i = 0; r->embd && i < mtmd_input_chunks_size(r->chunks); i++)
            sl_free(r->embd[i]);
        mtmd_input_chunks_free(r->chunks);
        r->chunks = NULL;
    }
    sl_free(r->embd);
    r->embd = NULL;
    sl_free(r->tokens);
    r->tokens = NULL;
    r->n_tokens = 0;
}

static void req_free(req *r)
{
    if (!r)
        return;
    sl_task_group_drop(r->grp); /* a task that never came back: the engine is going away */
    req_drop_tokens(r);
    sl_free(r->prep_error);
    sl_free(r->task_name);
    for (int i = 0; r->choices && i < r->n_choices; i++)
        sl_free(r->choices[i]);
    sl_free(r->choices);
    sl_choice_tree_free(r->choice_tree);
    sl_free(r->choice_p);
    sl_free(r->grammar);
    sl_json_schema_free(r->schema);
    for (int i = 0; i < r->n_stop; i++)
        sl_free(r->stop[i]);
    sl_free(r->stop);
    for (int i = 0; r->msg_text && i < r->n_msgs; i++)
        sl_free(r->msg_text[i]);
    sl_free(r->msg_text);
    sl_free(r->msg_role);
    sl_free(r->id);
    sl_free(r->system_prompt);
    sl_free(r->prompt);
    sl_free(r);
}

/* Hands a finished request back to poll(). Takes ownership of result's
 * strings. Never allocates the slot: submit() made room for every request
 * in flight, so a result is never dropped for want of memory (only its
 * error text may be, and poll() callers then say "out of memory"). */
static void complete(llama_engine *e, req *r, sl_status status, const char *error,
                     sl_result *result)
{
    pthread_mutex_lock(&e->mu);
    /* Whoever sees this completion sees the counters that include it (the
     * run's final metrics are read as soon as the last row is back). */
    snapshot_locked(e);
    if (r->grp) {
        /* One completion for all the tasks, when the last is back (an
         * answer its schema refuses fails its task, and so the request). */
        sl_completion c;
        sl_result none = {0};
        if (sl_task_group_record(r->grp, r->task, status, error, result ? result : &none, &c)) {
            e->done[e->n_done++] = c;
            pthread_cond_broadcast(&e->done_cv);
        }
        if (status != SL_OK && result)
            sl_result_clear(result); /* not taken by a failed task */
        r->grp = NULL;
    } else {
        sl_completion *c = &e->done[e->n_done++]; /* n_done <= in_flight <= cap_done */
        *c = (sl_completion){.tag = r->tag, .status = status};
        if (status != SL_OK)
            c->error = sl_strdup(error ? error : "failed");
        if (result) /* SL_OK, or SL_ERR_INVALID_OUTPUT with the answer as it came */
            c->result = *result;
        pthread_cond_broadcast(&e->done_cv);
    }
    pthread_mutex_unlock(&e->mu);
    req_free(r);
}

static void fail_req(llama_engine *e, req *r, sl_status status, const char *fmt, ...)
    SL_PRINTF(4, 5);

static void fail_req(llama_engine *e, req *r, sl_status status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    complete(e, r, status, msg, NULL);
}

/* The positions a request may generate into: max_tokens, or for choices
 * what their probes take (one when the step after the prompt decides). */
static int gen_room(const req *r)
{
    if (r->n_choices > 0)
        return r->choice_tree ? sl_choice_tree_room(r->choice_tree) : 1;
    return r->sampling.max_tokens;
}

/* Forgets what a free slot's sequence kept (the cells are dropped by
 * whoever takes the slot, or with the context). */
static void drop_kept(slot *s)
{
    sl_free(s->units);
    s->units = NULL;
    s->n_units = 0;
    sl_free(s->kept_images);
    s->kept_images = NULL;
}

/* What tells image chunk c apart: its image's id and its size. */
static void describe_image(const mtmd_input_chunk *c, kept_image *out)
{
    const char *id = mtmd_input_chunk_get_id(c);
    snprintf(out->id, sizeof out->id, "%s", id ? id : "");
    out->n_tokens = mtmd_input_chunk_get_n_tokens(c);
    out->n_pos = mtmd_input_chunk_get_n_pos(c);
}

/* Is image chunk c the one k describes? Never without an id (images are
 * told apart by it: without one, none is like another). */
static bool image_is(const kept_image *k, const mtmd_input_chunk *c)
{
    const char *id = mtmd_input_chunk_get_id(c);
    return *k->id && id && strcmp(id, k->id) == 0 &&
           mtmd_input_chunk_get_n_tokens(c) == k->n_tokens &&
           mtmd_input_chunk_get_n_pos(c) == k->n_pos;
}

/* s's sequence, r just answered in it, stays in the cache for a newcomer
 * that begins alike: what it holds written down as units (an image chunk
 * by its id and size, not its pixels). False: nothing kept. */
static bool keep_kv(llama_engine *e, slot *s, req *r)
{
    if (!e->keep_kv || !s->generating || !req_tokenized(r))
        return false;
    size_t nc = req_n_chunks(r), n = (size_t)s->n_fed, n_images = 0;
    for (size_t i = 0; i < nc; i++) {
        size_t k = 1;
        if (req_chunk_is_text(r, i))
            req_chunk_tokens(r, i, &k);
        else
            n_images++;
        n += k;
    }
    int32_t *units = n ? sl_malloc(n * sizeof *units) : NULL;
    kept_image *images = n_images ? sl_calloc(n_images, sizeof *images) : NULL;
    if (!units || (n_images && !images)) {
        sl_free(units);
        sl_free(images);
        return false;
    }
    size_t u = 0, k_image = 0;
    for (size_t i = 0; i < nc; i++) {
        if (!req_chunk_is_text(r, i)) {
            describe_image(mtmd_input_chunks_get(r->chunks, i), &images[k_image]);
            units[u++] = -(int32_t)k_image++ - 1;
            continue;
        }
        size_t k = 0;
        const llama_token *toks = req_chunk_tokens(r, i, &k);
        if (k)
            memcpy(units + u, toks, k * sizeof *units);
        u += k;
    }
    if (s->n_fed)
        memcpy(units + u, s->fed, (size_t)s->n_fed * sizeof *units);
    drop_kept(s);
    s->units = units;
    s->n_units = n;
    s->kept_images = images;
    s->kept_at = ++e->n_kept;
    return true;
}

/* Frees the slot; `finished` (NULL: a failure, the cells are unknown) was
 * answered in it, and its sequence is kept where it can be (keep_kv). */
static void release_slot(llama_engine *e, slot *s, req *finished)
{
    if (!finished || !keep_kv(e, s, finished)) {
        llama_memory_seq_rm(llama_get_memory(e->ctx), s->seq, -1, -1);
        drop_kept(s);
    }
    if (s->smpl)
        llama_sampler_free(s->smpl);
    if (s->grammar)
        llama_sampler_free(s->grammar);
    sl_free(s->text.data);
    sl_free(s->trace_tokens);
    sl_free(s->trace_margins);
    sl_free(s->lp_ids);
    sl_free(s->lp_vals);
    e->kv_reserved -= s->reserved;
    *s = (slot){.seq = s->seq, .logits_idx = -1, .fed = s->fed, .cap_fed = s->cap_fed,
                .units = s->units, .n_units = s->n_units, .kept_images = s->kept_images,
                .kept_at = s->kept_at,
                .held_until = finished && finished->followed && s->units ? now_ms() + HOLD_MS
                                                                          : 0.0};
}

/* {"id","token","logprob","bytes"} of token tok (OpenAI's shape; "id" as
 * llama-server adds it); NULL when out of memory. A log-probability of
 * -inf is written -9999, as OpenAI and vLLM do (JSON has no infinity). */
static json_t *logprob_entry(const llama_engine *e, int32_t tok, float lp)
{
    char piece[256];
    int32_t n = llama_token_to_piece(e->vocab, tok, piece, sizeof piece, 0, false);
    if (n < 0)
        n = 0;
    json_t *bytes = json_array();
    for (int32_t i = 0; bytes && i < n; i++)
        if (json_array_append_new(bytes, json_integer((unsigned char)piece[i])) != 0) {
            json_decref(bytes);
            bytes = NULL;
        }
    if (!bytes)
        return NULL;
    return json_pack("{s:i, s:s%, s:f, s:o}", "id", (int)tok, "token", piece,
                     sl_utf8_valid_prefix(piece, (size_t)n), "logprob",
                     isfinite(lp) ? (double)lp : -9999.0, "bytes", bytes);
}

/* The answer's log-probabilities as JSON text (sl_result.logprobs): an
 * entry per generated token, and one for the end-of-generation token when
 * the model ended the answer (llama-server and vLLM report it too, and
 * count it in completion_tokens; generated_tokens does not); NULL when out
 * of memory. */
static char *logprobs_json(const llama_engine *e, const slot *s)
{
    json_t *content = json_array();
    for (int t = 0; content && t < s->n_gen + s->lp_end; t++) {
        size_t at = (size_t)t * (size_t)s->lp_stride;
        json_t *entry = logprob_entry(e, s->lp_ids[at], s->lp_vals[at]);
        json_t *top = json_array();
        bool ok = entry && top && json_object_set(entry, "top_logprobs", top) == 0;
        for (int k = 1; ok && k < s->lp_stride; k++)
            ok = json_array_append_new(top, logprob_entry(e, s->lp_ids[at + (size_t)k],
                                                          s->lp_vals[at + (size_t)k])) == 0;
        json_decref(top);
        if (!ok || json_array_append_new(content, entry) != 0) {
            if (!ok)
                json_decref(entry);
            json_decref(content);
            content = NULL;
        }
    }
    json_t *root = content ? json_pack("{s:o}", "content", content) : NULL;
    char *text = root ? sl_json_dump(root, JSON_COMPACT | JSON_REAL_PRECISION(8), NULL) : NULL;
    json_decref(root);
    return text;
}

static void finish_slot(llama_engine *e, slot *s, const char *reason)
{
    double t = now_ms();
    req *r = s->r;
    sl_result res = {
        .finish_reason = reason,
        .prompt_tokens = r->n_cells,
        .generated_tokens = s->n_gen,
        .cached_tokens = s->cached,
        .queue_ms = s->t_admit - r->t_submit,
        .prefill_ms = s->t_prefilled - s->t_admit,
        .encode_ms = s->encode_ms,
        .ttft_ms = s->t_first ? s->t_first - r->t_submit : 0.0,
        .generate_ms = s->t_first ? t - s->t_first : 0.0,
    };
    res.text = sl_utf8_sanitize(s->text.data ? s->text.data : "", s->text.len);
    res.trace_tokens = s->trace_tokens;
    res.trace_margins = s->trace_margins;
    res.n_trace = s->n_trace;
    s->trace_tokens = NULL;
    s->trace_margins = NULL;
    const char *const *choices = (const char *const *)r->choices;
    bool lp_ok = (!s->lp_ids || (res.logprobs = logprobs_json(e, s)) != NULL) &&
                 (!r->n_choices ||
                  (res.scores = sl_choice_scores_json(choices, r->choice_p, r->n_choices)));
    s->r = NULL;
    release_slot(e, s, r);
    if (!lp_ok)
        sl_result_clear(&res);
    if (res.text && r->want_json &&
        !(res.response_json = sl_chat_completion_json(NULL, e->model_name, 0, &res)))
        sl_result_clear(&res);
    if (!res.text) {
        complete(e, r, SL_ERR_NOMEM, "out of memory for the result", NULL);
        return;
    }
    char *invalid = NULL;
    if (r->schema && sl_json_schema_check_answer(r->schema, r->id, r->task_name, res.text,
                                                 res.finish_reason, &invalid) != SL_OK) {
        complete(e, r, SL_ERR_INVALID_OUTPUT,
                 invalid ? invalid : "the answer does not match the JSON schema", &res);
        sl_free(invalid);
        return;
    }
    complete(e, r, SL_OK, NULL, &res);
}

static void fail_slot(llama_engine *e, slot *s, sl_status status, const char *msg)
{
    req *r = s->r;
    s->r = NULL;
    release_slot(e, s, NULL);
    complete(e, r, status, msg, NULL);
}

/* The tokens of text[0, len) into *out (sl_free) and *n, special tokens
 * parsed, BOS/EOS added when add_special; *n may be 0. */
static sl_status tokens_of(const llama_engine *e, const char *id, const char *text, size_t len,
                           bool add_special, llama_token **out, int32_t *n)
{
    *out = NULL;
    *n = 0;
    if (len > INT32_MAX / 2)
        return sl_fail(SL_ERR_TOO_LONG, "%s: the prompt is too long (%zu bytes)", id, len);
    /* A token is at least one byte, plus the added BOS/EOS. */
    int32_t cap = (int32_t)len + 8;
    llama_token *toks = sl_malloc((size_t)cap * sizeof *toks);
    int32_t got = toks ? llama_tokenize(e->vocab, text, (int32_t)len, toks, cap, add_special, true)
                       : 0;
    if (toks && got < 0 && got != INT32_MIN) { /* -got: the count it needs */
        llama_token *grown = sl_realloc(toks, (size_t)-got * sizeof *grown);
        if (grown) {
            toks = grown;
            got = llama_tokenize(e->vocab, text, (int32_t)len, toks, -got, add_special, true);
        }
    }
    if (!toks)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory for the prompt's tokens", id);
    if (got < 0) {
        sl_free(toks);
        return sl_fail(SL_ERR_ENGINE, "%s: llama_tokenize failed (code %d)", id, (int)got);
    }
    *out = toks;
    *n = got;
    return SL_OK;
}

/* The answers of one request (same_prompt) share their prompt but its
 * last token: the chunks before the last whole, and the last (text) but its
 * last token. Tasks share only up to their last image (set by tokenize). */
static void share_whole_prompt(req *r)
{
    size_t n_chunks = req_n_chunks(r), n = 0;
    if (!r->same_prompt || n_chunks == 0)
        return;
    req_chunk_tokens(r, n_chunks - 1, &n);
    if (n < 2)
        return;
    r->n_shared = n_chunks - 1;
    r->shared_tok = n - 1;
    r->shared_pos = r->n_pos - 1;
}

/* Without a vision projector: the rendered prompt into r->tokens, as
 * mtmd_tokenize tokenizes text (special tokens added and parsed), so a
 * text-only request gets the same tokens with or without a projector.
 * Takes prompt (freed). */
static sl_status tokenize_text(llama_engine *e, req *r, char *prompt)
{
    int32_t n;
    sl_status st = tokens_of(e, r->id, prompt, strlen(prompt), true, &r->tokens, &n);
    sl_free(prompt);
    if (st != SL_OK)
        return st;
    if (n == 0) {
        sl_free(r->tokens);
        r->tokens = NULL;
        return sl_fail(SL_ERR_INVALID_ARG, "%s: the prompt has no tokens", r->id);
    }
    r->n_tokens = n;
    r->n_pos = n;
    r->n_cells = n;
    r->n_shared = 0;
    r->shared_tok = 0;
    r->shared_pos = 0;
    share_whole_prompt(r);
    return SL_OK;
}

/* The tokens the model would answer `text` with right after `tail` (the
 * prompt's text before the answer): those past tail's own tokens in tail +
 * text, or (the two merged at the seam) text's own. *out: sl_free. */
static sl_status tokens_after(const llama_engine *e, const req *r, const char *tail,
                              const llama_token *base, int32_t n_base, const char *text,
                              llama_token **out, int32_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    char *joined = sl_asprintf("%s%s", tail, text);
    if (!joined)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory for the choices' tokens", r->id);
    llama_token *toks;
    int32_t n;
    sl_status st = tokens_of(e, r->id, joined, strlen(joined), false, &toks, &n);
    sl_free(joined);
    if (st != SL_OK)
        return st;
    if (n > n_base && memcmp(toks, base, (size_t)n_base * sizeof *base) == 0) {
        memmove(toks, toks + n_base, (size_t)(n - n_base) * sizeof *toks);
        *out = toks;
        *n_out = n - n_base;
        return SL_OK;
    }
    sl_free(toks);
    return tokens_of(e, r->id, text, strlen(text), false, out, n_out);
}

/* Does token t's text hold more than white space? */
static bool carries_text(const llama_engine *e, llama_token t)
{
    char piece[64];
    int32_t n = llama_token_to_piece(e->vocab, t, piece, sizeof piece, 0, false);
    for (int32_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n", piece[i]))
            return true;
    return n < 0; /* longer than the buffer: text */
}

/* r's choices as a tree of tokens (req.choice_tree; llama_choice.h), from
 * the rendered prompt: the text after its last image is what the answer
 * follows. Each choice is answered as written, after a space (unless it
 * begins with white space) and, when it begins with an ASCII letter, with
 * that letter's case swapped, after a space or not: how the model may
 * begin the same word ("Yes", " yes", ...). A form other than the one as
 * written counts only if its first token holds text (not " " alone: that
 * begins any word). */
static sl_status choice_tokens(const llama_engine *e, req *r, const char *prompt)
{
    const char *marker = e->mtmd ? mtmd_get_marker(e->mtmd) : NULL;
    const char *tail = prompt, *m;
    while (marker && *marker && (m = strstr(tail, marker)))
        tail = m + strlen(marker);
    sl_choice_tree_free(r->choice_tree);
    sl_free(r->choice_p);
    r->choice_tree = sl_choice_tree_new(r->n_choices, CHOICE_VARIANTS);
    r->choice_p = sl_calloc((size_t)r->n_choices, sizeof *r->choice_p);
    if (!r->choice_tree || !r->choice_p)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory for the choices' tokens", r->id);
    llama_token *base;
    int32_t n_base;
    sl_status st = tokens_of(e, r->id, tail, strlen(tail), false, &base, &n_base);
    for (int i = 0; st == SL_OK && i < r->n_choices; i++) {
        const char *c = r->choices[i];
        char other = sl_choice_other_case(c[0]);
        bool spaced = !strchr(" \t\r\n", c[0]);
        for (int v = 0; st == SL_OK && v < CHOICE_VARIANTS; v++) {
            if (((v & 1) && !spaced) || ((v & 2) && !other))
                continue;
            char *text = sl_asprintf("%s%s", (v & 1) ? " " : "", c);
            if (!text) {
                st = sl_fail(SL_ERR_NOMEM, "%s: out of memory for the choices' tokens", r->id);
                break;
            }
            if (v & 2) /* the first letter's other case */
                text[v & 1] = other;
            llama_token *toks;
            int32_t n;
            st = tokens_after(e, r, tail, base, n_base, text, &toks, &n);
            sl_free(text);
            if (st == SL_OK && v == 0 && n == 0)
                st = sl_fail(SL_ERR_INVALID_ARG, "%s: choice '%.60s' has no tokens", r->id, c);
            if (st == SL_OK && n > 0 && (v == 0 || carries_text(e, toks[0])))
                sl_choice_tree_set(r->choice_tree, i, v, toks, n);
            sl_free(toks);
        }
    }
    sl_free(base);
    if (st == SL_OK)
        st = sl_choice_tree_plan(r->choice_tree, r->id, (const char *const *)r->choices);
    return st;
}

static sl_status no_projector(const char *id)
{
    return sl_fail(SL_ERR_INVALID_ARG,
                   "%s: this engine has no vision projector (--mmproj): it cannot take images",
                   id);
}

/* Does r's tokenized prompt hold a token outside the model's vocabulary
 * (*tok: the first)? mtmd wraps each image in its projector's marker
 * tokens, looked up in the model's vocabulary: a projector made for
 * another model (idefics3's <fake_token_around_image> with a Qwen2-VL
 * model of the same width) gets -1 for them, and llama_decode then
 * refuses the whole batch, every sequence in it, saying only "failed to
 * decode". */
static bool foreign_token(const llama_engine *e, const req *r, llama_token *tok)
{
    int32_t n_vocab = llama_vocab_n_tokens(e->vocab);
    for (size_t c = 0; c < req_n_chunks(r); c++) {
        size_t n = 0;
        const llama_token *toks = req_chunk_is_text(r, c) ? req_chunk_tokens(r, c, &n) : NULL;
        for (size_t i = 0; i < n; i++)
            if (toks[i] < 0 || toks[i] >= n_vocab) {
                *tok = toks[i];
                return true;
            }
    }
    return false;
}

/* Tokenizes a request's prompt and its images (a conversation's, in order;
 * none: text chunks only, and the vision encoder never runs for it), the
 * images with vision context vis (e->mtmd, or an encoder thread's own: the
 * same projector, so the chunks are the same). */
static sl_status tokenize(llama_engine *e, mtmd_context *vis, req *r)
{
    const sl_image *images[SL_MAX_IMAGES];
    int n_images = r->n_msgs > 0 ? r->n_images : r->image != NULL;
    if (!e->mtmd && n_images > 0)
        return no_projector(r->id); /* submit refuses these: never reached */
    char *prompt = NULL;
    sl_status st = r->n_msgs > 0 ? render_conversation(e, r, &prompt)
                                 : render_prompt(e, r->id, r->system_prompt, r->prompt,
                                                 r->image != NULL, &prompt);
    if (st == SL_OK && r->n_choices > 0)
        st = choice_tokens(e, r, prompt);
    if (st != SL_OK) {
        sl_free(prompt);
        return st;
    }
    if (!e->mtmd)
        return tokenize_text(e, r, prompt);
    if (r->n_msgs > 0)
        memcpy(images, r->images, (size_t)n_images * sizeof *images);
    else
        images[0] = r->image;
    mtmd_bitmap *bitmaps[SL_MAX_IMAGES] = {0};
    for (int i = 0; i < n_images; i++) {
        uint32_t w = (uint32_t)sl_image_width(images[i]), h = (uint32_t)sl_image_height(images[i]);
        if (!(bitmaps[i] = mtmd_bitmap_init(w, h, sl_image_pixels(images[i])))) {
            st = sl_fail(SL_ERR_NOMEM, "%s: out of memory for the image bitmap", r->id);
            break;
        }
        /* Its chunks carry the id: the image cache's key, and how a kept
         * sequence's images are told apart (keep_kv). */
        char id[SL_IMAGE_CACHE_ID];
        if ((e->image_cache || e->keep_kv) &&
            sl_image_cache_id(sl_image_pixels(images[i]), w, h, id))
            mtmd_bitmap_set_id(bitmaps[i], id);
    }
    int32_t rc = 0;
    if (st == SL_OK) {
        r->chunks = mtmd_input_chunks_init();
        mtmd_input_text text = {
            .text = prompt, .text_len = strlen(prompt), .add_special = true, .parse_special = true};
        rc = mtmd_tokenize(vis, r->chunks, &text, (const mtmd_bitmap **)bitmaps,
                           (size_t)n_images);
    }
    for (int i = 0; i < n_images; i++)
        mtmd_bitmap_free(bitmaps[i]);
    sl_free(prompt);
    if (st != SL_OK)
        return st;
    if (rc != 0)
        return rc == 2 ? n_images > 1
                             ? sl_fail(SL_ERR_DECODE, "%s: the vision preprocessor rejected one "
                                       "of the %d images (llama.cpp's log says why)", r->id,
                                       n_images)
                             : sl_fail(SL_ERR_DECODE, "%s: the vision preprocessor rejected the "
                                       "%dx%d px image, as shrunk (too small or too narrow for "
                                       "it; llama.cpp's log says why)", r->id,
                                       sl_image_width(images[0]), sl_image_height(images[0]))
                       : sl_fail(SL_ERR_ENGINE, "%s: mtmd_tokenize failed (code %d)", r->id, (int)rc);
    size_t n = mtmd_input_chunks_size(r->chunks);
    if (n == 0 || mtmd_input_chunk_get_type(mtmd_input_chunks_get(r->chunks, n - 1)) !=
                      MTMD_INPUT_CHUNK_TYPE_TEXT)
        return sl_fail(SL_ERR_ENGINE, "%s: the prompt must end with text after the image", r->id);
    llama_token bad;
    if (foreign_token(e, r, &bad))
        return sl_fail(SL_ERR_MODEL, "%s: token %d of the prompt is not in the model's vocabulary "
                       "of %d: the vision projector (--mmproj) marks images with tokens this "
                       "model does not have, so it was made for another model", r->id, (int)bad,
                       (int)llama_vocab_n_tokens(e->vocab));
    r->n_pos = (int)mtmd_helper_get_n_pos(r->chunks);
    r->n_cells = (int)mtmd_helper_get_n_tokens(r->chunks);
    r->n_shared = 0;
    r->shared_tok = 0;
    r->shared_pos = 0;
    for (size_t i = 0; i < n; i++)
        if (mtmd_input_chunk_get_type(mtmd_input_chunks_get(r->chunks, i)) !=
            MTMD_INPUT_CHUNK_TYPE_TEXT)
            r->n_shared = i + 1;
    for (size_t i = 0; i < r->n_shared; i++)
        r->shared_pos += (int)mtmd_input_chunk_get_n_pos(mtmd_input_chunks_get(r->chunks, i));
    share_whole_prompt(r);
    return SL_OK;
}

/* Chunk i's place among its image's chunks (some models tile an image
 * into several), which the image cache's key holds beside the image. */
static int chunk_part(const req *r, size_t i)
{
    const char *id = mtmd_input_chunk_get_id(mtmd_input_chunks_get(r->chunks, i));
    int part = 0;
    for (size_t k = 0; id && *id && k < i; k++) {
        const char *other = mtmd_input_chunk_get_id(mtmd_input_chunks_get(r->chunks, k));
        part += other && strcmp(other, id) == 0;
    }
    return part;
}

/* Chunk i's embeddings from the image cache (sl_free), or NULL. */
static float *cached_embd(llama_engine *e, const req *r, size_t i)
{
    const mtmd_input_chunk *c = mtmd_input_chunks_get(r->chunks, i);
    if (!e->image_cache)
        return NULL;
    return sl_image_cache_get(e->image_cache, mtmd_input_chunk_get_id(c), chunk_part(r, i),
                              mtmd_input_chunk_get_n_tokens(c) * (size_t)e->n_embd_inp);
}

static void cache_embd(llama_engine *e, const req *r, size_t i, const float *embd)
{
    const mtmd_input_chunk *c = mtmd_input_chunks_get(r->chunks, i);
    if (e->image_cache)
        sl_image_cache_put(e->image_cache, mtmd_input_chunk_get_id(c), chunk_part(r, i), embd,
                           mtmd_input_chunk_get_n_tokens(c) * (size_t)e->n_embd_inp);
}

/* Chunk i of r from the image cache, or NULL with the chunk claimed for
 * enc to encode. With several encoders, one whose image another encodes
 * now waits for that encode and takes it from the cache: rows of one
 * picture side by side in the queue (a VQA file's questions) are encoded
 * once. (If that encode failed, the waiter encodes it itself.) */
static float *cached_or_claimed(encoder *enc, const req *r, size_t i)
{
    llama_engine *e = enc->e;
    const char *id = mtmd_input_chunk_get_id(mtmd_input_chunks_get(r->chunks, i));
    if (e->n_encoders < 2 || !e->image_cache || !id || !*id)
        return cached_embd(e, r, i);
    int part = chunk_part(r, i);
    float *embd = NULL;
    pthread_mutex_lock(&e->encoding_mu);
    for (;;) {
        if ((embd = cached_embd(e, r, i)) != NULL)
            break;
        bool taken = false;
        for (int k = 0; k < e->n_encoders && !taken; k++) {
            const encoder *o = &e->encoders[k];
            taken = o != enc && o->encoding_id && o->encoding_part == part &&
                    strcmp(o->encoding_id, id) == 0;
        }
        if (!taken) {
            enc->encoding_id = id;
            enc->encoding_part = part;
            break;
        }
        pthread_cond_wait(&e->encoding_cv, &e->encoding_mu);
    }
    pthread_mutex_unlock(&e->encoding_mu);
    return embd;
}

/* The claim cached_or_claimed made, given up once the encode is cached (or
 * failed). */
static void unclaim(encoder *enc)
{
    llama_engine *e = enc->e;
    if (e->n_encoders < 2)
        return;
    pthread_mutex_lock(&e->encoding_mu);
    if (enc->encoding_id) {
        enc->encoding_id = NULL;
        pthread_cond_broadcast(&e->encoding_cv);
    }
    pthread_mutex_unlock(&e->encoding_mu);
}

/* Tokenizes r and encodes its images into r->embd (copies: mtmd's output
 * buffer is reused by the next encode). On encoder thread enc, which alone
 * touches r until it is marked prepared; its counters go to *counted. */
static void prepare(encoder *enc, req *r, sl_engine_stats *counted)
{
    llama_engine *e = enc->e;
    double tp = now_ms();
    sl_status st = tokenize(e, enc->mtmd, r);
    double ms = now_ms() - tp;
    phase_count(e, counted, SL_PHASE_PREPROCESS, ms);
    size_t n = st == SL_OK ? req_n_chunks(r) : 0;
    if (st == SL_OK && !(r->embd = sl_calloc(n, sizeof *r->embd)))
        st = sl_fail(SL_ERR_NOMEM, "%s: out of memory for the image embeddings", r->id);
    for (size_t i = 0; st == SL_OK && i < n; i++) {
        /* A request's later tasks copy the first one's image positions:
         * they are encoded only if they end up without it (admission). */
        if (req_chunk_is_text(r, i) || (r->grp && r->task > 0))
            continue;
        const mtmd_input_chunk *c = mtmd_input_chunks_get(r->chunks, i);
        if ((r->embd[i] = cached_or_claimed(enc, r, i)) != NULL)
            continue;
        size_t bytes = mtmd_input_chunk_get_n_tokens(c) * (size_t)e->n_embd_inp * sizeof(float);
        if (!(r->embd[i] = sl_malloc(bytes))) {
            unclaim(enc);
            st = sl_fail(SL_ERR_NOMEM, "%s: out of memory for the image embeddings", r->id);
            break;
        }
        double tk = now_ms();
        pthread_mutex_lock(enc->mu);
        bool encoded = mtmd_encode_chunk(enc->mtmd, c) == 0;
        if (encoded)
            memcpy(r->embd[i], mtmd_get_output_embd(enc->mtmd), bytes);
        pthread_mutex_unlock(enc->mu);
        if (!encoded) {
            unclaim(enc);
            st = sl_fail(SL_ERR_ENGINE, "%s: the vision encoder failed", r->id);
            break;
        }
        cache_embd(e, r, i, r->embd[i]);
        unclaim(enc);
        ms = now_ms() - tk;
        r->prep_encode_ms += ms;
        counted->encode_s += ms / 1e3;
        counted->images_encoded++;
        phase_count(e, counted, SL_PHASE_ENCODE, ms);
    }
    r->prep_status = st;
    if (st != SL_OK)
        r->prep_error = sl_strdup(sl_last_error()); /* NULL: complete() says "failed" */
}

/* The encoder thread's name (top, gdb, perf; and the test that holds this
 * thread back, tests/unit/late_encoder.c). */
#define ENCODER_THREAD_NAME "sl-encoder"

/* An encoder thread: prepares pending requests in order, at most
 * encode_ahead of them ahead of admission (a request's tasks together).
 * With several, each takes the next request in line; they may finish out
 * of order, and admission still takes the queue's head first. */
static void *encoder_main(void *arg)
{
    encoder *enc = arg;
    llama_engine *e = enc->e;
#ifdef __linux__
    prctl(PR_SET_NAME, ENCODER_THREAD_NAME, 0, 0, 0);
#endif
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stopping && (!e->prep_next || (e->n_prepared >= e->encode_ahead &&
                                                  !e->prep_next->follows)))
            pthread_cond_wait(&e->encoder_cv, &e->mu);
        if (e->stopping)
            break;
        /* A request's tasks (and answers) are prepared in one turn and
         * marked prepared together: admission then takes them in one pass,
         * so the later ones find the first running and copy its image
         * positions however late this thread runs (only the first encodes;
         * one prepared alone could start and end before its siblings were
         * ready, and each of them encode the image again). */
        req *r = e->prep_next, *group[SL_MAX_TASKS * SL_MAX_ANSWERS];
        int n = 0;
        do {
            group[n++] = r;
            r->preparing = true;
            r = r->next;
        } while (r && group[0]->grp && r->grp == group[0]->grp && n < (int)(sizeof group / sizeof *group));
        e->prep_next = r;
        e->n_prepared += n;
        if (r && e->n_encoders > 1)
            pthread_cond_signal(&e->encoder_cv); /* more for the others */
        pthread_mutex_unlock(&e->mu);
        sl_engine_stats counted = {0};
        for (int i = 0; i < n; i++)
            prepare(enc, group[i], &counted);
        pthread_mutex_lock(&e->mu);
        add_encoder_counters(&e->enc, &counted);
        for (int i = 0; i < n; i++) {
            group[i]->preparing = false;
            group[i]->prepared = true;
        }
        pthread_cond_signal(&e->work_cv);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* Computes the prompt head shared by every row into sequence n_parallel. */
static void build_prefix(llama_engine *e, const req *r)
{
    size_t n = 0;
    const llama_token *toks = req_chunk_tokens(r, 0, &n);
    if (!toks || n < 2 || (int)n > e->n_batch)
        return;
    llama_token *copy = sl_malloc(n * sizeof *copy);
    if (!copy)
        return;
    memcpy(copy, toks, n * sizeof *copy);
    int pseq = e->n_parallel;
    e->batch.n_tokens = 0;
    for (size_t i = 0; i < n; i++) {
        int k = e->batch.n_tokens++;
        e->batch.token[k] = copy[i];
        e->batch.pos[k] = (llama_pos)i;
        e->batch.n_seq_id[k] = 1;
        e->batch.seq_id[k][0] = pseq;
        e->batch.logits[k] = 0;
    }
    if (llama_decode(e->ctx, e->batch) != 0) {
        llama_memory_seq_rm(llama_get_memory(e->ctx), pseq, -1, -1);
        sl_free(copy);
        return;
    }
    e->prefix = copy;
    e->n_prefix = (int)n;
    e->kv_reserved += (int)n;
}

/* DEVICE: has the graph choose s's tokens. A greedy row reuses the
 * sequence's greedy chain; a row with its own settings hands its chain
 * over (attaching one makes llama.cpp rebuild its graph reservation: a
 * cost per admission that greedy rows do not pay). A chain the backend
 * cannot run leaves the row on the host. */
static void attach_device_sampler(llama_engine *e, slot *s)
{
    int seq = s->seq;
    s->on_device = false;
    if (s->fast_greedy && !s->lp_stride && e->attached[seq] && e->attached_greedy[seq]) {
        s->on_device = true;
        return;
    }
    if (s->grammar || s->lp_stride || s->r->n_choices || (!s->fast_greedy && !e->device_all)) {
        /* auto: rows with their own settings stay on the host (llama.cpp's
         * backend top-p sorts the whole vocabulary in the graph: 30 s a
         * step for 128 sequences of 152k on a CPU, unmeasured on a GPU).
         * Any sampler: a grammar row does (the grammar has no backend). */
        if (e->attached[seq] && llama_set_sampler(e->ctx, seq, NULL)) {
            llama_sampler_free(e->attached[seq]);
            e->attached[seq] = NULL;
        }
        return;
    }
    struct llama_sampler *chain = s->smpl;
    if (!chain) {
        chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
    }
    bool ok = llama_set_sampler(e->ctx, seq, chain);
    /* The context no longer refers to the previous chain. */
    if (e->attached[seq])
        llama_sampler_free(e->attached[seq]);
    e->attached[seq] = ok ? chain : NULL;
    e->attached_greedy[seq] = ok && !s->smpl;
    if (!ok) {
        if (!s->smpl)
            llama_sampler_free(chain);
        else
            llama_sampler_reset(chain); /* untouched, but be sure: the host runs it now */
        return;
    }
    s->on_device = true;
    s->smpl = NULL; /* owned by e->attached now; the slot reads it as that */
}

/* Two image chunks alike: the same image (its id: the pixels' hash) and
 * the same size in tokens and positions (chunk by chunk, in order). */
static bool same_image(const mtmd_input_chunk *a, const mtmd_input_chunk *b)
{
    kept_image k;
    describe_image(a, &k);
    return mtmd_input_chunk_get_type(a) == mtmd_input_chunk_get_type(b) && image_is(&k, b);
}

/* How far r's prompt begins as free slot s's kept sequence does: the
 * positions in common (0: none), and r's chunk and token where they part.
 * At least one token of r is left to compute (its logits begin the answer). */
static llama_pos kept_common(const slot *s, const req *r, size_t *at_chunk, size_t *at_tok)
{
    size_t nr = req_n_chunks(r), i = 0, t = 0, u = 0;
    size_t last_i = 0, last_t = 0;
    llama_pos pos = 0, last_pos = 0;
    while (i < nr && u < s->n_units) {
        if (req_chunk_is_text(r, i)) {
            size_t n = 0;
            const llama_token *toks = req_chunk_tokens(r, i, &n);
            if (t == n) {
                i++;
                t = 0;
                continue;
            }
            if (s->units[u] != toks[t])
                break;
            last_i = i;
            last_t = t;
            last_pos = pos++;
            t++;
            u++;
            continue;
        }
        const mtmd_input_chunk *c = mtmd_input_chunks_get(r->chunks, i);
        if (s->units[u] >= 0 || !image_is(&s->kept_images[-s->units[u] - 1], c))
            break;
        last_i = i;
        last_t = 0;
        last_pos = pos;
        pos += mtmd_input_chunk_get_n_pos(c);
        i++;
        u++;
    }
    while (i < nr && req_chunk_is_text(r, i)) { /* past chunks matched to their end */
        size_t n = 0;
        req_chunk_tokens(r, i, &n);
        if (t < n)
            break;
        i++;
        t = 0;
    }
    if (i == nr) { /* all of it: the last unit is computed again */
        i = last_i;
        t = last_t;
        pos = last_pos;
    }
    *at_chunk = i;
    *at_tok = t;
    return pos;
}

/* The positions the cached prompt head would give r. */
static int head_common(const llama_engine *e, const req *r)
{
    size_t n0 = 0;
    const llama_token *t0 = req_chunk_is_text(r, 0) ? req_chunk_tokens(r, 0, &n0) : NULL;
    int common = 0;
    while (t0 && common < e->n_prefix && (size_t)common < n0 && t0[common] == e->prefix[common])
        common++;
    return common;
}

/* The free slot for r: the one whose kept sequence goes furthest into r's
 * prompt; else one keeping nothing, else the one kept longest ago. Slots
 * held for follow-ups are theirs. NULL: none is free to r. */
static slot *choose_slot(llama_engine *e, const req *r)
{
    slot *best = NULL, *spare = NULL;
    llama_pos best_pos = head_common(e, r); /* less is no gain: the head gives as much */
    double t = now_ms();
    for (int i = 0; i < e->n_parallel; i++) {
        slot *s = &e->slots[i];
        if (s->r || (!r->follows && s->held_until > t))
            continue;
        if (!spare || (spare->n_units && (!s->n_units || s->kept_at < spare->kept_at)))
            spare = s;
        size_t chunk, tok;
        llama_pos pos = s->n_units && !r->grp ? kept_common(s, r, &chunk, &tok) : 0;
        if (pos > best_pos) {
            best = s;
            best_pos = pos;
        }
    }
    return best ? best : spare;
}

/* s takes r: the positions of its kept sequence that r begins with stay,
 * unless the prompt head or a sibling (`other` positions) gives as many;
 * the rest are dropped. Returns the positions kept, and r's chunk and
 * token there. */
static llama_pos take_kept(llama_engine *e, slot *s, const req *r, llama_pos other,
                           size_t *chunk, size_t *tok)
{
    if (!s->n_units)
        return 0;
    llama_memory_t mem = llama_get_memory(e->ctx);
    llama_pos pos = r->grp ? 0 : kept_common(s, r, chunk, tok);
    if (pos > 0 && (pos <= head_common(e, r) || pos < other))
        pos = 0;
    if (pos > 0 && !llama_memory_seq_rm(mem, s->seq, pos, -1))
        pos = 0;
    if (pos == 0)
        llama_memory_seq_rm(mem, s->seq, -1, -1);
    drop_kept(s);
    return pos;
}

static slot *find_donor(llama_engine *e, const slot *s, bool *ready);
static void use_prefix(llama_engine *e, slot *s, req *r);

/* Puts a tokenized request into a free slot. Returns false (the request
 * completed as failed, the slot still free) when its buffers cannot be had. */
static bool admit(llama_engine *e, slot *s, req *r)
{
    int32_t *trace_tokens = NULL;
    float *trace_margins = NULL;
    if (r->trace) {
        trace_tokens = sl_calloc((size_t)gen_room(r) + 1, sizeof *trace_tokens);
        trace_margins = sl_calloc((size_t)gen_room(r) + 1, sizeof *trace_margins);
        if (!trace_tokens || !trace_margins) {
            sl_free(trace_tokens);
            sl_free(trace_margins);
            fail_req(e, r, SL_ERR_NOMEM, "%s: out of memory for the token trace", r->id);
            return false;
        }
    }
    int32_t *lp_ids = NULL;
    float *lp_vals = NULL;
    int lp_stride = r->sampling.logprobs ? 1 + r->sampling.top_logprobs : 0;
    if (lp_stride) {
        size_t n = ((size_t)r->sampling.max_tokens + 1) * (size_t)lp_stride;
        lp_ids = sl_malloc(n * sizeof *lp_ids);
        lp_vals = sl_malloc(n * sizeof *lp_vals);
        if (!lp_ids || !lp_vals) {
            sl_free(trace_tokens);
            sl_free(trace_margins);
            sl_free(lp_ids);
            sl_free(lp_vals);
            fail_req(e, r, SL_ERR_NOMEM, "%s: out of memory for the log-probabilities", r->id);
            return false;
        }
    }
    struct llama_sampler *grammar = NULL;
    if (r->grammar && !(grammar = llama_sampler_init_grammar(e->vocab, r->grammar, "root"))) {
        sl_free(trace_tokens);
        sl_free(trace_margins);
        sl_free(lp_ids);
        sl_free(lp_vals);
        fail_req(e, r, SL_ERR_INVALID_ARG,
                 "%s: llama.cpp cannot parse the grammar (see its message in the log)", r->id);
        return false;
    }
    *s = (slot){.seq = s->seq, .r = r, .logits_idx = -1, .probe = -1, .probe_at = -1,
                .t_admit = now_ms(), .fed = s->fed, .cap_fed = s->cap_fed, .units = s->units,
                .n_units = s->n_units, .kept_images = s->kept_images,
                .encode_ms = r->prep_encode_ms, .grammar = grammar, .trace_tokens = trace_tokens,
                .trace_margins = trace_margins, .lp_ids = lp_ids, .lp_vals = lp_vals,
                .lp_stride = lp_stride};
    s->reserved = r->n_cells + gen_room(r);
    e->kv_reserved += s->reserved;
    bool greedy = r->sampling.temperature <= 0.0f && !sl_sampling_penalizes(&r->sampling);
    s->fast_greedy = e->sampler != SL_SAMPLER_REFERENCE && greedy && !grammar && !r->n_choices;
    /* A row that stays on the host runs its own top-p there (see
     * llama_sample.h); the reference path and the device keep llama.cpp's. */
    s->own_top_p = e->sampler != SL_SAMPLER_REFERENCE && !grammar &&
                   !(e->sampler == SL_SAMPLER_DEVICE && e->device_all) &&
                   sl_llama_host_top_p(&r->sampling);
    /* A greedy grammar row needs no chain: the argmax, checked by the grammar. */
    s->smpl = s->fast_greedy || (grammar && greedy) || r->n_choices
                  ? NULL
                  : make_sampler(e, &r->sampling, s->own_top_p);
    if (e->sampler == SL_SAMPLER_DEVICE)
        attach_device_sampler(e, s);
    e->work.prefix_queries++;
    e->work.prefix_query_tokens += (uint64_t)r->n_cells;
    /* A request's task (answer) whose sibling holds or is computing the
     * same image (prompt) positions waits for them, and so does a row
     * whose image and the text before it another running row has (the
     * prefix cache: VQA rows of one picture running together):
     * resolve_tasks() copies them. Unless the slot's kept sequence gives
     * more. */
    bool sibling = r->shared_pos > 0 && (r->grp || e->keep_kv) && find_donor(e, s, NULL);
    size_t kept_chunk = 0, kept_tok = 0;
    llama_pos kept = take_kept(e, s, r, sibling ? r->shared_pos : 0, &kept_chunk, &kept_tok);
    if (kept > 0) { /* as much as a sibling would give, or more */
        s->n_past = kept;
        s->chunk = kept_chunk;
        s->tok = kept_tok;
        s->cached = req_cells_before(r, kept_chunk, kept_tok);
        e->work.prefix_hits++;
        e->work.prefix_cached_tokens += (uint64_t)s->cached;
        return true;
    }
    if (sibling) {
        s->await = true;
        return true;
    }
    use_prefix(e, s, r);
    return true;
}

/* Is slot d a sibling task of s's (or a row like s's, neither a task) with
 * the same text before the image and the same image (so the same
 * positions)? */
static bool same_head(const slot *s, const slot *d)
{
    const req *a = s->r, *b = d->r;
    if (d == s || !b || b->grp != a->grp || b->n_shared != a->n_shared ||
        b->shared_tok != a->shared_tok || b->shared_pos != a->shared_pos)
        return false;
    if (a->shared_tok > 0) {
        size_t na = 0, nb = 0;
        const llama_token *ta = req_chunk_tokens(a, a->n_shared, &na);
        const llama_token *tb = req_chunk_tokens(b, b->n_shared, &nb);
        if (na < a->shared_tok || nb < a->shared_tok ||
            memcmp(ta, tb, a->shared_tok * sizeof *ta) != 0)
            return false;
    }
    for (size_t i = 0; i < a->n_shared; i++) {
        const mtmd_input_chunk *ca = mtmd_input_chunks_get(a->chunks, i);
        const mtmd_input_chunk *cb = mtmd_input_chunks_get(b->chunks, i);
        if (mtmd_input_chunk_get_type(ca) != mtmd_input_chunk_get_type(cb) ||
            mtmd_input_chunk_get_n_tokens(ca) != mtmd_input_chunk_get_n_tokens(cb))
            return false;
        if (mtmd_input_chunk_get_type(ca) != MTMD_INPUT_CHUNK_TYPE_TEXT) {
            /* A request's tasks have its one image; rows their own. */
            if (!a->grp && !same_image(ca, cb))
                return false;
            continue;
        }
        size_t na = 0, nb = 0;
        const llama_token *ta = mtmd_input_chunk_get_tokens_text(ca, &na);
        const llama_token *tb = mtmd_input_chunk_get_tokens_text(cb, &nb);
        if (na != nb || (na && memcmp(ta, tb, na * sizeof *ta) != 0))
            return false;
    }
    return true;
}

/* Has slot d decoded r's shared positions? (A step's tokens are decoded
 * before the next admission looks.) */
static bool past_shared(const slot *d, const req *r)
{
    return d->generating || d->chunk > r->n_shared ||
           (d->chunk == r->n_shared && d->tok >= r->shared_tok);
}

/* A sibling of s's computing the shared positions itself (not waiting);
 * *ready: it is past them. NULL: none. */
static slot *find_donor(llama_engine *e, const slot *s, bool *ready)
{
    slot *found = NULL;
    for (int i = 0; i < e->n_parallel; i++) {
        slot *d = &e->slots[i];
        if (d->await || !same_head(s, d))
            continue;
        bool past = past_shared(d, s->r);
        if (!found || past)
            found = d;
        if (past)
            break;
    }
    if (ready)
        *ready = found && past_shared(found, s->r);
    return found;
}

/* Waiting tasks take their sibling's image positions once it has them:
 * the sequence is copied (llama_memory_seq_cp: with a KV stream per
 * sequence, the stream as a whole), then cut back to the shared part. A
 * task left without a sibling (it failed) computes them itself. */
static void resolve_tasks(llama_engine *e)
{
    for (int i = 0; i < e->n_parallel; i++) {
        slot *s = &e->slots[i];
        if (!s->r || !s->await)
            continue;
        bool ready = false;
        slot *d = find_donor(e, s, &ready);
        if (!d) {
            s->await = false;
            use_prefix(e, s, s->r);
            continue;
        }
        if (!ready)
            continue;
        llama_memory_t mem = llama_get_memory(e->ctx);
        llama_memory_seq_cp(mem, d->seq, s->seq, -1, -1);
        s->await = false;
        if (!llama_memory_seq_rm(mem, s->seq, (llama_pos)s->r->shared_pos, -1)) {
            /* A memory that cannot be cut back (recurrent state past the
             * image): computed here instead. */
            llama_memory_seq_rm(mem, s->seq, -1, -1);
            use_prefix(e, s, s->r);
            continue;
        }
        s->n_past = (llama_pos)s->r->shared_pos;
        s->chunk = s->r->n_shared;
        s->tok = s->r->shared_tok;
        s->cached = req_cells_before(s->r, s->chunk, s->tok);
        e->work.prefix_hits++;
        e->work.prefix_cached_tokens += (uint64_t)s->cached;
    }
}

/* Shared prefix: the longest common head of the first text chunk and the
 * cached prefix, leaving at least one prompt token to decode. */
static void use_prefix(llama_engine *e, slot *s, req *r)
{
    size_t n0 = 0;
    const llama_token *t0 = req_chunk_is_text(r, 0) ? req_chunk_tokens(r, 0, &n0) : NULL;
    if (t0 && !e->prefix && e->prefix_cache)
        build_prefix(e, r);
    size_t common = (size_t)head_common(e, r);
    if (common == n0 && req_n_chunks(r) == 1)
        common--; /* the last prompt token must be decoded for its logits */
    if (common > 0) {
        /* Each sequence has its own KV stream (kv_unified off: attention
         * then scans one sequence's cells, not everyone's), so the copy is
         * of the prefix stream as a whole; cells past the common part are
         * dropped again. */
        llama_memory_t mem = llama_get_memory(e->ctx);
        llama_memory_seq_cp(mem, e->n_parallel, s->seq, -1, -1);
        if ((int)common < e->n_prefix)
            llama_memory_seq_rm(mem, s->seq, (llama_pos)common, -1);
        s->n_past = (llama_pos)common;
        s->tok = common;
        s->cached = (int)common;
        e->work.prefix_hits++;
        e->work.prefix_cached_tokens += common;
    }
    if (s->tok == n0 && t0) {
        s->chunk = 1;
        s->tok = 0;
    }
}

/* Completes r and those after it, requests cancel_queued took out of
 * the queue, as not started. On the engine thread (complete() publishes
 * its counters). */
static void complete_cancelled(llama_engine *e, req *r)
{
    while (r) {
        req *next = r->next;
        r->next = NULL;
        char msg[256];
        snprintf(msg, sizeof msg, "%s: not started: the run is stopping", r->id);
        complete(e, r, SL_ERR_STOPPED, msg, NULL);
        r = next;
    }
}

/* Whether a stop (cancel_queued) leaves r unstarted: nothing runs on it
 * yet and none of its work is undone by that. Kept running: a follow-up (a
 * conversation's next turn), a task or answer of a request whose siblings
 * may be running, and one in the encoder's hands. */
static bool cancellable(const req *r) { return !r->follows && !r->grp && !r->preparing; }

/* A request out of the queue (held by admission, or just submitted) when a
 * stop has come: true, r on the cancelled list, which the engine thread
 * completes stopped on its next pass. Under mu, which cancel_queued sets
 * its flag under. */
static bool cancel_if_stopped(llama_engine *e, req *r)
{
    if (!e->cancel_asked || !cancellable(r))
        return false;
    r->next = e->cancelled;
    e->cancelled = r;
    return true;
}

/* Admission's last check before r (taken out of the queue, tokenized,
 * sized) gets a sequence: true when a stop came meanwhile. So a request
 * admitted after the stop hook returned passed this check before it: none
 * that was waiting when the hook returned starts. */
static bool stopped_in_admission(llama_engine *e, req *r)
{
    pthread_mutex_lock(&e->mu);
    bool stop = cancel_if_stopped(e, r);
    pthread_mutex_unlock(&e->mu);
    return stop;
}

/* Not now: r goes back to the front of the line. */
static void requeue(llama_engine *e, req *r)
{
    pthread_mutex_lock(&e->mu);
    /* A stop came while admission held it out of the queue, where
     * cancel_queued did not see it: it is not started either. */
    if (cancel_if_stopped(e, r)) {
        pthread_mutex_unlock(&e->mu);
        return;
    }
    r->next = e->pending;
    e->pending = r;
    if (!e->pending_tail)
        e->pending_tail = r;
    e->n_pending++;
    e->n_follows += r->follows;
    if (r->prepared)
        e->n_prepared++;
    pthread_mutex_unlock(&e->mu);
}

/* May task r (just taken from the queue) start now? The first of a
 * request's tasks to start computes the image's positions and the others
 * copy them while it runs; so it starts only when its waiting siblings
 * (those queued right behind it) have sequences too, up to all of them. A
 * task whose sibling already runs starts at once. */
static bool tasks_fit(llama_engine *e, const req *r)
{
    int free_slots = 0;
    for (int i = 0; i < e->n_parallel; i++) {
        const slot *s = &e->slots[i];
        if (s->r && s->r->grp == r->grp)
            return true;
        free_slots += !s->r;
    }
    int run = 1;
    pthread_mutex_lock(&e->mu);
    for (const req *q = e->pending; q && q->grp == r->grp; q = q->next)
        run++;
    pthread_mutex_unlock(&e->mu);
    return free_slots >= (run < e->n_parallel ? run : e->n_parallel);
}

/* sl_kv_type's names and llama.cpp's types, in the enum's order. */
static const struct {
    const char *name;
    enum ggml_type type;
} KV_TYPES[SL_KV_TYPE_COUNT] = {
    {"f16", GGML_TYPE_F16},   {"f32", GGML_TYPE_F32},   {"bf16", GGML_TYPE_BF16},
    {"q8_0", GGML_TYPE_Q8_0}, {"q4_0", GGML_TYPE_Q4_0}, {"q4_1", GGML_TYPE_Q4_1},
    {"q5_0", GGML_TYPE_Q5_0}, {"q5_1", GGML_TYPE_Q5_1}, {"iq4_nl", GGML_TYPE_IQ4_NL},
};

const char *sl_kv_type_name(sl_kv_type type)
{
    return (unsigned)type < SL_KV_TYPE_COUNT ? KV_TYPES[type].name : NULL;
}

static sl_status check_kv_type(const char *what, sl_kv_type type)
{
    if ((unsigned)type < SL_KV_TYPE_COUNT)
        return SL_OK;
    return sl_fail(SL_ERR_INVALID_ARG, "%s is %d: the KV cache types are f16, f32, bf16, q8_0, "
                   "q4_0, q4_1, q5_0, q5_1 and iq4_nl (sl_kv_type)", what, (int)type);
}

/* The model's "<architecture>.<key>" as a positive integer, else `or`. */
static int64_t arch_int(const struct llama_model *m, const char *key, int64_t or)
{
    char arch[64], name[160], val[32];
    if (llama_model_meta_val_str(m, "general.architecture", arch, sizeof arch) <= 0)
        return or;
    snprintf(name, sizeof name, "%s.%s", arch, key);
    if (llama_model_meta_val_str(m, name, val, sizeof val) <= 0)
        return or;
    long long v = strtoll(val, NULL, 10);
    return v > 0 ? v : or;
}

/* Bytes of one position of a sequence in the KV cache: K and V of every
 * layer, each a row of head size x n_head_kv values of its type (blocks
 * of ggml_blck_size values for the quantized ones), as llama.cpp
 * allocates them (llama_kv_cache: a row per cell and layer). The head
 * sizes are the model's attention.key_length/value_length where it gives
 * them, else n_embd / n_head. */
static uint64_t kv_bytes_per_pos(const struct llama_model *m, sl_kv_type k, sl_kv_type v)
{
    int n_head = llama_model_n_head(m), n_head_kv = llama_model_n_head_kv(m);
    int64_t head_dim = n_head > 0 ? llama_model_n_embd(m) / n_head : 0;
    int64_t values[2] = {arch_int(m, "attention.key_length", head_dim) * n_head_kv,
                         arch_int(m, "attention.value_length", head_dim) * n_head_kv};
    uint64_t row = 0;
    for (int i = 0; i < 2; i++) {
        enum ggml_type t = KV_TYPES[i == 0 ? k : v].type;
        int64_t blck = ggml_blck_size(t);
        row += ggml_type_size(t) * (uint64_t)((values[i] + blck - 1) / blck);
    }
    return (uint64_t)llama_model_n_layer(m) * row;
}

/* The LoRA adapters on e->ctx (none: nothing to do; llama.cpp skips an
 * adapter of scale 0). */
static void set_adapters(llama_engine *e)
{
    if (e->n_lora > 0)
        llama_set_adapters_lora(e->ctx, e->lora, (size_t)e->n_lora, e->lora_scale);
}

/* A context of per_seq positions for each of the n_parallel + 1 sequences,
 * with the settings the engine opened with. Every sequence must be free:
 * the old context and the cached prompt head go. */
static sl_status new_context(llama_engine *e, int per_seq)
{
    if (e->ctx)
        llama_free(e->ctx);
    e->ctx = NULL;
    sl_free(e->prefix);
    e->prefix = NULL;
    e->n_prefix = 0;
    e->kv_reserved = 0;
    e->reused_seen = 0;
    for (int i = 0; e->slots && i < e->n_parallel; i++)
        drop_kept(&e->slots[i]); /* their cells went with the context */
    struct llama_context_params cp = e->cparams;
    cp.n_ctx = (uint32_t)per_seq * (uint32_t)(e->n_parallel + 1);
    struct llama_sampler_seq_config *seq_samplers = NULL;
    if (e->sampler == SL_SAMPLER_DEVICE) {
        /* Fresh greedy chains, as at open: the old ones belonged to the
         * freed context's graph. */
        seq_samplers = sl_calloc((size_t)e->n_parallel, sizeof *seq_samplers);
        if (!seq_samplers)
            return sl_fail(SL_ERR_NOMEM, "out of memory for a new context");
        for (int i = 0; i < e->n_parallel; i++) {
            if (e->attached[i])
                llama_sampler_free(e->attached[i]);
            e->attached[i] = llama_sampler_chain_init(llama_sampler_chain_default_params());
            llama_sampler_chain_add(e->attached[i], llama_sampler_init_greedy());
            e->attached_greedy[i] = true;
            seq_samplers[i] =
                (struct llama_sampler_seq_config){.seq_id = i, .sampler = e->attached[i]};
        }
        cp.samplers = seq_samplers;
        cp.n_samplers = (size_t)e->n_parallel;
    }
    int err = sl_fault("engine.context", NULL); /* tests: as if memory ran out */
    e->ctx = err ? NULL : llama_init_from_model(e->model, cp);
    sl_free(seq_samplers);
    if (!e->ctx)
        return sl_fail(SL_ERR_NOMEM, "llama.cpp cannot create a context of %u positions (%d "
                       "sequences x %d; see its messages above)", cp.n_ctx, e->n_parallel + 1,
                       per_seq);
    set_adapters(e); /* the adapters belong to the context: a new one has none */
    if (e->threadpool)
        llama_attach_threadpool(e->ctx, e->threadpool, e->threadpool);
    e->n_ctx = (int)llama_n_ctx(e->ctx);
    e->n_ctx_seq = per_seq < (int)llama_n_ctx_seq(e->ctx) ? per_seq : (int)llama_n_ctx_seq(e->ctx);
    return SL_OK;
}

/* Holds every vision context's mutex (the engine's, then each other
 * encoder's: an encoder holds only its own, so the order cannot deadlock). */
static void lock_vision(llama_engine *e)
{
    pthread_mutex_lock(&e->vision_mu);
    for (int k = 1; k < e->n_encoders; k++)
        pthread_mutex_lock(e->encoders[k].mu);
}

static void unlock_vision(llama_engine *e)
{
    for (int k = e->n_encoders - 1; k >= 1; k--)
        pthread_mutex_unlock(e->encoders[k].mu);
    pthread_mutex_unlock(&e->vision_mu);
}

/* Gives every sequence room for `need` positions (at least twice what it
 * had, so requests that grow a little at a time do not rebuild it each
 * time, when memory allows; at most max_ctx_seq). On failure the old size
 * is made again and the error says why. */
static sl_status grow_context(llama_engine *e, const req *r, int64_t need)
{
    int old = e->n_ctx_seq;
    int64_t want = 2 * (int64_t)old < e->max_ctx_seq ? 2 * (int64_t)old : e->max_ctx_seq;
    if (want < need)
        want = need;
    want = (want + 255) / 256 * 256;
    double t0 = now_ms();
    int64_t least = (need + 255) / 256 * 256;
    /* Not while an encoder thread allocates the vision encoder's buffers
     * (its first encode, a larger image) on the same device: the new
     * context would compete for the memory the old one gave back. */
    lock_vision(e);
    sl_status st = new_context(e, (int)want);
    if (st != SL_OK && want > least) /* twice did not fit in memory: just enough may */
        st = new_context(e, (int)least);
    char why[512] = "";
    if (st != SL_OK) {
        snprintf(why, sizeof why, "%s", sl_last_error());
        if (new_context(e, old) != SL_OK)
            sl_log(SL_LOG_ERROR, "the engine cannot make its context of %d positions a "
                   "sequence again: every request fails from now on", old);
    }
    unlock_vision(e);
    if (st == SL_OK) {
        sl_log(SL_LOG_INFO, "%s needs %lld positions: each of the %d sequences now has %d (was "
               "%d; %.0f ms to make the context again; KV cache %.2f MiB)", r->id,
               (long long)need, e->n_parallel, e->n_ctx_seq, old, now_ms() - t0,
               (double)kv_bytes_per_pos(e->model, e->type_k, e->type_v) * e->n_ctx / 1048576.0);
        return SL_OK;
    }
    return sl_fail(SL_ERR_TOO_LONG, "%s: lower --parallel, or give --ctx %lld so that every "
                   "sequence has that room from the start", why, (long long)need);
}

typedef enum { SIZE_FITS, SIZE_WAIT, SIZE_FAILED } size_verdict;

static int active_slots(const llama_engine *e);

/* Does r (tokenized) fit a sequence? Its prompt's positions (every image's
 * included) and max_tokens are what it needs; a sequence smaller than that
 * grows, once every running sequence has ended (SIZE_WAIT until then: r
 * stays at the head of the queue), as far as the model's context goes
 * (with --ctx: not at all). A request that can never fit fails alone
 * (SIZE_FAILED: completed). */
static size_verdict size_for(llama_engine *e, req *r)
{
    /* In 64 bits: max_tokens may be anything up to INT_MAX. */
    int64_t need = (int64_t)r->n_cells + gen_room(r);
    if (!e->ctx) {
        fail_req(e, r, SL_ERR_ENGINE, "%s: the engine lost its context (see the log)", r->id);
        return SIZE_FAILED;
    }
    if (need <= e->n_ctx_seq)
        return SIZE_FITS;
    int n_images = r->n_msgs > 0 ? r->n_images : r->image != NULL;
    if (need > e->max_ctx_seq) {
        /* With --ctx, "give --ctx N" only where N is within the model's
         * context: past it the request takes more than the model was
         * trained for (a --ctx 512 row of max_tokens 100000 was told to
         * give --ctx 100049 against a context of 2048). */
        int train = llama_model_n_ctx_train(e->model);
        int limit = e->ctx_fixed ? (train > 0 ? train : INT_MAX) : e->max_ctx_seq;
        if (e->ctx_fixed && need <= limit)
            fail_req(e, r, SL_ERR_TOO_LONG,
                     "%s: the request takes %lld positions (its prompt with %d image%s: %d; "
                     "max_tokens is %d), more than the %d positions of a sequence (--ctx): give "
                     "--ctx %lld or more, or lower its max_tokens",
                     r->id, (long long)need, n_images, n_images == 1 ? "" : "s", r->n_cells,
                     gen_room(r), e->n_ctx_seq, (long long)need);
        else
            fail_req(e, r, SL_ERR_TOO_LONG,
                     "%s: the request takes %lld positions (its prompt with %d image%s: %d; "
                     "max_tokens is %d), more than the model's context of %d: lower its "
                     "max_tokens, send fewer or smaller images (--max-image-edge) or a shorter "
                     "conversation",
                     r->id, (long long)need, n_images, n_images == 1 ? "" : "s", r->n_cells,
                     gen_room(r), limit);
        return SIZE_FAILED;
    }
    if (active_slots(e) > 0)
        return SIZE_WAIT;
    if (grow_context(e, r, need) != SL_OK) {
        fail_req(e, r, SL_ERR_TOO_LONG, "%s: the request takes %lld positions, more than the %d "
                 "of a sequence, and the context cannot grow: %s", r->id, (long long)need,
                 e->n_ctx_seq, sl_last_error());
        return SIZE_FAILED;
    }
    return SIZE_FITS;
}

/* Takes the request at *at (before: the one ahead of it, or NULL) out of
 * the queue, its counts with it; a prepared one leaves the encoder room
 * for another. Under mu. */
static req *take_pending(llama_engine *e, req **at, req *before)
{
    req *r = *at;
    *at = r->next;
    if (e->pending_tail == r)
        e->pending_tail = before;
    if (e->prep_next == r)
        e->prep_next = r->next;
    e->n_pending--;
    e->n_follows -= r->follows;
    r->next = NULL;
    if (r->prepared && e->n_prepared > 0) {
        e->n_prepared--;
        pthread_cond_signal(&e->encoder_cv); /* room to prepare another */
    }
    return r;
}

/* Moves waiting requests into free slots while their KV cells fit. True:
 * the next waits for slots held for follow-ups. */
static bool admit_waiting(llama_engine *e)
{
    for (;;) {
        bool any_free = false;
        for (int i = 0; i < e->n_parallel && !any_free; i++)
            any_free = !e->slots[i].r;
        if (!any_free)
            return false;
        pthread_mutex_lock(&e->mu);
        /* Follow-ups first: a newcomer put back while the free slots wait
         * for them may be ahead of them in line. */
        req **at = &e->pending, *before = NULL;
        while (e->n_follows > 0 && *at && !(*at)->follows) {
            before = *at;
            at = &before->next;
        }
        bool follow_up = *at != NULL;
        if (!*at || (e->encode_ahead > 0 && !(*at)->prepared)) {
            at = &e->pending; /* none, or the encoder is on it: the head meanwhile */
            before = NULL;
        }
        req *r = *at;
        if (r && e->encode_ahead > 0 && !r->prepared)
            r = NULL; /* the encoder is not done with it */
        if (r)
            take_pending(e, at, before);
        pthread_mutex_unlock(&e->mu);
        if (!r)
            return follow_up; /* one is being prepared: wait_held waits for it */
        if (r->grp && !tasks_fit(e, r)) {
            requeue(e, r);
            return false;
        }
        if (r->prepared && r->prep_status != SL_OK) {
            complete(e, r, r->prep_status, r->prep_error, NULL);
            continue;
        }
        if (!req_tokenized(r)) {
            double tp = now_ms();
            sl_status st = tokenize(e, e->mtmd, r);
            e->pending_admit_ms -= now_ms() - tp; /* counted as its own phase */
            phase_add(e, SL_PHASE_PREPROCESS, now_ms() - tp);
            if (st != SL_OK) {
                complete(e, r, st, sl_last_error(), NULL);
                continue;
            }
        }
        size_verdict fit = size_for(e, r);
        if (fit == SIZE_WAIT) {
            requeue(e, r); /* until every sequence has ended */
            return false;
        }
        if (fit == SIZE_FAILED)
            continue;
        int need = r->n_cells + gen_room(r);
        if (e->kv_reserved + need > e->n_ctx) {
            requeue(e, r); /* until a sequence ends */
            return false;
        }
        slot *s = choose_slot(e, r);
        if (!s) {
            requeue(e, r); /* the free ones are held for follow-ups */
            return true;
        }
        if (stopped_in_admission(e, r))
            continue;
        admit(e, s, r); /* false: r failed, the slot is still free */
    }
}

static bool chunk_is_image(const slot *s)
{
    return s->r && !s->generating && !s->await && !req_chunk_is_text(s->r, s->chunk);
}

/* One image chunk on its way into its sequence. */
typedef struct image_due {
    slot *s;
    const mtmd_input_chunk *chunk;
    const float *embd;         /* NULL: encode it alone, then decode at once */
    int n_tokens;
    bool in_batch;             /* encoded with the others in one mtmd_batch */
} image_due;

/* The same image's same chunk (an image cache is on: chunks have ids). */
static bool same_chunk(const image_due *a, const image_due *b)
{
    const char *ia = mtmd_input_chunk_get_id(a->chunk), *ib = mtmd_input_chunk_get_id(b->chunk);
    return ia && *ia && ib && strcmp(ia, ib) == 0 && a->n_tokens == b->n_tokens &&
           chunk_part(a->s->r, a->s->chunk) == chunk_part(b->s->r, b->s->chunk);
}

/* The current chunk's embeddings, encoded ahead, are in the context now. */
static void drop_embd(slot *s)
{
    if (s->r->embd) {
        sl_free(s->r->embd[s->chunk]);
        s->r->embd[s->chunk] = NULL;
    }
}

/* One llama_decode of image embeddings that took ms. */
static void count_image_decode(llama_engine *e, double ms)
{
    e->work.decode_s += ms / 1e3;
    e->work.image_decode_s += ms / 1e3;
    e->work.decode_calls++;
    e->work.image_decode_calls++;
}

/* Decodes an image's embeddings into its sequence through mtmd's helper
 * (M-RoPE positions, non-causal attention, images larger than a batch). */
static void decode_image_alone(llama_engine *e, image_due *d)
{
    slot *s = d->s;
    double td = now_ms();
    llama_pos new_past = s->n_past;
    int32_t rc = mtmd_helper_decode_image_chunk(e->mtmd, e->ctx, d->chunk, (float *)d->embd,
                                                s->n_past, s->seq, e->n_batch, &new_past, NULL,
                                                NULL);
    double ms = now_ms() - td;
    count_image_decode(e, ms);
    phase_add(e, SL_PHASE_IMAGE_PREFILL, ms);
    if (rc != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s: decoding the image embeddings failed (code %d)", s->r->id,
                 (int)rc);
        fail_slot(e, s, SL_ERR_ENGINE, msg);
        return;
    }
    s->n_past = new_past;
    drop_embd(s);
    s->chunk++;
    s->tok = 0;
}

/* M-RoPE images (Qwen2-VL, Qwen2.5-VL) packed as decode_images_packed
 * does: each token gets the (t, row, column) positions mtmd gives it
 * from its sequence's n_past, which only llama.cpp's extended batch
 * carries. NULL: out of memory (or a token refused). */
static struct llama_batch_ext *mrope_batch(llama_engine *e, const image_due *due, int n)
{
    struct llama_batch_ext *bx = llama_batch_ext_init(e->ctx);
    for (int k = 0; bx && k < n; k++) {
        const mtmd_image_tokens *img = mtmd_input_chunk_get_tokens_image(due[k].chunk);
        for (int t = 0; t < due[k].n_tokens; t++) {
            struct llama_embd row = {due[k].embd + (size_t)t * (size_t)e->n_embd_inp, 1,
                                     (size_t)e->n_embd_inp};
            int32_t idx = llama_batch_ext_add_embd(bx, due[k].s->seq, row);
            struct mtmd_decoder_pos dp =
                mtmd_image_tokens_get_decoder_pos(img, due[k].s->n_past, (size_t)t);
            /* In the order mtmd's helper gives them (section-major: t, y, x, z). */
            llama_pos pos[4] = {(llama_pos)dp.t, (llama_pos)dp.y, (llama_pos)dp.x,
                                (llama_pos)dp.z};
            if (idx < 0 || !llama_batch_ext_set_pos(bx, idx, pos)) {
                llama_batch_ext_free(bx);
                return NULL;
            }
        }
    }
    return bx;
}

/* Plain positions: due[0, n)'s embeddings into e->ebatch, each image's
 * tokens in a row from its sequence's n_past. */
static void plain_batch(llama_engine *e, const image_due *due, int n)
{
    struct llama_batch *b = &e->ebatch;
    b->n_tokens = 0;
    int n_embd = e->n_embd_inp;
    for (int k = 0; k < n; k++) {
        memcpy(b->embd + (size_t)b->n_tokens * (size_t)n_embd, due[k].embd,
               (size_t)due[k].n_tokens * (size_t)n_embd * sizeof(float));
        for (int t = 0; t < due[k].n_tokens; t++) {
            int i = b->n_tokens++;
            b->pos[i] = due[k].s->n_past + t;
            b->n_seq_id[i] = 1;
            b->seq_id[i][0] = due[k].s->seq;
            b->logits[i] = 0;
        }
    }
}

/* Decodes the images in due[0, n) together: their embeddings side by side
 * in one batch, each at its own sequence's positions (causal attention,
 * checked by the caller). One llama_decode instead of n keeps a GPU busy
 * with work big enough to fill it. */
static void decode_images_packed(llama_engine *e, image_due *due, int n)
{
    int n_total = 0;
    for (int k = 0; k < n; k++)
        n_total += due[k].n_tokens;
    struct llama_batch_ext *bx = NULL;
    if (e->mrope)
        bx = mrope_batch(e, due, n);
    else
        plain_batch(e, due, n);
    double td = now_ms();
    int32_t rc = !e->mrope ? llama_decode(e->ctx, e->ebatch)
                 : bx      ? llama_process(e->ctx, LLAMA_PROCESS_TYPE_DECODE, bx)
                           : -1;
    if (rc == 0)
        llama_synchronize(e->ctx);
    double ms = now_ms() - td;
    if (bx)
        llama_batch_ext_free(bx);
    count_image_decode(e, ms);
    for (int k = 0; k < n; k++) {
        slot *s = due[k].s;
        phase_add(e, SL_PHASE_IMAGE_PREFILL, ms * due[k].n_tokens / n_total);
        if (rc != 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s: decoding the image embeddings failed (code %d)",
                     s->r->id, (int)rc);
            fail_slot(e, s, SL_ERR_ENGINE, msg);
            continue;
        }
        s->n_past += mtmd_input_chunk_get_n_pos(due[k].chunk);
        drop_embd(s);
        s->chunk++;
        s->tok = 0;
    }
}

static bool packable(const llama_engine *e, const image_due *d)
{
    /* Plain positions are the image's tokens in a row; M-RoPE ones come
     * from mtmd (mrope_batch). */
    return d->embd && (e->mrope || e->ebatch.embd) && d->n_tokens <= e->n_batch &&
           (e->mrope ? mtmd_input_chunk_get_tokens_image(d->chunk) != NULL
                     : (int)mtmd_input_chunk_get_n_pos(d->chunk) == d->n_tokens) &&
           !mtmd_decode_use_non_causal(e->mtmd, d->chunk);
}

/* The image chunks due now: those encoded ahead by the encoder thread are
 * ready; the others are encoded here in one mtmd batch (one at a time when
 * they cannot be batched). Then the embeddings go into their sequences,
 * packed several images to a llama_decode where the model allows it. */
static void prefill_images(llama_engine *e)
{
    image_due due[LLAMA_MAX_DUE];
    int n_due = 0;
    for (int i = 0; i < e->n_parallel && n_due < LLAMA_MAX_DUE; i++) {
        slot *s = &e->slots[i];
        if (!chunk_is_image(s))
            continue;
        const mtmd_input_chunk *c = mtmd_input_chunks_get(s->r->chunks, s->chunk);
        due[n_due++] = (image_due){.s = s, .chunk = c,
                                   .embd = s->r->embd ? s->r->embd[s->chunk] : NULL,
                                   .n_tokens = (int)mtmd_input_chunk_get_n_tokens(c)};
    }
    if (n_due == 0)
        return;
    /* Ours to free at the end: the cache's copies and the encoder's. */
    float *copies[LLAMA_MAX_DUE];
    int n_copies = 0;
    for (int k = 0; k < n_due; k++) {
        float *hit = due[k].embd ? NULL : cached_embd(e, due[k].s->r, (size_t)due[k].s->chunk);
        if (hit)
            due[k].embd = copies[n_copies++] = hit;
    }
    double t0 = now_ms();
    mtmd_batch *mb = NULL;
    int n_batched = 0;
    for (int k = 0; k < n_due; k++) {
        if (due[k].embd)
            continue;
        /* An image twice in this wave is encoded once: the second takes
         * the first's from the cache below. */
        bool twin = false;
        for (int j = 0; e->image_cache && j < k && !twin; j++)
            twin = due[j].in_batch && same_chunk(&due[j], &due[k]);
        if (twin)
            continue;
        if (!mb && !(mb = mtmd_batch_init(e->mtmd)))
            break;
        if (mtmd_batch_add_chunk(mb, due[k].chunk) != 0)
            break;
        due[k].in_batch = true;
        n_batched++;
    }
    bool batched_ok = false;
    if (n_batched > 0) {
        pthread_mutex_lock(&e->vision_mu); /* the output stays in mb */
        batched_ok = mtmd_batch_encode(mb) == 0;
        pthread_mutex_unlock(&e->vision_mu);
    }
    double t_enc = now_ms() - t0;
    if (batched_ok) {
        e->work.encode_s += t_enc / 1e3;
        for (int k = 0, left = n_batched; k < n_due && left > 0; k++) {
            if (!due[k].in_batch)
                continue;
            due[k].embd = mtmd_batch_get_output_embd(mb, due[k].chunk);
            cache_embd(e, due[k].s->r, (size_t)due[k].s->chunk, due[k].embd);
            due[k].s->encode_ms += t_enc / n_batched;
            phase_add(e, SL_PHASE_ENCODE, t_enc / n_batched);
            e->work.images_encoded++;
            left--;
        }
    }
    /* The rest one at a time: mtmd's output buffer is reused by the next
     * encode, so each is copied out to join the pack (or, when it cannot
     * be, decoded right away). */
    for (int k = 0; k < n_due; k++) {
        image_due *d = &due[k];
        if (d->embd)
            continue;
        float *hit = cached_embd(e, d->s->r, d->s->chunk); /* a twin encoded just now */
        if (hit) {
            d->embd = copies[n_copies++] = hit;
            continue;
        }
        double tk = now_ms();
        pthread_mutex_lock(&e->vision_mu); /* until mtmd's output is copied or decoded */
        if (mtmd_encode_chunk(e->mtmd, d->chunk) != 0) {
            pthread_mutex_unlock(&e->vision_mu);
            char msg[512];
            snprintf(msg, sizeof msg, "%s: the vision encoder failed", d->s->r->id);
            fail_slot(e, d->s, SL_ERR_ENGINE, msg);
            d->s = NULL;
            continue;
        }
        double ms = now_ms() - tk;
        d->s->encode_ms += ms;
        phase_add(e, SL_PHASE_ENCODE, ms);
        e->work.encode_s += ms / 1e3;
        e->work.images_encoded++;
        d->embd = mtmd_get_output_embd(e->mtmd);
        cache_embd(e, d->s->r, (size_t)d->s->chunk, d->embd);
        size_t bytes = (size_t)d->n_tokens * (size_t)e->n_embd_inp * sizeof(float);
        float *copy = packable(e, d) ? sl_malloc(bytes) : NULL;
        if (copy) {
            memcpy(copy, d->embd, bytes);
            d->embd = copies[n_copies++] = copy;
        } else {
            decode_image_alone(e, d);
            d->s = NULL;
        }
        pthread_mutex_unlock(&e->vision_mu);
    }
    /* Pack what is ready, whole images up to n_batch tokens a decode. */
    image_due pack[LLAMA_MAX_DUE];
    int n_pack = 0, pack_tokens = 0;
    for (int k = 0; k < n_due; k++) {
        if (!due[k].s || !packable(e, &due[k]))
            continue;
        if (pack_tokens + due[k].n_tokens > e->n_batch) {
            decode_images_packed(e, pack, n_pack);
            n_pack = pack_tokens = 0;
        }
        pack[n_pack++] = due[k];
        pack_tokens += due[k].n_tokens;
        due[k].s = NULL; /* taken */
    }
    if (n_pack > 0)
        decode_images_packed(e, pack, n_pack);
    for (int k = 0; k < n_due; k++)
        if (due[k].s && due[k].s->r)
            decode_image_alone(e, &due[k]);
    for (int i = 0; i < n_copies; i++)
        sl_free(copies[i]);
    if (mb)
        mtmd_batch_free(mb);
}

static void batch_add(struct llama_batch *b, llama_token tok, llama_pos pos, int seq, bool logits)
{
    int k = b->n_tokens++;
    b->token[k] = tok;
    b->pos[k] = pos;
    b->n_seq_id[k] = 1;
    b->seq_id[k][0] = seq;
    b->logits[k] = logits;
}

/* Did the piece just appended (from text offset `from`) complete a stop
 * string? Then cut the text where the stop string starts. */
/* Notes a generated token going into s's sequence (for keep_kv; when
 * memory runs out the notes stop there and less is kept). */
static void note_fed(slot *s, llama_token tok)
{
    if (s->fed_full)
        return;
    if (s->n_fed == s->cap_fed) {
        int cap = s->cap_fed ? 2 * s->cap_fed : 64;
        llama_token *grown =
            s->cap_fed <= INT_MAX / 2 ? sl_realloc(s->fed, (size_t)cap * sizeof *grown) : NULL;
        if (!grown) {
            s->fed_full = true;
            return;
        }
        s->fed = grown;
        s->cap_fed = cap;
    }
    s->fed[s->n_fed++] = tok;
}

static bool hit_stop(slot *s, size_t from)
{
    bool hit = false;
    for (int i = 0; i < s->r->n_stop; i++) {
        size_t n = strlen(s->r->stop[i]);
        if (!n || s->text.len < n)
            continue;
        size_t start = from >= n - 1 ? from - (n - 1) : 0;
        const char *at = strstr(s->text.data + start, s->r->stop[i]);
        if (at && (size_t)(at - s->text.data) < s->text.len) {
            s->text.len = (size_t)(at - s->text.data);
            s->text.data[s->text.len] = '\0';
            hit = true;
        }
    }
    return hit;
}

/* With logprobs: s->next's entry (its place: the tokens generated so
 * far); any sampling thread. */
static void record_logprobs(slot *s, const float *logits, int n)
{
    if (!s->lp_ids || s->n_gen > s->r->sampling.max_tokens)
        return;
    size_t at = (size_t)s->n_gen * (size_t)s->lp_stride;
    s->lp_ids[at] = s->next;
    s->lp_vals[at] = sl_llama_logprobs(logits, n, s->next, s->lp_stride - 1, s->lp_ids + at + 1,
                                       s->lp_vals + at + 1);
}

/* A row's choices once read (llama_choice.h): each one's score into
 * r->choice_p, the one taken into r->choice (the best; at a temperature,
 * drawn with the row's seed); returns its first token. */
static llama_token settle_choice(req *r)
{
    sl_choice_tree_scores(r->choice_tree, r->choice_p);
    r->choice = sl_choice_pick(r->choice_p, r->n_choices, r->sampling.temperature,
                               r->sampling.seed);
    return sl_choice_tree_first(r->choice_tree, r->choice, 0);
}

/* The first probe from k on that the row's choices need (-1: none). */
static int next_probe(const req *r, int k)
{
    int n = sl_choice_tree_probes(r->choice_tree);
    while (k < n && !sl_choice_tree_probe_needed(r->choice_tree, k))
        k++;
    return k < n ? k : -1;
}

/* A row with choices, at the step after its prompt: the model read there;
 * settled at once unless forms of different choices begin alike with a
 * share that matters (then s->probe: the first probe to read on, and
 * LLAMA_TOKEN_NULL for now). Any sampling thread. */
static llama_token choose_choice(slot *s, const float *logits)
{
    sl_choice_tree_read_root(s->r->choice_tree, logits);
    s->probe = next_probe(s->r, 0);
    return s->probe >= 0 ? LLAMA_TOKEN_NULL : settle_choice(s->r);
}

/* Chooses s's next token from s->logits; any sampling thread. */
static void choose_token(llama_engine *e, slot *s, llama_token_data *cand)
{
    const float *logits = s->logits;
    int n = e->n_vocab;
    if (s->r->n_choices) {
        s->next_margin = s->trace_margins ? sl_llama_top2_margin(logits, n) : 0.0f;
        s->next = choose_choice(s, logits);
        return;
    }
    s->next_margin = s->trace_margins ? sl_llama_top2_margin(logits, n) : 0.0f;
    if (s->grammar)
        s->next = sl_llama_sample_grammar(s->grammar, s->smpl, logits, n, &s->r->sampling, cand,
                                          NULL);
    else if (s->fast_greedy)
        s->next = sl_llama_argmax(logits, n);
    else
        s->next = sl_llama_sample_chain(s->smpl, logits, n, &s->r->sampling, true, s->own_top_p,
                                        cand, NULL);
    record_logprobs(s, logits, n);
}

__attribute__((noinline)) static void sample_share(llama_engine *e, int worker)
{
    int i;
    while ((i = atomic_fetch_add_explicit(&e->sample_next, 1, memory_order_acquire)) <
           e->n_host_sample)
        choose_token(e, e->to_sample[i], e->cand[worker]);
    atomic_fetch_add_explicit(&e->sample_done, 1, memory_order_release);
}

#ifdef _OPENMP
/* The team's threads are handed e in a record on this thread's stack,
 * through libgomp, whose hand-over ThreadSanitizer cannot see; everything
 * else they touch is ordered by sample_next and sample_done. So that
 * hand-over alone is not instrumented (sample_share is, not inlined). */
#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize_thread))
#endif
static void sample_in_team(llama_engine *e, int n)
{
#pragma omp parallel num_threads(n)
    sample_share(e, omp_get_thread_num());
}
#endif

/* Logits a step must scan before it pays to share the work: a thread
 * asleep costs tens of microseconds to wake on idle cores and can cost
 * milliseconds on busy ones, an argmax about 1 ms per 4M logits. A row
 * with its own settings costs about ten argmaxes. */
#define SAMPLE_PARALLEL_MIN_LOGITS (4u << 20)

static void sample_all(llama_engine *e)
{
    /* Release: the list, and the chains the last step's threads left, to
     * the thread that takes each entry. */
    atomic_store_explicit(&e->sample_next, 0, memory_order_release);
    uint64_t work = 0;
    for (int i = 0; i < e->n_host_sample; i++)
        work += (uint64_t)e->n_vocab * ((e->to_sample[i]->fast_greedy ? 1 : 10) +
                                        (e->to_sample[i]->lp_stride ? 3 : 0));
    int n = e->n_sample < e->n_host_sample ? e->n_sample : e->n_host_sample;
    if (!(e->sample_always || work >= SAMPLE_PARALLEL_MIN_LOGITS))
        n = 1;
#ifdef _OPENMP
    if (n > 1) {
        sample_in_team(e, n);
        /* Acquire every thread's choices: the team's own barrier is
         * libgomp's, which ThreadSanitizer cannot see. */
        (void)atomic_load_explicit(&e->sample_done, memory_order_acquire);
        return;
    }
#endif
    sample_share(e, 0);
}

/* The engine thread's part of a chosen token: the trace, text, stop
 * strings and the end of the sequence. */
static void advance_slot(llama_engine *e, slot *s, double *detok_ms, double *book_ms)
{
    double t = now_ms();
    llama_token tok = s->next;
    if (s->probe >= 0) { /* the choice is read on in probes first */
        s->logits_idx = -1;
        s->logits = NULL;
        if (!s->generating) {
            s->generating = true;
            s->t_prefilled = t;
        }
        return;
    }
    if (s->trace_tokens && s->n_trace <= gen_room(s->r)) {
        s->trace_tokens[s->n_trace] = tok;
        s->trace_margins[s->n_trace++] = s->next_margin;
    }
    s->logits_idx = -1;
    s->logits = NULL;
    e->work.sampled_tokens++;
    if (!s->generating) {
        s->generating = true;
        s->t_prefilled = t;
    }
    if (!s->t_first)
        s->t_first = t;
    const char *end = NULL;
    if (s->r->n_choices) {
        /* The answer is the choice whole, though only its first token was
         * looked at: it counts as one generated token. */
        const char *c = s->r->choices[s->r->choice];
        if (text_append(&s->text, c, strlen(c)) != 0) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s: out of memory for the text", s->r->id);
            fail_slot(e, s, SL_ERR_NOMEM, msg);
            return;
        }
        s->n_gen = 1;
        e->work.generation_tokens++;
        end = "stop";
    } else if (tok < 0 || llama_vocab_is_eog(e->vocab, tok)) {
        end = "stop"; /* tok < 0: the row's grammar allows no token */
        s->lp_end = tok >= 0;
    } else {
        char piece[256];
        size_t before = s->text.len;
        int32_t n = llama_token_to_piece(e->vocab, tok, piece, sizeof piece, 0, false);
        if (n < 0 || (n > 0 && text_append(&s->text, piece, (size_t)n) != 0)) {
            char msg[256];
            snprintf(msg, sizeof msg, n < 0 ? "%s: cannot render token %d"
                                            : "%s: out of memory for the text (token %d)",
                     s->r->id, (int)tok);
            double tf = now_ms();
            *detok_ms += tf - t;
            fail_slot(e, s, n < 0 ? SL_ERR_ENGINE : SL_ERR_NOMEM, msg);
            *book_ms += now_ms() - tf;
            return;
        }
        s->n_gen++;
        e->work.generation_tokens++;
        if (hit_stop(s, before))
            end = "stop";
        else if (s->n_gen >= s->r->sampling.max_tokens)
            end = "length";
        else
            s->last = tok;
    }
    double tf = now_ms();
    *detok_ms += tf - t;
    if (end) {
        finish_slot(e, s, end);
        *book_ms += now_ms() - tf;
    }
}

/* The reference path: llama.cpp's own sampler chain per sequence, one
 * after another on this thread (what the engine did before the fast
 * paths; kept to measure and test them against). */
static void sample_reference(llama_engine *e, slot *s)
{
    const float *logits = llama_get_logits_ith(e->ctx, s->logits_idx);
    s->next_margin = s->trace_margins ? sl_llama_top2_margin(logits, e->n_vocab) : 0.0f;
    if (s->r->n_choices) {
        s->next = choose_choice(s, logits);
        return;
    }
    if (s->grammar) /* the host's grammar path: llama.cpp's throws on a dead end */
        s->next = sl_llama_sample_grammar(s->grammar, s->smpl, logits, e->n_vocab,
                                          &s->r->sampling, e->cand[0], NULL);
    else
        s->next = llama_sampler_sample(s->smpl, e->ctx, s->logits_idx);
    record_logprobs(s, logits, e->n_vocab);
}

/* A probe of s's choices decoded: the model read where its forms part,
 * the probe's positions dropped again; after the last, the choice. */
static void read_probe(llama_engine *e, slot *s, double *detok_ms, double *book_ms)
{
    const int32_t *toks;
    uint32_t reads;
    int n = sl_choice_tree_probe(s->r->choice_tree, s->probe, &toks, &reads);
    for (int j = 0; j < n; j++) {
        if (!((reads >> j) & 1u))
            continue;
        const float *logits = llama_get_logits_ith(e->ctx, s->probe_at + j);
        if (!logits) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s: llama.cpp gave no logits for the sequence", s->r->id);
            fail_slot(e, s, SL_ERR_ENGINE, msg);
            return;
        }
        sl_choice_tree_read(s->r->choice_tree, s->probe, j, logits, e->n_vocab);
    }
    s->probe_at = -1;
    if (!llama_memory_seq_rm(llama_get_memory(e->ctx), s->seq, s->n_past, -1)) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: llama.cpp cannot drop a choice's probe from the sequence",
                 s->r->id);
        fail_slot(e, s, SL_ERR_ENGINE, msg);
        return;
    }
    e->work.choice_probes++;
    if ((s->probe = next_probe(s->r, s->probe + 1)) >= 0)
        return;
    s->next = settle_choice(s->r); /* next_margin: the root's, from its step */
    advance_slot(e, s, detok_ms, book_ms);
}

/* One llama_decode: the next token of every generating sequence, then
 * newcomer prompt text up to n_batch. Returns false when nothing was
 * decoded. */
static bool decode_step(llama_engine *e)
{
    double t_batch = now_ms();
    struct llama_batch *b = &e->batch;
    b->n_tokens = 0;
    for (int i = 0; i < e->n_parallel; i++) {
        slot *s = &e->slots[i];
        if (s->r && s->generating && s->probe < 0) {
            s->logits_idx = b->n_tokens;
            note_fed(s, s->last);
            batch_add(b, s->last, s->n_past++, s->seq, true);
        }
    }
    for (int i = 0; i < e->n_parallel; i++) {
        slot *s = &e->slots[i];
        s->probe_at = -1;
        if (!s->r || s->probe < 0)
            continue;
        const int32_t *toks;
        uint32_t reads;
        int n = sl_choice_tree_probe(s->r->choice_tree, s->probe, &toks, &reads);
        if (b->n_tokens + n > e->n_batch)
            continue; /* the next step's */
        s->probe_at = b->n_tokens;
        for (int j = 0; j < n; j++)
            batch_add(b, toks[j], s->n_past + j, s->seq, (reads >> j) & 1u);
    }
    for (int i = 0; i < e->n_parallel && b->n_tokens < e->n_batch; i++) {
        slot *s = &e->slots[i];
        if (!s->r || s->generating || s->await || chunk_is_image(s))
            continue;
        size_t n = 0;
        const llama_token *toks = req_chunk_tokens(s->r, s->chunk, &n);
        size_t n_chunks = req_n_chunks(s->r);
        while (s->tok < n && b->n_tokens < e->n_batch) {
            bool last = s->chunk == n_chunks - 1 && s->tok == n - 1;
            if (last)
                s->logits_idx = b->n_tokens;
            batch_add(b, toks[s->tok++], s->n_past++, s->seq, last);
            e->work.prompt_tokens++;
        }
        if (s->tok == n && s->chunk < n_chunks - 1) {
            s->chunk++;
            s->tok = 0;
        }
    }
    if (b->n_tokens == 0)
        return false;
    double t0 = now_ms();
    int32_t rc = llama_decode(e->ctx, *b);
    /* On a GPU llama_decode only queues the work: wait for it here, so the
     * decode phase is the device's time and the logits phase the copy. */
    if (rc == 0)
        llama_synchronize(e->ctx);
    double t1 = now_ms();
    e->work.decode_s += (t1 - t0) / 1e3;
    e->work.token_decode_s += (t1 - t0) / 1e3;
    e->work.decode_calls++;
    e->work.batch_tokens += (uint64_t)b->n_tokens;
    e->work.steps++;
    /* Graphs llama.cpp did not build again: a step of the same shape as
     * the one before (tokens, outputs, KV cells in use rounded up to 256)
     * skips building and allocating its graph, host time a GPU waits for. */
    int32_t reused = llama_perf_context(e->ctx).n_reused;
    if (reused > e->reused_seen)
        e->work.graphs_reused += (uint64_t)(reused - e->reused_seen);
    e->reused_seen = reused;
    phase_add(e, SL_PHASE_ADMIT, e->pending_admit_ms > 0 ? e->pending_admit_ms : 0.0);
    e->pending_admit_ms = 0;
    phase_add(e, SL_PHASE_BATCH, t0 - t_batch);
    phase_add(e, SL_PHASE_DECODE, t1 - t0);
    if (rc != 0) {
        /* Reservations should make this impossible; fail the rows involved
         * rather than guess at the context's state. */
        for (int i = 0; i < e->n_parallel; i++) {
            slot *s = &e->slots[i];
            if (s->r && (s->logits_idx >= 0 || s->probe_at >= 0 || !s->generating)) {
                char msg[256];
                snprintf(msg, sizeof msg, "%s: llama_decode failed (code %d)", s->r->id, (int)rc);
                fail_slot(e, s, SL_ERR_ENGINE, msg);
            }
        }
        return true;
    }
    /* to_sample[0, n_host): the host chooses; the rest: the graph chose. */
    e->n_to_sample = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < e->n_parallel; i++) {
            slot *s = &e->slots[i];
            if (s->r && s->logits_idx >= 0 && s->on_device == (pass == 1))
                e->to_sample[e->n_to_sample++] = s;
        }
        if (pass == 0)
            e->n_host_sample = e->n_to_sample;
    }
    double t2 = now_ms(), t3;
    if (e->sampler == SL_SAMPLER_REFERENCE) {
        t3 = t2;
        for (int i = 0; i < e->n_to_sample; i++)
            sample_reference(e, e->to_sample[i]);
    } else {
        for (int i = 0; i < e->n_to_sample; i++) {
            slot *s = e->to_sample[i];
            const char *missing = NULL;
            if (s->on_device) {
                s->next = llama_get_sampled_token_ith(e->ctx, s->logits_idx);
                s->next_margin = 0.0f;
                if (s->next == LLAMA_TOKEN_NULL)
                    missing = "a sampled token";
                else
                    llama_sampler_accept(e->attached[s->seq], s->next);
            } else if (!(s->logits = llama_get_logits_ith(e->ctx, s->logits_idx))) {
                missing = "logits";
            }
            if (missing) {
                char msg[256];
                snprintf(msg, sizeof msg, "%s: llama.cpp gave no %s for the sequence", s->r->id,
                         missing);
                fail_slot(e, s, SL_ERR_ENGINE, msg); /* s->r is NULL from now on */
            }
        }
        /* Drop the failed ones, keeping the host's first. */
        int k = 0, n_host = 0;
        for (int i = 0; i < e->n_to_sample; i++)
            if (e->to_sample[i]->r) {
                n_host += i < e->n_host_sample;
                e->to_sample[k++] = e->to_sample[i];
            }
        e->n_to_sample = k;
        e->n_host_sample = n_host;
        t3 = now_ms();
        sample_all(e);
    }
    double detok = 0, book = 0;
    /* Probes: the model read where choices part (sampling's share). */
    for (int i = 0; i < e->n_parallel; i++)
        if (e->slots[i].r && e->slots[i].probe_at >= 0)
            read_probe(e, &e->slots[i], &detok, &book);
    double t5 = now_ms() - detok - book;
    phase_add(e, SL_PHASE_LOGITS, t3 - t2);
    phase_add(e, SL_PHASE_SAMPLE, t5 - t3);
    for (int i = 0; i < e->n_to_sample; i++)
        advance_slot(e, e->to_sample[i], &detok, &book);
    phase_add(e, SL_PHASE_DETOKENIZE, detok);
    e->pending_book_ms += book;
    return true;
}

static int active_slots(const llama_engine *e)
{
    int n = 0;
    for (int i = 0; i < e->n_parallel; i++)
        n += e->slots[i].r != NULL;
    return n;
}

static void publish_stats(llama_engine *e)
{
    int running = active_slots(e);
    e->work.requests_running = (uint64_t)running;
    e->work.kv_cells_used = (uint64_t)e->kv_reserved;
    e->work.kv_cells_total = (uint64_t)e->n_ctx;
    pthread_mutex_lock(&e->mu);
    e->work.requests_waiting = e->n_pending;
    snapshot_locked(e); /* once a step: readers see a consistent snapshot */
    pthread_mutex_unlock(&e->mu);
}

/* Is a follow-up in line that admission may take? Under mu. */
static bool follow_up_ready(const llama_engine *e)
{
    for (const req *r = e->n_follows ? e->pending : NULL; r; r = r->next)
        if (r->follows && (e->encode_ahead <= 0 || r->prepared))
            return true;
    return false;
}

/* Nothing to decode, and newcomers wait for slots held for follow-ups (or
 * a follow-up for the encoder): until a follow-up is ready (submit and the
 * encoder wake the engine) or the first hold ends. */
static void wait_held(llama_engine *e)
{
    double t = now_ms(), until = t + HOLD_MS;
    bool held = false;
    for (int i = 0; i < e->n_parallel; i++) {
        const slot *s = &e->slots[i];
        if (!s->r && s->held_until > t && s->held_until <= until) {
            until = s->held_until;
            held = true;
        }
    }
    pthread_mutex_lock(&e->mu);
    /* A follow-up came meanwhile, or the holds ended: admit again now (a
     * request a stop cancelled completes now, not after the hold). */
    if (e->cancelled || follow_up_ready(e) || (!held && e->n_follows == 0)) {
        pthread_mutex_unlock(&e->mu);
        return;
    }
    struct timespec ts;
    sl_deadline_after((long)ceil(until - t), &ts); /* rounded up: the hold has ended then */
    if (!e->stopping)
        pthread_cond_timedwait(&e->work_cv, &e->mu, &ts);
    pthread_mutex_unlock(&e->mu);
}

static void *replica_main(void *arg)
{
    llama_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && active_slots(e) == 0 && !e->cancelled &&
               !(e->pending && (e->encode_ahead <= 0 || e->pending->prepared)))
            pthread_cond_wait(&e->work_cv, &e->mu);
        bool stop = e->stopping;
        req *cancelled = NULL;
        if (!stop) { /* (on a stop llama_engine_free frees them) */
            cancelled = e->cancelled;
            e->cancelled = NULL;
        }
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
        complete_cancelled(e, cancelled);
        double ta = now_ms();
        bool held_back = admit_waiting(e);
        e->pending_admit_ms += now_ms() - ta;
        prefill_images(e);
        resolve_tasks(e);
        if (decode_step(e)) {
            phase_add(e, SL_PHASE_BOOKKEEPING, e->pending_book_ms);
            e->pending_book_ms = 0;
        } else if (held_back) {
            wait_held(e);
        }
        sl_fault("engine.step", NULL); /* tests: a step's results out, its stats not yet */
        publish_stats(e);
    }
    return NULL;
}

/* --- the ops ---------------------------------------------------------------- */

/* The grammar of a JSON schema's text, from the cache or converted (and
 * cached): SL_OK and *gbnf (sl_free), or the converter's error. */
static sl_status schema_grammar(llama_engine *e, const char *schema, const char *name, char **gbnf)
{
    *gbnf = NULL;
    pthread_mutex_lock(&e->grammar_mu);
    for (int i = 0; i < GRAMMAR_CACHE; i++)
        if (e->grammars[i].schema && strcmp(e->grammars[i].schema, schema) == 0) {
            *gbnf = sl_strdup(e->grammars[i].gbnf);
            break;
        }
    pthread_mutex_unlock(&e->grammar_mu);
    if (*gbnf)
        return SL_OK;
    sl_status st = sl_llama_schema_to_grammar(schema, name, gbnf);
    if (st != SL_OK)
        return st;
    char *key = sl_strdup(schema), *value = sl_strdup(*gbnf);
    if (!key || !value) { /* not cached: converted again next time */
        sl_free(key);
        sl_free(value);
        return SL_OK;
    }
    pthread_mutex_lock(&e->grammar_mu);
    int k = e->grammar_next;
    e->grammar_next = (k + 1) % GRAMMAR_CACHE;
    sl_free(e->grammars[k].schema);
    sl_free(e->grammars[k].gbnf);
    e->grammars[k].schema = key;
    e->grammars[k].gbnf = value;
    pthread_mutex_unlock(&e->grammar_mu);
    return SL_OK;
}

/* The request's structured output into r: its grammar copied, its schema
 * read (to check the answer) and turned into a grammar unless one is given. */
static sl_status structured_request(llama_engine *e, const sl_request *rq, req *r)
{
    if (rq->grammar && *rq->grammar && !(r->grammar = sl_strdup(rq->grammar)))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory queuing the request", r->id);
    if (!rq->json_schema)
        return SL_OK;
    char name[320];
    snprintf(name, sizeof name, "%s: json_schema", r->id);
    sl_status st = sl_json_schema_parse(rq->json_schema, strlen(rq->json_schema), name, &r->schema);
    if (st == SL_OK && !r->grammar)
        st = schema_grammar(e, rq->json_schema, name, &r->grammar);
    return st;
}

/* llama.cpp's grammar parser prints its reason ("error parsing grammar:
 * Undefined rule identifier 'foo'", then the whole grammar) on stderr
 * itself, not through its log: the parse runs with stderr in a file, so
 * the reason goes in our message instead, and whatever else came there
 * meanwhile (another thread's line) is printed after. */
static pthread_mutex_t stderr_mu = PTHREAD_MUTEX_INITIALIZER;

static struct llama_sampler *parse_grammar(const char *gbnf, char *why, size_t why_size)
{
    static const char said[] = "parse: error parsing grammar: ";
    why[0] = '\0';
    llama_log_set(ggml_to_sl_log, NULL); /* before any engine opens: config check */
    pthread_mutex_lock(&stderr_mu);
    fflush(stderr);
    FILE *tmp = tmpfile(); /* cloexec: none; a child started now has it as stderr anyway */
    int saved = tmp ? fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0) : -1;
    bool moved = saved >= 0 && dup2(fileno(tmp), STDERR_FILENO) >= 0;
    log_capture cause = {.quiet = true};
    capture = &cause;
    struct llama_sampler *g = llama_sampler_init_grammar(NULL, gbnf, "root");
    capture = NULL;
    fflush(stderr);
    if (moved)
        dup2(saved, STDERR_FILENO);
    if (saved >= 0)
        close(saved);
    char text[4096];
    size_t n = 0;
    if (moved) {
        rewind(tmp);
        n = fread(text, 1, sizeof text - 1, tmp);
    }
    text[n] = '\0';
    if (tmp)
        fclose(tmp);
    pthread_mutex_unlock(&stderr_mu);
    char *at = strstr(text, said);
    if (at) {
        /* Its first line: a place is the rest of the grammar ("expecting
         * ')' at " and the lines after the place) */
        const char *reason = at + strlen(said);
        size_t len = strcspn(reason, "\n");
        bool line_end = len >= 4 && strncmp(reason + len - 4, " at ", 4) == 0;
        snprintf(why, why_size, "%.*s%s", (int)len, reason, line_end ? "the end of a line" : "");
        /* the reason, a blank line and the grammar: not said again */
        size_t glen = strlen(gbnf);
        const char *end = reason;
        while ((end = strstr(end, "\n\n")) && strncmp(end + 2, gbnf, glen) != 0)
            end++;
        end = end ? end + 2 + glen + (end[2 + glen] == '\n') : reason + len;
        memmove(at, end, strlen(end) + 1);
    } else if (cause.len) {
        snprintf(why, why_size, "%s", cause.text);
    }
    fputs(text, stderr);
    return g;
}

sl_status sl_llama_grammar_check(const char *gbnf, const char *name)
{
    if (!gbnf || !*gbnf)
        return sl_fail(SL_ERR_INVALID_ARG, "%s is empty: a GBNF grammar needs a root rule", name);
    /* No model: llama.cpp parses and checks the rules without one (only
     * token references, <[id]>, need a vocabulary). */
    char why[512];
    struct llama_sampler *g = parse_grammar(gbnf, why, sizeof why);
    if (!g)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s: llama.cpp cannot parse it as a GBNF grammar with a root rule: %s "
                       "(token references <[id]> are not accepted here)",
                       name, why[0] ? why : "no reason given");
    llama_sampler_free(g);
    return SL_OK;
}

/* A conversation's messages into r: each message's parts joined as
 * llama-server joins them (text parts one per line, the media marker in
 * place of each image, no line break next to a marker), the images in
 * order. Text holding the marker itself is refused: mtmd would take it
 * for an image. */
static sl_status copy_conversation(llama_engine *e, const sl_request *rq, req *r)
{
    /* Without a projector the text goes to the tokenizer as it is. */
    const char *marker = e->mtmd ? mtmd_get_marker(e->mtmd) : NULL;
    size_t marker_len = marker ? strlen(marker) : 0;
    r->msg_role = sl_calloc((size_t)rq->n_messages, sizeof *r->msg_role);
    r->msg_text = sl_calloc((size_t)rq->n_messages, sizeof *r->msg_text);
    if (!r->msg_role || !r->msg_text)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory queuing the request", r->id);
    r->n_msgs = rq->n_messages;
    for (int i = 0; i < rq->n_messages; i++) {
        const sl_message *m = &rq->messages[i];
        static const char *const roles[] = {"system", "user", "assistant"};
        for (int k = 0; k < 3; k++)
            if (strcmp(m->role, roles[k]) == 0)
                r->msg_role[i] = roles[k];
        text_buf t = {0};
        bool after_marker = false, bad = text_append(&t, "", 0) != 0;
        for (int k = 0; k < m->n_parts && !bad; k++) {
            const char *text = m->parts[k].text;
            if (!text && !marker) {
                sl_free(t.data);
                return no_projector(r->id);
            }
            if (!text) {
                bad = text_append(&t, marker, marker_len) != 0;
                after_marker = true;
                continue;
            }
            if (marker && strstr(text, marker)) {
                sl_free(t.data);
                return sl_fail(SL_ERR_INVALID_ARG,
                               "%s: message %d: part %d holds '%s', the marker the engine puts "
                               "where an image goes",
                               r->id, i, k, marker);
            }
            bad = (!after_marker && t.len > 0 && text_append(&t, "\n", 1) != 0) ||
                  text_append(&t, text, strlen(text)) != 0;
            after_marker = false;
        }
        if (bad) {
            sl_free(t.data);
            return sl_fail(SL_ERR_NOMEM, "%s: out of memory queuing the request", r->id);
        }
        r->msg_text[i] = t.data;
    }
    for (int i = 0; i < rq->n_images; i++)
        if (!rq->images || !(r->images[i] = rq->images[i]))
            return sl_fail(SL_ERR_INVALID_ARG,
                           "%s: image %d is missing (the llama engine needs the decoded images)",
                           r->id, i);
    r->n_images = rq->n_images;
    return SL_OK;
}

/* The engine's copy of a request (one without tasks); NULL with *st set
 * when its schema or grammar is refused or memory runs out. */
static req *req_new(llama_engine *e, const sl_request *rq, void *tag, sl_status *st)
{
    req *r = sl_calloc(1, sizeof *r);
    bool ok = r && (r->id = sl_strdup(rq->id ? rq->id : "(request)")) &&
              (!rq->task_name || (r->task_name = sl_strdup(rq->task_name))) &&
              (!rq->prompt || (r->prompt = sl_strdup(rq->prompt))) &&
              (!rq->system_prompt || (r->system_prompt = sl_strdup(rq->system_prompt)));
    if (ok && rq->n_stop > 0) {
        ok = (r->stop = sl_calloc((size_t)rq->n_stop, sizeof *r->stop)) != NULL;
        for (int i = 0; ok && i < rq->n_stop; i++, r->n_stop++)
            ok = (r->stop[i] = sl_strdup(rq->stop[i])) != NULL;
    }
    if (ok && rq->n_choices > 0) {
        ok = (r->choices = sl_calloc((size_t)rq->n_choices, sizeof *r->choices)) != NULL;
        for (int i = 0; ok && i < rq->n_choices; i++, r->n_choices++)
            ok = (r->choices[i] = sl_strdup(rq->choices[i])) != NULL;
    }
    if (!ok) {
        req_free(r);
        *st = sl_fail(SL_ERR_NOMEM, "%s: out of memory queuing the request",
                      rq->id ? rq->id : "(request)");
        return NULL;
    }
    sl_prompt_conversation pc;
    const sl_request *conv = sl_prompt_as_conversation(rq, &pc);
    if ((*st = structured_request(e, rq, r)) != SL_OK ||
        (conv->n_messages > 0 && (*st = copy_conversation(e, conv, r)) != SL_OK)) {
        req_free(r);
        return NULL;
    }
    r->want_json = rq->want_response_json;
    r->follows = rq->follows;
    r->followed = rq->followed;
    r->tag = tag;
    r->trace = rq->trace;
    r->image = rq->image;
    r->sampling = rq->sampling;
    r->t_submit = now_ms();
    return r;
}

static void free_chain(req *r)
{
    while (r) {
        req *next = r->next;
        req_free(r);
        r = next;
    }
}

/* Does rq carry an image (its own, a conversation's image part)? */
static bool has_image(const sl_request *rq)
{
    if (rq->image || rq->n_images > 0 || rq->image_encoded)
        return true;
    for (int i = 0; rq->messages && i < rq->n_messages; i++)
        for (int k = 0; rq->messages[i].parts && k < rq->messages[i].n_parts; k++)
            if (!rq->messages[i].parts[k].text)
                return true;
    return false;
}

/* Queues follow-up r ahead of the requests the encoder has not taken (of
 * all, without an encoder), never between a request's tasks, which go
 * together; the encoder prepares it next, beyond its encode_ahead. (The
 * sequence it goes on in is held for it, or likely still there.) Under mu. */
static void queue_follow_up(llama_engine *e, req *r)
{
    req **at = &e->pending, *before = NULL;
    if (e->encode_ahead > 0)
        while (*at && *at != e->prep_next) {
            before = *at;
            at = &before->next;
        }
    bool next_to_prepare = e->encode_ahead > 0 && *at == e->prep_next;
    while (*at && before && before->grp && (*at)->grp == before->grp) {
        before = *at;
        at = &before->next;
        next_to_prepare = false;
    }
    r->next = *at;
    *at = r;
    if (!r->next)
        e->pending_tail = r;
    if (next_to_prepare)
        e->prep_next = r;
}

static sl_status llama_engine_submit(void *impl, const sl_request *rq, void *tag)
{
    llama_engine *e = impl;
    if (!e->mtmd && has_image(rq))
        return no_projector(rq->id ? rq->id : "(request)");
    /* A request with tasks (or n answers, or both): one req per task
     * (answer; task t's answer k at t * n + k), queued together so that
     * the later ones find the first in a sequence (admit) and copy its
     * positions: a task's (and its answers') up to its last image, an
     * answer's all but the last token when there are no tasks (the
     * answers' prompt is then the same); one completion when all are back. */
    req *r = NULL, *last = NULL;
    int answers = rq->sampling.n > 1 ? rq->sampling.n : 1;
    int n_reqs = (rq->n_tasks > 0 ? rq->n_tasks : 1) * answers;
    sl_task_group *grp = n_reqs > 1 || rq->n_tasks > 0 ? sl_task_group_new(tag, n_reqs) : NULL;
    sl_status st = !(n_reqs > 1 || rq->n_tasks > 0) || grp
                       ? SL_OK
                       : sl_fail(SL_ERR_NOMEM, "%s: out of memory queuing the request",
                                 rq->id ? rq->id : "(request)");
    for (int i = 0; st == SL_OK && i < n_reqs; i++) {
        req *t = NULL;
        if (grp) {
            sl_request one;
            char *id;
            sl_piece_request(rq, i, &one, &id);
            if (id)
                t = req_new(e, &one, tag, &st);
            else
                st = sl_fail(SL_ERR_NOMEM, "%s: out of memory queuing the request",
                             rq->id ? rq->id : "(request)");
            sl_free(id);
        } else {
            t = req_new(e, rq, tag, &st);
        }
        if (!t)
            break;
        t->grp = grp;
        t->task = i;
        if (grp) /* a conversation's turns are requests of their own */
            t->follows = t->followed = false;
        t->same_prompt = rq->n_tasks == 0 && n_reqs > 1;
        if (last)
            last->next = t;
        else
            r = t;
        last = t;
    }
    if (st != SL_OK) {
        /* Each task queued holds a share of the group, given back as it is
         * freed; those never made give theirs back here. */
        int made = 0;
        for (req *t = r; t; t = t->next)
            made++;
        for (int i = made; grp && i < n_reqs; i++)
            sl_task_group_drop(grp);
        free_chain(r);
        return st;
    }
    pthread_mutex_lock(&e->mu);
    if (e->cap_done < e->in_flight + 1) {
        /* Room for this request's completion now, so complete() never has
         * to allocate and a result can never be lost. */
        size_t cap = e->cap_done ? 2 * e->cap_done : 16;
        sl_completion *grown = sl_realloc(e->done, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&e->mu);
            free_chain(r);
            return sl_fail(SL_ERR_NOMEM, "%s: out of memory queuing the request",
                           rq->id ? rq->id : "(request)");
        }
        e->done = grown;
        e->cap_done = cap;
    }
    e->in_flight++;
    /* Submitted after a stop: not started either (the caption job defers
     * such rows itself; this holds for any caller). */
    if (cancel_if_stopped(e, r)) {
        pthread_cond_signal(&e->work_cv);
        pthread_mutex_unlock(&e->mu);
        return SL_OK;
    }
    e->n_pending += (size_t)n_reqs;
    if (r->follows && !grp) {
        queue_follow_up(e, r);
        e->n_follows++;
        pthread_cond_signal(e->encode_ahead > 0 ? &e->encoder_cv : &e->work_cv);
        pthread_mutex_unlock(&e->mu);
        return SL_OK;
    }
    if (e->pending_tail)
        e->pending_tail->next = r;
    else
        e->pending = r;
    e->pending_tail = last;
    if (e->encode_ahead > 0) {
        if (!e->prep_next)
            e->prep_next = r;
        pthread_cond_signal(&e->encoder_cv);
    } else {
        pthread_cond_signal(&e->work_cv);
    }
    pthread_mutex_unlock(&e->mu);
    return SL_OK;
}

static sl_status llama_engine_check_choices(void *impl, const char *who,
                                            const char *system_prompt, const char *prompt,
                                            const char *const *choices, int n, int32_t *tokens)
{
    llama_engine *e = impl;
    req r = {.id = (char *)who, .choices = (char **)choices, .n_choices = n};
    char *text = NULL;
    sl_status st = render_prompt(e, who, system_prompt, prompt, false, &text);
    if (st == SL_OK)
        st = choice_tokens(e, &r, text);
    for (int k = 0; st == SL_OK && tokens && k < CHOICE_VARIANTS * n; k++)
        tokens[k] = sl_choice_tree_first(r.choice_tree, k / CHOICE_VARIANTS, k % CHOICE_VARIANTS);
    sl_free(text);
    sl_choice_tree_free(r.choice_tree);
    sl_free(r.choice_p);
    return st;
}

static sl_status llama_engine_poll(void *impl, sl_completion *out, size_t max, int timeout_ms,
                                   size_t *n)
{
    llama_engine *e = impl;
    pthread_mutex_lock(&e->mu);
    if (e->n_done == 0 && timeout_ms > 0) {
        struct timespec ts;
        sl_deadline_after(timeout_ms, &ts);
        while (e->n_done == 0)
            if (pthread_cond_timedwait(&e->done_cv, &e->mu, &ts) != 0)
                break;
    }
    size_t k = e->n_done < max ? e->n_done : max;
    if (k) {
        memcpy(out, e->done, k * sizeof *out);
        memmove(e->done, e->done + k, (e->n_done - k) * sizeof *e->done);
    }
    e->n_done -= k;
    e->in_flight -= k;
    pthread_mutex_unlock(&e->mu);
    *n = k;
    return SL_OK;
}

static size_t llama_engine_in_flight(const void *impl)
{
    llama_engine *e = (llama_engine *)impl;
    pthread_mutex_lock(&e->mu);
    size_t n = e->in_flight;
    pthread_mutex_unlock(&e->mu);
    return n;
}

static void llama_engine_stats(const void *impl, sl_engine_stats *out)
{
    llama_engine *e = (llama_engine *)impl;
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
    size_t bytes;
    sl_image_cache_counts(e->image_cache, &out->image_cache_queries, &out->image_cache_hits,
                          &bytes);
}

static const char *llama_engine_model_name(const void *impl)
{
    return ((const llama_engine *)impl)->model_name;
}

static const char *llama_engine_default_system(const void *impl)
{
    const llama_engine *e = impl;
    return e->template_system ? e->template_system : "";
}

static void llama_engine_free(void *impl)
{
    llama_engine *e = impl;
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->work_cv);
    pthread_cond_broadcast(&e->encoder_cv);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started)
        pthread_join(e->thread, NULL);
    for (int k = 0; k < e->n_encoders; k++)
        if (e->encoders[k].started)
            pthread_join(e->encoders[k].thread, NULL);
    for (int k = 1; k < e->n_encoders; k++) {
        if (e->encoders[k].mtmd)
            mtmd_free(e->encoders[k].mtmd);
        pthread_mutex_destroy(&e->encoders[k].own_mu); /* made with encoder k */
    }
    sl_free(e->encoders);
    for (int i = 0; i < SAMPLE_THREADS_MAX; i++)
        sl_free(e->cand[i]);
    sl_free(e->to_sample);
    for (int i = 0; e->slots && i < e->n_parallel; i++)
        if (e->slots[i].r) {
            req_free(e->slots[i].r);
            e->slots[i].r = NULL;
            if (e->slots[i].smpl)
                llama_sampler_free(e->slots[i].smpl);
            if (e->slots[i].grammar)
                llama_sampler_free(e->slots[i].grammar);
            sl_free(e->slots[i].text.data);
        }
    for (int i = 0; e->slots && i < e->n_parallel; i++) {
        drop_kept(&e->slots[i]);
        sl_free(e->slots[i].fed);
    }
    while (e->pending) {
        req *r = e->pending;
        e->pending = r->next;
        req_free(r);
    }
    while (e->cancelled) {
        req *r = e->cancelled;
        e->cancelled = r->next;
        req_free(r);
    }
    for (size_t i = 0; i < e->n_done; i++)
        sl_completion_clear(&e->done[i]);
    sl_free(e->done);
    sl_free(e->slots);
    sl_free(e->prefix);
    if (e->batch.token)
        llama_batch_free(e->batch);
    if (e->ebatch.embd)
        llama_batch_free(e->ebatch);
    if (e->mtmd)
        mtmd_free(e->mtmd);
    sl_image_cache_free(e->image_cache);
    if (e->ctx)
        llama_free(e->ctx);
    for (int i = 0; i < e->n_lora; i++)
        llama_adapter_lora_free(e->lora[i]);
    for (int i = 0; e->attached && i < e->n_parallel; i++)
        if (e->attached[i])
            llama_sampler_free(e->attached[i]);
    sl_free(e->attached);
    sl_free(e->attached_greedy);
    if (e->threadpool)
        ggml_threadpool_free(e->threadpool);
    if (e->model)
        llama_model_free(e->model);
    sl_free(e->chat_template);
    sl_free(e->template_system);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->work_cv);
    pthread_cond_destroy(&e->done_cv);
    pthread_cond_destroy(&e->encoder_cv);
    pthread_mutex_destroy(&e->encoding_mu);
    pthread_cond_destroy(&e->encoding_cv);
    pthread_mutex_destroy(&e->vision_mu);
    for (int i = 0; i < GRAMMAR_CACHE; i++) {
        sl_free(e->grammars[i].schema);
        sl_free(e->grammars[i].gbnf);
    }
    pthread_mutex_destroy(&e->grammar_mu);
    sl_free(e);
}

/* sl_engine_cancel_queued: the requests waiting for a sequence that
 * nothing has started on are not started (the engine thread completes
 * them SL_ERR_STOPPED). Those left run: a follow-up (a conversation's next
 * turn), a task or answer of a request whose siblings may be running, and
 * one in the encoder's hands. Only the queue of now: the caller submits no
 * new request after this (the caption job defers its rows itself). */
static void llama_engine_cancel_queued(void *impl)
{
    llama_engine *e = impl;
    pthread_mutex_lock(&e->mu);
    e->cancel_asked = true; /* and the one admission holds out of the queue */
    req **at = &e->pending, *prev = NULL, **tail = &e->cancelled;
    while (*tail)
        tail = &(*tail)->next;
    while (*at) {
        req *r = *at;
        if (!cancellable(r)) {
            prev = r;
            at = &r->next;
            continue;
        }
        *tail = take_pending(e, at, prev);
        tail = &(*tail)->next;
    }
    pthread_cond_signal(&e->work_cv);
    pthread_mutex_unlock(&e->mu);
}

static const sl_engine_ops llama_ops = {
    .cancel_queued = llama_engine_cancel_queued,
    .kind = "llama",
    .submit = llama_engine_submit,
    .poll = llama_engine_poll,
    .in_flight = llama_engine_in_flight,
    .stats = llama_engine_stats,
    .model_name = llama_engine_model_name,
    .default_system = llama_engine_default_system,
    .free = llama_engine_free,
    .check_choices = llama_engine_check_choices,
};

sl_llama_params sl_llama_default_params(void)
{
    return (sl_llama_params){
        .n_parallel = 0,
        .n_ctx_per_seq = 0,
        .max_tokens_hint = 256,
        .image_edge_hint = 512,
        .n_batch = 0,
        .n_threads = 0,
        .n_gpu_layers = -1,
        .gpu = -1,
        .cpu_poll = 50, /* llama.cpp's own default */
        .sampler = SL_SAMPLER_AUTO,
        .sample_threads = 0,
        .encode_ahead = -1,
        .prefix_cache = SL_PREFIX_CACHE_ON,
        .image_cache_bytes = (uint64_t)256 << 20,
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

/* The SIMD extensions the llama.cpp build may use (SL_LLAMA_CPU_FLAGS:
 * the build machine's, when it was built for that CPU, GGML_NATIVE) that
 * this CPU lacks, ", "-separated ("" when none, when the build names none,
 * or when /proc/cpuinfo cannot be read: no opinion then). Without this a
 * prefix carried to an older node dies of SIGILL in libggml-cpu, as its
 * backend starts (llama_backend_init) or loads a model, naming nothing.
 * SLUICE_TEST_CPU_FLAGS (TEST-ONLY, said on stderr) stands for this CPU's
 * flags line. Found once. */
static char cpu_missing[512];

static void find_cpu_missing(void)
{
    static const char built[] = SL_LLAMA_CPU_FLAGS;
    if (!built[0])
        return;
    /* /proc/cpuinfo lists what the kernel knows by name: one older than
     * an extension the CPU has leaves it out, and the check would refuse
     * a CPU that can run the build. The user who knows says so. */
    const char *check = getenv("SLUICE_CPU_CHECK");
    if (check && strcmp(check, "off") == 0) {
        sl_log(SL_LOG_WARN, "SLUICE_CPU_CHECK=off: this CPU is not checked for the SIMD "
                            "extensions this sluice's llama.cpp was built with");
        return;
    }
    char line[8192] = "";
    const char *fake = getenv("SLUICE_TEST_CPU_FLAGS");
    if (fake) {
        sl_log(SL_LOG_WARN, "SLUICE_TEST_CPU_FLAGS is set (a test's): this CPU's flags are "
                            "taken as '%.200s'", fake);
        snprintf(line, sizeof line, " %s ", fake);
    } else {
        FILE *f = fopen("/proc/cpuinfo", "re");
        char buf[sizeof line - 2];
        while (f && fgets(buf, sizeof buf, f))
            if (strncmp(buf, "flags", 5) == 0 && strchr(buf, ':')) {
                snprintf(line, sizeof line, " %s", strchr(buf, ':') + 1);
                break;
            }
        if (f)
            fclose(f);
        if (!line[0])
            return;
        size_t len = strcspn(line, "\n"); /* the words end with a space, as the test's */
        if (len + 1 < sizeof line)
            memcpy(line + len, " ", 2);
    }
    size_t used = 0;
    for (const char *w = built; *w;) {
        size_t n = strcspn(w, " ");
        char word[64];
        snprintf(word, sizeof word, " %.*s ", (int)n, w);
        if (!strstr(line, word) && used < sizeof cpu_missing) {
            int k = snprintf(cpu_missing + used, sizeof cpu_missing - used, "%s%.*s",
                             used ? ", " : "", (int)n, w);
            used += k > 0 ? (size_t)k : 0;
        }
        w += n + (w[n] == ' ');
    }
}

static const char *cpu_lacks(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, find_cpu_missing);
    return cpu_missing;
}

sl_status sl_llama_cpu_check(void)
{
    if (!cpu_lacks()[0])
        return SL_OK;
    /* The machine by name: under mpirun or srun every node's refusal reads
     * "this CPU", and the user must find the one node that is older. */
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    return sl_fail(SL_ERR_MODEL,
                   "this sluice's llama.cpp (%s) was built for the CPU of the machine that built "
                   "it (GGML_NATIVE) and may use %s, which this CPU%s%s%s lacks: it would stop on "
                   "an illegal instruction. Build sluice on this machine, or on the oldest CPU of "
                   "the nodes that run it (docs/building.md; if this CPU has them and its kernel "
                   "is too old to list them in /proc/cpuinfo, SLUICE_CPU_CHECK=off skips this "
                   "check)", SL_LLAMA_BUILD, cpu_lacks(), host[0] ? " (" : "", host,
                   host[0] ? ")" : "");
}

static void init_backend_once(void)
{
    llama_log_set(ggml_to_sl_log, NULL);
    mtmd_helper_log_set(ggml_to_sl_log, NULL);
    llama_backend_init();
}

/* Once per process, whichever entry point comes first, and only on a CPU
 * the build can run on: its CPU backend would die as it starts on another.
 * SL_OK, or sl_llama_cpu_check's refusal, which the caller returns. */
static sl_status init_backend(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    sl_status st = sl_llama_cpu_check();
    if (st == SL_OK)
        pthread_once(&once, init_backend_once);
    return st;
}

void sl_llama_init(void)
{
    (void)init_backend(); /* a refused CPU: every open says why */
}

static char version_text[256];

static void describe_llama_version(void)
{
    snprintf(version_text, sizeof version_text, "%s, ggml %s", SL_LLAMA_BUILD, ggml_version());
}

const char *sl_llama_version(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, describe_llama_version);
    return version_text;
}

/* The prompt of the sizing probe: the caller's longest, else a caption
 * request's. */
static const char *probe_prompt(const sl_llama_params *p)
{
    return p->prompt_hint && *p->prompt_hint ? p->prompt_hint
                                             : "Describe this image in one sentence.";
}

/* KV cells one request of the expected shape takes: the template, the
 * system prompt (none: NULL), the prompt, and an image of
 * image_edge_hint pixels square. */
static sl_status probe_cells(llama_engine *e, const sl_llama_params *p, const char *system,
                             const char *prompt, int *cells)
{
    req r = {.id = "(sizing probe)", .system_prompt = (char *)system, .prompt = (char *)prompt};
    uint8_t *gray = NULL;
    sl_image *img = NULL;
    /* The vision preprocessor shrinks anything larger than a few thousand
     * pixels to its own size first: a larger probe adds no positions. */
    int edge = !e->mtmd ? 0 : p->image_edge_hint > 4096 ? 4096 : p->image_edge_hint;
    if (edge > 0) {
        size_t n = (size_t)edge * (size_t)edge * 3;
        gray = sl_malloc(n);
        if (!gray)
            return sl_fail(SL_ERR_NOMEM, "out of memory for the sizing probe's image");
        memset(gray, 128, n);
        sl_status st = sl_image_from_rgb(edge, edge, gray, &img);
        if (st != SL_OK) {
            sl_free(gray);
            return st;
        }
        r.image = img;
    }
    sl_status st = tokenize(e, e->mtmd, &r);
    *cells = st == SL_OK ? r.n_cells : -1;
    req_drop_tokens(&r);
    sl_image_free(img);
    sl_free(gray);
    return st;
}

/* The index-th GPU device llama.cpp sees (CUDA builds register one per
 * card), for --gpus. */
static sl_status find_gpu(int index, ggml_backend_dev_t *out)
{
    int n_gpus = 0;
    char names[512] = "";
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if (ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_GPU)
            continue;
        if (n_gpus == index)
            *out = dev;
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%d: %s", n_gpus ? ", " : "", n_gpus,
                 ggml_backend_dev_description(dev));
        n_gpus++;
    }
    if (n_gpus == 0)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--gpus %d: llama.cpp sees no GPU device (a CPU-only build, or no driver); "
                       "drop --gpus, or build llama.cpp with CUDA (SLUICE_LLAMA_CUDA=1 "
                       "scripts/llama-cpp.sh)",
                       index);
    if (index >= n_gpus)
        return sl_fail(SL_ERR_INVALID_ARG, "--gpus %d: there are %d GPU devices (%s)", index,
                       n_gpus, names);
    return SL_OK;
}

/* AUTO: the device when a GPU holds the model's layers (then the logits
 * are there too, and copying 150k of them per sequence per step is what
 * the device sampler saves); the host otherwise. */
/* Does the model run on a GPU (some layers offloaded to a GPU device)? */
static bool uses_gpu(const sl_llama_params *p)
{
    /* Counting the devices starts ggml's CPU backend (ggml_cpu_init), the
     * code an unfit CPU cannot run: on one nothing loads anyway. */
    if (p->n_gpu_layers == 0 || cpu_lacks()[0])
        return false;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++)
        if (ggml_backend_dev_type(ggml_backend_dev_get(i)) == GGML_BACKEND_DEVICE_TYPE_GPU)
            return true;
    return false;
}

static sl_llama_sampler choose_sampler(const sl_llama_params *p, bool on_gpu)
{
    if (p->sampler != SL_SAMPLER_AUTO)
        return p->sampler;
    return on_gpu ? SL_SAMPLER_DEVICE : SL_SAMPLER_HOST;
}

/* --parallel 0 on a GPU: as many sequences as three quarters of the free
 * device memory holds in KV cache (K and V of every layer for each
 * position of a sequence, in the cache types chosen: a q8_0 cache holds
 * ~1.9x the sequences of f16), the rest left for compute buffers, the
 * vision encoder and embeddings in flight; at most 128 (where the
 * measured H200 runs gained nothing more), at least 1. */
#define AUTO_PARALLEL_MAX 128

static int parallel_for(uint64_t free_bytes, uint64_t per_seq_bytes)
{
    uint64_t n = per_seq_bytes > 0 ? free_bytes / 4 * 3 / per_seq_bytes : 1;
    uint64_t max = llama_max_parallel_sequences() - 1;
    if (n > AUTO_PARALLEL_MAX)
        n = AUTO_PARALLEL_MAX;
    if (n > max)
        n = max;
    return n < 1 ? 1 : (int)n;
}

/* Without a vision projector (no image to size for): positions reserved
 * per sequence for prompts longer than the probe's, when --ctx is not
 * given. */
#define TEXT_ONLY_ROOM 1024

static int auto_parallel(llama_engine *e, ggml_backend_dev_t dev, int per_seq)
{
    for (size_t i = 0; !dev && i < ggml_backend_dev_count(); i++)
        if (ggml_backend_dev_type(ggml_backend_dev_get(i)) == GGML_BACKEND_DEVICE_TYPE_GPU)
            dev = ggml_backend_dev_get(i);
    size_t free_bytes = 0, total = 0;
    if (dev)
        ggml_backend_dev_memory(dev, &free_bytes, &total);
    uint64_t per_seq_bytes = kv_bytes_per_pos(e->model, e->type_k, e->type_v) * (uint64_t)per_seq;
    int n = parallel_for(free_bytes, per_seq_bytes);
    sl_log(SL_LOG_INFO, "--parallel auto: %d sequences (%.1f GiB free on %s, %.1f MiB of KV cache "
           "each, K %s, V %s)", n, free_bytes / 1073741824.0,
           dev ? ggml_backend_dev_description(dev) : "the device", per_seq_bytes / 1048576.0,
           KV_TYPES[e->type_k].name, KV_TYPES[e->type_v].name);
    return n;
}

/* The model's header and hyperparameters without its weights. */
static sl_status load_shape(const sl_llama_params *p, struct llama_model **out)
{
    *out = NULL;
    sl_status st = check_readable("--model", p->model_path);
    if (st == SL_OK)
        st = check_kv_type("--cache-type-k", p->cache_type_k);
    if (st == SL_OK)
        st = check_kv_type("--cache-type-v", p->cache_type_v);
    if (st == SL_OK)
        st = init_backend();
    if (st != SL_OK)
        return st;
    struct llama_model_params mp = llama_model_default_params();
    /* Hyperparameters and tensor shapes, no weights, as llama.cpp's own
     * memory-fit pass loads them (no_alloc, not mapped); vocab_only stops
     * before the hyperparameters. */
    mp.no_alloc = true;
    mp.load_mode = LLAMA_LOAD_MODE_NONE;
    mp.n_gpu_layers = 0;
    if (!(*out = llama_model_load_from_file(p->model_path, mp)))
        return sl_fail(SL_ERR_MODEL, "--model '%s': llama.cpp cannot read it as a GGUF language "
                       "model (see the llama.cpp messages above)", p->model_path);
    return SL_OK;
}

sl_status sl_llama_kv_bytes_per_position(const sl_llama_params *params, uint64_t *out)
{
    *out = 0;
    struct llama_model *m;
    sl_status st = load_shape(params, &m);
    if (st != SL_OK)
        return st;
    *out = kv_bytes_per_pos(m, params->cache_type_k, params->cache_type_v);
    llama_model_free(m);
    return SL_OK;
}

sl_status sl_llama_parallel_for_memory(const sl_llama_params *params, uint64_t free_bytes,
                                       int per_seq, int *out)
{
    *out = 0;
    uint64_t per_pos;
    if (per_seq < 1)
        return sl_fail(SL_ERR_INVALID_ARG, "per_seq must be at least 1 position, got %d", per_seq);
    sl_status st = sl_llama_kv_bytes_per_position(params, &per_pos);
    if (st == SL_OK)
        *out = parallel_for(free_bytes, per_pos * (uint64_t)per_seq);
    return st;
}

int sl_llama_default_parallel(const sl_llama_params *p)
{
    (void)init_backend(); /* a refused CPU: no GPU is looked for (uses_gpu) */
    return p->n_parallel > 0 ? p->n_parallel : uses_gpu(p) ? AUTO_PARALLEL_MAX : 4;
}

/* The adapters' count, paths and scales, before anything loads. */
static sl_status check_adapters(const sl_llama_params *p)
{
    if (p->n_lora < 0 || p->n_lora > SL_LLAMA_MAX_LORA || (p->n_lora > 0 && !p->lora))
        return sl_fail(SL_ERR_INVALID_ARG, "--lora: from 0 to %d adapters, got %d",
                       SL_LLAMA_MAX_LORA, p->n_lora);
    for (int i = 0; i < p->n_lora; i++) {
        if (!p->lora[i].path || !*p->lora[i].path)
            return sl_fail(SL_ERR_INVALID_ARG, "--lora %d: the path of a LoRA GGUF is required",
                           i + 1);
        if (!isfinite(p->lora[i].scale))
            return sl_fail(SL_ERR_INVALID_ARG, "--lora '%s': the scale must be a finite number",
                           p->lora[i].path);
    }
    return SL_OK;
}

/* Each adapter onto e->model. llama.cpp checks what it reads (a GGUF of
 * general.type adapter, adapter.type lora, the model's architecture, each
 * lora_a/lora_b pair the shape of a tensor the model has) and says which
 * check failed only in its log: that line is the message's cause. */
/* The names llama.cpp knows a template by, comma-separated, into buf. */
static void builtin_template_names(char *buf, size_t cap)
{
    const char *names[256];
    int32_t n = llama_chat_builtin_templates(names, sizeof names / sizeof *names);
    size_t used = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < n && i < (int32_t)(sizeof names / sizeof *names) && used + 2 < cap;
         i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", names[i]);
}

static bool is_builtin_template(const char *name)
{
    const char *names[256];
    int32_t n = llama_chat_builtin_templates(names, sizeof names / sizeof *names);
    for (int32_t i = 0; i < n && i < (int32_t)(sizeof names / sizeof *names); i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* Whether llama.cpp renders with `tmpl` (it matches a Jinja template to
 * the formats it implements; it runs no Jinja). */
static bool template_renders(const char *tmpl)
{
    llama_chat_message probe = {"user", "x"};
    char buf[512];
    return llama_chat_apply_template(tmpl, &probe, 1, true, buf, sizeof buf) >= 0;
}

/* Largest --chat-template file read (Jinja templates are a few KB). */
enum { MAX_TEMPLATE_FILE = 1 << 20 };

/* The system message a ChatML template writes where a conversation has
 * none, as a literal block with no Jinja inside it: Qwen2-VL's, Qwen2.5-VL's
 * and Qwen2.5's "<|im_start|>system\nYou are a helpful assistant.<|im_end|>"
 * under "if loop.first and message['role'] != 'system'". NULL: none (or out
 * of memory: the prompt is then rendered without it). sl_free. */
static char *template_default_system(const char *tmpl)
{
    static const char head[] = "<|im_start|>system";
    for (const char *at = strstr(tmpl, head); at; at = strstr(at + 1, head)) {
        const char *text = at + sizeof head - 1;
        if (*text == '\n')
            text++;
        else if (text[0] == '\\' && text[1] == 'n') /* written as an escape in a Jinja string */
            text += 2;
        else
            continue;
        const char *end = strstr(text, "<|im_end|>");
        if (!end || end == text)
            continue;
        size_t len = (size_t)(end - text);
        bool literal = true;
        for (size_t i = 0; i < len && literal; i++)
            literal = !strchr("{}'\"\\", text[i]);
        if (!literal)
            continue; /* Jinja in it ("' + messages[0]['content'] + '"), or escapes */
        char *copy = sl_malloc(len + 1);
        if (copy) {
            memcpy(copy, text, len);
            copy[len] = '\0';
        }
        return copy;
    }
    return NULL;
}

/* Sets e->chat_template (NULL: the plain User:/Assistant: prompt) from
 * params->chat_template: NULL for the model's own, "plain", a name
 * llama.cpp knows (chatml, llama3, ...), or a file holding a template. A
 * template llama.cpp cannot render is a configuration error, named. */
static sl_status choose_template_text(llama_engine *e, const sl_llama_params *params)
{
    const char *want = params->chat_template;
    if (!want || !*want) {
        const char *tmpl = llama_model_chat_template(e->model, NULL);
        if (!tmpl)
            sl_log(SL_LOG_WARN, "'%s' has no chat template; using a plain 'User: ... "
                                "Assistant:' prompt (--chat-template NAME chooses one)",
                   params->model_path);
        else if (!template_renders(tmpl))
            sl_log(SL_LOG_WARN, "'%s': llama.cpp does not know this chat template; using a "
                                "plain 'User: ... Assistant:' prompt (--chat-template NAME "
                                "chooses one)", params->model_path);
        else if (!(e->chat_template = sl_strdup(tmpl)))
            return sl_fail(SL_ERR_NOMEM, "out of memory loading '%s'", params->model_path);
        return SL_OK;
    }
    if (strcmp(want, "plain") == 0)
        return SL_OK;
    char names[4096];
    if (is_builtin_template(want)) {
        e->chat_template = sl_strdup(want);
        return e->chat_template ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory");
    }
    /* Read up to one byte past the limit: a model file named by mistake
     * is not read whole. */
    FILE *fp = fopen(want, "rbe");
    if (!fp) {
        int err = errno;
        builtin_template_names(names, sizeof names);
        return sl_fail(SL_ERR_INVALID_ARG, "--chat-template '%s' is neither a template llama.cpp "
                                           "knows by name (plain, %s) nor a file: %s",
                       want, names, strerror(err));
    }
    char *text = sl_malloc(MAX_TEMPLATE_FILE + 2);
    size_t len = text ? fread(text, 1, MAX_TEMPLATE_FILE + 1, fp) : 0;
    bool read_error = ferror(fp);
    fclose(fp);
    if (!text)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", want);
    if (read_error || len > MAX_TEMPLATE_FILE) {
        sl_free(text);
        return sl_fail(SL_ERR_INVALID_ARG, read_error ? "--chat-template '%s': cannot be read"
                                                      : "--chat-template '%s': more than a "
                                                        "template file may hold (1 MiB)", want);
    }
    text[len] = '\0';
    if (strlen(text) != len || !template_renders(text)) {
        sl_free(text);
        builtin_template_names(names, sizeof names);
        return sl_fail(SL_ERR_INVALID_ARG, "--chat-template '%s': llama.cpp does not recognise "
                                           "this template (it runs no Jinja: it matches a "
                                           "template to the formats it implements); name one "
                                           "of those instead: plain, %s", want, names);
    }
    e->chat_template = text;
    return SL_OK;
}

/* choose_template_text, and the template's own system message (e->template_system). */
static sl_status choose_template(llama_engine *e, const sl_llama_params *params)
{
    sl_status st = choose_template_text(e, params);
    if (st == SL_OK && e->chat_template &&
        (e->template_system = template_default_system(e->chat_template)) != NULL)
        sl_log(SL_LOG_INFO, "the chat template's system message where a prompt has none: \"%s\" "
               "(--system replaces it; --chat-template chatml renders without it)",
               e->template_system);
    return st;
}

static sl_status load_adapters(llama_engine *e, const sl_llama_params *p)
{
    for (int i = 0; i < p->n_lora; i++) {
        const sl_llama_lora *a = &p->lora[i];
        sl_status st = check_readable("--lora", a->path);
        if (st != SL_OK)
            return st;
        /* quiet: the failure below says the cause (it was said twice) */
        log_capture cause = {.quiet = true};
        capture = &cause;
        e->lora[i] = llama_adapter_lora_init(e->model, a->path);
        capture = NULL;
        if (!e->lora[i])
            return sl_fail(SL_ERR_MODEL, "--lora '%s': llama.cpp cannot apply it to --model '%s' "
                           "as a LoRA adapter: %s", a->path, p->model_path,
                           cause.len ? cause.text : "see its messages above");
        e->lora_scale[i] = a->scale;
        e->n_lora = i + 1;
        sl_log(SL_LOG_INFO, "LoRA adapter '%s' at scale %g", a->path, (double)a->scale);
    }
    return SL_OK;
}

/* Starts n encoder threads; all but the first load the projector again
 * into their own vision context. On failure the caller frees e, which
 * joins those started. */
static sl_status start_encoders(llama_engine *e, const sl_llama_params *params,
                                struct mtmd_context_params vp, int n)
{
    if (!(e->encoders = sl_calloc((size_t)n, sizeof *e->encoders)))
        return sl_fail(SL_ERR_NOMEM, "out of memory for %d encoder threads", n);
    for (int k = 0; k < n; k++) {
        encoder *enc = &e->encoders[k];
        enc->e = e;
        enc->mtmd = e->mtmd;
        enc->mu = &e->vision_mu;
        if (k > 0) {
            pthread_mutex_init(&enc->own_mu, NULL);
            enc->mu = &enc->own_mu;
            if (!(enc->mtmd = mtmd_init_from_file(params->mmproj_path, e->model, vp))) {
                e->n_encoders = k + 1;
                return sl_fail(SL_ERR_MODEL, "--encoders %d: libmtmd cannot load '%s' again for "
                               "encoder %d (out of memory? see the llama.cpp messages above; give "
                               "fewer --encoders)", n, params->mmproj_path, k + 1);
            }
        }
        e->n_encoders = k + 1;
    }
    for (int k = 0; k < n; k++) {
        if (pthread_create(&e->encoders[k].thread, NULL, encoder_main, &e->encoders[k]) != 0)
            return sl_fail(SL_ERR_NOMEM, "cannot start encoder thread %d for '%s'", k + 1,
                           params->model_path);
        e->encoders[k].started = true;
    }
    if (n > 1)
        sl_log(SL_LOG_INFO, "%d encoder threads, each its own vision context of '%s'", n,
               params->mmproj_path);
    return SL_OK;
}

/* llama.cpp's model loading progress, after each tensor: false cancels the
 * load, once a stop is asked (the first Ctrl-C went unheeded until a large
 * model had loaded). The fault point "engine.load" (tests) slows it. */
static bool load_progress(float progress, void *user)
{
    (void)progress;
    const sl_atomic_int *stop_requests = (const sl_atomic_int *)(uintptr_t)user;
    sl_fault("engine.load", NULL);
    return !(stop_requests && atomic_load(stop_requests) > 0);
}

sl_status sl_engine_open_llama(const sl_llama_params *params, sl_engine **out)
{
    if (!params || !out)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_engine_open_llama: NULL %s",
                       !params ? "params" : "out");
    *out = NULL;
    sl_status st = check_readable("--model", params->model_path);
    /* No projector: a text model for text-only requests. */
    bool vision = params->mmproj_path && *params->mmproj_path;
    if (st == SL_OK && vision)
        st = check_readable("--mmproj", params->mmproj_path);
    if (st == SL_OK)
        st = init_backend();
    if (st != SL_OK)
        return st;
    if (params->n_parallel < 0 || params->n_parallel >= (int)llama_max_parallel_sequences())
        return sl_fail(SL_ERR_INVALID_ARG, "--parallel must be from 1 to %d (or 0: auto), got %d",
                       (int)llama_max_parallel_sequences() - 1, params->n_parallel);
    if ((st = check_kv_type("--cache-type-k", params->cache_type_k)) != SL_OK ||
        (st = check_kv_type("--cache-type-v", params->cache_type_v)) != SL_OK ||
        (st = check_adapters(params)) != SL_OK)
        return st;
    if (params->encoders < 0 || params->encoders > SL_LLAMA_MAX_ENCODERS)
        return sl_fail(SL_ERR_INVALID_ARG, "--encoders must be from 1 to %d (0: one), got %d",
                       SL_LLAMA_MAX_ENCODERS, params->encoders);
    if (params->encoders > 1 && params->encode_ahead == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--encoders %d encode ahead of admission: drop "
                       "--encode-ahead 0, or give --encoders 1", params->encoders);
    /* Encoder threads, each with a vision context: several only when
     * asked (each is another copy of the projector's weights). */
    int n_encoders = !vision ? 0 : params->encoders > 1 ? params->encoders : 1;

    bool on_gpu = uses_gpu(params);

    llama_engine *e = sl_calloc(1, sizeof *e);
    if (!e)
        return sl_fail(SL_ERR_NOMEM, "out of memory loading '%s'", params->model_path);
    pthread_mutex_init(&e->mu, NULL);
    sl_cond_init_monotonic(&e->work_cv);
    sl_cond_init_monotonic(&e->done_cv);
    pthread_cond_init(&e->encoder_cv, NULL);
    pthread_mutex_init(&e->encoding_mu, NULL);
    pthread_cond_init(&e->encoding_cv, NULL);
    pthread_mutex_init(&e->vision_mu, NULL);
    pthread_mutex_init(&e->grammar_mu, NULL);
    e->n_parallel = params->n_parallel; /* 0: chosen once the model is loaded */

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params->n_gpu_layers;
    ggml_backend_dev_t only_device[2] = {NULL, NULL};
    if (params->gpu >= 0) {
        st = find_gpu(params->gpu, &only_device[0]);
        if (st != SL_OK) {
            llama_engine_free(e);
            return st;
        }
        /* The whole model on that one device: replicas on different GPUs
         * never share one. */
        mp.devices = only_device;
        mp.split_mode = LLAMA_SPLIT_MODE_NONE;
        mp.main_gpu = 0;
    }
    mp.progress_callback = load_progress;
    mp.progress_callback_user_data = (void *)(uintptr_t)params->stop_requests;
    e->model = llama_model_load_from_file(params->model_path, mp);
    if (!e->model && params->stop_requests && atomic_load(params->stop_requests) > 0) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_STOPPED, "stopped on request while loading --model '%s'",
                       params->model_path);
    }
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
    if ((st = load_adapters(e, params)) != SL_OK) {
        llama_engine_free(e);
        return st;
    }

    if ((st = choose_template(e, params)) != SL_OK) {
        llama_engine_free(e);
        return st;
    }

    long threads = params->n_threads > 0 ? params->n_threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    struct mtmd_context_params vp = mtmd_context_params_default();
    vp.use_gpu = params->n_gpu_layers != 0;
    vp.device = only_device[0];
    vp.print_timings = false;
    /* The cores the vision encoder computes on, shared by the encoders (on
     * a GPU the CPU does little of it). */
    long vision_threads = n_encoders > 1 ? threads / n_encoders : threads;
    vp.n_threads = vision_threads > 1 ? (int)vision_threads : 1;
    vp.warmup = false;
    int min_tok = params->image_min_tokens, max_tok = params->image_max_tokens;
    /* A job has been told so by sl_caption_check (config check too); this
     * is for a program that opens an engine itself. libmtmd does not say
     * it: a projector that resizes fails to load ("image_max_pixels (7840)
     * is less than image_min_pixels (78400)", which reads as limits outside
     * the model's range, below), one that does not ignores both. */
    if (min_tok > 0 && max_tok > 0 && min_tok > max_tok) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_INVALID_ARG, "--image-min-tokens %d is above --image-max-tokens "
                       "%d: lower the one or raise the other", min_tok, max_tok);
    }
    if (min_tok > 0)
        vp.image_min_tokens = min_tok;
    if (max_tok > 0)
        vp.image_max_tokens = max_tok;
    /* quiet: the failure below says the cause (it was said three times) */
    log_capture vcause = {.quiet = true};
    capture = &vcause;
    e->mtmd = vision ? mtmd_init_from_file(params->mmproj_path, e->model, vp) : NULL;
    capture = NULL;
    if (vision && !e->mtmd) {
        llama_engine_free(e);
        /* A token limit past the projector's own range fails its load
         * ("image_max_pixels (784) is less than image_min_pixels (6272)"
         * for --image-max-tokens 1): the flag is the cause, not the file. */
        const char *why = strstr(vcause.text, "image_m");
        if ((min_tok > 0 || max_tok > 0) && why && strstr(why, "_pixels")) {
            char flags[80];
            snprintf(flags, sizeof flags, min_tok > 0 && max_tok > 0 ? "%s %d, %s %d" : "%s %d",
                     min_tok > 0 ? "--image-min-tokens" : "--image-max-tokens",
                     min_tok > 0 ? min_tok : max_tok, "--image-max-tokens", max_tok);
            return sl_fail(SL_ERR_INVALID_ARG,
                           "%s: outside what --mmproj '%s' takes (llama.cpp: %.*s): give limits "
                           "within the model's own (Qwen2.5-VL's: 8 to 4096 tokens)",
                           flags, params->mmproj_path, (int)strcspn(why, ";"), why);
        }
        return sl_fail(SL_ERR_MODEL,
                       "--mmproj '%s': libmtmd cannot load it as a vision projector for '%s'%s%s",
                       params->mmproj_path, params->model_path,
                       vcause.len ? "; llama.cpp: " : " (see the llama.cpp messages above)",
                       vcause.text);
    }
    if (vision && !mtmd_support_vision(e->mtmd)) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_MODEL, "--mmproj '%s' has no vision encoder", params->mmproj_path);
    }
    if (vision && sl_image_cache_new((size_t)params->image_cache_bytes, &e->image_cache) != SL_OK) {
        llama_engine_free(e);
        return SL_ERR_NOMEM;
    }

    /* Size the context: n_parallel sequences of prompt + image + max_tokens,
     * plus the shared prefix. */
    int train = llama_model_n_ctx_train(e->model);
    int per_seq = params->n_ctx_per_seq;
    /* Taken, as llama.cpp takes it (vLLM refuses it): a model may be used
     * past its training with care. But a request that needs those
     * positions is answered from positions the model never saw, and the
     * answers degrade in silence: say so, in the flag's terms (llama.cpp
     * says "n_ctx_seq (4096) > n_ctx_train (2048)" as each context is
     * made; ggml_to_sl_log keeps that for -v). */
    if (per_seq > 0 && train > 0 && per_seq > train)
        sl_log(SL_LOG_WARN, "--ctx %d is more than the %d positions '%s' was trained for: a "
               "request that takes more than %d positions is answered past the model's "
               "training, and its answers may be nonsense; give --ctx %d or less to keep "
               "within it", per_seq, train, e->model_name, train, train);
    /* With --ctx nothing below is sized from max_tokens, and one that the
     * model's whole context cannot hold (a prompt takes positions too)
     * failed every row alone, each told to lower it. */
    int most_tokens = params->max_tokens_hint;
    const char *most_of = NULL;
    for (int i = 0; i < params->n_prompt_hints; i++)
        if (i == 0 || params->prompt_hints[i].max_tokens > most_tokens) {
            most_tokens = params->prompt_hints[i].max_tokens;
            most_of = params->prompt_hints[i].name;
        }
    if (per_seq > 0 && train > 0 && most_tokens >= train) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_INVALID_ARG,
                       "max_tokens %d%s%.120s%s is not less than the model's context of %d "
                       "positions, which also holds the prompt: every request would fail; "
                       "lower %s", most_tokens, most_of ? " (of " : "", most_of ? most_of : "",
                       most_of ? ")" : "", train, most_of ? "it" : "--max-tokens");
    }
    /* The probe runs with --ctx too when there is a projector: it is the
     * check that the projector goes with the model (foreign_token), made
     * here once rather than failing every row. */
    int probe = 0;
    sl_status pst = SL_OK;
    sl_llama_params sized = *params; /* with the prompt_hints' one that needs most */
    int64_t most = -1;
    int n_hints = params->n_prompt_hints > 0 ? params->n_prompt_hints : 1;
    const char *sys_name = NULL; /* the sized one's own system prompt, named */
    for (int i = 0; (per_seq <= 0 || vision) && pst == SL_OK && i < n_hints; i++) {
        sl_llama_params one = *params;
        const char *own_sys = NULL;
        if (params->n_prompt_hints > 0) {
            const sl_llama_prompt_hint *h = &params->prompt_hints[i];
            one.prompt_hint = h->prompt;
            one.prompt_hint_name = h->name;
            one.max_tokens_hint = h->max_tokens;
            if (h->system) {
                one.prefix_system_prompt = h->system;
                own_sys = h->system_name;
            }
        }
        int cells = -1;
        pst = probe_cells(e, &one, one.prefix_system_prompt, probe_prompt(&one), &cells);
        if (pst != SL_OK || (int64_t)cells + one.max_tokens_hint > most) {
            sys_name = own_sys;
            sized = one;
            probe = cells;
            most = (int64_t)cells + one.max_tokens_hint;
        }
    }
    params = &sized;
    if (pst != SL_OK) {
        char cause[512]; /* past "(sizing probe): " */
        const char *last = sl_last_error();
        snprintf(cause, sizeof cause, "%s", strncmp(last, "(sizing probe): ", 16) ? last : last + 16);
        llama_engine_free(e);
        if (pst == SL_ERR_MODEL) /* foreign_token: the projector is another model's */
            return sl_fail(SL_ERR_INVALID_ARG, "--mmproj '%s' does not go with --model '%s': %s",
                           params->mmproj_path, params->model_path, cause);
        /* render_prompt: the system prompt's own fault, or the prompt's
         * (then named as the caller names it) */
        if (pst == SL_ERR_INVALID_ARG && params->prompt_hint_name &&
            strncmp(cause, "the prompt ", 11) == 0)
            return sl_fail(pst, "%s%s", params->prompt_hint_name, cause + 10);
        if (pst == SL_ERR_INVALID_ARG)
            return sl_fail(pst, "%s", cause);
        return sl_fail(pst, "--model '%s': cannot tokenize a test prompt%s: %s",
                       params->model_path, vision ? " with an image" : "", cause);
    }
    if (per_seq <= 0) {
        /* In 64 bits: the hint may be anything up to INT_MAX. */
        int64_t need = (int64_t)probe + params->max_tokens_hint + 64; /* room for longer prompts */
        /* Text only: the positions an image would take go to longer
         * prompts instead (a text request is often a whole conversation),
         * as far as the model's context allows. */
        if (!vision)
            need += TEXT_ONLY_ROOM;
        if (!vision && train > 0 && need > train && need - TEXT_ONLY_ROOM <= train)
            need = train;
        if ((train > 0 && need > train) || need > (1 << 24)) {
            /* A long system prompt is in every request: say so, rather than
             * pointing only at the max_tokens and image that are not the
             * cause (a 15,000-token --system was told to lower those). */
            const char *sys = params->prefix_system_prompt;
            int bare = probe;
            if (sys && sys[0] && probe_cells(e, params, NULL, probe_prompt(params), &bare) != SL_OK)
                bare = probe;
            /* The caller's prompt likewise (a --prompt of 3,000 tokens
             * failed every row, each told to lower its max_tokens), when
             * shortening it could make the request fit. */
            int no_prompt = probe;
            const char *hint = params->prompt_hint;
            if (hint && hint[0] && probe_cells(e, params, sys, "", &no_prompt) != SL_OK)
                no_prompt = probe;
            int64_t asked = vision ? need : need - TEXT_ONLY_ROOM;
            bool long_prompt = probe - no_prompt > 0 && asked - (probe - no_prompt) <= train;
            const char *prompt_name =
                params->prompt_hint_name ? params->prompt_hint_name : "the prompt";
            char parts[320] = "", shorten[320] = "";
            int np = 0, ns = 0;
            if (bare >= 0 && probe - bare > 0) {
                np = snprintf(parts, sizeof parts, ", of which %.120s takes %d",
                              sys_name ? sys_name : "the system prompt", probe - bare);
                ns = snprintf(shorten, sizeof shorten, "shorten %.120s, ",
                              sys_name ? sys_name : "the system prompt (--system)");
            }
            if (long_prompt) {
                snprintf(parts + np, sizeof parts - (size_t)np, "%s%.160s takes %d",
                         np ? " and " : ", of which ", prompt_name, probe - no_prompt);
                snprintf(shorten + ns, sizeof shorten - (size_t)ns, "shorten %.160s, ",
                         prompt_name);
            }
            llama_engine_free(e);
            if (!vision)
                return sl_fail(SL_ERR_INVALID_ARG,
                               "each sequence needs %lld positions (prompt: %d%s, max_tokens: "
                               "%d), more than the model's context of %d: %slower --max-tokens",
                               (long long)asked, probe, parts,
                               params->max_tokens_hint, train, shorten);
            /* --image-min-tokens enlarges every image: 100000 of them was
             * told to lower only --max-tokens or --max-image-edge. */
            return sl_fail(SL_ERR_INVALID_ARG,
                           "each sequence needs %lld positions (prompt and a %d px image: %d%s, "
                           "max_tokens: %d), more than the model's context of %d: %slower "
                           "--max-tokens%s",
                           (long long)asked, params->image_edge_hint, probe, parts,
                           params->max_tokens_hint, train, shorten,
                           params->image_min_tokens > 0
                               ? ", --max-image-edge or --image-min-tokens"
                               : " or --max-image-edge");
        }
        per_seq = (int)need;
    }
    e->type_k = params->cache_type_k;
    e->type_v = params->cache_type_v;
    if (e->n_parallel == 0)
        e->n_parallel = on_gpu ? auto_parallel(e, only_device[0], per_seq) : 4;
    if (per_seq > (1 << 24) || (int64_t)per_seq * (e->n_parallel + 1) > UINT32_MAX / 2) {
        int n_seq = e->n_parallel + 1;
        llama_engine_free(e);
        return sl_fail(SL_ERR_INVALID_ARG,
                       "a context of %d positions per sequence x %d sequences is too large: "
                       "lower --ctx or --parallel", per_seq, n_seq);
    }
    /* llama.cpp pads the context to 256 cells and splits it evenly between
     * streams: keep each stream a multiple of 256 so nothing is lost. */
    per_seq = (per_seq + 255) / 256 * 256;
    e->n_ctx_seq = per_seq;
    /* On a GPU a bigger logical batch packs more newcomer images and prompt
     * text into a decode (llama.cpp splits it into ubatches of 512, as
     * llama-server does); on a CPU the cores are full at 512. */
    e->n_batch = params->n_batch > 0 ? params->n_batch : on_gpu ? 2048 : 512;
    /* n_ctx is split evenly between the n_parallel + 1 streams. */
    long n_ctx = (long)per_seq * (e->n_parallel + 1);
    /* On a CPU the KV cache is host memory, allocated and cleared whole as
     * the context is made: --ctx 100000 --parallel 200 (20 GiB of the tiny
     * model's cache on a 23 GiB machine) took every page for minutes where
     * it should have stopped. Three quarters of the memory at most, as
     * --parallel auto takes of a GPU's (there llama.cpp's allocation fails
     * and says so). */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    uint64_t kv = kv_bytes_per_pos(e->model, e->type_k, e->type_v) * (uint64_t)n_ctx;
    if (!on_gpu && ram > 0 && kv > ram / 4 * 3) {
        int n_seq = e->n_parallel + 1;
        llama_engine_free(e);
        return sl_fail(SL_ERR_INVALID_ARG,
                       "the KV cache of %d positions per sequence x %d sequences would take "
                       "%.1f GiB, more than three quarters of this machine's %.1f GiB of "
                       "memory: lower --ctx or --parallel",
                       per_seq, n_seq, kv / 1073741824.0, ram / 1073741824.0);
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)e->n_batch;
    cp.n_ubatch = (uint32_t)(e->n_batch < 512 || !on_gpu ? e->n_batch : 512);
    /* Flash attention stays llama.cpp's AUTO: on wherever the backend has
     * the kernels (CUDA does), off where it would fall back; but a
     * quantized V cache is read only by the flash-attention kernels, so
     * there it is on (llama.cpp would turn it on itself, saying so in its
     * log; here the choice is ours and documented). */
    cp.type_k = KV_TYPES[e->type_k].type;
    cp.type_v = KV_TYPES[e->type_v].type;
    if (ggml_is_quantized(cp.type_v))
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.n_seq_max = (uint32_t)e->n_parallel + 1; /* + the shared-prefix sequence */
    cp.kv_unified = false; /* one stream per sequence: see admit() */
    cp.n_threads = (int32_t)threads;
    cp.n_threads_batch = (int32_t)threads;
    cp.no_perf = true;
    e->sampler = choose_sampler(params, on_gpu);
    e->device_all = params->sampler == SL_SAMPLER_DEVICE;
    struct llama_sampler_seq_config *seq_samplers = NULL;
    if (e->sampler == SL_SAMPLER_DEVICE) {
        /* A greedy chain on every sequence from the start, so the graph is
         * reserved with them once rather than at each first admission. */
        e->attached = sl_calloc((size_t)e->n_parallel, sizeof *e->attached);
        e->attached_greedy = sl_calloc((size_t)e->n_parallel, sizeof *e->attached_greedy);
        seq_samplers = sl_calloc((size_t)e->n_parallel, sizeof *seq_samplers);
        if (!e->attached || !e->attached_greedy || !seq_samplers) {
            sl_free(seq_samplers);
            llama_engine_free(e);
            return sl_fail(SL_ERR_NOMEM, "out of memory loading '%s'", params->model_path);
        }
        for (int i = 0; i < e->n_parallel; i++) {
            struct llama_sampler *chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
            llama_sampler_chain_add(chain, llama_sampler_init_greedy());
            e->attached[i] = chain;
            e->attached_greedy[i] = true;
            seq_samplers[i] = (struct llama_sampler_seq_config){.seq_id = i, .sampler = chain};
        }
        cp.samplers = seq_samplers;
        cp.n_samplers = (size_t)e->n_parallel;
    }
    log_capture cause = {0};
    capture = &cause;
    e->ctx = llama_init_from_model(e->model, cp);
    capture = NULL;
    sl_free(seq_samplers);
    if (!e->ctx) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_MODEL,
                       "cannot create a context of %ld tokens (%d sequences x %d positions, KV "
                       "cache K %s, V %s) for '%s': lower --parallel or --max-tokens%s%s",
                       n_ctx, e->n_parallel + 1, per_seq, KV_TYPES[params->cache_type_k].name,
                       KV_TYPES[params->cache_type_v].name, params->model_path,
                       cause.len ? "; llama.cpp: " : "", cause.text);
    }
    set_adapters(e);
    sl_log(SL_LOG_INFO, "KV cache: %u positions (%d sequences x %d), K %s, V %s: %.2f MiB",
           llama_n_ctx(e->ctx), e->n_parallel + 1, per_seq, KV_TYPES[e->type_k].name,
           KV_TYPES[e->type_v].name,
           (double)kv_bytes_per_pos(e->model, e->type_k, e->type_v) * llama_n_ctx(e->ctx) /
               1048576.0);
    /* llama.cpp's own threadpool spins between graph ops; on a machine
     * whose cores are shared (decode workers, other replicas, other jobs)
     * spinning threads starve each other. */
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default((int)threads);
    tpp.poll = (uint32_t)(params->cpu_poll < 0 ? 0 : params->cpu_poll > 100 ? 100 : params->cpu_poll);
    e->threadpool = ggml_threadpool_new(&tpp);
    if (e->threadpool)
        llama_attach_threadpool(e->ctx, e->threadpool, e->threadpool);
    /* Read the effective sizes back: llama.cpp may round them. */
    e->n_ctx = (int)llama_n_ctx(e->ctx);
    e->n_batch = (int)llama_n_batch(e->ctx);
    if (e->n_ctx_seq > (int)llama_n_ctx_seq(e->ctx))
        e->n_ctx_seq = (int)llama_n_ctx_seq(e->ctx);
    /* What grow_context makes a new context with (less the device
     * chains: it makes fresh ones), and how far: the model's context,
     * within the bounds checked above. */
    e->cparams = cp;
    e->cparams.samplers = NULL;
    e->cparams.n_samplers = 0;
    e->ctx_fixed = params->n_ctx_per_seq > 0;
    int64_t grow_max = (int64_t)(UINT32_MAX / 2) / (e->n_parallel + 1) / 256 * 256;
    grow_max = grow_max < train ? grow_max : train;
    grow_max = grow_max < (1 << 24) ? grow_max : (1 << 24);
    e->max_ctx_seq = !e->ctx_fixed && grow_max > e->n_ctx_seq ? (int)grow_max : e->n_ctx_seq;

    e->batch = llama_batch_init(e->n_batch, 0, 1);
    e->n_embd_inp = llama_model_n_embd_inp(e->model);
    e->mrope = e->mtmd && mtmd_decode_use_mrope(e->mtmd);
    if (e->mtmd && !e->mrope) /* images only */
        e->ebatch = llama_batch_init(e->n_batch, e->n_embd_inp, 1);
    e->slots = sl_calloc((size_t)e->n_parallel, sizeof *e->slots);
    e->prefix_cache = params->prefix_cache == SL_PREFIX_CACHE_ON;
    /* A sliding window forgets a sequence's oldest cells, a recurrent state
     * cannot be cut back: what they keep is not a prompt's head. */
    e->keep_kv = e->prefix_cache && llama_model_n_swa(e->model) == 0 &&
                 !llama_model_is_recurrent(e->model) && !llama_model_is_hybrid(e->model);
    e->to_sample = sl_calloc((size_t)e->n_parallel, sizeof *e->to_sample);
    e->n_vocab = llama_vocab_n_tokens(e->vocab);
    e->on_phase = params->on_phase;
    e->on_phase_user = params->on_phase_user;
    int n_sample = params->sample_threads > 0 ? params->sample_threads : (int)threads;
    if (n_sample > SAMPLE_THREADS_MAX)
        n_sample = SAMPLE_THREADS_MAX;
    if (n_sample > e->n_parallel)
        n_sample = e->n_parallel;
    if (e->sampler == SL_SAMPLER_REFERENCE)
        n_sample = 1;
#ifndef _OPENMP
    n_sample = 1; /* sample_all samples on the engine thread alone: one candidate buffer */
#endif
    bool cand_ok = true;
    for (int i = 0; i < n_sample && cand_ok; i++)
        cand_ok = (e->cand[i] = sl_malloc(SL_LLAMA_CAND_BYTES(e->n_vocab))) != NULL;
    if (!e->slots || !e->batch.token || !e->to_sample || !cand_ok) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_NOMEM, "out of memory loading '%s'", params->model_path);
    }
    for (int i = 0; i < e->n_parallel; i++)
        e->slots[i] = (slot){.seq = i, .logits_idx = -1};
    e->n_sample = n_sample;
    e->sample_always = params->sample_threads > 1;
    /* Nothing to encode ahead without a projector; several encoders
     * encode ahead on a CPU too. */
    e->encode_ahead = !e->mtmd                  ? 0
                      : params->encode_ahead >= 0 ? params->encode_ahead
                      : on_gpu || n_encoders > 1 ? (e->n_parallel < 32 ? e->n_parallel : 32)
                                         : 0;
    if (e->encode_ahead > 0 && (st = start_encoders(e, params, vp, n_encoders)) != SL_OK) {
        llama_engine_free(e);
        return st;
    }
    if (pthread_create(&e->thread, NULL, replica_main, e) != 0) {
        llama_engine_free(e);
        return sl_fail(SL_ERR_NOMEM, "cannot start the engine thread for '%s'", params->model_path);
    }
    e->thread_started = true;
    return sl_engine_wrap(&llama_ops, e, out);
}
