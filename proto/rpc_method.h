/*
 * proto/rpc_method.h: the method tables that protoc-gen-kiln-c generates, one per service in
 * a .proto file (<file>.kiln-methods.h). protobuf-c's ProtobufCServiceDescriptor names the
 * methods and their message types but not their streaming shape; these tables add it, with
 * the HTTP/2 path gRPC routes on. The server (server/) registers its methods from them; the
 * client stubs (<file>.kiln.h over client/kiln_rpc.h) call through them.
 *
 * Ownership: generated tables are `const` data with static storage; every pointer in them is
 * to static storage too (string literals, protoc-c's descriptors).
 * Thread-safety: read-only, usable from any thread.
 */
#ifndef KILN_PROTO_RPC_METHOD_H
#define KILN_PROTO_RPC_METHOD_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* One method of a service. */
typedef struct kiln_proto_method {
    const char *path;      /* "/inference.GRPCInferenceService/ModelInfer" */
    const char *name;      /* "ModelInfer", as in the .proto file */
    bool client_streaming; /* the client sends a stream of requests */
    bool server_streaming; /* the server answers with a stream of responses */
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
} kiln_proto_method;

/* One service: its methods in the order the .proto file declares them, which is also the
 * order of descriptor->methods (methods[i] describes descriptor->methods[i]). */
typedef struct kiln_proto_service {
    const char *name; /* "inference.GRPCInferenceService" (package, dot, service) */
    const ProtobufCServiceDescriptor *descriptor; /* protoc-c's */
    size_t n_methods;
    const kiln_proto_method *methods;
} kiln_proto_service;

#endif /* KILN_PROTO_RPC_METHOD_H */
