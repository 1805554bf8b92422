/* Services (issue 6), the data side: listeners, and tunnels hop by hop to an endpoint.
 *
 * Every second the node opens a TCP listener for each listener the catalog (node_svc.c) places
 * on it, and closes the ones no longer wanted. A connection accepted on one becomes a tunnel:
 * the node picks an endpoint of the service (the nearest reachable node that provides it, in
 * turn among equally near ones: route_pick), and either connects to it itself (an endpoint on
 * this node) or opens a STREAM_TUNNEL stream to the next hop on the route to the endpoint's
 * node (netlink/tunnel.h). A node that accepts such a stream relays it to its own next hop, or,
 * when it is the destination, connects to its endpoint of the service. Every hop decrypts from
 * one link and encrypts onto the next; flow control runs end to end (tunnel.h).
 *
 * What cannot be served is refused and logged at most once a minute per reason: a service
 * without endpoints, endpoints on unreachable nodes, a stream for a service this node does not
 * provide, a hop limit exhausted. The client then sees its connection reset. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "backoff.h"
#include "dlist.h"
#include "node.h"
#include "route.h"
#include "tunnel.h"

#define LISTENERS_MAX     256 /* on one node */
#define LISTEN_TICK_MS    1000
#define TUNNEL_OPEN_MS    5000
#define LOCAL_SPLICE_HIGH (256 * 1024) /* bytes held per direction by a local splice */
/* Local splices open at once: each holds two descriptors and up to 2 * LOCAL_SPLICE_HIGH, so
 * 256 of them are 512 fds and 128 MiB at most; tunnels to other nodes have their own bound
 * (TUNNEL_DEFAULT_MAX). A client beyond it is refused (reset, logged), as any other refusal. */
#define LOCAL_SPLICE_MAX 256
#define REFUSE_LOG_MS    60000

struct svc_listen {
    struct node *n;
    char service[FSM_APP_NAME_MAX + 1];
    struct mesh_addr addr;
    struct evconnlistener *l;
    struct event *resume; /* ends an accept pause (EMFILE, ENFILE: common/backoff.h) */
    bool wanted;          /* seen in this tick's catalog */
    uint64_t cursor;      /* route_pick's round robin */
};

/* A client connection served by an endpoint on this node: two sockets spliced here. */
struct local_splice {
    struct node_tunnels *nt;
    struct bufferevent *a, *b;
    bool a_eof, b_eof;
    struct local_splice *prev, *next;
};

struct node_tunnels {
    struct node *n;
    struct tunnels *ts;
    struct svc_listen *ls[LISTENERS_MAX];
    size_t nls;
    struct event *tick;
    struct local_splice *splices;
    size_t nsplices;
    uint64_t next_id;
    struct log_ratelimit_keys refuse_rl; /* per service */
    char last_bind_error[MESH_ERRMSG_LEN];
};

/* Logs why a connection or stream for service was refused, at most once a minute per
 * service ("" for refusals that name none). */
static void refused(struct node_tunnels *nt, const char *service, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refused(struct node_tunnels *nt, const char *service, const char *fmt, ...)
{
    uint32_t quiet = 0;
    nt->n->tunnel_refused++;
    if (!log_ratelimit_key(&nt->refuse_rl, service, mesh_now_ms(), REFUSE_LOG_MS, &quiet))
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (quiet)
        log_warn(&nt->n->log, "tunnel refused: %s (and %u more in the last minute)", msg, quiet);
    else
        log_warn(&nt->n->log, "tunnel refused: %s", msg);
}

/* Closes fd so that the peer sees a reset. */
static void close_rst(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ---- local splices ----------------------------------------------------------------------- */

static void splice_free(struct local_splice *sp, bool reset)
{
    struct node_tunnels *nt = sp->nt;
    DLIST_REMOVE(nt->splices, sp);
    nt->nsplices--;
    struct bufferevent *bevs[] = {sp->a, sp->b};
    for (size_t i = 0; i < 2; i++) {
        if (!bevs[i])
            continue;
        if (reset) {
            struct linger lg = {1, 0};
            setsockopt(bufferevent_getfd(bevs[i]), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        bufferevent_free(bevs[i]); /* BEV_OPT_CLOSE_ON_FREE */
    }
    free(sp);
}

static struct bufferevent *other_of(struct local_splice *sp, struct bufferevent *bev)
{
    return bev == sp->a ? sp->b : sp->a;
}

static void splice_read(struct bufferevent *bev, void *arg)
{
    struct local_splice *sp = arg;
    struct bufferevent *to = other_of(sp, bev);
    bufferevent_write_buffer(to, bufferevent_get_input(bev));
    if (evbuffer_get_length(bufferevent_get_output(to)) >= LOCAL_SPLICE_HIGH)
        bufferevent_disable(bev, EV_READ); /* resumed when `to` drains */
}

static void splice_write(struct bufferevent *bev, void *arg)
{
    struct local_splice *sp = arg;
    struct bufferevent *from = other_of(sp, bev);
    bool from_eof = from == sp->a ? sp->a_eof : sp->b_eof;
    if (from_eof) {
        /* All of the other side's data is out: pass its EOF on. */
        shutdown(bufferevent_getfd(bev), SHUT_WR);
        if (sp->a_eof && sp->b_eof)
            splice_free(sp, false);
        return;
    }
    bufferevent_enable(from, EV_READ);
}

static void splice_event(struct bufferevent *bev, short what, void *arg)
{
    struct local_splice *sp = arg;
    if (what & BEV_EVENT_CONNECTED) {
        bufferevent_enable(sp->a, EV_READ);
        bufferevent_enable(sp->b, EV_READ);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        struct bufferevent *to = other_of(sp, bev);
        if (bev == sp->a)
            sp->a_eof = true;
        else
            sp->b_eof = true;
        bufferevent_write_buffer(to, bufferevent_get_input(bev));
        if (evbuffer_get_length(bufferevent_get_output(to)) == 0) {
            shutdown(bufferevent_getfd(to), SHUT_WR);
            if (sp->a_eof && sp->b_eof)
                splice_free(sp, false);
        }
        /* else splice_write passes the EOF on once drained */
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        if (bev == sp->b && !(sp->a_eof || sp->b_eof) &&
            evbuffer_get_length(bufferevent_get_input(sp->a)) == 0)
            refused(sp->nt, "", "the endpoint on this node does not answer: %s",
                    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        splice_free(sp, true);
    }
}

/* Connects the client fd to a local endpoint. */
static int splice_local(struct node_tunnels *nt, int fd, const struct mesh_addr *target)
{
    struct event_base *base = nt->n->loop.base;
    if (nt->nsplices >= LOCAL_SPLICE_MAX)
        return MESH_EAGAIN;
    struct local_splice *sp = calloc(1, sizeof *sp);
    if (!sp)
        return MESH_ENOMEM;
    sp->nt = nt;
    sp->a = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    sp->b = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct sockaddr_storage ss;
    socklen_t sl = mesh_addr_to_sockaddr(target, &ss);
    if (!sp->a || !sp->b) {
        if (sp->a)
            bufferevent_free(sp->a);
        if (sp->b)
            bufferevent_free(sp->b);
        free(sp);
        return MESH_ENOMEM;
    }
    DLIST_PUSH(nt->splices, sp);
    nt->nsplices++;
    bufferevent_setcb(sp->a, splice_read, splice_write, splice_event, sp);
    bufferevent_setcb(sp->b, splice_read, splice_write, splice_event, sp);
    struct timeval tv = mesh_ms_to_timeval(TUNNEL_CONNECT_TIMEOUT);
    bufferevent_set_timeouts(sp->b, NULL, &tv); /* the connect */
    if (bufferevent_socket_connect(sp->b, (struct sockaddr *)&ss, (int)sl) < 0) {
        sp->a = NULL; /* fd stays the caller's */
        splice_free(sp, false);
        return MESH_EIO;
    }
    return 0;
}

/* ---- choosing an endpoint ---------------------------------------------------------------- */

/* The endpoint of service on this node, if any. */
static const struct svc_entry *local_endpoint(struct node *n, const char *service)
{
    const struct svc_catalog *c = node_svc_catalog(n);
    for (size_t i = 0; c && i < c->eps.n; i++)
        if (strcmp(c->eps.v[i].service, service) == 0 && strcmp(c->eps.v[i].node, n->cfg.name) == 0)
            return &c->eps.v[i];
    return NULL;
}

/* Picks the node that will serve a connection to service: *ret_node (borrowed from the catalog).
 * MESH_ENOTFOUND with why filled when none can. */
static int pick_node(struct node_tunnels *nt, struct svc_listen *sl, const char **ret_node,
                     char *why, size_t whylen)
{
    struct node *n = nt->n;
    const struct svc_catalog *c = node_svc_catalog(n);
    const char *cands[64];
    size_t nc = 0, total = 0;
    for (size_t i = 0; c && i < c->eps.n && nc < 64; i++) {
        if (strcmp(c->eps.v[i].service, sl->service) != 0)
            continue;
        total++;
        bool dup = false;
        for (size_t k = 0; k < nc && !dup; k++)
            dup = strcmp(cands[k], c->eps.v[i].node) == 0;
        if (!dup)
            cands[nc++] = c->eps.v[i].node;
    }
    if (nc == 0) {
        snprintf(why, whylen, "service %s has no endpoints", sl->service);
        return MESH_ENOTFOUND;
    }
    const struct route_table *t = node_routes_table(n);
    int k = t ? route_pick(t, cands, nc, 20, 200, &sl->cursor) : MESH_ENOTFOUND;
    if (k < 0) {
        snprintf(why, whylen, "service %s: none of its %zu endpoints is on a reachable node",
                 sl->service, total);
        return MESH_ENOTFOUND;
    }
    *ret_node = cands[k];
    return 0;
}

/* The address of the next hop towards dest, or MESH_ENOTFOUND. */
static int next_hop_addr(struct node *n, const char *dest, struct mesh_addr *ret)
{
    const struct route_table *t = node_routes_table(n);
    const struct route_entry *e = t ? route_table_lookup(t, dest) : NULL;
    if (!e || !e->next_hop)
        return MESH_ENOTFOUND;
    const struct swim_member *m = swim_member_find(gossip_swim(n->gossip), e->next_hop);
    if (!m)
        return MESH_ENOTFOUND;
    *ret = m->addr;
    return 0;
}

/* ---- listeners --------------------------------------------------------------------------- */

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct svc_listen *sl = arg;
    struct node *n = sl->n;
    struct node_tunnels *nt = n->tunnels;
    (void)l;
    (void)sa;
    (void)len;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const char *dest = NULL;
    char why[256];
    if (pick_node(nt, sl, &dest, why, sizeof why) < 0) {
        refused(nt, sl->service, "%s", why);
        close_rst(fd);
        return;
    }
    if (strcmp(dest, n->cfg.name) == 0) {
        const struct svc_entry *e = local_endpoint(n, sl->service);
        int rc = e ? splice_local(nt, fd, &e->addr) : MESH_ENOTFOUND;
        if (rc == MESH_EAGAIN)
            refused(nt, sl->service, "service %s: %d local connections are open, the most",
                    sl->service, LOCAL_SPLICE_MAX);
        else if (rc < 0)
            refused(nt, sl->service, "service %s: cannot connect to its endpoint here",
                    sl->service);
        if (rc < 0)
            close_rst(fd);
        return;
    }
    struct mesh_addr to;
    if (next_hop_addr(n, dest, &to) < 0) {
        refused(nt, sl->service, "service %s: no route to node %s", sl->service, dest);
        close_rst(fd);
        return;
    }
    struct tunnel_open o = {.hops_left = TUNNEL_DEFAULT_HOPS, .id = ++nt->next_id};
    snprintf(o.service, sizeof o.service, "%s", sl->service);
    snprintf(o.dest, sizeof o.dest, "%s", dest);
    snprintf(o.origin, sizeof o.origin, "%s", n->cfg.name);
    uint8_t payload[TUNNEL_OPEN_MAX];
    int plen = tunnel_open_encode(&o, payload, sizeof payload);
    if (plen < 0 || tunnel_open_fd(nt->ts, fd, &to, STREAM_TUNNEL, payload, (size_t)plen,
                                   TUNNEL_OPEN_MS, o.id, NULL) < 0) {
        refused(nt, sl->service, "service %s: cannot open a tunnel to %s", sl->service, dest);
        close_rst(fd);
    }
}

/* Out of descriptors: without an error callback libevent logs and accepts again at once, a busy
 * loop. The listener stops for ACCEPT_BACKOFF_MIN_MS instead; clients wait in the backlog. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct svc_listen *sl = arg;
    if (!accept_backoff_wanted(EVUTIL_SOCKET_ERROR()))
        return;
    struct timeval tv = mesh_ms_to_timeval(ACCEPT_BACKOFF_MIN_MS);
    evconnlistener_disable(l);
    evtimer_add(sl->resume, &tv);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct svc_listen *sl = arg;
    (void)fd;
    (void)what;
    evconnlistener_enable(sl->l);
}

static void listen_close(struct svc_listen *sl)
{
    if (sl->l)
        evconnlistener_free(sl->l);
    if (sl->resume)
        event_free(sl->resume);
    free(sl);
}

static struct svc_listen *listen_open(struct node_tunnels *nt, const struct svc_entry *want)
{
    struct node *n = nt->n;
    struct svc_listen *sl = calloc(1, sizeof *sl);
    if (!sl)
        return NULL;
    sl->n = n;
    snprintf(sl->service, sizeof sl->service, "%s", want->service);
    sl->addr = want->addr;
    struct sockaddr_storage ss;
    socklen_t len = mesh_addr_to_sockaddr(&want->addr, &ss);
    sl->l =
        evconnlistener_new_bind(n->loop.base, on_accept, sl,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                128, (struct sockaddr *)&ss, (int)len);
    sl->resume = evtimer_new(n->loop.base, on_accept_resume, sl);
    if (!sl->l || !sl->resume) {
        char addr[MESH_ADDR_STRLEN], msg[MESH_ERRMSG_LEN];
        snprintf(msg, sizeof msg, "cannot listen on %s for service %s: %s",
                 mesh_addr_format(&want->addr, addr, sizeof addr), want->service, strerror(errno));
        if (strcmp(msg, nt->last_bind_error) != 0) {
            log_warn(&n->log, "%s", msg);
            snprintf(nt->last_bind_error, sizeof nt->last_bind_error, "%s", msg);
        }
        listen_close(sl);
        return NULL;
    }
    evconnlistener_set_error_cb(sl->l, on_accept_error);
    char addr[MESH_ADDR_STRLEN];
    log_info(&n->log, "service %s: listening on %s", sl->service,
             mesh_addr_format(&sl->addr, addr, sizeof addr));
    return sl;
}

/* Makes the open listeners match the catalog's for this node. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct node_tunnels *nt = arg;
    struct node *n = nt->n;
    (void)fd;
    (void)what;
    const struct svc_catalog *c = node_svc_catalog(n);
    if (!c)
        return;
    for (size_t i = 0; i < nt->nls; i++)
        nt->ls[i]->wanted = false;
    for (size_t i = 0; i < c->ls.n; i++) {
        const struct svc_entry *w = &c->ls.v[i];
        if (strcmp(w->node, n->cfg.name) != 0)
            continue;
        size_t k = 0;
        while (k < nt->nls && !mesh_addr_equal(&nt->ls[k]->addr, &w->addr))
            k++;
        if (k < nt->nls && strcmp(nt->ls[k]->service, w->service) == 0) {
            nt->ls[k]->wanted = true;
            continue;
        }
        if (k < nt->nls) {
            /* The address now serves another service: reopen. */
            listen_close(nt->ls[k]);
            nt->ls[k] = nt->ls[--nt->nls];
        }
        if (nt->nls == LISTENERS_MAX)
            continue;
        struct svc_listen *sl = listen_open(nt, w);
        if (sl) {
            sl->wanted = true;
            nt->ls[nt->nls++] = sl;
        }
    }
    for (size_t i = 0; i < nt->nls;) {
        if (nt->ls[i]->wanted) {
            i++;
            continue;
        }
        char addr[MESH_ADDR_STRLEN];
        log_info(&n->log, "service %s: no longer listening on %s", nt->ls[i]->service,
                 mesh_addr_format(&nt->ls[i]->addr, addr, sizeof addr));
        listen_close(nt->ls[i]);
        nt->ls[i] = nt->ls[--nt->nls];
    }
}

/* ---- streams from other nodes ------------------------------------------------------------ */

static uint32_t accept_tunnel(void *ud, struct peers_stream *s,
                              const struct peers_stream_info *info)
{
    struct node_tunnels *nt = ud;
    struct node *n = nt->n;
    struct tunnel_open o;
    if (tunnel_open_decode(info->payload, info->len, &o) < 0) {
        refused(nt, "", "a malformed tunnel request");
        return LINK_RESET_REFUSED;
    }
    if (strcmp(o.dest, n->cfg.name) == 0) {
        const struct svc_entry *e = local_endpoint(n, o.service);
        if (!e) {
            refused(nt, o.service, "tunnel %llu from %s: this node provides no service %s",
                    (unsigned long long)o.id, o.origin, o.service);
            return LINK_RESET_REFUSED;
        }
        if (tunnel_accept_connect(nt->ts, s, &e->addr, o.id, NULL) < 0) {
            refused(nt, o.service, "tunnel %llu from %s: too many tunnels",
                    (unsigned long long)o.id, o.origin);
            return LINK_RESET_REFUSED;
        }
        return 0;
    }
    struct tunnel_open next;
    struct mesh_addr to;
    uint8_t payload[TUNNEL_OPEN_MAX];
    int plen;
    if (tunnel_open_next(&o, &next) < 0) {
        refused(nt, o.service, "tunnel %llu from %s to %s: hop limit reached",
                (unsigned long long)o.id, o.origin, o.dest);
        return LINK_RESET_REFUSED;
    }
    /* Never back to the hop that sent it: while one of us has not heard of a link change yet
     * (the routes converge through gossip), the tunnel would bounce between us until its hops
     * run out (netlink/neighbours.h, nbrs_relay_hop). */
    int rc = node_routes_relay_hop(n, o.dest, &info->from, &to);
    if (rc == MESH_EAGAIN) {
        refused(nt, o.service, "tunnel %llu from %s to %s: the route leads back to the sender",
                (unsigned long long)o.id, o.origin, o.dest);
        return LINK_RESET_REFUSED;
    }
    if (rc < 0) {
        refused(nt, o.service, "tunnel %llu from %s: no route to %s", (unsigned long long)o.id,
                o.origin, o.dest);
        return LINK_RESET_REFUSED;
    }
    if ((plen = tunnel_open_encode(&next, payload, sizeof payload)) < 0 ||
        tunnel_accept_relay(nt->ts, s, &to, STREAM_TUNNEL, payload, (size_t)plen, TUNNEL_OPEN_MS,
                            o.id, NULL) < 0) {
        refused(nt, o.service, "tunnel %llu from %s to %s: cannot relay", (unsigned long long)o.id,
                o.origin, o.dest);
        return LINK_RESET_REFUSED;
    }
    return 0;
}

static void on_tunnel_end(void *ud, const struct tunnel_summary *s)
{
    struct node_tunnels *nt = ud;
    if (s->code != 0)
        log_debug(&nt->n->log, "tunnel %llu ended: %s (%llu bytes up, %llu down)",
                  (unsigned long long)s->id, s->msg, (unsigned long long)s->bytes[TUNNEL_UP],
                  (unsigned long long)s->bytes[TUNNEL_DOWN]);
}

int node_tunnels_start(struct node *n, struct mesh_err *err)
{
    struct node_tunnels *nt = calloc(1, sizeof *nt);
    if (!nt)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    nt->n = n;
    n->tunnels = nt;
    struct tunnels_hooks hooks = {.ud = nt, .on_end = on_tunnel_end};
    int rc = tunnels_new(n->loop.base, n->peers, NULL, &hooks, &nt->ts);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot set up tunnels");
    rc = peers_listen_streams(n->peers, STREAM_TUNNEL, accept_tunnel, nt);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot register the tunnel service");
    nt->tick = event_new(n->loop.base, -1, EV_PERSIST, on_tick, nt);
    struct timeval tv = mesh_ms_to_timeval(LISTEN_TICK_MS);
    if (!nt->tick || event_add(nt->tick, &tv) != 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    return 0;
}

/* Before peers_free: the tunnels hold streams. */
void node_tunnels_stop(struct node *n)
{
    struct node_tunnels *nt = n->tunnels;
    if (!nt)
        return;
    if (nt->tick)
        event_free(nt->tick);
    for (size_t i = 0; i < nt->nls; i++)
        listen_close(nt->ls[i]);
    while (nt->splices)
        splice_free(nt->splices, true);
    tunnels_free(nt->ts);
    free(nt);
    n->tunnels = NULL;
}

json_t *node_tunnels_json(struct node *n)
{
    struct node_tunnels *nt = n->tunnels;
    if (!nt)
        return json_object();
    const struct tunnels_stats *st = tunnels_stats(nt->ts);
    json_t *ls = json_array();
    for (size_t i = 0; i < nt->nls; i++) {
        char addr[MESH_ADDR_STRLEN];
        json_array_append_new(ls, json_pack("{s:s, s:s}", "service", nt->ls[i]->service, "listen",
                                            mesh_addr_format(&nt->ls[i]->addr, addr, sizeof addr)));
    }
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "open",
                     (json_int_t)tunnels_count(nt->ts), "local", (json_int_t)nt->nsplices, "opened",
                     (json_int_t)st->opened, "failed", (json_int_t)st->failed, "refused",
                     (json_int_t)n->tunnel_refused, "bytes_up", (json_int_t)st->bytes[TUNNEL_UP],
                     "bytes_down", (json_int_t)st->bytes[TUNNEL_DOWN], "listeners", ls);
}
