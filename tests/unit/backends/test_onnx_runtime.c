/*
 * Unit tests: the ONNX backend's runtime (backends/onnx/load.c, runtime.c, optimize.c, plan.c):
 * memory placement, load's rewrites, and planned executions giving the same bytes as the unplanned
 * first one, through the backend interface on committed models.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onnx/onnx.h"
#include "backends/onnx/onnx_int.h"
#include "common/alloc.h"
#include "common/log.h"
#include "tests/support.h"

/* ---------------------------------------------------------------- placement */

static bool overlap_in_time(const kiln_onnx_buf *a, const kiln_onnx_buf *b)
{
    return a->first <= b->last && b->first <= a->last;
}

static bool overlap_in_space(const kiln_onnx_buf *a, const kiln_onnx_buf *b)
{
    return a->offset < b->offset + b->bytes && b->offset < a->offset + a->bytes;
}

static void place_checks(kiln_onnx_buf *b, size_t n, uint64_t arena)
{
    uint64_t sum = 0, live_max = 0;
    for (size_t i = 0; i < n; i++) {
        sum += b[i].bytes;
        assert_int_equal(b[i].offset % KILN_ONNX_ALIGN, 0);
        assert_true(b[i].offset + b[i].bytes <= arena);
        for (size_t j = 0; j < i; j++)
            if (overlap_in_time(&b[i], &b[j]))
                assert_false(overlap_in_space(&b[i], &b[j]));
    }
    for (int32_t step = 0; step < 64; step++) { /* the arena holds at least the live set */
        uint64_t live = 0;
        for (size_t i = 0; i < n; i++)
            live += b[i].first <= step && step <= b[i].last ? b[i].bytes : 0;
        live_max = live > live_max ? live : live_max;
    }
    assert_true(arena >= live_max);
    assert_true(arena <= sum + n * KILN_ONNX_ALIGN);
}

static void chain_reuses_two_buffers(void **state)
{
    (void)state;
    /* a chain: value i made at step i, read at step i+1: two buffers suffice */
    kiln_onnx_buf b[10];
    for (int i = 0; i < 10; i++)
        b[i] = (kiln_onnx_buf){.bytes = 1024, .first = i, .last = i + 1};
    uint64_t arena;
    kiln_err e;
    assert_ok(kiln__onnx_place(b, 10, &arena, &e), &e);
    place_checks(b, 10, arena);
    assert_int_equal(arena, 2048);
}

static void random_lifetimes_never_collide(void **state)
{
    (void)state;
    unsigned seed = 7;
    for (int round = 0; round < 200; round++) {
        kiln_onnx_buf b[40];
        size_t n = 1 + (size_t)(rand_r(&seed) % 40);
        for (size_t i = 0; i < n; i++) {
            int32_t first = rand_r(&seed) % 50;
            b[i] = (kiln_onnx_buf){.bytes = 1 + (uint64_t)(rand_r(&seed) % 5000),
                                   .first = first,
                                   .last = first + rand_r(&seed) % 10};
        }
        uint64_t arena;
        kiln_err e;
        assert_ok(kiln__onnx_place(b, n, &arena, &e), &e);
        place_checks(b, n, arena);
    }
    uint64_t arena = 1;
    kiln_err e;
    assert_ok(kiln__onnx_place(NULL, 0, &arena, &e), &e);
    assert_int_equal(arena, 0);
}

/* ---------------------------------------------------------------- through the backend */

typedef struct loaded {
    kiln_model_config *config;
    kiln_backend_model *model;
} loaded;

static const kiln_backend *onnx(void)
{
    return kiln_backend_find("onnx");
}

static void load(loaded *l, const char *sub, const char *name)
{
    char dir[1024], vdir[1100];
    snprintf(dir, sizeof(dir), "%s/%s/%s", kiln_test_build_dir(), sub, name);
    snprintf(vdir, sizeof(vdir), "%s/1", dir);
    l->config = kiln_test_model_config(sub, name);
    kiln_load_args a = {name, dir, vdir, 1, l->config, {KILN_DEVICE_CPU, 0}};
    kiln_err e;
    assert_ok(onnx()->load(&a, &l->model, &e), &e);
}

static void unload(loaded *l)
{
    onnx()->unload(l->model);
    kiln_model_config_free(l->config);
}

/* Inputs for `rows` filled from `seed` (at most 4 inputs). */
static void make_inputs(const kiln_model_config *c, int64_t rows, float seed, kiln_tensor *in)
{
    kiln_err e;
    assert_true(c->n_inputs <= 4);
    for (size_t k = 0; k < c->n_inputs; k++) {
        kiln_shape s = {.rank = 1, .dims = {rows}};
        for (int d = 0; d < c->inputs[k].dims.rank; d++)
            s.dims[s.rank++] = c->inputs[k].dims.dims[d];
        assert_ok(kiln_tensor_alloc(KILN_DTYPE_FP32, &s, 0, &in[k], &e), &e);
        float *p = in[k].data;
        for (size_t i = 0; i < in[k].byte_size / 4; i++)
            p[i] = seed + (float)((i * 37 + k * 11) % 101) / 50.f - 1.f;
    }
}

/* Runs batch `rows` on inputs filled from `seed`; returns output 0 (the caller finalizes). */
static kiln_tensor run(loaded *l, int64_t rows, float seed)
{
    const kiln_model_config *c = l->config;
    kiln_tensor in[4] = {{0}};
    make_inputs(c, rows, seed, in);
    kiln_output_slot out = {.index = 0};
    kiln_batch b = {.batch_size = (uint32_t)rows,
                    .n_inputs = (uint32_t)c->n_inputs,
                    .inputs = in,
                    .n_outputs = 1,
                    .outputs = &out};
    kiln_err e;
    assert_ok(onnx()->execute(l->model, &b, &e), &e);
    for (size_t k = 0; k < c->n_inputs; k++)
        kiln_tensor_fini(&in[k]);
    return out.result;
}

static void assert_same(const kiln_tensor *a, const kiln_tensor *b)
{
    assert_true(kiln_shape_equal(&a->shape, &b->shape));
    assert_int_equal(a->byte_size, b->byte_size);
    assert_memory_equal(a->data, b->data, a->byte_size);
}

/* The first run per shape is unplanned (batch 3 here: the load check planned 1 and the
 * config's max); later ones use its plan and must give the same bytes. */
static void check_plans(const char *sub, const char *name, kiln_onnx_stats *st)
{
    loaded l;
    load(&l, sub, name);
    kiln_onnx_stats_get(l.model, st);
    uint64_t host0, dev0; /* right after load (what the registry records), the arena counts */
    onnx()->memory(l.model, &host0, &dev0);
    assert_true(st->arena_bytes > 0);
    assert_true(host0 >= st->const_bytes + st->arena_bytes);
    /* the load check ran batch 1 and max_batch_size */
    assert_int_equal(st->n_plans, l.config->max_batch_size > 1 ? 2 : 1);
    kiln_tensor first1 = run(&l, 1, 0.f), first3 = run(&l, 3, 0.5f);
    kiln_onnx_stats_get(l.model, st);
    assert_int_equal(st->n_plans, l.config->max_batch_size > 1 ? 3 : 2);
    for (int i = 0; i < 3; i++) {
        kiln_tensor again1 = run(&l, 1, 0.f), again3 = run(&l, 3, 0.5f);
        assert_same(&first1, &again1);
        assert_same(&first3, &again3);
        kiln_tensor_fini(&again1);
        kiln_tensor_fini(&again3);
    }
    /* a planned run's other inputs give other outputs (nothing stale from the plan) */
    kiln_tensor other = run(&l, 1, 0.25f);
    assert_true(memcmp(other.data, first1.data, first1.byte_size) != 0);
    kiln_onnx_stats_get(l.model, st);
    assert_int_equal(st->n_plans, l.config->max_batch_size > 1 ? 3 : 2);
    assert_true(st->last_plan_arena <= st->last_plan_sum + 64 * st->n_steps);
    assert_true(st->arena_bytes >= st->last_plan_arena);
    uint64_t host, dev;
    onnx()->memory(l.model, &host, &dev);
    assert_true(host >= st->const_bytes + st->arena_bytes);
    assert_int_equal(dev, 0);
    kiln_tensor_fini(&other);
    kiln_tensor_fini(&first1);
    kiln_tensor_fini(&first3);
    unload(&l);
}

static void mlp_fuses_and_plans(void **state)
{
    (void)state;
    kiln_onnx_stats st;
    kiln_test_log_capture();
    kiln_log_set_level(KILN_LOG_INFO);
    check_plans("models", "mlp_onnx", &st);
    const char *log = kiln_test_log_read();
    /* Gemm + Relu, MatMul + Add(B2), Softmax: Relu fuses into the Gemm, B2 into the MatMul */
    assert_non_null(strstr(log, "5 nodes run as 3 steps (0 folded at load, 0 BatchNormalization "
                                "folded into Conv, 1 biases folded into MatMul, 1 activations "
                                "fused)"));
    assert_non_null(strstr(log, "memory plan for input shape [3,16]"));
    kiln_test_log_restore();
    kiln_log_set_level(KILN_LOG_WARN);
    assert_int_equal(st.n_nodes, 5);
    assert_int_equal(st.n_act_fused, 1);  /* Gemm + Relu */
    assert_int_equal(st.n_bias_fused, 1); /* MatMul + Add */
    assert_int_equal(st.n_steps, 3);
}

static void plans_are_bounded(void **state)
{
    (void)state;
    loaded l;
    load(&l, "models", "mlp_onnx");
    for (int64_t rows = 1; rows <= 20; rows++) { /* the backend itself takes any batch size */
        kiln_tensor t = run(&l, rows, 0.f);
        kiln_tensor_fini(&t);
    }
    kiln_onnx_stats st;
    kiln_onnx_stats_get(l.model, &st);
    assert_int_equal(st.n_plans, 16);
    /* planned or not (the least recent were replaced), every run matches a fresh model's */
    loaded fresh;
    load(&fresh, "models", "mlp_onnx");
    for (int64_t rows = 1; rows <= 20; rows++) {
        kiln_tensor a = run(&l, rows, 0.1f), b = run(&fresh, rows, 0.1f);
        assert_same(&a, &b);
        kiln_tensor_fini(&a);
        kiln_tensor_fini(&b);
    }
    unload(&fresh);
    unload(&l);
}

static void torch_fixtures_fold_and_plan(void **state)
{
    (void)state;
    kiln_onnx_stats st;
    check_plans("torch-models", "resnet", &st);
    assert_int_equal(st.n_bn_folded, 6);
    assert_int_equal(st.n_act_fused, 5); /* 3 after Convs, 2 after the residual Adds */
    check_plans("torch-models", "mobilenet", &st);
    assert_int_equal(st.n_bn_folded, 5);
    assert_true(st.n_folded >= 8); /* ReLU6's Constant min and max */
    check_plans("torch-models", "transformer", &st);
    assert_true(st.last_plan_skipped > 0); /* the Shape chains, per shape */
}

/* Every allocation of load and of three executions (traced, planned, another shape) fails in
 * turn: each failure is RESOURCE_EXHAUSTED with nothing leaked (ASan/LSan), and afterwards
 * the model answers as a model that never failed. */
static void allocation_failures_are_clean(void **state)
{
    (void)state;
    const char *models[][2] = {{"models", "mlp_onnx"}, {"torch-models", "resnet"}};
    for (size_t mi = 0; mi < 2; mi++) {
        loaded ref;
        load(&ref, models[mi][0], models[mi][1]);
        kiln_tensor want = run(&ref, 2, 0.3f);
        kiln_tensor in2[4] = {{0}}, in3[4] = {{0}};
        make_inputs(ref.config, 2, 0.3f, in2);
        make_inputs(ref.config, 3, 0.1f, in3);
        char dir[1024], vdir[1100];
        snprintf(dir, sizeof(dir), "%s/%s/%s", kiln_test_build_dir(), models[mi][0], models[mi][1]);
        snprintf(vdir, sizeof(vdir), "%s/1", dir);
        kiln_load_args a = {models[mi][1], dir, vdir, 1, ref.config, {KILN_DEVICE_CPU, 0}};
        bool reached_end = false;
        for (long n = 0; n < 200000 && !reached_end; n += n < 400 ? 1 : 23) {
            kiln_backend_model *m = NULL;
            kiln_err e;
            long before = kiln_alloc_injected_failures();
            kiln_alloc_fail_after(n);
            kiln_status st = onnx()->load(&a, &m, &e);
            for (int r = 0; st == KILN_OK && r < 3; r++) {
                kiln_output_slot out = {.index = 0};
                kiln_batch b = {.batch_size = r == 2 ? 3 : 2,
                                .n_inputs = (uint32_t)ref.config->n_inputs,
                                .inputs = r == 2 ? in3 : in2,
                                .n_outputs = 1,
                                .outputs = &out};
                kiln_status xs = onnx()->execute(m, &b, &e);
                if (xs != KILN_OK)
                    assert_int_equal(xs, KILN_RESOURCE_EXHAUSTED);
                kiln_tensor_fini(&out.result);
            }
            kiln_alloc_fail_after(-1);
            if (st != KILN_OK) {
                assert_int_equal(st, KILN_RESOURCE_EXHAUSTED);
                assert_null(m);
                continue;
            }
            reached_end = kiln_alloc_injected_failures() == before;
            loaded tmp = {.config = ref.config, .model = m};
            kiln_tensor got = run(&tmp, 2, 0.3f);
            assert_same(&got, &want);
            kiln_tensor_fini(&got);
            onnx()->unload(m);
        }
        assert_true(reached_end);
        for (size_t k = 0; k < 4; k++) {
            kiln_tensor_fini(&in2[k]);
            kiln_tensor_fini(&in3[k]);
        }
        kiln_tensor_fini(&want);
        unload(&ref);
    }
}

static void release_none(void *ctx, void *data)
{
    (void)ctx;
    (void)data;
}

/* A CPU instance given device memory (a request in CUDA shared memory that reached the CPU
 * instance of a model with GPU instances too) refuses it by name instead of reading it. */
static void cpu_instance_refuses_device_tensors(void **state)
{
    (void)state;
    loaded l;
    load(&l, "models", "mlp_onnx");
    static float fake[8 * 16];
    kiln_storage *dev;
    kiln_err e;
    assert_ok(kiln_storage_wrap(fake, sizeof(fake), (kiln_device){KILN_DEVICE_CUDA, 0},
                                release_none, NULL, &dev, &e),
              &e);
    kiln_shape s = {.rank = 2, .dims = {1, 16}};
    kiln_tensor in;
    assert_ok(kiln_tensor_view(dev, 0, KILN_DTYPE_FP32, &s, 0, &in, &e), &e);
    kiln_output_slot out = {.index = 0};
    kiln_batch b = {.batch_size = 1, .n_inputs = 1, .inputs = &in, .n_outputs = 1, .outputs = &out};
    assert_int_equal(onnx()->execute(l.model, &b, &e), KILN_INVALID_ARGUMENT);
    assert_non_null(strstr(e.msg, "CUDA memory"));
    kiln_tensor_fini(&in);
    /* a host input with the output asked in device memory */
    kiln_tensor hin;
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_FP32, &s, 0, &hin, &e), &e);
    memset(hin.data, 0, hin.byte_size);
    out = (kiln_output_slot){.index = 0, .buffer = dev, .capacity = sizeof(fake)};
    b.inputs = &hin;
    assert_int_equal(onnx()->execute(l.model, &b, &e), KILN_INVALID_ARGUMENT);
    assert_non_null(strstr(e.msg, "CUDA memory"));
    assert_null(out.result.storage);
    kiln_tensor_fini(&hin);
    kiln_storage_unref(dev);
    unload(&l);
}

static void blas_threads_are_checked(void **state)
{
    (void)state;
    kiln_err e;
    assert_status(kiln_onnx_set_blas_threads(0, &e), KILN_INVALID_ARGUMENT, &e, "1 to 256");
    assert_status(kiln_onnx_set_blas_threads(100000, &e), KILN_INVALID_ARGUMENT, &e, "1 to 256");
    /* the models above fixed the count at the default, 1 */
    assert_ok(kiln_onnx_set_blas_threads(1, &e), &e);
    assert_status(kiln_onnx_set_blas_threads(2, &e), KILN_FAILED_PRECONDITION, &e, "already 1");
}

int main(void)
{
    kiln_log_set_level(KILN_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chain_reuses_two_buffers),
        cmocka_unit_test(random_lifetimes_never_collide),
        cmocka_unit_test(mlp_fuses_and_plans),
        cmocka_unit_test(plans_are_bounded),
        cmocka_unit_test(torch_fixtures_fold_and_plan),
        cmocka_unit_test(allocation_failures_are_clean),
        cmocka_unit_test(blas_threads_are_checked),
        cmocka_unit_test(cpu_instance_refuses_device_tensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
