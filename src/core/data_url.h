/* core/data_url.h — bytes as a "data:MIME;base64,..." URL: how an image
 * travels inside a JSON request (the openai engine's image_url parts, a
 * batch line's local image made inline). The caller frees the text with
 * sl_free(). */
#ifndef SL_CORE_DATA_URL_H
#define SL_CORE_DATA_URL_H

#include <stddef.h>
#include <stdint.h>

/* NULL when out of memory (or absurdly long); *out_len (optional) is its
 * length. mime NULL: image/jpeg. */
char *sl_data_url(const uint8_t *data, size_t len, const char *mime, size_t *out_len);

#endif
