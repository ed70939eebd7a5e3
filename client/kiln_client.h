/*
 * kiln_client.h: libkilnclient, the C client of Kiln and of any KServe v2 / Open Inference
 * Protocol server over gRPC (Triton included). Installed with the library; it includes only
 * the C standard library and dlpack/dlpack.h.
 *
 * Errors: every function that can fail returns a gRPC status code (0 = OK) and fills *err
 * (when non-NULL) with that code and a message: the server's status message for a failed
 * call, or a local one naming what is wrong.
 * Retries: calls that do not change server state (health, metadata, config, statistics,
 * index, infer) are retried on UNAVAILABLE up to options.retries times, with exponential
 * backoff (initial, multiplier, max) and full jitter; load/unload/register are not retried.
 * Reconnection: the channel reconnects by itself after the server restarts.
 * Ownership: objects returned through OUT parameters belong to the caller and have a free
 * function; tensors read from a result are views valid until the result is freed.
 * Thread-safety: one kiln_client may be used by any number of threads at once.
 */
#ifndef KILN_CLIENT_H
#define KILN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dlpack/dlpack.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_CLIENT_VERSION_MAJOR 0
#define KILN_CLIENT_VERSION_MINOR 1
#define KILN_CLIENT_VERSION_PATCH 0
#define KILN_CLIENT_MAX_RANK      8

typedef struct kiln_client kiln_client;

typedef struct kiln_client_error {
    int code;          /* gRPC status code; 0 = OK */
    char message[512]; /* NUL-terminated */
} kiln_client_error;

/* The gRPC status name of code ("UNAVAILABLE"...). */
const char *kiln_client_code_name(int code);

typedef struct kiln_client_options {
    const char *url;             /* "host:port" or "unix:/path"; default "127.0.0.1:8001" */
    bool tls;                    /* TLS; implied by any tls_* file */
    const char *tls_ca_file;     /* PEM roots for the server's certificate */
    const char *tls_cert_file;   /* PEM client certificate chain (mutual TLS) */
    const char *tls_key_file;    /* PEM client key */
    const char *tls_server_name; /* name to verify instead of the url's host */
    int64_t max_message_bytes;   /* default 2 GiB - 1 */
    int64_t timeout_ms;          /* per call (each attempt); default 30000; 0 = none */
    bool wait_for_ready;         /* wait for the server instead of failing fast; default false */
    int retries;                 /* extra attempts on UNAVAILABLE; default 3 */
    int64_t backoff_initial_ms;  /* default 100 */
    int64_t backoff_max_ms;      /* default 5000 */
    double backoff_multiplier;   /* default 2.0 */
} kiln_client_options;

void kiln_client_options_default(kiln_client_options *o);

int kiln_client_create(const kiln_client_options *o, kiln_client **out, kiln_client_error *err);
void kiln_client_destroy(kiln_client *c); /* NULL is a no-op */

/* ---------------------------------------------------------------- health */

int kiln_client_server_live(kiln_client *c, bool *live, kiln_client_error *err);
int kiln_client_server_ready(kiln_client *c, bool *ready, kiln_client_error *err);
/* version NULL or "": the server's choice. */
int kiln_client_model_ready(kiln_client *c, const char *model, const char *version, bool *ready,
                            kiln_client_error *err);
/* grpc.health.v1 Check of `service` ("" = the server). OUT: *serving: 1 SERVING,
 * 2 NOT_SERVING (grpc.health.v1 values). */
int kiln_client_health_check(kiln_client *c, const char *service, int *serving,
                             kiln_client_error *err);

/* ---------------------------------------------------------------- server and models */

typedef struct kiln_client_server_info {
    char name[128];
    char version[64];
    char extensions[512]; /* comma-separated */
} kiln_client_server_info;
int kiln_client_server_metadata(kiln_client *c, kiln_client_server_info *out,
                                kiln_client_error *err);

typedef struct kiln_client_tensor_info {
    char name[128];
    char datatype[16]; /* "FP32", "INT64", "BYTES"... */
    int rank;
    int64_t shape[KILN_CLIENT_MAX_RANK]; /* -1: any size */
} kiln_client_tensor_info;

typedef struct kiln_client_model_info {
    char name[128];
    char platform[64];
    size_t n_versions;
    char versions[16][24];
    size_t n_inputs, n_outputs;
    kiln_client_tensor_info *inputs;  /* n_inputs */
    kiln_client_tensor_info *outputs; /* n_outputs */
} kiln_client_model_info;
int kiln_client_model_metadata(kiln_client *c, const char *model, const char *version,
                               kiln_client_model_info **out, kiln_client_error *err);
void kiln_client_model_info_free(kiln_client_model_info *m);

/* The model's config (ModelConfig) / statistics (ModelStatistics; model NULL = all) as JSON
 * text (protobuf's JSON mapping, field names in lowerCamelCase). OUT: *json, freed with
 * kiln_client_free. */
int kiln_client_model_config_json(kiln_client *c, const char *model, const char *version,
                                  char **json, kiln_client_error *err);
int kiln_client_model_stats_json(kiln_client *c, const char *model, const char *version,
                                 char **json, kiln_client_error *err);
void kiln_client_free(void *p);

typedef struct kiln_client_repo_entry {
    char name[128];
    char version[24];
    char state[32]; /* "READY", "UNAVAILABLE", "LOADING"... */
    char reason[512];
} kiln_client_repo_entry;
/* OUT: *entries (n), freed with kiln_client_free. ready_only: only READY models. */
int kiln_client_repository_index(kiln_client *c, bool ready_only, kiln_client_repo_entry **entries,
                                 size_t *n, kiln_client_error *err);
int kiln_client_load(kiln_client *c, const char *model, kiln_client_error *err);
int kiln_client_unload(kiln_client *c, const char *model, kiln_client_error *err);

/* ---------------------------------------------------------------- inference */

typedef struct kiln_client_tensor {
    const char *name;
    const char *datatype; /* KServe v2 name: "FP32", "INT64", "UINT8", "BOOL", "BYTES"... */
    int rank;
    int64_t shape[KILN_CLIENT_MAX_RANK];
    const void *data; /* input bytes (raw, little-endian; BYTES: 4-byte length prefixes) */
    size_t byte_size;
    /* Instead of data: bytes already in a registered shared-memory region. */
    const char *shm_region; /* NULL: use data */
    size_t shm_offset;
} kiln_client_tensor;

/* An input from a DLPack tensor (CPU, contiguous, a dtype with a KServe name): a view, valid
 * while dl is. INVALID_ARGUMENT naming what does not fit. */
int kiln_client_tensor_from_dlpack(const DLTensor *dl, const char *name, kiln_client_tensor *out,
                                   kiln_client_error *err);

/* An output to return; with shm_region set, the server writes it there (shm_offset,
 * shm_byte_size) and the result holds no bytes for it. */
typedef struct kiln_client_output {
    const char *name;
    const char *shm_region;
    size_t shm_offset;
    size_t shm_byte_size;
} kiln_client_output;

typedef struct kiln_client_infer_options {
    const char *version;    /* NULL: the server's choice */
    const char *request_id; /* NULL: none */
    int64_t timeout_ms;     /* 0: the client's */
} kiln_client_infer_options;

typedef struct kiln_client_result kiln_client_result;

/* ModelInfer. outputs NULL (n_outputs 0): all of the model's outputs. OUT: *result. */
int kiln_client_infer(kiln_client *c, const char *model, const kiln_client_tensor *inputs,
                      size_t n_inputs, const kiln_client_output *outputs, size_t n_outputs,
                      const kiln_client_infer_options *opts, kiln_client_result **result,
                      kiln_client_error *err);
size_t kiln_client_result_count(const kiln_client_result *r);
/* Output i / the output named `name` as a view into r (data NULL for a shm output).
 * NOT_FOUND for an unknown name or index. */
int kiln_client_result_output(const kiln_client_result *r, size_t i, kiln_client_tensor *out,
                              kiln_client_error *err);
int kiln_client_result_find(const kiln_client_result *r, const char *name, kiln_client_tensor *out,
                            kiln_client_error *err);
const char *kiln_client_result_model(const kiln_client_result *r);
const char *kiln_client_result_id(const kiln_client_result *r);
void kiln_client_result_free(kiln_client_result *r);

/* ---------------------------------------------------------------- shared memory */

typedef struct kiln_client_shm kiln_client_shm;

/* Creates a POSIX shared-memory object `key` ("/name") of byte_size, maps it, and registers
 * it with the server as `region`. OUT: *out. On failure nothing is left behind. */
int kiln_client_shm_create(kiln_client *c, const char *region, const char *key, size_t byte_size,
                           kiln_client_shm **out, kiln_client_error *err);
void *kiln_client_shm_data(const kiln_client_shm *s);
size_t kiln_client_shm_size(const kiln_client_shm *s);
const char *kiln_client_shm_region(const kiln_client_shm *s);
/* Unregisters, unmaps and unlinks; frees s even when unregistering fails (the error is
 * returned). NULL is a no-op. */
int kiln_client_shm_destroy(kiln_client *c, kiln_client_shm *s, kiln_client_error *err);

/* CUDA shared memory: registers a region the caller made with cudaIpcGetMemHandle (the
 * 64-byte handle), on device_id, of byte_size. No CUDA library is needed here. */
int kiln_client_cuda_shm_register(kiln_client *c, const char *region, const void *ipc_handle,
                                  size_t handle_size, int64_t device_id, size_t byte_size,
                                  kiln_client_error *err);
int kiln_client_cuda_shm_unregister(kiln_client *c, const char *region, kiln_client_error *err);

#ifdef __cplusplus
}
#endif

#endif /* KILN_CLIENT_H */
