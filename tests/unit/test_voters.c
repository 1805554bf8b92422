/* The automatic voter policy (consensus/voters.h): one table of scenarios, each a configuration,
 * gossip's view and the expected next change; then simulations that apply the policy step by
 * step to a model cluster until it converges, checking the guard on every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>

#include "err.h"
#include "voters.h"

#define MAXN 16

/* Roles and states spelled short for the table. */
#define V       RAFT_VOTER
#define S       RAFT_STANDBY
#define SP      RAFT_SPARE
#define ALIVE   VOTERS_ALIVE
#define SUSPECT VOTERS_SUSPECT
#define DEAD    VOTERS_DEAD
#define LEFT    VOTERS_LEFT

#define NOW   1000000u
#define GRACE 30000u
#define STAB  10000u
#define OLD   (NOW - 100000u) /* long enough ago for both grace and stabilisation */

struct srv_row {
    raft_id id;
    int role;
};

struct mem_row {
    raft_id id;
    int state;
    uint64_t since;
};

struct scenario {
    const char *name;
    unsigned target;
    bool remove_absent;
    struct srv_row conf[MAXN];    /* id 0 ends */
    struct mem_row members[MAXN]; /* id 0 ends */
    int op;
    raft_id id;
    int role;
    int reason;
};

static const char *addr_of(raft_id id)
{
    static const char *const a[] = {"n0", "n1", "n2",  "n3",  "n4",  "n5",  "n6",  "n7",
                                    "n8", "n9", "n10", "n11", "n12", "n13", "n14", "n15"};
    return id < 16 ? a[id] : "nx";
}

static void build_conf(const struct srv_row *rows, struct raft_configuration *conf)
{
    raft_configuration_init(conf);
    for (size_t i = 0; i < MAXN && rows[i].id; i++)
        assert_int_equal(
            raft_configuration_add(conf, rows[i].id, addr_of(rows[i].id), rows[i].role), 0);
}

static size_t build_members(const struct mem_row *rows, struct voters_member *m)
{
    size_t n = 0;
    for (; n < MAXN && rows[n].id; n++) {
        m[n].id = rows[n].id;
        m[n].address = addr_of(rows[n].id);
        m[n].state = rows[n].state;
        m[n].since = rows[n].since;
        m[n].verified = true;
    }
    return n;
}

static const struct scenario scenarios[] = {
    {"bootstrap: one node, nothing else",
     5,
     false,
     {{1, V}},
     {{1, ALIVE, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"bootstrap: gossip not yet heard of self",
     5,
     false,
     {{1, V}},
     {{0}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"new members are added, lowest id first",
     5,
     false,
     {{1, V}},
     {{3, ALIVE, NOW}, {1, ALIVE, OLD}, {2, ALIVE, NOW}},
     VOTERS_OP_ADD,
     2,
     SP,
     VOTERS_WHY_NEW_MEMBER},
    {"a suspect new member waits",
     5,
     false,
     {{1, V}},
     {{1, ALIVE, OLD}, {2, SUSPECT, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"an alive spare becomes a standby to catch up",
     5,
     false,
     {{1, V}, {2, SP}},
     {{1, ALIVE, OLD}, {2, ALIVE, NOW}},
     VOTERS_OP_ASSIGN,
     2,
     S,
     VOTERS_WHY_CATCH_UP},
    {"1 -> 3: one stable standby is not enough (no 2 voters)",
     5,
     false,
     {{1, V}, {2, S}, {3, S}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, NOW}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"1 -> 3: two stable standbys, promote the lowest",
     5,
     false,
     {{1, V}, {3, S}, {2, S}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     2,
     V,
     VOTERS_WHY_BELOW_TARGET},
    {"2 voters: finish the pair",
     5,
     false,
     {{1, V}, {2, V}, {3, S}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     3,
     V,
     VOTERS_WHY_BELOW_TARGET},
    {"standby preferred over a spare",
     5,
     false,
     {{1, V}, {2, V}, {3, SP}, {4, S}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, OLD}, {4, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     4,
     V,
     VOTERS_WHY_BELOW_TARGET},
    {"3 -> 5",
     5,
     false,
     {{1, V}, {2, V}, {3, V}, {4, S}, {5, S}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, OLD}, {4, ALIVE, OLD}, {5, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     4,
     V,
     VOTERS_WHY_BELOW_TARGET},
    {"5 voters at target 5: a sixth stays standby",
     5,
     false,
     {{1, V}, {2, V}, {3, V}, {4, V}, {5, V}, {6, S}},
     {{1, ALIVE, OLD},
      {2, ALIVE, OLD},
      {3, ALIVE, OLD},
      {4, ALIVE, OLD},
      {5, ALIVE, OLD},
      {6, ALIVE, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"2 voters, nobody to promote: back to 1 (even avoided)",
     5,
     false,
     {{1, V}, {2, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     2,
     S,
     VOTERS_WHY_EXCESS},
    {"4 voters, nobody to promote: demote the highest id",
     5,
     false,
     {{1, V}, {2, V}, {3, V}, {4, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, OLD}, {4, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     4,
     S,
     VOTERS_WHY_EXCESS},
    {"4 voters, one suspect: demote the suspect first",
     5,
     false,
     {{1, V}, {2, V}, {3, V}, {4, V}},
     {{1, ALIVE, OLD}, {2, SUSPECT, OLD}, {3, ALIVE, OLD}, {4, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     2,
     S,
     VOTERS_WHY_EXCESS},
    {"dead voter within the grace keeps its vote",
     5,
     false,
     {{1, V}, {2, V}, {3, V}, {4, V}, {5, V}, {6, S}},
     {{1, ALIVE, OLD},
      {2, ALIVE, OLD},
      {3, ALIVE, OLD},
      {4, ALIVE, OLD},
      {5, DEAD, NOW - GRACE + 1},
      {6, ALIVE, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"dead voter past the grace is removed",
     5,
     false,
     {{1, V}, {2, V}, {3, V}, {4, V}, {5, V}, {6, S}},
     {{1, ALIVE, OLD},
      {2, ALIVE, OLD},
      {3, ALIVE, OLD},
      {4, ALIVE, OLD},
      {5, DEAD, NOW - GRACE},
      {6, ALIVE, OLD}},
     VOTERS_OP_REMOVE,
     5,
     0,
     VOTERS_WHY_DEAD_VOTER},
    {"... and the standby replaces it",
     5,
     false,
     {{1, V}, {2, V}, {3, V}, {4, V}, {6, S}},
     {{1, ALIVE, OLD},
      {2, ALIVE, OLD},
      {3, ALIVE, OLD},
      {4, ALIVE, OLD},
      {5, DEAD, OLD},
      {6, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     6,
     V,
     VOTERS_WHY_BELOW_TARGET},
    {"left voter removed at once",
     5,
     false,
     {{1, V}, {2, V}, {3, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, LEFT, NOW}},
     VOTERS_OP_REMOVE,
     3,
     0,
     VOTERS_WHY_LEFT},
    {"left voter goes before a left standby",
     5,
     false,
     {{1, V}, {2, S}, {3, V}, {4, V}},
     {{1, ALIVE, OLD}, {2, LEFT, NOW}, {3, ALIVE, OLD}, {4, LEFT, NOW}},
     VOTERS_OP_REMOVE,
     4,
     0,
     VOTERS_WHY_LEFT},
    {"a leader that left is not removed by itself",
     5,
     false,
     {{1, V}, {2, V}, {3, V}},
     {{1, LEFT, NOW}, {2, ALIVE, OLD}, {3, ALIVE, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"target 3 with 7 nodes: promote up to 3",
     3,
     false,
     {{1, V}, {2, S}, {3, S}, {4, S}, {5, S}, {6, S}, {7, S}},
     {{1, ALIVE, OLD},
      {2, ALIVE, OLD},
      {3, ALIVE, OLD},
      {4, ALIVE, OLD},
      {5, ALIVE, OLD},
      {6, ALIVE, OLD},
      {7, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     2,
     V,
     VOTERS_WHY_BELOW_TARGET},
    {"target 3 with 7 nodes: 3 voters is converged",
     3,
     false,
     {{1, V}, {2, V}, {3, V}, {4, S}, {5, S}, {6, S}, {7, S}},
     {{1, ALIVE, OLD},
      {2, ALIVE, OLD},
      {3, ALIVE, OLD},
      {4, ALIVE, OLD},
      {5, ALIVE, OLD},
      {6, ALIVE, OLD},
      {7, ALIVE, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"target lowered to 3: demote the highest id",
     3,
     false,
     {{1, V}, {2, V}, {3, V}, {4, V}, {5, V}, {6, S}, {7, S}},
     {{1, ALIVE, OLD},
      {2, ALIVE, OLD},
      {3, ALIVE, OLD},
      {4, ALIVE, OLD},
      {5, ALIVE, OLD},
      {6, ALIVE, OLD},
      {7, ALIVE, OLD}},
     VOTERS_OP_ASSIGN,
     5,
     S,
     VOTERS_WHY_EXCESS},
    {"even target 4 means 3",
     4,
     false,
     {{1, V}, {2, V}, {3, V}, {4, S}, {5, S}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, OLD}, {4, ALIVE, OLD}, {5, ALIVE, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"guard: no removal that loses the majority of alive voters",
     5,
     false,
     {{1, V}, {2, V}, {3, V}},
     {{1, ALIVE, OLD}, {2, DEAD, OLD}, {3, DEAD, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"5 voters, 2 dead past grace: remove (tolerance 0 -> 1)",
     5,
     false,
     {{1, V}, {2, V}, {3, V}, {4, V}, {5, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, OLD}, {4, DEAD, OLD}, {5, DEAD, OLD}},
     VOTERS_OP_REMOVE,
     4,
     0,
     VOTERS_WHY_DEAD_VOTER},
    {"absent voter left alone by default",
     5,
     false,
     {{1, V}, {2, V}, {3, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"absent voter removed when asked",
     5,
     true,
     {{1, V}, {2, V}, {3, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}},
     VOTERS_OP_REMOVE,
     3,
     0,
     VOTERS_WHY_DEAD_VOTER},
    {"dead standby past the grace is removed",
     5,
     false,
     {{1, V}, {2, S}},
     {{1, ALIVE, OLD}, {2, DEAD, OLD}},
     VOTERS_OP_REMOVE,
     2,
     0,
     VOTERS_WHY_DEAD_OTHER},
    {"a returning node is added again",
     5,
     false,
     {{1, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, NOW}},
     VOTERS_OP_ADD,
     2,
     SP,
     VOTERS_WHY_NEW_MEMBER},
    {"not a voter: not our business",
     5,
     false,
     {{1, S}, {2, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, ALIVE, OLD}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
    {"a clock that went backwards counts as no time",
     5,
     false,
     {{1, V}, {2, V}, {3, V}},
     {{1, ALIVE, OLD}, {2, ALIVE, OLD}, {3, DEAD, NOW + 5000}},
     VOTERS_OP_NONE,
     0,
     0,
     VOTERS_WHY_NONE},
};

static void run(const struct scenario *sc, struct voters_change *ret)
{
    struct raft_configuration conf;
    struct voters_member m[MAXN];
    build_conf(sc->conf, &conf);
    size_t n = build_members(sc->members, m);
    struct voters_params p = {.self = 1,
                              .target = sc->target,
                              .dead_grace = GRACE,
                              .stable = STAB,
                              .now = NOW,
                              .remove_absent = sc->remove_absent};
    assert_int_equal(voters_step(&conf, m, n, &p, ret), 0);
    /* Same answer with the members in reverse order. */
    struct voters_member r[MAXN];
    for (size_t i = 0; i < n; i++)
        r[i] = m[n - 1 - i];
    struct voters_change again;
    assert_int_equal(voters_step(&conf, r, n, &p, &again), 0);
    assert_int_equal(again.op, ret->op);
    assert_int_equal(again.id, ret->id);
    raft_configuration_close(&conf);
}

static void table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        const struct scenario *sc = &scenarios[i];
        struct voters_change c;
        run(sc, &c);
        if (c.op != sc->op || c.id != sc->id ||
            (sc->op == VOTERS_OP_ASSIGN && c.role != sc->role) || c.reason != sc->reason)
            fail_msg("scenario \"%s\": got op %d id %llu role %d (%s), want op %d id %llu "
                     "role %d (%s)",
                     sc->name, c.op, (unsigned long long)c.id, c.role, voters_reason_str(c.reason),
                     sc->op, (unsigned long long)sc->id, sc->role, voters_reason_str(sc->reason));
        if (c.op == VOTERS_OP_ADD)
            assert_string_equal(c.address, addr_of(c.id));
    }
}

/* Issue 10 item 7a: a member reusing a real server's id used to make voters_step refuse the
 * whole input (duplicate id), so the autopilot stopped for good; and unverified members from
 * gossip were added as servers by the hundred (item 3). */
static void id_collision_and_unverified(void **state)
{
    (void)state;
    struct raft_configuration conf;
    struct srv_row rows[MAXN] = {{1, V}, {2, V}, {3, V}, {4, S}};
    build_conf(rows, &conf);
    struct voters_params p = {
        .self = 1, .target = 3, .dead_grace = GRACE, .stable = STAB, .now = NOW};
    struct voters_change c;
    /* The impostor claims server 2's id and says it left; in either order the verified
     * member speaks for 2. */
    struct voters_member real = {2, "n2", ALIVE, OLD, true};
    struct voters_member fake = {2, "evil", LEFT, OLD, false};
    struct voters_member m3 = {3, "n3", ALIVE, OLD, true}, m4 = {4, "n4", ALIVE, OLD, true};
    struct voters_member a[4] = {fake, real, m3, m4}, b[4] = {real, fake, m3, m4};
    assert_int_equal(voters_step(&conf, a, 4, &p, &c), 0);
    assert_int_equal(c.op, VOTERS_OP_NONE);
    assert_int_equal(voters_step(&conf, b, 4, &p, &c), 0);
    assert_int_equal(c.op, VOTERS_OP_NONE);
    /* And the policy keeps working around it: server 3 dead past the grace is replaced. */
    a[2].state = b[2].state = DEAD;
    assert_int_equal(voters_step(&conf, a, 4, &p, &c), 0);
    assert_int_equal(c.op, VOTERS_OP_REMOVE);
    assert_int_equal(c.id, 3);
    assert_int_equal(voters_step(&conf, b, 4, &p, &c), 0);
    assert_int_equal(c.id, 3);
    /* Unverified members not in the configuration are never added; a verified one is. */
    struct voters_member fresh[5] = {
        real, m3, m4, {7, "n7", ALIVE, OLD, false}, {9, "n9", ALIVE, OLD, false}};
    assert_int_equal(voters_step(&conf, fresh, 5, &p, &c), 0);
    assert_int_equal(c.op, VOTERS_OP_NONE);
    fresh[4].verified = true;
    assert_int_equal(voters_step(&conf, fresh, 5, &p, &c), 0);
    assert_int_equal(c.op, VOTERS_OP_ADD);
    assert_int_equal(c.id, 9);
    /* Two members claiming a new id, neither verified: nothing is added either. */
    struct voters_member twins[5] = {
        real, m3, m4, {8, "n8", ALIVE, OLD, false}, {8, "n8b", ALIVE, OLD, false}};
    assert_int_equal(voters_step(&conf, twins, 5, &p, &c), 0);
    assert_int_equal(c.op, VOTERS_OP_NONE);
    raft_configuration_close(&conf);
}

static void bad_input(void **state)
{
    (void)state;
    struct raft_configuration conf;
    struct srv_row rows[MAXN] = {{1, V}};
    build_conf(rows, &conf);
    struct voters_member m[2] = {{1, "n1", ALIVE, 0, true}, {1, "n1", ALIVE, 0, true}};
    struct voters_params p = {.self = 1, .target = 5, .now = NOW};
    struct voters_change c = {.op = 99};
    p.target = 0;
    assert_int_equal(voters_step(&conf, m, 1, &p, &c), MESH_EINVAL);
    assert_int_equal(c.op, 99); /* untouched */
    p.target = 5;
    assert_int_equal(voters_step(&conf, NULL, 1, &p, &c), MESH_EINVAL);
    assert_int_equal(voters_step(&conf, NULL, 0, &p, &c), 0);
    assert_int_equal(c.op, VOTERS_OP_NONE);
    raft_configuration_close(&conf);

    assert_int_equal(voters_goal(5, 1), 1);
    assert_int_equal(voters_goal(5, 2), 1);
    assert_int_equal(voters_goal(5, 4), 3);
    assert_int_equal(voters_goal(5, 9), 5);
    assert_int_equal(voters_goal(4, 9), 3);
    assert_int_equal(voters_goal(1, 0), 1);
    assert_string_equal(voters_reason_str(VOTERS_WHY_LEFT), "left");
}

/* ---- simulation ---- */

/* A model cluster: which nodes exist, what gossip says about them, and the raft configuration
 * the leader (node 1) has. Changes apply at once (as if each committed before the next step). */
struct model {
    unsigned n; /* nodes 1..n */
    int state[MAXN];
    uint64_t since[MAXN];
    int role[MAXN]; /* -1: not in the configuration */
    uint64_t now;
    unsigned target;
};

static void model_init(struct model *md, unsigned n, unsigned target)
{
    memset(md, 0, sizeof *md);
    md->n = n;
    md->target = target;
    md->now = 1000000;
    for (unsigned i = 1; i <= n; i++) {
        md->state[i] = ALIVE;
        md->since[i] = md->now;
        md->role[i] = -1;
    }
    md->role[1] = V; /* the bootstrap node */
}

static void model_set(struct model *md, unsigned id, int st)
{
    md->state[id] = st;
    md->since[id] = md->now;
}

static unsigned count_role(const struct model *md, int role)
{
    unsigned k = 0;
    for (unsigned i = 1; i <= md->n; i++)
        k += md->role[i] == role;
    return k;
}

/* One policy step; returns false when converged. Checks the guard: after the change, the
 * alive voters are a strict majority of the voters. */
static bool model_step(struct model *md, struct voters_change *ret, unsigned seed)
{
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (unsigned i = 1; i <= md->n; i++)
        if (md->role[i] >= 0)
            assert_int_equal(raft_configuration_add(&conf, i, addr_of(i), md->role[i]), 0);
    struct voters_member m[MAXN];
    size_t k = 0;
    for (unsigned j = 0; j < md->n; j++) {
        unsigned i = 1 + (j + seed) % md->n; /* members in a rotating order */
        m[k++] = (struct voters_member){i, addr_of(i), md->state[i], md->since[i], true};
    }
    struct voters_params p = {
        .self = 1, .target = md->target, .dead_grace = GRACE, .stable = STAB, .now = md->now};
    struct voters_change c;
    assert_int_equal(voters_step(&conf, m, k, &p, &c), 0);
    raft_configuration_close(&conf);
    *ret = c;
    switch (c.op) {
    case VOTERS_OP_NONE:
        return false;
    case VOTERS_OP_ADD:
        assert_int_equal(md->role[c.id], -1);
        md->role[c.id] = SP;
        break;
    case VOTERS_OP_ASSIGN:
        assert_true(md->role[c.id] >= 0);
        assert_int_not_equal(md->role[c.id], c.role);
        md->role[c.id] = c.role;
        break;
    case VOTERS_OP_REMOVE:
        assert_true(md->role[c.id] >= 0);
        md->role[c.id] = -1;
        break;
    default:
        fail();
    }
    unsigned voters = 0, alive = 0;
    for (unsigned i = 1; i <= md->n; i++)
        if (md->role[i] == V) {
            voters++;
            alive += md->state[i] == ALIVE || i == 1;
        }
    assert_true(voters >= 1);
    assert_true(2 * alive > voters);
    return true;
}

/* Steps (1 s apart) until converged; returns the number of changes. */
static unsigned model_converge(struct model *md, unsigned seed)
{
    struct voters_change c;
    unsigned changes = 0;
    while (model_step(md, &c, seed + changes)) {
        changes++;
        md->now += 1000;
        assert_true(changes < 200);
    }
    return changes;
}

/* Lets time pass without changes (stabilisation, grace), stepping as the leader's timer would. */
static void model_wait(struct model *md, uint64_t ms, unsigned seed)
{
    uint64_t end = md->now + ms;
    while (md->now < end) {
        model_converge(md, seed);
        md->now += 1000;
    }
    model_converge(md, seed);
}

static void assert_converged_shape(const struct model *md, unsigned voters)
{
    assert_int_equal(count_role(md, V), voters);
    assert_int_equal(count_role(md, SP), 0);
    assert_int_equal(count_role(md, V) % 2, 1);
    for (unsigned i = 1; i <= md->n; i++) {
        if (md->state[i] == ALIVE)
            assert_true(md->role[i] >= 0); /* every alive node replicates the log */
        if (md->state[i] == LEFT)
            assert_int_equal(md->role[i], -1);
    }
}

static void simulate_growth_and_failures(void **state)
{
    (void)state;
    for (unsigned seed = 0; seed < 4; seed++) {
        struct model md;
        model_init(&md, 7, 5);
        /* Everyone joins at once: added, caught up, then promoted in pairs 1 -> 3 -> 5. */
        model_wait(&md, STAB + 1000, seed);
        assert_converged_shape(&md, 5);
        for (unsigned i = 1; i <= 5; i++)
            assert_int_equal(md.role[i], V); /* lowest ids */
        assert_int_equal(md.role[6], S);
        assert_int_equal(md.role[7], S);

        /* Voter 3 dies: nothing within the grace, then replaced by standby 6. */
        model_set(&md, 3, DEAD);
        model_wait(&md, GRACE - 2000, seed);
        assert_int_equal(md.role[3], V);
        model_wait(&md, 5000, seed);
        assert_int_equal(md.role[3], -1);
        assert_int_equal(md.role[6], V);
        assert_converged_shape(&md, 5);

        /* Voter 2 leaves: removed at once and replaced by 7. */
        model_set(&md, 2, LEFT);
        model_converge(&md, seed);
        assert_int_equal(md.role[2], -1);
        assert_int_equal(md.role[7], V);
        assert_converged_shape(&md, 5);

        /* Two more voters die with nobody left to promote: 5 -> 3 after the grace. */
        model_set(&md, 4, DEAD);
        model_set(&md, 5, DEAD);
        model_wait(&md, GRACE + 1000, seed);
        assert_converged_shape(&md, 3);

        /* They come back: re-added, stabilised, promoted: 5 again. */
        model_set(&md, 3, ALIVE);
        model_set(&md, 4, ALIVE);
        model_set(&md, 5, ALIVE);
        model_wait(&md, STAB + 2000, seed);
        assert_converged_shape(&md, 5);
        assert_int_equal(count_role(&md, S), 1);
    }
}

static void simulate_small_clusters(void **state)
{
    (void)state;
    /* Two nodes: one voter and a standby, never two voters at rest. */
    struct model md;
    model_init(&md, 2, 5);
    model_wait(&md, STAB + 1000, 0);
    assert_converged_shape(&md, 1);
    assert_int_equal(md.role[2], S);

    /* Three nodes, target 5: 3 voters. One dies: 3 -> 1 after the grace (2 voters would stall
     * on either failure), back to 3 when it returns. */
    model_init(&md, 3, 5);
    model_wait(&md, STAB + 1000, 0);
    assert_converged_shape(&md, 3);
    model_set(&md, 3, DEAD);
    model_wait(&md, GRACE + 1000, 0);
    assert_converged_shape(&md, 1);
    assert_int_equal(md.role[2], S);
    model_set(&md, 3, ALIVE);
    model_wait(&md, STAB + 2000, 0);
    assert_converged_shape(&md, 3);

    /* Target 3 with 7 nodes; then the target goes up to 7. */
    model_init(&md, 7, 3);
    model_wait(&md, STAB + 1000, 0);
    assert_converged_shape(&md, 3);
    assert_int_equal(count_role(&md, S), 4);
    md.target = 7;
    model_converge(&md, 0);
    assert_converged_shape(&md, 7);
    md.target = 1;
    model_converge(&md, 0);
    assert_converged_shape(&md, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table),
        cmocka_unit_test(bad_input),
        cmocka_unit_test(id_collision_and_unverified),
        cmocka_unit_test(simulate_growth_and_failures),
        cmocka_unit_test(simulate_small_clusters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
