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
        " s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I},"
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
        "handshakes_dropped", (json_int_t)ps->handshakes_dropped, "accept_backoffs",
        (json_int_t)ps->accept_backoffs, "calls", (json_int_t)ps->calls, "calls_failed",
        (json_int_t)ps->calls_failed, "paths", "data_dir", n->cfg.data_dir, "api_socket",
        n->cfg.api_socket);
    size_t unverified = 0;
    for (size_t i = 0; i < swim_member_count(sw); i++)
        unverified += !swim_member_at(sw, i)->verified;
    json_t *gj = json_object_get(body, "gossip");
    json_object_set_new(gj, "unverified_members", json_integer((json_int_t)unverified));
    json_object_set_new(gj, "unverified_refused", json_integer((json_int_t)ss->unverified_full));
    json_object_set_new(gj, "epoch_unproven", json_integer((json_int_t)gs->epoch_unproven));
    json_object_set_new(json_object_get(body, "links"), "verify_calls",
                        json_integer((json_int_t)n->verify_calls));
    json_object_set_new(json_object_get(body, "links"), "serve_timeouts",
                        json_integer((json_int_t)ps->serve_timeouts));
    json_object_set_new(json_object_get(body, "links"), "refused",
                        json_integer((json_int_t)ps->refused));
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

/* clang-format off */
/* ---- key ring, mesh-wide -----------------------------------------------------------------
 *
 * Any member holds the mesh key, and key rotation is how an operator evicts one that must not
 * (README "Rotating the mesh key"), so holding the key must not be enough to change another
 * node's ring, and key bytes never cross the wire in clear: nodes name keys by fingerprint
 * (meshkey.h) and a remote operation carries a proof (keyring.h) bound to the recipient, the
 * requester (the id of its link's static key) and the operation:
 *
 *   install K  K sealed to the recipient's identity key, and a proof under the recipient's
 *              primary key: only a node holding the key the recipient uses adds to its ring,
 *              and `--exclude` keeps K from a member it must not reach.
 *   use K      a proof under K and one under the recipient's primary key: only a node holding
 *              K makes it primary, and once a node uses a new key, a member holding only the
 *              old one cannot switch it back (the design asked for the first proof alone; that
 *              let such a member undo `use NEW` while OLD was still in the ring).
 *   remove K   a proof under the recipient's primary key; K must not be the primary.
 *
 * The requester first lists the recipient's ring (fingerprints and which is primary), to know
 * which key the proof needs and to skip what is already done, then sends the operation. */
/* clang-format on */

static const char *const keyop_names[] = {"list", "install", "use", "remove"};

#define KEYOP_MAX_EXCLUDE 16

/* Applies op to our own ring. Idempotent: installing a present key or removing an absent one
 * succeeds, so a retried rotation converges. key is the key itself (our own API) or NULL with
 * fp (a remote remove names the key by fingerprint). */
static int keyop_apply(struct node *n, enum keyop_kind op, const uint8_t *key, const uint8_t *fp,
                       struct mesh_err *err)
{
    int rc = 0, i;
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
        i = key ? keyring_find(&n->kr, key) : keyring_find_fp(&n->kr, fp);
        if (i < 0)
            return 0;
        uint8_t k[MESH_KEY_LEN]; /* a copy: keyring_remove moves the entries it points into */
        memcpy(k, n->kr.e[i].key, MESH_KEY_LEN);
        rc = keyring_remove(&n->kr, k);
        sodium_memzero(k, sizeof k);
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

static void keyop_refused(struct node *n, const struct peers_req *req, uint64_t op, const char *why)
{
    char a[MESH_ADDR_STRLEN], id[NODE_ID_STR_LEN + 1];
    uint8_t rid[NODE_ID_LEN];
    identity_node_id(req->peer_static, rid);
    identity_id_format(rid, id);
    /* A member may send these as fast as it likes: one line per 10 s, with the count. */
    uint32_t held = n->keyop_log_rl.suppressed;
    if (log_ratelimit_ok(&n->keyop_log_rl, mesh_now_ms(), 10000)) {
        n->keyop_log_rl.suppressed = 0;
        log_warn(&n->log, "key ring: refused %s from %s (id %s): %s (%u more refused before)",
                 op <= KEYOP_REMOVE ? keyop_names[op] : "?",
                 mesh_addr_format(&req->from, a, sizeof a), id, why, held);
    }
}

/* The request's layout and proofs: keyop_req_decode and keyop_req_verify (keyring.h). */
static void serve_keyop(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    struct keyop_req q;
    uint8_t requester[NODE_ID_LEN], key[MESH_KEY_LEN];
    struct mesh_err err = {0};
    int rc = keyop_req_decode(req->data, req->len, &q);

    if (rc == MESH_EUNSUPPORTED) {
        keyop_refused(n, req, q.op, "an old key operation without proofs");
        peers_respond(req, MESH_EUNSUPPORTED, NULL, 0,
                      "key operations without proofs are refused: upgrade the requesting node");
        return;
    }
    if (rc < 0) {
        peers_respond(req, MESH_EMALFORMED, NULL, 0, "malformed key operation");
        return;
    }
    identity_node_id(req->peer_static, requester);
    if (q.op != KEYOP_LIST) {
        rc = keyop_req_verify(&n->kr, &n->ident, requester, &q, key, &err);
        if (rc == MESH_EAUTH) {
            keyop_refused(n, req, q.op, err.msg);
            peers_respond(req, MESH_EAUTH, NULL, 0, err.msg);
            return;
        }
        if (rc == 0)
            rc = keyop_apply(n, q.op, q.op == KEYOP_REMOVE ? NULL : key,
                             q.op == KEYOP_REMOVE ? q.target : NULL, &err);
        sodium_memzero(key, sizeof key);
    }
    if (rc < 0) {
        peers_respond(req, rc, NULL, 0, err.msg);
        return;
    }
    if (q.op != KEYOP_LIST) {
        char a[MESH_ADDR_STRLEN], id[NODE_ID_STR_LEN + 1];
        identity_id_format(requester, id);
        log_info(&n->log, "key ring: %s requested by %s (id %s)", keyop_names[q.op],
                 mesh_addr_format(&req->from, a, sizeof a), id);
    }
    uint8_t buf[KEYRING_MAX * 16 + 16];
    int len = keyring_view_encode(&n->kr, buf, sizeof buf);
    peers_respond(req, 0, buf, (size_t)len, NULL);
}

struct keyop;

struct keyop_call {
    struct keyop *op;
    char name[SWIM_NAME_MAX + 1];
    uint8_t id[NODE_ID_LEN]; /* the member's id as gossip tells it */
    struct mesh_addr addr;
};

struct keyop {
    struct node *n;
    struct keyop *next;         /* in n->keyops, so that node_api_close frees what is in flight */
    struct evhttp_request *req; /* NULL once the client is gone */
    struct api_watch watch;
    enum keyop_kind kind;
    uint8_t key[MESH_KEY_LEN]; /* install, use, remove: wiped by keyop_free */
    uint8_t fp[MESH_KEY_FP_LEN];
    size_t nexcluded;
    uint8_t excluded[KEYOP_MAX_EXCLUDE][NODE_ID_LEN];
    size_t pending;
    size_t nodes;
    json_t *failed;            /* {name: message} */
    json_t *skipped;           /* [name]: excluded members */
    json_t *keys;              /* {fingerprint: {"nodes": n, "primary": n, "here": bool}} */
    struct keyop_call calls[]; /* one per member called */
};

static void keyop_count_ring(struct keyop *op, const struct keyring_view *v)
{
    for (size_t i = 0; i < v->n; i++) {
        char hex[MESH_KEY_FP_STR_LEN + 1];
        mesh_key_fp_format(v->fp[i], hex);
        json_t *e = json_object_get(op->keys, hex);
        if (!e) {
            /* "here": the key is in this node's ring, which the operator can look at. */
            e = json_pack("{s:i, s:i, s:b}", "nodes", 0, "primary", 0, "here",
                          keyring_find_fp(&op->n->kr, v->fp[i]) >= 0);
            json_object_set_new(op->keys, hex, e);
        }
        json_object_set_new(e, "nodes",
                            json_integer(json_integer_value(json_object_get(e, "nodes")) + 1));
        if ((int)i == v->primary)
            json_object_set_new(
                e, "primary", json_integer(json_integer_value(json_object_get(e, "primary")) + 1));
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
    json_decref(op->skipped);
    json_decref(op->keys);
    op->n->nkeyops--;
    sodium_memzero(op->key, sizeof op->key);
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
        json_t *body = json_pack("{s:s, s:i, s:i, s:O, s:O}", "op", keyop_names[op->kind], "nodes",
                                 (int)op->nodes, "ok", (int)(op->nodes - nfailed), "failed",
                                 op->failed, "excluded", op->skipped);
        if (op->kind == KEYOP_LIST) {
            json_object_set(body, "keys", op->keys);
            char hex[MESH_KEY_FP_STR_LEN + 1];
            mesh_key_fp_format(op->n->kr.e[op->n->kr.primary].fp, hex);
            json_object_set_new(body, "primary_here", json_string(hex));
        }
        api_reply_json(op->req, 200, body);
    }
    keyop_free(op);
}

static void keyop_gone(void *ud)
{
    struct keyop *op = ud;
    op->req = NULL;
}

static void on_keyop_done(void *ud, int rc, const uint8_t *reply, size_t len,
                          const struct mesh_err *err)
{
    struct keyop_call *kc = ud;
    struct keyop *op = kc->op;
    struct keyring_view v;
    if (rc < 0)
        json_object_set_new(op->failed, kc->name, json_string(err ? err->msg : "failed"));
    else if (keyring_view_decode(reply, len, &v) < 0)
        json_object_set_new(op->failed, kc->name, json_string("malformed key ring in the reply"));
    else
        keyop_count_ring(op, &v);
    op->pending--;
    keyop_maybe_finish(op);
}

static bool keyop_excluded(const struct keyop *op, const uint8_t id[static NODE_ID_LEN])
{
    for (size_t i = 0; i < op->nexcluded; i++)
        if (sodium_memcmp(op->excluded[i], id, NODE_ID_LEN) == 0)
            return true;
    return false;
}

/* Builds the request for kc's recipient, whose ring is v: 0 with the request in w, 1 when
 * there is nothing to do there, or an error in err. */
static int keyop_request(struct keyop *op, struct keyop_call *kc, const struct keyring_view *v,
                         struct wire_wr *w, struct mesh_err *err)
{
    struct node *n = op->n;
    uint8_t pub[LINK_KEY_LEN], rid[NODE_ID_LEN], proof[KEYPROOF_LEN], proof2[KEYPROOF_LEN];
    uint8_t sealed[KEY_SEALED_LEN];
    const uint8_t *proof_key = NULL;
    char hex[MESH_KEY_FP_STR_LEN + 1];
    int have = keyring_view_find(v, op->fp);

    if (op->kind == KEYOP_INSTALL ? have >= 0
        : op->kind == KEYOP_USE   ? have >= 0 && have == v->primary
                                  : have < 0)
        return 1;
    /* The recipient's id is the hash of the identity key its link proved, the key the install
     * is sealed to: a member that advertises another's address gets neither key nor proof. */
    if (peers_link_static(n->peers, &kc->addr, pub) < 0)
        return mesh_errf(err, MESH_ENOTFOUND, "no link to it after the list");
    identity_node_id(pub, rid);
    if (sodium_memcmp(rid, kc->id, NODE_ID_LEN) != 0)
        return mesh_errf(err, MESH_EAUTH, "its link proved another identity than its member id");
    if (op->kind == KEYOP_INSTALL && keyop_excluded(op, rid))
        return mesh_errf(err, MESH_EAUTH, "excluded");
    int i = v->primary < 0 ? -1 : keyring_find_fp(&n->kr, v->fp[v->primary]);
    if (i < 0) {
        if (v->primary >= 0)
            mesh_key_fp_format(v->fp[v->primary], hex);
        return mesh_errf(err, MESH_EAUTH, "its primary key %s is not in this node's ring",
                         v->primary >= 0 ? hex : "(none)");
    }
    proof_key = n->kr.e[i].key;
    keyproof_make(proof_key, (enum keyproof_op)op->kind, rid, n->ident.id, op->fp, proof);
    msgpack_pack_array(&w->pk, op->kind == KEYOP_USE ? 5 : 4);
    msgpack_pack_uint8(&w->pk, KEYOP_VERSION);
    msgpack_pack_uint8(&w->pk, (uint8_t)op->kind);
    if (op->kind == KEYOP_INSTALL) {
        keyring_seal_key(op->key, pub, sealed);
        wire_pack_bin(&w->pk, sealed, sizeof sealed);
    } else {
        wire_pack_bin(&w->pk, op->fp, MESH_KEY_FP_LEN);
    }
    wire_pack_bin(&w->pk, proof, sizeof proof);
    if (op->kind == KEYOP_USE) {
        keyproof_make(op->key, KEYPROOF_USE, rid, n->ident.id, op->fp, proof2);
        wire_pack_bin(&w->pk, proof2, sizeof proof2);
        sodium_memzero(proof2, sizeof proof2);
    }
    sodium_memzero(proof, sizeof proof);
    return w->overflow ? mesh_errf(err, MESH_ETOOBIG, "request too big") : 0;
}

/* The recipient's ring came back: send the operation itself, or count the ring if it is done. */
static void on_keyop_listed(void *ud, int rc, const uint8_t *reply, size_t len,
                            const struct mesh_err *err)
{
    struct keyop_call *kc = ud;
    struct keyop *op = kc->op;
    struct keyring_view v;
    struct mesh_err why = {0};
    uint8_t msg[256];
    struct wire_wr w;
    if (rc < 0) {
        json_object_set_new(op->failed, kc->name, json_string(err ? err->msg : "failed"));
        goto done;
    }
    if (keyring_view_decode(reply, len, &v) < 0) {
        json_object_set_new(op->failed, kc->name, json_string("malformed key ring in the reply"));
        goto done;
    }
    wire_wr_init(&w, msg, sizeof msg);
    rc = keyop_request(op, kc, &v, &w, &why);
    if (rc == 1) {
        keyop_count_ring(op, &v);
        goto done;
    }
    if (rc == 0)
        rc = peers_call(op->n->peers, &kc->addr, CALL_KEYOP, msg, w.len, 1024, KEYOP_TIMEOUT_MS,
                        on_keyop_done, kc);
    sodium_memzero(msg, sizeof msg);
    if (rc == 0)
        return; /* still pending */
    json_object_set_new(op->failed, kc->name,
                        json_string(why.msg[0] ? why.msg : mesh_strerror(rc)));
done:
    op->pending--;
    keyop_maybe_finish(op);
}

/* Finds the member named, or with the id given in hex. */
static const struct swim_member *member_named(const struct swim *sw, const char *name)
{
    for (size_t i = 0; i < swim_member_count(sw); i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        char id[NODE_ID_STR_LEN + 1];
        identity_id_format(m->id, id);
        if (strcmp(m->name, name) == 0 || strcmp(id, name) == 0)
            return m;
    }
    return NULL;
}

/* Runs a key operation here, then on every other alive member but the excluded ones, and
 * answers with the tally. */
static void keyop_start(struct node *n, struct evhttp_request *req, enum keyop_kind kind,
                        const uint8_t *key, json_t *exclude)
{
    struct mesh_err err = {0};
    const struct swim *sw = gossip_swim(n->gossip);
    size_t idx;
    json_t *x;
    if (n->nkeyops >= NODE_KEYOP_MAX) {
        api_reply_error(req, 503, "too many key operations in progress");
        return;
    }
    if (json_array_size(exclude) > KEYOP_MAX_EXCLUDE) {
        api_reply_error(req, 400, "exclude: at most %d nodes", KEYOP_MAX_EXCLUDE);
        return;
    }
    /* Check the exclusions before anything changes: a typo must not send the key to the member
     * it was meant to keep out. */
    json_array_foreach(exclude, idx, x)
    {
        const char *name = json_string_value(x);
        const struct swim_member *m = name ? member_named(sw, name) : NULL;
        if (!m) {
            api_reply_error(req, 400, "exclude: no member named %s",
                            name ? name : "(not a string)");
            return;
        }
        if (m == swim_self(sw)) {
            api_reply_error(req, 400, "exclude: %s is this node", name);
            return;
        }
    }
    int rc = keyop_apply(n, kind, key, NULL, &err);
    if (rc < 0) {
        api_reply_error(req, 400, "%s", err.msg);
        return;
    }
    if (kind != KEYOP_LIST)
        log_info(&n->log, "key ring: %s, here and on every member%s", keyop_names[kind],
                 json_array_size(exclude) ? " not excluded" : "");
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
    op->skipped = json_array();
    op->keys = json_object();
    op->nodes = 1;
    if (key) {
        memcpy(op->key, key, MESH_KEY_LEN);
        mesh_key_fingerprint(key, op->fp);
    }
    json_array_foreach(exclude, idx, x)
    {
        const struct swim_member *m = member_named(sw, json_string_value(x));
        memcpy(op->excluded[op->nexcluded++], m->id, NODE_ID_LEN);
    }
    struct keyring_view here = {.n = n->kr.n, .primary = (int)n->kr.primary};
    for (size_t i = 0; i < n->kr.n; i++)
        memcpy(here.fp[i], n->kr.e[i].fp, MESH_KEY_FP_LEN);
    keyop_count_ring(op, &here);

    /* Every operation starts with a list: its reply is all a list needs, and the others learn
     * which key the recipient's proof needs. */
    uint8_t msg[16];
    struct wire_wr w;
    wire_wr_init(&w, msg, sizeof msg);
    msgpack_pack_array(&w.pk, 2);
    msgpack_pack_uint8(&w.pk, KEYOP_VERSION);
    msgpack_pack_uint8(&w.pk, KEYOP_LIST);

    size_t ncalls = 0;
    for (size_t i = 0; i < swim_member_count(sw) && ncalls < alive; i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (m == swim_self(sw) || m->state != SWIM_ALIVE)
            continue;
        if (kind == KEYOP_INSTALL && keyop_excluded(op, m->id)) {
            json_array_append_new(op->skipped, json_string(m->name));
            continue;
        }
        op->nodes++;
        struct keyop_call *kc = &op->calls[ncalls++];
        kc->op = op;
        snprintf(kc->name, sizeof kc->name, "%s", m->name);
        memcpy(kc->id, m->id, NODE_ID_LEN);
        kc->addr = m->addr;
        rc = peers_call(n->peers, &m->addr, CALL_KEYOP, msg, w.len, 1024, KEYOP_TIMEOUT_MS,
                        kind == KEYOP_LIST ? on_keyop_done : on_keyop_listed, kc);
        if (rc < 0) {
            json_object_set_new(op->failed, m->name, json_string(mesh_strerror(rc)));
            continue;
        }
        op->pending++;
    }
    op->watch = (struct api_watch){.gone = keyop_gone, .ud = op};
    api_watch(req, &op->watch);
    keyop_maybe_finish(op);
}

static void h_keys_list(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)rest;
    keyop_start(ud, req, KEYOP_LIST, NULL, NULL);
}

static void h_keys_op(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)rest;
    json_t *body = api_read_json(req);
    if (!body)
        return;
    const char *opname = json_string_value(json_object_get(body, "op"));
    const char *keytext = json_string_value(json_object_get(body, "key"));
    json_t *exclude = json_object_get(body, "exclude");
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
    else if (exclude && (!json_is_array(exclude) || kind != KEYOP_INSTALL))
        api_reply_error(req, 400, "exclude: a list of node names or ids, for install only");
    else if (mesh_key_decode(keytext, key, &err) < 0)
        api_reply_error(req, 400, "key: %s", err.msg);
    else
        keyop_start(ud, req, (enum keyop_kind)kind, key, exclude);
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
