/* core/log.c — the process-wide log sink. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <pthread.h>

#include "core/log.h"
#include "core/redact.h"

static atomic_int min_level = SL_LOG_WARN;
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_log_fn sink_fn;
static void *sink_user;
/* This thread is inside the callback, holding sink_lock: what the callback
 * calls of ours must not take the lock again (a deadlock). */
static _Thread_local bool in_sink;

void sl_log_set_level(sl_log_level level) { atomic_store(&min_level, (int)level); }

sl_log_level sl_log_get_level(void) { return (sl_log_level)atomic_load(&min_level); }

void sl_log_set_callback(sl_log_fn fn, void *user)
{
    if (in_sink) { /* from the callback: the lock is this thread's already */
        sink_fn = fn;
        sink_user = user;
        return;
    }
    pthread_mutex_lock(&sink_lock);
    sink_fn = fn;
    sink_user = user;
    pthread_mutex_unlock(&sink_lock);
}

static void to_stderr(sl_log_level level, const char *line)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    fprintf(stderr, "sluice: %s: %s\n", names[level], line);
}

void sl_log(sl_log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&min_level))
        return;
    char text[2048], line[sizeof text];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sl_redact_urls(text, line, sizeof line); /* a URL without its secrets */

    if (in_sink) { /* a line the callback caused: not back into it (no loop) */
        to_stderr(level, line);
        return;
    }
    pthread_mutex_lock(&sink_lock);
    if (sink_fn) {
        in_sink = true;
        sink_fn(level, line, sink_user);
        in_sink = false;
    } else {
        to_stderr(level, line);
    }
    pthread_mutex_unlock(&sink_lock);
}
