/* image/video.c — every FFmpeg call in sluice lives here (sluice/video.h).
 *
 * The container is recognised from its first bytes by our own check and its
 * demuxer named to libavformat, so nothing is probed: only mov, matroska,
 * avi and mpegts ever parse a byte (format_whitelist says the same again).
 * Bytes come through our own AVIOContext (memory, or pread on a file
 * descriptor); io_open refuses every nested open and protocol_whitelist is
 * empty, so a reference inside a file (mov's dref, a playlist entry) never
 * reaches another file or the network.
 *
 * Frames are found by seeking to the keyframe before each target time and
 * decoding forward, or by decoding forward alone when the target's keyframe
 * is at or before where the decoder already is. Each taken frame goes
 * through libswscale (bicubic) to RGB24 at the final size, is turned by the
 * stream's display matrix, and becomes an sl_image. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "image/video_impl.h"
#include "sluice/video.h"

struct sl_video {
    int n;
    sl_image *frames[SL_VIDEO_MAX_FRAMES];
    double times[SL_VIDEO_MAX_FRAMES];
    double duration;
    int source_width, source_height;
    const char *container, *codec; /* static strings */
};

/* --- FFmpeg's log ------------------------------------------------------------ */

/* The input being read on this thread, so FFmpeg's lines name it. */
static _Thread_local const char *log_input;

/* FFmpeg warns about damaged input on stderr by default; those lines say
 * nothing the row error does not, so they go to sluice's log at debug
 * level (the row's own error names the cause). */
static void ffmpeg_log(void *avcl, int level, const char *fmt, va_list vl)
{
    if (level > AV_LOG_WARNING || sl_log_get_level() > SL_LOG_DEBUG)
        return;
    char line[1024];
    int print_prefix = 1;
    av_log_format_line2(avcl, level, fmt, vl, line, sizeof line, &print_prefix);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = '\0';
    for (char *c = line; *c; c++) /* one log line per message */
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    if (n)
        sl_log(SL_LOG_DEBUG, "%s: ffmpeg: %s", log_input ? log_input : "video", line);
}

static pthread_once_t ffmpeg_once = PTHREAD_ONCE_INIT;

static void init_ffmpeg(void) { av_log_set_callback(ffmpeg_log); }

/* --- input: memory, a file descriptor or the caller's reader ---------------- */

typedef struct input {
    const uint8_t *data;     /* the bytes in memory; NULL: read io, else fd */
    const sl_video_io *io;   /* the caller's reader (sl_video_load_io) */
    int fd;
    int64_t size, pos;
    int read_errno; /* a failed read of the file, 0 if none */
    sl_status io_status;     /* a failed read of io (SL_OK if none), and its message */
    char io_error[512];
} input;

/* n bytes at in->pos from the caller's reader; its failure is kept (FFmpeg
 * sees only EIO) so the video's error is the reader's own. */
static int io_read(input *in, uint8_t *buf, int n)
{
    size_t got = 0;
    sl_clear_error();
    sl_status st = in->io->read(in->io->user, buf, (size_t)n, (uint64_t)in->pos, &got);
    if (st != SL_OK) {
        const char *why = sl_last_error();
        in->io_status = st;
        snprintf(in->io_error, sizeof in->io_error, "%s", why[0] ? why : sl_status_name(st));
        return AVERROR(EIO);
    }
    if (got == 0) /* shorter than its size said */
        return AVERROR_EOF;
    return got < (size_t)n ? (int)got : n;
}

static int input_read(void *opaque, uint8_t *buf, int size)
{
    input *in = opaque;
    if (in->pos >= in->size || size <= 0)
        return AVERROR_EOF;
    int64_t left = in->size - in->pos;
    int n = left < size ? (int)left : size;
    if (in->data) {
        memcpy(buf, in->data + in->pos, (size_t)n);
    } else if (in->io) {
        if ((n = io_read(in, buf, n)) < 0)
            return n;
    } else {
        ssize_t got;
        do
            got = pread(in->fd, buf, (size_t)n, (off_t)in->pos);
        while (got < 0 && errno == EINTR);
        if (got < 0) {
            in->read_errno = errno;
            return AVERROR(errno);
        }
        if (got == 0) /* the file shrank while read */
            return AVERROR_EOF;
        n = (int)got;
    }
    in->pos += n;
    return n;
}

static int64_t input_seek(void *opaque, int64_t offset, int whence)
{
    input *in = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE:
        return in->size;
    case SEEK_SET:
        base = 0;
        break;
    case SEEK_CUR:
        base = in->pos;
        break;
    case SEEK_END:
        base = in->size;
        break;
    default:
        return AVERROR(EINVAL);
    }
    if ((offset > 0 && base > INT64_MAX - offset) || base + offset < 0)
        return AVERROR(EINVAL);
    in->pos = base + offset;
    return in->pos;
}

/* Demuxers open other files through this (mov's external data references,
 * a playlist's entries); none is ever opened. */
static int refuse_io_open(AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                          AVDictionary **options)
{
    *pb = NULL;
    return AVERROR(EPERM);
}

/* --- one decode ------------------------------------------------------------------ */

typedef struct reader {
    const char *name;
    const sl_video_params *params;
    input in;
    video_container cont;
    AVIOContext *avio;
    AVFormatContext *fmt;
    AVStream *st;
    int stream;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame; /* decoded into */
    AVFrame *held;  /* the last frame decoded, when have_held */
    bool have_held, held_taken;
    int64_t held_ts, taken_ts;
    bool draining, ended;
    long decoded;        /* packets given to the decoder */
    int64_t target;      /* the time being decoded to (stream time base) */
    int decode_error;    /* the decoder's last complaint (0: none) */
    int64_t start;       /* the stream's start, in its time base */
    double tb;           /* seconds per time base unit */
    double last_time;    /* the latest frame time seen, seconds from start */
    int rotation;        /* clockwise degrees to display: 0, 90, 180, 270 */
    struct SwsContext *sws;
    uint8_t *scaled;     /* av_malloc'd, for libswscale */
    size_t scaled_cap;
    uint8_t *packed;     /* sl_malloc'd: the frame as sl_image_from_rgb takes it */
    size_t packed_cap;
} reader;

static const char *av_err(int err, char *buf, size_t size)
{
    if (av_strerror(err, buf, size) < 0)
        snprintf(buf, size, "error %d", err);
    return buf;
}

static sl_status fail_av(reader *r, const char *what, int err)
{
    char cause[AV_ERROR_MAX_STRING_SIZE + 64];
    if (err == AVERROR(ENOMEM))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory (%s)", r->name, what);
    if (r->in.read_errno)
        return sl_fail(SL_ERR_IO, "%s: read error: %s", r->name, strerror(r->in.read_errno));
    if (r->in.io_status != SL_OK)
        return sl_fail(r->in.io_status, "%s: %s", r->name, r->in.io_error);
    return sl_fail(SL_ERR_DECODE, "%s: %s: %s", r->name, what, av_err(err, cause, sizeof cause));
}

static void reader_close(reader *r)
{
    av_frame_free(&r->frame);
    av_frame_free(&r->held);
    av_packet_free(&r->pkt);
    avcodec_free_context(&r->dec);
    avformat_close_input(&r->fmt); /* leaves our AVIOContext alone (custom I/O) */
    if (r->avio) {
        av_freep(&r->avio->buffer); /* FFmpeg may have replaced the one given */
        avio_context_free(&r->avio);
    }
    sws_freeContext(r->sws);
    av_free(r->scaled);
    sl_free(r->packed);
}

/* Clockwise degrees (0, 90, 180, 270) the display matrix turns the frame by;
 * other angles and flips are not applied. */
static int display_rotation(const AVStream *st)
{
    size_t size = 0;
    const uint8_t *sd = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (!sd || size < 9 * sizeof(int32_t))
        return 0;
    int32_t matrix[9];
    memcpy(matrix, sd, sizeof matrix);
    double ccw = av_display_rotation_get(matrix);
    if (isnan(ccw))
        return 0;
    double cw = fmod(-round(ccw), 360.0);
    if (cw < 0)
        cw += 360.0;
    for (int a = 0; a <= 360; a += 90)
        if (fabs(cw - a) < 1.0)
            return a % 360;
    return 0;
}

/* The video stream to read: libavformat's best, unless that is a cover
 * picture (an attached still, e.g. an MP4's artwork) while a real one exists. */
static int pick_stream(reader *r, const AVCodec **codec)
{
    int best = av_find_best_stream(r->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, codec, 0);
    if (best < 0 || !(r->fmt->streams[best]->disposition & AV_DISPOSITION_ATTACHED_PIC))
        return best;
    for (unsigned i = 0; i < r->fmt->nb_streams; i++) {
        const AVStream *st = r->fmt->streams[i];
        if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
            !(st->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
            *codec = avcodec_find_decoder(st->codecpar->codec_id);
            return *codec ? (int)i : AVERROR_DECODER_NOT_FOUND;
        }
    }
    return AVERROR_STREAM_NOT_FOUND;
}

static sl_status check_pixels(const reader *r, int w, int h)
{
    if ((uint64_t)w * (uint64_t)h > r->params->image.max_input_pixels)
        return sl_fail(SL_ERR_TOO_LARGE,
                       "%s: %dx%d pixels exceeds the limit of %llu pixels (max_input_pixels)",
                       r->name, w, h, (unsigned long long)r->params->image.max_input_pixels);
    return SL_OK;
}

/* Demuxer, stream and decoder; nothing decoded yet. */
static sl_status reader_open(reader *r)
{
    enum { IO_BUFFER = 32768 };
    uint8_t *buf = av_malloc(IO_BUFFER);
    if (buf)
        r->avio = avio_alloc_context(buf, IO_BUFFER, 0, &r->in, input_read, NULL, input_seek);
    if (!r->avio) {
        av_free(buf);
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory", r->name);
    }
    r->fmt = avformat_alloc_context();
    if (!r->fmt)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory", r->name);
    r->fmt->pb = r->avio;
    r->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    r->fmt->io_open = refuse_io_open;
    r->fmt->format_whitelist = av_strdup("mov,matroska,avi,mpegts");
    r->fmt->protocol_whitelist = av_strdup("");
    r->fmt->probesize = 5000000;
    r->fmt->max_analyze_duration = 5 * AV_TIME_BASE;
    if (!r->fmt->format_whitelist || !r->fmt->protocol_whitelist)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory", r->name);
    const AVInputFormat *demuxer = av_find_input_format(r->cont.demuxer);
    if (!demuxer)
        return sl_fail(SL_ERR_DECODE, "%s: this FFmpeg has no %s demuxer", r->name,
                       r->cont.demuxer);
    AVDictionary *opts = NULL;
    /* mov: never follow a data reference to another file (off by default;
     * said here so a changed default cannot turn it on). */
    av_dict_set(&opts, "enable_drefs", "0", 0);
    av_dict_set(&opts, "use_absolute_path", "0", 0);
    int rc = avformat_open_input(&r->fmt, NULL, demuxer, &opts);
    av_dict_free(&opts);
    if (rc < 0) /* r->fmt is freed and NULL */
        return fail_av(r, "cannot read the container", rc);
    rc = avformat_find_stream_info(r->fmt, NULL);
    if (rc < 0)
        return fail_av(r, "cannot read the streams", rc);

    const AVCodec *codec = NULL;
    r->stream = pick_stream(r, &codec);
    if (r->stream == AVERROR_STREAM_NOT_FOUND) {
        int pic = av_find_best_stream(r->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
        return sl_fail(SL_ERR_DECODE, "%s: no video stream%s", r->name,
                       pic >= 0 ? " (only a cover picture)" : "");
    }
    if (r->stream < 0) {
        int i = av_find_best_stream(r->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
        const char *what = i >= 0 ? avcodec_get_name(r->fmt->streams[i]->codecpar->codec_id)
                                  : "unknown";
        return sl_fail(SL_ERR_DECODE, "%s: the video codec (%s) has no decoder in this FFmpeg",
                       r->name, what);
    }
    r->st = r->fmt->streams[r->stream];
    for (unsigned i = 0; i < r->fmt->nb_streams; i++)
        if ((int)i != r->stream)
            r->fmt->streams[i]->discard = AVDISCARD_ALL;
    const AVCodecParameters *par = r->st->codecpar;
    if (par->width <= 0 || par->height <= 0)
        return sl_fail(SL_ERR_DECODE, "%s: the video stream has no frame size", r->name);
    sl_status st = check_pixels(r, par->width, par->height);
    if (st != SL_OK)
        return st;
    if (r->st->time_base.num <= 0 || r->st->time_base.den <= 0)
        return sl_fail(SL_ERR_DECODE, "%s: the video stream has no time base", r->name);
    r->tb = av_q2d(r->st->time_base);
    /* Timestamps are the file's: any int64. Targets stay within half the
     * range so that target - 8 s cannot overflow (see to_ts). */
    r->start = r->st->start_time != AV_NOPTS_VALUE ? r->st->start_time : 0;
    if (r->start < -(INT64_MAX / 4) || r->start > INT64_MAX / 4)
        r->start = 0;
    r->rotation = display_rotation(r->st);

    r->dec = avcodec_alloc_context3(codec);
    if (!r->dec)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory", r->name);
    rc = avcodec_parameters_to_context(r->dec, par);
    if (rc < 0)
        return fail_av(r, "cannot set up the decoder", rc);
    /* One thread: sluice decodes several inputs at once (decode workers),
     * and FFmpeg's frame threads would also add a frame of delay each. */
    r->dec->thread_count = 1;
    r->dec->pkt_timebase = r->st->time_base;
    /* The decoder refuses a frame that grows past the limit mid-stream. */
    r->dec->max_pixels = (int64_t)(r->params->image.max_input_pixels > INT64_MAX
                                       ? INT64_MAX
                                       : r->params->image.max_input_pixels);
    rc = avcodec_open2(r->dec, codec, NULL);
    if (rc < 0)
        return fail_av(r, "cannot open the decoder", rc);
    r->pkt = av_packet_alloc();
    r->frame = av_frame_alloc();
    r->held = av_frame_alloc();
    if (!r->pkt || !r->frame || !r->held)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory", r->name);
    return SL_OK;
}

/* The next decoded frame into r->frame; *got false at the stream's end. */
static sl_status next_frame(reader *r, bool *got)
{
    *got = false;
    for (;;) {
        int rc = avcodec_receive_frame(r->dec, r->frame);
        if (rc == 0) {
            *got = true;
            return SL_OK;
        }
        if (rc == AVERROR_EOF)
            return SL_OK;
        if (rc != AVERROR(EAGAIN)) {
            if (rc == AVERROR(ENOMEM))
                return fail_av(r, "decoding", rc);
            r->decode_error = rc; /* a damaged frame: go on with the next packet */
        }
        if (r->draining)
            return SL_OK;
        rc = av_read_frame(r->fmt, r->pkt);
        if (rc < 0) {
            if (r->in.read_errno || r->in.io_status != SL_OK || rc == AVERROR(ENOMEM))
                return fail_av(r, "reading", rc);
            if (rc != AVERROR_EOF)
                r->decode_error = rc; /* damaged past here: decode what came */
            r->draining = true;
            rc = avcodec_send_packet(r->dec, NULL);
            if (rc < 0 && rc != AVERROR_EOF)
                return SL_OK;
            continue;
        }
        if (r->pkt->stream_index != r->stream) {
            av_packet_unref(r->pkt);
            continue;
        }
        if (++r->decoded > r->params->max_decoded_frames) {
            av_packet_unref(r->pkt);
            return sl_fail(SL_ERR_DECODE,
                           "%s: more than %ld frames decoded while looking for the frames to "
                           "take (max_decoded_frames): too few keyframes to seek to",
                           r->name, r->params->max_decoded_frames);
        }
        /* A frame shown before the target is never taken: one that no other
         * frame refers to (most B-frames) need not be decoded at all. */
        r->dec->skip_frame = r->pkt->pts != AV_NOPTS_VALUE && r->pkt->pts < r->target
                                 ? AVDISCARD_NONREF
                                 : AVDISCARD_DEFAULT;
        rc = avcodec_send_packet(r->dec, r->pkt);
        av_packet_unref(r->pkt);
        if (rc == AVERROR(ENOMEM))
            return fail_av(r, "decoding", rc);
        if (rc < 0 && rc != AVERROR(EAGAIN))
            r->decode_error = rc; /* this packet is damaged; the next may not be */
    }
}

/* Seconds from the stream's start of a timestamp (in double: a file's
 * timestamps may be anything, and their difference overflow). */
static double seconds_of(const reader *r, int64_t ts)
{
    return ((double)ts - (double)r->start) * r->tb;
}

/* A frame's time in the stream's time base: best effort, else the one
 * before it plus its duration. */
static int64_t frame_ts(const reader *r, const AVFrame *f)
{
    if (f->best_effort_timestamp != AV_NOPTS_VALUE)
        return f->best_effort_timestamp;
    if (f->pts != AV_NOPTS_VALUE)
        return f->pts;
    if (!r->have_held)
        return r->start;
    int64_t step = f->pkt_duration > 0 ? f->pkt_duration : 0;
    if (!step && r->st->avg_frame_rate.num > 0 && r->st->avg_frame_rate.den > 0)
        step = av_rescale_q(1, av_inv_q(r->st->avg_frame_rate), r->st->time_base);
    step = step > 0 ? step : 1;
    return r->held_ts < INT64_MAX - step ? r->held_ts + step : r->held_ts;
}

/* Decode forward to the first frame at or after `target` (in the stream's
 * time base); it is then r->held. At the stream's end r->ended is set and
 * r->held is the last frame (if any). */
static sl_status decode_to(reader *r, int64_t target)
{
    r->target = target;
    while (!r->ended && !(r->have_held && r->held_ts >= target)) {
        bool got;
        sl_status st = next_frame(r, &got);
        if (st != SL_OK)
            return st;
        if (!got) {
            r->ended = true;
            break;
        }
        st = check_pixels(r, r->frame->width, r->frame->height);
        if (st != SL_OK)
            return st;
        int64_t ts = frame_ts(r, r->frame);
        av_frame_unref(r->held);
        av_frame_move_ref(r->held, r->frame);
        r->have_held = true;
        r->held_ts = ts;
        double t = seconds_of(r, ts);
        if (t > r->last_time)
            r->last_time = t;
    }
    return SL_OK;
}

/* Should the decoder seek for `target`, or decode forward from where it
 * is? Forward when the keyframe before the target is at or before the
 * current frame. That keyframe is known from the stream's index only when
 * the index reaches the target: MP4 and AVI have it whole from the header;
 * Matroska's grows as clusters are read until the first seek loads its cues;
 * MPEG-TS has none (libavformat's entries there are every packet, marked
 * keyframes). Without it, forward within two seconds. */
static bool should_seek(reader *r, int64_t target)
{
    if (r->have_held && r->held_ts >= target)
        return false;
    int64_t here = r->have_held ? r->held_ts : r->start;
    int n = avformat_index_get_entries_count(r->st);
    const AVIndexEntry *last = n > 0 ? avformat_index_get_entry(r->st, n - 1) : NULL;
    if (strcmp(r->cont.demuxer, "mpegts") != 0 && last && last->timestamp >= target) {
        int i = av_index_search_timestamp(r->st, target, AVSEEK_FLAG_BACKWARD);
        const AVIndexEntry *key = i >= 0 ? avformat_index_get_entry(r->st, i) : NULL;
        if (key)
            return key->timestamp > here;
    }
    return seconds_of(r, target) - seconds_of(r, here) > 2.0;
}

/* Seeks to the keyframe at or before `at`; false (and the decoder where it
 * was) when the demuxer cannot. */
static bool seek(reader *r, int64_t at)
{
    int rc = av_seek_frame(r->fmt, r->stream, at, AVSEEK_FLAG_BACKWARD);
    if (rc < 0) {
        char cause[AV_ERROR_MAX_STRING_SIZE];
        sl_log(SL_LOG_DEBUG, "%s: cannot seek to %.3f s (%s); decoding on", r->name,
               seconds_of(r, at), av_err(rc, cause, sizeof cause));
        return false;
    }
    avcodec_flush_buffers(r->dec);
    av_frame_unref(r->held);
    r->have_held = false;
    r->draining = false;
    r->ended = false;
    return true;
}

/* Decodes to the first frame at or after `target` (then r->held), seeking
 * first when that is shorter. A seek must land at or before the target's
 * keyframe: MPEG-TS's search by timestamp can land on a packet after it,
 * and the decoder then starts at the next keyframe, past the target; so
 * while the first frame after a seek is past the target, seek again 1, 2,
 * 4, 8 s earlier. */
static sl_status find(reader *r, int64_t target)
{
    if (should_seek(r, target)) {
        int64_t back = 0, second = (int64_t)ceil(1.0 / r->tb);
        for (int tries = 0; tries < 5; tries++) {
            int64_t at = target - back;
            if (at < r->start)
                at = r->start;
            if (!seek(r, at))
                break;
            sl_status st = decode_to(r, INT64_MIN); /* the first frame */
            if (st != SL_OK)
                return st;
            if (!r->have_held || r->held_ts <= target || at == r->start)
                break;
            back = back ? back * 2 : second;
        }
    }
    return decode_to(r, target);
}

/* Grows *buf to at least `need` bytes (its old content dropped): from
 * av_malloc when `aligned` (libswscale's SIMD stores want it), else
 * sl_malloc. False when out of memory. */
static bool room(uint8_t **buf, size_t *cap, size_t need, bool aligned)
{
    if (need <= *cap)
        return true;
    if (aligned)
        av_free(*buf);
    else
        sl_free(*buf);
    *buf = aligned ? av_malloc(need) : sl_malloc(need);
    *cap = *buf ? need : 0;
    return *buf != NULL;
}

/* r->held as an sl_image: scaled so the longer edge is at most max_edge,
 * converted to RGB24, turned upright. */
static sl_status convert(reader *r, sl_image **out)
{
    const AVFrame *f = r->held;
    int w = f->width, h = f->height;
    int dw = w, dh = h, edge = w > h ? w : h;
    int max_edge = r->params->image.max_edge;
    if (max_edge > 0 && edge > max_edge) {
        double s = (double)max_edge / edge;
        dw = w >= h ? max_edge : (int)lround(w * s);
        dh = h > w ? max_edge : (int)lround(h * s);
        dw = dw < 1 ? 1 : dw;
        dh = dh < 1 ? 1 : dh;
    }
    /* Accurate rounding and full chroma: 3 ms of a 65 ms video (bench/video). */
    int flags = SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT;
    r->sws = sws_getCachedContext(r->sws, w, h, (enum AVPixelFormat)f->format, dw, dh,
                                  AV_PIX_FMT_RGB24, flags, NULL, NULL, NULL);
    if (!r->sws)
        return sl_fail(SL_ERR_DECODE, "%s: cannot convert %dx%d %s frames to RGB", r->name, w, h,
                       av_get_pix_fmt_name((enum AVPixelFormat)f->format)
                           ? av_get_pix_fmt_name((enum AVPixelFormat)f->format)
                           : "unknown");
    /* Untagged video is BT.601 below 720 lines and BT.709 from there, as
     * players assume; full range when tagged so or a JPEG (yuvj) format. */
    int cs = f->colorspace;
    if (cs == AVCOL_SPC_UNSPECIFIED || cs == AVCOL_SPC_RESERVED || cs == AVCOL_SPC_RGB)
        cs = h >= 720 ? SWS_CS_ITU709 : SWS_CS_ITU601;
    enum AVPixelFormat pf = f->format;
    int full = f->color_range == AVCOL_RANGE_JPEG || pf == AV_PIX_FMT_YUVJ420P ||
               pf == AV_PIX_FMT_YUVJ422P || pf == AV_PIX_FMT_YUVJ444P ||
               pf == AV_PIX_FMT_YUVJ440P || pf == AV_PIX_FMT_YUVJ411P;
    sws_setColorspaceDetails(r->sws, sws_getCoefficients(cs), full,
                             sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);

    int stride = (dw * 3 + 63) & ~63;
    if (!room(&r->scaled, &r->scaled_cap, (size_t)stride * (size_t)dh + 64, true) ||
        !room(&r->packed, &r->packed_cap, (size_t)dw * (size_t)dh * 3, false))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory for a %dx%d frame", r->name, dw, dh);
    uint8_t *dst[4] = {r->scaled, NULL, NULL, NULL};
    int dst_stride[4] = {stride, 0, 0, 0};
    if (sws_scale(r->sws, (const uint8_t *const *)f->data, f->linesize, 0, h, dst, dst_stride) <= 0)
        return sl_fail(SL_ERR_DECODE, "%s: cannot convert a frame to RGB", r->name);
    int ow = r->rotation % 180 ? dh : dw, oh = r->rotation % 180 ? dw : dh;
    if (r->rotation == 0) {
        for (int y = 0; y < dh; y++)
            memcpy(r->packed + (size_t)y * dw * 3, r->scaled + (size_t)y * stride, (size_t)dw * 3);
        return sl_image_from_rgb(dw, dh, r->packed, out);
    }
    for (int y = 0; y < oh; y++) {
        uint8_t *row = r->packed + (size_t)y * ow * 3;
        for (int x = 0; x < ow; x++) {
            int sx, sy; /* the source pixel shown at (x, y) */
            switch (r->rotation) {
            case 90: sx = y; sy = dh - 1 - x; break;
            case 180: sx = dw - 1 - x; sy = dh - 1 - y; break;
            case 270: sx = dw - 1 - y; sy = x; break;
            default: sx = x; sy = y; break;
            }
            memcpy(row + (size_t)x * 3, r->scaled + (size_t)sy * stride + (size_t)sx * 3, 3);
        }
    }
    return sl_image_from_rgb(ow, oh, r->packed, out);
}

static int frames_for(double duration, const sl_video_params *p)
{
    double n = p->fps > 0 ? ceil(duration * p->fps - 1e-6) : p->max_frames;
    if (!(n >= 1))
        n = 1;
    return n > p->max_frames ? p->max_frames : (int)n;
}

/* The first timestamp at or after `seconds` from the start (a coarse time
 * base, e.g. AVI's 1/fps, must not round to the frame before), within
 * +-INT64_MAX/2 whatever the file says. */
static int64_t to_ts(const reader *r, double seconds)
{
    double ts = ceil((double)r->start + seconds / r->tb - 1e-6);
    if (!(ts < 4e18))
        return INT64_MAX / 2;
    return ts > -4e18 ? (int64_t)ts : -(INT64_MAX / 2);
}

/* Takes the frames the header describes into v. */
static sl_status sample(reader *r, sl_video *v)
{
    const sl_video_params *p = r->params;
    double duration = 0;
    if (r->st->duration != AV_NOPTS_VALUE && r->st->duration > 0)
        duration = (double)r->st->duration * r->tb;
    else if (r->fmt->duration != AV_NOPTS_VALUE && r->fmt->duration > 0)
        duration = (double)r->fmt->duration / AV_TIME_BASE;
    bool known = duration > 0 && isfinite(duration);
    int n = known ? frames_for(duration, p) : p->max_frames;
    double step = p->fps > 0 ? 1.0 / p->fps : 1.0;

    for (int i = 0; i < n; i++) {
        double t = known ? (i + 0.5) * duration / n : i * step;
        int64_t target = to_ts(r, t);
        sl_status st = find(r, target);
        if (st != SL_OK)
            return st;
        if (!r->have_held)
            break;
        /* Past the end: the last frame when the duration promised more,
         * nothing more when the duration is unknown. */
        if (r->ended && !known && r->held_ts < target)
            break;
        if (r->held_taken && r->held_ts == r->taken_ts) {
            if (r->ended)
                break;
            continue; /* the frame of the span before: frames sparser than spans */
        }
        sl_image *img;
        st = convert(r, &img);
        if (st != SL_OK)
            return st;
        v->frames[v->n] = img;
        v->times[v->n] = seconds_of(r, r->held_ts);
        v->n++;
        r->held_taken = true;
        r->taken_ts = r->held_ts;
        if (r->ended)
            break;
    }
    if (v->n == 0) {
        char cause[AV_ERROR_MAX_STRING_SIZE];
        if (r->decode_error)
            return sl_fail(SL_ERR_DECODE, "%s: no frame could be decoded: %s", r->name,
                           av_err(r->decode_error, cause, sizeof cause));
        return sl_fail(SL_ERR_DECODE, "%s: no frame could be decoded", r->name);
    }
    v->duration = known ? duration : r->last_time;
    sl_log(SL_LOG_DEBUG, "%s: %d frames of %.3f s taken, %ld packets decoded", r->name, v->n,
           v->duration, r->decoded);
    return SL_OK;
}

static sl_status check_params(const sl_video_params *p, const char *name)
{
    if (p->max_frames < 1 || p->max_frames > SL_VIDEO_MAX_FRAMES)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: max_frames must be 1..%d, got %d", name,
                       SL_VIDEO_MAX_FRAMES, p->max_frames);
    if (!(p->fps >= 0) || !isfinite(p->fps))
        return sl_fail(SL_ERR_INVALID_ARG, "%s: fps must be 0 or more, got %g", name, p->fps);
    if (p->max_decoded_frames < 1)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: max_decoded_frames must be at least 1, got %ld",
                       name, p->max_decoded_frames);
    if (p->image.max_edge < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: max_edge must be 0 or more, got %d", name,
                       p->image.max_edge);
    return SL_OK;
}

/* *params, or the defaults (into *defaults) when it is NULL; checked. */
static sl_status use_params(const sl_video_params **params, sl_video_params *defaults,
                            const char *name)
{
    *defaults = sl_video_default_params();
    if (!*params)
        *params = defaults;
    return check_params(*params, name);
}

/* Reads what `r->in` holds; `head` is its first bytes (up to 1 KiB). */
static sl_status run(reader *r, const uint8_t *head, size_t head_len, sl_video **out)
{
    if (r->in.size == 0)
        return sl_fail(SL_ERR_DECODE, "%s: empty file (0 bytes)", r->name);
    if (!video_detect(head, head_len, &r->cont))
        return sl_fail(SL_ERR_DECODE,
                       "%s: not a video in a supported container (MP4/MOV, Matroska/WebM, AVI, "
                       "MPEG-TS)",
                       r->name);
    pthread_once(&ffmpeg_once, init_ffmpeg);
    log_input = r->name;
    sl_video *v = sl_calloc(1, sizeof *v);
    sl_status st = v ? reader_open(r) : sl_fail(SL_ERR_NOMEM, "%s: out of memory", r->name);
    if (st == SL_OK) {
        v->container = r->cont.name;
        v->codec = avcodec_get_name(r->st->codecpar->codec_id);
        int w = r->st->codecpar->width, h = r->st->codecpar->height;
        v->source_width = r->rotation % 180 ? h : w;
        v->source_height = r->rotation % 180 ? w : h;
        st = sample(r, v);
    }
    /* A failed read FFmpeg got past (a seek it gave up on) still fails the
     * video: its frames might not be the ones asked for. */
    if (st == SL_OK && r->in.io_status != SL_OK)
        st = sl_fail(r->in.io_status, "%s: %s", r->name, r->in.io_error);
    log_input = NULL;
    reader_close(r);
    if (st != SL_OK) {
        sl_video_free(v);
        return st;
    }
    *out = v;
    return SL_OK;
}

sl_status sl_video_decode(const void *data, size_t len, const char *name,
                          const sl_video_params *params, sl_video **out)
{
    *out = NULL;
    name = name ? name : "video";
    sl_video_params defaults;
    sl_status st = use_params(&params, &defaults, name);
    if (st != SL_OK)
        return st;
    if (!data && len)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: no data", name);
    reader r = {.name = name, .params = params};
    r.in = (input){.data = data, .fd = -1, .size = (int64_t)len};
    return run(&r, data, len < 1024 ? len : 1024, out);
}

sl_status sl_video_load_file(const char *path, const sl_video_params *params, sl_video **out)
{
    *out = NULL;
    sl_video_params defaults;
    sl_status st = use_params(&params, &defaults, path);
    if (st != SL_OK)
        return st;
    int fd;
    uint64_t size;
    if ((st = sl_file_open_regular(path, &fd, &size)) != SL_OK) {
        char why[768]; /* sl_fail writes where sl_last_error reads */
        snprintf(why, sizeof why, "%s", sl_last_error());
        return sl_fail(st == SL_ERR_INVALID_ARG ? SL_ERR_IO : st, "%s", why);
    }
    uint8_t head[1024];
    ssize_t got;
    do
        got = pread(fd, head, sizeof head, 0);
    while (got < 0 && errno == EINTR);
    if (got < 0) {
        int err = errno;
        close(fd);
        return sl_fail(SL_ERR_IO, "%s: read error: %s", path, strerror(err));
    }
    reader r = {.name = path, .params = params};
    r.in = (input){.data = NULL, .fd = fd, .size = (int64_t)size};
    st = run(&r, head, (size_t)got, out);
    close(fd);
    return st;
}

sl_status sl_video_load_io(const sl_video_io *io, const char *name, const sl_video_params *params,
                           sl_video **out)
{
    *out = NULL;
    name = name ? name : "video";
    sl_video_params defaults;
    sl_status st = use_params(&params, &defaults, name);
    if (st != SL_OK)
        return st;
    if (!io || !io->read || io->size > INT64_MAX)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: no reader, or a size past 2^63", name);
    reader r = {.name = name, .params = params};
    r.in = (input){.io = io, .fd = -1, .size = (int64_t)io->size};
    uint8_t head[1024];
    int got = io->size ? io_read(&r.in, head, io->size < sizeof head ? (int)io->size : 1024) : 0;
    if (got < 0)
        return sl_fail(r.in.io_status, "%s: %s", name, r.in.io_error);
    return run(&r, head, (size_t)got, out);
}

int sl_video_n_frames(const sl_video *video) { return video->n; }

const sl_image *sl_video_frame(const sl_video *video, int i)
{
    return i >= 0 && i < video->n ? video->frames[i] : NULL;
}

sl_image *sl_video_take_frame(sl_video *video, int i)
{
    if (i < 0 || i >= video->n)
        return NULL;
    sl_image *frame = video->frames[i];
    video->frames[i] = NULL;
    return frame;
}

double sl_video_frame_time(const sl_video *video, int i)
{
    return i >= 0 && i < video->n ? video->times[i] : 0.0;
}

double sl_video_duration(const sl_video *video) { return video->duration; }
int sl_video_source_width(const sl_video *video) { return video->source_width; }
int sl_video_source_height(const sl_video *video) { return video->source_height; }
const char *sl_video_container(const sl_video *video) { return video->container; }
const char *sl_video_codec(const sl_video *video) { return video->codec; }

size_t sl_video_bytes(const sl_video *video)
{
    size_t n = sizeof *video;
    for (int i = 0; i < video->n; i++)
        if (video->frames[i])
            n += sl_image_bytes(video->frames[i]);
    return n;
}

void sl_video_free(sl_video *video)
{
    if (!video)
        return;
    for (int i = 0; i < video->n; i++)
        sl_image_free(video->frames[i]);
    sl_free(video);
}
