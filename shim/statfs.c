/* statfs/statvfs on ferry paths and fds: the node's file system, whatever the mode (in
 * cache mode the replica's tmpfs would say nothing true about the node's space).
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>

#define FERRY_FS_MAGIC 0x46455259 /* "FERY": f_type of a ferry path */

/* 1 with *out filled; 0 not ferry's; -1 errno set. */
static int remote_statfs(int fd, const char *path, struct fy_rep_statfs *out)
{
    const char *ferry;
    struct fy_path p;
    if (path) {
        int r = fy_resolve(AT_FDCWD, &path, &p);
        if (r <= 0) return r;
        ferry = p.ferry;
    } else {
        struct fy_fd *f = fy_fd_get(fd);
        if (!f) return 0;
        ferry = f->path;
    }
    struct fy_enc e;
    fy_enc_statfs(&e, ferry);
    int rc = fy_call(&e, -1, out, sizeof *out, NULL, 0, NULL);
    return rc < 0 ? fy_fail(rc) : 1;
}

static void to_statfs(const struct fy_rep_statfs *s, struct statfs *b)
{
    memset(b, 0, sizeof *b);
    b->f_type = FERRY_FS_MAGIC;
    b->f_bsize = (long)s->bsize;
    b->f_frsize = (long)s->frsize;
    b->f_blocks = s->blocks;
    b->f_bfree = s->bfree;
    b->f_bavail = s->bavail;
    b->f_files = s->files;
    b->f_ffree = s->ffree;
    b->f_namelen = (long)s->namemax;
}

static void to_statvfs(const struct fy_rep_statfs *s, struct statvfs *b)
{
    memset(b, 0, sizeof *b);
    b->f_bsize = s->bsize;
    b->f_frsize = s->frsize;
    b->f_blocks = s->blocks;
    b->f_bfree = s->bfree;
    b->f_bavail = s->bavail;
    b->f_files = s->files;
    b->f_ffree = s->ffree;
    b->f_favail = s->favail;
    b->f_fsid = FERRY_FS_MAGIC;
    b->f_namemax = s->namemax;
}

/* The eight entry points differ in path-or-fd and in the struct they fill. */
#define STATFS_HOOK(name, argt, arg, lookup, buft, conv) \
    FY_EXPORT int name(argt arg, buft *buf)              \
    {                                                    \
        struct fy_rep_statfs s;                          \
        int r = lookup;                                  \
        if (r < 0) return -1;                            \
        if (r > 0) { conv(&s, (void *)buf); return 0; }  \
        return LIBC(name)(arg, buf);                     \
    }

STATFS_HOOK(statfs, const char *, path, remote_statfs(-1, path, &s), struct statfs, to_statfs)
STATFS_HOOK(statfs64, const char *, path, remote_statfs(-1, path, &s), struct statfs64, to_statfs)
STATFS_HOOK(fstatfs, int, fd, remote_statfs(fd, NULL, &s), struct statfs, to_statfs)
STATFS_HOOK(fstatfs64, int, fd, remote_statfs(fd, NULL, &s), struct statfs64, to_statfs)
STATFS_HOOK(statvfs, const char *, path, remote_statfs(-1, path, &s), struct statvfs, to_statvfs)
STATFS_HOOK(statvfs64, const char *, path, remote_statfs(-1, path, &s), struct statvfs64, to_statvfs)
STATFS_HOOK(fstatvfs, int, fd, remote_statfs(fd, NULL, &s), struct statvfs, to_statvfs)
STATFS_HOOK(fstatvfs64, int, fd, remote_statfs(fd, NULL, &s), struct statvfs64, to_statvfs)
