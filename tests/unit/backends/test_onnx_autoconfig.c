/*
 * Unit tests: backends/onnx/autoconfig.c (a config derived from the graph when a model has no
 * config.pbtxt) and the ONNX backend's agreement checks of a config that is present (agree()
 * in runtime.c). Models are built here with protobuf-c from proto/onnx.proto and written to a
 * temporary version directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/backend.h"
#include "common/alloc.h"
#include "proto/onnx.pb-c.h"
#include "tests/support.h"

enum { FLOAT = 1, STRING = 8, INT64 = 7, COMPLEX64 = 14 };
#define DYN   INT64_MIN       /* a symbolic dim ("batch") */
#define NOVAL (INT64_MIN + 1) /* a dim with neither value nor name */

/* ---------------------------------------------------------------- building models */

static void *arena_ptrs[1024];
static size_t arena_n;

static void *arena(size_t n)
{
    assert_true(arena_n < sizeof(arena_ptrs) / sizeof(arena_ptrs[0]));
    void *p = calloc(1, n ? n : 1);
    assert_non_null(p);
    return arena_ptrs[arena_n++] = p;
}

static char *str(const char *s)
{
    char *p = arena(strlen(s) + 1);
    strcpy(p, s);
    return p;
}

/* A tensor value info; rank < 0 gives no shape at all. */
static Onnx__ValueInfoProto *vinfo(const char *name, int elem, const int64_t *dims, int rank)
{
    Onnx__ValueInfoProto *v = arena(sizeof(*v));
    onnx__value_info_proto__init(v);
    v->name = str(name);
    v->type = arena(sizeof(*v->type));
    onnx__type_proto__init(v->type);
    v->type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    v->type->tensor_type = arena(sizeof(*v->type->tensor_type));
    onnx__type_proto__tensor__init(v->type->tensor_type);
    v->type->tensor_type->elem_type = elem;
    if (rank < 0)
        return v;
    Onnx__TensorShapeProto *s = arena(sizeof(*s));
    onnx__tensor_shape_proto__init(s);
    s->n_dim = (size_t)rank;
    s->dim = arena((size_t)rank * sizeof(*s->dim));
    for (int i = 0; i < rank; i++) {
        s->dim[i] = arena(sizeof(*s->dim[i]));
        onnx__tensor_shape_proto__dimension__init(s->dim[i]);
        if (dims[i] == DYN) {
            s->dim[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            s->dim[i]->dim_param = str("batch");
        } else if (dims[i] != NOVAL) {
            s->dim[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            s->dim[i]->dim_value = dims[i];
        }
    }
    v->type->tensor_type->shape = s;
    return v;
}

typedef struct graph {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto op, *ops[1];
    Onnx__ValueInfoProto *in[4], *out[4];
    Onnx__NodeProto *nodes[4], node[4];
    Onnx__TensorProto *inits[1], init;
    char *node_in[4][1], *node_out[4][1];
} graph;

static graph *new_graph(void)
{
    graph *gr = arena(sizeof(*gr));
    onnx__model_proto__init(&gr->m);
    onnx__graph_proto__init(&gr->g);
    onnx__operator_set_id_proto__init(&gr->op);
    gr->op.domain = str("");
    gr->op.version = 17;
    gr->ops[0] = &gr->op;
    gr->m.ir_version = 8;
    gr->m.n_opset_import = 1;
    gr->m.opset_import = gr->ops;
    gr->m.graph = &gr->g;
    gr->g.input = gr->in;
    gr->g.output = gr->out;
    gr->g.node = gr->nodes;
    return gr;
}

static void add_input(graph *gr, Onnx__ValueInfoProto *v)
{
    gr->in[gr->g.n_input++] = v;
}

/* Adds graph output v, made by an Identity node from `from`. */
static void add_output(graph *gr, Onnx__ValueInfoProto *v, const char *from)
{
    size_t k = gr->g.n_node++;
    Onnx__NodeProto *n = &gr->node[k];
    onnx__node_proto__init(n);
    n->op_type = str("Identity");
    gr->node_in[k][0] = str(from);
    gr->node_out[k][0] = v->name;
    n->n_input = n->n_output = 1;
    n->input = gr->node_in[k];
    n->output = gr->node_out[k];
    gr->nodes[k] = n;
    gr->out[gr->g.n_output++] = v;
}

/* Adds an FP32 initializer [2] named `name` that is also listed among the graph inputs (as
 * files from ONNX IR < 4 list them): auto-complete must leave it out. */
static void add_initializer_input(graph *gr, const char *name)
{
    onnx__tensor_proto__init(&gr->init);
    gr->init.name = str(name);
    gr->init.data_type = FLOAT;
    gr->init.n_dims = 1;
    gr->init.dims = arena(sizeof(int64_t));
    gr->init.dims[0] = 2;
    gr->init.raw_data.len = 2 * sizeof(float);
    gr->init.raw_data.data = arena(gr->init.raw_data.len);
    gr->inits[0] = &gr->init;
    gr->g.n_initializer = 1;
    gr->g.initializer = gr->inits;
    add_input(gr, vinfo(name, FLOAT, (int64_t[]){2}, 1));
}

/* ---------------------------------------------------------------- fixture */

static char root[64], vdir[128];

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof(root), "/tmp/kiln-autoconfig-XXXXXX");
    assert_non_null(mkdtemp(root));
    char p[128];
    snprintf(p, sizeof(p), "%s/m", root);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(vdir, sizeof(vdir), "%s/m/1", root);
    assert_int_equal(mkdir(vdir, 0700), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    while (arena_n)
        free(arena_ptrs[--arena_n]);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void write_graph(const graph *gr)
{
    size_t len = onnx__model_proto__get_packed_size(&gr->m);
    uint8_t *buf = arena(len);
    onnx__model_proto__pack(&gr->m, buf);
    char p[160];
    snprintf(p, sizeof(p), "%s/model.onnx", vdir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

static const kiln_backend *onnx(void)
{
    const kiln_backend *b = kiln_backend_find("onnx");
    assert_non_null(b);
    assert_non_null(b->autoconfig);
    return b;
}

/* Writes gr and auto-completes its config, which must succeed. */
static kiln_model_config *complete(const graph *gr)
{
    write_graph(gr);
    kiln_model_config *c = NULL;
    kiln_err e;
    assert_ok(onnx()->autoconfig("m", vdir, &c, &e), &e);
    assert_non_null(c);
    return c;
}

static void expect_dims(const kiln_model_io *io, const char *name, kiln_dtype dt, int rank,
                        const int64_t *dims)
{
    assert_string_equal(io->name, name);
    assert_int_equal(io->dtype, dt);
    assert_int_equal(io->dims.rank, rank);
    for (int i = 0; i < rank; i++)
        assert_int_equal(io->dims.dims[i], dims[i]);
}

/* Loads the graph in vdir with `config` text through the backend: its status and error. */
static kiln_status load_with(const char *config, kiln_err *e)
{
    kiln_model_config *c = kiln_test_config(config);
    kiln_load_args a = {.model_name = "m",
                        .model_dir = root,
                        .version_dir = vdir,
                        .version = 1,
                        .config = c,
                        .device = {.kind = KILN_DEVICE_CPU}};
    kiln_backend_model *bm = (kiln_backend_model *)1;
    kiln_status st = onnx()->load(&a, &bm, e);
    if (st == KILN_OK)
        onnx()->unload(bm);
    else
        assert_null(bm);
    kiln_model_config_free(c);
    return st;
}

/* ---------------------------------------------------------------- auto-complete */

/* X [batch, 4] and an initializer listed as an input -> Y [batch, 4]: a batching model. */
static void batching_graph(void **state)
{
    (void)state;
    graph *gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, 4}, 2));
    add_initializer_input(gr, "W");
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, 4}, 2), "X");
    kiln_model_config *c = complete(gr);
    assert_string_equal(c->name, "m");
    assert_string_equal(c->backend, "onnx");
    assert_string_equal(c->platform, "onnxruntime_onnx");
    assert_int_equal(c->max_batch_size, 4);
    assert_true(c->dynamic_batching);
    assert_int_equal(c->max_queue_delay_us, 0);
    assert_int_equal(c->n_inputs, 1); /* W is an initializer, not an input */
    expect_dims(&c->inputs[0], "X", KILN_DTYPE_FP32, 1, (int64_t[]){4});
    assert_int_equal(c->n_outputs, 1);
    expect_dims(&c->outputs[0], "Y", KILN_DTYPE_FP32, 1, (int64_t[]){4});
    assert_int_equal(c->version_policy.kind, KILN_VERSIONS_LATEST);
    assert_true(c->packed_len > 0); /* what the ModelConfig RPC answers */
    kiln_model_config_free(c);

    /* a first dim of 0 or with no value counts as dynamic too; the derived config loads */
    gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){0, 4}, 2));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){NOVAL, 4}, 2), "X");
    c = complete(gr);
    assert_int_equal(c->max_batch_size, 4);
    kiln_model_config_free(c);
    kiln_err e;
    assert_ok(load_with("backend: 'onnx' max_batch_size: 4 "
                        "input { name: 'X' data_type: TYPE_FP32 dims: 4 } "
                        "output { name: 'Y' data_type: TYPE_FP32 dims: 4 }",
                        &e),
              &e);
}

static void non_batching_graphs(void **state)
{
    (void)state;
    /* every first dim static */
    graph *gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){2, 4}, 2));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){2, 4}, 2), "X");
    kiln_model_config *c = complete(gr);
    assert_int_equal(c->max_batch_size, 0);
    assert_false(c->dynamic_batching);
    expect_dims(&c->inputs[0], "X", KILN_DTYPE_FP32, 2, (int64_t[]){2, 4});
    expect_dims(&c->outputs[0], "Y", KILN_DTYPE_FP32, 2, (int64_t[]){2, 4});
    kiln_model_config_free(c);

    /* one output with a static first dim: no batching, the other first dims stay -1 */
    gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, 4}, 2));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, 4}, 2), "X");
    add_output(gr, vinfo("Z", FLOAT, (int64_t[]){1, 4}, 2), "X");
    c = complete(gr);
    assert_int_equal(c->max_batch_size, 0);
    assert_false(c->dynamic_batching);
    expect_dims(&c->inputs[0], "X", KILN_DTYPE_FP32, 2, (int64_t[]){-1, 4});
    expect_dims(&c->outputs[1], "Z", KILN_DTYPE_FP32, 2, (int64_t[]){1, 4});
    kiln_model_config_free(c);

    /* a scalar input: rank 0 has no batch dim */
    gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, 4}, 2));
    add_input(gr, vinfo("T", INT64, NULL, 0));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, 4}, 2), "X");
    c = complete(gr);
    assert_int_equal(c->max_batch_size, 0);
    expect_dims(&c->inputs[1], "T", KILN_DTYPE_INT64, 0, NULL);
    kiln_model_config_free(c);
}

static void dynamic_non_batch_dims(void **state)
{
    (void)state;
    graph *gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, DYN, 0, NOVAL, 8}, 5));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, DYN, 3, 5, 8}, 5), "X");
    kiln_model_config *c = complete(gr);
    assert_int_equal(c->max_batch_size, 4);
    expect_dims(&c->inputs[0], "X", KILN_DTYPE_FP32, 4, (int64_t[]){-1, -1, -1, 8});
    expect_dims(&c->outputs[0], "Y", KILN_DTYPE_FP32, 4, (int64_t[]){-1, 3, 5, 8});
    kiln_model_config_free(c);
}

/* Names that need escaping in config text come through unchanged. */
static void odd_names_round_trip(void **state)
{
    (void)state;
    const char *in = "in \"q\" \\ 7\n\x01"
                     "9 \xc3\xa9",
               *out = "out:0/'x'";
    graph *gr = new_graph();
    add_input(gr, vinfo(in, FLOAT, (int64_t[]){DYN, 2}, 2));
    add_output(gr, vinfo(out, FLOAT, (int64_t[]){DYN, 2}, 2), in);
    kiln_model_config *c = complete(gr);
    assert_string_equal(c->inputs[0].name, in);
    assert_string_equal(c->outputs[0].name, out);
    kiln_model_config_free(c);
}

static void unsupported_dtypes_are_named(void **state)
{
    (void)state;
    kiln_err e;
    kiln_model_config *c = (kiln_model_config *)1;
    graph *gr = new_graph();
    add_input(gr, vinfo("S", STRING, (int64_t[]){DYN, 1}, 2));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, 1}, 2), "S");
    write_graph(gr);
    assert_status(onnx()->autoconfig("m", vdir, &c, &e), KILN_INVALID_ARGUMENT, &e,
                  "input 'S': element type 8 is not supported");
    assert_non_null(strstr(e.msg, "model 'm' (config auto-complete): "));
    assert_null(c);

    gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, 1}, 2));
    add_output(gr, vinfo("C", COMPLEX64, (int64_t[]){DYN, 1}, 2), "X");
    write_graph(gr);
    assert_status(onnx()->autoconfig("m", vdir, &c, &e), KILN_INVALID_ARGUMENT, &e,
                  "output 'C': element type 14 is not supported");
}

static void underivable_graphs_fail(void **state)
{
    (void)state;
    kiln_err e;
    kiln_model_config *c = (kiln_model_config *)1;
    assert_status(onnx()->autoconfig("m", vdir, &c, &e), KILN_NOT_FOUND, &e, "model.onnx");
    assert_null(c);

    graph *gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, NULL, -1));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, 1}, 2), "X");
    write_graph(gr);
    assert_status(onnx()->autoconfig("m", vdir, &c, &e), KILN_INVALID_ARGUMENT, &e,
                  "model 'm' (config auto-complete): the ONNX graph gives no shape for input 'X'");

    /* a graph output that is its input: one name for both is not a valid config */
    gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, 1}, 2));
    gr->out[gr->g.n_output++] = vinfo("X", FLOAT, (int64_t[]){DYN, 1}, 2);
    write_graph(gr);
    assert_status(onnx()->autoconfig("m", vdir, &c, &e), KILN_INVALID_ARGUMENT, &e,
                  "model 'm' (config auto-complete): tensor name 'X' is used twice");

    char p[160];
    snprintf(p, sizeof(p), "%s/model.onnx", vdir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs("not a model", f);
    fclose(f);
    assert_status(onnx()->autoconfig("m", vdir, &c, &e), KILN_INVALID_ARGUMENT, &e,
                  "not a valid ONNX model");
    assert_null(c);
}

/* The registry finds the hook through the backend table. */
static void hook_is_found_by_file(void **state)
{
    (void)state;
    char files[64];
    assert_string_equal(kiln_backend_autoconfig_files(files, sizeof(files)), "model.onnx");
    assert_string_equal(kiln_backend_autoconfig_files(files, 4), "mod");
    assert_null(kiln_backend_autoconfig_find(vdir));
    graph *gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, 1}, 2));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, 1}, 2), "X");
    write_graph(gr);
    assert_ptr_equal(kiln_backend_autoconfig_find(vdir), onnx());
    const kiln_backend *plugin = kiln_backend_find("plugin");
    assert_null(plugin->autoconfig);
}

static void allocation_failures_never_leak(void **state)
{
    (void)state;
    graph *gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, 3}, 2));
    add_initializer_input(gr, "W");
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, 3}, 2), "X");
    write_graph(gr);
    for (long n = 0; n < 1000; n++) {
        kiln_err e;
        kiln_model_config *c = (kiln_model_config *)1;
        kiln_alloc_fail_after(n);
        kiln_status st = onnx()->autoconfig("m", vdir, &c, &e);
        kiln_alloc_fail_after(-1);
        if (st == KILN_OK) {
            kiln_model_config_free(c);
            return;
        }
        assert_int_equal(st, KILN_RESOURCE_EXHAUSTED);
        assert_null(c);
    }
    fail_msg("auto-complete still failing after 1000 allocations");
}

/* ---------------------------------------------------------------- a config that is present */

static void present_config_must_agree(void **state)
{
    (void)state;
    graph *gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){DYN, 4, DYN}, 3));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){DYN, 4, DYN}, 3), "X");
    write_graph(gr);
    kiln_err e;
#define IO(in, out)                                                                                \
    "backend: 'onnx' max_batch_size: 2 input { name: 'X' data_type: " in " } "                     \
    "output { name: 'Y' data_type: " out " }"
    /* -1 matches a static dim; a static dim matches a dynamic one */
    assert_ok(load_with(IO("TYPE_FP32 dims: [4, 7]", "TYPE_FP32 dims: [-1, -1]"), &e), &e);
    assert_status(load_with(IO("TYPE_INT32 dims: [4, 7]", "TYPE_FP32 dims: [4, 7]"), &e),
                  KILN_INVALID_ARGUMENT, &e,
                  "model 'm': config input 'X' is INT32, the ONNX graph says FP32");
    assert_status(load_with(IO("TYPE_FP32 dims: [4]", "TYPE_FP32 dims: [4, 7]"), &e),
                  KILN_INVALID_ARGUMENT, &e,
                  "model 'm': config input 'X' has rank 2 (with the batch dim), the ONNX graph "
                  "says 3");
    assert_status(load_with(IO("TYPE_FP32 dims: [5, 7]", "TYPE_FP32 dims: [4, 7]"), &e),
                  KILN_INVALID_ARGUMENT, &e,
                  "model 'm': config input 'X' has dims[0] = 5, the ONNX graph's axis 1 is 4 "
                  "(axis 0 is the batch dim)");
    assert_status(load_with(IO("TYPE_FP32 dims: [4, 7]", "TYPE_FP32 dims: [3, -1]"), &e),
                  KILN_INVALID_ARGUMENT, &e,
                  "model 'm': config output 'Y' has dims[0] = 3, the ONNX graph's axis 1 is 4");
#undef IO

    /* without batching, axis 0 is compared like the others */
    gr = new_graph();
    add_input(gr, vinfo("X", FLOAT, (int64_t[]){2, 4}, 2));
    add_output(gr, vinfo("Y", FLOAT, (int64_t[]){2, 4}, 2), "X");
    write_graph(gr);
    assert_status(load_with("backend: 'onnx' input { name: 'X' data_type: TYPE_FP32 dims: [3, 4] "
                            "} output { name: 'Y' data_type: TYPE_FP32 dims: [2, 4] }",
                            &e),
                  KILN_INVALID_ARGUMENT, &e,
                  "model 'm': config input 'X' has dims[0] = 3, the ONNX graph's axis 0 is 2");
    assert_null(strstr(e.msg, "batch"));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(batching_graph),
        T(non_batching_graphs),
        T(dynamic_non_batch_dims),
        T(odd_names_round_trip),
        T(unsupported_dtypes_are_named),
        T(underivable_graphs_fail),
        T(hook_is_found_by_file),
        T(allocation_failures_never_leak),
        T(present_config_must_agree),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
