/* io/curl_conn.c — see curl_conn.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "io/curl_conn.h"
#include "io/fetch.h"

/* Each thread keeps one curl handle for its requests, and with it
 * libcurl's cache of open connections: a thread's next request to a
 * host goes over the connection its last one left open, without a new
 * TCP (and TLS) handshake. One cache for all threads (a CURLSH sharing
 * CURL_LOCK_DATA_CONNECT) would need fewer connections, but libcurl does
 * not support sharing connections between threads that run at once
 * (CURLSHOPT_SHARE(3)); the threads that make requests (read stages, the
 * writer, the count pass) live as long as the job, so a handle each costs
 * a connection each. What the threads do share, under a lock, is the DNS
 * cache and TLS sessions: a thread's first connection resumes a session
 * another thread made. A handle lives until its thread ends. */
static pthread_once_t conn_once = PTHREAD_ONCE_INIT;
static pthread_key_t conn_key;
static bool conn_key_ok;
static CURLSH *conn_share;
static pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
static atomic_long n_requests, n_connections;

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *user)
{
    (void)h, (void)access, (void)user;
    pthread_mutex_lock(&share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *user)
{
    (void)h, (void)user;
    pthread_mutex_unlock(&share_locks[data]);
}

static void drop_handle(void *h) { curl_easy_cleanup(h); }

static void conn_init(void)
{
    sl_fetch_init_curl();
    conn_key_ok = pthread_key_create(&conn_key, drop_handle) == 0;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&share_locks[i], NULL);
    if ((conn_share = curl_share_init()) != NULL &&
        (curl_share_setopt(conn_share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
         curl_share_setopt(conn_share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
         curl_share_setopt(conn_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
         curl_share_setopt(conn_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) !=
             CURLSHE_OK)) {
        curl_share_cleanup(conn_share);
        conn_share = NULL; /* each handle keeps its own: slower, as right */
    }
}

void sl_curl_trust(CURL *h)
{
    const char *file = getenv("CURL_CA_BUNDLE");
    if (!file || !*file)
        file = getenv("SSL_CERT_FILE");
    const char *dir = getenv("SSL_CERT_DIR");
    if (file && *file)
        curl_easy_setopt(h, CURLOPT_CAINFO, file);
    if (dir && *dir)
        curl_easy_setopt(h, CURLOPT_CAPATH, dir);
}

CURL *sl_curl_take(bool fresh)
{
    pthread_once(&conn_once, conn_init);
    CURL *h;
    if (fresh || !conn_key_ok) {
        if ((h = curl_easy_init()))
            sl_curl_trust(h);
        return h;
    }
    if ((h = pthread_getspecific(conn_key))) {
        sl_curl_trust(h); /* curl_easy_reset dropped it with the last request's options */
        return h;
    }
    if (!(h = curl_easy_init()))
        return NULL;
    if (conn_share)
        curl_easy_setopt(h, CURLOPT_SHARE, conn_share); /* kept by curl_easy_reset */
    if (pthread_setspecific(conn_key, h) != 0) {
        curl_easy_cleanup(h);
        return NULL;
    }
    sl_curl_trust(h);
    return h;
}

void sl_curl_give(CURL *h, bool fresh)
{
    if (!h)
        return;
    if (fresh || !conn_key_ok)
        curl_easy_cleanup(h);
    else
        curl_easy_reset(h);
}

void sl_curl_count(CURL *h)
{
    long connects = 0;
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
    atomic_fetch_add(&n_requests, 1);
    atomic_fetch_add(&n_connections, connects);
}

sl_curl_counts sl_curl_counts_now(void)
{
    return (sl_curl_counts){.requests = atomic_load(&n_requests),
                            .connections = atomic_load(&n_connections)};
}

const char *sl_curl_why(CURLcode rc, const char *errbuf)
{
    if (errbuf && errbuf[0])
        return errbuf;
    if (rc == CURLE_OUT_OF_MEMORY)
        return "Out of memory, or an answer header line past libcurl's 100 KB";
    return curl_easy_strerror(rc);
}
