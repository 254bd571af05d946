/* job/rank_metrics.h — an MPI job's figures on rank 0 (sluice/dist.h):
 * every rank's share under sluice_job_rank_*{rank} and the job's under
 * sluice_job_*, read from the coordinator when /metrics is scraped, and the
 * same as a "ranks" list for the live page. The dist handle must outlive
 * the metrics server (the caller frees it after the run). Any thread. */
#ifndef SL_JOB_RANK_METRICS_H
#define SL_JOB_RANK_METRICS_H

#include <jansson.h>

#include "sluice/dist.h"
#include "sluice/metrics.h"

typedef struct rank_metrics rank_metrics;

/* Registers the families in reg and ties them to d; *out is freed with
 * rank_metrics_free() after the server stops. On error nothing in reg
 * reads what was freed (the server may be up): the series read 0. */
sl_status rank_metrics_attach(sl_metrics *reg, sl_dist *d, rank_metrics **out);
/* [{rank, rows, failed, parts, shards, generated_tokens, finished}, ...];
 * NULL when not rank 0 of a job. */
json_t *rank_metrics_json(sl_dist *d);
void rank_metrics_free(rank_metrics *rm);

#endif
