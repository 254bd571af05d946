/* core/log.h — sl_log(): formats a line and hands it to the sink chosen
 * through sluice/log.h. Thread-safe. */
#ifndef SL_CORE_LOG_H
#define SL_CORE_LOG_H

#include "core/error.h"
#include "sluice/log.h"

void sl_log(sl_log_level level, const char *fmt, ...) SL_PRINTF(2, 3);

#endif
