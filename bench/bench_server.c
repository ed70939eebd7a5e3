/*
 * bench/bench_server.c: kiln-server end to end, against baselines measured in the same run.
 *
 * (a) A bare gRPC C-core echo server (this binary, --echo mode, another process) answering the
 *     same ModelInferRequest bytes with themselves, vs kiln-server's ModelInfer on `simple`
 *     without the batcher (`simple_nobatch`: no batching delay, so this is the per-request
 *     overhead), with 1 and 64 requests in flight: QPS and p50/p99, as ratios kiln/echo.
 * (b) identity_fp32 with 16 MiB, 256 MiB and 1 GiB tensors: inline (raw_input_contents in,
 *     raw_output_contents out) vs shared memory (input and output in a registered region),
 *     end to end, against one memcpy of the same size.
 *
 * (c) `simple` and `identity_fp32` (1x256 FP32) at 1, 8, 64 and 256 in flight, with the
 *     dynamic batcher on (max_queue_delay 100 us) and off, and the echo server at the same
 *     depth: throughput and p50/p99, with the ratios batching on/off and kiln/echo.
 *
 * The load generator is a gRPC C-core client with one completion queue and N calls in flight.
 * Usage: bench_server [build_dir] [--quick]   (--quick: 1 s per point, sizes up to 256 MiB)
 *        bench_server --echo PORT_FILE         the echo server alone, on 127.0.0.1 with the
 *            port written to PORT_FILE, until SIGTERM: a baseline for `kiln perf` (which then
 *            needs its inputs given, since the echo server has no metadata: docs/cli.md)
 */
#include <fcntl.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "common/clock.h"
#include "proto/grpc_service.pb-c.h"

extern char **environ;

#define INFER_PATH "/inference.GRPCInferenceService/ModelInfer"
#define MiB        (1ull << 20)

static void die(const char *what)
{
    fprintf(stderr, "bench_server: %s\n", what);
    exit(1);
}

/* ---------------------------------------------------------------- echo server mode */

static volatile sig_atomic_t echo_stop;
static void on_term(int sig)
{
    (void)sig;
    echo_stop = 1;
}

typedef struct echo_call {
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    int cancelled;
    grpc_slice details;
    int phase;                /* 0 = waiting for a call, 1 = replying */
    bool other;               /* a slot for any other method: answered UNIMPLEMENTED */
    grpc_call_details method; /* other: the method called */
} echo_call;

/* Releases what slot c holds after its call (or its failed request). */
static void echo_release(echo_call *c)
{
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    if (c->other)
        grpc_call_details_destroy(&c->method);
}

/* Posts slot c again: ModelInfer, or (c->other) any other method. */
static void echo_post(grpc_server *s, void *m, grpc_completion_queue *cq, echo_call *c)
{
    bool other = c->other;
    memset(c, 0, sizeof(*c));
    c->other = other;
    grpc_metadata_array_init(&c->md);
    if (other) {
        grpc_call_details_init(&c->method);
        grpc_server_request_call(s, &c->call, &c->method, &c->md, cq, cq, c);
    } else {
        grpc_server_request_registered_call(s, m, &c->call, &c->deadline, &c->md, &c->payload, cq,
                                            cq, c);
    }
}

static int echo_server(const char *port_file)
{
    signal(SIGTERM, on_term);
    grpc_init();
    grpc_arg a[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = INT32_MAX}}};
    grpc_channel_args ca = {1, a};
    grpc_server *s = grpc_server_create(&ca, NULL);
    void *m = grpc_server_register_method(s, INFER_PATH, NULL,
                                          GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s, cq, NULL);
    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s, "127.0.0.1:0", cr);
    grpc_server_credentials_release(cr);
    grpc_server_start(s);
    /* 128 slots for ModelInfer, 4 that answer any other method UNIMPLEMENTED at once (gRPC
     * core would otherwise hold such calls until their deadline), as a full server does */
    enum { SLOTS = 128, OTHER_SLOTS = 4 };
    echo_call *calls = calloc(SLOTS + OTHER_SLOTS, sizeof(*calls));
    for (int i = 0; i < SLOTS + OTHER_SLOTS; i++) {
        calls[i].other = i >= SLOTS;
        echo_post(s, m, cq, &calls[i]);
    }
    FILE *f = fopen(port_file, "w");
    fprintf(f, "%d\n", port);
    fclose(f);
    while (!echo_stop) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)),
            NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        echo_call *c = ev.tag;
        if (c->phase == 0 && ev.success && c->other) {
            grpc_op ops[3];
            memset(ops, 0, sizeof(ops));
            ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
            ops[1].data.recv_close_on_server.cancelled = &c->cancelled;
            c->details = grpc_slice_from_static_string("the echo server answers ModelInfer only");
            ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[2].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
            ops[2].data.send_status_from_server.status_details = &c->details;
            c->phase = 1;
            grpc_call_start_batch(c->call, ops, 3, c, NULL);
        } else if (c->phase == 0 && ev.success) { /* reply with the request's own bytes */
            grpc_op ops[4];
            memset(ops, 0, sizeof(ops));
            ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[1].op = GRPC_OP_SEND_MESSAGE;
            ops[1].data.send_message.send_message = c->payload;
            ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
            ops[2].data.recv_close_on_server.cancelled = &c->cancelled;
            c->details = grpc_empty_slice();
            ops[3].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[3].data.send_status_from_server.status = GRPC_STATUS_OK;
            ops[3].data.send_status_from_server.status_details = &c->details;
            c->phase = 1;
            grpc_call_start_batch(c->call, ops, 4, c, NULL);
        } else { /* reply done: free and post again */
            echo_release(c);
            echo_post(s, m, cq, c);
        }
    }
    grpc_completion_queue *scq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_server_shutdown_and_notify(s, scq, NULL);
    grpc_server_cancel_all_calls(s);
    grpc_completion_queue_pluck(scq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    grpc_server_destroy(s);
    /* every slot's last event (a reply, or a request the shutdown failed) comes back here:
     * release what each holds, so a sanitizer build exits clean */
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        echo_release(ev.tag);
    }
    grpc_completion_queue_destroy(cq);
    grpc_completion_queue_destroy(scq);
    free(calls);
    grpc_shutdown();
    return 0;
}

/* ---------------------------------------------------------------- processes */

static pid_t spawn(char *const argv[])
{
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        die("cannot start a child process");
    return pid;
}

static int wait_port(const char *file, pid_t pid)
{
    for (int i = 0; i < 2000; i++) {
        FILE *f = fopen(file, "r");
        int port = 0;
        if (f && fscanf(f, "%d", &port) == 1 && port > 0) {
            fclose(f);
            return port;
        }
        if (f)
            fclose(f);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            die("a server exited during start-up");
        usleep(10000);
    }
    die("a server did not start");
    return 0;
}

static void stop(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* ---------------------------------------------------------------- client */

typedef struct client {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    void *method;
} client;

static void client_open(client *c, int port)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    grpc_arg a[] = {{GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = INT32_MAX}},
                    {GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}}};
    grpc_channel_args ca = {2, a};
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    c->ch = grpc_channel_create(target, cr, &ca);
    grpc_channel_credentials_release(cr);
    c->cq = grpc_completion_queue_create_for_next(NULL);
    c->method = grpc_channel_register_call(c->ch, INFER_PATH, NULL, NULL);
}

static void client_close(client *c)
{
    grpc_channel_destroy(c->ch);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(c->cq);
}

typedef struct inflight {
    grpc_call *call;
    grpc_metadata_array init_md, trail_md;
    grpc_byte_buffer *send, *recv;
    grpc_status_code status;
    grpc_slice details;
    uint64_t t0;
} inflight;

static void start_call(client *c, inflight *f, grpc_byte_buffer *payload)
{
    memset(f, 0, sizeof(*f));
    f->call =
        grpc_channel_create_registered_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, c->method,
                                            gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    f->send = grpc_byte_buffer_copy(payload);
    grpc_metadata_array_init(&f->init_md);
    grpc_metadata_array_init(&f->trail_md);
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = f->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &f->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &f->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &f->trail_md;
    ops[5].data.recv_status_on_client.status = &f->status;
    ops[5].data.recv_status_on_client.status_details = &f->details;
    f->t0 = kiln_clock_now_ns();
    if (grpc_call_start_batch(f->call, ops, 6, f, NULL) != GRPC_CALL_OK)
        die("start_batch");
}

/* Finishes a call; returns its latency. Dies on a non-OK status. */
static uint64_t end_call(inflight *f)
{
    uint64_t dt = kiln_clock_now_ns() - f->t0;
    if (f->status != GRPC_STATUS_OK) {
        fprintf(stderr, "bench_server: call failed: %d %.*s\n", f->status,
                (int)GRPC_SLICE_LENGTH(f->details), (char *)GRPC_SLICE_START_PTR(f->details));
        exit(1);
    }
    grpc_byte_buffer_destroy(f->send);
    if (f->recv)
        grpc_byte_buffer_destroy(f->recv);
    grpc_slice_unref(f->details);
    grpc_metadata_array_destroy(&f->init_md);
    grpc_metadata_array_destroy(&f->trail_md);
    grpc_call_unref(f->call);
    return dt;
}

typedef struct run_result {
    double qps, p50_us, p99_us;
} run_result;

/* Keeps `depth` calls in flight for `seconds` (after a short warm-up). */
static run_result load(client *c, grpc_byte_buffer *payload, int depth, double seconds)
{
    inflight *f = calloc((size_t)depth, sizeof(*f));
    size_t cap = 1 << 20, n = 0;
    uint64_t *lat = malloc(cap * sizeof(*lat));
    for (int i = 0; i < depth; i++)
        start_call(c, &f[i], payload);
    uint64_t warm_end = kiln_clock_now_ns() + 300 * KILN_NS_PER_MS;
    uint64_t end = warm_end + (uint64_t)(seconds * 1e9);
    uint64_t t_start = 0;
    int active = depth;
    while (active) {
        grpc_event ev =
            grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        inflight *x = ev.tag;
        uint64_t dt = end_call(x);
        uint64_t now = kiln_clock_now_ns();
        if (now >= warm_end && !t_start)
            t_start = now;
        if (t_start && now < end && n < cap)
            lat[n++] = dt;
        if (now < end)
            start_call(c, x, payload);
        else
            active--;
    }
    double elapsed = (double)(kiln_clock_now_ns() - t_start) / 1e9;
    run_result r = {n / elapsed, 0, 0};
    qsort(lat, n, sizeof(*lat), bench_cmp_u64);
    r.p50_us = n ? lat[n / 2] / 1e3 : 0;
    r.p99_us = n ? lat[(size_t)(n * 0.99)] / 1e3 : 0;
    free(lat);
    free(f);
    return r;
}

static grpc_byte_buffer *pack_bb(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* ModelInferRequest for `simple`: INPUT0, INPUT1 INT32 [1,16] as raw contents. */
static grpc_byte_buffer *simple_request(void)
{
    static int32_t a[16], b[16];
    for (int i = 0; i < 16; i++)
        a[i] = i, b[i] = 1;
    int64_t shape[2] = {1, 16};
    Inference__ModelInferRequest__InferInputTensor in[2], *ip[2] = {&in[0], &in[1]};
    const char *names[2] = {"INPUT0", "INPUT1"};
    ProtobufCBinaryData raw[2] = {{64, (uint8_t *)a}, {64, (uint8_t *)b}};
    for (int i = 0; i < 2; i++) {
        inference__model_infer_request__infer_input_tensor__init(&in[i]);
        in[i].name = (char *)names[i];
        in[i].datatype = "INT32";
        in[i].n_shape = 2;
        in[i].shape = shape;
    }
    Inference__ModelInferRequest r = INFERENCE__MODEL_INFER_REQUEST__INIT;
    r.model_name = "simple";
    r.n_inputs = 2;
    r.inputs = ip;
    r.n_raw_input_contents = 2;
    r.raw_input_contents = raw;
    return pack_bb(&r.base);
}

/* ---------------------------------------------------------------- large tensors */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static void noop_free(void *p)
{
    (void)p;
}

/* An identity model's request of shape [1, bytes/4]: inline (data != NULL) or through region
 * `region`. */
static grpc_byte_buffer *identity_request(const char *model, size_t bytes, const void *data,
                                          const char *region)
{
    int64_t shape[2] = {1, (int64_t)(bytes / 4)};
    Inference__ModelInferRequest__InferInputTensor in, *ip = &in;
    inference__model_infer_request__infer_input_tensor__init(&in);
    in.name = "INPUT0";
    in.datatype = "FP32";
    in.n_shape = 2;
    in.shape = shape;
    Inference__InferParameter preg = INFERENCE__INFER_PARAMETER__INIT,
                              psize = INFERENCE__INFER_PARAMETER__INIT,
                              poff = INFERENCE__INFER_PARAMETER__INIT;
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry ie[2];
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry *iep[2] = {&ie[0], &ie[1]};
    Inference__ModelInferRequest__InferRequestedOutputTensor out, *op = &out;
    Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry oe[3];
    Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry *oep[3] = {
        &oe[0], &oe[1], &oe[2]};
    inference__model_infer_request__infer_requested_output_tensor__init(&out);
    out.name = "OUTPUT0";
    Inference__ModelInferRequest r = INFERENCE__MODEL_INFER_REQUEST__INIT;
    r.model_name = (char *)model;
    r.n_inputs = 1;
    r.inputs = &ip;
    if (region) {
        preg.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
        preg.string_param = (char *)region;
        psize.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
        psize.int64_param = (int64_t)bytes;
        poff.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
        poff.int64_param = (int64_t)bytes;
        const char *keys[3] = {"shared_memory_region", "shared_memory_byte_size",
                               "shared_memory_offset"};
        Inference__InferParameter *vals[3] = {&preg, &psize, &poff};
        for (int i = 0; i < 3; i++) {
            inference__model_infer_request__infer_requested_output_tensor__parameters_entry__init(
                &oe[i]);
            oe[i].key = (char *)keys[i];
            oe[i].value = vals[i];
            if (i < 2) {
                inference__model_infer_request__infer_input_tensor__parameters_entry__init(&ie[i]);
                ie[i].key = (char *)keys[i];
                ie[i].value = vals[i];
            }
        }
        in.n_parameters = 2;
        in.parameters = iep;
        out.n_parameters = 3;
        out.parameters = oep;
        r.n_outputs = 1;
        r.outputs = &op;
        return pack_bb(&r.base);
    }
    /* inline: the small fields, then field 7 pointing at the data (no client-side copy) */
    size_t head = inference__model_infer_request__get_packed_size(&r);
    grpc_slice s[3];
    s[0] = grpc_slice_malloc(head);
    inference__model_infer_request__pack(&r, GRPC_SLICE_START_PTR(s[0]));
    uint8_t hdr[12];
    hdr[0] = 0x3a;
    size_t hn = 1 + put_varint(hdr + 1, bytes);
    s[1] = grpc_slice_from_copied_buffer((const char *)hdr, hn);
    s[2] = grpc_slice_new((void *)data, bytes, noop_free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, 3);
    for (int i = 0; i < 3; i++)
        grpc_slice_unref(s[i]);
    return bb;
}

static uint64_t one_call(client *c, grpc_byte_buffer *payload)
{
    inflight f;
    start_call(c, &f, payload);
    grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    return end_call(&f);
}

static void unary_simple(client *c, const char *method, const ProtobufCMessage *m)
{
    grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                               grpc_slice_from_static_string(method), NULL,
                                               gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    inflight f;
    memset(&f, 0, sizeof(f));
    f.call = call;
    f.send = pack_bb(m);
    grpc_metadata_array_init(&f.init_md);
    grpc_metadata_array_init(&f.trail_md);
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = f.send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &f.init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &f.recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &f.trail_md;
    ops[5].data.recv_status_on_client.status = &f.status;
    ops[5].data.recv_status_on_client.status_details = &f.details;
    grpc_call_start_batch(call, ops, 6, &f, NULL);
    grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    end_call(&f);
}

static void bench_large(client *c, bool quick)
{
    static const size_t sizes[] = {16 * MiB, 256 * MiB, 1024 * MiB};
    printf(
        "\n(b) identity_fp32 end to end, median of N calls; memcpy of the same size as baseline\n");
    printf("%-9s %12s %12s %12s %12s %12s\n", "size", "inline (ms)", "shm (ms)", "memcpy (ms)",
           "inline/shm", "shm/memcpy");
    for (size_t k = 0; k < 3; k++) {
        size_t bytes = sizes[k];
        if (quick && bytes > 256 * MiB)
            break;
        int reps = bytes >= 1024 * MiB ? 3 : bytes >= 256 * MiB ? 5 : 11;
        float *data = malloc(bytes);
        memset(data, 1, bytes);
        uint64_t inl[11], shm[11], cpy[11];
        grpc_byte_buffer *req = identity_request("identity_fp32", bytes, data, NULL);
        one_call(c, req); /* warm-up */
        for (int i = 0; i < reps; i++)
            inl[i] = one_call(c, req);
        grpc_byte_buffer_destroy(req);
        /* shared memory: one region holding the input and the output */
        char key[64];
        snprintf(key, sizeof(key), "/kiln-bench-%ld-%zu", (long)getpid(), k);
        int fd = shm_open(key, O_CREAT | O_RDWR | O_EXCL, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)(2 * bytes)) != 0)
            die("shm_open");
        void *region = mmap(NULL, 2 * bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        memcpy(region, data, bytes);
        Inference__SystemSharedMemoryRegisterRequest reg =
            INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_REQUEST__INIT;
        reg.name = "bench";
        reg.key = key;
        reg.byte_size = 2 * bytes;
        unary_simple(c, "/inference.GRPCInferenceService/SystemSharedMemoryRegister", &reg.base);
        req = identity_request("identity_fp32", bytes, NULL, "bench");
        one_call(c, req);
        for (int i = 0; i < reps; i++)
            shm[i] = one_call(c, req);
        grpc_byte_buffer_destroy(req);
        if (memcmp((char *)region + bytes, data, bytes) != 0)
            die("shm output differs from the input");
        Inference__SystemSharedMemoryUnregisterRequest un =
            INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_REQUEST__INIT;
        un.name = "bench";
        unary_simple(c, "/inference.GRPCInferenceService/SystemSharedMemoryUnregister", &un.base);
        munmap(region, 2 * bytes);
        shm_unlink(key);
        float *dst = malloc(bytes);
        memset(dst, 0, bytes);
        for (int i = 0; i < reps; i++) {
            uint64_t t0 = kiln_clock_now_ns();
            memcpy(dst, data, bytes);
            cpy[i] = kiln_clock_now_ns() - t0;
        }
        free(dst);
        free(data);
        double mi = bench_median(inl, reps) / 1e6, ms = bench_median(shm, reps) / 1e6,
               mc = bench_median(cpy, reps) / 1e6;
        printf("%-9s %12.2f %12.3f %12.2f %11.0fx %11.2fx\n",
               bytes >= 1024 * MiB  ? "1 GiB"
               : bytes >= 256 * MiB ? "256 MiB"
                                    : "16 MiB",
               mi, ms, mc, mi / ms, ms / mc);
    }
}

/* A repository with each example model twice: batching on (as shipped) and off. */
static void make_repo(const char *build, char *repo, size_t cap)
{
    snprintf(repo, cap, "/tmp/kiln-bench-repo-XXXXXX");
    if (!mkdtemp(repo))
        die("mkdtemp");
    static const struct {
        const char *name, *plugin, *body;
    } models[] = {
        {"simple", "simple",
         "max_batch_size: 8 input [ { name: 'INPUT0' data_type: TYPE_INT32 dims: [16] }, "
         "{ name: 'INPUT1' data_type: TYPE_INT32 dims: [16] } ] output [ { name: "
         "'OUTPUT0' data_type: TYPE_INT32 dims: [16] }, { name: 'OUTPUT1' "
         "data_type: TYPE_INT32 dims: [16] } ]"},
        {"identity_fp32", "identity",
         "max_batch_size: 64 input [ { name: 'INPUT0' data_type: "
         "TYPE_FP32 dims: [-1] } ] output [ { name: 'OUTPUT0' "
         "data_type: TYPE_FP32 dims: [-1] } ]"},
    };
    for (size_t i = 0; i < 2; i++) {
        for (int batching = 0; batching < 2; batching++) {
            char dir[512], path[600], so[1024];
            snprintf(dir, sizeof(dir), "%s/%s%s", repo, models[i].name, batching ? "" : "_nobatch");
            mkdir(dir, 0700);
            snprintf(path, sizeof(path), "%s/1", dir);
            mkdir(path, 0700);
            snprintf(path, sizeof(path), "%s/1/model.so", dir);
            snprintf(so, sizeof(so), "%s/plugins/%s.so", build, models[i].plugin);
            if (symlink(so, path) != 0)
                die("symlink");
            snprintf(path, sizeof(path), "%s/config.pbtxt", dir);
            FILE *f = fopen(path, "w");
            fprintf(f, "backend: 'plugin' %s %s\n", models[i].body,
                    batching ? "dynamic_batching { max_queue_delay_microseconds: 100 }" : "");
            fclose(f);
        }
    }
}

/* identity_fp32 request of shape [1, n] inline (small payloads for the throughput table). */
static grpc_byte_buffer *small_identity(const char *model, size_t n)
{
    static float data[4096];
    return identity_request(model, n * sizeof(float), data, NULL);
}

static grpc_byte_buffer *simple_for(const char *model)
{
    grpc_byte_buffer *bb = simple_request();
    if (strcmp(model, "simple") == 0)
        return bb;
    /* same request, other model name: rebuild with protobuf-c */
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, bb);
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    Inference__ModelInferRequest *m =
        inference__model_infer_request__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    grpc_byte_buffer_destroy(bb);
    char *old = m->model_name;
    m->model_name = (char *)model;
    grpc_byte_buffer *out = pack_bb(&m->base);
    m->model_name = old;
    inference__model_infer_request__free_unpacked(m, NULL);
    return out;
}

static void bench_batching(client *ck, client *ce, double secs)
{
    static const int depths[] = {1, 8, 64, 256};
    printf("\n(c) throughput and latency with the dynamic batcher on and off; echo at the same "
           "depth\n");
    printf("%-14s %6s | %9s %8s %8s | %9s %8s %8s | %7s | %9s %7s\n", "model", "depth", "on QPS",
           "p50 us", "p99 us", "off QPS", "p50 us", "p99 us", "on/off", "echo QPS", "on/echo");
    const char *names[] = {"simple", "identity_fp32"};
    for (int mi = 0; mi < 2; mi++) {
        char off_name[64];
        snprintf(off_name, sizeof(off_name), "%s_nobatch", names[mi]);
        grpc_byte_buffer *on = mi == 0 ? simple_for(names[mi]) : small_identity(names[mi], 256);
        grpc_byte_buffer *off = mi == 0 ? simple_for(off_name) : small_identity(off_name, 256);
        for (size_t d = 0; d < 4; d++) {
            run_result a = load(ck, on, depths[d], secs), b = load(ck, off, depths[d], secs);
            run_result e = load(ce, on, depths[d], secs);
            printf("%-14s %6d | %9.0f %8.0f %8.0f | %9.0f %8.0f %8.0f | %6.2fx | %9.0f %6.2fx\n",
                   names[mi], depths[d], a.qps, a.p50_us, a.p99_us, b.qps, b.p50_us, b.p99_us,
                   a.qps / b.qps, e.qps, a.qps / e.qps);
        }
        grpc_byte_buffer_destroy(on);
        grpc_byte_buffer_destroy(off);
    }
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--echo") == 0)
        return echo_server(argv[2]);
    const char *build = KILN_TEST_BUILD_DIR;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else
            build = argv[i];
    }
    double secs = quick ? 1.0 : 3.0;
    char self[4096], kiln[4096], repo[4096], pf_echo[64], pf_kiln[64], a1[4200], a2[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    snprintf(kiln, sizeof(kiln), "%s/kiln-server", build);
    char repo_dir[256];
    make_repo(build, repo_dir, sizeof(repo_dir));
    snprintf(repo, sizeof(repo), "--model-repository=%s", repo_dir);
    snprintf(pf_echo, sizeof(pf_echo), "/tmp/kiln-bench-echo-%ld", (long)getpid());
    snprintf(pf_kiln, sizeof(pf_kiln), "/tmp/kiln-bench-kiln-%ld", (long)getpid());
    unlink(pf_echo);
    unlink(pf_kiln);
    snprintf(a1, sizeof(a1), "--port-file=%s", pf_kiln);
    char *echo_argv[] = {self, "--echo", pf_echo, NULL};
    char *kiln_argv[] = {kiln, "--address=127.0.0.1:0", repo, a1, "--log-level=warn", NULL};
    (void)a2;
    pid_t echo_pid = spawn(echo_argv);
    pid_t kiln_pid = spawn(kiln_argv);
    int echo_port = wait_port(pf_echo, echo_pid), kiln_port = wait_port(pf_kiln, kiln_pid);
    grpc_init();
    client ce, ck;
    client_open(&ce, echo_port);
    client_open(&ck, kiln_port);
    grpc_byte_buffer *req = simple_for("simple_nobatch");
    printf("(a) ModelInfer on `simple` (batcher off) vs a bare gRPC C-core echo of the same "
           "%zu-byte request\n",
           grpc_byte_buffer_length(req));
    printf("%-10s %10s %10s %10s %10s %10s %10s %9s %9s %9s\n", "in flight", "echo QPS", "p50 us",
           "p99 us", "kiln QPS", "p50 us", "p99 us", "QPS k/e", "p50 k/e", "p99 k/e");
    int depths[] = {1, 64};
    for (int i = 0; i < 2; i++) {
        run_result e = load(&ce, req, depths[i], secs), k = load(&ck, req, depths[i], secs);
        printf("%-10d %10.0f %10.1f %10.1f %10.0f %10.1f %10.1f %9.2f %9.2f %9.2f\n", depths[i],
               e.qps, e.p50_us, e.p99_us, k.qps, k.p50_us, k.p99_us, k.qps / e.qps,
               k.p50_us / e.p50_us, k.p99_us / e.p99_us);
    }
    grpc_byte_buffer_destroy(req);
    bench_batching(&ck, &ce, quick ? 0.5 : 1.5);
    client_close(&ce);
    stop(echo_pid);
    bench_large(&ck, quick);
    client_close(&ck);
    stop(kiln_pid);
    unlink(pf_echo);
    unlink(pf_kiln);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", repo_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_server: could not remove %s\n", repo_dir);
    grpc_shutdown();
    return 0;
}
