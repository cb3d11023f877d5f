/* Symbolic and hard links.
 *
 * Reading a link: cache mode reads the replica's copy (the agent places remote symlinks
 * as symlinks); direct mode finds the target in the parent's LISTDIR, which carries it.
 * Making links: SYMLINK and LINK (cache mode: in the replica first, then one-way).  A
 * link between a ferry path and a local one, or two mounts, is EXDEV as the kernel says
 * across file systems.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Direct mode: the target of `ferry` from its parent's listing. */
static ssize_t remote_readlink(const char *ferry, char *buf, size_t size)
{
    char parent[PATH_MAX];
    const char *slash = strrchr(ferry, '/');
    size_t root = fy_mount_root(ferry);
    if (!slash || (size_t)(slash - ferry) < root) { errno = EINVAL; return -1; }  /* the mount root */
    memcpy(parent, ferry, (size_t)(slash - ferry));
    parent[slash - ferry] = 0;
    const char *name = slash + 1;
    size_t nlen = strlen(name);
    struct fy_enc e = {.len = 0};
    fy_put_str(&e, parent);
    char *rep;
    size_t len;
    int rc = fy_call_alloc(FY_OP_LISTDIR, &e, &rep, &len);
    if (rc < 0) { free(rep); return fy_fail(rc); }
    uint32_t count = 0;
    if (len >= 4) memcpy(&count, rep, 4);
    size_t pos = 4;
    ssize_t out = -1;
    errno = ENOENT;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t nl, tl;
        struct fy_attr a;
        if (pos + 4 > len) break;
        memcpy(&nl, rep + pos, 4);
        if (pos + 8 + nl > len) break;
        memcpy(&tl, rep + pos + 4 + nl, 4);
        if (pos + 8 + nl + tl + sizeof a > len) break;
        if (nl == nlen && memcmp(rep + pos + 4, name, nl) == 0) {
            memcpy(&a, rep + pos + 8 + nl + tl, sizeof a);
            if (!S_ISLNK(a.mode)) { errno = EINVAL; break; }
            out = (ssize_t)(tl < size ? tl : size);
            memcpy(buf, rep + pos + 8 + nl, (size_t)out);
            break;
        }
        pos += 8 + nl + tl + sizeof a;
    }
    free(rep);
    return out;
}

static ssize_t readlink_common(int dirfd, const char *path, char *buf, size_t size)
{
    FY_REAL(ssize_t, readlinkat, int, const char *, char *, size_t);
    struct fy_path p;
    int r = fy_resolve(dirfd, &path, &p);
    if (r == 0) return real_readlinkat(dirfd, path, buf, size);
    if (r < 0) return -1;
    if (fy_cfg.mode == FY_MODE_DIRECT) return remote_readlink(p.ferry, buf, size);
    struct stat st;
    int rc = fy_cache_stat(&p, &st, 1);
    if (rc < 0) return fy_fail(rc);
    return real_readlinkat(AT_FDCWD, p.cache, buf, size);
}

FY_EXPORT ssize_t readlink(const char *path, char *buf, size_t size) { return readlink_common(AT_FDCWD, path, buf, size); }
FY_EXPORT ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size) { return readlink_common(dirfd, path, buf, size); }
FY_EXPORT ssize_t __readlink_chk(const char *path, char *buf, size_t size, size_t buflen)
{
    (void)buflen;
    return readlink_common(AT_FDCWD, path, buf, size);
}
FY_EXPORT ssize_t __readlinkat_chk(int dirfd, const char *path, char *buf, size_t size, size_t buflen)
{
    (void)buflen;
    return readlink_common(dirfd, path, buf, size);
}

FY_EXPORT int symlinkat(const char *target, int dirfd, const char *path)
{
    FY_REAL(int, symlinkat, const char *, int, const char *);
    struct fy_path p;
    int r = fy_resolve(dirfd, &path, &p);
    if (r == 0) return real_symlinkat(target, dirfd, path);
    if (r < 0) return -1;
    struct fy_enc e = {.len = 0};
    fy_put_str(&e, target);
    fy_put_str(&e, p.ferry);
    if (fy_cfg.mode == FY_MODE_DIRECT) {
        int rc = fy_call(FY_OP_SYMLINK, 0, &e, NULL, 0, -1, NULL, 0, NULL);
        return rc < 0 ? fy_fail(rc) : 0;
    }
    int rc = fy_cache_parent(&p);
    if (rc < 0) return fy_fail(rc);
    if (real_symlinkat(target, AT_FDCWD, p.cache) < 0) return -1;
    fy_call(FY_OP_SYMLINK, FY_FLAG_ONEWAY, &e, NULL, 0, -1, NULL, 0, NULL);
    return 0;
}

FY_EXPORT int symlink(const char *target, const char *path) { return symlinkat(target, AT_FDCWD, path); }

FY_EXPORT int linkat(int olddirfd, const char *old, int newdirfd, const char *new, int flags)
{
    FY_REAL(int, linkat, int, const char *, int, const char *, int);
    struct fy_path po, pn;
    int ro = fy_resolve(olddirfd, &old, &po);
    int rn = fy_resolve(newdirfd, &new, &pn);
    if (ro < 0 || rn < 0) return -1;
    if (ro == 0 && rn == 0) return real_linkat(olddirfd, old, newdirfd, new, flags);
    if (ro != rn || !fy_same_mount(po.ferry, pn.ferry)) { errno = EXDEV; return -1; }
    struct fy_enc e = {.len = 0};
    fy_put_str(&e, po.ferry);
    fy_put_str(&e, pn.ferry);
    if (fy_cfg.mode == FY_MODE_DIRECT) {
        int rc = fy_call(FY_OP_LINK, 0, &e, NULL, 0, -1, NULL, 0, NULL);
        return rc < 0 ? fy_fail(rc) : 0;
    }
    struct stat st;
    int rc = fy_cache_stat(&po, &st, 1);    /* the source must be in the replica */
    if (rc == 0) rc = fy_cache_parent(&pn);
    if (rc < 0) return fy_fail(rc);
    if (real_linkat(AT_FDCWD, po.cache, AT_FDCWD, pn.cache, flags) < 0) return -1;
    fy_call(FY_OP_LINK, FY_FLAG_ONEWAY, &e, NULL, 0, -1, NULL, 0, NULL);
    return 0;
}

FY_EXPORT int link(const char *old, const char *new) { return linkat(AT_FDCWD, old, AT_FDCWD, new, 0); }
