#include "nodemeta.h"

#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "err.h"
#include "version.h"
#include "wire.h"

const char *nodemeta_arch_name(const char *machine)
{
    static const struct {
        const char *uname, *name;
    } map[] = {
        {"x86_64", "amd64"},    {"aarch64", "arm64"},   {"armv7l", "arm"},
        {"armv6l", "arm"},      {"i686", "386"},        {"i386", "386"},
        {"riscv64", "riscv64"}, {"ppc64le", "ppc64le"}, {"s390x", "s390x"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(machine, map[i].uname) == 0)
            return map[i].name;
    return machine;
}

const char *nodemeta_engine_name(enum nodemeta_engine e)
{
    switch (e) {
    case NODEMETA_ENGINE_UP:
        return "available";
    case NODEMETA_ENGINE_DOWN:
        return "unavailable";
    default:
        return "none";
    }
}

void nodemeta_local(struct node_meta *m, const struct meshd_config *cfg)
{
    struct utsname u;
    memset(m, 0, sizeof *m);
    if (uname(&u) == 0) {
        snprintf(m->arch, sizeof m->arch, "%.15s", nodemeta_arch_name(u.machine));
        snprintf(m->os, sizeof m->os, "%.15s",
                 strcmp(u.sysname, "Linux") == 0 ? "linux" : u.sysname);
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    m->cpus = cpus > 0 ? (uint32_t)cpus : 1;
    m->memory = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    snprintf(m->version, sizeof m->version, "%s", FOGMESH_VERSION);
    m->nlabels = cfg->nlabels;
    memcpy(m->labels, cfg->labels, cfg->nlabels * sizeof cfg->labels[0]);
}

int nodemeta_encode(const struct node_meta *m, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 9);
    msgpack_pack_uint8(&w.pk, NODEMETA_VERSION);
    wire_pack_str(&w.pk, m->arch, strlen(m->arch));
    wire_pack_str(&w.pk, m->os, strlen(m->os));
    msgpack_pack_uint32(&w.pk, m->cpus);
    msgpack_pack_uint64(&w.pk, m->memory);
    wire_pack_str(&w.pk, m->version, strlen(m->version));
    msgpack_pack_array(&w.pk, (uint32_t)m->nlabels);
    for (size_t i = 0; i < m->nlabels; i++) {
        msgpack_pack_array(&w.pk, 2);
        wire_pack_str(&w.pk, m->labels[i].key, strlen(m->labels[i].key));
        wire_pack_str(&w.pk, m->labels[i].value, strlen(m->labels[i].value));
    }
    msgpack_pack_uint8(&w.pk, (uint8_t)m->engine);
    wire_pack_bin(&w.pk, m->ls, m->ls_len);
    return w.overflow ? MESH_ETOOBIG : (int)w.len;
}

/* Printable ASCII only, as the flags that set these strings allow: a NUL inside would cut the
 * string short here and when it is encoded again (two nodes would see different metadata for
 * the same bytes), and other bytes need not be valid UTF-8 for the JSON API. */
static bool printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static int rd_strcpy(struct wire_rd *r, char *dst, size_t cap)
{
    return wire_rd_str_copy(r, dst, cap, printable);
}

int nodemeta_decode(const uint8_t *buf, size_t len, struct node_meta *ret)
{
    struct wire_rd r;
    struct node_meta m;
    uint32_t n, nl;
    uint64_t v, cpus, mem;
    memset(&m, 0, sizeof m);
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &n) < 0 || n < 7 || wire_rd_uint(&r, &v) < 0 || v != NODEMETA_VERSION)
        return MESH_EMALFORMED;
    if (rd_strcpy(&r, m.arch, sizeof m.arch) < 0 || rd_strcpy(&r, m.os, sizeof m.os) < 0 ||
        wire_rd_uint(&r, &cpus) < 0 || cpus > UINT32_MAX || wire_rd_uint(&r, &mem) < 0 ||
        rd_strcpy(&r, m.version, sizeof m.version) < 0 || wire_rd_array(&r, &nl) < 0 ||
        nl > CONFIG_LABEL_MAX)
        return MESH_EMALFORMED;
    m.cpus = (uint32_t)cpus;
    m.memory = mem;
    for (uint32_t i = 0; i < nl; i++) {
        uint32_t two;
        if (wire_rd_array(&r, &two) < 0 || two != 2 ||
            rd_strcpy(&r, m.labels[i].key, sizeof m.labels[i].key) < 0 ||
            rd_strcpy(&r, m.labels[i].value, sizeof m.labels[i].value) < 0)
            return MESH_EMALFORMED;
    }
    m.nlabels = nl;
    /* Element 8 (the engine's state) came later: older nodes do not send it. */
    if (n >= 8) {
        uint64_t engine;
        if (wire_rd_uint(&r, &engine) < 0 || engine > NODEMETA_ENGINE_DOWN)
            return MESH_EMALFORMED;
        m.engine = (enum nodemeta_engine)engine;
    }
    /* Element 9, the neighbours (kept as bytes; netlink/route.h decodes them). */
    if (n >= 9) {
        const uint8_t *ls;
        uint32_t ls_len;
        if (wire_rd_bin(&r, &ls, &ls_len) < 0 || ls_len > sizeof m.ls)
            return MESH_EMALFORMED;
        memcpy(m.ls, ls, ls_len);
        m.ls_len = ls_len;
    }
    /* Trailing elements belong to later versions: skip them. */
    for (uint32_t i = 9; i < n; i++)
        if (wire_rd_skip(&r, 8) < 0)
            return MESH_EMALFORMED;
    *ret = m;
    return 0;
}

json_t *nodemeta_json(const struct node_meta *m)
{
    json_t *labels = json_object();
    for (size_t i = 0; i < m->nlabels; i++)
        json_object_set_new(labels, m->labels[i].key, json_string(m->labels[i].value));
    return json_pack("{s:s, s:s, s:i, s:I, s:s, s:o, s:s}", "arch", m->arch, "os", m->os, "cpus",
                     (int)m->cpus, "memory", (json_int_t)m->memory, "version", m->version, "labels",
                     labels, "engine", nodemeta_engine_name(m->engine));
}
