/*
 * tools/kiln/tensor.h: the kiln tool's tensors: KServe datatypes, shapes and a tensor that
 * either owns its bytes or views someone else's.
 *
 * The tool stands apart from the server's tensor/ module (it shares only common/ with the
 * rest of Kiln), so it keeps its own small datatype table here.
 *
 * Errors: functions that can fail return kiln_status and fill the optional err.
 * Thread-safety: everything here is pure or works on the caller's memory; a kiln_cli_tensor is
 * not synchronized.
 */
#ifndef KILN_TOOLS_KILN_TENSOR_H
#define KILN_TOOLS_KILN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define KILN_CLI_MAX_RANK 8

typedef enum kiln_cli_dtype {
    KILN_CLI_INVALID = 0,
    KILN_CLI_BOOL,
    KILN_CLI_UINT8,
    KILN_CLI_UINT16,
    KILN_CLI_UINT32,
    KILN_CLI_UINT64,
    KILN_CLI_INT8,
    KILN_CLI_INT16,
    KILN_CLI_INT32,
    KILN_CLI_INT64,
    KILN_CLI_FP16,
    KILN_CLI_BF16,
    KILN_CLI_FP32,
    KILN_CLI_FP64,
    KILN_CLI_BYTES,
    KILN_CLI_DTYPE_COUNT
} kiln_cli_dtype;

/* KServe name ("FP32"); "INVALID" for a value outside the enum. Static. */
const char *kiln_cli_dtype_name(kiln_cli_dtype d);

/* Bytes per element; 0 for BYTES (variable length) and INVALID. */
size_t kiln_cli_dtype_size(kiln_cli_dtype d);

/* True for the integer types (BOOL excluded), and whether they are signed. */
bool kiln_cli_dtype_is_int(kiln_cli_dtype d, bool *is_signed);

/* Parses a KServe datatype name, case-insensitively ("fp32", "INT64"; "STRING" means BYTES).
 * OUT: *out. INVALID_ARGUMENT naming the string and listing the names otherwise. */
kiln_status kiln_cli_dtype_parse(const char *s, kiln_cli_dtype *out, kiln_err *err);

/*
 * A tensor. data points either into `owner` (a heap block this tensor frees) or, when owner is
 * NULL, into memory someone else keeps alive for as long as the tensor is used (a view).
 * BYTES data are length-prefixed elements (4-byte little-endian length, then the bytes).
 */
typedef struct kiln_cli_tensor {
    char name[128];
    kiln_cli_dtype dtype;
    int rank;
    int64_t shape[KILN_CLI_MAX_RANK];
    const uint8_t *data;
    size_t byte_size;
    void *owner; /* kiln_free()d by kiln_cli_tensor_fini; NULL for a view */
} kiln_cli_tensor;

/* Frees what t owns and zeroes it. NULL is a no-op. */
void kiln_cli_tensor_fini(kiln_cli_tensor *t);

/* Number of elements of shape[rank] (1 for rank 0). OUT: *count. INVALID_ARGUMENT for a
 * negative dimension, OUT_OF_RANGE when the product overflows 2^63. */
kiln_status kiln_cli_shape_count(const int64_t *shape, int rank, uint64_t *count, kiln_err *err);

/* Writes "[1,16]" into buf[cap] (truncated to fit). Returns buf. */
char *kiln_cli_shape_format(const int64_t *shape, int rank, char *buf, size_t cap);

/*
 * Parses "1,16" (or "[1,16]", "" or "[]" for a scalar) into shape (at most KILN_CLI_MAX_RANK
 * dimensions, each >= 0). OUT: shape, *rank. INVALID_ARGUMENT naming what is wrong.
 */
kiln_status kiln_cli_shape_parse(const char *s, int64_t *shape, int *rank, kiln_err *err);

/*
 * Checks that t's bytes fit its dtype and shape: byte_size == count * size for fixed-size
 * types; for BYTES, count well-formed length-prefixed elements that end exactly at byte_size.
 * INVALID_ARGUMENT naming the tensor and both numbers otherwise.
 */
kiln_status kiln_cli_tensor_check(const kiln_cli_tensor *t, kiln_err *err);

/* IEEE half and bfloat16 <-> float (round to nearest even; NaN stays NaN). */
float kiln_cli_half_to_float(uint16_t h);
uint16_t kiln_cli_float_to_half(float f);
float kiln_cli_bf16_to_float(uint16_t b);
uint16_t kiln_cli_float_to_bf16(float f);

#endif /* KILN_TOOLS_KILN_TENSOR_H */
