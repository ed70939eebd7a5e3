/*
 * tools/kiln/cli.h: what the kiln tool's subcommands share: the connection, error reporting
 * with exit codes, and the request's input tensors (from files, JSON or random).
 *
 * The subcommands talk to the server only through libkilnclient (client/kiln_client.h).
 * Output: results on stdout (for people, or JSON with --json); errors on stderr as
 * "kiln: <command>: <what>: <STATUS>: <message>".
 *
 * Thread-safety: the command functions run on main's thread; perf starts its own threads and
 * joins them before it returns.
 */
#ifndef KILN_TOOLS_KILN_CLI_H
#define KILN_TOOLS_KILN_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "client/kiln_client.h"
#include "common/status.h"
#include "tools/kiln/args.h"
#include "tools/kiln/tensor.h"

/* A subcommand: returns the process's exit code (KILN_CLI_EXIT_*). */
typedef int (*kiln_cli_cmd_fn)(const kiln_cli_args *a, kiln_client *c);

int kiln_cli_health(const kiln_cli_args *a, kiln_client *c);
int kiln_cli_models(const kiln_cli_args *a, kiln_client *c);
int kiln_cli_metadata(const kiln_cli_args *a, kiln_client *c);
int kiln_cli_config(const kiln_cli_args *a, kiln_client *c);
int kiln_cli_stats(const kiln_cli_args *a, kiln_client *c);
int kiln_cli_load(const kiln_cli_args *a, kiln_client *c);
int kiln_cli_unload(const kiln_cli_args *a, kiln_client *c);
int kiln_cli_infer(const kiln_cli_args *a, kiln_client *c);
int kiln_cli_perf(const kiln_cli_args *a, kiln_client *c);

/* Prints "kiln: <cmd>: <what>: <STATUS NAME>: <server message>" and returns KILN_CLI_EXIT_RPC. */
int kiln_cli_rpc_failed(const kiln_cli_args *a, const char *what, const kiln_client_error *e);

/* Prints "kiln: <cmd>: <message>" and returns `code`. */
int kiln_cli_fail(const kiln_cli_args *a, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes s as a JSON string on stdout (NULL as ""). */
void kiln_cli_put_json_string(const char *s);

/* Writes `"key":"value"` on stdout, after a comma unless first. */
void kiln_cli_json_kv(const char *key, const char *value, bool first);

/* Writes `,"shape":[1,16]` on stdout. */
void kiln_cli_json_shape(const int64_t *shape, int rank);

/* ---------------------------------------------------------------- request inputs (inputs.c) */

typedef struct kiln_cli_inputs {
    kiln_cli_tensor t[KILN_CLI_MAX_LIST];
    size_t n;
} kiln_cli_inputs;

/*
 * The request's inputs, in the model's input order when md is given:
 *  - each --input NAME=FILE.npy or NAME=json:TEXT (JSON datatype from --datatype, else md);
 *  - --shape NAME=... reshapes it (same element count); otherwise an input one dimension short
 *    of md's, whose first dimension is -1, gets a leading 1 (a batch of one);
 *  - with `random`, every md input not given is filled with random values (seeded by --seed),
 *    shaped by --shape or md's shape with a leading -1 as --batch-size.
 * md may be NULL (a server without metadata): then every input must be given and JSON inputs
 * need --datatype. A datatype or shape that contradicts md is an error here, before any
 * request is sent. OUT: *in (kiln_cli_inputs_fini frees it, also after a failure).
 * INVALID_ARGUMENT / NOT_FOUND naming the input and what is wrong.
 */
kiln_status kiln_cli_inputs_build(const kiln_cli_args *a, const kiln_client_model_info *md,
                                  bool random, kiln_cli_inputs *in, kiln_err *err);
void kiln_cli_inputs_fini(kiln_cli_inputs *in);

/* "INPUT0 INT32 [1,16] file, INPUT1 INT32 [1,16] random" into buf[cap]. */
void kiln_cli_inputs_describe(const kiln_cli_args *a, const kiln_cli_inputs *in, char *buf,
                              size_t cap);

/* A libkilnclient view of t (valid while t is). */
void kiln_cli_inputs_view(const kiln_cli_tensor *t, kiln_client_tensor *out);

/*
 * The model's metadata, or NULL with KILN_OK when the server does not implement the call
 * (UNIMPLEMENTED: a bare KServe endpoint). OUT: *md. Any other failure is returned in *e.
 */
int kiln_cli_metadata_optional(kiln_client *c, const kiln_cli_args *a, kiln_client_model_info **md,
                               kiln_client_error *e);

/* The entry of t[n] named `name`, or NULL (also when t is NULL). Borrowed from t. */
const kiln_client_tensor_info *kiln_cli_find_info(const kiln_client_tensor_info *t, size_t n,
                                                  const char *name);

/*
 * What infer and perf do first: the model's metadata (optional, as above), then the inputs.
 * OUT: *md (free with kiln_client_model_info_free) and *in (kiln_cli_inputs_fini), both left
 * empty on failure. Returns an exit code, having printed the error.
 */
int kiln_cli_prepare(const kiln_cli_args *a, kiln_client *c, bool random,
                     kiln_client_model_info **md, kiln_cli_inputs *in);

/* Bytes of a fixed-size output of md with `batch` for a leading -1; 0 when md does not fix
 * them (BYTES, or another variable dimension). */
size_t kiln_cli_output_bytes(const kiln_client_tensor_info *o, int64_t batch);

#endif /* KILN_TOOLS_KILN_CLI_H */
