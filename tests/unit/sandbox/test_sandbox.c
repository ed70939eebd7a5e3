/*
 * Unit tests: the sandbox. The misbehaving plugin runs on a sandboxed thread: every attempt is
 * blocked with EPERM and recorded, the request is failed with the names of the calls, and the
 * process goes on; the same plugin on an unsandboxed thread is unaffected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backends/backend.h"
#include "common/clock.h"
#include "common/log.h"
#include "sandbox/sandbox.h"
#include "tests/support.h"

typedef struct job {
    bool sandbox;
    kiln_sandbox_policy policy;
    int32_t mode;
    uint64_t cpu_limit_ns;
    /* results */
    kiln_status exec_status, check_status;
    kiln_err check_err;
    int32_t result[5];
    kiln_sandbox_report report;
    bool thread_ok, read_ok;
} job;

static kiln_backend_model *misbehave;
static kiln_model_config *misbehave_cfg;

static int setup(void **state)
{
    (void)state;
    kiln_err e;
    misbehave_cfg = kiln_test_model_config("test-models", "misbehave");
    char dir[1024], vdir[1100];
    snprintf(dir, sizeof(dir), "%s/test-models/misbehave", kiln_test_build_dir());
    snprintf(vdir, sizeof(vdir), "%s/1", dir);
    kiln_load_args a = {"misbehave", dir, vdir, 1, misbehave_cfg, {KILN_DEVICE_CPU, 0}};
    if (kiln_backend_find("plugin")->load(&a, &misbehave, &e) != KILN_OK)
        fail_msg("load: %s", e.msg);
    kiln_log_set_level(KILN_LOG_ERROR);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kiln_backend_find("plugin")->unload(misbehave);
    kiln_model_config_free(misbehave_cfg);
    return 0;
}

static int stop_cb(void *ctx)
{
    (void)ctx;
    return kiln_sandbox_stop_requested();
}

static void *noop_thread(void *arg)
{
    return arg;
}

static void *run_job(void *arg)
{
    job *j = arg;
    kiln_err e;
    if (j->sandbox && kiln_sandbox_enter(&j->policy, &e) != KILN_OK) {
        j->exec_status = e.code;
        return NULL;
    }
    kiln_sandbox_begin(j->cpu_limit_ns, &e);
    kiln_shape sh = {.rank = 1, .dims = {1}};
    kiln_tensor in;
    kiln_tensor_alloc(KILN_DTYPE_INT32, &sh, 0, &in, &e);
    *(int32_t *)in.data = j->mode;
    kiln_output_slot out = {.index = 0};
    kiln_batch b = {
        .n_inputs = 1, .inputs = &in, .n_outputs = 1, .outputs = &out, .should_stop = stop_cb};
    j->exec_status = kiln_backend_find("plugin")->execute(misbehave, &b, &e);
    kiln_sandbox_end(&j->report);
    if (j->exec_status == KILN_OK)
        memcpy(j->result, out.result.data, sizeof(j->result));
    kiln_tensor_fini(&out.result);
    kiln_tensor_fini(&in);
    j->check_status =
        kiln_sandbox_check(&j->report, "misbehave", "req-7", j->cpu_limit_ns, &j->check_err);
    /* the thread still works: threads, reading files */
    pthread_t t;
    j->thread_ok = pthread_create(&t, NULL, noop_thread, NULL) == 0 && pthread_join(t, NULL) == 0;
    int fd = open("/proc/self/status", O_RDONLY);
    j->read_ok = fd >= 0;
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void run(job *j)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_job, j), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
}

static bool recorded(const kiln_sandbox_report *r, const char *name)
{
    for (uint32_t i = 0; i < r->n_recorded; i++)
        if (strcmp(r->names[i], name) == 0)
            return true;
    return false;
}

static void every_attempt_blocked_and_reported(void **state)
{
    (void)state;
    kiln_test_log_capture();
    kiln_log_set_level(KILN_LOG_WARN);
    job j = {.sandbox = true, .mode = 1 | 2 | 4 | 8};
    run(&j);
    assert_int_equal(j.exec_status, KILN_OK); /* the plugin itself claims success */
    assert_int_equal(j.result[0], EPERM);     /* socket */
    assert_int_equal(j.result[1], EPERM);     /* execve */
    assert_int_equal(j.result[2], EPERM);     /* open for writing */
    assert_int_equal(j.result[3], EPERM);     /* fork */
    assert_int_equal(j.result[4], -1);
    assert_int_equal(j.report.violations, 4);
    assert_true(recorded(&j.report, "socket"));
    assert_true(recorded(&j.report, "execve"));
    assert_true(recorded(&j.report, "openat"));
    assert_true(recorded(&j.report, "clone"));
    assert_status(j.check_status, KILN_PERMISSION_DENIED, &j.check_err,
                  "model 'misbehave' attempted forbidden system calls: socket, execve, openat, "
                  "clone (blocked by the sandbox, 4 attempts)");
    assert_true(j.thread_ok);
    assert_true(j.read_ok);
    const char *log = kiln_test_log_read();
    assert_non_null(strstr(log, "sandbox blocked system call socket"));
    assert_non_null(strstr(log, "\"request_id\":\"req-7\",\"model\":\"misbehave\""));
    kiln_test_log_restore();
    kiln_log_set_level(KILN_LOG_ERROR);
    /* the file the plugin tried to create does not exist */
    char path[64];
    snprintf(path, sizeof(path), "/tmp/kiln-misbehave-%ld", (long)getpid());
    assert_int_equal(access(path, F_OK), -1);
}

static void unsandboxed_thread_unaffected(void **state)
{
    (void)state;
    /* socket and file writes only: exec and fork would act for real here */
    job j = {.sandbox = false, .mode = 1 | 4};
    run(&j);
    assert_int_equal(j.exec_status, KILN_OK);
    assert_int_equal(j.result[0], 0);
    assert_int_equal(j.result[2], 0);
    assert_int_equal(j.report.violations, 0);
    assert_int_equal(j.check_status, KILN_OK);
    assert_false(kiln_sandbox_active()); /* this (main) thread never entered */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    close(fd);
}

static void policy_relaxations(void **state)
{
    (void)state;
    job j = {.sandbox = true,
             .policy = {.allow_network = true, .allow_file_writes = true},
             .mode = 1 | 4};
    run(&j);
    assert_int_equal(j.result[0], 0);
    assert_int_equal(j.result[2], 0);
    assert_int_equal(j.report.violations, 0);
}

static void cpu_watchdog_stops_a_runaway_model(void **state)
{
    (void)state;
    job j = {.sandbox = true, .mode = 16, .cpu_limit_ns = 50 * KILN_NS_PER_MS};
    run(&j);
    assert_int_equal(j.exec_status, KILN_OK);
    assert_int_equal(j.result[4], 0); /* stopped through should_stop, not by its 10 s cap */
    assert_true(j.report.cpu_exceeded);
    assert_true(j.report.cpu_ns >= 50 * KILN_NS_PER_MS);
    assert_status(j.check_status, KILN_RESOURCE_EXHAUSTED, &j.check_err,
                  "model 'misbehave' used more than 50 ms of CPU time on one request");
    /* the next request on a fresh thread starts clean */
    job k = {.sandbox = true, .mode = 0, .cpu_limit_ns = 50 * KILN_NS_PER_MS};
    run(&k);
    assert_false(k.report.cpu_exceeded);
    assert_int_equal(k.check_status, KILN_OK);
}

static void *sigaction_attempt(void *arg)
{
    int *rc = arg;
    kiln_err e;
    kiln_sandbox_enter(NULL, &e);
    kiln_sandbox_begin(0, &e);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    rc[0] = sigaction(SIGSYS, &sa, NULL) == 0 ? 0 : errno;
    rc[1] = sigaction(SIGUSR1, &sa, NULL) == 0 ? 0 : errno; /* others are fine */
    kiln_sandbox_report r;
    kiln_sandbox_end(&r);
    rc[2] = (int)r.violations;
    rc[3] = kiln_sandbox_active();
    return NULL;
}

static void sandbox_keeps_its_signal_handlers(void **state)
{
    (void)state;
#if defined(__SANITIZE_THREAD__)
    /* TSan's sigaction interceptor keeps handlers in its own table without a syscall, so the
     * kernel-level guard cannot be observed here; the plain and ASan builds check it */
    skip();
#endif
    int rc[4];
    pthread_t t;
    pthread_create(&t, NULL, sigaction_attempt, rc);
    pthread_join(t, NULL);
    assert_int_equal(rc[0], EPERM);
    assert_int_equal(rc[1], 0);
    assert_int_equal(rc[2], 1);
    assert_int_equal(rc[3], 1);
    signal(SIGUSR1, SIG_DFL);
}

static void *escape_attempts(void *arg)
{
    long *r = arg;
    kiln_err e;
    kiln_sandbox_enter(NULL, &e);
    kiln_sandbox_begin(0, &e);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    /* the kernel reads 32 bits of the signal number: high bits must not slip past the rule */
    r[0] = syscall(SYS_rt_sigaction, (1UL << 32) | SIGSYS, &sa, NULL, 8) == 0 ? 0 : errno;
    r[1] = syscall(SYS_tgkill, 1, 1, 0) == 0 ? 0 : errno; /* another process */
    r[2] = syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), 0) == 0 ? 0 : errno; /* ourselves */
    r[3] = syscall(SYS_pidfd_open, 1, 0) >= 0 ? 0 : errno;
    r[5] = syscall(452 /* fchmodat2 */, AT_FDCWD, "/proc/self/exe", 0777, 0) == 0 ? 0 : errno;
    kiln_sandbox_report rep;
    kiln_sandbox_end(&rep);
    r[4] = rep.violations;
    return NULL;
}

static void no_escape_by_side_doors(void **state)
{
    (void)state;
#if defined(__SANITIZE_THREAD__)
    skip(); /* TSan intercepts signal calls itself */
#endif
    long r[6];
    pthread_t t;
    pthread_create(&t, NULL, escape_attempts, r);
    pthread_join(t, NULL);
    assert_int_equal(r[0], EPERM);
    assert_int_equal(r[1], EPERM);
    assert_int_equal(r[2], 0);
    assert_int_equal(r[3], EPERM);
    assert_int_equal(r[5], EPERM);
    assert_int_equal(r[4], 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_attempt_blocked_and_reported),
        cmocka_unit_test(unsandboxed_thread_unaffected),
        cmocka_unit_test(policy_relaxations),
        cmocka_unit_test(cpu_watchdog_stops_a_runaway_model),
        cmocka_unit_test(sandbox_keeps_its_signal_handlers),
        cmocka_unit_test(no_escape_by_side_doors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
