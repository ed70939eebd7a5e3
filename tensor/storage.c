/* tensor/storage.c: refcounted storage blocks of every kind. */
#include "common/alloc.h"
#include "tensor/tensor_int.h"

/* Heap storage keeps its header in the first KILN_STORAGE_ALIGN bytes of one allocation. */
_Static_assert(sizeof(struct kiln_storage) <= KILN_STORAGE_ALIGN, "storage header too big");

kiln_status kiln__storage_new(kiln_storage_kind kind, kiln_device device, void *data, size_t size,
                              kiln_release_fn release, void *ctx, kiln_storage **out, kiln_err *err)
{
    *out = NULL;
    kiln_storage *s = kiln_malloc(sizeof(*s));
    if (!s)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a storage header");
    kiln_ref_init(&s->ref);
    s->kind = kind;
    s->device = device;
    s->data = data;
    s->size = size;
    s->release = release;
    s->release_ctx = ctx;
    s->inline_block = 0;
    *out = s;
    return KILN_OK;
}

kiln_status kiln_storage_create_heap(size_t size, kiln_storage **out, kiln_err *err)
{
    *out = NULL;
    size_t total;
    if (__builtin_add_overflow(size, (size_t)KILN_STORAGE_ALIGN, &total))
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "heap storage of %zu bytes is too large",
                            size);
    unsigned char *block = kiln_aligned_alloc(KILN_STORAGE_ALIGN, total);
    if (!block)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "out of memory allocating %zu bytes of heap storage", size);
    kiln_storage *s = (kiln_storage *)block;
    kiln_ref_init(&s->ref);
    s->kind = KILN_STORAGE_HEAP;
    s->device = (kiln_device){KILN_DEVICE_CPU, 0};
    s->data = block + KILN_STORAGE_ALIGN;
    s->size = size;
    s->release = NULL;
    s->release_ctx = NULL;
    s->inline_block = 1;
    *out = s;
    return KILN_OK;
}

static void cuda_release(void *ctx, void *data)
{
    kiln__cuda_free((int)(intptr_t)ctx, data);
}

kiln_status kiln_storage_create_cuda(int device, size_t size, kiln_storage **out, kiln_err *err)
{
    *out = NULL;
    void *p = NULL;
    kiln_status st = kiln__cuda_alloc(device, size, &p, err);
    if (st != KILN_OK)
        return st;
    st = kiln__storage_new(KILN_STORAGE_CUDA, (kiln_device){KILN_DEVICE_CUDA, device}, p, size,
                           cuda_release, (void *)(intptr_t)device, out, err);
    if (st != KILN_OK)
        kiln__cuda_free(device, p);
    return st;
}

kiln_status kiln_storage_wrap(void *data, size_t size, kiln_device device, kiln_release_fn release,
                              void *ctx, kiln_storage **out, kiln_err *err)
{
    if (!data && size > 0) {
        *out = NULL;
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "wrapped buffer is NULL but size is %zu",
                            size);
    }
    return kiln__storage_new(KILN_STORAGE_BORROWED, device, data, size, release, ctx, out, err);
}

void kiln_storage_ref(kiln_storage *s)
{
    kiln_ref_inc(&s->ref);
}

void kiln_storage_unref(kiln_storage *s)
{
    if (!s || !kiln_ref_dec(&s->ref))
        return;
    if (s->inline_block) {
        kiln_aligned_free(s);
        return;
    }
    if (s->release)
        s->release(s->release_ctx, s->data);
    kiln_free(s);
}

void *kiln_storage_data(const kiln_storage *s)
{
    return s->data;
}

size_t kiln_storage_size(const kiln_storage *s)
{
    return s->size;
}

kiln_storage_kind kiln_storage_get_kind(const kiln_storage *s)
{
    return s->kind;
}

kiln_device kiln_storage_device(const kiln_storage *s)
{
    return s->device;
}
