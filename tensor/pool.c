/* tensor/pool.c: a size-class buffer pool with per-owner byte quotas. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "tensor/tensor_int.h"

#define MIN_CLASS_SHIFT 12 /* 4 KiB */
#define NUM_CLASSES     40 /* up to 2^51 bytes */

/* A free buffer keeps its list link in its own first bytes. */
typedef struct free_buf {
    struct free_buf *next;
} free_buf;

struct kiln_pool {
    kiln_refcount ref; /* creator + one per owner */
    pthread_mutex_t mu;
    size_t max_cached;
    size_t cached;               /* guarded by mu */
    free_buf *free[NUM_CLASSES]; /* guarded by mu */
    uint64_t hits, misses;       /* guarded by mu */
};

struct kiln_pool_owner {
    kiln_refcount ref; /* creator + one per buffer out */
    kiln_pool *pool;
    size_t quota;
    size_t in_use; /* guarded by pool->mu */
    char name[64];
};

/* What a lent buffer's storage remembers to give it back. */
typedef struct lent {
    kiln_pool_owner *owner;
    int cls;
} lent;

static int size_class(size_t size)
{
    int c = 0;
    size_t cap = (size_t)1 << MIN_CLASS_SHIFT;
    while (cap < size && c < NUM_CLASSES - 1) {
        cap <<= 1;
        c++;
    }
    return cap >= size ? c : -1;
}

static size_t class_bytes(int cls)
{
    return (size_t)1 << (MIN_CLASS_SHIFT + cls);
}

kiln_status kiln_pool_create(size_t max_cached_bytes, kiln_pool **out, kiln_err *err)
{
    *out = NULL;
    kiln_pool *p = kiln_calloc(1, sizeof(*p));
    if (!p)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a buffer pool");
    kiln_ref_init(&p->ref);
    pthread_mutex_init(&p->mu, NULL);
    p->max_cached = max_cached_bytes;
    *out = p;
    return KILN_OK;
}

static void pool_unref(kiln_pool *p)
{
    if (!kiln_ref_dec(&p->ref))
        return;
    for (int c = 0; c < NUM_CLASSES; c++) {
        free_buf *b = p->free[c];
        while (b) {
            free_buf *n = b->next;
            kiln_aligned_free(b);
            b = n;
        }
    }
    pthread_mutex_destroy(&p->mu);
    kiln_free(p);
}

void kiln_pool_destroy(kiln_pool *pool)
{
    if (pool)
        pool_unref(pool);
}

kiln_status kiln_pool_owner_create(kiln_pool *pool, const char *name, size_t quota_bytes,
                                   kiln_pool_owner **out, kiln_err *err)
{
    *out = NULL;
    kiln_pool_owner *o = kiln_calloc(1, sizeof(*o));
    if (!o)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a pool owner");
    kiln_ref_init(&o->ref);
    kiln_ref_inc(&pool->ref);
    o->pool = pool;
    o->quota = quota_bytes;
    snprintf(o->name, sizeof(o->name), "%s", name ? name : "");
    *out = o;
    return KILN_OK;
}

static void owner_unref(kiln_pool_owner *o)
{
    if (!kiln_ref_dec(&o->ref))
        return;
    pool_unref(o->pool);
    kiln_free(o);
}

void kiln_pool_owner_destroy(kiln_pool_owner *owner)
{
    if (owner)
        owner_unref(owner);
}

static void pool_release(void *ctx, void *data)
{
    lent *l = ctx;
    kiln_pool_owner *o = l->owner;
    kiln_pool *p = o->pool;
    size_t bytes = class_bytes(l->cls);
    pthread_mutex_lock(&p->mu);
    o->in_use -= bytes;
    if (p->cached + bytes <= p->max_cached) {
        free_buf *b = data;
        b->next = p->free[l->cls];
        p->free[l->cls] = b;
        p->cached += bytes;
        data = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    kiln_aligned_free(data);
    kiln_free(l);
    owner_unref(o);
}

kiln_status kiln_pool_alloc(kiln_pool_owner *owner, size_t size, kiln_storage **out, kiln_err *err)
{
    *out = NULL;
    kiln_pool *p = owner->pool;
    int cls = size_class(size);
    if (cls < 0)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "pool buffer of %zu bytes is too large",
                            size);
    size_t bytes = class_bytes(cls);
    lent *l = kiln_malloc(sizeof(*l));
    if (!l)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a pool buffer");

    void *buf = NULL;
    pthread_mutex_lock(&p->mu);
    if (owner->quota && (owner->in_use > owner->quota || owner->quota - owner->in_use < bytes)) {
        size_t in_use = owner->in_use;
        pthread_mutex_unlock(&p->mu);
        kiln_free(l);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "pool owner '%s': asking %zu bytes (class %zu) with %zu in use "
                            "passes the quota of %zu bytes",
                            owner->name, size, bytes, in_use, owner->quota);
    }
    if (p->free[cls]) {
        buf = p->free[cls];
        p->free[cls] = p->free[cls]->next;
        p->cached -= bytes;
        p->hits++;
    } else {
        p->misses++;
    }
    owner->in_use += bytes;
    pthread_mutex_unlock(&p->mu);

    if (!buf)
        buf = kiln_aligned_alloc(KILN_STORAGE_ALIGN, bytes);
    kiln_status st = KILN_OK;
    if (!buf)
        st =
            kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory allocating %zu bytes", bytes);
    else
        st = kiln__storage_new(KILN_STORAGE_POOL, (kiln_device){KILN_DEVICE_CPU, 0}, buf, size,
                               pool_release, l, out, err);
    if (st != KILN_OK) {
        pthread_mutex_lock(&p->mu);
        owner->in_use -= bytes;
        pthread_mutex_unlock(&p->mu);
        kiln_aligned_free(buf);
        kiln_free(l);
        return st;
    }
    kiln_ref_inc(&owner->ref);
    l->owner = owner;
    l->cls = cls;
    return KILN_OK;
}

size_t kiln_pool_owner_in_use(kiln_pool_owner *owner)
{
    kiln_pool *p = owner->pool;
    pthread_mutex_lock(&p->mu);
    size_t n = owner->in_use;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void kiln_pool_get_stats(kiln_pool *pool, kiln_pool_stats *out)
{
    pthread_mutex_lock(&pool->mu);
    out->cached_bytes = pool->cached;
    out->hits = pool->hits;
    out->misses = pool->misses;
    pthread_mutex_unlock(&pool->mu);
}
