/* io/fetch.c — see fetch.h. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "io/curl_conn.h"
#include "io/fetch.h"
#include "io/hf.h"
#include "io/s3.h"

sl_fetch_params sl_fetch_default_params(void)
{
    return (sl_fetch_params){.timeout_ms = 30000, .max_bytes = 64u << 20, .retries = 2};
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void sl_fetch_init_curl(void) { pthread_once(&curl_once, curl_init); }

/* --- the policy every HTTP(S) request of fetch.c follows ---------------------- */

void sl_fetch_pause(int attempt)
{
    long ms = attempt < 6 ? 200L << (attempt - 1) : 5000L;
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

/* url with each space as %20, in a new string (sl_free); NULL when out of
 * memory. */
static char *spaces_encoded(const char *url)
{
    size_t n = 0;
    for (const char *c = url; *c; c++)
        n += *c == ' ' ? 3 : 1;
    char *out = sl_malloc(n + 1), *o = out;
    for (const char *c = url; out && *c; c++) {
        if (*c == ' ') {
            memcpy(o, "%20", 3);
            o += 3;
        } else {
            *o++ = *c;
        }
    }
    if (out)
        *o = '\0';
    return out;
}

enum { FETCH_MAX_REDIRECTS = 5 };

void sl_fetch_policy(CURL *h, const char *url, long timeout_ms, char *cerr)
{
    cerr[0] = '\0';
    curl_easy_reset(h);
    /* A space has no place in a URL, yet manifests scraped from web pages
     * hold some (https://host/my photo.jpg); browsers and Python's requests
     * send it as %20, and libcurl refuses it ("URL using bad/illegal
     * format"). libcurl copies the string. */
    char *encoded = strchr(url, ' ') ? spaces_encoded(url) : NULL;
    curl_easy_setopt(h, CURLOPT_URL, encoded ? encoded : url);
    sl_free(encoded);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)FETCH_MAX_REDIRECTS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice");
    /* $HF_TOKEN for the hub's own host (io/hf.h); libcurl sends it to no
     * other host a redirect leads to (an LFS file's CDN). */
    char token[4096];
    if (hf_bearer(url, token, sizeof token)) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
        curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, token);
    }
}

/* Performs the request set on h, counts it; the answer's HTTP status. */
static long perform(CURL *h, CURLcode *rc)
{
    *rc = curl_easy_perform(h);
    sl_curl_count(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

bool sl_fetch_failed_try(CURLcode rc, long code, const char *cerr, char *why, size_t size)
{
    if (rc == CURLE_TOO_MANY_REDIRECTS) {
        /* A server's loop is no passing fault: another try is the same
         * loop again (each try 1 + FETCH_MAX_REDIRECTS requests). */
        snprintf(why, size, "redirected more than %d times (a redirect loop?)",
                 FETCH_MAX_REDIRECTS);
        return false;
    }
    if (rc != CURLE_OK) {
        snprintf(why, size, "%s", sl_curl_why(rc, cerr));
        return rc != CURLE_UNSUPPORTED_PROTOCOL && rc != CURLE_URL_MALFORMAT;
    }
    snprintf(why, size, "HTTP %ld", code);
    return code >= 500 || code == 429;
}

sl_status sl_fetch(const char *url, const sl_fetch_params *p, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (sl_s3_is_url(url)) {
        const sl_s3 *s3 = sl_s3_shared();
        sl_status st = s3 ? sl_s3_get(s3, url, 0, 0, p->max_bytes, data, len) : SL_ERR_INVALID_ARG;
        if (st == SL_ERR_TOO_LARGE)
            return sl_fail(st, "cannot download '%s': larger than the %zu-byte limit "
                               "(--max-download-bytes)", url, p->max_bytes);
        return st;
    }
    CURL *h = sl_curl_take(false);
    if (!h)
        return sl_fail(SL_ERR_NOMEM, "cannot start a download of '%s'", url);
    char cerr[CURL_ERROR_SIZE];
    sl_status st = SL_ERR_IO;
    char why[CURL_ERROR_SIZE + 64] = "";
    for (int attempt = 0; attempt <= p->retries; attempt++) {
        if (attempt)
            sl_fetch_pause(attempt);
        sl_capped b = {.max = p->max_bytes};
        sl_fetch_policy(h, url, p->timeout_ms, cerr);
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)p->max_bytes);
        /* An object stored compressed (S3 or GCS metadata Content-Encoding:
         * gzip) comes so whatever was asked: decoded as browsers do, where
         * its compressed bytes failed as "not an image". The cap is on the
         * decoded bytes (sl_capped_write), so a bomb stops there. */
        curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sl_capped_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        CURLcode rc;
        long code = perform(h, &rc);
        bool retry = false;
        if (b.nomem) {
            st = SL_ERR_NOMEM;
            snprintf(why, sizeof why, "out of memory");
        } else if (b.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
            st = SL_ERR_TOO_LARGE;
            snprintf(why, sizeof why, "larger than the %zu-byte limit (--max-download-bytes)",
                     p->max_bytes);
        } else if (rc != CURLE_OK || code >= 300) {
            /* A 3xx here is one libcurl did not follow (no Location): its
             * page is no image. */
            retry = sl_fetch_failed_try(rc, code, cerr, why, sizeof why);
        } else if (b.buf.len == 0) {
            /* Callers read no bytes as "not fetched: a local path", and
             * the row failed as a missing file. */
            snprintf(why, sizeof why, "HTTP %ld with an empty body", code);
        } else {
            *data = b.buf.data;
            *len = b.buf.len;
            sl_curl_give(h, false);
            return SL_OK;
        }
        sl_buf_free(&b.buf);
        if (!retry)
            break;
    }
    sl_curl_give(h, false);
    return sl_fail(st, "cannot download '%s': %s", url, why);
}

/* --- ranged GETs ---------------------------------------------------------------- */

/* One try of a ranged GET: the answer's status and Content-Range (of the
 * last answer, after redirects), and the body written into dst. */
typedef struct range_try {
    uint8_t *dst;
    size_t cap, got;
    bool whole;            /* a 200: the server sent the whole body */
    bool overflow;         /* more body than cap: the transfer was stopped */
    long status;           /* from the status line */
    bool have_range;       /* a Content-Range header came */
    uint64_t first, last;  /* its byte range (inclusive) */
    int64_t total;         /* its total; -1 when "*" or absent */
    sl_fetch_version ver;  /* its ETag and Last-Modified, "" when absent */
} range_try;

/* A header's value (after "name:"), trimmed, into out; "" when too long. */
static void header_value(const char *v, char *out, size_t size)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strcspn(v, "\r\n");
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= size)
        n = 0;
    memcpy(out, v, n);
    out[n] = '\0';
}

static size_t range_header(char *line, size_t size, size_t n, void *user)
{
    range_try *t = user;
    size_t len = size * n;
    char h[256];
    size_t k = len < sizeof h - 1 ? len : sizeof h - 1;
    memcpy(h, line, k);
    h[k] = '\0';
    if (strncmp(h, "HTTP/", 5) == 0) { /* a new answer (a redirect's, then the last) */
        const char *sp = strchr(h, ' ');
        t->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        t->have_range = false;
        t->total = -1;
        t->ver = (sl_fetch_version){0};
    } else if (strncasecmp(h, "etag:", 5) == 0) {
        header_value(h + 5, t->ver.etag, sizeof t->ver.etag);
    } else if (strncasecmp(h, "last-modified:", 14) == 0) {
        header_value(h + 14, t->ver.modified, sizeof t->ver.modified);
    } else if (strncasecmp(h, "content-range:", 14) == 0) {
        const char *v = h + 14;
        while (*v == ' ' || *v == '\t')
            v++;
        unsigned long long a, b;
        char tot[32] = "";
        if (strncasecmp(v, "bytes ", 6) == 0) {
            v += 6;
            if (sscanf(v, "%llu-%llu/%31[0-9*]", &a, &b, tot) == 3 && a <= b) {
                t->have_range = true;
                t->first = a;
                t->last = b;
            } else if (sscanf(v, "*/%31[0-9]", tot) != 1) {
                tot[0] = '\0';
            }
            t->total = tot[0] && tot[0] != '*' ? (int64_t)strtoull(tot, NULL, 10) : -1;
        }
    }
    return len;
}

static size_t range_body(char *ptr, size_t size, size_t n, void *user)
{
    range_try *t = user;
    size_t len = size * n;
    if (t->status == 200)
        t->whole = true;
    if (t->status != 200 && t->status != 206)
        return len; /* an error page: not kept */
    size_t room = t->cap - t->got, k = len < room ? len : room;
    memcpy(t->dst + t->got, ptr, k);
    t->got += k;
    if (k < len) {
        t->overflow = true;
        return 0; /* stop: the bytes asked for are here, the rest is not wanted */
    }
    return len;
}

void sl_fetch_range_spec(char spec[64], uint64_t offset, size_t len, bool from_end)
{
    if (from_end)
        snprintf(spec, 64, "-%zu", len);
    else
        snprintf(spec, 64, "%llu-%llu", (unsigned long long)offset,
                 (unsigned long long)(offset + len - 1));
}

/* The file's size answer t says: its Content-Range's total, or a whole
 * body's length; -1 when it does not say. */
static int64_t answer_size(const range_try *t)
{
    return t->total >= 0 ? t->total : t->whole && !t->overflow ? (int64_t)t->got : -1;
}

/* Whether answer t is of version *ver, which it then sets when empty. */
static bool same_version(const range_try *t, sl_fetch_version *ver)
{
    /* An answer without it says nothing (a 416 often has neither). */
    if (ver->etag[0])
        return !t->ver.etag[0] || strcmp(t->ver.etag, ver->etag) == 0;
    if (ver->modified[0])
        return (!t->ver.modified[0] || strcmp(t->ver.modified, ver->modified) == 0) &&
               (ver->size < 0 || answer_size(t) < 0 || answer_size(t) == ver->size);
    if (t->ver.etag[0] && strncmp(t->ver.etag, "W/", 2) != 0)
        snprintf(ver->etag, sizeof ver->etag, "%s", t->ver.etag);
    /* Kept beside the ETag too: what tells one file tagged apart by two
     * servers (by_date in sl_fetch_range) from a file that changed. */
    snprintf(ver->modified, sizeof ver->modified, "%s", t->ver.modified);
    ver->size = answer_size(t);
    return true;
}

/* Whether answer t, to a request by If-Unmodified-Since alone, shows the
 * file *ver was: its Last-Modified and size, both given and equal (a 416,
 * past the end, often gives no Last-Modified: its size says). */
static bool same_date_and_size(const range_try *t, const sl_fetch_version *ver)
{
    bool date = strcmp(t->ver.modified, ver->modified) == 0 ||
                (t->status == 416 && !t->ver.modified[0]);
    return date && answer_size(t) == ver->size;
}

/* The condition a request asks its version by: If-Match its ETag, else
 * If-Unmodified-Since its Last-Modified (by_date: that alone); NULL with no
 * condition, or out of memory (*nomem). */
static struct curl_slist *version_header(const sl_fetch_version *ver, bool by_date, bool *nomem)
{
    char cond[sizeof ver->etag + 32] = "";
    if (ver && ver->etag[0] && !by_date)
        snprintf(cond, sizeof cond, "If-Match: %s", ver->etag);
    else if (ver && ver->modified[0])
        snprintf(cond, sizeof cond, "If-Unmodified-Since: %s", ver->modified);
    struct curl_slist *h = cond[0] ? curl_slist_append(NULL, cond) : NULL;
    *nomem = cond[0] && !h;
    return h;
}

sl_status sl_fetch_range(const char *url, const sl_fetch_params *p, uint64_t offset, size_t len,
                         bool from_end, void *dst, size_t *got, int64_t *size, bool *no_ranges,
                         sl_fetch_version *ver)
{
    *got = 0;
    *size = -1;
    if (no_ranges)
        *no_ranges = false;
    if (len == 0)
        return SL_OK;
    CURL *h = sl_curl_take(false);
    if (!h)
        return sl_fail(SL_ERR_NOMEM, "cannot start a download of '%s'", url);
    char range[64];
    sl_fetch_range_spec(range, offset, len, from_end);
    char cerr[CURL_ERROR_SIZE];
    char why[CURL_ERROR_SIZE + 256] = "";
    sl_status st = SL_ERR_IO;
    /* The version asked for: what a file replaced between two reads
     * answers with 412 (the check of the answer's own version below is
     * for a server that ignores the condition). */
    bool nomem, by_date = false, again = false;
    struct curl_slist *headers = version_header(ver, false, &nomem);
    if (nomem) {
        sl_curl_give(h, false);
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", url);
    }
    bool ok = false;
    for (int attempt = 0; attempt <= p->retries; attempt++) {
        if (attempt && !again)
            sl_fetch_pause(attempt);
        again = false;
        range_try t = {.dst = dst, .cap = len, .total = -1};
        sl_fetch_policy(h, url, p->timeout_ms, cerr);
        if (headers)
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_RANGE, range);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, range_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, range_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
        CURLcode rc;
        long code = perform(h, &rc);
        bool retry = false;
        bool answered = code == 200 || code == 206 || code == 416;
        bool other = by_date ? code == 412 || (answered && !same_date_and_size(&t, ver))
                             : ver && (code == 412 || (answered && !same_version(&t, ver)));
        if (other && !by_date && ver->etag[0] && ver->modified[0] && ver->size >= 0) {
            /* Servers behind a balancer may tag one file apart (Apache's
             * ETag from the inode): asked again by its Last-Modified, an
             * answer of the same date and size is the same file. */
            curl_slist_free_all(headers);
            headers = version_header(ver, by_date = true, &nomem);
            if (nomem) {
                st = SL_ERR_NOMEM;
                snprintf(why, sizeof why, "out of memory");
                break;
            }
            attempt--; /* not a failed try */
            again = true;
            continue;
        }
        if (other) {
            bool by_etag = ver->etag[0] && !by_date;
            snprintf(why, sizeof why, "the file changed since its first read (%s %s then%s%s): "
                                      "its rows would mix two versions of it",
                     by_etag ? "ETag" : "Last-Modified", by_etag ? ver->etag : ver->modified,
                     code == 412 ? "" : ", ", code == 412 ? "" : by_etag ? t.ver.etag : t.ver.modified);
        } else if (t.whole && (t.overflow || (offset > 0 && !from_end))) {
            /* A server that ignores Range answers 200 with the file from its
             * start: the transfer stops once past what was asked, so a
             * large file is never read whole. */
            st = SL_ERR_IO;
            snprintf(why, sizeof why, "the server ignores Range requests (it answered 200 with "
                                      "the whole file; the transfer was stopped)");
            if (no_ranges)
                *no_ranges = true;
        } else if (rc == CURLE_WRITE_ERROR && t.overflow) {
            st = SL_ERR_IO;
            snprintf(why, sizeof why, "the server sent more than the %zu bytes asked for", len);
        } else if (code == 416) { /* from past the end: nothing, and the size */
            if ((ok = t.total >= 0))
                *size = t.total;
            else
                snprintf(why, sizeof why, "HTTP 416 without the file's size");
        } else if (rc != CURLE_OK || code >= 300) { /* a 3xx: one without a Location */
            retry = sl_fetch_failed_try(rc, code, cerr, why, sizeof why);
        } else if (code == 200) {
            /* The whole file, within what was asked from its start or end:
             * that is the answer (a small file, or a server without Range). */
            *got = t.got;
            *size = (int64_t)t.got;
            ok = true;
        } else if (code != 206 || !t.have_range || t.total < 0) {
            snprintf(why, sizeof why, "HTTP %ld without a Content-Range giving the file's size",
                     code);
        } else if ((!from_end && t.first != offset) || t.last - t.first + 1 > len ||
                   (from_end && t.last + 1 != (uint64_t)t.total)) {
            snprintf(why, sizeof why, "the server sent bytes %llu-%llu for the range %s",
                     (unsigned long long)t.first, (unsigned long long)t.last, range);
        } else if (t.got != t.last - t.first + 1) {
            snprintf(why, sizeof why, "the answer was cut short: %zu of %llu bytes", t.got,
                     (unsigned long long)(t.last - t.first + 1));
            retry = true;
        } else {
            *got = t.got;
            *size = t.total;
            ok = true;
        }
        if (!retry) /* an answer, or a failure not worth another try */
            break;
    }
    curl_slist_free_all(headers);
    sl_curl_give(h, false);
    if (ok && by_date) {
        sl_log(SL_LOG_WARN, "'%s': its server no longer answers for the file's first ETag "
                            "(%s), but its Last-Modified (%s) and size (%lld bytes) are as "
                            "before: servers behind a balancer that tag one file apart "
                            "(Apache's inode-based ETags); its reads are checked by those from "
                            "now on",
               url, ver->etag, ver->modified, (long long)ver->size);
        ver->etag[0] = '\0';
    }
    return ok ? SL_OK : sl_fail(st, "cannot read '%s' (bytes %s): %s", url, range, why);
}
