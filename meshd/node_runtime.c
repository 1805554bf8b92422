/* The node's container runtime, wired: the engine client (runtime/engine.h) on the node's loop,
 * a ping that publishes the engine's state in gossip metadata (the scheduler only places work on
 * nodes whose engine is up), a tick every second for the reconciler (runtime/reconciler.h) and
 * the CALL_RT_STATUS service that answers other nodes with what it observes
 * (runtime/status_wire.h).
 *
 * The reconciler decides; this file gives it its io table (runtime/rt_io.h): engine calls, the
 * placements of this node's replica of the desired state (resolved against the app specs and
 * this node's architecture), the config files under DATA_DIR/containers, the clocks and the
 * log. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "node.h"

#include "atomicfile.h"
#include "reconcile.h"
#include "reconciler.h"
#include "spec.h"
#include "status_wire.h"
#include "version.h"

#define PING_MS         2000
#define RECONCILE_MS    1000
#define CONFIG_SUBDIR   "containers"
#define CONFIG_READ_MAX (SPEC_MAX_CONFIG + 2)

struct node_runtime {
    struct node *n;
    struct rt_io io;
    struct rt_reconciler *rec;
    char *root;   /* absolute DATA_DIR/containers; NULL: no config files (see config_root) */
    char *filter; /* the engine's list filter: our node label */
    struct event *ping_timer;
    struct event *reconcile_timer;
    bool pinging;
};

/* ---- engine calls ------------------------------------------------------------------------ */

static void on_engine(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct rt_call *c = data;
    (void)req;
    struct rt_result res = {
        .status = reply->status,
        .msg = reply->status < 0 ? reply->err.msg : "",
        .id = reply->id,
        .json = reply->json,
    };
    c->done(c, &res);
}

static int on_engine_progress(json_t *line, void *data)
{
    struct rt_call *c = data;
    if (c->progress)
        c->progress(c, line);
    return 0;
}

static int io_list(void *ud, struct rt_call *c)
{
    struct node_runtime *rt = ud;
    return engine_container_list(rt->n->engine, true, rt->filter, on_engine, c, NULL);
}

static int io_inspect(void *ud, const char *id, struct rt_call *c)
{
    struct node_runtime *rt = ud;
    return engine_container_inspect(rt->n->engine, id, on_engine, c, NULL);
}

static int io_create(void *ud, const char *name, const json_t *body, struct rt_call *c)
{
    struct node_runtime *rt = ud;
    return engine_container_create(rt->n->engine, name, body, on_engine, c, NULL);
}

static int io_start(void *ud, const char *id, struct rt_call *c)
{
    struct node_runtime *rt = ud;
    return engine_container_start(rt->n->engine, id, on_engine, c, NULL);
}

static int io_remove(void *ud, const char *id, struct rt_call *c)
{
    struct node_runtime *rt = ud;
    return engine_container_remove(rt->n->engine, id, true, false, on_engine, c, NULL);
}

static int io_kill(void *ud, const char *id, const char *signal, struct rt_call *c)
{
    struct node_runtime *rt = ud;
    return engine_container_kill(rt->n->engine, id, signal, on_engine, c, NULL);
}

static int io_image_pull(void *ud, const char *repo, const char *tag, struct rt_call *c)
{
    struct node_runtime *rt = ud;
    return engine_image_pull(rt->n->engine, repo, tag, on_engine_progress, on_engine, c, NULL);
}

static int io_image_inspect(void *ud, const char *image, struct rt_call *c)
{
    struct node_runtime *rt = ud;
    return engine_image_inspect(rt->n->engine, image, on_engine, c, NULL);
}

/* ---- the desired state ------------------------------------------------------------------- */

static bool io_desired_known(void *ud)
{
    struct node_runtime *rt = ud;
    return rt->n->cluster != NULL;
}

/* The placements of this node's replica of the desired state that name this node, with the
 * microservice's spec and image for this node's architecture. Strings borrowed from the fsm stay
 * valid for the pass only if nothing is applied meanwhile: the spec copies (kept in *ret_keep)
 * hold what the pass uses later. */
static int io_placements(void *ud, struct rt_placed **ret, size_t *ret_n, json_t **ret_keep)
{
    struct node_runtime *rt = ud;
    struct node *n = rt->n;
    struct fsm *fsm = cluster_fsm(n->cluster);
    size_t np = fsm_placement_count(fsm), count = 0;
    struct rt_placed *v = calloc(np + 1, sizeof *v);
    json_t *keep = json_array();
    if (!v || !keep) {
        free(v);
        json_decref(keep);
        return MESH_ENOMEM;
    }
    for (size_t i = 0; i < np; i++) {
        struct fsm_placement pl;
        struct fsm_app a;
        if (fsm_placement_at(fsm, i, &pl) < 0 || strcmp(pl.node, n->cfg.name) != 0)
            continue;
        struct rt_placed *e = &v[count++];
        *e = (struct rt_placed){.app = pl.app, .ms = pl.ms, .replica = pl.replica};
        if (fsm_app_find(fsm, pl.app, &a) < 0)
            continue;
        json_t *app = node_spec_cached(n, &a); /* NULL: not a valid spec (logged there) */
        if (!app)
            continue;
        json_array_append_new(keep, app);
        size_t k;
        const json_t *ms = spec_microservice(app, pl.ms, &k);
        if (!ms)
            continue; /* a placement for a microservice the spec no longer has */
        e->ms_spec = ms;
        e->image = spec_images_for_arch(app, k, n->meta.arch);
    }
    *ret = v;
    *ret_n = count;
    *ret_keep = keep;
    return 0;
}

/* ---- config files ------------------------------------------------------------------------ */

/* The text of dir/config.json, "" when there is none (or it cannot be read: rewritten then). */
static char *io_config_read(void *ud, const char *dir)
{
    (void)ud;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, RT_CONFIG_FILE);
    char *buf = malloc(CONFIG_READ_MAX + 1);
    if (!buf)
        return NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r;
        while (len < CONFIG_READ_MAX && (r = read(fd, buf + len, CONFIG_READ_MAX - len)) > 0)
            len += (size_t)r;
        close(fd);
    }
    buf[len] = '\0';
    return buf;
}

/* Writes text to dir/config.json atomically (common/atomicfile.h) through a temp file beside
 * dir (outside the mount, so the container never sees it half written). */
static int io_config_write(void *ud, const char *dirname, const char *dir, const char *text,
                           struct mesh_err *err)
{
    struct node_runtime *rt = ud;
    char tmp[PATH_MAX], path[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", rt->root, dirname);
    snprintf(path, sizeof path, "%s/%s", dir, RT_CONFIG_FILE);
    if ((mkdir(rt->root, 0755) < 0 && errno != EEXIST) || (mkdir(dir, 0755) < 0 && errno != EEXIST))
        return mesh_errf(err, -errno, "config: cannot make %s: %s", dir, strerror(errno));
    return mesh_file_replace(tmp, path, text, strlen(text), 0644, err);
}

/* Removes the config dirs (and temp files) under the root that keep does not name. */
static void io_config_sweep(void *ud, const json_t *keep)
{
    struct node_runtime *rt = ud;
    DIR *dir = opendir(rt->root);
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            json_object_get(keep, e->d_name))
            continue;
        char path[PATH_MAX];
        if (e->d_name[0] == '.') {
            snprintf(path, sizeof path, "%s/%s", rt->root, e->d_name);
            unlink(path);
            continue;
        }
        snprintf(path, sizeof path, "%s/%s/%s", rt->root, e->d_name, RT_CONFIG_FILE);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s", rt->root, e->d_name);
        if (rmdir(path) == 0)
            log_debug(&rt->n->log, "runtime: removed the config of %s", e->d_name);
    }
    if (dir)
        closedir(dir);
}

/* ---- clocks, log, kick ------------------------------------------------------------------- */

static void io_kick(void *ud)
{
    struct node_runtime *rt = ud;
    event_active(rt->reconcile_timer, EV_TIMEOUT, 0);
}

static uint64_t io_now_ms(void *ud)
{
    (void)ud;
    return mesh_now_ms();
}

static void io_wallclock(void *ud, char buf[32])
{
    (void)ud;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void io_note(void *ud, enum rt_note level, const char *msg)
{
    struct node_runtime *rt = ud;
    if (level == RT_NOTE_WARN)
        log_warn(&rt->n->log, "%s", msg);
    else if (level == RT_NOTE_INFO)
        log_info(&rt->n->log, "%s", msg);
    else
        log_debug(&rt->n->log, "%s", msg);
}

/* ---- engine ping, timers ----------------------------------------------------------------- */

static void on_ping(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct node_runtime *rt = data;
    struct node *n = rt->n;
    (void)req;
    enum nodemeta_engine st = reply->status == 0 ? NODEMETA_ENGINE_UP : NODEMETA_ENGINE_DOWN;
    rt->pinging = false;
    if (reply->status == MESH_ECLOSED)
        return; /* the engine client is being freed */
    rt_reconciler_engine(rt->rec, reply->status == 0, reply->err.msg);
    if (st != n->meta.engine) {
        if (st == NODEMETA_ENGINE_UP)
            log_info(&n->log, "container engine available at %s", engine_socket_path(n->engine));
        else
            log_warn(&n->log, "container engine unavailable: %s", reply->err.msg);
        n->meta.engine = st;
        node_meta_publish(n);
    }
}

static void on_ping_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node_runtime *rt = arg;
    (void)fd;
    (void)what;
    if (!rt->pinging && engine_ping(rt->n->engine, on_ping, rt, NULL) == 0)
        rt->pinging = true;
}

static void on_reconcile_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node_runtime *rt = arg;
    (void)fd;
    (void)what;
    rt_reconciler_tick(rt->rec);
}

/* ---- CALL_RT_STATUS ---------------------------------------------------------------------- */

static void serve_rt_status(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    int rc = rt_status_request_decode(req->data, req->len);
    if (rc < 0) {
        peers_respond(req, rc, NULL, 0, "not a status request this node knows");
        return;
    }
    const json_t *map = node_runtime_observed(n);
    json_t *none = map ? NULL : json_object();
    uint8_t *buf = NULL;
    size_t len = 0;
    rc = rt_status_reply_encode(map ? map : none, &buf, &len);
    json_decref(none);
    if (rc < 0)
        peers_respond(req, rc, NULL, 0, mesh_strerror(rc));
    else
        peers_respond(req, 0, buf, len, NULL);
    free(buf);
}

/* ---- start, stop ------------------------------------------------------------------------- */

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

/* The config files' root: absolute (the engine resolves bind sources itself) and without the
 * characters that separate the fields of a bind ("SRC:DST:ro"). */
static char *config_root(struct node *n)
{
    char abs[PATH_MAX], *root;
    if (!realpath(n->cfg.data_dir, abs)) {
        log_warn(&n->log, "runtime: cannot resolve %s (%s): containers get no config file",
                 n->cfg.data_dir, strerror(errno));
        return NULL;
    }
    if (strpbrk(abs, ":,")) {
        log_warn(&n->log,
                 "runtime: the data dir %s has ':' or ',', which a bind mount cannot "
                 "carry: containers get no config file",
                 abs);
        return NULL;
    }
    if (asprintf(&root, "%s/%s", abs, CONFIG_SUBDIR) < 0)
        return NULL;
    return root;
}

int node_runtime_start(struct node *n, struct mesh_err *err)
{
    int rc = peers_serve(n->peers, CALL_RT_STATUS, RT_STATUS_REQUEST_MAX, serve_rt_status, n);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot register the status service");
    const char *url = engine_url(n);
    if (!url) {
        log_info(&n->log, "no container engine (give --engine): this node runs no containers");
        return 0;
    }
    struct node_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    n->rt = rt;
    rt->n = n;
    rt->io = (struct rt_io){
        .ud = rt,
        .list = io_list,
        .inspect = io_inspect,
        .create = io_create,
        .start = io_start,
        .remove = io_remove,
        .kill = io_kill,
        .image_pull = io_image_pull,
        .image_inspect = io_image_inspect,
        .desired_known = io_desired_known,
        .placements = io_placements,
        .config_read = io_config_read,
        .config_write = io_config_write,
        .config_sweep = io_config_sweep,
        .kick = io_kick,
        .now_ms = io_now_ms,
        .wallclock = io_wallclock,
        .note = io_note,
    };
    rt->root = config_root(n);
    char sel[256];
    snprintf(sel, sizeof sel, "%s=%s", RT_LABEL_NODE, n->cfg.name);
    const char *labels[] = {sel};
    if (engine_labels_filter(labels, 1, &rt->filter) < 0 ||
        rt_reconciler_new(n->cfg.name, rt->root, &rt->io, &rt->rec) < 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    struct engine_config ec = {.url = url};
    rc = engine_new(n->loop.base, &ec, &n->engine, err);
    if (rc < 0)
        return rc;
    rt->ping_timer = event_new(n->loop.base, -1, EV_PERSIST, on_ping_timer, rt);
    rt->reconcile_timer = event_new(n->loop.base, -1, EV_PERSIST, on_reconcile_timer, rt);
    struct timeval ping = mesh_ms_to_timeval(PING_MS), rec = mesh_ms_to_timeval(RECONCILE_MS);
    if (!rt->ping_timer || !rt->reconcile_timer || event_add(rt->ping_timer, &ping) != 0 ||
        event_add(rt->reconcile_timer, &rec) != 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    on_ping_timer(-1, 0, rt); /* know the engine's state at once */
    return 0;
}

void node_runtime_stop(struct node *n)
{
    struct node_runtime *rt = n->rt;
    if (!rt)
        return;
    if (rt->ping_timer)
        event_free(rt->ping_timer);
    if (rt->reconcile_timer)
        event_free(rt->reconcile_timer);
    rt->ping_timer = rt->reconcile_timer = NULL;
    rt_reconciler_close(rt->rec); /* a pass that continues from a callback below stops */
    struct engine *e = n->engine;
    n->engine = NULL;
    engine_free(e); /* fails what is pending; the pass frees itself */
    rt_reconciler_free(rt->rec);
    free(rt->filter);
    free(rt->root);
    free(rt);
    n->rt = NULL;
}

void node_runtime_kick(struct node *n)
{
    if (n->rt && n->rt->reconcile_timer)
        rt_reconciler_kick(n->rt->rec);
}

const json_t *node_runtime_observed(struct node *n)
{
    return n->rt && n->rt->rec ? rt_reconciler_status(n->rt->rec) : NULL;
}

const json_t *node_runtime_status(struct node *n, const char *app, const char *ms, uint32_t replica)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%s/%u", app, ms, (unsigned)replica);
    return json_object_get(node_runtime_observed(n), key);
}
