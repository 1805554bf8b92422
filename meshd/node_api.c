/* The node's HTTP/JSON API handlers and the key-ring service other nodes call. */
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include <sodium.h>

#include "node.h"
#include "version.h"
#include "wire.h"

#define KEYOP_TIMEOUT_MS 10000

const char *node_member_status(const struct swim_member *m)
{
    return swim_state_name(m->state);
}

static json_t *member_json(const struct swim_member *m)
{
    char id[NODE_ID_STR_LEN + 1], addr[MESH_ADDR_STRLEN];
    struct node_meta meta;
    identity_id_format(m->id, id);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "name", m->name, "id", id, "addr",
                          mesh_addr_format(&m->addr, addr, sizeof addr), "status",
                          node_member_status(m), "incarnation", (json_int_t)m->incarnation);
    /* Whether a link proved to this node that the id is the member's key's (swim.h). */
    json_object_set_new(o, "verified", json_boolean(m->verified));
    if (nodemeta_decode(m->meta, m->meta_len, &meta) == 0) {
        json_t *mj = nodemeta_json(&meta);
        json_object_update(o, mj);
        json_decref(mj);
    } else {
        json_object_set_new(o, "labels", json_object());
        json_object_set_new(o, "arch", json_string(""));
    }
    return o;
}

static void h_status(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    char addr[MESH_ADDR_STRLEN];
    (void)rest;
    const struct swim *sw = gossip_swim(n->gossip);
    const struct swim_stats *ss = swim_stats(sw);
    const struct gossip_stats *gs = gossip_stats(n->gossip);
    const struct peers_stats *ps = peers_stats(n->peers);
    struct swim_counts c;
    swim_counts(sw, &c);
    json_t *body = json_pack(
        "{s:{s:s, s:s, s:s, s:s, s:o}, s:s, s:I, s:b, s:s?,"
        " s:{s:I, s:I, s:I, s:I},"
        " s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i},"
        " s:{s:I, s:I, s:I, s:I, s:I, s:I},"
        " s:{s:s, s:s}}",
        "node", "name", n->cfg.name, "id", n->ident.id_str, "addr",
        mesh_addr_format(&n->cfg.advertise, addr, sizeof addr), "arch", n->meta.arch, "labels",
        nodemeta_json(&n->meta), "version", FOGMESH_VERSION, "uptime_ms",
        (json_int_t)(mesh_now_ms() - n->started_ms), "joined", n->joined, "join_error",
        n->join_error[0] ? n->join_error : NULL, "members", "alive", (json_int_t)c.alive, "suspect",
        (json_int_t)c.suspect, "dead", (json_int_t)c.dead, "left", (json_int_t)c.left, "gossip",
        "packets_in", (json_int_t)gs->pkts_in, "packets_out", (json_int_t)gs->pkts_out,
        "dropped_bad_auth", (json_int_t)gs->bad_auth, "dropped_malformed",
        (json_int_t)(gs->malformed + ss->malformed), "dropped_replayed", (json_int_t)gs->replayed,
        "suspicions", (json_int_t)ss->suspicions, "refutes", (json_int_t)ss->refutes,
        "health_score", (int)swim_health_score(sw), "links", "open",
        (json_int_t)peers_link_count(n->peers), "handshake_failures",
        (json_int_t)ps->handshake_failures, "failed", (json_int_t)ps->links_failed,
        "handshakes_dropped", (json_int_t)ps->handshakes_dropped, "calls", (json_int_t)ps->calls,
        "calls_failed", (json_int_t)ps->calls_failed, "paths", "data_dir", n->cfg.data_dir,
        "api_socket", n->cfg.api_socket);
    size_t unverified = 0;
    for (size_t i = 0; i < swim_member_count(sw); i++)
        unverified += !swim_member_at(sw, i)->verified;
    json_t *gj = json_object_get(body, "gossip");
    json_object_set_new(gj, "unverified_members", json_integer((json_int_t)unverified));
    json_object_set_new(gj, "unverified_refused", json_integer((json_int_t)ss->unverified_full));
    json_object_set_new(gj, "epoch_unproven", json_integer((json_int_t)gs->epoch_unproven));
    json_object_set_new(json_object_get(body, "links"), "verify_calls",
                        json_integer((json_int_t)n->verify_calls));
    json_object_set_new(body, "raft", node_raft_status(n));
    json_object_set_new(body, "tunnels", node_tunnels_json(n));
    json_object_set_new(body, "log_streams", json_integer((json_int_t)n->nlogs));
    /* "labels" inside "node" duplicates nodemeta's: keep only the map. */
    json_t *node = json_object_get(body, "node");
    json_t *labels = json_object_get(json_object_get(node, "labels"), "labels");
    if (labels)
        json_object_set(node, "labels", labels);
    api_reply_json(req, body ? 200 : 500, body);
}

static void h_members(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    (void)rest;
    const struct swim *sw = gossip_swim(n->gossip);
    json_t *arr = json_array();
    for (size_t i = 0; i < swim_member_count(sw); i++)
        json_array_append_new(arr, member_json(swim_member_at(sw, i)));
    api_reply_json(req, 200, json_pack("{s:o}", "members", arr));
}

static void h_leave(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    (void)rest;
    if (node_leave(n) < 0) {
        api_reply_error(req, 500, "cannot leave gracefully");
        node_stop(n, 1);
        return;
    }
    api_reply_json(req, 202, json_pack("{s:s}", "status", "leaving"));
}

/* ---- key ring, mesh-wide ----------------------------------------------------------------- */

enum keyop_kind { KEYOP_LIST, KEYOP_INSTALL, KEYOP_USE, KEYOP_REMOVE };

static const char *const keyop_names[] = {"list", "install", "use", "remove"};

/* Applies op to our own ring. Idempotent: installing a present key or removing an absent one
 * succeeds, so a retried rotation converges. */
static int keyop_apply(struct node *n, enum keyop_kind op, const uint8_t *key, struct mesh_err *err)
{
    int rc = 0;
    switch (op) {
    case KEYOP_LIST:
        return 0;
    case KEYOP_INSTALL:
        rc = keyring_install(&n->kr, key);
        if (rc == MESH_EEXISTS)
            return 0;
        if (rc == MESH_EFULL)
            return mesh_errf(err, rc, "the key ring is full (%d keys): remove one first",
                             KEYRING_MAX);
        break;
    case KEYOP_USE:
        rc = keyring_use(&n->kr, key);
        if (rc == MESH_ENOTFOUND)
            return mesh_errf(err, rc,
                             "the key is not installed: run `meshctl keys install` "
                             "first");
        break;
    case KEYOP_REMOVE:
        rc = keyring_remove(&n->kr, key);
        if (rc == MESH_ENOTFOUND)
            return 0;
        if (rc == MESH_ESTATE)
            return mesh_errf(err, rc,
                             "the primary key cannot be removed: `meshctl keys use` "
                             "another key first");
        break;
    }
    if (rc < 0)
        return mesh_errf(err, rc, "%s", mesh_strerror(rc));
    return node_keyring_changed(n, err);
}

/* The ring as msgpack: [[key bin, primary bool], ...]. */
static int keyring_encode(const struct node *n, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, (uint32_t)n->kr.n);
    for (size_t i = 0; i < n->kr.n; i++) {
        msgpack_pack_array(&w.pk, 2);
        wire_pack_bin(&w.pk, n->kr.e[i].key, MESH_KEY_LEN);
        if (i == n->kr.primary)
            msgpack_pack_true(&w.pk);
        else
            msgpack_pack_false(&w.pk);
    }
    return w.overflow ? MESH_ETOOBIG : (int)w.len;
}

/* Request: [1, op, key bin (absent for list)]. */
static void serve_keyop(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    struct wire_rd r;
    uint32_t cnt, klen = 0;
    uint64_t v, op;
    const uint8_t *key = NULL;
    struct mesh_err err = {0};
    wire_rd_init(&r, req->data, req->len);
    if (wire_rd_array(&r, &cnt) < 0 || cnt < 2 || wire_rd_uint(&r, &v) < 0 || v != 1 ||
        wire_rd_uint(&r, &op) < 0 || op > KEYOP_REMOVE ||
        (op != KEYOP_LIST &&
         (cnt < 3 || wire_rd_bin(&r, &key, &klen) < 0 || klen != MESH_KEY_LEN))) {
        peers_respond(req, MESH_EMALFORMED, NULL, 0, "malformed key operation");
        return;
    }
    int rc = keyop_apply(n, (enum keyop_kind)op, key, &err);
    if (rc < 0) {
        peers_respond(req, rc, NULL, 0, err.msg);
        return;
    }
    if (op != KEYOP_LIST) {
        char a[MESH_ADDR_STRLEN];
        log_info(&n->log, "key ring: %s requested by %s", keyop_names[op],
                 mesh_addr_format(&req->from, a, sizeof a));
    }
    uint8_t buf[KEYRING_MAX * 48 + 16];
    int len = keyring_encode(n, buf, sizeof buf);
    peers_respond(req, 0, buf, (size_t)len, NULL);
}

struct keyop;

struct keyop_call {
    struct keyop *op;
    char name[SWIM_NAME_MAX + 1];
};

struct keyop {
    struct node *n;
    struct keyop *next;         /* in n->keyops, so that node_api_close frees what is in flight */
    struct evhttp_request *req; /* NULL once the client is gone */
    struct api_watch watch;
    enum keyop_kind kind;
    size_t pending;
    size_t nodes;
    json_t *failed;            /* {name: message} */
    json_t *keys;              /* list: {key: {"nodes": n, "primary": n}} */
    struct keyop_call calls[]; /* one per member called */
};

static void keyop_count_ring(struct keyop *op, const uint8_t *buf, size_t len)
{
    struct wire_rd r;
    uint32_t cnt;
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &cnt) < 0)
        return;
    for (uint32_t i = 0; i < cnt && i < KEYRING_MAX; i++) {
        uint32_t two, klen;
        const uint8_t *key;
        bool primary;
        if (wire_rd_array(&r, &two) < 0 || two != 2 || wire_rd_bin(&r, &key, &klen) < 0 ||
            klen != MESH_KEY_LEN || wire_rd_bool(&r, &primary) < 0)
            return;
        char b64[MESH_KEY_B64_LEN + 1];
        mesh_key_encode(key, b64);
        json_t *e = json_object_get(op->keys, b64);
        if (!e) {
            e = json_pack("{s:i, s:i}", "nodes", 0, "primary", 0);
            json_object_set_new(op->keys, b64, e);
        }
        json_object_set_new(e, "nodes",
                            json_integer(json_integer_value(json_object_get(e, "nodes")) + 1));
        if (primary)
            json_object_set_new(
                e, "primary", json_integer(json_integer_value(json_object_get(e, "primary")) + 1));
        sodium_memzero(b64, sizeof b64);
    }
}

static void keyop_free(struct keyop *op)
{
    for (struct keyop **pp = &op->n->keyops; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    }
    json_decref(op->failed);
    json_decref(op->keys);
    op->n->nkeyops--;
    free(op);
}

void node_api_close(struct node *n)
{
    /* The links are gone (peers_free fires no callbacks): drop what was in flight. */
    while (n->keyops)
        keyop_free(n->keyops);
}

static void keyop_maybe_finish(struct keyop *op)
{
    if (op->pending > 0)
        return;
    if (op->req) {
        api_unwatch(op->req);
        size_t nfailed = json_object_size(op->failed);
        json_t *body =
            json_pack("{s:s, s:i, s:i, s:O}", "op", keyop_names[op->kind], "nodes", (int)op->nodes,
                      "ok", (int)(op->nodes - nfailed), "failed", op->failed);
        if (op->kind == KEYOP_LIST)
            json_object_set(body, "keys", op->keys);
        api_reply_json(op->req, 200, body);
    }
    keyop_free(op);
}

static void keyop_gone(void *ud)
{
    struct keyop *op = ud;
    op->req = NULL;
}

static void on_keyop_reply(void *ud, int rc, const uint8_t *reply, size_t len,
                           const struct mesh_err *err)
{
    struct keyop_call *kc = ud;
    struct keyop *op = kc->op;
    if (rc < 0)
        json_object_set_new(op->failed, kc->name, json_string(err ? err->msg : "failed"));
    else
        keyop_count_ring(op, reply, len);
    op->pending--;
    keyop_maybe_finish(op);
}

/* Runs a key operation here, then on every other alive member, and answers with the tally. */
static void keyop_start(struct node *n, struct evhttp_request *req, enum keyop_kind kind,
                        const uint8_t *key)
{
    struct mesh_err err = {0};
    if (n->nkeyops >= NODE_KEYOP_MAX) {
        api_reply_error(req, 503, "too many key operations in progress");
        return;
    }
    int rc = keyop_apply(n, kind, key, &err);
    if (rc < 0) {
        api_reply_error(req, 400, "%s", err.msg);
        return;
    }
    if (kind != KEYOP_LIST)
        log_info(&n->log, "key ring: %s, here and on every member", keyop_names[kind]);
    const struct swim *sw = gossip_swim(n->gossip);
    size_t alive = 0;
    for (size_t i = 0; i < swim_member_count(sw); i++)
        alive += swim_member_at(sw, i)->state == SWIM_ALIVE;
    struct keyop *op = calloc(1, sizeof *op + alive * sizeof op->calls[0]);
    if (!op) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    n->nkeyops++;
    op->next = n->keyops;
    n->keyops = op;
    op->n = n;
    op->req = req;
    op->kind = kind;
    op->failed = json_object();
    op->keys = json_object();
    op->nodes = 1;
    uint8_t buf[KEYRING_MAX * 48 + 16];
    int len = keyring_encode(n, buf, sizeof buf);
    keyop_count_ring(op, buf, (size_t)len);

    uint8_t msg[64];
    struct wire_wr w;
    wire_wr_init(&w, msg, sizeof msg);
    msgpack_pack_array(&w.pk, kind == KEYOP_LIST ? 2 : 3);
    msgpack_pack_uint8(&w.pk, 1);
    msgpack_pack_uint8(&w.pk, (uint8_t)kind);
    if (kind != KEYOP_LIST)
        wire_pack_bin(&w.pk, key, MESH_KEY_LEN);

    size_t ncalls = 0;
    for (size_t i = 0; i < swim_member_count(sw) && ncalls < alive; i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (m == swim_self(sw) || m->state != SWIM_ALIVE)
            continue;
        op->nodes++;
        struct keyop_call *kc = &op->calls[ncalls++];
        kc->op = op;
        snprintf(kc->name, sizeof kc->name, "%s", m->name);
        rc = peers_call(n->peers, &m->addr, CALL_KEYOP, msg, w.len, 1024, KEYOP_TIMEOUT_MS,
                        on_keyop_reply, kc);
        if (rc < 0) {
            json_object_set_new(op->failed, m->name, json_string(mesh_strerror(rc)));
            continue;
        }
        op->pending++;
    }
    sodium_memzero(msg, sizeof msg);
    op->watch = (struct api_watch){.gone = keyop_gone, .ud = op};
    api_watch(req, &op->watch);
    keyop_maybe_finish(op);
}

static void h_keys_list(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)rest;
    keyop_start(ud, req, KEYOP_LIST, NULL);
}

static void h_keys_op(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)rest;
    json_t *body = api_read_json(req);
    if (!body)
        return;
    const char *opname = json_string_value(json_object_get(body, "op"));
    const char *keytext = json_string_value(json_object_get(body, "key"));
    int kind = -1;
    for (int i = KEYOP_INSTALL; i <= KEYOP_REMOVE; i++)
        if (opname && strcmp(opname, keyop_names[i]) == 0)
            kind = i;
    uint8_t key[MESH_KEY_LEN];
    struct mesh_err err = {0};
    if (kind < 0)
        api_reply_error(req, 400, "op: expected install, use or remove");
    else if (!keytext)
        api_reply_error(req, 400, "key: required (base64, from meshctl keygen)");
    else if (mesh_key_decode(keytext, key, &err) < 0)
        api_reply_error(req, 400, "key: %s", err.msg);
    else
        keyop_start(ud, req, (enum keyop_kind)kind, key);
    sodium_memzero(key, sizeof key);
    json_decref(body);
}

int node_api_init(struct node *n, struct mesh_err *err)
{
    static const struct api_route_def routes[] = {
        {"GET", FOGMESH_API_PREFIX "/status", h_status},
        {"GET", FOGMESH_API_PREFIX "/members", h_members},
        {"POST", FOGMESH_API_PREFIX "/leave", h_leave},
        {"GET", FOGMESH_API_PREFIX "/keys", h_keys_list},
        {"POST", FOGMESH_API_PREFIX "/keys", h_keys_op},
    };
    int rc = api_route_table(n->api, routes, sizeof routes / sizeof routes[0], n, err);
    if (rc < 0)
        return rc;
    rc = peers_serve(n->peers, CALL_KEYOP, 256, serve_keyop, n);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot register the key service");
    return 0;
}
