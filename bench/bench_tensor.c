/*
 * bench/bench_tensor.c: what a zero-copy tensor costs, against copying it, in one run.
 *
 * (1) Shared memory: for 16 MiB, 256 MiB and 1 GiB objects written by a "client", the time to
 *     register the region (open + map), view it as a tensor and drop both, against one memcpy
 *     of the same size (both buffers pre-faulted). Also: map + view + touch one byte per page,
 *     the cost a backend pays to read through a fresh mapping (page-table faults, no copy).
 * (2) DLPack: export + import + release round trip, against a bare malloc/free of the same
 *     struct size.
 * Medians; figures printed as ratios. Usage: bench_tensor [max_mib] (default 1024).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "bench/bench_util.h"
#include "common/log.h"
#include "tensor/shm.h"

static void die(const char *what, const kiln_err *e)
{
    fprintf(stderr, "bench: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

/* One register+acquire+view+fini+release+unregister; optionally touch every page. */
static uint64_t map_view_once(kiln_shm_registry *reg, const char *key, size_t size, int touch)
{
    kiln_err e;
    uint64_t t0 = kiln_clock_now_ns();
    if (kiln_shm_register(reg, "bench", key, 0, size, &e) != KILN_OK)
        die("register", &e);
    kiln_shm_region *r;
    if (kiln_shm_acquire(reg, "bench", &r, &e) != KILN_OK)
        die("acquire", &e);
    kiln_tensor t;
    kiln_shape sh = {.rank = 1, .dims = {(int64_t)(size / 4)}};
    if (kiln_shm_view(r, 0, size, KILN_DTYPE_FP32, &sh, &t, &e) != KILN_OK)
        die("view", &e);
    uint64_t t1 = kiln_clock_now_ns();
    if (touch) {
        volatile unsigned char sink = 0;
        const unsigned char *p = t.data;
        for (size_t off = 0; off < size; off += 4096)
            sink ^= p[off];
        (void)sink;
    }
    uint64_t t2 = kiln_clock_now_ns();
    kiln_tensor_fini(&t);
    kiln_shm_region_release(r);
    if (kiln_shm_unregister(reg, "bench", &e) != KILN_OK)
        die("unregister", &e);
    uint64_t t3 = kiln_clock_now_ns();
    return touch ? (t1 - t0) + (t2 - t1) + (t3 - t2) : (t1 - t0) + (t3 - t2);
}

static void bench_shm(size_t max_mib)
{
    static const size_t sizes_mib[] = {16, 256, 1024};
    kiln_err e;
    kiln_shm_registry *reg;
    if (kiln_shm_registry_create(NULL, &reg, &e) != KILN_OK)
        die("registry", &e);
    if (!kiln_shm_registry_available(reg)) {
        printf("shm: POSIX shared memory unavailable here; skipped\n");
        kiln_shm_registry_destroy(reg);
        return;
    }
    printf("%-8s %14s %16s %18s %12s %12s %12s\n", "size", "register+view", "+first touch",
           "view (registered)", "memcpy", "memcpy/reg", "memcpy/view");
    printf("%-8s %14s %16s %18s %12s\n", "", "(us)", "(us)", "(us)", "(us)");
    for (size_t i = 0; i < sizeof(sizes_mib) / sizeof(sizes_mib[0]); i++) {
        if (sizes_mib[i] > max_mib)
            break;
        size_t size = sizes_mib[i] << 20;
        char key[64];
        snprintf(key, sizeof(key), "/kiln-bench-%ld", (long)getpid());
        int fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)size) != 0)
            die("shm_open/ftruncate", NULL);
        unsigned char *client = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (client == MAP_FAILED)
            die("client mmap", NULL);
        memset(client, 1, size); /* the client wrote its tensor */

        enum { N_MAP = 21, N_TOUCH = 3, N_COPY = 5, N_WARM = 21 };
        uint64_t map[N_MAP], touch[N_TOUCH], copy[N_COPY], warm[N_WARM];
        for (int k = 0; k < N_MAP; k++)
            map[k] = map_view_once(reg, key, size, 0);
        for (int k = 0; k < N_TOUCH; k++)
            touch[k] = map_view_once(reg, key, size, 1);
        /* the steady state: registered once, its pages faulted in by earlier requests */
        if (kiln_shm_register(reg, "warm", key, 0, size, &e) != KILN_OK)
            die("register", &e);
        for (int k = 0; k < N_WARM + 1; k++) {
            uint64_t t0 = kiln_clock_now_ns();
            kiln_shm_region *r;
            kiln_tensor t;
            kiln_shape sh = {.rank = 1, .dims = {(int64_t)(size / 4)}};
            if (kiln_shm_acquire(reg, "warm", &r, &e) != KILN_OK ||
                kiln_shm_view(r, 0, size, KILN_DTYPE_FP32, &sh, &t, &e) != KILN_OK)
                die("warm view", &e);
            uint64_t t1 = kiln_clock_now_ns();
            if (k == 0) { /* first request faults the pages in */
                volatile unsigned char sink = 0;
                for (size_t off = 0; off < size; off += 4096)
                    sink ^= ((const unsigned char *)t.data)[off];
                (void)sink;
            }
            kiln_tensor_fini(&t);
            kiln_shm_region_release(r);
            if (k > 0)
                warm[k - 1] = t1 - t0 + (kiln_clock_now_ns() - t1);
        }
        kiln_shm_unregister(reg, "warm", &e);

        unsigned char *src = kiln_aligned_alloc(64, size), *dst = kiln_aligned_alloc(64, size);
        if (!src || !dst)
            die("malloc", NULL);
        memset(src, 2, size);
        memset(dst, 0, size);
        for (int k = 0; k < N_COPY; k++) {
            uint64_t t0 = kiln_clock_now_ns();
            memcpy(dst, src, size);
            copy[k] = kiln_clock_now_ns() - t0;
            src[k] ^= dst[size - 1 - (size_t)k]; /* keep the copy observable */
        }
        kiln_aligned_free(src);
        kiln_aligned_free(dst);
        munmap(client, size);
        shm_unlink(key);

        uint64_t m = bench_median(map, N_MAP), t = bench_median(touch, N_TOUCH),
                 c = bench_median(copy, N_COPY);
        uint64_t w = bench_median(warm, N_WARM);
        printf("%-8s %14.1f %16.1f %18.2f %12.1f %11.0fx %11.0fx\n",
               sizes_mib[i] >= 1024 ? "1 GiB" : (sizes_mib[i] == 256 ? "256 MiB" : "16 MiB"),
               (double)m / 1e3, (double)t / 1e3, (double)w / 1e3, (double)c / 1e3,
               (double)c / (double)m, (double)c / (double)w);
    }
    kiln_shm_registry_destroy(reg);
}

static void bench_dlpack(void)
{
    enum { N = 1000000, REPS = 5 };
    kiln_err e;
    kiln_tensor t;
    kiln_shape sh = {.rank = 4, .dims = {8, 3, 224, 224}};
    if (kiln_tensor_alloc(KILN_DTYPE_FP32, &sh, 0, &t, &e) != KILN_OK)
        die("alloc", &e);
    uint64_t rt[REPS], base[REPS];
    for (int r = 0; r < REPS; r++) {
        uint64_t t0 = kiln_clock_now_ns();
        for (int i = 0; i < N; i++) {
            DLManagedTensor *m;
            kiln_tensor back;
            if (kiln_tensor_to_dlpack(&t, &m, &e) != KILN_OK ||
                kiln_tensor_from_dlpack(m, &back, &e) != KILN_OK)
                die("dlpack", &e);
            kiln_tensor_fini(&back);
        }
        rt[r] = kiln_clock_now_ns() - t0;
        t0 = kiln_clock_now_ns();
        for (int i = 0; i < N; i++) {
            /* baseline: the allocations a round trip cannot avoid, nothing else */
            void *volatile a = kiln_malloc(sizeof(DLManagedTensor) + 8 * KILN_MAX_RANK + 8);
            void *volatile b = kiln_malloc(64);
            kiln_free(b);
            kiln_free(a);
        }
        base[r] = kiln_clock_now_ns() - t0;
    }
    kiln_tensor_fini(&t);
    double ns = (double)bench_median(rt, REPS) / N, bns = (double)bench_median(base, REPS) / N;
    printf("dlpack export+import+release: %.1f ns per round trip; two malloc+free pairs: %.1f ns; "
           "ratio %.2f\n",
           ns, bns, ns / bns);
}

int main(int argc, char **argv)
{
    kiln_log_set_level(KILN_LOG_WARN);
    size_t max_mib = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 1024;
    bench_shm(max_mib);
    bench_dlpack();
    return 0;
}
