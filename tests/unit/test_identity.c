#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "identity.h"
#include "meshkey.h"

static void rm_dir(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, IDENTITY_FILENAME);
    unlink(path);
    rmdir(dir);
}

static void create_then_reuse(void **state)
{
    (void)state;
    char dir[] = "/tmp/fogmesh-test-idXXXXXX";
    assert_non_null(mkdtemp(dir));
    struct identity a, b;
    struct mesh_err err = {0};
    int created = 0;
    assert_int_equal(identity_load_or_create(dir, &a, &created, &err), 0);
    assert_int_equal(created, 1);
    assert_int_equal(strlen(a.id_str), NODE_ID_STR_LEN);

    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, IDENTITY_FILENAME);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    assert_int_equal(identity_load_or_create(dir, &b, &created, &err), 0);
    assert_int_equal(created, 0);
    assert_memory_equal(a.pub, b.pub, IDENTITY_KEY_LEN);
    assert_string_equal(a.id_str, b.id_str);

    /* The id is the hash of the public key. */
    uint8_t id[NODE_ID_LEN];
    identity_node_id(a.pub, id);
    assert_memory_equal(id, a.id, NODE_ID_LEN);
    rm_dir(dir);
}

static void corrupt_file_is_refused(void **state)
{
    (void)state;
    char dir[] = "/tmp/fogmesh-test-idXXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, IDENTITY_FILENAME);
    FILE *f = fopen(path, "w");
    fputs("not a key\n", f);
    fclose(f);
    struct identity id;
    struct mesh_err err = {0};
    assert_int_equal(identity_load_or_create(dir, &id, NULL, &err), MESH_EINVAL);
    assert_non_null(strstr(err.msg, "not a node key"));
    rm_dir(dir);
}

static void mesh_key_format(void **state)
{
    (void)state;
    uint8_t key[MESH_KEY_LEN], back[MESH_KEY_LEN];
    char b64[MESH_KEY_B64_LEN + 1];
    struct mesh_err err = {0};
    mesh_key_generate(key);
    mesh_key_encode(key, b64);
    assert_int_equal(strlen(b64), MESH_KEY_B64_LEN);
    assert_int_equal(mesh_key_decode(b64, back, &err), 0);
    assert_memory_equal(key, back, MESH_KEY_LEN);

    assert_int_equal(mesh_key_decode("short", back, &err), MESH_EINVAL);
    assert_non_null(strstr(err.msg, "meshctl keygen"));
    /* 44 characters that are not base64 of 32 bytes. */
    assert_int_equal(mesh_key_decode("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=", back, &err),
                     MESH_EINVAL);
}

static void mesh_key_file_mode(void **state)
{
    (void)state;
    char path[] = "/tmp/fogmesh-test-keyXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint8_t key[MESH_KEY_LEN], back[MESH_KEY_LEN];
    char b64[MESH_KEY_B64_LEN + 1];
    mesh_key_generate(key);
    mesh_key_encode(key, b64);
    dprintf(fd, "# mesh key\n%s\n", b64);
    close(fd);
    struct mesh_err err = {0};
    chmod(path, 0600);
    assert_int_equal(mesh_key_load(path, back, &err), 0);
    assert_memory_equal(key, back, MESH_KEY_LEN);
    chmod(path, 0644);
    assert_int_equal(mesh_key_load(path, back, &err), MESH_EINVAL);
    assert_non_null(strstr(err.msg, "chmod 600"));
    unlink(path);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_then_reuse),
        cmocka_unit_test(corrupt_file_is_refused),
        cmocka_unit_test(mesh_key_format),
        cmocka_unit_test(mesh_key_file_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
