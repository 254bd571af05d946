/* sluice/image.h — decoded images: 8-bit sRGB, 3 channels, row-major.
 *
 * Decoding (libjpeg-turbo for plain JPEGs, libvips for the rest; see
 * docs/images.md) reads from memory or a file, recognises the format by
 * content (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF; others are refused),
 * refuses images over max_input_pixels from the header, applies EXIF
 * orientation, takes the first frame of an animation, flattens alpha onto a
 * background, converts any colour space, profile and depth to 8-bit sRGB,
 * and shrinks on load so the longer edge is at most max_edge.
 * An sl_image is immutable once made and may be shared between threads.
 * The caller owns every sl_image it receives and frees it with
 * sl_image_free().
 */
#ifndef SLUICE_IMAGE_H
#define SLUICE_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_image sl_image;

typedef struct sl_image_params {
    int max_edge;            /* longer edge after decode; 0 keeps the size */
    uint64_t max_input_pixels; /* width*height read from the header; larger fails */
    uint8_t background[3];   /* alpha is flattened onto this RGB colour */
    uint64_t max_file_bytes; /* sl_image_load_file: a larger file fails before it is read
                                (256 MiB); 0: no limit */
    int max_aspect_ratio;    /* longer side over shorter, from the header; more fails
                                (200, Qwen2-VL's limit; a strip shrunk to max_edge has a
                                side a preprocessor resizes to 0); 0: no limit */
} sl_image_params;

sl_image_params sl_image_default_params(void);

/* Start libvips, once per process; the first decode does it too. libvips
 * writes VIPSHOME into the environment as it starts, and setenv may free
 * the array a getenv on another thread is reading: a program that decodes
 * on threads while others read the environment (curl does, each transfer)
 * calls this before starting them. sl_pipeline_run does. SL_ERR_DECODE
 * with libvips' message when it cannot start. */
sl_status sl_image_init(void);

/* Decode `len` bytes. `name` names the input in error messages. On failure
 * *out is NULL and the message names `name` and the cause. An image its
 * decoder must hold whole (a progressive JPEG, an interlaced PNG, a GIF,
 * a HEIF/AVIF) over 16 MiB waits while other threads' such decodes hold 256 MiB
 * (docs/images.md, Memory). */
sl_status sl_image_decode(const void *data, size_t len, const char *name,
                          const sl_image_params *params, sl_image **out);

/* Read the regular file at `path` and decode it. A file of more than
 * params->max_file_bytes fails from its size before it is read:
 * SL_ERR_TOO_LARGE, "'PATH' is N bytes, over the limit of M bytes" (a
 * caller may add the setting behind M). SL_ERR_NOT_FOUND, SL_ERR_IO (not a
 * regular file, a read error), SL_ERR_DECODE and SL_ERR_NOMEM name `path`
 * and the cause. NULL params: sl_image_default_params(). */
sl_status sl_image_load_file(const char *path, const sl_image_params *params,
                             sl_image **out);

/* Make an image from packed RGB pixels (copied). */
sl_status sl_image_from_rgb(int width, int height, const uint8_t *rgb, sl_image **out);

int sl_image_width(const sl_image *image);
int sl_image_height(const sl_image *image);
/* width*height*3 bytes, valid until sl_image_free(). */
const uint8_t *sl_image_pixels(const sl_image *image);
/* Bytes held by the image (pixels and header), for memory accounting. */
size_t sl_image_bytes(const sl_image *image);
/* Size as read from the file header, before orientation and shrinking. */
int sl_image_source_width(const sl_image *image);
int sl_image_source_height(const sl_image *image);

/* Encode as baseline JPEG (libjpeg-turbo, 4:2:0 chroma), shrunk first
 * (bicubic) so the longer edge is at most max_edge (0: keep the size), at
 * quality 1..100. On success *out is a
 * buffer of *len bytes the caller frees with sl_image_buffer_free(). Used
 * for HTTP engine requests and for gallery thumbnails. */
sl_status sl_image_encode_jpeg(const sl_image *image, int max_edge, int quality,
                               uint8_t **out, size_t *len);
void sl_image_buffer_free(uint8_t *buffer);

void sl_image_free(sl_image *image);

#ifdef __cplusplus
}
#endif
#endif
