/* io/fetch.c — see fetch.h. */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "io/curl_conn.h"
#include "io/fetch.h"
#include "io/s3.h"

sl_fetch_params sl_fetch_default_params(void)
{
    return (sl_fetch_params){.timeout_ms = 30000, .max_bytes = 64u << 20, .retries = 2};
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void sl_fetch_init_curl(void) { pthread_once(&curl_once, curl_init); }

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
        if (attempt) {
            long ms = attempt < 6 ? 200L << (attempt - 1) : 5000L;
            struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
            nanosleep(&pause, NULL);
        }
        sl_capped b = {.max = p->max_bytes};
        cerr[0] = '\0';
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, p->timeout_ms);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)p->max_bytes);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sl_capped_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice");
        CURLcode rc = curl_easy_perform(h);
        sl_curl_count(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        bool retry = false;
        if (b.nomem) {
            st = SL_ERR_NOMEM;
            snprintf(why, sizeof why, "out of memory");
        } else if (b.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
            st = SL_ERR_TOO_LARGE;
            snprintf(why, sizeof why, "larger than the %zu-byte limit (--max-download-bytes)",
                     p->max_bytes);
        } else if (rc != CURLE_OK) {
            snprintf(why, sizeof why, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
            retry = rc != CURLE_UNSUPPORTED_PROTOCOL && rc != CURLE_URL_MALFORMAT;
        } else if (code >= 400) {
            snprintf(why, sizeof why, "HTTP %ld", code);
            retry = code >= 500 || code == 429;
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
