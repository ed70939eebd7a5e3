/* registry/repo.c: the model repository on disk: names, configs, versions, sizes. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/names.h"
#include "registry/registry_int.h"

kiln_status kiln__repo_check_name(const char *name, kiln_err *err)
{
    if (name && (strcmp(name, ".") == 0 || strcmp(name, "..") == 0))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "model name '%s' is not allowed", name);
    return kiln_name_check(name, KILN_MODEL_NAME_MAX, "model name", "/", err);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static bool version_dir(const char *s, int64_t *v)
{
    if (!*s || strlen(s) > 18)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    *v = strtoll(s, NULL, 10);
    return *v >= 1;
}

/* The version numbers of model directory `dir`, ascending. OUT: *out (kiln_free it), *n. */
static kiln_status list_versions(const char *dir, const char *name, int64_t **out, size_t *n,
                                 kiln_err *err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return kiln_err_set(err, KILN_NOT_FOUND, "model '%s' is not in the repository", name);
    size_t cap = 8, count = 0;
    int64_t *v = kiln_malloc(cap * sizeof(*v));
    struct dirent *de;
    while (v && (de = readdir(d))) {
        int64_t ver;
        if (!version_dir(de->d_name, &ver))
            continue;
        char sub[4400];
        struct stat sb;
        snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
        if (stat(sub, &sb) != 0 || !S_ISDIR(sb.st_mode))
            continue;
        if (count == cap) {
            int64_t *g = kiln_realloc(v, 2 * cap * sizeof(*v));
            if (!g) {
                kiln_free(v);
                v = NULL;
                break;
            }
            v = g;
            cap *= 2;
        }
        v[count++] = ver;
    }
    closedir(d);
    if (!v)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory listing versions");
    qsort(v, count, sizeof(*v), cmp_i64);
    *out = v;
    *n = count;
    return KILN_OK;
}

/*
 * For a model with no config.pbtxt: its highest-numbered version and the backend that can
 * derive a config from that version's model file. KILN_NOT_FOUND saying what was looked for.
 */
static kiln_status autoconfig_source(const char *repo, const char *name, int64_t *version,
                                     const kiln_backend **backend, kiln_err *err)
{
    char dir[4096], vdir[4400], files[128];
    snprintf(dir, sizeof(dir), "%s/%s", repo, name);
    int64_t *v;
    size_t n;
    kiln_status st = list_versions(dir, name, &v, &n, err);
    if (st != KILN_OK)
        return st;
    *version = n ? v[n - 1] : 0;
    kiln_free(v);
    kiln_backend_autoconfig_files(files, sizeof(files));
    if (!*version)
        return kiln_err_set(err, KILN_NOT_FOUND,
                            "model '%s' has no config.pbtxt, and no version directory holding a "
                            "model file to read a config from (looked for: config.pbtxt, "
                            "<version>/%s)",
                            name, files);
    snprintf(vdir, sizeof(vdir), "%s/%" PRId64, dir, *version);
    if (!(*backend = kiln_backend_autoconfig_find(vdir)))
        return kiln_err_set(err, KILN_NOT_FOUND,
                            "model '%s' has no config.pbtxt, and its latest version directory "
                            "%" PRId64 " holds no model file to read a config from (looked for: "
                            "config.pbtxt, %" PRId64 "/%s)",
                            name, *version, *version, files);
    return KILN_OK;
}

kiln_status kiln__repo_read_config(const char *repo, const char *name, kiln_model_config **out,
                                   kiln_err *err)
{
    *out = NULL;
    char dir[4096], path[4200], source[300];
    snprintf(dir, sizeof(dir), "%s/%s", repo, name);
    snprintf(path, sizeof(path), "%s/config.pbtxt", dir);
    snprintf(source, sizeof(source), "%s/config.pbtxt", name);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return kiln_err_set(err, KILN_NOT_FOUND, "model '%s' is not in the repository", name);
    kiln_model_config *c;
    kiln_status st = kiln_model_config_load(path, source, &c, err);
    if (st == KILN_NOT_FOUND) {
        /* no config.pbtxt: a backend may derive one at load */
        int64_t version;
        const kiln_backend *b;
        return autoconfig_source(repo, name, &version, &b, err);
    }
    if (st != KILN_OK)
        return st;
    if (c->name[0] && strcmp(c->name, name) != 0) {
        st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                          "%s: name '%s' does not match the model's directory '%s'", source,
                          c->name, name);
        kiln_model_config_free(c);
        return st;
    }
    if (!c->name[0] && (st = kiln_model_config_set_name(c, name, err)) != KILN_OK) {
        kiln_model_config_free(c);
        return st;
    }
    *out = c;
    return KILN_OK;
}

kiln_status kiln__repo_autoconfig(const char *repo, const char *name, int64_t version,
                                  kiln_model_config **out, kiln_err *err)
{
    *out = NULL;
    char vdir[4400], files[128];
    snprintf(vdir, sizeof(vdir), "%s/%s/%" PRId64, repo, name, version);
    const kiln_backend *b = kiln_backend_autoconfig_find(vdir);
    if (!b)
        return kiln_err_set(err, KILN_NOT_FOUND,
                            "model '%s' has no config.pbtxt, and its version directory %" PRId64
                            " holds no model file to read a config from (looked for: %s)",
                            name, version, kiln_backend_autoconfig_files(files, sizeof(files)));
    return b->autoconfig(name, vdir, out, err);
}

kiln_status kiln__repo_served_versions(const char *repo, const char *name,
                                       const kiln_model_config *cfg, int64_t **out, size_t *n,
                                       kiln_err *err)
{
    *out = NULL;
    *n = 0;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/%s", repo, name);
    int64_t *v;
    size_t count;
    kiln_status st = list_versions(dir, name, &v, &count, err);
    if (st != KILN_OK)
        return st;
    /* apply the policy in place (no config yet: the default, the latest version) */
    size_t kept = 0;
    if (cfg && cfg->version_policy.kind == KILN_VERSIONS_ALL) {
        kept = count;
    } else if (!cfg || cfg->version_policy.kind == KILN_VERSIONS_LATEST) {
        size_t k = cfg ? cfg->version_policy.num_versions : 1;
        size_t first = count > k ? count - k : 0;
        memmove(v, v + first, (count - first) * sizeof(*v));
        kept = count - first;
    } else {
        for (size_t i = 0; i < count; i++)
            for (size_t j = 0; j < cfg->version_policy.n_versions; j++)
                if (v[i] == cfg->version_policy.versions[j]) {
                    v[kept++] = v[i];
                    break;
                }
    }
    *out = v;
    *n = kept;
    return KILN_OK;
}

static uint64_t dir_bytes(const char *dir, int depth)
{
    if (depth > 4)
        return 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[4400];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(p, &sb) != 0)
            continue;
        if (S_ISREG(sb.st_mode))
            total += (uint64_t)sb.st_size;
        else if (S_ISDIR(sb.st_mode))
            total += dir_bytes(p, depth + 1);
    }
    closedir(d);
    return total;
}

uint64_t kiln__repo_dir_bytes(const char *dir)
{
    return dir_bytes(dir, 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void kiln__repo_free_names(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        kiln_free(names[i]);
    kiln_free(names);
}

/* A model directory: one with a config.pbtxt, or one a backend can derive a config for. */
static bool is_model(const char *repo, const char *name)
{
    char p[4400];
    struct stat sb;
    snprintf(p, sizeof(p), "%s/%s/config.pbtxt", repo, name);
    if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
        return true;
    snprintf(p, sizeof(p), "%s/%s", repo, name);
    int64_t version;
    const kiln_backend *b;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode) &&
           autoconfig_source(repo, name, &version, &b, NULL) == KILN_OK;
}

kiln_status kiln__repo_list(const char *repo, char ***names, size_t *n, kiln_err *err)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(repo);
    if (!d)
        return kiln_err_set(err, KILN_UNAVAILABLE, "model repository cannot be read: %s",
                            strerror(errno));
    size_t cap = 16, count = 0;
    char **v = kiln_calloc(cap, sizeof(*v));
    struct dirent *de;
    kiln_status st = KILN_OK;
    while (v && (de = readdir(d))) {
        if (de->d_name[0] == '.' || kiln__repo_check_name(de->d_name, NULL) != KILN_OK)
            continue;
        if (!is_model(repo, de->d_name))
            continue;
        if (count == cap) {
            char **g = kiln_realloc(v, 2 * cap * sizeof(*v));
            if (!g) {
                st = KILN_RESOURCE_EXHAUSTED;
                break;
            }
            v = g;
            cap *= 2;
        }
        if (!(v[count] = kiln_strdup(de->d_name))) {
            st = KILN_RESOURCE_EXHAUSTED;
            break;
        }
        count++;
    }
    closedir(d);
    if (!v || st != KILN_OK) {
        kiln__repo_free_names(v, count);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory listing the repository");
    }
    qsort(v, count, sizeof(*v), cmp_str);
    *names = v;
    *n = count;
    return KILN_OK;
}
