/*
 * tests/gpu/cuda_shm_client.c: CUDA shared memory end to end from a client process, for the
 * GPU machine. Allocates a device buffer, shares it as a cudaIpcMemHandle, and checks what
 * kiln-server does with it: registration accepted, status, a size past the allocation and a
 * bad handle refused, a plugin model given a CUDA input refused clearly, unregistration.
 * Usage: cuda_shm_client PORT. Prints one "ok"/"FAIL" line per check; exits 1 on a failure.
 */
#include <cuda_runtime.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
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
    grpc_call *c = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                            grpc_slice_from_static_string(method), NULL,
                                            gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
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
    grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
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

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
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
