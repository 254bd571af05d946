/* job/caption.c — the caption job: its parameters, checked before anything
 * starts, and sl_caption_run(): the pipeline of sluice/pipeline.h with the
 * built-in stages alone,
 *
 *   read (io/source: folder, manifest, WebDataset, Parquet) -> decode
 *   (fetch URLs, libvips; N workers) -> engine (llama.cpp or HTTP servers,
 *   one engine per replica) -> write (JSONL or Parquet parts, one writer)
 *
 * Each stage lives in its own file (job/job.h); job/pipeline.c runs them;
 * the row's columns are in job/schema.c, the resume fingerprint and ledger
 * in job/resume.c, the progress and counting threads in job/progress.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/log.h"
#include "llm/engines/llama_grammar.h"
#include "llm/json_schema.h"
#include "core/utf8.h"
#include "io/s3.h"
#include "core/alloc.h"
#include "job/batch.h"
#include "job/job.h"
#include "stage/stage.h"
#include "sluice/engine.h"
#include "sluice/pipeline.h"

sl_caption_params sl_caption_default_params(void)
{
    return (sl_caption_params){
        .prompt = "Describe this image in one sentence.",
        .sampling = sl_sampling_default(),
        .image = sl_image_default_params(),
        .video = sl_video_default_params(),
        .frame_text = "Frame at {time} s:",
        .llama = sl_llama_default_params(),
        .decode_workers = 2,
        .replicas = 1,
        .max_failed = 1.0,
        .progress_ms = 1000,
        .openai = sl_openai_default_params(),
        .jpeg_quality = 90,
        .download_timeout_s = 30.0,
        .download_retries = 2,
        .shard_rows = SL_CAPTION_DEFAULT_SHARD_ROWS,
        .sample = 1.0,
    };
}

bool job_uses_openai(const sl_caption_params *p)
{
    return p->engine && strcmp(p->engine, "openai") == 0;
}

json_t *job_prompt_value(const sl_caption_params *p, const json_t *extra)
{
    const char *name = p->prompt_column ? p->prompt_column : "prompt";
    return sl_json_column(extra, name, strlen(name));
}

bool job_answers_share_seed(const sl_caption_params *p)
{
    return job_uses_openai(p) && p->sampling.n > 1 && !p->openai.split_samples &&
           p->n_choices == 0;
}

json_t *job_json_text(const char *s)
{
    return sl_json_text(s, s ? strlen(s) : 0);
}

json_t *job_lora_json(const sl_llama_params *llama)
{
    json_t *a = json_array();
    for (int i = 0; a && i < llama->n_lora; i++)
        json_array_append_new(a, json_pack("{s:o, s:f}", "path",
                                           job_json_text(llama->lora[i].path), "scale",
                                           (double)llama->lora[i].scale));
    return a;
}

/* How messages name the job's schema (i -1) or task i's. */
static void task_schema_name(const sl_caption_params *p, int i, char *who, size_t len)
{
    if (i < 0 && p->json_schema_file)
        snprintf(who, len, "--json-schema '%s'", p->json_schema_file);
    else if (i < 0)
        snprintf(who, len, "--json-schema");
    else if (p->tasks_file)
        snprintf(who, len, "%s: task '%.64s': json_schema", p->tasks_file, p->tasks[i].name);
    else
        snprintf(who, len, "task '%.64s': json_schema", p->tasks[i].name);
}

/* --json-schema and --grammar, each with the engine that runs them: every
 * row would fail on what is found here, so it stops the job before any
 * row does (the files themselves were checked when read, naming them). */
static sl_status check_structured(const sl_caption_params *p)
{
    for (int i = -1; i < p->n_tasks; i++) {
        const char *text = i < 0 ? p->json_schema : p->tasks[i].json_schema;
        if (!text)
            continue;
        char who[512];
        task_schema_name(p, i, who, sizeof who);
        sl_json_schema *schema;
        sl_status st = sl_json_schema_parse(text, strlen(text), who, &schema);
        sl_json_schema_free(schema);
        if (st != SL_OK)
            return st;
    }
    if (job_uses_openai(p)) {
        if (p->grammar)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--grammar is for the llama engine: OpenAI-compatible servers differ "
                           "in the grammars they take; give --json-schema instead (sent as "
                           "response_format), or drop --engine openai");
        if (p->json_schema && p->openai.response_format)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--json-schema and --response-format both set the request's "
                           "response_format: keep one");
        return SL_OK;
    }
    if (p->grammar)
        return sl_llama_grammar_check(p->grammar, "--grammar");
    /* What the engine will do with each schema on every request: converted
     * here once to say now when llama.cpp cannot. */
    for (int i = -1; i < p->n_tasks; i++) {
        const char *text = i < 0 ? p->json_schema : p->tasks[i].json_schema;
        if (!text)
            continue;
        char who[512], *gbnf = NULL;
        task_schema_name(p, i, who, sizeof who);
        sl_status st = sl_llama_schema_to_grammar(text, who, &gbnf);
        sl_free(gbnf);
        if (st != SL_OK)
            return st;
    }
    return SL_OK;
}

int job_choices(const sl_caption_params *p, int t, const char *const **choices)
{
    const sl_caption_task *k = t < p->n_tasks ? &p->tasks[t] : NULL;
    bool own = k && k->n_choices > 0;
    *choices = own ? k->choices : p->n_choices > 0 ? p->choices : NULL;
    return own ? k->n_choices : p->n_choices;
}

/* A job's or task's choices (`who` names them in messages): their shape
 * (sl_choices_check), not in a batch job, without what would constrain
 * the answer otherwise (a task's own: "its json_schema", not the
 * --json-schema its tasks file's user never gave). */
static sl_status choices_check(const sl_caption_params *p, const char *who,
                               const char *const *choices, int n, const sl_sampling *sampling,
                               const char *json_schema, bool own_schema)
{
    if (n == 0)
        return SL_OK;
    sl_status st = sl_choices_check(who, choices, n);
    if (st != SL_OK)
        return st;
    if (job_is_batch(p))
        return sl_fail(SL_ERR_INVALID_ARG, "%s: a batch file's requests say what they ask; "
                                           "choices are for sluice caption", who);
    if (json_schema || p->grammar || sampling->logprobs)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: not with %s: the answer is one of the choices, "
                                           "with each one's score (column scores)",
                       who, json_schema ? (own_schema ? "its json_schema" : "--json-schema")
                            : p->grammar ? "--grammar" : "--logprobs");
    return SL_OK;
}

void job_warn_params(const sl_caption_params *p)
{
    if (p->dry_run || job_is_batch(p))
        return; /* no answers, or a batch file's requests say their own */
    for (int i = 0; i < (p->n_tasks > 0 ? p->n_tasks : 1); i++) {
        const sl_sampling *s = p->n_tasks > 0 ? &p->tasks[i].sampling : &p->sampling;
        if (s->n > 1 && s->temperature <= 0.0f)
            sl_log(SL_LOG_WARN, "%s%s%s--samples %d at temperature 0 (greedy, the default): "
                                "every answer to an image is the same one; give --temperature "
                                "(0.7, say) for answers that differ",
                   p->n_tasks > 0 ? "task '" : "", p->n_tasks > 0 ? p->tasks[i].name : "",
                   p->n_tasks > 0 ? "': " : "", s->n);
    }
}

sl_status job_check_params(const sl_caption_params *p, bool model_files)
{
    sl_status st0;
    if ((!p->input_dir || !*p->input_dir) && p->n_inputs <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "no input given");
    if (p->limit < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--limit must be >= 0 (0: no limit), got %ld", p->limit);
    if (!(p->sample > 0.0 && p->sample <= 1.0))
        return sl_fail(SL_ERR_INVALID_ARG, "--sample must be a fraction above 0 and at most 1, "
                                           "got %g", p->sample);
    if (p->shard_rows < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--shard-rows must be >= 1, got %ld", p->shard_rows);
    if (p->include_image_bytes &&
        !(p->output_format && (strcmp(p->output_format, "parquet") == 0 ||
                               strcmp(p->output_format, "webdataset") == 0)))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--include-image-bytes needs --format parquet or webdataset");
    if (!p->output_dir || !*p->output_dir)
        return sl_fail(SL_ERR_INVALID_ARG, "no output folder given (-o)");
    struct stat out_st;
    if (!sl_s3_is_url(p->output_dir) && stat(p->output_dir, &out_st) == 0 && !S_ISDIR(out_st.st_mode))
        return sl_fail(SL_ERR_INVALID_ARG, "-o '%s' is a file, not a folder: name a folder (made if it is "
                                           "missing)", p->output_dir);
    if (p->n_tasks < 0 || p->n_tasks > SL_MAX_TASKS || (p->n_tasks > 0 && !p->tasks))
        return sl_fail(SL_ERR_INVALID_ARG, "%d tasks: a job takes 0 to %d", p->n_tasks,
                       SL_MAX_TASKS);
    if (p->rows_per_task && p->n_tasks == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--rows-per-task needs tasks (--task, --tasks)");
    if (p->sampling.n < 0 || p->sampling.n > SL_MAX_ANSWERS)
        return sl_fail(SL_ERR_INVALID_ARG, "--samples takes 1 to %d answers per image, got %d",
                       SL_MAX_ANSWERS, p->sampling.n);
    for (int i = 0; i < p->n_tasks; i++) {
        const sl_caption_task *t = &p->tasks[i];
        sl_status st = caption_task_name_check(t->name ? t->name : "", p->rows_per_task);
        if (st != SL_OK)
            return st;
        for (int k = 0; k < i; k++)
            if (!strcmp(p->tasks[k].name, t->name))
                return sl_fail(SL_ERR_INVALID_ARG, "task '%s' is given twice", t->name);
        if (!p->rows_per_task && (st = caption_task_columns_check(p->tasks, i)) != SL_OK)
            return st;
        if (!t->prompt || !*t->prompt || !sl_utf8_valid(t->prompt, strlen(t->prompt)) ||
            (t->system_prompt && !sl_utf8_valid(t->system_prompt, strlen(t->system_prompt))))
            return sl_fail(SL_ERR_INVALID_ARG, "task '%s': the prompt is empty or not UTF-8",
                           t->name);
        if (t->sampling.max_tokens <= 0 || t->sampling.temperature < 0.0f)
            return sl_fail(SL_ERR_INVALID_ARG, "task '%s': max_tokens must be positive and "
                           "temperature >= 0", t->name);
    }
    sl_status cst = choices_check(p, "--choices", p->choices, p->n_choices, &p->sampling,
                                  p->json_schema, false);
    for (int i = 0; cst == SL_OK && i < p->n_tasks; i++) {
        const sl_caption_task *t = &p->tasks[i];
        char who[96];
        snprintf(who, sizeof who, "task '%s': choices", t->name);
        const char *const *choices;
        int n = job_choices(p, i, &choices);
        cst = choices_check(p, who, choices, n, &t->sampling,
                            t->json_schema ? t->json_schema : p->json_schema,
                            t->json_schema != NULL);
    }
    if (cst != SL_OK)
        return cst;
    if (p->n_tasks == 0 && (!p->prompt || !*p->prompt))
        return sl_fail(SL_ERR_INVALID_ARG, "the prompt is empty (--prompt)");
    /* Every row would be refused: say so once, before anything starts. */
    if (p->n_tasks == 0 && !sl_utf8_valid(p->prompt, strlen(p->prompt)))
        return sl_fail(SL_ERR_INVALID_ARG, "the prompt is not valid UTF-8 (--prompt)");
    if (p->system_prompt && !sl_utf8_valid(p->system_prompt, strlen(p->system_prompt)))
        return sl_fail(SL_ERR_INVALID_ARG, "the system prompt is not valid UTF-8 (--system)");
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !sl_utf8_valid(p->stop[i], strlen(p->stop[i])))
            return sl_fail(SL_ERR_INVALID_ARG, "--stop string %d is not valid UTF-8", i + 1);
    /* A stop string can be in any JSON answer (inside a string, or as the
     * whitespace between tokens), and the engines apply stops after the
     * grammar (vLLM too): --stop '"' failed every row as invalid_output.
     * The schema's grammar ends the answer where its JSON does. */
    for (int i = -1; p->n_stop > 0 && i < (p->n_tasks ? p->n_tasks : 0); i++) {
        const sl_caption_task *t = i >= 0 ? &p->tasks[i] : NULL;
        bool schema = t ? t->json_schema || p->json_schema : p->n_tasks == 0 && p->json_schema;
        char who[120];
        snprintf(who, sizeof who, !t ? "--json-schema" : t->json_schema
                 ? "the json_schema of task '%s'" : "--json-schema (task '%s')", t ? t->name : "");
        if (schema)
            return sl_fail(SL_ERR_INVALID_ARG, "--stop with %s: a stop string can end the answer "
                           "inside its JSON, and its rows would fail as invalid_output (the "
                           "schema's grammar ends the answer where the JSON does): drop --stop",
                           who);
    }
    if (p->sampling.max_tokens <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--max-tokens must be positive, got %d",
                       p->sampling.max_tokens);
    if (p->sampling.temperature < 0.0f)
        return sl_fail(SL_ERR_INVALID_ARG, "--temperature must be >= 0, got %g",
                       (double)p->sampling.temperature);
    if (p->image.max_edge < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--max-image-edge must be >= 0, got %d",
                       p->image.max_edge);
    /* Passed to libmtmd as they are: crossed, a resizing projector failed
     * to load, the message blaming --mmproj. */
    if (p->llama.image_min_tokens > 0 && p->llama.image_max_tokens > 0 &&
        p->llama.image_min_tokens > p->llama.image_max_tokens)
        return sl_fail(SL_ERR_INVALID_ARG, "--image-min-tokens %d is above --image-max-tokens %d: "
                                           "lower the one or raise the other",
                       p->llama.image_min_tokens, p->llama.image_max_tokens);
    if (!job_is_batch(p) && (p->allow_local_images || p->ignore_model))
        return sl_fail(SL_ERR_INVALID_ARG, "--%s applies to a batch file's requests (sluice "
                                           "batch); drop it",
                       p->allow_local_images ? "allow-local-images" : "ignore-model");
    if (p->output_compression && (!p->output_format || strcmp(p->output_format, "parquet") != 0))
        return sl_fail(SL_ERR_INVALID_ARG, "--compression chooses Parquet's; %s output has none "
                                           "to choose: drop it, or add --format parquet",
                       p->output_format ? p->output_format : "jsonl");
    if (p->retry_failed && (p->overwrite || job_is_batch(p)))
        return sl_fail(SL_ERR_INVALID_ARG, "--retry-failed %s",
                       p->overwrite ? "keeps the output's good rows and --overwrite removes "
                                      "them all: drop one"
                                    : "is caption's: a batch file's failed requests (its "
                                      "output lines with an error, or --errors-file's lines) "
                                      "are answered again by a batch file of them, run into "
                                      "another output folder (-o): docs/batch.md#resume");
    /* Written when the run ends: a name that can be no file ("", or a
     * folder's "dir/") failed only then, exit 1 after the whole run. */
    size_t errs_len = p->errors_file ? strlen(p->errors_file) : 0;
    if (p->errors_file && (errs_len == 0 || p->errors_file[errs_len - 1] == '/'))
        return sl_fail(SL_ERR_INVALID_ARG, "--errors-file '%s' names no file: give a file's path "
                                           "(e.g. out-errors.jsonl), or drop it", p->errors_file);
    if (p->errors_file && sl_s3_is_url(p->errors_file))
        return sl_fail(SL_ERR_INVALID_ARG, "--errors-file is a local file, not '%s' (the output "
                                           "may be in a bucket)", p->errors_file);
    if (p->video.max_frames < 1 || p->video.max_frames > SL_VIDEO_MAX_FRAMES)
        return sl_fail(SL_ERR_INVALID_ARG, "--video-frames takes 1 to %d frames, got %d",
                       SL_VIDEO_MAX_FRAMES, p->video.max_frames);
    if (!(p->video.fps >= 0.0))
        return sl_fail(SL_ERR_INVALID_ARG, "--video-fps must be >= 0, got %g", p->video.fps);
    if (p->frame_text && !sl_utf8_valid(p->frame_text, strlen(p->frame_text)))
        return sl_fail(SL_ERR_INVALID_ARG, "--frame-text is not valid UTF-8");
    if (p->image_column && strchr(p->image_column, ',')) { /* several: a list per row */
        char *names[SL_SOURCE_MAX_IMAGES];
        size_t n;
        sl_status st = sl_split_image_columns(p->image_column, names, &n);
        for (size_t k = 0; k < n; k++)
            sl_free(names[k]);
        if (st != SL_OK)
            return st;
    }
    if (p->id_column && !*p->id_column)
        return sl_fail(SL_ERR_INVALID_ARG, "--id-column is empty: name the column that holds the "
                                           "row ids, or none for ids FILE:LINE");
    if (p->image_text && !sl_utf8_valid(p->image_text, strlen(p->image_text)))
        return sl_fail(SL_ERR_INVALID_ARG, "--image-text is not valid UTF-8");
    struct stat root;
    if (p->image_root && !sl_s3_is_url(p->image_root) &&
        (stat(p->image_root, &root) != 0 || !S_ISDIR(root.st_mode)))
        return sl_fail(SL_ERR_INVALID_ARG, "--image-root '%s' is not a folder: name the folder that "
                                           "relative image paths in the data are under", p->image_root);
    if (p->image_placeholder && *p->image_placeholder) {
        if (!sl_utf8_valid(p->image_placeholder, strlen(p->image_placeholder)))
            return sl_fail(SL_ERR_INVALID_ARG, "--image-placeholder is not valid UTF-8");
        if (p->n_tasks > 0)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--image-placeholder places the images in one prompt: it cannot be "
                           "used with tasks (--task, --tasks), which share the images before "
                           "their prompts");
    }
    if (p->turns != SL_TURNS_FIRST && p->turns != SL_TURNS_LAST && p->turns != SL_TURNS_ALL)
        return sl_fail(SL_ERR_INVALID_ARG, "--turns must be first, last or all");
    if (p->turns != SL_TURNS_FIRST && p->n_tasks > 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--turns %s answers a row's conversation: it cannot "
                       "be used with tasks (--task, --tasks), which ask prompts of their own",
                       p->turns == SL_TURNS_LAST ? "last" : "all");
    if (p->turns == SL_TURNS_ALL && p->sampling.n > 1)
        return sl_fail(SL_ERR_INVALID_ARG, "--turns all goes on from one answer to each turn: "
                       "it cannot be used with --samples %d; drop one of them", p->sampling.n);
    if (p->decode_workers < 1 || p->replicas < 1)
        return sl_fail(SL_ERR_INVALID_ARG, "--decode-workers and --replicas must be >= 1");
    if (p->n_gpus > 0 && p->replicas != p->n_gpus)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--gpus runs one replica per GPU (%d), but --replicas is %d: drop one",
                       p->n_gpus, p->replicas);
    if (p->dry_run && job_is_batch(p))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--dry-run checks the images of caption's inputs; an OpenAI batch file's "
                       "output is its requests' answers, which a dry run has none of: drop "
                       "--dry-run (or check the images with sluice caption --dry-run on a "
                       "manifest of them)");
    if (job_is_batch(p) && (st0 = batch_check_params(p)) != SL_OK)
        return st0;
    if (p->output_format && strcmp(p->output_format, "jsonl") != 0 &&
        strcmp(p->output_format, "parquet") != 0 && strcmp(p->output_format, "webdataset") != 0 &&
        !job_is_batch(p))
        return sl_fail(SL_ERR_INVALID_ARG, "--format must be jsonl, parquet or webdataset, got "
                                           "'%s'", p->output_format);
    if (!(p->max_failed >= 0.0 && p->max_failed <= 1.0))
        return sl_fail(SL_ERR_INVALID_ARG, "--max-failed must be a fraction from 0 to 1, got %g",
                       p->max_failed);
    if (p->engine && strcmp(p->engine, "llama") != 0 && !job_uses_openai(p))
        return sl_fail(SL_ERR_INVALID_ARG, "--engine must be llama or openai, got '%s'", p->engine);
    sl_status st = check_structured(p);
    if (st != SL_OK)
        return st;
    if (job_uses_openai(p)) {
        /* Settings of the llama engine that an HTTP engine would ignore,
         * where the user means them to change the answers or the memory:
         * the server has its own. */
        if (p->llama.n_lora > 0)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--lora is for the llama engine: an OpenAI-compatible server loads "
                           "its adapters itself (vLLM: --enable-lora --lora-modules NAME=PATH), "
                           "and the served model name selects one (--served-model NAME)");
        if (p->llama.chat_template)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--chat-template is for the llama engine: an OpenAI-compatible server "
                           "renders with its own (vLLM: --chat-template at the server)");
        if (p->llama.cache_type_k != SL_KV_F16 || p->llama.cache_type_v != SL_KV_F16)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--cache-type-k and --cache-type-v are for the llama engine: an "
                           "OpenAI-compatible server sets its own KV cache (vLLM: "
                           "--kv-cache-dtype)");
        if (p->openai.n_endpoints < 1 && !p->dry_run)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--engine openai needs at least one --endpoint URL (or --endpoints-file)");
        /* A header or URL the engine would refuse as it opens: refused by
         * config check too, before the run makes its output folder. */
        if (!p->dry_run && (st0 = sl_openai_check_params(&p->openai)) != SL_OK)
            return st0;
        /* The frames go side by side in one part: a text before each
         * has no place there. */
        const char *frame_text = sl_caption_default_params().frame_text;
        if (p->video_part == SL_VIDEO_PART_VIDEO_URL && p->frame_text && *p->frame_text &&
            strcmp(p->frame_text, frame_text) != 0)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--frame-text puts a text before each frame of a video, and "
                           "--video-part video_url sends the frames side by side in one part "
                           "with none: drop one of them");
        if (p->jpeg_edge < 0 || p->jpeg_quality < 1 || p->jpeg_quality > 100)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--jpeg-edge must be >= 0 and --jpeg-quality 1..100, got %d and %d",
                           p->jpeg_edge, p->jpeg_quality);
        return SL_OK;
    }
    if (p->video_part == SL_VIDEO_PART_VIDEO_URL)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--video-part video_url is how the openai engine sends a video to vLLM; "
                       "the llama engine reads a video's frames as images: drop it, or add "
                       "--engine openai");
    /* Missing model files fail here, before any thread starts; a dry run
     * opens none. */
    if (p->dry_run || !model_files)
        return SL_OK;
    const char *files[2][2] = {{"--model", p->llama.model_path}, {"--mmproj", p->llama.mmproj_path}};
    for (int i = 0; i < 2; i++) {
        /* A batch of text-only requests runs on a text model alone. */
        if (i == 1 && job_is_batch(p) && (!files[i][1] || !*files[i][1]))
            continue;
        if (!files[i][1] || !*files[i][1])
            return sl_fail(SL_ERR_INVALID_ARG, "%s is required: the path of a GGUF file", files[i][0]);
        if (access(files[i][1], R_OK) != 0)
            return sl_fail(SL_ERR_NOT_FOUND, "%s '%s': %s", files[i][0], files[i][1],
                           strerror(errno));
    }
    for (int i = 0; i < p->llama.n_lora; i++)
        if (p->llama.lora[i].path && access(p->llama.lora[i].path, R_OK) != 0)
            return sl_fail(SL_ERR_NOT_FOUND, "--lora '%s': %s", p->llama.lora[i].path,
                           strerror(errno));
    return SL_OK;
}

/* The caption pipeline of p: the built-in stages with the caller's
 * between them, each stage opened (the script compiles, the plugin loads)
 * before anything is read or loaded. The stages are in *user (n_stages;
 * the caller frees each, then the array), *pl the caller's to free. */
static sl_status assemble(const sl_caption_params *p, sl_pipeline **pl, user_stage ***user)
{
    *pl = NULL;
    *user = NULL;
    if (p->n_stages < 0 || (p->n_stages > 0 && !p->stages))
        return sl_fail(SL_ERR_INVALID_ARG, "n_stages is %d but no stages are given", p->n_stages);
    size_t n_user = (size_t)p->n_stages;
    user_stage **us = n_user ? sl_calloc(n_user, sizeof *us) : NULL;
    sl_pipeline_stage_params *defs = n_user ? sl_calloc(n_user, sizeof *defs) : NULL;
    sl_pipeline_builtin *after = n_user ? sl_calloc(n_user, sizeof *after) : NULL;
    *user = us;
    sl_status st = n_user && (!us || !defs || !after)
                       ? sl_fail(SL_ERR_NOMEM, "out of memory opening the stages")
                       : SL_OK;
    for (size_t i = 0; st == SL_OK && i < n_user; i++)
        st = user_stage_open(&p->stages[i], &us[i], &defs[i], &after[i]);
    if (st == SL_OK)
        st = sl_pipeline_new(p, pl);
    static const sl_pipeline_builtin builtins[] = {SL_PIPELINE_READ, SL_PIPELINE_DECODE,
                                                   SL_PIPELINE_ENGINE, SL_PIPELINE_WRITE};
    for (size_t b = 0; st == SL_OK && b < sizeof builtins / sizeof *builtins; b++) {
        st = sl_pipeline_add_builtin(*pl, builtins[b]);
        for (size_t i = 0; st == SL_OK && i < n_user; i++)
            if (after[i] == builtins[b])
                st = sl_pipeline_add_stage(*pl, &defs[i]);
    }
    sl_free(defs);
    sl_free(after);
    return st;
}

static void disassemble(const sl_caption_params *p, sl_pipeline *pl, user_stage **user)
{
    sl_pipeline_free(pl);
    for (int i = 0; user && i < p->n_stages; i++)
        user_stage_free(user[i]);
    sl_free(user);
}

sl_status sl_caption_check(const sl_caption_params *p)
{
    if (!p)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_caption_check: NULL params");
    sl_pipeline *pl;
    user_stage **user;
    sl_status st = assemble(p, &pl, &user);
    if (st == SL_OK)
        st = job_check_pipeline(pl, false);
    answer_columns ac;
    if (st == SL_OK && (st = answer_columns_plan(p, &ac)) == SL_OK) {
        /* A property named like one of the job's own columns stops the run
         * before any input is read: config check says so too. */
        caption_schema head;
        if ((st = caption_schema_plan_head(p, &head)) == SL_OK)
            st = answer_columns_free_of(&ac, &head);
        caption_schema_clear(&head);
        answer_columns_clear(&ac);
    }
    disassemble(p, pl, user);
    /* Last, as the run checks it after the settings: a CPU the llama.cpp
     * build cannot run on refuses every run of this job here. */
    if (st == SL_OK && !p->dry_run && !job_uses_openai(p))
        st = sl_llama_cpu_check();
    return st;
}

sl_status sl_caption_run(const sl_caption_params *p, sl_caption_summary *sum)
{
    if (!p || !sum)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_caption_run: NULL %s", !p ? "params" : "summary");
    memset(sum, 0, sizeof *sum);
    sl_pipeline *pl;
    user_stage **user;
    sl_status st = assemble(p, &pl, &user);
    if (st == SL_OK)
        st = sl_pipeline_run(pl, sum);
    disassemble(p, pl, user);
    return st;
}
