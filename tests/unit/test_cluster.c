/* consensus/cluster.c on its real disk backend (raft_uv) with raft's own TCP transport on
 * loopback: what reaches the log, and what happens when the log on disk is damaged. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"

struct fx {
    uv_loop_t loop;
    struct raft_uv_transport transport;
    char dir[64];
    struct cluster *c;
    int applied; /* callbacks with status 0 */
    int failed;
    bool closed;
    bool with_change; /* start() sets cfg.on_change */
    int changes;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(f->dir, sizeof f->dir, "/tmp/fogmesh-test-cluster.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            rm_rf(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int teardown(void **state)
{
    struct fx *f = *state;
    uv_loop_close(&f->loop);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void run_until(struct fx *f, bool (*cond)(struct fx *), int max_ms)
{
    for (int i = 0; i < max_ms && !cond(f); i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static bool is_leader(struct fx *f)
{
    struct cluster_info info;
    cluster_info(f->c, &info);
    return info.state == RAFT_LEADER;
}

static int want_applied;
static bool all_applied(struct fx *f)
{
    return f->applied + f->failed >= want_applied;
}

static bool is_closed(struct fx *f)
{
    return f->closed;
}

static void on_applied(void *ud, int status, const struct fsm_result *res,
                       const struct mesh_err *err)
{
    struct fx *f = ud;
    (void)res;
    (void)err;
    if (status == 0)
        f->applied++;
    else
        f->failed++;
}

static void on_closed(void *ud)
{
    struct fx *f = ud;
    f->closed = true;
}

static void on_change(void *ud)
{
    struct fx *f = ud;
    f->changes++;
}

static int start(struct fx *f, struct mesh_err *err)
{
    assert_int_equal(raft_uv_tcp_init(&f->transport, &f->loop), 0);
    struct cluster_config cfg = {
        .uv = &f->loop,
        .data_dir = f->dir,
        .id = 1,
        .address = "127.0.0.1:1",
        .transport = &f->transport,
        .may_bootstrap = true,
        .timing = 0.2,
        .target_voters = 1,
        .dead_grace_ms = 10000,
    };
    if (f->with_change) {
        cfg.on_change = on_change;
        cfg.change_ud = f;
    }
    int rc = cluster_start(&cfg, &f->c, err);
    if (rc < 0) {
        /* A start that failed after raft_init closes raft asynchronously. */
        for (int i = 0; i < 200; i++) {
            uv_run(&f->loop, UV_RUN_NOWAIT);
            usleep(1000);
        }
        raft_uv_tcp_close(&f->transport);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    return rc;
}

static void stop(struct fx *f)
{
    f->closed = false;
    cluster_close(f->c, on_closed, f);
    run_until(f, is_closed, 5000);
    assert_true(f->closed);
    raft_uv_tcp_close(&f->transport);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    f->c = NULL;
}

/* Starts, leads, applies n PUT_APPs, stops. */
static void write_some(struct fx *f, int n)
{
    struct mesh_err err = {0};
    assert_int_equal(start(f, &err), 0);
    run_until(f, is_leader, 5000);
    assert_true(is_leader(f));
    f->applied = f->failed = 0;
    for (int i = 0; i < n; i++) {
        char name[32], spec[64];
        snprintf(name, sizeof name, "app-%d", i);
        snprintf(spec, sizeof spec, "{\"name\": \"%s\", \"pad\": \"%*s\"}", name, i % 7, "");
        struct raft_buffer cmd;
        assert_int_equal(fsm_cmd_put_app(name, spec, strlen(spec), &cmd), 0);
        assert_int_equal(cluster_apply(f->c, &cmd, on_applied, f, NULL), 0);
    }
    want_applied = n;
    run_until(f, all_applied, 5000);
    assert_int_equal(f->applied, n);
    assert_int_equal(fsm_app_count(cluster_fsm(f->c)), (size_t)n);
    stop(f);
}

static bool changed(struct fx *f)
{
    return f->changes > 0;
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* The daemon's shutdown after raft overran its close deadline: cluster_close, then every
 * handle still open on the loop is closed (meshd/loop.c's walk) and the loop run to the end.
 * The cluster's check handle (on_change) must not be closed twice: libuv asserts. */
static void test_close_then_loop_walk(void **state)
{
    struct fx *f = *state;
    struct mesh_err err = {0};
    f->with_change = true;
    assert_int_equal(start(f, &err), 0);
    run_until(f, is_leader, 5000);
    assert_true(is_leader(f));
    run_until(f, changed, 5000); /* a single voter may lead before the loop first runs */
    assert_true(f->changes > 0);
    cluster_close(f->c, on_closed, f);
    uv_walk(&f->loop, close_any, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->closed);
    f->c = NULL;
}

/* An entry whose length is not a multiple of 8 is refused by cluster_apply: raft_uv would store
 * it in a form its own loader refuses or truncates (issue 10). */
static void test_apply_refuses_unpadded(void **state)
{
    struct fx *f = *state;
    struct mesh_err err = {0};
    assert_int_equal(start(f, &err), 0);
    run_until(f, is_leader, 5000);
    assert_true(is_leader(f));
    struct raft_buffer cmd;
    assert_int_equal(fsm_cmd_delete_app("abc", &cmd), 0);
    assert_int_equal(cmd.len % 8, 0);
    cmd.len -= 3; /* what a hostile follower forwarded before leaders re-encoded */
    assert_int_equal(cluster_apply(f->c, &cmd, on_applied, f, NULL), MESH_EINVAL);
    raft_free(cmd.base);
    stop(f);
}

/* Finds the first segment file (closed or open) with data in f->dir/raft. */
static bool find_segment(struct fx *f, char *path, size_t len)
{
    char rdir[80];
    snprintf(rdir, sizeof rdir, "%s/raft", f->dir);
    DIR *d = opendir(rdir);
    assert_non_null(d);
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d))) {
        bool closed = strlen(e->d_name) == 33 && e->d_name[16] == '-'; /* first-last */
        bool open = strncmp(e->d_name, "open-", 5) == 0;
        if (!closed && !open)
            continue;
        snprintf(path, len, "%s/%.100s", rdir, e->d_name);
        struct stat st;
        found = stat(path, &st) == 0 && st.st_size > 256;
    }
    closedir(d);
    return found;
}

static int count_files(struct fx *f)
{
    char rdir[96];
    snprintf(rdir, sizeof rdir, "%s/raft", f->dir);
    DIR *d = opendir(rdir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n++;
    closedir(d);
    return n;
}

/* Damaged storage is a loud error at start, never a silent loss: cluster_start fails and says
 * so, and leaves the files as they were (so every later start fails the same way until the
 * operator acts), instead of setting a segment aside and starting with fewer entries. */
static void test_corrupt_segment_is_loud(void **state)
{
    struct fx *f = *state;
    write_some(f, 20);
    char seg[200];
    assert_true(find_segment(f, seg, sizeof seg));
    int fd = open(seg, O_RDWR);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    /* Flip bytes in the middle: inside some entry's data or its batch header. */
    uint8_t junk[16];
    memset(junk, 0xa5, sizeof junk);
    assert_int_equal(pwrite(fd, junk, sizeof junk, st.st_size / 2), (ssize_t)sizeof junk);
    close(fd);
    int files = count_files(f);

    for (int attempt = 0; attempt < 2; attempt++) {
        struct mesh_err err = {0};
        int rc = start(f, &err);
        if (rc == 0) {
            size_t apps = fsm_app_count(cluster_fsm(f->c));
            stop(f);
            fail_msg("started with a damaged segment (%zu of 20 apps)", apps);
        }
        assert_non_null(strstr(err.msg, "raft storage"));
        assert_int_equal(count_files(f), files);
        struct stat st2;
        assert_int_equal(stat(seg, &st2), 0);
        assert_int_equal(st2.st_size, st.st_size);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_apply_refuses_unpadded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_segment_is_loud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_then_loop_walk, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
