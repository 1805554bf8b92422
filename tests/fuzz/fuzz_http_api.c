/* libFuzzer harness for the local HTTP API (meshd/api.h) on evhttp's parser path: each input is
 * the raw bytes a client sends on the API socket (request line, headers, body; several
 * pipelined requests, chunked bodies, garbage). The harness runs the daemon's api.c for real
 * (api_new on a unix socket in a scratch dir, evhttp with the daemon's limits, its dispatch by
 * method and path with 404 and 405, api_read_json, api_query, api_watch and api_unwatch)
 * behind the daemon's route table (the paths and methods of meshd/node_*.c), and connects to it
 * as meshctl would.
 *
 * The routes' handlers here are not the node's: those need a whole struct node (gossip, raft,
 * peers), which issue 12 item 4 is splitting into per-feature objects. They run the request
 * parsing the node's handlers run before touching the node: the application name of the path
 * and a PUT's body through spec_validate to a PUT_APP command (meshd/node_raft.c), the
 * APP/MS[/REPLICA] references (node_split_ms_ref), the query parameters the handlers read with
 * their buffer sizes (consistent, force, follow, tail, node, listen), and JSON bodies; a
 * followed log answers later, through api_watch, as node_logs.c's does, so a client that hangs
 * up first reaches the gone path.
 *
 * Checks: no crash, leak or sanitizer report; what the API sends back starts as an HTTP
 * status line; a PUT_APP command made from a body decodes to the same name; the sockets of a
 * connection are closed and no answer is owed once the client has hung up; api_query never
 * returns more than fits its buffer.
 *
 *   scripts/fuzz.sh (build-fuzz/tests/fuzz/fuzz_http_api), seeds in tests/fuzz/seeds/http_api */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <raft.h>

#include "api.h"
#include "fsm.h"
#include "node.h"
#include "spec.h"
#include "version.h"

#define INPUT_MAX   (256 * 1024) /* well under API_MAX_BODY; libFuzzer's inputs are smaller */
#define PUMP_ROUNDS 64           /* loop turns per input: enough for any request of INPUT_MAX */

static struct event_base *base;
static struct api *api;
static char dir[64], sock_path[96];

static void cleanup(void)
{
    api_free(api); /* unlinks the socket */
    if (base)
        event_base_free(base);
    if (dir[0])
        rmdir(dir);
}

/* ---- handlers: the node's request parsing, without the node -------------------------------- */

/* api_query with the buffer size a node handler uses; checks the result fits. */
static void query(struct evhttp_request *req, const char *key, size_t len)
{
    char buf[256];
    if (len > sizeof buf)
        abort();
    const char *v = api_query(req, key, buf, len);
    if (v && (v != buf || !memchr(buf, '\0', len)))
        abort();
}

static void h_plain(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)ud;
    query(req, "consistent", 8);                /* node_raft.c */
    query(req, "force", 8);                     /* node_raft.c, recover */
    query(req, "node", FSM_NODE_NAME_MAX + 2);  /* node_svc.c */
    query(req, "listen", MESH_ADDR_STRLEN + 1); /* node_svc.c */
    api_reply_json(req, 200, json_pack("{s:s}", "rest", rest));
}

static void h_body(struct evhttp_request *req, const char *rest, void *ud)
{
    (void)ud;
    (void)rest;
    json_t *body = api_read_json(req); /* replies 400 itself on failure */
    if (!body)
        return;
    if (!json_is_object(body))
        abort();
    api_reply_json(req, 200, json_pack("{s:I}", "keys", (json_int_t)json_object_size(body)));
    json_decref(body);
}

static void h_app(struct evhttp_request *req, const char *rest, void *ud)
{
    char name[FSM_APP_NAME_MAX + 1];
    (void)ud;
    if (!node_api_app_name(req, rest, name, sizeof name))
        return;
    query(req, "consistent", 8);
    api_reply_json(req, 200, json_pack("{s:s}", "name", name));
}

/* PUT /v1/apps/NAME: meshd/node_raft.c's own request side, up to the command it would write. */
static void h_app_put(struct evhttp_request *req, const char *rest, void *ud)
{
    char name[FSM_APP_NAME_MAX + 1];
    struct raft_buffer cmd;
    (void)ud;
    if (node_api_app_put_cmd(req, rest, name, &cmd) < 0)
        return;
    struct fsm_cmd c;
    if (fsm_cmd_decode(cmd.base, cmd.len, &c) < 0 || c.type != FSM_CMD_PUT_APP ||
        c.name_len != strlen(name) || memcmp(c.name, name, c.name_len) != 0)
        abort(); /* what the API would write does not read back */
    raft_free(cmd.base);
    api_reply_json(req, 200, json_pack("{s:s}", "name", name));
}

static void h_app_delete(struct evhttp_request *req, const char *rest, void *ud)
{
    char name[FSM_APP_NAME_MAX + 1];
    struct raft_buffer cmd;
    (void)ud;
    if (node_api_app_delete_cmd(req, rest, name, &cmd) < 0)
        return;
    raft_free(cmd.base);
    api_reply_json(req, 200, json_pack("{s:s}", "name", name));
}

/* GET /v1/microservices/APP/MS, POST /v1/microservices/APP/MS[/REPLICA]/move (node_sched.c). */
static void h_ms(struct evhttp_request *req, const char *rest, void *ud)
{
    char buf[NODE_READ_NAME_MAX + 1];
    const char *app, *ms;
    long replica;
    (void)ud;
    bool post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
    char ref[NODE_READ_NAME_MAX + 8];
    snprintf(ref, sizeof ref, "%s", rest);
    size_t l = strlen(ref);
    if (post) {
        if (l < 5 || strcmp(ref + l - 5, "/move") != 0) {
            api_reply_error(req, 404, "expected .../move");
            return;
        }
        ref[l - 5] = '\0';
    }
    if (node_split_ms_ref(ref, buf, sizeof buf, &app, &ms, post ? &replica : NULL) < 0) {
        api_reply_error(req, 404, "expected /v1/microservices/APP/MICROSERVICE");
        return;
    }
    if (!*app || !*ms || app < buf || ms >= buf + sizeof buf)
        abort();
    if (post) {
        if (replica < -1 || replica >= FSM_REPLICAS_MAX)
            abort();
        h_body(req, rest, ud);
        return;
    }
    query(req, "consistent", 8);
    api_reply_json(req, 200, json_pack("{s:s, s:s}", "app", app, "ms", ms));
}

/* GET /v1/logs/APP/MS[/REPLICA]?follow=true&tail=N (node_logs.c): a followed log answers later,
 * so the client may hang up first. */
struct later {
    struct api_watch w;
    struct event *ev;
    struct later *next;
};
static struct later *laters;

static void later_free(struct later *l)
{
    for (struct later **p = &laters; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    event_free(l->ev);
    free(l);
}

static void later_gone(void *ud)
{
    later_free(ud);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
    struct later *l = arg;
    (void)fd;
    (void)what;
    api_unwatch(l->w.req);
    api_reply_json(l->w.req, 200, json_pack("{s:b}", "followed", 1));
    later_free(l);
}

static void h_logs(struct evhttp_request *req, const char *rest, void *ud)
{
    char buf[NODE_READ_NAME_MAX + 1];
    struct node_logs_args a;
    (void)ud;
    if (strlen(rest) > NODE_READ_NAME_MAX) { /* as node_logs.c's h_logs */
        api_reply_error(req, 404, "no such microservice");
        return;
    }
    if (node_logs_args(req, rest, buf, &a) < 0)
        return;
    if (a.tail < -1 || a.tail > 1000000 || a.replica >= (uint32_t)FSM_REPLICAS_MAX)
        abort();
    if (!a.follow) {
        api_reply_json(req, 200, json_pack("{s:s, s:s}", "app", a.app, "ms", a.ms));
        return;
    }
    struct later *l = calloc(1, sizeof *l);
    if (!l)
        abort();
    l->ev = evtimer_new(base, on_later, l);
    if (!l->ev)
        abort();
    l->w.gone = later_gone;
    l->w.ud = l;
    api_watch(req, &l->w);
    l->next = laters;
    laters = l;
    struct timeval soon = {0, 0};
    evtimer_add(l->ev, &soon); /* the next loop turn: after the client's hang-up, sometimes */
}

/* The daemon's routes (meshd/node_*.c's route tables), with the handler that parses what the
 * node's handler parses. */
#define P FOGMESH_API_PREFIX
static const struct api_route_def routes[] = {
    {"GET", P "/status", h_plain},       {"GET", P "/members", h_plain},
    {"POST", P "/leave", h_plain},       {"GET", P "/keys", h_plain},
    {"POST", P "/keys", h_body},         {"GET", P "/logs/", h_logs},
    {"GET", P "/apps", h_plain},         {"GET", P "/apps/", h_app},
    {"PUT", P "/apps/", h_app_put},      {"DELETE", P "/apps/", h_app_delete},
    {"GET", P "/raft", h_plain},         {"POST", P "/raft/recover", h_plain},
    {"GET", P "/routes", h_plain},       {"GET", P "/microservices", h_plain},
    {"GET", P "/microservices/", h_ms},  {"POST", P "/microservices/", h_ms},
    {"GET", P "/nodes", h_plain},        {"POST", P "/nodes/", h_body},
    {"GET", P "/services", h_plain},     {"PUT", P "/services/", h_body},
    {"DELETE", P "/services/", h_plain},
};

/* ---- the client side ------------------------------------------------------------------------ */

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* as meshd: a client gone mid-reply is EPIPE, not a signal */
    snprintf(dir, sizeof dir, "/tmp/fuzz_http_api.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(sock_path, sizeof sock_path, "%s/api.sock", dir);
    base = event_base_new();
    struct mesh_err err = {0};
    if (!base || api_new(base, sock_path, &api, &err) < 0 ||
        api_route_table(api, routes, sizeof routes / sizeof routes[0], NULL, &err) < 0) {
        fprintf(stderr, "fuzz_http_api: %s\n", err.msg);
        abort();
    }
    atexit(cleanup);
}

/* The sockets this process holds (the listening socket, evhttp's connections, the client's).
 * Sockets and not all descriptors, so that a file libFuzzer opens meanwhile does not count. */
static int sockets_open(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        abort();
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[64], link[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t l = readlink(path, link, sizeof link - 1);
        if (l > 7 && memcmp(link, "socket:", 7) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Reads what the API sent; returns false at EOF or on an error. */
static bool drain(int fd, char *head, size_t *head_len, size_t head_cap)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            size_t take = (size_t)n < head_cap - *head_len ? (size_t)n : head_cap - *head_len;
            memcpy(head + *head_len, buf, take);
            *head_len += take;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return true;
        return false;
    }
}

/* "HTTP/" VERSION " " and a status of 1xx..5xx. evhttp answers in the request's version, as
 * it parsed it: "HTTP/0.1", "HTTP/1.13", and "HTTP/-1.1" to a major version that overflows an
 * int (libevent 2.1's parser); so the version is digits, '.' and '-'. */
static bool status_line(const char *p, size_t len)
{
    size_t i = 5;
    if (len < 5 || memcmp(p, "HTTP/", 5) != 0)
        return false;
    while (i < len && (isdigit((unsigned char)p[i]) || p[i] == '.' || p[i] == '-'))
        i++;
    if (i + 1 >= len)
        return i > 5; /* a long version: the status is past what was kept */
    return i > 5 && p[i] == ' ' && p[i + 1] >= '1' && p[i + 1] <= '5';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > INPUT_MAX)
        return 0;
    if (!base)
        setup();
    int before = sockets_open();

    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        abort();

    /* Send the input as the loop lets the API read it, reading what comes back meanwhile. */
    char head[24];
    size_t head_len = 0, off = 0;
    bool open_ = true;
    for (int round = 0; round < PUMP_ROUNDS && open_; round++) {
        while (off < size) {
            ssize_t n = write(fd, data + off, size - off);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        open_ = drain(fd, head, &head_len, sizeof head);
    }
    if (head_len == sizeof head && !status_line(head, head_len)) {
        fprintf(stderr, "not a status line: %.*s\n", (int)head_len, head);
        abort();
    }

    /* The client hangs up; the API must let go of the connection and any answer it owes. */
    close(fd);
    for (int round = 0; round < PUMP_ROUNDS && (laters || sockets_open() != before); round++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    if (laters || sockets_open() != before) { /* outlived its connection */
        fprintf(stderr, "after the hang-up: %s, %d sockets open (%d before)\n",
                laters ? "a followed log still owed" : "no answer owed", sockets_open(), before);
        abort();
    }
    return 0;
}
