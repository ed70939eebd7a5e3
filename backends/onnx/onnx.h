/*
 * backends/onnx/onnx.h: the ONNX backend (models as model.onnx files, run by Kiln's own graph
 * interpreter and kernels). Internal to backends/: the rest of Kiln finds it through
 * kiln_backend_find("onnx"). See docs/onnx.md for the operators it runs.
 */
#ifndef KILN_BACKENDS_ONNX_ONNX_H
#define KILN_BACKENDS_ONNX_ONNX_H

#include "backends/backend.h"

extern const kiln_backend kiln_onnx_backend;

/*
 * Sets the number of OpenBLAS threads (process-wide; each GEMM of each execution thread may
 * use that many). Call it before any ONNX model loads, from a thread that is not sandboxed:
 * OpenBLAS starts its threads here. Default 1. INVALID_ARGUMENT outside 1..MAX;
 * FAILED_PRECONDITION once a load has fixed another count.
 */
#define KILN_ONNX_MAX_BLAS_THREADS 256
kiln_status kiln_onnx_set_blas_threads(int n, kiln_err *err);

/* What load and execute did with a model, for logs, tests and benchmarks. REQUIRES: no
 * execute is running on m. */
typedef struct kiln_onnx_stats {
    size_t n_nodes;           /* in the file */
    size_t n_steps;           /* after load's rewrites */
    size_t n_folded;          /* nodes computed at load (constant inputs only) */
    size_t n_bn_folded;       /* BatchNormalization nodes folded into Conv weights */
    size_t n_act_fused;       /* Relu/LeakyRelu/Clip fused into Conv/Gemm/MatMul */
    size_t n_bias_fused;      /* Adds of a constant row fused into the MatMul before them */
    uint64_t const_bytes;     /* initializers and folded constants */
    size_t n_plans;           /* memory plans kept (one per set of input shapes) */
    uint64_t arena_bytes;     /* the arena the plans share (the largest plan's size) */
    uint64_t last_plan_arena; /* the most recently used plan: its arena size, */
    uint64_t last_plan_sum;   /* what its values would need without reuse, */
    size_t last_plan_skipped; /* and its steps folded for its shapes */
} kiln_onnx_stats;

void kiln_onnx_stats_get(const kiln_backend_model *m, kiln_onnx_stats *out);

#endif /* KILN_BACKENDS_ONNX_ONNX_H */
