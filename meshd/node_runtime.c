/* The node's container runtime: the engine client (runtime/engine.h) on the node's loop, a ping
 * that publishes the engine's state in gossip metadata (the scheduler only places work on nodes
 * whose engine is up), and a reconcile pass every second that makes this node's containers match
 * the placements the leader committed for it (runtime/reconcile.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine.h"
#include "node.h"
#include "reconcile.h"
#include "spec.h"
#include "version.h"

#define PING_MS      2000
#define RECONCILE_MS 1000
#define ACTIONS_MAX  64 /* per pass; the rest in the next */

/* One reconcile pass: the engine's list, what should run here, and the actions in progress. */
struct rt_pass {
    struct node *n;
    json_t *list;  /* the engine's answer (kept) */
    json_t *specs; /* array of the app specs the desired entries borrow from */
    struct rt_desired *desired;
    size_t nd;
    struct rt_observed *observed;
    size_t no;
    struct rt_action actions[ACTIONS_MAX];
    size_t nactions, next;
};

static void status_set(struct node *n, const char *app, const char *ms, uint32_t replica,
                       const char *state, const char *msg)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%s/%u", app, ms, (unsigned)replica);
    json_object_set_new(n->rt_status, key,
                        json_pack("{s:s, s:s}", "state", state, "message", msg ? msg : ""));
}

static void meta_publish(struct node *n)
{
    uint8_t meta[SWIM_META_MAX];
    int len = nodemeta_encode(&n->meta, meta, sizeof meta);
    if (len >= 0)
        gossip_set_meta(n->gossip, meta, (size_t)len);
}

static void on_ping(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct node *n = data;
    (void)req;
    enum nodemeta_engine st = reply->status == 0 ? NODEMETA_ENGINE_UP : NODEMETA_ENGINE_DOWN;
    n->engine_pinging = false;
    if (st != n->meta.engine) {
        if (st == NODEMETA_ENGINE_UP)
            log_info(&n->log, "container engine available at %s", engine_socket_path(n->engine));
        else
            log_warn(&n->log, "container engine unavailable: %s", reply->err.msg);
        n->meta.engine = st;
        meta_publish(n);
    }
}

static void on_ping_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    if (!n->engine_pinging && engine_ping(n->engine, on_ping, n, NULL) == 0)
        n->engine_pinging = true;
}

static void pass_free(struct rt_pass *p)
{
    json_decref(p->list);
    json_decref(p->specs);
    free(p->desired);
    free(p->observed);
    p->n->rt_pass = NULL;
    free(p);
}

static void pass_step(struct rt_pass *p);

static void on_action_done(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct rt_pass *p = data;
    (void)req;
    struct rt_action *a = &p->actions[p->next - 1];
    if (a->op == RT_CREATE) {
        struct rt_desired *d = &p->desired[a->desired];
        if (reply->status < 0) {
            status_set(p->n, d->app, d->ms, d->replica, "failed", reply->err.msg);
            log_warn(&p->n->log, "runtime: %s", reply->err.msg);
        } else if (reply->id) {
            /* Created: start it as the next step. */
            a->op = RT_START;
            a->id = NULL;
            if (engine_container_start(p->n->engine, reply->id, on_action_done, p, NULL) == 0) {
                status_set(p->n, d->app, d->ms, d->replica, "starting", "");
                return;
            }
        }
    } else if (reply->status < 0) {
        log_warn(&p->n->log, "runtime: %s", reply->err.msg);
    }
    pass_step(p);
}

static void pass_step(struct rt_pass *p)
{
    struct node *n = p->n;
    while (p->next < p->nactions) {
        struct rt_action *a = &p->actions[p->next++];
        int rc = 0;
        if (a->op == RT_REMOVE) {
            rc = engine_container_remove(n->engine, a->id, true, false, on_action_done, p, NULL);
        } else if (a->op == RT_START) {
            rc = engine_container_start(n->engine, a->id, on_action_done, p, NULL);
        } else {
            struct rt_desired *d = &p->desired[a->desired];
            char name[256];
            rt_container_name(n->cfg.name, d, name, sizeof name);
            json_t *body = rt_create_body(n->cfg.name, d);
            rc = body ? engine_container_create(n->engine, name, body, on_action_done, p, NULL)
                      : MESH_ENOMEM;
            json_decref(body);
        }
        if (rc == 0)
            return; /* on_action_done continues */
    }
    pass_free(p);
}

/* The replicas placed on this node, from the replica of the desired state. */
static void desired_build(struct rt_pass *p)
{
    struct node *n = p->n;
    struct fsm *fsm = cluster_fsm(n->cluster);
    size_t np = fsm_placement_count(fsm);
    p->desired = calloc(np + 1, sizeof *p->desired);
    p->specs = json_array();
    if (!p->desired || !p->specs)
        return;
    for (size_t i = 0; i < np; i++) {
        struct fsm_placement pl;
        const uint8_t *spec;
        size_t len;
        if (fsm_placement_at(fsm, i, &pl) < 0 || strcmp(pl.node, n->cfg.name) != 0 ||
            fsm_app_get(fsm, pl.app, &spec, &len, NULL) < 0)
            continue;
        json_t *app = json_loadb((const char *)spec, len, 0, NULL);
        if (!app)
            continue;
        json_array_append_new(p->specs, app);
        size_t k;
        json_t *ms;
        json_array_foreach(json_object_get(app, "microservices"), k, ms)
        {
            if (strcmp(json_string_value(json_object_get(ms, "name")), pl.ms) != 0)
                continue;
            const char *image = spec_images_for_arch(app, k, n->meta.arch);
            if (!image) {
                status_set(n, pl.app, pl.ms, pl.replica, "failed",
                           "no image for this node's architecture");
                break;
            }
            struct rt_desired *d = &p->desired[p->nd++];
            /* Strings borrowed from the fsm stay valid for the pass only if nothing is applied
             * meanwhile: keep them in the spec copy instead. */
            d->app = json_string_value(json_object_get(app, "name"));
            d->ms = json_string_value(json_object_get(ms, "name"));
            d->replica = pl.replica;
            d->ms_spec = ms;
            d->image = image;
            rt_hash(ms, image, d->hash);
            break;
        }
    }
}

static void on_list(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct rt_pass *p = data;
    struct node *n = p->n;
    (void)req;
    if (reply->status < 0 || !json_is_array(reply->json) || !n->cluster) {
        pass_free(p);
        return;
    }
    p->list = json_incref(reply->json);
    size_t count = json_array_size(p->list);
    p->observed = calloc(count + 1, sizeof *p->observed);
    if (!p->observed) {
        pass_free(p);
        return;
    }
    size_t i;
    json_t *c;
    json_array_foreach(p->list, i, c)
    {
        if (rt_observed_from_json(c, &p->observed[p->no]) == 0) {
            struct rt_observed *o = &p->observed[p->no++];
            status_set(n, o->app, o->ms, o->replica, o->running ? "running" : "stopped",
                       json_string_value(json_object_get(c, "Status")));
        }
    }
    desired_build(p);
    p->nactions = rt_plan(p->desired, p->nd, p->observed, p->no, p->actions, ACTIONS_MAX);
    pass_step(p);
}

static void on_reconcile_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    if (n->rt_pass || !n->cluster || n->meta.engine != NODEMETA_ENGINE_UP)
        return;
    struct rt_pass *p = calloc(1, sizeof *p);
    if (!p)
        return;
    p->n = n;
    n->rt_pass = p;
    char sel[256];
    snprintf(sel, sizeof sel, "%s=%s", RT_LABEL_NODE, n->cfg.name);
    const char *labels[] = {sel};
    char *filter = NULL;
    if (engine_labels_filter(labels, 1, &filter) < 0 ||
        engine_container_list(n->engine, true, filter, on_list, p, NULL) < 0) {
        n->rt_pass = NULL;
        free(p);
    }
    free(filter);
}

/* --engine, else the usual sockets of Docker and Podman, else none (no containers here). */
static const char *engine_url(struct node *n)
{
    static const char *const defaults[] = {"/var/run/docker.sock", "/run/podman/podman.sock"};
    if (n->cfg.engine[0])
        return n->cfg.engine;
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        struct stat st;
        if (stat(defaults[i], &st) == 0 && S_ISSOCK(st.st_mode))
            return defaults[i];
    }
    return NULL;
}

int node_runtime_start(struct node *n, struct mesh_err *err)
{
    n->rt_status = json_object();
    const char *url = engine_url(n);
    if (!url) {
        log_info(&n->log, "no container engine (give --engine): this node runs no containers");
        return 0;
    }
    struct engine_config ec = {.url = url};
    int rc = engine_new(n->loop.base, &ec, &n->engine, err);
    if (rc < 0)
        return rc;
    n->ping_timer = event_new(n->loop.base, -1, EV_PERSIST, on_ping_timer, n);
    n->reconcile_timer = event_new(n->loop.base, -1, EV_PERSIST, on_reconcile_timer, n);
    struct timeval ping = {PING_MS / 1000, 0}, rec = {RECONCILE_MS / 1000, 0};
    if (!n->ping_timer || !n->reconcile_timer || event_add(n->ping_timer, &ping) != 0 ||
        event_add(n->reconcile_timer, &rec) != 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    on_ping_timer(-1, 0, n); /* know the engine's state at once */
    return 0;
}

void node_runtime_stop(struct node *n)
{
    if (n->ping_timer)
        event_free(n->ping_timer);
    if (n->reconcile_timer)
        event_free(n->reconcile_timer);
    n->ping_timer = n->reconcile_timer = NULL;
    engine_free(n->engine); /* fails what is pending; the pass frees itself */
    n->engine = NULL;
    if (n->rt_pass)
        pass_free(n->rt_pass);
    json_decref(n->rt_status);
    n->rt_status = NULL;
}

json_t *node_runtime_status(struct node *n, const char *app, const char *ms, uint32_t replica)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%s/%u", app, ms, (unsigned)replica);
    return n->rt_status ? json_object_get(n->rt_status, key) : NULL;
}
