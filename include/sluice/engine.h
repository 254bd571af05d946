/* sluice/engine.h — inference engines: requests in, generated text out.
 *
 * An engine turns a request (prompt text, an optional image, sampling
 * settings) into a result (text, finish reason, token counts, timings).
 * Two engines: "llama", llama.cpp in-process (libllama + libmtmd), running
 * continuous batching on its own thread; and "openai", HTTP clients of
 * OpenAI-compatible servers (vLLM, SGLang, llama-server) on one libcurl
 * event-loop thread, with retries and endpoint failover.
 *
 * Asynchronous use: sl_engine_submit() queues a request (its strings are
 * copied; its image must stay alive until the completion comes back);
 * sl_engine_poll() returns completions in any order. Submit and poll may be
 * called from different threads. sl_engine_generate() is submit + wait for
 * callers that want one result at a time. Result strings are freed with
 * sl_result_clear() / sl_completion_clear(); sl_engine_free() frees the
 * engine after stopping its thread (requests still queued are dropped).
 */
#ifndef SLUICE_ENGINE_H
#define SLUICE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "executor.h"
#include "image.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_engine sl_engine;

typedef struct sl_sampling {
    float temperature;    /* 0: greedy */
    float top_p;          /* 1: off */
    float min_p;          /* 0: off */
    float repeat_penalty; /* 1: off */
    /* OpenAI's and vLLM's (-2..2; 0: off): a token's logit is lowered by
     * presence_penalty once it is in the answer, and by frequency_penalty
     * times its count there (the answer's last SL_PENALTY_WINDOW tokens,
     * on the llama engine). */
    float presence_penalty;
    float frequency_penalty;
    int top_k;            /* 0: off */
    int max_tokens;       /* generated tokens at most */
    uint64_t seed;        /* used when temperature > 0 */
    /* Log-probabilities of the answer's tokens (sl_result.logprobs): each
     * generated token's, and with top_logprobs the N most likely tokens at
     * its place (0..SL_MAX_TOP_LOGPROBS). Of the model's own distribution
     * (the log-softmax of its logits: before temperature, penalties,
     * top-k/p or a grammar), as vLLM and llama-server report them. On the
     * llama engine such a row is sampled on the host (its logits are read
     * back); the openai engine asks the server for them. */
    bool logprobs;
    int top_logprobs;
    /* Answers to the request (0 or 1: one). N > 1 (at most SL_MAX_ANSWERS):
     * N answers, the k-th sampled with sl_sampling_answer_seed(seed, k)
     * (the first with seed itself: it is the answer N = 1 gives), back in
     * sl_completion.results in order; greedy answers are all the same.
     * The llama engine computes the prompt and its images once and copies
     * them into the other answers' sequences (as for tasks). The openai
     * engine sends one request with "n": N and the row's seed (the server
     * draws the answers from it: llama-server with seed + k, so its answer
     * 0 is N = 1's), not streamed; or, with split_samples, N
     * requests, each with its answer's seed. With choices it asks once and
     * draws each answer with its seed. A whole request body (openai_body)
     * sends its own "n". With tasks: every task answered N times (a
     * task's own n stays 0 or 1). */
    int n;
} sl_sampling;

#define SL_MAX_TOP_LOGPROBS 20
#define SL_MAX_ANSWERS 16
#define SL_MAX_CHOICES 64

sl_sampling sl_sampling_default(void);

/* The answer's tokens the llama engine's presence and frequency penalties
 * count: its last 4096 (a ring of them per row; vLLM counts the whole). */
#define SL_PENALTY_WINDOW 4096

/* Whether s moves logits by what the answer holds (a repeat, presence or
 * frequency penalty): no greedy shortcut, no cut of the candidates. */
bool sl_sampling_penalizes(const sl_sampling *s);

/* The seed a row gets: a stable mix of the job seed and the row id, so a
 * rerun reproduces each row whatever order rows run in. */
uint64_t sl_sampling_row_seed(uint64_t job_seed, const char *row_id);

/* The seed of answer k of a request with sampling.n answers: seed itself
 * for k = 0, a stable mix of seed and k for the others. */
uint64_t sl_sampling_answer_seed(uint64_t seed, int k);

/* Where the llama engine chooses each next token. */
typedef enum sl_llama_sampler {
    SL_SAMPLER_AUTO,      /* device when the model's output layer is on a GPU, else host */
    SL_SAMPLER_HOST,      /* on the CPU: greedy is an argmax over the logits; other
                             settings run llama.cpp's samplers; spread over threads */
    SL_SAMPLER_DEVICE,    /* in the graph (llama.cpp's backend sampling): only token ids
                             come back; rows whose settings it cannot run use the host */
    SL_SAMPLER_REFERENCE, /* llama.cpp's sampler chain, one sequence after another on
                             the engine thread: the baseline the others are measured
                             and tested against */
} sl_llama_sampler;

/* The llama engine's prefix cache (--prefix-cache). */
typedef enum sl_prefix_cache {
    SL_PREFIX_CACHE_ON,   /* a prompt head shared by every row is computed once, and a
                             free sequence keeps its last request's KV: a newcomer that
                             begins the same way (the next turn of a conversation, another
                             question about the same picture) goes on from where they
                             part (not with sliding-window or recurrent models) */
    SL_PREFIX_CACHE_OFF,  /* every prompt is computed whole (a request's tasks and
                             answers still share their image's positions) */
} sl_prefix_cache;

/* Where the llama engine's loop spends its time: the first group is timed
 * once per step of the loop, the second once per image. */
typedef enum sl_engine_phase {
    SL_PHASE_ADMIT,         /* step: requests into free sequences, shared-prefix copies */
    SL_PHASE_BATCH,         /* step: building the token batch */
    SL_PHASE_DECODE,        /* step: llama_decode of the tokens, until its results are ready */
    SL_PHASE_LOGITS,        /* step: reaching this step's logits (or sampled tokens) */
    SL_PHASE_SAMPLE,        /* step: choosing each sequence's next token */
    SL_PHASE_DETOKENIZE,    /* step: tokens to text, stop strings */
    SL_PHASE_BOOKKEEPING,   /* step: finished requests handed back, counters published */
    SL_PHASE_PREPROCESS,    /* image: chat template, tokenizer and vision preprocessor */
    SL_PHASE_ENCODE,        /* image: the vision encoder (a batch's time split evenly) */
    SL_PHASE_IMAGE_PREFILL, /* image: its embeddings decoded into its sequence */
    SL_PHASE_COUNT
} sl_engine_phase;

#define SL_PHASE_FIRST_IMAGE SL_PHASE_PREPROCESS

/* "admit", "batch", "decode", ... (static strings; the metrics' label). */
const char *sl_engine_phase_name(sl_engine_phase phase);

/* Called for every phase timed, on the engine thread, and for the image
 * phases (preprocess, encode) on the encoder thread too (encode-ahead);
 * must be quick and thread-safe (several replicas call it). */
typedef void (*sl_engine_phase_fn)(void *user, sl_engine_phase phase, double seconds);

/* The type of each KV cache cell's K or V (llama.cpp's ggml types that it
 * accepts for a cache, as llama-server's --cache-type-k/-v). A quantized
 * type holds more positions in the same memory (q8_0: 34 bytes per 32
 * values against f16's 64, ~1.9x the cells) at some cost in accuracy. */
typedef enum sl_kv_type {
    SL_KV_F16,    /* the default */
    SL_KV_F32,
    SL_KV_BF16,
    SL_KV_Q8_0,
    SL_KV_Q4_0,
    SL_KV_Q4_1,
    SL_KV_Q5_0,
    SL_KV_Q5_1,
    SL_KV_IQ4_NL,
    SL_KV_TYPE_COUNT
} sl_kv_type;

/* "f16", "q8_0", ... (static strings; NULL past the end): the names the
 * command line and job files take. */
const char *sl_kv_type_name(sl_kv_type type);

/* A LoRA adapter applied over the language model (a GGUF that llama.cpp's
 * convert_lora_to_gguf.py writes, made for this model), with its scale:
 * each adapted matrix W becomes W + scale * (alpha / rank) * B A. */
typedef struct sl_llama_lora {
    const char *path;
    float scale;              /* 1: as trained; 0: loaded but not applied */
} sl_llama_lora;

/* Adapters per engine at most. */
#define SL_LLAMA_MAX_LORA 8
#define SL_LLAMA_MAX_ENCODERS 16

/* One prompt sent as it is with its own max_tokens (a job's task), for
 * sizing: sl_llama_params.prompt_hints. */
typedef struct sl_llama_prompt_hint {
    const char *prompt;       /* NULL: a one-sentence caption request (a row's own) */
    const char *name;         /* what messages call it ("the prompt of task 'x'") */
    int max_tokens;
    const char *system;       /* its own system prompt; NULL: prefix_system_prompt */
    const char *system_name;  /* and what messages call that ("the system prompt of task 'x'") */
} sl_llama_prompt_hint;

typedef struct sl_llama_params {
    const char *model_path;   /* language model GGUF (required) */
    const char *mmproj_path;  /* vision projector GGUF (required for images) */
    int n_parallel;           /* sequences decoded together (continuous batching); 0:
                                 auto, 4 on a CPU, on a GPU what its free memory holds
                                 (at most 128) */
    int n_ctx_per_seq;        /* context per sequence, fixed; 0: prompt + image +
                                 max_tokens, grown for a request that needs more */
    int max_tokens_hint;      /* for sizing: the longest generation expected */
    int image_edge_hint;      /* for sizing: the largest image edge sent (px) */
    int n_batch;              /* tokens per llama_decode; 0: 512 on a CPU, 2048 on a GPU
                                 (in ubatches of 512) */
    int n_threads;            /* 0: all cores */
    int n_gpu_layers;         /* -1: all that fit (GPU builds); 0: CPU */
    int gpu;                  /* -1: the devices llama.cpp picks; N: only GPU N (0-based
                                 among the GPU devices), model and vision encoder both */
    const char *prefix_system_prompt; /* sizing probe and shared-prefix warm-up */
    int cpu_poll;             /* CPU threads spin between ops: 0 (sleep) .. 100 (spin);
                                 spinning is faster on idle cores, ruinous on busy ones */
    sl_llama_sampler sampler; /* default SL_SAMPLER_AUTO */
    int sample_threads;       /* host sampling threads, the engine's own included;
                                 0: from n_threads, at most 8 */
    int encode_ahead;         /* requests tokenized and encoded by a second thread while
                                 the engine decodes, ahead of admission: -1 auto (on a
                                 GPU min(n_parallel, 32); on a CPU 0, its cores are
                                 decoding), 0 off */
    int encoders;             /* encoder threads encoding ahead (up to
                                 SL_LLAMA_MAX_ENCODERS), each but the first with
                                 its own copy of the projector, so that encodes
                                 overlap: 0 or 1, one; more need encode_ahead
                                 (auto: min(n_parallel, 32) then, on a CPU too) */
    sl_prefix_cache prefix_cache; /* default SL_PREFIX_CACHE_ON */
    uint64_t image_cache_bytes; /* the vision encoder's outputs kept for images seen again
                                 (several rows or questions of one image): default
                                 256 MiB; 0 encodes every image */
    int image_min_tokens;     /* tokens an image gives, at least and at most, where the */
    int image_max_tokens;     /* projector resizes to any size (Qwen2-VL, Qwen2.5-VL,
                                 ...): libmtmd's image_min/max_tokens; 0: the model's
                                 (Qwen2.5-VL: 8 and 4096) */
    sl_engine_phase_fn on_phase; /* optional: each phase's time as it is measured */
    void *on_phase_user;
    /* LoRA adapters (n_lora up to SL_LLAMA_MAX_LORA; the array and its
     * paths are read at open only, not kept): loaded onto the model at
     * open and set on every context the engine makes, including one made
     * again for a longer request. */
    const sl_llama_lora *lora;
    int n_lora;
    sl_kv_type cache_type_k;  /* KV cache types (default SL_KV_F16); a quantized V */
    sl_kv_type cache_type_v;  /* turns flash attention on (llama.cpp needs it there) */
    /* The chat template prompts are rendered with (docs/engine.md): NULL
     * the model's own; "plain" (User: ... Assistant:); a name llama.cpp
     * knows (chatml, llama3, gemma, smolvlm, ...: llama_chat_builtin_templates);
     * or a file holding a template llama.cpp recognises (read at open). */
    const char *chat_template;
    /* For sizing, as max_tokens_hint: the longest prompt sent as it is with
     * every image (a job's own, or a task's; NULL: a one-sentence caption
     * request), and what messages call it ("the prompt (--prompt)", "the
     * prompt of task 'x'"; NULL: "the prompt"). Read at open only. One that cannot fit the model's
     * context with an image and max_tokens_hint fails the open
     * (SL_ERR_INVALID_ARG) naming it and its tokens, rather than every
     * request that sends it. */
    const char *prompt_hint;
    const char *prompt_hint_name;
    /* Several prompts, each sent with its own max_tokens in a sequence of
     * its own (a job's tasks): each is sized on its own, and the one that
     * needs most positions takes the place of prompt_hint and
     * max_tokens_hint (the longest prompt with the largest max_tokens of
     * two tasks refused a job whose tasks each fit). NULL: those two. */
    const sl_llama_prompt_hint *prompt_hints;
    int n_prompt_hints;
    const sl_atomic_int *stop_requests; /* optional: above 0 cancels loading the model
                                  (SL_ERR_STOPPED; a large one over a network file
                                  system takes minutes); read, never written */
} sl_llama_params;

sl_llama_params sl_llama_default_params(void);

/* Start llama.cpp's backends, once per process; every function below that
 * needs them does it too. ggml's CPU backend writes KMP_BLOCKTIME into the
 * environment as it starts (when unset), and setenv may free the array a
 * getenv on another thread is reading: a program that opens engines on
 * threads while others read the environment calls this before starting
 * them. sl_pipeline_run does. */
void sl_llama_init(void);

/* Whether this CPU can run the llama.cpp sluice was built with: one built
 * for its build machine's CPU (GGML_NATIVE, scripts/llama-cpp.sh's CPU
 * build) may use SIMD extensions (AVX-512, ...) another CPU lacks, and
 * would die of SIGILL there. SL_OK, or SL_ERR_MODEL naming the extensions
 * missing and what to do; sl_llama_init does nothing then, and every
 * function that loads a model returns this. Reads /proc/cpuinfo once. */
sl_status sl_llama_cpu_check(void);

/* Which llama.cpp the engine runs, for a dataset's reader: how it was built
 * (scripts/llama-cpp.sh's stamp, "llama-cpp-python 0.3.36 (cpu)", or "llama.cpp
 * at PREFIX" for one it did not build) and the ggml library loaded:
 * "llama-cpp-python 0.3.36 (cpu), ggml 0.25.3". A static string, never NULL;
 * loads nothing. */
const char *sl_llama_version(void);

/* The sequences a replica opened with these params will decode together
 * at most (n_parallel, or what 0 becomes: 4 on a CPU, up to 128 on a GPU),
 * without loading anything: for sizing the rows kept in flight for it.
 * On a CPU sl_llama_cpu_check refuses, no GPU is looked for (that starts
 * llama.cpp's CPU backend). */
int sl_llama_default_parallel(const sl_llama_params *params);

/* Bytes of KV cache one position of a sequence takes with the params'
 * cache types (K and V of every layer), read from the model's header
 * (params->model_path; its weights are not loaded): what --parallel auto
 * divides a GPU's free memory by. SL_ERR_MODEL naming the file when
 * llama.cpp cannot read it. */
sl_status sl_llama_kv_bytes_per_position(const sl_llama_params *params, uint64_t *out);

/* What --parallel auto (n_parallel 0) makes on a GPU with free_bytes free,
 * for sequences of per_seq positions: as many as three quarters of the
 * memory holds in KV cache of the params' types, from 1 to 128. For
 * planning a job on a card without it; the model's header is read as
 * above. */
sl_status sl_llama_parallel_for_memory(const sl_llama_params *params, uint64_t free_bytes,
                                       int per_seq, int *out);

/* Load the model, projector and LoRA adapters. Fails fast, naming the file
 * and the cause, when a path is missing or llama.cpp cannot load it
 * (SL_ERR_NOT_FOUND, SL_ERR_MODEL: an adapter that is not a LoRA GGUF or
 * was made for another model), and on a bad parameter (SL_ERR_INVALID_ARG:
 * more than SL_LLAMA_MAX_LORA adapters, a scale that is not finite, a
 * cache type that is not one of sl_kv_type or that does not divide the
 * model's attention heads). */
sl_status sl_engine_open_llama(const sl_llama_params *params, sl_engine **out);

/* The "openai" engine: POST /v1/chat/completions to any number of
 * OpenAI-compatible servers. Each request goes to the endpoint with the
 * fewest outstanding requests below its limit. Connection failures,
 * timeouts, 408, 409, 429 and 5xx are retried with exponential backoff and
 * full jitter (at least the server's Retry-After, if under
 * `retry_after_max_s`); other answers fail the request with the server's
 * message, and so does an answer longer than max_tokens can explain. An
 * endpoint with `endpoint_failures` faults in a row leaves the rotation for
 * `cooldown_s`; once every endpoint has been failing for `all_down_s` (out
 * of rotation, or no request answered, only 429s, 5xx, ...), waiting
 * requests fail and poll() returns SL_ERR_IO (the job stops). */
/* The body field that carries sl_sampling.max_tokens. OpenAI deprecates
 * "max_tokens" for "max_completion_tokens" and its reasoning models refuse
 * it; vLLM and llama-server read either (the new one first); an older
 * llama-server, SGLang's older releases and strict gateways know only
 * "max_tokens". BOTH sends the two with the same value, for a fleet of old
 * and new servers. */
typedef enum sl_openai_max_tokens_field {
    SL_OPENAI_MAX_TOKENS = 0,
    SL_OPENAI_MAX_COMPLETION_TOKENS,
    SL_OPENAI_MAX_TOKENS_BOTH,
} sl_openai_max_tokens_field;

typedef struct sl_openai_params {
    const char *const *endpoints; /* base URLs, e.g. "http://10.0.0.7:8000" (a trailing
                                     "/v1" is accepted) */
    int n_endpoints;
    const char *served_model;  /* the request's "model"; NULL: the first of GET /v1/models */
    const char *api_key_env;   /* NAME of the environment variable holding the key (sent as
                                  a Bearer token, never logged); NULL: no key */
    const char *api_key_header; /* the header that carries the key bare (Azure's "api-key");
                                   NULL: "Authorization: Bearer KEY" */
    const char *const *headers; /* "Name: value" sent with every request (borrowed until
                                   open returns: the engine copies them) */
    int n_headers;
    int max_in_flight;         /* per endpoint (default 8); adaptive: the starting value */
    bool adaptive;             /* move each limit with measured throughput and latency */
    int adaptive_max_in_flight; /* adaptive: the ceiling per endpoint (default 64) */
    double request_timeout_s;  /* per attempt (default 600) */
    double connect_timeout_s;  /* default 10 */
    int max_attempts;          /* per request, the first included (default 8) */
    double backoff_base_s;     /* first retry waits up to this (default 0.5) ... */
    double backoff_max_s;      /* ... doubling up to this (default 30) */
    int endpoint_failures;     /* faults in a row that take an endpoint out (default 3) */
    double cooldown_s;         /* out of rotation this long (default 15) */
    double all_down_s;         /* every endpoint failing this long: give up (default 120) */
    const char *response_format; /* JSON text sent as "response_format"; NULL: none */
    bool check_endpoints;      /* at open, GET /v1/models on each (default true) */
    bool stream;               /* ask for server-sent events: time to first token and
                                  between tokens become measurable (default false) */
    double retry_after_max_s;  /* a Retry-After up to this is obeyed; a longer one is
                                  not (the backoff alone) (default 60) */
    bool split_samples;        /* sampling.n > 1: one request per answer, each with its
                                  answer's seed, for servers that ignore "n" (default
                                  false: one request with "n"; see oa_submit) */
    sl_openai_max_tokens_field max_tokens_field; /* the field that carries max_tokens
                                  (default SL_OPENAI_MAX_TOKENS) */
    const sl_atomic_int *stop_requests; /* optional: above 0 ends the wait for a loading
                                  endpoint at open (SL_ERR_STOPPED); read, never written */
} sl_openai_params;

sl_openai_params sl_openai_default_params(void);

/* Checks the endpoints (unless check_endpoints is false): those that do not
 * answer, or answer 5xx (a model loading), start out of rotation; while
 * every one is loading, it waits (asking each second) up to all_down_s,
 * then SL_ERR_IO; SL_ERR_STOPPED once stop_requests is above 0. SL_ERR_INVALID_ARG naming each endpoint and its error
 * when none answers, when each that answers has no model listing (404:
 * not a base URL), when served_model is not in a listing, or a bad
 * parameter, or the key's variable is unset or holds a control character. */
sl_status sl_engine_open_openai(const sl_openai_params *params, sl_engine **out);

/* What sl_engine_open_openai() checks of its parameters before it asks any
 * server (the endpoints' URLs, the headers, the limits), so a caller can
 * refuse them before it starts: SL_OK, or SL_ERR_INVALID_ARG with the
 * message the open would give. */
sl_status sl_openai_check_params(const sl_openai_params *params);

/* One of several tasks asked of the same image (sl_request.tasks). */
typedef struct sl_task {
    const char *name;          /* names the task in error messages */
    const char *system_prompt; /* NULL: the request's; "": none */
    const char *prompt;        /* user text; the image goes before it */
    sl_sampling sampling;
    const char *json_schema;   /* NULL: the request's (structured output, below) */
    const char *const *choices; /* n_choices 0: the request's (choices, below) */
    int n_choices;
} sl_task;

/* Tasks per request at most. */
#define SL_MAX_TASKS 32

/* A conversation (sl_request.messages; `sluice batch`, issue 15): messages
 * in order, each a role and content parts. A part is text, or (text NULL)
 * the next image of sl_request.images: images are taken in the order their
 * parts appear across all messages, so n_images equals the number of image
 * parts. */
typedef struct sl_content_part {
    const char *text;          /* NULL: an image part */
} sl_content_part;

typedef struct sl_message {
    const char *role;          /* "system", "user" or "assistant" (others: SL_ERR_INVALID_ARG) */
    const sl_content_part *parts;
    int n_parts;
} sl_message;

/* Images per request at most (a conversation's image parts). */
#define SL_MAX_IMAGES 16

typedef struct sl_request {
    const char *id;            /* names the row in error messages */
    const char *system_prompt; /* NULL or "" for none */
    const char *prompt;        /* user text; the image goes before it */
    const sl_image *image;     /* NULL for text only */
    sl_sampling sampling;
    const char *const *stop;   /* strings that end generation (not included) */
    int n_stop;
    bool trace;                /* record each generated token and its logit margin */
    /* The image already encoded (openai engine; copied at submit), of
     * type image_mime (NULL: "image/jpeg"). Takes the place of `image`
     * there; the llama engine ignores it. */
    const uint8_t *image_encoded;
    size_t image_encoded_len;
    const char *image_mime;
    /* Structured output (both copied at submit; NULL: none). json_schema:
     * a JSON schema (text) the answer must match: the llama engine samples
     * under a grammar made from it (llama.cpp's converter; `grammar` wins
     * when both are given), the openai engine sends it as response_format
     * json_schema. An answer that is not JSON or does not match completes
     * with SL_ERR_INVALID_OUTPUT, its result still filled (the raw text,
     * tokens, timings) and the message holding the raw text. A schema
     * sluice cannot read or convert is refused at submit
     * (SL_ERR_INVALID_ARG). grammar: GBNF text with a "root" rule that the
     * llama engine samples under (the openai engine refuses it). Docs:
     * docs/output.md, "Structured output". */
    const char *json_schema;
    const char *grammar;
    /* Choices (llama engine; n_choices 2..SL_MAX_CHOICES, distinct
     * non-empty UTF-8 strings, copied at submit; 0: none): the answer is
     * one of them, read from the model's probabilities after the prompt,
     * with no tokens generated (sl_result.scores holds each choice's
     * probability). A choice stands for the tokens the model would answer
     * it with, the prompt's text before it: the choice's own, and the same
     * word after a space and with its first letter's case swapped (a
     * template often ends before the space an answer begins with). Where
     * all begin differently the first tokens decide, their probabilities
     * normalized over the choices; choices that begin alike ("the cat",
     * "the dog"; "1", "10") share that and are read again where they part
     * (a probe: their common beginning decoded after the prompt, one step
     * each), a choice that ends there taking what does not go on.
     * Greedy (temperature 0) takes the highest; otherwise the answer is
     * drawn with the row's seed from the scores sharpened by the
     * temperature (top-k/p, min-p and the repeat penalty do not apply).
     * Two choices alike in their first 32 tokens fail the request at
     * admission, naming them. Not with json_schema, grammar or logprobs
     * (SL_ERR_INVALID_ARG at submit). The openai engine asks the server for
     * one token with its 20 most likely alternatives and scores the
     * choices from those, with probe requests continuing the answer where
     * choices begin alike (docs/output.md "Choices"). */
    const char *const *choices;
    int n_choices;
    /* n_tasks > 0: several answers about the one image, each task with its
     * own prompt, system prompt and sampling (prompt and sampling above are
     * then unused; image, stop and trace are shared). The completion holds
     * one result per task, in order (with sampling.n = N > 1, N per task:
     * task t's answer k at t * N + k). The llama engine encodes the image
     * once and prefills it once: the tasks' sequences copy its positions
     * (llama_memory_seq_cp; counted as prefix-cache hits and cached_tokens).
     * The openai engine sends one request per task with the same image and
     * message prefix. A task that fails fails the request, its message
     * naming the task. */
    const sl_task *tasks;
    int n_tasks;
    /* Set by the engines on a task's own request (the task's name, borrowed
     * from tasks[i]); NULL otherwise. An answer cut short then names the
     * task's token limit (--task-max-tokens NAME=N). Callers leave it NULL. */
    const char *task_name;
    /* n_messages > 0: the request is this conversation instead of
     * system_prompt, prompt and image (which must then be NULL), and
     * n_tasks must be 0. The llama engine renders the messages with the
     * model's chat template (a generation prompt after the last), puts
     * images[i] where its image part is (all in one sequence; none: the
     * vision encoder is not run) and completes the last turn. Both engines
     * copy messages and parts at submit; images (sl_image, llama) and
     * images_encoded (openai) must stay alive until the completion. */
    const sl_message *messages;
    int n_messages;
    const sl_image *const *images;      /* n_images decoded images (llama engine) */
    const uint8_t *const *images_encoded; /* openai engine: the same images encoded, */
    const size_t *images_encoded_len;   /* with their lengths */
    const char *const *images_mime;     /* and types (NULL or an entry NULL: image/jpeg) */
    int n_images;
    /* A prompt's several images (a video's frames): n_images > 0 without
     * messages (and without `image`) puts the images before the prompt in
     * the user message, image i after the text image_texts[i] when given
     * (NULL, or an entry NULL: none), as the conversation of one user
     * message of parts [text 0, image 0, text 1, image 1, ..., prompt]
     * would (tasks and n answers too: each shares the images). Texts are
     * copied at submit; the images live as for a conversation. */
    const char *const *image_texts;
    /* The images are one video's frames, in order. The openai engine sends
     * them as one vLLM `video_url` part (data:video/jpeg;base64,F1,F2,...:
     * the frames' JPEGs, which vLLM's video processor reads as one clip)
     * where the first image part is; every image must be a JPEG and no text
     * may come between them (image_texts NULL or empty; in messages, image
     * parts side by side), else SL_ERR_INVALID_ARG at submit. The llama
     * engine reads them as images, as without it. */
    bool images_are_video;
    /* openai engine: a whole chat-completions request body (JSON text, an
     * object with "messages"), sent as given but for "model" (set to the
     * served model when absent), "stream" (the engine's) and the sampling
     * keys it leaves out (from sampling, stop and json_schema, as in a body
     * the engine builds; the body's own are kept). It takes the place of
     * messages, prompt and image there; sampling.max_tokens still bounds
     * the answer's accounting, and a json_schema checks the answer. Not JSON, not
     * an object, no "messages" array or a duplicate key: SL_ERR_INVALID_ARG
     * at submit. The llama engine ignores it (give it messages). Copied at
     * submit. */
    const char *openai_body;
    /* Ask for the answer as a chat.completion object as well
     * (sl_result.response_json): the server's own (openai engine) or one
     * the engine makes (llama engine). */
    bool want_response_json;
    /* Conversations asked turn by turn (sl_prefix_cache). follows: the
     * next turn of one whose turn before this engine has just answered:
     * the llama engine queues it ahead of requests it has not begun
     * preparing. followed: a next turn will come: the sequence this one
     * leaves is held for it a while (up to 1 s) instead of going to a
     * newcomer. Ignored on a request with tasks or several answers. */
    bool follows, followed;
} sl_request;

typedef struct sl_result {
    char *text;                /* generated text, NUL-terminated */
    const char *finish_reason; /* "stop", "length"; the openai engine: the server's
                                  word, NULL when it gave none (strings that live
                                  as long as the process) */
    int prompt_tokens;         /* text and image positions fed to the model */
    int generated_tokens;
    int cached_tokens;         /* prompt positions not computed: copied from the shared
                                  prefix or a sibling task, or kept in the sequence from
                                  the request before (sl_prefix_cache) */
    double queue_ms;           /* submitted -> admitted into a sequence */
    double prefill_ms;         /* admitted -> prompt and image in the context */
    double encode_ms;          /* of which: the vision encoder */
    double ttft_ms;            /* submitted -> first token */
    double generate_ms;        /* first token -> last token */
    /* With request.trace: per generated token, its id and the gap between
     * the best and the second-best logit (how close greedy was to a tie). */
    int32_t *trace_tokens;
    float *trace_margins;
    int n_trace;
    /* openai engine: the endpoint that answered (the engine's string, valid
     * until sl_engine_free) and the HTTP attempts it took; NULL and 0 otherwise. */
    const char *endpoint;
    int attempts;
    /* request.want_response_json: the chat.completion object (JSON text,
     * NUL-terminated; freed by sl_result_clear) with id, object, created,
     * model, choices[0].message/finish_reason and usage; NULL otherwise. */
    char *response_json;
    /* sampling.logprobs: the answer's tokens with their log-probabilities,
     * as JSON text of OpenAI's choices[].logprobs object:
     * {"content":[{"id","token","logprob","bytes","top_logprobs":[{"id",
     * "token","logprob","bytes"}]}]}, one entry per generated token and,
     * when the model ended the answer, one for its end-of-generation token
     * (as llama-server and vLLM report it; its text is empty); the
     * server's own object on the openai engine. "token" is the piece's
     * text up to its first incomplete UTF-8 sequence, "bytes" all of it.
     * NULL otherwise. Freed by sl_result_clear. */
    char *logprobs;
    /* request.choices: each choice's probability, normalized over the
     * choices, as JSON text of an object in the choices' order
     * ({"yes":0.93,"no":0.07}); text is the choice taken. NULL otherwise.
     * Freed by sl_result_clear. */
    char *scores;
} sl_result;

typedef struct sl_completion {
    void *tag;                 /* as given to sl_engine_submit() */
    sl_status status;
    char *error;               /* NULL when status is SL_OK (or when out of memory
                                  left no room for the message) */
    sl_result result;          /* filled when status is SL_OK or SL_ERR_INVALID_OUTPUT */
    /* request.n_tasks > 0 (or sampling.n > 1) and status SL_OK: one result
     * per task (per answer; with both, task t's answer k at t * n + k), in
     * the request's order (result above is then empty). */
    sl_result *results;
    int n_results;
} sl_completion;

/* Queues a request; `tag` comes back in its completion (one for all its
 * tasks). Errors that concern this request alone: SL_ERR_INVALID_ARG (no
 * prompt, more than SL_MAX_TASKS tasks, max_tokens
 * <= 0, a prompt, system prompt or stop string that is not UTF-8; a
 * conversation with more than 256 messages, a role other than the three,
 * a text part not UTF-8, image parts other than n_images or more than
 * SL_MAX_IMAGES, or a prompt, image or tasks besides: the message names the
 * message's 0-based index) and
 * SL_ERR_NOMEM; other requests may still be submitted. SL_ERR_IO: the
 * engine has stopped working (openai: every endpoint down past
 * all_down_s); no request will succeed. */
sl_status sl_engine_submit(sl_engine *engine, const sl_request *request, void *tag);

/* Waits up to timeout_ms for completions; fills up to max of out[] and
 * sets *n. Each completion is cleared with sl_completion_clear(). */
sl_status sl_engine_poll(sl_engine *engine, sl_completion *out, size_t max, int timeout_ms,
                         size_t *n);

/* The shape of a prompt's choices (sl_request.choices): none, or 2 to
 * SL_MAX_CHOICES distinct non-empty UTF-8 strings; SL_ERR_INVALID_ARG with
 * a message that begins with `who` (e.g. "--choices") otherwise. */
sl_status sl_choices_check(const char *who, const char *const *choices, int n);

/* Checks a prompt's choices (sl_request.choices) before any row is
 * submitted: the prompt rendered as a request without images would be
 * (its end is what an answer follows), each choice's tokens found as for
 * a request. SL_ERR_INVALID_ARG naming `who` (e.g. "--choices") when two
 * choices are alike in their first 32 tokens or one has no tokens (the
 * openai engine checks their shape alone: the tokens are the server's). */
sl_status sl_engine_check_choices(sl_engine *engine, const char *who, const char *system_prompt,
                                  const char *prompt, const char *const *choices, int n_choices);

/* Requests submitted and not yet returned by poll. */
size_t sl_engine_in_flight(const sl_engine *engine);

/* Run one request to completion (submit + poll). Only when nothing else is
 * in flight on this engine; not for requests with tasks. On failure the result is cleared and the
 * message names request->id and the cause. */
sl_status sl_engine_generate(sl_engine *engine, const sl_request *request, sl_result *out);

void sl_result_clear(sl_result *result);
void sl_completion_clear(sl_completion *completion);

typedef struct sl_engine_stats {
    uint64_t requests_running, requests_waiting;
    uint64_t prompt_tokens, generation_tokens;
    uint64_t prefix_queries, prefix_hits;  /* prompts tried against / served by the shared prefix */
    uint64_t prefix_query_tokens;          /* prompt positions of those prompts */
    uint64_t prefix_cached_tokens;         /* positions copied instead of computed */
    uint64_t kv_cells_used, kv_cells_total;
    uint64_t decode_calls, batch_tokens;   /* llama_decode calls and tokens in them */
    uint64_t images_encoded;
    double encode_s;                       /* in the vision encoder */
    double decode_s;                       /* in llama_decode, all of it: */
    double token_decode_s;                 /*   batches of tokens (generation + prompt text) */
    double image_decode_s;                 /*   image embeddings into their sequences */
    /* llama engine: seconds and observations per phase (steps for the step
     * phases, images for the image ones); steps of the loop that decoded. */
    double phase_s[SL_PHASE_COUNT];
    uint64_t phase_n[SL_PHASE_COUNT];
    uint64_t steps;
    uint64_t image_decode_calls;           /* llama_decode calls of image embeddings (several
                                              images packed in one where the model allows) */
    uint64_t sampled_tokens;               /* tokens chosen (all sequences, all steps) */
    uint64_t choice_probes;                /* probes decoded for choices that begin alike */
    uint64_t image_cache_queries;          /* llama: image chunks looked up in the cache of */
    uint64_t image_cache_hits;             /*   encoder outputs, and found there (not encoded) */
    uint64_t graphs_reused;                /* llama: llama_decode ubatches whose compute graph
                                              was the previous one's (not built again) */
} sl_engine_stats;

/* A consistent snapshot; any thread. */
void sl_engine_stats_get(const sl_engine *engine, sl_engine_stats *out);

/* Per endpoint of an HTTP engine (none for llama): a snapshot, any thread. */
typedef struct sl_endpoint_stats {
    const char *url;           /* owned by the engine */
    int in_flight, limit;      /* outstanding requests and the current limit */
    bool down;                 /* out of rotation (cooling down after failures) */
    uint64_t requests;         /* attempts sent */
    uint64_t retries;          /* attempts here that failed and were retried */
    int n_codes;               /* answers by HTTP status; code 0: no answer */
    int codes[16];             /* (connection refused or reset, timeout) */
    uint64_t code_counts[16];
} sl_endpoint_stats;

/* For a run that is stopping: requests not yet started are not started.
 * The openai engine completes each request not yet sent (queued behind
 * the in-flight limits, or waiting to be retried after a failed attempt)
 * through poll() with SL_ERR_STOPPED, and so every request submitted from
 * now on; requests on the wire finish as usual, and so do continuations
 * of work already done: a choices request's probes, and a conversation's
 * next turn (sl_request.follows). A request with tasks
 * or several answers of which a part was not sent completes with
 * SL_ERR_STOPPED as a whole. The llama engine completes so the requests
 * waiting for a sequence when it is called and those submitted after it,
 * but for follow-ups, tasks and answers of a request (their siblings may
 * run) and one its encoder thread holds: those run. Exact for both: a
 * request not started when this returns (not on the wire; holding no
 * sequence and not in the encoder's hands) is not started after, one the
 * engine's thread was about to start included. False, and nothing
 * changes, where the engine does not do this. Any thread; once is
 * enough. */
bool sl_engine_cancel_queued(sl_engine *engine);

size_t sl_engine_endpoint_count(const sl_engine *engine);
void sl_engine_endpoint_stats(const sl_engine *engine, size_t i, sl_endpoint_stats *out);

/* "llama" or "openai" (a static string). */
const char *sl_engine_kind(const sl_engine *engine);

/* The model's name (general.name, else the file name); owned by the engine. */
const char *sl_engine_model_name(const sl_engine *engine);

/* The system message the engine puts first where a prompt has none: the
 * llama engine's, from the model's chat template (Qwen's "You are a
 * helpful assistant."); "" for none. NULL where the engine does not know
 * it (the openai engine: the server renders its own template). Owned by
 * the engine. */
const char *sl_engine_default_system(const sl_engine *engine);

void sl_engine_free(sl_engine *engine);

#ifdef __cplusplus
}
#endif
#endif
