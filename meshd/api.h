/* The local HTTP/JSON API: evhttp on a unix socket (mode 0600, owner only), versioned under
 * /v1/. Handlers are registered per method and path; unknown paths, wrong methods and oversized
 * or malformed requests get a 4xx with a JSON {"error": "..."} body. */
#ifndef FOGMESH_MESHD_API_H
#define FOGMESH_MESHD_API_H

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "err.h"

#define API_MAX_BODY   (1u << 20) /* 1 MiB: the largest spec a user may send */
#define API_MAX_ROUTES 64

struct api;

/* A handler answers req (synchronously or later). `rest` is what follows the route's path when
 * the route was registered as a prefix (ending in '/'), else "". */
typedef void (*api_handler_fn)(struct evhttp_request *req, const char *rest, void *ud);

/* Listens on the unix socket at path. A stale socket file (no one answering) is replaced; a live
 * one is an error (another meshd is running). */
int api_new(struct event_base *base, const char *path, struct api **ret_api, struct mesh_err *err);

/* Removes the socket file and frees everything. Accepts NULL. */
void api_free(struct api *api);

/* Registers a handler for method ("GET", "PUT", "POST", "DELETE") and path. A path ending in '/'
 * matches every path below it. */
int api_route(struct api *api, const char *method, const char *path, api_handler_fn fn, void *ud);

/* A table of routes, registered in one call (all with the same ud). */
struct api_route_def {
    const char *method, *path;
    api_handler_fn fn;
};
int api_route_table(struct api *api, const struct api_route_def *defs, size_t n, void *ud,
                    struct mesh_err *err);

/* Sends body (a JSON value; the reference is stolen) with the given status code. */
void api_reply_json(struct evhttp_request *req, int code, json_t *body);

/* Sends {"error": "..."} with the given status code. */
void api_reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses the request body as a JSON object. On failure replies 400 itself and returns NULL. */
json_t *api_read_json(struct evhttp_request *req);

/* For handlers that answer later: w->gone(w->ud) is called if the client hangs up first, after
 * which req must not be used. w is owned by the caller and must live until gone() fires or
 * api_unwatch(req) is called, which must happen before answering. */
struct api_watch {
    void (*gone)(void *ud);
    void *ud;
    struct evhttp_request *req; /* set by api_watch */
};
void api_watch(struct evhttp_request *req, struct api_watch *w);
void api_unwatch(struct evhttp_request *req);

/* The value of query parameter `key`, or NULL. Valid until the request is answered. */
const char *api_query(struct evhttp_request *req, const char *key, char *buf, size_t len);

#endif
