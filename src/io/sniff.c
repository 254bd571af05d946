/* io/sniff.c — see sniff.h: one table of image magic numbers (the decode
 * stage names formats by it, the WebDataset sink extensions); video
 * containers are told apart only after sluice/video.h's sniff said video. */
#include <stdbool.h>
#include <string.h>

#include "io/sniff.h"
#include "sluice/video.h"

static const struct {
    size_t at;
    const char *magic;
    size_t len;
    const char *format, *ext;
} images[] = {
    {0, "\xFF\xD8\xFF", 3, "jpeg", "jpg"}, {0, "\x89PNG\r\n\x1a\n", 8, "png", "png"},
    {8, "WEBP", 4, "webp", "webp"},        {0, "GIF8", 4, "gif", "gif"},
    {0, "II*\0", 4, "tiff", "tif"},        {0, "MM\0*", 4, "tiff", "tif"},
    {0, "BM", 2, "bmp", "bmp"},            {8, "avif", 4, "avif", "avif"},
    {8, "heic", 4, "heif", "heic"},        {8, "heix", 4, "heif", "heic"},
    {8, "mif1", 4, "heif", "heic"},        {0, "\xFF\x0A", 2, "jxl", "jxl"},
    {4, "JXL ", 4, "jxl", "jxl"},
};

static int image_index(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < sizeof images / sizeof *images; i++)
        if (n >= images[i].at + images[i].len &&
            memcmp(d + images[i].at, images[i].magic, images[i].len) == 0)
            return (int)i;
    return -1;
}

const char *sl_sniff_image_format(const uint8_t *d, size_t n)
{
    int i = image_index(d, n);
    return i < 0 ? NULL : images[i].format;
}

static bool has_at(const uint8_t *d, size_t n, size_t at, const char *magic, size_t len)
{
    return n >= at + len && memcmp(d + at, magic, len) == 0;
}

/* Which container a video's bytes are (sl_video_sniff said video): ISO
 * media by its brand, Matroska by the DocType in its EBML header (within
 * the first 64 bytes), an old QuickTime file by its first atom. */
static const char *video_extension(const uint8_t *d, size_t n)
{
    if (has_at(d, n, 4, "ftyp", 4))
        return has_at(d, n, 8, "qt  ", 4) ? "mov" : "mp4";
    if (has_at(d, n, 0, "\x1A\x45\xDF\xA3", 4)) {
        size_t head = n < 64 ? n : 64;
        for (size_t i = 4; i + 4 <= head; i++)
            if (memcmp(d + i, "webm", 4) == 0)
                return "webm";
        return "mkv";
    }
    if (has_at(d, n, 0, "RIFF", 4))
        return "avi";
    static const char *const atoms[] = {"moov", "mdat", "wide", "free", "skip", "pnot"};
    for (size_t i = 0; i < sizeof atoms / sizeof *atoms; i++)
        if (has_at(d, n, 4, atoms[i], 4))
            return "mov";
    return "ts";
}

const char *sl_sniff_extension(const uint8_t *d, size_t n)
{
    int i = image_index(d, n);
    if (i >= 0)
        return images[i].ext;
    return sl_video_sniff(d, n) ? video_extension(d, n) : "bin";
}
