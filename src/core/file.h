/* core/file.h — reading a whole file into memory (image files, kept image
 * bytes). The caller frees *data with sl_free(). */
#ifndef SL_CORE_FILE_H
#define SL_CORE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/status.h"

/* SL_ERR_NOT_FOUND / SL_ERR_IO / SL_ERR_NOMEM with a message that names
 * `path` and the cause. On failure *data is NULL. */
sl_status sl_read_file(const char *path, uint8_t **data, size_t *len);

#endif
