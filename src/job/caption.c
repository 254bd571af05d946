/* job/caption.c — the caption job: its parameters checked, then the
 * pipeline assembled on the streaming executor and run:
 *
 *   read (io/source: folder, manifest, WebDataset, Parquet) -> decode
 *   (fetch URLs, libvips; N workers) -> engine (llama.cpp or HTTP servers,
 *   one engine per replica) -> write (JSONL or Parquet parts, one writer)
 *
 * Each stage lives in its own file (job/job.h); the row's columns in
 * job/schema.c; the resume fingerprint and ledger in job/resume.c; the
 * progress and counting threads in job/progress.c. Each row carries a
 * caption_row. Failed rows (unlistable folder, corrupt image, engine error)
 * skip to the writer, which records them with their stage and message like
 * every other row. Around the run: metrics and the live page while it runs,
 * the report after. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "core/utf8.h"
#include "job/caption_report.h"
#include "job/job.h"
#include "job/progress.h"

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
        .sample = 1.0,
    };
}

bool job_uses_openai(const sl_caption_params *p)
{
    return p->engine && strcmp(p->engine, "openai") == 0;
}

json_t *job_json_text(const char *s)
{
    return sl_json_text(s, s ? strlen(s) : 0);
}

static sl_status check_params(const sl_caption_params *p)
{
    if ((!p->input_dir || !*p->input_dir) && p->n_inputs <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "no input given");
    if (p->limit < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--limit must be >= 0 (0: no limit), got %ld", p->limit);
    if (!(p->sample > 0.0 && p->sample <= 1.0))
        return sl_fail(SL_ERR_INVALID_ARG, "--sample must be a fraction above 0 and at most 1, "
                                           "got %g", p->sample);
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
    if (p->engine && strcmp(p->engine, "llama") != 0 && !job_uses_openai(p))
        return sl_fail(SL_ERR_INVALID_ARG, "--engine must be llama or openai, got '%s'", p->engine);
    if (job_uses_openai(p)) {
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
        (st = caption_schema_plan(p, j.inputs, j.n_inputs, &j.src_params, j.src, &j.schema)) !=
            SL_OK ||
        (st = job_open_ledger(&j)) != SL_OK || (st = job_open_output(&j)) != SL_OK)
        goto done;

    /* The pipeline: source -> decode -> engine -> sink, each a built-in
     * stage in its own file (job/job.h). */
    sl_stage_def stages[] = {stage_read(&j), stage_decode(&j), stage_engine(&j), stage_write(&j)};
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
    return st;
}
