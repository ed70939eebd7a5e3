/*
 * proto/model_config.h: a model's configuration (config.pbtxt) as plain C.
 *
 * The text is parsed by the generic text-format parser into the protobuf message of
 * proto/model_config.proto (Triton's ModelConfig subset, same field numbers), validated, and
 * converted into this struct, which is all the rest of Kiln sees: no protobuf-c type crosses
 * this header. The packed protobuf form is kept alongside for the ModelConfig RPC.
 *
 * Validation (KILN_INVALID_ARGUMENT, naming the field, e.g. "input[1] 'X': dims[0] is -2"):
 * max_batch_size >= 0; at least one input and one output; names non-empty and unique across
 * inputs and outputs; data_type not TYPE_INVALID; dims >= -1, rank (plus the batch dim when
 * max_batch_size > 0) <= KILN_MAX_RANK; dynamic_batching only with max_batch_size > 0,
 * preferred sizes in 1..max_batch_size, max_queue_delay_microseconds <= 60 s; instance_group count
 * >= 0 (0 means 1), gpus >= 0 and only for KIND_GPU/KIND_AUTO; version_policy latest num_versions
 * >= 1 (0 means 1), specific versions >= 1.
 *
 * Ownership: kiln_model_config_parse returns a config the caller frees with
 * kiln_model_config_free (NULL is a no-op). All strings and arrays belong to it.
 * Thread-safety: a config is immutable after parsing and may be read from any thread.
 */
#ifndef KILN_PROTO_MODEL_CONFIG_H
#define KILN_PROTO_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The longest batching delay a config may ask for (60 s). */
#define KILN_MAX_QUEUE_DELAY_US UINT64_C(60000000)

typedef struct kiln_model_io {
    char *name;
    kiln_dtype dtype;
    kiln_shape dims; /* the config dims (a pattern with -1), without the batch dim */
    bool optional;
} kiln_model_io;

typedef enum kiln_version_policy_kind {
    KILN_VERSIONS_LATEST = 0, /* the num_versions highest (default 1) */
    KILN_VERSIONS_ALL,
    KILN_VERSIONS_SPECIFIC,
} kiln_version_policy_kind;

typedef enum kiln_instance_kind {
    KILN_INSTANCE_AUTO = 0,
    KILN_INSTANCE_GPU = 1,
    KILN_INSTANCE_CPU = 2,
    KILN_INSTANCE_MODEL = 3,
} kiln_instance_kind;

typedef struct kiln_instance_group {
    kiln_instance_kind kind;
    int32_t count; /* >= 1 after parsing */
    size_t n_gpus;
    int32_t *gpus;
} kiln_instance_group;

/* model_warmup: sample requests run on every instance after a load (registry/registry.c). */
typedef enum kiln_warmup_data {
    KILN_WARMUP_ZERO = 0, /* zero_data: all bytes 0 (BYTES: empty strings) */
    KILN_WARMUP_RANDOM,   /* random_data: fixed-seed random values (not for BYTES) */
    KILN_WARMUP_FILE,     /* input_data_file: raw bytes from <model>/warmup/<file> */
} kiln_warmup_data;

typedef struct kiln_warmup_input {
    char *name; /* a config input */
    kiln_dtype dtype;
    kiln_shape dims; /* without the batch dim; every dim >= 0 */
    kiln_warmup_data data;
    char *file; /* KILN_WARMUP_FILE: a file name (no '/'), else NULL */
} kiln_warmup_input;

typedef struct kiln_model_warmup {
    char *name;
    uint32_t batch_size; /* rows: 1..max_batch_size, or 1 when the model does not batch */
    uint32_t count;      /* runs per instance, >= 1 (0 in the file means 1) */
    size_t n_inputs;
    kiln_warmup_input *inputs; /* every required config input, in any order */
} kiln_model_warmup;

typedef struct kiln_model_param {
    char *key;
    char *value;
} kiln_model_param;

typedef struct kiln_model_config {
    char *name;     /* may be "" in the file; the registry fills in the directory name */
    char *backend;  /* "plugin", "onnx"... (or derived from platform) */
    char *platform; /* "onnxruntime_onnx"... kept as given */
    char *default_model_filename; /* "" = the backend's default */
    int32_t max_batch_size;       /* 0 = no batch dim */
    size_t n_inputs;
    kiln_model_io *inputs;
    size_t n_outputs;
    kiln_model_io *outputs;

    struct {
        kiln_version_policy_kind kind;
        uint32_t num_versions; /* LATEST */
        size_t n_versions;     /* SPECIFIC */
        int64_t *versions;
    } version_policy;

    bool dynamic_batching;
    size_t n_preferred_batch_sizes;
    int32_t *preferred_batch_sizes;
    uint64_t max_queue_delay_us; /* at most KILN_MAX_QUEUE_DELAY_US */
    uint64_t default_timeout_us; /* queue policy; 0 = none */
    uint32_t max_queue_size;     /* queue policy; 0 = the server default */
    bool allow_timeout_override; /* a request's "timeout" parameter replaces default_timeout_us */
    bool queue_timeout_delays;   /* timeout_action DELAY: a timed-out request stays queued */

    size_t n_instance_groups; /* 0 = one instance, KIND_AUTO */
    kiln_instance_group *instance_groups;

    size_t n_params;
    kiln_model_param *params;

    size_t n_warmups;
    kiln_model_warmup *warmups;

    uint8_t *packed; /* the validated config as an inference.ModelConfig protobuf */
    size_t packed_len;
} kiln_model_config;

/*
 * Parses and validates config text. `source` names the file in messages ("simple/config.pbtxt").
 * OUT: *out (NULL on failure). Returns KILN_INVALID_ARGUMENT with "source:line:col: ..." for
 * syntax errors and "source: field: ..." for validation errors; KILN_RESOURCE_EXHAUSTED if
 * memory is short.
 */
kiln_status kiln_model_config_parse(const char *text, size_t len, const char *source,
                                    kiln_model_config **out, kiln_err *err);

/* Reads and parses a config file. KILN_NOT_FOUND if it does not exist, else as above. */
kiln_status kiln_model_config_load(const char *path, const char *source, kiln_model_config **out,
                                   kiln_err *err);

void kiln_model_config_free(kiln_model_config *cfg);

/* The value of parameter `key`, or NULL. The string belongs to cfg. */
const char *kiln_model_config_param(const kiln_model_config *cfg, const char *key);

/* Replaces cfg->name (and the packed form's name) with `name`. KILN_RESOURCE_EXHAUSTED if short
 * of memory. */
kiln_status kiln_model_config_set_name(kiln_model_config *cfg, const char *name, kiln_err *err);

#ifdef __cplusplus
}
#endif

#endif /* KILN_PROTO_MODEL_CONFIG_H */
