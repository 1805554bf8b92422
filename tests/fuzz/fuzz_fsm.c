/* libFuzzer harness for the desired-state machine (consensus/fsm.h): the same arbitrary bytes
 * as a committed command (what any node can put in the Raft log) and as a snapshot (what
 * arrives in InstallSnapshot or is read back from disk).
 *   - apply never fails on content and never crashes; the state changes only by an outcome
 *     that says so, and stays canonical (snapshot -> restore -> snapshot gives equal bytes);
 *   - every placement's application exists (DELETE_APP takes its placements along);
 *   - restore through raft's callback: on failure the old state is kept byte for byte and the
 *     buffer stays the caller's; on success the buffer is consumed and the state re-encodes to
 *     a snapshot that restores to the same state. LeakSanitizer checks both ownership paths.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icommon -Iconsensus \
 *       tests/fuzz/fuzz_fsm.c consensus/fsm.c common/wire.c common/err.c common/addr.c \
 *       -lraft -lmsgpackc -o fuzz_fsm */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsm.h"

static void must_create(struct fsm *f, struct raft_buffer b)
{
    struct fsm_result r;
    if (fsm_apply_cmd(f, b.base, b.len, &r) != 0 || r.outcome != FSM_OUT_CREATED)
        abort();
    raft_free(b.base);
}

/* Revision after seeding; one change more makes it SEEDED_REVISION + 1. */
#define SEEDED_REVISION 6

/* Three applications (mod_rev 1..3), two placements of "web", one drained node. */
static struct fsm *seeded(void)
{
    struct fsm *f;
    struct raft_buffer b;
    if (fsm_new(&f) != 0)
        abort();
    static const char *const names[] = {"a", "web", "zeta"};
    for (size_t i = 0; i < 3; i++) {
        if (fsm_cmd_put_app(names[i], "{\"x\":1}", 7, &b) != 0)
            abort();
        must_create(f, b);
    }
    if (fsm_cmd_place("web", 2, "front", 0, "n1", "scheduled", &b) != 0)
        abort();
    must_create(f, b);
    if (fsm_cmd_place("web", 2, "front", 1, "", "no node matches", &b) != 0)
        abort();
    must_create(f, b);
    if (fsm_cmd_cordon("n2", true, true, &b) != 0)
        abort();
    must_create(f, b);
    if (fsm_revision(f) != SEEDED_REVISION)
        abort();
    return f;
}

/* Every placement names an existing application, in strictly ascending key order. */
static void check_placements(const struct fsm *f)
{
    if (fsm_placement_count(f) > FSM_PLACEMENTS_MAX || fsm_cordon_count(f) > FSM_CORDONS_MAX)
        abort();
    for (size_t i = 0; i < fsm_placement_count(f); i++) {
        struct fsm_placement p, q;
        if (fsm_placement_at(f, i, &p) != 0 || fsm_app_get(f, p.app, NULL, NULL, NULL) != 0 ||
            p.replica >= FSM_REPLICAS_MAX || strlen(p.reason) > FSM_REASON_MAX ||
            (p.node[0] && !fsm_node_name_valid(p.node, strlen(p.node))) ||
            fsm_placement_get(f, p.app, p.ms, p.replica, &q) != 0 || q.node != p.node)
            abort();
    }
    for (size_t i = 0; i < fsm_cordon_count(f); i++) {
        struct fsm_cordon c;
        if (fsm_cordon_at(f, i, &c) != 0 || fsm_cordon_get(f, c.node, NULL) != 0)
            abort();
    }
}

static struct raft_buffer snap(const struct fsm *f)
{
    struct raft_buffer b;
    if (fsm_snapshot_encode(f, &b) != 0)
        abort();
    return b;
}

static int same_bytes(struct raft_buffer a, struct raft_buffer b)
{
    return a.len == b.len && memcmp(a.base, b.base, a.len) == 0;
}

/* The state re-encodes canonically: restoring its snapshot elsewhere gives the same bytes. */
static void check_canonical(const struct fsm *f)
{
    struct raft_buffer s = snap(f);
    struct fsm *g;
    if (fsm_new(&g) != 0 || fsm_restore_bytes(g, s.base, s.len) != 0)
        abort();
    struct raft_buffer t = snap(g);
    if (!same_bytes(s, t) || fsm_app_count(g) != fsm_app_count(f) ||
        fsm_revision(g) != fsm_revision(f) || fsm_placement_count(g) != fsm_placement_count(f) ||
        fsm_cordon_count(g) != fsm_cordon_count(f))
        abort();
    raft_free(s.base);
    raft_free(t.base);
    fsm_free(g);
}

static void as_command(const uint8_t *data, size_t size)
{
    struct fsm *f = seeded();
    struct raft_buffer before = snap(f);
    struct raft_fsm *rf = fsm_raft(f);
    struct raft_buffer cmd = {.base = (void *)data, .len = size};
    void *result = NULL;
    if (rf->apply(rf, &cmd, &result) != 0 || result == NULL)
        abort(); /* only running out of memory may fail */
    const struct fsm_result *r = result;
    struct raft_buffer after = snap(f);
    int changed = !same_bytes(before, after);
    switch (r->outcome) {
    case FSM_OUT_CREATED:
    case FSM_OUT_UPDATED:
    case FSM_OUT_DELETED:
        if (!changed || fsm_revision(f) != SEEDED_REVISION + 1 || r->err != 0)
            abort();
        break;
    case FSM_OUT_UNCHANGED:
    case FSM_OUT_NOT_FOUND:
        if (changed || r->err != 0)
            abort();
        break;
    case FSM_OUT_REJECTED:
    case FSM_OUT_UNKNOWN:
        if (changed || r->err == 0)
            abort();
        break;
    default:
        abort();
    }
    check_placements(f);
    check_canonical(f);
    raft_free(before.base);
    raft_free(after.base);
    fsm_free(f);
}

static void as_snapshot(const uint8_t *data, size_t size)
{
    struct fsm *f = seeded();
    struct raft_buffer before = snap(f);
    struct raft_fsm *rf = fsm_raft(f);
    struct raft_buffer buf = {.base = raft_malloc(size ? size : 1), .len = size};
    if (!buf.base)
        abort();
    if (size)
        memcpy(buf.base, data, size);
    int rv = rf->restore(rf, &buf);
    if (rv != 0) {
        if (rv != RAFT_MALFORMED)
            abort();
        struct raft_buffer after = snap(f);
        if (!same_bytes(before, after))
            abort(); /* old state kept */
        raft_free(after.base);
        raft_free(buf.base); /* still ours, as raft frees it on failure */
    } else {
        if (fsm_app_count(f) > FSM_APPS_MAX)
            abort();
        for (size_t i = 0; i < fsm_app_count(f); i++) {
            struct fsm_app a;
            const uint8_t *spec;
            size_t len;
            uint64_t version;
            if (fsm_app_at(f, i, &a) != 0 || a.spec_len == 0 || a.spec_len > FSM_SPEC_MAX ||
                !fsm_app_name_valid(a.name, strlen(a.name)) ||
                fsm_app_get(f, a.name, &spec, &len, &version) != 0 || spec != a.spec ||
                version != a.version)
                abort();
        }
        check_placements(f);
        check_canonical(f);
    }
    raft_free(before.base);
    fsm_free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    as_command(data, size);
    as_snapshot(data, size);
    return 0;
}
