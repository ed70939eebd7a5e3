/*
 * tools/kiln/cmd_server.c: the subcommands that ask about or change the server's state:
 * health, models, metadata, config, stats, load, unload.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tools/kiln/cli.h"
#include "tools/kiln/json.h"

static const char *yes(bool b)
{
    return b ? "true" : "false";
}

int kiln_cli_health(const kiln_cli_args *a, kiln_client *c)
{
    kiln_client_error e;
    bool live = false, ready = false, model_ready = false;
    if (kiln_client_server_live(c, &live, &e) != 0)
        return kiln_cli_rpc_failed(a, "server live", &e);
    if (kiln_client_server_ready(c, &ready, &e) != 0)
        return kiln_cli_rpc_failed(a, "server ready", &e);
    if (a->model && kiln_client_model_ready(c, a->model, a->model_version, &model_ready, &e) != 0) {
        char what[300];
        snprintf(what, sizeof(what), "model '%s' ready", a->model);
        return kiln_cli_rpc_failed(a, what, &e);
    }
    if (a->json) {
        printf("{");
        kiln_cli_json_kv("url", a->url, true);
        printf(",\"live\":%s,\"ready\":%s", yes(live), yes(ready));
        if (a->model) {
            kiln_cli_json_kv("model", a->model, false);
            printf(",\"model_ready\":%s", yes(model_ready));
        }
        printf("}\n");
    } else {
        printf("server %s: %s, %s\n", a->url, live ? "live" : "NOT live",
               ready ? "ready" : "NOT ready");
        if (a->model)
            printf("model %s%s%s: %s\n", a->model, a->model_version ? " version " : "",
                   a->model_version ? a->model_version : "", model_ready ? "ready" : "NOT ready");
    }
    return live && ready && (!a->model || model_ready) ? KILN_CLI_EXIT_OK : KILN_CLI_EXIT_NOT_READY;
}

int kiln_cli_models(const kiln_cli_args *a, kiln_client *c)
{
    kiln_client_error e;
    kiln_client_repo_entry *m;
    size_t n;
    if (kiln_client_repository_index(c, a->ready_only, &m, &n, &e) != 0)
        return kiln_cli_rpc_failed(a, "repository index", &e);
    if (a->json) {
        printf("{\"models\":[");
        for (size_t i = 0; i < n; i++) {
            printf("%s{", i ? "," : "");
            kiln_cli_json_kv("name", m[i].name, true);
            kiln_cli_json_kv("version", m[i].version, false);
            kiln_cli_json_kv("state", m[i].state, false);
            kiln_cli_json_kv("reason", m[i].reason, false);
            printf("}");
        }
        printf("]}\n");
    } else {
        int w = 4;
        for (size_t i = 0; i < n; i++)
            w = (int)strlen(m[i].name) > w ? (int)strlen(m[i].name) : w;
        printf("%-*s  %-7s  %-11s  %s\n", w, "NAME", "VERSION", "STATE", "REASON");
        for (size_t i = 0; i < n; i++)
            printf("%-*s  %-7s  %-*s%s%s\n", w, m[i].name, m[i].version[0] ? m[i].version : "-",
                   m[i].reason[0] ? 11 : 0, m[i].state, m[i].reason[0] ? "  " : "", m[i].reason);
        if (n == 0)
            printf("(no models%s)\n", a->ready_only ? " ready" : "");
    }
    kiln_client_free(m);
    return KILN_CLI_EXIT_OK;
}

static void json_tensors(const kiln_client_tensor_info *t, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        printf("%s{", i ? "," : "");
        kiln_cli_json_kv("name", t[i].name, true);
        kiln_cli_json_kv("datatype", t[i].datatype, false);
        kiln_cli_json_shape(t[i].shape, t[i].rank);
        printf("}");
    }
    printf("]");
}

static void text_tensors(const char *title, const kiln_client_tensor_info *t, size_t n)
{
    printf("%s:\n", title);
    int w = 4;
    for (size_t i = 0; i < n; i++)
        w = (int)strlen(t[i].name) > w ? (int)strlen(t[i].name) : w;
    for (size_t i = 0; i < n; i++) {
        char sh[160];
        printf("  %-*s  %-6s  %s\n", w, t[i].name, t[i].datatype,
               kiln_cli_shape_format(t[i].shape, t[i].rank, sh, sizeof(sh)));
    }
}

int kiln_cli_metadata(const kiln_cli_args *a, kiln_client *c)
{
    kiln_client_error e;
    kiln_client_model_info *m;
    if (kiln_client_model_metadata(c, a->model, a->model_version, &m, &e) != 0)
        return kiln_cli_rpc_failed(a, a->model, &e);
    if (a->json) {
        printf("{");
        kiln_cli_json_kv("name", m->name, true);
        kiln_cli_json_kv("platform", m->platform, false);
        printf(",\"versions\":[");
        for (size_t i = 0; i < m->n_versions; i++) {
            printf("%s", i ? "," : "");
            kiln_cli_put_json_string(m->versions[i]);
        }
        printf("],\"inputs\":");
        json_tensors(m->inputs, m->n_inputs);
        printf(",\"outputs\":");
        json_tensors(m->outputs, m->n_outputs);
        printf("}\n");
    } else {
        printf("model %s\nplatform: %s\nversions:", m->name, m->platform);
        for (size_t i = 0; i < m->n_versions; i++)
            printf(" %s", m->versions[i]);
        printf("\n");
        text_tensors("inputs", m->inputs, m->n_inputs);
        text_tensors("outputs", m->outputs, m->n_outputs);
    }
    kiln_client_model_info_free(m);
    return KILN_CLI_EXIT_OK;
}

/* Prints JSON text from the server: indented for people, on one line with --json. */
static int print_server_json(const kiln_cli_args *a, const char *text)
{
    kiln_cli_json *j;
    kiln_err err;
    if (kiln_cli_json_parse(text, strlen(text), &j, &err) != KILN_OK)
        return kiln_cli_fail(a, KILN_CLI_EXIT_RPC, "the server's JSON does not parse: %s", err.msg);
    kiln_cli_json_print(stdout, j, !a->json);
    printf("\n");
    kiln_cli_json_free(j);
    return KILN_CLI_EXIT_OK;
}

int kiln_cli_config(const kiln_cli_args *a, kiln_client *c)
{
    kiln_client_error e;
    char *json;
    if (kiln_client_model_config_json(c, a->model, a->model_version, &json, &e) != 0)
        return kiln_cli_rpc_failed(a, a->model, &e);
    int rc = print_server_json(a, json);
    kiln_client_free(json);
    return rc;
}

/* A uint64 of protobuf's JSON mapping: a string of digits (or a number); 0 when absent. */
static uint64_t u64_at(const kiln_cli_json *obj, const char *key)
{
    const kiln_cli_json *v = kiln_cli_json_get(obj, key);
    if (!v || (v->type != KILN_CLI_JSON_STRING && v->type != KILN_CLI_JSON_NUMBER))
        return 0;
    return strtoull(v->text, NULL, 10);
}

/* Mean microseconds of a StatisticDuration, or -1 when it counts nothing. */
static double mean_us(const kiln_cli_json *stats, const char *key)
{
    const kiln_cli_json *d = kiln_cli_json_get(stats, key);
    uint64_t n = u64_at(d, "count");
    return n ? (double)u64_at(d, "ns") / (double)n / 1e3 : -1;
}

static void cell_us(double us)
{
    if (us < 0)
        printf("  %10s", "-");
    else
        printf("  %10.1f", us);
}

int kiln_cli_stats(const kiln_cli_args *a, kiln_client *c)
{
    kiln_client_error e;
    char *json;
    if (kiln_client_model_stats_json(c, a->model, a->model_version, &json, &e) != 0)
        return kiln_cli_rpc_failed(a, a->model ? a->model : "statistics", &e);
    if (a->json) {
        int rc = print_server_json(a, json);
        kiln_client_free(json);
        return rc;
    }
    kiln_cli_json *j;
    kiln_err err;
    if (kiln_cli_json_parse(json, strlen(json), &j, &err) != KILN_OK) {
        kiln_client_free(json);
        return kiln_cli_fail(a, KILN_CLI_EXIT_RPC, "the server's statistics do not parse: %s",
                             err.msg);
    }
    kiln_client_free(json);
    const kiln_cli_json *ms = kiln_cli_json_get(j, "modelStats");
    size_t n = ms && ms->type == KILN_CLI_JSON_ARRAY ? ms->n : 0;
    int w = 5;
    for (size_t i = 0; i < n; i++) {
        const kiln_cli_json *name = kiln_cli_json_get(&ms->items[i], "name");
        if (name && name->type == KILN_CLI_JSON_STRING && (int)name->len > w)
            w = (int)name->len;
    }
    printf("%-*s  %-7s  %10s  %8s  %10s  %10s  %10s  %10s  %10s\n", w, "MODEL", "VERSION",
           "SUCCESS", "FAIL", "INFERENCES", "EXECUTIONS", "MEAN US", "QUEUE US", "COMPUTE US");
    for (size_t i = 0; i < n; i++) {
        const kiln_cli_json *m = &ms->items[i];
        const kiln_cli_json *name = kiln_cli_json_get(m, "name"),
                            *ver = kiln_cli_json_get(m, "version"),
                            *is = kiln_cli_json_get(m, "inferenceStats");
        printf("%-*s  %-7s  %10" PRIu64 "  %8" PRIu64 "  %10" PRIu64 "  %10" PRIu64, w,
               name && name->type == KILN_CLI_JSON_STRING ? name->text : "?",
               ver && ver->type == KILN_CLI_JSON_STRING && ver->len ? ver->text : "-",
               u64_at(kiln_cli_json_get(is, "success"), "count"),
               u64_at(kiln_cli_json_get(is, "fail"), "count"), u64_at(m, "inferenceCount"),
               u64_at(m, "executionCount"));
        cell_us(mean_us(is, "success"));
        cell_us(mean_us(is, "queue"));
        cell_us(mean_us(is, "computeInfer"));
        printf("\n");
    }
    if (n == 0)
        printf("(no statistics)\n");
    kiln_cli_json_free(j);
    return KILN_CLI_EXIT_OK;
}

static int load_or_unload(const kiln_cli_args *a, kiln_client *c, bool load)
{
    kiln_client_error e;
    int rc = load ? kiln_client_load(c, a->model, &e) : kiln_client_unload(c, a->model, &e);
    if (rc != 0)
        return kiln_cli_rpc_failed(a, a->model, &e);
    if (a->json) {
        printf("{");
        kiln_cli_json_kv("model", a->model, true);
        printf(",\"%s\":true}\n", load ? "loaded" : "unloaded");
    } else {
        printf("%s: %s\n", a->model, load ? "loaded" : "unloaded");
    }
    return KILN_CLI_EXIT_OK;
}

int kiln_cli_load(const kiln_cli_args *a, kiln_client *c)
{
    return load_or_unload(a, c, true);
}

int kiln_cli_unload(const kiln_cli_args *a, kiln_client *c)
{
    return load_or_unload(a, c, false);
}
