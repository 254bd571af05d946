/* job/resume.c — the job's side of resume: the fingerprint of the settings
 * that determine the rows' content (a rerun with other settings is refused
 * rather than mixed in), and opening the output folder's ledger
 * (ledger/ledger.h) to settle what an earlier run left and find where this
 * one goes on. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/hf.h"
#include "io/part_filter.h"
#include "io/s3.h"
#include "io/shard.h"
#include "core/clock.h"
#include "job/batch.h"
#include "job/job.h"

/* The rows' format: a batch job's openai-batch is JSONL. */
static const char *output_format(const sl_caption_params *p)
{
    const char *f = p->output_format;
    return f && (strcmp(f, "parquet") == 0 || strcmp(f, "webdataset") == 0) ? f : "jsonl";
}

/* json_dumps, not sl_json_dump's shortest reals, on purpose: the text is
 * compared with the one in existing ledgers, and another text for the same
 * value would make each of them another job. */
static void fp_add(char **text, const char *key, json_t *value)
{
    if (!*text)
        goto out;
    char *v = value ? json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
    char *next = v ? sl_asprintf("%s%s\t%s\n", *text, key, v) : NULL;
    free(v);
    sl_free(*text);
    *text = next;
out:
    json_decref(value);
}

static json_t *fp_strings(const char *const *list, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, job_json_text(list[i]));
    return a;
}

static json_t *fp_real(double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.9g", v);
    return json_string(buf);
}

/* A local path as the fingerprint holds it: the spellings of one path made
 * one ("photos/", "./photos" and "photos//" are "photos"; "a/./b" is "a/b"),
 * so a rerun typed with the shell's trailing '/' resumes; its ids are the
 * same (sl_input_names). ".." is kept: past a symlink "a/.." is not ".". A
 * URL is as typed: s3://b/ds and s3://b/ds/ name other objects. */
static json_t *fp_path(const char *path, bool as_typed)
{
    if (!path || as_typed || strstr(path, "://"))
        return job_json_text(path);
    size_t len = strlen(path);
    char *out = sl_malloc(len + 2);
    if (!out)
        return NULL;
    size_t n = 0;
    if (path[0] == '/')
        out[n++] = '/';
    for (const char *c = path; *c;) {
        const char *end = strchr(c, '/');
        size_t part = end ? (size_t)(end - c) : strlen(c);
        if (part > 0 && !(part == 1 && c[0] == '.')) {
            if (n > 0 && out[n - 1] != '/')
                out[n++] = '/';
            memcpy(out + n, c, part);
            n += part;
        }
        c += part;
        if (*c == '/')
            c++;
    }
    if (n == 0 && len > 0)
        out[n++] = '.'; /* "./" */
    out[n] = '\0';
    json_t *v = job_json_text(out);
    sl_free(out);
    return v;
}

/* How an older sluice wrote the fingerprint, for folders it wrote: each
 * flag gives the fingerprint as it was before a key was added or changed. */
enum {
    /* the openai engine's --served-model as a key, as sluice held it before
     * the model served was recorded beside the fingerprint
     * (job_check_served_model) */
    FP_SERVED_MODEL_KEY = 1,
    /* the paths as typed, as sluice held them before fp_path: such a folder
     * is resumed by the command that wrote it */
    FP_AS_TYPED = 2,
    /* without the stages and --image-root, before 2026-12-06: a folder
     * written then with stages resumes (unchecked for them, as it was) */
    FP_BEFORE_STAGES = 4,
    /* without the KV cache types, before 2026-12-07: a folder written then
     * with a quantized cache resumes (unchecked for it, as it was) */
    FP_BEFORE_KV_TYPES = 8,
    /* without the key fingerprint_form, before 2026-12-07 (later): every
     * older form lacks it too */
    FP_BEFORE_FORM = 16,
};

/* fingerprint_form: which keys today's fingerprint holds when their
 * settings are set. A folder holding it was written with every key this
 * sluice writes, so no older form (each without it) may match it: without
 * it an openai or --dry-run folder of today (no KV cache types, the key
 * that told the llama engine's apart) without stages matched the form
 * before stages when resumed with a stage, and took it. Raised with each
 * key added, whose FP_BEFORE_ form writes the number before. */
enum { FINGERPRINT_FORM = 1 };

/* What determines the rows' content, as "key\tJSON" lines; not how fast, how
 * the progress shows, or where parts are cut. `older` (FP_*) gives it as an
 * older sluice wrote it. NULL when out of memory. */
static char *fingerprint(const job *j, int older)
{
    const sl_caption_params *p = j->p;
    bool as_typed = older & FP_AS_TYPED, before_stages = older & FP_BEFORE_STAGES;
    char *t = sl_strdup("");
    /* A dataset on the hub counts by the commit it was read at, not the
     * revision named: a branch that moved since is refused (dataset_commits
     * differ), and naming the first run's commit (@COMMIT) goes on with it. */
    char **unpinned = sl_calloc(j->n_inputs ? j->n_inputs : 1, sizeof *unpinned);
    for (size_t i = 0; unpinned && i < j->n_inputs; i++)
        unpinned[i] = hf_is_dataset_ref(j->inputs[i]) ? hf_ref_unpinned(j->inputs[i]) : NULL;
    const char **names = sl_calloc(j->n_inputs ? j->n_inputs : 1, sizeof *names);
    for (size_t i = 0; names && i < j->n_inputs; i++)
        names[i] = unpinned && unpinned[i] ? unpinned[i] : j->inputs[i];
    json_t *paths = names ? json_array() : NULL;
    for (size_t i = 0; paths && i < j->n_inputs; i++)
        if (json_array_append_new(paths, fp_path(names[i], as_typed)) != 0) {
            json_decref(paths);
            paths = NULL;
        }
    fp_add(&t, "inputs", paths);
    for (size_t i = 0; unpinned && i < j->n_inputs; i++)
        sl_free(unpinned[i]);
    sl_free(unpinned);
    sl_free(names);
    json_t *commits = sl_source_dataset_commits(j->src);
    if (commits)
        fp_add(&t, "dataset_commits", commits);
    fp_add(&t, "input_format", job_json_text(p->input_format));
    fp_add(&t, "include", fp_strings(p->include, p->n_include));
    fp_add(&t, "exclude", fp_strings(p->exclude, p->n_exclude));
    /* Only when set, as the stages below: a job without keeps its
     * fingerprint. Another root reads other images under the same ids. */
    if (p->image_root && !before_stages)
        fp_add(&t, "image_root", fp_path(p->image_root, as_typed));
    fp_add(&t, "image_column", job_json_text(p->image_column));
    fp_add(&t, "prompt_column", job_json_text(p->prompt_column));
    /* Only when set: a job without it keeps the fingerprint (and the ids)
     * it had before the option. Inputs without columns take none (their
     * ids are paths and keys whatever it says: "none" alone passes). */
    if (p->id_column && sl_source_rows_have_columns(j->src))
        fp_add(&t, "id_column", job_json_text(p->id_column));
    fp_add(&t, "allow_file_urls", json_boolean(p->allow_file_urls));
    fp_add(&t, "input_shard", json_pack("[I,I,I]", (json_int_t)p->input_shard_index,
                                        (json_int_t)p->input_shard_count,
                                        (json_int_t)p->input_shard_size));
    /* Inputs in several folders had base-name ids before ids named folders:
     * such a ledger holds other ids for the same rows, so it must not match.
     * Other jobs' ids did not change, and their fingerprint neither. */
    if (sl_source_ids_have_folders(j->src))
        fp_add(&t, "ids", job_json_text("paths from the inputs' common folder"));
    /* MPI: the ledger records each row's input shard, which a rerun hands
     * out again with the rows done in it: the shards must be laid out the
     * same way (not the number of ranks: any number may resume). A run of
     * one process records no shards, so the two do not mix. */
    if (j->dist)
        fp_add(&t, "mpi_shards", job_json_text(sl_source_shards_by_file(j->src) ? "by file"
                                                                                : "by item"));
    fp_add(&t, "engine", job_json_text(job_uses_openai(p) ? "openai" : "llama"));
    /* A dry run's rows have no answers: its folder is not a real run's,
     * nor the reverse. It opens no model, so the model is not its
     * setting; the JPEG settings are (its column jpeg_bytes). Only when
     * set: a real job keeps its fingerprint. */
    if (p->dry_run)
        fp_add(&t, "dry_run", json_true());
    if (job_uses_openai(p)) { /* not the endpoints: a fleet may change between runs */
        if (!p->dry_run) {
            /* The model is not a key: the one served is known only once
             * the engine is up, and --served-model X and a fleet found to
             * serve X are the same job (job_check_served_model). */
            if (older & FP_SERVED_MODEL_KEY)
                fp_add(&t, "served_model", job_json_text(p->openai.served_model));
            fp_add(&t, "response_format", job_json_text(p->openai.response_format));
        }
        fp_add(&t, "jpeg", json_pack("[i,i,b]", p->jpeg_edge, p->jpeg_quality, p->send_original));
        if (p->video_part == SL_VIDEO_PART_VIDEO_URL) /* only then: the default keeps its own */
            fp_add(&t, "video_part", job_json_text("video_url"));
        /* Answers drawn by the server (one request with "n") are others
         * than those of a request each; only then: the other way keeps the
         * fingerprint it had. */
        if (job_answers_share_seed(p))
            fp_add(&t, "samples_drawn_by", job_json_text("the server, one request with n"));
    } else if (!p->dry_run) {
        fp_add(&t, "model", fp_path(p->llama.model_path, as_typed));
        fp_add(&t, "mmproj", fp_path(p->llama.mmproj_path, as_typed));
        fp_add(&t, "ctx", json_integer(p->llama.n_ctx_per_seq));
        /* Only when there are some: a job without keeps its fingerprint. */
        if (p->llama.n_lora > 0)
            fp_add(&t, "lora", job_lora_json(&p->llama));
        if (p->llama.chat_template)
            fp_add(&t, "chat_template", job_json_text(p->llama.chat_template));
        /* Another image size is another prompt (Qwen2-VL's resizing). */
        if (p->llama.image_min_tokens > 0 || p->llama.image_max_tokens > 0)
            fp_add(&t, "image_tokens", json_pack("[i,i]", p->llama.image_min_tokens,
                                                 p->llama.image_max_tokens));
        /* A cache of other types computes other logits, not the same ones
         * in another order (as --parallel or --sampler do): q4_0 changed
         * 180 of 200 greedy answers (docs/engine.md). Always, f16 too: a
         * folder without the key is an older sluice's, which goes on
         * unchecked (FP_BEFORE_KV_TYPES), and one of today must not. */
        if (!(older & FP_BEFORE_KV_TYPES))
            fp_add(&t, "kv_cache_types",
                   json_pack("[s,s]", sl_kv_type_name(p->llama.cache_type_k),
                             sl_kv_type_name(p->llama.cache_type_v)));
    }
    fp_add(&t, "prompt", job_json_text(p->prompt));
    fp_add(&t, "system_prompt", job_json_text(p->system_prompt));
    fp_add(&t, "stop", fp_strings(p->stop, p->n_stop));
    /* Only when set: a job without them keeps the fingerprint it had. */
    if (p->json_schema)
        fp_add(&t, "json_schema", job_json_text(p->json_schema));
    if (p->grammar)
        fp_add(&t, "grammar", job_json_text(p->grammar));
    if (p->sampling.logprobs) /* a column more */
        fp_add(&t, "logprobs", json_integer(p->sampling.top_logprobs));
    if (p->sampling.n > 1) /* rows per image */
        fp_add(&t, "samples", json_integer(p->sampling.n));
    if (p->n_choices > 0)
        fp_add(&t, "choices", fp_strings(p->choices, p->n_choices));
    fp_add(&t, "max_tokens", json_integer(p->sampling.max_tokens));
    fp_add(&t, "temperature", fp_real(p->sampling.temperature));
    fp_add(&t, "top_p", fp_real(p->sampling.top_p));
    fp_add(&t, "top_k", json_integer(p->sampling.top_k));
    fp_add(&t, "min_p", fp_real(p->sampling.min_p));
    fp_add(&t, "repeat_penalty", fp_real(p->sampling.repeat_penalty));
    /* Only when on: a job without them keeps its fingerprint. */
    if (p->sampling.presence_penalty != 0.0f)
        fp_add(&t, "presence_penalty", fp_real(p->sampling.presence_penalty));
    if (p->sampling.frequency_penalty != 0.0f)
        fp_add(&t, "frequency_penalty", fp_real(p->sampling.frequency_penalty));
    fp_add(&t, "seed", json_integer((json_int_t)(p->sampling.seed & INT64_MAX)));
    /* Only when not the defaults: a job of images keeps its fingerprint. */
    sl_video_params vd = sl_video_default_params();
    if (p->video.max_frames != vd.max_frames || p->video.fps != vd.fps ||
        !p->frame_text || strcmp(p->frame_text, sl_caption_default_params().frame_text) != 0)
        fp_add(&t, "video", json_pack("[i,f,o]", p->video.max_frames, p->video.fps,
                                      job_json_text(p->frame_text)));
    if (p->image_text && *p->image_text)
        fp_add(&t, "image_text", job_json_text(p->image_text));
    if (p->image_placeholder && *p->image_placeholder)
        fp_add(&t, "image_placeholder", job_json_text(p->image_placeholder));
    if (p->turns != SL_TURNS_FIRST) /* only then: a job of first turns keeps its fingerprint */
        fp_add(&t, "turns", job_json_text(p->turns == SL_TURNS_LAST ? "last" : "all"));
    fp_add(&t, "max_image_edge", json_integer(p->image.max_edge));
    fp_add(&t, "max_image_pixels", json_integer((json_int_t)p->image.max_input_pixels));
    fp_add(&t, "background", json_pack("[i,i,i]", p->image.background[0], p->image.background[1],
                                       p->image.background[2]));
    fp_add(&t, "format", job_json_text(output_format(p)));
    fp_add(&t, "columns", p->columns ? fp_strings(p->columns, p->n_columns) : json_null());
    fp_add(&t, "include_image_bytes", json_boolean(p->include_image_bytes));
    if (p->answer_columns) /* only when set: a job without keeps its fingerprint */
        fp_add(&t, "answer_columns", json_true());
    /* A batch file's settings that change answers; only for batch jobs. */
    if (job_is_batch(p))
        fp_add(&t, "batch", json_pack("{s:b, s:b, s:b}", "allow_local_images",
                                      p->allow_local_images, "ignore_model", p->ignore_model,
                                      "errors_file", p->errors_file != NULL));
    /* Failed rows in the output or in an errors file: not both in one. */
    if (p->errors_file && !job_is_batch(p))
        fp_add(&t, "errors_file", json_true());
    /* The user's stages decide which rows are written and their columns:
     * each one's name, file, place, config and columns. Not the file's
     * text (a script fixed between runs goes on), nor workers, batch size
     * or time limit (how fast). Only when there are some. */
    if (p->n_stages > 0 && !before_stages) {
        json_t *stages = json_array();
        for (int i = 0; stages && i < p->n_stages; i++) {
            const sl_stage_spec *g = &p->stages[i];
            json_t *stage = json_pack(
                "{s:o, s:o, s:o, s:o, s:o, s:o}", "name", job_json_text(g->name), "lua",
                fp_path(g->lua, as_typed), "plugin", fp_path(g->plugin, as_typed), "after",
                job_json_text(g->after ? g->after : "decode"), "config", job_json_text(g->config),
                "columns", fp_strings(g->columns, g->n_columns));
            if (!stage || json_array_append_new(stages, stage) != 0) {
                json_decref(stages);
                stages = NULL;
            }
        }
        fp_add(&t, "stages", stages);
    }
    /* Tasks: as written (templates, not the text filled in per row). Only
     * when there are some, so a job without tasks keeps its fingerprint. */
    if (p->n_tasks > 0) {
        json_t *tasks = json_array();
        for (int i = 0; tasks && i < p->n_tasks; i++) {
            const sl_caption_task *k = &p->tasks[i];
            const sl_sampling *s = &k->sampling;
            json_t *task = json_pack(
                "{s:o, s:o, s:o, s:o, s:i, s:o, s:o, s:i, s:o, s:o, s:I}", "name",
                job_json_text(k->name), "prompt", job_json_text(k->prompt), "system",
                job_json_text(k->system_prompt), "json_schema", job_json_text(k->json_schema),
                "max_tokens", s->max_tokens, "temperature", fp_real(s->temperature), "top_p",
                fp_real(s->top_p), "top_k", s->top_k, "min_p", fp_real(s->min_p),
                "repeat_penalty", fp_real(s->repeat_penalty), "seed",
                (json_int_t)(s->seed & INT64_MAX));
            /* Only when asked for: other tasks keep the fingerprint they had. */
            if (task && s->logprobs)
                json_object_set_new(task, "logprobs", json_integer(s->top_logprobs));
            if (task && s->presence_penalty != 0.0f)
                json_object_set_new(task, "presence_penalty", fp_real(s->presence_penalty));
            if (task && s->frequency_penalty != 0.0f)
                json_object_set_new(task, "frequency_penalty", fp_real(s->frequency_penalty));
            if (task && k->n_choices > 0)
                json_object_set_new(task, "choices", fp_strings(k->choices, k->n_choices));
            json_array_append_new(tasks, task);
        }
        fp_add(&t, "tasks", tasks);
        fp_add(&t, "rows_per_task", json_boolean(p->rows_per_task));
    }
    if (!older)
        fp_add(&t, "fingerprint_form", json_integer(FINGERPRINT_FORM));
    return t;
}

/* --- an output in object storage ----------------------------------------------- */

static bool is_part_name(const char *name)
{
    return sl_shard_part_number(name) >= 0;
}

/* An object directly under the output's prefix: its name after the prefix. */
typedef struct remote_object {
    char *name;
    int64_t size;
} remote_object;

static int cmp_remote(const void *a, const void *b)
{
    return strcmp(((const remote_object *)a)->name, ((const remote_object *)b)->name);
}

static void free_remote(remote_object *objs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sl_free(objs[i].name);
    sl_free(objs);
}

/* The objects directly under the output's prefix that want keeps, sorted
 * by name: *objs (the caller's, free_remote) and *n; nothing on failure. */
static sl_status list_remote(const job *j, bool (*want)(const char *), remote_object **objs,
                             size_t *n)
{
    remote_object *got = NULL;
    size_t n_got = 0, cap = 0;
    const sl_s3 *s3 = sl_s3_shared();
    if (!s3)
        return SL_ERR_INVALID_ARG;
    char *prefix = sl_asprintf("%s/", j->remote);
    sl_s3_list *l = NULL;
    sl_status st = prefix ? sl_s3_list_open(s3, prefix, &l)
                          : sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", j->remote);
    /* keys come whole: the part's name follows the prefix's key ("s3://b/k/" -> "k/") */
    size_t skip = prefix ? strlen(strchr(prefix + 5, '/') + 1) : 0;
    for (bool done = false; st == SL_OK && !done;) {
        const char *key;
        uint64_t size;
        if ((st = sl_s3_list_next(l, &key, &size, &done)) != SL_OK || done)
            break;
        if (strlen(key) < skip || !want(key + skip))
            continue;
        remote_object *grown = sl_grow(got, n_got, &cap, sizeof *grown);
        if (!grown) {
            st = sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", j->remote);
            break;
        }
        got = grown;
        if (!(got[n_got].name = sl_strdup(key + skip)))
            st = sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", j->remote);
        else
            got[n_got++].size = (int64_t)size;
    }
    sl_s3_list_free(l);
    sl_free(prefix);
    if (st != SL_OK) {
        free_remote(got, n_got);
        return st;
    }
    if (n_got)
        qsort(got, n_got, sizeof *got, cmp_remote);
    *objs = got;
    *n = n_got;
    return SL_OK;
}

/* The part objects directly under the output's prefix, sorted. */
static sl_status list_remote_parts(job *j)
{
    return list_remote(j, is_part_name, &j->remote_parts, &j->n_remote_parts);
}

/* Part `name` in the listing; NULL when it is not there. */
static remote_object *listed_part(const job *j, const char *name)
{
    remote_object key = {(char *)name, 0};
    return j->n_remote_parts ? bsearch(&key, j->remote_parts, j->n_remote_parts,
                                       sizeof *j->remote_parts, cmp_remote)
                             : NULL;
}

/* The resume ledger's view of the bucket (sl_ledger_set_presence): the
 * size of a part object the listing found or this run uploaded; -1 for
 * one that is not there. */
static int64_t remote_part_size(void *user, const char *name)
{
    const job *j = user;
    if (j->uploaded_part[0] && strcmp(name, j->uploaded_part) == 0)
        return j->uploaded_bytes;
    const remote_object *part = listed_part(j, name);
    return part ? part->size : -1;
}

void job_note_upload(job *j, const char *url, int64_t bytes)
{
    const char *slash = strrchr(url, '/');
    const char *name = slash ? slash + 1 : url;
    remote_object *part = listed_part(j, name);
    if (part) { /* replaced (--retry-failed) */
        part->size = bytes;
        return;
    }
    snprintf(j->uploaded_part, sizeof j->uploaded_part, "%s", name);
    j->uploaded_bytes = bytes;
}

static bool remote_part_published(void *user, const char *name)
{
    return listed_part(user, name) != NULL;
}

static void remote_scan(const job *j, sl_part_scan *scan)
{
    scan->count = (long)j->n_remote_parts;
    scan->max_number = -1;
    for (size_t i = 0; i < j->n_remote_parts; i++) {
        long n = sl_shard_part_number(j->remote_parts[i].name);
        if (n > scan->max_number)
            scan->max_number = n;
    }
}

static bool is_errors_name(const char *name)
{
    return sl_shard_errors_number(name) >= 0;
}

/* Deletes the objects objs[0..n) under the output's prefix, and frees
 * objs. */
static sl_status remove_remote(const job *j, remote_object *objs, size_t n)
{
    const sl_s3 *s3 = sl_s3_shared();
    sl_status st = s3 ? SL_OK : SL_ERR_INVALID_ARG;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        char *url = sl_asprintf("%s/%s", j->remote, objs[i].name);
        st = url ? sl_s3_delete(s3, url) : sl_fail(SL_ERR_NOMEM, "out of memory");
        sl_free(url);
    }
    free_remote(objs, n);
    return st;
}

/* --overwrite: the part objects go (the ledger forgets them next), and
 * the errors objects of --errors-file beside them, as in a local folder
 * (sl_shard_remove_parts): a new run writes errors objects only for its
 * own part numbers, so another run's would stay, their rows failures the
 * new output never had. */
static sl_status remove_remote_parts(job *j)
{
    remote_object *errs = NULL;
    size_t n_errs = 0;
    sl_status st = remove_remote(j, j->remote_parts, j->n_remote_parts);
    j->remote_parts = NULL;
    j->n_remote_parts = 0;
    if (st == SL_OK && (st = list_remote(j, is_errors_name, &errs, &n_errs)) == SL_OK)
        st = remove_remote(j, errs, n_errs);
    return st;
}

/* Whether part number k was published, in any format. */
static bool part_number_published(void *j, long k)
{
    static const char *const exts[] = {"jsonl", "parquet", "tar"};
    char name[64];
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        snprintf(name, sizeof name, "part-%05ld.%s", k, exts[i]);
        if (remote_part_published(j, name))
            return true;
    }
    return false;
}

/* An upload in progress for a part the ledger does not hold as committed
 * is a killed run's: no run of this output is uploading now (the ledger is
 * locked), and its part number is never used again. So is one of an errors
 * part (sluice batch --errors-file) whose part is not published: it goes
 * up before its part, and over 16 MiB in parts as a part does. */
static bool stale_upload(void *user, const char *name)
{
    long k = sl_shard_errors_number(name);
    if (k >= 0)
        return !part_number_published(user, k);
    return sl_shard_part_number(name) >= 0 && !remote_part_published(user, name);
}

/* Aborts what killed runs left half uploaded (the store bills it until
 * then). Failing to is a warning: the run itself is not at stake. */
static void abort_stale_uploads(job *j)
{
    const sl_s3 *s3 = sl_s3_shared();
    char *prefix = s3 ? sl_asprintf("%s/", j->remote) : NULL;
    long aborted = 0;
    if (!prefix)
        return;
    if (sl_s3_abort_uploads(s3, prefix, stale_upload, j, &aborted) != SL_OK)
        sl_log(SL_LOG_WARN, "%s: cannot abort the unfinished uploads of earlier runs: %s",
               j->remote, sl_last_error());
    if (aborted > 0)
        sl_log(SL_LOG_WARN, "%s: aborted %ld unfinished multipart upload%s of parts an earlier "
                            "run did not commit", j->remote, aborted, aborted == 1 ? "" : "s");
    sl_free(prefix);
}

/* j->dir: the output folder, or the state folder of an s3:// output. */
/* The folder the run writes, made and checked before anything runs: one
 * it cannot write (a read-only file system, no permission, a file on the
 * path) is the command's to change (SL_ERR_INVALID_ARG: exit status 2), not
 * a run that failed; a disk failing (EIO, ENOSPC) stays SL_ERR_IO. */
static sl_status writable_dir(const char *dir, const char *what, const char *flag)
{
    sl_status st = sl_make_dirs(dir);
    int err = st == SL_OK ? 0 : errno;
    if (st == SL_OK && access(dir, W_OK | X_OK) != 0)
        err = errno;
    else if (st != SL_OK && err != EROFS && err != EACCES && err != EPERM &&
             err != ENOTDIR && err != ENOENT && err != ENAMETOOLONG && err != ELOOP)
        return st;
    if (!err)
        return SL_OK;
    /* access() names the folder; mkdir's message names the part of the
     * path that failed */
    char why[1024];
    snprintf(why, sizeof why, "%s", st == SL_OK ? strerror(err) : sl_last_error());
    return sl_fail(SL_ERR_INVALID_ARG,
                   "%s '%s' cannot be written (%s): choose another %s, or make it writable",
                   what, dir, why, flag);
}

/* --errors-file is written at the end of the run (batch.h): a path that
 * cannot be written is found now, as the output folder is, not after the
 * whole run (whose rows stay in the errors parts either way). Its folder is
 * made like -o's. */
static sl_status writable_errors_file(const char *file)
{
    if (!file)
        return SL_OK;
    struct stat sb;
    if (stat(file, &sb) == 0 && S_ISDIR(sb.st_mode))
        return sl_fail(SL_ERR_INVALID_ARG, "--errors-file '%s' is a folder: name a file (it is "
                                           "written when the run ends)", file);
    const char *slash = strrchr(file, '/');
    char *dir = !slash ? sl_strdup(".")
                : slash == file ? sl_strdup("/")
                                : sl_asprintf("%.*s", (int)(slash - file), file);
    sl_status st = dir ? writable_dir(dir, "--errors-file's folder", "--errors-file")
                       : sl_fail(SL_ERR_NOMEM, "out of memory");
    sl_free(dir);
    return st;
}

/* One folder of a state folder's path: a "." or ".." (a key may hold them:
 * keys are names, not paths; sl_s3_split lets a bucket named so through)
 * spelled %2E or %2E%2E, so the path stays below its root. */
static bool append_segment(sl_buf *b, const char *seg, size_t n)
{
    bool dots = (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.');
    return dots ? sl_buf_append(b, n == 1 ? "%2E" : "%2E%2E", n == 1 ? 3 : 6)
                : sl_buf_append(b, seg, n);
}

/* The state folder's path below its root for an s3:// output: the bucket,
 * then the key's segments as folders (append_segment). */
static char *state_below(const char *bucket, const char *key)
{
    sl_buf b = {0};
    bool ok = append_segment(&b, bucket, strlen(bucket));
    for (const char *seg = key; ok && *seg;) {
        size_t n = strcspn(seg, "/");
        ok = sl_buf_append(&b, "/", 1) && append_segment(&b, seg, n);
        seg += n + (seg[n] == '/');
    }
    ok = ok && sl_buf_append(&b, "", 1);
    if (!ok) {
        sl_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* The default state folder's root: $XDG_STATE_HOME, else ~/.local/state,
 * HOME or the password database's home folder. Never /tmp: another user
 * could make the folder first and own the ledger. SL_ERR_INVALID_ARG when
 * no home is known. */
static sl_status state_root(char **root)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (!(xdg && *xdg) && !(home && *home)) {
        struct passwd *pw = getpwuid(getuid());
        home = pw && pw->pw_dir && *pw->pw_dir ? pw->pw_dir : NULL;
    }
    if (!(xdg && *xdg) && !home)
        return sl_fail(SL_ERR_INVALID_ARG, "no home folder for an s3:// output's state folder "
                                           "(HOME is unset and user %ld has none): pass "
                                           "--state-dir DIR or set XDG_STATE_HOME",
                       (long)getuid());
    *root = xdg && *xdg ? sl_asprintf("%s/sluice/s3", xdg)
                        : sl_asprintf("%s/.local/state/sluice/s3", home);
    return *root ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory choosing the state folder");
}

static sl_status choose_dir(job *j)
{
    const sl_caption_params *p = j->p;
    if (!sl_s3_is_url(p->output_dir)) {
        j->dir = p->output_dir;
        return writable_dir(j->dir, "output folder", "-o");
    }
    char *bucket, *key;
    sl_status st = sl_s3_split(p->output_dir, &bucket, &key);
    if (st != SL_OK)
        return st;
    size_t klen = strlen(key);
    while (klen && key[klen - 1] == '/')
        key[--klen] = '\0';
    j->remote = sl_asprintf("s3://%s%s%s", bucket, klen ? "/" : "", key);
    if (p->state_dir && *p->state_dir) {
        j->dir = p->state_dir;
    } else {
        char *root = NULL;
        if ((st = state_root(&root)) != SL_OK) {
            sl_free(bucket);
            sl_free(key);
            return st;
        }
        char *below = state_below(bucket, key);
        j->dir_owned = below ? sl_asprintf("%s/%s", root, below) : NULL;
        j->dir = j->dir_owned;
        sl_free(root);
        sl_free(below);
    }
    sl_free(bucket);
    sl_free(key);
    if (!j->remote || !j->dir)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", p->output_dir);
    if ((st = writable_dir(j->dir, "state folder", "--state-dir")) != SL_OK)
        return st;
    return list_remote_parts(j);
}

void job_output_clear(job *j)
{
    job_unlock_bucket(j);
    free_remote(j->remote_parts, j->n_remote_parts);
    sl_free(j->remote);
    sl_free(j->dir_owned);
    j->remote_parts = NULL;
    j->remote = j->dir_owned = NULL;
    j->n_remote_parts = 0;
}

void job_upload_reports(job *j, bool summary_only)
{
    const sl_s3 *s3 = j->remote ? sl_s3_shared() : NULL;
    static const char *const files[] = {"_summary.json", "_report.html", "_metrics.prom"};
    size_t n = summary_only ? 1 : sizeof files / sizeof *files;
    for (size_t i = 0; s3 && i < n; i++) {
        char *local = sl_asprintf("%s/%s", j->dir, files[i]);
        char *url = sl_asprintf("%s/%s", j->remote, files[i]);
        if (local && url && access(local, F_OK) == 0 &&
            sl_s3_upload_file(s3, local, url, 0) != SL_OK)
            sl_log(SL_LOG_WARN, "cannot copy %s to %s: %s", files[i], j->remote,
                   sl_last_error());
        sl_free(local);
        sl_free(url);
    }
}

/* A line or record longer than max_line_bytes fails before its id column
 * is read, under its position's id (NAME:LINE). A resume with a lower limit
 * than a line an earlier run answered would fail that line under NAME:LINE,
 * not done under either id: a second row for one input. So the folder keeps
 * the highest limit it was written with and a lower one is refused. (A
 * higher one is safe: the line's old failed row counts it done, stage_read.c's
 * alt_id.) Only sources read by lines or records have the limit. */
static sl_status check_max_line_bytes(job *j, bool resumed)
{
    if (!sl_source_reads_lines(j->src))
        return SL_OK;
    unsigned long long now = (unsigned long long)j->src_params.max_line_bytes, before = 0;
    char *old = NULL;
    sl_status st = sl_ledger_meta_get(j->ledger, "max_line_bytes", &old);
    if (st != SL_OK)
        return st;
    if (old)
        before = strtoull(old, NULL, 10);
    sl_free(old);
    if (resumed && before > now)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "output folder '%s' was written with --max-line-bytes %llu, and this run's "
                       "limit is %llu: a line between the two that an earlier run answered would "
                       "fail now and be written twice; pass --max-line-bytes %llu or more (or "
                       "--overwrite to start over)",
                       j->remote ? j->remote : j->dir, before, now, before);
    if (resumed && before == now)
        return SL_OK;
    char text[32];
    snprintf(text, sizeof text, "%llu", now);
    return sl_ledger_meta_set(j->ledger, "max_line_bytes", text);
}

static sl_status model_files_signature(const job *j, char *all, size_t cap, char now[2][64]);

/* What a rank says in its hello: the fingerprint, and the signatures of
 * the model files it read (model_files_signature): each node reads its
 * own copy at the path, which must be the same file as rank 0's. */
static sl_status hello_text(const job *j, char **out)
{
    char now[2][64] = {"", ""}, all[160];
    sl_status st = model_files_signature(j, all, sizeof all, now);
    if (st != SL_OK)
        return st;
    char *fp = fingerprint(j, 0);
    *out = fp && *all ? sl_asprintf("%smodel_files\t\"%s\"\n", fp, all) : fp;
    if (*out != fp)
        sl_free(fp);
    return *out ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", j->dir);
}

/* A rank of an MPI job other than 0: its settings checked by rank 0, which
 * holds the ledger; its part numbers interleave with the other ranks'
 * (rank r writes first + r, first + r + N, ...), so no two collide. */
static sl_status join_job(job *j)
{
    char *fp;
    sl_status hst = hello_text(j, &fp);
    if (hst != SL_OK)
        return hst;
    long first = 0;
    sl_status st = dist_hello(j->dist, fp, &first);
    sl_free(fp);
    if (st != SL_OK)
        return st;
    j->part_stride = sl_dist_size(j->dist);
    j->shard = first + sl_dist_rank(j->dist);
    j->first_shard = j->shard;
    return SL_OK;
}

static sl_status check_lock(void *j) { return job_check_bucket_lock(j); }

/* Rank 0 of an MPI job, its ledger open: coordinates the others. */
static sl_status lead_job(job *j)
{
    /* the ranks compare theirs with this one, not with the ledger's */
    char *fp;
    sl_status hst = hello_text(j, &fp);
    if (hst != SL_OK)
        return hst;
    long first = 0;
    /* Every rank's parts are recorded here: none once rank 0 lost the lock. */
    sl_status st = dist_serve(j->dist, j->ledger, fp, j->shard, check_lock, j);
    if (st == SL_OK)
        st = dist_hello(j->dist, fp, &first);
    sl_free(fp);
    j->part_stride = sl_dist_size(j->dist);
    return st;
}

/* --- part files the ledger does not record ------------------------------------------ */

/* The part files of the output that the ledger does not know: how many,
 * and the first few by name (for the message). */
enum { UNKNOWN_SHOWN = 3 };
typedef struct unknown_parts {
    sl_ledger *ledger;
    long count;
    char first[UNKNOWN_SHOWN][64];
} unknown_parts;

static sl_status note_unknown(void *user, const char *name)
{
    unknown_parts *u = user;
    bool known = false; /* without a ledger, none is */
    sl_status st = u->ledger ? sl_ledger_has_part(u->ledger, name, &known) : SL_OK;
    if (st != SL_OK || known)
        return st;
    /* Keep the lowest names: readdir's order is none. */
    long shown = u->count < UNKNOWN_SHOWN ? u->count : UNKNOWN_SHOWN;
    long at = shown;
    while (at > 0 && strcmp(name, u->first[at - 1]) < 0)
        at--;
    if (at < UNKNOWN_SHOWN) {
        for (long k = (shown < UNKNOWN_SHOWN ? shown : UNKNOWN_SHOWN - 1); k > at; k--)
            memcpy(u->first[k], u->first[k - 1], sizeof u->first[k]);
        snprintf(u->first[at], sizeof u->first[at], "%s", name);
    }
    u->count++;
    return SL_OK;
}

/* Every part file is recorded in the ledger before it gets its name
 * (ledger/ledger.h), so one it does not know was written under another
 * ledger: this one was emptied, replaced, or lost the -wal file that held
 * its last commits. Its rows are not done as far as the ledger knows, and
 * a run would write them a second time: refused, naming the files. */
/* The output's part files that `ledger` (NULL: none) does not know, into
 * *u, their names as "a, b, c, ..." into names[cap]. */
static sl_status find_unknown_parts(job *j, sl_ledger *ledger, unknown_parts *u, char *names,
                                    size_t cap)
{
    *u = (unknown_parts){.ledger = ledger};
    sl_status st = SL_OK;
    if (j->remote)
        for (size_t i = 0; st == SL_OK && i < j->n_remote_parts; i++)
            st = note_unknown(u, j->remote_parts[i].name);
    else
        st = sl_shard_each_part(j->dir, note_unknown, u);
    names[0] = '\0';
    for (long k = 0; k < u->count && k < UNKNOWN_SHOWN; k++) {
        size_t used = strlen(names);
        snprintf(names + used, cap - used, "%s%s", k ? ", " : "", u->first[k]);
    }
    if (u->count > UNKNOWN_SHOWN) {
        size_t used = strlen(names);
        snprintf(names + used, cap - used, ", ...");
    }
    return st;
}

static sl_status refuse_unknown_parts(job *j)
{
    unknown_parts u;
    char names[UNKNOWN_SHOWN * 66 + 16];
    sl_status st = find_unknown_parts(j, j->ledger, &u, names, sizeof names);
    if (st != SL_OK || u.count == 0)
        return st;
    return sl_fail(SL_ERR_EXISTS,
                   "%s '%s' holds %ld part %s that its resume ledger '%s' does not record (%s): "
                   "the ledger was emptied, replaced or lost its -wal file, and going on would "
                   "write their rows a second time. Move those parts out of the output to "
                   "resume without them (their rows are captioned again), choose another "
                   "output, or pass --overwrite to start over",
                   j->remote ? "output" : "output folder", j->remote ? j->remote : j->dir,
                   u.count, j->remote ? (u.count == 1 ? "object" : "objects")
                                      : (u.count == 1 ? "file" : "files"),
                   j->remote ? sl_ledger_path(j->ledger) : SL_LEDGER_FILE, names);
}

/* --- parts changed by hand ------------------------------------------------------ */

sl_status job_download(const char *url, const char *path)
{
    int fd = sl_file_create_temp(path, 0666);
    FILE *fp = fd >= 0 ? fdopen(fd, "w+b") : NULL;
    if (fd >= 0 && !fp)
        close(fd);
    if (!fp)
        return sl_fail(SL_ERR_IO, "cannot create '%s': %s", path, sl_file_temp_error(errno));
    const sl_s3 *s3 = sl_s3_shared();
    sl_status st = s3 ? sl_s3_download(s3, url, fp)
                      : sl_fail(SL_ERR_INVALID_ARG, "no S3 client for '%s'", url);
    if (fclose(fp) != 0 && st == SL_OK)
        st = sl_fail(SL_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    if (st == SL_ERR_NOT_FOUND)
        unlink(path);
    return st;
}

/* A committed part whose file's size moved since its commit (ledger.h,
 * "Parts changed by hand"): its rows counted. Fewer than the ledger
 * committed means rows were cut out of it by hand; the ledger counts them
 * done, so a resume would never write them again and they would be in no
 * file: refused, naming the part. As many (a caption edited by hand) is
 * taken, and its new size recorded. */
static sl_status check_resized(void *user, const sl_ledger_part *part)
{
    job *j = user;
    /* With --errors-file a part's failed rows are in its errors file. */
    bool errors_apart = j->p->errors_file != NULL;
    if (errors_apart && part->failed < 0) /* not counted: nothing to compare with */
        return sl_ledger_part_sized(j->ledger, part->number, part->bytes);
    long want = part->written - (errors_apart ? part->failed : 0), rows = 0;
    char *file = sl_asprintf("%s/%s", j->remote ? j->remote : j->dir, part->name);
    const char *what = j->remote ? "object" : "file";
    /* An object is counted in a copy, named as io/shard.h's temporaries (a
     * killed run's is removed by the next) and ending as the part does: its
     * format is known by its name. */
    char *copy = j->remote ? sl_asprintf("%s/.%s.tmp-check-%ld-%s", j->dir, part->name,
                                         (long)getpid(), part->name)
                           : NULL;
    if (!file || (j->remote && !copy)) {
        sl_free(file);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", j->dir);
    }
    sl_status st = copy ? job_download(file, copy) : SL_OK;
    if (st == SL_OK)
        st = sl_part_count_rows(copy ? copy : file, &rows);
    if (copy)
        unlink(copy);
    sl_free(copy);
    if (st != SL_OK) {
        char *why = sl_strdup(sl_last_error());
        st = sl_fail(st, "%s; it changed since it was committed (resume ledger '%s'), "
                         "and its %ld row%s cannot be counted: restore the %s, or delete it "
                         "to have its rows captioned again", why ? why : "cannot read it",
                     sl_ledger_path(j->ledger), want, want == 1 ? "" : "s", what);
        sl_free(why);
    } else if (rows < want) {
        st = sl_fail(SL_ERR_EXISTS,
                     "output part '%s' holds %ld row%s, and the resume ledger '%s' committed "
                     "%ld in it: the %s was cut or edited since, and the ledger counts the "
                     "%ld missing row%s done, so a resume would never write them again. "
                     "Restore the %s, or delete it to have all its rows captioned again "
                     "(the ledger forgets a part whose %s is gone), or pass --overwrite to "
                     "start over",
                     file, rows, rows == 1 ? "" : "s", sl_ledger_path(j->ledger), want, what,
                     want - rows, want - rows == 1 ? "" : "s", what, what);
    } else {
        st = sl_ledger_part_sized(j->ledger, part->number, part->bytes);
    }
    sl_free(file);
    return st;
}

/* A fingerprint's text without its token limits: the max_tokens line, and
 * each task's "max_tokens" in the tasks line (re-dumped as fp_add dumps).
 * NULL: out of memory. */
static char *without_token_limits(const char *fp)
{
    char *out = sl_strdup("");
    for (const char *line = fp; out && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *tab = memchr(line, '\t', len);
        size_t klen = tab ? (size_t)(tab - line) : len;
        char *next = NULL;
        if (klen == 10 && strncmp(line, "max_tokens", klen) == 0) {
            next = sl_strdup(out);
        } else if (klen == 5 && strncmp(line, "tasks", klen) == 0 && tab) {
            json_t *tasks = json_loadb(tab + 1, len - klen - 1, JSON_DECODE_ANY, NULL);
            size_t i;
            json_t *task;
            json_array_foreach(tasks, i, task)
                json_object_del(task, "max_tokens");
            char *v = tasks ? json_dumps(tasks, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS)
                            : NULL;
            json_decref(tasks);
            next = v ? sl_asprintf("%stasks\t%s\n", out, v) : NULL;
            free(v);
        } else {
            next = sl_asprintf("%s%.*s\n", out, (int)len, line);
        }
        sl_free(out);
        out = next;
        line += len + (end != NULL);
    }
    return out;
}

/* Whether two fingerprints differ in their token limits alone. */
static bool only_token_limits_differ(const char *a, const char *b)
{
    char *x = without_token_limits(a), *y = without_token_limits(b);
    bool same = x && y && strcmp(x, y) == 0;
    sl_free(x);
    sl_free(y);
    return same;
}

/* The value of `key`'s line in a fingerprint, "none" when it has none. */
static void fp_value(const char *fp, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *line = fp; line && *line; line = strchr(line, '\n'), line += line != NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == '\t') {
            snprintf(out, cap, "%.*s", (int)strcspn(line + klen + 1, "\n"), line + klen + 1);
            return;
        }
    snprintf(out, cap, "none");
}

/* "max_tokens 16, now 200", or the tasks' limits, for a warning. */
static void describe_token_limits(const char *was, const char *now, char *out, size_t cap)
{
    char a[32], b[32];
    fp_value(was, "max_tokens", a, sizeof a);
    fp_value(now, "max_tokens", b, sizeof b);
    if (strcmp(a, b) != 0)
        snprintf(out, cap, "max_tokens %s, now %s", a, b);
    else
        snprintf(out, cap, "a task's max_tokens");
}

/* What a refusal for other settings (sl_ledger_bind's message) says to
 * change where "run the earlier command" alone does not: a run with one
 * process resuming an MPI job's output, or the reverse, differs in
 * mpi_shards (one rank runs as one process); an openai job whose --samples
 * are drawn the other way differs in samples_drawn_by, and the earlier
 * command may be this one: a sluice before 2026-12-02 drew each answer with
 * a request of its own, as --split-samples does now. A folder whose
 * settings differ in their token limits alone (new_limits) takes them with
 * --retry-failed. */
static sl_status explain_refusal(const job *j, bool new_limits)
{
    const char *why = sl_last_error(), *hint = NULL, *how = NULL;
    if (new_limits) {
        char *copy = sl_strdup(why);
        sl_status st = sl_fail(SL_ERR_EXISTS, "%s (only the token limit changed: add "
                                              "--retry-failed to retry the failed rows with the "
                                              "new one, and go on with it)",
                               copy ? copy : "output holds rows made with another token limit");
        sl_free(copy);
        return st;
    }
    if (strstr(why, "mpi_shards")) {
        hint = j->dist ? "ran as one process" : "ran under MPI";
        how = j->dist ? "resume it without mpirun, or with one rank"
                      : "resume it with mpirun and more than one rank, any number";
    } else if (strstr(why, "samples_drawn_by") && job_uses_openai(j->p) && j->p->sampling.n > 1 &&
               j->p->n_choices == 0) {
        bool shared = job_answers_share_seed(j->p);
        hint = shared ? "drew each answer with a request of its own, as every sluice before "
                        "2026-12-02 did"
                      : "drew a row's answers with one request with \"n\"";
        how = shared ? "resume it with --split-samples (openai.split_samples)"
                     : "resume it without --split-samples";
    }
    if (!hint)
        return SL_ERR_EXISTS;
    char *copy = sl_strdup(why);
    sl_status st = sl_fail(SL_ERR_EXISTS, "%s (the earlier run %s: %s)",
                           copy ? copy : "output holds rows of another kind of run", hint, how);
    sl_free(copy);
    return st;
}

/* A value the ledger keeps beside the fingerprint under `key` (what is
 * known only later, or too costly to put in it), against this run's `now`:
 * on a resumed folder that recorded another, *differs is the recorded one
 * (sl_free it; the caller refuses, naming both); else `now` is recorded (a
 * folder of an older sluice holds none, or no part was committed yet) and
 * *differs is NULL. *had (may be NULL): whether the folder held one. */
static sl_status check_beside_fingerprint(job *j, const char *key, const char *now,
                                          char **differs, bool *had)
{
    *differs = NULL;
    char *old = NULL;
    sl_status st = sl_ledger_meta_get(j->ledger, key, &old);
    if (had)
        *had = old != NULL;
    if (st == SL_OK && old && strcmp(old, now) != 0 && j->sum->resumed) {
        *differs = old;
        return SL_OK;
    }
    if (st == SL_OK && (!old || strcmp(old, now) != 0))
        st = sl_ledger_meta_set(j->ledger, key, now);
    sl_free(old);
    return st;
}

/* What tells one GGUF file from another at the same path, cheaply: its size
 * and a SHA-256 of its first and last MiB (the metadata, the last tensor's
 * weights). Hashing it whole would read gigabytes at every start; weights
 * trained again or quantized otherwise change one of the three. Writes
 * "BYTES:HEX" to out; SL_ERR_NOT_FOUND / SL_ERR_IO naming the file. */
enum { FILE_ENDS = 1 << 20 };

static sl_status file_signature(const char *flag, const char *path, char *out, size_t cap)
{
    int fd;
    uint64_t size;
    sl_status st = sl_file_open_regular(path, &fd, &size);
    struct stat sb;
    /* The engine's own check (access) passes a folder or a FIFO: this is
     * the first open, and its refusal named no flag and called the file
     * an input. */
    if (st == SL_ERR_INVALID_ARG && stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return sl_fail(st, "%s '%s' is %s, not a GGUF file: name the file itself", flag, path,
                       sl_file_kind(sb.st_mode));
    if (st != SL_OK) {
        char *why = sl_strdup(sl_last_error());
        st = sl_fail(st, "%s: %s", flag, why ? why : "cannot open it");
        sl_free(why);
        return st;
    }
    uint8_t *buf = sl_malloc(FILE_ENDS);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = buf && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    uint64_t head = size < FILE_ENDS ? size : FILE_ENDS;
    uint64_t tail_at = size > 2 * (uint64_t)FILE_ENDS ? size - FILE_ENDS : head;
    const uint64_t at[2] = {0, tail_at}, len[2] = {head, size - tail_at};
    /* pread may return less than asked (a network file system, a signal):
     * read on; 0 before the end is a file that shrank since its size. */
    int err = 0;
    bool shrank = false;
    for (int i = 0; ok && i < 2; i++) {
        size_t got = 0;
        while (ok && got < len[i]) {
            ssize_t n = pread(fd, buf + got, (size_t)len[i] - got, (off_t)(at[i] + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                err = n < 0 ? errno : 0;
                shrank = n == 0;
                ok = false;
            } else {
                got += (size_t)n;
            }
        }
        ok = ok && EVP_DigestUpdate(md, buf, got) == 1;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dn = 0;
    ok = ok && EVP_DigestFinal_ex(md, digest, &dn) == 1;
    close(fd);
    EVP_MD_CTX_free(md);
    sl_free(buf);
    if (!ok)
        return sl_fail(SL_ERR_IO, "%s '%s': cannot read it to tell it from another file: %s",
                       flag, path,
                       shrank ? "it is shorter than its size said (being written?)"
                       : err  ? strerror(err)
                              : "out of memory");
    int w = snprintf(out, cap, "%llu:", (unsigned long long)size);
    for (unsigned int i = 0; i < 16 && w > 0 && (size_t)w + 2 < cap; i++)
        w += snprintf(out + w, cap - (size_t)w, "%02x", digest[i]);
    return SL_OK;
}

/* The model's and projector's signatures, "MODEL MMPROJ" (file_signature;
 * "" where there is none), into all[cap]: "" for a job that opens no model
 * file (the openai engine, a dry run). */
static sl_status model_files_signature(const job *j, char *all, size_t cap, char now[2][64])
{
    const sl_caption_params *p = j->p;
    all[0] = '\0';
    if (job_uses_openai(p) || p->dry_run || !p->llama.model_path)
        return SL_OK;
    const char *flags[2] = {"--model", "--mmproj"};
    const char *paths[2] = {p->llama.model_path, p->llama.mmproj_path};
    for (int i = 0; i < 2; i++) {
        sl_status st = paths[i] && *paths[i]
                           ? file_signature(flags[i], paths[i], now[i], sizeof now[i])
                           : SL_OK;
        if (st != SL_OK)
            return st;
    }
    snprintf(all, cap, "%s %s", now[0], now[1]);
    return SL_OK;
}

/* The llama engine's model and projector against the files a resumed
 * folder's rows were answered by: the fingerprint holds their paths, so a
 * file replaced at its path (weights trained again, another quantization
 * under the same name) went on in silence, mixing two models' answers in
 * one dataset. Recorded when the ledger holds none (a folder of an older
 * sluice, or no part yet). */
static sl_status check_model_files(job *j)
{
    const sl_caption_params *p = j->p;
    const char *kinds[2] = {"model", "mmproj"};
    const char *paths[2] = {p->llama.model_path, p->llama.mmproj_path};
    char now[2][64] = {"", ""}, all[160];
    sl_status st = j->ledger ? model_files_signature(j, all, sizeof all, now) : SL_OK;
    if (st != SL_OK || !j->ledger || !*all)
        return st;
    char *old;
    st = check_beside_fingerprint(j, "model_files", all, &old, NULL);
    if (st == SL_OK && old) {
        char was[2][64] = {"", ""};
        sscanf(old, "%63s %63s", was[0], was[1]);
        int i = strcmp(was[0], now[0]) != 0 ? 0 : 1;
        unsigned long long then = strtoull(was[i], NULL, 10), size = strtoull(now[i], NULL, 10);
        st = sl_fail(SL_ERR_EXISTS,
                     "output folder '%s' holds rows answered by another %s file than '%s' is "
                     "now (%llu bytes, the rows' %llu; size and first and last MiB compared): "
                     "the file changed at that path. Put the first one back to go on, choose "
                     "another -o for the new one, or pass --overwrite to start over",
                     j->remote ? j->remote : j->dir, kinds[i], paths[i], size, then);
    }
    sl_free(old);
    return st;
}

/* An s3:// output's state folder is its own: two names may come to one
 * folder (state_below spells a key's "." segment and a literal "%2E" alike,
 * and --state-dir may name any), and the second would take the first's
 * ledger for its own. The ledger records its output's URL. */
static sl_status check_state_owner(job *j)
{
    char *old = NULL;
    sl_status st = sl_ledger_meta_get(j->ledger, "output", &old);
    if (st == SL_OK && old && strcmp(old, j->remote) != 0)
        st = sl_fail(SL_ERR_INVALID_ARG,
                     "state folder '%s' holds the resume ledger of output '%s', not of '%s': "
                     "pass --state-dir with a folder of this output's own",
                     j->dir, old, j->remote);
    /* None: a new ledger, or an older sluice's; open_ledger records this
     * output once the ledger is bound. */
    sl_free(old);
    return st;
}

/* The keys an older sluice kept as "" for what leaving the flag out means,
 * each as today's form holds it without the flag: system_prompt null, no
 * chat_template line (now NULL). */
static const struct {
    const char *key, *now;
} empty_keys[] = {{"system_prompt", "null"}, {"chat_template", NULL}};
enum { N_EMPTY_KEYS = sizeof empty_keys / sizeof empty_keys[0] };

/* "\nKEY\tVALUE\n" into line[cap]: its length, as found in a fingerprint
 * (never its first line). */
static int key_line(char *line, size_t cap, const char *key, const char *value)
{
    return snprintf(line, cap, "\n%s\t%s\n", key, value);
}

/* An older sluice's fingerprint with `system_prompt ""` and
 * `chat_template ""` as null, or NULL when it holds neither: before
 * 2026-12-05 an empty --system or --chat-template was taken (and kept as
 * "") for what leaving the flag out means (no system message; the model's
 * template), and is refused now, so such a folder could be resumed by no
 * command. Not --prompt-column '': it named a column "", which no row
 * has, where no flag reads the column "prompt". */
static char *empty_as_null(const char *old)
{
    if (strstr(old, "\nfingerprint_form\t"))
        return NULL; /* today's: "" cannot be given */
    char *text = sl_strdup(old);
    bool changed = false;
    for (size_t i = 0; text && i < N_EMPTY_KEYS; i++) {
        char line[64];
        int n = key_line(line, sizeof line, empty_keys[i].key, "\"\"");
        char *at = strstr(text, line);
        if (!at)
            continue;
        char *next = empty_keys[i].now
                         ? sl_asprintf("%.*s\n%s\t%s\n%s", (int)(at - text), text,
                                       empty_keys[i].key, empty_keys[i].now, at + n)
                         : sl_asprintf("%.*s\n%s", (int)(at - text), text, at + n);
        sl_free(text);
        text = next;
        changed = true;
    }
    if (!changed) {
        sl_free(text);
        return NULL;
    }
    return text;
}

/* `form` (today's job in an older sluice's form, which did not match) as
 * that sluice wrote it with --system '' and --chat-template '', where `old`
 * holds them so: empty_as_null the other way, so that the refusal's
 * comparison names only what the user changed, not the keys empty_as_null
 * reads as left out. Consumes `form`; NULL on NOMEM. */
static char *null_as_empty(char *form, const char *old)
{
    for (size_t i = 0; form && i < N_EMPTY_KEYS; i++) {
        const char *key = empty_keys[i].key, *now = empty_keys[i].now;
        char empty[64], left_out[64];
        key_line(empty, sizeof empty, key, "\"\"");
        if (!strstr(old, empty))
            continue;
        char *next;
        if (now) { /* the value the flag left out has today, where the form holds it */
            int n = key_line(left_out, sizeof left_out, key, now);
            char *at = strstr(form, left_out);
            if (!at)
                continue;
            next = sl_asprintf("%.*s%s%s", (int)(at - form), form, empty, at + n);
        } else { /* a key today's form leaves out: added, where it has none */
            snprintf(left_out, sizeof left_out, "\n%s\t", key);
            if (strstr(form, left_out))
                continue;
            size_t n = strlen(form);
            next = sl_asprintf("%s%s", form, !n || form[n - 1] == '\n' ? empty + 1 : empty);
        }
        sl_free(form);
        form = next;
    }
    return form;
}

/* Opens the output folder's ledger: starts over (--overwrite), or settles
 * what an earlier run left and finds where this one goes on. */
static sl_status open_ledger(job *j)
{
    const sl_caption_params *p = j->p;
    sl_part_scan scan;
    sl_status st = choose_dir(j);
    if (st == SL_OK)
        st = writable_errors_file(p->errors_file);
    if (st != SL_OK)
        return st;
    const char *dir = j->dir;
    if (!sl_ledger_exists(dir) && !p->overwrite) {
        /* Parts without a ledger: another tool's, an older sluice's, or
         * their ledger was deleted. */
        unknown_parts u;
        char names[UNKNOWN_SHOWN * 66 + 16];
        if ((st = find_unknown_parts(j, NULL, &u, names, sizeof names)) != SL_OK)
            return st;
        if (u.count > 0 && j->remote)
            return sl_fail(SL_ERR_EXISTS,
                           "output '%s' already holds %ld part object%s (%s) and its resume "
                           "ledger is not in %s: give the --state-dir of the run that wrote "
                           "them, pass --overwrite to replace them, or choose another output",
                           j->remote, u.count, u.count == 1 ? "" : "s", names, dir);
        if (u.count > 0)
            return sl_fail(SL_ERR_EXISTS,
                           "output folder '%s' already holds %ld part file%s (%s) and no resume "
                           "ledger: move them out of the folder, pass --overwrite to replace "
                           "them, or choose another output folder", dir, u.count,
                           u.count == 1 ? "" : "s", names);
    }
    st = sl_ledger_open(dir, p->overwrite, &j->ledger);
    if (st == SL_ERR_BUSY && j->remote)
        /* The lock is the state folder's; the user named the bucket. */
        return sl_fail(SL_ERR_BUSY,
                       "output '%s' is in use by another sluice run (its resume ledger, in the "
                       "state folder '%s', is locked): wait for that run to end, or write to "
                       "another prefix (-o s3://BUCKET/OTHER)",
                       j->remote, dir);
    /* Before anything in it is read or settled for this output. */
    if (st == SL_OK && j->remote)
        st = check_state_owner(j);
    /* The bucket's lock, before anything is written: runs with other
     * state folders pass the ledger's. */
    if (st == SL_OK && j->remote)
        st = job_lock_bucket(j);
    if (st == SL_OK && p->overwrite)
        /* under the ledger's lock, before it forgets them */
        st = j->remote ? remove_remote_parts(j) : sl_shard_remove_parts(dir);
    else if (st == SL_OK)
        /* before anything is written to the ledger */
        st = refuse_unknown_parts(j);
    if (st == SL_OK && j->remote) {
        sl_ledger_set_presence(j->ledger, remote_part_size, j);
        sl_ledger_set_output(j->ledger, j->remote);
    }
    char *old = NULL;
    if (st == SL_OK && !p->overwrite)
        st = sl_ledger_meta_get(j->ledger, "fingerprint", &old);
    /* A folder whose fingerprint holds served_model was written before
     * the model served was recorded apart: compared as it was. */
    int served_model_key = old && (strncmp(old, "served_model\t", 13) == 0 ||
                                   strstr(old, "\nserved_model\t"))
                               ? FP_SERVED_MODEL_KEY
                               : 0;
    char *fp = st == SL_OK ? fingerprint(j, served_model_key) : NULL;
    /* An older sluice's fingerprint of the same job: that folder goes on
     * with it (paths as typed, no stages, --image-root or cache types).
     * Each older form lacks fingerprint_form: a folder of today, which has
     * it, is never taken for an older one's (one without stages resumed
     * with a stage matched the form before stages). */
    /* The forms that did not match are kept for a refusal's message: it
     * names the keys of the nearest, not those an older sluice did not
     * write (sl_ledger_bind_near). */
    static const int older_forms[] = {
        FP_BEFORE_FORM, /* 2026-12-07, before fingerprint_form */
        FP_BEFORE_KV_TYPES, FP_BEFORE_KV_TYPES | FP_AS_TYPED, FP_BEFORE_KV_TYPES | FP_BEFORE_STAGES,
        FP_BEFORE_KV_TYPES | FP_BEFORE_STAGES | FP_AS_TYPED};
    enum { N_OLDER = sizeof older_forms / sizeof older_forms[0] };
    char *forms[N_OLDER + 1] = {NULL};
    size_t n_forms = 0;
    char *old_empty_as_null = old ? empty_as_null(old) : NULL;
    for (size_t k = 0; fp && old && strcmp(fp, old) != 0 && k < N_OLDER; k++) {
        char *then = fingerprint(j, served_model_key | older_forms[k]);
        bool same = then && strcmp(then, old) == 0;
        if (!same && then && old_empty_as_null && strcmp(then, old_empty_as_null) == 0) {
            sl_free(then); /* the folder keeps the text it has */
            then = sl_strdup(old);
            same = then != NULL;
        }
        if (same) {
            sl_free(fp);
            fp = then;
        } else {
            forms[n_forms++] = old_empty_as_null ? null_as_empty(then, old) : then;
        }
    }
    sl_free(old_empty_as_null);
    /* No form of the served_model folder's matched: the bind refuses it,
     * or, when it holds no part, takes the settings this run stores. Those
     * are today's in full: stored in that older form (no fingerprint_form),
     * the folder this run writes would be taken for an older sluice's. */
    if (fp && old && served_model_key && strcmp(fp, old) != 0) {
        char *today = fingerprint(j, 0);
        if (today) {
            forms[n_forms++] = fp; /* for the refusal's nearest form */
            fp = today;
        }
    }
    if (st == SL_OK && !fp)
        st = sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    /* Only the token limits changed: --retry-failed retries the failed
     * rows with the new ones (an answer cut at the limit fails its JSON
     * schema, and the error says to allow more tokens); the folder is bound
     * as it was, and takes them once its model files are checked. */
    bool new_limits = st == SL_OK && old && strcmp(fp, old) != 0 &&
                      only_token_limits_differ(fp, old);
    bool retake = new_limits && p->retry_failed;
    if (st == SL_OK)
        st = sl_ledger_bind_near(j->ledger, retake ? old : fp, (const char *const *)forms,
                                 n_forms, p->overwrite);
    for (size_t i = 0; i < n_forms; i++)
        sl_free(forms[i]);
    /* After the bind, whose start over (--overwrite, or other settings
     * before any part) empties the meta table: recorded before it, the
     * owner was lost, and the next output given this state folder took
     * the ledger for its own (check_state_owner). */
    if (st == SL_OK && j->remote)
        st = sl_ledger_meta_set(j->ledger, "output", j->remote);
    if (st == SL_ERR_EXISTS)
        st = explain_refusal(j, new_limits);
    sl_ledger_info info;
    if (st == SL_OK)
        st = sl_ledger_reconcile(j->ledger, &info);
    /* Before anything rewrites a part (a retry an earlier run began,
     * --retry-failed): a run refused for another model file changes nothing
     * in the output. The reconcile above only settles the last run's
     * commit, which its own command would have settled alike. */
    if (st == SL_OK) {
        j->sum->resumed = info.parts > 0;
        st = check_model_files(j);
    }
    if (st == SL_OK && retake) {
        char said[256];
        describe_token_limits(old, fp, said, sizeof said);
        sl_log(SL_LOG_WARN, "output folder '%s' was begun with another token limit (%s): "
                            "--retry-failed retries its failed rows with the new one, and the "
                            "folder goes on with it; the rows written before keep their answers",
               dir, said);
        st = sl_ledger_retake(j->ledger, fp);
    }
    sl_free(old);
    sl_free(fp);
    if (st == SL_OK && j->remote) {
        remote_scan(j, &scan);
        abort_stale_uploads(j);
    } else if (st == SL_OK)
        st = sl_shard_scan_parts(dir, &scan);
    if (st == SL_OK)
        st = check_max_line_bytes(j, info.parts > 0);
    if (st != SL_OK)
        return st;
    long temps = sl_shard_remove_temps(dir);
    /* (local only: an s3:// output's errors parts are objects in the bucket) */
    long orphans = j->remote ? 0 : sl_shard_remove_orphan_errors(dir);
    if (temps > 0 || info.parts_promoted || info.parts_dropped)
        sl_log(SL_LOG_INFO, "%s: removed %ld temporary file%s; %ld pending part%s committed, "
                            "%ld dropped", dir, temps, temps == 1 ? "" : "s", info.parts_promoted,
               info.parts_promoted == 1 ? "" : "s", info.parts_dropped);
    if (orphans > 0)
        sl_log(SL_LOG_INFO, "%s: removed %ld errors part%s whose part was never committed (its "
                            "rows are written again)", dir, orphans, orphans == 1 ? "" : "s");
    /* A retry an earlier run began is finished whatever this run's flags
     * (ledger/ledger.h); then this run's own. Both change the counts. */
    long settled = 0, retried = 0, retried_parts = 0, kept = 0;
    if ((st = job_retry_settle(j, &settled)) != SL_OK)
        return st;
    /* After the settle (a retry it finishes rewrote its part), before any
     * part is read for --retry-failed or a row is skipped as done. */
    if ((st = sl_ledger_each_resized(j->ledger, check_resized, j)) != SL_OK)
        return st;
    double t0 = sl_mono_s();
    if (p->retry_failed && (st = job_retry_failed(j, &retried, &retried_parts, &kept)) != SL_OK)
        return st;
    j->sum->retry_seconds = sl_mono_s() - t0;
    j->sum->rows_retry_kept = kept;
    if (settled || retried_parts) {
        sl_ledger_info now;
        if ((st = sl_ledger_counts(j->ledger, &now)) != SL_OK)
            return st;
        info.parts = now.parts;
        info.rows = now.rows;
        info.inputs = now.inputs;
        info.written = now.written;
        info.failed = now.failed;
    }
    if (settled)
        sl_log(SL_LOG_INFO, "%s: finished taking failed rows out of %ld part%s (a retry an "
                            "earlier run began)", dir, settled, settled == 1 ? "" : "s");
    j->sum->rows_failed_before = info.failed;
    j->sum->rows_retried = retried;
    j->sum->parts_retried = retried_parts;
    /* Never reuse a number: parts continue after the highest one seen. */
    j->shard = (info.max_part > scan.max_number ? info.max_part : scan.max_number) + 1;
    j->first_shard = j->shard;
    j->done_before = info.inputs;
    j->sum->rows_done_before = info.written;
    j->sum->inputs_done_before = info.inputs;
    j->sum->resumed = info.parts > 0;
    return SL_OK;
}

json_t *job_settings_json(const job *j)
{
    char *fp = fingerprint(j, 0);
    json_t *o = fp ? json_object() : NULL;
    for (char *line = fp; o && line && *line;) {
        char *end = strchr(line, '\n'), *tab = strchr(line, '\t');
        if (!end || !tab || tab > end)
            break;
        *end = *tab = '\0';
        json_t *v = json_loads(tab + 1, JSON_DECODE_ANY, NULL);
        if (v)
            json_object_set_new(o, line, v);
        line = end + 1;
    }
    sl_free(fp);
    return o;
}

/* Under MPI the ranks agree to start here (dist_start): after rank 0's
 * output checks, before rank 0 serves and the others wait for its hello. */
sl_status job_open_ledger(job *j)
{
    if (!j->dist)
        return open_ledger(j);
    bool lead = sl_dist_rank(j->dist) == 0;
    sl_status st = dist_start(j->dist, lead ? open_ledger(j) : choose_dir(j));
    if (st != SL_OK)
        return st;
    return lead ? lead_job(j) : join_job(j);
}


/* Whether some row is prompted without a system prompt of the job's: the
 * engine then puts its default one first. */
static bool default_system_applies(const sl_caption_params *p)
{
    if (p->system_prompt && *p->system_prompt) /* every task's too, where it has none */
        return false;
    for (int i = 0; i < p->n_tasks; i++)
        if (!p->tasks[i].system_prompt || !*p->tasks[i].system_prompt)
            return true;
    return p->n_tasks == 0;
}

/* Recorded beside the fingerprint, not in it, like the served model: it
 * is known once the model is loaded, after the ledger is bound. A folder
 * written before sluice sent the template's message records none. */
sl_status job_check_default_system(job *j, const char *text)
{
    if (!j->ledger || !text || j->p->dry_run || !default_system_applies(j->p))
        return SL_OK;
    char *old;
    bool had;
    sl_status st = check_beside_fingerprint(j, "default_system", text, &old, &had);
    if (st == SL_OK && old)
        st = sl_fail(SL_ERR_EXISTS,
                     "output folder '%s' holds rows prompted with the system message \"%s\", and "
                     "model '%s' now gives \"%s\" where a prompt has none (its chat template): "
                     "choose another -o for the new one, or pass --overwrite to start over",
                     j->remote ? j->remote : j->dir, old, j->p->llama.model_path, text);
    else if (st == SL_OK && !had && j->sum->resumed && *text)
        sl_log(SL_LOG_WARN, "output folder '%s' holds rows an earlier sluice prompted "
                            "without the chat template's system message \"%s\"; the rows "
                            "from now on have it (pass --overwrite to prompt every row "
                            "alike)", j->remote ? j->remote : j->dir, text);
    sl_free(old);
    return st;
}

/* Recorded beside the fingerprint, not in it: the model is known only once
 * the engine has asked the fleet, after the ledger is bound. */
sl_status job_check_served_model(job *j, const char *model)
{
    if (!j->ledger || !job_uses_openai(j->p) || j->p->dry_run)
        return SL_OK;
    char *old;
    sl_status st = check_beside_fingerprint(j, "served_model", model, &old, NULL);
    if (st == SL_OK && old) {
        const char *named = j->p->openai.served_model;
        st = sl_fail(SL_ERR_EXISTS,
                     "output folder '%s' holds rows answered by model '%s', and %s '%s': "
                     "pass --served-model '%s' to go on with the first model (on endpoints "
                     "that serve it), choose another -o for the new one, or pass --overwrite "
                     "to start over",
                     j->remote ? j->remote : j->dir, old,
                     named && *named ? "this run names (--served-model)"
                                     : "the endpoints now serve (the first of GET /v1/models)",
                     model, old);
    }
    sl_free(old);
    return st;
}
