/* sluice/plugin.h — user stages in C: the ABI between sluice and a plugin, a
 * shared object (docs/stages.md, examples/plugins/tags.c) that sluice loads
 * with dlopen and runs as a stage of the caption pipeline (sluice/pipeline.h).
 *
 * A plugin exports one function, SL_PLUGIN_ENTRY ("sluice_plugin"), that
 * returns its sl_plugin: the ABI version it was built with (checked before
 * anything else is read; another version is refused: rebuild the plugin),
 * init() once per worker, process() a batch of rows, close() once per worker.
 * The plugin reaches rows through the sl_plugin_host table handed to init(),
 * never by linking libsluice: the sluice binary links libsluice statically and
 * exports nothing, a program may link libsluice.a or libsluice.so, and a
 * plugin that linked its own copy would have its own thread-local error and
 * allocator. A table works the same in every host, the plugin needs no
 * sluice library at link time, and its version is checked at load instead of
 * failing later on a missing symbol. Thread rules: those of pipeline.h (a
 * worker's calls on one thread; the row calls only inside process()). */
#ifndef SLUICE_PLUGIN_H
#define SLUICE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include "executor.h"
#include "pipeline.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Raised when sl_plugin or a host function that exists changes; functions
 * appended to sl_plugin_host do not raise it (see SL_PLUGIN_HOST_HAS). */
#define SL_PLUGIN_ABI_VERSION 1

/* The name of the entry function a plugin exports. */
#define SL_PLUGIN_ENTRY "sluice_plugin"

/* What sluice lends a plugin: the sl_pipeline_row_* calls and a few others,
 * valid from init() until close() returns. Read its functions, never write. */
typedef struct sl_plugin_host {
    uint32_t abi_version; /* SL_PLUGIN_ABI_VERSION of the host */
    uint32_t size;        /* sizeof the host's table: it only grows */

    /* Sets the message a failing init() returns with (sl_last_error() of the
     * host) and returns `status`: `return host->fail(SL_ERR_IO, "...")`. */
    sl_status (*fail)(sl_status status, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 2, 3)))
#endif
        ;
    /* The config's member `key` when it is a string (a copy: free it with
     * text_free) / a number; NULL / SL_ERR_NOT_FOUND when absent,
     * SL_ERR_INVALID_ARG when of another type. */
    char *(*config_string)(const char *config_json, const char *key);
    sl_status (*config_number)(const char *config_json, const char *key, double *value);
    void (*text_free)(char *text);

    /* The row calls: see sluice/executor.h and sluice/pipeline.h. */
    uint64_t (*row_seq)(const sl_row *row);
    void (*row_fail)(sl_row *row, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 2, 3)))
#endif
        ;
    void (*row_drop)(sl_row *row);
    bool (*row_failed)(const sl_row *row);
    bool (*row_dropped)(const sl_row *row);
    const char *(*row_id)(const sl_row *row);
    const char *(*row_path)(const sl_row *row);
    const char *(*row_prompt)(const sl_row *row);
    sl_status (*row_set_prompt)(sl_row *row, const char *prompt);
    int (*row_width)(const sl_row *row);
    int (*row_height)(const sl_row *row);
    const char *(*row_answer)(const sl_row *row);
    sl_status (*row_set_answer)(sl_row *row, const char *text);
    const char *(*row_image_format)(const sl_row *row);
    sl_status (*row_image_bytes)(sl_row *row, const uint8_t **bytes, size_t *len);
    sl_status (*row_gray)(const sl_row *row, int w, int h, uint8_t *out);
    char *(*row_columns_json)(const sl_row *row);           /* text_free() it */
    char *(*row_column_json)(const sl_row *row, const char *name); /* text_free() it */
    const char *(*row_column_string)(const sl_row *row, const char *name);
    sl_status (*row_set_column_json)(sl_row *row, const char *name, const char *json);
    sl_status (*row_set_column_string)(sl_row *row, const char *name, const char *text);
    sl_status (*row_emit)(sl_row *parent, sl_row **child);
    /* Appended later: check with SL_PLUGIN_HOST_HAS(host, field) first. */
    /* Tasks, several answers and log-probabilities (sluice/pipeline.h:
     * sl_pipeline_row_task_answer ... sl_pipeline_row_logprobs). */
    const char *(*row_task_answer)(const sl_row *row, const char *task);
    sl_status (*row_set_task_answer)(sl_row *row, const char *task, const char *text);
    int (*row_answer_count)(const sl_row *row);
    const char *(*row_answer_at)(const sl_row *row, int k);
    const char *(*row_logprobs)(const sl_row *row, const char *task);
    /* A video's frames taken and duration (sl_pipeline_row_video). */
    bool (*row_video)(const sl_row *row, int *frames, double *seconds);
    /* A row's listed images (sl_pipeline_row_image_count). */
    int (*row_image_count)(const sl_row *row);
    /* Choice scores (sl_pipeline_row_scores). */
    const char *(*row_scores)(const sl_row *row, const char *task);
} sl_plugin_host;

/* Whether the host's table has `field` (a host older than the header the
 * plugin was built with may lack functions appended since). */
#define SL_PLUGIN_HOST_HAS(host, field)                                                       \
    ((host)->size >= offsetof(sl_plugin_host, field) + sizeof((host)->field))

typedef struct sl_plugin {
    uint32_t abi_version; /* SL_PLUGIN_ABI_VERSION: first, so any version can be read */
    const char *name;     /* for messages; may be NULL */
    /* Optional: once per worker (0 .. workers-1), on the worker's thread.
     * config_json is the stage's config, a JSON object's text ("{}" when
     * none), valid until close() returns. *state goes to process() and
     * close(). A non-OK return (with host->fail) stops the run before any
     * row is read. */
    sl_status (*init)(const sl_plugin_host *host, const char *config_json, int worker,
                      void **state);
    /* Required: n rows in place (n <= the stage's batch size). Fail one row
     * with host->row_fail (it is written with its error, class "stage"),
     * drop one with host->row_drop. A non-OK return fails the batch's rows
     * and ends the run. */
    sl_status (*process)(void *state, sl_row *const *rows, size_t n);
    /* Optional: once per worker that init() started, whatever ended the run. */
    void (*close)(void *state, sl_exec_end end);
} sl_plugin;

/* The entry a plugin defines (with SL_PLUGIN_EXPORT, so a build with hidden
 * visibility still exports it):
 *
 *   SL_PLUGIN_EXPORT const sl_plugin *sluice_plugin(void)
 *   {
 *       static const sl_plugin p = {SL_PLUGIN_ABI_VERSION, "tags", init, process, close};
 *       return &p;
 *   }
 */
typedef const sl_plugin *(*sl_plugin_entry_fn)(void);
#if defined(__GNUC__)
#define SL_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define SL_PLUGIN_EXPORT
#endif

/* --- loading a plugin into a program's pipeline ----------------------------------- */

typedef struct sl_plugin_stage sl_plugin_stage;

/* Loads the plugin at `path` (dlopen, its own symbols kept to itself) with
 * the stage config `config_json` (a JSON object's text; NULL: "{}").
 * SL_ERR_INVALID_ARG naming the file for a file that does not load, no
 * SL_PLUGIN_ENTRY, another ABI version, no process(), a config that is not a
 * JSON object; SL_ERR_NOMEM. */
sl_status sl_plugin_stage_open(const char *path, const char *config_json,
                               sl_plugin_stage **out);
/* Fills params' config, init, process and close (name, workers, batch size
 * and columns are the caller's) for sl_pipeline_add_stage(). They point into
 * `ps`, which must outlive the pipeline. */
void sl_plugin_stage_params(const sl_plugin_stage *ps, sl_pipeline_stage_params *params);
/* The name the plugin gives itself (NULL when none). */
const char *sl_plugin_stage_name(const sl_plugin_stage *ps);
/* Unloads the plugin (dlclose): after sl_pipeline_free(). Accepts NULL. */
void sl_plugin_stage_free(sl_plugin_stage *ps);

#ifdef __cplusplus
}
#endif
#endif
