/* job/stage_read.c — the read stage: the source's items as rows.
 *
 * Resume: the output folder's ledger (ledger/ledger.h) says which row ids
 * earlier runs committed; this stage skips them (one indexed lookup per
 * input, nothing held in memory) after recording every id it reads in a
 * temporary database (ledger/idset.h): a repeated id could not be written
 * exactly once, so it stops the run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "job/batch.h"
#include "job/job.h"
#include "job/progress.h"
#include "ledger/idset.h"

void job_row_free(void *data)
{
    caption_row *r = data;
    sl_free(r->path);
    sl_free(r->rel);
    sl_free(r->data);
    sl_free(r->data_name);
    json_decref(r->extra);
    sl_free(r->prompt);
    sl_image_free(r->image);
    sl_image_buffer_free(r->jpeg);
    sl_result_clear(&r->result);
    for (int i = 0; i < r->n_results; i++)
        sl_result_clear(&r->results[i]);
    sl_free(r->results);
    sl_image_buffer_free(r->thumb);
    batch_row_free(r->batch);
    media_row_free(r->media);
    job_row_free_list(r);
    sl_free(r);
}

void job_row_free_list(caption_row *r)
{
    for (size_t i = 0; i < r->n_list; i++) {
        sl_free(r->list[i].path);
        sl_free(r->list[i].data);
        sl_free(r->list[i].name);
    }
    sl_free(r->list);
    r->list = NULL;
    r->n_list = 0;
}

size_t job_row_list_bytes(const caption_row *r)
{
    size_t n = r->n_list * sizeof *r->list;
    for (size_t i = 0; i < r->n_list; i++)
        n += (r->list[i].path ? strlen(r->list[i].path) + 1 : 0) + r->list[i].len +
             (r->list[i].name ? strlen(r->list[i].name) + 1 : 0);
    return n;
}

/* A copy of the list of images as read into c (the copy's own strings and
 * bytes); false when out of memory. */
static bool copy_list(caption_row *c, const caption_row *r)
{
    c->list = NULL;
    c->n_list = 0;
    if (!r->n_list)
        return true;
    if (!(c->list = sl_calloc(r->n_list, sizeof *c->list)))
        return false;
    c->n_list = r->n_list;
    for (size_t i = 0; i < r->n_list; i++) {
        const sl_source_image *s = &r->list[i];
        sl_source_image *d = &c->list[i];
        if ((s->path && !(d->path = sl_strdup(s->path))) ||
            (s->name && !(d->name = sl_strdup(s->name))) ||
            (s->data && !(d->data = sl_malloc(s->len ? s->len : 1))))
            return false;
        if (s->data)
            memcpy(d->data, s->data, s->len);
        d->len = s->len;
    }
    return true;
}

static bool copy_bytes(uint8_t **dst, const uint8_t *src, size_t len, bool with_malloc)
{
    *dst = NULL;
    if (!src)
        return true;
    *dst = with_malloc ? malloc(len ? len : 1) : sl_malloc(len ? len : 1);
    if (*dst)
        memcpy(*dst, src, len);
    return *dst != NULL;
}

enum { COPY_DIGITS = 12 }; /* '#' and an unsigned */

void job_row_number(caption_row *c, unsigned copy)
{
    snprintf(c->rel + c->root_len, COPY_DIGITS + 1, "#%u", copy);
}

/* src's answer and counts with its own copy of the text; no trace (a
 * test's, of the engine's own row). */
static bool copy_result(sl_result *dst, const sl_result *src)
{
    *dst = *src;
    dst->trace_tokens = NULL;
    dst->trace_margins = NULL;
    dst->n_trace = 0;
    dst->text = NULL;
    dst->response_json = NULL;
    dst->logprobs = NULL;
    dst->scores = NULL;
    return (!src->text || (dst->text = sl_strdup(src->text))) &&
           (!src->response_json || (dst->response_json = sl_strdup(src->response_json))) &&
           (!src->logprobs || (dst->logprobs = sl_strdup(src->logprobs))) &&
           (!src->scores || (dst->scores = sl_strdup(src->scores)));
}

size_t job_json_bytes(const json_t *v)
{
    enum { NODE = 64 }; /* jansson's node and its allocation, about */
    size_t n = NODE;
    if (json_is_string(v))
        return n + json_string_length(v);
    if (json_is_array(v))
        for (size_t i = 0; i < json_array_size(v); i++)
            n += job_json_bytes(json_array_get(v, i));
    const char *key;
    json_t *m;
    if (json_is_object(v))
        json_object_foreach((json_t *)v, key, m)
            n += strlen(key) + job_json_bytes(m);
    return n;
}

caption_row *job_row_copy(const caption_row *r, size_t *bytes)
{
    caption_row *c = sl_malloc(sizeof *c);
    if (!c)
        return NULL;
    /* Every value as it is; then what r owns, c gets its own copy of (the
     * gallery's thumbnail: none), so a field added later is copied unless
     * it is owned and named here. */
    *c = *r;
    c->path = c->rel = c->prompt = c->data_name = NULL;
    c->data = c->jpeg = c->thumb = NULL;
    c->thumb_len = 0;
    c->extra = NULL;
    c->image = NULL;
    c->result = (sl_result){0};
    c->results = NULL;
    c->n_results = 0;
    c->batch = NULL; /* a batch request is the input's row's alone */
    c->media = NULL;
    c->list = NULL;
    c->n_list = 0;
    size_t root = r->root_len ? r->root_len : strlen(r->rel);
    if ((c->rel = sl_malloc(root + COPY_DIGITS + 1)) != NULL) {
        memcpy(c->rel, r->rel, root);
        c->rel[root] = '\0';
    }
    c->root_len = root;
    bool ok = c->rel != NULL;
    ok = ok && (!r->path || (c->path = sl_strdup(r->path)));
    ok = ok && (!r->data_name || (c->data_name = sl_strdup(r->data_name)));
    ok = ok && (!r->prompt || (c->prompt = sl_strdup(r->prompt)));
    ok = ok && (!r->extra || (c->extra = json_deep_copy(r->extra)));
    ok = ok && copy_bytes(&c->data, r->data, r->len, false);
    ok = ok && copy_bytes(&c->jpeg, r->jpeg, r->jpeg_len, true); /* sl_image_buffer_free */
    ok = ok && (!r->image || sl_image_from_rgb(sl_image_width(r->image),
                                               sl_image_height(r->image),
                                               sl_image_pixels(r->image), &c->image) == SL_OK);
    ok = ok && (!r->media || (c->media = media_row_copy(r->media)));
    ok = ok && copy_list(c, r);
    ok = ok && copy_result(&c->result, &r->result);
    if (ok && r->n_results > 0) {
        ok = (c->results = sl_calloc((size_t)r->n_results, sizeof *c->results)) != NULL;
        for (int i = 0; ok && i < r->n_results; i++, c->n_results++)
            ok = copy_result(&c->results[i], &r->results[i]);
    }
    if (!ok) {
        job_row_free(c);
        return NULL;
    }
    *bytes = sizeof *c + strlen(c->rel) + (c->data ? c->len : 0) + c->jpeg_len +
             (c->image ? sl_image_bytes(c->image) : 0) + (c->media ? media_row_bytes(c->media) : 0) + job_row_list_bytes(c) +
             (c->result.text ? strlen(c->result.text) : 0) +
             (c->extra ? job_json_bytes(c->extra) : 0);
    return c;
}

char *job_row_input_id(const caption_row *r)
{
    return r->root_len ? sl_strndup(r->rel, r->root_len) : sl_strdup(r->rel);
}

/* The read stage's one worker: every id read so far, done or not, so a
 * repeated one stops the run (ledger/idset.h). */
typedef struct reader {
    job *j;
    sl_idset *ids;
} reader;

static sl_status read_init(void *cfg, int worker, void **state)
{
    reader *rd = sl_calloc(1, sizeof *rd);
    if (!rd)
        return sl_fail(SL_ERR_NOMEM, "out of memory starting the read stage");
    rd->j = cfg;
    sl_status st = sl_idset_open(&rd->ids);
    if (st != SL_OK) {
        sl_free(rd);
        return st;
    }
    *state = rd;
    return SL_OK;
}

static void read_close(void *state, sl_exec_end end)
{
    reader *rd = state;
    sl_idset_free(rd->ids);
    sl_free(rd);
}

/* A usage error when `it` repeats an id read before: the ledger keys rows by
 * id, so the second row would pass for done on a resume (or be lost). */
static sl_status check_new_id(reader *rd, sl_source_item *it)
{
    bool seen;
    int64_t input, at;
    sl_status st = sl_idset_add(rd->ids, it->id, (int64_t)it->input, it->at, &seen, &input, &at);
    if (st != SL_OK || !seen)
        return st;
    char *first = sl_source_origin(rd->j->src, (size_t)input, at);
    char *again = sl_source_origin(rd->j->src, it->input, it->at);
    if (it->batch && it->batch->line_id && first && again) {
        /* A batch file's repeated custom_id fails that line alone, under
         * the line's own id: the first is run, and both are answered. */
        char *line_id = it->batch->line_id;
        it->batch->line_id = NULL;
        sl_free(it->id);
        it->id = line_id;
        if (!it->error) {
            it->error_status = SL_ERR_INVALID_ARG; /* the line's own data */
            it->error = sl_asprintf("%s: custom_id '%s' is repeated: it is on %s too; each "
                                    "request needs its own custom_id (this one is not run)",
                                    again, it->batch->custom_id, first);
        }
        st = it->error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", again);
        sl_free(first);
        sl_free(again);
        return st;
    }
    /* An id from a row's column (alt_id, its place, beside it) names the
     * column: the data to fix, or the id_column to change. */
    const char *column = it->alt_id ? (rd->j->p->id_column ? rd->j->p->id_column : "id") : NULL;
    st = sl_fail(SL_ERR_INVALID_ARG, "the inputs repeat the row id '%s'%s%s%s (%s, then %s): ids "
                                     "must be unique for each row to be written exactly once; "
                                     "give every row its own id%s", it->id,
                 column ? " of column '" : "", column ? column : "", column ? "'" : "",
                 first ? first : "?", again ? again : "?",
                 column ? " (or name another column with --id-column; --id-column none "
                          "makes each row's id its place)" : "");
    sl_free(first);
    sl_free(again);
    return st;
}

/* Salted so that the sample does not follow the rows' sampling seeds (a mix
 * of the same hash); fixed: the same ids are in a sample on every run. */
#define SAMPLE_SALT 0x5a3c9e1d2b7f4a61ull

/* Whether id is in a sample of `fraction`: its hash as a fraction of 2^64
 * is below it, so a larger fraction keeps a superset of a smaller one. */
bool job_in_sample(const char *id, double fraction)
{
    if (fraction >= 1.0 || !id)
        return true;
    uint64_t h = sl_hash_mix64(sl_hash_fnv1a64(id) ^ SAMPLE_SALT);
    return (double)(h >> 11) * 0x1p-53 < fraction;
}

/* A --prompt-column row without the column is prompted with --prompt, as
 * a mixed manifest wants; when none of the first rows holds it, the name
 * is most likely misspelt and the whole run would go out on --prompt in
 * silence: said once, early enough to stop it (the end of the run says
 * how many, pipeline.c). */
enum { PROMPT_COLUMN_EARLY = 64 };

static void note_prompt_column(job *j, const sl_source_item *it)
{
    if (job_prompt_value(j->p, it->extra)) {
        atomic_fetch_add(&j->prompt_column_held, 1);
        return;
    }
    if (atomic_fetch_add(&j->prompt_column_missing, 1) + 1 == PROMPT_COLUMN_EARLY &&
        atomic_load(&j->prompt_column_held) == 0)
        sl_log(SL_LOG_WARN,
               "--prompt-column '%s': none of the first %d rows read holds a column of that "
               "name (nor a struct field at that path), so they are prompted with --prompt: "
               "check the name against the input's columns",
               j->p->prompt_column, PROMPT_COLUMN_EARLY);
}

static sl_status read_produce(void *state, sl_row *row, bool *done)
{
    reader *rd = state;
    job *j = rd->j;
    sl_source_item it = {.shard = -1};
    sl_status st;
    /* --limit: a slice of the job; the same command without it goes on
     * from there (the slice's rows are in the ledger). */
    if (j->p->limit > 0 && atomic_load(&j->inputs_read) >= j->p->limit) {
        *done = true;
        return SL_OK;
    }
    /* Inputs an earlier run committed, and inputs outside the sample, are
     * skipped here, before they become rows. A long stretch of them still
     * answers a stop request. */
    for (unsigned long skipped = 0;; skipped++) {
        st = sl_source_next(j->src, &it, done);
        if (st == SL_OK && *done) {
            atomic_store(&j->read_to_end, true);
            job_count_read_to_end(j);
        }
        if (st == SL_OK && !*done && it.id)
            st = check_new_id(rd, &it);
        if (st != SL_OK || *done) {
            sl_source_item_clear(&it);
            return st;
        }
        if (!job_in_sample(it.id, j->p->sample)) {
            if ((skipped & 255) == 255 && j->p->stop_requests && atomic_load(j->p->stop_requests)) {
                sl_source_item_clear(&it);
                return sl_fail(SL_ERR_STOPPED, "stopped on request while skipping the inputs "
                                               "outside the sample");
            }
            continue;
        }
        bool already = false;
        if (it.id && (st = job_is_done(j, it.id, &already)) != SL_OK) {
            sl_source_item_clear(&it);
            return st;
        }
        /* A line an earlier run failed before it read the line's own id
         * (past max_line_bytes, say) is in the ledger as NAME:LINE: done
         * like any failed row, so a larger limit does not write it twice;
         * --retry-failed took that row out before this run read a line. */
        if (!already && it.alt_id && (st = job_is_done(j, it.alt_id, &already)) != SL_OK) {
            sl_source_item_clear(&it);
            return st;
        }
        if (!already)
            break;
        atomic_fetch_add(&j->rows_skipped, 1);
        if ((skipped & 255) == 255 && j->p->stop_requests && atomic_load(j->p->stop_requests)) {
            sl_source_item_clear(&it);
            return sl_fail(SL_ERR_STOPPED, "stopped on request while skipping the inputs "
                                           "already done");
        }
    }
    if (j->p->prompt_column && !it.batch && !it.error)
        note_prompt_column(j, &it);
    caption_row *r = sl_calloc(1, sizeof *r);
    if (!r) {
        st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", it.id);
        sl_source_item_clear(&it);
        return st;
    }
    atomic_fetch_add(&j->inputs_read, 1);
    r->task_prompts = j->p->n_tasks > 0;
    /* The item's strings and bytes move into the row. */
    r->rel = it.id;
    r->path = it.path;
    r->data = it.data;
    r->len = it.len;
    r->data_name = it.name;
    r->extra = it.extra;
    r->prompt = it.prompt;
    r->list = it.images;
    r->n_list = it.n_images;
    r->shard = it.shard;
    r->max_file_bytes = j->src_params.max_item_bytes;
    r->started = sl_mono_s();
    r->seed = sl_sampling_row_seed(j->p->sampling.seed, r->rel);
    /* The request moves into the row too (its struct is freed here). */
    st = it.batch ? batch_row_take(r, &it) : SL_OK;
    sl_batch_req_clear(it.batch);
    sl_free(it.batch);
    sl_free(it.alt_id);
    if (st != SL_OK) {
        sl_free(it.error);
        job_row_free(r);
        return st;
    }
    sl_row_set_data(row, r, job_row_free);
    /* Pass-through columns are counted at a rough 256 bytes: they are small
     * next to the image bytes, which are counted exactly. */
    sl_row_set_bytes(row, sizeof *r + strlen(r->rel) + (r->path ? strlen(r->path) : 0) + r->len +
                              (r->data_name ? strlen(r->data_name) : 0) +
                              (r->extra ? 256 * json_object_size(r->extra) : 0) +
                              (r->prompt ? strlen(r->prompt) : 0) + 2 + job_row_list_bytes(r) +
                              (r->batch ? r->batch->line_bytes : 0));
    if (it.error) /* classed by its cause (sl_source_item.error_status) */
        sl_row_fail_status(row, it.error_status != SL_OK ? it.error_status : SL_ERR_IO, "%s",
                           it.error);
    sl_free(it.error);
    return SL_OK;
}

sl_stage_def stage_read(job *j)
{
    return (sl_stage_def){.name = "read", .kind = SL_STAGE_SOURCE, .workers = 1, .batch_size = 16,
                          .config = j, .init = read_init, .close = read_close,
                          .produce = read_produce};
}
