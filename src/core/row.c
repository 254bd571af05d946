/* core/row.c — row accessors for stages. */
#include <stdarg.h>
#include <stdio.h>

#include "core/alloc.h"
#include "core/redact.h"
#include "core/row.h"

uint64_t sl_row_seq(const sl_row *row) { return row->seq; }
void *sl_row_data(const sl_row *row) { return row->data; }
size_t sl_row_bytes(const sl_row *row) { return (size_t)row->bytes; }
bool sl_row_failed(const sl_row *row) { return row->error != NULL; }
bool sl_row_dropped(const sl_row *row) { return row->dropped; }

void sl_row_drop(sl_row *row)
{
    if (!row->error && !row->dropped) { /* a failed row keeps its error to be written */
        row->dropped = true;
        row->mark_stage = row->stage ? row->stage : "unknown";
    }
}
bool sl_row_deferred(const sl_row *row) { return row->deferred; }

void sl_row_defer(sl_row *row)
{
    if (row->error || row->dropped || row->deferred)
        return; /* a failed row keeps its error to be written; a dropped one is done */
    row->deferred = true;
    row->mark_stage = row->stage ? row->stage : "unknown";
    if (row->group) /* the input is not done while one of its rows is not */
        atomic_store(&row->group->deferred, true);
}

unsigned sl_row_copy_index(const sl_row *row) { return row->copy; }
bool sl_row_in_group(const sl_row *row) { return row->group != NULL; }
/* A deferred row's input is not complete, nor is one of a group with a
 * deferred row: a group's rows all pass the stages that may defer one
 * before the last reaches the sink, so the flag is final by then. */
bool sl_row_completes_input(const sl_row *row)
{
    return row->completes_input && !row->deferred &&
           !(row->group && atomic_load(&row->group->deferred));
}

const char *sl_row_error(const sl_row *row) { return row->error; }
const char *sl_row_error_stage(const sl_row *row) { return row->error ? row->mark_stage : NULL; }
sl_status sl_row_error_status(const sl_row *row) { return row->error ? row->error_status : SL_OK; }

void sl_row_set_data(sl_row *row, void *data, void (*free_data)(void *data))
{
    if (row->data && row->data != data && row->free_data)
        row->free_data(row->data);
    row->data = data;
    row->free_data = free_data;
}

void sl_row_set_bytes(sl_row *row, size_t bytes)
{
    uint64_t old = row->bytes;
    row->bytes = bytes;
    if (row->exec && old != bytes)
        sl_exec_row_bytes_changed(row->exec, row, old);
}

static void row_vfail(sl_row *row, sl_status status, const char *fmt, va_list ap)
{
    if (row->error)
        return; /* the first cause is the one worth reporting */
    /* The whole message, however long: an invalid answer's error holds
     * the answer (bounded by max_tokens). */
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    row->error = n >= 0 ? sl_malloc((size_t)n + 1) : NULL;
    if (row->error)
        vsnprintf(row->error, (size_t)n + 1, fmt, again);
    va_end(again);
    if (!row->error)
        row->error = sl_strdup("out of memory recording the error");
    /* A URL's password and signature stay out of the row (core/redact.h). */
    if (row->error && sl_redact_needed(row->error)) {
        char *shown = sl_redact_dup(row->error);
        if (shown) {
            sl_free(row->error);
            row->error = shown;
        } else {
            row->error[0] = '\0'; /* never the secret: the cause is lost instead */
        }
    }
    row->mark_stage = row->stage ? row->stage : "unknown";
    row->error_status = status;
}

void sl_row_fail(sl_row *row, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    row_vfail(row, SL_ERR_STAGE, fmt, ap);
    va_end(ap);
}

void sl_row_fail_status(sl_row *row, sl_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    row_vfail(row, status == SL_OK ? SL_ERR_STAGE : status, fmt, ap);
    va_end(ap);
}
