/*
 * registry/warmup.c: the config's model_warmup samples, run on every instance of a version
 * right after its load (kiln__registry_warmup, registry_int.h), whatever the backend.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "registry/registry_int.h"

/* Fills t (dtype dt, n elements) with fixed-seed values: floats in [-1, 1) (FP16 in [1, 2)),
 * integers 0..15, booleans 0 or 1. */
static void fill_random(kiln_tensor *t, uint64_t n)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    unsigned char *p = t->data;
    size_t es = kiln_dtype_size(t->dtype);
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        float f = (float)(x >> 40) / (float)(1u << 24) * 2.f - 1.f;
        uint64_t small = (x >> 33) % 16;
        unsigned char *q = p + i * es;
        switch (t->dtype) {
        case KILN_DTYPE_FP32:
            memcpy(q, &f, 4);
            break;
        case KILN_DTYPE_FP64: {
            double d = f;
            memcpy(q, &d, 8);
            break;
        }
        case KILN_DTYPE_BF16: {
            uint32_t b;
            memcpy(&b, &f, 4);
            uint16_t h = (uint16_t)(b >> 16);
            memcpy(q, &h, 2);
            break;
        }
        case KILN_DTYPE_FP16: {
            uint16_t h = (uint16_t)(0x3C00u | ((x >> 20) & 0x3FFu));
            memcpy(q, &h, 2);
            break;
        }
        case KILN_DTYPE_BOOL:
            *q = (unsigned char)(small & 1);
            break;
        default: /* integers, little-endian */
            memset(q, 0, es);
            *q = (unsigned char)small;
            break;
        }
    }
}

/* Makes the tensor of warmup input x for `rows` (0: no batch dim). */
static kiln_status make_input(const kiln_warmup_input *x, uint32_t rows, const char *model_dir,
                              const char *what, kiln_tensor *t, kiln_err *err)
{
    kiln_shape s = {.rank = 0};
    if (rows)
        s.dims[s.rank++] = rows;
    for (int d = 0; d < x->dims.rank; d++)
        s.dims[s.rank++] = x->dims.dims[d];
    uint64_t numel = 0, bytes = 0;
    kiln_status st = kiln_shape_numel(&s, &numel, err);
    if (st != KILN_OK)
        return st;
    bool text = x->dtype == KILN_DTYPE_BYTES;
    if (!text &&
        (st = kiln_shape_byte_size(x->dtype, &s, UINT64_C(1) << 32, &bytes, err)) != KILN_OK)
        return st;
    FILE *f = NULL;
    char path[4400];
    if (x->data == KILN_WARMUP_FILE) {
        snprintf(path, sizeof(path), "%s/warmup/%s", model_dir, x->file);
        f = fopen(path, "rb");
        if (!f)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: input '%s': cannot read warmup/%s",
                                what, x->name, x->file);
        long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
        rewind(f);
        if (size < 0 || (!text && (uint64_t)size != bytes) ||
            (text && (uint64_t)size > UINT32_MAX)) {
            fclose(f);
            return kiln_err_set(
                err, KILN_INVALID_ARGUMENT,
                "%s: input '%s': warmup/%s holds %ld bytes; the input needs %" PRIu64, what,
                x->name, x->file, size, bytes);
        }
        bytes = (uint64_t)size;
    } else if (text) {
        bytes = numel * 4; /* empty strings: a zero length each */
    }
    st = kiln_tensor_alloc(x->dtype, &s, (size_t)bytes, t, err);
    if (st == KILN_OK && bytes) {
        if (f && fread(t->data, 1, (size_t)bytes, f) != bytes)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: input '%s': cannot read warmup/%s",
                              what, x->name, x->file);
        else if (!f && x->data == KILN_WARMUP_RANDOM)
            fill_random(t, numel);
        else if (!f)
            memset(t->data, 0, (size_t)bytes);
    }
    if (st == KILN_OK && f && text)
        st = kiln_bytes_validate(t->data, t->byte_size, numel, NULL, err);
    if (f)
        fclose(f);
    if (st != KILN_OK)
        kiln_tensor_fini(t);
    return st;
}

kiln_status kiln__registry_warmup(const kiln_backend *b, kiln_backend_model *const *inst,
                                  uint32_t n_inst, const char *model, const char *model_dir,
                                  const kiln_model_config *c, kiln_err *err)
{
    kiln_tensor *in = kiln_calloc(c->n_inputs + 1, sizeof(*in));
    kiln_output_slot *out = kiln_calloc(c->n_outputs + 1, sizeof(*out));
    kiln_status st =
        in && out ? KILN_OK : kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; st == KILN_OK && i < c->n_warmups; i++) {
        const kiln_model_warmup *w = &c->warmups[i];
        char what[256];
        snprintf(what, sizeof(what), "model '%s': model_warmup '%s'", model, w->name);
        uint32_t rows = c->max_batch_size > 0 ? w->batch_size : 0;
        for (size_t j = 0; st == KILN_OK && j < c->n_inputs; j++)
            for (size_t k = 0; st == KILN_OK && k < w->n_inputs; k++)
                if (strcmp(w->inputs[k].name, c->inputs[j].name) == 0)
                    st = make_input(&w->inputs[k], rows, model_dir, what, &in[j], err);
        for (uint32_t n = 0; st == KILN_OK && n < n_inst; n++)
            for (uint32_t r = 0; st == KILN_OK && r < w->count; r++) {
                for (size_t o = 0; o < c->n_outputs; o++)
                    out[o] = (kiln_output_slot){.index = (uint32_t)o};
                kiln_batch batch = {.batch_size = rows,
                                    .n_inputs = (uint32_t)c->n_inputs,
                                    .inputs = in,
                                    .n_outputs = (uint32_t)c->n_outputs,
                                    .outputs = out};
                kiln_err e;
                st = b->execute(inst[n], &batch, &e);
                if (st == KILN_OK)
                    kiln_batch_release_outputs(&batch);
                else
                    st = kiln_err_set(err,
                                      st == KILN_RESOURCE_EXHAUSTED ? st : KILN_INVALID_ARGUMENT,
                                      "%s (a batch of %u) failed on instance %u: %s", what,
                                      w->batch_size, n, e.msg);
            }
        for (size_t j = 0; j < c->n_inputs; j++)
            kiln_tensor_fini(&in[j]);
    }
    kiln_free(in);
    kiln_free(out);
    return st;
}
