/* clang-format off */
/* Application specs: validation and canonical form.
 *
 * A spec arrives as JSON (the HTTP API) or YAML turned into JSON (meshctl). spec_validate()
 * checks it completely on the node that receives it, before anything reaches Raft, and reports
 * every problem with its path ("microservices[1].image: required"), not just the first. What it
 * stores is the canonical form: known keys only, defaults filled, values normalised, object keys
 * inserted in sorted order. Validating a canonical spec gives the same canonical spec back, so
 * `meshctl describe app X -o yaml | meshctl deploy -f -` is "unchanged", and two specs that mean
 * the same thing compare equal (json_equal) whatever their spelling.
 *
 * Fields (see issue 4):
 *   kind: Application                        required
 *   name: app name                           required, SPEC_NAME_MAX rule below
 *   microservices: [ ... ]                   required, 1..SPEC_MAX_MICROSERVICES
 *     name                                   required, unique in the app, same rule as the app
 *     image: "ref"  |  images: {amd64, arm64, arm: "ref"}    exactly one of the two
 *     command: ["arg", ...]                  0..SPEC_MAX_ARGS strings
 *     env: {NAME: "value"}                   0..SPEC_MAX_ENV; NAME is [A-Za-z_][A-Za-z0-9_]*;
 *                                            integer and boolean values become strings
 *     ports: [{container, host, protocol}]   0..SPEC_MAX_PORTS; ports 1..65535, host optional,
 *                                            protocol tcp|udp (default tcp); a host port and
 *                                            protocol is used once per app, a container port and
 *                                            protocol once per microservice
 *     volumes: [{host, container, readonly}] 0..SPEC_MAX_VOLUMES; absolute paths without ':';
 *                                            readonly default false; container path once per
 *                                            microservice
 *     resources: {cpus, memory}              cpus > 0 (0.5), at most SPEC_MAX_CPUS, kept to
 *                                            thousandths; memory "64Mi", "1Gi", "512M", "100k"
 *                                            or a number of bytes, 1..SPEC_MAX_MEMORY
 *     replicas: 1..SPEC_MAX_REPLICAS         default 1
 *     placement: {node, labels, arch}        node: a node name; labels: as node labels;
 *                                            arch: amd64|arm64|arm
 *     config: {...}                          any object, at most SPEC_MAX_CONFIG bytes encoded
 *                                            and SPEC_MAX_CONFIG_DEPTH levels deep
 *     restart: always|on-failure|never       default always
 *     expose: [{name, port}]                 0..SPEC_MAX_SERVICES; the services this microservice
 *                                            provides: a service name (the app name rule) and
 *                                            the TCP port it listens on; each once
 *     connect: [{service, port}]             0..SPEC_MAX_SERVICES; services it uses: meshd
 *                                            listens on 127.0.0.1:port on its node and carries
 *                                            connections to the service; each once, and no
 *                                            port both exposed and connected
 *   Security settings (issue 16), each optional; passed to the engine (runtime/reconcile.c):
 *     user: "uid[:gid]"                      numbers up to 4294967294, or user/group names
 *     read_only_rootfs, privileged: bool     default false
 *     no_new_privileges: bool                default true (absent: on)
 *     cap_add, cap_drop: [NAME, ...]         capability(7) names or ALL, any case, CAP_ optional;
 *                                            canonical upper case without CAP_, sorted, once;
 *                                            none in both
 *     devices: [{host, container, permissions}]  host under /dev/; container default host;
 *                                            permissions some of rwm (default rwm)
 *     cdi: ["vendor/class=name", ...]        CDI devices (nvidia.com/gpu=all)
 *     gpus: "all" | 1..64                    GPUs through the engine's device requests
 *     runtime: name                          an OCI runtime the engine knows (crun, nvidia)
 *     tmpfs: [{path, size, mode}]            size as memory; mode an octal string ("1777":
 *                                            YAML reads 01777 as a decimal number)
 *     sysctls: {name: "value"}               IPC-namespace ones only (kernel.msg*, kernel.sem,
 *                                            kernel.shm*, fs.mqueue.*): containers share the
 *                                            host's network, where net.* would change the host
 *     ulimits: {name: n | "unlimited" | {soft, hard}}   canonical {soft, hard}
 *     network: host                          the only mode (services connect microservices)
 *     shm_size: size                         /dev/shm, as memory
 *
 * Canonical form: optional collections that are absent or empty (command, env, ports, volumes,
 * expose, connect, resources, placement, config, placement.labels) are omitted; replicas, restart,
 * ports[].protocol and volumes[].readonly are always present; resources.memory is rewritten in
 * its shortest exact spelling and resources.memory_bytes holds the bytes (an input may carry
 * memory_bytes, which must agree with memory); resources.cpus is a real. */
/* clang-format on */
#ifndef FOGMESH_CONSENSUS_SPEC_H
#define FOGMESH_CONSENSUS_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "size.h"

/* Bounds. A spec that a user can grow without limit would grow the Raft log and every node's
 * memory, so each dimension has one. */
#define SPEC_MAX_ENCODED       (256 * 1024) /* whole spec, compact JSON encoding */
#define SPEC_MAX_STRING        4096         /* bytes in any string outside `config` */
#define SPEC_NAME_MAX          63           /* app and microservice names (a DNS label) */
#define SPEC_NODE_NAME_MAX     64           /* placement.node, as meshd's --name */
#define SPEC_MAX_MICROSERVICES 64
#define SPEC_MAX_ARGS          128 /* command entries */
#define SPEC_MAX_ENV           256 /* env entries */
#define SPEC_ENV_NAME_MAX      255
#define SPEC_MAX_PORTS         32 /* per microservice */
#define SPEC_MAX_VOLUMES       32 /* per microservice */
#define SPEC_MAX_SERVICES      16 /* expose and connect entries, each, per microservice */
#define SPEC_MAX_LABELS        32 /* placement.labels entries, as meshd's --label */
#define SPEC_LABEL_KEY_MAX     63
#define SPEC_LABEL_VALUE_MAX   127
#define SPEC_MAX_REPLICAS      100
#define SPEC_MAX_CPUS          1024
#define SPEC_MAX_MEMORY        MESH_SIZE_MAX /* 1Pi (common/size.h) */
#define SPEC_MAX_CONFIG        (64 * 1024)   /* config, compact JSON encoding */
#define SPEC_MAX_CONFIG_DEPTH  32

/* Problems found in one spec: the first SPEC_ERRORS_MAX in order, and how many more there were.
 * Paths look like "microservices[1].ports[0].container"; "" is the spec itself. Paths and
 * messages are truncated to fit and never contain control characters. */
#define SPEC_ERRORS_MAX     32
#define SPEC_ERROR_PATH_MAX 128
#define SPEC_ERROR_MSG_MAX  160

struct spec_error {
    char path[SPEC_ERROR_PATH_MAX];
    char msg[SPEC_ERROR_MSG_MAX];
};

struct spec_errors {
    size_t count; /* entries used in e[] */
    size_t more;  /* problems found beyond SPEC_ERRORS_MAX */
    struct spec_error e[SPEC_ERRORS_MAX];
};

/* Validates the spec `in` (borrowed, not modified). On success returns 0 and stores a new
 * reference to the canonical spec in *ret_canonical (the caller owns it). On failure returns
 * MESH_EINVAL (MESH_ETOOBIG when the spec exceeds SPEC_MAX_ENCODED, MESH_ENOMEM when memory ran
 * out), leaves *ret_canonical untouched, and fills errs (when not NULL; it is reset first) with
 * every problem found. ret_canonical may be NULL to only validate. */
int spec_validate(const json_t *in, json_t **ret_canonical, struct spec_errors *errs);

/* Validates len bytes of JSON text (borrowed), as they come out of the replicated state or off
 * the wire: bytes any node may have written, which every reader must survive. Returns 0 and a
 * new reference to the canonical spec in *ret_canonical (may be NULL), MESH_EMALFORMED (empty
 * or not JSON), MESH_ETOOBIG, MESH_EINVAL or MESH_ENOMEM as spec_validate, with errs (when not
 * NULL) saying why. */
int spec_from_bytes(const void *buf, size_t len, json_t **ret_canonical, struct spec_errors *errs);

/* The canonical spec of a stored application (name and bytes borrowed), checked as
 * spec_from_bytes does and that it names `name`: a new reference, or NULL when the bytes are not
 * a valid spec of that name. Every reader of the replicated state gets its specs through this,
 * since any node may have written them. cache (a JSON object {name: [mod_rev, spec or null]},
 * may be NULL) keeps one verdict per name and mod_rev, so a spec is parsed once per version.
 * *ret_new_invalid (may be NULL) is set when this call found the bytes invalid (errs, may be
 * NULL, says why): the caller reports it once. */
json_t *spec_stored(json_t *cache, const char *name, uint64_t mod_rev, const void *bytes,
                    size_t len, struct spec_errors *errs, bool *ret_new_invalid);

/* The microservice named ms of a canonical spec (borrowed) and its index, or NULL. */
const json_t *spec_microservice(const json_t *canonical, const char *ms, size_t *ret_index);

/* The stored text of a canonical spec: compact JSON with sorted keys (a new string, free()), or
 * NULL when memory ran out. One spelling, so that a PUT of the same spec is "unchanged". */
char *spec_dump(const json_t *canonical);

/* The rule of app, microservice and service names: 1..SPEC_NAME_MAX of a-z, 0-9 and '-',
 * starting with a letter, not ending with '-'. */
bool spec_name_valid(const char *s);

/* Formats errs as one line, "path: message; path: message (and N more)", into buf of len bytes
 * (always terminated when len > 0). Returns the length the whole line needs, as snprintf. */
size_t spec_errors_format(const struct spec_errors *errs, char *buf, size_t len);

/* errs as a new JSON array of {"path": ..., "message": ...}; when problems were left out, a last
 * element {"path": "", "message": "N more problems"}. NULL when memory ran out. */
json_t *spec_errors_to_json(const struct spec_errors *errs);

/* The image microservice ms_index of a canonical spec runs on a node of architecture arch
 * ("amd64", "arm64", "arm"): its `image`, or its `images` entry for arch. NULL when there is
 * none, when placement.arch names another architecture, or when ms_index is out of range. The
 * string is borrowed from canonical. */
const char *spec_images_for_arch(const json_t *canonical, size_t ms_index, const char *arch);

#endif
