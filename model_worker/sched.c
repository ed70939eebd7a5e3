/*
 * model_worker/sched.c: per-model queues, the dynamic batcher and batch execution.
 *
 * One scheduler thread owns the decisions. Requests wait in their model's bounded queue.
 * Whenever an instance of a model is free, the scheduler forms a batch from that model's queue
 * and hands it to an execution thread:
 *   - without dynamic batching (or without a batch dim) a batch is one request;
 *   - with it, requests whose non-batch dims, dtypes, present inputs and requested outputs
 *     equal the oldest's are gathered up to max_batch_size rows; the batch runs at once when
 *     it reaches a preferred size or max_batch_size, else when the oldest request has waited
 *     max_queue_delay_microseconds.
 * Requests whose deadline passes (the client's, or the model's queue policy) or that are
 * cancelled while queued are answered DEADLINE_EXCEEDED / CANCELLED without running.
 *
 * Execution (on a sandboxed thread): a batch of one runs on the request's own tensors (a
 * client's shared-memory outputs are written in place). A larger batch gathers each input
 * into one tensor (no copy when the requests' inputs already lie back to back in memory),
 * runs, and splits each output back per request as views of the batch output (no copy), or
 * copies rows into a request's region when it asked for one. A request that expired or was
 * cancelled while its batch ran gets its error, and its rows are dropped.
 */
#include <inttypes.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "model_worker/worker_int.h"
#include "sandbox/sandbox.h"

/* ---------------------------------------------------------------- queueing */

static void dispatch_locked(kiln_engine *e, model_queue *q, uint64_t now, kiln_pending **done,
                            uint64_t *wake);
static void answer_all(kiln_pending *done);
static kiln_status expired(const kiln_pending *p, uint64_t now, bool queued, kiln_err *err);

/* When p stops being worth waiting for (its deadline or queue timeout), 0 = never. */
static uint64_t due_time(const kiln_pending *p)
{
    uint64_t due = p->deadline_ns;
    if (p->queue_deadline_ns && (!due || p->queue_deadline_ns < due))
        due = p->queue_deadline_ns;
    return due;
}

/* Counts n requests out of the engine; drain waits for the count to reach 0. REQUIRES: sched_mu. */
static void pending_done_locked(kiln_engine *e, size_t n)
{
    e->pending -= n;
    if (!e->pending)
        pthread_cond_broadcast(&e->sched_cond);
}

/*
 * Wakes the scheduler thread if it sleeps past `when`, the next time something queued needs it
 * (0 = nothing timed). A thread that queues or finishes work starts what can run itself, so
 * the scheduler is needed only for batching delays and deadlines; while it runs (not asleep) it
 * looks at every queue again before it sleeps. REQUIRES: sched_mu.
 */
static void wake_scheduler_locked(kiln_engine *e, uint64_t when)
{
    if (when && e->sched_sleeping_until && when < e->sched_sleeping_until)
        pthread_cond_broadcast(&e->sched_cond);
}

/*
 * Chains p (already out of its queue) onto *done with its answer, to be given by answer_all
 * once sched_mu is dropped. Needs no memory, so an answer is never lost. REQUIRES: sched_mu.
 */
static void answer_later(kiln_pending **done, kiln_pending *p, kiln_status st, const kiln_err *err)
{
    p->answer_st = st;
    p->answer_err = *err;
    p->next = *done;
    *done = p;
}

static model_queue *queue_for_locked(kiln_engine *e, kiln_model *m)
{
    for (model_queue *q = e->queues; q; q = q->next)
        if (q->model == m)
            return q;
    model_queue *q = kiln_calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->model = m;
    q->next = e->queues;
    e->queues = q;
    return q;
}

kiln_status kiln__sched_enqueue(kiln_engine *e, kiln_pending *p, kiln_err *err)
{
    size_t limit = p->cfg->max_queue_size ? p->cfg->max_queue_size : e->opt.queue_limit;
    pthread_mutex_lock(&e->sched_mu);
    if (e->sched_stop || e->sched_draining) {
        pthread_mutex_unlock(&e->sched_mu);
        return kiln_err_set(err, KILN_UNAVAILABLE, "the server is shutting down");
    }
    model_queue *q = queue_for_locked(e, p->model);
    if (!q) {
        pthread_mutex_unlock(&e->sched_mu);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (limit && q->len >= limit) {
        size_t len = q->len;
        pthread_mutex_unlock(&e->sched_mu);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "model '%s' queue is full (%zu requests waiting, max_queue_size %zu)",
                            kiln_model_name(p->model), len, limit);
    }
    p->next = NULL;
    if (q->tail)
        q->tail->next = p;
    else
        q->head = p;
    q->tail = p;
    q->len++;
    e->pending++;
    /* start it here if it can run now; else the scheduler thread times it (a batching delay,
     * or p's own deadline while it waits) */
    kiln_pending *done = NULL;
    uint64_t wake = 0;
    dispatch_locked(e, q, kiln_clock_now_ns(), &done, &wake);
    uint64_t due = q->tail == p ? due_time(p) : 0; /* p is the tail while it is still queued */
    wake_scheduler_locked(e, due && (!wake || due < wake) ? due : wake);
    pthread_mutex_unlock(&e->sched_mu);
    answer_all(done);
    return KILN_OK;
}

/* ---------------------------------------------------------------- batch formation */

/* True if b can share a batch with a (same inputs present, dtypes, non-batch dims, outputs). */
static bool compatible(const kiln_pending *a, const kiln_pending *b)
{
    for (size_t k = 0; k < a->n_inputs; k++) {
        const kiln_tensor *x = &a->inputs[k], *y = &b->inputs[k];
        if (!x->storage != !y->storage)
            return false;
        if (!x->storage)
            continue;
        if (x->dtype != y->dtype || x->shape.rank != y->shape.rank ||
            x->device.kind != KILN_DEVICE_CPU || y->device.kind != KILN_DEVICE_CPU)
            return false;
        for (int d = 1; d < x->shape.rank; d++)
            if (x->shape.dims[d] != y->shape.dims[d])
                return false;
    }
    if (a->n_slots != b->n_slots)
        return false;
    for (uint32_t i = 0; i < a->n_slots; i++) {
        if (a->slots[i].index != b->slots[i].index)
            return false;
        /* rows are split into the requests' buffers on the host: device ones run alone */
        if ((a->slots[i].buffer &&
             kiln_storage_device(a->slots[i].buffer).kind != KILN_DEVICE_CPU) ||
            (b->slots[i].buffer && kiln_storage_device(b->slots[i].buffer).kind != KILN_DEVICE_CPU))
            return false;
    }
    return true;
}

static bool preferred(const kiln_model_config *c, uint32_t rows)
{
    for (size_t i = 0; i < c->n_preferred_batch_sizes; i++)
        if ((uint32_t)c->preferred_batch_sizes[i] == rows)
            return true;
    return false;
}

/* A formed batch: up to max_batch_size requests. */
typedef struct batch_job {
    kiln_job job;
    kiln_engine *e;
    model_queue *q;
    uint32_t instance;
    uint32_t n;
    kiln_pending **reqs;
} batch_job;

/* Unlinks p from q's queue; prev is the request before it (NULL at the head). */
static void unlink_locked(model_queue *q, kiln_pending *prev, kiln_pending *p)
{
    if (prev)
        prev->next = p->next;
    else
        q->head = p->next;
    if (q->tail == p)
        q->tail = prev;
    q->len--;
}

/*
 * If queued request p expired or was cancelled, takes it out of q (prev is the request before
 * it), chains it onto *done with its error and returns true. REQUIRES: sched_mu.
 */
static bool drop_if_dead_locked(kiln_engine *e, model_queue *q, kiln_pending *prev, kiln_pending *p,
                                uint64_t now, kiln_pending **done)
{
    kiln_err err;
    kiln_status st = expired(p, now, true, &err);
    if (st == KILN_OK)
        return false;
    unlink_locked(q, prev, p);
    pending_done_locked(e, 1);
    answer_later(done, p, st, &err);
    return true;
}

/*
 * Takes a batch from q's queue if one should run now (flush: the server is stopping, so do not
 * wait for more rows). Returns the number of requests taken into out (0 if none); *wake is when
 * to look again (0 = no timed wake needed). A request met on the way that expired or was
 * cancelled is taken out and added to *done with its error: it never runs. (The scheduler
 * thread expires the rest of the queue on time.)
 * REQUIRES: sched_mu.
 */
static uint32_t form_batch_locked(kiln_engine *e, model_queue *q, uint64_t now, bool flush,
                                  kiln_pending **out, uint32_t cap, kiln_pending **done,
                                  uint64_t *wake)
{
    *wake = 0;
    kiln_pending *first = NULL, *prev = NULL, *next;
    const kiln_model_config *c = NULL;
    bool batching = false;
    uint32_t n = 0, rows = 0, max = 1;
    bool alone = false; /* the first request's tensors are in device memory: it runs by itself */
    for (kiln_pending *p = q->head; p && n < cap; p = next) {
        next = p->next;
        if (drop_if_dead_locked(e, q, prev, p, now, done))
            continue;
        if (!first) {
            first = p;
            c = p->cfg;
            batching = c->dynamic_batching && c->max_batch_size > 0;
            max = batching ? (uint32_t)c->max_batch_size : 1;
            alone = batching && !compatible(p, p);
        }
        prev = p;
        if (batching && p != first && (alone || !compatible(first, p) || rows + p->rows > max))
            continue;
        out[n++] = p;
        rows += p->rows;
        if (!batching || rows >= max || alone)
            break;
    }
    if (!n)
        return 0;
    if (batching && !alone && rows != max && !preferred(c, rows) && !flush &&
        c->max_queue_delay_us &&
        now < first->enqueued_ns + c->max_queue_delay_us * KILN_NS_PER_US) {
        *wake = first->enqueued_ns + c->max_queue_delay_us * KILN_NS_PER_US;
        return 0; /* wait a little for more requests */
    }
    /* unlink the chosen requests, keeping the others in order */
    for (uint32_t i = 0; i < n; i++) {
        kiln_pending *before = NULL;
        for (kiln_pending *x = q->head; x != out[i]; x = x->next)
            before = x;
        unlink_locked(q, before, out[i]);
    }
    return n;
}

/* ---------------------------------------------------------------- batch execution */

static void storage_unref_all(void *ctx, void *data)
{
    (void)data;
    kiln_storage **list = ctx;
    for (size_t i = 0; list[i]; i++)
        kiln_storage_unref(list[i]);
    kiln_free(list);
}

/* The batch dim's extent of a tensor (1 when it has no batch dim). */
static uint32_t tensor_rows(const kiln_tensor *t, bool batched)
{
    return batched && t->shape.rank ? (uint32_t)t->shape.dims[0] : 1;
}

/*
 * Gathers input k of the batch's requests into one tensor. No copy when the pieces already
 * lie back to back in memory; else one copy (counted for each request).
 */
static kiln_status gather(batch_job *b, size_t k, kiln_tensor *out, uint64_t *copied, kiln_err *err)
{
    kiln_tensor *first = &b->reqs[0]->inputs[k];
    kiln_shape shape = first->shape;
    size_t bytes = 0;
    bool adjacent = true;
    const unsigned char *expect = first->data;
    for (uint32_t i = 0; i < b->n; i++) {
        kiln_tensor *t = &b->reqs[i]->inputs[k];
        if (i)
            shape.dims[0] += t->shape.dims[0];
        adjacent = adjacent && (const unsigned char *)t->data == expect;
        expect = (const unsigned char *)t->data + t->byte_size;
        bytes += t->byte_size;
    }
    if (adjacent) { /* one span: a view that keeps every piece's storage alive */
        kiln_storage **hold = kiln_calloc(b->n + 1, sizeof(*hold));
        kiln_storage *span = NULL;
        if (!hold)
            return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
        for (uint32_t i = 0; i < b->n; i++) {
            hold[i] = b->reqs[i]->inputs[k].storage;
            kiln_storage_ref(hold[i]);
        }
        kiln_status st = kiln_storage_wrap(first->data, bytes, first->device, storage_unref_all,
                                           hold, &span, err);
        if (st != KILN_OK) {
            storage_unref_all(hold, NULL);
            return st;
        }
        st = kiln_tensor_view_for_write(span, 0, first->dtype, &shape, bytes, out, err);
        kiln_storage_unref(span);
        return st;
    }
    kiln_status st = kiln_tensor_alloc(first->dtype, &shape, bytes, out, err);
    if (st != KILN_OK)
        return st;
    size_t off = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        kiln_tensor *t = &b->reqs[i]->inputs[k];
        memcpy((unsigned char *)out->data + off, t->data, t->byte_size);
        off += t->byte_size;
        copied[i] += t->byte_size;
    }
    return KILN_OK;
}

/* Byte offset and size of rows [row, row + count) of a batch output. */
static kiln_status row_window(const kiln_tensor *t, uint32_t total_rows, uint32_t row,
                              uint32_t count, size_t *off, size_t *len, kiln_err *err)
{
    if (t->dtype != KILN_DTYPE_BYTES) {
        size_t per_row = t->byte_size / (total_rows ? total_rows : 1);
        *off = per_row * row;
        *len = per_row * count;
        return KILN_OK;
    }
    uint64_t numel;
    kiln_shape_numel(&t->shape, &numel, NULL);
    uint64_t per_row = numel / (total_rows ? total_rows : 1);
    kiln_bytes_iter it;
    kiln_bytes_iter_init(&it, t->data, t->byte_size);
    const uint8_t *el;
    uint32_t l;
    uint64_t skip = per_row * row, take = per_row * count, i = 0;
    const uint8_t *start = it.p, *end = NULL;
    for (; i < skip; i++)
        if (!kiln_bytes_next(&it, &el, &l))
            return kiln_err_set(err, KILN_INTERNAL, "BYTES output is shorter than its shape");
    start = it.p;
    for (i = 0; i < take; i++)
        if (!kiln_bytes_next(&it, &el, &l))
            return kiln_err_set(err, KILN_INTERNAL, "BYTES output is shorter than its shape");
    end = it.p;
    *off = (size_t)(start - (const uint8_t *)t->data);
    *len = (size_t)(end - start);
    return KILN_OK;
}

/* Gives request p its rows of every batch output. */
static kiln_status split(batch_job *b, kiln_pending *p, kiln_output_slot *bslots,
                         uint32_t total_rows, uint32_t row, kiln_err *err)
{
    for (uint32_t s = 0; s < p->n_slots; s++) {
        const kiln_tensor *t = &bslots[s].result;
        size_t off = 0, len = 0;
        kiln_status st = row_window(t, total_rows, row, p->rows, &off, &len, err);
        if (st != KILN_OK)
            return st;
        kiln_shape shape = t->shape;
        if (shape.rank)
            shape.dims[0] = p->rows;
        kiln_output_slot *dst = &p->slots[s];
        if (dst->buffer) { /* the client's region: copy its rows there */
            if (len > dst->capacity)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "output '%s' needs %zu bytes but its shared memory window "
                                    "holds %zu",
                                    p->cfg->outputs[dst->index].name, len, dst->capacity);
            memcpy((unsigned char *)kiln_storage_data(dst->buffer) + dst->offset,
                   (const unsigned char *)t->data + off, len);
            p->copied_out += len;
            st = kiln_tensor_view_for_write(dst->buffer, dst->offset, t->dtype, &shape, len,
                                            &dst->result, err);
        } else { /* a view of the batch output: no copy */
            st = kiln_tensor_view_for_write(
                t->storage,
                (size_t)((const unsigned char *)t->data -
                         (const unsigned char *)kiln_storage_data(t->storage)) +
                    off,
                t->dtype, &shape, len, &dst->result, err);
        }
        if (st != KILN_OK)
            return st;
    }
    (void)b;
    return KILN_OK;
}

static int batch_should_stop(void *ctx)
{
    batch_job *b = ctx;
    if (kiln_sandbox_stop_requested())
        return 1;
    uint64_t now = kiln_clock_now_ns();
    for (uint32_t i = 0; i < b->n; i++) {
        kiln_pending *p = b->reqs[i];
        if (!kiln_infer_request_cancelled(p->req) && (!p->deadline_ns || now < p->deadline_ns))
            return 0; /* the queue policy no longer applies once running */
    }
    return 1; /* nobody wants the result any more */
}

/*
 * The error for a request that expired or was cancelled; KILN_OK if it is still wanted.
 * queued: the model's queue-policy timeout counts too (it bounds queueing only).
 */
static kiln_status expired(const kiln_pending *p, uint64_t now, bool queued, kiln_err *err)
{
    const char *where = queued ? "while it was queued" : "while its batch ran";
    if (kiln_infer_request_cancelled(p->req))
        return kiln_err_set(err, KILN_CANCELLED, "the request was cancelled %s", where);
    if (p->deadline_ns && now >= p->deadline_ns)
        return kiln_err_set(err, KILN_DEADLINE_EXCEEDED,
                            "the request's deadline passed %s (after %.1f ms for model '%s')",
                            where, (double)(now - p->enqueued_ns) / 1e6, kiln_model_name(p->model));
    if (queued && p->queue_deadline_ns && now >= p->queue_deadline_ns)
        return kiln_err_set(err, KILN_DEADLINE_EXCEEDED,
                            "the request's queue timeout (queue policy) passed while it was "
                            "queued (after %.1f ms for model '%s')",
                            (double)(now - p->enqueued_ns) / 1e6, kiln_model_name(p->model));
    return KILN_OK;
}

static void release_instance(batch_job *b)
{
    kiln_engine *e = b->e;
    pthread_mutex_lock(&e->sched_mu);
    b->q->busy &= ~(1u << b->instance);
    pending_done_locked(e, b->n);
    /* the next batch of this model can start from here */
    kiln_pending *done = NULL;
    uint64_t wake = 0;
    dispatch_locked(e, b->q, kiln_clock_now_ns(), &done, &wake);
    wake_scheduler_locked(e, wake);
    pthread_mutex_unlock(&e->sched_mu);
    answer_all(done);
}

/* One attempt of a batch's execute, inside the request's sandbox record and CPU limit (the
 * registry's evictions between attempts stay outside it). */
typedef struct sandboxed_run {
    kiln_engine *e;
    kiln_model *m;
    const char *request_id;
} sandboxed_run;

static kiln_status run_sandboxed(void *ctx, const kiln_backend *be, kiln_backend_model *bm,
                                 kiln_batch *batch, kiln_err *err)
{
    sandboxed_run *r = ctx;
    kiln_status st = kiln_sandbox_begin(r->e->opt.cpu_limit_ns, err);
    if (st != KILN_OK)
        return st;
    st = be->execute(bm, batch, err);
    kiln_sandbox_report rep;
    kiln_sandbox_end(&rep);
    kiln_err serr;
    kiln_status sst = kiln_sandbox_check(&rep, kiln_model_name(r->m), r->request_id,
                                         r->e->opt.cpu_limit_ns, &serr);
    if (sst != KILN_OK) { /* a violation outranks whatever the model said */
        kiln_batch_release_outputs(batch);
        batch->fault = KILN_FAULT_NONE;
        if (err)
            *err = serr;
        st = sst;
    }
    return st;
}

static void run_batch(kiln_job *job)
{
    batch_job *b = (batch_job *)job;
    kiln_engine *e = b->e;
    kiln_pending *p0 = b->reqs[0];
    const kiln_model_config *c = p0->cfg;
    kiln_model *m = p0->model;
    /* kept here: answering the requests frees them (p0 included) */
    size_t n_inputs = p0->n_inputs;
    uint32_t n_slots = p0->n_slots;
    bool batched = c->max_batch_size > 0;
    uint64_t start = kiln_clock_now_ns(), queue_ns = 0;
    uint32_t rows = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        rows += b->reqs[i]->rows;
        queue_ns += start - b->reqs[i]->enqueued_ns;
        b->reqs[i]->started_ns = start;
    }
    kiln_err err;
    kiln_err_clear(&err);
    kiln_status st = KILN_OK;
    uint64_t *copied = kiln_calloc(b->n, sizeof(*copied));
    kiln_tensor *inputs =
        b->n == 1 ? p0->inputs : kiln_calloc(p0->n_inputs ? p0->n_inputs : 1, sizeof(kiln_tensor));
    kiln_output_slot *slots =
        b->n == 1 ? p0->slots
                  : kiln_calloc(p0->n_slots ? p0->n_slots : 1, sizeof(kiln_output_slot));
    if (!copied || !inputs || !slots)
        st = kiln_err_set(&err, KILN_RESOURCE_EXHAUSTED, "out of memory forming a batch");
    for (size_t k = 0; st == KILN_OK && b->n > 1 && k < p0->n_inputs; k++)
        if (p0->inputs[k].storage)
            st = gather(b, k, &inputs[k], copied, &err);
    for (uint32_t s = 0; st == KILN_OK && b->n > 1 && s < p0->n_slots; s++)
        slots[s].index = p0->slots[s].index;
    uint64_t gathered = kiln_clock_now_ns(); /* the compute phases: input, infer, output */
    if (st == KILN_OK) {
        kiln_batch batch = {.batch_size = batched ? tensor_rows(&inputs[0], true) : 0,
                            .n_inputs = (uint32_t)p0->n_inputs,
                            .inputs = inputs,
                            .n_outputs = p0->n_slots,
                            .outputs = slots,
                            .should_stop = batch_should_stop,
                            .stop_ctx = b};
        if (batched && !inputs[0].storage) /* the first input is optional and absent */
            for (size_t k = 0; k < p0->n_inputs; k++)
                if (inputs[k].storage) {
                    batch.batch_size = tensor_rows(&inputs[k], true);
                    break;
                }
        sandboxed_run sr = {e, m, p0->req->request_id};
        st = kiln_model_execute(m, b->instance, &batch, run_sandboxed, &sr, &err);
    }
    uint64_t inferred = kiln_clock_now_ns();
    kiln_model_record(m, rows, st == KILN_OK, queue_ns, inferred - start);
    uint64_t now = kiln_clock_now_ns();
    uint32_t row = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        kiln_pending *p = b->reqs[i];
        kiln_err rerr;
        /* a request nobody waits for any more gets its own error, not the batch's */
        kiln_status rst = expired(p, now, false, &rerr);
        if (rst == KILN_OK && st != KILN_OK) {
            rst = st;
            rerr = err;
        } else if (rst == KILN_OK && b->n > 1) {
            rst = split(b, p, slots, rows, row, &rerr);
        }
        if (copied)
            p->req->copied_in_bytes += copied[i];
        row += p->rows;
        if (i == b->n - 1) /* while the last request still pins the model */
            kiln_model_record_phases(m, gathered - start, inferred - gathered,
                                     kiln_clock_now_ns() - inferred);
        kiln__pending_finish(p, rst, rst == KILN_OK ? NULL : &rerr);
    }
    if (b->n > 1 && inputs && slots) {
        for (size_t k = 0; k < n_inputs; k++)
            kiln_tensor_fini(&inputs[k]);
        for (uint32_t s = 0; s < n_slots; s++)
            kiln_tensor_fini(&slots[s].result);
    }
    if (b->n > 1) {
        kiln_free(inputs);
        kiln_free(slots);
    }
    kiln_free(copied);
    release_instance(b);
    kiln_free(b->reqs);
    kiln_free(b);
}

/* ---------------------------------------------------------------- the scheduler thread */

/* Removes queued requests that expired or were cancelled. REQUIRES: sched_mu. */
static void expire_locked(kiln_engine *e, model_queue *q, uint64_t now, kiln_pending **done,
                          uint64_t *wake)
{
    kiln_pending *prev = NULL, *next;
    for (kiln_pending *p = q->head; p; p = next) {
        next = p->next;
        if (drop_if_dead_locked(e, q, prev, p, now, done))
            continue;
        uint64_t due = due_time(p);
        if (due && (!*wake || due < *wake))
            *wake = due;
        prev = p;
    }
}

/*
 * Starts as many batches of q as it has free instances and ready batches. Requests that could
 * not be handed over are added to *done; *wake gets the next time a batch may become ready.
 * REQUIRES: sched_mu. Called by the scheduler thread, and directly by the thread that queues a
 * request or finishes a batch, so a batch that can run now does not wait for a thread switch.
 */
static void dispatch_locked(kiln_engine *e, model_queue *q, uint64_t now, kiln_pending **done,
                            uint64_t *wake)
{
    bool flush = e->sched_stop || e->sched_draining;
    while (q->head) {
        /* read while queued requests pin the model, so no unload changes it meanwhile */
        uint32_t n_inst = kiln_model_instance_count(q->model);
        uint32_t inst = 0;
        while (inst < n_inst && (q->busy & (1u << inst)))
            inst++;
        if (inst >= n_inst)
            return;
        uint32_t cap =
            q->head->cfg->max_batch_size > 0 ? (uint32_t)q->head->cfg->max_batch_size : 1;
        kiln_pending **reqs = kiln_calloc(cap, sizeof(*reqs));
        batch_job *b = kiln_calloc(1, sizeof(*b));
        uint64_t w = 0;
        uint32_t n = reqs && b ? form_batch_locked(e, q, now, flush, reqs, cap, done, &w) : 0;
        if (!n) {
            kiln_free(reqs);
            kiln_free(b);
            if (w && (!*wake || w < *wake))
                *wake = w;
            return;
        }
        *b = (batch_job){
            .job = {.run = run_batch}, .e = e, .q = q, .instance = inst, .n = n, .reqs = reqs};
        q->busy |= 1u << inst;
        kiln_err err;
        if (kiln__engine_post(e, &b->job, false, &err) != KILN_OK) {
            /* the pool refuses (stopping): answer the batch's requests */
            q->busy &= ~(1u << inst);
            pending_done_locked(e, n);
            for (uint32_t i = 0; i < n; i++)
                answer_later(done, reqs[i], err.code, &err);
            kiln_free(reqs);
            kiln_free(b);
            return;
        }
    }
}

/* Answers the requests chained by answer_later (outside sched_mu). */
static void answer_all(kiln_pending *done)
{
    while (done) {
        kiln_pending *n = done->next;
        kiln__pending_finish(done, done->answer_st, &done->answer_err);
        done = n;
    }
}

static void *scheduler_main(void *arg)
{
    kiln_engine *e = arg;
    /* batching delays are tens of microseconds: do not let the kernel stretch our waits */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    pthread_mutex_lock(&e->sched_mu);
    for (;;) {
        uint64_t now = kiln_clock_now_ns(), wake = 0;
        kiln_pending *done = NULL;
        for (model_queue *q = e->queues; q; q = q->next) {
            expire_locked(e, q, now, &done, &wake);
            dispatch_locked(e, q, now, &done, &wake);
        }
        if (done) {
            pthread_mutex_unlock(&e->sched_mu);
            answer_all(done);
            pthread_mutex_lock(&e->sched_mu);
            continue; /* look again: answering took time */
        }
        if (e->sched_stop && !e->pending)
            break;
        /* cancellations are noticed at the next event or within 50 ms */
        uint64_t idle = now + (e->pending ? 50 * KILN_NS_PER_MS : 1000 * KILN_NS_PER_MS);
        e->sched_sleeping_until = wake && wake < idle ? wake : idle;
        kiln_cond_wait_until(&e->sched_cond, &e->sched_mu, e->sched_sleeping_until);
        e->sched_sleeping_until = 0;
    }
    pthread_mutex_unlock(&e->sched_mu);
    return NULL;
}

kiln_status kiln__sched_start(kiln_engine *e, kiln_err *err)
{
    if (pthread_create(&e->scheduler, NULL, scheduler_main, e) != 0)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "cannot start the scheduler thread");
    e->scheduler_started = true;
    return KILN_OK;
}

void kiln__sched_stop(kiln_engine *e)
{
    if (!e->scheduler_started)
        return;
    pthread_mutex_lock(&e->sched_mu);
    e->sched_stop = true;
    pthread_cond_broadcast(&e->sched_cond);
    pthread_mutex_unlock(&e->sched_mu);
    pthread_join(e->scheduler, NULL);
    e->scheduler_started = false;
    for (model_queue *q = e->queues; q;) {
        model_queue *n = q->next;
        kiln_free(q);
        q = n;
    }
    e->queues = NULL;
}

void kiln_engine_poke(kiln_engine *e)
{
    pthread_mutex_lock(&e->sched_mu);
    pthread_cond_broadcast(&e->sched_cond);
    pthread_mutex_unlock(&e->sched_mu);
}
