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

static void to_statfs(const struct fy_rep_statfs *s, void *out);

/* STATFS of ferry path `ferry`, converted into `out` by conv: 0, or -1 with errno. */
static int remote_statfs(const char *ferry, void *out, void (*conv)(const struct fy_rep_statfs *, void *))
{
    struct fy_enc e;
    fy_enc_statfs(&e, ferry);
    struct fy_rep_statfs s;
    int rc = fy_call(&e, -1, &s, sizeof s, NULL, 0, NULL);
    if (rc < 0) return fy_fail(rc);
    union { struct statfs f; struct statvfs v; } b;
    conv(&s, &b);
    /* The kernel fills a statfs (EFAULT for a wild one); glibc converts it to a statvfs in
     * user space, where a wild one crashes the program, as it does here. */
    if (conv == to_statfs) return fy_copy_out(out, &b.f, sizeof b.f);
    memcpy(out, &b.v, sizeof b.v);
    return 0;
}

static int path_statfs(const struct fy_path *p, void *out, void (*conv)(const struct fy_rep_statfs *, void *))
{
    return remote_statfs(p->ferry, out, conv);
}

/* struct statfs64 and statvfs64 are struct statfs and statvfs on 64-bit Linux. */
static void to_statfs(const struct fy_rep_statfs *s, void *out)
{
    struct statfs *b = out;
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

static void to_statvfs(const struct fy_rep_statfs *s, void *out)
{
    struct statvfs *b = out;
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
#define PATH_STATFS_HOOK(name, buft, conv)                                               \
    FY_EXPORT int name(const char *path, buft *buf)                                      \
    {                                                                                    \
        FY_PATH_HOOK(AT_FDCWD, path, -1, LIBC(name)(path, buf), path_statfs, buf, conv); \
    }
#define FD_STATFS_HOOK(name, buft, conv)                                    \
    FY_EXPORT int name(int fd, buft *buf)                                   \
    {                                                                       \
        struct fy_fd *f = fy_fd_get(fd);                                    \
        return f ? remote_statfs(f->path, buf, conv) : LIBC(name)(fd, buf); \
    }

PATH_STATFS_HOOK(statfs, struct statfs, to_statfs)
PATH_STATFS_HOOK(statfs64, struct statfs64, to_statfs)
FD_STATFS_HOOK(fstatfs, struct statfs, to_statfs)
FD_STATFS_HOOK(fstatfs64, struct statfs64, to_statfs)
PATH_STATFS_HOOK(statvfs, struct statvfs, to_statvfs)
PATH_STATFS_HOOK(statvfs64, struct statvfs64, to_statvfs)
FD_STATFS_HOOK(fstatvfs, struct statvfs, to_statvfs)
FD_STATFS_HOOK(fstatvfs64, struct statvfs64, to_statvfs)
