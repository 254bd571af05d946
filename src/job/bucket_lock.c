/* job/bucket_lock.c — an s3:// output's lock in the bucket (job.h).
 *
 * The resume ledger's lock lives in the state folder, on one machine: two
 * runs of one prefix with two state folders (two machines) both pass it.
 * So the run that holds the ledger also holds PREFIX/_sluice.lock, a small
 * JSON object made by a conditional PUT (If-None-Match: *: of two runs,
 * one makes it, the other is told it exists). It names its holder and the
 * time its lease ends; a thread renews it (a PUT If-Match its own ETag)
 * four times a lease, and the run deletes it as it ends. A run killed
 * without that leaves it until the lease ends: then the next run takes it
 * over (a PUT If-Match the ETag it read, so of two that try, one wins).
 * The lease is judged by the store's clock (the time since its last write,
 * from the GET's Date and Last-Modified): the holder's and the reader's
 * clocks may differ by more than a lease. A lock of an older sluice (no
 * "lease") or a store without those headers: by its "expires", this
 * machine's clock against the holder's.
 * One held by this host for this state folder is taken over at once: its
 * holder would hold the ledger, which this run holds, so it is gone.
 * A run whose renewals fail (or that finds the lock taken) stops committing
 * parts once less than a quarter of its last lease is left: past it another
 * run may take the prefix, and the two would write beside each other. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "io/s3.h"
#include "job/job.h"

#define LOCK_NAME "_sluice.lock"
enum { DEFAULT_LEASE_S = 300 };

struct bucket_lock {
    const sl_s3 *s3;
    char *url, *state_dir;
    char host[256];
    long lease_s;
    char etag[SL_S3_ETAG_MAX];
    double held_until;  /* sl_mono_s(): the lease the last PUT made ends (from before it) */
    char lost[512];     /* why it is no longer held: the last renewal's error */
    pthread_t renewer;
    bool renewing, stop;
    pthread_mutex_t mu;
    pthread_cond_t wake;
};

static char *lock_body(const bucket_lock *k, size_t *len)
{
    time_t until = time(NULL) + k->lease_s;
    char utc[32];
    struct tm tm;
    strftime(utc, sizeof utc, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&until, &tm));
    json_t *o = json_pack("{s:s, s:I, s:s, s:I, s:s, s:I}", "host", k->host, "pid",
                          (json_int_t)getpid(), "state_dir", k->state_dir, "expires",
                          (json_int_t)until, "expires_utc", utc, "lease", (json_int_t)k->lease_s);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char *body = text ? sl_strdup(text) : NULL;
    free(text);
    *len = body ? strlen(body) : 0;
    return body;
}

/* The holder a lock object names. */
typedef struct holder {
    char host[256], state_dir[1024], until[32];
    long long pid, expires;
    long long lease; /* seconds from each write; 0: not given (an older sluice) */
} holder;

static void read_holder(const uint8_t *data, size_t len, holder *h)
{
    memset(h, 0, sizeof *h);
    json_t *o = json_loadb((const char *)data, len, 0, NULL);
    const char *host = NULL, *dir = NULL, *until = NULL;
    json_int_t pid = 0, expires = 0, lease = 0;
    /* one the run cannot read has no end: it is not taken over */
    h->expires = (long long)1 << 62;
    if (o && json_unpack(o, "{s:s, s:I, s:s, s:I, s?s, s?I}", "host", &host, "pid", &pid,
                         "state_dir", &dir, "expires", &expires, "expires_utc", &until,
                         "lease", &lease) == 0) {
        snprintf(h->host, sizeof h->host, "%s", host);
        snprintf(h->state_dir, sizeof h->state_dir, "%s", dir);
        snprintf(h->until, sizeof h->until, "%s", until ? until : "");
        h->pid = (long long)pid;
        h->expires = (long long)expires;
        h->lease = lease > 0 ? (long long)lease : 0;
    }
    json_decref(o);
}

static void *renew(void *arg)
{
    bucket_lock *k = arg;
    pthread_mutex_lock(&k->mu);
    while (!k->stop) {
        struct timespec at;
        sl_deadline_after(k->lease_s * 1000 / 4, &at);
        pthread_cond_timedwait(&k->wake, &k->mu, &at);
        if (k->stop)
            break;
        char old[SL_S3_ETAG_MAX], now[SL_S3_ETAG_MAX];
        snprintf(old, sizeof old, "%s", k->etag);
        pthread_mutex_unlock(&k->mu);
        size_t len;
        double sent = sl_mono_s();
        char *body = lock_body(k, &len);
        sl_status st = body ? sl_s3_put_if(k->s3, k->url, body, len, old, now)
                            : sl_fail(SL_ERR_NOMEM, "out of memory renewing it");
        sl_free(body);
        bool lost = st == SL_ERR_EXISTS || st == SL_ERR_NOT_FOUND;
        char why[sizeof k->lost];
        snprintf(why, sizeof why, "%s", st == SL_OK ? "" : sl_last_error());
        if (lost)
            sl_log(SL_LOG_ERROR, "%s was deleted or taken over by another run: nothing keeps "
                                 "other runs out of the output now", k->url);
        else if (st != SL_OK)
            sl_log(SL_LOG_WARN, "cannot renew %s (tried again in %ld s): %s", k->url,
                   k->lease_s / 4 ? k->lease_s / 4 : 1, sl_last_error());
        pthread_mutex_lock(&k->mu);
        if (st == SL_OK) {
            snprintf(k->etag, sizeof k->etag, "%s", now);
            k->held_until = sent + (double)k->lease_s;
            k->lost[0] = '\0'; /* an earlier failure is not why a later lease ends */
        } else {
            snprintf(k->lost, sizeof k->lost, "%s", why);
        }
        if (lost) {
            k->held_until = 0;
            break; /* not ours any more: nothing to renew or delete */
        }
    }
    if (!k->stop)
        k->etag[0] = '\0';
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

static void lock_free(bucket_lock *k)
{
    if (!k)
        return;
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->wake);
    sl_free(k->url);
    sl_free(k->state_dir);
    sl_free(k);
}

static sl_status lease_from_env(long *lease_s)
{
    const char *v = getenv("SLUICE_S3_LOCK_LEASE");
    *lease_s = DEFAULT_LEASE_S;
    if (!v || !*v)
        return SL_OK;
    char *end;
    long s = strtol(v, &end, 10);
    if (*end || s < 2 || s > 86400)
        return sl_fail(SL_ERR_INVALID_ARG, "SLUICE_S3_LOCK_LEASE must be a whole number of "
                                           "seconds from 2 to 86400, got '%s'", v);
    *lease_s = s;
    return SL_OK;
}

/* The refusal: who holds the lock, until when, and how to clear it. */
static sl_status refuse(const job *j, const bucket_lock *k, const holder *h)
{
    return sl_fail(SL_ERR_BUSY,
                   "output '%s' is in use by another sluice run (its lock '%s' names host "
                   "'%s', process %lld, state folder '%s', and lasts until %s unless that "
                   "run renews it): wait for that run to end, or write to another prefix. "
                   "A run that was killed leaves the lock until then; if no run is writing "
                   "the output, delete the lock object (aws s3 rm %s) and run again",
                   j->remote, k->url, h->host, h->pid, h->state_dir,
                   h->until[0] ? h->until : "(unreadable)", k->url);
}

sl_status job_lock_bucket(job *j)
{
    const sl_s3 *s3 = sl_s3_shared();
    if (!s3)
        return SL_ERR_INVALID_ARG;
    bucket_lock *k = sl_calloc(1, sizeof *k);
    if (!k)
        return sl_fail(SL_ERR_NOMEM, "out of memory locking '%s'", j->remote);
    pthread_mutex_init(&k->mu, NULL);
    sl_cond_init_monotonic(&k->wake);
    k->s3 = s3;
    k->url = sl_asprintf("%s/%s", j->remote, LOCK_NAME);
    k->state_dir = sl_strdup(j->dir);
    if (gethostname(k->host, sizeof k->host - 1) != 0)
        snprintf(k->host, sizeof k->host, "unknown");
    sl_status st = k->url && k->state_dir ? lease_from_env(&k->lease_s)
                                          : sl_fail(SL_ERR_NOMEM, "out of memory locking '%s'",
                                                    j->remote);
    holder h = {0};
    bool held = false;
    /* A few rounds: the lock may go or change hands between two requests. */
    for (int round = 0; st == SL_OK && !held && round < 4; round++) {
        size_t len;
        k->held_until = sl_mono_s() + (double)k->lease_s;
        char *body = lock_body(k, &len);
        if (!body) {
            st = sl_fail(SL_ERR_NOMEM, "out of memory locking '%s'", j->remote);
            break;
        }
        st = sl_s3_put_if(s3, k->url, body, len, NULL, k->etag);
        if (st == SL_OK) {
            held = true;
        } else if (st == SL_ERR_IO && round == 0 && strstr(sl_last_error(), "HTTP 501")) {
            /* a store without conditional writes: the check before each
             * upload (io/sink.c) is all that is left */
            sl_log(SL_LOG_WARN, "%s: the store cannot make a lock object (%s): nothing keeps "
                                "another run with another --state-dir out of this prefix",
                   j->remote, sl_last_error());
            sl_free(body);
            lock_free(k);
            return SL_OK;
        } else if (st == SL_ERR_EXISTS) {
            uint8_t *data = NULL;
            size_t n = 0;
            char theirs[SL_S3_ETAG_MAX];
            long long age = -1;
            st = sl_s3_get_tagged(s3, k->url, 64u << 10, &data, &n, theirs, &age);
            if (st == SL_OK) {
                read_holder(data, n, &h);
                sl_free(data);
                bool ours = strcmp(h.host, k->host) == 0 && strcmp(h.state_dir, j->dir) == 0;
                bool ended = h.lease && age >= 0 ? age >= h.lease
                                                 : (long long)time(NULL) >= h.expires;
                if (ours || ended) {
                    st = sl_s3_put_if(s3, k->url, body, len, theirs, k->etag);
                    held = st == SL_OK;
                    if (held && !ours)
                        sl_log(SL_LOG_WARN, "%s: took over the lock of a run that did not "
                                            "renew it (host '%s', process %lld, ended %s)",
                               j->remote, h.host, h.pid, h.until);
                    else if (st == SL_ERR_EXISTS)
                        st = SL_OK; /* another run took it first: look again */
                } else {
                    st = refuse(j, k, &h);
                }
            } else if (st == SL_ERR_NOT_FOUND) {
                st = SL_OK; /* released meanwhile: try again */
            }
        }
        sl_free(body);
    }
    if (st == SL_OK && !held)
        st = refuse(j, k, &h);
    if (st == SL_OK) {
        k->renewing = pthread_create(&k->renewer, NULL, renew, k) == 0;
        if (!k->renewing)
            st = sl_fail(SL_ERR_NOMEM, "cannot start the thread that renews '%s'", k->url);
    }
    if (st != SL_OK) {
        if (held)
            sl_s3_delete_if(s3, k->url, k->etag);
        lock_free(k);
        return st;
    }
    j->bucket_lock = k;
    return SL_OK;
}

sl_status job_check_bucket_lock(job *j)
{
    bucket_lock *k = j->bucket_lock;
    if (!k)
        return SL_OK;
    pthread_mutex_lock(&k->mu);
    bool held = sl_mono_s() < k->held_until - (double)k->lease_s / 4;
    char why[sizeof k->lost];
    snprintf(why, sizeof why, "%s", k->lost[0] ? k->lost : "its renewals did not finish");
    pthread_mutex_unlock(&k->mu);
    if (held)
        return SL_OK;
    return sl_fail(SL_ERR_IO, "lost the lock on %s (%s, renewed every %ld s for a lease of "
                              "%ld s: %s): another run may hold the prefix now, so this run "
                              "commits no more parts: run it again (it resumes)",
                   j->remote, k->url, k->lease_s / 4 ? k->lease_s / 4 : 1, k->lease_s, why);
}

void job_unlock_bucket(job *j)
{
    bucket_lock *k = j->bucket_lock;
    if (!k)
        return;
    j->bucket_lock = NULL;
    pthread_mutex_lock(&k->mu);
    k->stop = true;
    pthread_cond_signal(&k->wake);
    pthread_mutex_unlock(&k->mu);
    if (k->renewing)
        pthread_join(k->renewer, NULL);
    /* The run's own error, if any, is what the caller reports next. */
    char *why = sl_strdup(sl_last_error());
    sl_status st = k->etag[0] ? sl_s3_delete_if(k->s3, k->url, k->etag) : SL_OK;
    if (st == SL_ERR_EXISTS)
        sl_log(SL_LOG_WARN, "%s was taken over by another run: left to it", k->url);
    else if (st != SL_OK)
        sl_log(SL_LOG_WARN, "cannot remove the lock %s (the next run takes it over once its "
                            "lease ends): %s", k->url, sl_last_error());
    if (why && *why)
        sl_fail(SL_ERR_IO, "%s", why);
    sl_free(why);
    lock_free(k);
}
