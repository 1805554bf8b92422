#include "logs_wire.h"

#include <stdio.h>
#include <string.h>

#include "names.h"
#include "wire.h"

/* The spec's rule for app and microservice names (spec.h's SPEC_NAME_MAX). */
static bool label_valid(const char *s, size_t len)
{
    return mesh_dns_label_valid(s, len, RT_LOGS_NAME_MAX);
}

int rt_logs_open_encode(const struct rt_logs_open *o, uint8_t *buf, size_t cap)
{
    size_t la = strnlen(o->app, sizeof o->app), lm = strnlen(o->ms, sizeof o->ms);
    if (!label_valid(o->app, la) || !label_valid(o->ms, lm) || o->tail < -1 ||
        o->tail > RT_LOGS_TAIL_MAX)
        return MESH_EINVAL;
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 7);
    msgpack_pack_uint8(&w.pk, RT_LOGS_OPEN_VERSION);
    wire_pack_str(&w.pk, o->app, la);
    wire_pack_str(&w.pk, o->ms, lm);
    msgpack_pack_uint32(&w.pk, o->replica);
    if (o->follow)
        msgpack_pack_true(&w.pk);
    else
        msgpack_pack_false(&w.pk);
    if (o->tail < 0)
        msgpack_pack_true(&w.pk);
    else
        msgpack_pack_false(&w.pk);
    msgpack_pack_uint32(&w.pk, o->tail < 0 ? 0 : (uint32_t)o->tail);
    return w.overflow ? MESH_ETOOBIG : (int)w.len;
}

int rt_logs_open_decode(const uint8_t *buf, size_t len, struct rt_logs_open *ret)
{
    struct rt_logs_open o;
    struct wire_rd r;
    uint32_t n;
    uint64_t ver, replica, tail;
    bool follow, all;
    memset(&o, 0, sizeof o);
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &n) || n < 7 || wire_rd_uint(&r, &ver))
        return MESH_EMALFORMED;
    if (ver != RT_LOGS_OPEN_VERSION)
        return MESH_EUNSUPPORTED;
    if (wire_rd_str_copy(&r, o.app, sizeof o.app, label_valid) ||
        wire_rd_str_copy(&r, o.ms, sizeof o.ms, label_valid) || wire_rd_uint(&r, &replica) ||
        replica > UINT32_MAX || wire_rd_bool(&r, &follow) || wire_rd_bool(&r, &all) ||
        wire_rd_uint(&r, &tail) || tail > RT_LOGS_TAIL_MAX || (all && tail != 0))
        return MESH_EMALFORMED;
    for (uint32_t i = 7; i < n; i++)
        if (wire_rd_skip(&r, 8))
            return MESH_EMALFORMED;
    if (wire_rd_left(&r) != 0)
        return MESH_EMALFORMED;
    o.replica = (uint32_t)replica;
    o.follow = follow;
    o.tail = all ? -1 : (int32_t)tail;
    *ret = o;
    return 0;
}

size_t rt_logs_error_encode(int code, const char *msg, char *buf, size_t cap)
{
    if (cap == 0)
        return 0;
    int len = snprintf(buf, cap, "%03d %s", code >= 400 && code <= 599 ? code : 502, msg);
    if (len < 0) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)len < cap ? (size_t)len : cap - 1;
}

void rt_logs_error_decode(const uint8_t *text, size_t len, int *ret_code, char *msg, size_t cap)
{
    int code = 0;
    if (len >= 4 && text[0] >= '4' && text[0] <= '5' && text[1] >= '0' && text[1] <= '9' &&
        text[2] >= '0' && text[2] <= '9' && text[3] == ' ')
        code = (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
    size_t off = code ? 4 : 0, n = len - off;
    if (n > cap - 1)
        n = cap - 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = text[off + i];
        msg[i] = c < 0x20 || c > 0x7e ? '?' : (char)c;
    }
    msg[n] = '\0';
    *ret_code = code ? code : 502;
}
