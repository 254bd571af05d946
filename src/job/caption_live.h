/* job/caption_live.h — the live page of a running caption job, served by
 * the metrics server: "/" (src/job/live_page.html, built into the binary),
 * "/api/status" (rows, stages, engine figures, failures as JSON),
 * "/api/gallery" (the latest rows with captions) and "/thumb/<index>.jpg".
 * The handlers run on server threads and read only thread-safe state (the
 * metrics children and the gallery). The job owns the handle and frees it
 * after the server has stopped. */
#ifndef SL_JOB_CAPTION_LIVE_H
#define SL_JOB_CAPTION_LIVE_H

#include "job/caption_metrics.h"
#include "sluice/dist.h"
#include "job/gallery.h"

typedef struct caption_live caption_live;

/* Adds the routes to cm's server (nothing is served when cm has none; a
 * route that cannot be added is logged, not fatal). cm and g must outlive
 * the server; so must dist, rank 0's of an MPI job (the page then shows
 * every rank), NULL otherwise. Given here, not set later: the routes are
 * answered as soon as they are added. SL_ERR_NOMEM: *out is NULL. */
sl_status caption_live_start(caption_metrics *cm, gallery *g, sl_dist *dist, caption_live **out);
void caption_live_set_model(caption_live *l, const char *model_name);
/* The run has ended: the page says so and stops its ETA. */
void caption_live_finish(caption_live *l);
void caption_live_free(caption_live *l);

#endif
