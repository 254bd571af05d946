/* io/s3_walk.c — S3's byte order into a folder walk's order. The two differ
 * only where a key has a byte below '/' (' ', '-', '.', ...) at a place i
 * where another key has '/': the folder K[0..i)/ comes first in a walk and
 * last in the listing. So a listed key K is held until, for each such i
 * past the prefix, the folder K[0..i)/ is behind the listing (its last key
 * is greater than every key in it), or was listed on its own (done). When
 * too many keys wait, the folder the first of them waits for is listed by
 * a child walk (keys at or before the parent's last already given are left
 * out there); the parent then skips that folder's keys when it reaches them. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/s3_walk.h"

enum { WALK_HELD = 1000 }; /* keys held back before a folder is listed on its own */

struct sl_s3_walk {
    const sl_s3 *s3;
    const sl_s3_walk *parent;
    sl_s3_list *list;
    char *url;         /* what is listed: s3://bucket/prefix */
    size_t fixed;      /* the prefix's length: the keys' bytes before it are all the same */
    char *after;       /* a child's: keys up to this one the parent gave or skipped */
    char *last;        /* the last key listed */
    bool ended;        /* the listing ended */
    char **held;       /* listed, not given yet, in walk order */
    size_t n_held;
    char **done;       /* folders (ending in '/') whose keys a child gave */
    size_t n_done;
    sl_s3_walk *child; /* the folder listed on its own now, ... */
    char *child_folder; /* ... its prefix */
    char *given;       /* the key given last */
};

int sl_walk_cmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (;; x++, y++) {
        int cx = *x == '/' ? 1 : *x ? *x + 1 : 0, cy = *y == '/' ? 1 : *y ? *y + 1 : 0;
        if (cx != cy || !cx)
            return cx - cy;
    }
}

static sl_status walk_new(const sl_s3 *s3, const sl_s3_walk *parent, const char *url,
                          const char *after, sl_s3_walk **out)
{
    *out = NULL;
    sl_s3_walk *w = sl_calloc(1, sizeof *w);
    const char *key = w ? strchr(url + 5, '/') : NULL;
    if (!w || !(w->url = sl_strdup(url)) || (after && !(w->after = sl_strdup(after)))) {
        sl_s3_walk_free(w);
        return sl_fail(SL_ERR_NOMEM, "out of memory listing %s", url);
    }
    w->s3 = s3;
    w->parent = parent;
    w->fixed = key ? strlen(key + 1) : 0;
    sl_status st = sl_s3_list_open(s3, url, &w->list);
    if (st != SL_OK) {
        sl_s3_walk_free(w);
        return st;
    }
    *out = w;
    return SL_OK;
}

sl_status sl_s3_walk_open(const sl_s3 *s3, const char *url, sl_s3_walk **out)
{
    return walk_new(s3, NULL, url, NULL, out);
}

void sl_s3_walk_free(sl_s3_walk *w)
{
    if (!w)
        return;
    sl_s3_walk_free(w->child);
    sl_s3_list_free(w->list);
    for (size_t i = 0; i < w->n_held; i++)
        sl_free(w->held[i]);
    for (size_t i = 0; i < w->n_done; i++)
        sl_free(w->done[i]);
    sl_free(w->held);
    sl_free(w->done);
    sl_free(w->child_folder);
    sl_free(w->url);
    sl_free(w->after);
    sl_free(w->last);
    sl_free(w->given);
    sl_free(w);
}

/* Whether the listing, at key `last`, is past the folder q[0..n)/: last
 * is byte-wise greater than every key in it. */
static bool past(const char *last, const char *q, size_t n)
{
    int c = last ? strncmp(last, q, n) : -1;
    return c > 0 || (c == 0 && (unsigned char)last[n] > '/');
}

/* Whether the folder k[0..n)/ was listed by a child of w or of a walk
 * above it. */
static bool done_by_child(const sl_s3_walk *w, const char *k, size_t n)
{
    for (; w; w = w->parent)
        for (size_t i = 0; i < w->n_done; i++)
            if (strlen(w->done[i]) == n + 1 && strncmp(w->done[i], k, n) == 0)
                return true;
    return false;
}

/* Whether key k lies in a folder a child of w (or above) listed. */
static bool in_done(const sl_s3_walk *w, const char *k)
{
    for (; w; w = w->parent)
        for (size_t i = 0; i < w->n_done; i++)
            if (strncmp(k, w->done[i], strlen(w->done[i])) == 0)
                return true;
    return false;
}

/* The length n of the first folder k[0..n)/ that may still give a key
 * going before k; 0 when none can. */
static size_t waits_for(const sl_s3_walk *w, const char *k)
{
    if (w->ended)
        return 0;
    for (size_t i = w->fixed; k[i]; i++)
        if ((unsigned char)k[i] < '/' && !past(w->last, k, i) && !done_by_child(w, k, i))
            return i;
    return 0;
}

/* Drops the done folders the listing is past: none of their keys is to
 * come, and the list stays as short as the keys are deep. */
static void forget_past(sl_s3_walk *w)
{
    size_t kept = 0;
    for (size_t i = 0; i < w->n_done; i++) {
        if (past(w->last, w->done[i], strlen(w->done[i]) - 1))
            sl_free(w->done[i]);
        else
            w->done[kept++] = w->done[i];
    }
    w->n_done = kept;
}

static sl_status hold(sl_s3_walk *w, const char *key)
{
    char *copy = sl_strdup(key), *last = sl_strdup(key);
    char **grown = copy && last ? sl_realloc(w->held, (w->n_held + 1) * sizeof *grown) : NULL;
    if (!grown) {
        sl_free(copy);
        sl_free(last);
        return sl_fail(SL_ERR_NOMEM, "out of memory listing %s", w->url);
    }
    w->held = grown;
    size_t lo = 0, hi = w->n_held;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sl_walk_cmp(w->held[mid], key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    memmove(w->held + lo + 1, w->held + lo, (w->n_held - lo) * sizeof *w->held);
    w->held[lo] = copy;
    w->n_held++;
    sl_free(w->last);
    w->last = last;
    return SL_OK;
}

/* Lists the folder the first held key waits for on its own. */
static sl_status open_child(sl_s3_walk *w)
{
    size_t n = waits_for(w, w->held[0]);
    const char *bucket_end = strchr(w->url + 5, '/');
    size_t bucket = bucket_end ? (size_t)(bucket_end - w->url) : strlen(w->url);
    char *folder = sl_asprintf("%.*s/", (int)n, w->held[0]);
    char *url = folder ? sl_asprintf("%.*s/%s", (int)bucket, w->url, folder) : NULL;
    sl_status st = url ? walk_new(w->s3, w, url, w->last, &w->child)
                       : sl_fail(SL_ERR_NOMEM, "out of memory listing %s", w->url);
    sl_free(url);
    if (st != SL_OK) {
        sl_free(folder);
        return st;
    }
    w->child_folder = folder;
    return SL_OK;
}

static sl_status child_ended(sl_s3_walk *w)
{
    char **grown = sl_realloc(w->done, (w->n_done + 1) * sizeof *grown);
    if (!grown)
        return sl_fail(SL_ERR_NOMEM, "out of memory listing %s", w->url);
    w->done = grown;
    w->done[w->n_done++] = w->child_folder;
    w->child_folder = NULL;
    sl_s3_walk_free(w->child);
    w->child = NULL;
    return SL_OK;
}

sl_status sl_s3_walk_next(sl_s3_walk *w, const char **key, bool *done)
{
    *done = false;
    for (;;) {
        sl_status st;
        if (w->child) {
            bool child_done;
            if ((st = sl_s3_walk_next(w->child, key, &child_done)) != SL_OK)
                return st;
            if (!child_done)
                return SL_OK;
            if ((st = child_ended(w)) != SL_OK)
                return st;
            continue;
        }
        if (w->n_held && !waits_for(w, w->held[0])) {
            sl_free(w->given);
            w->given = w->held[0];
            memmove(w->held, w->held + 1, --w->n_held * sizeof *w->held);
            *key = w->given;
            return SL_OK;
        }
        if (w->ended) {
            *done = true;
            return SL_OK;
        }
        if (w->n_held >= WALK_HELD) {
            if ((st = open_child(w)) != SL_OK)
                return st;
            continue;
        }
        const char *k;
        uint64_t size;
        bool end;
        if ((st = sl_s3_list_next(w->list, &k, &size, &end)) != SL_OK)
            return st;
        if (end) {
            w->ended = true;
            continue;
        }
        if ((w->after && strcmp(k, w->after) <= 0) || in_done(w, k))
            continue;
        if ((st = hold(w, k)) != SL_OK)
            return st;
        forget_past(w);
    }
}
