/* Two linkio ends over a real loopback TCP connection on one event_base: handshake, a 1 MiB
 * transfer on a channel (flow control and socket backpressure), a reply, clean close. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "err.h"
#include "link.h"
#include "linkio.h"

#define TOTAL (1024 * 1024)

struct side {
    struct ctx *ctx;
    struct linkio *lio;
    const char *name;
    int handshakes, closes;
    int close_code;
    char close_msg[MESH_ERRMSG_LEN];
    uint32_t ch;
    size_t got;
};

struct ctx {
    struct event_base *base;
    struct side client, server;
    uint8_t *blob;
    size_t sent;
    uint8_t digest_in[32];
    crypto_generichash_state h;
    int closed;
};

static void client_pump(struct side *s)
{
    struct ctx *c = s->ctx;
    while (c->sent < TOTAL) {
        long n = link_channel_send(linkio_link(s->lio), s->ch, c->blob + c->sent, TOTAL - c->sent);
        if (n <= 0)
            break; /* wait for on_channel_writable */
        c->sent += (size_t)n;
    }
}

static int on_handshake(void *ud, const uint8_t peer[32], const uint8_t *p, size_t n)
{
    struct side *s = ud;
    (void)peer, (void)p, (void)n;
    s->handshakes++;
    if (s == &s->ctx->client) {
        assert_int_equal(
            link_channel_open(linkio_link(s->lio), 9, (const uint8_t *)"bulk", 4, &s->ch), 0);
        client_pump(s);
    }
    return 0;
}

static uint32_t on_open(void *ud, uint32_t id, uint16_t type, const uint8_t *p, size_t n)
{
    struct side *s = ud;
    assert_int_equal(type, 9);
    assert_int_equal(n, 4);
    assert_memory_equal(p, "bulk", 4);
    s->ch = id;
    return 0;
}

static void on_data(void *ud, uint32_t id, const uint8_t *d, size_t n)
{
    struct side *s = ud;
    struct ctx *c = s->ctx;
    assert_int_equal(id, s->ch);
    if (s == &c->server) {
        crypto_generichash_update(&c->h, d, n);
        s->got += n;
        assert_int_equal(link_channel_consume(linkio_link(s->lio), id, n), 0);
        if (s->got == TOTAL) {
            uint8_t dig[32];
            crypto_generichash_final(&c->h, dig, sizeof dig);
            assert_int_equal(link_channel_send(linkio_link(s->lio), id, dig, sizeof dig), 32);
            assert_int_equal(link_channel_close(linkio_link(s->lio), id), 0);
        }
    } else {
        assert_true(s->got + n <= 32);
        memcpy(c->digest_in + s->got, d, n);
        s->got += n;
        assert_int_equal(link_channel_consume(linkio_link(s->lio), id, n), 0);
    }
}

static void on_writable(void *ud, uint32_t id)
{
    struct side *s = ud;
    (void)id;
    if (s == &s->ctx->client)
        client_pump(s);
}

static void on_closed(void *ud, uint32_t id)
{
    struct side *s = ud;
    struct ctx *c = s->ctx;
    (void)id;
    if (s == &c->client) {
        uint8_t want[32];
        crypto_generichash(want, sizeof want, c->blob, TOTAL, NULL, 0);
        assert_int_equal(s->got, 32);
        assert_memory_equal(c->digest_in, want, 32);
        linkio_close(s->lio); /* GOAWAY, flush, close */
    }
}

static void on_close(void *ud, const struct mesh_err *err)
{
    struct side *s = ud;
    s->closes++;
    s->close_code = err->code;
    snprintf(s->close_msg, sizeof s->close_msg, "%s", err->msg);
    linkio_free(s->lio);
    s->lio = NULL;
    if (++s->ctx->closed == 2)
        event_base_loopbreak(s->ctx->base);
}

static void config(struct linkio_config *cfg, struct side *s, const uint8_t *priv)
{
    static const uint8_t mesh_key[32] = {7, 7, 7};
    memset(cfg, 0, sizeof *cfg);
    link_config_init(&cfg->link);
    memcpy(cfg->link.static_priv, priv, 32);
    memcpy(cfg->link.psks[0], mesh_key, 32);
    cfg->link.n_psks = 1;
    cfg->link.payload = (const uint8_t *)s->name;
    cfg->link.payload_len = strlen(s->name);
    cfg->cb.on_handshake = on_handshake;
    cfg->cb.on_channel_open = on_open;
    cfg->cb.on_channel_data = on_data;
    cfg->cb.on_channel_writable = on_writable;
    cfg->cb.on_channel_closed = on_closed;
    cfg->on_close = on_close;
    cfg->ud = s;
}

static void accept_cb(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct ctx *c = arg;
    struct linkio_config cfg;
    struct mesh_err err = {0};
    uint8_t priv[32];
    (void)lst, (void)sa, (void)len;
    randombytes_buf(priv, sizeof priv);
    config(&cfg, &c->server, priv);
    if (linkio_adopt(c->base, fd, &cfg, &c->server.lio, &err) < 0) {
        close(fd);
        fail_msg("adopt: %s", err.msg);
    }
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    event_base_loopbreak(arg);
}

static void test_loopback(void **state)
{
    struct ctx c;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    struct evconnlistener *lst;
    struct linkio_config cfg;
    struct mesh_addr addr;
    struct mesh_err err = {0};
    struct event *guard;
    struct timeval tv = {20, 0};
    uint8_t priv[32];
    (void)state;

    memset(&c, 0, sizeof c);
    c.client.ctx = c.server.ctx = &c;
    c.client.name = "client";
    c.server.name = "server";
    c.base = event_base_new();
    assert_non_null(c.base);
    c.blob = malloc(TOTAL);
    randombytes_buf(c.blob, TOTAL);
    crypto_generichash_init(&c.h, NULL, 0, 32);

    lst = evconnlistener_new_bind(c.base, accept_cb, &c,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
                                  16, (struct sockaddr *)&sin, sizeof sin);
    assert_non_null(lst);
    assert_int_equal(getsockname(evconnlistener_get_fd(lst), (struct sockaddr *)&ss, &sl), 0);
    assert_int_equal(mesh_addr_from_sockaddr((struct sockaddr *)&ss, &addr), 0);

    randombytes_buf(priv, sizeof priv);
    config(&cfg, &c.client, priv);
    if (linkio_connect(c.base, &addr, &cfg, &c.client.lio, &err) < 0)
        fail_msg("connect: %s", err.msg);
    guard = evtimer_new(c.base, timeout_cb, c.base);
    evtimer_add(guard, &tv);

    event_base_dispatch(c.base);

    print_message("client close: %d %s\nserver close: %d %s\n", c.client.close_code,
                  c.client.close_msg, c.server.close_code, c.server.close_msg);
    assert_int_equal(c.closed, 2);
    assert_int_equal(c.client.handshakes, 1);
    assert_int_equal(c.server.handshakes, 1);
    assert_int_equal(c.server.got, TOTAL);
    assert_int_equal(c.client.closes, 1);
    assert_int_equal(c.server.closes, 1);
    assert_int_equal(c.client.close_code, 0);
    assert_int_equal(c.server.close_code, MESH_ECLOSED);
    assert_non_null(strstr(c.server.close_msg, "peer closed the link"));

    event_free(guard);
    evconnlistener_free(lst);
    event_base_free(c.base);
    free(c.blob);
}

/* Connecting to a port nobody listens on ends in on_close with an error, exactly once. */
static void test_refused(void **state)
{
    struct ctx c;
    struct linkio_config cfg;
    struct mesh_addr addr;
    struct mesh_err err = {0};
    uint8_t priv[32];
    int fd;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    (void)state;

    /* A port that was just free. */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    close(fd);
    assert_int_equal(mesh_addr_from_sockaddr((struct sockaddr *)&ss, &addr), 0);

    memset(&c, 0, sizeof c);
    c.client.ctx = &c;
    c.client.name = "client";
    c.closed = 1; /* only one side */
    c.base = event_base_new();
    randombytes_buf(priv, sizeof priv);
    config(&cfg, &c.client, priv);
    if (linkio_connect(c.base, &addr, &cfg, &c.client.lio, &err) < 0)
        fail_msg("connect: %s", err.msg);
    event_base_dispatch(c.base);
    print_message("refused: %d %s\n", c.client.close_code, c.client.close_msg);
    assert_int_equal(c.client.closes, 1);
    assert_int_equal(c.client.close_code, MESH_EIO);
    event_base_free(c.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_refused),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
