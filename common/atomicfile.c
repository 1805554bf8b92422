/* Atomic, durable replacement of small files; see atomicfile.h. */
#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mesh_dir_sync(const char *dir, struct mesh_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return mesh_errf(err, -errno, "cannot open %s: %s", dir, strerror(errno));
    int rc = 0;
    if (fsync(fd) != 0 && errno != EINVAL) /* EINVAL: a file system without directory fsync */
        rc = mesh_errf(err, -errno, "cannot sync %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

/* The directory part of path ("." when it has none). */
static void dir_of(const char *path, char *buf, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(buf, len, ".");
    else if (slash == path)
        snprintf(buf, len, "/");
    else
        snprintf(buf, len, "%.*s", (int)(slash - path), path);
}

int mesh_file_replace(const char *tmp, const char *path, const void *data, size_t len, mode_t mode,
                      struct mesh_err *err)
{
    int rc;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return mesh_errf(err, -errno, "cannot write %s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = mesh_errf(err, n < 0 ? -errno : -EIO, "cannot write %s: %s", tmp,
                           n < 0 ? strerror(errno) : "short write");
            goto fail;
        }
        p += n;
        left -= (size_t)n;
    }
    /* The umask may have narrowed mode at open; the caller's mode is what it asked for. */
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
        rc = mesh_errf(err, -errno, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = mesh_errf(err, -errno, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = mesh_errf(err, -errno, "cannot replace %s: %s", path, strerror(errno));
        goto fail;
    }
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    return mesh_dir_sync(dir, err);
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}
