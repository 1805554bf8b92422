/* libFuzzer harness for every reader of the replicated state (issue 10): the bytes of a state
 * that any node may have written (before leaders validated forwarded writes, by a buggy node,
 * by a hostile leader's snapshot) go straight into a real fsm, bypassing every check a writer
 * makes, and then through what each node derives from it:
 *   - spec_stored (the validated spec cache every reader uses, meshd's node_spec_cached);
 *   - the services catalog (svc_catalog_build: endpoints and listeners of placed replicas and
 *     the service records);
 *   - the runtime's per-replica reading (spec_microservice, spec_images_for_arch,
 *     rt_config_text, rt_hash: what meshd/node_runtime.c's io_placements and
 *     runtime/reconciler.c's desired_build do for each placement);
 *   - the scheduler (sched_run) over two nodes, and sched_move.
 * Input: a byte of counts, then NUL-separated chunks: up to 4 application specs (raw bytes,
 * stored under names a0..a3), then up to 4 record values (stored under expose/connect keys).
 * Placements for microservices m0, m1 and "reader" of every application go to n0 and n1.
 * Checks: no crash, no leak, no sanitizer report, whatever the bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsm.h"
#include "node.h"
#include "reconcile.h"
#include "scheduler.h"
#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const app_names[] = {"a0", "a1", "a2", "a3"};
static const char *const ms_names[] = {"m0", "m1", "reader"};
static const char *const rec_keys[] = {"expose/db/n0", "connect/n1/127.0.0.1:5432", "expose/a0/n1",
                                       "connect/n0/[::1]:80"};

/* The next NUL-terminated chunk of the input, or NULL at its end. */
static const uint8_t *chunk(const uint8_t **p, const uint8_t *end, size_t *ret_len)
{
    if (*p >= end)
        return NULL;
    const uint8_t *start = *p;
    const uint8_t *nul = memchr(start, 0, (size_t)(end - start));
    size_t len = nul ? (size_t)(nul - start) : (size_t)(end - start);
    *p = start + len + (nul ? 1 : 0);
    *ret_len = len;
    return start;
}

static void apply(struct fsm *f, int rc, struct raft_buffer *b)
{
    if (rc != 0)
        return;
    struct fsm_result res;
    if (fsm_apply_cmd(f, b->base, b->len, &res) != 0)
        abort();
    raft_free(b->base);
}

static json_t *spec_of(void *ud, const struct fsm_app *a)
{
    return spec_stored(ud, a->name, a->mod_rev, a->spec, a->spec_len, NULL, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1, *end = data + size;
    unsigned counts = data[0];
    size_t napps = 1 + (counts & 3), nrecs = (counts >> 2) & 3;
    struct fsm *f;
    if (fsm_new(&f) != 0)
        return 0;
    struct raft_buffer b;
    for (size_t i = 0; i < napps; i++) {
        size_t len;
        const uint8_t *spec = chunk(&p, end, &len);
        if (!spec)
            break;
        apply(f, fsm_cmd_put_app(app_names[i], spec, len, &b), &b);
    }
    for (size_t i = 0; i < nrecs; i++) {
        size_t len;
        const uint8_t *v = chunk(&p, end, &len);
        if (!v)
            break;
        apply(f, fsm_cmd_put_rec(rec_keys[i], v, len, &b), &b);
    }
    for (size_t i = 0; i < fsm_app_count(f); i++) {
        struct fsm_app a;
        if (fsm_app_at(f, i, &a) != 0)
            abort();
        char name[FSM_APP_NAME_MAX + 1];
        snprintf(name, sizeof name, "%s", a.name);
        uint64_t mod_rev = a.mod_rev;
        for (size_t m = 0; m < 3; m++)
            for (uint32_t r = 0; r < 2; r++)
                apply(f, fsm_cmd_place(name, mod_rev, ms_names[m], r, r ? "n1" : "n0", "", &b), &b);
    }

    json_t *cache = json_object();
    /* The services catalog. */
    struct svc_catalog *c = svc_catalog_build(f, spec_of, cache);
    svc_catalog_free(c);

    /* The runtime's reading of each placement. */
    for (size_t i = 0; i < fsm_placement_count(f); i++) {
        struct fsm_placement pl;
        struct fsm_app a;
        if (fsm_placement_at(f, i, &pl) != 0 || fsm_app_find(f, pl.app, &a) != 0)
            abort();
        json_t *spec = spec_of(cache, &a);
        size_t k;
        const json_t *ms = spec_microservice(spec, pl.ms, &k);
        if (ms) {
            const char *image = spec_images_for_arch(spec, k, "amd64");
            char *text = rt_config_text(ms);
            char hash[RT_HASH_LEN + 1];
            if (image)
                rt_hash(ms, image, NULL, hash);
            free(text);
        }
        json_decref(spec);
    }

    /* The scheduler over what is there. */
    size_t n = fsm_app_count(f), np = fsm_placement_count(f);
    struct sched_app *apps = calloc(n + 1, sizeof *apps);
    json_t **specs = calloc(n + 1, sizeof *specs);
    struct fsm_placement *plcs = calloc(np + 1, sizeof *plcs);
    if (apps && specs && plcs) {
        for (size_t i = 0; i < n; i++) {
            struct fsm_app a;
            fsm_app_at(f, i, &a);
            specs[i] = spec_of(cache, &a);
            apps[i] = (struct sched_app){.name = a.name, .mod_rev = a.mod_rev, .spec = specs[i]};
        }
        for (size_t i = 0; i < np; i++)
            fsm_placement_at(f, i, &plcs[i]);
        struct sched_node nodes[2] = {
            {.name = "n0",
             .state = SCHED_NODE_ALIVE,
             .engine_ok = true,
             .arch = "amd64",
             .cpus = 4,
             .memory_bytes = 1ull << 32},
            {.name = "n1", .state = SCHED_NODE_ALIVE, .engine_ok = true, .arch = "arm64"},
        };
        struct sched_input in = {
            .apps = apps,
            .napps = n,
            .placements = plcs,
            .nplacements = np,
            .nodes = nodes,
            .nnodes = 2,
            .now_ms = 100000,
            .unknown_since_ms = 1,
        };
        static struct sched_change ch[4096];
        size_t nch;
        struct sched_stats st;
        sched_run(&in, ch, sizeof ch / sizeof ch[0], &nch, &st);
        struct sched_change mv;
        sched_move(&in, "a0", "m0", SCHED_ANY_REPLICA, "n1", &mv, NULL);
        for (size_t i = 0; i < n; i++)
            json_decref(specs[i]);
    }
    free(apps);
    free(specs);
    free(plcs);
    json_decref(cache);
    fsm_free(f);
    return 0;
}
