/* libFuzzer harness for the leader's scheduler (consensus/scheduler.h): arbitrary bytes become up
 * to 8 nodes (state, age, cordon, drain, engine, arch, a label, capacity), one application of
 * up to 4 microservices (replicas, resources, pin, arch, label, images) validated by spec.c,
 * and up to 32 placements recorded in a real fsm. Checks:
 *   - no crash, no leak, sched_run succeeds;
 *   - a replica is never placed (PLACE to a node it was not on) on a node that fails a filter:
 *     alive, not cordoned, engine up, an image for its arch, placement.node/labels;
 *   - once the changes are applied, no node of known capacity holds more requested CPU or
 *     memory than it has, and a second run changes nothing (the scheduler converges in one
 *     run when not capped).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icommon -Iconsensus \
 *       tests/fuzz/fuzz_sched.c consensus/scheduler.c consensus/fsm.c consensus/spec.c \
 *       common/wire.c common/err.c common/addr.c -lraft -lmsgpackc -ljansson -o fuzz_sched */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsm.h"
#include "scheduler.h"
#include "spec.h"

struct rd {
    const uint8_t *p;
    size_t n;
};

static unsigned byte(struct rd *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static const char *const archs[] = {"amd64", "arm64", "arm"};
static const char *const names[] = {"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"};

#define MAXCH 4096

static struct sched_change ch[MAXCH];

static void apply_all(struct fsm *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct raft_buffer b;
        struct fsm_result res;
        if (sched_change_cmd(&ch[i], &b) != 0 || fsm_apply_cmd(f, b.base, b.len, &res) != 0)
            abort();
        raft_free(b.base);
        if (res.outcome != FSM_OUT_CREATED && res.outcome != FSM_OUT_UPDATED &&
            res.outcome != FSM_OUT_DELETED)
            abort();
    }
}

/* The app, re-read from the fsm, and the placements as sched input. */
static void input(struct fsm *f, json_t **spec, struct sched_app *app, struct fsm_placement *plcs,
                  struct sched_input *in)
{
    struct fsm_app a;
    if (fsm_app_at(f, 0, &a) != 0)
        abort();
    json_decref(*spec);
    *spec = json_loadb((const char *)a.spec, a.spec_len, 0, NULL);
    if (!*spec)
        abort();
    *app = (struct sched_app){.name = a.name, .mod_rev = a.mod_rev, .spec = *spec};
    in->apps = app;
    in->napps = 1;
    in->nplacements = fsm_placement_count(f);
    for (size_t i = 0; i < in->nplacements; i++)
        if (fsm_placement_at(f, i, &plcs[i]) != 0)
            abort();
    in->placements = plcs;
}

static const struct sched_node *node_of(const struct sched_input *in, const char *name)
{
    for (size_t i = 0; i < in->nnodes; i++)
        if (strcmp(in->nodes[i].name, name) == 0)
            return &in->nodes[i];
    return NULL;
}

static const json_t *ms_of(const json_t *spec, const char *name, size_t *ret_index)
{
    const json_t *list = json_object_get(spec, "microservices");
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *m = json_array_get(list, i);
        if (strcmp(json_string_value(json_object_get(m, "name")), name) == 0) {
            *ret_index = i;
            return m;
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rd r = {data, size};
    struct sched_node nodes[8];
    struct sched_label labels[8];
    size_t nnodes = byte(&r) % 9;
    uint64_t now = 100000;
    for (size_t i = 0; i < nnodes; i++) {
        unsigned b = byte(&r), c = byte(&r);
        labels[i] = (struct sched_label){"zone", (c & 1) ? "a" : "b"};
        nodes[i] = (struct sched_node){
            .name = names[i],
            .state = (enum sched_node_state)(b & 3),
            .since_ms = now - (uint64_t)(b >> 2) * 500,
            .cordoned = (c & 2) != 0,
            .drain = (c & 6) == 6,
            .engine_ok = (c & 8) == 0,
            .engine_down_since_ms = now - (uint64_t)(b >> 2) * 500,
            .arch = archs[(c >> 4) % 3],
            .labels = &labels[i],
            .nlabels = (c & 64) ? 1 : 0,
            .cpus = byte(&r) % 9,
            .memory_bytes = (uint64_t)(byte(&r) % 9) << 28,
        };
    }

    /* One application. */
    json_t *app =
        json_pack("{s:s, s:s, s:[]}", "kind", "Application", "name", "app", "microservices");
    size_t nms = 1 + byte(&r) % 4;
    for (size_t i = 0; i < nms; i++) {
        char name[4];
        snprintf(name, sizeof name, "m%zu", i);
        unsigned a = byte(&r), b = byte(&r);
        json_t *m = json_pack("{s:s, s:i}", "name", name, "replicas", 1 + a % 6);
        if (b & 1)
            json_object_set_new(m, "image", json_string("img"));
        else
            json_object_set_new(m, "images", json_pack("{s:s}", archs[(b >> 1) % 3], "img"));
        json_t *res = json_object();
        if (b & 8)
            json_object_set_new(res, "cpus", json_real(0.5 * (1 + (a >> 4) % 4)));
        if (b & 16)
            json_object_set_new(res, "memory", json_integer((json_int_t)(1 + (a >> 6)) << 27));
        json_object_set_new(m, "resources", res);
        json_t *pl = json_object();
        if (b & 32)
            json_object_set_new(pl, "node", json_string(names[(a >> 3) % 8]));
        if (b & 64)
            json_object_set_new(pl, "labels", json_pack("{s:s}", "zone", "a"));
        if ((b & 128) && (b & 1))
            json_object_set_new(pl, "arch", json_string(archs[(a >> 1) % 3]));
        json_object_set_new(m, "placement", pl);
        json_array_append_new(json_object_get(app, "microservices"), m);
    }
    json_t *canon = NULL;
    struct fsm *f = NULL;
    json_t *spec = NULL;
    if (spec_validate(app, &canon, NULL) != 0)
        goto out;
    if (fsm_new(&f) != 0)
        abort();
    char *text = json_dumps(canon, JSON_COMPACT);
    struct raft_buffer b;
    struct fsm_result res;
    if (!text || fsm_cmd_put_app("app", text, strlen(text), &b) != 0 ||
        fsm_apply_cmd(f, b.base, b.len, &res) != 0)
        abort();
    raft_free(b.base);
    free(text);

    /* Placements already recorded, some of them stale or odd. */
    size_t nplc = byte(&r) % 33;
    for (size_t i = 0; i < nplc; i++) {
        unsigned x = byte(&r), y = byte(&r);
        char ms[4];
        snprintf(ms, sizeof ms, "m%u", x % 5);
        const char *node = (y & 8) ? "" : names[y % 8];
        if (fsm_cmd_place("app", 1, ms, (x >> 3) % 8, node, (y & 16) ? "waiting for node x" : "",
                          &b) != 0 ||
            fsm_apply_cmd(f, b.base, b.len, &res) != 0)
            abort();
        raft_free(b.base);
    }

    static struct fsm_placement plcs[FSM_PLACEMENTS_MAX];
    struct sched_app sa;
    struct sched_input in = {.nodes = nodes,
                             .nnodes = nnodes,
                             .now_ms = now,
                             .reschedule_after_ms = 1 + byte(&r) * 100u,
                             .unknown_since_ms = now - byte(&r) * 100u};
    input(f, &spec, &sa, plcs, &in);
    size_t n = 0;
    struct sched_stats st;
    if (sched_run(&in, ch, MAXCH, &n, &st) != 0 || st.changes != n)
        abort();

    /* Never onto a node that fails a filter. */
    for (size_t i = 0; i < n; i++) {
        const struct sched_change *c = &ch[i];
        if (c->op != SCHED_PLACE || !c->to[0] || strcmp(c->to, c->from) == 0)
            continue;
        const struct sched_node *nd = node_of(&in, c->to);
        size_t mi;
        const json_t *m = ms_of(spec, c->ms, &mi);
        if (!nd || !m || nd->state != SCHED_NODE_ALIVE || nd->cordoned || !nd->engine_ok ||
            !spec_images_for_arch(spec, mi, nd->arch))
            abort();
        const json_t *pl = json_object_get(m, "placement");
        const char *pin = json_string_value(json_object_get(pl, "node"));
        const char *zone =
            json_string_value(json_object_get(json_object_get(pl, "labels"), "zone"));
        if ((pin && strcmp(pin, nd->name) != 0) ||
            (zone && (nd->nlabels == 0 || strcmp(nd->labels[0].value, zone) != 0)))
            abort();
    }

    apply_all(f, n);
    input(f, &spec, &sa, plcs, &in);

    /* Never beyond a known capacity. */
    for (size_t k = 0; k < nnodes; k++) {
        uint64_t cpu = 0, mem = 0;
        for (size_t i = 0; i < in.nplacements; i++) {
            size_t mi;
            const json_t *m = ms_of(spec, plcs[i].ms, &mi);
            if (!m || strcmp(plcs[i].node, nodes[k].name) != 0)
                continue;
            const json_t *rs = json_object_get(m, "resources");
            cpu += (uint64_t)(json_number_value(json_object_get(rs, "cpus")) * 1000 + 0.5);
            mem += (uint64_t)json_integer_value(json_object_get(rs, "memory_bytes"));
        }
        if ((nodes[k].cpus && cpu > nodes[k].cpus * 1000ull) ||
            (nodes[k].memory_bytes && mem > nodes[k].memory_bytes))
            abort();
    }

    /* Converged: nothing more to do. */
    if (sched_run(&in, ch, MAXCH, &n, &st) != 0)
        abort();
#ifdef FUZZ_SCHED_DEBUG
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "again: %s/%s/%u %s->%s: %s\n", ch[i].app, ch[i].ms, ch[i].replica,
                ch[i].from, ch[i].to, ch[i].reason);
#endif
    if (n != 0)
        abort();
out:
    json_decref(spec);
    fsm_free(f);
    json_decref(canon);
    json_decref(app);
    return 0;
}
