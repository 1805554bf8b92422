/* The rules for names a user gives and every node must agree on: node names (meshd --name,
 * placement.node, placement records) and label keys and values (--label, placement.labels).
 * One home, used by meshd, the spec validator and the state machine. */
#ifndef FOGMESH_COMMON_NAMES_H
#define FOGMESH_COMMON_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define MESH_NODE_NAME_MAX   64
#define MESH_LABEL_KEY_MAX   63
#define MESH_LABEL_VALUE_MAX 127

/* 1..MESH_NODE_NAME_MAX of letters, digits, '.', '_' and '-', starting with a letter or digit.
 * s need not be NUL-terminated. */
bool mesh_node_name_valid(const char *s, size_t len);

/* 1..max of letters, digits, '.', '_', '-' and '/'. */
bool mesh_label_part_valid(const char *s, size_t len, size_t max);

/* 1..max of a-z, 0-9 and '-': what a stored app or microservice name can be (the spec
 * validator's rule is stricter, so a decoder of peer bytes or a file name built from a name
 * checks with this one). s need not be NUL-terminated. */
bool mesh_dns_label_valid(const char *s, size_t len, size_t max);

#endif
