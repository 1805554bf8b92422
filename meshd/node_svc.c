/* Services (issue 6), the control side: which endpoints provide each service and where meshd
 * listens for connections to it, derived from the desired state.
 *
 * Endpoints: every placed replica of a microservice that `expose`s a service (the replica's
 * node, 127.0.0.1:port: containers use host networking), and every host endpoint declared with
 * `meshctl service expose NAME --target HOST:PORT --node NODE` (a record "expose/NAME/NODE").
 * Listeners: every placed replica of a microservice that `connect`s to a service (its node,
 * 127.0.0.1:port), and every `meshctl service connect NAME --listen HOST:PORT --node NODE` (a
 * record "connect/NODE/HOST:PORT"). Records are Raft writes like applications.
 *
 * The catalog is rebuilt from the replica of the state when its revision changes, so every node
 * derives the same one. */
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "node.h"
#include "spec.h"
#include "version.h"

#define SVC_REC_EXPOSE  "expose/"
#define SVC_REC_CONNECT "connect/"

void svc_catalog_free(struct svc_catalog *c)
{
    if (!c)
        return;
    free(c->eps.v);
    free(c->ls.v);
    free(c);
}

static int add_entry(struct svc_catalog *c, struct svc_list *list, size_t max, const char *service,
                     const char *node, const struct mesh_addr *addr, const char *app,
                     const char *ms, uint32_t replica)
{
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        if (cap > max) {
            c->full = true;
            return MESH_EFULL;
        }
        struct svc_entry *v = realloc(list->v, cap * sizeof *v);
        if (!v)
            return MESH_ENOMEM;
        list->v = v;
        list->cap = cap;
    }
    struct svc_entry *e = &list->v[list->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->service, sizeof e->service, "%s", service);
    snprintf(e->node, sizeof e->node, "%s", node);
    e->addr = *addr;
    e->host = app == NULL;
    if (app) {
        snprintf(e->app, sizeof e->app, "%s", app);
        snprintf(e->ms, sizeof e->ms, "%s", ms);
        e->replica = replica;
    }
    return 0;
}

static int add_endpoint(struct svc_catalog *c, const char *service, const char *node,
                        const struct mesh_addr *target, const char *app, const char *ms,
                        uint32_t replica)
{
    return add_entry(c, &c->eps, SVC_ENDPOINTS_MAX, service, node, target, app, ms, replica);
}

static int add_listener(struct svc_catalog *c, const char *service, const char *node,
                        const struct mesh_addr *listen, const char *app, const char *ms,
                        uint32_t replica)
{
    return add_entry(c, &c->ls, SVC_LISTENERS_MAX, service, node, listen, app, ms, replica);
}

static void loopback(uint16_t port, struct mesh_addr *a)
{
    mesh_addr_parse("127.0.0.1", port, a);
}

/* ---- records ---------------------------------------------------------------------------- */

static void rec_key(const struct svc_rec *r, char *buf, size_t len)
{
    char addr[MESH_ADDR_STRLEN];
    mesh_addr_format(&r->addr, addr, sizeof addr);
    if (r->expose)
        snprintf(buf, len, SVC_REC_EXPOSE "%s/%s", r->service, r->node);
    else
        snprintf(buf, len, SVC_REC_CONNECT "%s/%s", r->node, addr);
}

int svc_rec_parse(const char *key, size_t key_len, const uint8_t *value, size_t len,
                  struct svc_rec *ret)
{
    struct svc_rec r = {0};
    size_t el = strlen(SVC_REC_EXPOSE), cl = strlen(SVC_REC_CONNECT);
    if (key_len > el && memcmp(key, SVC_REC_EXPOSE, el) == 0)
        r.expose = true;
    else if (!(key_len > cl && memcmp(key, SVC_REC_CONNECT, cl) == 0))
        return MESH_EUNSUPPORTED;
    json_t *v = json_loadb((const char *)value, len, JSON_REJECT_DUPLICATES, NULL);
    const char *field = r.expose ? "target" : "listen";
    const char *service = json_string_value(json_object_get(v, "service"));
    const char *node = json_string_value(json_object_get(v, "node"));
    const char *addr = json_string_value(json_object_get(v, field));
    int rc = MESH_EINVAL;
    char want[FSM_REC_KEY_MAX + 1];
    if (json_is_object(v) && json_object_size(v) == 3 && service && spec_name_valid(service) &&
        node && mesh_node_name_valid(node, strlen(node)) && addr &&
        mesh_addr_parse(addr, 0, &r.addr) == 0 && r.addr.port != 0) {
        snprintf(r.service, sizeof r.service, "%s", service);
        snprintf(r.node, sizeof r.node, "%s", node);
        /* The key says the same as the value: one record per (service, node) endpoint and per
         * (node, address) listener, whoever wrote it. */
        rec_key(&r, want, sizeof want);
        if (strlen(want) == key_len && memcmp(want, key, key_len) == 0)
            rc = 0;
    }
    json_decref(v);
    if (rc == 0)
        *ret = r;
    return rc;
}

int svc_rec_encode(const struct svc_rec *r, struct raft_buffer *out)
{
    char key[FSM_REC_KEY_MAX + 1], addr[MESH_ADDR_STRLEN];
    rec_key(r, key, sizeof key);
    mesh_addr_format(&r->addr, addr, sizeof addr);
    json_t *v = json_pack("{s:s, s:s, s:s}", "service", r->service, "node", r->node,
                          r->expose ? "target" : "listen", addr);
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(v);
    int rc = text ? fsm_cmd_put_rec(key, text, strlen(text), out) : MESH_ENOMEM;
    free(text);
    return rc;
}

/* The endpoints and listeners of one application's placed replicas. */
static void catalog_app(struct svc_catalog *c, const struct fsm *fsm, const struct fsm_app *a,
                        svc_spec_fn spec_of, void *ud)
{
    json_t *spec = spec_of(ud, a);
    size_t first, count;
    fsm_placement_range(fsm, a->name, &first, &count);
    size_t i;
    json_t *ms;
    json_array_foreach(json_object_get(spec, "microservices"), i, ms)
    {
        json_t *expose = json_object_get(ms, "expose"), *connect = json_object_get(ms, "connect");
        if (!expose && !connect)
            continue;
        const char *msname = json_string_value(json_object_get(ms, "name"));
        for (size_t k = first; k < first + count; k++) {
            struct fsm_placement p;
            if (fsm_placement_at(fsm, k, &p) < 0 || !p.node[0] || strcmp(p.ms, msname) != 0)
                continue;
            size_t j;
            json_t *e;
            json_array_foreach(expose, j, e)
            {
                struct mesh_addr t;
                loopback((uint16_t)json_integer_value(json_object_get(e, "port")), &t);
                add_endpoint(c, json_string_value(json_object_get(e, "name")), p.node, &t, a->name,
                             msname, p.replica);
            }
            json_array_foreach(connect, j, e)
            {
                struct mesh_addr l;
                loopback((uint16_t)json_integer_value(json_object_get(e, "port")), &l);
                add_listener(c, json_string_value(json_object_get(e, "service")), p.node, &l,
                             a->name, msname, p.replica);
            }
        }
    }
    json_decref(spec);
}

/* A record as the catalog sees it; one that does not parse (svc_rec_parse) is left out. */
static void catalog_rec(struct svc_catalog *c, const struct fsm_app *r)
{
    struct svc_rec rec;
    if (svc_rec_parse(r->name, strlen(r->name), r->spec, r->spec_len, &rec) < 0)
        return;
    if (rec.expose)
        add_endpoint(c, rec.service, rec.node, &rec.addr, NULL, NULL, 0);
    else
        add_listener(c, rec.service, rec.node, &rec.addr, NULL, NULL, 0);
}

struct svc_catalog *svc_catalog_build(const struct fsm *fsm, svc_spec_fn spec_of, void *ud)
{
    struct svc_catalog *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->revision = fsm_revision(fsm);
    for (size_t i = 0; i < fsm_app_count(fsm); i++) {
        struct fsm_app a;
        if (fsm_app_at(fsm, i, &a) == 0)
            catalog_app(c, fsm, &a, spec_of, ud);
    }
    for (size_t i = 0; i < fsm_rec_count(fsm); i++) {
        struct fsm_app r;
        if (fsm_rec_at(fsm, i, &r) == 0)
            catalog_rec(c, &r);
    }
    return c;
}

static json_t *node_spec_of(void *ud, const struct fsm_app *a)
{
    return node_spec_cached(ud, a);
}

const struct svc_catalog *node_svc_catalog(struct node *n)
{
    if (!n->cluster)
        return n->svc;
    struct fsm *fsm = cluster_fsm(n->cluster);
    if (n->svc && n->svc->revision == fsm_revision(fsm))
        return n->svc;
    struct svc_catalog *c = svc_catalog_build(fsm, node_spec_of, n);
    if (!c)
        return n->svc; /* the old one, until memory allows */
    if (c->full)
        log_warn(&n->log, "services: more than %d endpoints or %d listeners: the rest are ignored",
                 SVC_ENDPOINTS_MAX, SVC_LISTENERS_MAX);
    svc_catalog_free(n->svc);
    n->svc = c;
    return c;
}

/* ---- API --------------------------------------------------------------------------------- */

/* addr_key names the address: "target" for an endpoint, "listen" for a listener. */
static json_t *entry_json(const struct svc_entry *e, const char *addr_key)
{
    char addr[MESH_ADDR_STRLEN];
    json_t *o = json_pack("{s:s, s:s, s:s}", "node", e->node, addr_key,
                          mesh_addr_format(&e->addr, addr, sizeof addr), "kind",
                          e->host ? "host" : "microservice");
    if (!e->host)
        json_object_set_new(
            o, "microservice",
            json_pack("{s:s, s:s, s:i}", "app", e->app, "name", e->ms, "replica", (int)e->replica));
    return o;
}

static json_t *service_entry(json_t *byname, const char *name)
{
    json_t *s = json_object_get(byname, name);
    if (!s) {
        s = json_pack("{s:s, s:[], s:[]}", "name", name, "endpoints", "listeners");
        json_object_set_new(byname, name, s);
    }
    return s;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void reply_services(struct node *n, struct evhttp_request *req, const char *name,
                           bool consistent)
{
    (void)name;
    (void)consistent;
    const struct svc_catalog *c = node_svc_catalog(n);
    json_t *byname = json_object();
    for (size_t i = 0; c && i < c->eps.n; i++)
        json_array_append_new(
            json_object_get(service_entry(byname, c->eps.v[i].service), "endpoints"),
            entry_json(&c->eps.v[i], "target"));
    for (size_t i = 0; c && i < c->ls.n; i++)
        json_array_append_new(
            json_object_get(service_entry(byname, c->ls.v[i].service), "listeners"),
            entry_json(&c->ls.v[i], "listen"));
    /* Sorted by name (jansson objects keep insertion order). */
    json_t *arr = json_array();
    size_t nkeys = json_object_size(byname), k = 0;
    const char **keys = calloc(nkeys + 1, sizeof *keys);
    const char *key;
    json_t *v;
    json_object_foreach(byname, key, v)
    {
        (void)v;
        if (keys)
            keys[k++] = key;
    }
    if (keys)
        qsort(keys, k, sizeof *keys, cmp_str);
    for (size_t i = 0; keys && i < k; i++)
        json_array_append(arr, json_object_get(byname, keys[i]));
    free(keys);
    json_decref(byname);
    api_reply_json(req, 200, json_pack("{s:o}", "services", arr));
}

static void h_services(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)rest;
    node_raft_read(ud, req, "", reply_services);
}

/* /v1/services/NAME/expose|connect: NAME and the operation, or an error answered. */
static bool parse_op(struct evhttp_request *req, const char *rest, char *name, size_t len,
                     const char **op)
{
    const char *slash = strchr(rest, '/');
    size_t nl = slash ? (size_t)(slash - rest) : 0;
    if (!slash || nl == 0 || nl >= len ||
        (strcmp(slash + 1, "expose") != 0 && strcmp(slash + 1, "connect") != 0)) {
        api_reply_error(req, 404, "expected /v1/services/NAME/expose or /v1/services/NAME/connect");
        return false;
    }
    memcpy(name, rest, nl);
    name[nl] = '\0';
    if (!spec_name_valid(name)) {
        api_reply_error(req, 400,
                        "service name '%s': must be 1..%d of a-z, 0-9 and '-', start with a "
                        "letter and not end with '-'",
                        name, SPEC_NAME_MAX);
        return false;
    }
    *op = slash + 1;
    return true;
}

/* The node named in a request (body or query), else this one; must be a member. */
static bool request_node(struct node *n, struct evhttp_request *req, const char *given, char *node,
                         size_t len)
{
    if (!given || !given[0])
        given = n->cfg.name;
    if (strlen(given) >= len || !swim_member_find(gossip_swim(n->gossip), given)) {
        api_reply_error(req, 404, "no node '%.64s' in the mesh", given);
        return false;
    }
    snprintf(node, len, "%s", given);
    return true;
}

/* A listener record (key) may be set or removed for service `name` only when it is not
 * another service's: that must be disconnected first. Answers 409 itself when taken. */
static bool listener_is_free(struct node *n, struct evhttp_request *req, const char *key,
                             const char *name, const char *addr, const char *node)
{
    struct fsm_app r;
    struct svc_rec rec;
    if (!n->cluster || fsm_rec_get(cluster_fsm(n->cluster), key, &r) < 0 ||
        svc_rec_parse(r.name, strlen(r.name), r.spec, r.spec_len, &rec) < 0 ||
        strcmp(rec.service, name) == 0)
        return true;
    api_reply_error(req, 409,
                    "%s on node %s is a listener of service %s, not %s (disconnect it first)", addr,
                    node, rec.service, name);
    return false;
}

/* PUT /v1/services/NAME/expose {"target": "HOST:PORT", "node"}; PUT .../connect {"listen",
 * "node"}. */
static void h_service_put(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    char name[SPEC_NAME_MAX + 1], node[FSM_NODE_NAME_MAX + 1], addrbuf[MESH_ADDR_STRLEN];
    const char *op;
    if (!parse_op(req, rest, name, sizeof name, &op))
        return;
    json_t *body = api_read_json(req);
    if (!body)
        return;
    bool expose = strcmp(op, "expose") == 0;
    const char *field = expose ? "target" : "listen";
    const char *addr = json_string_value(json_object_get(body, field));
    struct mesh_addr a;
    if (!addr || mesh_addr_parse(addr, 0, &a) < 0 || a.port == 0) {
        api_reply_error(req, 400, "%s: required, a numeric HOST:PORT (got '%.64s')", field,
                        addr ? addr : "");
        json_decref(body);
        return;
    }
    if (!request_node(n, req, json_string_value(json_object_get(body, "node")), node,
                      sizeof node)) {
        json_decref(body);
        return;
    }
    json_decref(body);
    mesh_addr_format(&a, addrbuf, sizeof addrbuf);
    char key[FSM_REC_KEY_MAX + 1];
    if (expose)
        snprintf(key, sizeof key, SVC_REC_EXPOSE "%s/%s", name, node);
    else
        snprintf(key, sizeof key, SVC_REC_CONNECT "%s/%s", node, addrbuf);
    if (!expose && !listener_is_free(n, req, key, name, addrbuf, node))
        return;
    struct svc_rec rec = {.expose = expose, .addr = a};
    snprintf(rec.service, sizeof rec.service, "%s", name);
    snprintf(rec.node, sizeof rec.node, "%s", node);
    struct raft_buffer cmd;
    int rc = svc_rec_encode(&rec, &cmd);
    if (rc < 0) {
        api_reply_error(req, 400, "cannot encode the write: %s", mesh_strerror(rc));
        return;
    }
    node_raft_write(n, req, key, &cmd);
}

/* DELETE /v1/services/NAME/expose?node=N; DELETE .../connect?listen=HOST:PORT&node=N. */
static void h_service_delete(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    char name[SPEC_NAME_MAX + 1], node[FSM_NODE_NAME_MAX + 1], q[FSM_NODE_NAME_MAX + 2];
    char lq[MESH_ADDR_STRLEN + 1], addrbuf[MESH_ADDR_STRLEN];
    const char *op;
    if (!parse_op(req, rest, name, sizeof name, &op))
        return;
    /* A declaration for a node that is gone (reaped, or never seen here) can be removed too:
     * only the name's form is checked. */
    const char *given = api_query(req, "node", q, sizeof q);
    if (!given || !given[0])
        given = n->cfg.name;
    if (!mesh_node_name_valid(given, strlen(given))) {
        api_reply_error(req, 400, "bad node name '%.64s'", given);
        return;
    }
    snprintf(node, sizeof node, "%s", given);
    char key[FSM_REC_KEY_MAX + 1];
    if (strcmp(op, "expose") == 0) {
        snprintf(key, sizeof key, SVC_REC_EXPOSE "%s/%s", name, node);
    } else {
        const char *listen = api_query(req, "listen", lq, sizeof lq);
        struct mesh_addr a;
        if (!listen || mesh_addr_parse(listen, 0, &a) < 0) {
            api_reply_error(req, 400, "listen: required, the HOST:PORT the service is on");
            return;
        }
        snprintf(key, sizeof key, SVC_REC_CONNECT "%s/%s", node,
                 mesh_addr_format(&a, addrbuf, sizeof addrbuf));
        if (!listener_is_free(n, req, key, name, addrbuf, node))
            return;
    }
    struct raft_buffer cmd;
    int rc = fsm_cmd_delete_rec(key, &cmd);
    if (rc < 0) {
        api_reply_error(req, 400, "cannot encode the write: %s", mesh_strerror(rc));
        return;
    }
    node_raft_write(n, req, key, &cmd);
}

int node_svc_start(struct node *n, struct mesh_err *err)
{
    static const struct api_route_def routes[] = {
        {"GET", FOGMESH_API_PREFIX "/services", h_services},
        {"PUT", FOGMESH_API_PREFIX "/services/", h_service_put},
        {"DELETE", FOGMESH_API_PREFIX "/services/", h_service_delete},
    };
    return api_route_table(n->api, routes, sizeof routes / sizeof routes[0], n, err);
}

void node_svc_stop(struct node *n)
{
    svc_catalog_free(n->svc);
    n->svc = NULL;
}
