#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define ARGV(...) ((char *[]){"meshd", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"meshd", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(cfg, err, ...)                                                     \
    ({                                                                           \
        enum config_action act_;                                                 \
        config_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (cfg), &act_, (err)); \
    })

static void flags(void **state)
{
    (void)state;
    struct meshd_config c;
    struct mesh_err err = {0};
    int rc = PARSE(&c, &err, "--name", "n1", "--data-dir", "/tmp/x", "--bind", "127.0.0.2:9000",
                   "--join", "127.0.0.1:7946", "--join=127.0.0.3", "--label", "zone=a", "--label",
                   "rack=r1", "--log-level", "debug", "--engine", "unix:///run/podman/podman.sock");
    assert_int_equal(rc, 0);
    assert_string_equal(c.name, "n1");
    assert_string_equal(c.api_socket, "/tmp/x/api.sock");
    assert_int_equal(c.bind.port, 9000);
    assert_true(mesh_addr_equal(&c.advertise, &c.bind));
    assert_int_equal(c.njoin, 2);
    assert_int_equal(c.join[1].port, MESH_DEFAULT_PORT);
    assert_int_equal(c.nlabels, 2);
    assert_string_equal(c.labels[1].value, "r1");
    assert_int_equal(c.log_level, LOG_DEBUG);
}

static void bad_values(void **state)
{
    (void)state;
    struct meshd_config c;
    struct mesh_err err = {0};
    assert_int_equal(PARSE(&c, &err, "--bogus"), MESH_EINVAL);
    assert_non_null(strstr(err.msg, "unknown flag '--bogus'"));
    assert_int_equal(PARSE(&c, &err, "--bind", "1.2.3.4:99999"), MESH_EINVAL);
    assert_non_null(strstr(err.msg, "--bind"));
    assert_int_equal(PARSE(&c, &err, "--name", "-bad"), MESH_EINVAL);
    assert_int_equal(PARSE(&c, &err, "--label", "novalue"), MESH_EINVAL);
    assert_int_equal(PARSE(&c, &err, "--log-level", "loud"), MESH_EINVAL);
    assert_int_equal(PARSE(&c, &err, "--join", "0.0.0.0:1"), MESH_EINVAL);
    assert_int_equal(PARSE(&c, &err, "--engine", "tcp://x"), MESH_EINVAL);
    assert_int_equal(PARSE(&c, &err, "--name"), MESH_EINVAL);
    assert_non_null(strstr(err.msg, "needs a value"));
    assert_int_equal(PARSE(&c, &err, "stray"), MESH_EINVAL);
}

static void file_and_precedence(void **state)
{
    (void)state;
    char path[] = "/tmp/fogmesh-test-cfgXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    dprintf(fd, "# a node\nname = from-file\nbind 127.0.0.5:7000\njoin = 127.0.0.1\n"
                "join = 127.0.0.2\nlabel = zone=file\nlabel = os=linux\n\n");
    close(fd);
    struct meshd_config c;
    struct mesh_err err = {0};
    assert_int_equal(
        PARSE(&c, &err, "--config", path, "--name", "from-flag", "--label", "zone=flag"), 0);
    assert_string_equal(c.name, "from-flag"); /* flags win */
    assert_int_equal(c.bind.port, 7000);      /* the file fills the rest */
    assert_int_equal(c.njoin, 2);
    assert_int_equal(c.nlabels, 2);
    assert_string_equal(c.labels[0].value, "flag");
    assert_string_equal(c.labels[1].value, "linux");

    /* --join on the command line replaces the file's list. */
    assert_int_equal(PARSE(&c, &err, "--config", path, "--join", "127.0.0.9"), 0);
    assert_int_equal(c.njoin, 1);

    fd = open(path, O_WRONLY | O_TRUNC);
    dprintf(fd, "name = ok\nport = 1\n");
    close(fd);
    assert_int_equal(PARSE(&c, &err, "--config", path), MESH_EINVAL);
    assert_non_null(strstr(err.msg, ":2: unknown key 'port'"));
    unlink(path);

    assert_int_equal(PARSE(&c, &err, "--config", "/nonexistent/x.conf"), -ENOENT);
}

static void help_and_version(void **state)
{
    (void)state;
    struct meshd_config c;
    struct mesh_err err = {0};
    enum config_action act;
    assert_int_equal(config_parse(2, ARGV("--help"), &c, &act, &err), 0);
    assert_int_equal(act, CONFIG_HELP);
    assert_int_equal(config_parse(2, ARGV("--version"), &c, &act, &err), 0);
    assert_int_equal(act, CONFIG_VERSION);
}

static void durations_and_profiles(void **state)
{
    (void)state;
    uint64_t ms;
    assert_int_equal(config_duration_parse("500ms", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(config_duration_parse("90", &ms), 0);
    assert_int_equal(ms, 90000);
    assert_int_equal(config_duration_parse("30m", &ms), 0);
    assert_int_equal(ms, 1800000);
    assert_int_equal(config_duration_parse("24h", &ms), 0);
    assert_int_equal(ms, 86400000);
    assert_int_equal(config_duration_parse("-1s", &ms), MESH_EINVAL);
    assert_int_equal(config_duration_parse("5y", &ms), MESH_EINVAL);
    assert_int_equal(config_duration_parse("", &ms), MESH_EINVAL);
    assert_int_equal(config_duration_parse("99999999999999999999h", &ms), MESH_EINVAL);

    struct meshd_config c;
    struct mesh_err err = {0};
    assert_int_equal(PARSE(&c, &err, "--name", "x"), 0);
    assert_int_equal(c.gossip_profile, GOSSIP_PROFILE_LAN);
    assert_int_equal(c.reap_after_ms, MESH_DEFAULT_REAP);
    assert_int_equal(PARSE(&c, &err, "--gossip-profile", "wan", "--reap-after", "90s"), 0);
    assert_int_equal(c.gossip_profile, GOSSIP_PROFILE_WAN);
    assert_int_equal(c.reap_after_ms, 90000);
    assert_int_equal(PARSE(&c, &err, "--gossip-profile", "fast"), MESH_EINVAL);
    assert_int_equal(PARSE(&c, &err, "--reap-after", "10ms"), MESH_EINVAL);
}

static void link_cipher(void **state)
{
    (void)state;
    struct meshd_config c;
    struct mesh_err err = {0};
    assert_int_equal(PARSE(&c, &err, "--name", "x"), 0);
    assert_int_equal(c.link_ciphers, LINK_CIPHER_AUTO);
    assert_int_equal(PARSE(&c, &err, "--link-cipher", "chacha20-poly1305"), 0);
    assert_int_equal(c.link_ciphers, LINK_CIPHER_CHACHAPOLY);
    assert_int_equal(PARSE(&c, &err, "--link-cipher=auto"), 0);
    assert_int_equal(c.link_ciphers, LINK_CIPHER_AUTO);
    assert_int_equal(PARSE(&c, &err, "--link-cipher", "aes-256-gcm"), MESH_EINVAL);
    assert_string_equal(err.msg, "--link-cipher aes-256-gcm: expected auto or chacha20-poly1305");
    assert_int_equal(PARSE(&c, &err, "--link-cipher", ""), MESH_EINVAL);

    /* The config file has the same key; the flag wins over it. */
    char path[] = "/tmp/fogmesh-test-cfgXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    dprintf(fd, "name = n\nlink-cipher = chacha20-poly1305\n");
    close(fd);
    assert_int_equal(PARSE(&c, &err, "--config", path), 0);
    assert_int_equal(c.link_ciphers, LINK_CIPHER_CHACHAPOLY);
    assert_int_equal(PARSE(&c, &err, "--config", path, "--link-cipher", "auto"), 0);
    assert_int_equal(c.link_ciphers, LINK_CIPHER_AUTO);
    fd = open(path, O_WRONLY | O_TRUNC);
    dprintf(fd, "name = n\nlink-cipher = rot13\n");
    close(fd);
    assert_int_equal(PARSE(&c, &err, "--config", path), MESH_EINVAL);
    assert_non_null(strstr(err.msg, ":2: --link-cipher rot13: expected auto or"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(flags),
        cmocka_unit_test(bad_values),
        cmocka_unit_test(file_and_precedence),
        cmocka_unit_test(help_and_version),
        cmocka_unit_test(durations_and_profiles),
        cmocka_unit_test(link_cipher),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
