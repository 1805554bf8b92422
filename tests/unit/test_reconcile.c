/* The reconciler's plan: what to create, start and remove so that this node's containers match
 * its placements; the create body; reading our labels back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
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
    rt_hash(spec, d.image, NULL, d.hash);
    return d;
}

static void hash_ignores_config_only(void **state)
{
    (void)state;
    json_t *a = ms_spec("fast"), *b = ms_spec("fast"), *c = ms_spec("slow");
    json_object_set_new(json_object_get(b, "config"), "threshold", json_integer(2));
    char ha[RT_HASH_LEN + 1], hb[RT_HASH_LEN + 1], hc[RT_HASH_LEN + 1], hd[RT_HASH_LEN + 1];
    rt_hash(a, "img:1", NULL, ha);
    rt_hash(b, "img:1", NULL, hb);
    rt_hash(c, "img:1", NULL, hc);
    rt_hash(a, "img:2", NULL, hd);
    assert_string_equal(ha, hb);     /* a config change alone keeps the container */
    assert_string_not_equal(ha, hc); /* env changes recreate */
    assert_string_not_equal(ha, hd); /* so do images */
    char he[RT_HASH_LEN + 1];
    rt_hash(a, "img:1", "/var/lib/fogmesh/containers/x.y.0", he);
    assert_string_not_equal(ha, he); /* and the config mount (a container without it is redone) */
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
    rt_hash(old, "localhost/bbox:latest", NULL, stale);
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

/* A config change alone: the file is rewritten and the running container signalled, nothing
 * recreated; a new replica gets its file before its container is created. */
/* The security settings of a canonical spec become the Engine API's fields; no_new_privileges
 * is on unless the spec turns it off. */
static void create_body_security(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *spec =
        json_loads("{\"name\":\"reader\",\"image\":\"i\",\"user\":\"1000:1000\","
                   "\"read_only_rootfs\":true,\"cap_add\":[\"NET_ADMIN\"],\"cap_drop\":[\"ALL\"],"
                   "\"devices\":[{\"host\":\"/dev/null\",\"container\":\"/dev/x\","
                   "\"permissions\":\"rw\"}],\"cdi\":[\"nvidia.com/gpu=all\"],\"gpus\":2,"
                   "\"runtime\":\"crun\",\"tmpfs\":[{\"path\":\"/s\",\"size\":\"64Mi\","
                   "\"mode\":\"1777\"},{\"path\":\"/t\"}],\"sysctls\":{\"kernel.shmmax\":\"1024\"},"
                   "\"ulimits\":{\"nofile\":{\"soft\":10,\"hard\":20},"
                   "\"core\":{\"soft\":\"unlimited\",\"hard\":\"unlimited\"}},"
                   "\"shm_size\":\"1Mi\"}",
                   0, &jerr);
    assert_non_null(spec);
    struct rt_desired d = desired_of(spec, 0);
    json_t *body = rt_create_body("edge-a", &d);
    json_t *host = json_object_get(body, "HostConfig");
    assert_string_equal(json_string_value(json_object_get(body, "User")), "1000:1000");
    assert_true(json_is_true(json_object_get(host, "ReadonlyRootfs")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(host, "CapAdd"), 0)),
                        "NET_ADMIN");
    assert_string_equal(json_string_value(json_array_get(json_object_get(host, "CapDrop"), 0)),
                        "ALL");
    assert_string_equal(json_string_value(json_array_get(json_object_get(host, "SecurityOpt"), 0)),
                        "no-new-privileges");
    json_t *dev = json_array_get(json_object_get(host, "Devices"), 0);
    assert_string_equal(json_string_value(json_object_get(dev, "PathOnHost")), "/dev/null");
    assert_string_equal(json_string_value(json_object_get(dev, "PathInContainer")), "/dev/x");
    assert_string_equal(json_string_value(json_object_get(dev, "CgroupPermissions")), "rw");
    json_t *reqs = json_object_get(host, "DeviceRequests");
    assert_int_equal(json_array_size(reqs), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(reqs, 0), "Driver")),
                        "cdi");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(reqs, 1), "Count")), 2);
    assert_string_equal(json_string_value(json_object_get(host, "Runtime")), "crun");
    json_t *tmpfs = json_object_get(host, "Tmpfs");
    assert_string_equal(json_string_value(json_object_get(tmpfs, "/s")), "size=67108864,mode=1777");
    assert_string_equal(json_string_value(json_object_get(tmpfs, "/t")), "");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(host, "Sysctls"), "kernel.shmmax")),
        "1024");
    json_t *ul = json_object_get(host, "Ulimits");
    assert_int_equal(json_array_size(ul), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *u = json_array_get(ul, i);
        const char *name = json_string_value(json_object_get(u, "Name"));
        json_int_t soft = json_integer_value(json_object_get(u, "Soft"));
        json_int_t hard = json_integer_value(json_object_get(u, "Hard"));
        if (strcmp(name, "nofile") == 0) {
            assert_int_equal(soft, 10);
            assert_int_equal(hard, 20);
        } else {
            assert_string_equal(name, "core");
            assert_int_equal(soft, -1);
            assert_int_equal(hard, -1);
        }
    }
    assert_int_equal(json_integer_value(json_object_get(host, "ShmSize")), 1048576);
    json_decref(body);

    /* Turned off, and a spec without any of these gets none but the default. */
    json_object_set_new(spec, "no_new_privileges", json_false());
    body = rt_create_body("edge-a", &d);
    assert_null(json_object_get(json_object_get(body, "HostConfig"), "SecurityOpt"));
    json_decref(body);
    json_decref(spec);
    spec = ms_spec("x");
    d = desired_of(spec, 0);
    body = rt_create_body("edge-a", &d);
    host = json_object_get(body, "HostConfig");
    assert_null(json_object_get(body, "User"));
    const char *absent[] = {"ReadonlyRootfs", "CapAdd",  "Devices", "DeviceRequests", "Tmpfs",
                            "Ulimits",        "ShmSize", "Sysctls", "Runtime",        "Privileged"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
        assert_null(json_object_get(host, absent[i]));
    assert_non_null(json_object_get(host, "SecurityOpt"));
    json_decref(body);
    json_decref(spec);
}

static void plan_config_before_create_and_signal(void **state)
{
    (void)state;
    json_t *spec = ms_spec("fast");
    struct rt_desired d[2] = {desired_of(spec, 0), desired_of(spec, 1)};
    d[0].config_stale = true;
    d[1].config_stale = true;
    struct rt_observed o[] = {
        {.id = "a",
         .app = "sensors",
         .ms = "reader",
         .replica = 0,
         .hash = d[0].hash,
         .running = true},
    };
    struct rt_action act[16];
    size_t n = rt_plan(d, 2, o, 1, act, 16);
    assert_int_equal(n, 4);
    assert_int_equal(act[0].op, RT_CONFIG);
    assert_int_equal(act[0].desired, 0);
    assert_int_equal(act[1].op, RT_SIGNAL);
    assert_int_equal(act[1].desired, 0);
    assert_string_equal(act[1].id, "a");
    assert_int_equal(act[2].op, RT_CONFIG);
    assert_int_equal(act[2].desired, 1);
    assert_int_equal(act[3].op, RT_CREATE);
    assert_int_equal(act[3].desired, 1);
    /* A stopped container is not signalled: its config is in place before the start. */
    o[0].running = false;
    d[1].config_stale = false;
    n = rt_plan(d, 2, o, 1, act, 16);
    assert_int_equal(n, 3);
    assert_int_equal(act[0].op, RT_CONFIG);
    assert_int_equal(act[1].op, RT_START);
    assert_int_equal(act[1].desired, 0);
    assert_int_equal(act[2].op, RT_CREATE);
    /* Held replicas (pull in progress, backoff) are neither started nor created. */
    d[0].config_stale = false;
    d[0].held = d[1].held = true;
    assert_int_equal(rt_plan(d, 2, o, 1, act, 16), 0);
    json_decref(spec);
}

static void config_text_and_dir(void **state)
{
    (void)state;
    json_t *spec = ms_spec("fast");
    json_object_set_new(json_object_get(spec, "config"), "alpha", json_string("x"));
    char *text = rt_config_text(spec);
    assert_string_equal(text, "{\"alpha\":\"x\",\"threshold\":1}\n");
    free(text);
    json_object_del(spec, "config");
    text = rt_config_text(spec);
    assert_string_equal(text, "{}\n");
    free(text);

    struct rt_desired d = desired_of(spec, 3);
    char name[64];
    assert_int_equal(rt_config_dir_name(&d, name, sizeof name), 0);
    assert_string_equal(name, "sensors.reader.3");
    assert_int_equal(rt_config_dir_name(&d, name, 8), MESH_EINVAL);
    d.app = "../etc";
    assert_int_equal(rt_config_dir_name(&d, name, sizeof name), MESH_EINVAL);
    d.app = "Sensors";
    assert_int_equal(rt_config_dir_name(&d, name, sizeof name), MESH_EINVAL);

    /* The mount and the variable that names the file. */
    d = desired_of(spec, 3);
    d.config_dir = "/data/containers/sensors.reader.3";
    json_t *body = rt_create_body("edge-a", &d);
    json_t *binds = json_object_get(json_object_get(body, "HostConfig"), "Binds");
    assert_string_equal(json_string_value(json_array_get(binds, json_array_size(binds) - 1)),
                        "/data/containers/sensors.reader.3:/fogmesh:ro");
    json_t *env = json_object_get(body, "Env");
    assert_string_equal(json_string_value(json_array_get(env, json_array_size(env) - 1)),
                        "FOGMESH_CONFIG=/fogmesh/config.json");
    json_decref(body);
    json_decref(spec);
}

static void image_ref_and_backoff(void **state)
{
    (void)state;
    char repo[64], tag[80];
    assert_int_equal(rt_image_ref("localhost/bbox:latest", repo, sizeof repo, tag, sizeof tag), 0);
    assert_string_equal(repo, "localhost/bbox");
    assert_string_equal(tag, "latest");
    assert_int_equal(rt_image_ref("registry:5000/a/b", repo, sizeof repo, tag, sizeof tag), 0);
    assert_string_equal(repo, "registry:5000/a/b");
    assert_string_equal(tag, "latest");
    assert_int_equal(rt_image_ref("registry:5000/a/b:1.2", repo, sizeof repo, tag, sizeof tag), 0);
    assert_string_equal(repo, "registry:5000/a/b");
    assert_string_equal(tag, "1.2");
    assert_int_equal(rt_image_ref("busybox@sha256:0123", repo, sizeof repo, tag, sizeof tag), 0);
    assert_string_equal(repo, "busybox");
    assert_string_equal(tag, "sha256:0123");
    assert_int_equal(rt_image_ref("", repo, sizeof repo, tag, sizeof tag), MESH_EINVAL);
    assert_int_equal(rt_image_ref("x:", repo, sizeof repo, tag, sizeof tag), MESH_EINVAL);
    assert_int_equal(rt_image_ref(":1", repo, sizeof repo, tag, sizeof tag), MESH_EINVAL);
    assert_int_equal(rt_image_ref("abc", repo, 3, tag, sizeof tag), MESH_EINVAL);

    assert_int_equal(rt_backoff_ms(1, 5000, 300000), 5000);
    assert_int_equal(rt_backoff_ms(2, 5000, 300000), 10000);
    assert_int_equal(rt_backoff_ms(4, 5000, 300000), 40000);
    assert_int_equal(rt_backoff_ms(7, 5000, 300000), 300000);
    assert_int_equal(rt_backoff_ms(1000, 5000, 300000), 300000);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hash_ignores_config_only),
        cmocka_unit_test(plan_create_start_remove),
        cmocka_unit_test(create_body_and_labels),
        cmocka_unit_test(create_body_security),
        cmocka_unit_test(plan_config_before_create_and_signal),
        cmocka_unit_test(config_text_and_dir),
        cmocka_unit_test(image_ref_and_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
