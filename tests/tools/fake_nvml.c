/* fake_nvml — a stand-in for libnvidia-ml.so.1 with the six functions
 * obs/gpu.c calls, so the GPU metrics are tested on machines without a GPU
 * (test_metrics loads it through $SLUICE_NVML_LIBRARY). Two devices:
 * device i is (42 + i)% busy and uses (i + 1) GiB of 80 GiB. */
typedef struct { unsigned int gpu, memory; } fake_utilization;
typedef struct { unsigned long long total, free, used; } fake_memory;
typedef void *fake_device;

int nvmlInit_v2(void);
int nvmlShutdown(void);
int nvmlDeviceGetCount_v2(unsigned int *n);
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, fake_device *device);
int nvmlDeviceGetUtilizationRates(fake_device device, fake_utilization *u);
int nvmlDeviceGetMemoryInfo(fake_device device, fake_memory *m);

static char devices[2];
static int initialised;

int nvmlInit_v2(void) { initialised++; return 0; }
int nvmlShutdown(void) { initialised--; return 0; }

int nvmlDeviceGetCount_v2(unsigned int *n)
{
    *n = 2;
    return initialised > 0 ? 0 : 1;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, fake_device *device)
{
    if (index >= 2)
        return 2; /* NVML_ERROR_INVALID_ARGUMENT */
    *device = &devices[index];
    return 0;
}

int nvmlDeviceGetUtilizationRates(fake_device device, fake_utilization *u)
{
    u->gpu = 42 + (unsigned)((char *)device - devices);
    u->memory = 7;
    return 0;
}

int nvmlDeviceGetMemoryInfo(fake_device device, fake_memory *m)
{
    unsigned long long gib = 1ULL << 30;
    m->total = 80 * gib;
    m->used = (unsigned long long)((char *)device - devices + 1) * gib;
    m->free = m->total - m->used;
    return 0;
}
