/*
 * server/metrics_http.h: the Prometheus endpoint: an HTTP server (libmicrohttpd, its own
 * thread) answering GET <path> with kiln_engine_metrics, 404 for other paths and 405 for other
 * methods. docs/operations.md describes the metrics.
 * Thread-safety: start and stop from one thread; requests are served on the daemon's thread.
 */
#ifndef KILN_SERVER_METRICS_HTTP_H
#define KILN_SERVER_METRICS_HTTP_H

#include "common/status.h"
#include "model_worker/worker.h"

typedef struct kiln_metrics_http kiln_metrics_http;

/*
 * Listens on `address` ("host:port"; port 0 picks one; "[::]:8002" for IPv6) and serves `path`
 * ("/metrics") from engine e, which must outlive the server. OUT: *out.
 * INVALID_ARGUMENT for a malformed address or a path not starting with '/'; UNAVAILABLE when
 * the address cannot be bound (in use, not local).
 */
kiln_status kiln_metrics_http_start(const char *address, const char *path, kiln_engine *e,
                                    kiln_metrics_http **out, kiln_err *err);

/* The bound port. */
int kiln_metrics_http_port(const kiln_metrics_http *h);

/* Stops serving (waits for requests in progress) and frees h. NULL is a no-op. */
void kiln_metrics_http_stop(kiln_metrics_http *h);

#endif /* KILN_SERVER_METRICS_HTTP_H */
