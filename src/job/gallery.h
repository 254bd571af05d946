/* job/gallery.h — the images a run shows: the latest rows with thumbnails
 * (live page), a uniform sample of all rows (run report), and failed rows
 * counted by stage and error class. The decode stage makes a JPEG thumbnail
 * only when gallery_wants_thumb() says so (sample candidates, and at most one
 * row per live_interval_ms). The sample is the sample_n rows with the
 * smallest keys, a hash of row index and seed: uniform, the same every run.
 * Thread-safe (one mutex); gallery_add is for the single writer thread.
 * Everything added is copied, each text (id, caption, error) cut past
 * GALLERY_TEXT_MAX bytes with "\u2026 (N bytes more)"; memory is bounded
 * by live_n + sample_n rows of that. */
#ifndef SL_JOB_GALLERY_H
#define SL_JOB_GALLERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "sluice/status.h"

typedef struct gallery gallery;

enum { GALLERY_TEXT_MAX = 4096 };

typedef struct gallery_params {
    int live_n;           /* latest thumbnailed rows kept (default 24) */
    int sample_n;         /* rows in the report's sample (default 64) */
    int live_interval_ms; /* a live thumbnail at most this often (default 250) */
    int thumb_edge;       /* thumbnail longer edge in px (default 160) */
    int thumb_quality;    /* JPEG quality (default 70) */
    uint64_t seed;        /* mixes into the sample keys */
} gallery_params;

gallery_params gallery_default_params(void);

/* NULL on out of memory. */
gallery *gallery_new(const gallery_params *params);
void gallery_free(gallery *g);
const gallery_params *gallery_params_of(const gallery *g);

/* Decode threads: should row `index` get a thumbnail? */
bool gallery_wants_thumb(gallery *g, uint64_t index);

/* A finished row (writer thread). caption NULL for a failed row, whose
 * error, stage and status are then given; thumb may be NULL. */
typedef struct gallery_row {
    uint64_t index;
    const char *id, *caption, *error, *error_stage;
    sl_status error_status;
    const uint8_t *thumb;
    size_t thumb_len;
    int rows;            /* output rows it wrote, counted in the failures (0: one) */
} gallery_row;

void gallery_add(gallery *g, const gallery_row *row);

/* The latest rows, newest first: [{"index","id","caption","error","thumb"}]
 * where thumb is "/thumb/<index>.jpg" or null. A new reference; NULL on OOM. */
json_t *gallery_live_json(gallery *g);

/* A copy of row `index`'s thumbnail if the gallery still holds it (live
 * rows or the sample): *out freed with sl_free. SL_ERR_NOT_FOUND if not. */
sl_status gallery_thumb(gallery *g, uint64_t index, uint8_t **out, size_t *len);

/* Failed output rows by stage and class: [{"stage","class","rows"}]. */
json_t *gallery_failures_json(gallery *g);

/* The sample in row order, for the report; valid until the next
 * gallery_add or gallery_free (call it after the run). */
typedef struct gallery_item {
    uint64_t index, key;
    char *id, *caption, *error, *error_stage;
    const char *error_class;
    uint8_t *thumb;
    size_t thumb_len;
} gallery_item;
size_t gallery_sample(gallery *g, const gallery_item **items);

#endif
