/* core/status.c — status names and the thread-local error message. */
#include <stdarg.h>
#include <stdio.h>

#include "sluice/sluice.h"
#include "core/error.h"
#include "core/redact.h"
#include "build_id.h" /* SL_BUILD_ID, written at every build (cmake/build_id.cmake) */

/* Room for a message naming two long URLs and the cause after them: a
 * presigned URL with a session token passes 1.5 KB before its secrets are
 * hidden, an S3 key may be 1 KB; at 1 KB the cause was cut off. */
static _Thread_local char last_error[4096];

const char *sl_status_name(sl_status status)
{
    switch (status) {
    case SL_OK: return "ok";
    case SL_ERR_INVALID_ARG: return "invalid_arg";
    case SL_ERR_NOMEM: return "nomem";
    case SL_ERR_IO: return "io";
    case SL_ERR_NOT_FOUND: return "not_found";
    case SL_ERR_DECODE: return "decode";
    case SL_ERR_MODEL: return "model";
    case SL_ERR_ENGINE: return "engine";
    case SL_ERR_TOO_LONG: return "too_long";
    case SL_ERR_EXISTS: return "exists";
    case SL_ERR_STOPPED: return "stopped";
    case SL_ERR_STAGE: return "stage";
    case SL_ERR_TOO_MANY_FAILED: return "too_many_failed";
    case SL_ERR_TOO_LARGE: return "too_large";
    case SL_ERR_INVALID_OUTPUT: return "invalid_output";
    case SL_ERR_BUSY: return "busy";
    }
    return "unknown";
}

const char *sl_status_class(sl_status status)
{
    switch (status) {
    case SL_OK: return "none";
    case SL_ERR_NOT_FOUND: return "not_found";
    case SL_ERR_IO:
    case SL_ERR_EXISTS:
    case SL_ERR_BUSY: return "io";
    case SL_ERR_DECODE: return "decode";
    case SL_ERR_TOO_LONG:
    case SL_ERR_TOO_LARGE: return "too_large";
    case SL_ERR_MODEL:
    case SL_ERR_ENGINE: return "engine";
    case SL_ERR_NOMEM: return "memory";
    case SL_ERR_STOPPED: return "stopped";
    case SL_ERR_STAGE:
    case SL_ERR_TOO_MANY_FAILED: return "stage";
    case SL_ERR_INVALID_ARG: return "invalid";
    case SL_ERR_INVALID_OUTPUT: return "invalid_output";
    }
    return "other";
}

const char *sl_last_error(void) { return last_error; }

void sl_clear_error(void) { last_error[0] = '\0'; }

sl_status sl_fail(sl_status status, const char *fmt, ...)
{
    /* Formatted aside first: callers pass sl_last_error() as an argument.
     * A URL in the message is shown without its secrets (core/redact.h):
     * every error message passes here or through sl_row_fail. */
    char text[2 * sizeof last_error]; /* hiding secrets shortens it */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sl_redact_urls(text, last_error, sizeof last_error);
    return status;
}

const char *sl_version(void) { return SL_VERSION; }

const char *sl_build_id(void) { return SL_BUILD_ID; }
