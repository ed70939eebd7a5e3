/*
 * backends/onnx/runtime_int.h: the loaded form of an ONNX model, shared by load.c (load),
 * runtime.c (execute), run_gpu.c (on a GPU), optimize.c (what load does to the graph) and plan.c
 * (memory plans), only.
 *
 * Load turns the file's nodes into steps. A step is a node with a kernel and its own input and
 * output value lists, so that load can rewrite the graph without touching the file's model:
 *   - constant folding: a step whose inputs are all constants runs once at load; its outputs
 *     become constants and the step is dropped;
 *   - BatchNormalization after a Conv with constant weights is folded into new weights and
 *     bias (new constant values after the file's);
 *   - an Add of a constant [N] to the output of a MatMul whose B is a constant [K, N] (an
 *     exported Linear layer on 3-D input) becomes that MatMul's bias (a third input, which
 *     only rewritten steps have);
 *   - a Relu, LeakyRelu or Clip that alone reads the output of a Conv, Gemm or MatMul becomes
 *     that step's fused activation.
 * Execute then compiles, per set of input shapes, a plan (plan.c): the steps whose inputs
 * depend only on shapes (Shape and what follows it) are folded for those shapes, and every
 * other value gets an offset in one arena reused by all plans of the model.
 *
 * Thread-safety: load and unload run on one thread; execute (and so run_step, the trace and
 * the plans, which use the model's scratch arrays and arena) on one thread at a time per
 * model (backends/backend.h). Nothing here locks.
 */
#ifndef KILN_BACKENDS_ONNX_RUNTIME_INT_H
#define KILN_BACKENDS_ONNX_RUNTIME_INT_H

#include "backends/backend.h"
#include "backends/onnx/gpu.h"
#include "backends/onnx/onnx_int.h"

typedef struct kiln_onnx_step {
    const kiln_onnx_node *node;
    const kiln_onnx_kernel *kernel;
    size_t n_in, n_out;
    int32_t *in;  /* value indexes; -1: omitted */
    int32_t *out; /* value indexes; -1: omitted */
    kiln_onnx_act act;
    bool dead; /* removed by a rewrite (only during load) */
    /* on a GPU: the step's CUDA kernel (NULL: its CPU kernel runs on copies), and whether it
     * ran on the CPU that way (for the log) */
    const kiln_onnx_kernel *cuda;
    bool fell_back;
} kiln_onnx_step;

/* Plans kept per model: one per set of input shapes, least recently used replaced. A model on
 * a GPU keeps more: the dynamic batcher makes every batch size from 1 to max_batch_size, and a
 * plan there also holds the shape's CUDA graph. */
#define KILN_ONNX_MAX_PLANS     16
#define KILN_ONNX_MAX_GPU_PLANS 128
/* A value that depends only on input shapes is kept in a plan up to this size. */
#define KILN_ONNX_PLAN_CONST_BYTES (UINT64_C(1) << 20)

typedef struct kiln_onnx_plan {
    kiln_shape *in_shapes; /* per config input */
    bool *skip;            /* per step: folded for these shapes */
    kiln_tensor *consts;   /* per value: the folded ones (storage NULL otherwise) */
    uint64_t *off;         /* per value: arena offset, or KILN_ONNX_UNPLANNED */
    uint64_t *bytes;       /* per value: planned size */
    uint64_t *ws_off;      /* per step: its workspace's arena offset (ws_bytes 0: none) */
    uint64_t *ws_bytes;    /* per step: its workspace's size (cuDNN's, on a GPU) */
    uint64_t arena_bytes;  /* what the plan needs */
    uint64_t sum_bytes;    /* what its values would need without reuse */
    size_t n_skipped;
    uint64_t used; /* LRU stamp */
    /* GPU models: the CUDA graph of this plan's steps (NULL: none yet), the memory generation
     * it was captured at, whether the steps cannot be captured (a step copies through the
     * host), and the outputs the graph writes (per config output; views of device memory) */
    void *graph;
    uint64_t graph_gen;
    bool no_graph;
    size_t n_gout;
    kiln_tensor *gout;
} kiln_onnx_plan;

struct kiln_backend_model {
    kiln_onnx_model *g;
    const kiln_model_config *cfg;
    char name[160];      /* for messages and logs: the model's name (truncated) */
    size_t n_values;     /* the file's values, then load's new constants */
    kiln_tensor *consts; /* per value: initializers and folded constants (storage NULL else) */
    bool *is_output;     /* per value: a graph output */
    size_t n_steps;
    kiln_onnx_step *steps;
    int32_t *in_value;  /* per config input: its graph value */
    int32_t *out_value; /* per config output: its graph value */
    int32_t *last_use;  /* per value: the last step that reads it, -1 if none */
    size_t max_io;      /* the most inputs or outputs of one step */
    /* a step's call arrays, max_io long (load, then one execute at a time) */
    const kiln_tensor **scr_in;
    kiln_tensor *scr_out;
    uint64_t *scr_off, *scr_bytes;
    uint64_t const_bytes;
    uint64_t plan_bytes;   /* what the kept plans hold besides the arena (kiln__onnx_plan_bytes) */
    uint64_t dconst_bytes; /* the device copies of constants (dconsts) */
    /* load's rewrites, for the log line and tests */
    size_t n_folded, n_bn_folded, n_act_fused, n_bias_fused;
    /* execution (one thread at a time, see backend.h) */
    kiln_onnx_plan plans[KILN_ONNX_MAX_GPU_PLANS];
    size_t max_plans; /* KILN_ONNX_MAX_PLANS, or KILN_ONNX_MAX_GPU_PLANS on a GPU */
    size_t n_plans;
    size_t n_built; /* plans built so far (the first KILN_ONNX_MAX_PLANS are logged at info) */
    uint64_t clock;
    kiln_storage *arena; /* sized for the largest plan built; NULL before the first */
    /* GPU (NULL gpu: the model runs on the CPU) */
    kiln_onnx_gpu *gpu;
    bool graphs; /* CUDA graphs allowed (config parameter cuda_graphs) */
    kiln_onnx_precision precision;
    kiln_tensor *dconsts; /* per value: device copies of constants device kernels read */
    kiln_storage **gin;   /* per config input: its device buffer (fixed for graphs) */
    kiln_storage **gin16; /* FP16 precision: per FP32 input, its FP16 copy (fixed for graphs) */
    kiln_storage *gconv;  /* FP16 precision: the FP32 outputs, converted after a run */
    uint64_t mem_gen;     /* bumped when the arena or an input buffer is replaced */
    bool host_copied;     /* this run copied through the host (not capturable) */
    char lost_msg[KILN_ERR_MSG_MAX]; /* the CUDA error that poisoned the GPU's context, for later
                                        errors */
    kiln_tensor *scr_tmp;            /* a step's host or device copies of its inputs, max_io long */
    uint64_t scr_ws;                 /* the workspace the last step's kernel used (call.ws_need) */
};

/* ---------------------------------------------------------------- optimize.c, plan.c */

/* Grows m->consts and m->is_output by one value. OUT: *v, its index. RESOURCE_EXHAUSTED when
 * out of memory (m unchanged). REQUIRES: load (no execute yet). */
kiln_status kiln__onnx_new_value(kiln_backend_model *m, int32_t *v, kiln_err *err);

/* Load's rewrites (optimize.c): folding, BatchNormalization into Conv, activation fusion.
 * Errors: a constant step that fails is a load error naming the node. */
kiln_status kiln__onnx_optimize(kiln_backend_model *m, kiln_err *err);

/* Runs step s on vals (value-indexed; vals hold references), with plan p's arena placement
 * when p is non-NULL. On success the step's outputs are in vals (replacing what was there);
 * on error vals are unchanged and err names the node. */
kiln_status kiln__onnx_run_step(kiln_backend_model *m, kiln_onnx_step *s, kiln_tensor *vals,
                                const kiln_onnx_plan *p, kiln_err *err);

/* What an unplanned execution saw, per value (and per step: its workspace), to build a plan
 * from (plan.c). */
typedef struct kiln_onnx_trace {
    uint64_t *ws; /* per step: the workspace its kernel used */
    uint64_t *bytes;
    int32_t *first;   /* the step that made it; -1 for inputs and constants */
    int32_t *root;    /* the value whose buffer it is (itself, or what it views); -1: not ours */
    bool *data_shape; /* its shape depends on input values, not only on input shapes */
    kiln_tensor *shape_only; /* values that depend only on input shapes, kept (else NULL) */
} kiln_onnx_trace;

/* Allocates a trace for m's values and steps (RESOURCE_EXHAUSTED) / frees one (a zeroed one
 * too). */
kiln_status kiln__onnx_trace_init(kiln_onnx_trace *t, const kiln_backend_model *m, kiln_err *err);
void kiln__onnx_trace_fini(kiln_onnx_trace *t, size_t n_values);

/* Records step i's outputs, just run, in vals (before its inputs are freed), and the workspace
 * its kernel used (m->scr_ws). */
void kiln__onnx_trace_step(kiln_onnx_trace *t, const kiln_backend_model *m, size_t i,
                           const kiln_tensor *vals);

/* Builds a plan for in_shapes from a finished trace; the plan takes references on the kept
 * shape-only values. OUT: *p (zeroed on error, RESOURCE_EXHAUSTED). */
kiln_status kiln__onnx_plan_build(const kiln_backend_model *m, kiln_onnx_trace *t,
                                  const kiln_shape *in_shapes, kiln_onnx_plan *p, kiln_err *err);

/* Frees a plan's contents (a zeroed plan too). */
void kiln__onnx_plan_fini(kiln_onnx_plan *p, size_t n_values);

/* Bytes a plan holds besides the arena (its kept values). */
uint64_t kiln__onnx_plan_bytes(const kiln_onnx_plan *p, size_t n_values);

/* ---------------------------------------------------------------- load.c */

/* The backend's load and unload (backends/backend.h). */
kiln_status kiln__onnx_load(const kiln_load_args *args, kiln_backend_model **out, kiln_err *err);
void kiln__onnx_unload(kiln_backend_model *m);

/* ---------------------------------------------------------------- runtime.c: executions */

/* The backend's execute (backends/backend.h): a GPU instance's through kiln__onnx_execute_gpu. */
kiln_status kiln__onnx_execute(kiln_backend_model *m, kiln_batch *batch, kiln_err *err);

/* Calls kernel k for step s on inputs ins; moves its outputs into vals. With `gpu`, a CUDA
 * kernel: it gets the context, and the plan's arena and the step's workspace in it. */
kiln_status kiln__onnx_call_kernel(kiln_backend_model *m, const kiln_onnx_step *s,
                                   const kiln_onnx_kernel *k, const kiln_tensor **ins,
                                   kiln_tensor *vals, const kiln_onnx_plan *p, bool gpu,
                                   kiln_err *err);

/* One execution's state: its values (value-indexed, holding references), the plan for its
 * input shapes (NULL: none), and, without a plan, the trace to build one from. */
typedef struct kiln_onnx_run {
    kiln_tensor *vals;
    kiln_onnx_plan *p;
    kiln_onnx_trace trace;
    bool tracing; /* trace is in use (a run without memory for it goes untraced) */
} kiln_onnx_run;

/* The start of an execution: OUT r: the values (zeroed; RESOURCE_EXHAUSTED without memory),
 * the plan for the batch's shapes (its arena made big enough), or NULL and a trace (a run
 * without memory for the arena or the trace goes unplanned and untraced). */
kiln_status kiln__onnx_begin_run(kiln_backend_model *m, const kiln_batch *batch, kiln_onnx_run *r,
                                 kiln_err *err);

/* Fills vals with the constants (and p's folded values). */
void kiln__onnx_set_consts(const kiln_backend_model *m, const kiln_onnx_plan *p, kiln_tensor *vals);

/* Runs the steps (those p does not fold) over vals, freeing each value after its last reader.
 * `check` polls the batch's should_stop between steps. trace (may be NULL) records them. */
kiln_status kiln__onnx_run_steps(kiln_backend_model *m, kiln_batch *batch, const kiln_onnx_plan *p,
                                 kiln_tensor *vals, kiln_onnx_trace *trace, bool check,
                                 kiln_err *err);

/* Checks output t against the slot's config output and allocates the slot's result. */
kiln_status kiln__onnx_slot_result(kiln_backend_model *m, kiln_batch *batch, kiln_output_slot *slot,
                                   const kiln_tensor *t, kiln_err *err);

/* The end of an execution r with status st: outputs released on failure, the values freed, and
 * a plan kept from the trace after a success. Returns st. */
kiln_status kiln__onnx_end_run(kiln_backend_model *m, kiln_batch *batch, kiln_status st,
                               kiln_onnx_run *r);

/* Frees every plan's CUDA graph and the output views it kept: before memory they point at is
 * replaced (the views would keep the old memory alive; the graphs would write into it). */
void kiln__onnx_drop_graphs(kiln_backend_model *m);

/* ---------------------------------------------------------------- run_gpu.c: on a GPU */

/* Opens instance m's GPU context on `device` with the config's precision and cuda_graphs
 * parameters (INVALID_ARGUMENT naming a bad one). */
kiln_status kiln__onnx_gpu_setup(kiln_backend_model *m, int device, kiln_err *err);

/* After the rewrites: each step's CUDA kernel, and room for the device copies. */
kiln_status kiln__onnx_gpu_prepare(kiln_backend_model *m, kiln_err *err);

/* The load's GPU line: the device, and the ops that ran on the CPU in the warm-up runs. */
void kiln__onnx_gpu_log(const kiln_backend_model *m);

/* Whether step s runs on the GPU: a model on a GPU runs there every step that reads a device
 * value, except Shape, which reads only the shape. */
bool kiln__onnx_step_on_gpu(const kiln_backend_model *m, const kiln_onnx_step *s,
                            const kiln_tensor *vals);

/* Runs step s on the GPU (its CUDA kernel, or its CPU kernel on host copies). */
kiln_status kiln__onnx_run_gpu_step(kiln_backend_model *m, kiln_onnx_step *s, kiln_tensor *vals,
                                    const kiln_onnx_plan *p, kiln_err *err);

/* Executes a batch on a GPU instance; batch->fault says whether a failure ran out of device
 * memory or lost the GPU (a sticky CUDA error, after which every execute fails at once). */
kiln_status kiln__onnx_execute_gpu(kiln_backend_model *m, kiln_batch *batch, kiln_err *err);

/* Whether t is in CUDA memory. */
static inline bool kiln__onnx_on_device(const kiln_tensor *t)
{
    return t->storage && t->device.kind == KILN_DEVICE_CUDA;
}

#endif /* KILN_BACKENDS_ONNX_RUNTIME_INT_H */
