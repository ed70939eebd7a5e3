/*
 * bench/cudnn_layouts.cu: how fast cuDNN runs ResNet-50's convolutions in each tensor layout,
 * to decide whether an NHWC layout on the GPU is worth building (docs/gpu.md: Kiln's tensors are
 * NCHW, and its FP16 trails PyTorch at batch 64). For each of ResNet-50's convolution shapes at
 * batch N: cuDNN's fastest algorithm by its legacy search (cudnnFindConvolutionForwardAlgorithm,
 * what Kiln uses), then the median of 20 timed runs, in FP16 NCHW, FP16 NHWC and TF32 NCHW.
 * Prints each layer, then the network's convolution time per layout (each layer times its count
 * in the network) and NHWC's speed over NCHW in FP16.
 *
 *   cudnn_layouts [N]            (default 64; on a machine with an NVIDIA GPU)
 *
 * Written on 2026-12-08 and not run yet (no device machine was lent that day).
 */
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>
#include <stdlib.h>

static void check_dnn(cudnnStatus_t s, const char *what)
{
    if (s != CUDNN_STATUS_SUCCESS) {
        fprintf(stderr, "cudnn_layouts: %s: %s\n", what, cudnnGetErrorString(s));
        exit(1);
    }
}

static void check_cuda(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        fprintf(stderr, "cudnn_layouts: %s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}

/* One convolution of ResNet-50 (torchvision's v1.5: the stride on the 3x3): input size, channels
 * in and out, kernel, stride, and how many the network has. */
typedef struct layer {
    int hw, cin, cout, k, s, count;
} layer;

static const layer layers[] = {
    {224, 3, 64, 7, 2, 1},     {56, 64, 64, 1, 1, 1},    {56, 64, 64, 3, 1, 3},
    {56, 64, 256, 1, 1, 3},    {56, 64, 256, 1, 1, 1},   {56, 256, 64, 1, 1, 2},
    {56, 256, 128, 1, 1, 1},   {56, 128, 128, 3, 2, 1},  {28, 128, 512, 1, 1, 4},
    {56, 256, 512, 1, 2, 1},   {28, 512, 128, 1, 1, 3},  {28, 128, 128, 3, 1, 3},
    {28, 512, 256, 1, 1, 1},   {28, 256, 256, 3, 2, 1},  {14, 256, 1024, 1, 1, 6},
    {28, 512, 1024, 1, 2, 1},  {14, 1024, 256, 1, 1, 5}, {14, 256, 256, 3, 1, 5},
    {14, 1024, 512, 1, 1, 1},  {14, 512, 512, 3, 2, 1},  {7, 512, 2048, 1, 1, 3},
    {14, 1024, 2048, 1, 2, 1}, {7, 2048, 512, 1, 1, 2},  {7, 512, 512, 3, 1, 2},
};

enum { FP16_NCHW, FP16_NHWC, TF32_NCHW, MODES };
static const char *const mode_names[MODES] = {"fp16 NCHW", "fp16 NHWC", "tf32 NCHW"};

/* Median ms of one convolution of layer l at batch n in mode `mode`. */
static float time_layer(cudnnHandle_t h, void *ws, size_t ws_bytes, const layer *l, int n, int mode)
{
    bool half = mode != TF32_NCHW;
    cudnnTensorFormat_t f = mode == FP16_NHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    cudnnDataType_t dt = half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
    size_t es = half ? 2 : 4;
    int pad = l->k / 2, out = (l->hw + 2 * pad - l->k) / l->s + 1;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    check_dnn(cudnnCreateTensorDescriptor(&xd), "descriptor");
    check_dnn(cudnnCreateTensorDescriptor(&yd), "descriptor");
    check_dnn(cudnnCreateFilterDescriptor(&wd), "descriptor");
    check_dnn(cudnnCreateConvolutionDescriptor(&cd), "descriptor");
    check_dnn(cudnnSetTensor4dDescriptor(xd, f, dt, n, l->cin, l->hw, l->hw), "x");
    check_dnn(cudnnSetTensor4dDescriptor(yd, f, dt, n, l->cout, out, out), "y");
    check_dnn(cudnnSetFilter4dDescriptor(wd, dt, f, l->cout, l->cin, l->k, l->k), "w");
    check_dnn(cudnnSetConvolution2dDescriptor(cd, pad, pad, l->s, l->s, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "conv");
    /* as Kiln sets it: tensor-op math for FP16, the default (TF32 allowed) for FP32 */
    check_dnn(cudnnSetConvolutionMathType(cd, half ? CUDNN_TENSOR_OP_MATH : CUDNN_DEFAULT_MATH),
              "math");
    size_t xb = (size_t)n * l->cin * l->hw * l->hw * es, yb = (size_t)n * l->cout * out * out * es,
           wb = (size_t)l->cout * l->cin * l->k * l->k * es;
    void *x, *y, *w;
    check_cuda(cudaMalloc(&x, xb), "cudaMalloc");
    check_cuda(cudaMalloc(&y, yb), "cudaMalloc");
    check_cuda(cudaMalloc(&w, wb), "cudaMalloc");
    check_cuda(cudaMemset(x, 0, xb), "cudaMemset");
    check_cuda(cudaMemset(w, 0, wb), "cudaMemset");
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0, pick = -1;
    check_dnn(cudnnFindConvolutionForwardAlgorithm(h, xd, wd, cd, yd,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf),
              "find");
    for (int i = 0; i < got && pick < 0; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= ws_bytes)
            pick = i;
    if (pick < 0) {
        fprintf(stderr, "cudnn_layouts: no algorithm for layer %dx%d %d->%d\n", l->hw, l->hw,
                l->cin, l->cout);
        exit(1);
    }
    check_dnn(cudnnSetConvolutionMathType(cd, perf[pick].mathType), "math");
    const float one = 1.f, zero = 0.f;
    cudaEvent_t a, b;
    check_cuda(cudaEventCreate(&a), "event");
    check_cuda(cudaEventCreate(&b), "event");
    float ms[20];
    for (int r = -3; r < 20; r++) { /* three untimed first */
        check_cuda(cudaEventRecord(a), "record");
        check_dnn(cudnnConvolutionForward(h, &one, xd, x, wd, w, cd, perf[pick].algo, ws,
                                          perf[pick].memory, &zero, yd, y),
                  "forward");
        check_cuda(cudaEventRecord(b), "record");
        check_cuda(cudaEventSynchronize(b), "sync");
        if (r >= 0)
            check_cuda(cudaEventElapsedTime(&ms[r], a, b), "elapsed");
    }
    for (int i = 1; i < 20; i++) /* insertion sort for the median */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            float t = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = t;
        }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaFree(x);
    cudaFree(y);
    cudaFree(w);
    cudnnDestroyConvolutionDescriptor(cd);
    cudnnDestroyFilterDescriptor(wd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyTensorDescriptor(xd);
    return ms[10];
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 64;
    if (n < 1 || n > 1024) {
        fprintf(stderr, "usage: cudnn_layouts [N]   (batch 1 to 1024, default 64)\n");
        return 2;
    }
    cudnnHandle_t h;
    check_dnn(cudnnCreate(&h), "cudnnCreate");
    size_t ws_bytes = (size_t)1 << 30; /* Kiln's cap on a convolution's workspace */
    void *ws;
    check_cuda(cudaMalloc(&ws, ws_bytes), "cudaMalloc (workspace)");
    double total[MODES] = {0};
    for (size_t i = 0; i < sizeof(layers) / sizeof(layers[0]); i++) {
        const layer *l = &layers[i];
        printf("%2zu: %3dx%-3d %4d -> %4d, %dx%d stride %d, x%d:", i, l->hw, l->hw, l->cin, l->cout,
               l->k, l->k, l->s, l->count);
        for (int m = 0; m < MODES; m++) {
            float ms = time_layer(h, ws, ws_bytes, l, n, m);
            total[m] += (double)ms * l->count;
            printf("  %s %.3f ms", mode_names[m], ms);
        }
        printf("\n");
    }
    for (int m = 0; m < MODES; m++)
        printf("batch %d, ResNet-50's convolutions in %s: %.3f ms\n", n, mode_names[m], total[m]);
    printf("fp16: NHWC is %.2fx NCHW's speed\n", total[FP16_NCHW] / total[FP16_NHWC]);
    cudaFree(ws);
    cudnnDestroy(h);
    return 0;
}
