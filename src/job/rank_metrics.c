/* job/rank_metrics.c — see rank_metrics.h. */
#include <stdio.h>

#include "core/alloc.h"
#include "core/error.h"
#include "dist/dist.h"
#include "job/rank_metrics.h"

typedef enum {
    RV_ROWS, RV_FAILED, RV_PARTS, RV_SHARDS, RV_GENERATED, RV_FINISHED, RV_COUNT
} rank_value;

static const struct {
    const char *name, *help;
    bool counter;
} rank_families[RV_COUNT] = {
    {"sluice_job_rank_rows_total", "Rows in the parts this rank committed", true},
    {"sluice_job_rank_rows_failed_total", "Failed rows in the parts this rank committed", true},
    {"sluice_job_rank_parts_total", "Parts this rank committed", true},
    /* a level, not a counter: a shard handed past the input's end before
     * the end was known is taken back when it is (dist/coord.c), and a
     * counter that goes down reads to Prometheus as a reset */
    {"sluice_job_rank_shards", "Input shards rank 0 handed this rank that the input holds",
     false},
    {"sluice_job_rank_generated_tokens_total", "Tokens generated for this rank's committed rows",
     true},
    {"sluice_job_rank_finished", "1 once this rank has finished its part of the job", false},
};

typedef enum { JV_RANKS, JV_ROWS, JV_SHARDS_HANDED, JV_SHARDS, JV_COUNT } job_value;

static const struct {
    const char *name, *help;
    bool counter;
} job_families[JV_COUNT] = {
    {"sluice_job_ranks", "Ranks in this MPI job", false},
    {"sluice_job_rows_total", "Rows in the parts every rank committed", true},
    {"sluice_job_shards_handed", "Input shards rank 0 has handed out that the input holds",
     false}, /* a level: as sluice_job_rank_shards */
    {"sluice_job_shards", "Input shards in the job (-1 until a rank reads to the end)", false},
};

typedef struct ref {
    sl_dist *d;
    int rank;
    int which;
} ref;

struct rank_metrics {
    ref *refs;   /* RV_COUNT per rank, then JV_COUNT */
    sl_metrics_child **hooked; /* the child reading each ref, once set */
};

static double read_rank(void *user)
{
    const ref *r = user;
    coord_rank cr;
    if (!dist_rank_progress(r->d, r->rank, &cr))
        return 0;
    switch ((rank_value)r->which) {
    case RV_ROWS: return (double)cr.committed.rows;
    case RV_FAILED: return (double)cr.committed.failed;
    case RV_PARTS: return (double)cr.committed.parts;
    case RV_SHARDS: return (double)cr.shards;
    case RV_GENERATED: return (double)cr.committed.generated_tokens;
    default: return cr.finished;
    }
}

static double read_job(void *user)
{
    const ref *r = user;
    coord_counts all;
    int64_t handed = 0, total = -1;
    if (!dist_progress(r->d, &all, &handed, &total))
        return 0;
    switch ((job_value)r->which) {
    case JV_RANKS: return sl_dist_size(r->d);
    case JV_ROWS: return (double)all.rows;
    case JV_SHARDS_HANDED: return (double)handed;
    default: return (double)total;
    }
}

sl_status rank_metrics_attach(sl_metrics *reg, sl_dist *d, rank_metrics **out)
{
    *out = NULL;
    int n = sl_dist_size(d);
    rank_metrics *rm = sl_calloc(1, sizeof *rm);
    size_t n_refs = (size_t)n * RV_COUNT + JV_COUNT;
    if (!rm || !(rm->refs = sl_calloc(n_refs, sizeof *rm->refs)) ||
        !(rm->hooked = sl_calloc(n_refs, sizeof *rm->hooked))) {
        rank_metrics_free(rm);
        return sl_fail(SL_ERR_NOMEM, "out of memory for the job's metrics");
    }
    static const char *const rank_label[] = {"rank", NULL};
    sl_metrics_family *family;
    sl_status st = SL_OK;
    for (int i = 0; st == SL_OK && i < RV_COUNT; i++)
        st = rank_families[i].counter
                 ? sl_metrics_add_counter(reg, rank_families[i].name, rank_families[i].help,
                                          rank_label, &family)
                 : sl_metrics_add_gauge(reg, rank_families[i].name, rank_families[i].help,
                                        rank_label, &family);
    for (int i = 0; st == SL_OK && i < JV_COUNT; i++)
        st = job_families[i].counter
                 ? sl_metrics_add_counter(reg, job_families[i].name, job_families[i].help, NULL,
                                          &family)
                 : sl_metrics_add_gauge(reg, job_families[i].name, job_families[i].help, NULL,
                                        &family);
    for (int r = 0; st == SL_OK && r < n; r++) {
        char label[16];
        snprintf(label, sizeof label, "%d", r);
        for (int i = 0; st == SL_OK && i < RV_COUNT; i++) {
            ref *f = &rm->refs[r * RV_COUNT + i];
            *f = (ref){d, r, i};
            sl_metrics_child *c = sl_metrics_with(sl_metrics_find(reg, rank_families[i].name),
                                                  label);
            st = c ? sl_metrics_child_set_fn(c, read_rank, f)
                   : sl_fail(SL_ERR_NOMEM, "out of memory for the job's metrics");
            rm->hooked[r * RV_COUNT + i] = st == SL_OK ? c : NULL;
        }
    }
    for (int i = 0; st == SL_OK && i < JV_COUNT; i++) {
        ref *f = &rm->refs[n * RV_COUNT + i];
        *f = (ref){d, 0, i};
        sl_metrics_child *c = sl_metrics_with(sl_metrics_find(reg, job_families[i].name));
        st = c ? sl_metrics_child_set_fn(c, read_job, f)
               : sl_fail(SL_ERR_NOMEM, "out of memory for the job's metrics");
        rm->hooked[n * RV_COUNT + i] = st == SL_OK ? c : NULL;
    }
    if (st != SL_OK) {
        /* The server is up: a scrape would read the refs freed below. */
        for (size_t k = 0; k < n_refs; k++)
            if (rm->hooked[k])
                sl_metrics_child_set_fn(rm->hooked[k], NULL, NULL);
        rank_metrics_free(rm);
        return st;
    }
    *out = rm;
    return SL_OK;
}

json_t *rank_metrics_json(sl_dist *d)
{
    coord_rank cr;
    if (!dist_rank_progress(d, 0, &cr))
        return NULL;
    json_t *a = json_array();
    for (int r = 0; a && r < sl_dist_size(d); r++) {
        if (!dist_rank_progress(d, r, &cr))
            break;
        json_array_append_new(
            a, json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:b}", "rank", r, "rows",
                         (json_int_t)cr.committed.rows, "failed", (json_int_t)cr.committed.failed,
                         "parts", (json_int_t)cr.committed.parts, "shards",
                         (json_int_t)cr.shards, "generated_tokens",
                         (json_int_t)cr.committed.generated_tokens, "finished", cr.finished));
    }
    return a;
}

void rank_metrics_free(rank_metrics *rm)
{
    if (!rm)
        return;
    sl_free(rm->refs);
    sl_free(rm->hooked);
    sl_free(rm);
}
