/* The keyed log rate limiters: bounded in memory (fixed tables) and in output, however many
 * sources there are. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "log.h"

/* Lines let through for `sources` hosts sending `events` each, interleaved, within one
 * interval (as a flood of spoofed UDP sources does); *ret_held is the sum of the suppressed
 * counts reported with the lines let through. */
static unsigned host_lines(unsigned sources, unsigned events, uint64_t now_ms, uint64_t *ret_held,
                           struct log_ratelimit_hosts *t)
{
    unsigned lines = 0;
    for (unsigned e = 0; e < events; e++) {
        for (unsigned s = 0; s < sources; s++) {
            struct mesh_addr h;
            char a[32];
            snprintf(a, sizeof a, "127.%u.%u.%u:1000", (s >> 16) & 255, (s >> 8) & 255, s & 255);
            assert_int_equal(mesh_addr_parse(a, 0, &h), 0);
            uint32_t held = 0;
            if (log_ratelimit_host(t, &h, now_ms + e, 60000, &held)) {
                lines++;
                *ret_held += held;
            }
        }
    }
    return lines;
}

/* issue 10 item 8: 64 spoofed sources gave 19,008 lines for 20,000 packets, as each new
 * source evicted another from the 32 slots and was logged again. */
static void many_hosts_bounded(void **state)
{
    (void)state;
    static struct log_ratelimit_hosts t;
    uint64_t held = 0;
    unsigned lines = host_lines(64, 300, 1000, &held, &t);
    assert_true(lines <= 64);
    lines = host_lines(10000, 3, 2000, &held, &t);
    assert_true(lines <= 64);
}

/* The next interval lets lines through again, and the first one tells how many were held. */
static void budget_returns_and_counts(void **state)
{
    (void)state;
    static struct log_ratelimit_hosts t;
    uint64_t held = 0;
    unsigned first = host_lines(1000, 5, 1000, &held, &t);
    assert_true(first >= 1 && first <= 64);
    held = 0;
    unsigned again = host_lines(1000, 1, 1000 + 60000 + 10, &held, &t);
    assert_true(again >= 1 && again <= 64);
    assert_true(held >= 1000 * 5 - first - 64); /* the flood of the first minute is reported */
}

/* One source still gets its line once per interval, as before. */
static void one_host_once_per_interval(void **state)
{
    (void)state;
    static struct log_ratelimit_hosts t;
    uint64_t held = 0;
    assert_int_equal(host_lines(1, 100, 1000, &held, &t), 1);
    held = 0;
    assert_int_equal(host_lines(1, 1, 62000, &held, &t), 1);
    assert_int_equal(held, 99);
}

static void many_keys_bounded(void **state)
{
    (void)state;
    static struct log_ratelimit_keys t;
    unsigned lines = 0;
    for (unsigned e = 0; e < 100; e++) {
        for (unsigned k = 0; k < 64; k++) {
            char key[32];
            snprintf(key, sizeof key, "svc-%u", k);
            if (log_ratelimit_key(&t, key, 1000 + e, 60000, NULL))
                lines++;
        }
    }
    assert_true(lines <= 64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(many_hosts_bounded),
        cmocka_unit_test(budget_returns_and_counts),
        cmocka_unit_test(one_host_once_per_interval),
        cmocka_unit_test(many_keys_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
