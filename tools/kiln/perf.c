/*
 * tools/kiln/perf.c: `kiln perf`, a load generator in the manner of Triton's perf_analyzer.
 *
 * Closed loop (--concurrency N): N threads, each sending its next request when the last one
 * is answered. Open loop (--rate R): request k is due at start + k/R; --threads senders take
 * the next due request, sleep until its time and send it (a request sent over 1 ms after its
 * time is counted as late: the client, not the server, fell behind).
 * Each level has a warm-up (not measured) and then a window: --duration long, or until
 * --count requests have been answered. Throughput is the requests answered OK in the window
 * over its length; latencies are those of the same requests, from send to answer.
 * With --shm each thread has its own region holding its inputs and room for its outputs, so
 * no request copies tensor bytes through gRPC.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "tools/kiln/cli.h"
#include "tools/kiln/stats.h"

#define ALIGN          64
#define LATE_NS        KILN_NS_PER_MS
#define PROGRESS_NS    (250 * KILN_NS_PER_MS)
#define THREAD_STACK   (1u << 20)
#define EXIT_INTERRUPT 130

/* Set by SIGINT: the level in progress ends, and what was measured is reported. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct perf perf;

typedef struct worker {
    perf *p;
    pthread_t th;
    kiln_client_shm *shm; /* --shm: this thread's region, kept across levels */
    kiln_client_tensor in[KILN_CLI_MAX_LIST];
    kiln_client_output out[KILN_CLI_MAX_LIST];
    uint64_t *lat; /* latencies of the measured OK requests (ns) */
    size_t n_lat, cap_lat;
    uint64_t errors, late;
    bool failed; /* first_error holds the first failure */
    kiln_client_error first_error;
} worker;

struct perf {
    const kiln_cli_args *a;
    kiln_client *c;
    kiln_client_infer_options io;
    kiln_cli_inputs in;
    size_t n_out;
    char out_names[KILN_CLI_MAX_LIST][128];
    size_t out_bytes[KILN_CLI_MAX_LIST]; /* from the probe request */
    worker *w;
    size_t n_w; /* workers set up so far (threads of the largest level) */
    /* the level in progress */
    int concurrency;
    double rate;
    uint64_t t_start, t_measure, t_end; /* t_end: UINT64_MAX until a --count window closes */
    uint64_t warm_slots;                /* rate mode with --count: requests before the window */
    atomic_bool stop;
    atomic_int running;
    atomic_uint_fast64_t measured;             /* --count: answers counted in the window */
    atomic_uint_fast64_t t_last;               /* the last counted answer's time */
    atomic_uint_fast64_t ok_total, fail_total; /* every answer, for the progress line */
    atomic_uint_fast64_t slot;                 /* rate mode: the next request due */
};

static void note_failure(worker *w, const kiln_client_error *e)
{
    if (!w->failed) {
        w->failed = true;
        w->first_error = *e;
    }
}

static void push_latency(worker *w, uint64_t ns)
{
    if (w->n_lat == w->cap_lat) {
        size_t cap = w->cap_lat ? w->cap_lat * 2 : 4096;
        uint64_t *l = kiln_realloc(w->lat, cap * sizeof(*l));
        if (!l) { /* counted as an error rather than silently dropped */
            kiln_client_error e = {.code = KILN_RESOURCE_EXHAUSTED};
            snprintf(e.message, sizeof(e.message), "out of memory for latencies");
            note_failure(w, &e);
            w->errors++;
            return;
        }
        w->lat = l;
        w->cap_lat = cap;
    }
    w->lat[w->n_lat++] = ns;
}

static void atomic_max(atomic_uint_fast64_t *a, uint64_t v)
{
    uint_fast64_t cur = atomic_load(a);
    while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

/* Counts one answer that belongs to the window. */
static void count(worker *w, uint64_t t_send, uint64_t t_done, bool ok)
{
    perf *p = w->p;
    if (p->a->count) {
        uint64_t ticket = atomic_fetch_add(&p->measured, 1);
        if (ticket >= p->a->count)
            return;
        if (ticket + 1 == p->a->count)
            atomic_store(&p->stop, true);
    }
    atomic_max(&p->t_last, t_done);
    if (ok)
        push_latency(w, t_done - t_send);
    else
        w->errors++;
}

/* Sends one request; returns whether it was answered OK. */
static bool send_one(worker *w, uint64_t *t_send, uint64_t *t_done)
{
    perf *p = w->p;
    kiln_client_result *res = NULL;
    kiln_client_error e;
    *t_send = kiln_clock_now_ns();
    int rc = kiln_client_infer(p->c, p->a->model, w->in, p->in.n, p->n_out ? w->out : NULL,
                               p->n_out, &p->io, &res, &e);
    *t_done = kiln_clock_now_ns();
    kiln_client_result_free(res);
    if (rc != 0) {
        note_failure(w, &e);
        atomic_fetch_add(&p->fail_total, 1);
        return false;
    }
    atomic_fetch_add(&p->ok_total, 1);
    return true;
}

static void *closed_loop(void *arg)
{
    worker *w = arg;
    perf *p = w->p;
    while (!atomic_load(&p->stop) && !interrupted) {
        uint64_t t0, t1;
        bool ok = send_one(w, &t0, &t1);
        if (!p->a->count && t1 > p->t_end)
            break;
        if (t1 >= p->t_measure)
            count(w, t0, t1, ok);
    }
    atomic_fetch_sub(&p->running, 1);
    return NULL;
}

static void sleep_until(perf *p, uint64_t t)
{
    for (;;) {
        uint64_t now = kiln_clock_now_ns();
        if (now >= t || atomic_load(&p->stop) || interrupted)
            return;
        uint64_t d = t - now < 50 * KILN_NS_PER_MS ? t - now : 50 * KILN_NS_PER_MS;
        struct timespec ts = {(time_t)(d / KILN_NS_PER_S), (long)(d % KILN_NS_PER_S)};
        nanosleep(&ts, NULL);
    }
}

static void *open_loop(void *arg)
{
    worker *w = arg;
    perf *p = w->p;
    double interval = 1e9 / p->rate;
    while (!atomic_load(&p->stop) && !interrupted) {
        uint64_t k = atomic_fetch_add(&p->slot, 1);
        uint64_t due = p->t_start + (uint64_t)((double)k * interval);
        if (p->a->count ? k >= p->warm_slots + p->a->count : due >= p->t_end)
            break;
        sleep_until(p, due);
        if (atomic_load(&p->stop) || interrupted)
            break;
        uint64_t t0, t1;
        bool ok = send_one(w, &t0, &t1);
        bool measured = p->a->count ? k >= p->warm_slots : due >= p->t_measure;
        if (measured && t0 - due > LATE_NS)
            w->late++;
        if (measured)
            count(w, t0, t1, ok);
    }
    atomic_fetch_sub(&p->running, 1);
    return NULL;
}

/* Points worker w's tensors at its own region (--shm) or at the shared inline inputs. */
static int setup_worker(perf *p, worker *w, size_t index)
{
    const kiln_cli_args *a = p->a;
    w->p = p;
    for (size_t i = 0; i < p->in.n; i++)
        kiln_cli_inputs_view(&p->in.t[i], &w->in[i]);
    for (size_t i = 0; i < p->n_out; i++)
        w->out[i].name = p->out_names[i];
    if (!a->shm)
        return KILN_CLI_EXIT_OK;
    size_t size = 0;
    for (size_t i = 0; i < p->in.n; i++) {
        w->in[i].shm_offset = size;
        size += (w->in[i].byte_size + ALIGN - 1) / ALIGN * ALIGN;
    }
    for (size_t i = 0; i < p->n_out; i++) {
        w->out[i].shm_offset = size;
        w->out[i].shm_byte_size = p->out_bytes[i] ? p->out_bytes[i] : ALIGN;
        size += (w->out[i].shm_byte_size + ALIGN - 1) / ALIGN * ALIGN;
    }
    char region[64], key[64];
    snprintf(region, sizeof(region), "kiln-perf-%ld-%zu", (long)getpid(), index);
    snprintf(key, sizeof(key), "/kiln-perf-%ld-%zu", (long)getpid(), index);
    kiln_client_error e;
    if (kiln_client_shm_create(p->c, region, key, size ? size : ALIGN, &w->shm, &e) != 0)
        return kiln_cli_rpc_failed(a, "shared-memory region", &e);
    uint8_t *base = kiln_client_shm_data(w->shm);
    for (size_t i = 0; i < p->in.n; i++) {
        if (w->in[i].byte_size)
            memcpy(base + w->in[i].shm_offset, w->in[i].data, w->in[i].byte_size);
        w->in[i].data = NULL;
        w->in[i].shm_region = kiln_client_shm_region(w->shm);
    }
    for (size_t i = 0; i < p->n_out; i++)
        w->out[i].shm_region = kiln_client_shm_region(w->shm);
    return KILN_CLI_EXIT_OK;
}

/* One inline request before the levels: it checks the request and sizes the outputs. */
static int probe(perf *p)
{
    const kiln_cli_args *a = p->a;
    kiln_client_tensor in[KILN_CLI_MAX_LIST];
    kiln_client_output out[KILN_CLI_MAX_LIST];
    for (size_t i = 0; i < p->in.n; i++)
        kiln_cli_inputs_view(&p->in.t[i], &in[i]);
    for (size_t i = 0; i < a->n_outputs; i++)
        out[i] = (kiln_client_output){.name = a->outputs[i]};
    kiln_client_result *res;
    kiln_client_error e;
    if (kiln_client_infer(p->c, a->model, in, p->in.n, a->n_outputs ? out : NULL, a->n_outputs,
                          &p->io, &res, &e) != 0)
        return kiln_cli_rpc_failed(a, "the first request", &e);
    size_t n = kiln_client_result_count(res);
    p->n_out = 0;
    for (size_t i = 0; i < n && i < KILN_CLI_MAX_LIST; i++) {
        kiln_client_tensor t;
        if (kiln_client_result_output(res, i, &t, &e) != 0)
            break;
        snprintf(p->out_names[i], sizeof(p->out_names[i]), "%s", t.name);
        p->out_bytes[i] = t.byte_size;
        p->n_out++;
    }
    kiln_client_result_free(res);
    /* without --shm, ask for what --output asked for (nothing: the server sends all) */
    if (!a->shm)
        p->n_out = a->n_outputs;
    return KILN_CLI_EXIT_OK;
}

static void progress(perf *p, uint64_t now, uint64_t *last_ok, uint64_t *last_t)
{
    char level[48];
    if (p->rate > 0)
        snprintf(level, sizeof(level), "rate %g/s", p->rate);
    else
        snprintf(level, sizeof(level), "concurrency %d", p->concurrency);
    uint64_t ok = atomic_load(&p->ok_total), fail = atomic_load(&p->fail_total);
    double rate = now > *last_t ? (double)(ok - *last_ok) * 1e9 / (double)(now - *last_t) : 0;
    *last_ok = ok;
    *last_t = now;
    if (now < p->t_measure)
        fprintf(stderr, "\r\033[K%s: warming up", level);
    else if (p->a->count)
        fprintf(stderr,
                "\r\033[K%s: %" PRIu64 "/%" PRIu64 " requests, %.0f infer/s, %" PRIu64 " failed",
                level, (uint64_t)atomic_load(&p->measured), p->a->count, rate, fail);
    else
        fprintf(stderr, "\r\033[K%s: %.1f/%.1f s, %.0f infer/s, %" PRIu64 " failed", level,
                (double)(now - p->t_measure) / 1e9, p->a->duration_s, rate, fail);
}

static int run_level(perf *p, int concurrency, double rate, kiln_cli_perf_level *lv)
{
    const kiln_cli_args *a = p->a;
    int threads = rate > 0 ? a->threads : concurrency;
    for (size_t i = p->n_w; i < (size_t)threads; i++, p->n_w++) {
        int rc = setup_worker(p, &p->w[i], i);
        if (rc != KILN_CLI_EXIT_OK)
            return rc;
    }
    p->concurrency = concurrency;
    p->rate = rate;
    atomic_store(&p->stop, false);
    atomic_store(&p->measured, 0);
    atomic_store(&p->t_last, 0);
    atomic_store(&p->slot, 0);
    atomic_store(&p->ok_total, 0);
    atomic_store(&p->fail_total, 0);
    p->t_start = kiln_clock_now_ns();
    p->t_measure = p->t_start + (uint64_t)(a->warmup_s * 1e9);
    p->t_end = a->count ? UINT64_MAX : p->t_measure + (uint64_t)(a->duration_s * 1e9);
    p->warm_slots = rate > 0 ? (uint64_t)(a->warmup_s * rate) : 0;
    if (rate > 0) /* the window opens when the first measured request is due */
        p->t_measure =
            a->count ? p->t_start + (uint64_t)((double)p->warm_slots * 1e9 / rate) : p->t_measure;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    int started = 0;
    atomic_store(&p->running, threads);
    for (int i = 0; i < threads; i++) {
        worker *w = &p->w[i];
        w->n_lat = 0;
        w->errors = w->late = 0;
        if (pthread_create(&w->th, &attr, rate > 0 ? open_loop : closed_loop, w) != 0) {
            atomic_store(&p->stop, true);
            atomic_fetch_sub(&p->running, threads - i);
            break;
        }
        started++;
    }
    pthread_attr_destroy(&attr);
    bool tty = isatty(STDERR_FILENO);
    uint64_t last_ok = 0, last_t = p->t_start;
    while (atomic_load(&p->running) > 0) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        uint64_t now = kiln_clock_now_ns();
        if (interrupted)
            atomic_store(&p->stop, true);
        if (tty && now - last_t >= PROGRESS_NS)
            progress(p, now, &last_ok, &last_t);
    }
    for (int i = 0; i < started; i++)
        pthread_join(p->w[i].th, NULL);
    if (tty)
        fprintf(stderr, "\r\033[K");
    if (started < threads)
        return kiln_cli_fail(a, KILN_CLI_EXIT_RPC, "could only start %d of %d threads", started,
                             threads);
    /* gather */
    size_t n = 0;
    memset(lv, 0, sizeof(*lv));
    for (int i = 0; i < threads; i++) {
        n += p->w[i].n_lat;
        lv->errors += p->w[i].errors;
        lv->late += p->w[i].late;
    }
    uint64_t *all = kiln_malloc(n ? n * sizeof(*all) : 1);
    if (!all)
        return kiln_cli_fail(a, KILN_CLI_EXIT_RPC, "out of memory for %zu latencies", n);
    n = 0;
    for (int i = 0; i < threads; i++) {
        if (p->w[i].n_lat)
            memcpy(all + n, p->w[i].lat, p->w[i].n_lat * sizeof(*all));
        n += p->w[i].n_lat;
    }
    uint64_t end = a->count || interrupted ? atomic_load(&p->t_last) : p->t_end;
    lv->concurrency = rate > 0 ? 0 : concurrency;
    lv->rate = rate;
    lv->requests = n;
    lv->seconds = end > p->t_measure ? (double)(end - p->t_measure) / 1e9 : 0;
    lv->throughput = lv->seconds > 0 ? (double)n / lv->seconds : 0;
    kiln_cli_latency_summarize(all, n, &lv->lat);
    kiln_free(all);
    return KILN_CLI_EXIT_OK;
}

static int write_csv(const kiln_cli_args *a, const kiln_cli_perf_level *lv, size_t n)
{
    FILE *f = fopen(a->csv, "w");
    if (!f)
        return kiln_cli_fail(a, KILN_CLI_EXIT_DATA, "--csv %s: %s", a->csv, strerror(errno));
    kiln_cli_perf_write_csv(f, lv, n);
    if (fclose(f) != 0)
        return kiln_cli_fail(a, KILN_CLI_EXIT_DATA, "--csv %s: %s", a->csv, strerror(errno));
    return KILN_CLI_EXIT_OK;
}

/* Everything after the inputs are built: the probe, the levels, the report. */
static int measure(perf *p)
{
    const kiln_cli_args *a = p->a;
    int rc = probe(p);
    if (rc != KILN_CLI_EXIT_OK)
        return rc;
    size_t levels = a->rate > 0 ? 1 : a->n_concurrency;
    int most = a->rate > 0 ? a->threads : 0;
    for (size_t i = 0; i < a->n_concurrency; i++)
        most = a->concurrency[i] > most ? a->concurrency[i] : most;
    p->w = kiln_calloc((size_t)most, sizeof(*p->w));
    kiln_cli_perf_level *lv = kiln_calloc(levels, sizeof(*lv));
    if (!p->w || !lv) {
        kiln_free(lv);
        return kiln_cli_fail(a, KILN_CLI_EXIT_RPC, "out of memory for %d threads", most);
    }
    size_t done = 0;
    for (; done < levels && rc == KILN_CLI_EXIT_OK && !interrupted; done++)
        rc = run_level(p, a->rate > 0 ? 0 : a->concurrency[done], a->rate, &lv[done]);
    if (rc == KILN_CLI_EXIT_OK) {
        char inputs[1024];
        kiln_cli_inputs_describe(a, &p->in, inputs, sizeof(inputs));
        kiln_cli_perf_info info = {.model = a->model,
                                   .url = a->url,
                                   .inputs = inputs,
                                   .shm = a->shm,
                                   .duration_s = a->count ? 0 : a->duration_s,
                                   .count = a->count};
        if (a->json)
            kiln_cli_perf_write_json(stdout, &info, lv, done);
        else
            kiln_cli_perf_write_table(stdout, &info, lv, done);
        if (a->csv)
            rc = write_csv(a, lv, done);
    }
    uint64_t failed = 0;
    for (size_t i = 0; i < done; i++)
        failed += lv[i].errors;
    kiln_free(lv);
    if (rc != KILN_CLI_EXIT_OK)
        return rc;
    for (size_t i = 0; i < p->n_w; i++) {
        if (p->w[i].failed) {
            char what[64];
            snprintf(what, sizeof(what), "%" PRIu64 " request%s failed; the first", failed,
                     failed == 1 ? "" : "s");
            return kiln_cli_rpc_failed(a, what, &p->w[i].first_error);
        }
    }
    if (interrupted) {
        fprintf(stderr, "kiln: perf: interrupted; the last level is partial\n");
        return EXIT_INTERRUPT;
    }
    return KILN_CLI_EXIT_OK;
}

int kiln_cli_perf(const kiln_cli_args *a, kiln_client *c)
{
    kiln_client_error e;
    kiln_client_model_info *md;
    perf *p = kiln_calloc(1, sizeof(*p));
    if (!p)
        return kiln_cli_fail(a, KILN_CLI_EXIT_RPC, "out of memory");
    p->a = a;
    p->c = c;
    p->io.version = a->model_version;
    int rc = kiln_cli_prepare(a, c, true, &md, &p->in);
    kiln_client_model_info_free(md);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    if (rc == KILN_CLI_EXIT_OK)
        rc = measure(p);
    sigaction(SIGINT, &old, NULL);
    for (size_t i = 0; p->w && i < p->n_w; i++) {
        if (p->w[i].shm && kiln_client_shm_destroy(c, p->w[i].shm, &e) != 0 &&
            rc == KILN_CLI_EXIT_OK)
            rc = kiln_cli_rpc_failed(a, "unregistering a shared-memory region", &e);
        kiln_free(p->w[i].lat);
    }
    kiln_free(p->w);
    kiln_cli_inputs_fini(&p->in);
    kiln_free(p);
    return rc;
}
