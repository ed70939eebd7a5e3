/*
 * common/refcount.h: atomic reference counts for shared objects.
 *
 * Pattern: an object embeds a kiln_refcount, kiln_ref_init() sets it to 1 for the creator,
 * kiln_ref_inc() adds a holder, and kiln_ref_dec() returns true for the holder that dropped
 * the last reference, which then frees the object. Increments are relaxed; the final
 * decrement is acq_rel so that every write made by other holders happens-before the free.
 *
 * REQUIRES: kiln_ref_inc is only called by a thread that already holds a reference (or holds
 * the lock of a container that does): "if another thread can find your data and you hold no
 * reference on it, you have a bug".
 * Thread-safety: all functions are safe from any thread.
 */
#ifndef KILN_COMMON_REFCOUNT_H
#define KILN_COMMON_REFCOUNT_H

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct kiln_refcount {
    atomic_uint_fast32_t n;
} kiln_refcount;

static inline void kiln_ref_init(kiln_refcount *r)
{
    atomic_init(&r->n, 1);
}

static inline void kiln_ref_inc(kiln_refcount *r)
{
    uint_fast32_t old = atomic_fetch_add_explicit(&r->n, 1, memory_order_relaxed);
    assert(old > 0 && "kiln_ref_inc on a dead object");
    (void)old;
}

/* Drops one reference; returns true if it was the last (the caller must free the object). */
static inline bool kiln_ref_dec(kiln_refcount *r)
{
    uint_fast32_t old = atomic_fetch_sub_explicit(&r->n, 1, memory_order_acq_rel);
    assert(old > 0 && "kiln_ref_dec below zero");
    return old == 1;
}

/* The current count; only meaningful when no other thread can change it (or as a hint). */
static inline uint_fast32_t kiln_ref_get(const kiln_refcount *r)
{
    return atomic_load_explicit(&r->n, memory_order_acquire);
}

#endif /* KILN_COMMON_REFCOUNT_H */
