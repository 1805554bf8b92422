/* The desired-state machine; the format and the rules are in fsm.h. */
#include "fsm.h"

#include "names.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "spec.h"
#include "wire.h"

/* Whatever spec.c accepts, the machine must store. */
_Static_assert(FSM_APP_NAME_MAX >= SPEC_NAME_MAX, "app names: fsm.h bound below spec.h's");
_Static_assert(FSM_SPEC_MAX >= SPEC_MAX_ENCODED, "specs: fsm.h bound below spec.h's");
_Static_assert(FSM_REPLICAS_MAX >= SPEC_MAX_REPLICAS, "replicas: fsm.h bound below spec.h's");
_Static_assert(FSM_NODE_NAME_MAX >= SPEC_NODE_NAME_MAX, "nodes: fsm.h bound below spec.h's");
_Static_assert(FSM_APP_NAME_MAX < 256 && FSM_NODE_NAME_MAX < 256 && FSM_REASON_MAX < 256,
               "struct plc keeps string lengths in uint8_t");

/* One application: name (NUL-terminated) and spec share one allocation, spec right after the
 * name's terminator. */
struct app {
    uint32_t name_len;
    uint32_t spec_len;
    uint64_t version;
    uint64_t mod_rev;
    char *name;
    uint8_t *spec;
};

/* Applications sorted by name (memcmp order, shorter first on a common prefix): binary search
 * for lookups and a canonical snapshot for free. At most FSM_APPS_MAX, so insertion by
 * memmove is cheap. */
struct app_table {
    struct app **v;
    size_t n;
    size_t cap;
};

/* One placement; the four strings (NUL-terminated) share the allocation, right after it. */
struct plc {
    uint32_t replica;
    uint8_t app_len, ms_len, node_len, reason_len;
    char *app, *ms, *node, *reason;
};

/* Placements sorted by (app, ms, replica): an application's are consecutive, which makes
 * DELETE_APP one memmove and the snapshot canonical for free. */
struct plc_table {
    struct plc **v;
    size_t n;
    size_t cap;
};

struct cordon {
    char node[FSM_NODE_NAME_MAX + 1];
    uint8_t len;
    bool drain;
};

/* Cordoned nodes sorted by name. */
struct cordon_table {
    struct cordon *v;
    size_t n;
    size_t cap;
};

struct fsm {
    struct raft_fsm raft;
    struct app_table apps;
    struct app_table recs; /* records: key -> value, in the app layout (name, spec) */
    struct plc_table plcs;
    struct cordon_table cordons;
    uint64_t revision;
    struct fsm_stats stats;
    struct fsm_result result; /* the last apply's, handed to raft (fsm.h) */
};

/* ---- applications ---- */

static struct app *app_new(const char *name, size_t name_len, const void *spec, size_t spec_len)
{
    struct app *a = malloc(sizeof *a + name_len + 1 + spec_len);
    if (!a)
        return NULL;
    a->name = (char *)(a + 1);
    a->spec = (uint8_t *)a->name + name_len + 1;
    memcpy(a->name, name, name_len);
    a->name[name_len] = '\0';
    if (spec_len)
        memcpy(a->spec, spec, spec_len);
    a->name_len = (uint32_t)name_len;
    a->spec_len = (uint32_t)spec_len;
    a->version = 0;
    a->mod_rev = 0;
    return a;
}

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Index of name in t, or where it would go (and *found = false). */
/* Grows an array (*v, *cap elements of size elem) to hold want elements: doubling from first,
 * never beyond max. The one growth rule of the three tables. MESH_EFULL past max. */
static int grow(void **v, size_t *cap, size_t elem, size_t want, size_t first, size_t max)
{
    if (want <= *cap)
        return 0;
    if (want > max)
        return MESH_EFULL;
    size_t n = *cap ? *cap * 2 : first;
    while (n < want)
        n *= 2;
    if (n > max)
        n = max;
    void *nv = realloc(*v, n * elem);
    if (!nv)
        return MESH_ENOMEM;
    *v = nv;
    *cap = n;
    return 0;
}

static size_t table_find(const struct app_table *t, const char *name, size_t len, bool *found)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(t->v[mid]->name, t->v[mid]->name_len, name, len);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static void table_clear(struct app_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
    t->v = NULL;
    t->n = t->cap = 0;
}

static int table_reserve(struct app_table *t, size_t want, size_t max)
{
    void *v = t->v; /* through a void *, not a cast of &t->v (strict aliasing) */
    int rc = grow(&v, &t->cap, sizeof *t->v, want, 16, max);
    t->v = v;
    return rc;
}

bool fsm_app_name_valid(const char *name, size_t len)
{
    if (!name || len == 0 || len > FSM_APP_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

bool fsm_node_name_valid(const char *name, size_t len)
{
    return mesh_node_name_valid(name, len);
}

bool fsm_rec_key_valid(const char *key, size_t len)
{
    if (!key || len == 0 || len > FSM_REC_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == '/' || c == ':' || c == '@' ||
                  c == '[' || c == ']';
        if (!ok)
            return false;
    }
    return true;
}

/* Reasons reach terminals and JSON strings: printable ASCII only. */
static bool reason_valid(const char *s, size_t len)
{
    if (len > FSM_REASON_MAX || (!s && len))
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* ---- placements ---- */

/* A placement key or record as lengths and pointers (strings not NUL-terminated). */
struct plc_key {
    const char *app;
    size_t app_len;
    const char *ms;
    size_t ms_len;
    uint32_t replica;
};

static struct plc *plc_new(const struct plc_key *k, const char *node, size_t node_len,
                           const char *reason, size_t reason_len)
{
    struct plc *p = malloc(sizeof *p + k->app_len + k->ms_len + node_len + reason_len + 4);
    if (!p)
        return NULL;
    char *s = (char *)(p + 1);
    p->app = s;
    memcpy(s, k->app, k->app_len);
    s[k->app_len] = '\0';
    s += k->app_len + 1;
    p->ms = s;
    memcpy(s, k->ms, k->ms_len);
    s[k->ms_len] = '\0';
    s += k->ms_len + 1;
    p->node = s;
    if (node_len)
        memcpy(s, node, node_len);
    s[node_len] = '\0';
    s += node_len + 1;
    p->reason = s;
    if (reason_len)
        memcpy(s, reason, reason_len);
    s[reason_len] = '\0';
    p->replica = k->replica;
    p->app_len = (uint8_t)k->app_len;
    p->ms_len = (uint8_t)k->ms_len;
    p->node_len = (uint8_t)node_len;
    p->reason_len = (uint8_t)reason_len;
    return p;
}

static int plc_cmp(const struct plc *p, const struct plc_key *k)
{
    int c = name_cmp(p->app, p->app_len, k->app, k->app_len);
    if (c)
        return c;
    c = name_cmp(p->ms, p->ms_len, k->ms, k->ms_len);
    if (c)
        return c;
    return p->replica < k->replica ? -1 : p->replica > k->replica;
}

/* Index of k in t, or where it would go (and *found = false). */
static size_t plc_find(const struct plc_table *t, const struct plc_key *k, bool *found)
{
    size_t lo = 0, hi = t->n;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = plc_cmp(t->v[mid], k);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* First index whose app is not below app (lower bound over the app alone). */
static size_t plc_app_lower(const struct plc_table *t, const char *app, size_t len, bool upper)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(t->v[mid]->app, t->v[mid]->app_len, app, len);
        if (c < 0 || (upper && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void plc_clear(struct plc_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
    t->v = NULL;
    t->n = t->cap = 0;
}

static int plc_reserve(struct plc_table *t, size_t want)
{
    void *v = t->v; /* through a void *, not a cast of &t->v (strict aliasing) */
    int rc = grow(&v, &t->cap, sizeof *t->v, want, 64, FSM_PLACEMENTS_MAX);
    t->v = v;
    return rc;
}

/* Removes the placements of one application (consecutive). Returns how many. */
static size_t plc_remove_app(struct plc_table *t, const char *app, size_t len)
{
    size_t lo = plc_app_lower(t, app, len, false), hi = plc_app_lower(t, app, len, true);
    if (hi == lo)
        return 0; /* t->v may be NULL: no memmove */
    for (size_t i = lo; i < hi; i++)
        free(t->v[i]);
    memmove(&t->v[lo], &t->v[hi], (t->n - hi) * sizeof *t->v);
    t->n -= hi - lo;
    return hi - lo;
}

/* ---- cordons ---- */

static size_t cordon_find(const struct cordon_table *t, const char *node, size_t len, bool *found)
{
    size_t lo = 0, hi = t->n;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(t->v[mid].node, t->v[mid].len, node, len);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int cordon_reserve(struct cordon_table *t, size_t want)
{
    void *v = t->v; /* through a void *, not a cast of &t->v (strict aliasing) */
    int rc = grow(&v, &t->cap, sizeof *t->v, want, 8, FSM_CORDONS_MAX);
    t->v = v;
    return rc;
}

static void cordon_clear(struct cordon_table *t)
{
    free(t->v);
    t->v = NULL;
    t->n = t->cap = 0;
}

/* ---- lifecycle ---- */

static int raft_apply_fn(struct raft_fsm *rf, const struct raft_buffer *buf, void **result);
static int raft_snapshot_fn(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs);
static int raft_restore_fn(struct raft_fsm *rf, struct raft_buffer *buf);

int fsm_new(struct fsm **ret_fsm)
{
    struct fsm *fsm = calloc(1, sizeof *fsm);
    if (!fsm)
        return MESH_ENOMEM;
    fsm->raft.version = 1;
    fsm->raft.data = fsm;
    fsm->raft.apply = raft_apply_fn;
    fsm->raft.snapshot = raft_snapshot_fn;
    fsm->raft.restore = raft_restore_fn;
    *ret_fsm = fsm;
    return 0;
}

void fsm_free(struct fsm *fsm)
{
    if (!fsm)
        return;
    table_clear(&fsm->apps);
    table_clear(&fsm->recs);
    plc_clear(&fsm->plcs);
    cordon_clear(&fsm->cordons);
    free(fsm);
}

struct raft_fsm *fsm_raft(struct fsm *fsm)
{
    return &fsm->raft;
}

/* ---- commands: encoding ---- */

/* msgpack_packer callback that only counts bytes: first pass of a two-pass encoding, so the
 * raft_malloc'ed buffer has the exact size and wire_wr's bounds are a second check. */
static int count_write(void *data, const char *buf, size_t len)
{
    (void)buf;
    *(size_t *)data += len;
    return 0;
}

static void pack_cmd(msgpack_packer *pk, const struct fsm_cmd *c)
{
    static const uint32_t nargs[] = {
        [FSM_CMD_PUT_APP] = 2,    [FSM_CMD_DELETE_APP] = 1, [FSM_CMD_PLACE] = 6,
        [FSM_CMD_UNPLACE] = 3,    [FSM_CMD_CORDON] = 3,     [FSM_CMD_PUT_REC] = 2,
        [FSM_CMD_DELETE_REC] = 1,
    };
    msgpack_pack_array(pk, 2 + nargs[c->type]);
    msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(pk, c->type);
    wire_pack_str(pk, c->name, c->name_len);
    switch (c->type) {
    case FSM_CMD_PUT_APP:
    case FSM_CMD_PUT_REC:
        wire_pack_bin(pk, c->value, c->value_len);
        break;
    case FSM_CMD_PLACE:
        msgpack_pack_uint64(pk, c->mod_rev);
        wire_pack_str(pk, c->ms, c->ms_len);
        msgpack_pack_uint64(pk, c->replica);
        wire_pack_str(pk, c->node, c->node_len);
        wire_pack_str(pk, c->reason, c->reason_len);
        break;
    case FSM_CMD_UNPLACE:
        wire_pack_str(pk, c->ms, c->ms_len);
        msgpack_pack_uint64(pk, c->replica);
        break;
    case FSM_CMD_CORDON:
        if (c->cordoned)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        if (c->drain)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    default:
        break;
    }
}

/* Encodes a checked command into a raft_malloc'ed, zero-padded buffer. */
static int encode_cmd(const struct fsm_cmd *c, struct raft_buffer *out)
{
    if (!out)
        return MESH_EINVAL;
    size_t need = 0;
    msgpack_packer counter;
    msgpack_packer_init(&counter, &need, count_write);
    pack_cmd(&counter, c);

    /* raft_uv stores entries in 8-byte units and reads their lengths back rounded up (its
     * segment format pads every entry), so a command is padded with zeros to a multiple of 8;
     * the decoder accepts that padding and nothing else after the command. */
    size_t padded = (need + 7) & ~(size_t)7;
    uint8_t *base = raft_malloc(padded);
    if (!base)
        return MESH_ENOMEM;
    memset(base + need, 0, padded - need);
    struct wire_wr w;
    wire_wr_init(&w, base, need);
    pack_cmd(&w.pk, c);
    if (w.overflow || w.len != need) { /* cannot happen: both passes pack the same values */
        raft_free(base);
        return MESH_EINVAL;
    }
    out->base = base;
    out->len = padded;
    return 0;
}

/* Sets c->name from a NUL-terminated app name; false when invalid. */
static bool set_app_name(const char *name, const char **ret, size_t *ret_len)
{
    if (!name)
        return false;
    size_t len = strnlen(name, FSM_APP_NAME_MAX + 1);
    if (!fsm_app_name_valid(name, len))
        return false;
    *ret = name;
    *ret_len = len;
    return true;
}

int fsm_cmd_put_app(const char *name, const void *spec, size_t len, struct raft_buffer *out)
{
    if (len > FSM_SPEC_MAX)
        return MESH_ETOOBIG;
    struct fsm_cmd c = {.type = FSM_CMD_PUT_APP, .value = spec, .value_len = len};
    if (!spec || len == 0 || !set_app_name(name, &c.name, &c.name_len))
        return MESH_EINVAL;
    return encode_cmd(&c, out);
}

int fsm_cmd_delete_app(const char *name, struct raft_buffer *out)
{
    struct fsm_cmd c = {.type = FSM_CMD_DELETE_APP};
    if (!set_app_name(name, &c.name, &c.name_len))
        return MESH_EINVAL;
    return encode_cmd(&c, out);
}

int fsm_cmd_place(const char *app, uint64_t app_mod_rev, const char *ms, uint32_t replica,
                  const char *node, const char *reason, struct raft_buffer *out)
{
    struct fsm_cmd c = {.type = FSM_CMD_PLACE, .mod_rev = app_mod_rev, .replica = replica};
    if (!reason)
        reason = "";
    if (!node || !set_app_name(app, &c.name, &c.name_len) || !set_app_name(ms, &c.ms, &c.ms_len) ||
        replica >= FSM_REPLICAS_MAX)
        return MESH_EINVAL;
    c.node = node;
    c.node_len = strnlen(node, FSM_NODE_NAME_MAX + 1);
    if (c.node_len && !fsm_node_name_valid(node, c.node_len))
        return MESH_EINVAL;
    c.reason = reason;
    c.reason_len = strnlen(reason, FSM_REASON_MAX + 1);
    if (!reason_valid(reason, c.reason_len))
        return MESH_EINVAL;
    return encode_cmd(&c, out);
}

int fsm_cmd_unplace(const char *app, const char *ms, uint32_t replica, struct raft_buffer *out)
{
    struct fsm_cmd c = {.type = FSM_CMD_UNPLACE, .replica = replica};
    if (!set_app_name(app, &c.name, &c.name_len) || !set_app_name(ms, &c.ms, &c.ms_len) ||
        replica >= FSM_REPLICAS_MAX)
        return MESH_EINVAL;
    return encode_cmd(&c, out);
}

int fsm_cmd_put_rec(const char *key, const void *value, size_t len, struct raft_buffer *out)
{
    if (len > FSM_REC_MAX)
        return MESH_ETOOBIG;
    struct fsm_cmd c = {.type = FSM_CMD_PUT_REC, .value = value, .value_len = len, .name = key};
    c.name_len = key ? strnlen(key, FSM_REC_KEY_MAX + 1) : 0;
    if (!value || len == 0 || !fsm_rec_key_valid(key, c.name_len))
        return MESH_EINVAL;
    return encode_cmd(&c, out);
}

int fsm_cmd_delete_rec(const char *key, struct raft_buffer *out)
{
    struct fsm_cmd c = {.type = FSM_CMD_DELETE_REC, .name = key};
    c.name_len = key ? strnlen(key, FSM_REC_KEY_MAX + 1) : 0;
    if (!fsm_rec_key_valid(key, c.name_len))
        return MESH_EINVAL;
    return encode_cmd(&c, out);
}

int fsm_cmd_cordon(const char *node, bool cordoned, bool drain, struct raft_buffer *out)
{
    struct fsm_cmd c = {.type = FSM_CMD_CORDON, .cordoned = cordoned, .drain = drain};
    if (!node || (drain && !cordoned))
        return MESH_EINVAL;
    c.name = node;
    c.name_len = strnlen(node, FSM_NODE_NAME_MAX + 1);
    if (!fsm_node_name_valid(node, c.name_len))
        return MESH_EINVAL;
    return encode_cmd(&c, out);
}

/* ---- commands: decoding ---- */

/* After a command: nothing, or the zero padding encode_cmd adds (up to 7 bytes). */
static bool at_end(const struct wire_rd *r)
{
    size_t left = wire_rd_left(r);
    if (left > 7)
        return false;
    for (size_t i = r->len - left; i < r->len; i++)
        if (r->p[i] != 0)
            return false;
    return true;
}

/* Reads a string argument into (*ret, *ret_len). */
static int rd_str(struct wire_rd *r, const char **ret, size_t *ret_len)
{
    uint32_t n;
    if (wire_rd_str(r, ret, &n))
        return MESH_EMALFORMED;
    *ret_len = n;
    return 0;
}

static int rd_bin(struct wire_rd *r, const uint8_t **ret, size_t *ret_len)
{
    uint32_t n;
    if (wire_rd_bin(r, ret, &n))
        return MESH_EMALFORMED;
    *ret_len = n;
    return 0;
}

/* Reads a microservice name (the app name rule) and a replica index (snapshot entries). */
static int rd_ms_replica(struct wire_rd *r, struct plc_key *k)
{
    uint32_t n;
    uint64_t replica;
    if (wire_rd_str(r, &k->ms, &n) || wire_rd_uint(r, &replica))
        return MESH_EMALFORMED;
    if (!fsm_app_name_valid(k->ms, n) || replica >= FSM_REPLICAS_MAX)
        return MESH_EINVAL;
    k->ms_len = n;
    k->replica = (uint32_t)replica;
    return 0;
}

/* Reads the arguments of c->type (nargs of them) and checks each one's rule and bound. */
static int decode_args(struct wire_rd *r, uint32_t nargs, struct fsm_cmd *c)
{
    uint64_t v;
    switch (c->type) {
    case FSM_CMD_PUT_APP:
    case FSM_CMD_PUT_REC:
        if (nargs != 2 || rd_str(r, &c->name, &c->name_len) ||
            rd_bin(r, &c->value, &c->value_len) || !at_end(r))
            return MESH_EMALFORMED;
        if (c->type == FSM_CMD_PUT_APP ? !fsm_app_name_valid(c->name, c->name_len)
                                       : !fsm_rec_key_valid(c->name, c->name_len))
            return MESH_EINVAL;
        if (c->value_len > (c->type == FSM_CMD_PUT_APP ? FSM_SPEC_MAX : FSM_REC_MAX))
            return MESH_ETOOBIG;
        return c->value_len ? 0 : MESH_EINVAL;
    case FSM_CMD_DELETE_APP:
    case FSM_CMD_DELETE_REC:
        if (nargs != 1 || rd_str(r, &c->name, &c->name_len) || !at_end(r))
            return MESH_EMALFORMED;
        return (c->type == FSM_CMD_DELETE_APP ? fsm_app_name_valid(c->name, c->name_len)
                                              : fsm_rec_key_valid(c->name, c->name_len))
                   ? 0
                   : MESH_EINVAL;
    case FSM_CMD_PLACE:
    case FSM_CMD_UNPLACE:
        if (nargs != (c->type == FSM_CMD_PLACE ? 6u : 3u) || rd_str(r, &c->name, &c->name_len))
            return MESH_EMALFORMED;
        if (c->type == FSM_CMD_PLACE && wire_rd_uint(r, &c->mod_rev))
            return MESH_EMALFORMED;
        if (rd_str(r, &c->ms, &c->ms_len) || wire_rd_uint(r, &v))
            return MESH_EMALFORMED;
        if (c->type == FSM_CMD_PLACE &&
            (rd_str(r, &c->node, &c->node_len) || rd_str(r, &c->reason, &c->reason_len)))
            return MESH_EMALFORMED;
        if (!at_end(r))
            return MESH_EMALFORMED;
        if (!fsm_app_name_valid(c->name, c->name_len) || !fsm_app_name_valid(c->ms, c->ms_len) ||
            v >= FSM_REPLICAS_MAX || (c->node_len && !fsm_node_name_valid(c->node, c->node_len)) ||
            !reason_valid(c->reason, c->reason_len))
            return MESH_EINVAL;
        c->replica = (uint32_t)v;
        return 0;
    case FSM_CMD_CORDON:
        if (nargs != 3 || rd_str(r, &c->name, &c->name_len) || wire_rd_bool(r, &c->cordoned) ||
            wire_rd_bool(r, &c->drain) || !at_end(r))
            return MESH_EMALFORMED;
        return fsm_node_name_valid(c->name, c->name_len) && (c->cordoned || !c->drain)
                   ? 0
                   : MESH_EINVAL;
    default:
        return MESH_EUNSUPPORTED;
    }
}

int fsm_cmd_decode(const void *buf, size_t len, struct fsm_cmd *ret)
{
    struct wire_rd r;
    uint32_t n;
    uint64_t format, type;
    struct fsm_cmd c = {0};
    if (!ret || (!buf && len))
        return MESH_EINVAL;
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &n) || n < 2 || wire_rd_uint(&r, &format) || wire_rd_uint(&r, &type))
        return MESH_EMALFORMED;
    if (format != FSM_CMD_FORMAT || type == 0 || type > FSM_CMD_DELETE_REC)
        return MESH_EUNSUPPORTED;
    c.type = (unsigned)type;
    int rv = decode_args(&r, n - 2, &c);
    if (rv == 0)
        *ret = c;
    return rv;
}

int fsm_cmd_encode(const struct fsm_cmd *c, struct raft_buffer *out)
{
    /* Checked by the same rules as a decoded command: encode and decode round-trip, and
     * nothing that apply would reject can be encoded. */
    struct fsm_cmd chk;
    struct raft_buffer tmp;
    if (!c || !out || c->type == 0 || c->type > FSM_CMD_DELETE_REC)
        return MESH_EINVAL;
    int rv = encode_cmd(c, &tmp);
    if (rv)
        return rv;
    if ((rv = fsm_cmd_decode(tmp.base, tmp.len, &chk)) != 0) {
        raft_free(tmp.base);
        return rv == MESH_EMALFORMED ? MESH_EINVAL : rv;
    }
    *out = tmp;
    return 0;
}

/* ---- commands: applying ---- */

static void set_result(struct fsm *fsm, int outcome, int err, uint64_t version)
{
    fsm->result.outcome = outcome;
    fsm->result.err = err;
    fsm->result.version = version;
    fsm->result.revision = fsm->revision;
    if (outcome == FSM_OUT_REJECTED)
        fsm->stats.rejected++;
    else if (outcome == FSM_OUT_UNKNOWN)
        fsm->stats.unknown++;
    else
        fsm->stats.applied++;
}

/* Creates or replaces the entry name in t (applications and records alike): UNCHANGED for the
 * same bytes, else a new version and mod_rev. */
static int put_blob(struct fsm *fsm, struct app_table *t, size_t max, const char *name,
                    size_t name_len, const uint8_t *spec, size_t spec_len)
{
    int rv;
    bool found;
    size_t i = table_find(t, name, name_len, &found);
    if (found) {
        struct app *old = t->v[i];
        if (old->spec_len == spec_len && memcmp(old->spec, spec, spec_len) == 0) {
            set_result(fsm, FSM_OUT_UNCHANGED, 0, old->version);
            return 0;
        }
        struct app *a = app_new(name, name_len, spec, spec_len);
        if (!a)
            return MESH_ENOMEM;
        a->version = old->version + 1;
        a->mod_rev = ++fsm->revision;
        t->v[i] = a;
        free(old);
        set_result(fsm, FSM_OUT_UPDATED, 0, a->version);
        return 0;
    }
    if (t->n >= max)
        return MESH_EFULL;
    if ((rv = table_reserve(t, t->n + 1, max)) != 0)
        return rv;
    struct app *a = app_new(name, name_len, spec, spec_len);
    if (!a)
        return MESH_ENOMEM;
    memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof *t->v);
    t->v[i] = a;
    t->n++;
    a->version = 1;
    a->mod_rev = ++fsm->revision;
    set_result(fsm, FSM_OUT_CREATED, 0, a->version);
    return 0;
}

/* Removes the entry name of t (applications and records alike): DELETED, with the version it
 * had, or NOT_FOUND. An application takes its placements with it. */
static void remove_blob(struct fsm *fsm, struct app_table *t, const char *name, size_t len)
{
    bool found;
    size_t i = table_find(t, name, len, &found);
    if (!found) {
        set_result(fsm, FSM_OUT_NOT_FOUND, 0, 0);
        return;
    }
    struct app *a = t->v[i];
    uint64_t version = a->version;
    if (t == &fsm->apps)
        plc_remove_app(&fsm->plcs, a->name, a->name_len);
    memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof *t->v);
    t->n--;
    free(a);
    fsm->revision++;
    set_result(fsm, FSM_OUT_DELETED, 0, version);
}

static int apply_place(struct fsm *fsm, const struct fsm_cmd *c)
{
    struct plc_key k = {c->name, c->name_len, c->ms, c->ms_len, c->replica};
    int rv;
    /* Stale: the application is gone, or changed since the scheduler looked at it. */
    bool found;
    size_t ai = table_find(&fsm->apps, k.app, k.app_len, &found);
    if (!found || fsm->apps.v[ai]->mod_rev != c->mod_rev) {
        set_result(fsm, FSM_OUT_NOT_FOUND, 0, 0);
        return 0;
    }
    uint64_t version = fsm->apps.v[ai]->version;
    struct plc_table *t = &fsm->plcs;
    size_t i = plc_find(t, &k, &found);
    if (found) {
        struct plc *old = t->v[i];
        if (old->node_len == c->node_len && memcmp(old->node, c->node, c->node_len) == 0 &&
            old->reason_len == c->reason_len &&
            memcmp(old->reason, c->reason, c->reason_len) == 0) {
            set_result(fsm, FSM_OUT_UNCHANGED, 0, version);
            return 0;
        }
        struct plc *p = plc_new(&k, c->node, c->node_len, c->reason, c->reason_len);
        if (!p)
            return MESH_ENOMEM;
        t->v[i] = p;
        free(old);
        fsm->revision++;
        set_result(fsm, FSM_OUT_UPDATED, 0, version);
        return 0;
    }
    if (t->n >= FSM_PLACEMENTS_MAX)
        return MESH_EFULL;
    if ((rv = plc_reserve(t, t->n + 1)) != 0)
        return rv;
    struct plc *p = plc_new(&k, c->node, c->node_len, c->reason, c->reason_len);
    if (!p)
        return MESH_ENOMEM;
    memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof *t->v);
    t->v[i] = p;
    t->n++;
    fsm->revision++;
    set_result(fsm, FSM_OUT_CREATED, 0, version);
    return 0;
}

static int apply_unplace(struct fsm *fsm, const struct fsm_cmd *c)
{
    struct plc_key k = {c->name, c->name_len, c->ms, c->ms_len, c->replica};
    struct plc_table *t = &fsm->plcs;
    bool found;
    size_t i = plc_find(t, &k, &found);
    if (!found) {
        set_result(fsm, FSM_OUT_NOT_FOUND, 0, 0);
        return 0;
    }
    free(t->v[i]);
    memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof *t->v);
    t->n--;
    fsm->revision++;
    set_result(fsm, FSM_OUT_DELETED, 0, 0);
    return 0;
}

static int apply_cordon(struct fsm *fsm, const struct fsm_cmd *c)
{
    struct cordon_table *t = &fsm->cordons;
    bool found;
    int rv;
    size_t i = cordon_find(t, c->name, c->name_len, &found);
    if (!c->cordoned) {
        if (!found) {
            set_result(fsm, FSM_OUT_UNCHANGED, 0, 0);
            return 0;
        }
        memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof *t->v);
        t->n--;
        fsm->revision++;
        set_result(fsm, FSM_OUT_DELETED, 0, 0);
        return 0;
    }
    if (found) {
        if (t->v[i].drain == c->drain) {
            set_result(fsm, FSM_OUT_UNCHANGED, 0, 0);
            return 0;
        }
        t->v[i].drain = c->drain;
        fsm->revision++;
        set_result(fsm, FSM_OUT_UPDATED, 0, 0);
        return 0;
    }
    if (t->n >= FSM_CORDONS_MAX)
        return MESH_EFULL;
    if ((rv = cordon_reserve(t, t->n + 1)) != 0)
        return rv;
    memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof *t->v);
    memcpy(t->v[i].node, c->name, c->name_len);
    t->v[i].node[c->name_len] = '\0';
    t->v[i].len = (uint8_t)c->name_len;
    t->v[i].drain = c->drain;
    t->n++;
    fsm->revision++;
    set_result(fsm, FSM_OUT_CREATED, 0, 0);
    return 0;
}

/* Applies one command. Returns 0 (the outcome is in fsm->result, whatever the content) or
 * MESH_ENOMEM with the state untouched. */
static int apply(struct fsm *fsm, const uint8_t *p, size_t len)
{
    struct fsm_cmd c;
    int rv = fsm_cmd_decode(p, len, &c);
    if (rv == 0) {
        switch (c.type) {
        case FSM_CMD_PUT_APP:
            rv = put_blob(fsm, &fsm->apps, FSM_APPS_MAX, c.name, c.name_len, c.value, c.value_len);
            break;
        case FSM_CMD_PUT_REC:
            rv = put_blob(fsm, &fsm->recs, FSM_RECS_MAX, c.name, c.name_len, c.value, c.value_len);
            break;
        case FSM_CMD_DELETE_APP:
            remove_blob(fsm, &fsm->apps, c.name, c.name_len);
            break;
        case FSM_CMD_DELETE_REC:
            remove_blob(fsm, &fsm->recs, c.name, c.name_len);
            break;
        case FSM_CMD_PLACE:
            rv = apply_place(fsm, &c);
            break;
        case FSM_CMD_UNPLACE:
            rv = apply_unplace(fsm, &c);
            break;
        case FSM_CMD_CORDON:
            rv = apply_cordon(fsm, &c);
            break;
        }
    }
    if (rv == MESH_ENOMEM)
        return rv;
    if (rv == MESH_EUNSUPPORTED)
        set_result(fsm, FSM_OUT_UNKNOWN, rv, 0);
    else if (rv != 0)
        set_result(fsm, FSM_OUT_REJECTED, rv, 0);
    return 0;
}

int fsm_apply_cmd(struct fsm *fsm, const void *cmd, size_t len, struct fsm_result *ret_result)
{
    if (!fsm || (!cmd && len))
        return MESH_EINVAL;
    int rv = apply(fsm, cmd, len);
    if (rv)
        return rv;
    if (ret_result)
        *ret_result = fsm->result;
    return 0;
}

static int raft_apply_fn(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    struct fsm *fsm = rf->data;
    if (apply(fsm, buf->base, buf->len) != 0)
        return RAFT_NOMEM; /* raft leaves the entry unapplied and retries it */
    *result = &fsm->result;
    return 0;
}

/* ---- snapshots ---- */

static void pack_snapshot(msgpack_packer *pk, const struct fsm *fsm)
{
    const struct app_table *t = &fsm->apps;
    msgpack_pack_array(pk, 6);
    msgpack_pack_uint64(pk, FSM_SNAP_FORMAT);
    msgpack_pack_uint64(pk, fsm->revision);
    msgpack_pack_array(pk, (uint32_t)t->n);
    for (size_t i = 0; i < t->n; i++) {
        const struct app *a = t->v[i];
        msgpack_pack_array(pk, 4);
        wire_pack_str(pk, a->name, a->name_len);
        wire_pack_bin(pk, a->spec, a->spec_len);
        msgpack_pack_uint64(pk, a->version);
        msgpack_pack_uint64(pk, a->mod_rev);
    }
    const struct plc_table *pt = &fsm->plcs;
    msgpack_pack_array(pk, (uint32_t)pt->n);
    for (size_t i = 0; i < pt->n; i++) {
        const struct plc *p = pt->v[i];
        msgpack_pack_array(pk, 5);
        wire_pack_str(pk, p->app, p->app_len);
        wire_pack_str(pk, p->ms, p->ms_len);
        msgpack_pack_uint64(pk, p->replica);
        wire_pack_str(pk, p->node, p->node_len);
        wire_pack_str(pk, p->reason, p->reason_len);
    }
    const struct cordon_table *ct = &fsm->cordons;
    msgpack_pack_array(pk, (uint32_t)ct->n);
    for (size_t i = 0; i < ct->n; i++) {
        msgpack_pack_array(pk, 2);
        wire_pack_str(pk, ct->v[i].node, ct->v[i].len);
        if (ct->v[i].drain)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
    const struct app_table *rt = &fsm->recs;
    msgpack_pack_array(pk, (uint32_t)rt->n);
    for (size_t i = 0; i < rt->n; i++) {
        const struct app *a = rt->v[i];
        msgpack_pack_array(pk, 4);
        wire_pack_str(pk, a->name, a->name_len);
        wire_pack_bin(pk, a->spec, a->spec_len);
        msgpack_pack_uint64(pk, a->version);
        msgpack_pack_uint64(pk, a->mod_rev);
    }
}

int fsm_snapshot_encode(const struct fsm *fsm, struct raft_buffer *out)
{
    if (!fsm || !out)
        return MESH_EINVAL;
    size_t need = 0;
    msgpack_packer counter;
    msgpack_packer_init(&counter, &need, count_write);
    pack_snapshot(&counter, fsm);
    uint8_t *base = raft_malloc(need);
    if (!base)
        return MESH_ENOMEM;
    struct wire_wr w;
    wire_wr_init(&w, base, need);
    pack_snapshot(&w.pk, fsm);
    if (w.overflow || w.len != need) {
        raft_free(base);
        return MESH_EINVAL;
    }
    out->base = base;
    out->len = need;
    return 0;
}

static int raft_snapshot_fn(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct fsm *fsm = rf->data;
    struct raft_buffer *b = raft_malloc(sizeof *b);
    if (!b)
        return RAFT_NOMEM;
    if (fsm_snapshot_encode(fsm, b) != 0) {
        raft_free(b);
        return RAFT_NOMEM;
    }
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

/* A state being decoded, swapped in only once complete. */
struct snap_state {
    struct app_table apps;
    struct app_table recs;
    struct plc_table plcs;
    struct cordon_table cordons;
    uint64_t revision;
};

static void snap_state_clear(struct snap_state *st)
{
    table_clear(&st->apps);
    table_clear(&st->recs);
    plc_clear(&st->plcs);
    cordon_clear(&st->cordons);
}

/* Applications or records: [[name, bytes, version, mod_rev], ...], strictly ascending. */
static int decode_blobs(struct wire_rd *r, struct app_table *t, size_t max, size_t max_len,
                        bool (*name_valid)(const char *, size_t), uint64_t revision)
{
    uint32_t napps;
    if (wire_rd_array(r, &napps) || napps > max)
        return MESH_EMALFORMED;
    int rv = table_reserve(t, napps, max);
    if (rv)
        return rv == MESH_ENOMEM ? rv : MESH_EMALFORMED;
    for (uint32_t i = 0; i < napps; i++) {
        uint32_t fields, name_len, spec_len;
        const char *name;
        const uint8_t *spec;
        uint64_t version, mod_rev;
        if (wire_rd_array(r, &fields) || fields != 4 || wire_rd_str(r, &name, &name_len) ||
            wire_rd_bin(r, &spec, &spec_len) || wire_rd_uint(r, &version) ||
            wire_rd_uint(r, &mod_rev))
            return MESH_EMALFORMED;
        if (!name_valid(name, name_len) || spec_len == 0 || spec_len > max_len || version == 0 ||
            mod_rev == 0 || mod_rev > revision)
            return MESH_EMALFORMED;
        /* Strictly ascending names: canonical, and no duplicates. */
        if (t->n > 0) {
            const struct app *prev = t->v[t->n - 1];
            if (name_cmp(prev->name, prev->name_len, name, name_len) >= 0)
                return MESH_EMALFORMED;
        }
        struct app *a = app_new(name, name_len, spec, spec_len);
        if (!a)
            return MESH_ENOMEM;
        a->version = version;
        a->mod_rev = mod_rev;
        t->v[t->n++] = a;
    }
    return 0;
}

static int decode_plcs(struct wire_rd *r, struct snap_state *st)
{
    struct plc_table *t = &st->plcs;
    uint32_t n;
    if (wire_rd_array(r, &n) || n > FSM_PLACEMENTS_MAX)
        return MESH_EMALFORMED;
    int rv = plc_reserve(t, n);
    if (rv)
        return rv == MESH_ENOMEM ? rv : MESH_EMALFORMED;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t fields, app_len, node_len, reason_len;
        const char *node, *reason;
        struct plc_key k;
        if (wire_rd_array(r, &fields) || fields != 5 || wire_rd_str(r, &k.app, &app_len))
            return MESH_EMALFORMED;
        k.app_len = app_len;
        if (rd_ms_replica(r, &k) || wire_rd_str(r, &node, &node_len) ||
            wire_rd_str(r, &reason, &reason_len))
            return MESH_EMALFORMED;
        bool found;
        if (!fsm_app_name_valid(k.app, app_len) ||
            (node_len && !fsm_node_name_valid(node, node_len)) || !reason_valid(reason, reason_len))
            return MESH_EMALFORMED;
        table_find(&st->apps, k.app, k.app_len, &found);
        if (!found) /* every placement's application exists */
            return MESH_EMALFORMED;
        if (t->n > 0 && plc_cmp(t->v[t->n - 1], &k) >= 0)
            return MESH_EMALFORMED;
        struct plc *p = plc_new(&k, node, node_len, reason, reason_len);
        if (!p)
            return MESH_ENOMEM;
        t->v[t->n++] = p;
    }
    return 0;
}

static int decode_cordons(struct wire_rd *r, struct snap_state *st)
{
    struct cordon_table *t = &st->cordons;
    uint32_t n;
    if (wire_rd_array(r, &n) || n > FSM_CORDONS_MAX)
        return MESH_EMALFORMED;
    int rv = cordon_reserve(t, n);
    if (rv)
        return rv == MESH_ENOMEM ? rv : MESH_EMALFORMED;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t fields, len;
        const char *node;
        bool drain;
        if (wire_rd_array(r, &fields) || fields != 2 || wire_rd_str(r, &node, &len) ||
            wire_rd_bool(r, &drain))
            return MESH_EMALFORMED;
        if (!fsm_node_name_valid(node, len))
            return MESH_EMALFORMED;
        if (t->n > 0 && name_cmp(t->v[t->n - 1].node, t->v[t->n - 1].len, node, len) >= 0)
            return MESH_EMALFORMED;
        struct cordon *c = &t->v[t->n++];
        memcpy(c->node, node, len);
        c->node[len] = '\0';
        c->len = (uint8_t)len;
        c->drain = drain;
    }
    return 0;
}

/* Decodes a snapshot of format 1, 2 or 3 into st (empty on entry). On error st may hold part of
 * the records; the caller clears it. */
static int decode_snapshot(const uint8_t *p, size_t len, struct snap_state *st)
{
    struct wire_rd r;
    uint32_t n;
    uint64_t format;
    int rv;
    wire_rd_init(&r, p, len);
    if (wire_rd_array(&r, &n) || n < 1 || wire_rd_uint(&r, &format))
        return MESH_EMALFORMED;
    if (format < 1 || format > 3)
        return MESH_EUNSUPPORTED;
    if (n != (format == 1 ? 3 : format == 2 ? 5 : 6) || wire_rd_uint(&r, &st->revision))
        return MESH_EMALFORMED;
    if ((rv = decode_blobs(&r, &st->apps, FSM_APPS_MAX, FSM_SPEC_MAX, fsm_app_name_valid,
                           st->revision)) != 0)
        return rv;
    if (format >= 2) {
        if ((rv = decode_plcs(&r, st)) != 0 || (rv = decode_cordons(&r, st)) != 0)
            return rv;
    }
    if (format >= 3 && (rv = decode_blobs(&r, &st->recs, FSM_RECS_MAX, FSM_REC_MAX,
                                          fsm_rec_key_valid, st->revision)) != 0)
        return rv;
    if (wire_rd_left(&r) != 0)
        return MESH_EMALFORMED;
    return 0;
}

int fsm_restore_bytes(struct fsm *fsm, const void *data, size_t len)
{
    if (!fsm || (!data && len))
        return MESH_EINVAL;
    struct snap_state fresh = {0};
    int rv = decode_snapshot(data, len, &fresh);
    if (rv) {
        snap_state_clear(&fresh);
        return rv;
    }
    table_clear(&fsm->apps);
    table_clear(&fsm->recs);
    plc_clear(&fsm->plcs);
    cordon_clear(&fsm->cordons);
    fsm->apps = fresh.apps;
    fsm->recs = fresh.recs;
    fsm->plcs = fresh.plcs;
    fsm->cordons = fresh.cordons;
    fsm->revision = fresh.revision;
    fsm->stats.restores++;
    memset(&fsm->result, 0, sizeof fsm->result);
    return 0;
}

static int raft_restore_fn(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct fsm *fsm = rf->data;
    int rv = fsm_restore_bytes(fsm, buf->base, buf->len);
    if (rv == MESH_ENOMEM)
        return RAFT_NOMEM;
    if (rv)
        return RAFT_MALFORMED;
    /* Success: the buffer is ours (raft's snapshotRestore frees only the bufs array). */
    raft_free(buf->base);
    buf->base = NULL;
    buf->len = 0;
    return 0;
}

/* ---- reading ---- */

int fsm_app_get(const struct fsm *fsm, const char *name, const uint8_t **ret_spec, size_t *ret_len,
                uint64_t *ret_version)
{
    if (!fsm || !name)
        return MESH_ENOTFOUND;
    size_t len = strnlen(name, FSM_APP_NAME_MAX + 1);
    if (len > FSM_APP_NAME_MAX)
        return MESH_ENOTFOUND;
    bool found;
    size_t i = table_find(&fsm->apps, name, len, &found);
    if (!found)
        return MESH_ENOTFOUND;
    const struct app *a = fsm->apps.v[i];
    if (ret_spec)
        *ret_spec = a->spec;
    if (ret_len)
        *ret_len = a->spec_len;
    if (ret_version)
        *ret_version = a->version;
    return 0;
}

size_t fsm_app_count(const struct fsm *fsm)
{
    return fsm ? fsm->apps.n : 0;
}

int fsm_app_at(const struct fsm *fsm, size_t i, struct fsm_app *ret_app)
{
    if (!fsm || i >= fsm->apps.n)
        return MESH_ENOTFOUND;
    const struct app *a = fsm->apps.v[i];
    ret_app->name = a->name;
    ret_app->spec = a->spec;
    ret_app->spec_len = a->spec_len;
    ret_app->version = a->version;
    ret_app->mod_rev = a->mod_rev;
    return 0;
}

size_t fsm_placement_count(const struct fsm *fsm)
{
    return fsm ? fsm->plcs.n : 0;
}

static void plc_out(const struct plc *p, struct fsm_placement *ret)
{
    ret->app = p->app;
    ret->ms = p->ms;
    ret->replica = p->replica;
    ret->node = p->node;
    ret->reason = p->reason;
}

int fsm_placement_at(const struct fsm *fsm, size_t i, struct fsm_placement *ret)
{
    if (!fsm || i >= fsm->plcs.n)
        return MESH_ENOTFOUND;
    plc_out(fsm->plcs.v[i], ret);
    return 0;
}

int fsm_placement_get(const struct fsm *fsm, const char *app, const char *ms, uint32_t replica,
                      struct fsm_placement *ret)
{
    if (!fsm || !app || !ms)
        return MESH_ENOTFOUND;
    struct plc_key k = {.app = app,
                        .app_len = strnlen(app, FSM_APP_NAME_MAX + 1),
                        .ms = ms,
                        .ms_len = strnlen(ms, FSM_APP_NAME_MAX + 1),
                        .replica = replica};
    bool found;
    size_t i = plc_find(&fsm->plcs, &k, &found);
    if (!found)
        return MESH_ENOTFOUND;
    plc_out(fsm->plcs.v[i], ret);
    return 0;
}

void fsm_placement_range(const struct fsm *fsm, const char *app, size_t *ret_first,
                         size_t *ret_count)
{
    size_t lo = 0, hi = 0;
    if (fsm && app) {
        size_t len = strnlen(app, FSM_APP_NAME_MAX + 1);
        lo = plc_app_lower(&fsm->plcs, app, len, false);
        hi = plc_app_lower(&fsm->plcs, app, len, true);
    }
    *ret_first = lo;
    *ret_count = hi - lo;
}

size_t fsm_cordon_count(const struct fsm *fsm)
{
    return fsm ? fsm->cordons.n : 0;
}

int fsm_cordon_at(const struct fsm *fsm, size_t i, struct fsm_cordon *ret)
{
    if (!fsm || i >= fsm->cordons.n)
        return MESH_ENOTFOUND;
    ret->node = fsm->cordons.v[i].node;
    ret->drain = fsm->cordons.v[i].drain;
    return 0;
}

int fsm_cordon_get(const struct fsm *fsm, const char *node, bool *ret_drain)
{
    if (!fsm || !node)
        return MESH_ENOTFOUND;
    bool found;
    size_t i = cordon_find(&fsm->cordons, node, strnlen(node, FSM_NODE_NAME_MAX + 1), &found);
    if (!found)
        return MESH_ENOTFOUND;
    if (ret_drain)
        *ret_drain = fsm->cordons.v[i].drain;
    return 0;
}

uint64_t fsm_revision(const struct fsm *fsm)
{
    return fsm->revision;
}

struct fsm_stats fsm_get_stats(const struct fsm *fsm)
{
    return fsm->stats;
}

const char *fsm_outcome_str(int outcome)
{
    switch (outcome) {
    case FSM_OUT_CREATED:
        return "created";
    case FSM_OUT_UPDATED:
        return "updated";
    case FSM_OUT_UNCHANGED:
        return "unchanged";
    case FSM_OUT_DELETED:
        return "deleted";
    case FSM_OUT_NOT_FOUND:
        return "not found";
    case FSM_OUT_REJECTED:
        return "rejected";
    case FSM_OUT_UNKNOWN:
        return "unknown command";
    default:
        return "?";
    }
}

size_t fsm_rec_count(const struct fsm *fsm)
{
    return fsm ? fsm->recs.n : 0;
}

int fsm_rec_at(const struct fsm *fsm, size_t i, struct fsm_app *ret)
{
    if (!fsm || i >= fsm->recs.n)
        return MESH_ENOTFOUND;
    const struct app *a = fsm->recs.v[i];
    ret->name = a->name;
    ret->spec = a->spec;
    ret->spec_len = a->spec_len;
    ret->version = a->version;
    ret->mod_rev = a->mod_rev;
    return 0;
}

int fsm_app_find(const struct fsm *fsm, const char *name, struct fsm_app *ret)
{
    if (!fsm || !name)
        return MESH_ENOTFOUND;
    bool found;
    size_t i = table_find(&fsm->apps, name, strnlen(name, FSM_APP_NAME_MAX + 1), &found);
    return found ? fsm_app_at(fsm, i, ret) : MESH_ENOTFOUND;
}

int fsm_rec_get(const struct fsm *fsm, const char *key, struct fsm_app *ret)
{
    if (!fsm || !key)
        return MESH_ENOTFOUND;
    bool found;
    size_t i = table_find(&fsm->recs, key, strnlen(key, FSM_REC_KEY_MAX + 1), &found);
    return found ? fsm_rec_at(fsm, i, ret) : MESH_ENOTFOUND;
}
