/*
 * tests/unit/client/test_rpc_tls.c: client/kiln_rpc.h's channel options against live
 * kiln-servers on 127.0.0.1: TLS and mutual TLS (certificates made here with openssl, as
 * tests/integration does), the server-name override, option errors, wait-for-ready (a call
 * that waits for a server started after it), and the message-size limits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grpc/health/v1/health.kiln.h"
#include "proto/grpc_service.kiln.h"
#include "tests/support.h"

static char dir[64];
static char ca[128], server_pem[128], server_key[128], client_pem[128], client_key[128];
static kiln_test_server plain, tls, mtls;

static void openssl(const char *const *args)
{
    const char *argv[32] = {"openssl"};
    size_t n = 1;
    for (; args[n - 1]; n++)
        argv[n] = args[n - 1];
    char log[128];
    snprintf(log, sizeof(log), "%s/openssl.log", dir);
    if (kiln_test_run(argv, NULL, log) != 0) {
        char *text = kiln_test_read_file(log);
        fail_msg("openssl %s failed:\n%s", args[0], text ? text : "");
    }
}

/* A CA, a server certificate for localhost and 127.0.0.1, and a client certificate. */
static void make_certs(void)
{
    char ca_key[128], csr[128], ext[128];
    snprintf(ca_key, sizeof(ca_key), "%s/ca.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    openssl((const char *[]){"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
                             "-out", ca, "-days", "1", "-subj", "/CN=kiln-test-ca", NULL});
    snprintf(ext, sizeof(ext), "%s/server.ext", dir);
    FILE *f = fopen(ext, "w");
    assert_non_null(f);
    fputs("subjectAltName=DNS:localhost,IP:127.0.0.1\n", f);
    fclose(f);
    struct {
        const char *who, *cn;
        char *pem, *key;
        bool san;
    } certs[] = {{"server", "/CN=localhost", server_pem, server_key, true},
                 {"client", "/CN=kiln-client", client_pem, client_key, false}};
    for (size_t i = 0; i < 2; i++) {
        snprintf(certs[i].pem, 128, "%s/%s.pem", dir, certs[i].who);
        snprintf(certs[i].key, 128, "%s/%s.key", dir, certs[i].who);
        snprintf(csr, sizeof(csr), "%s/%s.csr", dir, certs[i].who);
        openssl((const char *[]){"req", "-newkey", "rsa:2048", "-nodes", "-keyout", certs[i].key,
                                 "-out", csr, "-subj", certs[i].cn, NULL});
        openssl((const char *[]){"x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                                 "-CAcreateserial", "-out", certs[i].pem, "-days", "1",
                                 certs[i].san ? "-extfile" : NULL, ext, NULL});
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/kiln-test-tls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    make_certs();
    char cert[200], key[200], client_ca[200];
    snprintf(cert, sizeof(cert), "--tls-cert=%s", server_pem);
    snprintf(key, sizeof(key), "--tls-key=%s", server_key);
    snprintf(client_ca, sizeof(client_ca), "--tls-client-ca=%s", ca);
    kiln_test_server_start(&plain, NULL);
    kiln_test_server_start(&tls, (const char *[]){cert, key, NULL});
    kiln_test_server_start(&mtls, (const char *[]){cert, key, client_ca, NULL});
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(kiln_test_server_stop(&plain), 0);
    assert_int_equal(kiln_test_server_stop(&tls), 0);
    assert_int_equal(kiln_test_server_stop(&mtls), 0);
    const char *argv[] = {"rm", "-rf", dir, NULL};
    kiln_test_run(argv, NULL, NULL);
    return 0;
}

/* ServerLive on a channel made from `o`: its status, message in err. */
static kiln_status live(const kiln_rpc_channel_options *o, const kiln_rpc_call_opts *opts,
                        kiln_err *err)
{
    kiln_rpc_channel *ch;
    kiln_status st = kiln_rpc_channel_create(o, &ch, err);
    if (st != KILN_OK)
        return st;
    Inference__ServerLiveRequest req = INFERENCE__SERVER_LIVE_REQUEST__INIT;
    Inference__ServerLiveResponse *resp;
    st = inference__grpcinference_service__server_live__call(ch, &req, &resp, opts, err);
    if (st == KILN_OK) {
        assert_true(resp->live);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    kiln_rpc_channel_destroy(ch);
    return st;
}

static kiln_rpc_channel_options options(char *target, size_t cap, const char *host, int port)
{
    kiln_rpc_channel_options o;
    kiln_rpc_channel_options_default(&o);
    snprintf(target, cap, "%s:%d", host, port);
    o.target = target;
    o.default_deadline_ms = 10000;
    return o;
}

static void test_option_errors(void **state)
{
    (void)state;
    kiln_rpc_channel_options o;
    kiln_rpc_channel_options_default(&o);
    assert_false(o.tls);
    assert_int_equal(o.max_message_bytes, 0);
    assert_int_equal(o.default_deadline_ms, 0);
    kiln_rpc_channel *ch = (kiln_rpc_channel *)&o;
    kiln_err err;
    assert_status(kiln_rpc_channel_create(&o, &ch, &err), KILN_INVALID_ARGUMENT, &err, "target");
    assert_null(ch);
    o.target = "127.0.0.1:1";
    o.default_deadline_ms = -5;
    assert_status(kiln_rpc_channel_create(&o, &ch, &err), KILN_INVALID_ARGUMENT, &err,
                  "default_deadline_ms: -5");
    o.default_deadline_ms = 0;
    o.tls_ca_file = "/nonexistent/ca.pem";
    assert_status(kiln_rpc_channel_create(&o, &ch, &err), KILN_INVALID_ARGUMENT, &err,
                  "cannot read TLS file /nonexistent/ca.pem (tls_ca_file)");
    char ext[128];
    snprintf(ext, sizeof(ext), "%s/server.ext", dir);
    o.tls_ca_file = ext;
    assert_status(kiln_rpc_channel_create(&o, &ch, &err), KILN_INVALID_ARGUMENT, &err,
                  "is not a PEM file");
    o.tls_ca_file = ca;
    o.tls_cert_file = client_pem;
    assert_status(kiln_rpc_channel_create(&o, &ch, &err), KILN_INVALID_ARGUMENT, &err,
                  "mutual TLS needs both tls_cert_file and tls_key_file (tls_key_file is missing)");
    assert_null(ch);
    /* gRPC connects lazily: a channel to nowhere is made, and its calls fail fast */
    kiln_rpc_channel_options_default(&o);
    o.target = "127.0.0.1:1";
    assert_status(live(&o, NULL, &err), KILN_UNAVAILABLE, &err, NULL);
}

static void test_tls(void **state)
{
    (void)state;
    char target[64];
    kiln_err err;
    kiln_rpc_channel_options o = options(target, sizeof(target), "localhost", tls.port);
    o.tls_ca_file = ca; /* TLS implied */
    assert_ok(live(&o, NULL, &err), &err);
    /* an address the certificate does not name, with the name to verify instead */
    o = options(target, sizeof(target), "127.0.0.1", tls.port);
    o.tls_ca_file = ca;
    o.tls_server_name = "localhost";
    assert_ok(live(&o, NULL, &err), &err);
    o.tls_server_name = "not-the-server.example";
    assert_status(live(&o, NULL, &err), KILN_UNAVAILABLE, &err, NULL);
    /* the system roots do not know our CA */
    o = options(target, sizeof(target), "localhost", tls.port);
    o.tls = true;
    assert_status(live(&o, NULL, &err), KILN_UNAVAILABLE, &err, NULL);
    /* plaintext to a TLS port */
    o = options(target, sizeof(target), "127.0.0.1", tls.port);
    assert_status(live(&o, NULL, &err), KILN_UNAVAILABLE, &err, NULL);
}

static void test_mutual_tls(void **state)
{
    (void)state;
    char target[64];
    kiln_err err;
    kiln_rpc_channel_options o = options(target, sizeof(target), "localhost", mtls.port);
    o.tls_ca_file = ca;
    assert_status(live(&o, NULL, &err), KILN_UNAVAILABLE, &err, NULL); /* no client cert */
    o.tls_cert_file = client_pem;
    o.tls_key_file = client_key;
    assert_ok(live(&o, NULL, &err), &err);
    /* the certificate's key given as the chain, and the other way round */
    o.tls_cert_file = client_key;
    o.tls_key_file = client_pem;
    assert_status(live(&o, NULL, &err), KILN_UNAVAILABLE, &err, NULL);
}

/* A port nothing listens on (bound, read, released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

typedef struct live_box {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    kiln_status st;
    char message[512];
} live_box;

static void on_live(void *ctx, kiln_status st, const char *message,
                    Inference__ServerLiveResponse *resp)
{
    live_box *b = ctx;
    pthread_mutex_lock(&b->mu);
    b->st = st == KILN_OK && !(resp && resp->live) ? KILN_INTERNAL : st;
    snprintf(b->message, sizeof(b->message), "%s", message);
    b->done = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_wait_for_ready(void **state)
{
    (void)state;
    char target[64];
    kiln_err err;
    int port = free_port();
    kiln_rpc_channel_options o = options(target, sizeof(target), "127.0.0.1", port);
    /* fail fast by default; wait until the deadline when asked, per call or per channel */
    assert_status(live(&o, NULL, &err), KILN_UNAVAILABLE, &err, NULL);
    kiln_rpc_call_opts wait = {.deadline_ms = 300, .wait_for_ready = 1};
    assert_status(live(&o, &wait, &err), KILN_DEADLINE_EXCEEDED, &err,
                  "deadline exceeded after 300 ms");
    o.wait_for_ready = true;
    o.default_deadline_ms = 300;
    assert_status(live(&o, NULL, &err), KILN_DEADLINE_EXCEEDED, &err, "after 300 ms");
    kiln_rpc_call_opts fast = {.wait_for_ready = -1};
    assert_status(live(&o, &fast, &err), KILN_UNAVAILABLE, &err, NULL);
    /* a waiting call is answered by a server that starts after it */
    o.default_deadline_ms = 30000;
    kiln_rpc_channel *ch;
    assert_ok(kiln_rpc_channel_create(&o, &ch, &err), &err);
    live_box b = {.st = KILN_UNKNOWN};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    Inference__ServerLiveRequest req = INFERENCE__SERVER_LIVE_REQUEST__INIT;
    assert_ok(inference__grpcinference_service__server_live__call_async(ch, &req, NULL, on_live, &b,
                                                                        &err),
              &err);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&b.mu);
    assert_false(b.done);
    pthread_mutex_unlock(&b.mu);
    char address[64];
    snprintf(address, sizeof(address), "--address=127.0.0.1:%d", port);
    kiln_test_server late;
    kiln_test_server_start(&late, (const char *[]){address, NULL});
    pthread_mutex_lock(&b.mu);
    while (!b.done)
        pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    assert_int_equal(b.st, KILN_OK);
    kiln_rpc_channel_destroy(ch);
    assert_int_equal(kiln_test_server_stop(&late), 0);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
}

static void test_message_limits(void **state)
{
    (void)state;
    char target[64];
    kiln_err err;
    kiln_rpc_channel_options o = options(target, sizeof(target), "127.0.0.1", plain.port);
    o.max_message_bytes = 64;
    kiln_rpc_channel *ch;
    assert_ok(kiln_rpc_channel_create(&o, &ch, &err), &err);
    /* sending: a request over the limit */
    Inference__ModelMetadataRequest mr = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    char name[200];
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    mr.name = name;
    Inference__ModelMetadataResponse *md;
    assert_status(inference__grpcinference_service__model_metadata__call(ch, &mr, &md, NULL, &err),
                  KILN_RESOURCE_EXHAUSTED, &err, "larger than max");
    /* receiving: an answer over the limit */
    mr.name = "simple";
    assert_status(inference__grpcinference_service__model_metadata__call(ch, &mr, &md, NULL, &err),
                  KILN_RESOURCE_EXHAUSTED, &err, "larger than max");
    /* under it */
    Grpc__Health__V1__HealthCheckRequest hr = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *hc;
    assert_ok(grpc__health__v1__health__check__call(ch, &hr, &hc, NULL, &err), &err);
    protobuf_c_message_free_unpacked(&hc->base, NULL);
    kiln_rpc_channel_destroy(ch);
}

int main(void)
{
    /* c-ares 1.18 (Debian 12) leaks the name it resolves for "localhost" (10 bytes a lookup),
     * which LeakSanitizer reports; the system resolver does not. */
    setenv("GRPC_DNS_RESOLVER", "native", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_option_errors),  cmocka_unit_test(test_tls),
        cmocka_unit_test(test_mutual_tls),     cmocka_unit_test(test_wait_for_ready),
        cmocka_unit_test(test_message_limits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
