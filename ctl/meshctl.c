/* meshctl: the command line for a fogmesh node. Talks to the local meshd over its API socket.
 * Exit codes: 0 on success, 1 when meshd reports an error or cannot be reached, 2 on usage
 * errors. Errors go to stderr in one line that says what to do. */
#include <errno.h>
#include <getopt.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "client.h"
#include "yaml.h"
#include "meshkey.h"
#include "version.h"

#define DEFAULT_SOCKET "/var/lib/fogmesh/api.sock"

enum output { OUT_TABLE, OUT_JSON, OUT_YAML };

struct ctl {
    struct client client;
    enum output out;
};

static void usage(FILE *f)
{
    fputs("usage: meshctl [--socket PATH] [-o table|json] COMMAND [ARGS]\n"
          "\n"
          "Commands:\n"
          "  status        this node and the mesh at a glance\n"
          "  version       meshctl's and meshd's versions\n"
          "  members       the nodes of the mesh and their status\n"
          "  leave         this node leaves the mesh gracefully; meshd exits\n"
          "  keys list     the mesh keys in use (fingerprints) and how many nodes hold each\n"
          "  keys install KEY [--exclude NODE]... | keys use KEY | keys remove KEY\n"
          "                rotate the mesh key on every node without a restart\n"
          "  keys fingerprint KEY  the fingerprint `keys list` shows for KEY\n"
          "  keygen        print a new random mesh key (base64) for meshd --key-file\n"
          "  deploy -f FILE       create or update the application in FILE (YAML or JSON;\n"
          "                       - reads standard input)\n"
          "  get apps             the applications: name, version, microservices\n"
          "  get microservices    every replica: app, name, node, state, message\n"
          "  get nodes            nodes with resources, engine state, microservice count\n"
          "  cordon|uncordon|drain NODE\n"
          "                       stop placing work on NODE / allow it again / move it off\n"
          "  describe app NAME    one application's spec (-o yaml or -o json deploys again)\n"
          "  describe microservice APP/MS\n"
          "                       a microservice's spec and the state of each replica\n"
          "  move APP/MS[/REPLICA] NODE\n"
          "                       run a replica (default: the first not on NODE) on NODE\n"
          "  get services         every service: its endpoints and listeners\n"
          "  routes               this node's next hop, hops and cost to every node\n"
          "  service expose NAME --target HOST:PORT [--node NODE]\n"
          "                       a host endpoint (not a container) provides service NAME\n"
          "  service connect NAME --listen HOST:PORT [--node NODE]\n"
          "                       meshd on NODE listens there and carries connections to NAME\n"
          "  service unexpose NAME [--node NODE]\n"
          "  service disconnect NAME --listen HOST:PORT [--node NODE]\n"
          "  logs APP/MS[/REPLICA] [-f|--follow] [--tail N]\n"
          "                       a replica's output, from whichever node runs it\n"
          "  delete app NAME      delete an application\n"
          "  raft peers           the Raft configuration: voters, standbys, the leader\n"
          "  raft recover [--force]\n"
          "                       when the voters are lost for good: make this node the only\n"
          "                       voter of a new configuration (the others are added back)\n"
          "\n"
          "Options:\n"
          "  --socket PATH    meshd's API socket (default: $MESH_SOCKET, else " DEFAULT_SOCKET ")\n"
          "  -o, --output F   table (default), json or yaml\n"
          "  -h, --help       this text\n",
          f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "meshctl: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see meshctl --help)\n");
    va_end(ap);
    return 2;
}

static int parse_output(const char *s, enum output *ret)
{
    if (strcmp(s, "json") == 0)
        *ret = OUT_JSON;
    else if (strcmp(s, "yaml") == 0)
        *ret = OUT_YAML;
    else if (strcmp(s, "table") == 0)
        *ret = OUT_TABLE;
    else
        return -1;
    return 0;
}

static void print_json(const json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (s)
        puts(s);
    free(s);
}

/* -o json or -o yaml: the machine-readable forms of a reply. */
static void print_value(const struct ctl *ctl, const json_t *v)
{
    char *text = NULL;
    if (ctl->out == OUT_YAML && json_to_yaml(v, &text) == 0) {
        fputs(text, stdout);
        free(text);
        return;
    }
    print_json(v);
}

/* Performs a call and turns every failure into a one-line message and exit code 1. On success
 * *ret_body holds the JSON reply. */
static int call(struct ctl *ctl, const char *method, const char *path, const json_t *body,
                json_t **ret_body)
{
    struct mesh_err err = {0};
    long status = 0;
    json_t *reply = NULL;
    if (client_call(&ctl->client, method, path, body, &status, &reply, &err) < 0) {
        fprintf(stderr, "meshctl: %s\n", err.msg);
        return 1;
    }
    if (status < 200 || status > 299) {
        const char *msg = json_string_value(json_object_get(reply, "error"));
        fprintf(stderr, "meshctl: meshd answered %ld: %s\n", status, msg ? msg : "(no message)");
        json_decref(reply);
        return 1;
    }
    if (!reply) {
        fprintf(stderr, "meshctl: meshd sent a reply that is not JSON\n");
        return 1;
    }
    *ret_body = reply;
    return 0;
}

static const char *jstr(const json_t *obj, const char *path)
{
    /* path is "a.b": walk objects. */
    char key[64];
    const json_t *v = obj;
    while (v && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof key)
            return "";
        memcpy(key, path, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        path += n + (path[n] == '.');
    }
    return json_is_string(v) ? json_string_value(v) : "";
}

static void format_duration(json_int_t ms, char *buf, size_t len)
{
    long long s = ms / 1000;
    if (s < 60)
        snprintf(buf, len, "%llds", s);
    else if (s < 3600)
        snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, "%lldh%02lldm", s / 3600, (s / 60) % 60);
    else
        snprintf(buf, len, "%lldd%02lldh", s / 86400, (s / 3600) % 24);
}

static int cmd_status(struct ctl *ctl, int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("status takes no arguments, got '%s'", argv[1]);
    json_t *st = NULL;
    int rc = call(ctl, "GET", FOGMESH_API_PREFIX "/status", NULL, &st);
    if (rc)
        return rc;
    if (ctl->out == OUT_JSON) {
        print_json(st);
    } else {
        char up[32];
        format_duration(json_integer_value(json_object_get(st, "uptime_ms")), up, sizeof up);
        printf("Node:     %s\n", jstr(st, "node.name"));
        printf("ID:       %s\n", jstr(st, "node.id"));
        printf("Address:  %s\n", jstr(st, "node.addr"));
        printf("Arch:     %s\n", jstr(st, "node.arch"));
        printf("Version:  %s\n", jstr(st, "version"));
        printf("Uptime:   %s\n", up);
        json_t *m = json_object_get(st, "members");
        json_t *g = json_object_get(st, "gossip");
        printf("Members:  %lld alive, %lld suspect, %lld dead, %lld left\n",
               (long long)json_integer_value(json_object_get(m, "alive")),
               (long long)json_integer_value(json_object_get(m, "suspect")),
               (long long)json_integer_value(json_object_get(m, "dead")),
               (long long)json_integer_value(json_object_get(m, "left")));
        printf("Dropped:  %lld bad auth, %lld malformed, %lld replayed\n",
               (long long)json_integer_value(json_object_get(g, "dropped_bad_auth")),
               (long long)json_integer_value(json_object_get(g, "dropped_malformed")),
               (long long)json_integer_value(json_object_get(g, "dropped_replayed")));
        json_t *raft = json_object_get(st, "raft");
        if (json_is_object(raft))
            printf("Raft:     %s, leader %s, term %lld, %zu voters, %zu standbys\n",
                   jstr(raft, "state"),
                   json_is_string(json_object_get(raft, "leader")) ? jstr(raft, "leader")
                                                                   : "(none)",
                   (long long)json_integer_value(json_object_get(raft, "term")),
                   json_array_size(json_object_get(raft, "voters")),
                   json_array_size(json_object_get(raft, "standbys")));
        const char *je = jstr(st, "join_error");
        if (*je)
            printf("Join:     %s\n", je);
    }
    json_decref(st);
    return 0;
}

static int cmd_version(struct ctl *ctl, int argc, char **argv)
{
    if (argc > 1)
        return usage_error("version takes no arguments, got '%s'", argv[1]);
    json_t *st = NULL;
    struct mesh_err err = {0};
    long status = 0;
    /* The daemon's version is a bonus: meshctl's own is printed even when meshd is down. */
    const char *daemon = NULL;
    if (client_call(&ctl->client, "GET", FOGMESH_API_PREFIX "/status", NULL, &status, &st, &err) ==
            0 &&
        status == 200)
        daemon = jstr(st, "version");
    if (ctl->out == OUT_JSON) {
        json_t *v = json_pack("{s:s}", "meshctl", FOGMESH_VERSION);
        json_object_set_new(v, "meshd", daemon ? json_string(daemon) : json_null());
        print_json(v);
        json_decref(v);
    } else {
        printf("meshctl %s\n", FOGMESH_VERSION);
        printf("meshd   %s\n", daemon ? daemon : "(not reachable)");
    }
    json_decref(st);
    return 0;
}

static int cmd_keygen(struct ctl *ctl, int argc, char **argv)
{
    (void)ctl;
    if (argc > 1)
        return usage_error("keygen takes no arguments, got '%s'", argv[1]);
    uint8_t key[MESH_KEY_LEN];
    char b64[MESH_KEY_B64_LEN + 1];
    mesh_key_generate(key);
    mesh_key_encode(key, b64);
    puts(b64);
    sodium_memzero(key, sizeof key);
    sodium_memzero(b64, sizeof b64);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    return strcmp(jstr(x, "name"), jstr(y, "name"));
}

static void labels_text(const json_t *labels, char *buf, size_t len)
{
    const char *k;
    json_t *v;
    size_t off = 0;
    buf[0] = '\0';
    json_object_foreach((json_t *)labels, k, v)
    {
        int n = snprintf(buf + off, len - off, "%s%s=%s", off ? "," : "", k,
                         json_string_value(v) ? json_string_value(v) : "");
        if (n < 0 || (size_t)n >= len - off)
            break;
        off += (size_t)n;
    }
    if (!buf[0])
        snprintf(buf, len, "-");
}

static int cmd_members(struct ctl *ctl, int argc, char **argv)
{
    if (argc > 1)
        return usage_error("members takes no arguments, got '%s'", argv[1]);
    json_t *body = NULL;
    int rc = call(ctl, "GET", FOGMESH_API_PREFIX "/members", NULL, &body);
    if (rc)
        return rc;
    json_t *arr = json_object_get(body, "members");
    size_t n = json_array_size(arr);
    json_t **sorted = calloc(n ? n : 1, sizeof *sorted);
    for (size_t i = 0; i < n; i++)
        sorted[i] = json_array_get(arr, i);
    qsort(sorted, n, sizeof *sorted, by_name);
    if (ctl->out == OUT_JSON) {
        json_t *out = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append(out, sorted[i]);
        print_json(out);
        json_decref(out);
    } else {
        printf("%-20s %-22s %-8s %-6s %-16s %s\n", "NAME", "ADDRESS", "STATUS", "ARCH", "ID",
               "LABELS");
        for (size_t i = 0; i < n; i++) {
            char labels[512];
            labels_text(json_object_get(sorted[i], "labels"), labels, sizeof labels);
            printf("%-20s %-22s %-8s %-6s %-16.16s %s\n", jstr(sorted[i], "name"),
                   jstr(sorted[i], "addr"), jstr(sorted[i], "status"), jstr(sorted[i], "arch"),
                   jstr(sorted[i], "id"), labels);
        }
    }
    free(sorted);
    json_decref(body);
    return 0;
}

static int cmd_leave(struct ctl *ctl, int argc, char **argv)
{
    if (argc > 1)
        return usage_error("leave takes no arguments, got '%s'", argv[1]);
    json_t *body = NULL;
    int rc = call(ctl, "POST", FOGMESH_API_PREFIX "/leave", NULL, &body);
    if (rc)
        return rc;
    if (ctl->out == OUT_JSON)
        print_json(body);
    else
        printf("leaving the mesh; meshd exits once the others have been told\n");
    json_decref(body);
    return 0;
}

static int cmd_keys(struct ctl *ctl, int argc, char **argv)
{
    if (argc < 2)
        return usage_error("keys needs a subcommand: list, install, use, remove or fingerprint%s",
                           "");
    const char *sub = argv[1];
    json_t *body = NULL;
    int rc;
    if (strcmp(sub, "fingerprint") == 0) {
        /* Local: which fingerprint of `keys list` a key is, without asking meshd. */
        uint8_t key[MESH_KEY_LEN], fp[MESH_KEY_FP_LEN];
        char hex[MESH_KEY_FP_STR_LEN + 1];
        struct mesh_err err = {0};
        if (argc != 3)
            return usage_error("keys fingerprint needs one KEY (base64)%s", "");
        if (mesh_key_decode(argv[2], key, &err) < 0) {
            fprintf(stderr, "meshctl: %s\n", err.msg);
            return 1;
        }
        mesh_key_fingerprint(key, fp);
        sodium_memzero(key, sizeof key);
        mesh_key_fp_format(fp, hex);
        printf("%s\n", hex);
        return 0;
    }
    if (strcmp(sub, "list") == 0) {
        if (argc > 2)
            return usage_error("keys list takes no arguments, got '%s'", argv[2]);
        rc = call(ctl, "GET", FOGMESH_API_PREFIX "/keys", NULL, &body);
    } else if (strcmp(sub, "install") == 0 || strcmp(sub, "use") == 0 ||
               strcmp(sub, "remove") == 0) {
        const char *key = NULL;
        json_t *exclude = json_array();
        for (int i = 2; i < argc; i++) {
            if (strcmp(sub, "install") == 0 && strcmp(argv[i], "--exclude") == 0 && i + 1 < argc) {
                json_array_append_new(exclude, json_string(argv[++i]));
            } else if (!key && argv[i][0] != '-') {
                key = argv[i];
            } else {
                json_decref(exclude);
                return usage_error("keys %s needs one KEY (base64, from meshctl keygen)%s", sub,
                                   strcmp(sub, "install") == 0 ? " and any --exclude NODE" : "");
            }
        }
        if (!key) {
            json_decref(exclude);
            return usage_error("keys %s needs one KEY (base64, from meshctl keygen)", sub);
        }
        json_t *req = json_pack("{s:s, s:s}", "op", sub, "key", key);
        if (json_array_size(exclude))
            json_object_set(req, "exclude", exclude);
        json_decref(exclude);
        rc = call(ctl, "POST", FOGMESH_API_PREFIX "/keys", req, &body);
        json_decref(req);
    } else {
        return usage_error(
            "keys: unknown subcommand '%s' (list, install, use, remove, fingerprint)", sub);
    }
    if (rc)
        return rc;
    json_t *failed = json_object_get(body, "failed");
    if (ctl->out == OUT_JSON) {
        print_json(body);
    } else {
        long long nodes = json_integer_value(json_object_get(body, "nodes"));
        long long ok = json_integer_value(json_object_get(body, "ok"));
        if (strcmp(sub, "list") == 0) {
            printf("%-16s %-8s %-10s %s\n", "FINGERPRINT", "NODES", "PRIMARY ON", "HERE");
            const char *k;
            json_t *v;
            const char *here = json_string_value(json_object_get(body, "primary_here"));
            json_object_foreach(json_object_get(body, "keys"), k, v)
            {
                bool in_ring = json_is_true(json_object_get(v, "here"));
                printf("%-16s %lld/%-6lld %-10lld %s\n", k,
                       (long long)json_integer_value(json_object_get(v, "nodes")), nodes,
                       (long long)json_integer_value(json_object_get(v, "primary")),
                       here && strcmp(here, k) == 0 ? "primary"
                       : in_ring                    ? "yes"
                                                    : "no");
            }
        } else {
            printf("%s: done on %lld of %lld nodes\n", sub, ok, nodes);
            size_t i;
            json_t *x;
            json_array_foreach(json_object_get(body, "excluded"), i, x)
            {
                printf("%s: not sent to %s (excluded)\n", sub, json_string_value(x));
            }
        }
    }
    int code = json_object_size(failed) ? 1 : 0;
    const char *name;
    json_t *msg;
    json_object_foreach(failed, name, msg)
    {
        fprintf(stderr, "meshctl: keys %s failed on %s: %s\n", sub, name, json_string_value(msg));
    }
    json_decref(body);
    return code;
}

/* ---- applications ------------------------------------------------------------------------ */

static int read_file(const char *path, char **ret_text, size_t *ret_len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
    if (!f) {
        fprintf(stderr, "meshctl: cannot open %s: %s\n", path, strerror(errno));
        return 2;
    }
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap + 1);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            if (cap > YAML_MAX_INPUT)
                break;
            char *b = realloc(buf, cap * 2 + 1);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!buf || bad) {
        free(buf);
        fprintf(stderr, "meshctl: cannot read %s\n", path);
        return 2;
    }
    buf[len] = '\0';
    *ret_text = buf;
    *ret_len = len;
    return 0;
}

static int cmd_deploy(struct ctl *ctl, int argc, char **argv)
{
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--file") == 0) && i + 1 < argc)
            file = argv[++i];
        else
            return usage_error("deploy: unexpected '%s' (usage: meshctl deploy -f FILE)", argv[i]);
    }
    if (!file)
        return usage_error("deploy needs -f FILE (YAML or JSON; - for standard input)%s", "");
    char *text;
    size_t len;
    int rc = read_file(file, &text, &len);
    if (rc)
        return rc;
    json_t *spec = NULL;
    struct mesh_err err = {0};
    rc = yaml_to_json(text, len, &spec, &err);
    free(text);
    if (rc < 0) {
        fprintf(stderr, "meshctl: %s:%s\n", strcmp(file, "-") ? file : "<stdin>", err.msg);
        return 2;
    }
    char name[128];
    const char *sname = json_string_value(json_object_get(spec, "name"));
    snprintf(name, sizeof name, "%s", sname ? sname : "");
    if (!json_is_object(spec) || !name[0]) {
        fprintf(stderr, "meshctl: %s: name: required (the application's name)\n", file);
        json_decref(spec);
        return 2;
    }
    char path[256];
    snprintf(path, sizeof path, FOGMESH_API_PREFIX "/apps/%.64s", name);
    json_t *body = NULL;
    rc = call(ctl, "PUT", path, spec, &body);
    json_decref(spec);
    if (rc)
        return rc;
    if (ctl->out != OUT_TABLE) {
        print_value(ctl, body);
    } else {
        const char *result = jstr(body, "result");
        long long version = json_integer_value(json_object_get(body, "version"));
        if (strcmp(result, "updated") == 0)
            printf("app %s updated to version %lld\n", name, version);
        else
            printf("app %s %s (version %lld)\n", name, result, version);
    }
    json_decref(body);
    return 0;
}

static int need_kind(int argc, char **argv, const char *verb, const char *kind, int nargs)
{
    /* "app" and "apps" are both accepted, as kubectl accepts singular and plural. */
    bool ok = argc >= 2 && (strcmp(argv[1], "app") == 0 || strcmp(argv[1], "apps") == 0);
    if (!ok)
        return usage_error("%s: expected '%s %s%s'", verb, verb, kind, nargs ? " NAME" : "");
    if (argc != 2 + nargs)
        return usage_error("%s %s: expected %s", verb, kind, nargs ? "one NAME" : "no more");
    return 0;
}

static bool is_ms_kind(const char *k)
{
    return strcmp(k, "microservice") == 0 || strcmp(k, "microservices") == 0 ||
           strcmp(k, "ms") == 0;
}

static int get_microservices(struct ctl *ctl)
{
    json_t *body = NULL;
    int rc = call(ctl, "GET", FOGMESH_API_PREFIX "/microservices", NULL, &body);
    if (rc)
        return rc;
    json_t *arr = json_object_get(body, "microservices");
    if (ctl->out != OUT_TABLE) {
        print_value(ctl, arr);
    } else {
        printf("%-20s %-20s %-7s %-16s %-10s %s\n", "APP", "NAME", "REPLICA", "NODE", "STATE",
               "MESSAGE");
        size_t i;
        json_t *m;
        json_array_foreach(arr, i, m)
        {
            printf("%-20s %-20s %-7lld %-16s %-10s %s\n", jstr(m, "app"), jstr(m, "name"),
                   (long long)json_integer_value(json_object_get(m, "replica")),
                   json_is_string(json_object_get(m, "node")) ? jstr(m, "node") : "-",
                   jstr(m, "state"), jstr(m, "message"));
        }
    }
    json_decref(body);
    return 0;
}

static int get_nodes(struct ctl *ctl)
{
    json_t *body = NULL;
    int rc = call(ctl, "GET", FOGMESH_API_PREFIX "/nodes", NULL, &body);
    if (rc)
        return rc;
    json_t *arr = json_object_get(body, "nodes");
    if (ctl->out != OUT_TABLE) {
        print_value(ctl, arr);
    } else {
        printf("%-20s %-8s %-6s %-5s %-9s %-12s %-9s %s\n", "NAME", "STATUS", "ARCH", "CPUS",
               "MEMORY", "ENGINE", "SCHEDULE", "MICROSERVICES");
        size_t i;
        json_t *nd;
        json_array_foreach(arr, i, nd)
        {
            double gib = (double)json_integer_value(json_object_get(nd, "memory")) / 1073741824.0;
            bool cordoned = json_is_true(json_object_get(nd, "cordoned"));
            bool draining = json_is_true(json_object_get(nd, "draining"));
            printf("%-20s %-8s %-6s %-5lld %-9.1f %-12s %-9s %lld\n", jstr(nd, "name"),
                   jstr(nd, "status"), jstr(nd, "arch"),
                   (long long)json_integer_value(json_object_get(nd, "cpus")), gib,
                   jstr(nd, "engine"),
                   draining   ? "draining"
                   : cordoned ? "cordoned"
                              : "yes",
                   (long long)json_integer_value(json_object_get(nd, "microservices")));
        }
    }
    json_decref(body);
    return 0;
}

static int cmd_node_op(struct ctl *ctl, int argc, char **argv)
{
    if (argc != 2)
        return usage_error("%s needs one NODE", argv[0]);
    char path[256];
    snprintf(path, sizeof path, FOGMESH_API_PREFIX "/nodes/%.64s/%s", argv[1], argv[0]);
    json_t *body = NULL;
    int rc = call(ctl, "POST", path, NULL, &body);
    if (rc)
        return rc;
    if (ctl->out != OUT_TABLE)
        print_value(ctl, body);
    else
        printf("node %s %s\n", argv[1],
               strcmp(argv[0], "cordon") == 0  ? "cordoned: no new work is placed on it"
               : strcmp(argv[0], "drain") == 0 ? "draining: its work moves elsewhere"
                                               : "uncordoned");
    json_decref(body);
    return 0;
}

static int get_services(struct ctl *ctl);

static int cmd_get(struct ctl *ctl, int argc, char **argv)
{
    if (argc == 2 && is_ms_kind(argv[1]))
        return get_microservices(ctl);
    if (argc == 2 && strcmp(argv[1], "nodes") == 0)
        return get_nodes(ctl);
    if (argc == 2 && (strcmp(argv[1], "services") == 0 || strcmp(argv[1], "svc") == 0))
        return get_services(ctl);
    int rc = need_kind(argc, argv, "get", "apps", 0);
    if (rc)
        return rc;
    json_t *body = NULL;
    if ((rc = call(ctl, "GET", FOGMESH_API_PREFIX "/apps", NULL, &body)))
        return rc;
    json_t *apps = json_object_get(body, "apps");
    if (ctl->out != OUT_TABLE) {
        print_value(ctl, apps);
    } else {
        printf("%-32s %-8s %s\n", "NAME", "VERSION", "MICROSERVICES");
        size_t i;
        json_t *a;
        json_array_foreach(apps, i, a)
        {
            printf("%-32s %-8lld %lld\n", jstr(a, "name"),
                   (long long)json_integer_value(json_object_get(a, "version")),
                   (long long)json_integer_value(json_object_get(a, "microservices")));
        }
        if (json_is_true(json_object_get(body, "stale")))
            fprintf(stderr, "meshctl: this node has no Raft leader: the list may be stale\n");
    }
    json_decref(body);
    return 0;
}

/* `describe microservice APP/MS`: the microservice's spec and where each replica runs. */
static int describe_microservice(struct ctl *ctl, const char *ref)
{
    char path[512];
    if (!strchr(ref, '/'))
        return usage_error("describe microservice: expected APP/MICROSERVICE, got '%s'", ref);
    snprintf(path, sizeof path, FOGMESH_API_PREFIX "/microservices/%.200s", ref);
    json_t *body = NULL;
    int rc = call(ctl, "GET", path, NULL, &body);
    if (rc)
        return rc;
    if (ctl->out != OUT_TABLE) {
        print_value(ctl, body);
        json_decref(body);
        return 0;
    }
    printf("# microservice %s/%s (app version %lld)\n", jstr(body, "app"), jstr(body, "name"),
           (long long)json_integer_value(json_object_get(body, "app_version")));
    struct ctl as_yaml = *ctl;
    as_yaml.out = OUT_YAML;
    print_value(&as_yaml, json_object_get(body, "spec"));
    printf("\n%-7s %-16s %-10s %-8s %-24s %s\n", "REPLICA", "NODE", "STATE", "RESTARTS", "SINCE",
           "MESSAGE");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(body, "replicas"), i, r)
    {
        json_t *restarts = json_object_get(r, "restarts");
        char rbuf[24] = "-";
        if (json_is_integer(restarts))
            snprintf(rbuf, sizeof rbuf, "%lld", (long long)json_integer_value(restarts));
        printf("%-7lld %-16s %-10s %-8s %-24s %s\n",
               (long long)json_integer_value(json_object_get(r, "replica")),
               json_is_string(json_object_get(r, "node")) ? jstr(r, "node") : "-", jstr(r, "state"),
               rbuf, *jstr(r, "since") ? jstr(r, "since") : "-", jstr(r, "message"));
    }
    json_decref(body);
    return 0;
}

static int cmd_describe(struct ctl *ctl, int argc, char **argv)
{
    if (argc >= 2 && is_ms_kind(argv[1])) {
        if (argc != 3)
            return usage_error("describe microservice: expected one APP/MICROSERVICE%s", "");
        return describe_microservice(ctl, argv[2]);
    }
    int rc = need_kind(argc, argv, "describe", "app", 1);
    if (rc)
        return rc;
    char path[256];
    snprintf(path, sizeof path, FOGMESH_API_PREFIX "/apps/%.64s", argv[2]);
    json_t *body = NULL;
    if ((rc = call(ctl, "GET", path, NULL, &body)))
        return rc;
    json_t *spec = json_object_get(body, "spec");
    if (ctl->out == OUT_TABLE) {
        /* Readable by default: the spec in YAML under a short header. */
        printf("# app %s, version %lld\n", argv[2],
               (long long)json_integer_value(json_object_get(body, "version")));
        struct ctl as_yaml = *ctl;
        as_yaml.out = OUT_YAML;
        print_value(&as_yaml, spec);
    } else {
        print_value(ctl, spec); /* deploys again unchanged */
    }
    json_decref(body);
    return 0;
}

static int cmd_delete(struct ctl *ctl, int argc, char **argv)
{
    int rc = need_kind(argc, argv, "delete", "app", 1);
    if (rc)
        return rc;
    char path[256];
    snprintf(path, sizeof path, FOGMESH_API_PREFIX "/apps/%.64s", argv[2]);
    json_t *body = NULL;
    if ((rc = call(ctl, "DELETE", path, NULL, &body)))
        return rc;
    if (ctl->out != OUT_TABLE)
        print_value(ctl, body);
    else
        printf("app %s deleted\n", argv[2]);
    json_decref(body);
    return 0;
}

static int cmd_raft(struct ctl *ctl, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "recover") == 0) {
        bool force = argc == 3 && strcmp(argv[2], "--force") == 0;
        if (argc > 3 || (argc == 3 && !force))
            return usage_error("raft recover: only --force may follow%s", "");
        json_t *body = NULL;
        int rc = call(ctl, "POST",
                      force ? FOGMESH_API_PREFIX "/raft/recover?force=true"
                            : FOGMESH_API_PREFIX "/raft/recover",
                      NULL, &body);
        if (rc)
            return rc;
        if (ctl->out != OUT_TABLE)
            print_value(ctl, body);
        else
            printf("raft recovered: this node is now the only voter; the others rejoin as it "
                   "adds them\n");
        json_decref(body);
        return 0;
    }
    if (argc != 2 || strcmp(argv[1], "peers") != 0)
        return usage_error("raft: expected 'raft peers' or 'raft recover [--force]'%s", "");
    json_t *body = NULL;
    int rc = call(ctl, "GET", FOGMESH_API_PREFIX "/raft", NULL, &body);
    if (rc)
        return rc;
    if (ctl->out != OUT_TABLE) {
        print_value(ctl, body);
    } else {
        printf("%-20s %-22s %-8s %-8s %s\n", "NAME", "ADDRESS", "ROLE", "STATUS", "LEADER");
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(body, "servers"), i, s)
        {
            printf("%-20s %-22s %-8s %-8s %s\n", jstr(s, "name"), jstr(s, "address"),
                   jstr(s, "role"), jstr(s, "status"),
                   json_is_true(json_object_get(s, "leader")) ? "*" : "");
        }
        printf("term %lld, commit index %lld\n",
               (long long)json_integer_value(json_object_get(body, "term")),
               (long long)json_integer_value(json_object_get(body, "commit_index")));
    }
    json_decref(body);
    return 0;
}

/* `logs APP/MS[/REPLICA] [--follow] [--tail N]`: streamed to stdout as meshd relays it from the
 * node that runs the replica. */
static int cmd_logs(struct ctl *ctl, int argc, char **argv)
{
    const char *ref = NULL;
    bool follow = false;
    long tail = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0) {
            follow = true;
        } else if (strcmp(argv[i], "--tail") == 0 || strcmp(argv[i], "-n") == 0) {
            char *end;
            if (i + 1 >= argc)
                return usage_error("logs: --tail needs a number of lines%s", "");
            errno = 0;
            tail = strtol(argv[++i], &end, 10);
            if (*end || errno || tail < 0 || tail > 1000000)
                return usage_error("logs: --tail: '%s' is not a number of lines", argv[i]);
        } else if (!ref && argv[i][0] != '-') {
            ref = argv[i];
        } else {
            return usage_error("logs: unexpected '%s'", argv[i]);
        }
    }
    if (!ref || !strchr(ref, '/'))
        return usage_error("logs: expected 'logs APP/MICROSERVICE[/REPLICA] [--follow] "
                           "[--tail N]'%s",
                           "");
    char path[512], tailq[32] = "";
    if (tail >= 0)
        snprintf(tailq, sizeof tailq, "&tail=%ld", tail);
    snprintf(path, sizeof path, FOGMESH_API_PREFIX "/logs/%.200s?follow=%s%s", ref,
             follow ? "true" : "false", tailq);
    struct client c = ctl->client;
    c.timeout_ms = -1; /* a long log takes as long as it takes; -f until interrupted */
    struct mesh_err err = {0};
    long status = 0;
    json_t *reply = NULL;
    if (client_stream(&c, path, stdout, &status, &reply, &err) < 0) {
        fprintf(stderr, "meshctl: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (status < 200 || status > 299) {
        const char *msg = json_string_value(json_object_get(reply, "error"));
        fprintf(stderr, "meshctl: meshd answered %ld: %s\n", status, msg ? msg : "(no message)");
        rc = 1;
    }
    json_decref(reply);
    return rc;
}

/* `service expose|unexpose|connect|disconnect NAME [--target|--listen HOST:PORT] [--node N]`. */
static int cmd_service(struct ctl *ctl, int argc, char **argv)
{
    static const char usage_line[] =
        "service: expected 'service expose NAME --target HOST:PORT [--node NODE]', "
        "'service connect NAME --listen HOST:PORT [--node NODE]', 'service unexpose NAME "
        "[--node NODE]' or 'service disconnect NAME --listen HOST:PORT [--node NODE]'";
    if (argc < 3)
        return usage_error("%s", usage_line);
    const char *verb = argv[1], *name = argv[2], *target = NULL, *listen = NULL, *node = NULL;
    bool expose = strcmp(verb, "expose") == 0, unexpose = strcmp(verb, "unexpose") == 0;
    bool connect = strcmp(verb, "connect") == 0, disconnect = strcmp(verb, "disconnect") == 0;
    if (!expose && !unexpose && !connect && !disconnect)
        return usage_error("%s", usage_line);
    for (int i = 3; i < argc; i++) {
        const char **slot = strcmp(argv[i], "--target") == 0   ? &target
                            : strcmp(argv[i], "--listen") == 0 ? &listen
                            : strcmp(argv[i], "--node") == 0   ? &node
                                                               : NULL;
        if (!slot || i + 1 >= argc)
            return usage_error("service %s: unexpected '%s'", verb, argv[i]);
        *slot = argv[++i];
    }
    if ((expose && (!target || listen)) || (unexpose && (target || listen)) ||
        ((connect || disconnect) && (!listen || target)))
        return usage_error("%s", usage_line);
    char path[512];
    int rc;
    json_t *body = NULL;
    const char *op = expose || unexpose ? "expose" : "connect";
    if (expose || connect) {
        snprintf(path, sizeof path, FOGMESH_API_PREFIX "/services/%.64s/%s", name, op);
        json_t *req = json_pack("{s:s}", expose ? "target" : "listen", expose ? target : listen);
        if (node)
            json_object_set_new(req, "node", json_string(node));
        rc = call(ctl, "PUT", path, req, &body);
        json_decref(req);
    } else {
        char *enode = curl_easy_escape(NULL, node ? node : "", 0);
        char *elisten = curl_easy_escape(NULL, listen ? listen : "", 0);
        snprintf(path, sizeof path, FOGMESH_API_PREFIX "/services/%.64s/%s?node=%.100s%s%.100s",
                 name, op, enode ? enode : "", listen ? "&listen=" : "",
                 listen && elisten ? elisten : "");
        curl_free(enode);
        curl_free(elisten);
        rc = call(ctl, "DELETE", path, NULL, &body);
    }
    if (rc)
        return rc;
    if (ctl->out != OUT_TABLE)
        print_value(ctl, body);
    else if (expose)
        printf("service %s: %s exposed%s%s (%s)\n", name, target, node ? " on " : "",
               node ? node : "", jstr(body, "result"));
    else if (connect)
        printf("service %s: listening on %s%s%s (%s)\n", name, listen, node ? " on " : "",
               node ? node : "", jstr(body, "result"));
    else
        printf("service %s: %s removed\n", name, unexpose ? "host endpoint" : "listener");
    json_decref(body);
    return 0;
}

static int get_services(struct ctl *ctl)
{
    json_t *body = NULL;
    int rc = call(ctl, "GET", FOGMESH_API_PREFIX "/services", NULL, &body);
    if (rc)
        return rc;
    json_t *arr = json_object_get(body, "services");
    if (ctl->out != OUT_TABLE) {
        print_value(ctl, arr);
        json_decref(body);
        return 0;
    }
    printf("%-24s %-10s %-16s %-22s %s\n", "SERVICE", "ROLE", "NODE", "ADDRESS", "FROM");
    size_t i, j;
    json_t *s, *e;
    json_array_foreach(arr, i, s)
    {
        const char *roles[] = {"endpoints", "listeners"};
        for (size_t r = 0; r < 2; r++) {
            json_array_foreach(json_object_get(s, roles[r]), j, e)
            {
                char from[160] = "host";
                json_t *m = json_object_get(e, "microservice");
                if (m)
                    snprintf(from, sizeof from, "%s/%s/%lld", jstr(m, "app"), jstr(m, "name"),
                             (long long)json_integer_value(json_object_get(m, "replica")));
                printf("%-24s %-10s %-16s %-22s %s\n", jstr(s, "name"),
                       r == 0 ? "endpoint" : "listener", jstr(e, "node"),
                       r == 0 ? jstr(e, "target") : jstr(e, "listen"), from);
            }
        }
    }
    json_decref(body);
    return 0;
}

/* `routes`: this node's route to every other node, and its direct neighbours. */
static int cmd_routes(struct ctl *ctl, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return usage_error("routes takes no arguments%s", "");
    json_t *body = NULL;
    int rc = call(ctl, "GET", FOGMESH_API_PREFIX "/routes", NULL, &body);
    if (rc)
        return rc;
    if (ctl->out != OUT_TABLE) {
        print_value(ctl, body);
        json_decref(body);
        return 0;
    }
    printf("%-20s %-20s %-5s %s\n", "NODE", "NEXT_HOP", "HOPS", "COST_MS");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(body, "routes"), i, r)
    {
        if (!json_is_true(json_object_get(r, "reachable"))) {
            printf("%-20s %-20s %-5s %s\n", jstr(r, "node"), "unreachable", "-", "-");
            continue;
        }
        printf("%-20s %-20s %-5lld %.3f\n", jstr(r, "node"), jstr(r, "next_hop"),
               (long long)json_integer_value(json_object_get(r, "hops")),
               json_number_value(json_object_get(r, "cost_ms")));
    }
    json_decref(body);
    return 0;
}

/* `move APP/MS[/REPLICA] NODE`. */
static int cmd_move(struct ctl *ctl, int argc, char **argv)
{
    if (argc != 3 || !strchr(argv[1], '/'))
        return usage_error("move: expected 'move APP/MICROSERVICE[/REPLICA] NODE'%s", "");
    char path[512];
    snprintf(path, sizeof path, FOGMESH_API_PREFIX "/microservices/%.200s/move", argv[1]);
    json_t *req = json_pack("{s:s}", "node", argv[2]);
    json_t *body = NULL;
    int rc = call(ctl, "POST", path, req, &body);
    json_decref(req);
    if (rc)
        return rc;
    if (ctl->out != OUT_TABLE)
        print_value(ctl, body);
    else
        printf("%s moved to %s\n", jstr(body, "name"), argv[2]);
    json_decref(body);
    return 0;
}

static const struct command {
    const char *name;
    int (*fn)(struct ctl *, int, char **);
} commands[] = {
    {"status", cmd_status},    {"version", cmd_version}, {"keygen", cmd_keygen},
    {"members", cmd_members},  {"leave", cmd_leave},     {"keys", cmd_keys},
    {"deploy", cmd_deploy},    {"get", cmd_get},         {"describe", cmd_describe},
    {"delete", cmd_delete},    {"raft", cmd_raft},       {"cordon", cmd_node_op},
    {"uncordon", cmd_node_op}, {"drain", cmd_node_op},   {"move", cmd_move},
    {"logs", cmd_logs},        {"service", cmd_service}, {"routes", cmd_routes},
};

int main(int argc, char **argv)
{
    struct ctl ctl = {.out = OUT_TABLE};
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *env = getenv("MESH_SOCKET");
    ctl.client.socket_path = env && *env ? env : DEFAULT_SOCKET;

    /* '+': stop at the first non-option, the command; its own flags follow it. */
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+o:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            ctl.client.socket_path = optarg;
            break;
        case 'o':
            if (parse_output(optarg, &ctl.out) < 0)
                return usage_error("-o %s: expected table, json or yaml", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "meshctl: libsodium failed to initialise\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* Output and socket options may also follow the command (`meshctl members -o json`). */
    int cargc = 0;
    char **cargv = argv + optind;
    for (int i = optind; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int is_out = 0, is_sock = 0;
        if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0)
            is_out = 1;
        else if (strcmp(a, "--socket") == 0)
            is_sock = 1;
        else if (strncmp(a, "--output=", 9) == 0)
            is_out = 1, val = a + 9;
        else if (strncmp(a, "--socket=", 9) == 0)
            is_sock = 1, val = a + 9;
        if (!is_out && !is_sock) {
            cargv[cargc++] = argv[i];
            continue;
        }
        if (!val) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", a);
            val = argv[++i];
        }
        if (is_sock)
            ctl.client.socket_path = val;
        else if (parse_output(val, &ctl.out) < 0)
            return usage_error("-o %s: expected table, json or yaml", val);
    }
    int rc = -1;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(cargv[0], commands[i].name) == 0) {
            rc = commands[i].fn(&ctl, cargc, cargv);
            break;
        }
    }
    if (rc < 0)
        rc = usage_error("unknown command '%s'", argv[optind]);
    curl_global_cleanup();
    return rc;
}
