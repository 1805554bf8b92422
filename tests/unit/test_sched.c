/* The leader's scheduler (consensus/scheduler.h), table-driven: each case is nodes, application
 * specs (validated to canonical form by spec.c) and placements already recorded in a real fsm,
 * a time, and the exact changes expected. For every case the runner also checks:
 *   - determinism: the same input, and the input in reverse order, give the same bytes;
 *   - convergence and stability: once the changes are applied to the fsm (through
 *     sched_change_cmd, as the leader does), a second run at the same time changes nothing.
 * Changes are written as "app/ms/replica from->to: reason", "-" for no node, "pending" for
 * a pending PLACE and "x" for an UNPLACE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "fsm.h"
#include "scheduler.h"
#include "spec.h"

#define GI (1024ull * 1024 * 1024)
#define T0 1000000 /* "now" of most cases, ms */

struct tnode {
    const char *name;
    enum sched_node_state state;
    uint64_t since; /* ms before now */
    bool cordoned, drain, noengine;
    const char *arch;   /* NULL: amd64 */
    const char *labels; /* "k=v,k=v" */
    uint32_t cpus;      /* 0: 4 */
    uint64_t mem;       /* 0: 8Gi */
    bool unknown_cap;   /* cpus and memory 0: not known yet */
};

struct tplc {
    const char *app, *ms;
    uint32_t replica;
    const char *node, *reason;
};

struct tcase {
    const char *name;
    const struct tnode *nodes; /* ends with name NULL */
    const char *const *apps;   /* JSON, ends with NULL */
    const struct tplc *plcs;   /* ends with app NULL */
    const char *const *want;   /* ends with NULL */
    uint64_t unknown_for;      /* unknown_since_ms = now - unknown_for */
};

/* ---- building the input ---- */

struct world {
    struct fsm *fsm;
    json_t *specs[16];
    struct sched_app apps[16];
    size_t napps;
    struct sched_node nodes[16];
    struct sched_label labels[16][4];
    char label_buf[16][4][2][32];
    size_t nnodes;
    struct fsm_placement plcs[256];
    size_t nplcs;
    uint64_t now;
};

static json_t *canonical(const char *text)
{
    json_error_t je;
    json_t *in = json_loads(text, 0, &je);
    if (!in)
        fail_msg("bad JSON in test: %s: %s", je.text, text);
    json_t *out = NULL;
    struct spec_errors errs;
    if (spec_validate(in, &out, &errs) != 0) {
        char buf[512];
        spec_errors_format(&errs, buf, sizeof buf);
        fail_msg("bad spec in test: %s", buf);
    }
    json_decref(in);
    return out;
}

static void apply_cmd(struct fsm *f, struct raft_buffer b, int want_outcome)
{
    struct fsm_result r;
    assert_int_equal(fsm_apply_cmd(f, b.base, b.len, &r), 0);
    raft_free(b.base);
    if (want_outcome)
        assert_int_equal(r.outcome, want_outcome);
}

static void world_init(struct world *w, const struct tcase *tc)
{
    memset(w, 0, sizeof *w);
    w->now = T0;
    assert_int_equal(fsm_new(&w->fsm), 0);
    for (size_t i = 0; tc->apps && tc->apps[i]; i++) {
        json_t *spec = canonical(tc->apps[i]);
        char *text = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS);
        struct raft_buffer b;
        const char *name = json_string_value(json_object_get(spec, "name"));
        assert_int_equal(fsm_cmd_put_app(name, text, strlen(text), &b), 0);
        apply_cmd(w->fsm, b, FSM_OUT_CREATED);
        free(text);
        json_decref(spec);
    }
    for (size_t i = 0; tc->plcs && tc->plcs[i].app; i++) {
        const struct tplc *p = &tc->plcs[i];
        struct fsm_app a;
        bool found = false;
        for (size_t k = 0; k < fsm_app_count(w->fsm); k++) {
            assert_int_equal(fsm_app_at(w->fsm, k, &a), 0);
            if (strcmp(a.name, p->app) == 0) {
                found = true;
                break;
            }
        }
        assert_true(found);
        struct raft_buffer b;
        assert_int_equal(fsm_cmd_place(p->app, a.mod_rev, p->ms, p->replica, p->node,
                                       p->reason ? p->reason : "scheduled", &b),
                         0);
        apply_cmd(w->fsm, b, FSM_OUT_CREATED);
    }
    for (size_t i = 0; tc->nodes && tc->nodes[i].name; i++) {
        const struct tnode *t = &tc->nodes[i];
        struct sched_node *n = &w->nodes[w->nnodes];
        n->name = t->name;
        n->state = t->state;
        n->since_ms = T0 - t->since;
        n->cordoned = t->cordoned || t->drain;
        n->drain = t->drain;
        n->engine_ok = !t->noengine;
        n->engine_down_since_ms = T0 - t->since;
        n->arch = t->arch ? t->arch : "amd64";
        n->cpus = t->cpus ? t->cpus : 4;
        n->memory_bytes = t->mem ? t->mem : 8 * GI;
        if (t->unknown_cap)
            n->cpus = 0, n->memory_bytes = 0;
        n->labels = w->labels[w->nnodes];
        const char *l = t->labels;
        while (l && *l) {
            size_t k = n->nlabels++;
            const char *eq = strchr(l, '='), *end = strchr(l, ',');
            if (!end)
                end = l + strlen(l);
            snprintf(w->label_buf[w->nnodes][k][0], 32, "%.*s", (int)(eq - l), l);
            snprintf(w->label_buf[w->nnodes][k][1], 32, "%.*s", (int)(end - eq - 1), eq + 1);
            w->labels[w->nnodes][k].key = w->label_buf[w->nnodes][k][0];
            w->labels[w->nnodes][k].value = w->label_buf[w->nnodes][k][1];
            l = *end ? end + 1 : end;
        }
        w->nnodes++;
    }
}

/* Refreshes apps and placements from the fsm (borrowed pointers into it). */
static void world_input(struct world *w, struct sched_input *in, uint64_t unknown_for)
{
    for (size_t i = 0; i < w->napps; i++)
        json_decref(w->specs[i]);
    w->napps = fsm_app_count(w->fsm);
    for (size_t i = 0; i < w->napps; i++) {
        struct fsm_app a;
        assert_int_equal(fsm_app_at(w->fsm, i, &a), 0);
        w->specs[i] = json_loadb((const char *)a.spec, a.spec_len, 0, NULL);
        assert_non_null(w->specs[i]);
        w->apps[i] = (struct sched_app){.name = a.name, .mod_rev = a.mod_rev, .spec = w->specs[i]};
    }
    w->nplcs = fsm_placement_count(w->fsm);
    for (size_t i = 0; i < w->nplcs; i++)
        assert_int_equal(fsm_placement_at(w->fsm, i, &w->plcs[i]), 0);
    *in = (struct sched_input){.apps = w->apps,
                               .napps = w->napps,
                               .placements = w->plcs,
                               .nplacements = w->nplcs,
                               .nodes = w->nodes,
                               .nnodes = w->nnodes,
                               .now_ms = w->now,
                               .unknown_since_ms = w->now - unknown_for};
}

static void world_free(struct world *w)
{
    for (size_t i = 0; i < w->napps; i++)
        json_decref(w->specs[i]);
    fsm_free(w->fsm);
}

static void fmt_change(const struct sched_change *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s/%u %s->%s: %s", c->app, c->ms, c->replica, c->from[0] ? c->from : "-",
             c->op == SCHED_UNPLACE ? "x" : (c->to[0] ? c->to : "pending"), c->reason);
}

#define MAXCH 64

static size_t run(const struct sched_input *in, struct sched_change *ch)
{
    size_t n = 0;
    struct sched_stats st;
    assert_int_equal(sched_run(in, ch, MAXCH, &n, &st), 0);
    assert_int_equal(st.changes, n);
    return n;
}

/* Applies the changes to the fsm as the leader would. */
static void commit(struct world *w, const struct sched_change *ch, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct raft_buffer b;
        assert_int_equal(sched_change_cmd(&ch[i], &b), 0);
        struct fsm_result r;
        assert_int_equal(fsm_apply_cmd(w->fsm, b.base, b.len, &r), 0);
        raft_free(b.base);
        assert_true(r.outcome == FSM_OUT_CREATED || r.outcome == FSM_OUT_UPDATED ||
                    r.outcome == FSM_OUT_DELETED);
    }
}

static void run_case(const struct tcase *tc)
{
    struct world w;
    struct sched_input in;
    static struct sched_change ch[MAXCH], ch2[MAXCH];
    char got[640];
    world_init(&w, tc);
    world_input(&w, &in, tc->unknown_for);

    size_t n = run(&in, ch), nwant = 0;
    while (tc->want && tc->want[nwant])
        nwant++;
    for (size_t i = 0; i < n || i < nwant; i++) {
        if (i < n)
            fmt_change(&ch[i], got, sizeof got);
        if (i >= n || i >= nwant || strcmp(got, tc->want[i]) != 0)
            fail_msg("case '%s', change %zu:\n  want %s\n  got  %s", tc->name, i,
                     i < nwant ? tc->want[i] : "(none)", i < n ? got : "(none)");
    }

    /* Determinism: again, and with every list reversed. */
    assert_int_equal(run(&in, ch2), n);
    assert_memory_equal(ch, ch2, n * sizeof *ch);
    struct sched_app rapps[16];
    struct sched_node rnodes[16];
    static struct fsm_placement rplcs[256];
    for (size_t i = 0; i < in.napps; i++)
        rapps[i] = in.apps[in.napps - 1 - i];
    for (size_t i = 0; i < in.nnodes; i++)
        rnodes[i] = in.nodes[in.nnodes - 1 - i];
    for (size_t i = 0; i < in.nplacements; i++)
        rplcs[i] = in.placements[in.nplacements - 1 - i];
    struct sched_input rin = in;
    rin.apps = rapps;
    rin.nodes = rnodes;
    rin.placements = rplcs;
    assert_int_equal(run(&rin, ch2), n);
    assert_memory_equal(ch, ch2, n * sizeof *ch);

    /* Applied, the state is a fixed point. */
    commit(&w, ch, n);
    world_input(&w, &in, tc->unknown_for);
    size_t again = run(&in, ch2);
    if (again) {
        fmt_change(&ch2[0], got, sizeof got);
        fail_msg("case '%s': %zu more changes after applying, first: %s", tc->name, again, got);
    }
    world_free(&w);
}

/* ---- the table ---- */

#define APP(ms)         "{\"kind\":\"Application\",\"name\":\"web\",\"microservices\":[" ms "]}"
#define MS(name, extra) "{\"name\":\"" name "\",\"image\":\"img\"" extra "}"
#define LIST(...)       ((const char *const[]){__VA_ARGS__, NULL})
#define NODES(...)      ((const struct tnode[]){__VA_ARGS__, {0}})
#define PLCS(...)       ((const struct tplc[]){__VA_ARGS__, {0}})
#define NONE            ((const char *const[]){NULL})
/* A microservice with an image for amd64 only. */
#define MS64(name, extra) "{\"name\":\"" name "\",\"images\":{\"amd64\":\"img\"}" extra "}"
/* Nodes, placements and cases by designated initializers. */
#define N(...)              \
    {                       \
        .name = __VA_ARGS__ \
    }
#define P(a, m, r, n)                              \
    {                                              \
        .app = a, .ms = m, .replica = r, .node = n \
    }
#define PR(a, m, r, n, why)                                       \
    {                                                             \
        .app = a, .ms = m, .replica = r, .node = n, .reason = why \
    }
#define C(nm, nd, ap, pl, wt)                                       \
    {                                                               \
        .name = nm, .nodes = nd, .apps = ap, .plcs = pl, .want = wt \
    }
#define CU(nm, nd, ap, pl, wt, u)                                                     \
    {                                                                                 \
        .name = nm, .nodes = nd, .apps = ap, .plcs = pl, .want = wt, .unknown_for = u \
    }

static const struct tcase cases[] = {
    C("spread over equal nodes, ties by name", NODES(N("n3"), N("n1"), N("n2")),
      LIST(APP(MS("front", ",\"replicas\":4"))), NULL,
      LIST("web/front/0 -->n1: scheduled", "web/front/1 -->n2: scheduled",
           "web/front/2 -->n3: scheduled", "web/front/3 -->n1: scheduled")),

    C("least allocated by the dominant resource",
      NODES(N("cpu-rich", .cpus = 8, .mem = 1 * GI), N("mem-rich", .cpus = 2, .mem = 8 * GI)),
      LIST(APP(MS("a", ",\"resources\":{\"cpus\":0.5,\"memory\":\"512Mi\"}"))), NULL,
      LIST("web/a/0 -->mem-rich: scheduled")),

    C("least allocated counts what is already there", NODES(N("n1"), N("n2")),
      LIST(APP(MS("big", ",\"resources\":{\"cpus\":2}") "," MS("small", ""))),
      PLCS(P("web", "big", 0, "n1")), LIST("web/small/0 -->n2: scheduled")),

    C("spread wins over allocation", NODES(N("n1", .cpus = 64), N("n2", .cpus = 2)),
      LIST(APP(MS("a", ",\"replicas\":2"))), NULL,
      LIST("web/a/0 -->n1: scheduled", "web/a/1 -->n2: scheduled")),

    C("every filter; one node passes",
      NODES(N("a-suspect", .state = SCHED_NODE_SUSPECT), N("b-dead", .state = SCHED_NODE_DEAD),
            N("c-cordoned", .cordoned = true, .labels = "zone=a"),
            N("d-noengine", .noengine = true, .labels = "zone=a"),
            N("e-arm", .arch = "arm64", .labels = "zone=a"), N("f-nolabel", .labels = "zone=b"),
            N("g-ok", .labels = "disk=ssd,zone=a")),
      LIST(APP(MS64("a", ",\"placement\":{\"labels\":{\"zone\":\"a\"}}"))), NULL,
      LIST("web/a/0 -->g-ok: scheduled")),

    C("every filter fails: pending with counts",
      NODES(N("a-suspect", .state = SCHED_NODE_SUSPECT), N("b-dead", .state = SCHED_NODE_DEAD),
            N("c-left", .state = SCHED_NODE_LEFT), N("d-cordoned", .cordoned = true),
            N("e-noengine", .noengine = true), N("f-arm", .arch = "arm64", .labels = "zone=a"),
            N("g-arm", .arch = "arm64", .labels = "zone=a"), N("h-nolabel", .labels = "zone=b"),
            N("i-nolabel"), N("j-small", .labels = "zone=a", .cpus = 1)),
      LIST(APP(MS64("a", ",\"placement\":{\"labels\":{\"zone\":\"a\"}},"
                         "\"resources\":{\"cpus\":2}"))),
      NULL,
      LIST("web/a/0 -->pending: no node matches: 1 node is suspect, 1 node is dead, 1 node has "
           "left, 1 node is cordoned, 1 node has no container engine, 2 nodes are arm64 without "
           "an image, 2 nodes lack label zone=a, 1 node lacks free CPU")),

    C("placement.arch and images per arch",
      NODES(N("n1"), N("n2", .arch = "arm"), N("n3", .arch = "arm64", .cordoned = true)),
      LIST(APP(MS("x", ",\"placement\":{\"arch\":\"arm64\"}") "," MS(
          "y",
          ",\"placement\":{\"arch\":\"arm\"}") ",{\"name\":\"z\",\"images\":{\"arm64\":\"i\"}}")),
      NULL,
      LIST("web/y/0 -->n2: scheduled",
           "web/x/0 -->pending: no node matches: 1 node is cordoned, 2 nodes are not arm64",
           "web/z/0 -->pending: no node matches: 1 node is cordoned, 1 node is amd64 without an "
           "image, 1 node is arm without an image")),

    C("no nodes at all", NULL, LIST(APP(MS("a", ""))), NULL,
      LIST("web/a/0 -->pending: no node matches: no nodes in the mesh")),

    C("resources run out: pending with the reason",
      NODES(N("n1", .cpus = 2, .mem = 1 * GI), N("n2", .cpus = 8, .mem = 4 * GI)),
      LIST(APP(MS("a", ",\"replicas\":3,\"resources\":{\"cpus\":1,\"memory\":\"512Mi\"}") "," MS(
          "b", ",\"resources\":{\"cpus\":7}"))),
      NULL,
      LIST("web/a/0 -->n2: scheduled", "web/a/1 -->n1: scheduled", "web/a/2 -->n2: scheduled",
           "web/b/0 -->pending: no node matches: 2 nodes lack free CPU")),

    C("memory exhausted", NODES(N("n1", .mem = 1 * GI)),
      LIST(APP(MS("a", ",\"replicas\":3,\"resources\":{\"memory\":\"512Mi\"}"))), NULL,
      LIST("web/a/0 -->n1: scheduled", "web/a/1 -->n1: scheduled",
           "web/a/2 -->pending: no node matches: 1 node lacks free memory")),

    C("a pending replica with the same reason is not rewritten", NODES(N("n1", .mem = 1 * GI)),
      LIST(APP(MS("a", ",\"resources\":{\"memory\":\"2Gi\"}"))),
      PLCS(PR("web", "a", 0, "", "no node matches: 1 node lacks free memory")), NONE),

    C("pending replica placed once a node fits", NODES(N("n1")), LIST(APP(MS("a", ""))),
      PLCS(PR("web", "a", 0, "", "no node matches: no nodes in the mesh")),
      LIST("web/a/0 -->n1: scheduled")),

    C("dead within the grace: nothing moves",
      NODES(N("n1"), N("n2", .state = SCHED_NODE_DEAD, .since = 9999)), LIST(APP(MS("a", ""))),
      PLCS(P("web", "a", 0, "n2")), NONE),

    C("dead past the grace: moved",
      NODES(N("n1"), N("n2", .state = SCHED_NODE_DEAD, .since = 10000)), LIST(APP(MS("a", ""))),
      PLCS(P("web", "a", 0, "n2")), LIST("web/a/0 n2->n1: moved from n2: dead")),

    C("dead past the grace, nowhere to go: pending",
      NODES(N("n2", .state = SCHED_NODE_DEAD, .since = 60000)), LIST(APP(MS("a", ""))),
      PLCS(P("web", "a", 0, "n2")), LIST("web/a/0 n2->pending: no node matches: 1 node is dead")),

    C("left: moved at once", NODES(N("n1"), N("n2", .state = SCHED_NODE_LEFT, .since = 1)),
      LIST(APP(MS("a", ""))), PLCS(P("web", "a", 0, "n2")),
      LIST("web/a/0 n2->n1: moved from n2: left")),

    C("suspect: kept", NODES(N("n1"), N("n2", .state = SCHED_NODE_SUSPECT, .since = 60000)),
      LIST(APP(MS("a", ""))), PLCS(P("web", "a", 0, "n2")), NONE),

    CU("unknown node, young leader: kept", NODES(N("n1")), LIST(APP(MS("a", ""))),
       PLCS(P("web", "a", 0, "gone")), NONE, 5000),

    CU("unknown node past the grace: moved", NODES(N("n1")), LIST(APP(MS("a", ""))),
       PLCS(P("web", "a", 0, "gone")), LIST("web/a/0 gone->n1: moved from gone: not in the mesh"),
       20000),

    C("engine down past the grace: moved",
      NODES(N("n1"), N("n2", .noengine = true, .since = 20000)), LIST(APP(MS("a", ""))),
      PLCS(P("web", "a", 0, "n2")),
      LIST("web/a/0 n2->n1: moved from n2: without a container engine")),

    C("engine down within the grace: kept", NODES(N("n1"), N("n2", .noengine = true, .since = 5)),
      LIST(APP(MS("a", ""))), PLCS(P("web", "a", 0, "n2")), NONE),

    C("engine down past the grace, no other engine: pending with the reason",
      NODES(N("n1", .noengine = true, .since = 20000), N("n2", .noengine = true, .since = 20000)),
      LIST(APP(MS("a", ""))), PLCS(P("web", "a", 0, "n2")),
      LIST("web/a/0 n2->pending: no node matches: 2 nodes have no container engine")),

    C("pinned, engine down past the grace: waits on its node",
      NODES(N("n1"), N("n2", .noengine = true, .since = 20000)),
      LIST(APP(MS("a", ",\"placement\":{\"node\":\"n2\"}"))), PLCS(P("web", "a", 0, "n2")),
      LIST("web/a/0 n2->n2: waiting for node n2: without a container engine")),

    C("pinned: placed on its node only", NODES(N("n1"), N("n2"), N("n3")),
      LIST(APP(MS("a", ",\"replicas\":2,\"placement\":{\"node\":\"n2\"}"))), NULL,
      LIST("web/a/0 -->n2: scheduled", "web/a/1 -->n2: scheduled")),

    C("pinned node dead: waits on it",
      NODES(N("n1"), N("n2", .state = SCHED_NODE_DEAD, .since = 60000)),
      LIST(APP(MS("a", ",\"placement\":{\"node\":\"n2\"}"))), PLCS(P("web", "a", 0, "n2")),
      LIST("web/a/0 n2->n2: waiting for node n2: dead")),

    C("pinned node back", NODES(N("n1"), N("n2")),
      LIST(APP(MS("a", ",\"placement\":{\"node\":\"n2\"}"))),
      PLCS(PR("web", "a", 0, "n2", "waiting for node n2: dead")),
      LIST("web/a/0 n2->n2: node is back")),

    C("pinned, new, node dead: pending",
      NODES(N("n1"), N("n2", .state = SCHED_NODE_DEAD, .since = 60000)),
      LIST(APP(MS("a", ",\"placement\":{\"node\":\"n2\"}"))), NULL,
      LIST("web/a/0 -->pending: waiting for node n2: it is dead")),

    C("pinned to a node not in the mesh", NODES(N("n1")),
      LIST(APP(MS("a", ",\"placement\":{\"node\":\"n9\"}"))), NULL,
      LIST("web/a/0 -->pending: waiting for node n9: not in the mesh")),

    C("pinned elsewhere now: moved to the pinned node", NODES(N("n1"), N("n2")),
      LIST(APP(MS("a", ",\"placement\":{\"node\":\"n2\"}"))), PLCS(P("web", "a", 0, "n1")),
      LIST("web/a/0 n1->n2: moved from n1: pinned to another node")),

    C("cordoned: kept, but no new replicas", NODES(N("n1", .cordoned = true), N("n2")),
      LIST(APP(MS("a", ",\"replicas\":2"))), PLCS(P("web", "a", 0, "n1")),
      LIST("web/a/1 -->n2: scheduled")),

    C("drained: everything moves off", NODES(N("n1", .drain = true), N("n2"), N("n3")),
      LIST(APP(MS("a", ",\"replicas\":2") "," MS("p", ",\"placement\":{\"node\":\"n1\"}"))),
      PLCS(P("web", "a", 0, "n1"), P("web", "a", 1, "n2"), P("web", "p", 0, "n1")),
      LIST("web/a/0 n1->n3: moved from n1: drained",
           "web/p/0 n1->pending: waiting for node n1: it is cordoned")),

    C("application deleted, microservice deleted, scaled down", NODES(N("n1"), N("n2")),
      LIST(APP(MS("a", "") "," MS("b", ",\"replicas\":2"))),
      PLCS(P("web", "a", 0, "n1"), P("web", "a", 1, "n1"), P("web", "a", 2, ""),
           P("web", "gone", 0, "n2"), P("web", "b", 0, "n1")),
      LIST("web/a/1 n1->x: scaled down to 1 replica", "web/a/2 -->x: scaled down to 1 replica",
           "web/gone/0 n2->x: microservice deleted", "web/b/1 -->n2: scheduled")),

    C("scale up spreads the new replicas", NODES(N("n1"), N("n2"), N("n3")),
      LIST(APP(MS("a", ",\"replicas\":3"))), PLCS(P("web", "a", 0, "n1")),
      LIST("web/a/1 -->n2: scheduled", "web/a/2 -->n3: scheduled")),

    C("stability: an unrelated spec change moves nothing", NODES(N("n1"), N("n2")),
      LIST(APP(
          MS("a", ",\"replicas\":2,\"env\":{\"NEW\":\"1\"},\"command\":[\"x\"]") "," MS("b", ""))),
      PLCS(P("web", "a", 0, "n1"), P("web", "a", 1, "n1"), P("web", "b", 0, "n1")), NONE),

    C("stability: labels still met", NODES(N("n1", .labels = "zone=a,disk=ssd"), N("n2")),
      LIST(APP(MS("a", ",\"placement\":{\"labels\":{\"disk\":\"ssd\"}}"))),
      PLCS(P("web", "a", 0, "n1")), NONE),

    C("a label no longer met: moved",
      NODES(N("n1", .labels = "zone=a"), N("n2", .labels = "zone=b")),
      LIST(APP(MS("a", ",\"placement\":{\"labels\":{\"zone\":\"b\"}}"))),
      PLCS(P("web", "a", 0, "n1")), LIST("web/a/0 n1->n2: moved from n1: it lacks label zone=b")),

    C("no image for the node's arch any more: moved", NODES(N("n1"), N("n2", .arch = "arm64")),
      LIST(APP("{\"name\":\"a\",\"images\":{\"arm64\":\"i\"}}")), PLCS(P("web", "a", 0, "n1")),
      LIST("web/a/0 n1->n2: moved from n1: it is amd64 without an image")),

    C("resources grown past the node: the later replica moves",
      NODES(N("n1", .mem = 1 * GI), N("n2")),
      LIST(APP(MS("a", ",\"replicas\":2,\"resources\":{\"memory\":\"768Mi\"}"))),
      PLCS(P("web", "a", 0, "n1"), P("web", "a", 1, "n1")),
      LIST("web/a/1 n1->n2: moved from n1: it no longer has room")),

    C("unknown capacity takes only what asks for nothing", NODES(N("n1", .unknown_cap = true)),
      LIST(APP(MS("a", "") "," MS("b", ",\"resources\":{\"cpus\":0.1}"))), NULL,
      LIST("web/a/0 -->n1: scheduled",
           "web/b/0 -->pending: no node matches: 1 node lacks free CPU")),
};

static void table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

/* ---- beyond the table ---- */

static void move_requests(void **state)
{
    (void)state;
    const struct tcase tc =
        C("move", NODES(N("n1"), N("n2"), N("arm", .arch = "arm64"), N("c", .cordoned = true)),
          LIST(APP(MS64("a", ",\"replicas\":2") "," MS("p", ",\"placement\":{\"node\":\"n1\"}"))),
          PLCS(P("web", "a", 0, "n1"), P("web", "a", 1, "n2"), P("web", "p", 0, "n1")), NULL);
    struct world w;
    struct sched_input in;
    struct sched_change c, untouched;
    struct mesh_err err;
    char got[640];
    world_init(&w, &tc);
    world_input(&w, &in, 0);
    memset(&c, 0x5a, sizeof c);
    untouched = c;

    assert_int_equal(sched_move(&in, "web", "a", 0, "arm", &c, &err), MESH_ESTATE);
    assert_string_equal(err.msg, "node arm is arm64 without an image");
    assert_int_equal(sched_move(&in, "web", "a", 0, "c", &c, &err), MESH_ESTATE);
    assert_string_equal(err.msg, "node c is cordoned");
    assert_int_equal(sched_move(&in, "web", "p", 0, "n2", &c, &err), MESH_ESTATE);
    assert_string_equal(err.msg, "web/p is pinned to n1");
    assert_int_equal(sched_move(&in, "web", "a", 1, "n2", &c, &err), MESH_EEXISTS);
    assert_int_equal(sched_move(&in, "web", "a", 5, "n2", &c, &err), MESH_ENOTFOUND);
    assert_int_equal(sched_move(&in, "web", "zz", 0, "n2", &c, &err), MESH_ENOTFOUND);
    assert_int_equal(sched_move(&in, "web", "a", 0, "n9", &c, NULL), MESH_ENOTFOUND);
    assert_memory_equal(&c, &untouched, sizeof c);

    /* Any replica: the lowest one not there yet. */
    assert_int_equal(sched_move(&in, "web", "a", SCHED_ANY_REPLICA, "n2", &c, &err), 0);
    fmt_change(&c, got, sizeof got);
    assert_string_equal(got, "web/a/0 n1->n2: moved from n1 by request");

    /* Committed, it sticks: the next run leaves both replicas on n2 (no rebalancing). */
    commit(&w, &c, 1);
    world_input(&w, &in, 0);
    static struct sched_change ch[MAXCH];
    assert_int_equal(run(&in, ch), 0);
    assert_int_equal(sched_move(&in, "web", "a", SCHED_ANY_REPLICA, "n2", &c, &err), MESH_EEXISTS);
    world_free(&w);
}

static void bounded_output_and_stats(void **state)
{
    (void)state;
    const struct tcase tc = C("cap", NODES(N("n1"), N("n2")), LIST(APP(MS("a", ",\"replicas\":5"))),
                              PLCS(P("web", "gone", 0, "n1")), NULL);
    struct world w;
    struct sched_input in;
    struct sched_change ch[2];
    struct sched_stats st;
    size_t n = 99;
    world_init(&w, &tc);
    world_input(&w, &in, 0);
    assert_int_equal(sched_run(&in, ch, 2, &n, &st), 0);
    assert_int_equal(n, 2);
    assert_int_equal(st.changes, 6);
    assert_int_equal(st.placed, 5);
    assert_int_equal(st.pending, 0);
    assert_int_equal(ch[0].op, SCHED_UNPLACE); /* removals first */
    assert_int_equal(sched_run(&in, NULL, 0, &n, &st), 0);
    assert_int_equal(n, 0);
    /* Runs converge in steps of at most cap. */
    for (int round = 0; round < 4; round++) {
        assert_int_equal(sched_run(&in, ch, 2, &n, &st), 0);
        commit(&w, ch, n);
        world_input(&w, &in, 0);
    }
    assert_int_equal(sched_run(&in, ch, 2, &n, &st), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fsm_placement_count(w.fsm), 5);
    world_free(&w);
}

static void bad_input(void **state)
{
    (void)state;
    struct sched_node nodes[2] = {{.name = "a"}, {.name = "a"}};
    struct sched_input in = {.nodes = nodes, .nnodes = 2};
    size_t n = 7;
    struct sched_change ch[1];
    assert_int_equal(sched_run(&in, ch, 1, &n, NULL), MESH_EINVAL); /* duplicate node */
    nodes[1].name = NULL;
    assert_int_equal(sched_run(&in, ch, 1, &n, NULL), MESH_EINVAL);
    in.nnodes = SCHED_NODES_MAX + 1;
    assert_int_equal(sched_run(&in, ch, 1, &n, NULL), MESH_ETOOBIG);
    assert_int_equal(sched_run(NULL, ch, 1, &n, NULL), MESH_EINVAL);
    assert_int_equal(n, 7);

    /* Two records of one replica. */
    struct fsm_placement p[2] = {PR("web", "a", 0, "n1", ""), PR("web", "a", 0, "n2", "")};
    in = (struct sched_input){.placements = p, .nplacements = 2};
    assert_int_equal(sched_run(&in, ch, 1, &n, NULL), MESH_EINVAL);

    /* An application whose spec is not canonical is left alone, its records too. */
    json_t *junk = json_pack("{s:s}", "kind", "nonsense");
    struct sched_app app = {.name = "web", .mod_rev = 1, .spec = junk};
    struct sched_node one = {.name = "n1", .engine_ok = true, .arch = "amd64", .cpus = 1};
    in = (struct sched_input){
        .apps = &app, .napps = 1, .placements = p, .nplacements = 1, .nodes = &one, .nnodes = 1};
    struct sched_stats st;
    assert_int_equal(sched_run(&in, ch, 1, &n, &st), 0);
    assert_int_equal(n, 0);
    assert_int_equal(st.bad_specs, 1);
    json_decref(junk);

    struct sched_change bad = {.op = 9};
    struct raft_buffer b;
    assert_int_equal(sched_change_cmd(&bad, &b), MESH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table),
        cmocka_unit_test(move_requests),
        cmocka_unit_test(bounded_output_and_stats),
        cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
