#include "node.h"

#include <errno.h>
#include <sodium.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "atomicfile.h"
#include "dlist.h"
#include "timeutil.h"
#include "version.h"
#include "wire.h"

/* ---- data dir ---------------------------------------------------------------------------- */

/* Creates dir and its missing parents: the parents 0755, dir itself with mode. */
static int mkdir_p(const char *dir, mode_t mode)
{
    char buf[CONFIG_PATH_MAX];
    size_t len = strlen(dir);
    if (len >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, dir, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Creates the data dir and takes its lock: one meshd per data dir. */
static int data_dir_open(struct node *n, struct mesh_err *err)
{
    char path[CONFIG_PATH_MAX + 32];
    const char *dir = n->cfg.data_dir;
    int rc = mkdir_p(dir, 0700);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot create data dir %s: %s", dir, strerror(-rc));
    /* It holds the identity key, the key ring and the Raft log: owner-only, also when it was
     * made by someone else (a package, a mkdir by hand) with a wider mode. */
    struct stat st;
    if (stat(dir, &st) == 0 && st.st_uid == geteuid() && (st.st_mode & 077) &&
        chmod(dir, 0700) != 0)
        return mesh_errf(err, -errno, "cannot make data dir %s owner-only: %s", dir,
                         strerror(errno));
    snprintf(path, sizeof path, "%s/meshd.lock", dir);
    n->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (n->lock_fd < 0)
        return mesh_errf(err, -errno, "data dir %s is not writable: %s", dir, strerror(errno));
    if (flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return mesh_errf(err, MESH_EEXISTS, "data dir %s is in use by another meshd", dir);
    /* Prove the dir takes writes now rather than failing later on the first state write. */
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(n->lock_fd, 0) != 0 || write(n->lock_fd, pid, (size_t)len) != len)
        return mesh_errf(err, -errno, "data dir %s is not writable: %s", dir, strerror(errno));
    return 0;
}

/* ---- mesh port --------------------------------------------------------------------------- */

static int bind_socket(struct node *n, int type, uint16_t port, struct mesh_err *err)
{
    struct sockaddr_storage ss;
    struct mesh_addr a = n->cfg.bind;
    char astr[MESH_ADDR_STRLEN];
    a.port = port;
    socklen_t sl = mesh_addr_to_sockaddr(&a, &ss);
    int fd = socket(ss.ss_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return mesh_errf(err, -errno, "socket: %s", strerror(errno));
    int one = 1;
    if (type == SOCK_STREAM)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        close(fd);
        return mesh_errf(err, -e, "cannot bind the mesh port %s/%s: %s%s",
                         mesh_addr_format(&a, astr, sizeof astr),
                         type == SOCK_STREAM ? "tcp" : "udp", strerror(e),
                         e == EADDRINUSE ? " (is another meshd or serf running? use --bind)" : "");
    }
    if (type == SOCK_STREAM && listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        return mesh_errf(err, -e, "listen: %s", strerror(e));
    }
    return fd;
}

static uint16_t socket_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    struct mesh_addr a = {0};
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        mesh_addr_from_sockaddr((struct sockaddr *)&ss, &a);
    return a.port;
}

/* UDP and TCP share the port number. With port 0, TCP picks one and UDP takes the same. */
static int mesh_port_open(struct node *n, struct mesh_err *err)
{
    int fd = bind_socket(n, SOCK_STREAM, n->cfg.bind.port, err);
    if (fd < 0)
        return fd;
    n->tcp_fd = fd;
    uint16_t port = socket_port(fd);
    fd = bind_socket(n, SOCK_DGRAM, port, err);
    if (fd < 0)
        return fd;
    n->udp_fd = fd;
    if (n->cfg.bind.port == 0) {
        n->cfg.bind.port = port;
        if (n->cfg.advertise.port == 0)
            n->cfg.advertise.port = port;
    }
    return 0;
}

/* ---- small state files ------------------------------------------------------------------- */

/* Writes text to DIR/name atomically and durably (common/atomicfile.h). */
static int write_state_file(const char *dir, const char *name, const char *text,
                            struct mesh_err *err)
{
    char path[CONFIG_PATH_MAX + 64], tmp[CONFIG_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    return mesh_file_replace(tmp, path, text, strlen(text), 0600, err);
}

/* The epoch grows at every start so that gossip replayed from an earlier run is refused
 * (keyring.h): the saved one + 1, or the wall clock's seconds when that is more. So a start
 * that cannot save its epoch (a full disk) still runs, and the next start still goes beyond
 * it, unless the clock went back meanwhile. */
static int epoch_bump(struct node *n, struct mesh_err *err)
{
    char path[CONFIG_PATH_MAX + 16], text[32] = "";
    snprintf(path, sizeof path, "%s/%s", n->cfg.data_dir, NODE_EPOCH_FILE);
    FILE *f = fopen(path, "re");
    if (f) {
        if (!fgets(text, sizeof text, f))
            text[0] = '\0';
        fclose(f);
    }
    uint64_t saved = strtoull(text, NULL, 10), now = (uint64_t)time(NULL);
    n->epoch = saved + 1 > now ? saved + 1 : now;
    snprintf(text, sizeof text, "%llu\n", (unsigned long long)n->epoch);
    struct mesh_err e = {0};
    int rc = write_state_file(n->cfg.data_dir, NODE_EPOCH_FILE, text, &e);
    if (rc == -ENOSPC || rc == -EDQUOT) {
        log_error(&n->log, "%s; running with epoch %llu from the clock", e.msg,
                  (unsigned long long)n->epoch);
        return 0;
    }
    if (rc < 0)
        *err = e;
    return rc;
}

/* Seeds for rejoining after a restart without --join: members last seen alive. */
static void remembered_peers_load(struct node *n)
{
    char path[CONFIG_PATH_MAX + 16], line[MESH_ADDR_STRLEN + 2];
    snprintf(path, sizeof path, "%s/%s", n->cfg.data_dir, NODE_PEERS_FILE);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    while (fgets(line, sizeof line, f) && n->nseeds < NODE_REMEMBER_MAX) {
        line[strcspn(line, "\r\n")] = '\0';
        struct mesh_addr a;
        if (mesh_addr_parse(line, 0, &a) == 0 && !mesh_addr_equal(&a, &n->cfg.advertise))
            n->seeds[n->nseeds++] = a;
    }
    fclose(f);
}

static void remember_peers(struct node *n)
{
    char text[NODE_REMEMBER_MAX * (MESH_ADDR_STRLEN + 1) + 1];
    size_t off = 0, count = 0;
    const struct swim *sw = gossip_swim(n->gossip);
    for (size_t i = 0; i < swim_member_count(sw) && count < NODE_REMEMBER_MAX; i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        /* Only members a link proved: the file outlives this run, and an address that gossip
         * alone claimed may be anyone's (issue 10). */
        if (m == swim_self(sw) || m->state != SWIM_ALIVE || !m->verified)
            continue;
        char a[MESH_ADDR_STRLEN];
        off += (size_t)snprintf(text + off, sizeof text - off, "%s\n",
                                mesh_addr_format(&m->addr, a, sizeof a));
        count++;
    }
    text[off] = '\0';
    if (count == 0)
        return; /* keep the last good list while we are alone */
    struct mesh_err err;
    if (write_state_file(n->cfg.data_dir, NODE_PEERS_FILE, text, &err) < 0)
        log_warn(&n->log, "%s", err.msg);
}

/* ---- key ring ---------------------------------------------------------------------------- */

static int keyring_setup(struct node *n, struct mesh_err *err)
{
    uint8_t key[MESH_KEY_LEN];
    bool have_flag_key = false;
    int rc;
    if (n->cfg.key_file[0]) {
        rc = mesh_key_load(n->cfg.key_file, key, err);
        if (rc < 0)
            return rc;
        have_flag_key = true;
    }
    rc = keyring_load(&n->kr, n->cfg.data_dir, err);
    if (rc == MESH_ENOTFOUND) {
        if (!have_flag_key && n->cfg.njoin > 0)
            return mesh_errf(err, MESH_EINVAL,
                             "joining a mesh needs its key: give --key-file (the file made by "
                             "`meshctl keygen` for this mesh)");
        if (!have_flag_key) {
            mesh_key_generate(key);
            n->created_key = true;
        }
        keyring_init(&n->kr, key);
        rc = keyring_save(&n->kr, n->cfg.data_dir, err);
    } else if (rc == 0 && have_flag_key && keyring_find(&n->kr, key) < 0) {
        /* The ring is authoritative once it exists (meshctl keys changes it, as Serf's keyring
         * file overrides -encrypt): an old --key-file must not bring back a key that was
         * rotated out, perhaps because it leaked. */
        n->key_file_ignored = true;
    }
    sodium_memzero(key, sizeof key);
    return rc;
}

int node_keyring_changed(struct node *n, struct mesh_err *err)
{
    int rc = keyring_save(&n->kr, n->cfg.data_dir, err);
    if (rc < 0)
        log_error(&n->log, "%s", err->msg);
    return rc;
}

/* ---- links ------------------------------------------------------------------------------- */

/* Handshake payload: [1, name, advertised addr, node id, epoch]. Nothing secret (link.h). The
 * handshake authenticates it with our identity key, so it is what proves our id, name and
 * address (a member's verification) and our epoch (the replay windows, keyring.h). Older
 * nodes send the first four only. */
static int hs_payload(const struct node *n, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 5);
    msgpack_pack_uint8(&w.pk, 1);
    wire_pack_str(&w.pk, n->cfg.name, strlen(n->cfg.name));
    wire_pack_addr(&w.pk, &n->cfg.advertise);
    wire_pack_bin(&w.pk, n->ident.id, NODE_ID_LEN);
    msgpack_pack_uint64(&w.pk, n->epoch);
    return w.overflow ? MESH_ETOOBIG : (int)w.len;
}

/* Whether adv is the address of a live verified member other than the one with this id (or
 * ours). Only verified members count: gossip alone may claim any address, and a made-up member
 * at a real node's address must not shut that node's links out. */
static bool claims_taken_address(struct node *n, const uint8_t id[static NODE_ID_LEN],
                                 const struct mesh_addr *adv)
{
    if (mesh_addr_equal(adv, &n->cfg.advertise))
        return memcmp(id, n->ident.id, NODE_ID_LEN) != 0;
    const struct swim *sw = gossip_swim(n->gossip);
    for (size_t i = 0; i < swim_member_count(sw); i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (m->verified && (m->state == SWIM_ALIVE || m->state == SWIM_SUSPECT) &&
            mesh_addr_equal(&m->addr, adv) && memcmp(m->id, id, NODE_ID_LEN) != 0)
            return true;
    }
    return false;
}

static int on_link_handshake(void *ud, const uint8_t peer_static[LINK_KEY_LEN],
                             const uint8_t *payload, size_t len, struct mesh_addr *ret_adv)
{
    struct node *n = ud;
    struct wire_rd r;
    uint32_t count, nlen, idlen;
    uint64_t v, epoch = 0;
    const char *name;
    const uint8_t *id;
    struct mesh_addr adv;
    wire_rd_init(&r, payload, len);
    if (wire_rd_array(&r, &count) < 0 || count < 4 || wire_rd_uint(&r, &v) < 0 || v != 1 ||
        wire_rd_str(&r, &name, &nlen) < 0 || wire_rd_addr(&r, &adv) < 0 ||
        wire_rd_bin(&r, &id, &idlen) < 0 || idlen != NODE_ID_LEN)
        return MESH_EMALFORMED;
    bool has_epoch = count >= 5 && wire_rd_uint(&r, &epoch) == 0;
    /* The id a peer claims must be the one its identity key gives. */
    if (!identity_key_binds_id(peer_static, id))
        return MESH_EAUTH;
    /* Calls to an address reuse whatever link advertises it (peers.h), so a link may not claim
     * the address of another live verified member (or ours): else a key holder could advertise
     * the leader's address and take the writes and reads forwarded to it. A node that comes
     * back at its address with a new identity is let in once its old one is declared dead. */
    if (n->gossip && claims_taken_address(n, id, &adv))
        return MESH_EAUTH;
    /* What the key holder says about itself is now proven: the member with this id, name and
     * address is verified, and its epoch is the one its gossip is checked against. */
    if (n->gossip && nlen >= 1 && nlen <= SWIM_NAME_MAX &&
        memcmp(id, n->ident.id, NODE_ID_LEN) != 0) {
        char nm[SWIM_NAME_MAX + 1];
        memcpy(nm, name, nlen);
        nm[nlen] = '\0';
        gossip_proven(n->gossip, id, nm, &adv, has_epoch, epoch);
    }
    *ret_adv = adv;
    return 0;
}

static void on_link(void *ud, const struct mesh_addr *addr, bool up, bool outgoing,
                    const struct mesh_err *err)
{
    struct node *n = ud;
    char a[MESH_ADDR_STRLEN];
    mesh_addr_format(addr, a, sizeof a);
    if (up) {
        const char *cipher = n->peers ? peers_link_cipher(n->peers, addr) : NULL;
        log_debug(&n->log, "link %s %s is up (%s)", outgoing ? "to" : "from", a,
                  cipher ? cipher : "cipher unknown");
    } else if (err && err->code != 0 && err->code != MESH_ECLOSED) {
        /* A peer with the wrong key retries for ever: say why once per peer per minute. */
        uint32_t held = 0;
        if (log_ratelimit_host(&n->link_log_rl, addr, mesh_now_ms(), 60000, &held)) {
            if (held)
                log_warn(&n->log,
                         "link %s %s failed: %s (and %u more suppressed in the last minute)",
                         outgoing ? "to" : "from", a, err->msg, held);
            else
                log_warn(&n->log, "link %s %s failed: %s", outgoing ? "to" : "from", a, err->msg);
        }
    } else {
        log_debug(&n->log, "link %s %s closed", outgoing ? "to" : "from", a);
    }
}

/* ---- verification on demand ------------------------------------------------------------ */

static void on_verify_reply(void *ud, int rc, const uint8_t *reply, size_t len,
                            const struct mesh_err *err)
{
    struct node *n = ud;
    (void)rc;
    (void)reply;
    (void)len;
    (void)err;
    /* Whatever the answer, the handshake (if any) has marked the member already. */
    if (n->verify_inflight > 0)
        n->verify_inflight--;
}

void node_verify_member(struct node *n, const struct swim_member *m)
{
    if (!n->peers || !n->gossip || m->verified || m->state != SWIM_ALIVE ||
        n->verify_inflight >= NODE_VERIFY_INFLIGHT || mesh_addr_equal(&m->addr, &n->cfg.advertise))
        return;
    uint64_t now = mesh_now_ms();
    size_t slot = 0;
    for (size_t i = 0; i < NODE_VERIFY_RECENT; i++) {
        if (memcmp(n->verify_recent[i].id, m->id, NODE_ID_LEN) == 0 && n->verify_recent[i].at) {
            if (now - n->verify_recent[i].at < NODE_VERIFY_RETRY_MS)
                return;
            slot = i;
            break;
        }
        if (n->verify_recent[i].at < n->verify_recent[slot].at)
            slot = i;
    }
    memcpy(n->verify_recent[slot].id, m->id, NODE_ID_LEN);
    n->verify_recent[slot].at = now ? now : 1;
    uint64_t probe = 0;
    if (peers_call(n->peers, &m->addr, CALL_PING, (const uint8_t *)&probe, sizeof probe, 64,
                   NODE_VERIFY_TIMEOUT, on_verify_reply, n) == 0) {
        n->verify_inflight++;
        n->verify_calls++;
    }
}

/* gossip saw a conflicting epoch for sender `id` that no link has proven: a link to that
 * member proves its real one (keyring.h). */
static void on_want_proof(void *ud, const uint8_t id[NODE_ID_LEN])
{
    struct node *n = ud;
    if (n->verify_inflight >= NODE_VERIFY_INFLIGHT)
        return;
    /* Every such packet comes here: the recent tries cut the scan short. */
    uint64_t now = mesh_now_ms();
    for (size_t i = 0; i < NODE_VERIFY_RECENT; i++)
        if (n->verify_recent[i].at && now - n->verify_recent[i].at < NODE_VERIFY_RETRY_MS &&
            memcmp(n->verify_recent[i].id, id, NODE_ID_LEN) == 0)
            return;
    const struct swim *sw = gossip_swim(n->gossip);
    for (size_t i = 0; i < swim_member_count(sw); i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (memcmp(m->id, id, NODE_ID_LEN) == 0 && m != swim_self(sw)) {
            node_verify_member(n, m);
            return;
        }
    }
}

static void on_accept_paused(void *ud, int err, uint32_t wait_ms)
{
    struct node *n = ud;
    uint32_t held = n->accept_log_rl.suppressed;
    if (!log_ratelimit_ok(&n->accept_log_rl, mesh_now_ms(), 60000))
        return;
    n->accept_log_rl.suppressed = 0;
    log_warn(&n->log,
             "mesh port: cannot accept a link: %s; not accepting for %u ms (%u more such pauses "
             "in the last minute)",
             strerror(-err), wait_ms, held);
}

/* ---- gossip hooks ------------------------------------------------------------------------ */

struct pp_call {
    struct node *n;
    uint64_t req;
    struct pp_call *prev, *next; /* in n->pp_calls */
};

static void pp_call_free(struct pp_call *pc)
{
    DLIST_REMOVE(pc->n->pp_calls, pc);
    free(pc);
}

static void on_pushpull_reply(void *ud, int rc, const uint8_t *reply, size_t len,
                              const struct mesh_err *err)
{
    struct pp_call *pc = ud;
    if (rc < 0) {
        log_debug(&pc->n->log, "push-pull failed: %s", err ? err->msg : mesh_strerror(rc));
        /* Kept so that a failed join can say why ("different mesh key?"), which the state
         * machine only knows as a code. */
        snprintf(pc->n->last_pp_error, sizeof pc->n->last_pp_error, "%s",
                 err ? err->msg : mesh_strerror(rc));
    }
    gossip_pushpull_done(pc->n->gossip, pc->req, rc, reply, len);
    pp_call_free(pc);
}

static int hook_pushpull(void *ud, uint64_t req, const struct mesh_addr *to, const uint8_t *state,
                         size_t len)
{
    struct node *n = ud;
    struct pp_call *pc = calloc(1, sizeof *pc);
    if (!pc)
        return MESH_ENOMEM;
    pc->n = n;
    pc->req = req;
    int rc =
        peers_call(n->peers, to, CALL_PUSHPULL, state, len,
                   swim_pushpull_max_len(gossip_swim(n->gossip)), 10000, on_pushpull_reply, pc);
    if (rc < 0) {
        free(pc);
        return rc;
    }
    /* The callback never fires from inside peers_call: linking now is in time. */
    DLIST_PUSH(n->pp_calls, pc);
    return rc;
}

static void serve_pushpull(void *ud, struct peers_req *req)
{
    struct node *n = ud;
    uint8_t *reply = NULL;
    size_t len = 0;
    struct mesh_err err = {0};
    int rc = gossip_pushpull_recv(n->gossip, &req->from, req->data, req->len, &reply, &len, &err);
    if (rc == MESH_EEXISTS && reply) {
        char a[MESH_ADDR_STRLEN];
        log_warn(&n->log, "refused a join from %s: %s", mesh_addr_format(&req->from, a, sizeof a),
                 err.msg);
        rc = 0; /* the refusal travels inside the reply */
    }
    peers_respond(req, rc, reply, len, rc < 0 ? err.msg : NULL);
    free(reply);
}

static void start_join(struct node *n);

static void on_join_done(void *ud, int rc, const struct mesh_err *err)
{
    struct node *n = ud;
    if (rc == 0) {
        if (!n->joined)
            log_info(&n->log, "joined the mesh");
        n->joined = true;
        n->join_error[0] = '\0';
        return;
    }
    if (rc != MESH_EEXISTS && n->last_pp_error[0])
        snprintf(n->join_error, sizeof n->join_error, "no seed answered; last: %.200s",
                 n->last_pp_error);
    else
        snprintf(n->join_error, sizeof n->join_error, "%s", err ? err->msg : mesh_strerror(rc));
    if (rc == MESH_EEXISTS) {
        log_error(&n->log, "cannot join: %s; pick another --name", n->join_error);
        node_stop(n, 1);
        return;
    }
    /* Retries come every few seconds: say it again only when the reason changes, or once a
     * minute. */
    if (!n->joined && (strcmp(n->join_error, n->join_error_logged) != 0 ||
                       log_ratelimit_ok(&n->join_log_rl, mesh_now_ms(), 60000))) {
        n->join_log_rl.last_ms = mesh_now_ms();
        snprintf(n->join_error_logged, sizeof n->join_error_logged, "%s", n->join_error);
        log_warn(&n->log, "cannot join yet (%s); retrying every %d s", n->join_error,
                 NODE_REJOIN_MS / 1000);
    }
}

static void on_leave_done(void *ud, int rc)
{
    struct node *n = ud;
    log_info(&n->log, rc == 0 ? "left the mesh" : "leave timed out; stopping anyway");
    node_stop(n, 0);
}

static void start_join(struct node *n)
{
    if (n->nseeds == 0 || n->leaving)
        return;
    if (gossip_join(n->gossip, n->seeds, n->nseeds) < 0)
        log_warn(&n->log, "cannot start joining: no seed reachable");
}

/* Until joined, retry the seeds. Once joined, reconnect to members gossip says are dead, one
 * at a time, so that both halves of a healed partition find each other again (Serf's
 * reconnect of failed members). */
static void on_rejoin_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)fd;
    (void)what;
    if (n->leaving)
        return;
    if (!n->joined) {
        start_join(n);
        return;
    }
    /* Reconnect (as memberlist does): one push-pull every tick with a member believed dead,
     * or with a seed (--join or remembered) that is not a live member, so that two groups
     * that formed apart (all nodes restarted at once and each found a different first peer)
     * still merge. */
    const struct swim *sw = gossip_swim(n->gossip);
    struct mesh_addr cand[64 + CONFIG_JOIN_MAX + NODE_REMEMBER_MAX];
    size_t nc = 0;
    for (size_t i = 0; i < swim_member_count(sw) && nc < 64; i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (m->state == SWIM_DEAD && m->verified) /* an unverified address may be made up */
            cand[nc++] = m->addr;
    }
    for (size_t k = 0; k < n->nseeds; k++) {
        bool live = mesh_addr_equal(&n->seeds[k], &n->cfg.advertise);
        for (size_t i = 0; i < swim_member_count(sw) && !live; i++) {
            const struct swim_member *m = swim_member_at(sw, i);
            live = (m->state == SWIM_ALIVE || m->state == SWIM_SUSPECT) &&
                   mesh_addr_equal(&m->addr, &n->seeds[k]);
        }
        if (!live)
            cand[nc++] = n->seeds[k];
    }
    if (nc > 0)
        gossip_join(n->gossip, &cand[randombytes_uniform((uint32_t)nc)], 1);
}

static void on_remember_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    remember_peers(arg);
}

static int gossip_open(struct node *n, struct mesh_err *err)
{
    uint8_t meta[SWIM_META_MAX];
    nodemeta_local(&n->meta, &n->cfg);
    int mlen = nodemeta_encode(&n->meta, meta, sizeof meta);
    if (mlen < 0)
        return mesh_errf(err, MESH_ETOOBIG,
                         "the labels are too large to gossip (at most %d bytes of metadata): "
                         "use fewer or shorter --label",
                         SWIM_META_MAX);
    struct swim_config sc;
    swim_config_init(&sc);
    sc.name = n->cfg.name;
    memcpy(sc.id, n->ident.id, NODE_ID_LEN);
    sc.addr = n->cfg.advertise;
    sc.meta = meta;
    sc.meta_len = (size_t)mlen;
    sc.max_packet = SEAL_MAX_PAYLOAD;
    gossip_profile_apply(&sc, n->cfg.gossip_profile);
    sc.dead_reap_ms = sc.left_reap_ms = n->cfg.reap_after_ms;
    struct gossip_hooks hooks = {
        .ud = n,
        .pushpull = hook_pushpull,
        .join_done = on_join_done,
        .leave_done = on_leave_done,
        .want_proof = on_want_proof,
    };
    int rc = gossip_new(n->loop.base, n->udp_fd, &sc, &n->kr, n->epoch, &hooks, &n->log, &n->gossip,
                        err);
    if (rc < 0)
        return rc;
    n->udp_fd = -1; /* gossip owns it */
    return 0;
}

static int peers_open(struct node *n, struct mesh_err *err)
{
    uint8_t payload[LINK_HS_PAYLOAD_MAX];
    int plen = hs_payload(n, payload, sizeof payload);
    if (plen < 0)
        return mesh_errf(err, plen, "handshake payload too large");
    struct peers_config pc = {
        .static_priv = n->ident.priv,
        .kr = &n->kr,
        .payload = payload,
        .payload_len = (size_t)plen,
        .link_ciphers = n->cfg.link_ciphers,
    };
    struct peers_hooks hooks = {.ud = n,
                                .on_handshake = on_link_handshake,
                                .on_link = on_link,
                                .on_accept_paused = on_accept_paused};
    int rc = peers_new(n->loop.base, n->tcp_fd, &pc, &hooks, &n->peers, err);
    if (rc < 0)
        return rc;
    n->tcp_fd = -1; /* peers owns it */
    return peers_serve(n->peers, CALL_PUSHPULL, 4u << 20, serve_pushpull, n);
}

/* ---- life cycle -------------------------------------------------------------------------- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct node *n = arg;
    (void)what;
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (n->raft_closing) {
        log_info(&n->log, "received %s again; stopping once raft has closed (at most %d s)", name,
                 NODE_RAFT_CLOSE_MS / 1000);
        return;
    }
    if (n->leaving) {
        log_info(&n->log, "received %s again, stopping now", name);
        node_stop(n, 0);
        return;
    }
    log_info(&n->log, "received %s, leaving the mesh and shutting down", name);
    if (node_leave(n) < 0)
        node_stop(n, 0);
}

int node_leave(struct node *n)
{
    if (n->leaving)
        return 0;
    n->leaving = true;
    /* A leader hands over first, so the mesh keeps a leader without an election timeout. */
    if (n->cluster && cluster_transfer(n->cluster) == 0)
        log_info(&n->log, "raft: handing leadership over before leaving");
    int rc = gossip_leave(n->gossip);
    if (rc < 0)
        log_warn(&n->log, "cannot leave gracefully: %s", mesh_strerror(rc));
    return rc;
}

static struct event *timer_every(struct node *n, uint64_t ms, event_callback_fn fn)
{
    struct event *ev = event_new(n->loop.base, -1, EV_PERSIST, fn, n);
    struct timeval tv = mesh_ms_to_timeval(ms);
    if (ev && event_add(ev, &tv) != 0) {
        event_free(ev);
        ev = NULL;
    }
    return ev;
}

void node_meta_publish(struct node *n)
{
    uint8_t meta[SWIM_META_MAX];
    int len = nodemeta_encode(&n->meta, meta, sizeof meta);
    if (len >= 0)
        gossip_set_meta(n->gossip, meta, (size_t)len);
    else
        log_warn(&n->log, "this node's metadata does not fit in gossip (%d): not published", len);
}

int node_start(struct node *n, const struct meshd_config *cfg, struct mesh_err *err)
{
    int rc;
    memset(n, 0, sizeof *n);
    n->lock_fd = n->tcp_fd = n->udp_fd = -1;
    n->cfg = *cfg;
    n->started_ms = mesh_now_ms();
    log_init(&n->log, stderr, cfg->log_level, cfg->name);

    rc = mesh_loop_init(&n->loop);
    if (rc < 0) {
        mesh_errf(err, rc, "cannot set up the event loop");
        goto fail;
    }
    if (cfg->key_file[0]) {
        /* Check the key file before touching the data dir: a refused start leaves nothing. */
        uint8_t key[MESH_KEY_LEN];
        rc = mesh_key_load(cfg->key_file, key, err);
        sodium_memzero(key, sizeof key);
        if (rc < 0)
            goto fail;
    }
    if ((rc = data_dir_open(n, err)) < 0)
        goto fail;
    if ((rc = mesh_port_open(n, err)) < 0)
        goto fail;
    int created = 0;
    if ((rc = identity_load_or_create(n->cfg.data_dir, &n->ident, &created, err)) < 0)
        goto fail;
    if ((rc = keyring_setup(n, err)) < 0 || (rc = epoch_bump(n, err)) < 0)
        goto fail;
    if ((rc = peers_open(n, err)) < 0 || (rc = gossip_open(n, err)) < 0)
        goto fail;
    if ((rc = api_new(n->loop.base, n->cfg.api_socket, &n->api, err)) < 0 ||
        (rc = node_api_init(n, err)) < 0)
        goto fail;

    memcpy(n->seeds, cfg->join, cfg->njoin * sizeof cfg->join[0]);
    n->nseeds = cfg->njoin;
    if (n->nseeds == 0)
        remembered_peers_load(n);
    /* Only a node that joins no one starts a new Raft cluster; a restart reuses its state. */
    if ((rc = node_raft_start(n, n->nseeds == 0, err)) < 0 ||
        (rc = node_runtime_start(n, err)) < 0 || (rc = node_logs_start(n, err)) < 0 ||
        (rc = node_svc_start(n, err)) < 0 || (rc = node_routes_start(n, err)) < 0 ||
        (rc = node_tunnels_start(n, err)) < 0)
        goto fail;

    n->sig_int = evsignal_new(n->loop.base, SIGINT, on_signal, n);
    n->sig_term = evsignal_new(n->loop.base, SIGTERM, on_signal, n);
    n->rejoin_timer = timer_every(n, NODE_REJOIN_MS, on_rejoin_timer);
    n->remember_timer = timer_every(n, 10000, on_remember_timer);
    if (!n->sig_int || !n->sig_term || event_add(n->sig_int, NULL) ||
        event_add(n->sig_term, NULL) || !n->rejoin_timer || !n->remember_timer) {
        rc = mesh_errf(err, MESH_ENOMEM, "cannot install signal handlers and timers");
        goto fail;
    }

    char addr[MESH_ADDR_STRLEN];
    log_info(&n->log, "%s identity %s, mesh port %s, api %s", created ? "created" : "loaded",
             n->ident.id_str, mesh_addr_format(&n->cfg.advertise, addr, sizeof addr),
             n->cfg.api_socket);
    if (n->key_file_ignored)
        log_warn(&n->log,
                 "the key in --key-file %s is not in the key ring %s/%s (rotated out?): "
                 "using the ring; add a key with `meshctl keys install`",
                 n->cfg.key_file, n->cfg.data_dir, KEYRING_FILENAME);
    if (n->created_key)
        log_warn(&n->log,
                 "no --key-file: created a new mesh key in %s/%s; other nodes need it "
                 "(meshctl keys list shows it)",
                 n->cfg.data_dir, KEYRING_FILENAME);
    return 0;
fail:
    node_close(n);
    return rc;
}

int node_run(struct node *n)
{
    log_info(&n->log, "meshd %s running", FOGMESH_VERSION);
    if (n->nseeds > 0) {
        start_join(n);
    } else {
        n->joined = true;
        log_info(&n->log, "no --join and no remembered peers: this node starts a new mesh");
    }
    if (mesh_loop_run(&n->loop) < 0) {
        log_error(&n->log, "event loop failed");
        return 1;
    }
    node_raft_stop(n);
    return n->exit_code;
}

void node_stop(struct node *n, int exit_code)
{
    /* While raft closes, a second signal or a late leave_done must not end the loop: raft would
     * stay open, its memory and the transport's never freed (LeakSanitizer's report at exit,
     * and a non-zero exit). Its close, or the deadline, ends the loop then. */
    if (n->raft_closing) {
        if (exit_code)
            n->exit_code = exit_code;
        return;
    }
    n->exit_code = exit_code;
    mesh_loop_stop(&n->loop);
}

void node_close(struct node *n)
{
    if (n->gossip && n->joined)
        remember_peers(n);
    api_free(n->api);
    n->api = NULL;
    gossip_free(n->gossip);
    n->gossip = NULL;
    node_tunnels_stop(n); /* its streams belong to peers */
    peers_free(n->peers); /* pending callbacks do not fire: free their state here */
    n->peers = NULL;
    while (n->pp_calls)
        pp_call_free(n->pp_calls);
    node_raft_free(n);
    node_api_close(n);
    node_sched_stop(n);
    node_sched_close(n);
    node_logs_close(n);
    node_runtime_stop(n);
    node_svc_stop(n);
    node_routes_stop(n);
    if (n->transport_ready && !n->cluster)
        transport_free(&n->transport); /* after raft closed it (transport.h) */
    n->transport_ready = false;
    struct event **evs[] = {&n->sig_int, &n->sig_term, &n->rejoin_timer, &n->remember_timer};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        if (*evs[i])
            event_free(*evs[i]);
        *evs[i] = NULL;
    }
    int *fds[] = {&n->tcp_fd, &n->udp_fd, &n->lock_fd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    mesh_loop_close(&n->loop);
    identity_wipe(&n->ident);
    keyring_wipe(&n->kr);
}
