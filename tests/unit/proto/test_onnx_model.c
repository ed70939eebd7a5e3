/*
 * Unit tests: proto/onnx_model (the ONNX loader). Models are built here with protobuf-c from
 * proto/onnx.proto and packed, so the tests need no exporter.
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

#include "common/alloc.h"
#include "proto/onnx.pb-c.h"
#include "proto/onnx_model.h"
#include "tests/support.h"

/* ---------------------------------------------------------------- building models */

/* Everything a test builds is freed by arena_reset at the end of the test. */
static void *arena_ptrs[4096];
static size_t arena_n;

static void *arena(size_t n)
{
    assert_true(arena_n < sizeof(arena_ptrs) / sizeof(arena_ptrs[0]));
    void *p = calloc(1, n ? n : 1);
    assert_non_null(p);
    return arena_ptrs[arena_n++] = p;
}

static void arena_reset(void)
{
    while (arena_n)
        free(arena_ptrs[--arena_n]);
}

static char *str(const char *s)
{
    char *p = arena(strlen(s) + 1);
    strcpy(p, s);
    return p;
}

/* A FLOAT tensor with raw_data (vals may be NULL: zeros). */
static Onnx__TensorProto *tensor_f32(const char *name, const int64_t *dims, size_t rank,
                                     const float *vals)
{
    Onnx__TensorProto *t = arena(sizeof(*t));
    onnx__tensor_proto__init(t);
    t->name = str(name);
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->n_dims = rank;
    t->dims = arena(rank * sizeof(int64_t));
    size_t n = 1;
    for (size_t i = 0; i < rank; i++) {
        t->dims[i] = dims[i];
        n *= (size_t)dims[i];
    }
    t->raw_data.len = n * sizeof(float);
    t->raw_data.data = arena(t->raw_data.len);
    if (vals)
        memcpy(t->raw_data.data, vals, t->raw_data.len);
    return t;
}

/* A tensor value info; a dim of -1 becomes the symbolic "batch". */
static Onnx__ValueInfoProto *vinfo(const char *name, int elem, const int64_t *dims, size_t rank)
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
    Onnx__TensorShapeProto *s = arena(sizeof(*s));
    onnx__tensor_shape_proto__init(s);
    s->n_dim = rank;
    s->dim = arena(rank * sizeof(*s->dim));
    for (size_t i = 0; i < rank; i++) {
        s->dim[i] = arena(sizeof(*s->dim[i]));
        onnx__tensor_shape_proto__dimension__init(s->dim[i]);
        if (dims[i] < 0) {
            s->dim[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            s->dim[i]->dim_param = str("batch");
        } else {
            s->dim[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            s->dim[i]->dim_value = dims[i];
        }
    }
    v->type->tensor_type->shape = s;
    return v;
}

static char **strs(const char *const *v, size_t n)
{
    char **out = arena(n * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        out[i] = str(v[i]);
    return out;
}

static Onnx__NodeProto *node(const char *op, const char *name, const char *const *ins, size_t nin,
                             const char *const *outs, size_t nout)
{
    Onnx__NodeProto *n = arena(sizeof(*n));
    onnx__node_proto__init(n);
    n->op_type = str(op);
    n->name = str(name);
    n->n_input = nin;
    n->input = strs(ins, nin);
    n->n_output = nout;
    n->output = strs(outs, nout);
    return n;
}

static Onnx__AttributeProto *attr(Onnx__NodeProto *n, const char *name, int type)
{
    Onnx__AttributeProto **list = arena((n->n_attribute + 1) * sizeof(*list));
    if (n->n_attribute)
        memcpy(list, n->attribute, n->n_attribute * sizeof(*list));
    Onnx__AttributeProto *a = arena(sizeof(*a));
    onnx__attribute_proto__init(a);
    a->name = str(name);
    a->type = type;
    list[n->n_attribute++] = a;
    n->attribute = list;
    return a;
}

typedef struct model {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto op;
    Onnx__OperatorSetIdProto *ops[1];
    Onnx__TensorProto *inits[8];
    Onnx__ValueInfoProto *inputs[8], *outputs[8];
    Onnx__NodeProto *nodes[8];
} model;

/*
 * The test MLP: Z = Relu(X @ W + B), X [batch,4], W [4,3] (raw_data), B [3] (float_data),
 * with a Gemm-like attribute set on the Add node to exercise attributes.
 */
static model *mlp(void)
{
    model *md = arena(sizeof(*md));
    onnx__model_proto__init(&md->m);
    onnx__graph_proto__init(&md->g);
    onnx__operator_set_id_proto__init(&md->op);
    md->op.domain = str("");
    md->op.version = 17;
    md->ops[0] = &md->op;
    md->m.ir_version = 8;
    md->m.producer_name = str("kiln-test");
    md->m.n_opset_import = 1;
    md->m.opset_import = md->ops;
    md->m.graph = &md->g;
    float w[12];
    for (int i = 0; i < 12; i++)
        w[i] = (float)i * 0.5f;
    md->inits[0] = tensor_f32("W", (int64_t[]){4, 3}, 2, w);
    Onnx__TensorProto *b = tensor_f32("B", (int64_t[]){3}, 1, NULL);
    b->raw_data.len = 0;
    b->n_float_data = 3;
    b->float_data = arena(3 * sizeof(float));
    b->float_data[0] = 1.f, b->float_data[1] = 2.f, b->float_data[2] = 3.f;
    md->inits[1] = b;
    md->inputs[0] = vinfo("X", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, (int64_t[]){-1, 4}, 2);
    md->outputs[0] = vinfo("Z", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, (int64_t[]){-1, 3}, 2);
    md->nodes[0] = node("MatMul", "mm", (const char *[]){"X", "W"}, 2, (const char *[]){"h"}, 1);
    md->nodes[1] = node("Add", "", (const char *[]){"h", "B"}, 2, (const char *[]){"y"}, 1);
    md->nodes[2] = node("Relu", "relu", (const char *[]){"y"}, 1, (const char *[]){"Z"}, 1);
    attr(md->nodes[1], "alpha", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)->f = 0.25f;
    attr(md->nodes[1], "transB", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)->i = 1;
    Onnx__AttributeProto *ints =
        attr(md->nodes[1], "axes", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    ints->n_ints = 2;
    ints->ints = arena(2 * sizeof(int64_t));
    ints->ints[0] = -1, ints->ints[1] = 2;
    Onnx__AttributeProto *s =
        attr(md->nodes[1], "mode", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    s->s.data = (uint8_t *)str("constant");
    s->s.len = 8;
    Onnx__AttributeProto *fl =
        attr(md->nodes[1], "scales", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
    fl->n_floats = 2;
    fl->floats = arena(2 * sizeof(float));
    fl->floats[0] = 1.5f, fl->floats[1] = 2.5f;
    Onnx__AttributeProto *ss =
        attr(md->nodes[1], "names", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
    ss->n_strings = 2;
    ss->strings = arena(2 * sizeof(ProtobufCBinaryData));
    ss->strings[0] = (ProtobufCBinaryData){2, (uint8_t *)str("ab")};
    ss->strings[1] = (ProtobufCBinaryData){0, NULL};
    Onnx__AttributeProto *t =
        attr(md->nodes[1], "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    t->t = tensor_f32("", (int64_t[]){2}, 1, (float[]){7.f, 8.f});
    md->g.n_initializer = 2;
    md->g.initializer = md->inits;
    md->g.n_input = 1;
    md->g.input = md->inputs;
    md->g.n_output = 1;
    md->g.output = md->outputs;
    md->g.n_node = 3;
    md->g.node = md->nodes;
    return md;
}

static uint8_t *pack(const model *md, size_t *len)
{
    *len = onnx__model_proto__get_packed_size(&md->m);
    uint8_t *buf = arena(*len);
    onnx__model_proto__pack(&md->m, buf);
    return buf;
}

static kiln_status parse(const model *md, const char *dir, kiln_onnx_model **out, kiln_err *e)
{
    size_t len;
    uint8_t *buf = pack(md, &len);
    return kiln_onnx_model_parse(buf, len, dir, "m/1/model.onnx", out, e);
}

static void expect_error(const model *md, const char *dir, const char *msg)
{
    kiln_onnx_model *m = (kiln_onnx_model *)1;
    kiln_err e;
    assert_status(parse(md, dir, &m, &e), KILN_INVALID_ARGUMENT, &e, msg);
    assert_null(m);
}

/* ---------------------------------------------------------------- tests */

static void mlp_loads(void **state)
{
    (void)state;
    kiln_onnx_model *m;
    kiln_err e;
    assert_ok(parse(mlp(), NULL, &m, &e), &e);
    assert_int_equal(m->opset, 17);
    assert_int_equal(m->ir_version, 8);
    assert_string_equal(m->producer, "kiln-test");
    assert_int_equal(m->n_inputs, 1);
    const kiln_onnx_value *x = &m->values[m->inputs[0]];
    assert_string_equal(x->name, "X");
    assert_int_equal(x->dtype, KILN_DTYPE_FP32);
    assert_true(x->has_shape);
    assert_int_equal(x->rank, 2);
    assert_int_equal(x->dims[0], -1);
    assert_int_equal(x->dims[1], 4);
    assert_int_equal(m->n_initializers, 2);
    const kiln_tensor *w = &m->initializers[0];
    assert_int_equal(w->shape.rank, 2);
    assert_true(((const float *)w->data)[11] == 5.5f);
    assert_true(((const float *)m->initializers[1].data)[2] == 3.f); /* from float_data */
    assert_int_equal(m->values[m->init_values[1]].initializer, 1);
    assert_int_equal(m->n_nodes, 3);
    const kiln_onnx_node *add = &m->nodes[1];
    assert_string_equal(add->name, "node1"); /* unnamed in the file */
    assert_string_equal(add->op, "Add");
    assert_string_equal(add->domain, "");
    assert_int_equal(add->inputs[0], m->nodes[0].outputs[0]);
    assert_int_equal(m->values[add->outputs[0]].producer, 1);
    assert_true(kiln_onnx_node_attr(add, "alpha")->f == 0.25f);
    assert_int_equal(kiln_onnx_node_attr(add, "transB")->i, 1);
    assert_int_equal(kiln_onnx_node_attr(add, "axes")->n, 2);
    assert_int_equal(kiln_onnx_node_attr(add, "axes")->ints[0], -1);
    assert_string_equal(kiln_onnx_node_attr(add, "mode")->s, "constant");
    assert_true(((const float *)kiln_onnx_node_attr(add, "value")->t.data)[1] == 8.f);
    assert_null(kiln_onnx_node_attr(add, "nope"));
    assert_true(kiln_onnx_node_attr(add, "scales")->floats[1] == 2.5f);
    assert_int_equal(kiln_onnx_node_attr(add, "names")->n, 2);
    assert_string_equal(kiln_onnx_node_attr(add, "names")->strings[0], "ab");
    assert_string_equal(kiln_onnx_node_attr(add, "names")->strings[1], "");
    assert_int_equal(m->n_outputs, 1);
    assert_string_equal(m->values[m->outputs[0]].name, "Z");
    assert_int_equal(m->values[m->outputs[0]].dtype, KILN_DTYPE_FP32);
    kiln_onnx_model_free(m);
    kiln_onnx_model_free(NULL);
    arena_reset();
}

/* IR < 4 lists initializers among the inputs too: they are not model inputs. */
static void initializers_listed_as_inputs(void **state)
{
    (void)state;
    model *md = mlp();
    md->inputs[1] = vinfo("W", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, (int64_t[]){4, 3}, 2);
    md->g.n_input = 2;
    md->m.ir_version = 3;
    kiln_onnx_model *m;
    kiln_err e;
    assert_ok(parse(md, NULL, &m, &e), &e);
    assert_int_equal(m->n_inputs, 1);
    kiln_onnx_model_free(m);
    md->inputs[2] = md->inputs[1];
    md->g.n_input = 3;
    expect_error(md, NULL, "input 2 'W' is unnamed or given twice");
    md->g.n_input = 2;
    md->inputs[1]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    expect_error(md, NULL, "input 'W': declared INT64, but it is FP32");
    arena_reset();
}

/* Typed values must fit their type; BOOL bytes become 0/1; value_info hints Kiln cannot use are
 * ignored; non-tensor inputs, oversized files and huge tensors are refused up front. */
static void values_and_limits(void **state)
{
    (void)state;
    model *md = mlp();
    Onnx__TensorProto *u8 = tensor_f32("U", (int64_t[]){2}, 1, NULL);
    u8->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8;
    u8->raw_data.len = 0;
    u8->n_int32_data = 2;
    u8->int32_data = arena(2 * sizeof(int32_t));
    u8->int32_data[0] = 7, u8->int32_data[1] = 300;
    md->inits[2] = u8;
    md->g.n_initializer = 3;
    expect_error(md, NULL, "initializer 'U': value 300 at 1 does not fit UINT8");
    u8->int32_data[1] = 255;
    Onnx__TensorProto *bl = tensor_f32("Bo", (int64_t[]){2}, 1, NULL);
    bl->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__BOOL;
    bl->raw_data.len = 2;
    bl->raw_data.data[0] = 7;
    md->inits[3] = bl;
    md->g.n_initializer = 4;
    Onnx__ValueInfoProto *hint = vinfo("h", ONNX__TENSOR_PROTO__DATA_TYPE__STRING, NULL, 0);
    md->g.n_value_info = 1;
    md->g.value_info = arena(sizeof(*md->g.value_info));
    md->g.value_info[0] = hint;
    kiln_onnx_model *m;
    kiln_err e;
    assert_ok(parse(md, NULL, &m, &e), &e);
    assert_int_equal(((const uint8_t *)m->initializers[2].data)[1], 255);
    assert_int_equal(((const uint8_t *)m->initializers[3].data)[0], 1);
    assert_int_equal(((const uint8_t *)m->initializers[3].data)[1], 0);
    kiln_onnx_model_free(m);

    md = mlp();
    md->inputs[0]->type->value_case = ONNX__TYPE_PROTO__VALUE__NOT_SET;
    expect_error(md, NULL, "input 'X': not a tensor");
    md = mlp();
    md->g.n_output = 0;
    expect_error(md, NULL, "the graph has no outputs");
    md = mlp();
    md->inits[0]->name = str("");
    expect_error(md, NULL, "initializer 0 has no name");
    /* a 16 GiB tensor in external data is refused before anything is allocated */
    md = mlp();
    md->inits[0]->dims[0] = INT64_C(1) << 31;
    md->inits[0]->dims[1] = 2;
    md->inits[0]->raw_data.len = 0;
    md->inits[0]->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    expect_error(md, NULL, "initializer 'W': external data is not allowed here");
    /* the size limit is checked before the bytes are read */
    static const uint8_t one = 0;
    assert_status(
        kiln_onnx_model_parse(&one, (size_t)KILN_ONNX_MAX_FILE_BYTES + 1, NULL, "big.onnx", &m, &e),
        KILN_RESOURCE_EXHAUSTED, &e, "big.onnx: 2147483649 bytes is over the");
    arena_reset();
}

static void structural_errors(void **state)
{
    (void)state;
    model *md = mlp();
    md->nodes[0]->input[0] = str("y"); /* produced by a later node: a cycle */
    expect_error(md, NULL,
                 "m/1/model.onnx: node 'mm' (MatMul) reads 'y', which no model input, "
                 "initializer or earlier node gives (the nodes are not in topological order, or "
                 "the graph has a cycle)");
    md = mlp();
    md->nodes[2]->output[0] = str("h");
    expect_error(md, NULL, "node 'relu' (Relu) writes 'h', which is already");
    md = mlp();
    md->inits[0]->raw_data.len = 12;
    expect_error(md, NULL, "initializer 'W': raw_data has 12 bytes, dims [4,3] of FP32 need 48");
    md = mlp();
    md->inits[1]->n_float_data = 2;
    expect_error(md, NULL, "initializer 'B': holds 2 values, dims [3] need 3");
    md = mlp();
    md->op.version = 9;
    expect_error(md, NULL, "opset 9 is outside the supported 13..21");
    md = mlp();
    md->op.domain = str("com.microsoft");
    expect_error(md, NULL, "imports no default (ai.onnx) operator set");
    md = mlp();
    md->m.graph = NULL;
    expect_error(md, NULL, "the model has no graph");
    md = mlp();
    md->outputs[0]->name = str("nothing");
    expect_error(md, NULL, "output 'nothing' is not produced by any node, input or initializer");
    md = mlp();
    md->inputs[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__STRING;
    expect_error(md, NULL, "input 'X': element type 8 is not supported");
    md = mlp();
    md->outputs[0]->name = str("W"); /* an initializer as an output, declared with another type */
    md->outputs[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    expect_error(md, NULL, "output 'W': declared INT64, but it is FP32");
    md = mlp();
    attr(md->nodes[2], "then_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    expect_error(md, NULL, "node 'relu' (Relu): attribute 'then_branch' is a graph");
    md = mlp();
    md->inits[0]->dims[0] = -4;
    expect_error(md, NULL, "initializer 'W': dims [-4,3]");
    md = mlp();
    md->inits[1]->name = str("W");
    expect_error(md, NULL, "initializer 'W' is given twice");
    md = mlp();
    md->nodes[1]->op_type = str("");
    expect_error(md, NULL, "node 'node1' has no op_type");
    md = mlp();
    md->m.ir_version = 2;
    expect_error(md, NULL, "ir_version 2 is too old");
    arena_reset();
}

/* Every truncation of a valid file is refused cleanly (no crash, no leak). */
static void truncated_files(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = pack(mlp(), &len);
    size_t refused = 0;
    for (size_t n = 0; n < len; n++) {
        kiln_onnx_model *m = NULL;
        kiln_err e;
        kiln_status st = kiln_onnx_model_parse(buf, n, NULL, "t.onnx", &m, &e);
        if (st == KILN_OK) { /* a cut at a field boundary can still be a valid model */
            kiln_onnx_model_free(m);
            continue;
        }
        assert_int_equal(st, KILN_INVALID_ARGUMENT);
        assert_null(m);
        refused++;
    }
    assert_true(refused > len / 2);
    kiln_onnx_model *m;
    kiln_err e;
    assert_status(kiln_onnx_model_parse(buf, len - 3, NULL, "t.onnx", &m, &e),
                  KILN_INVALID_ARGUMENT, &e, "t.onnx: not a valid ONNX model");
    arena_reset();
}

/* An initializer whose data is in a file next to the model. */
static void external_data(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-onnx-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512];
    snprintf(path, sizeof(path), "%s/w.bin", dir);
    FILE *f = fopen(path, "wb");
    float junk = -1.f, w[12];
    for (int i = 0; i < 12; i++)
        w[i] = (float)(100 + i);
    fwrite(&junk, sizeof(junk), 1, f);
    fwrite(w, sizeof(w), 1, f);
    fclose(f);
    char outside[] = "/tmp/kiln-onnx-out-XXXXXX";
    int fd = mkstemp(outside);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, w, sizeof(w)), (ssize_t)sizeof(w));
    close(fd);
    snprintf(path, sizeof(path), "%s/link.bin", dir);
    assert_int_equal(symlink(outside, path), 0);
    snprintf(path, sizeof(path), "%s/inner.bin", dir);
    assert_int_equal(symlink("w.bin", path), 0);
    snprintf(path, sizeof(path), "%s/fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    snprintf(path, sizeof(path), "%s/sub", dir);
    assert_int_equal(mkdir(path, 0700), 0);

    struct {
        const char *location, *offset, *length, *error;
    } cases[] = {
        {"w.bin", "4", "48", NULL},
        {"w.bin", "4", NULL, NULL},
        {"../w.bin", NULL, NULL, "external data location '../w.bin' must be a relative path"},
        {"/etc/passwd", NULL, NULL, "must be a relative path inside the model's directory"},
        {"a/../w.bin", NULL, NULL, "must be a relative path"},
        {"link.bin", NULL, NULL,
         "external data file 'link.bin' lies outside the model's directory"},
        {"w.bin", "40", NULL,
         "external data 'w.bin' has 52 bytes, the tensor needs 48 at offset 40"},
        {"w.bin", "4", "44", "external data length is 44 bytes, its dims and type need 48"},
        {"w.bin", "x", NULL, "external data offset 'x' is not a number"},
        {"missing.bin", NULL, NULL, "external data file 'missing.bin' cannot be opened"},
        {"", NULL, NULL, "must be a relative path"},
        {"fifo", NULL, NULL, "external data 'fifo' is not a regular file"},
        {"sub", NULL, NULL, "external data 'sub' is not a regular file"},
        {"inner.bin", "4", NULL, NULL}, /* a symbolic link that stays inside: fine */
        {"w.bin", "18446744073709551615", NULL,
         "has 52 bytes, the tensor needs 48 at offset 18446744073709551615"},
        {"w.bin", "4", "x", "external data length 'x' is not a number"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        model *md = mlp();
        Onnx__TensorProto *t = md->inits[0];
        t->raw_data.len = 0;
        t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        Onnx__StringStringEntryProto **kv = arena(3 * sizeof(*kv));
        const char *keys[3] = {"location", "offset", "length"};
        const char *vals[3] = {cases[i].location, cases[i].offset, cases[i].length};
        for (int k = 0; k < 3; k++) {
            if (!vals[k])
                continue;
            kv[t->n_external_data] = arena(sizeof(**kv));
            onnx__string_string_entry_proto__init(kv[t->n_external_data]);
            kv[t->n_external_data]->key = str(keys[k]);
            kv[t->n_external_data]->value = str(vals[k]);
            t->n_external_data++;
        }
        t->external_data = kv;
        if (cases[i].error) {
            expect_error(md, dir, cases[i].error);
            continue;
        }
        kiln_onnx_model *m;
        kiln_err e;
        assert_ok(parse(md, dir, &m, &e), &e);
        assert_true(((const float *)m->initializers[0].data)[0] == 100.f);
        assert_true(((const float *)m->initializers[0].data)[11] == 111.f);
        kiln_onnx_model_free(m);
        /* without a directory (parsing from memory) external data is refused */
        expect_error(md, NULL, "initializer 'W': external data is not allowed here");
        arena_reset();
    }
    arena_reset();
    unlink(outside);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void load_from_file(void **state)
{
    (void)state;
    kiln_onnx_model *m;
    kiln_err e;
    assert_status(kiln_onnx_model_load("/nonexistent/model.onnx", &m, &e), KILN_NOT_FOUND, &e,
                  "/nonexistent/model.onnx: cannot read");
    assert_status(kiln_onnx_model_load("/tmp", &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "/tmp: not a regular file");
    char fifo[] = "/tmp/kiln-onnx-fifo-XXXXXX";
    assert_non_null(mkdtemp(fifo));
    char fpath[64];
    snprintf(fpath, sizeof(fpath), "%s/model.onnx", fifo);
    assert_int_equal(mkfifo(fpath, 0600), 0);
    assert_status(kiln_onnx_model_load(fpath, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "not a regular file"); /* refused, without waiting for a writer */
    unlink(fpath);
    rmdir(fifo);
    char path[] = "/tmp/kiln-onnx-file-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len;
    uint8_t *buf = pack(mlp(), &len);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
    assert_ok(kiln_onnx_model_load(path, &m, &e), &e);
    assert_int_equal(m->n_nodes, 3);
    kiln_onnx_model_free(m);
    unlink(path);
    arena_reset();
}

static void allocation_failures_never_leak(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = pack(mlp(), &len);
    for (long n = 0; n < 1000; n++) {
        kiln_err e;
        kiln_onnx_model *m = NULL;
        kiln_alloc_fail_after(n);
        kiln_status st = kiln_onnx_model_parse(buf, len, NULL, "t.onnx", &m, &e);
        kiln_alloc_fail_after(-1);
        if (st == KILN_OK) {
            kiln_onnx_model_free(m);
            arena_reset();
            return; /* every allocation point before success was failed once */
        }
        assert_int_equal(st, KILN_RESOURCE_EXHAUSTED);
        assert_null(m);
    }
    fail_msg("parse still failing after 1000 allocations");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mlp_loads),         cmocka_unit_test(initializers_listed_as_inputs),
        cmocka_unit_test(values_and_limits), cmocka_unit_test(structural_errors),
        cmocka_unit_test(truncated_files),   cmocka_unit_test(external_data),
        cmocka_unit_test(load_from_file),    cmocka_unit_test(allocation_failures_never_leak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
