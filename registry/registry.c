/*
 * registry/registry.c: loaded models, pins, on-demand loads shared by racing callers, LRU
 * eviction under host and device budgets, idle TTL, explicit unload.
 *
 * Locking: one mutex (mu) guards the table, every model's state/reason/config/backend model
 * and the byte accounting; one condition variable (cond) is broadcast whenever a state
 * changes or an UNLOADING model loses its last pin. Pins and statistics are atomics: a pin is
 * only added under mu (so eviction, which checks pins under mu, never races an acquire), and
 * is dropped without it (release takes mu only to wake an unloader). Loads and unloads run
 * outside mu; the LOADING/UNLOADING states keep everyone else off those models meanwhile.
 */
#include "registry/registry.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "registry/registry_int.h"

const uint64_t kiln_hist_bounds_ns[KILN_HIST_BUCKETS - 1] = {
    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

/* ---------------------------------------------------------------- instances */

/*
 * Where each instance runs. KIND_GPU groups put `count` instances on each GPU in `gpus`, or on
 * each visible GPU when the list is empty; on a host with no visible GPU (or a build without
 * CUDA) they run on the CPU instead, said once in the log. A listed GPU that does not exist is
 * an error. The other kinds run on the registry's device (the CPU unless set). OUT: dev[0..*n).
 */
static kiln_status instance_devices(const kiln_model_config *c, const char *name, kiln_device dflt,
                                    kiln_device *dev, uint32_t *n, kiln_err *err)
{
    int gpus = 0;
    kiln_err e;
    kiln_err_clear(&e);
    if (kiln_cuda_device_count(&gpus, &e) != KILN_OK)
        gpus = 0;
    uint64_t want = 0;
    bool fell_back = false;
    *n = 0;
    for (size_t i = 0; i < c->n_instance_groups; i++) {
        const kiln_instance_group *g = &c->instance_groups[i];
        bool gpu = g->kind == KILN_INSTANCE_GPU && gpus > 0;
        fell_back = fell_back || (g->kind == KILN_INSTANCE_GPU && gpus == 0);
        for (size_t k = 0; gpu && k < g->n_gpus; k++)
            if (g->gpus[k] >= gpus)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "model '%s': instance_group[%zu]: gpus[%zu] is %d, but %d "
                                    "GPU%s visible",
                                    name, i, k, g->gpus[k], gpus, gpus == 1 ? " is" : "s are");
        size_t places = gpu ? (g->n_gpus ? g->n_gpus : (size_t)gpus) : 1;
        for (size_t k = 0; k < places; k++)
            for (int32_t r = 0; r < g->count; r++, want++) {
                if (want >= KILN_MAX_INSTANCES)
                    continue;
                dev[want] =
                    gpu ? (kiln_device){KILN_DEVICE_CUDA, g->n_gpus ? g->gpus[k] : (int)k}
                        : (g->kind == KILN_INSTANCE_GPU ? (kiln_device){KILN_DEVICE_CPU, 0} : dflt);
            }
    }
    if (!c->n_instance_groups)
        dev[want++] = dflt;
    if (want > KILN_MAX_INSTANCES)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "model '%s': instance_group asks for %llu instances, limit is %d", name,
                            (unsigned long long)want, KILN_MAX_INSTANCES);
    if (fell_back) {
        kiln_log_ctx ctx = {.model = name};
        KILN_LOGW(&ctx,
                  "instance_group asks for KIND_GPU, but no GPU is visible%s%s%s: those "
                  "instances run on the CPU",
                  e.msg[0] ? " (" : "", e.msg, e.msg[0] ? ")" : "");
    }
    *n = (uint32_t)want;
    return KILN_OK;
}

static void unload_all(const kiln_backend *b, kiln_instances *inst)
{
    for (uint32_t i = 0; i < inst->n; i++)
        b->unload(inst->bm[i]);
    inst->n = 0;
}

/* The host and device bytes each loaded instance holds, as its backend reports them (OUT:
 * host[i], device[i]), and their sums (OUT: *host_sum, *device_sum). */
static void instances_memory(const kiln_backend *b, const kiln_instances *inst, uint64_t *host,
                             uint64_t *device, uint64_t *host_sum, uint64_t *device_sum)
{
    *host_sum = *device_sum = 0;
    for (uint32_t i = 0; i < inst->n; i++) {
        host[i] = device[i] = 0;
        b->memory(inst->bm[i], &host[i], &device[i]);
        *host_sum += host[i];
        *device_sum += device[i];
    }
}

/* Loads every instance the config asks for, each on its device; all or nothing. A GPU lost
 * to a CUDA fault takes no new instances (a lost GPU's reason is written before its bit is
 * set, and never again, so it is read here without mu). */
static kiln_status load_all(const kiln_registry *reg, const kiln_backend *b,
                            const kiln_load_args *args, kiln_instances *inst, kiln_err *err)
{
    uint32_t want = 0;
    inst->n = 0;
    kiln_status st =
        instance_devices(args->config, args->model_name, args->device, inst->dev, &want, err);
    for (uint32_t i = 0; st == KILN_OK && i < want; i++) {
        const char *lost = kiln__lost_reason(reg, inst->dev[i]);
        if (lost)
            st = kiln_err_set(err, KILN_UNAVAILABLE, "model '%s': instance %u cannot load: %s",
                              args->model_name, i, lost);
    }
    for (uint32_t i = 0; st == KILN_OK && i < want; i++) {
        kiln_load_args a = *args;
        a.device = inst->dev[i];
        st = b->load(&a, &inst->bm[i], err);
        if (st != KILN_OK)
            break;
        inst->n++;
    }
    if (st != KILN_OK)
        unload_all(b, inst);
    return st;
}

static const char *const state_names[] = {"UNAVAILABLE", "LOADING", "READY", "UNLOADING"};

const char *kiln_model_state_name(kiln_model_state s)
{
    return (unsigned)s < 4 ? state_names[s] : "UNAVAILABLE";
}

/*
 * The registry's clock stamps every acquire and release for LRU and TTL, which need only
 * millisecond resolution: the coarse monotonic clock costs a few ns instead of ~20.
 */
static uint64_t now(const kiln_registry *reg)
{
    if (reg->opt.clock)
        return reg->opt.clock(reg->opt.clock_ctx);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * KILN_NS_PER_S + (uint64_t)ts.tv_nsec;
}

static kiln_model_state state_of(const kiln_model *m)
{
    return (kiln_model_state)atomic_load(&m->state);
}

kiln_model_state kiln__model_state(const kiln_model *m)
{
    return state_of(m);
}

uint64_t kiln__gpu_bit(kiln_device d)
{
    if (d.kind != KILN_DEVICE_CUDA || d.id < 0)
        return 0;
    return UINT64_C(1) << (d.id < 63 ? d.id : 63);
}

const char *kiln__lost_reason(const kiln_registry *reg, kiln_device d)
{
    uint64_t bit = kiln__gpu_bit(d);
    return atomic_load(&reg->lost_gpus) & bit ? reg->lost_reason[__builtin_ctzll(bit)] : NULL;
}

const char *kiln__model_lost_locked(const kiln_registry *reg, const kiln_model *m)
{
    const char *why = NULL;
    for (uint32_t i = 0; !why && atomic_load(&reg->lost_gpus) && i < m->inst.n; i++)
        why = kiln__lost_reason(reg, m->inst.dev[i]);
    return why;
}

static const kiln_backend *find_backend(const kiln_registry *reg, const char *name)
{
    return reg->opt.find_backend ? reg->opt.find_backend(name) : kiln_backend_find(name);
}

kiln_status kiln_registry_create(const kiln_registry_options *opts, kiln_registry **out,
                                 kiln_err *err)
{
    *out = NULL;
    char **names;
    size_t n;
    if (!opts || !opts->repository)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "model repository is not set");
    if (kiln__repo_list(opts->repository, &names, &n, err) != KILN_OK)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "model repository '%s' is not a readable directory", opts->repository);
    kiln__repo_free_names(names, n);
    kiln_registry *reg = kiln_calloc(1, sizeof(*reg));
    if (!reg || !(reg->repo = kiln_strdup(opts->repository))) {
        kiln_free(reg);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for the registry");
    }
    reg->opt = *opts;
    reg->opt.repository = reg->repo;
    atomic_init(&reg->lost_gpus, 0);
    pthread_mutex_init(&reg->mu, NULL);
    pthread_cond_init(&reg->cond, NULL);
    *out = reg;
    return KILN_OK;
}

/* Frees what a load made. REQUIRES: the model is not READY (no one can reach bm). */
static void free_loaded(kiln_model *m)
{
    if (m->inst.n)
        unload_all(m->backend, &m->inst);
    kiln_model_config_free(m->config);
    m->config = NULL;
}

void kiln_registry_destroy(kiln_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n; i++) {
        kiln_model *m = reg->models[i];
        assert(atomic_load(&m->pins) == 0 && "registry destroyed with a model pinned");
        free_loaded(m);
        kiln_free(m);
    }
    kiln_free(reg->models);
    pthread_cond_destroy(&reg->cond);
    pthread_mutex_destroy(&reg->mu);
    kiln_free(reg->repo);
    kiln_free(reg);
}

/* REQUIRES: mu. version 0 = the highest READY version of name. */
static kiln_model *find_locked(kiln_registry *reg, const char *name, int64_t version)
{
    kiln_model *best = NULL;
    for (size_t i = 0; i < reg->n; i++) {
        kiln_model *m = reg->models[i];
        if (strcmp(m->name, name) != 0)
            continue;
        if (version ? m->version == version
                    : state_of(m) == KILN_MODEL_READY && (!best || m->version > best->version))
            best = m;
        if (version && best)
            break;
    }
    return best;
}

/* REQUIRES: mu. Adds an UNAVAILABLE record for name/version. */
static kiln_status add_locked(kiln_registry *reg, const char *name, int64_t version,
                              kiln_model **out, kiln_err *err)
{
    if (reg->n == reg->cap) {
        size_t cap = reg->cap ? 2 * reg->cap : 16;
        kiln_model **g = kiln_realloc(reg->models, cap * sizeof(*g));
        if (!g)
            return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a model record");
        reg->models = g;
        reg->cap = cap;
    }
    kiln_model *m = kiln_calloc(1, sizeof(*m));
    if (!m)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a model record");
    m->reg = reg;
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->version = version;
    atomic_init(&m->state, KILN_MODEL_UNAVAILABLE);
    reg->models[reg->n++] = m;
    *out = m;
    return KILN_OK;
}

static void pin_locked(kiln_model *m)
{
    atomic_fetch_add(&m->pins, 1);
    m->lru_seq = ++m->reg->seq;
    atomic_store_explicit(&m->last_used_ns, now(m->reg), memory_order_relaxed);
}

static void uncount_locked(kiln_registry *reg, kiln_model *m)
{
    if (!m->counted)
        return;
    reg->host_used -= m->host_bytes;
    reg->device_used -= m->device_bytes;
    m->counted = false;
}

static bool over_budget_locked(const kiln_registry *reg, uint64_t host, uint64_t device)
{
    uint64_t hb = reg->opt.host_budget_bytes, db = reg->opt.device_budget_bytes;
    return (hb && reg->host_used + reg->host_reserved + host > hb) ||
           (db && reg->device_used + device > db);
}

/* Writes who holds memory into a budget error. REQUIRES: mu. */
static kiln_status budget_error_locked(kiln_registry *reg, const kiln_model *for_m, uint64_t host,
                                       uint64_t device, kiln_err *err)
{
    char held[320] = "";
    size_t len = 0;
    for (size_t i = 0; i < reg->n && len < sizeof(held) - 64; i++) {
        const kiln_model *m = reg->models[i];
        kiln_model_state s = state_of(m);
        if (m == for_m || (s != KILN_MODEL_READY && s != KILN_MODEL_LOADING))
            continue;
        uint32_t pins = (uint32_t)atomic_load(&m->pins);
        int w =
            snprintf(held + len, sizeof(held) - len, "%s'%s' v%" PRId64 " (%s, %" PRIu64 " bytes)",
                     len ? ", " : "", m->name, m->version,
                     s == KILN_MODEL_LOADING ? "loading"
                     : pins                  ? "pinned"
                                             : "ready",
                     m->host_bytes + m->device_bytes);
        if (w > 0)
            len += (size_t)w < sizeof(held) - len ? (size_t)w : sizeof(held) - len - 1;
    }
    bool dev = device && reg->opt.device_budget_bytes &&
               reg->device_used + device > reg->opt.device_budget_bytes;
    return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                        "model '%s' version %" PRId64 " needs %" PRIu64 " bytes of %s memory; the "
                        "budget is %" PRIu64 " with %" PRIu64 " in use and nothing unpinned to "
                        "evict; held by: %s",
                        for_m->name, for_m->version, dev ? device : host, dev ? "device" : "host",
                        dev ? reg->opt.device_budget_bytes : reg->opt.host_budget_bytes,
                        dev ? reg->device_used : reg->host_used + reg->host_reserved,
                        len ? held : "nothing");
}

/*
 * Evicts least-recently-used unpinned READY models until host/device bytes fit, marking them
 * UNLOADING and appending them to victims[] (the caller unloads them outside mu).
 * REQUIRES: mu. Returns KILN_RESOURCE_EXHAUSTED if nothing more can go.
 */
kiln_status kiln__registry_make_room_locked(kiln_registry *reg, kiln_model *for_m, uint64_t host,
                                            uint64_t device, kiln_model **victims,
                                            size_t *n_victims, kiln_err *err)
{
    if (!over_budget_locked(reg, host, device))
        return KILN_OK;
    /* evict nothing unless evicting everything evictable would be enough */
    uint64_t ev_host = 0, ev_dev = 0;
    for (size_t i = 0; i < reg->n; i++) {
        kiln_model *m = reg->models[i];
        if (m != for_m && state_of(m) == KILN_MODEL_READY && atomic_load(&m->pins) == 0 &&
            m->counted) {
            ev_host += m->host_bytes;
            ev_dev += m->device_bytes;
        }
    }
    uint64_t hb = reg->opt.host_budget_bytes, db = reg->opt.device_budget_bytes;
    if ((hb && reg->host_used + reg->host_reserved + host > hb + ev_host) ||
        (db && reg->device_used + device > db + ev_dev))
        return budget_error_locked(reg, for_m, host, device, err);
    while (over_budget_locked(reg, host, device)) {
        kiln_model *lru = NULL;
        for (size_t i = 0; i < reg->n; i++) {
            kiln_model *m = reg->models[i];
            if (m != for_m && state_of(m) == KILN_MODEL_READY && atomic_load(&m->pins) == 0 &&
                (!lru || m->lru_seq < lru->lru_seq))
                lru = m;
        }
        if (!lru || *n_victims >= KILN__MAX_VICTIMS)
            return budget_error_locked(reg, for_m, host, device, err);
        atomic_store(&lru->state, KILN_MODEL_UNLOADING);
        uncount_locked(reg, lru); /* its memory is on its way out */
        victims[(*n_victims)++] = lru;
    }
    return KILN_OK;
}

bool kiln__model_holds_device_locked(const kiln_model *m, int gpu)
{
    for (uint32_t i = 0; i < m->inst.n; i++)
        if (m->inst_device[i] > 0 &&
            (gpu < 0 || (m->inst.dev[i].kind == KILN_DEVICE_CUDA && m->inst.dev[i].id == gpu)))
            return true;
    return false;
}

size_t kiln__registry_evict_device_locked(kiln_registry *reg, const kiln_model *for_m, int gpu,
                                          kiln_model **victims)
{
    size_t n = 0;
    for (size_t i = 0; i < reg->n && n < KILN__MAX_VICTIMS; i++) {
        kiln_model *v = reg->models[i];
        if (v != for_m && state_of(v) == KILN_MODEL_READY && atomic_load(&v->pins) == 0 &&
            kiln__model_holds_device_locked(v, gpu)) {
            atomic_store(&v->state, KILN_MODEL_UNLOADING);
            uncount_locked(reg, v);
            victims[n++] = v;
        }
    }
    return n;
}

/* True when the config puts instances on GPUs. */
static bool wants_gpu(const kiln_model_config *c)
{
    for (size_t i = 0; i < c->n_instance_groups; i++)
        if (c->instance_groups[i].kind == KILN_INSTANCE_GPU)
            return true;
    return false;
}

void kiln__registry_finish_evictions(kiln_registry *reg, kiln_model **victims, size_t n,
                                     const kiln_model *for_m)
{
    for (size_t i = 0; i < n; i++) {
        kiln_model *v = victims[i];
        KILN_LOGI(&(kiln_log_ctx){.model = v->name},
                  "evicting version %" PRId64 " (least recently used, unpinned) to make room for "
                  "'%s' version %" PRId64,
                  v->version, for_m->name, for_m->version);
        kiln_instances gone = v->inst;
        unload_all(v->backend, &gone);
        pthread_mutex_lock(&reg->mu);
        v->inst.n = 0;
        kiln_model_config_free(v->config);
        v->config = NULL;
        snprintf(v->reason, sizeof(v->reason), "evicted to make room for '%s' version %" PRId64,
                 for_m->name, for_m->version);
        v->error = KILN_UNAVAILABLE;
        atomic_store(&v->state, KILN_MODEL_UNAVAILABLE);
        reg->evictions++;
        pthread_cond_broadcast(&reg->cond);
        pthread_mutex_unlock(&reg->mu);
    }
}

/*
 * Derives m's config from its model file (the model has no config.pbtxt). REQUIRES: mu, m
 * LOADING; drops mu around the I/O.
 */
static kiln_status autoconfig_locked(kiln_registry *reg, kiln_model *m, kiln_err *err)
{
    kiln_model_config *cfg;
    pthread_mutex_unlock(&reg->mu);
    kiln_status st = kiln__repo_autoconfig(reg->repo, m->name, m->version, &cfg, err);
    if (st == KILN_OK)
        KILN_LOGI(&(kiln_log_ctx){.model = m->name},
                  "no config.pbtxt: config auto-completed from version %" PRId64
                  " by backend '%s' (max_batch_size %d, %zu inputs, %zu outputs)",
                  m->version, cfg->backend, cfg->max_batch_size, cfg->n_inputs, cfg->n_outputs);
    pthread_mutex_lock(&reg->mu);
    m->config = cfg;
    return st;
}

/*
 * Loads m (state LOADING, set by the caller under mu, with cfg owned by m; cfg NULL when the
 * model has no config.pbtxt: the load derives it). Called with mu held; returns with mu held;
 * drops it around the I/O.
 */
static kiln_status load_locked(kiln_registry *reg, kiln_model *m, kiln_err *err)
{
    char vdir[4400], mdir[4200];
    snprintf(mdir, sizeof(mdir), "%s/%s", reg->repo, m->name);
    snprintf(vdir, sizeof(vdir), "%s/%" PRId64, mdir, m->version);
    kiln_model *victims[KILN__MAX_VICTIMS];
    size_t n_victims = 0;
    kiln_status st;
    if (!m->config && (st = autoconfig_locked(reg, m, err)) != KILN_OK)
        goto out_fail;
    m->backend = find_backend(reg, m->config->backend);
    if (!m->backend) {
        st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                          "model '%s': backend '%s' is not available (this build has: %s)", m->name,
                          m->config->backend[0] ? m->config->backend : "(none set)",
                          kiln_backend_names());
        goto out_fail;
    }
    pthread_mutex_unlock(&reg->mu);
    uint64_t estimate = kiln__repo_dir_bytes(vdir);
    pthread_mutex_lock(&reg->mu);
    st = kiln__registry_make_room_locked(reg, m, estimate, 0, victims, &n_victims, err);
    if (st != KILN_OK)
        goto out_fail_evicted;
    reg->host_reserved += estimate;
    pthread_mutex_unlock(&reg->mu);

    kiln__registry_finish_evictions(reg, victims, n_victims, m);
    n_victims = 0;
    uint64_t t0 = kiln_clock_now_ns();
    kiln_load_args args = {m->name, mdir, vdir, m->version, m->config, reg->opt.device};
    kiln_instances inst;
    uint64_t host = 0, device = 0;
    st = load_all(reg, m->backend, &args, &inst, err);
    if (st == KILN_RESOURCE_EXHAUSTED && wants_gpu(m->config)) {
        /* device memory ran out (cudaMalloc failed): unpinned models on the device go, and
         * the load is tried once more */
        pthread_mutex_lock(&reg->mu);
        n_victims = kiln__registry_evict_device_locked(reg, m, -1, victims);
        pthread_mutex_unlock(&reg->mu);
        if (n_victims) {
            KILN_LOGW(&(kiln_log_ctx){.model = m->name},
                      "version %" PRId64 " ran out of memory at load (%s); evicting %zu unpinned "
                      "model%s holding device memory and trying once more",
                      m->version, err ? err->msg : "", n_victims, n_victims == 1 ? "" : "s");
            kiln__registry_finish_evictions(reg, victims, n_victims, m);
            n_victims = 0;
            st = load_all(reg, m->backend, &args, &inst, err);
        }
    }
    if (st == KILN_OK && m->config->n_warmups) {
        st = kiln__registry_warmup(m->backend, inst.bm, inst.n, m->name, mdir, m->config, err);
        if (st != KILN_OK)
            unload_all(m->backend, &inst);
    }
    if (st != KILN_OK && (wants_gpu(m->config) || m->backend->foreign_code)) {
        /* the load ran model code on a GPU (the load check, the samples): a fault there has
         * left the GPU unusable for every model, and must be known */
        char who[KILN_MODEL_NAME_MAX + 64];
        snprintf(who, sizeof(who), "loading model '%s' version %" PRId64, m->name, m->version);
        kiln__registry_probe_gpus(reg, who);
    }
    /* after the samples, which may have grown the instances (plans, arenas) */
    uint64_t inst_host[KILN_MAX_INSTANCES], inst_device[KILN_MAX_INSTANCES];
    if (st == KILN_OK)
        instances_memory(m->backend, &inst, inst_host, inst_device, &host, &device);
    uint64_t took = kiln_clock_now_ns() - t0;

    pthread_mutex_lock(&reg->mu);
    reg->host_reserved -= estimate;
    if (st != KILN_OK)
        goto out_fail;
    /* the real footprint may be larger than the files: make room again, or give up */
    st = kiln__registry_make_room_locked(reg, m, host, device, victims, &n_victims, err);
    if (st != KILN_OK) {
        pthread_mutex_unlock(&reg->mu);
        unload_all(m->backend, &inst);
        pthread_mutex_lock(&reg->mu);
        goto out_fail_evicted;
    }
    /* count the bytes in the same critical section as the check that admitted them */
    m->host_bytes = host;
    m->device_bytes = device;
    memcpy(m->inst_host, inst_host, inst.n * sizeof(inst_host[0]));
    memcpy(m->inst_device, inst_device, inst.n * sizeof(inst_device[0]));
    m->counted = true;
    reg->host_used += host;
    reg->device_used += device;
    pthread_mutex_unlock(&reg->mu);
    kiln__registry_finish_evictions(reg, victims, n_victims, m);
    pthread_mutex_lock(&reg->mu);
    m->inst = inst;
    m->load_ns = took;
    m->loaded_at_ns = now(reg);
    atomic_store(&m->last_used_ns, m->loaded_at_ns);
    m->lru_seq = ++reg->seq;
    m->reason[0] = '\0';
    m->error = KILN_OK;
    atomic_store(&m->state, KILN_MODEL_READY);
    reg->loads++;
    pthread_cond_broadcast(&reg->cond);
    KILN_LOGI(&(kiln_log_ctx){.model = m->name},
              "loaded version %" PRId64 " in %.1f ms (%" PRIu64 " host bytes, %" PRIu64
              " device bytes)",
              m->version, (double)took / 1e6, host, device);
    return KILN_OK;

out_fail_evicted:
    /* victims chosen before the failure are already UNLOADING: finish them */
    pthread_mutex_unlock(&reg->mu);
    kiln__registry_finish_evictions(reg, victims, n_victims, m);
    pthread_mutex_lock(&reg->mu);
out_fail:
    snprintf(m->reason, sizeof(m->reason), "%s", err ? err->msg : kiln_status_name(st));
    m->error = st;
    m->failed_gen = m->load_gen;
    kiln_model_config_free(m->config);
    m->config = NULL;
    atomic_store(&m->state, KILN_MODEL_UNAVAILABLE);
    reg->load_failures++;
    pthread_cond_broadcast(&reg->cond);
    KILN_LOGW(&(kiln_log_ctx){.model = m->name}, "loading version %" PRId64 " failed: %s",
              m->version, m->reason);
    return st;
}

/* Picks the version to serve: `version` if the policy serves it, else the highest served. */
static kiln_status resolve(kiln_registry *reg, const char *name, int64_t version,
                           const kiln_model_config *cfg, int64_t *out, kiln_err *err)
{
    int64_t *served;
    size_t n;
    kiln_status st = kiln__repo_served_versions(reg->repo, name, cfg, &served, &n, err);
    if (st != KILN_OK)
        return st;
    bool ok = false;
    if (version == 0 && n > 0) {
        *out = served[n - 1];
        ok = true;
    }
    for (size_t i = 0; version && i < n; i++)
        if (served[i] == version) {
            *out = version;
            ok = true;
        }
    char list[128] = "";
    size_t len = 0;
    for (size_t i = 0; !ok && i < n && len < sizeof(list) - 24; i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%" PRId64, i ? ", " : "",
                                served[i]);
    kiln_free(served);
    if (ok)
        return KILN_OK;
    if (version)
        return kiln_err_set(err, KILN_NOT_FOUND,
                            "model '%s' has no version %" PRId64 " to serve (versions served: %s)",
                            name, version, n ? list : "none");
    return kiln_err_set(err, KILN_NOT_FOUND, "model '%s' has no version directory to serve", name);
}

kiln_status kiln_registry_get_or_load(kiln_registry *reg, const char *name, int64_t version,
                                      kiln_model **out, kiln_err *err)
{
    *out = NULL;
    kiln_status st = kiln__repo_check_name(name, err);
    if (st != KILN_OK)
        return st;
    if (version < 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "model version %" PRId64 " is negative",
                            version);
    if (kiln_registry_acquire(reg, name, version, out, NULL) == KILN_OK)
        return KILN_OK;

    /* slow path: the repository decides what exists */
    kiln_model_config *cfg;
    if ((st = kiln__repo_read_config(reg->repo, name, &cfg, err)) != KILN_OK)
        return st;
    int64_t v = 0;
    if ((st = resolve(reg, name, version, cfg, &v, err)) != KILN_OK) {
        kiln_model_config_free(cfg);
        return st;
    }

    pthread_mutex_lock(&reg->mu);
    kiln_model *m = find_locked(reg, name, v);
    if (!m && (st = add_locked(reg, name, v, &m, err)) != KILN_OK)
        goto out_unlock;
    for (;;) {
        kiln_model_state s = state_of(m);
        const char *lost = s == KILN_MODEL_READY ? kiln__model_lost_locked(reg, m) : NULL;
        if (lost) {
            st = kiln_err_set(err, KILN_UNAVAILABLE,
                              "model '%s' version %" PRId64 " is not ready (%s)", m->name,
                              m->version, lost);
            goto out_unlock;
        }
        if (s == KILN_MODEL_READY) {
            pin_locked(m);
            *out = m;
            st = KILN_OK;
            goto out_unlock;
        }
        if (s == KILN_MODEL_UNAVAILABLE)
            break;
        /* LOADING: share that load's outcome. UNLOADING: wait, then load again. */
        uint64_t gen = m->load_gen;
        bool was_loading = s == KILN_MODEL_LOADING;
        while (state_of(m) == s && m->load_gen == gen)
            pthread_cond_wait(&reg->cond, &reg->mu);
        /* share the load's error only if that very load failed (not a later eviction) */
        if (was_loading && state_of(m) == KILN_MODEL_UNAVAILABLE && m->load_gen == gen &&
            m->failed_gen == gen) {
            st = kiln_err_set(err, m->error ? m->error : KILN_UNAVAILABLE, "%s", m->reason);
            goto out_unlock;
        }
    }
    /* this thread loads it; the others wait on LOADING */
    m->config = cfg;
    cfg = NULL;
    m->load_gen++;
    atomic_store(&m->state, KILN_MODEL_LOADING);
    st = load_locked(reg, m, err);
    const char *lost = st == KILN_OK ? kiln__model_lost_locked(reg, m) : NULL;
    if (lost) /* its GPU was lost while it loaded */
        st = kiln_err_set(err, KILN_UNAVAILABLE, "model '%s' version %" PRId64 " is not ready (%s)",
                          m->name, m->version, lost);
    else if (st == KILN_OK) {
        pin_locked(m);
        *out = m;
    }
out_unlock:
    pthread_mutex_unlock(&reg->mu);
    kiln_model_config_free(cfg);
    return st;
}

kiln_status kiln_registry_acquire(kiln_registry *reg, const char *name, int64_t version,
                                  kiln_model **out, kiln_err *err)
{
    *out = NULL;
    pthread_mutex_lock(&reg->mu);
    kiln_model *m = find_locked(reg, name, version);
    const char *lost = m ? kiln__model_lost_locked(reg, m) : NULL;
    if (m && state_of(m) == KILN_MODEL_READY && !lost) {
        pin_locked(m);
        pthread_mutex_unlock(&reg->mu);
        *out = m;
        return KILN_OK;
    }
    if (!m && version == 0) {
        /* no READY version: report the newest record of any state */
        for (size_t i = 0; i < reg->n; i++)
            if (strcmp(reg->models[i]->name, name) == 0 &&
                (!m || reg->models[i]->version > m->version))
                m = reg->models[i];
    }
    kiln_model_state s = m && !lost ? state_of(m) : KILN_MODEL_UNAVAILABLE;
    char reason[KILN_ERR_MSG_MAX] = "";
    if (m)
        snprintf(reason, sizeof(reason), "%s", lost ? lost : m->reason);
    pthread_mutex_unlock(&reg->mu);
    if (!err)
        return KILN_UNAVAILABLE;
    /* failure path only: the repository tells "unknown" from "not loaded" */
    kiln_model_config *cfg;
    if (kiln__repo_check_name(name, err) != KILN_OK)
        return KILN_INVALID_ARGUMENT;
    if (!m && kiln__repo_read_config(reg->repo, name, &cfg, NULL) != KILN_OK)
        return kiln_err_set(err, KILN_NOT_FOUND, "model '%s' is not in the repository", name);
    if (!m && version) {
        int64_t resolved;
        kiln_status rs = resolve(reg, name, version, cfg, &resolved, err);
        kiln_model_config_free(cfg);
        if (rs != KILN_OK)
            return rs; /* NOT_FOUND: the repository does not serve that version */
    } else if (!m) {
        kiln_model_config_free(cfg);
    }
    char ver[32] = "";
    if (version)
        snprintf(ver, sizeof(ver), " version %" PRId64, version);
    return kiln_err_set(err, KILN_UNAVAILABLE, "model '%s'%s is not ready (%s%s%s)", name, ver,
                        kiln_model_state_name(s), reason[0] ? ": " : "",
                        reason[0] ? reason : (m ? "" : ": not loaded"));
}

void kiln_model_release(kiln_model *m)
{
    if (!m)
        return;
    kiln_registry *reg = m->reg;
    atomic_store_explicit(&m->last_used_ns, now(reg), memory_order_relaxed);
    uint_fast32_t old = atomic_fetch_sub(&m->pins, 1);
    assert(old > 0 && "kiln_model_release without a pin");
    if (old == 1 && state_of(m) == KILN_MODEL_UNLOADING) {
        /* an unloader may be waiting for the last pin: wake it under the mutex */
        pthread_mutex_lock(&reg->mu);
        pthread_cond_broadcast(&reg->cond);
        pthread_mutex_unlock(&reg->mu);
    }
}

kiln_status kiln_registry_load(kiln_registry *reg, const char *name, kiln_err *err)
{
    kiln_status st = kiln__repo_check_name(name, err);
    if (st != KILN_OK)
        return st;
    kiln_model_config *cfg;
    if ((st = kiln__repo_read_config(reg->repo, name, &cfg, err)) != KILN_OK)
        return st;
    int64_t *served;
    size_t n;
    st = kiln__repo_served_versions(reg->repo, name, cfg, &served, &n, err);
    kiln_model_config_free(cfg);
    if (st != KILN_OK)
        return st;
    if (n == 0)
        st =
            kiln_err_set(err, KILN_NOT_FOUND, "model '%s' has no version directory to serve", name);
    for (size_t i = 0; i < n && st == KILN_OK; i++) {
        kiln_model *m;
        st = kiln_registry_get_or_load(reg, name, served[i], &m, err);
        kiln_model_release(m);
    }
    kiln_free(served);
    return st;
}

/* Unloads models already marked UNLOADING once their pins are gone. REQUIRES: mu; drops it
 * around backend unloads. */
static void unload_marked_locked(kiln_registry *reg, kiln_model **list, size_t n,
                                 const char *reason)
{
    for (size_t i = 0; i < n; i++) {
        kiln_model *m = list[i];
        while (atomic_load(&m->pins) > 0)
            pthread_cond_wait(&reg->cond, &reg->mu);
        kiln_instances gone = m->inst;
        kiln_model_config *cfg = m->config;
        m->config = NULL;
        pthread_mutex_unlock(&reg->mu);
        unload_all(m->backend, &gone);
        kiln_model_config_free(cfg);
        KILN_LOGI(&(kiln_log_ctx){.model = m->name}, "unloaded version %" PRId64 " (%s)",
                  m->version, reason);
        pthread_mutex_lock(&reg->mu);
        /* its instances stayed listed (not used) until now, as an eviction's do, so that an
         * execution out of device memory sees that memory on its way back (execute.c) */
        m->inst.n = 0;
        uncount_locked(reg, m);
        snprintf(m->reason, sizeof(m->reason), "%s", reason);
        m->error = KILN_UNAVAILABLE;
        atomic_store(&m->state, KILN_MODEL_UNAVAILABLE);
        reg->unloads++;
        pthread_cond_broadcast(&reg->cond);
    }
}

kiln_status kiln_registry_unload(kiln_registry *reg, const char *name, kiln_err *err)
{
    pthread_mutex_lock(&reg->mu);
    /* let loads in progress finish first, then take every READY version */
    for (size_t i = 0; i < reg->n; i++) {
        kiln_model *m = reg->models[i];
        if (strcmp(m->name, name) != 0)
            continue;
        while (state_of(m) == KILN_MODEL_LOADING)
            pthread_cond_wait(&reg->cond, &reg->mu);
    }
    size_t n = 0;
    kiln_model **list = kiln_calloc(reg->n ? reg->n : 1, sizeof(*list));
    if (!list) {
        pthread_mutex_unlock(&reg->mu);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory unloading '%s'", name);
    }
    for (size_t i = 0; i < reg->n; i++) {
        kiln_model *m = reg->models[i];
        if (strcmp(m->name, name) == 0 && state_of(m) == KILN_MODEL_READY) {
            atomic_store(&m->state, KILN_MODEL_UNLOADING); /* new acquires fail from now on */
            list[n++] = m;
        }
    }
    if (n)
        unload_marked_locked(reg, list, n, "unloaded");
    pthread_mutex_unlock(&reg->mu);
    kiln_free(list);
    if (!n)
        return kiln_err_set(err, KILN_NOT_FOUND, "model '%s' is not loaded", name);
    return KILN_OK;
}

size_t kiln_registry_sweep(kiln_registry *reg)
{
    if (!reg->opt.idle_ttl_ns)
        return 0;
    pthread_mutex_lock(&reg->mu);
    uint64_t t = now(reg);
    size_t n = 0;
    kiln_model **list = kiln_calloc(reg->n ? reg->n : 1, sizeof(*list));
    for (size_t i = 0; list && i < reg->n; i++) {
        kiln_model *m = reg->models[i];
        /* pins first, then the stamp: release stamps before it drops its pin */
        if (state_of(m) != KILN_MODEL_READY || atomic_load(&m->pins) != 0)
            continue;
        uint64_t last = atomic_load(&m->last_used_ns);
        if (t > last && t - last > reg->opt.idle_ttl_ns) {
            atomic_store(&m->state, KILN_MODEL_UNLOADING);
            list[n++] = m;
        }
    }
    char reason[96];
    snprintf(reason, sizeof(reason), "unloaded after %" PRIu64 " ms idle",
             reg->opt.idle_ttl_ns / KILN_NS_PER_MS);
    if (n)
        unload_marked_locked(reg, list, n, reason);
    pthread_mutex_unlock(&reg->mu);
    kiln_free(list);
    return n;
}

static void status_locked(const kiln_model *m, kiln_model_status *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->name, sizeof(o->name), "%s", m->name);
    o->version = m->version;
    const char *lost = kiln__model_lost_locked(m->reg, m);
    o->state = lost ? KILN_MODEL_UNAVAILABLE : state_of(m);
    snprintf(o->reason, sizeof(o->reason), "%s", lost ? lost : m->reason);
    o->pins = (uint32_t)atomic_load(&m->pins);
    o->host_bytes = m->host_bytes;
    o->device_bytes = m->device_bytes;
    o->stats.load_ns = m->load_ns;
    o->stats.loaded_at_ns = m->loaded_at_ns;
    o->stats.last_used_ns = atomic_load(&m->last_used_ns);
    o->stats.inference_count = atomic_load(&m->inference_count);
    o->stats.execution_count = atomic_load(&m->execution_count);
    o->stats.success_count = atomic_load(&m->success_count);
    o->stats.failure_count = atomic_load(&m->failure_count);
    o->stats.queue_ns = atomic_load(&m->queue_ns);
    o->stats.compute_ns = atomic_load(&m->compute_ns);
    o->stats.request_success = atomic_load(&m->request_success);
    o->stats.request_failure = atomic_load(&m->request_failure);
    o->stats.copied_in_bytes = atomic_load(&m->copied_in);
    o->stats.copied_out_bytes = atomic_load(&m->copied_out);
    kiln__hist_read(&m->request_hist, &o->stats.request_hist);
    kiln__hist_read(&m->queue_hist, &o->stats.queue_hist);
    kiln__hist_read(&m->compute_hist, &o->stats.compute_hist);
    kiln__hist_read(&m->input_hist, &o->stats.input_hist);
    kiln__hist_read(&m->infer_hist, &o->stats.infer_hist);
    kiln__hist_read(&m->output_hist, &o->stats.output_hist);
}

static int cmp_status(const void *a, const void *b)
{
    const kiln_model_status *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->version < y->version ? -1 : x->version > y->version);
}

kiln_status kiln_registry_index(kiln_registry *reg, kiln_model_status **out, size_t *n,
                                kiln_err *err)
{
    *out = NULL;
    *n = 0;
    char **names;
    size_t n_names;
    kiln_status st = kiln__repo_list(reg->repo, &names, &n_names, err);
    if (st != KILN_OK)
        return st;
    pthread_mutex_lock(&reg->mu);
    size_t cap = reg->n + n_names;
    kiln_model_status *v = kiln_calloc(cap ? cap : 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; v && i < reg->n; i++)
        status_locked(reg->models[i], &v[k++]);
    for (size_t i = 0; v && i < n_names; i++) {
        bool known = false;
        for (size_t j = 0; j < reg->n && !known; j++)
            known = strcmp(reg->models[j]->name, names[i]) == 0;
        if (known)
            continue;
        snprintf(v[k].name, sizeof(v[k].name), "%s", names[i]);
        v[k].state = KILN_MODEL_UNAVAILABLE;
        snprintf(v[k].reason, sizeof(v[k].reason), "not loaded");
        k++;
    }
    pthread_mutex_unlock(&reg->mu);
    kiln__repo_free_names(names, n_names);
    if (!v)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for the index");
    qsort(v, k, sizeof(*v), cmp_status);
    *out = v;
    *n = k;
    return KILN_OK;
}

kiln_status kiln_registry_status(kiln_registry *reg, const char *name, int64_t version,
                                 kiln_model_status *out, kiln_err *err)
{
    pthread_mutex_lock(&reg->mu);
    kiln_model *best = NULL;
    for (size_t i = 0; i < reg->n; i++) {
        kiln_model *m = reg->models[i];
        if (strcmp(m->name, name) == 0 &&
            (version ? m->version == version : !best || m->version > best->version))
            best = m;
    }
    if (best)
        status_locked(best, out);
    pthread_mutex_unlock(&reg->mu);
    if (!best)
        return kiln_err_set(err, KILN_NOT_FOUND, "model '%s' has no record in the registry", name);
    return KILN_OK;
}

kiln_status kiln_registry_batch_stats(kiln_registry *reg, const char *name, int64_t version,
                                      uint64_t *counts, uint64_t *ns, kiln_err *err)
{
    pthread_mutex_lock(&reg->mu);
    kiln_model *found = NULL;
    for (size_t i = 0; i < reg->n && !found; i++)
        if (strcmp(reg->models[i]->name, name) == 0 && reg->models[i]->version == version)
            found = reg->models[i];
    for (size_t b = 0; found && b < KILN_BATCH_STATS; b++) {
        counts[b] = atomic_load(&found->batch_count[b]);
        ns[b] = atomic_load(&found->batch_ns[b]);
    }
    pthread_mutex_unlock(&reg->mu);
    if (!found)
        return kiln_err_set(err, KILN_NOT_FOUND, "model '%s' version %" PRId64 " has no record",
                            name, version);
    return KILN_OK;
}

void kiln_registry_get_stats(kiln_registry *reg, kiln_registry_stats *out)
{
    pthread_mutex_lock(&reg->mu);
    out->host_bytes = reg->host_used;
    out->device_bytes = reg->device_used;
    out->evictions = reg->evictions;
    out->loads = reg->loads;
    out->load_failures = reg->load_failures;
    out->unloads = reg->unloads;
    pthread_mutex_unlock(&reg->mu);
}

const char *kiln_model_name(const kiln_model *m)
{
    return m->name;
}

int64_t kiln_model_version(const kiln_model *m)
{
    return m->version;
}

const kiln_model_config *kiln_model_get_config(const kiln_model *m)
{
    return m->config;
}

const kiln_backend *kiln_model_backend(const kiln_model *m)
{
    return m->backend;
}

kiln_backend_model *kiln_model_backend_model(const kiln_model *m)
{
    return m->inst.n ? m->inst.bm[0] : NULL;
}

uint32_t kiln_model_instance_count(const kiln_model *m)
{
    return m->inst.n;
}

kiln_backend_model *kiln_model_instance(const kiln_model *m, uint32_t i)
{
    return i < m->inst.n ? m->inst.bm[i] : NULL;
}
