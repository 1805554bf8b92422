/* `meshctl logs APP/MS[/REPLICA] [--follow] [--tail N]` from any node (GET /v1/logs/...).
 *
 * The node the request comes to looks up where the replica is placed. If here, it streams the
 * container's output from the engine straight into the HTTP reply; else it opens a STREAM_LOGS
 * stream to the hosting node, which streams the engine's output into it, and relays the bytes.
 *
 * Flow control end to end: the HTTP side hands evhttp one chunk at a time and waits for it to be
 * written before it takes more (stream credit is returned, or the engine's transfer resumed,
 * only then); the hosting side keeps at most LOGS_HIGH bytes the stream has not taken yet and
 * pauses the engine's transfer beyond that. A slow `meshctl logs -f` holds the container's log
 * reader back; meshd's memory does not grow.
 *
 * The hosting side answers on the stream with one status byte first, as soon as the engine has
 * answered: then the output, or an error (the open payload and the answer's codec are
 * runtime/logs_wire.h). An error after the output started resets the
 * stream, and the asking node then cuts its HTTP reply short (no last chunk) so that the client
 * sees the output is incomplete. The HTTP reply starts as soon as the engine has answered, so a
 * client that hangs up on a quiet followed log is noticed. stdout and stderr are merged, in the
 * order they come. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "dlist.h"
#include "engine.h"
#include "node.h"
#include "logs_wire.h"
#include "reconcile.h"
#include "version.h"

#define LOGS_SESSIONS_MAX 64           /* log streams open through or from this node */
#define LOGS_ERROR_SLACK  8            /* more, only to answer "busy" to other nodes */
#define LOGS_HIGH         (256 * 1024) /* bytes waiting for a slow sink before pausing */
#define LOGS_OPEN_TIMEOUT 5000
#define LOGS_START_MS     500 /* a followed log counts as started after this without an answer */

struct logs_session {
    struct node *n;
    struct logs_session *prev, *next;  /* in n->logs */
    char what[NODE_READ_NAME_MAX + 1]; /* app/ms/replica, for messages */
    /* sink: an API client (req) or a requesting node (serve_stream) */
    struct evhttp_request *req;
    struct api_watch watch;
    bool http_started;
    bool http_flushing; /* a chunk is being written: hold the source */
    struct peers_stream *serve_stream;
    struct evbuffer *pending; /* serving: output the stream has not taken yet */
    bool status_sent;
    bool source_done; /* no more output will come; close the sink once flushed */
    /* source: the engine (ereq) or the hosting node (src_stream) */
    struct engine_req *ereq;
    struct event *start_timer; /* followed logs: Podman answers only with the first output */
    bool paused;
    struct peers_stream *src_stream;
    bool got_status;
    size_t unconsumed; /* stream bytes delivered, not yet written out */
    char errmsg[MESH_ERRMSG_LEN];
    size_t errlen;
    bool failed_status;
};

static struct logs_session *session_new(struct node *n, const char *what, size_t max)
{
    if (n->nlogs >= max)
        return NULL;
    struct logs_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->n = n;
    snprintf(s->what, sizeof s->what, "%s", what);
    DLIST_PUSH(n->logs, s);
    n->nlogs++;
    return s;
}

/* Frees s once nothing refers to it any more: no engine request, no stream, no client. */
static void session_maybe_free(struct logs_session *s)
{
    if (s->ereq || s->src_stream || s->serve_stream || s->req)
        return;
    DLIST_REMOVE(s->n->logs, s);
    s->n->nlogs--;
    if (s->pending)
        evbuffer_free(s->pending);
    if (s->start_timer)
        event_free(s->start_timer);
    free(s);
}

/* ---- the HTTP sink ----------------------------------------------------------------------- */

static void http_abort(struct logs_session *s);

static void http_error(struct logs_session *s, int code, const char *msg)
{
    if (!s->req)
        return;
    if (s->http_started) {
        http_abort(s); /* too late for a status */
        return;
    }
    api_unwatch(s->req);
    api_reply_error(s->req, code, "%s", msg);
    s->req = NULL;
}

/* An error after the output started: drop the connection without the last chunk, so that the
 * client sees an incomplete reply rather than a clean end. */
static void http_abort(struct logs_session *s)
{
    if (!s->req)
        return;
    struct evhttp_request *req = s->req;
    api_unwatch(req);
    s->req = NULL;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn)
        evhttp_connection_free(conn); /* frees req with it */
}

static void http_start(struct logs_session *s)
{
    if (s->http_started || !s->req)
        return;
    struct evkeyvalq *h = evhttp_request_get_output_headers(s->req);
    evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    evhttp_send_reply_start(s->req, 200, "OK");
    s->http_started = true;
}

static void source_resume(struct logs_session *s);

static void on_http_flushed(struct evhttp_connection *conn, void *arg)
{
    struct logs_session *s = arg;
    (void)conn;
    s->http_flushing = false;
    if (s->source_done) {
        if (s->req) {
            api_unwatch(s->req);
            evhttp_send_reply_end(s->req);
            s->req = NULL;
        }
        session_maybe_free(s);
        return;
    }
    source_resume(s);
}

/* Hands data to the client; the source holds back until it is written. */
static void http_write(struct logs_session *s, const void *data, size_t len)
{
    if (!s->req)
        return;
    http_start(s);
    struct evbuffer *b = evbuffer_new();
    if (!b || evbuffer_add(b, data, len) != 0) {
        if (b)
            evbuffer_free(b);
        return;
    }
    s->http_flushing = true;
    evhttp_send_reply_chunk_with_cb(s->req, b, on_http_flushed, s);
    evbuffer_free(b);
}

/* The source has nothing more: end the reply once the last chunk is out. */
static void http_finish(struct logs_session *s)
{
    s->source_done = true;
    if (s->http_flushing || !s->req)
        return;
    api_unwatch(s->req);
    if (!s->http_started) {
        http_start(s); /* an empty log */
    }
    evhttp_send_reply_end(s->req);
    s->req = NULL;
}

static void http_gone(void *ud)
{
    struct logs_session *s = ud;
    s->req = NULL;
    if (s->ereq)
        engine_cancel(s->ereq); /* its done callback frees the session */
    if (s->src_stream)
        peers_stream_reset(s->src_stream); /* so does on_end */
    session_maybe_free(s);
}

/* ---- the serving sink: a stream to the node that asked ----------------------------------- */

static void serve_flush(struct logs_session *s)
{
    while (s->serve_stream && evbuffer_get_length(s->pending) > 0) {
        size_t len = evbuffer_get_contiguous_space(s->pending);
        long took =
            peers_stream_send(s->serve_stream, evbuffer_pullup(s->pending, (ssize_t)len), len);
        if (took <= 0)
            break;
        evbuffer_drain(s->pending, (size_t)took);
    }
    if (s->serve_stream && s->source_done && evbuffer_get_length(s->pending) == 0)
        peers_stream_close(s->serve_stream);
}

static void serve_write(struct logs_session *s, uint8_t status, const void *data, size_t len)
{
    if (!s->serve_stream)
        return;
    if (!s->status_sent) {
        evbuffer_add(s->pending, &status, 1);
        s->status_sent = true;
    }
    evbuffer_add(s->pending, data, len);
    serve_flush(s);
}

static void serve_on_writable(void *ud, struct peers_stream *st)
{
    struct logs_session *s = ud;
    (void)st;
    serve_flush(s);
    if (evbuffer_get_length(s->pending) < LOGS_HIGH / 2)
        source_resume(s);
}

static void serve_on_data(void *ud, struct peers_stream *st, const uint8_t *data, size_t len)
{
    (void)ud;
    (void)data;
    peers_stream_consume(st, len); /* the asker sends nothing: ignore */
}

static void serve_on_end(void *ud, struct peers_stream *st, const struct mesh_err *err)
{
    struct logs_session *s = ud;
    (void)st;
    (void)err;
    s->serve_stream = NULL;
    if (s->ereq)
        engine_cancel(s->ereq);
    session_maybe_free(s);
}

/* ---- sinks, generically ------------------------------------------------------------------ */

static bool sink_full(struct logs_session *s)
{
    if (s->serve_stream)
        return evbuffer_get_length(s->pending) >= LOGS_HIGH;
    return s->http_flushing;
}

static void sink_data(struct logs_session *s, const void *data, size_t len)
{
    if (s->serve_stream)
        serve_write(s, RT_LOGS_STATUS_OK, data, len);
    else
        http_write(s, data, len);
}

static void sink_error(struct logs_session *s, int code, const char *msg)
{
    if (s->serve_stream) {
        s->source_done = true;
        if (s->status_sent) {
            peers_stream_reset(s->serve_stream); /* mid-stream: the asker cuts its reply */
            return;
        }
        char text[MESH_ERRMSG_LEN + 2 * NODE_READ_NAME_MAX + 8];
        size_t len = rt_logs_error_encode(code, msg, text, sizeof text);
        serve_write(s, RT_LOGS_STATUS_ERR, text, len);
        serve_flush(s);
    } else {
        http_error(s, code, msg);
    }
}

/* The engine answered: the output follows (maybe much later, for a quiet followed log). */
static void sink_start(struct logs_session *s)
{
    if (s->serve_stream) {
        if (!s->status_sent)
            serve_write(s, RT_LOGS_STATUS_OK, NULL, 0);
    } else {
        http_start(s);
    }
}

static void sink_end(struct logs_session *s)
{
    if (s->serve_stream) {
        if (!s->status_sent)
            serve_write(s, RT_LOGS_STATUS_OK, NULL, 0);
        s->source_done = true;
        serve_flush(s);
    } else {
        http_finish(s);
    }
}

/* ---- sources ----------------------------------------------------------------------------- */

static void source_resume(struct logs_session *s)
{
    if (s->ereq && s->paused && !sink_full(s)) {
        s->paused = false;
        engine_pause(s->ereq, false); /* may call on_engine_data at once */
    }
    if (s->src_stream && s->unconsumed > 0 && !sink_full(s)) {
        size_t n = s->unconsumed;
        s->unconsumed = 0;
        peers_stream_consume(s->src_stream, n);
    }
}

static int on_engine_data(int stream, const char *buf, size_t len, void *data)
{
    struct logs_session *s = data;
    (void)stream;
    sink_data(s, buf, len);
    if (sink_full(s) && !s->paused && s->ereq && engine_pause(s->ereq, true) == 0)
        s->paused = true;
    return s->req || s->serve_stream ? 0 : 1;
}

static void on_engine_start(void *data)
{
    sink_start(data);
}

/* A followed log the engine has not answered within LOGS_START_MS: Podman (4.3) sends its
 * headers only with the first output, which may never come. Errors (no such container) come at
 * once, so the log is taken as started, and the reply begins: the client's hang-up is noticed
 * from then on. */
static void on_start_timer(evutil_socket_t fd, short what, void *arg)
{
    struct logs_session *s = arg;
    (void)fd;
    (void)what;
    if (s->ereq)
        sink_start(s);
}

static void on_engine_done(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct logs_session *s = data;
    (void)req;
    s->ereq = NULL;
    if (reply->status < 0 && reply->status != MESH_ECLOSED) {
        char msg[MESH_ERRMSG_LEN + 2 * NODE_READ_NAME_MAX];
        if (reply->http_status == 404)
            snprintf(msg, sizeof msg, "%s has no container on node %s yet", s->what,
                     s->n->cfg.name);
        else
            snprintf(msg, sizeof msg, "node %s: %s", s->n->cfg.name, reply->err.msg);
        sink_error(s, reply->http_status == 404 ? 404 : reply->http_status ? 502 : 503, msg);
    } else {
        sink_end(s);
    }
    session_maybe_free(s);
}

/* Starts the engine's log stream of app/ms/replica, placed on this node. */
static int engine_source(struct logs_session *s, const char *app, const char *ms, uint32_t replica,
                         bool follow, int tail, const char **why)
{
    struct node *n = s->n;
    if (!n->engine || n->meta.engine != NODEMETA_ENGINE_UP) {
        *why = "engine unavailable";
        return MESH_EIO;
    }
    char name[256];
    struct rt_desired d = {.app = app, .ms = ms, .replica = replica};
    rt_container_name(n->cfg.name, &d, name, sizeof name);
    struct engine_logs_opts o = {.follow = follow, .tail = tail, .on_start = on_engine_start};
    int rc =
        engine_container_logs(n->engine, name, &o, on_engine_data, on_engine_done, s, &s->ereq);
    if (rc == 0 && follow) {
        struct timeval tv = mesh_ms_to_timeval(LOGS_START_MS);
        s->start_timer = evtimer_new(n->loop.base, on_start_timer, s);
        if (s->start_timer)
            evtimer_add(s->start_timer, &tv);
    }
    if (rc < 0)
        *why = rc == MESH_EFULL ? "too many log streams on this node" : mesh_strerror(rc);
    return rc;
}

/* The hosting node's answer, relayed to the HTTP client. */
static void src_on_data(void *ud, struct peers_stream *st, const uint8_t *data, size_t len)
{
    struct logs_session *s = ud;
    size_t off = 0;
    if (!s->got_status && len > 0) {
        s->got_status = true;
        s->failed_status = data[0] != RT_LOGS_STATUS_OK;
        off = 1;
        if (!s->failed_status)
            http_start(s); /* the engine answered over there */
    }
    if (s->failed_status) {
        size_t take = len - off;
        if (take > sizeof s->errmsg - 1 - s->errlen)
            take = sizeof s->errmsg - 1 - s->errlen;
        memcpy(s->errmsg + s->errlen, data + off, take);
        s->errlen += take;
        s->errmsg[s->errlen] = '\0';
        peers_stream_consume(st, len);
        return;
    }
    if (off)
        peers_stream_consume(st, off);
    if (len > off) {
        s->unconsumed += len - off;
        http_write(s, data + off, len - off);
    }
}

static void src_on_connected(void *ud, struct peers_stream *st)
{
    (void)ud;
    peers_stream_close(st); /* nothing to send: half-close */
}

static void src_on_end(void *ud, struct peers_stream *st, const struct mesh_err *err)
{
    struct logs_session *s = ud;
    (void)st;
    s->src_stream = NULL;
    if (s->failed_status) {
        int code;
        char msg[sizeof s->errmsg];
        rt_logs_error_decode((const uint8_t *)s->errmsg, s->errlen, &code, msg, sizeof msg);
        http_error(s, code, msg);
    } else if (err->code != 0 && !s->got_status) {
        char msg[MESH_ERRMSG_LEN + 2 * NODE_READ_NAME_MAX];
        snprintf(msg, sizeof msg, "cannot reach the node that runs %s: %s", s->what, err->msg);
        http_error(s, 502, msg);
    } else {
        http_finish(s); /* ends early if err: the client sees the output stop */
    }
    session_maybe_free(s);
}

/* ---- the API handler ------------------------------------------------------------------- */

int node_logs_args(struct evhttp_request *req, const char *ref,
                   char buf[static NODE_READ_NAME_MAX + 1], struct node_logs_args *a)
{
    char q[32];
    long replica;
    memset(a, 0, sizeof *a);
    a->tail = -1;
    if (node_split_ms_ref(ref, buf, NODE_READ_NAME_MAX + 1, &a->app, &a->ms, &replica) < 0) {
        api_reply_error(req, 404, "expected /v1/logs/APP/MICROSERVICE[/REPLICA]");
        return MESH_EINVAL;
    }
    a->replica = replica < 0 ? 0 : (uint32_t)replica;
    const char *f = api_query(req, "follow", q, sizeof q);
    a->follow = f && strcmp(f, "true") == 0;
    const char *t = api_query(req, "tail", q, sizeof q);
    if (t) {
        char *end;
        long v = strtol(t, &end, 10);
        if (!*t || *end || v < 0 || v > 1000000) {
            api_reply_error(req, 400, "tail: expected a number of lines, got '%s'", t);
            return MESH_EINVAL;
        }
        a->tail = (int)v;
    }
    return 0;
}

static void reply_logs(struct node *n, struct evhttp_request *req, const char *ref, bool consistent)
{
    (void)consistent;
    struct node_logs_args a;
    char buf[NODE_READ_NAME_MAX + 1];
    if (node_logs_args(req, ref, buf, &a) < 0)
        return;
    struct fsm_placement p;
    if (fsm_placement_get(cluster_fsm(n->cluster), a.app, a.ms, a.replica, &p) < 0) {
        api_reply_error(req, 404, "no replica %u of %s/%s", (unsigned)a.replica, a.app, a.ms);
        return;
    }
    if (!p.node[0]) {
        api_reply_error(req, 409, "%s/%s[%u] is not placed on any node: %s", a.app, a.ms,
                        (unsigned)a.replica, p.reason[0] ? p.reason : "pending");
        return;
    }
    char what[NODE_READ_NAME_MAX + 1];
    snprintf(what, sizeof what, "%s/%s/%u", a.app, a.ms, (unsigned)a.replica);
    struct logs_session *s = session_new(n, what, LOGS_SESSIONS_MAX);
    if (!s) {
        api_reply_error(req, 503, "too many log streams through this node (%d); try later",
                        LOGS_SESSIONS_MAX);
        return;
    }
    s->req = req;
    if (a.follow) {
        /* evhttp's idle timeout would cut a quiet followed log. */
        struct evhttp_connection *conn = evhttp_request_get_connection(req);
        if (conn)
            evhttp_connection_set_timeout(conn, 7 * 24 * 3600);
    }
    if (strcmp(p.node, n->cfg.name) == 0) {
        const char *why = NULL;
        if (engine_source(s, a.app, a.ms, a.replica, a.follow, a.tail, &why) < 0) {
            api_reply_error(req, 503, "%s: %s", what, why);
            s->req = NULL;
            session_maybe_free(s);
            return;
        }
    } else {
        const struct swim_member *m = swim_member_find(gossip_swim(n->gossip), p.node);
        if (!m || m->state != SWIM_ALIVE) {
            api_reply_error(req, 503, "%s runs on node %s, which is %s", what, p.node,
                            m ? node_member_status(m) : "not a member");
            s->req = NULL;
            session_maybe_free(s);
            return;
        }
        struct rt_logs_open open = {.replica = a.replica, .follow = a.follow, .tail = a.tail};
        snprintf(open.app, sizeof open.app, "%s", a.app);
        snprintf(open.ms, sizeof open.ms, "%s", a.ms);
        uint8_t payload[RT_LOGS_OPEN_MAX];
        int len = rt_logs_open_encode(&open, payload, sizeof payload);
        static const struct peers_stream_cb cb = {
            .on_connected = src_on_connected,
            .on_data = src_on_data,
            .on_end = src_on_end,
        };
        int rc = len < 0 ? len
                         : peers_stream_open(n->peers, &m->addr, STREAM_LOGS, payload, (size_t)len,
                                             LOGS_OPEN_TIMEOUT, &cb, s, &s->src_stream);
        if (rc < 0) {
            api_reply_error(req, 503, "cannot reach node %s for %s: %s", p.node, what,
                            mesh_strerror(rc));
            s->req = NULL;
            session_maybe_free(s);
            return;
        }
    }
    s->watch = (struct api_watch){.gone = http_gone, .ud = s};
    api_watch(req, &s->watch);
}

static void h_logs(struct evhttp_request *req, const char *rest, void *ud)
{
    if (strlen(rest) > NODE_READ_NAME_MAX) {
        api_reply_error(req, 404, "no such microservice");
        return;
    }
    node_raft_read(ud, req, rest, reply_logs);
}

/* A node asks for the output of a replica placed here. */
static uint32_t accept_logs(void *ud, struct peers_stream *st, const struct peers_stream_info *info)
{
    struct node *n = ud;
    struct rt_logs_open open;
    if (rt_logs_open_decode(info->payload, info->len, &open) < 0 ||
        open.replica >= FSM_REPLICAS_MAX)
        return LINK_RESET_REFUSED;
    const char *app = open.app, *ms = open.ms;
    uint32_t replica = open.replica;
    char what[NODE_READ_NAME_MAX + 1];
    snprintf(what, sizeof what, "%s/%s/%u", app, ms, (unsigned)replica);
    bool busy = n->nlogs >= LOGS_SESSIONS_MAX;
    struct logs_session *s = session_new(n, what, LOGS_SESSIONS_MAX + LOGS_ERROR_SLACK);
    if (!s || !(s->pending = evbuffer_new())) {
        if (s)
            session_maybe_free(s);
        return LINK_RESET_REFUSED;
    }
    static const struct peers_stream_cb cb = {
        .on_data = serve_on_data,
        .on_writable = serve_on_writable,
        .on_end = serve_on_end,
    };
    peers_stream_set_cb(st, &cb, s);
    s->serve_stream = st;
    /* Only replicas this node's replica of the state places here. */
    struct fsm_placement p;
    bool here = n->cluster &&
                fsm_placement_get(cluster_fsm(n->cluster), app, ms, replica, &p) == 0 &&
                strcmp(p.node, n->cfg.name) == 0;
    const char *why = NULL;
    char msg[MESH_ERRMSG_LEN];
    if (busy) {
        snprintf(msg, sizeof msg, "too many log streams on node %s (%d); try later", n->cfg.name,
                 LOGS_SESSIONS_MAX);
        sink_error(s, 503, msg);
    } else if (!here) {
        snprintf(msg, sizeof msg, "%s is not placed on node %s", what, n->cfg.name);
        sink_error(s, 404, msg);
    } else if (engine_source(s, app, ms, replica, open.follow, open.tail, &why) < 0) {
        snprintf(msg, sizeof msg, "node %s: %s", n->cfg.name, why);
        sink_error(s, 503, msg);
    }
    return 0;
}

int node_logs_start(struct node *n, struct mesh_err *err)
{
    static const struct api_route_def routes[] = {
        {"GET", FOGMESH_API_PREFIX "/logs/", h_logs},
    };
    int rc = api_route_table(n->api, routes, sizeof routes / sizeof routes[0], n, err);
    if (rc < 0)
        return rc;
    rc = peers_listen_streams(n->peers, STREAM_LOGS, accept_logs, n);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot register the log service");
    return 0;
}

void node_logs_close(struct node *n)
{
    /* After api_free and peers_free: clients and streams are gone without callbacks. Engine
     * requests still pending fail when the engine is freed, and their callbacks free what is
     * left. */
    for (struct logs_session *s = n->logs, *next; s; s = next) {
        next = s->next;
        s->req = NULL;
        s->serve_stream = s->src_stream = NULL;
        session_maybe_free(s);
    }
}
