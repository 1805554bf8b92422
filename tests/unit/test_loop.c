/* The embedded libuv loop: a libuv timer and a libevent timer both fire on time in one loop,
 * and work queued on libuv from a libevent callback starts in the same iteration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loop.h"

struct fired {
    struct mesh_loop *loop;
    uint64_t start;
    uint64_t uv_at, ev_at;
    int uv_count, ev_count;
    uv_timer_t uv_timer;
    struct event *ev;
};

static void maybe_stop(struct fired *f)
{
    if (f->uv_count && f->ev_count)
        mesh_loop_stop(f->loop);
}

static void on_uv_timer(uv_timer_t *t)
{
    struct fired *f = t->data;
    f->uv_at = mesh_now_ms();
    f->uv_count++;
    maybe_stop(f);
}

static void on_ev_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct fired *f = arg;
    f->ev_at = mesh_now_ms();
    f->ev_count++;
    maybe_stop(f);
}

static void both_timers_fire_on_time(void **state)
{
    (void)state;
    struct mesh_loop loop;
    struct fired f = {.loop = &loop};
    assert_int_equal(mesh_loop_init(&loop), 0);

    uv_timer_init(&loop.uv, &f.uv_timer);
    f.uv_timer.data = &f;
    f.ev = evtimer_new(loop.base, on_ev_timer, &f);
    f.start = mesh_now_ms();
    uv_timer_start(&f.uv_timer, on_uv_timer, 120, 0);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 60 * 1000};
    evtimer_add(f.ev, &tv);

    assert_int_equal(mesh_loop_run(&loop), 0);
    assert_int_equal(f.uv_count, 1);
    assert_int_equal(f.ev_count, 1);
    /* Not before their time, and not much after (generous bound for a loaded CI machine). */
    assert_true(f.ev_at - f.start >= 59);
    assert_true(f.ev_at - f.start < 60 + 500);
    assert_true(f.uv_at - f.start >= 119);
    assert_true(f.uv_at - f.start < 120 + 500);

    event_free(f.ev);
    mesh_loop_close(&loop); /* closes the uv timer too */
}

struct chain {
    struct mesh_loop *loop;
    uv_timer_t uv_timer;
    int step;
    uint64_t queued_at, ran_at;
};

static void on_chain_uv(uv_timer_t *t)
{
    struct chain *c = t->data;
    c->ran_at = mesh_now_ms();
    c->step = 2;
    mesh_loop_stop(c->loop);
}

static void on_chain_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct chain *c = arg;
    /* Queue zero-delay libuv work from a libevent callback, like a raft_apply would. */
    c->step = 1;
    c->queued_at = mesh_now_ms();
    uv_timer_start(&c->uv_timer, on_chain_uv, 0, 0);
}

static void uv_work_from_libevent_runs_at_once(void **state)
{
    (void)state;
    struct mesh_loop loop;
    struct chain c = {.loop = &loop};
    assert_int_equal(mesh_loop_init(&loop), 0);
    uv_timer_init(&loop.uv, &c.uv_timer);
    c.uv_timer.data = &c;
    struct event *ev = evtimer_new(loop.base, on_chain_ev, &c);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 10 * 1000};
    evtimer_add(ev, &tv);
    assert_int_equal(mesh_loop_run(&loop), 0);
    assert_int_equal(c.step, 2);
    assert_true(c.ran_at - c.queued_at < 50);
    event_free(ev);
    mesh_loop_close(&loop);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mesh_loop_stop(arg);
}

/* With no libuv handle active, libuv says "timeout 0" (its loop would exit); the embedded loop
 * must then sleep on libevent alone instead of spinning. */
static void idle_loop_does_not_spin(void **state)
{
    (void)state;
    struct mesh_loop loop;
    assert_int_equal(mesh_loop_init(&loop), 0);
    struct event *ev = evtimer_new(loop.base, on_stop, &loop);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200 * 1000};
    evtimer_add(ev, &tv);
    assert_int_equal(mesh_loop_run(&loop), 0);
    assert_true(loop.passes < 10);
    event_free(ev);
    mesh_loop_close(&loop);
}

static void close_half_built(void **state)
{
    (void)state;
    struct mesh_loop loop = {0};
    mesh_loop_close(&loop); /* a zeroed loop is fine */
    assert_null(loop.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(both_timers_fire_on_time),
        cmocka_unit_test(uv_work_from_libevent_runs_at_once),
        cmocka_unit_test(idle_loop_does_not_spin),
        cmocka_unit_test(close_half_built),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
