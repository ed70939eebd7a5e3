/*
 * tools/kiln/args.h: the kiln tool's command line: subcommands, options (one table drives
 * parsing and --help), and exit codes.
 *
 * Options may stand before or after the subcommand, as `--name value` or `--name=value`.
 * Parsing only checks the text (numbers, durations, lists, NAME=VALUE forms); what the server
 * or the files say is checked later.
 *
 * Thread-safety: parsing writes only *a; strings in *a point into argv (or are static).
 */
#ifndef KILN_TOOLS_KILN_ARGS_H
#define KILN_TOOLS_KILN_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

#define KILN_CLI_VERSION "0.1.0"

/* Exit codes (kiln --help and docs/cli.md list them). */
enum {
    KILN_CLI_EXIT_OK = 0,
    KILN_CLI_EXIT_RPC = 1,       /* the server answered with an error, or could not be reached */
    KILN_CLI_EXIT_USAGE = 2,     /* bad command line */
    KILN_CLI_EXIT_NOT_READY = 3, /* health: the server or model is not live/ready */
    KILN_CLI_EXIT_DATA = 4,      /* a local file or tensor is unreadable, malformed or unwritable */
};

typedef enum kiln_cli_cmd {
    KILN_CLI_CMD_NONE = 0,
    KILN_CLI_CMD_HEALTH,
    KILN_CLI_CMD_MODELS,
    KILN_CLI_CMD_METADATA,
    KILN_CLI_CMD_CONFIG,
    KILN_CLI_CMD_STATS,
    KILN_CLI_CMD_LOAD,
    KILN_CLI_CMD_UNLOAD,
    KILN_CLI_CMD_INFER,
    KILN_CLI_CMD_PERF,
    KILN_CLI_CMD_COUNT
} kiln_cli_cmd;

#define KILN_CLI_MAX_LIST        64
#define KILN_CLI_MAX_CONCURRENCY 4096

typedef struct kiln_cli_args {
    kiln_cli_cmd cmd;
    bool help;    /* --help, -h or `kiln help [CMD]`: print kiln_cli_usage(cmd) */
    bool version; /* --version */

    /* every subcommand */
    const char *url;    /* --url; else $KILN_URL; else 127.0.0.1:8001 */
    int64_t timeout_ms; /* --timeout (per call); default 30000; 0 = none */
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
    bool tls; /* --tls, or implied by any --tls-* file */
    int retries;
    bool json;

    /* operands */
    const char *model;         /* MODEL (optional for health and stats) */
    const char *model_version; /* --model-version */
    bool ready_only;           /* models --ready */

    /* infer and perf */
    const char *inputs[KILN_CLI_MAX_LIST]; /* --input NAME=FILE.npy | NAME=json:TEXT */
    size_t n_inputs;
    const char *outputs[KILN_CLI_MAX_LIST]; /* --output NAME */
    size_t n_outputs;
    const char *datatypes[KILN_CLI_MAX_LIST]; /* --datatype DT | NAME=DT */
    size_t n_datatypes;
    const char *shapes[KILN_CLI_MAX_LIST]; /* --shape NAME=D0,D1... */
    size_t n_shapes;
    bool shm;                  /* --shm */
    uint64_t shm_output_bytes; /* --shm-output-bytes: output room when the size is unknown */
    const char *request_id;    /* --request-id */
    const char *out_dir;       /* infer --out-dir */
    uint64_t print_limit;      /* infer --print-limit: largest output printed whole */

    /* perf */
    int concurrency[KILN_CLI_MAX_LIST]; /* --concurrency 1,8,64 */
    size_t n_concurrency;
    double rate;        /* --rate requests/s */
    double duration_s;  /* --duration per level */
    uint64_t count;     /* --count per level */
    double warmup_s;    /* --warmup per level */
    int64_t batch_size; /* --batch-size: the leading -1 of random inputs */
    int threads;        /* --threads (rate mode senders) */
    const char *csv;    /* --csv FILE */
    uint64_t seed;      /* --seed of the random inputs */
} kiln_cli_args;

/*
 * Parses argv[1..argc) into *a (defaults first; env_url is $KILN_URL or NULL). With --help or
 * --version, a->help / a->version is set and parsing stops checking the operands.
 * INVALID_ARGUMENT with a message naming the option or operand otherwise.
 */
kiln_status kiln_cli_args_parse(int argc, char *const *argv, const char *env_url, kiln_cli_args *a,
                                kiln_err *err);

/* The subcommand's help (cmd NONE: the tool's help, with the exit codes). */
void kiln_cli_usage(FILE *f, kiln_cli_cmd cmd);

/* "infer"... Static. */
const char *kiln_cli_cmd_name(kiln_cli_cmd cmd);

/* "500ms", "2s", "1.5m", "1h" or a bare number of seconds. OUT: *ms. */
kiln_status kiln_cli_parse_duration_ms(const char *s, int64_t *ms, kiln_err *err);

/* "4096", "64K", "16M", "1G" (binary multiples, optional "iB"/"B"). OUT: *bytes. */
kiln_status kiln_cli_parse_bytes(const char *s, uint64_t *bytes, kiln_err *err);

#endif /* KILN_TOOLS_KILN_ARGS_H */
