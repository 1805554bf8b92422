#include "node.h"

#include <errno.h>
#include <sodium.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "version.h"

/* ---- data dir ---------------------------------------------------------------------------- */

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
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
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

static void on_tcp_accept(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    (void)what;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0)
        return;
    /* No link protocol is served yet: refuse politely. */
    log_debug(&n->log, "closing an incoming mesh connection: links are not enabled");
    close(c);
}

static void on_udp_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    uint8_t buf[2048];
    while (recv(fd, buf, sizeof buf, 0) >= 0) {
    }
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
    n->tcp_ev = event_new(n->loop.base, n->tcp_fd, EV_READ | EV_PERSIST, on_tcp_accept, n);
    n->udp_ev = event_new(n->loop.base, n->udp_fd, EV_READ | EV_PERSIST, on_udp_read, n);
    if (!n->tcp_ev || !n->udp_ev || event_add(n->tcp_ev, NULL) || event_add(n->udp_ev, NULL))
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    return 0;
}

/* ---- API handlers ------------------------------------------------------------------------ */

static void h_status(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    char addr[MESH_ADDR_STRLEN];
    struct utsname u;
    (void)rest;
    uname(&u);
    json_t *body = json_pack("{s:{s:s, s:s, s:s, s:s}, s:s, s:I, s:{s:s, s:s}}", "node", "name",
                             n->cfg.name, "id", n->ident.id_str, "addr",
                             mesh_addr_format(&n->cfg.advertise, addr, sizeof addr), "arch",
                             u.machine, "version", FOGMESH_VERSION, "uptime_ms",
                             (json_int_t)(mesh_now_ms() - n->started_ms), "paths", "data_dir",
                             n->cfg.data_dir, "api_socket", n->cfg.api_socket);
    api_reply_json(req, body ? 200 : 500, body);
}

static int api_open(struct node *n, struct mesh_err *err)
{
    int rc = api_new(n->loop.base, n->cfg.api_socket, &n->api, err);
    if (rc < 0)
        return rc;
    return api_route(n->api, "GET", FOGMESH_API_PREFIX "/status", h_status, n);
}

/* ---- life cycle -------------------------------------------------------------------------- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct node *n = arg;
    (void)what;
    log_info(&n->log, "received %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    node_stop(n);
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
        rc = mesh_key_load(cfg->key_file, n->mesh_key, err);
        if (rc < 0)
            goto fail;
        n->have_key = true;
    }
    rc = data_dir_open(n, err);
    if (rc < 0)
        goto fail;
    int created = 0;
    rc = identity_load_or_create(n->cfg.data_dir, &n->ident, &created, err);
    if (rc < 0)
        goto fail;
    rc = mesh_port_open(n, err);
    if (rc < 0)
        goto fail;
    rc = api_open(n, err);
    if (rc < 0)
        goto fail;

    n->sig_int = evsignal_new(n->loop.base, SIGINT, on_signal, n);
    n->sig_term = evsignal_new(n->loop.base, SIGTERM, on_signal, n);
    if (!n->sig_int || !n->sig_term || event_add(n->sig_int, NULL) ||
        event_add(n->sig_term, NULL)) {
        rc = mesh_errf(err, MESH_ENOMEM, "cannot install signal handlers");
        goto fail;
    }

    char addr[MESH_ADDR_STRLEN];
    log_info(&n->log, "%s identity %s, mesh port %s, api %s", created ? "created" : "loaded",
             n->ident.id_str, mesh_addr_format(&n->cfg.advertise, addr, sizeof addr),
             n->cfg.api_socket);
    return 0;
fail:
    node_close(n);
    return rc;
}

int node_run(struct node *n)
{
    log_info(&n->log, "meshd %s running", FOGMESH_VERSION);
    if (mesh_loop_run(&n->loop) < 0) {
        log_error(&n->log, "event loop failed");
        return 1;
    }
    return n->exit_code;
}

void node_stop(struct node *n)
{
    mesh_loop_stop(&n->loop);
}

void node_close(struct node *n)
{
    api_free(n->api);
    n->api = NULL;
    struct event **evs[] = {&n->tcp_ev, &n->udp_ev, &n->sig_int, &n->sig_term};
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
    sodium_memzero(n->mesh_key, sizeof n->mesh_key);
}
