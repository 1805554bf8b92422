/* The node's Raft side: starting the cluster on the mesh transport, the autopilot timer, the
 * applications API and the wiring of write forwarding and the read index (consensus/forward.h:
 * writes go through the leader, forwarded over the mesh from followers; reads come from the
 * local replica) to the API, the peers and raft, including the services the leader offers to
 * followers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "forward.h"
#include "node.h"
#include "spec.h"
#include "version.h"

#define AUTOPILOT_MS 250 /* one configuration change at a time, so steps come often */
_Static_assert(FORWARD_MAX_REQUEST == NODE_RELAY_MAX_REQUEST, "node.h's relay bound");

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

/* ---- writes and reads: consensus/forward.h bound to the API, the peers and raft ------------- */

/* An API client waiting for a write or a read: forward.h's token. */
struct api_op {
    struct node *n;
    struct evhttp_request *req; /* NULL once the client hung up */
    struct api_watch watch;
    bool watching;
    bool write;
    node_read_fn reply; /* reads: answers from the local replica */
    char name[NODE_READ_NAME_MAX + 1];
};

static void api_op_gone(void *ud)
{
    struct api_op *o = ud;
    o->req = NULL;
}

static struct api_op *api_op_new(struct node *n, struct evhttp_request *req, const char *name,
                                 bool write, node_read_fn reply)
{
    struct api_op *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->n = n;
    o->req = req;
    o->write = write;
    o->reply = reply;
    snprintf(o->name, sizeof o->name, "%s", name);
    return o;
}

/* From here the client may hang up before the answer (forward.h fires done later). */
static void api_op_watch(struct api_op *o)
{
    o->watch = (struct api_watch){.gone = api_op_gone, .ud = o};
    api_watch(o->req, &o->watch);
    o->watching = true;
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

/* Answers the client of o (unless it hung up or the node stops) and frees o. */
static void api_op_answer(struct api_op *o, const struct forward_result *res)
{
    struct node *n = o->n;
    struct evhttp_request *req = o->req;
    if (req && o->watching)
        api_unwatch(req);
    char msg[FORWARD_MSG_MAX + 192];
    if (!req || res->status == FORWARD_STOPPED) {
        free(o);
        return;
    }
    switch (res->status) {
    case FORWARD_OK:
        if (o->write)
            api_reply_json(req, outcome_http(res->outcome),
                           result_json(o->name, res->outcome, res->version));
        else if (!n->cluster) /* closed for a recover meanwhile */
            api_reply_error(req, 503, "raft is restarting on this node; try again");
        else
            o->reply(n, req, o->name, res->consistent);
        break;
    case FORWARD_REFUSED:
        api_reply_error(req, 400, "%s", res->msg);
        break;
    case FORWARD_DISK_FULL:
        api_reply_error(req, 507, "%s", res->msg);
        break;
    case FORWARD_NO_QUORUM:
        no_quorum_msg(n, res->msg, msg, sizeof msg);
        api_reply_error(req, 503, "%s", msg);
        break;
    case FORWARD_BAD_REPLY:
        api_reply_error(req, 502, "%s", res->msg);
        break;
    case FORWARD_NOMEM:
        api_reply_error(req, 500, "%s", res->msg);
        break;
    default:
        api_reply_error(req, 503, "%s", res->msg);
        break;
    }
    free(o);
}

static uint64_t fwd_now(void *ud)
{
    (void)ud;
    return mesh_now_ms();
}

static void fwd_state(void *ud, struct forward_state *ret)
{
    struct node *n = ud;
    memset(ret, 0, sizeof *ret);
    if (!n->cluster) /* closed for a recover: nothing is known until it is back */
        return;
    struct cluster_info info;
    cluster_info(n->cluster, &info);
    ret->leader_id = info.leader_id;
    ret->leader_address = info.leader_address;
    ret->leading = info.leader_id && info.leader_id == n->raft_id;
    ret->applied = info.last_applied;
    ret->commit = info.commit_index;
}

static void fwd_timer(void *ud, uint64_t at_ms)
{
    struct node *n = ud;
    evtimer_del(n->fwd_timer);
    if (at_ms == FORWARD_NO_DEADLINE)
        return;
    uint64_t now = mesh_now_ms(), ms = at_ms > now ? at_ms - now : 0;
    struct timeval tv = mesh_ms_to_timeval(ms);
    evtimer_add(n->fwd_timer, &tv);
}

static void on_fwd_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    forward_tick(n->fwd);
}

static void on_fwd_reply(void *ud, int rc, const uint8_t *reply, size_t len,
                         const struct mesh_err *err)
{
    forward_call_done(ud, rc, reply, len, err);
}

static int fwd_call(void *ud, struct forward_op *op, const char *address,
                    enum forward_call_type type, const uint8_t *buf, size_t len, size_t max_reply,
                    uint64_t timeout_ms)
{
    struct node *n = ud;
    struct mesh_addr to;
    int rc = mesh_addr_parse(address, 0, &to);
    if (rc < 0)
        return rc;
    return node_call_routed(n, &to,
                            type == FORWARD_CALL_APPLY ? CALL_RAFT_APPLY : CALL_RAFT_READ_INDEX,
                            buf, len, max_reply, timeout_ms, on_fwd_reply, op);
}

static void on_fwd_applied(void *ud, int status, const struct fsm_result *res,
                           const struct mesh_err *err)
{
    forward_submit_done(ud, status, res, err);
}

static int fwd_submit(void *ud, struct forward_op *op, struct raft_buffer *cmd, void **ret_handle)
{
    struct node *n = ud;
    if (!n->cluster)
        return MESH_ESTATE;
    struct cluster_req *creq = NULL;
    int rc = cluster_apply(n->cluster, cmd, on_fwd_applied, op, &creq);
    *ret_handle = creq;
    return rc;
}

static void on_fwd_barrier(void *ud, int status)
{
    forward_barrier_done(ud, status);
}

static int fwd_barrier(void *ud, struct forward_op *op, void **ret_handle)
{
    struct node *n = ud;
    if (!n->cluster)
        return MESH_ESTATE;
    struct cluster_req *creq = NULL;
    int rc = cluster_barrier(n->cluster, on_fwd_barrier, op, &creq);
    *ret_handle = creq;
    return rc;
}

static void fwd_detach(void *ud, void *handle)
{
    (void)ud;
    cluster_req_detach(handle);
}

static void fwd_done(void *ud, void *token, const struct forward_result *res)
{
    (void)ud;
    api_op_answer(token, res);
}

static void fwd_respond(void *ud, void *req, int rc, const uint8_t *reply, size_t len,
                        const char *msg)
{
    (void)ud;
    peers_respond(req, rc, reply, len, msg);
}

/* Service records are the daemon's format (node_svc.c): parsed and encoded again. */
static int fwd_canonical_rec(void *ud, const struct fsm_cmd *c, struct raft_buffer *out)
{
    struct svc_rec rec;
    (void)ud;
    if (svc_rec_parse(c->name, c->name_len, c->value, c->value_len, &rec) < 0)
        return MESH_EINVAL;
    return svc_rec_encode(&rec, out);
}

/* Raft's applied index, leader or state changed (cluster_config.on_change, from libuv's check
 * phase): the work runs from libevent like everything else that calls into raft. */
static void on_raft_change(void *ud)
{
    struct node *n = ud;
    if (n->raft_changed)
        event_active(n->raft_changed, EV_TIMEOUT, 0);
}

static void on_raft_changed(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    forward_changed(n->fwd);
    node_sched_changed(n);
}

static int fwd_init(struct node *n, struct mesh_err *err)
{
    struct forward_io io = {
        .data = n,
        .now = fwd_now,
        .state = fwd_state,
        .timer = fwd_timer,
        .call = fwd_call,
        .submit = fwd_submit,
        .barrier = fwd_barrier,
        .detach = fwd_detach,
        .done = fwd_done,
        .respond = fwd_respond,
        .canonical_rec = fwd_canonical_rec,
    };
    n->fwd_timer = evtimer_new(n->loop.base, on_fwd_timer, n);
    n->raft_changed = event_new(n->loop.base, -1, 0, on_raft_changed, n);
    if (!n->fwd_timer || !n->raft_changed || forward_new(&io, &n->fwd) < 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    return 0;
}

/* Sends cmd (raft_malloc'ed, always consumed) to the leader: applied here when we lead, else
 * forwarded (forward.h). The client gets its answer now or from fwd_done. */
void node_raft_write(struct node *n, struct evhttp_request *req, const char *name,
                     struct raft_buffer *cmd)
{
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
    struct api_op *o = api_op_new(n, req, name, true, NULL);
    if (!o) {
        raft_free(cmd->base);
        api_reply_error(req, 500, "out of memory");
        return;
    }
    struct forward_result res;
    if (forward_write(n->fwd, o, cmd, &res))
        api_op_answer(o, &res);
    else
        api_op_watch(o);
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
    struct api_op *o = api_op_new(n, req, name, false, reply);
    if (!o) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    struct forward_result res;
    if (forward_read(n->fwd, o, c && strcmp(c, "true") == 0, &res))
        api_op_answer(o, &res);
    else
        api_op_watch(o);
}

/* The leader's side of the calls followers make (forward.h). */
static void serve_apply(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    char why[640];
    if (!n->cluster) {
        peers_respond(req, MESH_ENOTLEADER, NULL, 0, "raft is restarting on this node");
        return;
    }
    struct mesh_addr from = req->from; /* req may be answered (and freed) below */
    if (forward_serve_apply(n->fwd, req, req->data, req->len, why, sizeof why) < 0) {
        uint32_t held = 0;
        char addr[MESH_ADDR_STRLEN];
        if (log_ratelimit_host(&n->fwd_log_rl, &from, mesh_now_ms(), 60000, &held))
            log_warn(&n->log, "refused a write forwarded by %s: %s%s",
                     mesh_addr_format(&from, addr, sizeof addr), why,
                     held ? " (and more in the last minute)" : "");
    }
}

static void serve_read_index(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    if (!n->cluster) {
        peers_respond(req, MESH_ESTATE, NULL, 0, "raft is restarting on this node");
        return;
    }
    forward_serve_read_index(n->fwd, req);
}

/* ---- the applications API ---------------------------------------------------------------- */

bool node_api_app_name(struct evhttp_request *req, const char *rest, char *buf, size_t len)
{
    size_t l = strlen(rest);
    if (l == 0 || l >= len || !fsm_app_name_valid(rest, l)) {
        api_reply_error(req, 400, "bad application name '%.80s'", rest);
        return false;
    }
    memcpy(buf, rest, l + 1);
    return true;
}

int node_api_app_put_cmd(struct evhttp_request *req, const char *rest,
                         char name[static FSM_APP_NAME_MAX + 1], struct raft_buffer *cmd)
{
    if (!node_api_app_name(req, rest, name, FSM_APP_NAME_MAX + 1))
        return MESH_EINVAL;
    json_t *body = api_read_json(req);
    if (!body)
        return MESH_EINVAL;
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
        return rc;
    }
    const char *specname = json_string_value(json_object_get(canon, "name"));
    if (!specname || strcmp(specname, name) != 0) {
        api_reply_error(req, 400, "name: '%s' does not match the URL's '%s'",
                        specname ? specname : "", name);
        json_decref(canon);
        return MESH_EINVAL;
    }
    char *text = spec_dump(canon);
    json_decref(canon);
    rc = text ? fsm_cmd_put_app(name, text, strlen(text), cmd) : MESH_ENOMEM;
    free(text);
    if (rc < 0)
        api_reply_error(req, 400, "cannot encode the write: %s", mesh_strerror(rc));
    return rc;
}

int node_api_app_delete_cmd(struct evhttp_request *req, const char *rest,
                            char name[static FSM_APP_NAME_MAX + 1], struct raft_buffer *cmd)
{
    if (!node_api_app_name(req, rest, name, FSM_APP_NAME_MAX + 1))
        return MESH_EINVAL;
    int rc = fsm_cmd_delete_app(name, cmd);
    if (rc < 0)
        api_reply_error(req, 400, "cannot encode the write: %s", mesh_strerror(rc));
    return rc;
}

static void h_app_put(struct evhttp_request *req, const char *rest, void *ud)
{
    char name[FSM_APP_NAME_MAX + 1];
    struct raft_buffer cmd;
    if (node_api_app_put_cmd(req, rest, name, &cmd) == 0)
        node_raft_write(ud, req, name, &cmd);
}

static void h_app_delete(struct evhttp_request *req, const char *rest, void *ud)
{
    char name[FSM_APP_NAME_MAX + 1];
    struct raft_buffer cmd;
    if (node_api_app_delete_cmd(req, rest, name, &cmd) == 0)
        node_raft_write(ud, req, name, &cmd);
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

static void h_apps(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)rest;
    node_raft_read(ud, req, "", reply_read);
}

static void h_app_get(struct evhttp_request *req, const char *rest, void *ud)
{
    char name[FSM_APP_NAME_MAX + 1];
    if (!node_api_app_name(req, rest, name, sizeof name))
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
        .on_change = on_raft_change,
        .change_ud = n,
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
        struct timeval tv = mesh_ms_to_timeval(20);
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
    int rc = fwd_init(n, err);
    if (rc < 0 || (rc = cluster_open(n, may_bootstrap, err)) < 0)
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
    struct timeval tv = mesh_ms_to_timeval(AUTOPILOT_MS);
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

void node_raft_free(struct node *n)
{
    forward_free(n->fwd);
    n->fwd = NULL;
    if (n->fwd_timer)
        event_free(n->fwd_timer);
    if (n->raft_changed)
        event_free(n->raft_changed);
    n->fwd_timer = n->raft_changed = NULL;
}

/* Closes raft while the loop still runs (its close is asynchronous), bounded in time. */
void node_raft_stop(struct node *n)
{
    node_sched_stop(n);
    if (n->autopilot_timer) {
        event_free(n->autopilot_timer);
        n->autopilot_timer = NULL;
    }
    /* No reaction to raft's changes while it closes (the scheduler is stopped). */
    if (n->raft_changed)
        event_del(n->raft_changed);
    /* Writes and reads still waiting are answered no more (forward_stop). Those whose
     * forwarded call is still out stay in the module until its callback: calls can complete
     * while the loop drains below; node_raft_free frees what is left once peers is gone (its
     * callbacks never fire then). Local applies and barriers, ours and those served for
     * followers (answered "closed" now), are detached, so that no callback can come for them
     * later (not even from a raft that missed the deadline below and finishes closing in
     * node_close, after the module is freed). */
    if (n->fwd)
        forward_stop(n->fwd);
    if (n->recover_req)
        api_unwatch(n->recover_req);
    n->recover_req = NULL;
    if (n->recover_timer)
        event_free(n->recover_timer);
    n->recover_timer = NULL;
    /* From here only raft's close (or its deadline) ends the loop below: node_stop, from a
     * second signal or a leave finishing now, records its exit code only (node.h). */
    n->raft_closing = true;
    if (n->cluster) {
        uint64_t t0 = mesh_now_ms();
        struct event *deadline = evtimer_new(n->loop.base, on_close_deadline, n);
        struct timeval tv = mesh_ms_to_timeval(NODE_RAFT_CLOSE_MS);
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
