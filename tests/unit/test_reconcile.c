/* The reconciler's plan: what to create, start and remove so that this node's containers match
 * its placements; the create body; reading our labels back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "reconcile.h"

static json_t *ms_spec(const char *env_value)
{
    return json_pack("{s:s, s:s, s:[s,s], s:{s:s}, s:{s:f, s:I}, s:s, s:{s:i}}", "name", "reader",
                     "image", "localhost/bbox:latest", "command", "/bin/sh", "-c", "env", "MODE",
                     env_value, "resources", "cpus", 0.5, "memory_bytes", (json_int_t)67108864,
                     "restart", "on-failure", "config", "threshold", 1);
}

static struct rt_desired desired_of(const json_t *spec, uint32_t replica)
{
    struct rt_desired d = {.app = "sensors",
                           .ms = "reader",
                           .replica = replica,
                           .ms_spec = spec,
                           .image = "localhost/bbox:latest"};
    rt_hash(spec, d.image, d.hash);
    return d;
}

static void hash_ignores_config_only(void **state)
{
    (void)state;
    json_t *a = ms_spec("fast"), *b = ms_spec("fast"), *c = ms_spec("slow");
    json_object_set_new(json_object_get(b, "config"), "threshold", json_integer(2));
    char ha[RT_HASH_LEN + 1], hb[RT_HASH_LEN + 1], hc[RT_HASH_LEN + 1], hd[RT_HASH_LEN + 1];
    rt_hash(a, "img:1", ha);
    rt_hash(b, "img:1", hb);
    rt_hash(c, "img:1", hc);
    rt_hash(a, "img:2", hd);
    assert_string_equal(ha, hb);     /* a config change alone keeps the container */
    assert_string_not_equal(ha, hc); /* env changes recreate */
    assert_string_not_equal(ha, hd); /* so do images */
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static void plan_create_start_remove(void **state)
{
    (void)state;
    json_t *spec = ms_spec("fast"), *old = ms_spec("old");
    struct rt_desired d[3] = {desired_of(spec, 0), desired_of(spec, 1), desired_of(spec, 2)};
    char stale[RT_HASH_LEN + 1];
    rt_hash(old, "localhost/bbox:latest", stale);
    struct rt_observed o[] = {
        {.id = "a",
         .app = "sensors",
         .ms = "reader",
         .replica = 0,
         .hash = d[0].hash,
         .running = true}, /* keep */
        {.id = "b",
         .app = "sensors",
         .ms = "reader",
         .replica = 1,
         .hash = d[1].hash,
         .running = false},                                                         /* start */
        {.id = "c", .app = "sensors", .ms = "reader", .replica = 2, .hash = stale}, /* replace */
        {.id = "d", .app = "gone", .ms = "x", .replica = 0, .hash = stale},         /* remove */
        {.id = "e",
         .app = "sensors",
         .ms = "reader",
         .replica = 0,
         .hash = d[0].hash,
         .running = true}, /* duplicate of a */
    };
    struct rt_action act[16];
    size_t n = rt_plan(d, 3, o, 5, act, 16);
    assert_int_equal(n, 5);
    assert_int_equal(act[0].op, RT_REMOVE);
    assert_string_equal(act[0].id, "c");
    assert_int_equal(act[1].op, RT_REMOVE);
    assert_string_equal(act[1].id, "d");
    assert_int_equal(act[2].op, RT_REMOVE);
    assert_string_equal(act[2].id, "e");
    assert_int_equal(act[3].op, RT_START);
    assert_string_equal(act[3].id, "b");
    assert_int_equal(act[4].op, RT_CREATE);
    assert_int_equal(act[4].desired, 2);
    /* Converged: nothing to do. */
    struct rt_observed done[] = {o[0], o[1], o[2]};
    done[1].running = true;
    done[2].hash = d[2].hash;
    done[2].running = true;
    assert_int_equal(rt_plan(d, 3, done, 3, act, 16), 0);
    /* The cap holds. */
    assert_int_equal(rt_plan(d, 3, o, 5, act, 2), 2);
    json_decref(spec);
    json_decref(old);
}

static void create_body_and_labels(void **state)
{
    (void)state;
    json_t *spec = ms_spec("fast");
    struct rt_desired d = desired_of(spec, 1);
    json_t *body = rt_create_body("edge-a", &d);
    json_t *host = json_object_get(body, "HostConfig");
    assert_string_equal(json_string_value(json_object_get(host, "NetworkMode")), "host");
    assert_int_equal(json_integer_value(json_object_get(host, "Memory")), 67108864);
    assert_int_equal(json_integer_value(json_object_get(host, "NanoCpus")), 500000000);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(host, "RestartPolicy"), "Name")),
        "on-failure");
    assert_string_equal(json_string_value(json_array_get(json_object_get(body, "Env"), 0)),
                        "MODE=fast");
    char name[128];
    rt_container_name("edge-a", &d, name, sizeof name);
    assert_string_equal(name, "fm-edge-a-sensors-reader-1");

    /* What the engine lists comes back as the same replica. */
    json_t *entry = json_pack("{s:s, s:s, s:O}", "Id", "abc", "State", "running", "Labels",
                              json_object_get(body, "Labels"));
    struct rt_observed o;
    assert_int_equal(rt_observed_from_json(entry, &o), 0);
    assert_string_equal(o.app, "sensors");
    assert_int_equal(o.replica, 1);
    assert_string_equal(o.hash, d.hash);
    assert_true(o.running);
    json_t *foreign = json_pack("{s:s, s:s, s:{}}", "Id", "x", "State", "running", "Labels");
    assert_int_equal(rt_observed_from_json(foreign, &o), MESH_ENOTFOUND);
    json_decref(foreign);
    json_decref(entry);
    json_decref(body);
    json_decref(spec);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hash_ignores_config_only),
        cmocka_unit_test(plan_create_start_remove),
        cmocka_unit_test(create_body_and_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
