#include "gossip.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "loop.h"
#include "timeutil.h"

#define RECV_BATCH   64 /* datagrams handled per wake-up, so one flood cannot starve the loop */
#define RATELIMIT_MS 60000

struct gossip {
    struct event_base *base;
    int fd;
    struct event *rd;
    struct event *timer;
    struct swim *swim;
    const struct keyring *kr;
    const struct logger *log;
    struct gossip_hooks hooks;
    struct replay_table replay;
    struct seal_inner self; /* our id and epoch; seq counts up */
    struct gossip_stats st;
    struct log_ratelimit_hosts rl;
};

/* Log about a misbehaving source at most once a minute (and about all of them at most
 * LOG_RL_BUDGET times a minute); *ret_held tells how many such lines were held back before. */
static bool may_log(struct gossip *g, const struct mesh_addr *from, uint32_t *ret_held)
{
    return log_ratelimit_host(&g->rl, from, mesh_now_ms(), RATELIMIT_MS, ret_held);
}

/* The summary after a rate-limited line: "" or " (and N more suppressed in the last minute)". */
static const char *suppressed(uint32_t held, char note[static 64])
{
    note[0] = '\0';
    if (held)
        snprintf(note, 64, " (and %u more suppressed in the last minute)", held);
    return note;
}

static void rearm(struct gossip *g)
{
    uint64_t next = swim_next_deadline(g->swim);
    event_del(g->timer);
    if (next == SWIM_NO_DEADLINE)
        return;
    uint64_t now = mesh_now_ms();
    uint64_t wait = next > now ? next - now : 0;
    struct timeval tv = mesh_ms_to_timeval(wait);
    event_add(g->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gossip *g = arg;
    (void)fd;
    (void)what;
    swim_tick(g->swim, mesh_now_ms());
    rearm(g);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct gossip *g = arg;
    uint8_t pkt[SEAL_MAX_PACKET + 1], plain[SEAL_MAX_PACKET + 1];
    (void)what;
    for (int i = 0; i < RECV_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        ssize_t n = recvfrom(fd, pkt, sizeof pkt, MSG_TRUNC, (struct sockaddr *)&ss, &sl);
        if (n < 0)
            break;
        struct mesh_addr from;
        char astr[MESH_ADDR_STRLEN], note[64];
        uint32_t held = 0;
        if (mesh_addr_from_sockaddr((struct sockaddr *)&ss, &from) < 0)
            continue;
        g->st.pkts_in++;
        if ((size_t)n > SEAL_MAX_PACKET) {
            g->st.malformed++;
            continue;
        }
        struct seal_inner in;
        const uint8_t *payload;
        int len = seal_open(g->kr, pkt, (size_t)n, plain, sizeof plain, &in, &payload);
        if (len == MESH_EAUTH) {
            g->st.bad_auth++;
            if (may_log(g, &from, &held))
                log_warn(g->log,
                         "dropping gossip from %s: not sealed with a key of our ring (a node "
                         "with another mesh key?)%s",
                         mesh_addr_format(&from, astr, sizeof astr), suppressed(held, note));
            continue;
        }
        if (len < 0) {
            g->st.malformed++;
            if (may_log(g, &from, &held))
                log_warn(g->log, "dropping malformed gossip from %s%s",
                         mesh_addr_format(&from, astr, sizeof astr), suppressed(held, note));
            continue;
        }
        if (sodium_memcmp(in.sender, g->self.sender, NODE_ID_LEN) == 0 &&
            in.epoch == g->self.epoch) {
            g->st.replayed++; /* our own packet reflected back */
            continue;
        }
        bool unproven = false;
        int rrc = replay_check(&g->replay, &in, &unproven);
        if (unproven) {
            g->st.epoch_unproven++;
            if (g->hooks.want_proof)
                g->hooks.want_proof(g->hooks.ud, in.sender);
        }
        if (rrc < 0) {
            g->st.replayed++;
            continue;
        }
        if (swim_recv(g->swim, &from, payload, (size_t)len, mesh_now_ms()) < 0)
            g->st.malformed++;
    }
    rearm(g);
}

/* ---- swim_io ----------------------------------------------------------------------------- */

static int io_send(void *ud, const struct mesh_addr *to, const uint8_t *buf, size_t len)
{
    struct gossip *g = ud;
    uint8_t pkt[SEAL_MAX_PACKET];
    g->self.seq++;
    int n = seal_packet(g->kr, &g->self, buf, len, pkt, sizeof pkt);
    if (n < 0) {
        g->st.send_errors++;
        return n;
    }
    struct sockaddr_storage ss;
    socklen_t sl = mesh_addr_to_sockaddr(to, &ss);
    if (sendto(g->fd, pkt, (size_t)n, 0, (struct sockaddr *)&ss, sl) < 0) {
        g->st.send_errors++;
        return -errno;
    }
    g->st.pkts_out++;
    return 0;
}

static int io_pushpull(void *ud, uint64_t req, const struct mesh_addr *to, const uint8_t *state,
                       size_t len)
{
    struct gossip *g = ud;
    return g->hooks.pushpull(g->hooks.ud, req, to, state, len);
}

static uint32_t io_random(void *ud)
{
    (void)ud;
    return randombytes_random();
}

static void io_member_changed(void *ud, const struct swim_member *m, enum swim_member_state old)
{
    struct gossip *g = ud;
    if (m->state != old || old == SWIM_NONE)
        log_info(g->log, "member %s is %s (was %s)", m->name, swim_state_name(m->state),
                 swim_state_name(old));
    if (g->hooks.member_changed)
        g->hooks.member_changed(g->hooks.ud, m, old);
}

static void io_join_done(void *ud, int rc, const struct mesh_err *err)
{
    struct gossip *g = ud;
    if (g->hooks.join_done)
        g->hooks.join_done(g->hooks.ud, rc, err);
}

static void io_leave_done(void *ud, int rc)
{
    struct gossip *g = ud;
    if (g->hooks.leave_done)
        g->hooks.leave_done(g->hooks.ud, rc);
}

int gossip_profile_parse(const char *s, enum gossip_profile *ret)
{
    if (strcmp(s, "lan") == 0)
        *ret = GOSSIP_PROFILE_LAN;
    else if (strcmp(s, "wan") == 0)
        *ret = GOSSIP_PROFILE_WAN;
    else
        return MESH_EINVAL;
    return 0;
}

void gossip_profile_apply(struct swim_config *sc, enum gossip_profile p)
{
    switch (p) {
    case GOSSIP_PROFILE_LAN:
        sc->probe_interval_ms = 400;
        sc->probe_timeout_ms = 200;
        sc->suspicion_mult = 3;
        sc->gossip_interval_ms = 100;
        break;
    case GOSSIP_PROFILE_WAN:
        sc->probe_interval_ms = 5000;
        sc->probe_timeout_ms = 3000;
        sc->suspicion_mult = 6;
        sc->gossip_interval_ms = 500;
        sc->gossip_nodes = 4;
        break;
    }
}

/* ---- public ------------------------------------------------------------------------------ */

int gossip_new(struct event_base *base, int udp_fd, const struct swim_config *scfg,
               const struct keyring *kr, uint64_t epoch, const struct gossip_hooks *hooks,
               const struct logger *log, struct gossip **ret, struct mesh_err *err)
{
    int rc;
    struct gossip *g = calloc(1, sizeof *g);
    if (!g)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    g->base = base;
    g->fd = udp_fd;
    g->kr = kr;
    g->log = log;
    g->hooks = *hooks;
    memcpy(g->self.sender, scfg->id, NODE_ID_LEN);
    g->self.epoch = epoch;
    rc = replay_init(&g->replay, scfg->max_members ? scfg->max_members : 4096);
    if (rc < 0) {
        mesh_errf(err, rc, "out of memory");
        goto fail;
    }
    struct swim_io io = {
        .data = g,
        .send_packet = io_send,
        .pushpull = io_pushpull,
        .random = io_random,
        .member_changed = io_member_changed,
        .join_done = io_join_done,
        .leave_done = io_leave_done,
    };
    rc = swim_new(scfg, &io, mesh_now_ms(), &g->swim, err);
    if (rc < 0)
        goto fail;
    g->rd = event_new(base, udp_fd, EV_READ | EV_PERSIST, on_readable, g);
    g->timer = evtimer_new(base, on_timer, g);
    if (!g->rd || !g->timer || event_add(g->rd, NULL) != 0) {
        rc = mesh_errf(err, MESH_ENOMEM, "out of memory");
        goto fail;
    }
    rearm(g);
    *ret = g;
    return 0;
fail:
    g->fd = -1; /* the caller keeps the socket on failure */
    gossip_free(g);
    return rc;
}

void gossip_free(struct gossip *g)
{
    if (!g)
        return;
    if (g->rd)
        event_free(g->rd);
    if (g->timer)
        event_free(g->timer);
    swim_free(g->swim);
    replay_free(&g->replay);
    if (g->fd >= 0)
        close(g->fd);
    free(g);
}

int gossip_join(struct gossip *g, const struct mesh_addr *seeds, size_t n)
{
    int rc = swim_join(g->swim, seeds, n, mesh_now_ms());
    rearm(g);
    return rc;
}

int gossip_leave(struct gossip *g)
{
    int rc = swim_leave(g->swim, mesh_now_ms());
    rearm(g);
    return rc;
}

int gossip_set_meta(struct gossip *g, const uint8_t *meta, size_t len)
{
    int rc = swim_set_meta(g->swim, meta, len, mesh_now_ms());
    rearm(g);
    return rc;
}

int gossip_pushpull_recv(struct gossip *g, const struct mesh_addr *from, const uint8_t *buf,
                         size_t len, uint8_t **ret_reply, size_t *ret_len, struct mesh_err *err)
{
    int rc = swim_pushpull_recv(g->swim, from, buf, len, mesh_now_ms(), ret_reply, ret_len, err);
    rearm(g);
    return rc;
}

void gossip_pushpull_done(struct gossip *g, uint64_t req, int rc, const uint8_t *buf, size_t len)
{
    struct mesh_err err = {0};
    if (rc == 0)
        rc = swim_pushpull_merge(g->swim, req, buf, len, mesh_now_ms(), &err);
    else
        swim_pushpull_failed(g->swim, req, mesh_now_ms());
    rearm(g);
}

void gossip_proven(struct gossip *g, const uint8_t id[static NODE_ID_LEN], const char *name,
                   const struct mesh_addr *addr, bool has_epoch, uint64_t epoch)
{
    if (has_epoch)
        replay_prove(&g->replay, id, epoch);
    swim_prove(g->swim, id, name, addr, mesh_now_ms());
    rearm(g);
}

const struct swim *gossip_swim(const struct gossip *g)
{
    return g->swim;
}

const struct gossip_stats *gossip_stats(const struct gossip *g)
{
    return &g->st;
}
