/*
 * misbehave: a plugin that tries, on purpose, what a model must never do, for the sandbox
 * tests. Input MODE (INT32 [1]) is a bit mask of attempts:
 *   1 open a socket, 2 exec a program (/bin/true), 4 write a file outside its directory
 *   (/tmp), 8 fork, 16 burn CPU until should_stop (at most 10 s).
 * Output RESULT (INT32 [5]) holds, per attempt, 0 if it succeeded, else the errno it got
 * (-1 when not attempted). It returns success either way, as a careless plugin would: the
 * server must notice on its own. Never load this outside tests.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static int32_t create(const kiln_plugin_model_info *info, void **state, kiln_plugin_error *err)
{
    if (info->n_inputs != 1 || info->n_outputs != 1)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT, "misbehave needs MODE and RESULT");
    *state = &plugin_no_state;
    return KILN_PLUGIN_OK;
}

static int32_t attempt_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return errno;
    close(fd);
    return 0;
}

static int32_t attempt_exec(void)
{
    char *argv[] = {"/bin/true", NULL};
    char *envp[] = {NULL};
    execve("/bin/true", argv, envp); /* returns only on failure */
    return errno;
}

static int32_t attempt_write(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/kiln-misbehave-%ld", (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return errno;
    close(fd);
    unlink(path);
    return 0;
}

static int32_t attempt_fork(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return errno;
    if (pid == 0)
        _exit(0);
    waitpid(pid, NULL, 0);
    return 0;
}

static int32_t burn(const kiln_plugin_batch *b)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    volatile uint64_t x = 0;
    for (;;) {
        for (int i = 0; i < 1000000; i++)
            x += (uint64_t)i;
        if (b->should_stop && b->should_stop(b->stop_ctx))
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 10)
            return ETIMEDOUT;
    }
}

static int32_t execute(void *state, const kiln_plugin_batch *b, kiln_plugin_error *err)
{
    (void)state;
    const kiln_plugin_tensor *in = &b->inputs[0];
    if (!in->dl.data || in->byte_size < 4)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT, "MODE is missing");
    int32_t mode = *(const int32_t *)in->dl.data;
    int32_t r[5] = {-1, -1, -1, -1, -1};
    if (mode & 1)
        r[0] = attempt_socket();
    if (mode & 2)
        r[1] = attempt_exec();
    if (mode & 4)
        r[2] = attempt_write();
    if (mode & 8)
        r[3] = attempt_fork();
    if (mode & 16)
        r[4] = burn(b);
    int64_t shape[2] = {1, 5};
    void *out;
    int32_t rc = b->alloc_output(b->alloc_ctx, 0, b->batch_size ? 2 : 1,
                                 b->batch_size ? shape : shape + 1, sizeof(r), &out, err);
    if (rc != KILN_PLUGIN_OK)
        return rc;
    memcpy(out, r, sizeof(r));
    return KILN_PLUGIN_OK;
}

static const kiln_plugin_api api = {
    .abi_major = KILN_PLUGIN_ABI_MAJOR,
    .abi_minor = KILN_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(kiln_plugin_api),
    .create = create,
    .execute = execute,
    .destroy = plugin_destroy_nothing,
};

const kiln_plugin_api *kiln_plugin_entry(void);
const kiln_plugin_api *kiln_plugin_entry(void)
{
    return &api;
}
