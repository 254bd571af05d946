/* job/caption_metrics.c — see caption_metrics.h. Engine counters and
 * gauges are callbacks on the replica's sl_engine_stats; latency
 * histograms are observed as requests complete. Pipeline values are
 * callbacks on the executor's per-stage stats. Detaching copies the last
 * value into the child and drops the callback, so a scrape never touches
 * freed state. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/utf8.h"
#include "job/caption_metrics.h"

enum { STAGES_MAX = 8, REPLICAS_MAX = 64 };

/* --- engine -------------------------------------------------------------------- */

typedef enum engine_value {
    EV_RUNNING, EV_WAITING, EV_KV_USAGE, EV_PROMPT_TOKENS, EV_GENERATION_TOKENS,
    EV_PREFIX_QUERIES, EV_PREFIX_HITS, EV_CHOICE_PROBES, EV_IMAGE_CACHE_QUERIES,
    EV_IMAGE_CACHE_HITS, EV_GRAPHS_REUSED, EV_COUNT
} engine_value;

static const struct {
    const char *name, *help;
    sl_metrics_type type;
} engine_families[EV_COUNT] = {
    {"vllm:num_requests_running", "Number of requests in model execution batches.", SL_METRICS_GAUGE},
    {"vllm:num_requests_waiting", "Number of requests waiting to be processed.", SL_METRICS_GAUGE},
    {"vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", SL_METRICS_GAUGE},
    {"vllm:prompt_tokens_total", "Number of prefill tokens processed.", SL_METRICS_COUNTER},
    {"vllm:generation_tokens_total", "Number of generation tokens processed.", SL_METRICS_COUNTER},
    {"vllm:prefix_cache_queries_total",
     "Prefix cache queries, in terms of number of queried tokens.", SL_METRICS_COUNTER},
    {"vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens.",
     SL_METRICS_COUNTER},
    {"sluice_engine_choice_probes_total",
     "Probes for choices that begin alike: their common beginning read after a prompt "
     "(llama: a decode step, openai: a request).",
     SL_METRICS_COUNTER},
    {"sluice_engine_image_cache_queries_total",
     "Image chunks looked up in the llama engine's cache of vision encoder outputs.",
     SL_METRICS_COUNTER},
    {"sluice_engine_image_cache_hits_total",
     "Image chunks found in the cache of vision encoder outputs: not encoded again.",
     SL_METRICS_COUNTER},
    {"sluice_engine_graphs_reused_total",
     "llama_decode ubatches whose compute graph llama.cpp reused from the step before "
     "(same shape) instead of building it again.",
     SL_METRICS_COUNTER},
};

typedef enum engine_hist {
    EH_TTFT, EH_ITL, EH_E2E, EH_QUEUE, EH_PREFILL, EH_DECODE, EH_COUNT
} engine_hist;

static const double latency_buckets[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25,
                                         0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
                                         160.0, 640.0, 2560.0};
static const double itl_buckets[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                     0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};

static const struct {
    const char *name, *help;
    const double *buckets;
    size_t n;
} engine_hists[EH_COUNT] = {
    {"vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
     latency_buckets, sizeof latency_buckets / sizeof *latency_buckets},
    {"vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
     itl_buckets, sizeof itl_buckets / sizeof *itl_buckets},
    {"vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
     latency_buckets, sizeof latency_buckets / sizeof *latency_buckets},
    {"vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
     latency_buckets, sizeof latency_buckets / sizeof *latency_buckets},
    {"vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.",
     latency_buckets, sizeof latency_buckets / sizeof *latency_buckets},
    {"vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
     latency_buckets, sizeof latency_buckets / sizeof *latency_buckets},
};

/* HTTP engines: per-endpoint counts synced from sl_endpoint_stats as
 * deltas, so replicas sharing an endpoint add up. */
typedef struct endpoint_sync {
    sl_metrics_child *in_flight, *retries, *limit;
    int in_flight_seen;
    uint64_t retries_seen;
    int codes[16];
    uint64_t code_counts_seen[16];
    int n_codes;
} endpoint_sync;

struct replica_metrics {
    atomic_bool ready; /* its children are set: the live page may read them */
    caption_metrics *cm;
    sl_engine *engine;
    const char *model_name, *engine_label;
    char *model_fixed; /* model_name made valid UTF-8, when it was not */
    char label[32];
    endpoint_sync *eps;
    size_t n_eps;
    double synced_at;
    sl_metrics_child *values[EV_COUNT];
    sl_metrics_child *hists[EH_COUNT];
    sl_metrics_child *success_stop, *success_length;
    /* HTTP engines: the answers' totals over endpoints, for the live page
     * (their series are per endpoint, found by label as answers come). */
    atomic_uint_fast64_t http_prompt_tokens, http_generation_tokens, http_ttft_n, http_ttft_us;
    struct value_ref {
        replica_metrics *rm;
        engine_value which;
    } refs[EV_COUNT];
};

static double engine_value_of(const sl_engine_stats *s, engine_value which)
{
    switch (which) {
    case EV_RUNNING: return (double)s->requests_running;
    case EV_WAITING: return (double)s->requests_waiting;
    case EV_KV_USAGE:
        return s->kv_cells_total ? (double)s->kv_cells_used / (double)s->kv_cells_total : 0.0;
    case EV_PROMPT_TOKENS: return (double)s->prompt_tokens;
    case EV_GENERATION_TOKENS: return (double)s->generation_tokens;
    case EV_PREFIX_QUERIES: return (double)s->prefix_query_tokens;
    case EV_PREFIX_HITS: return (double)s->prefix_cached_tokens;
    case EV_CHOICE_PROBES: return (double)s->choice_probes;
    case EV_IMAGE_CACHE_QUERIES: return (double)s->image_cache_queries;
    case EV_IMAGE_CACHE_HITS: return (double)s->image_cache_hits;
    case EV_GRAPHS_REUSED: return (double)s->graphs_reused;
    case EV_COUNT: break;
    }
    return 0.0;
}

static double read_engine_value(void *user)
{
    struct value_ref *ref = user;
    sl_engine_stats s;
    sl_engine_stats_get(ref->rm->engine, &s);
    return engine_value_of(&s, ref->which);
}

/* --- pipeline ------------------------------------------------------------------- */

typedef enum stage_value {
    SV_ROWS_IN, SV_ROWS_OUT, SV_ROWS_FAILED, SV_QUEUE_ROWS, SV_QUEUE_BYTES, SV_BUSY, SV_IDLE,
    SV_BLOCKED, SV_WORKERS, SV_IN_FLIGHT, SV_COUNT
} stage_value;

static const struct {
    const char *name, *help;
    sl_metrics_type type;
} stage_families[SV_COUNT] = {
    {"sluice_stage_rows_in_total", "Rows a stage received.", SL_METRICS_COUNTER},
    {"sluice_stage_rows_out_total", "Rows a stage passed on that it neither failed nor dropped (an earlier stage's failed rows pass through; rows a stop left unsent do not count).", SL_METRICS_COUNTER},
    {"sluice_stage_rows_failed_total", "Rows that failed in a stage.", SL_METRICS_COUNTER},
    {"sluice_stage_queue_rows", "Rows waiting in a stage's input queue.", SL_METRICS_GAUGE},
    {"sluice_stage_queue_bytes", "Bytes waiting in a stage's input queue.", SL_METRICS_GAUGE},
    {"sluice_stage_busy_seconds_total", "Worker time spent working, summed over workers.",
     SL_METRICS_COUNTER},
    {"sluice_stage_idle_seconds_total", "Worker time spent waiting for input.", SL_METRICS_COUNTER},
    {"sluice_stage_blocked_seconds_total",
     "Worker time spent waiting for room downstream or in the memory budget.", SL_METRICS_COUNTER},
    {"sluice_stage_workers", "Workers of a stage.", SL_METRICS_GAUGE},
    {"sluice_stage_in_flight_rows", "Rows submitted to an asynchronous stage and not completed.",
     SL_METRICS_GAUGE},
};

typedef enum job_value {
    JV_PRODUCED, JV_DONE, JV_FAILED, JV_BYTES, JV_PEAK, JV_BUDGET, JV_INPUT, JV_ETA,
    JV_WRITE_FAILED, JV_COUNT
} job_value;

static const struct {
    const char *name, *help;
    sl_metrics_type type;
} job_families[JV_COUNT] = {
    {"sluice_rows_read_total", "Input rows read so far.", SL_METRICS_COUNTER},
    {"sluice_rows_done_total", "Rows written to the output (succeeded or failed).",
     SL_METRICS_COUNTER},  /* not those the writer failed: sluice_rows_write_failed_total */
    {"sluice_rows_failed_total", "Rows written with an error.", SL_METRICS_COUNTER},
    {"sluice_bytes_in_flight", "Bytes of rows between reading and writing.", SL_METRICS_GAUGE},
    {"sluice_bytes_in_flight_peak", "Highest sluice_bytes_in_flight so far.", SL_METRICS_GAUGE},
    {"sluice_memory_budget_bytes", "The bytes-in-flight budget (--memory-budget).",
     SL_METRICS_GAUGE},
    {"sluice_input_rows", "Inputs found in the input folder; NaN until they are counted.",
     SL_METRICS_GAUGE},
    {"sluice_eta_seconds", "Seconds left at the current rate; NaN while the total is unknown.",
     SL_METRICS_GAUGE},
    {"sluice_rows_write_failed_total",
     "Rows the writer could not write (not in the output: the next run answers them again).",
     SL_METRICS_COUNTER},
};

struct caption_metrics {
    sl_metrics *reg;
    sl_metrics_server *server;
    pthread_mutex_t mu;
    sl_exec *exec;
    const atomic_int_fast64_t *input_total;
    sl_metrics_child *stage_children[STAGES_MAX][SV_COUNT];
    sl_metrics_child *job_children[JV_COUNT];
    struct stage_ref {
        caption_metrics *cm;
        size_t stage;
        stage_value which;
    } stage_refs[STAGES_MAX][SV_COUNT];
    struct job_ref {
        caption_metrics *cm;
        job_value which;
    } job_refs[JV_COUNT];
    size_t n_stages;
    char stage_names[STAGES_MAX][32];
    sl_metrics_family *failed_by_class;
    sl_metrics_family *task_tokens;
    sl_metrics_family *unfit;
    sl_metrics_child *phase_children[SL_PHASE_COUNT];
    replica_metrics replicas[REPLICAS_MAX];
    int n_replicas;
};

static double stage_value_of(const sl_stage_stats *s, stage_value which)
{
    switch (which) {
    case SV_ROWS_IN: return (double)s->rows_in;
    case SV_ROWS_OUT: return (double)s->rows_out;
    case SV_ROWS_FAILED: return (double)s->rows_failed;
    case SV_QUEUE_ROWS: return (double)s->queue_rows;
    case SV_QUEUE_BYTES: return (double)s->queue_bytes;
    case SV_BUSY: return s->busy_s;
    case SV_IDLE: return s->idle_s;
    case SV_BLOCKED: return s->blocked_s;
    case SV_WORKERS: return (double)s->workers;
    case SV_IN_FLIGHT: return (double)s->in_flight;
    case SV_COUNT: break;
    }
    return 0.0;
}

void caption_exec_stats(const sl_exec *exec, sl_exec_stats *s, uint64_t *write_failed)
{
    sl_exec_stats_get(exec, s);
    /* The writer is the last stage: the rows it failed are those it could
     * not write (a row failed before arrives marked, and is written). */
    size_t n = sl_exec_stage_count(exec);
    sl_stage_stats w = {0};
    if (n > 0)
        sl_exec_stage_stats(exec, n - 1, &w);
    uint64_t lost = w.rows_failed <= s->rows_failed ? w.rows_failed : s->rows_failed;
    s->rows_failed -= lost;
    s->rows_done -= lost <= s->rows_done ? lost : s->rows_done;
    /* Rows a stop left unsent reach the writer but are not done: the
     * resume does them. */
    s->rows_done -= s->rows_deferred <= s->rows_done ? s->rows_deferred : s->rows_done;
    *write_failed = lost;
}

double caption_eta_seconds(const sl_exec_stats *s, int64_t total)
{
    if (total < 0)
        return -1.0;
    if ((int64_t)s->rows_done >= total)
        return 0.0;
    if (s->rows_done == 0 || s->seconds <= 0)
        return -1.0;
    return (double)(total - (int64_t)s->rows_done) * s->seconds / (double)s->rows_done;
}

static double job_value_of(const sl_exec_stats *s, uint64_t write_failed, job_value which,
                           int64_t total)
{
    double eta;
    switch (which) {
    case JV_INPUT: return total < 0 ? NAN : (double)total;
    case JV_ETA:
        eta = caption_eta_seconds(s, total);
        return eta < 0 ? NAN : eta;
    case JV_PRODUCED: return (double)s->rows_produced;
    case JV_DONE: return (double)s->rows_done;
    case JV_FAILED: return (double)s->rows_failed;
    case JV_BYTES: return (double)s->bytes_in_flight;
    case JV_PEAK: return (double)s->peak_bytes_in_flight;
    case JV_BUDGET: return (double)s->memory_budget;
    case JV_WRITE_FAILED: return (double)write_failed;
    case JV_COUNT: break;
    }
    return 0.0;
}

static double read_stage_value(void *user)
{
    struct stage_ref *ref = user;
    sl_stage_stats s;
    sl_exec_stage_stats(ref->cm->exec, ref->stage, &s);
    return stage_value_of(&s, ref->which);
}

static double read_job_value(void *user)
{
    struct job_ref *ref = user;
    sl_exec_stats s;
    uint64_t write_failed;
    caption_exec_stats(ref->cm->exec, &s, &write_failed);
    return job_value_of(&s, write_failed, ref->which, atomic_load(ref->cm->input_total));
}

/* --- lifecycle --------------------------------------------------------------------- */

/* endpoint: the server that answered (HTTP engines); "" for in-process ones. */
static const char *const engine_labels[] = {"model_name", "engine", "endpoint", NULL};
static const char *const success_labels[] = {"model_name", "engine", "endpoint", "finished_reason",
                                             NULL};
static const char *const http_labels[] = {"endpoint", NULL};
static const char *const http_code_labels[] = {"endpoint", "code", NULL};
static const char *const stage_labels[] = {"stage", NULL};
static const char *const failed_labels[] = {"stage", "class", NULL};
static const char *const phase_labels[] = {"phase", NULL};

/* From 20 us (a batch built for a few sequences) to 10 s (a 3B model's
 * decode step on a CPU). */
static const double phase_buckets[] = {0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                       0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0};

/* The token in `path`: its first line, 16 to 256 characters a URL carries
 * as they are (letters, digits, '-', '_', '.', '~': hex or base64url).
 * The file must be the user's alone, as an ssh key: the token is what keeps
 * the other users of the host out. */
sl_status caption_metrics_read_token(const char *path, char **out)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--metrics-token-file %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return sl_fail(SL_ERR_INVALID_ARG, "--metrics-token-file %s: not a regular file", path);
    if (sb.st_mode & 077)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--metrics-token-file %s: other users may read it (mode %04o), and the "
                       "token is what keeps them out: chmod 600 %s",
                       path, (unsigned)(sb.st_mode & 07777), path);
    uint8_t *data = NULL;
    size_t len = 0;
    sl_status st = sl_read_file(path, 4096, &data, &len);
    if (st != SL_OK)
        return sl_fail(SL_ERR_INVALID_ARG, "--metrics-token-file %s: %s", path, sl_last_error());
    size_t n = 0;
    while (n < len && data[n] != '\n' && data[n] != '\r')
        n++;
    size_t bad = n;
    /* NUL first: strchr finds it in any string, and the copy below would
     * end there, a token shorter than the 16 checked (a file "abc\0..."). */
    for (size_t i = 0; i < n && bad == n; i++)
        if (!data[i] || (!isalnum(data[i]) && !strchr("-_.~", data[i])))
            bad = i;
    bool fit = n >= 16 && n <= 256 && bad == n;
    *out = fit ? sl_strndup((const char *)data, n) : NULL;
    explicit_bzero(data, len);
    sl_free(data);
    if (!fit)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "--metrics-token-file %s: its first line must be a token of 16 to 256 "
                       "letters, digits, '-', '_', '.' or '~' (it %s); make one with: openssl "
                       "rand -hex 32 > %s",
                       path, n < 16 ? "is shorter" : n > 256 ? "is longer" : "holds another byte",
                       path);
    return *out ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
}

sl_status caption_metrics_start(const char *address, const char *token,
                                caption_metrics **out)
{
    *out = NULL;
    caption_metrics *cm = sl_calloc(1, sizeof *cm);
    if (!cm)
        return sl_fail(SL_ERR_NOMEM, "out of memory for metrics");
    pthread_mutex_init(&cm->mu, NULL);
    sl_metrics_params mp = sl_metrics_default_params();
    mp.gpu_metrics = true;
    sl_status st = sl_metrics_new(&mp, &cm->reg);
    sl_metrics_family *f;
    for (int i = 0; st == SL_OK && i < EV_COUNT; i++) {
        sl_metrics_family_params fp = sl_metrics_family_default_params();
        fp.type = engine_families[i].type;
        fp.name = engine_families[i].name;
        fp.help = engine_families[i].help;
        fp.label_names = engine_labels;
        fp.n_labels = 3;
        st = sl_metrics_register(cm->reg, &fp, &f);
    }
    for (int i = 0; st == SL_OK && i < EH_COUNT; i++)
        st = sl_metrics_add_histogram(cm->reg, engine_hists[i].name, engine_hists[i].help,
                                      engine_labels, engine_hists[i].buckets, engine_hists[i].n, &f);
    if (st == SL_OK)
        st = sl_metrics_add_counter(cm->reg, "vllm:request_success_total",
                                    "Count of successfully processed requests.", success_labels, &f);
    if (st == SL_OK)
        st = sl_metrics_add_counter(cm->reg, "sluice_http_requests_total",
                                    "HTTP attempts by endpoint and status (code 0: no answer).",
                                    http_code_labels, &f);
    if (st == SL_OK)
        st = sl_metrics_add_counter(cm->reg, "sluice_http_retries_total",
                                    "HTTP attempts that failed and were tried again.", http_labels,
                                    &f);
    if (st == SL_OK)
        st = sl_metrics_add_gauge(cm->reg, "sluice_http_in_flight",
                                  "HTTP requests outstanding per endpoint.", http_labels, &f);
    if (st == SL_OK)
        st = sl_metrics_add_gauge(cm->reg, "sluice_http_in_flight_limit",
                                  "The in-flight limit per endpoint (moves with --adaptive).",
                                  http_labels, &f);
    for (int i = 0; st == SL_OK && i < SV_COUNT; i++) {
        sl_metrics_family_params fp = sl_metrics_family_default_params();
        fp.type = stage_families[i].type;
        fp.name = stage_families[i].name;
        fp.help = stage_families[i].help;
        fp.label_names = stage_labels;
        fp.n_labels = 1;
        st = sl_metrics_register(cm->reg, &fp, &f);
    }
    for (int i = 0; st == SL_OK && i < JV_COUNT; i++) {
        sl_metrics_family_params fp = sl_metrics_family_default_params();
        fp.type = job_families[i].type;
        fp.name = job_families[i].name;
        fp.help = job_families[i].help;
        st = sl_metrics_register(cm->reg, &fp, &f);
    }
    if (st == SL_OK)
        st = sl_metrics_add_counter(cm->reg, "sluice_rows_failed_by_class_total",
                                    "Rows written with an error, by the stage that failed them "
                                    "and the class of the error.",
                                    failed_labels, &cm->failed_by_class);
    static const char *const unfit_labels[] = {"column", NULL};
    if (st == SL_OK)
        st = sl_metrics_add_counter(cm->reg, "sluice_output_unfit_values_total",
                                    "Rows whose value of an input column the Parquet output could "
                                    "not hold (another type than the column's, a key its struct "
                                    "lacks, a column first seen after the planned rows; _summary.json's "
                                    "unfit_values), by column.",
                                    unfit_labels, &cm->unfit);
    static const char *const task_labels[] = {"task", "kind", NULL};
    if (st == SL_OK)
        st = sl_metrics_add_counter(cm->reg, "sluice_task_tokens_total",
                                    "Tokens of each task's answers (several tasks per image; "
                                    "one prompt is task caption): kind prompt (positions fed, the shared image included), "
                                    "generated, or cached (positions copied, not computed).",
                                    task_labels, &cm->task_tokens);
    if (st == SL_OK)
        st = sl_metrics_add_histogram(
            cm->reg, "sluice_engine_step_seconds",
            "Time of the llama engine's loop by phase: admit, batch, decode, logits, sample, "
            "detokenize and bookkeeping once per decode step; preprocess, encode and "
            "image_prefill once per image.",
            phase_labels, phase_buckets, sizeof phase_buckets / sizeof phase_buckets[0], &f);
    for (int i = 0; st == SL_OK && i < SL_PHASE_COUNT; i++) {
        const char *phase = sl_engine_phase_name((sl_engine_phase)i);
        st = sl_metrics_child_get(f, &phase, &cm->phase_children[i]);
    }
    if (st == SL_OK && address && *address)
        st = sl_metrics_server_start_token(cm->reg, address, token, &cm->server);
    if (st != SL_OK) {
        caption_metrics_stop(cm);
        return st;
    }
    *out = cm;
    return SL_OK;
}

sl_metrics_server *caption_metrics_server(caption_metrics *cm)
{
    return cm ? cm->server : NULL;
}

int caption_metrics_port(const caption_metrics *cm)
{
    return cm && cm->server ? sl_metrics_server_port(cm->server) : 0;
}

sl_status caption_metrics_attach_exec(caption_metrics *cm, sl_exec *exec,
                                      const atomic_int_fast64_t *input_total)
{
    cm->exec = exec;
    cm->input_total = input_total;
    size_t n = sl_exec_stage_count(exec);
    if (n > STAGES_MAX)
        n = STAGES_MAX;
    for (size_t s = 0; s < n; s++) {
        sl_stage_stats ss;
        sl_exec_stage_stats(exec, s, &ss);
        snprintf(cm->stage_names[s], sizeof cm->stage_names[s], "%s", ss.name);
        for (int i = 0; i < SV_COUNT; i++) {
            sl_metrics_child *c = sl_metrics_with(sl_metrics_find(cm->reg, stage_families[i].name),
                                                  ss.name);
            if (!c)
                return SL_ERR_NOMEM;
            cm->stage_refs[s][i] = (struct stage_ref){cm, s, (stage_value)i};
            cm->stage_children[s][i] = c;
            sl_metrics_child_set_fn(c, read_stage_value, &cm->stage_refs[s][i]);
        }
    }
    for (int i = 0; i < JV_COUNT; i++) {
        sl_metrics_child *c = sl_metrics_with(sl_metrics_find(cm->reg, job_families[i].name));
        if (!c)
            return SL_ERR_NOMEM;
        cm->job_refs[i] = (struct job_ref){cm, (job_value)i};
        cm->job_children[i] = c;
        sl_metrics_child_set_fn(c, read_job_value, &cm->job_refs[i]);
    }
    pthread_mutex_lock(&cm->mu);
    cm->n_stages = n;
    pthread_mutex_unlock(&cm->mu);
    return SL_OK;
}

/* Replaces a callback child by a plain one holding `v`. */
static void freeze(sl_metrics_child *c, sl_metrics_type type, double v)
{
    if (!c)
        return;
    sl_metrics_child_set_fn(c, NULL, NULL);
    if (type == SL_METRICS_GAUGE)
        sl_metrics_gauge_set(c, v);
    else
        sl_metrics_counter_add(c, v - sl_metrics_value(c));
}

void caption_metrics_detach_exec(caption_metrics *cm)
{
    if (!cm || !cm->exec)
        return;
    size_t n = sl_exec_stage_count(cm->exec);
    for (size_t s = 0; s < n && s < STAGES_MAX; s++) {
        sl_stage_stats ss;
        sl_exec_stage_stats(cm->exec, s, &ss);
        for (int i = 0; i < SV_COUNT; i++)
            freeze(cm->stage_children[s][i], stage_families[i].type,
                   stage_value_of(&ss, (stage_value)i));
    }
    sl_exec_stats es;
    uint64_t write_failed;
    caption_exec_stats(cm->exec, &es, &write_failed);
    for (int i = 0; i < JV_COUNT; i++)
        freeze(cm->job_children[i], job_families[i].type,
               job_value_of(&es, write_failed, (job_value)i, atomic_load(cm->input_total)));
    cm->exec = NULL;
}

/* A replica whose metrics could not all be made: nothing of it reads its
 * engine, which the caller frees at once (a scrape read it after). Its
 * slot stays, never ready: other replicas may have taken the next ones. */
static sl_status unhook_replica(replica_metrics *rm)
{
    for (int i = 0; i < EV_COUNT; i++)
        if (rm->values[i])
            sl_metrics_child_set_fn(rm->values[i], NULL, NULL);
    rm->engine = NULL;
    return sl_fail(SL_ERR_NOMEM, "out of memory adding the engine's metrics");
}

sl_status caption_metrics_add_replica(caption_metrics *cm, int index, const char *model_name,
                                      sl_engine *engine, replica_metrics **out)
{
    *out = NULL;
    pthread_mutex_lock(&cm->mu);
    if (cm->n_replicas == REPLICAS_MAX) {
        pthread_mutex_unlock(&cm->mu);
        return sl_fail(SL_ERR_INVALID_ARG, "more than %d engine replicas", REPLICAS_MAX);
    }
    replica_metrics *rm = &cm->replicas[cm->n_replicas++];
    pthread_mutex_unlock(&cm->mu);
    rm->cm = cm;
    rm->engine = engine;
    snprintf(rm->label, sizeof rm->label, "%s-%d", sl_engine_kind(engine), index);
    const char *engine_label = rm->label;
    rm->engine_label = rm->label;
    /* Label values must be UTF-8 (the registry refuses others, and
     * Prometheus would drop the whole scrape): a GGUF's general.name is
     * bytes, and llama.cpp cuts a long one at 255, maybe inside a
     * character. Such a name stopped the run ("value of label model_name is
     * not valid UTF-8"); the metrics show it with U+FFFD instead. */
    if (!sl_utf8_valid(model_name, strlen(model_name))) {
        if (!(rm->model_fixed = sl_utf8_sanitize(model_name, strlen(model_name))))
            return unhook_replica(rm);
        model_name = rm->model_fixed;
    }
    rm->model_name = model_name;
    rm->n_eps = sl_engine_endpoint_count(engine);
    if (rm->n_eps && !(rm->eps = sl_calloc(rm->n_eps, sizeof *rm->eps)))
        return unhook_replica(rm);
    for (size_t i = 0; i < rm->n_eps; i++) {
        sl_endpoint_stats es;
        sl_engine_endpoint_stats(engine, i, &es);
        rm->eps[i].in_flight = sl_metrics_with(sl_metrics_find(cm->reg, "sluice_http_in_flight"),
                                               es.url);
        rm->eps[i].retries = sl_metrics_with(sl_metrics_find(cm->reg, "sluice_http_retries_total"),
                                             es.url);
        rm->eps[i].limit = sl_metrics_with(
            sl_metrics_find(cm->reg, "sluice_http_in_flight_limit"), es.url);
        if (!rm->eps[i].in_flight || !rm->eps[i].retries || !rm->eps[i].limit)
            return unhook_replica(rm);
    }
    for (int i = 0; i < EV_COUNT; i++) {
        /* HTTP engines count tokens per endpoint as answers come (below);
         * they have no KV cache or prefix cache to read. */
        if (rm->n_eps && i != EV_RUNNING && i != EV_WAITING && i != EV_CHOICE_PROBES)
            continue;
        rm->values[i] = sl_metrics_with(sl_metrics_find(cm->reg, engine_families[i].name),
                                        model_name, engine_label, "");
        if (!rm->values[i])
            return unhook_replica(rm);
        rm->refs[i] = (struct value_ref){rm, (engine_value)i};
        sl_metrics_child_set_fn(rm->values[i], read_engine_value, &rm->refs[i]);
    }
    if (rm->n_eps) {
        atomic_store(&rm->ready, true);
        *out = rm; /* HTTP answers are observed per endpoint (observe_http) */
        return SL_OK;
    }
    for (int i = 0; i < EH_COUNT; i++)
        if (!(rm->hists[i] = sl_metrics_with(sl_metrics_find(cm->reg, engine_hists[i].name),
                                             model_name, engine_label, "")))
            return unhook_replica(rm);
    sl_metrics_family *success = sl_metrics_find(cm->reg, "vllm:request_success_total");
    rm->success_stop = sl_metrics_with(success, model_name, engine_label, "", "stop");
    rm->success_length = sl_metrics_with(success, model_name, engine_label, "", "length");
    if (!rm->success_stop || !rm->success_length)
        return unhook_replica(rm);
    atomic_store(&rm->ready, true);
    *out = rm;
    return SL_OK;
}

/* Inter-token latency: one observation per gap between tokens, each the
 * request's mean gap. */
static void observe_gaps(sl_metrics_child *itl, const sl_result *r)
{
    if (r->generated_tokens < 2)
        return;
    double gap = r->generate_ms / 1e3 / (r->generated_tokens - 1);
    for (int i = 1; i < r->generated_tokens; i++)
        sl_metrics_histogram_observe(itl, gap);
}

/* An HTTP answer: what the client sees, per endpoint. */
static void observe_http(replica_metrics *rm, const sl_result *r)
{
    sl_metrics *reg = rm->cm->reg;
    const char *m = rm->model_name, *e = rm->engine_label, *ep = r->endpoint;
    sl_metrics_child *c;
    /* Streamed answers (ttft_ms > 0) time their tokens: ttft_ms counts from
     * submission, so it holds the queue time, as the embedded engine's. */
    bool streamed = r->ttft_ms > 0;
    double e2e_s = ((streamed ? r->ttft_ms : r->queue_ms) + r->generate_ms) / 1e3;
    atomic_fetch_add(&rm->http_prompt_tokens, (uint64_t)(r->prompt_tokens > 0 ? r->prompt_tokens : 0));
    atomic_fetch_add(&rm->http_generation_tokens,
                     (uint64_t)(r->generated_tokens > 0 ? r->generated_tokens : 0));
    if (streamed) {
        atomic_fetch_add(&rm->http_ttft_us, (uint64_t)llround(r->ttft_ms * 1e3));
        atomic_fetch_add(&rm->http_ttft_n, 1);
    }
    if ((c = sl_metrics_with(sl_metrics_find(reg, "vllm:e2e_request_latency_seconds"), m, e, ep)))
        sl_metrics_histogram_observe(c, e2e_s);
    if (streamed &&
        (c = sl_metrics_with(sl_metrics_find(reg, "vllm:time_to_first_token_seconds"), m, e, ep)))
        sl_metrics_histogram_observe(c, r->ttft_ms / 1e3);
    if (streamed &&
        (c = sl_metrics_with(sl_metrics_find(reg, "vllm:inter_token_latency_seconds"), m, e, ep)))
        observe_gaps(c, r);
    if ((c = sl_metrics_with(sl_metrics_find(reg, "vllm:request_queue_time_seconds"), m, e, ep)))
        sl_metrics_histogram_observe(c, r->queue_ms / 1e3);
    if ((c = sl_metrics_with(sl_metrics_find(reg, "vllm:prompt_tokens_total"), m, e, ep)))
        sl_metrics_counter_add_u64(c, (uint64_t)(r->prompt_tokens > 0 ? r->prompt_tokens : 0));
    if ((c = sl_metrics_with(sl_metrics_find(reg, "vllm:generation_tokens_total"), m, e, ep)))
        sl_metrics_counter_add_u64(c, (uint64_t)(r->generated_tokens > 0 ? r->generated_tokens : 0));
    /* A server's null finish_reason still counts the request. */
    if ((c = sl_metrics_with(sl_metrics_find(reg, "vllm:request_success_total"), m, e, ep,
                             r->finish_reason ? r->finish_reason : "none")))
        sl_metrics_counter_inc(c);
}

void replica_metrics_sync(replica_metrics *rm, bool force)
{
    if (!rm || !rm->engine || !rm->n_eps)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    if (!force && now - rm->synced_at < 0.25)
        return;
    rm->synced_at = now;
    sl_metrics_family *requests = sl_metrics_find(rm->cm->reg, "sluice_http_requests_total");
    for (size_t i = 0; i < rm->n_eps; i++) {
        endpoint_sync *s = &rm->eps[i];
        sl_endpoint_stats es;
        sl_engine_endpoint_stats(rm->engine, i, &es);
        sl_metrics_gauge_add(s->in_flight, (double)(es.in_flight - s->in_flight_seen));
        s->in_flight_seen = es.in_flight;
        sl_metrics_gauge_set(s->limit, es.limit);
        sl_metrics_counter_add_u64(s->retries, es.retries - s->retries_seen);
        s->retries_seen = es.retries;
        for (int k = 0; k < es.n_codes; k++) {
            if (k >= s->n_codes) {
                s->codes[k] = es.codes[k];
                s->n_codes = k + 1;
            }
            uint64_t delta = es.code_counts[k] - s->code_counts_seen[k];
            if (!delta)
                continue;
            char code[16];
            snprintf(code, sizeof code, "%d", es.codes[k]);
            sl_metrics_child *c = sl_metrics_with(requests, es.url, code);
            if (!c)
                continue; /* out of memory: counted at the next sync */
            sl_metrics_counter_add_u64(c, delta);
            s->code_counts_seen[k] = es.code_counts[k];
        }
    }
}

/* One answer: a request, or one task of a request with several. */
static void observe_result(replica_metrics *rm, const sl_result *r)
{
    if (r->endpoint) {
        observe_http(rm, r);
        return;
    }
    sl_metrics_histogram_observe(rm->hists[EH_TTFT], r->ttft_ms / 1e3);
    sl_metrics_histogram_observe(rm->hists[EH_E2E], (r->ttft_ms + r->generate_ms) / 1e3);
    sl_metrics_histogram_observe(rm->hists[EH_QUEUE], r->queue_ms / 1e3);
    sl_metrics_histogram_observe(rm->hists[EH_PREFILL], r->prefill_ms / 1e3);
    sl_metrics_histogram_observe(rm->hists[EH_DECODE], r->generate_ms / 1e3);
    observe_gaps(rm->hists[EH_ITL], r);
    sl_metrics_counter_inc(r->finish_reason && strcmp(r->finish_reason, "length") == 0
                               ? rm->success_length
                               : rm->success_stop);
}

void replica_metrics_observe(replica_metrics *rm, const sl_completion *c)
{
    if (!rm || c->status != SL_OK)
        return;
    if (c->n_results == 0)
        observe_result(rm, &c->result);
    for (int i = 0; i < c->n_results; i++)
        observe_result(rm, &c->results[i]);
}

void caption_metrics_task_answer(caption_metrics *cm, const char *task, const sl_result *r)
{
    if (!cm)
        return;
    static const char *const kinds[3] = {"prompt", "generated", "cached"};
    int counts[3] = {r->prompt_tokens, r->generated_tokens, r->cached_tokens};
    for (int k = 0; k < 3; k++) {
        sl_metrics_child *c = sl_metrics_with(cm->task_tokens, task, kinds[k]);
        if (c && counts[k] > 0)
            sl_metrics_counter_add_u64(c, (uint64_t)counts[k]);
    }
}

void replica_metrics_detach(replica_metrics *rm)
{
    if (!rm || !rm->engine)
        return;
    replica_metrics_sync(rm, true);
    for (size_t i = 0; i < rm->n_eps; i++) {
        sl_metrics_gauge_add(rm->eps[i].in_flight, -(double)rm->eps[i].in_flight_seen);
        rm->eps[i].in_flight_seen = 0;
    }
    sl_engine_stats s;
    sl_engine_stats_get(rm->engine, &s);
    /* The engine is closing: nothing runs or waits in it now. Its own
     * figures may be a step old (the last request done, the step's stats
     * not yet published), which left _metrics.prom saying a request ran. */
    s.requests_running = 0;
    s.requests_waiting = 0;
    for (int i = 0; i < EV_COUNT; i++)
        freeze(rm->values[i], engine_families[i].type, engine_value_of(&s, (engine_value)i));
    rm->engine = NULL;
}

sl_status caption_metrics_write(caption_metrics *cm, const char *path)
{
    char *text;
    size_t len;
    sl_status st = sl_metrics_render(cm->reg, &text, &len);
    if (st != SL_OK)
        return st;
    /* Through a temporary and a rename: a full disk leaves the last whole
     * file (or none), never a truncated one. */
    char *tmp = sl_asprintf("%s.tmp", path);
    int fd = tmp ? sl_file_create_temp(tmp, 0644) : -1;
    if (!tmp)
        st = sl_fail(SL_ERR_NOMEM, "out of memory writing '%s'", path);
    else if (fd < 0)
        st = sl_fail(SL_ERR_IO, "cannot write '%s': %s", tmp, sl_file_temp_error(errno));
    else
        st = sl_file_write_all(fd, text, len, tmp);
    if (fd >= 0 && close(fd) != 0 && st == SL_OK)
        st = sl_fail(SL_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    if (st == SL_OK)
        st = sl_file_rename(tmp, path);
    if (st != SL_OK && fd >= 0)
        unlink(tmp);
    sl_metrics_text_free(text);
    sl_free(tmp);
    return st;
}

void caption_metrics_stop(caption_metrics *cm)
{
    if (!cm)
        return;
    sl_metrics_server_stop(cm->server);
    sl_metrics_free(cm->reg);
    for (int i = 0; i < cm->n_replicas; i++) {
        sl_free(cm->replicas[i].eps);
        sl_free(cm->replicas[i].model_fixed);
    }
    pthread_mutex_destroy(&cm->mu);
    sl_free(cm);
}

void caption_metrics_engine_phase(void *cm, sl_engine_phase phase, double seconds)
{
    caption_metrics *m = cm;
    if ((unsigned)phase < SL_PHASE_COUNT)
        sl_metrics_histogram_observe(m->phase_children[phase], seconds);
}

void caption_metrics_row_failed(caption_metrics *cm, const char *stage, const char *cls)
{
    if (!cm)
        return;
    sl_metrics_child *c = sl_metrics_with(cm->failed_by_class, stage ? stage : "unknown", cls);
    if (c)
        sl_metrics_counter_inc(c);
}

void caption_metrics_unfit(void *cm, const char *column)
{
    caption_metrics *m = cm;
    sl_metrics_child *c = m ? sl_metrics_with(m->unfit, column) : NULL;
    if (c)
        sl_metrics_counter_inc(c);
}

/* A count that JSON carries exactly; NaN (not known yet) is null. */
static json_t *json_number(double v)
{
    if (isnan(v) || isinf(v))
        return json_null();
    if (v == floor(v) && fabs(v) < 9e15)
        return json_integer((json_int_t)v);
    return json_real(v);
}

json_t *caption_metrics_status_json(caption_metrics *cm)
{
    json_t *o = json_object(), *stages = json_array(), *engine = json_object();
    if (!o || !stages || !engine) {
        json_decref(o);
        json_decref(stages);
        json_decref(engine);
        return NULL;
    }
    pthread_mutex_lock(&cm->mu);
    size_t n_stages = cm->n_stages;
    int n_replicas = cm->n_replicas;
    pthread_mutex_unlock(&cm->mu);
    static const char *const job_keys[JV_COUNT] = {
        "rows_read", "rows_done", "rows_failed", "bytes_in_flight", "bytes_in_flight_peak",
        "memory_budget", "rows_total", "eta_s", "rows_write_failed"};
    for (int i = 0; i < JV_COUNT && n_stages; i++)
        json_object_set_new(o, job_keys[i], json_number(sl_metrics_value(cm->job_children[i])));
    static const char *const stage_keys[SV_COUNT] = {
        "rows_in", "rows_out", "rows_failed", "queue_rows", "queue_bytes", "busy_s", "idle_s",
        "blocked_s", "workers", "in_flight"};
    for (size_t s = 0; s < n_stages; s++) {
        json_t *st = json_object();
        if (!st)
            break;
        json_object_set_new(st, "name", json_string(cm->stage_names[s]));
        for (int i = 0; i < SV_COUNT; i++)
            json_object_set_new(st, stage_keys[i],
                                json_number(sl_metrics_value(cm->stage_children[s][i])));
        json_array_append_new(stages, st);
    }
    json_object_set_new(o, "stages", stages);
    /* Engine figures summed over replicas (KV usage: the fullest one). */
    double sums[EV_COUNT] = {0}, ttft_sum = 0, ttft_n = 0;
    int ready = 0;
    for (int r = 0; r < n_replicas && r < REPLICAS_MAX; r++) {
        replica_metrics *rm = &cm->replicas[r];
        if (!atomic_load(&rm->ready))
            continue;
        ready++;
        if (rm->n_eps) { /* an HTTP engine: its counts are per endpoint, summed as they come */
            sums[EV_RUNNING] += sl_metrics_value(rm->values[EV_RUNNING]);
            sums[EV_WAITING] += sl_metrics_value(rm->values[EV_WAITING]);
            sums[EV_PROMPT_TOKENS] += (double)atomic_load(&rm->http_prompt_tokens);
            sums[EV_GENERATION_TOKENS] += (double)atomic_load(&rm->http_generation_tokens);
            ttft_sum += (double)atomic_load(&rm->http_ttft_us) / 1e6;
            ttft_n += (double)atomic_load(&rm->http_ttft_n);
            continue;
        }
        for (int i = 0; i < EV_COUNT; i++) {
            double v = sl_metrics_value(rm->values[i]);
            sums[i] = i == EV_KV_USAGE ? fmax(sums[i], v) : sums[i] + v;
        }
        ttft_sum += sl_metrics_value(rm->hists[EH_TTFT]);
        ttft_n += (double)sl_metrics_histogram_count(rm->hists[EH_TTFT]);
    }
    static const char *const engine_keys[EV_COUNT] = {
        "requests_running", "requests_waiting", "kv_cache_usage", "prompt_tokens",
        "generation_tokens", "prefix_cache_queries", "prefix_cache_hits", "choice_probes",
        "image_cache_queries", "image_cache_hits", "graphs_reused"};
    json_object_set_new(engine, "replicas", json_integer(ready));
    for (int i = 0; i < EV_COUNT; i++)
        json_object_set_new(engine, engine_keys[i], json_number(sums[i]));
    json_object_set_new(engine, "ttft_sum_s", json_real(ttft_sum));
    json_object_set_new(engine, "ttft_count", json_number(ttft_n));
    json_object_set_new(o, "engine", engine);
    return o;
}

sl_metrics *caption_metrics_registry(caption_metrics *cm) { return cm->reg; }
