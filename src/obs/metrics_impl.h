/* obs/metrics_impl.h — the registry's structures, shared by metrics.c (the
 * registry and updates), prometheus.c (text exposition), process.c
 * (process_* metrics) and http.c. Locks: m->mu guards the family list;
 * f->mu guards f's child table and each child's fn/user. Scrapes take m->mu
 * then each f->mu; nothing takes them in the other order. Values are
 * atomics read and written without locks. */
#ifndef SL_OBS_METRICS_IMPL_H
#define SL_OBS_METRICS_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "sluice/metrics.h"

struct sl_metrics_child {
    sl_metrics_family *family;
    char **values;             /* family->n_labels strings */
    atomic_uint_fast64_t n;    /* counter: the integer part */
    atomic_uint_fast64_t bits; /* counter: fractional adds; gauge: value;
                                  histogram: _sum (all as double bits) */
    atomic_uint_fast64_t *buckets; /* histogram: per-bucket counts, NOT cumulative,
                                      family->n_bounds + 1 (the last is +Inf) */
    sl_metrics_value_fn fn;    /* under family->mu */
    void *user;
    uint64_t hash;
    sl_metrics_child *next;    /* hash chain */
};

struct sl_metrics_family {
    sl_metrics *registry;
    sl_metrics_type type;
    char *name, *help;
    char **label_names;
    size_t n_labels;
    double *bounds; /* histogram: finite upper bounds, strictly increasing */
    size_t n_bounds;
    pthread_mutex_t mu;
    sl_metrics_child **table; /* hash table, n_slots a power of two */
    size_t n_slots;
    sl_metrics_child **children; /* creation order */
    size_t n_children, cap_children;
};

struct sl_obs_gpu;

struct sl_metrics {
    pthread_mutex_t mu;
    struct sl_obs_gpu *gpu; /* NVML, when gpu_metrics found it */
    sl_metrics_family **families; /* sorted by name */
    size_t n_families, cap_families;
};

/* Reads a double stored as bits. */
double sl_obs_bits_to_double(uint_fast64_t bits);

/* A counter or gauge child's current value; f->mu must be held. */
double sl_obs_child_value_locked(const sl_metrics_child *c);

/* Whether `address` is an address the metrics server takes (HOST:PORT,
 * [V6]:PORT, PORT 0 to 65535; the host is not looked up): SL_OK, or
 * SL_ERR_INVALID_ARG saying what is wrong (http.c). For the settings, to
 * refuse it when read rather than when the run starts the server. */
sl_status sl_obs_address_check(const char *address);

/* Registers process_* metrics (process.c). */
sl_status sl_obs_process_register(sl_metrics *m);

/* Registers sluice_gpu_* when NVML loads (gpu.c); *gpu stays NULL, with
 * SL_OK, when it does not. The registry frees it with sl_obs_gpu_free. */
sl_status sl_obs_gpu_register(sl_metrics *m, struct sl_obs_gpu **gpu);
void sl_obs_gpu_free(struct sl_obs_gpu *gpu);

/* Formats v as the text format wants it into buf (>= 32 bytes): "+Inf",
 * "-Inf", "NaN", integers in plain digits, else the shortest decimal that
 * reads back as v. Returns the length. */
size_t sl_obs_format_double(double v, char *buf);

#endif
