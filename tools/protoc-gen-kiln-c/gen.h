/*
 * tools/protoc-gen-kiln-c/gen.h: what the plugin's files share: a growable text buffer,
 * protoc-c's naming rules, and the emitters of the four files made per .proto file.
 *
 * Errors: functions that can fail return kiln_status and write err; the first failure wins,
 * and the plugin reports it to protoc in CodeGeneratorResponse.error.
 */
#ifndef KILN_TOOLS_PROTOC_GEN_KILN_C_GEN_H
#define KILN_TOOLS_PROTOC_GEN_KILN_C_GEN_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"
#include "google/protobuf/descriptor.pb-c.h"

/* A growable NUL-terminated text. Appends after a failed allocation do nothing and leave
 * oom set, so an emitter checks once at the end. */
typedef struct gen_text {
    char *buf;
    size_t len, cap;
    bool oom;
} gen_text;

void gen_printf(gen_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Takes the buffer (OUT: the caller frees it with kiln_free); the text is empty again. */
char *gen_take(gen_text *t);
void gen_text_fini(gen_text *t);

/* Longest C name the plugin makes (a longer one is an error naming it). */
#define GEN_NAME_MAX 512

/* protoc-c's names, which the generated code must reference exactly:
 *   gen_lower("inference.GRPCInferenceService")  -> "inference__grpcinference_service"
 *   gen_ctype(".grpc.health.v1.HealthCheckRequest") -> "Grpc__Health__V1__HealthCheckRequest"
 * A leading '.' (fully qualified type names) is ignored. OUT: out[GEN_NAME_MAX]. */
kiln_status gen_lower(const char *full_name, char *out, kiln_err *err);
kiln_status gen_ctype(const char *full_name, char *out, kiln_err *err);
/* Upper case of a lower name, every other character as '_' (include guards). */
void gen_upper(const char *s, char *out, size_t cap);

/* The file's name without ".proto": "proto/grpc_service". OUT: out[GEN_NAME_MAX]. */
kiln_status gen_base_name(const char *proto_name, char *out, kiln_err *err);

/* The four files for one .proto file that has services (OUT: NUL-terminated texts the caller
 * frees with kiln_free; all NULL on error). */
typedef struct gen_files {
    char *methods_h, *methods_c, *stubs_h, *stubs_c;
} gen_files;

kiln_status gen_file(const Google__Protobuf__FileDescriptorProto *f, gen_files *out, kiln_err *err);
void gen_files_fini(gen_files *f);

#endif /* KILN_TOOLS_PROTOC_GEN_KILN_C_GEN_H */
