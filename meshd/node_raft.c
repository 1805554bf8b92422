/* The node's Raft side: starting the cluster on the mesh transport, the autopilot timer, the
 * applications API (writes go through the leader, forwarded over the mesh from followers; reads
 * come from the local replica) and the services the leader offers to followers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dlist.h"
#include "node.h"
#include "spec.h"
#include "version.h"
#include "wire.h"

#define WRITE_TIMEOUT_MS    5000 /* a write that has not committed by then fails, with why */
#define READ_WAIT_MS        5000 /* a consistent read waits this long for the replica */
#define READ_YOUR_WRITES_MS 2000 /* a read after a forwarded write waits this long */
#define AUTOPILOT_MS        250  /* one configuration change at a time, so steps come often */
#define FORWARD_MAX_REPLY   1024
#define FORWARD_MAX_REQUEST NODE_RELAY_MAX_REQUEST

/* ---- names and counts ---------------------------------------------------------------------- */

/* The member whose node id gives raft id `id`, or NULL. */
static const struct swim_member *member_by_raft_id(struct node *n, raft_id id)
{
    const struct swim *sw = gossip_swim(n->gossip);
    for (size_t i = 0; i < swim_member_count(sw); i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (cluster_raft_id(m->id) == id)
            return m;
    }
    return NULL;
}

static void raft_name(struct node *n, raft_id id, char *buf, size_t len)
{
    const struct swim_member *m = member_by_raft_id(n, id);
    if (m)
        snprintf(buf, len, "%s", m->name);
    else
        snprintf(buf, len, "%016llx", (unsigned long long)id);
}

/* Voters gossip reports alive, and voters in all: what a "no quorum" message says. */
static void voters_reachable(struct node *n, unsigned *ret_alive, unsigned *ret_total)
{
    const struct raft_configuration *conf = cluster_configuration(n->cluster);
    unsigned alive = 0, total = 0;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].role != RAFT_VOTER)
            continue;
        total++;
        const struct swim_member *m = member_by_raft_id(n, conf->servers[i].id);
        if (conf->servers[i].id == n->raft_id || (m && m->state == SWIM_ALIVE))
            alive++;
    }
    *ret_alive = alive;
    *ret_total = total;
}

static void no_quorum_msg(struct node *n, const char *what, char *buf, size_t len)
{
    unsigned alive, total;
    voters_reachable(n, &alive, &total);
    if (total == 0) {
        snprintf(buf, len,
                 "%s: this node has no Raft configuration yet (the leader adds a new node "
                 "within seconds of its join); try again or use another node",
                 what);
        return;
    }
    unsigned majority = total / 2 + 1;
    /* Gossip notices a dead leader a few seconds after Raft does: with a majority still
     * reachable the write failed for another reason (most often an election in progress). */
    if (alive >= majority)
        snprintf(buf, len,
                 "%s: %u of %u voters reachable, enough for a majority (%u); the leader is "
                 "probably changing: retry in a moment",
                 what, alive, total, majority);
    else
        snprintf(buf, len, "%s: %u of %u voters reachable, a majority (%u) is needed", what, alive,
                 total, majority);
}

/* ---- status -------------------------------------------------------------------------------- */

json_t *node_raft_status(struct node *n)
{
    if (!n->cluster)
        return json_null();
    struct cluster_info info;
    char name[SWIM_NAME_MAX + 1];
    cluster_info(n->cluster, &info);
    json_t *voters = json_array(), *standbys = json_array();
    const struct raft_configuration *conf = cluster_configuration(n->cluster);
    for (unsigned i = 0; i < conf->n; i++) {
        raft_name(n, conf->servers[i].id, name, sizeof name);
        json_array_append_new(conf->servers[i].role == RAFT_VOTER ? voters : standbys,
                              json_string(name));
    }
    json_t *leader = json_null();
    if (info.leader_id) {
        raft_name(n, info.leader_id, name, sizeof name);
        leader = json_string(name);
    }
    return json_pack("{s:s, s:o, s:I, s:I, s:I, s:o, s:o, s:b}", "state",
                     cluster_state_name(info.state), "leader", leader, "term",
                     (json_int_t)info.term, "commit_index", (json_int_t)info.commit_index,
                     "applied_index", (json_int_t)info.last_applied, "voters", voters, "standbys",
                     standbys, "disk_full_at_start", info.reserve_released);
}

static void h_raft(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    (void)rest;
    if (!n->cluster) {
        api_reply_error(req, 503, "raft is restarting on this node; try again");
        return;
    }
    json_t *servers = json_array();
    const struct raft_configuration *conf = cluster_configuration(n->cluster);
    struct cluster_info info;
    cluster_info(n->cluster, &info);
    for (unsigned i = 0; i < conf->n; i++) {
        char name[SWIM_NAME_MAX + 1], id[17];
        const struct raft_server *s = &conf->servers[i];
        const struct swim_member *m = member_by_raft_id(n, s->id);
        raft_name(n, s->id, name, sizeof name);
        snprintf(id, sizeof id, "%016llx", (unsigned long long)s->id);
        json_array_append_new(servers, json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "name", name,
                                                 "raft_id", id, "address", s->address, "role",
                                                 cluster_role_name(s->role), "leader",
                                                 s->id == info.leader_id, "status",
                                                 s->id == n->raft_id ? "alive"
                                                 : m                 ? node_member_status(m)
                                                                     : "unknown"));
    }
    json_t *body = node_raft_status(n);
    json_object_set_new(body, "servers", servers);
    if (n->transport_ready) {
        /* Connections that followed a route through other nodes (transport.h, "Relaying"). */
        const struct transport_stats *st = transport_stats(&n->transport);
        json_object_set_new(
            body, "relays",
            json_pack("{s:I, s:I, s:I, s:I, s:I}", "connects", (json_int_t)st->connects_relayed,
                      "accepted", (json_int_t)st->accepted_relayed, "relayed",
                      (json_int_t)st->relayed, "refused", (json_int_t)st->relay_refused, "rerouted",
                      (json_int_t)st->rerouted));
    }
    api_reply_json(req, 200, body);
}

/* ---- writes -------------------------------------------------------------------------------- */

/* A write in progress for an API client: applied here (leader) or forwarded to the leader. */
struct write {
    struct node *n;
    struct evhttp_request *req; /* NULL once the client hung up */
    struct api_watch watch;
    struct event *timer;
    struct cluster_req *creq; /* applied here: detach on timeout */
    char name[NODE_READ_NAME_MAX + 1];
    bool forwarded;
    bool done;            /* answered (or the client is gone) */
    bool waiting_forward; /* a peers_call is in flight and owns a reference */
    struct write *prev, *next;
};

static void write_free(struct write *w)
{
    struct node *n = w->n;
    DLIST_REMOVE(n->writes, w);
    if (w->timer)
        event_free(w->timer);
    free(w);
}

static void write_gone(void *ud)
{
    struct write *w = ud;
    w->req = NULL;
}

/* Answers the client (once); frees the write unless a forwarded call still refers to it. */
static void write_answer(struct write *w, int code, json_t *body)
{
    if (!w->done) {
        w->done = true;
        if (w->req) {
            api_unwatch(w->req);
            api_reply_json(w->req, code, body);
            body = NULL;
        }
        if (w->creq)
            cluster_req_detach(w->creq);
        w->creq = NULL;
    }
    json_decref(body);
    if (!w->waiting_forward)
        write_free(w);
}

/* The answer to a write. Outcomes answered with 4xx (outcome_http) carry an "error" too, like
 * every other API error, so that clients (meshctl) can say what went wrong. */
static json_t *result_json(const char *name, int outcome, uint64_t version)
{
    json_t *o = json_pack("{s:s, s:s, s:I}", "name", name, "result", fsm_outcome_str(outcome),
                          "version", (json_int_t)version);
    char msg[NODE_READ_NAME_MAX + 96];
    if (outcome == FSM_OUT_NOT_FOUND && strchr(name, '/'))
        snprintf(msg, sizeof msg, "'%s' not found (or changed meanwhile)", name);
    else if (outcome == FSM_OUT_NOT_FOUND)
        snprintf(msg, sizeof msg, "no application '%s'", name);
    else if (outcome == FSM_OUT_REJECTED || outcome == FSM_OUT_UNKNOWN)
        snprintf(msg, sizeof msg, "the replicated state machine %s the write for '%s'",
                 outcome == FSM_OUT_REJECTED ? "rejected" : "did not understand", name);
    else
        return o;
    json_object_set_new(o, "error", json_string(msg));
    return o;
}

static int outcome_http(int outcome)
{
    switch (outcome) {
    case FSM_OUT_CREATED:
        return 201;
    case FSM_OUT_NOT_FOUND:
        return 404;
    case FSM_OUT_REJECTED:
    case FSM_OUT_UNKNOWN:
        return 400;
    default:
        return 200;
    }
}

static void on_local_applied(void *ud, int status, const struct fsm_result *res,
                             const struct mesh_err *err)
{
    struct write *w = ud;
    w->creq = NULL;
    if (status == -ENOSPC) {
        write_answer(w, 507, json_pack("{s:s}", "error", err ? err->msg : "disk full"));
        return;
    }
    if (status < 0) {
        char what[MESH_ERRMSG_LEN], msg[MESH_ERRMSG_LEN + 128];
        snprintf(what, sizeof what, "%s", err ? err->msg : "write failed");
        no_quorum_msg(w->n, what, msg, sizeof msg);
        write_answer(w, 503, json_pack("{s:s}", "error", msg));
        return;
    }
    write_answer(w, outcome_http(res->outcome), result_json(w->name, res->outcome, res->version));
}

/* Forwarded writes carry the command; the leader answers [outcome, version] or an error. */
static void on_forward_reply(void *ud, int rc, const uint8_t *reply, size_t len,
                             const struct mesh_err *err)
{
    struct write *w = ud;
    w->waiting_forward = false;
    if (w->done) {
        write_free(w);
        return;
    }
    if (rc == MESH_EINVAL || rc == MESH_ETOOBIG || rc == MESH_EUNSUPPORTED || rc == -ENOSPC) {
        /* The leader checked the write and refused it, or cannot store anything: retrying at
         * once will not help. */
        char msg[MESH_ERRMSG_LEN + 64];
        snprintf(msg, sizeof msg, "the leader refused the write: %s",
                 err ? err->msg : mesh_strerror(rc));
        write_answer(w, rc == -ENOSPC ? 507 : 400, json_pack("{s:s}", "error", msg));
        return;
    }
    if (rc < 0) {
        char what[MESH_ERRMSG_LEN + 64], msg[MESH_ERRMSG_LEN + 192];
        snprintf(what, sizeof what, "the leader did not take the write (%.200s)",
                 err ? err->msg : mesh_strerror(rc));
        no_quorum_msg(w->n, what, msg, sizeof msg);
        write_answer(w, 503, json_pack("{s:s}", "error", msg));
        return;
    }
    struct wire_rd r;
    uint32_t cnt;
    uint64_t outcome, version, index = 0;
    wire_rd_init(&r, reply, len);
    if (wire_rd_array(&r, &cnt) < 0 || cnt < 3 || wire_rd_uint(&r, &outcome) < 0 ||
        wire_rd_uint(&r, &version) < 0 || wire_rd_uint(&r, &index) < 0 ||
        outcome > FSM_OUT_UNKNOWN) {
        write_answer(w, 502, json_pack("{s:s}", "error", "malformed answer from the leader"));
        return;
    }
    /* Committed. Answer now; reads on this node wait for the replica to reach the write's
     * index instead (read_new), so the client still reads its own writes here without every
     * forwarded write waiting for the next heartbeat to carry the commit index. */
    if (index > w->n->rw_index)
        w->n->rw_index = index;
    write_answer(w, outcome_http((int)outcome), result_json(w->name, (int)outcome, version));
}

static void on_write_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct write *w = arg;
    char msg[256];
    (void)fd;
    (void)what;
    no_quorum_msg(w->n, "the write did not commit in time", msg, sizeof msg);
    write_answer(w, 503, json_pack("{s:s}", "error", msg));
}

/* Sends cmd (raft_malloc'ed, always consumed) to the leader: applied here when we lead, else
 * forwarded. The client gets its answer from the callbacks above. */
void node_raft_write(struct node *n, struct evhttp_request *req, const char *name,
                     struct raft_buffer *cmd)
{
    struct cluster_info info;
    char msg[256];
    if (n->raft_closing) {
        raft_free(cmd->base);
        api_reply_error(req, 503, "this node is shutting down; use another node");
        return;
    }
    if (!n->cluster) {
        raft_free(cmd->base);
        api_reply_error(req, 503, "raft is restarting on this node; try again");
        return;
    }
    cluster_info(n->cluster, &info);
    if (!info.leader_id) {
        raft_free(cmd->base);
        no_quorum_msg(n, "no leader", msg, sizeof msg);
        api_reply_error(req, 503, "%s", msg);
        return;
    }
    struct write *w = calloc(1, sizeof *w);
    if (!w) {
        raft_free(cmd->base);
        api_reply_error(req, 500, "out of memory");
        return;
    }
    w->n = n;
    w->req = req;
    snprintf(w->name, sizeof w->name, "%s", name);
    DLIST_PUSH(n->writes, w);
    w->watch = (struct api_watch){.gone = write_gone, .ud = w};
    api_watch(req, &w->watch);
    w->timer = evtimer_new(n->loop.base, on_write_timeout, w);
    struct timeval tv = {WRITE_TIMEOUT_MS / 1000, (WRITE_TIMEOUT_MS % 1000) * 1000};
    if (w->timer)
        evtimer_add(w->timer, &tv);

    int rc;
    if (info.leader_id == n->raft_id) {
        rc = cluster_apply(n->cluster, cmd, on_local_applied, w, &w->creq);
        if (rc < 0)
            raft_free(cmd->base);
    } else {
        struct mesh_addr to;
        rc = mesh_addr_parse(info.leader_address, 0, &to);
        if (rc == 0)
            rc = node_call_routed(n, &to, CALL_RAFT_APPLY, cmd->base, cmd->len, FORWARD_MAX_REPLY,
                                  WRITE_TIMEOUT_MS, on_forward_reply, w);
        raft_free(cmd->base);
        if (rc == 0) {
            w->forwarded = true;
            w->waiting_forward = true;
        }
    }
    if (rc < 0) {
        no_quorum_msg(n, "cannot reach the leader", msg, sizeof msg);
        write_answer(w, 503, json_pack("{s:s}", "error", msg));
    }
}

/* The leader's side of a forwarded write. */
/* A request a follower sent to the leader, and the node serving it. */
struct served {
    struct node *n;
    struct peers_req *req;
};

static void on_served_applied(void *ud, int status, const struct fsm_result *res,
                              const struct mesh_err *err)
{
    struct served *sv = ud;
    struct peers_req *req = sv->req;
    struct node *n = sv->n;
    free(sv);
    if (status < 0) {
        peers_respond(req, status, NULL, 0, err ? err->msg : "write failed");
        return;
    }
    /* The entry is applied here, so the commit index covers it: the follower waits for its own
     * replica to reach it before answering, so that a client reads its own writes there. */
    struct cluster_info info;
    uint8_t buf[48];
    struct wire_wr w;
    cluster_info(n->cluster, &info);
    wire_wr_init(&w, buf, sizeof buf);
    msgpack_pack_array(&w.pk, 3);
    msgpack_pack_uint8(&w.pk, (uint8_t)res->outcome);
    msgpack_pack_uint64(&w.pk, res->version);
    msgpack_pack_uint64(&w.pk, info.commit_index); /* last_applied lags inside apply */
    peers_respond(req, 0, buf, w.len, NULL);
}

/* The command a follower forwarded, as this leader would have written it: decoded, checked by
 * the rules the API applies before a write (a spec by spec_validate, a service record by
 * svc_rec_parse, the rest by the machine's own rules) and encoded again, padded. So the log only
 * ever holds canonical commands, whatever bytes a buggy or hostile member sent: a spec that
 * would crash or confuse a reader, a length raft_uv cannot store (issue 10). Returns 0 and *out
 * (raft_malloc'ed), or an error with why. */
static int forward_canonical(const uint8_t *data, size_t len, struct raft_buffer *out, char *why,
                             size_t whylen)
{
    struct fsm_cmd c;
    int rc = fsm_cmd_decode(data, len, &c);
    if (rc < 0) {
        snprintf(why, whylen, "not a command this leader accepts: %s", mesh_strerror(rc));
        return rc == MESH_EUNSUPPORTED ? rc : MESH_EINVAL;
    }
    char *text = NULL;
    if (c.type == FSM_CMD_PUT_APP) {
        struct spec_errors errs;
        json_t *canon = NULL;
        if ((rc = spec_from_bytes(c.value, c.value_len, &canon, &errs)) < 0) {
            char line[512];
            spec_errors_format(&errs, line, sizeof line);
            snprintf(why, whylen, "application %.*s: %s", (int)c.name_len, c.name, line);
            return rc == MESH_ENOMEM ? rc : MESH_EINVAL;
        }
        const char *specname = json_string_value(json_object_get(canon, "name"));
        if (!specname || strlen(specname) != c.name_len || memcmp(specname, c.name, c.name_len)) {
            json_decref(canon);
            snprintf(why, whylen, "application %.*s: the spec names another one", (int)c.name_len,
                     c.name);
            return MESH_EINVAL;
        }
        text = spec_dump(canon);
        json_decref(canon);
        if (!text)
            return MESH_ENOMEM;
        c.value = (const uint8_t *)text;
        c.value_len = strlen(text);
    } else if (c.type == FSM_CMD_PUT_REC) {
        struct svc_rec rec;
        if (svc_rec_parse(c.name, c.name_len, c.value, c.value_len, &rec) < 0) {
            snprintf(why, whylen, "record %.*s: not a service declaration this node would write",
                     (int)c.name_len, c.name);
            return MESH_EINVAL;
        }
        return svc_rec_encode(&rec, out);
    }
    rc = fsm_cmd_encode(&c, out);
    free(text);
    if (rc < 0)
        snprintf(why, whylen, "cannot encode the write: %s", mesh_strerror(rc));
    return rc;
}

static void serve_apply(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    if (!n->cluster) {
        peers_respond(req, MESH_ESTATE, NULL, 0, "raft is restarting on this node");
        return;
    }
    struct raft_buffer cmd;
    char why[640] = "";
    int rc = forward_canonical(req->data, req->len, &cmd, why, sizeof why);
    if (rc < 0) {
        uint32_t held = 0;
        char from[MESH_ADDR_STRLEN];
        if (log_ratelimit_host(&n->fwd_log_rl, &req->from, mesh_now_ms(), 60000, &held))
            log_warn(&n->log, "refused a write forwarded by %s: %s%s",
                     mesh_addr_format(&req->from, from, sizeof from), why,
                     held ? " (and more in the last minute)" : "");
        peers_respond(req, rc, NULL, 0, why[0] ? why : mesh_strerror(rc));
        return;
    }
    struct served *sv = malloc(sizeof *sv);
    if (!sv) {
        raft_free(cmd.base);
        peers_respond(req, MESH_ENOMEM, NULL, 0, "out of memory");
        return;
    }
    sv->n = n;
    sv->req = req;
    rc = cluster_apply(n->cluster, &cmd, on_served_applied, sv, NULL);
    if (rc < 0) {
        free(sv);
        raft_free(cmd.base);
        peers_respond(req, rc, NULL, 0,
                      rc == MESH_ESTATE ? "not the leader (any more): retry" : mesh_strerror(rc));
    }
}

/* ---- the applications API ---------------------------------------------------------------- */

static bool app_name_from_path(struct evhttp_request *req, const char *rest, char *buf, size_t len)
{
    size_t l = strlen(rest);
    if (l == 0 || l >= len || !fsm_app_name_valid(rest, l)) {
        api_reply_error(req, 400, "bad application name '%.80s'", rest);
        return false;
    }
    memcpy(buf, rest, l + 1);
    return true;
}

static void h_app_put(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    char name[FSM_APP_NAME_MAX + 1];
    if (!app_name_from_path(req, rest, name, sizeof name))
        return;
    json_t *body = api_read_json(req);
    if (!body)
        return;
    struct spec_errors errs;
    json_t *canon = NULL;
    int rc = spec_validate(body, &canon, &errs);
    json_decref(body);
    if (rc < 0) {
        char line[1024];
        spec_errors_format(&errs, line, sizeof line);
        api_reply_json(
            req, 400,
            json_pack("{s:s, s:o}", "error", line, "problems", spec_errors_to_json(&errs)));
        return;
    }
    const char *specname = json_string_value(json_object_get(canon, "name"));
    if (!specname || strcmp(specname, name) != 0) {
        api_reply_error(req, 400, "name: '%s' does not match the URL's '%s'",
                        specname ? specname : "", name);
        json_decref(canon);
        return;
    }
    char *text = spec_dump(canon);
    json_decref(canon);
    struct raft_buffer cmd;
    rc = text ? fsm_cmd_put_app(name, text, strlen(text), &cmd) : MESH_ENOMEM;
    free(text);
    if (rc < 0) {
        api_reply_error(req, 400, "cannot encode the write: %s", mesh_strerror(rc));
        return;
    }
    node_raft_write(n, req, name, &cmd);
}

static void h_app_delete(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    char name[FSM_APP_NAME_MAX + 1];
    if (!app_name_from_path(req, rest, name, sizeof name))
        return;
    struct raft_buffer cmd;
    int rc = fsm_cmd_delete_app(name, &cmd);
    if (rc < 0) {
        api_reply_error(req, 400, "cannot encode the write: %s", mesh_strerror(rc));
        return;
    }
    node_raft_write(n, req, name, &cmd);
}

/* Whether reads may be stale: no leader known to this replica. */
static bool replica_stale(struct node *n)
{
    struct cluster_info info;
    cluster_info(n->cluster, &info);
    return info.leader_id == 0;
}

/* An application for the read API. A stored spec that is not valid (node_spec_cached) shows
 * as "spec": null with an "error", so that it can be seen and deployed again or deleted. */
static json_t *app_json(struct node *n, const struct fsm_app *a, bool with_spec)
{
    json_t *spec = node_spec_cached(n, a);
    json_t *o = json_pack("{s:s, s:I, s:I}", "name", a->name, "version", (json_int_t)a->version,
                          "revision", (json_int_t)a->mod_rev);
    json_object_set_new(
        o, "microservices",
        json_integer((json_int_t)json_array_size(json_object_get(spec, "microservices"))));
    if (!spec)
        json_object_set_new(o, "error", json_string("the stored spec is not valid"));
    if (with_spec)
        json_object_set_new(o, "spec", spec ? spec : json_null());
    else
        json_decref(spec);
    return o;
}

/* Reads answer from the local replica; with ?consistent=true, only once this replica has
 * applied everything the leader had committed when asked (a read index, Raft thesis §6.4). */
struct read {
    struct node *n;
    struct evhttp_request *req;
    struct api_watch watch;
    struct event *timer;
    char name[NODE_READ_NAME_MAX + 1]; /* "" = list */
    node_read_fn reply;                /* answers from the local replica */
    uint64_t index;                    /* wait until applied >= index */
    uint64_t deadline;
    struct cluster_req *creq; /* our local barrier, while it is out: detach when orphaned */
    bool waiting_call;        /* a read index call or our barrier is out and refers to us */
    bool done;
    bool best_effort; /* a plain read waiting for our own last write: never fails */
    struct read *prev, *next;
};

static void read_free(struct read *r)
{
    struct node *n = r->n;
    DLIST_REMOVE(n->reads, r);
    if (r->timer)
        event_free(r->timer);
    free(r);
}

static void read_gone(void *ud)
{
    struct read *r = ud;
    r->req = NULL;
}

static void reply_read(struct node *n, struct evhttp_request *req, const char *name,
                       bool consistent)
{
    struct fsm *fsm = cluster_fsm(n->cluster);
    bool stale = !consistent && replica_stale(n);
    if (name[0]) {
        struct fsm_app a;
        if (fsm_app_find(fsm, name, &a) < 0) {
            api_reply_error(req, 404, "no application '%s'%s", name,
                            stale ? " (this replica has no leader and may be stale)" : "");
            return;
        }
        json_t *o = app_json(n, &a, true);
        json_object_set_new(o, "stale", json_boolean(stale));
        api_reply_json(req, 200, o);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < fsm_app_count(fsm); i++) {
        struct fsm_app a;
        if (fsm_app_at(fsm, i, &a) == 0)
            json_array_append_new(arr, app_json(n, &a, false));
    }
    api_reply_json(req, 200,
                   json_pack("{s:o, s:b, s:I}", "apps", arr, "stale", stale, "revision",
                             (json_int_t)fsm_revision(fsm)));
}

static void read_finish(struct read *r, int code, const char *msg)
{
    if (!r->done) {
        r->done = true;
        if (r->req) {
            api_unwatch(r->req);
            if (code == 200)
                r->reply(r->n, r->req, r->name, !r->best_effort);
            else
                api_reply_error(r->req, code, "%s", msg);
        }
    }
    if (!r->waiting_call)
        read_free(r);
}

static void read_poll(struct read *r)
{
    struct cluster_info info;
    cluster_info(r->n->cluster, &info);
    if (info.last_applied >= r->index) {
        read_finish(r, 200, NULL);
        return;
    }
    if (mesh_now_ms() >= r->deadline) {
        /* A plain read only waited to show the client its own write: answer what we have. */
        read_finish(r, r->best_effort ? 200 : 503,
                    "this replica did not catch up with the leader in time");
        return;
    }
    struct timeval tv = {0, 5 * 1000};
    evtimer_add(r->timer, &tv);
}

static void on_read_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    read_poll(arg);
}

static void on_read_index(void *ud, int rc, const uint8_t *reply, size_t len,
                          const struct mesh_err *err)
{
    struct read *r = ud;
    r->waiting_call = false;
    if (r->done) {
        read_free(r);
        return;
    }
    struct wire_rd rd;
    uint64_t idx;
    wire_rd_init(&rd, reply, len);
    if (rc < 0 || wire_rd_uint(&rd, &idx) < 0) {
        char msg[MESH_ERRMSG_LEN + 64];
        snprintf(msg, sizeof msg, "consistent read: the leader did not answer: %s",
                 err ? err->msg : "malformed answer");
        read_finish(r, 503, msg);
        return;
    }
    r->index = idx;
    read_poll(r);
}

static void on_local_barrier(void *ud, int status)
{
    struct read *r = ud;
    r->waiting_call = false;
    r->creq = NULL;
    if (r->done) { /* orphaned by node_raft_stop */
        read_free(r);
        return;
    }
    if (status < 0) {
        read_finish(r, 503, "consistent read: leadership lost; retry");
        return;
    }
    r->index = 0;
    read_poll(r);
}

/* The leader's side of a read index: a barrier, then its commit index. */
static void on_served_read_barrier(void *ud, int status)
{
    struct served *sr = ud;
    if (status < 0) {
        peers_respond(sr->req, status, NULL, 0, "leadership lost; retry");
    } else {
        struct cluster_info info;
        uint8_t buf[16];
        struct wire_wr w;
        cluster_info(sr->n->cluster, &info);
        wire_wr_init(&w, buf, sizeof buf);
        msgpack_pack_uint64(&w.pk, info.commit_index);
        peers_respond(sr->req, 0, buf, w.len, NULL);
    }
    free(sr);
}

static void serve_read_index(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    if (!n->cluster) {
        peers_respond(req, MESH_ESTATE, NULL, 0, "raft is restarting on this node");
        return;
    }
    struct served *sr = malloc(sizeof *sr);
    if (!sr) {
        peers_respond(req, MESH_ENOMEM, NULL, 0, "out of memory");
        return;
    }
    sr->n = n;
    sr->req = req;
    int rc = cluster_barrier(n->cluster, on_served_read_barrier, sr, NULL);
    if (rc < 0) {
        free(sr);
        peers_respond(req, rc, NULL, 0, "not the leader (any more): retry");
    }
}

/* A read that answers once this replica has applied index r->index (set by the caller). On
 * failure replies 500 itself and returns NULL. */
static struct read *read_new(struct node *n, struct evhttp_request *req, const char *name,
                             node_read_fn reply, uint64_t wait_ms)
{
    struct read *r = calloc(1, sizeof *r);
    if (!r || !(r->timer = evtimer_new(n->loop.base, on_read_timer, r))) {
        free(r);
        api_reply_error(req, 500, "out of memory");
        return NULL;
    }
    r->n = n;
    r->req = req;
    r->reply = reply;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->deadline = mesh_now_ms() + wait_ms;
    DLIST_PUSH(n->reads, r);
    r->watch = (struct api_watch){.gone = read_gone, .ud = r};
    api_watch(req, &r->watch);
    return r;
}

void node_raft_read(struct node *n, struct evhttp_request *req, const char *name,
                    node_read_fn reply)
{
    char q[16];
    if (n->raft_closing) {
        api_reply_error(req, 503, "this node is shutting down; use another node");
        return;
    }
    if (!n->cluster) {
        api_reply_error(req, 503, "raft is restarting on this node; try again");
        return;
    }
    const char *c = api_query(req, "consistent", q, sizeof q);
    if (!c || strcmp(c, "true") != 0) {
        /* Local read; after a write forwarded from here, once the replica has caught up with it
         * (read your writes on this node). */
        struct cluster_info now;
        cluster_info(n->cluster, &now);
        if (now.last_applied >= n->rw_index) {
            reply(n, req, name, false);
            return;
        }
        struct read *r = read_new(n, req, name, reply, READ_YOUR_WRITES_MS);
        if (r) {
            r->index = n->rw_index;
            r->best_effort = true;
            read_poll(r);
        }
        return;
    }
    struct cluster_info info;
    char msg[256];
    cluster_info(n->cluster, &info);
    if (!info.leader_id) {
        no_quorum_msg(n, "consistent read: no leader", msg, sizeof msg);
        api_reply_error(req, 503, "%s", msg);
        return;
    }
    struct read *r = read_new(n, req, name, reply, READ_WAIT_MS);
    if (!r)
        return;
    int rc;
    if (info.leader_id == n->raft_id) {
        rc = cluster_barrier(n->cluster, on_local_barrier, r, &r->creq);
    } else {
        struct mesh_addr to;
        rc = mesh_addr_parse(info.leader_address, 0, &to);
        if (rc == 0)
            rc = node_call_routed(n, &to, CALL_RAFT_READ_INDEX, NULL, 0, 64, READ_WAIT_MS,
                                  on_read_index, r);
    }
    if (rc < 0) {
        read_finish(r, 503, "consistent read: cannot reach the leader");
        return;
    }
    r->waiting_call = true;
}

static void h_apps(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)rest;
    node_raft_read(ud, req, "", reply_read);
}

static void h_app_get(struct evhttp_request *req, const char *rest, void *ud)
{
    char name[FSM_APP_NAME_MAX + 1];
    if (!app_name_from_path(req, rest, name, sizeof name))
        return;
    node_raft_read(ud, req, name, reply_read);
}

/* ---- autopilot ------------------------------------------------------------------------------ */

static int voter_state(enum swim_member_state st)
{
    switch (st) {
    case SWIM_ALIVE:
        return VOTERS_ALIVE;
    case SWIM_SUSPECT:
        return VOTERS_SUSPECT;
    case SWIM_LEFT:
        return VOTERS_LEFT;
    default:
        return VOTERS_DEAD;
    }
}

static void on_autopilot(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    if (!n->cluster || n->leaving)
        return;
    const struct swim *sw = gossip_swim(n->gossip);
    size_t count = swim_member_count(sw);
    if (count > VOTERS_MEMBERS_MAX)
        count = VOTERS_MEMBERS_MAX;
    struct voters_member *members = calloc(count ? count : 1, sizeof *members);
    char(*addrs)[MESH_ADDR_STRLEN] = calloc(count ? count : 1, sizeof *addrs);
    if (!members || !addrs)
        goto out;
    const struct raft_configuration *conf = cluster_configuration(n->cluster);
    struct cluster_info info;
    cluster_info(n->cluster, &info);
    bool leading = info.state == RAFT_LEADER;
    for (size_t i = 0; i < count; i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        mesh_addr_format(&m->addr, addrs[i], sizeof addrs[i]);
        members[i] = (struct voters_member){
            .id = cluster_raft_id(m->id),
            .address = addrs[i],
            .state = voter_state(m->state),
            .since = m->state_change,
            .verified = m->verified,
        };
        /* The autopilot adds only members a link proved (voters.h rule 5): a candidate not
         * in the configuration yet is called, on demand and a few at a time, so that its
         * link's handshake proves it. Gossip alone made 400 fake servers (issue 10). */
        bool in_conf = false;
        for (unsigned j = 0; j < conf->n && !in_conf; j++)
            in_conf = conf->servers[j].id == members[i].id;
        if (!m->verified && !in_conf && m->state == SWIM_ALIVE && leading)
            node_verify_member(n, m);
    }
    struct voters_change ch;
    int rc = cluster_autopilot(n->cluster, members, count, mesh_now_ms(), &ch);
    if (rc < 0) {
        log_warn(&n->log, "raft: configuration change failed: %s", mesh_strerror(rc));
    } else if (ch.op != VOTERS_OP_NONE) {
        char name[SWIM_NAME_MAX + 1];
        raft_name(n, ch.id, name, sizeof name);
        log_info(&n->log, "raft: %s %s%s%s (%s)",
                 ch.op == VOTERS_OP_ADD      ? "adding"
                 : ch.op == VOTERS_OP_REMOVE ? "removing"
                                             : "making",
                 name, ch.op == VOTERS_OP_ASSIGN ? " a " : "",
                 ch.op == VOTERS_OP_ASSIGN ? cluster_role_name(ch.role) : "",
                 voters_reason_str(ch.reason));
    }
out:
    free(members);
    free(addrs);
}

/* ---- recovery ---------------------------------------------------------------------------- */

/* Raft's connections follow the mesh's routes (transport.h, "Relaying"). */
static int raft_next_hop(void *ud, const struct mesh_addr *dest, struct mesh_addr *ret_hop)
{
    return node_routes_next_hop_addr(ud, dest, ret_hop);
}

static int cluster_open(struct node *n, bool may_bootstrap, struct mesh_err *err)
{
    struct transport_config tc = {.base = n->loop.base,
                                  .loop = &n->loop.uv,
                                  .peers = n->peers,
                                  .next_hop = raft_next_hop,
                                  .next_hop_ud = n};
    int rc = transport_init(&n->transport, &tc, err);
    if (rc < 0)
        return rc;
    n->transport_ready = true;
    char addr[MESH_ADDR_STRLEN];
    struct cluster_config cc = {
        .uv = &n->loop.uv,
        .data_dir = n->cfg.data_dir,
        .id = n->raft_id,
        .address = mesh_addr_format(&n->cfg.advertise, addr, sizeof addr),
        .transport = &n->transport,
        .may_bootstrap = may_bootstrap,
        .timing = n->cfg.raft_timing,
        .target_voters = n->cfg.raft_voters,
    };
    if ((rc = cluster_start(&cc, &n->cluster, err)) < 0)
        return rc;
    struct cluster_info info;
    cluster_info(n->cluster, &info);
    if (info.reserve_released)
        log_error(&n->log,
                  "the disk of %s is full: released the space reserve so that this node "
                  "starts and serves reads; writes fail until space is freed",
                  n->cfg.data_dir);
    return 0;
}

static void recover_gone(void *ud)
{
    struct node *n = ud;
    n->recover_req = NULL;
}

static void recover_answer(struct node *n, int code, json_t *body)
{
    if (n->recover_req) {
        api_unwatch(n->recover_req);
        api_reply_json(n->recover_req, code, body);
    } else {
        json_decref(body);
    }
    n->recover_req = NULL;
    n->recovering = false;
}

/* Raft is closed and its storage idle: rewrite the log with a configuration of this node
 * alone, start again (canonical/raft's raft_recover; the Raft thesis §4.2.3 on forced
 * reconfiguration). */
static void recover_now(struct node *n)
{
    struct mesh_err err = {0}, err2 = {0};
    char addr[MESH_ADDR_STRLEN];
    int rc = cluster_recover(n->cfg.data_dir, n->raft_id,
                             mesh_addr_format(&n->cfg.advertise, addr, sizeof addr), &err);
    if (rc < 0)
        log_error(&n->log, "raft recover failed: %s", err.msg);
    else
        log_warn(&n->log, "raft recovered: this node is the only voter of a new configuration; "
                          "as leader it adds the other nodes again");
    int rc2 = cluster_open(n, false, &err2);
    if (rc2 < 0) {
        log_error(&n->log, "raft did not restart after recover: %s", err2.msg);
        recover_answer(n, 500, json_pack("{s:s}", "error", err2.msg));
        return;
    }
    if (rc < 0)
        recover_answer(n, 500, json_pack("{s:s}", "error", err.msg));
    else
        recover_answer(n, 200, json_pack("{s:s}", "result", "recovered"));
}

/* raft_uv finishes closing its segments on libuv's thread pool after the close callback: wait
 * until the libuv loop has nothing left in flight before touching the files again. */
static void on_recover_poll(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    if (uv_loop_alive(&n->loop.uv) && mesh_now_ms() < n->recover_deadline) {
        struct timeval tv = {0, 20 * 1000};
        evtimer_add(n->recover_timer, &tv);
        return;
    }
    event_free(n->recover_timer);
    n->recover_timer = NULL;
    recover_now(n);
}

static void on_closed_for_recover(void *ud)
{
    struct node *n = ud;
    n->cluster = NULL;
    transport_free(&n->transport);
    n->transport_ready = false;
    n->recover_deadline = mesh_now_ms() + 5000;
    n->recover_timer = evtimer_new(n->loop.base, on_recover_poll, n);
    struct timeval tv = {0, 0};
    if (!n->recover_timer || evtimer_add(n->recover_timer, &tv) != 0)
        recover_now(n);
}

static void h_raft_recover(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    char q[16];
    (void)rest;
    if (n->raft_closing) {
        api_reply_error(req, 503, "this node is shutting down");
        return;
    }
    if (!n->cluster || n->recovering) {
        api_reply_error(req, 409, "raft is already restarting on this node");
        return;
    }
    const char *force = api_query(req, "force", q, sizeof q);
    struct cluster_info info;
    cluster_info(n->cluster, &info);
    if (info.leader_id && !(force && strcmp(force, "true") == 0)) {
        char name[SWIM_NAME_MAX + 1];
        raft_name(n, info.leader_id, name, sizeof name);
        api_reply_error(req, 409,
                        "the mesh has a leader (%s): recover is only for a mesh whose voters are "
                        "lost for good (--force to override)",
                        name);
        return;
    }
    log_warn(&n->log, "raft recover requested: closing raft to rewrite its configuration");
    n->recovering = true;
    n->recover_req = req;
    n->recover_watch = (struct api_watch){.gone = recover_gone, .ud = n};
    api_watch(req, &n->recover_watch);
    cluster_close(n->cluster, on_closed_for_recover, n);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

int node_raft_start(struct node *n, bool may_bootstrap, struct mesh_err *err)
{
    n->raft_id = cluster_raft_id(n->ident.id);
    int rc = cluster_open(n, may_bootstrap, err);
    if (rc < 0)
        return rc;
    static const struct api_route_def routes[] = {
        {"GET", FOGMESH_API_PREFIX "/apps", h_apps},
        {"GET", FOGMESH_API_PREFIX "/apps/", h_app_get},
        {"PUT", FOGMESH_API_PREFIX "/apps/", h_app_put},
        {"DELETE", FOGMESH_API_PREFIX "/apps/", h_app_delete},
        {"GET", FOGMESH_API_PREFIX "/raft", h_raft},
        {"POST", FOGMESH_API_PREFIX "/raft/recover", h_raft_recover},
    };
    if ((rc = api_route_table(n->api, routes, sizeof routes / sizeof routes[0], n, err)) < 0 ||
        (rc = node_sched_start(n, err)) < 0)
        return rc;
    if ((rc = peers_serve(n->peers, CALL_RAFT_APPLY, FORWARD_MAX_REQUEST, serve_apply, n)) < 0 ||
        (rc = peers_serve(n->peers, CALL_RAFT_READ_INDEX, 64, serve_read_index, n)) < 0)
        return mesh_errf(err, rc, "cannot register the raft services");
    n->autopilot_timer = event_new(n->loop.base, -1, EV_PERSIST, on_autopilot, n);
    struct timeval tv = {AUTOPILOT_MS / 1000, (AUTOPILOT_MS % 1000) * 1000};
    if (!n->autopilot_timer || event_add(n->autopilot_timer, &tv) != 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    return 0;
}

static void on_cluster_closed(void *ud)
{
    struct node *n = ud;
    n->cluster = NULL;
    mesh_loop_stop(&n->loop);
}

static void on_close_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    log_error(&n->log,
              "raft did not close within %d s: stopping with it open (its memory is not freed)",
              NODE_RAFT_CLOSE_MS / 1000);
    mesh_loop_stop(&n->loop);
}

/* Closes raft while the loop still runs (its close is asynchronous), bounded in time. */
void node_raft_free(struct node *n)
{
    while (n->writes)
        write_free(n->writes);
    while (n->reads)
        read_free(n->reads);
}

void node_raft_stop(struct node *n)
{
    node_sched_stop(n);
    if (n->autopilot_timer) {
        event_free(n->autopilot_timer);
        n->autopilot_timer = NULL;
    }
    /* Writes and reads still waiting are answered no more. Those whose forwarded call is still
     * out stay (orphaned: done, no client) until its callback frees them: calls can complete
     * while the loop drains below; node_raft_free frees what is left once peers is gone (its
     * callbacks never fire then). Local applies and barriers are detached and freed now. */
    for (struct write *w = n->writes, *next; w; w = next) {
        next = w->next;
        if (w->req)
            api_unwatch(w->req);
        w->req = NULL;
        w->done = true;
        if (w->creq)
            cluster_req_detach(w->creq);
        w->creq = NULL;
        if (w->timer)
            event_free(w->timer);
        w->timer = NULL;
        if (!w->waiting_forward)
            write_free(w);
    }
    if (n->recover_req)
        api_unwatch(n->recover_req);
    n->recover_req = NULL;
    if (n->recover_timer)
        event_free(n->recover_timer);
    n->recover_timer = NULL;
    for (struct read *r = n->reads, *next; r; r = next) {
        next = r->next;
        if (r->req)
            api_unwatch(r->req);
        r->req = NULL;
        r->done = true;
        if (r->timer)
            evtimer_del(r->timer);
        /* Our own barrier is detached, so that no callback can come for it later (not even
         * from a raft that missed the deadline below and finishes closing in node_close). */
        if (r->creq) {
            cluster_req_detach(r->creq);
            r->creq = NULL;
            r->waiting_call = false;
        }
        if (!r->waiting_call)
            read_free(r);
    }
    /* From here only raft's close (or its deadline) ends the loop below: node_stop, from a
     * second signal or a leave finishing now, records its exit code only (node.h). */
    n->raft_closing = true;
    if (n->cluster) {
        uint64_t t0 = mesh_now_ms();
        struct event *deadline = evtimer_new(n->loop.base, on_close_deadline, n);
        struct timeval tv = {NODE_RAFT_CLOSE_MS / 1000, (NODE_RAFT_CLOSE_MS % 1000) * 1000};
        if (deadline)
            evtimer_add(deadline, &tv);
        cluster_close(n->cluster, on_cluster_closed, n);
        mesh_loop_run(&n->loop);
        if (deadline)
            event_free(deadline);
        if (!n->cluster)
            log_debug(&n->log, "raft closed in %llu ms", (unsigned long long)(mesh_now_ms() - t0));
    }
}
