#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "names.h"

enum opt_id {
    OPT_NAME,
    OPT_DATA_DIR,
    OPT_BIND,
    OPT_ADVERTISE,
    OPT_KEY_FILE,
    OPT_JOIN,
    OPT_API_SOCKET,
    OPT_LABEL,
    OPT_ENGINE,
    OPT_LOG_LEVEL,
    OPT_GOSSIP_PROFILE,
    OPT_REAP_AFTER,
    OPT_RAFT_VOTERS,
    OPT_RAFT_TIMING,
    OPT_RESCHEDULE_AFTER,
    OPT_LINK_CIPHER,
    OPT_CONFIG,
    OPT_COUNT_
};

static const char *const opt_names[OPT_COUNT_] = {
    [OPT_NAME] = "name",
    [OPT_DATA_DIR] = "data-dir",
    [OPT_BIND] = "bind",
    [OPT_ADVERTISE] = "advertise",
    [OPT_KEY_FILE] = "key-file",
    [OPT_JOIN] = "join",
    [OPT_API_SOCKET] = "api-socket",
    [OPT_LABEL] = "label",
    [OPT_ENGINE] = "engine",
    [OPT_LOG_LEVEL] = "log-level",
    [OPT_CONFIG] = "config",
    [OPT_GOSSIP_PROFILE] = "gossip-profile",
    [OPT_REAP_AFTER] = "reap-after",
    [OPT_RAFT_VOTERS] = "raft-voters",
    [OPT_RAFT_TIMING] = "raft-timing",
    [OPT_RESCHEDULE_AFTER] = "reschedule-after",
    [OPT_LINK_CIPHER] = "link-cipher",
};

const char *config_usage(void)
{
    return "usage: meshd [options]\n"
           "\n"
           "Runs one node of a fogmesh edge compute mesh.\n"
           "\n"
           "  --name NAME            node name, unique in the mesh (default: hostname)\n"
           "  --data-dir DIR         state directory (default: " MESH_DEFAULT_DATA ")\n"
           "  --bind HOST:PORT       mesh port, UDP and TCP (default: 0.0.0.0:7946)\n"
           "  --advertise HOST:PORT  address other nodes use to reach this one\n"
           "                         (default: the bind address, or this host's first\n"
           "                         non-loopback address when binding to 0.0.0.0)\n"
           "  --key-file FILE        mesh key, from `meshctl keygen` (mode 0600)\n"
           "  --join HOST:PORT       a node of the mesh to join (repeatable)\n"
           "  --api-socket PATH      local API socket (default: DATA_DIR/api.sock)\n"
           "  --label KEY=VALUE      node label for placement (repeatable)\n"
           "  --engine URL           container engine, e.g. unix:///run/podman/podman.sock\n"
           "  --log-level LEVEL      debug, info, warn or error (default: info)\n"
           "  --gossip-profile P     failure detection timing: lan (default) or wan\n"
           "  --reap-after DURATION  forget dead and left members after this long\n"
           "                         (default: 24h; e.g. 90s, 30m)\n"
           "  --raft-voters N        Raft voters the leader keeps (default: 5; odd)\n"
           "  --raft-timing T        election timing: lan (default), wan, or a multiplier\n"
           "  --reschedule-after D   move work off a node dead this long (default: 10s)\n"
           "  --link-cipher C        links' transport cipher: auto (default: AES-256-GCM when\n"
           "                         both ends have AES-NI, else ChaCha20-Poly1305) or\n"
           "                         chacha20-poly1305\n"
           "  --config FILE          config file: `key = value` lines with the keys above;\n"
           "                         flags win over the file\n"
           "  --help, --version\n";
}

bool config_name_valid(const char *name)
{
    return mesh_node_name_valid(name, strlen(name));
}

static bool label_part_valid(const char *s, size_t max)
{
    return mesh_label_part_valid(s, strlen(s), max);
}

int config_duration_parse(const char *s, uint64_t *ret_ms)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {"", 1000}};
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return MESH_EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return MESH_EINVAL;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].ms)
                return MESH_EINVAL;
            *ret_ms = v * units[i].ms;
            return 0;
        }
    }
    return MESH_EINVAL;
}

static int copy_str(char *dst, size_t cap, const char *src, const char *what, struct mesh_err *err)
{
    size_t len = strlen(src);
    if (len == 0)
        return mesh_errf(err, MESH_EINVAL, "--%s: empty value", what);
    if (len >= cap)
        return mesh_errf(err, MESH_EINVAL, "--%s: longer than %zu characters", what, cap - 1);
    memcpy(dst, src, len + 1);
    return 0;
}

/* Which options were set from the command line, so the config file does not override them. */
struct seen {
    bool flag[OPT_COUNT_];
};

static int apply(struct meshd_config *cfg, enum opt_id id, const char *val, bool from_flag,
                 struct seen *seen, struct mesh_err *err)
{
    const char *opt = opt_names[id];
    if (!from_flag && seen->flag[id] && id != OPT_LABEL)
        return 0; /* flags win */

    switch (id) {
    case OPT_NAME:
        if (!config_name_valid(val))
            return mesh_errf(err, MESH_EINVAL,
                             "--name %s: use 1 to %d letters, digits, '.', '_' or '-', starting "
                             "with a letter or digit",
                             val, CONFIG_NAME_MAX);
        strcpy(cfg->name, val);
        break;
    case OPT_DATA_DIR:
        return copy_str(cfg->data_dir, sizeof cfg->data_dir, val, opt, err);
    case OPT_KEY_FILE:
        return copy_str(cfg->key_file, sizeof cfg->key_file, val, opt, err);
    case OPT_API_SOCKET:
        return copy_str(cfg->api_socket, sizeof cfg->api_socket, val, opt, err);
    case OPT_CONFIG:
        return copy_str(cfg->config_file, sizeof cfg->config_file, val, opt, err);
    case OPT_ENGINE:
        if (strncmp(val, "unix://", 7) != 0 && val[0] != '/')
            return mesh_errf(err, MESH_EINVAL,
                             "--engine %s: give a unix socket as unix:///path/to.sock", val);
        return copy_str(cfg->engine, sizeof cfg->engine, val, opt, err);
    case OPT_BIND:
    case OPT_ADVERTISE: {
        struct mesh_addr a;
        if (mesh_addr_parse(val, MESH_DEFAULT_PORT, &a) < 0)
            return mesh_errf(err, MESH_EINVAL,
                             "--%s %s: expected a numeric IP address with an optional :PORT", opt,
                             val);
        if (id == OPT_ADVERTISE && (mesh_addr_is_any(&a) || a.port == 0))
            return mesh_errf(err, MESH_EINVAL,
                             "--advertise %s: must be an address and port others can reach", val);
        if (id == OPT_BIND)
            cfg->bind = a;
        else
            cfg->advertise = a;
        break;
    }
    case OPT_JOIN: {
        struct mesh_addr a;
        if (mesh_addr_parse(val, MESH_DEFAULT_PORT, &a) < 0 || a.port == 0 || mesh_addr_is_any(&a))
            return mesh_errf(err, MESH_EINVAL,
                             "--join %s: expected a node's numeric IP address and optional :PORT",
                             val);
        if (from_flag && !seen->flag[OPT_JOIN])
            cfg->njoin = 0; /* the command line's --join list replaces the file's */
        if (cfg->njoin == CONFIG_JOIN_MAX)
            return mesh_errf(err, MESH_EINVAL, "--join: at most %d", CONFIG_JOIN_MAX);
        cfg->join[cfg->njoin++] = a;
        break;
    }
    case OPT_LABEL: {
        const char *eq = strchr(val, '=');
        char key[CONFIG_LABEL_KEYMAX + 2];
        size_t klen = eq ? (size_t)(eq - val) : 0;
        if (!eq || klen == 0 || klen > CONFIG_LABEL_KEYMAX)
            return mesh_errf(err, MESH_EINVAL, "--label %s: expected KEY=VALUE", val);
        memcpy(key, val, klen);
        key[klen] = '\0';
        if (!label_part_valid(key, CONFIG_LABEL_KEYMAX) ||
            !label_part_valid(eq + 1, CONFIG_LABEL_VALMAX))
            return mesh_errf(err, MESH_EINVAL,
                             "--label %s: keys and values are 1 to %d/%d of letters, digits, "
                             "'.', '_', '-' or '/'",
                             val, CONFIG_LABEL_KEYMAX, CONFIG_LABEL_VALMAX);
        size_t i;
        for (i = 0; i < cfg->nlabels; i++)
            if (strcmp(cfg->labels[i].key, key) == 0)
                break;
        if (i < cfg->nlabels && !from_flag && seen->flag[OPT_LABEL])
            return 0; /* a flag already set this key */
        if (i == cfg->nlabels) {
            if (cfg->nlabels == CONFIG_LABEL_MAX)
                return mesh_errf(err, MESH_EINVAL, "--label: at most %d", CONFIG_LABEL_MAX);
            cfg->nlabels++;
        }
        strcpy(cfg->labels[i].key, key);
        strcpy(cfg->labels[i].value, eq + 1);
        break;
    }
    case OPT_LOG_LEVEL:
        if (log_level_parse(val, &cfg->log_level) < 0)
            return mesh_errf(err, MESH_EINVAL,
                             "--log-level %s: expected debug, info, warn or error", val);
        break;
    case OPT_GOSSIP_PROFILE:
        if (gossip_profile_parse(val, &cfg->gossip_profile) < 0)
            return mesh_errf(err, MESH_EINVAL, "--gossip-profile %s: expected lan or wan", val);
        break;
    case OPT_REAP_AFTER:
        if (config_duration_parse(val, &cfg->reap_after_ms) < 0 || cfg->reap_after_ms < 1000)
            return mesh_errf(err, MESH_EINVAL,
                             "--reap-after %s: expected a duration of at least 1s, like 90s, "
                             "30m or 24h",
                             val);
        break;
    case OPT_RESCHEDULE_AFTER:
        if (config_duration_parse(val, &cfg->reschedule_after_ms) < 0 ||
            cfg->reschedule_after_ms < 1000)
            return mesh_errf(err, MESH_EINVAL,
                             "--reschedule-after %s: expected a duration of at least 1s", val);
        break;
    case OPT_LINK_CIPHER:
        if (strcmp(val, "auto") == 0)
            cfg->link_ciphers = LINK_CIPHER_AUTO;
        else if (strcmp(val, "chacha20-poly1305") == 0)
            cfg->link_ciphers = LINK_CIPHER_CHACHAPOLY;
        else
            return mesh_errf(err, MESH_EINVAL,
                             "--link-cipher %s: expected auto or chacha20-poly1305", val);
        break;
    case OPT_RAFT_VOTERS: {
        char *end;
        unsigned long v = strtoul(val, &end, 10);
        if (*end || !isdigit((unsigned char)val[0]) || v < 1 || v > 15)
            return mesh_errf(err, MESH_EINVAL, "--raft-voters %s: expected 1 to 15 (odd)", val);
        cfg->raft_voters = (unsigned)v;
        break;
    }
    case OPT_RAFT_TIMING: {
        char *end;
        double v;
        if (strcmp(val, "lan") == 0) {
            v = 1;
        } else if (strcmp(val, "wan") == 0) {
            v = 5;
        } else {
            v = strtod(val, &end);
            if (*end || !(v >= 0.2 && v <= 50))
                return mesh_errf(err, MESH_EINVAL,
                                 "--raft-timing %s: expected lan, wan or a multiplier from 0.2 "
                                 "to 50",
                                 val);
        }
        cfg->raft_timing = v;
        break;
    }
    case OPT_COUNT_:
        break;
    }
    return 0;
}

static int lookup(const char *name, size_t len)
{
    for (int i = 0; i < OPT_COUNT_; i++)
        if (strlen(opt_names[i]) == len && strncmp(opt_names[i], name, len) == 0)
            return i;
    return -1;
}

static int parse_file(struct meshd_config *cfg, struct seen *seen, struct mesh_err *err)
{
    FILE *f = fopen(cfg->config_file, "re");
    if (!f)
        return mesh_errf(err, -errno, "--config %s: %s", cfg->config_file, strerror(errno));
    char line[2048];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = mesh_errf(err, MESH_EINVAL, "%s:%d: line too long", cfg->config_file, lineno);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        char *end = p + strlen(p);
        while (end > p && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (!*p)
            continue;
        size_t klen = strcspn(p, " \t=");
        char *v = p + klen;
        while (isspace((unsigned char)*v))
            v++;
        if (*v == '=')
            v++;
        while (isspace((unsigned char)*v))
            v++;
        int id = lookup(p, klen);
        if (id < 0 || id == OPT_CONFIG) {
            rc = mesh_errf(err, MESH_EINVAL, "%s:%d: unknown key '%.*s'", cfg->config_file, lineno,
                           (int)klen, p);
            break;
        }
        if (!*v) {
            rc = mesh_errf(err, MESH_EINVAL, "%s:%d: %s has no value", cfg->config_file, lineno,
                           opt_names[id]);
            break;
        }
        rc = apply(cfg, (enum opt_id)id, v, false, seen, err);
        if (rc < 0) {
            mesh_err_wrapf(err, "%s:%d", cfg->config_file, lineno);
            break;
        }
    }
    fclose(f);
    return rc;
}

/* The first up, non-loopback IPv4 address of this host, else 127.0.0.1. */
static void guess_advertise(struct mesh_addr *a, uint16_t port)
{
    struct ifaddrs *ifs = NULL, *it;
    mesh_addr_parse("127.0.0.1", port, a);
    if (getifaddrs(&ifs) != 0)
        return;
    for (it = ifs; it; it = it->ifa_next) {
        if (!it->ifa_addr || it->ifa_addr->sa_family != AF_INET)
            continue;
        if (!(it->ifa_flags & IFF_UP) || (it->ifa_flags & IFF_LOOPBACK))
            continue;
        if (mesh_addr_from_sockaddr(it->ifa_addr, a) == 0) {
            a->port = port;
            break;
        }
    }
    freeifaddrs(ifs);
}

int config_parse(int argc, char **argv, struct meshd_config *cfg, enum config_action *ret_action,
                 struct mesh_err *err)
{
    struct seen seen = {0};
    int rc;

    memset(cfg, 0, sizeof *cfg);
    cfg->log_level = LOG_INFO;
    cfg->gossip_profile = GOSSIP_PROFILE_LAN;
    cfg->reap_after_ms = MESH_DEFAULT_REAP;
    cfg->raft_voters = 5;
    cfg->raft_timing = 1;
    cfg->reschedule_after_ms = 10000;
    mesh_addr_parse("0.0.0.0", MESH_DEFAULT_PORT, &cfg->bind);

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            *ret_action = CONFIG_HELP;
            return 0;
        }
        if (strcmp(arg, "--version") == 0) {
            *ret_action = CONFIG_VERSION;
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0)
            return mesh_errf(err, MESH_EINVAL, "unexpected argument '%s' (see meshd --help)", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int id = lookup(name, nlen);
        if (id < 0)
            return mesh_errf(err, MESH_EINVAL, "unknown flag '--%.*s' (see meshd --help)",
                             (int)nlen, name);
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            return mesh_errf(err, MESH_EINVAL, "--%s needs a value", opt_names[id]);
        }
        rc = apply(cfg, (enum opt_id)id, val, true, &seen, err);
        if (rc < 0)
            return rc;
        seen.flag[id] = true;
    }

    if (cfg->config_file[0]) {
        rc = parse_file(cfg, &seen, err);
        if (rc < 0)
            return rc;
    }

    if (!cfg->name[0]) {
        char host[256] = "";
        if (gethostname(host, sizeof host - 1) != 0 || !config_name_valid(host))
            return mesh_errf(err, MESH_EINVAL,
                             "the hostname '%s' is not a valid node name; give --name", host);
        strcpy(cfg->name, host);
    }
    if (!cfg->data_dir[0])
        strcpy(cfg->data_dir, MESH_DEFAULT_DATA);
    if (!cfg->api_socket[0]) {
        if ((size_t)snprintf(cfg->api_socket, sizeof cfg->api_socket, "%s/api.sock",
                             cfg->data_dir) >= sizeof cfg->api_socket)
            return mesh_errf(err, MESH_EINVAL, "--data-dir: path too long");
    }
    if (!cfg->advertise.family) {
        if (mesh_addr_is_any(&cfg->bind))
            guess_advertise(&cfg->advertise, cfg->bind.port);
        else
            cfg->advertise = cfg->bind;
    }
    *ret_action = CONFIG_RUN;
    return 0;
}
