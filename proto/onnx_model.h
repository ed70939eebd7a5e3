/*
 * proto/onnx_model.h: an ONNX model file as plain C, checked for structure.
 *
 * The file is parsed with protobuf-c from proto/onnx.proto (the subset of the ONNX format Kiln
 * reads, with the format's field numbers) and converted into this struct; no protobuf-c type
 * crosses this header. What the loader guarantees of a model it returns:
 *   - ir_version >= 3 and the default operator set ("" or "ai.onnx") imported at a version in
 *     KILN_ONNX_MIN_OPSET..KILN_ONNX_MAX_OPSET;
 *   - every tensor name appears in values[] once; graph inputs that are also initializers are
 *     initializers (ONNX IR < 4 lists them as inputs too), not model inputs;
 *   - every initializer's data matches its dims and data type: raw_data, the typed field, or
 *     external data in a file inside the model's directory (a location that is absolute, has a
 *     ".." component, or leaves the directory through a symbolic link is refused);
 *   - nodes are in topological order: each node input is a model input, an initializer, or an
 *     output of an earlier node (so the graph has no cycle), and no value is produced twice;
 *   - model inputs and outputs have a tensor type with a known data type; symbolic or absent
 *     dims are -1.
 * It does not check that operators are supported or that attributes are valid: that is the
 * ONNX backend's job, with its kernel registry.
 *
 * Errors are KILN_INVALID_ARGUMENT naming the model file and the element, e.g.
 * "m/1/model.onnx: initializer 'W': raw_data has 12 bytes, dims [2,3] of FLOAT need 24";
 * KILN_NOT_FOUND for a missing file; KILN_RESOURCE_EXHAUSTED when out of memory, over
 * KILN_ONNX_MAX_FILE_BYTES, or when unpacking would need more than KILN_ONNX_UNPACK_BYTES.
 * Typed tensor values that do not fit their type (UINT8 300) are refused; BOOL bytes are
 * normalized to 0/1. External data is opened and checked before its tensor is allocated; a
 * FIFO or directory in place of a file is refused without blocking.
 *
 * Ownership: kiln_onnx_model_load returns a model the caller frees with kiln_onnx_model_free
 * (NULL is a no-op); every string, array and initializer tensor belongs to it.
 * Thread-safety: a model is immutable after loading and may be read from any thread.
 */
#ifndef KILN_PROTO_ONNX_MODEL_H
#define KILN_PROTO_ONNX_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_ONNX_MIN_OPSET 13
#define KILN_ONNX_MAX_OPSET 21
/* The largest .onnx file read into memory (external data files are not counted). */
#define KILN_ONNX_MAX_FILE_BYTES (UINT64_C(2) << 30)
/* The memory protobuf-c may use to unpack a file of `len` bytes (a file of tiny messages
 * unpacks into many times its size; weights in raw_data unpack about 1:1). */
#define KILN_ONNX_UNPACK_BYTES(len) ((uint64_t)(len)*4 + (UINT64_C(256) << 20))

/* A named tensor of the graph: a model input, an initializer, or a node output. */
typedef struct kiln_onnx_value {
    char *name;
    kiln_dtype dtype; /* KILN_DTYPE_INVALID when the file does not say */
    bool has_shape;   /* rank and dims are known (dims may hold -1) */
    int rank;
    int64_t dims[KILN_MAX_RANK];
    int32_t producer;    /* index of the node that writes it; -1 for inputs, initializers */
    int32_t initializer; /* index into initializers[], or -1 */
} kiln_onnx_value;

typedef enum kiln_onnx_attr_type {
    KILN_ONNX_ATTR_FLOAT = 1,
    KILN_ONNX_ATTR_INT = 2,
    KILN_ONNX_ATTR_STRING = 3,
    KILN_ONNX_ATTR_TENSOR = 4,
    KILN_ONNX_ATTR_FLOATS = 6,
    KILN_ONNX_ATTR_INTS = 7,
    KILN_ONNX_ATTR_STRINGS = 8,
} kiln_onnx_attr_type;

typedef struct kiln_onnx_attr {
    char *name;
    kiln_onnx_attr_type type;
    float f;
    int64_t i;
    char *s; /* STRING: NUL-terminated copy (size s_len) */
    size_t s_len;
    size_t n; /* FLOATS, INTS, STRINGS: element count */
    float *floats;
    int64_t *ints;
    char **strings;
    kiln_tensor t; /* TENSOR (e.g. Constant's value) */
} kiln_onnx_attr;

typedef struct kiln_onnx_node {
    char *name; /* the file's, or "node<i>" when it gives none */
    char *op;
    char *domain; /* "" for the default operator set */
    size_t n_inputs;
    int32_t *inputs; /* value indexes; -1 for an omitted optional input */
    size_t n_outputs;
    int32_t *outputs; /* value indexes; -1 for an omitted optional output */
    size_t n_attrs;
    kiln_onnx_attr *attrs;
} kiln_onnx_node;

typedef struct kiln_onnx_model {
    int64_t ir_version;
    int64_t opset; /* of the default operator set */
    char *producer;
    size_t n_values;
    kiln_onnx_value *values;
    size_t n_inputs; /* model inputs (not initializers), in the file's order */
    int32_t *inputs;
    size_t n_outputs;
    int32_t *outputs;
    size_t n_initializers;
    kiln_tensor *initializers; /* CPU tensors; value index in init_values[i] */
    int32_t *init_values;
    size_t n_nodes;
    kiln_onnx_node *nodes;
} kiln_onnx_model;

/*
 * Reads and checks the model file at `path`. External data locations are resolved against the
 * file's directory. OUT: *out (NULL on error). Errors as in the header comment.
 */
kiln_status kiln_onnx_model_load(const char *path, kiln_onnx_model **out, kiln_err *err);

/*
 * As kiln_onnx_model_load, from `len` bytes in memory. `dir` is where external data files
 * live; NULL refuses external data. `source` names the model in error messages.
 */
kiln_status kiln_onnx_model_parse(const void *data, size_t len, const char *dir, const char *source,
                                  kiln_onnx_model **out, kiln_err *err);

void kiln_onnx_model_free(kiln_onnx_model *m);

/* The Kiln dtype of an ONNX TensorProto.DataType value (1 = FLOAT...); KILN_DTYPE_INVALID for
 * types Kiln has none for (STRING, COMPLEX*). */
kiln_dtype kiln_onnx_dtype(int32_t onnx_type);

/* The attribute named `name` of node n, or NULL. */
const kiln_onnx_attr *kiln_onnx_node_attr(const kiln_onnx_node *n, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* KILN_PROTO_ONNX_MODEL_H */
