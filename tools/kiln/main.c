/*
 * tools/kiln/main.c: the kiln tool's main(): the command line, the connection, dispatch, and
 * the error lines every subcommand prints.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/kiln/cli.h"
#include "tools/kiln/json.h"

int kiln_cli_rpc_failed(const kiln_cli_args *a, const char *what, const kiln_client_error *e)
{
    fprintf(stderr, "kiln: %s: %s: %s: %s\n", kiln_cli_cmd_name(a->cmd), what,
            kiln_client_code_name(e->code), e->message[0] ? e->message : "(no message)");
    return KILN_CLI_EXIT_RPC;
}

int kiln_cli_fail(const kiln_cli_args *a, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kiln: %s: ", kiln_cli_cmd_name(a->cmd));
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

void kiln_cli_put_json_string(const char *s)
{
    kiln_cli_json_put_string(stdout, s ? s : "", s ? strlen(s) : 0);
}

void kiln_cli_json_kv(const char *key, const char *value, bool first)
{
    printf("%s\"%s\":", first ? "" : ",", key);
    kiln_cli_put_json_string(value);
}

void kiln_cli_json_shape(const int64_t *shape, int rank)
{
    printf(",\"shape\":[");
    for (int d = 0; d < rank; d++)
        printf("%s%" PRId64, d ? "," : "", shape[d]);
    printf("]");
}

static const kiln_cli_cmd_fn commands[KILN_CLI_CMD_COUNT] = {
    [KILN_CLI_CMD_HEALTH] = kiln_cli_health,     [KILN_CLI_CMD_MODELS] = kiln_cli_models,
    [KILN_CLI_CMD_METADATA] = kiln_cli_metadata, [KILN_CLI_CMD_CONFIG] = kiln_cli_config,
    [KILN_CLI_CMD_STATS] = kiln_cli_stats,       [KILN_CLI_CMD_LOAD] = kiln_cli_load,
    [KILN_CLI_CMD_UNLOAD] = kiln_cli_unload,     [KILN_CLI_CMD_INFER] = kiln_cli_infer,
    [KILN_CLI_CMD_PERF] = kiln_cli_perf,
};

int main(int argc, char **argv)
{
    kiln_cli_args a;
    kiln_err err;
    if (kiln_cli_args_parse(argc, argv, getenv("KILN_URL"), &a, &err) != KILN_OK) {
        fprintf(stderr, "kiln: %s\n", err.msg);
        return KILN_CLI_EXIT_USAGE;
    }
    if (a.help) {
        kiln_cli_usage(stdout, a.cmd);
        return KILN_CLI_EXIT_OK;
    }
    if (a.version) {
        printf("kiln %s (libkilnclient %d.%d.%d)\n", KILN_CLI_VERSION, KILN_CLIENT_VERSION_MAJOR,
               KILN_CLIENT_VERSION_MINOR, KILN_CLIENT_VERSION_PATCH);
        return KILN_CLI_EXIT_OK;
    }
    signal(SIGPIPE, SIG_IGN); /* `kiln ... | head` ends with a write error, not a signal */

    kiln_client_options o;
    kiln_client_options_default(&o);
    o.url = a.url;
    o.tls = a.tls;
    o.tls_ca_file = a.tls_ca;
    o.tls_cert_file = a.tls_cert;
    o.tls_key_file = a.tls_key;
    o.tls_server_name = a.tls_server_name;
    o.timeout_ms = a.timeout_ms;
    o.retries = a.retries;
    kiln_client *c;
    kiln_client_error e;
    if (kiln_client_create(&o, &c, &e) != 0) {
        /* only local problems fail here (unreadable TLS files, a malformed url) */
        fprintf(stderr, "kiln: %s: cannot set up the connection to %s: %s: %s\n",
                kiln_cli_cmd_name(a.cmd), a.url, kiln_client_code_name(e.code), e.message);
        return KILN_CLI_EXIT_USAGE;
    }
    int rc = commands[a.cmd](&a, c);
    kiln_client_destroy(c);
    if (fflush(stdout) != 0 && rc == KILN_CLI_EXIT_OK) {
        perror("kiln: writing the output");
        rc = KILN_CLI_EXIT_DATA;
    }
    return rc;
}
