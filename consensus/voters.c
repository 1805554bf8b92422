/* Automatic voter management; the rules are listed in voters.h. Reasoning behind them:
 *
 * - Majority math (Raft thesis §2.1, §4): with V voters a quorum is floor(V/2) + 1, so the
 *   cluster tolerates V - quorum failures. 2 voters tolerate 0 failures like 1 voter, but stall
 *   when either fails; 4 tolerate 1 like 3. Hence odd counts only, and the largest odd count
 *   the healthy servers allow, up to the target. This is the "never more than the alive nodes,
 *   always odd" of issue 4: with 2 alive servers the goal is 1 voter (the other is a standby
 *   that still receives the log), which stalls on fewer failures than 2 voters would.
 * - A dead voter is in the denominator of every quorum and in none of them; removing it never
 *   raises the quorum size (quorum(V - 1) <= quorum(V)), so it needs no replacement first. The
 *   grace period is what keeps restarts and short partitions from churning the configuration.
 *   Consul autopilot does the same (CleanupDeadServers, after the member is "failed" in Serf).
 * - Every change must be able to commit: canonical/raft uses a new configuration as soon as it
 *   is appended (thesis §4.1), so the change entry needs a majority of the NEW voter set. The
 *   guard (alive voters after the change > half the voters after it) checks exactly that with
 *   gossip's view. Gossip and Raft can disagree for a while; the guard errs towards doing
 *   nothing.
 * - Promotion goes through the catch-up that raft_assign does before it appends the change
 *   (thesis §4.2.1), so a promoted server never holds up commits while it downloads the log.
 * - Deterministic: same inputs, same change, whatever order members come in. */
#include "voters.h"

#include <string.h>

#include "err.h"

/* What the policy knows about one server of the configuration. */
enum health {
    H_ALIVE,      /* alive in gossip (or self) */
    H_SUSPECT,    /* suspect: keeps its vote, not promoted */
    H_DOWN_GRACE, /* dead within the grace, or absent (unknown to gossip) */
    H_DEAD,       /* dead past the grace (or absent with remove_absent): removable */
    H_LEFT,       /* left gracefully: removed at once */
};

struct srv {
    raft_id id;
    int role;
    int health;
    bool stable; /* alive for at least params->stable */
};

static uint64_t elapsed(const struct voters_params *p, uint64_t since)
{
    return p->now > since ? p->now - since : 0;
}

static int state_rank(int state)
{
    switch (state) {
    case VOTERS_ALIVE:
        return 0;
    case VOTERS_SUSPECT:
        return 1;
    case VOTERS_DEAD:
        return 2;
    case VOTERS_LEFT:
        return 3;
    default:
        return 4;
    }
}

/* Which of two members with one raft id speaks for it (voters.h): a total order, so the
 * result does not depend on the order members come in. */
static bool better(const struct voters_member *a, const struct voters_member *b)
{
    if (a->verified != b->verified)
        return a->verified;
    if (state_rank(a->state) != state_rank(b->state))
        return state_rank(a->state) < state_rank(b->state);
    if (a->since != b->since)
        return a->since < b->since;
    const char *x = a->address ? a->address : "", *y = b->address ? b->address : "";
    return strcmp(x, y) < 0;
}

static const struct voters_member *find_member(const struct voters_member *m, size_t n, raft_id id)
{
    const struct voters_member *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (m[i].id == id && (!best || better(&m[i], best)))
            best = &m[i];
    return best;
}

static struct srv classify(const struct raft_server *s, const struct voters_member *members,
                           size_t n, const struct voters_params *p)
{
    struct srv v = {.id = s->id, .role = s->role, .health = H_DOWN_GRACE, .stable = false};
    if (s->id == p->self) {
        v.health = H_ALIVE;
        v.stable = true;
        return v;
    }
    const struct voters_member *m = find_member(members, n, s->id);
    if (!m) {
        v.health = p->remove_absent ? H_DEAD : H_DOWN_GRACE;
        return v;
    }
    switch (m->state) {
    case VOTERS_ALIVE:
        v.health = H_ALIVE;
        v.stable = elapsed(p, m->since) >= p->stable;
        break;
    case VOTERS_SUSPECT:
        v.health = H_SUSPECT;
        break;
    case VOTERS_DEAD:
        v.health = elapsed(p, m->since) >= p->dead_grace ? H_DEAD : H_DOWN_GRACE;
        break;
    case VOTERS_LEFT:
        v.health = H_LEFT;
        break;
    default: /* an unknown state is treated as the least certain one */
        v.health = H_DOWN_GRACE;
        break;
    }
    return v;
}

unsigned voters_goal(unsigned target, unsigned available)
{
    unsigned g = target < available ? target : available;
    if (g % 2 == 0)
        g = g ? g - 1 : 0;
    return g ? g : 1;
}

/* Counts over the configuration. */
struct tally {
    unsigned voters;  /* all voters */
    unsigned healthy; /* voters alive in gossip, self included */
    unsigned keep;    /* voters that are not removable: alive, suspect, down within grace */
    unsigned cands;   /* promotable non-voters */
};

/* The guard: after a change that leaves dv/dh voters/healthy voters added (+1), removed (-1)
 * or unchanged (0), the healthy voters are a strict majority of the voters. */
static bool guard(const struct tally *t, int dv, int dh)
{
    long v = (long)t->voters + dv;
    long h = (long)t->healthy + dh;
    return v >= 1 && 2 * h > v;
}

static bool promotable(const struct srv *s)
{
    return s->role != RAFT_VOTER && s->health == H_ALIVE && s->stable;
}

/* Rank of a voter for demotion: lower goes first. */
static int demote_rank(const struct srv *s)
{
    switch (s->health) {
    case H_DOWN_GRACE:
        return 0;
    case H_SUSPECT:
        return 1;
    default:
        return 2;
    }
}

static void set(struct voters_change *c, int op, raft_id id, int role, const char *address,
                int reason)
{
    c->op = op;
    c->id = id;
    c->role = role;
    c->address = address;
    c->reason = reason;
}

int voters_step(const struct raft_configuration *conf, const struct voters_member *members,
                size_t n_members, const struct voters_params *p, struct voters_change *ret_change)
{
    if (!conf || !p || !ret_change || (!members && n_members) || p->target == 0 ||
        n_members > VOTERS_MEMBERS_MAX || conf->n > VOTERS_MEMBERS_MAX)
        return MESH_EINVAL;

    struct voters_change c;
    set(&c, VOTERS_OP_NONE, 0, 0, NULL, VOTERS_WHY_NONE);

    const struct raft_server *self = NULL;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == p->self)
            self = &conf->servers[i];
    if (!self || self->role != RAFT_VOTER) {
        *ret_change = c;
        return 0;
    }

    struct tally t = {0};
    for (unsigned i = 0; i < conf->n; i++) {
        struct srv s = classify(&conf->servers[i], members, n_members, p);
        if (s.role == RAFT_VOTER) {
            t.voters++;
            t.healthy += s.health == H_ALIVE;
            t.keep += s.health == H_ALIVE || s.health == H_SUSPECT || s.health == H_DOWN_GRACE;
        } else if (promotable(&s)) {
            t.cands++;
        }
    }
    unsigned goal = voters_goal(p->target, t.keep + t.cands);

    /* Rule 1: left servers, voters first, lowest id first. Rule 2: voters dead past the grace,
     * lowest id first. Rule 7 (dead non-voters) is picked up in the same pass, used last. */
    const struct raft_server *left = NULL, *dead_voter = NULL, *dead_other = NULL;
    bool left_is_voter = false;
    /* Rule 3 and 4 candidates. */
    const struct raft_server *demote = NULL, *promote = NULL, *spare = NULL;
    struct srv demote_s = {0}, promote_s = {0};

    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *rs = &conf->servers[i];
        if (rs->id == p->self)
            continue;
        struct srv s = classify(rs, members, n_members, p);
        bool voter = s.role == RAFT_VOTER;
        if (s.health == H_LEFT) {
            if (!left || (voter && !left_is_voter) ||
                (voter == left_is_voter && rs->id < left->id)) {
                left = rs;
                left_is_voter = voter;
            }
            continue;
        }
        if (s.health == H_DEAD) {
            if (voter && (!dead_voter || rs->id < dead_voter->id))
                dead_voter = rs;
            if (!voter && (!dead_other || rs->id < dead_other->id))
                dead_other = rs;
            continue;
        }
        if (voter) {
            /* Rule 3: lowest demote_rank, then the highest id. */
            int r = demote_rank(&s);
            int dr = demote ? demote_rank(&demote_s) : 0;
            if (!demote || r < dr || (r == dr && rs->id > demote->id)) {
                demote = rs;
                demote_s = s;
            }
        } else if (promotable(&s)) {
            /* Rule 4: standbys before spares, then the lowest id. */
            bool sb = s.role == RAFT_STANDBY, psb = promote && promote_s.role == RAFT_STANDBY;
            if (!promote || (sb && !psb) || (sb == psb && rs->id < promote->id)) {
                promote = rs;
                promote_s = s;
            }
        }
        if (s.role == RAFT_SPARE && s.health == H_ALIVE && (!spare || rs->id < spare->id))
            spare = rs;
    }

    if (left && guard(&t, left_is_voter ? -1 : 0, 0)) {
        set(&c, VOTERS_OP_REMOVE, left->id, 0, NULL, VOTERS_WHY_LEFT);
        goto out;
    }
    if (dead_voter && guard(&t, -1, 0)) {
        set(&c, VOTERS_OP_REMOVE, dead_voter->id, 0, NULL, VOTERS_WHY_DEAD_VOTER);
        goto out;
    }
    if (t.voters > goal && demote && guard(&t, -1, demote_s.health == H_ALIVE ? -1 : 0)) {
        set(&c, VOTERS_OP_ASSIGN, demote->id, RAFT_STANDBY, NULL, VOTERS_WHY_EXCESS);
        goto out;
    }
    if (t.voters < goal && promote && guard(&t, 1, 1)) {
        set(&c, VOTERS_OP_ASSIGN, promote->id, RAFT_VOTER, NULL, VOTERS_WHY_BELOW_TARGET);
        goto out;
    }
    /* Rule 5: the lowest-id alive member not in the configuration. */
    const struct voters_member *fresh = NULL;
    for (size_t i = 0; i < n_members; i++) {
        const struct voters_member *m = &members[i];
        if (m->state != VOTERS_ALIVE || !m->verified || !m->address || m->id == 0 ||
            find_member(members, n_members, m->id) != m)
            continue;
        bool in_conf = false;
        for (unsigned j = 0; j < conf->n && !in_conf; j++)
            in_conf = conf->servers[j].id == m->id;
        if (!in_conf && (!fresh || m->id < fresh->id))
            fresh = m;
    }
    if (fresh) {
        set(&c, VOTERS_OP_ADD, fresh->id, RAFT_SPARE, fresh->address, VOTERS_WHY_NEW_MEMBER);
        goto out;
    }
    if (spare) {
        set(&c, VOTERS_OP_ASSIGN, spare->id, RAFT_STANDBY, NULL, VOTERS_WHY_CATCH_UP);
        goto out;
    }
    if (dead_other) {
        set(&c, VOTERS_OP_REMOVE, dead_other->id, 0, NULL, VOTERS_WHY_DEAD_OTHER);
        goto out;
    }

out:
    *ret_change = c;
    return 0;
}

const char *voters_reason_str(int reason)
{
    switch (reason) {
    case VOTERS_WHY_NONE:
        return "none";
    case VOTERS_WHY_LEFT:
        return "left";
    case VOTERS_WHY_DEAD_VOTER:
        return "dead voter";
    case VOTERS_WHY_EXCESS:
        return "too many voters";
    case VOTERS_WHY_BELOW_TARGET:
        return "too few voters";
    case VOTERS_WHY_NEW_MEMBER:
        return "new member";
    case VOTERS_WHY_CATCH_UP:
        return "spare to standby";
    case VOTERS_WHY_DEAD_OTHER:
        return "dead non-voter";
    default:
        return "?";
    }
}
