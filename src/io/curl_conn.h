/* io/curl_conn.h — the curl handles of io/'s HTTP requests (S3 and image
 * downloads): each thread keeps one handle, and with it libcurl's cache of
 * open connections, so its next request to a host goes over the
 * connection its last one left open instead of a new TCP (and TLS)
 * handshake; the threads share DNS answers and TLS sessions. A thread's
 * handle lives until the thread ends. Thread-safe. */
#ifndef SL_IO_CURL_CONN_H
#define SL_IO_CURL_CONN_H

#include <stdbool.h>

#include <curl/curl.h>

/* This thread's handle (made at its first request), or with `fresh` a new
 * one: the request goes over a new connection, none kept. NULL when out of
 * memory. Give it back with sl_curl_give after the request. */
CURL *sl_curl_take(bool fresh);

/* After a request: the thread's handle keeps its connections, not the
 * pointers into the finished request's memory (curl_easy_reset: options
 * go, CURLOPT_SHARE stays); a fresh one is cleaned up. NULL: nothing. */
void sl_curl_give(CURL *h, bool fresh);

/* Sets h to trust the CA certificates the environment names, as curl,
 * OpenSSL and Python's requests read them: CURL_CA_BUNDLE, else
 * SSL_CERT_FILE (a PEM file), and SSL_CERT_DIR (a hashed folder). With
 * none set, libcurl's built-in bundle. Every HTTPS request sluice makes
 * goes through it (an internal gateway, an S3 store or an image server
 * with a private CA). */
void sl_curl_trust(CURL *h);

/* Why a transfer failed, in words: libcurl's own (errbuf, when it wrote
 * one), else its code's. Its "Out of memory" with nothing in errbuf is
 * also what it says of an answer whose header line passes 100 KB (a
 * server sending garbage): the words say that too. */
const char *sl_curl_why(CURLcode rc, const char *errbuf);

/* Counts a performed transfer on h: one request, and the connections it
 * opened (CURLINFO_NUM_CONNECTS). */
void sl_curl_count(CURL *h);

typedef struct sl_curl_counts {
    long requests, connections;
} sl_curl_counts;

/* Requests and new connections of the process so far. */
sl_curl_counts sl_curl_counts_now(void);

#endif
