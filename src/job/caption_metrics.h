/* job/caption_metrics.h — the caption job's Prometheus metrics: engine
 * metrics under vLLM's names (so vLLM dashboards work unchanged) and
 * pipeline metrics under sluice_. Registered once per run; per-replica
 * children read their engine's stats at scrape time until detached.
 * Thread-safe; the job owns the handle and stops it after the executor. */
#ifndef SL_JOB_CAPTION_METRICS_H
#define SL_JOB_CAPTION_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>

#include <jansson.h>

#include "sluice/engine.h"
#include "sluice/executor.h"
#include "sluice/metrics.h"

typedef struct caption_metrics caption_metrics;
typedef struct replica_metrics replica_metrics;

/* The token of --metrics-token-file `path` into *out (sl_free it, after
 * explicit_bzero): SL_ERR_INVALID_ARG, naming the file, when it cannot be
 * read, is open to other users, or holds no token fit for a URL. */
sl_status caption_metrics_read_token(const char *path, char **out);
/* Registers the families and, when address is non-empty, serves them;
 * with a token (copied), to requests that bring it. */
sl_status caption_metrics_start(const char *address, const char *token,
                                caption_metrics **out);
/* The HTTP server (more routes go on it), NULL when not serving. */
sl_metrics_server *caption_metrics_server(caption_metrics *cm);
/* The registry, for more families (job/rank_metrics.h). */
sl_metrics *caption_metrics_registry(caption_metrics *cm);
/* The served port, 0 when not serving. */
int caption_metrics_port(const caption_metrics *cm);
/* Pipeline gauges and counters read from the executor at scrape time;
 * input_total (-1 while unknown) gives sluice_input_rows and the ETA. */
sl_status caption_metrics_attach_exec(caption_metrics *cm, sl_exec *exec,
                                      const atomic_int_fast64_t *input_total);

/* The executor's figures as the job counts them: the rows the writer could
 * not write (*write_failed: not in the output, answered again by the next
 * run) are neither done nor failed rows. */
void caption_exec_stats(const sl_exec *exec, sl_exec_stats *stats, uint64_t *write_failed);
/* Seconds left at the current rate, -1 when the total is unknown. */
double caption_eta_seconds(const sl_exec_stats *stats, int64_t total);
/* Freezes the executor-backed values (the executor is about to go). */
void caption_metrics_detach_exec(caption_metrics *cm);

sl_status caption_metrics_add_replica(caption_metrics *cm, int index, const char *model_name,
                                      sl_engine *engine, replica_metrics **out);
/* Per finished request: latency histograms and the success counter. */
void replica_metrics_observe(replica_metrics *rm, const sl_completion *c);
/* HTTP engines: brings the sluice_http_* series up to the engine's
 * per-endpoint counts (at most every 250 ms unless forced). */
void replica_metrics_sync(replica_metrics *rm, bool force);
/* Freezes the engine-backed values (the engine is about to be freed). */
void replica_metrics_detach(replica_metrics *rm);

/* An sl_engine_phase_fn (user: the caption_metrics): observes
 * sluice_engine_step_seconds{phase}. Any thread. */
void caption_metrics_engine_phase(void *cm, sl_engine_phase phase, double seconds);

/* Counts a task's answer in sluice_task_tokens_total{task,kind} (kind:
 * prompt, generated, cached). Any thread. */
void caption_metrics_task_answer(caption_metrics *cm, const char *task, const sl_result *r);

/* Counts one failed row in sluice_rows_failed_by_class_total{stage,class}
 * (class: sl_status_class() of the row's status). Any thread. */
void caption_metrics_row_failed(caption_metrics *cm, const char *stage, const char *cls);
/* Counts a row whose value of `column` the output could not hold in
 * sluice_output_unfit_values_total{column} (an sl_sink_on_unfit hook; cm:
 * the caption_metrics). Any thread. */
void caption_metrics_unfit(void *cm, const char *column);
/* The live page's figures, read from the same children /metrics shows:
 * rows (read, done, failed, total, eta_s), per-stage counters and queues,
 * engine totals over replicas. Any thread; a new reference, NULL on OOM. */
json_t *caption_metrics_status_json(caption_metrics *cm);

/* Writes the current exposition to `path` (the run's final record). */
sl_status caption_metrics_write(caption_metrics *cm, const char *path);
void caption_metrics_stop(caption_metrics *cm);

#endif
