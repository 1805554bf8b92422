/* The leader's scheduler; the rules are in scheduler.h. (Not sched.h: consensus/ is on the
 * include path, and a sched.h there would shadow the system <sched.h> that pthread.h needs.) */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

/* One microservice of one application, read from its canonical spec. */
struct ms {
    size_t app;   /* index into in->apps */
    size_t index; /* in the spec's microservices */
    const char *name;
    uint32_t replicas;
    uint64_t cpu_m;       /* requested millicpus, 0 when unset */
    uint64_t mem;         /* requested bytes, 0 when unset */
    const char *pin;      /* placement.node or NULL */
    const char *arch;     /* placement.arch or NULL */
    const json_t *labels; /* placement.labels or NULL */
    size_t first_slot, nslots;
};

/* Where a replica stands during a run. */
enum slot_state {
    SLOT_KEEP = 0, /* stays where its record is */
    SLOT_PLACE,    /* needs a node: no record, pending, or moved off */
};

struct slot {
    size_t ms; /* index into ctx.ms */
    uint32_t replica;
    const struct fsm_placement *rec; /* NULL when there is none */
    int cur;                         /* node index of rec->node, -1 when none or unknown */
    enum slot_state state;
    int node;     /* decided node, -1 pending */
    char why[96]; /* SLOT_PLACE after a move: why it left */
    bool waiting; /* kept on a gone pinned node */
    bool pending; /* SLOT_PLACE and no node fits */
};

struct node_rt {
    uint64_t cpu_cap, mem_cap; /* millicpus, bytes; 0 unknown */
    uint64_t cpu, mem;         /* allocated by requests */
    uint64_t cpu_s, mem_s;     /* allocated for scoring (defaults for unset) */
    uint32_t spread;           /* replicas of the microservice being placed */
};

struct ctx {
    const struct sched_input *in;
    uint64_t grace;
    size_t *app_order;  /* apps sorted by name */
    size_t *node_order; /* nodes sorted by name */
    struct node_rt *rt;
    struct ms *ms;
    size_t nms;
    bool *app_bad;
    size_t *app_ms; /* app_ms[a]: first index into ms of app a; app_nms[a]: how many */
    size_t *app_nms;
    const struct fsm_placement **recs; /* sorted by key */
    struct slot *slots;
    size_t nslots;
    /* output */
    struct sched_change *out;
    size_t cap, n;
    struct sched_stats st;
};

/* ---- small helpers ---- */

static int cmp_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "");
}

static int rec_cmp(const struct fsm_placement *a, const struct fsm_placement *b)
{
    int c = cmp_str(a->app, b->app);
    if (!c)
        c = cmp_str(a->ms, b->ms);
    if (!c)
        c = a->replica < b->replica ? -1 : a->replica > b->replica;
    return c;
}

static int rec_qcmp(const void *x, const void *y)
{
    return rec_cmp(*(const struct fsm_placement *const *)x,
                   *(const struct fsm_placement *const *)y);
}

/* qsort with a context is not in C11: sort indices by insertion (inputs are small and usually
 * already sorted, since the fsm keeps names in order). */
static void sort_idx(size_t *v, size_t n, const void *base, size_t stride, size_t name_off)
{
    for (size_t i = 0; i < n; i++)
        v[i] = i;
    for (size_t i = 1; i < n; i++) {
        size_t x = v[i], j = i;
        const char *xn = *(const char *const *)((const char *)base + x * stride + name_off);
        while (j > 0) {
            const char *pn =
                *(const char *const *)((const char *)base + v[j - 1] * stride + name_off);
            if (cmp_str(pn, xn) <= 0)
                break;
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

/* Index into in->nodes of the node called name, or -1. */
static int node_find(const struct ctx *c, const char *name)
{
    size_t lo = 0, hi = c->in->nnodes;
    if (!name || !name[0])
        return -1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = cmp_str(c->in->nodes[c->node_order[mid]].name, name);
        if (r == 0)
            return (int)c->node_order[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static int app_find(const struct ctx *c, const char *name)
{
    size_t lo = 0, hi = c->in->napps;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = cmp_str(c->in->apps[c->app_order[mid]].name, name);
        if (r == 0)
            return (int)c->app_order[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* The microservice of app called name, or -1. */
static int ms_find(const struct ctx *c, size_t app, const char *name)
{
    for (size_t i = c->app_ms[app]; i < c->app_ms[app] + c->app_nms[app]; i++)
        if (cmp_str(c->ms[i].name, name) == 0)
            return (int)i;
    return -1;
}

static const struct fsm_placement *rec_find(const struct ctx *c, const char *app, const char *ms,
                                            uint32_t replica)
{
    struct fsm_placement key = {.app = app, .ms = ms, .replica = replica};
    size_t lo = 0, hi = c->in->nplacements;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = rec_cmp(c->recs[mid], &key);
        if (r == 0)
            return c->recs[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static bool placed(const struct fsm_placement *rec)
{
    return rec && rec->node && rec->node[0];
}

/* Copies s into dst of cap bytes, printable ASCII only (reasons go to terminals and JSON). */
static void copy_clean(char *dst, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s && s[i] && i + 1 < cap; i++)
        dst[i] = ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) ? '?' : s[i];
    dst[i] = '\0';
}

/* ---- reading specs ---- */

/* Reads app a's microservices into c->ms. Returns 0, MESH_EINVAL (not a canonical spec: the
 * app is left alone) or MESH_ENOMEM. */
static int read_app(struct ctx *c, size_t a, size_t *cap)
{
    const json_t *list = json_object_get(c->in->apps[a].spec, "microservices");
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > SPEC_MAX_MICROSERVICES)
        return MESH_EINVAL;
    size_t first = c->nms;
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *m = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(m, "name"));
        json_int_t replicas = json_integer_value(json_object_get(m, "replicas"));
        if (!name || !fsm_app_name_valid(name, strlen(name)) || replicas < 1 ||
            replicas > FSM_REPLICAS_MAX)
            goto bad;
        for (size_t k = first; k < c->nms; k++)
            if (strcmp(c->ms[k].name, name) == 0)
                goto bad;
        if (c->nms == *cap) {
            size_t ncap = *cap ? *cap * 2 : 64;
            struct ms *v = realloc(c->ms, ncap * sizeof *v);
            if (!v)
                return MESH_ENOMEM;
            c->ms = v;
            *cap = ncap;
        }
        struct ms *x = &c->ms[c->nms];
        memset(x, 0, sizeof *x);
        x->app = a;
        x->index = i;
        x->name = name;
        x->replicas = (uint32_t)replicas;
        const json_t *res = json_object_get(m, "resources");
        double cpus = json_number_value(json_object_get(res, "cpus"));
        if (cpus > 0 && cpus <= SPEC_MAX_CPUS)
            x->cpu_m = (uint64_t)(cpus * 1000.0 + 0.5);
        json_int_t mem = json_integer_value(json_object_get(res, "memory_bytes"));
        if (mem > 0)
            x->mem = (uint64_t)mem;
        const json_t *pl = json_object_get(m, "placement");
        x->pin = json_string_value(json_object_get(pl, "node"));
        x->arch = json_string_value(json_object_get(pl, "arch"));
        x->labels = json_object_get(pl, "labels");
        if (x->labels && !json_is_object(x->labels))
            goto bad;
        c->nms++;
    }
    return 0;
bad:
    c->nms = first;
    return MESH_EINVAL;
}

/* ---- filters ---- */

/* Why a node does not take a replica, in filter order (sched.h rule 3); the order is also the
 * order of the parts of a pending reason. */
enum why {
    WHY_OK = 0,
    WHY_SUSPECT,
    WHY_DEAD,
    WHY_LEFT,
    WHY_CORDONED,
    WHY_ENGINE,
    WHY_NAME,
    WHY_NOT_PINNED,
    WHY_ARCH,
    WHY_IMAGE,
    WHY_LABEL,
    WHY_CPU,
    WHY_MEMORY,
    WHY_COUNT_
};

/* Each reason as "<verb> <detail><tail>", the verb singular and plural. */
static const struct {
    const char *verb[2];
    const char *tail;
} why_text[WHY_COUNT_] = {
    [WHY_SUSPECT] = {{"is suspect", "are suspect"}, ""},
    [WHY_DEAD] = {{"is dead", "are dead"}, ""},
    [WHY_LEFT] = {{"has left", "have left"}, ""},
    [WHY_CORDONED] = {{"is cordoned", "are cordoned"}, ""},
    [WHY_ENGINE] = {{"has no container engine", "have no container engine"}, ""},
    [WHY_NAME] = {{"has a name that cannot be recorded", "have names that cannot be recorded"}, ""},
    [WHY_NOT_PINNED] = {{"is not the pinned node", "are not the pinned node"}, ""},
    [WHY_ARCH] = {{"is not", "are not"}, ""},
    [WHY_IMAGE] = {{"is", "are"}, " without an image"},
    [WHY_LABEL] = {{"lacks label", "lack label"}, ""},
    [WHY_CPU] = {{"lacks free CPU", "lack free CPU"}, ""},
    [WHY_MEMORY] = {{"lacks free memory", "lack free memory"}, ""},
};

#define WHY_TEXT_MAX 256 /* a verdict as text: verb, detail and tail */

struct verdict {
    enum why why;
    char detail[SPEC_LABEL_KEY_MAX + SPEC_LABEL_VALUE_MAX + 2];
};

static bool has_label(const struct sched_node *n, const char *key, const char *value)
{
    for (size_t i = 0; i < n->nlabels; i++)
        if (n->labels[i].key && n->labels[i].value && strcmp(n->labels[i].key, key) == 0 &&
            strcmp(n->labels[i].value, value) == 0)
            return true;
    return false;
}

/* The filters that depend on the spec and the node only (rule 2d, and part of rule 3). */
static enum why static_fit(const struct ctx *c, const struct ms *m, const struct sched_node *n,
                           struct verdict *v)
{
    const char *arch = n->arch && n->arch[0] ? n->arch : "unknown";
    if (m->arch && strcmp(m->arch, arch) != 0) {
        copy_clean(v->detail, sizeof v->detail, m->arch);
        return v->why = WHY_ARCH;
    }
    if (!spec_images_for_arch(c->in->apps[m->app].spec, m->index, arch)) {
        copy_clean(v->detail, sizeof v->detail, arch);
        return v->why = WHY_IMAGE;
    }
    if (m->labels) {
        const char *key;
        const json_t *val;
        /* Canonical objects keep keys sorted, so the first missing label is deterministic. */
        json_object_foreach((json_t *)m->labels, key, val)
        {
            const char *s = json_string_value(val);
            if (!s || !has_label(n, key, s)) {
                char kv[sizeof v->detail];
                snprintf(kv, sizeof kv, "%s=%s", key, s ? s : "?");
                copy_clean(v->detail, sizeof v->detail, kv);
                return v->why = WHY_LABEL;
            }
        }
    }
    return v->why = WHY_OK;
}

/* Every filter of rule 3 for a new placement of m on node i. */
static enum why fit(const struct ctx *c, const struct ms *m, int i, struct verdict *v)
{
    const struct sched_node *n = &c->in->nodes[i];
    const struct node_rt *rt = &c->rt[i];
    v->detail[0] = '\0';
    switch (n->state) {
    case SCHED_NODE_ALIVE:
        break;
    case SCHED_NODE_SUSPECT:
        return v->why = WHY_SUSPECT;
    case SCHED_NODE_DEAD:
        return v->why = WHY_DEAD;
    default:
        return v->why = WHY_LEFT;
    }
    if (n->cordoned || n->drain)
        return v->why = WHY_CORDONED;
    if (!n->engine_ok)
        return v->why = WHY_ENGINE;
    if (!fsm_node_name_valid(n->name, strlen(n->name)))
        return v->why = WHY_NAME;
    if (m->pin && strcmp(m->pin, n->name) != 0)
        return v->why = WHY_NOT_PINNED;
    if (static_fit(c, m, n, v) != WHY_OK)
        return v->why;
    if (m->cpu_m && (rt->cpu_cap == 0 || rt->cpu + m->cpu_m > rt->cpu_cap))
        return v->why = WHY_CPU;
    if (m->mem && (rt->mem_cap == 0 || rt->mem + m->mem > rt->mem_cap))
        return v->why = WHY_MEMORY;
    return v->why = WHY_OK;
}

static void verdict_text(const struct verdict *v, bool plural, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s%s", why_text[v->why].verb[plural], v->detail[0] ? " " : "",
             v->detail, why_text[v->why].tail);
}

/* Whether node i is gone for good (rule 2b): the replicas on it move. *ret_what says how. */
static bool node_gone(const struct ctx *c, int i, const char **ret_what)
{
    const struct sched_input *in = c->in;
    uint64_t since;
    if (i < 0) {
        *ret_what = "not in the mesh";
        since = in->unknown_since_ms;
    } else {
        const struct sched_node *n = &in->nodes[i];
        if (n->state == SCHED_NODE_LEFT) {
            *ret_what = "left";
            return true;
        }
        if (n->state == SCHED_NODE_DEAD) {
            *ret_what = "dead";
            since = n->since_ms;
        } else if (!n->engine_ok) {
            *ret_what = "without a container engine";
            since = n->engine_down_since_ms;
        } else {
            return false;
        }
    }
    return in->now_ms >= since && in->now_ms - since >= c->grace;
}

/* ---- scoring ---- */

/* Basis points of used over cap; 10000 when full or unknown. */
static uint64_t frac_bp(uint64_t used, uint64_t cap)
{
    if (cap == 0 || used >= cap)
        return 10000;
    /* used < cap: scale without overflow (memory up to 2^50 and beyond). */
    if (used <= UINT64_MAX / 10000)
        return used * 10000 / cap;
    return used / (cap / 10000 + 1);
}

static uint64_t score(const struct ctx *c, const struct ms *m, int i)
{
    const struct node_rt *rt = &c->rt[i];
    uint64_t cpu = rt->cpu_s + (m->cpu_m ? m->cpu_m : SCHED_SCORE_DEFAULT_MILLICPU);
    uint64_t mem = rt->mem_s + (m->mem ? m->mem : SCHED_SCORE_DEFAULT_MEMORY);
    uint64_t a = frac_bp(cpu, rt->cpu_cap), b = frac_bp(mem, rt->mem_cap);
    return a > b ? a : b;
}

static void alloc(struct ctx *c, const struct ms *m, int i, int sign)
{
    struct node_rt *rt = &c->rt[i];
    uint64_t cs = m->cpu_m ? m->cpu_m : SCHED_SCORE_DEFAULT_MILLICPU;
    uint64_t ms = m->mem ? m->mem : SCHED_SCORE_DEFAULT_MEMORY;
    if (sign > 0) {
        rt->cpu += m->cpu_m;
        rt->mem += m->mem;
        rt->cpu_s += cs;
        rt->mem_s += ms;
    } else {
        rt->cpu -= m->cpu_m;
        rt->mem -= m->mem;
        rt->cpu_s -= cs;
        rt->mem_s -= ms;
    }
}

/* ---- output ---- */

static void emit(struct ctx *c, int op, const struct ms *m, const char *app, const char *ms_name,
                 uint32_t replica, const char *from, const char *to, const char *reason)
{
    c->st.changes++;
    if (c->n >= c->cap)
        return;
    struct sched_change *x = &c->out[c->n++];
    memset(x, 0, sizeof *x);
    x->op = op;
    copy_clean(x->app, sizeof x->app, app);
    x->app_mod_rev = m ? c->in->apps[m->app].mod_rev : 0;
    copy_clean(x->ms, sizeof x->ms, ms_name);
    x->replica = replica;
    copy_clean(x->from, sizeof x->from, from ? from : "");
    copy_clean(x->to, sizeof x->to, to ? to : "");
    copy_clean(x->reason, sizeof x->reason, reason);
}

static void emit_place(struct ctx *c, const struct slot *s, const char *to, const char *reason)
{
    const struct ms *m = &c->ms[s->ms];
    emit(c, SCHED_PLACE, m, c->in->apps[m->app].name, m->name, s->replica,
         placed(s->rec) ? s->rec->node : "", to, reason);
}

/* Appends "N node(s) <why>" parts for the verdicts in v[0..n) to buf: counts per (why,
 * detail), in filter order then detail order. */
static void pending_reason(const struct verdict *v, size_t n, const char *prefix, char *buf,
                           size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "%s", prefix);
    if (n == 0) {
        snprintf(buf + off, off < len ? len - off : 0, "no nodes in the mesh");
        return;
    }
    bool first = true;
    for (int w = WHY_OK + 1; w < WHY_COUNT_; w++) {
        /* Distinct details of this kind, smallest first, each counted. */
        const char *last = NULL;
        for (;;) {
            const char *next = NULL;
            for (size_t i = 0; i < n; i++)
                if ((int)v[i].why == w && (!last || strcmp(v[i].detail, last) > 0) &&
                    (!next || strcmp(v[i].detail, next) < 0))
                    next = v[i].detail;
            if (!next)
                break;
            size_t count = 0;
            const struct verdict *ex = NULL;
            for (size_t i = 0; i < n; i++)
                if ((int)v[i].why == w && strcmp(v[i].detail, next) == 0) {
                    count++;
                    ex = &v[i];
                }
            char part[WHY_TEXT_MAX];
            verdict_text(ex, count > 1, part, sizeof part);
            if (off < len)
                off += (size_t)snprintf(buf + off, len - off, "%s%zu node%s %s", first ? "" : ", ",
                                        count, count > 1 ? "s" : "", part);
            first = false;
            last = next;
        }
    }
}

/* ---- the run ---- */

static void ctx_free(struct ctx *c)
{
    free(c->app_order);
    free(c->node_order);
    free(c->rt);
    free(c->ms);
    free(c->app_bad);
    free(c->app_ms);
    free(c->app_nms);
    free(c->recs);
    free(c->slots);
}

/* Checks the input, sorts, reads the specs. Returns 0 or an error (c to be freed). */
static int ctx_init(struct ctx *c, const struct sched_input *in)
{
    memset(c, 0, sizeof *c);
    c->in = in;
    if ((in->napps && !in->apps) || (in->nnodes && !in->nodes) ||
        (in->nplacements && !in->placements))
        return MESH_EINVAL;
    if (in->nnodes > SCHED_NODES_MAX || in->napps > FSM_APPS_MAX ||
        in->nplacements > FSM_PLACEMENTS_MAX)
        return MESH_ETOOBIG;
    c->grace = in->reschedule_after_ms ? in->reschedule_after_ms : SCHED_RESCHEDULE_AFTER_MS;
    c->app_order = malloc((in->napps + 1) * sizeof *c->app_order);
    c->app_bad = calloc(in->napps + 1, sizeof *c->app_bad);
    c->app_ms = calloc(in->napps + 1, sizeof *c->app_ms);
    c->app_nms = calloc(in->napps + 1, sizeof *c->app_nms);
    c->node_order = malloc((in->nnodes + 1) * sizeof *c->node_order);
    c->rt = calloc(in->nnodes + 1, sizeof *c->rt);
    c->recs = malloc((in->nplacements + 1) * sizeof *c->recs);
    if (!c->app_order || !c->app_bad || !c->app_ms || !c->app_nms || !c->node_order || !c->rt ||
        !c->recs)
        return MESH_ENOMEM;

    for (size_t i = 0; i < in->nnodes; i++)
        if (!in->nodes[i].name || !in->nodes[i].name[0])
            return MESH_EINVAL;
    sort_idx(c->node_order, in->nnodes, in->nodes, sizeof *in->nodes,
             offsetof(struct sched_node, name));
    for (size_t i = 1; i < in->nnodes; i++)
        if (cmp_str(in->nodes[c->node_order[i - 1]].name, in->nodes[c->node_order[i]].name) == 0)
            return MESH_EINVAL;
    for (size_t i = 0; i < in->nnodes; i++) {
        c->rt[i].cpu_cap = (uint64_t)in->nodes[i].cpus * 1000;
        c->rt[i].mem_cap = in->nodes[i].memory_bytes;
    }

    for (size_t i = 0; i < in->napps; i++)
        if (!in->apps[i].name)
            return MESH_EINVAL;
    sort_idx(c->app_order, in->napps, in->apps, sizeof *in->apps, offsetof(struct sched_app, name));
    for (size_t i = 1; i < in->napps; i++)
        if (cmp_str(in->apps[c->app_order[i - 1]].name, in->apps[c->app_order[i]].name) == 0)
            return MESH_EINVAL;

    for (size_t i = 0; i < in->nplacements; i++) {
        const struct fsm_placement *p = &in->placements[i];
        if (!p->app || !p->ms)
            return MESH_EINVAL;
        c->recs[i] = p;
    }
    qsort(c->recs, in->nplacements, sizeof *c->recs, rec_qcmp);
    for (size_t i = 1; i < in->nplacements; i++)
        if (rec_cmp(c->recs[i - 1], c->recs[i]) == 0)
            return MESH_EINVAL;

    /* Microservices, in (app name, spec order). */
    size_t mscap = 0;
    for (size_t k = 0; k < in->napps; k++) {
        size_t a = c->app_order[k];
        c->app_ms[a] = c->nms;
        int rv = read_app(c, a, &mscap);
        c->app_nms[a] = c->nms - c->app_ms[a];
        if (rv == MESH_ENOMEM)
            return rv;
        if (rv) {
            c->app_bad[a] = true;
            c->st.bad_specs++;
        }
    }
    return 0;
}

/* Rule 1: records nobody wants. Returns how many records stay. */
static size_t remove_unwanted(struct ctx *c)
{
    size_t stay = 0;
    for (size_t i = 0; i < c->in->nplacements; i++) {
        const struct fsm_placement *p = c->recs[i];
        int a = app_find(c, p->app);
        const char *why = NULL;
        char buf[64];
        if (a < 0) {
            why = "application deleted";
        } else if (c->app_bad[a]) {
            stay++;
            continue;
        } else {
            int m = ms_find(c, (size_t)a, p->ms);
            if (m < 0) {
                why = "microservice deleted";
            } else if (p->replica >= c->ms[m].replicas) {
                snprintf(buf, sizeof buf, "scaled down to %u replica%s", c->ms[m].replicas,
                         c->ms[m].replicas > 1 ? "s" : "");
                why = buf;
            }
        }
        if (why)
            emit(c, SCHED_UNPLACE, NULL, p->app, p->ms, p->replica, placed(p) ? p->node : "", "",
                 why);
        else
            stay++;
    }
    return stay;
}

/* The replicas wanted, with their records; new ones only while the fsm has room. Two passes:
 * count, then fill, so that a state asking for millions of replicas costs no more memory than
 * the records the fsm can hold. */
static int build_slots(struct ctx *c, size_t stay)
{
    size_t room0 = stay < FSM_PLACEMENTS_MAX ? FSM_PLACEMENTS_MAX - stay : 0;
    size_t total = 0, room = room0;
    for (size_t i = 0; i < c->nms; i++) {
        const struct ms *m = &c->ms[i];
        for (uint32_t r = 0; r < m->replicas; r++) {
            if (rec_find(c, c->in->apps[m->app].name, m->name, r))
                total++;
            else if (room > 0) {
                room--;
                total++;
            } else {
                c->st.over_limit++;
            }
        }
    }
    c->slots = calloc(total + 1, sizeof *c->slots);
    if (!c->slots)
        return MESH_ENOMEM;
    room = room0;
    for (size_t i = 0; i < c->nms; i++) {
        struct ms *m = &c->ms[i];
        m->first_slot = c->nslots;
        for (uint32_t r = 0; r < m->replicas; r++) {
            const struct fsm_placement *rec = rec_find(c, c->in->apps[m->app].name, m->name, r);
            if (!rec) {
                if (room == 0)
                    continue;
                room--;
            }
            struct slot *s = &c->slots[c->nslots++];
            s->ms = i;
            s->replica = r;
            s->rec = rec;
            s->cur = placed(rec) ? node_find(c, rec->node) : -1;
            s->node = -1;
            s->state = placed(rec) ? SLOT_KEEP : SLOT_PLACE;
        }
        m->nslots = c->nslots - m->first_slot;
    }
    return 0;
}

/* Rule 2: which placed records stay. */
static void keep_or_move(struct ctx *c)
{
    for (size_t k = 0; k < c->nslots; k++) {
        struct slot *s = &c->slots[k];
        if (s->state != SLOT_KEEP)
            continue;
        const struct ms *m = &c->ms[s->ms];
        const char *node = s->rec->node;
        const char *what;
        struct verdict v = {0};
        if (m->pin && strcmp(m->pin, node) != 0) {
            s->state = SLOT_PLACE;
            snprintf(s->why, sizeof s->why, "pinned to another node");
            continue;
        }
        if (node_gone(c, s->cur, &what)) {
            if (m->pin) { /* waits for its node */
                s->waiting = true;
                snprintf(s->why, sizeof s->why, "%s", what);
            } else {
                s->state = SLOT_PLACE;
                snprintf(s->why, sizeof s->why, "%s", what);
                continue;
            }
        } else if (s->cur >= 0 && c->in->nodes[s->cur].drain) {
            s->state = SLOT_PLACE;
            snprintf(s->why, sizeof s->why, "drained");
            continue;
        }
        if (s->cur >= 0 && static_fit(c, m, &c->in->nodes[s->cur], &v) != WHY_OK) {
            char t[WHY_TEXT_MAX];
            verdict_text(&v, false, t, sizeof t);
            s->state = SLOT_PLACE;
            s->waiting = false;
            snprintf(s->why, sizeof s->why, "it %.*s", (int)sizeof s->why - 4, t);
            continue;
        }
        s->node = s->cur;
        if (s->cur >= 0) {
            struct node_rt *rt = &c->rt[s->cur];
            if ((rt->cpu_cap && m->cpu_m && rt->cpu + m->cpu_m > rt->cpu_cap) ||
                (rt->mem_cap && m->mem && rt->mem + m->mem > rt->mem_cap)) {
                s->state = SLOT_PLACE;
                s->waiting = false;
                s->node = -1;
                snprintf(s->why, sizeof s->why, "it no longer has room");
                continue;
            }
            alloc(c, m, s->cur, +1);
        }
    }
}

/* The reason for a kept record: waiting, back, or unchanged (NULL). */
static void kept_reason(struct ctx *c, const struct slot *s)
{
    const char *old = s->rec->reason ? s->rec->reason : "";
    bool was_waiting = strncmp(old, SCHED_WAITING_PREFIX, strlen(SCHED_WAITING_PREFIX)) == 0;
    char reason[FSM_REASON_MAX + 1];
    if (s->waiting)
        snprintf(reason, sizeof reason, SCHED_WAITING_PREFIX "%s: %s", s->rec->node, s->why);
    else if (was_waiting)
        snprintf(reason, sizeof reason, "node is back");
    else
        return;
    if (strcmp(reason, old) != 0)
        emit_place(c, s, s->rec->node, reason);
}

/* Rule 3 for one replica: the best node, or pending (its reason comes later). */
static void place_one(struct ctx *c, struct slot *s, struct verdict *v)
{
    const struct ms *m = &c->ms[s->ms];
    const struct sched_input *in = c->in;
    int best = -1;
    uint64_t best_score = 0;
    uint32_t best_spread = 0;
    for (size_t k = 0; k < in->nnodes; k++) { /* in name order: ties go to the first name */
        int i = (int)c->node_order[k];
        if (m->pin && strcmp(m->pin, in->nodes[i].name) != 0)
            continue; /* a pinned microservice considers its node only */
        if (fit(c, m, i, v) != WHY_OK)
            continue;
        uint64_t sc = score(c, m, i);
        uint32_t sp = c->rt[i].spread;
        if (best < 0 || sp < best_spread || (sp == best_spread && sc < best_score)) {
            best = i;
            best_score = sc;
            best_spread = sp;
        }
    }
    if (best < 0) {
        s->pending = true;
        return;
    }
    char reason[FSM_REASON_MAX + 1];
    s->node = best;
    alloc(c, m, best, +1);
    c->rt[best].spread++;
    if (s->why[0] && placed(s->rec))
        snprintf(reason, sizeof reason, "moved from %s: %s", s->rec->node, s->why);
    else
        snprintf(reason, sizeof reason, "scheduled");
    emit_place(c, s, in->nodes[best].name, reason);
}

/* The reason of a pending replica, against the allocations once every replica of the run is
 * placed: what the next run will see too (allocations only grew since the replica found no
 * node, so it still fits none), so a reason does not flip between runs with the order in
 * which replicas were considered. */
static void pend_one(struct ctx *c, struct slot *s, struct verdict *v)
{
    const struct ms *m = &c->ms[s->ms];
    const struct sched_input *in = c->in;
    size_t nv = 0;
    for (size_t k = 0; k < in->nnodes; k++) {
        int i = (int)c->node_order[k];
        if (m->pin && strcmp(m->pin, in->nodes[i].name) != 0)
            continue;
        if (fit(c, m, i, &v[nv]) != WHY_OK)
            nv++;
    }
    char reason[FSM_REASON_MAX + 1];
    if (m->pin) {
        char prefix[FSM_NODE_NAME_MAX + 32];
        snprintf(prefix, sizeof prefix, SCHED_WAITING_PREFIX "%s: ", m->pin);
        if (nv == 0)
            snprintf(reason, sizeof reason, "%snot in the mesh", prefix);
        else {
            char t[WHY_TEXT_MAX];
            verdict_text(&v[0], false, t, sizeof t);
            snprintf(reason, sizeof reason, "%sit %.150s", prefix, t);
        }
    } else {
        pending_reason(v, nv, "no node matches: ", reason, sizeof reason);
    }
    char clean[FSM_REASON_MAX + 1];
    copy_clean(clean, sizeof clean, reason);
    if (!s->rec || placed(s->rec) || strcmp(s->rec->reason ? s->rec->reason : "", clean) != 0)
        emit_place(c, s, "", clean);
}

static int run(struct ctx *c)
{
    size_t stay = remove_unwanted(c);
    int rv = build_slots(c, stay);
    if (rv)
        return rv;
    keep_or_move(c);
    for (size_t k = 0; k < c->nslots; k++)
        if (c->slots[k].state == SLOT_KEEP)
            kept_reason(c, &c->slots[k]);

    struct verdict *v = malloc((c->in->nnodes + 1) * sizeof *v);
    if (!v)
        return MESH_ENOMEM;
    for (size_t i = 0; i < c->nms; i++) {
        const struct ms *m = &c->ms[i];
        for (size_t n = 0; n < c->in->nnodes; n++)
            c->rt[n].spread = 0;
        for (size_t k = m->first_slot; k < m->first_slot + m->nslots; k++)
            if (c->slots[k].state == SLOT_KEEP && c->slots[k].node >= 0)
                c->rt[c->slots[k].node].spread++;
        for (size_t k = m->first_slot; k < m->first_slot + m->nslots; k++)
            if (c->slots[k].state == SLOT_PLACE)
                place_one(c, &c->slots[k], v);
    }
    for (size_t k = 0; k < c->nslots; k++)
        if (c->slots[k].pending)
            pend_one(c, &c->slots[k], v);
    free(v);
    for (size_t k = 0; k < c->nslots; k++) {
        if (c->slots[k].node >= 0 || c->slots[k].state == SLOT_KEEP)
            c->st.placed++;
        else
            c->st.pending++;
    }
    return 0;
}

int sched_run(const struct sched_input *in, struct sched_change *changes, size_t cap, size_t *ret_n,
              struct sched_stats *ret_stats)
{
    if (!in || !ret_n || (cap && !changes))
        return MESH_EINVAL;
    struct ctx c;
    int rv = ctx_init(&c, in);
    if (rv == 0) {
        c.out = changes;
        c.cap = cap;
        rv = run(&c);
    }
    if (rv == 0) {
        *ret_n = c.n;
        if (ret_stats)
            *ret_stats = c.st;
    }
    ctx_free(&c);
    return rv;
}

/* ---- move ---- */

int sched_move(const struct sched_input *in, const char *app, const char *ms, uint32_t replica,
               const char *node, struct sched_change *ret, struct mesh_err *err)
{
    if (!in || !app || !ms || !node || !ret)
        return mesh_errf(err, MESH_EINVAL, "move: missing argument");
    struct ctx c;
    int rv = ctx_init(&c, in);
    if (rv) {
        ctx_free(&c);
        return mesh_errf(err, rv, "move: %s", mesh_strerror(rv));
    }
    int a = app_find(&c, app), mi = a < 0 ? -1 : ms_find(&c, (size_t)a, ms), ni;
    const struct fsm_placement *rec = NULL;
    const struct ms *m;
    struct verdict v;
    char t[WHY_TEXT_MAX];
    if (a < 0 || mi < 0) {
        rv = mesh_errf(err, MESH_ENOTFOUND, "no microservice %.63s/%.63s", app, ms);
        goto done;
    }
    m = &c.ms[mi];
    if ((ni = node_find(&c, node)) < 0) {
        rv = mesh_errf(err, MESH_ENOTFOUND, "no node %.64s in the mesh", node);
        goto done;
    }
    /* Allocations as the records stand (every placed record of a known microservice). */
    for (size_t i = 0; i < in->nplacements; i++) {
        const struct fsm_placement *p = c.recs[i];
        int pa = app_find(&c, p->app), pm = pa < 0 ? -1 : ms_find(&c, (size_t)pa, p->ms);
        int pn = placed(p) ? node_find(&c, p->node) : -1;
        if (pm >= 0 && pn >= 0 && p->replica < c.ms[pm].replicas)
            alloc(&c, &c.ms[pm], pn, +1);
    }
    if (replica == SCHED_ANY_REPLICA) {
        for (uint32_t r = 0; r < m->replicas && !rec; r++) {
            const struct fsm_placement *p = rec_find(&c, app, ms, r);
            if (p && (!placed(p) || strcmp(p->node, node) != 0))
                rec = p;
        }
        if (!rec) {
            rv = mesh_errf(err, MESH_EEXISTS, "every replica of %.63s/%.63s is on %.64s", app, ms,
                           node);
            goto done;
        }
    } else if (replica >= m->replicas || !(rec = rec_find(&c, app, ms, replica))) {
        rv = mesh_errf(err, MESH_ENOTFOUND, "no replica %u of %.63s/%.63s", replica, app, ms);
        goto done;
    } else if (placed(rec) && strcmp(rec->node, node) == 0) {
        rv = mesh_errf(err, MESH_EEXISTS, "%.63s/%.63s replica %u is on %.64s already", app, ms,
                       replica, node);
        goto done;
    }
    if (m->pin && strcmp(m->pin, node) != 0) {
        rv = mesh_errf(err, MESH_ESTATE, "%.63s/%.63s is pinned to %.64s", app, ms, m->pin);
        goto done;
    }
    if (fit(&c, m, ni, &v) != WHY_OK) {
        verdict_text(&v, false, t, sizeof t);
        rv = mesh_errf(err, MESH_ESTATE, "node %.64s %s", node, t);
        goto done;
    }
    char reason[FSM_REASON_MAX + 1];
    if (placed(rec))
        snprintf(reason, sizeof reason, "moved from %s by request", rec->node);
    else
        snprintf(reason, sizeof reason, "placed by request");
    c.out = ret;
    c.cap = 1;
    emit(&c, SCHED_PLACE, m, app, ms, rec->replica, placed(rec) ? rec->node : "",
         in->nodes[ni].name, reason);
    rv = 0;
done:
    ctx_free(&c);
    return rv;
}

int sched_change_cmd(const struct sched_change *c, struct raft_buffer *out)
{
    if (!c || !out)
        return MESH_EINVAL;
    if (c->op == SCHED_PLACE)
        return fsm_cmd_place(c->app, c->app_mod_rev, c->ms, c->replica, c->to, c->reason, out);
    if (c->op == SCHED_UNPLACE)
        return fsm_cmd_unplace(c->app, c->ms, c->replica, out);
    return MESH_EINVAL;
}
