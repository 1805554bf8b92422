#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static int parse_port(const char *s, uint16_t *ret)
{
    if (!*s)
        return MESH_EINVAL;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > 65535 || s[0] == '-' || s[0] == '+')
        return MESH_EINVAL;
    *ret = (uint16_t)v;
    return 0;
}

int mesh_addr_parse(const char *s, uint16_t default_port, struct mesh_addr *ret_addr)
{
    char host[MESH_ADDR_STRLEN];
    const char *port_s = NULL;
    size_t hlen;

    if (!s || !*s)
        return MESH_EINVAL;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close)
            return MESH_EINVAL;
        hlen = (size_t)(close - s - 1);
        if (hlen >= sizeof host)
            return MESH_EINVAL;
        memcpy(host, s + 1, hlen);
        if (close[1] == ':')
            port_s = close + 2;
        else if (close[1] != '\0')
            return MESH_EINVAL;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon && strchr(s, ':') != colon)
            colon = NULL; /* a bare IPv6 address without brackets: no port */
        hlen = colon ? (size_t)(colon - s) : strlen(s);
        if (hlen >= sizeof host)
            return MESH_EINVAL;
        memcpy(host, s, hlen);
        if (colon)
            port_s = colon + 1;
    }
    host[hlen] = '\0';

    struct mesh_addr a = {0};
    if (port_s) {
        if (parse_port(port_s, &a.port) < 0)
            return MESH_EINVAL;
    } else if (default_port) {
        a.port = default_port;
    } else {
        return MESH_EINVAL;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, a.ip) == 1) {
        a.family = 4;
    } else if (inet_pton(AF_INET6, host, a.ip) == 1) {
        a.family = 6;
    } else {
        return MESH_EINVAL;
    }
    *ret_addr = a;
    return 0;
}

char *mesh_addr_format(const struct mesh_addr *a, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (a->family == 4)
        inet_ntop(AF_INET, a->ip, host, sizeof host);
    else if (a->family == 6)
        inet_ntop(AF_INET6, a->ip, host, sizeof host);
    snprintf(buf, len, a->family == 6 ? "[%s]:%u" : "%s:%u", host, (unsigned)a->port);
    return buf;
}

bool mesh_addr_equal(const struct mesh_addr *a, const struct mesh_addr *b)
{
    return a->family == b->family && a->port == b->port &&
           memcmp(a->ip, b->ip, a->family == 4 ? 4 : 16) == 0;
}

bool mesh_addr_is_any(const struct mesh_addr *a)
{
    static const uint8_t zero[16];
    return memcmp(a->ip, zero, a->family == 4 ? 4 : 16) == 0;
}

socklen_t mesh_addr_to_sockaddr(const struct mesh_addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (a->family == 6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(a->port);
        memcpy(&s6->sin6_addr, a->ip, 16);
        return sizeof *s6;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(a->port);
    memcpy(&s4->sin_addr, a->ip, 4);
    return sizeof *s4;
}

int mesh_addr_from_sockaddr(const struct sockaddr *sa, struct mesh_addr *ret_addr)
{
    struct mesh_addr a = {0};
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        a.family = 4;
        a.port = ntohs(s4->sin_port);
        memcpy(a.ip, &s4->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        a.family = 6;
        a.port = ntohs(s6->sin6_port);
        memcpy(a.ip, &s6->sin6_addr, 16);
    } else {
        return MESH_EINVAL;
    }
    *ret_addr = a;
    return 0;
}
