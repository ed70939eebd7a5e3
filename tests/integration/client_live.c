/*
 * tests/integration/client_live.c: libkilnclient against a live server, linked against the
 * shared library like any user program. tests/integration/test_client.py starts the servers
 * (a real kiln-server, or a fake for the retry checks) and runs one group:
 *
 *   client_live all         every function against kiln-server's default repository
 *   client_live control     load/unload against kiln-server --load=none
 *   client_live tls         a TLS (or mutual TLS) server: calls succeed
 *   client_live refused     calls fail with UNAVAILABLE (TLS mismatch, no client certificate)
 *   client_live retry       against the fake server (which counts attempts itself)
 *   client_live reconnect   the server is restarted on the same port (handshake on stdin)
 *
 * The server comes from the environment: KILN_URL, and KILN_CA, KILN_CERT, KILN_KEY,
 * KILN_SERVER_NAME for TLS; KILN_BACKOFF_MS sets the initial backoff.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kiln_client.h>

#define assert_code(rc, e, want, needle)                                                           \
    check_code((rc), &(e), (want), (needle), __FILE__, __LINE__)

static void check_code(int rc, const kiln_client_error *e, int want, const char *needle,
                       const char *file, int line)
{
    if (rc == want && e->code == want && (!needle || strstr(e->message, needle)))
        return;
    print_error("got %s '%s', want %s containing '%s'\n", kiln_client_code_name(rc), e->message,
                kiln_client_code_name(want), needle ? needle : "");
    _fail(file, line);
}

#define assert_ok(rc, e) check_code((rc), &(e), 0, NULL, __FILE__, __LINE__)

static kiln_client *connect_env(void)
{
    kiln_client_options o;
    kiln_client_options_default(&o);
    o.url = getenv("KILN_URL");
    o.tls_ca_file = getenv("KILN_CA");
    o.tls_cert_file = getenv("KILN_CERT");
    o.tls_key_file = getenv("KILN_KEY");
    o.tls_server_name = getenv("KILN_SERVER_NAME");
    o.timeout_ms = 20000;
    if (getenv("KILN_BACKOFF_MS")) {
        o.backoff_initial_ms = atoi(getenv("KILN_BACKOFF_MS"));
        o.backoff_max_ms = 8 * o.backoff_initial_ms;
    }
    kiln_client *c = NULL;
    kiln_client_error e;
    assert_non_null(o.url);
    assert_ok(kiln_client_create(&o, &c, &e), e);
    return c;
}

static kiln_client *client;

static int group_setup(void **state)
{
    (void)state;
    client = connect_env();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kiln_client_destroy(client);
    return 0;
}

static kiln_client_tensor int_tensor(const char *name, const int32_t *v, int64_t rows)
{
    kiln_client_tensor t;
    memset(&t, 0, sizeof(t));
    t.name = name;
    t.datatype = "INT32";
    t.rank = 2;
    t.shape[0] = rows;
    t.shape[1] = 16;
    t.data = v;
    t.byte_size = (size_t)rows * 16 * sizeof(int32_t);
    return t;
}

/* Runs `simple` on a = i, b = k and checks OUTPUT0 = a + b and OUTPUT1 = a - b. */
static void infer_simple_ok(kiln_client *c, int32_t k)
{
    int32_t a[16], b[16];
    for (int i = 0; i < 16; i++)
        a[i] = i, b[i] = k;
    kiln_client_tensor in[2] = {int_tensor("INPUT0", a, 1), int_tensor("INPUT1", b, 1)};
    kiln_client_result *r = NULL;
    kiln_client_error e;
    assert_ok(kiln_client_infer(c, "simple", in, 2, NULL, 0, NULL, &r, &e), e);
    kiln_client_tensor o0, o1;
    assert_ok(kiln_client_result_find(r, "OUTPUT0", &o0, &e), e);
    assert_ok(kiln_client_result_find(r, "OUTPUT1", &o1, &e), e);
    assert_int_equal(o0.byte_size, 64);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(((const int32_t *)o0.data)[i], i + k);
        assert_int_equal(((const int32_t *)o1.data)[i], i - k);
    }
    kiln_client_result_free(r);
}

/* ---------------------------------------------------------------- all */

static void test_health(void **state)
{
    (void)state;
    kiln_client_error e;
    bool b = false;
    assert_ok(kiln_client_server_live(client, &b, &e), e);
    assert_true(b);
    b = false;
    assert_ok(kiln_client_server_ready(client, &b, &e), e);
    assert_true(b);
    b = false;
    assert_ok(kiln_client_model_ready(client, "simple", NULL, &b, &e), e);
    assert_true(b);
    assert_ok(kiln_client_model_ready(client, "simple", "1", &b, &e), e);
    assert_true(b);
    assert_code(kiln_client_model_ready(client, "nope", NULL, &b, &e), e, 5,
                "'nope' is not in the repository");
    int serving = 0;
    assert_ok(kiln_client_health_check(client, "", &serving, &e), e);
    assert_int_equal(serving, 1);
    assert_ok(kiln_client_health_check(client, "simple", &serving, &e), e);
    assert_int_equal(serving, 1);
    assert_code(kiln_client_health_check(client, "nope", &serving, &e), e, 5, NULL);
}

static void test_create_errors(void **state)
{
    (void)state;
    kiln_client_options o;
    kiln_client_options_default(&o);
    o.url = getenv("KILN_URL");
    o.tls_ca_file = "/nonexistent/ca.pem";
    kiln_client *c = (kiln_client *)1;
    kiln_client_error e;
    assert_code(kiln_client_create(&o, &c, &e), e, 3, "/nonexistent/ca.pem");
    assert_null(c);
    o.tls_ca_file = NULL;
    o.tls_cert_file = "/nonexistent/client.pem"; /* a certificate without its key */
    assert_code(kiln_client_create(&o, &c, &e), e, 3, NULL);
    assert_null(c);
}

static void test_metadata(void **state)
{
    (void)state;
    kiln_client_error e;
    kiln_client_server_info si;
    assert_ok(kiln_client_server_metadata(client, &si, &e), e);
    assert_string_equal(si.name, "kiln");
    assert_non_null(strstr(si.extensions, "system_shared_memory"));
    kiln_client_model_info *m = NULL;
    assert_ok(kiln_client_model_metadata(client, "simple", NULL, &m, &e), e);
    assert_string_equal(m->name, "simple");
    assert_int_equal(m->n_versions, 1);
    assert_string_equal(m->versions[0], "1");
    assert_int_equal(m->n_inputs, 2);
    assert_string_equal(m->inputs[0].name, "INPUT0");
    assert_string_equal(m->inputs[0].datatype, "INT32");
    assert_int_equal(m->inputs[0].rank, 2);
    assert_int_equal(m->inputs[0].shape[0], -1);
    assert_int_equal(m->inputs[0].shape[1], 16);
    assert_int_equal(m->n_outputs, 2);
    assert_string_equal(m->outputs[1].name, "OUTPUT1");
    kiln_client_model_info_free(m);
    m = NULL;
    assert_code(kiln_client_model_metadata(client, "nope", NULL, &m, &e), e, 5, "nope");
    assert_null(m);
    assert_code(kiln_client_model_metadata(client, "simple", "9", &m, &e), e, 5, "no version 9");
}

static void test_config_stats_index(void **state)
{
    (void)state;
    kiln_client_error e;
    char *json = NULL;
    assert_ok(kiln_client_model_config_json(client, "simple", NULL, &json, &e), e);
    assert_non_null(strstr(json, "\"name\": \"simple\""));
    assert_non_null(strstr(json, "\"maxBatchSize\": 8"));
    assert_non_null(strstr(json, "\"dataType\": \"TYPE_INT32\""));
    assert_non_null(strstr(json, "\"dims\": [\n        \"16\"\n      ]"));
    kiln_client_free(json);
    assert_code(kiln_client_model_config_json(client, "nope", NULL, &json, &e), e, 5, "nope");
    infer_simple_ok(client, 1);
    assert_ok(kiln_client_model_stats_json(client, "simple", NULL, &json, &e), e);
    assert_non_null(strstr(json, "\"modelStats\": ["));
    assert_non_null(strstr(json, "\"inferenceCount\": \""));
    assert_non_null(strstr(json, "\"computeInfer\": {"));
    kiln_client_free(json);
    assert_ok(kiln_client_model_stats_json(client, NULL, NULL, &json, &e), e);
    assert_non_null(strstr(json, "\"name\": \"simple_string\""));
    kiln_client_free(json);
    kiln_client_repo_entry *v = NULL;
    size_t n = 0;
    assert_ok(kiln_client_repository_index(client, false, &v, &n, &e), e);
    bool seen = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, "simple") == 0 && strcmp(v[i].state, "READY") == 0)
            seen = true;
    assert_true(seen);
    kiln_client_free(v);
    assert_ok(kiln_client_repository_index(client, true, &v, &n, &e), e);
    assert_true(n >= 4);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(v[i].state, "READY");
    kiln_client_free(v);
}

static void test_infer(void **state)
{
    (void)state;
    infer_simple_ok(client, 100);
    kiln_client_error e;
    int32_t a[48], b[48];
    for (int i = 0; i < 48; i++)
        a[i] = i, b[i] = 2 * i;
    kiln_client_tensor in[2] = {int_tensor("INPUT0", a, 3), int_tensor("INPUT1", b, 3)};
    kiln_client_output out = {.name = "OUTPUT1"};
    kiln_client_infer_options io = {.version = "1", .request_id = "req-c", .timeout_ms = 10000};
    kiln_client_result *r = NULL;
    assert_ok(kiln_client_infer(client, "simple", in, 2, &out, 1, &io, &r, &e), e);
    assert_string_equal(kiln_client_result_model(r), "simple");
    assert_string_equal(kiln_client_result_id(r), "req-c");
    assert_int_equal(kiln_client_result_count(r), 1);
    kiln_client_tensor t;
    assert_ok(kiln_client_result_output(r, 0, &t, &e), e);
    assert_string_equal(t.name, "OUTPUT1");
    assert_int_equal(t.rank, 2);
    assert_int_equal(t.shape[0], 3);
    for (int i = 0; i < 48; i++)
        assert_int_equal(((const int32_t *)t.data)[i], -i);
    assert_code(kiln_client_result_find(r, "OUTPUT0", &t, &e), e, 5, "no output 'OUTPUT0'");
    kiln_client_result_free(r);
}

static void test_infer_bytes_and_dlpack(void **state)
{
    (void)state;
    kiln_client_error e;
    /* BYTES: 4-byte little-endian length, then the bytes */
    uint8_t s0[16 * 8], s1[16 * 8];
    size_t n0 = 0, n1 = 0;
    for (int i = 0; i < 16; i++) {
        char num[16];
        int len = snprintf(num, sizeof(num), "%d", i);
        s0[n0++] = (uint8_t)len, s0[n0++] = 0, s0[n0++] = 0, s0[n0++] = 0;
        memcpy(s0 + n0, num, (size_t)len);
        n0 += (size_t)len;
        s1[n1++] = 1, s1[n1++] = 0, s1[n1++] = 0, s1[n1++] = 0, s1[n1++] = '7';
    }
    kiln_client_tensor in[2] = {
        {.name = "INPUT0",
         .datatype = "BYTES",
         .rank = 2,
         .shape = {1, 16},
         .data = s0,
         .byte_size = n0},
        {.name = "INPUT1",
         .datatype = "BYTES",
         .rank = 2,
         .shape = {1, 16},
         .data = s1,
         .byte_size = n1},
    };
    kiln_client_result *r = NULL;
    assert_ok(kiln_client_infer(client, "simple_string", in, 2, NULL, 0, NULL, &r, &e), e);
    kiln_client_tensor t;
    assert_ok(kiln_client_result_find(r, "OUTPUT0", &t, &e), e);
    assert_string_equal(t.datatype, "BYTES");
    const uint8_t *p = t.data;
    size_t off = 0;
    for (int i = 0; i < 16; i++) {
        uint32_t len = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8;
        char want[16];
        snprintf(want, sizeof(want), "%d", i + 7);
        assert_int_equal(len, strlen(want));
        assert_memory_equal(p + off + 4, want, len);
        off += 4 + len;
    }
    assert_int_equal(off, t.byte_size);
    kiln_client_result_free(r);

    /* DLPack views as inputs */
    int32_t a[32], b[32];
    for (int i = 0; i < 32; i++)
        a[i] = 3 * i, b[i] = i;
    int64_t shape[2] = {2, 16};
    DLTensor da = {
        .data = a, .device = {kDLCPU, 0}, .ndim = 2, .dtype = {kDLInt, 32, 1}, .shape = shape};
    DLTensor db = da;
    db.data = b;
    kiln_client_tensor dl[2];
    assert_ok(kiln_client_tensor_from_dlpack(&da, "INPUT0", &dl[0], &e), e);
    assert_ok(kiln_client_tensor_from_dlpack(&db, "INPUT1", &dl[1], &e), e);
    assert_ok(kiln_client_infer(client, "simple", dl, 2, NULL, 0, NULL, &r, &e), e);
    assert_ok(kiln_client_result_find(r, "OUTPUT1", &t, &e), e);
    for (int i = 0; i < 32; i++)
        assert_int_equal(((const int32_t *)t.data)[i], 2 * i);
    kiln_client_result_free(r);
}

static void test_server_errors(void **state)
{
    (void)state;
    kiln_client_error e;
    kiln_client_result *r = (kiln_client_result *)1;
    int32_t a[16] = {0};
    float f[16] = {0};
    kiln_client_tensor in[2] = {int_tensor("INPUT0", a, 1), int_tensor("INPUT1", a, 1)};
    in[1].datatype = "FP32";
    in[1].data = f;
    assert_code(kiln_client_infer(client, "simple", in, 2, NULL, 0, NULL, &r, &e), e, 3,
                "inputs[1] 'INPUT1': datatype FP32 does not match the model's INT32");
    assert_null(r);
    assert_code(kiln_client_infer(client, "simple", in, 1, NULL, 0, NULL, &r, &e), e, 3,
                "model 'simple' needs input 'INPUT1', which the request does not give");
    assert_code(kiln_client_infer(client, "nope", in, 1, NULL, 0, NULL, &r, &e), e, 5,
                "model 'nope' is not in the repository");
    in[1] = int_tensor("INPUT1", a, 1);
    kiln_client_infer_options io = {.version = "7"};
    assert_code(kiln_client_infer(client, "simple", in, 2, NULL, 0, &io, &r, &e), e, 5,
                "model 'simple' has no version 7");
    in[0].shm_region = "no-such-region";
    in[0].data = NULL;
    assert_code(kiln_client_infer(client, "simple", in, 2, NULL, 0, NULL, &r, &e), e, 5,
                "unable to find shared memory region 'no-such-region'");
    /* the sandbox's answer travels as PERMISSION_DENIED with the server's words */
    int32_t mode = 1;
    kiln_client_tensor m = {.name = "MODE",
                            .datatype = "INT32",
                            .rank = 1,
                            .shape = {1},
                            .data = &mode,
                            .byte_size = 4};
    assert_code(kiln_client_infer(client, "misbehave", &m, 1, NULL, 0, NULL, &r, &e), e, 7,
                "blocked by the sandbox");
    /* CUDA shared memory on a server without a GPU (or a bogus handle on one with a GPU) */
    unsigned char h[64] = {0};
    int rc = kiln_client_cuda_shm_register(client, "gpu", h, sizeof(h), 0, 64, &e);
    assert_true(rc != 0 && e.code == rc && e.message[0]);
    printf("  cuda register answered %s: %s\n", kiln_client_code_name(rc), e.message);
    assert_ok(kiln_client_cuda_shm_unregister(client, "gpu", &e), e);
}

static bool key_exists(const char *key)
{
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm%s", key);
    return access(path, F_OK) == 0;
}

static void test_shm_round_trip(void **state)
{
    (void)state;
    kiln_client_error e;
    char key[64];
    snprintf(key, sizeof(key), "/kiln-it-client-%d", (int)getpid());
    kiln_client_shm *s = NULL;
    assert_ok(kiln_client_shm_create(client, "io", key, 256, &s, &e), e);
    int32_t *p = kiln_client_shm_data(s);
    for (int i = 0; i < 16; i++)
        p[i] = i, p[16 + i] = 5;
    kiln_client_tensor in[2] = {int_tensor("INPUT0", NULL, 1), int_tensor("INPUT1", NULL, 1)};
    in[0].shm_region = "io";
    in[1].shm_region = "io";
    in[1].shm_offset = 64;
    kiln_client_output out[2] = {
        {.name = "OUTPUT0", .shm_region = "io", .shm_offset = 128, .shm_byte_size = 64},
        {.name = "OUTPUT1", .shm_region = "io", .shm_offset = 192, .shm_byte_size = 64}};
    kiln_client_result *r = NULL;
    assert_ok(kiln_client_infer(client, "simple", in, 2, out, 2, NULL, &r, &e), e);
    kiln_client_tensor t;
    assert_ok(kiln_client_result_find(r, "OUTPUT1", &t, &e), e);
    assert_null(t.data);
    assert_string_equal(t.shm_region, "io");
    assert_int_equal(t.shm_offset, 192);
    assert_int_equal(t.byte_size, 64);
    kiln_client_result_free(r);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(p[32 + i], i + 5);
        assert_int_equal(p[48 + i], i - 5);
    }
    /* one input from the region, one inline, outputs inline */
    int32_t b[16];
    for (int i = 0; i < 16; i++)
        b[i] = 1000;
    in[1] = int_tensor("INPUT1", b, 1);
    assert_ok(kiln_client_infer(client, "simple", in, 2, NULL, 0, NULL, &r, &e), e);
    assert_ok(kiln_client_result_find(r, "OUTPUT0", &t, &e), e);
    assert_int_equal(((const int32_t *)t.data)[3], 1003);
    kiln_client_result_free(r);
    /* a window the region cannot hold: the server's message comes back */
    out[1].shm_offset = 224;
    in[1].shm_region = "io";
    in[1].data = NULL;
    in[1].shm_offset = 64;
    assert_code(kiln_client_infer(client, "simple", in, 2, out, 2, NULL, &r, &e), e, 3,
                "passes the region's 256 bytes");
    /* the same region name again: refused, and its new key is not left behind */
    char key2[80];
    snprintf(key2, sizeof(key2), "%s-b", key);
    kiln_client_shm *s2 = NULL;
    assert_code(kiln_client_shm_create(client, "io", key2, 64, &s2, &e), e, 6,
                "region 'io' is already registered");
    assert_null(s2);
    assert_false(key_exists(key2));
    assert_true(key_exists(key));
    assert_ok(kiln_client_shm_destroy(client, s, &e), e);
    assert_false(key_exists(key));
    assert_code(kiln_client_infer(client, "simple", in, 2, NULL, 0, NULL, &r, &e), e, 5,
                "unable to find shared memory region 'io'");
}

static void test_large_tensor(void **state)
{
    (void)state;
    size_t n = (size_t)32 << 20 >> 2; /* 32 MiB of FP32, inline both ways */
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)i * 0.5f;
    kiln_client_tensor in = {.name = "INPUT0",
                             .datatype = "FP32",
                             .rank = 2,
                             .shape = {1, (int64_t)n},
                             .data = x,
                             .byte_size = n * sizeof(float)};
    kiln_client_result *r = NULL;
    kiln_client_error e;
    assert_ok(kiln_client_infer(client, "identity_fp32", &in, 1, NULL, 0, NULL, &r, &e), e);
    kiln_client_tensor t;
    assert_ok(kiln_client_result_output(r, 0, &t, &e), e);
    assert_int_equal(t.byte_size, n * sizeof(float));
    assert_memory_equal(t.data, x, n * sizeof(float));
    kiln_client_result_free(r);
    free(x);
}

static void *hammer(void *arg)
{
    for (int i = 0; i < 40; i++)
        infer_simple_ok(client, (int32_t)(intptr_t)arg * 1000 + i);
    return NULL;
}

static void test_threads_share_one_client(void **state)
{
    (void)state;
    pthread_t t[8];
    for (intptr_t i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)i), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
}

/* ---------------------------------------------------------------- control (--load=none) */

static void test_load_unload(void **state)
{
    (void)state;
    kiln_client_error e;
    bool ready = true;
    assert_ok(kiln_client_model_ready(client, "simple", NULL, &ready, &e), e);
    assert_false(ready);
    int32_t a[16] = {0};
    kiln_client_tensor in[2] = {int_tensor("INPUT0", a, 1), int_tensor("INPUT1", a, 1)};
    kiln_client_result *r = NULL;
    /* UNAVAILABLE is retried (3 more times, fast here) and then reported with the count */
    assert_code(kiln_client_infer(client, "simple", in, 2, NULL, 0, NULL, &r, &e), e, 14,
                "model 'simple' is not ready");
    assert_non_null(strstr(e.message, " (4 attempts)"));
    assert_ok(kiln_client_load(client, "simple", &e), e);
    infer_simple_ok(client, 3);
    assert_ok(kiln_client_unload(client, "simple", &e), e);
    assert_code(kiln_client_unload(client, "simple", &e), e, 5, "is not loaded");
    assert_code(kiln_client_load(client, "nope", &e), e, 5, NULL);
    kiln_client_repo_entry *v = NULL;
    size_t n = 0;
    assert_ok(kiln_client_repository_index(client, false, &v, &n, &e), e);
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, "simple") == 0) {
            assert_string_equal(v[i].state, "UNAVAILABLE");
            assert_string_equal(v[i].reason, "unloaded");
        }
    kiln_client_free(v);
}

/* ---------------------------------------------------------------- tls / refused */

static void test_tls(void **state)
{
    (void)state;
    kiln_client_error e;
    bool live = false;
    assert_ok(kiln_client_server_live(client, &live, &e), e);
    assert_true(live);
    infer_simple_ok(client, 9);
}

static void test_refused(void **state)
{
    (void)state;
    kiln_client_error e;
    bool live = false;
    assert_code(kiln_client_server_live(client, &live, &e), e, 14, NULL);
    assert_true(strlen(e.message) > 0);
    printf("  refused: %s\n", e.message);
}

/* ---------------------------------------------------------------- retry (fake server) */

static void test_retry(void **state)
{
    (void)state;
    kiln_client_error e;
    bool b = false;
    /* the fake fails ServerLive twice, then answers */
    assert_ok(kiln_client_server_live(client, &b, &e), e);
    assert_true(b);
    /* ServerReady always fails: 1 + 3 retries */
    assert_code(kiln_client_server_ready(client, &b, &e), e, 14,
                "fake: ServerReady unavailable (4 attempts)");
    /* not retried: load, unload, shm register */
    assert_code(kiln_client_load(client, "simple", &e), e, 14, NULL);
    assert_string_equal(e.message, "fake: RepositoryModelLoad unavailable");
    assert_code(kiln_client_unload(client, "simple", &e), e, 14, NULL);
    assert_string_equal(e.message, "fake: RepositoryModelUnload unavailable");
    char key[64];
    snprintf(key, sizeof(key), "/kiln-it-retry-%d", (int)getpid());
    kiln_client_shm *s = NULL;
    assert_code(kiln_client_shm_create(client, "r", key, 4096, &s, &e), e, 14,
                "fake: SystemSharedMemoryRegister unavailable");
    assert_null(s);
    assert_false(key_exists(key));
    /* ModelInfer fails once, then answers */
    kiln_client_result *r = NULL;
    assert_ok(kiln_client_infer(client, "simple", NULL, 0, NULL, 0, NULL, &r, &e), e);
    assert_string_equal(kiln_client_result_model(r), "simple");
    kiln_client_result_free(r);
    /* a non-retryable code from the server: one attempt, the message as sent */
    int serving;
    assert_code(kiln_client_health_check(client, "x", &serving, &e), e, 5, NULL);
    assert_string_equal(e.message, "fake: no service 'x'");
}

/* ---------------------------------------------------------------- reconnect */

static void wait_line(const char *want)
{
    printf("%s\n", want);
    fflush(stdout);
    char line[64];
    assert_non_null(fgets(line, sizeof(line), stdin));
}

static void test_reconnect(void **state)
{
    (void)state;
    kiln_client_error e;
    infer_simple_ok(client, 1);
    wait_line("READY-STOP"); /* the test stops the server, then answers */
    bool live;
    int rc = kiln_client_server_live(client, &live, &e);
    assert_int_equal(rc, 14);
    printf("  while down: %s: %s\n", kiln_client_code_name(rc), e.message);
    wait_line("READY-START"); /* the test starts a new server on the same port */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int tries = 0;
    for (;;) {
        tries++;
        if (kiln_client_server_live(client, &live, &e) == 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 30)
            fail_msg("no answer 30 s after the restart: %s", e.message);
        usleep(50 * 1000);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("  back after %d calls, %.0f ms\n", tries,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    for (int i = 0; i < 20; i++)
        infer_simple_ok(client, i);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "all";
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_health),        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_metadata),      cmocka_unit_test(test_config_stats_index),
        cmocka_unit_test(test_infer),         cmocka_unit_test(test_infer_bytes_and_dlpack),
        cmocka_unit_test(test_server_errors), cmocka_unit_test(test_shm_round_trip),
        cmocka_unit_test(test_large_tensor),  cmocka_unit_test(test_threads_share_one_client),
    };
    const struct CMUnitTest control[] = {cmocka_unit_test(test_load_unload)};
    const struct CMUnitTest tls[] = {cmocka_unit_test(test_tls)};
    const struct CMUnitTest refused[] = {cmocka_unit_test(test_refused)};
    const struct CMUnitTest retry[] = {cmocka_unit_test(test_retry)};
    const struct CMUnitTest reconnect[] = {cmocka_unit_test(test_reconnect)};
    if (strcmp(mode, "all") == 0)
        return cmocka_run_group_tests(all, group_setup, group_teardown);
    if (strcmp(mode, "control") == 0)
        return cmocka_run_group_tests(control, group_setup, group_teardown);
    if (strcmp(mode, "tls") == 0)
        return cmocka_run_group_tests(tls, group_setup, group_teardown);
    if (strcmp(mode, "refused") == 0)
        return cmocka_run_group_tests(refused, group_setup, group_teardown);
    if (strcmp(mode, "retry") == 0)
        return cmocka_run_group_tests(retry, group_setup, group_teardown);
    if (strcmp(mode, "reconnect") == 0)
        return cmocka_run_group_tests(reconnect, group_setup, group_teardown);
    fprintf(stderr, "client_live: unknown group '%s'\n", mode);
    return 2;
}
