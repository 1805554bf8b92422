#include "holds.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "reconcile.h"

struct rt_holds {
    json_t *map; /* "app/ms/replica" -> {"hash", "message", "failures", "retry_at"} */
};

int rt_holds_new(struct rt_holds **ret)
{
    struct rt_holds *h = calloc(1, sizeof *h);
    if (!h || !(h->map = json_object())) {
        free(h);
        return MESH_ENOMEM;
    }
    *ret = h;
    return 0;
}

void rt_holds_free(struct rt_holds *h)
{
    if (!h)
        return;
    json_decref(h->map);
    free(h);
}

uint64_t rt_holds_fail(struct rt_holds *h, const char *key, const char *hash, const char *msg,
                       uint64_t now)
{
    json_t *old = json_object_get(h->map, key);
    unsigned failures = (unsigned)json_integer_value(json_object_get(old, "failures")) + 1;
    uint64_t retry = now + rt_backoff_ms(failures, RT_HOLD_RETRY_MS, RT_HOLD_RETRY_MAX_MS);
    json_object_set_new(h->map, key,
                        json_pack("{s:s, s:s, s:I, s:I}", "hash", hash, "message", msg ? msg : "",
                                  "failures", (json_int_t)failures, "retry_at", (json_int_t)retry));
    return retry;
}

bool rt_holds_check(struct rt_holds *h, const char *key, const char *hash, uint64_t now,
                    const char **ret_msg)
{
    json_t *e = json_object_get(h->map, key);
    if (!e)
        return false;
    const char *held = json_string_value(json_object_get(e, "hash"));
    if (!held || strcmp(held, hash) != 0) {
        json_object_del(h->map, key); /* the spec changed: try at once */
        return false;
    }
    if (now >= (uint64_t)json_integer_value(json_object_get(e, "retry_at")))
        return false; /* due: the failure count stays for the next backoff */
    *ret_msg = json_string_value(json_object_get(e, "message"));
    return true;
}

void rt_holds_clear(struct rt_holds *h, const char *key)
{
    json_object_del(h->map, key);
}

void rt_holds_prune(struct rt_holds *h, const json_t *wanted)
{
    const char *key;
    json_t *v, *tmp;
    json_object_foreach_safe(h->map, tmp, key, v)
    {
        if (!json_object_get(wanted, key))
            json_object_del(h->map, key);
    }
}

unsigned rt_holds_failures(const struct rt_holds *h, const char *key)
{
    return (unsigned)json_integer_value(json_object_get(json_object_get(h->map, key), "failures"));
}
