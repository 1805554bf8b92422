#include "route.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wire.h"

/* ---- the link-state record ---- */

uint64_t route_node_id(const char *name, size_t len)
{
    static const uint8_t key[crypto_shorthash_KEYBYTES] = {0};
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const uint8_t *)name, len, key);
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof h; i++)
        v = (v << 8) | h[i];
    return v;
}

static int nbr_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct route_nbr *)a)->id, y = ((const struct route_nbr *)b)->id;
    return x < y ? -1 : x > y;
}

int route_ls_encode(const struct route_nbr *nbrs, size_t n, uint8_t *buf, size_t cap)
{
    struct route_nbr sorted[ROUTE_NBR_MAX];
    if (n > ROUTE_NBR_MAX || (n && !nbrs))
        return MESH_EINVAL;
    if (n)
        memcpy(sorted, nbrs, n * sizeof *nbrs);
    qsort(sorted, n, sizeof *sorted, nbr_cmp);
    for (size_t i = 1; i < n; i++)
        if (sorted[i].id == sorted[i - 1].id)
            return MESH_EINVAL;
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 2);
    msgpack_pack_uint8(&w.pk, ROUTE_LS_VERSION);
    msgpack_pack_array(&w.pk, (uint32_t)(2 * n));
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_uint64(&w.pk, sorted[i].id);
        msgpack_pack_uint32(&w.pk, sorted[i].rtt_us);
    }
    return w.overflow ? MESH_ETOOBIG : (int)w.len;
}

int route_ls_decode(const uint8_t *buf, size_t len, struct route_nbr ret[ROUTE_NBR_MAX],
                    size_t *ret_n)
{
    struct route_nbr out[ROUTE_NBR_MAX];
    struct wire_rd r;
    uint32_t top, n;
    uint64_t ver, id, rtt;
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &top) || top < 2 || wire_rd_uint(&r, &ver))
        return MESH_EMALFORMED;
    if (ver != ROUTE_LS_VERSION)
        return MESH_EUNSUPPORTED;
    if (wire_rd_array(&r, &n) || n % 2 || n / 2 > ROUTE_NBR_MAX)
        return MESH_EMALFORMED;
    n /= 2;
    for (uint32_t i = 0; i < n; i++) {
        if (wire_rd_uint(&r, &id) || wire_rd_uint(&r, &rtt) || rtt > UINT32_MAX)
            return MESH_EMALFORMED;
        if (i > 0 && id <= out[i - 1].id)
            return MESH_EMALFORMED;
        out[i] = (struct route_nbr){id, (uint32_t)rtt};
    }
    for (uint32_t i = 2; i < top; i++)
        if (wire_rd_skip(&r, 8))
            return MESH_EMALFORMED;
    if (wire_rd_left(&r) != 0)
        return MESH_EMALFORMED;
    if (n)
        memcpy(ret, out, n * sizeof *out);
    *ret_n = n;
    return 0;
}

/* ---- the graph ---- */

struct rnode {
    char name[MESH_NODE_NAME_MAX + 1];
    uint64_t id;
    bool alive;
    size_t nrep;
    struct {
        uint32_t to; /* node index */
        uint32_t rtt_us;
    } rep[ROUTE_NBR_MAX];
};

struct route_graph {
    size_t max, n;
    struct rnode *nodes;
    /* Open addressing on id: slot holds index + 1, 0 is empty. 2 * max slots or more. */
    uint32_t *slots;
    size_t nslots;
};

int route_graph_new(size_t max_nodes, struct route_graph **ret)
{
    if (!max_nodes)
        max_nodes = ROUTE_DEFAULT_MAX_NODES;
    if (max_nodes > UINT32_MAX / 4)
        return MESH_EINVAL;
    struct route_graph *g = calloc(1, sizeof *g);
    if (!g)
        return MESH_ENOMEM;
    g->max = max_nodes;
    g->nslots = 16;
    while (g->nslots < 2 * max_nodes)
        g->nslots *= 2;
    g->nodes = calloc(max_nodes, sizeof *g->nodes);
    g->slots = calloc(g->nslots, sizeof *g->slots);
    if (!g->nodes || !g->slots) {
        route_graph_free(g);
        return MESH_ENOMEM;
    }
    *ret = g;
    return 0;
}

void route_graph_free(struct route_graph *g)
{
    if (!g)
        return;
    free(g->nodes);
    free(g->slots);
    free(g);
}

void route_graph_clear(struct route_graph *g)
{
    g->n = 0;
    memset(g->slots, 0, g->nslots * sizeof *g->slots);
}

size_t route_graph_count(const struct route_graph *g)
{
    return g->n;
}

/* The slot where id is, or the empty one where it would go. */
static size_t slot_of(const struct route_graph *g, uint64_t id)
{
    size_t i = (size_t)(id & (g->nslots - 1));
    while (g->slots[i] && g->nodes[g->slots[i] - 1].id != id)
        i = (i + 1) & (g->nslots - 1);
    return i;
}

static long find_id(const struct route_graph *g, uint64_t id)
{
    size_t s = slot_of(g, id);
    return g->slots[s] ? (long)g->slots[s] - 1 : -1;
}

static long find_name(const struct route_graph *g, const char *name)
{
    if (!name)
        return -1;
    size_t len = strlen(name);
    if (!mesh_node_name_valid(name, len))
        return -1;
    long i = find_id(g, route_node_id(name, len));
    return i >= 0 && strcmp(g->nodes[i].name, name) == 0 ? i : -1;
}

int route_graph_add_node(struct route_graph *g, const char *name, bool alive)
{
    size_t len = name ? strlen(name) : 0;
    if (!mesh_node_name_valid(name, len))
        return MESH_EINVAL;
    uint64_t id = route_node_id(name, len);
    size_t s = slot_of(g, id);
    if (g->slots[s]) {
        struct rnode *x = &g->nodes[g->slots[s] - 1];
        if (strcmp(x->name, name) != 0)
            return MESH_EEXISTS;
        x->alive = alive;
        return 0;
    }
    if (g->n >= g->max)
        return MESH_EFULL;
    struct rnode *x = &g->nodes[g->n];
    memcpy(x->name, name, len + 1);
    x->id = id;
    x->alive = alive;
    x->nrep = 0;
    g->slots[s] = (uint32_t)++g->n;
    return 0;
}

static int add_report(struct rnode *x, uint32_t to, uint32_t rtt_us)
{
    for (size_t i = 0; i < x->nrep; i++) {
        if (x->rep[i].to == to) {
            x->rep[i].rtt_us = rtt_us;
            return 0;
        }
    }
    if (x->nrep >= ROUTE_NBR_MAX)
        return MESH_EFULL;
    x->rep[x->nrep].to = to;
    x->rep[x->nrep].rtt_us = rtt_us;
    x->nrep++;
    return 0;
}

int route_graph_add_edge(struct route_graph *g, const char *from, const char *to, uint32_t rtt_us)
{
    long f = find_name(g, from), t = find_name(g, to);
    if (f < 0 || t < 0)
        return MESH_ENOTFOUND;
    if (f == t)
        return MESH_EINVAL;
    return add_report(&g->nodes[f], (uint32_t)t, rtt_us);
}

int route_graph_set_nbrs(struct route_graph *g, const char *from, const struct route_nbr *nbrs,
                         size_t n)
{
    long f = find_name(g, from);
    if (f < 0)
        return MESH_ENOTFOUND;
    if (n > ROUTE_NBR_MAX)
        return MESH_EINVAL;
    struct rnode *x = &g->nodes[f];
    int skipped = 0;
    x->nrep = 0;
    for (size_t i = 0; i < n; i++) {
        long t = find_id(g, nbrs[i].id);
        if (t < 0 || t == f || add_report(x, (uint32_t)t, nbrs[i].rtt_us) < 0)
            skipped++;
    }
    return skipped;
}

/* ---- routes ---- */

struct route_table {
    size_t n;
    size_t self;
    char (*names)[MESH_NODE_NAME_MAX + 1]; /* sorted */
    struct route_entry *e;
};

void route_table_free(struct route_table *t)
{
    if (!t)
        return;
    free(t->names);
    free(t->e);
    free(t);
}

size_t route_table_count(const struct route_table *t)
{
    return t->n;
}

const struct route_entry *route_table_at(const struct route_table *t, size_t i)
{
    return i < t->n ? &t->e[i] : NULL;
}

const char *route_table_self(const struct route_table *t)
{
    return t->names[t->self];
}

const struct route_entry *route_table_lookup(const struct route_table *t, const char *dest)
{
    size_t lo = 0, hi = t->n;
    if (!dest)
        return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(t->names[mid], dest);
        if (c == 0)
            return &t->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

struct byname {
    const char *name;
    uint32_t idx;
};

static int byname_cmp(const void *a, const void *b)
{
    return strcmp(((const struct byname *)a)->name, ((const struct byname *)b)->name);
}

/* The RTT that u reports for v, or 0 when it does not report v. */
static uint32_t reported(const struct rnode *u, uint32_t v, bool *found)
{
    for (size_t i = 0; i < u->nrep; i++) {
        if (u->rep[i].to == v) {
            *found = true;
            return u->rep[i].rtt_us;
        }
    }
    *found = false;
    return 0;
}

/* A Dijkstra label, compared lexicographically: cost, hops, then the next hop's rank. Extending
 * a path adds to cost and hops and keeps the next hop, which preserves the order, so Dijkstra's
 * greedy choice stays correct with the tie-breaks built in. */
struct label {
    uint64_t cost;
    uint32_t hops;
    uint32_t nh; /* rank of the next hop */
    bool set, done;
};

static bool label_less(const struct label *a, const struct label *b)
{
    if (!b->set)
        return a->set;
    if (!a->set)
        return false;
    if (a->cost != b->cost)
        return a->cost < b->cost;
    if (a->hops != b->hops)
        return a->hops < b->hops;
    return a->nh < b->nh;
}

int route_compute(const struct route_graph *g, const char *self, struct route_table **ret,
                  struct mesh_err *err)
{
    long s = find_name(g, self);
    if (s < 0)
        return mesh_errf(err, MESH_ENOTFOUND, "route: %s is not a node of the graph",
                         self ? self : "(null)");
    size_t n = g->n;
    int rc = MESH_ENOMEM;
    struct route_table *t = calloc(1, sizeof *t);
    struct byname *order = calloc(n, sizeof *order); /* rank -> node index */
    uint32_t *rank = calloc(n, sizeof *rank);        /* node index -> rank */
    struct label *lab = calloc(n, sizeof *lab);      /* by node index */
    if (!t || !order || !rank || !lab)
        goto fail;
    t->names = calloc(n, sizeof *t->names);
    t->e = calloc(n, sizeof *t->e);
    if (!t->names || !t->e)
        goto fail;
    t->n = n;
    for (uint32_t i = 0; i < n; i++)
        order[i] = (struct byname){g->nodes[i].name, i};
    qsort(order, n, sizeof *order, byname_cmp);
    for (uint32_t r = 0; r < n; r++) {
        rank[order[r].idx] = r;
        memcpy(t->names[r], g->nodes[order[r].idx].name, sizeof t->names[r]);
    }
    t->self = rank[s];

    lab[s] = (struct label){.cost = 0, .hops = 0, .nh = rank[s], .set = true};
    for (;;) {
        long u = -1;
        for (size_t i = 0; i < n; i++)
            if (!lab[i].done && lab[i].set && (u < 0 || label_less(&lab[i], &lab[u])))
                u = (long)i;
        if (u < 0)
            break;
        lab[u].done = true;
        const struct rnode *x = &g->nodes[u];
        if (!x->alive && u != s)
            continue; /* a node is always alive to itself */
        for (size_t k = 0; k < x->nrep; k++) {
            uint32_t v = x->rep[k].to;
            const struct rnode *y = &g->nodes[v];
            bool back;
            uint32_t rtt_back = reported(y, (uint32_t)u, &back);
            if ((!y->alive && (long)v != s) || !back || lab[v].done)
                continue;
            uint64_t w = x->rep[k].rtt_us > rtt_back ? x->rep[k].rtt_us : rtt_back;
            if (w == 0)
                w = 1;
            struct label c = {.cost = lab[u].cost + w,
                              .hops = lab[u].hops + 1,
                              .nh = u == s ? rank[v] : lab[u].nh,
                              .set = true};
            if (label_less(&c, &lab[v]))
                lab[v] = c;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        struct route_entry *e = &t->e[rank[i]];
        e->dest = t->names[rank[i]];
        e->reachable = lab[i].set;
        if (!lab[i].set)
            continue;
        e->hops = lab[i].hops;
        e->cost_us = lab[i].cost;
        e->next_hop = (long)i == s ? NULL : t->names[lab[i].nh];
    }
    *ret = t;
    t = NULL;
    rc = 0;
fail:
    route_table_free(t);
    free(order);
    free(rank);
    free(lab);
    if (rc < 0)
        mesh_errf(err, rc, "route: out of memory for %zu nodes", n);
    return rc;
}

int route_pick(const struct route_table *t, const char *const *cands, size_t n, unsigned spread_pct,
               uint64_t spread_us, uint64_t *cursor)
{
    const struct route_entry *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct route_entry *e = route_table_lookup(t, cands[i]);
        if (e && e->reachable && (!best || e->cost_us < best->cost_us))
            best = e;
    }
    if (!best)
        return MESH_ENOTFOUND;
    uint64_t limit = best->cost_us + best->cost_us * spread_pct / 100 + spread_us;
    /* The equally good candidates in name order (a candidate named twice counts once). */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct route_entry *e = route_table_lookup(t, cands[i]);
        if (!e || !e->reachable || e->cost_us > limit)
            continue;
        bool dup = false;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cands[j], cands[i]) == 0)
                dup = true;
        if (!dup)
            k++;
    }
    uint64_t want = cursor ? (*cursor)++ % k : 0;
    /* The want-th smallest name among them: a selection without an allocation. */
    const char *prev = NULL;
    for (;;) {
        long pick = -1;
        for (size_t i = 0; i < n; i++) {
            const struct route_entry *e = route_table_lookup(t, cands[i]);
            if (!e || !e->reachable || e->cost_us > limit)
                continue;
            if (prev && strcmp(cands[i], prev) <= 0)
                continue;
            if (pick < 0 || strcmp(cands[i], cands[pick]) < 0)
                pick = (long)i;
        }
        if (want == 0)
            return (int)pick;
        want--;
        prev = cands[pick];
    }
}
