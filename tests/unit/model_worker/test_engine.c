/*
 * Unit tests: the engine and its scheduler, driven directly (no gRPC): many threads submit
 * requests at once (TSan watches), batching happens and every answer is right; a full queue;
 * a request cancelled while queued, or expired on arrival, never runs; drain flushes a partial
 * batch instead of waiting out its delay.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "model_worker/worker.h"
#include "tests/support.h"

typedef struct call {
    kiln_infer_request req;
    kiln_infer_input in[2];
    int64_t shape[2];
    int32_t base;
    atomic_int done;
    kiln_status st;
    char msg[KILN_ERR_MSG_MAX];
    int wrong;
} call;

static atomic_int answered;

static void on_done(void *ctx, kiln_infer_response *res, kiln_status st, const kiln_err *err)
{
    call *c = ctx;
    c->st = st;
    if (st == KILN_OK) {
        const int32_t *sum = res->outputs[0].tensor.data;
        for (int i = 0; i < 16; i++)
            if (sum[i] != c->base + i + 1)
                c->wrong++;
    } else {
        snprintf(c->msg, sizeof(c->msg), "%s", err ? err->msg : "");
    }
    kiln_infer_response_release(res);
    atomic_store(&c->done, 1);
    atomic_fetch_add(&answered, 1);
}

static void prepare(call *c, const char *model, int32_t base)
{
    memset(c, 0, sizeof(*c));
    c->base = base;
    c->shape[0] = 1;
    c->shape[1] = 16;
    for (int k = 0; k < 2; k++) {
        kiln_storage *s;
        kiln_err e;
        assert_ok(kiln_storage_create_heap(64, &s, &e), &e);
        int32_t *p = kiln_storage_data(s);
        for (int i = 0; i < 16; i++)
            p[i] = k == 0 ? base + i : 1;
        c->in[k] = (kiln_infer_input){.name = k ? "INPUT1" : "INPUT0",
                                      .datatype = "INT32",
                                      .shape = c->shape,
                                      .rank = 2,
                                      .data = s,
                                      .data_size = 64};
    }
    c->req.model = model;
    c->req.version = "";
    c->req.n_inputs = 2;
    c->req.inputs = c->in;
    c->req.done = on_done;
    c->req.done_ctx = c;
}

static kiln_engine *engine(void)
{
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    char repo[1024];
    snprintf(repo, sizeof(repo), "%s/models", kiln_test_build_dir());
    o.repository = repo;
    o.exec_threads = 2;
    kiln_engine *e;
    kiln_err err;
    assert_ok(kiln_engine_create(&o, &e, &err), &err);
    assert_ok(kiln_engine_load(e, "simple", NULL, NULL, &err), &err);
    return e;
}

enum { THREADS = 4, PER = 200 };
static kiln_engine *shared;

static void *submitter(void *arg)
{
    call *calls = arg;
    for (int i = 0; i < PER; i++) {
        kiln_err e;
        if (kiln_engine_infer(shared, &calls[i].req, &e) != KILN_OK) {
            calls[i].st = e.code;
            atomic_store(&calls[i].done, 1);
            atomic_fetch_add(&answered, 1);
        }
    }
    return NULL;
}

static void many_threads_batch_and_answer_right(void **state)
{
    (void)state;
    kiln_log_set_level(KILN_LOG_ERROR);
    shared = engine();
    call *calls = calloc(THREADS * PER, sizeof(*calls));
    for (int i = 0; i < THREADS * PER; i++)
        prepare(&calls[i], "simple", i * 3);
    atomic_store(&answered, 0);
    pthread_t t[THREADS];
    for (int k = 0; k < THREADS; k++)
        pthread_create(&t[k], NULL, submitter, calls + k * PER);
    for (int k = 0; k < THREADS; k++)
        pthread_join(t[k], NULL);
    for (int i = 0; i < 10000 && atomic_load(&answered) < THREADS * PER; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&answered), THREADS * PER);
    for (int i = 0; i < THREADS * PER; i++) {
        if (calls[i].st != KILN_OK)
            fail_msg("call %d: %s %s", i, kiln_status_name(calls[i].st), calls[i].msg);
        assert_int_equal(calls[i].wrong, 0);
    }
    kiln_model_status s;
    kiln_err e;
    assert_ok(kiln_registry_status(kiln_engine_registry(shared), "simple", 1, &s, &e), &e);
    assert_int_equal(s.stats.success_count, THREADS * PER);
    assert_true(s.stats.execution_count <= THREADS * PER);
    printf("engine: %d requests in %llu executions\n", THREADS * PER,
           (unsigned long long)s.stats.execution_count);
    kiln_engine_drain(shared);
    kiln_engine_destroy(shared);
    free(calls);
}

static void release_none(void *ctx, void *data)
{
    (void)ctx;
    (void)data;
}

/* A request whose input is device memory (CUDA shared memory's case; here a host buffer that
 * says it is on CUDA device 0) cannot share a batch: it runs by itself, beside batched ones,
 * and gets the model's answer (the plugin refuses device inputs) instead of waiting forever. */
static void device_input_runs_alone(void **state)
{
    (void)state;
    kiln_log_set_level(KILN_LOG_ERROR);
    kiln_engine *e = engine();
    static int32_t fake[16];
    call dev, host[4];
    prepare(&dev, "simple", 0);
    kiln_storage *s;
    kiln_err err;
    assert_ok(kiln_storage_wrap(fake, sizeof(fake), (kiln_device){KILN_DEVICE_CUDA, 0},
                                release_none, NULL, &s, &err),
              &err);
    kiln_storage_unref(dev.in[0].data);
    dev.in[0].data = s;
    atomic_store(&answered, 0);
    assert_ok(kiln_engine_infer(e, &dev.req, &err), &err);
    for (int i = 0; i < 4; i++) {
        prepare(&host[i], "simple", i);
        assert_ok(kiln_engine_infer(e, &host[i].req, &err), &err);
    }
    for (int i = 0; i < 5000 && atomic_load(&answered) < 5; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&answered), 5);
    assert_int_equal(dev.st, KILN_INVALID_ARGUMENT);
    assert_non_null(strstr(dev.msg, "CUDA"));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(host[i].st, KILN_OK);
        assert_int_equal(host[i].wrong, 0);
    }
    kiln_engine_drain(e);
    kiln_engine_destroy(e);
}

/* A repository in `repo` (a mkdtemp template) with one model "slow": the identity plugin with
 * one INT32 [16] input and output, max_batch_size 4, and `extra` config text. */
static void slow_repo(char *repo, const char *extra)
{
    assert_non_null(mkdtemp(repo));
    char p[512];
    snprintf(p, sizeof(p), "%s/slow", repo);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/slow/1", repo);
    mkdir(p, 0700);
    char so[1024];
    snprintf(so, sizeof(so), "%s/plugins/identity.so", kiln_test_build_dir());
    snprintf(p, sizeof(p), "%s/slow/1/model.so", repo);
    assert_int_equal(symlink(so, p), 0);
    snprintf(p, sizeof(p), "%s/slow/config.pbtxt", repo);
    FILE *f = fopen(p, "w");
    fprintf(f,
            "backend: 'plugin' max_batch_size: 4 input { name: 'INPUT0' data_type: TYPE_INT32 "
            "dims: [16] } output { name: 'OUTPUT0' data_type: TYPE_INT32 dims: [16] } %s",
            extra);
    fclose(f);
}

static kiln_engine *slow_engine(const char *repo)
{
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.repository = repo;
    kiln_engine *e;
    kiln_err err;
    assert_status(kiln_engine_create(&o, &e, &err), KILN_OK, &err, NULL);
    assert_ok(kiln_engine_load(e, "slow", NULL, NULL, &err), &err);
    return e;
}

/* Drains and destroys e, then removes its repository. */
static void stop_slow(kiln_engine *e, const char *repo)
{
    kiln_engine_drain(e);
    kiln_engine_destroy(e);
    char p[512];
    snprintf(p, sizeof(p), "rm -rf %s", repo);
    assert_int_equal(system(p), 0);
}

static uint64_t slow_executions(kiln_engine *e)
{
    kiln_model_status s;
    kiln_err err;
    assert_ok(kiln_registry_status(kiln_engine_registry(e), "slow", 1, &s, &err), &err);
    return s.stats.execution_count;
}

/* One INT32 [1,16] input, for the identity model. */
static void prepare_one(call *c, int32_t base)
{
    prepare(c, "slow", base);
    c->req.n_inputs = 1;
    kiln_storage_unref(c->in[1].data);
}

static void wait_answered(int n)
{
    for (int i = 0; i < 5000 && atomic_load(&answered) < n; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&answered), n);
}

static void cancelled_while_queued_never_runs(void **state)
{
    (void)state;
    /* a slow model (one instance, 200 ms per batch) */
    char repo[] = "/tmp/kiln-engine-XXXXXX";
    slow_repo(repo, "parameters { key: 'execute_delay_ms' value { string_value: '200' } } "
                    "dynamic_batching { default_queue_policy { max_queue_size: 1 } }");
    kiln_engine *e = slow_engine(repo);
    kiln_err err;
    call a, b, c;
    prepare_one(&a, 0);
    prepare_one(&b, 0);
    prepare_one(&c, 0);
    atomic_store(&answered, 0);
    assert_ok(kiln_engine_infer(e, &a.req, &err), &err); /* runs */
    usleep(50000);
    assert_ok(kiln_engine_infer(e, &b.req, &err), &err); /* waits */
    assert_status(kiln_engine_infer(e, &c.req, &err), KILN_RESOURCE_EXHAUSTED, &err,
                  "model 'slow' queue is full (1 requests waiting, max_queue_size 1)");
    atomic_store(&b.req.cancelled, true);
    kiln_engine_poke(e);
    for (int i = 0; i < 5000 && atomic_load(&answered) < 2; i++)
        usleep(1000);
    assert_int_equal(a.st, KILN_OK);
    assert_int_equal(b.st, KILN_CANCELLED);
    assert_non_null(strstr(b.msg, "cancelled while it was queued"));
    assert_int_equal(slow_executions(e), 1);
    stop_slow(e, repo);
}

/* A request whose deadline has passed when it is queued gets DEADLINE_EXCEEDED, even though an
 * instance is free to run it at once. */
static void expired_on_arrival_never_runs(void **state)
{
    (void)state;
    char repo[] = "/tmp/kiln-engine-XXXXXX";
    slow_repo(repo, "");
    kiln_engine *e = slow_engine(repo);
    kiln_err err;
    call a;
    prepare_one(&a, 0);
    a.req.deadline_ns = kiln_clock_now_ns() - 1;
    atomic_store(&answered, 0);
    assert_ok(kiln_engine_infer(e, &a.req, &err), &err);
    wait_answered(1);
    assert_int_equal(a.st, KILN_DEADLINE_EXCEEDED);
    assert_int_equal(slow_executions(e), 0);
    stop_slow(e, repo);
}

static void *drainer(void *arg)
{
    kiln_engine_drain(arg);
    return NULL;
}

/* Drain runs a partial batch that was waiting (a 50 s batching delay) for more rows, instead of
 * waiting out the delay. */
static void drain_flushes_waiting_batches(void **state)
{
    (void)state;
    char repo[] = "/tmp/kiln-engine-XXXXXX";
    slow_repo(repo, "dynamic_batching { max_queue_delay_microseconds: 50000000 }");
    kiln_engine *e = slow_engine(repo);
    kiln_err err;
    call a;
    prepare_one(&a, 7);
    atomic_store(&answered, 0);
    assert_ok(kiln_engine_infer(e, &a.req, &err), &err);
    usleep(20000);
    assert_int_equal(atomic_load(&answered), 0); /* waiting for more rows */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, drainer, e), 0);
    wait_answered(1);
    assert_int_equal(a.st, KILN_OK);
    pthread_join(t, NULL);
    stop_slow(e, repo); /* drained already: a second drain returns at once */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(many_threads_batch_and_answer_right),
        cmocka_unit_test(cancelled_while_queued_never_runs),
        cmocka_unit_test(expired_on_arrival_never_runs),
        cmocka_unit_test(drain_flushes_waiting_batches),
        cmocka_unit_test(device_input_runs_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
