/* job/pipeline.c — sluice/pipeline.h: the caption job's pipeline assembled
 * from the built-in stages (job/job.h, one file each) and the caller's, then
 * run on the streaming executor with what surrounds it: the output's schema
 * planned, the ledger opened, metrics and the live page served, progress
 * and counting threads, the report written at the end. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/utf8.h"
#include "job/caption_report.h"
#include "job/batch.h"
#include "job/job.h"
#include "job/progress.h"
#include "job/rank_metrics.h"
#include "job/template.h"
#include "sluice/engine.h"
#include "sluice/image.h"
#include "sluice/pipeline.h"

/* A stage of the pipeline: a built-in one, made at run time (its config is
 * the run's job), or the caller's, copied. */
typedef struct slot {
    bool builtin;
    sl_pipeline_builtin which;
    sl_stage_def def;
    char **columns; /* the caller's stage: the columns it sets (copies) */
    size_t n_columns;
} slot;

struct sl_pipeline {
    const sl_caption_params *p;
    slot *slots;
    size_t n, cap;
    int next_builtin;  /* the built-in stage that comes next */
    bool ran;
};

static const char *const builtin_names[] = {"read", "decode", "engine", "write", "(none)"};

static sl_stage_def builtin_def(sl_pipeline_builtin which, job *j)
{
    switch (which) {
    case SL_PIPELINE_READ: return stage_read(j);
    case SL_PIPELINE_DECODE: return stage_decode(j);
    case SL_PIPELINE_ENGINE: return stage_engine(j);
    default: return stage_write(j);
    }
}

sl_pipeline_stage_params sl_pipeline_stage_default_params(void)
{
    return (sl_pipeline_stage_params){.workers = 1, .batch_size = 16};
}

sl_status sl_pipeline_new(const sl_caption_params *params, sl_pipeline **out)
{
    *out = sl_calloc(1, sizeof **out);
    if (!*out)
        return sl_fail(SL_ERR_NOMEM, "out of memory making a pipeline");
    (*out)->p = params;
    return SL_OK;
}

static sl_status append(sl_pipeline *pl, const slot *s)
{
    slot *grown = sl_grow(pl->slots, pl->n, &pl->cap, sizeof *grown);
    if (!grown)
        return sl_fail(SL_ERR_NOMEM, "out of memory adding a stage");
    pl->slots = grown;
    pl->slots[pl->n++] = *s;
    return SL_OK;
}

static void free_slot(slot *s)
{
    for (size_t i = 0; i < s->n_columns; i++)
        sl_free(s->columns[i]);
    sl_free(s->columns);
    sl_free((char *)s->def.name);
}

sl_status sl_pipeline_add_builtin(sl_pipeline *pl, sl_pipeline_builtin which)
{
    if ((int)which < SL_PIPELINE_READ || which > SL_PIPELINE_WRITE)
        return sl_fail(SL_ERR_INVALID_ARG, "no built-in stage %d", (int)which);
    if ((int)which != pl->next_builtin)
        return sl_fail(SL_ERR_INVALID_ARG, "the built-in stage %s comes after %s: add read, "
                                           "decode, engine and write in that order, each once",
                       builtin_names[which], builtin_names[pl->next_builtin]);
    sl_status st = append(pl, &(slot){.builtin = true, .which = which});
    if (st == SL_OK)
        pl->next_builtin++;
    return st;
}

static bool name_taken(const sl_pipeline *pl, const char *name)
{
    for (int b = SL_PIPELINE_READ; b <= SL_PIPELINE_WRITE; b++)
        if (strcmp(builtin_names[b], name) == 0)
            return true;
    for (size_t i = 0; i < pl->n; i++)
        if (!pl->slots[i].builtin && strcmp(pl->slots[i].def.name, name) == 0)
            return true;
    return false;
}

sl_status sl_pipeline_add_stage(sl_pipeline *pl, const sl_pipeline_stage_params *sp)
{
    const char *name = sp->name ? sp->name : "";
    if (!*name || name_taken(pl, name))
        return sl_fail(SL_ERR_INVALID_ARG, "a stage needs a name of its own, got '%s'%s", name,
                       *name ? " (another stage's or a built-in one's): give it a name (a job's "
                               "stages: their name key, by default the file's name)" : "");
    if (!sl_utf8_valid(name, strlen(name)))
        return sl_fail(SL_ERR_INVALID_ARG, "stage name '%s' is not UTF-8: it names the stage in "
                                           "the rows' error_stage and in the metrics' labels; "
                                           "give a UTF-8 name", name);
    if (pl->next_builtin == SL_PIPELINE_READ || pl->next_builtin > SL_PIPELINE_WRITE)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s' must come after read and before write",
                       name);
    if (!sp->process || sp->workers < 1 || sp->batch_size < 1)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s' needs process(), workers >= 1 and "
                                           "batch_size >= 1", name);
    for (size_t i = 0; i < sp->n_columns; i++)
        if (!sp->columns[i] || !*sp->columns[i] || caption_field_index(sp->columns[i]) >= 0)
            return sl_fail(SL_ERR_INVALID_ARG, "stage '%s' declares a column '%s': choose a name "
                                               "that is not empty and not one of the output's "
                                               "own fields", name,
                           sp->columns[i] ? sp->columns[i] : "");
    slot s = {.def = {.kind = SL_STAGE_MAP, .workers = sp->workers, .batch_size = sp->batch_size,
                      .config = sp->config, .init = sp->init, .close = sp->close,
                      .process = sp->process}};
    bool ok = (s.def.name = sl_strdup(name)) != NULL &&
              (!sp->n_columns || (s.columns = sl_calloc(sp->n_columns, sizeof *s.columns)));
    for (size_t i = 0; ok && i < sp->n_columns; i++, s.n_columns++)
        ok = (s.columns[i] = sl_strdup(sp->columns[i])) != NULL;
    sl_status st = ok ? append(pl, &s) : sl_fail(SL_ERR_NOMEM, "out of memory adding stage '%s'",
                                                 name);
    if (st != SL_OK)
        free_slot(&s);
    return st;
}

/* The columns every stage of the caller's sets, in stage order (borrowed
 * from the slots), with room for `more` after them; *out NULL when there
 * are none. */
static sl_status stage_columns(const sl_pipeline *pl, int more, const char ***out, size_t *n)
{
    size_t total = (size_t)more;
    for (size_t i = 0; i < pl->n; i++)
        total += pl->slots[i].n_columns;
    *out = NULL;
    *n = 0;
    if (!total)
        return SL_OK;
    if (!(*out = sl_calloc(total, sizeof **out)))
        return sl_fail(SL_ERR_NOMEM, "out of memory choosing the output columns");
    for (size_t i = 0; i < pl->n; i++)
        for (size_t c = 0; c < pl->slots[i].n_columns; c++)
            (*out)[(*n)++] = pl->slots[i].columns[c];
    return SL_OK;
}

void sl_pipeline_free(sl_pipeline *pl)
{
    if (!pl)
        return;
    for (size_t i = 0; i < pl->n; i++)
        if (!pl->slots[i].builtin)
            free_slot(&pl->slots[i]);
    sl_free(pl->slots);
    sl_free(pl);
}

/* --- rows -------------------------------------------------------------------------- */

const char *sl_pipeline_row_id(const sl_row *row) { return ((caption_row *)sl_row_data(row))->rel; }

const char *sl_pipeline_row_path(const sl_row *row)
{
    return ((caption_row *)sl_row_data(row))->path;
}

const char *sl_pipeline_row_prompt(const sl_row *row)
{
    return ((caption_row *)sl_row_data(row))->prompt;
}

sl_status sl_pipeline_row_set_prompt(sl_row *row, const char *prompt)
{
    caption_row *r = sl_row_data(row);
    /* A write that would change nothing is refused, not ignored. */
    if (r->has_result)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' has its answer: a prompt is set before the engine "
                                           "(after it, row.answer)", r->rel);
    if (r->task_prompts)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s': a row's prompt is not used with tasks (each task "
                                           "asks its own)", r->rel);
    char *copy = prompt ? sl_strdup(prompt) : NULL;
    if (prompt && !copy)
        return sl_fail(SL_ERR_NOMEM, "out of memory setting the prompt of '%s'", r->rel);
    sl_free(r->prompt);
    r->prompt = copy;
    return SL_OK;
}

bool sl_pipeline_row_video(const sl_row *row, int *frames, double *seconds)
{
    const caption_row *r = sl_row_data(row);
    bool video = r->media && r->media->is_video;
    *frames = video ? r->media->n : 0;
    *seconds = video ? r->media->seconds : 0.0;
    return video;
}

int sl_pipeline_row_image_count(const sl_row *row)
{
    const caption_row *r = sl_row_data(row);
    return r->media && !r->media->is_video ? r->media->n : (int)r->n_list;
}

int sl_pipeline_row_width(const sl_row *row) { return ((caption_row *)sl_row_data(row))->width; }

int sl_pipeline_row_height(const sl_row *row)
{
    return ((caption_row *)sl_row_data(row))->height;
}

const char *sl_pipeline_row_answer(const sl_row *row)
{
    const caption_row *r = sl_row_data(row);
    return r->has_result ? r->result.text : NULL;
}

sl_status sl_pipeline_row_set_answer(sl_row *row, const char *text)
{
    caption_row *r = sl_row_data(row);
    if (!r->has_result)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' has no answer to replace before the engine",
                       r->rel);
    /* Its answers are written from r->results: a write that would change
     * nothing is refused, not ignored. */
    if (r->n_results > 0 && r->tasks)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' has its tasks' answers, not one: set a "
                                           "task's with row:set_task_answer(name, text)", r->rel);
    if (r->n_results > 0)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' has %d answers (--samples), not one: they are "
                                           "read with row:answers() and not set", r->rel,
                       r->n_results);
    char *copy = text ? sl_strdup(text) : NULL;
    if (text && !copy)
        return sl_fail(SL_ERR_NOMEM, "out of memory setting the answer of '%s'", r->rel);
    sl_free(r->result.text);
    r->result.text = copy;
    return SL_OK;
}

/* The index of task `task`'s (first) answer in the row's results, or -1. */
static int task_index(const caption_row *r, const char *task)
{
    int per = r->samples > 1 ? r->samples : 1;
    for (int t = 0; task && r->tasks && t * per < r->n_results; t++)
        if (strcmp(r->tasks[t].name, task) == 0)
            return t * per;
    return -1;
}

const char *sl_pipeline_row_task_answer(const sl_row *row, const char *task)
{
    const caption_row *r = sl_row_data(row);
    int i = r->has_result ? task_index(r, task) : -1;
    return i >= 0 ? r->results[i].text : NULL;
}

int sl_pipeline_row_answer_count(const sl_row *row)
{
    const caption_row *r = sl_row_data(row);
    return !r->has_result ? 0 : r->n_results > 0 ? r->n_results : 1;
}

const char *sl_pipeline_row_answer_at(const sl_row *row, int k)
{
    const caption_row *r = sl_row_data(row);
    if (k < 0 || k >= sl_pipeline_row_answer_count(row))
        return NULL;
    return r->n_results > 0 ? r->results[k].text : r->result.text;
}

/* The row's answer (task NULL) or that task's; NULL before the engine or
 * for a name that is not a task. */
static const sl_result *row_result(const sl_row *row, const char *task)
{
    const caption_row *r = sl_row_data(row);
    if (!r->has_result)
        return NULL;
    if (!task)
        return &r->result;
    int i = task_index(r, task);
    return i >= 0 ? &r->results[i] : NULL;
}

const char *sl_pipeline_row_logprobs(const sl_row *row, const char *task)
{
    const sl_result *res = row_result(row, task);
    return res ? res->logprobs : NULL;
}

const char *sl_pipeline_row_scores(const sl_row *row, const char *task)
{
    const sl_result *res = row_result(row, task);
    return res ? res->scores : NULL;
}

sl_status sl_pipeline_row_set_task_answer(sl_row *row, const char *task, const char *text)
{
    caption_row *r = sl_row_data(row);
    int i = r->has_result ? task_index(r, task) : -1;
    if (i < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' has no answer of a task '%s' to replace%s",
                       r->rel, task ? task : "", r->has_result ? "" : " before the engine");
    char *copy = text ? sl_strdup(text) : NULL;
    if (text && !copy)
        return sl_fail(SL_ERR_NOMEM, "out of memory setting the answer of '%s'", r->rel);
    sl_free(r->results[i].text);
    r->results[i].text = copy;
    return SL_OK;
}

const char *sl_pipeline_row_image_format(const sl_row *row)
{
    caption_row *r = sl_row_data(row);
    if (!r->format && r->data)
        r->format = job_image_format(r->data, r->len);
    return r->format;
}

sl_status sl_pipeline_row_image_bytes(sl_row *row, const uint8_t **bytes, size_t *len)
{
    caption_row *r = sl_row_data(row);
    *bytes = NULL;
    *len = 0;
    if (!r->data && r->path && !r->width && !strstr(r->path, "://")) {
        sl_status st = job_read_local(r->path, r->max_file_bytes, &r->data, &r->len);
        if (st != SL_OK)
            return st;
        sl_row_set_bytes(row, sl_row_bytes(row) + r->len);
    }
    if (r->data && !r->format)
        r->format = job_image_format(r->data, r->len);
    *bytes = r->data;
    *len = r->data ? r->len : 0;
    return SL_OK;
}

/* Box average of rgb (iw x ih) into w x h grey pixels. */
static void gray_box(const uint8_t *rgb, int iw, int ih, int w, int h, uint8_t *out)
{
    for (int y = 0; y < h; y++) {
        int y0 = (int)((int64_t)y * ih / h), y1 = (int)((int64_t)(y + 1) * ih / h);
        if (y1 <= y0)
            y1 = y0 + 1;
        for (int x = 0; x < w; x++) {
            int x0 = (int)((int64_t)x * iw / w), x1 = (int)((int64_t)(x + 1) * iw / w);
            if (x1 <= x0)
                x1 = x0 + 1;
            double sum = 0;
            for (int yy = y0; yy < y1; yy++) {
                const uint8_t *px = rgb + ((size_t)yy * (size_t)iw + (size_t)x0) * 3;
                for (int xx = x0; xx < x1; xx++, px += 3)
                    sum += 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
            }
            double v = sum / ((double)(y1 - y0) * (x1 - x0));
            out[y * w + x] = (uint8_t)(v + 0.5 > 255 ? 255 : v + 0.5);
        }
    }
}

sl_status sl_pipeline_row_gray(const sl_row *row, int w, int h, uint8_t *out)
{
    const caption_row *r = sl_row_data(row);
    if (w < 1 || h < 1 || w > 256 || h > 256)
        return sl_fail(SL_ERR_INVALID_ARG, "a grey thumbnail is 1..256 pixels a side, not %dx%d",
                       w, h);
    const sl_image *img = r->image;
    const uint8_t *jpeg = r->jpeg;
    size_t jpeg_len = r->jpeg_len;
    if (r->media && r->media->n > 0) { /* a video's middle frame; a list's first image */
        int mid = r->media->is_video ? r->media->n / 2 : 0;
        img = r->media->images[mid];
        jpeg = r->media->jpeg[mid];
        jpeg_len = r->media->jpeg_len[mid];
    }
    sl_image *decoded = NULL;
    if (!img && jpeg) { /* an HTTP engine's row keeps the JPEG it sends, not pixels */
        sl_image_params ip = sl_image_default_params();
        ip.max_edge = 4 * (w > h ? w : h);
        sl_status st = sl_image_decode(jpeg, jpeg_len, r->rel, &ip, &decoded);
        if (st != SL_OK)
            return st;
        img = decoded;
    }
    if (!img)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' has no decoded image: a grey thumbnail comes "
                                           "after the decode stage", r->rel);
    gray_box(sl_image_pixels(img), sl_image_width(img), sl_image_height(img), w, h, out);
    sl_image_free(decoded);
    return SL_OK;
}

char *sl_pipeline_row_columns_json(const sl_row *row)
{
    const caption_row *r = sl_row_data(row);
    return r->extra ? sl_json_dump(r->extra, JSON_COMPACT | JSON_ENCODE_ANY, NULL) : sl_strdup("{}");
}

char *sl_pipeline_row_column_json(const sl_row *row, const char *name)
{
    const caption_row *r = sl_row_data(row);
    json_t *v = r->extra ? json_object_get(r->extra, name) : NULL;
    return v ? sl_json_dump(v, JSON_COMPACT | JSON_ENCODE_ANY, NULL) : NULL;
}

void sl_pipeline_text_free(char *text) { sl_free(text); }

const char *sl_pipeline_row_column_string(const sl_row *row, const char *name)
{
    const caption_row *r = sl_row_data(row);
    const json_t *v = r->extra ? json_object_get(r->extra, name) : NULL;
    return sl_json_decimal_text(v, NULL) ? NULL : json_string_value(v); /* a decimal is a number */
}

/* Sets column `name` to v (stolen; NULL removes it). */
static sl_status set_column(sl_row *row, const char *name, json_t *v)
{
    caption_row *r = sl_row_data(row);
    /* A name that is not UTF-8 (a Lua stage's "bad\xff") no JSON object
     * takes: it was said as "out of memory setting column". */
    bool utf8 = name && sl_utf8_valid(name, strlen(name));
    if (!name || !*name || !utf8 || caption_field_index(name) >= 0) {
        json_decref(v);
        return sl_fail(SL_ERR_INVALID_ARG, "'%s': a stage cannot set a column named '%s' (%s)",
                       r->rel, name ? name : "", !name || !*name ? "empty"
                                                 : !utf8 ? "the name is not UTF-8"
                                                         : "one of the row's own fields");
    }
    if (!v) {
        if (r->extra)
            json_object_del(r->extra, name);
        return SL_OK;
    }
    if (!r->extra && !(r->extra = json_object())) {
        json_decref(v);
        return sl_fail(SL_ERR_NOMEM, "out of memory setting column '%s' of '%s'", name, r->rel);
    }
    /* The memory budget counts what a stage adds (a 200 MB column on every
     * row went uncounted: 3.3 GB resident beside a peak in flight of 7 MB);
     * a value that shrinks gives nothing back, as an input's column was
     * counted at a guess. */
    const json_t *old = json_object_get(r->extra, name);
    size_t was = old ? job_json_bytes(old) : 0, is = job_json_bytes(v);
    if (json_object_set_new(r->extra, name, v) != 0)
        return sl_fail(SL_ERR_NOMEM, "out of memory setting column '%s' of '%s'", name, r->rel);
    if (is > was)
        sl_row_set_bytes(row, sl_row_bytes(row) + (is - was));
    return SL_OK;
}

sl_status sl_pipeline_row_set_column_json(sl_row *row, const char *name, const char *text)
{
    json_t *v = NULL;
    if (text) {
        json_error_t err;
        if (!(v = json_loads(text, JSON_DECODE_ANY, &err))) {
            sl_json_explain(&err); /* a plugin's "\u0000": said without jansson's flag */
            return sl_fail(SL_ERR_INVALID_ARG, "'%s': the value of column '%s' is not JSON: %s",
                           sl_pipeline_row_id(row), name ? name : "", err.text);
        }
    }
    return set_column(row, name, v);
}

sl_status sl_pipeline_row_set_column_string(sl_row *row, const char *name, const char *text)
{
    json_t *v = NULL;
    if (text && !(v = job_json_text(text)))
        return sl_fail(SL_ERR_NOMEM, "out of memory setting column '%s' of '%s'",
                       name ? name : "", sl_pipeline_row_id(row));
    return set_column(row, name, v);
}

sl_status sl_pipeline_row_emit(sl_row *parent, sl_row **child)
{
    *child = NULL;
    const caption_row *r = sl_row_data(parent);
    if (sl_row_failed(parent) || sl_row_dropped(parent))
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' is %s: it has no copies", r->rel,
                       sl_row_failed(parent) ? "failed" : "dropped");
    size_t bytes = 0;
    caption_row *copy = job_row_copy(r, &bytes);
    if (!copy)
        return sl_fail(SL_ERR_NOMEM, "out of memory copying '%s'", r->rel);
    sl_row *row;
    sl_status st = sl_row_emit(parent, &row);
    if (st != SL_OK) {
        job_row_free(copy);
        return st;
    }
    job_row_number(copy, sl_row_copy_index(row));
    sl_row_set_data(row, copy, job_row_free);
    sl_row_set_bytes(row, bytes);
    *child = row;
    return SL_OK;
}

/* --- the run ----------------------------------------------------------------------- */

/* Metrics for the run; served when an address is given. A busy default
 * address (metrics_optional) is a warning, not a failure. Started before
 * the output folder is opened, so that a busy address given on purpose
 * ends the run before it creates anything; the executor is attached once
 * it exists. */
static sl_status start_metrics(job *j)
{
    const char *addr = j->p->metrics_addr;
    /* Ranks on one node each serve their own: port + rank. */
    char ranked[300];
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (j->dist && colon && atoi(colon + 1) > 0) {
        snprintf(ranked, sizeof ranked, "%.*s:%d", (int)(colon - addr), addr,
                 atoi(colon + 1) + sl_dist_rank(j->dist));
        addr = ranked;
    }
    /* The token file is checked whether or not a server starts: a
     * mistake in it shows in the run that has it, not in a later one. */
    char *token = NULL;
    sl_status st = j->p->metrics_token_file
                       ? caption_metrics_read_token(j->p->metrics_token_file, &token)
                       : SL_OK;
    if (st != SL_OK)
        return st;
    st = caption_metrics_start(addr, token, &j->metrics);
    if (token) {
        explicit_bzero(token, strlen(token));
        sl_free(token);
    }
    if (st != SL_OK && addr && *addr && j->p->metrics_optional) {
        /* Say what is lost and what to change: a second run on the same
         * machine meets the first one's default port. */
        sl_log(SL_LOG_WARN,
               "not serving metrics: %s; this run goes on without /metrics and the live page "
               "(--metrics-addr 127.0.0.1:0 picks a free port, 'off' silences this)",
               sl_last_error());
        st = caption_metrics_start(NULL, NULL, &j->metrics);
    } else if (st == SL_ERR_IO) {
        /* The server's message names the address as this one does: said
         * once. The way on without metrics is a job file's key (the
         * default address is optional already). */
        char why[768], named[320];
        snprintf(why, sizeof why, "%s", sl_last_error());
        int n = snprintf(named, sizeof named, "metrics address \"%s\": ", addr);
        const char *cause = why;
        if (n > 0 && (size_t)n < sizeof named && strncmp(why, named, (size_t)n) == 0)
            cause += n;
        st = sl_fail(SL_ERR_INVALID_ARG,
                     "--metrics-addr %s: %s; choose a free port (127.0.0.1:0 picks one) or 'off', "
                     "or set metrics.optional: true in a job file to run on without metrics when "
                     "it is taken", addr, cause);
    }
    return st;
}

/* The first stage of the caller's that comes after built-in stage `which`
 * (and before write), or NULL. */
static const slot *own_stage_after(const sl_pipeline *pl, sl_pipeline_builtin which)
{
    bool past = false;
    for (size_t i = 0; i < pl->n; i++) {
        const slot *s = &pl->slots[i];
        if (s->builtin && s->which == which)
            past = true;
        else if (s->builtin && s->which == SL_PIPELINE_WRITE)
            break;
        else if (!s->builtin && past)
            return s;
    }
    return NULL;
}

/* A dry run has no engine: a stage of the caller's after it would wait
 * for answers that never come. */
static sl_status dry_run_check(const sl_pipeline *pl)
{
    const slot *s = own_stage_after(pl, SL_PIPELINE_ENGINE);
    if (s)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "stage '%s' comes after the engine, and a dry run has no answers "
                       "for it: drop --dry-run, or the stage (or move it after decode)",
                       s->def.name);
    return SL_OK;
}

sl_status job_check_pipeline(const sl_pipeline *pl, bool model_files)
{
    sl_status st = job_check_params(pl->p, model_files);
    return st == SL_OK && pl->p->dry_run ? dry_run_check(pl) : st;
}

/* The busy seconds of the stage named `name`. */
static double busy_of(const sl_exec *exec, const char *name)
{
    for (size_t i = 0; i < sl_exec_stage_count(exec); i++) {
        sl_stage_stats ss;
        sl_exec_stage_stats(exec, i, &ss);
        if (strcmp(ss.name, name) == 0)
            return ss.busy_s;
    }
    return 0;
}

/* The run's failed rows by stage and cause: as this process's gallery
 * counted them, or an MPI job's rank 0, every rank's committed parts'
 * (_summary.json's "failures"; a new array, NULL when out of memory). */
static json_t *job_failures(const job *j)
{
    if (!j->dist)
        return gallery_failures_json(j->gallery);
    coord_failures f;
    dist_failures(j->dist, &f);
    json_t *a = json_array();
    for (int i = 0; a && i < f.n; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:I}", "stage", f.kind[i].stage, "class",
                                           f.kind[i].cls, "rows", (json_int_t)f.kind[i].rows));
    return a;
}

/* The failed rows by stage and cause (job_failures, borrowed) into the
 * summary. */
static void summary_failures(json_t *a, sl_caption_summary *sum)
{
    json_t *f;
    size_t i;
    json_array_foreach(a, i, f) {
        if (sum->n_failures == (int)(sizeof sum->failures / sizeof *sum->failures))
            break;
        struct sl_caption_failures *k = &sum->failures[sum->n_failures++];
        const char *stage = json_string_value(json_object_get(f, "stage")),
                   *cause = json_string_value(json_object_get(f, "class"));
        snprintf(k->stage, sizeof k->stage, "%s", stage ? stage : "");
        snprintf(k->cause, sizeof k->cause, "%s", cause ? cause : "");
        k->rows = (long)json_integer_value(json_object_get(f, "rows"));
    }
}

/* The choices the committed rows took (j->answers: an MPI job's rank 0
 * has every rank's, job_totals), as _summary.json's "answers" ({"caption"
 * or a task's name: {choice: rows}}; NULL: no choices, or another rank
 * than 0) and as the console's line in text[0..size): the rows written,
 * or (dropped) those a stage dropped, NULL when it dropped none that
 * answered. */
static json_t *summary_answers(const job *j, bool dropped, char *text, size_t size)
{
    const sl_caption_params *p = j->p;
    if ((j->dist && sl_dist_rank(j->dist) != 0) || job_is_batch(p))
        return NULL;
    const long(*answers)[SL_MAX_CHOICES] = j->answers + (dropped ? SL_MAX_TASKS : 0);
    json_t *all = json_object();
    size_t used = 0;
    long any = 0;
    int n = p->n_tasks ? p->n_tasks : 1;
    for (int t = 0; all && t < n; t++) {
        const sl_caption_task *k = p->n_tasks ? &p->tasks[t] : NULL;
        const char *const *choices;
        int n_choices = job_choices(p, t, &choices);
        if (!n_choices)
            continue;
        long total = 0;
        for (int c = 0; c < n_choices; c++)
            total += answers[t][c];
        any += total;
        json_t *counts = json_object();
        if (k && used < size)
            used += (size_t)snprintf(text + used, size - used, "%s%s: ", used ? "; " : "",
                                     k->name);
        for (int c = 0; counts && c < n_choices; c++) {
            json_object_set_new(counts, choices[c], json_integer(answers[t][c]));
            if (used < size)
                used += (size_t)snprintf(text + used, size - used, "%s%s %ld (%.0f%%)",
                                         c ? ", " : "", choices[c], answers[t][c],
                                         total ? 100.0 * (double)answers[t][c] / (double)total
                                               : 0.0);
        }
        json_object_set_new(all, k ? k->name : "caption", counts ? counts : json_object());
    }
    if (all && (json_object_size(all) == 0 || (dropped && any == 0))) {
        text[0] = '\0';
        json_decref(all);
        all = NULL;
    }
    return all;
}

/* A rank other than 0: tells rank 0 how its part ended. */
static sl_status finish_rank(job *j, sl_status run_st, const char *run_msg)
{
    json_t *unfit = sl_sink_unfit(j->sink);
    sl_status st = dist_finish(j->dist, j->sink_status != SL_OK ? j->sink_status : run_st,
                               j->sink_status != SL_OK ? j->sink_error : run_msg,
                               (int64_t)atomic_load(&j->rows_skipped),
                               (int64_t)j->sum->rows_deferred, unfit);
    json_decref(unfit);
    if (st != SL_OK)
        sl_log(SL_LOG_ERROR, "cannot tell rank 0 how this rank ended: %s", sl_last_error());
    return st;
}

/* Rank 0: once every rank has finished, the summary is the job's, every
 * rank's committed parts summed (the coordinator counted them). The error
 * of the first rank that failed, naming it. */
/* Under MPI the ranks' parts interleave: the job's first and last are the
 * coordinator's, by number (rank 0 may have committed neither). */
static void job_first_last_parts(const job *j, sl_caption_summary *sum)
{
    json_t *parts = dist_parts(j->dist);
    size_t n = json_array_size(parts);
    if (n > 0) {
        snprintf(sum->first_output_file, sizeof sum->first_output_file, "%s/%s",
                 j->p->output_dir, json_string_value(json_array_get(parts, 0)));
        snprintf(sum->last_output_file, sizeof sum->last_output_file, "%s/%s",
                 j->p->output_dir, json_string_value(json_array_get(parts, n - 1)));
    }
    json_decref(parts);
}

static sl_status job_totals(job *j, sl_caption_summary *sum)
{
    coord_counts all;
    json_t *unfit = sl_sink_unfit(j->sink);
    dist_finish(j->dist, SL_OK, "", (int64_t)atomic_load(&j->rows_skipped),
                (int64_t)sum->rows_deferred, unfit);
    json_decref(unfit);
    sl_status st = dist_wait_all(j->dist, &all);
    sum->shards = (long)all.parts;
    sum->rows = (long)all.rows;
    sum->rows_ok = (long)all.ok;
    sum->rows_failed = (long)all.failed;
    sum->prompt_tokens = (long)all.prompt_tokens;
    sum->generated_tokens = (long)all.generated_tokens;
    sum->rows_dropped = (long)all.dropped;
    sum->inputs_done = (long)all.inputs;
    sum->rows_skipped = (long)all.skipped; /* every rank skips in its own shards */
    sum->rows_deferred = (long)all.deferred; /* and a stop leaves its own rows unsent */
    sum->input_bytes = (uint64_t)all.input_bytes;
    sum->jpeg_bytes = (uint64_t)all.jpeg_bytes;
    dist_tally(j->dist, &j->answers[0][0]);
    return st;
}

/* --columns (not with sluice batch, whose lines are OpenAI's): whether a
 * row written holds each listed name, noted by the write stage. */
static sl_status columns_seen_plan(job *j)
{
    const sl_caption_params *p = j->p;
    if (!p->columns || p->n_columns <= 0 || job_is_batch(p) || !j->schema.cols)
        return SL_OK;
    if (!(j->columns_seen = sl_calloc((size_t)p->n_columns, sizeof *j->columns_seen)))
        return sl_fail(SL_ERR_NOMEM, "out of memory planning the output columns");
    return SL_OK;
}

/* A --columns name that no row of the run held: a typo (`lable`) gave a
 * column of nulls, or none, in silence. Under MPI a rank sees its own rows
 * alone (another may have held it), so it says nothing there. */
static void warn_unseen_columns(const job *j)
{
    if (!j->columns_seen || j->dist || j->sum->rows == 0)
        return;
    for (int i = 0; i < j->p->n_columns; i++)
        if (!j->columns_seen[i])
            sl_log(SL_LOG_WARN,
                   "--columns '%s': none of the %ld rows written held a column of that name (nor "
                   "a struct field at that path), so the output %s: check the name against the "
                   "input's columns",
                   sl_columns_input_name(j->schema.cols, (size_t)i), j->sum->rows,
                   j->p->output_format && strcmp(j->p->output_format, "parquet") == 0
                       ? "has it null in every row" : "leaves it out");
}

/* --prompt-column: the rows read without the column went out on
 * --prompt (stage_read.c's note_prompt_column). One process only, as
 * warn_unseen_columns: a rank knows only its own rows. */
static void warn_rows_without_prompt_column(const job *j)
{
    long held = (long)atomic_load(&j->prompt_column_held);
    long missing = (long)atomic_load(&j->prompt_column_missing);
    if (!j->p->prompt_column || j->dist || missing == 0)
        return;
    if (held == 0)
        sl_log(SL_LOG_WARN,
               "--prompt-column '%s': none of the %ld rows read held a column of that name (nor "
               "a struct field at that path), so every one was prompted with --prompt: check "
               "the name against the input's columns", j->p->prompt_column, missing);
    else
        sl_log(SL_LOG_WARN,
               "--prompt-column '%s': %ld of the %ld rows read had no column of that name: %s "
               "prompted with --prompt", j->p->prompt_column, missing, missing + held,
               missing == 1 ? "it was" : "they were");
}

/* Rank 0, after a job that ran to its end: the ranks rank 0 handed no
 * shard, when the input made fewer shards than ranks. The layout cannot
 * adapt to the input's size: every rank lays the shards out as it streams,
 * before the input's end is known, and a resume needs the same layout; so
 * say what splits a job this small over every rank. */
static void warn_idle_ranks(job *j)
{
    int64_t n_shards = -1;
    int ranks = sl_dist_size(j->dist);
    if (!dist_progress(j->dist, NULL, NULL, &n_shards) || n_shards < 0 || n_shards >= ranks)
        return;
    char idle[256] = "";
    size_t len = 0;
    int n_idle = 0;
    for (int r = 0; r < ranks; r++) {
        coord_rank cr;
        if (!dist_rank_progress(j->dist, r, &cr) || cr.shards > 0)
            continue;
        if (n_idle++ < 16 && len < sizeof idle) {
            int n = snprintf(idle + len, sizeof idle - len, "%s%d", len ? ", " : "", r);
            len += n > 0 ? (size_t)n : 0;
        }
    }
    if (n_idle == 0)
        return;
    unsigned size = j->src_params.shard_size;
    long inputs = (long)atomic_load(&j->input_total) + j->sum->rows_skipped;
    char hint[160] = "a smaller --input-shard-size";
    if (inputs > 0)
        snprintf(hint, sizeof hint, "--input-shard-size %ld (its %ld inputs over %d ranks)",
                 (inputs + ranks - 1) / ranks, inputs, ranks);
    sl_log(SL_LOG_WARN,
           "%d of %d ranks were handed no input (rank%s %s%s): the input made %lld shard%s "
           "of up to %u inputs (--input-shard-size) for %d ranks; a job this small runs on "
           "every rank with %s",
           n_idle, ranks, n_idle == 1 ? "" : "s", idle, n_idle > 16 ? ", ..." : "",
           (long long)n_shards, n_shards == 1 ? "" : "s", size, ranks, hint);
}

/* One column of a prompt template into j->text_columns, once. */
static void add_text_column(const char *name, size_t n, void *user)
{
    job *j = user;
    size_t *have = &j->src_params.n_text_columns;
    for (size_t i = 0; i < *have; i++)
        if (strlen(j->text_columns[i]) == n && memcmp(j->text_columns[i], name, n) == 0)
            return;
    char **grown = sl_realloc(j->text_columns, (*have + 1) * sizeof *grown);
    char *copy = grown ? sl_strndup(name, n) : NULL;
    if (grown)
        j->text_columns = grown;
    if (copy)
        j->text_columns[(*have)++] = copy;
    else
        j->text_columns_nomem = true;
}

/* The columns the prompt templates fill in (--prompt, --system, the
 * tasks'): a value there that is not UTF-8 fails its row at read, as the
 * prompt column's does, rather than reach the model as U+FFFD. */
static sl_status text_columns(job *j)
{
    const sl_caption_params *p = j->p;
    template_each_column(p->prompt, add_text_column, j);
    template_each_column(p->system_prompt, add_text_column, j);
    for (int i = 0; i < p->n_tasks; i++) {
        template_each_column(p->tasks[i].prompt, add_text_column, j);
        template_each_column(p->tasks[i].system_prompt, add_text_column, j);
    }
    j->src_params.text_columns = (const char *const *)j->text_columns;
    return j->text_columns_nomem ? sl_fail(SL_ERR_NOMEM, "out of memory starting the job")
                                 : SL_OK;
}


/* A field in a prompt over rows that are images alone, with no stage of
 * the caller's to add a column, fills no row: each failed "no column", a
 * `{...}` meant as text among them. Refused at the start instead, saying
 * how to write braces. */
static sl_status check_fields_can_fill(const job *j, const sl_pipeline *pl)
{
    if (j->src_params.n_text_columns == 0 || own_stage_after(pl, SL_PIPELINE_READ) ||
        job_is_batch(j->p) || !sl_source_rows_are_bare_images(j->src))
        return SL_OK;
    const char *name = j->text_columns[0];
    return sl_fail(SL_ERR_INVALID_ARG,
                   "a prompt holds {%s}, a field filled from each row's columns, but the "
                   "inputs are image files, whose rows have none: write '{{' and '}}' for "
                   "braces meant as text, or give a manifest (JSONL, CSV, Parquet) whose rows "
                   "hold '%s'",
                   name, name);
}

sl_status sl_pipeline_run(sl_pipeline *pl, sl_caption_summary *sum)
{
    memset(sum, 0, sizeof *sum);
    sum->rows_without_prompt_column = -1;
    if (pl->ran)
        return sl_fail(SL_ERR_INVALID_ARG, "a pipeline runs once: make another");
    if (pl->next_builtin != SL_PIPELINE_WRITE + 1)
        return sl_fail(SL_ERR_INVALID_ARG, "the pipeline has no %s stage: add the built-in "
                                           "stages read, decode, engine and write in order",
                       builtin_names[pl->next_builtin]);
    pl->ran = true;
    const sl_caption_params *p = pl->p;
    sl_status st = job_check_pipeline(pl, true);
    if (st != SL_OK)
        return st;
    job_warn_params(p);
    sum->dry_run = p->dry_run;
    /* Before the run's first thread: these write the environment as they
     * start, and a getenv elsewhere (curl's, fetching an input) could read
     * the array setenv freed. */
    if ((st = sl_image_init()) != SL_OK)
        return st;
    if (!p->dry_run && !job_uses_openai(p)) {
        /* before anything is made: the output folder, the metrics port */
        if ((st = sl_llama_cpu_check()) != SL_OK)
            return st;
        sl_llama_init();
    }

    if (p->dist && p->input_shard_count > 1)
        return sl_fail(SL_ERR_INVALID_ARG, "--input-shard splits the input between separate "
                                           "runs; under MPI rank 0 hands the shards out: drop "
                                           "--input-shard");
    job j = {.p = p, .sum = sum, .input_total = -1, .dist = p->dist, .part_stride = 1,
             .assigned = -1};
    pthread_mutex_init(&j.mu, NULL);
    pthread_mutex_init(&j.done_mu, NULL);
    sl_exec *exec = NULL;
    sl_stage_def *stages = NULL;
    rank_metrics *ranks_metrics = NULL;
    j.inputs = p->n_inputs > 0 ? p->inputs : &p->input_dir;
    j.n_inputs = p->n_inputs > 0 ? (size_t)p->n_inputs : 1;
    j.src_params = sl_source_default_params();
    j.src_params.format = p->input_format;
    j.src_params.include = p->include;
    j.src_params.n_include = p->n_include > 0 ? (size_t)p->n_include : 0;
    j.src_params.exclude = p->exclude;
    j.src_params.n_exclude = p->n_exclude > 0 ? (size_t)p->n_exclude : 0;
    j.src_params.image_column = p->image_column;
    j.src_params.prompt_column = p->prompt_column;
    j.src_params.id_column = p->id_column;
    j.src_params.image_root = p->image_root;
    j.src_params.allow_file_urls = p->allow_file_urls;
    j.src_params.shard_index = p->input_shard_index;
    if (job_is_batch(p)) /* a line holds its images, base64 */
        j.src_params.max_line_bytes = SL_BATCH_MAX_LINE_BYTES;
    if (p->max_line_bytes)
        j.src_params.max_line_bytes = (size_t)p->max_line_bytes;
    if (p->max_item_bytes)
        j.src_params.max_item_bytes = (size_t)p->max_item_bytes;
    j.src_params.shard_count = p->input_shard_count;
    if (p->input_shard_size)
        j.src_params.shard_size = p->input_shard_size;
    if (j.dist) {
        j.src_params.take_shard = job_take_shard;
        j.src_params.take_shard_user = &j;
        j.src_params.shard_peers = (unsigned)sl_dist_size(j.dist);
    }
    j.fetch = sl_fetch_default_params();
    if (p->max_download_bytes)
        j.fetch.max_bytes = (size_t)p->max_download_bytes;
    if (p->download_timeout_s > 0)
        j.fetch.timeout_ms = (long)(p->download_timeout_s * 1000);
    if (p->download_retries >= 0)
        j.fetch.retries = p->download_retries;
    j.src_params.fetch_timeout_ms = j.fetch.timeout_ms;
    j.src_params.fetch_retries = j.fetch.retries;
    /* Cheap checks first: a wrong input or output fails before any model
     * loads. */
    j.rows_per_shard = p->shard_rows > 0 ? p->shard_rows : SL_CAPTION_DEFAULT_SHARD_ROWS;
    /* A stage of the caller's after decode may read the pixels. */
    j.dry_run_drops_pixels = p->dry_run && !own_stage_after(pl, SL_PIPELINE_DECODE);
    const char **columns = NULL;
    size_t n_columns = 0;
    if ((st = answer_columns_plan(p, &j.answer_cols)) != SL_OK ||
        (st = stage_columns(pl, j.answer_cols.n, &columns, &n_columns)) != SL_OK)
        goto done;
    for (int i = 0; i < j.answer_cols.n; i++) /* after the stages': theirs win a name */
        columns[n_columns++] = j.answer_cols.cols[i].spec;
    if ((st = text_columns(&j)) != SL_OK ||
        (st = sl_source_open(j.inputs, j.n_inputs, &j.src_params, &j.src)) != SL_OK ||
        (st = check_fields_can_fill(&j, pl)) != SL_OK ||
        (st = caption_schema_plan(p, j.src, columns, n_columns, &j.answer_cols, &j.schema)) != SL_OK ||
        (st = answer_columns_free_of(&j.answer_cols, &j.schema)) != SL_OK ||
        (st = columns_seen_plan(&j)) != SL_OK || (st = start_metrics(&j)) != SL_OK ||
        (st = job_open_ledger(&j)) != SL_OK ||
        (st = job_open_output(&j)) != SL_OK)
        goto done;

    /* The pipeline as assembled: the built-in stages (job/job.h) and the
     * caller's between them. */
    if (!(stages = sl_calloc(pl->n, sizeof *stages))) {
        st = sl_fail(SL_ERR_NOMEM, "out of memory assembling the pipeline");
        goto done;
    }
    size_t n_stages = 0;
    for (size_t i = 0; i < pl->n; i++) {
        const slot *sl = &pl->slots[i];
        if (p->dry_run && sl->builtin && sl->which == SL_PIPELINE_ENGINE)
            continue; /* a dry run: decoded rows go straight to the writer */
        stages[n_stages++] = sl->builtin ? builtin_def(sl->which, &j) : sl->def;
    }
    sl_exec_params ep = sl_exec_default_params();
    ep.memory_budget = p->memory_budget;
    ep.ordered = p->ordered;
    ep.max_failed = p->max_failed;
    ep.max_failed_min_rows = 20;
    ep.stop_requests = p->stop_requests;
    ep.max_restarts = 0; /* a replica that fails reloads nothing: fail its rows */
    if (p->image.max_edge > 0)
        ep.row_bytes_hint = (uint64_t)p->image.max_edge * (uint64_t)p->image.max_edge * 3 + 4096;
    if ((st = sl_exec_create(&ep, stages, n_stages, &exec)) != SL_OK)
        goto done;
    gallery_params gp = gallery_default_params();
    gp.seed = p->sampling.seed;
    if (!(j.parts = json_array())) {
        st = sl_fail(SL_ERR_NOMEM, "out of memory for the list of parts");
        goto done;
    }
    if (!(j.gallery = gallery_new(&gp))) {
        st = sl_fail(SL_ERR_NOMEM, "out of memory for the image gallery");
        goto done;
    }
    sl_dist *rank0 = j.dist && sl_dist_rank(j.dist) == 0 ? j.dist : NULL;
    if ((st = caption_metrics_attach_exec(j.metrics, exec, &j.input_total)) != SL_OK ||
        (st = caption_live_start(j.metrics, j.gallery, rank0, &j.live)) != SL_OK)
        goto done;
    sl_sink_on_unfit(j.sink, caption_metrics_unfit, j.metrics); /* before the first row is written */
    if (rank0) {
        if ((st = rank_metrics_attach(caption_metrics_registry(j.metrics), j.dist,
                                      &ranks_metrics)) != SL_OK)
            goto done;
    }
    sum->metrics_port = caption_metrics_port(j.metrics);
    snprintf(sum->metrics_url, sizeof sum->metrics_url, "%s",
             sl_metrics_server_url(caption_metrics_server(j.metrics)));
    if (sum->metrics_port && p->on_metrics_url)
        p->on_metrics_url(sum->metrics_url, p->on_row_user);
    if ((st = job_count_prepare(&j)) != SL_OK)
        goto done;
    pthread_t counter;
    bool counting = j.counter && pthread_create(&counter, NULL, job_count_inputs, &j) == 0;
    job_progress *pg;
    if ((st = job_progress_start(&j, exec, &pg)) != SL_OK) {
        atomic_store(&j.stop_counting, true);
        if (counting)
            pthread_join(counter, NULL);
        goto done;
    }
    bool lead = !j.dist || sl_dist_rank(j.dist) == 0;
    if (lead) { /* replaced below, when the run ends however it ends */
        if (caption_report_running(p, j.dir) != SL_OK)
            sl_log(SL_LOG_WARN, "cannot write the run report: %s", sl_last_error());
        job_upload_reports(&j, true);
    }
    sl_status run_st = sl_exec_run(exec);
    char run_msg[1024];
    snprintf(run_msg, sizeof run_msg, "%s", sl_last_error());
    atomic_store(&j.stop_counting, run_st != SL_OK);
    if (counting)
        pthread_join(counter, NULL); /* normally long done: listing outruns captioning */
    job_progress_stop(pg);
    caption_live_finish(j.live);
    caption_metrics_detach_exec(j.metrics);

    sl_exec_stats es;
    sl_exec_stats_get(exec, &es);
    sum->rows_skipped = (long)atomic_load(&j.rows_skipped);
    /* (under MPI a rank knows only its own shards: never said there) */
    sum->inputs_all_done = !j.dist && j.sink_status == SL_OK && atomic_load(&j.read_to_end) &&
                           sum->inputs_done == (long)atomic_load(&j.inputs_read);
    sum->load_seconds = j.load_seconds;
    sum->seconds = es.seconds > j.load_seconds ? es.seconds - j.load_seconds : es.seconds;
    sum->peak_bytes_in_flight = es.peak_bytes_in_flight;
    sum->memory_budget = es.memory_budget;
    sum->decode_busy_s = busy_of(exec, "decode");
    sum->engine_busy_s = busy_of(exec, "engine");
    sum->write_busy_s = busy_of(exec, "write");
    snprintf(sum->model_name, sizeof sum->model_name, "%s", j.model_name);
    const char *shard = j.last_shard[0] ? j.last_shard : p->output_dir;
    if (j.sink_status == SL_OK)
        snprintf(sum->output_file, sizeof sum->output_file, "%s", j.last_shard);
    if (j.sink_status == SL_OK && !j.dist) {
        snprintf(sum->first_output_file, sizeof sum->first_output_file, "%s",
                 j.first_shard_path);
        snprintf(sum->last_output_file, sizeof sum->last_output_file, "%s", j.last_shard);
    }
    sl_status job_st = lead ? SL_OK : finish_rank(&j, run_st, run_msg);
    if (lead && j.dist)
        job_st = job_totals(&j, sum);
    if (lead && j.dist && j.sink_status == SL_OK)
        job_first_last_parts(&j, sum);
    if (lead && j.dist && job_st == SL_OK && run_st == SL_OK)
        warn_idle_ranks(&j);
    if (run_st == SL_OK) {
        warn_unseen_columns(&j);
        warn_rows_without_prompt_column(&j);
    }
    sum->rows_without_prompt_column = j.p->prompt_column && !j.dist
                                          ? (long)atomic_load(&j.prompt_column_missing) : -1;
    json_t *failures = job_failures(&j); /* under MPI after job_totals: every rank's */
    summary_failures(failures, sum);
    json_t *answers = summary_answers(&j, false, sum->answers, sizeof sum->answers);
    json_t *answers_dropped =
        summary_answers(&j, true, sum->answers_dropped, sizeof sum->answers_dropped);
    char job_msg[1024]; /* kept: the report and metrics below may log over it */
    snprintf(job_msg, sizeof job_msg, "%s", job_st == SL_OK ? "" : sl_last_error());
    if (lead && j.sink_status == SL_OK && batch_errors_collect(&j) != SL_OK && run_st == SL_OK) {
        j.sink_status = SL_ERR_IO;
        snprintf(j.sink_error, sizeof j.sink_error, "%s", sl_last_error());
    }
    if (j.metrics && lead) { /* after every rank is done: the job's final figures */
        char *prom = sl_asprintf("%s/_metrics.prom", j.dir);
        if (!prom || caption_metrics_write(j.metrics, prom) != SL_OK)
            sl_log(SL_LOG_WARN, "cannot write the final metrics: %s", sl_last_error());
        sl_free(prom);
    }
    if (lead) {
        /* Every rank's (the errors parts are JSONL: they hold all). */
        json_t *unfit = j.dist ? dist_unfit(j.dist) : sl_sink_unfit(j.sink);
        json_t *parts = j.dist ? dist_parts(j.dist) : json_incref(j.parts);
        /* A part that could not be committed as the run ended (its sync or
         * rename failed) ends the run as failed whatever the executor
         * said: a summary reading "ok" beside exit 1 and no rows misled
         * whoever reads it instead of the exit status. */
        sl_status ended = j.sink_status != SL_OK ? j.sink_status : run_st;
        json_t *settings = job_settings_json(&j);
        caption_report report = {p,         sum,       exec,  ended, atomic_load(&j.input_total),
                                 j.gallery, &j.schema, j.dir, j.src, answers,
                                 answers_dropped, unfit, failures, parts, settings};
        if (caption_report_write(&report) != SL_OK)
            sl_log(SL_LOG_WARN, "cannot write the run report: %s", sl_last_error());
        job_upload_reports(&j, false);
        json_decref(unfit);
        json_decref(parts);
        json_decref(settings);
    }
    json_decref(answers);
    json_decref(answers_dropped);
    json_decref(failures);

    /* A part that could not be committed outranks why the run ended (a stop,
     * --max-failed): its rows are not in the output, and the cause (a full
     * disk) must be fixed before the rerun can go on. */
    if (j.sink_status != SL_OK && run_st == SL_OK)
        st = sl_fail(j.sink_status, "%s", j.sink_error);
    else if (j.sink_status != SL_OK)
        st = sl_fail(j.sink_status, "%s (as the run ended: %s)", j.sink_error, run_msg);
    /* Where to look: the errors file holds every failed row; else the
     * parts this run committed do (any of them: rows go in as they finish),
     * not only the last one. */
    else if (run_st == SL_ERR_TOO_MANY_FAILED && p->errors_file)
        st = sl_fail(run_st, "%s; the failed rows and their errors are in '%s' (--errors-file)",
                     run_msg, p->errors_file);
    else if (run_st == SL_ERR_TOO_MANY_FAILED && !j.dist && j.first_shard_path[0] &&
             strcmp(j.first_shard_path, shard) != 0)
        st = sl_fail(run_st, "%s; the failed rows and their errors are among the rows of %s to %s",
                     run_msg, j.first_shard_path, shard);
    else if (run_st == SL_ERR_TOO_MANY_FAILED)
        st = sl_fail(run_st, "%s; the failed rows and their errors are in %s", run_msg, shard);
    else if (run_st != SL_OK)
        st = sl_fail(run_st, "%s", run_msg);
    else
        st = job_st == SL_OK ? SL_OK : sl_fail(job_st, "%s", job_msg);

done:
    if (j.dist && st != SL_OK && !sl_dist_reported(j.dist))
        st = dist_start(j.dist, st); /* (a no-op when it failed after the ranks agreed) */
    if (j.dist && st != SL_OK && !sl_dist_reported(j.dist) && sl_dist_rank(j.dist) != 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", sl_last_error());
        finish_rank(&j, st, why); /* a failure before the run: rank 0 must hear of it */
        sl_fail(st, "%s", why);
    }
    caption_metrics_stop(j.metrics); /* the server first: its pages read what follows */
    rank_metrics_free(ranks_metrics);
    caption_live_free(j.live);
    gallery_free(j.gallery);
    json_decref(j.parts);
    sl_exec_free(exec);
    sl_sink_free(j.sink);
    sl_sink_free(j.errors_sink);
    dist_stop(j.dist); /* rank 0's coordinator records in the ledger: stop it first */
    sl_ledger_free(j.ledger); /* after the sink: an open part's rows roll back */
    sl_source_counter_free(j.counter);
    sl_source_free(j.src);
    for (size_t i = 0; i < j.src_params.n_text_columns; i++)
        sl_free(j.text_columns[i]);
    sl_free(j.text_columns);
    caption_schema_clear(&j.schema);
    sl_free(j.columns_seen);
    answer_columns_clear(&j.answer_cols);
    job_output_clear(&j);
    dist_part_free(&j.dpart);
    sl_idset_free(j.done);
    pthread_mutex_destroy(&j.done_mu);
    pthread_mutex_destroy(&j.mu);
    sl_free(stages);
    sl_free(columns);
    return st;
}
