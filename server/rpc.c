/*
 * server/rpc.c: the unary RPCs other than inference: liveness, readiness, metadata, config,
 * statistics, repository control, shared-memory registration.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "proto/grpc_service.pb-c.h"
#include "proto/textformat.h"
#include "server/server_int.h"

#define UNPACK(c, payload, type, desc, var)                                                        \
    type *var;                                                                                     \
    {                                                                                              \
        ProtobufCMessage *m_;                                                                      \
        kiln_err e_;                                                                               \
        if (kiln__unpack((payload), &(desc), &m_, &e_) != KILN_OK) {                               \
            kiln__reply_err((c), KILN_INVALID_ARGUMENT, &e_);                                      \
            return;                                                                                \
        }                                                                                          \
        var = (type *)m_;                                                                          \
    }

static kiln_registry *reg_of(kiln_call *c)
{
    return kiln_engine_registry(c->srv->engine);
}

/* Pins name/version for a metadata-style RPC. */
static kiln_status pin(kiln_call *c, const char *name, const char *version, kiln_model **m,
                       kiln_err *err)
{
    int64_t v;
    kiln_status st = kiln_version_parse(version, "version", &v, err);
    if (st != KILN_OK)
        return st;
    if (!name || !name[0])
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "name: a model name is required");
    return kiln_registry_acquire(reg_of(c), name, v, m, err);
}

static void server_live(kiln_call *c, grpc_byte_buffer *payload)
{
    (void)payload;
    Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    r.live = !atomic_load(&c->srv->shutting_down) && !kiln__server_gpu_lost(c->srv);
    kiln__reply_msg(c, &r.base);
}

static void server_ready(kiln_call *c, grpc_byte_buffer *payload)
{
    (void)payload;
    Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
    r.ready = kiln__server_serving(c->srv);
    kiln__reply_msg(c, &r.base);
}

static void model_ready(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__ModelReadyRequest, inference__model_ready_request__descriptor,
           req);
    kiln_model *m;
    kiln_err e;
    kiln_status st = pin(c, req->name, req->version, &m, &e);
    kiln_textformat_free(&req->base);
    if (st != KILN_OK && st != KILN_UNAVAILABLE) {
        kiln__reply_err(c, st, &e);
        return;
    }
    Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
    r.ready = st == KILN_OK;
    kiln_model_release(m);
    kiln__reply_msg(c, &r.base);
}

static void server_metadata(kiln_call *c, grpc_byte_buffer *payload)
{
    (void)payload;
    static char *ext[] = {"model_repository", "model_configuration", "system_shared_memory",
                          "statistics"};
    Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    r.name = "kiln";
    r.version = (char *)(c->srv->opt.version ? c->srv->opt.version : "0");
    r.n_extensions = sizeof(ext) / sizeof(ext[0]);
    r.extensions = ext;
    kiln__reply_msg(c, &r.base);
}

static void fill_tensor_meta(const kiln_model_io *io, int32_t max_batch,
                             Inference__ModelMetadataResponse__TensorMetadata *t, int64_t *dims)
{
    inference__model_metadata_response__tensor_metadata__init(t);
    t->name = io->name;
    t->datatype = (char *)kiln_dtype_name(io->dtype);
    size_t n = 0;
    if (max_batch > 0)
        dims[n++] = -1;
    for (int i = 0; i < io->dims.rank; i++)
        dims[n++] = io->dims.dims[i];
    t->n_shape = n;
    t->shape = dims;
}

static void model_metadata(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__ModelMetadataRequest,
           inference__model_metadata_request__descriptor, req);
    kiln_model *m;
    kiln_err e;
    kiln_status st = pin(c, req->name, req->version, &m, &e);
    kiln_textformat_free(&req->base);
    if (st != KILN_OK) {
        kiln__reply_err(c, st, &e);
        return;
    }
    const kiln_model_config *cfg = kiln_model_get_config(m);
    size_t n = cfg->n_inputs + cfg->n_outputs;
    Inference__ModelMetadataResponse__TensorMetadata *tm = kiln_calloc(n ? n : 1, sizeof(*tm));
    Inference__ModelMetadataResponse__TensorMetadata **tp = kiln_calloc(n ? n : 1, sizeof(*tp));
    int64_t(*dims)[KILN_MAX_RANK + 1] = kiln_calloc(n ? n : 1, sizeof(*dims));
    if (!tm || !tp || !dims) {
        kiln_free(tm), kiln_free(tp), kiln_free(dims);
        kiln_model_release(m);
        kiln__reply(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const kiln_model_io *io =
            i < cfg->n_inputs ? &cfg->inputs[i] : &cfg->outputs[i - cfg->n_inputs];
        fill_tensor_meta(io, cfg->max_batch_size, &tm[i], dims[i]);
        tp[i] = &tm[i];
    }
    char version[32];
    snprintf(version, sizeof(version), "%" PRId64, kiln_model_version(m));
    char *versions[] = {version};
    Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    r.name = (char *)kiln_model_name(m);
    r.n_versions = 1;
    r.versions = versions;
    r.platform = cfg->platform[0] ? cfg->platform : cfg->backend;
    r.n_inputs = cfg->n_inputs;
    r.inputs = tp;
    r.n_outputs = cfg->n_outputs;
    r.outputs = tp + cfg->n_inputs;
    kiln__reply_msg(c, &r.base);
    kiln_free(tm), kiln_free(tp), kiln_free(dims);
    kiln_model_release(m);
}

static void model_config(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__ModelConfigRequest, inference__model_config_request__descriptor,
           req);
    kiln_model *m;
    kiln_err e;
    kiln_status st = pin(c, req->name, req->version, &m, &e);
    kiln_textformat_free(&req->base);
    if (st != KILN_OK) {
        kiln__reply_err(c, st, &e);
        return;
    }
    /* ModelConfigResponse { ModelConfig config = 1; }: the packed config behind its field tag */
    const kiln_model_config *cfg = kiln_model_get_config(m);
    uint8_t hdr[16];
    size_t h = 0;
    hdr[h++] = 0x0a;
    for (uint64_t v = cfg->packed_len;; v >>= 7) {
        hdr[h++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80)
            break;
    }
    grpc_slice s = grpc_slice_malloc(h + cfg->packed_len);
    memcpy(GRPC_SLICE_START_PTR(s), hdr, h);
    memcpy(GRPC_SLICE_START_PTR(s) + h, cfg->packed, cfg->packed_len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    kiln_model_release(m);
    kiln__reply(c, GRPC_STATUS_OK, NULL, bb);
}

static void model_statistics(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__ModelStatisticsRequest,
           inference__model_statistics_request__descriptor, req);
    kiln_err e;
    int64_t v;
    kiln_status st = kiln_version_parse(req->version, "version", &v, &e);
    kiln_model_status *all = NULL;
    size_t n = 0;
    if (st == KILN_OK)
        st = kiln_registry_index(reg_of(c), &all, &n, &e);
    if (st != KILN_OK) {
        kiln_textformat_free(&req->base);
        kiln__reply_err(c, st, &e);
        return;
    }
    Inference__ModelStatistics *ms = kiln_calloc(n ? n : 1, sizeof(*ms));
    Inference__ModelStatistics **mp = kiln_calloc(n ? n : 1, sizeof(*mp));
    Inference__InferStatistics *is = kiln_calloc(n ? n : 1, sizeof(*is));
    Inference__StatisticDuration(*d)[4] = kiln_calloc(n ? n : 1, sizeof(*d));
    char(*vs)[24] = kiln_calloc(n ? n : 1, sizeof(*vs));
    size_t k = 0;
    uint64_t mono = kiln_clock_now_ns(), wall = kiln_clock_wall_ns();
    struct timespec coarse;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &coarse);
    uint64_t coarse_ns = (uint64_t)coarse.tv_sec * KILN_NS_PER_S + (uint64_t)coarse.tv_nsec;
    (void)mono;
    for (size_t i = 0; ms && mp && is && d && vs && i < n; i++) {
        kiln_model_status *s = &all[i];
        if (req->name[0] && strcmp(req->name, s->name) != 0)
            continue;
        if (v && s->version != v)
            continue;
        if (!s->version || (s->state != KILN_MODEL_READY && !s->stats.execution_count))
            continue;
        Inference__ModelStatistics *o = &ms[k];
        inference__model_statistics__init(o);
        inference__infer_statistics__init(&is[k]);
        for (int q = 0; q < 4; q++)
            inference__statistic_duration__init(&d[k][q]);
        snprintf(vs[k], sizeof(vs[k]), "%" PRId64, s->version);
        o->name = s->name;
        o->version = vs[k];
        if (s->stats.execution_count && s->stats.last_used_ns <= coarse_ns)
            o->last_inference = (wall - (coarse_ns - s->stats.last_used_ns)) / KILN_NS_PER_MS;
        o->inference_count = s->stats.success_count;
        o->execution_count = s->stats.execution_count;
        d[k][0].count = s->stats.success_count;
        d[k][0].ns = s->stats.queue_ns + s->stats.compute_ns;
        d[k][1].count = s->stats.failure_count;
        d[k][2].count = s->stats.inference_count;
        d[k][2].ns = s->stats.queue_ns;
        d[k][3].count = s->stats.execution_count;
        d[k][3].ns = s->stats.compute_ns;
        is[k].success = &d[k][0];
        is[k].fail = &d[k][1];
        is[k].queue = &d[k][2];
        is[k].compute_infer = &d[k][3];
        o->inference_stats = &is[k];
        mp[k] = o;
        k++;
    }
    /* executions by batch size */
    Inference__InferBatchStatistics **bs_ptrs = NULL;
    Inference__InferBatchStatistics *bs = NULL;
    Inference__StatisticDuration *bd = NULL;
    size_t n_bs_total = 0;
    uint64_t *counts = kiln_calloc(KILN_BATCH_STATS, sizeof(uint64_t));
    uint64_t *nss = kiln_calloc(KILN_BATCH_STATS, sizeof(uint64_t));
    if (counts && nss && k) {
        bs = kiln_calloc(k * KILN_BATCH_STATS, sizeof(*bs));
        bd = kiln_calloc(k * KILN_BATCH_STATS, sizeof(*bd));
        bs_ptrs = kiln_calloc(k * KILN_BATCH_STATS, sizeof(*bs_ptrs));
    }
    for (size_t m = 0; bs && bd && bs_ptrs && m < k; m++) {
        int64_t ver = strtoll(ms[m].version, NULL, 10);
        if (kiln_registry_batch_stats(reg_of(c), ms[m].name, ver, counts, nss, NULL) != KILN_OK)
            continue;
        size_t first = n_bs_total;
        for (size_t b = 1; b < KILN_BATCH_STATS; b++) {
            if (!counts[b])
                continue;
            Inference__InferBatchStatistics *x = &bs[n_bs_total];
            Inference__StatisticDuration *d2 = &bd[n_bs_total];
            inference__infer_batch_statistics__init(x);
            inference__statistic_duration__init(d2);
            x->batch_size = b;
            d2->count = counts[b];
            d2->ns = nss[b];
            x->compute_infer = d2;
            bs_ptrs[n_bs_total++] = x;
        }
        ms[m].n_batch_stats = n_bs_total - first;
        ms[m].batch_stats = bs_ptrs + first;
    }
    kiln_free(counts);
    kiln_free(nss);
    if (req->name[0] && k == 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "no statistics for model '%.128s'%s%.32s: it is not loaded",
                 req->name, req->version[0] ? " version " : "", req->version);
        kiln__reply(c, GRPC_STATUS_NOT_FOUND, msg, NULL);
    } else {
        Inference__ModelStatisticsResponse r = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
        r.n_model_stats = k;
        r.model_stats = mp;
        kiln__reply_msg(c, &r.base);
    }
    kiln_free(ms), kiln_free(mp), kiln_free(is), kiln_free(d), kiln_free(vs);
    kiln_free(bs), kiln_free(bd), kiln_free(bs_ptrs);
    kiln_free(all);
    kiln_textformat_free(&req->base);
}

static void repository_index(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__RepositoryIndexRequest,
           inference__repository_index_request__descriptor, req);
    kiln_model_status *all;
    size_t n;
    kiln_err e;
    kiln_status st = kiln_registry_index(reg_of(c), &all, &n, &e);
    if (st != KILN_OK) {
        kiln_textformat_free(&req->base);
        kiln__reply_err(c, st, &e);
        return;
    }
    Inference__RepositoryIndexResponse__ModelIndex *mi = kiln_calloc(n ? n : 1, sizeof(*mi));
    Inference__RepositoryIndexResponse__ModelIndex **mp = kiln_calloc(n ? n : 1, sizeof(*mp));
    char(*vs)[24] = kiln_calloc(n ? n : 1, sizeof(*vs));
    size_t k = 0;
    for (size_t i = 0; mi && mp && vs && i < n; i++) {
        if (req->ready && all[i].state != KILN_MODEL_READY)
            continue;
        inference__repository_index_response__model_index__init(&mi[k]);
        mi[k].name = all[i].name;
        if (all[i].version)
            snprintf(vs[k], sizeof(vs[k]), "%" PRId64, all[i].version);
        mi[k].version = vs[k];
        mi[k].state = (char *)kiln_model_state_name(all[i].state);
        mi[k].reason = all[i].reason;
        mp[k] = &mi[k];
        k++;
    }
    Inference__RepositoryIndexResponse r = INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
    r.n_models = k;
    r.models = mp;
    kiln__reply_msg(c, &r.base);
    kiln_free(mi), kiln_free(mp), kiln_free(vs), kiln_free(all);
    kiln_textformat_free(&req->base);
}

/* Repository control runs on an execution thread (model code); the reply comes from there. */
static void control_done(void *ctx, kiln_status st, const kiln_err *err)
{
    kiln_call *c = ctx;
    if (st != KILN_OK) {
        kiln__reply_err(c, st, err);
        return;
    }
    Inference__RepositoryModelLoadResponse r = INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
    kiln__reply_msg(c, &r.base); /* the unload response is the same empty message */
}

static void repository_load(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__RepositoryModelLoadRequest,
           inference__repository_model_load_request__descriptor, req);
    kiln_err e;
    kiln_status st = KILN_OK;
    if (req->n_parameters)
        st = kiln_err_set(&e, KILN_INVALID_ARGUMENT,
                          "parameters: load parameters (config override, files) are not "
                          "supported; put the model in the repository");
    if (st == KILN_OK)
        st = kiln_engine_load(c->srv->engine, req->model_name, control_done, c, &e);
    kiln_textformat_free(&req->base);
    if (st != KILN_OK)
        kiln__reply_err(c, st, &e);
}

static void repository_unload(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__RepositoryModelUnloadRequest,
           inference__repository_model_unload_request__descriptor, req);
    kiln_err e;
    kiln_status st = kiln_engine_unload(c->srv->engine, req->model_name, control_done, c, &e);
    kiln_textformat_free(&req->base);
    if (st != KILN_OK)
        kiln__reply_err(c, st, &e);
}

/* Every registered region of one kind (cuda: CUDA buffers, else system memory), or the one
 * named. OUT: *info (kiln_free it), *n. KILN_NOT_FOUND for a name of the other kind. */
static kiln_status regions_of_kind(kiln_call *c, const char *name, bool cuda, kiln_shm_info **info,
                                   size_t *n, kiln_err *err)
{
    kiln_shm_registry *shm = kiln_engine_shm(c->srv->engine);
    *info = NULL;
    size_t total = 0;
    kiln_status st = kiln_shm_status(shm, name, NULL, 0, &total, err);
    if (st != KILN_OK)
        return st;
    kiln_shm_info *v = kiln_calloc(total ? total : 1, sizeof(*v));
    if (!v)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    kiln_shm_status(shm, name, v, total, &total, NULL);
    size_t k = 0;
    for (size_t i = 0; i < total; i++)
        if ((v[i].cuda_device >= 0) == cuda)
            v[k++] = v[i];
    if (name && name[0] && k == 0) {
        kiln_free(v);
        return kiln_err_set(err, KILN_NOT_FOUND,
                            "%s shared memory region '%.128s' is not registered",
                            cuda ? "CUDA" : "system", name);
    }
    *info = v;
    *n = k;
    return KILN_OK;
}

/* Unregisters the named region of one kind, or every region of that kind for "". An unknown
 * name is not an error (as in Triton). */
static void unregister_kind(kiln_call *c, const char *name, bool cuda)
{
    kiln_shm_info *info;
    size_t n;
    if (regions_of_kind(c, name, cuda, &info, &n, NULL) != KILN_OK)
        return;
    for (size_t i = 0; i < n; i++)
        kiln_shm_unregister(kiln_engine_shm(c->srv->engine), info[i].name, NULL);
    kiln_free(info);
}

static void shm_status(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__SystemSharedMemoryStatusRequest,
           inference__system_shared_memory_status_request__descriptor, req);
    kiln_shm_info *info;
    size_t n = 0;
    kiln_err e;
    kiln_status st = regions_of_kind(c, req->name, false, &info, &n, &e);
    if (st != KILN_OK) {
        kiln_textformat_free(&req->base);
        kiln__reply_err(c, st, &e);
        return;
    }
    Inference__SystemSharedMemoryStatusResponse__RegionStatus *rs =
        kiln_calloc(n ? n : 1, sizeof(*rs));
    Inference__SystemSharedMemoryStatusResponse__RegionsEntry *re =
        kiln_calloc(n ? n : 1, sizeof(*re));
    Inference__SystemSharedMemoryStatusResponse__RegionsEntry **rp =
        kiln_calloc(n ? n : 1, sizeof(*rp));
    for (size_t i = 0; rs && re && rp && i < n; i++) {
        inference__system_shared_memory_status_response__region_status__init(&rs[i]);
        inference__system_shared_memory_status_response__regions_entry__init(&re[i]);
        rs[i].name = info[i].name;
        rs[i].key = info[i].key;
        rs[i].offset = info[i].offset;
        rs[i].byte_size = info[i].byte_size;
        re[i].key = info[i].name;
        re[i].value = &rs[i];
        rp[i] = &re[i];
    }
    Inference__SystemSharedMemoryStatusResponse r =
        INFERENCE__SYSTEM_SHARED_MEMORY_STATUS_RESPONSE__INIT;
    r.n_regions = n;
    r.regions = rp;
    kiln__reply_msg(c, &r.base);
    kiln_free(rs), kiln_free(re), kiln_free(rp), kiln_free(info);
    kiln_textformat_free(&req->base);
}

static void shm_register(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__SystemSharedMemoryRegisterRequest,
           inference__system_shared_memory_register_request__descriptor, req);
    kiln_err e;
    kiln_status st = kiln_engine_shm_register(c->srv->engine, req->name, req->key, req->offset,
                                              req->byte_size, &e);
    kiln_textformat_free(&req->base);
    if (st != KILN_OK) {
        kiln__reply_err(c, st, &e);
        return;
    }
    Inference__SystemSharedMemoryRegisterResponse r =
        INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_RESPONSE__INIT;
    kiln__reply_msg(c, &r.base);
}

static void shm_unregister(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__SystemSharedMemoryUnregisterRequest,
           inference__system_shared_memory_unregister_request__descriptor, req);
    unregister_kind(c, req->name, false);
    kiln_textformat_free(&req->base);
    Inference__SystemSharedMemoryUnregisterResponse r =
        INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_RESPONSE__INIT;
    kiln__reply_msg(c, &r.base);
}

static void cuda_register(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__CudaSharedMemoryRegisterRequest,
           inference__cuda_shared_memory_register_request__descriptor, req);
    kiln_err e;
    int n = 0;
    kiln_status st = kiln_cuda_device_count(&n, NULL);
    if (st != KILN_OK || n == 0) {
        kiln_textformat_free(&req->base);
        kiln__reply(c, GRPC_STATUS_UNAVAILABLE,
                    st != KILN_OK ? "CUDA shared memory is unavailable: this server was built "
                                    "without CUDA"
                                  : "CUDA shared memory is unavailable: no CUDA device on this "
                                    "server",
                    NULL);
        return;
    }
    if (req->device_id < 0 || req->device_id > INT32_MAX)
        st = kiln_err_set(&e, KILN_INVALID_ARGUMENT, "device_id %lld is not a device",
                          (long long)req->device_id);
    else
        st = kiln_engine_cuda_shm_register(c->srv->engine, req->name, req->raw_handle.data,
                                           req->raw_handle.len, (int)req->device_id, req->byte_size,
                                           &e);
    kiln_textformat_free(&req->base);
    if (st != KILN_OK) {
        kiln__reply_err(c, st, &e);
        return;
    }
    Inference__CudaSharedMemoryRegisterResponse r =
        INFERENCE__CUDA_SHARED_MEMORY_REGISTER_RESPONSE__INIT;
    kiln__reply_msg(c, &r.base);
}

static void cuda_status(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__CudaSharedMemoryStatusRequest,
           inference__cuda_shared_memory_status_request__descriptor, req);
    kiln_shm_info *info;
    size_t n = 0;
    kiln_err e;
    kiln_status st = regions_of_kind(c, req->name, true, &info, &n, &e);
    kiln_textformat_free(&req->base);
    if (st != KILN_OK) {
        kiln__reply_err(c, st, &e);
        return;
    }
    Inference__CudaSharedMemoryStatusResponse__RegionStatus *rs =
        kiln_calloc(n ? n : 1, sizeof(*rs));
    Inference__CudaSharedMemoryStatusResponse__RegionsEntry *re =
        kiln_calloc(n ? n : 1, sizeof(*re));
    Inference__CudaSharedMemoryStatusResponse__RegionsEntry **rp =
        kiln_calloc(n ? n : 1, sizeof(*rp));
    for (size_t i = 0; rs && re && rp && i < n; i++) {
        inference__cuda_shared_memory_status_response__region_status__init(&rs[i]);
        inference__cuda_shared_memory_status_response__regions_entry__init(&re[i]);
        rs[i].name = info[i].name;
        rs[i].device_id = (uint64_t)info[i].cuda_device;
        rs[i].byte_size = info[i].byte_size;
        re[i].key = info[i].name;
        re[i].value = &rs[i];
        rp[i] = &re[i];
    }
    Inference__CudaSharedMemoryStatusResponse r =
        INFERENCE__CUDA_SHARED_MEMORY_STATUS_RESPONSE__INIT;
    r.n_regions = n;
    r.regions = rp;
    kiln__reply_msg(c, &r.base);
    kiln_free(rs), kiln_free(re), kiln_free(rp), kiln_free(info);
}

static void cuda_unregister(kiln_call *c, grpc_byte_buffer *payload)
{
    UNPACK(c, payload, Inference__CudaSharedMemoryUnregisterRequest,
           inference__cuda_shared_memory_unregister_request__descriptor, req);
    unregister_kind(c, req->name, true);
    kiln_textformat_free(&req->base);
    Inference__CudaSharedMemoryUnregisterResponse r =
        INFERENCE__CUDA_SHARED_MEMORY_UNREGISTER_RESPONSE__INIT;
    kiln__reply_msg(c, &r.base);
}

static void unimplemented(kiln_call *c, grpc_byte_buffer *payload)
{
    (void)payload;
    char msg[200];
    snprintf(msg, sizeof(msg), "%s is not implemented by Kiln (see docs/server.md)",
             c->method->name);
    kiln__reply(c, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
}

void kiln__health_bind(kiln_method *m);
void kiln__infer_bind(kiln_method *m);

void kiln__rpc_bind(kiln_method *m)
{
    static const struct {
        const char *name;
        unary_fn fn;
    } table[] = {
        {"ServerLive", server_live},
        {"ServerReady", server_ready},
        {"ModelReady", model_ready},
        {"ServerMetadata", server_metadata},
        {"ModelMetadata", model_metadata},
        {"ModelConfig", model_config},
        {"ModelStatistics", model_statistics},
        {"RepositoryIndex", repository_index},
        {"RepositoryModelLoad", repository_load},
        {"RepositoryModelUnload", repository_unload},
        {"SystemSharedMemoryStatus", shm_status},
        {"SystemSharedMemoryRegister", shm_register},
        {"SystemSharedMemoryUnregister", shm_unregister},
        {"CudaSharedMemoryStatus", cuda_status},
        {"CudaSharedMemoryRegister", cuda_register},
        {"CudaSharedMemoryUnregister", cuda_unregister},
        {"TraceSetting", unimplemented},
        {"LogSettings", unimplemented},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(table[i].name, m->name) == 0)
            m->unary = table[i].fn;
    kiln__health_bind(m);
    kiln__infer_bind(m);
}
