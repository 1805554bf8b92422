#include "observed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rt_obs {
    const struct rt_io *io;
    json_t *map;  /* the current status map */
    json_t *info; /* container id -> {"seen", "busy", "at", "restarts", "started", "finished"} */
    unsigned inspects;
};

struct inspect_ctx {
    struct rt_call call;
    struct rt_obs *o;
    char id[];
};

int rt_obs_new(const struct rt_io *io, struct rt_obs **ret)
{
    struct rt_obs *o = calloc(1, sizeof *o);
    if (!o || !(o->map = json_object()) || !(o->info = json_object())) {
        rt_obs_free(o);
        return MESH_ENOMEM;
    }
    o->io = io;
    *ret = o;
    return 0;
}

void rt_obs_free(struct rt_obs *o)
{
    if (!o)
        return;
    json_decref(o->map);
    json_decref(o->info);
    free(o);
}

const json_t *rt_obs_map(const struct rt_obs *o)
{
    return o->map;
}

void rt_obs_put(const struct rt_obs *o, json_t *into, const char *key, const char *state,
                const char *msg, const char *since, int64_t restarts, const char *container)
{
    char now[32];
    if (!since) {
        const json_t *old = json_object_get(o->map, key);
        const char *old_state = json_string_value(json_object_get(old, "state"));
        since = old_state && strcmp(old_state, state) == 0
                    ? json_string_value(json_object_get(old, "since"))
                    : NULL;
        if (!since) {
            o->io->wallclock(o->io->ud, now);
            since = now;
        }
    }
    char shortid[13] = "";
    if (container)
        snprintf(shortid, sizeof shortid, "%s", container);
    json_object_set_new(into, key,
                        json_pack("{s:s, s:s, s:s, s:I, s:s}", "state", state, "message",
                                  msg ? msg : "", "since", since, "restarts", (json_int_t)restarts,
                                  "container", shortid));
}

void rt_obs_set(struct rt_obs *o, const char *key, const char *state, const char *msg)
{
    rt_obs_put(o, o->map, key, state, msg, NULL, 0, NULL);
}

void rt_obs_replace(struct rt_obs *o, json_t *next)
{
    json_decref(o->map);
    o->map = next;
}

static void on_inspect(struct rt_call *call, const struct rt_result *res)
{
    struct inspect_ctx *c = call->data;
    struct rt_obs *o = c->o;
    o->inspects--;
    json_t *info = json_object_get(o->info, c->id);
    if (info && res->status == 0 && json_is_object(res->json)) {
        json_t *state = json_object_get(res->json, "State");
        json_t *rc = json_object_get(res->json, "RestartCount");
        json_object_set_new(info, "restarts", json_integer(json_integer_value(rc)));
        json_object_set(info, "started", json_object_get(state, "StartedAt"));
        json_object_set(info, "finished", json_object_get(state, "FinishedAt"));
        json_object_set_new(info, "busy", json_false());
        json_object_set_new(info, "at", json_integer((json_int_t)o->io->now_ms(o->io->ud)));
    } else if (info) {
        json_object_del(o->info, c->id); /* asked again on the next pass */
    }
    free(c);
}

void rt_obs_listed(struct rt_obs *o, const char *id, const char *state)
{
    json_t *info = json_object_get(o->info, id);
    uint64_t now = o->io->now_ms(o->io->ud);
    if (info) {
        const char *seen = json_string_value(json_object_get(info, "seen"));
        uint64_t at = (uint64_t)json_integer_value(json_object_get(info, "at"));
        if (json_is_true(json_object_get(info, "busy")) ||
            (seen && state && strcmp(seen, state) == 0 && now - at < RT_INFO_REFRESH_MS))
            return;
    }
    if (o->inspects >= RT_INSPECTS_MAX)
        return;
    size_t len = strlen(id);
    struct inspect_ctx *c = malloc(sizeof *c + len + 1);
    if (!c)
        return;
    c->call = (struct rt_call){.done = on_inspect, .data = c};
    c->o = o;
    memcpy(c->id, id, len + 1);
    if (o->io->inspect(o->io->ud, id, &c->call) < 0) {
        free(c);
        return;
    }
    o->inspects++;
    if (!info) {
        info = json_pack("{s:I}", "restarts", (json_int_t)0);
        json_object_set_new(o->info, id, info);
    }
    json_object_set_new(info, "seen", json_string(state ? state : ""));
    json_object_set_new(info, "busy", json_true());
}

void rt_obs_forget_unlisted(struct rt_obs *o, const json_t *listed)
{
    const char *id;
    json_t *v, *tmp;
    json_object_foreach_safe(o->info, tmp, id, v)
    {
        if (!json_object_get(listed, id) && !json_is_true(json_object_get(v, "busy")))
            json_object_del(o->info, id);
    }
}

void rt_obs_container(const struct rt_obs *o, const char *id, bool running, const char **ret_since,
                      int64_t *ret_restarts)
{
    json_t *info = json_object_get(o->info, id);
    const char *since = json_string_value(json_object_get(info, running ? "started" : "finished"));
    if (since && strncmp(since, "0001-", 5) == 0)
        since = NULL; /* the engine's zero time: not known */
    *ret_since = since;
    *ret_restarts = json_integer_value(json_object_get(info, "restarts"));
}

unsigned rt_obs_inspects(const struct rt_obs *o)
{
    return o->inspects;
}
