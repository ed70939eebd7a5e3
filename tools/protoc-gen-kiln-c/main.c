/*
 * tools/protoc-gen-kiln-c/main.c: a protoc plugin, in C over protobuf-c, that generates Kiln's
 * gRPC method tables and typed client stubs (docs/client.md, "Generated stubs"):
 *
 *   protoc -I. --plugin=protoc-gen-kiln-c=PATH --kiln-c_out=OUT_DIR foo/bar.proto
 *
 * writes, for a file with services, OUT_DIR/foo/bar.kiln-methods.{h,c} and
 * OUT_DIR/foo/bar.kiln.{h,c}; the code includes protoc-c's foo/bar.pb-c.h, so run protoc-c on
 * the same file with the same -I. A file without services gets nothing.
 *
 * Protocol: a CodeGeneratorRequest on stdin, a CodeGeneratorResponse on stdout. Problems with
 * the .proto files go back in the response's error (exit 0, as protoc wants); an unreadable
 * request or a failed write exits 1 with a message on stderr. No parameter is accepted.
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "google/protobuf/compiler/plugin.pb-c.h"
#include "tools/protoc-gen-kiln-c/gen.h"

typedef Google__Protobuf__Compiler__CodeGeneratorRequest request;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse response;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse__File out_file;

/* Reads all of stdin. OUT: *data (kiln_free), *len. */
static kiln_status read_all(FILE *in, uint8_t **data, size_t *len, kiln_err *err)
{
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = kiln_malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, in);
        if (n < cap)
            break;
        uint8_t *bigger = kiln_realloc(buf, cap * 2);
        if (!bigger)
            kiln_free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (!buf)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory reading the request");
    if (ferror(in)) {
        kiln_free(buf);
        return kiln_err_set(err, KILN_DATA_LOSS, "cannot read the request from stdin");
    }
    *data = buf;
    *len = n;
    return KILN_OK;
}

static const Google__Protobuf__FileDescriptorProto *find_file(const request *req, const char *name)
{
    for (size_t i = 0; i < req->n_proto_file; i++)
        if (req->proto_file[i]->name && strcmp(req->proto_file[i]->name, name) == 0)
            return req->proto_file[i];
    return NULL;
}

/* Adds one output file (takes `content`). */
static kiln_status add_file(response *resp, const char *base, const char *suffix, char *content,
                            kiln_err *err)
{
    out_file *f = kiln_calloc(1, sizeof(*f));
    char *name = kiln_malloc(strlen(base) + strlen(suffix) + 1);
    out_file **files = kiln_realloc(resp->file, (resp->n_file + 1) * sizeof(*files));
    if (files)
        resp->file = files;
    if (!f || !name || !files) {
        kiln_free(f);
        kiln_free(name);
        kiln_free(content);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    google__protobuf__compiler__code_generator_response__file__init(f);
    strcpy(name, base);
    strcat(name, suffix);
    f->name = name;
    f->content = content;
    resp->file[resp->n_file++] = f;
    return KILN_OK;
}

static kiln_status generate(const request *req, response *resp, kiln_err *err)
{
    if (req->parameter && req->parameter[0])
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "protoc-gen-kiln-c takes no parameter (got '%s')", req->parameter);
    for (size_t i = 0; i < req->n_file_to_generate; i++) {
        const char *name = req->file_to_generate[i];
        const Google__Protobuf__FileDescriptorProto *f = find_file(req, name);
        if (!f)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: not in the request", name);
        char base[GEN_NAME_MAX];
        kiln_status st = gen_base_name(name, base, err);
        gen_files g;
        if (st == KILN_OK)
            st = gen_file(f, &g, err);
        if (st != KILN_OK)
            return st;
        if (!g.methods_h)
            continue; /* no services */
        struct {
            const char *suffix;
            char **text;
        } outs[] = {{".kiln-methods.h", &g.methods_h},
                    {".kiln-methods.c", &g.methods_c},
                    {".kiln.h", &g.stubs_h},
                    {".kiln.c", &g.stubs_c}};
        for (size_t k = 0; st == KILN_OK && k < sizeof(outs) / sizeof(outs[0]); k++) {
            st = add_file(resp, base, outs[k].suffix, *outs[k].text, err);
            *outs[k].text = NULL; /* add_file took it, even when it failed */
        }
        gen_files_fini(&g);
        if (st != KILN_OK)
            return st;
    }
    return KILN_OK;
}

static void response_fini(response *resp)
{
    for (size_t i = 0; i < resp->n_file; i++) {
        kiln_free(resp->file[i]->name);
        kiln_free(resp->file[i]->content);
        kiln_free(resp->file[i]);
    }
    kiln_free(resp->file);
}

int main(void)
{
    kiln_err err;
    uint8_t *data = NULL;
    size_t len = 0;
    if (read_all(stdin, &data, &len, &err) != KILN_OK) {
        fprintf(stderr, "protoc-gen-kiln-c: %s\n", err.msg);
        return 1;
    }
    request *req = google__protobuf__compiler__code_generator_request__unpack(NULL, len, data);
    kiln_free(data);
    if (!req) {
        fprintf(stderr, "protoc-gen-kiln-c: stdin is not a CodeGeneratorRequest (run me through "
                        "protoc --plugin=protoc-gen-kiln-c=... --kiln-c_out=DIR)\n");
        return 1;
    }
    response resp = GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
    /* proto3 `optional` fields change nothing here: the stubs name messages, not fields */
    resp.has_supported_features = true;
    resp.supported_features =
        GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__FEATURE__FEATURE_PROTO3_OPTIONAL;
    char error[KILN_ERR_MSG_MAX];
    if (generate(req, &resp, &err) != KILN_OK) {
        snprintf(error, sizeof(error), "%s", err.msg);
        response_fini(&resp);
        resp.n_file = 0;
        resp.file = NULL;
        resp.error = error;
    }
    google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
    size_t n = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
    uint8_t *out = kiln_malloc(n ? n : 1);
    int rc = 0;
    if (!out) {
        fprintf(stderr, "protoc-gen-kiln-c: out of memory writing the response\n");
        rc = 1;
    } else {
        google__protobuf__compiler__code_generator_response__pack(&resp, out);
        if (fwrite(out, 1, n, stdout) != n || fflush(stdout) != 0) {
            fprintf(stderr, "protoc-gen-kiln-c: cannot write the response to stdout\n");
            rc = 1;
        }
    }
    kiln_free(out);
    response_fini(&resp);
    return rc;
}
