/* job/caption_live.c — see caption_live.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "job/caption_live.h"
#include "job/rank_metrics.h"

/* From live_page.html, by cmake/embed.cmake. */
extern const unsigned char sl_live_page[];
extern const size_t sl_live_page_len;

struct caption_live {
    caption_metrics *cm;
    gallery *g;
    pthread_mutex_t mu; /* model */
    char model[256];
    struct timespec started;
    atomic_bool finished;
    sl_dist *dist;      /* rank 0 of an MPI job: the ranks' table; else NULL */
};

static double elapsed_s(const caption_live *l)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - l->started.tv_sec) + (now.tv_nsec - l->started.tv_nsec) / 1e9;
}

static void json_reply(sl_metrics_reply *reply, json_t *o)
{
    /* sl_json_dump: a real as its shortest text (json_dumps wrote a busy
     * time 0.003646423 as 0.0036464230000000002) */
    size_t len = 0;
    char *text = o ? sl_json_dump(o, JSON_COMPACT, &len) : NULL;
    json_decref(o);
    if (!text) {
        reply->status = 500;
        reply->body = "out of memory\n";
        reply->len = strlen(reply->body);
        return;
    }
    reply->content_type = "application/json";
    reply->body = text;
    reply->len = len;
    reply->free_body = sl_free;
}

static void page_route(void *user, const char *path, sl_metrics_reply *reply)
{
    reply->content_type = "text/html; charset=utf-8";
    reply->body = (char *)sl_live_page;
    reply->len = sl_live_page_len;
}

static void status_route(void *user, const char *path, sl_metrics_reply *reply)
{
    caption_live *l = user;
    json_t *o = caption_metrics_status_json(l->cm);
    if (o) {
        pthread_mutex_lock(&l->mu);
        /* sl_json_text: a name that is not UTF-8 (json_string's NULL) lost the key */
        json_object_set_new(o, "model", sl_json_text(l->model, strlen(l->model)));
        pthread_mutex_unlock(&l->mu);
        json_object_set_new(o, "elapsed_s", json_real(elapsed_s(l)));
        json_object_set_new(o, "finished", json_boolean(atomic_load(&l->finished)));
        json_object_set_new(o, "failures", gallery_failures_json(l->g));
        json_t *ranks = l->dist ? rank_metrics_json(l->dist) : NULL;
        if (ranks)
            json_object_set_new(o, "ranks", ranks);
    }
    json_reply(reply, o);
}

static void gallery_route(void *user, const char *path, sl_metrics_reply *reply)
{
    caption_live *l = user;
    json_reply(reply, gallery_live_json(l->g));
}

/* "/thumb/<index>.jpg" */
static void thumb_route(void *user, const char *path, sl_metrics_reply *reply)
{
    caption_live *l = user;
    const char *digits = path + strlen("/thumb/");
    char *end;
    unsigned long long index = strtoull(digits, &end, 10);
    uint8_t *jpeg;
    size_t len;
    if (end == digits || strcmp(end, ".jpg") != 0 ||
        gallery_thumb(l->g, index, &jpeg, &len) != SL_OK) {
        reply->status = 404;
        reply->body = "no such thumbnail (the gallery keeps only the latest)\n";
        reply->len = strlen(reply->body);
        return;
    }
    reply->content_type = "image/jpeg";
    reply->body = (char *)jpeg;
    reply->len = len;
    reply->free_body = sl_free;
}

sl_status caption_live_start(caption_metrics *cm, gallery *g, sl_dist *dist, caption_live **out)
{
    *out = NULL;
    caption_live *l = sl_calloc(1, sizeof *l);
    if (!l)
        return sl_fail(SL_ERR_NOMEM, "out of memory starting the live page");
    l->cm = cm;
    l->g = g;
    l->dist = dist;
    pthread_mutex_init(&l->mu, NULL);
    clock_gettime(CLOCK_MONOTONIC, &l->started);
    sl_metrics_server *s = caption_metrics_server(cm);
    sl_status st = SL_OK;
    if (s) {
        static const struct {
            const char *path;
            sl_metrics_route_fn fn;
        } routes[] = {{"/", page_route},
                      {"/api/status", status_route},
                      {"/api/gallery", gallery_route},
                      {"/thumb/*", thumb_route}};
        for (size_t i = 0; st == SL_OK && i < sizeof routes / sizeof *routes; i++)
            st = sl_metrics_server_route(s, routes[i].path, routes[i].fn, l);
    }
    /* The page is a convenience: a route that cannot be added is a warning
     * (and l stays, since the routes added already point at it). */
    if (st != SL_OK)
        sl_log(SL_LOG_WARN, "the live page is not served: %s", sl_last_error());
    *out = l;
    return SL_OK;
}

void caption_live_set_model(caption_live *l, const char *model_name)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    snprintf(l->model, sizeof l->model, "%s", model_name);
    pthread_mutex_unlock(&l->mu);
}

void caption_live_finish(caption_live *l)
{
    if (l)
        atomic_store(&l->finished, true);
}

void caption_live_free(caption_live *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    sl_free(l);
}
