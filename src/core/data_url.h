/* core/data_url.h — bytes as a "data:MIME;base64,..." URL: how an image
 * travels inside a JSON request (the openai engine's image_url parts, a
 * batch line's local image made inline, a video's frames for vLLM). The caller frees the text with
 * sl_free(). */
#ifndef SL_CORE_DATA_URL_H
#define SL_CORE_DATA_URL_H

#include <stddef.h>
#include <stdint.h>

/* NULL when out of memory (or absurdly long); *out_len (optional) is its
 * length. mime NULL: image/jpeg. */
char *sl_data_url(const uint8_t *data, size_t len, const char *mime, size_t *out_len);

/* Several payloads in one URL, each in base64, joined by commas after one
 * head: vLLM's form of a video given as its frames
 * ("data:video/jpeg;base64,FRAME1,FRAME2,..."). n_parts >= 1; NULL as
 * above. */
char *sl_data_url_parts(const uint8_t *const *data, const size_t *len, int n_parts,
                        const char *mime, size_t *out_len);

#endif
