/* The desired-state machine (consensus/fsm.h): commands, results, bounds, snapshots and
 * restore directly, then inside a 3-server canonical/raft cluster (raft_fixture: in-memory I/O,
 * simulated time and network), including a server that falls behind the leader's snapshot and
 * catches up through InstallSnapshot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "err.h"
#include "fsm.h"
#include "wire.h"

/* ---- helpers ---- */

static struct fsm *new_fsm(void)
{
    struct fsm *f = NULL;
    assert_int_equal(fsm_new(&f), 0);
    assert_non_null(f);
    return f;
}

static struct fsm_result put(struct fsm *f, const char *name, const char *spec)
{
    struct raft_buffer b;
    struct fsm_result r;
    assert_int_equal(fsm_cmd_put_app(name, spec, strlen(spec), &b), 0);
    assert_int_equal(fsm_apply_cmd(f, b.base, b.len, &r), 0);
    raft_free(b.base);
    return r;
}

static struct fsm_result del(struct fsm *f, const char *name)
{
    struct raft_buffer b;
    struct fsm_result r;
    assert_int_equal(fsm_cmd_delete_app(name, &b), 0);
    assert_int_equal(fsm_apply_cmd(f, b.base, b.len, &r), 0);
    raft_free(b.base);
    return r;
}

/* Applies raw bytes (a hand-made command). */
static struct fsm_result apply_raw(struct fsm *f, const void *p, size_t len)
{
    struct fsm_result r;
    assert_int_equal(fsm_apply_cmd(f, p, len, &r), 0);
    return r;
}

/* The state's snapshot bytes: two machines hold the same state iff these compare equal
 * (the encoding is canonical). The caller frees with raft_free. */
static struct raft_buffer snap(const struct fsm *f)
{
    struct raft_buffer b;
    assert_int_equal(fsm_snapshot_encode(f, &b), 0);
    return b;
}

static void assert_same_state(const struct fsm *a, const struct fsm *b)
{
    struct raft_buffer x = snap(a), y = snap(b);
    assert_int_equal(x.len, y.len);
    assert_memory_equal(x.base, y.base, x.len);
    raft_free(x.base);
    raft_free(y.base);
}

static void assert_spec(const struct fsm *f, const char *name, const char *spec, uint64_t version)
{
    const uint8_t *s;
    size_t len;
    uint64_t v;
    assert_int_equal(fsm_app_get(f, name, &s, &len, &v), 0);
    assert_int_equal(len, strlen(spec));
    assert_memory_equal(s, spec, len);
    assert_int_equal(v, version);
}

/* Packs a msgpack value sequence with the packer into a fixed buffer. */
struct pk {
    uint8_t buf[4096];
    struct wire_wr w;
};

static msgpack_packer *pk_start(struct pk *p)
{
    wire_wr_init(&p->w, p->buf, sizeof p->buf);
    return &p->w.pk;
}

/* ---- commands ---- */

static void put_update_unchanged_delete(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    assert_int_equal(fsm_revision(f), 0);

    struct fsm_result r = put(f, "sensors", "{\"a\":1}");
    assert_int_equal(r.outcome, FSM_OUT_CREATED);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.revision, 1);
    assert_spec(f, "sensors", "{\"a\":1}", 1);

    r = put(f, "sensors", "{\"a\":1}");
    assert_int_equal(r.outcome, FSM_OUT_UNCHANGED);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.revision, 1); /* no bump */

    r = put(f, "sensors", "{\"a\":2}");
    assert_int_equal(r.outcome, FSM_OUT_UPDATED);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.revision, 2);
    assert_spec(f, "sensors", "{\"a\":2}", 2);

    r = put(f, "other", "{}");
    assert_int_equal(r.outcome, FSM_OUT_CREATED);
    assert_int_equal(r.version, 1);
    assert_int_equal(fsm_app_count(f), 2);

    r = del(f, "sensors");
    assert_int_equal(r.outcome, FSM_OUT_DELETED);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.revision, 4);
    assert_int_equal(fsm_app_get(f, "sensors", NULL, NULL, NULL), MESH_ENOTFOUND);

    r = del(f, "sensors");
    assert_int_equal(r.outcome, FSM_OUT_NOT_FOUND);
    assert_int_equal(r.revision, 4);

    /* Created again: version restarts, mod_rev tells it apart from the old one. */
    r = put(f, "sensors", "{\"a\":2}");
    assert_int_equal(r.outcome, FSM_OUT_CREATED);
    assert_int_equal(r.version, 1);
    struct fsm_app a;
    assert_int_equal(fsm_app_at(f, 1, &a), 0);
    assert_string_equal(a.name, "sensors");
    assert_int_equal(a.mod_rev, 5);

    struct fsm_stats st = fsm_get_stats(f);
    assert_int_equal(st.applied, 7);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.unknown, 0);
    assert_string_equal(fsm_outcome_str(FSM_OUT_UPDATED), "updated");
    fsm_free(f);
}

static void iteration_in_name_order(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    const char *names[] = {"m", "a", "zz", "b", "a.b", "A", "z"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_int_equal(put(f, names[i], "{}").outcome, FSM_OUT_CREATED);
    const char *want[] = {"A", "a", "a.b", "b", "m", "z", "zz"};
    assert_int_equal(fsm_app_count(f), 7);
    for (size_t i = 0; i < 7; i++) {
        struct fsm_app a;
        assert_int_equal(fsm_app_at(f, i, &a), 0);
        assert_string_equal(a.name, want[i]);
        assert_int_equal(a.spec_len, 2);
    }
    struct fsm_app a;
    assert_int_equal(fsm_app_at(f, 7, &a), MESH_ENOTFOUND);
    fsm_free(f);
}

static void encoders_refuse_bad_input(void **state)
{
    (void)state;
    struct raft_buffer b = {.base = (void *)0x1, .len = 7};
    static char big[FSM_SPEC_MAX + 1];
    char longname[FSM_APP_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(fsm_cmd_put_app("", "{}", 2, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_put_app("a b", "{}", 2, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_put_app("a/b", "{}", 2, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_put_app(longname, "{}", 2, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_put_app("ok", "{}", 0, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_put_app("ok", big, sizeof big, &b), MESH_ETOOBIG);
    assert_int_equal(fsm_cmd_delete_app("x\n", &b), MESH_EINVAL);
    assert_ptr_equal(b.base, (void *)0x1); /* untouched */
    assert_int_equal(b.len, 7);

    /* The largest spec and name pass. */
    longname[FSM_APP_NAME_MAX] = '\0';
    memset(big, 'x', sizeof big);
    struct fsm *f = new_fsm();
    assert_int_equal(fsm_cmd_put_app(longname, big, FSM_SPEC_MAX, &b), 0);
    struct fsm_result r;
    assert_int_equal(fsm_apply_cmd(f, b.base, b.len, &r), 0);
    assert_int_equal(r.outcome, FSM_OUT_CREATED);
    raft_free(b.base);
    fsm_free(f);
}

/* Committed entries that make no sense are skipped, identically everywhere, and counted. */
static void malformed_and_unknown_commands_are_skipped(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    put(f, "keep", "{}");
    struct raft_buffer before = snap(f);
    struct pk p;
    msgpack_packer *pk;
    struct fsm_result r;

    /* Not msgpack, empty, a bare integer. */
    static const uint8_t junk[] = {0xc1, 0xff, 0x00};
    r = apply_raw(f, junk, sizeof junk);
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);
    assert_int_equal(r.err, MESH_EMALFORMED);
    r = apply_raw(f, NULL, 0);
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);
    r = apply_raw(f, (const uint8_t[]){0x01}, 1);
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);

    /* An array that lies about its length (0xdd + 2^32-1). */
    r = apply_raw(f, (const uint8_t[]){0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01}, 7);
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);

    /* Unknown command type, unknown format: skipped as unknown. */
    pk = pk_start(&p);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(pk, 77);
    wire_pack_str(pk, "keep", 4);
    r = apply_raw(f, p.buf, p.w.len);
    assert_int_equal(r.outcome, FSM_OUT_UNKNOWN);
    assert_int_equal(r.err, MESH_EUNSUPPORTED);
    pk = pk_start(&p);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, 2);
    msgpack_pack_uint64(pk, FSM_CMD_DELETE_APP);
    wire_pack_str(pk, "keep", 4);
    assert_int_equal(apply_raw(f, p.buf, p.w.len).outcome, FSM_OUT_UNKNOWN);

    /* A delete with an extra argument, a put without its spec, a spec as str, a bad name. */
    pk = pk_start(&p);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(pk, FSM_CMD_DELETE_APP);
    wire_pack_str(pk, "keep", 4);
    msgpack_pack_nil(pk);
    assert_int_equal(apply_raw(f, p.buf, p.w.len).outcome, FSM_OUT_REJECTED);
    pk = pk_start(&p);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(pk, FSM_CMD_PUT_APP);
    wire_pack_str(pk, "new", 3);
    assert_int_equal(apply_raw(f, p.buf, p.w.len).outcome, FSM_OUT_REJECTED);
    pk = pk_start(&p);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(pk, FSM_CMD_PUT_APP);
    wire_pack_str(pk, "new", 3);
    wire_pack_str(pk, "{}", 2);
    assert_int_equal(apply_raw(f, p.buf, p.w.len).outcome, FSM_OUT_REJECTED);
    pk = pk_start(&p);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(pk, FSM_CMD_PUT_APP);
    wire_pack_str(pk, "n\0w", 3);
    wire_pack_bin(pk, "{}", 2);
    r = apply_raw(f, p.buf, p.w.len);
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);
    assert_int_equal(r.err, MESH_EINVAL);
    /* Trailing bytes after a valid command. */
    struct raft_buffer b;
    assert_int_equal(fsm_cmd_delete_app("keep", &b), 0);
    uint8_t trail[64];
    memcpy(trail, b.base, b.len);
    trail[b.len] = 0xc0;
    assert_int_equal(apply_raw(f, trail, b.len + 1).outcome, FSM_OUT_REJECTED);
    raft_free(b.base);

    /* A spec over the bound, made by hand (the encoder refuses it). */
    size_t biglen = FSM_SPEC_MAX + 1, cap = biglen + 64;
    uint8_t *huge = calloc(1, cap);
    assert_non_null(huge);
    struct wire_wr w;
    wire_wr_init(&w, huge, cap);
    msgpack_pack_array(&w.pk, 4);
    msgpack_pack_uint64(&w.pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(&w.pk, FSM_CMD_PUT_APP);
    wire_pack_str(&w.pk, "big", 3);
    msgpack_pack_bin(&w.pk, biglen);
    w.len += biglen; /* body: zeros already there */
    assert_false(w.overflow);
    r = apply_raw(f, huge, w.len);
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);
    assert_int_equal(r.err, MESH_ETOOBIG);
    free(huge);

    struct fsm_stats st = fsm_get_stats(f);
    assert_int_equal(st.unknown, 2);
    assert_int_equal(st.rejected, 10);
    assert_int_equal(st.applied, 1);

    struct raft_buffer after = snap(f);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.base, after.base, before.len);
    raft_free(before.base);
    raft_free(after.base);
    fsm_free(f);
}

static void app_limit(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    char name[16];
    for (int i = 0; i < FSM_APPS_MAX; i++) {
        snprintf(name, sizeof name, "app-%04d", i);
        assert_int_equal(put(f, name, "{}").outcome, FSM_OUT_CREATED);
    }
    struct fsm_result r = put(f, "one-too-many", "{}");
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);
    assert_int_equal(r.err, MESH_EFULL);
    /* Updates and deletes still work at the limit; then there is room again. */
    assert_int_equal(put(f, "app-0007", "{\"x\":1}").outcome, FSM_OUT_UPDATED);
    assert_int_equal(del(f, "app-0000").outcome, FSM_OUT_DELETED);
    assert_int_equal(put(f, "one-too-many", "{}").outcome, FSM_OUT_CREATED);
    assert_int_equal(fsm_app_count(f), FSM_APPS_MAX);

    /* A full state survives a snapshot round trip. */
    struct raft_buffer b = snap(f);
    struct fsm *g = new_fsm();
    assert_int_equal(fsm_restore_bytes(g, b.base, b.len), 0);
    assert_same_state(f, g);
    raft_free(b.base);
    fsm_free(g);
    fsm_free(f);
}

/* ---- snapshots ---- */

static void snapshot_round_trip(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    put(f, "b", "{\"b\":1}");
    put(f, "a", "{\"a\":1}");
    put(f, "a", "{\"a\":2}");
    put(f, "c", "{}");
    del(f, "c");
    struct raft_buffer b = snap(f);

    struct fsm *g = new_fsm();
    put(g, "stale", "{}");
    assert_int_equal(fsm_restore_bytes(g, b.base, b.len), 0);
    assert_same_state(f, g);
    assert_int_equal(fsm_revision(g), 5);
    assert_int_equal(fsm_app_count(g), 2);
    assert_spec(g, "a", "{\"a\":2}", 2);
    assert_spec(g, "b", "{\"b\":1}", 1);
    assert_int_equal(fsm_app_get(g, "stale", NULL, NULL, NULL), MESH_ENOTFOUND);
    assert_int_equal(fsm_get_stats(g).restores, 1);
    /* Both go on identically. */
    struct fsm_result rf = put(f, "a", "{\"a\":3}"), rg = put(g, "a", "{\"a\":3}");
    assert_memory_equal(&rf, &rg, sizeof rf);
    assert_same_state(f, g);

    /* The empty state too. */
    struct fsm *e = new_fsm();
    struct raft_buffer eb = snap(e);
    assert_int_equal(fsm_restore_bytes(g, eb.base, eb.len), 0);
    assert_int_equal(fsm_app_count(g), 0);
    assert_int_equal(fsm_revision(g), 0);
    raft_free(eb.base);
    fsm_free(e);

    raft_free(b.base);
    fsm_free(g);
    fsm_free(f);
}

/* Restores `len` bytes and expects `want`, with g's state unchanged. */
static void expect_restore_fails(struct fsm *g, const void *p, size_t len, int want)
{
    struct raft_buffer before = snap(g);
    assert_int_equal(fsm_restore_bytes(g, p, len), want);
    struct raft_buffer after = snap(g);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.base, after.base, before.len);
    raft_free(before.base);
    raft_free(after.base);
}

/* Hand-made snapshots below use format 1 (applications only), which is still read. */
#define SNAP_V1 1

/* Packs a snapshot of apps {name, spec, version, mod_rev} by hand. */
struct happ {
    const char *name;
    const char *spec;
    uint64_t version, mod_rev;
};

static size_t hand_snapshot(struct pk *p, uint64_t format, uint64_t revision,
                            const struct happ *apps, size_t n)
{
    msgpack_packer *pk = pk_start(p);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, format);
    msgpack_pack_uint64(pk, revision);
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_array(pk, 4);
        wire_pack_str(pk, apps[i].name, strlen(apps[i].name));
        wire_pack_bin(pk, apps[i].spec, strlen(apps[i].spec));
        msgpack_pack_uint64(pk, apps[i].version);
        msgpack_pack_uint64(pk, apps[i].mod_rev);
    }
    assert_false(p->w.overflow);
    return p->w.len;
}

static void restore_rejects_garbage_and_keeps_state(void **state)
{
    (void)state;
    struct fsm *g = new_fsm();
    put(g, "kept", "{\"k\":1}");
    put(g, "kept", "{\"k\":2}");
    struct pk p;
    size_t n;

    static const uint8_t junk[] = {0x93, 0x01, 0x05, 0xdd, 0xff, 0xff, 0xff, 0xff};
    expect_restore_fails(g, junk, sizeof junk, MESH_EMALFORMED);
    expect_restore_fails(g, NULL, 0, MESH_EMALFORMED);
    expect_restore_fails(g, "hello", 5, MESH_EMALFORMED);

    /* Every proper prefix of a valid snapshot fails; the whole succeeds. */
    struct happ ok[] = {{"a", "{}", 1, 1}, {"b", "{\"x\":1}", 3, 4}};
    n = hand_snapshot(&p, SNAP_V1, 4, ok, 2);
    for (size_t i = 0; i < n; i++)
        expect_restore_fails(g, p.buf, i, MESH_EMALFORMED);
    /* Trailing byte. */
    p.buf[n] = 0xc0;
    expect_restore_fails(g, p.buf, n + 1, MESH_EMALFORMED);

    /* Unknown format. */
    n = hand_snapshot(&p, 9, 4, ok, 2);
    expect_restore_fails(g, p.buf, n, MESH_EUNSUPPORTED);

    /* Out of order, duplicates, bad name, empty spec, version 0, mod_rev beyond revision. */
    struct happ unsorted[] = {{"b", "{}", 1, 1}, {"a", "{}", 1, 2}};
    n = hand_snapshot(&p, SNAP_V1, 4, unsorted, 2);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    struct happ dup[] = {{"a", "{}", 1, 1}, {"a", "{}", 1, 2}};
    n = hand_snapshot(&p, SNAP_V1, 4, dup, 2);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    struct happ badname[] = {{"a b", "{}", 1, 1}};
    n = hand_snapshot(&p, SNAP_V1, 4, badname, 1);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    struct happ empty[] = {{"a", "", 1, 1}};
    n = hand_snapshot(&p, SNAP_V1, 4, empty, 1);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    struct happ v0[] = {{"a", "{}", 0, 1}};
    n = hand_snapshot(&p, SNAP_V1, 4, v0, 1);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    struct happ future[] = {{"a", "{}", 1, 5}};
    n = hand_snapshot(&p, SNAP_V1, 4, future, 1);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);

    /* More applications than the bound. */
    uint8_t many[FSM_APPS_MAX * 16 + 32];
    struct wire_wr w;
    wire_wr_init(&w, many, sizeof many);
    msgpack_pack_array(&w.pk, 3);
    msgpack_pack_uint64(&w.pk, SNAP_V1);
    msgpack_pack_uint64(&w.pk, 5000);
    msgpack_pack_array(&w.pk, FSM_APPS_MAX + 1);
    for (int i = 0; i < FSM_APPS_MAX + 1; i++) {
        char name[8];
        snprintf(name, sizeof name, "a%05d", i);
        msgpack_pack_array(&w.pk, 4);
        wire_pack_str(&w.pk, name, 6);
        wire_pack_bin(&w.pk, "{}", 2);
        msgpack_pack_uint64(&w.pk, 1);
        msgpack_pack_uint64(&w.pk, 1);
    }
    assert_false(w.overflow);
    expect_restore_fails(g, many, w.len, MESH_EMALFORMED);

    assert_spec(g, "kept", "{\"k\":2}", 2);
    assert_int_equal(fsm_revision(g), 2);
    assert_int_equal(fsm_get_stats(g).restores, 0);

    /* The valid one does restore. */
    n = hand_snapshot(&p, SNAP_V1, 4, ok, 2);
    assert_int_equal(fsm_restore_bytes(g, p.buf, n), 0);
    assert_spec(g, "b", "{\"x\":1}", 3);
    assert_int_equal(fsm_app_get(g, "kept", NULL, NULL, NULL), MESH_ENOTFOUND);
    fsm_free(g);
}

/* ---- placements and cordons ---- */

static struct fsm_result place(struct fsm *f, const char *app, uint64_t mod_rev, const char *ms,
                               uint32_t replica, const char *node, const char *reason)
{
    struct raft_buffer b;
    struct fsm_result r;
    assert_int_equal(fsm_cmd_place(app, mod_rev, ms, replica, node, reason, &b), 0);
    assert_int_equal(b.len % 8, 0);
    assert_int_equal(fsm_apply_cmd(f, b.base, b.len, &r), 0);
    raft_free(b.base);
    return r;
}

static struct fsm_result unplace(struct fsm *f, const char *app, const char *ms, uint32_t replica)
{
    struct raft_buffer b;
    struct fsm_result r;
    assert_int_equal(fsm_cmd_unplace(app, ms, replica, &b), 0);
    assert_int_equal(b.len % 8, 0);
    assert_int_equal(fsm_apply_cmd(f, b.base, b.len, &r), 0);
    raft_free(b.base);
    return r;
}

static struct fsm_result cordon(struct fsm *f, const char *node, bool on, bool drain)
{
    struct raft_buffer b;
    struct fsm_result r;
    assert_int_equal(fsm_cmd_cordon(node, on, drain, &b), 0);
    assert_int_equal(b.len % 8, 0);
    assert_int_equal(fsm_apply_cmd(f, b.base, b.len, &r), 0);
    raft_free(b.base);
    return r;
}

static uint64_t mod_rev_of(const struct fsm *f, const char *name)
{
    for (size_t i = 0; i < fsm_app_count(f); i++) {
        struct fsm_app a;
        assert_int_equal(fsm_app_at(f, i, &a), 0);
        if (strcmp(a.name, name) == 0)
            return a.mod_rev;
    }
    fail_msg("no app %s", name);
    return 0;
}

static void assert_placed(const struct fsm *f, const char *app, const char *ms, uint32_t replica,
                          const char *node, const char *reason)
{
    struct fsm_placement p;
    assert_int_equal(fsm_placement_get(f, app, ms, replica, &p), 0);
    assert_string_equal(p.app, app);
    assert_string_equal(p.ms, ms);
    assert_int_equal(p.replica, replica);
    assert_string_equal(p.node, node);
    assert_string_equal(p.reason, reason);
}

static void place_update_unplace_and_stale(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    put(f, "web", "{\"v\":1}");
    uint64_t mr = mod_rev_of(f, "web");
    uint64_t rev = fsm_revision(f);

    struct fsm_result r = place(f, "web", mr, "front", 0, "n1", "scheduled");
    assert_int_equal(r.outcome, FSM_OUT_CREATED);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.revision, rev + 1);
    assert_placed(f, "web", "front", 0, "n1", "scheduled");
    r = place(f, "web", mr, "front", 0, "n1", "scheduled");
    assert_int_equal(r.outcome, FSM_OUT_UNCHANGED);
    assert_int_equal(r.revision, rev + 1);
    r = place(f, "web", mr, "front", 0, "n1", "moved by request");
    assert_int_equal(r.outcome, FSM_OUT_UPDATED);
    r = place(f, "web", mr, "front", 1, "", "no node matches: 2 nodes dead");
    assert_int_equal(r.outcome, FSM_OUT_CREATED);
    assert_placed(f, "web", "front", 1, "", "no node matches: 2 nodes dead");
    r = place(f, "web", mr, "back", 0, "n2", NULL);
    assert_int_equal(r.outcome, FSM_OUT_CREATED);
    assert_placed(f, "web", "back", 0, "n2", "");
    assert_int_equal(fsm_placement_count(f), 3);

    /* (app, ms, replica) order. */
    struct fsm_placement p;
    assert_int_equal(fsm_placement_at(f, 0, &p), 0);
    assert_string_equal(p.ms, "back");
    assert_int_equal(fsm_placement_at(f, 2, &p), 0);
    assert_int_equal(p.replica, 1);
    assert_int_equal(fsm_placement_at(f, 3, &p), MESH_ENOTFOUND);

    /* Stale: the app changed since the scheduler looked, or is not there. */
    put(f, "web", "{\"v\":2}");
    rev = fsm_revision(f);
    r = place(f, "web", mr, "front", 2, "n1", "");
    assert_int_equal(r.outcome, FSM_OUT_NOT_FOUND);
    assert_int_equal(r.revision, rev);
    r = place(f, "nothing", 1, "front", 0, "n1", "");
    assert_int_equal(r.outcome, FSM_OUT_NOT_FOUND);
    assert_int_equal(fsm_placement_get(f, "web", "front", 2, &p), MESH_ENOTFOUND);
    /* The update left the placements alone. */
    assert_int_equal(fsm_placement_count(f), 3);
    assert_int_equal(place(f, "web", mod_rev_of(f, "web"), "front", 2, "n1", "").outcome,
                     FSM_OUT_CREATED);

    r = unplace(f, "web", "front", 1);
    assert_int_equal(r.outcome, FSM_OUT_DELETED);
    r = unplace(f, "web", "front", 1);
    assert_int_equal(r.outcome, FSM_OUT_NOT_FOUND);
    assert_int_equal(fsm_placement_count(f), 3);
    assert_int_equal(fsm_get_stats(f).rejected, 0);
    fsm_free(f);
}

static void delete_app_removes_its_placements(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    static const char *const apps[] = {"a", "ab", "b"};
    for (size_t i = 0; i < 3; i++) {
        put(f, apps[i], "{}");
        uint64_t mr = mod_rev_of(f, apps[i]);
        for (uint32_t k = 0; k < 3; k++)
            assert_int_equal(place(f, apps[i], mr, "m", k, "n1", "").outcome, FSM_OUT_CREATED);
    }
    size_t first, count;
    fsm_placement_range(f, "ab", &first, &count);
    assert_int_equal(first, 3);
    assert_int_equal(count, 3);
    fsm_placement_range(f, "zz", &first, &count);
    assert_int_equal(count, 0);

    uint64_t rev = fsm_revision(f);
    struct fsm_result r = del(f, "a");
    assert_int_equal(r.outcome, FSM_OUT_DELETED);
    assert_int_equal(r.revision, rev + 1); /* one change */
    assert_int_equal(fsm_placement_count(f), 6);
    fsm_placement_range(f, "a", &first, &count);
    assert_int_equal(count, 0);
    fsm_placement_range(f, "ab", &first, &count);
    assert_int_equal(first, 0);
    assert_int_equal(count, 3);
    assert_placed(f, "ab", "m", 0, "n1", "");
    /* Re-created: a placement made for the old one is stale. */
    put(f, "a", "{}");
    assert_int_equal(place(f, "a", 1, "m", 0, "n1", "").outcome, FSM_OUT_NOT_FOUND);
    del(f, "b");
    del(f, "ab");
    assert_int_equal(fsm_placement_count(f), 0);
    fsm_free(f);
}

static void cordons(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    bool drain = true;
    assert_int_equal(fsm_cordon_get(f, "n1", &drain), MESH_ENOTFOUND);
    assert_int_equal(cordon(f, "n2", true, false).outcome, FSM_OUT_CREATED);
    assert_int_equal(cordon(f, "n1", true, false).outcome, FSM_OUT_CREATED);
    assert_int_equal(cordon(f, "n1", true, false).outcome, FSM_OUT_UNCHANGED);
    assert_int_equal(fsm_revision(f), 2);
    assert_int_equal(fsm_cordon_get(f, "n1", &drain), 0);
    assert_false(drain);
    assert_int_equal(cordon(f, "n1", true, true).outcome, FSM_OUT_UPDATED);
    assert_int_equal(fsm_cordon_get(f, "n1", &drain), 0);
    assert_true(drain);
    assert_int_equal(fsm_cordon_count(f), 2);
    struct fsm_cordon c;
    assert_int_equal(fsm_cordon_at(f, 0, &c), 0);
    assert_string_equal(c.node, "n1");
    assert_true(c.drain);
    assert_int_equal(fsm_cordon_at(f, 1, &c), 0);
    assert_string_equal(c.node, "n2");
    assert_false(c.drain);
    assert_int_equal(fsm_cordon_at(f, 2, &c), MESH_ENOTFOUND);

    assert_int_equal(cordon(f, "n1", false, false).outcome, FSM_OUT_DELETED);
    assert_int_equal(cordon(f, "n1", false, false).outcome, FSM_OUT_UNCHANGED);
    assert_int_equal(fsm_cordon_get(f, "n1", NULL), MESH_ENOTFOUND);
    assert_int_equal(fsm_cordon_count(f), 1);
    assert_int_equal(fsm_revision(f), 4);

    /* Drain without cordon: the encoder refuses; by hand, the machine rejects it. */
    struct raft_buffer b = {.base = (void *)0x1, .len = 3};
    assert_int_equal(fsm_cmd_cordon("n1", false, true, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_cordon("-n1", true, false, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_cordon("", true, false, &b), MESH_EINVAL);
    assert_ptr_equal(b.base, (void *)0x1);
    struct pk p;
    msgpack_packer *pk = pk_start(&p);
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(pk, FSM_CMD_CORDON);
    wire_pack_str(pk, "n1", 2);
    msgpack_pack_false(pk);
    msgpack_pack_true(pk);
    struct fsm_result r = apply_raw(f, p.buf, p.w.len);
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);
    assert_int_equal(r.err, MESH_EINVAL);
    fsm_free(f);
}

static void placement_encoders_refuse_bad_input(void **state)
{
    (void)state;
    struct raft_buffer b = {.base = (void *)0x1, .len = 3};
    char reason[FSM_REASON_MAX + 2], node[FSM_NODE_NAME_MAX + 2];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    memset(node, 'n', sizeof node - 1);
    node[sizeof node - 1] = '\0';
    assert_int_equal(fsm_cmd_place("a", 1, "m", FSM_REPLICAS_MAX, "n", "", &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_place("a", 1, "m", 0, node, "", &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_place("a", 1, "m", 0, "n", reason, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_place("a", 1, "m", 0, "n", "tab\there", &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_place("a", 1, "m", 0, "n", "\xc3\xa9", &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_place("a", 1, "m/x", 0, "n", "", &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_place("a b", 1, "m", 0, "n", "", &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_place("a", 1, "m", 0, ".n", "", &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_place("a", 1, "m", 0, NULL, "", &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_unplace("a", "", 0, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_unplace("a", "m", FSM_REPLICAS_MAX, &b), MESH_EINVAL);
    assert_ptr_equal(b.base, (void *)0x1);

    /* The longest of everything passes. */
    reason[FSM_REASON_MAX] = '\0';
    node[FSM_NODE_NAME_MAX] = '\0';
    char name[FSM_APP_NAME_MAX + 1];
    memset(name, 'x', FSM_APP_NAME_MAX);
    name[FSM_APP_NAME_MAX] = '\0';
    struct fsm *f = new_fsm();
    put(f, name, "{}");
    struct fsm_result r = place(f, name, 1, name, FSM_REPLICAS_MAX - 1, node, reason);
    assert_int_equal(r.outcome, FSM_OUT_CREATED);
    assert_placed(f, name, name, FSM_REPLICAS_MAX - 1, node, reason);

    /* Committed by hand: wrong argument count, bad node, bad reason, replica out of range. */
    struct pk p;
    msgpack_packer *pk;
    for (int variant = 0; variant < 5; variant++) {
        pk = pk_start(&p);
        msgpack_pack_array(pk, variant == 0 ? 7 : 8);
        msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
        msgpack_pack_uint64(pk, FSM_CMD_PLACE);
        wire_pack_str(pk, name, FSM_APP_NAME_MAX);
        msgpack_pack_uint64(pk, 1);
        wire_pack_str(pk, "m", 1);
        msgpack_pack_uint64(pk, variant == 3 ? FSM_REPLICAS_MAX : 0);
        if (variant != 0)
            wire_pack_str(pk, variant == 1 ? "n 1" : "n1", 3 - (variant != 1));
        wire_pack_str(pk, variant == 2 ? "a\nb" : "ok", variant == 2 ? 3 : 2);
        if (variant == 4)
            msgpack_pack_nil(pk); /* one too many */
        r = apply_raw(f, p.buf, p.w.len);
        assert_int_equal(r.outcome, FSM_OUT_REJECTED);
    }
    assert_int_equal(fsm_get_stats(f).rejected, 5);
    assert_int_equal(fsm_placement_count(f), 1);
    fsm_free(f);
}

static void placement_limit(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    put(f, "big", "{}");
    uint64_t mr = mod_rev_of(f, "big");
    char ms[16];
    for (int i = 0; i < FSM_PLACEMENTS_MAX; i++) {
        snprintf(ms, sizeof ms, "m%04d", i / FSM_REPLICAS_MAX);
        assert_int_equal(
            place(f, "big", mr, ms, (uint32_t)(i % FSM_REPLICAS_MAX), "n1", "").outcome,
            FSM_OUT_CREATED);
    }
    struct fsm_result r = place(f, "big", mr, "zzz", 0, "n1", "");
    assert_int_equal(r.outcome, FSM_OUT_REJECTED);
    assert_int_equal(r.err, MESH_EFULL);
    /* Updates still work at the limit. */
    assert_int_equal(place(f, "big", mr, "m0000", 0, "n2", "").outcome, FSM_OUT_UPDATED);

    struct raft_buffer b = snap(f);
    struct fsm *g = new_fsm();
    assert_int_equal(fsm_restore_bytes(g, b.base, b.len), 0);
    assert_same_state(f, g);
    assert_int_equal(fsm_placement_count(g), FSM_PLACEMENTS_MAX);
    raft_free(b.base);
    /* Deleting the app frees them all. */
    del(g, "big");
    assert_int_equal(fsm_placement_count(g), 0);
    fsm_free(g);
    fsm_free(f);
}

static void snapshot_v2_round_trip(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    put(f, "web", "{}");
    put(f, "db", "{}");
    place(f, "web", mod_rev_of(f, "web"), "front", 1, "n2", "scheduled");
    place(f, "web", mod_rev_of(f, "web"), "front", 0, "", "no node matches: 1 node dead");
    place(f, "db", mod_rev_of(f, "db"), "pg", 0, "n1", "pinned");
    cordon(f, "n3", true, true);
    cordon(f, "n1", true, false);
    struct raft_buffer b = snap(f);
    assert_int_equal(((const uint8_t *)b.base)[1], FSM_SNAP_FORMAT); /* [2, ... */

    struct fsm *g = new_fsm();
    put(g, "stale", "{}");
    cordon(g, "gone", true, false);
    assert_int_equal(fsm_restore_bytes(g, b.base, b.len), 0);
    assert_same_state(f, g);
    assert_placed(g, "web", "front", 0, "", "no node matches: 1 node dead");
    assert_placed(g, "db", "pg", 0, "n1", "pinned");
    assert_int_equal(fsm_cordon_get(g, "gone", NULL), MESH_ENOTFOUND);
    bool drain = false;
    assert_int_equal(fsm_cordon_get(g, "n3", &drain), 0);
    assert_true(drain);
    /* Both go on identically. */
    struct fsm_result rf = del(f, "web"), rg = del(g, "web");
    assert_memory_equal(&rf, &rg, sizeof rf);
    assert_same_state(f, g);
    assert_int_equal(fsm_placement_count(g), 1);
    raft_free(b.base);
    fsm_free(g);
    fsm_free(f);
}

/* A format-2 snapshot by hand: apps {name}, placements, cordons. */
struct hplc {
    const char *app, *ms;
    uint64_t replica;
    const char *node, *reason;
};
struct hcordon {
    const char *node;
    bool drain;
};

static size_t hand_snapshot_v2(struct pk *p, const char *const *apps, size_t napps,
                               const struct hplc *plcs, size_t nplcs, const struct hcordon *cs,
                               size_t ncs)
{
    msgpack_packer *pk = pk_start(p);
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint64(pk, 2);
    msgpack_pack_uint64(pk, 10);
    msgpack_pack_array(pk, (uint32_t)napps);
    for (size_t i = 0; i < napps; i++) {
        msgpack_pack_array(pk, 4);
        wire_pack_str(pk, apps[i], strlen(apps[i]));
        wire_pack_bin(pk, "{}", 2);
        msgpack_pack_uint64(pk, 1);
        msgpack_pack_uint64(pk, i + 1);
    }
    msgpack_pack_array(pk, (uint32_t)nplcs);
    for (size_t i = 0; i < nplcs; i++) {
        msgpack_pack_array(pk, 5);
        wire_pack_str(pk, plcs[i].app, strlen(plcs[i].app));
        wire_pack_str(pk, plcs[i].ms, strlen(plcs[i].ms));
        msgpack_pack_uint64(pk, plcs[i].replica);
        wire_pack_str(pk, plcs[i].node, strlen(plcs[i].node));
        wire_pack_str(pk, plcs[i].reason, strlen(plcs[i].reason));
    }
    msgpack_pack_array(pk, (uint32_t)ncs);
    for (size_t i = 0; i < ncs; i++) {
        msgpack_pack_array(pk, 2);
        wire_pack_str(pk, cs[i].node, strlen(cs[i].node));
        if (cs[i].drain)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
    assert_false(p->w.overflow);
    return p->w.len;
}

static void restore_v2_rejects_bad_records(void **state)
{
    (void)state;
    struct fsm *g = new_fsm();
    put(g, "kept", "{}");
    place(g, "kept", 1, "m", 0, "n1", "");
    struct pk p;
    size_t n;
    static const char *const apps[] = {"a", "b"};
    const struct hplc good[] = {
        {"a", "m", 0, "n1", ""}, {"a", "m", 1, "", "x"}, {"b", "m", 0, "n2", "y"}};
    const struct hcordon goodc[] = {{"n1", false}, {"n2", true}};

    n = hand_snapshot_v2(&p, apps, 2, good, 3, goodc, 2);
    for (size_t i = 0; i < n; i++)
        expect_restore_fails(g, p.buf, i, MESH_EMALFORMED);
    p.buf[n] = 0;
    expect_restore_fails(g, p.buf, n + 1, MESH_EMALFORMED);

    const struct hplc orphan[] = {{"c", "m", 0, "n1", ""}};
    n = hand_snapshot_v2(&p, apps, 2, orphan, 1, NULL, 0);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    const struct hplc unsorted[] = {{"a", "m", 1, "n1", ""}, {"a", "m", 0, "n1", ""}};
    n = hand_snapshot_v2(&p, apps, 2, unsorted, 2, NULL, 0);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    const struct hplc dup[] = {{"a", "m", 0, "n1", ""}, {"a", "m", 0, "n2", ""}};
    n = hand_snapshot_v2(&p, apps, 2, dup, 2, NULL, 0);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    const struct hplc badnode[] = {{"a", "m", 0, "n 1", ""}};
    n = hand_snapshot_v2(&p, apps, 2, badnode, 1, NULL, 0);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    const struct hplc badreason[] = {{"a", "m", 0, "n1", "\x1b[2J"}};
    n = hand_snapshot_v2(&p, apps, 2, badreason, 1, NULL, 0);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    const struct hplc badreplica[] = {{"a", "m", FSM_REPLICAS_MAX, "n1", ""}};
    n = hand_snapshot_v2(&p, apps, 2, badreplica, 1, NULL, 0);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    const struct hcordon dupc[] = {{"n1", false}, {"n1", true}};
    n = hand_snapshot_v2(&p, apps, 2, NULL, 0, dupc, 2);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    const struct hcordon badc[] = {{"", false}};
    n = hand_snapshot_v2(&p, apps, 2, NULL, 0, badc, 1);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);

    /* Format 2 with format 1's shape, and the other way round. */
    struct happ one[] = {{"a", "{}", 1, 1}};
    n = hand_snapshot(&p, 2, 4, one, 1);
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    n = hand_snapshot_v2(&p, apps, 2, good, 3, goodc, 2);
    p.buf[1] = 1;
    expect_restore_fails(g, p.buf, n, MESH_EMALFORMED);
    assert_int_equal(fsm_get_stats(g).restores, 0);
    assert_placed(g, "kept", "m", 0, "n1", "");

    n = hand_snapshot_v2(&p, apps, 2, good, 3, goodc, 2);
    assert_int_equal(fsm_restore_bytes(g, p.buf, n), 0);
    assert_int_equal(fsm_placement_count(g), 3);
    assert_int_equal(fsm_cordon_count(g), 2);
    assert_placed(g, "b", "m", 0, "n2", "y");
    /* Re-encoded, it is the same bytes (canonical) in format 3: a sixth element, the (empty)
     * records. */
    struct raft_buffer b = snap(g);
    assert_int_equal(b.len, n + 1);
    assert_int_equal(((uint8_t *)b.base)[0], 0x96);
    assert_int_equal(((uint8_t *)b.base)[1], 3);
    assert_memory_equal((uint8_t *)b.base + 2, p.buf + 2, n - 2);
    assert_int_equal(((uint8_t *)b.base)[n], 0x90);
    raft_free(b.base);

    /* Format 1 restores with no placements or cordons. */
    n = hand_snapshot(&p, SNAP_V1, 4, one, 1);
    assert_int_equal(fsm_restore_bytes(g, p.buf, n), 0);
    assert_int_equal(fsm_placement_count(g), 0);
    assert_int_equal(fsm_cordon_count(g), 0);
    fsm_free(g);
}

static struct fsm_result apply_buf(struct fsm *g, struct raft_buffer b)
{
    struct fsm_result res;
    assert_int_equal(fsm_apply_cmd(g, b.base, b.len, &res), 0);
    raft_free(b.base);
    return res;
}

/* Records: create, update, unchanged, delete, bounds, and the format 3 snapshot. */
static void records_put_delete_snapshot(void **state)
{
    (void)state;
    struct fsm *g = new_fsm();
    struct raft_buffer b;
    assert_int_equal(fsm_cmd_put_rec("svc/expose/plc@gw1", "{\"a\":1}", 7, &b), 0);
    assert_int_equal(apply_buf(g, b).outcome, FSM_OUT_CREATED);
    assert_int_equal(fsm_cmd_put_rec("svc/expose/plc@gw1", "{\"a\":1}", 7, &b), 0);
    assert_int_equal(apply_buf(g, b).outcome, FSM_OUT_UNCHANGED);
    assert_int_equal(fsm_cmd_put_rec("svc/expose/plc@gw1", "{\"a\":2}", 7, &b), 0);
    struct fsm_result r = apply_buf(g, b);
    assert_int_equal(r.outcome, FSM_OUT_UPDATED);
    assert_int_equal(r.version, 2);
    assert_int_equal(fsm_cmd_put_rec("svc/connect/gw1/127.0.0.1:80", "{}", 2, &b), 0);
    apply_buf(g, b);
    assert_int_equal(fsm_rec_count(g), 2);
    struct fsm_app rec;
    assert_int_equal(fsm_rec_at(g, 0, &rec), 0);
    assert_string_equal(rec.name, "svc/connect/gw1/127.0.0.1:80"); /* key order */
    assert_int_equal(fsm_rec_get(g, "svc/expose/plc@gw1", &rec), 0);
    assert_memory_equal(rec.spec, "{\"a\":2}", 7);
    assert_int_equal(fsm_app_count(g), 0); /* records are not applications */
    /* Bad keys and sizes are refused at encoding. */
    char big[FSM_REC_MAX + 1];
    memset(big, 'x', sizeof big);
    assert_int_equal(fsm_cmd_put_rec("a b", "{}", 2, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_put_rec("", "{}", 2, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_put_rec("k", "", 0, &b), MESH_EINVAL);
    assert_int_equal(fsm_cmd_put_rec("k", big, sizeof big, &b), MESH_ETOOBIG);
    /* Snapshot round trip keeps them, byte for byte. */
    struct raft_buffer s1 = snap(g);
    struct fsm *h = new_fsm();
    assert_int_equal(fsm_restore_bytes(h, s1.base, s1.len), 0);
    assert_int_equal(fsm_rec_count(h), 2);
    struct raft_buffer s2 = snap(h);
    assert_int_equal(s1.len, s2.len);
    assert_memory_equal(s1.base, s2.base, s1.len);
    raft_free(s1.base);
    raft_free(s2.base);
    /* Delete: DELETED, then NOT_FOUND. */
    assert_int_equal(fsm_cmd_delete_rec("svc/expose/plc@gw1", &b), 0);
    assert_int_equal(apply_buf(h, b).outcome, FSM_OUT_DELETED);
    assert_int_equal(fsm_cmd_delete_rec("svc/expose/plc@gw1", &b), 0);
    assert_int_equal(apply_buf(h, b).outcome, FSM_OUT_NOT_FOUND);
    assert_int_equal(fsm_rec_count(h), 1);
    fsm_free(g);
    fsm_free(h);
}

/* The struct raft_fsm callbacks and their ownership rules, called as raft calls them. */
static void raft_callbacks_ownership(void **state)
{
    (void)state;
    struct fsm *f = new_fsm();
    struct raft_fsm *rf = fsm_raft(f);
    assert_int_equal(rf->version, 1);
    assert_ptr_equal(rf->data, f);

    struct raft_buffer cmd;
    assert_int_equal(fsm_cmd_put_app("web", "{}", 2, &cmd), 0);
    void *result = NULL;
    assert_int_equal(rf->apply(rf, &cmd, &result), 0);
    const struct fsm_result *r = result;
    assert_non_null(r);
    assert_int_equal(r->outcome, FSM_OUT_CREATED);
    assert_int_equal(r->version, 1);
    raft_free(cmd.base); /* apply borrowed it */

    struct raft_buffer *bufs = NULL;
    unsigned n_bufs = 0;
    assert_int_equal(rf->snapshot(rf, &bufs, &n_bufs), 0);
    assert_int_equal(n_bufs, 1);

    /* Restore into another machine: success consumes base. */
    struct fsm *g = new_fsm();
    struct raft_fsm *rg = fsm_raft(g);
    struct raft_buffer copy = {.base = raft_malloc(bufs[0].len), .len = bufs[0].len};
    memcpy(copy.base, bufs[0].base, copy.len);
    assert_int_equal(rg->restore(rg, &copy), 0);
    assert_same_state(f, g);

    /* Failure leaves base to the caller (raft frees it) and the state as it was. */
    struct raft_buffer bad = {.base = raft_malloc(3), .len = 3};
    memcpy(bad.base, "\x91\x07\x00", 3);
    assert_int_equal(rg->restore(rg, &bad), RAFT_MALFORMED);
    assert_non_null(bad.base);
    raft_free(bad.base);
    assert_same_state(f, g);

    /* raft owns snapshot buffers (fsm version 1): free them as raft does. */
    raft_free(bufs[0].base);
    raft_free(bufs);
    fsm_free(g);
    fsm_free(f);
    fsm_free(NULL);
}

/* ---- a 3-server cluster on raft_fixture ---- */

#define N_SERVERS 3

struct cluster {
    struct raft_fixture f;
    struct fsm *fsms[N_SERVERS];
};

static void cluster_start(struct cluster *c)
{
    memset(c, 0, sizeof *c);
    assert_int_equal(raft_fixture_initialize(&c->f), 0);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        c->fsms[i] = new_fsm();
        assert_int_equal(raft_fixture_grow(&c->f, fsm_raft(c->fsms[i])), 0);
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&c->f, N_SERVERS, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&c->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&c->f), 0);
    raft_fixture_elect(&c->f, 0);
    assert_int_equal(raft_fixture_leader_index(&c->f), 0);
}

static void cluster_stop(struct cluster *c)
{
    raft_fixture_close(&c->f); /* closes the raft instances; then the machines can go */
    for (unsigned i = 0; i < N_SERVERS; i++)
        fsm_free(c->fsms[i]);
}

/* What a raft_apply callback saw. */
struct applied {
    struct raft_apply req;
    int calls;
    int status;
    struct fsm_result result; /* copied in the callback, as fsm.h asks */
};

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct applied *a = req->data;
    a->calls++;
    a->status = status;
    if (status == 0 && result)
        a->result = *(const struct fsm_result *)result;
}

/* Proposes buf on the leader (raft takes buf.base) and steps until every alive, connected
 * server has applied it. */
static void cluster_apply(struct cluster *c, struct raft_buffer buf, struct applied *a,
                          unsigned n_wait)
{
    struct raft *leader = raft_fixture_get(&c->f, 0);
    memset(a, 0, sizeof *a);
    a->req.data = a;
    assert_int_equal(raft_apply(leader, &a->req, &buf, 1, apply_cb), 0);
    raft_index index = a->req.index; /* set by raft_apply */
    for (unsigned i = 0; i < n_wait; i++)
        assert_true(raft_fixture_step_until_applied(&c->f, i, index, 2000));
    assert_int_equal(a->calls, 1);
    assert_int_equal(a->status, 0);
}

static void cluster_put(struct cluster *c, const char *name, const char *spec, struct applied *a,
                        unsigned n_wait)
{
    struct raft_buffer b;
    assert_int_equal(fsm_cmd_put_app(name, spec, strlen(spec), &b), 0);
    cluster_apply(c, b, a, n_wait);
}

static void cluster_replicates_commands(void **state)
{
    (void)state;
    struct cluster c;
    struct applied a;
    cluster_start(&c);

    cluster_put(&c, "sensors", "{\"v\":1}", &a, N_SERVERS);
    assert_int_equal(a.result.outcome, FSM_OUT_CREATED);
    assert_int_equal(a.result.version, 1);
    cluster_put(&c, "sensors", "{\"v\":1}", &a, N_SERVERS);
    assert_int_equal(a.result.outcome, FSM_OUT_UNCHANGED);
    cluster_put(&c, "sensors", "{\"v\":2}", &a, N_SERVERS);
    assert_int_equal(a.result.outcome, FSM_OUT_UPDATED);
    assert_int_equal(a.result.version, 2);

    /* An entry of a type nobody knows (a newer node wrote it): every replica skips it, counts
     * it, and the cluster goes on. */
    uint8_t raw[] = {0x93, FSM_CMD_FORMAT, 0x63, 0xa1, 'x'};
    struct raft_buffer u = {.base = raft_malloc(sizeof raw), .len = sizeof raw};
    memcpy(u.base, raw, sizeof raw);
    cluster_apply(&c, u, &a, N_SERVERS);
    assert_int_equal(a.result.outcome, FSM_OUT_UNKNOWN);
    for (unsigned i = 0; i < N_SERVERS; i++)
        assert_int_equal(fsm_get_stats(c.fsms[i]).unknown, 1);

    struct raft_buffer d;
    assert_int_equal(fsm_cmd_delete_app("nothing", &d), 0);
    cluster_apply(&c, d, &a, N_SERVERS);
    assert_int_equal(a.result.outcome, FSM_OUT_NOT_FOUND);
    cluster_put(&c, "web", "{}", &a, N_SERVERS);

    /* Placements and cordons replicate the same way. */
    struct raft_buffer pb;
    assert_int_equal(
        fsm_cmd_place("web", mod_rev_of(c.fsms[0], "web"), "front", 0, "n2", "scheduled", &pb), 0);
    cluster_apply(&c, pb, &a, N_SERVERS);
    assert_int_equal(a.result.outcome, FSM_OUT_CREATED);
    assert_int_equal(fsm_cmd_cordon("n2", true, true, &pb), 0);
    cluster_apply(&c, pb, &a, N_SERVERS);
    assert_int_equal(a.result.outcome, FSM_OUT_CREATED);
    assert_placed(c.fsms[2], "web", "front", 0, "n2", "scheduled");
    assert_int_equal(fsm_cordon_get(c.fsms[1], "n2", NULL), 0);

    for (unsigned i = 1; i < N_SERVERS; i++)
        assert_same_state(c.fsms[0], c.fsms[i]);
    assert_spec(c.fsms[2], "sensors", "{\"v\":2}", 2);
    assert_int_equal(fsm_app_count(c.fsms[1]), 2);
    cluster_stop(&c);
}

static void lagging_server_catches_up_by_snapshot(void **state)
{
    (void)state;
    struct cluster c;
    struct applied a;
    cluster_start(&c);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&c.f, i), 4);
        raft_set_snapshot_trailing(raft_fixture_get(&c.f, i), 1);
    }
    cluster_put(&c, "early", "{}", &a, N_SERVERS);

    /* Server 2 drops off the network; the other two go on and compact their logs. */
    raft_fixture_disconnect(&c.f, 0, 2);
    raft_fixture_disconnect(&c.f, 2, 0);
    raft_fixture_disconnect(&c.f, 1, 2);
    raft_fixture_disconnect(&c.f, 2, 1);
    char name[16], spec[32];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "app-%02d", i % 7);
        snprintf(spec, sizeof spec, "{\"n\":%d}", i);
        cluster_put(&c, name, spec, &a, 2);
    }
    assert_int_equal(a.result.outcome, FSM_OUT_UPDATED);
    cluster_put(&c, "early", "{\"late\":true}", &a, 2);
    struct raft *leader = raft_fixture_get(&c.f, 0);
    /* Let the leader finish writing its snapshot. */
    raft_fixture_step_until_elapsed(&c.f, 200);
    assert_true(leader->log.snapshot.last_index > raft_last_applied(raft_fixture_get(&c.f, 2)));
    assert_int_equal(fsm_app_count(c.fsms[2]), 1);

    raft_fixture_reconnect(&c.f, 0, 2);
    raft_fixture_reconnect(&c.f, 2, 0);
    raft_fixture_reconnect(&c.f, 1, 2);
    raft_fixture_reconnect(&c.f, 2, 1);
    assert_true(raft_fixture_step_until_applied(&c.f, 2, raft_last_applied(leader), 5000));
    assert_true(raft_fixture_n_recv(&c.f, 2, RAFT_IO_INSTALL_SNAPSHOT) >= 1);
    assert_true(fsm_get_stats(c.fsms[2]).restores >= 1);
    assert_same_state(c.fsms[0], c.fsms[2]);
    assert_spec(c.fsms[2], "early", "{\"late\":true}", 2);

    /* And it keeps applying normally afterwards. */
    cluster_put(&c, "after", "{}", &a, N_SERVERS);
    assert_same_state(c.fsms[1], c.fsms[2]);
    assert_int_equal(fsm_app_count(c.fsms[2]), 9);
    cluster_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_update_unchanged_delete),
        cmocka_unit_test(iteration_in_name_order),
        cmocka_unit_test(encoders_refuse_bad_input),
        cmocka_unit_test(malformed_and_unknown_commands_are_skipped),
        cmocka_unit_test(app_limit),
        cmocka_unit_test(snapshot_round_trip),
        cmocka_unit_test(restore_rejects_garbage_and_keeps_state),
        cmocka_unit_test(place_update_unplace_and_stale),
        cmocka_unit_test(delete_app_removes_its_placements),
        cmocka_unit_test(cordons),
        cmocka_unit_test(placement_encoders_refuse_bad_input),
        cmocka_unit_test(placement_limit),
        cmocka_unit_test(snapshot_v2_round_trip),
        cmocka_unit_test(restore_v2_rejects_bad_records),
        cmocka_unit_test(records_put_delete_snapshot),
        cmocka_unit_test(raft_callbacks_ownership),
        cmocka_unit_test(cluster_replicates_commands),
        cmocka_unit_test(lagging_server_catches_up_by_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
