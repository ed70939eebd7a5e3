/* tensor/shm_registry.c: regions by name, with a byte quota and an idle TTL. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "tensor/shm_int.h"

struct kiln_shm_registry {
    kiln_refcount ref; /* the creator's + one per region still mapped */
    pthread_mutex_t mu;
    kiln_shm_region *head; /* registered regions; guarded by mu */
    size_t count;          /* guarded by mu */
    atomic_uint_fast64_t mapped;
    uint64_t quota;
    uint64_t ttl;
    kiln_clock_fn clock;
    void *clock_ctx;
    bool available;
};

static uint64_t now(const kiln_shm_registry *reg)
{
    return reg->clock ? reg->clock(reg->clock_ctx) : kiln_clock_now_ns();
}

static void registry_unref(kiln_shm_registry *reg)
{
    if (!kiln_ref_dec(&reg->ref))
        return;
    pthread_mutex_destroy(&reg->mu);
    kiln_free(reg);
}

kiln_status kiln_shm_registry_create(const kiln_shm_options *opts, kiln_shm_registry **out,
                                     kiln_err *err)
{
    *out = NULL;
    kiln_shm_registry *reg = kiln_calloc(1, sizeof(*reg));
    if (!reg)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "out of memory for a shared memory registry");
    kiln_ref_init(&reg->ref);
    pthread_mutex_init(&reg->mu, NULL);
    atomic_init(&reg->mapped, 0);
    kiln_shm_options o = {0};
    if (opts)
        o = *opts;
    reg->quota = o.quota_bytes;
    reg->ttl = o.idle_ttl_ns;
    reg->clock = o.clock;
    reg->clock_ctx = o.clock_ctx;
    if (o.disable) {
        reg->available = false;
        KILN_LOGW(NULL, "system shared memory is disabled; tensors use heap buffers");
    } else {
        reg->available = kiln_shm_probe();
        if (!reg->available)
            KILN_LOGW(NULL, "POSIX shared memory is unavailable on this host (shm_open or mmap "
                            "failed; is /dev/shm mounted?); tensors use heap buffers");
    }
    *out = reg;
    return KILN_OK;
}

void kiln_shm_registry_destroy(kiln_shm_registry *reg)
{
    if (!reg)
        return;
    kiln_shm_unregister_all(reg);
    registry_unref(reg);
}

bool kiln_shm_registry_available(const kiln_shm_registry *reg)
{
    return reg->available;
}

void kiln__shm_region_unref(kiln_shm_region *r)
{
    /*
     * Stamp before the decrement: once it is done another thread may free r. Only a
     * registered region is stamped, so views that outlive the registry never call its clock.
     */
    if (atomic_load_explicit(&r->registered, memory_order_acquire))
        atomic_store_explicit(&r->last_used, now(r->reg), memory_order_relaxed);
    if (!kiln_ref_dec(&r->ref))
        return;
    kiln_shm_registry *reg = r->reg;
    kiln__shm_unmap(r);
    if (r->cuda_device < 0)
        atomic_fetch_sub(&reg->mapped, r->byte_size);
    kiln_free(r);
    registry_unref(reg);
}

/* REQUIRES: reg->mu held. */
static kiln_shm_region *find_locked(kiln_shm_registry *reg, const char *name,
                                    kiln_shm_region ***link)
{
    kiln_shm_region **pp = &reg->head;
    for (; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            if (link)
                *link = pp;
            return *pp;
        }
    }
    return NULL;
}

kiln_status kiln_shm_register(kiln_shm_registry *reg, const char *name, const char *key,
                              uint64_t offset, uint64_t byte_size, kiln_err *err)
{
    kiln_status st = kiln_shm_name_validate(name, err);
    if (st != KILN_OK)
        return st;
    st = kiln_shm_key_validate(key, err);
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, "shared memory region '%s'", name);
    if (!reg->available)
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "shared memory region '%s': system shared memory is unavailable on "
                            "this server; send tensors inline",
                            name);
    uint64_t end;
    if (byte_size == 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': byte_size must be > 0", name);
    if (__builtin_add_overflow(offset, byte_size, &end) || end > (uint64_t)INT64_MAX)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shared memory region '%s': offset %" PRIu64 " + byte_size %" PRIu64
                            " overflows",
                            name, offset, byte_size);

    kiln_shm_region *r = kiln_calloc(1, sizeof(*r));
    if (!r)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for region '%s'", name);
    kiln_ref_init(&r->ref);
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->key, sizeof(r->key), "%s", key);
    r->offset = offset;
    r->byte_size = byte_size;
    r->reg = reg;
    r->cuda_device = -1;
    atomic_init(&r->last_used, now(reg));
    atomic_init(&r->registered, true);

    /* Registration is rare; holding the lock across open+map keeps the checks simple. */
    pthread_mutex_lock(&reg->mu);
    if (find_locked(reg, name, NULL)) {
        st = kiln_err_set(err, KILN_ALREADY_EXISTS,
                          "shared memory region '%s' is already registered", name);
        goto out_unlock_free;
    }
    uint64_t mapped = atomic_load(&reg->mapped);
    if (reg->quota && (mapped > reg->quota || reg->quota - mapped < byte_size)) {
        st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                          "shared memory region '%s': %" PRIu64 " bytes with %" PRIu64
                          " already mapped passes the quota of %" PRIu64 " bytes",
                          name, byte_size, mapped, reg->quota);
        goto out_unlock_free;
    }
    st = kiln__shm_map(r, err);
    if (st != KILN_OK)
        goto out_unlock_free;
    atomic_fetch_add(&reg->mapped, byte_size);
    kiln_ref_inc(&reg->ref);
    r->next = reg->head;
    reg->head = r;
    reg->count++;
    pthread_mutex_unlock(&reg->mu);
    KILN_LOGD(NULL, "shared memory region '%s' registered (%" PRIu64 " bytes)", name, byte_size);
    return KILN_OK;

out_unlock_free:
    pthread_mutex_unlock(&reg->mu);
    kiln_free(r);
    return st;
}

kiln_status kiln_shm_register_cuda(kiln_shm_registry *reg, const char *name, const void *handle,
                                   size_t handle_len, int device, uint64_t byte_size, kiln_err *err)
{
    kiln_status st = kiln_shm_name_validate(name, err);
    if (st != KILN_OK)
        return st;
    if (byte_size == 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "CUDA shared memory region '%s': byte_size must be > 0", name);
    kiln_shm_region *r = kiln_calloc(1, sizeof(*r));
    if (!r)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for region '%s'", name);
    kiln_ref_init(&r->ref);
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->byte_size = byte_size;
    r->reg = reg;
    r->cuda_device = device;
    atomic_init(&r->last_used, now(reg));
    atomic_init(&r->registered, true);
    pthread_mutex_lock(&reg->mu);
    if (find_locked(reg, name, NULL)) {
        st = kiln_err_set(err, KILN_ALREADY_EXISTS,
                          "shared memory region '%s' is already registered", name);
    } else {
        void *p = NULL;
        st = kiln__cuda_ipc_open(handle, handle_len, device, byte_size, &p, err);
        if (st != KILN_OK)
            kiln_err_prefix(err, st, "CUDA shared memory region '%s'", name);
        r->data = p;
    }
    if (st != KILN_OK) {
        pthread_mutex_unlock(&reg->mu);
        kiln_free(r);
        return st;
    }
    kiln_ref_inc(&reg->ref);
    r->next = reg->head;
    reg->head = r;
    reg->count++;
    pthread_mutex_unlock(&reg->mu);
    return KILN_OK;
}

kiln_status kiln_shm_unregister(kiln_shm_registry *reg, const char *name, kiln_err *err)
{
    kiln_shm_region **link = NULL;
    pthread_mutex_lock(&reg->mu);
    kiln_shm_region *r = name ? find_locked(reg, name, &link) : NULL;
    if (r) {
        *link = r->next;
        reg->count--;
        atomic_store(&r->registered, false);
    }
    pthread_mutex_unlock(&reg->mu);
    if (!r)
        return kiln_err_set(err, KILN_NOT_FOUND, "shared memory region '%.*s' is not registered",
                            KILN_SHM_NAME_MAX, name ? name : "");
    kiln__shm_region_unref(r); /* unmaps now, or when its last user is done */
    return KILN_OK;
}

size_t kiln_shm_unregister_all(kiln_shm_registry *reg)
{
    pthread_mutex_lock(&reg->mu);
    kiln_shm_region *list = reg->head;
    for (kiln_shm_region *r = list; r; r = r->next)
        atomic_store(&r->registered, false);
    reg->head = NULL;
    size_t n = reg->count;
    reg->count = 0;
    pthread_mutex_unlock(&reg->mu);
    while (list) {
        kiln_shm_region *next = list->next;
        kiln__shm_region_unref(list);
        list = next;
    }
    return n;
}

kiln_status kiln_shm_acquire(kiln_shm_registry *reg, const char *name, kiln_shm_region **out,
                             kiln_err *err)
{
    *out = NULL;
    pthread_mutex_lock(&reg->mu);
    kiln_shm_region *r = name ? find_locked(reg, name, NULL) : NULL;
    if (r) {
        kiln_ref_inc(&r->ref);
        atomic_store_explicit(&r->last_used, now(reg), memory_order_relaxed);
    }
    pthread_mutex_unlock(&reg->mu);
    if (!r)
        return kiln_err_set(err, KILN_NOT_FOUND, "unable to find shared memory region '%.*s'",
                            KILN_SHM_NAME_MAX, name ? name : "");
    *out = r;
    return KILN_OK;
}

void kiln_shm_region_release(kiln_shm_region *region)
{
    if (region)
        kiln__shm_region_unref(region);
}

size_t kiln_shm_sweep(kiln_shm_registry *reg)
{
    if (!reg->ttl)
        return 0;
    uint64_t t = now(reg);
    kiln_shm_region *dropped = NULL;
    pthread_mutex_lock(&reg->mu);
    for (kiln_shm_region **pp = &reg->head; *pp;) {
        kiln_shm_region *r = *pp;
        /*
         * Count first, then the stamp: a user's release stamps before its acq_rel decrement,
         * so seeing the count at 1 (acquire) guarantees its stamp is visible here. Only the
         * registry holds the region then, and no request can get it without this lock.
         */
        bool idle = kiln_ref_get(&r->ref) == 1;
        uint64_t last = atomic_load_explicit(&r->last_used, memory_order_relaxed);
        if (idle && t > last && t - last > reg->ttl) {
            *pp = r->next;
            reg->count--;
            atomic_store(&r->registered, false);
            r->next = dropped;
            dropped = r;
        } else {
            pp = &r->next;
        }
    }
    pthread_mutex_unlock(&reg->mu);
    size_t n = 0;
    while (dropped) {
        kiln_shm_region *next = dropped->next;
        KILN_LOGI(NULL,
                  "shared memory region '%s' unused for over %" PRIu64
                  " ms; unmapped and unregistered",
                  dropped->name, reg->ttl / KILN_NS_PER_MS);
        kiln__shm_region_unref(dropped);
        dropped = next;
        n++;
    }
    return n;
}

uint64_t kiln_shm_mapped_bytes(const kiln_shm_registry *reg)
{
    return atomic_load(&reg->mapped);
}

size_t kiln_shm_count(kiln_shm_registry *reg)
{
    pthread_mutex_lock(&reg->mu);
    size_t n = reg->count;
    pthread_mutex_unlock(&reg->mu);
    return n;
}

kiln_status kiln_shm_status(kiln_shm_registry *reg, const char *name, kiln_shm_info *out,
                            size_t cap, size_t *n, kiln_err *err)
{
    bool all = !name || !name[0];
    size_t found = 0;
    pthread_mutex_lock(&reg->mu);
    for (kiln_shm_region *r = reg->head; r; r = r->next) {
        if (!all && strcmp(r->name, name) != 0)
            continue;
        if (found < cap) {
            kiln_shm_info *i = &out[found];
            snprintf(i->name, sizeof(i->name), "%s", r->name);
            snprintf(i->key, sizeof(i->key), "%s", r->key);
            i->offset = r->offset;
            i->byte_size = r->byte_size;
            i->users = (uint32_t)(kiln_ref_get(&r->ref) - 1);
            i->cuda_device = r->cuda_device;
        }
        found++;
    }
    pthread_mutex_unlock(&reg->mu);
    *n = found;
    if (!all && found == 0)
        return kiln_err_set(err, KILN_NOT_FOUND, "shared memory region '%.*s' is not registered",
                            KILN_SHM_NAME_MAX, name);
    return KILN_OK;
}
