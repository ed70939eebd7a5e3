/*
 * client/shm.c: system shared memory made by the client (shm_open + ftruncate + mmap, then
 * SystemSharedMemoryRegister) and CUDA shared memory registered from a raw IPC handle.
 */
#include "client/client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "proto/grpc_service.kiln.h"

#define CSTR(s) ((char *)(uintptr_t)(s))

/* The size of a cudaIpcMemHandle_t (CUDA_IPC_HANDLE_SIZE). */
#define CUDA_IPC_HANDLE_BYTES 64

struct kiln_client_shm {
    char *region;
    char *key;
    void *addr;
    size_t size;
};

static kiln_status check_key(const char *key, kiln_err *err)
{
    if (!key || key[0] != '/' || !key[1])
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared-memory key '%s' must be '/' and a name", key ? key : "(null)");
    if (strchr(key + 1, '/'))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared-memory key '%s' has a '/' after the first", key);
    if (strlen(key) > NAME_MAX)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared-memory key is %zu bytes, over NAME_MAX (%d)", strlen(key),
                            NAME_MAX);
    return KILN_OK;
}

static kiln_status os_error(kiln_err *err, int e, const char *what, const char *key, size_t size)
{
    char buf[128];
    const char *why = strerror_r(e, buf, sizeof(buf));
    kiln_status st = e == EEXIST                 ? KILN_ALREADY_EXISTS
                     : e == EACCES || e == EPERM ? KILN_PERMISSION_DENIED
                     : e == ENOSPC || e == ENOMEM || e == EFBIG || e == EMFILE || e == ENFILE
                         ? KILN_RESOURCE_EXHAUSTED
                         : KILN_INTERNAL;
    if (e == ENOSPC)
        return kiln_err_set(err, st,
                            "%s '%s' (%zu bytes): %s (is /dev/shm large enough? containers: "
                            "--shm-size)",
                            what, key, size, why);
    return kiln_err_set(err, st, "%s '%s' (%zu bytes): %s", what, key, size, why);
}

/* Creates, sizes and maps the object. On failure nothing is left (the object is unlinked). */
static kiln_status map_new(const char *key, size_t size, void **addr, kiln_err *err)
{
    int fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return os_error(err, errno, "shm_open of key", key, size);
    kiln_status st = KILN_OK;
    if (ftruncate(fd, (off_t)size) != 0) {
        st = os_error(err, errno, "ftruncate of key", key, size);
        goto out_unlink;
    }
    /* reserve the pages now: a full /dev/shm then fails here with ENOSPC instead of SIGBUS
     * at the first write; file systems that cannot say are left to ftruncate alone */
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
        st = os_error(err, rc, "reserving key", key, size);
        goto out_unlink;
    }
    *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (*addr == MAP_FAILED) {
        *addr = NULL;
        st = os_error(err, errno, "mmap of key", key, size);
        goto out_unlink;
    }
    close(fd);
    return KILN_OK;

out_unlink:
    close(fd);
    shm_unlink(key);
    return st;
}

/* Unregistering changes server state: one attempt, never retried. */
static kiln_status unregister_system(kiln_client *c, const char *region, kiln_err *err)
{
    Inference__SystemSharedMemoryUnregisterRequest req =
        INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_REQUEST__INIT;
    req.name = CSTR(region);
    Inference__SystemSharedMemoryUnregisterResponse *resp = NULL;
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__NO_RETRY, 0);
    do
        st = inference__grpcinference_service__system_shared_memory_unregister__call(
            c->ch, &req, &resp, &r.opts, err);
    while (kiln__retry_again(&r, st, err));
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return st;
}

static void shm_free(kiln_client_shm *s)
{
    kiln_free(s->region);
    kiln_free(s->key);
    kiln_free(s);
}

int kiln_client_shm_create(kiln_client *c, const char *region, const char *key, size_t byte_size,
                           kiln_client_shm **out, kiln_client_error *err)
{
    kiln_err e = {0};
    if (!c || !out)
        return kiln__client_null(err, c ? "out" : "the client");
    *out = NULL;
    kiln_status st = kiln__need_name(region, "region name", &e);
    if (st == KILN_OK)
        st = check_key(key, &e);
    if (st == KILN_OK && (byte_size == 0 || byte_size > (size_t)INT64_MAX))
        st = kiln_err_set(&e, KILN_INVALID_ARGUMENT,
                          "region '%s': byte_size %zu is outside 1..%" PRId64, region, byte_size,
                          INT64_MAX);
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    kiln_client_shm *s = kiln_calloc(1, sizeof(*s));
    if (s) {
        s->region = kiln_strdup(region);
        s->key = kiln_strdup(key);
    }
    if (!s || !s->region || !s->key) {
        if (s)
            shm_free(s);
        return kiln__client_out(err, kiln_err_set(&e, KILN_RESOURCE_EXHAUSTED, "out of memory"),
                                &e);
    }
    s->size = byte_size;
    st = map_new(key, byte_size, &s->addr, &e);
    if (st != KILN_OK) {
        shm_free(s);
        return kiln__client_out(err, st, &e);
    }
    Inference__SystemSharedMemoryRegisterRequest req =
        INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_REQUEST__INIT;
    req.name = CSTR(region);
    req.key = CSTR(key);
    req.offset = 0;
    req.byte_size = byte_size;
    Inference__SystemSharedMemoryRegisterResponse *resp = NULL;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__NO_RETRY, 0);
    do
        st = inference__grpcinference_service__system_shared_memory_register__call(
            c->ch, &req, &resp, &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (st != KILN_OK) {
        munmap(s->addr, s->size);
        shm_unlink(s->key);
        shm_free(s);
        return kiln__client_out(err, st, &e);
    }
    *out = s;
    return kiln__client_out(err, KILN_OK, NULL);
}

void *kiln_client_shm_data(const kiln_client_shm *s)
{
    return s ? s->addr : NULL;
}

size_t kiln_client_shm_size(const kiln_client_shm *s)
{
    return s ? s->size : 0;
}

const char *kiln_client_shm_region(const kiln_client_shm *s)
{
    return s ? s->region : NULL;
}

int kiln_client_shm_destroy(kiln_client *c, kiln_client_shm *s, kiln_client_error *err)
{
    kiln_err e = {0};
    if (!s)
        return kiln__client_out(err, KILN_OK, NULL);
    kiln_status st =
        c ? unregister_system(c, s->region, &e)
          : kiln_err_set(&e, KILN_INVALID_ARGUMENT,
                         "the client is NULL: region '%s' was not unregistered", s->region);
    munmap(s->addr, s->size);
    shm_unlink(s->key);
    shm_free(s);
    return kiln__client_out(err, st, &e);
}

int kiln_client_cuda_shm_register(kiln_client *c, const char *region, const void *ipc_handle,
                                  size_t handle_size, int64_t device_id, size_t byte_size,
                                  kiln_client_error *err)
{
    kiln_err e = {0};
    if (!c)
        return kiln__client_null(err, "the client");
    kiln_status st = kiln__need_name(region, "region name", &e);
    if (st == KILN_OK && (!ipc_handle || handle_size != CUDA_IPC_HANDLE_BYTES))
        st = kiln_err_set(&e, KILN_INVALID_ARGUMENT,
                          "region '%s': the IPC handle must be the %d bytes of a "
                          "cudaIpcMemHandle_t (got %zu%s)",
                          region, CUDA_IPC_HANDLE_BYTES, handle_size, ipc_handle ? "" : ", NULL");
    if (st == KILN_OK && device_id < 0)
        st = kiln_err_set(&e, KILN_INVALID_ARGUMENT,
                          "region '%s': device_id %" PRId64 " is negative", region, device_id);
    if (st == KILN_OK && (byte_size == 0 || byte_size > (size_t)INT64_MAX))
        st = kiln_err_set(&e, KILN_INVALID_ARGUMENT,
                          "region '%s': byte_size %zu is outside 1..%" PRId64, region, byte_size,
                          INT64_MAX);
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    Inference__CudaSharedMemoryRegisterRequest req =
        INFERENCE__CUDA_SHARED_MEMORY_REGISTER_REQUEST__INIT;
    req.name = CSTR(region);
    req.raw_handle.data = (uint8_t *)(uintptr_t)ipc_handle;
    req.raw_handle.len = handle_size;
    req.device_id = device_id;
    req.byte_size = byte_size;
    Inference__CudaSharedMemoryRegisterResponse *resp = NULL;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__NO_RETRY, 0);
    do
        st = inference__grpcinference_service__cuda_shared_memory_register__call(c->ch, &req, &resp,
                                                                                 &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return kiln__client_out(err, st, &e);
}

int kiln_client_cuda_shm_unregister(kiln_client *c, const char *region, kiln_client_error *err)
{
    if (!c)
        return kiln__client_null(err, "the client");
    if (kiln__client_check_name(err, region, "region name") != 0)
        return KILN_INVALID_ARGUMENT;
    Inference__CudaSharedMemoryUnregisterRequest req =
        INFERENCE__CUDA_SHARED_MEMORY_UNREGISTER_REQUEST__INIT;
    req.name = CSTR(region);
    Inference__CudaSharedMemoryUnregisterResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__NO_RETRY, 0);
    do
        st = inference__grpcinference_service__cuda_shared_memory_unregister__call(
            c->ch, &req, &resp, &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return kiln__client_out(err, st, &e);
}
