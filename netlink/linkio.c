/* libevent binding of struct link to a TCP socket: bytes received straight into the link's
 * input buffer, its output sent straight from its buffer, link_tick from a timer, on_close once
 * at the end. */
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

#include <sodium.h>

#include "evwant.h"
#include "timeutil.h"

/* The kernel-side queue: at most NOTSENT_LOWAT bytes not yet sent on the wire wait in the
 * socket (TCP_NOTSENT_LOWAT), so that control frames are not stuck behind bulk bytes that
 * already left the link (see "Priorities" in link.h), while the link encrypts the next frame
 * only when the socket can take it. */
#define NOTSENT_LOWAT  (128 * 1024)
#define FLUSH_GRACE_MS 1000 /* time given to a final notice before closing the socket */
/* Bytes read per readiness event at most, so that one busy link cannot starve the others. The
 * socket is read straight into the link's input buffer (link_input_space): no copy. */
#define READ_BUDGET (512 * 1024)

struct linkio {
    struct event_base *base;
    int fd; /* -1 once closed */
    struct event *rev, *wev;
    bool reading, writing; /* rev / wev added */
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
    ev_want(lio->rev, &lio->reading, false);
    ev_want(lio->wev, &lio->writing, false);
    if (lio->fd >= 0) {
        close(lio->fd);
        lio->fd = -1;
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
    lio->fail_deadline = mesh_now_ms() + FLUSH_GRACE_MS;
    ev_want(lio->rev, &lio->reading, false);
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
    uint64_t now = mesh_now_ms(), d;

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
    struct timeval tv = mesh_ms_to_timeval(d);
    evtimer_add(lio->timer, &tv);
}

/* The socket failed (errno e) or reached its end: nothing more can be sent. */
static void socket_failed(struct linkio *lio, int e)
{
    if (e == 0) {
        if (link_state(lio->link) != LINK_STATE_DEAD)
            (void)link_feed_eof(lio->link, mesh_now_ms());
        if (!lio->failing)
            fail(lio, link_error(lio->link));
    } else {
        struct mesh_err err;
        mesh_errf(&err, MESH_EIO, "%s: %s", lio->connected ? "socket" : "connect", strerror(e));
        fail(lio, &err);
    }
    finish(lio);
}

/* Sends what the link has to send, straight from its output buffer, until the socket is full. */
static void flush(struct linkio *lio)
{
    bool blocked = false;

    if (lio->finished || !lio->connected)
        return;
    for (;;) {
        const uint8_t *p;
        size_t n;
        link_output_peek(lio->link, &p, &n);
        if (n == 0)
            break;
        ssize_t w = send(lio->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                blocked = true;
                break;
            }
            socket_failed(lio, errno);
            return;
        }
        link_output_consume(lio->link, (size_t)w);
        if ((size_t)w < n) {
            blocked = true;
            break;
        }
    }
    ev_want(lio->wev, &lio->writing, blocked);
    if (!blocked && link_output_idle(lio->link)) {
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

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct linkio *lio = arg;
    uint64_t now = mesh_now_ms();
    size_t budget = READ_BUDGET;
    (void)what;

    while (!lio->failing && !lio->finished && budget > 0) {
        uint8_t *p;
        size_t room = link_input_space(lio->link, &p);
        ssize_t n = recv(fd, p, room, 0);
        if (n > 0) {
            budget = (size_t)n < budget ? budget - (size_t)n : 0;
            if (link_input_commit(lio->link, (size_t)n, now) < 0)
                fail(lio, link_error(lio->link));
            if ((size_t)n < room)
                break; /* drained (a level-triggered event follows if more came) */
            continue;
        }
        if (n == 0) {
            socket_failed(lio, 0);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            socket_failed(lio, errno);
            return;
        }
        break;
    }
    flush(lio);
}

static void set_sockopts(int fd)
{
    int one = 1, lowat = NOTSENT_LOWAT;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct linkio *lio = arg;
    (void)what;

    if (!lio->connected) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr == EINPROGRESS || soerr == EALREADY)
            return;
        if (soerr) {
            socket_failed(lio, soerr);
            return;
        }
        lio->connected = true;
        set_sockopts(fd);
        ev_want(lio->wev, &lio->writing, false);
        ev_want(lio->rev, &lio->reading, true);
        if (link_start(lio->link, mesh_now_ms()) < 0)
            fail_code(lio, MESH_ESTATE, "starting the link");
    }
    flush(lio);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct linkio *lio = arg;
    uint64_t now = mesh_now_ms();
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
    lio->fd = -1; /* the caller's until we succeed */
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
        free(lio);
        return r;
    }
    lio->timer = evtimer_new(base, timer_cb, lio);
    lio->flush_ev = event_new(base, -1, 0, flush_cb, lio);
    lio->close_ev = event_new(base, -1, 0, close_cb, lio);
    lio->rev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, lio);
    lio->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, write_cb, lio);
    if (!lio->timer || !lio->flush_ev || !lio->close_ev || !lio->rev || !lio->wev) {
        linkio_free(lio); /* fd is still -1: the caller keeps it */
        return mesh_errf(err, MESH_ENOMEM, "linkio: out of memory");
    }
    lio->fd = fd;
    *ret = lio;
    return 0;
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
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
        r = mesh_errf(err, MESH_EIO, "linkio: connect to %s: %s",
                      mesh_addr_format(addr, buf, sizeof buf), strerror(errno));
        close(fd);
        return r;
    }
    r = lio_new(base, fd, cfg, true, &lio, err);
    if (r < 0) {
        close(fd);
        return r;
    }
    /* Connected once the socket is writable (write_cb). */
    lio->connect_deadline = mesh_now_ms() + lio->cfg.connect_timeout_ms;
    ev_want(lio->wev, &lio->writing, true);
    rearm_timer(lio);
    *ret = lio;
    return 0;
}

int linkio_adopt(struct event_base *base, int fd, const struct linkio_config *cfg,
                 struct linkio **ret, struct mesh_err *err)
{
    struct linkio *lio;
    int fl, r;

    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return mesh_errf(err, -errno, "linkio: fcntl: %s", strerror(errno));
    set_sockopts(fd);
    r = lio_new(base, fd, cfg, false, &lio, err);
    if (r < 0)
        return r;
    lio->connected = true;
    r = link_start(lio->link, mesh_now_ms());
    if (r < 0) {
        lio->fd = -1; /* the caller keeps it */
        linkio_free(lio);
        return mesh_errf(err, r, "linkio: start: %s", mesh_strerror(r));
    }
    ev_want(lio->rev, &lio->reading, true);
    event_active(lio->flush_ev, EV_WRITE, 0);
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
    if (lio->rev)
        event_free(lio->rev);
    if (lio->wev)
        event_free(lio->wev);
    if (lio->fd >= 0)
        close(lio->fd);
    if (lio->timer)
        event_free(lio->timer);
    if (lio->flush_ev)
        event_free(lio->flush_ev);
    if (lio->close_ev)
        event_free(lio->close_ev);
    link_free(lio->link);
    free(lio);
}
