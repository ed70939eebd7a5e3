/*
 * registry/registry_int.h: repository helpers shared inside the registry module.
 */
#ifndef KILN_REGISTRY_REGISTRY_INT_H
#define KILN_REGISTRY_REGISTRY_INT_H

#include <stddef.h>
#include <stdint.h>

#include "registry/registry.h"

/* KILN_INVALID_ARGUMENT unless name is 1..KILN_MODEL_NAME_MAX printable characters, with no
 * '/' and not "." or "..". */
kiln_status kiln__repo_check_name(const char *name, kiln_err *err);

/*
 * Reads <repo>/<name>/config.pbtxt. The config's name must be empty (it is set to `name`) or
 * equal `name`. KILN_NOT_FOUND if the model directory or its config does not exist.
 */
kiln_status kiln__repo_read_config(const char *repo, const char *name, kiln_model_config **out,
                                   kiln_err *err);

/*
 * The versions the policy serves, ascending. OUT: *out (kiln_free it), *n (may be 0).
 * Version directories are names made only of digits, value >= 1.
 */
kiln_status kiln__repo_served_versions(const char *repo, const char *name,
                                       const kiln_model_config *cfg, int64_t **out, size_t *n,
                                       kiln_err *err);

/* Bytes of the regular files under dir (recursive, depth <= 4): a load's up-front reservation. */
uint64_t kiln__repo_dir_bytes(const char *dir);

/* Model names of the repository (directories holding a config.pbtxt), sorted. OUT: *names
 * (an array of kiln_strdup'd strings; free with kiln__repo_free_names), *n. */
kiln_status kiln__repo_list(const char *repo, char ***names, size_t *n, kiln_err *err);
void kiln__repo_free_names(char **names, size_t n);

#endif /* KILN_REGISTRY_REGISTRY_INT_H */
