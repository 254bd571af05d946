/* job/pipeline.c — sluice/pipeline.h: the caption job's pipeline assembled
 * from the built-in stages (job/job.h, one file each) and the caller's, then
 * run on the streaming executor with what surrounds it: the output's schema
 * planned, the ledger opened, metrics and the live page served, progress
 * and counting threads, the report written at the end. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "job/caption_report.h"
#include "job/job.h"
#include "job/progress.h"
#include "sluice/pipeline.h"

/* A stage of the pipeline: a built-in one, made at run time (its config is
 * the run's job), or the caller's, copied. */
typedef struct slot {
    bool builtin;
    sl_pipeline_builtin which;
    sl_stage_def def;
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
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? 2 * pl->cap : 8;
        slot *grown = sl_realloc(pl->slots, cap * sizeof *grown);
        if (!grown)
            return sl_fail(SL_ERR_NOMEM, "out of memory adding a stage");
        pl->slots = grown;
        pl->cap = cap;
    }
    pl->slots[pl->n++] = *s;
    return SL_OK;
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
        return sl_fail(SL_ERR_INVALID_ARG, "a stage needs a name of its own, got '%s'", name);
    if (pl->next_builtin == SL_PIPELINE_READ || pl->next_builtin > SL_PIPELINE_WRITE)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s' must come after read and before write",
                       name);
    if (!sp->process || sp->workers < 1 || sp->batch_size < 1)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s' needs process(), workers >= 1 and "
                                           "batch_size >= 1", name);
    slot s = {.def = {.kind = SL_STAGE_MAP, .workers = sp->workers, .batch_size = sp->batch_size,
                      .config = sp->config, .init = sp->init, .close = sp->close,
                      .process = sp->process}};
    if (!(s.def.name = sl_strdup(name)))
        return sl_fail(SL_ERR_NOMEM, "out of memory adding stage '%s'", name);
    sl_status st = append(pl, &s);
    if (st != SL_OK)
        sl_free((char *)s.def.name);
    return st;
}

void sl_pipeline_free(sl_pipeline *pl)
{
    if (!pl)
        return;
    for (size_t i = 0; i < pl->n; i++)
        if (!pl->slots[i].builtin)
            sl_free((char *)pl->slots[i].def.name);
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
    char *copy = prompt ? sl_strdup(prompt) : NULL;
    if (prompt && !copy)
        return sl_fail(SL_ERR_NOMEM, "out of memory setting the prompt of '%s'", r->rel);
    sl_free(r->prompt);
    r->prompt = copy;
    return SL_OK;
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
    char *copy = text ? sl_strdup(text) : NULL;
    if (text && !copy)
        return sl_fail(SL_ERR_NOMEM, "out of memory setting the answer of '%s'", r->rel);
    sl_free(r->result.text);
    r->result.text = copy;
    return SL_OK;
}

/* --- the run ----------------------------------------------------------------------- */

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

sl_status sl_pipeline_run(sl_pipeline *pl, sl_caption_summary *sum)
{
    memset(sum, 0, sizeof *sum);
    if (pl->ran)
        return sl_fail(SL_ERR_INVALID_ARG, "a pipeline runs once: make another");
    if (pl->next_builtin != SL_PIPELINE_WRITE + 1)
        return sl_fail(SL_ERR_INVALID_ARG, "the pipeline has no %s stage: add the built-in "
                                           "stages read, decode, engine and write in order",
                       builtin_names[pl->next_builtin]);
    pl->ran = true;
    const sl_caption_params *p = pl->p;
    sl_status st = job_check_params(p);
    if (st != SL_OK)
        return st;

    job j = {.p = p, .sum = sum, .input_total = -1};
    pthread_mutex_init(&j.mu, NULL);
    sl_exec *exec = NULL;
    sl_stage_def *stages = NULL;
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
        (st = caption_schema_plan(p, j.inputs, j.n_inputs, &j.src_params, j.src, &j.schema)) !=
            SL_OK ||
        (st = job_open_ledger(&j)) != SL_OK || (st = job_open_output(&j)) != SL_OK)
        goto done;

    /* The pipeline as assembled: the built-in stages (job/job.h) and the
     * caller's between them. */
    if (!(stages = sl_calloc(pl->n, sizeof *stages))) {
        st = sl_fail(SL_ERR_NOMEM, "out of memory assembling the pipeline");
        goto done;
    }
    for (size_t i = 0; i < pl->n; i++)
        stages[i] = pl->slots[i].builtin ? builtin_def(pl->slots[i].which, &j) : pl->slots[i].def;
    sl_exec_params ep = sl_exec_default_params();
    ep.memory_budget = p->memory_budget;
    ep.ordered = p->ordered;
    ep.max_failed = p->max_failed;
    ep.max_failed_min_rows = 20;
    ep.stop_requests = p->stop_requests;
    ep.max_restarts = 0; /* a replica that fails reloads nothing: fail its rows */
    if (p->image.max_edge > 0)
        ep.row_bytes_hint = (uint64_t)p->image.max_edge * (uint64_t)p->image.max_edge * 3 + 4096;
    if ((st = sl_exec_create(&ep, stages, pl->n, &exec)) != SL_OK)
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
    bool counting = pthread_create(&counter, NULL, job_count_inputs, &j) == 0;
    job_progress *pg;
    if ((st = job_progress_start(&j, exec, &pg)) != SL_OK) {
        atomic_store(&j.stop_counting, true);
        if (counting)
            pthread_join(counter, NULL);
        goto done;
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
    sum->decode_busy_s = busy_of(exec, "decode");
    sum->engine_busy_s = busy_of(exec, "engine");
    sum->write_busy_s = busy_of(exec, "write");
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
    sl_free(stages);
    return st;
}
