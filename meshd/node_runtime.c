/* The node's container runtime: the engine client (runtime/engine.h) on the node's loop, a ping
 * that publishes the engine's state in gossip metadata (the scheduler only places work on nodes
 * whose engine is up), and a reconcile pass every second that makes this node's containers match
 * the placements the leader committed for it (runtime/reconcile.h).
 *
 * Beside the pass, and never blocking it:
 * - config files: DATA_DIR/containers/APP.MS.REPLICA/config.json, mounted read-only at
 *   /fogmesh in the container; rewritten atomically (rename) and the container signalled when
 *   the config alone changes (runtime/README.md);
 * - image pulls: a create that fails for a missing image starts a pull (state `pulling`, the
 *   progress as message); a failed pull shows `failed` and is retried with a backoff;
 * - inspects: a container's restart count and start time, asked only when the engine lists it
 *   in a new state (and every INFO_REFRESH_MS, to see restarts the list hides);
 * - while the engine is unreachable every replica placed here is `failed`, "engine
 *   unavailable ...".
 * The status of each replica ({"state", "message", "since", "restarts", "container"}) is in
 * n->rt_status, which node_sched.c serves to the other nodes. */
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
#include "spec.h"
#include "version.h"

#define PING_MS             2000
#define RECONCILE_MS        1000
#define ACTIONS_MAX         64 /* per pass; the rest in the next */
#define PULLS_MAX           16 /* images pulled or waiting for a retry at once */
#define INSPECTS_MAX        8  /* in flight */
#define INFO_REFRESH_MS     10000
#define PULL_RETRY_MS       5000
#define PULL_RETRY_MAX_MS   300000
#define CREATE_RETRY_MS     2000
#define CREATE_RETRY_MAX_MS 60000
#define PULL_CHECK_MS       1000 /* a failed image is looked for locally this often */
#define PULL_MSG_MAX        512
#define CONFIG_SUBDIR       "containers"
#define CONFIG_READ_MAX     (SPEC_MAX_CONFIG + 2)

struct rt_state;

/* An image being pulled, or whose pull failed and waits for its retry. */
struct rt_pull {
    struct rt_state *rt;
    char *image;   /* NULL: the slot is free */
    bool active;   /* the pull is in flight */
    bool checking; /* an image inspect is in flight */
    bool used;     /* a replica of this pass wants it */
    unsigned failures;
    uint64_t retry_at_ms;
    uint64_t checked_ms;
    char message[PULL_MSG_MAX];
};

struct rt_state {
    struct node *n;
    char *root; /* absolute DATA_DIR/containers; NULL: no config files (see node_runtime_start) */
    json_t *configs; /* config dir name -> the text its file holds ("" when none) */
    json_t *info;    /* container id -> {"seen", "busy", "at", "restarts", "started", "finished"} */
    json_t *holds;   /* "app/ms/replica" -> {"hash", "message", "failures", "retry_at"} */
    struct rt_pull pulls[PULLS_MAX];
    unsigned inspects;
    bool sweep; /* look for config dirs of replicas gone */
    char engine_error[MESH_ERRMSG_LEN];
};

/* What the pass knows of one desired replica beside struct rt_desired. */
struct rt_want {
    char key[256];     /* app/ms/replica */
    char dirname[160]; /* APP.MS.REPLICA, "" when no config dir */
    char *dir;         /* root/dirname (malloc'd) or NULL */
    char *text;        /* the config file's text (malloc'd) */
    bool blocked;      /* its config could not be written: nothing else for it this pass */
};

/* One reconcile pass: the engine's list, what should run here, and the actions in progress. */
struct rt_pass {
    struct node *n;
    json_t *list;  /* the engine's answer (kept) */
    json_t *specs; /* array of the app specs the desired entries borrow from */
    struct rt_desired *desired;
    struct rt_want *want;
    size_t nd;
    struct rt_observed *observed;
    size_t no;
    struct rt_action actions[ACTIONS_MAX];
    size_t nactions, next;
};

/* ---- status ------------------------------------------------------------------------------ */

static void now_text(char buf[static 32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void replica_key(char *buf, size_t len, const char *app, const char *ms, uint32_t replica)
{
    snprintf(buf, len, "%s/%s/%u", app, ms, (unsigned)replica);
}

/* Sets into[key]. since NULL: kept from prev[key] when the state is the same, else now. */
static void status_put(json_t *into, const json_t *prev, const char *key, const char *state,
                       const char *msg, const char *since, json_int_t restarts,
                       const char *container)
{
    char now[32];
    if (!since) {
        const json_t *old = json_object_get(prev, key);
        const char *old_state = json_string_value(json_object_get(old, "state"));
        since = old_state && strcmp(old_state, state) == 0
                    ? json_string_value(json_object_get(old, "since"))
                    : NULL;
        if (!since) {
            now_text(now);
            since = now;
        }
    }
    char shortid[13] = "";
    if (container)
        snprintf(shortid, sizeof shortid, "%s", container);
    json_object_set_new(into, key,
                        json_pack("{s:s, s:s, s:s, s:I, s:s}", "state", state, "message",
                                  msg ? msg : "", "since", since, "restarts", restarts, "container",
                                  shortid));
}

static void status_set(struct node *n, const char *key, const char *state, const char *msg)
{
    status_put(n->rt_status, n->rt_status, key, state, msg, NULL, 0, NULL);
}

/* While the engine is unreachable: every replica placed here is failed, and nothing else is
 * reported (containers cannot be seen). */
static void status_engine_down(struct node *n)
{
    if (!n->cluster)
        return;
    struct fsm *fsm = cluster_fsm(n->cluster);
    json_t *st = json_object();
    if (!st)
        return;
    char msg[MESH_ERRMSG_LEN + 32];
    const char *err = n->rt->engine_error;
    if (strncmp(err, "engine unavailable", 18) == 0)
        snprintf(msg, sizeof msg, "%s", err);
    else
        snprintf(msg, sizeof msg, "engine unavailable%s%s", err[0] ? ": " : "", err);
    for (size_t i = 0; i < fsm_placement_count(fsm); i++) {
        struct fsm_placement pl;
        char key[256];
        if (fsm_placement_at(fsm, i, &pl) < 0 || strcmp(pl.node, n->cfg.name) != 0)
            continue;
        replica_key(key, sizeof key, pl.app, pl.ms, pl.replica);
        status_put(st, n->rt_status, key, "failed", msg, NULL, 0, NULL);
    }
    json_decref(n->rt_status);
    n->rt_status = st;
}

/* ---- engine ping ------------------------------------------------------------------------- */

static void on_ping(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct node *n = data;
    (void)req;
    enum nodemeta_engine st = reply->status == 0 ? NODEMETA_ENGINE_UP : NODEMETA_ENGINE_DOWN;
    n->engine_pinging = false;
    if (reply->status == MESH_ECLOSED)
        return; /* the engine client is being freed */
    snprintf(n->rt->engine_error, sizeof n->rt->engine_error, "%s",
             reply->status == 0 ? "" : reply->err.msg);
    if (st != n->meta.engine) {
        if (st == NODEMETA_ENGINE_UP)
            log_info(&n->log, "container engine available at %s", engine_socket_path(n->engine));
        else
            log_warn(&n->log, "container engine unavailable: %s", reply->err.msg);
        n->meta.engine = st;
        node_meta_publish(n);
        if (st == NODEMETA_ENGINE_DOWN)
            status_engine_down(n);
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

/* ---- config files ------------------------------------------------------------------------ */

/* The text of dir/config.json, "" when there is none (or it cannot be read: rewritten then). */
static char *config_read(const char *dir)
{
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
static int config_write(struct rt_state *rt, const char *dirname, const char *dir, const char *text,
                        struct mesh_err *err)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", rt->root, dirname);
    snprintf(path, sizeof path, "%s/%s", dir, RT_CONFIG_FILE);
    if ((mkdir(rt->root, 0755) < 0 && errno != EEXIST) || (mkdir(dir, 0755) < 0 && errno != EEXIST))
        return mesh_errf(err, -errno, "config: cannot make %s: %s", dir, strerror(errno));
    int rc = mesh_file_replace(tmp, path, text, strlen(text), 0644, err);
    if (rc < 0)
        return rc;
    json_object_set_new(rt->configs, dirname, json_string(text));
    return 0;
}

/* Removes the config dirs (and temp files) of replicas neither desired nor with a container. */
static void config_sweep(struct rt_pass *p)
{
    struct rt_state *rt = p->n->rt;
    if (!rt->root || !rt->sweep)
        return;
    rt->sweep = false;
    json_t *keep = json_object();
    for (size_t i = 0; i < p->nd; i++)
        if (p->want[i].dirname[0])
            json_object_set_new(keep, p->want[i].dirname, json_true());
    for (size_t i = 0; i < p->no; i++) {
        struct rt_desired d = {
            .app = p->observed[i].app, .ms = p->observed[i].ms, .replica = p->observed[i].replica};
        char name[160];
        if (rt_config_dir_name(&d, name, sizeof name) == 0)
            json_object_set_new(keep, name, json_true());
    }
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
            log_debug(&p->n->log, "runtime: removed the config of %s", e->d_name);
        json_object_del(rt->configs, e->d_name);
    }
    if (dir)
        closedir(dir);
    json_decref(keep);
}

/* ---- image pulls ------------------------------------------------------------------------- */

static struct rt_pull *pull_find(struct rt_state *rt, const char *image)
{
    for (size_t i = 0; i < PULLS_MAX; i++)
        if (rt->pulls[i].image && strcmp(rt->pulls[i].image, image) == 0)
            return &rt->pulls[i];
    return NULL;
}

static void pull_release(struct rt_pull *pl)
{
    if (pl->checking) {
        pl->used = false; /* freed when the inspect answers */
        return;
    }
    free(pl->image);
    pl->image = NULL;
    pl->active = pl->used = false;
    pl->failures = 0;
    pl->message[0] = '\0';
}

static int on_pull_progress(json_t *line, void *data)
{
    struct rt_pull *pl = data;
    const char *status = json_string_value(json_object_get(line, "status"));
    const char *progress = json_string_value(json_object_get(line, "progress"));
    if (status)
        snprintf(pl->message, sizeof pl->message, "pulling %s: %s%s%s", pl->image, status,
                 progress ? " " : "", progress ? progress : "");
    return 0;
}

static void on_pull_done(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct rt_pull *pl = data;
    struct node *n = pl->rt->n;
    (void)req;
    pl->active = false;
    if (reply->status == MESH_ECLOSED) {
        pull_release(pl);
        return;
    }
    if (reply->status == 0) {
        log_info(&n->log, "runtime: pulled image %s", pl->image);
        pull_release(pl); /* the image is there: the next pass creates */
        return;
    }
    pl->failures++;
    uint64_t wait = rt_backoff_ms(pl->failures, PULL_RETRY_MS, PULL_RETRY_MAX_MS);
    pl->retry_at_ms = mesh_now_ms() + wait;
    snprintf(pl->message, sizeof pl->message, "image not found: %.200s (%.240s); next pull in %us",
             pl->image, reply->err.msg, (unsigned)(wait / 1000));
    log_warn(&n->log, "runtime: %s", pl->message);
}

static void pull_start(struct rt_pull *pl)
{
    struct node *n = pl->rt->n;
    char repo[SPEC_MAX_STRING], tag[SPEC_MAX_STRING];
    int rc = rt_image_ref(pl->image, repo, sizeof repo, tag, sizeof tag);
    if (rc == 0)
        rc = engine_image_pull(n->engine, repo, tag, on_pull_progress, on_pull_done, pl, NULL);
    if (rc < 0) {
        pl->failures++;
        pl->retry_at_ms =
            mesh_now_ms() + rt_backoff_ms(pl->failures, PULL_RETRY_MS, PULL_RETRY_MAX_MS);
        snprintf(pl->message, sizeof pl->message, "image %s: cannot pull: %s", pl->image,
                 mesh_strerror(rc));
        return;
    }
    pl->active = true;
    snprintf(pl->message, sizeof pl->message, "pulling %s", pl->image);
    log_info(&n->log, "runtime: pulling image %s", pl->image);
}

static void on_image_check(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct rt_pull *pl = data;
    (void)req;
    pl->checking = false;
    pl->checked_ms = mesh_now_ms();
    if (reply->status == 0 && !pl->active) {
        log_info(&pl->rt->n->log, "runtime: image %s is there now", pl->image);
        pull_release(pl); /* loaded or imported meanwhile: the next pass creates */
    } else if (reply->status == MESH_ECLOSED) {
        pull_release(pl);
    }
}

/* Between pulls of a failed image, whether it was loaded or imported meanwhile: a local
 * inspect, at most every PULL_CHECK_MS. */
static void pull_check(struct rt_pull *pl, uint64_t now)
{
    if (pl->active || pl->checking || now - pl->checked_ms < PULL_CHECK_MS)
        return;
    if (engine_image_inspect(pl->rt->n->engine, pl->image, on_image_check, pl, NULL) == 0)
        pl->checking = true;
}

/* A create found no image: pull it (unless a pull of it is known already). NULL when every
 * slot is taken. */
static struct rt_pull *pull_want(struct rt_state *rt, const char *image)
{
    struct rt_pull *pl = pull_find(rt, image);
    if (pl)
        return pl;
    for (size_t i = 0; i < PULLS_MAX && !pl; i++)
        if (!rt->pulls[i].image)
            pl = &rt->pulls[i];
    if (!pl || !(pl->image = strdup(image)))
        return NULL;
    pl->rt = rt;
    pl->used = true;
    pull_start(pl);
    return pl;
}

/* ---- container details (inspect) --------------------------------------------------------- */

struct inspect_ctx {
    struct rt_state *rt;
    char id[];
};

static void on_inspect(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct inspect_ctx *c = data;
    struct rt_state *rt = c->rt;
    (void)req;
    rt->inspects--;
    json_t *info = json_object_get(rt->info, c->id);
    if (info && reply->status == 0 && json_is_object(reply->json)) {
        json_t *state = json_object_get(reply->json, "State");
        json_t *rc = json_object_get(reply->json, "RestartCount");
        json_object_set_new(info, "restarts", json_integer(json_integer_value(rc)));
        json_object_set(info, "started", json_object_get(state, "StartedAt"));
        json_object_set(info, "finished", json_object_get(state, "FinishedAt"));
        json_object_set_new(info, "busy", json_false());
        json_object_set_new(info, "at", json_integer((json_int_t)mesh_now_ms()));
    } else if (info) {
        json_object_del(rt->info, c->id); /* asked again on the next pass */
    }
    free(c);
}

/* Asks the engine for details of a listed container when its state is new to us. */
static void inspect_maybe(struct rt_state *rt, const char *id, const char *state)
{
    json_t *info = json_object_get(rt->info, id);
    uint64_t now = mesh_now_ms();
    if (info) {
        const char *seen = json_string_value(json_object_get(info, "seen"));
        uint64_t at = (uint64_t)json_integer_value(json_object_get(info, "at"));
        if (json_is_true(json_object_get(info, "busy")) ||
            (seen && state && strcmp(seen, state) == 0 && now - at < INFO_REFRESH_MS))
            return;
    }
    if (rt->inspects >= INSPECTS_MAX)
        return;
    size_t len = strlen(id);
    struct inspect_ctx *c = malloc(sizeof *c + len + 1);
    if (!c)
        return;
    c->rt = rt;
    memcpy(c->id, id, len + 1);
    if (engine_container_inspect(rt->n->engine, id, on_inspect, c, NULL) < 0) {
        free(c);
        return;
    }
    rt->inspects++;
    if (!info) {
        info = json_pack("{s:I}", "restarts", (json_int_t)0);
        json_object_set_new(rt->info, id, info);
    }
    json_object_set_new(info, "seen", json_string(state ? state : ""));
    json_object_set_new(info, "busy", json_true());
}

/* ---- the pass ---------------------------------------------------------------------------- */

static void pass_free(struct rt_pass *p)
{
    json_decref(p->list);
    json_decref(p->specs);
    for (size_t i = 0; p->want && i < p->nd; i++) {
        free(p->want[i].dir);
        free(p->want[i].text);
    }
    free(p->want);
    free(p->desired);
    free(p->observed);
    struct node *n = p->n;
    n->rt_pass = NULL;
    free(p);
    if (n->rt_kick && n->reconcile_timer) {
        n->rt_kick = false;
        event_active(n->reconcile_timer, EV_TIMEOUT, 0);
    }
}

void node_runtime_kick(struct node *n)
{
    if (!n->reconcile_timer)
        return;
    if (n->rt_pass)
        n->rt_kick = true; /* once this pass is done */
    else
        event_active(n->reconcile_timer, EV_TIMEOUT, 0);
}

static void pass_step(struct rt_pass *p);

/* A create or start failed for a reason other than a missing image: no new try before a
 * backoff (the replica shows failed meanwhile). */
static void hold(struct node *n, const struct rt_want *w, const struct rt_desired *d,
                 const char *msg)
{
    json_t *old = json_object_get(n->rt->holds, w->key);
    unsigned failures = (unsigned)json_integer_value(json_object_get(old, "failures")) + 1;
    uint64_t retry = mesh_now_ms() + rt_backoff_ms(failures, CREATE_RETRY_MS, CREATE_RETRY_MAX_MS);
    json_object_set_new(n->rt->holds, w->key,
                        json_pack("{s:s, s:s, s:I, s:I}", "hash", d->hash, "message", msg,
                                  "failures", (json_int_t)failures, "retry_at", (json_int_t)retry));
    status_set(n, w->key, "failed", msg);
}

static void on_action_done(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct rt_pass *p = data;
    struct node *n = p->n;
    (void)req;
    struct rt_action *a = &p->actions[p->next - 1];
    struct rt_desired *d = a->desired < p->nd ? &p->desired[a->desired] : NULL;
    struct rt_want *w = d ? &p->want[a->desired] : NULL;
    if (reply->status == MESH_ECLOSED) {
        /* The engine client is closing: nothing more this pass. */
    } else if (a->op == RT_CREATE) {
        if (reply->status == MESH_ENOTFOUND) {
            /* No such image here: pull it (a loaded or imported one is used as it is). */
            struct rt_pull *pl = pull_want(n->rt, d->image);
            if (pl && pl->active)
                status_set(n, w->key, "pulling", pl->message);
            else if (pl)
                status_set(n, w->key, "failed", pl->message);
            else
                status_set(n, w->key, "pending", "waiting for a free image pull slot");
        } else if (reply->status < 0) {
            log_warn(&n->log, "runtime: %s", reply->err.msg);
            hold(n, w, d, reply->err.msg);
        } else if (reply->id) {
            /* Created: start it as the next step. */
            json_object_del(n->rt->holds, w->key);
            a->op = RT_START;
            a->id = NULL;
            if (engine_container_start(n->engine, reply->id, on_action_done, p, NULL) == 0) {
                status_set(n, w->key, "starting", "");
                return;
            }
        }
    } else if (reply->status < 0) {
        log_warn(&n->log, "runtime: %s", reply->err.msg);
        if (a->op == RT_START && w)
            hold(n, w, d, reply->err.msg);
    } else if (a->op == RT_SIGNAL) {
        log_info(&n->log, "runtime: %s: config changed, signalled its container (SIG%s)", w->key,
                 RT_CONFIG_SIGNAL);
    }
    pass_step(p);
}

static void pass_step(struct rt_pass *p)
{
    struct node *n = p->n;
    if (!n->engine)
        goto done;
    while (p->next < p->nactions) {
        struct rt_action *a = &p->actions[p->next++];
        struct rt_desired *d = a->desired < p->nd ? &p->desired[a->desired] : NULL;
        struct rt_want *w = d ? &p->want[a->desired] : NULL;
        int rc = 0;
        if (w && w->blocked)
            continue;
        if (a->op == RT_REMOVE) {
            n->rt->sweep = true;
            rc = engine_container_remove(n->engine, a->id, true, false, on_action_done, p, NULL);
        } else if (a->op == RT_CONFIG) {
            struct mesh_err err = {0};
            if (!w->dir) {
                continue;
            } else if (config_write(n->rt, w->dirname, w->dir, w->text, &err) < 0) {
                w->blocked = true;
                log_warn(&n->log, "runtime: %s: %s", w->key, err.msg);
                status_set(n, w->key, "failed", err.msg);
            } else {
                log_debug(&n->log, "runtime: %s: config written", w->key);
            }
            continue;
        } else if (a->op == RT_SIGNAL) {
            rc = engine_container_kill(n->engine, a->id, RT_CONFIG_SIGNAL, on_action_done, p, NULL);
        } else if (a->op == RT_START) {
            rc = engine_container_start(n->engine, a->id, on_action_done, p, NULL);
            if (rc == 0 && w)
                status_set(n, w->key, "starting", "");
        } else {
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
done:
    pass_free(p);
}

/* Whether d waits (image pull or backoff): sets its status then. */
static bool desired_held(struct rt_pass *p, struct rt_desired *d, struct rt_want *w, json_t *status,
                         uint64_t now)
{
    struct rt_state *rt = p->n->rt;
    struct rt_pull *pl = pull_find(rt, d->image);
    if (pl) {
        pl->used = true;
        if (!pl->active && now >= pl->retry_at_ms)
            pull_start(pl);
        else
            pull_check(pl, now);
        status_put(status, p->n->rt_status, w->key, pl->active ? "pulling" : "failed", pl->message,
                   NULL, 0, NULL);
        return true;
    }
    json_t *h = json_object_get(rt->holds, w->key);
    if (h && strcmp(json_string_value(json_object_get(h, "hash")), d->hash) != 0) {
        json_object_del(rt->holds, w->key); /* the spec changed: try at once */
        h = NULL;
    }
    if (h && now < (uint64_t)json_integer_value(json_object_get(h, "retry_at"))) {
        status_put(status, p->n->rt_status, w->key, "failed",
                   json_string_value(json_object_get(h, "message")), NULL, 0, NULL);
        return true;
    }
    return false;
}

/* The replicas placed on this node, from the replica of the desired state. */
static void desired_build(struct rt_pass *p, json_t *status)
{
    struct node *n = p->n;
    struct rt_state *rt = n->rt;
    struct fsm *fsm = cluster_fsm(n->cluster);
    size_t np = fsm_placement_count(fsm);
    p->desired = calloc(np + 1, sizeof *p->desired);
    p->want = calloc(np + 1, sizeof *p->want);
    p->specs = json_array();
    if (!p->desired || !p->want || !p->specs)
        return;
    for (size_t i = 0; i < np; i++) {
        struct fsm_placement pl;
        struct fsm_app a;
        if (fsm_placement_at(fsm, i, &pl) < 0 || strcmp(pl.node, n->cfg.name) != 0 ||
            fsm_app_find(fsm, pl.app, &a) < 0)
            continue;
        json_t *app = node_spec_cached(n, &a); /* NULL: not a valid spec (logged there) */
        if (!app)
            continue;
        json_array_append_new(p->specs, app);
        size_t k;
        const json_t *ms = spec_microservice(app, pl.ms, &k);
        if (!ms)
            continue; /* a placement for a microservice the spec no longer has */
        const char *image = spec_images_for_arch(app, k, n->meta.arch);
        if (!image) {
            char key[256];
            replica_key(key, sizeof key, pl.app, pl.ms, pl.replica);
            status_put(status, n->rt_status, key, "failed", "no image for this node's architecture",
                       NULL, 0, NULL);
            continue;
        }
        struct rt_desired *d = &p->desired[p->nd];
        struct rt_want *w = &p->want[p->nd++];
        /* Strings borrowed from the fsm stay valid for the pass only if nothing is applied
         * meanwhile: keep them in the spec copy instead. */
        d->app = json_string_value(json_object_get(app, "name"));
        d->ms = json_string_value(json_object_get(ms, "name"));
        d->replica = pl.replica;
        d->ms_spec = ms;
        d->image = image;
        replica_key(w->key, sizeof w->key, d->app, d->ms, d->replica);
        if (rt->root && rt_config_dir_name(d, w->dirname, sizeof w->dirname) == 0 &&
            asprintf(&w->dir, "%s/%s", rt->root, w->dirname) < 0)
            w->dir = NULL;
        w->text = rt_config_text(ms);
        if (w->dir && w->text) {
            json_t *known = json_object_get(rt->configs, w->dirname);
            if (!known) {
                char *text = config_read(w->dir);
                json_object_set_new(rt->configs, w->dirname, json_string(text ? text : ""));
                free(text);
                known = json_object_get(rt->configs, w->dirname);
            }
            d->config_dir = w->dir;
            d->config_stale =
                strcmp(json_string_value(known) ? json_string_value(known) : "", w->text) != 0;
        }
        rt_hash(ms, image, d->config_dir, d->hash);
    }
}

/* The kept container of d (a running one first), or NULL. */
static const struct rt_observed *observed_for(const struct rt_pass *p, const struct rt_desired *d)
{
    const struct rt_observed *best = NULL;
    for (size_t o = 0; o < p->no; o++) {
        const struct rt_observed *x = &p->observed[o];
        if (x->replica == d->replica && strcmp(x->app, d->app) == 0 && strcmp(x->ms, d->ms) == 0 &&
            strcmp(x->hash, d->hash) == 0 && (!best || (x->running && !best->running)))
            best = x;
    }
    return best;
}

static void on_list(struct engine_req *req, const struct engine_reply *reply, void *data)
{
    struct rt_pass *p = data;
    struct node *n = p->n;
    struct rt_state *rt = n->rt;
    (void)req;
    if (reply->status < 0 || !json_is_array(reply->json) || !n->cluster) {
        pass_free(p);
        return;
    }
    p->list = json_incref(reply->json);
    size_t count = json_array_size(p->list);
    p->observed = calloc(count + 1, sizeof *p->observed);
    json_t *status = json_object();
    json_t *listed = json_object();
    if (!p->observed || !status || !listed) {
        json_decref(status);
        json_decref(listed);
        pass_free(p);
        return;
    }
    size_t i;
    json_t *c;
    json_array_foreach(p->list, i, c)
    {
        if (rt_observed_from_json(c, &p->observed[p->no]) == 0) {
            struct rt_observed *o = &p->observed[p->no++];
            const char *state = json_string_value(json_object_get(c, "State"));
            inspect_maybe(rt, o->id, state);
            json_object_set_new(listed, o->id, json_true());
        }
    }
    /* Forget the details of containers gone. */
    const char *id;
    json_t *v, *tmp;
    json_object_foreach_safe(rt->info, tmp, id, v)
    {
        if (!json_object_get(listed, id) && !json_is_true(json_object_get(v, "busy")))
            json_object_del(rt->info, id);
    }
    json_decref(listed);

    for (size_t k = 0; k < PULLS_MAX; k++)
        rt->pulls[k].used = false;
    desired_build(p, status);
    uint64_t now = mesh_now_ms();
    json_t *wanted = json_object();
    for (size_t k = 0; k < p->nd; k++) {
        struct rt_desired *d = &p->desired[k];
        struct rt_want *w = &p->want[k];
        json_object_set_new(wanted, w->key, json_true());
        d->held = desired_held(p, d, w, status, now);
        if (d->held)
            continue;
        const struct rt_observed *o = observed_for(p, d);
        if (!o) {
            status_put(status, n->rt_status, w->key, "pending", "", NULL, 0, NULL);
            continue;
        }
        json_t *info = json_object_get(rt->info, o->id);
        const char *since =
            json_string_value(json_object_get(info, o->running ? "started" : "finished"));
        if (since && strncmp(since, "0001-", 5) == 0)
            since = NULL; /* the engine's zero time: not known */
        const char *msg = NULL;
        json_array_foreach(p->list, i, c)
        {
            if (strcmp(json_string_value(json_object_get(c, "Id")), o->id) == 0)
                msg = json_string_value(json_object_get(c, "Status"));
        }
        status_put(status, n->rt_status, w->key, o->running ? "running" : "stopped", msg, since,
                   json_integer_value(json_object_get(info, "restarts")), o->id);
    }
    /* What is no longer placed here: its backoff and its pull go. */
    json_object_foreach_safe(rt->holds, tmp, id, v)
    {
        if (!json_object_get(wanted, id))
            json_object_del(rt->holds, id);
    }
    json_decref(wanted);
    for (size_t k = 0; k < PULLS_MAX; k++)
        if (rt->pulls[k].image && !rt->pulls[k].used && !rt->pulls[k].active &&
            !rt->pulls[k].checking)
            pull_release(&rt->pulls[k]);
    json_decref(n->rt_status);
    n->rt_status = status;
    config_sweep(p);
    p->nactions = rt_plan(p->desired, p->nd, p->observed, p->no, p->actions, ACTIONS_MAX);
    pass_step(p);
}

static void on_reconcile_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    if (n->meta.engine == NODEMETA_ENGINE_DOWN) {
        status_engine_down(n); /* placements may change while the engine is away */
        return;
    }
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

static void rt_state_free(struct rt_state *rt)
{
    if (!rt)
        return;
    for (size_t i = 0; i < PULLS_MAX; i++)
        free(rt->pulls[i].image);
    json_decref(rt->configs);
    json_decref(rt->info);
    json_decref(rt->holds);
    free(rt->root);
    free(rt);
}

int node_runtime_start(struct node *n, struct mesh_err *err)
{
    n->rt_status = json_object();
    const char *url = engine_url(n);
    if (!url) {
        log_info(&n->log, "no container engine (give --engine): this node runs no containers");
        return 0;
    }
    struct rt_state *rt = calloc(1, sizeof *rt);
    if (!rt || !(rt->configs = json_object()) || !(rt->info = json_object()) ||
        !(rt->holds = json_object())) {
        rt_state_free(rt);
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    }
    rt->n = n;
    rt->sweep = true;
    rt->root = config_root(n);
    n->rt = rt;
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
    struct engine *e = n->engine;
    n->engine = NULL; /* a pass that continues from a callback below stops */
    engine_free(e);   /* fails what is pending; the pass frees itself */
    if (n->rt_pass)
        pass_free(n->rt_pass);
    rt_state_free(n->rt);
    n->rt = NULL;
    json_decref(n->rt_status);
    n->rt_status = NULL;
}

json_t *node_runtime_status(struct node *n, const char *app, const char *ms, uint32_t replica)
{
    char key[256];
    replica_key(key, sizeof key, app, ms, replica);
    return n->rt_status ? json_object_get(n->rt_status, key) : NULL;
}
