/* tests/unit/client/test_shm.c: system shared memory made by the client; CUDA registration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "proto/grpc_service.pb-c.h"
#include "tests/unit/client/fake.h"

static char key[64];

static bool key_exists(void)
{
    char path[96];
    snprintf(path, sizeof(path), "/dev/shm%s", key);
    return access(path, F_OK) == 0;
}

static int setup(void **state)
{
    (void)state;
    snprintf(key, sizeof(key), "/kiln-ut-client-%d", (int)getpid());
    shm_unlink(key);
    return 0;
}

static void test_argument_errors(void **state)
{
    (void)state;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_shm *s = (kiln_client_shm *)1;
#define BAD(call, needle)                                                                          \
    do {                                                                                           \
        s = (kiln_client_shm *)1;                                                                  \
        assert_client_err((call), e, KILN_INVALID_ARGUMENT, needle);                               \
        assert_true(s == NULL || s == (kiln_client_shm *)1);                                       \
    } while (0)
    BAD(kiln_client_shm_create(NULL, "r", key, 64, &s, &e), "the client is NULL");
    BAD(kiln_client_shm_create(c, "r", key, 64, NULL, &e), "out is NULL");
    BAD(kiln_client_shm_create(c, "", key, 64, &s, &e), "region name is empty");
    assert_null(s);
    BAD(kiln_client_shm_create(c, "r", NULL, 64, &s, &e),
        "shared-memory key '(null)' must be '/' and a name");
    BAD(kiln_client_shm_create(c, "r", "name", 64, &s, &e), "key 'name' must be '/' and a name");
    BAD(kiln_client_shm_create(c, "r", "/", 64, &s, &e), "must be '/' and a name");
    BAD(kiln_client_shm_create(c, "r", "/a/b", 64, &s, &e), "key '/a/b' has a '/' after the first");
    char long_key[300] = "/";
    memset(long_key + 1, 'k', 280);
    BAD(kiln_client_shm_create(c, "r", long_key, 64, &s, &e), "over NAME_MAX (255)");
    BAD(kiln_client_shm_create(c, "r", key, 0, &s, &e), "region 'r': byte_size 0 is outside 1..");
    const unsigned char h[64] = {1};
    BAD(kiln_client_cuda_shm_register(NULL, "g", h, 64, 0, 64, &e), "the client is NULL");
    BAD(kiln_client_cuda_shm_register(c, "", h, 64, 0, 64, &e), "region name is empty");
    BAD(kiln_client_cuda_shm_register(c, "g", h, 63, 0, 64, &e),
        "region 'g': the IPC handle must be the 64 bytes of a cudaIpcMemHandle_t (got 63)");
    BAD(kiln_client_cuda_shm_register(c, "g", NULL, 64, 0, 64, &e), "(got 64, NULL)");
    BAD(kiln_client_cuda_shm_register(c, "g", h, 64, -1, 64, &e), "device_id -1 is negative");
    BAD(kiln_client_cuda_shm_register(c, "g", h, 64, 0, 0, &e), "byte_size 0 is outside");
    BAD(kiln_client_cuda_shm_unregister(c, NULL, &e), "region name is empty");
    BAD(kiln_client_cuda_shm_unregister(NULL, "g", &e), "the client is NULL");
#undef BAD
    assert_int_equal(f.calls, 0);
    assert_false(key_exists());
    fake_client_destroy(c, &f);
}

static void test_create_use_destroy(void **state)
{
    (void)state;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_shm *s = NULL;
    assert_int_equal(kiln_client_shm_create(c, "io", key, 8192, &s, &e), 0);
    assert_non_null(s);
    assert_true(key_exists());
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/SystemSharedMemoryRegister");
    Inference__SystemSharedMemoryRegisterRequest *q =
        (Inference__SystemSharedMemoryRegisterRequest *)f.last_req;
    assert_string_equal(q->name, "io");
    assert_string_equal(q->key, key);
    assert_int_equal(q->offset, 0);
    assert_int_equal(q->byte_size, 8192);
    assert_string_equal(kiln_client_shm_region(s), "io");
    assert_int_equal(kiln_client_shm_size(s), 8192);
    unsigned char *p = kiln_client_shm_data(s);
    assert_non_null(p);
    p[0] = 7;
    p[8191] = 9;
    /* another mapping of the key sees the bytes (it is what the server maps) */
    int fd = shm_open(key, O_RDONLY, 0);
    assert_true(fd >= 0);
    unsigned char *q2 = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    assert_true(q2 != MAP_FAILED);
    assert_int_equal(q2[0], 7);
    assert_int_equal(q2[8191], 9);
    munmap(q2, 8192);
    /* a second create of the same key is refused and leaves the first alone */
    kiln_client_shm *s2 = (kiln_client_shm *)1;
    assert_client_err(kiln_client_shm_create(c, "io2", key, 64, &s2, &e), e, KILN_ALREADY_EXISTS,
                      "shm_open of key");
    assert_null(s2);
    assert_true(key_exists());
    assert_int_equal(kiln_client_shm_destroy(c, s, &e), 0);
    assert_string_equal(f.last_path,
                        "/inference.GRPCInferenceService/SystemSharedMemoryUnregister");
    assert_string_equal(((Inference__SystemSharedMemoryUnregisterRequest *)f.last_req)->name, "io");
    assert_false(key_exists());
    assert_int_equal(kiln_client_shm_destroy(c, NULL, &e), 0);
    assert_null(kiln_client_shm_data(NULL));
    assert_int_equal(kiln_client_shm_size(NULL), 0);
    assert_null(kiln_client_shm_region(NULL));
    fake_client_destroy(c, &f);
}

static void test_nothing_left_behind_on_failure(void **state)
{
    (void)state;
    fake f = {.fail_first = 100,
              .fail_code = KILN_UNAVAILABLE,
              .fail_msg = "server refuses client shared memory"};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_shm *s = (kiln_client_shm *)1;
    assert_client_err(kiln_client_shm_create(c, "io", key, 4096, &s, &e), e, KILN_UNAVAILABLE,
                      "server refuses client shared memory");
    assert_null(s);
    assert_int_equal(f.calls, 1); /* registering is not retried */
    assert_false(key_exists());
    fake_client_destroy(c, &f);

    fake ok = {0};
    c = fake_client(&ok, NULL);
    for (long n = 0; n < 3; n++) {
        kiln_alloc_fail_after(n);
        int rc = kiln_client_shm_create(c, "io", key, 4096, &s, &e);
        kiln_alloc_fail_after(-1);
        assert_client_err(rc, e, KILN_RESOURCE_EXHAUSTED, "out of memory");
        assert_null(s);
        assert_false(key_exists());
    }
    assert_int_equal(ok.calls, 0);
    fake_client_destroy(c, &ok);
}

static void test_destroy_frees_even_when_unregister_fails(void **state)
{
    (void)state;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_shm *s = NULL;
    assert_int_equal(kiln_client_shm_create(c, "io", key, 4096, &s, &e), 0);
    f.fail_first = 1000;
    f.fail_code = KILN_NOT_FOUND;
    f.fail_msg = "no region 'io'";
    assert_client_err(kiln_client_shm_destroy(c, s, &e), e, KILN_NOT_FOUND, "no region 'io'");
    assert_false(key_exists()); /* unmapped, unlinked and freed all the same (ASan checks) */
    f.fail_first = 0;
    s = NULL;
    assert_int_equal(kiln_client_shm_create(c, "io", key, 4096, &s, &e), 0);
    assert_client_err(kiln_client_shm_destroy(NULL, s, &e), e, KILN_INVALID_ARGUMENT,
                      "the client is NULL: region 'io' was not unregistered");
    assert_false(key_exists());
    fake_client_destroy(c, &f);
}

static void test_cuda_register(void **state)
{
    (void)state;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    unsigned char h[64];
    for (int i = 0; i < 64; i++)
        h[i] = (unsigned char)(i * 3);
    assert_int_equal(kiln_client_cuda_shm_register(c, "gpu0", h, sizeof(h), 1, 1 << 20, &e), 0);
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/CudaSharedMemoryRegister");
    Inference__CudaSharedMemoryRegisterRequest *q =
        (Inference__CudaSharedMemoryRegisterRequest *)f.last_req;
    assert_string_equal(q->name, "gpu0");
    assert_int_equal(q->raw_handle.len, 64);
    assert_memory_equal(q->raw_handle.data, h, 64);
    assert_int_equal(q->device_id, 1);
    assert_int_equal(q->byte_size, 1 << 20);
    assert_int_equal(kiln_client_cuda_shm_unregister(c, "gpu0", &e), 0);
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/CudaSharedMemoryUnregister");
    assert_string_equal(((Inference__CudaSharedMemoryUnregisterRequest *)f.last_req)->name, "gpu0");
    fake_client_destroy(c, &f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_argument_errors, setup),
        cmocka_unit_test_setup(test_create_use_destroy, setup),
        cmocka_unit_test_setup(test_nothing_left_behind_on_failure, setup),
        cmocka_unit_test_setup(test_destroy_frees_even_when_unregister_fails, setup),
        cmocka_unit_test_setup(test_cuda_register, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
