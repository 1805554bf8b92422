#include "transport.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "dlist.h"
#include "timeutil.h"
#include "tunnel.h"

#define PUMP_BUF        65536 /* bytes read from raft's end at once */
#define READS_PER_EVENT 16    /* then let other events run */
#define HS_FIXED        24    /* protocol, id, address length */
#define ADDRESS_MAX     (LINK_OPEN_PAYLOAD_MAX - HS_FIXED - 1)
#define REROUTE_MS      1000 /* how often outgoing connections are checked against the routes */
#define SMALL_HEADER    4096 /* bound of the fixed-size raft message headers */
#define CONF_FORMAT     1    /* raft's configuration ENCODING_FORMAT */

/* Reset reason when the listener refuses a handshake (any value link.h leaves to us). */
#define RESET_HANDSHAKE 0x200u

struct tr;

/* One raft connection: a pending connect, then a pump between raft's pipe and a stream. */
struct tconn {
    struct tr *tr;
    struct tconn *prev, *next;
    struct peers_stream *s;      /* until its on_end */
    struct raft_uv_connect *req; /* connector: until raft's connect callback fired */
    bool outgoing;
    struct mesh_addr dest, hop; /* connector: the raft peer, and the node the stream goes to */
    int fd; /* our end of the socketpair; -1 before the pipe exists and once closed */
    struct event *rd, *wr, *linger;
    /* raft -> stream */
    uint8_t *obuf;
    size_t ooff, olen;
    bool rd_eof;
    /* stream -> raft: bytes received, not yet written into the socketpair (not consumed) */
    uint8_t *ibuf;
    size_t ioff, ilen, icap;
    bool fin_in, wr_shut;
    struct transport_framecheck fc;
};

struct tr {
    struct raft_uv_transport *t;
    struct transport_config cfg;
    raft_id id;
    char address[ADDRESS_MAX + 1];
    struct mesh_addr self; /* address, parsed */
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    bool listening, closing;
    bool relay_listening;
    struct tunnels *relays; /* streams spliced on to a next hop; only with cfg.next_hop */
    struct event *reroute_ev;
    struct tconn *conns;
    struct event *close_ev;
    struct transport_stats st;
};

/* ---- little-endian helpers (raft's wire byte order) -------------------------------------- */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- handshake --------------------------------------------------------------------------- */

size_t transport_handshake_encode(uint64_t id, const char *address, uint8_t *buf, size_t cap)
{
    size_t alen = strlen(address) + 1;
    alen = (alen + 7) & ~(size_t)7; /* raft pads the address to 8 bytes */
    if (cap < HS_FIXED || alen > cap - HS_FIXED)
        return 0;
    put64(buf, TRANSPORT_HANDSHAKE_PROTOCOL);
    put64(buf + 8, id);
    put64(buf + 16, alen);
    memset(buf + HS_FIXED, 0, alen);
    memcpy(buf + HS_FIXED, address, strlen(address));
    return HS_FIXED + alen;
}

int transport_handshake_decode(const uint8_t *buf, size_t len, uint64_t *ret_id, char *ret_address,
                               size_t cap)
{
    if (len < HS_FIXED + 1 || get64(buf) != TRANSPORT_HANDSHAKE_PROTOCOL ||
        get64(buf + 16) != len - HS_FIXED)
        return MESH_EMALFORMED;
    const uint8_t *a = buf + HS_FIXED;
    const uint8_t *nul = memchr(a, 0, len - HS_FIXED);
    if (!nul || nul == a || (size_t)(nul - a) >= cap)
        return MESH_EMALFORMED;
    memcpy(ret_address, a, (size_t)(nul - a) + 1);
    *ret_id = get64(buf + 8);
    return 0;
}

/* ---- relay payload ----------------------------------------------------------------------- */

size_t transport_relay_encode(uint8_t hops_left, const struct mesh_addr *dest, const uint8_t *hs,
                              size_t hs_len, uint8_t *buf, size_t cap)
{
    /* A stream: no call type, no reply bound (netlink/relay.h). */
    struct relay_hdr h = {.hops_left = hops_left, .dest = *dest};
    if (cap < TRANSPORT_RELAY_HEADER || hs_len > cap - TRANSPORT_RELAY_HEADER ||
        relay_hdr_encode(&h, buf, cap) < 0)
        return 0;
    memcpy(buf + TRANSPORT_RELAY_HEADER, hs, hs_len);
    return TRANSPORT_RELAY_HEADER + hs_len;
}

int transport_relay_decode(const uint8_t *buf, size_t len, struct transport_relay *ret)
{
    struct transport_relay r;
    struct relay_hdr h;
    int rc = relay_hdr_decode(buf, len, &h);
    if (rc < 0)
        return rc;
    /* The whole payload travels in one OPEN frame: nothing longer is a relay request. */
    if (len > LINK_OPEN_PAYLOAD_MAX || h.type != 0 || h.max_reply != 0)
        return MESH_EMALFORMED;
    memset(&r, 0, sizeof r);
    r.hops_left = h.hops_left;
    r.dest = h.dest;
    r.hs = buf + TRANSPORT_RELAY_HEADER;
    r.hs_len = len - TRANSPORT_RELAY_HEADER;
    if (transport_handshake_decode(r.hs, r.hs_len, &r.id, r.address, sizeof r.address) < 0)
        return MESH_EMALFORMED;
    *ret = r;
    return 0;
}

/* ---- framing check (raft's src/uv_encoding.c, uv_recv.c) --------------------------------- */

enum { FC_PRE, FC_HDR, FC_PAYLOAD };

void transport_framecheck_init(struct transport_framecheck *f, size_t max_message)
{
    memset(f, 0, sizeof *f);
    f->max_message = max_message ? max_message : TRANSPORT_DEFAULT_MAX_MESSAGE;
}

void transport_framecheck_fini(struct transport_framecheck *f)
{
    free(f->hdr);
    f->hdr = NULL;
}

static int fc_fail(struct transport_framecheck *f, int code)
{
    transport_framecheck_fini(f);
    f->error = code;
    return code;
}

/* The preamble: [u64 type, u64 header length]. raft decodes fixed-size headers without looking
 * at the length it was sent, so each type needs at least what its decoder reads. */
static int fc_preamble(struct transport_framecheck *f)
{
    uint64_t min, max = SMALL_HEADER;
    f->type = get64(f->pre);
    f->hlen = get64(f->pre + 8);
    switch (f->type) {
    case RAFT_IO_APPEND_ENTRIES: /* term, prev index, prev term, commit, n, 16 per entry */
        min = 40;
        max = TRANSPORT_MAX_HEADER;
        break;
    case RAFT_IO_APPEND_ENTRIES_RESULT: /* term, rejected, last index */
    case RAFT_IO_TIMEOUT_NOW:           /* term, last index, last term */
        min = 24;
        break;
    case RAFT_IO_REQUEST_VOTE: /* 4 words, then flags unless exactly 4 words */
        min = 32;
        if (f->hlen > 32 && f->hlen < 40)
            return fc_fail(f, MESH_EMALFORMED);
        break;
    case RAFT_IO_REQUEST_VOTE_RESULT: /* 2 words, then flags if more */
        min = 16;
        if (f->hlen > 16 && f->hlen < 24)
            return fc_fail(f, MESH_EMALFORMED);
        break;
    case RAFT_IO_INSTALL_SNAPSHOT: /* 5 words, configuration, data length */
        min = 48;
        max = TRANSPORT_MAX_HEADER;
        break;
    default:
        return fc_fail(f, MESH_EMALFORMED);
    }
    if (f->hlen < min)
        return fc_fail(f, MESH_EMALFORMED);
    if (f->hlen > max)
        return fc_fail(f, MESH_ETOOBIG);
    f->hdr = malloc((size_t)f->hlen);
    if (!f->hdr)
        return fc_fail(f, MESH_ENOMEM);
    f->hdr_n = 0;
    return 0;
}

/* raft's configuration encoding: u8 format, u64 n, then n times (u64 id, address NUL, u8 role),
 * read by raft without bounds on the id and role. */
static bool fc_conf_ok(const uint8_t *p, size_t len)
{
    if (len < 9 || p[0] != CONF_FORMAT)
        return false;
    uint64_t n = get64(p + 1);
    size_t off = 9;
    if (n == 0)
        return false;
    for (uint64_t i = 0; i < n; i++) {
        if (len - off < 8 + 1 + 1)
            return false;
        off += 8;
        const uint8_t *nul = memchr(p + off, 0, len - off);
        if (!nul)
            return false;
        off = (size_t)(nul - p) + 1;
        if (off >= len)
            return false;
        off++; /* role */
    }
    return true;
}

static int fc_header(struct transport_framecheck *f)
{
    const uint8_t *h = f->hdr;
    uint64_t sum = 0;
    f->payload_left = 0;
    if (f->type == RAFT_IO_APPEND_ENTRIES) {
        uint64_t n = get64(h + 32);
        if (n > (f->hlen - 40) / 16)
            return fc_fail(f, MESH_EMALFORMED);
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *e = h + 40 + 16 * i;
            if (e[8] < RAFT_COMMAND || e[8] > RAFT_CHANGE)
                return fc_fail(f, MESH_EMALFORMED);
            sum += get32(e + 12);
            if (sum > f->max_message)
                return fc_fail(f, MESH_ETOOBIG);
        }
        f->payload_left = sum;
    } else if (f->type == RAFT_IO_INSTALL_SNAPSHOT) {
        uint64_t conf_len = get64(h + 32);
        if (conf_len == 0 || conf_len > f->hlen - 48 || !fc_conf_ok(h + 40, (size_t)conf_len))
            return fc_fail(f, MESH_EMALFORMED);
        uint64_t data_len = get64(h + 40 + conf_len);
        if (data_len > f->max_message)
            return fc_fail(f, MESH_ETOOBIG);
        f->payload_left = data_len;
    }
    transport_framecheck_fini(f);
    return 0;
}

int transport_framecheck_feed(struct transport_framecheck *f, const uint8_t *d, size_t n)
{
    int rc;
    if (f->error)
        return f->error;
    while (n) {
        size_t k;
        switch (f->phase) {
        case FC_PRE:
            k = sizeof f->pre - f->pre_n < n ? sizeof f->pre - f->pre_n : n;
            memcpy(f->pre + f->pre_n, d, k);
            f->pre_n += k;
            if (f->pre_n == sizeof f->pre) {
                if ((rc = fc_preamble(f)) < 0)
                    return rc;
                f->phase = FC_HDR;
            }
            break;
        case FC_HDR:
            k = (size_t)(f->hlen - f->hdr_n) < n ? (size_t)(f->hlen - f->hdr_n) : n;
            memcpy(f->hdr + f->hdr_n, d, k);
            f->hdr_n += k;
            if (f->hdr_n == f->hlen) {
                if ((rc = fc_header(f)) < 0)
                    return rc;
                f->pre_n = 0;
                f->phase = f->payload_left ? FC_PAYLOAD : FC_PRE;
            }
            break;
        default:
            k = f->payload_left < n ? (size_t)f->payload_left : n;
            f->payload_left -= k;
            if (f->payload_left == 0) {
                f->pre_n = 0;
                f->phase = FC_PRE;
            }
            break;
        }
        d += k;
        n -= k;
    }
    return 0;
}

/* ---- connections ------------------------------------------------------------------------- */

static void tr_maybe_closed(struct tr *tr)
{
    struct timeval zero = {0, 0};
    if (tr->closing && !tr->conns && tr->close_cb)
        evtimer_add(tr->close_ev, &zero);
}

static struct tconn *tc_new(struct tr *tr, bool outgoing)
{
    struct tconn *tc = calloc(1, sizeof *tc);
    if (!tc)
        return NULL;
    tc->tr = tr;
    tc->outgoing = outgoing;
    tc->fd = -1;
    transport_framecheck_init(&tc->fc, tr->cfg.max_message);
    tc->next = tr->conns;
    if (tr->conns)
        tr->conns->prev = tc;
    tr->conns = tc;
    return tc;
}

static void tc_close_fd(struct tconn *tc)
{
    if (tc->rd)
        event_free(tc->rd);
    if (tc->wr)
        event_free(tc->wr);
    if (tc->linger)
        event_free(tc->linger);
    tc->rd = tc->wr = tc->linger = NULL;
    if (tc->fd >= 0)
        close(tc->fd);
    tc->fd = -1;
}

static void tc_free(struct tconn *tc)
{
    struct tr *tr = tc->tr;
    tc_close_fd(tc);
    transport_framecheck_fini(&tc->fc);
    free(tc->obuf);
    free(tc->ibuf);
    DLIST_REMOVE(tr->conns, tc);
    free(tc);
}

/* Tears the connection down: raft's end sees EOF (or EPIPE on its next write) at once, the
 * stream is reset, and on_end frees the rest. */
static void tc_abort(struct tconn *tc)
{
    tc_close_fd(tc);
    if (tc->s)
        peers_stream_reset(tc->s);
}

/* Pushes what was read from raft into the stream. False when blocked (on_writable resumes)
 * or torn down. */
static bool tc_push(struct tconn *tc)
{
    while (tc->olen) {
        long n = peers_stream_send(tc->s, tc->obuf + tc->ooff, tc->olen);
        if (n < 0) {
            tc_abort(tc);
            return false;
        }
        if (n == 0) {
            event_del(tc->rd); /* backpressure: stop reading raft until on_writable */
            return false;
        }
        tc->ooff += (size_t)n;
        tc->olen -= (size_t)n;
    }
    tc->ooff = 0;
    return true;
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tc_abort(arg);
}

static void on_rd(evutil_socket_t fd, short what, void *arg)
{
    struct tconn *tc = arg;
    (void)what;
    if (!tc->obuf && !(tc->obuf = malloc(PUMP_BUF))) {
        tc_abort(tc);
        return;
    }
    for (int i = 0; i < READS_PER_EVENT; i++) {
        if (tc->olen && !tc_push(tc))
            return;
        ssize_t r = read(fd, tc->obuf, PUMP_BUF);
        if (r > 0) {
            tc->olen = (size_t)r;
            tc->ooff = 0;
            tc->tr->st.bytes_from_raft += (uint64_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r < 0) {
            tc_abort(tc);
            return;
        }
        /* Raft closed its end: FIN after what it wrote, then wait (bounded) for the peer's. */
        tc->rd_eof = true;
        event_del(tc->rd);
        struct timeval tv = mesh_ms_to_timeval(TRANSPORT_LINGER_MS);
        if (peers_stream_close(tc->s) < 0 ||
            !(tc->linger = evtimer_new(tc->tr->cfg.base, on_linger, tc)) ||
            evtimer_add(tc->linger, &tv) != 0)
            tc_abort(tc);
        return;
    }
    if (tc->olen)
        tc_push(tc);
}

static void tc_shut_wr(struct tconn *tc)
{
    if (tc->fin_in && !tc->wr_shut && tc->ilen == 0 && tc->fd >= 0) {
        shutdown(tc->fd, SHUT_WR); /* raft reads EOF */
        tc->wr_shut = true;
    }
}

/* Writes into raft's end; credit goes back to the peer only for what was written. */
static bool tc_write(struct tconn *tc, const uint8_t *d, size_t n, size_t *ret_written)
{
    ssize_t w = send(tc->fd, d, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        w = 0;
    if (w < 0) {
        tc_abort(tc); /* EPIPE: raft closed its end */
        return false;
    }
    if (w > 0) {
        peers_stream_consume(tc->s, (size_t)w);
        tc->tr->st.bytes_to_raft += (uint64_t)w;
    }
    *ret_written = (size_t)w;
    return true;
}

static void on_wr(evutil_socket_t fd, short what, void *arg)
{
    struct tconn *tc = arg;
    (void)fd;
    (void)what;
    while (tc->ilen) {
        size_t w;
        if (!tc_write(tc, tc->ibuf + tc->ioff, tc->ilen, &w))
            return;
        if (w == 0)
            return;
        tc->ioff += w;
        tc->ilen -= w;
    }
    tc->ioff = 0;
    event_del(tc->wr);
    tc_shut_wr(tc);
}

static void free_pipe(uv_handle_t *h)
{
    raft_free(h);
}

/* Makes the socketpair: raft's end as a uv_pipe_t (raft_malloc'd: raft frees it), ours watched
 * by libevent. */
static int tc_make_pipe(struct tconn *tc, uv_pipe_t **ret_pipe)
{
    struct tr *tr = tc->tr;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        return -errno;
    uv_pipe_t *pipe = raft_malloc(sizeof *pipe);
    if (!pipe || uv_pipe_init(tr->cfg.loop, pipe, 0) != 0) {
        raft_free(pipe);
        close(sv[0]);
        close(sv[1]);
        return MESH_ENOMEM;
    }
    if (uv_pipe_open(pipe, sv[0]) != 0) {
        uv_close((uv_handle_t *)pipe, free_pipe);
        close(sv[0]);
        close(sv[1]);
        return MESH_EIO;
    }
    tc->fd = sv[1];
    tc->rd = event_new(tr->cfg.base, tc->fd, EV_READ | EV_PERSIST, on_rd, tc);
    tc->wr = event_new(tr->cfg.base, tc->fd, EV_WRITE | EV_PERSIST, on_wr, tc);
    if (!tc->rd || !tc->wr || event_add(tc->rd, NULL) != 0) {
        uv_close((uv_handle_t *)pipe, free_pipe); /* closes sv[0] */
        tc_close_fd(tc);
        return MESH_ENOMEM;
    }
    *ret_pipe = pipe;
    return 0;
}

/* ---- stream callbacks (ud = tconn) ------------------------------------------------------- */

static void s_connected(void *ud, struct peers_stream *s)
{
    struct tconn *tc = ud;
    struct tr *tr = tc->tr;
    uv_pipe_t *pipe;
    (void)s;
    int rc = tc_make_pipe(tc, &pipe);
    if (rc < 0) {
        snprintf(tr->t->errmsg, sizeof tr->t->errmsg, "raft stream: no pipe: %s",
                 mesh_strerror(rc));
        tc_abort(tc); /* on_end answers raft */
        return;
    }
    struct raft_uv_connect *req = tc->req;
    tc->req = NULL;
    tr->st.connects++;
    req->cb(req, (struct uv_stream_s *)pipe, 0);
}

static void s_data(void *ud, struct peers_stream *s, const uint8_t *d, size_t n)
{
    struct tconn *tc = ud;
    (void)s;
    if (tc->fd < 0)
        return; /* torn down; the reset is on its way */
    if (tc->outgoing || transport_framecheck_feed(&tc->fc, d, n) < 0) {
        tc->tr->st.bad_frames++;
        tc_abort(tc);
        return;
    }
    if (tc->ilen == 0) {
        size_t w;
        if (!tc_write(tc, d, n, &w))
            return;
        d += w;
        n -= w;
        if (n == 0)
            return;
    }
    /* Raft's end is full: keep the rest (bounded by the channel window: it is not consumed). */
    if (tc->ioff + tc->ilen + n > tc->icap) {
        if (tc->ioff) {
            memmove(tc->ibuf, tc->ibuf + tc->ioff, tc->ilen);
            tc->ioff = 0;
        }
        if (tc->ilen + n > tc->icap) {
            size_t cap = tc->icap ? tc->icap : 16384;
            while (cap < tc->ilen + n)
                cap *= 2;
            uint8_t *b = realloc(tc->ibuf, cap);
            if (!b) {
                tc_abort(tc);
                return;
            }
            tc->ibuf = b;
            tc->icap = cap;
        }
    }
    memcpy(tc->ibuf + tc->ioff + tc->ilen, d, n);
    tc->ilen += n;
    event_add(tc->wr, NULL);
}

static void s_writable(void *ud, struct peers_stream *s)
{
    struct tconn *tc = ud;
    (void)s;
    if (tc->fd < 0 || !tc_push(tc))
        return;
    if (!tc->rd_eof)
        event_add(tc->rd, NULL);
}

static void s_fin(void *ud, struct peers_stream *s)
{
    struct tconn *tc = ud;
    (void)s;
    tc->fin_in = true;
    /* The listener's raft never writes; its FIN means it stopped reading. Unless our raft
     * closed first (this FIN answers ours), fail the pipe now so that raft reconnects on its
     * next write instead of writing into a stream nobody reads. */
    if (tc->outgoing && !tc->rd_eof) {
        tc_abort(tc);
        return;
    }
    tc_shut_wr(tc);
}

static void s_end(void *ud, struct peers_stream *s, const struct mesh_err *err)
{
    struct tconn *tc = ud;
    struct tr *tr = tc->tr;
    (void)s;
    tc->s = NULL;
    if (tc->req) {
        struct raft_uv_connect *req = tc->req;
        tc->req = NULL;
        tr->st.connects_failed++;
        snprintf(tr->t->errmsg, sizeof tr->t->errmsg, "raft stream: %.200s", err->msg);
        tc_free(tc);
        req->cb(req, NULL, tr->closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
    } else {
        tc_free(tc);
    }
    tr_maybe_closed(tr);
}

static const struct peers_stream_cb tc_cb = {
    .on_connected = s_connected,
    .on_data = s_data,
    .on_writable = s_writable,
    .on_fin = s_fin,
    .on_end = s_end,
};

static void s_detached_end(void *ud, struct peers_stream *s, const struct mesh_err *err)
{
    (void)ud;
    (void)s;
    (void)err;
}

static const struct peers_stream_cb detached_cb = {.on_end = s_detached_end};

/* Takes an incoming stream as a raft connection from id at address (already checked). */
static uint32_t accept_conn(struct tr *tr, struct peers_stream *s, uint64_t id, const char *address)
{
    uv_pipe_t *pipe;
    struct tconn *tc = tc_new(tr, false);
    if (!tc)
        return LINK_RESET_REFUSED;
    if (tc_make_pipe(tc, &pipe) < 0) {
        tc_free(tc);
        return LINK_RESET_REFUSED;
    }
    tc->s = s;
    peers_stream_set_cb(s, &tc_cb, tc);
    tr->st.accepted++;
    tr->accept_cb(tr->t, id, address, (struct uv_stream_s *)pipe);
    return 0;
}

static uint32_t on_accept(void *ud, struct peers_stream *s, const struct peers_stream_info *info)
{
    struct tr *tr = ud;
    uint64_t id;
    char address[ADDRESS_MAX + 1];
    struct mesh_addr claimed;

    if (tr->closing || !tr->accept_cb)
        return LINK_RESET_REFUSED;
    /* The peer speaks for its own advertised address only. */
    if (transport_handshake_decode(info->payload, info->len, &id, address, sizeof address) < 0 ||
        id == 0 || mesh_addr_parse(address, 0, &claimed) < 0 ||
        !mesh_addr_equal(&claimed, &info->from)) {
        tr->st.refused++;
        return RESET_HANDSHAKE;
    }
    return accept_conn(tr, s, id, address);
}

/* A relay stream: ours (accepted as a raft connection from any mesh member, see the trust
 * model in transport.h), or passed on to the next hop with one hop less. */
static uint32_t on_accept_relay(void *ud, struct peers_stream *s,
                                const struct peers_stream_info *info)
{
    struct tr *tr = ud;
    struct transport_relay r;
    struct mesh_addr claimed, hop;
    uint8_t payload[LINK_OPEN_PAYLOAD_MAX];

    if (tr->closing || !tr->accept_cb)
        return LINK_RESET_REFUSED;
    if (transport_relay_decode(info->payload, info->len, &r) < 0 || r.id == 0 ||
        mesh_addr_parse(r.address, 0, &claimed) < 0)
        goto refuse;
    if (mesh_addr_equal(&r.dest, &tr->self)) {
        uint32_t rc = accept_conn(tr, s, r.id, r.address);
        if (rc == 0)
            tr->st.accepted_relayed++;
        return rc;
    }
    /* Not a loop back to where it came from or to ourselves, and within the hop limit. */
    if (r.hops_left == 0 || tr->cfg.next_hop(tr->cfg.next_hop_ud, &r.dest, &hop) < 0 ||
        mesh_addr_equal(&hop, &info->from) || mesh_addr_equal(&hop, &tr->self))
        goto refuse;
    size_t len = transport_relay_encode((uint8_t)(r.hops_left - 1), &r.dest, r.hs, r.hs_len,
                                        payload, sizeof payload);
    if (len == 0 || tunnel_accept_relay(tr->relays, s, &hop, tr->cfg.relay_chan_type, payload, len,
                                        tr->cfg.connect_timeout_ms, r.id, NULL) < 0)
        goto refuse;
    tr->st.relayed++;
    return 0;
refuse:
    tr->st.relay_refused++;
    return RESET_HANDSHAKE;
}

/* ---- raft_uv_transport ------------------------------------------------------------------- */

static int t_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct tr *tr = t->impl;
    struct mesh_addr a;
    if (id == 0 || strlen(address) > ADDRESS_MAX || mesh_addr_parse(address, 0, &a) < 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "raft address %.64s: not a mesh address", address);
        return RAFT_INVALID;
    }
    tr->id = id;
    tr->self = a;
    snprintf(tr->address, sizeof tr->address, "%s", address);
    return 0;
}

static int t_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct tr *tr = t->impl;
    int rc = peers_listen_streams(tr->cfg.peers, tr->cfg.chan_type, on_accept, tr);
    if (rc < 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "listen for raft streams: %s", mesh_strerror(rc));
        return RAFT_IOERR;
    }
    if (tr->cfg.next_hop) {
        rc = peers_listen_streams(tr->cfg.peers, tr->cfg.relay_chan_type, on_accept_relay, tr);
        if (rc < 0) {
            peers_listen_streams(tr->cfg.peers, tr->cfg.chan_type, NULL, NULL);
            snprintf(t->errmsg, sizeof t->errmsg, "listen for relayed raft streams: %s",
                     mesh_strerror(rc));
            return RAFT_IOERR;
        }
        tr->relay_listening = true;
    }
    tr->accept_cb = cb;
    tr->listening = true;
    return 0;
}

/* Where a connection to `to` goes first: the next hop when the route is known and not direct,
 * else `to` itself. */
static struct mesh_addr first_hop(struct tr *tr, const struct mesh_addr *to)
{
    struct mesh_addr hop;
    if (tr->cfg.next_hop && tr->cfg.next_hop(tr->cfg.next_hop_ud, to, &hop) == 0 &&
        !mesh_addr_equal(&hop, &tr->self))
        return hop;
    return *to;
}

/* A connection whose route changed is reset: raft reconnects (on its next message), and the
 * new connection takes the new route. Without this, a connection on a link that went silent
 * (a blocked path drops packets, it does not refuse them) would hang until the link's
 * keepalive gives up, tens of seconds during which raft's messages to that node go nowhere. */
static void on_reroute(evutil_socket_t fd, short what, void *arg)
{
    struct tr *tr = arg;
    (void)fd;
    (void)what;
    if (tr->closing)
        return;
    for (struct tconn *tc = tr->conns; tc; tc = tc->next) {
        if (!tc->outgoing || !tc->s || tc->fd < 0)
            continue;
        struct mesh_addr hop = first_hop(tr, &tc->dest);
        if (!mesh_addr_equal(&hop, &tc->hop)) {
            tr->st.rerouted++;
            tc_abort(tc); /* on_end frees it later: the list stays valid */
        }
    }
}

static int t_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                     const char *address, raft_uv_connect_cb cb)
{
    struct tr *tr = t->impl;
    struct mesh_addr to;
    uint8_t hs[LINK_OPEN_PAYLOAD_MAX];
    (void)id;
    if (tr->closing)
        return RAFT_CANCELED;
    if (mesh_addr_parse(address, 0, &to) < 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "raft address %.64s: not a mesh address", address);
        return RAFT_NOCONNECTION;
    }
    size_t hl = transport_handshake_encode(tr->id, tr->address, hs, sizeof hs);
    if (hl == 0)
        return RAFT_NOMEM;
    /* Through the next hop when the route to the destination is not direct. */
    struct mesh_addr hop = first_hop(tr, &to);
    uint16_t type = tr->cfg.chan_type;
    const uint8_t *payload = hs;
    size_t plen = hl;
    uint8_t relay[LINK_OPEN_PAYLOAD_MAX];
    if (!mesh_addr_equal(&hop, &to)) {
        plen = transport_relay_encode(tr->cfg.relay_hops, &to, hs, hl, relay, sizeof relay);
        if (plen == 0) {
            snprintf(t->errmsg, sizeof t->errmsg, "raft stream to %.64s: address too long to relay",
                     address);
            return RAFT_NOCONNECTION;
        }
        payload = relay;
        type = tr->cfg.relay_chan_type;
    }
    struct tconn *tc = tc_new(tr, true);
    if (!tc)
        return RAFT_NOMEM;
    tc->dest = to;
    tc->hop = hop;
    int rc = peers_stream_open(tr->cfg.peers, &hop, type, payload, plen, tr->cfg.connect_timeout_ms,
                               &tc_cb, tc, &tc->s);
    if (rc < 0) {
        tc_free(tc);
        snprintf(t->errmsg, sizeof t->errmsg, "raft stream to %.64s: %s", address,
                 mesh_strerror(rc));
        return RAFT_NOCONNECTION;
    }
    if (type != tr->cfg.chan_type)
        tr->st.connects_relayed++;
    req->cb = cb;
    tc->req = req;
    return 0;
}

static void on_close_ev(evutil_socket_t fd, short what, void *arg)
{
    struct tr *tr = arg;
    (void)fd;
    (void)what;
    raft_uv_transport_close_cb cb = tr->close_cb;
    tr->close_cb = NULL;
    if (cb)
        cb(tr->t); /* may free the transport: nothing after this */
}

static void t_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct tr *tr = t->impl;
    tr->closing = true;
    tr->close_cb = cb;
    if (tr->listening)
        peers_listen_streams(tr->cfg.peers, tr->cfg.chan_type, NULL, NULL);
    if (tr->relay_listening)
        peers_listen_streams(tr->cfg.peers, tr->cfg.relay_chan_type, NULL, NULL);
    tr->listening = tr->relay_listening = false;
    tr->accept_cb = NULL;
    /* The connections this node relays for others end too (raft reconnects them elsewhere):
     * now, while the peers still exist; transport_free may come after peers_free. */
    tunnels_free(tr->relays);
    tr->relays = NULL;
    /* Each on_end frees its connection (and answers a pending connect with RAFT_CANCELED);
     * the last one schedules close_cb. */
    for (struct tconn *tc = tr->conns; tc; tc = tc->next)
        tc_abort(tc);
    tr_maybe_closed(tr);
}

int transport_init(struct raft_uv_transport *t, const struct transport_config *cfg,
                   struct mesh_err *err)
{
    if (!cfg->base || !cfg->loop || !cfg->peers)
        return mesh_errf(err, MESH_EINVAL, "raft transport: base, loop and peers are required");
    struct tr *tr = calloc(1, sizeof *tr);
    if (!tr)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    tr->close_ev = evtimer_new(cfg->base, on_close_ev, tr);
    if (!tr->close_ev) {
        free(tr);
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    }
    tr->t = t;
    tr->cfg = *cfg;
    if (!tr->cfg.chan_type)
        tr->cfg.chan_type = TRANSPORT_CHAN_RAFT;
    if (!tr->cfg.connect_timeout_ms)
        tr->cfg.connect_timeout_ms = TRANSPORT_DEFAULT_CONNECT_TIMEOUT_MS;
    if (!tr->cfg.max_message)
        tr->cfg.max_message = TRANSPORT_DEFAULT_MAX_MESSAGE;
    if (!tr->cfg.relay_chan_type)
        tr->cfg.relay_chan_type = TRANSPORT_CHAN_RAFT_RELAY;
    if (!tr->cfg.max_relays)
        tr->cfg.max_relays = TRANSPORT_RELAY_DEFAULT_MAX;
    if (!tr->cfg.relay_hops)
        tr->cfg.relay_hops = TRANSPORT_RELAY_DEFAULT_HOPS;
    if (tr->cfg.next_hop) {
        struct tunnels_config tcfg = {.max_tunnels = tr->cfg.max_relays};
        struct timeval tv = mesh_ms_to_timeval(REROUTE_MS);
        int rc = tunnels_new(cfg->base, cfg->peers, &tcfg, NULL, &tr->relays);
        if (rc == 0 && (!(tr->reroute_ev = event_new(cfg->base, -1, EV_PERSIST, on_reroute, tr)) ||
                        event_add(tr->reroute_ev, &tv) != 0))
            rc = MESH_ENOMEM;
        if (rc < 0) {
            if (tr->reroute_ev)
                event_free(tr->reroute_ev);
            tunnels_free(tr->relays);
            event_free(tr->close_ev);
            free(tr);
            return mesh_errf(err, rc, "raft transport: relays: %s", mesh_strerror(rc));
        }
    }
    void *data = t->data;
    memset(t, 0, sizeof *t);
    t->data = data;
    t->impl = tr;
    t->init = t_init;
    t->listen = t_listen;
    t->connect = t_connect;
    t->close = t_close;
    return 0;
}

void transport_free(struct raft_uv_transport *t)
{
    struct tr *tr = t ? t->impl : NULL;
    if (!tr)
        return;
    if (tr->listening)
        peers_listen_streams(tr->cfg.peers, tr->cfg.chan_type, NULL, NULL);
    if (tr->relay_listening)
        peers_listen_streams(tr->cfg.peers, tr->cfg.relay_chan_type, NULL, NULL);
    tunnels_free(tr->relays); /* resets the relayed connections still open */
    if (tr->reroute_ev)
        event_free(tr->reroute_ev);
    /* Left over only when raft never closed us: detach the streams from memory we free. */
    while (tr->conns) {
        struct tconn *tc = tr->conns;
        if (tc->s) {
            peers_stream_set_cb(tc->s, &detached_cb, NULL);
            peers_stream_reset(tc->s);
        }
        tc_free(tc);
    }
    event_free(tr->close_ev);
    free(tr);
    t->impl = NULL;
}

const struct transport_stats *transport_stats(const struct raft_uv_transport *t)
{
    return &((const struct tr *)t->impl)->st;
}
