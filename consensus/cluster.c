#include "cluster.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "dlist.h"

/* Log entries kept before a snapshot, and kept after it so that a follower a little behind
 * catches up from the log instead of a whole snapshot. */
#define SNAPSHOT_THRESHOLD 1024
#define SNAPSHOT_TRAILING  128

struct cluster_req {
    union {
        struct raft_apply apply;
        struct raft_barrier barrier;
    } r;
    struct cluster *c;
    cluster_apply_cb apply_cb;
    cluster_barrier_cb barrier_cb;
    void *ud;
    struct cluster_req *prev, *next; /* in c->reqs, until raft is done with it */
};

struct cluster {
    struct raft raft;
    struct raft_io io;
    struct fsm *fsm;
    struct cluster_config cfg;
    char address[128];
    char dir[1024];
    bool io_ready, raft_ready;
    struct raft_change change;
    bool change_pending;
    struct raft_transfer transfer;
    bool transfer_pending;
    struct cluster_req *reqs;
    cluster_close_cb close_cb;
    void *close_ud;
    bool reserve_released; /* at start: the disk was full (reserve_check) */
    bool load_failed;      /* by checked_load: the log on disk could not be read */
    char damaged[96];      /* why, when a segment was set aside */
    /* raft_uv's own load, wrapped by checked_load */
    int (*uv_load)(struct raft_io *io, raft_term *term, raft_id *voted_for,
                   struct raft_snapshot **snapshot, raft_index *start_index,
                   struct raft_entry *entries[], size_t *n_entries);
    /* cfg.on_change: a libuv check handle compares these after every loop iteration. */
    uv_check_t check;
    bool check_ready;
    int closing; /* parts of cluster_close still to end (closed()) */
    raft_index seen_applied;
    raft_id seen_leader;
    int seen_state;
};

raft_id cluster_raft_id(const uint8_t node_id[static 16])
{
    raft_id id = 0;
    for (int i = 0; i < 8; i++)
        id = id << 8 | node_id[i];
    return id ? id : 1;
}

const char *cluster_state_name(int state)
{
    switch (state) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    default:
        return "unavailable";
    }
}

const char *cluster_role_name(int role)
{
    switch (role) {
    case RAFT_VOTER:
        return "voter";
    case RAFT_STANDBY:
        return "standby";
    case RAFT_SPARE:
        return "spare";
    default:
        return "?";
    }
}

/* canonical/raft's error codes in the words a user acts on. */
static int from_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOMEM:
        return MESH_ENOMEM;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return MESH_ESTATE;
    case RAFT_CANCELED:
    case RAFT_SHUTDOWN:
        return MESH_ECLOSED;
    case RAFT_TOOBIG:
        return MESH_ETOOBIG;
    case RAFT_NOSPACE:
        return -ENOSPC;
    default:
        return MESH_EIO;
    }
}

static void req_link(struct cluster *c, struct cluster_req *q)
{
    q->c = c;
    DLIST_PUSH(c->reqs, q);
}

static void req_unlink_free(struct cluster_req *q)
{
    DLIST_REMOVE(q->c->reqs, q);
    free(q);
}

void cluster_req_detach(struct cluster_req *req)
{
    if (req) {
        req->apply_cb = NULL;
        req->barrier_cb = NULL;
    }
}

static void on_applied(struct raft_apply *r, int status, void *result)
{
    struct cluster_req *q = r->data;
    if (q->apply_cb) {
        struct mesh_err err = {0};
        int rc = from_raft(status);
        if (rc < 0)
            mesh_errf(&err, rc, "%s",
                      rc == MESH_ESTATE ? "leadership lost before the write committed; retry"
                      : rc == -ENOSPC   ? "the leader's disk is full: its Raft log takes no "
                                          "writes until space is freed"
                                        : raft_strerror(status));
        /* fsm.h: the result lives in the fsm until the next apply; the callback copies it. */
        q->apply_cb(q->ud, rc, rc == 0 ? result : NULL, rc < 0 ? &err : NULL);
    }
    req_unlink_free(q);
}

int cluster_apply(struct cluster *c, struct raft_buffer *buf, cluster_apply_cb cb, void *ud,
                  struct cluster_req **ret_req)
{
    /* raft_uv stores an entry in 8-byte units and reads its length back rounded up: an entry
     * of another length is stored in a way that its own loader refuses ("short read") or
     * truncates as corrupt, on every replica (issue 10). Every fsm_cmd_* encoder pads; a buffer
     * that is not padded never got here through one, so it is refused, not stored. */
    if (!buf || !buf->base || buf->len == 0 || buf->len % 8 != 0)
        return MESH_EINVAL;
    if (raft_state(&c->raft) != RAFT_LEADER)
        return MESH_ESTATE;
    struct cluster_req *q = calloc(1, sizeof *q);
    if (!q)
        return MESH_ENOMEM;
    q->apply_cb = cb;
    q->ud = ud;
    q->r.apply.data = q;
    int rv = raft_apply(&c->raft, &q->r.apply, buf, 1, on_applied);
    if (rv != 0) {
        free(q);
        return from_raft(rv);
    }
    req_link(c, q);
    if (ret_req)
        *ret_req = q;
    return 0;
}

static void on_barrier(struct raft_barrier *r, int status)
{
    struct cluster_req *q = r->data;
    if (q->barrier_cb)
        q->barrier_cb(q->ud, from_raft(status));
    req_unlink_free(q);
}

int cluster_barrier(struct cluster *c, cluster_barrier_cb cb, void *ud,
                    struct cluster_req **ret_req)
{
    if (raft_state(&c->raft) != RAFT_LEADER)
        return MESH_ESTATE;
    struct cluster_req *q = calloc(1, sizeof *q);
    if (!q)
        return MESH_ENOMEM;
    q->barrier_cb = cb;
    q->ud = ud;
    q->r.barrier.data = q;
    int rv = raft_barrier(&c->raft, &q->r.barrier, on_barrier);
    if (rv != 0) {
        free(q);
        return from_raft(rv);
    }
    req_link(c, q);
    if (ret_req)
        *ret_req = q;
    return 0;
}

static void on_change(struct raft_change *req, int status)
{
    struct cluster *c = req->data;
    (void)status; /* the next autopilot step looks at the configuration again */
    c->change_pending = false;
}

int cluster_autopilot(struct cluster *c, const struct voters_member *members, size_t n,
                      uint64_t now_ms, struct voters_change *ret_change)
{
    struct voters_change ch = {0};
    *ret_change = ch;
    if (raft_state(&c->raft) != RAFT_LEADER || c->change_pending || c->transfer_pending)
        return 0;
    struct voters_params params = {
        .self = c->cfg.id,
        .target = c->cfg.target_voters ? c->cfg.target_voters : VOTERS_DEFAULT_TARGET,
        .dead_grace = c->cfg.dead_grace_ms ? c->cfg.dead_grace_ms : VOTERS_DEFAULT_DEAD_GRACE,
        .stable = VOTERS_DEFAULT_STABLE,
        .now = now_ms,
        .remove_absent = false,
    };
    int rc = voters_step(&c->raft.configuration, members, n, &params, &ch);
    if (rc < 0 || ch.op == VOTERS_OP_NONE)
        return rc;
    int rv = 0;
    c->change.data = c;
    switch (ch.op) {
    case VOTERS_OP_ADD:
        rv = raft_add(&c->raft, &c->change, ch.id, ch.address, on_change);
        break;
    case VOTERS_OP_ASSIGN:
        rv = raft_assign(&c->raft, &c->change, ch.id, ch.role, on_change);
        break;
    case VOTERS_OP_REMOVE:
        rv = raft_remove(&c->raft, &c->change, ch.id, on_change);
        break;
    default:
        return 0;
    }
    if (rv != 0)
        return from_raft(rv);
    c->change_pending = true;
    *ret_change = ch;
    return 0;
}

static void on_transfer(struct raft_transfer *req)
{
    struct cluster *c = req->data;
    c->transfer_pending = false;
}

int cluster_transfer(struct cluster *c)
{
    if (raft_state(&c->raft) != RAFT_LEADER || c->transfer_pending)
        return MESH_ESTATE;
    c->transfer.data = c;
    /* id 0: canonical/raft picks the most up-to-date voter. */
    int rv = raft_transfer(&c->raft, &c->transfer, 0, on_transfer);
    if (rv != 0)
        return from_raft(rv);
    c->transfer_pending = true;
    return 0;
}

void cluster_info(struct cluster *c, struct cluster_info *ret)
{
    raft_id lid = 0;
    const char *laddr = NULL;
    raft_leader(&c->raft, &lid, &laddr);
    ret->state = raft_state(&c->raft);
    ret->leader_id = lid;
    ret->leader_address = lid ? laddr : NULL;
    ret->term = c->raft.current_term;
    ret->commit_index = c->raft.commit_index;
    ret->last_applied = raft_last_applied(&c->raft);
    ret->reserve_released = c->reserve_released;
}

const struct raft_configuration *cluster_configuration(struct cluster *c)
{
    return &c->raft.configuration;
}

struct fsm *cluster_fsm(struct cluster *c)
{
    return c->fsm;
}

static int mkdir_if_missing(const char *dir, struct mesh_err *err)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return mesh_errf(err, -errno, "cannot create %s: %s", dir, strerror(errno));
    return 0;
}

/* ---- a reserve of disk space ---- */

/* A full disk must not keep a node from starting and serving reads (issue 10): raft_uv needs a
 * little space at every start (it writes a probe file to test the file system's I/O
 * capabilities) and refuses to start without it. So, as CockroachDB does with its "ballast
 * file", the cluster keeps CLUSTER_RESERVE_BYTES allocated in DATA_DIR/raft.reserve while the
 * disk has room, and gives it back when a start finds less than twice that free: the node
 * starts, reads answer from its replica, and writes fail with "disk full" until space is
 * freed (the next start with room makes the reserve again). */
#define CLUSTER_RESERVE_FILE  "raft.reserve"
#define CLUSTER_RESERVE_BYTES (8u << 20)

/* Returns true when the reserve was released because the disk is (nearly) full. */
static bool reserve_check(const char *data_dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", data_dir, CLUSTER_RESERVE_FILE);
    struct statvfs vfs;
    if (statvfs(data_dir, &vfs) != 0)
        return false;
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    struct stat st;
    bool have = stat(path, &st) == 0;
    if (avail < 2ull * CLUSTER_RESERVE_BYTES) {
        if (have && unlink(path) == 0)
            return true;
        return false;
    }
    if (have && (uint64_t)st.st_size >= CLUSTER_RESERVE_BYTES)
        return false;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    /* Really allocated (not a sparse file), or it reserves nothing. */
    if (posix_fallocate(fd, 0, CLUSTER_RESERVE_BYTES) != 0)
        (void)unlink(path);
    close(fd);
    return false;
}

/* ---- loading the log: damage is an error, never a silent loss ---- */

#define QUARANTINE_PREFIX "corrupt-" /* raft_uv's name for a segment it set aside */
#define QUARANTINE_MAX    64

/* The files of dir that raft_uv set aside, up to QUARANTINE_MAX (names sorted is not needed:
 * only membership is asked). Returns how many. */
static size_t quarantined(const char *dir, char names[][NAME_MAX + 1])
{
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while (n < QUARANTINE_MAX && (e = readdir(d)))
        if (strncmp(e->d_name, QUARANTINE_PREFIX, strlen(QUARANTINE_PREFIX)) == 0)
            snprintf(names[n++], NAME_MAX + 1, "%s", e->d_name);
    closedir(d);
    return n;
}

static void entries_free(struct raft_entry *entries, size_t n)
{
    void *batch = NULL;
    for (size_t i = 0; i < n; i++) {
        if (entries[i].batch && entries[i].batch != batch) {
            batch = entries[i].batch;
            raft_free(batch);
        } else if (!entries[i].batch) {
            raft_free(entries[i].buf.base);
        }
    }
    raft_free(entries);
}

static void snapshot_free(struct raft_snapshot *s)
{
    if (!s)
        return;
    raft_configuration_close(&s->configuration);
    for (unsigned i = 0; i < s->n_bufs; i++)
        raft_free(s->bufs[i].base);
    raft_free(s->bufs);
    raft_free(s);
}

/* raft_uv 0.15 loads the log at raft_start. When a closed segment does not decode (a torn or
 * damaged disk, or an entry whose length is not a multiple of 8, which it stores in a form its
 * own loader refuses), it renames the segment "corrupt-TIME-NAME" and starts without its
 * entries and all after them: a replica that comes back with fewer applications than it
 * acknowledged, silently (issue 10). This wraps the load: when raft_uv set a segment aside, the
 * segment gets its name back and the load fails with what happened, so the node refuses to
 * start, the same way on every start until an operator acts, and nothing is lost meanwhile.
 * (The tail of the open segment that a crash left half-written is still truncated: those
 * entries were never acknowledged, as the Raft thesis §11.7.3 requires for them.) */
static int checked_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                        struct raft_snapshot **snapshot, raft_index *start_index,
                        struct raft_entry *entries[], size_t *n_entries)
{
    struct cluster *c = (struct cluster *)((char *)io - offsetof(struct cluster, io));
    char(*before)[NAME_MAX + 1] = calloc(2 * QUARANTINE_MAX, NAME_MAX + 1);
    if (!before) {
        snprintf(io->errmsg, sizeof io->errmsg, "out of memory");
        return RAFT_NOMEM;
    }
    char(*after)[NAME_MAX + 1] = before + QUARANTINE_MAX;
    size_t nb = quarantined(c->dir, before);
    int rv = c->uv_load(io, term, voted_for, snapshot, start_index, entries, n_entries);
    if (rv != 0) {
        free(before);
        c->load_failed = true;
        return rv;
    }
    size_t na = quarantined(c->dir, after), set_aside = 0;
    char first[NAME_MAX + 1] = "";
    for (size_t i = 0; i < na; i++) {
        bool old = false;
        for (size_t j = 0; j < nb && !old; j++)
            old = strcmp(after[i], before[j]) == 0;
        if (old)
            continue;
        /* corrupt-TIME-NAME -> NAME */
        const char *name = after[i] + strlen(QUARANTINE_PREFIX);
        name += strspn(name, "0123456789");
        if (*name != '-')
            continue;
        name++;
        char from[sizeof c->dir + NAME_MAX + 2], to[sizeof c->dir + NAME_MAX + 2];
        snprintf(from, sizeof from, "%s/%s", c->dir, after[i]);
        snprintf(to, sizeof to, "%s/%s", c->dir, name);
        if (rename(from, to) != 0)
            snprintf(to, sizeof to, "%s/%s", c->dir, after[i]); /* say where it is */
        if (!set_aside++)
            snprintf(first, sizeof first, "%s", strrchr(to, '/') + 1);
    }
    free(before);
    if (!set_aside)
        return 0;
    entries_free(*entries, *n_entries);
    snapshot_free(*snapshot);
    *entries = NULL;
    *n_entries = 0;
    *snapshot = NULL;
    c->load_failed = true;
    snprintf(c->damaged, sizeof c->damaged, "segment %.40s does not decode (+%zu more)", first,
             set_aside - 1);
    snprintf(io->errmsg, sizeof io->errmsg, "%s", c->damaged);
    return RAFT_CORRUPT;
}

static void free_cluster(struct cluster *c)
{
    fsm_free(c->fsm);
    free(c);
}

/* Closing has two parts that end in their own callbacks: raft's close and the check handle's.
 * The cluster is freed when the last of them has ended. */
static void closed(struct cluster *c)
{
    if (--c->closing > 0)
        return;
    cluster_close_cb cb = c->close_cb;
    void *ud = c->close_ud;
    free_cluster(c);
    if (cb)
        cb(ud);
}

static void on_check_closed(uv_handle_t *h)
{
    closed(h->data);
}

static void on_raft_closed(struct raft *r)
{
    struct cluster *c = r->data;
    raft_uv_close(&c->io);
    /* Requests raft never answered (it answers them all on close in 0.15; be safe). */
    while (c->reqs)
        req_unlink_free(c->reqs);
    closed(c);
}

void cluster_close(struct cluster *c, cluster_close_cb cb, void *ud)
{
    c->close_cb = cb;
    c->close_ud = ud;
    c->closing = 1;
    /* The check handle is closed now, not after raft: no on_change once closing, and a loop
     * walk that closes every open handle (the daemon's, when raft overruns its close
     * deadline) then skips it instead of closing it twice (a libuv assertion). Its memory is
     * ours, so the cluster waits for its close callback too. */
    if (c->check_ready) {
        c->closing++;
        uv_close((uv_handle_t *)&c->check, on_check_closed);
    }
    raft_close(&c->raft, on_raft_closed);
}

/* canonical/raft 0.15 has no callback for "applied" or "leader changed": the fsm sees only
 * commands (barriers and configuration changes advance the applied index without it), and
 * inside the fsm's apply raft's own last applied index still lags. Raft runs only inside
 * libuv's callbacks, so a check handle, which libuv runs right after each iteration's I/O
 * callbacks, sees every change as soon as it is made, without a timer. */
static void on_check(uv_check_t *h)
{
    struct cluster *c = h->data;
    raft_id lid = 0;
    const char *laddr = NULL;
    raft_leader(&c->raft, &lid, &laddr);
    raft_index applied = raft_last_applied(&c->raft);
    int state = raft_state(&c->raft);
    if (applied == c->seen_applied && lid == c->seen_leader && state == c->seen_state)
        return;
    c->seen_applied = applied;
    c->seen_leader = lid;
    c->seen_state = state;
    c->cfg.on_change(c->cfg.change_ud);
}

int cluster_start(const struct cluster_config *cfg, struct cluster **ret, struct mesh_err *err)
{
    int rv, rc;
    struct cluster *c = calloc(1, sizeof *c);
    if (!c)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    c->cfg = *cfg;
    snprintf(c->address, sizeof c->address, "%s", cfg->address);
    c->cfg.address = c->address;
    if ((size_t)snprintf(c->dir, sizeof c->dir, "%s/%s", cfg->data_dir, CLUSTER_RAFT_DIR) >=
        sizeof c->dir) {
        rc = mesh_errf(err, MESH_EINVAL, "data dir path too long");
        goto fail;
    }
    if ((rc = mkdir_if_missing(c->dir, err)) < 0)
        goto fail;
    c->reserve_released = reserve_check(cfg->data_dir);
    if ((rc = fsm_new(&c->fsm)) < 0) {
        mesh_errf(err, rc, "out of memory");
        goto fail;
    }
    rv = raft_uv_init(&c->io, cfg->uv, c->dir, cfg->transport);
    if (rv != 0) {
        rc = mesh_errf(err, MESH_EIO, "raft storage in %s: %s", c->dir, c->io.errmsg);
        goto fail;
    }
    c->io_ready = true;
    c->uv_load = c->io.load;
    c->io.load = checked_load;
    rv = raft_init(&c->raft, &c->io, fsm_raft(c->fsm), cfg->id, c->address);
    if (rv != 0) {
        rc = mesh_errf(err, MESH_EIO, "raft: %s", raft_errmsg(&c->raft));
        goto fail;
    }
    c->raft_ready = true;
    c->raft.data = c;
    double t = cfg->timing > 0 ? cfg->timing : 1.0;
    unsigned election = (unsigned)(CLUSTER_BASE_ELECTION_MS * t);
    raft_set_election_timeout(&c->raft, election);
    raft_set_heartbeat_timeout(&c->raft, election / 5 ? election / 5 : 1);
    raft_set_pre_vote(&c->raft, true);
    raft_set_snapshot_threshold(&c->raft, SNAPSHOT_THRESHOLD);
    raft_set_snapshot_trailing(&c->raft, SNAPSHOT_TRAILING);

    if (cfg->may_bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rv = raft_configuration_add(&conf, cfg->id, c->address, RAFT_VOTER);
        if (rv == 0)
            rv = raft_bootstrap(&c->raft, &conf);
        raft_configuration_close(&conf);
        /* RAFT_CANTBOOTSTRAP: there is state already; a restart uses it. */
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
            rc = mesh_errf(err, MESH_EIO, "raft bootstrap: %s", raft_errmsg(&c->raft));
            goto fail;
        }
    }
    rv = raft_start(&c->raft);
    if (rv != 0) {
        if (c->load_failed)
            rc = mesh_errf(err, MESH_EIO,
                           "raft storage %.60s is damaged: %.96s; not starting without its "
                           "entries (move the directory aside to rejoin from the others)",
                           c->dir, c->damaged[0] ? c->damaged : raft_errmsg(&c->raft));
        else
            rc = mesh_errf(err, MESH_EIO, "raft start: %s", raft_errmsg(&c->raft));
        goto fail;
    }
    if (cfg->on_change && uv_check_init(cfg->uv, &c->check) == 0) {
        /* seen_* start at zero: a start that restored a snapshot is reported once. */
        c->check.data = c;
        uv_check_start(&c->check, on_check);
        uv_unref((uv_handle_t *)&c->check); /* it does not keep the loop alive */
        c->check_ready = true;
    }
    *ret = c;
    return 0;
fail:
    if (c->raft_ready) {
        /* raft_init succeeded: raft owns io now and must close it (async). */
        c->close_cb = NULL;
        c->closing = 1;
        raft_close(&c->raft, on_raft_closed);
        return rc;
    }
    if (c->io_ready)
        raft_uv_close(&c->io);
    free_cluster(c);
    return rc;
}

int cluster_recover(const char *data_dir, raft_id id, const char *address, struct mesh_err *err)
{
    char dir[1024];
    uv_loop_t loop;
    struct raft_uv_transport transport = {0};
    struct raft_io io;
    struct raft raft;
    struct raft_configuration conf;
    struct fsm *fsm = NULL;
    int rc = 0, rv;

    snprintf(dir, sizeof dir, "%s/%s", data_dir, CLUSTER_RAFT_DIR);
    if (uv_loop_init(&loop) != 0)
        return mesh_errf(err, MESH_ENOMEM, "cannot set up a loop");
    if (fsm_new(&fsm) < 0) {
        rc = mesh_errf(err, MESH_ENOMEM, "out of memory");
        goto out_loop;
    }
    /* raft_recover only rewrites the log: the stock TCP transport is never used to connect. */
    if (raft_uv_tcp_init(&transport, &loop) != 0) {
        rc = mesh_errf(err, MESH_EIO, "cannot set up raft");
        goto out_fsm;
    }
    if (raft_uv_init(&io, &loop, dir, &transport) != 0) {
        rc = mesh_errf(err, MESH_EIO, "raft storage in %s: %s", dir, io.errmsg);
        goto out_transport;
    }
    if (raft_init(&raft, &io, fsm_raft(fsm), id, address) != 0) {
        rc = mesh_errf(err, MESH_EIO, "raft: %s", raft_errmsg(&raft));
        raft_uv_close(&io);
        goto out_transport;
    }
    raft_configuration_init(&conf);
    rv = raft_configuration_add(&conf, id, address, RAFT_VOTER);
    if (rv == 0)
        rv = raft_recover(&raft, &conf);
    if (rv != 0)
        rc = mesh_errf(err, MESH_EIO, "raft recover: %s%s%s", raft_strerror(rv),
                       raft_errmsg(&raft)[0] ? ": " : "", raft_errmsg(&raft));
    raft_configuration_close(&conf);
    raft_close(&raft, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    raft_uv_close(&io);
out_transport:
    raft_uv_tcp_close(&transport);
out_fsm:
    fsm_free(fsm);
out_loop:
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}
