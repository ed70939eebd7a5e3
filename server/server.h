/*
 * server/server.h: the gRPC transport of kiln-server (gRPC C core, never the C++ API).
 *
 * Serves inference.GRPCInferenceService (KServe v2 with Triton's extensions) and
 * grpc.health.v1.Health over one listening address. One completion queue and one thread per
 * queue (default: one per core); every registered method has requests pre-posted on every
 * queue, and one generic request is always posted so that unknown methods get UNIMPLEMENTED at
 * once. The method table is derived from protobuf-c's service descriptors, with the paths
 * checked at start-up against the handlers.
 *
 * Completion-queue threads only decode, validate and answer cheap RPCs; inference, model
 * loads and unloads go to the engine's execution threads and are answered from there. Health
 * is answered on the transport threads, never behind the inference queue.
 *
 * Thread-safety: create/start/shutdown/destroy from one thread (main); set_serving from any.
 */
#ifndef KILN_SERVER_SERVER_H
#define KILN_SERVER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "model_worker/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_server kiln_server;

typedef struct kiln_server_options {
    const char *address;       /* "0.0.0.0:8001"; port 0 picks a free one */
    int cq_threads;            /* completion queues/threads; 0 = one per core */
    int requests_per_method;   /* pre-posted per method per queue; 0 = 16 */
    int64_t max_message_bytes; /* receive and send limit; 0 = 2 GiB - 1 */
    const char *version;       /* reported by ServerMetadata */
    /* TLS: a server certificate chain and key (PEM files) turn TLS on for `address`; with a
     * client CA as well, clients must present a certificate it signed (mutual TLS). */
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_client_ca_file;
    const char *unix_socket; /* also listen on this Unix socket path (plaintext); NULL = no */
    bool health_only;        /* serve grpc.health.v1 only (a plaintext probe port) */
} kiln_server_options;

/*
 * Creates the server and binds the address (so kiln_server_port is known before start).
 * KILN_UNAVAILABLE if the address cannot be bound, KILN_INVALID_ARGUMENT for TLS files that
 * cannot be read (or a key without a certificate), KILN_INTERNAL for gRPC setup failures.
 */
kiln_status kiln_server_create(const kiln_server_options *opts, kiln_engine *engine,
                               kiln_server **out, kiln_err *err);

/* The bound TCP port. */
int kiln_server_port(const kiln_server *s);

/* Starts the queues' threads and accepting calls. */
kiln_status kiln_server_start(kiln_server *s, kiln_err *err);

/* Health of "" and ServerReady: SERVING once the server is ready, NOT_SERVING when draining. */
void kiln_server_set_serving(kiln_server *s, bool serving);

/*
 * Stops accepting: health goes NOT_SERVING (Watch streams see it and end), new calls are
 * refused, calls in progress get up to grace_ns to finish, then the rest are cancelled. The
 * queues keep running so that work still in the engine can answer: drain the engine next,
 * then call kiln_server_stop.
 */
void kiln_server_shutdown(kiln_server *s, uint64_t grace_ns);

/* Shuts the completion queues down and joins their threads. REQUIRES: kiln_server_shutdown,
 * and no engine work left that could still answer a call. */
void kiln_server_stop(kiln_server *s);

/* Frees the server (after shutdown). NULL is a no-op. */
void kiln_server_destroy(kiln_server *s);

#ifdef __cplusplus
}
#endif

#endif /* KILN_SERVER_SERVER_H */
