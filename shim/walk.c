/* glibc entries that walk or resolve names with glibc's own internal calls, which never
 * reach our hooks: scandir, ftw/nftw, glob, realpath, euidaccess.
 *
 * For a ferry path each is redone here on the public calls the shim hooks (opendir,
 * readdir64, fstatat, lstat, readlink, openat, fchdir), so the cache or the node answers;
 * any other path goes to libc untouched.  Semantics follow glibc's: entry order is the
 * listing's, typeflags and errors as glibc's ftw.c gives them.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Is `path`, as the program wrote it, ferry's?  *local gets the name libc must use
 * otherwise (fy_resolve may make a relative name absolute). */
static int ferry_name(int dirfd, const char **path, struct fy_path *p)
{
    return fy_cfg.mode != FY_MODE_OFF && *path && fy_resolve(dirfd, path, p) == 1;
}

/* ---------------------------------------------------------------- realpath */

/* Resolve every symlink, "." and ".." of `path` (absolute, or relative to the cwd) with
 * the hooked lstat/readlink, as the kernel would: out (PATH_MAX) gets the result.
 * 0 or -errno. */
int fy_realpath(const char *path, char *out)
{
    if (!path) return -EINVAL;
    if (!*path) return -ENOENT;
    char rest[2 * PATH_MAX], link[PATH_MAX];
    size_t done = 0;  /* out[0..done) is resolved, "" meaning "/" */
    size_t pl = strlen(path);
    if (pl >= sizeof rest) return -ENAMETOOLONG;
    if (path[0] != '/') {
        if (!getcwd(out, PATH_MAX)) return -errno;
        done = strlen(out);
        if (done == 1) done = 0;
    }
    memcpy(rest, path, pl + 1);
    int hops = 0;
    char *r = rest;
    while (*r) {
        while (*r == '/') r++;
        if (!*r) break;
        char *e = strchr(r, '/');
        size_t n = e ? (size_t)(e - r) : strlen(r);
        if (n == 1 && r[0] == '.') { r += n; continue; }
        if (n == 2 && r[0] == '.' && r[1] == '.') {
            while (done > 0 && out[done - 1] != '/') done--;
            if (done > 0) done--;
            r += n;
            continue;
        }
        if (done + 1 + n + 1 > PATH_MAX) return -ENAMETOOLONG;
        out[done] = '/';
        memcpy(out + done + 1, r, n);
        out[done + 1 + n] = 0;
        r += n;
        int more = 0;
        for (const char *q = r; *q; q++) if (*q != '/') { more = 1; break; }
        /* an ancestor of a mount is a directory to ferry, even with nothing there locally */
        if (fy_above_mount(out, done + 1 + n)) { done += 1 + n; continue; }
        struct stat st;
        if (lstat(out, &st) < 0) return -errno;
        if (S_ISLNK(st.st_mode)) {
            if (++hops > 40) return -ELOOP;
            ssize_t ln = readlink(out, link, sizeof link - 1);
            if (ln < 0) return -errno;
            link[ln] = 0;
            size_t rl = strlen(r);
            if ((size_t)ln + rl + 1 > sizeof rest) return -ENAMETOOLONG;
            memmove(rest + ln, r, rl + 1);
            memcpy(rest, link, (size_t)ln);
            r = rest;
            if (link[0] == '/') done = 0;
            continue;
        }
        if (more && !S_ISDIR(st.st_mode)) return -ENOTDIR;
        done += 1 + n;
    }
    if (done == 0) out[done++] = '/';
    out[done] = 0;
    return 0;
}

static char *realpath_common(const char *path, char *resolved)
{
    struct fy_path p;
    const char *name = path;
    if (!ferry_name(AT_FDCWD, &name, &p)) return LIBC(realpath)(name, resolved);
    char buf[PATH_MAX];
    int rc = fy_realpath(p.ferry, buf);
    if (rc < 0) { errno = -rc; return NULL; }
    if (!resolved) return strdup(buf);
    strcpy(resolved, buf);
    return resolved;
}

FY_EXPORT char *realpath(const char *path, char *resolved) { return realpath_common(path, resolved); }
FY_EXPORT char *canonicalize_file_name(const char *path) { return realpath_common(path, NULL); }
FY_EXPORT char *__realpath_chk(const char *path, char *resolved, size_t len)
{
    (void)len;  /* callers pass PATH_MAX or more, as the fortified check demands */
    return realpath_common(path, resolved);
}

/* ---------------------------------------------------------------- euidaccess */

static int eaccess_common(const char *path, int mode)
{
    struct fy_path p;
    const char *name = path;
    if (!ferry_name(AT_FDCWD, &name, &p)) return LIBC(euidaccess)(name, mode);
    return faccessat(AT_FDCWD, p.ferry, mode, AT_EACCESS);
}

FY_EXPORT int euidaccess(const char *path, int mode) { return eaccess_common(path, mode); }
FY_EXPORT int eaccess(const char *path, int mode) { return eaccess_common(path, mode); }

/* ---------------------------------------------------------------- scandir */

typedef int (*sel_fn)(const struct dirent64 *);
typedef int (*cmp_fn)(const struct dirent64 **, const struct dirent64 **);

/* struct dirent and dirent64 have one layout on 64-bit Linux: one implementation. */
static int scan(DIR *d, struct dirent64 ***out, sel_fn sel, cmp_fn cmp)
{
    if (!d) return -1;
    struct dirent64 **v = NULL, *e;
    size_t n = 0, cap = 0;
    int err = 0;
    for (;;) {
        errno = 0;
        if (!(e = readdir64(d))) { err = errno; break; }
        if (sel && !sel(e)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            struct dirent64 **nv = realloc(v, cap * sizeof *v);
            if (!nv) { err = ENOMEM; break; }
            v = nv;
        }
        size_t sz = offsetof(struct dirent64, d_name) + strlen(e->d_name) + 1;
        struct dirent64 *c = malloc(sz > sizeof *c ? sz : sizeof *c);
        if (!c) { err = ENOMEM; break; }
        memcpy(c, e, sz);
        c->d_reclen = (unsigned short)sz;
        v[n++] = c;
    }
    closedir(d);
    if (err) {
        while (n) free(v[--n]);
        free(v);
        errno = err;
        return -1;
    }
    if (cmp && n > 1) qsort(v, n, sizeof *v, (int (*)(const void *, const void *))(void (*)(void))cmp);
    *out = v;
    return (int)n;
}

static int scandirat_common(int dirfd, const char *path, struct dirent64 ***list, sel_fn sel, cmp_fn cmp)
{
    struct fy_path p;
    const char *name = path;
    if (!ferry_name(dirfd, &name, &p)) return LIBC(scandirat64)(dirfd, name, list, sel, cmp);
    return scan(opendir(p.ferry), list, sel, cmp);
}

FY_EXPORT int scandir(const char *path, struct dirent ***list, int (*sel)(const struct dirent *),
                      int (*cmp)(const struct dirent **, const struct dirent **))
{
    return scandirat_common(AT_FDCWD, path, (struct dirent64 ***)list, (sel_fn)(void (*)(void))sel,
                            (cmp_fn)(void (*)(void))cmp);
}

FY_EXPORT int scandir64(const char *path, struct dirent64 ***list, sel_fn sel, cmp_fn cmp)
{
    return scandirat_common(AT_FDCWD, path, list, sel, cmp);
}

FY_EXPORT int scandirat(int dirfd, const char *path, struct dirent ***list, int (*sel)(const struct dirent *),
                        int (*cmp)(const struct dirent **, const struct dirent **))
{
    return scandirat_common(dirfd, path, (struct dirent64 ***)list, (sel_fn)(void (*)(void))sel,
                            (cmp_fn)(void (*)(void))cmp);
}

FY_EXPORT int scandirat64(int dirfd, const char *path, struct dirent64 ***list, sel_fn sel, cmp_fn cmp)
{
    return scandirat_common(dirfd, path, list, sel, cmp);
}

/* ---------------------------------------------------------------- ftw / nftw */

typedef int (*nftw_fn)(const char *, const struct stat *, int, struct FTW *);
typedef int (*ftw_fn)(const char *, const struct stat *, int);

struct walk {
    int flags;
    nftw_fn fn;
    ftw_fn fn3;          /* ftw: three arguments, and no FTW_SL/FTW_DP/FTW_SLN */
    dev_t dev;           /* of the top directory, for FTW_MOUNT */
    struct { dev_t dev; ino_t ino; } *seen;  /* directories walked, when following links */
    size_t nseen, capseen;
    struct FTW ftw;
    char path[PATH_MAX];
};

static int call(struct walk *w, int flag, const struct stat *st)
{
    if (!w->fn3) return w->fn(w->path, st, flag, &w->ftw);
    return w->fn3(w->path, st, flag == FTW_SL ? FTW_F : flag == FTW_DP ? FTW_D : flag == FTW_SLN ? FTW_NS : flag);
}

static int acting(const struct walk *w, int r, int what) { return (w->flags & FTW_ACTIONRETVAL) && r == what; }

/* A directory already walked (following symlinks, a loop or a second name): skip it. */
static int seen_before(struct walk *w, const struct stat *st)
{
    for (size_t i = 0; i < w->nseen; i++)
        if (w->seen[i].dev == st->st_dev && w->seen[i].ino == st->st_ino) return 1;
    if (w->nseen == w->capseen) {
        size_t cap = w->capseen ? 2 * w->capseen : 32;
        void *n = realloc(w->seen, cap * sizeof *w->seen);
        if (!n) return -1;
        w->seen = n;
        w->capseen = cap;
    }
    w->seen[w->nseen].dev = st->st_dev;
    w->seen[w->nseen++].ino = st->st_ino;
    return 0;
}

static int walk_entry(struct walk *w, int dfd, const char *name);

static int walk_dir(struct walk *w, int dfd, const char *name, const struct stat *st)
{
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0) close(fd);
        errno = e;
        return e == EACCES ? call(w, FTW_DNR, st) : -1;
    }
    int r = 0, back = -1;
    if (!(w->flags & FTW_DEPTH)) {
        r = call(w, FTW_D, st);
        if (r) { closedir(d); return acting(w, r, FTW_SKIP_SUBTREE) ? 0 : r; }
    }
    if (w->flags & FTW_CHDIR) {
        back = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (back < 0 || fchdir(dirfd(d)) < 0) { int e = errno; if (back >= 0) close(back); closedir(d); errno = e; return -1; }
    }
    size_t len = strlen(w->path);
    int base = w->ftw.base;
    size_t at = len && w->path[len - 1] == '/' ? len : len + 1;
    w->ftw.level++;
    for (;;) {
        errno = 0;
        struct dirent64 *e = readdir64(d);
        if (!e) { if (errno) r = -1; break; }
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        size_t nl = strlen(e->d_name);
        if (at + nl + 1 > sizeof w->path) { errno = ENAMETOOLONG; r = -1; break; }
        w->path[len] = '/';
        memcpy(w->path + at, e->d_name, nl + 1);
        w->ftw.base = (int)at;
        r = walk_entry(w, dirfd(d), e->d_name);
        w->path[len] = 0;
        if (r) {
            if (acting(w, r, FTW_SKIP_SUBTREE)) { r = 0; continue; }
            if (acting(w, r, FTW_SKIP_SIBLINGS)) r = 0;
            break;
        }
    }
    int e = errno;
    w->ftw.level--;
    w->ftw.base = base;
    closedir(d);
    if (back >= 0) {
        if (fchdir(back) < 0 && r == 0) { e = errno; r = -1; }
        close(back);
    }
    if (r == 0 && (w->flags & FTW_DEPTH)) r = call(w, FTW_DP, st);
    errno = e;
    return r;
}

/* glibc's process_entry: stat, classify, descend. */
static int walk_entry(struct walk *w, int dfd, const char *name)
{
    struct stat st;
    int flag, phys = w->flags & FTW_PHYS;
    if (fstatat(dfd, name, &st, phys ? AT_SYMLINK_NOFOLLOW : 0) < 0) {
        if (errno != EACCES && errno != ENOENT) return -1;
        if (phys) flag = FTW_NS;
        else flag = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) ? FTW_SLN : FTW_NS;
    } else {
        flag = S_ISDIR(st.st_mode) ? FTW_D : S_ISLNK(st.st_mode) ? FTW_SL : FTW_F;
    }
    if (flag != FTW_NS && (w->flags & FTW_MOUNT) && st.st_dev != w->dev) return 0;
    if (flag != FTW_D) return call(w, flag, &st);
    if (!phys) {
        int s = seen_before(w, &st);
        if (s) return s < 0 ? -1 : 0;
    }
    return walk_dir(w, dfd, name, &st);
}

static int walk(const char *path, struct walk *w)
{
    size_t n = strlen(path);
    if (n == 0) { errno = ENOENT; return -1; }
    if (n >= sizeof w->path) { errno = ENAMETOOLONG; return -1; }
    memcpy(w->path, path, n + 1);
    while (n > 1 && w->path[n - 1] == '/') w->path[--n] = 0;
    size_t base = n;
    while (base > 0 && w->path[base - 1] != '/') base--;
    w->ftw.base = (int)base;
    w->ftw.level = 0;
    const char *name = w->path;
    int cwd = -1, r;
    if (w->flags & FTW_CHDIR) {
        /* Like glibc: the callbacks run in each entry's directory, the top's included. */
        cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cwd < 0) return -1;
        if (base > 0) {
            char dir[PATH_MAX];
            size_t dl = base > 1 ? base - 1 : 1;  /* "a/b/c" -> "a/b", "/c" -> "/" */
            memcpy(dir, w->path, dl);
            dir[dl] = 0;
            if (chdir(dir) < 0) { int e = errno; close(cwd); errno = e; return -1; }
            name = w->path + base;
        }
    }
    struct stat st;
    int phys = w->flags & FTW_PHYS;
    if (fstatat(AT_FDCWD, name, &st, phys ? AT_SYMLINK_NOFOLLOW : 0) < 0) {
        if (!phys && errno == ENOENT && fstatat(AT_FDCWD, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            r = call(w, FTW_SLN, &st);
        else
            r = -1;  /* nothing to say about the object: no callback */
    } else if (S_ISDIR(st.st_mode)) {
        w->dev = st.st_dev;
        r = !phys && seen_before(w, &st) < 0 ? -1 : walk_dir(w, AT_FDCWD, name, &st);
    } else {
        r = call(w, S_ISLNK(st.st_mode) ? FTW_SL : FTW_F, &st);
    }
    int e = errno;
    if (cwd >= 0) {
        if (fchdir(cwd) < 0 && r == 0) { e = errno; r = -1; }
        close(cwd);
    }
    free(w->seen);
    if (acting(w, r, FTW_SKIP_SUBTREE) || acting(w, r, FTW_SKIP_SIBLINGS)) r = 0;
    errno = e;
    return r;
}

static int nftw_common(const char *path, nftw_fn fn, ftw_fn fn3, int flags)
{
    struct walk *w = calloc(1, sizeof *w);
    if (!w) { errno = ENOMEM; return -1; }
    w->fn = fn;
    w->fn3 = fn3;
    w->flags = flags;
    int r = walk(path, w);
    int e = errno;
    free(w);
    errno = e;
    return r;
}

FY_EXPORT int nftw(const char *path, nftw_fn fn, int nopenfd, int flags)
{
    struct fy_path p;
    const char *name = path;
    if (!ferry_name(AT_FDCWD, &name, &p)) return LIBC(nftw)(name, fn, nopenfd, flags);
    return nftw_common(path, fn, NULL, flags);
}

FY_EXPORT int nftw64(const char *path, int (*fn)(const char *, const struct stat64 *, int, struct FTW *), int nopenfd,
                     int flags)
{
    struct fy_path p;
    const char *name = path;
    if (!ferry_name(AT_FDCWD, &name, &p)) return LIBC(nftw64)(name, (void *)fn, nopenfd, flags);
    return nftw_common(path, (nftw_fn)(void (*)(void))fn, NULL, flags);
}

FY_EXPORT int ftw(const char *path, ftw_fn fn, int nopenfd)
{
    struct fy_path p;
    const char *name = path;
    if (!ferry_name(AT_FDCWD, &name, &p)) return LIBC(ftw)(name, fn, nopenfd);
    return nftw_common(path, NULL, fn, 0);
}

FY_EXPORT int ftw64(const char *path, int (*fn)(const char *, const struct stat64 *, int), int nopenfd)
{
    struct fy_path p;
    const char *name = path;
    if (!ferry_name(AT_FDCWD, &name, &p)) return LIBC(ftw64)(name, (void *)fn, nopenfd);
    return nftw_common(path, NULL, (ftw_fn)(void (*)(void))fn, 0);
}

/* ---------------------------------------------------------------- glob */

/* glob lists directories with glibc's internal calls; GLOB_ALTDIRFUNC makes it use ours.
 * Only for patterns that lead into a mount (or any relative one from a ferry cwd). */
static int glob_is_ferry(const char *pattern, int flags)
{
    if (fy_cfg.mode == FY_MODE_OFF || !pattern || (flags & GLOB_ALTDIRFUNC)) return 0;
    if (pattern[0] == '/') return fy_mount_root(pattern) != 0;
    struct fy_path p;
    const char *name = pattern;
    /* a relative pattern from the local cwd /mnt of mount /mnt/x may lead into it */
    return fy_vcwd_set || ferry_name(AT_FDCWD, &name, &p);
}

static struct dirent *alt_readdir(void *d) { return readdir(d); }
static struct dirent64 *alt_readdir64(void *d) { return readdir64(d); }
static void alt_closedir(void *d) { closedir(d); }
static void *alt_opendir(const char *path) { return opendir(path); }

/* glob and glob64 differ only in their types. */
#define GLOB_HOOK(name, glob_type, readdir_fn, lstat_fn, stat_fn)                                 \
    FY_EXPORT int name(const char *pattern, int flags, int (*errfunc)(const char *, int), glob_type *g) \
    {                                                                                             \
        if (glob_is_ferry(pattern, flags)) {                                                      \
            g->gl_opendir = alt_opendir;                                                          \
            g->gl_readdir = readdir_fn;                                                           \
            g->gl_closedir = alt_closedir;                                                        \
            g->gl_lstat = lstat_fn;                                                               \
            g->gl_stat = stat_fn;                                                                 \
            flags |= GLOB_ALTDIRFUNC;                                                             \
        }                                                                                         \
        return LIBC(name)(pattern, flags, errfunc, g);                                            \
    }
GLOB_HOOK(glob, glob_t, alt_readdir, lstat, stat)
GLOB_HOOK(glob64, glob64_t, alt_readdir64, lstat64, stat64)
