/* Write forwarding and the read index (consensus/forward.h), stepped in virtual time on a fake
 * io: leader changes, lost replies, resends, timeouts and shutdown, the leader's side of both
 * calls (a forwarded command made canonical and padded) and the two reply codecs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <jansson.h>

#include "err.h"
#include "forward.h"
#include "fsm.h"
#include "spec.h"
#include "wire.h"

#define MAXQ   16
#define SELF   1
#define LEADER 2
#define OTHER  3

struct call {
    struct forward_op *op;
    char addr[32];
    enum forward_call_type type;
    uint8_t buf[1024];
    size_t len;
    uint64_t timeout;
};

struct sub {
    struct forward_op *op;
    bool barrier;
    bool detached;
    struct raft_buffer cmd;
};

struct answer {
    void *token;
    struct forward_result res;
};

struct resp {
    void *req;
    int rc;
    uint8_t buf[64];
    size_t len;
    char msg[FORWARD_MSG_MAX];
};

struct fake {
    struct forward *fw;
    uint64_t now;
    struct forward_state st;
    uint64_t timer_at;
    int call_rc, submit_rc, rec_rc;
    bool no_handle; /* submit and barrier leave *ret_handle NULL, as the io may */
    struct call calls[MAXQ];
    size_t ncalls;
    struct sub subs[MAXQ];
    size_t nsubs;
    struct answer answers[MAXQ];
    size_t nanswers;
    struct resp resps[MAXQ];
    size_t nresps;
};

static const char *addr_of(uint64_t id)
{
    return id == LEADER ? "10.0.0.2:7946" : id == OTHER ? "10.0.0.3:7946" : "10.0.0.1:7946";
}

static uint64_t f_now(void *ud)
{
    return ((struct fake *)ud)->now;
}

static void f_state(void *ud, struct forward_state *ret)
{
    *ret = ((struct fake *)ud)->st;
}

static void f_timer(void *ud, uint64_t at)
{
    ((struct fake *)ud)->timer_at = at;
}

static int f_call(void *ud, struct forward_op *op, const char *address, enum forward_call_type type,
                  const uint8_t *buf, size_t len, size_t max_reply, uint64_t timeout_ms)
{
    struct fake *f = ud;
    (void)max_reply;
    if (f->call_rc)
        return f->call_rc;
    assert_true(f->ncalls < MAXQ);
    assert_true(len <= sizeof f->calls[0].buf);
    struct call *c = &f->calls[f->ncalls++];
    c->op = op;
    snprintf(c->addr, sizeof c->addr, "%s", address);
    c->type = type;
    if (len)
        memcpy(c->buf, buf, len);
    c->len = len;
    c->timeout = timeout_ms;
    return 0;
}

static int f_submit(void *ud, struct forward_op *op, struct raft_buffer *cmd, void **ret_handle)
{
    struct fake *f = ud;
    if (f->submit_rc)
        return f->submit_rc;
    assert_true(f->nsubs < MAXQ);
    struct sub *s = &f->subs[f->nsubs++];
    s->op = op;
    s->cmd = *cmd; /* taken */
    *ret_handle = f->no_handle ? NULL : s;
    return 0;
}

static int f_barrier(void *ud, struct forward_op *op, void **ret_handle)
{
    struct fake *f = ud;
    if (f->submit_rc)
        return f->submit_rc;
    struct sub *s = &f->subs[f->nsubs++];
    s->op = op;
    s->barrier = true;
    *ret_handle = f->no_handle ? NULL : s;
    return 0;
}

static void f_detach(void *ud, void *handle)
{
    (void)ud;
    struct sub *s = handle;
    assert_false(s->detached);
    s->detached = true;
}

static void f_done(void *ud, void *token, const struct forward_result *res)
{
    struct fake *f = ud;
    assert_true(f->nanswers < MAXQ);
    for (size_t i = 0; i < f->nanswers; i++)
        assert_ptr_not_equal(f->answers[i].token, token); /* once per token */
    f->answers[f->nanswers++] = (struct answer){token, *res};
}

static void f_respond(void *ud, void *req, int rc, const uint8_t *reply, size_t len,
                      const char *msg)
{
    struct fake *f = ud;
    struct resp *r = &f->resps[f->nresps++];
    r->req = req;
    r->rc = rc;
    assert_true(len <= sizeof r->buf);
    if (len)
        memcpy(r->buf, reply, len);
    r->len = len;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "");
}

/* Records: a PUT_REC whose value is "ok" is one the daemon would write. */
static int f_rec(void *ud, const struct fsm_cmd *c, struct raft_buffer *out)
{
    (void)ud;
    if (c->value_len != 2 || memcmp(c->value, "ok", 2) != 0)
        return MESH_EINVAL;
    char key[FSM_REC_KEY_MAX + 1];
    snprintf(key, sizeof key, "%.*s", (int)c->name_len, c->name);
    return fsm_cmd_put_rec(key, "ok", 2, out);
}

static int setup(void **state)
{
    struct fake *f = calloc(1, sizeof *f);
    struct forward_io io = {
        .data = f,
        .now = f_now,
        .state = f_state,
        .timer = f_timer,
        .call = f_call,
        .submit = f_submit,
        .barrier = f_barrier,
        .detach = f_detach,
        .done = f_done,
        .respond = f_respond,
        .canonical_rec = f_rec,
    };
    f->now = 1000;
    f->timer_at = FORWARD_NO_DEADLINE;
    f->st = (struct forward_state){.leader_id = LEADER, .leader_address = addr_of(LEADER)};
    assert_int_equal(forward_new(&io, &f->fw), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fake *f = *state;
    forward_free(f->fw);
    for (size_t i = 0; i < f->nsubs; i++)
        if (!f->subs[i].barrier)
            raft_free(f->subs[i].cmd.base);
    free(f);
    return 0;
}

/* Virtual time: moves the clock, firing the module's timer when it is due. */
static void advance(struct fake *f, uint64_t ms)
{
    uint64_t end = f->now + ms;
    while (f->timer_at <= end) {
        f->now = f->timer_at;
        f->timer_at = FORWARD_NO_DEADLINE; /* a one-shot timer: fired */
        forward_tick(f->fw);
    }
    f->now = end;
}

static void set_leader(struct fake *f, uint64_t id)
{
    f->st.leader_id = id;
    f->st.leader_address = id ? addr_of(id) : NULL;
    f->st.leading = id == SELF;
    forward_changed(f->fw);
}

static struct raft_buffer delete_cmd(const char *name)
{
    struct raft_buffer b;
    assert_int_equal(fsm_cmd_delete_app(name, &b), 0);
    return b;
}

static void reply_ok(struct fake *f, size_t call, int outcome, uint64_t version, uint64_t index)
{
    uint8_t buf[FORWARD_REPLY_MAX];
    size_t n = forward_reply_encode(outcome, version, index, buf, sizeof buf);
    assert_true(n > 0);
    forward_call_done(f->calls[call].op, 0, buf, n, NULL);
}

static void reply_err(struct fake *f, size_t call, int rc, const char *msg)
{
    struct mesh_err e = {.code = rc};
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    forward_call_done(f->calls[call].op, rc, NULL, 0, &e);
}

static void write_token(struct fake *f, void *token)
{
    struct raft_buffer cmd = delete_cmd("app");
    struct forward_result res;
    assert_false(forward_write(f->fw, token, &cmd, &res));
}

/* ---- writes ---------------------------------------------------------------------------------- */

static void write_on_leader_applies_here(void **state)
{
    struct fake *f = *state;
    int token;
    set_leader(f, SELF);
    write_token(f, &token);
    assert_int_equal(f->nsubs, 1);
    assert_int_equal(f->ncalls, 0);
    assert_int_equal(f->subs[0].cmd.len % 8, 0);
    struct fsm_result r = {.outcome = FSM_OUT_DELETED, .version = 3};
    forward_submit_done(f->subs[0].op, 0, &r, NULL);
    assert_int_equal(f->nanswers, 1);
    assert_ptr_equal(f->answers[0].token, &token);
    assert_int_equal(f->answers[0].res.status, FORWARD_OK);
    assert_int_equal(f->answers[0].res.outcome, FSM_OUT_DELETED);
    assert_int_equal(f->answers[0].res.version, 3);
    assert_int_equal(forward_rw_index(f->fw), 0);
    assert_int_equal(f->timer_at, FORWARD_NO_DEADLINE);
}

static void write_local_disk_full_and_failure(void **state)
{
    struct fake *f = *state;
    int t1, t2;
    set_leader(f, SELF);
    write_token(f, &t1);
    write_token(f, &t2);
    struct mesh_err e = {.code = -ENOSPC, .msg = "disk full on /data"};
    forward_submit_done(f->subs[0].op, -ENOSPC, NULL, &e);
    forward_submit_done(f->subs[1].op, MESH_ESTATE, NULL, NULL);
    assert_int_equal(f->answers[0].res.status, FORWARD_DISK_FULL);
    assert_string_equal(f->answers[0].res.msg, "disk full on /data");
    assert_int_equal(f->answers[1].res.status, FORWARD_NO_QUORUM);
    assert_string_equal(f->answers[1].res.msg, "write failed");
}

static void write_without_leader_answers_at_once(void **state)
{
    struct fake *f = *state;
    struct forward_result res;
    set_leader(f, 0);
    struct raft_buffer cmd = delete_cmd("app");
    assert_true(forward_write(f->fw, NULL, &cmd, &res)); /* cmd consumed (ASan: no leak) */
    assert_int_equal(res.status, FORWARD_NO_QUORUM);
    assert_string_equal(res.msg, "no leader");
    /* A leader that cannot be called: at once too, and nothing is left behind. */
    set_leader(f, LEADER);
    f->call_rc = MESH_ENOTFOUND;
    cmd = delete_cmd("app");
    assert_true(forward_write(f->fw, NULL, &cmd, &res));
    assert_string_equal(res.msg, "cannot reach the leader");
    assert_int_equal(f->nanswers, 0);
    assert_int_equal(f->timer_at, FORWARD_NO_DEADLINE);
}

static void forwarded_write_then_read_your_writes(void **state)
{
    struct fake *f = *state;
    int w, r1, r2;
    struct raft_buffer cmd = delete_cmd("app");
    uint8_t sent[64];
    size_t sent_len = cmd.len;
    memcpy(sent, cmd.base, cmd.len);
    struct forward_result res;
    assert_false(forward_write(f->fw, &w, &cmd, &res));
    assert_int_equal(f->ncalls, 1);
    assert_string_equal(f->calls[0].addr, addr_of(LEADER));
    assert_int_equal(f->calls[0].type, FORWARD_CALL_APPLY);
    assert_int_equal(f->calls[0].timeout, FORWARD_WRITE_TIMEOUT_MS);
    assert_memory_equal(f->calls[0].buf, sent, sent_len);
    assert_int_equal(f->timer_at, 1000 + FORWARD_WRITE_TIMEOUT_MS);
    advance(f, 10);
    reply_ok(f, 0, FSM_OUT_DELETED, 4, 42);
    assert_int_equal(f->answers[0].res.status, FORWARD_OK);
    assert_int_equal(f->answers[0].res.version, 4);
    assert_int_equal(forward_rw_index(f->fw), 42);

    /* The replica is at 40: a plain read waits for the write, and answers once applied. */
    f->st.applied = 40;
    assert_false(forward_read(f->fw, &r1, false, &res));
    f->st.applied = 41;
    forward_changed(f->fw);
    assert_int_equal(f->nanswers, 1);
    f->st.applied = 42;
    forward_changed(f->fw);
    assert_int_equal(f->nanswers, 2);
    assert_int_equal(f->answers[1].res.status, FORWARD_OK);
    assert_false(f->answers[1].res.consistent);
    /* Caught up: the next read answers at once. */
    assert_true(forward_read(f->fw, &r2, false, &res));
    assert_int_equal(res.status, FORWARD_OK);
}

static void read_your_writes_is_best_effort(void **state)
{
    struct fake *f = *state;
    int w, r;
    struct forward_result res;
    write_token(f, &w);
    reply_ok(f, 0, FSM_OUT_DELETED, 1, 9);
    f->st.applied = 5;
    assert_false(forward_read(f->fw, &r, false, &res));
    advance(f, FORWARD_READ_YOUR_WRITES_MS - 1);
    assert_int_equal(f->nanswers, 1);
    advance(f, 1);
    assert_int_equal(f->nanswers, 2);
    assert_int_equal(f->answers[1].res.status, FORWARD_OK); /* what the replica has */
    assert_false(f->answers[1].res.consistent);
}

/* A reply claiming an index the replica never reaches (a forged UINT64_MAX) costs one read
 * its wait, not every read after it. */
static void forged_write_index_costs_one_wait(void **state)
{
    struct fake *f = *state;
    int w, r1, r2;
    struct forward_result res;
    write_token(f, &w);
    reply_ok(f, 0, FSM_OUT_DELETED, 1, UINT64_MAX);
    f->st.applied = 5;
    assert_false(forward_read(f->fw, &r1, false, &res));
    advance(f, FORWARD_READ_YOUR_WRITES_MS);
    assert_int_equal(f->nanswers, 2);
    assert_int_equal(f->answers[1].res.status, FORWARD_OK);
    assert_true(forward_read(f->fw, &r2, false, &res)); /* at once */
    assert_int_equal(res.status, FORWARD_OK);
    assert_int_equal(forward_rw_index(f->fw), 5);
}

static void leader_refusals_are_final(void **state)
{
    struct fake *f = *state;
    int a, b, c;
    write_token(f, &a);
    write_token(f, &b);
    write_token(f, &c);
    reply_err(f, 0, MESH_EINVAL, "application app: name: required");
    reply_err(f, 1, -ENOSPC, "disk full");
    forward_call_done(f->calls[2].op, 0, (const uint8_t *)"\x93\x00\x01\x02", 4, NULL);
    assert_int_equal(f->ncalls, 3); /* none sent again */
    assert_int_equal(f->answers[0].res.status, FORWARD_REFUSED);
    assert_string_equal(f->answers[0].res.msg,
                        "the leader refused the write: application app: name: required");
    assert_int_equal(f->answers[1].res.status, FORWARD_DISK_FULL);
    assert_int_equal(f->answers[2].res.status, FORWARD_BAD_REPLY); /* outcome 0 */
    assert_string_equal(f->answers[2].res.msg, "malformed answer from the leader");
}

/* A lost reply (a timeout, the link gone) may come after the leader committed the write: it is
 * not sent again (a delete sent twice would answer "not found"). */
static void lost_reply_is_not_resent(void **state)
{
    struct fake *f = *state;
    int w;
    write_token(f, &w);
    set_leader(f, OTHER);
    reply_err(f, 0, MESH_ECLOSED, "link closed");
    assert_int_equal(f->ncalls, 1);
    assert_int_equal(f->answers[0].res.status, FORWARD_NO_QUORUM);
    assert_string_equal(f->answers[0].res.msg, "the leader did not take the write (link closed)");
}

/* "Not the leader": certainly not in its log, so it goes to the next leader once one is known. */
static void not_leader_is_resent_to_the_next_leader(void **state)
{
    struct fake *f = *state;
    int w;
    write_token(f, &w);
    advance(f, 300);
    reply_err(f, 0, MESH_ENOTLEADER, "not the leader (any more): retry");
    assert_int_equal(f->nanswers, 0);
    assert_int_equal(f->ncalls, 1); /* the same leader is not asked again */
    forward_changed(f->fw);
    set_leader(f, 0); /* election */
    assert_int_equal(f->ncalls, 1);
    advance(f, 700);
    set_leader(f, OTHER);
    assert_int_equal(f->ncalls, 2);
    assert_string_equal(f->calls[1].addr, addr_of(OTHER));
    assert_memory_equal(f->calls[1].buf, f->calls[0].buf, f->calls[0].len);
    assert_int_equal(f->calls[1].timeout, FORWARD_WRITE_TIMEOUT_MS - 1000); /* same deadline */
    reply_ok(f, 1, FSM_OUT_DELETED, 2, 7);
    assert_int_equal(f->nanswers, 1);
    assert_int_equal(f->answers[0].res.status, FORWARD_OK);
    assert_int_equal(forward_rw_index(f->fw), 7);
}

/* MESH_ESTATE is also what a call fails with locally when its link dies (noise state), maybe
 * after the leader got it: never resent. */
static void link_state_error_is_not_resent(void **state)
{
    struct fake *f = *state;
    int w;
    write_token(f, &w);
    reply_err(f, 0, MESH_ESTATE, "link closed");
    forward_changed(f->fw);
    set_leader(f, OTHER);
    assert_int_equal(f->ncalls, 1);
    assert_int_equal(f->nanswers, 1);
    assert_int_equal(f->answers[0].res.status, FORWARD_NO_QUORUM);
}

static void not_leader_then_this_node_leads(void **state)
{
    struct fake *f = *state;
    int w;
    write_token(f, &w);
    reply_err(f, 0, MESH_ENOTLEADER, "not the leader (any more): retry");
    set_leader(f, SELF);
    assert_int_equal(f->nsubs, 1);
    assert_int_equal(f->subs[0].cmd.len, f->calls[0].len);
    assert_memory_equal(f->subs[0].cmd.base, f->calls[0].buf, f->calls[0].len);
    struct fsm_result r = {.outcome = FSM_OUT_DELETED, .version = 1};
    forward_submit_done(f->subs[0].op, 0, &r, NULL);
    assert_int_equal(f->answers[0].res.status, FORWARD_OK);
}

static void resends_are_bounded(void **state)
{
    struct fake *f = *state;
    int w;
    write_token(f, &w);
    uint64_t leaders[] = {OTHER, LEADER};
    for (size_t i = 0; i < FORWARD_RETRIES_MAX - 1; i++) {
        reply_err(f, i, MESH_ENOTLEADER, "not the leader");
        set_leader(f, leaders[i % 2]);
        assert_int_equal(f->ncalls, i + 2);
    }
    reply_err(f, FORWARD_RETRIES_MAX - 1, MESH_ENOTLEADER, "not the leader");
    assert_int_equal(f->nanswers, 1);
    assert_int_equal(f->answers[0].res.status, FORWARD_NO_QUORUM);
    assert_string_equal(f->answers[0].res.msg,
                        "the leader did not take the write (not the leader)");
}

/* No other leader before the deadline: the refusal is the answer. */
static void waiting_for_a_leader_times_out(void **state)
{
    struct fake *f = *state;
    int w;
    write_token(f, &w);
    reply_err(f, 0, MESH_ENOTLEADER, "raft is restarting on this node");
    advance(f, FORWARD_WRITE_TIMEOUT_MS - 1);
    assert_int_equal(f->nanswers, 0);
    advance(f, 1);
    assert_int_equal(f->nanswers, 1);
    assert_string_equal(f->answers[0].res.msg,
                        "the leader did not take the write (raft is restarting on this node)");
    set_leader(f, OTHER); /* too late: nothing more is sent */
    assert_int_equal(f->ncalls, 1);
}

static void write_timeout_then_late_reply(void **state)
{
    struct fake *f = *state;
    int w;
    write_token(f, &w);
    advance(f, FORWARD_WRITE_TIMEOUT_MS);
    assert_int_equal(f->nanswers, 1);
    assert_int_equal(f->answers[0].res.status, FORWARD_NO_QUORUM);
    assert_string_equal(f->answers[0].res.msg, "the write did not commit in time");
    assert_int_equal(f->timer_at, FORWARD_NO_DEADLINE);
    reply_ok(f, 0, FSM_OUT_DELETED, 1, 50); /* frees the op, answers nothing more */
    assert_int_equal(f->nanswers, 1);
    assert_int_equal(forward_rw_index(f->fw), 0);
}

static void local_write_timeout_detaches(void **state)
{
    struct fake *f = *state;
    int w;
    set_leader(f, SELF);
    write_token(f, &w);
    advance(f, FORWARD_WRITE_TIMEOUT_MS);
    assert_int_equal(f->nanswers, 1);
    assert_true(f->subs[0].detached);
}

/* ---- reads ----------------------------------------------------------------------------------- */

static void consistent_read_on_a_follower(void **state)
{
    struct fake *f = *state;
    int r;
    struct forward_result res;
    f->st.applied = 8;
    assert_false(forward_read(f->fw, &r, true, &res));
    assert_int_equal(f->calls[0].type, FORWARD_CALL_READ_INDEX);
    assert_int_equal(f->calls[0].len, 0);
    /* The call's own timeout bounds the wait for the index: no timer meanwhile. */
    assert_int_equal(f->timer_at, FORWARD_NO_DEADLINE);
    uint8_t buf[FORWARD_READ_INDEX_REPLY_MAX];
    size_t n = forward_read_index_encode(10, buf, sizeof buf);
    forward_call_done(f->calls[0].op, 0, buf, n, NULL);
    assert_int_equal(f->nanswers, 0);
    f->st.applied = 10;
    forward_changed(f->fw);
    assert_int_equal(f->nanswers, 1);
    assert_int_equal(f->answers[0].res.status, FORWARD_OK);
    assert_true(f->answers[0].res.consistent);
}

static void consistent_read_replica_too_slow(void **state)
{
    struct fake *f = *state;
    int r;
    struct forward_result res;
    f->st.applied = 8;
    assert_false(forward_read(f->fw, &r, true, &res));
    advance(f, 100);
    uint8_t buf[FORWARD_READ_INDEX_REPLY_MAX];
    size_t n = forward_read_index_encode(10, buf, sizeof buf);
    forward_call_done(f->calls[0].op, 0, buf, n, NULL);
    advance(f, FORWARD_READ_WAIT_MS - 101);
    assert_int_equal(f->nanswers, 0);
    advance(f, 1);
    assert_int_equal(f->answers[0].res.status, FORWARD_FAILED);
    assert_string_equal(f->answers[0].res.msg,
                        "this replica did not catch up with the leader in time");
}

static void consistent_read_failures(void **state)
{
    struct fake *f = *state;
    int a, b, c;
    struct forward_result res;
    set_leader(f, 0);
    assert_true(forward_read(f->fw, &a, true, &res));
    assert_int_equal(res.status, FORWARD_NO_QUORUM);
    assert_string_equal(res.msg, "consistent read: no leader");
    set_leader(f, LEADER);
    assert_false(forward_read(f->fw, &a, true, &res));
    assert_false(forward_read(f->fw, &b, true, &res));
    forward_call_done(f->calls[0].op, 0, (const uint8_t *)"\xc0", 1, NULL); /* nil */
    reply_err(f, 1, MESH_EAGAIN, "timed out");
    assert_string_equal(f->answers[0].res.msg,
                        "consistent read: the leader did not answer: malformed answer");
    assert_string_equal(f->answers[1].res.msg,
                        "consistent read: the leader did not answer: timed out");
    f->call_rc = MESH_ENOTFOUND;
    assert_true(forward_read(f->fw, &c, true, &res));
    assert_string_equal(res.msg, "consistent read: cannot reach the leader");
}

static void consistent_read_on_the_leader(void **state)
{
    struct fake *f = *state;
    int a, b;
    struct forward_result res;
    set_leader(f, SELF);
    assert_false(forward_read(f->fw, &a, true, &res));
    assert_false(forward_read(f->fw, &b, true, &res));
    assert_true(f->subs[0].barrier);
    forward_barrier_done(f->subs[0].op, 0);
    forward_barrier_done(f->subs[1].op, MESH_ESTATE);
    assert_int_equal(f->answers[0].res.status, FORWARD_OK);
    assert_true(f->answers[0].res.consistent);
    assert_int_equal(f->answers[1].res.status, FORWARD_FAILED);
    assert_string_equal(f->answers[1].res.msg, "consistent read: leadership lost; retry");
}

/* ---- shutdown -------------------------------------------------------------------------------- */

static void stop_answers_everyone_once(void **state)
{
    struct fake *f = *state;
    int fwdw, fwdw2, locw, rd, ci;
    struct forward_result res;
    write_token(f, &fwdw);                              /* call 0 out */
    assert_false(forward_read(f->fw, &ci, true, &res)); /* call 1 out */
    reply_ok(f, 0, FSM_OUT_DELETED, 1, 5);
    write_token(f, &fwdw2);                              /* call 2 out */
    assert_false(forward_read(f->fw, &rd, false, &res)); /* waits for index 5 */
    set_leader(f, SELF);
    write_token(f, &locw);                      /* sub 0 */
    forward_serve_read_index(f->fw, &f->resps); /* sub 1, a served call */
    forward_stop(f->fw);
    /* The first write had answered; the four others get STOPPED. */
    assert_int_equal(f->nanswers, 5);
    for (size_t i = 1; i < 5; i++)
        assert_int_equal(f->answers[i].res.status, FORWARD_STOPPED);
    assert_true(f->subs[0].detached);
    assert_true(f->subs[1].detached);
    assert_int_equal(f->nresps, 1);
    assert_int_equal(f->resps[0].rc, MESH_ECLOSED);
    assert_int_equal(f->timer_at, FORWARD_NO_DEADLINE);
    /* Calls still out complete later: nothing more is answered, their ops are freed. */
    forward_call_done(f->calls[1].op, MESH_ECLOSED, NULL, 0, NULL);
    reply_ok(f, 2, FSM_OUT_DELETED, 1, 6);
    assert_int_equal(f->nanswers, 5);
    /* New work is refused. */
    struct raft_buffer cmd = delete_cmd("app");
    assert_true(forward_write(f->fw, NULL, &cmd, &res));
    assert_int_equal(res.status, FORWARD_FAILED);
    assert_true(forward_read(f->fw, NULL, false, &res));
    assert_int_equal(res.status, FORWARD_FAILED);
    char why[64];
    uint8_t some[8] = {0};
    assert_int_equal(forward_serve_apply(f->fw, f, some, sizeof some, why, sizeof why), 0);
    assert_int_equal(f->resps[1].rc, MESH_ECLOSED);
}

/* Served calls whose local request has no handle (the io may leave it NULL) cannot be detached
 * at stop: they are answered once then, and freed when raft's completion comes, which answers
 * nothing more (ASan: a use after free, or a second answer, without the fix). */
static void stop_with_served_calls_without_handle(void **state)
{
    struct fake *f = *state;
    char why[640];
    int rd, wr;
    set_leader(f, SELF);
    f->no_handle = true;
    forward_serve_read_index(f->fw, &rd);
    struct raft_buffer b = delete_cmd("ab");
    assert_int_equal(forward_serve_apply(f->fw, &wr, b.base, b.len, why, sizeof why), 0);
    raft_free(b.base);
    assert_int_equal(f->nsubs, 2);
    forward_stop(f->fw);
    assert_int_equal(f->nresps, 2);
    assert_int_equal(f->resps[0].rc, MESH_ECLOSED);
    assert_int_equal(f->resps[1].rc, MESH_ECLOSED);
    assert_false(f->subs[0].detached);
    /* raft answers both later, as it does for every request it was given */
    forward_barrier_done(f->subs[0].op, 0);
    struct fsm_result r = {.outcome = FSM_OUT_DELETED, .version = 1};
    forward_submit_done(f->subs[1].op, 0, &r, NULL);
    assert_int_equal(f->nresps, 2);
}

/* A call out at forward_free is freed with it (the daemon frees after peers_free). */
static void free_with_calls_out(void **state)
{
    struct fake *f = *state;
    int w;
    write_token(f, &w);
    forward_stop(f->fw);
    assert_int_equal(f->answers[0].res.status, FORWARD_STOPPED);
    /* teardown's forward_free frees the op; ASan reports a leak otherwise */
}

/* ---- the leader's side ----------------------------------------------------------------------- */

static void serve_apply_makes_it_canonical(void **state)
{
    struct fake *f = *state;
    int req;
    char why[640];
    set_leader(f, SELF);
    f->st.commit = 77;
    /* Loose JSON, as a member might send it: spaces, keys out of order, defaults missing. */
    const char *loose =
        "{ \"microservices\": [ {\"image\": \"nginx\", \"name\": \"m\"} ], \"name\": \"app\", "
        "\"kind\": \"Application\" }";
    struct raft_buffer in;
    assert_int_equal(fsm_cmd_put_app("app", loose, strlen(loose), &in), 0);
    assert_int_equal(forward_serve_apply(f->fw, &req, in.base, in.len, why, sizeof why), 0);
    raft_free(in.base);
    assert_int_equal(f->nsubs, 1);
    struct raft_buffer *out = &f->subs[0].cmd;
    assert_int_equal(out->len % 8, 0);
    struct fsm_cmd c;
    assert_int_equal(fsm_cmd_decode(out->base, out->len, &c), 0);
    assert_int_equal(c.type, FSM_CMD_PUT_APP);
    json_t *canon = NULL;
    struct spec_errors errs;
    assert_int_equal(spec_from_bytes(loose, strlen(loose), &canon, &errs), 0);
    char *text = spec_dump(canon);
    assert_int_equal(c.value_len, strlen(text));
    assert_memory_equal(c.value, text, c.value_len);
    free(text);
    json_decref(canon);
    struct fsm_result r = {.outcome = FSM_OUT_CREATED, .version = 1};
    forward_submit_done(f->subs[0].op, 0, &r, NULL);
    assert_int_equal(f->nresps, 1);
    assert_ptr_equal(f->resps[0].req, &req);
    assert_int_equal(f->resps[0].rc, 0);
    int outcome;
    uint64_t version, index;
    assert_int_equal(
        forward_reply_decode(f->resps[0].buf, f->resps[0].len, &outcome, &version, &index), 0);
    assert_int_equal(outcome, FSM_OUT_CREATED);
    assert_int_equal(version, 1);
    assert_int_equal(index, 77);
}

/* raft_uv stores entries in 8-byte units (issue 10): an unpadded command is padded. */
static void serve_apply_pads(void **state)
{
    struct fake *f = *state;
    char why[640];
    set_leader(f, SELF);
    struct raft_buffer b = delete_cmd("ab"); /* 6 bytes of msgpack, 2 of padding */
    size_t len = b.len;
    while (len > 0 && ((uint8_t *)b.base)[len - 1] == 0)
        len--;
    assert_int_equal(len % 8 != 0, 1);
    assert_int_equal(forward_serve_apply(f->fw, f, b.base, len, why, sizeof why), 0);
    raft_free(b.base);
    assert_int_equal(f->subs[0].cmd.len % 8, 0);
    struct fsm_cmd c;
    assert_int_equal(fsm_cmd_decode(f->subs[0].cmd.base, f->subs[0].cmd.len, &c), 0);
    assert_int_equal(c.type, FSM_CMD_DELETE_APP);
    forward_submit_done(f->subs[0].op, MESH_ECLOSED, NULL, NULL);
    assert_int_equal(f->resps[0].rc, MESH_ECLOSED);
    assert_string_equal(f->resps[0].msg, "write failed");
}

/* A write the leader proposed and then lost leadership over may still commit under the next
 * leader: the answer must not be MESH_ENOTLEADER, the one code on which a follower sends the
 * write again (it would be applied twice). */
static void serve_apply_leadership_lost_is_not_resent(void **state)
{
    struct fake *f = *state;
    char why[640];
    set_leader(f, SELF);
    struct raft_buffer b = delete_cmd("ab");
    assert_int_equal(forward_serve_apply(f->fw, f, b.base, b.len, why, sizeof why), 0);
    raft_free(b.base);
    struct mesh_err e;
    mesh_errf(&e, MESH_ESTATE, "leadership lost before the write committed; retry");
    forward_submit_done(f->subs[0].op, MESH_ESTATE, NULL, &e);
    assert_int_equal(f->nresps, 1);
    assert_int_not_equal(f->resps[0].rc, MESH_ENOTLEADER);
    assert_int_equal(f->resps[0].rc, MESH_EAGAIN);
    assert_non_null(strstr(f->resps[0].msg, "leadership lost"));
}

static void serve_apply_refusals(void **state)
{
    struct fake *f = *state;
    char why[640];
    set_leader(f, SELF);
    /* Not a command. */
    assert_int_equal(forward_serve_apply(f->fw, f, (const uint8_t *)"\x01\x02", 2, why, sizeof why),
                     MESH_EINVAL);
    assert_int_equal(f->resps[0].rc, MESH_EINVAL);
    assert_non_null(strstr(f->resps[0].msg, "not a command this leader accepts"));
    /* A spec that names another application. */
    const char *other = "{\"kind\":\"Application\",\"name\":\"other\",\"microservices\":"
                        "[{\"name\":\"m\",\"image\":\"nginx\"}]}";
    struct raft_buffer b;
    assert_int_equal(fsm_cmd_put_app("app", other, strlen(other), &b), 0);
    assert_int_equal(forward_serve_apply(f->fw, f, b.base, b.len, why, sizeof why), MESH_EINVAL);
    raft_free(b.base);
    assert_string_equal(f->resps[1].msg, "application app: the spec names another one");
    /* A spec that is not valid. */
    assert_int_equal(fsm_cmd_put_app("app", "{}", 2, &b), 0);
    assert_int_equal(forward_serve_apply(f->fw, f, b.base, b.len, why, sizeof why), MESH_EINVAL);
    raft_free(b.base);
    assert_non_null(strstr(f->resps[2].msg, "application app: "));
    /* A record the daemon would not write; one it would. */
    assert_int_equal(fsm_cmd_put_rec("expose/x/n", "no", 2, &b), 0);
    assert_int_equal(forward_serve_apply(f->fw, f, b.base, b.len, why, sizeof why), MESH_EINVAL);
    raft_free(b.base);
    assert_string_equal(f->resps[3].msg,
                        "record expose/x/n: not a service declaration this node would write");
    assert_int_equal(fsm_cmd_put_rec("expose/x/n", "ok", 2, &b), 0);
    assert_int_equal(forward_serve_apply(f->fw, f, b.base, b.len, why, sizeof why), 0);
    raft_free(b.base);
    assert_int_equal(f->nsubs, 1);
    /* Not the leader any more (raft refused it before proposing): MESH_ENOTLEADER, which
     * followers send to the next leader. */
    f->submit_rc = MESH_ESTATE;
    b = delete_cmd("app");
    assert_int_equal(forward_serve_apply(f->fw, f, b.base, b.len, why, sizeof why), 0);
    raft_free(b.base);
    assert_int_equal(f->resps[4].rc, MESH_ENOTLEADER);
    assert_string_equal(f->resps[4].msg, "not the leader (any more): retry");
}

static void serve_read_index(void **state)
{
    struct fake *f = *state;
    int a, b;
    set_leader(f, SELF);
    f->st.commit = 123456789;
    forward_serve_read_index(f->fw, &a);
    forward_serve_read_index(f->fw, &b);
    forward_barrier_done(f->subs[0].op, 0);
    forward_barrier_done(f->subs[1].op, MESH_ESTATE);
    uint64_t idx;
    assert_int_equal(forward_read_index_decode(f->resps[0].buf, f->resps[0].len, &idx), 0);
    assert_int_equal(idx, 123456789);
    assert_int_equal(f->resps[1].rc, MESH_ESTATE);
    assert_string_equal(f->resps[1].msg, "leadership lost; retry");
    f->submit_rc = MESH_ESTATE;
    forward_serve_read_index(f->fw, &a);
    assert_string_equal(f->resps[2].msg, "not the leader (any more): retry");
}

/* ---- codecs ---------------------------------------------------------------------------------- */

static void reply_codecs(void **state)
{
    (void)state;
    uint8_t buf[FORWARD_REPLY_MAX];
    int outcome = -1;
    uint64_t v = 0, i = 0;
    size_t n = forward_reply_encode(FSM_OUT_UNKNOWN, UINT64_MAX, UINT64_MAX, buf, sizeof buf);
    assert_true(n > 0 && n <= FORWARD_REPLY_MAX);
    assert_int_equal(forward_reply_decode(buf, n, &outcome, &v, &i), 0);
    assert_int_equal(outcome, FSM_OUT_UNKNOWN);
    assert_true(v == UINT64_MAX && i == UINT64_MAX);
    assert_int_equal(forward_reply_encode(1, UINT64_MAX, UINT64_MAX, buf, 10), 0);
    for (size_t k = 0; k < n; k++) /* every truncation fails, outputs untouched */
        assert_int_equal(forward_reply_decode(buf, k, &outcome, &v, &i), MESH_EMALFORMED);
    assert_int_equal(outcome, FSM_OUT_UNKNOWN);
    /* A newer leader's extra elements are ignored; an outcome out of range is not. */
    assert_int_equal(
        forward_reply_decode((const uint8_t *)"\x94\x01\x02\x03\xa1x", 6, &outcome, &v, &i), 0);
    assert_true(outcome == 1 && v == 2 && i == 3);
    assert_int_equal(forward_reply_decode((const uint8_t *)"\x93\x08\x02\x03", 4, &outcome, &v, &i),
                     MESH_EMALFORMED);
    assert_int_equal(forward_reply_decode((const uint8_t *)"\x92\x01\x02", 3, &outcome, &v, &i),
                     MESH_EMALFORMED);
    assert_int_equal(forward_reply_decode(NULL, 0, &outcome, &v, &i), MESH_EMALFORMED);

    uint8_t rb[FORWARD_READ_INDEX_REPLY_MAX];
    n = forward_read_index_encode(UINT64_MAX, rb, sizeof rb);
    assert_true(n > 0);
    assert_int_equal(forward_read_index_decode(rb, n, &i), 0);
    assert_true(i == UINT64_MAX);
    assert_int_equal(forward_read_index_decode(rb, n - 1, &i), MESH_EMALFORMED);
    assert_int_equal(forward_read_index_decode((const uint8_t *)"\xff", 1, &i), MESH_EMALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(write_on_leader_applies_here),
        T(write_local_disk_full_and_failure),
        T(write_without_leader_answers_at_once),
        T(forwarded_write_then_read_your_writes),
        T(read_your_writes_is_best_effort),
        T(forged_write_index_costs_one_wait),
        T(leader_refusals_are_final),
        T(lost_reply_is_not_resent),
        T(not_leader_is_resent_to_the_next_leader),
        T(link_state_error_is_not_resent),
        T(not_leader_then_this_node_leads),
        T(resends_are_bounded),
        T(waiting_for_a_leader_times_out),
        T(write_timeout_then_late_reply),
        T(local_write_timeout_detaches),
        T(consistent_read_on_a_follower),
        T(consistent_read_replica_too_slow),
        T(consistent_read_failures),
        T(consistent_read_on_the_leader),
        T(stop_answers_everyone_once),
        T(free_with_calls_out),
        T(stop_with_served_calls_without_handle),
        T(serve_apply_makes_it_canonical),
        T(serve_apply_pads),
        T(serve_apply_leadership_lost_is_not_resent),
        T(serve_apply_refusals),
        T(serve_read_index),
        T(reply_codecs),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
