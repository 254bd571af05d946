/* s3_tool — drives io/s3.h for the end-to-end tests (tests/e2e/test_s3.py),
 * against the store the AWS_* environment names:
 *   s3_tool put FILE URL            one PUT
 *   s3_tool upload FILE URL BYTES   a multipart upload of BYTES-byte parts
 *   s3_tool get URL [OFFSET LENGTH] the object (or a range) to stdout
 *   s3_tool ls URL                  "SIZE KEY" per object under the prefix
 *   s3_tool rm URL
 *   s3_tool repeat URL N THREADS    GETs the object N times over THREADS threads,
 *                                   then prints "requests R connections C"
 * Exit 0, or 1 with the error on stderr (2 for a wrong command line). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "io/curl_conn.h"
#include "io/s3.h"

typedef struct repeat {
    const sl_s3 *s3;
    const char *url;
    long times;
    sl_status st;
} repeat;

static void *repeat_main(void *arg)
{
    repeat *r = arg;
    for (long i = 0; i < r->times && r->st == SL_OK; i++) {
        uint8_t *data;
        size_t len;
        if ((r->st = sl_s3_get(r->s3, r->url, 0, 0, (size_t)1 << 30, &data, &len)) == SL_OK)
            sl_free(data);
    }
    return NULL;
}

/* n GETs of url on `threads` threads at once (each its share). */
static sl_status repeat_get(const sl_s3 *s3, const char *url, long n, long threads)
{
    if (threads < 1 || threads > 64)
        threads = 1;
    pthread_t tid[64];
    repeat rs[64];
    long started = 0;
    for (long t = 0; t < threads; t++) {
        rs[t] = (repeat){s3, url, n / threads + (t < n % threads), SL_OK};
        if (pthread_create(&tid[t], NULL, repeat_main, &rs[t]) != 0)
            break;
        started++;
    }
    sl_status st = started == threads ? SL_OK : SL_ERR_IO;
    for (long t = 0; t < started; t++) {
        pthread_join(tid[t], NULL);
        if (rs[t].st != SL_OK)
            st = rs[t].st;
    }
    sl_curl_counts c = sl_curl_counts_now();
    printf("requests %ld connections %ld\n", c.requests, c.connections);
    return st;
}

static int fail(void)
{
    fprintf(stderr, "s3_tool: %s\n", sl_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: s3_tool put|upload|get|ls|rm|repeat ...\n");
        return 2;
    }
    sl_s3 *s3;
    if (sl_s3_from_env(NULL, &s3) != SL_OK)
        return fail();
    const char *cmd = argv[1];
    sl_status st = SL_OK;
    if (strcmp(cmd, "put") == 0 && argc == 4) {
        uint8_t *data;
        size_t len;
        if ((st = sl_read_file(argv[2], UINT64_MAX, &data, &len)) == SL_OK) {
            st = sl_s3_put(s3, argv[3], data, len);
            sl_free(data);
        }
    } else if (strcmp(cmd, "upload") == 0 && argc == 5) {
        st = sl_s3_upload_file(s3, argv[2], argv[3], (size_t)strtoull(argv[4], NULL, 10));
    } else if (strcmp(cmd, "get") == 0 && (argc == 3 || argc == 5)) {
        uint8_t *data;
        size_t len;
        uint64_t off = argc == 5 ? strtoull(argv[3], NULL, 10) : 0;
        uint64_t n = argc == 5 ? strtoull(argv[4], NULL, 10) : 0;
        if ((st = sl_s3_get(s3, argv[2], off, n, (size_t)1 << 30, &data, &len)) == SL_OK) {
            fwrite(data, 1, len, stdout);
            sl_free(data);
        }
    } else if (strcmp(cmd, "ls") == 0 && argc == 3) {
        sl_s3_list *l;
        if ((st = sl_s3_list_open(s3, argv[2], &l)) == SL_OK) {
            bool done = false;
            while (st == SL_OK && !done) {
                const char *key;
                uint64_t size;
                if ((st = sl_s3_list_next(l, &key, &size, &done)) == SL_OK && !done)
                    printf("%llu %s\n", (unsigned long long)size, key);
            }
            sl_s3_list_free(l);
        }
    } else if (strcmp(cmd, "repeat") == 0 && argc == 5) {
        st = repeat_get(s3, argv[2], strtol(argv[3], NULL, 10), strtol(argv[4], NULL, 10));
    } else if (strcmp(cmd, "rm") == 0 && argc == 3) {
        st = sl_s3_delete(s3, argv[2]);
    } else {
        fprintf(stderr, "s3_tool: wrong arguments for '%s'\n", cmd);
        sl_s3_free(s3);
        return 2;
    }
    int rc = st == SL_OK ? 0 : fail();
    sl_s3_free(s3);
    return rc;
}
