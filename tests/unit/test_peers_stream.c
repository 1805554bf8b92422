/* peers streams (netlink/peers.h) over real loopback TCP: two or three nodes on one event_base.
 * An echo of a megabyte under flow control, FIN both ways, the open payload and the peer's
 * address at the acceptor, refusal, backpressure from a reader that does not consume, resets
 * from either side, a link that dies, an open that times out, and the lifetime rule (on_end
 * exactly once, never from inside a peers_stream_* call). Every wait runs the loop until a
 * condition holds, under a safety timer. */
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
#include <time.h>

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
    S_ECHO = LINK_CHAN_CONTROL | 20, /* echoes everything; FIN after the peer's FIN */
    S_SINK = 21,                     /* keeps what it gets without consuming it */
    S_FIN = 22,                      /* sends "bye" and FIN at once */
    S_NONE = 23,                     /* nobody listens */
};

#define NNODES     3
#define GUARD_SECS 15
#define ECHO_BYTES (1024 * 1024 + 17)

struct env;

struct node {
    struct env *env;
    struct peers *p;
    struct mesh_addr addr;
    struct keyring kr;
};

/* One end of a stream, as its owner sees it. */
struct end {
    struct peers_stream *s;
    int connected, fins, ends, writables;
    int end_code;
    char end_msg[MESH_ERRMSG_LEN];
    uint8_t *in;
    size_t in_len, in_cap;
    size_t unconsumed; /* sink: delivered, not consumed */
    bool consume;      /* consume at once */
    bool echo;         /* send back what arrives (acceptor) */
    uint8_t *pend;     /* echo bytes not yet taken by peers_stream_send */
    size_t pend_len;
    bool fin_after_echo;
    /* opener's outgoing data */
    const uint8_t *out;
    size_t out_len, out_off;
    bool close_when_sent;
    /* acceptor info */
    struct mesh_addr from;
    uint8_t payload[LINK_OPEN_PAYLOAD_MAX];
    size_t payload_len;
};

struct env {
    struct event_base *base;
    struct event *guard;
    bool expired;
    struct node n[NNODES];
    struct end acc[4]; /* ends accepted by node 1, in order */
    size_t nacc;
};

static const uint8_t key1[MESH_KEY_LEN] = {1, 2, 3, 4};

/* Set around every peers_stream_* call: no callback may fire inside one. */
static bool in_call;

static void end_append(struct end *e, const uint8_t *d, size_t n)
{
    if (e->in_len + n > e->in_cap) {
        size_t cap = e->in_cap ? e->in_cap : 4096;
        while (cap < e->in_len + n)
            cap *= 2;
        e->in = realloc(e->in, cap);
        assert_non_null(e->in);
        e->in_cap = cap;
    }
    memcpy(e->in + e->in_len, d, n);
    e->in_len += n;
}

static void end_clear(struct end *e)
{
    free(e->in);
    free(e->pend);
    memset(e, 0, sizeof *e);
}

/* ---- stream callbacks -------------------------------------------------------------------- */

static void pump_out(struct end *e)
{
    while (e->out_off < e->out_len) {
        in_call = true;
        long n = peers_stream_send(e->s, e->out + e->out_off, e->out_len - e->out_off);
        in_call = false;
        assert_true(n >= 0);
        if (n == 0)
            return;
        e->out_off += (size_t)n;
    }
    if (e->close_when_sent) {
        e->close_when_sent = false;
        in_call = true;
        assert_int_equal(peers_stream_close(e->s), 0);
        in_call = false;
    }
}

static void pump_echo(struct end *e)
{
    while (e->pend_len) {
        in_call = true;
        long n = peers_stream_send(e->s, e->pend, e->pend_len);
        in_call = false;
        assert_true(n >= 0);
        if (n == 0)
            return;
        memmove(e->pend, e->pend + n, e->pend_len - (size_t)n);
        e->pend_len -= (size_t)n;
        in_call = true;
        assert_int_equal(peers_stream_consume(e->s, (size_t)n), 0);
        in_call = false;
    }
    if (e->fin_after_echo) {
        e->fin_after_echo = false;
        in_call = true;
        assert_int_equal(peers_stream_close(e->s), 0);
        in_call = false;
    }
}

static void on_connected(void *ud, struct peers_stream *s)
{
    struct end *e = ud;
    assert_false(in_call);
    assert_ptr_equal(s, e->s);
    e->connected++;
    pump_out(e);
}

static void on_data(void *ud, struct peers_stream *s, const uint8_t *d, size_t n)
{
    struct end *e = ud;
    assert_false(in_call);
    assert_ptr_equal(s, e->s);
    end_append(e, d, n);
    if (e->echo) {
        /* Echo: credit goes back only as the echo is taken, so a slow opener stops us. */
        e->pend = realloc(e->pend, e->pend_len + n);
        assert_non_null(e->pend);
        memcpy(e->pend + e->pend_len, d, n);
        e->pend_len += n;
        pump_echo(e);
    } else if (e->consume) {
        in_call = true;
        assert_int_equal(peers_stream_consume(s, n), 0);
        in_call = false;
    } else {
        e->unconsumed += n;
    }
}

static void on_writable(void *ud, struct peers_stream *s)
{
    struct end *e = ud;
    assert_false(in_call);
    assert_ptr_equal(s, e->s);
    e->writables++;
    if (e->echo)
        pump_echo(e);
    else
        pump_out(e);
}

static void on_fin(void *ud, struct peers_stream *s)
{
    struct end *e = ud;
    assert_false(in_call);
    e->fins++;
    if (e->echo) {
        e->fin_after_echo = true;
        pump_echo(e);
    }
    (void)s;
}

static void on_end(void *ud, struct peers_stream *s, const struct mesh_err *err)
{
    struct end *e = ud;
    assert_false(in_call);
    assert_ptr_equal(s, e->s);
    assert_non_null(err);
    e->ends++;
    e->end_code = err->code;
    snprintf(e->end_msg, sizeof e->end_msg, "%s", err->msg);
}

static const struct peers_stream_cb end_cb = {on_connected, on_data, on_writable, on_fin, on_end};

static uint32_t on_accept(void *ud, struct peers_stream *s, const struct peers_stream_info *info)
{
    struct env *env = ud;
    assert_false(in_call);
    assert_true(env->nacc < 4);
    struct end *e = &env->acc[env->nacc++];
    memset(e, 0, sizeof *e);
    e->s = s;
    e->from = info->from;
    memcpy(e->payload, info->payload, info->len);
    e->payload_len = info->len;
    switch (info->type) {
    case S_ECHO:
        e->echo = true;
        break;
    case S_SINK:
        break;
    case S_FIN:
        e->consume = true;
        e->out = (const uint8_t *)"bye";
        e->out_len = 3;
        e->close_when_sent = true;
        break;
    default:
        fail();
    }
    peers_stream_set_cb(s, &end_cb, e);
    if (info->type == S_FIN)
        pump_out(e); /* sending inside the acceptor is allowed */
    return 0;
}

/* ---- nodes and the loop ------------------------------------------------------------------ */

static void node_start(struct env *e, struct node *n)
{
    uint8_t priv[LINK_KEY_LEN];
    struct mesh_err err = {0};
    memset(n, 0, sizeof *n);
    n->env = e;
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
}

static void node_stop(struct node *n)
{
    peers_free(n->p);
    n->p = NULL;
    keyring_wipe(&n->kr);
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

static bool ended(struct env *e, const void *arg)
{
    (void)e;
    return ((const struct end *)arg)->ends > 0;
}

static bool both_ended(struct env *e, const void *arg)
{
    return ended(e, arg) && e->nacc > 0 && e->acc[0].ends > 0;
}

static bool accepted_ended(struct env *e, const void *arg)
{
    size_t want = *(const size_t *)arg;
    if (e->nacc < want)
        return false;
    for (size_t i = 0; i < want; i++)
        if (!e->acc[i].ends)
            return false;
    return true;
}

static bool connected(struct env *e, const void *arg)
{
    (void)e;
    const struct end *x = arg;
    return x->connected > 0 || x->ends > 0;
}

static bool accepted(struct env *e, const void *arg)
{
    (void)arg;
    return e->nacc > 0;
}

static bool sink_stalled(struct env *e, const void *arg)
{
    const struct end *x = arg;
    /* The opener is blocked (it sent less than all) and the sink got its whole window. */
    return e->nacc > 0 && x->out_off < x->out_len && e->acc[0].in_len >= LINK_DEFAULT_WINDOW;
}

static bool all_sent(struct env *e, const void *arg)
{
    (void)e;
    const struct end *x = arg;
    return x->out_off == x->out_len;
}

static int open_stream(struct node *from, const struct mesh_addr *to, uint16_t type,
                       const char *payload, uint64_t timeout_ms, struct end *e)
{
    in_call = true;
    int rc = peers_stream_open(from->p, to, type, (const uint8_t *)payload,
                               payload ? strlen(payload) : 0, timeout_ms, &end_cb, e, &e->s);
    in_call = false;
    return rc;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->base = event_base_new();
    assert_non_null(e->base);
    e->guard = evtimer_new(e->base, on_guard, e);
    assert_non_null(e->guard);
    for (int i = 0; i < NNODES; i++)
        node_start(e, &e->n[i]);
    for (int i = 0; i < NNODES; i++) {
        assert_int_equal(peers_listen_streams(e->n[i].p, S_ECHO, on_accept, e), 0);
        assert_int_equal(peers_listen_streams(e->n[i].p, S_SINK, on_accept, e), 0);
        assert_int_equal(peers_listen_streams(e->n[i].p, S_FIN, on_accept, e), 0);
    }
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < NNODES; i++)
        if (e->n[i].p)
            node_stop(&e->n[i]);
    for (size_t i = 0; i < e->nacc; i++)
        end_clear(&e->acc[i]);
    event_free(e->guard);
    event_base_free(e->base);
    free(e);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_echo_megabyte(void **state)
{
    struct env *e = *state;
    struct end a = {.consume = true, .close_when_sent = true};
    uint8_t *data = malloc(ECHO_BYTES);
    assert_non_null(data);
    for (size_t i = 0; i < ECHO_BYTES; i++)
        data[i] = (uint8_t)(i * 31 + (i >> 11));
    a.out = data;
    a.out_len = ECHO_BYTES;

    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_ECHO, "hello raft", 0, &a), 0);
    assert_true(run_until(e, both_ended, &a));
    assert_int_equal(a.connected, 1);
    assert_int_equal(a.ends, 1);
    if (a.end_code != 0)
        fail_msg("opener ended with %d: %s", a.end_code, a.end_msg);
    assert_int_equal(a.fins, 1);
    assert_int_equal(a.in_len, ECHO_BYTES);
    assert_memory_equal(a.in, data, ECHO_BYTES);
    assert_true(a.writables > 0); /* the window is smaller than a megabyte */

    struct end *b = &e->acc[0];
    assert_int_equal(e->nacc, 1);
    assert_int_equal(b->ends, 1);
    assert_int_equal(b->end_code, 0);
    assert_int_equal(b->connected, 0); /* the acceptor is never told "connected" */
    assert_int_equal(b->fins, 1);
    assert_int_equal(b->payload_len, strlen("hello raft"));
    assert_memory_equal(b->payload, "hello raft", b->payload_len);
    assert_true(mesh_addr_equal(&b->from, &e->n[0].addr));
    assert_int_equal(peers_stream_count(e->n[0].p), 0);
    assert_int_equal(peers_stream_count(e->n[1].p), 0);
    assert_int_equal(peers_stats(e->n[0].p)->streams_opened, 1);
    assert_int_equal(peers_stats(e->n[1].p)->streams_accepted, 1);
    assert_int_equal(peers_link_count(e->n[0].p), 1); /* the link stays for the next one */
    end_clear(&a);
    free(data);
}

static void test_refused(void **state)
{
    struct env *e = *state;
    struct end a = {.consume = true};
    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_NONE, NULL, 0, &a), 0);
    assert_true(run_until(e, ended, &a));
    assert_int_equal(a.connected, 0);
    assert_int_equal(a.ends, 1);
    assert_int_equal(a.end_code, MESH_EUNSUPPORTED);
    assert_int_equal(e->nacc, 0);
    assert_int_equal(peers_stream_count(e->n[0].p), 0);
    end_clear(&a);
}

static void test_backpressure(void **state)
{
    struct env *e = *state;
    size_t total = 4u << 20;
    uint8_t *data = calloc(1, total);
    assert_non_null(data);
    struct end a = {.out = data, .out_len = total, .close_when_sent = true, .consume = true};

    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_SINK, NULL, 0, &a), 0);
    assert_true(run_until(e, sink_stalled, &a));
    /* Let the loop spin a little more: nothing moves while the sink holds its window. */
    size_t held = e->acc[0].in_len;
    for (int i = 0; i < 50; i++)
        event_base_loop(e->base, EVLOOP_NONBLOCK);
    assert_int_equal(e->acc[0].in_len, held);
    assert_int_equal(held, LINK_DEFAULT_WINDOW);
    assert_true(a.out_off <= LINK_DEFAULT_WINDOW + LINK_DEFAULT_SNDBUF);

    /* The sink consumes from now on: everything arrives and both ends close. */
    struct end *b = &e->acc[0];
    b->consume = true;
    in_call = true;
    assert_int_equal(peers_stream_consume(b->s, b->unconsumed), 0);
    assert_int_equal(peers_stream_consume(b->s, 1), MESH_EINVAL);
    in_call = false;
    assert_true(run_until(e, all_sent, &a));
    /* The sink never closes on its own: close it now and wait for both ends. */
    in_call = true;
    assert_int_equal(peers_stream_close(b->s), 0);
    in_call = false;
    assert_true(run_until(e, both_ended, &a));
    assert_int_equal(a.end_code, 0);
    assert_int_equal(b->end_code, 0);
    assert_int_equal(b->in_len, total);
    end_clear(&a);
    free(data);
}

static void test_reset_by_opener(void **state)
{
    struct env *e = *state;
    struct end a = {.consume = true};
    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_SINK, NULL, 0, &a), 0);
    assert_true(run_until(e, connected, &a));
    assert_true(run_until(e, accepted, NULL));
    in_call = true;
    peers_stream_reset(a.s);
    peers_stream_reset(a.s); /* idempotent */
    assert_int_equal(peers_stream_send(a.s, (const uint8_t *)"x", 1), MESH_ESTATE);
    in_call = false;
    assert_int_equal(a.ends, 0); /* never from inside the call */
    assert_true(run_until(e, both_ended, &a));
    assert_int_equal(a.ends, 1);
    assert_int_equal(a.end_code, -ECANCELED);
    assert_int_equal(e->acc[0].end_code, MESH_ECLOSED);
    end_clear(&a);
}

static void test_reset_by_acceptor(void **state)
{
    struct env *e = *state;
    struct end a = {.consume = true};
    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_SINK, NULL, 0, &a), 0);
    assert_true(run_until(e, connected, &a));
    assert_true(run_until(e, accepted, NULL));
    peers_stream_reset(e->acc[0].s);
    assert_true(run_until(e, both_ended, &a));
    assert_int_equal(a.end_code, MESH_ECLOSED);
    assert_int_equal(e->acc[0].end_code, -ECANCELED);
    end_clear(&a);
}

static void test_fin_from_acceptor(void **state)
{
    struct env *e = *state;
    struct end a = {.consume = true};
    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_FIN, NULL, 0, &a), 0);
    assert_true(run_until(e, connected, &a));
    assert_true(run_until(e, accepted, NULL));
    while (a.fins == 0 && !e->expired)
        event_base_loop(e->base, EVLOOP_ONCE);
    assert_int_equal(a.fins, 1);
    assert_int_equal(a.in_len, 3);
    assert_memory_equal(a.in, "bye", 3);
    assert_int_equal(a.ends, 0);
    /* Sending still works after the peer's FIN (half-close), then FIN ends it. */
    in_call = true;
    assert_int_equal(peers_stream_send(a.s, (const uint8_t *)"ok", 2), 2);
    assert_int_equal(peers_stream_close(a.s), 0);
    assert_int_equal(peers_stream_send(a.s, (const uint8_t *)"x", 1), MESH_ESTATE);
    in_call = false;
    assert_true(run_until(e, both_ended, &a));
    assert_int_equal(a.end_code, 0);
    assert_int_equal(e->acc[0].end_code, 0);
    assert_int_equal(e->acc[0].in_len, 2);
    end_clear(&a);
}

static void test_link_dies(void **state)
{
    struct env *e = *state;
    struct end a = {.consume = true};
    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_SINK, NULL, 0, &a), 0);
    assert_true(run_until(e, connected, &a));
    assert_true(run_until(e, accepted, NULL));
    node_stop(&e->n[1]); /* its stream goes without on_end, as documented */
    assert_true(run_until(e, ended, &a));
    assert_int_equal(a.ends, 1);
    assert_true(a.end_code < 0);
    assert_int_equal(peers_stream_count(e->n[0].p), 0);
    end_clear(&a);
}

static void test_open_timeout(void **state)
{
    struct env *e = *state;
    /* A socket that listens but never accepts: the link handshake never completes. */
    struct mesh_addr dead;
    int fd = harness_listen_socket(&dead);
    struct end a = {.consume = true};
    uint64_t t0 = (uint64_t)time(NULL);
    assert_int_equal(open_stream(&e->n[0], &dead, S_SINK, NULL, 300, &a), 0);
    assert_true(run_until(e, ended, &a));
    assert_int_equal(a.connected, 0);
    assert_int_equal(a.end_code, -ETIMEDOUT);
    assert_true((uint64_t)time(NULL) - t0 < 5);
    close(fd);
    end_clear(&a);
}

static void test_bad_arguments(void **state)
{
    struct env *e = *state;
    struct end a = {0};
    uint8_t big[LINK_OPEN_PAYLOAD_MAX + 1] = {0};
    struct peers_stream *s = (struct peers_stream *)&a; /* must stay untouched */
    struct peers_stream_cb no_end = end_cb;
    no_end.on_end = NULL;
    assert_int_equal(
        peers_stream_open(e->n[0].p, &e->n[1].addr, S_SINK, big, sizeof big, 0, &end_cb, &a, &s),
        MESH_EINVAL);
    assert_int_equal(
        peers_stream_open(e->n[0].p, &e->n[1].addr, S_SINK, NULL, 0, 0, &no_end, &a, &s),
        MESH_EINVAL);
    assert_ptr_equal(s, (struct peers_stream *)&a);
    /* A type cannot be both served and listened to. */
    assert_int_equal(peers_listen_streams(e->n[0].p, S_SINK, NULL, NULL), 0);
    assert_int_equal(peers_listen_streams(e->n[0].p, S_SINK, on_accept, e), 0);
    for (int i = 0; i < 100 && !e->expired; i++)
        event_base_loop(e->base, EVLOOP_NONBLOCK);
    assert_int_equal(a.ends, 0);
}

static void test_stop_listening(void **state)
{
    struct env *e = *state;
    struct end a = {.consume = true};
    assert_int_equal(peers_listen_streams(e->n[1].p, S_SINK, NULL, NULL), 0);
    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_SINK, NULL, 0, &a), 0);
    assert_true(run_until(e, ended, &a));
    assert_int_equal(a.end_code, MESH_EUNSUPPORTED);
    end_clear(&a);
}

/* Streams to two peers at once, and peers_free with streams still open on the opener: no
 * callbacks, no leaks (the owners' memory is the test's). */
static void test_free_with_open_streams(void **state)
{
    struct env *e = *state;
    struct end a = {.consume = true}, c = {.consume = true};
    assert_int_equal(open_stream(&e->n[0], &e->n[1].addr, S_SINK, NULL, 0, &a), 0);
    assert_int_equal(open_stream(&e->n[0], &e->n[2].addr, S_SINK, NULL, 0, &c), 0);
    assert_true(run_until(e, connected, &a));
    assert_true(run_until(e, connected, &c));
    assert_int_equal(peers_stream_count(e->n[0].p), 2);
    node_stop(&e->n[0]);
    size_t two = 2;
    assert_true(run_until(e, accepted_ended, &two)); /* the acceptors see their links go */
    assert_int_equal(a.ends, 0);
    assert_int_equal(c.ends, 0);
    end_clear(&a);
    end_clear(&c);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo_megabyte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_by_opener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_by_acceptor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fin_from_acceptor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_dies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_listening, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_open_streams, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
