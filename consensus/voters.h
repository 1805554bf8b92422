/* Automatic voter management ("autopilot"): which one configuration change the leader should
 * make next, as a pure function of the Raft configuration, gossip's view of the members and
 * the time. No I/O, no allocation, no state between calls: the leader calls voters_step() on a
 * timer and whenever membership changes, applies the change it returns (raft_add, raft_assign,
 * raft_remove), waits for that change's callback, and calls again.
 *
 * One change at a time because canonical/raft, like the Raft thesis (Ongaro 2014, §4.1), only
 * supports single-server changes and refuses a new one while the last is uncommitted
 * (RAFT_CANTCHANGE); with one server added or removed at a time any majority of the old
 * configuration overlaps any majority of the new one, so no joint consensus is needed.
 *
 * The rules (voters.c has the reasoning):
 *  T  The goal is V* voters: the largest odd number <= min(target, K + C), at least 1, where K
 *     is the number of voters not yet removable (alive, suspect, dead within the grace period)
 *     and C the number of promotable non-voters (alive in gossip for `stable` ms: Consul
 *     autopilot's ServerStabilizationTime). Odd, because an even voter count needs as large a
 *     majority as the next odd one and tolerates no more failures (thesis §2.1 / §4, etcd FAQ).
 *  G  Guard on every change: after it, the voters that gossip reports alive must still be a
 *     strict majority of the voters, so the change itself can commit and the cluster keeps a
 *     working quorum. A change that fails the guard is not proposed; the next rule is tried.
 *  1  A server that LEFT gracefully is removed at once (as Consul and Nomad do on leave).
 *  2  A voter DEAD for at least `dead_grace` is removed (Consul autopilot's
 *     CleanupDeadServers). A dead voter adds to the quorum size and never to a quorum, so
 *     removing it never lowers fault tolerance; a replacement is promoted by rule 4. Within the
 *     grace period a dead or suspect voter keeps its vote: short outages and restarts do not
 *     churn the configuration.
 *  3  More voters than V* (an even count with nobody to promote, a lower target, voters that
 *     went away): demote one voter to standby: an unhealthy one (dead within grace, then
 *     suspect) before a healthy one, then the highest id.
 *  4  Fewer voters than V*: promote one candidate: standbys before spares, then the lowest id.
 *     canonical/raft's raft_assign(RAFT_VOTER) first catches the server's log up and only then
 *     appends the configuration change (thesis §4.2.1, "catching up new servers"). From an odd
 *     count V* is at least two more, so the even count in between is transient.
 *  5  An alive member that is not in the configuration is added (raft_add makes it a spare),
 *     only a verified one (`verified`: a link proved that its id is its key's): gossip alone
 *     can make up members by the hundred (issue 10).
 *  6  An alive spare is made a standby (RAFT_STANDBY), so that it receives the log.
 *  7  A standby or spare dead for at least `dead_grace` is removed (it would come back through
 *     rule 5 as a new member).
 *  The leader (`self`) is never demoted or removed by the policy: a leader that leaves
 *  transfers leadership first (raft_transfer), and the next leader removes it by rule 1.
 *  Servers absent from `members` are left alone (gossip may not know them yet after a restart)
 *  unless `remove_absent` is set, then they count as dead for longer than the grace period.
 *  Ties are broken by raft id, so every leader makes the same choice.
 *  Members sharing a raft id (a member reusing a real node's id, or two ids whose first 8
 *  bytes agree) count as one: the verified one, else the healthiest (alive, suspect, dead,
 *  left), then the earliest `since`, then the lowest address. So a made-up member can neither
 *  stop the policy nor speak for a verified server; among unverified ones it can at most keep
 *  a server looking alive, which errs towards doing nothing.
 *
 * Run the leader with pre-vote on (raft_set_pre_vote; thesis §9.6): a removed or demoted server
 * that was down when the change committed still believes it is a voter, and pre-vote keeps its
 * elections from disrupting the cluster (thesis §4.2.3).
 *
 * Residual risk: between the two promotions of a 1 -> 3 (or 3 -> 5) step the voter count is
 * even; if the server just promoted dies in that window before the next change commits, the
 * cluster has lost its quorum (1 of 2) and needs the server back or `meshctl raft recover`. */
#ifndef FOGMESH_CONSENSUS_VOTERS_H
#define FOGMESH_CONSENSUS_VOTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>

#define VOTERS_DEFAULT_TARGET     5
#define VOTERS_DEFAULT_DEAD_GRACE 30000 /* ms */
#define VOTERS_DEFAULT_STABLE     10000 /* ms; Consul's ServerStabilizationTime default */
#define VOTERS_MEMBERS_MAX        4096  /* members and configuration servers per call */

/* A member's state as gossip (SWIM) reports it. */
enum voters_state {
    VOTERS_ALIVE = 1,
    VOTERS_SUSPECT,
    VOTERS_DEAD,
    VOTERS_LEFT,
};

/* One member from gossip. id is its raft id (how meshd maps node ids to raft ids is its
 * business); address is borrowed and only copied into a returned change. */
struct voters_member {
    raft_id id;
    const char *address;
    int state;      /* enum voters_state */
    uint64_t since; /* ms, on the same clock as params.now: when it entered `state` */
    bool verified;  /* a link proved the member's id (swim_member.verified) */
};

struct voters_params {
    raft_id self;        /* the leader running the policy */
    unsigned target;     /* --raft-voters; an even target means target - 1; 0 is invalid */
    uint64_t dead_grace; /* ms a voter may be dead before it is removed */
    uint64_t stable;     /* ms a member must be alive before it is promoted */
    uint64_t now;        /* ms */
    bool remove_absent;  /* servers unknown to gossip count as dead past the grace */
};

enum voters_op {
    VOTERS_OP_NONE = 0, /* converged (or nothing safe to do now) */
    VOTERS_OP_ADD,      /* raft_add(id, address): joins as RAFT_SPARE */
    VOTERS_OP_ASSIGN,   /* raft_assign(id, role) */
    VOTERS_OP_REMOVE,   /* raft_remove(id) */
};

enum voters_reason {
    VOTERS_WHY_NONE = 0,
    VOTERS_WHY_LEFT,         /* rule 1 */
    VOTERS_WHY_DEAD_VOTER,   /* rule 2 */
    VOTERS_WHY_EXCESS,       /* rule 3 */
    VOTERS_WHY_BELOW_TARGET, /* rule 4 */
    VOTERS_WHY_NEW_MEMBER,   /* rule 5 */
    VOTERS_WHY_CATCH_UP,     /* rule 6 */
    VOTERS_WHY_DEAD_OTHER,   /* rule 7 */
};

struct voters_change {
    int op;              /* enum voters_op */
    raft_id id;          /* the server */
    int role;            /* VOTERS_OP_ASSIGN: RAFT_VOTER, RAFT_STANDBY or RAFT_SPARE */
    const char *address; /* VOTERS_OP_ADD: borrowed from the member; else NULL */
    int reason;          /* enum voters_reason */
};

/* Computes the next change. conf and members are borrowed; members may be in any order, may
 * share ids (see above), and may include nodes not in conf (and miss some that are). Returns 0
 * and *ret_change (op VOTERS_OP_NONE when there is nothing to do, also when self is not a voter
 * in conf: then this node is not the leader of this configuration), or MESH_EINVAL (target 0,
 * more than VOTERS_MEMBERS_MAX entries) leaving *ret_change untouched.
 * Cost: O(conf * members + members^2) comparisons. */
int voters_step(const struct raft_configuration *conf, const struct voters_member *members,
                size_t n_members, const struct voters_params *params,
                struct voters_change *ret_change);

/* The largest odd number <= min(target, available), at least 1. */
unsigned voters_goal(unsigned target, unsigned available);

/* "left", "dead voter", ... for logs. Never NULL. */
const char *voters_reason_str(int reason);

#endif
