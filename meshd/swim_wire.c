#include "swim_wire.h"

#include <string.h>

#include "err.h"

/* Nesting allowed when skipping unknown trailing fields or unknown messages. */
#define SKIP_DEPTH 8

bool swim_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > SWIM_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* ---- packing ---- */

static int pack_name(msgpack_packer *pk, const char *name)
{
    return wire_pack_str(pk, name, strlen(name));
}

int swim_wire_pack_msg(msgpack_packer *pk, const struct swim_msg *m)
{
    int rc = 0;
    switch (m->type) {
    case SWIM_MSG_PING:
        rc |= msgpack_pack_array(pk, 4);
        rc |= msgpack_pack_uint8(pk, m->type);
        rc |= msgpack_pack_uint32(pk, m->seq);
        rc |= pack_name(pk, m->name);
        rc |= wire_pack_bin(pk, m->id, SWIM_ID_LEN);
        break;
    case SWIM_MSG_PING_REQ:
        rc |= msgpack_pack_array(pk, 6);
        rc |= msgpack_pack_uint8(pk, m->type);
        rc |= msgpack_pack_uint32(pk, m->seq);
        rc |= pack_name(pk, m->name);
        rc |= wire_pack_bin(pk, m->id, SWIM_ID_LEN);
        rc |= wire_pack_addr(pk, &m->addr);
        rc |= m->nack ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case SWIM_MSG_ACK:
    case SWIM_MSG_NACK:
        rc |= msgpack_pack_array(pk, 2);
        rc |= msgpack_pack_uint8(pk, m->type);
        rc |= msgpack_pack_uint32(pk, m->seq);
        break;
    case SWIM_MSG_ALIVE:
        rc |= msgpack_pack_array(pk, 6);
        rc |= msgpack_pack_uint8(pk, m->type);
        rc |= pack_name(pk, m->name);
        rc |= wire_pack_bin(pk, m->id, SWIM_ID_LEN);
        rc |= wire_pack_addr(pk, &m->addr);
        rc |= msgpack_pack_uint64(pk, m->incarnation);
        rc |= wire_pack_bin(pk, m->meta, m->meta_len);
        break;
    case SWIM_MSG_SUSPECT:
    case SWIM_MSG_DEAD:
        rc |= msgpack_pack_array(pk, 5);
        rc |= msgpack_pack_uint8(pk, m->type);
        rc |= pack_name(pk, m->name);
        rc |= wire_pack_bin(pk, m->id, SWIM_ID_LEN);
        rc |= msgpack_pack_uint64(pk, m->incarnation);
        rc |= pack_name(pk, m->from);
        break;
    case SWIM_MSG_LEFT:
        rc |= msgpack_pack_array(pk, 4);
        rc |= msgpack_pack_uint8(pk, m->type);
        rc |= pack_name(pk, m->name);
        rc |= wire_pack_bin(pk, m->id, SWIM_ID_LEN);
        rc |= msgpack_pack_uint64(pk, m->incarnation);
        break;
    default:
        return -1;
    }
    return rc ? -1 : 0;
}

size_t swim_wire_encode_msg(const struct swim_msg *m, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    if (swim_wire_pack_msg(&w.pk, m) != 0 || w.overflow)
        return 0;
    return w.len;
}

int swim_wire_pack_hdr(msgpack_packer *pk, const struct swim_hdr *h)
{
    int rc = 0;
    bool pp = h->type != SWIM_PKT_GOSSIP;
    rc |= msgpack_pack_array(pk, pp ? 8 : 5);
    rc |= msgpack_pack_uint8(pk, SWIM_WIRE_VERSION);
    rc |= msgpack_pack_uint8(pk, h->type);
    rc |= pack_name(pk, h->name);
    rc |= wire_pack_bin(pk, h->id, SWIM_ID_LEN);
    if (pp) {
        rc |= h->join ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        rc |= msgpack_pack_uint32(pk, (uint32_t)(h->err_code < 0 ? -h->err_code : 0));
        rc |= pack_name(pk, h->err_msg);
    }
    rc |= msgpack_pack_array(pk, h->count);
    return rc ? -1 : 0;
}

int swim_wire_pack_entry(msgpack_packer *pk, const struct swim_msg *e)
{
    int rc = 0;
    rc |= msgpack_pack_array(pk, 6);
    rc |= pack_name(pk, e->name);
    rc |= wire_pack_bin(pk, e->id, SWIM_ID_LEN);
    rc |= wire_pack_addr(pk, &e->addr);
    rc |= msgpack_pack_uint64(pk, e->incarnation);
    rc |= msgpack_pack_uint8(pk, e->state);
    rc |= wire_pack_bin(pk, e->meta, e->meta_len);
    return rc ? -1 : 0;
}

/* ---- reading ---- */

static int rd_name(struct wire_rd *r, char out[static SWIM_NAME_MAX + 1])
{
    const char *s;
    uint32_t n;
    if (wire_rd_str(r, &s, &n) || !swim_name_valid(s, n)) {
        r->err = MESH_EMALFORMED;
        return MESH_EMALFORMED;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static int rd_id(struct wire_rd *r, uint8_t out[static SWIM_ID_LEN])
{
    const uint8_t *b;
    uint32_t n;
    if (wire_rd_bin(r, &b, &n) || n != SWIM_ID_LEN) {
        r->err = MESH_EMALFORMED;
        return MESH_EMALFORMED;
    }
    memcpy(out, b, SWIM_ID_LEN);
    return 0;
}

static int rd_u32(struct wire_rd *r, uint32_t *ret_v)
{
    uint64_t v;
    if (wire_rd_uint(r, &v) || v > UINT32_MAX) {
        r->err = MESH_EMALFORMED;
        return MESH_EMALFORMED;
    }
    *ret_v = (uint32_t)v;
    return 0;
}

static int rd_meta(struct wire_rd *r, const uint8_t **ret_b, size_t *ret_len)
{
    const uint8_t *b;
    uint32_t n;
    if (wire_rd_bin(r, &b, &n) || n > SWIM_META_MAX) {
        r->err = MESH_EMALFORMED;
        return MESH_EMALFORMED;
    }
    *ret_b = b;
    *ret_len = n;
    return 0;
}

/* Skips the fields a newer sender added after the ones we know. */
static int skip_rest(struct wire_rd *r, uint32_t n, uint32_t used)
{
    for (uint32_t i = used; i < n; i++)
        if (wire_rd_skip(r, SKIP_DEPTH))
            return MESH_EMALFORMED;
    return 0;
}

int swim_wire_read_hdr(struct wire_rd *r, struct swim_hdr *ret_h)
{
    struct swim_hdr h;
    uint32_t n, cnt;
    uint64_t ver, type, code = 0;
    memset(&h, 0, sizeof h);
    if (wire_rd_array(r, &n) || n < 5 || wire_rd_uint(r, &ver))
        return MESH_EMALFORMED;
    if (ver != SWIM_WIRE_VERSION)
        return MESH_EUNSUPPORTED;
    if (wire_rd_uint(r, &type) || rd_name(r, h.name) || rd_id(r, h.id))
        return MESH_EMALFORMED;
    if (type == SWIM_PKT_GOSSIP) {
        if (n != 5)
            return MESH_EMALFORMED;
    } else if (type == SWIM_PKT_PP_REQ || type == SWIM_PKT_PP_RESP) {
        const char *msg;
        uint32_t mlen;
        if (n != 8 || wire_rd_bool(r, &h.join) || wire_rd_uint(r, &code) ||
            wire_rd_str(r, &msg, &mlen))
            return MESH_EMALFORMED;
        /* A refusal must carry one of our codes; anything else is not a peer we understand. */
        if (code != 0 && (code >= (uint64_t)-MESH_ERR_FIRST_ || code <= (uint64_t)-MESH_ERR_LAST_))
            return MESH_EMALFORMED;
        if (mlen > SWIM_ERRMSG_MAX)
            mlen = SWIM_ERRMSG_MAX;
        for (uint32_t i = 0; i < mlen; i++) /* printable only: it is shown to the user */
            h.err_msg[i] = (msg[i] < 0x20 || msg[i] == 0x7f) ? '?' : msg[i];
        h.err_msg[mlen] = '\0';
        h.err_code = -(int)code;
    } else {
        return MESH_EMALFORMED;
    }
    if (wire_rd_array(r, &cnt))
        return MESH_EMALFORMED;
    h.type = (uint8_t)type;
    h.count = cnt;
    *ret_h = h;
    return 0;
}

int swim_wire_read_msg(struct wire_rd *r, struct swim_msg *ret_m)
{
    struct swim_msg m;
    uint32_t n;
    uint64_t type;
    uint32_t need;
    memset(&m, 0, sizeof m);
    if (wire_rd_array(r, &n) || n < 1 || wire_rd_uint(r, &type))
        return MESH_EMALFORMED;
    switch (type) {
    case SWIM_MSG_PING:
        need = 4;
        if (n < need || rd_u32(r, &m.seq) || rd_name(r, m.name) || rd_id(r, m.id))
            return MESH_EMALFORMED;
        break;
    case SWIM_MSG_PING_REQ:
        need = 6;
        if (n < need || rd_u32(r, &m.seq) || rd_name(r, m.name) || rd_id(r, m.id) ||
            wire_rd_addr(r, &m.addr) || wire_rd_bool(r, &m.nack))
            return MESH_EMALFORMED;
        break;
    case SWIM_MSG_ACK:
    case SWIM_MSG_NACK:
        need = 2;
        if (n < need || rd_u32(r, &m.seq))
            return MESH_EMALFORMED;
        break;
    case SWIM_MSG_ALIVE:
        need = 6;
        if (n < need || rd_name(r, m.name) || rd_id(r, m.id) || wire_rd_addr(r, &m.addr) ||
            wire_rd_uint(r, &m.incarnation) || rd_meta(r, &m.meta, &m.meta_len))
            return MESH_EMALFORMED;
        break;
    case SWIM_MSG_SUSPECT:
    case SWIM_MSG_DEAD:
        need = 5;
        if (n < need || rd_name(r, m.name) || rd_id(r, m.id) || wire_rd_uint(r, &m.incarnation) ||
            rd_name(r, m.from))
            return MESH_EMALFORMED;
        break;
    case SWIM_MSG_LEFT:
        need = 4;
        if (n < need || rd_name(r, m.name) || rd_id(r, m.id) || wire_rd_uint(r, &m.incarnation))
            return MESH_EMALFORMED;
        break;
    default:
        /* Unknown type from a newer peer: skip it whole, keep the rest of the packet. */
        if (skip_rest(r, n, 1))
            return MESH_EMALFORMED;
        return MESH_EUNSUPPORTED;
    }
    if (skip_rest(r, n, need))
        return MESH_EMALFORMED;
    m.type = (uint8_t)type;
    *ret_m = m;
    return 0;
}

int swim_wire_read_entry(struct wire_rd *r, struct swim_msg *ret_e)
{
    struct swim_msg e;
    uint32_t n;
    uint64_t st;
    memset(&e, 0, sizeof e);
    if (wire_rd_array(r, &n) || n < 6 || rd_name(r, e.name) || rd_id(r, e.id) ||
        wire_rd_addr(r, &e.addr) || wire_rd_uint(r, &e.incarnation) || wire_rd_uint(r, &st) ||
        rd_meta(r, &e.meta, &e.meta_len) || skip_rest(r, n, 6))
        return MESH_EMALFORMED;
    if (st < 1 || st > 4) /* alive, suspect, dead, left */
        return MESH_EMALFORMED;
    e.state = (uint8_t)st;
    *ret_e = e;
    return 0;
}
