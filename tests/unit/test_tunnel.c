/* netlink/tunnel over real loopback TCP and real peers links: three nodes n0 - n1 - n2 on one
 * event_base, a line (n0 reaches n2 through n1). A client socket on n0 becomes a tunnel to a
 * service on n1 (1 hop) or n2 (2 hops, n1 relays); the acceptor on each node decodes the open
 * payload and connects to the service or relays, as meshd will. Echo through 1 and 2 hops, a
 * 64 MiB transfer both ways with checksums, half-close each way, resets from either side, a
 * slow reader that stalls the writer while every tunnel holds at most TUNNEL_BUF_MAX bytes per
 * direction, many tunnels at once, refusals, the open payload, and freeing live tunnels. Every
 * wait runs the loop until a condition holds, under a safety timer. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peers_harness.h"
#include "addr.h"
#include "err.h"
#include "keyring.h"
#include "peers.h"
#include "tunnel.h"

#define S_TUN      40
#define NNODES     3
#define GUARD_SECS 60
#define MAX_APPS   512
#define MAX_ENDS   1024
#define CHUNK      65536

struct env;

struct node {
    struct env *env;
    int idx;
    char name[16];
    struct peers *p;
    struct tunnels *ts;
    struct mesh_addr addr;
    struct keyring kr;
};

enum svc_mode {
    SVC_ECHO,         /* echoes; shuts after the client's EOF and the echo */
    SVC_SINK,         /* reads (unless paused) and sends `svc_send` bytes, shuts when sent */
    SVC_REPLY_ON_EOF, /* reads until EOF, then sends `svc_send` bytes and shuts */
    SVC_RST_ON_DATA,  /* closes with RST when the first bytes arrive */
};

/* A TCP endpoint the test drives: a client, or a service's accepted connection. */
struct app {
    struct env *env;
    int fd;
    struct event *rev, *wev;
    bool echo, paused, shut_when_sent, shut_done, reply_on_eof, rst_on_data;
    bool eof, reset, blocked;
    uint64_t to_send, sent, seed;
    uint8_t *pend;
    size_t pend_len;
    uint64_t got, got_seed; /* received bytes are checked against the pattern with got_seed */
    bool check_pattern, bad_pattern;
    crypto_generichash_state hin, hout;
    uint8_t keep[4096];
    size_t keep_len;
};

struct env {
    struct event_base *base;
    struct event *guard;
    bool expired;
    struct node n[NNODES];
    /* the service, on node svc_node */
    int svc_node;
    char svc_name[16];
    int svc_fd;
    struct mesh_addr svc_addr;
    struct event *svc_ev;
    enum svc_mode svc_mode;
    uint64_t svc_send;
    bool svc_paused;
    struct app *svc[MAX_APPS];
    size_t nsvc;
    /* tunnels that ended, from every node */
    struct tunnel_summary ends[MAX_ENDS];
    char end_msgs[MAX_ENDS][MESH_ERRMSG_LEN];
    int end_node[MAX_ENDS];
    size_t nends;
    uint8_t scratch[CHUNK];
};

static const uint8_t key1[MESH_KEY_LEN] = {7, 7, 7};

/* ---- the data pattern -------------------------------------------------------------------- */

static uint8_t pat(uint64_t seed, uint64_t i)
{
    return (uint8_t)(i * 131u + seed + (i >> 13) * 7u);
}

/* ---- apps -------------------------------------------------------------------------------- */

static void app_arm(struct app *a)
{
    if (a->fd < 0)
        return;
    bool r = !a->eof && !a->reset && !a->paused && a->pend_len < TUNNEL_BUF_MAX;
    bool w = a->pend_len > 0 || (a->sent < a->to_send) ||
             (a->shut_when_sent && !a->shut_done && a->sent == a->to_send && !a->reply_on_eof);
    if (r)
        event_add(a->rev, NULL);
    else
        event_del(a->rev);
    if (w)
        event_add(a->wev, NULL);
    else
        event_del(a->wev);
}

static void app_shut(struct app *a)
{
    if (a->shut_done || a->fd < 0)
        return;
    a->shut_done = true;
    shutdown(a->fd, SHUT_WR);
}

static void app_write(struct app *a)
{
    if (a->fd < 0 || a->reset)
        return;
    a->blocked = false;
    while (a->pend_len) {
        ssize_t n = send(a->fd, a->pend, a->pend_len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                a->blocked = true;
            else
                a->reset = true;
            goto out;
        }
        crypto_generichash_update(&a->hout, a->pend, (size_t)n);
        memmove(a->pend, a->pend + n, a->pend_len - (size_t)n);
        a->pend_len -= (size_t)n;
    }
    while (a->sent < a->to_send) {
        size_t len = a->to_send - a->sent > CHUNK ? CHUNK : (size_t)(a->to_send - a->sent);
        uint8_t *b = a->env->scratch;
        for (size_t i = 0; i < len; i++)
            b[i] = pat(a->seed, a->sent + i);
        ssize_t n = send(a->fd, b, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                a->blocked = true;
            else
                a->reset = true;
            goto out;
        }
        crypto_generichash_update(&a->hout, b, (size_t)n);
        a->sent += (uint64_t)n;
    }
    if (a->shut_when_sent && (!a->reply_on_eof || a->eof) && !a->pend_len)
        app_shut(a);
    if (a->echo && a->eof && !a->pend_len)
        app_shut(a);
out:
    app_arm(a);
}

static void app_read(struct app *a)
{
    uint8_t *b = a->env->scratch;
    ssize_t n = recv(a->fd, b, CHUNK, 0);
    if (n < 0) {
        if (errno != EAGAIN)
            a->reset = true;
        app_arm(a);
        return;
    }
    if (n == 0) {
        a->eof = true;
        if (a->reply_on_eof)
            a->to_send = a->env->svc_send;
        app_write(a);
        return;
    }
    if (a->rst_on_data) {
        struct linger l = {1, 0};
        setsockopt(a->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        event_del(a->rev);
        event_del(a->wev);
        close(a->fd);
        a->fd = -1;
        a->reset = true;
        return;
    }
    crypto_generichash_update(&a->hin, b, (size_t)n);
    if (a->check_pattern)
        for (ssize_t i = 0; i < n; i++)
            if (b[i] != pat(a->got_seed, a->got + (uint64_t)i))
                a->bad_pattern = true;
    size_t k = sizeof a->keep - a->keep_len;
    k = k < (size_t)n ? k : (size_t)n;
    memcpy(a->keep + a->keep_len, b, k);
    a->keep_len += k;
    a->got += (uint64_t)n;
    if (a->echo) {
        a->pend = realloc(a->pend, a->pend_len + (size_t)n);
        assert_non_null(a->pend);
        memcpy(a->pend + a->pend_len, b, (size_t)n);
        a->pend_len += (size_t)n;
        app_write(a);
        return;
    }
    app_arm(a);
}

static void on_app_ev(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    (void)fd;
    if (what & EV_READ)
        app_read(a);
    else
        app_write(a);
}

static struct app *app_new(struct env *e, int fd)
{
    struct app *a = calloc(1, sizeof *a);
    assert_non_null(a);
    a->env = e;
    a->fd = fd;
    a->rev = event_new(e->base, fd, EV_READ | EV_PERSIST, on_app_ev, a);
    a->wev = event_new(e->base, fd, EV_WRITE | EV_PERSIST, on_app_ev, a);
    assert_non_null(a->rev);
    assert_non_null(a->wev);
    crypto_generichash_init(&a->hin, NULL, 0, 32);
    crypto_generichash_init(&a->hout, NULL, 0, 32);
    return a;
}

static void app_free(struct app *a)
{
    if (!a)
        return;
    event_free(a->rev);
    event_free(a->wev);
    if (a->fd >= 0)
        close(a->fd);
    free(a->pend);
    free(a);
}

static void app_reset(struct app *a)
{
    struct linger l = {1, 0};
    setsockopt(a->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    event_del(a->rev);
    event_del(a->wev);
    close(a->fd);
    a->fd = -1;
}

static void hash_final(crypto_generichash_state *st, uint8_t out[32])
{
    crypto_generichash_final(st, out, 32);
}

/* The service's listener. */
static void on_svc_accept(evutil_socket_t fd, short what, void *arg)
{
    struct env *e = arg;
    (void)what;
    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            return;
        assert_true(e->nsvc < MAX_APPS);
        struct app *a = app_new(e, c);
        e->svc[e->nsvc++] = a;
        switch (e->svc_mode) {
        case SVC_ECHO:
            a->echo = true;
            break;
        case SVC_SINK:
            a->to_send = e->svc_send;
            a->seed = 99;
            a->shut_when_sent = true;
            a->paused = e->svc_paused;
            if (a->paused) {
                /* A small fixed receive buffer: the kernel holds little for the paused reader. */
                int sz = 65536;
                assert_int_equal(setsockopt(c, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz), 0);
            }
            a->check_pattern = true;
            a->got_seed = 3; /* what the clients send */
            break;
        case SVC_REPLY_ON_EOF:
            a->reply_on_eof = true;
            a->shut_when_sent = true;
            a->seed = 5;
            break;
        case SVC_RST_ON_DATA:
            a->rst_on_data = true;
            break;
        }
        app_write(a);
    }
}

/* A connected pair of TCP sockets on loopback: *client for the test's app, *server for the
 * tunnel (as a listener of meshd would have accepted it). */
static void tcp_pair(int *client, int *server)
{
    struct mesh_addr addr;
    struct sockaddr_storage ss;
    int l = harness_listen_socket(&addr);
    socklen_t sl = mesh_addr_to_sockaddr(&addr, &ss);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    assert_int_equal(connect(c, (struct sockaddr *)&ss, sl), 0);
    int s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    assert_true(s >= 0);
    assert_int_equal(fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK), 0);
    close(l);
    *client = c;
    *server = s;
}

/* ---- nodes ------------------------------------------------------------------------------- */

static void on_tunnel_end(void *ud, const struct tunnel_summary *s)
{
    struct node *n = ud;
    struct env *e = n->env;
    assert_true(e->nends < MAX_ENDS);
    e->ends[e->nends] = *s;
    snprintf(e->end_msgs[e->nends], MESH_ERRMSG_LEN, "%s", s->msg);
    e->ends[e->nends].msg = e->end_msgs[e->nends];
    e->end_node[e->nends] = n->idx;
    e->nends++;
}

/* What meshd will do with an incoming tunnel: the service here, or relay it one hop on. */
static uint32_t on_accept(void *ud, struct peers_stream *s, const struct peers_stream_info *info)
{
    struct node *n = ud;
    struct env *e = n->env;
    struct tunnel_open o, next;
    uint8_t buf[LINK_OPEN_PAYLOAD_MAX];
    if (tunnel_open_decode(info->payload, info->len, &o) < 0)
        return LINK_RESET_REFUSED;
    if (strcmp(o.dest, n->name) == 0) {
        if (strcmp(o.service, e->svc_name) != 0 || n->idx != e->svc_node)
            return LINK_RESET_REFUSED; /* unknown service */
        return tunnel_accept_connect(n->ts, s, &e->svc_addr, o.id, NULL) < 0 ? LINK_RESET_REFUSED
                                                                             : 0;
    }
    int dest = o.dest[1] - '0';
    int hop = dest > n->idx ? n->idx + 1 : n->idx - 1;
    if (tunnel_open_next(&o, &next) < 0)
        return LINK_RESET_REFUSED;
    int len = tunnel_open_encode(&next, buf, sizeof buf);
    assert_true(len > 0);
    return tunnel_accept_relay(n->ts, s, &e->n[hop].addr, S_TUN, buf, (size_t)len, 0, o.id, NULL) <
                   0
               ? LINK_RESET_REFUSED
               : 0;
}

static void node_start(struct env *e, int i)
{
    struct node *n = &e->n[i];
    uint8_t priv[LINK_KEY_LEN];
    struct mesh_err err = {0};
    memset(n, 0, sizeof *n);
    n->env = e;
    n->idx = i;
    snprintf(n->name, sizeof n->name, "n%d", i & 0xffff);
    keyring_init(&n->kr, key1);
    randombytes_buf(priv, sizeof priv);
    int fd = harness_listen_socket(&n->addr);
    struct peers_config cfg = {.static_priv = priv,
                               .kr = &n->kr,
                               .payload = (const uint8_t *)&n->addr,
                               .payload_len = sizeof n->addr};
    struct peers_hooks hooks = {.ud = n, .on_handshake = harness_hs_hook};
    if (peers_new(e->base, fd, &cfg, &hooks, &n->p, &err) < 0)
        fail_msg("peers_new: %s", err.msg);
    sodium_memzero(priv, sizeof priv);
    struct tunnels_hooks th = {.ud = n, .on_end = on_tunnel_end};
    assert_int_equal(tunnels_new(e->base, n->p, NULL, &th, &n->ts), 0);
    assert_int_equal(peers_listen_streams(n->p, S_TUN, on_accept, n), 0);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    struct env *e = arg;
    (void)fd;
    (void)what;
    e->expired = true;
}

typedef bool (*cond_fn)(struct env *e, const void *arg);

static bool run_until(struct env *e, cond_fn cond, const void *arg)
{
    struct timeval tv = {GUARD_SECS, 0};
    e->expired = false;
    evtimer_add(e->guard, &tv);
    while (!cond(e, arg) && !e->expired)
        event_base_loop(e->base, EVLOOP_ONCE);
    evtimer_del(e->guard);
    return !e->expired;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->base = event_base_new();
    assert_non_null(e->base);
    e->guard = evtimer_new(e->base, on_guard, e);
    for (int i = 0; i < NNODES; i++)
        node_start(e, i);
    snprintf(e->svc_name, sizeof e->svc_name, "web");
    e->svc_fd = harness_listen_socket(&e->svc_addr);
    e->svc_ev = event_new(e->base, e->svc_fd, EV_READ | EV_PERSIST, on_svc_accept, e);
    event_add(e->svc_ev, NULL);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < NNODES; i++) {
        tunnels_free(e->n[i].ts);
        peers_free(e->n[i].p);
        keyring_wipe(&e->n[i].kr);
    }
    for (size_t i = 0; i < e->nsvc; i++)
        app_free(e->svc[i]);
    event_free(e->svc_ev);
    close(e->svc_fd);
    event_free(e->guard);
    event_base_free(e->base);
    free(e);
    return 0;
}

/* ---- helpers for the tests --------------------------------------------------------------- */

/* A client on n0 for the service on node `dest`: the app's socket and its tunnel. */
static struct app *client(struct env *e, int dest, const char *service, uint8_t hops, uint64_t id)
{
    int c, s;
    tcp_pair(&c, &s);
    struct app *a = app_new(e, c);
    struct tunnel_open o = {.hops_left = hops, .id = id};
    snprintf(o.service, sizeof o.service, "%s", service);
    snprintf(o.dest, sizeof o.dest, "n%d", dest);
    snprintf(o.origin, sizeof o.origin, "n0");
    uint8_t buf[LINK_OPEN_PAYLOAD_MAX];
    int len = tunnel_open_encode(&o, buf, sizeof buf);
    assert_true(len > 0);
    assert_int_equal(
        tunnel_open_fd(e->n[0].ts, s, &e->n[1].addr, S_TUN, buf, (size_t)len, 0, id, NULL), 0);
    app_arm(a);
    return a;
}

static bool ends_reached(struct env *e, const void *arg)
{
    return e->nends >= *(const size_t *)arg;
}

static bool app_eof(struct env *e, const void *arg)
{
    (void)e;
    const struct app *a = arg;
    return a->eof || a->reset;
}

static bool app_done(struct env *e, const void *arg)
{
    (void)e;
    const struct app *a = arg;
    return (a->eof && a->shut_done) || a->reset;
}

static void expect_clean(struct env *e, size_t want)
{
    assert_true(run_until(e, ends_reached, &want));
    assert_int_equal(e->nends, want);
    for (size_t i = 0; i < e->nends; i++)
        if (e->ends[i].code != 0)
            fail_msg("tunnel %llu on n%d ended with %d: %s", (unsigned long long)e->ends[i].id,
                     e->end_node[i], e->ends[i].code, e->ends[i].msg);
    for (int i = 0; i < NNODES; i++) {
        assert_int_equal(tunnels_count(e->n[i].ts), 0);
        assert_int_equal(peers_stream_count(e->n[i].p), 0);
        assert_true(tunnels_stats(e->n[i].ts)->held_max <= TUNNEL_BUF_MAX);
    }
}

/* ---- tests ------------------------------------------------------------------------------- */

static void echo(struct env *e, int dest, size_t want_ends)
{
    e->svc_node = dest;
    e->svc_mode = SVC_ECHO;
    struct app *a = client(e, dest, "web", TUNNEL_DEFAULT_HOPS, 1);
    a->pend = malloc(10);
    memcpy(a->pend, "hello mesh", 10);
    a->pend_len = 10;
    a->shut_when_sent = true;
    app_write(a);
    assert_true(run_until(e, app_done, a));
    assert_false(a->reset);
    assert_int_equal(a->keep_len, 10);
    assert_memory_equal(a->keep, "hello mesh", 10);
    expect_clean(e, want_ends);
    for (size_t i = 0; i < e->nends; i++) {
        assert_int_equal(e->ends[i].id, 1);
        assert_int_equal(e->ends[i].bytes[TUNNEL_UP], 10);
        assert_int_equal(e->ends[i].bytes[TUNNEL_DOWN], 10);
    }
    assert_int_equal(tunnels_stats(e->n[0].ts)->opened, 1);
    assert_int_equal(tunnels_stats(e->n[0].ts)->failed, 0);
    app_free(a);
}

static void test_echo_one_hop(void **state)
{
    echo(*state, 1, 2);
}

static void test_echo_two_hops(void **state)
{
    struct env *e = *state;
    echo(e, 2, 3);
    assert_int_equal(tunnels_stats(e->n[1].ts)->opened, 1); /* the relay */
}

static void test_transfer_64mib(void **state)
{
    struct env *e = *state;
    const uint64_t up = 64ull << 20, down = 8ull << 20;
    e->svc_node = 2;
    e->svc_mode = SVC_SINK;
    e->svc_send = down;
    struct app *a = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, 7);
    a->to_send = up;
    a->seed = 3;
    a->shut_when_sent = true;
    a->check_pattern = true;
    a->got_seed = 99;
    app_write(a);
    assert_true(run_until(e, app_done, a));
    assert_false(a->reset);
    expect_clean(e, 3);
    assert_int_equal(e->nsvc, 1);
    struct app *s = e->svc[0];
    assert_true(run_until(e, app_eof, s)); /* the service reads the last bytes after the end */
    assert_int_equal(a->sent, up);
    assert_int_equal(s->got, up);
    assert_int_equal(a->got, down);
    assert_int_equal(s->sent, down);
    assert_false(a->bad_pattern);
    assert_false(s->bad_pattern);
    uint8_t h1[32], h2[32];
    hash_final(&a->hout, h1);
    hash_final(&s->hin, h2);
    assert_memory_equal(h1, h2, 32);
    hash_final(&s->hout, h1);
    hash_final(&a->hin, h2);
    assert_memory_equal(h1, h2, 32);
    for (size_t i = 0; i < e->nends; i++) {
        assert_int_equal(e->ends[i].bytes[TUNNEL_UP], up);
        assert_int_equal(e->ends[i].bytes[TUNNEL_DOWN], down);
        assert_true(e->ends[i].held_max[TUNNEL_UP] <= TUNNEL_BUF_MAX);
        assert_true(e->ends[i].held_max[TUNNEL_DOWN] <= TUNNEL_BUF_MAX);
    }
    app_free(a);
}

/* The client closes its side first; the service answers after that EOF. */
static void test_half_close_client_first(void **state)
{
    struct env *e = *state;
    e->svc_node = 2;
    e->svc_mode = SVC_REPLY_ON_EOF;
    e->svc_send = 300000;
    struct app *a = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, 2);
    a->pend = malloc(3);
    memcpy(a->pend, "req", 3);
    a->pend_len = 3;
    a->shut_when_sent = true;
    a->check_pattern = true;
    a->got_seed = 5;
    app_write(a);
    assert_true(run_until(e, app_done, a));
    assert_false(a->reset);
    assert_int_equal(a->got, 300000);
    assert_false(a->bad_pattern);
    expect_clean(e, 3);
    assert_int_equal(e->svc[0]->got, 3);
    app_free(a);
}

/* The service sends and closes its side at once; the client keeps sending afterwards. */
static void test_half_close_service_first(void **state)
{
    struct env *e = *state;
    e->svc_node = 2;
    e->svc_mode = SVC_SINK;
    e->svc_send = 1000;
    struct app *a = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, 3);
    a->check_pattern = true;
    a->got_seed = 99;
    app_arm(a);
    assert_true(run_until(e, app_eof, a));
    /* The service's side is closed: the client got everything and EOF, and still writes. */
    assert_true(a->eof);
    assert_int_equal(a->got, 1000);
    assert_int_equal(e->nends, 0);
    a->to_send = 1u << 20;
    a->seed = 3;
    a->shut_when_sent = true;
    app_write(a);
    assert_true(run_until(e, app_done, a));
    expect_clean(e, 3);
    /* The tunnel is done once the service's socket has it all; the service reads it later. */
    assert_true(run_until(e, app_eof, e->svc[0]));
    assert_int_equal(e->svc[0]->got, 1u << 20);
    assert_false(e->svc[0]->bad_pattern);
    app_free(a);
}

static bool svc_reset(struct env *e, const void *arg)
{
    (void)arg;
    return e->nsvc > 0 && e->svc[0]->reset;
}

static bool svc_got(struct env *e, const void *arg)
{
    return e->nsvc > 0 && e->svc[0]->got >= *(const uint64_t *)arg;
}

static void expect_failed(struct env *e, size_t want)
{
    assert_true(run_until(e, ends_reached, &want));
    for (size_t i = 0; i < e->nends; i++)
        assert_int_not_equal(e->ends[i].code, 0);
    for (int i = 0; i < NNODES; i++) {
        assert_int_equal(tunnels_count(e->n[i].ts), 0);
        assert_int_equal(peers_stream_count(e->n[i].p), 0);
    }
}

/* The client resets: the service's connection, two hops away, gets a TCP RST. */
static void test_reset_from_client(void **state)
{
    struct env *e = *state;
    e->svc_node = 2;
    e->svc_mode = SVC_SINK;
    e->svc_send = 0;
    struct app *a = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, 4);
    a->to_send = 5000;
    a->seed = 3;
    app_write(a);
    uint64_t want = 5000;
    assert_true(run_until(e, svc_got, &want));
    app_reset(a);
    assert_true(run_until(e, svc_reset, NULL));
    expect_failed(e, 3);
    app_free(a);
}

/* The service resets: the client's connection gets a TCP RST. */
static void test_reset_from_service(void **state)
{
    struct env *e = *state;
    e->svc_node = 2;
    e->svc_mode = SVC_RST_ON_DATA;
    struct app *a = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, 5);
    a->to_send = 100;
    app_write(a);
    assert_true(run_until(e, app_done, a));
    assert_true(a->reset);
    assert_false(a->eof);
    expect_failed(e, 3);
    app_free(a);
}

/* The writer is blocked and 200 turns of the loop move nothing. The turns happen here (an
 * EVLOOP_ONCE in run_until would sleep once everything is quiet), until quiet or the guard. */
static bool writer_stalled(struct env *e, const void *arg)
{
    const struct app *a = arg;
    while (!e->expired) {
        uint64_t sent = a->sent;
        for (int i = 0; i < 200; i++)
            event_base_loop(e->base, EVLOOP_NONBLOCK);
        if (a->blocked && a->sent == sent)
            return true;
    }
    return false;
}

static void test_slow_reader(void **state)
{
    struct env *e = *state;
    const uint64_t total = 256ull << 20;
    e->svc_node = 2;
    e->svc_mode = SVC_SINK;
    e->svc_send = 0;
    e->svc_paused = true;
    struct app *a = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, 6);
    a->to_send = total;
    a->seed = 3;
    a->shut_when_sent = true;
    app_write(a);
    assert_true(run_until(e, writer_stalled, a));
    /* Stalled long before the end: what is in flight is the socket buffers, at most
     * TUNNEL_BUF_MAX in each tunnel direction, and the link windows. */
    assert_true(a->sent < total);
    size_t held = 0;
    for (int i = 0; i < NNODES; i++) {
        assert_int_equal(tunnels_count(e->n[i].ts), 1);
        assert_true(tunnels_stats(e->n[i].ts)->held_max <= TUNNEL_BUF_MAX);
        held += tunnels_stats(e->n[i].ts)->held_max;
    }
    assert_true(held > 0);
    print_message("slow reader: writer stalled after %llu bytes\n", (unsigned long long)a->sent);
    /* The reader wakes up: everything arrives, intact. */
    struct app *s = e->svc[0];
    s->paused = false;
    app_arm(s);
    assert_true(run_until(e, app_done, a));
    assert_false(a->reset);
    /* The client is done once it has written everything (the sink shut its side at once):
     * the last bytes may still be on their way. The sink has them all at its EOF. */
    assert_true(run_until(e, app_eof, s));
    expect_clean(e, 3);
    assert_int_equal(s->got, total);
    assert_false(s->bad_pattern);
    app_free(a);
}

static bool all_done(struct env *e, const void *arg)
{
    (void)e;
    struct app *const *apps = arg;
    for (size_t i = 0; apps[i]; i++)
        if (!app_done(e, apps[i]))
            return false;
    return true;
}

static void test_many_tunnels(void **state)
{
    struct env *e = *state;
    enum { N = 100 };
    struct app *apps[N + 1] = {0};
    e->svc_node = 2;
    e->svc_mode = SVC_ECHO;
    for (int i = 0; i < N; i++) {
        apps[i] = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, (uint64_t)i + 100);
        apps[i]->to_send = 20000 + (uint64_t)i * 97;
        apps[i]->seed = (uint64_t)i;
        apps[i]->got_seed = (uint64_t)i;
        apps[i]->check_pattern = true;
        apps[i]->shut_when_sent = true;
        app_write(apps[i]);
    }
    assert_true(run_until(e, all_done, apps));
    for (int i = 0; i < N; i++) {
        assert_false(apps[i]->reset);
        assert_int_equal(apps[i]->got, apps[i]->to_send);
        assert_false(apps[i]->bad_pattern);
    }
    expect_clean(e, 3 * N);
    for (int i = 0; i < N; i++)
        app_free(apps[i]);
}

static bool no_tunnels(struct env *e, const void *arg)
{
    (void)e;
    return tunnels_count(((const struct node *)arg)->ts) == 0;
}

static void test_refusals(void **state)
{
    struct env *e = *state;
    e->svc_node = 2;
    e->svc_mode = SVC_ECHO;
    /* An unknown service: the client's connection is reset. */
    struct app *a = client(e, 2, "nope", TUNNEL_DEFAULT_HOPS, 8);
    a->to_send = 10;
    app_write(a);
    assert_true(run_until(e, app_done, a));
    assert_true(a->reset);
    size_t want = 2;
    assert_true(run_until(e, ends_reached, &want));
    app_free(a);
    /* No hop left at the relay. */
    a = client(e, 2, "web", 0, 9);
    assert_true(run_until(e, app_done, a));
    assert_true(a->reset);
    want = 3;
    assert_true(run_until(e, ends_reached, &want));
    app_free(a);
    /* Nothing listens at the service's endpoint: a port that was free a moment ago. */
    struct mesh_addr keep = e->svc_addr;
    close(harness_listen_socket(&e->svc_addr));
    a = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, 10);
    assert_true(run_until(e, app_done, a));
    assert_true(a->reset);
    e->svc_addr = keep;
    /* n0 and n1, and n2 when the connection failed after it was accepted. */
    want = 5;
    assert_true(run_until(e, ends_reached, &want));
    for (size_t i = 0; i < e->nends; i++)
        assert_int_not_equal(e->ends[i].code, 0);
    for (int i = 0; i < NNODES; i++) {
        assert_true(run_until(e, no_tunnels, &e->n[i]));
        assert_int_equal(peers_stream_count(e->n[i].p), 0);
    }
    app_free(a);
}

static bool svc_connected(struct env *e, const void *arg)
{
    return e->nsvc >= *(const size_t *)arg;
}

static void test_free_with_live_tunnels(void **state)
{
    struct env *e = *state;
    e->svc_node = 2;
    e->svc_mode = SVC_SINK;
    e->svc_send = 0;
    e->svc_paused = true;
    struct app *a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = client(e, 2, "web", TUNNEL_DEFAULT_HOPS, (uint64_t)i);
        a[i]->to_send = 8u << 20;
        app_write(a[i]);
    }
    size_t want = 4;
    assert_true(run_until(e, svc_connected, &want));
    for (int i = 0; i < NNODES; i++) {
        tunnels_free(e->n[i].ts);
        e->n[i].ts = NULL;
    }
    assert_int_equal(e->nends, 0); /* no hook */
    /* The sockets saw resets, and the streams are gone once the loop ran. */
    for (int i = 0; i < 4; i++) {
        assert_true(run_until(e, app_done, a[i]));
        assert_true(a[i]->reset);
        app_free(a[i]);
    }
}

static void test_open_payload(void **state)
{
    (void)state;
    struct tunnel_open o = {.hops_left = 16, .id = UINT64_MAX}, d, n;
    uint8_t buf[TUNNEL_OPEN_MAX + 8];
    memset(o.service, 's', TUNNEL_SERVICE_MAX);
    memset(o.dest, 'd', MESH_NODE_NAME_MAX);
    memset(o.origin, 'o', MESH_NODE_NAME_MAX);
    int len = tunnel_open_encode(&o, buf, sizeof buf);
    assert_int_equal(len, TUNNEL_OPEN_MAX);
    assert_true(len <= LINK_OPEN_PAYLOAD_MAX);
    assert_int_equal(tunnel_open_decode(buf, (size_t)len, &d), 0);
    assert_string_equal(d.service, o.service);
    assert_string_equal(d.dest, o.dest);
    assert_string_equal(d.origin, o.origin);
    assert_int_equal(d.hops_left, 16);
    assert_true(d.id == UINT64_MAX);
    assert_int_equal(tunnel_open_encode(&o, buf, (size_t)len - 1), MESH_ETOOBIG);
    /* Hops. */
    assert_int_equal(tunnel_open_next(&d, &n), 0);
    assert_int_equal(n.hops_left, 15);
    n.hops_left = 0;
    assert_int_equal(tunnel_open_next(&n, &d), MESH_ETOOBIG);
    /* Bad names. */
    struct tunnel_open bad = o;
    bad.service[0] = '-';
    assert_int_equal(tunnel_open_encode(&bad, buf, sizeof buf), MESH_EINVAL);
    bad = o;
    bad.dest[0] = '\0';
    assert_int_equal(tunnel_open_encode(&bad, buf, sizeof buf), MESH_EINVAL);
    bad = o;
    bad.origin[3] = ' ';
    assert_int_equal(tunnel_open_encode(&bad, buf, sizeof buf), MESH_EINVAL);
    /* Refused on decode, output untouched. */
    static const struct {
        const char *what, *bytes;
        size_t len;
        int rc;
    } cases[] = {
        {"empty", "", 0, MESH_EMALFORMED},
        {"short array",
         "\x95\x01\xa1s\xa1"
         "d\xa1o\x01",
         9, MESH_EMALFORMED},
        {"version 2",
         "\x96\x02\xa1s\xa1"
         "d\xa1o\x01\x05",
         11, MESH_EUNSUPPORTED},
        {"bad service",
         "\x96\x01\xa1-\xa1"
         "d\xa1o\x01\x05",
         11, MESH_EMALFORMED},
        {"empty dest", "\x96\x01\xa1s\xa0\xa1o\x01\x05", 9, MESH_EMALFORMED},
        {"hops too big",
         "\x96\x01\xa1s\xa1"
         "d\xa1o\xcd\x01\x00\x05",
         13, MESH_EMALFORMED},
        {"trailing byte",
         "\x96\x01\xa1s\xa1"
         "d\xa1o\x01\x05\x00",
         12, MESH_EMALFORMED},
        {"truncated",
         "\x96\x01\xa1s\xa1"
         "d\xa1o\x01",
         9, MESH_EMALFORMED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&d, 0x5a, sizeof d);
        struct tunnel_open untouched = d;
        int rc = tunnel_open_decode((const uint8_t *)cases[i].bytes, cases[i].len, &d);
        if (rc != cases[i].rc)
            fail_msg("%s: %d, expected %d", cases[i].what, rc, cases[i].rc);
        assert_memory_equal(&d, &untouched, sizeof d);
    }
    /* A later version's extra element is skipped. */
    assert_int_equal(tunnel_open_decode((const uint8_t *)"\x97\x01\xa1s\xa1"
                                                         "d\xa1o\x01\x05\xc0",
                                        11, &d),
                     0);
    assert_string_equal(d.service, "s");
    assert_int_equal(d.id, 5);
}

static void test_bad_arguments(void **state)
{
    struct env *e = *state;
    struct tunnels *ts;
    assert_int_equal(tunnels_new(NULL, e->n[0].p, NULL, NULL, &ts), MESH_EINVAL);
    assert_int_equal(tunnel_open_fd(e->n[0].ts, -1, &e->n[1].addr, S_TUN, NULL, 0, 0, 0, NULL),
                     MESH_EINVAL);
    /* The table is bounded. */
    struct tunnels_config cfg = {.max_tunnels = 1};
    assert_int_equal(tunnels_new(e->base, e->n[0].p, &cfg, NULL, &ts), 0);
    int c1, s1, c2, s2;
    tcp_pair(&c1, &s1);
    tcp_pair(&c2, &s2);
    assert_int_equal(tunnel_open_fd(ts, s1, &e->n[1].addr, S_TUN + 1, NULL, 0, 0, 0, NULL), 0);
    assert_int_equal(tunnel_open_fd(ts, s2, &e->n[1].addr, S_TUN + 1, NULL, 0, 0, 0, NULL),
                     MESH_EFULL);
    assert_int_equal(tunnels_count(ts), 1);
    /* The first is refused (nobody listens to S_TUN + 1): its socket gets a reset. */
    struct app *a = app_new(e, c1);
    app_arm(a);
    assert_true(run_until(e, app_done, a));
    assert_true(a->reset);
    assert_int_equal(tunnels_count(ts), 0);
    assert_int_equal(tunnels_stats(ts)->failed, 1);
    tunnels_free(ts);
    tunnels_free(NULL);
    app_free(a);
    close(c2);
    close(s2); /* still ours after the failure */
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_payload),
        cmocka_unit_test_setup_teardown(test_echo_one_hop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_two_hops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transfer_64mib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_client_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_service_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_from_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_from_service, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_tunnels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_live_tunnels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
