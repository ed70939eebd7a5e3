/* Unit tests: the backend table, output slots, and the plugin backend with the example plugins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "common/alloc.h"
#include "tests/support.h"

typedef struct loaded {
    kiln_model_config *config;
    kiln_backend_model *model;
    char dir[1024], vdir[1100];
} loaded;

static const kiln_backend *plugin(void)
{
    const kiln_backend *b = kiln_backend_find("plugin");
    assert_non_null(b);
    return b;
}

static kiln_status load_model(loaded *l, const char *sub, const char *name, kiln_err *e)
{
    memset(l, 0, sizeof(*l));
    l->config = kiln_test_model_config(sub, name);
    snprintf(l->dir, sizeof(l->dir), "%s/%s/%s", kiln_test_build_dir(), sub, name);
    snprintf(l->vdir, sizeof(l->vdir), "%s/1", l->dir);
    kiln_load_args a = {name, l->dir, l->vdir, 1, l->config, {KILN_DEVICE_CPU, 0}};
    return plugin()->load(&a, &l->model, e);
}

static void unload_model(loaded *l)
{
    plugin()->unload(l->model);
    kiln_model_config_free(l->config);
}

static void table(void **state)
{
    (void)state;
    assert_ptr_equal(kiln_backend_find("plugin"), plugin());
    assert_null(kiln_backend_find("tensorflow"));
    assert_null(kiln_backend_find(NULL));
    assert_non_null(strstr(kiln_backend_names(), "plugin"));
}

static void simple_adds_and_subtracts(void **state)
{
    (void)state;
    kiln_err e;
    loaded l;
    assert_ok(load_model(&l, "models", "simple", &e), &e);
    uint64_t host = 0, dev = 1;
    plugin()->memory(l.model, &host, &dev);
    assert_true(host > 0);
    assert_int_equal(dev, 0);
    kiln_shape sh = {.rank = 2, .dims = {2, 16}};
    kiln_tensor in[2];
    for (int k = 0; k < 2; k++) {
        assert_ok(kiln_tensor_alloc(KILN_DTYPE_INT32, &sh, 0, &in[k], &e), &e);
        int32_t *p = in[k].data;
        for (int i = 0; i < 32; i++)
            p[i] = k == 0 ? i : 1000 * i;
    }
    kiln_output_slot out[2] = {{.index = 0}, {.index = 1}};
    kiln_batch b = {.batch_size = 2, .n_inputs = 2, .inputs = in, .n_outputs = 2, .outputs = out};
    assert_ok(plugin()->execute(l.model, &b, &e), &e);
    const int32_t *sum = out[0].result.data, *diff = out[1].result.data;
    assert_true(kiln_shape_equal(&out[0].result.shape, &sh));
    for (int i = 0; i < 32; i++) {
        assert_int_equal(sum[i], i + 1000 * i);
        assert_int_equal(diff[i], i - 1000 * i);
    }
    kiln_batch_release_outputs(&b);
    /* only OUTPUT1 requested */
    kiln_output_slot one = {.index = 1};
    b.n_outputs = 1;
    b.outputs = &one;
    assert_ok(plugin()->execute(l.model, &b, &e), &e);
    assert_int_equal(((int32_t *)one.result.data)[3], 3 - 3000);
    kiln_tensor_fini(&one.result);
    for (int k = 0; k < 2; k++)
        kiln_tensor_fini(&in[k]);
    unload_model(&l);
}

static void outputs_land_in_caller_buffers(void **state)
{
    (void)state;
    kiln_err e;
    loaded l;
    assert_ok(load_model(&l, "models", "identity_fp32", &e), &e);
    kiln_shape sh = {.rank = 2, .dims = {1, 100}};
    kiln_tensor in;
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_FP32, &sh, 0, &in, &e), &e);
    for (int i = 0; i < 100; i++)
        ((float *)in.data)[i] = (float)i * 0.5f;
    static float region[256];
    kiln_storage *buf;
    assert_ok(kiln_storage_wrap(region, sizeof(region), (kiln_device){0, 0}, NULL, NULL, &buf, &e),
              &e);
    kiln_output_slot out = {.index = 0, .buffer = buf, .offset = 64, .capacity = 400};
    kiln_batch b = {.batch_size = 1, .n_inputs = 1, .inputs = &in, .n_outputs = 1, .outputs = &out};
    assert_ok(plugin()->execute(l.model, &b, &e), &e);
    assert_ptr_equal(out.result.data, (char *)region + 64); /* written in place, no copy */
    assert_true(region[16 + 99] == 49.5f);
    kiln_tensor_fini(&out.result);
    /* a window that is too small */
    kiln_output_slot small = {.index = 0, .buffer = buf, .offset = 0, .capacity = 399};
    b.outputs = &small;
    assert_status(plugin()->execute(l.model, &b, &e), KILN_INVALID_ARGUMENT, &e,
                  "output 'OUTPUT0' needs 400 bytes but its shared memory window holds 399");
    assert_null(small.result.storage);
    kiln_storage_unref(buf);
    kiln_tensor_fini(&in);
    unload_model(&l);
}

static kiln_tensor bytes_tensor(const char *const *vals, int n)
{
    kiln_err e;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += 4 + strlen(vals[i]);
    kiln_shape sh = {.rank = 2, .dims = {1, n}};
    kiln_tensor t;
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_BYTES, &sh, total, &t, &e), &e);
    size_t off = 0;
    for (int i = 0; i < n; i++)
        assert_ok(kiln_bytes_append(t.data, total, &off, vals[i], strlen(vals[i]), &e), &e);
    return t;
}

static void simple_string_bytes_end_to_end(void **state)
{
    (void)state;
    kiln_err e;
    loaded l;
    assert_ok(load_model(&l, "models", "simple_string", &e), &e);
    const char *a[16], *c[16];
    char abuf[16][12], cbuf[16][12];
    for (int i = 0; i < 16; i++) {
        snprintf(abuf[i], 12, "%d", i);
        snprintf(cbuf[i], 12, "%d", -2 * i);
        a[i] = abuf[i];
        c[i] = cbuf[i];
    }
    kiln_tensor in[2] = {bytes_tensor(a, 16), bytes_tensor(c, 16)};
    kiln_output_slot out[2] = {{.index = 0}, {.index = 1}};
    kiln_batch b = {.batch_size = 1, .n_inputs = 2, .inputs = in, .n_outputs = 2, .outputs = out};
    assert_ok(plugin()->execute(l.model, &b, &e), &e);
    kiln_bytes_iter it;
    kiln_bytes_iter_init(&it, out[1].result.data, out[1].result.byte_size);
    const uint8_t *p;
    uint32_t len;
    for (int i = 0; i < 16; i++) {
        assert_true(kiln_bytes_next(&it, &p, &len));
        char want[16];
        snprintf(want, sizeof(want), "%d", i + 2 * i);
        assert_int_equal(len, strlen(want));
        assert_memory_equal(p, want, len);
    }
    kiln_batch_release_outputs(&b);
    kiln_tensor_fini(&in[0]);
    a[3] = "x7";
    in[0] = bytes_tensor(a, 16);
    assert_status(plugin()->execute(l.model, &b, &e), KILN_INVALID_ARGUMENT, &e,
                  "model 'simple_string' version 1: INPUT0[3] 'x7' is not a decimal int32");
    assert_null(out[0].result.storage);
    kiln_tensor_fini(&in[0]);
    kiln_tensor_fini(&in[1]);
    unload_model(&l);
}

static kiln_status load_broken(int variant, kiln_err *e)
{
    char text[512];
    snprintf(text, sizeof(text),
             "name: 'b' backend: 'plugin' default_model_filename: 'broken%d.so' "
             "input { name: 'x' data_type: TYPE_INT32 dims: 1 } "
             "output { name: 'y' data_type: TYPE_INT32 dims: 1 }",
             variant);
    kiln_model_config *c = kiln_test_config(text);
    char vdir[1024];
    snprintf(vdir, sizeof(vdir), "%s/plugins", kiln_test_build_dir());
    kiln_load_args a = {"b", vdir, vdir, 3, c, {KILN_DEVICE_CPU, 0}};
    kiln_backend_model *m = (kiln_backend_model *)1;
    kiln_status st = plugin()->load(&a, &m, e);
    if (st == KILN_OK)
        plugin()->unload(m);
    else
        assert_null(m);
    kiln_model_config_free(c);
    return st;
}

static void loader_errors_are_clear(void **state)
{
    (void)state;
    kiln_err e;
    assert_status(load_broken(1, &e), KILN_FAILED_PRECONDITION, &e,
                  "model 'b' version 3: plugin 'broken1.so' does not export kiln_plugin_entry");
    assert_status(load_broken(2, &e), KILN_FAILED_PRECONDITION, &e,
                  "broken2.so: kiln_plugin_entry() returned NULL");
    assert_status(load_broken(3, &e), KILN_FAILED_PRECONDITION, &e,
                  "plugin ABI 2.0 is not supported (server speaks 1.0");
    assert_status(load_broken(4, &e), KILN_FAILED_PRECONDITION, &e,
                  "plugin ABI 1.1 is not supported");
    assert_status(load_broken(5, &e), KILN_FAILED_PRECONDITION, &e,
                  "plugin lacks the required entry point 'execute'");
    assert_status(load_broken(6, &e), KILN_FAILED_PRECONDITION, &e,
                  "plugin create failed: weights file is corrupt");
    assert_status(load_broken(7, &e), KILN_FAILED_PRECONDITION, &e, "plugin API table is 8 bytes");
    assert_status(load_broken(99, &e), KILN_NOT_FOUND, &e,
                  "plugin library 'broken99.so' not found in the version directory");
    /* a file that is not a shared object */
    kiln_model_config *c =
        kiln_test_config("backend: 'plugin' default_model_filename: 'config.pbtxt' "
                         "input { name: 'x' data_type: TYPE_INT32 dims: 1 } "
                         "output { name: 'y' data_type: TYPE_INT32 dims: 1 }");
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/models/simple", kiln_test_build_dir());
    kiln_load_args a = {"s", dir, dir, 1, c, {KILN_DEVICE_CPU, 0}};
    kiln_backend_model *m;
    assert_status(plugin()->load(&a, &m, &e), KILN_FAILED_PRECONDITION, &e,
                  "cannot load plugin 'config.pbtxt'");
    a.device = (kiln_device){KILN_DEVICE_CUDA, 0};
    assert_status(plugin()->load(&a, &m, &e), KILN_INVALID_ARGUMENT, &e, "plugins run on the CPU");
    kiln_model_config_free(c);
    /* a config that does not fit the plugin: create refuses it */
    c = kiln_test_config(
        "backend: 'plugin' input { name: 'x' data_type: TYPE_FP32 } "
        "input { name: 'z' data_type: TYPE_FP32 } "
        "output { name: 'y' data_type: TYPE_INT32 } output { name: 'w' data_type: TYPE_INT32 }");
    snprintf(dir, sizeof(dir), "%s/models/simple/1", kiln_test_build_dir());
    kiln_load_args a2 = {"s", dir, dir, 1, c, {KILN_DEVICE_CPU, 0}};
    assert_status(plugin()->load(&a2, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "'x' is FP32 in the config; this plugin needs INT32");
    kiln_model_config_free(c);
}

static int stop_now(void *ctx)
{
    (void)ctx;
    return 1;
}

static void should_stop_reaches_the_plugin(void **state)
{
    (void)state;
    kiln_err e;
    kiln_model_config *c = kiln_test_config(
        "backend: 'plugin' max_batch_size: 4 parameters { key: 'execute_delay_ms' value { "
        "string_value: '5000' } } input { name: 'I' data_type: TYPE_FP32 dims: -1 } "
        "output { name: 'O' data_type: TYPE_FP32 dims: -1 }");
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/models/identity_fp32/1", kiln_test_build_dir());
    kiln_load_args a = {"slow", dir, dir, 1, c, {KILN_DEVICE_CPU, 0}};
    kiln_backend_model *m;
    assert_ok(plugin()->load(&a, &m, &e), &e);
    kiln_shape sh = {.rank = 2, .dims = {1, 4}};
    kiln_tensor in;
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_FP32, &sh, 0, &in, &e), &e);
    kiln_output_slot out = {.index = 0};
    kiln_batch b = {.batch_size = 1,
                    .n_inputs = 1,
                    .inputs = &in,
                    .n_outputs = 1,
                    .outputs = &out,
                    .should_stop = stop_now};
    /* stops at once instead of sleeping 5 s */
    assert_status(plugin()->execute(m, &b, &e), KILN_INTERNAL, &e, "stopped after 0 ms");
    kiln_tensor_fini(&in);
    plugin()->unload(m);
    kiln_model_config_free(c);
    /* a bad parameter is a load error */
    c = kiln_test_config("backend: 'plugin' parameters { key: 'execute_delay_ms' value { "
                         "string_value: 'soon' } } input { name: 'I' data_type: TYPE_FP32 } "
                         "output { name: 'O' data_type: TYPE_FP32 }");
    a.config = c;
    assert_status(plugin()->load(&a, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "parameter execute_delay_ms 'soon' is not a number of ms");
    kiln_model_config_free(c);
}

static void slot_alloc_rules(void **state)
{
    (void)state;
    kiln_err e;
    kiln_output_slot s = {0};
    kiln_shape sh = {.rank = 1, .dims = {4}};
    assert_status(kiln_output_slot_alloc(&s, "o", KILN_DTYPE_FP32, &sh, 12, &e), KILN_INTERNAL, &e,
                  "output 'o': 12 bytes do not match shape [4] of FP32 (16)");
    assert_ok(kiln_output_slot_alloc(&s, "o", KILN_DTYPE_FP32, &sh, 0, &e), &e);
    assert_int_equal(s.result.byte_size, 16);
    assert_status(kiln_output_slot_alloc(&s, "o", KILN_DTYPE_FP32, &sh, 0, &e), KILN_INTERNAL, &e,
                  "allocated twice");
    kiln_tensor_fini(&s.result);
    kiln_alloc_fail_after(0);
    assert_status(kiln_output_slot_alloc(&s, "o", KILN_DTYPE_FP32, &sh, 0, &e),
                  KILN_RESOURCE_EXHAUSTED, &e, "output 'o'");
}

/* Memory must not grow across load/unload cycles (a common complaint about model servers). */
static void load_unload_cycles_do_not_grow_rss(void **state)
{
    (void)state;
    kiln_err e;
    loaded l;
    /* warm up: the first load maps the library and allocator arenas */
    for (int i = 0; i < 20; i++) {
        assert_ok(load_model(&l, "models", "simple", &e), &e);
        unload_model(&l);
    }
    uint64_t before = kiln_test_rss_bytes();
    for (int i = 0; i < 1000; i++) {
        assert_ok(load_model(&l, "models", "simple", &e), &e);
        unload_model(&l);
    }
    uint64_t after = kiln_test_rss_bytes();
    int64_t growth = (int64_t)after - (int64_t)before;
    printf("load/unload x1000: RSS %llu -> %llu bytes (growth %lld bytes)\n",
           (unsigned long long)before, (unsigned long long)after, (long long)growth);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    /* sanitizers keep freed memory in quarantine, so only plain builds assert the figure */
    assert_true(growth < 1024 * 1024);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table),
        cmocka_unit_test(simple_adds_and_subtracts),
        cmocka_unit_test(outputs_land_in_caller_buffers),
        cmocka_unit_test(simple_string_bytes_end_to_end),
        cmocka_unit_test(loader_errors_are_clear),
        cmocka_unit_test(should_stop_reaches_the_plugin),
        cmocka_unit_test(slot_alloc_rules),
        cmocka_unit_test(load_unload_cycles_do_not_grow_rss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
