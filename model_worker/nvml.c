/*
 * model_worker/nvml.c: GPU figures for the metrics through NVML, loaded with dlopen when the
 * host has it (libnvidia-ml.so.1 comes with the NVIDIA driver). Without it, or without a GPU,
 * there are no GPU figures at all: absent, never zero. Kiln neither links nor needs NVML.
 *
 * The few NVML types used here are declared from NVML's public API: return codes are ints
 * (0 is success), a device is an opaque pointer, utilization is two unsigned ints (percent of
 * the last sample period) and memory info three unsigned long longs (total, free, used).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "model_worker/worker_int.h"

typedef int nvml_ret;
typedef void *nvml_device;
typedef struct {
    unsigned int gpu, memory;
} nvml_utilization;
typedef struct {
    unsigned long long total, free, used;
} nvml_memory;

static struct {
    bool ok;
    nvml_ret (*count)(unsigned int *);
    nvml_ret (*handle)(unsigned int, nvml_device *);
    nvml_ret (*utilization)(nvml_device, nvml_utilization *);
    nvml_ret (*memory)(nvml_device, nvml_memory *);
    nvml_ret (*name)(nvml_device, char *, unsigned int);
} nv;

static pthread_once_t nv_once = PTHREAD_ONCE_INIT;

static void nv_load(void)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return;
    nvml_ret (*init)(void);
    /* dlsym returns an object pointer; copying it is how C turns it into a function pointer */
    void *sym[6] = {dlsym(lib, "nvmlInit_v2"),
                    dlsym(lib, "nvmlDeviceGetCount_v2"),
                    dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"),
                    dlsym(lib, "nvmlDeviceGetUtilizationRates"),
                    dlsym(lib, "nvmlDeviceGetMemoryInfo"),
                    dlsym(lib, "nvmlDeviceGetName")};
    for (size_t i = 0; i < 6; i++)
        if (!sym[i]) {
            dlclose(lib);
            return;
        }
    memcpy(&init, &sym[0], sizeof(init));
    memcpy(&nv.count, &sym[1], sizeof(nv.count));
    memcpy(&nv.handle, &sym[2], sizeof(nv.handle));
    memcpy(&nv.utilization, &sym[3], sizeof(nv.utilization));
    memcpy(&nv.memory, &sym[4], sizeof(nv.memory));
    memcpy(&nv.name, &sym[5], sizeof(nv.name));
    if (init() != 0) {
        dlclose(lib);
        return;
    }
    nv.ok = true; /* the library stays loaded for the process's life */
}

size_t kiln__gpu_sample(kiln_gpu_sample *out, size_t cap)
{
    pthread_once(&nv_once, nv_load);
    unsigned int n = 0;
    if (!nv.ok || nv.count(&n) != 0)
        return 0;
    size_t k = 0;
    for (unsigned int i = 0; i < n && k < cap; i++) {
        nvml_device d;
        nvml_utilization u;
        nvml_memory m;
        if (nv.handle(i, &d) != 0 || nv.utilization(d, &u) != 0 || nv.memory(d, &m) != 0)
            continue; /* a device NVML cannot read is left out, not reported as 0 */
        kiln_gpu_sample *s = &out[k++];
        s->index = i;
        if (nv.name(d, s->name, sizeof(s->name)) != 0)
            snprintf(s->name, sizeof(s->name), "unknown");
        s->utilization = u.gpu / 100.0;
        s->memory_total = m.total;
        s->memory_used = m.used;
    }
    return k;
}
