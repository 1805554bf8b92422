#include "neighbours.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One tracked member. A slot whose member went away while its ping was in flight is not reused
 * until the ping's answer has come (`inflight` with `used` false). */
struct nbr {
    char name[MESH_NODE_NAME_MAX + 1];
    struct mesh_addr addr;
    uint64_t gen; /* sent with the ping and echoed: the reply must carry it back */
    uint64_t sent_us;
    uint32_t rtt_us; /* smoothed; 0 until the first reply */
    unsigned fails;
    bool up;
    bool inflight;
    bool used;
};

/* io->ping's cookie, one per slot. */
struct ping_ctx {
    struct nbrs *nb;
    size_t slot;
};

struct nbrs {
    char name[MESH_NODE_NAME_MAX + 1];
    struct nbrs_io io;
    struct nbr nbrs[NBRS_TRACK_MAX];
    struct ping_ctx pctx[NBRS_TRACK_MAX];
    uint64_t next_gen;
    struct route_graph *graph;
    struct route_table *table;
    /* what was last advertised */
    struct route_nbr adv[NBRS_ADVERTISE_MAX];
    size_t nadv;
    uint64_t adv_at_us;
    bool advertised; /* adv_at_us is set */
};

int nbrs_new(const struct nbrs_config *cfg, const struct nbrs_io *io, struct nbrs **ret)
{
    if (!cfg->name || !cfg->name[0] || strlen(cfg->name) > MESH_NODE_NAME_MAX ||
        !io->member_count || !io->member_at || !io->member_find || !io->member_ls || !io->ping ||
        !io->publish)
        return MESH_EINVAL;
    struct nbrs *nb = calloc(1, sizeof *nb);
    if (!nb)
        return MESH_ENOMEM;
    snprintf(nb->name, sizeof nb->name, "%s", cfg->name);
    nb->io = *io;
    if (route_graph_new(cfg->max_nodes, &nb->graph) < 0) {
        free(nb);
        return MESH_ENOMEM;
    }
    *ret = nb;
    return 0;
}

void nbrs_free(struct nbrs *nb)
{
    if (!nb)
        return;
    route_table_free(nb->table);
    route_graph_free(nb->graph);
    free(nb);
}

const struct route_table *nbrs_table(const struct nbrs *nb)
{
    return nb->table;
}

bool nbrs_at(const struct nbrs *nb, size_t i, struct nbrs_info *ret)
{
    if (i >= NBRS_TRACK_MAX || !nb->nbrs[i].used)
        return false;
    const struct nbr *b = &nb->nbrs[i];
    *ret = (struct nbrs_info){b->name, b->addr, b->up, b->rtt_us};
    return true;
}

static struct nbr *nbr_find(struct nbrs *nb, const char *name)
{
    for (size_t i = 0; i < NBRS_TRACK_MAX; i++)
        if (nb->nbrs[i].used && strcmp(nb->nbrs[i].name, name) == 0)
            return &nb->nbrs[i];
    return NULL;
}

static bool member_by_name(struct nbrs *nb, const char *name, struct nbrs_member *ret)
{
    return nb->io.member_find(nb->io.data, name, ret);
}

/* ---- advertising ------------------------------------------------------------------------- */

static int cmp_adv(const void *a, const void *b)
{
    const struct route_nbr *x = a, *y = b;
    return x->rtt_us < y->rtt_us ? -1 : x->rtt_us > y->rtt_us;
}

/* Advertises the nearest neighbours that are up, when that changed enough. */
static void advertise(struct nbrs *nb, uint64_t now_us)
{
    struct route_nbr up[NBRS_TRACK_MAX];
    size_t nup = 0;
    for (size_t i = 0; i < NBRS_TRACK_MAX; i++) {
        const struct nbr *b = &nb->nbrs[i];
        if (b->used && b->up)
            up[nup++] = (struct route_nbr){route_node_id(b->name, strlen(b->name)), b->rtt_us};
    }
    qsort(up, nup, sizeof up[0], cmp_adv);
    if (nup > NBRS_ADVERTISE_MAX)
        nup = NBRS_ADVERTISE_MAX;
    /* Changed? The same ids (in any order) and every RTT within half of the advertised one. */
    bool same = nup == nb->nadv;
    for (size_t i = 0; same && i < nup; i++) {
        size_t k = 0;
        while (k < nb->nadv && nb->adv[k].id != up[i].id)
            k++;
        if (k == nb->nadv) {
            same = false;
            break;
        }
        uint32_t a = nb->adv[k].rtt_us, b = up[i].rtt_us;
        uint32_t diff = a > b ? a - b : b - a;
        if (diff > a / 2 && diff > 200)
            same = false;
    }
    if (same && nb->advertised && now_us - nb->adv_at_us < (uint64_t)NBRS_REPUBLISH_MS * 1000)
        return;
    if (same && nup == 0)
        return;
    /* As many as the io takes, nearest first. */
    uint8_t ls[ROUTE_LS_MAX];
    for (size_t k = nup;; k--) {
        int len = route_ls_encode(up, k, ls, sizeof ls);
        if (len >= 0 && nb->io.publish(nb->io.data, ls, (size_t)len) == 0)
            break;
        if (k == 0) {
            nb->io.publish(nb->io.data, NULL, 0);
            break;
        }
    }
    /* Remember what was wanted (all nup), so that a list trimmed to fit does not look changed
     * at every tick. */
    memcpy(nb->adv, up, nup * sizeof up[0]);
    nb->nadv = nup;
    nb->adv_at_us = now_us;
    nb->advertised = true;
}

/* ---- probing ----------------------------------------------------------------------------- */

void nbrs_pong(void *cookie, int rc, const uint8_t *reply, size_t len, uint64_t now_us)
{
    struct ping_ctx *c = cookie;
    struct nbrs *nb = c->nb;
    struct nbr *b = &nb->nbrs[c->slot];
    b->inflight = false;
    if (!b->used)
        return; /* the member went away meanwhile: the slot is free now */
    if (rc == 0 && len == sizeof b->gen && memcmp(reply, &b->gen, sizeof b->gen) == 0) {
        uint64_t rtt = now_us - b->sent_us;
        if (rtt == 0)
            rtt = 1;
        if (rtt > UINT32_MAX)
            rtt = UINT32_MAX;
        b->rtt_us = b->rtt_us ? (uint32_t)((3 * (uint64_t)b->rtt_us + rtt) / 4) : (uint32_t)rtt;
        b->fails = 0;
        if (!b->up) {
            b->up = true;
            if (nb->io.link)
                nb->io.link(nb->io.data, b->name, &b->addr, true, b->rtt_us);
            /* Tell the others at once, not at the next tick: our own table changes now, and
             * while theirs still has the old link, a relay may hand a tunnel back to us. */
            advertise(nb, now_us);
            nbrs_recompute(nb); /* a new link is usable at once, not at the next tick */
        }
    } else if (++b->fails >= NBRS_FAILS_DOWN && b->up) {
        b->up = false;
        /* The io drops the link (a black hole): traffic for it dials afresh. */
        if (nb->io.link)
            nb->io.link(nb->io.data, b->name, &b->addr, false, b->rtt_us);
        advertise(nb, now_us); /* at once, as above */
        nbrs_recompute(nb);
    }
}

/* The members to ping: every alive or suspect one while they fit in NBRS_TRACK_MAX; in a larger
 * mesh, the ones already tracked stay and free slots go to members not tracked yet, in
 * membership order. */
static void track_members(struct nbrs *nb)
{
    struct nbrs_member m;
    /* Forget members that are gone, dead or moved. */
    for (size_t i = 0; i < NBRS_TRACK_MAX; i++) {
        struct nbr *b = &nb->nbrs[i];
        if (!b->used)
            continue;
        if (!member_by_name(nb, b->name, &m) || !m.alive || !mesh_addr_equal(&m.addr, &b->addr))
            b->used = false; /* reusable once no ping is in flight */
    }
    size_t count = nb->io.member_count(nb->io.data);
    for (size_t i = 0; i < count; i++) {
        nb->io.member_at(nb->io.data, i, &m);
        if (strcmp(m.name, nb->name) == 0 || !m.alive || nbr_find(nb, m.name))
            continue;
        size_t k = 0;
        while (k < NBRS_TRACK_MAX && (nb->nbrs[k].used || nb->nbrs[k].inflight))
            k++;
        if (k == NBRS_TRACK_MAX)
            break;
        struct nbr *b = &nb->nbrs[k];
        memset(b, 0, sizeof *b);
        b->used = true;
        snprintf(b->name, sizeof b->name, "%s", m.name);
        b->addr = m.addr;
    }
}

void nbrs_tick(struct nbrs *nb, uint64_t now_us)
{
    track_members(nb);
    for (size_t i = 0; i < NBRS_TRACK_MAX; i++) {
        struct nbr *b = &nb->nbrs[i];
        if (!b->used || b->inflight)
            continue;
        nb->pctx[i] = (struct ping_ctx){nb, i};
        b->gen = ++nb->next_gen;
        b->sent_us = now_us;
        uint8_t ping[NBRS_PING_LEN];
        memcpy(ping, &b->gen, sizeof ping);
        b->inflight = true;
        if (nb->io.ping(nb->io.data, &b->addr, ping, sizeof ping, NBRS_PING_TIMEOUT_MS,
                        &nb->pctx[i]) < 0)
            /* Refused at once (no route to the host, tables full): a failed ping too. */
            nbrs_pong(&nb->pctx[i], MESH_EIO, NULL, 0, now_us);
    }
    advertise(nb, now_us);
}

/* ---- routes ------------------------------------------------------------------------------ */

void nbrs_recompute(struct nbrs *nb)
{
    struct nbrs_member m;
    size_t count = nb->io.member_count(nb->io.data);
    route_graph_clear(nb->graph);
    for (size_t i = 0; i < count; i++) {
        nb->io.member_at(nb->io.data, i, &m);
        route_graph_add_node(nb->graph, m.name, m.alive);
    }
    for (size_t i = 0; i < count; i++) {
        struct route_nbr rn[ROUTE_NBR_MAX];
        size_t nn = 0;
        nb->io.member_at(nb->io.data, i, &m);
        if (strcmp(m.name, nb->name) == 0) {
            /* Our own view, fresher than what we last gossiped. */
            for (size_t k = 0; k < NBRS_TRACK_MAX && nn < ROUTE_NBR_MAX; k++) {
                const struct nbr *b = &nb->nbrs[k];
                if (b->used && b->up)
                    rn[nn++] =
                        (struct route_nbr){route_node_id(b->name, strlen(b->name)), b->rtt_us};
            }
            route_graph_set_nbrs(nb->graph, m.name, rn, nn);
            continue;
        }
        const uint8_t *ls;
        int len = nb->io.member_ls(nb->io.data, i, &ls);
        if (len <= 0 || route_ls_decode(ls, (size_t)len, rn, &nn) < 0)
            continue;
        route_graph_set_nbrs(nb->graph, m.name, rn, nn);
    }
    struct route_table *t = NULL;
    struct mesh_err err = {0};
    if (route_compute(nb->graph, nb->name, &t, &err) == 0) {
        route_table_free(nb->table);
        nb->table = t;
    }
}

/* The address of the route's next hop towards the member named dest. */
static int route_hop(struct nbrs *nb, const char *dest, struct mesh_addr *ret)
{
    const struct route_entry *e = nb->table ? route_table_lookup(nb->table, dest) : NULL;
    struct nbrs_member hop;
    if (!e || !e->next_hop || !member_by_name(nb, e->next_hop, &hop))
        return MESH_ENOTFOUND;
    *ret = hop.addr;
    return 0;
}

int nbrs_next_hop(struct nbrs *nb, const struct mesh_addr *dest, struct mesh_addr *ret_hop)
{
    if (!nb->table)
        return MESH_ENOTFOUND;
    struct nbrs_member to;
    size_t count = nb->io.member_count(nb->io.data);
    size_t i = 0;
    for (; i < count; i++) {
        nb->io.member_at(nb->io.data, i, &to);
        if (mesh_addr_equal(&to.addr, dest))
            break;
    }
    if (i == count)
        return MESH_ENOTFOUND;
    const struct nbr *b = nbr_find(nb, to.name);
    if (b && b->up) {
        *ret_hop = to.addr;
        return 0;
    }
    return route_hop(nb, to.name, ret_hop);
}

int nbrs_relay_hop(struct nbrs *nb, const char *dest, const struct mesh_addr *from,
                   struct mesh_addr *ret_hop)
{
    struct mesh_addr to;
    if (route_hop(nb, dest, &to) < 0)
        return MESH_ENOTFOUND;
    if (mesh_addr_equal(&to, from)) {
        /* Our route leads back to the hop that sent it, whose route leads here: the
         * destination itself, when it answers us directly, cannot send it back. */
        struct nbrs_member m;
        if (!member_by_name(nb, dest, &m) || nbrs_next_hop(nb, &m.addr, &to) < 0 ||
            mesh_addr_equal(&to, from))
            return MESH_EAGAIN;
    }
    *ret_hop = to;
    return 0;
}
