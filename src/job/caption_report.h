/* job/caption_report.h — the run report written beside the output shard:
 * _summary.json (counts, time per stage, throughput, tokens, failures by
 * stage and class, model and parameters, the output's columns from
 * job/schema.h; "format_version": 1) and
 * _report.html (the gallery's sample of rows with their captions, the
 * thumbnails embedded as data: URIs so the file stands alone). Both are
 * written to a temporary name and renamed. Written once, after the run,
 * before the executor is freed; a "running" summary stands in until then. */
#ifndef SL_JOB_CAPTION_REPORT_H
#define SL_JOB_CAPTION_REPORT_H

#include <stdint.h>

#include "io/source.h"
#include "job/gallery.h"
#include "job/schema.h"
#include "sluice/caption.h"

typedef struct caption_report {
    const sl_caption_params *params;
    const sl_caption_summary *summary;
    const sl_exec *exec;      /* for per-stage times */
    sl_status run_status;     /* how the run ended */
    int64_t input_rows;       /* -1: not counted */
    gallery *gallery;
    const caption_schema *schema; /* the output's columns */
    const char *dir;          /* the folder written to (the output's, or its state folder
                                 when the output is in object storage) */
    const sl_source *src;     /* the inputs (hub datasets' commits); NULL: none named */
    json_t *answers;          /* the choices taken (borrowed); NULL: not counted */
    json_t *answers_dropped;  /* by the rows a stage dropped (borrowed); NULL: none */
    json_t *unfit;            /* the sinks' sl_sink_unfit (borrowed); NULL: none */
    json_t *failures;         /* the failed rows by stage and class (borrowed; under MPI
                                 every rank's); NULL: out of memory */
    json_t *parts;            /* the names of the parts this run committed (borrowed; under
                                 MPI every rank's, by number); NULL: out of memory */
    json_t *settings;         /* job_settings_json (borrowed); NULL: out of memory */
} caption_report;

/* SL_ERR_IO (message names the file and the cause) or SL_ERR_NOMEM. */
sl_status caption_report_write(const caption_report *r);

/* At the start of a run that will write: _summary.json says "running"
 * until caption_report_write replaces it, so a run killed before its end
 * (kill -9, mpirun's SIGKILL) does not leave the run before's summary
 * reading as its own. Errors as caption_report_write's. */
sl_status caption_report_running(const sl_caption_params *p, const char *dir);

#endif
