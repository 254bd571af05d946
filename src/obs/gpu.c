/* obs/gpu.c — per-GPU utilization and memory from NVIDIA's NVML, loaded
 * with dlopen() at run time so sluice neither builds nor links against it:
 * where libnvidia-ml.so.1 (or $SLUICE_NVML_LIBRARY) cannot be loaded or
 * initialised there are simply no sluice_gpu_* series, and one debug line
 * says why. Values are read at scrape time by callback children. The
 * handful of NVML prototypes we call are declared here, as NVML's C ABI
 * (nvml.h) defines them; 0 is NVML_SUCCESS. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "obs/metrics_impl.h"

typedef struct nvml_device *nvml_device; /* nvmlDevice_t */
typedef struct { unsigned int gpu, memory; } nvml_utilization; /* nvmlUtilization_t */
typedef struct { unsigned long long total, free, used; } nvml_memory; /* nvmlMemory_t */

enum { GPUS_MAX = 64 };

typedef enum gpu_value { GV_UTIL, GV_USED, GV_TOTAL, GV_COUNT } gpu_value;

struct gpu_ref {
    struct sl_obs_gpu *gpu;
    unsigned index;
    gpu_value which;
};

struct sl_obs_gpu {
    void *lib;
    int (*shutdown)(void);
    int (*get_handle)(unsigned int index, nvml_device *device);
    int (*get_utilization)(nvml_device device, nvml_utilization *u);
    int (*get_memory)(nvml_device device, nvml_memory *m);
    unsigned n;
    struct gpu_ref refs[GPUS_MAX][GV_COUNT];
};

static double read_gpu(void *user)
{
    struct gpu_ref *ref = user;
    struct sl_obs_gpu *g = ref->gpu;
    nvml_device dev;
    if (g->get_handle(ref->index, &dev) != 0)
        return NAN;
    if (ref->which == GV_UTIL) {
        nvml_utilization u;
        return g->get_utilization(dev, &u) == 0 ? u.gpu / 100.0 : NAN;
    }
    nvml_memory mem;
    if (g->get_memory(dev, &mem) != 0)
        return NAN;
    return ref->which == GV_USED ? (double)mem.used : (double)mem.total;
}

void sl_obs_gpu_free(struct sl_obs_gpu *g)
{
    if (!g)
        return;
    if (g->shutdown)
        g->shutdown();
    if (g->lib)
        dlclose(g->lib);
    sl_free(g);
}

/* Loads NVML into *out; false (and *out NULL) when it is not there. */
static bool gpu_open(struct sl_obs_gpu **out)
{
    *out = NULL;
    const char *path = getenv("SLUICE_NVML_LIBRARY");
    if (!path || !*path)
        path = "libnvidia-ml.so.1";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        sl_log(SL_LOG_DEBUG, "no GPU metrics: cannot load NVML: %s", dlerror());
        return false;
    }
    struct sl_obs_gpu *g = sl_calloc(1, sizeof *g);
    if (!g) {
        dlclose(lib);
        return false;
    }
    g->lib = lib;
    int (*init)(void);
    int (*count)(unsigned int *n);
    /* POSIX: a function pointer from dlsym() is copied through its bytes. */
    void *sym[6] = {dlsym(lib, "nvmlInit_v2"), dlsym(lib, "nvmlShutdown"),
                    dlsym(lib, "nvmlDeviceGetCount_v2"), dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"),
                    dlsym(lib, "nvmlDeviceGetUtilizationRates"), dlsym(lib, "nvmlDeviceGetMemoryInfo")};
    for (int i = 0; i < 6; i++)
        if (!sym[i]) {
            sl_log(SL_LOG_DEBUG, "no GPU metrics: %s lacks an NVML function", path);
            sl_obs_gpu_free(g);
            return false;
        }
    memcpy(&init, &sym[0], sizeof init);
    memcpy(&count, &sym[2], sizeof count);
    if (init() != 0) {
        sl_log(SL_LOG_DEBUG, "no GPU metrics: nvmlInit failed (no NVIDIA driver or device)");
        sl_obs_gpu_free(g);
        return false;
    }
    memcpy(&g->shutdown, &sym[1], sizeof g->shutdown);
    memcpy(&g->get_handle, &sym[3], sizeof g->get_handle);
    memcpy(&g->get_utilization, &sym[4], sizeof g->get_utilization);
    memcpy(&g->get_memory, &sym[5], sizeof g->get_memory);
    unsigned n = 0;
    if (count(&n) != 0 || n == 0) {
        sl_log(SL_LOG_DEBUG, "no GPU metrics: NVML reports no devices");
        sl_obs_gpu_free(g);
        return false;
    }
    g->n = n > GPUS_MAX ? GPUS_MAX : n;
    *out = g;
    return true;
}

sl_status sl_obs_gpu_register(sl_metrics *m, struct sl_obs_gpu **out)
{
    static const struct {
        const char *name, *help;
    } defs[GV_COUNT] = {
        {"sluice_gpu_utilization_ratio",
         "Fraction of the last sample period in which a kernel ran on the GPU (NVML)."},
        {"sluice_gpu_memory_used_bytes", "GPU memory in use, by every process (NVML)."},
        {"sluice_gpu_memory_total_bytes", "GPU memory installed (NVML)."},
    };
    static const char *const labels[] = {"gpu", NULL};
    struct sl_obs_gpu *g;
    *out = NULL;
    if (!gpu_open(&g))
        return SL_OK;
    for (int i = 0; i < GV_COUNT; i++) {
        sl_metrics_family *f;
        sl_status st = sl_metrics_add_gauge(m, defs[i].name, defs[i].help, labels, &f);
        for (unsigned d = 0; st == SL_OK && d < g->n; d++) {
            char index[16];
            snprintf(index, sizeof index, "%u", d);
            sl_metrics_child *c = sl_metrics_with(f, index);
            if (!c) {
                st = SL_ERR_NOMEM;
                break;
            }
            g->refs[d][i] = (struct gpu_ref){g, d, (gpu_value)i};
            sl_metrics_child_set_fn(c, read_gpu, &g->refs[d][i]);
        }
        if (st != SL_OK) {
            sl_obs_gpu_free(g);
            return st;
        }
    }
    *out = g;
    return SL_OK;
}
