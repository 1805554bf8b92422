/* Application specs (consensus/spec.h): canonical form, every error path, bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "spec.h"

/* JSON written with ' for " to keep the tables readable. */
static json_t *J(const char *text)
{
    char *s = strdup(text);
    assert_non_null(s);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t jerr;
    json_t *v = json_loads(s, 0, &jerr);
    if (!v)
        fail_msg("bad test JSON at %d: %s: %s", jerr.position, jerr.text, s);
    free(s);
    return v;
}

static char *dump(const json_t *v, size_t flags)
{
    char *s = json_dumps(v, JSON_COMPACT | flags);
    assert_non_null(s);
    return s;
}

#define APP(ms) "{'kind':'Application','name':'app','microservices':[" ms "]}"

static const char *const minimal = APP("{'name':'m','image':'nginx'}");

static const char *const full =
    "{'kind':'Application','name':'sensors','microservices':["
    " {'name':'reader','images':{'arm64':'r:arm64','amd64':'r:amd64'},"
    "  'command':['/bin/reader','--fast'],'env':{'PORT':8080,'DEBUG':true,'NAME':'x'},"
    "  'ports':[{'container':80,'host':8080},{'container':53,'host':53,'protocol':'udp'},"
    "           {'container':53,'host':53,'protocol':'tcp'}],"
    "  'volumes':[{'host':'/data','container':'/var/data'},"
    "             {'host':'/etc/x','container':'/etc/x','readonly':true}],"
    "  'resources':{'cpus':0.5,'memory':'1024Mi'},'replicas':3,"
    "  'placement':{'labels':{'zone':'north','rack':1},'arch':'arm64','node':'edge-1'},"
    "  'config':{'z':[1,2,{'b':null,'a':1.5}],'a':'x'},'restart':'on-failure'},"
    " {'name':'writer','image':'w:1','resources':{'cpus':2},'command':[],'env':{},"
    "  'ports':[],'volumes':[],'placement':{},'config':{}}]}";

static json_t *canon(const char *text)
{
    json_t *in = J(text);
    json_t *out = NULL;
    struct spec_errors errs;
    int rc = spec_validate(in, &out, &errs);
    if (rc != 0) {
        char line[4096];
        spec_errors_format(&errs, line, sizeof line);
        fail_msg("unexpected errors: %s", line);
    }
    json_decref(in);
    return out;
}

static void assert_canonical(const char *text, const char *expect)
{
    json_t *out = canon(text);
    char *s = dump(out, JSON_SORT_KEYS);
    json_t *e = J(expect);
    char *es = dump(e, JSON_SORT_KEYS);
    assert_string_equal(s, es);
    free(s);
    free(es);
    json_decref(e);
    json_decref(out);
}

static void valid_minimal(void **state)
{
    (void)state;
    assert_canonical(minimal, "{'kind':'Application','name':'app','microservices':[{'name':'m',"
                              "'image':'nginx','replicas':1,'restart':'always'}]}");
}

static void valid_full(void **state)
{
    (void)state;
    assert_canonical(
        full,
        "{'kind':'Application','name':'sensors','microservices':["
        " {'name':'reader','images':{'arm64':'r:arm64','amd64':'r:amd64'},"
        "  'command':['/bin/reader','--fast'],'env':{'PORT':'8080','DEBUG':'true','NAME':'x'},"
        "  'ports':[{'container':80,'host':8080,'protocol':'tcp'},"
        "           {'container':53,'host':53,'protocol':'udp'},"
        "           {'container':53,'host':53,'protocol':'tcp'}],"
        "  'volumes':[{'host':'/data','container':'/var/data','readonly':false},"
        "             {'host':'/etc/x','container':'/etc/x','readonly':true}],"
        "  'resources':{'cpus':0.5,'memory':'1Gi','memory_bytes':1073741824},'replicas':3,"
        "  'placement':{'labels':{'zone':'north','rack':'1'},'arch':'arm64','node':'edge-1'},"
        "  'config':{'z':[1,2,{'b':null,'a':1.5}],'a':'x'},'restart':'on-failure'},"
        " {'name':'writer','image':'w:1','resources':{'cpus':2.0},'replicas':1,"
        "  'restart':'always'}]}");
}

/* canonical(canonical(x)) == canonical(x), and keys are already in sorted order. */
static void canonical_idempotent(void **state)
{
    (void)state;
    const char *const specs[] = {
        minimal,
        full,
        APP("{'name':'m','image':'i','resources':{'memory':'512M','cpus':0.0005}}"),
        APP("{'name':'m','image':'i','resources':{'memory':100000,'memory_bytes':100000}}"),
        APP("{'name':'m','image':'i','resources':{'memory_bytes':1536}}"),
        APP("{'name':'m','image':'i','resources':{'cpus':0.3333333}}"),
        APP("{'name':'m','image':'i','expose':[{'port':8080,'name':'web'}],"
            "'connect':[{'service':'db','port':5432},{'port':6379,'service':'cache'}]}"),
        APP("{'name':'m','image':'i','expose':[],'connect':[]}"),
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        json_t *once = canon(specs[i]);
        json_t *twice = NULL;
        struct spec_errors errs;
        assert_int_equal(spec_validate(once, &twice, &errs), 0);
        assert_true(json_equal(once, twice));
        char *sorted = dump(twice, JSON_SORT_KEYS);
        char *as_is = dump(twice, 0);
        assert_string_equal(sorted, as_is);
        free(sorted);
        free(as_is);
        json_decref(once);
        json_decref(twice);
    }
}

/* Same meaning, different spelling: the same canonical spec. */
static void canonical_equal_meaning(void **state)
{
    (void)state;
    json_t *a = canon(APP("{'name':'m','image':'i','resources':{'memory':'1Gi','cpus':1}}"));
    json_t *b = canon(APP("{'image':'i','name':'m','replicas':1,'restart':'always','command':[],"
                          "'resources':{'memory':'1024Mi','cpus':1.0}}"));
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
}

struct bad_case {
    const char *spec;
    const char *errors; /* the one-line format of all problems */
};

static const struct bad_case bad[] = {
    {"[]", "a spec must be an object"},
    {"{}", "kind: required; microservices: required; name: required"},
    {"{'kind':'App','name':'a','microservices':[{'name':'m','image':'i'}]}",
     "kind: must be \"Application\""},
    {"{'kind':'Application','name':'a','microservices':[{'name':'m','image':'i'}],'x':1}",
     "x: unknown field"},
    {"{'kind':'Application','name':'A','microservices':[{'name':'m','image':'i'}]}",
     "name: must be 1..63 of a-z, 0-9 and '-', start with a letter and not end with '-'"},
    {"{'kind':'Application','name':'1a','microservices':[{'name':'m','image':'i'}]}",
     "name: must be 1..63 of a-z, 0-9 and '-', start with a letter and not end with '-'"},
    {"{'kind':'Application','name':'a-','microservices':[{'name':'m','image':'i'}]}",
     "name: must be 1..63 of a-z, 0-9 and '-', start with a letter and not end with '-'"},
    {"{'kind':'Application','name':7,'microservices':[{'name':'m','image':'i'}]}",
     "name: must be a string"},
    {"{'kind':'Application','name':'a\\u0000b','microservices':[{'name':'m','image':'i'}]}",
     "name: must not contain NUL characters"},
    {"{'kind':'Application','name':'a','microservices':[]}",
     "microservices: must have 1..64 entries"},
    {"{'kind':'Application','name':'a','microservices':{}}", "microservices: must be an array"},
    {APP("7"), "microservices[0]: must be an object"},
    {APP("{'name':'m','imagee':'i'}"),
     "microservices[0].imagee: unknown field; microservices[0].image: required (or images)"},
    {APP("{'name':'m','image':'i','expose':{}}"), "microservices[0].expose: must be an array"},
    {APP("{'name':'m','image':'i','expose':[{'name':'web','port':80},{'name':'web','port':80}]}"),
     "microservices[0].expose[1].name: same name as [0]; "
     "microservices[0].expose[1].port: same port as [0]"},
    {APP("{'name':'m','image':'i','expose':[{'name':'Web','port':0,'x':1}]}"),
     "microservices[0].expose[0].x: unknown field; microservices[0].expose[0].name: must be "
     "1..63 of a-z, 0-9 and '-', start with a letter and not end with '-'; "
     "microservices[0].expose[0].port: must be 1..65535"},
    {APP("{'name':'m','image':'i','connect':[{'service':'db'}]}"),
     "microservices[0].connect[0].port: required"},
    {APP("{'name':'m','image':'i','expose':[{'name':'a','port':80}],"
         "'connect':[{'service':'b','port':80}]}"),
     "microservices[0].expose[0].port: also a connect port of this microservice"},
    {APP("{'image':'i'}"), "microservices[0].name: required"},
    {APP("{'name':'m','image':'i'},{'name':'m','image':'j'}"),
     "microservices[1].name: same name as microservices[0]"},
    {APP("{'name':'m','image':'i','images':{'arm':'x'}}"),
     "microservices[0].images: cannot be given together with image"},
    {APP("{'name':'m','image':''}"),
     "microservices[0].image: must be a non-empty image reference without spaces"},
    {APP("{'name':'m','image':'a b'}"),
     "microservices[0].image: must be a non-empty image reference without spaces"},
    {APP("{'name':'m','images':{}}"),
     "microservices[0].images: must name at least one of amd64, arm64, arm"},
    {APP("{'name':'m','images':{'riscv64':'x'}}"),
     "microservices[0].images.riscv64: unknown architecture (use amd64, arm64 or arm)"},
    {APP("{'name':'m','images':{'arm':7}}"), "microservices[0].images.arm: must be a string"},
    {APP("{'name':'m','images':'x'}"), "microservices[0].images: must be an object"},
    {APP("{'name':'m','image':'i','command':'ls'}"),
     "microservices[0].command: must be an array of strings"},
    {APP("{'name':'m','image':'i','command':['ls',1]}"),
     "microservices[0].command[1]: must be a string"},
    {APP("{'name':'m','image':'i','env':[]}"),
     "microservices[0].env: must be an object of strings"},
    {APP("{'name':'m','image':'i','env':{'1X':'a'}}"),
     "microservices[0].env.1X: not a variable name (letters, digits and '_', not starting with "
     "a digit)"},
    {APP("{'name':'m','image':'i','env':{'A-B':'a'}}"),
     "microservices[0].env.A-B: not a variable name (letters, digits and '_', not starting with "
     "a digit)"},
    {APP("{'name':'m','image':'i','env':{'A':1.5}}"), "microservices[0].env.A: must be a string"},
    {APP("{'name':'m','image':'i','env':{'A':null}}"), "microservices[0].env.A: must be a string"},
    {APP("{'name':'m','image':'i','ports':{}}"), "microservices[0].ports: must be an array"},
    {APP("{'name':'m','image':'i','ports':[{}]}"), "microservices[0].ports[0].container: required"},
    {APP("{'name':'m','image':'i','ports':[{'container':0}]}"),
     "microservices[0].ports[0].container: must be 1..65535"},
    {APP("{'name':'m','image':'i','ports':[{'container':65536}]}"),
     "microservices[0].ports[0].container: must be 1..65535"},
    {APP("{'name':'m','image':'i','ports':[{'container':'80'}]}"),
     "microservices[0].ports[0].container: must be 1..65535"},
    {APP("{'name':'m','image':'i','ports':[{'container':80,'host':-1}]}"),
     "microservices[0].ports[0].host: must be 1..65535"},
    {APP("{'name':'m','image':'i','ports':[{'container':80,'protocol':'sctp'}]}"),
     "microservices[0].ports[0].protocol: must be tcp or udp"},
    {APP("{'name':'m','image':'i','ports':[{'container':80,'hostport':1}]}"),
     "microservices[0].ports[0].hostport: unknown field"},
    {APP("{'name':'m','image':'i','ports':[{'container':80},{'container':80,'host':1}]}"),
     "microservices[0].ports[1].container: same port and protocol as ports[0]"},
    {APP("{'name':'m','image':'i','ports':[{'container':80,'host':80}]},"
         "{'name':'n','image':'i','ports':[{'container':81},{'container':80,'host':80}]}"),
     "microservices[1].ports[1].host: host port 80/tcp already used by "
     "microservices[0].ports[0]"},
    {APP("{'name':'m','image':'i','volumes':[{'host':'/a'}]}"),
     "microservices[0].volumes[0].container: required"},
    {APP("{'name':'m','image':'i','volumes':[{'host':'a','container':'/b'}]}"),
     "microservices[0].volumes[0].host: must be an absolute path without ':'"},
    {APP("{'name':'m','image':'i','volumes':[{'host':'/a','container':'/b:ro'}]}"),
     "microservices[0].volumes[0].container: must be an absolute path without ':'"},
    {APP("{'name':'m','image':'i','volumes':[{'host':'/a','container':'/b','readonly':'yes'}]}"),
     "microservices[0].volumes[0].readonly: must be true or false"},
    {APP("{'name':'m','image':'i','volumes':[{'host':'/a','container':'/b'},"
         "{'host':'/c','container':'/b'}]}"),
     "microservices[0].volumes[1].container: same container path as volumes[0]"},
    {APP("{'name':'m','image':'i','volumes':'/a:/b'}"),
     "microservices[0].volumes: must be an array"},
    {APP("{'name':'m','image':'i','resources':{'cpus':0}}"),
     "microservices[0].resources.cpus: must be a number of CPUs > 0 and at most 1024"},
    {APP("{'name':'m','image':'i','resources':{'cpus':'1'}}"),
     "microservices[0].resources.cpus: must be a number of CPUs > 0 and at most 1024"},
    {APP("{'name':'m','image':'i','resources':{'cpus':1025}}"),
     "microservices[0].resources.cpus: must be a number of CPUs > 0 and at most 1024"},
    {APP("{'name':'m','image':'i','resources':{'cpus':0.0001}}"),
     "microservices[0].resources.cpus: must be at least 0.001"},
    {APP("{'name':'m','image':'i','resources':{'memory':'64MB'}}"),
     "microservices[0].resources.memory: must be a size such as 64Mi, 1Gi, 512M or 100k (at most "
     "1Pi)"},
    {APP("{'name':'m','image':'i','resources':{'memory':0}}"),
     "microservices[0].resources.memory: must be a size such as 64Mi, 1Gi, 512M or 100k (at most "
     "1Pi)"},
    {APP("{'name':'m','image':'i','resources':{'memory':'1Mi','memory_bytes':1000}}"),
     "microservices[0].resources.memory_bytes: does not match memory (1048576 bytes)"},
    {APP("{'name':'m','image':'i','resources':{'memory_bytes':'1'}}"),
     "microservices[0].resources.memory_bytes: must be a number of bytes, 1..2^50"},
    {APP("{'name':'m','image':'i','resources':{'disk':'1Gi'}}"),
     "microservices[0].resources.disk: unknown field"},
    {APP("{'name':'m','image':'i','resources':[]}"),
     "microservices[0].resources: must be an object"},
    {APP("{'name':'m','image':'i','replicas':0}"),
     "microservices[0].replicas: must be an integer 1..100"},
    {APP("{'name':'m','image':'i','replicas':101}"),
     "microservices[0].replicas: must be an integer 1..100"},
    {APP("{'name':'m','image':'i','replicas':2.0}"),
     "microservices[0].replicas: must be an integer 1..100"},
    {APP("{'name':'m','image':'i','placement':{'arch':'x86'}}"),
     "microservices[0].placement.arch: must be amd64, arm64 or arm"},
    {APP("{'name':'m','images':{'amd64':'a'},'placement':{'arch':'arm'}}"),
     "microservices[0].placement.arch: images has no entry for this architecture"},
    {APP("{'name':'m','image':'i','placement':{'node':'-x'}}"),
     "microservices[0].placement.node: must be a node name: 1..64 of letters, digits, '.', '_' or "
     "'-', starting with a letter or digit"},
    {APP("{'name':'m','image':'i','placement':{'labels':{'a b':'c'}}}"),
     "microservices[0].placement.labels.a b: label keys are 1..63 of letters, digits, '.', '_', "
     "'-' or '/'"},
    {APP("{'name':'m','image':'i','placement':{'labels':{'a':''}}}"),
     "microservices[0].placement.labels.a: label values are 1..127 of letters, digits, '.', '_', "
     "'-' or '/'"},
    {APP("{'name':'m','image':'i','placement':{'zone':'a'}}"),
     "microservices[0].placement.zone: unknown field"},
    {APP("{'name':'m','image':'i','config':[]}"), "microservices[0].config: must be an object"},
    {APP("{'name':'m','image':'i','config':{'a':'x\\u0000'}}"),
     "microservices[0].config: must not contain NUL characters"},
    {APP("{'name':'m','image':'i','restart':'sometimes'}"),
     "microservices[0].restart: must be always, on-failure or never"},
    {APP("{'name':'m','image':'i','env':{'\\u0001':'x'}}"),
     "microservices[0].env.?: not a variable name (letters, digits and '_', not starting with a "
     "digit)"},
    {APP("{'name':'m','image':'i','user':'1000:'}"),
     "microservices[0].user: must be uid[:gid] (numbers up to 4294967294, or user and group "
     "names)"},
    {APP("{'name':'m','image':'i','user':'4294967295'}"),
     "microservices[0].user: must be uid[:gid] (numbers up to 4294967294, or user and group "
     "names)"},
    {APP("{'name':'m','image':'i','user':-1}"), "microservices[0].user: must be a string"},
    {APP("{'name':'m','image':'i','privileged':'yes'}"),
     "microservices[0].privileged: must be true or false"},
    {APP("{'name':'m','image':'i','cap_add':['NET_FOO']}"),
     "microservices[0].cap_add[0]: not a Linux capability (e.g. NET_ADMIN, SYS_TIME, ALL)"},
    {APP("{'name':'m','image':'i','cap_add':['NET_RAW'],'cap_drop':['net_raw']}"),
     "microservices[0].cap_drop: NET_RAW is also in cap_add"},
    {APP("{'name':'m','image':'i','devices':[{'host':'/etc/passwd'}]}"),
     "microservices[0].devices[0].host: must be a device under /dev/ (no . or .. in the path)"},
    {APP("{'name':'m','image':'i','devices':[{'host':'/dev/../etc/shadow'}]}"),
     "microservices[0].devices[0].host: must be a device under /dev/ (no . or .. in the path)"},
    {APP("{'name':'m','image':'i','devices':[{'host':'/dev/a','permissions':'rr'}]}"),
     "microservices[0].devices[0].permissions: must be some of r, w and m, each once (e.g. rw)"},
    {APP("{'name':'m','image':'i','devices':[{'host':'/dev/a'},{'host':'/dev/b',"
         "'container':'/dev/a'}]}"),
     "microservices[0].devices[1].container: same container path as devices[0]"},
    {APP("{'name':'m','image':'i','cdi':['gpu=all']}"),
     "microservices[0].cdi[0]: must be a CDI device name, vendor/class=name (e.g. "
     "nvidia.com/gpu=all)"},
    {APP("{'name':'m','image':'i','gpus':0}"),
     "microservices[0].gpus: must be \"all\" or a number of GPUs 1..64"},
    {APP("{'name':'m','image':'i','runtime':'../x'}"),
     "microservices[0].runtime: must be an OCI runtime name (e.g. runc, crun, nvidia)"},
    {APP("{'name':'m','image':'i','tmpfs':[{'path':'/'},{'path':'/a','mode':'17777'},"
         "{'path':'/b','mode':1777}]}"),
     "microservices[0].tmpfs[0].path: cannot be /; "
     "microservices[0].tmpfs[1].mode: must be an octal mode 0..7777 as a string, e.g. \"1777\"; "
     "microservices[0].tmpfs[2].mode: must be an octal mode as a string, e.g. \"1777\""},
    {APP("{'name':'m','image':'i','sysctls':{'net.ipv4.ip_forward':'1'}}"),
     "microservices[0].sysctls.net.ipv4.ip_forward: not allowed: only IPC sysctls (kernel.msg*, "
     "kernel.sem, kernel.shm*, fs.mqueue.*), as containers share the host's network"},
    {APP("{'name':'m','image':'i','sysctls':{'kernel.sem':'1;2'}}"),
     "microservices[0].sysctls.kernel.sem: must be numbers separated by spaces"},
    {APP("{'name':'m','image':'i','ulimits':{'nofile':{'soft':10,'hard':5}}}"),
     "microservices[0].ulimits.nofile: soft must not exceed hard"},
    {APP("{'name':'m','image':'i','ulimits':{'files':1}}"),
     "microservices[0].ulimits.files: not a resource limit (nofile, nproc, memlock, core, stack, "
     "...)"},
    {APP("{'name':'m','image':'i','ulimits':{'nofile':{'soft':1}}}"),
     "microservices[0].ulimits.nofile: must be a number, \"unlimited\" or {soft, hard}"},
    {APP("{'name':'m','image':'i','network':'bridge'}"),
     "microservices[0].network: must be host: every microservice shares its node's network and "
     "reaches others through services (expose/connect)"},
    {APP("{'name':'m','image':'i','shm_size':'1X'}"),
     "microservices[0].shm_size: must be a size such as 64Mi, 1Gi, 512M or 100k (at most 1Pi)"},
};

static void errors_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = strdup(bad[i].spec);
        for (char *p = s; *p; p++)
            if (*p == '\'')
                *p = '"';
        json_error_t jerr;
        json_t *in = json_loads(s, JSON_ALLOW_NUL, &jerr);
        if (!in)
            fail_msg("case %zu: bad JSON: %s", i, jerr.text);
        json_t *out = (json_t *)0x1; /* untouched on failure */
        struct spec_errors errs;
        int rc = spec_validate(in, &out, &errs);
        char line[2048];
        spec_errors_format(&errs, line, sizeof line);
        if (rc != MESH_EINVAL || strcmp(line, bad[i].errors) != 0)
            fail_msg("case %zu: %s\n  rc %d, got:  %s\n  expected: %s", i, s, rc, line,
                     bad[i].errors);
        assert_ptr_equal(out, (json_t *)0x1);
        json_decref(in);
        free(s);
    }
}

static void multiple_errors(void **state)
{
    (void)state;
    json_t *in = J("{'kind':'Application','name':'sensors','microservices':["
                   "{'name':'reader','image':'r'},"
                   "{'name':'writer','ports':[{'container':0}],'replicas':'x'}]}");
    struct spec_errors errs;
    assert_int_equal(spec_validate(in, NULL, &errs), MESH_EINVAL);
    char line[1024];
    size_t need = spec_errors_format(&errs, line, sizeof line);
    assert_string_equal(line, "microservices[1].ports[0].container: must be 1..65535; "
                              "microservices[1].replicas: must be an integer 1..100; "
                              "microservices[1].image: required (or images)");
    assert_int_equal(need, strlen(line));
    assert_int_equal(errs.count, 3);
    assert_int_equal(errs.more, 0);

    /* Truncated output still says how long the whole line is. */
    char small[16];
    assert_int_equal(spec_errors_format(&errs, small, sizeof small), need);
    assert_int_equal(strlen(small), sizeof small - 1);

    json_t *arr = spec_errors_to_json(&errs);
    assert_non_null(arr);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "path")),
                        "microservices[1].replicas");
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "message")),
                        "must be an integer 1..100");
    json_decref(arr);
    json_decref(in);
}

/* More problems than errs holds: the first SPEC_ERRORS_MAX and a count of the rest. */
static void errors_overflow(void **state)
{
    (void)state;
    json_t *in = J(minimal);
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "x%02d", i);
        json_object_set_new(in, k, json_true());
    }
    struct spec_errors errs;
    assert_int_equal(spec_validate(in, NULL, &errs), MESH_EINVAL);
    assert_int_equal(errs.count, SPEC_ERRORS_MAX);
    assert_int_equal(errs.more, 40 - SPEC_ERRORS_MAX);
    assert_string_equal(errs.e[0].path, "x00");
    char line[4096];
    spec_errors_format(&errs, line, sizeof line);
    assert_non_null(strstr(line, "; x31: unknown field (and 8 more)"));
    json_t *arr = spec_errors_to_json(&errs);
    assert_int_equal(json_array_size(arr), SPEC_ERRORS_MAX + 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(arr, SPEC_ERRORS_MAX), "message")),
        "8 more problems");
    json_decref(arr);
    /* Validation without errs reports only the code. */
    assert_int_equal(spec_validate(in, NULL, NULL), MESH_EINVAL);
    json_decref(in);
}

static json_t *ms_with(const char *key, json_t *value)
{
    json_t *in = J(minimal);
    json_t *ms = json_array_get(json_object_get(in, "microservices"), 0);
    json_object_set_new(ms, key, value);
    return in;
}

static const char *first_error(json_t *in, int expect_rc)
{
    static struct spec_errors errs; /* test-only scratch, read right after */
    assert_int_equal(spec_validate(in, NULL, &errs), expect_rc);
    json_decref(in);
    return errs.count ? errs.e[0].msg : "";
}

static void bounds(void **state)
{
    (void)state;
    /* Strings: SPEC_MAX_STRING bytes pass, one more does not. */
    char *s = malloc(SPEC_MAX_STRING + 2);
    memset(s, 'a', SPEC_MAX_STRING + 1);
    s[SPEC_MAX_STRING + 1] = '\0';
    assert_string_equal(first_error(ms_with("image", json_string(s)), MESH_EINVAL),
                        "must be at most 4096 bytes");
    s[SPEC_MAX_STRING] = '\0';
    json_t *in = ms_with("image", json_string(s));
    assert_int_equal(spec_validate(in, NULL, NULL), 0);
    json_decref(in);
    free(s);

    /* Names: 63 pass, 64 do not. */
    char name[65];
    memset(name, 'n', 64);
    name[64] = '\0';
    assert_int_equal(first_error(ms_with("name", json_string(name)), MESH_EINVAL)[0], 'm');
    name[63] = '\0';
    in = ms_with("name", json_string(name));
    assert_int_equal(spec_validate(in, NULL, NULL), 0);
    json_decref(in);

    /* Arrays and maps. */
    struct {
        const char *key;
        size_t max;
        const char *msg;
    } arrays[] = {
        {"command", SPEC_MAX_ARGS, "must have at most 128 entries"},
        {"ports", SPEC_MAX_PORTS, "must have at most 32 entries"},
        {"volumes", SPEC_MAX_VOLUMES, "must have at most 32 entries"},
        {"env", SPEC_MAX_ENV, "must have at most 256 entries"},
    };
    for (size_t a = 0; a < sizeof arrays / sizeof arrays[0]; a++) {
        for (size_t n = arrays[a].max; n <= arrays[a].max + 1; n++) {
            json_t *v = strcmp(arrays[a].key, "env") == 0 ? json_object() : json_array();
            for (size_t i = 0; i < n; i++) {
                char buf[64];
                if (strcmp(arrays[a].key, "command") == 0) {
                    json_array_append_new(v, json_string("x"));
                } else if (strcmp(arrays[a].key, "ports") == 0) {
                    json_array_append_new(v, json_pack("{s:i}", "container", (int)i + 1));
                } else if (strcmp(arrays[a].key, "volumes") == 0) {
                    snprintf(buf, sizeof buf, "/v%zu", i);
                    json_array_append_new(v,
                                          json_pack("{s:s,s:s}", "host", "/h", "container", buf));
                } else {
                    snprintf(buf, sizeof buf, "E%zu", i);
                    json_object_set_new(v, buf, json_string("x"));
                }
            }
            in = ms_with(arrays[a].key, v);
            if (n == arrays[a].max) {
                assert_int_equal(spec_validate(in, NULL, NULL), 0);
                json_decref(in);
            } else {
                assert_string_equal(first_error(in, MESH_EINVAL), arrays[a].msg);
            }
        }
    }

    /* Microservices: 64 pass, 65 do not. */
    for (size_t n = SPEC_MAX_MICROSERVICES; n <= SPEC_MAX_MICROSERVICES + 1; n++) {
        in = J(minimal);
        json_t *arr = json_object_get(in, "microservices");
        json_array_clear(arr);
        for (size_t i = 0; i < n; i++) {
            char buf[16];
            snprintf(buf, sizeof buf, "m%zu", i);
            json_array_append_new(arr, json_pack("{s:s,s:s}", "name", buf, "image", "i"));
        }
        if (n == SPEC_MAX_MICROSERVICES) {
            assert_int_equal(spec_validate(in, NULL, NULL), 0);
            json_decref(in);
        } else {
            assert_string_equal(first_error(in, MESH_EINVAL), "must have 1..64 entries");
        }
    }

    /* Config: 64 KiB encoded, 32 levels. */
    json_t *cfg = json_object();
    char *big = malloc(SPEC_MAX_CONFIG);
    memset(big, 'c', SPEC_MAX_CONFIG - 1);
    big[SPEC_MAX_CONFIG - 1] = '\0';
    json_object_set_new(cfg, "k", json_string(big));
    assert_string_equal(first_error(ms_with("config", cfg), MESH_EINVAL),
                        "must be at most 65536 bytes encoded as JSON");
    big[SPEC_MAX_CONFIG - 1 - strlen("{\"k\":\"\"}")] = '\0';
    in = ms_with("config", json_pack("{s:s}", "k", big));
    assert_int_equal(spec_validate(in, NULL, NULL), 0);
    json_decref(in);
    free(big);
    for (int depth = 32; depth <= 33; depth++) {
        json_t *v = json_object();
        for (int i = 1; i < depth; i++)
            v = json_pack("{s:o}", "d", v);
        in = ms_with("config", v);
        if (depth == 32) {
            assert_int_equal(spec_validate(in, NULL, NULL), 0);
            json_decref(in);
        } else {
            assert_string_equal(first_error(in, MESH_EINVAL), "must be at most 32 levels deep");
        }
    }

    /* The whole spec: 256 KiB encoded, checked before anything else. */
    in = J(minimal);
    json_t *arr = json_object_get(in, "microservices");
    for (int i = 0; i < 70; i++)
        json_array_append_new(arr, json_pack("{s:s}", "pad",
                                             "0123456789012345678901234567890"
                                             "123456789012345678901234567890123"));
    assert_int_equal(spec_validate(in, NULL, NULL), MESH_EINVAL); /* too many, not too big */
    char *pad = malloc(SPEC_MAX_ENCODED);
    memset(pad, 'p', SPEC_MAX_ENCODED - 1);
    pad[SPEC_MAX_ENCODED - 1] = '\0';
    json_object_set_new(in, "pad", json_string(pad));
    free(pad);
    struct spec_errors errs;
    assert_int_equal(spec_validate(in, NULL, &errs), MESH_ETOOBIG);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.e[0].path, "");
    assert_string_equal(errs.e[0].msg, "too large: at most 262144 bytes encoded as JSON");
    json_decref(in);

    /* Replicas: 1 and 100 pass. */
    in = ms_with("replicas", json_integer(100));
    assert_int_equal(spec_validate(in, NULL, NULL), 0);
    json_decref(in);
}

static void long_paths_truncate(void **state)
{
    (void)state;
    char key[300];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    /* A multi-byte character across the cut must not be split. */
    memcpy(key + 101, "\xc3\xa9\xc3\xa9\xc3\xa9", 6);
    json_t *env = json_object();
    json_object_set_new(env, key, json_string("v"));
    json_t *in = ms_with("env", env);
    struct spec_errors errs;
    assert_int_equal(spec_validate(in, NULL, &errs), MESH_EINVAL);
    assert_int_equal(strlen(errs.e[0].path), SPEC_ERROR_PATH_MAX - 1 - 1);
    json_t *arr = spec_errors_to_json(&errs);
    assert_non_null(arr); /* valid UTF-8 */
    json_decref(arr);
    json_decref(in);
}

static void memory_parse_format(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t bytes;
        const char *canon;
    } ok[] = {
        {"64Mi", 64ull << 20, "64Mi"},
        {"1Gi", 1ull << 30, "1Gi"},
        {"1024Mi", 1ull << 30, "1Gi"},
        {"512M", 512000000ull, "512M"},
        {"100k", 100000ull, "100k"},
        {"1000", 1000ull, "1k"},
        {"1", 1, "1"},
        {"1023", 1023, "1023"},
        {"1.5Gi", 3ull << 29, "1536Mi"},
        {"0.5Ki", 512, "512"},
        {"2.5k", 2500, "2500"},
        {"1Pi", 1ull << 50, "1Pi"},
        {"1.000000001G", 1000000001ull, "1000000001"},
        {"1024Ki", 1ull << 20, "1Mi"},
        {"1000Ki", 1024000ull, "1024k"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t b = 0;
        if (mesh_size_parse(ok[i].in, &b) != 0 || b != ok[i].bytes)
            fail_msg("%s: rc or bytes %llu", ok[i].in, (unsigned long long)b);
        char s[MESH_SIZE_STRLEN];
        assert_int_equal(mesh_size_format(b, s, sizeof s), strlen(ok[i].canon));
        assert_string_equal(s, ok[i].canon);
        uint64_t b2 = 0;
        assert_int_equal(mesh_size_parse(s, &b2), 0);
        assert_int_equal(b2, b);
    }
    static const char *const bad_sizes[] = {
        "",
        "0",
        "0Mi",
        "-1",
        "1.5",
        "Mi",
        "1 Mi",
        "1mi",
        "1m",
        "1g",
        "1MB",
        ".5Gi",
        "5.Gi",
        "1.1Ki",
        "2Pi",
        "1126T",
        "1e3",
        "+1",
        "1Ei",
        "0.1",
        "1.0000000001G",
        "99999999999999999999999Ki",
        "0x10",
        " 1",
    };
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        uint64_t b = 77;
        if (mesh_size_parse(bad_sizes[i], &b) != MESH_EINVAL)
            fail_msg("accepted %s", bad_sizes[i]);
        assert_int_equal(b, 77);
    }
    char s[MESH_SIZE_STRLEN];
    mesh_size_format(UINT64_MAX, s, sizeof s);
    assert_string_equal(s, "18446744073709551615");
}

/* The security settings (issue 16): every field in its canonical spelling, defaults filled
 * where the engine needs one (device permissions and container path), and idempotent. */
static void security_settings(void **state)
{
    (void)state;
    const char *in =
        APP("{'name':'m','image':'i','user':1000,'read_only_rootfs':true,'privileged':false,"
            "'no_new_privileges':false,'cap_add':['net_admin','CAP_SYS_TIME','NET_ADMIN'],"
            "'cap_drop':['all'],'devices':[{'host':'/dev/ttyUSB0'},"
            "{'host':'/dev/video0','container':'/dev/cam','permissions':'wr'}],"
            "'cdi':['nvidia.com/gpu=all'],'gpus':'all','runtime':'crun',"
            "'tmpfs':[{'path':'/scratch','size':'64Mi','mode':'0o1777'},{'path':'/run/x'}],"
            "'sysctls':{'kernel.shmmax':68719476736,'fs.mqueue.msg_max':'100'},"
            "'ulimits':{'nofile':{'soft':1024,'hard':4096},'core':0,'memlock':'unlimited'},"
            "'network':'host','shm_size':'128M'}");
    const char *out =
        "{'kind':'Application','name':'app','microservices':[{'name':'m','image':'i',"
        "'replicas':1,'restart':'always','user':'1000','read_only_rootfs':true,"
        "'privileged':false,'no_new_privileges':false,'cap_add':['NET_ADMIN','SYS_TIME'],"
        "'cap_drop':['ALL'],'devices':[{'host':'/dev/ttyUSB0','container':'/dev/ttyUSB0',"
        "'permissions':'rwm'},{'host':'/dev/video0','container':'/dev/cam','permissions':'rw'}],"
        "'cdi':['nvidia.com/gpu=all'],'gpus':'all','runtime':'crun',"
        "'tmpfs':[{'path':'/scratch','size':'64Mi','mode':'1777'},{'path':'/run/x'}],"
        "'sysctls':{'fs.mqueue.msg_max':'100','kernel.shmmax':'68719476736'},"
        "'ulimits':{'core':{'soft':0,'hard':0},'memlock':{'soft':'unlimited','hard':'unlimited'},"
        "'nofile':{'soft':1024,'hard':4096}},'network':'host','shm_size':'128M'}]}";
    assert_canonical(in, out);
    json_t *once = canon(in);
    json_t *twice = NULL;
    struct spec_errors errs;
    assert_int_equal(spec_validate(once, &twice, &errs), 0);
    assert_true(json_equal(once, twice));
    json_decref(once);
    json_decref(twice);
    assert_canonical(APP("{'name':'m','image':'i','user':'app:video','gpus':2}"),
                     "{'kind':'Application','name':'app','microservices':[{'name':'m',"
                     "'image':'i','replicas':1,'restart':'always','user':'app:video',"
                     "'gpus':2}]}");
}

static void images_for_arch(void **state)
{
    (void)state;
    json_t *c = canon(APP("{'name':'a','images':{'amd64':'x:amd','arm':'x:arm'}},"
                          "{'name':'b','image':'y'},"
                          "{'name':'c','image':'z','placement':{'arch':'arm64'}}"));
    assert_string_equal(spec_images_for_arch(c, 0, "amd64"), "x:amd");
    assert_string_equal(spec_images_for_arch(c, 0, "arm"), "x:arm");
    assert_null(spec_images_for_arch(c, 0, "arm64"));
    assert_string_equal(spec_images_for_arch(c, 1, "arm64"), "y");
    assert_string_equal(spec_images_for_arch(c, 2, "arm64"), "z");
    assert_null(spec_images_for_arch(c, 2, "amd64"));
    assert_null(spec_images_for_arch(c, 3, "amd64"));
    assert_null(spec_images_for_arch(NULL, 0, "amd64"));
    json_decref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_minimal),        cmocka_unit_test(valid_full),
        cmocka_unit_test(canonical_idempotent), cmocka_unit_test(canonical_equal_meaning),
        cmocka_unit_test(errors_table),         cmocka_unit_test(multiple_errors),
        cmocka_unit_test(errors_overflow),      cmocka_unit_test(bounds),
        cmocka_unit_test(long_paths_truncate),  cmocka_unit_test(memory_parse_format),
        cmocka_unit_test(images_for_arch),      cmocka_unit_test(security_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
