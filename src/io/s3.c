/* io/s3.c — see s3.h. One function makes every request (sign, send,
 * retry, read the answer); the operations are thin around it. */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/hash.h"
#include "io/curl_conn.h"
#include "io/fetch.h"
#include "io/s3.h"

struct sl_s3 {
    sl_s3_params p;
    char *key_id, *secret, *token, *region, *endpoint; /* endpoint: no trailing '/' */
    char *userpwd, *sigv4, *token_header;
};

sl_s3_params sl_s3_default_params(void)
{
    return (sl_s3_params){.timeout_ms = 60000, .retries = 5, .backoff_ms = 200};
}



static const char *env(const char *a, const char *b)
{
    const char *v = getenv(a);
    if ((!v || !*v) && b)
        v = getenv(b);
    return v && *v ? v : NULL;
}

/* How long a store may keep a request waiting, from the environment:
 * SLUICE_S3_TIMEOUT (seconds without a byte moving, a try) and
 * AWS_MAX_ATTEMPTS (tries in all, as the AWS tools read it). A store that
 * takes the connection and never answers costs their product. */
static sl_status time_limits_from_env(sl_s3_params *p)
{
    const char *t = env("SLUICE_S3_TIMEOUT", NULL), *n = env("AWS_MAX_ATTEMPTS", NULL);
    if (t) {
        char *end;
        double s = strtod(t, &end);
        if (end == t || *end || !(s >= 0.001 && s <= 86400))
            return sl_fail(SL_ERR_INVALID_ARG, "SLUICE_S3_TIMEOUT must be a number of seconds "
                                               "from 0.001 to 86400, got '%s'", t);
        p->timeout_ms = (long)(s * 1000 + 0.5);
    }
    if (n) {
        char *end;
        long k = strtol(n, &end, 10);
        if (end == n || *end || k < 1 || k > 100)
            return sl_fail(SL_ERR_INVALID_ARG, "AWS_MAX_ATTEMPTS must be a whole number of "
                                               "tries from 1 to 100, got '%s'", n);
        p->retries = (int)k - 1;
    }
    return SL_OK;
}

void sl_s3_free(sl_s3 *s3)
{
    if (!s3)
        return;
    sl_free(s3->key_id);
    if (s3->secret)
        memset(s3->secret, 0, strlen(s3->secret));
    if (s3->userpwd)
        memset(s3->userpwd, 0, strlen(s3->userpwd));
    sl_free(s3->secret);
    sl_free(s3->token);
    sl_free(s3->region);
    sl_free(s3->endpoint);
    sl_free(s3->userpwd);
    sl_free(s3->sigv4);
    sl_free(s3->token_header);
    sl_free(s3);
}

sl_status sl_s3_from_env(const sl_s3_params *params, sl_s3 **out)
{
    *out = NULL;
    sl_fetch_init_curl();
    const char *id = env("AWS_ACCESS_KEY_ID", NULL), *secret = env("AWS_SECRET_ACCESS_KEY", NULL);
    const char *token = env("AWS_SESSION_TOKEN", NULL);
    const char *region = env("AWS_REGION", "AWS_DEFAULT_REGION");
    const char *endpoint = env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
    if (!id != !secret)
        return sl_fail(SL_ERR_INVALID_ARG, "%s is set but %s is not: set both (or neither, for "
                                           "public buckets)",
                       id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                       id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    if (endpoint && strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)
        return sl_fail(SL_ERR_INVALID_ARG, "AWS_ENDPOINT_URL must be an http:// or https:// URL, "
                                           "got '%s'", endpoint);
    sl_s3_params p = params ? *params : sl_s3_default_params();
    if (!params) {
        sl_status st = time_limits_from_env(&p);
        if (st != SL_OK)
            return st;
    }
    sl_s3 *s = sl_calloc(1, sizeof *s);
    if (!s)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading the S3 settings");
    s->p = p;
    bool ok = (s->region = sl_strdup(region ? region : "us-east-1")) != NULL;
    if (ok && endpoint) {
        size_t n = strlen(endpoint);
        while (n && endpoint[n - 1] == '/')
            n--;
        ok = (s->endpoint = sl_strndup(endpoint, n)) != NULL;
    }
    if (ok && id) {
        ok = (s->key_id = sl_strdup(id)) && (s->secret = sl_strdup(secret)) &&
             (s->userpwd = sl_asprintf("%s:%s", id, secret)) &&
             (s->sigv4 = sl_asprintf("aws:amz:%s:s3", s->region));
        if (ok && token)
            ok = (s->token = sl_strdup(token)) &&
                 (s->token_header = sl_asprintf("x-amz-security-token: %s", token));
    }
    if (!ok) {
        sl_s3_free(s);
        return sl_fail(SL_ERR_NOMEM, "out of memory reading the S3 settings");
    }
    *out = s;
    return SL_OK;
}

static pthread_once_t shared_once = PTHREAD_ONCE_INIT;
static sl_s3 *shared;
static char shared_error[512];

static void make_shared(void)
{
    if (sl_s3_from_env(NULL, &shared) != SL_OK)
        snprintf(shared_error, sizeof shared_error, "%s", sl_last_error());
}

const sl_s3 *sl_s3_shared(void)
{
    pthread_once(&shared_once, make_shared);
    if (!shared)
        sl_fail(SL_ERR_INVALID_ARG, "%s", shared_error);
    return shared;
}

bool sl_s3_is_url(const char *s) { return s && strncmp(s, "s3://", 5) == 0; }

sl_status sl_s3_split(const char *url, char **bucket, char **key)
{
    *bucket = *key = NULL;
    if (!sl_s3_is_url(url))
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' is not an s3://bucket/key URL", url);
    const char *b = url + 5, *slash = strchr(b, '/');
    size_t blen = slash ? (size_t)(slash - b) : strlen(b);
    if (blen == 0 || blen > 63)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' names no bucket (s3://bucket/key)", url);
    for (size_t i = 0; i < blen; i++)
        if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '-' ||
              b[i] == '.'))
            return sl_fail(SL_ERR_INVALID_ARG, "'%s': a bucket name is lowercase letters, "
                                               "digits, '-' and '.'", url);
    *bucket = sl_strndup(b, blen);
    *key = sl_strdup(slash ? slash + 1 : "");
    if (!*bucket || !*key) {
        sl_free(*bucket);
        sl_free(*key);
        *bucket = *key = NULL;
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", url);
    }
    return SL_OK;
}

/* Percent-encodes s as SigV4 wants it (unreserved bytes kept, '/' kept
 * when keep_slash), appended to b. */
static bool put_encoded(sl_buf *b, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        bool plain = (*u >= 'A' && *u <= 'Z') || (*u >= 'a' && *u <= 'z') ||
                     (*u >= '0' && *u <= '9') || *u == '-' || *u == '_' || *u == '.' ||
                     *u == '~' || (keep_slash && *u == '/');
        char esc[3] = {'%', hex[*u >> 4], hex[*u & 15]};
        if (!(plain ? sl_buf_append(b, (const char *)u, 1) : sl_buf_append(b, esc, 3)))
            return false;
    }
    return true;
}

/* The HTTP URL of bucket/key with `query` (already canonical: names sorted,
 * values encoded), NUL-terminated in a new string. */
static char *object_url(const sl_s3 *s3, const char *bucket, const char *key, const char *query)
{
    sl_buf b = {0};
    bool ok;
    if (s3->endpoint)
        ok = sl_buf_append(&b, s3->endpoint, strlen(s3->endpoint)) && sl_buf_append(&b, "/", 1) &&
             sl_buf_append(&b, bucket, strlen(bucket)) && sl_buf_append(&b, "/", 1);
    else
        ok = sl_buf_append(&b, "https://", 8) && sl_buf_append(&b, bucket, strlen(bucket)) &&
             sl_buf_append(&b, ".s3.", 4) && sl_buf_append(&b, s3->region, strlen(s3->region)) &&
             sl_buf_append(&b, ".amazonaws.com/", 15);
    ok = ok && put_encoded(&b, key, true);
    if (ok && query && *query)
        ok = sl_buf_append(&b, "?", 1) && sl_buf_append(&b, query, strlen(query));
    ok = ok && sl_buf_append(&b, "", 1);
    if (!ok) {
        sl_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* --- one request ---------------------------------------------------------------- */

typedef struct request {
    const char *method;        /* GET, PUT, POST, DELETE, HEAD */
    const char *bucket, *key;
    const char *query;         /* canonical, or NULL */
    const char *range;         /* "first-last", or NULL */
    const void *body;          /* PUT/POST bytes */
    size_t body_len;
    size_t max_bytes;          /* of the answer's body */
    FILE *to_file;             /* a 2xx body goes here instead (from its position then) */
    uint8_t *into;             /* ... or here, into_cap bytes at most (ranged reads) */
    size_t into_cap;
    const char *what;          /* names the request in messages: "s3://b/k" */
    const char *if_match;      /* an ETag the object must still have, or NULL */
    bool if_none_match;        /* a PUT that only creates: If-None-Match: * */
    /* A 2xx may hold an error document (CompleteMultipartUpload's, sent
     * after its status line): failed, and retried, as AWS advises. */
    bool error_in_2xx;
} request;

typedef struct answer {
    long code;
    sl_capped body;
    char etag[128];
    time_t date, modified;     /* the Date and Last-Modified headers; -1 when absent */
    size_t into_len;           /* bytes of a 2xx body written to request.into */
    int64_t total;             /* the object's size from Content-Range; -1 when not given */
    int64_t first, last;       /* the bytes it says the answer holds; -1 when not given */
} answer;

static size_t on_header(char *ptr, size_t size, size_t n, void *user)
{
    answer *a = user;
    size_t len = size * n;
    if (len > 5 && strncasecmp(ptr, "etag:", 5) == 0) {
        const char *v = ptr + 5;
        size_t vlen = len - 5;
        while (vlen && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        snprintf(a->etag, sizeof a->etag, "%.*s", (int)vlen, v);
    } else if ((len > 5 && strncasecmp(ptr, "date:", 5) == 0) ||
               (len > 14 && strncasecmp(ptr, "last-modified:", 14) == 0)) {
        bool date = ptr[0] == 'd' || ptr[0] == 'D';
        char v[128];
        size_t skip = date ? 5 : 14;
        snprintf(v, sizeof v, "%.*s", (int)(len - skip), ptr + skip);
        v[strcspn(v, "\r\n")] = '\0';
        *(date ? &a->date : &a->modified) = curl_getdate(v, NULL);
    } else if (len > 14 && strncasecmp(ptr, "content-range:", 14) == 0) {
        /* "bytes 0-99/1234" or, past the end, "bytes * /1234" */
        const char *slash = memchr(ptr, '/', len);
        if (slash && slash + 1 < ptr + len && slash[1] >= '0' && slash[1] <= '9')
            a->total = (int64_t)strtoll(slash + 1, NULL, 10);
        char v[128];
        unsigned long long first, last;
        snprintf(v, sizeof v, "%.*s", (int)(len - 14), ptr + 14);
        if (sscanf(v, " bytes %llu-%llu/", &first, &last) == 2 && first <= last &&
            last <= INT64_MAX) {
            a->first = (int64_t)first;
            a->last = (int64_t)last;
        }
    }
    return len;
}

typedef struct reader {
    const uint8_t *start, *p;
    size_t len, left;
} reader;

static int on_seek(void *user, curl_off_t offset, int origin)
{
    reader *r = user;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > r->len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->p = r->start + offset;
    r->left = r->len - (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t on_read(char *buf, size_t size, size_t n, void *user)
{
    reader *r = user;
    size_t take = size * n < r->left ? size * n : r->left;
    memcpy(buf, r->p, take);
    r->p += take;
    r->left -= take;
    return take;
}

/* The text of element `name` in an S3 error document, into out. */
static void xml_field(const sl_buf *body, const char *name, char *out, size_t size)
{
    out[0] = '\0';
    char open[64];
    snprintf(open, sizeof open, "<%s>", name);
    const char *text = (const char *)body->data;
    if (!text)
        return;
    const char *end = text + body->len, *at = NULL;
    size_t olen = strlen(open);
    for (const char *s = text; s + olen <= end; s++)
        if (memcmp(s, open, olen) == 0) {
            at = s + olen;
            break;
        }
    if (!at)
        return;
    const char *stop = memchr(at, '<', (size_t)(end - at));
    size_t n = stop ? (size_t)(stop - at) : 0;
    snprintf(out, size, "%.*s", (int)(n < 300 ? n : 300), at);
}

typedef struct file_sink {
    FILE *fp;
    uint8_t *into;
    size_t into_cap;
    answer *a;
    CURL *h;
    bool failed, overflow;
} file_sink;

/* A 2xx body goes to the file or the caller's buffer; an error document
 * stays in memory for the message. */
static size_t on_file(char *ptr, size_t size, size_t n, void *user)
{
    file_sink *f = user;
    if (f->a->code == 0)
        curl_easy_getinfo(f->h, CURLINFO_RESPONSE_CODE, &f->a->code);
    if (f->a->code >= 300)
        return sl_capped_write(ptr, size, n, &f->a->body);
    if (f->into) {
        if (size * n > f->into_cap - f->a->into_len) {
            f->overflow = true; /* a store that ignored the Range header */
            return 0;
        }
        memcpy(f->into + f->a->into_len, ptr, size * n);
        f->a->into_len += size * n;
        return size * n;
    }
    if (fwrite(ptr, size, n, f->fp) != n) {
        f->failed = true;
        return 0;
    }
    return size * n;
}

/* The answer's status and error document (its Code and Message) into
 * why, its Code into code (when given); false when the body holds no
 * error Code. */
static bool store_error(answer *a, char *code, size_t code_cap, char *why, size_t cap)
{
    char own[128], msg[320];
    if (!code) {
        code = own;
        code_cap = sizeof own;
    }
    xml_field(&a->body.buf, "Code", code, code_cap);
    xml_field(&a->body.buf, "Message", msg, sizeof msg);
    snprintf(why, cap, "HTTP %ld%s%s%s%s", a->code, code[0] ? " " : "", code, msg[0] ? ": " : "",
             msg);
    return code[0] != '\0';
}

static void pause_before(const sl_s3 *s3, int attempt, uint64_t *rng)
{
    long cap = s3->p.backoff_ms << (attempt < 10 ? attempt - 1 : 9);
    if (cap > 20000)
        cap = 20000;
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    long ms = cap > 0 ? (long)((*rng >> 33) % (uint64_t)cap) + 1 : 0; /* full jitter */
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Sends rq, retrying what is worth retrying; *a holds the last answer (its
 * body the caller's to free) when SL_OK: a 2xx. */
static sl_status perform(const sl_s3 *s3, const request *rq, answer *a)
{
    sl_fetch_init_curl();
    memset(a, 0, sizeof *a);
    char *url = object_url(s3, rq->bucket, rq->key, rq->query);
    bool fresh = s3->p.connection_per_request;
    CURL *h = sl_curl_take(fresh);
    struct curl_slist *headers = NULL;
    headers = curl_slist_append(headers, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    if (headers && s3->token_header)
        headers = curl_slist_append(headers, s3->token_header);
    if (headers && strcmp(rq->method, "POST") == 0)
        headers = curl_slist_append(headers, "Content-Type: application/xml");
    char cond[160];
    if (headers && rq->if_match) {
        snprintf(cond, sizeof cond, "If-Match: %s", rq->if_match);
        headers = curl_slist_append(headers, cond);
    }
    if (headers && rq->if_none_match)
        headers = curl_slist_append(headers, "If-None-Match: *");
    if (!url || !h || !headers) {
        sl_free(url);
        sl_curl_give(h, fresh);
        curl_slist_free_all(headers);
        return sl_fail(SL_ERR_NOMEM, "out of memory reaching %s", rq->what);
    }
    uint64_t rng = sl_hash_fnv1a64(rq->what) ^ (uint64_t)time(NULL);
    char cerr[CURL_ERROR_SIZE], why[CURL_ERROR_SIZE + 400] = "";
    sl_status st = SL_ERR_IO;
    off_t start = rq->to_file ? ftello(rq->to_file) : 0;
    for (int attempt = 0; attempt <= s3->p.retries; attempt++) {
        if (attempt)
            pause_before(s3, attempt, &rng);
        sl_buf_free(&a->body.buf);
        memset(a, 0, sizeof *a);
        a->body.max = rq->max_bytes ? rq->max_bytes : (size_t)16 << 20;
        a->total = a->first = a->last = -1;
        a->date = a->modified = -1;
        reader rd = {rq->body, rq->body, rq->body_len, rq->body_len};
        cerr[0] = '\0';
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        /* A key is a name, not a path: "a/./b" and "a/x/../b" are objects of
         * their own, which curl's dot-segment squashing made "a/b" (a
         * listed object not found, or another object read or written). */
        curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        /* A try ends when no byte has moved for timeout_ms (or the
         * connection takes that long), not at a whole-transfer deadline:
         * a part of hundreds of MB may take minutes, a dead store does not
         * keep a request longer than that. */
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s3->p.timeout_ms);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (s3->p.timeout_ms + 999) / 1000);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        file_sink fs = {rq->to_file, rq->into, rq->into_cap, a, h, false, false};
        if (rq->into) {
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_file);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, &fs);
        } else if (rq->to_file) {
            if (fseeko(rq->to_file, start, SEEK_SET) != 0 ||
                ftruncate(fileno(rq->to_file), start) != 0) {
                st = SL_ERR_IO;
                snprintf(why, sizeof why, "cannot write the local copy");
                break;
            }
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_file);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, &fs);
        } else {
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sl_capped_write);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, &a->body);
        }
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice");
        if (s3->userpwd) {
            curl_easy_setopt(h, CURLOPT_USERPWD, s3->userpwd);
            curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s3->sigv4);
        }
        if (rq->range)
            curl_easy_setopt(h, CURLOPT_RANGE, rq->range);
        if (strcmp(rq->method, "PUT") == 0) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(h, CURLOPT_READDATA, &rd);
            /* a kept connection the store closed meanwhile: curl sends again */
            curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
            curl_easy_setopt(h, CURLOPT_SEEKDATA, &rd);
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)rq->body_len);
        } else if (strcmp(rq->method, "POST") == 0) {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        } else if (strcmp(rq->method, "GET") != 0) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
            if (strcmp(rq->method, "HEAD") == 0)
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        }
        CURLcode rc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->code);
        sl_curl_count(h);
        bool retry = false;
        if (fs.failed) {
            st = SL_ERR_IO;
            snprintf(why, sizeof why, "cannot write the local copy");
        } else if (fs.overflow) {
            st = SL_ERR_IO;
            snprintf(why, sizeof why, "the store answered more than the %zu bytes asked for "
                     "(it ignored the Range header)", rq->into_cap);
        } else if (rq->into && a->code == 416) {
            st = SL_OK; /* a range from the object's end on: no bytes */
            break;
        } else if (a->body.nomem) {
            st = SL_ERR_NOMEM;
            snprintf(why, sizeof why, "out of memory");
        } else if (a->body.too_big) {
            st = SL_ERR_TOO_LARGE;
            snprintf(why, sizeof why, "larger than the %zu-byte limit", a->body.max);
        } else if (rc != CURLE_OK) {
            st = SL_ERR_IO;
            snprintf(why, sizeof why, "%s", sl_curl_why(rc, cerr));
            retry = rc != CURLE_UNSUPPORTED_PROTOCOL && rc != CURLE_URL_MALFORMAT;
        } else if (a->code >= 300) {
            char code[128];
            store_error(a, code, sizeof code, why, sizeof why);
            st = a->code == 404 ? SL_ERR_NOT_FOUND : SL_ERR_IO;
            /* A condition not met (409: another conditional write raced it) */
            if ((a->code == 412 || a->code == 409) && (rq->if_match || rq->if_none_match))
                st = SL_ERR_EXISTS;
            retry = a->code >= 500 || a->code == 429 || strcmp(code, "SlowDown") == 0 ||
                    strcmp(code, "RequestTimeout") == 0;
        } else if (rq->error_in_2xx && store_error(a, NULL, 0, why, sizeof why)) {
            st = SL_ERR_IO;
            retry = true;
        } else {
            st = SL_OK;
            break;
        }
        if (!retry)
            break;
    }
    sl_curl_give(h, fresh);
    curl_slist_free_all(headers);
    if (st != SL_OK) {
        sl_buf_free(&a->body.buf);
        st = sl_fail(st, "%s %s (%s): %s", rq->method, rq->what,
                     s3->endpoint ? s3->endpoint : "AWS", why);
    }
    sl_free(url);
    return st;
}

/* --- operations -------------------------------------------------------------------- */

/* rq sent to the object at url (its bucket and key filled in here). */
static sl_status at_url(const sl_s3 *s3, const char *url, request rq, answer *a)
{
    char *bucket, *key;
    sl_status st = sl_s3_split(url, &bucket, &key);
    if (st != SL_OK)
        return st;
    rq.bucket = bucket;
    rq.key = key;
    rq.what = url;
    st = perform(s3, &rq, a);
    sl_free(bucket);
    sl_free(key);
    return st;
}

sl_status sl_s3_get(const sl_s3 *s3, const char *url, uint64_t offset, uint64_t length,
                    size_t max_bytes, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    char range[64];
    if (length)
        snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)offset,
                 (unsigned long long)(offset + length - 1));
    else
        snprintf(range, sizeof range, "%llu-", (unsigned long long)offset);
    answer a;
    sl_status st = at_url(s3, url, (request){.method = "GET", .range = offset || length ? range
                                                                                       : NULL,
                                             .max_bytes = max_bytes},
                          &a);
    if (st == SL_OK) {
        *data = a.body.buf.data ? a.body.buf.data : sl_malloc(1);
        *len = a.body.buf.len;
        if (!*data)
            st = sl_fail(SL_ERR_NOMEM, "out of memory reading %s", url);
    }
    return st;
}

sl_status sl_s3_read(const sl_s3 *s3, const char *url, uint64_t offset, size_t len, bool from_end,
                     void *dst, size_t *got, uint64_t *size)
{
    return sl_s3_read_same(s3, url, offset, len, from_end, dst, got, size, NULL);
}

sl_status sl_s3_read_same(const sl_s3 *s3, const char *url, uint64_t offset, size_t len,
                          bool from_end, void *dst, size_t *got, uint64_t *size,
                          char etag[SL_S3_ETAG_MAX])
{
    *got = 0;
    if (len == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "reading %s: an empty range", url);
    char range[64];
    sl_fetch_range_spec(range, offset, len, from_end);
    answer a;
    sl_status st = at_url(s3, url, (request){.method = "GET", .range = range, .into = dst,
                                             .into_cap = len,
                                             .if_match = etag && etag[0] ? etag : NULL},
                          &a);
    if (st == SL_ERR_EXISTS)
        return sl_fail(SL_ERR_IO, "GET %s (%s): the object changed since its first read (it "
                                  "was ETag %s): its bytes from then and from now are not one "
                                  "file", url, s3->endpoint ? s3->endpoint : "AWS", etag);
    if (st != SL_OK)
        return st;
    sl_buf_free(&a.body.buf);
    if (etag && !etag[0])
        snprintf(etag, SL_S3_ETAG_MAX, "%s", a.etag);
    /* 206: the range; 200: the whole object (a store without ranges, or
     * a suffix longer than the object), right only from its start. */
    if (a.code == 200 && offset > 0 && !from_end)
        return sl_fail(SL_ERR_IO, "GET %s (%s): the store sent the whole object for a range "
                                  "from byte %llu", url, s3->endpoint ? s3->endpoint : "AWS",
                       (unsigned long long)offset);
    if (a.code == 200)
        a.total = (int64_t)a.into_len;
    /* A cache or gateway may answer other bytes than asked and say so: read
     * as the bytes asked for, they put another part of the file in their
     * place (a manifest's first lines twice). */
    bool other = a.code == 206 && a.first >= 0 && (from_end ? a.last + 1 != a.total
                                            : a.first != (int64_t)offset ||
                                                  a.last - a.first + 1 > (int64_t)len);
    if (other)
        return sl_fail(SL_ERR_IO, "GET %s (%s): the store sent bytes %lld-%lld for the range %s",
                       url, s3->endpoint ? s3->endpoint : "AWS", (long long)a.first,
                       (long long)a.last, range);
    /* A range from byte 0, or a suffix, that cannot be satisfied is an
     * empty object (RFC 9110 14.1.2); moto's 416 says no size. */
    if (a.code == 416 && a.total < 0 && (offset == 0 || from_end))
        a.total = 0;
    if (a.total < 0)
        return sl_fail(SL_ERR_IO, "GET %s (%s): the answer to a range has no Content-Range "
                                  "size", url, s3->endpoint ? s3->endpoint : "AWS");
    *got = a.into_len;
    if (size)
        *size = (uint64_t)a.total;
    return SL_OK;
}

static sl_status simple(const sl_s3 *s3, const char *method, const char *url, const char *query,
                        const void *body, size_t len, answer *a)
{
    return at_url(s3, url, (request){.method = method, .query = query, .body = body,
                                     .body_len = len},
                  a);
}

sl_status sl_s3_download(const sl_s3 *s3, const char *url, FILE *fp)
{
    answer a;
    sl_status st = at_url(s3, url, (request){.method = "GET", .to_file = fp}, &a);
    if (st == SL_OK) {
        sl_buf_free(&a.body.buf);
        if (fflush(fp) != 0)
            st = sl_fail(SL_ERR_IO, "cannot write %s to a local file", url);
    }
    return st;
}

sl_status sl_s3_put(const sl_s3 *s3, const char *url, const void *data, size_t len)
{
    answer a;
    sl_status st = simple(s3, "PUT", url, NULL, data, len, &a);
    if (st == SL_OK)
        sl_buf_free(&a.body.buf);
    return st;
}

sl_status sl_s3_put_if(const sl_s3 *s3, const char *url, const void *data, size_t len,
                       const char *if_match, char etag[SL_S3_ETAG_MAX])
{
    answer a;
    sl_status st = at_url(s3, url, (request){.method = "PUT", .body = data, .body_len = len,
                                             .if_match = if_match,
                                             .if_none_match = !if_match},
                          &a);
    if (st == SL_OK) {
        sl_buf_free(&a.body.buf);
        snprintf(etag, SL_S3_ETAG_MAX, "%s", a.etag);
    }
    return st;
}

sl_status sl_s3_get_tagged(const sl_s3 *s3, const char *url, size_t max_bytes, uint8_t **data,
                           size_t *len, char etag[SL_S3_ETAG_MAX], long long *age_s)
{
    *data = NULL;
    *len = 0;
    answer a;
    sl_status st = at_url(s3, url, (request){.method = "GET", .max_bytes = max_bytes}, &a);
    if (st != SL_OK)
        return st;
    *data = a.body.buf.data ? a.body.buf.data : sl_malloc(1);
    *len = a.body.buf.len;
    snprintf(etag, SL_S3_ETAG_MAX, "%s", a.etag);
    *age_s = a.date >= 0 && a.modified >= 0 ? (long long)(a.date - a.modified) : -1;
    return *data ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading %s", url);
}

sl_status sl_s3_delete_if(const sl_s3 *s3, const char *url, const char *if_match)
{
    answer a;
    sl_status st = at_url(s3, url, (request){.method = "DELETE", .if_match = if_match}, &a);
    if (st == SL_OK)
        sl_buf_free(&a.body.buf);
    return st == SL_ERR_NOT_FOUND ? SL_OK : st;
}

sl_status sl_s3_delete(const sl_s3 *s3, const char *url)
{
    answer a;
    sl_status st = simple(s3, "DELETE", url, NULL, NULL, 0, &a);
    if (st == SL_OK)
        sl_buf_free(&a.body.buf);
    return st == SL_ERR_NOT_FOUND ? SL_OK : st;
}

enum { MIN_PART = 5u << 20, DEFAULT_PART = 16u << 20, MAX_PARTS = 10000 };

static sl_status read_part(FILE *fp, const char *path, uint8_t *buf, size_t want, size_t *got)
{
    *got = fread(buf, 1, want, fp);
    if (*got < want && ferror(fp))
        return sl_fail(SL_ERR_IO, "cannot read '%s' to upload it", path);
    return SL_OK;
}

sl_status sl_s3_upload_file(const sl_s3 *s3, const char *path, const char *url,
                            size_t part_bytes)
{
    if (!part_bytes)
        part_bytes = DEFAULT_PART;
    if (part_bytes < MIN_PART)
        part_bytes = MIN_PART;
    FILE *fp = fopen(path, "rbe");
    if (!fp)
        return sl_fail(SL_ERR_NOT_FOUND, "cannot open '%s' to upload it", path);
    uint8_t *buf = sl_malloc(part_bytes);
    size_t got = 0;
    sl_status st = buf ? read_part(fp, path, buf, part_bytes, &got)
                       : sl_fail(SL_ERR_NOMEM, "out of memory uploading '%s'", path);
    if (st == SL_OK && got < part_bytes) { /* small: one PUT */
        st = sl_s3_put(s3, url, buf, got);
        sl_free(buf);
        fclose(fp);
        return st;
    }
    /* Multipart: initiate, parts, complete; abort on any failure. */
    answer a = {0};
    char upload_id[512] = "";
    sl_buf done = {0};
    if (st == SL_OK && (st = simple(s3, "POST", url, "uploads=", NULL, 0, &a)) == SL_OK) {
        xml_field(&a.body.buf, "UploadId", upload_id, sizeof upload_id);
        sl_buf_free(&a.body.buf);
        if (!upload_id[0])
            st = sl_fail(SL_ERR_IO, "POST %s?uploads: the answer has no UploadId", url);
    }
    if (st == SL_OK && !sl_buf_append(&done, "<CompleteMultipartUpload>", 25))
        st = sl_fail(SL_ERR_NOMEM, "out of memory uploading '%s'", path);
    sl_buf id_enc = {0};
    if (st == SL_OK && (!put_encoded(&id_enc, upload_id, false) || !sl_buf_append(&id_enc, "", 1)))
        st = sl_fail(SL_ERR_NOMEM, "out of memory uploading '%s'", path);
    for (int part = 1; st == SL_OK && got > 0; part++) {
        if (part > MAX_PARTS) {
            st = sl_fail(SL_ERR_TOO_LARGE, "'%s' needs more than %d parts of %zu bytes", path,
                         MAX_PARTS, part_bytes);
            break;
        }
        char query[700], entry[300];
        int err = part > 1 ? sl_fault("s3.upload_part", url) : 0; /* a kill lands mid-upload */
        if (err) {
            st = sl_fail(SL_ERR_IO, "PUT %s part %d: %s", url, part, strerror(err));
            break;
        }
        snprintf(query, sizeof query, "partNumber=%d&uploadId=%s", part, (char *)id_enc.data);
        if ((st = simple(s3, "PUT", url, query, buf, got, &a)) != SL_OK)
            break;
        sl_buf_free(&a.body.buf);
        int w = snprintf(entry, sizeof entry, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag>"
                         "</Part>", part, a.etag);
        if (!a.etag[0] || w >= (int)sizeof entry) {
            st = sl_fail(SL_ERR_IO, "PUT %s part %d: the answer has no ETag", url, part);
            break;
        }
        if (!sl_buf_append(&done, entry, (size_t)w)) {
            st = sl_fail(SL_ERR_NOMEM, "out of memory uploading '%s'", path);
            break;
        }
        st = read_part(fp, path, buf, part_bytes, &got);
    }
    if (st == SL_OK && !sl_buf_append(&done, "</CompleteMultipartUpload>", 26))
        st = sl_fail(SL_ERR_NOMEM, "out of memory uploading '%s'", path);
    if (st == SL_OK) {
        char query[700];
        snprintf(query, sizeof query, "uploadId=%s", (char *)id_enc.data);
        st = at_url(s3, url, (request){.method = "POST", .query = query, .body = done.data,
                                       .body_len = done.len, .error_in_2xx = true},
                    &a);
        char why[1024];
        if (st == SL_OK) {
            sl_buf_free(&a.body.buf);
        } else { /* the request's own words do not say which of the upload's it was */
            snprintf(why, sizeof why, "%s", sl_last_error());
            st = sl_fail(st, "completing the multipart upload: %s", why);
        }
    }
    if (st != SL_OK && upload_id[0] && id_enc.data) {
        char msg[1024], query[700];
        snprintf(msg, sizeof msg, "%s", sl_last_error());
        snprintf(query, sizeof query, "uploadId=%s", (char *)id_enc.data);
        if (simple(s3, "DELETE", url, query, NULL, 0, &a) == SL_OK)
            sl_buf_free(&a.body.buf);
        st = sl_fail(st, "%s", msg);
    }
    sl_buf_free(&id_enc);
    sl_buf_free(&done);
    sl_free(buf);
    fclose(fp);
    return st;
}

/* --- listing ---------------------------------------------------------------------------- */

typedef struct entry {
    char *key;
    uint64_t size;
} entry;

struct sl_s3_list {
    const sl_s3 *s3;
    char *bucket, *prefix, *url;
    char *token;   /* the next page's continuation token; NULL: no more pages */
    uint64_t *tokens_seen; /* hashes of the tokens given so far, to stop a store that
                            * leads the listing round in a circle */
    size_t n_tokens, tokens_cap;
    bool started;
    unsigned max_keys; /* a page's keys at most; 0: the store's (1,000) */
    entry *page;
    size_t n, at;
};

sl_status sl_s3_list_open(const sl_s3 *s3, const char *url, sl_s3_list **out)
{
    *out = NULL;
    sl_s3_list *l = sl_calloc(1, sizeof *l);
    if (!l)
        return sl_fail(SL_ERR_NOMEM, "out of memory listing %s", url);
    l->s3 = s3;
    sl_status st = sl_s3_split(url, &l->bucket, &l->prefix);
    if (st == SL_OK && !(l->url = sl_strdup(url)))
        st = sl_fail(SL_ERR_NOMEM, "out of memory listing %s", url);
    if (st != SL_OK) {
        sl_s3_list_free(l);
        return st;
    }
    *out = l;
    return SL_OK;
}

void sl_s3_list_limit(sl_s3_list *l, unsigned max_keys) { l->max_keys = max_keys; }

static void clear_page(sl_s3_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        sl_free(l->page[i].key);
    sl_free(l->page);
    l->page = NULL;
    l->n = l->at = 0;
}

static const char *text_of(xmlNode *n)
{
    return n->children && n->children->type == XML_TEXT_NODE ? (const char *)n->children->content
                                                              : "";
}

/* A key as ListObjectsV2 sends it with encoding-type=url, decoded in place:
 * %XX, and '+' for a space (S3's form; a '+' in a key comes as %2B). */
static void url_decode(char *s)
{
    char *o = s;
    for (const char *c = s; *c; c++) {
        if (*c == '%' && isxdigit((unsigned char)c[1]) && isxdigit((unsigned char)c[2])) {
            char hex[3] = {c[1], c[2], '\0'};
            *o++ = (char)strtol(hex, NULL, 16);
            c += 2;
        } else {
            *o++ = *c == '+' ? ' ' : *c;
        }
    }
    *o = '\0';
}

/* Records l->token, the next page's; an error when it was given before: the
 * store would list the same pages forever (each a request, none a new key). */
static sl_status note_token(sl_s3_list *l)
{
    uint64_t h = sl_hash_fnv1a64(l->token);
    for (size_t i = 0; i < l->n_tokens; i++)
        if (l->tokens_seen[i] == h)
            return sl_fail(SL_ERR_IO, "listing %s: the store gave continuation token '%.100s' "
                                      "again after %zu pages: its listing goes round in a "
                                      "circle and would never end",
                           l->url, l->token, l->n_tokens + 1);
    uint64_t *grown = sl_grow(l->tokens_seen, l->n_tokens, &l->tokens_cap, sizeof *grown);
    if (!grown)
        return sl_fail(SL_ERR_NOMEM, "out of memory listing %s", l->url);
    l->tokens_seen = grown;
    l->tokens_seen[l->n_tokens++] = h;
    return SL_OK;
}

/* One ListObjectsV2 page into l->page; the next token into l->token. */
static sl_status fetch_page(sl_s3_list *l)
{
    clear_page(l);
    sl_buf q = {0};
    bool ok = true;
    if (l->token)
        ok = sl_buf_append(&q, "continuation-token=", 19) && put_encoded(&q, l->token, false) &&
             sl_buf_append(&q, "&", 1);
    /* Keys come URL-encoded: a key may hold characters XML 1.0 cannot
     * (U+0001), and one such key made the whole page unreadable. */
    char max_keys[32] = "";
    if (l->max_keys)
        snprintf(max_keys, sizeof max_keys, "max-keys=%u&", l->max_keys);
    ok = ok && sl_buf_append(&q, "encoding-type=url&list-type=2&", 30) &&
         sl_buf_append(&q, max_keys, strlen(max_keys)) && sl_buf_append(&q, "prefix=", 7) &&
         put_encoded(&q, l->prefix, false) && sl_buf_append(&q, "", 1);
    if (!ok) {
        sl_buf_free(&q);
        return sl_fail(SL_ERR_NOMEM, "out of memory listing %s", l->url);
    }
    request rq = {.method = "GET", .bucket = l->bucket, .key = "", .query = (char *)q.data,
                  .max_bytes = 64u << 20, .what = l->url};
    answer a;
    sl_status st = perform(l->s3, &rq, &a);
    sl_buf_free(&q);
    sl_free(l->token);
    l->token = NULL;
    if (st != SL_OK)
        return st;
    xmlDoc *doc = a.body.buf.data ? xmlReadMemory((const char *)a.body.buf.data, (int)a.body.buf.len, NULL,
                                              NULL, XML_PARSE_NONET | XML_PARSE_NOERROR |
                                                        XML_PARSE_NOWARNING)
                              : NULL;
    sl_buf_free(&a.body.buf);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (!root || strcmp((const char *)root->name, "ListBucketResult") != 0) {
        xmlFreeDoc(doc);
        return sl_fail(SL_ERR_IO, "listing %s: the answer is not a ListBucketResult", l->url);
    }
    size_t cap = 0;
    bool truncated = false, encoded = false;
    /* A store that ignores encoding-type sends the keys as they are. */
    for (xmlNode *n = root->children; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, "EncodingType") == 0)
            encoded = strcmp(text_of(n), "url") == 0;
    for (xmlNode *n = root->children; n && st == SL_OK; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        const char *name = (const char *)n->name;
        if (strcmp(name, "IsTruncated") == 0) {
            truncated = strcmp(text_of(n), "true") == 0;
        } else if (strcmp(name, "NextContinuationToken") == 0) {
            if (!(l->token = sl_strdup(text_of(n))))
                st = sl_fail(SL_ERR_NOMEM, "out of memory listing %s", l->url);
        } else if (strcmp(name, "Contents") == 0) {
            entry e = {0};
            for (xmlNode *c = n->children; c; c = c->next) {
                if (c->type != XML_ELEMENT_NODE)
                    continue;
                if (strcmp((const char *)c->name, "Key") == 0)
                    e.key = (char *)text_of(c);
                else if (strcmp((const char *)c->name, "Size") == 0)
                    e.size = strtoull(text_of(c), NULL, 10);
            }
            if (!e.key || !*e.key)
                continue;
            entry *grown = sl_grow(l->page, l->n, &cap, sizeof *grown);
            if (!grown) {
                st = sl_fail(SL_ERR_NOMEM, "out of memory listing %s", l->url);
                break;
            }
            l->page = grown;
            if (!(e.key = sl_strdup(e.key))) {
                st = sl_fail(SL_ERR_NOMEM, "out of memory listing %s", l->url);
                break;
            }
            if (encoded)
                url_decode(e.key);
            l->page[l->n++] = e;
        }
    }
    xmlFreeDoc(doc);
    if (st == SL_OK && truncated && !l->token)
        st = sl_fail(SL_ERR_IO, "listing %s: a truncated page without a continuation token",
                     l->url);
    if (st == SL_OK && truncated)
        st = note_token(l);
    if (!truncated) {
        sl_free(l->token);
        l->token = NULL;
    }
    return st;
}

sl_status sl_s3_list_next(sl_s3_list *l, const char **key, uint64_t *size, bool *done)
{
    *done = false;
    while (l->at == l->n) {
        if (l->started && !l->token) {
            *done = true;
            return SL_OK;
        }
        l->started = true;
        sl_status st = fetch_page(l);
        if (st != SL_OK)
            return st;
    }
    *key = l->page[l->at].key;
    *size = l->page[l->at].size;
    l->at++;
    return SL_OK;
}

void sl_s3_list_free(sl_s3_list *l)
{
    if (!l)
        return;
    clear_page(l);
    sl_free(l->bucket);
    sl_free(l->prefix);
    sl_free(l->url);
    sl_free(l->token);
    sl_free(l->tokens_seen);
    sl_free(l);
}

/* --- multipart uploads left behind ---------------------------------------------------- */

sl_status sl_s3_abort_uploads(const sl_s3 *s3, const char *url,
                              bool (*stale)(void *user, const char *name), void *user,
                              long *aborted)
{
    *aborted = 0;
    char *bucket, *prefix;
    sl_status st = sl_s3_split(url, &bucket, &prefix);
    if (st != SL_OK)
        return st;
    char *key_marker = NULL, *id_marker = NULL;
    size_t plen = strlen(prefix);
    for (bool more = true; st == SL_OK && more;) {
        sl_buf q = {0};
        bool ok = true;
        if (key_marker)
            ok = sl_buf_append(&q, "key-marker=", 11) && put_encoded(&q, key_marker, false) &&
                 sl_buf_append(&q, "&", 1);
        ok = ok && sl_buf_append(&q, "prefix=", 7) && put_encoded(&q, prefix, false);
        if (ok && id_marker)
            ok = sl_buf_append(&q, "&upload-id-marker=", 18) && put_encoded(&q, id_marker, false);
        ok = ok && sl_buf_append(&q, "&uploads=", 9) && sl_buf_append(&q, "", 1);
        if (!ok) {
            sl_buf_free(&q);
            st = sl_fail(SL_ERR_NOMEM, "out of memory listing the uploads of %s", url);
            break;
        }
        request rq = {.method = "GET", .bucket = bucket, .key = "", .query = (char *)q.data,
                      .max_bytes = 64u << 20, .what = url};
        answer a;
        st = perform(s3, &rq, &a);
        sl_buf_free(&q);
        if (st != SL_OK)
            break;
        xmlDoc *doc = a.body.buf.data
                          ? xmlReadMemory((const char *)a.body.buf.data, (int)a.body.buf.len,
                                          NULL, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR |
                                                          XML_PARSE_NOWARNING)
                          : NULL;
        sl_buf_free(&a.body.buf);
        xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
        if (!root || strcmp((const char *)root->name, "ListMultipartUploadsResult") != 0) {
            xmlFreeDoc(doc);
            st = sl_fail(SL_ERR_IO, "listing the uploads of %s: the answer is not a "
                                    "ListMultipartUploadsResult", url);
            break;
        }
        more = false;
        char *sent_key = key_marker, *sent_id = id_marker;
        key_marker = id_marker = NULL;
        for (xmlNode *n = root->children; n && st == SL_OK; n = n->next) {
            if (n->type != XML_ELEMENT_NODE)
                continue;
            const char *name = (const char *)n->name;
            if (strcmp(name, "IsTruncated") == 0) {
                more = strcmp(text_of(n), "true") == 0;
            } else if (strcmp(name, "NextKeyMarker") == 0 && *text_of(n)) {
                key_marker = sl_strdup(text_of(n));
            } else if (strcmp(name, "NextUploadIdMarker") == 0 && *text_of(n)) {
                id_marker = sl_strdup(text_of(n));
            } else if (strcmp(name, "Upload") == 0) {
                const char *key = "", *id = "";
                for (xmlNode *c = n->children; c; c = c->next) {
                    if (c->type != XML_ELEMENT_NODE)
                        continue;
                    if (strcmp((const char *)c->name, "Key") == 0)
                        key = text_of(c);
                    else if (strcmp((const char *)c->name, "UploadId") == 0)
                        id = text_of(c);
                }
                /* the listing's prefix is a prefix of keys: "run1" holds "run10/.." too */
                if (!*id || strncmp(key, prefix, plen) != 0 || !stale(user, key + plen))
                    continue;
                char *obj = sl_asprintf("s3://%s/%s", bucket, key);
                sl_buf qq = {0};
                if (!obj || !sl_buf_append(&qq, "uploadId=", 9) || !put_encoded(&qq, id, false) ||
                    !sl_buf_append(&qq, "", 1)) {
                    st = sl_fail(SL_ERR_NOMEM, "out of memory aborting uploads under %s", url);
                } else if ((st = simple(s3, "DELETE", obj, (char *)qq.data, NULL, 0, &a)) ==
                           SL_OK) {
                    sl_buf_free(&a.body.buf);
                    (*aborted)++;
                } else if (st == SL_ERR_NOT_FOUND) { /* it ended meanwhile */
                    st = SL_OK;
                }
                sl_buf_free(&qq);
                sl_free(obj);
            }
        }
        xmlFreeDoc(doc);
        if (st == SL_OK && more && !key_marker)
            st = sl_fail(SL_ERR_IO, "listing the uploads of %s: a truncated page without "
                                    "a NextKeyMarker", url);
        /* the same page again, and again: the listing would never end */
        if (st == SL_OK && more && sent_key && strcmp(key_marker, sent_key) == 0 &&
            strcmp(id_marker ? id_marker : "", sent_id ? sent_id : "") == 0)
            st = sl_fail(SL_ERR_IO, "listing the uploads of %s: the store gave the markers "
                                    "of the page before ('%.100s') again: its listing would "
                                    "never end", url, key_marker);
        sl_free(sent_key);
        sl_free(sent_id);
    }
    sl_free(key_marker);
    sl_free(id_marker);
    sl_free(bucket);
    sl_free(prefix);
    return st;
}
