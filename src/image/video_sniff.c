/* image/video_sniff.c — recognising a video by its first bytes or its name,
 * and the default parameters: what sluice/video.h says without FFmpeg, so a
 * build without it (cmake -DSLUICE_VIDEO=OFF: image/video_none.c) still
 * tells a video from an image and fails its row saying why. */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "image/video_impl.h"
#include "sluice/video.h"

sl_video_params sl_video_default_params(void)
{
    return (sl_video_params){
        .max_frames = 8,
        .fps = 1.0,
        .image = sl_image_default_params(),
        .max_decoded_frames = 20000,
    };
}

/* --- recognising the container -------------------------------------------- */

/* ISO-BMFF major brands of still images (HEIF, AVIF, and their image
 * sequences, which sluice/image.h reads as images) and of camera raws. Any
 * other brand is a movie: the list of movie brands is long and open
 * (isom, mp41, qt, 3gp5, dash, XAVC, ...), the list of image brands short. */
static const char image_brands[][5] = {
    "avif", "avis", "avio", "heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs",
    "mif1", "mif2", "msf1", "miaf", "avci", "avcs", "jpeg", "jpgs", "crx ",
};

/* The first atoms of a QuickTime file written before 'ftyp' existed. */
static const char qt_atoms[][5] = {"moov", "mdat", "wide", "free", "skip", "pnot"};

static bool is_image_brand(const uint8_t *brand)
{
    for (size_t i = 0; i < sizeof image_brands / sizeof *image_brands; i++)
        if (memcmp(brand, image_brands[i], 4) == 0)
            return true;
    return false;
}

/* Matroska's EBML header names its DocType ("webm" or "matroska") within
 * its first few dozen bytes: element 0x4282, size 0x84, four letters. */
static bool ebml_says_webm(const uint8_t *p, size_t len)
{
    size_t end = len < 64 ? len : 64;
    for (size_t i = 4; i + 7 <= end; i++)
        if (p[i] == 0x42 && p[i + 1] == 0x82 && p[i + 2] == 0x84 &&
            memcmp(p + i + 3, "webm", 4) == 0)
            return true;
    return false;
}

bool video_detect(const uint8_t *p, size_t len, video_container *out)
{
    if (len >= 12 && memcmp(p + 4, "ftyp", 4) == 0) {
        if (is_image_brand(p + 8))
            return false;
        *out = (video_container){"mov", memcmp(p + 8, "qt  ", 4) == 0 ? "mov" : "mp4"};
        return true;
    }
    if (len >= 8)
        for (size_t i = 0; i < sizeof qt_atoms / sizeof *qt_atoms; i++)
            if (memcmp(p + 4, qt_atoms[i], 4) == 0) {
                *out = (video_container){"mov", "mov"};
                return true;
            }
    if (len >= 4 && p[0] == 0x1A && p[1] == 0x45 && p[2] == 0xDF && p[3] == 0xA3) {
        *out = (video_container){"matroska", ebml_says_webm(p, len) ? "webm" : "matroska"};
        return true;
    }
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "AVI ", 4) == 0) {
        *out = (video_container){"avi", "avi"};
        return true;
    }
    /* MPEG-TS: sync bytes; a packet's adaptation field control is never 0
     * (which also turns away "GIF8": a GIF starts with the sync byte 'G').
     * Its 4-byte header at least: a shorter file is no packet. */
    if (len >= 4 && p[0] == 0x47 && (p[3] & 0x30) != 0 && memcmp(p, "GIF8", 4) != 0) {
        for (size_t at = 188; at < len && at <= 3 * 188; at += 188)
            if (p[at] != 0x47)
                return false;
        *out = (video_container){"mpegts", "mpegts"};
        return true;
    }
    return false;
}

bool sl_video_sniff(const void *data, size_t len)
{
    video_container c;
    return data && video_detect(data, len, &c);
}

bool sl_video_path_is_video(const char *path)
{
    static const char *const exts[] = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts"};
    if (!path)
        return false;
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/'))
        return false;
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
        if (strcasecmp(dot, exts[i]) == 0)
            return true;
    return false;
}
