/* job/stage_decode.c — the decode stage: fetch a URL's bytes (or read a file
 * whose bytes go on as they are), decode and shrink the image (image/) or
 * sample a video's frames (sluice/video.h), make the gallery's thumbnail,
 * and for HTTP engines encode the JPEGs to send in place of the pixels; in a
 * dry run, note each input's encoded bytes and format (its output columns).
 * Each row's bytes in flight are kept exact. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/dir_source.h"
#include "io/ranged.h"
#include "io/s3.h"
#include "io/sniff.h"
#include "io/source_parse.h"
#include "job/batch.h"
#include "job/job.h"

const char *job_image_format(const uint8_t *d, size_t n)
{
    const char *f = sl_sniff_image_format(d, n);
    return f ? f : sl_video_sniff(d, n) ? "video" : "unknown";
}

bool job_row_sent_bytes(const job *j, const caption_row *r, uint64_t *bytes)
{
    *bytes = 0;
    if (!job_uses_openai(j->p))
        return false;
    *bytes = r->jpeg ? r->jpeg_len : r->original_mime ? r->len : 0;
    for (int i = 0; r->media && i < r->media->n; i++)
        *bytes += r->media->jpeg_len[i];
    return r->jpeg || r->original_mime || (r->media && r->media->n > 0);
}

/* A local file read by its path (libvips or FFmpeg read it in place):
 * its first bytes (is it a video under another name?) and, for a dry run,
 * its size, in one open. A file that cannot be opened has none (its decode
 * says why). */
typedef struct local_peek {
    uint8_t head[512];
    size_t got;
    uint64_t size;
    bool sized;
} local_peek;

static void peek_local_file(const char *path, local_peek *pk)
{
    memset(pk, 0, sizeof *pk);
    /* Only a regular file (a FIFO would block the worker): any other
     * fails its row when it is read. */
    int fd;
    if (sl_file_open_regular(path, &fd, &pk->size) != SL_OK)
        return;
    pk->sized = true;
    ssize_t got;
    do
        got = pread(fd, pk->head, sizeof pk->head, 0);
    while (got < 0 && errno == EINTR);
    pk->got = got > 0 ? (size_t)got : 0;
    close(fd);
}

/* A dry run's record of a peeked file: its size, and its format from its
 * first bytes when not known yet (format NULL: not wanted). */
static void size_local_file(const local_peek *pk, uint64_t *bytes, bool *sized,
                            const char **format)
{
    if (pk->sized) {
        *bytes += pk->size;
        *sized = true;
    }
    if (format && !*format && pk->got)
        *format = job_image_format(pk->head, pk->got);
}

static sl_status decode_init(void *cfg, int worker, void **state)
{
    *state = cfg;
    return SL_OK;
}

static bool is_url(const char *path)
{
    char scheme[16];
    sl_url_scheme(path, scheme);
    return strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0 ||
           strcmp(scheme, "s3") == 0;
}

static bool sending_originals(const sl_caption_params *p)
{
    return job_uses_openai(p) && p->send_original;
}

/* The type of encoded bytes every chat server reads (llama-server's
 * stb_image has no WebP), from their first bytes; NULL for the others,
 * which are re-encoded as JPEG. */
static const char *sendable_mime(const uint8_t *d, size_t n)
{
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
        return "image/jpeg";
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    return NULL;
}

/* core/file.c names the size and the limit; the setting behind the limit
 * is the job's, named as the sources name it for a tar member or a cell. */
static sl_status name_item_limit(sl_status st)
{
    if (st == SL_ERR_TOO_LARGE) {
        char why[1024];
        snprintf(why, sizeof why, "%s", sl_last_error());
        st = sl_fail(st, "%s (--max-item-bytes)", why);
    }
    return st;
}

sl_status job_read_local(const char *path, uint64_t max, uint8_t **data, size_t *len)
{
    return name_item_limit(sl_read_file(path, max, data, len));
}

/* A local image file decoded, read up to the row's limit (max_item_bytes). */
static sl_status load_local_image(const caption_row *r, const char *path,
                                  const sl_image_params *ip, sl_image **out)
{
    /* Read here, not by sl_image_load_file: its SL_ERR_TOO_LARGE is also the
     * pixel limit's ("(--max-image-pixels)"), which must not be given the
     * file-size flag as well. */
    uint8_t *data;
    size_t len;
    sl_status st = job_read_local(path, r->max_file_bytes ? r->max_file_bytes : UINT64_MAX, &data, &len);
    if (st == SL_OK)
        st = sl_image_decode(data, len, path, ip, out);
    sl_free(data);
    return st;
}

/* Gets the row's encoded bytes when they are not in memory yet and must be:
 * a URL, or a file whose bytes go to the output or to the server as is. */
static sl_status fetch_bytes(job *j, sl_row *row, caption_row *r)
{
    if (r->data || !r->path)
        return SL_OK;
    sl_status st;
    if (is_url(r->path))
        st = sl_fetch(r->path, &j->fetch, &r->data, &r->len);
    else if (j->p->include_image_bytes || sending_originals(j->p))
        st = job_read_local(r->path, r->max_file_bytes, &r->data, &r->len);
    else
        return SL_OK;
    if (st == SL_OK)
        sl_row_set_bytes(row, sl_row_bytes(row) + r->len);
    return st;
}

/* The gallery's thumbnail of one of the row's images, when it asked for one
 * (the row goes on without it if it cannot be made). */
static void make_thumb(job *j, sl_row *row, caption_row *r, const sl_image *img)
{
    if (!gallery_wants_thumb(j->gallery, sl_row_seq(row)))
        return;
    const gallery_params *gp = gallery_params_of(j->gallery);
    if (sl_image_encode_jpeg(img, gp->thumb_edge, gp->thumb_quality, &r->thumb, &r->thumb_len) !=
        SL_OK)
        sl_log(SL_LOG_DEBUG, "no thumbnail for %s: %s", r->rel, sl_last_error());
}

/* --- a row's several images: a video's frames, a list's images ------------ */

void media_row_free(media_row *v)
{
    if (!v)
        return;
    media_row_drop_media(v);
    sl_free(v);
}

size_t media_row_bytes(const media_row *v)
{
    size_t n = sizeof *v;
    for (int i = 0; i < v->n; i++)
        n += (v->images[i] ? sl_image_bytes(v->images[i]) : 0) + v->jpeg_len[i];
    return n;
}

size_t media_row_drop_media(media_row *v)
{
    size_t n = 0;
    for (int i = 0; i < v->n; i++) {
        if (v->images[i])
            n += sl_image_bytes(v->images[i]);
        sl_image_free(v->images[i]);
        v->images[i] = NULL;
        n += v->jpeg_len[i];
        sl_image_buffer_free(v->jpeg[i]);
        v->jpeg[i] = NULL;
        v->jpeg_len[i] = 0;
    }
    return n;
}

media_row *media_row_copy(const media_row *v)
{
    media_row *c = sl_malloc(sizeof *c);
    if (!c)
        return NULL;
    *c = *v;
    memset(c->images, 0, sizeof c->images);
    memset(c->jpeg, 0, sizeof c->jpeg);
    bool ok = true;
    for (int i = 0; ok && i < v->n; i++) {
        const sl_image *f = v->images[i];
        ok = !f || sl_image_from_rgb(sl_image_width(f), sl_image_height(f), sl_image_pixels(f),
                                     &c->images[i]) == SL_OK;
        /* sl_image_buffer_free frees the JPEGs: they are malloc's */
        if (ok && v->jpeg[i] && (c->jpeg[i] = malloc(v->jpeg_len[i])) != NULL)
            memcpy(c->jpeg[i], v->jpeg[i], v->jpeg_len[i]);
        ok = ok && (!v->jpeg[i] || c->jpeg[i]);
    }
    if (!ok) {
        media_row_free(c);
        return NULL;
    }
    return c;
}

/* Is the local file at `path` a video? By its first bytes (a manifest may
 * name a video anything), else its name; an image's magic beats the name (a
 * JPEG saved as .mp4 is decoded as the JPEG it is, as a PNG named .jpg is). */
static bool is_local_video(const char *path, const local_peek *pk)
{
    if (sl_video_sniff(pk->head, pk->got))
        return true;
    return sl_video_path_is_video(path) && !sl_sniff_image_format(pk->head, pk->got);
}

/* What a decode error calls the row's bytes: where the input held them,
 * else the file or URL read, else the row id. */
static const char *bytes_called(const caption_row *r)
{
    return r->data_name ? r->data_name : r->path ? r->path : r->rel;
}

/* Samples the row's video into r->media: frames for the llama engine (taken
 * from the video, not copied), their JPEGs for an HTTP one; the dimensions
 * are the frames' (and the video's as stored), the format the container's. */
static sl_status decode_video(job *j, sl_row *row, caption_row *r, const sl_video_io *io)
{
    const sl_caption_params *p = j->p;
    sl_video_params vp = p->video;
    vp.image = p->image;
    sl_video *v = NULL;
    const char *name = bytes_called(r);
    sl_status st = io        ? sl_video_load_io(io, name, &vp, &v)
                   : r->data ? sl_video_decode(r->data, r->len, name, &vp, &v)
                             : sl_video_load_file(r->path, &vp, &v);
    if (st != SL_OK)
        return st;
    media_row *vr = sl_calloc(1, sizeof *vr);
    if (!vr) {
        sl_video_free(v);
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory for the video's frames", r->rel);
    }
    r->media = vr;
    vr->is_video = true;
    vr->n = sl_video_n_frames(v);
    vr->seconds = sl_video_duration(v);
    r->format = sl_video_container(v);
    r->source_width = sl_video_source_width(v);
    r->source_height = sl_video_source_height(v);
    const sl_image *first = sl_video_frame(v, 0), *middle = sl_video_frame(v, vr->n / 2);
    r->width = sl_image_width(first);
    r->height = sl_image_height(first);
    make_thumb(j, row, r, middle);
    bool openai = job_uses_openai(p);
    for (int i = 0; st == SL_OK && i < vr->n; i++) {
        vr->times[i] = sl_video_frame_time(v, i);
        if (!openai) {
            vr->images[i] = sl_video_take_frame(v, i);
            continue;
        }
        st = sl_image_encode_jpeg(sl_video_frame(v, i), p->jpeg_edge, p->jpeg_quality,
                                  &vr->jpeg[i], &vr->jpeg_len[i]);
        if (st != SL_OK)
            st = sl_fail(st, "%s: frame %d: %s", r->rel, i + 1, sl_last_error());
    }
    sl_video_free(v);
    sl_row_set_bytes(row, sl_row_bytes(row) + media_row_bytes(vr) + r->thumb_len);
    return st;
}

/* One image of a row's list into m->images[i] (or, for an HTTP engine,
 * m->jpeg[i]): fetched when a URL, decoded and shrunk as a row's one image
 * is. A video has no place in a list (it would be a row of its own). */
static sl_status decode_list_image(job *j, sl_row *row, caption_row *r, media_row *m, size_t i)
{
    const sl_caption_params *p = j->p;
    const sl_source_image *s = &r->list[i];
    uint8_t *fetched = NULL;
    size_t fetched_len = 0;
    if (!s->data && !s->path)
        return sl_fail(SL_ERR_DECODE, "neither bytes nor a path");
    sl_status st = SL_OK;
    if (!s->data && is_url(s->path))
        st = sl_fetch(s->path, &j->fetch, &fetched, &fetched_len);
    const uint8_t *d = s->data ? s->data : fetched;
    size_t len = s->data ? s->len : fetched_len;
    const char *name = s->name ? s->name : s->path ? s->path : r->rel;
    local_peek pk = {0};
    if (st == SL_OK && !d)
        peek_local_file(s->path, &pk);
    if (st == SL_OK && p->dry_run && d) {
        r->input_bytes += len;
        r->input_sized = true;
    } else if (st == SL_OK && p->dry_run) {
        size_local_file(&pk, &r->input_bytes, &r->input_sized, i == 0 ? &r->format : NULL);
    }
    if (st == SL_OK && (d ? sl_video_sniff(d, len) : is_local_video(s->path, &pk)))
        st = sl_fail(SL_ERR_DECODE, "%s is a video: a list holds images (give a video a row of "
                                    "its own)", name);
    sl_image *img = NULL;
    if (st == SL_OK)
        st = d ? sl_image_decode(d, len, name, &p->image, &img)
               : load_local_image(r, s->path, &p->image, &img);
    if (st == SL_OK && i == 0) {
        r->format = d ? job_image_format(d, len) : r->format;
        r->width = sl_image_width(img);
        r->height = sl_image_height(img);
        r->source_width = sl_image_source_width(img);
        r->source_height = sl_image_source_height(img);
        make_thumb(j, row, r, img);
    }
    sl_free(fetched);
    if (st == SL_OK && job_uses_openai(p)) {
        st = sl_image_encode_jpeg(img, p->jpeg_edge, p->jpeg_quality, &m->jpeg[i],
                                  &m->jpeg_len[i]);
        sl_image_free(img);
        img = NULL;
    }
    m->images[i] = img;
    return st;
}

/* Decodes a row's list of images (docs/inputs.md, "Several images a row")
 * into r->media, giving back the list as read; the first image's size and
 * format stand for the row's, and it makes the thumbnail. */
static sl_status decode_list(job *j, sl_row *row, caption_row *r)
{
    media_row *m = sl_calloc(1, sizeof *m);
    if (!m)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory for its images", r->rel);
    r->media = m;
    sl_status st = SL_OK;
    size_t n = r->n_list;
    m->listed = (int)n;
    for (size_t i = 0; st == SL_OK && i < n; i++) {
        m->n = (int)i + 1; /* so that what was made is freed */
        if ((st = decode_list_image(j, row, r, m, i)) != SL_OK) {
            char why[768];
            snprintf(why, sizeof why, "%s", sl_last_error());
            st = sl_fail(st, "%s: image %zu of %zu: %s", r->rel, i + 1, n, why);
        }
    }
    size_t read_bytes = job_row_list_bytes(r);
    job_row_free_list(r);
    sl_row_set_bytes(row, sl_row_bytes(row) - read_bytes + media_row_bytes(m) + r->thumb_len);
    return st;
}

/* --- remote videos ----------------------------------------------------------- */

/* A remote video is read by ranged requests in blocks (io/ranged.h's
 * read-ahead): FFmpeg reads 32 KiB at a time, and a sampled frame needs the
 * GOP from the keyframe before it (a few hundred KiB at ordinary bitrates),
 * read sequentially: a block of 256 KiB after each seek, doubling up to
 * 1 MiB while the reads go on, so a frame costs a request or two and not
 * much more than its GOP. The 4 blocks kept (4 MiB at most) are all a
 * decode worker holds of the video. */
enum {
    REMOTE_FIRST = 256 << 10,
    REMOTE_MOST = 1 << 20,
    REMOTE_BLOCKS = 4,
    REMOTE_SNIFF = 512
};

static sl_status ranged_read(void *in, void *dst, size_t len, uint64_t offset, size_t *got)
{
    return sl_ranged_read(in, dst, len, offset, got);
}

/* Samples the video at the row's URL read in place by ranged requests,
 * never held whole (--max-download-bytes bounds the bytes read, not the
 * size): a URL whose name (before any ?query) says video, or, when it says
 * neither image nor video, whose first bytes do (one small ranged read).
 * True when the row was taken (its video decoded, or the row failed);
 * false for an image, and for a video whose server ignores Range requests:
 * the caller fetches those whole, as before. */
static bool remote_video(job *j, sl_row *row, caption_row *r)
{
    char name[1024]; /* its end: the extension (an S3 key alone may be 1 KB) */
    size_t n = sl_s3_is_url(r->path) ? strlen(r->path) : strcspn(r->path, "?#");
    size_t keep = n < sizeof name ? n : sizeof name - 1;
    snprintf(name, sizeof name, "%.*s", (int)keep, r->path + (n - keep));
    bool named = sl_video_path_is_video(name);
    if (!named && sl_is_media_name(name))
        return false;
    sl_ranged_params rp = sl_ranged_default_params();
    rp.timeout_ms = j->fetch.timeout_ms;
    rp.retries = j->fetch.retries;
    rp.max_bytes = j->fetch.max_bytes;
    sl_ranged *in = NULL;
    sl_status st = sl_ranged_open_with(r->path, &rp, &in);
    uint8_t head[REMOTE_SNIFF];
    size_t got = 0;
    if (st == SL_OK && !named) {
        st = sl_ranged_read(in, head, sizeof head, 0, &got);
        if (st == SL_OK && !sl_video_sniff(head, got)) {
            sl_ranged_free(in);
            return false; /* an image (or nothing known): fetched whole */
        }
    }
    uint64_t size = 0;
    if (st == SL_OK)
        st = sl_ranged_set_readahead(in, REMOTE_FIRST, REMOTE_MOST, REMOTE_BLOCKS);
    if (st == SL_OK) /* the first block, and with it the size */
        st = sl_ranged_read(in, head, 1, 0, &got);
    if (st == SL_OK)
        st = sl_ranged_size(in, &size);
    if (st != SL_OK && in && sl_ranged_ignores_ranges(in)) {
        sl_log(SL_LOG_DEBUG, "%s: %s; fetching it whole", r->rel, sl_last_error());
        sl_ranged_free(in);
        return false;
    }
    if (st == SL_OK) {
        r->input_bytes = size;
        r->input_sized = true;
        sl_video_io io = {.read = ranged_read, .user = in, .size = size};
        st = decode_video(j, row, r, &io);
        sl_log(SL_LOG_DEBUG, "%s: %llu of %llu bytes read in %llu requests", r->path,
               (unsigned long long)sl_ranged_bytes_read(in), (unsigned long long)size,
               (unsigned long long)sl_ranged_requests(in));
    }
    sl_ranged_free(in);
    if (st != SL_OK)
        sl_row_fail_status(row, st, "%s", sl_last_error());
    return true;
}

/* Gives the row's encoded bytes back (they are not needed past decoding). */
static void drop_data(sl_row *row, caption_row *r)
{
    sl_row_set_bytes(row, sl_row_bytes(row) - r->len);
    sl_free(r->data);
    r->data = NULL;
    r->len = 0;
}

/* One row's decode: a batch request's images, a list's, a video's frames
 * or an image; a failure fails the row. */
static void decode_row(job *j, sl_row *row)
{
    caption_row *r = sl_row_data(row);
    if (r->batch) {
        batch_decode(j, row, r);
        return;
    }
    if (job_is_batch(j->p))
        return; /* a stage's copy without a request: the engine fails it */
    double t0 = sl_mono_s();
    if (r->n_list) {
        sl_status st = decode_list(j, row, r);
        if (st != SL_OK)
            sl_row_fail_status(row, st, "%s", sl_last_error());
        r->decode_ms = (sl_mono_s() - t0) * 1e3;
        return;
    }
    if (r->path && !r->data && is_url(r->path) && remote_video(j, row, r)) {
        r->decode_ms = (sl_mono_s() - t0) * 1e3;
        return;
    }
    /* A local video is read in place, never whole (a clip may be GBs):
     * its bytes are not kept for the output, nor are a fetched one's. */
    local_peek pk = {0};
    bool local = r->path && !r->data && !is_url(r->path);
    if (local && (j->p->dry_run || !sl_video_path_is_video(r->path)))
        peek_local_file(r->path, &pk); /* a video by its name needs no look */
    bool video = local && is_local_video(r->path, &pk);
    sl_status st = video ? SL_OK : fetch_bytes(j, row, r);
    if (st == SL_OK && !video && r->data)
        video = sl_video_sniff(r->data, r->len);
    if (st == SL_OK && j->p->dry_run && r->data) {
        r->input_bytes = r->len;
        r->input_sized = true;
    } else if (st == SL_OK && j->p->dry_run && local) {
        size_local_file(&pk, &r->input_bytes, &r->input_sized, video ? NULL : &r->format);
    }
    if (st == SL_OK && video) {
        st = decode_video(j, row, r, NULL);
        if (r->data)
            drop_data(row, r);
        if (st != SL_OK)
            sl_row_fail_status(row, st, "%s", sl_last_error());
        r->decode_ms = (sl_mono_s() - t0) * 1e3;
        return;
    }
    if (st == SL_OK)
        st = r->data ? sl_image_decode(r->data, r->len, bytes_called(r), &j->p->image, &r->image)
                     : load_local_image(r, r->path, &j->p->image, &r->image);
    if (r->data)
        r->format = job_image_format(r->data, r->len);
    if (st == SL_OK && r->data && sending_originals(j->p))
        r->original_mime = sendable_mime(r->data, r->len);
    if (r->data && !j->p->include_image_bytes && !r->original_mime)
        drop_data(row, r);
    if (st != SL_OK) {
        sl_row_fail_status(row, st, "%s", sl_last_error());
        return;
    }
    r->decode_ms = (sl_mono_s() - t0) * 1e3;
    r->width = sl_image_width(r->image);
    r->height = sl_image_height(r->image);
    r->source_width = sl_image_source_width(r->image);
    r->source_height = sl_image_source_height(r->image);
    make_thumb(j, row, r, r->image);
    if (job_uses_openai(j->p)) {
        /* HTTP engines get a JPEG (or the original bytes): keep it, not
         * the pixels. */
        st = r->original_mime ? SL_OK
                              : sl_image_encode_jpeg(r->image, j->p->jpeg_edge,
                                                     j->p->jpeg_quality, &r->jpeg, &r->jpeg_len);
        sl_image_free(r->image);
        r->image = NULL;
        if (st != SL_OK) {
            sl_row_fail_status(row, st, "%s: %s", r->rel, sl_last_error());
            return;
        }
        r->decode_ms = (sl_mono_s() - t0) * 1e3;
        sl_row_set_bytes(row, sl_row_bytes(row) + r->jpeg_len + r->thumb_len);
        return;
    }
    /* Decoded pixels are the large item in flight: count them. */
    sl_row_set_bytes(row, sl_row_bytes(row) + sl_image_bytes(r->image) + r->thumb_len);
}

/* A dry run whose rows meet no stage of the caller's after decode: nothing
 * reads the pixels again (the thumbnail is made), so their bytes go now
 * rather than ride to the writer inside the memory budget. An HTTP
 * engine's JPEGs stay: the writer counts what would be sent. */
static void release_pixels(sl_row *row)
{
    caption_row *r = sl_row_data(row);
    size_t freed = 0;
    if (r->image) {
        freed += sl_image_bytes(r->image);
        sl_image_free(r->image);
        r->image = NULL;
    }
    for (int k = 0; r->media && k < r->media->n; k++) {
        if (r->media->images[k])
            freed += sl_image_bytes(r->media->images[k]);
        sl_image_free(r->media->images[k]);
        r->media->images[k] = NULL;
    }
    if (freed)
        sl_row_set_bytes(row, sl_row_bytes(row) - freed);
}

static sl_status decode_process(void *state, sl_row *const *rows, size_t n)
{
    job *j = state;
    for (size_t i = 0; i < n; i++) {
        decode_row(j, rows[i]);
        if (j->dry_run_drops_pixels)
            release_pixels(rows[i]);
    }
    return SL_OK;
}

sl_stage_def stage_decode(job *j)
{
    return (sl_stage_def){.name = "decode", .kind = SL_STAGE_MAP, .workers = j->p->decode_workers,
                          .batch_size = 1, .config = j, .init = decode_init,
                          .process = decode_process};
}
