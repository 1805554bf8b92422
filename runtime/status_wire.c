#include "status_wire.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "observed.h"
#include "wire.h"

static bool label_ok(const char *s, size_t len)
{
    return mesh_dns_label_valid(s, len, 63);
}

/* APP/MS/REPLICA, the replica in decimal without leading zeros, <= UINT32_MAX. */
static bool key_ok(const char *s, size_t len)
{
    const char *a = memchr(s, '/', len);
    if (!a || !label_ok(s, (size_t)(a - s)))
        return false;
    const char *m = a + 1, *end = s + len;
    const char *b = memchr(m, '/', (size_t)(end - m));
    if (!b || !label_ok(m, (size_t)(b - m)))
        return false;
    const char *r = b + 1;
    size_t rl = (size_t)(end - r);
    if (rl == 0 || rl > 10 || (rl > 1 && r[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < rl; i++) {
        if (r[i] < '0' || r[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(r[i] - '0');
    }
    return v <= UINT32_MAX;
}

static bool state_ok(const char *s, size_t len)
{
    static const char *const states[] = {RT_STATE_PENDING,  RT_STATE_PULLING, RT_STATE_FAILED,
                                         RT_STATE_STARTING, RT_STATE_RUNNING, RT_STATE_STOPPED};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if (strlen(states[i]) == len && memcmp(states[i], s, len) == 0)
            return true;
    return false;
}

static bool since_ok(const char *s, size_t len)
{
    if (len > RT_STATUS_SINCE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static bool id_ok(const char *s, size_t len)
{
    if (len > RT_STATUS_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

/* The longest prefix of s (len bytes, valid UTF-8) of at most max bytes that ends on a character
 * boundary. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

int rt_status_request_encode(uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 1);
    msgpack_pack_uint8(&w.pk, RT_STATUS_VERSION);
    return w.overflow ? MESH_ETOOBIG : (int)w.len;
}

int rt_status_request_decode(const uint8_t *buf, size_t len)
{
    struct wire_rd r;
    uint32_t n;
    uint64_t ver;
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &n) || n < 1 || wire_rd_uint(&r, &ver))
        return MESH_EMALFORMED;
    if (ver != RT_STATUS_VERSION)
        return MESH_EUNSUPPORTED;
    for (uint32_t i = 1; i < n; i++)
        if (wire_rd_skip(&r, 8))
            return MESH_EMALFORMED;
    return wire_rd_left(&r) == 0 ? 0 : MESH_EMALFORMED;
}

static int pack_sv(msgpack_packer *pk, const char *s, size_t len)
{
    return wire_pack_str(pk, s, len);
}

int rt_status_reply_encode(const json_t *map, uint8_t **ret_buf, size_t *ret_len)
{
    if (!json_is_object(map))
        return MESH_EINVAL;
    if (json_object_size(map) > RT_STATUS_ENTRIES_MAX)
        return MESH_ETOOBIG;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = 0;
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, RT_STATUS_VERSION);
    msgpack_pack_array(&pk, (uint32_t)json_object_size(map));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)map, key, v)
    {
        const char *state = json_string_value(json_object_get(v, "state"));
        const char *msg = json_string_value(json_object_get(v, "message"));
        const char *since = json_string_value(json_object_get(v, "since"));
        const char *id = json_string_value(json_object_get(v, "container"));
        json_t *restarts = json_object_get(v, "restarts");
        if (!key_ok(key, strlen(key)) || !state || !state_ok(state, strlen(state)) || !msg ||
            !since || !since_ok(since, strlen(since)) || !id || !id_ok(id, strlen(id)) ||
            !json_is_integer(restarts) || json_integer_value(restarts) < 0) {
            rc = MESH_EINVAL;
            goto out;
        }
        msgpack_pack_array(&pk, 6);
        pack_sv(&pk, key, strlen(key));
        pack_sv(&pk, state, strlen(state));
        pack_sv(&pk, msg, utf8_cut(msg, strlen(msg), RT_STATUS_MESSAGE_MAX));
        pack_sv(&pk, since, strlen(since));
        msgpack_pack_uint64(&pk, (uint64_t)json_integer_value(restarts));
        pack_sv(&pk, id, strlen(id));
        if (sb.size > RT_STATUS_REPLY_MAX) {
            rc = MESH_ETOOBIG;
            goto out;
        }
    }
    if (!sb.data) {
        rc = MESH_ENOMEM;
        goto out;
    }
    *ret_len = sb.size;
    *ret_buf = (uint8_t *)msgpack_sbuffer_release(&sb);
out:
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int rd_str(struct wire_rd *r, const char **s, uint32_t *len)
{
    return wire_rd_str(r, s, len) ? MESH_EMALFORMED : 0;
}

int rt_status_reply_decode(const uint8_t *buf, size_t len, json_t **ret_map)
{
    struct wire_rd r;
    uint32_t n, count;
    uint64_t ver;
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &n) || n < 2 || wire_rd_uint(&r, &ver))
        return MESH_EMALFORMED;
    if (ver != RT_STATUS_VERSION)
        return MESH_EUNSUPPORTED;
    if (wire_rd_array(&r, &count) || count > RT_STATUS_ENTRIES_MAX)
        return MESH_EMALFORMED;
    json_t *map = json_object();
    if (!map)
        return MESH_ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t fields, lk, ls, lm, lt, li;
        const char *key, *state, *msg, *since, *id;
        uint64_t restarts;
        char k[RT_STATUS_KEY_MAX + 1];
        if (wire_rd_array(&r, &fields) || fields < 6 || rd_str(&r, &key, &lk) ||
            lk > RT_STATUS_KEY_MAX || !key_ok(key, lk) || rd_str(&r, &state, &ls) ||
            !state_ok(state, ls) || rd_str(&r, &msg, &lm) || lm > RT_STATUS_MESSAGE_MAX ||
            rd_str(&r, &since, &lt) || !since_ok(since, lt) || wire_rd_uint(&r, &restarts) ||
            restarts > INT64_MAX || rd_str(&r, &id, &li) || !id_ok(id, li)) {
            rc = MESH_EMALFORMED;
            goto fail;
        }
        for (uint32_t f = 6; f < fields; f++)
            if (wire_rd_skip(&r, 8)) {
                rc = MESH_EMALFORMED;
                goto fail;
            }
        memcpy(k, key, lk);
        k[lk] = '\0';
        if (json_object_get(map, k)) {
            rc = MESH_EMALFORMED; /* each key once: what a node says of a replica is one thing */
            goto fail;
        }
        /* NULL: not UTF-8. A NUL would cut the message short wherever it goes next. */
        json_t *m = memchr(msg, '\0', lm) ? NULL : json_stringn(msg, lm);
        if (!m) {
            rc = MESH_EMALFORMED;
            goto fail;
        }
        json_t *e =
            json_pack("{s:s%, s:s%, s:I, s:s%}", "state", state, (size_t)ls, "since", since,
                      (size_t)lt, "restarts", (json_int_t)restarts, "container", id, (size_t)li);
        if (!e)
            json_decref(m);
        else if (json_object_set_new(e, "message", m) != 0)
            json_decref(e);
        else if (json_object_set_new(map, k, e) == 0)
            continue;
        rc = MESH_ENOMEM; /* what failed was freed above */
        goto fail;
    }
    for (uint32_t i = 2; i < n; i++)
        if (wire_rd_skip(&r, 8)) {
            rc = MESH_EMALFORMED;
            goto fail;
        }
    if (wire_rd_left(&r) != 0) {
        rc = MESH_EMALFORMED;
        goto fail;
    }
    *ret_map = map;
    return 0;
fail:
    json_decref(map);
    return rc;
}
