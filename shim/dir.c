/* Reading directories: the DIR* calls and getdents64.
 *
 * Cache mode: opendir opens the replica directory through ferry (the agent lists it into
 * the replica first) and a real DIR* reads it.  Direct mode reads a directory fd through
 * a DIR* of ferry's own, over one LISTDIR reply fetched on first read.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fy_dirlist {
    size_t count, pos;
    struct fy_entry *ent;  /* pointing into the LISTDIR reply kept after them; 0 and 1 are "." and ".." */
};

struct rec { uint64_t ino; uint8_t type; const char *name; size_t nlen; };

static uint8_t dtype(uint32_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFDIR: return DT_DIR;
    case S_IFREG: return DT_REG;
    case S_IFLNK: return DT_LNK;
    case S_IFIFO: return DT_FIFO;
    case S_IFSOCK: return DT_SOCK;
    case S_IFCHR: return DT_CHR;
    case S_IFBLK: return DT_BLK;
    default: return DT_UNKNOWN;
    }
}

/* Fetch the listing once per open directory (allocated as one block, freed with the fd entry). */
static struct fy_dirlist *listing(struct fy_fd *f)
{
    if (f->dl) return f->dl;
    struct fy_enc e;
    fy_enc_listdir(&e, f->path);
    struct fy_rep_listdir rep;
    char *buf;
    size_t len;
    int rc = fy_call_alloc(&e, &rep, sizeof rep, &buf, &len);
    /* fy_dec_listdir refuses a count the tail cannot hold before anything is allocated */
    if (rc == 0 && rep.entries_count > len / FY_ENTRY_MIN) rc = -EIO;
    if (rc < 0) { free(buf); errno = -rc; return NULL; }
    size_t count = rep.entries_count;
    struct fy_dirlist *dl = malloc(sizeof *dl + (count + 2) * sizeof(struct fy_entry) + len);
    if (!dl) { free(buf); errno = ENOMEM; return NULL; }
    dl->ent = (struct fy_entry *)(dl + 1);
    char *data = (char *)(dl->ent + count + 2);
    memcpy(data, buf, len);
    free(buf);
    /* reply.c: exactly `count` well-formed entries (names of 1..NAME_MAX bytes, so a
     * getdents record's d_reclen and readdir's d_name always hold them), else EIO */
    if (fy_dec_listdir(data, len, rep.entries_count, dl->ent + 2) < 0) { free(dl); errno = EIO; return NULL; }
    dl->count = count + 2;
    dl->pos = 0;
    f->dl = dl;
    return dl;
}

static void record(const struct fy_dirlist *dl, size_t i, struct rec *r)
{
    if (i < 2) {
        r->ino = 1;
        r->type = DT_DIR;
        r->name = i == 0 ? "." : "..";
        r->nlen = i + 1;
        return;
    }
    const struct fy_entry *e = &dl->ent[i];
    r->ino = e->attr.ino;
    r->type = dtype(e->attr.mode);
    r->name = e->name;
    r->nlen = e->name_len;
}

struct linux_dirent64_hdr { uint64_t d_ino; int64_t d_off; unsigned short d_reclen; unsigned char d_type; } __attribute__((packed));

FY_EXPORT ssize_t getdents64(int fd, void *buf, size_t n)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f || f->kind != FY_FD_DIRECT) {
        return LIBC(getdents64)(fd, buf, n);
    }
    struct fy_dirlist *dl = listing(f);
    if (!dl) return -1;
    size_t used = 0;
    while (dl->pos < dl->count) {
        struct rec r;
        record(dl, dl->pos, &r);
        size_t reclen = (sizeof(struct linux_dirent64_hdr) + r.nlen + 1 + 7) & ~(size_t)7;
        if (used + reclen > n) break;
        struct linux_dirent64_hdr h = {r.ino, (int64_t)(dl->pos + 1), (unsigned short)reclen, r.type};
        char *out = (char *)buf + used;
        memset(out, 0, reclen);
        memcpy(out, &h, sizeof h);
        memcpy(out + sizeof h, r.name, r.nlen);
        used += reclen;
        dl->pos++;
    }
    if (used == 0 && dl->pos < dl->count) { errno = EINVAL; return -1; }
    return (ssize_t)used;
}

/* A DIR* of our own for direct-mode directories; real DIR*s never reach this code
 * unless at least one of ours is open. */
#define FY_DIR_MAGIC 0x46657272794449ULL
struct fy_dir { uint64_t magic; int fd; struct dirent64 ent; };
static int our_dirs;

static struct fy_dir *ours(DIR *d)
{
    if (!our_dirs || !d) return NULL;
    struct fy_dir *fd = (struct fy_dir *)d;
    return fd->magic == FY_DIR_MAGIC ? fd : NULL;
}

static DIR *wrap_dir(int fd)
{
    struct fy_dir *d = calloc(1, sizeof *d);
    if (!d) { errno = ENOMEM; return NULL; }
    d->magic = FY_DIR_MAGIC;
    d->fd = fd;
    __atomic_add_fetch(&our_dirs, 1, __ATOMIC_SEQ_CST);
    return (DIR *)d;
}

static DIR *opendir_ferry(const struct fy_path *p)
{
    int fd = fy_open_path(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) return NULL;
    DIR *d = fdopendir(fd);  /* the hook: ours for a direct-mode fd, libc's on the replica */
    if (!d) { int e = errno; fy_close_fd(fd); errno = e; }
    return d;
}

FY_EXPORT DIR *opendir(const char *path) { FY_PATH_HOOK(AT_FDCWD, path, NULL, LIBC(opendir)(path), opendir_ferry); }

FY_EXPORT DIR *fdopendir(int fd)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f || f->kind != FY_FD_DIRECT) return LIBC(fdopendir)(fd);
    struct stat st;
    if (fstat(fd, &st) < 0) return NULL;
    if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return NULL; }
    return wrap_dir(fd);
}

static struct dirent64 *our_readdir(struct fy_dir *d)
{
    struct fy_fd *f = fy_fd_get(d->fd);
    if (!f) { errno = EBADF; return NULL; }
    struct fy_dirlist *dl = listing(f);
    if (!dl || dl->pos >= dl->count) return NULL;
    struct rec r;
    record(dl, dl->pos++, &r);
    d->ent.d_ino = r.ino;
    d->ent.d_off = (off64_t)dl->pos;
    d->ent.d_reclen = sizeof d->ent;
    d->ent.d_type = r.type;
    size_t n = r.nlen < sizeof d->ent.d_name - 1 ? r.nlen : sizeof d->ent.d_name - 1;
    memcpy(d->ent.d_name, r.name, n);
    d->ent.d_name[n] = 0;
    return &d->ent;
}

FY_EXPORT struct dirent *readdir(DIR *dir)
{
    struct fy_dir *d = ours(dir);
    if (!d) return LIBC(readdir)(dir);
    return (struct dirent *)our_readdir(d);
}

FY_EXPORT struct dirent64 *readdir64(DIR *dir)
{
    struct fy_dir *d = ours(dir);
    if (!d) return LIBC(readdir64)(dir);
    return our_readdir(d);
}

/* Deprecated but still called (ORFA's list has them): the entry is copied out. */
static int our_readdir_r(struct fy_dir *d, struct dirent64 *entry, struct dirent64 **result)
{
    int saved = errno;
    errno = 0;
    struct dirent64 *e = our_readdir(d);
    int err = errno;
    errno = saved;
    if (!e) { *result = NULL; return err; }
    memcpy(entry, e, sizeof *e);
    *result = entry;
    return 0;
}

FY_EXPORT int readdir_r(DIR *dir, struct dirent *entry, struct dirent **result)
{
    struct fy_dir *d = ours(dir);
    if (!d) {
        return LIBC(readdir_r)(dir, entry, result);
    }
    return our_readdir_r(d, (struct dirent64 *)entry, (struct dirent64 **)result);
}

FY_EXPORT int readdir64_r(DIR *dir, struct dirent64 *entry, struct dirent64 **result)
{
    struct fy_dir *d = ours(dir);
    if (!d) {
        return LIBC(readdir64_r)(dir, entry, result);
    }
    return our_readdir_r(d, entry, result);
}

FY_EXPORT int closedir(DIR *dir)
{
    struct fy_dir *d = ours(dir);
    if (!d) {
        if (dir) fy_fd_clear(dirfd(dir));
        return LIBC(closedir)(dir);
    }
    int fd = d->fd;
    d->magic = 0;
    free(d);
    __atomic_sub_fetch(&our_dirs, 1, __ATOMIC_SEQ_CST);
    return fy_close_fd(fd);
}

FY_EXPORT void rewinddir(DIR *dir)
{
    struct fy_dir *d = ours(dir);
    if (!d) { LIBC(rewinddir)(dir); return; }
    struct fy_fd *f = fy_fd_get(d->fd);
    if (f && f->dl) { free(f->dl); f->dl = NULL; }  /* re-list: rewinddir sees changes */
}

/* A position is the index of the next entry in the directory's listing (what readdir's
 * d_off says), valid until rewinddir fetches a new listing. */
FY_EXPORT long telldir(DIR *dir)
{
    struct fy_dir *d = ours(dir);
    if (!d) return LIBC(telldir)(dir);
    struct fy_fd *f = fy_fd_get(d->fd);
    if (!f) { errno = EBADF; return -1; }
    return f->dl ? (long)f->dl->pos : 0;
}

FY_EXPORT void seekdir(DIR *dir, long pos)
{
    struct fy_dir *d = ours(dir);
    if (!d) { LIBC(seekdir)(dir, pos); return; }
    struct fy_fd *f = fy_fd_get(d->fd);
    if (!f || pos < 0) return;
    int saved = errno;  /* seekdir reports nothing */
    struct fy_dirlist *dl = pos ? listing(f) : f->dl;
    if (dl) dl->pos = (size_t)pos < dl->count ? (size_t)pos : dl->count;
    errno = saved;
}

FY_EXPORT int dirfd(DIR *dir)
{
    struct fy_dir *d = ours(dir);
    if (!d) return LIBC(dirfd)(dir);
    return d->fd;
}

