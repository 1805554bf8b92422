#include "tunnel.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evwant.h"
#include "timeutil.h"
#include "wire.h"

/* ---- the open payload -------------------------------------------------------------------- */

static bool service_valid(const char *s, size_t len)
{
    return len <= TUNNEL_SERVICE_MAX && mesh_node_name_valid(s, len);
}

int tunnel_open_encode(const struct tunnel_open *o, uint8_t *buf, size_t cap)
{
    size_t ls = strnlen(o->service, sizeof o->service), ld = strnlen(o->dest, sizeof o->dest),
           lo = strnlen(o->origin, sizeof o->origin);
    if (!service_valid(o->service, ls) || !mesh_node_name_valid(o->dest, ld) ||
        !mesh_node_name_valid(o->origin, lo))
        return MESH_EINVAL;
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 6);
    msgpack_pack_uint8(&w.pk, TUNNEL_OPEN_VERSION);
    wire_pack_str(&w.pk, o->service, ls);
    wire_pack_str(&w.pk, o->dest, ld);
    wire_pack_str(&w.pk, o->origin, lo);
    msgpack_pack_uint8(&w.pk, o->hops_left);
    msgpack_pack_uint64(&w.pk, o->id);
    return w.overflow ? MESH_ETOOBIG : (int)w.len;
}

int tunnel_open_decode(const uint8_t *buf, size_t len, struct tunnel_open *ret)
{
    struct tunnel_open o;
    struct wire_rd r;
    uint32_t n;
    uint64_t ver, hops, id;
    memset(&o, 0, sizeof o);
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &n) || n < 6 || wire_rd_uint(&r, &ver))
        return MESH_EMALFORMED;
    if (ver != TUNNEL_OPEN_VERSION)
        return MESH_EUNSUPPORTED;
    if (wire_rd_str_copy(&r, o.service, sizeof o.service, service_valid) ||
        wire_rd_str_copy(&r, o.dest, sizeof o.dest, mesh_node_name_valid) ||
        wire_rd_str_copy(&r, o.origin, sizeof o.origin, mesh_node_name_valid) ||
        wire_rd_uint(&r, &hops) || hops > UINT8_MAX || wire_rd_uint(&r, &id))
        return MESH_EMALFORMED;
    for (uint32_t i = 6; i < n; i++)
        if (wire_rd_skip(&r, 8))
            return MESH_EMALFORMED;
    if (wire_rd_left(&r) != 0)
        return MESH_EMALFORMED;
    o.hops_left = (uint8_t)hops;
    o.id = id;
    *ret = o;
    return 0;
}

int tunnel_open_next(const struct tunnel_open *in, struct tunnel_open *ret)
{
    if (in->hops_left == 0)
        return MESH_ETOOBIG;
    *ret = *in;
    ret->hops_left--;
    return 0;
}

/* ---- tunnels ----------------------------------------------------------------------------- */

enum end_kind { END_FD, END_STREAM };

/* One side of a tunnel: a socket or a stream. */
struct end {
    struct tunnel *t;
    int idx;
    enum end_kind kind;
    /* END_FD */
    int fd; /* -1 once closed */
    struct event *rev, *wev;
    bool rarmed, warmed;
    bool connecting;
    /* END_STREAM */
    struct peers_stream *s; /* NULL once its on_end came */
    bool connected;         /* peers_stream_send works */
};

/* The bytes on their way from e[i] to e[1 - i]. For a stream source, what the pipe holds is
 * exactly what that stream delivered and we have not consumed yet, so its credit window bounds
 * it; a socket source is read only into an empty pipe, at most read_max bytes. */
struct pipe {
    uint8_t *buf; /* alloc bytes, grown on demand up to cap */
    size_t off, len, cap, alloc;
    bool eof;  /* the source sends no more */
    bool shut; /* the sink was told (shutdown or FIN) */
    uint64_t bytes;
    size_t held_max;
};

struct tunnel {
    struct tunnels *ts;
    struct tunnel *prev, *next;
    uint64_t id;
    struct end e[2]; /* e[0] towards the client, e[1] towards the service */
    struct pipe p[2];
    struct event *timer; /* connect timeout, then the deferred end */
    bool failed, finishing;
    int code;
    char msg[MESH_ERRMSG_LEN];
};

struct tunnels {
    struct event_base *base;
    struct peers *p;
    size_t max, read_max, n;
    struct tunnels_hooks hooks;
    struct tunnel *list;
    struct tunnels_stats st;
};

static void update(struct tunnel *t);
static void check_done(struct tunnel *t);
static void pump(struct tunnel *t, int i);

static const char *errstr(int code)
{
    return mesh_strerror(code);
}

int tunnels_new(struct event_base *base, struct peers *p, const struct tunnels_config *cfg,
                const struct tunnels_hooks *hooks, struct tunnels **ret)
{
    if (!base || !p || !ret)
        return MESH_EINVAL;
    struct tunnels *ts = calloc(1, sizeof *ts);
    if (!ts)
        return MESH_ENOMEM;
    ts->base = base;
    ts->p = p;
    ts->max = cfg && cfg->max_tunnels ? cfg->max_tunnels : TUNNEL_DEFAULT_MAX;
    ts->read_max = cfg && cfg->read_max ? cfg->read_max : TUNNEL_DEFAULT_READ;
    if (ts->read_max > TUNNEL_BUF_MAX)
        ts->read_max = TUNNEL_BUF_MAX;
    if (hooks)
        ts->hooks = *hooks;
    *ret = ts;
    return 0;
}

size_t tunnels_count(const struct tunnels *ts)
{
    return ts->n;
}

const struct tunnels_stats *tunnels_stats(const struct tunnels *ts)
{
    return &ts->st;
}

size_t tunnel_held(const struct tunnel *t, int dir)
{
    return t->p[dir ? 1 : 0].len;
}

uint64_t tunnel_id(const struct tunnel *t)
{
    return t->id;
}

/* ---- ends -------------------------------------------------------------------------------- */

static void fd_close(struct end *e, bool rst)
{
    if (e->kind != END_FD || e->fd < 0)
        return;
    if (e->rev)
        event_free(e->rev);
    if (e->wev)
        event_free(e->wev);
    e->rev = e->wev = NULL;
    e->rarmed = e->warmed = false;
    if (rst) {
        /* RFC 793's abort: close with SO_LINGER 0 sends RST, not FIN. */
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(e->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(e->fd);
    e->fd = -1;
}

static void orphan_end(void *ud, struct peers_stream *s, const struct mesh_err *err)
{
    (void)ud;
    (void)s;
    (void)err;
}

static const struct peers_stream_cb orphan_cb = {.on_end = orphan_end};

static void tunnel_free(struct tunnel *t)
{
    struct tunnels *ts = t->ts;
    for (int i = 0; i < 2; i++) {
        struct end *e = &t->e[i];
        if (e->kind == END_STREAM && e->s) {
            /* Hand the stream to a callback that needs nothing, then abort it. */
            peers_stream_set_cb(e->s, &orphan_cb, NULL);
            peers_stream_reset(e->s);
            e->s = NULL;
        }
        fd_close(e, true);
        free(t->p[i].buf);
    }
    if (t->timer)
        event_free(t->timer);
    if (t->prev)
        t->prev->next = t->next;
    else if (ts->list == t)
        ts->list = t->next;
    if (t->next)
        t->next->prev = t->prev;
    ts->n--;
    free(t);
}

void tunnels_free(struct tunnels *ts)
{
    if (!ts)
        return;
    while (ts->list)
        tunnel_free(ts->list);
    free(ts);
}

/* The first error wins; every end is aborted: streams reset (their on_end still comes),
 * sockets closed with RST. */
static void fail(struct tunnel *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct tunnel *t, int code, const char *fmt, ...)
{
    if (t->failed)
        return;
    t->failed = true;
    t->code = code ? code : MESH_EIO;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
    for (int i = 0; i < 2; i++) {
        struct end *e = &t->e[i];
        if (e->kind == END_STREAM && e->s)
            peers_stream_reset(e->s);
        fd_close(e, true);
    }
    check_done(t);
}

static const char *side(const struct end *e)
{
    return e->idx == 0 ? "client side" : "service side";
}

static bool sink_ready(const struct end *e)
{
    if (e->kind == END_FD)
        return e->fd >= 0 && !e->connecting;
    return e->s && e->connected;
}

/* Writes to a sink: bytes taken (0: later, a writable event follows) or a negative code. */
static long sink_write(struct end *e, const uint8_t *d, size_t n)
{
    if (e->kind == END_STREAM)
        return peers_stream_send(e->s, d, n);
    ssize_t w = send(e->fd, d, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0)
        return (long)w;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    return -errno;
}

/* n bytes from a stream source reached the other side: return their credit. */
static void give_credit(struct end *src, size_t n)
{
    if (src->kind == END_STREAM && src->s && n)
        (void)peers_stream_consume(src->s, n);
}

/* Room for need bytes (<= cap) in the pipe's buffer, which starts at PIPE_MIN and doubles: a
 * blocked sink costs what it holds, not a whole window. */
#define PIPE_MIN (64 * 1024)
static bool pipe_alloc(struct pipe *p, size_t need)
{
    if (p->buf && p->alloc >= need)
        return true;
    size_t n = p->alloc ? p->alloc : PIPE_MIN;
    while (n < need)
        n *= 2;
    if (n > p->cap)
        n = p->cap;
    uint8_t *b = realloc(p->buf, n);
    if (!b)
        return false;
    p->buf = b;
    p->alloc = n;
    return true;
}

static void note_held(struct tunnel *t, struct pipe *p)
{
    if (p->len > p->held_max)
        p->held_max = p->len;
    if (p->len > t->ts->st.held_max)
        t->ts->st.held_max = p->len;
}

/* Socket interest follows the pipes: read into an empty pipe whose sink can take bytes, write
 * while bytes wait for the socket (or the connection is being made). */
static void update(struct tunnel *t)
{
    for (int i = 0; i < 2; i++) {
        struct end *e = &t->e[i];
        if (e->kind != END_FD || e->fd < 0)
            continue;
        struct pipe *in = &t->p[i], *out = &t->p[1 - i];
        bool r =
            !t->failed && !e->connecting && !in->eof && in->len == 0 && sink_ready(&t->e[1 - i]);
        bool w = !t->failed && (e->connecting || out->len > 0);
        ev_want(e->rev, &e->rarmed, r);
        ev_want(e->wev, &e->warmed, w);
    }
}

static void shut_sink(struct tunnel *t, int i)
{
    struct pipe *p = &t->p[i];
    struct end *dst = &t->e[1 - i];
    if (dst->kind == END_STREAM) {
        if (!dst->s)
            return;
        int rc = peers_stream_close(dst->s);
        p->shut = true;
        if (rc < 0)
            fail(t, rc, "%s: cannot close the stream: %s", side(dst), errstr(rc));
        return;
    }
    if (dst->fd < 0 || dst->connecting)
        return;
    p->shut = true;
    if (shutdown(dst->fd, SHUT_WR) < 0 && errno != ENOTCONN)
        fail(t, -errno, "%s: shutdown: %s", side(dst), strerror(errno));
}

/* Moves what pipe i holds to its sink, passes an EOF on once it is empty, and updates. */
static void pump(struct tunnel *t, int i)
{
    struct pipe *p = &t->p[i];
    struct end *src = &t->e[i], *dst = &t->e[1 - i];
    if (t->failed)
        return;
    while (p->len && sink_ready(dst)) {
        long n = sink_write(dst, p->buf + p->off, p->len);
        if (n < 0) {
            fail(t, (int)n, "%s: write: %s", side(dst), errstr((int)n));
            return;
        }
        if (n == 0)
            break;
        p->off += (size_t)n;
        p->len -= (size_t)n;
        p->bytes += (uint64_t)n;
        t->ts->st.bytes[i] += (uint64_t)n;
        give_credit(src, (size_t)n);
    }
    if (!p->len) {
        p->off = 0;
        if (src->kind == END_STREAM || p->eof) {
            /* Data from a stream mostly goes straight through (st_data): an idle tunnel keeps
             * no window-sized buffer. */
            free(p->buf);
            p->buf = NULL;
            p->alloc = 0;
        }
    }
    if (p->eof && !p->len && !p->shut)
        shut_sink(t, i);
    if (t->failed)
        return;
    update(t);
    check_done(t);
}

static void on_fd_read(evutil_socket_t fd, short what, void *arg)
{
    struct end *e = arg;
    struct tunnel *t = e->t;
    struct pipe *p = &t->p[e->idx];
    (void)what;
    if (p->len) { /* not ours to read now */
        update(t);
        return;
    }
    struct end *dst = &t->e[1 - e->idx];
    if (dst->kind == END_STREAM && sink_ready(dst)) {
        /* The common case: straight into the stream's send buffer, no copy. */
        uint8_t *room;
        long n = peers_stream_reserve(dst->s, t->ts->read_max, &room);
        if (n < 0) {
            fail(t, (int)n, "%s: write: %s", side(dst), errstr((int)n));
            return;
        }
        if (n > 0) {
            ssize_t got = recv(fd, room, (size_t)n, 0);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    return;
                fail(t, -errno, "%s: read: %s", side(e), strerror(errno));
                return;
            }
            int rc = peers_stream_commit(dst->s, (size_t)got);
            if (rc < 0) {
                fail(t, rc, "%s: write: %s", side(dst), errstr(rc));
                return;
            }
            p->bytes += (uint64_t)got;
            t->ts->st.bytes[e->idx] += (uint64_t)got;
            if (got == 0)
                p->eof = true;
            pump(t, e->idx);
            return;
        }
        /* No room in the stream now: hold one read in the pipe, as for a socket sink. */
    }
    if (!pipe_alloc(p, p->cap)) {
        fail(t, MESH_ENOMEM, "%s: out of memory", side(e));
        return;
    }
    ssize_t n = recv(fd, p->buf, p->cap, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        fail(t, -errno, "%s: read: %s", side(e), strerror(errno));
        return;
    }
    if (n == 0)
        p->eof = true;
    p->off = 0;
    p->len = (size_t)n;
    note_held(t, p);
    pump(t, e->idx);
}

static void connect_done(struct tunnel *t, struct end *e)
{
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
        soerr = errno;
    if (soerr) {
        fail(t, -soerr, "connect to the service: %s", strerror(soerr));
        return;
    }
    e->connecting = false;
    evtimer_del(t->timer);
    pump(t, 0);
    pump(t, 1);
}

static void on_fd_write(evutil_socket_t fd, short what, void *arg)
{
    struct end *e = arg;
    struct tunnel *t = e->t;
    (void)fd;
    (void)what;
    if (e->connecting)
        connect_done(t, e);
    else
        pump(t, 1 - e->idx);
}

/* ---- stream callbacks (ud = struct end) -------------------------------------------------- */

static void st_connected(void *ud, struct peers_stream *s)
{
    struct end *e = ud;
    (void)s;
    e->connected = true;
    pump(e->t, 1 - e->idx);
    pump(e->t, e->idx);
}

static void st_data(void *ud, struct peers_stream *s, const uint8_t *d, size_t n)
{
    struct end *e = ud;
    struct tunnel *t = e->t;
    struct pipe *p = &t->p[e->idx];
    struct end *dst = &t->e[1 - e->idx];
    if (t->failed)
        return;
    if (!p->len && sink_ready(dst)) {
        /* The common case: straight through, no copy. */
        long w = sink_write(dst, d, n);
        if (w < 0) {
            fail(t, (int)w, "%s: write: %s", side(dst), errstr((int)w));
            return;
        }
        p->bytes += (uint64_t)w;
        t->ts->st.bytes[e->idx] += (uint64_t)w;
        (void)peers_stream_consume(s, (size_t)w);
        d += w;
        n -= (size_t)w;
    }
    if (n) {
        if (p->len + n > p->cap) {
            /* Cannot happen while the link enforces the window. */
            fail(t, MESH_EPROTO, "%s: the stream sent beyond its window", side(e));
            return;
        }
        if (p->off + p->len + n > p->alloc && p->off) {
            memmove(p->buf, p->buf + p->off, p->len);
            p->off = 0;
        }
        if (!pipe_alloc(p, p->len + n)) {
            fail(t, MESH_ENOMEM, "%s: out of memory", side(e));
            return;
        }
        memcpy(p->buf + p->off + p->len, d, n);
        p->len += n;
        note_held(t, p);
    }
    update(t);
}

static void st_writable(void *ud, struct peers_stream *s)
{
    struct end *e = ud;
    (void)s;
    pump(e->t, 1 - e->idx);
}

static void st_fin(void *ud, struct peers_stream *s)
{
    struct end *e = ud;
    (void)s;
    e->t->p[e->idx].eof = true;
    pump(e->t, e->idx);
}

static void st_end(void *ud, struct peers_stream *s, const struct mesh_err *err)
{
    struct end *e = ud;
    struct tunnel *t = e->t;
    (void)s;
    e->s = NULL;
    if (err->code != 0)
        fail(t, err->code, "%s: %s", side(e), err->msg[0] ? err->msg : errstr(err->code));
    check_done(t); /* (fail checks too, but not when the tunnel had failed already) */
}

static const struct peers_stream_cb st_cb = {st_connected, st_data, st_writable, st_fin, st_end};

/* ---- the end of a tunnel ----------------------------------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct tunnel *t = arg;
    (void)fd;
    (void)what;
    if (!t->finishing) { /* the connection to the service took too long */
        fail(t, -ETIMEDOUT, "connect to the service: timed out");
        return;
    }
    struct tunnels *ts = t->ts;
    struct tunnel_summary sum = {.id = t->id,
                                 .bytes = {t->p[0].bytes, t->p[1].bytes},
                                 .held_max = {t->p[0].held_max, t->p[1].held_max},
                                 .code = t->failed ? t->code : 0,
                                 .msg = t->failed ? t->msg : ""};
    ts->st.ended++;
    if (t->failed)
        ts->st.failed++;
    if (ts->hooks.on_end)
        ts->hooks.on_end(ts->hooks.ud, &sum);
    tunnel_free(t);
}

/* A socket is done once it gave its EOF and got ours; a stream once its on_end came. The
 * tunnel ends (from the loop) when both ends are done. */
static void check_done(struct tunnel *t)
{
    if (t->finishing)
        return;
    for (int i = 0; i < 2; i++) {
        struct end *e = &t->e[i];
        if (e->kind == END_STREAM && e->s)
            return;
        if (e->kind == END_FD && e->fd >= 0) {
            if (!t->p[i].eof || !t->p[1 - i].shut)
                return;
            fd_close(e, false);
        }
    }
    t->finishing = true;
    struct timeval zero = {0, 0};
    evtimer_del(t->timer);
    evtimer_add(t->timer, &zero);
}

/* ---- making tunnels ---------------------------------------------------------------------- */

static int tunnel_alloc(struct tunnels *ts, uint64_t id, enum end_kind k0, enum end_kind k1,
                        struct tunnel **ret)
{
    if (ts->n >= ts->max)
        return MESH_EFULL;
    struct tunnel *t = calloc(1, sizeof *t);
    if (!t)
        return MESH_ENOMEM;
    t->ts = ts;
    t->id = id;
    t->timer = evtimer_new(ts->base, on_timer, t);
    if (!t->timer) {
        free(t);
        return MESH_ENOMEM;
    }
    enum end_kind k[2] = {k0, k1};
    for (int i = 0; i < 2; i++) {
        t->e[i] = (struct end){.t = t, .idx = i, .kind = k[i], .fd = -1};
        /* A socket source is read in read_max chunks; a stream source holds its window. */
        t->p[i].cap = k[i] == END_FD ? ts->read_max : TUNNEL_BUF_MAX;
    }
    t->next = ts->list;
    if (ts->list)
        ts->list->prev = t;
    ts->list = t;
    ts->n++;
    *ret = t;
    return 0;
}

/* Makes the socket end's events; the tunnel then owns fd. */
static int attach_fd(struct tunnel *t, struct end *e, int fd)
{
    e->rev = event_new(t->ts->base, fd, EV_READ | EV_PERSIST, on_fd_read, e);
    e->wev = event_new(t->ts->base, fd, EV_WRITE | EV_PERSIST, on_fd_write, e);
    if (!e->rev || !e->wev) {
        if (e->rev)
            event_free(e->rev);
        if (e->wev)
            event_free(e->wev);
        e->rev = e->wev = NULL;
        return MESH_ENOMEM;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    e->fd = fd;
    return 0;
}

/* Undoes a tunnel_alloc whose ends hold nothing of the caller's. */
static void discard(struct tunnel *t, struct end *keep_fd)
{
    if (keep_fd && keep_fd->fd >= 0) {
        event_free(keep_fd->rev);
        event_free(keep_fd->wev);
        keep_fd->rev = keep_fd->wev = NULL;
        keep_fd->fd = -1; /* the caller's again */
    }
    tunnel_free(t);
}

static void opened(struct tunnel *t, struct tunnel **ret)
{
    t->ts->st.opened++;
    update(t);
    if (ret)
        *ret = t;
}

int tunnel_open_fd(struct tunnels *ts, int fd, const struct mesh_addr *to, uint16_t type,
                   const uint8_t *payload, size_t len, uint64_t timeout_ms, uint64_t id,
                   struct tunnel **ret)
{
    struct tunnel *t;
    if (fd < 0 || !to)
        return MESH_EINVAL;
    int rc = tunnel_alloc(ts, id, END_FD, END_STREAM, &t);
    if (rc < 0)
        return rc;
    rc = attach_fd(t, &t->e[0], fd);
    if (rc < 0) {
        discard(t, NULL);
        return rc;
    }
    rc = peers_stream_open(ts->p, to, type, payload, len, timeout_ms, &st_cb, &t->e[1], &t->e[1].s);
    if (rc < 0) {
        discard(t, &t->e[0]);
        return rc;
    }
    opened(t, ret);
    return 0;
}

static void take_stream(struct tunnel *t, struct peers_stream *s)
{
    t->e[0].s = s;
    t->e[0].connected = true; /* accepted: sending works at once */
    peers_stream_set_cb(s, &st_cb, &t->e[0]);
}

int tunnel_accept_relay(struct tunnels *ts, struct peers_stream *s, const struct mesh_addr *to,
                        uint16_t type, const uint8_t *payload, size_t len, uint64_t timeout_ms,
                        uint64_t id, struct tunnel **ret)
{
    struct tunnel *t;
    if (!s || !to)
        return MESH_EINVAL;
    int rc = tunnel_alloc(ts, id, END_STREAM, END_STREAM, &t);
    if (rc < 0)
        return rc;
    rc = peers_stream_open(ts->p, to, type, payload, len, timeout_ms, &st_cb, &t->e[1], &t->e[1].s);
    if (rc < 0) {
        discard(t, NULL);
        return rc;
    }
    take_stream(t, s);
    opened(t, ret);
    return 0;
}

static int splice_fd(struct tunnels *ts, struct peers_stream *s, int fd, uint64_t id,
                     bool connecting, struct tunnel **ret)
{
    struct tunnel *t;
    int rc = tunnel_alloc(ts, id, END_STREAM, END_FD, &t);
    if (rc < 0)
        return rc;
    rc = attach_fd(t, &t->e[1], fd);
    if (rc < 0) {
        discard(t, NULL);
        return rc;
    }
    if (connecting) {
        /* Whether or not connect finished at once, the first writable event says how it went. */
        t->e[1].connecting = true;
        struct timeval tv = mesh_ms_to_timeval(TUNNEL_CONNECT_TIMEOUT);
        evtimer_add(t->timer, &tv);
    }
    take_stream(t, s);
    opened(t, ret);
    return 0;
}

int tunnel_accept_fd(struct tunnels *ts, struct peers_stream *s, int fd, uint64_t id,
                     struct tunnel **ret)
{
    if (!s || fd < 0)
        return MESH_EINVAL;
    return splice_fd(ts, s, fd, id, false, ret);
}

int tunnel_accept_connect(struct tunnels *ts, struct peers_stream *s,
                          const struct mesh_addr *endpoint, uint64_t id, struct tunnel **ret)
{
    struct sockaddr_storage ss;
    if (!s || !endpoint)
        return MESH_EINVAL;
    socklen_t sl = mesh_addr_to_sockaddr(endpoint, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    int rc = splice_fd(ts, s, fd, id, true, ret);
    if (rc < 0)
        close(fd);
    return rc;
}
