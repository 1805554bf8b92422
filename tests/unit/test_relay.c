/* netlink/relay.h: the relay header codec (layout, byte order, every refusal leaves the output
 * untouched) and routed calls stepped through a fake io: a call starts directly or through the
 * next hop with the header; a served relay call is passed on with one hop less, or made for real
 * at the last relay, and answered exactly once with what came back; refusals for malformed
 * input, types not relayable, no hops left, calls addressed to this node, oversized reply
 * bounds, a full table and a next call that cannot start; relay_free drops what waits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "relay.h"

#define T_RELAY 0x47
#define T_APPLY 0x43
#define T_OTHER 0x45

static struct mesh_addr addr(const char *s)
{
    struct mesh_addr a;
    assert_int_equal(mesh_addr_parse(s, 0, &a), 0);
    return a;
}

/* ---- the codec --------------------------------------------------------------------------- */

static void test_hdr_layout(void **state)
{
    (void)state;
    struct relay_hdr h = {
        .hops_left = 7, .type = 0x1234, .max_reply = 0x01020304, .dest = addr("10.1.2.3:7946")};
    uint8_t buf[RELAY_HDR_LEN + 4];
    memset(buf, 0xee, sizeof buf);
    assert_int_equal(relay_hdr_encode(&h, buf, sizeof buf), RELAY_HDR_LEN);
    static const uint8_t want[RELAY_HDR_LEN] = {
        1, 7, 0x12, 0x34, 1, 2, 3, 4, 4, 10, 1, 2,    3,    0,
        0, 0, 0,    0,    0, 0, 0, 0, 0, 0,  0, 0x1f, 0x0a, /* 7946, big-endian */
    };
    assert_memory_equal(buf, want, RELAY_HDR_LEN);
    assert_int_equal(buf[RELAY_HDR_LEN], 0xee); /* nothing past the header */
    struct relay_hdr got;
    assert_int_equal(relay_hdr_decode(buf, RELAY_HDR_LEN, &got), 0);
    assert_int_equal(got.hops_left, 7);
    assert_int_equal(got.type, 0x1234);
    assert_int_equal(got.max_reply, 0x01020304);
    assert_true(mesh_addr_equal(&got.dest, &h.dest));
    /* IPv6, and a body after the header is the caller's. */
    h.dest = addr("[fd00::1]:65535");
    assert_int_equal(relay_hdr_encode(&h, buf, sizeof buf), RELAY_HDR_LEN);
    assert_int_equal(relay_hdr_decode(buf, sizeof buf, &got), 0);
    assert_true(mesh_addr_equal(&got.dest, &h.dest));
    assert_int_equal(buf[25], 0xff);
    assert_int_equal(buf[26], 0xff);
}

static void test_hdr_refusals(void **state)
{
    (void)state;
    struct relay_hdr h = {.hops_left = 1, .dest = addr("10.0.0.1:1")}, got, untouched;
    uint8_t buf[RELAY_HDR_LEN], bad[RELAY_HDR_LEN];
    assert_int_equal(relay_hdr_encode(&h, buf, RELAY_HDR_LEN - 1), MESH_ETOOBIG);
    struct relay_hdr noaddr = h;
    noaddr.dest.family = 0;
    assert_int_equal(relay_hdr_encode(&noaddr, buf, sizeof buf), MESH_EINVAL);
    noaddr = h;
    noaddr.dest.port = 0;
    assert_int_equal(relay_hdr_encode(&noaddr, buf, sizeof buf), MESH_EINVAL);
    assert_int_equal(relay_hdr_encode(&h, buf, sizeof buf), RELAY_HDR_LEN);

    memset(&got, 0x5a, sizeof got);
    untouched = got;
    assert_int_equal(relay_hdr_decode(buf, 0, &got), MESH_EMALFORMED);
    for (size_t n = 1; n < RELAY_HDR_LEN; n++)
        assert_int_equal(relay_hdr_decode(buf, n, &got), MESH_EMALFORMED);
    memcpy(bad, buf, sizeof bad);
    bad[0] = 2;
    assert_int_equal(relay_hdr_decode(bad, sizeof bad, &got), MESH_EUNSUPPORTED);
    memcpy(bad, buf, sizeof bad);
    bad[8] = 5; /* family */
    assert_int_equal(relay_hdr_decode(bad, sizeof bad, &got), MESH_EMALFORMED);
    memcpy(bad, buf, sizeof bad);
    bad[13] = 1; /* IPv4 with a byte past its four */
    assert_int_equal(relay_hdr_decode(bad, sizeof bad, &got), MESH_EMALFORMED);
    memcpy(bad, buf, sizeof bad);
    bad[25] = bad[26] = 0; /* port 0 */
    assert_int_equal(relay_hdr_decode(bad, sizeof bad, &got), MESH_EMALFORMED);
    assert_memory_equal(&got, &untouched, sizeof got);
}

/* ---- routed calls ------------------------------------------------------------------------ */

#define CALLS_MAX 80

struct call {
    struct mesh_addr to;
    uint16_t type;
    uint8_t req[256];
    size_t len, max_reply;
    uint64_t timeout_ms;
    peers_reply_fn cb;
    void *ud;
};

struct env {
    struct relay *r;
    struct mesh_addr self, b, c, d;
    /* routes: dest -> hop */
    struct mesh_addr route_dest[4], route_hop[4];
    size_t nroutes;
    int call_rc; /* what io->call returns */
    struct call calls[CALLS_MAX];
    size_t ncalls;
    /* answers */
    int nresp;
    void *resp_req;
    int resp_rc;
    uint8_t resp[64];
    size_t resp_len;
    char resp_msg[MESH_ERRMSG_LEN];
    /* the caller's own cb */
    int done, done_rc;
};

static int io_next_hop(void *ud, const struct mesh_addr *dest, struct mesh_addr *ret_hop)
{
    struct env *e = ud;
    for (size_t i = 0; i < e->nroutes; i++) {
        if (mesh_addr_equal(&e->route_dest[i], dest)) {
            *ret_hop = e->route_hop[i];
            return 0;
        }
    }
    return MESH_ENOTFOUND;
}

static int io_call(void *ud, const struct mesh_addr *to, uint16_t type, const uint8_t *req,
                   size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb,
                   void *cb_ud)
{
    struct env *e = ud;
    if (e->call_rc < 0)
        return e->call_rc;
    assert_true(e->ncalls < CALLS_MAX);
    assert_true(len <= sizeof e->calls[0].req);
    struct call *c = &e->calls[e->ncalls++];
    c->to = *to;
    c->type = type;
    if (len)
        memcpy(c->req, req, len);
    c->len = len;
    c->max_reply = max_reply;
    c->timeout_ms = timeout_ms;
    c->cb = cb;
    c->ud = cb_ud;
    return 0;
}

static void io_respond(void *ud, void *req, int rc, const uint8_t *reply, size_t len,
                       const char *msg)
{
    struct env *e = ud;
    e->nresp++;
    e->resp_req = req;
    e->resp_rc = rc;
    assert_true(len <= sizeof e->resp);
    if (len)
        memcpy(e->resp, reply, len);
    e->resp_len = len;
    snprintf(e->resp_msg, sizeof e->resp_msg, "%s", msg ? msg : "");
}

static void on_done(void *ud, int rc, const uint8_t *reply, size_t len, const struct mesh_err *err)
{
    struct env *e = ud;
    (void)reply;
    (void)len;
    (void)err;
    e->done++;
    e->done_rc = rc;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    e->self = addr("10.0.0.1:7946");
    e->b = addr("10.0.0.2:7946");
    e->c = addr("10.0.0.3:7946");
    e->d = addr("10.0.0.4:7946");
    /* a - b - c - d: from here, b and c go through b; d has no route */
    e->route_dest[0] = e->b;
    e->route_hop[0] = e->b;
    e->route_dest[1] = e->c;
    e->route_hop[1] = e->b;
    e->nroutes = 2;
    struct relay_config cfg = {
        .self = e->self, .types = {T_APPLY}, .relay_type = T_RELAY, .max_inflight = 3};
    struct relay_io io = {
        .data = e, .next_hop = io_next_hop, .call = io_call, .respond = io_respond};
    assert_int_equal(relay_new(&cfg, &io, &e->r), 0);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    relay_free(e->r);
    free(e);
    return 0;
}

/* Builds a received relay call: the header, then body. */
static size_t relay_msg(uint8_t *buf, uint8_t hops, uint16_t type, uint32_t max_reply,
                        const struct mesh_addr *dest, const char *body)
{
    struct relay_hdr h = {.hops_left = hops, .type = type, .max_reply = max_reply, .dest = *dest};
    assert_int_equal(relay_hdr_encode(&h, buf, RELAY_HDR_LEN), RELAY_HDR_LEN);
    memcpy(buf + RELAY_HDR_LEN, body, strlen(body));
    return RELAY_HDR_LEN + strlen(body);
}

static void test_call_direct_or_through_the_next_hop(void **state)
{
    struct env *e = *state;
    /* The next hop is the destination: the real call. */
    assert_int_equal(
        relay_call(e->r, &e->b, T_APPLY, (const uint8_t *)"w", 1, 100, 500, on_done, e), 0);
    assert_int_equal(e->ncalls, 1);
    assert_true(mesh_addr_equal(&e->calls[0].to, &e->b));
    assert_int_equal(e->calls[0].type, T_APPLY);
    assert_int_equal(e->calls[0].len, 1);
    /* No route: directly too. */
    assert_int_equal(
        relay_call(e->r, &e->d, T_APPLY, (const uint8_t *)"w", 1, 100, 500, on_done, e), 0);
    assert_true(mesh_addr_equal(&e->calls[1].to, &e->d));
    assert_int_equal(e->calls[1].type, T_APPLY);
    assert_int_equal(relay_stats(e->r)->started, 0);
    /* Through b: a relay call with the header and the request. */
    assert_int_equal(
        relay_call(e->r, &e->c, T_APPLY, (const uint8_t *)"write", 5, 100, 500, on_done, e), 0);
    struct call *c = &e->calls[2];
    assert_true(mesh_addr_equal(&c->to, &e->b));
    assert_int_equal(c->type, T_RELAY);
    assert_int_equal(c->len, RELAY_HDR_LEN + 5);
    assert_int_equal(c->max_reply, 100);
    assert_int_equal(c->timeout_ms, 500);
    struct relay_hdr h;
    assert_int_equal(relay_hdr_decode(c->req, c->len, &h), 0);
    assert_int_equal(h.hops_left, RELAY_DEFAULT_HOPS);
    assert_int_equal(h.type, T_APPLY);
    assert_int_equal(h.max_reply, 100);
    assert_true(mesh_addr_equal(&h.dest, &e->c));
    assert_memory_equal(c->req + RELAY_HDR_LEN, "write", 5);
    assert_int_equal(relay_stats(e->r)->started, 1);
    /* The caller's cb is the one io->call got: the reply goes straight back. */
    c->cb(c->ud, 0, NULL, 0, NULL);
    assert_int_equal(e->done, 1);
    /* A call that cannot start reports its error and no cb. */
    e->call_rc = MESH_EFULL;
    assert_int_equal(relay_call(e->r, &e->c, T_APPLY, NULL, 0, 100, 500, on_done, e), MESH_EFULL);
    assert_int_equal(e->done, 1);
}

static void test_serve_passes_on_and_answers_once(void **state)
{
    struct env *e = *state;
    uint8_t msg[128];
    int req_handle;
    /* For c, through b, with one hop less. */
    size_t n = relay_msg(msg, 3, T_APPLY, 200, &e->c, "cmd");
    relay_serve(e->r, &req_handle, msg, n);
    assert_int_equal(e->nresp, 0);
    assert_int_equal(relay_inflight(e->r), 1);
    assert_int_equal(e->ncalls, 1);
    struct call *c = &e->calls[0];
    assert_true(mesh_addr_equal(&c->to, &e->b));
    assert_int_equal(c->type, T_RELAY);
    assert_int_equal(c->timeout_ms, RELAY_DEFAULT_TIMEOUT_MS);
    assert_int_equal(c->max_reply, 200);
    struct relay_hdr h;
    assert_int_equal(relay_hdr_decode(c->req, c->len, &h), 0);
    assert_int_equal(h.hops_left, 2);
    assert_memory_equal(c->req + RELAY_HDR_LEN, "cmd", 3);
    /* The reply, an error with its message, goes back as it came. */
    struct mesh_err err = {.code = MESH_ESTATE};
    snprintf(err.msg, sizeof err.msg, "not the leader");
    c->cb(c->ud, MESH_ESTATE, NULL, 0, &err);
    assert_int_equal(e->nresp, 1);
    assert_ptr_equal(e->resp_req, &req_handle);
    assert_int_equal(e->resp_rc, MESH_ESTATE);
    assert_string_equal(e->resp_msg, "not the leader");
    assert_int_equal(relay_inflight(e->r), 0);

    /* For b, the last relay: the real call with the body alone; a reply's bytes go back. */
    n = relay_msg(msg, 1, T_APPLY, 200, &e->b, "cmd");
    relay_serve(e->r, &req_handle, msg, n);
    c = &e->calls[1];
    assert_true(mesh_addr_equal(&c->to, &e->b));
    assert_int_equal(c->type, T_APPLY);
    assert_int_equal(c->len, 3);
    assert_memory_equal(c->req, "cmd", 3);
    c->cb(c->ud, 0, (const uint8_t *)"ok", 2, NULL);
    assert_int_equal(e->nresp, 2);
    assert_int_equal(e->resp_rc, 0);
    assert_int_equal(e->resp_len, 2);
    assert_memory_equal(e->resp, "ok", 2);
    assert_string_equal(e->resp_msg, "");
    assert_int_equal(relay_stats(e->r)->relayed, 2);
}

static void expect_refused(struct env *e, const uint8_t *msg, size_t n, int rc)
{
    int before = e->nresp;
    size_t calls = e->ncalls;
    relay_serve(e->r, NULL, msg, n);
    assert_int_equal(e->nresp, before + 1);
    assert_int_equal(e->resp_rc, rc);
    assert_int_equal(e->ncalls, calls);
}

static void test_serve_refusals(void **state)
{
    struct env *e = *state;
    uint8_t msg[128];
    size_t n = relay_msg(msg, 3, T_APPLY, 200, &e->c, "cmd");
    expect_refused(e, msg, RELAY_HDR_LEN - 1, MESH_EMALFORMED);
    expect_refused(e, msg, 0, MESH_EMALFORMED);
    msg[0] = 9;
    expect_refused(e, msg, n, MESH_EMALFORMED); /* another version, answered as malformed */
    n = relay_msg(msg, 3, T_OTHER, 200, &e->c, "cmd");
    expect_refused(e, msg, n, MESH_EINVAL); /* not relayable */
    n = relay_msg(msg, 0, T_APPLY, 200, &e->c, "cmd");
    expect_refused(e, msg, n, MESH_EINVAL); /* no hops left */
    n = relay_msg(msg, 3, T_APPLY, 200, &e->self, "cmd");
    expect_refused(e, msg, n, MESH_EINVAL); /* addressed to this node */
    n = relay_msg(msg, 3, T_APPLY, RELAY_DEFAULT_MAX_REPLY + 1, &e->c, "cmd");
    expect_refused(e, msg, n, MESH_EINVAL); /* reply bound */
    /* One hop left, and the destination is further than the next hop: cannot go on. */
    n = relay_msg(msg, 1, T_APPLY, 200, &e->c, "cmd");
    expect_refused(e, msg, n, MESH_ETOOBIG);
    assert_string_equal(e->resp_msg, "cannot relay the call further");
    /* The next call cannot start. */
    e->call_rc = MESH_EIO;
    n = relay_msg(msg, 3, T_APPLY, 200, &e->c, "cmd");
    expect_refused(e, msg, n, MESH_EIO);
    e->call_rc = 0;
    assert_int_equal(relay_inflight(e->r), 0);
    /* A full table (max_inflight 3 here). */
    for (int i = 0; i < 3; i++)
        relay_serve(e->r, NULL, msg, n);
    assert_int_equal(relay_inflight(e->r), 3);
    expect_refused(e, msg, n, MESH_EFULL);
    /* An answer frees a place. */
    e->calls[e->ncalls - 1].cb(e->calls[e->ncalls - 1].ud, 0, NULL, 0, NULL);
    assert_int_equal(relay_inflight(e->r), 2);
    relay_serve(e->r, NULL, msg, n);
    assert_int_equal(relay_inflight(e->r), 3);
    assert_int_equal(relay_stats(e->r)->refused, 10);
    /* teardown's relay_free drops the three that wait (ASan: nothing leaks). */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr_layout),
        cmocka_unit_test(test_hdr_refusals),
        cmocka_unit_test_setup_teardown(test_call_direct_or_through_the_next_hop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serve_passes_on_and_answers_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serve_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
