/* tests/support.c: helpers shared by the unit tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
