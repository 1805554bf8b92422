#include "reconciler.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "holds.h"
#include "observed.h"
#include "pulls.h"
#include "reconcile.h"

#define KEY_MAX 256

/* What the pass knows of one desired replica beside struct rt_desired. */
struct rt_want {
    char app[64], ms[64]; /* d->app and d->ms point here */
    char key[KEY_MAX];    /* app/ms/replica */
    char dirname[160];    /* APP.MS.REPLICA, "" when no config dir */
    char *dir;            /* root/dirname (malloc'd) or NULL */
    char *text;           /* the config file's text (malloc'd) */
    bool blocked;         /* its config could not be written: nothing else for it this pass */
};

/* One pass: the engine's list, what should run here, and the actions in progress. */
struct rt_pass {
    struct rt_reconciler *r;
    struct rt_call call; /* the list, then each action in turn */
    json_t *list;        /* the engine's answer (kept) */
    json_t *keep;        /* what the placements' specs and images borrow from */
    struct rt_desired *desired;
    struct rt_want *want;
    size_t nd;
    struct rt_observed *observed;
    size_t no;
    struct rt_action actions[RT_ACTIONS_MAX];
    size_t nactions, next;
};

struct rt_reconciler {
    const struct rt_io *io;
    char *node;
    char *root;
    json_t *configs; /* config dir name -> the text its file holds ("" when none) */
    struct rt_obs *obs;
    struct rt_pulls *pulls;
    struct rt_holds *holds;
    struct rt_pass *pass; /* in progress */
    bool kick;            /* the desired state changed during the pass: another one */
    bool sweep;           /* look for config dirs of replicas gone */
    bool closing;
    enum rt_engine_state engine;
    char engine_error[MESH_ERRMSG_LEN];
};

static void note(struct rt_reconciler *r, enum rt_note level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(struct rt_reconciler *r, enum rt_note level, const char *fmt, ...)
{
    char msg[MESH_ERRMSG_LEN + KEY_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->io->note(r->io->ud, level, msg);
}

static void replica_key(char *buf, size_t len, const char *app, const char *ms, uint32_t replica)
{
    snprintf(buf, len, "%s/%s/%u", app, ms, (unsigned)replica);
}

int rt_reconciler_new(const char *node, const char *root, const struct rt_io *io,
                      struct rt_reconciler **ret)
{
    struct rt_reconciler *r = calloc(1, sizeof *r);
    if (!r || !(r->node = strdup(node)) || (root && !(r->root = strdup(root))) ||
        !(r->configs = json_object()) || rt_obs_new(io, &r->obs) < 0 ||
        rt_pulls_new(io, &r->pulls) < 0 || rt_holds_new(&r->holds) < 0) {
        rt_reconciler_free(r);
        return MESH_ENOMEM;
    }
    r->io = io;
    r->sweep = true;
    *ret = r;
    return 0;
}

static void pass_free(struct rt_pass *p);

void rt_reconciler_close(struct rt_reconciler *r)
{
    if (r)
        r->closing = true;
}

void rt_reconciler_free(struct rt_reconciler *r)
{
    if (!r)
        return;
    r->closing = true;
    if (r->pass)
        pass_free(r->pass);
    rt_obs_free(r->obs);
    rt_pulls_free(r->pulls);
    rt_holds_free(r->holds);
    json_decref(r->configs);
    free(r->node);
    free(r->root);
    free(r);
}

const json_t *rt_reconciler_status(const struct rt_reconciler *r)
{
    return rt_obs_map(r->obs);
}

struct rt_pulls *rt_reconciler_pulls(struct rt_reconciler *r)
{
    return r->pulls;
}

struct rt_holds *rt_reconciler_holds(struct rt_reconciler *r)
{
    return r->holds;
}

struct rt_obs *rt_reconciler_obs(struct rt_reconciler *r)
{
    return r->obs;
}

bool rt_reconciler_busy(const struct rt_reconciler *r)
{
    return r->pass != NULL;
}

enum rt_engine_state rt_reconciler_engine_state(const struct rt_reconciler *r)
{
    return r->engine;
}

/* ---- the engine away --------------------------------------------------------------------- */

/* While the engine is unreachable: every replica placed here is failed, and nothing else is
 * reported (containers cannot be seen). */
static void status_engine_down(struct rt_reconciler *r)
{
    struct rt_placed *pl = NULL;
    size_t np = 0;
    json_t *keep = NULL, *st;
    if (!r->io->desired_known(r->io->ud) || r->io->placements(r->io->ud, &pl, &np, &keep) < 0)
        return;
    if (!(st = json_object()))
        goto out;
    char msg[MESH_ERRMSG_LEN + 32];
    const char *err = r->engine_error;
    if (strncmp(err, "engine unavailable", 18) == 0)
        snprintf(msg, sizeof msg, "%s", err);
    else
        snprintf(msg, sizeof msg, "engine unavailable%s%s", err[0] ? ": " : "", err);
    for (size_t i = 0; i < np; i++) {
        char key[KEY_MAX];
        replica_key(key, sizeof key, pl[i].app, pl[i].ms, pl[i].replica);
        rt_obs_put(r->obs, st, key, RT_STATE_FAILED, msg, NULL, 0, NULL);
    }
    rt_obs_replace(r->obs, st);
out:
    free(pl);
    json_decref(keep);
}

void rt_reconciler_engine(struct rt_reconciler *r, bool up, const char *err)
{
    enum rt_engine_state st = up ? RT_ENGINE_UP : RT_ENGINE_DOWN;
    snprintf(r->engine_error, sizeof r->engine_error, "%s", up || !err ? "" : err);
    if (st == r->engine)
        return;
    r->engine = st;
    if (st == RT_ENGINE_DOWN)
        status_engine_down(r);
}

/* ---- config files ------------------------------------------------------------------------ */

/* Removes the config dirs (and temp files) of replicas neither desired nor with a container. */
static void config_sweep(struct rt_pass *p)
{
    struct rt_reconciler *r = p->r;
    if (!r->root || !r->sweep)
        return;
    r->sweep = false;
    json_t *keep = json_object();
    if (!keep)
        return;
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
    r->io->config_sweep(r->io->ud, keep);
    const char *name;
    json_t *v, *tmp;
    json_object_foreach_safe(r->configs, tmp, name, v)
    {
        if (!json_object_get(keep, name))
            json_object_del(r->configs, name); /* read again if it comes back */
    }
    json_decref(keep);
}

/* ---- the pass ---------------------------------------------------------------------------- */

static void pass_free(struct rt_pass *p)
{
    struct rt_reconciler *r = p->r;
    json_decref(p->list);
    json_decref(p->keep);
    for (size_t i = 0; p->want && i < p->nd; i++) {
        free(p->want[i].dir);
        free(p->want[i].text);
    }
    free(p->want);
    free(p->desired);
    free(p->observed);
    free(p);
    r->pass = NULL;
    if (r->kick && !r->closing) {
        r->kick = false;
        r->io->kick(r->io->ud);
    }
}

void rt_reconciler_kick(struct rt_reconciler *r)
{
    if (r->closing)
        return;
    if (r->pass)
        r->kick = true; /* once this pass is done */
    else
        r->io->kick(r->io->ud);
}

static void pass_step(struct rt_pass *p);

/* A create or start failed for a reason other than a missing image: no new try before a
 * backoff (the replica shows failed meanwhile). */
static void hold(struct rt_reconciler *r, const struct rt_want *w, const struct rt_desired *d,
                 const char *msg)
{
    rt_holds_fail(r->holds, w->key, d->hash, msg, r->io->now_ms(r->io->ud));
    rt_obs_set(r->obs, w->key, RT_STATE_FAILED, msg);
}

static void on_action_done(struct rt_call *call, const struct rt_result *res)
{
    struct rt_pass *p = call->data;
    struct rt_reconciler *r = p->r;
    struct rt_action *a = &p->actions[p->next - 1];
    struct rt_desired *d = a->desired < p->nd ? &p->desired[a->desired] : NULL;
    struct rt_want *w = d ? &p->want[a->desired] : NULL;
    const char *msg = res->msg ? res->msg : "";
    if (res->status == MESH_ECLOSED) {
        pass_free(p); /* the engine client is closing: nothing more this pass */
        return;
    }
    if (a->op == RT_CREATE) {
        if (res->status == MESH_ENOTFOUND) {
            /* No such image here: pull it (a loaded or imported one is used as it is). */
            struct rt_pull *pl = rt_pulls_want(r->pulls, d->image);
            if (pl && rt_pull_active(pl))
                rt_obs_set(r->obs, w->key, RT_STATE_PULLING, rt_pull_message(pl));
            else if (pl)
                rt_obs_set(r->obs, w->key, RT_STATE_FAILED, rt_pull_message(pl));
            else
                rt_obs_set(r->obs, w->key, RT_STATE_PENDING, "waiting for a free image pull slot");
        } else if (res->status < 0) {
            note(r, RT_NOTE_WARN, "runtime: %s", msg);
            hold(r, w, d, msg);
        } else if (res->id && !r->closing) {
            /* Created: start it as the next step. */
            rt_holds_clear(r->holds, w->key);
            a->op = RT_START;
            a->id = NULL;
            if (r->io->start(r->io->ud, res->id, &p->call) == 0) {
                rt_obs_set(r->obs, w->key, RT_STATE_STARTING, "");
                return;
            }
        }
    } else if (res->status < 0) {
        note(r, RT_NOTE_WARN, "runtime: %s", msg);
        if (a->op == RT_START && w)
            hold(r, w, d, msg);
    } else if (a->op == RT_SIGNAL) {
        note(r, RT_NOTE_INFO, "runtime: %s: config changed, signalled its container (SIG%s)",
             w->key, RT_CONFIG_SIGNAL);
    }
    pass_step(p);
}

static void pass_step(struct rt_pass *p)
{
    struct rt_reconciler *r = p->r;
    const struct rt_io *io = r->io;
    if (r->closing)
        goto done;
    while (p->next < p->nactions) {
        struct rt_action *a = &p->actions[p->next++];
        struct rt_desired *d = a->desired < p->nd ? &p->desired[a->desired] : NULL;
        struct rt_want *w = d ? &p->want[a->desired] : NULL;
        int rc = 0;
        if (w && w->blocked)
            continue;
        p->call = (struct rt_call){.done = on_action_done, .data = p};
        if (a->op == RT_REMOVE) {
            r->sweep = true;
            rc = io->remove(io->ud, a->id, &p->call);
        } else if (a->op == RT_CONFIG) {
            struct mesh_err err = {0};
            if (!w->dir) {
                continue;
            } else if (io->config_write(io->ud, w->dirname, w->dir, w->text, &err) < 0) {
                w->blocked = true;
                note(r, RT_NOTE_WARN, "runtime: %s: %s", w->key, err.msg);
                rt_obs_set(r->obs, w->key, RT_STATE_FAILED, err.msg);
            } else {
                json_object_set_new(r->configs, w->dirname, json_string(w->text));
                note(r, RT_NOTE_DEBUG, "runtime: %s: config written", w->key);
            }
            continue;
        } else if (a->op == RT_SIGNAL) {
            rc = io->kill(io->ud, a->id, RT_CONFIG_SIGNAL, &p->call);
        } else if (a->op == RT_START) {
            rc = io->start(io->ud, a->id, &p->call);
            if (rc == 0 && w)
                rt_obs_set(r->obs, w->key, RT_STATE_STARTING, "");
        } else {
            char name[256];
            rt_container_name(r->node, d, name, sizeof name);
            json_t *body = rt_create_body(r->node, d);
            rc = body ? io->create(io->ud, name, body, &p->call) : MESH_ENOMEM;
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
    struct rt_reconciler *r = p->r;
    struct rt_pull *pl = rt_pulls_find(r->pulls, d->image);
    if (pl) {
        rt_pull_wait(pl, now);
        rt_obs_put(r->obs, status, w->key, rt_pull_active(pl) ? RT_STATE_PULLING : RT_STATE_FAILED,
                   rt_pull_message(pl), NULL, 0, NULL);
        return true;
    }
    const char *msg;
    if (rt_holds_check(r->holds, w->key, d->hash, now, &msg)) {
        rt_obs_put(r->obs, status, w->key, RT_STATE_FAILED, msg, NULL, 0, NULL);
        return true;
    }
    return false;
}

/* The replicas placed on this node, from what the caller resolved of the desired state. */
static void desired_build(struct rt_pass *p, json_t *status)
{
    struct rt_reconciler *r = p->r;
    struct rt_placed *pl = NULL;
    size_t np = 0;
    if (r->io->placements(r->io->ud, &pl, &np, &p->keep) < 0)
        return;
    p->desired = calloc(np + 1, sizeof *p->desired);
    p->want = calloc(np + 1, sizeof *p->want);
    if (!p->desired || !p->want)
        goto out;
    for (size_t i = 0; i < np; i++) {
        const struct rt_placed *e = &pl[i];
        if (!e->ms_spec)
            continue; /* not a valid spec, or a microservice the spec no longer has */
        if (!e->image) {
            char key[KEY_MAX];
            replica_key(key, sizeof key, e->app, e->ms, e->replica);
            rt_obs_put(r->obs, status, key, RT_STATE_FAILED,
                       "no image for this node's architecture", NULL, 0, NULL);
            continue;
        }
        struct rt_want *w = &p->want[p->nd];
        if (strlen(e->app) >= sizeof w->app || strlen(e->ms) >= sizeof w->ms)
            continue; /* longer than a DNS label: not one the spec lets through */
        struct rt_desired *d = &p->desired[p->nd++];
        snprintf(w->app, sizeof w->app, "%s", e->app);
        snprintf(w->ms, sizeof w->ms, "%s", e->ms);
        d->app = w->app;
        d->ms = w->ms;
        d->replica = e->replica;
        d->ms_spec = e->ms_spec;
        d->image = e->image;
        replica_key(w->key, sizeof w->key, d->app, d->ms, d->replica);
        if (r->root && rt_config_dir_name(d, w->dirname, sizeof w->dirname) == 0 &&
            asprintf(&w->dir, "%s/%s", r->root, w->dirname) < 0)
            w->dir = NULL;
        w->text = rt_config_text(e->ms_spec);
        if (w->dir && w->text) {
            json_t *known = json_object_get(r->configs, w->dirname);
            if (!known) {
                char *text = r->io->config_read(r->io->ud, w->dir);
                json_object_set_new(r->configs, w->dirname, json_string(text ? text : ""));
                free(text);
                known = json_object_get(r->configs, w->dirname);
            }
            d->config_dir = w->dir;
            d->config_stale =
                strcmp(json_string_value(known) ? json_string_value(known) : "", w->text) != 0;
        }
        rt_hash(e->ms_spec, e->image, d->config_dir, d->hash);
    }
out:
    free(pl);
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

static void on_list(struct rt_call *call, const struct rt_result *res)
{
    struct rt_pass *p = call->data;
    struct rt_reconciler *r = p->r;
    if (res->status < 0 || !json_is_array(res->json) || r->closing ||
        !r->io->desired_known(r->io->ud)) {
        pass_free(p);
        return;
    }
    p->list = json_incref((json_t *)res->json);
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
            rt_obs_listed(r->obs, o->id, json_string_value(json_object_get(c, "State")));
            json_object_set_new(listed, o->id, json_true());
        }
    }
    rt_obs_forget_unlisted(r->obs, listed); /* the details of containers gone */
    json_decref(listed);

    rt_pulls_unmark(r->pulls);
    desired_build(p, status);
    uint64_t now = r->io->now_ms(r->io->ud);
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
            rt_obs_put(r->obs, status, w->key, RT_STATE_PENDING, "", NULL, 0, NULL);
            continue;
        }
        const char *since;
        int64_t restarts;
        rt_obs_container(r->obs, o->id, o->running, &since, &restarts);
        const char *msg = NULL;
        json_array_foreach(p->list, i, c)
        {
            if (strcmp(json_string_value(json_object_get(c, "Id")), o->id) == 0)
                msg = json_string_value(json_object_get(c, "Status"));
        }
        rt_obs_put(r->obs, status, w->key, o->running ? RT_STATE_RUNNING : RT_STATE_STOPPED, msg,
                   since, restarts, o->id);
    }
    /* What is no longer placed here: its backoff and its pull go. */
    rt_holds_prune(r->holds, wanted);
    json_decref(wanted);
    rt_pulls_sweep(r->pulls);
    rt_obs_replace(r->obs, status);
    config_sweep(p);
    p->nactions = rt_plan(p->desired, p->nd, p->observed, p->no, p->actions, RT_ACTIONS_MAX);
    pass_step(p);
}

void rt_reconciler_tick(struct rt_reconciler *r)
{
    if (r->closing)
        return;
    if (r->engine == RT_ENGINE_DOWN) {
        status_engine_down(r); /* placements may change while the engine is away */
        return;
    }
    if (r->pass || r->engine != RT_ENGINE_UP || !r->io->desired_known(r->io->ud))
        return;
    struct rt_pass *p = calloc(1, sizeof *p);
    if (!p)
        return;
    p->r = r;
    p->call = (struct rt_call){.done = on_list, .data = p};
    r->pass = p;
    if (r->io->list(r->io->ud, &p->call) < 0) {
        r->pass = NULL;
        free(p);
    }
}
