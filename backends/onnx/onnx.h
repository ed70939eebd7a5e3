/*
 * backends/onnx/onnx.h: the ONNX backend (models as model.onnx files, run by Kiln's own graph
 * interpreter and kernels). Internal to backends/: the rest of Kiln finds it through
 * kiln_backend_find("onnx"). See docs/onnx.md for the operators it runs.
 */
#ifndef KILN_BACKENDS_ONNX_ONNX_H
#define KILN_BACKENDS_ONNX_ONNX_H

#include "backends/backend.h"

extern const kiln_backend kiln_onnx_backend;

#endif /* KILN_BACKENDS_ONNX_ONNX_H */
