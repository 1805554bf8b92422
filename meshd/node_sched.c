/* The leader's scheduler loop (consensus/scheduler.h) and the placement API: which replica of
 * which microservice runs where, node cordons and drains. Placements are Raft writes; only the
 * leader decides them, from the desired state and gossip's view of the nodes. */
#include <stdlib.h>
#include <string.h>

#include "node.h"
#include "scheduler.h"
#include "spec.h"
#include "status_wire.h"
#include "version.h"

#define SCHED_TICK_MS     500 /* also how soon a node's death past the grace is acted on */
#define SCHED_CHANGES_MAX 256 /* proposed per run; the rest come in the next */

static enum sched_node_state node_state(enum swim_member_state st)
{
    switch (st) {
    case SWIM_ALIVE:
        return SCHED_NODE_ALIVE;
    case SWIM_SUSPECT:
        return SCHED_NODE_SUSPECT;
    case SWIM_LEFT:
        return SCHED_NODE_LEFT;
    default:
        return SCHED_NODE_DEAD;
    }
}

/* Everything one scheduler run reads, built from the replica and from gossip. */
struct sched_view {
    struct sched_app *apps;
    json_t **specs;
    size_t napps;
    struct fsm_placement *placements;
    size_t nplacements;
    struct sched_node *nodes;
    struct node_meta *metas;
    struct sched_label *labels; /* CONFIG_LABEL_MAX per node */
    size_t nnodes;
};

static void view_free(struct sched_view *v)
{
    for (size_t i = 0; i < v->napps; i++)
        json_decref(v->specs[i]);
    free(v->apps);
    free(v->specs);
    free(v->placements);
    free(v->nodes);
    free(v->metas);
    free(v->labels);
    memset(v, 0, sizeof *v);
}

/* The canonical spec of an application (new reference), or NULL when the stored bytes are not a
 * valid spec of that name. Entries of the log may have been written by any node (before leaders
 * validated forwarded writes, or by a buggy or hostile one), so every reader of the state gets
 * its specs from here, validated as the API validates a deploy (spec_from_bytes), and leaves an
 * application alone when this returns NULL. Specs are checked once per version and kept in
 * n->spec_cache ({name: [mod_rev, spec or null]}): the scheduler runs twice a second, and
 * parsing every spec (up to FSM_APPS_MAX of SPEC_MAX_ENCODED bytes) each time would cost the
 * leader far more than scheduling. */
json_t *node_spec_cached(struct node *n, const struct fsm_app *a)
{
    if (!n->spec_cache)
        n->spec_cache = json_object();
    struct spec_errors errs;
    bool bad = false;
    json_t *spec =
        spec_stored(n->spec_cache, a->name, a->mod_rev, a->spec, a->spec_len, &errs, &bad);
    if (bad) {
        char why[256];
        spec_errors_format(&errs, why, sizeof why);
        log_error(&n->log,
                  "application %s (revision %llu): the stored spec is not valid (%s); it is "
                  "left alone until it is deployed again",
                  a->name, (unsigned long long)a->mod_rev, why);
    }
    return spec;
}

/* Forgets the cached specs of applications that are gone. */
static void spec_cache_prune(struct node *n, struct fsm *fsm)
{
    const char *name;
    json_t *val, *tmp;
    json_object_foreach_safe(n->spec_cache, tmp, name, val)
    {
        (void)val;
        if (fsm_app_get(fsm, name, NULL, NULL, NULL) < 0)
            json_object_del(n->spec_cache, name);
    }
}

/* Since when this node has seen `name`'s engine down (gossip says when it changed, not when
 * it went down, so the leader keeps its own record, n->engine_down: {name: ms}). The first
 * sighting starts the clock, so a new leader counts from its own start, as for nodes it has
 * no word of. Entries go when the engine is back or the node is gone (engine_down_prune). */
static uint64_t engine_down_since(struct node *n, const char *name, bool up)
{
    if (!n->leader_since)
        return mesh_now_ms(); /* not leading (a move): only whether it is down matters */
    if (!n->engine_down)
        n->engine_down = json_object();
    if (up) {
        json_object_del(n->engine_down, name);
        return 0;
    }
    json_t *v = json_object_get(n->engine_down, name);
    if (v)
        return (uint64_t)json_integer_value(v);
    uint64_t now = mesh_now_ms();
    json_object_set_new(n->engine_down, name, json_integer((json_int_t)now));
    return now;
}

static void engine_down_prune(struct node *n, const struct swim *sw)
{
    const char *name;
    json_t *v, *tmp;
    json_object_foreach_safe(n->engine_down, tmp, name, v)
    {
        (void)v;
        if (!swim_member_find(sw, name))
            json_object_del(n->engine_down, name);
    }
}

/* for_placing: the view the scheduler places new replicas from, where a member that no link
 * proved (swim_member.verified) counts as cordoned: it keeps the replicas it has, gets none
 * new. Gossip alone can make up members with any metadata (all the CPUs, an engine, the
 * labels a spec asks for) and would draw every placement (issue 10). The leader verifies the
 * members it would place on when replicas are pending (sched_tick). An operator's explicit
 * move is the operator's choice and is not filtered. */
static int view_build(struct node *n, struct sched_view *v, bool for_placing)
{
    struct fsm *fsm = cluster_fsm(n->cluster);
    const struct swim *sw = gossip_swim(n->gossip);
    size_t napps = fsm_app_count(fsm), np = fsm_placement_count(fsm);
    size_t nm = swim_member_count(sw);
    if (nm > SCHED_NODES_MAX)
        nm = SCHED_NODES_MAX;
    memset(v, 0, sizeof *v);
    v->apps = calloc(napps + 1, sizeof *v->apps);
    v->specs = calloc(napps + 1, sizeof *v->specs);
    v->placements = calloc(np + 1, sizeof *v->placements);
    v->nodes = calloc(nm + 1, sizeof *v->nodes);
    v->metas = calloc(nm + 1, sizeof *v->metas);
    v->labels = calloc((nm + 1) * CONFIG_LABEL_MAX, sizeof *v->labels);
    if (!v->apps || !v->specs || !v->placements || !v->nodes || !v->metas || !v->labels) {
        view_free(v);
        return MESH_ENOMEM;
    }
    for (size_t i = 0; i < napps; i++) {
        struct fsm_app a;
        if (fsm_app_at(fsm, i, &a) < 0)
            break;
        json_t *spec = node_spec_cached(n, &a);
        v->specs[v->napps] = spec;
        v->apps[v->napps] = (struct sched_app){a.name, a.mod_rev, spec};
        v->napps++;
    }
    for (size_t i = 0; i < np; i++)
        if (fsm_placement_at(fsm, i, &v->placements[v->nplacements]) == 0)
            v->nplacements++;
    engine_down_prune(n, sw);
    spec_cache_prune(n, fsm);
    for (size_t i = 0; i < nm; i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        struct node_meta *meta = &v->metas[v->nnodes];
        struct sched_node *sn = &v->nodes[v->nnodes];
        bool drain = false;
        nodemeta_decode(m->meta, m->meta_len, meta); /* zeroed on failure: unknown facts */
        sn->name = m->name;
        sn->state = node_state(m->state);
        sn->since_ms = m->state_change;
        sn->cordoned = fsm_cordon_get(fsm, m->name, &drain) == 0;
        sn->drain = sn->cordoned && drain;
        if (for_placing && !m->verified)
            sn->cordoned = true;
        sn->engine_ok = meta->engine == NODEMETA_ENGINE_UP;
        sn->engine_down_since_ms = engine_down_since(n, m->name, sn->engine_ok);
        sn->arch = meta->arch;
        sn->cpus = meta->cpus;
        sn->memory_bytes = meta->memory;
        struct sched_label *lab = &v->labels[v->nnodes * CONFIG_LABEL_MAX];
        for (size_t k = 0; k < meta->nlabels; k++)
            lab[k] = (struct sched_label){meta->labels[k].key, meta->labels[k].value};
        sn->labels = lab;
        sn->nlabels = meta->nlabels;
        v->nnodes++;
    }
    return 0;
}

static void on_change_applied(void *ud, int status, const struct fsm_result *res,
                              const struct mesh_err *err)
{
    struct node *n = ud;
    (void)res;
    if (status < 0)
        log_debug(&n->log, "scheduler: a placement did not commit: %s",
                  err ? err->msg : mesh_strerror(status));
    if (n->sched_inflight > 0)
        n->sched_inflight--;
}

static void sched_tick(struct node *n)
{
    struct cluster_info info;
    if (!n->cluster || n->leaving)
        return;
    cluster_info(n->cluster, &info);
    if (info.state != RAFT_LEADER) {
        n->leader_since = 0;
        json_object_clear(n->engine_down); /* a later term counts from its own start */
        return;
    }
    if (!n->leader_since)
        n->leader_since = mesh_now_ms();
    if (n->sched_inflight > 0)
        return; /* one run at a time: the next sees what this one did */
    struct sched_view v;
    if (!n->spec_cache)
        n->spec_cache = json_object();
    if (view_build(n, &v, true) < 0)
        return;
    struct sched_input in = {
        .apps = v.apps,
        .napps = v.napps,
        .placements = v.placements,
        .nplacements = v.nplacements,
        .nodes = v.nodes,
        .nnodes = v.nnodes,
        .now_ms = mesh_now_ms(),
        .reschedule_after_ms = n->cfg.reschedule_after_ms,
        .unknown_since_ms = n->leader_since,
    };
    struct sched_change *ch = calloc(SCHED_CHANGES_MAX, sizeof *ch);
    size_t nch = 0;
    struct sched_stats st;
    if (ch && sched_run(&in, ch, SCHED_CHANGES_MAX, &nch, &st) == 0) {
        for (size_t i = 0; i < nch; i++) {
            struct raft_buffer cmd;
            if (sched_change_cmd(&ch[i], &cmd) < 0)
                continue;
            if (cluster_apply(n->cluster, &cmd, on_change_applied, n, NULL) < 0) {
                raft_free(cmd.base);
                break;
            }
            n->sched_inflight++;
            if (ch[i].op == SCHED_PLACE && ch[i].to[0] && strcmp(ch[i].from, ch[i].to) != 0)
                log_info(&n->log, "scheduler: %s/%s[%u] -> %s%s%s", ch[i].app, ch[i].ms,
                         ch[i].replica, ch[i].to, ch[i].from[0] ? " from " : "", ch[i].from);
        }
        /* Replicas wait for a node: verify the unverified ones that could run them (alive,
         * with an engine), a few at a time (node_verify_member bounds it), so that a real
         * node this leader has no link with yet becomes a target within seconds. */
        if (st.pending > 0) {
            const struct swim *sw = gossip_swim(n->gossip);
            for (size_t i = 0; i < v.nnodes && i < swim_member_count(sw); i++) {
                const struct swim_member *m = swim_member_at(sw, i);
                if (!m->verified && v.nodes[i].engine_ok && v.nodes[i].state == SCHED_NODE_ALIVE)
                    node_verify_member(n, m);
            }
        }
    }
    free(ch);
    view_free(&v);
}

static void on_sched_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sched_tick(arg);
}

/* Acts on a change of the desired state at once: the leader schedules (a deploy is placed
 * within one loop pass of its commit, not at the next tick) and every node reconciles (a
 * placement starts its container right after it is applied here). Called when raft applied
 * something (cluster_config.on_change); entries that change nothing (barriers, unchanged
 * writes) leave the revision alone and are skipped. */
void node_sched_changed(struct node *n)
{
    if (!n->cluster || !n->sched_timer) /* not started, or stopped */
        return;
    uint64_t rev = fsm_revision(cluster_fsm(n->cluster));
    if (rev == n->seen_revision)
        return;
    n->seen_revision = rev;
    sched_tick(n);
    node_runtime_kick(n);
}

/* ---- API --------------------------------------------------------------------------------- */

int node_split_ms_ref(const char *ref, char *buf, size_t len, const char **app, const char **ms,
                      long *replica)
{
    if (snprintf(buf, len, "%s", ref) >= (int)len)
        return MESH_EINVAL;
    char *slash = strchr(buf, '/');
    if (!slash || slash == buf || !slash[1])
        return MESH_EINVAL;
    *slash = '\0';
    *app = buf;
    *ms = slash + 1;
    char *second = strchr(slash + 1, '/');
    if (replica)
        *replica = -1;
    if (second) {
        char *end;
        *second = '\0';
        if (!replica || !second[1] || !**ms)
            return MESH_EINVAL;
        unsigned long r = strtoul(second + 1, &end, 10);
        if (*end || r >= FSM_REPLICAS_MAX)
            return MESH_EINVAL;
        *replica = (long)r;
    }
    return 0;
}

/* The replicas with what their nodes observe: `observed` maps node name -> that node's status
 * map ("app/ms/replica" -> {"state", "message", ...}); a node missing from it has not answered.
 * Every field a node reports is passed on. With app and ms, only that microservice's. */
static json_t *replicas_json(struct node *n, const json_t *observed, const char *app,
                             const char *ms)
{
    struct fsm *fsm = cluster_fsm(n->cluster);
    json_t *arr = json_array();
    for (size_t i = 0; i < fsm_placement_count(fsm); i++) {
        struct fsm_placement p;
        char key[256];
        if (fsm_placement_at(fsm, i, &p) < 0)
            break;
        if (app && (strcmp(p.app, app) != 0 || strcmp(p.ms, ms) != 0))
            continue;
        snprintf(key, sizeof key, "%s/%s/%u", p.app, p.ms, (unsigned)p.replica);
        json_t *obs = json_object_get(json_object_get(observed, p.node), key);
        json_t *o = json_is_object(obs) ? json_deep_copy(obs) : json_object();
        if (!obs) {
            json_object_set_new(o, "state", json_string(p.node[0] ? "scheduled" : "pending"));
            json_object_set_new(o, "message", json_string(p.reason));
        }
        json_object_set_new(o, "app", json_string(p.app));
        json_object_set_new(o, "name", json_string(p.ms));
        json_object_set_new(o, "replica", json_integer(p.replica));
        json_object_set_new(o, "node", p.node[0] ? json_string(p.node) : json_null());
        if (!json_is_string(json_object_get(o, "state")))
            json_object_set_new(o, "state", json_string(""));
        if (!json_is_string(json_object_get(o, "message")))
            json_object_set_new(o, "message", json_string(""));
        json_array_append_new(arr, o);
    }
    return arr;
}

/* GET /v1/microservices: {"microservices": [...]}. GET /v1/microservices/APP/MS: that
 * microservice's spec and replicas, or 404. */
static void microservices_reply(struct node *n, struct evhttp_request *req, const char *ref,
                                const json_t *observed)
{
    if (!ref[0]) {
        api_reply_json(req, 200,
                       json_pack("{s:o}", "microservices", replicas_json(n, observed, NULL, NULL)));
        return;
    }
    char buf[NODE_READ_NAME_MAX + 1];
    const char *app, *ms;
    const uint8_t *text;
    size_t len;
    uint64_t version = 0;
    if (node_split_ms_ref(ref, buf, sizeof buf, &app, &ms, NULL) < 0) {
        api_reply_error(req, 404, "expected /v1/microservices/APP/MICROSERVICE");
        return;
    }
    if (fsm_app_get(cluster_fsm(n->cluster), app, &text, &len, &version) < 0) {
        api_reply_error(req, 404, "no app '%s'", app);
        return;
    }
    json_t *spec = json_loadb((const char *)text, len, 0, NULL);
    json_t *found = NULL, *m;
    size_t i;
    json_array_foreach(json_object_get(spec, "microservices"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), ms) == 0)
            found = m;
    }
    if (!found) {
        json_decref(spec);
        api_reply_error(req, 404, "app '%s' has no microservice '%s'", app, ms);
        return;
    }
    api_reply_json(req, 200,
                   json_pack("{s:s, s:s, s:I, s:O, s:o}", "app", app, "name", ms, "app_version",
                             (json_int_t)version, "spec", found, "replicas",
                             replicas_json(n, observed, app, ms)));
    json_decref(spec);
}

/* Observed state lives on the node that runs each replica: a listing asks those nodes over the
 * mesh (bounded by a short timeout; a node that does not answer shows "scheduled"). */
struct fanout_call {
    struct fanout *f;
    char node[SWIM_NAME_MAX + 1];
};

struct fanout {
    struct node *n;
    struct fanout *next; /* in n->fanouts, so that node_sched_stop frees what is in flight */
    struct evhttp_request *req;
    struct api_watch watch;
    json_t *observed;
    char ref[NODE_READ_NAME_MAX + 1]; /* "" for the list, else APP/MS */
    size_t pending;
    struct fanout_call calls[];
};

static void fanout_free(struct fanout *f)
{
    for (struct fanout **pp = &f->n->fanouts; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    json_decref(f->observed);
    free(f);
}

static void fanout_gone(void *ud)
{
    struct fanout *f = ud;
    f->req = NULL;
}

static void fanout_finish(struct fanout *f)
{
    if (f->pending > 0)
        return;
    if (f->req) {
        api_unwatch(f->req);
        if (f->n->cluster)
            microservices_reply(f->n, f->req, f->ref, f->observed);
        else
            api_reply_error(f->req, 503, "raft is restarting on this node; try again");
    }
    fanout_free(f);
}

static void on_status_reply(void *ud, int rc, const uint8_t *reply, size_t len,
                            const struct mesh_err *err)
{
    struct fanout_call *c = ud;
    struct fanout *f = c->f;
    (void)err;
    json_t *m;
    if (rc == 0 && rt_status_reply_decode(reply, len, &m) == 0)
        json_object_set_new(f->observed, c->node, m);
    f->pending--;
    fanout_finish(f);
}

static void reply_microservices(struct node *n, struct evhttp_request *req, const char *name,
                                bool consistent)
{
    (void)consistent;
    struct fsm *fsm = cluster_fsm(n->cluster);
    const struct swim *sw = gossip_swim(n->gossip);
    size_t nm = swim_member_count(sw);
    struct fanout *f = calloc(1, sizeof *f + (nm + 1) * sizeof f->calls[0]);
    if (!f) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    f->n = n;
    f->req = req;
    f->observed = json_object();
    snprintf(f->ref, sizeof f->ref, "%s", name);
    const json_t *here = node_runtime_observed(n);
    if (here)
        json_object_set(f->observed, n->cfg.name, (json_t *)here);
    f->next = n->fanouts;
    n->fanouts = f;
    f->watch = (struct api_watch){.gone = fanout_gone, .ud = f};
    api_watch(req, &f->watch);
    size_t ncalls = 0;
    uint8_t status_req[RT_STATUS_REQUEST_MAX];
    int status_len = rt_status_request_encode(status_req, sizeof status_req);
    for (size_t i = 0; i < nm && status_len > 0; i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (m == swim_self(sw) || m->state != SWIM_ALIVE)
            continue;
        bool hosts = false;
        for (size_t k = 0; k < fsm_placement_count(fsm) && !hosts; k++) {
            struct fsm_placement p;
            hosts = fsm_placement_at(fsm, k, &p) == 0 && strcmp(p.node, m->name) == 0;
        }
        if (!hosts)
            continue;
        struct fanout_call *c = &f->calls[ncalls++];
        c->f = f;
        snprintf(c->node, sizeof c->node, "%s", m->name);
        if (peers_call(n->peers, &m->addr, CALL_RT_STATUS, status_req, (size_t)status_len,
                       RT_STATUS_REPLY_MAX, 2000, on_status_reply, c) == 0)
            f->pending++;
    }
    fanout_finish(f);
}

static void reply_nodes(struct node *n, struct evhttp_request *req, const char *name,
                        bool consistent)
{
    (void)name;
    (void)consistent;
    struct fsm *fsm = cluster_fsm(n->cluster);
    const struct swim *sw = gossip_swim(n->gossip);
    json_t *arr = json_array();
    for (size_t i = 0; i < swim_member_count(sw); i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        struct node_meta meta = {0};
        bool drain = false;
        nodemeta_decode(m->meta, m->meta_len, &meta);
        bool cordoned = fsm_cordon_get(fsm, m->name, &drain) == 0;
        int count = 0;
        for (size_t k = 0; k < fsm_placement_count(fsm); k++) {
            struct fsm_placement p;
            if (fsm_placement_at(fsm, k, &p) == 0 && strcmp(p.node, m->name) == 0)
                count++;
        }
        json_t *o = nodemeta_json(&meta);
        json_object_set_new(o, "name", json_string(m->name));
        json_object_set_new(o, "status", json_string(node_member_status(m)));
        json_object_set_new(o, "cordoned", json_boolean(cordoned));
        json_object_set_new(o, "draining", json_boolean(cordoned && drain));
        json_object_set_new(o, "microservices", json_integer(count));
        json_array_append_new(arr, o);
    }
    api_reply_json(req, 200, json_pack("{s:o}", "nodes", arr));
}

static void h_microservices(struct evhttp_request *req, const char *rest, void *ud)
{
    if (strlen(rest) > NODE_READ_NAME_MAX) {
        api_reply_error(req, 404, "no such microservice");
        return;
    }
    node_raft_read(ud, req, rest, reply_microservices);
}

/* POST /v1/microservices/APP/MS[/REPLICA]/move {"node": NODE}: `meshctl move`. The move is
 * decided here, from this node's replica of the state and its view of the nodes (the same
 * filters the leader's scheduler applies), and committed through the leader like any write;
 * the leader's scheduler never moves a placed replica for score, so the move sticks. */
static void reply_move(struct node *n, struct evhttp_request *req, const char *ref, bool consistent)
{
    (void)consistent;
    char buf[NODE_READ_NAME_MAX + 1], node[FSM_NODE_NAME_MAX + 1];
    const char *app, *ms;
    long replica;
    if (node_split_ms_ref(ref, buf, sizeof buf, &app, &ms, &replica) < 0) {
        api_reply_error(req, 404, "expected /v1/microservices/APP/MICROSERVICE[/REPLICA]/move");
        return;
    }
    json_t *body = api_read_json(req);
    if (!body)
        return;
    const char *to = json_string_value(json_object_get(body, "node"));
    if (!to || !to[0] || strlen(to) > FSM_NODE_NAME_MAX) {
        json_decref(body);
        api_reply_error(req, 400, "node: required (the node to move to)");
        return;
    }
    snprintf(node, sizeof node, "%s", to);
    json_decref(body);
    struct sched_view v;
    if (!n->spec_cache)
        n->spec_cache = json_object();
    if (view_build(n, &v, false) < 0) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    struct sched_input in = {
        .apps = v.apps,
        .napps = v.napps,
        .placements = v.placements,
        .nplacements = v.nplacements,
        .nodes = v.nodes,
        .nnodes = v.nnodes,
        .now_ms = mesh_now_ms(),
        .reschedule_after_ms = n->cfg.reschedule_after_ms,
        .unknown_since_ms = n->leader_since ? n->leader_since : mesh_now_ms(),
    };
    struct sched_change ch;
    struct mesh_err err = {0};
    int rc = sched_move(&in, app, ms, replica < 0 ? SCHED_ANY_REPLICA : (uint32_t)replica, node,
                        &ch, &err);
    view_free(&v);
    if (rc < 0) {
        int code = rc == MESH_ENOTFOUND ? 404 : rc == MESH_EEXISTS || rc == MESH_ESTATE ? 409 : 400;
        api_reply_error(req, code, "%s", err.msg[0] ? err.msg : mesh_strerror(rc));
        return;
    }
    struct raft_buffer cmd;
    if (sched_change_cmd(&ch, &cmd) < 0) {
        api_reply_error(req, 500, "cannot encode the move");
        return;
    }
    char name[NODE_READ_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s/%s/%u", ch.app, ch.ms, (unsigned)ch.replica);
    log_info(&n->log, "move: %s -> %s (asked by an API client)", name, node);
    node_raft_write(n, req, name, &cmd);
}

static void h_microservice_post(struct evhttp_request *req, const char *rest, void *ud)
{
    size_t len = strlen(rest);
    static const char suffix[] = "/move";
    if (len <= sizeof suffix - 1 || len - (sizeof suffix - 1) > NODE_READ_NAME_MAX ||
        strcmp(rest + len - (sizeof suffix - 1), suffix) != 0) {
        api_reply_error(req, 404, "expected /v1/microservices/APP/MICROSERVICE[/REPLICA]/move");
        return;
    }
    char ref[NODE_READ_NAME_MAX + 1];
    memcpy(ref, rest, len - (sizeof suffix - 1));
    ref[len - (sizeof suffix - 1)] = '\0';
    node_raft_read(ud, req, ref, reply_move);
}

static void h_nodes(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)rest;
    node_raft_read(ud, req, "", reply_nodes);
}

/* POST /v1/nodes/{name}/cordon|uncordon|drain */
static void h_node_op(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    char name[FSM_NODE_NAME_MAX + 1];
    const char *slash = strrchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : 0;
    if (!slash || len == 0 || len > FSM_NODE_NAME_MAX) {
        api_reply_error(req, 404, "expected /v1/nodes/NAME/cordon, uncordon or drain");
        return;
    }
    memcpy(name, rest, len);
    name[len] = '\0';
    const char *op = slash + 1;
    bool on, drain;
    if (strcmp(op, "cordon") == 0)
        on = true, drain = false;
    else if (strcmp(op, "drain") == 0)
        on = true, drain = true;
    else if (strcmp(op, "uncordon") == 0)
        on = false, drain = false;
    else {
        api_reply_error(req, 404, "unknown node operation '%.32s'", op);
        return;
    }
    if (!swim_member_find(gossip_swim(n->gossip), name)) {
        api_reply_error(req, 404, "no node '%s' in the mesh", name);
        return;
    }
    struct raft_buffer cmd;
    int rc = fsm_cmd_cordon(name, on, drain, &cmd);
    if (rc < 0) {
        api_reply_error(req, 400, "node %s: %s", name, mesh_strerror(rc));
        return;
    }
    node_raft_write(n, req, name, &cmd);
}

int node_sched_start(struct node *n, struct mesh_err *err)
{
    static const struct api_route_def routes[] = {
        {"GET", FOGMESH_API_PREFIX "/microservices", h_microservices},
        {"GET", FOGMESH_API_PREFIX "/microservices/", h_microservices},
        {"POST", FOGMESH_API_PREFIX "/microservices/", h_microservice_post},
        {"GET", FOGMESH_API_PREFIX "/nodes", h_nodes},
        {"POST", FOGMESH_API_PREFIX "/nodes/", h_node_op},
    };
    int rc = api_route_table(n->api, routes, sizeof routes / sizeof routes[0], n, err);
    if (rc < 0)
        return rc;
    n->sched_timer = event_new(n->loop.base, -1, EV_PERSIST, on_sched_timer, n);
    struct timeval tv = mesh_ms_to_timeval(SCHED_TICK_MS);
    if (!n->sched_timer || event_add(n->sched_timer, &tv) != 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    return 0;
}

void node_sched_close(struct node *n)
{
    /* After peers_free no call answers: drop the listings in flight. */
    while (n->fanouts) {
        if (n->fanouts->req)
            api_unwatch(n->fanouts->req);
        fanout_free(n->fanouts);
    }
}

void node_sched_stop(struct node *n)
{
    json_decref(n->spec_cache);
    n->spec_cache = NULL;
    json_decref(n->engine_down);
    n->engine_down = NULL;
    if (n->sched_timer)
        event_free(n->sched_timer);
    n->sched_timer = NULL;
}
