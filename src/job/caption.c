/* job/caption.c — the caption job as a pipeline on the streaming executor:
 *
 *   read (io/source: folder, manifest, WebDataset, Parquet) -> decode
 *   (fetch URLs, libvips; N workers) -> engine (llama.cpp, one model per
 *   replica) -> write (JSONL or Parquet shards, one writer)
 *
 * Each row carries a caption_row. Failed rows (unlistable folder, corrupt
 * image, engine error) skip to the writer, which records them with their
 * stage and message like every other row.
 *
 * Resume: the output folder's ledger (ledger/ledger.h) says which row ids
 * earlier runs committed; the read stage skips them (one indexed lookup per
 * input, nothing held in memory) after recording every id it reads in a
 * temporary database (ledger/idset.h): a repeated id could not be written
 * exactly once, so it stops the run. The writer commits each part in two
 * phases with it: rows recorded, file synced, part pending, file renamed,
 * part committed. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/utf8.h"
#include "io/columns.h"
#include "io/fetch.h"
#include "io/shard.h"
#include "io/sink.h"
#include "io/source.h"
#include "io/source_parse.h"
#include "job/caption_live.h"
#include "job/caption_metrics.h"
#include "job/caption_report.h"
#include "job/gallery.h"
#include "job/schema.h"
#include "ledger/idset.h"
#include "ledger/ledger.h"
#include "sluice/caption.h"
#include "sluice/executor.h"

sl_caption_params sl_caption_default_params(void)
{
    return (sl_caption_params){
        .prompt = "Describe this image in one sentence.",
        .sampling = sl_sampling_default(),
        .image = sl_image_default_params(),
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
    };
}

static bool use_openai(const sl_caption_params *p)
{
    return p->engine && strcmp(p->engine, "openai") == 0;
}

/* --- the row ---------------------------------------------------------------- */

typedef struct caption_row {
    char *path, *rel;         /* path: file or URL (NULL when data came with the row) */
    uint8_t *data;            /* the encoded image, while needed */
    size_t len;
    json_t *extra;            /* pass-through columns, or NULL */
    char *prompt;             /* this row's prompt, or NULL */
    sl_image *image;          /* from decode until the engine is done with it */
    uint8_t *jpeg;            /* openai engine: the image as sent, in place of the pixels */
    size_t jpeg_len;
    const char *original_mime; /* --send-original: data is sent as is, of this type */
    int width, height, source_width, source_height; /* 0: not decoded */
    sl_result result;
    bool has_result;
    double decode_ms, started;
    uint64_t seed;
    uint8_t *thumb;           /* JPEG, only for rows the gallery asked for */
    size_t thumb_len;
} caption_row;

static void caption_row_free(void *data)
{
    caption_row *r = data;
    sl_free(r->path);
    sl_free(r->rel);
    sl_free(r->data);
    json_decref(r->extra);
    sl_free(r->prompt);
    sl_image_free(r->image);
    sl_image_buffer_free(r->jpeg);
    sl_result_clear(&r->result);
    sl_image_buffer_free(r->thumb);
    sl_free(r);
}

/* Shared by every stage of one run. */
typedef struct job {
    const sl_caption_params *p;
    sl_source *src;
    sl_source_params src_params;
    const char *const *inputs;
    size_t n_inputs;
    sl_fetch_params fetch;
    caption_schema schema;     /* the output row's columns */
    sl_sink *sink;             /* the output; its open part is the open shard */
    long shard, shard_rows;    /* the open shard's number and rows */
    char last_shard[4096];     /* the last committed shard */
    char model_name[256];
    pthread_mutex_t mu;       /* model_name, load_seconds */
    double load_seconds;
    sl_status sink_status;    /* the commit's outcome, read after the run */
    char sink_error[1024];
    bool write_failed;        /* a row could not be written: the open part is abandoned */
    struct {                  /* the open part's rows, added to *sum when it commits */
        long rows, ok, failed, prompt_tokens, generated_tokens;
    } part;
    sl_caption_summary *sum;  /* written by the writer thread only */
    caption_metrics *metrics;
    gallery *gallery;
    caption_live *live;
    atomic_int_fast64_t input_total; /* -1 until the counting walk ends */
    atomic_bool stop_counting;
    sl_ledger *ledger;        /* what earlier runs committed; the open part's rows */
    long rows_per_shard;      /* --shard-rows, or the default */
    long first_shard;         /* this run's first part number */
    long done_before;         /* rows committed before this run */
    atomic_int_fast64_t rows_skipped; /* inputs skipped as done, by the read stage */
} job;

/* A second pass over the inputs that only counts (footers, lines, tar
 * headers), so progress and metrics can say "of N" and give an ETA. It is
 * cheap next to captioning; it stops early when the run does. */
static void *count_inputs(void *arg)
{
    job *j = arg;
    int64_t n = sl_source_count(j->inputs, j->n_inputs, &j->src_params, &j->stop_counting);
    /* A resumed run counts what is left: the inputs less the rows done. */
    if (n >= 0 && !atomic_load(&j->stop_counting))
        atomic_store(&j->input_total, n > j->done_before ? n - j->done_before : 0);
    return NULL;
}

/* --- read ------------------------------------------------------------------- */

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
static sl_status check_new_id(reader *rd, const sl_source_item *it)
{
    bool seen;
    int64_t input, at;
    sl_status st = sl_idset_add(rd->ids, it->id, (int64_t)it->input, it->at, &seen, &input, &at);
    if (st != SL_OK || !seen)
        return st;
    char *first = sl_source_origin(rd->j->src, (size_t)input, at);
    char *again = sl_source_origin(rd->j->src, it->input, it->at);
    st = sl_fail(SL_ERR_INVALID_ARG, "the inputs repeat the row id '%s' (%s, then %s): ids must "
                                     "be unique for each row to be written exactly once; give "
                                     "every row its own id", it->id, first ? first : "?",
                 again ? again : "?");
    sl_free(first);
    sl_free(again);
    return st;
}

static sl_status read_produce(void *state, sl_row *row, bool *done)
{
    reader *rd = state;
    job *j = rd->j;
    sl_source_item it = {0};
    sl_status st;
    /* Inputs an earlier run committed are skipped here, before they become
     * rows. A long stretch of them still answers a stop request. */
    for (unsigned long skipped = 0;; skipped++) {
        st = sl_source_next(j->src, &it, done);
        if (st == SL_OK && !*done && it.id)
            st = check_new_id(rd, &it);
        if (st != SL_OK || *done) {
            sl_source_item_clear(&it);
            return st;
        }
        bool already = false;
        if (j->ledger && it.id && (st = sl_ledger_is_done(j->ledger, it.id, &already)) != SL_OK) {
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
    caption_row *r = sl_calloc(1, sizeof *r);
    if (!r) {
        st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", it.id);
        sl_source_item_clear(&it);
        return st;
    }
    /* The item's strings and bytes move into the row. */
    r->rel = it.id;
    r->path = it.path;
    r->data = it.data;
    r->len = it.len;
    r->extra = it.extra;
    r->prompt = it.prompt;
    r->started = sl_mono_s();
    r->seed = sl_sampling_row_seed(j->p->sampling.seed, r->rel);
    sl_row_set_data(row, r, caption_row_free);
    /* Pass-through columns are counted at a rough 256 bytes: they are small
     * next to the image bytes, which are counted exactly. */
    sl_row_set_bytes(row, sizeof *r + strlen(r->rel) + (r->path ? strlen(r->path) : 0) + r->len +
                              (r->extra ? 256 * json_object_size(r->extra) : 0) +
                              (r->prompt ? strlen(r->prompt) : 0) + 2);
    if (it.error)
        sl_row_fail_status(row, SL_ERR_IO, "%s", it.error);
    sl_free(it.error);
    return SL_OK;
}

/* --- decode ------------------------------------------------------------------- */

static sl_status decode_init(void *cfg, int worker, void **state)
{
    *state = cfg;
    return SL_OK;
}

static bool is_url(const char *path)
{
    char scheme[16];
    sl_url_scheme(path, scheme);
    return strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0;
}

static bool sending_originals(const sl_caption_params *p)
{
    return use_openai(p) && p->send_original;
}

/* The type of encoded bytes every chat server reads (llama-server's
 * stb_image has no WebP), from their first bytes; NULL for the others,
 * which are re-encoded as JPEG. */
static const char *sendable_mime(const uint8_t *d, size_t n)
{
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
        return "image/jpeg";
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    return NULL;
}

/* Gets the row's encoded bytes when they are not in memory yet and must be:
 * a URL, or a file whose bytes go to the output or to the server as is. */
static sl_status fetch_bytes(job *j, sl_row *row, caption_row *r)
{
    if (r->data || !r->path)
        return SL_OK;
    sl_status st;
    if (is_url(r->path))
        st = sl_fetch(r->path, &j->fetch, &r->data, &r->len);
    else if (j->p->include_image_bytes || sending_originals(j->p))
        st = sl_read_file(r->path, &r->data, &r->len);
    else
        return SL_OK;
    if (st == SL_OK)
        sl_row_set_bytes(row, sl_row_bytes(row) + r->len);
    return st;
}

static sl_status decode_process(void *state, sl_row *const *rows, size_t n)
{
    job *j = state;
    for (size_t i = 0; i < n; i++) {
        caption_row *r = sl_row_data(rows[i]);
        double t0 = sl_mono_s();
        sl_status st = fetch_bytes(j, rows[i], r);
        if (st == SL_OK)
            st = r->data ? sl_image_decode(r->data, r->len, r->path ? r->path : r->rel,
                                           &j->p->image, &r->image)
                         : sl_image_load_file(r->path, &j->p->image, &r->image);
        if (st == SL_OK && r->data && sending_originals(j->p))
            r->original_mime = sendable_mime(r->data, r->len);
        if (r->data && !j->p->include_image_bytes && !r->original_mime) {
            /* The encoded bytes are not needed past decoding: give them back. */
            sl_row_set_bytes(rows[i], sl_row_bytes(rows[i]) - r->len);
            sl_free(r->data);
            r->data = NULL;
            r->len = 0;
        }
        if (st != SL_OK) {
            sl_row_fail_status(rows[i], st, "%s", sl_last_error());
            continue;
        }
        r->decode_ms = (sl_mono_s() - t0) * 1e3;
        r->width = sl_image_width(r->image);
        r->height = sl_image_height(r->image);
        r->source_width = sl_image_source_width(r->image);
        r->source_height = sl_image_source_height(r->image);
        /* A thumbnail for the gallery is not part of the row: if it cannot
         * be made, the row goes on without one. */
        if (gallery_wants_thumb(j->gallery, sl_row_seq(rows[i]))) {
            const gallery_params *gp = gallery_params_of(j->gallery);
            if (sl_image_encode_jpeg(r->image, gp->thumb_edge, gp->thumb_quality, &r->thumb,
                                     &r->thumb_len) != SL_OK)
                sl_log(SL_LOG_DEBUG, "no thumbnail for %s: %s", r->rel, sl_last_error());
        }
        if (use_openai(j->p)) {
            /* HTTP engines get a JPEG (or the original bytes): keep it, not
             * the pixels. */
            st = r->original_mime ? SL_OK
                                  : sl_image_encode_jpeg(r->image, j->p->jpeg_edge,
                                                         j->p->jpeg_quality, &r->jpeg, &r->jpeg_len);
            sl_image_free(r->image);
            r->image = NULL;
            if (st != SL_OK) {
                sl_row_fail_status(rows[i], st, "%s: %s", r->rel, sl_last_error());
                continue;
            }
            r->decode_ms = (sl_mono_s() - t0) * 1e3;
            sl_row_set_bytes(rows[i], sl_row_bytes(rows[i]) + r->jpeg_len + r->thumb_len);
            continue;
        }
        /* Decoded pixels are the large item in flight: count them. */
        sl_row_set_bytes(rows[i], sl_row_bytes(rows[i]) + sl_image_bytes(r->image) + r->thumb_len);
    }
    return SL_OK;
}

/* --- engine ------------------------------------------------------------------- */

/* One replica: its own model, context and batching thread (an async stage
 * worker). Rows are submitted as they come and complete out of order. */
typedef struct replica {
    job *j;
    sl_engine *engine;
    replica_metrics *metrics;
    sl_completion done[64];
} replica;

static sl_status engine_init(void *cfg, int worker, void **state)
{
    job *j = cfg;
    sl_llama_params lp = j->p->llama;
    if (lp.n_threads <= 0) {
        /* The cores are shared between replicas. */
        long cores = sysconf(_SC_NPROCESSORS_ONLN) / (j->p->replicas > 0 ? j->p->replicas : 1);
        lp.n_threads = cores < 1 ? 1 : (int)cores;
    }
    if (j->p->n_gpus > 0)
        lp.gpu = j->p->gpus[worker];
    lp.max_tokens_hint = j->p->sampling.max_tokens;
    lp.image_edge_hint = j->p->image.max_edge > 0 ? j->p->image.max_edge : 2048;
    lp.prefix_system_prompt = j->p->system_prompt;
    replica *rep = sl_calloc(1, sizeof *rep);
    if (!rep)
        return sl_fail(SL_ERR_NOMEM, "out of memory starting an engine replica");
    rep->j = j;
    double t0 = sl_mono_s();
    sl_status st = use_openai(j->p) ? sl_engine_open_openai(&j->p->openai, &rep->engine)
                                    : sl_engine_open_llama(&lp, &rep->engine);
    if (st != SL_OK) {
        sl_free(rep);
        return st;
    }
    double took = sl_mono_s() - t0;
    if (j->metrics &&
        (st = caption_metrics_add_replica(j->metrics, worker, sl_engine_model_name(rep->engine),
                                          rep->engine, &rep->metrics)) != SL_OK) {
        sl_engine_free(rep->engine);
        sl_free(rep);
        return st;
    }
    pthread_mutex_lock(&j->mu);
    snprintf(j->model_name, sizeof j->model_name, "%s", sl_engine_model_name(rep->engine));
    caption_live_set_model(j->live, j->model_name);
    if (took > j->load_seconds)
        j->load_seconds = took; /* replicas load in parallel */
    pthread_mutex_unlock(&j->mu);
    *state = rep;
    return SL_OK;
}

static void engine_close(void *state, sl_exec_end end)
{
    replica *rep = state;
    replica_metrics_detach(rep->metrics);
    sl_engine_free(rep->engine);
    sl_free(rep);
}

static sl_status engine_submit(void *state, sl_row *row)
{
    replica *rep = state;
    const sl_caption_params *p = rep->j->p;
    caption_row *r = sl_row_data(row);
    sl_request req = {
        .id = r->rel,
        .system_prompt = p->system_prompt,
        .prompt = r->prompt ? r->prompt : p->prompt,
        .image = r->image,
        .image_encoded = r->original_mime ? r->data : r->jpeg,
        .image_encoded_len = r->original_mime ? r->len : r->jpeg_len,
        .image_mime = r->original_mime,
        .sampling = p->sampling,
        .stop = p->stop,
        .n_stop = p->n_stop,
    };
    req.sampling.seed = r->seed;
    sl_status st = sl_engine_submit(rep->engine, &req, row);
    if (st == SL_OK || st == SL_ERR_IO)
        return st; /* SL_ERR_IO: the engine is broken, a worker failure */
    /* A request the engine refuses fails its row alone; the rest go on. */
    sl_row_fail_status(row, st, "%s", sl_last_error());
    return SL_OK;
}

static sl_status engine_poll(void *state, sl_row **done, size_t max, int timeout_ms, size_t *n)
{
    replica *rep = state;
    const sl_caption_params *p = rep->j->p;
    size_t k = 0;
    if (max > sizeof rep->done / sizeof *rep->done)
        max = sizeof rep->done / sizeof *rep->done;
    sl_status st = sl_engine_poll(rep->engine, rep->done, max, timeout_ms, &k);
    replica_metrics_sync(rep->metrics, false);
    for (size_t i = 0; i < k; i++) {
        sl_completion *c = &rep->done[i];
        replica_metrics_observe(rep->metrics, c);
        sl_row *row = c->tag;
        caption_row *r = sl_row_data(row);
        if (c->status == SL_OK) {
            r->result = c->result;
            c->result = (sl_result){0};
            r->has_result = true;
        } else {
            sl_row_fail_status(row, c->status, "%s",
                               c->error ? c->error : "out of memory (the error was lost)");
        }
        sl_completion_clear(c);
        /* The pixels are not needed past the engine: give their bytes back. */
        if (r->image) {
            size_t image_bytes = sl_image_bytes(r->image);
            sl_image_free(r->image);
            r->image = NULL;
            sl_row_set_bytes(row, sl_row_bytes(row) - image_bytes);
        }
        if (r->jpeg) {
            sl_image_buffer_free(r->jpeg);
            r->jpeg = NULL;
            sl_row_set_bytes(row, sl_row_bytes(row) - r->jpeg_len);
        }
        if (r->original_mime && !p->include_image_bytes) {
            sl_free(r->data);
            r->data = NULL;
            sl_row_set_bytes(row, sl_row_bytes(row) - r->len);
            r->len = 0;
        }
        done[i] = row;
    }
    *n = k;
    return st;
}

/* --- write ------------------------------------------------------------------- */

/* File names and generated text are bytes; JSON strings must be UTF-8. */
static json_t *json_text(const char *s)
{
    return sl_json_text(s, s ? strlen(s) : 0);
}

static sl_pq_value cell_text(const char *s)
{
    return s ? (sl_pq_value){.ptr = s, .len = strlen(s)} : (sl_pq_value){.is_null = true};
}

/* The row's cells in the order of job/schema.h. */
static void row_cells(const job *j, const caption_row *r, const sl_row *row, sl_pq_value *v)
{
    const sl_result *res = r->has_result ? &r->result : NULL;
    v[CF_ID] = cell_text(r->rel);
    v[CF_PATH] = cell_text(r->path);
    v[CF_CAPTION] = cell_text(res ? res->text : NULL);
    v[CF_FINISH] = cell_text(res ? res->finish_reason : NULL);
    v[CF_PROMPT_TOKENS] = (sl_pq_value){.i64 = res ? res->prompt_tokens : 0};
    v[CF_GENERATED_TOKENS] = (sl_pq_value){.i64 = res ? res->generated_tokens : 0};
    v[CF_CACHED_TOKENS] = (sl_pq_value){.i64 = res ? res->cached_tokens : 0};
    int dims[4] = {r->width, r->height, r->source_width, r->source_height};
    for (int k = 0; k < 4; k++)
        v[CF_WIDTH + k] = (sl_pq_value){.is_null = r->width == 0, .i64 = dims[k]};
    v[CF_MODEL] = cell_text(j->model_name);
    v[CF_SEED] = (sl_pq_value){.i64 = (int64_t)(r->seed & INT64_MAX)};
    double ms[7] = {r->decode_ms,
                    res ? res->queue_ms : 0.0,
                    res ? res->prefill_ms : 0.0,
                    res ? res->encode_ms : 0.0,
                    res ? res->ttft_ms : 0.0,
                    res ? res->generate_ms : 0.0,
                    (sl_mono_s() - r->started) * 1e3};
    for (int k = 0; k < 7; k++)
        v[CF_DECODE_MS + k] = (sl_pq_value){.f64 = ms[k]};
    v[CF_ERROR_STAGE] = cell_text(sl_row_error_stage(row));
    v[CF_ERROR] = cell_text(sl_row_error(row));
    if (j->p->include_image_bytes)
        v[CF_COUNT] = r->data ? (sl_pq_value){.ptr = r->data, .len = r->len}
                              : (sl_pq_value){.is_null = true};
}

static sl_status open_output(job *j);

/* A test fault (core/fault.h) at a step of the commit: a pause, or an error. */
static sl_status commit_point(const char *point, const char *part)
{
    int err = sl_fault(point, part);
    return err ? sl_fail(SL_ERR_IO, "cannot commit '%s': %s", part, strerror(err)) : SL_OK;
}

/* Commits the open shard, in two phases with the ledger (ledger/ledger.h
 * says why each crash point is safe): the file synced under its temporary
 * name, its rows recorded as a pending part, the file renamed and the folder
 * synced, the part committed. Only then do its rows count in the summary. */
static sl_status part_durable(void *arg)
{
    job *j = arg;
    const char *part = sl_sink_part_path(j->sink);
    sl_status st = commit_point("commit.after_sync", part);
    if (st == SL_OK && j->ledger)
        st = sl_ledger_part_prepare(j->ledger);
    if (st == SL_OK)
        st = commit_point("commit.after_prepare", part);
    return st;
}

static sl_status commit_shard(job *j)
{
    const char *part = sl_sink_part_path(j->sink);
    sl_status st = commit_point("commit.begin", part);
    if (st == SL_OK) /* rename, folder sync: io/shard.c has their points */
        st = sl_sink_commit(j->sink, part_durable, j);
    if (st == SL_OK && j->ledger)
        st = sl_ledger_part_commit(j->ledger);
    if (st == SL_OK)
        st = commit_point("commit.end", part);
    if (st == SL_OK) {
        snprintf(j->last_shard, sizeof j->last_shard, "%s", part);
        j->sum->shards++;
        j->sum->rows += j->part.rows;
        j->sum->rows_ok += j->part.ok;
        j->sum->rows_failed += j->part.failed;
        j->sum->prompt_tokens += j->part.prompt_tokens;
        j->sum->generated_tokens += j->part.generated_tokens;
    }
    memset(&j->part, 0, sizeof j->part);
    return st;
}

/* Gives up the open shard: its rows are in no committed part, so a rerun
 * captions them again. After a failed write or a failed row record, the
 * file may hold rows the ledger lacks or lack rows the ledger holds. */
static void abandon_shard(job *j)
{
    if (j->ledger)
        sl_ledger_part_abandon(j->ledger);
    sl_sink_abandon(j->sink); /* removes the temporary */
    memset(&j->part, 0, sizeof j->part);
}

static sl_status next_shard(job *j)
{
    sl_status st = commit_shard(j);
    if (st != SL_OK)
        return st; /* the writer fails; write_close gives the part up */
    j->shard++;
    j->shard_rows = 0;
    return open_output(j);
}

static sl_status write_init(void *cfg, int worker, void **state)
{
    *state = cfg;
    return SL_OK;
}

static sl_status write_process(void *state, sl_row *const *rows, size_t n)
{
    job *j = state;
    for (size_t i = 0; i < n; i++) {
        caption_row *r = sl_row_data(rows[i]);
        sl_pq_value cells[CF_COUNT + 1];
        row_cells(j, r, rows[i], cells);
        sl_status st = sl_sink_write(j->sink, &(sl_schema_row){cells, r->extra});
        if (st == SL_OK && j->ledger)
            st = sl_ledger_part_add(j->ledger, r->rel);
        bool failed = sl_row_failed(rows[i]);
        if (st == SL_OK) {
            j->part.rows++;
            j->part.ok += !failed;
            j->part.failed += failed;
            if (r->has_result) {
                j->part.prompt_tokens += r->result.prompt_tokens;
                j->part.generated_tokens += r->result.generated_tokens;
            }
        }
        if (st == SL_OK && ++j->shard_rows == j->rows_per_shard)
            st = next_shard(j);
        if (st != SL_OK) {
            /* The writer cannot go on: the executor ends the run, and
             * write_close() gives the open part up. */
            j->write_failed = true;
            return st;
        }
        gallery_row gr = {sl_row_seq(rows[i]), r->rel, failed ? NULL : r->result.text,
                          sl_row_error(rows[i]), sl_row_error_stage(rows[i]),
                          sl_row_error_status(rows[i]), r->thumb, r->thumb_len};
        gallery_add(j->gallery, &gr);
        if (failed)
            caption_metrics_row_failed(j->metrics, gr.error_stage,
                                       sl_status_class(gr.error_status));
        if (j->p->on_row) {
            sl_row_view view = {r->rel, failed ? NULL : r->result.text, sl_row_error(rows[i]),
                                (long)sl_row_seq(rows[i]), sl_row_error_stage(rows[i])};
            j->p->on_row(&view, j->p->on_row_user);
        }
    }
    return SL_OK;
}

/* Every row written is complete, so the shard is committed whatever ended
 * the run (finished work is never thrown away) unless a write or a commit
 * failed: then the file or the ledger may miss rows, and the part is given
 * up whole. A shard with no rows is not committed (freeing it removes the
 * empty temporary), unless it is the output's first and only one: an input
 * with no images still gives a file. */
static void write_close(void *state, sl_exec_end end)
{
    job *j = state;
    if (j->write_failed) {
        abandon_shard(j);
        return;
    }
    if (!sl_sink_part_is_open(j->sink))
        return; /* the next shard could not open: the run already failed */
    if (j->shard_rows == 0 && (j->shard > 0 || j->done_before > 0)) {
        if (j->ledger)
            sl_ledger_part_abandon(j->ledger);
        return;
    }
    if (commit_shard(j) != SL_OK) {
        j->sink_status = SL_ERR_IO;
        snprintf(j->sink_error, sizeof j->sink_error, "%s", sl_last_error());
        abandon_shard(j);
    }
}

/* --- the job ------------------------------------------------------------------- */

static sl_status check_params(const sl_caption_params *p)
{
    if ((!p->input_dir || !*p->input_dir) && p->n_inputs <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "no input given");
    if (p->shard_rows < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--shard-rows must be >= 1, got %ld", p->shard_rows);
    if (p->include_image_bytes && !(p->output_format && strcmp(p->output_format, "parquet") == 0))
        return sl_fail(SL_ERR_INVALID_ARG, "--include-image-bytes needs --format parquet");
    if (!p->output_dir || !*p->output_dir)
        return sl_fail(SL_ERR_INVALID_ARG, "no output folder given (-o)");
    if (!p->prompt || !*p->prompt)
        return sl_fail(SL_ERR_INVALID_ARG, "the prompt is empty (--prompt)");
    /* Every row would be refused: say so once, before anything starts. */
    if (!sl_utf8_valid(p->prompt, strlen(p->prompt)))
        return sl_fail(SL_ERR_INVALID_ARG, "the prompt is not valid UTF-8 (--prompt)");
    if (p->system_prompt && !sl_utf8_valid(p->system_prompt, strlen(p->system_prompt)))
        return sl_fail(SL_ERR_INVALID_ARG, "the system prompt is not valid UTF-8 (--system)");
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !sl_utf8_valid(p->stop[i], strlen(p->stop[i])))
            return sl_fail(SL_ERR_INVALID_ARG, "--stop string %d is not valid UTF-8", i + 1);
    if (p->sampling.max_tokens <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--max-tokens must be positive, got %d",
                       p->sampling.max_tokens);
    if (p->sampling.temperature < 0.0f)
        return sl_fail(SL_ERR_INVALID_ARG, "--temperature must be >= 0, got %g",
                       (double)p->sampling.temperature);
    if (p->image.max_edge < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--max-image-edge must be >= 0, got %d",
                       p->image.max_edge);
    if (p->decode_workers < 1 || p->replicas < 1)
        return sl_fail(SL_ERR_INVALID_ARG, "--decode-workers and --replicas must be >= 1");
    if (p->n_gpus > 0 && p->replicas != p->n_gpus)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--gpus runs one replica per GPU (%d), but --replicas is %d: drop one",
                       p->n_gpus, p->replicas);
    if (p->output_format && strcmp(p->output_format, "jsonl") != 0 &&
        strcmp(p->output_format, "parquet") != 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--format must be jsonl or parquet, got '%s'",
                       p->output_format);
    if (!(p->max_failed >= 0.0 && p->max_failed <= 1.0))
        return sl_fail(SL_ERR_INVALID_ARG, "--max-failed must be a fraction from 0 to 1, got %g",
                       p->max_failed);
    if (p->engine && strcmp(p->engine, "llama") != 0 && !use_openai(p))
        return sl_fail(SL_ERR_INVALID_ARG, "--engine must be llama or openai, got '%s'", p->engine);
    if (use_openai(p)) {
        if (p->openai.n_endpoints < 1)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--engine openai needs at least one --endpoint URL (or --endpoints-file)");
        if (p->jpeg_edge < 0 || p->jpeg_quality < 1 || p->jpeg_quality > 100)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "--jpeg-edge must be >= 0 and --jpeg-quality 1..100, got %d and %d",
                           p->jpeg_edge, p->jpeg_quality);
        return SL_OK;
    }
    /* Missing model files fail here, before any thread starts. */
    const char *files[2][2] = {{"--model", p->llama.model_path}, {"--mmproj", p->llama.mmproj_path}};
    for (int i = 0; i < 2; i++) {
        if (!files[i][1] || !*files[i][1])
            return sl_fail(SL_ERR_INVALID_ARG, "%s is required: the path of a GGUF file", files[i][0]);
        if (access(files[i][1], R_OK) != 0)
            return sl_fail(SL_ERR_NOT_FOUND, "%s '%s': %s", files[i][0], files[i][1],
                           strerror(errno));
    }
    return SL_OK;
}

/* --- progress ------------------------------------------------------------------- */

typedef struct progress {
    const sl_caption_params *p;
    sl_exec *exec;
    const atomic_int_fast64_t *input_total;
    const atomic_int_fast64_t *rows_skipped;
    int64_t done_before;
    double load_seconds;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    pthread_t thread;
    bool started;
} progress;

static void progress_report(progress *pg, bool final)
{
    sl_caption_progress snap = {.final = final};
    sl_exec_stats es;
    sl_exec_stats_get(pg->exec, &es);
    snap.elapsed_s = es.seconds;
    snap.rows_read = es.rows_produced;
    snap.rows_done = es.rows_done;
    snap.rows_failed = es.rows_failed;
    snap.rows_total = atomic_load(pg->input_total);
    snap.eta_s = caption_eta_seconds(&es, snap.rows_total);
    snap.bytes_in_flight = es.bytes_in_flight;
    snap.memory_budget = es.memory_budget;
    snap.rows_skipped = (uint64_t)atomic_load(pg->rows_skipped);
    snap.rows_done_before = pg->done_before;
    snap.n_stages = sl_exec_stage_count(pg->exec);
    if (snap.n_stages > sizeof snap.stages / sizeof *snap.stages)
        snap.n_stages = sizeof snap.stages / sizeof *snap.stages;
    for (size_t i = 0; i < snap.n_stages; i++)
        sl_exec_stage_stats(pg->exec, i, &snap.stages[i]);
    pg->p->on_progress(&snap, pg->p->on_row_user);
}

static void *progress_main(void *arg)
{
    progress *pg = arg;
    pthread_mutex_lock(&pg->mu);
    while (!pg->done) {
        struct timespec ts;
        sl_deadline_after(CLOCK_REALTIME, pg->p->progress_ms > 0 ? pg->p->progress_ms : 1000, &ts);
        if (pthread_cond_timedwait(&pg->cv, &pg->mu, &ts) != 0 && !pg->done) {
            pthread_mutex_unlock(&pg->mu);
            progress_report(pg, false);
            pthread_mutex_lock(&pg->mu);
        }
    }
    pthread_mutex_unlock(&pg->mu);
    return NULL;
}

static void progress_start(progress *pg, const job *j, sl_exec *exec)
{
    const sl_caption_params *p = j->p;
    *pg = (progress){.p = p, .exec = exec, .input_total = &j->input_total,
                     .rows_skipped = &j->rows_skipped, .done_before = j->done_before};
    pthread_mutex_init(&pg->mu, NULL);
    pthread_cond_init(&pg->cv, NULL);
    if (p->on_progress)
        pg->started = pthread_create(&pg->thread, NULL, progress_main, pg) == 0;
}

static void progress_stop(progress *pg)
{
    if (pg->started) {
        pthread_mutex_lock(&pg->mu);
        pg->done = true;
        pthread_cond_broadcast(&pg->cv);
        pthread_mutex_unlock(&pg->mu);
        pthread_join(pg->thread, NULL);
        progress_report(pg, true);
    }
    pthread_mutex_destroy(&pg->mu);
    pthread_cond_destroy(&pg->cv);
}

/* Metrics for the run; served when an address is given. A busy default
 * address (metrics_optional) is a warning, not a failure. */
static sl_status start_metrics(job *j, sl_exec *exec)
{
    const char *addr = j->p->metrics_addr;
    sl_status st = caption_metrics_start(addr, &j->metrics);
    if (st != SL_OK && addr && *addr && j->p->metrics_optional) {
        sl_log(SL_LOG_WARN, "not serving metrics: %s", sl_last_error());
        st = caption_metrics_start(NULL, &j->metrics);
    } else if (st == SL_ERR_IO) {
        char why[768];
        snprintf(why, sizeof why, "%s", sl_last_error());
        st = sl_fail(SL_ERR_INVALID_ARG, "--metrics-addr %s: %s; choose a free port or 'off'",
                     addr, why);
    }
    if (st != SL_OK)
        return st;
    return caption_metrics_attach_exec(j->metrics, exec, &j->input_total);
}

static bool parquet_output(const sl_caption_params *p)
{
    return p->output_format && strcmp(p->output_format, "parquet") == 0;
}

static sl_status open_output(job *j)
{
    const sl_caption_params *p = j->p;
    sl_status st = SL_OK;
    if (!j->sink &&
        (st = sl_sink_open(p->output_format, p->output_dir, p->overwrite, &j->schema.schema,
                           &j->sink)) != SL_OK)
        return st;
    char name[64];
    snprintf(name, sizeof name, "part-%05ld.%s", j->shard, sl_sink_format(j->sink));
    st = sl_sink_part_open(j->sink, name);
    if (st == SL_OK && j->ledger)
        st = sl_ledger_part_begin(j->ledger, name, j->shard);
    return st;
}

/* --- resume ----------------------------------------------------------------------- */

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
        json_array_append_new(a, json_text(list[i]));
    return a;
}

static json_t *fp_real(double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.9g", v);
    return json_string(buf);
}

/* What determines the rows' content, as "key\tJSON" lines; not how fast, how
 * the progress shows, or where parts are cut. NULL when out of memory. */
static char *fingerprint(const job *j)
{
    const sl_caption_params *p = j->p;
    char *t = sl_strdup("");
    fp_add(&t, "inputs", fp_strings(j->inputs, (int)j->n_inputs));
    fp_add(&t, "input_format", json_text(p->input_format));
    fp_add(&t, "include", fp_strings(p->include, p->n_include));
    fp_add(&t, "exclude", fp_strings(p->exclude, p->n_exclude));
    fp_add(&t, "image_column", json_text(p->image_column));
    fp_add(&t, "prompt_column", json_text(p->prompt_column));
    fp_add(&t, "allow_file_urls", json_boolean(p->allow_file_urls));
    fp_add(&t, "input_shard", json_pack("[I,I,I]", (json_int_t)p->input_shard_index,
                                        (json_int_t)p->input_shard_count,
                                        (json_int_t)p->input_shard_size));
    /* Inputs in several folders had base-name ids before ids named folders:
     * such a ledger holds other ids for the same rows, so it must not match.
     * Other jobs' ids did not change, and their fingerprint neither. */
    if (sl_source_ids_have_folders(j->src))
        fp_add(&t, "ids", json_text("paths from the inputs' common folder"));
    fp_add(&t, "engine", json_text(use_openai(p) ? "openai" : "llama"));
    if (use_openai(p)) { /* not the endpoints: a fleet may change between runs */
        fp_add(&t, "served_model", json_text(p->openai.served_model));
        fp_add(&t, "response_format", json_text(p->openai.response_format));
        fp_add(&t, "jpeg", json_pack("[i,i,b]", p->jpeg_edge, p->jpeg_quality, p->send_original));
    } else {
        fp_add(&t, "model", json_text(p->llama.model_path));
        fp_add(&t, "mmproj", json_text(p->llama.mmproj_path));
        fp_add(&t, "ctx", json_integer(p->llama.n_ctx_per_seq));
    }
    fp_add(&t, "prompt", json_text(p->prompt));
    fp_add(&t, "system_prompt", json_text(p->system_prompt));
    fp_add(&t, "stop", fp_strings(p->stop, p->n_stop));
    fp_add(&t, "max_tokens", json_integer(p->sampling.max_tokens));
    fp_add(&t, "temperature", fp_real(p->sampling.temperature));
    fp_add(&t, "top_p", fp_real(p->sampling.top_p));
    fp_add(&t, "top_k", json_integer(p->sampling.top_k));
    fp_add(&t, "min_p", fp_real(p->sampling.min_p));
    fp_add(&t, "repeat_penalty", fp_real(p->sampling.repeat_penalty));
    fp_add(&t, "seed", json_integer((json_int_t)(p->sampling.seed & INT64_MAX)));
    fp_add(&t, "max_image_edge", json_integer(p->image.max_edge));
    fp_add(&t, "max_image_pixels", json_integer((json_int_t)p->image.max_input_pixels));
    fp_add(&t, "background", json_pack("[i,i,i]", p->image.background[0], p->image.background[1],
                                       p->image.background[2]));
    fp_add(&t, "format", json_text(parquet_output(p) ? "parquet" : "jsonl"));
    fp_add(&t, "columns", p->columns ? fp_strings(p->columns, p->n_columns) : json_null());
    fp_add(&t, "include_image_bytes", json_boolean(p->include_image_bytes));
    return t;
}

/* Opens the output folder's ledger: starts over (--overwrite), or settles
 * what an earlier run left and finds where this one goes on. */
static sl_status open_ledger(job *j)
{
    const sl_caption_params *p = j->p;
    const char *dir = p->output_dir;
    sl_part_scan scan;
    sl_status st;
    if (!sl_ledger_exists(dir) && !p->overwrite) {
        /* Parts without a ledger: another tool's, or an older sluice's. */
        if ((st = sl_shard_scan_parts(dir, &scan)) != SL_OK)
            return st;
        if (scan.count > 0)
            return sl_fail(SL_ERR_EXISTS,
                           "output folder '%s' already holds %ld part file%s and no resume "
                           "ledger: pass --overwrite to replace them or choose another output "
                           "folder", dir, scan.count, scan.count == 1 ? "" : "s");
    }
    char *fp = fingerprint(j);
    if (!fp)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    if ((st = sl_ledger_open(dir, p->overwrite, &j->ledger)) == SL_OK && p->overwrite)
        st = sl_shard_remove_parts(dir); /* under the ledger's lock, before it forgets them */
    if (st == SL_OK)
        st = sl_ledger_bind(j->ledger, fp, p->overwrite);
    sl_free(fp);
    sl_ledger_info info;
    if (st == SL_OK)
        st = sl_ledger_reconcile(j->ledger, &info);
    if (st == SL_OK)
        st = sl_shard_scan_parts(dir, &scan);
    if (st != SL_OK)
        return st;
    long temps = sl_shard_remove_temps(dir);
    if (temps > 0 || info.parts_promoted || info.parts_dropped)
        sl_log(SL_LOG_INFO, "%s: removed %ld temporary file%s; %ld pending part%s committed, "
                            "%ld dropped", dir, temps, temps == 1 ? "" : "s", info.parts_promoted,
               info.parts_promoted == 1 ? "" : "s", info.parts_dropped);
    /* Never reuse a number: parts continue after the highest one seen. */
    j->shard = (info.max_part > scan.max_number ? info.max_part : scan.max_number) + 1;
    j->first_shard = j->shard;
    j->done_before = info.rows;
    j->sum->rows_done_before = info.rows;
    j->sum->resumed = info.parts > 0;
    return SL_OK;
}

static sl_status plan_columns(job *j)
{
    return caption_schema_plan(j->p, j->inputs, j->n_inputs, &j->src_params, j->src, &j->schema);
}

sl_status sl_caption_run(const sl_caption_params *p, sl_caption_summary *sum)
{
    memset(sum, 0, sizeof *sum);
    sl_status st = check_params(p);
    if (st != SL_OK)
        return st;

    job j = {.p = p, .sum = sum, .input_total = -1};
    pthread_mutex_init(&j.mu, NULL);
    sl_exec *exec = NULL;
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
    j.src_params.allow_file_urls = p->allow_file_urls;
    j.src_params.shard_index = p->input_shard_index;
    j.src_params.shard_count = p->input_shard_count;
    if (p->input_shard_size)
        j.src_params.shard_size = p->input_shard_size;
    j.fetch = sl_fetch_default_params();
    if (p->max_download_bytes)
        j.fetch.max_bytes = (size_t)p->max_download_bytes;
    if (p->download_timeout_s > 0)
        j.fetch.timeout_ms = (long)(p->download_timeout_s * 1000);
    if (p->download_retries >= 0)
        j.fetch.retries = p->download_retries;
    /* Cheap checks first: a wrong input or output fails before any model
     * loads. */
    j.rows_per_shard = p->shard_rows > 0 ? p->shard_rows : SL_CAPTION_DEFAULT_SHARD_ROWS;
    if ((st = sl_source_open(j.inputs, j.n_inputs, &j.src_params, &j.src)) != SL_OK ||
        (st = plan_columns(&j)) != SL_OK || (st = open_ledger(&j)) != SL_OK ||
        (st = open_output(&j)) != SL_OK)
        goto done;

    int batch = 4;
    /* Twice the sequences (or the endpoints' limits): a newcomer is queued
     * in the engine the moment a slot frees. */
    int slots = p->llama.n_parallel > 0 ? p->llama.n_parallel : 1;
    if (use_openai(p))
        slots = p->openai.n_endpoints *
                (p->openai.adaptive && p->openai.adaptive_max_in_flight > p->openai.max_in_flight
                     ? p->openai.adaptive_max_in_flight
                     : p->openai.max_in_flight);
    sl_stage_def stages[] = {
        {.name = "read", .kind = SL_STAGE_SOURCE, .workers = 1, .batch_size = 16,
         .config = &j, .init = read_init, .close = read_close, .produce = read_produce},
        {.name = "decode", .kind = SL_STAGE_MAP, .workers = p->decode_workers, .batch_size = 1,
         .config = &j, .init = decode_init, .process = decode_process},
        {.name = "engine", .kind = SL_STAGE_ASYNC, .workers = p->replicas, .batch_size = 4,
         .max_in_flight = 2 * slots,
         .config = &j, .init = engine_init, .close = engine_close, .submit = engine_submit,
         .poll = engine_poll},
        {.name = "write", .kind = SL_STAGE_SINK, .workers = 1, .batch_size = batch,
         .config = &j, .init = write_init, .close = write_close, .process = write_process},
    };
    sl_exec_params ep = sl_exec_default_params();
    ep.memory_budget = p->memory_budget;
    ep.ordered = p->ordered;
    ep.max_failed = p->max_failed;
    ep.max_failed_min_rows = 20;
    ep.stop_requests = p->stop_requests;
    ep.max_restarts = 0; /* a replica that fails reloads nothing: fail its rows */
    if (p->image.max_edge > 0)
        ep.row_bytes_hint = (uint64_t)p->image.max_edge * (uint64_t)p->image.max_edge * 3 + 4096;
    if ((st = sl_exec_create(&ep, stages, sizeof stages / sizeof *stages, &exec)) != SL_OK)
        goto done;
    gallery_params gp = gallery_default_params();
    gp.seed = p->sampling.seed;
    if (!(j.gallery = gallery_new(&gp))) {
        st = sl_fail(SL_ERR_NOMEM, "out of memory for the image gallery");
        goto done;
    }
    if ((st = start_metrics(&j, exec)) != SL_OK ||
        (st = caption_live_start(j.metrics, j.gallery, &j.live)) != SL_OK)
        goto done;
    sum->metrics_port = caption_metrics_port(j.metrics);
    if (sum->metrics_port && p->on_metrics_port)
        p->on_metrics_port(sum->metrics_port, p->on_row_user);
    pthread_t counter;
    bool counting = pthread_create(&counter, NULL, count_inputs, &j) == 0;
    progress pg;
    progress_start(&pg, &j, exec);
    sl_status run_st = sl_exec_run(exec);
    char run_msg[1024];
    snprintf(run_msg, sizeof run_msg, "%s", sl_last_error());
    atomic_store(&j.stop_counting, run_st != SL_OK);
    if (counting)
        pthread_join(counter, NULL); /* normally long done: listing outruns captioning */
    progress_stop(&pg);
    caption_live_finish(j.live);
    caption_metrics_detach_exec(j.metrics);
    if (j.metrics) {
        char *prom = sl_asprintf("%s/metrics.prom", p->output_dir);
        if (!prom || caption_metrics_write(j.metrics, prom) != SL_OK)
            sl_log(SL_LOG_WARN, "cannot write the final metrics: %s", sl_last_error());
        sl_free(prom);
    }

    sl_exec_stats es;
    sl_exec_stats_get(exec, &es);
    sum->rows_skipped = (long)atomic_load(&j.rows_skipped);
    sum->load_seconds = j.load_seconds;
    sum->seconds = es.seconds > j.load_seconds ? es.seconds - j.load_seconds : es.seconds;
    sum->peak_bytes_in_flight = es.peak_bytes_in_flight;
    sum->memory_budget = es.memory_budget;
    sl_stage_stats ss;
    sl_exec_stage_stats(exec, 1, &ss);
    sum->decode_busy_s = ss.busy_s;
    sl_exec_stage_stats(exec, 2, &ss);
    sum->engine_busy_s = ss.busy_s;
    sl_exec_stage_stats(exec, 3, &ss);
    sum->write_busy_s = ss.busy_s;
    snprintf(sum->model_name, sizeof sum->model_name, "%s", j.model_name);
    const char *shard = j.last_shard[0] ? j.last_shard : p->output_dir;
    if (j.sink_status == SL_OK)
        snprintf(sum->output_file, sizeof sum->output_file, "%s", j.last_shard);
    caption_report report = {p,        sum,       exec, run_st, atomic_load(&j.input_total),
                             j.gallery, &j.schema};
    if (caption_report_write(&report) != SL_OK)
        sl_log(SL_LOG_WARN, "cannot write the run report: %s", sl_last_error());

    /* A part that could not be committed outranks why the run ended (a stop,
     * --max-failed): its rows are not in the output, and the cause (a full
     * disk) must be fixed before the rerun can go on. */
    if (j.sink_status != SL_OK && run_st == SL_OK)
        st = sl_fail(j.sink_status, "%s", j.sink_error);
    else if (j.sink_status != SL_OK)
        st = sl_fail(j.sink_status, "%s (as the run ended: %s)", j.sink_error, run_msg);
    else if (run_st == SL_ERR_TOO_MANY_FAILED)
        st = sl_fail(run_st, "%s; the failed rows and their errors are in %s", run_msg, shard);
    else
        st = run_st == SL_OK ? SL_OK : sl_fail(run_st, "%s", run_msg);

done:
    caption_metrics_stop(j.metrics); /* the server first: its pages read what follows */
    caption_live_free(j.live);
    gallery_free(j.gallery);
    sl_exec_free(exec);
    sl_sink_free(j.sink);
    sl_ledger_free(j.ledger); /* after the sink: an open part's rows roll back */
    sl_source_free(j.src);
    caption_schema_clear(&j.schema);
    pthread_mutex_destroy(&j.mu);
    return st;
}
