/* libFuzzer harness for meshctl's YAML/JSON spec reader (ctl/yaml.h): arbitrary bytes go to
 * yaml_to_json. Checks: no crash, no leak; a failure leaves the output untouched and says why;
 * for what parses, json_to_yaml writes YAML that yaml_to_json reads back to an equal value.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon -Ictl tests/fuzz/fuzz_yaml.c \
 *       ctl/yaml.c common/err.c -ljansson -lyaml -o fuzz_yaml
 * (build yaml.c without -Ictl: ctl/yaml.h shadows libyaml's <yaml.h>) */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const json_t *const untouched = (const json_t *)&untouched;
    json_t *v = (json_t *)untouched;
    struct mesh_err err = {0};
    int rc = yaml_to_json((const char *)data, size, &v, &err);
    if (rc != 0) {
        if (v != untouched || err.code != rc || !err.msg[0] ||
            !memchr(err.msg, '\0', sizeof err.msg))
            abort();
        return 0;
    }
    char *text = NULL;
    if (json_to_yaml(v, &text) != 0)
        abort(); /* whatever was read can be written */
    json_t *back = NULL;
    rc = yaml_to_json(text, strlen(text), &back, &err);
    if (rc == MESH_ETOOBIG && strlen(text) > YAML_MAX_INPUT) {
        /* escapes and indentation can make the output longer than the input */
    } else if (rc != 0 || !json_equal(v, back)) {
        abort();
    }
    json_decref(back);
    free(text);
    json_decref(v);
    return 0;
}
