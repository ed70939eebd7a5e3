/*
 * backends/onnx/onnx_int.h: shared by the ONNX backend's files only: the kernel interface, and
 * the config auto-complete that runtime.c's backend table points at.
 *
 * A kernel computes one node. It reads its inputs (NULL for an omitted optional input), and
 * makes each output tensor itself (kiln__onnx_alloc, or a view of an input when the op only
 * changes the shape), because output shapes depend on the inputs. kiln__onnx_alloc places an
 * output in the execution's memory plan when the call carries one (see plan.c). On error its
 * outputs are left empty and err names the node. Kernels are found by (op, device) in a
 * registry; dtypes are checked by the kernel, at run time, with an error naming the node and
 * the dtype. A kernel's output is either a view of one of its own inputs or new memory from
 * kiln__onnx_alloc, the same for every run with the same input shapes (the memory plans
 * rely on it; Constant, which shares its attribute, is always folded at load). CUDA kernels
 * (gpu.cu) take device inputs and make device outputs, in the instance's stream. A kernel with
 * `fuses_act` applies call->act to its output (load fuses a following Relu, LeakyRelu or Clip into
 * it). Thread-safety: kernels keep no state; any thread may run any kernel.
 */
#ifndef KILN_BACKENDS_ONNX_ONNX_INT_H
#define KILN_BACKENDS_ONNX_ONNX_INT_H

#include "common/status.h"
#include "proto/model_config.h"
#include "proto/onnx_model.h"
#include "tensor/tensor.h"

/* An activation fused into the kernel that makes the value it reads. */
typedef enum kiln_onnx_act_kind {
    KILN_ONNX_ACT_NONE = 0,
    KILN_ONNX_ACT_RELU,
    KILN_ONNX_ACT_LEAKY, /* x < 0: a * x */
    KILN_ONNX_ACT_CLIP,  /* min(max(x, a), b) */
} kiln_onnx_act_kind;

typedef struct kiln_onnx_act {
    kiln_onnx_act_kind kind;
    float a, b;
} kiln_onnx_act;

/* Applies act to p[0..n) in place. */
void kiln__onnx_act_apply(const kiln_onnx_act *act, float *p, size_t n);

#define KILN_ONNX_UNPLANNED UINT64_MAX

typedef struct kiln_onnx_call {
    const kiln_onnx_node *node;
    int64_t opset;
    size_t n_in;
    const kiln_tensor *const *in; /* NULL entries: omitted optional inputs */
    size_t n_out;
    kiln_tensor *out;  /* zeroed on entry; the kernel fills the ones the node names */
    kiln_onnx_act act; /* for kernels with fuses_act; NONE otherwise */
    /* Memory plan (NULL arena: none): output k of out_bytes[k] bytes goes at arena offset
     * out_off[k] unless that is KILN_ONNX_UNPLANNED or the size differs. */
    kiln_storage *arena;
    const uint64_t *out_off;
    const uint64_t *out_bytes;
    /* CUDA kernels: the instance's GPU context (gpu.h); NULL for CPU kernels. With it,
     * kiln__onnx_alloc makes device memory (the arena is then device memory too). */
    struct kiln_onnx_gpu *gpu;
    /* CUDA kernels that need scratch memory (cuDNN's convolution workspace): the step's
     * workspace in the arena, ws_bytes long (0: none planned; the kernel then uses its
     * context's own, grown as needed), and OUT *ws_need (NULL: not asked) the bytes it used, so
     * that the plan can place them. */
    void *ws;
    uint64_t ws_bytes;
    uint64_t *ws_need;
} kiln_onnx_call;

typedef kiln_status (*kiln_onnx_kernel_fn)(const kiln_onnx_call *c, kiln_err *err);

typedef struct kiln_onnx_kernel {
    const char *op;
    kiln_device_kind device;
    kiln_onnx_kernel_fn fn;
    bool fuses_act; /* applies call->act to out[0] */
    /* CUDA kernels: bit k set when input k is read on the host (shapes, axes, indices, min and
     * max); the others are device memory. A CUDA kernel may answer KILN_UNIMPLEMENTED for a
     * case it does not handle (asymmetric pads, say): the step then runs its CPU kernel on
     * copies (run_gpu.c). */
    uint32_t host_in;
} kiln_onnx_kernel;

/* The kernel for op on device, or NULL. */
const kiln_onnx_kernel *kiln__onnx_kernel_find(const char *op, kiln_device_kind device);

/* Writes the comma-separated ops with a kernel on device into buf (truncated to cap); returns
 * buf. For messages. */
char *kiln__onnx_kernel_ops(kiln_device_kind device, char *buf, size_t cap);

/* ---------------------------------------------------------------- memory planning (plan.c) */

/* One buffer to place: bytes, live from step `first` to step `last` (both inclusive). */
typedef struct kiln_onnx_buf {
    uint64_t bytes;
    int32_t first, last;
    uint64_t offset; /* OUT */
} kiln_onnx_buf;

/*
 * Places bufs in one arena so that two buffers whose live ranges share a step never overlap,
 * each at a multiple of KILN_ONNX_ALIGN: the largest first, each at the lowest offset that
 * fits (greedy by size). OUT: bufs[].offset and *arena_bytes (0 for none).
 * RESOURCE_EXHAUSTED when out of memory (offsets unset).
 */
#define KILN_ONNX_ALIGN 64
kiln_status kiln__onnx_place(kiln_onnx_buf *bufs, size_t n, uint64_t *arena_bytes, kiln_err *err);

/* ---------------------------------------------------------------- config auto-complete */

/* The max_batch_size of an auto-completed config whose graph batches (Triton's default). */
#define KILN_ONNX_AUTOCONFIG_MAX_BATCH 4

/*
 * The backend's autoconfig hook (backends/backend.h): derives the config of `model_name` from
 * <version_dir>/model.onnx (autoconfig.c; docs/onnx.md "Config auto-complete" has the rules).
 * OUT: *out (NULL on failure). Errors as the hook's, prefixed "model '<name>' (config
 * auto-complete): ". Thread-safety: any thread.
 */
kiln_status kiln__onnx_autoconfig(const char *model_name, const char *version_dir,
                                  kiln_model_config **out, kiln_err *err);

#endif /* KILN_BACKENDS_ONNX_ONNX_INT_H */
