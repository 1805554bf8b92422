#include "identity.h"

#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define B64_LEN 44

void identity_node_id(const uint8_t pub[static IDENTITY_KEY_LEN],
                      uint8_t ret_id[static NODE_ID_LEN])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, pub, IDENTITY_KEY_LEN, NULL, 0);
    memcpy(ret_id, h, NODE_ID_LEN);
}

bool identity_key_binds_id(const uint8_t pub[static IDENTITY_KEY_LEN],
                           const uint8_t id[static NODE_ID_LEN])
{
    uint8_t want[NODE_ID_LEN];
    identity_node_id(pub, want);
    return sodium_memcmp(want, id, NODE_ID_LEN) == 0;
}

void identity_id_format(const uint8_t id[static NODE_ID_LEN], char out[static NODE_ID_STR_LEN + 1])
{
    sodium_bin2hex(out, NODE_ID_STR_LEN + 1, id, NODE_ID_LEN);
}

void identity_wipe(struct identity *id)
{
    sodium_memzero(id->priv, sizeof id->priv);
}

static int derive(struct identity *out, const uint8_t priv[static IDENTITY_KEY_LEN])
{
    memcpy(out->priv, priv, IDENTITY_KEY_LEN);
    if (crypto_scalarmult_base(out->pub, out->priv) != 0)
        return MESH_EINVAL;
    identity_node_id(out->pub, out->id);
    identity_id_format(out->id, out->id_str);
    return 0;
}

static int load(const char *path, struct identity *out, struct mesh_err *err)
{
    char buf[128];
    uint8_t priv[IDENTITY_KEY_LEN];
    size_t len = 0;
    int rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mesh_errf(err, -errno, "cannot open %s: %s", path, strerror(errno));
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0)
        return mesh_errf(err, MESH_EIO, "cannot read %s", path);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (strlen(buf) != B64_LEN ||
        sodium_base642bin(priv, sizeof priv, buf, B64_LEN, NULL, &len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        len != IDENTITY_KEY_LEN) {
        rc = mesh_errf(err, MESH_EINVAL,
                       "%s is not a node key (32 bytes in base64); move it away to make a new "
                       "identity",
                       path);
        goto out;
    }
    rc = derive(out, priv);
    if (rc < 0)
        mesh_errf(err, rc, "%s holds an unusable key", path);
out:
    sodium_memzero(buf, sizeof buf);
    sodium_memzero(priv, sizeof priv);
    return rc;
}

static int create(const char *dir, const char *path, struct identity *out, struct mesh_err *err)
{
    char tmp[4096];
    char b64[B64_LEN + 1];
    uint8_t priv[IDENTITY_KEY_LEN];
    char line[B64_LEN + 1];
    int rc;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, IDENTITY_FILENAME) >= sizeof tmp)
        return mesh_errf(err, MESH_EINVAL, "data dir path too long");
    randombytes_buf(priv, sizeof priv);
    rc = derive(out, priv);
    if (rc < 0)
        goto out;
    sodium_bin2base64(b64, sizeof b64, priv, sizeof priv, sodium_base64_VARIANT_ORIGINAL);
    memcpy(line, b64, B64_LEN);
    line[B64_LEN] = '\n';
    rc = mesh_file_replace(tmp, path, line, sizeof line, 0600, err);
    sodium_memzero(line, sizeof line);
out:
    sodium_memzero(b64, sizeof b64);
    sodium_memzero(priv, sizeof priv);
    return rc;
}

int identity_load_or_create(const char *dir, struct identity *ret, int *ret_created,
                            struct mesh_err *err)
{
    char path[4096];
    struct identity id;
    int rc, created = 0;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, IDENTITY_FILENAME) >= sizeof path)
        return mesh_errf(err, MESH_EINVAL, "data dir path too long");
    if (access(path, F_OK) == 0) {
        rc = load(path, &id, err);
    } else {
        rc = create(dir, path, &id, err);
        created = 1;
    }
    if (rc < 0) {
        identity_wipe(&id);
        return rc;
    }
    *ret = id;
    identity_wipe(&id);
    if (ret_created)
        *ret_created = created;
    return 0;
}
