/* peers (netlink/peers.h) over real loopback TCP: up to three nodes on one event_base, each with
 * its own X25519 identity and key ring. Calls and replies, deferred and error answers, size
 * limits, timeouts, key mismatch, concurrency, a peer going away mid-call, link reuse and the
 * link bound. Every wait runs the loop until a condition holds, under a safety timer. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
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

enum {
    T_ECHO = 1,  /* "re:" + request */
    T_DEFER = 2, /* "later:" + request, from a timer */
    T_ERROR = 3, /* MESH_ENOTFOUND "key not in ring" */
    T_ERRNO = 4, /* -ENOENT "no such thing" */
    T_SIZED = 5, /* a reply of the u32 (big-endian) size the request asks for */
    T_SMALL = 6, /* echo, max_req 16 */
    T_HOLD = 7,  /* kept until the test answers */
    T_NONE = 99, /* served by nobody */
};

#define SMALL_MAX_REQ 16
#define MAX_HELD      8
#define NNODES        3
#define GUARD_SECS    15

struct env;

struct node {
    struct env *env;
    struct peers *p;
    struct mesh_addr addr;
    struct keyring kr;
    struct peers_req *held[MAX_HELD]; /* T_DEFER and T_HOLD requests not yet answered */
    size_t nheld;
    struct event *defer_ev;
    int links_up, links_down;
};

struct env {
    struct event_base *base;
    struct event *guard;
    bool expired;
    struct node n[NNODES];
    struct event *free_ev; /* frees n[free_idx] from the loop */
    int free_idx;
};

struct result {
    int fired;
    int rc;
    uint8_t *reply;
    size_t len;
    int err_code;
    char msg[MESH_ERRMSG_LEN];
};

static const uint8_t key1[MESH_KEY_LEN] = {1, 2, 3, 4};
static const uint8_t key2[MESH_KEY_LEN] = {9, 8, 7, 6};

/* Set around every peers_call: its callback must never fire from inside. */
static bool in_peers_call;

/* ---- callbacks --------------------------------------------------------------------------- */

static void on_reply(void *ud, int rc, const uint8_t *reply, size_t len, const struct mesh_err *err)
{
    struct result *r = ud;
    assert_false(in_peers_call);
    r->fired++;
    r->rc = rc;
    if (rc == 0) {
        assert_null(err);
        free(r->reply);
        r->reply = malloc(len ? len : 1);
        assert_non_null(r->reply);
        if (len)
            memcpy(r->reply, reply, len);
        r->len = len;
    } else {
        assert_non_null(err);
        assert_int_equal(err->code, rc);
        r->err_code = err->code;
        snprintf(r->msg, sizeof r->msg, "%s", err->msg);
    }
}

static void link_hook(void *ud, const struct mesh_addr *addr, bool up, bool outgoing,
                      const struct mesh_err *err)
{
    struct node *n = ud;
    (void)addr;
    (void)outgoing;
    (void)err;
    if (up)
        n->links_up++;
    else
        n->links_down++;
}

static void respond_prefixed(struct peers_req *req, const char *prefix)
{
    size_t pl = strlen(prefix);
    uint8_t *out = malloc(pl + req->len);
    assert_non_null(out);
    memcpy(out, prefix, pl);
    if (req->len)
        memcpy(out + pl, req->data, req->len);
    peers_respond(req, 0, out, pl + req->len, NULL);
    free(out);
}

static void serve_echo(void *ud, struct peers_req *req)
{
    (void)ud;
    respond_prefixed(req, "re:");
}

static void hold(struct node *n, struct peers_req *req)
{
    assert_true(n->nheld < MAX_HELD);
    n->held[n->nheld++] = req;
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < n->nheld; i++)
        respond_prefixed(n->held[i], "later:");
    n->nheld = 0;
}

static void serve_defer(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    struct timeval tv = {0, 5000};
    hold(n, req);
    evtimer_add(n->defer_ev, &tv);
}

static void serve_error(void *ud, struct peers_req *req)
{
    (void)ud;
    peers_respond(req, MESH_ENOTFOUND, NULL, 0, "key not in ring");
}

static void serve_errno(void *ud, struct peers_req *req)
{
    (void)ud;
    peers_respond(req, -ENOENT, NULL, 0, "no such thing");
}

static void serve_sized(void *ud, struct peers_req *req)
{
    (void)ud;
    assert_int_equal(req->len, 4);
    size_t n = (size_t)req->data[0] << 24 | (size_t)req->data[1] << 16 | (size_t)req->data[2] << 8 |
               req->data[3];
    uint8_t *out = malloc(n ? n : 1);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(i * 7);
    peers_respond(req, 0, out, n, NULL);
    free(out);
}

static void serve_hold(void *ud, struct peers_req *req)
{
    hold(ud, req);
}

/* ---- nodes and the loop ------------------------------------------------------------------ */

static void node_start(struct env *e, struct node *n, const uint8_t key[MESH_KEY_LEN],
                       size_t max_links)
{
    uint8_t priv[LINK_KEY_LEN];
    struct mesh_err err = {0};
    memset(n, 0, sizeof *n);
    n->env = e;
    keyring_init(&n->kr, key);
    randombytes_buf(priv, sizeof priv);
    int fd = harness_listen_socket(&n->addr);
    struct peers_config cfg = {.static_priv = priv,
                               .kr = &n->kr,
                               .payload = (const uint8_t *)&n->addr,
                               .payload_len = sizeof n->addr,
                               .max_links = max_links};
    struct peers_hooks hooks = {.ud = n, .on_handshake = harness_hs_hook, .on_link = link_hook};
    if (peers_new(e->base, fd, &cfg, &hooks, &n->p, &err) < 0)
        fail_msg("peers_new: %s", err.msg);
    sodium_memzero(priv, sizeof priv);
    n->defer_ev = evtimer_new(e->base, on_defer, n);
    assert_non_null(n->defer_ev);
    assert_int_equal(peers_serve(n->p, T_ECHO, 4u << 20, serve_echo, n), 0);
    assert_int_equal(peers_serve(n->p, T_DEFER, 1024, serve_defer, n), 0);
    assert_int_equal(peers_serve(n->p, T_ERROR, 1024, serve_error, n), 0);
    assert_int_equal(peers_serve(n->p, T_ERRNO, 1024, serve_errno, n), 0);
    assert_int_equal(peers_serve(n->p, T_SIZED, 4, serve_sized, n), 0);
    assert_int_equal(peers_serve(n->p, T_SMALL, SMALL_MAX_REQ, serve_echo, n), 0);
    assert_int_equal(peers_serve(n->p, T_HOLD, 1024, serve_hold, n), 0);
}

/* Frees the node's peers, then answers what it still holds: a handler may answer after the
 * peers object is gone ("answers into the void"). */
static void node_stop(struct node *n)
{
    peers_free(n->p);
    n->p = NULL;
    for (size_t i = 0; i < n->nheld; i++)
        peers_respond(n->held[i], 0, (const uint8_t *)"void", 4, NULL);
    n->nheld = 0;
    if (n->defer_ev)
        event_free(n->defer_ev);
    n->defer_ev = NULL;
    keyring_wipe(&n->kr);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    struct env *e = arg;
    (void)fd;
    (void)what;
    e->expired = true;
}

static void on_free_node(evutil_socket_t fd, short what, void *arg)
{
    struct env *e = arg;
    (void)fd;
    (void)what;
    node_stop(&e->n[e->free_idx]);
}

typedef bool (*cond_fn)(struct env *e, const void *arg);

/* Runs the loop until cond holds; false when the safety timer expired first. */
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

static bool fired(struct env *e, const void *arg)
{
    (void)e;
    return ((const struct result *)arg)->fired > 0;
}

struct all_fired {
    struct result *r;
    size_t n;
};

static bool all_fired(struct env *e, const void *arg)
{
    const struct all_fired *a = arg;
    (void)e;
    for (size_t i = 0; i < a->n; i++)
        if (!a->r[i].fired)
            return false;
    return true;
}

struct held_count {
    const struct node *n;
    size_t want;
};

static bool holds(struct env *e, const void *arg)
{
    const struct held_count *h = arg;
    (void)e;
    return h->n->nheld >= h->want;
}

static bool no_links(struct env *e, const void *arg)
{
    (void)e;
    return peers_link_count(((const struct node *)arg)->p) == 0;
}

static bool hs_failed_both(struct env *e, const void *arg)
{
    (void)arg;
    return peers_stats(e->n[0].p)->handshake_failures > 0 &&
           peers_stats(e->n[2].p)->handshake_failures > 0;
}

static bool node_gone(struct env *e, const void *arg)
{
    (void)e;
    return ((const struct node *)arg)->p == NULL;
}

static int call(struct node *from, const struct mesh_addr *to, uint16_t type, const void *req,
                size_t len, size_t max_reply, uint64_t timeout_ms, struct result *r)
{
    in_peers_call = true;
    int rc = peers_call(from->p, to, type, req, len, max_reply, timeout_ms, on_reply, r);
    in_peers_call = false;
    return rc;
}

static void result_clear(struct result *r)
{
    free(r->reply);
    memset(r, 0, sizeof *r);
}

static void expect_reply(const struct result *r, const char *want)
{
    assert_int_equal(r->fired, 1);
    if (r->rc != 0)
        fail_msg("call failed: %d %s", r->rc, r->msg);
    assert_int_equal(r->len, strlen(want));
    assert_memory_equal(r->reply, want, r->len);
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->base = event_base_new();
    assert_non_null(e->base);
    e->guard = evtimer_new(e->base, on_guard, e);
    e->free_ev = evtimer_new(e->base, on_free_node, e);
    assert_non_null(e->guard);
    assert_non_null(e->free_ev);
    for (int i = 0; i < NNODES; i++)
        node_start(e, &e->n[i], key1, 0);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < NNODES; i++)
        if (e->n[i].p)
            node_stop(&e->n[i]);
    event_free(e->guard);
    event_free(e->free_ev);
    event_base_free(e->base);
    free(e);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_call_reply(void **state)
{
    struct env *e = *state;
    struct result r = {0};
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, "ping", 4, 64, 5000, &r), 0);
    assert_int_equal(r.fired, 0);
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "re:ping");
    assert_int_equal(peers_stats(e->n[0].p)->calls, 1);
    assert_int_equal(peers_stats(e->n[0].p)->calls_failed, 0);
    assert_int_equal(peers_stats(e->n[1].p)->served, 1);
    assert_int_equal(e->n[0].links_up, 1);
    assert_int_equal(e->n[1].links_up, 1);

    /* No limit on the reply size. */
    result_clear(&r);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, "big", 3, SIZE_MAX, 5000, &r), 0);
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "re:big");

    /* No request bytes at all (NULL, 0). */
    result_clear(&r);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, NULL, 0, 64, 5000, &r), 0);
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "re:");

    /* An empty request and an empty reply. */
    result_clear(&r);
    uint8_t zero[4] = {0};
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_SIZED, zero, 4, 0, 5000, &r), 0);
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "");
    result_clear(&r);
}

static void test_deferred(void **state)
{
    struct env *e = *state;
    struct result r[3] = {{0}};
    const char *reqs[3] = {"a", "bb", "ccc"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            call(&e->n[0], &e->n[1].addr, T_DEFER, reqs[i], strlen(reqs[i]), 64, 5000, &r[i]), 0);
    struct all_fired a = {r, 3};
    assert_true(run_until(e, all_fired, &a));
    expect_reply(&r[0], "later:a");
    expect_reply(&r[1], "later:bb");
    expect_reply(&r[2], "later:ccc");
    for (int i = 0; i < 3; i++)
        result_clear(&r[i]);
}

static void test_error_reply(void **state)
{
    struct env *e = *state;
    struct result r = {0}, q = {0};
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ERROR, "x", 1, 64, 5000, &r), 0);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ERRNO, "x", 1, 64, 5000, &q), 0);
    assert_true(run_until(e, fired, &r));
    assert_true(run_until(e, fired, &q));
    assert_int_equal(r.fired, 1);
    assert_int_equal(r.rc, MESH_ENOTFOUND);
    assert_string_equal(r.msg, "key not in ring");
    assert_int_equal(q.fired, 1);
    assert_int_equal(q.rc, -ENOENT);
    assert_string_equal(q.msg, "no such thing");
    assert_int_equal(peers_stats(e->n[0].p)->calls_failed, 2);
}

static void test_unserved(void **state)
{
    struct env *e = *state;
    struct result r = {0};
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_NONE, "x", 1, 64, 5000, &r), 0);
    assert_true(run_until(e, fired, &r));
    assert_int_equal(r.fired, 1);
    assert_int_equal(r.rc, MESH_EUNSUPPORTED);
    assert_int_equal(peers_stats(e->n[1].p)->refused, 1);
    /* The link survives a refused channel. */
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, "ok", 2, 64, 5000, &r), 0);
    r.fired = 0;
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "re:ok");
    result_clear(&r);
}

static void sized_req(uint8_t out[4], uint32_t n)
{
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
}

static void test_reply_too_big(void **state)
{
    struct env *e = *state;
    struct result ok = {0}, big = {0}, huge = {0};
    uint8_t req[4];
    sized_req(req, 100);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_SIZED, req, 4, 100, 5000, &ok), 0);
    sized_req(req, 101);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_SIZED, req, 4, 100, 5000, &big), 0);
    /* 1 MiB: more than one window and several bulk frames. */
    sized_req(req, 1u << 20);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_SIZED, req, 4, 1u << 20, 10000, &huge), 0);
    assert_true(run_until(e, fired, &ok));
    assert_true(run_until(e, fired, &big));
    assert_true(run_until(e, fired, &huge));
    assert_int_equal(ok.rc, 0);
    assert_int_equal(ok.len, 100);
    assert_int_equal(big.fired, 1);
    assert_int_equal(big.rc, MESH_ETOOBIG);
    assert_int_equal(huge.fired, 1);
    assert_int_equal(huge.rc, 0);
    assert_int_equal(huge.len, 1u << 20);
    for (size_t i = 0; i < huge.len; i += 4093)
        assert_int_equal(huge.reply[i], (uint8_t)(i * 7));
    result_clear(&ok);
    result_clear(&huge);

    /* The link is still usable after the reset of the oversized reply. */
    struct result r = {0};
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, "still", 5, 64, 5000, &r), 0);
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "re:still");
    result_clear(&r);
    assert_int_equal(peers_link_count(e->n[0].p), 1);
}

static void test_request_too_big(void **state)
{
    struct env *e = *state;
    struct result r = {0}, ok = {0};
    uint8_t big[SMALL_MAX_REQ + 1];
    memset(big, 'x', sizeof big);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_SMALL, big, sizeof big, 64, 5000, &r), 0);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_SMALL, big, SMALL_MAX_REQ, 64, 5000, &ok), 0);
    assert_true(run_until(e, fired, &r));
    assert_true(run_until(e, fired, &ok));
    assert_int_equal(r.fired, 1);
    assert_int_equal(r.rc, MESH_ETOOBIG);
    assert_int_equal(ok.rc, 0);
    assert_int_equal(ok.len, 3 + SMALL_MAX_REQ);
    assert_int_equal(peers_stats(e->n[1].p)->served, 1);

    /* A large request within the limit: flow control on the caller's side. */
    size_t n = 1u << 20;
    uint8_t *blob = malloc(n);
    assert_non_null(blob);
    randombytes_buf(blob, n);
    struct result b = {0};
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, blob, n, n + 3, 10000, &b), 0);
    assert_true(run_until(e, fired, &b));
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.len, n + 3);
    assert_memory_equal(b.reply + 3, blob, n);
    free(blob);
    result_clear(&b);
    result_clear(&ok);
}

static void test_timeout_nothing_listens(void **state)
{
    struct env *e = *state;
    struct result r = {0};
    struct mesh_addr dead;
    close(harness_listen_socket(&dead)); /* a port nobody listens on any more */
    assert_int_equal(call(&e->n[0], &dead, T_ECHO, "x", 1, 64, 300, &r), 0);
    assert_true(run_until(e, fired, &r));
    assert_true(r.rc == -ETIMEDOUT || r.rc == MESH_EIO);
    print_message("nothing listens: %d %s\n", r.rc, r.msg);
    assert_true(run_until(e, no_links, &e->n[0]));
    assert_int_equal(r.fired, 1);
    assert_int_equal(peers_stats(e->n[0].p)->calls_failed, 1);
}

static void test_timeout_never_accepts(void **state)
{
    struct env *e = *state;
    struct result r = {0};
    struct mesh_addr silent;
    int fd = harness_listen_socket(&silent); /* the kernel completes connects; nobody answers */
    assert_int_equal(call(&e->n[0], &silent, T_ECHO, "x", 1, 64, 200, &r), 0);
    assert_true(run_until(e, fired, &r));
    assert_int_equal(r.fired, 1);
    assert_int_equal(r.rc, -ETIMEDOUT);
    print_message("never accepts: %d %s\n", r.rc, r.msg);
    /* Close the half-open link: no second callback. */
    peers_close_all(e->n[0].p);
    assert_true(run_until(e, no_links, &e->n[0]));
    assert_int_equal(r.fired, 1);
    close(fd);
}

static void test_key_mismatch(void **state)
{
    struct env *e = *state;
    struct result r = {0};
    node_stop(&e->n[2]);
    node_start(e, &e->n[2], key2, 0);
    assert_int_equal(call(&e->n[2], &e->n[0].addr, T_ECHO, "x", 1, 64, 5000, &r), 0);
    assert_true(run_until(e, fired, &r));
    print_message("key mismatch: %d %s\n", r.rc, r.msg);
    assert_int_equal(r.fired, 1);
    assert_true(r.rc < 0);
    assert_non_null(strstr(r.msg, "key"));
    assert_true(run_until(e, hs_failed_both, NULL));
    assert_int_equal(peers_stats(e->n[0].p)->served, 0);
    assert_int_equal(peers_stats(e->n[2].p)->links_failed, 1);
}

static void test_concurrent(void **state)
{
    struct env *e = *state;
    enum { N = 100 };
    struct result *r = calloc(N, sizeof *r);
    assert_non_null(r);
    char req[32], want[40];
    for (int i = 0; i < N; i++) {
        int len = snprintf(req, sizeof req, "call %d", i);
        assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, req, (size_t)len, 64, 10000, &r[i]),
                         0);
    }
    assert_int_equal(peers_link_count(e->n[0].p), 1);
    struct all_fired a = {r, N};
    assert_true(run_until(e, all_fired, &a));
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof want, "re:call %d", i);
        expect_reply(&r[i], want);
        result_clear(&r[i]);
    }
    assert_int_equal(peers_link_count(e->n[0].p), 1);
    assert_int_equal(peers_link_count(e->n[1].p), 1);
    assert_int_equal(peers_stats(e->n[1].p)->served, N);
    free(r);
}

static void test_peer_freed_mid_call(void **state)
{
    struct env *e = *state;
    struct result r[2] = {{0}};
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_HOLD, "one", 3, 64, 5000, &r[0]), 0);
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_HOLD, "two", 3, 64, 5000, &r[1]), 0);
    struct held_count h = {&e->n[1], 2};
    assert_true(run_until(e, holds, &h));
    /* Free the server from the loop (never from inside one of its callbacks); node_stop then
     * answers the two requests it held, after its peers object is gone. */
    struct timeval zero = {0, 0};
    e->free_idx = 1;
    evtimer_add(e->free_ev, &zero);
    struct all_fired a = {r, 2};
    assert_true(run_until(e, all_fired, &a));
    assert_true(run_until(e, node_gone, &e->n[1]));
    for (int i = 0; i < 2; i++) {
        print_message("peer freed: %d %s\n", r[i].rc, r[i].msg);
        assert_true(r[i].rc < 0);
        assert_int_not_equal(r[i].rc, -ETIMEDOUT);
    }
    assert_true(run_until(e, no_links, &e->n[0]));
    assert_int_equal(r[0].fired, 1);
    assert_int_equal(r[1].fired, 1);
    assert_int_equal(peers_stats(e->n[0].p)->calls_failed, 2);

    /* A new server on a new port: the client dials afresh. */
    node_start(e, &e->n[1], key1, 0);
    struct result q = {0};
    assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, "again", 5, 64, 5000, &q), 0);
    assert_true(run_until(e, fired, &q));
    expect_reply(&q, "re:again");
    result_clear(&q);
}

/* A caller that retries from the callback of a call failed by a link closing gets a new link. */
struct retry {
    struct node *from;
    struct mesh_addr to;
    struct result first, second;
    int rc;
};

static void on_reply_retry(void *ud, int rc, const uint8_t *reply, size_t len,
                           const struct mesh_err *err)
{
    struct retry *t = ud;
    on_reply(&t->first, rc, reply, len, err);
    t->rc = call(t->from, &t->to, T_ECHO, "retry", 5, 64, 5000, &t->second);
}

static void test_retry_from_callback(void **state)
{
    struct env *e = *state;
    struct retry t = {.from = &e->n[0], .to = e->n[1].addr};
    assert_int_equal(peers_call(e->n[0].p, &e->n[1].addr, T_HOLD, (const uint8_t *)"h", 1, 64, 5000,
                                on_reply_retry, &t),
                     0);
    struct held_count h = {&e->n[1], 1};
    assert_true(run_until(e, holds, &h));
    peers_close_all(e->n[1].p); /* GOAWAY from the server, with the request unanswered */
    assert_true(run_until(e, fired, &t.first));
    print_message("closed under the call: %d %s\n", t.first.rc, t.first.msg);
    assert_int_equal(t.first.rc, MESH_ECLOSED);
    assert_int_equal(t.rc, 0);
    assert_true(run_until(e, fired, &t.second));
    expect_reply(&t.second, "re:retry");
    assert_int_equal(peers_stats(e->n[0].p)->links_dialled, 2);
    assert_int_equal(peers_link_count(e->n[0].p), 1);
    /* The handler answers after its link is gone: the answer goes nowhere. */
    peers_respond(e->n[1].held[0], 0, (const uint8_t *)"late", 4, NULL);
    e->n[1].nheld = 0;
    assert_int_equal(t.first.fired, 1);
    result_clear(&t.second);
}

static void test_link_reuse(void **state)
{
    struct env *e = *state;
    struct result r = {0};
    for (int i = 0; i < 2; i++) {
        r.fired = 0;
        assert_int_equal(call(&e->n[0], &e->n[1].addr, T_ECHO, "hi", 2, 64, 5000, &r), 0);
        assert_true(run_until(e, fired, &r));
        expect_reply(&r, "re:hi");
        assert_int_equal(peers_link_count(e->n[0].p), 1);
        assert_int_equal(peers_link_count(e->n[1].p), 1);
    }
    assert_int_equal(peers_stats(e->n[0].p)->links_dialled, 1);
    assert_int_equal(peers_stats(e->n[1].p)->links_accepted, 1);
    /* Both ends of the link tell its negotiated cipher (default config: auto). */
    const char *want = link_aesgcm_available() ? "aes-256-gcm" : "chacha20-poly1305";
    assert_string_equal(peers_link_cipher(e->n[0].p, &e->n[1].addr), want);
    assert_string_equal(peers_link_cipher(e->n[1].p, &e->n[0].addr), want);
    struct mesh_addr nobody = e->n[1].addr;
    nobody.port ^= 1;
    assert_null(peers_link_cipher(e->n[0].p, &nobody));

    /* The server calls back over the link the client made (it knows the advertised address). */
    r.fired = 0;
    assert_int_equal(call(&e->n[1], &e->n[0].addr, T_ECHO, "back", 4, 64, 5000, &r), 0);
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "re:back");
    assert_int_equal(peers_stats(e->n[1].p)->links_dialled, 0);
    assert_int_equal(peers_link_count(e->n[1].p), 1);
    result_clear(&r);
}

static void test_max_links(void **state)
{
    struct env *e = *state;
    struct result r = {0}, q = {0};
    node_stop(&e->n[0]);
    node_start(e, &e->n[0], key1, 1);
    struct node *a = &e->n[0];

    /* A call in flight to n1 holds the only link: a call to n2 is refused at once. */
    assert_int_equal(call(a, &e->n[1].addr, T_HOLD, "h", 1, 64, 5000, &r), 0);
    struct held_count h = {&e->n[1], 1};
    assert_true(run_until(e, holds, &h));
    assert_int_equal(call(a, &e->n[2].addr, T_ECHO, "x", 1, 64, 5000, &q), MESH_EFULL);
    assert_int_equal(peers_link_count(a->p), 1);
    peers_respond(e->n[1].held[0], 0, (const uint8_t *)"done", 4, NULL);
    e->n[1].nheld = 0;
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "done");

    /* Now the link is idle: the next refusal closes it to make room, and a retry succeeds. */
    assert_int_equal(call(a, &e->n[2].addr, T_ECHO, "x", 1, 64, 5000, &q), MESH_EFULL);
    assert_true(run_until(e, no_links, a));
    assert_int_equal(call(a, &e->n[2].addr, T_ECHO, "y", 1, 64, 5000, &q), 0);
    assert_true(run_until(e, fired, &q));
    expect_reply(&q, "re:y");
    assert_int_equal(peers_link_count(a->p), 1);
    assert_int_equal(peers_stats(a->p)->links_dialled, 2);

    /* Incoming links count too: n1 cannot get in while a's only link is busy. */
    result_clear(&r);
    result_clear(&q);
    assert_int_equal(call(a, &e->n[2].addr, T_HOLD, "h", 1, 64, 5000, &r), 0);
    h.n = &e->n[2];
    assert_true(run_until(e, holds, &h));
    assert_int_equal(call(&e->n[1], &a->addr, T_ECHO, "in", 2, 64, 5000, &q), 0);
    assert_true(run_until(e, fired, &q));
    assert_true(q.rc < 0);
    print_message("incoming over the bound: %d %s\n", q.rc, q.msg);
    assert_int_equal(peers_link_count(a->p), 1);
    peers_respond(e->n[2].held[0], 0, (const uint8_t *)"done", 4, NULL);
    e->n[2].nheld = 0;
    assert_true(run_until(e, fired, &r));
    expect_reply(&r, "done");
    result_clear(&r);
    result_clear(&q);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_call_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unserved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_nothing_listens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_never_accepts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_freed_mid_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_links, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
