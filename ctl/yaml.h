/* YAML specs for meshctl: YAML (or JSON) text to a jansson value, and a jansson value to YAML
 * that reads back to the same value (`meshctl describe -o yaml` then `meshctl deploy -f`).
 *
 * Reading follows the YAML 1.2 core schema: a plain (unquoted) scalar is null (null, Null, NULL,
 * ~ or nothing), a boolean (true/True/TRUE, false/False/FALSE), an integer (123, -4, 0o17,
 * 0x1F) or a float (1.5, .5, 1e3, -2.0E-3) when it spells one, and a string otherwise; a quoted
 * or block scalar is always a string, and so is a scalar tagged !!str. So `yes`, `on` and `0777`
 * are the strings they look like here, unlike YAML 1.1.
 *
 * Refused, with line:column: anchors and aliases (no reference cycles or expansion bombs), other
 * tags, more than one document, keys that are not strings (collections, or plain scalars that
 * resolve to null, a boolean or a number: quote them), keys holding NUL, duplicate keys, nesting
 * deeper than YAML_MAX_DEPTH, integers outside 64 bits, infinities and NaN (JSON has none).
 *
 * Note on the name: this header shadows libyaml's <yaml.h> for anything compiled with ctl/ on
 * its include path; ctl/yaml.c is therefore built without it (ctl/meson.build). */
#ifndef FOGMESH_CTL_YAML_H
#define FOGMESH_CTL_YAML_H

#include <stddef.h>

#include <jansson.h>

#include "err.h"

#define YAML_MAX_INPUT (1024 * 1024) /* bytes of text */
#define YAML_MAX_DEPTH 32            /* nested mappings and sequences */

/* Parses text (len bytes, need not be terminated) into a new value stored in *ret (the caller
 * owns it). Text whose first non-blank character is '{' is read as JSON by jansson (same bounds,
 * duplicate keys refused); when that fails it is read as YAML (flow style), and if that fails too
 * the JSON error is reported. Returns 0, or MESH_EINVAL ("3:7: duplicate key \"name\""),
 * MESH_ETOOBIG (over YAML_MAX_INPUT) or MESH_ENOMEM, with err (when not NULL) saying why and
 * *ret untouched. */
int yaml_to_json(const char *text, size_t len, json_t **ret, struct mesh_err *err);

/* Writes v (borrowed) as block-style YAML into a new NUL-terminated string stored in *ret_text
 * (free() it). Object keys come out in the object's order. Strings that would read back as
 * something else (null, booleans, numbers, YAML 1.1's yes/no/on/off, number-like text) or that
 * hold special characters are quoted; reals always carry a '.' or an exponent. Returns 0, or
 * MESH_ENOMEM / MESH_EINVAL (a value YAML cannot hold, such as an object key with a control
 * character the emitter refuses) with *ret_text untouched. */
int json_to_yaml(const json_t *v, char **ret_text);

#endif
