/*
 * tools/kiln/args.c: the command-line table and its parser.
 *
 * One table lists every option with the subcommands that take it; parsing, the check that an
 * option belongs to the subcommand, and each subcommand's --help all read it.
 */
#include "tools/kiln/args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/kiln/tensor.h"

#define BIT(c) (1u << (c))
#define ALL    0xffffffffu
#define IO     (BIT(KILN_CLI_CMD_INFER) | BIT(KILN_CLI_CMD_PERF))
#define PERF   BIT(KILN_CLI_CMD_PERF)
#define INFER  BIT(KILN_CLI_CMD_INFER)
#define VERSIONED                                                                                  \
    (BIT(KILN_CLI_CMD_HEALTH) | BIT(KILN_CLI_CMD_METADATA) | BIT(KILN_CLI_CMD_CONFIG) |            \
     BIT(KILN_CLI_CMD_STATS) | IO)

typedef enum opt_id {
    O_URL,
    O_TIMEOUT,
    O_TLS,
    O_TLS_CA,
    O_TLS_CERT,
    O_TLS_KEY,
    O_TLS_NAME,
    O_RETRIES,
    O_JSON,
    O_HELP,
    O_VERSION,
    O_MODEL_VERSION,
    O_READY,
    O_INPUT,
    O_OUTPUT,
    O_DATATYPE,
    O_SHAPE,
    O_SHM,
    O_SHM_OUT,
    O_REQUEST_ID,
    O_OUT_DIR,
    O_PRINT_LIMIT,
    O_CONCURRENCY,
    O_RATE,
    O_DURATION,
    O_COUNT,
    O_WARMUP,
    O_BATCH,
    O_THREADS,
    O_CSV,
    O_SEED,
} opt_id;

typedef struct opt {
    const char *name;
    const char *arg; /* NULL: a flag */
    unsigned cmds;
    opt_id id;
    const char *help;
} opt;

/* Subcommand options first (their help lists them first), then the common ones. */
static const opt opts[] = {
    {"model-version", "V", VERSIONED, O_MODEL_VERSION,
     "model version (default: the server's choice)"},
    {"ready", NULL, BIT(KILN_CLI_CMD_MODELS), O_READY, "list only models that are ready"},
    {"input", "NAME=SRC", IO, O_INPUT,
     "input tensor from FILE.npy or json:[[...]] (repeat per input); perf: inputs not given "
     "are random"},
    {"output", "NAME", IO, O_OUTPUT, "request only this output (repeat; default: all)"},
    {"datatype", "[NAME=]DT", IO, O_DATATYPE,
     "datatype of json: inputs (default: the model's metadata)"},
    {"shape", "NAME=D0,D1..", IO, O_SHAPE,
     "shape of an input (reshapes a file or JSON tensor; sizes a random one)"},
    {"shm", NULL, IO, O_SHM,
     "send inputs and receive outputs through a system shared-memory region"},
    {"shm-output-bytes", "N", INFER, O_SHM_OUT,
     "with --shm: room for an output whose size the metadata does not fix (default 64M)"},
    {"request-id", "ID", INFER, O_REQUEST_ID, "request id (echoed by the server)"},
    {"out-dir", "DIR", INFER, O_OUT_DIR, "write each output as DIR/NAME.npy"},
    {"print-limit", "N", INFER, O_PRINT_LIMIT,
     "print outputs of up to N elements whole (default 256); larger ones are summarized"},
    {"concurrency", "N[,N..]", PERF, O_CONCURRENCY,
     "requests kept in flight, one level per value (default 1)"},
    {"rate", "R", PERF, O_RATE, "send R requests/s on a fixed schedule instead (open loop)"},
    {"duration", "T", PERF, O_DURATION, "measure each level for T (default 5s)"},
    {"count", "N", PERF, O_COUNT, "measure each level over N requests instead of a duration"},
    {"warmup", "T", PERF, O_WARMUP, "unmeasured time before each level (default 0.5s)"},
    {"batch-size", "B", PERF, O_BATCH,
     "size of the leading variable dimension of random inputs (default 1)"},
    {"threads", "N", PERF, O_THREADS, "with --rate: sending threads (default 16)"},
    {"csv", "FILE", PERF, O_CSV, "also write the results as CSV to FILE"},
    {"seed", "N", PERF, O_SEED, "seed of the random inputs (default 1)"},
    {"url", "ADDR", ALL, O_URL,
     "server: host:port or unix:/path (default $KILN_URL, else 127.0.0.1:8001)"},
    {"timeout", "T", ALL, O_TIMEOUT,
     "deadline of each call: 500ms, 2s, 1m; a bare number is seconds; 0 = none (default 30s)"},
    {"tls", NULL, ALL, O_TLS, "use TLS with the system's roots"},
    {"tls-ca", "FILE", ALL, O_TLS_CA, "PEM roots that sign the server's certificate (TLS)"},
    {"tls-cert", "FILE", ALL, O_TLS_CERT, "PEM client certificate chain (mutual TLS)"},
    {"tls-key", "FILE", ALL, O_TLS_KEY, "PEM client key (mutual TLS)"},
    {"tls-server-name", "NAME", ALL, O_TLS_NAME, "name to verify in the server's certificate"},
    {"retries", "N", ALL, O_RETRIES,
     "extra attempts of a read-only call on UNAVAILABLE (default 3)"},
    {"json", NULL, ALL, O_JSON, "print machine-readable JSON on stdout"},
    {"help", NULL, ALL, O_HELP, "this help"},
    {"version", NULL, ALL, O_VERSION, "print the version"},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

typedef enum operand_kind { OPERAND_NONE, OPERAND_OPTIONAL, OPERAND_REQUIRED } operand_kind;

static const struct {
    const char *name;
    operand_kind model;
    const char *summary;
    const char *text; /* description and examples */
} cmds[KILN_CLI_CMD_COUNT] = {
    [KILN_CLI_CMD_HEALTH] = {"health", OPERAND_OPTIONAL, "is the server (and MODEL) live and ready",
                             "Prints whether the server is live and ready, and with MODEL whether "
                             "that model is ready.\nExit 0 when all are, 3 when one is not.\n\n"
                             "  kiln health\n  kiln health simple --json\n"},
    [KILN_CLI_CMD_MODELS] = {"models", OPERAND_NONE, "the models in the repository and their state",
                             "Lists the repository: name, version, state and the reason a model is "
                             "not ready.\n\n  kiln models\n  kiln models --ready --json\n"},
    [KILN_CLI_CMD_METADATA] = {"metadata", OPERAND_REQUIRED,
                               "a model's versions, platform, inputs and outputs",
                               "Prints the model's metadata; -1 in a shape is a size the request "
                               "chooses.\n\n  kiln metadata simple\n"},
    [KILN_CLI_CMD_CONFIG] = {"config", OPERAND_REQUIRED, "a model's configuration (JSON)",
                             "Prints the model's configuration as JSON (indented; compact with "
                             "--json).\n\n  kiln config simple\n"},
    [KILN_CLI_CMD_STATS] = {"stats", OPERAND_OPTIONAL, "inference statistics (all models or MODEL)",
                            "Prints request counts and mean times per model (success, failure, "
                            "queue, compute); --json prints the server's statistics JSON.\n\n"
                            "  kiln stats\n  kiln stats simple --json\n"},
    [KILN_CLI_CMD_LOAD] = {"load", OPERAND_REQUIRED, "load (or reload) a model",
                           "Loads MODEL from the repository (reloads it when loaded).\n\n"
                           "  kiln load simple\n"},
    [KILN_CLI_CMD_UNLOAD] = {"unload", OPERAND_REQUIRED, "unload a model",
                             "Unloads MODEL; requests in flight finish first.\n\n"
                             "  kiln unload simple\n"},
    [KILN_CLI_CMD_INFER] =
        {"infer", OPERAND_REQUIRED, "one inference with inputs from .npy files or JSON",
         "Sends one request. Each input is NAME=FILE.npy (NumPy, C order, little-endian) or\n"
         "NAME=json:[[1,2],[3,4]] (datatype from --datatype or the model's metadata). An input\n"
         "one dimension short of a model input whose first dimension is -1 gets a leading batch\n"
         "dimension of 1. Outputs of up to --print-limit elements are printed; --out-dir writes\n"
         "every output as DIR/NAME.npy ('/' in a name becomes '_').\n\n"
         "  kiln infer simple --input INPUT0=a.npy --input INPUT1=b.npy --out-dir out\n"
         "  kiln infer simple --input INPUT0=json:[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16] \\\n"
         "                    --input INPUT1=json:[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1] --json\n"},
    [KILN_CLI_CMD_PERF] =
        {"perf", OPERAND_REQUIRED, "a load generator: throughput and latency percentiles",
         "Sends requests to MODEL and reports, per load level, the throughput and the p50, p90\n"
         "and p99 latency of the requests answered in the measured window (after --warmup).\n"
         "Closed loop: --concurrency N keeps N requests in flight (one thread each); a list\n"
         "sweeps levels. Open loop: --rate R sends R requests/s on a fixed schedule. Inputs not\n"
         "given with --input are random, shaped by the metadata (-1 sizes from --shape, a\n"
         "leading -1 from --batch-size). A progress line is shown on a terminal only.\n\n"
         "  kiln perf simple --concurrency 1,8,64 --duration 3s\n"
         "  kiln perf simple --rate 2000 --count 10000 --csv out.csv\n"
         "  kiln perf identity_fp32 --shape INPUT0=1,262144 --shm --json\n"},
};

const char *kiln_cli_cmd_name(kiln_cli_cmd cmd)
{
    return cmd > KILN_CLI_CMD_NONE && cmd < KILN_CLI_CMD_COUNT ? cmds[cmd].name : "kiln";
}

/* "  --name ARG   help", the help wrapped at word boundaries to stay within 100 columns. */
static void print_opt(FILE *f, const opt *o)
{
    enum { INDENT = 29, WIDTH = 100 };
    char left[64];
    snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    fprintf(f, "  %-26s ", left);
    const char *p = o->help;
    while (*p) {
        size_t n = strlen(p);
        if (n > WIDTH - INDENT) {
            n = WIDTH - INDENT;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0)
                n = strlen(p);
        }
        fprintf(f, "%.*s\n", (int)n, p);
        p += n;
        while (*p == ' ')
            p++;
        if (*p)
            fprintf(f, "%*s", INDENT, "");
    }
}

void kiln_cli_usage(FILE *f, kiln_cli_cmd cmd)
{
    if (cmd > KILN_CLI_CMD_NONE && cmd < KILN_CLI_CMD_COUNT) {
        const char *what = cmds[cmd].model == OPERAND_REQUIRED   ? " MODEL"
                           : cmds[cmd].model == OPERAND_OPTIONAL ? " [MODEL]"
                                                                 : "";
        fprintf(f, "usage: kiln %s%s [options]\n\n%s\n", cmds[cmd].name, what, cmds[cmd].text);
        bool any = false;
        for (size_t i = 0; i < N_OPTS; i++) {
            if (opts[i].cmds == ALL || !(opts[i].cmds & BIT(cmd)))
                continue;
            if (!any)
                fprintf(f, "options:\n");
            any = true;
            print_opt(f, &opts[i]);
        }
        fprintf(f, "%scommon options:\n", any ? "\n" : "");
        for (size_t i = 0; i < N_OPTS; i++)
            if (opts[i].cmds == ALL)
                print_opt(f, &opts[i]);
        fprintf(f, "\nExit codes: 0 ok, 1 server or RPC error, 2 usage error, 3 not ready, "
                   "4 bad local file or tensor,\n130 perf interrupted (kiln --help says more).\n");
        return;
    }
    fprintf(f, "usage: kiln COMMAND [MODEL] [options]\n\n"
               "The command-line client of Kiln and of any KServe v2 (Open Inference Protocol) "
               "gRPC server.\n\ncommands:\n");
    for (int c = 1; c < KILN_CLI_CMD_COUNT; c++) {
        char left[32];
        snprintf(left, sizeof(left), "%s%s", cmds[c].name,
                 cmds[c].model == OPERAND_REQUIRED   ? " MODEL"
                 : cmds[c].model == OPERAND_OPTIONAL ? " [MODEL]"
                                                     : "");
        fprintf(f, "  %-18s %s\n", left, cmds[c].summary);
    }
    fprintf(f, "  %-18s %s\n", "help [COMMAND]", "a command's options and examples");
    fprintf(f, "\ncommon options (every command; before or after it):\n");
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].cmds == ALL)
            print_opt(f, &opts[i]);
    fprintf(f,
            "\nexit codes:\n"
            "  0  ok\n"
            "  1  the server answered with an error or could not be reached (stderr: the gRPC\n"
            "     status name and the server's message); perf: some requests failed\n"
            "  2  usage error (unknown command or option, bad value, missing MODEL)\n"
            "  3  health: the server or the model is not live or not ready\n"
            "  4  a local file or tensor does not do: an unreadable or malformed .npy or JSON\n"
            "     tensor, a datatype, shape or input/output name the model does not have, or an\n"
            "     output file that cannot be written\n"
            "  130  perf was interrupted (Ctrl-C); what it measured so far is reported\n"
            "\nenvironment: KILN_URL is the default --url.\n");
}

/* ---------------------------------------------------------------- values */

kiln_status kiln_cli_parse_duration_ms(const char *s, int64_t *ms, kiln_err *err)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mul = 1000;
    bool unit_ok = true;
    if (end != s) {
        if (strcmp(end, "ms") == 0)
            mul = 1;
        else if (strcmp(end, "s") == 0 || *end == '\0')
            mul = 1000;
        else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
            mul = 60000;
        else if (strcmp(end, "h") == 0)
            mul = 3600000;
        else
            unit_ok = false;
    }
    if (end == s || !unit_ok || errno || !isfinite(v) || v < 0 || v * mul > 1e15 ||
        isspace((unsigned char)*s))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "'%s' is not a duration (e.g. 500ms, 2s, 1m; a bare number is "
                            "seconds)",
                            s);
    *ms = (int64_t)llround(v * mul);
    return KILN_OK;
}

kiln_status kiln_cli_parse_bytes(const char *s, uint64_t *bytes, kiln_err *err)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    uint64_t mul = 1;
    const char *units = "KMGT";
    const char *u = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
    if (u && *end) {
        mul = 1ull << (10 * (u - units + 1));
        end++;
        if (*end == 'i' && end[1] == 'B')
            end += 2;
        else if (*end == 'B')
            end++;
    } else if (*end == 'B') {
        end++;
    }
    if (end == s || *end || errno || !isdigit((unsigned char)s[0]) || (n && mul > UINT64_MAX / n))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "'%s' is not a byte size (e.g. 4096, 64K, 16M, 1G)", s);
    *bytes = (uint64_t)n * mul;
    return KILN_OK;
}

/* A whole number in [lo, hi]. */
static kiln_status parse_int(const char *what, const char *s, long long lo, long long hi,
                             long long *out, kiln_err *err)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi || isspace((unsigned char)*s))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "--%s '%s' is not a whole number from %lld to %lld", what, s, lo, hi);
    *out = v;
    return KILN_OK;
}

static kiln_status parse_concurrency(const char *s, kiln_cli_args *a, kiln_err *err)
{
    const char *p = s;
    a->n_concurrency = 0;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > KILN_CLI_MAX_CONCURRENCY || (*end && *end != ','))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "--concurrency '%s': each level is a whole number from 1 to %d, "
                                "levels separated by commas",
                                s, KILN_CLI_MAX_CONCURRENCY);
        if (a->n_concurrency == KILN_CLI_MAX_LIST)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "--concurrency '%s': more than %d levels", s, KILN_CLI_MAX_LIST);
        a->concurrency[a->n_concurrency++] = (int)v;
        if (!*end)
            return KILN_OK;
        p = end + 1;
    }
}

/* NAME=VALUE with both parts present; *eq points at the '='. */
static kiln_status name_value(const char *what, const char *s, const char **eq, kiln_err *err)
{
    *eq = strchr(s, '=');
    if (!*eq || *eq == s || !(*eq)[1])
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "--%s '%s' is not NAME=VALUE", what, s);
    return KILN_OK;
}

static kiln_status push(const char *what, const char **list, size_t *n, const char *v,
                        kiln_err *err)
{
    if (*n == KILN_CLI_MAX_LIST)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "more than %d --%s options",
                            KILN_CLI_MAX_LIST, what);
    list[(*n)++] = v;
    return KILN_OK;
}

static kiln_status positive_real(const char *what, const char *s, double *out, kiln_err *err)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v <= 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "--%s '%s' is not a positive number", what,
                            s);
    *out = v;
    return KILN_OK;
}

static kiln_status set_opt(const opt *o, const char *v, kiln_cli_args *a, kiln_err *err)
{
    const char *eq;
    long long n;
    int64_t ms;
    int64_t shape[KILN_CLI_MAX_RANK];
    int rank;
    kiln_cli_dtype dt;
    kiln_status st = KILN_OK;
    switch (o->id) {
    case O_URL:
        if (!*v)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "--url is empty");
        a->url = v;
        break;
    case O_TIMEOUT:
        if ((st = kiln_cli_parse_duration_ms(v, &ms, err)) == KILN_OK)
            a->timeout_ms = ms;
        break;
    case O_TLS:
        a->tls = true;
        break;
    case O_TLS_CA:
        a->tls_ca = v;
        a->tls = true;
        break;
    case O_TLS_CERT:
        a->tls_cert = v;
        a->tls = true;
        break;
    case O_TLS_KEY:
        a->tls_key = v;
        a->tls = true;
        break;
    case O_TLS_NAME:
        a->tls_server_name = v;
        a->tls = true;
        break;
    case O_RETRIES:
        if ((st = parse_int(o->name, v, 0, 100, &n, err)) == KILN_OK)
            a->retries = (int)n;
        break;
    case O_JSON:
        a->json = true;
        break;
    case O_HELP:
        a->help = true;
        break;
    case O_VERSION:
        a->version = true;
        break;
    case O_MODEL_VERSION:
        a->model_version = v;
        break;
    case O_READY:
        a->ready_only = true;
        break;
    case O_INPUT:
        if ((st = name_value(o->name, v, &eq, err)) == KILN_OK)
            st = push(o->name, a->inputs, &a->n_inputs, v, err);
        break;
    case O_OUTPUT:
        if (!*v)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "--output needs a name");
        st = push(o->name, a->outputs, &a->n_outputs, v, err);
        break;
    case O_DATATYPE:
        eq = strchr(v, '=');
        if (eq && eq == v)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "--datatype '%s' has no name", v);
        if ((st = kiln_cli_dtype_parse(eq ? eq + 1 : v, &dt, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "--datatype");
        st = push(o->name, a->datatypes, &a->n_datatypes, v, err);
        break;
    case O_SHAPE:
        if ((st = name_value(o->name, v, &eq, err)) != KILN_OK)
            return st;
        if ((st = kiln_cli_shape_parse(eq + 1, shape, &rank, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "--shape");
        st = push(o->name, a->shapes, &a->n_shapes, v, err);
        break;
    case O_SHM:
        a->shm = true;
        break;
    case O_SHM_OUT:
        if ((st = kiln_cli_parse_bytes(v, &a->shm_output_bytes, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "--%s", o->name);
        break;
    case O_REQUEST_ID:
        a->request_id = v;
        break;
    case O_OUT_DIR:
        a->out_dir = v;
        break;
    case O_PRINT_LIMIT:
        if ((st = parse_int(o->name, v, 0, INT64_MAX, &n, err)) == KILN_OK)
            a->print_limit = (uint64_t)n;
        break;
    case O_CONCURRENCY:
        st = parse_concurrency(v, a, err);
        break;
    case O_RATE:
        st = positive_real(o->name, v, &a->rate, err);
        break;
    case O_DURATION:
        if ((st = kiln_cli_parse_duration_ms(v, &ms, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "--duration");
        if (ms <= 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "--duration must be above 0");
        a->duration_s = (double)ms / 1000.0;
        break;
    case O_COUNT:
        if ((st = parse_int(o->name, v, 1, INT64_MAX, &n, err)) == KILN_OK)
            a->count = (uint64_t)n;
        break;
    case O_WARMUP:
        if ((st = kiln_cli_parse_duration_ms(v, &ms, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "--warmup");
        a->warmup_s = (double)ms / 1000.0;
        break;
    case O_BATCH:
        if ((st = parse_int(o->name, v, 1, INT32_MAX, &n, err)) == KILN_OK)
            a->batch_size = n;
        break;
    case O_THREADS:
        if ((st = parse_int(o->name, v, 1, KILN_CLI_MAX_CONCURRENCY, &n, err)) == KILN_OK)
            a->threads = (int)n;
        break;
    case O_CSV:
        a->csv = v;
        break;
    case O_SEED:
        if ((st = parse_int(o->name, v, 0, INT64_MAX, &n, err)) == KILN_OK)
            a->seed = (uint64_t)n;
        break;
    }
    return st;
}

static const opt *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static kiln_cli_cmd find_cmd(const char *s)
{
    for (int c = 1; c < KILN_CLI_CMD_COUNT; c++)
        if (strcmp(cmds[c].name, s) == 0)
            return (kiln_cli_cmd)c;
    return KILN_CLI_CMD_NONE;
}

static void defaults(kiln_cli_args *a, const char *env_url)
{
    memset(a, 0, sizeof(*a));
    a->url = env_url && *env_url ? env_url : "127.0.0.1:8001";
    a->timeout_ms = 30000;
    a->retries = 3;
    a->shm_output_bytes = 64ull << 20;
    a->print_limit = 256;
    a->warmup_s = 0.5;
    a->batch_size = 1;
    a->threads = 16;
    a->seed = 1;
}

/* The subcommand word: the first argument that is neither an option nor an option's value.
 * OUT: *at its index (argc when none). */
static kiln_status find_command(int argc, char *const *argv, int *at, kiln_err *err)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--") == 0) {
            *at = i + 1 < argc ? i + 1 : argc;
            return KILN_OK;
        }
        if (s[0] != '-' || s[1] == '\0') {
            *at = i;
            return KILN_OK;
        }
        if (strcmp(s, "-h") == 0)
            continue;
        if (s[1] != '-')
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "unknown option '%s'", s);
        const char *eq = strchr(s + 2, '=');
        size_t len = eq ? (size_t)(eq - s - 2) : strlen(s + 2);
        const opt *o = find_opt(s + 2, len);
        if (!o)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "unknown option '%.*s' (see kiln --help)", (int)len + 2, s);
        if (o->arg && !eq)
            i++; /* its value */
    }
    *at = argc;
    return KILN_OK;
}

kiln_status kiln_cli_args_parse(int argc, char *const *argv, const char *env_url, kiln_cli_args *a,
                                kiln_err *err)
{
    defaults(a, env_url);
    int at = argc;
    kiln_status st = find_command(argc, argv, &at, err);
    if (st != KILN_OK)
        return st;
    bool help_cmd = at < argc && strcmp(argv[at], "help") == 0;
    if (help_cmd) {
        a->help = true;
        if (at + 1 < argc && !(a->cmd = find_cmd(argv[at + 1])))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "unknown command '%s'", argv[at + 1]);
        return KILN_OK;
    }
    if (at < argc && !(a->cmd = find_cmd(argv[at])))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "unknown command '%s' (health, models, metadata, config, stats, "
                            "load, unload, infer, perf)",
                            argv[at]);
    const char *cname = kiln_cli_cmd_name(a->cmd);
    bool no_more_options = false;
    size_t n_operands = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (i == at)
            continue;
        if (!no_more_options && strcmp(s, "--") == 0) {
            no_more_options = true;
            continue;
        }
        if (no_more_options || s[0] != '-' || s[1] == '\0') {
            if (a->cmd == KILN_CLI_CMD_NONE || cmds[a->cmd].model == OPERAND_NONE ||
                n_operands == 1)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: unexpected argument '%s'",
                                    cname, s);
            a->model = s;
            n_operands++;
            continue;
        }
        if (strcmp(s, "-h") == 0) {
            a->help = true;
            continue;
        }
        const char *eq = s[1] == '-' ? strchr(s + 2, '=') : NULL;
        size_t len = eq ? (size_t)(eq - s - 2) : strlen(s + 2);
        const opt *o = s[1] == '-' ? find_opt(s + 2, len) : NULL;
        if (!o)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "%s: unknown option '%.*s' (see kiln "
                                "%s--help)",
                                cname, (int)(s[1] == '-' ? len + 2 : strlen(s)), s,
                                a->cmd ? "COMMAND " : "");
        if (a->cmd && !(o->cmds & BIT(a->cmd)))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "%s: option --%s does not apply to this command", cname, o->name);
        const char *v = NULL;
        if (o->arg) {
            if (eq)
                v = eq + 1;
            else if (i + 1 < argc)
                v = argv[++i];
            else
                return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: --%s needs a value (%s)",
                                    cname, o->name, o->arg);
        } else if (eq) {
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: --%s takes no value", cname,
                                o->name);
        }
        if ((st = set_opt(o, v, a, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "%s", cname);
    }
    if (a->help || a->version)
        return KILN_OK;
    if (a->cmd == KILN_CLI_CMD_NONE)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "no command given (see kiln --help)");
    if (cmds[a->cmd].model == OPERAND_REQUIRED && !a->model)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: MODEL is required (kiln %s MODEL)",
                            cname, cname);
    if (a->model && !*a->model)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: MODEL is empty", cname);
    if (a->rate > 0 && a->n_concurrency)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "%s: --rate and --concurrency exclude each other", cname);
    if (a->count && a->duration_s > 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "%s: --count and --duration exclude each other", cname);
    if ((a->tls_cert != NULL) != (a->tls_key != NULL))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "%s: --tls-cert and --tls-key go together (mutual TLS)", cname);
    if (a->cmd == KILN_CLI_CMD_PERF) {
        if (!a->n_concurrency && a->rate <= 0)
            a->concurrency[a->n_concurrency++] = 1;
        if (!a->count && a->duration_s <= 0)
            a->duration_s = 5;
    }
    return KILN_OK;
}
