#include "api.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "backoff.h"
#include "timeutil.h"

struct route {
    enum evhttp_cmd_type method;
    char path[96];
    size_t len;
    int prefix;
    api_handler_fn fn;
    void *ud;
};

struct api {
    struct evhttp *http;
    struct evconnlistener *listener; /* owned by http once bound */
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct route routes[API_MAX_ROUTES];
    size_t nroutes;
};

void api_reply_json(struct evhttp_request *req, int code, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct evbuffer *buf = evbuffer_new();
    if (buf && text) {
        evbuffer_add(buf, text, strlen(text));
        evbuffer_add(buf, "\n", 1);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, NULL, buf);
    if (buf)
        evbuffer_free(buf);
    free(text);
}

void api_reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    api_reply_json(req, code, json_pack("{s:s}", "error", msg));
}

json_t *api_read_json(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0) {
        api_reply_error(req, 400, "request body required: a JSON object");
        return NULL;
    }
    const char *data = (const char *)evbuffer_pullup(in, -1);
    json_error_t jerr;
    json_t *v = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        api_reply_error(req, 400, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                        jerr.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        api_reply_error(req, 400, "request body must be a JSON object");
        return NULL;
    }
    return v;
}

const char *api_query(struct evhttp_request *req, const char *key, char *buf, size_t len)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!q)
        return NULL;
    struct evkeyvalq params;
    if (evhttp_parse_query_str(q, &params) != 0)
        return NULL;
    const char *v = evhttp_find_header(&params, key);
    const char *ret = NULL;
    if (v && strlen(v) < len) {
        strcpy(buf, v);
        ret = buf;
    }
    evhttp_clear_headers(&params);
    return ret;
}

static void on_conn_close(struct evhttp_connection *conn, void *arg)
{
    struct api_watch *w = arg;
    struct evhttp_request *req = w->req;
    (void)conn;
    w->gone(w->ud);
    /* A client that hung up (EOF, timeout) before the answer was complete leaves its request
     * detached from the connection (libevent 2.1: evhttp_connection_incoming_fail), to be
     * freed by whoever answers it; nobody will now. A request still attached is freed with
     * its connection by libevent itself. */
    if (req && !evhttp_request_get_connection(req))
        evhttp_request_free(req);
}

void api_watch(struct evhttp_request *req, struct api_watch *w)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    w->req = req;
    if (conn)
        evhttp_connection_set_closecb(conn, on_conn_close, w);
}

void api_unwatch(struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn)
        evhttp_connection_set_closecb(conn, NULL, NULL);
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    default:
        return "?";
    }
}

static void dispatch(struct evhttp_request *req, void *arg)
{
    struct api *api = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    int path_known = 0;

    if (!path || !*path) {
        api_reply_error(req, 400, "malformed request URI");
        return;
    }
    for (size_t i = 0; i < api->nroutes; i++) {
        struct route *r = &api->routes[i];
        int match = r->prefix ? strncmp(path, r->path, r->len) == 0 && path[r->len] != '\0'
                              : strcmp(path, r->path) == 0;
        if (!match)
            continue;
        path_known = 1;
        if (r->method == method) {
            r->fn(req, r->prefix ? path + r->len : "", r->ud);
            return;
        }
    }
    if (path_known)
        api_reply_error(req, 405, "method %s not allowed on %s", method_name(method), path);
    else
        api_reply_error(req, 404, "no such endpoint: %s", path);
}

int api_route(struct api *api, const char *method, const char *path, api_handler_fn fn, void *ud)
{
    enum evhttp_cmd_type m;
    if (strcmp(method, "GET") == 0)
        m = EVHTTP_REQ_GET;
    else if (strcmp(method, "PUT") == 0)
        m = EVHTTP_REQ_PUT;
    else if (strcmp(method, "POST") == 0)
        m = EVHTTP_REQ_POST;
    else if (strcmp(method, "DELETE") == 0)
        m = EVHTTP_REQ_DELETE;
    else
        return MESH_EINVAL;
    if (api->nroutes == API_MAX_ROUTES || strlen(path) >= sizeof api->routes[0].path)
        return MESH_EFULL;
    struct route *r = &api->routes[api->nroutes++];
    r->method = m;
    strcpy(r->path, path);
    r->len = strlen(path);
    r->prefix = path[r->len - 1] == '/';
    r->fn = fn;
    r->ud = ud;
    return 0;
}

int api_route_table(struct api *api, const struct api_route_def *defs, size_t n, void *ud,
                    struct mesh_err *err)
{
    for (size_t i = 0; i < n; i++) {
        int rc = api_route(api, defs[i].method, defs[i].path, defs[i].fn, ud);
        if (rc < 0)
            return mesh_errf(err, rc, "api: cannot register %s %s", defs[i].method, defs[i].path);
    }
    return 0;
}

/* Is anyone answering on the socket at path? */
static int socket_live(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int live = connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0;
    close(fd);
    return live;
}

/* ---- accepting: a pause on EMFILE/ENFILE ----------------------------------------------- */

/* When accept() fails for lack of descriptors or memory the listening socket stays readable,
 * and libevent's default (no error callback) logs "Error from accept() call" and tries again at
 * once: a busy loop with a log line per turn. Instead the listener stops for ACCEPT_BACKOFF_MIN_MS
 * (common/backoff.h); clients wait in the socket's backlog meanwhile. The listener's callback
 * argument belongs to evhttp (evhttp_bind_listener sets it), so the pause cannot reach struct api:
 * it is a one-shot timer on the listener alone, which event_base_free frees if it is still
 * pending. The event loop does not run after api_free (node_close), so it never fires on a freed
 * listener. The mesh port, whose callbacks are ours, backs off with doubling and counts
 * (netlink/peers.c). */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

static void on_accept_error(struct evconnlistener *lis, void *arg)
{
    (void)arg; /* the evhttp */
    if (!accept_backoff_wanted(EVUTIL_SOCKET_ERROR()))
        return; /* about one connection only: the next accept may work */
    struct timeval tv = mesh_ms_to_timeval(ACCEPT_BACKOFF_MIN_MS);
    evconnlistener_disable(lis);
    if (event_base_once(evconnlistener_get_base(lis), -1, EV_TIMEOUT, on_accept_resume, lis, &tv) <
        0)
        evconnlistener_enable(lis); /* out of memory: better spin than stop for good */
}

int api_new(struct event_base *base, const char *path, struct api **ret_api, struct mesh_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int rc;
    struct api *api = calloc(1, sizeof *api);
    if (!api)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    api->fd = -1;
    if (strlen(path) >= sizeof sa.sun_path) {
        rc = mesh_errf(err, MESH_EINVAL, "--api-socket %s: longer than %zu characters", path,
                       sizeof sa.sun_path - 1);
        goto fail;
    }
    strcpy(sa.sun_path, path);

    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            rc = mesh_errf(err, MESH_EEXISTS, "api socket %s exists and is not a socket", path);
            goto fail;
        }
        if (socket_live(&sa)) {
            rc = mesh_errf(err, MESH_EEXISTS, "api socket %s is in use: is another meshd running?",
                           path);
            goto fail;
        }
        unlink(path); /* stale, left by a killed meshd */
    }

    api->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (api->fd < 0) {
        rc = mesh_errf(err, -errno, "api socket: %s", strerror(errno));
        goto fail;
    }
    /* Create the socket file owner-only from the start: no window in which others could
     * connect. */
    mode_t old = umask(0077);
    rc = bind(api->fd, (struct sockaddr *)&sa, sizeof sa);
    int bind_errno = errno;
    umask(old);
    if (rc != 0) {
        rc = mesh_errf(err, -bind_errno, "cannot create api socket %s: %s", path,
                       strerror(bind_errno));
        goto fail;
    }
    strcpy(api->path, path); /* ours from now on: api_free unlinks it */
    if (chmod(path, 0600) != 0 || listen(api->fd, 64) != 0) {
        rc = mesh_errf(err, -errno, "api socket %s: %s", path, strerror(errno));
        goto fail;
    }
    api->http = evhttp_new(base);
    if (!api->http) {
        rc = mesh_errf(err, MESH_ENOMEM, "out of memory");
        goto fail;
    }
    evhttp_set_max_body_size(api->http, API_MAX_BODY);
    evhttp_set_max_headers_size(api->http, 16 * 1024);
    evhttp_set_timeout(api->http, 60);
    evhttp_set_allowed_methods(api->http, EVHTTP_REQ_GET | EVHTTP_REQ_PUT | EVHTTP_REQ_POST |
                                              EVHTTP_REQ_DELETE);
    evhttp_set_gencb(api->http, dispatch, api);
    /* Our own listener (evhttp_accept_socket_with_handle would make one without an error
     * callback, and libevent's default on EMFILE is to log and retry at once). */
    api->listener = evconnlistener_new(base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE, -1, api->fd);
    if (!api->listener) {
        rc = mesh_errf(err, MESH_ENOMEM, "api socket %s: cannot accept", path);
        goto fail;
    }
    api->fd = -1; /* the listener owns it now */
    evconnlistener_set_error_cb(api->listener, on_accept_error);
    if (!evhttp_bind_listener(api->http, api->listener)) {
        evconnlistener_free(api->listener);
        api->listener = NULL;
        rc = mesh_errf(err, MESH_EIO, "api socket %s: cannot accept", path);
        goto fail;
    }
    *ret_api = api;
    return 0;
fail:
    api_free(api);
    return rc;
}

void api_free(struct api *api)
{
    if (!api)
        return;
    if (api->http)
        evhttp_free(api->http); /* frees the listener and the connections */
    if (api->fd >= 0)
        close(api->fd);
    if (api->path[0])
        unlink(api->path);
    free(api);
}
