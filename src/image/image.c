/* image/image.c — every image decoder call in sluice lives here.
 *
 * Two paths, both checking width*height from the header against
 * max_input_pixels before any pixel is allocated (a decompression bomb
 * fails as a row error):
 *
 * - JPEG in YCbCr, RGB or grayscale without an ICC profile (nearly every
 *   photo): libjpeg-turbo directly, with DCT scaling to the smallest size
 *   still at least max_edge, then one libvips resize and EXIF rotation
 *   (orientation read with libexif) only when needed. libvips' own path
 *   costs about 1.5 ms of pipeline set-up and thread hand-offs per image
 *   and shrinks JPEGs on load one step less, which more than halved the
 *   throughput on small and 12-megapixel photos (bench/decode).
 * - Everything else (PNG, WebP, GIF, TIFF, HEIF/AVIF, CMYK JPEG, ICC-tagged
 *   JPEG): vips_thumbnail_buffer, which shrinks on load, applies EXIF
 *   orientation, takes the first frame of an animation, and converts CMYK
 *   and embedded profiles to sRGB; then flatten alpha, 8-bit sRGB, three
 *   bands.
 *
 * Formats are recognised by content, never by file name. Only the loaders
 * for the formats above are allowed, process-wide, at first use; libvips'
 * untrusted loaders (ImageMagick, PDF, SVG, ...) are among those blocked. */
#include <ctype.h>
#include <setjmp.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>
#include <libexif/exif-data.h>
#include <vips/vips.h>
#include <vips/vector.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "sluice/image.h"

struct sl_image {
    int width, height;
    int source_width, source_height;
    uint8_t *pixels;      /* width*height*3; from g_malloc or sl_malloc */
    bool pixels_from_vips;
};

/* Base classes: the buffer, file and source variants of each are allowed. */
static const char *const allowed_loaders[] = {
    "VipsForeignLoadJpeg", "VipsForeignLoadPng",  "VipsForeignLoadWebp",
    "VipsForeignLoadNsgif", "VipsForeignLoadTiff", "VipsForeignLoadHeif",
};

static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
static int vips_ready;

/* libvips' loaders say what they make of a damaged file with g_warning
 * ("chunk data is too large", "not enough data"): raw lines on stderr, -q or
 * not, naming no file, several a file, while the row's own failure already
 * names the file and libvips' error. They go to the log's debug level. */
static void vips_warning(const gchar *domain, GLogLevelFlags level, const gchar *message,
                         gpointer user)
{
    (void)level;
    (void)user;
    sl_log(SL_LOG_DEBUG, "%s: %s", domain ? domain : "libvips", message);
}

static void init_vips(void)
{
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO,
                      vips_warning, NULL);
    if (VIPS_INIT("sluice") != 0) {
        sl_log(SL_LOG_ERROR, "libvips failed to start: %s", vips_error_buffer());
        return;
    }
    /* An allow-list: a loader that a newer libvips adds or marks trusted
     * stays off until it is named here. Untrusted ones are blocked last so
     * that allowing a family never lets one of them back in. */
    vips_operation_block_set("VipsForeignLoad", TRUE);
    for (size_t i = 0; i < sizeof allowed_loaders / sizeof *allowed_loaders; i++)
        vips_operation_block_set(allowed_loaders[i], FALSE);
    vips_block_untrusted_set(TRUE);
    /* Each image is decoded once; the operation cache would only hold
     * memory. */
    vips_cache_set_max(0);
    /* No ORC: libvips compiles an ORC program for each vertical resize and
     * frees it with the operation, and the liborc that Debian 12 ships
     * (0.4.33) frees code memory without its lock, so resizes in parallel
     * decode workers corrupt ORC's chunk list and crash (seen as SIGSEGV
     * in orc_code_chunk_free). libvips' C path has no shared state. */
    vips_vector_set_enabled(FALSE);
    /* Parallelism is one image per decode worker (--decode-workers); libvips
     * worker threads inside each would compete with those and with the
     * engine's threads. VIPS_CONCURRENCY, when set, still wins. */
    if (!getenv("VIPS_CONCURRENCY"))
        vips_concurrency_set(1);
    vips_ready = 1;
}

sl_image_params sl_image_default_params(void)
{
    return (sl_image_params){
        .max_edge = 512,
        .max_input_pixels = 100000000ULL,
        .background = {255, 255, 255},
        .max_file_bytes = 256u << 20,
        .max_aspect_ratio = 200,
    };
}

/* The format a libvips loader class reads, in words: "VipsForeignLoadSvgBuffer"
 * is "SVG"; the magick loader reads whatever ImageMagick does (TGA, BMP,
 * PSD, ...), which says nothing of the file. Into out (size n). */
static void loader_format(const char *loader, char *out, size_t n)
{
    const char *f = strncmp(loader, "VipsForeignLoad", 15) == 0 ? loader + 15 : loader;
    size_t len = strlen(f);
    for (const char *suffix[] = {"Buffer", "Source", "File"}, **x = suffix; x < suffix + 3; x++) {
        size_t sl = strlen(*x);
        if (len > sl && strcmp(f + len - sl, *x) == 0) {
            len -= sl;
            break;
        }
    }
    if (strncmp(f, "Magick", 6) == 0) {
        snprintf(out, n, "a format only ImageMagick reads, such as TGA, BMP or PSD");
        return;
    }
    size_t k = 0;
    for (; k < len && k + 1 < n; k++)
        out[k] = (char)toupper((unsigned char)f[k]);
    out[k] = '\0';
}

/* A libvips error as the row says it: after the plain words, libvips' own
 * detail, each line's loader class ("VipsForeignLoadPngBuffer: ...") put
 * as the format it reads ("PNG: ..."), lines joined by ';'. */
static sl_status vips_failure(sl_status status, const char *name, const char *what)
{
    char raw[512], cause[640];
    snprintf(raw, sizeof raw, "%s", vips_error_buffer());
    vips_error_clear();
    size_t o = 0;
    for (char *line = raw, *next; *line && o + 1 < sizeof cause; line = next) {
        next = line + strcspn(line, "\n");
        if (*next)
            *next++ = '\0';
        size_t cut = strcspn(line, ":");
        char format[80] = "";
        if (strncmp(line, "VipsForeignLoad", 15) == 0 && line[cut] == ':') {
            line[cut] = '\0';
            loader_format(line, format, sizeof format);
            line += cut + 1 + (line[cut + 1] == ' ');
        }
        size_t end = strlen(line);
        while (end && line[end - 1] == ' ')
            line[--end] = '\0';
        if (!end)
            continue;
        int w = snprintf(cause + o, sizeof cause - o, "%s%s%s%s", o ? "; " : "", format,
                         *format ? ": " : "", line);
        o = w < 0 ? o : o + (size_t)w >= sizeof cause ? sizeof cause - 1 : o + (size_t)w;
    }
    cause[o] = '\0';
    return sl_fail(status, "%s: %s%s%s", name, what, cause[0] ? ": " : "", cause);
}

/* Replaces *img with the output of a libvips step that wrote *next and
 * returned rc; on failure frees *img. `next` is read here, after the step's
 * call has been evaluated as an argument. */
static int step(VipsImage **img, int rc, VipsImage **next)
{
    g_object_unref(*img);
    *img = rc == 0 ? *next : NULL;
    *next = NULL;
    return rc;
}

static sl_status check_pixels(const char *name, int w, int h, const sl_image_params *params)
{
    if ((uint64_t)w * (uint64_t)h > params->max_input_pixels)
        return sl_fail(SL_ERR_TOO_LARGE,
                       "%s: %dx%d pixels exceeds the limit of %llu pixels (--max-image-pixels)",
                       name, w, h, (unsigned long long)params->max_input_pixels);
    /* From the header, before a pixel is decoded: shrunk to max_edge, a
     * 10000x1 strip is 512x1, which a vision preprocessor resizes to a
     * side of 0 and refuses in words that do not say why. */
    int lo = w < h ? w : h, hi = w < h ? h : w;
    if (params->max_aspect_ratio > 0 && lo > 0 &&
        (uint64_t)hi > (uint64_t)params->max_aspect_ratio * (uint64_t)lo)
        return sl_fail(SL_ERR_DECODE,
                       "%s: %dx%d px: aspect ratio over %d:1, too %s for a vision model to "
                       "read (crop it, or pad it nearer to square)",
                       name, w, h, params->max_aspect_ratio, w > h ? "wide" : "tall");
    return SL_OK;
}

/* Copies a finished libvips image out as an sl_image; takes the reference. */
static sl_status finish_vips(VipsImage *img, const char *name, int src_w, int src_h,
                             sl_image **out)
{
    sl_image *im = sl_calloc(1, sizeof *im);
    if (!im) {
        g_object_unref(img);
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory", name);
    }
    size_t n_bytes = 0;
    im->pixels = vips_image_write_to_memory(img, &n_bytes);
    im->pixels_from_vips = true;
    im->width = img->Xsize;
    im->height = img->Ysize;
    g_object_unref(img);
    if (!im->pixels) {
        sl_free(im);
        return vips_failure(SL_ERR_DECODE, name, "damaged or cut short (its pixels cannot "
                                                     "be decoded)");
    }
    im->source_width = src_w;
    im->source_height = src_h;
    *out = im;
    return SL_OK;
}

/* --- images a decoder holds whole ------------------------------------------- */

/* A progressive JPEG (libjpeg keeps every DCT coefficient until the last
 * scan), an interlaced PNG (libvips reads it to memory), a GIF (libnsgif
 * draws into a whole canvas) and a HEIF/AVIF (libheif decodes the whole
 * picture) cannot be streamed: at the pixel limit one costs 300-800 MB
 * while it decodes, outside the pipeline's budget, and every decode worker
 * could hold one (a 1.2 MB interlaced 16-bit PNG of 9990x9990 took a run
 * to 1 GB). Each decoder sizes that from the header it reads anyway
 * (read_jpeg, decode_vips); such decodes share this much at once, one
 * larger than it decoding alone. So does one with alpha, whose shrink
 * holds a share of it in float (held_whole). Others (baseline JPEG, plain
 * PNG, WebP, TIFF without alpha) stream and are not counted. */
#define WHOLE_BUDGET ((uint64_t)256 << 20)
/* Under this an image is not worth the lock: the workers' share stays small. */
#define WHOLE_FLOOR ((uint64_t)16 << 20)

static pthread_mutex_t whole_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t whole_cv = PTHREAD_COND_INITIALIZER;
static uint64_t whole_held;

/* Waits until `bytes` fit beside the whole-held decodes under way (or
 * none is); returns what to give back with whole_give (0: nothing taken). */
static uint64_t whole_wait(uint64_t bytes)
{
    if (bytes < WHOLE_FLOOR)
        return 0;
    pthread_mutex_lock(&whole_mu);
    while (whole_held > 0 && whole_held + bytes > WHOLE_BUDGET)
        pthread_cond_wait(&whole_cv, &whole_mu);
    whole_held += bytes;
    pthread_mutex_unlock(&whole_mu);
    return bytes;
}

static void whole_give(uint64_t bytes)
{
    if (!bytes)
        return;
    pthread_mutex_lock(&whole_mu);
    whole_held -= bytes;
    pthread_cond_broadcast(&whole_cv);
    pthread_mutex_unlock(&whole_mu);
}

/* --- JPEG: libjpeg-turbo ------------------------------------------------------ */

typedef struct jpeg_reader {
    struct jpeg_decompress_struct cinfo; /* first: libjpeg's callbacks get its address */
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    uint8_t *rgb;
    uint64_t whole; /* taken with whole_wait; given back after the longjmp target */
} jpeg_reader;

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_reader *r = (jpeg_reader *)cinfo;
    cinfo->err->format_message(cinfo, r->message);
    longjmp(r->jump, 1);
}

/* Warnings (extraneous bytes, odd markers) are tolerated as libvips'
 * fail_on=truncated does; running out of data is not: libjpeg would pad the
 * missing rows with grey and the model would caption a half-grey picture. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_reader *r = (jpeg_reader *)cinfo;
        snprintf(r->message, sizeof r->message, "the file is truncated (premature end of JPEG data)");
        longjmp(r->jump, 1);
    }
}

static jpeg_saved_marker_ptr find_marker(const struct jpeg_decompress_struct *cinfo,
                                         int marker, const char *tag, size_t tag_len)
{
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next)
        if (m->marker == marker && m->data_length >= tag_len && memcmp(m->data, tag, tag_len) == 0)
            return m;
    return NULL;
}

/* EXIF orientation 1..8 (1: as stored). */
static int exif_orientation(const struct jpeg_decompress_struct *cinfo)
{
    jpeg_saved_marker_ptr m = find_marker(cinfo, JPEG_APP0 + 1, "Exif\0\0", 6);
    if (!m)
        return 1;
    int orientation = 1;
    ExifData *exif = exif_data_new_from_data(m->data, m->data_length);
    ExifEntry *e = exif ? exif_data_get_entry(exif, EXIF_TAG_ORIENTATION) : NULL;
    if (e && e->format == EXIF_FORMAT_SHORT && e->components >= 1) {
        int v = exif_get_short(e->data, exif_data_get_byte_order(exif));
        if (v >= 1 && v <= 8)
            orientation = v;
    }
    if (exif)
        exif_data_unref(exif);
    return orientation;
}

/* The DCT scale 1/d (d = 8, 4, 2, 1) giving the smallest longer edge that is
 * still at least max_edge, so the resize after it only ever shrinks. */
static unsigned jpeg_shrink(int edge, int max_edge)
{
    unsigned d = 8;
    while (d > 1 && (max_edge <= 0 || (edge + (int)d - 1) / (int)d < max_edge))
        d /= 2;
    return d;
}

/* Scaled, unrotated RGB from the JPEG path to the final image: a libvips
 * resize and rotation on the small buffer only when they are needed. */
static sl_status finish_rgb(jpeg_reader *r, int src_w, int src_h, int orientation,
                           const sl_image_params *params, const char *name, sl_image **out)
{
    int w = (int)r->cinfo.output_width, h = (int)r->cinfo.output_height;
    int edge = w > h ? w : h;
    bool resize = params->max_edge > 0 && edge > params->max_edge;
    if (!resize && orientation == 1) {
        sl_image *im = sl_calloc(1, sizeof *im);
        if (!im)
            return sl_fail(SL_ERR_NOMEM, "%s: out of memory", name);
        *im = (sl_image){w, h, src_w, src_h, r->rgb, false};
        r->rgb = NULL;
        *out = im;
        return SL_OK;
    }
    VipsImage *img = vips_image_new_from_memory(r->rgb, (size_t)w * h * 3, w, h, 3,
                                                VIPS_FORMAT_UCHAR);
    if (!img)
        return vips_failure(SL_ERR_DECODE, name, "cannot wrap the pixels");
    vips_image_set_int(img, VIPS_META_ORIENTATION, orientation);
    VipsImage *next = NULL;
    /* Bicubic, as Pillow's thumbnail: DCT scaling has already done the
     * big reduction, and without ORC (see init_vips) lanczos3's wider
     * kernel cost 20% of a 12 MP decode (docs/images.md). */
    if (resize && step(&img, vips_resize(img, &next, (double)params->max_edge / edge, "kernel",
                                         VIPS_KERNEL_CUBIC, NULL), &next))
        return vips_failure(SL_ERR_DECODE, name, "cannot shrink");
    if (orientation != 1 && step(&img, vips_autorot(img, &next, NULL), &next))
        return vips_failure(SL_ERR_DECODE, name, "cannot apply the EXIF orientation");
    /* Written out here, while r->rgb (which img reads) is still alive. */
    return finish_vips(img, name, src_w, src_h, out);
}

/* Runs under decode_jpeg's setjmp: any libjpeg error jumps back there. */
static sl_status read_jpeg(jpeg_reader *r, const void *data, size_t len, const char *name,
                           const sl_image_params *params, sl_image **out, bool *fallback)
{
    struct jpeg_decompress_struct *c = &r->cinfo;
    jpeg_create_decompress(c);
    jpeg_mem_src(c, data, (unsigned long)len);
    jpeg_save_markers(c, JPEG_APP0 + 1, 0xFFFF);
    jpeg_save_markers(c, JPEG_APP0 + 2, 0xFFFF);
    jpeg_read_header(c, TRUE);
    int w = (int)c->image_width, h = (int)c->image_height;
    sl_status st = check_pixels(name, w, h, params);
    if (st != SL_OK)
        return st;
    /* CMYK/YCCK and colour-managed JPEGs go to libvips, which converts
     * them to sRGB with lcms. */
    if ((c->jpeg_color_space != JCS_YCbCr && c->jpeg_color_space != JCS_GRAYSCALE &&
         c->jpeg_color_space != JCS_RGB) ||
        find_marker(c, JPEG_APP0 + 2, "ICC_PROFILE", 12)) {
        *fallback = true;
        return SL_OK;
    }
    if (jpeg_has_multiple_scans(c)) {
        /* A progressive JPEG's coefficients: 2 bytes each, a block of 64
         * per 8x8 of each component, in libjpeg's arrays (jdcoefct.c
         * rounds each to its sampling factors). */
        uint64_t bytes = 0;
        for (int i = 0; i < c->num_components; i++) {
            const jpeg_component_info *comp = &c->comp_info[i];
            uint64_t bw = comp->width_in_blocks, bh = comp->height_in_blocks;
            bw += (uint64_t)(comp->h_samp_factor - bw % comp->h_samp_factor) % comp->h_samp_factor;
            bh += (uint64_t)(comp->v_samp_factor - bh % comp->v_samp_factor) % comp->v_samp_factor;
            bytes += bw * bh * DCTSIZE2 * sizeof(JCOEF);
        }
        r->whole = whole_wait(bytes);
    }
    int orientation = exif_orientation(c);
    c->out_color_space = JCS_RGB;
    c->scale_num = 1;
    c->scale_denom = jpeg_shrink(w > h ? w : h, params->max_edge);
    jpeg_start_decompress(c);
    size_t stride = (size_t)c->output_width * 3;
    r->rgb = sl_malloc(stride * c->output_height);
    if (!r->rgb)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory for %ux%u pixels", name,
                       c->output_width, c->output_height);
    while (c->output_scanline < c->output_height) {
        JSAMPROW rows[4];
        unsigned n = c->output_height - c->output_scanline;
        n = n < 4 ? n : 4;
        for (unsigned k = 0; k < n; k++)
            rows[k] = r->rgb + (size_t)(c->output_scanline + k) * stride;
        jpeg_read_scanlines(c, rows, n);
    }
    jpeg_finish_decompress(c);
    return finish_rgb(r, w, h, orientation, params, name, out);
}

static sl_status decode_jpeg(const void *data, size_t len, const char *name,
                             const sl_image_params *params, sl_image **out, bool *fallback)
{
    *fallback = false;
    jpeg_reader *r = sl_calloc(1, sizeof *r);
    if (!r)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory", name);
    r->cinfo.err = jpeg_std_error(&r->mgr);
    r->mgr.error_exit = jpeg_on_error;
    r->mgr.emit_message = jpeg_on_message;
    sl_status st;
    if (setjmp(r->jump) == 0)
        st = read_jpeg(r, data, len, name, params, out, fallback);
    else
        st = sl_fail(SL_ERR_DECODE, "%s: cannot decode JPEG: %s", name, r->message);
    jpeg_destroy_decompress(&r->cinfo);
    whole_give(r->whole);
    sl_free(r->rgb);
    sl_free(r);
    return st;
}

/* --- everything else: libvips ---------------------------------------------- */

/* The formats decode_vips lets through (init_vips unblocks their loaders). */
#define READS "JPEG, PNG, WebP, GIF, TIFF and HEIF/AVIF"

static bool loader_blocked(const char *loader)
{
    GType type = g_type_from_name(loader);
    if (!type)
        return false;
    VipsOperationClass *class = g_type_class_ref(type);
    bool blocked = (class->flags & VIPS_OPERATION_BLOCKED) != 0;
    g_type_class_unref(class);
    return blocked;
}

/* decode_vips' shrink and conversions, once the header is checked. */
static sl_status thumbnail(const void *data, size_t len, const char *name,
                           const sl_image_params *params, bool has_icc, int src_w, int src_h,
                           sl_image **out)
{
    int target = params->max_edge > 0 ? params->max_edge : VIPS_MAX_COORD;
    VipsImage *img = NULL;
    /* thumbnail converts CMYK to sRGB by itself, but ignores the embedded
     * profile of an RGB image (Adobe RGB, P3, ...) unless given
     * export_profile. Not given without one: it would then push plain
     * sRGB through lcms and move saturated colours (255 red -> 248). */
    int failed = has_icc ? vips_thumbnail_buffer((void *)data, len, &img, target, "height", target,
                                             "size", VIPS_SIZE_DOWN, "export_profile", "srgb",
                                             "intent", VIPS_INTENT_RELATIVE, "option_string",
                                             "fail_on=truncated", NULL)
                     : vips_thumbnail_buffer((void *)data, len, &img, target, "height", target,
                                             "size", VIPS_SIZE_DOWN, "option_string",
                                             "fail_on=truncated", NULL);
    if (failed)
        return vips_failure(SL_ERR_DECODE, name, "damaged or cut short (it cannot be decoded)");

    VipsImage *next = NULL;
    if (vips_image_hasalpha(img)) {
        VipsArrayDouble *bg = vips_array_double_newv(3, (double)params->background[0],
                                                     (double)params->background[1],
                                                     (double)params->background[2]);
        int rc = vips_flatten(img, &next, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
        if (step(&img, rc, &next))
            return vips_failure(SL_ERR_DECODE, name, "cannot flatten alpha");
    }
    if (vips_image_guess_interpretation(img) != VIPS_INTERPRETATION_sRGB &&
        step(&img, vips_colourspace(img, &next, VIPS_INTERPRETATION_sRGB, NULL), &next))
        return vips_failure(SL_ERR_DECODE, name, "cannot convert to sRGB");
    if (img->BandFmt != VIPS_FORMAT_UCHAR &&
        step(&img, vips_cast_uchar(img, &next, NULL), &next))
        return vips_failure(SL_ERR_DECODE, name, "cannot convert to 8 bits");
    if (img->Bands > 3 && step(&img, vips_extract_band(img, &next, 0, "n", 3, NULL), &next))
        return vips_failure(SL_ERR_DECODE, name, "cannot select RGB bands");
    if (img->Bands != 3) {
        int bands = img->Bands;
        g_object_unref(img);
        return sl_fail(SL_ERR_DECODE, "%s: %d bands after conversion to sRGB, expected 3",
                       name, bands);
    }
    return finish_vips(img, name, src_w, src_h, out);
}

/* What libvips' loader holds at once decoding the image `header`
 * describes, when it cannot stream it (see WHOLE_BUDGET); 0 when it can. */
static uint64_t held_whole(const char *loader, VipsImage *header)
{
    uint64_t pixels = (uint64_t)header->Xsize * (uint64_t)header->Ysize;
    /* libheif's whole picture, then its RGB beside the YUV planes: 6.8
     * bytes a pixel measured (a 6000x6000 AVIF of 1 KB took 244 MB). */
    if (strstr(loader, "Heif"))
        return pixels * 8;
    if (strstr(loader, "Nsgif")) /* the frame's RGBA canvas */
        return pixels * 4;
    /* An image with alpha is premultiplied to float before it is shrunk,
     * and the shrink's line caches then hold full-width rows of it: a
     * plain (streamed) 9999x9999 RGBA PNG or TIFF took 190 MB over the
     * run's own, 1/7 of its float pixels or a little less at any target
     * edge. WebP shrinks on load, before that. */
    uint64_t premultiplied = vips_image_hasalpha(header) && !strstr(loader, "Webp")
                                 ? pixels * (uint64_t)header->Bands * sizeof(float) / 7
                                 : 0;
    int interlaced = 0;
    if (vips_image_get_typeof(header, "interlaced"))
        vips_image_get_int(header, "interlaced", &interlaced);
    if (!interlaced)
        return premultiplied;
    /* A progressive JPEG here is CMYK or ICC-tagged (read_jpeg sends
     * those): at most one 2-byte coefficient a sample. An Adam7 PNG is
     * read to memory as its header's bands and format say. */
    size_t sample = strstr(loader, "Jpeg") ? 2 : vips_format_sizeof(header->BandFmt);
    return premultiplied + pixels * (uint64_t)header->Bands * sample;
}

struct sniffed {
    const void *data;
    size_t len;
};

static void *allowed_loader_takes(VipsForeignLoadClass *load_class, struct sniffed *bytes,
                                  void *unused)
{
    (void)unused;
    const char *nickname = VIPS_OBJECT_CLASS(load_class)->nickname;
    size_t n = strlen(nickname);
    if (n < 7 || strcmp(nickname + n - 7, "_buffer") != 0)
        return NULL;
    if (VIPS_OPERATION_CLASS(load_class)->flags & VIPS_OPERATION_BLOCKED)
        return NULL;
    if (!load_class->is_a_buffer || !load_class->is_a_buffer(bytes->data, bytes->len))
        return NULL;
    return load_class;
}

/* vips_foreign_find_load_buffer asks every loader, blocked ones too, in
 * priority order, so bytes no allowed loader takes reach ImageMagick's
 * sniffer last, whose shared tables race when decode workers ask at once
 * (TSan saw it on garbage). The allowed loaders are asked first, each one's
 * own check; only bytes none takes are named by the blocked ones, one
 * worker at a time. Returns the loader's class name, or NULL. */
static const char *sniff_loader(const void *data, size_t len)
{
    struct sniffed bytes = {data, len};
    VipsForeignLoadClass *allowed = vips_foreign_map(
        "VipsForeignLoad", (VipsSListMap2Fn)allowed_loader_takes, &bytes, NULL);
    if (allowed)
        return G_OBJECT_CLASS_NAME(allowed);
    static pthread_mutex_t naming = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&naming);
    const char *refused = vips_foreign_find_load_buffer(data, len);
    pthread_mutex_unlock(&naming);
    if (!refused)
        vips_error_clear();
    return refused;
}

static sl_status decode_vips(const void *data, size_t len, const char *name,
                             const sl_image_params *params, sl_image **out)
{
    const char *loader = sniff_loader(data, len);
    if (!loader)
        return sl_fail(SL_ERR_DECODE, "%s: not an image sluice can read (format not "
                                      "recognised, %zu bytes); sluice reads " READS, name, len);
    if (loader_blocked(loader)) {
        char format[80];
        loader_format(loader, format, sizeof format);
        return sl_fail(SL_ERR_DECODE, "%s: not an image sluice can read (%s); sluice reads "
                                      READS, name, format);
    }

    VipsImage *header = vips_image_new_from_buffer(data, len, "", "access",
                                                   VIPS_ACCESS_SEQUENTIAL, NULL);
    if (!header) {
        /* The format was recognised: its file is broken, not unknown. */
        char format[80], words[160];
        loader_format(loader, format, sizeof format);
        snprintf(words, sizeof words, "damaged or cut short (its %s header cannot be read)", format);
        return vips_failure(SL_ERR_DECODE, name, words);
    }
    int src_w = header->Xsize, src_h = header->Ysize;
    bool has_icc = vips_image_get_typeof(header, VIPS_META_ICC_NAME) != 0;
    uint64_t whole_bytes = held_whole(loader, header);
    g_object_unref(header);
    sl_status st = check_pixels(name, src_w, src_h, params);
    if (st != SL_OK)
        return st;
    /* The pixels are made when finish_vips writes them out. */
    uint64_t whole = whole_wait(whole_bytes);
    st = thumbnail(data, len, name, params, has_icc, src_w, src_h, out);
    whole_give(whole);
    return st;
}

sl_status sl_image_init(void)
{
    pthread_once(&vips_once, init_vips);
    return vips_ready ? SL_OK : sl_fail(SL_ERR_DECODE, "libvips is not available");
}

sl_status sl_image_decode(const void *data, size_t len, const char *name,
                          const sl_image_params *params, sl_image **out)
{
    *out = NULL;
    sl_image_params defaults = sl_image_default_params();
    if (!params)
        params = &defaults;
    pthread_once(&vips_once, init_vips);
    if (!vips_ready)
        return sl_fail(SL_ERR_DECODE, "%s: libvips is not available", name);
    if (len == 0)
        return sl_fail(SL_ERR_DECODE, "%s: empty file (0 bytes)", name);
    const uint8_t *bytes = data;
    bool fallback = true;
    sl_status st = SL_OK;
    if (len >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
        st = decode_jpeg(data, len, name, params, out, &fallback);
    if (fallback)
        st = decode_vips(data, len, name, params, out);
    return st;
}

sl_status sl_image_load_file(const char *path, const sl_image_params *params, sl_image **out)
{
    if (!path || !out)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_image_load_file: NULL %s", !path ? "path" : "out");
    *out = NULL;
    sl_image_params defaults = sl_image_default_params();
    if (!params)
        params = &defaults;
    uint8_t *buf;
    size_t len;
    sl_status st = sl_read_file(path, params->max_file_bytes ? params->max_file_bytes
                                                             : UINT64_MAX, &buf, &len);
    if (st == SL_OK)
        st = sl_image_decode(buf, len, path, params, out);
    sl_free(buf);
    return st;
}

sl_status sl_image_from_rgb(int width, int height, const uint8_t *rgb, sl_image **out)
{
    *out = NULL;
    if (width <= 0 || height <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "image %dx%d: size must be positive", width, height);
    if (!rgb)
        return sl_fail(SL_ERR_INVALID_ARG, "image %dx%d: rgb is NULL: pass its %dx%dx3 bytes",
                       width, height, width, height);
    size_t n = (size_t)width * (size_t)height * 3;
    sl_image *im = sl_calloc(1, sizeof *im);
    uint8_t *px = im ? sl_malloc(n) : NULL;
    if (!px) {
        sl_free(im);
        return sl_fail(SL_ERR_NOMEM, "image %dx%d: out of memory", width, height);
    }
    memcpy(px, rgb, n);
    *im = (sl_image){width, height, width, height, px, false};
    *out = im;
    return SL_OK;
}

int sl_image_width(const sl_image *image) { return image->width; }
int sl_image_height(const sl_image *image) { return image->height; }
const uint8_t *sl_image_pixels(const sl_image *image) { return image->pixels; }
int sl_image_source_width(const sl_image *image) { return image->source_width; }
int sl_image_source_height(const sl_image *image) { return image->source_height; }

size_t sl_image_bytes(const sl_image *image)
{
    return sizeof *image + (size_t)image->width * (size_t)image->height * 3;
}

typedef struct jpeg_writer {
    struct jpeg_compress_struct cinfo; /* first: libjpeg's callbacks get its address */
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    unsigned char *buf;
    unsigned long len;
} jpeg_writer;

static void jpeg_write_error(j_common_ptr cinfo)
{
    jpeg_writer *w = (jpeg_writer *)cinfo;
    cinfo->err->format_message(cinfo, w->message);
    longjmp(w->jump, 1);
}

/* RGB pixels to a baseline JPEG with libjpeg-turbo directly: a third of
 * libvips' jpegsave time for a 512 px image (no pipeline to build), and its
 * default 4:2:0 chroma makes a smaller request body. */
static sl_status write_jpeg(const uint8_t *rgb, int w, int h, int quality, uint8_t **out,
                            size_t *len)
{
    jpeg_writer *wr = sl_calloc(1, sizeof *wr);
    if (!wr)
        return sl_fail(SL_ERR_NOMEM, "JPEG encode: out of memory");
    wr->cinfo.err = jpeg_std_error(&wr->mgr);
    wr->mgr.error_exit = jpeg_write_error;
    sl_status st = SL_OK;
    if (setjmp(wr->jump) == 0) {
        struct jpeg_compress_struct *c = &wr->cinfo;
        jpeg_create_compress(c);
        jpeg_mem_dest(c, &wr->buf, &wr->len);
        c->image_width = (JDIMENSION)w;
        c->image_height = (JDIMENSION)h;
        c->input_components = 3;
        c->in_color_space = JCS_RGB;
        jpeg_set_defaults(c);
        jpeg_set_quality(c, quality, TRUE);
        jpeg_start_compress(c, TRUE);
        while (c->next_scanline < c->image_height) {
            JSAMPROW row = (JSAMPROW)(rgb + (size_t)c->next_scanline * (size_t)w * 3);
            jpeg_write_scanlines(c, &row, 1);
        }
        jpeg_finish_compress(c);
    } else {
        st = sl_fail(SL_ERR_DECODE, "JPEG encode: %s", wr->message);
    }
    jpeg_destroy_compress(&wr->cinfo);
    if (st == SL_OK) {
        *out = wr->buf; /* malloc'd by libjpeg's memory destination */
        *len = wr->len;
    } else {
        free(wr->buf);
    }
    sl_free(wr);
    return st;
}

sl_status sl_image_encode_jpeg(const sl_image *image, int max_edge, int quality,
                               uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (quality < 1 || quality > 100)
        return sl_fail(SL_ERR_INVALID_ARG, "JPEG quality must be 1..100, got %d", quality);
    int edge = image->width > image->height ? image->width : image->height;
    if (max_edge <= 0 || edge <= max_edge)
        return write_jpeg(image->pixels, image->width, image->height, quality, out, len);
    pthread_once(&vips_once, init_vips);
    if (!vips_ready)
        return sl_fail(SL_ERR_DECODE, "JPEG encode: libvips is not available");
    VipsImage *img = vips_image_new_from_memory(image->pixels,
                                                (size_t)image->width * image->height * 3,
                                                image->width, image->height, 3,
                                                VIPS_FORMAT_UCHAR);
    if (!img)
        return vips_failure(SL_ERR_DECODE, "JPEG encode", "cannot wrap the pixels");
    VipsImage *next = NULL;
    if (step(&img, vips_resize(img, &next, (double)max_edge / edge, "kernel", VIPS_KERNEL_CUBIC,
                               NULL), &next))
        return vips_failure(SL_ERR_DECODE, "JPEG encode", "cannot shrink");
    size_t n_bytes;
    uint8_t *small = vips_image_write_to_memory(img, &n_bytes);
    int w = img->Xsize, h = img->Ysize;
    g_object_unref(img);
    if (!small)
        return vips_failure(SL_ERR_DECODE, "JPEG encode", "cannot shrink");
    sl_status st = write_jpeg(small, w, h, quality, out, len);
    g_free(small);
    return st;
}

void sl_image_buffer_free(uint8_t *buffer) { free(buffer); }

void sl_image_free(sl_image *image)
{
    if (!image)
        return;
    if (image->pixels_from_vips)
        g_free(image->pixels);
    else
        sl_free(image->pixels);
    sl_free(image);
}
