/* YAML ⇄ JSON for meshctl (ctl/yaml.h): core-schema scalars, errors with positions, round
 * trips through json_to_yaml. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "spec.h"
#include "yaml.h"

static char *compact(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    assert_non_null(s);
    return s;
}

static void assert_yaml(const char *yaml, const char *json)
{
    json_t *v = NULL;
    struct mesh_err err = {0};
    if (yaml_to_json(yaml, strlen(yaml), &v, &err) != 0)
        fail_msg("yaml_to_json(%s): %s", yaml, err.msg);
    char *got = compact(v);
    if (strcmp(got, json) != 0)
        fail_msg("yaml_to_json(%s)\n  got      %s\n  expected %s", yaml, got, json);
    free(got);
    json_decref(v);
}

static void scalars_core_schema(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *json;
    } cases[] = {
        {"a: 1", "{\"a\":1}"},
        {"a: -12", "{\"a\":-12}"},
        {"a: +7", "{\"a\":7}"},
        {"a: 007", "{\"a\":7}"},
        {"a: 0o17", "{\"a\":15}"},
        {"a: 0x1F", "{\"a\":31}"},
        {"a: 9223372036854775807", "{\"a\":9223372036854775807}"},
        {"a: 1.5", "{\"a\":1.5}"},
        {"a: .5", "{\"a\":0.5}"},
        {"a: 1.", "{\"a\":1.0}"},
        {"a: 1e3", "{\"a\":1000.0}"},
        {"a: -2.5E-1", "{\"a\":-0.25}"},
        {"a: true", "{\"a\":true}"},
        {"a: True", "{\"a\":true}"},
        {"a: FALSE", "{\"a\":false}"},
        {"a: null", "{\"a\":null}"},
        {"a: ~", "{\"a\":null}"},
        {"a:", "{\"a\":null}"},
        {"a: NULL", "{\"a\":null}"},
        /* YAML 1.1 spellings are strings in 1.2 */
        {"a: yes", "{\"a\":\"yes\"}"},
        {"a: off", "{\"a\":\"off\"}"},
        {"a: tRue", "{\"a\":\"tRue\"}"},
        {"a: 1_000", "{\"a\":\"1_000\"}"},
        {"a: 1:30", "{\"a\":\"1:30\"}"},
        {"a: 0b101", "{\"a\":\"0b101\"}"},
        {"a: 0x", "{\"a\":\"0x\"}"},
        {"a: -0x1", "{\"a\":\"-0x1\"}"},
        {"a: 1e", "{\"a\":\"1e\"}"},
        {"a: 64Mi", "{\"a\":\"64Mi\"}"},
        {"a: nginx:1.25", "{\"a\":\"nginx:1.25\"}"},
        /* quoted, block and !!str scalars stay strings */
        {"a: \"1\"", "{\"a\":\"1\"}"},
        {"a: 'true'", "{\"a\":\"true\"}"},
        {"a: ''", "{\"a\":\"\"}"},
        {"a: !!str 12", "{\"a\":\"12\"}"},
        {"a: |\n  line1\n  line2\n", "{\"a\":\"line1\\nline2\\n\"}"},
        {"a: >-\n  folded\n  text\n", "{\"a\":\"folded text\"}"},
        {"a: \"tab\\there\\u00e9\\0\"", "{\"a\":\"tab\\thereé\\u0000\"}"},
        /* collections */
        {"- 1\n- b\n- [c, {d: 2}]\n", "[1,\"b\",[\"c\",{\"d\":2}]]"},
        {"a: {}\nb: []\n", "{\"a\":{},\"b\":[]}"},
        {"kind: Application\nname: sensors\nmicroservices:\n  - name: reader\n    image: r\n"
         "    ports:\n      - container: 80\n        host: 8080\n",
         "{\"kind\":\"Application\",\"microservices\":[{\"image\":\"r\",\"name\":\"reader\","
         "\"ports\":[{\"container\":80,\"host\":8080}]}],\"name\":\"sensors\"}"},
        {"---\na: 1\n...\n", "{\"a\":1}"},
        {"\"80\": tcp", "{\"80\":\"tcp\"}"},
        {"x", "\"x\""},
        {"42", "42"},
        {"# only a comment\n~\n", "null"},
        /* JSON goes through jansson; flow-style YAML that is not JSON still parses */
        {" {\"a\": [1, 2.0, \"x\", null, true]}", "{\"a\":[1,2.0,\"x\",null,true]}"},
        {"{a: 1, b: [x, y]}", "{\"a\":1,\"b\":[\"x\",\"y\"]}"},
        {"{\"a\": 1,}", "{\"a\":1}"},
        {"\xef\xbb\xbf"
         "a: 1",
         "{\"a\":1}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_yaml(cases[i].yaml, cases[i].json);
}

static void errors_with_positions(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *msg;
    } cases[] = {
        {"a: 1\na: 2\n", "2:1: duplicate key \"a\""},
        {"a:\n  b: 1\n  c: 2\n  b: 3\n", "4:3: duplicate key \"b\""},
        {"a: &x 1\nb: *x\n", "1:4: anchors are not supported"},
        {"a: *x\n", "1:4: aliases are not supported"},
        {"a: 1\n---\nb: 2\n", "2:1: more than one document"},
        {"1: a\n", "1:1: key \"1\" must be a string: quote it"},
        {"true: a\n", "1:1: key \"true\" must be a string: quote it"},
        {"~: a\n", "1:1: key \"~\" must be a string: quote it"},
        {"? [a]\n: b\n", "1:3: keys must be strings, not sequences"},
        {"? {a: 1}\n: b\n", "1:3: keys must be strings, not mappings"},
        {"\"a\\0b\": 1\n", "1:1: key \"a?b\" holds a NUL character"},
        {"a: .inf\n", "1:4: infinity and NaN have no JSON form"},
        {"a: -.Inf\n", "1:4: infinity and NaN have no JSON form"},
        {"a: .nan\n", "1:4: infinity and NaN have no JSON form"},
        {"a: 9223372036854775808\n", "1:4: integer out of the 64-bit range"},
        {"a: 0xffffffffffffffff\n", "1:4: integer out of the 64-bit range"},
        {"a: 1e999\n", "1:4: number out of range"},
        {"a: !!int 1\n", "1:4: tag tag:yaml.org,2002:int is not supported (only !!str)"},
        {"a: !custom x\n", "1:4: tag !custom is not supported (only !!str)"},
        {"a: !!set {}\n", "1:4: tag tag:yaml.org,2002:set is not supported"},
        {"", "1:1: empty document"},
        {"{\"a\": [1, 2}", "1:12: ']' expected near '}'"},
        {"{\"a\": 1, \"a\": 2}", "1:12: duplicate object key near '\"a\"'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *v = (json_t *)0x1;
        struct mesh_err err = {0};
        int rc = yaml_to_json(cases[i].yaml, strlen(cases[i].yaml), &v, &err);
        if (rc != MESH_EINVAL || strcmp(err.msg, cases[i].msg) != 0)
            fail_msg("case %zu: rc %d\n  got      %s\n  expected %s", i, rc, err.msg, cases[i].msg);
        assert_int_equal(err.code, MESH_EINVAL);
        assert_ptr_equal(v, (json_t *)0x1);
    }

    /* Syntax errors from libyaml carry the position too. */
    static const struct {
        const char *yaml, *prefix;
    } syntax[] = {
        {"a: [1, 2\n", "2:1: "},  {"a: b\n c: d\n", "2:3: "}, {"a: \"x\n", "2:1: "},
        {"a:\n\t- b\n", "2:1: "}, {"a: \xff\n", "1:4: "},     {"x: 1\n- z\n", "2:1: "},
    };
    for (size_t i = 0; i < sizeof syntax / sizeof syntax[0]; i++) {
        json_t *v = NULL;
        struct mesh_err err = {0};
        assert_int_equal(yaml_to_json(syntax[i].yaml, strlen(syntax[i].yaml), &v, &err),
                         MESH_EINVAL);
        if (strncmp(err.msg, syntax[i].prefix, strlen(syntax[i].prefix)) != 0)
            fail_msg("syntax case %zu: %s (expected prefix %s)", i, err.msg, syntax[i].prefix);
        assert_null(v);
    }
}

static void bounds(void **state)
{
    (void)state;
    char deep[200] = "";
    for (int d = 32; d <= 33; d++) {
        /* d nested flow sequences */
        size_t n = 0;
        for (int i = 0; i < d; i++)
            deep[n++] = '[';
        for (int i = 0; i < d; i++)
            deep[n++] = ']';
        deep[n] = '\0';
        json_t *v = NULL;
        struct mesh_err err = {0};
        int rc = yaml_to_json(deep, n, &v, &err);
        if (d == 32) {
            assert_int_equal(rc, 0);
            json_decref(v);
        } else {
            assert_int_equal(rc, MESH_EINVAL);
            assert_string_equal(err.msg, "1:33: nested deeper than 32 levels");
        }
    }
    /* The same bound for JSON input. */
    char json[200];
    for (int d = 32; d <= 33; d++) {
        size_t n = 0;
        for (int i = 0; i < d; i++)
            n += (size_t)snprintf(json + n, sizeof json - n, "{\"a\":");
        n += (size_t)snprintf(json + n, sizeof json - n, "1");
        for (int i = 0; i < d; i++)
            json[n++] = '}';
        json_t *v = NULL;
        struct mesh_err err = {0};
        int rc = yaml_to_json(json, n, &v, &err);
        if (d == 32) {
            assert_int_equal(rc, 0);
            json_decref(v);
        } else {
            assert_int_equal(rc, MESH_EINVAL);
            assert_string_equal(err.msg, "nested deeper than 32 levels");
        }
    }
    /* Input size: 1 MiB is fine, one byte more is not (checked before parsing). */
    char *big = malloc(YAML_MAX_INPUT + 1);
    memset(big, ' ', YAML_MAX_INPUT + 1);
    memcpy(big, "a: 1", 4);
    json_t *v = NULL;
    struct mesh_err err = {0};
    assert_int_equal(yaml_to_json(big, YAML_MAX_INPUT, &v, &err), 0);
    json_decref(v);
    v = NULL;
    assert_int_equal(yaml_to_json(big, YAML_MAX_INPUT + 1, &v, &err), MESH_ETOOBIG);
    assert_string_equal(err.msg, "input is larger than 1048576 bytes");
    assert_null(v);
    free(big);
    /* Not NUL-terminated: only len bytes are read. */
    assert_int_equal(yaml_to_json("a: 1zzz", 4, &v, NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);
}

static json_t *roundtrip(const json_t *v, char **ret_text)
{
    char *text = NULL;
    assert_int_equal(json_to_yaml(v, &text), 0);
    json_t *back = NULL;
    struct mesh_err err = {0};
    if (yaml_to_json(text, strlen(text), &back, &err) != 0)
        fail_msg("reading back:\n%s\n%s", text, err.msg);
    if (!json_equal((json_t *)v, back)) {
        char *a = compact(v), *b = compact(back);
        fail_msg("round trip changed the value\n  in   %s\n  yaml %s\n  out  %s", a, text, b);
    }
    if (ret_text)
        *ret_text = text;
    else
        free(text);
    return back;
}

static void roundtrip_values(void **state)
{
    (void)state;
    static const char *const values[] = {
        "{}",
        "[]",
        "\"\"",
        "null",
        "1.0",
        "-0.0",
        "1e300",
        "1.7976931348623157e308",
        "5e-324",
        "0.1",
        "-9223372036854775808",
        "{\"strings\":[\"true\",\"False\",\"null\",\"~\",\"\",\"123\",\"-1.5\",\".5\",\"1e3\","
        "\"0x1F\",\"0o7\",\".inf\",\".NaN\",\"yes\",\"No\",\"on\",\"OFF\",\"y\",\"0777\","
        "\"1:30\",\"1_000\",\"+1\",\"-\",\"- x\",\"a: b\",\"#c\",\"a #c\",\"[x]\",\"{y}\","
        "\"*x\",\"&x\",\"!x\",\"%x\",\"@x\",\"`x\",\"|\",\">\",\"'\",\"\\\"\",\"---\",\"...\","
        "\" lead\",\"trail \",\"a\\nb\",\"a\\n\",\"\\n\\n\",\"  x\\n y\",\"tab\\tx\","
        "\"\\u0000\",\"\\u0001\",\"\\u007f\",\"\\u0085\",\"\\u2028\",\"\\ufeff\",\"é中\","
        "\"\\r\\n\",\"a\\r\",\"x:\",\"?\",\"? x\",\",\",\"a,b\",\"\\\\\"]}",
        "{\"true\":1,\"1\":2,\"\":3,\"null\":4,\"a\\nb\":5,\"a: b\":6,\"- x\":7,\"k\":{\"n\":{}}}",
        "[[[]],[{}],{\"a\":[1,[2,[3]]]},[null,true,false]]",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        json_error_t jerr;
        json_t *v = json_loads(values[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!v)
            fail_msg("bad test JSON %zu: %s", i, jerr.text);
        json_decref(roundtrip(v, NULL));
        json_decref(v);
    }
    /* A long string keeps to one line. */
    json_t *v = json_object();
    char longs[300];
    memset(longs, 'w', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    for (size_t i = 10; i < sizeof longs - 1; i += 11)
        longs[i] = ' ';
    json_object_set_new(v, "k", json_string(longs));
    char *text;
    json_decref(roundtrip(v, &text));
    assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1);
    free(text);
    json_decref(v);
}

static void yaml_output_reads_well(void **state)
{
    (void)state;
    json_t *v =
        json_pack("{s:s, s:s, s:[{s:s, s:s, s:i, s:f, s:b, s:{s:s}, s:[]}]}", "kind", "Application",
                  "name", "sensors", "microservices", "name", "reader", "image", "r:1", "replicas",
                  2, "cpus", 0.5, "ro", 0, "env", "PORT", "8080", "command");
    char *text;
    json_decref(roundtrip(v, &text));
    assert_string_equal(text, "kind: Application\n"
                              "name: sensors\n"
                              "microservices:\n"
                              "- name: reader\n"
                              "  image: r:1\n"
                              "  replicas: 2\n"
                              "  cpus: 0.5\n"
                              "  ro: false\n"
                              "  env:\n"
                              "    PORT: \"8080\"\n"
                              "  command: []\n");
    free(text);
    json_decref(v);

    /* Multi-line text comes out as a literal block. */
    v = json_pack("{s:s}", "cert", "line one\nline two\n");
    json_decref(roundtrip(v, &text));
    assert_string_equal(text, "cert: |\n  line one\n  line two\n");
    free(text);
    json_decref(v);
}

/* `meshctl describe app X -o yaml` then `meshctl deploy -f` is unchanged: a canonical spec
 * written as YAML reads back and validates to the same canonical spec. */
static void describe_then_deploy_unchanged(void **state)
{
    (void)state;
    static const char app[] =
        "kind: Application\n"
        "name: sensors\n"
        "microservices:\n"
        "  - name: reader\n"
        "    images: {amd64: 'r:1', arm64: 'r:1-arm64'}\n"
        "    command: [/bin/reader, --interval, '5']\n"
        "    env: {PORT: 8080, DEBUG: true, EMPTY: ''}\n"
        "    ports: [{container: 80, host: 8080}, {container: 53, protocol: udp}]\n"
        "    volumes: [{host: /data, container: /var/data}]\n"
        "    resources: {cpus: 2, memory: 1024Mi}\n"
        "    placement: {labels: {zone: north, rack: 7}}\n"
        "    config: {threshold: 1.5, on: yes, list: [null, '1', 1]}\n"
        "  - name: writer\n"
        "    image: w\n"
        "    resources: {cpus: 0.25, memory: 100k}\n";
    json_t *in = NULL, *canon = NULL, *again = NULL, *canon2 = NULL;
    struct mesh_err err = {0};
    struct spec_errors errs;
    assert_int_equal(yaml_to_json(app, sizeof app - 1, &in, &err), 0);
    assert_int_equal(spec_validate(in, &canon, &errs), 0);
    char *text;
    assert_int_equal(json_to_yaml(canon, &text), 0);
    assert_int_equal(yaml_to_json(text, strlen(text), &again, &err), 0);
    assert_true(json_equal(canon, again));
    assert_int_equal(spec_validate(again, &canon2, &errs), 0);
    assert_true(json_equal(canon, canon2));
    assert_non_null(strstr(text, "memory: 1Gi\n"));
    assert_non_null(strstr(text, "cpus: 2.0\n"));
    assert_non_null(strstr(text, "PORT: \"8080\"\n"));
    free(text);
    json_decref(in);
    json_decref(canon);
    json_decref(again);
    json_decref(canon2);

    /* A YAML spec with problems: every one, with its path. */
    static const char bad[] = "kind: Application\nname: s\nmicroservices:\n"
                              "  - name: a\n    image: x\n"
                              "  - name: b\n    ports: [{container: 0}]\n";
    assert_int_equal(yaml_to_json(bad, sizeof bad - 1, &in, &err), 0);
    assert_int_equal(spec_validate(in, NULL, &errs), MESH_EINVAL);
    char line[256];
    spec_errors_format(&errs, line, sizeof line);
    assert_string_equal(line, "microservices[1].ports[0].container: must be 1..65535; "
                              "microservices[1].image: required (or images)");
    json_decref(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scalars_core_schema),
        cmocka_unit_test(errors_with_positions),
        cmocka_unit_test(bounds),
        cmocka_unit_test(roundtrip_values),
        cmocka_unit_test(yaml_output_reads_well),
        cmocka_unit_test(describe_then_deploy_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
