/* core/error.h — setting the thread-local error message behind sl_last_error().
 * sl_fail() formats the message, logs nothing, and returns its status so a
 * failing path reads `return sl_fail(SL_ERR_IO, "...", ...);`. */
#ifndef SL_CORE_ERROR_H
#define SL_CORE_ERROR_H

#include "sluice/status.h"

#if defined(__GNUC__)
#define SL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SL_PRINTF(a, b)
#endif

sl_status sl_fail(sl_status status, const char *fmt, ...) SL_PRINTF(2, 3);
void sl_clear_error(void);

#endif
