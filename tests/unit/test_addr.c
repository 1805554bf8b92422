#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "addr.h"
#include "err.h"
#include "log.h"

static void parse_roundtrip(void **state)
{
    (void)state;
    static const char *const ok[] = {"127.0.0.1:7946", "10.1.2.3:1", "[::1]:7946",
                                     "[fe80::1]:65535", "0.0.0.0:0"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct mesh_addr a;
        char buf[MESH_ADDR_STRLEN];
        assert_int_equal(mesh_addr_parse(ok[i], 0, &a), 0);
        assert_string_equal(mesh_addr_format(&a, buf, sizeof buf), ok[i]);
    }
}

static void parse_defaults_and_errors(void **state)
{
    (void)state;
    struct mesh_addr a, b;
    assert_int_equal(mesh_addr_parse("127.0.0.2", 7946, &a), 0);
    assert_int_equal(a.port, 7946);
    assert_int_equal(mesh_addr_parse("localhost:80", 0, &b), 0);
    assert_int_equal(b.family, 4);
    assert_int_equal(mesh_addr_parse("::1", 7, &a), 0);
    assert_int_equal(a.family, 6);
    assert_int_equal(a.port, 7);

    static const char *const bad[] = {"",           "127.0.0.1:",     "127.0.0.1:65536",
                                      "1.2.3.4:-1", "host.example:1", "[::1",
                                      "[::1]x",     "1.2.3.4:12ab",   "999.1.1.1:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mesh_addr_parse(bad[i], 0, &a), MESH_EINVAL);
    assert_int_equal(mesh_addr_parse("127.0.0.1", 0, &a), MESH_EINVAL); /* no port, no default */
}

static void sockaddr_roundtrip(void **state)
{
    (void)state;
    struct mesh_addr a, b;
    struct sockaddr_storage ss;
    assert_int_equal(mesh_addr_parse("[2001:db8::5]:99", 0, &a), 0);
    mesh_addr_to_sockaddr(&a, &ss);
    assert_int_equal(mesh_addr_from_sockaddr((struct sockaddr *)&ss, &b), 0);
    assert_true(mesh_addr_equal(&a, &b));
    assert_int_equal(mesh_addr_parse("0.0.0.0:1", 0, &a), 0);
    assert_true(mesh_addr_is_any(&a));
}

static void error_table(void **state)
{
    (void)state;
    assert_string_equal(mesh_strerror(MESH_EAUTH), "authentication failed");
    assert_string_equal(mesh_strerror(0), "success");
    struct mesh_err err;
    assert_int_equal(mesh_errf(&err, MESH_EINVAL, "image: %s", "required"), MESH_EINVAL);
    mesh_err_wrapf(&err, "microservice %s", "reader");
    assert_string_equal(err.msg, "microservice reader: image: required");
}

static void ratelimit_per_host(void **state)
{
    (void)state;
    struct log_ratelimit_hosts t = {0};
    struct mesh_addr a, a2, b;
    uint32_t held = 99;
    mesh_addr_parse("10.0.0.1:1000", 0, &a);
    mesh_addr_parse("10.0.0.1:2000", 0, &a2); /* same host, another port */
    mesh_addr_parse("10.0.0.2:1000", 0, &b);
    assert_int_equal(log_ratelimit_host(&t, &a, 1000, 60000, &held), 1);
    assert_int_equal(held, 0);
    assert_int_equal(log_ratelimit_host(&t, &a2, 2000, 60000, NULL), 0);
    assert_int_equal(log_ratelimit_host(&t, &a, 3000, 60000, NULL), 0);
    assert_int_equal(log_ratelimit_host(&t, &b, 3000, 60000, NULL), 1);
    assert_int_equal(log_ratelimit_host(&t, &a, 61001, 60000, &held), 1);
    assert_int_equal(held, 2);
    /* The table is bounded: many hosts evict the oldest, and the lines for all of them stay
     * within the table's budget per interval. */
    int lines = 0;
    for (int i = 0; i < 3 * LOG_RL_HOSTS; i++) {
        struct mesh_addr h = a;
        h.ip[3] = (uint8_t)(10 + i);
        lines += log_ratelimit_host(&t, &h, 70000, 60000, NULL);
    }
    assert_true(lines >= 1 && lines <= LOG_RL_BUDGET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_roundtrip),    cmocka_unit_test(parse_defaults_and_errors),
        cmocka_unit_test(sockaddr_roundtrip), cmocka_unit_test(error_table),
        cmocka_unit_test(ratelimit_per_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
