/*
 * tests/gpu/cuda_shm_client.c: CUDA shared memory end to end from a client process, for the
 * GPU machine. Allocates a device buffer, shares it as a cudaIpcMemHandle, and checks what
 * kiln-server does with it: registration accepted, status, a size past the allocation and a
 * bad handle refused, a plugin model given a CUDA input refused clearly, unregistration; and,
 * given an ONNX model on the GPU (MODEL: input INPUT [1,16], output PROBS [1,10], as
 * examples/models/mlp_onnx with instance_group KIND_GPU), an inference whose input and output
 * both live in the CUDA region, compared with the same inference sent as bytes.
 * Usage: cuda_shm_client PORT [MODEL]. Prints one "ok"/"FAIL" line per check; exits 1 on a
 * failure.
 */
#include <cuda_runtime.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/grpc_service.pb-c.h"

static grpc_channel *ch;
static grpc_completion_queue *cq;
static int failures;

/* One unary call: returns the status; *out (if given) gets the response bytes. */
static grpc_status_code call(const char *method, const ProtobufCMessage *req, char *details,
                             size_t dcap, grpc_slice *out)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1), *recv = NULL;
    grpc_slice_unref(s);
    /* every call ends within 30 s: a server that does not answer is a failure, not a hang */
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(30, GPR_TIMESPAN));
    grpc_call *c =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                 grpc_slice_from_static_string(method), NULL, deadline, NULL);
    grpc_metadata_array im, tm;
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    grpc_status_code st;
    grpc_slice det;
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tm;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &det;
    grpc_call_start_batch(c, ops, 6, c, NULL);
    grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                               NULL); /* ends by the deadline */
    snprintf(details, dcap, "%.*s", (int)GRPC_SLICE_LENGTH(det), (char *)GRPC_SLICE_START_PTR(det));
    if (out) {
        *out = grpc_empty_slice();
        if (recv) {
            grpc_byte_buffer_reader rd;
            grpc_byte_buffer_reader_init(&rd, recv);
            *out = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
        }
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(det);
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    grpc_call_unref(c);
    return st;
}

static void check(int ok, const char *what, const char *details)
{
    printf("%s  %s%s%s\n", ok ? "ok  " : "FAIL", what, details && details[0] ? ": " : "",
           details ? details : "");
    failures += !ok;
}

static Inference__InferParameter *param_str(const char *v)
{
    Inference__InferParameter *p = calloc(1, sizeof(*p));
    inference__infer_parameter__init(p);
    p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    p->string_param = (char *)v;
    return p;
}

static Inference__InferParameter *param_int(int64_t v)
{
    Inference__InferParameter *p = calloc(1, sizeof(*p));
    inference__infer_parameter__init(p);
    p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    p->int64_param = v;
    return p;
}

/* Three entries: region, byte size, offset (the caller frees them with shm_params_free). */
static Inference__ModelInferRequest__InferInputTensor__ParametersEntry **shm_params(int64_t size,
                                                                                    int64_t off)
{
    const char *keys[3] = {"shared_memory_region", "shared_memory_byte_size",
                           "shared_memory_offset"};
    Inference__InferParameter *vals[3] = {param_str("gpu0"), param_int(size), param_int(off)};
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry **pp = calloc(3, sizeof(*pp));
    for (int i = 0; i < 3; i++) {
        pp[i] = calloc(1, sizeof(*pp[i]));
        inference__model_infer_request__infer_input_tensor__parameters_entry__init(pp[i]);
        pp[i]->key = (char *)keys[i];
        pp[i]->value = vals[i];
    }
    return pp;
}

static void shm_params_free(Inference__ModelInferRequest__InferInputTensor__ParametersEntry **pp)
{
    for (int i = 0; i < 3; i++) {
        free(pp[i]->value);
        free(pp[i]);
    }
    free(pp);
}

/* MODEL on the GPU: input and output in the CUDA region, then the same input as bytes. */
static void onnx_round_trip(const char *model, void *dev)
{
    float x[16], y_shm[10], *y_raw = NULL;
    for (int i = 0; i < 16; i++)
        x[i] = (float)(i % 5) * 0.25f - 0.5f;
    cudaMemcpy(dev, x, sizeof(x), cudaMemcpyHostToDevice);
    cudaMemset((char *)dev + 4096, 0xff, sizeof(y_shm));
    int64_t shape[2] = {1, 16};
    Inference__ModelInferRequest__InferInputTensor in =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferInputTensor *ip = &in;
    in.name = "INPUT";
    in.datatype = "FP32";
    in.n_shape = 2;
    in.shape = shape;
    in.n_parameters = 3;
    in.parameters = shm_params(sizeof(x), 0);
    Inference__ModelInferRequest__InferRequestedOutputTensor
        out = INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT,
        *op = &out;
    out.name = "PROBS";
    out.n_parameters = 3;
    out.parameters =
        (Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry **)shm_params(
            sizeof(y_shm), 4096);
    Inference__ModelInferRequest ir = INFERENCE__MODEL_INFER_REQUEST__INIT;
    ir.model_name = (char *)model;
    ir.n_inputs = 1;
    ir.inputs = &ip;
    ir.n_outputs = 1;
    ir.outputs = &op;
    char det[512];
    grpc_slice resp;
    grpc_status_code st =
        call("/inference.GRPCInferenceService/ModelInfer", &ir.base, det, sizeof(det), &resp);
    Inference__ModelInferResponse *r = inference__model_infer_response__unpack(
        NULL, GRPC_SLICE_LENGTH(resp), GRPC_SLICE_START_PTR(resp));
    /* an output in a region gets an empty raw_output_contents entry (indexes stay aligned) */
    check(st == GRPC_STATUS_OK && r &&
              (r->n_raw_output_contents == 0 || r->raw_output_contents[0].len == 0),
          "ONNX on the GPU: input and output in CUDA shared memory", det);
    if (r)
        inference__model_infer_response__free_unpacked(r, NULL);
    grpc_slice_unref(resp);
    cudaMemcpy(y_shm, (char *)dev + 4096, sizeof(y_shm), cudaMemcpyDeviceToHost);
    shm_params_free(in.parameters);
    shm_params_free(
        (Inference__ModelInferRequest__InferInputTensor__ParametersEntry **)out.parameters);

    /* the same input as bytes, output as bytes */
    ProtobufCBinaryData raw = {sizeof(x), (uint8_t *)x};
    in.n_parameters = 0;
    in.parameters = NULL;
    ir.n_outputs = 0;
    ir.n_raw_input_contents = 1;
    ir.raw_input_contents = &raw;
    st = call("/inference.GRPCInferenceService/ModelInfer", &ir.base, det, sizeof(det), &resp);
    r = inference__model_infer_response__unpack(NULL, GRPC_SLICE_LENGTH(resp),
                                                GRPC_SLICE_START_PTR(resp));
    if (st == GRPC_STATUS_OK && r && r->n_raw_output_contents == 1 &&
        r->raw_output_contents[0].len == sizeof(y_shm))
        y_raw = (float *)r->raw_output_contents[0].data;
    check(y_raw != NULL, "ONNX on the GPU: the same input as bytes", det);
    double diff = y_raw ? 0 : 1;
    for (int i = 0; y_raw && i < 10; i++)
        diff = fmax(diff, fabs((double)y_raw[i] - y_shm[i]));
    char msg[64];
    snprintf(msg, sizeof(msg), "max difference %g", diff);
    check(diff <= 1e-6, "ONNX on the GPU: the CUDA shared-memory output equals the bytes one", msg);
    if (r)
        inference__model_infer_response__free_unpacked(r, NULL);
    grpc_slice_unref(resp);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t bytes = 1 << 20;
    void *dev;
    if (cudaMalloc(&dev, bytes) != cudaSuccess || cudaMemset(dev, 7, bytes) != cudaSuccess) {
        printf("FAIL  cudaMalloc\n");
        return 1;
    }
    cudaIpcMemHandle_t h;
    cudaError_t ce = cudaIpcGetMemHandle(&h, dev);
    check(ce == cudaSuccess, "cudaIpcGetMemHandle", cudaGetErrorString(ce));
    grpc_init();
    char target[64], det[512];
    snprintf(target, sizeof(target), "127.0.0.1:%s", argv[1]);
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    ch = grpc_channel_create(target, cr, NULL);
    grpc_channel_credentials_release(cr);
    cq = grpc_completion_queue_create_for_next(NULL);

    Inference__CudaSharedMemoryRegisterRequest reg =
        INFERENCE__CUDA_SHARED_MEMORY_REGISTER_REQUEST__INIT;
    reg.name = "gpu0";
    reg.raw_handle.data = (uint8_t *)&h;
    reg.raw_handle.len = sizeof(h);
    reg.device_id = 0;
    reg.byte_size = bytes;
    const char *R = "/inference.GRPCInferenceService/CudaSharedMemoryRegister";
    grpc_status_code st = call(R, &reg.base, det, sizeof(det), NULL);
    check(st == GRPC_STATUS_OK, "register a 1 MiB CUDA buffer", det);
    st = call(R, &reg.base, det, sizeof(det), NULL);
    check(st == GRPC_STATUS_ALREADY_EXISTS, "the same name again is ALREADY_EXISTS", det);
    reg.name = "too-big";
    reg.byte_size = 2 * bytes;
    st = call(R, &reg.base, det, sizeof(det), NULL);
    check(st == GRPC_STATUS_INVALID_ARGUMENT && strstr(det, "passes the"),
          "a size past the allocation is refused", det);
    reg.name = "bad-handle";
    reg.byte_size = bytes;
    reg.raw_handle.len = 10;
    st = call(R, &reg.base, det, sizeof(det), NULL);
    check(st == GRPC_STATUS_INVALID_ARGUMENT && strstr(det, "raw_handle is 10 bytes"),
          "a short handle is refused", det);
    reg.raw_handle.len = sizeof(h);
    reg.device_id = 99;
    st = call(R, &reg.base, det, sizeof(det), NULL);
    check(st == GRPC_STATUS_INVALID_ARGUMENT && strstr(det, "device_id 99 does not exist"),
          "a missing device is refused", det);

    Inference__CudaSharedMemoryStatusRequest sreq =
        INFERENCE__CUDA_SHARED_MEMORY_STATUS_REQUEST__INIT;
    grpc_slice out;
    st = call("/inference.GRPCInferenceService/CudaSharedMemoryStatus", &sreq.base, det,
              sizeof(det), &out);
    Inference__CudaSharedMemoryStatusResponse *sr =
        inference__cuda_shared_memory_status_response__unpack(NULL, GRPC_SLICE_LENGTH(out),
                                                              GRPC_SLICE_START_PTR(out));
    int listed = sr && sr->n_regions == 1 && strcmp(sr->regions[0]->key, "gpu0") == 0 &&
                 sr->regions[0]->value->byte_size == bytes && sr->regions[0]->value->device_id == 0;
    check(st == GRPC_STATUS_OK && listed, "status lists gpu0 (device 0, 1 MiB)", det);
    if (sr)
        inference__cuda_shared_memory_status_response__free_unpacked(sr, NULL);
    grpc_slice_unref(out);

    /* a plugin model cannot take a CUDA input: a clear error, not a crash */
    int64_t shape[2] = {1, 16};
    Inference__InferParameter preg = INFERENCE__INFER_PARAMETER__INIT,
                              psz = INFERENCE__INFER_PARAMETER__INIT;
    preg.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    preg.string_param = "gpu0";
    psz.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    psz.int64_param = 64;
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry pe[2],
        *pp[2] = {&pe[0], &pe[1]};
    for (int i = 0; i < 2; i++)
        inference__model_infer_request__infer_input_tensor__parameters_entry__init(&pe[i]);
    pe[0].key = "shared_memory_region";
    pe[0].value = &preg;
    pe[1].key = "shared_memory_byte_size";
    pe[1].value = &psz;
    Inference__ModelInferRequest__InferInputTensor
        in = INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT,
        *ip = &in;
    in.name = "INPUT0";
    in.datatype = "FP32";
    in.n_shape = 2;
    in.shape = shape;
    in.n_parameters = 2;
    in.parameters = pp;
    Inference__ModelInferRequest ir = INFERENCE__MODEL_INFER_REQUEST__INIT;
    ir.model_name = "identity_fp32";
    ir.n_inputs = 1;
    ir.inputs = &ip;
    st = call("/inference.GRPCInferenceService/ModelInfer", &ir.base, det, sizeof(det), NULL);
    check(st == GRPC_STATUS_INVALID_ARGUMENT && strstr(det, "CUDA memory"),
          "a plugin given a CUDA input says why", det);

    if (argc > 2)
        onnx_round_trip(argv[2], dev);

    Inference__CudaSharedMemoryUnregisterRequest ur =
        INFERENCE__CUDA_SHARED_MEMORY_UNREGISTER_REQUEST__INIT;
    ur.name = "gpu0";
    st = call("/inference.GRPCInferenceService/CudaSharedMemoryUnregister", &ur.base, det,
              sizeof(det), NULL);
    check(st == GRPC_STATUS_OK, "unregister", det);
    st = call("/inference.GRPCInferenceService/CudaSharedMemoryStatus", &sreq.base, det,
              sizeof(det), &out);
    sr = inference__cuda_shared_memory_status_response__unpack(NULL, GRPC_SLICE_LENGTH(out),
                                                               GRPC_SLICE_START_PTR(out));
    check(st == GRPC_STATUS_OK && sr && sr->n_regions == 0, "status is empty after unregister",
          det);
    if (sr)
        inference__cuda_shared_memory_status_response__free_unpacked(sr, NULL);
    grpc_slice_unref(out);
    grpc_channel_destroy(ch);
    cudaFree(dev);
    printf("cuda shm checks: %d failed\n", failures);
    return failures ? 1 : 0;
}
