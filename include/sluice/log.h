/* sluice/log.h — where sluice's (and llama.cpp's) log lines go.
 *
 * By default lines at or above SL_LOG_WARN go to stderr. A callback replaces
 * that sink for the whole process; it may be called from any thread, so it
 * must be thread-safe, one line at a time. Set it before starting work. It
 * may call sluice, sl_log_set_callback() included; a line logged from
 * inside it goes to stderr, not back to it. Once sl_log_set_callback()
 * returns, the callback it replaced is not running on another thread.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sl_log_level {
    SL_LOG_DEBUG = 0,
    SL_LOG_INFO,
    SL_LOG_WARN,
    SL_LOG_ERROR,
} sl_log_level;

typedef void (*sl_log_fn)(sl_log_level level, const char *message, void *user);

/* Lines below `level` are dropped before formatting. */
void sl_log_set_level(sl_log_level level);
sl_log_level sl_log_get_level(void);
/* NULL restores the stderr sink. */
void sl_log_set_callback(sl_log_fn fn, void *user);

#ifdef __cplusplus
}
#endif
#endif
