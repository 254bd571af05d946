/* sluice/status.h — the one status enum and the per-thread error message.
 *
 * Every fallible sl_* call returns sl_status (SL_OK = 0). On failure it also
 * stores a human message naming the input and the cause in a thread-local
 * buffer, readable with sl_last_error() until the next failing call on the
 * same thread. The string is owned by sluice; copy it to keep it.
 */
#ifndef SLUICE_STATUS_H
#define SLUICE_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sl_status {
    SL_OK = 0,
    SL_ERR_INVALID_ARG,   /* a wrong parameter: the caller must change it */
    SL_ERR_NOMEM,         /* an allocation failed */
    SL_ERR_IO,            /* a read, write or rename failed */
    SL_ERR_NOT_FOUND,     /* a named file or directory does not exist */
    SL_ERR_DECODE,        /* an input could not be decoded (corrupt, unsupported) */
    SL_ERR_MODEL,         /* a model or projector could not be loaded */
    SL_ERR_ENGINE,        /* inference failed for one request */
    SL_ERR_TOO_LONG,      /* a request does not fit in the engine's context */
    SL_ERR_EXISTS,        /* output would overwrite something that exists */
    SL_ERR_STOPPED,       /* a stop was requested (signal); finished work is kept */
    SL_ERR_STAGE,         /* a pipeline stage failed beyond its restarts */
    SL_ERR_TOO_MANY_FAILED, /* more rows failed than --max-failed allows */
    SL_ERR_TOO_LARGE,     /* an input passes a size limit (pixels, download bytes) */
    SL_ERR_INVALID_OUTPUT, /* an answer is not what the request asked for: not JSON, or
                              not matching its JSON schema */
    SL_ERR_BUSY,          /* the output is in use by another run: the same call can
                             succeed once that run ends */
} sl_status;

/* Short stable name of a status ("ok", "invalid_arg", ...); never NULL. */
const char *sl_status_name(sl_status status);

/* The failure class of a status, for counting failed rows by cause: one of
 * "not_found", "io", "decode", "too_large", "engine", "memory", "stopped",
 * "stage", "invalid", "invalid_output", "other" ("none" for SL_OK). A small fixed set, so a
 * metric labelled with it stays small. */
const char *sl_status_class(sl_status status);

/* Message of the last failure on this thread; "" when none. */
const char *sl_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
