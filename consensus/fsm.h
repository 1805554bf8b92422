/* clang-format off */
/* The desired-state machine: what the Raft log means.
 *
 * A struct fsm holds the mesh's desired state, replicated by canonical/raft to every node: the
 * applications (name -> canonical JSON spec, produced and validated by spec.c on the node that
 * took the write; opaque bytes here), the placements the leader's scheduler decided (sched.h)
 * and the node cordons. It plugs into raft as a `struct raft_fsm` (version 1: raft frees the
 * snapshot buffers itself, raft.h "version 2" comment), with no I/O and no logging.
 *
 * Commands (the payload of every RAFT_COMMAND entry) are msgpack arrays
 *     [format_version, command_type, args...]
 * with format_version FSM_CMD_FORMAT (1) and, for that format:
 *     PUT_APP     [1, 1, name: str, spec: bin]
 *     DELETE_APP  [1, 2, name: str]
 *     PLACE       [1, 3, app: str, app_mod_rev: uint, ms: str, replica: uint, node: str,
 *                  reason: str]
 *     UNPLACE     [1, 4, app: str, ms: str, replica: uint]
 *     CORDON      [1, 5, node: str, cordoned: bool, drain: bool]
 *     PUT_REC     [1, 6, key: str, value: bin]
 *     DELETE_REC  [1, 7, key: str]
 * A command carries exactly its arguments: a new argument means a new command type (or a new
 * format), never a silently ignored extra element, so every replica decodes an entry the same
 * way. Every encoded command is padded with zeros to a multiple of 8 bytes (raft_uv stores
 * entries in 8-byte units); apply accepts that padding and nothing else after the command.
 *
 * Placements. One record per replica (app, ms, replica) -> node, or "" when pending, with a
 * reason (printable ASCII, at most FSM_REASON_MAX bytes: why it is there, or why it cannot be
 * placed). The machine does not parse specs, so it cannot check a placement against one; it
 * keeps only the invariant that every placement's application exists:
 *   - PLACE names the mod_rev of the application the scheduler saw. When the application is
 *     gone or has changed since (another mod_rev), the PLACE is stale: outcome NOT_FOUND, state
 *     untouched, and the scheduler decides again on the new state. Otherwise CREATED (a new
 *     record, at most FSM_PLACEMENTS_MAX in all), UPDATED (node or reason changed) or
 *     UNCHANGED (same node and reason: no revision bump).
 *   - UNPLACE removes a record: DELETED, or NOT_FOUND.
 *   - DELETE_APP removes the application's placements with it, in the same apply.
 *   - PUT_APP (an update) leaves placements alone: the scheduler removes those of deleted
 *     microservices and scaled-down replicas, and moves those that no longer fit.
 * Cordons. A cordoned node takes no new placements; a drained one (cordoned with drain) also
 * has its placements moved off by the scheduler. CORDON(node, true, drain) sets the record
 * (CREATED, UPDATED when drain changed, UNCHANGED); CORDON(node, false, false) removes it
 * (DELETED, or UNCHANGED when the node was not cordoned); CORDON(node, false, true) is
 * rejected. At most FSM_CORDONS_MAX nodes are cordoned. Node names follow meshd's rule
 * (config_name_valid: 1..64 of [A-Za-z0-9._-], starting with a letter or digit), restated here
 * because consensus/ does not link meshd/.
 * Records. Small keyed values the machine does not interpret (meshd's service declarations:
 * host endpoints and listeners), with the applications' rules: PUT_REC creates (version 1),
 * updates (+1) or leaves UNCHANGED; DELETE_REC removes (DELETED, version it had) or NOT_FOUND.
 * Keys are 1..FSM_REC_KEY_MAX bytes of [A-Za-z0-9._/:@[]-], values 1..FSM_REC_MAX bytes, at most
 * FSM_RECS_MAX records.
 * fsm_result.version is the application's version for PLACE when applied (so a caller can tell
 * which spec the placement was made for), and 0 for UNPLACE and CORDON.
 *
 * A committed entry can never be refused: it is already in every log. So apply never fails on
 * content: a malformed command, one that breaks a bound, or one of an unknown type or format (a
 * newer node wrote it: upgrade this one) is counted in fsm_stats, answered with
 * FSM_OUT_REJECTED / FSM_OUT_UNKNOWN, and skipped identically on every replica. Only running
 * out of memory makes apply return an error (RAFT_NOMEM), which canonical/raft handles by
 * leaving the entry unapplied and trying again later (src/replication.c, replicationApply),
 * so replicas never diverge on a failed malloc.
 *
 * Versions. Every change (create, update, delete) bumps the machine's revision, a counter that
 * is part of the replicated state (like etcd's revision or Consul's ModifyIndex). Each
 * application has
 *   - version: 1 when created, +1 on every update that changes its spec; a PUT of the same
 *     bytes is "unchanged" and bumps nothing. Deleting and creating again starts at 1 again.
 *   - mod_rev: the revision of its last change, unique across delete + re-create, so a watcher
 *     that remembers (name, mod_rev) never mistakes a new application for an old one.
 * Both are deterministic (a counter in the machine, not wall-clock time or the raft index, which
 * canonical/raft 0.15 does not pass to apply).
 *
 * Snapshots are msgpack as well, versioned, and canonical (every list strictly ascending by its
 * key, names compared bytewise, shorter first on a common prefix):
 *     [2, revision, [[name: str, spec: bin, version, mod_rev], ...],
 *                   [[app: str, ms: str, replica: uint, node: str, reason: str], ...],
 *                   [[node: str, drain: bool], ...],
 *                   [[key: str, value: bin, version, mod_rev], ...]]
 * ordered by name; by (app, ms, replica); by node; by key. Format 1, written before placements
 * existed,
 *     [1, revision, [[name: str, spec: bin, version, mod_rev], ...]]
 * and format 2 (the first five elements, before records) are still read; format 3 is always
 * written. A placement whose
 * application is not in the snapshot makes it malformed.
 * Later record kinds come with a new snapshot format; a node refuses a format it does not know
 * (restore fails, raft keeps it on its old state) rather than dropping records it cannot read.
 * Restore decodes with the bounded reader (common/wire.h), checks every bound and the order,
 * builds the new state aside and only then swaps it in: on any error the old state stays.
 *
 * Not thread-safe; one fsm belongs to one raft instance on one loop. No global state. */
/* clang-format on */
#ifndef FOGMESH_CONSENSUS_FSM_H
#define FOGMESH_CONSENSUS_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>

#define FSM_CMD_FORMAT   1
#define FSM_SNAP_FORMAT  3            /* written; formats 1 and 2 are still read */
#define FSM_APPS_MAX     1024         /* applications in the state */
#define FSM_APP_NAME_MAX 63           /* bytes; spec.h's SPEC_NAME_MAX (a DNS label) */
#define FSM_SPEC_MAX     (256 * 1024) /* bytes of one spec; spec.h's SPEC_MAX_ENCODED */
/* Placements in all. The spec bounds allow 1024 apps x 64 microservices x 100 replicas (6.5M
 * records, gigabytes in every replica and every snapshot): far beyond an edge mesh, so the total
 * is bounded instead. 65536 records are at most ~30 MB with the longest strings and a snapshot
 * of a few MB in practice; the scheduler leaves replicas beyond it unrecorded (sched.h). */
#define FSM_PLACEMENTS_MAX 65536
#define FSM_REPLICAS_MAX   100  /* replica indices are 0..FSM_REPLICAS_MAX-1; SPEC_MAX_REPLICAS */
#define FSM_NODE_NAME_MAX  64   /* meshd's CONFIG_NAME_MAX, spec.h's SPEC_NODE_NAME_MAX */
#define FSM_REASON_MAX     255  /* bytes of a placement's reason */
#define FSM_CORDONS_MAX    4096 /* cordoned nodes */
#define FSM_RECS_MAX       4096 /* records (services, listeners, ...) */
#define FSM_REC_KEY_MAX    160  /* bytes of a record key */
#define FSM_REC_MAX        4096 /* bytes of a record value */

enum fsm_cmd_type {
    FSM_CMD_PUT_APP = 1,
    FSM_CMD_DELETE_APP = 2,
    FSM_CMD_PLACE = 3,
    FSM_CMD_UNPLACE = 4,
    FSM_CMD_CORDON = 5,
    FSM_CMD_PUT_REC = 6,
    FSM_CMD_DELETE_REC = 7,
    /* 8.. reserved */
};

/* What applying one command did. */
enum fsm_outcome {
    FSM_OUT_CREATED = 1, /* PUT_APP: new application, version 1; PLACE, CORDON: new record */
    FSM_OUT_UPDATED,     /* PUT_APP: spec replaced, version is the new one; PLACE, CORDON */
    FSM_OUT_UNCHANGED,   /* PUT_APP: same bytes as stored; version is the stored one; PLACE,
                            CORDON: same record (no revision bump) */
    FSM_OUT_DELETED,     /* DELETE_APP: removed; version is the one it had; UNPLACE, CORDON */
    FSM_OUT_NOT_FOUND,   /* DELETE_APP, UNPLACE: no such record; PLACE: stale (see above) */
    FSM_OUT_REJECTED,    /* malformed or out of bounds; err says why; state untouched */
    FSM_OUT_UNKNOWN,     /* unknown format version or command type; skipped */
};

/* The result that apply hands to raft_apply's callback as `void *result`.
 *
 * Ownership: it points INTO the fsm and stays valid only until the next apply, restore or
 * fsm_free on that fsm; copy what you need inside the callback. It is not heap-allocated
 * because canonical/raft 0.15 drops `result` whenever no request is pending for the entry
 * (every follower, and a leader that took over): src/replication.c applyCommand only passes it
 * on when `req != NULL && req->cb != NULL`, so a malloc'ed result would leak on every replica
 * but the one that proposed the entry. In 0.15 the callback runs synchronously right after
 * apply, in the same call, so the pointer is valid there. When the callback's status is not 0,
 * result is not meaningful (raft passes NULL). */
struct fsm_result {
    int outcome;       /* enum fsm_outcome */
    int err;           /* FSM_OUT_REJECTED/UNKNOWN: a MESH_E* code (common/err.h); else 0 */
    uint64_t version;  /* the application's version after the command (see outcome) */
    uint64_t revision; /* the machine's revision after the command */
};

/* Local counters, not replicated and not in snapshots (they describe what this replica saw). */
struct fsm_stats {
    uint64_t applied;  /* commands applied (every outcome but REJECTED/UNKNOWN) */
    uint64_t rejected; /* FSM_OUT_REJECTED */
    uint64_t unknown;  /* FSM_OUT_UNKNOWN: written by a newer node? */
    uint64_t restores; /* successful restores */
};

/* One application as the read API shows it. Pointers are borrowed from the fsm and valid until
 * the next apply, restore or fsm_free. name is NUL-terminated; spec is not. */
struct fsm_app {
    const char *name;
    const uint8_t *spec;
    size_t spec_len;
    uint64_t version;
    uint64_t mod_rev;
};

struct fsm;

/* Creates an empty machine (revision 0, no applications). Returns 0 and *ret_fsm (the caller
 * owns it; fsm_free), or MESH_ENOMEM leaving *ret_fsm untouched. */
int fsm_new(struct fsm **ret_fsm);

/* Frees the machine and everything it holds. Accepts NULL. The raft instance that uses it must
 * be closed first (its close callback has fired). */
void fsm_free(struct fsm *fsm);

/* clang-format off */
/* The struct raft_fsm to give raft_init() (or raft_fixture_grow()). Borrowed: it lives inside
 * the fsm, data points back to it. Its callbacks follow raft.h:
 *   apply:    buf is borrowed; *result as struct fsm_result above; returns 0, or RAFT_NOMEM.
 *   snapshot: *bufs (one raft_buffer) and its base are raft_malloc'ed and owned by raft, which
 *             frees both (fsm version 1); returns 0 or RAFT_NOMEM.
 *   restore:  on success takes ownership of buf->base (frees it with raft_free) and returns 0;
 *             on failure returns RAFT_MALFORMED (or RAFT_NOMEM), keeps the old state and leaves
 *             buf->base to the caller (raft frees it). */
/* clang-format on */
struct raft_fsm *fsm_raft(struct fsm *fsm);

/* ---- commands ---- */

/* clang-format off */
/* One command, decoded. Strings are not NUL-terminated; pointers borrow from the buffer that was
 * decoded (or from the caller, for fsm_cmd_encode). Which fields a type uses:
 *   PUT_APP, PUT_REC        name (the app / the record key), value (spec / record value)
 *   DELETE_APP, DELETE_REC  name
 *   PLACE                   name (app), mod_rev, ms, replica, node ("" pending), reason
 *   UNPLACE                 name (app), ms, replica
 *   CORDON                  name (node), cordoned, drain */
/* clang-format on */
struct fsm_cmd {
    unsigned type; /* enum fsm_cmd_type */
    const char *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
    uint64_t mod_rev;
    const char *ms;
    size_t ms_len;
    uint32_t replica;
    const char *node;
    size_t node_len;
    const char *reason;
    size_t reason_len;
    bool cordoned, drain;
};

/* Decodes one command (buf borrowed; *ret points into it) with exactly the checks apply makes:
 * the format, the argument count, every name rule and bound, and nothing after the command but
 * its zero padding. Apply is this decoder followed by the state change, so a command that
 * decodes is one that apply will not reject for its content (it may still be stale, NOT_FOUND,
 * or find a table full). Returns 0 and *ret, MESH_EMALFORMED (not a command of this format),
 * MESH_EINVAL (a rule broken), MESH_ETOOBIG (a bound) or MESH_EUNSUPPORTED (another format
 * or an unknown type), leaving *ret untouched on error. */
int fsm_cmd_decode(const void *buf, size_t len, struct fsm_cmd *ret);

/* Encodes c canonically (padded to a multiple of 8, as every fsm_cmd_* encoder), after the
 * checks of fsm_cmd_decode. So a leader can re-encode what a follower sent: the log only ever
 * holds commands in the form this node writes. Ownership of *out as fsm_cmd_put_app; returns
 * 0, or MESH_EINVAL / MESH_ETOOBIG / MESH_ENOMEM with *out untouched. */
int fsm_cmd_encode(const struct fsm_cmd *c, struct raft_buffer *out);

/* Encodes PUT_APP(name, spec). name: NUL-terminated, borrowed; spec: len bytes, borrowed.
 * On success returns 0 and fills *out with a buffer allocated with raft_malloc(): hand it to
 * raft_apply(), which takes it on success; on any other path free out->base with raft_free().
 * Returns MESH_EINVAL (bad name, len 0), MESH_ETOOBIG (len > FSM_SPEC_MAX) or MESH_ENOMEM,
 * leaving *out untouched. */
int fsm_cmd_put_app(const char *name, const void *spec, size_t len, struct raft_buffer *out);

/* Encodes DELETE_APP(name); ownership and errors as fsm_cmd_put_app. */
int fsm_cmd_delete_app(const char *name, struct raft_buffer *out);

/* Encodes PLACE(app, app_mod_rev, ms, replica, node, reason): node "" means pending. All strings
 * NUL-terminated and borrowed; reason may be NULL (""). Ownership of *out as fsm_cmd_put_app.
 * Returns MESH_EINVAL (a bad name, replica >= FSM_REPLICAS_MAX, a reason longer than
 * FSM_REASON_MAX or with bytes outside printable ASCII) or MESH_ENOMEM, *out untouched. */
int fsm_cmd_place(const char *app, uint64_t app_mod_rev, const char *ms, uint32_t replica,
                  const char *node, const char *reason, struct raft_buffer *out);

/* Encodes UNPLACE(app, ms, replica); ownership and errors as fsm_cmd_place. */
int fsm_cmd_unplace(const char *app, const char *ms, uint32_t replica, struct raft_buffer *out);

/* Encodes CORDON(node, cordoned, drain); ownership and errors as fsm_cmd_place (MESH_EINVAL for
 * drain without cordoned). */
int fsm_cmd_cordon(const char *node, bool cordoned, bool drain, struct raft_buffer *out);
/* PUT_REC / DELETE_REC (see Records above); MESH_EINVAL for a bad key or an empty value,
 * MESH_ETOOBIG beyond FSM_REC_MAX. */
int fsm_cmd_put_rec(const char *key, const void *value, size_t len, struct raft_buffer *out);
int fsm_cmd_delete_rec(const char *key, struct raft_buffer *out);
bool fsm_rec_key_valid(const char *key, size_t len);

/* Whether name is a node name the machine accepts (meshd's rule, above). */
bool fsm_node_name_valid(const char *name, size_t len);

/* Whether name is acceptable to the machine: 1..FSM_APP_NAME_MAX bytes of letters, digits,
 * '-', '_' and '.'. (spec.c applies the stricter DNS-label rule before a name gets here; the
 * machine still checks, since a committed entry may come from any node.) */
bool fsm_app_name_valid(const char *name, size_t len);

/* ---- applying and snapshots without raft (tests, tools, the fuzzer) ---- */

/* Applies one encoded command (borrowed) exactly as raft would. On 0, *ret_result (when not
 * NULL) receives a copy of the result. Returns 0 or MESH_ENOMEM (nothing changed). */
int fsm_apply_cmd(struct fsm *fsm, const void *cmd, size_t len, struct fsm_result *ret_result);

/* Encodes the whole state into one buffer allocated with raft_malloc(); the caller owns it
 * (raft_free). Returns 0 or MESH_ENOMEM (out untouched). */
int fsm_snapshot_encode(const struct fsm *fsm, struct raft_buffer *out);

/* Replaces the state with the one encoded in data (len bytes, borrowed; copied). Returns 0,
 * MESH_EMALFORMED (not a snapshot, a bound broken, names out of order or repeated, trailing
 * bytes), MESH_EUNSUPPORTED (a snapshot format this node does not know) or MESH_ENOMEM; on any
 * error the old state is kept untouched. */
int fsm_restore_bytes(struct fsm *fsm, const void *data, size_t len);

/* ---- reading ---- */

/* Looks name up (NUL-terminated, borrowed). On success returns 0 and sets the outputs that are
 * not NULL: *ret_spec (borrowed, valid until the next apply/restore/fsm_free; not
 * NUL-terminated), *ret_len and *ret_version. Returns MESH_ENOTFOUND leaving them untouched. */
int fsm_app_get(const struct fsm *fsm, const char *name, const uint8_t **ret_spec, size_t *ret_len,
                uint64_t *ret_version);

/* Looks name up as fsm_app_get, filling *ret (borrowed, as fsm_app_at). Returns 0 or
 * MESH_ENOTFOUND leaving *ret untouched. */
int fsm_app_find(const struct fsm *fsm, const char *name, struct fsm_app *ret);

/* Number of applications. */
size_t fsm_app_count(const struct fsm *fsm);

/* Iteration in name order: application i, 0 <= i < fsm_app_count(). Returns 0 and fills *ret_app
 * (borrowed pointers, as struct fsm_app says), or MESH_ENOTFOUND when i is out of range. Indices
 * shift when the state changes: iterate without applying in between. */
int fsm_app_at(const struct fsm *fsm, size_t i, struct fsm_app *ret_app);

/* One placement as the read API shows it. Strings are NUL-terminated and borrowed from the fsm,
 * valid until the next apply, restore or fsm_free. node is "" while pending. */
struct fsm_placement {
    const char *app;
    const char *ms;
    uint32_t replica;
    const char *node;
    const char *reason;
};

/* Number of placements. */
size_t fsm_placement_count(const struct fsm *fsm);

/* Iteration in (app, ms, replica) order, as fsm_app_at: returns 0 and fills *ret (borrowed), or
 * MESH_ENOTFOUND when i is out of range. */
int fsm_placement_at(const struct fsm *fsm, size_t i, struct fsm_placement *ret);

/* Looks one placement up (strings borrowed). Returns 0 and *ret (borrowed), or MESH_ENOTFOUND
 * leaving *ret untouched. */
int fsm_placement_get(const struct fsm *fsm, const char *app, const char *ms, uint32_t replica,
                      struct fsm_placement *ret);

/* The placements of one application are consecutive: sets *ret_first and *ret_count (0 when it
 * has none) so that fsm_placement_at(first .. first+count-1) iterates them. */
void fsm_placement_range(const struct fsm *fsm, const char *app, size_t *ret_first,
                         size_t *ret_count);

/* A cordoned node; node is borrowed as in struct fsm_placement. */
struct fsm_cordon {
    const char *node;
    bool drain;
};

/* Number of cordoned nodes, and iteration in name order as fsm_placement_at. */
size_t fsm_cordon_count(const struct fsm *fsm);
int fsm_cordon_at(const struct fsm *fsm, size_t i, struct fsm_cordon *ret);

/* Whether node (NUL-terminated, borrowed) is cordoned: returns 0 and *ret_drain (when not NULL),
 * or MESH_ENOTFOUND when it is not. */
int fsm_cordon_get(const struct fsm *fsm, const char *node, bool *ret_drain);

/* The machine's revision: 0 when empty and new, +1 on every change. */
uint64_t fsm_revision(const struct fsm *fsm);

/* A copy of the local counters. */
struct fsm_stats fsm_get_stats(const struct fsm *fsm);

/* A short name for an outcome ("created", "updated", ...), for logs and the API. Never NULL. */
const char *fsm_outcome_str(int outcome);

/* Records in key order, as fsm_app_at (name = the key, spec = the value). */
size_t fsm_rec_count(const struct fsm *fsm);
int fsm_rec_at(const struct fsm *fsm, size_t i, struct fsm_app *ret);
int fsm_rec_get(const struct fsm *fsm, const char *key, struct fsm_app *ret);

#endif
