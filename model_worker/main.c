/*
 * model_worker/main.c: kiln-server's main(): flags (each with a KILN_* environment twin),
 * wiring of engine and transport, start-up loads, signals and shutdown.
 *
 * One table describes every flag; parsing, the environment, defaults and --help all read it.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "model_worker/worker.h"
#include "server/metrics_http.h"
#include "server/server.h"

#define KILN_VERSION "0.1.0"

typedef enum flag_type { F_STR, F_INT, F_BYTES, F_BOOL } flag_type;

typedef struct flag {
    const char *name; /* --name; the environment twin is KILN_NAME (upper, '-' -> '_') */
    flag_type type;
    const char *def;
    const char *help;
    const char *value; /* set while parsing */
} flag;

static flag flags[] = {
    {"address", F_STR, "0.0.0.0:8001", "gRPC listen address (host:port; port 0 picks one)", NULL},
    {"unix-socket", F_STR, "",
     "also listen on this Unix socket path (plaintext, co-located clients)", NULL},
    {"tls-cert", F_STR, "", "server certificate chain (PEM): serve --address over TLS", NULL},
    {"tls-key", F_STR, "", "server private key (PEM) for --tls-cert", NULL},
    {"tls-client-ca", F_STR, "", "CA (PEM) that client certificates must chain to: mutual TLS",
     NULL},
    {"health-address", F_STR, "",
     "also serve grpc.health.v1 alone, in plaintext, here (for probes)", NULL},
    {"health-port-file", F_STR, "", "write the health port to this file once serving", NULL},
    {"model-repository", F_STR, "examples/models", "model repository directory", NULL},
    {"load", F_STR, "all", "models to load at start: all, none, or NAME[,NAME...]", NULL},
    {"exec-threads", F_INT, "2", "sandboxed execution threads", NULL},
    {"blas-threads", F_INT, "1",
     "threads per matrix product in ONNX CPU models (OpenBLAS; above 1 they run outside the "
     "sandbox)",
     NULL},
    {"grpc-threads", F_INT, "0", "completion-queue threads (0 = one per core)", NULL},
    {"queue-limit", F_INT, "1024",
     "requests waiting per model (when its config sets no max_queue_size)", NULL},
    {"host-memory-budget", F_BYTES, "0",
     "bytes of host memory for loaded models (0 = no limit; K/M/G suffixes)", NULL},
    {"device-memory-budget", F_BYTES, "0",
     "bytes of device memory for loaded models (0 = no limit)", NULL},
    {"model-idle-ttl-ms", F_INT, "0", "unload models unused this long (0 = never)", NULL},
    {"max-message-bytes", F_BYTES, "2147483647", "largest gRPC message received or sent", NULL},
    {"max-tensor-bytes", F_BYTES, "2G", "largest single input or output tensor", NULL},
    {"slow-request-ms", F_INT, "0",
     "log a warning for each request slower than this end to end (0 = off)", NULL},
    {"cpu-limit-ms", F_INT, "0", "CPU time one request may use in model code (0 = no limit)", NULL},
    {"allow-shm", F_BOOL, "true", "accept client system shared memory regions", NULL},
    {"shm-key-prefixes", F_STR, "", "comma-separated allowed shm key prefixes (empty = any)", NULL},
    {"shm-quota", F_BYTES, "0", "total bytes of client shared memory mapped (0 = no limit)", NULL},
    {"sandbox", F_BOOL, "true", "run model code under the seccomp sandbox (false only to debug)",
     NULL},
    {"grace-ms", F_INT, "30000", "on SIGTERM/SIGINT, time given to calls in progress", NULL},
    {"metrics", F_BOOL, "true", "serve Prometheus metrics over HTTP (--metrics-address)", NULL},
    {"metrics-address", F_STR, "0.0.0.0:8002",
     "HTTP listen address of the metrics (port 0 picks one)", NULL},
    {"metrics-path", F_STR, "/metrics", "HTTP path of the metrics", NULL},
    {"metrics-port-file", F_STR, "", "write the metrics port to this file once serving", NULL},
    {"log-level", F_STR, "info", "debug, info, warn, error or off", NULL},
    {"port-file", F_STR, "", "write the bound port to this file once serving", NULL},
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: kiln-server [--flag=value ...]\n\n"
               "Serves models over the KServe v2 gRPC protocol (and grpc.health.v1).\n"
               "Every flag can also be set by its environment twin; a flag wins over it.\n\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        char env[64];
        snprintf(env, sizeof(env), "KILN_%s", flags[i].name);
        for (char *p = env; *p; p++)
            *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        fprintf(f, "  --%-22s %s\n  %-24s env %s, default \"%s\"\n", flags[i].name, flags[i].help,
                "", env, flags[i].def);
    }
    fprintf(f, "  --%-22s %s\n  --%-22s %s\n  --%-22s %s\n", "help", "this text", "help-markdown",
            "the flags as Markdown (docs/configuration.md)", "version", "print the version");
}

/* The flag table as the Markdown of docs/configuration.md (`make docs` writes it; a test
 * checks that the committed page is what this prints). */
static void usage_markdown(FILE *f)
{
    fprintf(f, "# kiln-server configuration\n\n"
               "Generated from kiln-server's flag table by `make docs` "
               "(`kiln-server --help-markdown`); do not edit.\n\n"
               "Every flag can also be set by its environment twin; a flag wins over it. "
               "Sizes take K, M, G and T suffixes (powers of 1024); booleans take "
               "true/false, 1/0, on/off, yes/no.\n\n"
               "| flag | environment | default | |\n| --- | --- | --- | --- |\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        char env[64];
        snprintf(env, sizeof(env), "KILN_%s", flags[i].name);
        for (char *p = env; *p; p++)
            *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        fprintf(f, "| `--%s` | `%s` | %s%s%s | ", flags[i].name, env, flags[i].def[0] ? "`" : "",
                flags[i].def[0] ? flags[i].def : "(none)", flags[i].def[0] ? "`" : "");
        for (const char *p = flags[i].help; *p; p++) {
            if (*p == '|') /* it would end the cell */
                fputc('\\', f);
            fputc(*p, f);
        }
        fputs(" |\n", f);
    }
}

static flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_FLAGS; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

static int parse_args(int argc, char **argv)
{
    for (size_t i = 0; i < N_FLAGS; i++) {
        char env[64];
        snprintf(env, sizeof(env), "KILN_%s", flags[i].name);
        for (char *p = env; *p; p++)
            *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        const char *v = getenv(env);
        flags[i].value = v ? v : flags[i].def;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--help-markdown") == 0) {
            usage_markdown(stdout);
            exit(0);
        }
        if (strcmp(a, "--version") == 0) {
            printf("kiln-server %s\n", KILN_VERSION);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "kiln-server: unexpected argument '%s' (see --help)\n", a);
            return -1;
        }
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        flag *f = find_flag(a + 2, len);
        if (!f) {
            fprintf(stderr, "kiln-server: unknown flag '%.*s' (see --help)\n", (int)len + 2, a);
            return -1;
        }
        if (eq)
            f->value = eq + 1;
        else if (f->type == F_BOOL)
            f->value = "true";
        else if (i + 1 < argc)
            f->value = argv[++i];
        else {
            fprintf(stderr, "kiln-server: flag --%s needs a value\n", f->name);
            return -1;
        }
    }
    return 0;
}

static const char *str_flag(const char *name)
{
    return find_flag(name, strlen(name))->value;
}

/* Integer, byte-size or boolean flag value; exits with a message when malformed. */
static uint64_t num_flag(const char *name)
{
    flag *f = find_flag(name, strlen(name));
    const char *v = f->value;
    if (f->type == F_BOOL) {
        if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "on") ||
            !strcasecmp(v, "yes"))
            return 1;
        if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "off") ||
            !strcasecmp(v, "no"))
            return 0;
        fprintf(stderr, "kiln-server: --%s '%s' is not true or false\n", name, v);
        exit(2);
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    uint64_t mul = 1;
    if (f->type == F_BYTES && *end) {
        switch (toupper((unsigned char)*end)) {
        case 'K':
            mul = 1ULL << 10;
            break;
        case 'M':
            mul = 1ULL << 20;
            break;
        case 'G':
            mul = 1ULL << 30;
            break;
        case 'T':
            mul = 1ULL << 40;
            break;
        default:
            mul = 0;
        }
        end++;
        if (*end == 'i' || *end == 'I')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (errno || *end || !mul || v[0] == '-' || !v[0] || (n && mul > UINT64_MAX / n)) {
        fprintf(stderr, "kiln-server: --%s '%s' is not a %s\n", name, v,
                f->type == F_BYTES ? "byte size (e.g. 512M, 4G)" : "non-negative integer");
        exit(2);
    }
    return (uint64_t)n * mul;
}

/* Writes a port number to `path` atomically (a reader never sees half a file). */
static void write_port(const char *path, int port)
{
    if (!path || !path[0])
        return;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        KILN_LOGE(NULL, "cannot write the port file %s: %s", path, strerror(errno));
}

/* Loads the models named by --load through the execution threads. */
static int initial_loads(kiln_engine *e, const char *load)
{
    if (!strcmp(load, "none") || !load[0])
        return 0;
    kiln_err err;
    int failures = 0;
    if (!strcmp(load, "all")) {
        kiln_model_status *all;
        size_t n;
        if (kiln_registry_index(kiln_engine_registry(e), &all, &n, &err) != KILN_OK) {
            KILN_LOGE(NULL, "cannot list the repository: %s", err.msg);
            return 1;
        }
        for (size_t i = 0; i < n; i++)
            if (kiln_engine_load(e, all[i].name, NULL, NULL, &err) != KILN_OK)
                failures++; /* logged by the registry; the server goes on with the others */
        free(all);
        return failures;
    }
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", load);
    for (char *name = strtok(buf, ","); name; name = strtok(NULL, ",")) {
        if (kiln_engine_load(e, name, NULL, NULL, &err) != KILN_OK) {
            KILN_LOGE(&(kiln_log_ctx){.model = name}, "cannot load: %s", err.msg);
            failures++;
        }
    }
    return failures;
}

int main(int argc, char **argv)
{
    uint64_t t_start = kiln_clock_now_ns();
    if (parse_args(argc, argv) != 0)
        return 2;
    kiln_err err;
    kiln_log_level lvl;
    if (kiln_log_level_parse(str_flag("log-level"), &lvl, &err) != KILN_OK) {
        fprintf(stderr, "kiln-server: --log-level: %s\n", err.msg);
        return 2;
    }
    kiln_log_set_level(lvl);

    /* signals are taken by sigwait in this thread only: block them before any thread exists */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    kiln_engine_options eo;
    kiln_engine_options_default(&eo);
    eo.repository = str_flag("model-repository");
    eo.exec_threads = (int)num_flag("exec-threads");
    eo.blas_threads = num_flag("blas-threads") > 256 ? -1 : (int)num_flag("blas-threads");
    if (eo.blas_threads < 1) {
        fprintf(stderr, "kiln-server: --blas-threads must be 1 to 256\n");
        return 2;
    }
    eo.queue_limit = (size_t)num_flag("queue-limit");
    eo.host_budget_bytes = num_flag("host-memory-budget");
    eo.device_budget_bytes = num_flag("device-memory-budget");
    eo.model_idle_ttl_ns = num_flag("model-idle-ttl-ms") * KILN_NS_PER_MS;
    eo.max_tensor_bytes = num_flag("max-tensor-bytes");
    eo.cpu_limit_ns = num_flag("cpu-limit-ms") * KILN_NS_PER_MS;
    eo.slow_request_ns = num_flag("slow-request-ms") * KILN_NS_PER_MS;
    eo.allow_shm = num_flag("allow-shm") != 0;
    eo.shm_key_prefixes = str_flag("shm-key-prefixes");
    eo.shm_quota_bytes = num_flag("shm-quota");
    eo.sandbox = num_flag("sandbox") != 0;
    uint64_t grace_ns = num_flag("grace-ms") * KILN_NS_PER_MS;
    uint64_t max_msg = num_flag("max-message-bytes");
    if (max_msg > INT32_MAX) {
        fprintf(stderr, "kiln-server: --max-message-bytes %" PRIu64 " passes gRPC's limit of %d\n",
                max_msg, INT32_MAX);
        return 2;
    }
    kiln_engine *engine;
    if (kiln_engine_create(&eo, &engine, &err) != KILN_OK) {
        KILN_LOGE(NULL, "cannot start: %s", err.msg);
        return 1;
    }
    kiln_server_options so = {.address = str_flag("address"),
                              .cq_threads = (int)num_flag("grpc-threads"),
                              .max_message_bytes = (int64_t)max_msg,
                              .version = KILN_VERSION,
                              .tls_cert_file = str_flag("tls-cert"),
                              .tls_key_file = str_flag("tls-key"),
                              .tls_client_ca_file = str_flag("tls-client-ca"),
                              .unix_socket = str_flag("unix-socket")};
    kiln_server *server = NULL, *health = NULL;
    kiln_metrics_http *metrics = NULL;
    kiln_server_options ho = {.address = str_flag("health-address"),
                              .cq_threads = 1,
                              .requests_per_method = 4,
                              .version = KILN_VERSION,
                              .health_only = true};
    /* the metrics first: a gRPC server that bound its port must be started to be destroyed */
    if ((num_flag("metrics") &&
         kiln_metrics_http_start(str_flag("metrics-address"), str_flag("metrics-path"), engine,
                                 &metrics, &err) != KILN_OK) ||
        kiln_server_create(&so, engine, &server, &err) != KILN_OK ||
        (ho.address[0] && kiln_server_create(&ho, engine, &health, &err) != KILN_OK) ||
        kiln_server_start(server, &err) != KILN_OK ||
        (health && kiln_server_start(health, &err) != KILN_OK)) {
        KILN_LOGE(NULL, "cannot start: %s", err.msg);
        kiln_metrics_http_stop(metrics);
        kiln_server_destroy(health);
        kiln_server_destroy(server);
        kiln_engine_destroy(engine);
        return 1;
    }
    int failed = initial_loads(engine, str_flag("load"));
    kiln_server_set_serving(server, true);
    if (health)
        kiln_server_set_serving(health, true);
    int port = kiln_server_port(server);
    write_port(str_flag("port-file"), port);
    if (health)
        write_port(str_flag("health-port-file"), kiln_server_port(health));
    if (metrics)
        write_port(str_flag("metrics-port-file"), kiln_metrics_http_port(metrics));
    KILN_LOGI(NULL,
              "serving on %s (port %d), repository %s, %d model load failure%s, ready in %.1f ms",
              so.address, port, eo.repository, failed, failed == 1 ? "" : "s",
              (double)(kiln_clock_now_ns() - t_start) / 1e6);
    if (metrics)
        KILN_LOGI(NULL, "metrics on http://%s%s (port %d)", str_flag("metrics-address"),
                  str_flag("metrics-path"), kiln_metrics_http_port(metrics));

    int sig = 0;
    sigwait(&sigs, &sig);
    KILN_LOGI(NULL, "signal %d: draining (grace %llu ms; a second signal exits at once)", sig,
              (unsigned long long)(grace_ns / KILN_NS_PER_MS));
    /* a second signal ends the process at once */
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    if (health)
        kiln_server_set_serving(health, false); /* probes see NOT_SERVING while draining */
    kiln_server_shutdown(server, grace_ns);
    kiln_engine_drain(engine); /* work in progress answers while the queues still run */
    kiln_server_stop(server);
    if (health) {
        kiln_server_shutdown(health, 0);
        kiln_server_stop(health);
    }
    kiln_metrics_http_stop(metrics); /* before the engine it reads */
    kiln_engine_destroy(engine);     /* unloads models */
    kiln_server_destroy(health);
    kiln_server_destroy(server);
    KILN_LOGI(NULL, "stopped");
    return 0;
}
