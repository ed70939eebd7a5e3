/* sandbox/sandbox.c: per-thread seccomp filters with SIGSYS reporting, and a CPU watchdog. */
#include "sandbox/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1
#endif

/*
 * The calling thread's record. Written by the signal handlers running on this same thread,
 * read by the thread itself after the request: plain volatile fields suffice.
 */
typedef struct thread_state {
    bool active;
    volatile sig_atomic_t violations;
    volatile sig_atomic_t n_recorded;
    volatile int syscalls[KILN_SANDBOX_MAX_RECORDED];
    volatile sig_atomic_t cpu_exceeded;
    bool timer_made;
    timer_t timer;
    uint64_t cpu_start_ns;
} thread_state;

/* Thread-local because a signal handler has no other way to find its thread's record. */
static _Thread_local thread_state self;

/* Deletes a thread's watchdog timer when the thread exits (the key's value is the timer). */
static pthread_key_t timer_key;
static pthread_once_t timer_key_once = PTHREAD_ONCE_INIT;

static void delete_timer(void *p)
{
    timer_delete(*(timer_t *)p);
    free(p);
}

static void make_timer_key(void)
{
    pthread_key_create(&timer_key, delete_timer);
}

static void on_sigsys(int sig, siginfo_t *info, void *uctx)
{
    (void)sig;
    if (info->si_code != SYS_SECCOMP)
        return;
    int nr = info->si_syscall;
    self.violations++;
    int n = self.n_recorded, seen = 0;
    for (int i = 0; i < n; i++)
        seen |= self.syscalls[i] == nr;
    if (!seen && n < KILN_SANDBOX_MAX_RECORDED) {
        self.syscalls[n] = nr;
        self.n_recorded = n + 1;
    }
    ucontext_t *uc = uctx;
#if defined(__x86_64__)
    uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
#elif defined(__aarch64__)
    uc->uc_mcontext.regs[0] = (unsigned long long)-EPERM;
#else
#error "sandbox: set the syscall return register for this architecture"
#endif
}

static void on_sigxcpu(int sig, siginfo_t *info, void *uctx)
{
    (void)sig, (void)info, (void)uctx;
    self.cpu_exceeded = 1;
}

/*
 * Makes sure SIGSYS and SIGXCPU go to Kiln's handlers, (re)installing them if someone else
 * (a library, a test framework) replaced them. Sandboxed threads cannot replace them (the
 * filter refuses), but other threads could. Returns 0 or an errno.
 */
static int ensure_handlers(bool may_install)
{
    static const struct {
        int sig;
        void (*fn)(int, siginfo_t *, void *);
    } want[] = {{SIGSYS, on_sigsys}, {SIGXCPU, on_sigxcpu}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        struct sigaction cur;
        if (sigaction(want[i].sig, NULL, &cur) != 0)
            return errno;
        if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == want[i].fn)
            continue;
        if (!may_install)
            return EPERM; /* a sandboxed thread may not set them: fail loudly, not silently */
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sa.sa_sigaction = want[i].fn;
        if (sigaction(want[i].sig, &sa, NULL) != 0)
            return errno;
    }
    return 0;
}

/* Adds a rule; a syscall this architecture lacks is skipped (it cannot be called anyway). */
static int rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n_args,
                const struct scmp_arg_cmp *args)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
        return 0;
    return seccomp_rule_add_array(ctx, action, nr, n_args, args);
}

static int deny_all(scmp_filter_ctx ctx, const char *const *names)
{
    for (; *names; names++) {
        int rc = rule(ctx, SCMP_ACT_TRAP, *names, 0, NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Traps open-like calls whose flags argument (index flags_arg) asks for writing. */
static int deny_write_opens(scmp_filter_ctx ctx, const char *name, unsigned flags_arg)
{
    static const struct {
        uint64_t mask, value;
    } bad[] = {
        {O_ACCMODE, O_WRONLY},
        {O_ACCMODE, O_RDWR},
        {O_CREAT, O_CREAT},
        {O_TRUNC, O_TRUNC},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct scmp_arg_cmp cmp = {flags_arg, SCMP_CMP_MASKED_EQ, bad[i].mask, bad[i].value};
        int rc = rule(ctx, SCMP_ACT_TRAP, name, 1, &cmp);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static const char *const processes[] = {"execve", "execveat", "fork", "vfork", NULL};
static const char *const network[] = {"socket", "socketpair", "connect", "bind",
                                      "listen", "accept",     "accept4", NULL};
static const char *const fs_changes[] = {
    "creat",        "unlink",   "unlinkat", "rename",    "renameat",  "renameat2",   "mkdir",
    "mkdirat",      "rmdir",    "link",     "linkat",    "symlink",   "symlinkat",   "mknod",
    "mknodat",      "chmod",    "fchmod",   "fchmodat",  "chown",     "fchown",      "lchown",
    "fchownat",     "truncate", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
    "fremovexattr", "utime",    "utimes",   "futimesat", "utimensat", NULL};
static const char *const system_calls[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "unshare", "setns",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "chroot", "pivot_root", "reboot", "swapon",
    "swapoff", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "kill", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "userfaultfd", "open_by_handle_at", "name_to_handle_at", "clock_settime", "settimeofday",
    "adjtimex", "clock_adjtime",
    /* other processes: signals, handles */
    "tkill", "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "kcmp", "process_madvise",
    /* the new mount API, accounting, port I/O, names */
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "acct",
    "iopl", "ioperm", "sethostname", "setdomainname", "quotactl", "vhangup", NULL};

static int build(scmp_filter_ctx ctx, const kiln_sandbox_policy *p)
{
    int rc = 0;
    if (!p->allow_processes) {
        struct scmp_arg_cmp no_thread = {0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0};
        if ((rc = deny_all(ctx, processes)) ||
            (rc = rule(ctx, SCMP_ACT_TRAP, "clone", 1, &no_thread)))
            return rc;
    }
    /* clone3 hides its flags in memory; ENOSYS makes libc fall back to clone (checked above) */
    if ((rc = rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL)))
        return rc;
    if (!p->allow_network && (rc = deny_all(ctx, network)))
        return rc;
    if (!p->allow_file_writes) {
        if ((rc = deny_write_opens(ctx, "open", 1)) || (rc = deny_write_opens(ctx, "openat", 2)) ||
            (rc = deny_all(ctx, fs_changes)))
            return rc;
        /* openat2 hides its flags in memory; ENOSYS makes callers use openat */
        if ((rc = rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "openat2", 0, NULL)))
            return rc;
    }
    if ((rc = deny_all(ctx, system_calls)))
        return rc;
    /* the sandbox's own signals keep their handlers: setting one (act != NULL) is refused,
     * reading one is fine; the kernel reads the signal number as 32 bits, so compare 32 */
    static const int own[] = {SIGSYS, SIGXCPU};
    for (size_t i = 0; i < 2; i++) {
        struct scmp_arg_cmp sig[2] = {{0, SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)own[i]},
                                      {1, SCMP_CMP_NE, 0, 0}};
        if ((rc = rule(ctx, SCMP_ACT_TRAP, "rt_sigaction", 2, sig)))
            return rc;
    }
    /* signals may be sent to this process only (glibc's raise/abort use tgkill on self) */
    static const char *const self_only[] = {"tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"};
    scmp_datum_t me = (scmp_datum_t)getpid();
    for (size_t i = 0; i < 3; i++) {
        struct scmp_arg_cmp other = {0, SCMP_CMP_NE, me, 0};
        if ((rc = rule(ctx, SCMP_ACT_TRAP, self_only[i], 1, &other)))
            return rc;
    }
    /* calls some libseccomp versions cannot name: added by their (unified) numbers */
    static const int by_number[] = {452 /* fchmodat2 */};
    for (size_t i = 0; i < sizeof(by_number) / sizeof(by_number[0]); i++)
        if ((rc = seccomp_rule_add(ctx, SCMP_ACT_TRAP, by_number[i], 0)) != 0)
            return rc;
    return 0;
}

kiln_status kiln_sandbox_enter(const kiln_sandbox_policy *policy, kiln_err *err)
{
    static const kiln_sandbox_policy deflt = {0};
    int he = ensure_handlers(true);
    if (he)
        return kiln_err_set(err, KILN_INTERNAL, "sandbox: cannot install signal handlers: %s",
                            strerror(he));
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return kiln_err_set(err, KILN_INTERNAL, "sandbox: seccomp_init failed");
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 0);
    if (rc == 0)
        rc = build(ctx, policy ? policy : &deflt);
    if (rc != 0) {
        seccomp_release(ctx);
        return kiln_err_set(err, KILN_INTERNAL, "sandbox: building the filter failed: %s",
                            strerror(-rc));
    }
    rc = seccomp_load(ctx); /* this thread only: TSYNC is off */
    seccomp_release(ctx);
    if (rc != 0)
        return kiln_err_set(err, rc == -EINVAL || rc == -ENOSYS ? KILN_UNAVAILABLE : KILN_INTERNAL,
                            "sandbox: the kernel refused the seccomp filter: %s", strerror(-rc));
    self.active = true;
    return KILN_OK;
}

bool kiln_sandbox_active(void)
{
    return self.active;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * KILN_NS_PER_S + (uint64_t)ts.tv_nsec;
}

kiln_status kiln_sandbox_begin(uint64_t cpu_limit_ns, kiln_err *err)
{
    self.violations = 0;
    self.n_recorded = 0;
    self.cpu_exceeded = 0;
    self.cpu_start_ns = thread_cpu_ns();
    int he = ensure_handlers(!self.active);
    if (he)
        return kiln_err_set(err, KILN_INTERNAL,
                            "sandbox: the SIGSYS/SIGXCPU handlers were replaced by another part "
                            "of the process and a sandboxed thread cannot restore them: %s",
                            strerror(he));
    if (!cpu_limit_ns)
        return KILN_OK;
    if (!self.timer_made) {
        clockid_t cid;
        struct sigevent sev;
        memset(&sev, 0, sizeof(sev));
        sev.sigev_notify = SIGEV_THREAD_ID;
        sev.sigev_signo = SIGXCPU;
        sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
        pthread_once(&timer_key_once, make_timer_key);
        timer_t *holder = malloc(sizeof(*holder));
        if (!holder || pthread_getcpuclockid(pthread_self(), &cid) != 0 ||
            timer_create(cid, &sev, &self.timer) != 0) {
            free(holder);
            return kiln_err_set(err, KILN_INTERNAL, "sandbox: cannot make the CPU watchdog: %s",
                                strerror(errno));
        }
        *holder = self.timer;
        pthread_setspecific(timer_key, holder); /* timer_delete when this thread exits */
        self.timer_made = true;
    }
    /* the timer runs on this thread's CPU clock: arm it relative to now */
    struct itimerspec it = {
        {0, 0}, {(time_t)(cpu_limit_ns / KILN_NS_PER_S), (long)(cpu_limit_ns % KILN_NS_PER_S)}};
    if (timer_settime(self.timer, 0, &it, NULL) != 0)
        return kiln_err_set(err, KILN_INTERNAL, "sandbox: cannot arm the CPU watchdog: %s",
                            strerror(errno));
    return KILN_OK;
}

bool kiln_sandbox_stop_requested(void)
{
    return self.cpu_exceeded != 0;
}

void kiln_sandbox_end(kiln_sandbox_report *out)
{
    if (self.timer_made) {
        struct itimerspec off = {{0, 0}, {0, 0}};
        timer_settime(self.timer, 0, &off, NULL);
    }
    memset(out, 0, sizeof(*out));
    out->violations = (uint32_t)self.violations;
    out->n_recorded = (uint32_t)self.n_recorded;
    for (uint32_t i = 0; i < out->n_recorded; i++) {
        out->syscalls[i] = self.syscalls[i];
        char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, out->syscalls[i]);
        snprintf(out->names[i], sizeof(out->names[i]), "%s", name ? name : "?");
        free(name);
    }
    out->cpu_exceeded = self.cpu_exceeded != 0;
    out->cpu_ns = thread_cpu_ns() - self.cpu_start_ns;
}

kiln_status kiln_sandbox_check(const kiln_sandbox_report *r, const char *model,
                               const char *request_id, uint64_t cpu_limit_ns, kiln_err *err)
{
    kiln_log_ctx lc = {.request_id = request_id, .model = model};
    if (r->violations) {
        char list[256] = "";
        size_t len = 0;
        for (uint32_t i = 0; i < r->n_recorded; i++) {
            KILN_LOGW(&lc, "sandbox blocked system call %s (%d) made by model code", r->names[i],
                      r->syscalls[i]);
            int w = snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", r->names[i]);
            if (w > 0 && (size_t)w < sizeof(list) - len)
                len += (size_t)w;
        }
        return kiln_err_set(err, KILN_PERMISSION_DENIED,
                            "model '%s' attempted forbidden system calls: %s (blocked by the "
                            "sandbox, %u attempt%s)",
                            model, list, r->violations, r->violations == 1 ? "" : "s");
    }
    if (r->cpu_exceeded) {
        KILN_LOGW(&lc, "model passed its CPU limit of %llu ms (used %llu ms)",
                  (unsigned long long)(cpu_limit_ns / KILN_NS_PER_MS),
                  (unsigned long long)(r->cpu_ns / KILN_NS_PER_MS));
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "model '%s' used more than %llu ms of CPU time on one request", model,
                            (unsigned long long)(cpu_limit_ns / KILN_NS_PER_MS));
    }
    return KILN_OK;
}
