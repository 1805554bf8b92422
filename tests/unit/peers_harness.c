#include "peers_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "err.h"

int harness_listen_socket(struct mesh_addr *ret_addr)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    assert_int_equal(mesh_addr_from_sockaddr((struct sockaddr *)&ss, ret_addr), 0);
    return fd;
}

int harness_hs_hook(void *ud, const uint8_t peer_static[LINK_KEY_LEN], const uint8_t *payload,
                    size_t len, struct mesh_addr *ret_adv)
{
    (void)ud;
    (void)peer_static;
    if (len != sizeof *ret_adv)
        return MESH_EPROTO;
    memcpy(ret_adv, payload, sizeof *ret_adv);
    return 0;
}
