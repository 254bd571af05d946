/* sluice/video.h — frames sampled from a video, for a VLM to read as images.
 *
 * FFmpeg's libraries (libavformat demuxes, libavcodec decodes, libswscale
 * converts) read a video from memory or from a file through sluice's own
 * read and seek callbacks: no FFmpeg protocol is opened, so nothing a file
 * names (another file, a URL, a playlist entry) is ever read. Only these
 * containers are accepted: MP4/MOV/M4V, Matroska/WebM, AVI and MPEG-TS
 * (others, e.g. a GIF, are images: sluice/image.h).
 *
 * Which frames: the video's best video stream is cut into n equal spans,
 * n = min(max_frames, max(1, ceil(duration * fps))) (fps 0: max_frames), and
 * the frame shown at the middle of each span is taken (the first frame
 * whose timestamp is at or after it; the last frame when the stream ends
 * first). A frame is taken once: when frames are sparser than spans, fewer
 * come back. A stream of unknown duration gives a frame every 1/fps seconds
 * from its start (fps 0: every second), up to max_frames. Frames are found
 * by seeking to the keyframe before each time and decoding forward, so a
 * long video costs about n keyframe intervals, not its length.
 *
 * Each frame becomes an sl_image (8-bit sRGB, 3 channels): the display
 * rotation of phone videos is applied, and it is shrunk (bicubic) so its
 * longer edge is at most image.max_edge; a stream whose coded
 * width*height exceeds image.max_input_pixels is refused before decoding.
 * A video that cannot be read (not one of the containers, no video
 * stream, a codec FFmpeg lacks, damaged before the first frame, past
 * max_decoded_frames while looking) fails with a message naming `name`
 * and the cause (FFmpeg's own words where it has them).
 *
 * An sl_video may be read from several threads; its frames are borrowed
 * from it and valid until sl_video_free(), unless taken (the one call that
 * changes it: sl_video_take_frame).
 */
#ifndef SLUICE_VIDEO_H
#define SLUICE_VIDEO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Frames per video at most (an engine request's images at most). */
#define SL_VIDEO_MAX_FRAMES 16

typedef struct sl_video sl_video;

typedef struct sl_video_params {
    int max_frames;          /* 1..SL_VIDEO_MAX_FRAMES (default 8) */
    double fps;              /* frames per second of video at most (default 1); 0: max_frames */
    sl_image_params image;   /* max_edge and max_input_pixels for each frame */
    /* Frames decoded in all while looking for the n frames, at most: a
     * bound on the work one file can ask for (a stream whose only keyframe
     * is its first). Default 20,000. */
    long max_decoded_frames;
} sl_video_params;

sl_video_params sl_video_default_params(void);

/* Decode `len` bytes (read, not kept: the caller may free them after the
 * call). `name` names the input in error messages. On failure *out is NULL
 * and sl_last_error() names `name` and the cause: SL_ERR_DECODE (not a
 * video, damaged, past max_decoded_frames), SL_ERR_TOO_LARGE (past
 * max_input_pixels), SL_ERR_INVALID_ARG (params), SL_ERR_NOMEM. */
sl_status sl_video_decode(const void *data, size_t len, const char *name,
                          const sl_video_params *params, sl_video **out);

/* The same from the file at `path`, read in place (not loaded whole); also
 * SL_ERR_NOT_FOUND when it does not exist and SL_ERR_IO when it cannot be
 * read (a folder, a read error). Messages name `path`. */
sl_status sl_video_load_file(const char *path, const sl_video_params *params, sl_video **out);

/* Where a video's bytes come from when they are neither in memory nor a
 * local file (a URL read by ranged requests, say): `read` puts up to len
 * bytes of the video at offset into dst and sets *got, fewer than len only
 * at its end; on failure it returns another status than SL_OK, and the
 * message it left in sl_last_error() (sluice's own readers leave one; else
 * the status's name is used) becomes the video's error after `name`, with
 * that status. `size` is the video's length in bytes. FFmpeg reads through
 * it in pieces of at most 32 KiB, seeking as the container needs, so a
 * read-ahead is the reader's business. */
typedef struct sl_video_io {
    sl_status (*read)(void *user, void *dst, size_t len, uint64_t offset, size_t *got);
    void *user;
    uint64_t size;
} sl_video_io;

/* The same read through io (not kept: io and what it reads are used only
 * during this call, on the calling thread, and may be freed after it).
 * Messages name `name`. A failed read fails the video even when FFmpeg
 * could go on without it. */
sl_status sl_video_load_io(const sl_video_io *io, const char *name, const sl_video_params *params,
                           sl_video **out);

/* Do these first bytes (16 are enough) start a container this module
 * reads? MP4/MOV ('ftyp' at 4 with a video brand; not AVIF/HEIF, which are
 * images; or an old QuickTime file's first atom: moov, mdat, wide, free,
 * skip, pnot), Matroska/WebM (EBML), AVI (RIFF....AVI ), MPEG-TS (0x47 sync
 * bytes 188 apart, when len allows; else the first, with a valid
 * adaptation field control, and not "GIF8": a GIF starts with 0x47 too). */
bool sl_video_sniff(const void *data, size_t len);

/* Does the path end in a video extension (.mp4 .m4v .mov .mkv .webm .avi
 * .ts; any case)? Folders and tar shards pick video members by it. */
bool sl_video_path_is_video(const char *path);

int sl_video_n_frames(const sl_video *video);
/* Frame i (0-based, < n_frames): borrowed, valid until sl_video_free(). */
const sl_image *sl_video_frame(const sl_video *video, int i);
/* Frame i handed over to the caller, who frees it with sl_image_free()
 * (no copy of its pixels); the video keeps its time, sl_video_frame() then
 * gives NULL for it. NULL when i is out of range or the frame was taken. */
sl_image *sl_video_take_frame(sl_video *video, int i);
/* Frame i's time in seconds from the stream's start. */
double sl_video_frame_time(const sl_video *video, int i);
/* The stream's duration in seconds (the container's when the stream has
 * none; the last frame's time when neither says). */
double sl_video_duration(const sl_video *video);
/* The stream's frame size as displayed (rotation applied), before shrinking. */
int sl_video_source_width(const sl_video *video);
int sl_video_source_height(const sl_video *video);
/* The container ("mp4", "mov", "webm", "matroska", "avi", "mpegts") and
 * codec ("h264", "hevc", "vp9", "av1", ...) names; static strings. */
const char *sl_video_container(const sl_video *video);
const char *sl_video_codec(const sl_video *video);
/* Bytes held (the frames' pixels and headers, taken ones not), for memory
 * accounting. */
size_t sl_video_bytes(const sl_video *video);

void sl_video_free(sl_video *video);

#ifdef __cplusplus
}
#endif
#endif
