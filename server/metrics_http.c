/* server/metrics_http.c: the Prometheus endpoint over libmicrohttpd (metrics_http.h). */
#include "server/metrics_http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/alloc.h"
#include "common/log.h"

struct kiln_metrics_http {
    struct MHD_Daemon *daemon;
    kiln_engine *engine;
    char path[256];
    int port;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **state)
{
    (void)version;
    (void)upload;
    kiln_metrics_http *h = cls;
    const char *plain = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET and HEAD\n"; /* answered before any body is read */
        *upload_size = 0;
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, plain, msg, sizeof(msg) - 1);
    }
    if (!*state) { /* first call for this request: headers only */
        *state = h;
        return MHD_YES;
    }
    *upload_size = 0;
    if (strcmp(url, h->path) != 0) {
        char msg[400];
        int n = snprintf(msg, sizeof(msg), "not found: the metrics are at %s\n", h->path);
        return reply(c, MHD_HTTP_NOT_FOUND, plain, msg, (size_t)n);
    }
    char *text;
    size_t len;
    kiln_err err;
    if (kiln_engine_metrics(h->engine, &text, &len, &err) != KILN_OK) {
        KILN_LOGW(NULL, "metrics: %s", err.msg);
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, plain, err.msg, strlen(err.msg));
    }
    enum MHD_Result ok =
        reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
    kiln_free(text);
    return ok;
}

/* Splits "host:port" / "[v6]:port" and resolves it for binding. */
static kiln_status resolve(const char *address, struct addrinfo **ai, kiln_err *err)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    const char *h = address;
    size_t hl = colon ? (size_t)(colon - address) : 0;
    if (hl >= 2 && address[0] == '[' && address[hl - 1] == ']')
        h = address + 1, hl -= 2;
    if (!colon || !colon[1] || hl >= sizeof(host))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "metrics address '%s' is not host:port (e.g. 0.0.0.0:8002)", address);
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int rc = getaddrinfo(hl ? host : NULL, colon + 1, &hints, ai);
    if (rc != 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "metrics address '%s': %s", address,
                            gai_strerror(rc));
    return KILN_OK;
}

kiln_status kiln_metrics_http_start(const char *address, const char *path, kiln_engine *e,
                                    kiln_metrics_http **out, kiln_err *err)
{
    *out = NULL;
    if (!path || path[0] != '/' || strlen(path) >= sizeof(((kiln_metrics_http *)0)->path))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "metrics path '%s' must start with '/' (at most 255 bytes)",
                            path ? path : "");
    struct addrinfo *ai;
    kiln_status st = resolve(address, &ai, err);
    if (st != KILN_OK)
        return st;
    kiln_metrics_http *h = kiln_calloc(1, sizeof(*h));
    if (!h) {
        freeaddrinfo(ai);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    snprintf(h->path, sizeof(h->path), "%s", path);
    h->engine = e;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        kiln_free(h);
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "cannot serve metrics on %s (address in use or not local?)", address);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    *out = h;
    return KILN_OK;
}

int kiln_metrics_http_port(const kiln_metrics_http *h)
{
    return h->port;
}

void kiln_metrics_http_stop(kiln_metrics_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    kiln_free(h);
}
