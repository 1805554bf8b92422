/* The desired-state machine; the format and the rules are in fsm.h. */
#include "fsm.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "spec.h"
#include "wire.h"

/* Whatever spec.c accepts, the machine must store. */
_Static_assert(FSM_APP_NAME_MAX >= SPEC_NAME_MAX, "app names: fsm.h bound below spec.h's");
_Static_assert(FSM_SPEC_MAX >= SPEC_MAX_ENCODED, "specs: fsm.h bound below spec.h's");

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

struct fsm {
    struct raft_fsm raft;
    struct app_table apps;
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

/* Makes room for one more entry. */
static int table_reserve(struct app_table *t, size_t want)
{
    if (want <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap * 2 : 16;
    while (cap < want)
        cap *= 2;
    if (cap > FSM_APPS_MAX)
        cap = FSM_APPS_MAX;
    if (cap < want)
        return MESH_EFULL;
    struct app **v = realloc(t->v, cap * sizeof *v);
    if (!v)
        return MESH_ENOMEM;
    t->v = v;
    t->cap = cap;
    return 0;
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

/* Packs a command. spec == NULL means DELETE_APP. */
static void pack_cmd(msgpack_packer *pk, const char *name, size_t name_len, const void *spec,
                     size_t spec_len)
{
    msgpack_pack_array(pk, spec ? 4 : 3);
    msgpack_pack_uint64(pk, FSM_CMD_FORMAT);
    msgpack_pack_uint64(pk, spec ? FSM_CMD_PUT_APP : FSM_CMD_DELETE_APP);
    wire_pack_str(pk, name, name_len);
    if (spec)
        wire_pack_bin(pk, spec, spec_len);
}

static int encode_cmd(const char *name, const void *spec, size_t spec_len, struct raft_buffer *out)
{
    if (!name || !out)
        return MESH_EINVAL;
    size_t name_len = strnlen(name, FSM_APP_NAME_MAX + 1);
    if (!fsm_app_name_valid(name, name_len))
        return MESH_EINVAL;
    size_t need = 0;
    msgpack_packer counter;
    msgpack_packer_init(&counter, &need, count_write);
    pack_cmd(&counter, name, name_len, spec, spec_len);

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
    pack_cmd(&w.pk, name, name_len, spec, spec_len);
    if (w.overflow || w.len != need) { /* cannot happen: both passes pack the same values */
        raft_free(base);
        return MESH_EINVAL;
    }
    out->base = base;
    out->len = padded;
    return 0;
}

int fsm_cmd_put_app(const char *name, const void *spec, size_t len, struct raft_buffer *out)
{
    if (len > FSM_SPEC_MAX)
        return MESH_ETOOBIG;
    if (!spec || len == 0)
        return MESH_EINVAL;
    return encode_cmd(name, spec, len, out);
}

int fsm_cmd_delete_app(const char *name, struct raft_buffer *out)
{
    return encode_cmd(name, NULL, 0, out);
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

/* Reads the name argument. */
static int rd_name(struct wire_rd *r, const char **ret_name, uint32_t *ret_len)
{
    const char *s;
    uint32_t n;
    if (wire_rd_str(r, &s, &n))
        return MESH_EMALFORMED;
    if (!fsm_app_name_valid(s, n))
        return MESH_EINVAL;
    *ret_name = s;
    *ret_len = n;
    return 0;
}

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

static int apply_put(struct fsm *fsm, struct wire_rd *r, uint32_t nargs)
{
    const char *name;
    uint32_t name_len, spec_len;
    const uint8_t *spec;
    int rv;
    if (nargs != 2)
        return MESH_EMALFORMED;
    if ((rv = rd_name(r, &name, &name_len)) != 0)
        return rv;
    if (wire_rd_bin(r, &spec, &spec_len))
        return MESH_EMALFORMED;
    if (!at_end(r))
        return MESH_EMALFORMED;
    if (spec_len > FSM_SPEC_MAX)
        return MESH_ETOOBIG;
    if (spec_len == 0)
        return MESH_EINVAL;

    struct app_table *t = &fsm->apps;
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
    if (t->n >= FSM_APPS_MAX)
        return MESH_EFULL;
    if ((rv = table_reserve(t, t->n + 1)) != 0)
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

static int apply_delete(struct fsm *fsm, struct wire_rd *r, uint32_t nargs)
{
    const char *name;
    uint32_t name_len;
    int rv;
    if (nargs != 1)
        return MESH_EMALFORMED;
    if ((rv = rd_name(r, &name, &name_len)) != 0)
        return rv;
    if (!at_end(r))
        return MESH_EMALFORMED;
    struct app_table *t = &fsm->apps;
    bool found;
    size_t i = table_find(t, name, name_len, &found);
    if (!found) {
        set_result(fsm, FSM_OUT_NOT_FOUND, 0, 0);
        return 0;
    }
    struct app *a = t->v[i];
    uint64_t version = a->version;
    memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof *t->v);
    t->n--;
    free(a);
    fsm->revision++;
    set_result(fsm, FSM_OUT_DELETED, 0, version);
    return 0;
}

/* Applies one command. Returns 0 (the outcome is in fsm->result, whatever the content) or
 * MESH_ENOMEM with the state untouched. */
static int apply(struct fsm *fsm, const uint8_t *p, size_t len)
{
    struct wire_rd r;
    uint32_t n;
    uint64_t format, type;
    int rv;
    wire_rd_init(&r, p, len);
    if (wire_rd_array(&r, &n) || n < 2 || wire_rd_uint(&r, &format) || wire_rd_uint(&r, &type)) {
        set_result(fsm, FSM_OUT_REJECTED, MESH_EMALFORMED, 0);
        return 0;
    }
    if (format != FSM_CMD_FORMAT) {
        set_result(fsm, FSM_OUT_UNKNOWN, MESH_EUNSUPPORTED, 0);
        return 0;
    }
    switch (type) {
    case FSM_CMD_PUT_APP:
        rv = apply_put(fsm, &r, n - 2);
        break;
    case FSM_CMD_DELETE_APP:
        rv = apply_delete(fsm, &r, n - 2);
        break;
    default:
        set_result(fsm, FSM_OUT_UNKNOWN, MESH_EUNSUPPORTED, 0);
        return 0;
    }
    if (rv == MESH_ENOMEM)
        return rv;
    if (rv != 0)
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
    msgpack_pack_array(pk, 3);
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

/* Decodes a snapshot into t (empty on entry) and *ret_revision. On error t may hold part of
 * the applications; the caller clears it. */
static int decode_snapshot(const uint8_t *p, size_t len, struct app_table *t,
                           uint64_t *ret_revision)
{
    struct wire_rd r;
    uint32_t n, napps;
    uint64_t format, revision;
    wire_rd_init(&r, p, len);
    if (wire_rd_array(&r, &n) || n < 1 || wire_rd_uint(&r, &format))
        return MESH_EMALFORMED;
    if (format != FSM_SNAP_FORMAT)
        return MESH_EUNSUPPORTED;
    if (n != 3 || wire_rd_uint(&r, &revision) || wire_rd_array(&r, &napps))
        return MESH_EMALFORMED;
    if (napps > FSM_APPS_MAX)
        return MESH_EMALFORMED;
    int rv = table_reserve(t, napps);
    if (rv)
        return rv == MESH_ENOMEM ? rv : MESH_EMALFORMED;
    for (uint32_t i = 0; i < napps; i++) {
        uint32_t fields, name_len, spec_len;
        const char *name;
        const uint8_t *spec;
        uint64_t version, mod_rev;
        if (wire_rd_array(&r, &fields) || fields != 4 || wire_rd_str(&r, &name, &name_len) ||
            wire_rd_bin(&r, &spec, &spec_len) || wire_rd_uint(&r, &version) ||
            wire_rd_uint(&r, &mod_rev))
            return MESH_EMALFORMED;
        if (!fsm_app_name_valid(name, name_len) || spec_len == 0 || spec_len > FSM_SPEC_MAX ||
            version == 0 || mod_rev == 0 || mod_rev > revision)
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
    if (wire_rd_left(&r) != 0)
        return MESH_EMALFORMED;
    *ret_revision = revision;
    return 0;
}

int fsm_restore_bytes(struct fsm *fsm, const void *data, size_t len)
{
    if (!fsm || (!data && len))
        return MESH_EINVAL;
    struct app_table fresh = {0};
    uint64_t revision = 0;
    int rv = decode_snapshot(data, len, &fresh, &revision);
    if (rv) {
        table_clear(&fresh);
        return rv;
    }
    table_clear(&fsm->apps);
    fsm->apps = fresh;
    fsm->revision = revision;
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
