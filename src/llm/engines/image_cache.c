/* llm/engines/image_cache.c — see image_cache.h. */
#include "llm/engines/image_cache.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/hash.h"

typedef struct entry {
    char id[SL_IMAGE_CACHE_ID];
    uint64_t tag;              /* of id and part: compared first */
    int part;
    size_t n_floats;
    float *embd;
    uint64_t used;             /* the tick of its last get or put */
} entry;

struct sl_image_cache {
    pthread_mutex_t mu;
    entry *entries;
    size_t n, cap;
    size_t bytes, max_bytes;
    uint64_t tick, queries, hits;
};

bool sl_image_cache_id(const uint8_t *rgb, uint32_t width, uint32_t height, char *id)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (EVP_Digest(rgb, (size_t)width * height * 3, md, &md_len, EVP_sha256(), NULL) != 1 ||
        md_len != 32)
        return false;
    int at = snprintf(id, SL_IMAGE_CACHE_ID, "%ux%u-", width, height);
    for (unsigned i = 0; i < md_len; i++)
        at += snprintf(id + at, SL_IMAGE_CACHE_ID - (size_t)at, "%02x", md[i]);
    return true;
}

sl_status sl_image_cache_new(size_t max_bytes, sl_image_cache **out)
{
    *out = NULL;
    if (max_bytes == 0)
        return SL_OK;
    sl_image_cache *c = sl_calloc(1, sizeof *c);
    if (!c)
        return sl_fail(SL_ERR_NOMEM, "out of memory for the image cache");
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    *out = c;
    return SL_OK;
}

void sl_image_cache_free(sl_image_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        sl_free(c->entries[i].embd);
    sl_free(c->entries);
    pthread_mutex_destroy(&c->mu);
    sl_free(c);
}

static uint64_t tag_of(const char *id, int part)
{
    return sl_hash_mix64(sl_hash_fnv1a64(id) + (uint64_t)part);
}

/* The entry, or NULL; under the lock. */
static entry *find(sl_image_cache *c, const char *id, int part, size_t n_floats)
{
    uint64_t tag = tag_of(id, part);
    for (size_t i = 0; i < c->n; i++) {
        entry *e = &c->entries[i];
        if (e->tag == tag && e->part == part && e->n_floats == n_floats && strcmp(e->id, id) == 0)
            return e;
    }
    return NULL;
}

float *sl_image_cache_get(sl_image_cache *c, const char *id, int part, size_t n_floats)
{
    if (!c || !id || !*id)
        return NULL;
    float *copy = NULL;
    pthread_mutex_lock(&c->mu);
    c->queries++;
    entry *e = find(c, id, part, n_floats);
    if (e && (copy = sl_malloc(n_floats * sizeof *copy))) {
        memcpy(copy, e->embd, n_floats * sizeof *copy);
        e->used = ++c->tick;
        c->hits++;
    }
    pthread_mutex_unlock(&c->mu);
    return copy;
}

/* Drops entry i (the last one takes its place); under the lock. */
static void drop(sl_image_cache *c, size_t i)
{
    c->bytes -= c->entries[i].n_floats * sizeof(float);
    sl_free(c->entries[i].embd);
    c->entries[i] = c->entries[--c->n];
}

void sl_image_cache_put(sl_image_cache *c, const char *id, int part, const float *embd,
                        size_t n_floats)
{
    size_t bytes = n_floats * sizeof(float);
    if (!c || !id || !*id || strlen(id) >= SL_IMAGE_CACHE_ID || bytes > c->max_bytes)
        return;
    float *copy = sl_malloc(bytes ? bytes : 1);
    if (!copy)
        return;
    memcpy(copy, embd, bytes);
    pthread_mutex_lock(&c->mu);
    if (find(c, id, part, n_floats)) { /* the other thread encoded it too */
        pthread_mutex_unlock(&c->mu);
        sl_free(copy);
        return;
    }
    while (c->n > 0 && c->bytes + bytes > c->max_bytes) {
        size_t oldest = 0;
        for (size_t i = 1; i < c->n; i++)
            if (c->entries[i].used < c->entries[oldest].used)
                oldest = i;
        drop(c, oldest);
    }
    entry *grown = sl_grow(c->entries, c->n, &c->cap, sizeof *grown);
    if (!grown) {
        pthread_mutex_unlock(&c->mu);
        sl_free(copy);
        return;
    }
    c->entries = grown;
    entry *e = &c->entries[c->n++];
    snprintf(e->id, sizeof e->id, "%s", id);
    e->tag = tag_of(id, part);
    e->part = part;
    e->n_floats = n_floats;
    e->embd = copy;
    e->used = ++c->tick;
    c->bytes += bytes;
    pthread_mutex_unlock(&c->mu);
}

void sl_image_cache_counts(const sl_image_cache *c, uint64_t *queries, uint64_t *hits,
                           size_t *bytes)
{
    *queries = *hits = 0;
    *bytes = 0;
    if (!c)
        return;
    pthread_mutex_t *mu = (pthread_mutex_t *)&c->mu;
    pthread_mutex_lock(mu);
    *queries = c->queries;
    *hits = c->hits;
    *bytes = c->bytes;
    pthread_mutex_unlock(mu);
}
