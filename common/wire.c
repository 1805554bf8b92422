#include "wire.h"

#include <string.h>

#include "err.h"

/* ---- writing ---- */

static int wr_write(void *data, const char *buf, size_t len)
{
    struct wire_wr *w = data;
    if (w->overflow || len > w->cap - w->len) {
        w->overflow = true;
        return -1;
    }
    if (len) /* msgpack-c passes NULL bodies of length 0 */
        memcpy(w->buf + w->len, buf, len);
    w->len += len;
    return 0;
}

void wire_wr_init(struct wire_wr *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->len = 0;
    w->cap = cap;
    w->overflow = false;
    msgpack_packer_init(&w->pk, w, wr_write);
}

int wire_pack_addr(msgpack_packer *pk, const struct mesh_addr *a)
{
    uint8_t b[WIRE_ADDR_MAX];
    size_t n = 0;
    size_t iplen = a->family == 6 ? 16 : 4;
    b[n++] = a->family == 6 ? 6 : 4;
    memcpy(b + n, a->ip, iplen);
    n += iplen;
    b[n++] = (uint8_t)(a->port >> 8);
    b[n++] = (uint8_t)(a->port & 0xff);
    return wire_pack_bin(pk, b, n);
}

int wire_pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    if (msgpack_pack_str(pk, len) != 0)
        return -1;
    return msgpack_pack_str_body(pk, s, len);
}

int wire_pack_bin(msgpack_packer *pk, const void *b, size_t len)
{
    if (msgpack_pack_bin(pk, len) != 0)
        return -1;
    return msgpack_pack_bin_body(pk, b, len);
}

/* ---- reading ---- */

void wire_rd_init(struct wire_rd *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->off = 0;
    r->err = 0;
}

size_t wire_rd_left(const struct wire_rd *r)
{
    return r->len - r->off;
}

static int rd_fail(struct wire_rd *r)
{
    r->err = MESH_EMALFORMED;
    return MESH_EMALFORMED;
}

/* Reads an n-byte big-endian integer. */
static int rd_be(struct wire_rd *r, size_t n, uint64_t *ret_v)
{
    if (r->err || wire_rd_left(r) < n)
        return rd_fail(r);
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | r->p[r->off + i];
    r->off += n;
    *ret_v = v;
    return 0;
}

static int rd_byte(struct wire_rd *r, uint8_t *ret_b)
{
    if (r->err || wire_rd_left(r) < 1)
        return rd_fail(r);
    *ret_b = r->p[r->off++];
    return 0;
}

/* Looks at the next type byte without consuming it. */
static int rd_peek(struct wire_rd *r, uint8_t *ret_b)
{
    if (r->err || wire_rd_left(r) < 1)
        return rd_fail(r);
    *ret_b = r->p[r->off];
    return 0;
}

int wire_rd_array(struct wire_rd *r, uint32_t *ret_n)
{
    uint8_t t;
    uint64_t n;
    if (rd_byte(r, &t))
        return MESH_EMALFORMED;
    if (t >= 0x90 && t <= 0x9f)
        n = t & 0x0f;
    else if (t == 0xdc) {
        if (rd_be(r, 2, &n))
            return MESH_EMALFORMED;
    } else if (t == 0xdd) {
        if (rd_be(r, 4, &n))
            return MESH_EMALFORMED;
    } else
        return rd_fail(r);
    /* Every element takes at least one byte: a count beyond what is left is a lie. */
    if (n > wire_rd_left(r))
        return rd_fail(r);
    *ret_n = (uint32_t)n;
    return 0;
}

int wire_rd_uint(struct wire_rd *r, uint64_t *ret_v)
{
    uint8_t t;
    uint64_t v;
    if (rd_byte(r, &t))
        return MESH_EMALFORMED;
    if (t <= 0x7f) {
        v = t;
    } else if (t >= 0xcc && t <= 0xcf) {
        if (rd_be(r, (size_t)1 << (t - 0xcc), &v))
            return MESH_EMALFORMED;
    } else if (t >= 0xd0 && t <= 0xd3) {
        /* Signed encodings of non-negative values are accepted (other packers use them). */
        size_t n = (size_t)1 << (t - 0xd0);
        if (rd_be(r, n, &v))
            return MESH_EMALFORMED;
        if (v >> (n * 8 - 1))
            return rd_fail(r);
    } else
        return rd_fail(r);
    *ret_v = v;
    return 0;
}

int wire_rd_bool(struct wire_rd *r, bool *ret_v)
{
    uint8_t t;
    if (rd_byte(r, &t))
        return MESH_EMALFORMED;
    if (t != 0xc2 && t != 0xc3)
        return rd_fail(r);
    *ret_v = t == 0xc3;
    return 0;
}

static int rd_body(struct wire_rd *r, uint64_t n, const uint8_t **ret_b, uint32_t *ret_len)
{
    if (n > wire_rd_left(r))
        return rd_fail(r);
    *ret_b = r->p + r->off;
    *ret_len = (uint32_t)n;
    r->off += n;
    return 0;
}

int wire_rd_str(struct wire_rd *r, const char **ret_s, uint32_t *ret_len)
{
    uint8_t t;
    uint64_t n;
    if (rd_byte(r, &t))
        return MESH_EMALFORMED;
    if (t >= 0xa0 && t <= 0xbf)
        n = t & 0x1f;
    else if (t >= 0xd9 && t <= 0xdb) {
        if (rd_be(r, (size_t)1 << (t - 0xd9), &n))
            return MESH_EMALFORMED;
    } else
        return rd_fail(r);
    const uint8_t *b;
    if (rd_body(r, n, &b, ret_len))
        return MESH_EMALFORMED;
    *ret_s = (const char *)b;
    return 0;
}

int wire_rd_str_copy(struct wire_rd *r, char *dst, size_t cap, wire_str_valid_fn valid)
{
    const char *s;
    uint32_t len;
    if (wire_rd_str(r, &s, &len) || len >= cap)
        return MESH_EMALFORMED;
    if (valid ? !valid(s, len) : memchr(s, '\0', len) != NULL)
        return MESH_EMALFORMED;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

int wire_rd_bin(struct wire_rd *r, const uint8_t **ret_b, uint32_t *ret_len)
{
    uint8_t t;
    uint64_t n;
    if (rd_byte(r, &t))
        return MESH_EMALFORMED;
    if (t >= 0xc4 && t <= 0xc6) {
        if (rd_be(r, (size_t)1 << (t - 0xc4), &n))
            return MESH_EMALFORMED;
    } else
        return rd_fail(r);
    return rd_body(r, n, ret_b, ret_len);
}

int wire_rd_addr(struct wire_rd *r, struct mesh_addr *ret_addr)
{
    const uint8_t *b;
    uint32_t n;
    if (wire_rd_bin(r, &b, &n))
        return MESH_EMALFORMED;
    size_t iplen;
    if (n == 7 && b[0] == 4)
        iplen = 4;
    else if (n == 19 && b[0] == 6)
        iplen = 16;
    else
        return rd_fail(r);
    struct mesh_addr a;
    memset(&a, 0, sizeof a);
    a.family = b[0];
    memcpy(a.ip, b + 1, iplen);
    a.port = (uint16_t)((b[1 + iplen] << 8) | b[2 + iplen]);
    *ret_addr = a;
    return 0;
}

int wire_rd_skip(struct wire_rd *r, unsigned depth)
{
    uint8_t t;
    uint64_t n = 0;
    if (rd_peek(r, &t))
        return MESH_EMALFORMED;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        r->off++;
        return 0;
    }
    if ((t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd) {
        uint32_t cnt;
        if (depth == 0 || wire_rd_array(r, &cnt))
            return rd_fail(r);
        for (uint32_t i = 0; i < cnt; i++)
            if (wire_rd_skip(r, depth - 1))
                return MESH_EMALFORMED;
        return 0;
    }
    if ((t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf) {
        if (depth == 0)
            return rd_fail(r);
        r->off++;
        if (t <= 0x8f)
            n = t & 0x0f;
        else if (rd_be(r, t == 0xde ? 2 : 4, &n))
            return MESH_EMALFORMED;
        if (n > wire_rd_left(r) / 2)
            return rd_fail(r);
        for (uint64_t i = 0; i < 2 * n; i++)
            if (wire_rd_skip(r, depth - 1))
                return MESH_EMALFORMED;
        return 0;
    }
    r->off++;
    if (t >= 0xa0 && t <= 0xbf) { /* fixstr */
        n = t & 0x1f;
        goto body;
    }
    switch (t) {
    case 0xc4: /* bin 8/16/32, str 8/16/32 */
    case 0xc5:
    case 0xc6:
        if (rd_be(r, (size_t)1 << (t - 0xc4), &n))
            return MESH_EMALFORMED;
        break;
    case 0xd9:
    case 0xda:
    case 0xdb:
        if (rd_be(r, (size_t)1 << (t - 0xd9), &n))
            return MESH_EMALFORMED;
        break;
    case 0xc7: /* ext 8/16/32: length, then a type byte, then the data */
    case 0xc8:
    case 0xc9:
        if (rd_be(r, (size_t)1 << (t - 0xc7), &n))
            return MESH_EMALFORMED;
        n += 1;
        break;
    case 0xca:
        n = 4;
        break;
    case 0xcb:
        n = 8;
        break;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        n = (uint64_t)1 << (t - 0xcc);
        break;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3:
        n = (uint64_t)1 << (t - 0xd0);
        break;
    case 0xd4: /* fixext 1/2/4/8/16 plus the type byte */
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        n = ((uint64_t)1 << (t - 0xd4)) + 1;
        break;
    default: /* 0xc1 is never used */
        return rd_fail(r);
    }
body:
    if (n > wire_rd_left(r))
        return rd_fail(r);
    r->off += n;
    return 0;
}
