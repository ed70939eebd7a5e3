/*
 * proto/onnx_model.c: loads an ONNX model file into kiln_onnx_model and checks its structure
 * (see proto/onnx_model.h for what is guaranteed).
 */
#include "proto/onnx_model.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "proto/onnx_int.h"

#define NOMEM(err)                                                                                 \
    kiln_err_set((err), KILN_RESOURCE_EXHAUSTED, "out of memory loading an ONNX model")

kiln_status kiln__onnx_bad(kiln_err *err, const kiln_onnx_ctx *c, const char *fmt, ...)
{
    char msg[KILN_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: %s", c->source, msg);
}

/* ---------------------------------------------------------------- the name table */

typedef struct build {
    kiln_onnx_ctx c;
    kiln_onnx_model *m;
    size_t cap_values;
    int32_t *slots; /* open addressing: value index + 1, 0 = empty */
    size_t n_slots; /* a power of two, at least twice cap_values */
    bool *listed;   /* per initializer: already listed among the graph inputs */
} build;

static uint64_t hash(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    return h;
}

/* The slot where `name` is, or the empty slot where it would go. */
static int32_t *slot_of(const build *b, const char *name)
{
    size_t mask = b->n_slots - 1;
    for (size_t i = hash(name) & mask;; i = (i + 1) & mask) {
        int32_t *s = &b->slots[i];
        if (!*s || strcmp(b->m->values[*s - 1].name, name) == 0)
            return s;
    }
}

static int32_t find_value(const build *b, const char *name)
{
    return *slot_of(b, name) - 1;
}

/* Adds a new value named `name` (the caller checked it is new). OUT: *idx. */
static kiln_status add_value(build *b, const char *name, int32_t producer, int32_t *idx,
                             kiln_err *err)
{
    kiln_onnx_model *m = b->m;
    if (m->n_values == b->cap_values)
        return kiln__onnx_bad(err, &b->c, "internal: value table full");
    kiln_onnx_value *v = &m->values[m->n_values];
    v->name = kiln_strdup(name);
    if (!v->name)
        return NOMEM(err);
    v->producer = producer;
    v->initializer = -1;
    *slot_of(b, name) = (int32_t)(m->n_values + 1);
    *idx = (int32_t)m->n_values++;
    return KILN_OK;
}

/* ---------------------------------------------------------------- types */

/*
 * Fills v's dtype and shape from a ValueInfoProto's type, if it gives them; v is unchanged on
 * error.
 */
static kiln_status apply_type(const build *b, const char *what, const Onnx__ValueInfoProto *vi,
                              kiln_onnx_value *v, kiln_err *err)
{
    const Onnx__TypeProto *t = vi->type;
    if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
        return kiln__onnx_bad(err, &b->c,
                              "%s '%s': not a tensor (sequence, map and optional types are not "
                              "supported)",
                              what, vi->name);
    const Onnx__TypeProto__Tensor *tt = t->tensor_type;
    kiln_dtype dt = kiln__onnx_dtype(tt->elem_type);
    if (dt == KILN_DTYPE_INVALID)
        return kiln__onnx_bad(err, &b->c, "%s '%s': element type %d is not supported", what,
                              vi->name, tt->elem_type);
    if (v->dtype != KILN_DTYPE_INVALID && v->dtype != dt)
        return kiln__onnx_bad(err, &b->c, "%s '%s': declared %s, but it is %s", what, vi->name,
                              kiln_dtype_name(dt), kiln_dtype_name(v->dtype));
    kiln_onnx_value nv = *v;
    nv.dtype = dt;
    if (tt->shape && !v->has_shape) {
        if (tt->shape->n_dim > KILN_MAX_RANK)
            return kiln__onnx_bad(err, &b->c, "%s '%s': rank %zu is over the limit of %d", what,
                                  vi->name, tt->shape->n_dim, KILN_MAX_RANK);
        nv.rank = (int)tt->shape->n_dim;
        for (size_t d = 0; d < tt->shape->n_dim; d++) {
            const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
            bool known = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            if (known && dim->dim_value < 0)
                return kiln__onnx_bad(err, &b->c, "%s '%s': dim %zu is %" PRId64, what, vi->name, d,
                                      dim->dim_value);
            nv.dims[d] = known ? dim->dim_value : -1;
        }
        nv.has_shape = true;
    }
    *v = nv;
    return KILN_OK;
}

/* ---------------------------------------------------------------- nodes */

static char *dup_bytes(const uint8_t *p, size_t n)
{
    char *s = kiln_malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static kiln_status convert_attr(const build *b, const kiln_onnx_node *n,
                                const Onnx__AttributeProto *a, kiln_onnx_attr *o, kiln_err *err)
{
    char what[KILN_ERR_MSG_MAX / 2];
    snprintf(what, sizeof(what), "node '%s' (%s): attribute '%s'", n->name, n->op, a->name);
    if (a->ref_attr_name && a->ref_attr_name[0])
        return kiln__onnx_bad(err, &b->c,
                              "%s refers to a function attribute; functions are not "
                              "supported",
                              what);
    if (!(o->name = kiln_strdup(a->name)))
        return NOMEM(err);
    o->type = (kiln_onnx_attr_type)a->type;
    switch (a->type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
        o->f = a->f;
        return KILN_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
        o->i = a->i;
        return KILN_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
        o->s_len = a->s.len;
        return (o->s = dup_bytes(a->s.data, a->s.len)) ? KILN_OK : NOMEM(err);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR:
        if (!a->t)
            return kiln__onnx_bad(err, &b->c, "%s has type TENSOR but no tensor", what);
        return kiln__onnx_tensor(&b->c, what, a->t, &o->t, err);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        o->n = a->n_floats;
        if (!(o->floats = kiln_calloc(o->n ? o->n : 1, sizeof(float))))
            return NOMEM(err);
        if (o->n)
            memcpy(o->floats, a->floats, o->n * sizeof(float));
        return KILN_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        o->n = a->n_ints;
        if (!(o->ints = kiln_calloc(o->n ? o->n : 1, sizeof(int64_t))))
            return NOMEM(err);
        if (o->n)
            memcpy(o->ints, a->ints, o->n * sizeof(int64_t));
        return KILN_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
        if (!(o->strings = kiln_calloc(a->n_strings ? a->n_strings : 1, sizeof(char *))))
            return NOMEM(err);
        for (; o->n < a->n_strings; o->n++)
            if (!(o->strings[o->n] = dup_bytes(a->strings[o->n].data, a->strings[o->n].len)))
                return NOMEM(err);
        return KILN_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH:
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS:
        return kiln__onnx_bad(err, &b->c, "%s is a graph (control flow), which is not supported",
                              what);
    default:
        return kiln__onnx_bad(err, &b->c, "%s has type %d, which is not supported", what,
                              (int)a->type);
    }
}

static kiln_status convert_node(build *b, size_t idx, const Onnx__NodeProto *np, kiln_err *err)
{
    kiln_onnx_node *n = &b->m->nodes[idx];
    char fallback[32];
    snprintf(fallback, sizeof(fallback), "node%zu", idx);
    n->name = kiln_strdup(np->name && np->name[0] ? np->name : fallback);
    n->op = kiln_strdup(np->op_type ? np->op_type : "");
    bool default_domain = !np->domain || !np->domain[0] || strcmp(np->domain, "ai.onnx") == 0;
    n->domain = kiln_strdup(default_domain ? "" : np->domain);
    n->inputs = kiln_calloc(np->n_input ? np->n_input : 1, sizeof(int32_t));
    n->outputs = kiln_calloc(np->n_output ? np->n_output : 1, sizeof(int32_t));
    n->attrs = kiln_calloc(np->n_attribute ? np->n_attribute : 1, sizeof(kiln_onnx_attr));
    if (!n->name || !n->op || !n->domain || !n->inputs || !n->outputs || !n->attrs)
        return NOMEM(err);
    if (!n->op[0])
        return kiln__onnx_bad(err, &b->c, "node '%s' has no op_type", n->name);
    for (; n->n_inputs < np->n_input; n->n_inputs++) {
        const char *in = np->input[n->n_inputs];
        int32_t v = in[0] ? find_value(b, in) : -1;
        if (in[0] && v < 0)
            return kiln__onnx_bad(err, &b->c,
                                  "node '%s' (%s) reads '%s', which no model input, initializer "
                                  "or earlier node gives (the nodes are not in topological "
                                  "order, or the graph has a cycle)",
                                  n->name, n->op, in);
        n->inputs[n->n_inputs] = v;
    }
    for (; n->n_outputs < np->n_output; n->n_outputs++) {
        const char *out = np->output[n->n_outputs];
        int32_t v = -1;
        if (out[0]) {
            if (find_value(b, out) >= 0)
                return kiln__onnx_bad(err, &b->c,
                                      "node '%s' (%s) writes '%s', which is already a model "
                                      "input, an initializer or another node's output",
                                      n->name, n->op, out);
            kiln_status st = add_value(b, out, (int32_t)idx, &v, err);
            if (st != KILN_OK)
                return st;
        }
        n->outputs[n->n_outputs] = v;
    }
    for (; n->n_attrs < np->n_attribute; n->n_attrs++) {
        kiln_status st = convert_attr(b, n, np->attribute[n->n_attrs], &n->attrs[n->n_attrs], err);
        if (st != KILN_OK) {
            n->n_attrs++; /* so that free sees the partly converted attribute */
            return st;
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- the model */

static kiln_status check_header(const build *b, const Onnx__ModelProto *mp, kiln_err *err)
{
    if (mp->ir_version < 3)
        return kiln__onnx_bad(err, &b->c, "ir_version %" PRId64 " is too old (3 or later needed)",
                              mp->ir_version);
    int64_t opset = 0;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if (!o->domain || !o->domain[0] || strcmp(o->domain, "ai.onnx") == 0)
            opset = o->version;
    }
    if (!opset)
        return kiln__onnx_bad(err, &b->c, "the model imports no default (ai.onnx) operator set");
    if (opset < KILN_ONNX_MIN_OPSET || opset > KILN_ONNX_MAX_OPSET)
        return kiln__onnx_bad(err, &b->c,
                              "opset %" PRId64 " is outside the supported %d..%d (re-export the "
                              "model with opset_version in that range)",
                              opset, KILN_ONNX_MIN_OPSET, KILN_ONNX_MAX_OPSET);
    b->m->opset = opset;
    b->m->ir_version = mp->ir_version;
    if (!mp->graph)
        return kiln__onnx_bad(err, &b->c, "the model has no graph");
    return KILN_OK;
}

static kiln_status convert_graph(build *b, const Onnx__GraphProto *g, kiln_err *err)
{
    kiln_onnx_model *m = b->m;
    kiln_status st;
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *tp = g->initializer[i];
        char what[KILN_ERR_MSG_MAX / 2];
        snprintf(what, sizeof(what), "initializer '%s'", tp->name);
        if (!tp->name[0])
            return kiln__onnx_bad(err, &b->c, "initializer %zu has no name", i);
        if (find_value(b, tp->name) >= 0)
            return kiln__onnx_bad(err, &b->c, "%s is given twice", what);
        int32_t v;
        if ((st = add_value(b, tp->name, -1, &v, err)) != KILN_OK)
            return st;
        m->init_values[m->n_initializers] = v;
        if ((st = kiln__onnx_tensor(&b->c, what, tp, &m->initializers[m->n_initializers], err)) !=
            KILN_OK)
            return st;
        const kiln_tensor *t = &m->initializers[m->n_initializers];
        m->values[v].initializer = (int32_t)m->n_initializers++;
        m->values[v].dtype = t->dtype;
        m->values[v].has_shape = true;
        m->values[v].rank = t->shape.rank;
        memcpy(m->values[v].dims, t->shape.dims, sizeof(t->shape.dims));
    }
    bool *listed = b->listed; /* initializers already listed as inputs */
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        int32_t v = find_value(b, vi->name);
        if (v >= 0 && m->values[v].initializer >= 0 && !listed[m->values[v].initializer]) {
            /* an initializer listed as an input (IR < 4): not a model input, same type */
            listed[m->values[v].initializer] = true;
            if ((st = apply_type(b, "input", vi, &m->values[v], err)) != KILN_OK)
                return st;
            continue;
        }
        if (v >= 0 || !vi->name[0])
            return kiln__onnx_bad(err, &b->c, "input %zu '%s' is unnamed or given twice", i,
                                  vi->name);
        if ((st = add_value(b, vi->name, -1, &v, err)) != KILN_OK ||
            (st = apply_type(b, "input", vi, &m->values[v], err)) != KILN_OK)
            return st;
        m->inputs[m->n_inputs++] = v;
    }
    for (size_t i = 0; i < g->n_node; i++) {
        m->n_nodes = i + 1; /* counted first, so free sees the partly converted node */
        if ((st = convert_node(b, i, g->node[i], err)) != KILN_OK)
            return st;
    }
    for (size_t i = 0; i < g->n_output; i++) {
        const Onnx__ValueInfoProto *vi = g->output[i];
        int32_t v = find_value(b, vi->name);
        if (v < 0)
            return kiln__onnx_bad(err, &b->c,
                                  "output '%s' is not produced by any node, input or "
                                  "initializer",
                                  vi->name);
        if ((st = apply_type(b, "output", vi, &m->values[v], err)) != KILN_OK)
            return st;
        m->outputs[m->n_outputs++] = v;
    }
    if (!m->n_outputs)
        return kiln__onnx_bad(err, &b->c, "the graph has no outputs");
    /* value_info: types of intermediate values, where the exporter recorded them; optional
     * hints, so one Kiln cannot use is ignored */
    for (size_t i = 0; i < g->n_value_info; i++) {
        int32_t v = find_value(b, g->value_info[i]->name);
        kiln_err ignored;
        if (v >= 0 && m->values[v].producer >= 0)
            (void)apply_type(b, "value", g->value_info[i], &m->values[v], &ignored);
    }
    return KILN_OK;
}

/* Sizes the tables for a graph. */
static kiln_status reserve(build *b, const Onnx__GraphProto *g, kiln_err *err)
{
    kiln_onnx_model *m = b->m;
    size_t cap = g->n_initializer + g->n_input + 1;
    for (size_t i = 0; i < g->n_node; i++)
        cap += g->node[i]->n_output;
    b->cap_values = cap;
    b->n_slots = 16;
    while (b->n_slots < 2 * cap)
        b->n_slots *= 2;
    b->slots = kiln_calloc(b->n_slots, sizeof(int32_t));
    m->values = kiln_calloc(cap, sizeof(kiln_onnx_value));
    m->inputs = kiln_calloc(g->n_input + 1, sizeof(int32_t));
    m->outputs = kiln_calloc(g->n_output + 1, sizeof(int32_t));
    m->initializers = kiln_calloc(g->n_initializer + 1, sizeof(kiln_tensor));
    m->init_values = kiln_calloc(g->n_initializer + 1, sizeof(int32_t));
    m->nodes = kiln_calloc(g->n_node + 1, sizeof(kiln_onnx_node));
    b->listed = kiln_calloc(g->n_initializer + 1, sizeof(bool));
    if (!b->slots || !m->values || !m->inputs || !m->outputs || !m->initializers ||
        !m->init_values || !m->nodes || !b->listed)
        return NOMEM(err);
    return KILN_OK;
}

/*
 * protobuf-c's memory while it unpacks a file: bounded, because a small file of empty messages
 * unpacks into many times its size (each message is a struct and a pointer).
 */
typedef struct unpack_budget {
    uint64_t left;
    bool exhausted; /* over the budget */
    bool oom;       /* the allocator itself failed */
} unpack_budget;

static void *budget_alloc(void *data, size_t size)
{
    unpack_budget *u = data;
    size_t need = size + 16; /* a header remembers the size for budget_free */
    if (need < size || need > u->left) {
        u->exhausted = true;
        return NULL;
    }
    uint64_t *p = kiln_malloc(need);
    if (!p) {
        u->oom = true;
        return NULL;
    }
    u->left -= need;
    p[0] = need;
    return p + 2;
}

static void budget_free(void *data, void *ptr)
{
    unpack_budget *u = data;
    if (!ptr)
        return;
    uint64_t *p = (uint64_t *)ptr - 2;
    u->left += p[0];
    kiln_free(p);
}

kiln_status kiln_onnx_model_parse(const void *data, size_t len, const char *dir, const char *source,
                                  kiln_onnx_model **out, kiln_err *err)
{
    *out = NULL;
    build b = {.c = {.source = source ? source : "model.onnx", .dir = dir}};
    if ((uint64_t)len > KILN_ONNX_MAX_FILE_BYTES)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "%s: %zu bytes is over the %" PRIu64 "-byte limit for a model file "
                            "(keep large weights in external data)",
                            b.c.source, len, KILN_ONNX_MAX_FILE_BYTES);
    unpack_budget budget = {.left = KILN_ONNX_UNPACK_BYTES(len)};
    ProtobufCAllocator alloc = {
        .alloc = budget_alloc, .free = budget_free, .allocator_data = &budget};
    Onnx__ModelProto *mp = onnx__model_proto__unpack(&alloc, len, data);
    if (!mp && budget.oom)
        return NOMEM(err);
    if (!mp && budget.exhausted)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "%s: unpacking the file needs more than %" PRIu64 " bytes of memory "
                            "(the limit for a %zu-byte file)",
                            b.c.source, KILN_ONNX_UNPACK_BYTES(len), len);
    if (!mp)
        return kiln__onnx_bad(err, &b.c,
                              "not a valid ONNX model (the protobuf does not parse: a "
                              "truncated or corrupt file?)");
    kiln_status st = KILN_OK;
    if (!(b.m = kiln_calloc(1, sizeof(*b.m))))
        st = NOMEM(err);
    if (st == KILN_OK)
        st = check_header(&b, mp, err);
    if (st == KILN_OK && !(b.m->producer = kiln_strdup(mp->producer_name ? mp->producer_name : "")))
        st = NOMEM(err);
    if (st == KILN_OK)
        st = reserve(&b, mp->graph, err);
    if (st == KILN_OK)
        st = convert_graph(&b, mp->graph, err);
    onnx__model_proto__free_unpacked(mp, &alloc);
    kiln_free(b.slots);
    kiln_free(b.listed);
    if (st != KILN_OK) {
        kiln_onnx_model_free(b.m);
        return st;
    }
    *out = b.m;
    return KILN_OK;
}

kiln_status kiln_onnx_model_load(const char *path, kiln_onnx_model **out, kiln_err *err)
{
    *out = NULL;
    /* O_NONBLOCK: a FIFO in place of the model must not hang the load; it is refused below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return kiln_err_set(err, errno == ENOENT ? KILN_NOT_FOUND : KILN_INVALID_ARGUMENT,
                            "%s: cannot read: %s", path, strerror(errno));
    struct stat sb;
    FILE *f = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || !(f = fdopen(fd, "rb"))) {
        close(fd);
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > KILN_ONNX_MAX_FILE_BYTES) {
        fclose(f);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "%s: %lld bytes is over the %" PRIu64 "-byte limit for a model file "
                            "(keep large weights in external data)",
                            path, (long long)sb.st_size, KILN_ONNX_MAX_FILE_BYTES);
    }
    size_t n = (size_t)sb.st_size;
    void *buf = kiln_malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return NOMEM(err);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    kiln_status st;
    if (got != n) {
        st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: short read", path);
    } else {
        char dir[4096];
        const char *slash = strrchr(path, '/');
        if (slash)
            snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
        else
            snprintf(dir, sizeof(dir), ".");
        if (!dir[0])
            snprintf(dir, sizeof(dir), "/");
        st = kiln_onnx_model_parse(buf, n, dir, path, out, err);
    }
    kiln_free(buf);
    return st;
}

static void free_attr(kiln_onnx_attr *a)
{
    kiln_free(a->name);
    kiln_free(a->s);
    kiln_free(a->floats);
    kiln_free(a->ints);
    for (size_t i = 0; a->strings && i < a->n; i++)
        kiln_free(a->strings[i]);
    kiln_free(a->strings);
    kiln_tensor_fini(&a->t);
}

void kiln_onnx_model_free(kiln_onnx_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; m->values && i < m->n_values; i++)
        kiln_free(m->values[i].name);
    kiln_free(m->values);
    kiln_free(m->inputs);
    kiln_free(m->outputs);
    for (size_t i = 0; m->initializers && i < m->n_initializers; i++)
        kiln_tensor_fini(&m->initializers[i]);
    kiln_free(m->initializers);
    kiln_free(m->init_values);
    for (size_t i = 0; m->nodes && i < m->n_nodes; i++) {
        kiln_onnx_node *n = &m->nodes[i];
        kiln_free(n->name);
        kiln_free(n->op);
        kiln_free(n->domain);
        kiln_free(n->inputs);
        kiln_free(n->outputs);
        for (size_t k = 0; n->attrs && k < n->n_attrs; k++)
            free_attr(&n->attrs[k]);
        kiln_free(n->attrs);
    }
    kiln_free(m->nodes);
    kiln_free(m->producer);
    kiln_free(m);
}

kiln_dtype kiln_onnx_dtype(int32_t onnx_type)
{
    return kiln__onnx_dtype(onnx_type);
}

const kiln_onnx_attr *kiln_onnx_node_attr(const kiln_onnx_node *n, const char *name)
{
    for (size_t i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0)
            return &n->attrs[i];
    return NULL;
}
