/*
 * backends/onnx/optimize.c: what load does to an ONNX graph before it runs (runtime_int.h):
 * constant folding, BatchNormalization folded into the Conv before it, the Add of a constant row
 * after a MatMul folded into it as a bias, and activations fused into the GEMM-like step before
 * them. Each rewrite keeps the graph's results: BatchNormalization in inference mode is
 * y = (x - mean) * scale / sqrt(var + eps) + bias per channel, which on a Conv's output is the
 * same Conv with each output channel's weights scaled by scale / sqrt(var + eps) and its bias
 * moved accordingly.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backends/onnx/runtime_int.h"
#include "common/alloc.h"

/* Runs every step whose inputs are all constants now; its outputs become constants. */
static kiln_status fold_constants(kiln_backend_model *m, kiln_err *err)
{
    for (size_t i = 0; i < m->n_steps; i++) {
        kiln_onnx_step *s = &m->steps[i];
        bool all = true;
        for (size_t k = 0; all && k < s->n_in; k++)
            all = s->in[k] < 0 || m->consts[s->in[k]].storage;
        if (!all)
            continue;
        kiln_err e;
        if (kiln__onnx_run_step(m, s, m->consts, NULL, &e) != KILN_OK)
            return kiln_err_set(err, e.code, "model '%s': at load (its inputs are constants): %s",
                                m->name, e.msg);
        s->dead = true;
        m->n_folded++;
    }
    return KILN_OK;
}

/* Per value: the live step that makes it (-1: none) and how many live steps read it. */
static kiln_status readers(const kiln_backend_model *m, int32_t **prod, int32_t **uses,
                           kiln_err *err)
{
    *prod = kiln_malloc((m->n_values + 1) * sizeof(int32_t));
    *uses = kiln_calloc(m->n_values + 1, sizeof(int32_t));
    if (!*prod || !*uses) {
        kiln_free(*prod);
        kiln_free(*uses);
        *prod = *uses = NULL;
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t v = 0; v < m->n_values; v++)
        (*prod)[v] = -1;
    for (size_t i = 0; i < m->n_steps; i++) {
        const kiln_onnx_step *s = &m->steps[i];
        if (s->dead)
            continue;
        for (size_t k = 0; k < s->n_in; k++)
            if (s->in[k] >= 0)
                (*uses)[s->in[k]]++;
        for (size_t k = 0; k < s->n_out; k++)
            if (s->out[k] >= 0)
                (*prod)[s->out[k]] = (int32_t)i;
    }
    return KILN_OK;
}

/* The step that alone reads value x and makes it as its first output: the step to fuse into. */
static kiln_onnx_step *sole_producer(kiln_backend_model *m, const int32_t *prod,
                                     const int32_t *uses, int32_t x, const char *op)
{
    if (x < 0 || prod[x] < 0 || uses[x] != 1 || m->is_output[x])
        return NULL;
    kiln_onnx_step *s = &m->steps[prod[x]];
    if (s->out[0] != x || s->act.kind != KILN_ONNX_ACT_NONE)
        return NULL;
    return op ? (strcmp(s->node->op, op) == 0 ? s : NULL) : (s->kernel->fuses_act ? s : NULL);
}

/* The constant FP32 tensor of value v when it has `count` elements, else NULL. */
static const kiln_tensor *const_f32(const kiln_backend_model *m, int32_t v, int64_t count)
{
    if (v < 0 || !m->consts[v].storage || m->consts[v].dtype != KILN_DTYPE_FP32)
        return NULL;
    const kiln_tensor *t = &m->consts[v];
    return count < 0 || (int64_t)(t->byte_size / sizeof(float)) == count ? t : NULL;
}

static float attr_f(const kiln_onnx_node *n, const char *name, float dflt)
{
    const kiln_onnx_attr *a = kiln_onnx_node_attr(n, name);
    return a && a->type == KILN_ONNX_ATTR_FLOAT ? a->f : dflt;
}

/* Folds BatchNormalization t into Conv s (checked by the caller to be foldable) when its
 * parameters are constants of the right sizes; returns whether it did. */
static kiln_status fold_one_bn(kiln_backend_model *m, kiln_onnx_step *s, kiln_onnx_step *t,
                               bool *done, kiln_err *err)
{
    *done = false;
    const kiln_tensor *w = const_f32(m, s->in[1], -1);
    if (!w || w->shape.rank != 4 || t->n_in < 5)
        return KILN_OK;
    int64_t M = w->shape.dims[0];
    const kiln_tensor *b = s->n_in > 2 && s->in[2] >= 0 ? const_f32(m, s->in[2], M) : NULL;
    if (s->n_in > 2 && s->in[2] >= 0 && !b)
        return KILN_OK; /* a bias that is not a constant */
    const kiln_tensor *sc = const_f32(m, t->in[1], M), *bi = const_f32(m, t->in[2], M),
                      *mean = const_f32(m, t->in[3], M), *var = const_f32(m, t->in[4], M);
    const kiln_onnx_attr *training = kiln_onnx_node_attr(t->node, "training_mode");
    if (!sc || !bi || !mean || !var || (training && training->i != 0))
        return KILN_OK;
    for (size_t k = 1; k < t->n_out; k++)
        if (t->out[k] >= 0)
            return KILN_OK; /* training outputs */
    float eps = attr_f(t->node, "epsilon", 1e-5f);
    kiln_tensor nw, nb;
    kiln_shape bs = {.rank = 1, .dims = {M}};
    kiln_status st = kiln_tensor_alloc(KILN_DTYPE_FP32, &w->shape, 0, &nw, err);
    if (st != KILN_OK)
        return st;
    if ((st = kiln_tensor_alloc(KILN_DTYPE_FP32, &bs, 0, &nb, err)) != KILN_OK) {
        kiln_tensor_fini(&nw);
        return st;
    }
    size_t per = M ? w->byte_size / sizeof(float) / (size_t)M : 0;
    const float *W = w->data, *B = b ? b->data : NULL, *S = sc->data, *BI = bi->data,
                *MEAN = mean->data, *VAR = var->data;
    float *NW = nw.data, *NB = nb.data;
    for (int64_t o = 0; o < M; o++) {
        float a = S[o] / sqrtf(VAR[o] + eps);
        for (size_t j = 0; j < per; j++)
            NW[(size_t)o * per + j] = W[(size_t)o * per + j] * a;
        NB[o] = ((B ? B[o] : 0.f) - MEAN[o]) * a + BI[o];
    }
    int32_t vw, vb;
    if ((st = kiln__onnx_new_value(m, &vw, err)) != KILN_OK ||
        (st = kiln__onnx_new_value(m, &vb, err)) != KILN_OK) {
        kiln_tensor_fini(&nw);
        kiln_tensor_fini(&nb);
        return st;
    }
    m->consts[vw] = nw;
    m->consts[vb] = nb;
    s->in[1] = vw;
    s->in[2] = vb;
    s->n_in = 3;
    s->out[0] = t->out[0];
    t->dead = true;
    *done = true;
    return KILN_OK;
}

static kiln_status fold_batchnorm(kiln_backend_model *m, kiln_err *err)
{
    int32_t *prod, *uses;
    kiln_status st = readers(m, &prod, &uses, err);
    for (size_t i = 0; st == KILN_OK && i < m->n_steps; i++) {
        kiln_onnx_step *t = &m->steps[i];
        if (t->dead || strcmp(t->node->op, "BatchNormalization") != 0 || t->n_in < 1)
            continue;
        kiln_onnx_step *s = sole_producer(m, prod, uses, t->in[0], "Conv");
        bool done = false;
        if (s && (st = fold_one_bn(m, s, t, &done, err)) == KILN_OK && done)
            m->n_bn_folded++;
    }
    kiln_free(prod);
    kiln_free(uses);
    return st;
}

/*
 * Add t of MatMul s's output and a constant row b folds into s as its bias when s alone makes
 * t's input (t its only reader), s's B is a constant matrix [..., K, N] and b is FP32 of shape
 * [N]: then b broadcasts over s's output exactly as the Add did (one value per column, and the
 * output's shape unchanged), and adding it in the MatMul's own output pass saves a pass over
 * the output. A [1, N] row is left alone: with a 1-D A the Add would have made the output 2-D.
 */
static kiln_status fold_biases(kiln_backend_model *m, kiln_err *err)
{
    int32_t *prod, *uses;
    kiln_status st = readers(m, &prod, &uses, err);
    for (size_t i = 0; st == KILN_OK && i < m->n_steps; i++) {
        kiln_onnx_step *t = &m->steps[i];
        if (t->dead || strcmp(t->node->op, "Add") != 0 || t->n_in != 2 || t->n_out != 1)
            continue;
        for (int side = 0; side < 2; side++) {
            kiln_onnx_step *s = sole_producer(m, prod, uses, t->in[side], "MatMul");
            const kiln_tensor *b = const_f32(m, t->in[1 - side], -1);
            const kiln_tensor *w = s && s->n_in == 2 ? const_f32(m, s->in[1], -1) : NULL;
            if (!b || !w || w->shape.rank < 2 || b->shape.rank != 1 ||
                b->shape.dims[0] != w->shape.dims[w->shape.rank - 1])
                continue;
            s->in[2] = t->in[1 - side];
            s->n_in = 3;
            s->out[0] = t->out[0];
            t->dead = true;
            m->n_bias_fused++;
            break;
        }
    }
    kiln_free(prod);
    kiln_free(uses);
    return st;
}

/* The activation step t computes, when it can be fused (its parameters are constants). */
static bool activation_of(const kiln_backend_model *m, const kiln_onnx_step *t, kiln_onnx_act *act)
{
    const char *op = t->node->op;
    if (strcmp(op, "Relu") == 0) {
        *act = (kiln_onnx_act){.kind = KILN_ONNX_ACT_RELU};
        return true;
    }
    if (strcmp(op, "LeakyRelu") == 0) {
        *act = (kiln_onnx_act){.kind = KILN_ONNX_ACT_LEAKY, .a = attr_f(t->node, "alpha", 0.01f)};
        return true;
    }
    if (strcmp(op, "Clip") != 0)
        return false;
    *act = (kiln_onnx_act){.kind = KILN_ONNX_ACT_CLIP, .a = -INFINITY, .b = INFINITY};
    for (size_t k = 1; k < 3 && k < t->n_in; k++) {
        if (t->in[k] < 0)
            continue;
        const kiln_tensor *c = const_f32(m, t->in[k], 1);
        if (!c)
            return false;
        *(k == 1 ? &act->a : &act->b) = *(const float *)c->data;
    }
    return true;
}

static kiln_status fuse_activations(kiln_backend_model *m, kiln_err *err)
{
    int32_t *prod, *uses;
    kiln_status st = readers(m, &prod, &uses, err);
    for (size_t i = 0; st == KILN_OK && i < m->n_steps; i++) {
        kiln_onnx_step *t = &m->steps[i];
        kiln_onnx_act act;
        if (t->dead || t->n_in < 1 || t->n_out != 1 || !activation_of(m, t, &act))
            continue;
        kiln_onnx_step *s = sole_producer(m, prod, uses, t->in[0], NULL);
        if (!s)
            continue;
        s->act = act;
        s->out[0] = t->out[0];
        t->dead = true;
        m->n_act_fused++;
    }
    kiln_free(prod);
    kiln_free(uses);
    return st;
}

kiln_status kiln__onnx_optimize(kiln_backend_model *m, kiln_err *err)
{
    kiln_status st = fold_constants(m, err);
    if (st == KILN_OK)
        st = fold_batchnorm(m, err);
    if (st == KILN_OK)
        st = fold_biases(m, err);
    if (st == KILN_OK)
        st = fuse_activations(m, err);
    return st;
}
