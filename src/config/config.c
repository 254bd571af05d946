/* config/config.c — the table of a job's settings, and setting, checking and
 * printing them (sluice/config.h; the YAML reader is config_yaml.c).
 *
 * Why one table: a setting is a row (key, flag, type, range, field), so the
 * sluice command's flags, a job file's keys, `sluice config print` and the
 * error messages cannot drift apart; adding a flag is adding a row, and the
 * flag has its key from the start. Keys are grouped in sections named after
 * the part of the job they steer (input, image, video, llama, openai, prompt,
 * sampling, pipeline, output, metrics, console), the way a Ray Data or vLLM
 * user splits a job; the leaf names are the flags' names where the section
 * does not already say it (--max-image-edge is image.max_edge).
 *
 * Values are parsed from text with the checks and messages the command line
 * always had ("--parallel expects an integer from 1 to 255, got 'x'"); a
 * job file's value gets the same message prefixed with FILE:LINE:COLUMN and
 * naming the key. Strings are copied into the config and live until it is
 * freed: a job file is bounded (SL_CONFIG_MAX_FILE_BYTES), and so is what
 * overridden values leave behind.
 *
 * Layers: each loader, and the command line, begins a layer; a list set in
 * a new layer is replaced, not added to, so `--stop X` over a job file's
 * stop list means "stop at X", as an override should. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config/config_impl.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/utf8.h"
#include "io/columns.h"
#include "llm/engines/llama_grammar.h"
#include "llm/json_schema.h"
#include "obs/metrics_impl.h"

enum { L_INPUTS, L_INCLUDE, L_EXCLUDE, L_STOP, L_COLUMNS, L_ENDPOINTS, L_HEADERS, L_STAGES,
       L_TASKS, L_TASK_MAXT, L_TASK_TEMP, L_LORA, L_CHOICES, L_COUNT };

typedef struct cfg_list {
    const char **items;
    const char **wheres; /* where each item was set ("" for a flag's) */
    int n, cap;
    int layer; /* the layer that last set it */
} cfg_list;

enum { MAX_OPTS = 128, MAX_GPUS = 64, MAX_URL_FILES = 64, MAX_STAGES = 64 };

struct sl_config {
    sl_caption_params p;
    sl_config_console console;
    const char *tasks_file;                /* tasks.file, read by sl_config_resolve */
    sl_caption_task tasks[SL_MAX_TASKS];   /* built by sl_config_resolve */
    const char *task_choices[SL_MAX_TASKS][SL_MAX_CHOICES]; /* theirs (kept strings) */
    const char *file_path[MAX_OPTS];       /* K_TEXTFILE: the file its text came from */
    int gpus[MAX_GPUS];
    cfg_list lists[L_COUNT];
    sl_stage_spec stages[MAX_STAGES]; /* item j of lists[L_STAGES], parsed */
    sl_llama_lora lora[SL_LLAMA_MAX_LORA]; /* lists[L_LORA], parsed by sl_config_resolve */
    int layer;
    bool no_files;                         /* sl_config_allow_files(false) */
    int given[MAX_OPTS];                   /* the layer that set option i; 0: default */
    const char *name[MAX_OPTS], *where[MAX_OPTS]; /* how messages name what set it */
    char **owned;                          /* every string handed out */
    size_t n_owned, cap_owned;
};

typedef enum kind {
    K_STR, K_CHOICE, K_INT, K_LONG, K_U64, K_UINT, K_FLOAT, K_DOUBLE, K_SIZE, K_FRACTION,
    K_BOOL, K_LIST, K_GPUS, K_RGB, K_SHARD, K_ADDR, K_TEXTFILE, K_URLFILE, K_VERSION,
    K_ENUM, /* an int field holding the index of its name in choices (a C enum) */
    K_STAGES, /* a list of stages: each a mapping (a JSON object on the command line) or
                 FILE[@PLACE]; kept as canonical JSON in lists[L_STAGES] */
} kind;

enum {
    NULL_ZERO = 1,   /* 0 means "the default" and prints as ~ (the parser refuses 0) */
    NULL_UNSET = 2,  /* prints as ~ unless set: its default depends on another setting */
    SPLIT = 4,       /* a list given as one text is split on commas */
    POSITIVE = 8,    /* K_FRACTION: 0 is refused (an empty sample is a mistake, not a job) */
    NAMED = 16,      /* K_LIST: each item is NAME=VALUE, NAME a task name */
    NO_TASKS = 32,   /* a prompt that tasks replace: refused beside them (a user who set it
                        would believe it used), printed ~ beside them */
    ZERO_OFF = 64,   /* K_SIZE: 0 turns it off (other sizes are at least 1M) */
    NOT_EMPTY = 128, /* K_STR: "" is refused: it can only be a mistake (an unset "$VAR"),
                        and was taken in silence as the default */
};

typedef struct opt {
    const char *key, *flag;
    int short_flag;
    kind k;
    size_t off;
    long lo, hi;        /* integers */
    double dlo, dhi;    /* numbers */
    const char *arg, *help;
    int list, max_items; /* K_LIST */
    const char *choices; /* K_CHOICE, K_ENUM: "a|b|c" */
    unsigned f;
    /* K_TEXTFILE: checks the file's text when read; `what` names it. */
    sl_status (*check)(const char *text, size_t len, const char *what);
} opt;

static sl_status check_json_schema(const char *text, size_t len, const char *what);
static sl_status check_grammar(const char *text, size_t len, const char *what);

#define AT(field) offsetof(struct sl_config, field)

#define KV_TYPES "f16|f32|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|iq4_nl"
#define KV_TYPES_HELP "f16 (default), f32, bf16, q8_0 (~1.9x the positions of f16 in the " \
                      "same memory), q4_0, q4_1, q5_0, q5_1, iq4_nl"

/* The table. Sections must stay contiguous (config print walks it in
 * order); a new flag is a new row here and a field in sl_caption_params. */
static const opt opts[] = {
    {"version", NULL, 0, K_VERSION, 0, .arg = "1",
     .help = "job-file version (this sluice reads 1)"},
    {"engine", "engine", 0, K_CHOICE, AT(p.engine), .arg = "E", .choices = "llama|openai",
     .help = "llama (in-process llama.cpp, default) or openai (HTTP servers)"},

    {"input.paths", NULL, 0, K_LIST, 0, .list = L_INPUTS, .max_items = 100000, .arg = "INPUT",
     .help = "folders, manifests, tar shards, Parquet or Arrow files; braces and globs"},
    {"input.format", "input-format", 0, K_CHOICE, AT(p.input_format), .arg = "F",
     .choices = "auto|folder|file|jsonl|json|csv|webdataset|parquet|arrow|openai-batch",
     .help = "folder, file, jsonl, json (an array), csv, webdataset, parquet, arrow (~ or auto: "
             "by name) or openai-batch"},
    {"input.include", "include", 0, K_LIST, 0, .list = L_INCLUDE, .max_items = 64, .arg = "GLOB",
     .help = "folders (images, or a dataset's files): only relative paths matching one of "
             "these"},
    {"input.exclude", "exclude", 0, K_LIST, 0, .list = L_EXCLUDE, .max_items = 64, .arg = "GLOB",
     .help = "folders: skip relative paths matching one of these"},
    {"input.image_column", "image-column", 0, K_STR, AT(p.image_column),
     .f = NOT_EMPTY, .arg = "NAME",
     .help = "manifest/Parquet image column (~: image, path, url, images, file_name, URL or "
             "image_url) or WebDataset member extension; A,B: several, a row's images in that order"},
    {"input.id_column", "id-column", 0, K_STR, AT(p.id_column), .arg = "NAME",
     .help = "the column whose value (a string or an integer) is a row's id, for manifests and "
             "Parquet (~: id for manifests, none for Parquet: FILE:ROW); none: FILE:LINE always"},
    {"input.image_root", "image-root", 0, K_STR, AT(p.image_root), .arg = "DIR",
     .help = "relative image paths in manifests and Parquet are under DIR (~: the file's folder)"},
    {"input.allow_file_urls", "allow-file-urls", 0, K_BOOL, AT(p.allow_file_urls),
     .help = "read file:// URLs found in data"},
    {"input.max_download_bytes", "max-download-bytes", 0, K_SIZE, AT(p.max_download_bytes),
     .f = NULL_ZERO, .arg = "SIZE",
     .help = "largest http(s)/S3 image fetched; bytes read of a remote video (~: 64M)"},
    {"input.max_line_bytes", "max-line-bytes", 0, K_SIZE, AT(p.max_line_bytes), .f = NULL_ZERO,
     .arg = "SIZE", .help = "a manifest line or CSV record at most, longer: a failed row (~: 1M)"},
    {"input.max_item_bytes", "max-item-bytes", 0, K_SIZE, AT(p.max_item_bytes), .f = NULL_ZERO,
     .arg = "SIZE", .help = "an image held in the data (tar member, Parquet cell, data: URL) or a local "
             "image file (~: 256M)"},
    {"input.download_timeout", "download-timeout", 0, K_DOUBLE, AT(p.download_timeout_s),
     .dlo = 0.001, .dhi = 86400, .arg = "S", .help = "seconds per http(s) image try"},
    {"input.download_retries", "download-retries", 0, K_INT, AT(p.download_retries), .lo = 0,
     .hi = 100, .arg = "N", .help = "tries after the first on a network error, 5xx or 429"},
    {"input.shard", "input-shard", 0, K_SHARD, 0, .arg = "I/N",
     .help = "read only input shards I, I+N, ... (~: all)"},
    {"input.shard_size", "input-shard-size", 0, K_UINT, AT(p.input_shard_size), .lo = 1,
     .hi = 1L << 30, .f = NULL_ZERO, .arg = "N", .help = "items per shard when not whole files (~: 1000)"},

    {"image.workers", "decode-workers", 0, K_INT, AT(p.decode_workers), .lo = 1, .hi = 256,
     .arg = "N", .help = "decode threads"},
    {"image.max_edge", "max-image-edge", 0, K_INT, AT(p.image.max_edge), .lo = 0, .hi = 1 << 16,
     .arg = "N", .help = "shrink the longer edge to N px (0 keeps)"},
    {"image.max_pixels", "max-image-pixels", 0, K_U64, AT(p.image.max_input_pixels), .lo = 1,
     .hi = LONG_MAX, .arg = "N", .help = "refuse larger images (from the header)"},
    {"image.max_aspect_ratio", "max-aspect-ratio", 0, K_INT, AT(p.image.max_aspect_ratio),
     .lo = 0, .hi = 1 << 20, .arg = "N",
     .help = "refuse images whose longer side is over N times the shorter (from the header; "
             "0: no limit)"},
    {"image.background", "background", 0, K_RGB, AT(p.image.background), .arg = "RRGGBB",
     .help = "colour transparent pixels are flattened onto"},
    {"image.text", "image-text", 0, K_STR, AT(p.image_text), .arg = "TEXT",
     .help = "text before each image of a row's list, {index} its number (~: none)"},
    {"image.placeholder", "image-placeholder", 0, K_STR, AT(p.image_placeholder),
     .f = NOT_EMPTY, .arg = "MARK",
     .help = "where a prompt holds MARK (e.g. <image>), the row's images go "
                            "there, in order (~: before the prompt)"},

    {"video.frames", "video-frames", 0, K_INT, AT(p.video.max_frames), .lo = 1,
     .hi = SL_VIDEO_MAX_FRAMES, .arg = "N", .help = "frames taken from each video, at most"},
    {"video.fps", "video-fps", 0, K_DOUBLE, AT(p.video.fps), .dlo = 0, .dhi = 1000, .arg = "F",
     .help = "frames per second of video, at most (0: always video.frames)"},
    {"video.frame_text", "frame-text", 0, K_STR, AT(p.frame_text), .arg = "TEXT",
     .help = "text before each frame, {time} its second, {index} its number (\"\": none)"},

    {"llama.model", "model", 'm', K_STR, AT(p.llama.model_path), .f = NOT_EMPTY, .arg = "PATH",
     .help = "language model GGUF, or hf://ORG/REPO[/FILE.gguf]"},
    {"llama.mmproj", "mmproj", 0, K_STR, AT(p.llama.mmproj_path), .f = NOT_EMPTY,
     .arg = "PATH", .help = "vision projector GGUF, or hf://ORG/REPO/FILE.gguf"},
    {"llama.lora", "lora", 0, K_LIST, 0, .list = L_LORA, .max_items = SL_LLAMA_MAX_LORA,
     .arg = "FILE[:SCALE]",
     .help = "a LoRA adapter GGUF made for the model, at SCALE (default 1); up to 8"},
    {"llama.chat_template", "chat-template", 0, K_STR, AT(p.llama.chat_template),
     .f = NOT_EMPTY, .arg = "NAME|FILE",
     .help = "render prompts with this chat template: plain, a name llama.cpp "
                                 "knows (chatml, llama3, smolvlm, ...) or a file (~: the model's)"},
    {"llama.replicas", "replicas", 0, K_INT, AT(p.replicas), .lo = 1, .hi = 64, .arg = "N",
     .help = "engine instances, each with its own model (gpus: one per GPU)"},
    {"llama.gpus", "gpus", 0, K_GPUS, 0, .arg = "LIST", .f = SPLIT,
     .help = "one replica per GPU, e.g. [0, 1, 2, 3]"},
    {"llama.parallel", "parallel", 0, K_INT, AT(p.llama.n_parallel), .lo = 0, .hi = 255,
     .arg = "N", .help = "sequences decoded together per replica (0: 4 on a CPU, on a GPU what "
                         "its memory holds, at most 128)"},
    {"llama.ctx", "ctx", 0, K_INT, AT(p.llama.n_ctx_per_seq), .lo = 0, .hi = 1 << 22,
     .arg = "N", .help = "context per sequence (0: sized for prompt, image, max_tokens)"},
    /* In sl_kv_type's order. */
    {"llama.cache_type_k", "cache-type-k", 0, K_ENUM, AT(p.llama.cache_type_k), .arg = "T",
     .choices = KV_TYPES, .help = "KV cache type of K: " KV_TYPES_HELP},
    {"llama.cache_type_v", "cache-type-v", 0, K_ENUM, AT(p.llama.cache_type_v), .arg = "T",
     .choices = KV_TYPES, .help = "KV cache type of V (quantized: flash attention on)"},
    {"llama.threads", "threads", 0, K_INT, AT(p.llama.n_threads), .lo = 0, .hi = 1024,
     .arg = "N", .help = "CPU threads of each replica (0: the cores divided between replicas)"},
    {"llama.gpu_layers", "gpu-layers", 0, K_INT, AT(p.llama.n_gpu_layers), .lo = -1,
     .hi = 100000, .arg = "N", .help = "layers offloaded to a GPU build (-1: all)"},
    {"llama.cpu_poll", "cpu-poll", 0, K_INT, AT(p.llama.cpu_poll), .lo = 0, .hi = 100,
     .arg = "N", .help = "0..100: how hard ggml's own thread pool spins between ops (an OpenMP "
             "build spins in libgomp whatever it says: give fewer threads)"},
    /* In sl_llama_sampler's order. */
    {"llama.sampler", "sampler", 0, K_ENUM, AT(p.llama.sampler), .arg = "WHERE",
     .choices = "auto|host|device|reference",
     .help = "where next tokens are chosen (auto: device on a GPU, else host; reference: "
             "llama.cpp's chain one sequence at a time, the slow baseline)"},
    /* In sl_prefix_cache's order. */
    {"llama.prefix_cache", "prefix-cache", 0, K_ENUM, AT(p.llama.prefix_cache), .arg = "on|off",
     .choices = "on|off",
     .help = "a free sequence keeps its KV for the next request that begins alike (the next "
             "turn of a conversation, another question about one picture)"},
    {"llama.image_cache", "image-cache", 0, K_SIZE, AT(p.llama.image_cache_bytes), .f = ZERO_OFF,
     .arg = "SIZE",
     .help = "the vision encoder's outputs kept for images seen again (several rows or "
             "questions of one image; 0: encode every image)"},
    {"llama.image_min_tokens", "image-min-tokens", 0, K_INT, AT(p.llama.image_min_tokens),
     .lo = 0, .hi = 1 << 20, .arg = "N",
     .help = "tokens an image gives at least, where the projector resizes freely (Qwen2-VL, "
             "Qwen2.5-VL; 0: the model's)"},
    {"llama.image_max_tokens", "image-max-tokens", 0, K_INT, AT(p.llama.image_max_tokens),
     .lo = 0, .hi = 1 << 20, .arg = "N",
     .help = "tokens an image gives at most, where the projector resizes freely (Qwen2-VL, "
             "Qwen2.5-VL; 0: the model's, 4096 for Qwen2.5-VL)"},
    {"llama.encode_ahead", "encode-ahead", 0, K_INT, AT(p.llama.encode_ahead), .lo = -1,
     .hi = 1024, .arg = "N",
     .help = "requests tokenized and encoded by a second thread while the engine decodes (-1: "
             "on a GPU min(parallel, 32), on a CPU 0)"},
    {"llama.encoders", "encoders", 0, K_INT, AT(p.llama.encoders), .lo = 0,
     .hi = SL_LLAMA_MAX_ENCODERS, .arg = "N",
     .help = "encoder threads, each with its own copy of the vision projector, so that images "
             "are encoded side by side (0 or 1: one)"},

    {"openai.endpoints", "endpoint", 0, K_LIST, 0, .list = L_ENDPOINTS, .max_items = 1024,
     .arg = "URL", .help = "servers, e.g. http://10.0.0.7:8000"},
    {"openai.endpoints_file", "endpoints-file", 0, K_URLFILE, 0, .arg = "F",
     .help = "more servers, one URL a line (read into endpoints)"},
    {"openai.served_model", "served-model", 0, K_STR, AT(p.openai.served_model),
     .f = NOT_EMPTY, .arg = "NAME",
     .help = "the request's model (~: the first of GET /v1/models)"},
    {"openai.api_key_env", "api-key-env", 0, K_STR, AT(p.openai.api_key_env),
     .f = NOT_EMPTY, .arg = "VAR",
     .help = "send the key held in this environment variable"},
    {"openai.api_key_header", "api-key-header", 0, K_STR, AT(p.openai.api_key_header),
     .f = NOT_EMPTY, .arg = "NAME",
     .help = "the header that carries the key, bare (~: Authorization, as 'Bearer KEY'; "
             "Azure: api-key)"},
    {"openai.headers", "header", 0, K_LIST, 0, .list = L_HEADERS, .max_items = 64,
     .arg = "'NAME: VALUE'",
     .help = "a header sent with every request (not for secrets: the key goes by "
             "api_key_env)"},
    {"openai.max_in_flight", "max-in-flight", 0, K_INT, AT(p.openai.max_in_flight), .lo = 1,
     .hi = 4096, .arg = "N", .help = "requests outstanding per endpoint"},
    {"openai.adaptive", "adaptive", 0, K_BOOL, AT(p.openai.adaptive),
     .help = "move that limit with measured throughput"},
    {"openai.adaptive_max", "adaptive-max", 0, K_INT, AT(p.openai.adaptive_max_in_flight),
     .lo = 1, .hi = 100000, .f = NULL_UNSET, .arg = "N",
     .help = "the most it may raise it to (~: 64, at least max_in_flight)"},
    {"openai.request_timeout", "request-timeout", 0, K_DOUBLE, AT(p.openai.request_timeout_s),
     .dlo = 0.01, .dhi = 86400, .arg = "S", .help = "seconds per attempt"},
    {"openai.max_attempts", "max-attempts", 0, K_INT, AT(p.openai.max_attempts), .lo = 1,
     .hi = 1000, .arg = "N", .help = "tries per row on errors worth retrying"},
    {"openai.endpoint_failures", "endpoint-failures", 0, K_INT, AT(p.openai.endpoint_failures),
     .lo = 1, .hi = 1000000, .arg = "N", .help = "failures in a row that take an endpoint out"},
    {"openai.endpoint_cooldown", "endpoint-cooldown", 0, K_DOUBLE, AT(p.openai.cooldown_s),
     .dlo = 0, .dhi = 86400, .arg = "S", .help = "seconds out of rotation after them"},
    {"openai.give_up_after", "give-up-after", 0, K_DOUBLE, AT(p.openai.all_down_s), .dlo = 0,
     .dhi = 864000, .arg = "S", .help = "stop once every endpoint failed this long"},
    {"openai.jpeg_edge", "jpeg-edge", 0, K_INT, AT(p.jpeg_edge), .lo = 0, .hi = 1 << 16,
     .arg = "PX", .help = "longer edge of the JPEG sent (0: as decoded)"},
    {"openai.jpeg_quality", "jpeg-quality", 0, K_INT, AT(p.jpeg_quality), .lo = 1, .hi = 100,
     .arg = "Q", .help = "its quality"},
    {"openai.send_original", "send-original", 0, K_BOOL, AT(p.send_original),
     .help = "send JPEG and PNG inputs as they are"},
    /* In the order of sl_caption_params.video_part. */
    {"openai.video_part", "video-part", 0, K_ENUM, AT(p.video_part), .arg = "PART",
     .choices = "image_url|video_url",
     .help = "a video's frames as image_url parts, each after --frame-text (every server), or "
             "as one video_url part (vLLM: the model's video input)"},
    {"openai.response_format", "response-format", 0, K_TEXTFILE, AT(p.openai.response_format),
     .arg = "F", .help = "a JSON file sent as response_format"},
    {"openai.stream", "stream", 0, K_BOOL, AT(p.openai.stream),
     .help = "stream answers: TTFT and inter-token latency"},
    {"openai.split_samples", "split-samples", 0, K_BOOL, AT(p.openai.split_samples),
     .help = "--samples N as N requests (for a server without \"n\")"},
    /* In sl_openai_max_tokens_field's order. */
    {"openai.max_tokens_field", "max-tokens-field", 0, K_ENUM, AT(p.openai.max_tokens_field),
     .arg = "F", .choices = "max_tokens|max_completion_tokens|both",
     .help = "the body field that carries --max-tokens: max_tokens, max_completion_tokens "
             "(OpenAI's reasoning models) or both (a fleet of old and new servers)"},

    {"prompt.text", "prompt", 'p', K_STR, AT(p.prompt), .f = NO_TASKS | NOT_EMPTY, .arg = "TEXT",
     .help = "user prompt (not with tasks: each brings its own)"},
    {"prompt.system", "system", 0, K_STR, AT(p.system_prompt),
     .f = NOT_EMPTY, .arg = "TEXT",
     .help = "system prompt (~: the model's chat template's own, if it writes one where none "
             "is given; else none)"},
    {"prompt.column", "prompt-column", 0, K_STR, AT(p.prompt_column),
     .f = NO_TASKS | NOT_EMPTY, .arg = "NAME",
     .help = "a row's value in this column replaces the prompt: a string, or a conversation's first "
             "human/user turn (~: prompt; not with tasks)"},
    /* In the order of sl_caption_params.turns. */
    {"prompt.turns", "turns", 0, K_ENUM, AT(p.turns), .f = NO_TASKS, .arg = "WHICH",
     .choices = "first|last|all",
     .help = "a conversation in the prompt column: first (its first human turn is the prompt), "
             "last (every turn up to its last human one is sent; the model answers that) or all "
             "(each human turn answered in order after the model's own earlier answers, "
             "written into the conversation)"},

    {"tasks.prompts", "task", 0, K_LIST, 0, .list = L_TASKS, .max_items = SL_MAX_TASKS,
     .f = NAMED, .arg = "NAME=PROMPT",
     .help = "a task asked of every image (NAME=@FILE reads the prompt); several share one "
             "encoding of the image, each answer in columns NAME, NAME_finish_reason, ..."},
    {"tasks.file", "tasks", 0, K_STR, AT(tasks_file), .arg = "FILE",
     .help = "tasks from a JSON file: prompt, system, sampling, json_schema per task"},
    {"tasks.max_tokens", "task-max-tokens", 0, K_LIST, 0, .list = L_TASK_MAXT,
     .max_items = SL_MAX_TASKS, .f = NAMED, .arg = "NAME=N", .help = "a task's own max_tokens"},
    {"tasks.temperature", "task-temperature", 0, K_LIST, 0, .list = L_TASK_TEMP,
     .max_items = SL_MAX_TASKS, .f = NAMED, .arg = "NAME=F",
     .help = "a task's own temperature"},
    {"tasks.rows_per_task", "rows-per-task", 0, K_BOOL, AT(p.rows_per_task),
     .help = "one row per image and task (column task) instead of one per image"},

    {"sampling.max_tokens", "max-tokens", 'n', K_INT, AT(p.sampling.max_tokens), .lo = 1,
     .hi = 1 << 20, .arg = "N", .help = "tokens to generate at most"},
    {"sampling.temperature", "temperature", 0, K_FLOAT, AT(p.sampling.temperature), .dlo = 0,
     .dhi = 100, .arg = "F", .help = "0 is greedy"},
    {"sampling.top_p", "top-p", 0, K_FLOAT, AT(p.sampling.top_p), .dlo = 0, .dhi = 1, .arg = "F",
     .help = "1: off; 0: the most likely token alone (greedy)"},
    {"sampling.top_k", "top-k", 0, K_INT, AT(p.sampling.top_k), .lo = 0, .hi = 1 << 20,
     .arg = "N", .help = "0: off"},
    {"sampling.min_p", "min-p", 0, K_FLOAT, AT(p.sampling.min_p), .dlo = 0, .dhi = 1, .arg = "F",
     .help = "0: off"},
    {"sampling.repeat_penalty", "repeat-penalty", 0, K_FLOAT, AT(p.sampling.repeat_penalty),
     .dlo = 0.01, .dhi = 100, .arg = "F", .help = "1: off"},
    {"sampling.presence_penalty", "presence-penalty", 0, K_FLOAT,
     AT(p.sampling.presence_penalty), .dlo = -2, .dhi = 2, .arg = "F",
     .help = "lowers a token's logit by F once it is in the answer (OpenAI's, vLLM's); 0: off"},
    {"sampling.frequency_penalty", "frequency-penalty", 0, K_FLOAT,
     AT(p.sampling.frequency_penalty), .dlo = -2, .dhi = 2, .arg = "F",
     .help = "lowers a token's logit by F times its count in the answer; 0: off"},
    {"sampling.seed", "seed", 0, K_U64, AT(p.sampling.seed), .lo = 0, .hi = LONG_MAX, .arg = "N",
     .help = "job seed; each row's seed mixes it with the row id"},
    {"sampling.json_schema", "json-schema", 0, K_TEXTFILE, AT(p.json_schema), .arg = "F",
     .check = check_json_schema,
     .help = "answers are JSON matching this JSON schema file (llama: a grammar from it; "
             "openai: response_format); others fail as invalid_output"},
    {"sampling.grammar", "grammar", 0, K_TEXTFILE, AT(p.grammar), .arg = "F",
     .check = check_grammar, .help = "llama engine: sample under this GBNF grammar (root rule)"},
    {"sampling.choices", "choices", 0, K_LIST, 0, .list = L_CHOICES, .max_items = SL_MAX_CHOICES,
     .f = SPLIT, .arg = "A,B,...",
     .help = "the answer is one of these, scored by the model's probabilities (column "
             "scores)"},
    {"sampling.samples", "samples", 0, K_INT, AT(p.sampling.n), .lo = 1, .hi = SL_MAX_ANSWERS,
     .f = NULL_ZERO, .arg = "N",
     .help = "N answers per image, each with its own seed: a row per answer with a column "
             "sample (~: one; with tasks, N of each)"},
    {"sampling.logprobs", "logprobs", 0, K_INT, AT(p.sampling.top_logprobs), .lo = 1,
     .hi = SL_MAX_TOP_LOGPROBS, .f = NULL_ZERO, .arg = "N",
     .help = "write each answer's tokens with their log-probabilities and the N most likely "
             "tokens at each place (column logprobs; ~: none)"},
    {"sampling.stop", "stop", 0, K_LIST, 0, .list = L_STOP, .max_items = 16, .arg = "TEXT",
     .help = "end generation at any of these (not written)"},

    {"pipeline.ordered", "ordered", 0, K_BOOL, AT(p.ordered),
     .help = "write rows in input order (false: as they finish)"},
    {"pipeline.memory_budget", "memory-budget", 0, K_SIZE, AT(p.memory_budget), .f = NULL_ZERO,
     .arg = "SIZE", .help = "bytes in flight at most, e.g. 4G (~: 1/4 of RAM)"},
    {"pipeline.max_failed", "max-failed", 0, K_FRACTION, AT(p.max_failed), .arg = "F",
     .help = "stop past this fraction (0.1 or 10%) of failed rows"},
    {"pipeline.limit", "limit", 0, K_LONG, AT(p.limit), .lo = 1, .hi = LONG_MAX, .f = NULL_ZERO,
     .arg = "N", .help = "try the job on a slice: at most N rows not done before, then stop "
                         "(~: all); the same job without it goes on from there"},
    {"pipeline.sample", "sample", 0, K_FRACTION, AT(p.sample), .f = POSITIVE, .arg = "F",
     .help = "only the rows whose id hashes below F (0.01 or 1%): the same rows every time "
             "(1: all); without it, a rerun does the others"},
    {"pipeline.dry_run", "dry-run", 0, K_BOOL, AT(p.dry_run),
     .help = "read and decode every input with no model: each a row with its format, size "
             "or error, no answer (stages after engine are refused)"},
    {"pipeline.stages", "stage", 0, K_STAGES, 0, .list = L_STAGES, .max_items = MAX_STAGES,
     .arg = "STAGE", .help = "your stages: FILE.lua or FILE.so [@read|@decode|@engine], or "
                             "{lua|plugin, after, workers, batch_size, config, columns, name}"},

    {"output.dir", "output", 'o', K_STR, AT(p.output_dir), .arg = "DIR",
     .help = "output folder (created if missing), or s3://bucket/prefix"},
    {"output.format", "format", 0, K_CHOICE, AT(p.output_format),
     .choices = "jsonl|parquet|webdataset|openai-batch", .arg = "F",
     .help = "jsonl (~), parquet or webdataset (tar shards); openai-batch: jsonl of a "
             "batch file"},
    {"output.compression", "compression", 0, K_CHOICE, AT(p.output_compression),
     .choices = "zstd|snappy|gzip|none", .arg = "C",
     .help = "Parquet: zstd (~), snappy, gzip or none"},
    {"output.errors_file", "errors-file", 0, K_STR, AT(p.errors_file), .arg = "FILE",
     .help = "failed rows (a batch file's failed requests) go here, not in the output"},
    {"output.overwrite", "overwrite", 0, K_BOOL, AT(p.overwrite),
     .help = "start over (false: the same job resumes)"},
    {"output.retry_failed", "retry-failed", 0, K_BOOL, AT(p.retry_failed),
     .help = "take the failed rows out of the output and caption those inputs again"},
    {"output.columns", "columns", 0, K_LIST, 0, .list = L_COLUMNS, .max_items = 256, .f = SPLIT,
     .arg = "A,B,...", .help = "pass only these input columns through ([]: all); NAME:TYPE types one in Parquet"},
    {"output.answer_columns", "answer-columns", 0, K_BOOL, AT(p.answer_columns),
     .help = "each property of a --json-schema answer as a typed column of its own"},
    {"output.include_image_bytes", "include-image-bytes", 0, K_BOOL, AT(p.include_image_bytes),
     .help = "Parquet: the original image bytes in image_bytes; webdataset: a member"},
    {"output.shard_rows", "shard-rows", 0, K_LONG, AT(p.shard_rows), .lo = 1, .hi = LONG_MAX,
     .arg = "N", .help = "rows per part file (each a resume point)"},
    {"output.shard_bytes", "shard-bytes", 0, K_SIZE, AT(p.shard_bytes), .f = NULL_ZERO,
     .arg = "SIZE", .help = "also cut a part once it holds SIZE bytes, e.g. 500M (~: no limit)"},
    {"output.state_dir", "state-dir", 0, K_STR, AT(p.state_dir),
     .f = NOT_EMPTY, .arg = "DIR",
     .help = "s3:// output: the local folder of its ledger and of parts being written "
             "(~: under ~/.local/state/sluice/s3/)"},

    {"batch.allow_local_images", "allow-local-images", 0, K_BOOL, AT(p.allow_local_images),
     .help = "batch file: image_url parts may name local files"},
    {"batch.ignore_model", "ignore-model", 0, K_BOOL, AT(p.ignore_model),
     .help = "batch file: run requests for another model on this one"},

    {"metrics.addr", "metrics-addr", 0, K_ADDR, AT(p.metrics_addr), .arg = "H:P",
     .help = "serve /metrics and the live page (off: no server)"},
    {"metrics.token_file", "metrics-token-file", 0, K_STR, AT(p.metrics_token_file),
     .f = NOT_EMPTY, .arg = "FILE", .help = "answer only requests bringing the token in FILE (mode 600)"},
    {"metrics.optional", NULL, 0, K_BOOL, AT(p.metrics_optional),
     .help = "an address taken: run without (default: only the default address)"},

    {"console.show", "show", 0, K_LONG, AT(console.show), .lo = 0, .hi = LONG_MAX, .arg = "N",
     .help = "print the first N captions"},
    {"console.quiet", "quiet", 'q', K_BOOL, AT(console.quiet), .help = "print only errors"},
    {"console.verbose", "verbose", 'v', K_BOOL, AT(console.verbose),
     .help = "print llama.cpp's messages too"},
    {"console.progress_every", "progress-every", 0, K_DOUBLE, AT(console.progress_every_s),
     .dlo = 0.05, .dhi = 86400, .arg = "S", .help = "seconds between progress lines in a log"},
};

#define N_OPTS ((int)(sizeof opts / sizeof *opts))
_Static_assert(N_OPTS <= MAX_OPTS, "raise MAX_OPTS");

static const char DEFAULT_METRICS_ADDR[] = "127.0.0.1:9797";

/* --- the table ---------------------------------------------------------------- */

size_t sl_config_option_count(void) { return N_OPTS; }

bool sl_config_option_at(size_t i, sl_config_option *out)
{
    if (i >= N_OPTS)
        return false;
    const opt *o = &opts[i];
    *out = (sl_config_option){
        .key = o->key, .flag = o->flag, .short_flag = o->short_flag,
        .is_switch = o->k == K_BOOL,
        .is_list = o->k == K_LIST || o->k == K_GPUS || o->k == K_URLFILE || o->k == K_STAGES,
        .arg = o->arg, .help = o->help,
    };
    return true;
}

bool sl_config_option_is_list(int i)
{
    return opts[i].k == K_LIST || opts[i].k == K_GPUS || opts[i].k == K_URLFILE ||
           opts[i].k == K_STAGES;
}

bool sl_config_option_takes_mappings(int i) { return opts[i].k == K_STAGES; }

const char *sl_config_option_choices(int i) { return opts[i].choices; }

/* Keys that moved to another section, still read under their old names. */
static const struct {
    const char *old, *now;
} moved_keys[] = {{"batch.errors_file", "output.errors_file"}};

int sl_config_find_key(const char *key, size_t len)
{
    for (int i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].key) == len && memcmp(opts[i].key, key, len) == 0)
            return i;
    for (size_t m = 0; m < sizeof moved_keys / sizeof *moved_keys; m++)
        if (strlen(moved_keys[m].old) == len && memcmp(moved_keys[m].old, key, len) == 0)
            return sl_config_find_key(moved_keys[m].now, strlen(moved_keys[m].now));
    return -1;
}

/* What other tools call some settings: vLLM's sampling parameters and
 * engine arguments, Ray Data LLM's processor config, OpenAI's request,
 * Hugging Face's generate(). A job moved from them names them first, so an
 * unknown key or flag of these names is told the setting. Never taken as
 * the setting: each means what its tool says, which may differ (Ray's
 * batch_size is rows per call, llama.parallel sequences decoded together). */
static const struct {
    const char *name, *key, *whose;
} foreign_names[] = {
    {"n", "sampling.samples", "vLLM's and OpenAI's n"},
    {"max_new_tokens", "sampling.max_tokens", "Hugging Face's max_new_tokens"},
    {"max_completion_tokens", "sampling.max_tokens", "OpenAI's max_completion_tokens"},
    {"repetition_penalty", "sampling.repeat_penalty", "vLLM's repetition_penalty"},
    {"guided_json", "sampling.json_schema", "vLLM's guided_json"},
    {"guided_choice", "sampling.choices", "vLLM's guided_choice"},
    {"guided_grammar", "sampling.grammar", "vLLM's guided_grammar"},
    {"guided_decoding", "sampling.json_schema", "vLLM's guided_decoding json; its choice is choices"},
    {"structured_outputs", "sampling.json_schema",
     "vLLM's structured_outputs json; its choice is choices"},
    {"max_model_len", "llama.ctx", "vLLM's max_model_len"},
    {"max_num_seqs", "llama.parallel", "vLLM's max_num_seqs"},
    {"batch_size", "llama.parallel", "Ray Data LLM's batch_size"},
    {"concurrency", "llama.replicas", "Ray Data LLM's concurrency"},
    {"model_source", "llama.model", "Ray Data LLM's model_source"},
    {"system_prompt", "prompt.system", "the system prompt"},
};

/* What other tools have and sluice has not, with what to do instead. */
static const struct {
    const char *name, *instead;
} missing_names[] = {
    {"min_tokens", "vLLM's min_tokens: sluice has no such setting; an answer ends at the "
                   "model's end token, and --max-tokens bounds it from above only"},
    {"stop_token_ids", "vLLM's stop_token_ids: sluice has no such setting; give the tokens' "
                       "text as --stop (sampling.stop)"},
    {"ignore_eos", "vLLM's ignore_eos: sluice has no such setting; an answer ends at the "
                   "model's end token or at --max-tokens"},
    {"guided_regex", "vLLM's guided_regex: sluice has no such setting; write the pattern as a "
                     "GBNF grammar: --grammar (sampling.grammar), llama engine"},
    {"best_of", "vLLM's best_of: sluice has no such setting; --samples N (sampling.samples) "
                "writes N answers, a row each; a stage may keep the best"},
    {"limit_mm_per_prompt", "vLLM's limit_mm_per_prompt: sluice needs none; a row takes up "
                            "to 16 images (a server's own limit is the server's to set)"},
    {"include_stop_str_in_output", "vLLM's include_stop_str_in_output: sluice has no such "
                                   "setting; the stop string is cut from the answer, as "
                                   "vLLM's default"},
};

const char *sl_config_foreign_missing(const char *name, size_t len)
{
    for (size_t f = 0; f < sizeof missing_names / sizeof *missing_names; f++)
        if (sl_config_same_name(missing_names[f].name, name, len))
            return missing_names[f].instead;
    return NULL;
}

bool sl_config_same_name(const char *name, const char *word, size_t len)
{
    if (strlen(name) != len)
        return false;
    for (size_t j = 0; j < len; j++) {
        bool dash = (name[j] == '-' || name[j] == '_') && (word[j] == '-' || word[j] == '_');
        if (name[j] != word[j] && !dash)
            return false;
    }
    return true;
}

int sl_config_foreign_name(const char *name, size_t len, const char **whose)
{
    for (size_t f = 0; f < sizeof foreign_names / sizeof *foreign_names; f++) {
        if (sl_config_same_name(foreign_names[f].name, name, len)) {
            *whose = foreign_names[f].whose;
            return sl_config_find_key(foreign_names[f].key, strlen(foreign_names[f].key));
        }
    }
    return -1;
}

static int find_flag(const char *flag)
{
    if (flag[0] == '-' && flag[1] == '-')
        flag += 2;
    for (int i = 0; i < N_OPTS; i++)
        if (opts[i].flag && strcmp(opts[i].flag, flag) == 0)
            return i;
    return -1;
}

bool sl_config_is_section(const char *prefix, size_t len)
{
    for (int i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].key) > len && memcmp(opts[i].key, prefix, len) == 0 &&
            opts[i].key[len] == '.')
            return true;
    return false;
}

/* Levenshtein distance, capped: only short names are compared. */
int sl_config_distance(const char *a, size_t la, const char *b, size_t lb)
{
    if (la > 40 || lb > 40)
        return 99;
    int row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

void sl_config_children(const char *prefix, const char *name, char *buf, size_t size,
                        char *near, size_t near_size)
{
    size_t plen = prefix ? strlen(prefix) : 0, used = 0;
    int best = 3;
    buf[0] = near[0] = '\0';
    const char *last = NULL;
    size_t last_len = 0;
    for (int i = 0; i < N_OPTS; i++) {
        const char *k = opts[i].key;
        if (plen && (strncmp(k, prefix, plen) != 0 || k[plen] != '.'))
            continue;
        const char *child = plen ? k + plen + 1 : k;
        size_t clen = strcspn(child, ".");
        if (last && clen == last_len && memcmp(child, last, clen) == 0)
            continue; /* the same section as the row before */
        last = child;
        last_len = clen;
        int w = snprintf(buf + used, size - used, "%s%.*s", used ? ", " : "", (int)clen, child);
        if (w > 0 && (size_t)w < size - used)
            used += (size_t)w;
        int d = sl_config_distance(name, strlen(name), child, clen);
        if (d < best) {
            best = d;
            snprintf(near, near_size, "%.*s", (int)clen, child);
        }
    }
}

/* Whether `last` names key i as a job file would write it: by its flag
 * with '_' for '-' (decode_workers: image.workers), or, when `by_flag` is
 * false, by its last name. */
static bool names_key(int i, const char *last, bool by_flag)
{
    const char *dot = strrchr(opts[i].key, '.');
    if (!by_flag)
        return strcmp(dot ? dot + 1 : opts[i].key, last) == 0;
    const char *f = opts[i].flag;
    if (!f || strlen(f) != strlen(last))
        return false;
    for (size_t j = 0; f[j]; j++)
        if ((f[j] == '-' ? '_' : f[j]) != last[j])
            return false;
    return true;
}

void sl_config_elsewhere(const char *prefix, const char *name, char *buf, size_t size)
{
    enum { MAX_MEANT = 3 };
    int meant[MAX_MEANT], n = 0;
    const char *dot = strrchr(name, '.'), *last = dot ? dot + 1 : name;
    buf[0] = '\0';
    if (sl_config_is_section(name, strlen(name))) {
        snprintf(buf, size, "the section '%s' (at the top)", name);
        return;
    }
    /* a whole key, written in the wrong place */
    bool whole = dot && (meant[0] = sl_config_find_key(name, strlen(name))) >= 0;
    n = whole;
    /* the flag's name first: max_tokens is sampling's, not tasks' */
    for (int pass = 0; !whole && pass < 2; pass++)
        for (int i = 0; i < N_OPTS && n < MAX_MEANT; i++) {
            bool again = false;
            for (int m = 0; m < n; m++)
                again = again || meant[m] == i;
            if (!again && names_key(i, last, pass == 0))
                meant[n++] = i;
        }
    const char *whose = NULL;
    if (n == 0 && (meant[0] = sl_config_foreign_name(last, strlen(last), &whose)) >= 0)
        n = 1;
    if (n == 0 && dot && dot - name < 64) {
        /* a dotted name whose section is known, its key misspelt there */
        char section[64], list[1024], near[64], key[160];
        snprintf(section, sizeof section, "%.*s", (int)(dot - name), name);
        sl_config_children(section, last, list, sizeof list, near, sizeof near);
        snprintf(key, sizeof key, "%s.%s", section, near);
        if (near[0] && (meant[0] = sl_config_find_key(key, strlen(key))) >= 0)
            n = 1;
    }
    size_t plen = strlen(prefix), used = 0;
    for (int m = 0; m < n; m++) {
        const char *k = opts[meant[m]].key, *kdot = strrchr(k, '.');
        /* a key of this very section is named as it is written here */
        bool here = kdot && (size_t)(kdot - k) == plen && strncmp(k, prefix, plen) == 0;
        int w;
        if (whose && here)
            w = snprintf(buf + used, size - used, "'%s' (%s)", kdot + 1, whose);
        else if (whose)
            w = snprintf(buf + used, size - used, "'%s' (%s under %.*s: %s)", k, kdot + 1,
                         (int)(kdot - k), k, whose);
        else if (here)
            w = snprintf(buf + used, size - used, "%s'%s'", m ? " or " : "", kdot + 1);
        else if (n > 1)
            w = snprintf(buf + used, size - used, "%s'%s'", m ? " or " : "", k);
        else if (kdot)
            w = snprintf(buf + used, size - used, "'%s' (%s under %.*s)", k, kdot + 1,
                         (int)(kdot - k), k);
        else
            w = snprintf(buf + used, size - used, "'%s' (at the top, not in a section)", k);
        if (w < 0 || (size_t)w >= size - used)
            break;
        used += (size_t)w;
    }
}

/* --- the config ---------------------------------------------------------------- */

static void defaults(struct sl_config *c)
{
    memset(c, 0, sizeof *c);
    c->p = sl_caption_default_params();
    c->p.metrics_addr = DEFAULT_METRICS_ADDR;
    c->p.metrics_optional = true;
    c->console = (sl_config_console){.show = 5, .progress_every_s = 10.0};
}

sl_status sl_config_new(sl_config **out)
{
    *out = NULL;
    sl_config *c = sl_malloc(sizeof *c);
    if (!c)
        return sl_fail(SL_ERR_NOMEM, "out of memory creating a job configuration");
    defaults(c);
    c->layer = 1;
    *out = c;
    return SL_OK;
}

void sl_config_free(sl_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_owned; i++)
        sl_free(cfg->owned[i]);
    sl_free(cfg->owned);
    for (int l = 0; l < L_COUNT; l++) {
        sl_free(cfg->lists[l].items);
        sl_free(cfg->lists[l].wheres);
    }
    sl_free(cfg);
}

void sl_config_begin_layer(sl_config *cfg) { cfg->layer++; }

void sl_config_allow_files(sl_config *cfg, bool allow) { cfg->no_files = !allow; }

/* A copy owned by the config; NULL when out of memory (message set). */
static char *keep(sl_config *c, const char *s, size_t n)
{
    if (c->n_owned == c->cap_owned) {
        size_t cap = c->cap_owned ? 2 * c->cap_owned : 32;
        char **grown = sl_realloc(c->owned, cap * sizeof *grown);
        if (!grown) {
            sl_fail(SL_ERR_NOMEM, "out of memory reading the job's settings");
            return NULL;
        }
        c->owned = grown;
        c->cap_owned = cap;
    }
    char *copy = sl_strndup(s, n);
    if (!copy) {
        sl_fail(SL_ERR_NOMEM, "out of memory reading the job's settings");
        return NULL;
    }
    c->owned[c->n_owned++] = copy;
    return copy;
}

/* The caption parameters point at the lists; they move when a list grows. */
static void sync_lists(sl_config *c)
{
    cfg_list *l = c->lists;
    c->p.inputs = l[L_INPUTS].items;
    c->p.n_inputs = l[L_INPUTS].n;
    c->p.input_dir = l[L_INPUTS].n ? l[L_INPUTS].items[0] : NULL;
    c->p.include = l[L_INCLUDE].items;
    c->p.n_include = l[L_INCLUDE].n;
    c->p.exclude = l[L_EXCLUDE].items;
    c->p.n_exclude = l[L_EXCLUDE].n;
    c->p.stop = l[L_STOP].items;
    c->p.n_stop = l[L_STOP].n;
    c->p.choices = l[L_CHOICES].n ? l[L_CHOICES].items : NULL;
    c->p.n_choices = l[L_CHOICES].n;
    c->p.columns = l[L_COLUMNS].n ? l[L_COLUMNS].items : NULL;
    c->p.n_columns = l[L_COLUMNS].n;
    c->p.openai.endpoints = l[L_ENDPOINTS].items;
    c->p.openai.n_endpoints = l[L_ENDPOINTS].n;
    c->p.openai.headers = l[L_HEADERS].n ? l[L_HEADERS].items : NULL;
    c->p.openai.n_headers = l[L_HEADERS].n;
    c->p.stages = l[L_STAGES].n ? c->stages : NULL;
    c->p.n_stages = l[L_STAGES].n;
    c->p.gpus = c->p.n_gpus ? c->gpus : NULL;
}

static void touch(sl_config *c, cfg_list *l)
{
    if (l->layer != c->layer) {
        l->n = 0;
        l->layer = c->layer;
    }
}

/* The length of the column item s starts with: up to a comma outside the
 * brackets, parentheses and quotes of a type after its ':'
 * (`tags:{"list":"string"}` and `price:decimal(10,2)` hold commas; a name's
 * own quotes do not count). */
static size_t item_length(const char *s, bool *unclosed)
{
    size_t n = 0;
    int depth = 0;
    bool quoted = false, typed = false;
    for (; s[n] && (quoted || depth > 0 || s[n] != ','); n++) {
        if (!typed) {
            typed = s[n] == ':';
            continue;
        }
        if (quoted && s[n] == '\\' && s[n + 1])
            n++;
        else if (s[n] == '"')
            quoted = !quoted;
        else if (!quoted && (s[n] == '{' || s[n] == '[' || s[n] == '('))
            depth++;
        else if (!quoted && (s[n] == '}' || s[n] == ']' || s[n] == ')') && depth > 0)
            depth--;
    }
    *unclosed = depth > 0;
    return n;
}

/* One column declared twice (`a:int64,a:string`, or a stage's `[x, "x:int64"]`)
 * took the last type in silence: refused, naming both entries. specs[k] is
 * the new entry, of name length name_len; input picks --columns' reading. */
static sl_status column_once(const char *where, const char *name, const char *const *specs,
                             size_t k, size_t name_len, bool input)
{
    for (size_t j = 0; j < k; j++) {
        size_t other_len;
        bool other_typed;
        sl_pq_type other_type;
        sl_status st = input ? sl_columns_input_spec(specs[j], &other_len, &other_typed, &other_type)
                             : sl_columns_stage_spec(specs[j], &other_len, &other_typed, &other_type);
        if (st == SL_OK && other_len == name_len && memcmp(specs[j], specs[k], name_len) == 0)
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s: the %scolumns name '%.*s' twice ('%s', "
                           "'%s'): declare each column once", where, name,
                           input ? "" : "stage's ", (int)name_len, specs[k], specs[j], specs[k]);
    }
    return SL_OK;
}

static sl_status list_add(sl_config *c, int i, const char *item, size_t len, const char *where,
                          const char *name)
{
    const opt *o = &opts[i];
    cfg_list *l = &c->lists[o->list];
    touch(c, l);
    if (l->n == o->max_items)
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s takes at most %d items", where, name,
                       o->max_items);
    if (len == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s: an item is empty", where, name);
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        const char **grown = sl_realloc(l->items, (size_t)cap * sizeof *grown);
        if (grown)
            l->items = grown;
        const char **wgrown = grown ? sl_realloc(l->wheres, (size_t)cap * sizeof *wgrown) : NULL;
        if (!wgrown)
            return sl_fail(SL_ERR_NOMEM, "out of memory reading the job's settings");
        l->wheres = wgrown;
        l->cap = cap;
    }
    char *copy = keep(c, item, len);
    const char *at = keep(c, where, strlen(where));
    if (!copy || !at)
        return SL_ERR_NOMEM;
    l->wheres[l->n] = at;
    if (o->list == L_COLUMNS) {
        size_t name_len;
        bool typed;
        sl_pq_type type;
        if (sl_columns_input_spec(copy, &name_len, &typed, &type) != SL_OK) {
            char why[512]; /* sl_fail writes where sl_last_error reads */
            snprintf(why, sizeof why, "%s", sl_last_error());
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s: %s", where, name, why);
        }
        l->items[l->n] = copy;
        sl_status st = column_once(where, name, l->items, (size_t)l->n, name_len, true);
        if (st != SL_OK)
            return st;
    }
    l->items[l->n++] = copy;
    sync_lists(c);
    return SL_OK;
}

sl_status sl_config_touch_list(sl_config *c, int i, const char *where, const char *name)
{
    (void)where;
    (void)name;
    const opt *o = &opts[i];
    if (o->k == K_LIST || o->k == K_URLFILE || o->k == K_STAGES)
        touch(c, &c->lists[o->k == K_URLFILE ? L_ENDPOINTS : o->list]);
    else if (o->k == K_GPUS && c->given[i] != c->layer)
        c->p.n_gpus = 0;
    c->given[i] = c->layer;
    sync_lists(c);
    return SL_OK;
}

/* --- parsing values --------------------------------------------------------------- */

/* A number as a person writes it: strtol/strtod also take leading white
 * space (" 8", from a quoted "$N" with a blank), and strtod hex ("0x10":
 * 16 seconds) and "inf"/"nan" words, none of which is what was meant. */
static bool plain_decimal(const char *text)
{
    const char *digits = text[0] == '-' || text[0] == '+' ? text + 1 : text;
    return ((digits[0] >= '0' && digits[0] <= '9') || digits[0] == '.') &&
           !strpbrk(text, "xX");
}

static sl_status parse_long(const char *where, const char *name, const char *text, long min,
                            long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max || !plain_decimal(text))
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s expects an integer from %ld to %ld, got '%s'",
                       where, name, min, max, text);
    *out = v;
    return SL_OK;
}

static sl_status parse_double(const char *where, const char *name, const char *text, double min,
                              double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min && v <= max) || !plain_decimal(text))
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s expects a number from %g to %g, got '%s'", where,
                       name, min, max, text);
    *out = v;
    return SL_OK;
}

/* "512M", "4G", "1048576" -> bytes. */
static sl_status parse_size(const char *where, const char *name, const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    double mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    /* 2^63: a larger count of bytes is no budget anyone means, and would not convert */
    if (errno || end == text || *end || !(v * mult >= 1024 * 1024) || !(v * mult < 0x1p63) ||
        !plain_decimal(text))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s%s expects a size of at least 1M such as 512M or 4G, got '%s'", where,
                       name, text);
    *out = (uint64_t)(v * mult);
    return SL_OK;
}

/* "0.1" or "10%" -> 0.1 */
static sl_status parse_fraction(const char *where, const char *name, const char *text,
                                double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (*end == '%') {
        v /= 100.0;
        end++;
    }
    if (errno || end == text || *end || !(v >= 0.0 && v <= 1.0) || !plain_decimal(text))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s%s expects a fraction from 0 to 1 or a percentage, got '%s'", where,
                       name, text);
    *out = v;
    return SL_OK;
}

/* "RRGGBB" or "#RRGGBB" (hex) -> three bytes. */
static sl_status parse_rgb(const char *where, const char *name, const char *text, uint8_t rgb[3])
{
    const char *hex = text[0] == '#' ? text + 1 : text;
    unsigned v[3];
    if (strlen(hex) != 6 || strspn(hex, "0123456789abcdefABCDEF") != 6 ||
        sscanf(hex, "%2x%2x%2x", &v[0], &v[1], &v[2]) != 3)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s%s expects a colour as RRGGBB hex (e.g. ffffff), got '%s'", where, name,
                       text);
    for (int i = 0; i < 3; i++)
        rgb[i] = (uint8_t)v[i];
    return SL_OK;
}

/* "I/N" with 0 <= I < N. */
static sl_status parse_shard(const char *where, const char *name, const char *arg,
                             unsigned *index, unsigned *count)
{
    char *slash, *end = NULL;
    errno = 0;
    unsigned long i = strtoul(arg, &slash, 10);
    unsigned long n = *slash == '/' ? strtoul(slash + 1, &end, 10) : 0;
    if (errno || slash == arg || *slash != '/' || end == slash + 1 || *end || n == 0 ||
        n > 1000000 || i >= n || arg[0] == '-' || slash[1] == '-' || !(arg[0] >= '0' && arg[0] <= '9'))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s%s takes I/N with 0 <= I < N, e.g. 0/8; got '%s'", where, name, arg);
    *index = (unsigned)i;
    *count = (unsigned)n;
    return SL_OK;
}

/* "0,1,3" or one number: device indexes, each once across the list. */
static sl_status add_gpus(sl_config *c, const char *where, const char *name, const char *arg,
                          bool split)
{
    const char *s = arg;
    int n = c->p.n_gpus;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > 1023 || (*end && (*end != ',' || !split)) ||
            n == MAX_GPUS || *s == ' ' || *s == '+')
            goto bad;
        for (int i = 0; i < n; i++)
            if (c->gpus[i] == v)
                goto bad;
        c->gpus[n++] = (int)v;
        s = *end ? end + 1 : end;
        if (*end && !*s)
            goto bad;
    }
    if (n > c->p.n_gpus) {
        c->p.n_gpus = n;
        sync_lists(c);
        return SL_OK;
    }
bad:
    return sl_fail(SL_ERR_INVALID_ARG,
                   "%s%s takes distinct device numbers (at most %d) separated by commas, e.g. "
                   "0,1,2,3; got '%s'", where, name, MAX_GPUS, arg);
}

/* A small file read whole, less a UTF-8 byte order mark; *len its size. */
static sl_status read_small_file(const char *where, const char *name, const char *path,
                                 size_t limit, char **out, size_t *len)
{
    *out = NULL;
    FILE *fp = fopen(path, "rbe");
    if (!fp)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "%s%s '%s': %s", where,
                       name, path, strerror(errno));
    char *buf = sl_malloc(limit + 1);
    if (!buf) {
        fclose(fp);
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
    }
    size_t n = fread(buf, 1, limit + 1, fp);
    bool err = ferror(fp);
    fclose(fp);
    if (err || n > limit) {
        sl_free(buf);
        if (err)
            return sl_fail(SL_ERR_IO, "%s%s '%s': cannot be read", where, name, path);
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s '%s' is larger than %zu bytes", where, name,
                       path, limit);
    }
    /* A UTF-8 byte order mark (Notepad and other Windows tools save one)
     * is no part of the text, as a manifest's is not: a tasks file or a
     * schema opening with one was "not JSON ... near ''" (the mark
     * invisible), and a prompt file's went to the model. */
    if (n >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0) {
        n -= 3;
        memmove(buf, buf + 3, n);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return SL_OK;
}

/* --endpoints-file: one URL a line; blank lines and # comments skipped, a
 * comment also after the URL ("http://gpu1:8000  # rack 3": a URL holds no
 * white space, so white space then '#' begins one). */
static sl_status add_url_file(sl_config *c, const char *where, const char *name,
                              const char *path)
{
    char *text;
    size_t len;
    sl_status st = read_small_file(where, name, path, SL_CONFIG_MAX_FILE_BYTES, &text, &len);
    if (st != SL_OK)
        return st;
    int ep = sl_config_find_key("openai.endpoints", strlen("openai.endpoints"));
    touch(c, &c->lists[L_ENDPOINTS]);
    int line_no = 0;
    for (char *line = text, *next; st == SL_OK && line; line = next) {
        line_no++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        line[strcspn(line, "\r")] = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '#')
            continue;
        char *end = line + strcspn(line, " \t");
        char *rest = end + strspn(end, " \t");
        if (*rest && *rest != '#') {
            st = sl_fail(SL_ERR_INVALID_ARG,
                         "%s%s '%s', line %d: '%s' is not one URL (a line holds one URL, "
                         "then at most a # comment)",
                         where, name, path, line_no, line);
            break;
        }
        *end = '\0';
        if (*line)
            st = list_add(c, ep, line, strlen(line), where, name);
    }
    sl_free(text);
    return st;
}

static sl_status check_json_schema(const char *text, size_t len, const char *what)
{
    sl_json_schema *schema;
    sl_status st = sl_json_schema_parse(text, len, what, &schema);
    sl_json_schema_free(schema);
    return st;
}

static sl_status check_grammar(const char *text, size_t len, const char *what)
{
    if (strlen(text) != len)
        return sl_fail(SL_ERR_INVALID_ARG, "%s holds a NUL byte: a GBNF grammar is text", what);
    return sl_llama_grammar_check(text, what);
}

/* --response-format, --json-schema, --grammar: the file's text is what the
 * job uses (read once, here, and checked when the row says how), its path
 * what is printed. */
static sl_status set_text_file(sl_config *c, int i, const char *where, const char *name,
                               const char *path)
{
    char *text;
    size_t len;
    sl_status st = read_small_file(where, name, path, SL_CONFIG_MAX_FILE_BYTES, &text, &len);
    if (st != SL_OK)
        return st;
    if (opts[i].check) {
        char *what = sl_asprintf("%s%s '%s'", where, name, path);
        st = what ? opts[i].check(text, len, what)
                  : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
        sl_free(what);
        if (st != SL_OK) {
            sl_free(text);
            return st;
        }
    }
    const char *kept = keep(c, text, len);
    sl_free(text);
    const char *kept_path = kept ? keep(c, path, strlen(path)) : NULL;
    if (!kept_path)
        return SL_ERR_NOMEM;
    *(const char **)((char *)c + opts[i].off) = kept;
    c->file_path[i] = kept_path;
    return SL_OK;
}

/* text's position in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *text)
{
    size_t n = strlen(text);
    int index = 0;
    for (const char *s = choices; *s; index++) {
        size_t len = strcspn(s, "|");
        if (len == n && memcmp(s, text, n) == 0)
            return index;
        s += len + (s[len] == '|');
    }
    return -1;
}

/* Memory owned by the config (zeroed); NULL when out of memory (message set). */
static void *keep_mem(sl_config *c, size_t size)
{
    char *mem = keep(c, "", 0);
    if (!mem)
        return NULL;
    char *grown = sl_realloc(mem, size ? size : 1);
    if (!grown)
        return NULL; /* mem stays owned */
    memset(grown, 0, size ? size : 1);
    c->owned[c->n_owned - 1] = grown;
    return grown;
}

/* A stage's string member, kept; *out stays NULL when absent. */
static sl_status stage_string(sl_config *c, const json_t *stage, const char *key,
                              const char *where, const char *name, const char **out)
{
    const json_t *v = json_object_get(stage, key);
    if (!v)
        return SL_OK;
    if (!json_is_string(v) || !json_string_length(v))
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage's %s is a non-empty text", where, name,
                       key);
    *out = keep(c, json_string_value(v), json_string_length(v));
    return *out ? SL_OK : SL_ERR_NOMEM;
}

static sl_status stage_int(const json_t *stage, const char *key, long hi, const char *where,
                           const char *name, int *out)
{
    const json_t *v = json_object_get(stage, key);
    if (!v)
        return SL_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > hi) {
        char value[120];
        sl_config_json_got(v, value, sizeof value);
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage's %s is an integer from 1 to %ld%s",
                       where, name, key, hi, value);
    }
    *out = (int)json_integer_value(v);
    return SL_OK;
}

/* "FILE[@PLACE]" -> {"lua"|"plugin": FILE, "after": PLACE}. */
static json_t *stage_short_form(const char *text)
{
    const char *at = strrchr(text, '@');
    size_t flen = at ? (size_t)(at - text) : strlen(text);
    bool lua = flen > 4 && memcmp(text + flen - 4, ".lua", 4) == 0;
    json_t *o = json_object();
    if (!o || json_object_set_new(o, lua ? "lua" : "plugin", json_stringn(text, flen)) ||
        (at && json_object_set_new(o, "after", json_string(at + 1)))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* One stage: a JSON object's text (a job file's mapping comes as one) or
 * the short form; checked, kept as item j of the list and parsed into
 * c->stages[j]. */
static sl_status add_stage(sl_config *c, int i, const char *where, const char *name,
                           const char *text)
{
    static const char *const keys[] = {"name",    "lua",        "plugin", "after",  "workers",
                                       "batch_size", "config", "columns", "time_limit"};
    /* The short form without a file ('' or "@engine") would be taken for
     * a plugin named "": say what is missing and what a stage looks like. */
    if (text[0] != '{' && (!text[0] || strrchr(text, '@') == text))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s%s: the stage %s is empty: give a script or plugin file, and where "
                       "it goes if not after decode: FILE.lua or FILE.so[@read|@decode|@engine] "
                       "(examples/tags.lua@engine), or a JSON object "
                       "({\"lua\": \"examples/tags.lua\", \"after\": \"engine\"})",
                       where, name, text[0] ? "file name" : "spec");
    /* A stage is kept as JSON, which holds UTF-8 only: a file name of
     * other bytes (a Latin-1 one) failed as "out of memory reading a stage". */
    if (text[0] != '{' && !sl_utf8_valid(text, strlen(text)))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s%s: the stage file name '%s' is not UTF-8 (a stage is kept as JSON, "
                       "which holds UTF-8 only): rename the file",
                       where, name, text);
    json_error_t err;
    json_t *stage = text[0] == '{' ? json_loads(text, JSON_REJECT_DUPLICATES, &err)
                                   : stage_short_form(text);
    if (!stage || !json_is_object(stage)) {
        json_decref(stage);
        return text[0] == '{'
                   ? sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage given as text must be a JSON "
                                                 "object: %s", where, name, err.text)
                   : sl_fail(SL_ERR_NOMEM, "out of memory reading a stage");
    }
    sl_stage_spec spec = {0};
    sl_status st = SL_OK;
    const char *key;
    json_t *v;
    json_object_foreach(stage, key, v) {
        size_t k = 0;
        while (k < sizeof keys / sizeof *keys && strcmp(keys[k], key) != 0)
            k++;
        if (k == sizeof keys / sizeof *keys) {
            int best = 3;
            const char *near = NULL;
            for (k = 0; k < sizeof keys / sizeof *keys; k++) {
                int d = sl_config_distance(key, strlen(key), keys[k], strlen(keys[k]));
                if (d < best)
                    best = d, near = keys[k];
            }
            st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage has no key '%s'%s%s%s its keys are "
                                             "name, lua, plugin, after, workers, batch_size, "
                                             "config, columns, time_limit", where, name, key,
                         near ? "; did you mean '" : "", near ? near : "", near ? "'?" : ";");
            break;
        }
    }
    if (st == SL_OK)
        st = stage_string(c, stage, "name", where, name, &spec.name);
    if (st == SL_OK)
        st = stage_string(c, stage, "lua", where, name, &spec.lua);
    if (st == SL_OK)
        st = stage_string(c, stage, "plugin", where, name, &spec.plugin);
    if (st == SL_OK)
        st = stage_string(c, stage, "after", where, name, &spec.after);
    if (st == SL_OK)
        st = stage_int(stage, "workers", 1024, where, name, &spec.workers);
    if (st == SL_OK)
        st = stage_int(stage, "batch_size", 65536, where, name, &spec.batch_size);
    if (st == SL_OK && !spec.lua == !spec.plugin)
        st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage is a Lua script (lua: FILE.lua) or a C "
                                         "plugin (plugin: FILE.so): give one of the two", where,
                     name);
    json_t *limit = json_object_get(stage, "time_limit");
    if (st == SL_OK && limit) {
        double s = json_number_value(limit);
        char value[120];
        sl_config_json_got(limit, value, sizeof value);
        if (!json_is_number(limit) || !(s >= 0 && s <= 86400))
            st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage's time_limit is seconds, 0 (none) "
                                             "to 86400%s", where, name, value);
        else if (spec.plugin)
            st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: time_limit is for Lua stages (a plugin's C "
                                             "code cannot be stopped safely)", where, name);
        spec.time_limit_s = s > 0 ? s : -1.0; /* the C field's 0 is the default */
    }
    if (st == SL_OK && spec.after && choice_index("read|decode|engine", spec.after) < 0)
        st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage comes after read, decode or engine, not "
                                         "'%s'", where, name, spec.after);
    json_t *config = json_object_get(stage, "config");
    if (st == SL_OK && config) {
        char *dumped = json_is_object(config) ? json_dumps(config, JSON_COMPACT) : NULL;
        if (!json_is_object(config))
            st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage's config is a mapping of its own "
                                             "settings", where, name);
        else if (!dumped || !(spec.config = keep(c, dumped, strlen(dumped))))
            st = sl_fail(SL_ERR_NOMEM, "out of memory reading a stage");
        free(dumped);
    }
    json_t *cols = json_object_get(stage, "columns");
    if (st == SL_OK && cols) {
        size_t n = json_is_array(cols) ? json_array_size(cols) : 0;
        const char **names = n ? keep_mem(c, n * sizeof *names) : NULL;
        if (!json_is_array(cols) || n > 256)
            st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage's columns are a list of at most 256 "
                                             "names", where, name);
        else if (n && !names)
            st = SL_ERR_NOMEM;
        for (size_t k = 0; st == SL_OK && k < n; k++) {
            const json_t *col = json_array_get(cols, k);
            size_t name_len;
            bool typed;
            sl_pq_type type;
            if (!json_is_string(col) || !json_string_length(col))
                st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: a stage's columns are names (text)",
                             where, name);
            else if (sl_columns_stage_spec(json_string_value(col), &name_len, &typed, &type) !=
                     SL_OK) {
                char why[256]; /* the message is rewritten in the same buffer */
                snprintf(why, sizeof why, "%s", sl_last_error());
                st = sl_fail(SL_ERR_INVALID_ARG, "%s%s: %s (a stage's columns are NAME or "
                             "NAME:TYPE)", where, name, why);
            }
            else if (!(names[k] = keep(c, json_string_value(col), json_string_length(col))))
                st = SL_ERR_NOMEM;
            if (st == SL_OK)
                st = column_once(where, name, names, k, name_len, false);
        }
        spec.columns = names;
        spec.n_columns = (int)n;
    }
    char *canon = st == SL_OK ? json_dumps(stage, JSON_INDENT(0) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(stage);
    if (st == SL_OK && !canon)
        st = sl_fail(SL_ERR_NOMEM, "out of memory reading a stage");
    if (st == SL_OK && (st = list_add(c, i, canon, strlen(canon), where, name)) == SL_OK)
        c->stages[c->lists[L_STAGES].n - 1] = spec;
    free(canon);
    return st;
}

static size_t kind_size(kind k)
{
    switch (k) {
    case K_STR: case K_CHOICE: case K_ADDR: return sizeof(const char *);
    case K_INT: case K_ENUM: return sizeof(int);
    case K_LONG: return sizeof(long);
    case K_U64: case K_SIZE: return sizeof(uint64_t);
    case K_UINT: return sizeof(unsigned);
    case K_FLOAT: return sizeof(float);
    case K_DOUBLE: case K_FRACTION: return sizeof(double);
    case K_BOOL: return sizeof(bool);
    case K_RGB: return 3;
    default: return 0;
    }
}

static bool parse_bool(const char *text, bool *out)
{
    if (strcmp(text, "true") == 0 || strcmp(text, "True") == 0 || strcmp(text, "TRUE") == 0)
        *out = true;
    else if (strcmp(text, "false") == 0 || strcmp(text, "False") == 0 ||
             strcmp(text, "FALSE") == 0)
        *out = false;
    else
        return false;
    return true;
}

static sl_status not_a_choice(const char *where, const char *name, const char *choices,
                              const char *value)
{
    char allowed[160];
    size_t n = 0;
    for (const char *s = choices; *s && n + 3 < sizeof allowed; s++) {
        if (*s == '|') {
            allowed[n++] = ',';
            allowed[n++] = ' ';
        } else {
            allowed[n++] = *s;
        }
    }
    allowed[n] = '\0';
    return sl_fail(SL_ERR_INVALID_ARG, "%s%s expects one of %s; got '%s'", where, name, allowed,
                   value);
}

/* Resets option i to its default. */
static void reset(sl_config *c, int i)
{
    const opt *o = &opts[i];
    struct sl_config d;
    defaults(&d);
    size_t size = kind_size(o->k);
    if (size)
        memcpy((char *)c + o->off, (const char *)&d + o->off, size);
    switch (o->k) {
    case K_LIST: case K_STAGES:
        c->lists[o->list].n = 0;
        c->lists[o->list].layer = c->layer;
        break;
    case K_GPUS: c->p.n_gpus = 0; break;
    case K_SHARD: c->p.input_shard_index = c->p.input_shard_count = 0; break;
    case K_TEXTFILE:
        *(const char **)((char *)c + o->off) = NULL;
        c->file_path[i] = NULL;
        break;
    default: break;
    }
    c->given[i] = 0;
    sync_lists(c);
}

/* "FILE[:SCALE]" -> the path's length and the scale (1 when none). A path
 * may hold ':' itself, so the text is split on its last ':' only when what
 * follows is a decimal number ("a:b.gguf" is a file, "a.gguf:0.5" one at
 * half scale). False when that number is out of a float's range. */
static bool split_lora(const char *item, size_t *path_len, float *scale)
{
    const char *colon = strrchr(item, ':');
    const char *num = colon ? colon + 1 : NULL;
    *path_len = strlen(item);
    *scale = 1.0f;
    if (!num || !*num || strspn(num, "0123456789+-.eE") != strlen(num))
        return true;
    char *end;
    errno = 0;
    double v = strtod(num, &end);
    if (end == num || *end)
        return true; /* "x:-" or "x:e": a name, not a number */
    *path_len = (size_t)(colon - item);
    *scale = (float)v;
    return errno == 0 && isfinite(*scale);
}

/* A llama.lora item as split_lora reads it: a file, and a scale in range. */
static sl_status check_lora(const char *where, const char *name, const char *item)
{
    size_t len;
    float scale;
    if (!split_lora(item, &len, &scale))
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s '%s': the scale after the last ':' is out of "
                       "range", where, name, item);
    if (len == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s '%s': no file before the scale (FILE:SCALE)",
                       where, name, item);
    return SL_OK;
}

static sl_status set_at(sl_config *c, int i, const char *value, bool split, const char *where,
                        const char *name)
{
    const opt *o = &opts[i];
    if (!value) {
        reset(c, i);
        return SL_OK;
    }
    void *field = (char *)c + o->off;
    sl_status st = SL_OK;
    long v = 0;
    double d = 0;
    switch (o->k) {
    case K_VERSION:
        if (strcmp(value, "1") != 0)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "%s%s %s: this sluice reads job files of version %d; a newer sluice "
                           "wrote this one, or the version is mistyped", where, name, value,
                           SL_CONFIG_VERSION);
        break;
    case K_STR: case K_CHOICE: case K_ADDR: {
        if (o->k == K_CHOICE && choice_index(o->choices, value) < 0)
            return not_a_choice(where, name, o->choices, value);
        /* An empty address ("$ADDR" unset) served nothing, in silence:
         * 'off' says that on purpose. */
        if (o->k == K_ADDR && !*value)
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s expects HOST:PORT (e.g. 127.0.0.1:9797; "
                           "port 0 picks a free one) or off, got ''", where, name);
        if ((o->f & NOT_EMPTY) && !*value)
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s is empty: give %s, or leave it out for "
                           "the default", where, name, o->arg);
        if (o->k == K_ADDR && strcmp(value, "off") == 0) {
            *(const char **)field = NULL;
        } else if (o->k == K_ADDR && sl_obs_address_check(value) != SL_OK) {
            /* refused now, as the server would refuse it when the run starts
             * (config check said ok to a port of 99999) */
            char why[512]; /* sl_fail writes where sl_last_error reads */
            snprintf(why, sizeof why, "%s", sl_last_error());
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s: %s", where, name, why);
        } else {
            const char *copy = keep(c, value, strlen(value));
            if (!copy)
                return SL_ERR_NOMEM;
            *(const char **)field = copy;
        }
        break;
    }
    case K_ENUM: {
        int index = choice_index(o->choices, value);
        if (index < 0)
            return not_a_choice(where, name, o->choices, value);
        *(int *)field = index;
        break;
    }
    case K_INT: case K_LONG: case K_U64: case K_UINT:
        if ((st = parse_long(where, name, value, o->lo, o->hi, &v)) != SL_OK)
            return st;
        if (o->k == K_INT)
            *(int *)field = (int)v;
        else if (o->k == K_LONG)
            *(long *)field = v;
        else if (o->k == K_U64)
            *(uint64_t *)field = (uint64_t)v;
        else
            *(unsigned *)field = (unsigned)v;
        break;
    case K_FLOAT: case K_DOUBLE:
        if ((st = parse_double(where, name, value, o->dlo, o->dhi, &d)) != SL_OK)
            return st;
        if (o->k == K_FLOAT)
            *(float *)field = (float)d;
        else
            *(double *)field = d;
        break;
    case K_SIZE:
        if ((o->f & ZERO_OFF) && strcmp(value, "0") == 0)
            *(uint64_t *)field = 0;
        else if ((st = parse_size(where, name, value, (uint64_t *)field)) != SL_OK)
            return st;
        break;
    case K_FRACTION:
        if ((st = parse_fraction(where, name, value, &d)) != SL_OK)
            return st;
        if ((o->f & POSITIVE) && d == 0.0)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "%s%s expects a fraction above 0 (0.01 or 1%%), got '%s'", where, name,
                           value);
        *(double *)field = d;
        break;
    case K_BOOL: {
        bool b;
        if (!parse_bool(value, &b))
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s expects true or false, got '%s'", where,
                           name, value);
        *(bool *)field = b;
        break;
    }
    case K_RGB:
        if ((st = parse_rgb(where, name, value, (uint8_t *)field)) != SL_OK)
            return st;
        break;
    case K_SHARD:
        if ((st = parse_shard(where, name, value, &c->p.input_shard_index,
                              &c->p.input_shard_count)) != SL_OK)
            return st;
        break;
    case K_LIST:
        touch(c, &c->lists[o->list]);
        if ((o->f & NAMED) && !sl_config_task_name_ok(value, strcspn(value, "=")))
            return sl_fail(SL_ERR_INVALID_ARG,
                           "%s%s expects %s, NAME letters, digits and _ (not first a digit, at "
                           "most %d bytes), got '%s'", where, name, o->arg, SL_TASK_NAME_MAX,
                           value);
        if ((o->f & NAMED) && !value[strcspn(value, "=")])
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s expects %s, got '%s' (no '=')", where, name,
                           o->arg, value);
        if (o->list == L_LORA && (st = check_lora(where, name, value)) != SL_OK)
            return st;
        if (split && (o->f & SPLIT)) {
            size_t before = (size_t)c->lists[o->list].n;
            /* "yes, no": the spaces after the commas are not the names'. */
            for (const char *s = value; st == SL_OK && *s;) {
                /* A column's shape holds commas; other lists' items may hold
                 * quotes and brackets (choices: 12", 24"). */
                bool unclosed = false;
                size_t len = o->list == L_COLUMNS ? item_length(s, &unclosed) : strcspn(s, ","),
                       skip = len + (s[len] == ',');
                /* `a:(,b`: the rest of the list became one name, in silence */
                if (unclosed)
                    return sl_fail(SL_ERR_INVALID_ARG,
                                   "%s%s: '%s' opens a bracket or parenthesis after its ':' that "
                                   "is never closed; close it (a type: NAME:decimal(10,2), "
                                   "NAME:{\"list\": \"string\"})", where, name, s);
                while (len && (*s == ' ' || *s == '\t'))
                    s++, len--, skip--;
                while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
                    len--;
                /* "a,,b" or "a,b,": a name left out or a stray comma,
                 * which skipping would hide (as --gpus refuses it). */
                if (!len || (s[skip - 1] == ',' && !s[skip]))
                    return sl_fail(SL_ERR_INVALID_ARG,
                                   "%s%s takes %s with no empty item (two commas together, or "
                                   "one at an end); got '%s'", where, name, o->arg, value);
                st = list_add(c, i, s, len, where, name);
                s += skip;
            }
            if (st == SL_OK && (size_t)c->lists[o->list].n == before)
                return sl_fail(SL_ERR_INVALID_ARG, "%s%s needs at least one name", where, name);
        } else {
            st = list_add(c, i, value, strlen(value), where, name);
        }
        if (st != SL_OK)
            return st;
        break;
    case K_GPUS:
        if (c->given[i] != c->layer)
            c->p.n_gpus = 0;
        if ((st = add_gpus(c, where, name, value, split)) != SL_OK)
            return st;
        break;
    case K_STAGES:
        if ((st = add_stage(c, i, where, name, value)) != SL_OK)
            return st;
        break;
    case K_TEXTFILE: case K_URLFILE:
        if (c->no_files)
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s: reading files is off here", where, name);
        st = o->k == K_URLFILE ? add_url_file(c, where, name, value)
                               : set_text_file(c, i, where, name, value);
        if (st != SL_OK)
            return st;
        break;
    }
    c->given[i] = c->layer;
    c->name[i] = keep(c, name, strlen(name));
    c->where[i] = keep(c, where, strlen(where));
    if (!c->name[i] || !c->where[i])
        return SL_ERR_NOMEM;
    return SL_OK;
}

/* A message quoting a value that holds a control character broke its line
 * there ("got '2" and "'" on the next: a YAML block scalar, `parallel: |`,
 * keeps its final newline): such characters are written as C escapes, so
 * the message stays one line and shows what the value holds. For setting
 * a value and for the checks of sl_config_resolve. */
static sl_status escape_controls(sl_status st)
{
    const char *msg = sl_last_error();
    size_t n = strlen(msg), k = 0;
    while (k < n && (unsigned char)msg[k] >= 0x20 && msg[k] != 0x7F)
        k++;
    if (k == n)
        return st;
    char *text = sl_malloc(4 * n + 1);
    if (!text)
        return st;
    size_t used = 0;
    for (const unsigned char *u = (const unsigned char *)msg; *u; u++) {
        if (*u == '\n' || *u == '\t' || *u == '\r') {
            text[used++] = '\\';
            text[used++] = *u == '\n' ? 'n' : *u == '\t' ? 't' : 'r';
        } else if (*u < 0x20 || *u == 0x7F) {
            used += (size_t)snprintf(text + used, 5, "\\x%02X", *u);
        } else {
            text[used++] = (char)*u;
        }
    }
    text[used] = '\0';
    st = sl_fail(st, "%s", text);
    sl_free(text);
    return st;
}

sl_status sl_config_set_at(sl_config *c, int i, const char *value, bool split, const char *where,
                           const char *name)
{
    sl_status st = set_at(c, i, value, split, where, name);
    return st == SL_OK ? st : escape_controls(st);
}

sl_status sl_config_set(sl_config *cfg, const char *key, const char *value)
{
    int i = sl_config_find_key(key, strlen(key));
    if (i < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "unknown setting '%s' (sluice config keys lists them)",
                       key);
    return sl_config_set_at(cfg, i, value, true, "", key);
}

sl_status sl_config_set_flag(sl_config *cfg, const char *flag, const char *value)
{
    int i = find_flag(flag);
    if (i < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "unknown flag '%s'", flag);
    char name[64];
    snprintf(name, sizeof name, "--%s", opts[i].flag);
    return sl_config_set_at(cfg, i, value, true, "", name);
}

bool sl_config_is_set(const sl_config *cfg, const char *key)
{
    int i = sl_config_find_key(key, strlen(key));
    return i >= 0 && cfg->given[i] != 0;
}

/* How a message names option i: as whatever set it, or in the style of
 * `like` (a flag or a key) when it holds its default. */
static void named(const sl_config *c, int i, int like, char *buf, size_t size)
{
    if (c->given[i])
        snprintf(buf, size, "%s", c->name[i]);
    else if (c->given[like] && c->name[like][0] == '-' && opts[i].flag)
        snprintf(buf, size, "--%s", opts[i].flag);
    else
        snprintf(buf, size, "%s", opts[i].key);
}

/* The setting a flag in a message begins at s names ("--choices", "-o"),
 * its length in *len; -1 when s begins none. */
static int flag_at(const char *msg, const char *s, size_t *len)
{
    if (s[0] != '-' || (s > msg && (isalnum((unsigned char)s[-1]) || s[-1] == '-' ||
                                    s[-1] == '_')))
        return -1;
    if (s[1] == '-') {
        size_t n = strspn(s + 2, "abcdefghijklmnopqrstuvwxyz0123456789-");
        for (int i = 0; n && i < N_OPTS; i++)
            if (opts[i].flag && strlen(opts[i].flag) == n && memcmp(opts[i].flag, s + 2, n) == 0) {
                *len = n + 2;
                return i;
            }
        return -1;
    }
    if (!isalpha((unsigned char)s[1]) || isalnum((unsigned char)s[2]) || s[2] == '-' ||
        s[2] == '_')
        return -1;
    for (int i = 0; i < N_OPTS; i++)
        if (opts[i].short_flag == s[1]) {
            *len = 2;
            return i;
        }
    return -1;
}

/* s onto buf (size bytes) at *n, cut to leave room for the '\0'. */
static void append(char *buf, size_t size, size_t *n, const char *s)
{
    size_t len = strlen(s);
    if (len > size - 1 - *n)
        len = size - 1 - *n;
    memcpy(buf + *n, s, len);
    *n += len;
}

static bool from_file(const sl_config *c, int i)
{
    return c->given[i] && c->where[i] && c->where[i][0];
}

void sl_config_explain(const sl_config *c, const char *msg, char *buf, size_t size)
{
    if (!size)
        return;
    bool any_file = false;
    for (int i = 0; i < N_OPTS && !any_file; i++)
        any_file = from_file(c, i);
    int located = -1, style = -1; /* the first file-set and the first set setting named */
    for (const char *s = msg; *s; s++) {
        size_t len;
        int i = flag_at(msg, s, &len);
        if (i < 0)
            continue;
        if (located < 0 && from_file(c, i))
            located = i;
        if (style < 0 && c->given[i])
            style = i;
    }
    /* input.paths has no flag to name it: an input's own message ("input
     * 'photos': No such file or directory") begins with the word and the
     * item, found at its own line (a name made by braces is no item's). */
    const char *item_at = NULL;
    const cfg_list *inputs = &c->lists[L_INPUTS];
    int paths = sl_config_find_key("input.paths", strlen("input.paths"));
    if (located < 0 && paths >= 0 && from_file(c, paths) && strncmp(msg, "input '", 7) == 0)
        for (int k = 0; k < inputs->n && !item_at; k++) {
            size_t len = strlen(inputs->items[k]);
            if (strncmp(msg + 7, inputs->items[k], len) == 0 && msg[7 + len] == '\'')
                item_at = inputs->wheres[k];
        }
    bool keys = style >= 0 ? from_file(c, style) : any_file;
    size_t n = 0;
    if (located >= 0)
        append(buf, size, &n, c->where[located]);
    else if (item_at)
        append(buf, size, &n, item_at);
    for (const char *s = msg; *s && n + 1 < size;) {
        size_t len;
        int i = flag_at(msg, s, &len);
        if (i >= 0 && (from_file(c, i) || (!c->given[i] && keys))) {
            append(buf, size, &n, from_file(c, i) ? c->name[i] : opts[i].key);
            s += len;
        } else {
            buf[n++] = *s++;
        }
    }
    buf[n] = '\0';
}

/* The task named `name` (len bytes), or NULL. */
static sl_caption_task *task_named(sl_config *c, const char *name, size_t len)
{
    for (int i = 0; i < c->p.n_tasks; i++)
        if (strlen(c->tasks[i].name) == len && memcmp(c->tasks[i].name, name, len) == 0)
            return &c->tasks[i];
    return NULL;
}

/* Option i's NAME=VALUE items, each applied to its task by set(). */
static sl_status per_task(sl_config *c, int list, const char *key,
                          sl_status (*set)(sl_caption_task *t, const char *where,
                                           const char *what, const char *v))
{
    int i = sl_config_find_key(key, strlen(key));
    char what[96];
    named(c, i, i, what, sizeof what);
    const cfg_list *l = &c->lists[list];
    for (int k = 0; k < l->n; k++) {
        const char *item = l->items[k];
        size_t len = strcspn(item, "=");
        sl_caption_task *t = task_named(c, item, len);
        const char *where = c->where[i] ? c->where[i] : "";
        if (!t)
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s '%s': there is no task '%.*s' (--task, "
                           "--tasks)", where, what, item, (int)len, item);
        /* The last would win in silence; the user meant one of them. */
        for (int k2 = 0; k2 < k; k2++)
            if (strcspn(l->items[k2], "=") == len && memcmp(l->items[k2], item, len) == 0)
                return sl_fail(SL_ERR_INVALID_ARG, "%s%s: task '%.*s' is given twice ('%s', "
                               "'%s'); keep one", where, what, (int)len, item, l->items[k2],
                               item);
        sl_status st = set(t, where, what, item + len + 1);
        if (st != SL_OK)
            return st;
    }
    return SL_OK;
}

static sl_status set_task_max_tokens(sl_caption_task *t, const char *where, const char *what,
                                     const char *v)
{
    long n = 0; /* set when st is SL_OK: said for -O3 */
    sl_status st = parse_long(where, what, v, 1, 1 << 20, &n);
    if (st == SL_OK)
        t->sampling.max_tokens = (int)n;
    return st;
}

static sl_status set_task_temperature(sl_caption_task *t, const char *where, const char *what,
                                      const char *v)
{
    double d = 0; /* set when st is SL_OK: said for -O3 */
    sl_status st = parse_double(where, what, v, 0, 100, &d);
    if (st == SL_OK)
        t->sampling.temperature = (float)d;
    return st;
}

/* A task of choices is answered at one position, so a max_tokens given
 * for it (in the tasks file, by tasks.max_tokens, or the job's where
 * every answer is a choice) is not used, nor are the job's top-p, top-k,
 * min-p, repeat penalty and stop strings there: said, as the job goes on
 * as it would without them. `from_file[i]`: the tasks file gave task i
 * a max_tokens. */
static void warn_unused_with_choices(const sl_config *c, const bool *from_file)
{
    static const char why[] = "the answer is one of the choices, scored at one position; "
                              "drop it";
    int job = sl_config_find_key("sampling.max_tokens", 19);
    int per = sl_config_find_key("tasks.max_tokens", 16);
    int choices = sl_config_find_key("sampling.choices", 16);
    char a[96], b[96];
    bool all_choices = c->p.n_tasks > 0 || c->p.n_choices > 0;
    for (int i = 0; i < c->p.n_tasks; i++)
        all_choices = all_choices && (c->tasks[i].n_choices > 0 || c->p.n_choices > 0);
    if (all_choices && c->given[job]) {
        named(c, job, job, a, sizeof a);
        named(c, choices, job, b, sizeof b);
        sl_log(SL_LOG_WARN, "%s%s does not apply with %s: %s", c->where[job], a, b, why);
    }
    /* Choices are drawn from their scores, at the temperature alone: a
     * vLLM guided_choice's top_k 1 answered the most likely choice, here
     * a draw among them all, which the user must be told. */
    static const char *const unused[] = {"sampling.top_p", "sampling.top_k", "sampling.min_p",
                                         "sampling.repeat_penalty", "sampling.presence_penalty",
                                         "sampling.frequency_penalty", "sampling.stop"};
    for (size_t u = 0; all_choices && u < sizeof unused / sizeof *unused; u++) {
        int k = sl_config_find_key(unused[u], strlen(unused[u]));
        if (!c->given[k])
            continue;
        named(c, k, k, a, sizeof a);
        named(c, choices, k, b, sizeof b);
        sl_log(SL_LOG_WARN, "%s%s does not apply with %s: the answer is one of the choices, "
               "picked by their scores (drawn at the temperature when above 0); drop it",
               c->where[k], a, b);
    }
    for (int i = 0; i < c->p.n_tasks; i++) {
        const sl_caption_task *t = &c->tasks[i];
        if (t->n_choices == 0 && c->p.n_choices == 0)
            continue;
        if (from_file[i])
            sl_log(SL_LOG_WARN, "%s: task '%s': sampling.max_tokens does not apply to a task of "
                   "choices: %s", c->tasks_file, t->name, why);
        const cfg_list *l = &c->lists[L_TASK_MAXT];
        for (int k = 0; k < l->n; k++) {
            size_t len = strcspn(l->items[k], "=");
            if (strlen(t->name) != len || memcmp(t->name, l->items[k], len) != 0)
                continue;
            named(c, per, per, a, sizeof a);
            sl_log(SL_LOG_WARN, "%s%s '%s': task '%s' is a task of choices, where max_tokens "
                   "does not apply: %s", c->where[per] ? c->where[per] : "", a, l->items[k],
                   t->name, why);
        }
    }
}

/* The tasks: those of the tasks file, then the --task ones, then their
 * own max_tokens and temperature. */
static sl_status build_tasks(sl_config *c)
{
    int file_opt = sl_config_find_key("tasks.file", 10);
    int task_opt = sl_config_find_key("tasks.prompts", 13);
    bool file_max_tokens[SL_MAX_TASKS] = {false};
    c->p.n_tasks = 0;
    c->p.tasks = NULL;
    c->p.tasks_file = c->tasks_file;
    if (c->tasks_file) {
        char *text, what[96];
        size_t len;
        named(c, file_opt, file_opt, what, sizeof what);
        if (c->no_files)
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s: reading files is off here",
                           c->where[file_opt] ? c->where[file_opt] : "", what);
        sl_status st = read_small_file(c->where[file_opt] ? c->where[file_opt] : "", what,
                                       c->tasks_file, SL_CONFIG_MAX_FILE_BYTES, &text, &len);
        if (st != SL_OK)
            return st;
        sl_task_spec specs[SL_MAX_TASKS];
        int n = 0;
        st = sl_config_parse_tasks(text, len, c->tasks_file, &c->p.sampling, specs, SL_MAX_TASKS,
                                   &n);
        sl_free(text);
        for (int i = 0; st == SL_OK && i < n; i++) {
            sl_caption_task *t = &c->tasks[i];
            *t = (sl_caption_task){.sampling = specs[i].sampling};
            if (!(t->name = keep(c, specs[i].name, strlen(specs[i].name))) ||
                !(t->prompt = keep(c, specs[i].prompt, strlen(specs[i].prompt))) ||
                (specs[i].system &&
                 !(t->system_prompt = keep(c, specs[i].system, strlen(specs[i].system)))) ||
                (specs[i].json_schema &&
                 !(t->json_schema = keep(c, specs[i].json_schema, strlen(specs[i].json_schema)))))
                st = SL_ERR_NOMEM;
            for (int k = 0; st == SL_OK && k < specs[i].n_choices; k++)
                if (!(c->task_choices[i][k] =
                          keep(c, specs[i].choices[k], strlen(specs[i].choices[k]))))
                    st = SL_ERR_NOMEM;
            if (st == SL_OK) {
                t->choices = specs[i].n_choices ? c->task_choices[i] : NULL;
                t->n_choices = specs[i].n_choices;
                file_max_tokens[i] = specs[i].max_tokens_set;
                c->p.n_tasks++;
            }
        }
        sl_task_specs_free(specs, n);
        if (st != SL_OK)
            return st;
    }
    const cfg_list *l = &c->lists[L_TASKS];
    for (int k = 0; k < l->n; k++) {
        const char *item = l->items[k], *prompt = item + strcspn(item, "=") + 1;
        size_t len = (size_t)(prompt - 1 - item);
        char what[96];
        named(c, task_opt, task_opt, what, sizeof what);
        const char *where = c->where[task_opt] ? c->where[task_opt] : "";
        if (task_named(c, item, len))
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s: task '%.*s' is given twice", where, what,
                           (int)len, item);
        if (c->p.n_tasks == SL_MAX_TASKS)
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s: at most %d tasks", where, what,
                           SL_MAX_TASKS);
        sl_caption_task *t = &c->tasks[c->p.n_tasks];
        *t = (sl_caption_task){.sampling = c->p.sampling};
        if (prompt[0] == '@') {
            if (c->no_files)
                return sl_fail(SL_ERR_INVALID_ARG, "%s%s: reading files is off here", where, what);
            char *text;
            size_t tlen;
            sl_status st = read_small_file(where, what, prompt + 1, SL_CONFIG_MAX_FILE_BYTES,
                                           &text, &tlen);
            if (st != SL_OK)
                return st;
            while (tlen > 0 && (text[tlen - 1] == '\n' || text[tlen - 1] == '\r'))
                tlen--; /* a file's last line break is not part of the prompt */
            bool ok = strlen(text) >= tlen && sl_utf8_valid(text, tlen);
            t->prompt = ok ? keep(c, text, tlen) : NULL;
            sl_free(text);
            if (!ok)
                return sl_fail(SL_ERR_INVALID_ARG, "%s%s '%s': the prompt file is not UTF-8 "
                               "text", where, what, prompt + 1);
        } else {
            t->prompt = keep(c, prompt, strlen(prompt));
        }
        if (!t->prompt || !(t->name = keep(c, item, len)))
            return SL_ERR_NOMEM;
        if (!*t->prompt)
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s: task '%s' has an empty prompt", where, what,
                           t->name);
        c->p.n_tasks++;
    }
    sl_status st;
    if ((st = per_task(c, L_TASK_MAXT, "tasks.max_tokens", set_task_max_tokens)) != SL_OK ||
        (st = per_task(c, L_TASK_TEMP, "tasks.temperature", set_task_temperature)) != SL_OK)
        return st;
    warn_unused_with_choices(c, file_max_tokens);
    int rpt = sl_config_find_key("tasks.rows_per_task", 19);
    if (c->p.rows_per_task && c->p.n_tasks == 0) {
        char a[96];
        named(c, rpt, rpt, a, sizeof a);
        return sl_fail(SL_ERR_INVALID_ARG, "%s%s needs tasks (--task NAME=PROMPT or --tasks "
                       "FILE)", c->where[rpt] ? c->where[rpt] : "", a);
    }
    /* A task's prompt replaces the job's, so a prompt set beside tasks
     * would be ignored: say so rather than run a job the user did not mean.
     * (prompt.system stays: it is every task's default system prompt.) */
    for (int i = 0; c->p.n_tasks > 0 && i < N_OPTS; i++) {
        if (!(opts[i].f & NO_TASKS) || !c->given[i])
            continue;
        int by = c->lists[L_TASKS].n > 0 ? task_opt : file_opt;
        char a[96], b[96];
        named(c, i, i, a, sizeof a);
        named(c, by, by, b, sizeof b);
        const char *at = c->where[by] ? c->where[by] : "";
        size_t at_len = strlen(at);
        while (at_len > 0 && (at[at_len - 1] == ' ' || at[at_len - 1] == ':'))
            at_len--; /* "job.yaml:9:3: " names a place in parentheses below */
        bool column = strcmp(opts[i].key, "prompt.column") == 0;
        bool turns = strcmp(opts[i].key, "prompt.turns") == 0;
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s%s is not used beside tasks (%s%s%.*s): each task brings its own "
                       "prompt. Drop %s, or %s", c->where[i] ? c->where[i] : "", a, b,
                       at_len ? " at " : "", (int)at_len, at, a,
                       column ? "name the row's columns in the tasks' prompts ({NAME})"
                       : turns ? "answer the conversations in a job without tasks"
                               : "make it a task of its own (NAME=PROMPT)");
    }
    c->p.tasks = c->p.n_tasks ? c->tasks : NULL;
    return SL_OK;
}

/* llama.lora's items (checked when set) into the adapters the engine
 * takes. */
static sl_status build_lora(sl_config *c)
{
    const cfg_list *l = &c->lists[L_LORA];
    for (int k = 0; k < l->n; k++) {
        size_t len;
        float scale;
        split_lora(l->items[k], &len, &scale);
        c->lora[k] = (sl_llama_lora){.path = keep(c, l->items[k], len), .scale = scale};
        if (!c->lora[k].path)
            return SL_ERR_NOMEM;
    }
    c->p.llama.lora = l->n ? c->lora : NULL;
    c->p.llama.n_lora = l->n;
    return SL_OK;
}

static sl_status resolve(sl_config *c)
{
    int replicas = sl_config_find_key("llama.replicas", 14);
    int optional = sl_config_find_key("metrics.optional", 16);
    int addr = sl_config_find_key("metrics.addr", 12);
    int amax = sl_config_find_key("openai.adaptive_max", 19);
    int inflight = sl_config_find_key("openai.max_in_flight", 20);
    /* for the start-up check's messages (build_tasks sets tasks_file) */
    c->p.json_schema_file = c->file_path[sl_config_find_key("sampling.json_schema", 20)];
    if (c->p.n_gpus > 0 && !c->given[replicas])
        c->p.replicas = c->p.n_gpus;
    /* The default address may be taken by another job: then run without it.
     * An address someone chose must be served. */
    if (!c->given[optional])
        c->p.metrics_optional = !c->given[addr];
    if (c->given[amax] && c->p.openai.adaptive_max_in_flight < c->p.openai.max_in_flight) {
        char a[96], b[96];
        named(c, amax, amax, a, sizeof a);
        named(c, inflight, amax, b, sizeof b);
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s%s %d is below %s %d, where the adaptive limit starts; raise it or "
                       "lower %s", c->where[amax], a, c->p.openai.adaptive_max_in_flight, b,
                       c->p.openai.max_in_flight, b);
    }
    /* A batch file's requests bring their own messages and images, and its
     * rows no columns: a setting for those would not be used, which the
     * user who gave it would not expect. */
    if (c->p.input_format && strcmp(c->p.input_format, "openai-batch") == 0) {
        static const char messages[] = "each request brings its own messages";
        static const struct {
            const char *key, *why;
        } unused[] = {{"prompt.text", messages},
                      {"prompt.column", messages},
                      {"prompt.system", messages},
                      {"prompt.turns", messages},
                      {"input.image_column", "each request names its images (image_url parts)"},
                      {"output.columns", "its rows have no columns to pass through"}};
        for (size_t k = 0; k < sizeof unused / sizeof unused[0]; k++) {
            int i = sl_config_find_key(unused[k].key, strlen(unused[k].key));
            /* (`columns: []`, as config print writes it, is given and empty) */
            if (!c->given[i] || (opts[i].k == K_LIST && c->lists[opts[i].list].n == 0))
                continue;
            char a[96];
            named(c, i, i, a, sizeof a);
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s does not apply to a batch file: %s "
                           "(docs/batch.md); drop %s", c->where[i], a, unused[k].why, a);
        }
    }
    /* One setting on the command line, two in the engine's terms. */
    c->p.sampling.logprobs = c->p.sampling.top_logprobs > 0;
    sync_lists(c);
    sl_status st = build_lora(c);
    return st == SL_OK ? build_tasks(c) : st;
}

/* The checks here quote values too (a tasks file's path, a task's name):
 * escaped as a setting's own messages are. */
sl_status sl_config_resolve(sl_config *c)
{
    sl_status st = resolve(c);
    return st == SL_OK ? st : escape_controls(st);
}

const sl_caption_params *sl_config_params(const sl_config *cfg) { return &cfg->p; }

sl_config_console sl_config_console_settings(const sl_config *cfg) { return cfg->console; }

/* --- printing ------------------------------------------------------------------- */

typedef struct out {
    FILE *fp;
    char line[512]; /* the line being built, before its comment */
    size_t len;
    bool failed, too_long;
    bool skip_comment; /* a block list put its comment on the key's line */
} out;

static void put(out *w, const char *s, size_t n)
{
    if (w->len + n < sizeof w->line) {
        memcpy(w->line + w->len, s, n);
        w->len += n;
        return;
    }
    /* A long value: flush what is built, write the rest straight out. */
    if (w->len && fwrite(w->line, 1, w->len, w->fp) != w->len)
        w->failed = true;
    w->len = 0;
    w->too_long = true;
    if (n && fwrite(s, 1, n, w->fp) != n)
        w->failed = true;
}

static void puts_(out *w, const char *s) { put(w, s, strlen(s)); }

static void end_line(out *w, const char *comment)
{
    if (w->skip_comment)
        comment = NULL;
    w->skip_comment = false;
    if (comment && !w->too_long) {
        while (w->len < 40)
            put(w, " ", 1);
        puts_(w, "  # ");
        puts_(w, comment);
    } else if (comment) {
        puts_(w, "  # ");
        puts_(w, comment);
    }
    put(w, "\n", 1);
    if (w->len && fwrite(w->line, 1, w->len, w->fp) != w->len)
        w->failed = true;
    w->len = 0;
    w->too_long = false;
}

/* One UTF-8 sequence at s (valid: checked before): its code point. */
static uint32_t decode_utf8(const unsigned char *s, size_t *n)
{
    if (s[0] < 0x80) {
        *n = 1;
        return s[0];
    }
    if (s[0] < 0xE0) {
        *n = 2;
        return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    }
    if (s[0] < 0xF0) {
        *n = 3;
        return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    }
    *n = 4;
    return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
           (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
}

/* A YAML double-quoted scalar. Characters YAML does not allow in a stream,
 * or reads as line breaks (NEL, LS, PS), are escaped. */
static void put_quoted(out *w, const char *s)
{
    put(w, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; u[i];) {
        size_t n;
        uint32_t cp = decode_utf8(u + i, &n);
        char esc[16];
        if (cp == '"' || cp == '\\') {
            esc[0] = '\\';
            esc[1] = (char)cp;
            put(w, esc, 2);
        } else if (cp == '\n') {
            puts_(w, "\\n");
        } else if (cp == '\t') {
            puts_(w, "\\t");
        } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || cp == 0x2028 ||
                   cp == 0x2029 || cp == 0xFEFF || cp == 0xFFFE || cp == 0xFFFF) {
            snprintf(esc, sizeof esc, "\\u%04X", (unsigned)cp);
            puts_(w, esc);
        } else {
            put(w, (const char *)u + i, n);
        }
        i += n;
    }
    put(w, "\"", 1);
}

/* The shortest decimal text that reads back as the same value. */
static void fmt_real(char *buf, size_t size, double v, bool as_float)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, size, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (as_float ? (float)back == (float)v : back == v)
            return;
    }
}

static bool list_is_utf8(const cfg_list *l)
{
    for (int j = 0; j < l->n; j++)
        if (!sl_utf8_valid(l->items[j], strlen(l->items[j])))
            return false;
    return true;
}

/* Option i's value, on the current line (block lists add lines). */
static void put_value(out *w, const sl_config *c, int i, const char *indent)
{
    const opt *o = &opts[i];
    const void *field = (const char *)c + o->off;
    char num[64];
    switch (o->k) {
    case K_VERSION: snprintf(num, sizeof num, "%d", SL_CONFIG_VERSION); puts_(w, num); break;
    case K_STR: case K_CHOICE: {
        const char *s = *(const char *const *)field;
        if ((o->f & NO_TASKS) && !c->given[i] &&
            (c->p.n_tasks > 0 ||
             (c->p.input_format && strcmp(c->p.input_format, "openai-batch") == 0)))
            s = NULL; /* its default would be refused beside tasks or a batch file when
                         read back */
        if (s)
            put_quoted(w, s);
        else
            puts_(w, "~");
        break;
    }
    case K_ADDR: {
        const char *s = *(const char *const *)field;
        put_quoted(w, s ? s : "off");
        break;
    }
    case K_INT: case K_LONG: case K_U64: case K_UINT: {
        uint64_t u = 0;
        long long v = o->k == K_INT ? *(const int *)field : o->k == K_LONG ? *(const long *)field : 0;
        if (o->k == K_U64)
            u = *(const uint64_t *)field;
        if (o->k == K_UINT)
            u = *(const unsigned *)field;
        bool zero = o->k == K_U64 || o->k == K_UINT ? u == 0 : v == 0;
        if (((o->f & NULL_ZERO) && zero) || ((o->f & NULL_UNSET) && !c->given[i]))
            puts_(w, "~");
        else if (o->k == K_U64 || o->k == K_UINT)
            snprintf(num, sizeof num, "%llu", (unsigned long long)u), puts_(w, num);
        else
            snprintf(num, sizeof num, "%lld", v), puts_(w, num);
        break;
    }
    case K_SIZE: {
        uint64_t u = *(const uint64_t *)field;
        if (u == 0 && !(o->f & ZERO_OFF)) {
            puts_(w, "~");
        } else {
            snprintf(num, sizeof num, "%llu", (unsigned long long)u);
            puts_(w, num);
        }
        break;
    }
    case K_FLOAT: fmt_real(num, sizeof num, *(const float *)field, true); puts_(w, num); break;
    case K_DOUBLE: case K_FRACTION:
        fmt_real(num, sizeof num, *(const double *)field, false);
        puts_(w, num);
        break;
    case K_BOOL: puts_(w, *(const bool *)field ? "true" : "false"); break;
    case K_ENUM: {
        if ((o->f & NO_TASKS) && !c->given[i] &&
            (c->p.n_tasks > 0 ||
             (c->p.input_format && strcmp(c->p.input_format, "openai-batch") == 0))) {
            puts_(w, "~"); /* as for K_STR above */
            break;
        }
        const char *at = o->choices;
        for (int index = *(const int *)field; index > 0 && *at; index--)
            at += strcspn(at, "|") + (at[strcspn(at, "|")] == '|');
        size_t len = strcspn(at, "|");
        char name_[64];
        snprintf(name_, sizeof name_, "%.*s", (int)(len < 63 ? len : 63), at);
        puts_(w, name_);
        break;
    }
    case K_RGB: {
        const uint8_t *rgb = field;
        snprintf(num, sizeof num, "\"%02x%02x%02x\"", rgb[0], rgb[1], rgb[2]);
        puts_(w, num);
        break;
    }
    case K_SHARD:
        if (c->p.input_shard_count == 0) {
            puts_(w, "~");
        } else {
            snprintf(num, sizeof num, "\"%u/%u\"", c->p.input_shard_index,
                     c->p.input_shard_count);
            puts_(w, num);
        }
        break;
    case K_GPUS:
        put(w, "[", 1);
        for (int j = 0; j < c->p.n_gpus; j++) {
            snprintf(num, sizeof num, "%s%d", j ? ", " : "", c->gpus[j]);
            puts_(w, num);
        }
        put(w, "]", 1);
        break;
    case K_TEXTFILE:
        if (c->file_path[i])
            put_quoted(w, c->file_path[i]);
        else
            puts_(w, "~");
        break;
    case K_URLFILE: puts_(w, "[]"); break;
    case K_STAGES: case K_LIST: {
        const cfg_list *l = &c->lists[o->list];
        if (l->n == 0) {
            puts_(w, "[]");
            break;
        }
        end_line(w, o->help);
        for (int j = 0; j < l->n; j++) {
            puts_(w, indent);
            puts_(w, "  - ");
            if (o->k == K_STAGES)
                puts_(w, l->items[j]); /* JSON: a YAML flow mapping */
            else
                put_quoted(w, l->items[j]);
            if (j + 1 < l->n)
                end_line(w, NULL);
        }
        w->skip_comment = true;
        break;
    }
    }
}

sl_status sl_config_write_yaml(const sl_config *c, FILE *fp)
{
    for (int i = 0; i < N_OPTS; i++) {
        const opt *o = &opts[i];
        const char *s = NULL;
        if (o->k == K_STR || o->k == K_CHOICE || o->k == K_ADDR)
            s = *(const char *const *)((const char *)c + o->off);
        else if (o->k == K_TEXTFILE)
            s = c->file_path[i];
        if ((s && !sl_utf8_valid(s, strlen(s))) ||
            ((o->k == K_LIST || o->k == K_STAGES) && !list_is_utf8(&c->lists[o->list])))
            return sl_fail(SL_ERR_INVALID_ARG,
                           "%s is not UTF-8 text, which a YAML job file cannot hold", o->key);
    }
    out w = {.fp = fp};
    puts_(&w, "# A sluice job: every setting, defaults included (sluice config print).");
    end_line(&w, NULL);
    puts_(&w, "# Run it with: sluice run FILE [flags]; the keys are in docs/jobs.md.");
    end_line(&w, NULL);
    puts_(&w, "# ~ means the default that the comment describes.");
    end_line(&w, NULL);
    const char *section = "";
    size_t section_len = 0;
    for (int i = 0; i < N_OPTS; i++) {
        const opt *o = &opts[i];
        const char *dot = strchr(o->key, '.');
        const char *leaf = o->key;
        const char *indent = "";
        if (dot) {
            size_t len = (size_t)(dot - o->key);
            if (len != section_len || memcmp(section, o->key, len) != 0) {
                end_line(&w, NULL);
                put(&w, o->key, len);
                put(&w, ":", 1);
                end_line(&w, NULL);
                section = o->key;
                section_len = len;
            }
            leaf = dot + 1;
            indent = "  ";
        }
        puts_(&w, indent);
        puts_(&w, leaf);
        puts_(&w, ": ");
        put_value(&w, c, i, indent);
        end_line(&w, o->help);
    }
    if (w.failed || fflush(fp) != 0)
        return sl_fail(SL_ERR_IO, "writing the job's settings failed: %s", strerror(errno));
    return SL_OK;
}
