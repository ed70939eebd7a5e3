/*
 * sandbox/sandbox.h: the seccomp policy of Kiln's execution threads.
 *
 * kiln_sandbox_enter installs a libseccomp filter on the calling thread only (no TSYNC; other
 * threads are unaffected; threads it creates later inherit it). The policy is a deny list:
 * what model code could use to escape or to change the system fails, and everything else
 * (compute, memory, futexes, reading files, threads, ioctl on already-open devices) works.
 *
 * Denied (the call returns -1 with errno EPERM, and the attempt is recorded):
 *   processes  execve, execveat, fork, vfork, clone without CLONE_THREAD
 *   network    socket, socketpair, connect, bind, listen, accept, accept4
 *   files      open/openat with O_WRONLY, O_RDWR, O_CREAT or O_TRUNC, creat, and the calls
 *              that change the file system (unlink*, rename*, mkdir*, rmdir, link*,
 *              symlink*, mknod*, chmod* incl. fchmodat2, chown*, truncate, setxattr family,
 *              utime* timestamps)
 *   system     ptrace, process_vm_readv/writev, mount and the new mount API (fsopen,
 *              fsmount, move_mount, open_tree...), umount2, unshare, setns, bpf,
 *              perf_event_open, keyctl, add_key, request_key, kexec_*, *_module, chroot,
 *              pivot_root, reboot, swapon/off, setuid/setgid family, io_uring_*,
 *              userfaultfd, open_by_handle_at, name_to_handle_at, clock/time setting, acct,
 *              iopl/ioperm, sethostname/setdomainname, quotactl, vhangup
 *   processes' kill, tkill, pidfd_open/getfd/send_signal, kcmp, process_madvise; tgkill and
 *   signals    rt_(tg)sigqueueinfo aimed at another process (this process's own threads
 *              are fine: glibc's raise and abort use them); setting the handler of SIGSYS
 *              or SIGXCPU (the sandbox's own signals; the number is compared as 32 bits,
 *              as the kernel reads it)
 * Answered ENOSYS without being recorded (so that libc falls back to calls the filter can
 * inspect): clone3 (glibc then uses clone, whose flags are checked) and openat2.
 *
 * Why allowed: CUDA, cuDNN, cuBLAS and OpenBLAS need ioctl, mmap/mprotect/madvise, futex,
 * sched_*, clone with CLONE_THREAD, reads of /proc, /sys and their own libraries, and
 * eventfd/poll. The CUDA driver opens /dev/nvidia* read-write when it creates a context, and
 * its JIT cache writes files: kiln_cuda_prepare (tensor/tensor.h) creates every GPU's context
 * and turns the cache off before any thread enters the sandbox (the filter cannot tell device
 * paths from other paths, since seccomp sees only pointers).
 *
 * How violations are known: the filter's action is SCMP_ACT_TRAP. The kernel delivers SIGSYS
 * to the offending thread; Kiln's handler records the syscall number in that thread's
 * record and sets the return value to -EPERM, so the model sees an ordinary error and the
 * server goes on. The caller (the execution thread) brackets each request with
 * kiln_sandbox_begin/kiln_sandbox_end and fails the request when the record is not empty.
 * Chosen over SCMP_ACT_ERRNO, which cannot tell anyone what happened, and over user
 * notification (SCMP_ACT_NOTIFY), which needs a supervisor thread the sandboxed thread
 * blocks on. Limits, stated plainly: model code runs in the server's address space, so it
 * can always crash the server (a plugin that blocks SIGSYS and then makes a forbidden call
 * ends the process instead of escaping); inherited descriptors (the server's sockets) are
 * not revoked. The sandbox stops escape and system changes, not a hostile crash.
 *
 * CPU watchdog: kiln_sandbox_begin can arm a timer on the thread's own CPU clock. When the
 * thread has used that much CPU in the request, SIGXCPU sets a flag that kiln_sandbox_stop_
 * requested returns (plugins poll it through should_stop) and kiln_sandbox_end reports.
 * Linux cannot stop a thread safely, so a model that never polls runs to completion; its
 * result is discarded.
 *
 * Thread-safety: every function acts on the calling thread's own state. The per-thread
 * record is written by the signal handler on the same thread, so it needs no locks.
 */
#ifndef KILN_SANDBOX_SANDBOX_H
#define KILN_SANDBOX_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Relaxations of the default (everything false = the full deny list). Tests use these. */
typedef struct kiln_sandbox_policy {
    bool allow_network;
    bool allow_processes;
    bool allow_file_writes;
} kiln_sandbox_policy;

/*
 * Installs the policy's filter on the calling thread (policy NULL = the default). Idempotent
 * per thread only in the sense that a second call stacks a second filter. Installs the
 * process's SIGSYS/SIGXCPU handlers (or reinstalls them if something replaced them).
 * Returns KILN_UNAVAILABLE if the kernel refuses (no seccomp), KILN_INTERNAL otherwise.
 */
kiln_status kiln_sandbox_enter(const kiln_sandbox_policy *policy, kiln_err *err);

/* True if the calling thread entered the sandbox. */
bool kiln_sandbox_active(void);

#define KILN_SANDBOX_MAX_RECORDED 8

/* What happened on this thread between kiln_sandbox_begin and kiln_sandbox_end. */
typedef struct kiln_sandbox_report {
    uint32_t violations;                       /* forbidden calls attempted */
    uint32_t n_recorded;                       /* distinct syscalls recorded (<= MAX) */
    int syscalls[KILN_SANDBOX_MAX_RECORDED];   /* their numbers, first seen first */
    char names[KILN_SANDBOX_MAX_RECORDED][24]; /* their names ("socket") */
    bool cpu_exceeded;                         /* the CPU watchdog fired */
    uint64_t cpu_ns;                           /* CPU time the thread used in between */
} kiln_sandbox_report;

/*
 * Starts a request on this thread: clears the record, makes sure the process's SIGSYS and
 * SIGXCPU handlers are Kiln's (reinstalling them if another part of the process replaced
 * them), and arms the CPU watchdog when cpu_limit_ns > 0. Returns KILN_INTERNAL if the timer
 * or the handlers cannot be set.
 */
kiln_status kiln_sandbox_begin(uint64_t cpu_limit_ns, kiln_err *err);

/* True once the watchdog has fired in the current request (async-signal-safe to poll). */
bool kiln_sandbox_stop_requested(void);

/* Ends the request: disarms the watchdog and fills *out. */
void kiln_sandbox_end(kiln_sandbox_report *out);

/*
 * Turns a report into the request's outcome: KILN_OK if clean; KILN_PERMISSION_DENIED
 * "model 'm' attempted forbidden system calls: socket, execve (blocked by the sandbox)";
 * KILN_RESOURCE_EXHAUSTED "model 'm' used more than N ms of CPU time". Logs each violation
 * (warn level, with the model and request id) before returning.
 */
kiln_status kiln_sandbox_check(const kiln_sandbox_report *report, const char *model,
                               const char *request_id, uint64_t cpu_limit_ns, kiln_err *err);

#ifdef __cplusplus
}
#endif

#endif /* KILN_SANDBOX_SANDBOX_H */
