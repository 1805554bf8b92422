#include "relay.h"

#include <stdlib.h>
#include <string.h>

#include "dlist.h"

/* ---- the relay header -------------------------------------------------------------------- */

int relay_hdr_encode(const struct relay_hdr *h, uint8_t *buf, size_t cap)
{
    const struct mesh_addr *a = &h->dest;
    if ((a->family != 4 && a->family != 6) || a->port == 0)
        return MESH_EINVAL;
    if (cap < RELAY_HDR_LEN)
        return MESH_ETOOBIG;
    buf[0] = RELAY_HDR_VERSION;
    buf[1] = h->hops_left;
    buf[2] = (uint8_t)(h->type >> 8);
    buf[3] = (uint8_t)h->type;
    buf[4] = (uint8_t)(h->max_reply >> 24);
    buf[5] = (uint8_t)(h->max_reply >> 16);
    buf[6] = (uint8_t)(h->max_reply >> 8);
    buf[7] = (uint8_t)h->max_reply;
    buf[8] = a->family;
    memset(buf + 9, 0, 16);
    memcpy(buf + 9, a->ip, a->family == 4 ? 4 : 16);
    buf[25] = (uint8_t)(a->port >> 8);
    buf[26] = (uint8_t)a->port;
    return RELAY_HDR_LEN;
}

int relay_hdr_decode(const uint8_t *buf, size_t len, struct relay_hdr *ret)
{
    static const uint8_t zero[12];
    struct relay_hdr h;
    if (len < 1)
        return MESH_EMALFORMED;
    if (buf[0] != RELAY_HDR_VERSION)
        return MESH_EUNSUPPORTED;
    if (len < RELAY_HDR_LEN || (buf[8] != 4 && buf[8] != 6) ||
        (buf[8] == 4 && memcmp(buf + 13, zero, sizeof zero) != 0))
        return MESH_EMALFORMED;
    memset(&h, 0, sizeof h);
    h.hops_left = buf[1];
    h.type = (uint16_t)(buf[2] << 8 | buf[3]);
    h.max_reply = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
    h.dest.family = buf[8];
    memcpy(h.dest.ip, buf + 9, 16);
    h.dest.port = (uint16_t)(buf[25] << 8 | buf[26]);
    if (h.dest.port == 0)
        return MESH_EMALFORMED;
    *ret = h;
    return 0;
}

/* ---- routed calls ------------------------------------------------------------------------ */

/* A relay call this node passed on, waiting for its reply. */
struct pending {
    struct relay *r;
    void *req;
    struct pending *prev, *next;
};

struct relay {
    struct relay_config cfg;
    struct relay_io io;
    struct pending *pending;
    size_t npending;
    struct relay_stats st;
};

int relay_new(const struct relay_config *cfg, const struct relay_io *io, struct relay **ret)
{
    if (!cfg->relay_type || !io->call || !io->respond || !io->next_hop)
        return MESH_EINVAL;
    struct relay *r = calloc(1, sizeof *r);
    if (!r)
        return MESH_ENOMEM;
    r->cfg = *cfg;
    r->io = *io;
    if (!r->cfg.hops)
        r->cfg.hops = RELAY_DEFAULT_HOPS;
    if (!r->cfg.max_inflight)
        r->cfg.max_inflight = RELAY_DEFAULT_MAX;
    if (!r->cfg.timeout_ms)
        r->cfg.timeout_ms = RELAY_DEFAULT_TIMEOUT_MS;
    if (!r->cfg.max_reply)
        r->cfg.max_reply = RELAY_DEFAULT_MAX_REPLY;
    *ret = r;
    return 0;
}

static void pending_free(struct pending *x)
{
    struct relay *r = x->r;
    DLIST_REMOVE(r->pending, x);
    r->npending--;
    free(x);
}

void relay_free(struct relay *r)
{
    if (!r)
        return;
    while (r->pending)
        pending_free(r->pending);
    free(r);
}

size_t relay_inflight(const struct relay *r)
{
    return r->npending;
}

const struct relay_stats *relay_stats(const struct relay *r)
{
    return &r->st;
}

static bool relayable(const struct relay *r, uint16_t type)
{
    for (size_t i = 0; i < RELAY_TYPES_MAX && r->cfg.types[i]; i++)
        if (r->cfg.types[i] == type)
            return true;
    return false;
}

/* Sends a call (or a relayed one) towards dest: directly when dest is the next hop or there is
 * no route, else through the next hop with hops_left in the header. */
static int call_towards(struct relay *r, const struct mesh_addr *dest, uint16_t type,
                        uint8_t hops_left, const uint8_t *req, size_t len, size_t max_reply,
                        uint64_t timeout_ms, peers_reply_fn cb, void *ud, bool *ret_via)
{
    struct mesh_addr hop;
    *ret_via = false;
    if (r->io.next_hop(r->io.data, dest, &hop) < 0 || mesh_addr_equal(&hop, dest))
        return r->io.call(r->io.data, dest, type, req, len, max_reply, timeout_ms, cb, ud);
    if (hops_left == 0)
        return MESH_ETOOBIG; /* no hops left */
    if (len > SIZE_MAX - RELAY_HDR_LEN)
        return MESH_ETOOBIG;
    uint8_t *buf = malloc(RELAY_HDR_LEN + len);
    if (!buf)
        return MESH_ENOMEM;
    struct relay_hdr h = {
        .hops_left = hops_left,
        .type = type,
        .max_reply = max_reply > UINT32_MAX ? UINT32_MAX : (uint32_t)max_reply,
        .dest = *dest,
    };
    int rc = relay_hdr_encode(&h, buf, RELAY_HDR_LEN);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    if (len)
        memcpy(buf + RELAY_HDR_LEN, req, len);
    rc = r->io.call(r->io.data, &hop, r->cfg.relay_type, buf, RELAY_HDR_LEN + len, max_reply,
                    timeout_ms, cb, ud);
    free(buf);
    *ret_via = rc == 0;
    return rc;
}

int relay_call(struct relay *r, const struct mesh_addr *dest, uint16_t type, const uint8_t *req,
               size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb, void *ud)
{
    bool via;
    int rc =
        call_towards(r, dest, type, r->cfg.hops, req, len, max_reply, timeout_ms, cb, ud, &via);
    if (via)
        r->st.started++;
    return rc;
}

static void on_relayed(void *ud, int rc, const uint8_t *reply, size_t len,
                       const struct mesh_err *err)
{
    struct pending *x = ud;
    struct relay *r = x->r;
    r->io.respond(r->io.data, x->req, rc, reply, len, rc < 0 && err ? err->msg : NULL);
    pending_free(x);
}

static void refuse(struct relay *r, void *req, int rc, const char *msg)
{
    r->st.refused++;
    r->io.respond(r->io.data, req, rc, NULL, 0, msg);
}

void relay_serve(struct relay *r, void *req, const uint8_t *data, size_t len)
{
    struct relay_hdr h;
    if (relay_hdr_decode(data, len, &h) < 0) {
        refuse(r, req, MESH_EMALFORMED, "malformed relayed call");
        return;
    }
    if (!relayable(r, h.type) || h.hops_left == 0 || mesh_addr_equal(&h.dest, &r->cfg.self) ||
        h.max_reply > r->cfg.max_reply) {
        refuse(r, req, MESH_EINVAL, "this call cannot be relayed here");
        return;
    }
    if (r->npending >= r->cfg.max_inflight) {
        refuse(r, req, MESH_EFULL, "too many relayed calls on this node");
        return;
    }
    struct pending *x = calloc(1, sizeof *x);
    if (!x) {
        refuse(r, req, MESH_ENOMEM, "out of memory");
        return;
    }
    x->r = r;
    x->req = req;
    DLIST_PUSH(r->pending, x);
    r->npending++;
    bool via;
    int rc = call_towards(r, &h.dest, h.type, (uint8_t)(h.hops_left - 1), data + RELAY_HDR_LEN,
                          len - RELAY_HDR_LEN, h.max_reply, r->cfg.timeout_ms, on_relayed, x, &via);
    if (rc < 0) {
        pending_free(x);
        refuse(r, req, rc, "cannot relay the call further");
        return;
    }
    r->st.relayed++;
}
