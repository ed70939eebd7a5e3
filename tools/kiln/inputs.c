/*
 * tools/kiln/inputs.c: the tensors of a request, from --input files and JSON, --shape and
 * --datatype, the model's metadata, and (for perf) random values.
 *
 * Everything that can be checked against the metadata is checked here, so a wrong file fails
 * with a message about the file rather than a server error about a request.
 */
#include <inttypes.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "tools/kiln/cli.h"
#include "tools/kiln/npy.h"
#include "tools/kiln/tensor_json.h"

#define JSON_PREFIX "json:"

/* The --datatype for input `name` ("NAME=DT" first, then a bare "DT"); INVALID when none. */
static kiln_cli_dtype datatype_option(const kiln_cli_args *a, const char *name)
{
    kiln_cli_dtype any = KILN_CLI_INVALID, d;
    size_t len = strlen(name);
    for (size_t i = 0; i < a->n_datatypes; i++) {
        const char *s = a->datatypes[i], *eq = strchr(s, '=');
        if (eq && (size_t)(eq - s) == len && strncmp(s, name, len) == 0 &&
            kiln_cli_dtype_parse(eq + 1, &d, NULL) == KILN_OK)
            return d;
        if (!eq && kiln_cli_dtype_parse(s, &d, NULL) == KILN_OK)
            any = d;
    }
    return any;
}

/* The --shape given for `name`, or NULL. */
static const char *shape_option(const kiln_cli_args *a, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < a->n_shapes; i++)
        if (strncmp(a->shapes[i], name, len) == 0 && a->shapes[i][len] == '=')
            return a->shapes[i] + len + 1;
    return NULL;
}

const kiln_client_tensor_info *kiln_cli_find_info(const kiln_client_tensor_info *t, size_t n,
                                                  const char *name)
{
    for (size_t i = 0; t && i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

static void list_names(const kiln_client_model_info *md, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < md->n_inputs && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", md->inputs[i].name);
}

/* Element count of a BYTES or fixed-size tensor's data as it stands. */
static uint64_t elements(const kiln_cli_tensor *t)
{
    uint64_t n = 0;
    kiln_cli_shape_count(t->shape, t->rank, &n, NULL);
    return n;
}

/* Applies --shape, or the batch of one, and checks t against the metadata. */
static kiln_status fit_shape(const kiln_cli_args *a, const kiln_client_tensor_info *mi,
                             kiln_cli_tensor *t, kiln_err *err)
{
    char have[160], want[160];
    const char *shape = shape_option(a, t->name);
    if (shape) {
        int64_t s[KILN_CLI_MAX_RANK];
        int rank;
        uint64_t n;
        kiln_status st = kiln_cli_shape_parse(shape, s, &rank, err);
        if (st == KILN_OK)
            st = kiln_cli_shape_count(s, rank, &n, err);
        if (st != KILN_OK)
            return kiln_err_prefix(err, st, "--shape %s", t->name);
        if (n != elements(t))
            return kiln_err_set(
                err, KILN_INVALID_ARGUMENT,
                "--shape %s=%s has %" PRIu64 " elements, the tensor %s has %" PRIu64, t->name,
                shape, n, kiln_cli_shape_format(t->shape, t->rank, have, sizeof(have)),
                elements(t));
        t->rank = rank;
        memcpy(t->shape, s, sizeof(s));
    } else if (mi && mi->rank == t->rank + 1 && mi->shape[0] == -1) {
        bool fits = true;
        for (int d = 1; d < mi->rank; d++)
            fits = fits && (mi->shape[d] == -1 || mi->shape[d] == t->shape[d - 1]);
        if (fits) { /* a batch of one */
            memmove(t->shape + 1, t->shape, sizeof(t->shape[0]) * (size_t)t->rank);
            t->shape[0] = 1;
            t->rank++;
        }
    }
    if (!mi)
        return KILN_OK;
    bool fits = mi->rank == t->rank;
    for (int d = 0; fits && d < t->rank; d++)
        fits = mi->shape[d] == -1 || mi->shape[d] == t->shape[d];
    if (!fits)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "input '%s': shape %s does not fit the model's %s (-1: any size)",
                            t->name, kiln_cli_shape_format(t->shape, t->rank, have, sizeof(have)),
                            kiln_cli_shape_format(mi->shape, mi->rank, want, sizeof(want)));
    return KILN_OK;
}

/* A small xorshift generator: deterministic per --seed and input, not for cryptography. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static kiln_status random_tensor(const kiln_cli_args *a, const kiln_client_tensor_info *mi,
                                 kiln_cli_tensor *t, kiln_err *err)
{
    kiln_status st = kiln_cli_dtype_parse(mi->datatype, &t->dtype, err);
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, "input '%s'", mi->name);
    const char *shape = shape_option(a, mi->name);
    if (shape) {
        if ((st = kiln_cli_shape_parse(shape, t->shape, &t->rank, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "--shape %s", mi->name);
    } else {
        t->rank = mi->rank;
        for (int d = 0; d < mi->rank; d++) {
            t->shape[d] = mi->shape[d] >= 0 ? mi->shape[d] : d == 0 ? a->batch_size : -1;
            if (t->shape[d] < 0) {
                char sh[160];
                return kiln_err_set(
                    err, KILN_INVALID_ARGUMENT,
                    "input '%s' has shape %s: give its size with --shape %s=...", mi->name,
                    kiln_cli_shape_format(mi->shape, mi->rank, sh, sizeof(sh)), mi->name);
            }
        }
    }
    uint64_t n;
    if ((st = kiln_cli_shape_count(t->shape, t->rank, &n, err)) != KILN_OK)
        return kiln_err_prefix(err, st, "input '%s'", mi->name);
    size_t esize = kiln_cli_dtype_size(t->dtype);
    size_t per = esize ? esize : 4 + 2; /* BYTES: decimal numbers 0..99, as strings models like */
    if (n > SIZE_MAX / per)
        return kiln_err_set(err, KILN_OUT_OF_RANGE, "input '%s' is too large", mi->name);
    size_t cap = (size_t)n * per;
    uint8_t *p = kiln_malloc(cap ? cap : 1);
    if (!p)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for input '%s'", mi->name);
    uint64_t s = a->seed * 0x9e3779b97f4a7c15ull + 1;
    for (const char *c = mi->name; *c; c++)
        s = (s ^ (uint8_t)*c) * 0x100000001b3ull;
    s |= 1;
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = next_rand(&s);
        float f = (float)(r >> 40) / (float)(1 << 24); /* [0, 1) */
        switch (t->dtype) {
        case KILN_CLI_BYTES: {
            char num[3];
            uint32_t len = (uint32_t)snprintf(num, sizeof(num), "%u", (unsigned)(r % 100));
            memcpy(p + off, &len, 4);
            memcpy(p + off + 4, num, len);
            off += 4 + len;
            continue;
        }
        case KILN_CLI_BOOL:
            p[off] = (uint8_t)(r & 1);
            break;
        case KILN_CLI_FP32:
            memcpy(p + off, &f, 4);
            break;
        case KILN_CLI_FP64: {
            double d = f;
            memcpy(p + off, &d, 8);
            break;
        }
        case KILN_CLI_FP16:
        case KILN_CLI_BF16: {
            uint16_t h =
                t->dtype == KILN_CLI_FP16 ? kiln_cli_float_to_half(f) : kiln_cli_float_to_bf16(f);
            memcpy(p + off, &h, 2);
            break;
        }
        default: { /* integers: 0..99, small enough for sums and products to stay in range */
            uint64_t v = r % 100;
            memcpy(p + off, &v, esize);
            break;
        }
        }
        off += esize;
    }
    t->owner = p;
    t->data = p;
    t->byte_size = off;
    return KILN_OK;
}

static kiln_status given_tensor(const kiln_cli_args *a, const kiln_client_model_info *md,
                                const char *spec, kiln_cli_tensor *t, kiln_err *err)
{
    const char *eq = strchr(spec, '='), *src = eq + 1;
    size_t nlen = (size_t)(eq - spec);
    if (nlen >= sizeof(t->name))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "--input name '%.*s' is too long",
                            (int)nlen, spec);
    memcpy(t->name, spec, nlen);
    t->name[nlen] = '\0';
    const kiln_client_tensor_info *mi =
        md ? kiln_cli_find_info(md->inputs, md->n_inputs, t->name) : NULL;
    if (md && !mi) {
        char names[600];
        list_names(md, names, sizeof(names));
        return kiln_err_set(err, KILN_NOT_FOUND, "model '%s' has no input '%s' (its inputs: %s)",
                            md->name, t->name, names);
    }
    kiln_cli_dtype want = KILN_CLI_INVALID;
    if (mi && kiln_cli_dtype_parse(mi->datatype, &want, err) != KILN_OK)
        return kiln_err_prefix(err, KILN_INVALID_ARGUMENT, "input '%s'", t->name);
    kiln_status st;
    if (strncmp(src, JSON_PREFIX, strlen(JSON_PREFIX)) == 0) {
        kiln_cli_dtype dt = datatype_option(a, t->name);
        if (dt == KILN_CLI_INVALID)
            dt = want;
        if (dt == KILN_CLI_INVALID)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "input '%s': no datatype for its JSON (give --datatype %s=FP32 "
                                "or the like)",
                                t->name, t->name);
        st = kiln_cli_tensor_parse_json(src + strlen(JSON_PREFIX), dt, t, err);
        if (st != KILN_OK)
            return kiln_err_prefix(err, st, "input '%s'", t->name);
    } else {
        if ((st = kiln_cli_npy_load(src, t, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "input '%s'", t->name);
    }
    if (want != KILN_CLI_INVALID && t->dtype != want)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "input '%s': %s holds %s, the model takes %s", t->name,
                            strncmp(src, JSON_PREFIX, 5) == 0 ? "the JSON" : src,
                            kiln_cli_dtype_name(t->dtype), kiln_cli_dtype_name(want));
    return fit_shape(a, mi, t, err);
}

/* Every --shape and named --datatype must name an input of the request. */
static kiln_status check_names(const kiln_cli_args *a, const kiln_cli_inputs *in, kiln_err *err)
{
    for (size_t i = 0; i < a->n_shapes + a->n_datatypes; i++) {
        const char *s = i < a->n_shapes ? a->shapes[i] : a->datatypes[i - a->n_shapes];
        const char *eq = strchr(s, '=');
        if (!eq)
            continue;
        bool found = false;
        for (size_t k = 0; k < in->n && !found; k++)
            found = strlen(in->t[k].name) == (size_t)(eq - s) &&
                    strncmp(in->t[k].name, s, (size_t)(eq - s)) == 0;
        if (!found)
            return kiln_err_set(err, KILN_NOT_FOUND, "--%s %s: the request has no input '%.*s'",
                                i < a->n_shapes ? "shape" : "datatype", s, (int)(eq - s), s);
    }
    return KILN_OK;
}

kiln_status kiln_cli_inputs_build(const kiln_cli_args *a, const kiln_client_model_info *md,
                                  bool random, kiln_cli_inputs *in, kiln_err *err)
{
    memset(in, 0, sizeof(*in));
    kiln_cli_tensor given[KILN_CLI_MAX_LIST];
    memset(given, 0, sizeof(given));
    kiln_status st = KILN_OK;
    for (size_t i = 0; i < a->n_inputs && st == KILN_OK; i++) {
        st = given_tensor(a, md, a->inputs[i], &given[i], err);
        for (size_t k = 0; st == KILN_OK && k < i; k++)
            if (strcmp(given[k].name, given[i].name) == 0)
                st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "--input '%s' is given twice",
                                  given[i].name);
    }
    if (st != KILN_OK) {
        for (size_t i = 0; i < a->n_inputs; i++)
            kiln_cli_tensor_fini(&given[i]);
        return st;
    }
    if (!md && a->n_inputs == 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "the server has no metadata for '%s' (UNIMPLEMENTED): give every "
                            "input with --input",
                            a->model);
    if (!md) { /* the order of the command line */
        memcpy(in->t, given, sizeof(given));
        in->n = a->n_inputs;
        return check_names(a, in, err);
    }
    /* the model's order; inputs not given are random (perf) or missing (infer) */
    for (size_t m = 0; m < md->n_inputs && m < KILN_CLI_MAX_LIST; m++) {
        kiln_cli_tensor *t = &in->t[in->n];
        size_t k = 0;
        while (k < a->n_inputs && strcmp(given[k].name, md->inputs[m].name) != 0)
            k++;
        if (k < a->n_inputs) {
            *t = given[k];
            memset(&given[k], 0, sizeof(given[k]));
            in->n++;
            continue;
        }
        if (!random) {
            st = kiln_err_set(
                err, KILN_INVALID_ARGUMENT,
                "model '%s' takes input '%s' (%s %s): give it with --input %s=...", md->name,
                md->inputs[m].name, md->inputs[m].datatype,
                kiln_cli_shape_format(md->inputs[m].shape, md->inputs[m].rank, (char[160]){0}, 160),
                md->inputs[m].name);
            break;
        }
        snprintf(t->name, sizeof(t->name), "%s", md->inputs[m].name);
        in->n++;
        if ((st = random_tensor(a, &md->inputs[m], t, err)) != KILN_OK)
            break;
    }
    for (size_t i = 0; i < a->n_inputs; i++)
        kiln_cli_tensor_fini(&given[i]);
    return st == KILN_OK ? check_names(a, in, err) : st;
}

void kiln_cli_inputs_fini(kiln_cli_inputs *in)
{
    for (size_t i = 0; i < in->n; i++)
        kiln_cli_tensor_fini(&in->t[i]);
    in->n = 0;
}

void kiln_cli_inputs_describe(const kiln_cli_args *a, const kiln_cli_inputs *in, char *buf,
                              size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < in->n && n < cap; i++) {
        const char *src = "random";
        for (size_t k = 0; k < a->n_inputs; k++) {
            size_t len = strlen(in->t[i].name);
            if (strncmp(a->inputs[k], in->t[i].name, len) == 0 && a->inputs[k][len] == '=')
                src = strncmp(a->inputs[k] + len + 1, JSON_PREFIX, 5) == 0 ? "json"
                                                                           : a->inputs[k] + len + 1;
        }
        char sh[160];
        n += (size_t)snprintf(buf + n, cap - n, "%s%s %s %s %s", i ? ", " : "", in->t[i].name,
                              kiln_cli_dtype_name(in->t[i].dtype),
                              kiln_cli_shape_format(in->t[i].shape, in->t[i].rank, sh, sizeof(sh)),
                              src);
    }
}

void kiln_cli_inputs_view(const kiln_cli_tensor *t, kiln_client_tensor *out)
{
    memset(out, 0, sizeof(*out));
    out->name = t->name;
    out->datatype = kiln_cli_dtype_name(t->dtype);
    out->rank = t->rank;
    memcpy(out->shape, t->shape, sizeof(out->shape[0]) * (size_t)t->rank);
    out->data = t->data;
    out->byte_size = t->byte_size;
}

int kiln_cli_metadata_optional(kiln_client *c, const kiln_cli_args *a, kiln_client_model_info **md,
                               kiln_client_error *e)
{
    *md = NULL;
    int rc = kiln_client_model_metadata(c, a->model, a->model_version, md, e);
    if (rc == KILN_UNIMPLEMENTED) {
        *md = NULL;
        return 0;
    }
    return rc;
}

int kiln_cli_prepare(const kiln_cli_args *a, kiln_client *c, bool random,
                     kiln_client_model_info **md, kiln_cli_inputs *in)
{
    kiln_client_error e;
    kiln_err err;
    memset(in, 0, sizeof(*in));
    if (kiln_cli_metadata_optional(c, a, md, &e) != 0)
        return kiln_cli_rpc_failed(a, a->model, &e);
    if (kiln_cli_inputs_build(a, *md, random, in, &err) != KILN_OK) {
        kiln_cli_inputs_fini(in);
        kiln_client_model_info_free(*md);
        *md = NULL;
        return kiln_cli_fail(a, KILN_CLI_EXIT_DATA, "%s", err.msg);
    }
    return KILN_CLI_EXIT_OK;
}

size_t kiln_cli_output_bytes(const kiln_client_tensor_info *o, int64_t batch)
{
    kiln_cli_dtype dt;
    if (kiln_cli_dtype_parse(o->datatype, &dt, NULL) != KILN_OK || dt == KILN_CLI_BYTES)
        return 0;
    uint64_t n = kiln_cli_dtype_size(dt);
    for (int d = 0; d < o->rank; d++) {
        int64_t s = o->shape[d] >= 0 ? o->shape[d] : d == 0 ? batch : -1;
        if (s < 0 || (s && n > UINT64_MAX / (uint64_t)s))
            return 0;
        n *= (uint64_t)s;
    }
    return n > SIZE_MAX ? 0 : (size_t)n;
}
