/* llm/engines/image_cache.h — the vision encoder's outputs for the images
 * seen lately, so that an image asked about again (a dataset's several
 * questions of one picture, --turns all's questions, the same file in two
 * rows) is not encoded again: llama.cpp's encoder is the costliest step of
 * a short answer on a CPU.
 *
 * An image is named by sl_image_cache_id(): its size and the SHA-256 of its
 * pixels (a collision would hand one image's embeddings to another, so not
 * a fast hash). mtmd gives one image several chunks on some models (tiles):
 * an entry is the id, the chunk's place among that image's chunks and its
 * length. Least recently used entries go once the copies pass max_bytes.
 *
 * Thread-safe: the engine's encoder thread and its decode thread both use
 * one. The cache owns its copies; a hit is copied out to the caller, who
 * frees it (sl_free). */
#ifndef SL_LLM_IMAGE_CACHE_H
#define SL_LLM_IMAGE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/status.h"

typedef struct sl_image_cache sl_image_cache;

/* "WxH-<64 hex>" into id (at least SL_IMAGE_CACHE_ID bytes). False when
 * OpenSSL fails (then the image is not cached). */
#define SL_IMAGE_CACHE_ID 96
bool sl_image_cache_id(const uint8_t *rgb, uint32_t width, uint32_t height, char *id);

/* max_bytes 0: *out NULL, a cache that keeps nothing (every call below
 * takes NULL). */
sl_status sl_image_cache_new(size_t max_bytes, sl_image_cache **out);
void sl_image_cache_free(sl_image_cache *cache);

/* A copy of chunk `part` of image `id`, n_floats long, or NULL (not kept,
 * or no memory). Counts a query, and a hit. */
float *sl_image_cache_get(sl_image_cache *cache, const char *id, int part, size_t n_floats);

/* Keeps a copy of embd (nothing when it alone passes max_bytes, or on no
 * memory), making room by dropping the least recently used. */
void sl_image_cache_put(sl_image_cache *cache, const char *id, int part, const float *embd,
                        size_t n_floats);

void sl_image_cache_counts(const sl_image_cache *cache, uint64_t *queries, uint64_t *hits,
                           size_t *bytes);

#endif
