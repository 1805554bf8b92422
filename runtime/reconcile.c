#include "reconcile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "names.h"
#include "size.h"

void rt_hash(const json_t *ms_spec, const char *image, const char *config_dir,
             char out[static RT_HASH_LEN + 1])
{
    json_t *copy = json_deep_copy(ms_spec);
    json_object_del(copy, "config");
    char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    uint8_t h[RT_HASH_LEN / 2];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    if (text)
        crypto_generichash_update(&st, (const uint8_t *)text, strlen(text));
    crypto_generichash_update(&st, (const uint8_t *)"\n", 1);
    if (image)
        crypto_generichash_update(&st, (const uint8_t *)image, strlen(image));
    crypto_generichash_update(&st, (const uint8_t *)"\n", 1);
    if (config_dir)
        crypto_generichash_update(&st, (const uint8_t *)config_dir, strlen(config_dir));
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(out, RT_HASH_LEN + 1, h, sizeof h);
    free(text);
}

static bool same_replica(const struct rt_desired *d, const struct rt_observed *o)
{
    return d->replica == o->replica && strcmp(d->app, o->app) == 0 && strcmp(d->ms, o->ms) == 0;
}

size_t rt_plan(const struct rt_desired *desired, size_t nd, const struct rt_observed *observed,
               size_t no, struct rt_action *actions, size_t cap)
{
    size_t n = 0;
    /* kept[d]: the observed container kept for desired d (SIZE_MAX: none); owner[o]: the
     * desired replica observed o is kept for (SIZE_MAX: to be removed). */
    size_t *kept = malloc((nd ? nd : 1) * sizeof *kept);
    size_t *owner = malloc((no ? no : 1) * sizeof *owner);
    if (!kept || !owner)
        goto out;
    for (size_t o = 0; o < no; o++)
        owner[o] = SIZE_MAX;
    for (size_t d = 0; d < nd; d++) {
        /* Prefer a running matching container, then any matching one. */
        size_t best = SIZE_MAX;
        for (size_t o = 0; o < no; o++) {
            if (owner[o] != SIZE_MAX || !same_replica(&desired[d], &observed[o]) ||
                strcmp(observed[o].hash, desired[d].hash) != 0)
                continue;
            if (best == SIZE_MAX || (observed[o].running && !observed[best].running))
                best = o;
        }
        kept[d] = best;
        if (best != SIZE_MAX)
            owner[best] = d;
    }
    for (size_t o = 0; o < no && n < cap; o++)
        if (owner[o] == SIZE_MAX)
            actions[n++] =
                (struct rt_action){.op = RT_REMOVE, .desired = SIZE_MAX, .id = observed[o].id};
    for (size_t d = 0; d < nd && n < cap; d++) {
        if (!desired[d].config_stale)
            continue;
        actions[n++] = (struct rt_action){.op = RT_CONFIG, .desired = d};
        size_t o = kept[d];
        if (o != SIZE_MAX && observed[o].running && n < cap)
            actions[n++] = (struct rt_action){.op = RT_SIGNAL, .desired = d, .id = observed[o].id};
    }
    for (size_t o = 0; o < no && n < cap; o++)
        if (owner[o] != SIZE_MAX && !observed[o].running && !desired[owner[o]].held)
            actions[n++] =
                (struct rt_action){.op = RT_START, .desired = owner[o], .id = observed[o].id};
    for (size_t d = 0; d < nd && n < cap; d++)
        if (kept[d] == SIZE_MAX && !desired[d].held)
            actions[n++] = (struct rt_action){.op = RT_CREATE, .desired = d};
out:
    free(kept);
    free(owner);
    return n;
}

char *rt_config_text(const json_t *ms_spec)
{
    const json_t *config = json_object_get(ms_spec, "config");
    json_t *empty = NULL;
    if (!json_is_object(config))
        config = empty = json_object();
    char *text = config ? json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(empty);
    if (!text)
        return NULL;
    size_t len = strlen(text);
    char *out = realloc(text, len + 2);
    if (!out) {
        free(text);
        return NULL;
    }
    out[len] = '\n';
    out[len + 1] = '\0';
    return out;
}

static bool dns_label(const char *s)
{
    return s && mesh_dns_label_valid(s, strlen(s), 63);
}

int rt_config_dir_name(const struct rt_desired *d, char *buf, size_t len)
{
    if (!dns_label(d->app) || !dns_label(d->ms))
        return MESH_EINVAL;
    int w = snprintf(buf, len, "%s.%s.%u", d->app, d->ms, (unsigned)d->replica);
    return w < 0 || (size_t)w >= len ? MESH_EINVAL : 0;
}

int rt_image_ref(const char *image, char *repo, size_t repo_len, char *tag, size_t tag_len)
{
    if (!image || !image[0])
        return MESH_EINVAL;
    const char *at = strchr(image, '@');
    const char *slash = strrchr(image, '/');
    const char *colon = strrchr(image, ':');
    size_t rlen;
    const char *t;
    if (at) {
        rlen = (size_t)(at - image);
        t = at + 1;
    } else if (colon && (!slash || colon > slash)) {
        rlen = (size_t)(colon - image);
        t = colon + 1;
    } else {
        rlen = strlen(image);
        t = "latest";
    }
    if (rlen == 0 || !t[0] || rlen >= repo_len || strlen(t) >= tag_len)
        return MESH_EINVAL;
    memcpy(repo, image, rlen);
    repo[rlen] = '\0';
    memcpy(tag, t, strlen(t) + 1);
    return 0;
}

uint64_t rt_backoff_ms(unsigned failures, uint64_t base_ms, uint64_t cap_ms)
{
    uint64_t wait = base_ms;
    for (unsigned i = 1; i < failures && wait < cap_ms; i++)
        wait *= 2;
    return wait < cap_ms ? wait : cap_ms;
}

void rt_container_name(const char *node, const struct rt_desired *d, char *buf, size_t len)
{
    snprintf(buf, len, "fm-%s-%s-%s-%u", node, d->app, d->ms, (unsigned)d->replica);
}

/* The spec's security settings (consensus/spec.h, already validated) as the Engine API's
 * HostConfig fields, which Docker and Podman both take. no_new_privileges is on unless the
 * spec turns it off: a process in a container should not gain privileges through setuid
 * binaries by default (Docker's --security-opt no-new-privileges, Nomad's default). */
static void security_host_config(const json_t *ms, json_t *host)
{
    static const struct {
        const char *spec, *engine;
    } copied[] = {{"read_only_rootfs", "ReadonlyRootfs"},
                  {"privileged", "Privileged"},
                  {"cap_add", "CapAdd"},
                  {"cap_drop", "CapDrop"},
                  {"runtime", "Runtime"},
                  {"sysctls", "Sysctls"}};
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++) {
        json_t *v = json_object_get(ms, copied[i].spec);
        if (v)
            json_object_set(host, copied[i].engine, v);
    }
    if (!json_is_false(json_object_get(ms, "no_new_privileges")))
        json_object_set_new(host, "SecurityOpt", json_pack("[s]", "no-new-privileges"));
    size_t i;
    json_t *v;
    json_t *devs = json_array();
    json_array_foreach(json_object_get(ms, "devices"), i, v) json_array_append_new(
        devs, json_pack("{s:O, s:O, s:O}", "PathOnHost", json_object_get(v, "host"),
                        "PathInContainer", json_object_get(v, "container"), "CgroupPermissions",
                        json_object_get(v, "permissions")));
    if (json_array_size(devs))
        json_object_set(host, "Devices", devs);
    json_decref(devs);
    json_t *reqs = json_array();
    json_t *cdi = json_object_get(ms, "cdi");
    if (cdi)
        json_array_append_new(reqs, json_pack("{s:s, s:O}", "Driver", "cdi", "DeviceIDs", cdi));
    json_t *gpus = json_object_get(ms, "gpus");
    if (gpus)
        json_array_append_new(
            reqs, json_pack("{s:s, s:I, s:[[s]]}", "Driver", "", "Count",
                            json_is_integer(gpus) ? json_integer_value(gpus) : (json_int_t)-1,
                            "Capabilities", "gpu"));
    if (json_array_size(reqs))
        json_object_set(host, "DeviceRequests", reqs);
    json_decref(reqs);
    json_t *tmpfs = json_object();
    json_array_foreach(json_object_get(ms, "tmpfs"), i, v)
    {
        char opts[96] = "";
        uint64_t bytes;
        const char *size = json_string_value(json_object_get(v, "size"));
        const char *mode = json_string_value(json_object_get(v, "mode")); /* octal */
        if (size && mesh_size_parse(size, &bytes) == 0)
            snprintf(opts, sizeof opts, "size=%llu", (unsigned long long)bytes);
        if (mode)
            snprintf(opts + strlen(opts), sizeof opts - strlen(opts), "%smode=%s",
                     opts[0] ? "," : "", mode);
        json_object_set_new(tmpfs, json_string_value(json_object_get(v, "path")),
                            json_string(opts));
    }
    if (json_object_size(tmpfs))
        json_object_set(host, "Tmpfs", tmpfs);
    json_decref(tmpfs);
    json_t *ulimits = json_array();
    const char *name;
    json_object_foreach(json_object_get(ms, "ulimits"), name, v)
    {
        json_t *soft = json_object_get(v, "soft"), *hard = json_object_get(v, "hard");
        json_array_append_new(
            ulimits, json_pack("{s:s, s:I, s:I}", "Name", name, "Soft",
                               json_is_integer(soft) ? json_integer_value(soft) : -1, "Hard",
                               json_is_integer(hard) ? json_integer_value(hard) : -1));
    }
    if (json_array_size(ulimits))
        json_object_set(host, "Ulimits", ulimits);
    json_decref(ulimits);
    const char *shm = json_string_value(json_object_get(ms, "shm_size"));
    uint64_t shm_bytes;
    if (shm && mesh_size_parse(shm, &shm_bytes) == 0)
        json_object_set_new(host, "ShmSize", json_integer((json_int_t)shm_bytes));
}

json_t *rt_create_body(const char *node, const struct rt_desired *d)
{
    char replica[16];
    snprintf(replica, sizeof replica, "%u", (unsigned)d->replica);
    json_t *labels =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", RT_LABEL_NODE, node, RT_LABEL_APP, d->app,
                  RT_LABEL_MS, d->ms, RT_LABEL_REPLICA, replica, RT_LABEL_HASH, d->hash);
    json_t *env = json_array();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(d->ms_spec, "env"), k, v)
    {
        char line[8192];
        snprintf(line, sizeof line, "%s=%s", k, json_string_value(v) ? json_string_value(v) : "");
        json_array_append_new(env, json_string(line));
    }
    /* Last, so that it wins over a user's variable of the same name. */
    if (d->config_dir)
        json_array_append_new(env,
                              json_string(RT_CONFIG_ENV "=" RT_CONFIG_MOUNT "/" RT_CONFIG_FILE));
    const char *restart = json_string_value(json_object_get(d->ms_spec, "restart"));
    const char *policy = !restart || strcmp(restart, "always") == 0 ? "always"
                         : strcmp(restart, "on-failure") == 0       ? "on-failure"
                                                                    : "no";
    json_t *host =
        json_pack("{s:s, s:{s:s}}", "NetworkMode", "host", "RestartPolicy", "Name", policy);
    json_t *res = json_object_get(d->ms_spec, "resources");
    json_t *mem = json_object_get(res, "memory_bytes");
    if (json_is_integer(mem))
        json_object_set(host, "Memory", mem);
    json_t *cpus = json_object_get(res, "cpus");
    if (json_is_number(cpus))
        json_object_set_new(host, "NanoCpus",
                            json_integer((json_int_t)(json_number_value(cpus) * 1e9)));
    json_t *binds = json_array();
    size_t i;
    json_array_foreach(json_object_get(d->ms_spec, "volumes"), i, v)
    {
        char b[8300];
        snprintf(b, sizeof b, "%s:%s:%s", json_string_value(json_object_get(v, "host")),
                 json_string_value(json_object_get(v, "container")),
                 json_is_true(json_object_get(v, "readonly")) ? "ro" : "rw");
        json_array_append_new(binds, json_string(b));
    }
    if (d->config_dir) {
        char b[8300];
        snprintf(b, sizeof b, "%s:%s:ro", d->config_dir, RT_CONFIG_MOUNT);
        json_array_append_new(binds, json_string(b));
    }
    json_object_set_new(host, "Binds", binds);
    security_host_config(d->ms_spec, host);
    json_t *body = json_pack("{s:s, s:o, s:o, s:o}", "Image", d->image, "Labels", labels, "Env",
                             env, "HostConfig", host);
    json_t *user = json_object_get(d->ms_spec, "user");
    if (json_is_string(user))
        json_object_set(body, "User", user);
    json_t *cmd = json_object_get(d->ms_spec, "command");
    if (json_is_array(cmd) && json_array_size(cmd) > 0)
        json_object_set(body, "Cmd", cmd);
    return body;
}

int rt_observed_from_json(const json_t *entry, struct rt_observed *ret)
{
    json_t *labels = json_object_get(entry, "Labels");
    const char *app = json_string_value(json_object_get(labels, RT_LABEL_APP));
    const char *ms = json_string_value(json_object_get(labels, RT_LABEL_MS));
    const char *rep = json_string_value(json_object_get(labels, RT_LABEL_REPLICA));
    const char *hash = json_string_value(json_object_get(labels, RT_LABEL_HASH));
    const char *id = json_string_value(json_object_get(entry, "Id"));
    const char *state = json_string_value(json_object_get(entry, "State"));
    if (!app || !ms || !rep || !hash || !id)
        return MESH_ENOTFOUND;
    char *end;
    unsigned long r = strtoul(rep, &end, 10);
    if (*end || r > UINT32_MAX)
        return MESH_ENOTFOUND;
    *ret = (struct rt_observed){
        .id = id,
        .app = app,
        .ms = ms,
        .replica = (uint32_t)r,
        .hash = hash,
        .running = state && strcmp(state, "running") == 0,
    };
    return 0;
}
