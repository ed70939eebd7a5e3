/*
 * registry/registry_int.h: repository helpers shared inside the registry module.
 */
#ifndef KILN_REGISTRY_REGISTRY_INT_H
#define KILN_REGISTRY_REGISTRY_INT_H

#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "registry/registry.h"

/*
 * Runs the config's model_warmup samples on each of the n_inst instances of backend b, each
 * `count` times, with inputs of zeros, fixed-seed random values or the bytes of
 * <model_dir>/warmup/<file>, every output requested and dropped. Errors name the model, the
 * sample and the input: INVALID_ARGUMENT (a file missing or of the wrong size, a run that
 * failed), RESOURCE_EXHAUSTED. Call on the loading thread, before the version serves.
 */
kiln_status kiln__registry_warmup(const kiln_backend *b, kiln_backend_model *const *inst,
                                  uint32_t n_inst, const char *model, const char *model_dir,
                                  const kiln_model_config *c, kiln_err *err);

/* KILN_INVALID_ARGUMENT unless name is 1..KILN_MODEL_NAME_MAX printable characters, with no
 * '/' and not "." or "..". */
kiln_status kiln__repo_check_name(const char *name, kiln_err *err);

/*
 * Reads <repo>/<name>/config.pbtxt. The config's name must be empty (it is set to `name`) or
 * equal `name`. OUT: *out (kiln_model_config_free it; NULL on failure).
 * A model with no config.pbtxt whose highest-numbered version directory holds a file a backend
 * derives a config from (kiln_backend_autoconfig_find) gets KILN_OK with *out NULL: its config
 * is derived when a version loads (kiln__repo_autoconfig), so looking a model up never reads
 * a model file. KILN_NOT_FOUND if the model directory does not exist, or holds neither, the
 * message saying what was looked for.
 */
kiln_status kiln__repo_read_config(const char *repo, const char *name, kiln_model_config **out,
                                   kiln_err *err);

/*
 * Derives the config of model `name`, which has no config.pbtxt, from the model file of its
 * version directory `version`, through the backend that claims that file. OUT: *out (NULL on
 * failure). KILN_NOT_FOUND naming what was looked for if no backend's file is there; else the
 * backend's autoconfig errors.
 */
kiln_status kiln__repo_autoconfig(const char *repo, const char *name, int64_t version,
                                  kiln_model_config **out, kiln_err *err);

/*
 * The versions the policy serves, ascending. OUT: *out (kiln_free it), *n (may be 0).
 * Version directories are names made only of digits, value >= 1. cfg NULL (a config not
 * derived yet) means the default policy: the latest version.
 */
kiln_status kiln__repo_served_versions(const char *repo, const char *name,
                                       const kiln_model_config *cfg, int64_t **out, size_t *n,
                                       kiln_err *err);

/* Bytes of the regular files under dir (recursive, depth <= 4): a load's up-front reservation. */
uint64_t kiln__repo_dir_bytes(const char *dir);

/* Model names of the repository (directories holding a config.pbtxt, or a model file in the
 * highest-numbered version directory that a backend derives a config from), sorted. OUT: *names
 * (an array of kiln_strdup'd strings; free with kiln__repo_free_names), *n. */
kiln_status kiln__repo_list(const char *repo, char ***names, size_t *n, kiln_err *err);
void kiln__repo_free_names(char **names, size_t n);

#endif /* KILN_REGISTRY_REGISTRY_INT_H */
