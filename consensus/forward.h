/* Write forwarding and the read index, as a state machine without I/O.
 *
 * Owns: the writes an API client makes on this node until they have an answer (proposed here
 * when this node leads, else forwarded to the leader as a FORWARD_CALL_APPLY call, and retried
 * on another leader when the first one said it does not lead); the reads that must wait for
 * the local replica (a consistent read asks the leader for its commit index, the read index of
 * the Raft thesis §6.4, and answers once this replica has applied that far; a plain read after
 * a write forwarded from here waits for that write's index, so a client reads its own writes
 * on this node); and the leader's side of both calls: a forwarded command is decoded, checked
 * and encoded again (forward_canonical) before it is proposed, so that the log only ever holds
 * canonical, padded commands whatever a member sent (issue 10), and a read index is a barrier
 * followed by the commit index. It also owns the two reply formats (forward_reply_*).
 *
 * Must not: do I/O, read a clock, log, or know about HTTP, gossip or raft's objects. Everything
 * goes through struct forward_io, supplied by the daemon: the local raft's state, one timer,
 * calls to the leader, local proposals and barriers, and the answers. The daemon calls
 * forward_changed when raft's applied index, leader or state may have changed (an event, not a
 * poll) and forward_tick when the timer fires.
 *
 * Threading and ownership: not thread-safe; one object per node, driven from the node's loop.
 * io callbacks must not call back into the same object, with two exceptions: io->done may
 * start new writes and reads (an answer from the replica may be a write, `meshctl move`), and
 * the completion functions (forward_call_done, forward_submit_done, forward_barrier_done) are
 * called from any later loop callback, never from inside the io call that started the
 * request. A write or read
 * either answers at once (the function returns true and fills *ret; io->done never fires for
 * it) or io->done fires exactly once later, with FORWARD_STOPPED at forward_stop. The tokens
 * and served requests are the caller's; the module only hands them back. No global state. */
#ifndef FOGMESH_CONSENSUS_FORWARD_H
#define FOGMESH_CONSENSUS_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>

#include "err.h"
#include "fsm.h"

#define FORWARD_WRITE_TIMEOUT_MS     5000 /* a write that has not committed by then fails, with why */
#define FORWARD_READ_WAIT_MS         5000 /* a consistent read waits this long for the replica */
#define FORWARD_READ_YOUR_WRITES_MS  2000 /* a read after a forwarded write waits this long */
#define FORWARD_RETRIES_MAX          3    /* forwarded sends of one write, first one included */
#define FORWARD_MAX_REPLY            1024 /* bytes of an APPLY reply a follower accepts */
#define FORWARD_READ_INDEX_MAX_REPLY 64
#define FORWARD_MAX_REQUEST          (FSM_SPEC_MAX + 1024) /* bytes of a forwarded command */
#define FORWARD_MSG_MAX              (MESH_ERRMSG_LEN + 256)
#define FORWARD_NO_DEADLINE          UINT64_MAX

enum forward_call_type {
    FORWARD_CALL_APPLY = 1,      /* request: a command; reply: forward_reply_encode */
    FORWARD_CALL_READ_INDEX = 2, /* request: empty; reply: forward_read_index_encode */
};

/* How a write or read ended; the daemon turns it into an HTTP status. */
enum forward_status {
    FORWARD_OK = 0,
    FORWARD_REFUSED,   /* the leader checked the write and refused it: retrying will not help */
    FORWARD_DISK_FULL, /* the leader (or this node) cannot store anything */
    FORWARD_NO_QUORUM, /* no leader, or it did not take the write: the daemon adds what it
                          knows of the voters to msg */
    FORWARD_FAILED,    /* failed for the reason in msg, as is */
    FORWARD_BAD_REPLY, /* the leader's answer did not decode */
    FORWARD_NOMEM,
    FORWARD_STOPPED, /* forward_stop: nobody is answered any more */
};

struct forward_result {
    enum forward_status status;
    int outcome;      /* FORWARD_OK write: enum fsm_outcome */
    uint64_t version; /* FORWARD_OK write: as struct fsm_result */
    bool consistent;  /* FORWARD_OK read: linearizable (false: a best-effort local read) */
    char msg[FORWARD_MSG_MAX];
};

/* What the local raft says now. */
struct forward_state {
    uint64_t leader_id;         /* 0: no leader known */
    const char *leader_address; /* NULL when no leader is known; valid for the call only */
    bool leading;               /* this node is the leader */
    uint64_t applied;           /* raft's last applied index here */
    uint64_t commit;            /* raft's commit index here */
};

/* Checks and re-encodes a PUT_REC command (see canonical_rec below). */
typedef int (*forward_rec_fn)(void *ud, const struct fsm_cmd *c, struct raft_buffer *out);

struct forward_op; /* a write, read or served call in progress; the io hands it back */
struct forward;

struct forward_io {
    void *data; /* passed as `ud` to every callback */

    uint64_t (*now)(void *ud); /* monotonic milliseconds */
    void (*state)(void *ud, struct forward_state *ret);

    /* Arms the one timer for at_ms (FORWARD_NO_DEADLINE: disarm), replacing the last one; the
     * daemon calls forward_tick when it fires. */
    void (*timer)(void *ud, uint64_t at_ms);

    /* Calls the leader at `address` (buf borrowed for the call). Unless this returns an error,
     * the daemon calls forward_call_done(op, ...) exactly once, later. */
    int (*call)(void *ud, struct forward_op *op, const char *address, enum forward_call_type type,
                const uint8_t *buf, size_t len, size_t max_reply, uint64_t timeout_ms);

    /* Proposes cmd to the local raft: cmd->base (raft_malloc'ed) is taken on success and left
     * to the module on error. Unless this returns an error, forward_submit_done(op, ...)
     * follows exactly once (or never after detach). *ret_handle (may be left NULL: the op is
     * then never detached) is what detach takes. */
    int (*submit)(void *ud, struct forward_op *op, struct raft_buffer *cmd, void **ret_handle);
    /* A barrier on the local raft, with forward_barrier_done as submit's completion. */
    int (*barrier)(void *ud, struct forward_op *op, void **ret_handle);
    /* The completion of a submit or barrier (its handle) is not wanted any more. */
    void (*detach)(void *ud, void *handle);

    /* A write or read started with forward_write / forward_read answered (see the top). */
    void (*done)(void *ud, void *token, const struct forward_result *res);

    /* Answers a served call: rc 0 and reply (borrowed), or an error code and msg. */
    void (*respond)(void *ud, void *req, int rc, const uint8_t *reply, size_t len, const char *msg);

    /* Optional. A PUT_REC command's record as this node would write it (the records' format
     * belongs to the daemon): 0 and *out (raft_malloc'ed, padded), or MESH_EINVAL. Without it
     * every PUT_REC is refused. */
    forward_rec_fn canonical_rec;
};

/* io is copied. Returns 0 and *ret (forward_free), or MESH_ENOMEM. */
int forward_new(const struct forward_io *io, struct forward **ret);

/* Frees every op without a callback; after the calls and raft requests the io started can no
 * longer complete (the links and raft are gone). Accepts NULL. */
void forward_free(struct forward *fw);

/* Shutdown, before raft closes: every write and read gets io->done(FORWARD_STOPPED) now; calls
 * served for other nodes are answered MESH_ECLOSED; every local raft request with a handle is
 * detached, so none completes later (one without a handle still completes, answering nothing
 * more, and its op is freed then); ops whose call is still out stay until forward_call_done or
 * forward_free. New writes and reads fail with FORWARD_FAILED afterwards, new served calls
 * with MESH_ECLOSED. */
void forward_stop(struct forward *fw);

/* A write for token: cmd (raft_malloc'ed) is always consumed. Returns true with the answer in
 * *ret (io->done will not fire), or false: io->done(token) follows. */
bool forward_write(struct forward *fw, void *token, struct raft_buffer *cmd,
                   struct forward_result *ret);

/* A read for token: consistent (linearizable, through the leader's read index) or plain (at
 * once, or once this replica has applied the last write forwarded from here, best effort).
 * Returns as forward_write; FORWARD_OK means "answer from the local replica now". */
bool forward_read(struct forward *fw, void *token, bool consistent, struct forward_result *ret);

/* Raft's applied index, leader or state may have changed: reads that waited complete, writes
 * that waited for another leader go to it. */
void forward_changed(struct forward *fw);

/* The timer armed through io->timer fired. */
void forward_tick(struct forward *fw);

/* Completions of the io's calls, submits and barriers (see struct forward_io). reply and err
 * are borrowed; err and res may be NULL. */
void forward_call_done(struct forward_op *op, int rc, const uint8_t *reply, size_t len,
                       const struct mesh_err *err);
void forward_submit_done(struct forward_op *op, int status, const struct fsm_result *res,
                         const struct mesh_err *err);
void forward_barrier_done(struct forward_op *op, int status);

/* The leader's side of FORWARD_CALL_APPLY for req (the caller's, answered through
 * io->respond, now or later): the command (borrowed) made canonical and proposed. Returns 0,
 * or the refusal (a negative code, why in why[whylen]) when the command was not one this
 * leader accepts, for the daemon to log; req is answered either way. */
int forward_serve_apply(struct forward *fw, void *req, const uint8_t *data, size_t len, char *why,
                        size_t whylen);
/* The leader's side of FORWARD_CALL_READ_INDEX: a barrier, then the commit index. */
void forward_serve_read_index(struct forward *fw, void *req);

/* The command a follower forwarded, as this leader would have written it: decoded, checked by
 * the rules the API applies before a write (a spec by spec_from_bytes, a service record by
 * canonical_rec, the rest by the machine's own rules) and encoded again, padded to 8 bytes. So
 * the log only ever holds canonical commands, whatever bytes a buggy or hostile member sent: a
 * spec that would crash or confuse a reader, a length raft_uv cannot store (issue 10). data is
 * borrowed. Returns 0 and *out (raft_malloc'ed), or MESH_EINVAL / MESH_EUNSUPPORTED /
 * MESH_ENOMEM with why in why[whylen] and *out untouched. canonical_rec may be NULL (records
 * refused). */
int forward_canonical(const uint8_t *data, size_t len, forward_rec_fn canonical_rec, void *ud,
                      struct raft_buffer *out, char *why, size_t whylen);

/* The APPLY reply: [outcome, version, commit_index] (a newer leader may append elements; they
 * are ignored). encode returns the length written (at most FORWARD_REPLY_MAX), 0 if cap is too
 * small. decode: 0 and the outputs, or MESH_EMALFORMED (outputs untouched) for anything else,
 * an outcome outside enum fsm_outcome included. */
#define FORWARD_REPLY_MAX 32
size_t forward_reply_encode(int outcome, uint64_t version, uint64_t index, uint8_t *buf,
                            size_t cap);
int forward_reply_decode(const uint8_t *buf, size_t len, int *ret_outcome, uint64_t *ret_version,
                         uint64_t *ret_index);

/* The READ_INDEX reply: one uint, the leader's commit index (trailing bytes are ignored, as
 * they always were). encode/decode as above. */
#define FORWARD_READ_INDEX_REPLY_MAX 16
size_t forward_read_index_encode(uint64_t index, uint8_t *buf, size_t cap);
int forward_read_index_decode(const uint8_t *buf, size_t len, uint64_t *ret_index);

/* The index reads on this node wait for: that of the last write forwarded from here. */
uint64_t forward_rw_index(const struct forward *fw);

#endif
