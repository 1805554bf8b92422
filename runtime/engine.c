/* The Docker Engine API client on libevent + libcurl's multi-socket interface (see engine.h).
 *
 * Shape (libcurl docs/examples/multi-event.c and hiperfifo.c):
 * - CURLMOPT_SOCKETFUNCTION gives us curl's sockets: each gets a persistent libevent event whose
 *   callback calls curl_multi_socket_action(fd, flags); CURLMOPT_TIMERFUNCTION arms one libevent
 *   timer that calls curl_multi_socket_action(CURL_SOCKET_TIMEOUT).
 * - After each socket_action, finished transfers are read with curl_multi_info_read and their
 *   done callbacks run there, outside any libcurl callback.
 * - New requests never touch the multi handle from the call: they are queued and a "pump" event
 *   (made active at once) adds them. That keeps the contract (no callback from inside the call)
 *   and lets requests be made from data/progress callbacks, which run inside libcurl's write
 *   callback where curl_multi_add_handle/remove_handle are not allowed. Cancels are handled by
 *   the pump for the same reason.
 * - Each libevent entry point holds e->busy; engine_free() from a done callback fails what is
 *   pending at once and leaves the teardown of curl to the end of that entry point. */
#include "engine.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dlist.h"
#include "timeutil.h"

enum op {
    OP_PING,
    OP_VERSION,
    OP_CREATE,
    OP_START,
    OP_STOP,
    OP_REMOVE,
    OP_KILL,
    OP_INSPECT,
    OP_LIST,
    OP_LOGS,
    OP_PUT_ARCHIVE,
    OP_IMAGE_INSPECT,
    OP_PULL,
    OP_IMPORT,
};

enum where { W_NONE, W_QUEUED, W_ACTIVE };

struct engine_req {
    struct engine *e;
    struct engine_req *prev, *next; /* in e->queue or e->active */
    enum where where;
    enum op op;
    bool follow; /* a followed log stream: not counted against max_active */
    bool canceled;
    bool added;    /* easy handle is in the multi */
    char ctx[160]; /* "create container web", the prefix of errors */
    char *url;
    const char *method; /* NULL: GET */
    CURL *easy;
    struct curl_slist *headers;
    engine_cb cb;
    void *data;
    /* response */
    char *body;
    size_t body_len, body_cap;
    bool too_big;
    long http; /* once known in the write callback */
    /* upload from memory or a file */
    char *upload;
    size_t upload_len, upload_off;
    FILE *upload_file;
    /* streams */
    engine_data_cb on_data;
    void (*on_start)(void *data); /* OP_LOGS: the engine answered 2xx */
    bool started;
    engine_progress_cb on_progress;
    struct engine_frames frames;
    struct engine_progress progress;
    bool stream_mode_known, streaming;
    int stream_rc; /* the parsers' failure, or MESH_ECLOSED when a callback said stop */
    struct mesh_err stream_err;
    char errbuf[CURL_ERROR_SIZE];
};

struct sock_ctx {
    struct engine *e;
    curl_socket_t fd;
    struct event *ev;
    struct sock_ctx *prev, *next;
};

struct list {
    struct engine_req *head, *tail;
    unsigned n;
};

struct engine {
    struct event_base *base;
    CURLM *multi;
    struct event *timer; /* curl's timeout */
    struct event *pump;  /* starts queued requests, reaps canceled ones */
    struct list queue, active;
    struct sock_ctx *socks;
    unsigned follows;     /* followed log streams in `active` */
    unsigned active_peak; /* of non-follow requests */
    unsigned busy;        /* depth of our own libevent callbacks on the stack */
    bool closing;
    enum engine_kind kind;
    char *path;
    unsigned max_active, max_queued, max_follows;
    size_t max_response;
    unsigned timeout_ms, stream_timeout_ms;
};

/* ---- small helpers ---- */

static void list_push(struct list *l, struct engine_req *r)
{
    r->prev = l->tail;
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_del(struct list *l, struct engine_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

static void detach(struct engine_req *r)
{
    struct engine *e = r->e;
    if (r->where == W_QUEUED)
        list_del(&e->queue, r);
    else if (r->where == W_ACTIVE) {
        list_del(&e->active, r);
        if (r->follow)
            e->follows--;
    }
    r->where = W_NONE;
    if (r->added) {
        curl_multi_remove_handle(e->multi, r->easy);
        r->added = false;
    }
}

static void req_free(struct engine_req *r)
{
    if (!r)
        return;
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    if (r->upload_file)
        fclose(r->upload_file);
    engine_progress_free(&r->progress);
    free(r->upload);
    free(r->body);
    free(r->url);
    free(r);
}

/* The first letter of strerror() in lower case, to read well after a colon. */
static void lower_first(char *s)
{
    if (s[0] >= 'A' && s[0] <= 'Z' && !(s[1] >= 'A' && s[1] <= 'Z'))
        s[0] = (char)(s[0] - 'A' + 'a');
}

/* ---- completion ---- */

static void schedule_pump(struct engine *e)
{
    if (!e->closing)
        event_active(e->pump, EV_TIMEOUT, 1);
}

/* Runs the done callback once and frees r. r must be detached. */
static void finish(struct engine_req *r, struct engine_reply *rep)
{
    r->cb(r, rep, r->data);
    if (rep->json)
        json_decref(rep->json);
    req_free(r);
}

static void finish_status(struct engine_req *r, int code, const char *msg)
{
    struct engine_reply rep = {.status = code, .http_status = r->http};
    mesh_errf(&rep.err, code, "%s: %s", r->ctx, msg);
    finish(r, &rep);
}

/* Which MESH_E* code an engine error answer means. Podman answers some conditions with 500 and a
 * "cause" where Docker says 409 (name in use, container state improper). */
static int map_http(enum op op, long http, const char *cause)
{
    if (cause) {
        if (strstr(cause, "already in use") || strstr(cause, "already exists"))
            return MESH_EEXISTS;
        if (strstr(cause, "state improper") || strstr(cause, "not running"))
            return MESH_ESTATE;
        if (strstr(cause, "no such") || strstr(cause, "not known"))
            return MESH_ENOTFOUND;
    }
    switch (http) {
    case 400:
        return MESH_EINVAL;
    case 404:
        return MESH_ENOTFOUND;
    case 409:
        return op == OP_CREATE ? MESH_EEXISTS : MESH_ESTATE;
    default:
        return MESH_EIO;
    }
}

static void complete_http(struct engine_req *r, long http)
{
    struct engine *e = r->e;
    struct engine_reply rep = {.http_status = http, .changed = true};
    bool ok = http >= 200 && http < 300;
    if (http == 304 && (r->op == OP_START || r->op == OP_STOP)) {
        ok = true;
        rep.changed = false;
    }
    if (r->body_len && (!ok || !r->streaming)) {
        json_error_t jerr;
        rep.json = json_loadb(r->body, r->body_len, 0, &jerr);
    }
    if (!ok) {
        const char *msg = NULL, *cause = NULL;
        if (json_is_object(rep.json)) {
            msg = json_string_value(json_object_get(rep.json, "message"));
            cause = json_string_value(json_object_get(rep.json, "cause"));
        }
        char text[MESH_ERRMSG_LEN];
        if (!msg) {
            /* Not JSON: the first line of the body, bounded. */
            size_t n = r->body_len < sizeof text - 1 ? r->body_len : sizeof text - 1;
            memcpy(text, r->body ? r->body : "", n);
            text[n] = '\0';
            text[strcspn(text, "\r\n")] = '\0';
            if (!text[0])
                snprintf(text, sizeof text, "HTTP %ld", http);
            msg = text;
        }
        rep.status = map_http(r->op, http, cause);
        mesh_errf(&rep.err, rep.status, "%s: %s", r->ctx, msg);
        finish(r, &rep);
        return;
    }
    if (r->op == OP_PULL || r->op == OP_IMPORT) {
        struct mesh_err perr = {0};
        int rc = engine_progress_finish(&r->progress, r->on_progress, r->data, &perr);
        if (rc) {
            rep.status = rc;
            mesh_errf(&rep.err, rc, "%s: %s", r->ctx, rc == MESH_ECLOSED ? "canceled" : perr.msg);
        } else if (r->progress.error) {
            rep.status = r->progress.error;
            mesh_errf(&rep.err, rep.status, "%s: %s", r->ctx, r->progress.message);
        }
        finish(r, &rep);
        return;
    }
    if (r->op == OP_LOGS && r->frames.left) {
        rep.status = MESH_EMALFORMED;
        mesh_errf(&rep.err, rep.status, "%s: log stream ended inside a frame", r->ctx);
        finish(r, &rep);
        return;
    }
    if (r->op == OP_VERSION && json_is_object(rep.json)) {
        enum engine_kind kind = ENGINE_DOCKER;
        json_t *comps = json_object_get(rep.json, "Components");
        size_t i;
        json_t *c;
        json_array_foreach(comps, i, c)
        {
            const char *name = json_string_value(json_object_get(c, "Name"));
            if (name && strstr(name, "Podman"))
                kind = ENGINE_PODMAN;
        }
        e->kind = kind;
    }
    if (r->op == OP_CREATE) {
        rep.id = json_string_value(json_object_get(rep.json, "Id"));
        if (!rep.id) {
            rep.status = MESH_EPROTO;
            mesh_errf(&rep.err, rep.status, "%s: the engine's answer has no Id", r->ctx);
        }
    }
    finish(r, &rep);
}

/* A transfer curl says is over. r is detached by the caller. */
static void complete(struct engine_req *r, CURLcode res)
{
    struct engine *e = r->e;
    long http = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
    r->http = http;
    if (r->canceled || r->stream_rc == MESH_ECLOSED) {
        finish_status(r, MESH_ECLOSED, "canceled");
        return;
    }
    if (r->stream_rc) {
        struct engine_reply rep = {
            .status = r->stream_rc, .http_status = http, .err = r->stream_err};
        mesh_err_wrapf(&rep.err, "%s", r->ctx);
        finish(r, &rep);
        return;
    }
    if (res == CURLE_OK) {
        complete_http(r, http);
        return;
    }
    if (r->too_big) {
        char msg[64];
        snprintf(msg, sizeof msg, "response larger than %zu bytes", e->max_response);
        finish_status(r, MESH_ETOOBIG, msg);
        return;
    }
    if (res == CURLE_COULDNT_CONNECT || (http == 0 && res != CURLE_OPERATION_TIMEDOUT)) {
        long oserr = 0;
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &oserr);
        char why[CURL_ERROR_SIZE];
        if (oserr)
            snprintf(why, sizeof why, "%s", strerror((int)oserr));
        else
            snprintf(why, sizeof why, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(res));
        lower_first(why);
        struct engine_reply rep = {.status = MESH_EIO};
        mesh_errf(&rep.err, MESH_EIO, "%s: engine unavailable at %s: %s", r->ctx, e->path, why);
        finish(r, &rep);
        return;
    }
    if (res == CURLE_OPERATION_TIMEDOUT) {
        finish_status(r, MESH_EIO, "timed out waiting for the engine");
        return;
    }
    finish_status(r, MESH_EIO, r->errbuf[0] ? r->errbuf : curl_easy_strerror(res));
}

static void read_info(struct engine *e)
{
    CURLMsg *msg;
    int left;
    while (!e->closing && (msg = curl_multi_info_read(e->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct engine_req *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode res = msg->data.result;
        detach(r); /* msg is invalid after remove_handle */
        complete(r, res);
        schedule_pump(e);
    }
}

/* ---- libevent side ---- */

static void destroy(struct engine *e);

static void leave(struct engine *e)
{
    if (--e->busy == 0 && e->closing)
        destroy(e);
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct engine *e = ((struct sock_ctx *)arg)->e;
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    e->busy++;
    curl_multi_socket_action(e->multi, fd, flags, &running);
    read_info(e);
    if (running == 0 && !e->closing)
        evtimer_del(e->timer);
    leave(e);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct engine *e = arg;
    int running;
    e->busy++;
    curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    read_info(e);
    leave(e);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct engine *e = userp;
    if (timeout_ms < 0) {
        evtimer_del(e->timer);
        return 0;
    }
    struct timeval tv = mesh_ms_to_timeval((uint64_t)timeout_ms);
    evtimer_add(e->timer, &tv);
    return 0;
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct engine *e = userp;
    struct sock_ctx *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            event_free(sc->ev);
            DLIST_REMOVE(e->socks, sc);
            free(sc);
            curl_multi_assign(e->multi, s, NULL);
        }
        return 0;
    }
    short kind = (short)((what & CURL_POLL_IN ? EV_READ : 0) |
                         (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc)
            return -1;
        sc->e = e;
        sc->fd = s;
        sc->next = e->socks;
        if (e->socks)
            e->socks->prev = sc;
        e->socks = sc;
        curl_multi_assign(e->multi, s, sc);
    } else {
        event_free(sc->ev);
    }
    sc->ev = event_new(e->base, s, kind, on_socket_event, sc);
    if (!sc->ev || event_add(sc->ev, NULL) < 0)
        return -1;
    return 0;
}

/* curl's sockets with SOCK_CLOEXEC: meshd starts containers (STYLE.md 13). */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* Headers of a log stream: its 2xx status is known before any output (a followed log of a
 * quiet container may send none for a long time). */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct engine_req *r = userdata;
    size_t n = size * nmemb;
    if (r->on_start && !r->started && !r->canceled && !r->e->closing &&
        (n == 2 && ptr[0] == '\r' && ptr[1] == '\n')) {
        long http = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
        if (http >= 200 && http < 300) {
            r->started = true;
            r->on_start(r->data);
        }
    }
    return n;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct engine_req *r = userdata;
    struct engine *e = r->e;
    size_t n = size * nmemb;
    if (r->canceled || e->closing || r->stream_rc)
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    if (!r->stream_mode_known) {
        r->stream_mode_known = true;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->http);
        /* Error answers are small JSON bodies, never streams. */
        r->streaming = r->http >= 200 && r->http < 300 &&
                       (r->op == OP_LOGS || r->op == OP_PULL || r->op == OP_IMPORT);
        if (r->streaming && r->op == OP_LOGS) {
            const char *ct = NULL;
            curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
            /* API >= 1.42 names the format; 1.41 engines say nothing useful. */
            if (ct && strstr(ct, "vnd.docker.raw-stream"))
                engine_frames_init(&r->frames, true, false);
            else if (ct && strstr(ct, "vnd.docker.multiplexed-stream"))
                engine_frames_init(&r->frames, false, false);
        }
    }
    if (r->streaming) {
        int rc;
        if (r->op == OP_LOGS)
            rc = engine_frames_feed(&r->frames, ptr, n, r->on_data, r->data, &r->stream_err);
        else
            rc =
                engine_progress_feed(&r->progress, ptr, n, r->on_progress, r->data, &r->stream_err);
        if (rc) {
            r->stream_rc = rc;
            return 0;
        }
        return n;
    }
    if (n > e->max_response - r->body_len) {
        r->too_big = true;
        return 0;
    }
    if (r->body_len + n > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + n)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b)
            return 0;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, ptr, n);
    r->body_len += n;
    return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct engine_req *r = userdata;
    size_t room = size * nitems;
    if (r->upload_file) {
        size_t got = fread(buf, 1, room, r->upload_file);
        if (got == 0 && ferror(r->upload_file))
            return CURL_READFUNC_ABORT;
        return got;
    }
    size_t left = r->upload_len - r->upload_off;
    size_t n = left < room ? left : room;
    memcpy(buf, r->upload + r->upload_off, n);
    r->upload_off += n;
    return n;
}

static int on_seek(void *userdata, curl_off_t offset, int origin)
{
    struct engine_req *r = userdata;
    if (origin != SEEK_SET || offset < 0)
        return CURL_SEEKFUNC_CANTSEEK;
    if (r->upload_file)
        return fseeko(r->upload_file, (off_t)offset, SEEK_SET) ? CURL_SEEKFUNC_FAIL
                                                               : CURL_SEEKFUNC_OK;
    if ((uint64_t)offset > r->upload_len)
        return CURL_SEEKFUNC_FAIL;
    r->upload_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

/* Adds queued requests while there is room, fails canceled ones. Runs from the loop. */
static void on_pump(evutil_socket_t fd, short what, void *arg)
{
    struct engine *e = arg;
    e->busy++;
    /* Canceled requests first: they free slots. Restart the walk after each callback, which may
     * have changed the lists. */
    for (bool again = true; again && !e->closing;) {
        again = false;
        for (int l = 0; l < 2 && !again; l++) {
            struct engine_req *r = l == 0 ? e->active.head : e->queue.head;
            for (; r; r = r->next) {
                if (r->canceled) {
                    detach(r);
                    finish_status(r, MESH_ECLOSED, "canceled");
                    again = true;
                    break;
                }
            }
        }
    }
    struct engine_req *r = e->queue.head;
    while (r && !e->closing) {
        struct engine_req *next = r->next;
        unsigned busy_slots = e->active.n - e->follows;
        if (!r->follow && busy_slots >= e->max_active) {
            r = next;
            continue; /* a follow behind it may still start */
        }
        list_del(&e->queue, r);
        list_push(&e->active, r);
        r->where = W_ACTIVE;
        if (r->follow)
            e->follows++;
        else if (busy_slots + 1 > e->active_peak)
            e->active_peak = busy_slots + 1;
        CURLMcode mc = curl_multi_add_handle(e->multi, r->easy);
        if (mc != CURLM_OK) {
            detach(r);
            finish_status(r, MESH_EIO, curl_multi_strerror(mc));
            next = e->queue.head; /* the callback may have changed the queue */
        } else {
            r->added = true;
        }
        r = next;
    }
    leave(e);
}

/* ---- engine ---- */

/* The descriptors open now, from /proc/self/fd (NULL and 0 when it cannot be read). */
static int *fd_list(size_t *ret_n)
{
    *ret_n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return NULL;
    int dfd = dirfd(d);
    size_t n = 0, cap = 64;
    int *fds = malloc(cap * sizeof *fds);
    struct dirent *de;
    while (fds && (de = readdir(d))) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end || end == de->d_name || fd == dfd)
            continue;
        if (n == cap) {
            int *more = realloc(fds, 2 * cap * sizeof *fds);
            if (!more) {
                free(fds);
                fds = NULL;
                break;
            }
            fds = more;
            cap *= 2;
        }
        fds[n++] = (int)fd;
    }
    closedir(d);
    *ret_n = fds ? n : 0;
    return fds;
}

/* curl_multi_init() makes a socketpair for curl_multi_wakeup() without SOCK_CLOEXEC (libcurl
 * 7.88 lib/multi.c; no option turns it off): mark whatever descriptor appeared meanwhile
 * close-on-exec, since meshd starts containers (STYLE.md 13). Adding FD_CLOEXEC is harmless even
 * to a descriptor another thread opened at the same moment. */
static CURLM *multi_init_cloexec(void)
{
    size_t nb = 0, na = 0;
    int *before = fd_list(&nb);
    CURLM *m = curl_multi_init();
    int *after = m ? fd_list(&na) : NULL;
    for (size_t i = 0; i < na; i++) {
        bool old = false;
        for (size_t j = 0; j < nb && !old; j++)
            old = before[j] == after[i];
        if (!old) {
            int fl = fcntl(after[i], F_GETFD);
            if (fl >= 0 && !(fl & FD_CLOEXEC))
                fcntl(after[i], F_SETFD, fl | FD_CLOEXEC);
        }
    }
    free(before);
    free(after);
    return m;
}

int engine_new(struct event_base *base, const struct engine_config *cfg, struct engine **ret_engine,
               struct mesh_err *err)
{
    if (!base || !cfg || !cfg->url || !ret_engine)
        return mesh_errf(err, MESH_EINVAL, "engine: no event base, config or URL");
    const char *path = cfg->url;
    if (strncmp(path, "unix://", 7) == 0)
        path += 7;
    else if (strstr(path, "://"))
        return mesh_errf(err, MESH_EINVAL, "engine %s: only unix:// URLs are supported", cfg->url);
    if (path[0] == '\0')
        return mesh_errf(err, MESH_EINVAL, "engine %s: no socket path", cfg->url);
    if (strlen(path) >= 108) /* sizeof sockaddr_un.sun_path */
        return mesh_errf(err, MESH_EINVAL, "engine %s: socket path too long", cfg->url);

    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return mesh_errf(err, MESH_ENOMEM, "engine: out of memory");
    e->base = base;
    e->max_active = cfg->max_active ? cfg->max_active : 8;
    e->max_queued = cfg->max_queued ? cfg->max_queued : 1024;
    e->max_follows = cfg->max_follows ? cfg->max_follows : 32;
    e->max_response = cfg->max_response ? cfg->max_response : 16u << 20;
    e->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 30000;
    e->stream_timeout_ms = cfg->stream_timeout_ms ? cfg->stream_timeout_ms : 30 * 60 * 1000;
    e->path = strdup(path);
    e->timer = evtimer_new(base, on_timer, e);
    e->pump = event_new(base, -1, 0, on_pump, e);
    e->multi = multi_init_cloexec();
    if (!e->path || !e->timer || !e->pump || !e->multi)
        goto nomem;
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    /* Our own bound decides; curl's connection cache keeps a few for reuse. */
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)e->max_active);
    *ret_engine = e;
    return 0;
nomem:
    destroy(e);
    return mesh_errf(err, MESH_ENOMEM, "engine: out of memory");
}

static void destroy(struct engine *e)
{
    struct engine_req *r;
    while ((r = e->active.head)) {
        detach(r);
        req_free(r); /* callbacks already ran in engine_free */
    }
    while ((r = e->queue.head)) {
        detach(r);
        req_free(r);
    }
    if (e->multi)
        curl_multi_cleanup(e->multi);
    /* Sockets curl did not report removed during cleanup. */
    while (e->socks) {
        struct sock_ctx *sc = e->socks;
        e->socks = sc->next;
        event_free(sc->ev);
        free(sc);
    }
    if (e->timer)
        event_free(e->timer);
    if (e->pump)
        event_free(e->pump);
    free(e->path);
    free(e);
}

void engine_free(struct engine *e)
{
    if (!e || e->closing)
        return;
    e->closing = true;
    /* Fail everything that is pending. Callbacks may not add requests (closing), and may cancel
     * others (a no-op now). The requests stay in the lists until destroy(), so that a teardown
     * deferred past a libcurl callback still finds their easy handles. */
    for (int l = 0; l < 2; l++) {
        struct engine_req *r = l == 0 ? e->active.head : e->queue.head;
        for (; r; r = r->next) {
            if (!r->cb)
                continue;
            struct engine_reply rep = {.status = MESH_ECLOSED};
            mesh_errf(&rep.err, MESH_ECLOSED, "%s: engine client closed", r->ctx);
            engine_cb cb = r->cb;
            r->cb = NULL;
            r->canceled = true;
            cb(r, &rep, r->data);
        }
    }
    if (e->busy == 0)
        destroy(e);
}

int engine_cancel(struct engine_req *r)
{
    if (!r)
        return MESH_EINVAL;
    if (r->canceled || r->e->closing)
        return 0;
    r->canceled = true;
    schedule_pump(r->e);
    return 0;
}

int engine_pause(struct engine_req *r, bool pause)
{
    if (!r || r->canceled || r->e->closing || !r->added)
        return MESH_ESTATE;
    /* Legal inside our own write callback too; CURLPAUSE_CONT may deliver held data at once. */
    return curl_easy_pause(r->easy, pause ? CURLPAUSE_RECV : CURLPAUSE_CONT) == CURLE_OK ? 0
                                                                                         : MESH_EIO;
}

const char *engine_socket_path(const struct engine *e)
{
    return e->path;
}

enum engine_kind engine_kind(const struct engine *e)
{
    return e->kind;
}

const char *engine_kind_name(enum engine_kind k)
{
    switch (k) {
    case ENGINE_DOCKER:
        return "docker";
    case ENGINE_PODMAN:
        return "podman";
    default:
        return "unknown";
    }
}

unsigned engine_active(const struct engine *e)
{
    return e->active.n;
}

unsigned engine_queued(const struct engine *e)
{
    return e->queue.n;
}

unsigned engine_active_peak(const struct engine *e)
{
    return e->active_peak;
}

/* ---- building requests ---- */

/* A request for path (already escaped, starting with '/'), with the error context made from fmt
 * and arg. On success it is queued and the pump is scheduled. */
struct req_args {
    enum op op;
    const char *method;
    const char *path;
    const char *ctx; /* the error prefix, e.g. "start container web" */
    engine_cb cb;
    void *data;
    const char *content_type;
    bool follow;
    unsigned extra_timeout_ms;
    bool no_timeout;
};

static struct engine_req *req_new(struct engine *e, const struct req_args *a)
{
    struct engine_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->e = e;
    r->op = a->op;
    r->follow = a->follow;
    r->cb = a->cb;
    r->data = a->data;
    r->method = a->method;
    snprintf(r->ctx, sizeof r->ctx, "%s", a->ctx);
    engine_progress_init(&r->progress, 64 * 1024);
    engine_frames_init(&r->frames, false, true);
    size_t n = strlen(a->path) + 64;
    r->url = malloc(n);
    r->easy = curl_easy_init();
    if (!r->url || !r->easy)
        goto fail;
    /* The host name is not used on a unix socket; dockerd wants one in the Host header. */
    if (a->op == OP_PING)
        snprintf(r->url, n, "http://localhost%s", a->path);
    else
        snprintf(r->url, n, "http://localhost/" ENGINE_API_VERSION "%s", a->path);
    CURL *c = r->easy;
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, e->path);
    curl_easy_setopt(c, CURLOPT_PRIVATE, r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)e->timeout_ms);
    if (!a->no_timeout) {
        unsigned t = a->op == OP_PULL || a->op == OP_IMPORT ? e->stream_timeout_ms : e->timeout_ms;
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)t + (long)a->extra_timeout_ms);
    }
    if (a->method && strcmp(a->method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, a->method);
    /* No "Expect: 100-continue" wait before a large body. */
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    if (!h)
        goto fail;
    r->headers = h;
    if (a->content_type) {
        char ct[64];
        snprintf(ct, sizeof ct, "Content-Type: %s", a->content_type);
        if (!(h = curl_slist_append(r->headers, ct)))
            goto fail;
        r->headers = h;
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers);
    return r;
fail:
    req_free(r);
    return NULL;
}

/* POST/PUT with a body from memory (copied) or nothing. */
static int req_body(struct engine_req *r, const void *body, size_t len)
{
    CURL *c = r->easy;
    if (len) {
        r->upload = malloc(len);
        if (!r->upload)
            return MESH_ENOMEM;
        memcpy(r->upload, body, len);
        r->upload_len = len;
    }
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, r);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, r);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    return 0;
}

static int submit(struct engine *e, struct engine_req *r, struct engine_req **ret_req)
{
    if (r->follow) {
        unsigned follows_waiting = 0;
        for (struct engine_req *q = e->queue.head; q; q = q->next)
            follows_waiting += q->follow;
        if (e->follows + follows_waiting >= e->max_follows) {
            req_free(r);
            return MESH_EFULL;
        }
    } else if (e->queue.n >= e->max_queued) {
        req_free(r);
        return MESH_EFULL;
    }
    list_push(&e->queue, r);
    r->where = W_QUEUED;
    schedule_pump(e);
    if (ret_req)
        *ret_req = r;
    return 0;
}

static int start_simple(struct engine *e, const struct req_args *a, const void *body, size_t len,
                        bool has_body, struct engine_req **ret_req)
{
    if (!e || !a->cb)
        return MESH_EINVAL;
    if (e->closing)
        return MESH_ECLOSED;
    struct engine_req *r = req_new(e, a);
    if (!r)
        return MESH_ENOMEM;
    if (has_body && req_body(r, body, len)) {
        req_free(r);
        return MESH_ENOMEM;
    }
    return submit(e, r, ret_req);
}

/* Escapes an id or name for a path segment. */
static int esc(const char *s, char **ret)
{
    if (!s || !s[0])
        return MESH_EINVAL;
    return engine_url_escape(s, NULL, ret);
}

int engine_ping(struct engine *e, engine_cb cb, void *data, struct engine_req **ret_req)
{
    struct req_args a = {
        .op = OP_PING, .path = "/_ping", .ctx = "ping engine", .cb = cb, .data = data};
    return start_simple(e, &a, NULL, 0, false, ret_req);
}

int engine_version(struct engine *e, engine_cb cb, void *data, struct engine_req **ret_req)
{
    struct req_args a = {
        .op = OP_VERSION, .path = "/version", .ctx = "engine version", .cb = cb, .data = data};
    return start_simple(e, &a, NULL, 0, false, ret_req);
}

int engine_container_create(struct engine *e, const char *name, const json_t *spec, engine_cb cb,
                            void *data, struct engine_req **ret_req)
{
    if (!json_is_object(spec))
        return MESH_EINVAL;
    char *ename = NULL, path[512];
    if (name && esc(name, &ename))
        return MESH_EINVAL;
    if (ename && strlen(ename) > 400) {
        free(ename);
        return MESH_EINVAL;
    }
    snprintf(path, sizeof path, "/containers/create%s%s", ename ? "?name=" : "",
             ename ? ename : "");
    free(ename);
    char *body = json_dumps(spec, JSON_COMPACT);
    if (!body)
        return MESH_ENOMEM;
    char ctx[160];
    snprintf(ctx, sizeof ctx, "create container%s%s", name ? " " : "", name ? name : "");
    struct req_args a = {.op = OP_CREATE,
                         .method = "POST",
                         .path = path,
                         .ctx = ctx,
                         .cb = cb,
                         .data = data,
                         .content_type = "application/json"};
    int rc = start_simple(e, &a, body, strlen(body), true, ret_req);
    free(body);
    return rc;
}

/* POST/DELETE/GET on /containers/{id}{suffix}. */
static int container_op(struct engine *e, enum op op, const char *method, const char *id,
                        const char *suffix, const char *verb, unsigned extra_timeout_ms,
                        engine_cb cb, void *data, struct engine_req **ret_req)
{
    char *eid, *path;
    if (!e || esc(id, &eid))
        return MESH_EINVAL;
    if (asprintf(&path, "/containers/%s%s", eid, suffix) < 0) {
        free(eid);
        return MESH_ENOMEM;
    }
    free(eid);
    char ctx[160];
    snprintf(ctx, sizeof ctx, "%s container %s", verb, id);
    struct req_args a = {.op = op,
                         .method = method,
                         .path = path,
                         .ctx = ctx,
                         .cb = cb,
                         .data = data,
                         .extra_timeout_ms = extra_timeout_ms};
    int rc = start_simple(e, &a, NULL, 0, false, ret_req);
    free(path);
    return rc;
}

int engine_container_start(struct engine *e, const char *id, engine_cb cb, void *data,
                           struct engine_req **ret_req)
{
    return container_op(e, OP_START, "POST", id, "/start", "start", 0, cb, data, ret_req);
}

int engine_container_stop(struct engine *e, const char *id, unsigned timeout_s, engine_cb cb,
                          void *data, struct engine_req **ret_req)
{
    char suffix[32];
    if (timeout_s > 3600)
        return MESH_EINVAL;
    snprintf(suffix, sizeof suffix, "/stop?t=%u", timeout_s);
    return container_op(e, OP_STOP, "POST", id, suffix, "stop", timeout_s * 1000, cb, data,
                        ret_req);
}

int engine_container_remove(struct engine *e, const char *id, bool force, bool volumes,
                            engine_cb cb, void *data, struct engine_req **ret_req)
{
    char suffix[32];
    snprintf(suffix, sizeof suffix, "?force=%d&v=%d", force, volumes);
    return container_op(e, OP_REMOVE, "DELETE", id, suffix, "remove", 0, cb, data, ret_req);
}

int engine_container_kill(struct engine *e, const char *id, const char *signal, engine_cb cb,
                          void *data, struct engine_req **ret_req)
{
    char *esig, *suffix;
    if (!signal || esc(signal, &esig))
        return MESH_EINVAL;
    if (asprintf(&suffix, "/kill?signal=%s", esig) < 0) {
        free(esig);
        return MESH_ENOMEM;
    }
    free(esig);
    int rc = container_op(e, OP_KILL, "POST", id, suffix, "kill", 0, cb, data, ret_req);
    free(suffix);
    return rc;
}

int engine_container_inspect(struct engine *e, const char *id, engine_cb cb, void *data,
                             struct engine_req **ret_req)
{
    return container_op(e, OP_INSPECT, NULL, id, "/json", "inspect", 0, cb, data, ret_req);
}

int engine_container_list(struct engine *e, bool all, const char *filters, engine_cb cb, void *data,
                          struct engine_req **ret_req)
{
    char *ef = NULL, *path;
    if (filters && engine_url_escape(filters, NULL, &ef))
        return MESH_ENOMEM;
    int n =
        asprintf(&path, "/containers/json?all=%d%s%s", all, ef ? "&filters=" : "", ef ? ef : "");
    free(ef);
    if (n < 0)
        return MESH_ENOMEM;
    struct req_args a = {
        .op = OP_LIST, .path = path, .ctx = "list containers", .cb = cb, .data = data};
    int rc = start_simple(e, &a, NULL, 0, false, ret_req);
    free(path);
    return rc;
}

int engine_container_logs(struct engine *e, const char *id, const struct engine_logs_opts *opts,
                          engine_data_cb on_data, engine_cb cb, void *data,
                          struct engine_req **ret_req)
{
    struct engine_logs_opts o = {.tail = -1};
    if (opts)
        o = *opts;
    if (!e || !cb || !on_data || (o.no_stdout && o.no_stderr))
        return MESH_EINVAL;
    if (e->closing)
        return MESH_ECLOSED;
    char *eid, *path, tail[24] = "all";
    if (esc(id, &eid))
        return MESH_EINVAL;
    if (o.tail >= 0)
        snprintf(tail, sizeof tail, "%d", o.tail);
    int n =
        asprintf(&path, "/containers/%s/logs?stdout=%d&stderr=%d&follow=%d&timestamps=%d&tail=%s",
                 eid, !o.no_stdout, !o.no_stderr, o.follow, o.timestamps, tail);
    free(eid);
    if (n < 0)
        return MESH_ENOMEM;
    char ctx[160];
    snprintf(ctx, sizeof ctx, "logs of container %s", id);
    struct req_args a = {.op = OP_LOGS,
                         .path = path,
                         .ctx = ctx,
                         .cb = cb,
                         .data = data,
                         .follow = o.follow,
                         .no_timeout = o.follow};
    struct engine_req *r = req_new(e, &a);
    free(path);
    if (!r)
        return MESH_ENOMEM;
    r->on_data = on_data;
    if (o.on_start) {
        r->on_start = o.on_start;
        curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    }
    engine_frames_init(&r->frames, o.tty, true);
    return submit(e, r, ret_req);
}

int engine_container_put_archive(struct engine *e, const char *id, const char *dir, const void *tar,
                                 size_t len, engine_cb cb, void *data, struct engine_req **ret_req)
{
    if (!e || !dir || !dir[0] || !tar || !len)
        return MESH_EINVAL;
    char *eid, *edir, *path;
    if (esc(id, &eid))
        return MESH_EINVAL;
    if (engine_url_escape(dir, "/", &edir)) {
        free(eid);
        return MESH_ENOMEM;
    }
    int n = asprintf(&path, "/containers/%s/archive?path=%s", eid, edir);
    free(eid);
    free(edir);
    if (n < 0)
        return MESH_ENOMEM;
    char ctx[160];
    snprintf(ctx, sizeof ctx, "copy into container %s", id);
    struct req_args a = {.op = OP_PUT_ARCHIVE,
                         .method = "PUT",
                         .path = path,
                         .ctx = ctx,
                         .cb = cb,
                         .data = data,
                         .content_type = "application/x-tar"};
    int rc = start_simple(e, &a, tar, len, true, ret_req);
    free(path);
    return rc;
}

int engine_container_put_file(struct engine *e, const char *id, const char *dir, const char *name,
                              const void *content, size_t len, unsigned mode, engine_cb cb,
                              void *data, struct engine_req **ret_req)
{
    uint8_t *tar;
    size_t tar_len;
    int rc = engine_tar_one(name, content, len, mode, &tar, &tar_len);
    if (rc)
        return rc;
    rc = engine_container_put_archive(e, id, dir, tar, tar_len, cb, data, ret_req);
    free(tar);
    return rc;
}

int engine_image_inspect(struct engine *e, const char *ref, engine_cb cb, void *data,
                         struct engine_req **ret_req)
{
    char *eref, *path;
    if (!e || !ref || !ref[0] || engine_url_escape(ref, "/:@", &eref))
        return MESH_EINVAL;
    int n = asprintf(&path, "/images/%s/json", eref);
    free(eref);
    if (n < 0)
        return MESH_ENOMEM;
    char ctx[160];
    snprintf(ctx, sizeof ctx, "inspect image %s", ref);
    struct req_args a = {.op = OP_IMAGE_INSPECT, .path = path, .ctx = ctx, .cb = cb, .data = data};
    int rc = start_simple(e, &a, NULL, 0, false, ret_req);
    free(path);
    return rc;
}

int engine_image_pull(struct engine *e, const char *image, const char *tag,
                      engine_progress_cb on_progress, engine_cb cb, void *data,
                      struct engine_req **ret_req)
{
    char *eimg, *etag, *path;
    if (!e || !image || !image[0] || engine_url_escape(image, NULL, &eimg))
        return MESH_EINVAL;
    if (engine_url_escape(tag && tag[0] ? tag : "latest", NULL, &etag)) {
        free(eimg);
        return MESH_ENOMEM;
    }
    int n = asprintf(&path, "/images/create?fromImage=%s&tag=%s", eimg, etag);
    free(eimg);
    free(etag);
    if (n < 0)
        return MESH_ENOMEM;
    char ctx[160];
    snprintf(ctx, sizeof ctx, "pull image %s:%s", image, tag && tag[0] ? tag : "latest");
    struct req_args a = {
        .op = OP_PULL, .method = "POST", .path = path, .ctx = ctx, .cb = cb, .data = data};
    if (!cb || e->closing) {
        free(path);
        return cb ? MESH_ECLOSED : MESH_EINVAL;
    }
    struct engine_req *r = req_new(e, &a);
    free(path);
    if (!r)
        return MESH_ENOMEM;
    req_body(r, NULL, 0);
    r->on_progress = on_progress;
    return submit(e, r, ret_req);
}

int engine_image_import(struct engine *e, const char *path, const char *repo, const char *tag,
                        const char *changes, engine_progress_cb on_progress, engine_cb cb,
                        void *data, struct engine_req **ret_req)
{
    if (!e || !path || !repo || !repo[0] || !cb)
        return MESH_EINVAL;
    if (e->closing)
        return MESH_ECLOSED;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    FILE *f = NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !(f = fdopen(fd, "rb"))) {
        int rc = S_ISREG(st.st_mode) ? -errno : MESH_EINVAL;
        close(fd);
        return rc;
    }
    char *erepo = NULL, *etag = NULL, *echg = NULL, *url = NULL;
    int rc = MESH_ENOMEM;
    if (engine_url_escape(repo, NULL, &erepo) ||
        engine_url_escape(tag && tag[0] ? tag : "latest", NULL, &etag) ||
        (changes && engine_url_escape(changes, NULL, &echg)))
        goto out;
    /* REPO:TAG in repo (the API allows a tag there): Podman 4.3 ignores the tag parameter. */
    if (asprintf(&url, "/images/create?fromSrc=-&repo=%s%%3A%s&tag=%s%s%s", erepo, etag, etag,
                 echg ? "&changes=" : "", echg ? echg : "") < 0) {
        url = NULL;
        goto out;
    }
    char ctx[160];
    snprintf(ctx, sizeof ctx, "import image %s:%s", repo, tag && tag[0] ? tag : "latest");
    struct req_args a = {.op = OP_IMPORT,
                         .method = "POST",
                         .path = url,
                         .ctx = ctx,
                         .cb = cb,
                         .data = data,
                         .content_type = "application/x-tar"};
    struct engine_req *r = req_new(e, &a);
    if (!r)
        goto out;
    req_body(r, NULL, 0);
    r->upload_file = f;
    f = NULL;
    curl_easy_setopt(r->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
    r->on_progress = on_progress;
    rc = submit(e, r, ret_req);
out:
    if (f)
        fclose(f);
    free(url);
    free(erepo);
    free(etag);
    free(echg);
    return rc;
}
