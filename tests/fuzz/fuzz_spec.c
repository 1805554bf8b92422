/* libFuzzer harness for application specs (consensus/spec.h): arbitrary bytes are parsed as JSON
 * (NULs in strings allowed, to reach that check) and validated.
 * Checks: no crash, no leak; a failure leaves the output untouched and yields at least one
 * problem whose text formats and converts to JSON; a success yields a canonical spec that
 * validates to itself (canonical(canonical(x)) == canonical(x)) with its keys already sorted.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon -Iconsensus \
 *       tests/fuzz/fuzz_spec.c consensus/spec.c common/err.c -ljansson -o fuzz_spec */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_errors(const struct spec_errors *errs)
{
    if (errs->count == 0 || errs->count > SPEC_ERRORS_MAX)
        abort();
    for (size_t i = 0; i < errs->count; i++)
        if (!memchr(errs->e[i].path, '\0', sizeof errs->e[i].path) ||
            !memchr(errs->e[i].msg, '\0', sizeof errs->e[i].msg) || !errs->e[i].msg[0])
            abort();
    char line[256];
    size_t need = spec_errors_format(errs, line, sizeof line);
    if (need == 0 || strlen(line) != (need < sizeof line ? need : sizeof line - 1))
        abort();
    json_t *arr = spec_errors_to_json(errs); /* NULL would mean a path that is not UTF-8 */
    if (!arr || json_array_size(arr) != errs->count + (errs->more ? 1 : 0))
        abort();
    json_decref(arr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *in = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
    if (!in)
        return 0;
    static const json_t *const untouched = (const json_t *)&untouched;
    json_t *out = (json_t *)untouched;
    struct spec_errors *errs = malloc(sizeof *errs);
    if (!errs)
        abort();
    int rc = spec_validate(in, &out, errs);
    if (rc != 0) {
        if (out != untouched || (rc != MESH_EINVAL && rc != MESH_ETOOBIG))
            abort();
        check_errors(errs);
    } else {
        json_t *again = NULL;
        if (spec_validate(out, &again, errs) != 0 || !json_equal(out, again))
            abort();
        char *sorted = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
        char *as_is = json_dumps(out, JSON_COMPACT);
        if (!sorted || !as_is || strcmp(sorted, as_is) != 0)
            abort();
        free(sorted);
        free(as_is);
        size_t n = json_array_size(json_object_get(out, "microservices"));
        for (size_t i = 0; i < n; i++)
            if (!spec_images_for_arch(out, i, "amd64") && !spec_images_for_arch(out, i, "arm64") &&
                !spec_images_for_arch(out, i, "arm"))
                abort(); /* every microservice runs somewhere */
        json_decref(again);
        json_decref(out);
    }
    free(errs);
    json_decref(in);
    return 0;
}
