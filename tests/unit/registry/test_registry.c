/* Unit tests: the registry (racing loads, versions, eviction, pins, TTL, unload during use,
 * executions that run out of device memory, lose their GPU or grow). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "registry/registry.h"
#include "tests/support.h"

/* ---------------------------------------------------------------- a fake backend */

static atomic_int fake_loads, fake_unloads;
static atomic_int fake_device_models; /* loaded fake models that hold device memory */

struct kiln_backend_model {
    uint64_t host, device;
    bool holds_device; /* counted in fake_device_models */
};

static kiln_status fake_load(const kiln_load_args *a, kiln_backend_model **out, kiln_err *err)
{
    atomic_fetch_add(&fake_loads, 1);
    const char *delay = kiln_model_config_param(a->config, "delay_ms");
    if (delay) {
        struct timespec t = {0, atol(delay) * 1000000L};
        nanosleep(&t, NULL);
    }
    const char *fail = kiln_model_config_param(a->config, "fail");
    if (fail)
        return kiln_err_set(err, KILN_FAILED_PRECONDITION, "fake load of '%s' fails: %s",
                            a->model_name, fail);
    kiln_backend_model *m = kiln_calloc(1, sizeof(*m));
    const char *host = kiln_model_config_param(a->config, "host_bytes");
    m->host = host ? (uint64_t)atoll(host) : 100;
    const char *dev = kiln_model_config_param(a->config, "device_bytes");
    m->device = dev ? (uint64_t)atoll(dev) : 0;
    m->holds_device = m->device > 0;
    if (m->holds_device)
        atomic_fetch_add(&fake_device_models, 1);
    *out = m;
    return KILN_OK;
}

static void fake_unload(kiln_backend_model *m)
{
    if (!m)
        return;
    atomic_fetch_add(&fake_unloads, 1);
    if (m->holds_device)
        atomic_fetch_sub(&fake_device_models, 1);
    kiln_free(m);
}

static void fake_memory(const kiln_backend_model *m, uint64_t *host, uint64_t *device)
{
    *host = m->host;
    *device = m->device;
}

/* What the fake backend's executions saw (model_warmup tests). The last batch's rows and first
 * value are the executing thread's own: a load's samples run on the loading (the test's)
 * thread, and the race test executes on several. */
static atomic_int fake_execs;
static _Thread_local uint32_t fake_rows;
static _Thread_local float fake_first;

/* The first input value picks a device fault: 77 runs out of device memory while another
 * fake model holds device memory, 66 loses the GPU, 55 grows the model by 1000 device bytes,
 * 44 shrinks it by as much. */
static kiln_status fake_execute(kiln_backend_model *m, kiln_batch *b, kiln_err *err)
{
    atomic_fetch_add(&fake_execs, 1);
    fake_rows = b->batch_size;
    fake_first =
        b->n_inputs && b->inputs[0].byte_size >= 4 ? *(const float *)b->inputs[0].data : -1.f;
    if (b->n_inputs && b->inputs[0].byte_size >= 4 && fake_first == 99.f)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "fake execute refuses 99");
    if (fake_first == 77.f && atomic_load(&fake_device_models) > 1) {
        b->fault = KILN_FAULT_DEVICE_MEMORY;
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "fake CUDA: out of memory");
    }
    if (fake_first == 66.f) {
        b->fault = KILN_FAULT_DEVICE_LOST;
        return kiln_err_set(err, KILN_INTERNAL, "fake CUDA: an illegal memory access");
    }
    if (fake_first == 55.f)
        m->device += 1000;
    if (fake_first == 44.f && m->device >= 1000)
        m->device -= 1000;
    return KILN_OK;
}

static const kiln_backend fake = {.name = "fake",
                                  .load = fake_load,
                                  .execute = fake_execute,
                                  .memory = fake_memory,
                                  .unload = fake_unload};

static const kiln_backend *find(const char *name)
{
    return strcmp(name, "fake") == 0 ? &fake : kiln_backend_find(name);
}

/* ---------------------------------------------------------------- fixture */

typedef struct fx {
    char repo[64];
    kiln_registry *reg;
    kiln_device dev;    /* where models load (the fake backend only records it) */
    _Atomic uint64_t t; /* the fake clock, read by the registry from any thread */
} fx;

static uint64_t fake_now(void *ctx)
{
    return ((fx *)ctx)->t;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Adds model `name` with version dirs `versions` (comma list) and extra config text. */
static void add_model(fx *f, const char *name, const char *versions, const char *extra)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", f->repo, name);
    mkdir(p, 0700);
    char cfg[1024];
    snprintf(cfg, sizeof(cfg),
             "backend: 'fake' input { name: 'x' data_type: TYPE_FP32 dims: 1 } "
             "output { name: 'y' data_type: TYPE_FP32 dims: 1 } %s",
             extra ? extra : "");
    snprintf(p, sizeof(p), "%s/%s/config.pbtxt", f->repo, name);
    write_file(p, cfg);
    char vs[64];
    snprintf(vs, sizeof(vs), "%s", versions);
    for (char *v = strtok(vs, ","); v; v = strtok(NULL, ",")) {
        snprintf(p, sizeof(p), "%s/%s/%s", f->repo, name, v);
        mkdir(p, 0700);
    }
}

static void make_registry_dev(fx *f, uint64_t host_budget, uint64_t device_budget, uint64_t ttl)
{
    kiln_registry_options o = {.repository = f->repo,
                               .host_budget_bytes = host_budget,
                               .device_budget_bytes = device_budget,
                               .idle_ttl_ns = ttl,
                               .device = f->dev,
                               .find_backend = find,
                               .clock = fake_now,
                               .clock_ctx = f};
    kiln_err e;
    kiln_registry_destroy(f->reg);
    assert_ok(kiln_registry_create(&o, &f->reg, &e), &e);
}

static void make_registry(fx *f, uint64_t host_budget, uint64_t ttl)
{
    make_registry_dev(f, host_budget, 0, ttl);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    snprintf(f->repo, sizeof(f->repo), "/tmp/kiln-repo-XXXXXX");
    assert_non_null(mkdtemp(f->repo));
    f->t = 1000;
    atomic_store(&fake_loads, 0);
    atomic_store(&fake_unloads, 0);
    atomic_store(&fake_device_models, 0);
    atomic_store(&fake_execs, 0);
    kiln_log_set_level(KILN_LOG_ERROR);
    make_registry(f, 0, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kiln_registry_destroy(f->reg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->repo);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- tests */

typedef struct racer {
    fx *f;
    const char *name;
    kiln_model *m;
    kiln_status st;
    kiln_err e;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    r->st = kiln_registry_get_or_load(r->f->reg, r->name, 0, &r->m, &r->e);
    return NULL;
}

static void racing_get_or_load_loads_once(void **state)
{
    fx *f = *state;
    add_model(f, "a", "1", "parameters { key: 'delay_ms' value { string_value: '50' } }");
    enum { N = 8 };
    racer r[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        r[i] = (racer){.f = f, .name = "a"};
        pthread_create(&t[i], NULL, race, &r[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_ok(r[i].st, &r[i].e);
        assert_ptr_equal(r[i].m, r[0].m);
    }
    assert_int_equal(atomic_load(&fake_loads), 1);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "a", 0, &s, NULL), NULL);
    assert_int_equal(s.state, KILN_MODEL_READY);
    assert_int_equal(s.pins, N);
    for (int i = 0; i < N; i++)
        kiln_model_release(r[i].m);
    assert_ok(kiln_registry_status(f->reg, "a", 1, &s, NULL), NULL);
    assert_int_equal(s.pins, 0);
}

static void racing_load_failure_is_shared(void **state)
{
    fx *f = *state;
    add_model(f, "bad", "1",
              "parameters { key: 'delay_ms' value { string_value: '50' } } "
              "parameters { key: 'fail' value { string_value: 'corrupt weights' } }");
    enum { N = 6 };
    racer r[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        r[i] = (racer){.f = f, .name = "bad"};
        pthread_create(&t[i], NULL, race, &r[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_status(r[i].st, KILN_FAILED_PRECONDITION, &r[i].e,
                      "fake load of 'bad' fails: corrupt weights");
        assert_null(r[i].m);
    }
    assert_int_equal(atomic_load(&fake_loads), 1);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "bad", 1, &s, NULL), NULL);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    assert_non_null(strstr(s.reason, "corrupt weights"));
    kiln_registry_stats rs;
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.load_failures, 1);
}

static void versions_follow_the_policy(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m;
    add_model(f, "latest", "1,3,2,x,0", NULL);
    assert_ok(kiln_registry_get_or_load(f->reg, "latest", 0, &m, &e), &e);
    assert_int_equal(kiln_model_version(m), 3);
    assert_string_equal(kiln_model_name(m), "latest");
    assert_string_equal(kiln_model_get_config(m)->name, "latest"); /* filled from the dir */
    kiln_model_release(m);
    assert_status(kiln_registry_get_or_load(f->reg, "latest", 2, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'latest' has no version 2 to serve (versions served: 3)");
    add_model(f, "two", "1,2,3", "version_policy { latest { num_versions: 2 } }");
    assert_ok(kiln_registry_load(f->reg, "two", &e), &e);
    assert_int_equal(atomic_load(&fake_loads), 3);
    assert_ok(kiln_registry_acquire(f->reg, "two", 2, &m, &e), &e);
    kiln_model_release(m);
    add_model(f, "spec", "1,2,3", "version_policy { specific { versions: [1, 3] } }");
    assert_ok(kiln_registry_get_or_load(f->reg, "spec", 1, &m, &e), &e);
    kiln_model_release(m);
    assert_status(kiln_registry_get_or_load(f->reg, "spec", 2, &m, &e), KILN_NOT_FOUND, &e,
                  "(versions served: 1, 3)");
    add_model(f, "all", "4,5", "version_policy { all { } }");
    assert_ok(kiln_registry_get_or_load(f->reg, "all", 4, &m, &e), &e);
    kiln_model_release(m);
}

static void lookup_errors(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m;
    assert_status(kiln_registry_get_or_load(f->reg, "nope", 0, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'nope' is not in the repository");
    assert_status(kiln_registry_get_or_load(f->reg, "../etc", 0, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "position 2");
    assert_status(kiln_registry_get_or_load(f->reg, "", 0, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "1 to 128 characters");
    assert_status(kiln_registry_get_or_load(f->reg, "x", -1, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "negative");
    add_model(f, "empty", "", NULL);
    assert_status(kiln_registry_get_or_load(f->reg, "empty", 0, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'empty' has no version directory to serve");
    add_model(f, "named", "1", "name: 'other'");
    assert_status(kiln_registry_get_or_load(f->reg, "named", 0, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "named/config.pbtxt: name 'other' does not match the model's directory 'named'");
    char p[256];
    snprintf(p, sizeof(p), "%s/nocfg/1", f->repo);
    snprintf(p, sizeof(p), "%s/nocfg", f->repo);
    mkdir(p, 0700);
    assert_status(kiln_registry_get_or_load(f->reg, "nocfg", 0, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'nocfg' has no config.pbtxt");
    add_model(f, "badcfg", "1", "max_batch: 3");
    assert_status(kiln_registry_get_or_load(f->reg, "badcfg", 0, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "badcfg/config.pbtxt:1:");
    add_model(f, "nobackend", "1", "");
    snprintf(p, sizeof(p), "%s/nobackend/config.pbtxt", f->repo);
    write_file(p, "backend: 'tensorflow' input { name: 'x' data_type: TYPE_FP32 } "
                  "output { name: 'y' data_type: TYPE_FP32 }");
    assert_status(
        kiln_registry_get_or_load(f->reg, "nobackend", 0, &m, &e), KILN_INVALID_ARGUMENT, &e,
        "model 'nobackend': backend 'tensorflow' is not available (this build has: plugin, onnx)");
    assert_null(m);
    kiln_registry *r2;
    kiln_registry_options o = {.repository = "/nonexistent/repo"};
    assert_status(kiln_registry_create(&o, &r2, &e), KILN_INVALID_ARGUMENT, &e,
                  "model repository '/nonexistent/repo' is not a readable directory");
}

static void acquire_never_loads(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m;
    add_model(f, "a", "1", NULL);
    assert_status(kiln_registry_acquire(f->reg, "a", 0, &m, &e), KILN_UNAVAILABLE, &e,
                  "model 'a' is not ready (UNAVAILABLE: not loaded)");
    assert_status(kiln_registry_acquire(f->reg, "zz", 0, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'zz' is not in the repository");
    assert_int_equal(atomic_load(&fake_loads), 0);
    assert_ok(kiln_registry_load(f->reg, "a", &e), &e);
    assert_ok(kiln_registry_acquire(f->reg, "a", 1, &m, &e), &e);
    kiln_model_record(m, 4, true, 10, 20);
    kiln_model_record(m, 1, false, 1, 2);
    kiln_model_release(m);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "a", 0, &s, &e), &e);
    assert_int_equal(s.stats.inference_count, 5);
    assert_int_equal(s.stats.execution_count, 2);
    assert_int_equal(s.stats.success_count, 4);
    assert_int_equal(s.stats.failure_count, 1);
    assert_int_equal(s.stats.queue_ns, 11);
    assert_int_equal(s.stats.compute_ns, 22);
    assert_int_equal(s.host_bytes, 100);
    assert_string_equal(kiln_model_state_name(s.state), "READY");
}

static void evicts_least_recently_used(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m;
    make_registry(f, 300, 0);
    add_model(f, "a", "1", NULL);
    add_model(f, "b", "1", NULL);
    add_model(f, "c", "1", NULL);
    add_model(f, "d", "1", NULL);
    const char *order[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        f->t += 10;
        assert_ok(kiln_registry_get_or_load(f->reg, order[i], 0, &m, &e), &e);
        kiln_model_release(m);
    }
    f->t += 10;
    assert_ok(kiln_registry_acquire(f->reg, "a", 0, &m, &e), &e); /* a is used again */
    kiln_model_release(m);
    f->t += 10;
    assert_ok(kiln_registry_get_or_load(f->reg, "d", 0, &m, &e), &e);
    kiln_model_release(m);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "b", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    assert_string_equal(s.reason, "evicted to make room for 'd' version 1");
    assert_ok(kiln_registry_status(f->reg, "a", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_READY);
    kiln_registry_stats rs;
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.evictions, 1);
    assert_int_equal(rs.host_bytes, 300);
    assert_int_equal(atomic_load(&fake_unloads), 1);
    /* the evicted model comes back on demand (evicting the next LRU, c) */
    f->t += 10;
    assert_ok(kiln_registry_get_or_load(f->reg, "b", 0, &m, &e), &e);
    kiln_model_release(m);
    assert_ok(kiln_registry_status(f->reg, "c", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
}

static void pinned_models_are_never_evicted(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *a, *b, *c;
    make_registry(f, 200, 0);
    add_model(f, "a", "1", NULL);
    add_model(f, "b", "1", NULL);
    add_model(f, "c", "1", NULL);
    add_model(f, "huge", "1", "parameters { key: 'host_bytes' value { string_value: '500' } }");
    assert_ok(kiln_registry_get_or_load(f->reg, "a", 0, &a, &e), &e);
    f->t += 10;
    assert_ok(kiln_registry_get_or_load(f->reg, "b", 0, &b, &e), &e);
    f->t += 10;
    assert_status(kiln_registry_get_or_load(f->reg, "c", 0, &c, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "model 'c' version 1 needs 100 bytes of host memory; the budget is 200 with 200 "
                  "in use and nothing unpinned to evict; held by: 'a' v1 (pinned, 100 bytes), 'b' "
                  "v1 (pinned, 100 bytes)");
    assert_null(c);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "c", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    assert_non_null(strstr(s.reason, "needs 100 bytes"));
    kiln_model_release(a); /* now a can go */
    assert_ok(kiln_registry_get_or_load(f->reg, "c", 0, &c, &e), &e);
    assert_ok(kiln_registry_status(f->reg, "b", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_READY); /* b stayed: it is pinned */
    assert_ok(kiln_registry_status(f->reg, "a", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    /* a model bigger than the whole budget never fits */
    kiln_model *h;
    kiln_model_release(b);
    kiln_model_release(c);
    assert_status(kiln_registry_get_or_load(f->reg, "huge", 0, &h, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "needs 500 bytes of host memory; the budget is 200");
    /* and it evicted nothing on its way to failing */
    assert_ok(kiln_registry_status(f->reg, "b", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_READY);
    assert_ok(kiln_registry_status(f->reg, "c", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_READY);
}

static void device_budget_evicts_too(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *a, *b;
    make_registry_dev(f, 0, 150, 0);
    const char *dev = "parameters { key: 'device_bytes' value { string_value: '100' } }";
    add_model(f, "ga", "1", dev);
    add_model(f, "gb", "1", dev);
    assert_ok(kiln_registry_get_or_load(f->reg, "ga", 0, &a, &e), &e);
    /* ga is pinned: gb cannot fit on the device */
    assert_status(kiln_registry_get_or_load(f->reg, "gb", 0, &b, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "needs 100 bytes of device memory; the budget is 150 with 100 in use");
    kiln_model_release(a);
    assert_ok(kiln_registry_get_or_load(f->reg, "gb", 0, &b, &e), &e);
    kiln_model_release(b);
    kiln_registry_stats rs;
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.device_bytes, 100);
    assert_int_equal(rs.evictions, 1);
}

/* model_warmup samples run on every instance after the load, count times each, with the data
 * asked for; a failing sample fails the load. */
static void warmup_samples_run_after_load(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m;
    char extra[512];
#define SAMPLE(data)                                                                               \
    "max_batch_size: 4 instance_group { count: 2 } "                                               \
    "model_warmup { name: 's' batch_size: 3 count: 2 inputs { key: 'x' value { data_type: "        \
    "TYPE_FP32 dims: 1 " data " } } }"
    snprintf(extra, sizeof(extra), "%s", SAMPLE("random_data: true"));
    add_model(f, "wr", "1", extra);
    atomic_store(&fake_execs, 0);
    assert_ok(kiln_registry_get_or_load(f->reg, "wr", 0, &m, &e), &e);
    kiln_model_release(m);
    assert_int_equal(atomic_load(&fake_execs), 4); /* 2 instances x count 2 */
    assert_int_equal(fake_rows, 3);
    assert_true(fake_first != 0.f && fake_first >= -1.f && fake_first < 1.f);

    /* from a file in <model>/warmup/: its bytes, and a size that does not fit is refused */
    snprintf(extra, sizeof(extra), "%s", SAMPLE("input_data_file: 'x.bin'"));
    add_model(f, "wf", "1", extra);
    char p[512];
    snprintf(p, sizeof(p), "%s/wf/warmup", f->repo);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/wf/warmup/x.bin", f->repo);
    float x[3] = {7.f, 8.f, 9.f};
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    fwrite(x, sizeof(float), 2, fp); /* 8 bytes: one row short */
    fclose(fp);
    assert_status(kiln_registry_get_or_load(f->reg, "wf", 0, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "model 'wf': model_warmup 's': input 'x': warmup/x.bin holds 8 bytes; the "
                  "input needs 12");
    fp = fopen(p, "wb");
    fwrite(x, sizeof(float), 3, fp);
    fclose(fp);
    atomic_store(&fake_execs, 0);
    assert_ok(kiln_registry_get_or_load(f->reg, "wf", 0, &m, &e), &e);
    kiln_model_release(m);
    assert_int_equal(atomic_load(&fake_execs), 4);
    assert_true(fake_first == 7.f);

    /* a sample the model refuses fails the load, and the instances are unloaded */
    x[0] = 99.f;
    fp = fopen(p, "wb");
    fwrite(x, sizeof(float), 3, fp);
    fclose(fp);
    snprintf(extra, sizeof(extra), "%s", SAMPLE("input_data_file: 'x.bin'"));
    add_model(f, "wbad", "1", extra);
    snprintf(p, sizeof(p), "%s/wbad/warmup", f->repo);
    mkdir(p, 0700);
    char q[512];
    snprintf(q, sizeof(q), "%s/wbad/warmup/x.bin", f->repo);
    fp = fopen(q, "wb");
    fwrite(x, sizeof(float), 3, fp);
    fclose(fp);
    int unloads = atomic_load(&fake_unloads);
    assert_status(kiln_registry_get_or_load(f->reg, "wbad", 0, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "model 'wbad': model_warmup 's' (a batch of 3) failed on instance 0: fake "
                  "execute refuses 99");
    assert_int_equal(atomic_load(&fake_unloads), unloads + 2);
}

static void idle_ttl_unloads(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m, *held;
    make_registry(f, 0, 1000 * KILN_NS_PER_MS);
    add_model(f, "idle", "1", NULL);
    add_model(f, "busy", "1", NULL);
    assert_ok(kiln_registry_get_or_load(f->reg, "idle", 0, &m, &e), &e);
    kiln_model_release(m);
    assert_ok(kiln_registry_get_or_load(f->reg, "busy", 0, &held, &e), &e);
    f->t += 500 * KILN_NS_PER_MS;
    assert_int_equal(kiln_registry_sweep(f->reg), 0);
    f->t += 600 * KILN_NS_PER_MS;
    assert_int_equal(kiln_registry_sweep(f->reg), 1);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "idle", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    assert_string_equal(s.reason, "unloaded after 1000 ms idle");
    assert_ok(kiln_registry_status(f->reg, "busy", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_READY); /* pinned: never idle-unloaded */
    kiln_model_release(held);
    /* TTL off: sweep does nothing */
    make_registry(f, 0, 0);
    assert_int_equal(kiln_registry_sweep(f->reg), 0);
}

typedef struct unloader {
    fx *f;
    kiln_status st;
    atomic_int done;
} unloader;

static void *do_unload(void *arg)
{
    unloader *u = arg;
    kiln_err e;
    u->st = kiln_registry_unload(u->f->reg, "a", &e);
    atomic_store(&u->done, 1);
    return NULL;
}

static void unload_waits_for_users(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m, *m2;
    add_model(f, "a", "1", NULL);
    assert_ok(kiln_registry_get_or_load(f->reg, "a", 0, &m, &e), &e);
    unloader u = {.f = f};
    pthread_t t;
    pthread_create(&t, NULL, do_unload, &u);
    /* wait (bounded) until the unload has started: acquires fail while it waits for us */
    kiln_status st = KILN_OK;
    for (int i = 0; i < 2000 && st == KILN_OK; i++) {
        st = kiln_registry_acquire(f->reg, "a", 0, &m2, &e);
        if (st == KILN_OK)
            kiln_model_release(m2);
        usleep(1000);
    }
    assert_status(st, KILN_UNAVAILABLE, &e, "model 'a' is not ready (UNLOADING)");
    usleep(20000);
    assert_int_equal(atomic_load(&u.done), 0); /* still waiting for our pin */
    assert_int_equal(atomic_load(&fake_unloads), 0);
    assert_non_null(kiln_model_backend_model(m)); /* our handle still works */
    kiln_model_release(m);
    pthread_join(t, NULL);
    assert_int_equal(u.st, KILN_OK);
    assert_int_equal(atomic_load(&fake_unloads), 1);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "a", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    assert_string_equal(s.reason, "unloaded");
    assert_status(kiln_registry_unload(f->reg, "a", &e), KILN_NOT_FOUND, &e,
                  "model 'a' is not loaded");
    kiln_registry_stats rs;
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.unloads, 1);
    assert_int_equal(rs.host_bytes, 0);
}

static void index_lists_repository_and_states(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m;
    add_model(f, "b", "1", NULL);
    add_model(f, "a", "1,2", "version_policy { all { } }");
    assert_ok(kiln_registry_load(f->reg, "a", &e), &e);
    assert_ok(kiln_registry_get_or_load(f->reg, "a", 2, &m, &e), &e);
    kiln_model_release(m);
    kiln_model_status *v;
    size_t n;
    assert_ok(kiln_registry_index(f->reg, &v, &n, &e), &e);
    assert_int_equal(n, 3);
    assert_string_equal(v[0].name, "a");
    assert_int_equal(v[0].version, 1);
    assert_int_equal(v[1].version, 2);
    assert_int_equal(v[1].state, KILN_MODEL_READY);
    assert_string_equal(v[2].name, "b");
    assert_int_equal(v[2].state, KILN_MODEL_UNAVAILABLE);
    assert_string_equal(v[2].reason, "not loaded");
    kiln_free(v);
}

/* Copies the example ONNX model into <repo>/<name>/<version>/model.onnx (no config.pbtxt). */
static void add_onnx(fx *f, const char *name, const char *version)
{
    char src[512], p[512];
    snprintf(src, sizeof(src), "%s/models/mlp_onnx/1/model.onnx", kiln_test_build_dir());
    snprintf(p, sizeof(p), "%s/%s", f->repo, name);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/%s/%s", f->repo, name, version);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/%s/%s/model.onnx", f->repo, name, version);
    FILE *in = fopen(src, "rb"), *out = fopen(p, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

static void models_without_config_are_auto_completed(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m;
    add_onnx(f, "auto", "1");
    add_onnx(f, "auto", "2");
    /* a lookup does not read the model file: acquire says "not loaded", not "unknown" */
    assert_status(kiln_registry_acquire(f->reg, "auto", 0, &m, &e), KILN_UNAVAILABLE, &e,
                  "not loaded");
    assert_ok(kiln_registry_get_or_load(f->reg, "auto", 0, &m, &e), &e);
    assert_int_equal(kiln_model_version(m), 2); /* the default policy: the latest */
    const kiln_model_config *c = kiln_model_get_config(m);
    assert_string_equal(c->name, "auto");
    assert_string_equal(c->backend, "onnx");
    assert_int_equal(c->max_batch_size, 4);
    assert_true(c->dynamic_batching);
    assert_int_equal(c->n_inputs, 1);
    assert_string_equal(c->inputs[0].name, "INPUT");
    assert_int_equal(c->inputs[0].dims.rank, 1);
    assert_int_equal(c->inputs[0].dims.dims[0], 16);
    assert_int_equal(c->n_outputs, 1);
    assert_string_equal(c->outputs[0].name, "PROBS");
    assert_int_equal(c->outputs[0].dims.dims[0], 10);
    assert_true(c->packed_len > 0);
    kiln_model_release(m);
    assert_status(kiln_registry_get_or_load(f->reg, "auto", 1, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'auto' has no version 1 to serve (versions served: 2)");
    /* unload and load again: the config is derived again */
    assert_ok(kiln_registry_unload(f->reg, "auto", &e), &e);
    assert_ok(kiln_registry_load(f->reg, "auto", &e), &e);
    assert_ok(kiln_registry_acquire(f->reg, "auto", 2, &m, &e), &e);
    assert_int_equal(kiln_model_get_config(m)->max_batch_size, 4);
    kiln_model_release(m);

    /* a model file that cannot be read: the load fails, and its record says why */
    add_onnx(f, "broken", "1");
    char p[512];
    snprintf(p, sizeof(p), "%s/broken/1/model.onnx", f->repo);
    write_file(p, "not a model");
    assert_status(kiln_registry_get_or_load(f->reg, "broken", 0, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "model 'broken' (config auto-complete): ");
    assert_null(m);
    kiln_model_status st;
    assert_ok(kiln_registry_status(f->reg, "broken", 1, &st, &e), &e);
    assert_int_equal(st.state, KILN_MODEL_UNAVAILABLE);
    assert_non_null(strstr(st.reason, "not a valid ONNX model"));
}

static void models_with_neither_config_nor_model_file(void **state)
{
    fx *f = *state;
    kiln_err e;
    kiln_model *m;
    char p[512];
    snprintf(p, sizeof(p), "%s/bare", f->repo);
    mkdir(p, 0700);
    assert_status(kiln_registry_get_or_load(f->reg, "bare", 0, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'bare' has no config.pbtxt, and no version directory holding a model "
                  "file to read a config from (looked for: config.pbtxt, <version>/model.onnx)");
    /* the latest version decides: an ONNX file in an older one does not count */
    add_onnx(f, "plugin_like", "1");
    snprintf(p, sizeof(p), "%s/plugin_like/2", f->repo);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/plugin_like/2/model.so", f->repo);
    write_file(p, "");
    assert_status(kiln_registry_get_or_load(f->reg, "plugin_like", 0, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'plugin_like' has no config.pbtxt, and its latest version directory 2 "
                  "holds no model file to read a config from (looked for: config.pbtxt, "
                  "2/model.onnx)");
    assert_status(kiln_registry_load(f->reg, "plugin_like", &e), KILN_NOT_FOUND, &e,
                  "looked for: config.pbtxt, 2/model.onnx");
    assert_status(kiln_registry_acquire(f->reg, "plugin_like", 0, &m, &e), KILN_NOT_FOUND, &e,
                  "model 'plugin_like' is not in the repository");
    /* the index lists models with a config or a model file to derive one from, only */
    add_onnx(f, "auto", "1");
    kiln_model_status *v;
    size_t n;
    assert_ok(kiln_registry_index(f->reg, &v, &n, &e), &e);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].name, "auto");
    assert_string_equal(v[0].reason, "not loaded");
    kiln_free(v);
}

/* Readers pin and unpin while another thread loads, unloads and sweeps (TSan watches). */
static atomic_int stop;
static void *reader(void *arg)
{
    fx *f = arg;
    while (!atomic_load(&stop)) {
        kiln_model *m;
        if (kiln_registry_acquire(f->reg, "a", 0, &m, NULL) == KILN_OK) {
            assert_non_null(kiln_model_backend_model(m));
            kiln_model_record(m, 1, true, 1, 1);
            kiln_model_release(m);
        }
    }
    return NULL;
}

static void concurrent_pins_and_unloads(void **state)
{
    fx *f = *state;
    kiln_err e;
    make_registry(f, 250, 1);
    add_model(f, "a", "1", NULL);
    add_model(f, "b", "1", NULL);
    add_model(f, "c", "1", NULL);
    atomic_store(&stop, 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, reader, f);
    for (int i = 0; i < 100; i++) {
        kiln_model *m;
        f->t += 5;
        if (kiln_registry_get_or_load(f->reg,
                                      i % 3 == 0   ? "a"
                                      : i % 3 == 1 ? "b"
                                                   : "c",
                                      0, &m, &e) == KILN_OK)
            kiln_model_release(m);
        if (i % 7 == 0)
            kiln_registry_unload(f->reg, "a", NULL);
        if (i % 11 == 0)
            kiln_registry_sweep(f->reg);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    kiln_registry_stats rs;
    kiln_registry_get_stats(f->reg, &rs);
    assert_true(rs.host_bytes <= 250);
    assert_int_equal(atomic_load(&fake_loads) - atomic_load(&fake_unloads),
                     (int)(rs.host_bytes / 100));
}

/* The real plugin backend: 1,000 load/unload cycles through the registry, RSS measured. */
static void registry_cycles_do_not_grow_rss(void **state)
{
    (void)state;
    kiln_err e;
    char repo[1024];
    snprintf(repo, sizeof(repo), "%s/models", kiln_test_build_dir());
    kiln_registry_options o = {.repository = repo};
    kiln_registry *reg;
    assert_ok(kiln_registry_create(&o, &reg, &e), &e);
    kiln_model *m;
    for (int i = 0; i < 20; i++) {
        assert_ok(kiln_registry_get_or_load(reg, "simple", 0, &m, &e), &e);
        kiln_model_release(m);
        assert_ok(kiln_registry_unload(reg, "simple", &e), &e);
    }
    uint64_t before = kiln_test_rss_bytes();
    for (int i = 0; i < 1000; i++) {
        assert_ok(kiln_registry_get_or_load(reg, "simple", 0, &m, &e), &e);
        kiln_model_release(m);
        assert_ok(kiln_registry_unload(reg, "simple", &e), &e);
    }
    uint64_t after = kiln_test_rss_bytes();
    printf("registry load/unload x1000 of 'simple': RSS %llu -> %llu bytes (growth %lld)\n",
           (unsigned long long)before, (unsigned long long)after,
           (long long)after - (long long)before);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    assert_true((int64_t)after - (int64_t)before < 1024 * 1024);
#endif
    kiln_registry_destroy(reg);
}

/* Executes one row whose input is v on instance 0 of m. */
static kiln_status exec_value(kiln_model *m, float v, kiln_batch_fault *fault, kiln_err *e)
{
    kiln_shape sh = {.rank = 1, .dims = {1}};
    kiln_tensor in;
    kiln_err ae;
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_FP32, &sh, 0, &in, &ae), &ae);
    *(float *)in.data = v;
    kiln_output_slot out = {.index = 0};
    kiln_batch b = {.n_inputs = 1, .inputs = &in, .n_outputs = 1, .outputs = &out};
    kiln_status st = kiln_model_execute(m, 0, &b, NULL, NULL, e);
    if (fault)
        *fault = b.fault;
    kiln_batch_release_outputs(&b);
    kiln_tensor_fini(&in);
    return st;
}

static const kiln_device gpu0 = {KILN_DEVICE_CUDA, 0};

/* Models a and b, 500 device bytes each, in a registry whose models load on "GPU 0". */
static void two_device_models(fx *f)
{
    f->dev = gpu0;
    make_registry(f, 0, 0);
    add_model(f, "a", "1", "parameters { key: 'device_bytes' value { string_value: '500' } }");
    add_model(f, "b", "1", "parameters { key: 'device_bytes' value { string_value: '500' } }");
}

static void execute_out_of_device_memory_evicts_and_retries(void **state)
{
    fx *f = *state;
    two_device_models(f);
    add_model(f, "cpu", "1", NULL); /* holds no device memory: stays */
    kiln_err e;
    kiln_model *a, *b, *c;
    assert_ok(kiln_registry_get_or_load(f->reg, "a", 0, &a, &e), &e);
    assert_ok(kiln_registry_get_or_load(f->reg, "cpu", 0, &c, &e), &e);
    kiln_model_release(a);
    kiln_model_release(c);
    assert_ok(kiln_registry_get_or_load(f->reg, "b", 0, &b, &e), &e);
    /* b runs out of device memory while a holds some: a goes, and b runs once more */
    kiln_batch_fault fault;
    assert_ok(exec_value(b, 77.f, &fault, &e), &e);
    assert_int_equal(fault, KILN_FAULT_NONE);
    assert_int_equal(atomic_load(&fake_execs), 2);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "a", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    assert_non_null(strstr(s.reason, "evicted to make room for 'b'"));
    assert_ok(kiln_registry_status(f->reg, "cpu", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_READY);
    kiln_registry_stats rs;
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.evictions, 1);
    assert_int_equal(rs.device_bytes, 500);
    kiln_model_release(b);
}

static void execute_out_of_device_memory_with_nothing_to_evict(void **state)
{
    fx *f = *state;
    two_device_models(f);
    kiln_err e;
    kiln_model *a, *b;
    assert_ok(kiln_registry_get_or_load(f->reg, "a", 0, &a, &e), &e);
    assert_ok(kiln_registry_get_or_load(f->reg, "b", 0, &b, &e), &e);
    /* a is pinned: nothing can go, and the failure is the batch's, once */
    kiln_batch_fault fault;
    assert_status(exec_value(b, 77.f, &fault, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "fake CUDA: out of memory");
    assert_int_equal(fault, KILN_FAULT_DEVICE_MEMORY);
    assert_int_equal(atomic_load(&fake_execs), 1);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "a", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_READY);
    kiln_model_release(a);
    kiln_model_release(b);
}

static void execute_that_loses_the_gpu_stops_its_models(void **state)
{
    fx *f = *state;
    f->dev = gpu0;
    make_registry(f, 0, 0);
    add_model(f, "a", "1", NULL);
    add_model(f, "b", "1", NULL);
    add_model(f, "later", "1", NULL);
    kiln_err e;
    kiln_model *a, *b;
    assert_ok(kiln_registry_get_or_load(f->reg, "a", 0, &a, &e), &e);
    assert_ok(kiln_registry_get_or_load(f->reg, "b", 0, &b, &e), &e);
    kiln_model_release(b);
    assert_int_equal(kiln_registry_lost_gpus(f->reg, NULL, 0), 0);
    kiln_batch_fault fault;
    assert_status(exec_value(a, 66.f, &fault, &e), KILN_INTERNAL, &e,
                  "fake CUDA: an illegal memory access");
    assert_int_equal(fault, KILN_FAULT_DEVICE_LOST);
    char why[KILN_ERR_MSG_MAX];
    assert_int_equal(kiln_registry_lost_gpus(f->reg, why, sizeof(why)), 1);
    assert_non_null(strstr(why, "GPU 0 is unusable until the server restarts: model 'a' version 1 "
                                "failed there: fake CUDA: an illegal memory access"));
    /* both models on GPU 0 stop serving, with the reason */
    kiln_model *m;
    assert_status(kiln_registry_acquire(f->reg, "b", 0, &m, &e), KILN_UNAVAILABLE, &e,
                  "GPU 0 is unusable until the server restarts");
    assert_null(m);
    assert_status(kiln_registry_get_or_load(f->reg, "a", 0, &m, &e), KILN_UNAVAILABLE, &e,
                  "GPU 0 is unusable");
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "b", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    assert_non_null(strstr(s.reason, "fake CUDA: an illegal memory access"));
    /* a load onto the lost GPU fails without calling the backend */
    int loads = atomic_load(&fake_loads);
    assert_status(kiln_registry_get_or_load(f->reg, "later", 0, &m, &e), KILN_UNAVAILABLE, &e,
                  "model 'later': instance 0 cannot load: GPU 0 is unusable until the "
                  "server restarts: model 'a' version 1 failed there");
    assert_int_equal(atomic_load(&fake_loads), loads);
    /* the pinned model still unloads once released; nothing leaks */
    kiln_model_release(a);
    assert_ok(kiln_registry_unload(f->reg, "a", &e), &e);
    assert_ok(kiln_registry_unload(f->reg, "b", &e), &e);
    assert_int_equal(atomic_load(&fake_unloads), 2);
}

static void execute_growth_is_counted_and_evicts(void **state)
{
    fx *f = *state;
    f->dev = gpu0;
    make_registry_dev(f, 0, 2000, 0);
    add_model(f, "old", "1", "parameters { key: 'device_bytes' value { string_value: '600' } }");
    add_model(f, "grows", "1", "parameters { key: 'device_bytes' value { string_value: '600' } }");
    kiln_err e;
    kiln_model *old, *g;
    assert_ok(kiln_registry_get_or_load(f->reg, "old", 0, &old, &e), &e);
    kiln_model_release(old);
    assert_ok(kiln_registry_get_or_load(f->reg, "grows", 0, &g, &e), &e);
    /* 600 -> 1600: with old's 600 the registry would hold 2200 of 2000: old goes */
    assert_ok(exec_value(g, 55.f, NULL, &e), &e);
    kiln_model_status s;
    assert_ok(kiln_registry_status(f->reg, "grows", 1, &s, &e), &e);
    assert_int_equal(s.device_bytes, 1600);
    assert_ok(kiln_registry_status(f->reg, "old", 1, &s, &e), &e);
    assert_int_equal(s.state, KILN_MODEL_UNAVAILABLE);
    kiln_registry_stats rs;
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.device_bytes, 1600);
    /* past the budget with nothing left to evict: counted, and the execution still succeeds */
    assert_ok(exec_value(g, 55.f, NULL, &e), &e);
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.device_bytes, 2600);
    /* a run that does not grow it changes nothing */
    assert_ok(exec_value(g, 1.f, NULL, &e), &e);
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.device_bytes, 2600);
    kiln_model_release(g);
    assert_ok(kiln_registry_unload(f->reg, "grows", &e), &e);
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.device_bytes, 0);
}

typedef struct churn {
    fx *f;
    int which; /* 0, 1: execute a and b; 2: load c and d; 3: unload and sweep */
    atomic_int *stop;
} churn;

static void *churn_thread(void *arg)
{
    churn *c = arg;
    static const char *names[] = {"a", "b", "c", "d"};
    static const float values[] = {77.f, 55.f, 44.f, 1.f};
    kiln_shape sh = {.rank = 1, .dims = {1}};
    for (int i = 0; i < 400 && !atomic_load(c->stop); i++) {
        kiln_err e;
        kiln_model *m = NULL;
        if (c->which == 3) {
            (void)kiln_registry_unload(c->f->reg, names[i % 4], &e);
            continue;
        }
        const char *name = c->which < 2 ? names[c->which] : names[2 + i % 2];
        if (kiln_registry_get_or_load(c->f->reg, name, 0, &m, &e) != KILN_OK)
            continue;
        kiln_tensor in;
        if (c->which < 2 && kiln_tensor_alloc(KILN_DTYPE_FP32, &sh, 0, &in, &e) == KILN_OK) {
            *(float *)in.data = values[i % 4];
            kiln_output_slot out = {.index = 0};
            kiln_batch b = {.n_inputs = 1, .inputs = &in, .n_outputs = 1, .outputs = &out};
            (void)kiln_model_execute(m, 0, &b, NULL, NULL, &e);
            kiln_batch_release_outputs(&b);
            kiln_tensor_fini(&in);
        }
        kiln_model_release(m);
    }
    return NULL;
}

/* Executions that grow, shrink and run out of device memory, racing loads, budget evictions
 * and unloads (run under TSan in make test): the counts stay consistent, and once everything
 * is unloaded the registry holds nothing and every instance was freed. */
static void executions_race_loads_and_evictions(void **state)
{
    fx *f = *state;
    f->dev = gpu0;
    make_registry_dev(f, 0, 4000, 0);
    const char *dev = "parameters { key: 'device_bytes' value { string_value: '1000' } }";
    add_model(f, "a", "1", dev);
    add_model(f, "b", "1", dev);
    add_model(f, "c", "1", dev);
    add_model(f, "d", "1", dev);
    atomic_int halt = 0;
    churn c[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (churn){f, i, &halt};
        assert_int_equal(pthread_create(&t[i], NULL, churn_thread, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    kiln_err e;
    for (int i = 0; i < 4; i++)
        (void)kiln_registry_unload(f->reg, (const char *[]){"a", "b", "c", "d"}[i], &e);
    kiln_registry_stats rs;
    kiln_registry_get_stats(f->reg, &rs);
    assert_int_equal(rs.host_bytes, 0);
    assert_int_equal(rs.device_bytes, 0);
    assert_int_equal(atomic_load(&fake_loads), atomic_load(&fake_unloads));
    assert_int_equal(atomic_load(&fake_device_models), 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(racing_get_or_load_loads_once),
        T(racing_load_failure_is_shared),
        T(versions_follow_the_policy),
        T(lookup_errors),
        T(acquire_never_loads),
        T(evicts_least_recently_used),
        T(pinned_models_are_never_evicted),
        T(device_budget_evicts_too),
        T(warmup_samples_run_after_load),
        T(idle_ttl_unloads),
        T(unload_waits_for_users),
        T(index_lists_repository_and_states),
        T(models_without_config_are_auto_completed),
        T(models_with_neither_config_nor_model_file),
        T(concurrent_pins_and_unloads),
        T(execute_out_of_device_memory_evicts_and_retries),
        T(execute_out_of_device_memory_with_nothing_to_evict),
        T(execute_that_loses_the_gpu_stops_its_models),
        T(execute_growth_is_counted_and_evicts),
        T(executions_race_loads_and_evictions),
        cmocka_unit_test(registry_cycles_do_not_grow_rss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
