/* Network addresses of mesh nodes: a small value type (copyable, comparable with memcmp after
 * mesh_addr_set*) used on the wire, in tables and by the daemon's sockets. */
#ifndef FOGMESH_COMMON_ADDR_H
#define FOGMESH_COMMON_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MESH_ADDR_STRLEN 64 /* "[ffff:...:ffff]:65535" fits */

struct mesh_addr {
    uint8_t family; /* 4 or 6; 0 = unset */
    uint8_t ip[16]; /* network order; IPv4 uses the first 4 bytes, the rest zero */
    uint16_t port;  /* host order */
};

/* Parses "HOST:PORT", "[V6]:PORT" or, when default_port is not 0, a bare "HOST". HOST must be a
 * numeric address, or "localhost"; names are not resolved (no DNS in the daemon's hot paths). */
int mesh_addr_parse(const char *s, uint16_t default_port, struct mesh_addr *ret_addr);

/* Formats as "1.2.3.4:7946" or "[::1]:7946" into buf (at least MESH_ADDR_STRLEN). Returns buf. */
char *mesh_addr_format(const struct mesh_addr *a, char *buf, size_t len);

bool mesh_addr_equal(const struct mesh_addr *a, const struct mesh_addr *b);
bool mesh_addr_is_any(const struct mesh_addr *a); /* 0.0.0.0 or :: */

/* Converts to/from a socket address; to_sockaddr returns the length used. */
socklen_t mesh_addr_to_sockaddr(const struct mesh_addr *a, struct sockaddr_storage *ss);
int mesh_addr_from_sockaddr(const struct sockaddr *sa, struct mesh_addr *ret_addr);

#endif
