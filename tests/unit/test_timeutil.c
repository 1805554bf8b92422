/* common/timeutil.h: the ms -> timeval/timespec conversions at their edges, and the monotonic
 * clock's two units agreeing and never going back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "timeutil.h"

static void ms_to_timeval(void **state)
{
    (void)state;
    static const struct {
        uint64_t ms;
        long sec, usec;
    } cases[] = {{0, 0, 0},         {1, 0, 1000},      {999, 0, 999000},    {1000, 1, 0},
                 {1500, 1, 500000}, {60001, 60, 1000}, {86400000, 86400, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct timeval tv = mesh_ms_to_timeval(cases[i].ms);
        assert_int_equal(tv.tv_sec, cases[i].sec);
        assert_int_equal(tv.tv_usec, cases[i].usec);
    }
    /* The largest a uint32_t timeout can be: the microseconds stay below a second. */
    struct timeval tv = mesh_ms_to_timeval(UINT32_MAX);
    assert_int_equal(tv.tv_sec, UINT32_MAX / 1000);
    assert_int_equal(tv.tv_usec, (UINT32_MAX % 1000) * 1000);
}

static void ms_to_timespec(void **state)
{
    (void)state;
    struct timespec ts = mesh_ms_to_timespec(0);
    assert_int_equal(ts.tv_sec, 0);
    assert_int_equal(ts.tv_nsec, 0);
    ts = mesh_ms_to_timespec(999);
    assert_int_equal(ts.tv_sec, 0);
    assert_int_equal(ts.tv_nsec, 999000000);
    ts = mesh_ms_to_timespec(2001);
    assert_int_equal(ts.tv_sec, 2);
    assert_int_equal(ts.tv_nsec, 1000000);
}

static void monotonic(void **state)
{
    (void)state;
    uint64_t ms0 = mesh_now_ms(), ns = mesh_now_ns(), ms1 = mesh_now_ms();
    assert_true(ms0 <= ns / 1000000 && ns / 1000000 <= ms1);
    uint64_t prev = mesh_now_ns();
    for (int i = 0; i < 1000; i++) {
        uint64_t now = mesh_now_ns();
        assert_true(now >= prev);
        prev = now;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ms_to_timeval),
        cmocka_unit_test(ms_to_timespec),
        cmocka_unit_test(monotonic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
