/* libFuzzer harness for the relay header (netlink/relay.h), what CALL_RELAY and relayed raft
 * streams start with: arbitrary bytes to relay_hdr_decode; failures return the documented
 * codes and leave the output untouched; what decodes re-encodes to the same header bytes. Then
 * the same bytes go to relay_serve as a received relay call, with a fake io whose next hop is
 * one fixed node: every request is answered exactly once, and what is passed on carries the
 * same header with one hop less and the same body, or, when the destination is that node, is
 * the real call with the body alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "relay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fake {
    struct mesh_addr hop;
    int responses;
    int calls;
    const uint8_t *in;
    size_t in_len;
    peers_reply_fn cb;
    void *cb_ud;
};

static int fake_next_hop(void *ud, const struct mesh_addr *dest, struct mesh_addr *ret_hop)
{
    struct fake *f = ud;
    (void)dest;
    *ret_hop = f->hop;
    return 0;
}

static int fake_call(void *ud, const struct mesh_addr *to, uint16_t type, const uint8_t *req,
                     size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb,
                     void *cb_ud)
{
    struct fake *f = ud;
    struct relay_hdr in, out;
    (void)max_reply;
    (void)timeout_ms;
    if (!mesh_addr_equal(to, &f->hop) || relay_hdr_decode(f->in, f->in_len, &in) != 0)
        abort();
    f->calls++;
    f->cb = cb;
    f->cb_ud = cb_ud;
    if (type != 0x47) {
        /* The destination is the next hop: the real call, with the body alone. */
        if (!mesh_addr_equal(&in.dest, &f->hop) || type != in.type ||
            len != f->in_len - RELAY_HDR_LEN || (len && memcmp(req, f->in + RELAY_HDR_LEN, len)))
            abort();
        return 0;
    }
    if (relay_hdr_decode(req, len, &out) != 0)
        abort();
    if (out.hops_left + 1 != in.hops_left || out.type != in.type || out.max_reply != in.max_reply ||
        !mesh_addr_equal(&out.dest, &in.dest))
        abort();
    if (len != f->in_len ||
        memcmp(req + RELAY_HDR_LEN, f->in + RELAY_HDR_LEN, len - RELAY_HDR_LEN) != 0)
        abort();
    return 0;
}

static void fake_respond(void *ud, void *req, int rc, const uint8_t *reply, size_t len,
                         const char *msg)
{
    struct fake *f = ud;
    (void)req;
    (void)rc;
    (void)reply;
    (void)len;
    (void)msg;
    f->responses++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct relay_hdr h, untouched;
    uint8_t enc[RELAY_HDR_LEN];
    memset(&h, 0x5a, sizeof h);
    untouched = h;
    int rc = relay_hdr_decode(data, size, &h);
    if (rc < 0) {
        if (rc != MESH_EMALFORMED && rc != MESH_EUNSUPPORTED)
            abort();
        if (memcmp(&h, &untouched, sizeof h) != 0)
            abort();
    } else {
        if (size < RELAY_HDR_LEN)
            abort();
        if (relay_hdr_encode(&h, enc, sizeof enc) != RELAY_HDR_LEN ||
            memcmp(enc, data, RELAY_HDR_LEN) != 0)
            abort();
        if (relay_hdr_encode(&h, enc, RELAY_HDR_LEN - 1) != MESH_ETOOBIG)
            abort();
    }

    /* The same bytes served as a relay call. */
    struct fake f = {.in = data, .in_len = size};
    mesh_addr_parse("10.0.0.2:7946", 0, &f.hop);
    struct relay_config cfg = {.types = {1, 2}, .relay_type = 0x47};
    mesh_addr_parse("10.0.0.1:7946", 0, &cfg.self);
    struct relay_io io = {
        .data = &f, .next_hop = fake_next_hop, .call = fake_call, .respond = fake_respond};
    struct relay *r;
    if (relay_new(&cfg, &io, &r) != 0)
        abort();
    relay_serve(r, NULL, data, size);
    if (f.calls > 1 || f.responses + f.calls != 1 || relay_inflight(r) != (size_t)f.calls)
        abort();
    if (f.calls) {
        if (rc != 0)
            abort(); /* only what decodes goes on */
        f.cb(f.cb_ud, MESH_EIO, NULL, 0, NULL);
        if (f.responses != 1 || relay_inflight(r) != 0)
            abort();
    }
    relay_free(r);
    return 0;
}
