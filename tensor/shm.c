/*
 * tensor/shm.c: shared-memory regions: key rules, mapping a window, views into it, the
 * capability probe and server-made shareable storage. The registry by name is shm_registry.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/names.h"
#include "tensor/shm_int.h"

kiln_status kiln_shm_key_validate(const char *key, kiln_err *err)
{
    if (!key || key[0] != '/')
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "key must start with '/'");
    size_t n = strlen(key);
    if (n < 2 || n > KILN_SHM_KEY_MAX)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "key must be 2 to %d characters long, got %zu", KILN_SHM_KEY_MAX, n);
    if (key[1] == '.')
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "key must not start with \"/.\"");
    for (size_t i = 1; i < n; i++) {
        char c = key[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "key has a character outside [A-Za-z0-9._-] at position %zu", i);
    }
    if (strstr(key, ".."))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "key must not contain \"..\"");
    return KILN_OK;
}

kiln_status kiln_shm_name_validate(const char *name, kiln_err *err)
{
    return kiln_name_check(name, KILN_SHM_NAME_MAX, "region name", NULL, err);
}

/* A unique key for objects this process creates. */
static void make_key(char *buf, size_t cap, const char *what)
{
    static atomic_uint_fast64_t seq;
    uint64_t n = atomic_fetch_add(&seq, 1);
    snprintf(buf, cap, "/kiln-%s-%ld-%" PRIu64 "-%" PRIx64, what, (long)getpid(), n,
             kiln_clock_now_ns() & 0xffffffff);
}

bool kiln_shm_probe(void)
{
    char key[64];
    make_key(key, sizeof(key), "probe");
    int fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return false;
    shm_unlink(key);
    bool ok = false;
    long page = sysconf(_SC_PAGESIZE);
    if (ftruncate(fd, page) == 0) {
        void *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            ((volatile char *)p)[0] = 1;
            munmap(p, (size_t)page);
            ok = true;
        }
    }
    close(fd);
    return ok;
}

kiln_status kiln__shm_map(kiln_shm_region *r, kiln_err *err)
{
    int fd = shm_open(r->key, O_RDWR, 0);
    if (fd < 0) {
        int e = errno;
        return kiln_err_set(err, e == EACCES ? KILN_PERMISSION_DENIED : KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': cannot open its key: %s", r->name,
                            strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': key is not a shared memory object",
                            r->name);
    }
    uint64_t end = r->offset + r->byte_size; /* overflow already checked by the caller */
    if ((uint64_t)st.st_size < end) {
        close(fd);
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': offset %" PRIu64 " + byte_size %" PRIu64
                            " = %" PRIu64 " passes the object's size of %" PRIu64 " bytes",
                            r->name, r->offset, r->byte_size, end, (uint64_t)st.st_size);
    }
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t base_off = r->offset - r->offset % page;
    uint64_t len = end - base_off;
    if (len > SIZE_MAX) {
        close(fd);
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': window of %" PRIu64
                            " bytes cannot be mapped",
                            r->name, len);
    }
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base_off);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return kiln_err_set(err, e == ENOMEM ? KILN_RESOURCE_EXHAUSTED : KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': cannot map %" PRIu64 " bytes: %s", r->name,
                            len, strerror(e));
    r->map_base = p;
    r->map_len = (size_t)len;
    r->data = (unsigned char *)p + (r->offset - base_off);
    return KILN_OK;
}

void kiln__shm_unmap(kiln_shm_region *r)
{
    if (r->cuda_device >= 0)
        kiln__cuda_ipc_close(r->cuda_device, r->data);
    else if (r->map_base)
        munmap(r->map_base, r->map_len);
    r->map_base = NULL;
    r->data = NULL;
}

const char *kiln_shm_region_name(const kiln_shm_region *region)
{
    return region->name;
}

uint64_t kiln_shm_region_size(const kiln_shm_region *region)
{
    return region->byte_size;
}

static void slice_release(void *ctx, void *data)
{
    (void)data;
    kiln__shm_region_unref(ctx);
}

kiln_status kiln_shm_region_slice(kiln_shm_region *region, uint64_t offset, uint64_t size,
                                  kiln_storage **out, kiln_err *err)
{
    *out = NULL;
    uint64_t end;
    if (__builtin_add_overflow(offset, size, &end))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': offset %" PRIu64 " + byte size %" PRIu64
                            " overflows",
                            region->name, offset, size);
    if (end > region->byte_size)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': offset %" PRIu64 " + byte size %" PRIu64
                            " = %" PRIu64 " passes the region's %" PRIu64 " bytes",
                            region->name, offset, size, end, region->byte_size);
    kiln_ref_inc(&region->ref);
    kiln_device dev = region->cuda_device >= 0
                          ? (kiln_device){KILN_DEVICE_CUDA, region->cuda_device}
                          : (kiln_device){KILN_DEVICE_CPU, 0};
    kiln_status st = kiln__storage_new(KILN_STORAGE_SHM, dev, region->data + offset, (size_t)size,
                                       slice_release, region, out, err);
    if (st != KILN_OK)
        kiln__shm_region_unref(region);
    return st;
}

kiln_status kiln_shm_view(kiln_shm_region *region, uint64_t offset, uint64_t size, kiln_dtype dtype,
                          const kiln_shape *shape, kiln_tensor *out, kiln_err *err)
{
    memset(out, 0, sizeof(*out));
    kiln_storage *s;
    kiln_status st = kiln_shm_region_slice(region, offset, size, &s, err);
    if (st != KILN_OK)
        return st;
    st = kiln_tensor_view(s, 0, dtype, shape, (size_t)size, out, err);
    kiln_storage_unref(s); /* the view holds the only reference now (or none on failure) */
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, "shared memory region '%s'", region->name);
    return KILN_OK;
}

/* ---------------------------------------------------------------- server-made storage */

typedef struct owned_obj {
    char key[64];
    void *base;
    size_t len;
} owned_obj;

static void owned_release(void *ctx, void *data)
{
    (void)data;
    owned_obj *o = ctx;
    munmap(o->base, o->len);
    shm_unlink(o->key);
    kiln_free(o);
}

kiln_status kiln_shm_alloc_storage(kiln_shm_registry *reg, size_t size, kiln_storage **out,
                                   kiln_err *err)
{
    *out = NULL;
    if (!reg || !kiln_shm_registry_available(reg))
        return kiln_storage_create_heap(size, out, err);
    owned_obj *o = kiln_calloc(1, sizeof(*o));
    if (!o)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a shared buffer");
    make_key(o->key, sizeof(o->key), "buf");
    o->len = size ? size : 1;
    int fd = shm_open(o->key, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        kiln_free(o);
        return kiln_storage_create_heap(size, out, err);
    }
    kiln_status st = KILN_OK;
    /*
     * ftruncate alone reserves nothing on tmpfs: a full /dev/shm would then kill the process
     * with SIGBUS on first write. posix_fallocate reserves the pages now or fails cleanly.
     */
    int fe = posix_fallocate(fd, 0, (off_t)o->len);
    if (fe != 0) {
        close(fd);
        shm_unlink(o->key);
        kiln_free(o);
        KILN_LOGD(NULL, "shared buffer of %zu bytes not reserved (%s); using heap", size,
                  strerror(fe));
        return kiln_storage_create_heap(size, out, err);
    } else {
        o->base = mmap(NULL, o->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (o->base == MAP_FAILED)
            st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                              "cannot map a shared buffer of %zu bytes: %s", size, strerror(errno));
    }
    close(fd);
    if (st == KILN_OK)
        st = kiln__storage_new(KILN_STORAGE_SHM, (kiln_device){KILN_DEVICE_CPU, 0}, o->base, size,
                               owned_release, o, out, err);
    if (st != KILN_OK) {
        if (o->base && o->base != MAP_FAILED)
            munmap(o->base, o->len);
        shm_unlink(o->key);
        kiln_free(o);
    }
    return st;
}

const char *kiln_shm_storage_key(const kiln_storage *s)
{
    if (!s || s->release != owned_release)
        return NULL;
    return ((const owned_obj *)s->release_ctx)->key;
}
