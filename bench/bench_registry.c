/*
 * bench/bench_registry.c: the registry's hot path and its eviction cost, in one run.
 *
 * (1) acquire + release of a loaded model (the real plugin backend, model "simple"), by 1 and
 *     2 threads at once, in ns per pair, against a baseline of the least such a pair can do
 *     (an uncontended mutex lock/unlock plus an atomic increment and decrement) by as many
 *     threads on a shared mutex.
 * (2) eviction: loading a model when the host budget forces the least recently used one out,
 *     against loading it with room to spare (fake backend holding 1 MiB per model).
 * Usage: bench_registry [build_dir] (default: the directory it was built in).
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "bench/bench_util.h"
#include "common/log.h"
#include "registry/registry.h"

static void die(const char *what, const kiln_err *e)
{
    fprintf(stderr, "bench_registry: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

enum { PAIRS = 2000000 };

typedef struct worker {
    kiln_registry *reg;
    pthread_mutex_t *mu;
    atomic_uint *counter;
    pthread_barrier_t *go;
    uint64_t ns;
} worker;

static void *acquire_loop(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->go);
    uint64_t t0 = kiln_clock_now_ns();
    for (int i = 0; i < PAIRS; i++) {
        kiln_model *m;
        if (kiln_registry_acquire(w->reg, "simple", 0, &m, NULL) != KILN_OK)
            die("acquire", NULL);
        kiln_model_release(m);
    }
    w->ns = kiln_clock_now_ns() - t0;
    return NULL;
}

static void *baseline_loop(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->go);
    uint64_t t0 = kiln_clock_now_ns();
    for (int i = 0; i < PAIRS; i++) {
        pthread_mutex_lock(w->mu);
        atomic_fetch_add(w->counter, 1);
        pthread_mutex_unlock(w->mu);
        atomic_fetch_sub(w->counter, 1);
    }
    w->ns = kiln_clock_now_ns() - t0;
    return NULL;
}

static double run_threads(int n, void *(*fn)(void *), kiln_registry *reg)
{
    pthread_t t[2];
    worker w[2];
    pthread_barrier_t go;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    atomic_uint counter = 0;
    pthread_barrier_init(&go, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        w[i] = (worker){reg, &mu, &counter, &go, 0};
        pthread_create(&t[i], NULL, fn, &w[i]);
    }
    uint64_t worst = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        if (w[i].ns > worst)
            worst = w[i].ns;
    }
    pthread_barrier_destroy(&go);
    return (double)worst / PAIRS; /* wall ns per pair per thread */
}

/* ---------------------------------------------------------------- eviction, fake backend */

struct kiln_backend_model {
    void *mem;
};

#define MODEL_BYTES (1u << 20)

static kiln_status fake_load(const kiln_load_args *a, kiln_backend_model **out, kiln_err *err)
{
    (void)a;
    kiln_backend_model *m = kiln_malloc(sizeof(*m));
    if (!m || !(m->mem = kiln_malloc(MODEL_BYTES)))
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "oom");
    memset(m->mem, 1, MODEL_BYTES); /* a load that touches its weights */
    *out = m;
    return KILN_OK;
}

static void fake_unload(kiln_backend_model *m)
{
    kiln_free(m->mem);
    kiln_free(m);
}

static void fake_memory(const kiln_backend_model *m, uint64_t *host, uint64_t *device)
{
    (void)m;
    *host = MODEL_BYTES;
    *device = 0;
}

static kiln_status fake_execute(kiln_backend_model *m, kiln_batch *b, kiln_err *err)
{
    (void)m, (void)b, (void)err;
    return KILN_OK;
}

static const kiln_backend fake = {.name = "fake",
                                  .load = fake_load,
                                  .execute = fake_execute,
                                  .memory = fake_memory,
                                  .unload = fake_unload};

static const kiln_backend *find(const char *name)
{
    return strcmp(name, "fake") == 0 ? &fake : NULL;
}

static void bench_eviction(void)
{
    char repo[] = "/tmp/kiln-bench-repo-XXXXXX";
    if (!mkdtemp(repo))
        die("mkdtemp", NULL);
    const char *names[] = {"m0", "m1", "m2"};
    for (int i = 0; i < 3; i++) {
        char p[256];
        snprintf(p, sizeof(p), "%s/%s", repo, names[i]);
        mkdir(p, 0700);
        snprintf(p, sizeof(p), "%s/%s/1", repo, names[i]);
        mkdir(p, 0700);
        snprintf(p, sizeof(p), "%s/%s/config.pbtxt", repo, names[i]);
        FILE *f = fopen(p, "w");
        fputs("backend: 'fake' input { name: 'x' data_type: TYPE_FP32 dims: 1 } "
              "output { name: 'y' data_type: TYPE_FP32 dims: 1 }",
              f);
        fclose(f);
    }
    enum { N = 201 };
    uint64_t roomy[N], evicting[N];
    /* a fixed mmap threshold, so both passes reuse heap memory the same way */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    for (int pass = 0; pass < 2; pass++) {
        kiln_registry_options o = {.repository = repo,
                                   .find_backend = find,
                                   .host_budget_bytes = pass ? 2 * MODEL_BYTES : 0};
        kiln_registry *reg;
        kiln_err e;
        if (kiln_registry_create(&o, &reg, &e) != KILN_OK)
            die("registry", &e);
        for (int i = 0; i < N + 2; i++) {
            const char *name = names[i % 3];
            uint64_t t0 = kiln_clock_now_ns();
            /* with room: an explicit unload of the LRU model, then the load (timed together,
             * as an eviction does both) */
            if (!pass && i >= 2)
                kiln_registry_unload(reg, names[(i + 1) % 3], NULL);
            kiln_model *m;
            if (kiln_registry_get_or_load(reg, name, 0, &m, &e) != KILN_OK)
                die("load", &e);
            uint64_t dt = kiln_clock_now_ns() - t0;
            kiln_model_release(m);
            if (i >= 2)
                (pass ? evicting : roomy)[i - 2] = dt;
        }
        kiln_registry_stats rs;
        kiln_registry_get_stats(reg, &rs);
        if (pass && rs.evictions < N)
            die("expected an eviction per load", NULL);
        kiln_registry_destroy(reg);
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", repo);
    if (system(cmd) != 0)
        die("cleanup", NULL);
    double r = (double)bench_median(roomy, N), ev = (double)bench_median(evicting, N);
    printf("load of a 1 MiB model that evicts the LRU model: %.1f us; explicit unload + load: "
           "%.1f us; ratio %.2f\n",
           ev / 1e3, r / 1e3, ev / r);
}

int main(int argc, char **argv)
{
    kiln_log_set_level(KILN_LOG_ERROR);
    char repo[1024];
    snprintf(repo, sizeof(repo), "%s/models", argc > 1 ? argv[1] : KILN_TEST_BUILD_DIR);
    kiln_registry_options o = {.repository = repo};
    kiln_registry *reg;
    kiln_err e;
    if (kiln_registry_create(&o, &reg, &e) != KILN_OK)
        die("registry", &e);
    kiln_model *m;
    if (kiln_registry_get_or_load(reg, "simple", 0, &m, &e) != KILN_OK)
        die("load simple", &e);
    kiln_model_release(m);
    for (int threads = 1; threads <= 2; threads++) {
        double base = run_threads(threads, baseline_loop, NULL);
        double acq = run_threads(threads, acquire_loop, reg);
        printf("acquire+release, %d thread%s: %.1f ns per pair; mutex+atomic baseline %.1f ns; "
               "ratio %.2f\n",
               threads, threads > 1 ? "s" : " ", acq, base, acq / base);
    }
    kiln_registry_destroy(reg);
    bench_eviction();
    return 0;
}
