/*
 * proto/onnx_int.h: shared between the ONNX loader's files (proto/onnx_*.c) only.
 */
#ifndef KILN_PROTO_ONNX_INT_H
#define KILN_PROTO_ONNX_INT_H

#include "proto/onnx.pb-c.h"
#include "proto/onnx_model.h"

/* What error messages and external data need to know of the model being loaded. */
typedef struct kiln_onnx_ctx {
    const char *source; /* names the model in messages */
    const char *dir;    /* external data directory; NULL refuses external data */
} kiln_onnx_ctx;

/* Sets err to KILN_INVALID_ARGUMENT, "<source>: <message>", and returns that code. */
kiln_status kiln__onnx_bad(kiln_err *err, const kiln_onnx_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The Kiln dtype of an ONNX TensorProto.DataType; KILN_DTYPE_INVALID if Kiln has none. */
kiln_dtype kiln__onnx_dtype(int32_t onnx_type);

/*
 * Converts tp into *out (a new CPU tensor). `what` names it in messages ("initializer 'W'").
 * Errors as in onnx_model.h.
 */
kiln_status kiln__onnx_tensor(const kiln_onnx_ctx *c, const char *what, const Onnx__TensorProto *tp,
                              kiln_tensor *out, kiln_err *err);

#endif /* KILN_PROTO_ONNX_INT_H */
