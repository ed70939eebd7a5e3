/*
 * tests/unit/backends/test_onnx_gpu.c: the ONNX backend on a GPU (backends/onnx/gpu.cu). Every
 * test skips on a machine without a visible CUDA device (CI); on the device machine they run
 * from the bundle (make bundle; docs/gpu.md):
 *   - every fixture on the GPU matches the CPU path within 1e-4 relative L2 (FP32) at several
 *     batch sizes, each shape three times (trace, capture, replay), and within 1e-2 with TF32
 *     and with FP16;
 *   - FP16 precision computes on FP16 values (an input beyond FP16's range overflows there);
 *   - CUDA graphs on and off give the same bytes;
 *   - inputs and outputs in device memory (CUDA shared memory's case) match host ones;
 *   - device memory is counted as device bytes, and a planned run's cuDNN workspaces are in the
 *     plan's arena (the context keeps only cuBLAS's);
 *   - an execution that runs out of device memory evicts the unpinned models on the GPU and runs
 *     once more (and a load does the same);
 *   - execution from a sandboxed thread records no violation;
 *   - a KIND_GPU instance group naming a GPU that does not exist is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/onnx/gpu.h"
#include "backends/onnx/onnx.h"
#include "backends/onnx/onnx_int.h"
#include "backends/onnx/runtime_int.h"
#include "common/alloc.h"
#include "common/log.h"
#include "registry/registry.h"
#include "sandbox/sandbox.h"
#include "tensor/cuda_mem.h"
#include "tests/support.h"

static bool have_gpu(void)
{
    int n = 0;
    kiln_err e;
    return kiln_cuda_device_count(&n, &e) == KILN_OK && n > 0;
}

#define NEED_GPU()                                                                                 \
    do {                                                                                           \
        if (!have_gpu())                                                                           \
            skip();                                                                                \
    } while (0)

static const kiln_backend *onnx(void)
{
    return kiln_backend_find("onnx");
}

typedef struct loaded {
    kiln_model_config *config;
    kiln_backend_model *model;
} loaded;

/* Loads sub/name on dev; `extra` (may be NULL) is appended to its config.pbtxt. */
static kiln_status try_load(loaded *l, const char *sub, const char *name, kiln_device dev,
                            const char *extra, kiln_err *e)
{
    char dir[1024], vdir[1100], path[1200];
    snprintf(dir, sizeof(dir), "%s/%s/%s", kiln_test_build_dir(), sub, name);
    snprintf(vdir, sizeof(vdir), "%s/1", dir);
    snprintf(path, sizeof(path), "%s/config.pbtxt", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof(text) - 1024, f);
    fclose(f);
    text[n] = '\0';
    if (extra)
        snprintf(text + n, sizeof(text) - n, "\n%s\n", extra);
    kiln_err pe;
    assert_ok(kiln_model_config_parse(text, strlen(text), path, &l->config, &pe), &pe);
    kiln_load_args a = {name, dir, vdir, 1, l->config, dev};
    kiln_status st = onnx()->load(&a, &l->model, e);
    if (st != KILN_OK)
        kiln_model_config_free(l->config);
    return st;
}

static void load(loaded *l, const char *sub, const char *name, kiln_device dev, const char *extra)
{
    kiln_err e;
    assert_ok(try_load(l, sub, name, dev, extra, &e), &e);
}

static void unload(loaded *l)
{
    onnx()->unload(l->model);
    kiln_model_config_free(l->config);
}

static const kiln_device cpu = {KILN_DEVICE_CPU, 0}, gpu0 = {KILN_DEVICE_CUDA, 0};

/* Host inputs for `rows` filled from `seed`. */
static void make_inputs(const kiln_model_config *c, int64_t rows, float seed, kiln_tensor *in)
{
    kiln_err e;
    assert_true(c->n_inputs <= 4);
    for (size_t k = 0; k < c->n_inputs; k++) {
        kiln_shape s = {.rank = 0};
        if (c->max_batch_size > 0)
            s.dims[s.rank++] = rows;
        for (int d = 0; d < c->inputs[k].dims.rank; d++)
            s.dims[s.rank++] = c->inputs[k].dims.dims[d];
        assert_ok(kiln_tensor_alloc(KILN_DTYPE_FP32, &s, 0, &in[k], &e), &e);
        float *p = in[k].data;
        for (size_t i = 0; i < in[k].byte_size / 4; i++)
            p[i] = seed + (float)((i * 37 + k * 11) % 101) / 50.f - 1.f;
    }
}

/* A device copy of host tensor h. */
static void to_device(const kiln_tensor *h, kiln_tensor *d)
{
    kiln_err e;
    kiln_storage *s = NULL;
    assert_ok(kiln_storage_create_cuda(0, h->byte_size, &s, &e), &e);
    assert_ok(kiln_tensor_view(s, 0, h->dtype, &h->shape, h->byte_size, d, &e), &e);
    kiln_storage_unref(s);
    assert_ok(kiln__cuda_copy(d->data, h->data, h->byte_size, &e), &e);
}

/* Runs `rows` on l; output 0 returned on the host. With `device_io`, the inputs are device
 * copies and the output is written into a device buffer, then copied back. */
static kiln_tensor run(loaded *l, int64_t rows, float seed, bool device_io)
{
    const kiln_model_config *c = l->config;
    kiln_tensor in[4] = {{0}}, din[4] = {{0}};
    make_inputs(c, rows, seed, in);
    kiln_err e;
    kiln_storage *obuf = NULL;
    kiln_output_slot out = {.index = 0};
    if (device_io) {
        for (size_t k = 0; k < c->n_inputs; k++)
            to_device(&in[k], &din[k]);
        assert_ok(kiln_storage_create_cuda(0, 1 << 20, &obuf, &e), &e);
        out.buffer = obuf;
        out.capacity = 1 << 20;
    }
    kiln_batch b = {.batch_size = c->max_batch_size > 0 ? (uint32_t)rows : 0,
                    .n_inputs = (uint32_t)c->n_inputs,
                    .inputs = device_io ? din : in,
                    .n_outputs = 1,
                    .outputs = &out};
    assert_ok(onnx()->execute(l->model, &b, &e), &e);
    kiln_tensor r = out.result;
    if (device_io) {
        assert_int_equal(r.device.kind, KILN_DEVICE_CUDA);
        kiln_tensor h;
        assert_ok(kiln_tensor_alloc(r.dtype, &r.shape, r.byte_size, &h, &e), &e);
        assert_ok(kiln__cuda_copy(h.data, r.data, r.byte_size, &e), &e);
        kiln_tensor_fini(&r);
        r = h;
    }
    assert_int_equal(r.device.kind, KILN_DEVICE_CPU);
    for (size_t k = 0; k < c->n_inputs; k++) {
        kiln_tensor_fini(&in[k]);
        kiln_tensor_fini(&din[k]);
    }
    kiln_storage_unref(obuf);
    return r;
}

static double rel_l2(const kiln_tensor *a, const kiln_tensor *b)
{
    assert_true(kiln_shape_equal(&a->shape, &b->shape));
    const float *x = a->data, *y = b->data;
    double num = 0, den = 0;
    for (size_t i = 0; i < a->byte_size / 4; i++) {
        num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        den += (double)y[i] * y[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static const char *fixtures[][2] = {
    {"torch-models", "mlp"},         {"torch-models", "lenet"},
    {"torch-models", "resnet"},      {"torch-models", "mobilenet"},
    {"torch-models", "transformer"}, {"torch-models", "transformer_op13"},
    {"models", "mlp_onnx"},
};

/* Each fixture on the GPU against the CPU path: batch 1, 3 (three times: trace, capture,
 * replay) and the config's max. */
static void compare(const char *extra, double tol)
{
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        loaded c, g;
        load(&c, fixtures[f][0], fixtures[f][1], cpu, NULL);
        load(&g, fixtures[f][0], fixtures[f][1], gpu0, extra);
        int64_t max = c.config->max_batch_size > 0 ? c.config->max_batch_size : 1;
        int64_t rows[] = {1, 3, 3, 3, max};
        for (size_t i = 0; i < 5; i++) {
            kiln_tensor want = run(&c, rows[i], 0.25f * (float)i, false);
            kiln_tensor got = run(&g, rows[i], 0.25f * (float)i, false);
            double err = rel_l2(&got, &want);
            print_message("%s batch %lld: relative L2 %.3g\n", fixtures[f][1], (long long)rows[i],
                          err);
            if (!(err <= tol))
                fail_msg("%s batch %lld: relative L2 %g over %g", fixtures[f][1],
                         (long long)rows[i], err, tol);
            kiln_tensor_fini(&want);
            kiln_tensor_fini(&got);
        }
        unload(&c);
        unload(&g);
    }
}

static void fixtures_match_cpu_fp32(void **state)
{
    (void)state;
    NEED_GPU();
    compare(NULL, 1e-4);
}

/* The same with the GEMMs' bias and ReLU in cuBLASLt's epilogue (config parameter cublaslt):
 * mlp's Gemm + Relu, mlp_onnx's transB Gemm and folded MatMul bias, the transformers' folded
 * Linear biases; in FP32, and in FP16 against the 1e-2 of FP16. */
static void fixtures_match_cpu_cublaslt(void **state)
{
    (void)state;
    NEED_GPU();
    const char *lt = "parameters { key: \"cublaslt\" value { string_value: \"true\" } }";
    compare(lt, 1e-4);
    compare("parameters { key: \"cublaslt\" value { string_value: \"true\" } }\n"
            "parameters { key: \"precision\" value { string_value: \"fp16\" } }",
            1e-2);
    /* and the GEMMs did go through cuBLASLt (it declines quietly), graphs captured with it */
    const char *names[] = {"mlp", "transformer"};
    for (int i = 0; i < 2; i++) {
        loaded g;
        load(&g, "torch-models", names[i], gpu0, lt);
        uint64_t at_load = kiln__onnx_gpu_lt_runs(g.model->gpu);
        for (int rep = 0; rep < 3; rep++) { /* trace, capture, replay */
            kiln_tensor r = run(&g, 3, 0.f, false);
            kiln_tensor_fini(&r);
        }
        uint64_t after = kiln__onnx_gpu_lt_runs(g.model->gpu);
        print_message("%s: %llu GEMMs through cuBLASLt at load, %llu after\n", names[i],
                      (unsigned long long)at_load, (unsigned long long)after);
        assert_true(at_load > 0);
        assert_true(after > at_load); /* the traced run and the capture used it */
        unload(&g);
    }
}

static void fixtures_match_cpu_tf32(void **state)
{
    (void)state;
    NEED_GPU();
    compare("parameters { key: \"precision\" value { string_value: \"tf32\" } }", 1e-2);
}

#define FP16_PARAM "parameters { key: \"precision\" value { string_value: \"fp16\" } }"

static void fixtures_match_cpu_fp16(void **state)
{
    (void)state;
    NEED_GPU();
    compare(FP16_PARAM, 1e-2);
}

static bool all_finite(const kiln_tensor *t)
{
    const float *x = t->data;
    for (size_t i = 0; i < t->byte_size / 4; i++)
        if (!isfinite(x[i]))
            return false;
    return true;
}

/* FP16 precision computes on FP16 values, not FP32 ones: inputs near 1e6 (FP16's largest finite
 * value is 65504) overflow there, and the output is far from FP32's (FP32 arithmetic on FP16
 * weights would stay close); ordinary inputs give results close to FP32's but not the same
 * bytes. The output is FP32, as the config says. */
static void fp16_keeps_values_in_fp16(void **state)
{
    (void)state;
    NEED_GPU();
    loaded h, f;
    load(&h, "torch-models", "mlp", gpu0, FP16_PARAM);
    load(&f, "torch-models", "mlp", gpu0, NULL);
    for (int dev = 0; dev < 2; dev++) {
        kiln_tensor big16 = run(&h, 4, 1e6f, dev), big32 = run(&f, 4, 1e6f, dev);
        assert_int_equal(big16.dtype, KILN_DTYPE_FP32);
        assert_true(all_finite(&big32));
        /* overflowed to infinities, then NaNs that the ReLUs turn to 0: far from FP32's */
        double far = rel_l2(&big16, &big32);
        print_message("inputs near 1e6: FP16 against FP32, relative L2 %g\n", far);
        assert_true(far > 0.1); /* FP32 arithmetic: about 1e-3 */
        kiln_tensor a = run(&h, 4, 0.f, dev), b = run(&f, 4, 0.f, dev);
        assert_true(rel_l2(&a, &b) <= 1e-2);
        assert_true(a.byte_size == b.byte_size && memcmp(a.data, b.data, a.byte_size) != 0);
        kiln_tensor_fini(&big16);
        kiln_tensor_fini(&big32);
        kiln_tensor_fini(&a);
        kiln_tensor_fini(&b);
    }
    unload(&h);
    unload(&f);
}

/* Graph replays run the same kernels as the steps: the same bytes. */
static void graphs_on_and_off_agree(void **state)
{
    (void)state;
    NEED_GPU();
    loaded on, off;
    load(&on, "torch-models", "resnet", gpu0, NULL);
    load(&off, "torch-models", "resnet", gpu0,
         "parameters { key: \"cuda_graphs\" value { string_value: \"false\" } }");
    for (int i = 0; i < 3; i++) {
        kiln_tensor a = run(&on, 2, 0.5f * (float)i, false),
                    b = run(&off, 2, 0.5f * (float)i, false);
        assert_int_equal(a.byte_size, b.byte_size);
        assert_memory_equal(a.data, b.data, a.byte_size);
        kiln_tensor_fini(&a);
        kiln_tensor_fini(&b);
    }
    unload(&on);
    unload(&off);
}

/* Inputs in device memory and an output into a device buffer (CUDA shared memory's case). */
static void device_inputs_and_outputs(void **state)
{
    (void)state;
    NEED_GPU();
    const char *extra[] = {
        NULL, "parameters { key: \"cuda_graphs\" value { string_value: \"false\" } }", FP16_PARAM};
    for (int x = 0; x < 3; x++) {
        loaded g;
        load(&g, "torch-models", "lenet", gpu0, extra[x]);
        for (int i = 0; i < 3; i++) {
            kiln_tensor a = run(&g, 2, 0.1f * (float)i, false),
                        b = run(&g, 2, 0.1f * (float)i, true);
            assert_int_equal(a.byte_size, b.byte_size);
            assert_memory_equal(a.data, b.data, a.byte_size);
            kiln_tensor_fini(&a);
            kiln_tensor_fini(&b);
        }
        unload(&g);
    }
}

static void device_bytes_are_counted(void **state)
{
    (void)state;
    NEED_GPU();
    loaded c, g;
    load(&c, "torch-models", "resnet", cpu, NULL);
    load(&g, "torch-models", "resnet", gpu0, NULL);
    uint64_t ch = 0, cd = 0, gh = 0, gd = 0;
    onnx()->memory(c.model, &ch, &cd);
    onnx()->memory(g.model, &gh, &gd);
    assert_int_equal(cd, 0);
    assert_true(gd > 0);
    assert_true(gh < ch); /* the arena is on the device */
    unload(&c);
    unload(&g);
}

typedef struct sandbox_run {
    loaded *l;
    kiln_sandbox_report report;
    kiln_status st;
    char msg[KILN_ERR_MSG_MAX];
} sandbox_run;

static void *sandboxed(void *arg)
{
    sandbox_run *r = arg;
    kiln_err e;
    r->st = kiln_sandbox_enter(NULL, &e);
    if (r->st == KILN_OK)
        r->st = kiln_sandbox_begin(0, &e);
    if (r->st != KILN_OK) {
        snprintf(r->msg, sizeof(r->msg), "%s", e.msg);
        return NULL;
    }
    const kiln_model_config *c = r->l->config;
    for (int64_t rows = 1; r->st == KILN_OK && rows <= 5; rows += 2) {
        kiln_tensor in[4] = {{0}};
        make_inputs(c, rows, 0.f, in);
        kiln_output_slot out = {.index = 0};
        kiln_batch b = {.batch_size = (uint32_t)rows,
                        .n_inputs = (uint32_t)c->n_inputs,
                        .inputs = in,
                        .n_outputs = 1,
                        .outputs = &out};
        for (int rep = 0; r->st == KILN_OK && rep < 3; rep++) { /* trace, capture, replay */
            r->st = onnx()->execute(r->l->model, &b, &e);
            kiln_tensor_fini(&out.result);
        }
        if (r->st != KILN_OK)
            snprintf(r->msg, sizeof(r->msg), "%s", e.msg);
        for (size_t k = 0; k < c->n_inputs; k++)
            kiln_tensor_fini(&in[k]);
    }
    kiln_sandbox_end(&r->report);
    return NULL;
}

/* The execution threads stay sandboxed on the GPU path: new shapes (algorithm search, graph
 * capture) and replays record no violation. */
static void runs_in_the_sandbox(void **state)
{
    (void)state;
    NEED_GPU();
    const char *names[] = {"resnet", "transformer"};
    for (int i = 0; i < 2; i++) {
        loaded g;
        load(&g, "torch-models", names[i], gpu0, NULL);
        sandbox_run r = {.l = &g};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, sandboxed, &r), 0);
        pthread_join(t, NULL);
        if (r.st != KILN_OK)
            fail_msg("%s: %s", names[i], r.msg);
        for (uint32_t k = 0; k < r.report.n_recorded; k++)
            print_message("%s: forbidden syscall %s\n", names[i], r.report.names[k]);
        assert_int_equal(r.report.violations, 0);
        unload(&g);
    }
}

typedef struct sandbox_load {
    kiln_sandbox_report report;
    kiln_status st;
    char msg[KILN_ERR_MSG_MAX];
} sandbox_load;

static void *load_sandboxed(void *arg)
{
    sandbox_load *r = arg;
    kiln_err e;
    loaded g;
    r->st = kiln_sandbox_enter(NULL, &e);
    if (r->st == KILN_OK)
        r->st = kiln_sandbox_begin(0, &e);
    if (r->st == KILN_OK) {
        r->st = try_load(&g, "torch-models", "resnet", gpu0, NULL, &e);
        if (r->st == KILN_OK)
            unload(&g);
        kiln_sandbox_end(&r->report);
    }
    if (r->st != KILN_OK)
        snprintf(r->msg, sizeof(r->msg), "%s", e.msg);
    return NULL;
}

/* The server loads models on its control thread, which is sandboxed too: a GPU model loads
 * there (handles, streams, pinned memory, the warm-up) once the CUDA context exists. */
static void loads_in_the_sandbox(void **state)
{
    (void)state;
    NEED_GPU();
    sandbox_load r;
    memset(&r, 0, sizeof(r));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, load_sandboxed, &r), 0);
    pthread_join(t, NULL);
    for (uint32_t k = 0; k < r.report.n_recorded; k++)
        print_message("forbidden syscall %s\n", r.report.names[k]);
    if (r.st != KILN_OK)
        fail_msg("%s", r.msg);
    assert_int_equal(r.report.violations, 0);
}

/* Writes <repo>/<name>: the resnet fixture on KIND_GPU (its model.onnx linked). */
static void gpu_model_dir(const char *repo, const char *name)
{
    char dir[1200], path[1300], src[1200];
    snprintf(dir, sizeof(dir), "%s/%s/1", repo, name);
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(src, sizeof(src), "%s/torch-models/resnet/1/model.onnx", kiln_test_build_dir());
    snprintf(path, sizeof(path), "%s/model.onnx", dir);
    assert_int_equal(symlink(src, path), 0);
    snprintf(path, sizeof(path), "%s/%s/config.pbtxt", repo, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "name: \"%s\"\nbackend: \"onnx\"\nmax_batch_size: 8\n"
            "input [ { name: \"INPUT\" data_type: TYPE_FP32 dims: [ 3, 16, 16 ] } ]\n"
            "output [ { name: \"OUTPUT\" data_type: TYPE_FP32 dims: [ 10 ] } ]\n"
            "instance_group [ { kind: KIND_GPU } ]\n",
            name);
    fclose(f);
}

/* Takes device memory in shrinking chunks until none is left. OUT: the chunks and their sizes,
 * smallest last. */
typedef struct chunk {
    void *p;
    size_t bytes;
} chunk;

static chunk *fill_device(size_t *n)
{
    size_t cap = 1 << 16;
    chunk *c = calloc(cap + 1, sizeof(*c));
    *n = 0;
    for (size_t bytes = (size_t)1 << 30; bytes >= ((size_t)1 << 18); bytes /= 4) {
        kiln_err e;
        while (*n < cap && kiln__cuda_alloc(0, bytes, &c[*n].p, &e) == KILN_OK)
            c[(*n)++].bytes = bytes;
    }
    return c;
}

/* A registry over a new repository (repo: a mkdtemp template) of two GPU models, a and b,
 * with a loaded and unpinned. */
static kiln_registry *two_gpu_models(char *repo)
{
    assert_non_null(mkdtemp(repo));
    gpu_model_dir(repo, "a");
    gpu_model_dir(repo, "b");
    kiln_registry_options o = {.repository = repo};
    kiln_registry *reg;
    kiln_err e;
    assert_ok(kiln_registry_create(&o, &reg, &e), &e);
    kiln_model *a;
    assert_ok(kiln_registry_get_or_load(reg, "a", 1, &a, &e), &e);
    kiln_model_release(a);
    return reg;
}

/* Checks that model a of reg was evicted for b, then frees reg and removes repo. */
static void evicted_then_gone(kiln_registry *reg, const char *repo)
{
    kiln_model_status sa;
    kiln_err e;
    assert_ok(kiln_registry_status(reg, "a", 1, &sa, &e), &e);
    print_message("a: %s\n", sa.reason);
    assert_int_equal(sa.state, KILN_MODEL_UNAVAILABLE);
    assert_non_null(strstr(sa.reason, "evicted to make room for 'b'"));
    kiln_registry_destroy(reg);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", repo);
    assert_int_equal(system(cmd), 0);
}

/*
 * A load that runs out of device memory evicts the unpinned models on the device and tries
 * once more: with the GPU filled but for half of model a's footprint, loading b (the same
 * model) fails, a is evicted, and b loads.
 */
static void device_oom_at_load_evicts_and_retries(void **state)
{
    (void)state;
    NEED_GPU();
    if (getenv("KILN_GPU_NO_OOM")) /* compute-sanitizer counts the deliberate OOMs as errors */
        skip();
    char repo[] = "/tmp/kiln-gpu-oom-XXXXXX";
    kiln_registry *reg = two_gpu_models(repo);
    kiln_err e;
    kiln_model *m;
    kiln_model_status sa;
    assert_ok(kiln_registry_status(reg, "a", 1, &sa, &e), &e);
    assert_true(sa.device_bytes > 0);
    size_t n;
    chunk *chunks = fill_device(&n);
    uint64_t filled = 0, freed = 0;
    for (size_t i = 0; i < n; i++)
        filled += chunks[i].bytes;
    /* give back the smallest chunks until half of a's footprint is free */
    while (n > 0 && freed + chunks[n - 1].bytes <= sa.device_bytes / 2) {
        n--;
        kiln__cuda_free(0, chunks[n].p);
        freed += chunks[n].bytes;
    }
    print_message("a holds %llu device bytes; filled %llu, gave back %llu\n",
                  (unsigned long long)sa.device_bytes, (unsigned long long)filled,
                  (unsigned long long)freed);
    kiln_status st = kiln_registry_get_or_load(reg, "b", 1, &m, &e);
    for (size_t i = 0; i < n; i++)
        kiln__cuda_free(0, chunks[i].p);
    free(chunks);
    if (st != KILN_OK)
        fail_msg("b: %s", e.msg);
    kiln_model_release(m);
    evicted_then_gone(reg, repo);
}

/*
 * An execution that runs out of device memory evicts the unpinned models holding memory on its
 * GPU and runs once more: with the GPU full, b's first batch of a new size (an unplanned run,
 * which allocates each value) fails, a is evicted, and the batch runs.
 */
static void device_oom_at_execute_evicts_and_retries(void **state)
{
    (void)state;
    NEED_GPU();
    if (getenv("KILN_GPU_NO_OOM"))
        skip();
    char repo[] = "/tmp/kiln-gpu-xoom-XXXXXX";
    kiln_registry *reg = two_gpu_models(repo);
    kiln_err e;
    kiln_model *b;
    assert_ok(kiln_registry_get_or_load(reg, "b", 1, &b, &e), &e);
    size_t n;
    chunk *chunks = fill_device(&n);
    const kiln_model_config *c = kiln_model_get_config(b);
    kiln_tensor in[4] = {{0}};
    make_inputs(c, 5, 0.f, in); /* warm-up ran 1 and 8: 5 is new */
    kiln_output_slot out = {.index = 0};
    kiln_batch batch = {.batch_size = 5,
                        .n_inputs = (uint32_t)c->n_inputs,
                        .inputs = in,
                        .n_outputs = 1,
                        .outputs = &out};
    kiln_status st = kiln_model_execute(b, 0, &batch, NULL, NULL, &e);
    for (size_t i = 0; i < n; i++)
        kiln__cuda_free(0, chunks[i].p);
    free(chunks);
    if (st != KILN_OK)
        fail_msg("b at batch 5: %s", e.msg);
    assert_int_equal(batch.fault, KILN_FAULT_NONE);
    kiln_tensor_fini(&out.result);
    for (size_t k = 0; k < c->n_inputs; k++)
        kiln_tensor_fini(&in[k]);
    kiln_model_release(b);
    evicted_then_gone(reg, repo);
}

/* A planned run's convolutions take their cuDNN workspaces from the plan's arena: after the
 * warm-up and after each run of a new shape (trace, capture, replay), the GPU context holds
 * cuBLAS's fixed workspace only, and the results match the CPU's. */
static void workspaces_are_in_the_arena(void **state)
{
    (void)state;
    NEED_GPU();
    loaded g, c;
    load(&g, "torch-models", "resnet", gpu0, NULL);
    load(&c, "torch-models", "resnet", cpu, NULL);
    kiln_backend_model *m = g.model;
    assert_int_equal(kiln__onnx_gpu_bytes(m->gpu), KILN_ONNX_BLAS_WS_BYTES);
    kiln_tensor want = run(&c, 3, 0.f, false);
    for (int rep = 0; rep < 3; rep++) {
        kiln_tensor r = run(&g, 3, 0.f, false);
        assert_true(rel_l2(&r, &want) <= 1e-4);
        kiln_tensor_fini(&r);
        assert_int_equal(kiln__onnx_gpu_bytes(m->gpu), KILN_ONNX_BLAS_WS_BYTES);
    }
    kiln_tensor_fini(&want);
    unload(&c);
    uint64_t ws = 0, steps = 0;
    for (size_t i = 0; i < m->n_plans; i++)
        for (size_t k = 0; k < m->n_steps; k++) {
            ws += m->plans[i].ws_bytes[k];
            steps += m->plans[i].ws_bytes[k] > 0;
        }
    print_message("resnet: %zu plans, %llu convolution steps with a workspace (%llu bytes in all), "
                  "arena %llu bytes\n",
                  m->n_plans, (unsigned long long)steps, (unsigned long long)ws,
                  (unsigned long long)kiln_storage_size(m->arena));
    assert_true(m->n_plans >= 3);
    unload(&g);
}

/* Runs op's kernel for `device` (a CUDA one on a device copy of in[0], the other inputs on
 * the host as the kernel reads them); returns output 0 on the host. */
static kiln_tensor run_kernel(const char *op, kiln_device_kind device, kiln_onnx_gpu *g,
                              const kiln_tensor **in, size_t n_in, kiln_onnx_attr *attrs,
                              size_t n_attrs)
{
    int32_t outs[1] = {0};
    char opname[32], name[] = "n1", domain[] = "";
    snprintf(opname, sizeof(opname), "%s", op);
    kiln_onnx_node n = {.name = name,
                        .op = opname,
                        .domain = domain,
                        .n_outputs = 1,
                        .outputs = outs,
                        .n_attrs = n_attrs,
                        .attrs = attrs};
    const kiln_onnx_kernel *k = kiln__onnx_kernel_find(op, device);
    assert_non_null(k);
    kiln_tensor d = {0}, out = {0};
    const kiln_tensor *args[5];
    for (size_t i = 0; i < n_in; i++)
        args[i] = in[i];
    if (device == KILN_DEVICE_CUDA) {
        to_device(in[0], &d);
        args[0] = &d;
    }
    kiln_onnx_call c = {.node = &n,
                        .opset = 17,
                        .n_in = n_in,
                        .in = args,
                        .n_out = 1,
                        .out = &out,
                        .gpu = device == KILN_DEVICE_CUDA ? g : NULL};
    kiln_err e;
    assert_ok(k->fn(&c, &e), &e);
    kiln_tensor h = out;
    if (device == KILN_DEVICE_CUDA) {
        assert_ok(kiln_tensor_alloc(out.dtype, &out.shape, out.byte_size, &h, &e), &e);
        assert_ok(kiln__cuda_copy(h.data, out.data, out.byte_size, &e), &e);
        kiln_tensor_fini(&out);
    }
    kiln_tensor_fini(&d);
    return h;
}

static kiln_tensor ints(const int64_t *v, size_t n)
{
    kiln_shape s = {.rank = 1, .dims = {(int64_t)n}};
    kiln_tensor t;
    kiln_err e;
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_INT64, &s, 0, &t, &e), &e);
    memcpy(t.data, v, n * sizeof(int64_t));
    return t;
}

/* The data-movement kernels (Slice with negative steps and clamped bounds, Expand, Transpose)
 * give the CPU kernels' bytes, for 1-, 2-, 4- and 8-byte elements. */
static void data_movement_matches_cpu(void **state)
{
    (void)state;
    NEED_GPU();
    kiln_onnx_gpu *g;
    kiln_err e;
    assert_ok(kiln__onnx_gpu_open(0, KILN_ONNX_FP32, false, &g, &e), &e);
    const kiln_dtype dts[] = {KILN_DTYPE_UINT8, KILN_DTYPE_FP16, KILN_DTYPE_FP32, KILN_DTYPE_INT64};
    for (size_t t = 0; t < 4; t++) {
        kiln_shape xs = {.rank = 3, .dims = {4, 5, 6}};
        kiln_tensor x;
        assert_ok(kiln_tensor_alloc(dts[t], &xs, 0, &x, &e), &e);
        for (size_t i = 0; i < x.byte_size; i++)
            ((unsigned char *)x.data)[i] = (unsigned char)(i * 7 + 3);
        /* Slice: axis 2 backwards by 2 from the end, axis 0 from 1 to past the end */
        int64_t st[] = {-1, 1}, en[] = {-100, 100}, ax[] = {2, 0}, sp[] = {-2, 1};
        kiln_tensor a = ints(st, 2), b = ints(en, 2), c = ints(ax, 2), d = ints(sp, 2);
        const kiln_tensor *sin[] = {&x, &a, &b, &c, &d};
        kiln_tensor want = run_kernel("Slice", KILN_DEVICE_CPU, g, sin, 5, NULL, 0);
        kiln_tensor got = run_kernel("Slice", KILN_DEVICE_CUDA, g, sin, 5, NULL, 0);
        assert_true(kiln_shape_equal(&want.shape, &got.shape));
        assert_memory_equal(want.data, got.data, want.byte_size);
        kiln_tensor_fini(&want);
        kiln_tensor_fini(&got);
        /* Expand [4,5,6] to [2,4,5,6]: a new leading dim read with stride 0 */
        int64_t shape[] = {2, 4, 5, 6};
        kiln_tensor sh = ints(shape, 4);
        const kiln_tensor *ein[] = {&x, &sh};
        want = run_kernel("Expand", KILN_DEVICE_CPU, g, ein, 2, NULL, 0);
        got = run_kernel("Expand", KILN_DEVICE_CUDA, g, ein, 2, NULL, 0);
        assert_true(kiln_shape_equal(&want.shape, &got.shape));
        assert_memory_equal(want.data, got.data, want.byte_size);
        kiln_tensor_fini(&want);
        kiln_tensor_fini(&got);
        /* Transpose with perm [2,0,1] */
        int64_t perm[] = {2, 0, 1};
        kiln_onnx_attr pa = {
            .name = (char *)"perm", .type = KILN_ONNX_ATTR_INTS, .n = 3, .ints = perm};
        const kiln_tensor *tin[] = {&x};
        want = run_kernel("Transpose", KILN_DEVICE_CPU, g, tin, 1, &pa, 1);
        got = run_kernel("Transpose", KILN_DEVICE_CUDA, g, tin, 1, &pa, 1);
        assert_true(kiln_shape_equal(&want.shape, &got.shape));
        assert_memory_equal(want.data, got.data, want.byte_size);
        kiln_tensor_fini(&want);
        kiln_tensor_fini(&got);
        kiln_tensor_fini(&a), kiln_tensor_fini(&b), kiln_tensor_fini(&c), kiln_tensor_fini(&d);
        kiln_tensor_fini(&sh);
        kiln_tensor_fini(&x);
    }
    kiln__onnx_gpu_close(g);
}

static void bad_parameters_are_refused(void **state)
{
    (void)state;
    NEED_GPU();
    loaded g;
    kiln_err e;
    assert_int_equal(try_load(&g, "torch-models", "mlp", gpu0,
                              "parameters { key: \"precision\" value { string_value: \"fp8\" } }",
                              &e),
                     KILN_INVALID_ARGUMENT);
    assert_non_null(strstr(e.msg, "precision"));
    assert_int_equal(try_load(&g, "torch-models", "mlp", gpu0,
                              "parameters { key: \"cublaslt\" value { string_value: \"yes\" } }",
                              &e),
                     KILN_INVALID_ARGUMENT);
    assert_non_null(strstr(e.msg, "parameter cublaslt is 'yes'; it must be true or false"));
    assert_int_equal(
        try_load(&g, "torch-models", "mlp", (kiln_device){KILN_DEVICE_CUDA, 4096}, NULL, &e),
        KILN_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "4096"));
}

int main(void)
{
    kiln_log_set_level(KILN_LOG_WARN);
    int gpus = 0;
    kiln_err e;
    (void)kiln_cuda_prepare(&gpus, &e); /* first, as the server does (the JIT cache off) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixtures_match_cpu_fp32),
        cmocka_unit_test(fixtures_match_cpu_tf32),
        cmocka_unit_test(fixtures_match_cpu_cublaslt),
        cmocka_unit_test(fixtures_match_cpu_fp16),
        cmocka_unit_test(fp16_keeps_values_in_fp16),
        cmocka_unit_test(graphs_on_and_off_agree),
        cmocka_unit_test(device_inputs_and_outputs),
        cmocka_unit_test(device_bytes_are_counted),
        cmocka_unit_test(runs_in_the_sandbox),
        cmocka_unit_test(bad_parameters_are_refused),
        cmocka_unit_test(loads_in_the_sandbox),
        cmocka_unit_test(data_movement_matches_cpu),
        cmocka_unit_test(device_oom_at_load_evicts_and_retries),
        cmocka_unit_test(device_oom_at_execute_evicts_and_retries),
        cmocka_unit_test(workspaces_are_in_the_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
