/*
 * tests/unit/client/test_generated.c: protoc-gen-kiln-c's output. The method tables of our
 * services against protoc-c's descriptors (every method, path, streaming flags, request and
 * response types); the fixture tests/fixtures/proto/echo.proto (every streaming shape, a
 * nested package, nested and snake_case message names), whose generated stubs this binary
 * compiles and links; and the plugin run through protoc: its files, a file without services,
 * and its errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "grpc/health/v1/health.kiln.h"
#include "proto/grpc_service.kiln.h"
#include "tests/fixtures/proto/echo.kiln.h"
#include "tests/support.h"

/* One service's table against its protoc-c descriptor; `streaming` names the methods that
 * stream, as "Name:cs" (client), "Name:ss" (server) or "Name:bidi"; all others are unary. */
static void check_service(const kiln_proto_service *svc, const ProtobufCServiceDescriptor *desc,
                          const char *const *streaming)
{
    assert_ptr_equal(svc->descriptor, desc);
    assert_string_equal(svc->name, desc->name);
    assert_int_equal(svc->n_methods, desc->n_methods);
    size_t n_streaming = 0;
    for (size_t i = 0; i < svc->n_methods; i++) {
        const kiln_proto_method *m = &svc->methods[i];
        char path[300];
        snprintf(path, sizeof(path), "/%s/%s", desc->name, desc->methods[i].name);
        assert_string_equal(m->name, desc->methods[i].name);
        assert_string_equal(m->path, path);
        assert_ptr_equal(m->request, desc->methods[i].input);
        assert_ptr_equal(m->response, desc->methods[i].output);
        bool cs = false, ss = false;
        for (size_t k = 0; streaming[k]; k++) {
            size_t len = strlen(m->name);
            if (strncmp(streaming[k], m->name, len) != 0 || streaming[k][len] != ':')
                continue;
            const char *kind = streaming[k] + len + 1;
            cs = !strcmp(kind, "cs") || !strcmp(kind, "bidi");
            ss = !strcmp(kind, "ss") || !strcmp(kind, "bidi");
            n_streaming++;
        }
        if (m->client_streaming != cs || m->server_streaming != ss)
            fail_msg("%s: client_streaming %d server_streaming %d, expected %d %d", m->path,
                     m->client_streaming, m->server_streaming, cs, ss);
    }
    size_t n_listed = 0;
    while (streaming[n_listed])
        n_listed++;
    assert_int_equal(n_streaming, n_listed); /* every listed method exists */
}

static void test_kserve_and_health_tables(void **state)
{
    (void)state;
    check_service(&inference__grpcinference_service__kiln_service,
                  &inference__grpcinference_service__descriptor,
                  (const char *[]){"ModelStreamInfer:bidi", NULL});
    assert_int_equal(inference__grpcinference_service__kiln_service.n_methods, 20);
    check_service(&grpc__health__v1__health__kiln_service, &grpc__health__v1__health__descriptor,
                  (const char *[]){"Watch:ss", NULL});
    const kiln_proto_method *infer = &inference__grpcinference_service__kiln_methods[5];
    assert_string_equal(infer->path, "/inference.GRPCInferenceService/ModelInfer");
    assert_ptr_equal(infer->request, &inference__model_infer_request__descriptor);
    assert_ptr_equal(infer->response, &inference__model_infer_response__descriptor);
    assert_string_equal(grpc__health__v1__health__kiln_methods[1].path,
                        "/grpc.health.v1.Health/Watch");
}

static void test_fixture_tables(void **state)
{
    (void)state;
    check_service(&kiln__fixture__v1alpha__echo__kiln_service,
                  &kiln__fixture__v1alpha__echo__descriptor,
                  (const char *[]){"Repeat:ss", "Collect:cs", "Chat:bidi", NULL});
    const kiln_proto_method *m = kiln__fixture__v1alpha__echo__kiln_methods;
    assert_string_equal(m[0].path, "/kiln.fixture.v1alpha.Echo/Say");
    assert_string_equal(m[2].path, "/kiln.fixture.v1alpha.Echo/Collect");
    assert_ptr_equal(m[2].request, &kiln__fixture__v1alpha__outer__inner_note__descriptor);
    assert_ptr_equal(m[2].response, &kiln__fixture__v1alpha__echo_stats__descriptor);
    check_service(&kiln__fixture__v1alpha__httpecho__kiln_service,
                  &kiln__fixture__v1alpha__httpecho__descriptor, (const char *[]){NULL});
    assert_string_equal(kiln__fixture__v1alpha__httpecho__kiln_methods[0].path,
                        "/kiln.fixture.v1alpha.HTTPEcho/GetURL");
    check_service(&kiln__fixture__v1alpha__nothing__kiln_service,
                  &kiln__fixture__v1alpha__nothing__descriptor, (const char *[]){NULL});
    assert_null(kiln__fixture__v1alpha__nothing__kiln_service.methods);
}

/* The stubs exist with the documented signatures (a mismatch does not compile). */
static void test_fixture_stub_signatures(void **state)
{
    (void)state;
    typedef Kiln__Fixture__V1alpha__EchoRequest req_t;
    typedef Kiln__Fixture__V1alpha__EchoReply reply_t;
    kiln_status (*call)(kiln_rpc_channel *, const req_t *, reply_t **, const kiln_rpc_call_opts *,
                        kiln_err *) = kiln__fixture__v1alpha__echo__say__call;
    kiln_status (*call_async)(kiln_rpc_channel *, const req_t *, const kiln_rpc_call_opts *,
                              kiln__fixture__v1alpha__echo__say__done_fn, void *, kiln_err *) =
        kiln__fixture__v1alpha__echo__say__call_async;
    /* server streaming: open with the request, recv, close */
    kiln_status (*ss_open)(kiln_rpc_channel *, const req_t *, const kiln_rpc_call_opts *,
                           kiln__fixture__v1alpha__echo__repeat__stream **, kiln_err *) =
        kiln__fixture__v1alpha__echo__repeat__open;
    kiln_status (*ss_recv)(kiln__fixture__v1alpha__echo__repeat__stream *, reply_t **, kiln_err *) =
        kiln__fixture__v1alpha__echo__repeat__recv;
    /* client streaming: open, send, close_send, finish, close */
    kiln_status (*cs_send)(kiln__fixture__v1alpha__echo__collect__stream *,
                           const Kiln__Fixture__V1alpha__Outer__InnerNote *, kiln_err *) =
        kiln__fixture__v1alpha__echo__collect__send;
    kiln_status (*cs_finish)(kiln__fixture__v1alpha__echo__collect__stream *,
                             Kiln__Fixture__V1alpha__EchoStats **, kiln_err *) =
        kiln__fixture__v1alpha__echo__collect__finish;
    kiln_status (*cs_close_send)(kiln__fixture__v1alpha__echo__collect__stream *, kiln_err *) =
        kiln__fixture__v1alpha__echo__collect__close_send;
    /* bidi: open without a request, send, close_send, recv, close */
    kiln_status (*bidi_open)(kiln_rpc_channel *, const kiln_rpc_call_opts *,
                             kiln__fixture__v1alpha__echo__chat__stream **, kiln_err *) =
        kiln__fixture__v1alpha__echo__chat__open;
    kiln_status (*bidi_recv)(kiln__fixture__v1alpha__echo__chat__stream *, reply_t **, kiln_err *) =
        kiln__fixture__v1alpha__echo__chat__recv;
    void (*bidi_close)(kiln__fixture__v1alpha__echo__chat__stream *) =
        kiln__fixture__v1alpha__echo__chat__close;
    kiln_status (*nested)(kiln_rpc_channel *, const Kiln__Fixture__V1alpha__Outer *,
                          Kiln__Fixture__V1alpha__Outer__InnerNote **, const kiln_rpc_call_opts *,
                          kiln_err *) = kiln__fixture__v1alpha__httpecho__get_url__call;
    void *all[] = {(void *)call,      (void *)call_async, (void *)ss_open,       (void *)ss_recv,
                   (void *)cs_send,   (void *)cs_finish,  (void *)cs_close_send, (void *)bidi_open,
                   (void *)bidi_recv, (void *)bidi_close, (void *)nested};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        assert_non_null(all[i]);
}

/* ---------------------------------------------------------------- the plugin through protoc */

static char plugin[512], plugin_flag[600], src[512], out[64], log_path[128];

static int plugin_setup(void **state)
{
    (void)state;
    snprintf(plugin, sizeof(plugin), "%s/tools/protoc-gen-kiln-c", kiln_test_build_dir());
    snprintf(plugin_flag, sizeof(plugin_flag), "--plugin=protoc-gen-kiln-c=%s", plugin);
    snprintf(src, sizeof(src), "%s", KILN_TEST_SOURCE_DIR);
    snprintf(out, sizeof(out), "/tmp/kiln-test-gen-XXXXXX");
    assert_non_null(mkdtemp(out));
    snprintf(log_path, sizeof(log_path), "%s/log", out);
    return 0;
}

static int plugin_teardown(void **state)
{
    (void)state;
    const char *argv[] = {"rm", "-rf", out, NULL};
    kiln_test_run(argv, NULL, NULL);
    return 0;
}

/* protoc with the plugin on `proto` (relative to -I include) into dir; its exit code. */
static int protoc(const char *include, const char *proto, const char *param, const char *dir)
{
    char inc[600], outflag[700];
    snprintf(inc, sizeof(inc), "-I%s", include);
    snprintf(outflag, sizeof(outflag), "--kiln-c_out=%s%s%s", param ? param : "", param ? ":" : "",
             dir);
    truncate(log_path, 0);
    const char *argv[] = {"protoc", inc, plugin_flag, outflag, proto, NULL};
    return kiln_test_run(argv, NULL, log_path);
}

static bool have_tools(void)
{
    char proto[700];
    snprintf(proto, sizeof(proto), "%s/tests/fixtures/proto/echo.proto", src);
    return access(plugin, X_OK) == 0 && access(proto, R_OK) == 0 &&
           access("/usr/bin/protoc", X_OK) == 0;
}

static char *read_out(const char *dir, const char *name)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return kiln_test_read_file(path);
}

static void test_plugin_files(void **state)
{
    (void)state;
    if (!have_tools())
        skip(); /* a bundle without the sources or protoc */
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/fixture", out);
    mkdir(dir, 0700);
    assert_int_equal(protoc(src, "tests/fixtures/proto/echo.proto", NULL, dir), 0);
    const char *names[] = {"echo.kiln-methods.h", "echo.kiln-methods.c", "echo.kiln.h",
                           "echo.kiln.c"};
    char *text[4];
    for (int i = 0; i < 4; i++) {
        char name[200];
        snprintf(name, sizeof(name), "tests/fixtures/proto/%s", names[i]);
        text[i] = read_out(dir, name);
        if (!text[i])
            fail_msg("protoc-gen-kiln-c did not write %s", name);
        /* the same as the build's own copy: the output depends on the input only */
        char *built = read_out(KILN_TEST_BUILD_DIR "/gen", name);
        if (built) {
            assert_string_equal(text[i], built);
            free(built);
        }
    }
    assert_non_null(strstr(text[0], "#include \"tests/fixtures/proto/echo.pb-c.h\""));
    assert_non_null(strstr(text[1], "\"/kiln.fixture.v1alpha.HTTPEcho/GetURL\""));
    const char *present[] = {
        "echo__say__call(",         "echo__say__call_async(",
        "echo__say__done_fn)(",     "echo__repeat__open(",
        "echo__repeat__recv(",      "echo__repeat__close(",
        "echo__collect__send(",     "echo__collect__close_send(",
        "echo__collect__finish(",   "echo__chat__send(",
        "echo__chat__recv(",        "echo__chat__close_send(",
        "httpecho__get_url__call(", "const Kiln__Fixture__V1alpha__Outer *req"};
    for (size_t i = 0; i < sizeof(present) / sizeof(present[0]); i++)
        if (!strstr(text[2], present[i]))
            fail_msg("echo.kiln.h lacks %s", present[i]);
    const char *absent[] = {"echo__repeat__send(",  "echo__repeat__finish(", "echo__say__open(",
                            "echo__collect__recv(", "echo__chat__finish(",   "nothing__"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        if (strstr(text[2], absent[i]))
            fail_msg("echo.kiln.h has %s", absent[i]);
    for (int i = 0; i < 4; i++)
        free(text[i]);
}

static void test_plugin_no_services(void **state)
{
    (void)state;
    if (!have_tools())
        skip();
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/none", out);
    mkdir(dir, 0700);
    assert_int_equal(protoc(src, "proto/model_config.proto", NULL, dir), 0);
    assert_int_not_equal(access(dir, F_OK), -1);
    char path[300];
    snprintf(path, sizeof(path), "%s/proto", dir);
    assert_int_equal(access(path, F_OK), -1); /* nothing written */
}

static void test_plugin_errors(void **state)
{
    (void)state;
    if (!have_tools())
        skip();
    /* a parameter */
    assert_int_not_equal(protoc(src, "tests/fixtures/proto/echo.proto", "lite", out), 0);
    char *log = kiln_test_read_file(log_path);
    assert_non_null(strstr(log, "protoc-gen-kiln-c takes no parameter (got 'lite')"));
    free(log);
    /* names longer than the plugin's C names may be */
    struct {
        const char *file, *want;
    } longs[] = {
        {"long_service.proto", "long_service.proto: service name 'SSSS"},
        {"long_message.proto", "long_message.proto: p.S/A: '.p.SSSS"},
    };
    char name[701];
    memset(name, 'S', 700);
    name[700] = '\0';
    for (size_t i = 0; i < 2; i++) {
        char proto[4096], body[3000], path[300];
        if (i == 0)
            snprintf(body, sizeof(body), "message M {} service %s { rpc A(M) returns (M); }", name);
        else
            snprintf(body, sizeof(body), "message %s {} service S { rpc A(%s) returns (%s); }",
                     name, name, name);
        snprintf(proto, sizeof(proto), "syntax = \"proto3\"; package p; %s", body);
        snprintf(path, sizeof(path), "%s/%s", out, longs[i].file);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(proto, f);
        fclose(f);
        assert_int_not_equal(protoc(out, longs[i].file, NULL, out), 0);
        log = kiln_test_read_file(log_path);
        if (!strstr(log, longs[i].want))
            fail_msg("protoc's output lacks \"%s\":\n%s", longs[i].want, log);
        assert_non_null(
            strstr(log, i ? "makes a C name longer than 511 characters" : "is too long"));
        free(log);
    }
    /* not a CodeGeneratorRequest on stdin: exit 1 and say so */
    char path[300];
    snprintf(path, sizeof(path), "%s/garbage", out);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("\xff\xff\xff\xff not protobuf", f);
    fclose(f);
    truncate(log_path, 0);
    const char *argv[] = {plugin, NULL};
    assert_int_equal(kiln_test_run(argv, path, log_path), 1);
    log = kiln_test_read_file(log_path);
    assert_non_null(strstr(log, "stdin is not a CodeGeneratorRequest"));
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kserve_and_health_tables), cmocka_unit_test(test_fixture_tables),
        cmocka_unit_test(test_fixture_stub_signatures),  cmocka_unit_test(test_plugin_files),
        cmocka_unit_test(test_plugin_no_services),       cmocka_unit_test(test_plugin_errors),
    };
    return cmocka_run_group_tests(tests, plugin_setup, plugin_teardown);
}
