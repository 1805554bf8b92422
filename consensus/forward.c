#include "forward.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dlist.h"
#include "spec.h"
#include "wire.h"

enum op_kind { OP_WRITE, OP_READ, OP_SERVE_APPLY, OP_SERVE_READ };

struct forward_op {
    struct forward *fw;
    enum op_kind kind;
    void *token;       /* writes, reads: the caller's; served calls: the request */
    uint64_t deadline; /* writes, reads; FORWARD_NO_DEADLINE for served calls */
    void *handle;      /* of the local submit or barrier, while local_out (may be NULL) */
    bool local_out;    /* a submit or barrier refers to this op */
    bool call_out;     /* a call refers to this op */
    bool done;         /* answered or stopped: only what is out is awaited before the free */
    /* Forwarded writes: the command, kept for a send to another leader. */
    uint8_t *cmd;
    size_t cmd_len;
    unsigned sends;
    uint64_t sent_to;              /* the leader of the last send */
    bool waiting_leader;           /* the leader said it does not lead: waiting for another one */
    struct forward_result failure; /* what to answer if no other leader comes in time */
    /* Reads: answer once applied >= index (have_index: known; for a consistent read, once
     * the leader said). */
    uint64_t index;
    bool have_index;
    bool best_effort;
    struct forward_op *prev, *next;
};

struct forward {
    struct forward_io io;
    struct forward_op *ops;
    uint64_t rw_index;
    uint64_t timer_at;
    bool stopped;
};

static void set_result(struct forward_result *res, enum forward_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_result(struct forward_result *res, enum forward_status st, const char *fmt, ...)
{
    memset(res, 0, sizeof *res);
    res->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->msg, sizeof res->msg, fmt, ap);
    va_end(ap);
}

/* ---- ops ------------------------------------------------------------------------------------ */

static struct forward_op *op_new(struct forward *fw, enum op_kind kind, void *token)
{
    struct forward_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->fw = fw;
    op->kind = kind;
    op->token = token;
    op->deadline = FORWARD_NO_DEADLINE;
    DLIST_PUSH(fw->ops, op);
    return op;
}

static void op_free(struct forward_op *op)
{
    DLIST_REMOVE(op->fw->ops, op);
    free(op->cmd);
    free(op);
}

/* Frees op unless a call or a local request still refers to it (its completion frees it). */
static void op_release(struct forward_op *op)
{
    if (!op->call_out && !op->local_out)
        op_free(op);
}

/* Whether op's deadline is what it waits for now. A read waiting for the leader's index is
 * bounded by that call's own timeout (or raft's answer to the barrier) instead, as the replica
 * can only be waited for once the index is known. */
static bool op_timed(const struct forward_op *op)
{
    if (op->done || op->deadline == FORWARD_NO_DEADLINE)
        return false;
    if (op->kind == OP_READ)
        return op->have_index && !op->call_out && !op->local_out;
    return op->kind == OP_WRITE;
}

static void rearm(struct forward *fw)
{
    uint64_t at = FORWARD_NO_DEADLINE;
    for (struct forward_op *op = fw->ops; op; op = op->next)
        if (op_timed(op) && op->deadline < at)
            at = op->deadline;
    if (at != fw->timer_at) {
        fw->timer_at = at;
        fw->io.timer(fw->io.data, at);
    }
}

/* Answers a write or read once; frees it unless something out still refers to it. */
static void finish(struct forward_op *op, const struct forward_result *res)
{
    struct forward *fw = op->fw;
    if (!op->done) {
        op->done = true;
        if (op->local_out && op->handle) {
            fw->io.detach(fw->io.data, op->handle);
            op->local_out = false;
            op->handle = NULL;
        }
        fw->io.done(fw->io.data, op->token, res);
    }
    op_release(op);
}

static void finish_with(struct forward_op *op, enum forward_status st, const char *msg)
{
    struct forward_result res;
    set_result(&res, st, "%s", msg);
    finish(op, &res);
}

int forward_new(const struct forward_io *io, struct forward **ret)
{
    struct forward *fw = calloc(1, sizeof *fw);
    if (!fw)
        return MESH_ENOMEM;
    fw->io = *io;
    fw->timer_at = FORWARD_NO_DEADLINE;
    *ret = fw;
    return 0;
}

void forward_free(struct forward *fw)
{
    if (!fw)
        return;
    while (fw->ops)
        op_free(fw->ops);
    free(fw);
}

void forward_stop(struct forward *fw)
{
    fw->stopped = true;
    for (struct forward_op *op = fw->ops, *next; op; op = next) {
        next = op->next;
        if (op->kind == OP_SERVE_APPLY || op->kind == OP_SERVE_READ) {
            /* Not MESH_ESTATE: a proposed write may still commit, so the follower must not
             * send it to the next leader. */
            if (op->handle) {
                fw->io.detach(fw->io.data, op->handle);
                op->handle = NULL;
                op->local_out = false;
            }
            fw->io.respond(fw->io.data, op->token, MESH_ECLOSED, NULL, 0,
                           "the leader is shutting down; the write may or may not have "
                           "committed");
            /* Answered. A request the io gave no handle for cannot be detached: its
             * completion still comes, and frees the op then (forward_submit_done and
             * forward_barrier_done see `done`), without answering twice. */
            op->done = true;
            op_release(op);
            continue;
        }
        if (op->done)
            continue;
        struct forward_result res;
        set_result(&res, FORWARD_STOPPED, "this node is shutting down");
        finish(op, &res);
    }
    rearm(fw);
}

uint64_t forward_rw_index(const struct forward *fw)
{
    return fw->rw_index;
}

/* ---- writes --------------------------------------------------------------------------------- */

static int send_apply(struct forward_op *op, const struct forward_state *st, uint64_t now)
{
    struct forward *fw = op->fw;
    if (!st->leader_address)
        return MESH_ESTATE;
    uint64_t left = op->deadline > now ? op->deadline - now : 1;
    int rc = fw->io.call(fw->io.data, op, st->leader_address, FORWARD_CALL_APPLY, op->cmd,
                         op->cmd_len, FORWARD_MAX_REPLY, left);
    if (rc == 0) {
        op->call_out = true;
        op->sends++;
        op->sent_to = st->leader_id;
    }
    return rc;
}

/* The leader that had the write said it does not lead (any more). The command is certainly not
 * in its log then (it refuses before proposing), so it may go to the next leader: once one
 * other than that one is known, at once, else when forward_changed says so, until the write's
 * deadline (then it fails with the refusal). */
static void try_resend(struct forward_op *op)
{
    struct forward *fw = op->fw;
    struct forward_state st;
    fw->io.state(fw->io.data, &st);
    if (!st.leader_id || st.leader_id == op->sent_to)
        return;
    op->waiting_leader = false;
    int rc;
    if (st.leading) {
        struct raft_buffer cmd = {.base = raft_malloc(op->cmd_len), .len = op->cmd_len};
        if (cmd.base)
            memcpy(cmd.base, op->cmd, op->cmd_len);
        rc = cmd.base ? fw->io.submit(fw->io.data, op, &cmd, &op->handle) : MESH_ENOMEM;
        if (rc == 0)
            op->local_out = true;
        else
            raft_free(cmd.base);
    } else {
        rc = send_apply(op, &st, fw->io.now(fw->io.data));
    }
    if (rc < 0)
        finish_with(op, FORWARD_NO_QUORUM, "cannot reach the leader");
}

bool forward_write(struct forward *fw, void *token, struct raft_buffer *cmd,
                   struct forward_result *ret)
{
    struct forward_state st;
    if (fw->stopped) {
        raft_free(cmd->base);
        set_result(ret, FORWARD_FAILED, "this node is shutting down; use another node");
        return true;
    }
    fw->io.state(fw->io.data, &st);
    if (!st.leader_id) {
        raft_free(cmd->base);
        set_result(ret, FORWARD_NO_QUORUM, "no leader");
        return true;
    }
    struct forward_op *op = op_new(fw, OP_WRITE, token);
    if (!op) {
        raft_free(cmd->base);
        set_result(ret, FORWARD_NOMEM, "out of memory");
        return true;
    }
    uint64_t now = fw->io.now(fw->io.data);
    op->deadline = now + FORWARD_WRITE_TIMEOUT_MS;
    int rc;
    if (st.leading) {
        rc = fw->io.submit(fw->io.data, op, cmd, &op->handle);
        if (rc < 0)
            raft_free(cmd->base);
        else
            op->local_out = true;
    } else {
        op->cmd = malloc(cmd->len ? cmd->len : 1);
        op->cmd_len = cmd->len;
        if (op->cmd)
            memcpy(op->cmd, cmd->base, cmd->len);
        raft_free(cmd->base);
        rc = op->cmd ? send_apply(op, &st, now) : MESH_ENOMEM;
    }
    if (rc < 0) {
        op_free(op);
        set_result(ret, FORWARD_NO_QUORUM, "cannot reach the leader");
        return true;
    }
    rearm(fw);
    return false;
}

static void on_apply_reply(struct forward_op *op, int rc, const uint8_t *reply, size_t len,
                           const struct mesh_err *err)
{
    struct forward *fw = op->fw;
    struct forward_result res;
    if (rc == MESH_EINVAL || rc == MESH_ETOOBIG || rc == MESH_EUNSUPPORTED || rc == -ENOSPC) {
        /* The leader checked the write and refused it, or cannot store anything: retrying at
         * once will not help. */
        set_result(&res, rc == -ENOSPC ? FORWARD_DISK_FULL : FORWARD_REFUSED,
                   "the leader refused the write: %s", err ? err->msg : mesh_strerror(rc));
        finish(op, &res);
        return;
    }
    if (rc < 0) {
        set_result(&res, FORWARD_NO_QUORUM, "the leader did not take the write (%.200s)",
                   err ? err->msg : mesh_strerror(rc));
        /* Only MESH_ENOTLEADER, which a leader answers only for a write it refused before
         * proposing it, is sent again. Any other failure (a timeout, a link lost with the call,
         * whose local code may be MESH_ESTATE too) may come after the leader committed the
         * write: sending it again could apply it twice (a delete would then answer "not
         * found"), so the client gets the error and decides. */
        if (rc == MESH_ENOTLEADER && op->sends < FORWARD_RETRIES_MAX &&
            fw->io.now(fw->io.data) < op->deadline) {
            op->failure = res;
            op->waiting_leader = true;
            try_resend(op);
            return;
        }
        finish(op, &res);
        return;
    }
    int outcome;
    uint64_t version, index;
    if (forward_reply_decode(reply, len, &outcome, &version, &index) < 0) {
        finish_with(op, FORWARD_BAD_REPLY, "malformed answer from the leader");
        return;
    }
    /* Committed. Answer now; reads on this node wait for the replica to reach the write's
     * index instead (forward_read), so the client still reads its own writes here without
     * every forwarded write waiting for the next heartbeat to carry the commit index. */
    if (index > fw->rw_index)
        fw->rw_index = index;
    memset(&res, 0, sizeof res);
    res.status = FORWARD_OK;
    res.outcome = outcome;
    res.version = version;
    finish(op, &res);
}

/* ---- reads ---------------------------------------------------------------------------------- */

/* Answers the read if the replica is far enough, or its time is up. */
static void read_check(struct forward_op *op)
{
    struct forward *fw = op->fw;
    struct forward_state st;
    fw->io.state(fw->io.data, &st);
    struct forward_result res = {.status = FORWARD_OK};
    if (st.applied >= op->index) {
        res.consistent = !op->best_effort;
        finish(op, &res);
        return;
    }
    if (fw->io.now(fw->io.data) >= op->deadline) {
        /* A plain read only waited to show the client its own write: answer what we have.
         * And stop waiting for that index: one the replica has not reached in this long may
         * never come (a forged reply can claim UINT64_MAX), and every later read would pay
         * the wait again. A real one still arrives; only the wait for it is given up. */
        if (op->best_effort) {
            if (fw->rw_index > st.applied)
                fw->rw_index = st.applied;
            finish(op, &res);
        } else
            finish_with(op, FORWARD_FAILED,
                        "this replica did not catch up with the leader in time");
    }
}

bool forward_read(struct forward *fw, void *token, bool consistent, struct forward_result *ret)
{
    struct forward_state st;
    if (fw->stopped) {
        set_result(ret, FORWARD_FAILED, "this node is shutting down; use another node");
        return true;
    }
    fw->io.state(fw->io.data, &st);
    uint64_t now = fw->io.now(fw->io.data);
    if (!consistent) {
        /* Local; after a write forwarded from here, once the replica has caught up with it
         * (read your writes on this node). */
        if (st.applied >= fw->rw_index) {
            memset(ret, 0, sizeof *ret);
            ret->status = FORWARD_OK;
            return true;
        }
    } else if (!st.leader_id) {
        set_result(ret, FORWARD_NO_QUORUM, "consistent read: no leader");
        return true;
    }
    struct forward_op *op = op_new(fw, OP_READ, token);
    if (!op) {
        set_result(ret, FORWARD_NOMEM, "out of memory");
        return true;
    }
    if (!consistent) {
        op->index = fw->rw_index;
        op->have_index = true;
        op->best_effort = true;
        op->deadline = now + FORWARD_READ_YOUR_WRITES_MS;
        rearm(fw);
        return false;
    }
    op->deadline = now + FORWARD_READ_WAIT_MS;
    int rc;
    if (st.leading) {
        rc = fw->io.barrier(fw->io.data, op, &op->handle);
        op->local_out = rc == 0;
    } else {
        rc = st.leader_address
                 ? fw->io.call(fw->io.data, op, st.leader_address, FORWARD_CALL_READ_INDEX, NULL, 0,
                               FORWARD_READ_INDEX_MAX_REPLY, FORWARD_READ_WAIT_MS)
                 : MESH_ESTATE;
        op->call_out = rc == 0;
    }
    if (rc < 0) {
        op_free(op);
        set_result(ret, FORWARD_FAILED, "consistent read: cannot reach the leader");
        return true;
    }
    return false;
}

static void on_read_index_reply(struct forward_op *op, int rc, const uint8_t *reply, size_t len,
                                const struct mesh_err *err)
{
    uint64_t idx;
    if (rc < 0 || forward_read_index_decode(reply, len, &idx) < 0) {
        struct forward_result res;
        set_result(&res, FORWARD_FAILED, "consistent read: the leader did not answer: %s",
                   err ? err->msg : "malformed answer");
        finish(op, &res);
        return;
    }
    op->index = idx;
    op->have_index = true;
    read_check(op);
}

/* ---- events and completions ------------------------------------------------------------------ */

void forward_changed(struct forward *fw)
{
    /* io->done may start new ops: they go to the head, behind this walk. */
    for (struct forward_op *op = fw->ops, *next; op; op = next) {
        next = op->next;
        if (op->done)
            continue;
        if (op->kind == OP_READ && op->have_index && !op->call_out && !op->local_out)
            read_check(op);
        else if (op->kind == OP_WRITE && op->waiting_leader)
            try_resend(op);
    }
    rearm(fw);
}

void forward_tick(struct forward *fw)
{
    uint64_t now = fw->io.now(fw->io.data);
    fw->timer_at = FORWARD_NO_DEADLINE; /* it fired */
    for (struct forward_op *op = fw->ops, *next; op; op = next) {
        next = op->next;
        if (!op_timed(op) || now < op->deadline)
            continue;
        if (op->kind == OP_READ)
            read_check(op);
        else if (op->waiting_leader)
            finish(op, &op->failure);
        else
            finish_with(op, FORWARD_NO_QUORUM, "the write did not commit in time");
    }
    rearm(fw);
}

void forward_call_done(struct forward_op *op, int rc, const uint8_t *reply, size_t len,
                       const struct mesh_err *err)
{
    struct forward *fw = op->fw;
    op->call_out = false;
    if (op->done) {
        op_release(op);
        return;
    }
    if (op->kind == OP_READ)
        on_read_index_reply(op, rc, reply, len, err);
    else
        on_apply_reply(op, rc, reply, len, err);
    rearm(fw);
}

static void served_applied(struct forward_op *op, int status, const struct fsm_result *res,
                           const struct mesh_err *err)
{
    struct forward *fw = op->fw;
    void *req = op->token;
    op_free(op);
    if (status < 0 || !res) {
        /* Leadership lost after the entry was proposed (raft's LEADERSHIPLOST, MESH_ESTATE
         * here): the entry may still commit under the next leader, so the answer must not say
         * "never proposed" (MESH_ENOTLEADER, which followers resend). MESH_EAGAIN: the client
         * gets the error and decides, and the write is never applied twice. */
        int rc = status == MESH_ESTATE ? MESH_EAGAIN : status < 0 ? status : MESH_EIO;
        fw->io.respond(fw->io.data, req, rc, NULL, 0, err ? err->msg : "write failed");
        return;
    }
    /* The entry is applied here, so the commit index covers it: the follower waits for its own
     * replica to reach it before answering reads, so that a client reads its own writes there.
     * (raft's last applied index lags inside the apply callback.) */
    struct forward_state st;
    uint8_t buf[FORWARD_REPLY_MAX];
    fw->io.state(fw->io.data, &st);
    size_t n = forward_reply_encode(res->outcome, res->version, st.commit, buf, sizeof buf);
    fw->io.respond(fw->io.data, req, 0, buf, n, NULL);
}

void forward_submit_done(struct forward_op *op, int status, const struct fsm_result *res,
                         const struct mesh_err *err)
{
    struct forward *fw = op->fw;
    op->local_out = false;
    op->handle = NULL;
    if (op->done) { /* answered already (forward_stop) */
        op_release(op);
        return;
    }
    if (op->kind == OP_SERVE_APPLY) {
        served_applied(op, status, res, err);
        return;
    }
    struct forward_result r;
    if (status == -ENOSPC) {
        set_result(&r, FORWARD_DISK_FULL, "%s", err ? err->msg : "disk full");
    } else if (status < 0 || !res) {
        set_result(&r, FORWARD_NO_QUORUM, "%s", err ? err->msg : "write failed");
    } else {
        memset(&r, 0, sizeof r);
        r.outcome = res->outcome;
        r.version = res->version;
    }
    finish(op, &r);
    rearm(fw);
}

void forward_barrier_done(struct forward_op *op, int status)
{
    struct forward *fw = op->fw;
    op->local_out = false;
    op->handle = NULL;
    if (op->done) { /* answered already (forward_stop), or a read's deadline passed */
        op_release(op);
        return;
    }
    if (op->kind == OP_SERVE_READ) {
        void *req = op->token;
        op_free(op);
        if (status < 0) {
            fw->io.respond(fw->io.data, req, status, NULL, 0, "leadership lost; retry");
            return;
        }
        struct forward_state st;
        uint8_t buf[FORWARD_READ_INDEX_REPLY_MAX];
        fw->io.state(fw->io.data, &st);
        size_t n = forward_read_index_encode(st.commit, buf, sizeof buf);
        fw->io.respond(fw->io.data, req, 0, buf, n, NULL);
        return;
    }
    if (status < 0) {
        finish_with(op, FORWARD_FAILED, "consistent read: leadership lost; retry");
    } else {
        /* Every entry committed before the barrier is applied here. */
        op->index = 0;
        op->have_index = true;
        read_check(op);
    }
    rearm(fw);
}

/* ---- the leader's side ---------------------------------------------------------------------- */

int forward_serve_apply(struct forward *fw, void *req, const uint8_t *data, size_t len, char *why,
                        size_t whylen)
{
    struct raft_buffer cmd;
    why[0] = '\0';
    if (fw->stopped) {
        fw->io.respond(fw->io.data, req, MESH_ECLOSED, NULL, 0, "the leader is shutting down");
        return 0;
    }
    int rc = forward_canonical(data, len, fw->io.canonical_rec, fw->io.data, &cmd, why, whylen);
    if (rc < 0) {
        fw->io.respond(fw->io.data, req, rc, NULL, 0, why[0] ? why : mesh_strerror(rc));
        return rc;
    }
    struct forward_op *op = op_new(fw, OP_SERVE_APPLY, req);
    if (!op) {
        raft_free(cmd.base);
        fw->io.respond(fw->io.data, req, MESH_ENOMEM, NULL, 0, "out of memory");
        return 0;
    }
    rc = fw->io.submit(fw->io.data, op, &cmd, &op->handle);
    if (rc < 0) {
        op_free(op);
        raft_free(cmd.base);
        /* Refused before it was proposed: MESH_ENOTLEADER, the one answer on which a
         * follower sends the write to the next leader. */
        if (rc == MESH_ESTATE)
            fw->io.respond(fw->io.data, req, MESH_ENOTLEADER, NULL, 0,
                           "not the leader (any more): retry");
        else
            fw->io.respond(fw->io.data, req, rc, NULL, 0, mesh_strerror(rc));
        return 0;
    }
    op->local_out = true;
    return 0;
}

void forward_serve_read_index(struct forward *fw, void *req)
{
    if (fw->stopped) {
        fw->io.respond(fw->io.data, req, MESH_ECLOSED, NULL, 0, "the leader is shutting down");
        return;
    }
    struct forward_op *op = op_new(fw, OP_SERVE_READ, req);
    if (!op) {
        fw->io.respond(fw->io.data, req, MESH_ENOMEM, NULL, 0, "out of memory");
        return;
    }
    int rc = fw->io.barrier(fw->io.data, op, &op->handle);
    if (rc < 0) {
        op_free(op);
        fw->io.respond(fw->io.data, req, rc, NULL, 0, "not the leader (any more): retry");
        return;
    }
    op->local_out = true;
}

int forward_canonical(const uint8_t *data, size_t len, forward_rec_fn canonical_rec, void *ud,
                      struct raft_buffer *out, char *why, size_t whylen)
{
    struct fsm_cmd c;
    int rc = fsm_cmd_decode(data, len, &c);
    if (rc < 0) {
        snprintf(why, whylen, "not a command this leader accepts: %s", mesh_strerror(rc));
        return rc == MESH_EUNSUPPORTED ? rc : MESH_EINVAL;
    }
    char *text = NULL;
    if (c.type == FSM_CMD_PUT_APP) {
        struct spec_errors errs;
        json_t *canon = NULL;
        if ((rc = spec_from_bytes(c.value, c.value_len, &canon, &errs)) < 0) {
            char line[512];
            spec_errors_format(&errs, line, sizeof line);
            snprintf(why, whylen, "application %.*s: %s", (int)c.name_len, c.name, line);
            return rc == MESH_ENOMEM ? rc : MESH_EINVAL;
        }
        const char *specname = json_string_value(json_object_get(canon, "name"));
        if (!specname || strlen(specname) != c.name_len || memcmp(specname, c.name, c.name_len)) {
            json_decref(canon);
            snprintf(why, whylen, "application %.*s: the spec names another one", (int)c.name_len,
                     c.name);
            return MESH_EINVAL;
        }
        text = spec_dump(canon);
        json_decref(canon);
        if (!text) {
            snprintf(why, whylen, "out of memory");
            return MESH_ENOMEM;
        }
        c.value = (const uint8_t *)text;
        c.value_len = strlen(text);
    } else if (c.type == FSM_CMD_PUT_REC) {
        if (!canonical_rec || canonical_rec(ud, &c, out) < 0) {
            snprintf(why, whylen, "record %.*s: not a service declaration this node would write",
                     (int)c.name_len, c.name);
            return MESH_EINVAL;
        }
        return 0;
    }
    rc = fsm_cmd_encode(&c, out);
    free(text);
    if (rc < 0)
        snprintf(why, whylen, "cannot encode the write: %s", mesh_strerror(rc));
    return rc;
}

/* ---- replies -------------------------------------------------------------------------------- */

size_t forward_reply_encode(int outcome, uint64_t version, uint64_t index, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 3);
    msgpack_pack_uint8(&w.pk, (uint8_t)outcome);
    msgpack_pack_uint64(&w.pk, version);
    msgpack_pack_uint64(&w.pk, index);
    return w.overflow ? 0 : w.len;
}

int forward_reply_decode(const uint8_t *buf, size_t len, int *ret_outcome, uint64_t *ret_version,
                         uint64_t *ret_index)
{
    struct wire_rd r;
    uint32_t cnt;
    uint64_t outcome, version, index;
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &cnt) < 0 || cnt < 3 || wire_rd_uint(&r, &outcome) < 0 ||
        wire_rd_uint(&r, &version) < 0 || wire_rd_uint(&r, &index) < 0 ||
        outcome < FSM_OUT_CREATED || outcome > FSM_OUT_UNKNOWN)
        return MESH_EMALFORMED;
    *ret_outcome = (int)outcome;
    *ret_version = version;
    *ret_index = index;
    return 0;
}

size_t forward_read_index_encode(uint64_t index, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_uint64(&w.pk, index);
    return w.overflow ? 0 : w.len;
}

int forward_read_index_decode(const uint8_t *buf, size_t len, uint64_t *ret_index)
{
    struct wire_rd r;
    wire_rd_init(&r, buf, len);
    return wire_rd_uint(&r, ret_index) < 0 ? MESH_EMALFORMED : 0;
}
