/* io/sniff.h — what encoded bytes are, from their first bytes (magic
 * numbers), nothing decoded: an image's format, and the file extension a
 * file of those bytes takes (the WebDataset sink names its image members by
 * it). Stateless: any thread. Returned strings are static. */
#ifndef SL_IO_SNIFF_H
#define SL_IO_SNIFF_H

#include <stddef.h>
#include <stdint.h>

/* The image format of d[0..n): "jpeg", "png", "webp", "gif", "tiff", "bmp",
 * "avif", "heif" or "jxl"; NULL for anything else (a video among them). */
const char *sl_sniff_image_format(const uint8_t *d, size_t n);

/* The extension (no dot) for a file of d[0..n): an image's "jpg", "png",
 * "webp", "gif", "tif", "bmp", "avif", "heic", "jxl"; a video container's
 * (sluice/video.h reads it) "mp4", "mov", "webm", "mkv", "avi", "ts"; else
 * "bin". */
const char *sl_sniff_extension(const uint8_t *d, size_t n);

#endif
