/* Unit tests: shared-memory regions and their registry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "tensor/shm.h"
#include "tests/support.h"

#define OBJ_SIZE (64 * 1024)

typedef struct fixture {
    char key[64];
    unsigned char *client; /* the client's own mapping of the object */
    kiln_shm_registry *reg;
    uint64_t fake_now;
} fixture;

static uint64_t fake_clock(void *ctx)
{
    return ((fixture *)ctx)->fake_now;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    f->client = kiln_test_shm_create(f->key, sizeof(f->key), OBJ_SIZE);
    for (int i = 0; i < OBJ_SIZE; i++)
        f->client[i] = (unsigned char)(i * 7);
    f->fake_now = 1000 * KILN_NS_PER_S;
    kiln_shm_options o = {.clock = fake_clock, .clock_ctx = f};
    kiln_err e;
    assert_ok(kiln_shm_registry_create(&o, &f->reg, &e), &e);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kiln_shm_registry_destroy(f->reg);
    munmap(f->client, OBJ_SIZE);
    shm_unlink(f->key);
    free(f);
    return 0;
}

static void key_rules(void **state)
{
    (void)state;
    kiln_err e;
    assert_ok(kiln_shm_key_validate("/kiln_in-0.data", &e), &e);
    assert_status(kiln_shm_key_validate("noslash", &e), KILN_INVALID_ARGUMENT, &e,
                  "must start with '/'");
    assert_status(kiln_shm_key_validate(NULL, &e), KILN_INVALID_ARGUMENT, &e, "'/'");
    assert_status(kiln_shm_key_validate("/", &e), KILN_INVALID_ARGUMENT, &e, "2 to 255");
    assert_status(kiln_shm_key_validate("/a/b", &e), KILN_INVALID_ARGUMENT, &e, "position 2");
    assert_status(kiln_shm_key_validate("/a b", &e), KILN_INVALID_ARGUMENT, &e, "[A-Za-z0-9._-]");
    assert_status(kiln_shm_key_validate("/x..y", &e), KILN_INVALID_ARGUMENT, &e, "\"..\"");
    assert_status(kiln_shm_key_validate("/..", &e), KILN_INVALID_ARGUMENT, &e, "\"/.\"");
    assert_status(kiln_shm_key_validate("/.hidden", &e), KILN_INVALID_ARGUMENT, &e, "\"/.\"");
    char long_key[300];
    long_key[0] = '/';
    memset(long_key + 1, 'k', 255);
    long_key[256] = '\0';
    assert_status(kiln_shm_key_validate(long_key, &e), KILN_INVALID_ARGUMENT, &e, "got 256");
    long_key[255] = '\0';
    assert_ok(kiln_shm_key_validate(long_key, &e), &e);
}

static void name_rules(void **state)
{
    (void)state;
    kiln_err e;
    assert_ok(kiln_shm_name_validate("input_0:region", &e), &e);
    assert_status(kiln_shm_name_validate("", &e), KILN_INVALID_ARGUMENT, &e, "got 0");
    assert_status(kiln_shm_name_validate("a b", &e), KILN_INVALID_ARGUMENT, &e,
                  "region name has a space, non-printable or forbidden character at position 1");
    assert_status(kiln_shm_name_validate("tab\t", &e), KILN_INVALID_ARGUMENT, &e, "position 3");
    char n[200];
    memset(n, 'n', 129);
    n[129] = '\0';
    assert_status(kiln_shm_name_validate(n, &e), KILN_INVALID_ARGUMENT, &e, "1 to 128");
}

static void view_is_zero_copy_both_ways(void **state)
{
    fixture *f = *state;
    kiln_err e;
    /* a window at an offset that is not page-aligned */
    assert_ok(kiln_shm_register(f->reg, "in", f->key, 100, 8192, &e), &e);
    assert_int_equal(kiln_shm_mapped_bytes(f->reg), 8192);
    assert_int_equal(kiln_shm_count(f->reg), 1);
    kiln_shm_region *r;
    assert_ok(kiln_shm_acquire(f->reg, "in", &r, &e), &e);
    assert_string_equal(kiln_shm_region_name(r), "in");
    assert_int_equal(kiln_shm_region_size(r), 8192);
    kiln_tensor t;
    kiln_shape sh = {.rank = 2, .dims = {4, 16}};
    assert_ok(kiln_shm_view(r, 36, 64, KILN_DTYPE_UINT8, &sh, &t, &e), &e);
    assert_int_equal(kiln_storage_get_kind(t.storage), KILN_STORAGE_SHM);
    assert_memory_equal(t.data, f->client + 136, 64);
    /* the server writes through the view; the client sees it in its own mapping */
    memset(t.data, 0xAB, 64);
    assert_int_equal(f->client[136], 0xAB);
    assert_int_equal(f->client[199], 0xAB);
    /* the client writes; the server's view sees it */
    f->client[150] = 0x11;
    assert_int_equal(((unsigned char *)t.data)[14], 0x11);
    kiln_tensor_fini(&t);
    kiln_shm_region_release(r);
}

static void register_errors(void **state)
{
    fixture *f = *state;
    kiln_err e;
    assert_status(kiln_shm_register(f->reg, "r", f->key, 0, OBJ_SIZE + 1, &e),
                  KILN_INVALID_ARGUMENT, &e,
                  "offset 0 + byte_size 65537 = 65537 passes the object's size of 65536 bytes");
    assert_null(strstr(e.msg, f->key)); /* never echo the key */
    assert_status(kiln_shm_register(f->reg, "r", f->key, OBJ_SIZE, 1, &e), KILN_INVALID_ARGUMENT,
                  &e, "passes the object's size");
    assert_status(kiln_shm_register(f->reg, "r", f->key, UINT64_MAX, 2, &e), KILN_INVALID_ARGUMENT,
                  &e, "overflows");
    assert_status(kiln_shm_register(f->reg, "r", f->key, 0, 0, &e), KILN_INVALID_ARGUMENT, &e,
                  "byte_size must be > 0");
    assert_status(kiln_shm_register(f->reg, "r", "/kiln-test-no-such-object", 0, 8, &e),
                  KILN_INVALID_ARGUMENT, &e, "region 'r': cannot open its key");
    assert_null(strstr(e.msg, "no-such-object"));
    assert_status(kiln_shm_register(f->reg, "r", "../etc/passwd", 0, 8, &e), KILN_INVALID_ARGUMENT,
                  &e, "region 'r': key must start with '/'");
    assert_status(kiln_shm_register(f->reg, "", f->key, 0, 8, &e), KILN_INVALID_ARGUMENT, &e,
                  "region name");
    assert_ok(kiln_shm_register(f->reg, "r", f->key, 0, 8, &e), &e);
    assert_status(kiln_shm_register(f->reg, "r", f->key, 0, 8, &e), KILN_ALREADY_EXISTS, &e,
                  "region 'r' is already registered");
    assert_int_equal(kiln_shm_count(f->reg), 1);
    assert_int_equal(kiln_shm_mapped_bytes(f->reg), 8);
}

static void view_errors(void **state)
{
    fixture *f = *state;
    kiln_err e;
    assert_ok(kiln_shm_register(f->reg, "w", f->key, 0, 1024, &e), &e);
    kiln_shm_region *r;
    assert_ok(kiln_shm_acquire(f->reg, "w", &r, &e), &e);
    kiln_tensor t;
    kiln_shape sh = {.rank = 1, .dims = {256}};
    assert_status(kiln_shm_view(r, 4, 1024, KILN_DTYPE_FP32, &sh, &t, &e), KILN_INVALID_ARGUMENT,
                  &e,
                  "region 'w': offset 4 + byte size 1024 = 1028 passes the region's 1024 bytes");
    assert_status(kiln_shm_view(r, UINT64_MAX, 8, KILN_DTYPE_FP32, &sh, &t, &e),
                  KILN_INVALID_ARGUMENT, &e, "overflows");
    assert_status(kiln_shm_view(r, 0, 1000, KILN_DTYPE_FP32, &sh, &t, &e), KILN_INVALID_ARGUMENT,
                  &e, "shared memory region 'w': byte size 1000 does not match shape [256]");
    assert_null(t.storage);
    kiln_storage *s;
    assert_ok(kiln_shm_region_slice(r, 1000, 24, &s, &e), &e);
    assert_int_equal(kiln_storage_size(s), 24);
    kiln_storage_unref(s);
    kiln_shm_region_release(r);
    assert_status(kiln_shm_acquire(f->reg, "nope", &r, &e), KILN_NOT_FOUND, &e,
                  "unable to find shared memory region 'nope'");
    assert_null(r);
    assert_status(kiln_shm_unregister(f->reg, "nope", &e), KILN_NOT_FOUND, &e, "'nope'");
}

static void read_after_unregister_defers_unmap(void **state)
{
    fixture *f = *state;
    kiln_err e;
    assert_ok(kiln_shm_register(f->reg, "busy", f->key, 0, 4096, &e), &e);
    kiln_shm_region *r;
    assert_ok(kiln_shm_acquire(f->reg, "busy", &r, &e), &e);
    kiln_tensor t;
    kiln_shape sh = {.rank = 1, .dims = {4096}};
    assert_ok(kiln_shm_view(r, 0, 4096, KILN_DTYPE_UINT8, &sh, &t, &e), &e);
    kiln_shm_region_release(r); /* the view alone keeps it */
    assert_ok(kiln_shm_unregister(f->reg, "busy", &e), &e);
    /* the name is gone at once */
    assert_status(kiln_shm_acquire(f->reg, "busy", &r, &e), KILN_NOT_FOUND, &e, "'busy'");
    assert_int_equal(kiln_shm_count(f->reg), 0);
    /* the in-flight reader still reads the mapping, and it still counts */
    assert_memory_equal(t.data, f->client, 4096);
    assert_int_equal(kiln_shm_mapped_bytes(f->reg), 4096);
    /* the name may be registered again meanwhile */
    assert_ok(kiln_shm_register(f->reg, "busy", f->key, 0, 16, &e), &e);
    assert_int_equal(kiln_shm_mapped_bytes(f->reg), 4096 + 16);
    kiln_tensor_fini(&t); /* now the old mapping goes */
    assert_int_equal(kiln_shm_mapped_bytes(f->reg), 16);
}

static void quota_enforced(void **state)
{
    fixture *f = *state;
    kiln_shm_registry *reg;
    kiln_shm_options o = {.quota_bytes = 10000};
    kiln_err e;
    assert_ok(kiln_shm_registry_create(&o, &reg, &e), &e);
    assert_ok(kiln_shm_register(reg, "a", f->key, 0, 6000, &e), &e);
    assert_status(
        kiln_shm_register(reg, "b", f->key, 0, 6000, &e), KILN_RESOURCE_EXHAUSTED, &e,
        "region 'b': 6000 bytes with 6000 already mapped passes the quota of 10000 bytes");
    assert_ok(kiln_shm_register(reg, "c", f->key, 0, 4000, &e), &e);
    assert_ok(kiln_shm_unregister(reg, "a", &e), &e);
    assert_ok(kiln_shm_register(reg, "b", f->key, 0, 6000, &e), &e);
    assert_int_equal(kiln_shm_unregister_all(reg), 2);
    assert_int_equal(kiln_shm_mapped_bytes(reg), 0);
    kiln_shm_registry_destroy(reg);
}

static void ttl_expires_idle_regions_only(void **state)
{
    fixture *f = *state;
    kiln_shm_registry *reg;
    kiln_shm_options o = {.idle_ttl_ns = KILN_NS_PER_S, .clock = fake_clock, .clock_ctx = f};
    kiln_err e;
    kiln_test_log_capture();
    assert_ok(kiln_shm_registry_create(&o, &reg, &e), &e);
    assert_ok(kiln_shm_register(reg, "idle", f->key, 0, 64, &e), &e);
    assert_ok(kiln_shm_register(reg, "held", f->key, 0, 64, &e), &e);
    kiln_shm_region *held;
    assert_ok(kiln_shm_acquire(reg, "held", &held, &e), &e);
    f->fake_now += KILN_NS_PER_S / 2;
    assert_int_equal(kiln_shm_sweep(reg), 0);
    kiln_shm_region *r;
    assert_ok(kiln_shm_acquire(reg, "idle", &r, &e), &e); /* used at +0.5 s */
    kiln_shm_region_release(r);
    f->fake_now += KILN_NS_PER_S * 9 / 10; /* +1.4 s: 0.9 s since last use */
    assert_int_equal(kiln_shm_sweep(reg), 0);
    f->fake_now += KILN_NS_PER_S / 5; /* +1.6 s: 1.1 s idle */
    assert_int_equal(kiln_shm_sweep(reg), 1);
    assert_status(kiln_shm_acquire(reg, "idle", &r, &e), KILN_NOT_FOUND, &e, "'idle'");
    assert_non_null(
        strstr(kiln_test_log_read(), "shared memory region 'idle' unused for over 1000 ms"));
    /* a region in use is never expired, however long */
    f->fake_now += 100 * KILN_NS_PER_S;
    assert_int_equal(kiln_shm_sweep(reg), 0);
    kiln_shm_region_release(held);
    f->fake_now += 2 * KILN_NS_PER_S;
    assert_int_equal(kiln_shm_sweep(reg), 1);
    assert_int_equal(kiln_shm_mapped_bytes(reg), 0);
    kiln_shm_registry_destroy(reg);
    kiln_test_log_restore();
    /* without a TTL, sweep does nothing */
    assert_int_equal(kiln_shm_sweep(f->reg), 0);
}

static void status_lists_regions(void **state)
{
    fixture *f = *state;
    kiln_err e;
    assert_ok(kiln_shm_register(f->reg, "one", f->key, 8, 16, &e), &e);
    assert_ok(kiln_shm_register(f->reg, "two", f->key, 0, 32, &e), &e);
    kiln_shm_info info[4];
    size_t n;
    assert_ok(kiln_shm_status(f->reg, "", info, 4, &n, &e), &e);
    assert_int_equal(n, 2);
    assert_ok(kiln_shm_status(f->reg, "one", info, 4, &n, &e), &e);
    assert_int_equal(n, 1);
    assert_string_equal(info[0].name, "one");
    assert_string_equal(info[0].key, f->key);
    assert_int_equal(info[0].offset, 8);
    assert_int_equal(info[0].byte_size, 16);
    assert_int_equal(info[0].users, 0);
    kiln_shm_region *r;
    assert_ok(kiln_shm_acquire(f->reg, "one", &r, &e), &e);
    assert_ok(kiln_shm_status(f->reg, "one", info, 4, &n, &e), &e);
    assert_int_equal(info[0].users, 1);
    kiln_shm_region_release(r);
    assert_ok(kiln_shm_status(f->reg, NULL, NULL, 0, &n, &e), &e);
    assert_int_equal(n, 2);
    assert_status(kiln_shm_status(f->reg, "three", info, 4, &n, &e), KILN_NOT_FOUND, &e, "'three'");
}

static void forced_fallback_uses_heap(void **state)
{
    fixture *f = *state;
    kiln_shm_registry *reg;
    kiln_shm_options o = {.disable = true};
    kiln_err e;
    kiln_test_log_capture();
    assert_ok(kiln_shm_registry_create(&o, &reg, &e), &e);
    const char *log = kiln_test_log_read();
    const char *hit = strstr(log, "shared memory is disabled");
    assert_non_null(hit);
    assert_null(strstr(hit + 1, "shared memory is disabled")); /* said once */
    kiln_test_log_restore();
    assert_false(kiln_shm_registry_available(reg));
    assert_status(kiln_shm_register(reg, "r", f->key, 0, 8, &e), KILN_UNAVAILABLE, &e,
                  "unavailable on this server; send tensors inline");
    kiln_storage *s;
    assert_ok(kiln_shm_alloc_storage(reg, 4096, &s, &e), &e);
    assert_int_equal(kiln_storage_get_kind(s), KILN_STORAGE_HEAP);
    assert_null(kiln_shm_storage_key(s));
    memset(kiln_storage_data(s), 1, 4096);
    kiln_storage_unref(s);
    assert_ok(kiln_shm_alloc_storage(NULL, 16, &s, &e), &e);
    assert_int_equal(kiln_storage_get_kind(s), KILN_STORAGE_HEAP);
    kiln_storage_unref(s);
    kiln_shm_registry_destroy(reg);
    assert_true(kiln_shm_probe()); /* this host does have shared memory */
}

static void alloc_storage_is_shareable(void **state)
{
    fixture *f = *state;
    kiln_err e;
    kiln_storage *s;
    assert_ok(kiln_shm_alloc_storage(f->reg, 10000, &s, &e), &e);
    assert_int_equal(kiln_storage_get_kind(s), KILN_STORAGE_SHM);
    const char *key = kiln_shm_storage_key(s);
    assert_non_null(key);
    char saved[64];
    snprintf(saved, sizeof(saved), "%s", key);
    /* another party maps it by key and sees the server's writes */
    memset(kiln_storage_data(s), 0x5A, 10000);
    int fd = shm_open(saved, O_RDONLY, 0);
    assert_true(fd >= 0);
    unsigned char *p = mmap(NULL, 10000, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    assert_true(p != MAP_FAILED);
    assert_int_equal(p[9999], 0x5A);
    munmap(p, 10000);
    /* and it can be registered like a client region */
    assert_ok(kiln_shm_register(f->reg, "own", saved, 0, 10000, &e), &e);
    kiln_storage_unref(s);
    assert_true(shm_open(saved, O_RDONLY, 0) < 0 && errno == ENOENT); /* unlinked */
}

static void destroy_with_views_outstanding(void **state)
{
    fixture *f = *state;
    kiln_shm_registry *reg;
    kiln_err e;
    assert_ok(kiln_shm_registry_create(NULL, &reg, &e), &e);
    assert_ok(kiln_shm_register(reg, "x", f->key, 0, 256, &e), &e);
    kiln_shm_region *r;
    assert_ok(kiln_shm_acquire(reg, "x", &r, &e), &e);
    kiln_tensor t;
    kiln_shape sh = {.rank = 1, .dims = {64}};
    assert_ok(kiln_shm_view(r, 0, 256, KILN_DTYPE_FP32, &sh, &t, &e), &e);
    kiln_shm_region_release(r);
    kiln_shm_registry_destroy(reg);
    assert_memory_equal(t.data, f->client, 256);
    kiln_tensor_fini(&t); /* frees region and registry (LSan checks) */
    kiln_shm_registry_destroy(NULL);
}

static uint64_t heap_clock(void *ctx)
{
    return *(uint64_t *)ctx;
}

/* Views may outlive the registry; releasing them then must not call its clock. */
static void views_outliving_registry_never_call_its_clock(void **state)
{
    fixture *f = *state;
    kiln_err e;
    uint64_t *ctx = malloc(sizeof(*ctx));
    *ctx = 5;
    kiln_shm_options o = {.idle_ttl_ns = 1, .clock = heap_clock, .clock_ctx = ctx};
    kiln_shm_registry *reg;
    assert_ok(kiln_shm_registry_create(&o, &reg, &e), &e);
    assert_ok(kiln_shm_register(reg, "c", f->key, 0, 64, &e), &e);
    kiln_shm_region *r;
    assert_ok(kiln_shm_acquire(reg, "c", &r, &e), &e);
    kiln_tensor t;
    kiln_shape sh = {.rank = 1, .dims = {64}};
    assert_ok(kiln_shm_view(r, 0, 64, KILN_DTYPE_UINT8, &sh, &t, &e), &e);
    kiln_shm_region_release(r);
    kiln_shm_registry_destroy(reg);
    free(ctx); /* ASan would flag a later call through the clock */
    kiln_tensor_fini(&t);
}

static void allocation_failures_never_leak(void **state)
{
    fixture *f = *state;
    for (long n = 0; n < 12; n++) {
        kiln_err e;
        kiln_shm_registry *reg = NULL;
        kiln_shm_region *r = NULL;
        kiln_tensor t = {0};
        kiln_storage *s = NULL;
        DLManagedTensor *m = NULL;
        kiln_shape sh = {.rank = 1, .dims = {16}};
        kiln_alloc_fail_after(n);
        kiln_status st = kiln_shm_registry_create(NULL, &reg, &e);
        if (st == KILN_OK)
            st = kiln_shm_register(reg, "r", f->key, 0, 64, &e);
        if (st == KILN_OK)
            st = kiln_shm_acquire(reg, "r", &r, &e);
        if (st == KILN_OK)
            st = kiln_shm_view(r, 0, 64, KILN_DTYPE_FP32, &sh, &t, &e);
        if (st == KILN_OK)
            st = kiln_tensor_to_dlpack(&t, &m, &e);
        if (st == KILN_OK)
            st = kiln_shm_alloc_storage(reg, 128, &s, &e);
        kiln_alloc_fail_after(-1);
        assert_true(st == KILN_OK || st == KILN_RESOURCE_EXHAUSTED);
        if (m)
            m->deleter(m);
        kiln_storage_unref(s);
        kiln_tensor_fini(&t);
        kiln_shm_region_release(r);
        kiln_shm_registry_destroy(reg);
    }
}

/* Readers acquire and view while a writer re-registers the same name and sweeps. */
static atomic_int stop_flag;
static void *reader(void *arg)
{
    fixture *f = arg;
    while (!atomic_load(&stop_flag)) {
        kiln_err e;
        kiln_shm_region *r;
        if (kiln_shm_acquire(f->reg, "hot", &r, &e) != KILN_OK)
            continue;
        kiln_tensor t;
        kiln_shape sh = {.rank = 1, .dims = {256}};
        if (kiln_shm_view(r, 0, 256, KILN_DTYPE_UINT8, &sh, &t, &e) == KILN_OK) {
            volatile unsigned char sum = 0;
            for (int i = 0; i < 256; i++)
                sum += ((unsigned char *)t.data)[i];
            (void)sum;
            kiln_tensor_fini(&t);
        }
        kiln_shm_region_release(r);
    }
    return NULL;
}

static void concurrent_use_and_unregister(void **state)
{
    fixture *f = *state;
    kiln_err e;
    /* a TTL of 1 ns with the real clock: every sweep races the readers' releases */
    kiln_shm_registry_destroy(f->reg);
    kiln_shm_options o = {.idle_ttl_ns = 1};
    assert_ok(kiln_shm_registry_create(&o, &f->reg, &e), &e);
    atomic_store(&stop_flag, 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, reader, f);
    for (int i = 0; i < 300; i++) {
        kiln_shm_register(f->reg, "hot", f->key, (uint64_t)(i % 4) * 4096, 256, &e);
        kiln_shm_sweep(f->reg);
        kiln_shm_unregister(f->reg, "hot", &e);
    }
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(kiln_shm_mapped_bytes(f->reg), 0);
}

int main(void)
{
    kiln_log_set_level(KILN_LOG_INFO);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(key_rules),
        T(name_rules),
        T(view_is_zero_copy_both_ways),
        T(register_errors),
        T(view_errors),
        T(read_after_unregister_defers_unmap),
        T(quota_enforced),
        T(ttl_expires_idle_regions_only),
        T(status_lists_regions),
        T(forced_fallback_uses_heap),
        T(alloc_storage_is_shareable),
        T(destroy_with_views_outstanding),
        T(views_outliving_registry_never_call_its_clock),
        T(allocation_failures_never_leak),
        T(concurrent_use_and_unregister),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
