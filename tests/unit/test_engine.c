/* runtime/engine.h: the Docker Engine API client.
 *
 * Without an engine: the frame and progress parsers (every chunk boundary), the tar builder,
 * escaping and the label filter; and, against a fake engine served on the test's own loop, an
 * unreachable socket, a refused connection, a request canceled while queued and while in
 * flight, the concurrency bound (20 requests, 4 at a time), the per-request timeout, the
 * response size bound, a non-JSON error answer and engine_free() with requests pending.
 *
 * With a real engine (FOGMESH_ENGINE_SOCKET, set by scripts/test.sh after scripts/engine.sh
 * start; these tests are skipped when it is unset): version and ping, image inspect (present
 * and missing), create with a missing image, the container lifecycle (create, start, start again
 * = 304, inspect, followed logs with frames, tail, stop, stop again = 304, remove, remove again =
 * not found), list with a label filter, put_file + kill HUP read back through the logs, a TTY
 * container's raw logs, a pull whose error arrives inside the stream, an import, and 20
 * concurrent requests. Containers are named fogmesh-test-PID-* and removed at the end.
 *
 * Every wait runs the loop until a condition holds, under a deadline; nothing sleeps. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine.h"

#define DEADLINE_MS 30000

/* ---- plumbing ---- */

static bool in_call; /* set around each engine_* call: no callback may fire inside */

struct res {
    int calls;
    int status;
    long http;
    bool changed;
    json_t *json;
    char id[128];
    char msg[MESH_ERRMSG_LEN];
};

static void on_done(struct engine_req *req, const struct engine_reply *r, void *data)
{
    struct res *x = data;
    assert_false(in_call);
    x->calls++;
    x->status = r->status;
    x->http = r->http_status;
    x->changed = r->changed;
    if (r->json)
        x->json = json_incref(r->json);
    if (r->id)
        snprintf(x->id, sizeof x->id, "%s", r->id);
    snprintf(x->msg, sizeof x->msg, "%s", r->status ? r->err.msg : "");
}

static void res_clear(struct res *x)
{
    json_decref(x->json);
    memset(x, 0, sizeof *x);
}

#define CALL(expr)                \
    do {                          \
        in_call = true;           \
        int rc_ = (expr);         \
        in_call = false;          \
        assert_int_equal(rc_, 0); \
    } while (0)

struct t {
    struct event_base *base;
    struct engine *e;
    bool timed_out;
    char prefix[64]; /* container names: fogmesh-test-PID */
    char mesh[64];   /* label value for our containers */
};

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Runs the loop until cond(arg) holds; fails the test after DEADLINE_MS. */
static void run_until(struct t *t, bool (*cond)(void *), void *arg)
{
    t->timed_out = false;
    struct event *dl = evtimer_new(t->base, on_deadline, &t->timed_out);
    struct timeval tv = {DEADLINE_MS / 1000, 0};
    evtimer_add(dl, &tv);
    while (!cond(arg) && !t->timed_out)
        event_base_loop(t->base, EVLOOP_ONCE);
    event_free(dl);
    assert_false(t->timed_out);
}

static bool res_done(void *arg)
{
    return ((struct res *)arg)->calls > 0;
}

static void wait_res(struct t *t, struct res *x)
{
    run_until(t, res_done, x);
    assert_int_equal(x->calls, 1);
}

static struct t *t_new(const char *url, const struct engine_config *base_cfg)
{
    struct t *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->base = event_base_new();
    assert_non_null(t->base);
    struct engine_config cfg = {0};
    if (base_cfg)
        cfg = *base_cfg;
    cfg.url = url;
    struct mesh_err err = {0};
    assert_int_equal(engine_new(t->base, &cfg, &t->e, &err), 0);
    snprintf(t->prefix, sizeof t->prefix, "fogmesh-test-%d", (int)getpid());
    snprintf(t->mesh, sizeof t->mesh, "test-%d", (int)getpid());
    return t;
}

static void t_free(struct t *t)
{
    engine_free(t->e);
    /* Let libevent run nothing more of ours: every event was freed with the engine. */
    event_base_free(t->base);
    free(t);
}

static const char *engine_url(void)
{
    const char *s = getenv("FOGMESH_ENGINE_SOCKET");
    return s && s[0] ? s : NULL;
}

#define NEED_ENGINE()                                                                   \
    do {                                                                                \
        if (!engine_url()) {                                                            \
            print_message("skipped: FOGMESH_ENGINE_SOCKET is not set (scripts/test.sh " \
                          "starts a private Podman with scripts/engine.sh)\n");         \
            skip();                                                                     \
        }                                                                               \
    } while (0)

/* ---- parsers, without an engine ---- */

struct collect {
    char out[4096], err[4096];
    size_t out_len, err_len;
    int other;
    int stop_after; /* calls before asking to stop; 0: never */
    int calls;
};

static int on_data(int stream, const char *buf, size_t len, void *data)
{
    struct collect *c = data;
    assert_false(in_call);
    c->calls++;
    if (stream == 1 && c->out_len + len < sizeof c->out) {
        memcpy(c->out + c->out_len, buf, len);
        c->out_len += len;
    } else if (stream == 2 && c->err_len + len < sizeof c->err) {
        memcpy(c->err + c->err_len, buf, len);
        c->err_len += len;
    } else {
        c->other++;
    }
    return c->stop_after && c->calls >= c->stop_after;
}

static size_t frame(uint8_t *p, int stream, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)stream;
    p[1] = p[2] = p[3] = 0;
    p[4] = (uint8_t)(n >> 24);
    p[5] = (uint8_t)(n >> 16);
    p[6] = (uint8_t)(n >> 8);
    p[7] = (uint8_t)n;
    memcpy(p + 8, s, n);
    return 8 + n;
}

static void frames_across_every_boundary(void **state)
{
    uint8_t buf[256];
    size_t n = 0;
    n += frame(buf + n, 1, "out1\n");
    n += frame(buf + n, 2, "err1\n");
    n += frame(buf + n, 1, "");
    n += frame(buf + n, 1, "out2 longer line\n");
    n += frame(buf + n, 2, "e");
    /* Split into three pieces at every pair of points. */
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            struct engine_frames f;
            struct collect c = {0};
            struct mesh_err err = {0};
            engine_frames_init(&f, false, true);
            assert_int_equal(engine_frames_feed(&f, (char *)buf, a, on_data, &c, &err), 0);
            assert_int_equal(engine_frames_feed(&f, (char *)buf + a, b - a, on_data, &c, &err), 0);
            assert_int_equal(engine_frames_feed(&f, (char *)buf + b, n - b, on_data, &c, &err), 0);
            assert_int_equal(f.frames, 5);
            assert_int_equal(f.left, 0);
            assert_false(f.raw);
            assert_int_equal(c.out_len, strlen("out1\nout2 longer line\n"));
            assert_memory_equal(c.out, "out1\nout2 longer line\n", c.out_len);
            assert_int_equal(c.err_len, 6);
            assert_memory_equal(c.err, "err1\ne", 6);
        }
    }
}

static void frames_bad_header_and_raw(void **state)
{
    struct engine_frames f;
    struct collect c = {0};
    struct mesh_err err = {0};
    uint8_t buf[64];
    size_t n = frame(buf, 1, "ok\n");
    memcpy(buf + n, "\x07\0\0\0\0\0\0\1x", 9);
    engine_frames_init(&f, false, true);
    assert_int_equal(engine_frames_feed(&f, (char *)buf, n + 9, on_data, &c, &err),
                     MESH_EMALFORMED);
    assert_non_null(strstr(err.msg, "bad frame header"));
    assert_int_equal(c.out_len, 3);

    /* A TTY container's output: not frames; the first bytes decide (auto_raw). */
    const char *tty = "hello from a tty\r\nsecond line\r\n";
    for (size_t a = 0; a <= strlen(tty); a++) {
        struct collect d = {0};
        engine_frames_init(&f, false, true);
        assert_int_equal(engine_frames_feed(&f, tty, a, on_data, &d, &err), 0);
        assert_int_equal(engine_frames_feed(&f, tty + a, strlen(tty) - a, on_data, &d, &err), 0);
        assert_true(f.raw);
        assert_int_equal(d.out_len, strlen(tty));
        assert_memory_equal(d.out, tty, d.out_len);
    }
    /* tty given: raw from the first byte, even if it looks like a header. */
    struct collect d = {0};
    engine_frames_init(&f, true, false);
    assert_int_equal(engine_frames_feed(&f, (char *)buf, n, on_data, &d, &err), 0);
    assert_int_equal(d.out_len, n);
    /* Not auto: a bad first header is an error. */
    engine_frames_init(&f, false, false);
    assert_int_equal(engine_frames_feed(&f, tty, strlen(tty), on_data, &d, &err), MESH_EMALFORMED);
    /* The data callback stops the stream. */
    struct collect s = {.stop_after = 1};
    engine_frames_init(&f, false, true);
    n = frame(buf, 1, "a");
    n += frame(buf + n, 1, "b");
    assert_int_equal(engine_frames_feed(&f, (char *)buf, n, on_data, &s, &err), MESH_ECLOSED);
    assert_int_equal(s.calls, 1);
}

struct lines {
    int n;
    char last_status[64];
    int stop_after;
};

static int on_line(json_t *line, void *data)
{
    struct lines *l = data;
    l->n++;
    const char *s = json_string_value(json_object_get(line, "status"));
    if (s)
        snprintf(l->last_status, sizeof l->last_status, "%s", s);
    return l->stop_after && l->n >= l->stop_after;
}

static void progress_lines(void **state)
{
    const char *in = "{\"status\":\"Pulling fs layer\",\"id\":\"a\"}\r\n"
                     "\n"
                     "{\"status\":\"Downloading\",\"progressDetail\":{\"current\":1}}\n"
                     "{\"errorDetail\":{\"message\":\"denied: no\"},\"error\":\"denied: no\"}\n"
                     "{\"status\":\"after\"}";
    size_t n = strlen(in);
    for (size_t a = 0; a <= n; a++) {
        struct engine_progress p;
        struct lines l = {0};
        struct mesh_err err = {0};
        engine_progress_init(&p, 0);
        assert_int_equal(engine_progress_feed(&p, in, a, on_line, &l, &err), 0);
        assert_int_equal(engine_progress_feed(&p, in + a, n - a, on_line, &l, &err), 0);
        assert_int_equal(engine_progress_finish(&p, on_line, &l, &err), 0);
        assert_int_equal(l.n, 4);
        assert_string_equal(l.last_status, "after");
        assert_int_equal(p.error, MESH_EIO);
        assert_string_equal(p.message, "denied: no");
        engine_progress_free(&p);
    }
    /* Bounds and garbage. */
    struct engine_progress p;
    struct mesh_err err = {0};
    engine_progress_init(&p, 16);
    assert_int_equal(
        engine_progress_feed(&p, "{\"status\":\"0123456789abcdef\"}\n", 30, NULL, NULL, &err),
        MESH_ETOOBIG);
    engine_progress_free(&p);
    engine_progress_init(&p, 0);
    assert_int_equal(engine_progress_feed(&p, "not json\n", 9, NULL, NULL, &err), MESH_EMALFORMED);
    assert_int_equal(engine_progress_feed(&p, "[1]\n", 4, NULL, NULL, &err), MESH_EMALFORMED);
    engine_progress_free(&p);
    struct lines l = {.stop_after = 1};
    engine_progress_init(&p, 0);
    assert_int_equal(engine_progress_feed(&p, "{}\n{}\n", 6, on_line, &l, &err), MESH_ECLOSED);
    engine_progress_free(&p);
}

static void tar_one_file(void **state)
{
    uint8_t *tar = NULL;
    size_t len = 0;
    const char *body = "key = value\n";
    assert_int_equal(engine_tar_one("app.conf", body, strlen(body), 0640, &tar, &len), 0);
    assert_int_equal(len, 512 + 512 + 1024);
    assert_string_equal((char *)tar, "app.conf");
    assert_memory_equal(tar + 257,
                        "ustar\0"
                        "00",
                        8);
    assert_int_equal(tar[156], '0');
    assert_int_equal(strtoul((char *)tar + 100, NULL, 8), 0640);
    assert_int_equal(strtoul((char *)tar + 124, NULL, 8), strlen(body));
    /* The checksum: the header's bytes summed with the checksum field as spaces. */
    unsigned long want = strtoul((char *)tar + 148, NULL, 8);
    unsigned long sum = 0;
    for (int i = 0; i < 512; i++)
        sum += i >= 148 && i < 156 ? ' ' : tar[i];
    assert_int_equal(sum, want);
    assert_memory_equal(tar + 512, body, strlen(body));
    for (size_t i = 512 + strlen(body); i < len; i++)
        assert_int_equal(tar[i], 0);
    free(tar);
    /* Empty file; bad names. */
    assert_int_equal(engine_tar_one("empty", NULL, 0, 0644, &tar, &len), 0);
    assert_int_equal(len, 512 + 1024);
    free(tar);
    tar = NULL;
    assert_int_equal(engine_tar_one("/abs", "x", 1, 0644, &tar, &len), MESH_EINVAL);
    assert_int_equal(engine_tar_one("../up", "x", 1, 0644, &tar, &len), MESH_EINVAL);
    assert_int_equal(engine_tar_one("", "x", 1, 0644, &tar, &len), MESH_EINVAL);
    assert_null(tar);
}

static void escape_and_filter(void **state)
{
    char *s;
    assert_int_equal(engine_url_escape("a b/c?d=é", NULL, &s), 0);
    assert_string_equal(s, "a%20b%2Fc%3Fd%3D%C3%A9");
    free(s);
    assert_int_equal(engine_url_escape("localhost/bbox:latest", "/:", &s), 0);
    assert_string_equal(s, "localhost/bbox:latest");
    free(s);
    const char *labels[] = {"fogmesh.mesh=m1", "fogmesh.node"};
    assert_int_equal(engine_labels_filter(labels, 2, &s), 0);
    assert_string_equal(s, "{\"label\":[\"fogmesh.mesh=m1\",\"fogmesh.node\"]}");
    free(s);
    const char *bad[] = {""};
    assert_int_equal(engine_labels_filter(bad, 1, &s), MESH_EINVAL);
}

/* ---- a fake engine on the test's loop ---- */

enum fake_mode { FAKE_HANG, FAKE_BIG, FAKE_TEXT_ERROR, FAKE_OK };

struct fake {
    struct t *t;
    enum fake_mode mode;
    char path[108];
    struct evconnlistener *lis;
    struct bufferevent *conns[64];
    int nconns;
    int requests;
};

static void fake_read(struct bufferevent *bev, void *arg)
{
    struct fake *f = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (p.pos < 0)
        return;
    evbuffer_drain(in, (size_t)p.pos + 4);
    f->requests++;
    struct evbuffer *out = bufferevent_get_output(bev);
    switch (f->mode) {
    case FAKE_HANG:
        break;
    case FAKE_BIG:
        evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 5000\r\n\r\n");
        for (int i = 0; i < 50; i++)
            evbuffer_add_printf(out, "%0100d", i);
        break;
    case FAKE_TEXT_ERROR:
        evbuffer_add_printf(out, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 24\r\n\r\nupstream went away\nmore\n");
        break;
    case FAKE_OK:
        evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 2\r\n\r\n{}");
        break;
    }
}

static void fake_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                        int socklen, void *arg)
{
    struct fake *f = arg;
    assert_true(f->nconns < 64);
    struct bufferevent *bev =
        bufferevent_socket_new(evconnlistener_get_base(lis), fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, fake_read, NULL, NULL, f);
    bufferevent_enable(bev, EV_READ);
    f->conns[f->nconns++] = bev;
}

static int bound_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void fake_start(struct fake *f, struct t *t, enum fake_mode mode)
{
    memset(f, 0, sizeof *f);
    f->t = t;
    f->mode = mode;
    snprintf(f->path, sizeof f->path, "/tmp/fogmesh-test-fake-%d.sock", (int)getpid());
    int fd = bound_socket(f->path);
    f->lis = evconnlistener_new(t->base, fake_accept, f, LEV_OPT_CLOSE_ON_FREE, 64, fd);
    assert_non_null(f->lis);
}

static void fake_stop(struct fake *f)
{
    for (int i = 0; i < f->nconns; i++)
        bufferevent_free(f->conns[i]);
    evconnlistener_free(f->lis);
    unlink(f->path);
}

static void unreachable_socket(void **state)
{
    char path[108];
    snprintf(path, sizeof path, "/tmp/fogmesh-test-none-%d/engine.sock", (int)getpid());
    struct t *t = t_new(path, NULL);
    struct res x = {0};
    CALL(engine_version(t->e, on_done, &x, NULL));
    assert_int_equal(x.calls, 0);
    wait_res(t, &x);
    assert_int_equal(x.status, MESH_EIO);
    char want[300];
    snprintf(want, sizeof want,
             "engine version: engine unavailable at %s: no such file or directory", path);
    assert_string_equal(x.msg, want);
    t_free(t);

    /* A socket file nobody listens on: connection refused. */
    snprintf(path, sizeof path, "/tmp/fogmesh-test-refused-%d.sock", (int)getpid());
    int fd = bound_socket(path);
    char url[200];
    snprintf(url, sizeof url, "unix://%s", path);
    t = t_new(url, NULL);
    memset(&x, 0, sizeof x);
    CALL(engine_container_start(t->e, "web", on_done, &x, NULL));
    wait_res(t, &x);
    assert_int_equal(x.status, MESH_EIO);
    snprintf(want, sizeof want, "start container web: engine unavailable at %s: connection refused",
             path);
    assert_string_equal(x.msg, want);
    t_free(t);
    close(fd);
    unlink(path);

    /* Bad URLs fail at once. */
    struct event_base *base = event_base_new();
    struct engine *e = NULL;
    struct mesh_err err = {0};
    struct engine_config cfg = {.url = "tcp://1.2.3.4:2375"};
    assert_int_equal(engine_new(base, &cfg, &e, &err), MESH_EINVAL);
    assert_non_null(strstr(err.msg, "only unix://"));
    assert_null(e);
    event_base_free(base);
}

static bool all_done(void *arg)
{
    struct res *xs = arg;
    for (int i = 0; i < 20; i++)
        if (!xs[i].calls)
            return false;
    return true;
}

struct active_at_least {
    struct t *t;
    unsigned n;
    struct fake *f;
};

static bool fake_has_requests(void *arg)
{
    struct active_at_least *a = arg;
    return a->f->requests >= (int)a->n;
}

struct free_ctx {
    struct t *t;
    struct res first;
    struct res others[5];
};

static void on_done_free(struct engine_req *req, const struct engine_reply *r, void *data)
{
    struct free_ctx *fc = data;
    on_done(req, r, &fc->first);
    engine_free(fc->t->e);
    fc->t->e = NULL;
    for (int i = 0; i < 5; i++)
        assert_int_equal(fc->others[i].calls, 1);
}

static bool free_done(void *arg)
{
    return ((struct free_ctx *)arg)->first.calls > 0;
}

static void fake_cancel_bound_timeout(void **state)
{
    struct engine_config cfg = {.max_active = 4};
    struct t *t;
    struct fake f;
    char url[200];

    /* Hanging engine: 20 requests, 4 reach it, 16 wait; cancel them all. */
    t = calloc(1, sizeof *t); /* the fake needs the base before the engine exists */
    t->base = event_base_new();
    fake_start(&f, t, FAKE_HANG);
    snprintf(url, sizeof url, "unix://%s", f.path);
    cfg.url = url;
    struct mesh_err err = {0};
    assert_int_equal(engine_new(t->base, &cfg, &t->e, &err), 0);
    struct res xs[20] = {0};
    struct engine_req *reqs[20];
    for (int i = 0; i < 20; i++)
        CALL(engine_container_inspect(t->e, "c", on_done, &xs[i], &reqs[i]));
    assert_int_equal(engine_queued(t->e), 20);
    struct active_at_least a = {t, 4, &f};
    run_until(t, fake_has_requests, &a);
    assert_int_equal(engine_active(t->e), 4);
    assert_int_equal(engine_queued(t->e), 16);
    assert_int_equal(engine_active_peak(t->e), 4);
    for (int i = 0; i < 20; i++) {
        in_call = true;
        assert_int_equal(engine_cancel(reqs[i]), 0);
        in_call = false;
        assert_int_equal(xs[i].calls, 0);
    }
    run_until(t, all_done, xs);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(xs[i].calls, 1);
        assert_int_equal(xs[i].status, MESH_ECLOSED);
        assert_string_equal(xs[i].msg, "inspect container c: canceled");
    }
    assert_int_equal(engine_active(t->e), 0);
    assert_int_equal(engine_queued(t->e), 0);
    assert_int_equal(f.requests, 4); /* the queued ones never reached the engine */

    /* engine_free with requests in flight and queued: every callback fires, with ECLOSED. */
    memset(xs, 0, sizeof xs);
    for (int i = 0; i < 6; i++)
        CALL(engine_ping(t->e, on_done, &xs[i], NULL));
    a.n = f.requests + 4;
    run_until(t, fake_has_requests, &a);
    engine_free(t->e);
    t->e = NULL;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(xs[i].calls, 1);
        assert_int_equal(xs[i].status, MESH_ECLOSED);
    }
    fake_stop(&f);
    t_free(t);

    /* engine_free() from a done callback, with requests in flight and queued: the others fail
     * with ECLOSED at once, and the teardown waits for the libevent callback to unwind. */
    t = calloc(1, sizeof *t);
    t->base = event_base_new();
    fake_start(&f, t, FAKE_HANG);
    struct engine_config fcfg = {.url = f.path, .timeout_ms = 100, .max_active = 2};
    assert_int_equal(engine_new(t->base, &fcfg, &t->e, &err), 0);
    struct free_ctx fc = {.t = t};
    CALL(engine_ping(t->e, on_done_free, &fc, NULL));
    for (int i = 0; i < 5; i++)
        CALL(engine_ping(t->e, on_done, &fc.others[i], NULL));
    run_until(t, free_done, &fc);
    assert_int_equal(fc.first.status, MESH_EIO);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fc.others[i].calls, 1);
        assert_int_equal(fc.others[i].status, MESH_ECLOSED);
    }
    fake_stop(&f);
    t_free(t);

    /* The per-request timeout. */
    t = calloc(1, sizeof *t);
    t->base = event_base_new();
    fake_start(&f, t, FAKE_HANG);
    struct engine_config tcfg = {.url = f.path, .timeout_ms = 200};
    assert_int_equal(engine_new(t->base, &tcfg, &t->e, &err), 0);
    struct res x = {0};
    CALL(engine_container_inspect(t->e, "slow", on_done, &x, NULL));
    wait_res(t, &x);
    assert_int_equal(x.status, MESH_EIO);
    assert_string_equal(x.msg, "inspect container slow: timed out waiting for the engine");
    fake_stop(&f);
    t_free(t);

    /* The response bound, and a non-JSON error answer. */
    t = calloc(1, sizeof *t);
    t->base = event_base_new();
    fake_start(&f, t, FAKE_BIG);
    struct engine_config bcfg = {.url = f.path, .max_response = 1024};
    assert_int_equal(engine_new(t->base, &bcfg, &t->e, &err), 0);
    memset(&x, 0, sizeof x);
    CALL(engine_container_list(t->e, true, NULL, on_done, &x, NULL));
    wait_res(t, &x);
    assert_int_equal(x.status, MESH_ETOOBIG);
    assert_string_equal(x.msg, "list containers: response larger than 1024 bytes");
    f.mode = FAKE_TEXT_ERROR;
    memset(&x, 0, sizeof x);
    CALL(engine_container_kill(t->e, "c", "HUP", on_done, &x, NULL));
    wait_res(t, &x);
    assert_int_equal(x.status, MESH_EIO);
    assert_int_equal(x.http, 502);
    assert_string_equal(x.msg, "kill container c: upstream went away");
    /* Cancel right after the call: the callback still comes from the loop, with ECLOSED. */
    f.mode = FAKE_OK;
    struct engine_req *r;
    memset(&x, 0, sizeof x);
    CALL(engine_ping(t->e, on_done, &x, &r));
    CALL(engine_cancel(r));
    assert_int_equal(x.calls, 0);
    wait_res(t, &x);
    assert_int_equal(x.status, MESH_ECLOSED);
    memset(&x, 0, sizeof x);
    CALL(engine_ping(t->e, on_done, &x, NULL));
    wait_res(t, &x);
    assert_int_equal(x.status, 0);
    res_clear(&x);
    fake_stop(&f);
    t_free(t);
}

/* Streaming calls share one data pointer between on_data/on_progress and the done callback. */
struct logs_ctx {
    struct collect c;
    struct lines l;
    struct res x;
};

static int on_ctx_line(json_t *line, void *data)
{
    return on_line(line, &((struct logs_ctx *)data)->l);
}

static int on_logs_data(int stream, const char *buf, size_t len, void *data)
{
    return on_data(stream, buf, len, &((struct logs_ctx *)data)->c);
}

static void on_logs_done(struct engine_req *req, const struct engine_reply *r, void *data)
{
    on_done(req, r, &((struct logs_ctx *)data)->x);
}

/* ---- with a real engine ---- */

static struct t *t_engine(void)
{
    struct engine_config cfg = {.max_active = 4};
    return t_new(engine_url(), &cfg);
}

/* Runs one request to completion and returns its result (the caller clears it). */
#define SYNC(t, x, call)            \
    do {                            \
        memset(&(x), 0, sizeof(x)); \
        CALL(call);                 \
        wait_res((t), &(x));        \
    } while (0)

static void version_and_ping(void **state)
{
    NEED_ENGINE();
    struct t *t = t_engine();
    struct res x;
    assert_int_equal(engine_kind(t->e), ENGINE_UNKNOWN);
    SYNC(t, x, engine_version(t->e, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http, 200);
    assert_non_null(json_string_value(json_object_get(x.json, "Version")));
    assert_true(engine_kind(t->e) == ENGINE_PODMAN || engine_kind(t->e) == ENGINE_DOCKER);
    print_message("engine: %s %s, API %s\n", engine_kind_name(engine_kind(t->e)),
                  json_string_value(json_object_get(x.json, "Version")),
                  json_string_value(json_object_get(x.json, "ApiVersion")));
    res_clear(&x);
    SYNC(t, x, engine_ping(t->e, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http, 200);
    res_clear(&x);
    t_free(t);
}

static void images(void **state)
{
    NEED_ENGINE();
    struct t *t = t_engine();
    struct res x;
    SYNC(t, x, engine_image_inspect(t->e, "localhost/bbox:latest", on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_non_null(json_string_value(json_object_get(x.json, "Id")));
    res_clear(&x);
    SYNC(t, x, engine_image_inspect(t->e, "localhost/nope:latest", on_done, &x, NULL));
    assert_int_equal(x.status, MESH_ENOTFOUND);
    assert_int_equal(x.http, 404);
    assert_non_null(strstr(x.msg, "inspect image localhost/nope:latest: "));
    assert_non_null(strcasestr(x.msg, "no such image"));
    res_clear(&x);

    /* Create from a missing image: the engine's words, with ours in front. */
    json_t *spec = json_pack("{s:s}", "Image", "localhost/nope:latest");
    char name[128];
    snprintf(name, sizeof name, "%s-noimage", t->prefix);
    SYNC(t, x, engine_container_create(t->e, name, spec, on_done, &x, NULL));
    json_decref(spec);
    assert_int_equal(x.status, MESH_ENOTFOUND);
    char want[200];
    /* Podman says "no such image", Docker "No such image". */
    snprintf(want, sizeof want, "create container %s: no such image: localhost/nope:latest", name);
    assert_true(strncasecmp(x.msg, want, strlen(want)) == 0);
    print_message("%s\n", x.msg);
    res_clear(&x);

    /* A pull with no registry: HTTP 200, and the failure inside the stream. */
    struct logs_ctx *pc = calloc(1, sizeof *pc);
    CALL(engine_image_pull(t->e, "localhost:1/fogmesh/nope", "v1", on_ctx_line, on_logs_done, pc,
                           NULL));
    wait_res(t, &pc->x);
    assert_int_equal(pc->x.status, MESH_EIO);
    assert_non_null(strstr(pc->x.msg, "pull image localhost:1/fogmesh/nope:v1: "));
    print_message("%s (%d progress lines)\n", pc->x.msg, pc->l.n);
    res_clear(&pc->x);

    /* Import: a one-file image from a tar file. */
    uint8_t *tar;
    size_t len;
    assert_int_equal(engine_tar_one("hello.txt", "hi\n", 3, 0644, &tar, &len), 0);
    char path[128];
    snprintf(path, sizeof path, "/tmp/fogmesh-test-import-%d.tar", (int)getpid());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(tar, 1, len, f), len);
    fclose(f);
    free(tar);
    char tag[32];
    snprintf(tag, sizeof tag, "t%d", (int)getpid());
    memset(pc, 0, sizeof *pc);
    CALL(engine_image_import(t->e, path, "localhost/fogmesh-test-import", tag,
                             "CMD [\"/hello.txt\"]", on_ctx_line, on_logs_done, pc, NULL));
    wait_res(t, &pc->x);
    unlink(path);
    if (pc->x.status)
        print_message("%s\n", pc->x.msg);
    assert_int_equal(pc->x.status, 0);
    print_message("import: %d progress lines\n", pc->l.n);
    res_clear(&pc->x);
    free(pc);
    char ref[128];
    snprintf(ref, sizeof ref, "localhost/fogmesh-test-import:%s", tag);
    SYNC(t, x, engine_image_inspect(t->e, ref, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);
    in_call = true;
    assert_int_equal(
        engine_image_import(t->e, "/nonexistent.tar", "x", NULL, NULL, NULL, on_done, &x, NULL),
        -ENOENT);
    in_call = false;
    t_free(t);
}

/* A container of ours: name PREFIX-SUFFIX, labels fogmesh.mesh=MESH(+extra) and fogmesh.test. */
static void create(struct t *t, const char *suffix, const char *mesh, bool tty, const char *script,
                   char *ret_id)
{
    char name[128];
    snprintf(name, sizeof name, "%s-%s", t->prefix, suffix);
    json_t *spec =
        json_pack("{s:s, s:[s,s,s], s:b, s:{s:s, s:s}, s:{s:s}}", "Image", "localhost/bbox:latest",
                  "Cmd", "/bin/sh", "-c", script, "Tty", tty, "Labels", "fogmesh.mesh", mesh,
                  "fogmesh.test", t->prefix, "HostConfig", "NetworkMode", "host");
    assert_non_null(spec);
    struct res x;
    SYNC(t, x, engine_container_create(t->e, name, spec, on_done, &x, NULL));
    json_decref(spec);
    if (x.status)
        print_message("%s\n", x.msg);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http, 201);
    assert_true(strlen(x.id) >= 12);
    strcpy(ret_id, x.id);
    res_clear(&x);
}

static void remove_container(struct t *t, const char *id)
{
    struct res x;
    SYNC(t, x, engine_container_remove(t->e, id, true, true, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);
}

struct want_logs {
    struct collect *c;
    const char *out, *err;
};

static bool logs_have(void *arg)
{
    struct want_logs *w = arg;
    return (!w->out || memmem(w->c->out, w->c->out_len, w->out, strlen(w->out))) &&
           (!w->err || memmem(w->c->err, w->c->err_len, w->err, strlen(w->err)));
}

/* A loop that ends promptly on SIGTERM (busybox sh as PID 1 would ignore it otherwise). */
#define LOOP "trap 'exit 0' TERM; while :; do sleep 0.05; done"

static void count_lines(const struct collect *c, int *ret_lines)
{
    int n = 0;
    for (size_t i = 0; i < c->out_len; i++)
        n += c->out[i] == '\n';
    for (size_t i = 0; i < c->err_len; i++)
        n += c->err[i] == '\n';
    *ret_lines = n;
}

static void container_lifecycle_logs(void **state)
{
    NEED_ENGINE();
    struct t *t = t_engine();
    char id[128];
    create(t, "logs", t->mesh, false, "for i in 1 2 3; do echo out$i; echo err$i >&2; done; " LOOP,
           id);
    struct res x;
    SYNC(t, x, engine_container_start(t->e, id, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);

    struct logs_ctx *lc = calloc(1, sizeof *lc);
    struct engine_logs_opts o = {.follow = true, .tail = -1};
    struct engine_req *r;
    CALL(engine_container_logs(t->e, id, &o, on_logs_data, on_logs_done, lc, &r));
    struct want_logs w = {&lc->c, "out1\nout2\nout3\n", "err1\nerr2\nerr3\n"};
    run_until(t, logs_have, &w);
    assert_int_equal(lc->c.other, 0);
    assert_int_equal(lc->x.calls, 0); /* still following */
    CALL(engine_cancel(r));
    wait_res(t, &lc->x);
    assert_int_equal(lc->x.status, MESH_ECLOSED);
    res_clear(&lc->x);

    /* Not followed, last 2 lines: the request ends by itself. */
    memset(lc, 0, sizeof *lc);
    o = (struct engine_logs_opts){.tail = 2};
    CALL(engine_container_logs(t->e, id, &o, on_logs_data, on_logs_done, lc, NULL));
    wait_res(t, &lc->x);
    assert_int_equal(lc->x.status, 0);
    int lines;
    count_lines(&lc->c, &lines);
    assert_int_equal(lines, 2);
    res_clear(&lc->x);
    free(lc);

    SYNC(t, x, engine_container_stop(t->e, id, 5, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_true(x.changed);
    res_clear(&x);
    SYNC(t, x, engine_container_stop(t->e, id, 5, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http, 304);
    assert_false(x.changed);
    res_clear(&x);
    SYNC(t, x, engine_container_inspect(t->e, id, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_true(json_is_false(json_object_get(json_object_get(x.json, "State"), "Running")));
    res_clear(&x);
    SYNC(t, x, engine_container_kill(t->e, id, "HUP", on_done, &x, NULL));
    assert_int_equal(x.status, MESH_ESTATE); /* not running */
    print_message("%s\n", x.msg);
    res_clear(&x);
    remove_container(t, id);
    SYNC(t, x, engine_container_remove(t->e, id, true, false, on_done, &x, NULL));
    assert_int_equal(x.status, MESH_ENOTFOUND);
    res_clear(&x);
    SYNC(t, x, engine_container_inspect(t->e, id, on_done, &x, NULL));
    assert_int_equal(x.status, MESH_ENOTFOUND);
    assert_non_null(strstr(x.msg, "inspect container "));
    res_clear(&x);
    SYNC(t, x, engine_container_start(t->e, id, on_done, &x, NULL));
    assert_int_equal(x.status, MESH_ENOTFOUND);
    res_clear(&x);
    t_free(t);
}

static void list_by_label(void **state)
{
    NEED_ENGINE();
    struct t *t = t_engine();
    char a[80], b[80], ida[128], idb[128], idc[128];
    snprintf(a, sizeof a, "%s-a", t->mesh);
    snprintf(b, sizeof b, "%s-b", t->mesh);
    create(t, "la1", a, false, "true", ida);
    create(t, "la2", a, false, "true", idb);
    create(t, "lb1", b, false, "true", idc);
    char label[128], *filters;
    snprintf(label, sizeof label, "fogmesh.mesh=%s", a);
    const char *labels[] = {label};
    assert_int_equal(engine_labels_filter(labels, 1, &filters), 0);
    struct res x;
    SYNC(t, x, engine_container_list(t->e, true, filters, on_done, &x, NULL));
    free(filters);
    assert_int_equal(x.status, 0);
    assert_true(json_is_array(x.json));
    assert_int_equal(json_array_size(x.json), 2);
    size_t i;
    json_t *c;
    json_array_foreach(x.json, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "Id"));
        assert_true(strcmp(id, ida) == 0 || strcmp(id, idb) == 0);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(c, "Labels"), "fogmesh.mesh")), a);
    }
    res_clear(&x);
    /* Not all: none of them runs. */
    assert_int_equal(engine_labels_filter(labels, 1, &filters), 0);
    SYNC(t, x, engine_container_list(t->e, false, filters, on_done, &x, NULL));
    free(filters);
    assert_int_equal(json_array_size(x.json), 0);
    res_clear(&x);
    /* A name already in use: MESH_EEXISTS (Docker says 409, Podman 500 with a cause). */
    json_t *spec = json_pack("{s:s, s:[s]}", "Image", "localhost/bbox:latest", "Cmd", "true");
    char name[128];
    snprintf(name, sizeof name, "%s-la1", t->prefix);
    SYNC(t, x, engine_container_create(t->e, name, spec, on_done, &x, NULL));
    json_decref(spec);
    print_message("%s\n", x.msg);
    assert_int_equal(x.status, MESH_EEXISTS);
    res_clear(&x);
    remove_container(t, ida);
    remove_container(t, idb);
    remove_container(t, idc);
    t_free(t);
}

static void put_file_and_signal(void **state)
{
    NEED_ENGINE();
    struct t *t = t_engine();
    char id[128];
    /* The container prints its config on SIGHUP: how a config change reaches a running
     * microservice without a recreate. */
    create(t, "conf", t->mesh, false,
           "trap 'cat /tmp/app.conf' HUP; trap 'exit 0' TERM; echo ready; "
           "while :; do sleep 0.05; done",
           id);
    struct res x;
    SYNC(t, x, engine_container_start(t->e, id, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);
    struct logs_ctx *lc = calloc(1, sizeof *lc);
    struct engine_logs_opts o = {.follow = true, .tail = -1};
    struct engine_req *r;
    CALL(engine_container_logs(t->e, id, &o, on_logs_data, on_logs_done, lc, &r));
    struct want_logs w = {&lc->c, "ready\n", NULL};
    run_until(t, logs_have, &w);

    const char *conf = "level = 1\nname = \"first\"\n";
    SYNC(t, x,
         engine_container_put_file(t->e, id, "/tmp", "app.conf", conf, strlen(conf), 0644, on_done,
                                   &x, NULL));
    if (x.status)
        print_message("%s\n", x.msg);
    assert_int_equal(x.status, 0);
    res_clear(&x);
    SYNC(t, x, engine_container_kill(t->e, id, "HUP", on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);
    w.out = conf;
    run_until(t, logs_have, &w);

    /* Replace it: the new content shows after the next HUP. */
    conf = "level = 2\nname = \"second\"\n";
    SYNC(t, x,
         engine_container_put_file(t->e, id, "/tmp", "app.conf", conf, strlen(conf), 0600, on_done,
                                   &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);
    SYNC(t, x, engine_container_kill(t->e, id, "SIGHUP", on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);
    w.out = conf;
    run_until(t, logs_have, &w);

    /* A missing directory is the engine's error. */
    SYNC(t, x,
         engine_container_put_file(t->e, id, "/no/such/dir", "a", "x", 1, 0644, on_done, &x, NULL));
    print_message("put into a missing directory: %s\n", x.status ? x.msg : "ok");
    res_clear(&x);

    /* The follow ends by itself when the container stops. */
    SYNC(t, x, engine_container_stop(t->e, id, 5, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);
    wait_res(t, &lc->x);
    assert_int_equal(lc->x.status, 0);
    res_clear(&lc->x);
    free(lc);
    remove_container(t, id);
    t_free(t);
}

static void tty_logs(void **state)
{
    NEED_ENGINE();
    struct t *t = t_engine();
    char id[128];
    create(t, "tty", t->mesh, true, "echo tty-line-1; echo tty-line-2; " LOOP, id);
    struct res x;
    SYNC(t, x, engine_container_start(t->e, id, on_done, &x, NULL));
    assert_int_equal(x.status, 0);
    res_clear(&x);
    struct logs_ctx *lc = calloc(1, sizeof *lc);
    struct engine_logs_opts o = {.follow = true, .tail = -1, .tty = false /* auto */};
    struct engine_req *r;
    CALL(engine_container_logs(t->e, id, &o, on_logs_data, on_logs_done, lc, &r));
    struct want_logs w = {&lc->c, "tty-line-2", NULL};
    run_until(t, logs_have, &w);
    assert_int_equal(lc->c.err_len, 0);
    CALL(engine_cancel(r));
    wait_res(t, &lc->x);
    assert_int_equal(lc->x.status, MESH_ECLOSED);
    free(lc);
    remove_container(t, id);
    t_free(t);
}

static void twenty_concurrent(void **state)
{
    NEED_ENGINE();
    struct t *t = t_engine(); /* max_active 4 */
    struct res xs[20] = {0};
    for (int i = 0; i < 20; i++) {
        if (i % 2)
            CALL(engine_version(t->e, on_done, &xs[i], NULL));
        else
            CALL(engine_image_inspect(t->e, "localhost/bbox:latest", on_done, &xs[i], NULL));
    }
    run_until(t, all_done, xs);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(xs[i].calls, 1);
        assert_int_equal(xs[i].status, 0);
        res_clear(&xs[i]);
    }
    assert_true(engine_active_peak(t->e) <= 4);
    assert_true(engine_active_peak(t->e) >= 2);
    print_message("peak in flight: %u\n", engine_active_peak(t->e));
    /* Every socket of the process, curl's kept-alive connections included, is close-on-exec. */
    int leaky = 0, socks = 0;
    for (int fd = 3; fd < 1024; fd++) {
        char link[64], target[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strncmp(target, "socket:", 7) != 0)
            continue;
        socks++;
        if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC)) {
            print_message("fd %d (%s) is not close-on-exec\n", fd, target);
            leaky++;
        }
    }
    assert_true(socks > 0);
    assert_int_equal(leaky, 0);
    t_free(t);
}

/* Removes anything a failed run of ours left behind (label fogmesh.test=PREFIX). */
static int cleanup_group(void **state)
{
    if (!engine_url())
        return 0;
    struct t *t = t_engine();
    char label[128], *filters;
    snprintf(label, sizeof label, "fogmesh.test=%s", t->prefix);
    const char *labels[] = {label};
    if (engine_labels_filter(labels, 1, &filters) == 0) {
        struct res x = {0};
        if (engine_container_list(t->e, true, filters, on_done, &x, NULL) == 0) {
            run_until(t, res_done, &x);
            size_t i;
            json_t *c;
            json_array_foreach(x.json, i, c)
            {
                struct res y = {0};
                const char *id = json_string_value(json_object_get(c, "Id"));
                if (id && engine_container_remove(t->e, id, true, true, on_done, &y, NULL) == 0)
                    run_until(t, res_done, &y);
                res_clear(&y);
            }
            res_clear(&x);
        }
        free(filters);
    }
    t_free(t);
    return 0;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frames_across_every_boundary),
        cmocka_unit_test(frames_bad_header_and_raw),
        cmocka_unit_test(progress_lines),
        cmocka_unit_test(tar_one_file),
        cmocka_unit_test(escape_and_filter),
        cmocka_unit_test(unreachable_socket),
        cmocka_unit_test(fake_cancel_bound_timeout),
        cmocka_unit_test(version_and_ping),
        cmocka_unit_test(images),
        cmocka_unit_test(container_lifecycle_logs),
        cmocka_unit_test(list_by_label),
        cmocka_unit_test(put_file_and_signal),
        cmocka_unit_test(tty_logs),
        cmocka_unit_test(twenty_concurrent),
    };
    if (!engine_url())
        print_message("test_engine: FOGMESH_ENGINE_SOCKET is not set: the tests against a real "
                      "engine are skipped\n");
    int failed = cmocka_run_group_tests(tests, NULL, cleanup_group);
    curl_global_cleanup();
    return failed;
}
