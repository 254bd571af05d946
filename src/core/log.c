/* core/log.c — the process-wide log sink. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <pthread.h>

#include "core/log.h"
#include "core/redact.h"

static atomic_int min_level = SL_LOG_WARN;
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_log_fn sink_fn;
static void *sink_user;

void sl_log_set_level(sl_log_level level) { atomic_store(&min_level, (int)level); }

sl_log_level sl_log_get_level(void) { return (sl_log_level)atomic_load(&min_level); }

void sl_log_set_callback(sl_log_fn fn, void *user)
{
    pthread_mutex_lock(&sink_lock);
    sink_fn = fn;
    sink_user = user;
    pthread_mutex_unlock(&sink_lock);
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

    static const char *const names[] = {"debug", "info", "warn", "error"};
    pthread_mutex_lock(&sink_lock);
    if (sink_fn)
        sink_fn(level, line, sink_user);
    else
        fprintf(stderr, "sluice: %s: %s\n", names[level], line);
    pthread_mutex_unlock(&sink_lock);
}
