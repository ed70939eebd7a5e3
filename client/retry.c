/* client/retry.c: one RPC with retries on UNAVAILABLE, exponential backoff and full jitter. */
#include "client/client_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t kiln__backoff_ceiling_ms(const kiln__backoff *b, int retry)
{
    if (b->initial_ms <= 0 || b->max_ms <= 0)
        return 0;
    double c = (double)b->initial_ms;
    /* multiply step by step so a huge retry count stops at the cap instead of reaching inf */
    for (int i = 0; i < retry && c < (double)b->max_ms; i++)
        c *= b->multiplier;
    if (c >= (double)b->max_ms)
        return b->max_ms;
    return (int64_t)c;
}

int64_t kiln__backoff_delay_ms(const kiln__backoff *b, int retry, double u)
{
    int64_t ceiling = kiln__backoff_ceiling_ms(b, retry);
    if (u < 0.0)
        u = 0.0;
    /* floor(u * (ceiling + 1)) takes every value 0 .. ceiling for u in [0, 1) */
    int64_t d = (int64_t)(u * (double)(ceiling + 1));
    return d > ceiling ? ceiling : d;
}

double kiln__client_rand(void *client)
{
    kiln_client *c = client;
    /* splitmix64: an atomic add makes it safe from any number of threads */
    uint64_t z =
        atomic_fetch_add(&c->rng, UINT64_C(0x9e3779b97f4a7c15)) + UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

void kiln__client_sleep(void *ctx, int64_t ms)
{
    (void)ctx;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Says in the message how many attempts were made, keeping the server's words first. */
static void note_attempts(kiln_err *err, int attempts)
{
    if (!err || attempts < 2)
        return;
    size_t len = strlen(err->msg);
    if (len + 1 < sizeof(err->msg))
        snprintf(err->msg + len, sizeof(err->msg) - len, " (%d attempts)", attempts);
}

void kiln__retry_begin(kiln__retry *r, kiln_client *c, kiln__retry_policy policy,
                       int64_t timeout_ms)
{
    memset(r, 0, sizeof(*r));
    r->c = c;
    r->attempts = 1 + (policy == KILN__RETRY_ON_UNAVAILABLE ? c->retries : 0);
    int64_t t = timeout_ms > 0 ? timeout_ms : c->timeout_ms;
    r->opts.deadline_ms = t > 0 ? t : -1;
}

bool kiln__retry_again(kiln__retry *r, kiln_status st, kiln_err *err)
{
    r->attempt++;
    if (st == KILN_UNAVAILABLE && r->attempt < r->attempts) {
        /* UNAVAILABLE: the call did not run, or ran idempotently; wait and go again */
        kiln_client *c = r->c;
        c->sleep(c->sleep_ctx,
                 kiln__backoff_delay_ms(&c->backoff, r->attempt - 1, c->rand(c->rand_ctx)));
        kiln_err_clear(err);
        return true;
    }
    if (st != KILN_OK)
        note_attempts(err, r->attempt);
    return false;
}
