#include "peers.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "backoff.h"
#include "linkio.h"
#include "timeutil.h"

struct conn;

/* The reply envelope's status byte: 0 for success, 1..127 an errno value, 128..255 a MESH_E*
 * code as STATUS_MESH_BASE + its offset from MESH_ERR_FIRST_ - 1. The two ranges must not
 * overlap: small errno values (ENOENT = 2) and MESH_E* offsets (MESH_EINVAL = 2) would. */
#define STATUS_MESH_BASE 128

/* Reset reason of a request the service refuses for its size (a value link.h leaves to
 * applications), so that the caller can report MESH_ETOOBIG rather than a bare reset. */
#define PEERS_RESET_TOOBIG 0x100u

static uint8_t status_encode(int rc)
{
    if (rc > MESH_ERR_FIRST_ && rc < MESH_ERR_LAST_)
        return (uint8_t)(STATUS_MESH_BASE + (rc - MESH_ERR_FIRST_ - 1));
    if (rc < 0 && -rc < STATUS_MESH_BASE)
        return (uint8_t)-rc;
    return (uint8_t)(STATUS_MESH_BASE + (MESH_EIO - MESH_ERR_FIRST_ - 1));
}

static int status_decode(uint8_t st)
{
    if (st < STATUS_MESH_BASE)
        return -(int)st;
    int rc = MESH_ERR_FIRST_ + 1 + (st - STATUS_MESH_BASE);
    return rc < MESH_ERR_LAST_ ? rc : MESH_EIO; /* a code newer than this build */
}

struct call {
    struct peers *p;
    struct conn *c;
    struct call *next; /* in c->calls */
    uint16_t type;
    bool opened;
    uint32_t chan;
    uint8_t *req;
    size_t req_len, req_off;
    bool fin_sent;
    uint8_t *reply;
    size_t reply_len, reply_cap, max_reply; /* max_reply counts the status byte */
    struct event *timer;
    struct event *start_ev; /* defers the start when the link is already up */
    peers_reply_fn cb;
    void *ud;
};

struct service {
    uint16_t type;
    size_t max_req;
    peers_serve_fn fn;
    void *ud;
};

/* One request being received, handled or answered. */
struct serving {
    struct peers_req req; /* first: peers_respond gets this pointer */
    struct peers *p;
    struct conn *c; /* NULL once the link is gone (the handler may still answer) */
    struct serving *next;
    uint32_t chan;
    const struct service *svc;
    uint8_t *in;
    size_t in_len, in_cap;
    struct event *timer; /* PEERS_SERVE_TIMEOUT_MS while receiving, and while answering */
    bool handling;       /* handed to the service, waiting for peers_respond */
    uint8_t *out;
    size_t out_len, out_off;
};

struct stream_listener {
    uint16_t type;
    peers_accept_fn fn;
    void *ud;
};

struct peers_stream {
    struct peers *p;
    struct conn *c;                           /* NULL once ended */
    struct peers_stream *next;                /* in c->streams */
    struct peers_stream *all_prev, *all_next; /* in p->streams, until freed */
    uint16_t type;
    bool outgoing;
    bool opened;       /* the channel exists */
    bool connected;    /* opener: accept mark received; acceptor: from the start */
    bool mark_pending; /* acceptor: accept mark not queued yet */
    bool fin_sent;     /* peers_stream_close called */
    bool fin_queued;   /* ... and passed to the link */
    bool fin_recv;
    bool want_writable; /* a send took less than asked */
    bool ended;         /* on_end is due */
    uint32_t chan;
    size_t open_len;
    uint8_t open_payload[LINK_OPEN_PAYLOAD_MAX];
    struct mesh_addr remote;
    struct peers_stream_cb cb;
    void *ud;
    struct event *timer; /* open timeout (opener) */
    struct event *ev;    /* deferred start, then deferred on_end */
    struct mesh_err err; /* why it ended */
};

struct conn {
    struct peers *p;
    struct conn *next;
    struct linkio *lio;
    struct mesh_addr adv; /* dialled, or advertised by the peer */
    bool adv_known;
    bool outgoing;
    bool up;
    bool closing;
    bool pending; /* inbound, handshake not done yet (counted in peers.npending) */
    uint8_t peer_static[LINK_KEY_LEN];
    struct call *calls;
    struct serving *serving;
    struct peers_stream *streams;
};

struct peers {
    struct event_base *base;
    int listen_fd;
    struct event *accept_ev;
    struct event *backoff_ev; /* ends an accept pause, then its calm period (backoff.h) */
    struct accept_backoff backoff;
    uint8_t static_priv[LINK_KEY_LEN];
    const struct keyring *kr;
    uint8_t payload[LINK_HS_PAYLOAD_MAX];
    size_t payload_len;
    size_t max_links;
    uint8_t link_ciphers;
    struct peers_hooks hooks;
    struct service services[PEERS_MAX_SERVICES];
    size_t nservices;
    struct stream_listener listeners[PEERS_MAX_SERVICES];
    size_t nlisteners;
    struct peers_stream *streams; /* every stream not yet freed */
    size_t nstreams;
    struct conn *conns;
    size_t nconns;
    size_t npending;
    size_t ncalls, nserving;
    size_t receiving; /* bytes of requests not complete yet, at most PEERS_MAX_RECEIVING */
    struct peers_stats st;
};

/* ---- calls ------------------------------------------------------------------------------- */

static void call_unlink(struct call *k)
{
    if (!k->c)
        return;
    for (struct call **pp = &k->c->calls; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    }
    k->c = NULL;
}

static void call_free(struct call *k)
{
    call_unlink(k);
    if (k->timer)
        event_free(k->timer);
    if (k->start_ev)
        event_free(k->start_ev);
    free(k->req);
    free(k->reply);
    k->p->ncalls--;
    free(k);
}

/* Ends a call: the callback fires once, then the call is gone. */
static void call_finish(struct call *k, int rc, const struct mesh_err *why)
{
    struct mesh_err err = {0};
    const uint8_t *body = NULL;
    size_t blen = 0;
    peers_reply_fn cb = k->cb;
    void *ud = k->ud;

    if (rc == 0) {
        /* Unwrap the envelope: status byte, then reply or message. */
        if (k->reply_len < 1) {
            rc = mesh_errf(&err, MESH_EMALFORMED, "empty reply");
        } else if (k->reply[0] != 0) {
            rc = status_decode(k->reply[0]);
            mesh_errf(&err, rc, "%.*s", (int)(k->reply_len - 1), (const char *)k->reply + 1);
        } else {
            body = k->reply + 1;
            blen = k->reply_len - 1;
        }
    } else if (why) {
        err = *why;
        err.code = rc;
    } else {
        mesh_errf(&err, rc, "%s", mesh_strerror(rc));
    }
    if (rc < 0)
        k->p->st.calls_failed++;
    /* Detach before the callback so that it may start new calls freely. */
    call_unlink(k);
    k->cb = NULL;
    cb(ud, rc, body, blen, rc == 0 ? NULL : &err);
    call_free(k);
}

static void call_pump(struct call *k)
{
    struct link *l = linkio_link(k->c->lio);
    while (k->req_off < k->req_len) {
        long n = link_channel_send(l, k->chan, k->req + k->req_off, k->req_len - k->req_off);
        if (n <= 0)
            return; /* on_channel_writable resumes */
        k->req_off += (size_t)n;
    }
    if (!k->fin_sent) {
        k->fin_sent = true;
        link_channel_close(l, k->chan);
    }
}

static void call_start(struct call *k)
{
    struct mesh_err err;
    int rc = link_channel_open(linkio_link(k->c->lio), k->type, NULL, 0, &k->chan);
    if (rc < 0) {
        mesh_errf(&err, rc, "cannot open a channel: %s", mesh_strerror(rc));
        call_finish(k, rc, &err);
        return;
    }
    k->opened = true;
    call_pump(k);
}

static void on_call_start(evutil_socket_t fd, short what, void *arg)
{
    struct call *k = arg;
    (void)fd;
    (void)what;
    if (!k->opened && k->c && k->c->up)
        call_start(k);
}

/* Calls start from the loop, never inside peers_call (whose callback must not fire before it
 * returns) nor inside a link callback. */
static int call_schedule_start(struct call *k)
{
    if (!k->start_ev)
        k->start_ev = evtimer_new(k->p->base, on_call_start, k);
    if (!k->start_ev)
        return MESH_ENOMEM;
    struct timeval zero = {0, 0};
    evtimer_add(k->start_ev, &zero);
    return 0;
}

static void on_call_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct call *k = arg;
    struct mesh_err err;
    char a[MESH_ADDR_STRLEN];
    (void)fd;
    (void)what;
    if (k->c && k->opened)
        link_channel_reset(linkio_link(k->c->lio), k->chan, LINK_RESET_CANCEL);
    mesh_errf(&err, -ETIMEDOUT, "no answer from %s in time",
              k->c ? mesh_addr_format(&k->c->adv, a, sizeof a) : "peer");
    call_finish(k, -ETIMEDOUT, &err);
}

static struct call *call_by_chan(struct conn *c, uint32_t chan)
{
    for (struct call *k = c->calls; k; k = k->next)
        if (k->opened && k->chan == chan)
            return k;
    return NULL;
}

/* ---- serving ----------------------------------------------------------------------------- */

static void serving_unlink(struct serving *s)
{
    if (!s->c)
        return;
    for (struct serving **pp = &s->c->serving; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->c = NULL;
}

/* The request is complete (or gone): its bytes no longer count against PEERS_MAX_RECEIVING. */
static void serving_received(struct serving *s)
{
    if (s->p && !s->handling && !s->out)
        s->p->receiving -= s->in_len;
}

static void serving_free(struct serving *s)
{
    serving_unlink(s);
    serving_received(s);
    if (s->timer)
        event_free(s->timer);
    free(s->in);
    free(s->out);
    if (s->p) /* NULL once peers_free left it to its handler */
        s->p->nserving--;
    free(s);
}

static void serving_arm(struct serving *s)
{
    struct timeval tv = mesh_ms_to_timeval(PEERS_SERVE_TIMEOUT_MS);
    evtimer_add(s->timer, &tv);
}

/* A peer that leaves a request half-sent, or does not read its reply, loses it: otherwise each
 * would pin up to the service's max_req (4 MiB for push-pull) for as long as the link lives. */
static void on_serving_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct serving *s = arg;
    (void)fd;
    (void)what;
    if (s->handling)
        return; /* the handler owns it; disarmed then, so this is not reached */
    if (s->p)
        s->p->st.serve_timeouts++;
    if (s->c)
        link_channel_reset(linkio_link(s->c->lio), s->chan, LINK_RESET_CANCEL);
    serving_free(s);
}

static struct serving *serving_by_chan(struct conn *c, uint32_t chan)
{
    for (struct serving *s = c->serving; s; s = s->next)
        if (s->chan == chan)
            return s;
    return NULL;
}

static void serving_pump(struct serving *s)
{
    struct link *l = linkio_link(s->c->lio);
    while (s->out_off < s->out_len) {
        long n = link_channel_send(l, s->chan, s->out + s->out_off, s->out_len - s->out_off);
        if (n <= 0) {
            if (!evtimer_pending(s->timer, NULL))
                serving_arm(s); /* the reply waits for the peer's window, not forever */
            return;
        }
        s->out_off += (size_t)n;
    }
    link_channel_close(l, s->chan);
    serving_free(s);
}

void peers_respond(struct peers_req *req, int rc, const uint8_t *reply, size_t len, const char *msg)
{
    struct serving *s = (struct serving *)req;
    if (!s->c) { /* the link went away while the handler worked */
        serving_free(s);
        return;
    }
    size_t body = rc == 0 ? len : (msg ? strlen(msg) : 0);
    s->out = malloc(1 + body);
    if (!s->out) {
        link_channel_reset(linkio_link(s->c->lio), s->chan, LINK_RESET_CANCEL);
        serving_free(s);
        return;
    }
    if (rc == 0) {
        s->out[0] = 0;
        if (len)
            memcpy(s->out + 1, reply, len);
    } else {
        s->out[0] = status_encode(rc);
        if (body)
            memcpy(s->out + 1, msg, body);
    }
    s->out_len = 1 + body;
    s->handling = false;
    serving_pump(s);
}

/* ---- streams ----------------------------------------------------------------------------- */

static const uint8_t accept_mark = 0;

static void stream_unlink_conn(struct peers_stream *s)
{
    if (!s->c)
        return;
    for (struct peers_stream **pp = &s->c->streams; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->c = NULL;
}

static void stream_free(struct peers_stream *s)
{
    struct peers *p = s->p;
    stream_unlink_conn(s);
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        p->streams = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    if (s->timer)
        event_free(s->timer);
    if (s->ev)
        event_free(s->ev);
    p->nstreams--;
    free(s);
}

static void stream_defer(struct peers_stream *s)
{
    struct timeval zero = {0, 0};
    evtimer_add(s->ev, &zero);
}

static struct link *stream_link(const struct peers_stream *s)
{
    return linkio_link(s->c->lio);
}

/* The stream is over: detach it and call on_end from the loop. code 0 is a clean end. */
static void stream_end(struct peers_stream *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void stream_end(struct peers_stream *s, int code, const char *fmt, ...)
{
    if (s->ended)
        return;
    s->ended = true;
    s->err.code = code;
    s->err.msg[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->err.msg, sizeof s->err.msg, fmt, ap);
        va_end(ap);
    }
    /* A clean end whose FIN never reached the link (the accept mark was still waiting):
     * reset, so that the channel does not stay half-open in the link. */
    if (code == 0 && s->c && s->opened && !s->fin_queued)
        link_channel_reset(stream_link(s), s->chan, LINK_RESET_CANCEL);
    if (code < 0)
        s->p->st.streams_failed++;
    stream_unlink_conn(s);
    if (s->timer)
        evtimer_del(s->timer);
    stream_defer(s);
}

/* Ends the stream and resets its channel (if it has one and the peer may still hear). */
static void stream_abort(struct peers_stream *s, uint32_t reason, int code, const char *msg)
{
    if (s->ended)
        return;
    if (s->c && s->opened)
        link_channel_reset(stream_link(s), s->chan, reason);
    stream_end(s, code, "%s", msg);
}

static void stream_queue_fin(struct peers_stream *s)
{
    if (s->fin_sent && !s->fin_queued && s->c && s->opened && !s->mark_pending) {
        link_channel_close(stream_link(s), s->chan);
        s->fin_queued = true;
    }
}

/* Acceptor: queues the accept mark if it is still due. True once it is out. */
static bool stream_push_mark(struct peers_stream *s)
{
    if (!s->mark_pending)
        return true;
    long n = link_channel_send(stream_link(s), s->chan, &accept_mark, 1);
    if (n != 1)
        return false; /* the link calls on_channel_writable when credit comes */
    s->mark_pending = false;
    stream_queue_fin(s);
    return true;
}

static void stream_start(struct peers_stream *s)
{
    int rc = link_channel_open(stream_link(s), s->type, s->open_payload, s->open_len, &s->chan);
    if (rc < 0) {
        stream_end(s, rc, "cannot open a channel: %s", mesh_strerror(rc));
        return;
    }
    s->opened = true;
    stream_queue_fin(s);
}

static void on_stream_ev(evutil_socket_t fd, short what, void *arg)
{
    struct peers_stream *s = arg;
    (void)fd;
    (void)what;
    if (s->ended) {
        s->cb.on_end(s->ud, s, &s->err);
        stream_free(s);
        return;
    }
    if (!s->opened && s->c && s->c->up)
        stream_start(s);
}

static void on_stream_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct peers_stream *s = arg;
    char a[MESH_ADDR_STRLEN];
    char msg[MESH_ERRMSG_LEN];
    (void)fd;
    (void)what;
    snprintf(msg, sizeof msg, "stream to %s not accepted in time",
             mesh_addr_format(&s->remote, a, sizeof a));
    stream_abort(s, LINK_RESET_CANCEL, -ETIMEDOUT, msg);
}

static struct peers_stream *stream_by_chan(struct conn *c, uint32_t chan)
{
    for (struct peers_stream *s = c->streams; s; s = s->next)
        if (s->opened && s->chan == chan)
            return s;
    return NULL;
}

static struct peers_stream *stream_alloc(struct peers *p, struct conn *c)
{
    struct peers_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = p;
    s->ev = evtimer_new(p->base, on_stream_ev, s);
    if (!s->ev) {
        free(s);
        return NULL;
    }
    s->c = c;
    s->next = c->streams;
    c->streams = s;
    s->all_next = p->streams;
    if (p->streams)
        p->streams->all_prev = s;
    p->streams = s;
    p->nstreams++;
    return s;
}

static void stream_data(struct peers_stream *s, const uint8_t *d, size_t n)
{
    if (s->outgoing && !s->connected) {
        if (d[0] != accept_mark) {
            stream_abort(s, LINK_RESET_CANCEL, MESH_EPROTO, "the peer sent no accept mark");
            return;
        }
        link_channel_consume(stream_link(s), s->chan, 1);
        s->connected = true;
        evtimer_del(s->timer);
        s->p->st.streams_opened++;
        if (s->cb.on_connected)
            s->cb.on_connected(s->ud, s);
        d++;
        n--;
        if (n == 0 || s->ended)
            return;
    }
    if (s->cb.on_data)
        s->cb.on_data(s->ud, s, d, n);
    else
        link_channel_consume(stream_link(s), s->chan, n);
}

static void stream_fin(struct peers_stream *s)
{
    s->fin_recv = true;
    if (s->outgoing && !s->connected) {
        stream_abort(s, LINK_RESET_CANCEL, MESH_EPROTO, "the peer closed before accepting");
        return;
    }
    if (s->cb.on_fin)
        s->cb.on_fin(s->ud, s);
    if (!s->ended && s->fin_sent)
        stream_end(s, 0, NULL);
}

static void stream_writable(struct peers_stream *s)
{
    if (!stream_push_mark(s))
        return;
    if (s->want_writable && !s->ended) {
        s->want_writable = false;
        if (s->cb.on_writable)
            s->cb.on_writable(s->ud, s);
    }
}

static uint32_t stream_accept(struct conn *c, const struct stream_listener *ls, uint32_t id,
                              const uint8_t *payload, size_t len)
{
    struct peers *p = c->p;
    if (p->nstreams >= PEERS_MAX_STREAMS) {
        p->st.refused++;
        return LINK_RESET_REFUSED;
    }
    struct peers_stream *s = stream_alloc(p, c);
    if (!s)
        return LINK_RESET_REFUSED;
    s->type = ls->type;
    s->opened = true;
    s->connected = true;
    s->mark_pending = true;
    s->chan = id;
    s->remote = c->adv;
    struct peers_stream_info info = {
        .type = ls->type, .from = c->adv, .payload = payload, .len = len};
    memcpy(info.peer_static, c->peer_static, LINK_KEY_LEN);
    uint32_t r = ls->fn(ls->ud, s, &info);
    if (r != 0 || !s->cb.on_end) {
        p->st.refused++;
        stream_free(s); /* also cancels an on_end that a reset inside fn made due */
        return r ? r : LINK_RESET_REFUSED;
    }
    p->st.streams_accepted++;
    if (!s->ended)
        stream_push_mark(s);
    return 0;
}

/* ---- link callbacks (ud = conn) ---------------------------------------------------------- */

/* An inbound connection's handshake ended (done or failed): it is no longer pending. */
static void conn_settled(struct conn *c)
{
    if (c->pending) {
        c->pending = false;
        c->p->npending--;
    }
}

static int cb_handshake(void *ud, const uint8_t peer[LINK_KEY_LEN], const uint8_t *payload,
                        size_t len)
{
    struct conn *c = ud;
    struct mesh_addr adv;
    int rc = c->p->hooks.on_handshake(c->p->hooks.ud, peer, payload, len, &adv);
    if (rc < 0)
        return rc;
    memcpy(c->peer_static, peer, LINK_KEY_LEN);
    conn_settled(c);
    if (!c->outgoing) {
        c->adv = adv;
        c->adv_known = true;
    }
    c->up = true;
    c->p->st.links_up++;
    if (c->p->hooks.on_link)
        c->p->hooks.on_link(c->p->hooks.ud, &c->adv, true, c->outgoing, NULL);
    /* Start the calls that waited for the handshake, from the loop: the link finishes its
     * own bookkeeping after this callback returns. */
    for (struct call *k = c->calls; k; k = k->next)
        if (!k->opened)
            call_schedule_start(k);
    for (struct peers_stream *st = c->streams; st; st = st->next)
        if (!st->opened)
            stream_defer(st);
    return 0;
}

static uint32_t cb_open(void *ud, uint32_t id, uint16_t type, const uint8_t *payload, size_t len)
{
    struct conn *c = ud;
    struct peers *p = c->p;
    for (size_t i = 0; i < p->nlisteners; i++)
        if (p->listeners[i].type == type && p->listeners[i].fn)
            return stream_accept(c, &p->listeners[i], id, payload, len);
    const struct service *svc = NULL;
    for (size_t i = 0; i < p->nservices; i++)
        if (p->services[i].type == type)
            svc = &p->services[i];
    if (!svc || p->nserving >= PEERS_MAX_SERVING) {
        p->st.refused++;
        return LINK_RESET_REFUSED;
    }
    struct serving *s = calloc(1, sizeof *s);
    if (!s)
        return LINK_RESET_REFUSED;
    s->p = p;
    s->c = c;
    s->chan = id;
    s->svc = svc;
    s->req.type = type;
    s->req.from = c->adv;
    memcpy(s->req.peer_static, c->peer_static, LINK_KEY_LEN);
    s->timer = evtimer_new(p->base, on_serving_timeout, s);
    if (!s->timer) {
        free(s);
        return LINK_RESET_REFUSED;
    }
    serving_arm(s);
    s->next = c->serving;
    c->serving = s;
    p->nserving++;
    return 0;
}

/* Appends n bytes, growing the buffer by doubling, to at most limit (>= *len + n). */
static int append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *d, size_t n, size_t limit)
{
    if (*len + n > *cap) {
        size_t ncap = *cap ? *cap : 1024;
        while (ncap < *len + n)
            ncap *= 2;
        if (ncap > limit)
            ncap = limit;
        uint8_t *b = realloc(*buf, ncap);
        if (!b)
            return MESH_ENOMEM;
        *buf = b;
        *cap = ncap;
    }
    memcpy(*buf + *len, d, n);
    *len += n;
    return 0;
}

static void cb_data(void *ud, uint32_t id, const uint8_t *d, size_t n)
{
    struct conn *c = ud;
    struct link *l = linkio_link(c->lio);
    struct peers_stream *st = stream_by_chan(c, id);
    if (st) {
        stream_data(st, d, n);
        return;
    }
    struct call *k = call_by_chan(c, id);
    if (k) {
        struct mesh_err err;
        if (k->reply_len + n > k->max_reply) {
            link_channel_reset(l, id, LINK_RESET_CANCEL);
            mesh_errf(&err, MESH_ETOOBIG, "reply larger than %zu bytes", k->max_reply - 1);
            call_finish(k, MESH_ETOOBIG, &err);
            return;
        }
        if (append(&k->reply, &k->reply_len, &k->reply_cap, d, n, k->max_reply) < 0) {
            link_channel_reset(l, id, LINK_RESET_CANCEL);
            mesh_errf(&err, MESH_ENOMEM, "out of memory");
            call_finish(k, MESH_ENOMEM, &err);
            return;
        }
        link_channel_consume(l, id, n);
        return;
    }
    struct serving *s = serving_by_chan(c, id);
    if (!s)
        return;
    if (s->in_len + n > s->svc->max_req) {
        c->p->st.refused++;
        link_channel_reset(l, id, PEERS_RESET_TOOBIG);
        serving_free(s);
        return;
    }
    if (s->handling || c->p->receiving + n > PEERS_MAX_RECEIVING) {
        c->p->st.refused++; /* data after FIN, or too many requests half-sent at once */
        link_channel_reset(l, id, LINK_RESET_CANCEL);
        serving_free(s);
        return;
    }
    if (append(&s->in, &s->in_len, &s->in_cap, d, n, s->svc->max_req) < 0) {
        link_channel_reset(l, id, LINK_RESET_CANCEL);
        serving_free(s);
        return;
    }
    c->p->receiving += n;
    link_channel_consume(l, id, n);
}

static void cb_writable(void *ud, uint32_t id)
{
    struct conn *c = ud;
    struct peers_stream *st = stream_by_chan(c, id);
    if (st) {
        stream_writable(st);
        return;
    }
    struct call *k = call_by_chan(c, id);
    if (k) {
        call_pump(k);
        return;
    }
    struct serving *s = serving_by_chan(c, id);
    if (s && !s->handling && s->out)
        serving_pump(s);
}

static void cb_closed(void *ud, uint32_t id)
{
    struct conn *c = ud;
    struct peers_stream *st = stream_by_chan(c, id);
    if (st) {
        stream_fin(st);
        return;
    }
    struct call *k = call_by_chan(c, id);
    if (k) {
        call_finish(k, 0, NULL); /* the whole reply is in */
        return;
    }
    struct serving *s = serving_by_chan(c, id);
    if (!s || s->handling)
        return;
    serving_received(s);
    evtimer_del(s->timer);
    s->handling = true;
    s->req.data = s->in;
    s->req.len = s->in_len;
    c->p->st.served++;
    s->svc->fn(s->svc->ud, &s->req);
}

static void cb_reset(void *ud, uint32_t id, uint32_t reason)
{
    struct conn *c = ud;
    struct peers_stream *st = stream_by_chan(c, id);
    if (st) {
        /* The link releases the channel after this callback: nothing to reset. */
        if (reason == LINK_RESET_REFUSED)
            stream_end(st, MESH_EUNSUPPORTED, "the peer does not accept this stream");
        else
            stream_end(st, MESH_ECLOSED, "the peer reset the stream (reason %u)", reason);
        return;
    }
    struct call *k = call_by_chan(c, id);
    if (k) {
        struct mesh_err err;
        if (reason == LINK_RESET_REFUSED)
            mesh_errf(&err, MESH_EUNSUPPORTED, "the peer does not serve this request");
        else if (reason == PEERS_RESET_TOOBIG)
            mesh_errf(&err, MESH_ETOOBIG, "request larger than the peer accepts");
        else
            mesh_errf(&err, MESH_ECLOSED, "the peer reset the request");
        call_finish(k, err.code, &err);
        return;
    }
    struct serving *s = serving_by_chan(c, id);
    if (s) {
        if (s->handling)
            serving_unlink(s); /* the handler still owns it until peers_respond */
        else
            serving_free(s);
    }
}

static void conn_unlink(struct conn *c)
{
    struct peers *p = c->p;
    for (struct conn **pp = &p->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            p->nconns--;
            break;
        }
    }
}

static void conn_free(struct conn *c)
{
    conn_settled(c);
    conn_unlink(c);
    if (c->lio)
        linkio_free(c->lio);
    free(c);
}

static void cb_link_closed(void *ud, const struct mesh_err *why)
{
    struct conn *c = ud;
    struct peers *p = c->p;
    struct mesh_err err = *why;
    conn_settled(c);
    if (!c->up) {
        p->st.links_failed++;
        if (why->code == MESH_EAUTH || why->code == MESH_EPROTO)
            p->st.handshake_failures++;
    }
    if (err.code == 0)
        mesh_errf(&err, MESH_ECLOSED, "link closed");
    /* Out of the table before any callback: a caller that retries from its callback must get
     * a new link, not this dead one, and the dead one must not count against max_links. */
    conn_unlink(c);
    c->closing = true;
    while (c->calls)
        call_finish(c->calls, err.code, &err);
    while (c->streams)
        stream_end(c->streams, err.code, "%s", err.msg);
    while (c->serving) {
        struct serving *s = c->serving;
        if (s->handling)
            serving_unlink(s);
        else
            serving_free(s);
    }
    /* Incoming links that never came up are reported too (with the remote socket address):
     * a peer with the wrong key must be visible on the accepting side as well. */
    if (p->hooks.on_link)
        p->hooks.on_link(p->hooks.ud, &c->adv, false, c->outgoing, why);
    conn_free(c);
}

/* ---- links ------------------------------------------------------------------------------- */

static void link_cfg(struct peers *p, struct conn *c, struct linkio_config *lc)
{
    memset(lc, 0, sizeof *lc);
    link_config_init(&lc->link);
    memcpy(lc->link.static_priv, p->static_priv, LINK_KEY_LEN);
    /* The ring's primary key first: the initiator uses psks[0]. */
    size_t n = 0;
    for (size_t k = 0; k < p->kr->n && n < LINK_MAX_PSKS; k++) {
        size_t i = (p->kr->primary + k) % p->kr->n;
        memcpy(lc->link.psks[n++], p->kr->e[i].link_psk, LINK_KEY_LEN);
    }
    lc->link.n_psks = n;
    lc->link.payload = p->payload;
    lc->link.payload_len = p->payload_len;
    lc->link.ciphers = p->link_ciphers;
    lc->cb.on_handshake = cb_handshake;
    lc->cb.on_channel_open = cb_open;
    lc->cb.on_channel_data = cb_data;
    lc->cb.on_channel_writable = cb_writable;
    lc->cb.on_channel_closed = cb_closed;
    lc->cb.on_channel_reset = cb_reset;
    lc->on_close = cb_link_closed;
    lc->ud = c;
}

/* Makes room for one more link by closing the oldest idle one. */
static bool room_for_link(struct peers *p)
{
    if (p->nconns < p->max_links)
        return true;
    struct conn *idle = NULL;
    for (struct conn *c = p->conns; c; c = c->next)
        if (!c->calls && !c->serving && !c->streams && !c->closing)
            idle = c; /* conns are prepended: the last idle one is the oldest */
    if (idle) {
        idle->closing = true;
        linkio_close(idle->lio);
    }
    return false;
}

/* Drops the oldest inbound connection still in its handshake, at once and silently: nothing
 * waits on it (calls and streams attach only to links dialled or up), and its peer has proved
 * nothing yet. */
static void drop_oldest_pending(struct peers *p)
{
    struct conn *oldest = NULL;
    for (struct conn *c = p->conns; c; c = c->next)
        if (c->pending && !c->closing)
            oldest = c; /* conns are prepended: the last one is the oldest */
    if (oldest) {
        conn_free(oldest);
        p->st.handshakes_dropped++;
    }
}

static void arm_ms(struct event *ev, uint32_t ms)
{
    struct timeval tv = mesh_ms_to_timeval(ms);
    evtimer_add(ev, &tv);
}

static void on_backoff_timer(evutil_socket_t fd, short what, void *arg)
{
    struct peers *p = arg;
    (void)fd;
    (void)what;
    bool was_paused = p->backoff.paused;
    uint32_t next = accept_backoff_timer(&p->backoff);
    if (was_paused)
        event_add(p->accept_ev, NULL);
    if (next)
        arm_ms(p->backoff_ev, next);
}

/* Out of descriptors or memory: the listening socket stays readable, and accepting again at
 * once would spin at 100 % CPU, so the mesh port pauses (common/backoff.h). */
static void accept_pause(struct peers *p, int e)
{
    uint32_t wait = accept_backoff_pause(&p->backoff);
    event_del(p->accept_ev);
    arm_ms(p->backoff_ev, wait);
    p->st.accept_backoffs++;
    if (p->hooks.on_accept_paused)
        p->hooks.on_accept_paused(p->hooks.ud, -e, wait);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct peers *p = arg;
    (void)what;
    for (int i = 0; i < 16; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int s = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (s < 0) {
            if (accept_backoff_wanted(errno))
                accept_pause(p, errno);
            return;
        }
        if (p->npending >= PEERS_MAX_PENDING)
            drop_oldest_pending(p);
        if (!room_for_link(p)) {
            close(s);
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(s);
            continue;
        }
        c->p = p;
        mesh_addr_from_sockaddr((struct sockaddr *)&ss, &c->adv);
        struct linkio_config lc;
        struct mesh_err err;
        link_cfg(p, c, &lc);
        if (linkio_adopt(p->base, s, &lc, &c->lio, &err) < 0) {
            close(s);
            free(c);
            continue;
        }
        c->next = p->conns;
        p->conns = c;
        p->nconns++;
        c->pending = true;
        p->npending++;
        p->st.links_accepted++;
    }
}

static struct conn *conn_for(struct peers *p, const struct mesh_addr *to, struct mesh_err *err)
{
    for (struct conn *c = p->conns; c; c = c->next)
        if (!c->closing && (c->outgoing || c->adv_known) && mesh_addr_equal(&c->adv, to))
            return c;
    if (!room_for_link(p)) {
        mesh_errf(err, MESH_EFULL, "too many links (%zu)", p->max_links);
        return NULL;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        mesh_errf(err, MESH_ENOMEM, "out of memory");
        return NULL;
    }
    c->p = p;
    c->adv = *to;
    c->adv_known = true;
    c->outgoing = true;
    struct linkio_config lc;
    link_cfg(p, c, &lc);
    if (linkio_connect(p->base, to, &lc, &c->lio, err) < 0) {
        free(c);
        return NULL;
    }
    c->next = p->conns;
    p->conns = c;
    p->nconns++;
    p->st.links_dialled++;
    return c;
}

/* ---- public ------------------------------------------------------------------------------ */

int peers_new(struct event_base *base, int listen_fd, const struct peers_config *cfg,
              const struct peers_hooks *hooks, struct peers **ret, struct mesh_err *err)
{
    if (!hooks->on_handshake || cfg->payload_len > LINK_HS_PAYLOAD_MAX || !cfg->kr ||
        cfg->kr->n == 0 || (cfg->link_ciphers & ~(LINK_CIPHER_CHACHAPOLY | LINK_CIPHER_AESGCM)) ||
        (cfg->link_ciphers != LINK_CIPHER_AUTO && !(cfg->link_ciphers & LINK_CIPHER_CHACHAPOLY)))
        return mesh_errf(err, MESH_EINVAL, "peers: bad configuration");
    struct peers *p = calloc(1, sizeof *p);
    if (!p)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    p->base = base;
    p->listen_fd = listen_fd;
    memcpy(p->static_priv, cfg->static_priv, LINK_KEY_LEN);
    p->kr = cfg->kr;
    if (cfg->payload_len)
        memcpy(p->payload, cfg->payload, cfg->payload_len);
    p->payload_len = cfg->payload_len;
    p->max_links = cfg->max_links ? cfg->max_links : PEERS_DEFAULT_MAX_LINKS;
    p->link_ciphers = cfg->link_ciphers;
    p->hooks = *hooks;
    p->accept_ev = event_new(base, listen_fd, EV_READ | EV_PERSIST, on_accept, p);
    p->backoff_ev = evtimer_new(base, on_backoff_timer, p);
    if (!p->accept_ev || !p->backoff_ev || event_add(p->accept_ev, NULL) != 0) {
        if (p->accept_ev)
            event_free(p->accept_ev);
        if (p->backoff_ev)
            event_free(p->backoff_ev);
        free(p);
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    }
    *ret = p;
    return 0;
}

void peers_free(struct peers *p)
{
    if (!p)
        return;
    while (p->streams)
        stream_free(p->streams);
    while (p->conns) {
        struct conn *c = p->conns;
        while (c->calls) {
            c->calls->cb = NULL;
            call_free(c->calls);
        }
        while (c->serving) {
            struct serving *s = c->serving;
            if (s->handling) {
                serving_unlink(s); /* its handler answers into the void later */
                s->p = NULL;
                event_free(s->timer); /* not after the event base */
                s->timer = NULL;
            } else
                serving_free(s);
        }
        conn_free(c);
    }
    if (p->accept_ev)
        event_free(p->accept_ev);
    if (p->backoff_ev)
        event_free(p->backoff_ev);
    if (p->listen_fd >= 0)
        close(p->listen_fd);
    sodium_memzero(p->static_priv, sizeof p->static_priv);
    free(p);
}

int peers_serve(struct peers *p, uint16_t type, size_t max_req, peers_serve_fn fn, void *ud)
{
    for (size_t i = 0; i < p->nlisteners; i++)
        if (p->listeners[i].type == type && p->listeners[i].fn)
            return MESH_EEXISTS;
    if (p->nservices == PEERS_MAX_SERVICES)
        return MESH_EFULL;
    p->services[p->nservices++] = (struct service){type, max_req, fn, ud};
    return 0;
}

int peers_call(struct peers *p, const struct mesh_addr *to, uint16_t type, const uint8_t *req,
               size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb, void *ud)
{
    struct mesh_err err;
    if (p->ncalls >= PEERS_MAX_CALLS)
        return MESH_EFULL;
    struct call *k = calloc(1, sizeof *k);
    if (!k)
        return MESH_ENOMEM;
    p->ncalls++;
    k->p = p;
    k->type = type;
    k->max_reply = max_reply < SIZE_MAX ? max_reply + 1 : SIZE_MAX; /* + the status byte */
    k->cb = cb;
    k->ud = ud;
    k->req = malloc(len ? len : 1);
    k->timer = evtimer_new(p->base, on_call_timeout, k);
    if (!k->req || !k->timer) {
        call_free(k);
        return MESH_ENOMEM;
    }
    if (len)
        memcpy(k->req, req, len);
    k->req_len = len;
    struct conn *c = conn_for(p, to, &err);
    if (!c) {
        call_free(k);
        return err.code;
    }
    k->c = c;
    k->next = c->calls;
    c->calls = k;
    struct timeval tv = mesh_ms_to_timeval(timeout_ms);
    evtimer_add(k->timer, &tv);
    p->st.calls++;
    if (c->up && call_schedule_start(k) < 0) {
        call_free(k);
        return MESH_ENOMEM;
    }
    return 0;
}

int peers_listen_streams(struct peers *p, uint16_t type, peers_accept_fn fn, void *ud)
{
    for (size_t i = 0; i < p->nservices; i++)
        if (p->services[i].type == type)
            return MESH_EEXISTS;
    for (size_t i = 0; i < p->nlisteners; i++) {
        if (p->listeners[i].type == type) {
            p->listeners[i].fn = fn;
            p->listeners[i].ud = ud;
            return 0;
        }
    }
    if (!fn)
        return 0;
    if (p->nlisteners == PEERS_MAX_SERVICES)
        return MESH_EFULL;
    p->listeners[p->nlisteners++] = (struct stream_listener){type, fn, ud};
    return 0;
}

int peers_stream_open(struct peers *p, const struct mesh_addr *to, uint16_t type,
                      const uint8_t *payload, size_t len, uint64_t timeout_ms,
                      const struct peers_stream_cb *cb, void *ud, struct peers_stream **ret_stream)
{
    struct mesh_err err;
    if (!cb || !cb->on_end || len > LINK_OPEN_PAYLOAD_MAX || (len && !payload) || !ret_stream)
        return MESH_EINVAL;
    if (p->nstreams >= PEERS_MAX_STREAMS)
        return MESH_EFULL;
    struct conn *c = conn_for(p, to, &err);
    if (!c)
        return err.code;
    struct peers_stream *s = stream_alloc(p, c);
    if (s)
        s->timer = evtimer_new(p->base, on_stream_timeout, s);
    if (!s || !s->timer) {
        if (s)
            stream_free(s);
        return MESH_ENOMEM;
    }
    s->type = type;
    s->outgoing = true;
    s->remote = *to;
    s->cb = *cb;
    s->ud = ud;
    if (len)
        memcpy(s->open_payload, payload, len);
    s->open_len = len;
    if (!timeout_ms)
        timeout_ms = PEERS_STREAM_DEFAULT_TIMEOUT_MS;
    struct timeval tv = mesh_ms_to_timeval(timeout_ms);
    evtimer_add(s->timer, &tv);
    if (c->up)
        stream_defer(s);
    *ret_stream = s;
    return 0;
}

void peers_stream_set_cb(struct peers_stream *s, const struct peers_stream_cb *cb, void *ud)
{
    s->cb = *cb;
    s->ud = ud;
}

long peers_stream_reserve(struct peers_stream *s, size_t len, uint8_t **ptr)
{
    if (s->ended || !s->c || !s->opened || !s->connected || s->fin_sent)
        return MESH_ESTATE;
    if (!stream_push_mark(s)) {
        s->want_writable = true;
        return 0;
    }
    long n = link_channel_reserve(stream_link(s), s->chan, len, ptr);
    if (n == MESH_EAGAIN)
        n = 0;
    if (n < 0)
        return n;
    if ((size_t)n < len)
        s->want_writable = true;
    return n;
}

int peers_stream_commit(struct peers_stream *s, size_t n)
{
    if (s->ended || !s->c || !s->opened || !s->connected || s->fin_sent)
        return MESH_ESTATE;
    return link_channel_commit(stream_link(s), s->chan, n);
}

long peers_stream_send(struct peers_stream *s, const uint8_t *data, size_t len)
{
    uint8_t *p;
    long n = peers_stream_reserve(s, len, &p);
    if (n <= 0)
        return n;
    memcpy(p, data, (size_t)n);
    int r = peers_stream_commit(s, (size_t)n);
    return r < 0 ? r : n;
}

int peers_stream_consume(struct peers_stream *s, size_t n)
{
    if (s->ended || !s->c || !s->opened || n == 0)
        return 0;
    return link_channel_consume(stream_link(s), s->chan, n);
}

int peers_stream_close(struct peers_stream *s)
{
    if (s->ended)
        return MESH_ESTATE;
    if (s->fin_sent)
        return 0;
    s->fin_sent = true;
    stream_queue_fin(s);
    if (s->fin_recv)
        stream_end(s, 0, NULL);
    return 0;
}

void peers_stream_reset(struct peers_stream *s)
{
    stream_abort(s, LINK_RESET_CANCEL, -ECANCELED, "stream reset");
}

const struct mesh_addr *peers_stream_remote(const struct peers_stream *s)
{
    return &s->remote;
}

size_t peers_stream_count(const struct peers *p)
{
    return p->nstreams;
}

void peers_close_links_to(struct peers *p, const struct mesh_addr *to)
{
    for (struct conn *c = p->conns; c; c = c->next) {
        if (!c->closing && (c->outgoing || c->adv_known) && mesh_addr_equal(&c->adv, to)) {
            c->closing = true;
            linkio_close(c->lio);
        }
    }
}

void peers_close_all(struct peers *p)
{
    for (struct conn *c = p->conns; c; c = c->next) {
        if (!c->closing) {
            c->closing = true;
            linkio_close(c->lio);
        }
    }
}

size_t peers_link_count(const struct peers *p)
{
    return p->nconns;
}

const char *peers_link_cipher(const struct peers *p, const struct mesh_addr *to)
{
    for (const struct conn *c = p->conns; c; c = c->next)
        if (c->up && !c->closing && mesh_addr_equal(&c->adv, to))
            return link_cipher_name(linkio_link(c->lio));
    return NULL;
}

int peers_link_static(const struct peers *p, const struct mesh_addr *to,
                      uint8_t ret_static[static LINK_KEY_LEN])
{
    /* Dialled links first: their address is the one we chose to call, not a claim. */
    for (int pass = 0; pass < 2; pass++)
        for (const struct conn *c = p->conns; c; c = c->next)
            if (c->up && !c->closing && c->outgoing == (pass == 0) &&
                mesh_addr_equal(&c->adv, to)) {
                memcpy(ret_static, c->peer_static, LINK_KEY_LEN);
                return 0;
            }
    return MESH_ENOTFOUND;
}

const struct peers_stats *peers_stats(const struct peers *p)
{
    return &p->st;
}
