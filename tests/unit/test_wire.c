/* common/wire.h's string copy, the one way decoders take a peer's names: the length bound, the
 * validator, NUL bytes, and nothing written to dst on failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "wire.h"

/* Packs s (len bytes, may hold a NUL) as one msgpack str; returns the encoded length. */
static size_t pack(uint8_t *buf, size_t cap, const char *s, size_t len)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    assert_int_equal(wire_pack_str(&w.pk, s, len), 0);
    assert_false(w.overflow);
    return w.len;
}

static bool lower_only(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] < 'a' || s[i] > 'z')
            return false;
    return true;
}

static int copy(const char *s, size_t len, char *dst, size_t cap, wire_str_valid_fn valid)
{
    uint8_t buf[512];
    struct wire_rd r;
    wire_rd_init(&r, buf, pack(buf, sizeof buf, s, len));
    return wire_rd_str_copy(&r, dst, cap, valid);
}

static void copies_within_bound(void **state)
{
    (void)state;
    char dst[6];
    assert_int_equal(copy("abcde", 5, dst, sizeof dst, NULL), 0);
    assert_string_equal(dst, "abcde");
    assert_int_equal(copy("", 0, dst, sizeof dst, NULL), 0);
    assert_string_equal(dst, "");
    /* Exactly cap bytes leave no room for the NUL. */
    memcpy(dst, "keep!", 6);
    assert_int_equal(copy("abcdef", 6, dst, sizeof dst, NULL), MESH_EMALFORMED);
    assert_string_equal(dst, "keep!");
}

static void validator_decides(void **state)
{
    (void)state;
    char dst[16] = "keep";
    assert_int_equal(copy("abc", 3, dst, sizeof dst, lower_only), 0);
    assert_string_equal(dst, "abc");
    memcpy(dst, "keep", 5);
    assert_int_equal(copy("aBc", 3, dst, sizeof dst, lower_only), MESH_EMALFORMED);
    assert_string_equal(dst, "keep");
}

static void nul_inside_refused_without_validator(void **state)
{
    (void)state;
    char dst[16] = "keep";
    assert_int_equal(copy("ab\0cd", 5, dst, sizeof dst, NULL), MESH_EMALFORMED);
    assert_string_equal(dst, "keep");
}

static void not_a_string_or_truncated(void **state)
{
    (void)state;
    char dst[16] = "keep";
    struct wire_rd r;
    const uint8_t uint7[] = {0x07};
    wire_rd_init(&r, uint7, sizeof uint7);
    assert_int_equal(wire_rd_str_copy(&r, dst, sizeof dst, NULL), MESH_EMALFORMED);
    const uint8_t short_str[] = {0xa5, 'a', 'b'}; /* says 5 bytes, has 2 */
    wire_rd_init(&r, short_str, sizeof short_str);
    assert_int_equal(wire_rd_str_copy(&r, dst, sizeof dst, NULL), MESH_EMALFORMED);
    assert_string_equal(dst, "keep");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(copies_within_bound),
        cmocka_unit_test(validator_decides),
        cmocka_unit_test(nul_inside_refused_without_validator),
        cmocka_unit_test(not_a_string_or_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
