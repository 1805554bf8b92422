/* libevent binding of struct link: bytes in from the bufferevent, bytes out to it, link_tick
 * from a timer, on_close once at the end. */
#define _POSIX_C_SOURCE 200809L
#include "linkio.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <sodium.h>

/* Keep the kernel-side queue short so control frames are not stuck behind bulk bytes that
 * already left the link (see "Priorities" in link.h). */
#define OUT_HIGH       (64 * 1024)
#define OUT_LOW        (16 * 1024)
#define FLUSH_GRACE_MS 1000 /* time given to a final notice before closing the socket */
/* libevent 2.1 reads at most 4 KiB per readiness event (EVBUFFER_MAX_READ), four syscalls
 * per bulk frame: after taking what the bufferevent read, read_cb drains the socket itself in
 * READ_CHUNK reads, up to READ_BUDGET bytes per event so that one busy link cannot starve the
 * others (bench/README.md, tunnel: the kernel side was half of meshd's CPU per GiB). */
#define READ_CHUNK  (64 * 1024)
#define READ_BUDGET (512 * 1024)

struct linkio {
    struct event_base *base;
    struct bufferevent *bev;
    uint8_t *rbuf; /* READ_CHUNK bytes for read_cb's own reads */
    struct link *link;
    struct event *timer, *flush_ev, *close_ev;
    struct linkio_config cfg;
    struct mesh_err err;
    bool connected;
    bool closing;  /* linkio_close: finish once the output is idle */
    bool failing;  /* the link died: flush the last notice, then finish */
    bool finished; /* socket closed, on_close scheduled or fired */
    uint64_t connect_deadline, fail_deadline;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- link callback trampolines: the link's ud is the linkio ---- */

static int t_handshake(void *ud, const uint8_t peer[LINK_KEY_LEN], const uint8_t *p, size_t n)
{
    struct linkio *lio = ud;
    return lio->cfg.cb.on_handshake(lio->cfg.ud, peer, p, n);
}

static uint32_t t_open(void *ud, uint32_t id, uint16_t type, const uint8_t *p, size_t n)
{
    struct linkio *lio = ud;
    return lio->cfg.cb.on_channel_open ? lio->cfg.cb.on_channel_open(lio->cfg.ud, id, type, p, n)
                                       : LINK_RESET_REFUSED;
}

static void t_data(void *ud, uint32_t id, const uint8_t *d, size_t n)
{
    struct linkio *lio = ud;
    if (lio->cfg.cb.on_channel_data)
        lio->cfg.cb.on_channel_data(lio->cfg.ud, id, d, n);
}

static void t_writable(void *ud, uint32_t id)
{
    struct linkio *lio = ud;
    if (lio->cfg.cb.on_channel_writable)
        lio->cfg.cb.on_channel_writable(lio->cfg.ud, id);
}

static void t_closed(void *ud, uint32_t id)
{
    struct linkio *lio = ud;
    if (lio->cfg.cb.on_channel_closed)
        lio->cfg.cb.on_channel_closed(lio->cfg.ud, id);
}

static void t_reset(void *ud, uint32_t id, uint32_t reason)
{
    struct linkio *lio = ud;
    if (lio->cfg.cb.on_channel_reset)
        lio->cfg.cb.on_channel_reset(lio->cfg.ud, id, reason);
}

static void t_output(void *ud)
{
    struct linkio *lio = ud;
    /* Never write from inside the link: flush from the loop. */
    if (!lio->finished)
        event_active(lio->flush_ev, EV_WRITE, 0);
}

/* ---- closing ---- */

static void finish(struct linkio *lio)
{
    if (lio->finished)
        return;
    lio->finished = true;
    if (lio->bev) {
        bufferevent_free(lio->bev); /* BEV_OPT_CLOSE_ON_FREE closes the socket */
        lio->bev = NULL;
    }
    evtimer_del(lio->timer);
    event_del(lio->flush_ev);
    event_active(lio->close_ev, EV_TIMEOUT, 0);
}

static void close_cb(evutil_socket_t fd, short what, void *arg)
{
    struct linkio *lio = arg;
    (void)fd, (void)what;
    lio->cfg.on_close(lio->cfg.ud, &lio->err); /* may free lio: nothing after this */
}

/* The link died or the transport failed: keep the reason, give the final notice a moment to
 * leave, then finish. */
static void fail(struct linkio *lio, const struct mesh_err *err)
{
    if (lio->failing || lio->finished)
        return;
    lio->failing = true;
    lio->err = *err;
    /* Our own linkio_close ends with code 0, whatever the link says. */
    if (lio->closing && err->code == MESH_ECLOSED)
        lio->err.code = 0;
    lio->fail_deadline = now_ms() + FLUSH_GRACE_MS;
    if (lio->bev)
        bufferevent_disable(lio->bev, EV_READ);
    event_active(lio->flush_ev, EV_WRITE, 0);
}

static void fail_code(struct linkio *lio, int code, const char *what)
{
    struct mesh_err e;
    mesh_errf(&e, code, "%s", what);
    fail(lio, &e);
}

/* ---- pumping ---- */

static void rearm_timer(struct linkio *lio)
{
    uint64_t now = now_ms(), d;
    struct timeval tv;

    if (lio->finished)
        return;
    if (lio->failing)
        d = lio->fail_deadline;
    else if (!lio->connected)
        d = lio->connect_deadline;
    else
        d = link_next_deadline(lio->link);
    if (d == LINK_NO_DEADLINE) {
        evtimer_del(lio->timer);
        return;
    }
    d = d > now ? d - now : 0;
    tv.tv_sec = (time_t)(d / 1000);
    tv.tv_usec = (suseconds_t)(d % 1000) * 1000;
    evtimer_add(lio->timer, &tv);
}

static void flush(struct linkio *lio)
{
    struct evbuffer *out;

    if (lio->finished || !lio->connected)
        return;
    out = bufferevent_get_output(lio->bev);
    while (evbuffer_get_length(out) < OUT_HIGH || lio->failing) {
        const uint8_t *p;
        size_t n;
        link_output_peek(lio->link, &p, &n);
        if (n == 0)
            break;
        if (bufferevent_write(lio->bev, p, n) < 0) {
            fail_code(lio, MESH_ENOMEM, "writing to the socket buffer");
            break;
        }
        link_output_consume(lio->link, n);
    }
    if (evbuffer_get_length(out) == 0 && link_output_idle(lio->link)) {
        if (lio->failing) {
            finish(lio);
            return;
        }
        if (lio->closing && link_state(lio->link) == LINK_STATE_CLOSING) {
            struct mesh_err e = {0, "closed"};
            lio->failing = true;
            lio->err = e;
            finish(lio);
            return;
        }
    }
    rearm_timer(lio);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    flush(arg);
}

static void event_cb(struct bufferevent *bev, short what, void *arg);

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct linkio *lio = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint64_t now = now_ms();

    while (!lio->failing && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        int r = link_feed(lio->link, v.iov_base, v.iov_len, now);
        evbuffer_drain(in, v.iov_len);
        if (r < 0)
            fail(lio, link_error(lio->link));
    }
    /* Then what else the socket holds, in large reads. */
    size_t budget = READ_BUDGET;
    while (!lio->failing && !lio->finished && lio->rbuf && budget > 0) {
        ssize_t n = recv(bufferevent_getfd(bev), lio->rbuf, READ_CHUNK, 0);
        if (n > 0) {
            budget = (size_t)n < budget ? budget - (size_t)n : 0;
            if (link_feed(lio->link, lio->rbuf, (size_t)n, now) < 0)
                fail(lio, link_error(lio->link));
            continue;
        }
        if (n == 0) {
            event_cb(bev, BEV_EVENT_READING | BEV_EVENT_EOF, lio);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            event_cb(bev, BEV_EVENT_READING | BEV_EVENT_ERROR, lio);
            return;
        }
        break;
    }
    flush(lio);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    flush(arg);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct linkio *lio = arg;
    (void)bev;

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        lio->connected = true;
        setsockopt(bufferevent_getfd(lio->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (link_start(lio->link, now_ms()) < 0)
            fail_code(lio, MESH_ESTATE, "starting the link");
        flush(lio);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        if (link_state(lio->link) != LINK_STATE_DEAD)
            (void)link_feed_eof(lio->link, now_ms());
        if (!lio->failing)
            fail(lio, link_error(lio->link));
    } else if (what & BEV_EVENT_ERROR) {
        struct mesh_err e;
        int saved = EVUTIL_SOCKET_ERROR();
        mesh_errf(&e, MESH_EIO, "%s: %s", lio->connected ? "socket" : "connect",
                  evutil_socket_error_to_string(saved));
        fail(lio, &e);
    }
    /* The socket is gone: nothing more can be flushed. */
    finish(lio);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct linkio *lio = arg;
    uint64_t now = now_ms();
    (void)fd, (void)what;

    if (lio->failing) {
        if (now >= lio->fail_deadline) {
            finish(lio);
            return;
        }
    } else if (!lio->connected) {
        if (now >= lio->connect_deadline) {
            fail_code(lio, MESH_EIO, "connect timed out");
            finish(lio);
            return;
        }
    } else if (link_tick(lio->link, now) < 0) {
        fail(lio, link_error(lio->link));
    }
    flush(lio);
}

/* ---- construction ---- */

static int lio_new(struct event_base *base, int fd, const struct linkio_config *cfg, bool initiator,
                   struct linkio **ret, struct mesh_err *err)
{
    struct linkio *lio;
    struct link_config lc;
    struct link_callbacks cb = {
        .on_handshake = t_handshake,
        .on_channel_open = t_open,
        .on_channel_data = t_data,
        .on_channel_writable = t_writable,
        .on_channel_closed = t_closed,
        .on_channel_reset = t_reset,
        .on_output = t_output,
    };
    int r;

    if (!base || !cfg || !cfg->on_close || !cfg->cb.on_handshake || !ret)
        return mesh_errf(err, MESH_EINVAL, "linkio: missing base, config or callback");
    lio = calloc(1, sizeof *lio);
    if (!lio)
        return mesh_errf(err, MESH_ENOMEM, "linkio: out of memory");
    lio->base = base;
    lio->cfg = *cfg;
    if (!lio->cfg.connect_timeout_ms)
        lio->cfg.connect_timeout_ms = LINKIO_DEFAULT_CONNECT_TIMEOUT;
    lc = cfg->link;
    lc.initiator = initiator;
    r = link_new(&lc, &cb, lio, &lio->link);
    /* The link keeps its own copy of the keys and payload: drop ours. */
    sodium_memzero(&lc, sizeof lc);
    sodium_memzero(&lio->cfg.link, sizeof lio->cfg.link);
    if (r < 0) {
        mesh_errf(err, r, "linkio: link: %s", mesh_strerror(r));
        goto fail_lio;
    }
    lio->timer = evtimer_new(base, timer_cb, lio);
    lio->flush_ev = event_new(base, -1, 0, flush_cb, lio);
    lio->close_ev = event_new(base, -1, 0, close_cb, lio);
    lio->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    lio->rbuf = malloc(READ_CHUNK);
    if (!lio->timer || !lio->flush_ev || !lio->close_ev || !lio->bev || !lio->rbuf) {
        r = mesh_errf(err, MESH_ENOMEM, "linkio: out of memory");
        goto fail_events;
    }
    bufferevent_setcb(lio->bev, read_cb, write_cb, event_cb, lio);
    bufferevent_setwatermark(lio->bev, EV_WRITE, OUT_LOW, 0);
    /* Flush the whole (short) queue per writev, not bufferevent's default 16 KiB. */
    bufferevent_set_max_single_write(lio->bev, OUT_HIGH);
    bufferevent_enable(lio->bev, EV_READ | EV_WRITE);
    *ret = lio;
    return 0;

fail_events:
    if (lio->bev) {
        /* The caller keeps the fd on failure: detach it before freeing. */
        bufferevent_setfd(lio->bev, -1);
        bufferevent_free(lio->bev);
    }
    if (lio->timer)
        event_free(lio->timer);
    if (lio->flush_ev)
        event_free(lio->flush_ev);
    if (lio->close_ev)
        event_free(lio->close_ev);
    free(lio->rbuf);
    link_free(lio->link);
fail_lio:
    free(lio);
    return r;
}

int linkio_connect(struct event_base *base, const struct mesh_addr *addr,
                   const struct linkio_config *cfg, struct linkio **ret, struct mesh_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    struct linkio *lio;
    char buf[MESH_ADDR_STRLEN];
    int fd, r;

    if (!addr || (addr->family != 4 && addr->family != 6))
        return mesh_errf(err, MESH_EINVAL, "linkio: no address");
    sl = mesh_addr_to_sockaddr(addr, &ss);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mesh_errf(err, -errno, "linkio: socket: %s", strerror(errno));
    r = lio_new(base, fd, cfg, true, &lio, err);
    if (r < 0)
        goto fail_fd;
    lio->connect_deadline = now_ms() + lio->cfg.connect_timeout_ms;
    if (bufferevent_socket_connect(lio->bev, (struct sockaddr *)&ss, (int)sl) < 0) {
        r = mesh_errf(err, MESH_EIO, "linkio: connect to %s: %s",
                      mesh_addr_format(addr, buf, sizeof buf), strerror(errno));
        goto fail_lio;
    }
    rearm_timer(lio);
    *ret = lio;
    return 0;

fail_lio:
    linkio_free(lio); /* closes fd through the bufferevent */
    return r;
fail_fd:
    close(fd);
    return r;
}

int linkio_adopt(struct event_base *base, int fd, const struct linkio_config *cfg,
                 struct linkio **ret, struct mesh_err *err)
{
    struct linkio *lio;
    int one = 1, fl, r;

    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return mesh_errf(err, -errno, "linkio: fcntl: %s", strerror(errno));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    r = lio_new(base, fd, cfg, false, &lio, err);
    if (r < 0)
        return r;
    lio->connected = true;
    r = link_start(lio->link, now_ms());
    if (r < 0) {
        bufferevent_setfd(lio->bev, -1);
        linkio_free(lio);
        return mesh_errf(err, r, "linkio: start: %s", mesh_strerror(r));
    }
    rearm_timer(lio);
    *ret = lio;
    return 0;
}

struct link *linkio_link(struct linkio *lio)
{
    return lio->link;
}

void linkio_close(struct linkio *lio)
{
    if (lio->closing || lio->failing || lio->finished)
        return;
    lio->closing = true;
    if (!lio->connected) {
        fail_code(lio, 0, "closed before connecting");
        finish(lio);
        return;
    }
    if (link_state(lio->link) != LINK_STATE_ESTABLISHED) {
        /* During the handshake link_close kills the link after queueing the abort notice. */
        (void)link_close(lio->link);
        fail_code(lio, 0, "closed during the handshake");
        return;
    }
    (void)link_close(lio->link);
    event_active(lio->flush_ev, EV_WRITE, 0);
}

void linkio_free(struct linkio *lio)
{
    if (!lio)
        return;
    if (lio->bev)
        bufferevent_free(lio->bev);
    if (lio->timer)
        event_free(lio->timer);
    if (lio->flush_ev)
        event_free(lio->flush_ev);
    if (lio->close_ev)
        event_free(lio->close_ev);
    link_free(lio->link);
    free(lio->rbuf);
    free(lio);
}
