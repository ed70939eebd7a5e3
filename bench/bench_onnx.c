/*
 * bench/bench_onnx.c: the ONNX backend's execute time on one model, through the backend
 * interface (no server): latency at a batch size (one instance, runs one after another) and
 * throughput (N instances, each on its own thread, for a fixed time), with the memory plan's
 * figures. bench/onnx_vs_torch.py (CPU) and bench/gpu_vs_torch.py (GPU) run it beside PyTorch
 * on the same inputs and print ratios; alone it prints one JSON object per batch size.
 *
 *   bench_onnx MODEL_DIR [--batch 1,8] [--runs 30] [--seconds 3] [--instances 2]
 *              [--blas-threads 1] [--input FILE.raw] [--output FILE.raw]
 *              [--gpu ID [--device-io]] [--param KEY=VALUE]...
 *
 * --gpu loads the instances on CUDA device ID (a list, 0,1: instance i on the i-th, round
 * robin, for the throughput of several GPUs); an execute then includes the copies of the
 * inputs to the device and of the outputs back (and waits for them). --device-io puts the
 * inputs in device memory and has the output written into a device buffer, as a client of CUDA
 * shared memory would: no host copies. --param adds a config parameter (precision=tf32,
 * cuda_graphs=false).
 *
 * MODEL_DIR holds config.pbtxt and 1/model.onnx. Inputs are random (seed 1) unless --input
 * gives the raw FP32 bytes of the first input at the first batch size; --output writes the
 * first output of that run (raw FP32), so a caller can compare with another runtime.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onnx/onnx.h"
#include "bench/bench_util.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/model_config.h"
#include "tensor/cuda_mem.h"

typedef struct bench_opts {
    const char *dir;
    int64_t batches[16];
    int n_batches;
    int runs, instances, blas_threads;
    double seconds;
    const char *input, *output;
    int gpu;      /* -1: CPU; else the first of gpus */
    int gpus[16]; /* --gpu 0,1: instance i runs on gpus[i % n_gpus] */
    int n_gpus;
    bool device_io;
    char params[2048]; /* config text appended: parameters { ... } */
} bench_opts;

typedef struct instance {
    const kiln_backend *be;
    kiln_backend_model *model;
    kiln_tensor in[8];
    kiln_tensor din[8]; /* --device-io: device copies of in */
    kiln_storage *dout;
    int gpu; /* its device (-1: CPU) */
    size_t n_in;
    const kiln_model_config *cfg;
    uint64_t deadline_ns;
    uint64_t done;
} instance;

static void die(const char *what, const kiln_err *e)
{
    fprintf(stderr, "bench_onnx: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

static bench_opts opt;

static kiln_model_config *read_config(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/config.pbtxt", dir);
    FILE *f = fopen(path, "r");
    static char text[65536];
    size_t n = f ? fread(text, 1, sizeof(text) - sizeof(opt.params) - 2, f) : 0;
    if (!f || ferror(f))
        die("cannot read config.pbtxt", NULL);
    fclose(f);
    snprintf(text + n, sizeof(text) - n, "\n%s", opt.params);
    kiln_model_config *c;
    kiln_err e;
    if (kiln_model_config_parse(text, strlen(text), path, &c, &e) != KILN_OK)
        die("config", &e);
    return c;
}

static void load(instance *in, const char *dir, const kiln_model_config *cfg, int gpu)
{
    in->gpu = gpu;
    char vdir[4200];
    snprintf(vdir, sizeof(vdir), "%s/1", dir);
    in->be = kiln_backend_find("onnx");
    in->cfg = cfg;
    kiln_load_args a = {
        cfg->name,
        dir,
        vdir,
        1,
        cfg,
        gpu >= 0 ? (kiln_device){KILN_DEVICE_CUDA, gpu} : (kiln_device){KILN_DEVICE_CPU, 0}};
    kiln_err e;
    if (in->be->load(&a, &in->model, &e) != KILN_OK)
        die("load", &e);
}

/* Fills the inputs for `rows` (random, or the first from `file`). */
static void make_inputs(instance *in, int64_t rows, const char *file)
{
    kiln_err e;
    unsigned seed = 1;
    for (size_t k = 0; k < in->n_in; k++) {
        kiln_tensor_fini(&in->in[k]);
        kiln_tensor_fini(&in->din[k]);
    }
    in->n_in = in->cfg->n_inputs;
    for (size_t k = 0; k < in->n_in; k++) {
        const kiln_model_io *io = &in->cfg->inputs[k];
        kiln_shape s = {.rank = 0};
        if (in->cfg->max_batch_size > 0)
            s.dims[s.rank++] = rows;
        for (int d = 0; d < io->dims.rank; d++)
            s.dims[s.rank++] = io->dims.dims[d] < 0 ? 8 : io->dims.dims[d];
        if (io->dtype != KILN_DTYPE_FP32)
            die("inputs must be FP32", NULL);
        if (kiln_tensor_alloc(KILN_DTYPE_FP32, &s, 0, &in->in[k], &e) != KILN_OK)
            die("input", &e);
        float *p = in->in[k].data;
        for (size_t i = 0; i < in->in[k].byte_size / 4; i++)
            p[i] = (float)rand_r(&seed) / (float)RAND_MAX * 2.f - 1.f;
        if (k == 0 && file) {
            FILE *f = fopen(file, "rb");
            if (!f || fread(p, 1, in->in[k].byte_size, f) != in->in[k].byte_size)
                die("--input: cannot read the first input's bytes", NULL);
            fclose(f);
        }
        if (opt.device_io) {
            kiln_storage *st = NULL;
            const kiln_tensor *h = &in->in[k];
            if (kiln_storage_create_cuda(in->gpu, h->byte_size, &st, &e) != KILN_OK ||
                kiln_tensor_view(st, 0, h->dtype, &h->shape, h->byte_size, &in->din[k], &e) !=
                    KILN_OK ||
                kiln__cuda_copy(in->din[k].data, h->data, h->byte_size, &e) != KILN_OK)
                die("device input", &e);
            kiln_storage_unref(st);
        }
    }
    if (opt.device_io && !in->dout &&
        kiln_storage_create_cuda(in->gpu, (size_t)256 << 20, &in->dout, &e) != KILN_OK)
        die("device output buffer", &e);
}

/* One execute; returns output 0 when keep is set (else finalizes it). */
static kiln_tensor run_once(instance *in, int64_t rows, bool keep)
{
    kiln_output_slot out = {.index = 0};
    if (opt.device_io) {
        out.buffer = in->dout;
        out.capacity = kiln_storage_size(in->dout);
    }
    kiln_batch b = {.batch_size = in->cfg->max_batch_size > 0 ? (uint32_t)rows : 0,
                    .n_inputs = (uint32_t)in->n_in,
                    .inputs = opt.device_io ? in->din : in->in,
                    .n_outputs = 1,
                    .outputs = &out};
    kiln_err e;
    if (in->be->execute(in->model, &b, &e) != KILN_OK)
        die("execute", &e);
    if (!keep) {
        kiln_tensor_fini(&out.result);
        return (kiln_tensor){0};
    }
    if (out.result.device.kind == KILN_DEVICE_CUDA) { /* --device-io: bring it to the host */
        kiln_tensor h;
        if (kiln_tensor_alloc(out.result.dtype, &out.result.shape, out.result.byte_size, &h, &e) !=
                KILN_OK ||
            kiln__cuda_copy(h.data, out.result.data, h.byte_size, &e) != KILN_OK)
            die("output copy", &e);
        kiln_tensor_fini(&out.result);
        return h;
    }
    return out.result;
}

static int64_t g_rows;

static void *throughput_thread(void *arg)
{
    instance *in = arg;
    while (kiln_clock_now_ns() < in->deadline_ns) {
        run_once(in, g_rows, false);
        in->done++;
    }
    return NULL;
}

static void parse(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.runs = 30, .instances = 2, .blas_threads = 1, .seconds = 3, .gpu = -1};
    o->batches[0] = 1, o->batches[1] = 8, o->n_batches = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: bench_onnx MODEL_DIR [--batch 1,8] [--runs N] [--seconds S] "
                   "[--instances N] [--blas-threads N] [--input F] [--output F] [--gpu ID "
                   "[--device-io]] [--param KEY=VALUE]...\n");
            exit(0);
        } else if (!strcmp(a, "--device-io")) {
            o->device_io = true;
            continue;
        } else if (a[0] != '-' && !o->dir) {
            o->dir = a;
            continue;
        } else if (!v) {
            fprintf(stderr, "bench_onnx: %s needs a value\n", a);
            exit(2);
        } else if (!strcmp(a, "--batch")) {
            o->n_batches = 0;
            const char *p = v;
            while (*p && o->n_batches < 16) {
                char *end;
                long long n = strtoll(p, &end, 10);
                if (end == p || n < 1 || (*end && *end != ',')) {
                    fprintf(stderr, "bench_onnx: --batch '%s' is not a list of sizes\n", v);
                    exit(2);
                }
                o->batches[o->n_batches++] = n;
                p = *end ? end + 1 : end;
            }
        } else if (!strcmp(a, "--runs")) {
            o->runs = atoi(v);
        } else if (!strcmp(a, "--seconds")) {
            o->seconds = atof(v);
        } else if (!strcmp(a, "--instances")) {
            o->instances = atoi(v);
        } else if (!strcmp(a, "--blas-threads")) {
            o->blas_threads = atoi(v);
        } else if (!strcmp(a, "--input")) {
            o->input = v;
        } else if (!strcmp(a, "--output")) {
            o->output = v;
        } else if (!strcmp(a, "--gpu")) {
            const char *p = v;
            o->n_gpus = 0;
            while (*p && o->n_gpus < 16) {
                char *end;
                long g = strtol(p, &end, 10);
                if (end == p || g < 0 || (*end && *end != ','))
                    die("--gpu takes a device or a list (0,1)", NULL);
                o->gpus[o->n_gpus++] = (int)g;
                p = *end ? end + 1 : end;
            }
            o->gpu = o->gpus[0];
        } else if (!strcmp(a, "--param")) {
            const char *eq = strchr(v, '=');
            size_t len = strlen(o->params);
            if (!eq || eq == v || strchr(v, '"'))
                die("--param takes KEY=VALUE", NULL);
            snprintf(o->params + len, sizeof(o->params) - len,
                     "parameters { key: \"%.*s\" value { string_value: \"%s\" } }\n", (int)(eq - v),
                     v, eq + 1);
        } else {
            fprintf(stderr, "bench_onnx: unknown flag %s\n", a);
            exit(2);
        }
        i++;
    }
    if (o->device_io && o->gpu < 0)
        die("--device-io needs --gpu", NULL);
    if (!o->dir || o->runs < 1 || o->instances < 1 || o->instances > 64 || o->n_batches < 1) {
        fprintf(stderr, "bench_onnx: need MODEL_DIR (see --help)\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv, &opt);
    bench_opts o = opt;
    kiln_log_set_level(KILN_LOG_WARN);
    kiln_err e;
    if (kiln_onnx_set_blas_threads(o.blas_threads, &e) != KILN_OK)
        die("--blas-threads", &e);
    kiln_model_config *cfg = read_config(o.dir);
    instance inst[64];
    memset(inst, 0, sizeof(inst));
    for (int i = 0; i < o.instances; i++)
        load(&inst[i], o.dir, cfg, o.gpu < 0 ? -1 : o.gpus[i % o.n_gpus]);
    for (int bi = 0; bi < o.n_batches; bi++) {
        int64_t rows = o.batches[bi];
        for (int i = 0; i < o.instances; i++) {
            make_inputs(&inst[i], rows, bi == 0 ? o.input : NULL);
            run_once(&inst[i], rows, false); /* traced: builds the plan */
            if (o.gpu >= 0)
                run_once(&inst[i], rows, false); /* captures the CUDA graph */
        }
        if (bi == 0 && o.output) {
            kiln_tensor t = run_once(&inst[0], rows, true);
            FILE *f = fopen(o.output, "wb");
            if (!f || fwrite(t.data, 1, t.byte_size, f) != t.byte_size || fclose(f) != 0)
                die("--output: cannot write", NULL);
            kiln_tensor_fini(&t);
        }
        /* latency: one instance, one run after another */
        uint64_t *ns = calloc((size_t)o.runs, sizeof(*ns));
        uint64_t total = 0;
        for (int r = 0; r < o.runs; r++) {
            uint64_t t0 = kiln_clock_now_ns();
            run_once(&inst[0], rows, false);
            ns[r] = kiln_clock_now_ns() - t0;
            total += ns[r];
        }
        double mean_ms = (double)total / o.runs / 1e6;
        double p50_ms = (double)bench_median(ns, o.runs) / 1e6;
        free(ns);
        /* throughput: every instance on its own thread */
        g_rows = rows;
        pthread_t th[64];
        uint64_t t0 = kiln_clock_now_ns();
        for (int i = 0; i < o.instances; i++) {
            inst[i].done = 0;
            inst[i].deadline_ns = t0 + (uint64_t)(o.seconds * 1e9);
            pthread_create(&th[i], NULL, throughput_thread, &inst[i]);
        }
        uint64_t runs = 0;
        for (int i = 0; i < o.instances; i++) {
            pthread_join(th[i], NULL);
            runs += inst[i].done;
        }
        double secs = (double)(kiln_clock_now_ns() - t0) / 1e9;
        kiln_onnx_stats st;
        kiln_onnx_stats_get(inst[0].model, &st);
        uint64_t host_bytes = 0, device_bytes = 0; /* instance 0's, as the registry counts them */
        inst[0].be->memory(inst[0].model, &host_bytes, &device_bytes);
        printf("{\"model\":\"%s\",\"gpu\":%d,\"n_gpus\":%d,\"device_io\":%s,\"batch\":%" PRId64
               ",\"blas_threads\":%d,\"instances\":%d,"
               "\"p50_ms\":%.3f,\"mean_ms\":%.3f,\"items_per_s\":%.1f,"
               "\"plan_arena_bytes\":%" PRIu64 ",\"plan_no_reuse_bytes\":%" PRIu64
               ",\"const_bytes\":%" PRIu64 ",\"nodes\":%zu,\"steps\":%zu,"
               "\"shape_steps_folded\":%zu,\"host_bytes\":%" PRIu64 ",\"device_bytes\":%" PRIu64
               "}\n",
               cfg->name, o.gpu, o.n_gpus, o.device_io ? "true" : "false", rows, o.blas_threads,
               o.instances, p50_ms, mean_ms, (double)runs * (double)rows / secs, st.last_plan_arena,
               st.last_plan_sum, st.const_bytes, st.n_nodes, st.n_steps, st.last_plan_skipped,
               host_bytes, device_bytes);
        fflush(stdout);
    }
    for (int i = 0; i < o.instances; i++) {
        for (size_t k = 0; k < inst[i].n_in; k++) {
            kiln_tensor_fini(&inst[i].in[k]);
            kiln_tensor_fini(&inst[i].din[k]);
        }
        kiln_storage_unref(inst[i].dout);
        inst[i].be->unload(inst[i].model);
    }
    kiln_model_config_free(cfg);
    return 0;
}
