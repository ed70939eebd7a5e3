/*
 * tools/kiln/cmd_infer.c: `kiln infer`: one request with inputs from .npy files or JSON, inline
 * or through one system shared-memory region; outputs printed, and saved as .npy.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/kiln/cli.h"
#include "tools/kiln/npy.h"
#include "tools/kiln/tensor_json.h"

#define ALIGN 64

typedef struct request {
    kiln_client_tensor in[KILN_CLI_MAX_LIST];
    size_t n_in;
    kiln_client_output out[KILN_CLI_MAX_LIST];
    char out_names[KILN_CLI_MAX_LIST][128];
    size_t n_out;
    kiln_client_shm *shm;
} request;

static size_t align_up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

/* The outputs to ask for: --output names (checked against md), else with --shm all of md's
 * (a region needs names), else none (the server returns all). */
static int pick_outputs(const kiln_cli_args *a, const kiln_client_model_info *md, request *r)
{
    for (size_t i = 0; i < a->n_outputs; i++) {
        if (md && !kiln_cli_find_info(md->outputs, md->n_outputs, a->outputs[i]))
            return kiln_cli_fail(a, KILN_CLI_EXIT_DATA, "model '%s' has no output '%s'", a->model,
                                 a->outputs[i]);
        snprintf(r->out_names[i], sizeof(r->out_names[i]), "%s", a->outputs[i]);
    }
    r->n_out = a->n_outputs;
    if (!r->n_out && a->shm) {
        if (!md)
            return kiln_cli_fail(a, KILN_CLI_EXIT_USAGE,
                                 "--shm needs the output names: give --output NAME (the server "
                                 "has no metadata)");
        for (size_t k = 0; k < md->n_outputs && k < KILN_CLI_MAX_LIST; k++)
            snprintf(r->out_names[k], sizeof(r->out_names[k]), "%s", md->outputs[k].name);
        r->n_out = md->n_outputs < KILN_CLI_MAX_LIST ? md->n_outputs : KILN_CLI_MAX_LIST;
    }
    for (size_t i = 0; i < r->n_out; i++)
        r->out[i].name = r->out_names[i];
    return KILN_CLI_EXIT_OK;
}

/* One region: inputs (copied in) then room for each output. */
static int place_in_shm(const kiln_cli_args *a, kiln_client *c, const kiln_client_model_info *md,
                        const kiln_cli_inputs *in, request *r)
{
    int64_t batch = in->n && md && md->n_inputs && md->inputs[0].shape[0] == -1 && in->t[0].rank
                        ? in->t[0].shape[0]
                        : 1;
    size_t size = 0;
    for (size_t i = 0; i < r->n_in; i++) {
        r->in[i].shm_offset = size;
        size += align_up(r->in[i].byte_size);
    }
    for (size_t i = 0; i < r->n_out; i++) {
        const kiln_client_tensor_info *o =
            md ? kiln_cli_find_info(md->outputs, md->n_outputs, r->out[i].name) : NULL;
        size_t bytes = o ? kiln_cli_output_bytes(o, batch) : 0;
        r->out[i].shm_offset = size;
        r->out[i].shm_byte_size = bytes ? bytes : (size_t)a->shm_output_bytes;
        size += align_up(r->out[i].shm_byte_size);
    }
    char region[64], key[64];
    snprintf(region, sizeof(region), "kiln-cli-%ld", (long)getpid());
    snprintf(key, sizeof(key), "/kiln-cli-%ld", (long)getpid());
    kiln_client_error e;
    if (kiln_client_shm_create(c, region, key, size ? size : ALIGN, &r->shm, &e) != 0)
        return kiln_cli_rpc_failed(a, "shared-memory region", &e);
    uint8_t *base = kiln_client_shm_data(r->shm);
    const char *name = kiln_client_shm_region(r->shm);
    for (size_t i = 0; i < r->n_in; i++) {
        if (r->in[i].byte_size)
            memcpy(base + r->in[i].shm_offset, r->in[i].data, r->in[i].byte_size);
        r->in[i].data = NULL;
        r->in[i].shm_region = name;
    }
    for (size_t i = 0; i < r->n_out; i++)
        r->out[i].shm_region = name;
    return KILN_CLI_EXIT_OK;
}

/* "DIR/NAME.npy" with characters that do not belong in a file name replaced by '_'. */
static void out_path(const char *dir, const char *name, char *buf, size_t cap)
{
    char safe[160];
    size_t n = 0;
    for (const char *p = name; *p && n + 1 < sizeof(safe); p++, n++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || (ch == '.' && n > 0);
        safe[n] = ok ? ch : '_';
    }
    safe[n] = '\0';
    snprintf(buf, cap, "%s/%s.npy", dir, n ? safe : "_");
}

static int make_dirs(const kiln_cli_args *a, const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char keep = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            return kiln_cli_fail(a, KILN_CLI_EXIT_DATA, "--out-dir %s: cannot create %s: %s", dir,
                                 p, strerror(errno));
        *s = keep;
        if (!keep)
            break;
    }
    return KILN_CLI_EXIT_OK;
}

/* The output's bytes as a tensor view: inline, or read from the region. */
static int output_tensor(const kiln_cli_args *a, const request *r, const kiln_client_tensor *o,
                         kiln_cli_tensor *t, bool *known)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", o->name);
    *known = kiln_cli_dtype_parse(o->datatype, &t->dtype, NULL) == KILN_OK;
    t->rank = o->rank;
    memcpy(t->shape, o->shape, sizeof(o->shape[0]) * (size_t)o->rank);
    t->data = o->data;
    t->byte_size = o->byte_size;
    if (o->shm_region && r->shm) {
        t->data = (const uint8_t *)kiln_client_shm_data(r->shm) + o->shm_offset;
        if (t->dtype == KILN_CLI_BYTES) { /* the window holds the elements and maybe slack */
            uint64_t n = 0, off = 0;
            kiln_cli_shape_count(t->shape, t->rank, &n, NULL);
            for (uint64_t i = 0; i < n && off + 4 <= o->byte_size; i++) {
                uint32_t len;
                memcpy(&len, t->data + off, 4);
                off += 4 + (uint64_t)len;
            }
            t->byte_size = off <= o->byte_size ? (size_t)off : o->byte_size;
        }
    }
    kiln_err err;
    if (*known && kiln_cli_tensor_check(t, &err) != KILN_OK)
        return kiln_cli_fail(a, KILN_CLI_EXIT_RPC, "the server's output %s", err.msg);
    return KILN_CLI_EXIT_OK;
}

static int report(const kiln_cli_args *a, const request *r, const kiln_client_result *res)
{
    size_t n = kiln_client_result_count(res);
    int rc = KILN_CLI_EXIT_OK;
    if (a->out_dir && (rc = make_dirs(a, a->out_dir)) != KILN_CLI_EXIT_OK)
        return rc;
    if (a->json) {
        printf("{");
        kiln_cli_json_kv("model", kiln_client_result_model(res), true);
        kiln_cli_json_kv("id", kiln_client_result_id(res), false);
        printf(",\"outputs\":[");
    } else {
        const char *id = kiln_client_result_id(res);
        printf("model %s%s%s\n", kiln_client_result_model(res), id && *id ? ", id " : "",
               id && *id ? id : "");
    }
    for (size_t i = 0; i < n && rc == KILN_CLI_EXIT_OK; i++) {
        kiln_client_tensor o;
        kiln_client_error e;
        if (kiln_client_result_output(res, i, &o, &e) != 0)
            return kiln_cli_rpc_failed(a, "reading the result", &e);
        kiln_cli_tensor t;
        bool known;
        if ((rc = output_tensor(a, r, &o, &t, &known)) != KILN_CLI_EXIT_OK)
            break;
        uint64_t count = 0;
        kiln_cli_shape_count(t.shape, t.rank, &count, NULL);
        bool show = known && count <= a->print_limit;
        char path[4400] = "", sh[160];
        if (a->out_dir && known) {
            kiln_err err;
            out_path(a->out_dir, t.name, path, sizeof(path));
            if (kiln_cli_npy_save(path, &t, &err) != KILN_OK)
                rc = kiln_cli_fail(a, KILN_CLI_EXIT_DATA, "output '%s': %s", t.name, err.msg);
        }
        kiln_cli_shape_format(t.shape, t.rank, sh, sizeof(sh));
        if (a->json) {
            printf("%s{", i ? "," : "");
            kiln_cli_json_kv("name", t.name, true);
            kiln_cli_json_kv("datatype", o.datatype, false);
            kiln_cli_json_shape(t.shape, t.rank);
            if (show) {
                printf(",\"data\":");
                kiln_cli_tensor_print(stdout, &t, true);
            }
            if (path[0])
                kiln_cli_json_kv("file", path, false);
            printf("}");
        } else {
            printf("%s %s %s", t.name, o.datatype, sh);
            if (path[0])
                printf(" -> %s", path);
            if (show) {
                printf("\n  ");
                kiln_cli_tensor_print(stdout, &t, false);
            } else if (!known) {
                printf(" (a datatype kiln cannot show)");
            } else {
                printf(" (%zu bytes, over --print-limit %" PRIu64 " elements%s)", t.byte_size,
                       a->print_limit, path[0] ? "" : "; --out-dir saves it");
            }
            printf("\n");
        }
    }
    if (a->json)
        printf("]}\n");
    return rc;
}

int kiln_cli_infer(const kiln_cli_args *a, kiln_client *c)
{
    kiln_client_error e;
    kiln_client_model_info *md;
    kiln_cli_inputs in;
    int rc = kiln_cli_prepare(a, c, false, &md, &in);
    if (rc != KILN_CLI_EXIT_OK)
        return rc;
    request r;
    memset(&r, 0, sizeof(r));
    rc = pick_outputs(a, md, &r);
    for (size_t i = 0; rc == KILN_CLI_EXIT_OK && i < in.n; i++)
        kiln_cli_inputs_view(&in.t[i], &r.in[r.n_in++]);
    if (rc == KILN_CLI_EXIT_OK && a->shm)
        rc = place_in_shm(a, c, md, &in, &r);
    kiln_client_result *res = NULL;
    if (rc == KILN_CLI_EXIT_OK) {
        kiln_client_infer_options io = {.version = a->model_version, .request_id = a->request_id};
        if (kiln_client_infer(c, a->model, r.in, r.n_in, r.n_out ? r.out : NULL, r.n_out, &io, &res,
                              &e) != 0)
            rc = kiln_cli_rpc_failed(a, a->model, &e);
    }
    if (rc == KILN_CLI_EXIT_OK)
        rc = report(a, &r, res);
    kiln_client_result_free(res);
    if (r.shm && kiln_client_shm_destroy(c, r.shm, &e) != 0 && rc == KILN_CLI_EXIT_OK)
        rc = kiln_cli_rpc_failed(a, "unregistering the shared-memory region", &e);
    kiln_cli_inputs_fini(&in);
    kiln_client_model_info_free(md);
    return rc;
}
