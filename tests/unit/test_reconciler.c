/* The reconciler (runtime/reconciler.h) on a fake engine in virtual time: passes, image pulls
 * shared by replicas, holds and their expiry, what is observed of a replica that restarts and
 * dies, the engine going away, kicks, and closing with calls in flight. Nothing here sleeps:
 * the fake engine answers when the test runs its loop (fake_run), and time moves when the test
 * says so. Also the CALL_RT_STATUS and STREAM_LOGS codecs (status_wire.h, logs_wire.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "holds.h"
#include "logs_wire.h"
#include "observed.h"
#include "pulls.h"
#include "reconcile.h"
#include "reconciler.h"
#include "status_wire.h"

/* ---- the fake engine --------------------------------------------------------------------- */

enum op { OP_LIST, OP_INSPECT, OP_CREATE, OP_START, OP_REMOVE, OP_KILL, OP_PULL, OP_IMAGE };

struct pending {
    enum op op;
    struct rt_call *call;
    char arg[256];
    json_t *body;
};

struct container {
    char id[65];
    json_t *labels;
    bool running;
    bool exists;
    int restarts;
    char started[32], finished[32];
    char status[64];
};

#define PENDING_MAX    64
#define CONTAINERS_MAX 16

struct fake {
    struct rt_io io;
    uint64_t now;
    struct pending q[PENDING_MAX];
    size_t nq;
    struct container c[CONTAINERS_MAX];
    size_t nc;
    json_t *images;   /* image -> true: present locally */
    bool hold_pulls;  /* pulls stay in flight until pull_release */
    bool pull_fails;  /* pulls answer "not found" */
    int create_fails; /* the next N creates fail with create_msg */
    int start_fails;  /* the next N starts fail with start_msg */
    const char *create_msg, *start_msg;
    unsigned calls[OP_IMAGE + 1];
    unsigned kicks;
    bool known;
    struct rt_placed placed[8];
    size_t nplaced;
    json_t *configs; /* dir -> text written */
    char last_note[512];
};

static void wall(uint64_t ms, char buf[32])
{
    unsigned s = (unsigned)(ms / 1000);
    snprintf(buf, 32, "2026-01-01T%02u:%02u:%02uZ", (s / 3600) % 24, (s / 60) % 60, s % 60);
}

static int enqueue(struct fake *f, enum op op, const char *arg, const json_t *body,
                   struct rt_call *c)
{
    assert_true(f->nq < PENDING_MAX);
    struct pending *p = &f->q[f->nq++];
    *p = (struct pending){.op = op, .call = c, .body = body ? json_deep_copy(body) : NULL};
    snprintf(p->arg, sizeof p->arg, "%s", arg ? arg : "");
    f->calls[op]++;
    return 0;
}

static int f_list(void *ud, struct rt_call *c)
{
    return enqueue(ud, OP_LIST, NULL, NULL, c);
}
static int f_inspect(void *ud, const char *id, struct rt_call *c)
{
    return enqueue(ud, OP_INSPECT, id, NULL, c);
}
static int f_create(void *ud, const char *name, const json_t *body, struct rt_call *c)
{
    return enqueue(ud, OP_CREATE, name, body, c);
}
static int f_start(void *ud, const char *id, struct rt_call *c)
{
    return enqueue(ud, OP_START, id, NULL, c);
}
static int f_remove(void *ud, const char *id, struct rt_call *c)
{
    return enqueue(ud, OP_REMOVE, id, NULL, c);
}
static int f_kill(void *ud, const char *id, const char *signal, struct rt_call *c)
{
    (void)signal;
    return enqueue(ud, OP_KILL, id, NULL, c);
}
static int f_pull(void *ud, const char *repo, const char *tag, struct rt_call *c)
{
    char ref[256];
    snprintf(ref, sizeof ref, "%s:%s", repo, tag);
    return enqueue(ud, OP_PULL, ref, NULL, c);
}
static int f_image(void *ud, const char *image, struct rt_call *c)
{
    return enqueue(ud, OP_IMAGE, image, NULL, c);
}
static bool f_known(void *ud)
{
    return ((struct fake *)ud)->known;
}
static int f_placements(void *ud, struct rt_placed **ret, size_t *ret_n, json_t **ret_keep)
{
    struct fake *f = ud;
    *ret = malloc((f->nplaced + 1) * sizeof **ret);
    assert_non_null(*ret);
    memcpy(*ret, f->placed, f->nplaced * sizeof **ret);
    *ret_n = f->nplaced;
    *ret_keep = NULL;
    return 0;
}
static char *f_config_read(void *ud, const char *dir)
{
    const char *t = json_string_value(json_object_get(((struct fake *)ud)->configs, dir));
    return strdup(t ? t : "");
}
static int f_config_write(void *ud, const char *dirname, const char *dir, const char *text,
                          struct mesh_err *err)
{
    (void)dirname;
    (void)err;
    json_object_set_new(((struct fake *)ud)->configs, dir, json_string(text));
    return 0;
}
static void f_config_sweep(void *ud, const json_t *keep)
{
    (void)ud;
    (void)keep;
}
static void f_kick(void *ud)
{
    ((struct fake *)ud)->kicks++;
}
static uint64_t f_now(void *ud)
{
    return ((struct fake *)ud)->now;
}
static void f_wallclock(void *ud, char buf[32])
{
    wall(((struct fake *)ud)->now, buf);
}
static void f_note(void *ud, enum rt_note level, const char *msg)
{
    (void)level;
    snprintf(((struct fake *)ud)->last_note, sizeof((struct fake *)ud)->last_note, "%s", msg);
}

static struct container *find_container(struct fake *f, const char *id)
{
    for (size_t i = 0; i < f->nc; i++)
        if (f->c[i].exists && strcmp(f->c[i].id, id) == 0)
            return &f->c[i];
    return NULL;
}

static void answer(struct fake *f, struct pending *p)
{
    struct rt_result res = {.status = 0, .msg = ""};
    json_t *json = NULL;
    char id[65];
    struct container *c = NULL;
    switch (p->op) {
    case OP_LIST:
        json = json_array();
        for (size_t i = 0; i < f->nc; i++) {
            if (!f->c[i].exists)
                continue;
            json_array_append_new(json, json_pack("{s:s, s:O, s:s, s:s}", "Id", f->c[i].id,
                                                  "Labels", f->c[i].labels, "State",
                                                  f->c[i].running ? "running" : "exited", "Status",
                                                  f->c[i].status));
        }
        break;
    case OP_INSPECT:
        if (!(c = find_container(f, p->arg))) {
            res = (struct rt_result){.status = MESH_ENOTFOUND, .msg = "no such container"};
            break;
        }
        json = json_pack("{s:{s:s, s:s, s:b}, s:i}", "State", "StartedAt", c->started, "FinishedAt",
                         c->finished, "Running", c->running, "RestartCount", c->restarts);
        break;
    case OP_CREATE: {
        const char *image = json_string_value(json_object_get(p->body, "Image"));
        if (!json_object_get(f->images, image)) {
            res = (struct rt_result){.status = MESH_ENOTFOUND, .msg = "no such image"};
        } else if (f->create_fails > 0) {
            f->create_fails--;
            res = (struct rt_result){.status = MESH_EIO, .msg = f->create_msg};
        } else {
            assert_true(f->nc < CONTAINERS_MAX);
            c = &f->c[f->nc++];
            *c = (struct container){.exists = true};
            snprintf(c->id, sizeof c->id, "%02zx0123456789abcdef", f->nc);
            c->labels = json_incref(json_object_get(p->body, "Labels"));
            snprintf(c->started, sizeof c->started, "0001-01-01T00:00:00Z");
            snprintf(c->finished, sizeof c->finished, "0001-01-01T00:00:00Z");
            snprintf(c->status, sizeof c->status, "Created");
            snprintf(id, sizeof id, "%s", c->id);
            res.id = id;
        }
        break;
    }
    case OP_START:
        if (!(c = find_container(f, p->arg))) {
            res = (struct rt_result){.status = MESH_ENOTFOUND, .msg = "no such container"};
        } else if (f->start_fails > 0) {
            f->start_fails--;
            res = (struct rt_result){.status = MESH_EIO, .msg = f->start_msg};
        } else {
            c->running = true;
            wall(f->now, c->started);
            snprintf(c->status, sizeof c->status, "Up 1 second");
        }
        break;
    case OP_REMOVE:
        if ((c = find_container(f, p->arg))) {
            c->exists = false;
            json_decref(c->labels);
            c->labels = NULL;
        }
        break;
    case OP_KILL:
        break;
    case OP_PULL:
        if (f->pull_fails) {
            res = (struct rt_result){.status = MESH_ENOTFOUND, .msg = "manifest unknown"};
        } else {
            json_t *line = json_pack("{s:s, s:s}", "status", "Downloading", "progress", "[==> ]");
            p->call->progress(p->call, line);
            json_decref(line);
            json_object_set_new(f->images, p->arg, json_true());
        }
        break;
    case OP_IMAGE:
        if (!json_object_get(f->images, p->arg))
            res = (struct rt_result){.status = MESH_ENOTFOUND, .msg = "no such image"};
        break;
    }
    res.json = json;
    p->call->done(p->call, &res);
    json_decref(json);
}

/* Runs the loop until nothing is pending (pulls stay when held). */
static void fake_run(struct fake *f)
{
    for (;;) {
        size_t i;
        for (i = 0; i < f->nq; i++)
            if (!(f->hold_pulls && f->q[i].op == OP_PULL))
                break;
        if (i == f->nq)
            return;
        struct pending p = f->q[i];
        memmove(&f->q[i], &f->q[i + 1], (f->nq - i - 1) * sizeof f->q[0]);
        f->nq--;
        answer(f, &p);
        json_decref(p.body);
    }
}

/* Fails everything pending with MESH_ECLOSED, as engine_free does. */
static void fake_close(struct fake *f)
{
    while (f->nq > 0) {
        struct pending p = f->q[0];
        memmove(&f->q[0], &f->q[1], (f->nq - 1) * sizeof f->q[0]);
        f->nq--;
        struct rt_result res = {.status = MESH_ECLOSED, .msg = "closed"};
        p.call->done(p.call, &res);
        json_decref(p.body);
    }
}

static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof *f);
    f->io = (struct rt_io){
        .ud = f,
        .list = f_list,
        .inspect = f_inspect,
        .create = f_create,
        .start = f_start,
        .remove = f_remove,
        .kill = f_kill,
        .image_pull = f_pull,
        .image_inspect = f_image,
        .desired_known = f_known,
        .placements = f_placements,
        .config_read = f_config_read,
        .config_write = f_config_write,
        .config_sweep = f_config_sweep,
        .kick = f_kick,
        .now_ms = f_now,
        .wallclock = f_wallclock,
        .note = f_note,
    };
    f->now = 1000000;
    f->known = true;
    f->images = json_object();
    f->configs = json_object();
    f->create_msg = "create: boom";
    f->start_msg = "start: boom";
}

static void fake_fini(struct fake *f)
{
    assert_int_equal(f->nq, 0);
    for (size_t i = 0; i < f->nc; i++)
        json_decref(f->c[i].labels);
    json_decref(f->images);
    json_decref(f->configs);
}

static json_t *spec_of(const char *env)
{
    return json_pack("{s:s, s:s, s:{s:s}, s:s}", "name", "reader", "image", "localhost/bbox:latest",
                     "env", "MODE", env, "restart", "always");
}

static void place(struct fake *f, const json_t *spec, uint32_t replica, const char *image)
{
    f->placed[f->nplaced++] = (struct rt_placed){
        .app = "sensors", .ms = "reader", .replica = replica, .ms_spec = spec, .image = image};
}

/* One tick and everything it leads to. */
static void pass(struct fake *f, struct rt_reconciler *r)
{
    rt_reconciler_tick(r);
    fake_run(f);
    assert_false(rt_reconciler_busy(r));
}

static const char *field(struct rt_reconciler *r, const char *key, const char *name)
{
    return json_string_value(json_object_get(json_object_get(rt_reconciler_status(r), key), name));
}

static json_int_t restarts_of(struct rt_reconciler *r, const char *key)
{
    return json_integer_value(
        json_object_get(json_object_get(rt_reconciler_status(r), key), "restarts"));
}

static struct rt_reconciler *up(struct fake *f)
{
    struct rt_reconciler *r;
    assert_int_equal(rt_reconciler_new("n1", NULL, &f->io, &r), 0);
    rt_reconciler_engine(r, true, NULL);
    return r;
}

static void done(struct fake *f, struct rt_reconciler *r)
{
    rt_reconciler_close(r);
    fake_close(f);
    rt_reconciler_free(r);
    fake_fini(f);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void creates_starts_and_observes(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    json_object_set_new(f.images, "localhost/bbox:latest", json_true());
    json_t *spec = spec_of("fast");
    place(&f, spec, 0, "localhost/bbox:latest");
    struct rt_reconciler *r = up(&f);
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 1);
    assert_int_equal(f.calls[OP_START], 1);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_STARTING);
    f.now += 1000;
    pass(&f, r);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_RUNNING);
    assert_string_equal(field(r, "sensors/reader/0", "container"), "010123456789"); /* 12 */
    assert_string_equal(field(r, "sensors/reader/0", "message"), "Up 1 second");
    assert_int_equal(restarts_of(r, "sensors/reader/0"), 0);
    char at[32];
    wall(f.now, at); /* the inspect answers after the status is made: since now, meanwhile */
    assert_string_equal(field(r, "sensors/reader/0", "since"), at);
    f.now += 1000;
    pass(&f, r);
    wall(f.now - 2000, at); /* then the start time the inspect gave */
    assert_string_equal(field(r, "sensors/reader/0", "since"), at);
    assert_int_equal(f.calls[OP_CREATE], 1); /* nothing more to do */
    done(&f, r);
    json_decref(spec);
}

static void pull_shared_by_two_replicas(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    f.hold_pulls = true;
    json_t *spec = spec_of("fast");
    place(&f, spec, 0, "localhost/bbox:latest");
    place(&f, spec, 1, "localhost/bbox:latest");
    struct rt_reconciler *r = up(&f);
    pass(&f, r);
    /* Both creates found no image; one pull for both. */
    assert_int_equal(f.calls[OP_CREATE], 2);
    assert_int_equal(f.calls[OP_PULL], 1);
    assert_int_equal(rt_pulls_count(rt_reconciler_pulls(r)), 1);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_PULLING);
    assert_string_equal(field(r, "sensors/reader/1", "state"), RT_STATE_PULLING);
    /* While it runs, the replicas wait on it: no create, no second pull. */
    f.now += 1000;
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 2);
    assert_int_equal(f.calls[OP_PULL], 1);
    assert_string_equal(field(r, "sensors/reader/1", "message"), "pulling localhost/bbox:latest");
    /* Done: the next pass creates both. */
    f.hold_pulls = false;
    fake_run(&f);
    assert_int_equal(rt_pulls_count(rt_reconciler_pulls(r)), 0);
    assert_string_equal(f.last_note, "runtime: pulled image localhost/bbox:latest");
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 4);
    assert_int_equal(f.calls[OP_START], 2);
    pass(&f, r);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_RUNNING);
    assert_string_equal(field(r, "sensors/reader/1", "state"), RT_STATE_RUNNING);
    done(&f, r);
    json_decref(spec);
}

static void failed_pull_retries_with_backoff(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    f.pull_fails = true;
    json_t *spec = spec_of("fast");
    place(&f, spec, 0, "localhost/bbox:latest");
    place(&f, spec, 1, "localhost/bbox:latest");
    struct rt_reconciler *r = up(&f);
    pass(&f, r);
    assert_int_equal(f.calls[OP_PULL], 1);
    pass(&f, r); /* status after the failure */
    const char *msg = field(r, "sensors/reader/1", "message");
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_FAILED);
    assert_non_null(strstr(msg, "image not found: localhost/bbox:latest (manifest unknown)"));
    assert_non_null(strstr(msg, "next pull in 5s"));
    /* Before the retry is due, only local checks (at most one a second). */
    unsigned checks = f.calls[OP_IMAGE];
    f.now += 1000;
    pass(&f, r);
    f.now += 1000;
    pass(&f, r);
    assert_int_equal(f.calls[OP_PULL], 1);
    assert_int_equal(f.calls[OP_CREATE], 2);
    assert_true(f.calls[OP_IMAGE] >= checks + 1 && f.calls[OP_IMAGE] <= checks + 2);
    /* Due after 5 s: one pull again, for both replicas; then 10 s. */
    f.now += 3000;
    pass(&f, r);
    assert_int_equal(f.calls[OP_PULL], 2);
    pass(&f, r);
    assert_non_null(strstr(field(r, "sensors/reader/0", "message"), "next pull in 10s"));
    /* The image is loaded meanwhile: the check sees it and the replicas are created. */
    json_object_set_new(f.images, "localhost/bbox:latest", json_true());
    f.now += 1000;
    pass(&f, r);
    assert_int_equal(rt_pulls_count(rt_reconciler_pulls(r)), 0);
    pass(&f, r);
    assert_int_equal(f.calls[OP_START], 2);
    assert_int_equal(f.calls[OP_PULL], 2);
    done(&f, r);
    json_decref(spec);
}

static void hold_expires_and_backs_off(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    json_object_set_new(f.images, "localhost/bbox:latest", json_true());
    f.create_fails = 2;
    json_t *spec = spec_of("fast");
    place(&f, spec, 0, "localhost/bbox:latest");
    struct rt_reconciler *r = up(&f);
    struct rt_holds *h = rt_reconciler_holds(r);
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 1);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_FAILED);
    assert_string_equal(field(r, "sensors/reader/0", "message"), "create: boom");
    assert_int_equal(rt_holds_failures(h, "sensors/reader/0"), 1);
    /* Held for 2 s: no try, still failed with the engine's message. */
    f.now += 1999;
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 1);
    assert_string_equal(field(r, "sensors/reader/0", "message"), "create: boom");
    /* Expired: tried again, fails again, now held for 4 s. */
    f.now += 1;
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 2);
    assert_int_equal(rt_holds_failures(h, "sensors/reader/0"), 2);
    f.now += 3999;
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 2);
    f.now += 1;
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 3); /* succeeds: the hold goes */
    assert_int_equal(rt_holds_failures(h, "sensors/reader/0"), 0);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_STARTING);
    done(&f, r);
    json_decref(spec);
}

static void hold_goes_with_a_spec_change_or_the_placement(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    json_object_set_new(f.images, "localhost/bbox:latest", json_true());
    f.create_fails = 10;
    json_t *spec = spec_of("fast"), *changed = spec_of("slow");
    place(&f, spec, 0, "localhost/bbox:latest");
    struct rt_reconciler *r = up(&f);
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 1);
    /* A new spec (another hash) is tried at once. */
    f.placed[0].ms_spec = changed;
    f.now += 10;
    pass(&f, r);
    assert_int_equal(f.calls[OP_CREATE], 2);
    /* No longer placed here: the hold goes, and so does the status. */
    f.nplaced = 0;
    pass(&f, r);
    assert_int_equal(rt_holds_failures(rt_reconciler_holds(r), "sensors/reader/0"), 0);
    assert_null(json_object_get(rt_reconciler_status(r), "sensors/reader/0"));
    done(&f, r);
    json_decref(spec);
    json_decref(changed);
}

static void replica_dies_restarts_since_error(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    json_object_set_new(f.images, "localhost/bbox:latest", json_true());
    json_t *spec = spec_of("fast");
    place(&f, spec, 0, "localhost/bbox:latest");
    struct rt_reconciler *r = up(&f);
    pass(&f, r);
    f.now += 1000;
    pass(&f, r);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_RUNNING);
    /* The engine restarts it (its restart policy): the list still says running, so the details
     * are asked again only after RT_INFO_REFRESH_MS. */
    struct container *c = &f.c[0];
    c->restarts = 1;
    wall(f.now + 500, c->started);
    f.now += 1000;
    pass(&f, r);
    assert_int_equal(restarts_of(r, "sensors/reader/0"), 0);
    f.now += RT_INFO_REFRESH_MS;
    pass(&f, r); /* the inspect goes out, answers after the status is made */
    pass(&f, r);
    assert_int_equal(restarts_of(r, "sensors/reader/0"), 1);
    assert_string_equal(field(r, "sensors/reader/0", "since"), c->started);
    /* It dies and cannot be started: a new state is inspected at once; stopped with the
     * engine's status and its finish time, then failed with the start's error. */
    c->running = false;
    c->restarts = 3;
    wall(f.now, c->finished);
    snprintf(c->status, sizeof c->status, "Exited (137) 1 second ago");
    f.start_fails = 1;
    f.start_msg = "start: OCI runtime error";
    f.now += 1000;
    rt_reconciler_tick(r);
    fake_run(&f);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_FAILED);
    assert_string_equal(field(r, "sensors/reader/0", "message"), "start: OCI runtime error");
    assert_int_equal(f.calls[OP_START], 2);
    /* While held it is not started again; what is seen of it shows. */
    f.now += 1000;
    pass(&f, r);
    assert_int_equal(f.calls[OP_START], 2);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_FAILED);
    /* The hold expires: the container shows stopped until the start, with its details. */
    f.now += 1000;
    rt_reconciler_tick(r);
    assert_int_equal(f.nq, 1); /* the list */
    fake_run(&f);
    assert_int_equal(f.calls[OP_START], 3);
    f.now += 1000;
    pass(&f, r);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_RUNNING);
    assert_int_equal(restarts_of(r, "sensors/reader/0"), 3);
    done(&f, r);
    json_decref(spec);
}

static void engine_down_fails_every_replica(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    json_object_set_new(f.images, "localhost/bbox:latest", json_true());
    json_t *spec = spec_of("fast");
    place(&f, spec, 0, "localhost/bbox:latest");
    place(&f, NULL, 1, NULL); /* not a valid spec: still placed here */
    struct rt_reconciler *r = up(&f);
    pass(&f, r);
    rt_reconciler_engine(r, false, "engine unavailable at /x.sock: connection refused");
    assert_int_equal(rt_reconciler_engine_state(r), RT_ENGINE_DOWN);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_FAILED);
    assert_string_equal(field(r, "sensors/reader/0", "message"),
                        "engine unavailable at /x.sock: connection refused");
    assert_string_equal(field(r, "sensors/reader/1", "state"), RT_STATE_FAILED);
    unsigned lists = f.calls[OP_LIST];
    rt_reconciler_engine(r, false, "timed out");
    f.now += 1000;
    pass(&f, r); /* no pass while down; the status is made again */
    assert_int_equal(f.calls[OP_LIST], lists);
    assert_string_equal(field(r, "sensors/reader/0", "message"), "engine unavailable: timed out");
    rt_reconciler_engine(r, true, NULL);
    pass(&f, r);
    assert_int_equal(f.calls[OP_LIST], lists + 1);
    assert_string_equal(field(r, "sensors/reader/0", "state"), RT_STATE_RUNNING);
    assert_null(json_object_get(rt_reconciler_status(r), "sensors/reader/1"));
    done(&f, r);
    json_decref(spec);
}

static void no_image_for_arch_and_unknown_state(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    json_t *spec = spec_of("fast");
    place(&f, spec, 0, NULL);
    struct rt_reconciler *r = up(&f);
    f.known = false;
    rt_reconciler_tick(r);
    assert_int_equal(f.calls[OP_LIST], 0); /* nothing before the desired state is known */
    f.known = true;
    pass(&f, r);
    assert_string_equal(field(r, "sensors/reader/0", "message"),
                        "no image for this node's architecture");
    assert_int_equal(f.calls[OP_CREATE], 0);
    done(&f, r);
    json_decref(spec);
}

static void kick_during_a_pass_and_close(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    json_object_set_new(f.images, "localhost/bbox:latest", json_true());
    json_t *spec = spec_of("fast");
    place(&f, spec, 0, "localhost/bbox:latest");
    struct rt_reconciler *r = up(&f);
    rt_reconciler_kick(r);
    assert_int_equal(f.kicks, 1); /* no pass: one now */
    rt_reconciler_tick(r);
    assert_true(rt_reconciler_busy(r));
    rt_reconciler_kick(r);
    rt_reconciler_kick(r);
    assert_int_equal(f.kicks, 1); /* once this pass is done */
    fake_run(&f);
    assert_int_equal(f.kicks, 2);
    /* Closing with a pass in flight: the engine's close fails it, and no call follows. */
    f.now += 1000;
    rt_reconciler_tick(r);
    assert_true(rt_reconciler_busy(r));
    rt_reconciler_kick(r);
    rt_reconciler_close(r);
    unsigned before = f.calls[OP_INSPECT] + f.calls[OP_CREATE] + f.calls[OP_START];
    fake_close(&f);
    assert_false(rt_reconciler_busy(r));
    assert_int_equal(f.calls[OP_INSPECT] + f.calls[OP_CREATE] + f.calls[OP_START], before);
    assert_int_equal(f.kicks, 2);
    rt_reconciler_tick(r);
    assert_int_equal(f.nq, 0);
    rt_reconciler_free(r);
    fake_fini(&f);
    json_decref(spec);
}

static void config_written_then_signalled(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    json_object_set_new(f.images, "localhost/bbox:latest", json_true());
    json_t *spec = spec_of("fast");
    json_object_set_new(spec, "config", json_pack("{s:i}", "threshold", 1));
    place(&f, spec, 0, "localhost/bbox:latest");
    struct rt_reconciler *r;
    assert_int_equal(rt_reconciler_new("n1", "/data/containers", &f.io, &r), 0);
    rt_reconciler_engine(r, true, NULL);
    pass(&f, r);
    assert_string_equal(
        json_string_value(json_object_get(f.configs, "/data/containers/sensors.reader.0")),
        "{\"threshold\":1}\n");
    pass(&f, r);
    assert_int_equal(f.calls[OP_KILL], 0);
    json_object_set_new(json_object_get(spec, "config"), "threshold", json_integer(2));
    pass(&f, r);
    assert_int_equal(f.calls[OP_KILL], 1); /* a config change alone: a signal, no recreate */
    assert_int_equal(f.calls[OP_CREATE], 1);
    done(&f, r);
    json_decref(spec);
}

/* ---- codecs ------------------------------------------------------------------------------ */

static void status_wire_round_trip(void **state)
{
    (void)state;
    json_t *map = json_pack(
        "{s:{s:s, s:s, s:s, s:I, s:s}, s:{s:s, s:s, s:s, s:I, s:s}}", "sensors/reader/0", "state",
        "running", "message", "Up 3 minutes", "since", "2026-01-01T00:00:00.123Z", "restarts",
        (json_int_t)4, "container", "0123456789ab", "web/front-1/12", "state", "failed", "message",
        "caf\xc3\xa9", "since", "2026-01-01T00:00:00Z", "restarts", (json_int_t)0, "container", "");
    uint8_t *buf;
    size_t len;
    assert_int_equal(rt_status_reply_encode(map, &buf, &len), 0);
    json_t *back;
    assert_int_equal(rt_status_reply_decode(buf, len, &back), 0);
    assert_true(json_equal(map, back));
    json_decref(back);
    /* Truncated anywhere: refused. */
    for (size_t i = 0; i < len; i++)
        assert_int_equal(rt_status_reply_decode(buf, i, &back), MESH_EMALFORMED);
    free(buf);
    /* Out of the form: refused by the encoder too. */
    json_t *bad = json_pack("{s:{s:s, s:s, s:s, s:I, s:s}}", "sensors/reader/x", "state", "running",
                            "message", "", "since", "", "restarts", (json_int_t)0, "container", "");
    assert_int_equal(rt_status_reply_encode(bad, &buf, &len), MESH_EINVAL);
    json_decref(bad);
    /* A message too long is cut at a character boundary. */
    char longmsg[RT_STATUS_MESSAGE_MAX + 8];
    memset(longmsg, 'a', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    memcpy(longmsg + RT_STATUS_MESSAGE_MAX - 1, "\xc3\xa9", 2); /* straddles the bound */
    json_object_set_new(json_object_get(map, "web/front-1/12"), "message", json_string(longmsg));
    assert_int_equal(rt_status_reply_encode(map, &buf, &len), 0);
    assert_int_equal(rt_status_reply_decode(buf, len, &back), 0);
    assert_int_equal(strlen(json_string_value(
                         json_object_get(json_object_get(back, "web/front-1/12"), "message"))),
                     RT_STATUS_MESSAGE_MAX - 1);
    json_decref(back);
    free(buf);
    json_decref(map);
    /* Requests. */
    uint8_t req[RT_STATUS_REQUEST_MAX];
    int rl = rt_status_request_encode(req, sizeof req);
    assert_true(rl > 0);
    assert_int_equal(rt_status_request_decode(req, (size_t)rl), 0);
    assert_int_equal(rt_status_request_decode(NULL, 0), MESH_EMALFORMED);
    static const uint8_t v2[] = {0x91, 0x02};
    assert_int_equal(rt_status_request_decode(v2, sizeof v2), MESH_EUNSUPPORTED);
}

static void status_wire_refuses(void **state)
{
    (void)state;
    json_t *back = NULL;
    /* [1, [[key, state, ...], [same key ...]]] */
    static const uint8_t dup[] = {0x92, 0x01, 0x92, 0x96, 0xa5, 'a',  '/',  'b',  '/',  '0',  0xa7,
                                  'r',  'u',  'n',  'n',  'i',  'n',  'g',  0xa0, 0xa0, 0x00, 0xa0,
                                  0x96, 0xa5, 'a',  '/',  'b',  '/',  '0',  0xa7, 'r',  'u',  'n',
                                  'n',  'i',  'n',  'g',  0xa0, 0xa0, 0x00, 0xa0};
    assert_int_equal(rt_status_reply_decode(dup, sizeof dup, &back), MESH_EMALFORMED);
    assert_int_equal(rt_status_reply_decode(dup, 23, &back), MESH_EMALFORMED);
    /* The first entry alone, with the count fixed: fine. */
    uint8_t one[22];
    memcpy(one, dup, sizeof one);
    one[2] = 0x91;
    assert_int_equal(rt_status_reply_decode(one, sizeof one, &back), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(back, "a/b/0"), "state")),
                        "running");
    json_decref(back);
    back = NULL;
    /* An unknown state, a replica that is not a number, invalid UTF-8: refused. */
    uint8_t x[22];
    memcpy(x, one, sizeof x);
    x[11] = 'R';
    assert_int_equal(rt_status_reply_decode(x, sizeof x, &back), MESH_EMALFORMED);
    memcpy(x, one, sizeof x);
    x[9] = 'x';
    assert_int_equal(rt_status_reply_decode(x, sizeof x, &back), MESH_EMALFORMED);
    static const uint8_t badutf[] = {0x92, 0x01, 0x91, 0x96, 0xa5, 'a', '/', 'b',
                                     '/',  '0',  0xa6, 'f',  'a',  'i', 'l', 'e',
                                     'd',  0xa1, 0xff, 0xa0, 0x00, 0xa0};
    assert_int_equal(rt_status_reply_decode(badutf, sizeof badutf, &back), MESH_EMALFORMED);
    static const uint8_t v9[] = {0x92, 0x09, 0x90};
    assert_int_equal(rt_status_reply_decode(v9, sizeof v9, &back), MESH_EUNSUPPORTED);
    /* A count larger than the bytes: refused before anything is built. */
    static const uint8_t huge[] = {0x92, 0x01, 0xdd, 0x7f, 0xff, 0xff, 0xff};
    assert_int_equal(rt_status_reply_decode(huge, sizeof huge, &back), MESH_EMALFORMED);
    assert_null(back);
}

static void logs_wire(void **state)
{
    (void)state;
    struct rt_logs_open o = {.app = "sensors",
                             .ms = "reader",
                             .replica = 3,
                             .follow = true,
                             .tail = -1},
                        back;
    uint8_t buf[RT_LOGS_OPEN_MAX];
    int len = rt_logs_open_encode(&o, buf, sizeof buf);
    assert_true(len > 0);
    assert_int_equal(rt_logs_open_decode(buf, (size_t)len, &back), 0);
    assert_string_equal(back.app, "sensors");
    assert_string_equal(back.ms, "reader");
    assert_int_equal(back.replica, 3);
    assert_true(back.follow);
    assert_int_equal(back.tail, -1);
    o.tail = 20;
    o.follow = false;
    len = rt_logs_open_encode(&o, buf, sizeof buf);
    assert_int_equal(rt_logs_open_decode(buf, (size_t)len, &back), 0);
    assert_int_equal(back.tail, 20);
    assert_false(back.follow);
    for (int i = 0; i < len; i++)
        assert_int_equal(rt_logs_open_decode(buf, (size_t)i, &back), MESH_EMALFORMED);
    /* The longest names fit the open frame. */
    memset(o.app, 'a', RT_LOGS_NAME_MAX);
    memset(o.ms, 'b', RT_LOGS_NAME_MAX);
    o.replica = UINT32_MAX;
    o.tail = RT_LOGS_TAIL_MAX;
    len = rt_logs_open_encode(&o, buf, sizeof buf);
    assert_true(len > 0 && len <= RT_LOGS_OPEN_MAX);
    assert_int_equal(rt_logs_open_encode(&o, buf, (size_t)len - 1), MESH_ETOOBIG);
    o.tail = RT_LOGS_TAIL_MAX + 1;
    assert_int_equal(rt_logs_open_encode(&o, buf, sizeof buf), MESH_EINVAL);
    snprintf(o.app, sizeof o.app, "Caps");
    o.tail = 0;
    assert_int_equal(rt_logs_open_encode(&o, buf, sizeof buf), MESH_EINVAL);
    /* The old JSON form is not an open payload. */
    static const char json[] = "[\"sensors\",\"reader\",0,false,-1]";
    assert_int_equal(rt_logs_open_decode((const uint8_t *)json, strlen(json), &back),
                     MESH_EMALFORMED);
    /* Errors. */
    char text[64], msg[64];
    int code;
    size_t tl = rt_logs_error_encode(404, "no such thing", text, sizeof text);
    assert_string_equal(text, "404 no such thing");
    rt_logs_error_decode((const uint8_t *)text, tl, &code, msg, sizeof msg);
    assert_int_equal(code, 404);
    assert_string_equal(msg, "no such thing");
    rt_logs_error_decode((const uint8_t *)"200 ok\x1b[2J", 10, &code, msg, sizeof msg);
    assert_int_equal(code, 502);
    assert_string_equal(msg, "200 ok?[2J");
    rt_logs_error_decode((const uint8_t *)"503 abcdef", 10, &code, msg, 4);
    assert_int_equal(code, 503);
    assert_string_equal(msg, "abc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(creates_starts_and_observes),
        cmocka_unit_test(pull_shared_by_two_replicas),
        cmocka_unit_test(failed_pull_retries_with_backoff),
        cmocka_unit_test(hold_expires_and_backs_off),
        cmocka_unit_test(hold_goes_with_a_spec_change_or_the_placement),
        cmocka_unit_test(replica_dies_restarts_since_error),
        cmocka_unit_test(engine_down_fails_every_replica),
        cmocka_unit_test(no_image_for_arch_and_unknown_state),
        cmocka_unit_test(kick_during_a_pass_and_close),
        cmocka_unit_test(config_written_then_signalled),
        cmocka_unit_test(status_wire_round_trip),
        cmocka_unit_test(status_wire_refuses),
        cmocka_unit_test(logs_wire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
