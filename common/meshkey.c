#include "meshkey.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void mesh_key_generate(uint8_t key[static MESH_KEY_LEN])
{
    randombytes_buf(key, MESH_KEY_LEN);
}

void mesh_key_encode(const uint8_t key[static MESH_KEY_LEN], char out[static MESH_KEY_B64_LEN + 1])
{
    sodium_bin2base64(out, MESH_KEY_B64_LEN + 1, key, MESH_KEY_LEN, sodium_base64_VARIANT_ORIGINAL);
}

void mesh_key_fingerprint(const uint8_t key[static MESH_KEY_LEN],
                          uint8_t ret_fp[static MESH_KEY_FP_LEN])
{
    static const char domain[] = "fogmesh-key-fp";
    uint8_t h[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const uint8_t *)domain, sizeof domain - 1);
    crypto_generichash_update(&st, key, MESH_KEY_LEN);
    crypto_generichash_final(&st, h, sizeof h);
    memcpy(ret_fp, h, MESH_KEY_FP_LEN);
    sodium_memzero(&st, sizeof st);
}

void mesh_key_fp_format(const uint8_t fp[static MESH_KEY_FP_LEN],
                        char out[static MESH_KEY_FP_STR_LEN + 1])
{
    sodium_bin2hex(out, MESH_KEY_FP_STR_LEN + 1, fp, MESH_KEY_FP_LEN);
}

int mesh_key_decode(const char *text, uint8_t ret_key[static MESH_KEY_LEN], struct mesh_err *err)
{
    uint8_t key[MESH_KEY_LEN];
    size_t len = 0;
    const char *end = NULL;

    while (isspace((unsigned char)*text))
        text++;
    size_t tlen = strlen(text);
    while (tlen && isspace((unsigned char)text[tlen - 1]))
        tlen--;
    if (tlen != MESH_KEY_B64_LEN)
        return mesh_errf(err, MESH_EINVAL,
                         "a mesh key is %d base64 characters, this one has %zu (make one with "
                         "`meshctl keygen`)",
                         MESH_KEY_B64_LEN, tlen);
    if (sodium_base642bin(key, sizeof key, text, tlen, NULL, &len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        len != MESH_KEY_LEN || end != text + tlen) {
        sodium_memzero(key, sizeof key);
        return mesh_errf(err, MESH_EINVAL, "a mesh key must be %d bytes in base64", MESH_KEY_LEN);
    }
    memcpy(ret_key, key, MESH_KEY_LEN);
    sodium_memzero(key, sizeof key);
    return 0;
}

int mesh_key_load(const char *path, uint8_t ret_key[static MESH_KEY_LEN], struct mesh_err *err)
{
    char buf[512];
    int rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mesh_errf(err, -errno, "cannot open key file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = mesh_errf(err, MESH_EINVAL, "key file %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        rc = mesh_errf(err, MESH_EINVAL,
                       "key file %s is readable by others (mode %03o); run chmod 600 %s", path,
                       (unsigned)(st.st_mode & 0777), path);
        goto out;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        rc = mesh_errf(err, -errno, "cannot read key file %s: %s", path, strerror(errno));
        goto out;
    }
    buf[n] = '\0';
    /* Skip comment lines; the key is the first other non-empty line. */
    char *line = buf, *key_line = NULL;
    while (line && *line) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (*p && *p != '#') {
            key_line = p;
            break;
        }
        line = next;
    }
    if (!key_line) {
        rc = mesh_errf(err, MESH_EINVAL, "key file %s holds no key", path);
        goto out;
    }
    rc = mesh_key_decode(key_line, ret_key, err);
    if (rc < 0)
        mesh_err_wrapf(err, "key file %s", path);
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}
