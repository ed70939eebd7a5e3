/* tests/support.c: helpers shared by the unit tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/support.h"

void kiln_test_assert_status(kiln_status got, kiln_status want, const kiln_err *err,
                             const char *needle, const char *file, int line)
{
    if (got != want) {
        fail_msg("%s:%d: status %s, expected %s (message: %s)", file, line, kiln_status_name(got),
                 kiln_status_name(want), err ? err->msg : "");
    }
    if (needle && err && !strstr(err->msg, needle))
        fail_msg("%s:%d: message \"%s\" lacks \"%s\"", file, line, err->msg, needle);
    if (needle && err && err->code != want)
        fail_msg("%s:%d: err->code %s, expected %s", file, line, kiln_status_name(err->code),
                 kiln_status_name(want));
}

void *kiln_test_shm_create(char *key, size_t cap, size_t size)
{
    static unsigned seq;
    snprintf(key, cap, "/kiln-test-%ld-%u", (long)getpid(), seq++);
    int fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        fail_msg("shm_open(%s) failed", key);
    if (ftruncate(fd, (off_t)size) != 0)
        fail_msg("ftruncate failed");
    void *p = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        fail_msg("mmap failed");
    return p;
}

static int log_fd = -1;
static int saved_fd = 2;
static char log_buf[1 << 16];

void kiln_test_log_capture(void)
{
    FILE *f = tmpfile();
    log_fd = dup(fileno(f));
    fclose(f);
    saved_fd = kiln_log_set_fd(log_fd);
}

const char *kiln_test_log_read(void)
{
    off_t end = lseek(log_fd, 0, SEEK_CUR);
    ssize_t n = pread(log_fd, log_buf, sizeof(log_buf) - 1, 0);
    (void)end;
    log_buf[n > 0 ? n : 0] = '\0';
    return log_buf;
}

void kiln_test_log_restore(void)
{
    kiln_log_set_fd(saved_fd);
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
}

const char *kiln_test_build_dir(void)
{
    const char *env = getenv("KILN_TEST_BUILD_DIR"); /* a bundle run elsewhere (GPU machine) */
    return env && env[0] ? env : KILN_TEST_BUILD_DIR;
}

kiln_model_config *kiln_test_config(const char *text)
{
    kiln_err e;
    kiln_model_config *c = NULL;
    if (kiln_model_config_parse(text, strlen(text), "test", &c, &e) != KILN_OK)
        fail_msg("config: %s", e.msg);
    return c;
}

kiln_model_config *kiln_test_model_config(const char *sub, const char *model)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/%s/config.pbtxt", kiln_test_build_dir(), sub, model);
    kiln_err e;
    kiln_model_config *c = NULL;
    if (kiln_model_config_load(path, path, &c, &e) != KILN_OK)
        fail_msg("config: %s", e.msg);
    return c;
}

uint64_t kiln_test_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/*
 * gRPC and the libraries under it are not built with ThreadSanitizer, so it cannot see their
 * atomics and locks: it reports races inside them (and between a call's start and its
 * completion on another thread, when the order goes through libgrpc). libstdc++ is on the list
 * too: Kiln is C, so only gRPC's C++ (and CUDA's) reaches it, and TSan sometimes cannot walk
 * from a std::string copy back into uninstrumented libgrpc (seen once in CI: a resolver thread's
 * string read by an event-engine thread, the callers' frames lost). kiln__rpc_call_end frees
 * what gRPC wrote into a finished call (its status string, allocated by whichever thread polled
 * the channel's queue); the order runs through libgrpc, and TSan, losing the writer's stack,
 * reported it once. A report whose stacks run only through Kiln's other code still shows. The TSan
 * runtime reads this hook at start; test servers get the same list through TSAN_OPTIONS
 * (kiln_test_server_start).
 */
static const char tsan_suppressions[] = "race:libgrpc.so\n"
                                        "race:libgpr.so\n"
                                        "race:libabsl_\n"
                                        "race:libcares.so\n"
                                        "race:libssl.so\n"
                                        "race:libcrypto.so\n"
                                        "race:libupb.so\n"
                                        "race:libre2.so\n"
                                        "race:libaddress_sorting.so\n"
                                        "race:libstdc++.so\n"
                                        "race:kiln__rpc_call_end\n"
                                        "deadlock:libgrpc.so\n"
                                        "deadlock:libabsl_\n"
                                        "thread:libgpr.so\n";

const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return tsan_suppressions;
}

/* kiln_test_spawn with one more "NAME=value" in the child's environment (NULL: none). */
static pid_t spawn_env(const char *const *argv, const char *stdin_path, const char *log_path,
                       const char *extra_env)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, stdin_path ? stdin_path : "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log_path ? log_path : "/dev/null",
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    extern char **environ;
    /* posix_spawnp's argv is char *const[]; the strings are not written */
    char *args[64], *env[512];
    size_t n = 0, k = 0;
    for (; argv[n] && n < 63; n++)
        memcpy(&args[n], &argv[n], sizeof(args[n]));
    args[n] = NULL;
    size_t name_len = extra_env ? (size_t)(strchr(extra_env, '=') - extra_env) + 1 : 0;
    for (char **e = environ; *e && k < 510; e++)
        if (!extra_env || strncmp(*e, extra_env, name_len) != 0)
            env[k++] = *e;
    if (extra_env)
        memcpy(&env[k++], &extra_env, sizeof(env[0]));
    env[k] = NULL;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, args, env);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        fail_msg("cannot start %s: %s", argv[0], strerror(rc));
    return pid;
}

pid_t kiln_test_spawn(const char *const *argv, const char *stdin_path, const char *log_path)
{
    return spawn_env(argv, stdin_path, log_path, NULL);
}

int kiln_test_wait(pid_t pid, int timeout_ms)
{
    for (int waited = 0;; waited += 10) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0)
            fail_msg("waitpid(%ld): %s", (long)pid, strerror(errno));
        if (waited >= timeout_ms)
            return -1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int kiln_test_run(const char *const *argv, const char *stdin_path, const char *log_path)
{
    pid_t pid = kiln_test_spawn(argv, stdin_path, log_path);
    int rc = kiln_test_wait(pid, 60000);
    if (rc == -1) {
        kill(pid, SIGKILL);
        kiln_test_wait(pid, 10000);
    }
    return rc;
}

char *kiln_test_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0)
        fail_msg("cannot write %s", path);
    fclose(f);
}

static void make_model(const char *repo, const char *name, const char *config, const char *so)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", repo, name);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/%s/1", repo, name);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/%s/config.pbtxt", repo, name);
    write_text(path, config);
    snprintf(path, sizeof(path), "%s/%s/1/model.so", repo, name);
    if (symlink(so, path) != 0)
        fail_msg("symlink %s: %s", path, strerror(errno));
}

void kiln_test_server_start(kiln_test_server *s, const char *const *flags)
{
    const char *build = kiln_test_build_dir();
    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "/tmp/kiln-test-server-XXXXXX");
    if (!mkdtemp(s->dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    char repo[300], path[1024], so[1024];
    snprintf(repo, sizeof(repo), "%s/repo", s->dir);
    mkdir(repo, 0700);
    snprintf(path, sizeof(path), "%s/models/simple/config.pbtxt", build);
    char *simple = kiln_test_read_file(path);
    if (!simple)
        fail_msg("cannot read %s", path);
    snprintf(so, sizeof(so), "%s/models/simple/1/model.so", build);
    make_model(repo, "simple", simple, so);
    free(simple);
    snprintf(so, sizeof(so), "%s/plugins/identity.so", build);
    make_model(repo, "slow",
               "name: \"slow\" backend: \"plugin\" max_batch_size: 4 "
               "input { name: \"INPUT0\" data_type: TYPE_FP32 dims: [ -1 ] } "
               "output { name: \"OUTPUT0\" data_type: TYPE_FP32 dims: [ -1 ] } "
               "parameters { key: \"execute_delay_ms\" value { string_value: \"3000\" } }",
               so);
    char bin[1024], a_repo[400], a_port[400], port_file[300];
    snprintf(bin, sizeof(bin), "%s/kiln-server", build);
    if (access(bin, X_OK) != 0) /* a bundle (scripts/bundle.sh) keeps it in bin/ */
        snprintf(bin, sizeof(bin), "%s/bin/kiln-server", build);
    snprintf(port_file, sizeof(port_file), "%s/port", s->dir);
    snprintf(a_repo, sizeof(a_repo), "--model-repository=%s", repo);
    snprintf(a_port, sizeof(a_port), "--port-file=%s", port_file);
    snprintf(s->log, sizeof(s->log), "%s/server.log", s->dir);
    const char *argv[40] = {bin,
                            "--address=127.0.0.1:0",
                            a_repo,
                            a_port,
                            "--grace-ms=2000",
                            "--grpc-threads=2",
                            "--metrics-address=127.0.0.1:0"};
    size_t n = 7;
    for (size_t i = 0; flags && flags[i] && n < 39; i++)
        argv[n++] = flags[i];
    /* a TSan build of the server gets the suppressions above (other builds ignore it) */
    char supp[300], tsan[400];
    snprintf(supp, sizeof(supp), "%s/tsan.supp", s->dir);
    write_text(supp, tsan_suppressions);
    const char *old = getenv("TSAN_OPTIONS");
    snprintf(tsan, sizeof(tsan), "TSAN_OPTIONS=%s%ssuppressions=%s", old ? old : "", old ? " " : "",
             supp);
    s->pid = spawn_env(argv, NULL, s->log, tsan);
    for (int waited = 0; waited < 30000; waited += 20) {
        char *port = kiln_test_read_file(port_file);
        if (port && port[0]) {
            s->port = atoi(port);
            free(port);
            return;
        }
        free(port);
        if (kiln_test_wait(s->pid, 20) != -1)
            break;
    }
    char *log = kiln_test_read_file(s->log);
    kill(s->pid, SIGKILL);
    fail_msg("kiln-server did not start:\n%s", log ? log : "(no log)");
}

int kiln_test_server_stop(kiln_test_server *s)
{
    kill(s->pid, SIGTERM);
    int rc = kiln_test_wait(s->pid, 30000);
    if (rc == -1) {
        kill(s->pid, SIGKILL);
        kiln_test_wait(s->pid, 10000);
    }
    const char *argv[] = {"rm", "-rf", s->dir, NULL};
    kiln_test_run(argv, NULL, NULL);
    return rc;
}
