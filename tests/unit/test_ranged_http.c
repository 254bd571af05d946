/* Unit tests: io/ranged.h over http(s) (io/fetch.h's ranged GETs) and
 * videos read through it (sluice/video.h's sl_video_load_io), against a
 * local server (libmicrohttpd) that answers Range requests, ignores them,
 * cuts its answers, redirects, or has nothing. Checked: bytes and sizes
 * equal the file's, the read-ahead's request count (one per block), a
 * server without Range support stopped early rather than read whole,
 * errors naming the URL, max_bytes, servers that tag one file with
 * different ETags read by its Last-Modified; and a video's frames over HTTP equal
 * those of the same file read locally, at a fraction of its bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <microhttpd.h>

#include "core/error.h"
#include "io/ranged.h"
#include "sluice/log.h"
#include "sluice/video.h"
#include "test_frames.h"
#include "test_util.h"

/* --- the server ---------------------------------------------------------------- */

/* GET /MODE/NAME serves the file NAME of the fixture folder:
 *   range     honours Range (206 with Content-Range; 416 past the end)
 *   norange   ignores it (200 with the whole file, read out in 16 KiB pieces)
 *   cut       honours it, but closes the connection halfway through the body
 *   short     answers 206 with a Content-Range of the range asked for and
 *             half of its bytes (a consistent Content-Length)
 *   redirect  302 to /range/NAME
 *   farm      honours it as servers behind a balancer do whose ETags differ
 *             for one file (Apache's from the inode): each answer is a node's
 *             (nodes 0 1 1 0 0 1 1 ... in turn), with its own ETag "nN" and
 *             the one Last-Modified; If-Match of another node's ETag, or an
 *             If-Unmodified-Since of another date, is a 412
 *   lax       as farm, but If-Match is ignored (the node's own ETag answers)
 *   changed   as farm, but the file is rewritten after the first answer (a
 *             later Last-Modified from then on)
 * anything else, or a missing NAME, is a 404. */
static struct {
    struct MHD_Daemon *d;
    char url[64];
    char dir[256];
    atomic_long requests;
    atomic_llong bytes; /* body bytes the server produced */
    atomic_long farm_answers; /* farm and changed: the answers so far */
} srv;

typedef struct body {
    uint8_t *data;
    size_t len;   /* bytes to send */
    size_t stop;  /* send this many, then fail the connection (cut) */
} body;

static ssize_t body_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    body *b = cls;
    if (pos >= b->stop)
        return b->stop < b->len ? MHD_CONTENT_READER_END_WITH_ERROR
                                : MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = b->stop - pos < max ? b->stop - (size_t)pos : max;
    memcpy(buf, b->data + pos, n);
    atomic_fetch_add(&srv.bytes, (long long)n);
    return (ssize_t)n;
}

static void body_free(void *cls)
{
    body *b = cls;
    free(b->data);
    free(b);
}

/* A farm node's ETag and Last-Modified for the answer this connection's
 * thread is making, "" for none. */
static _Thread_local struct {
    char etag[16];
    char modified[64];
} tagged;

static enum MHD_Result answer(struct MHD_Connection *c, unsigned code, body *b,
                              const char *content_range)
{
    struct MHD_Response *resp =
        b ? MHD_create_response_from_callback(b->len, 16 << 10, body_read, b, body_free)
          : MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (content_range)
        MHD_add_response_header(resp, "Content-Range", content_range);
    if (tagged.etag[0])
        MHD_add_response_header(resp, "ETag", tagged.etag);
    if (tagged.modified[0])
        MHD_add_response_header(resp, "Last-Modified", tagged.modified);
    enum MHD_Result rc = MHD_queue_response(c, code, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version, const char *upload,
                             size_t *upload_size, void **con_cls)
{
    atomic_fetch_add(&srv.requests, 1);
    char mode[32] = "", name[256] = "";
    sscanf(url, "/%31[^/]/%255s", mode, name);
    if (strcmp(mode, "redirect") == 0) {
        char to[512];
        snprintf(to, sizeof to, "/range/%s", name);
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Location", to);
        enum MHD_Result rc = MHD_queue_response(c, 302, resp);
        MHD_destroy_response(resp);
        return rc;
    }
    tagged.etag[0] = tagged.modified[0] = '\0';
    bool lax = strcmp(mode, "lax") == 0;
    if (strcmp(mode, "farm") == 0 || strcmp(mode, "changed") == 0 || lax) {
        long k = atomic_fetch_add(&srv.farm_answers, 1);
        snprintf(tagged.etag, sizeof tagged.etag, "\"n%ld\"", (k + 1) / 2 % 2);
        snprintf(tagged.modified, sizeof tagged.modified, "Mon, 30 Nov 2026 10:00:%02d GMT",
                 strcmp(mode, "changed") == 0 && k > 0 ? 7 : 0);
        const char *match = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-Match");
        const char *since = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                        "If-Unmodified-Since");
        if ((match && !lax && strcmp(match, tagged.etag) != 0) ||
            (since && strcmp(since, tagged.modified) != 0))
            return answer(c, 412, NULL, NULL);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/%s", srv.dir, name);
    FILE *fp = name[0] ? fopen(path, "rb") : NULL;
    bool known = strcmp(mode, "range") == 0 || strcmp(mode, "norange") == 0 ||
                 strcmp(mode, "cut") == 0 || strcmp(mode, "short") == 0 ||
                 strcmp(mode, "farm") == 0 || strcmp(mode, "changed") == 0 || lax;
    if (!fp || !known) {
        if (fp)
            fclose(fp);
        return answer(c, 404, NULL, NULL);
    }
    fseek(fp, 0, SEEK_END);
    size_t len = (size_t)ftell(fp);
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    unsigned long long a = 0, z = len ? len - 1 : 0, n;
    bool ranged = range && strcmp(mode, "norange") != 0;
    if (ranged && sscanf(range, "bytes=-%llu", &n) == 1) {
        a = n < len ? len - n : 0;
    } else if (ranged && sscanf(range, "bytes=%llu-%llu", &a, &z) == 2) {
        z = z < len ? z : len - 1;
    } else if (ranged) {
        fclose(fp);
        return answer(c, 400, NULL, NULL);
    }
    if (ranged && a >= len) {
        char cr[64];
        snprintf(cr, sizeof cr, "bytes */%zu", len);
        fclose(fp);
        return answer(c, 416, NULL, cr);
    }
    body *b = calloc(1, sizeof *b);
    b->len = len ? (size_t)(z - a + 1) : 0;
    b->data = malloc(b->len ? b->len : 1);
    fseek(fp, (long)a, SEEK_SET);
    if (fread(b->data, 1, b->len, fp) != b->len)
        abort();
    fclose(fp);
    b->stop = strcmp(mode, "cut") == 0 ? b->len / 2 : b->len;
    if (strcmp(mode, "short") == 0)
        b->len = b->stop = b->len / 2;
    if (!ranged)
        return answer(c, 200, b, NULL);
    char cr[96];
    snprintf(cr, sizeof cr, "bytes %llu-%llu/%zu", a, z, len);
    return answer(c, 206, b, cr);
}

static int start_server(void **state)
{
    sl_log_set_level(SL_LOG_ERROR);
    snprintf(srv.dir, sizeof srv.dir, "%s", tu_tmpdir());
    srv.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                             NULL, NULL, serve, NULL, MHD_OPTION_END);
    if (!srv.d)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(srv.url, sizeof srv.url, "http://127.0.0.1:%u", (unsigned)info->port);
    return 0;
}

static int stop_server(void **state)
{
    MHD_stop_daemon(srv.d);
    tu_rmtree(srv.dir);
    return 0;
}

/* --- helpers ------------------------------------------------------------------- */

static char *url_of(const char *mode, const char *name)
{
    static char urls[4][512];
    static int next;
    char *u = urls[next++ % 4];
    snprintf(u, 512, "%s/%s/%s", srv.url, mode, name);
    return u;
}

/* A file of n bytes that differ from their neighbours; the caller frees it. */
static uint8_t *pattern_file(const char *name, size_t n)
{
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 131 + (i >> 13));
    tu_write(srv.dir, name, data, n);
    return data;
}

static sl_ranged *open_url(const char *url, const sl_ranged_params *p)
{
    sl_ranged *r = NULL;
    if (sl_ranged_open_with(url, p, &r) != SL_OK)
        fail_msg("cannot open %s: %s", url, sl_last_error());
    return r;
}

/* --- the ranged reader over HTTP ----------------------------------------------- */

static void reads_a_url_at_offsets(void **state)
{
    size_t n = 300000;
    uint8_t *data = pattern_file("f.bin", n);
    const char *urls[] = {url_of("range", "f.bin"), url_of("redirect", "f.bin")};
    for (int u = 0; u < 2; u++) {
        sl_ranged *r = open_url(urls[u], NULL);
        assert_true(sl_ranged_is_remote(r));
        uint8_t buf[5000];
        size_t got = 99;
        long before = atomic_load(&srv.requests);
        assert_int_equal(sl_ranged_read(r, buf, 1000, 1234, &got), SL_OK);
        assert_int_equal(got, 1000);
        assert_memory_equal(buf, data + 1234, 1000);
        /* The size came with that answer: no request of its own. */
        uint64_t size = 0;
        assert_int_equal(sl_ranged_size(r, &size), SL_OK);
        assert_int_equal(size, n);
        assert_int_equal(sl_ranged_requests(r), 1);
        assert_int_equal(atomic_load(&srv.requests) - before, u == 0 ? 1 : 2); /* + the 302 */
        /* Across the end: what is there, then nothing, never an error. */
        assert_int_equal(sl_ranged_read(r, buf, 5000, n - 100, &got), SL_OK);
        assert_int_equal(got, 100);
        assert_memory_equal(buf, data + n - 100, 100);
        assert_int_equal(sl_ranged_read(r, buf, 10, n, &got), SL_OK);
        assert_int_equal(got, 0);
        sl_ranged_free(r);
    }
    /* A size asked first comes with the tail, which then serves reads. */
    sl_ranged *r = open_url(urls[0], NULL);
    uint64_t size = 0;
    assert_int_equal(sl_ranged_size(r, &size), SL_OK);
    assert_int_equal(size, n);
    uint8_t buf[100];
    size_t got = 0;
    assert_int_equal(sl_ranged_read(r, buf, 100, n - 1000, &got), SL_OK);
    assert_memory_equal(buf, data + n - 1000, 100);
    assert_int_equal(sl_ranged_requests(r), 1);
    assert_int_equal(sl_ranged_bytes_read(r), SL_RANGED_TAIL);
    sl_ranged_free(r);
    /* Past the end of a file whose size is not known yet: a 416 says it. */
    r = open_url(urls[0], NULL);
    assert_int_equal(sl_ranged_read(r, buf, 10, n + 5, &got), SL_OK);
    assert_int_equal(got, 0);
    assert_int_equal(sl_ranged_size(r, &size), SL_OK);
    assert_int_equal(size, n);
    sl_ranged_free(r);
    free(data);
}

/* Reads the n bytes of r (a copy of data) from start to end, `piece` at a
 * time, checking them. */
static void scan(sl_ranged *r, const uint8_t *data, size_t n, uint8_t *buf, size_t piece)
{
    size_t at = 0, got = 0;
    do {
        assert_int_equal(sl_ranged_read(r, buf, piece, at, &got), SL_OK);
        assert_memory_equal(buf, data + at, got);
        at += got;
    } while (got == piece);
    assert_int_equal(at, n);
}

/* 32 KiB reads from start to end (FFmpeg's): one request a block with a
 * read-ahead of fixed blocks, one a read without it; reads inside kept
 * blocks cost none. */
static void readahead_costs_one_request_a_block(void **state)
{
    const size_t block = 256 << 10, piece = 32 << 10;
    size_t n = 5 * block / 2 + 777; /* 2.5 blocks and a bit: 3 blocks */
    uint8_t *data = pattern_file("ra.bin", n);
    uint8_t *buf = malloc(piece);
    for (int with = 0; with < 2; with++) {
        sl_ranged *r = open_url(url_of("range", "ra.bin"), NULL);
        if (with)
            assert_int_equal(sl_ranged_set_readahead(r, block, block, 2), SL_OK);
        long before = atomic_load(&srv.requests);
        scan(r, data, n, buf, piece);
        size_t got = 0;
        uint64_t want = with ? (n + block - 1) / block : (n + piece - 1) / piece;
        assert_int_equal(sl_ranged_requests(r), want);
        assert_int_equal(atomic_load(&srv.requests) - before, (long)want);
        assert_int_equal(sl_ranged_bytes_read(r), n);
        if (with) { /* back into the two kept blocks (2 and 3): no request */
            assert_int_equal(sl_ranged_read(r, buf, 100, block + 5, &got), SL_OK);
            assert_memory_equal(buf, data + block + 5, 100);
            assert_int_equal(sl_ranged_requests(r), want);
            /* block 1 was dropped (least recently used) */
            assert_int_equal(sl_ranged_read(r, buf, 100, 7, &got), SL_OK);
            assert_memory_equal(buf, data + 7, 100);
            assert_int_equal(sl_ranged_requests(r), want + 1);
            /* a read across two blocks */
            assert_int_equal(sl_ranged_read(r, buf, 1000, block - 500, &got), SL_OK);
            assert_int_equal(got, 1000);
            assert_memory_equal(buf, data + block - 500, 1000);
        }
        sl_ranged_free(r);
    }
    free(buf);
    free(data);
}

/* Fetches grow while the reads go on where the last fetch ended (first,
 * 2 first, ... up to most), and start again at `first` after a jump. */
static void readahead_grows_along_a_run(void **state)
{
    const size_t first = 64 << 10, most = 256 << 10, piece = 32 << 10;
    size_t n = (1 << 20) + 777;
    uint8_t *data = pattern_file("run.bin", n);
    uint8_t *buf = malloc(piece);
    sl_ranged *r = open_url(url_of("range", "run.bin"), NULL);
    assert_int_equal(sl_ranged_set_readahead(r, first, most, 2), SL_OK);
    scan(r, data, n, buf, piece);
    size_t got = 0;
    uint64_t want = 0;
    for (size_t covered = 0, next = first; covered < n; want++) {
        covered += next;
        next = next * 2 < most ? next * 2 : most;
    }
    assert_int_equal(sl_ranged_requests(r), want);
    assert_int_equal(sl_ranged_bytes_read(r), n);
    /* a jump back: a first-sized fetch */
    assert_int_equal(sl_ranged_read(r, buf, 100, 100, &got), SL_OK);
    assert_memory_equal(buf, data + 100, 100);
    assert_int_equal(sl_ranged_requests(r), want + 1);
    assert_int_equal(sl_ranged_bytes_read(r), n + first);
    sl_ranged_free(r);
    free(buf);
    free(data);
}

/* A server that answers a Range with the whole file: the transfer stops,
 * the file is not read whole, and the error says why. A file that fits in
 * what was asked from its start is the answer. */
static void a_server_ignoring_ranges_is_stopped(void **state)
{
    size_t n = 64u << 20;
    uint8_t *data = pattern_file("big.bin", n);
    sl_ranged *r = open_url(url_of("norange", "big.bin"), NULL);
    uint8_t buf[512];
    size_t got = 0;
    long long before = atomic_load(&srv.bytes);
    assert_int_equal(sl_ranged_read(r, buf, sizeof buf, 0, &got), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "ignores Range"));
    assert_non_null(strstr(sl_last_error(), url_of("norange", "big.bin")));
    assert_true(sl_ranged_ignores_ranges(r));
    sl_ranged_free(r);
    /* The server's own count, once it has stopped growing: a small part
     * (what the socket buffers took when the client hung up), not 64 MiB. */
    long long sent = -1;
    for (int i = 0; i < 50 && sent != atomic_load(&srv.bytes) - before; i++) {
        sent = atomic_load(&srv.bytes) - before;
        usleep(100000);
    }
    assert_true(sent < (long long)(n / 4));
    free(data);

    /* A file within the first read is that read's answer; with a
     * read-ahead from its start it is all in the first block, and every
     * read is served. */
    data = pattern_file("small.bin", 300);
    r = open_url(url_of("norange", "small.bin"), NULL);
    assert_int_equal(sl_ranged_read(r, buf, sizeof buf, 0, &got), SL_OK);
    assert_int_equal(got, 300);
    assert_memory_equal(buf, data, 300);
    assert_false(sl_ranged_ignores_ranges(r));
    /* but the next read is another whole file: not what was asked */
    assert_int_equal(sl_ranged_read(r, buf, 10, 100, &got), SL_ERR_IO);
    assert_true(sl_ranged_ignores_ranges(r));
    sl_ranged_free(r);
    r = open_url(url_of("norange", "small.bin"), NULL);
    assert_int_equal(sl_ranged_set_readahead(r, 4096, 4096, 2), SL_OK);
    assert_int_equal(sl_ranged_read(r, buf, 10, 0, &got), SL_OK);
    assert_memory_equal(buf, data, 10);
    assert_int_equal(sl_ranged_read(r, buf, 10, 100, &got), SL_OK);
    assert_memory_equal(buf, data + 100, 10);
    assert_int_equal(sl_ranged_requests(r), 1);
    uint64_t size = 0;
    assert_int_equal(sl_ranged_size(r, &size), SL_OK);
    assert_int_equal(size, 300);
    sl_ranged_free(r);
    free(data);
}

static void errors_name_the_url(void **state)
{
    sl_ranged_params p = sl_ranged_default_params();
    p.retries = 1;
    uint8_t *data = pattern_file("e.bin", 100000);
    uint8_t buf[2000];
    size_t got = 0;

    /* A 404 is not retried. */
    sl_ranged *r = open_url(url_of("range", "none.bin"), &p);
    long before = atomic_load(&srv.requests);
    assert_int_equal(sl_ranged_read(r, buf, 100, 0, &got), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), url_of("range", "none.bin")));
    assert_non_null(strstr(sl_last_error(), "HTTP 404"));
    assert_int_equal(atomic_load(&srv.requests) - before, 1);
    sl_ranged_free(r);

    /* A connection closed mid-answer is retried, then fails. */
    r = open_url(url_of("cut", "e.bin"), &p);
    before = atomic_load(&srv.requests);
    assert_int_equal(sl_ranged_read(r, buf, sizeof buf, 500, &got), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), url_of("cut", "e.bin")));
    assert_int_equal(atomic_load(&srv.requests) - before, 1 + p.retries);
    sl_ranged_free(r);

    /* An answer shorter than its Content-Range: the same, saying so. */
    r = open_url(url_of("short", "e.bin"), &p);
    before = atomic_load(&srv.requests);
    assert_int_equal(sl_ranged_read(r, buf, sizeof buf, 500, &got), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "cut short"));
    assert_int_equal(atomic_load(&srv.requests) - before, 1 + p.retries);
    sl_ranged_free(r);

    /* Not a scheme the reader takes as a URL: a local path that is not there. */
    sl_ranged *none = NULL;
    assert_int_equal(sl_ranged_open_with("ftp://x/y", &p, &none), SL_ERR_NOT_FOUND);
    assert_null(none);
    free(data);
}

/* max_bytes bounds what is fetched in all, read-ahead included. */
/* The warnings logged while a test listens (warned_about). */
static struct {
    int n;
    char last[1024];
} warned;

static void on_log(sl_log_level level, const char *message, void *user)
{
    (void)user;
    if (level >= SL_LOG_WARN) {
        warned.n++;
        snprintf(warned.last, sizeof warned.last, "%s", message);
    }
}

/* Servers behind a balancer that tag one file apart (farm): a read after
 * the first, asking for the first answer's ETag, is refused by a node of
 * another ETag; asked again by its Last-Modified, the same date and size
 * say the same file, and its reads go on keyed by those, with one warning
 * naming the URL; alike when the other node ignores If-Match and answers
 * with its own ETag (lax). Every read after the first failed ('the file
 * changed'). A file rewritten meanwhile (changed) still fails, naming it. */
static void servers_that_tag_one_file_apart_are_read_by_its_date(void **state)
{
    size_t n = 300000;
    uint8_t *data = pattern_file("farm.bin", n);
    sl_log_set_level(SL_LOG_WARN);
    sl_log_set_callback(on_log, NULL);
    uint8_t buf[1000];
    const char *url;
    sl_ranged *r;
    for (int m = 0; m < 2; m++) {
        url = url_of(m ? "lax" : "farm", "farm.bin");
        atomic_store(&srv.farm_answers, 0);
        warned.n = 0;
        r = open_url(url, NULL);
        const uint64_t at[] = {0, 100000, 200000, 290000, 50000, 150000};
        for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
            size_t got = 0;
            if (sl_ranged_read(r, buf, sizeof buf, at[i], &got) != SL_OK)
                fail_msg("%s: read %zu at %llu: %s", url, i, (unsigned long long)at[i],
                         sl_last_error());
            assert_int_equal(got, sizeof buf);
            assert_memory_equal(buf, data + at[i], sizeof buf);
        }
        sl_ranged_free(r);
        /* Each read its own GET, both nodes answering (one asked twice). */
        assert_true(atomic_load(&srv.farm_answers) >= 7);
        assert_int_equal(warned.n, 1);
        assert_non_null(strstr(warned.last, url));
        assert_non_null(strstr(warned.last, "ETag"));
    }

    url = url_of("changed", "farm.bin");
    atomic_store(&srv.farm_answers, 0);
    warned.n = 0;
    r = open_url(url, NULL);
    size_t got = 0;
    assert_int_equal(sl_ranged_read(r, buf, sizeof buf, 0, &got), SL_OK);
    assert_int_equal(sl_ranged_read(r, buf, sizeof buf, 200000, &got), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), url));
    assert_non_null(strstr(sl_last_error(), "changed since its first read"));
    assert_int_equal(warned.n, 0);
    sl_ranged_free(r);
    sl_log_set_callback(NULL, NULL);
    sl_log_set_level(SL_LOG_ERROR);
    free(data);
}

static void max_bytes_bounds_the_bytes_read(void **state)
{
    const size_t block = 64 << 10;
    uint8_t *data = pattern_file("m.bin", 10 * block);
    sl_ranged_params p = sl_ranged_default_params();
    p.max_bytes = 2 * block + block / 2;
    sl_ranged *r = open_url(url_of("range", "m.bin"), &p);
    assert_int_equal(sl_ranged_set_readahead(r, block, block, 4), SL_OK);
    uint8_t buf[100];
    size_t got = 0;
    assert_int_equal(sl_ranged_read(r, buf, 100, 0, &got), SL_OK);
    assert_int_equal(sl_ranged_read(r, buf, 100, block, &got), SL_OK);
    assert_memory_equal(buf, data + block, 100);
    long before = atomic_load(&srv.requests);
    assert_int_equal(sl_ranged_read(r, buf, 100, 5 * block, &got), SL_ERR_TOO_LARGE);
    assert_non_null(strstr(sl_last_error(), url_of("range", "m.bin")));
    assert_int_equal(atomic_load(&srv.requests), before); /* refused before asking */
    assert_int_equal(sl_ranged_bytes_read(r), 2 * block);
    sl_ranged_free(r);
    free(data);
}

/* --- videos over HTTP -------------------------------------------------------- */

#ifdef SLUICE_TEST_VIDEO
static sl_status read_ranged(void *r, void *dst, size_t len, uint64_t offset, size_t *got)
{
    return sl_ranged_read(r, dst, len, offset, got);
}

static sl_status load_url(sl_ranged *r, const char *name, const sl_video_params *p,
                          sl_video **out)
{
    uint64_t size = 0;
    uint8_t head[1];
    size_t got;
    sl_status st = sl_ranged_read(r, head, 1, 0, &got); /* as the decode stage: the size with it */
    if (st == SL_OK)
        st = sl_ranged_size(r, &size);
    if (st != SL_OK)
        return st;
    sl_video_io io = {.read = read_ranged, .user = r, .size = size};
    return sl_video_load_io(&io, name, p, out);
}

static void make_clip(const char *name, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=160x120:r=10:d=30 "
             "-vf noise=alls=30:allf=t+u -pix_fmt yuv420p -c:v libx264 -g 10 -sc_threshold 0 "
             "%s %s/%s",
             args, srv.dir, name);
    if (system(cmd) != 0)
        fail_msg("fixture command failed: %s", cmd);
}

static long file_size(const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", srv.dir, name);
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fclose(fp);
    return n;
}

/* 30 s with a keyframe every second, noise so the frames are most of the
 * file; its index at the end (ffmpeg's default) and at the start. Two
 * frames sampled read the index and two GOPs: with 64 KiB blocks each
 * fetched once, at most ceil(size / block) requests, and far fewer bytes
 * than the file. */
static void a_video_over_http_gives_the_local_frames(void **state)
{
    const size_t block = 64 << 10;
    const char *names[] = {"tail.mp4", "fast.mp4"};
    make_clip(names[0], "");
    make_clip(names[1], "-movflags +faststart");
    for (int c = 0; c < 2; c++) {
        char local[600];
        snprintf(local, sizeof local, "%s/%s", srv.dir, names[c]);
        sl_video_params p = sl_video_default_params();
        p.max_frames = 2;
        p.fps = 0;
        sl_video *a = NULL, *b = NULL;
        assert_int_equal(sl_video_load_file(local, &p, &a), SL_OK);
        sl_ranged *r = open_url(url_of("range", names[c]), NULL);
        assert_int_equal(sl_ranged_set_readahead(r, block, block, 4), SL_OK);
        if (load_url(r, url_of("range", names[c]), &p, &b) != SL_OK)
            fail_msg("%s", sl_last_error());
        assert_int_equal(sl_video_n_frames(a), 2);
        tf_assert_same_frames(a, b);
        long size = file_size(names[c]);
        uint64_t reqs = sl_ranged_requests(r), bytes = sl_ranged_bytes_read(r);
        print_message("%s: %ld bytes; %llu read in %llu requests\n", names[c], size,
                      (unsigned long long)bytes, (unsigned long long)reqs);
        assert_true(size > (long)(8 * block)); /* else the bounds below say nothing */
        assert_true(reqs <= (uint64_t)(size + block - 1) / block);
        assert_true(bytes <= reqs * block);
        assert_true(bytes < (uint64_t)size / 2);
        sl_ranged_free(r);
        sl_video_free(a);
        sl_video_free(b);
    }
}

/* The reader's failures are the video's, with their status and message,
 * whenever FFmpeg meets them: at the first bytes (a 404), mid-file (the
 * bytes bound), or on a server that ignores Range. */
static void a_failed_read_fails_the_video(void **state)
{
    sl_video_params vp = sl_video_default_params();
    sl_video *v = (sl_video *)1;
    sl_ranged *r = open_url(url_of("range", "gone.mp4"), NULL);
    assert_int_equal(load_url(r, "gone.mp4", &vp, &v), SL_ERR_IO);
    sl_ranged_free(r);

    sl_ranged_params p = sl_ranged_default_params();
    p.max_bytes = 3 * (64 << 10);
    r = open_url(url_of("range", "tail.mp4"), &p);
    assert_int_equal(sl_ranged_set_readahead(r, 64 << 10, 64 << 10, 4), SL_OK);
    assert_int_equal(load_url(r, "tail.mp4", &vp, &v), SL_ERR_TOO_LARGE);
    assert_null(v);
    assert_non_null(strstr(sl_last_error(), "tail.mp4: cannot read"));
    assert_non_null(strstr(sl_last_error(), "--max-download-bytes"));
    sl_ranged_free(r);

    r = open_url(url_of("norange", "tail.mp4"), NULL);
    assert_int_equal(sl_ranged_set_readahead(r, 64 << 10, 64 << 10, 4), SL_OK);
    uint8_t head[16];
    size_t got;
    assert_int_equal(sl_ranged_read(r, head, sizeof head, 0, &got), SL_ERR_IO);
    assert_true(sl_ranged_ignores_ranges(r));
    sl_ranged_free(r);

    /* A reader that fails from its first read: sl_video_load_io's own path. */
    sl_ranged_params once = sl_ranged_default_params();
    once.retries = 0;
    r = open_url(url_of("cut", "tail.mp4"), &once);
    sl_video_io io = {.read = read_ranged, .user = r, .size = (uint64_t)file_size("tail.mp4")};
    assert_int_equal(sl_video_load_io(&io, "cut.mp4", &vp, &v), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), "cut.mp4: cannot read"));
    sl_ranged_free(r);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_a_url_at_offsets),
        cmocka_unit_test(readahead_costs_one_request_a_block),
        cmocka_unit_test(readahead_grows_along_a_run),
        cmocka_unit_test(a_server_ignoring_ranges_is_stopped),
        cmocka_unit_test(errors_name_the_url),
        cmocka_unit_test(max_bytes_bounds_the_bytes_read),
        cmocka_unit_test(servers_that_tag_one_file_apart_are_read_by_its_date),
#ifdef SLUICE_TEST_VIDEO
        cmocka_unit_test(a_video_over_http_gives_the_local_frames),
        cmocka_unit_test(a_failed_read_fails_the_video),
#endif
    };
    return cmocka_run_group_tests(tests, start_server, stop_server);
}
