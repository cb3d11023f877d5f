/* Every libc function the shim calls past its own hooks, declared once (torsocks' way):
 * FY_LIBC_TABLE lists name, return type and parameters, and from it come one function
 * pointer each in `fy_libc` and an accessor; `LIBC(open)(path, flags, mode)` calls the
 * real open.  init.c checks each line against glibc's own declaration.
 *
 * Resolved lazily, on first use, not all at load: dlsym(RTLD_NEXT) of all of them in the
 * constructor measured 18-24 us per process start here (141 names, /bin/true, sh, python3),
 * and a build runs thousands of short processes that each call a handful of these; one
 * lookup costs about 0.15 us.  Lazy resolution also serves a hook called before our
 * constructor ran (another library's constructor), as it must.
 */
#ifndef FY_LIBC_H
#define FY_LIBC_H

#include <dirent.h>
#include <dlfcn.h>
#include <ftw.h>
#include <glob.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <utime.h>

#define FY_LIBC_TABLE(X)                                                                                  \
    /* open, close, dup, fcntl, sync (io.c) */                                                            \
    X(int, open, (const char *, int, ...))                                                                \
    X(int, open64, (const char *, int, ...))                                                              \
    X(int, openat, (int, const char *, int, ...))                                                         \
    X(int, openat64, (int, const char *, int, ...))                                                       \
    X(int, close, (int))                                                                                  \
    X(int, close_range, (unsigned int, unsigned int, int))                                                \
    X(int, dup, (int))                                                                                    \
    X(int, dup2, (int, int))                                                                              \
    X(int, dup3, (int, int, int))                                                                         \
    X(int, fcntl, (int, int, ...))                                                                        \
    X(int, fcntl64, (int, int, ...))                                                                      \
    X(int, fsync, (int))                                                                                  \
    X(int, fdatasync, (int))                                                                              \
    /* data (direct.c, copy.c, mmap.c, wire.c) */                                                         \
    X(ssize_t, read, (int, void *, size_t))                                                               \
    X(ssize_t, write, (int, const void *, size_t))                                                        \
    X(ssize_t, pread, (int, void *, size_t, off_t))                                                       \
    X(ssize_t, pread64, (int, void *, size_t, off64_t))                                                   \
    X(ssize_t, pwrite, (int, const void *, size_t, off_t))                                                \
    X(ssize_t, pwrite64, (int, const void *, size_t, off64_t))                                            \
    X(ssize_t, readv, (int, const struct iovec *, int))                                                   \
    X(ssize_t, writev, (int, const struct iovec *, int))                                                  \
    X(ssize_t, preadv, (int, const struct iovec *, int, off_t))                                           \
    X(ssize_t, preadv64, (int, const struct iovec *, int, off64_t))                                       \
    X(ssize_t, pwritev, (int, const struct iovec *, int, off_t))                                          \
    X(ssize_t, pwritev64, (int, const struct iovec *, int, off64_t))                                      \
    X(ssize_t, preadv2, (int, const struct iovec *, int, off_t, int))                                     \
    X(ssize_t, preadv64v2, (int, const struct iovec *, int, off64_t, int))                                \
    X(ssize_t, pwritev2, (int, const struct iovec *, int, off_t, int))                                    \
    X(ssize_t, pwritev64v2, (int, const struct iovec *, int, off64_t, int))                               \
    X(off_t, lseek, (int, off_t, int))                                                                    \
    X(off64_t, lseek64, (int, off64_t, int))                                                              \
    X(ssize_t, copy_file_range, (int, off64_t *, int, off64_t *, size_t, unsigned int))                   \
    X(ssize_t, sendfile, (int, int, off_t *, size_t))                                                     \
    X(ssize_t, sendfile64, (int, int, off64_t *, size_t))                                                 \
    X(ssize_t, splice, (int, off64_t *, int, off64_t *, size_t, unsigned int))                            \
    X(void *, mmap, (void *, size_t, int, int, int, off_t))                                               \
    X(int, msync, (void *, size_t, int))                                                                  \
    X(int, munmap, (void *, size_t))                                                                      \
    /* size and space (space.c) */                                                                        \
    X(int, truncate, (const char *, off_t))                                                               \
    X(int, ftruncate, (int, off_t))                                                                       \
    X(int, fallocate, (int, int, off_t, off_t))                                                           \
    X(int, posix_fallocate, (int, off_t, off_t))                                                          \
    /* stat, access (stat.c) */                                                                           \
    X(int, fstat, (int, struct stat *))                                                                   \
    X(int, fstatat, (int, const char *, struct stat *, int))                                              \
    X(int, statx, (int, const char *, int, unsigned int, struct statx *))                                 \
    X(long, syscall, (long, ...))                                                                         \
    X(void *, dlopen, (const char *, int))                                                                \
    X(int, faccessat, (int, const char *, int, int))                                                      \
    X(int, access, (const char *, int))                                                                   \
    X(int, euidaccess, (const char *, int))                                                               \
    X(int, statfs, (const char *, struct statfs *))                                                       \
    X(int, statfs64, (const char *, struct statfs64 *))                                                   \
    X(int, fstatfs, (int, struct statfs *))                                                               \
    X(int, fstatfs64, (int, struct statfs64 *))                                                           \
    X(int, statvfs, (const char *, struct statvfs *))                                                     \
    X(int, statvfs64, (const char *, struct statvfs64 *))                                                 \
    X(int, fstatvfs, (int, struct statvfs *))                                                             \
    X(int, fstatvfs64, (int, struct statvfs64 *))                                                         \
    /* directories (dir.c) */                                                                             \
    X(DIR *, opendir, (const char *))                                                                     \
    X(DIR *, fdopendir, (int))                                                                            \
    X(struct dirent *, readdir, (DIR *))                                                                  \
    X(struct dirent64 *, readdir64, (DIR *))                                                              \
    X(int, readdir_r, (DIR *, struct dirent *, struct dirent **))                                         \
    X(int, readdir64_r, (DIR *, struct dirent64 *, struct dirent64 **))                                   \
    X(int, closedir, (DIR *))                                                                             \
    X(void, rewinddir, (DIR *))                                                                           \
    X(long, telldir, (DIR *))                                                                             \
    X(void, seekdir, (DIR *, long))                                                                       \
    X(int, dirfd, (DIR *))                                                                                \
    X(ssize_t, getdents64, (int, void *, size_t))                                                         \
    /* namespace.c, link.c */                                                                             \
    X(int, mkdirat, (int, const char *, mode_t))                                                          \
    X(int, unlinkat, (int, const char *, int))                                                            \
    X(int, renameat2, (int, const char *, int, const char *, unsigned int))                               \
    X(int, mknodat, (int, const char *, mode_t, dev_t))                                                   \
    X(ssize_t, readlink, (const char *, char *, size_t))                                                  \
    X(ssize_t, readlinkat, (int, const char *, char *, size_t))                                           \
    X(int, symlinkat, (const char *, int, const char *))                                                  \
    X(int, linkat, (int, const char *, int, const char *, int))                                           \
    /* cwd (cwd.c) */                                                                                     \
    X(int, chdir, (const char *))                                                                         \
    X(int, fchdir, (int))                                                                                 \
    X(char *, getcwd, (char *, size_t))                                                                   \
    /* attributes (attr.c) */                                                                             \
    X(int, chmod, (const char *, mode_t))                                                                 \
    X(int, fchmod, (int, mode_t))                                                                         \
    X(int, fchmodat, (int, const char *, mode_t, int))                                                    \
    X(int, chown, (const char *, uid_t, gid_t))                                                           \
    X(int, lchown, (const char *, uid_t, gid_t))                                                          \
    X(int, fchown, (int, uid_t, gid_t))                                                                   \
    X(int, fchownat, (int, const char *, uid_t, gid_t, int))                                              \
    X(int, utimensat, (int, const char *, const struct timespec *, int))                                  \
    X(int, futimens, (int, const struct timespec *))                                                      \
    X(int, utimes, (const char *, const struct timeval *))                                                \
    X(int, lutimes, (const char *, const struct timeval *))                                               \
    X(int, futimes, (int, const struct timeval *))                                                        \
    X(int, utime, (const char *, const struct utimbuf *))                                                 \
    /* extended attributes (xattr.c) */                                                                   \
    X(ssize_t, getxattr, (const char *, const char *, void *, size_t))                                    \
    X(ssize_t, lgetxattr, (const char *, const char *, void *, size_t))                                   \
    X(ssize_t, fgetxattr, (int, const char *, void *, size_t))                                            \
    X(ssize_t, listxattr, (const char *, char *, size_t))                                                 \
    X(ssize_t, llistxattr, (const char *, char *, size_t))                                                \
    X(ssize_t, flistxattr, (int, char *, size_t))                                                         \
    X(int, setxattr, (const char *, const char *, const void *, size_t, int))                             \
    X(int, lsetxattr, (const char *, const char *, const void *, size_t, int))                            \
    X(int, fsetxattr, (int, const char *, const void *, size_t, int))                                     \
    X(int, removexattr, (const char *, const char *))                                                     \
    X(int, lremovexattr, (const char *, const char *))                                                    \
    X(int, fremovexattr, (int, const char *))                                                             \
    /* locks (lock.c) */                                                                                  \
    X(int, flock, (int, int))                                                                             \
    X(int, lockf, (int, int, off_t))                                                                      \
    X(int, lockf64, (int, int, off64_t))                                                                  \
    X(pid_t, fork, (void))                                                                                \
    /* stdio (stdio.c) */                                                                                 \
    X(FILE *, fopen, (const char *, const char *))                                                        \
    X(FILE *, fopen64, (const char *, const char *))                                                      \
    X(FILE *, fdopen, (int, const char *))                                                                \
    X(FILE *, freopen, (const char *, const char *, FILE *))                                              \
    X(FILE *, freopen64, (const char *, const char *, FILE *))                                            \
    X(int, fclose, (FILE *))                                                                              \
    X(int, fileno, (FILE *))                                                                              \
    X(int, fileno_unlocked, (FILE *))                                                                     \
    /* temporaries (tmp.c) */                                                                             \
    X(int, mkstemp, (char *))                                                                             \
    X(int, mkstemp64, (char *))                                                                           \
    X(int, mkostemp, (char *, int))                                                                       \
    X(int, mkostemp64, (char *, int))                                                                     \
    X(int, mkstemps, (char *, int))                                                                       \
    X(int, mkstemps64, (char *, int))                                                                     \
    X(int, mkostemps, (char *, int, int))                                                                 \
    X(int, mkostemps64, (char *, int, int))                                                               \
    X(char *, mkdtemp, (char *))                                                                          \
    /* walks and names (walk.c) */                                                                        \
    X(char *, realpath, (const char *, char *))                                                           \
    X(int, scandirat64, (int, const char *, struct dirent64 ***, int (*)(const struct dirent64 *),        \
                         int (*)(const struct dirent64 **, const struct dirent64 **)))                    \
    X(int, nftw, (const char *, int (*)(const char *, const struct stat *, int, struct FTW *), int, int)) \
    X(int, nftw64, (const char *, int (*)(const char *, const struct stat64 *, int, struct FTW *), int,   \
                    int))                                                                                 \
    X(int, ftw, (const char *, int (*)(const char *, const struct stat *, int), int))                     \
    X(int, ftw64, (const char *, int (*)(const char *, const struct stat64 *, int), int))                 \
    X(int, glob, (const char *, int, int (*)(const char *, int), glob_t *))                               \
    X(int, glob64, (const char *, int, int (*)(const char *, int), glob64_t *))                           \
    /* processes (proc.c), the process's umask (init.c) */                                                \
    X(int, execve, (const char *, char *const[], char *const[]))                                          \
    X(int, execvpe, (const char *, char *const[], char *const[]))                                         \
    X(int, fexecve, (int, char *const[], char *const[]))                                                  \
    X(int, posix_spawn, (pid_t *, const char *, const posix_spawn_file_actions_t *,                       \
                         const posix_spawnattr_t *, char *const[], char *const[]))                        \
    X(int, posix_spawnp, (pid_t *, const char *, const posix_spawn_file_actions_t *,                      \
                          const posix_spawnattr_t *, char *const[], char *const[]))                       \
    X(int, system, (const char *))                                                                        \
    X(FILE *, popen, (const char *, const char *))                                                        \
    X(mode_t, umask, (mode_t))                                                                            \
    /* SIGSEGV and SIGBUS, which the shim's fault handler keeps (fault.c) */                             \
    X(int, sigaction, (int, const struct sigaction *, struct sigaction *))                                \
    X(__sighandler_t, signal, (int, __sighandler_t))                                                      \
    X(__sighandler_t, sysv_signal, (int, __sighandler_t))                                                 \
    X(__sighandler_t, sigset, (int, __sighandler_t))

#define FY_LIBC_TYPE(ret, name, params) typedef ret fy_libc_##name##_t params;
FY_LIBC_TABLE(FY_LIBC_TYPE)
#undef FY_LIBC_TYPE

extern struct fy_libc {
#define FY_LIBC_SLOT(ret, name, params) fy_libc_##name##_t *name;
    FY_LIBC_TABLE(FY_LIBC_SLOT)
#undef FY_LIBC_SLOT
} fy_libc;

/* dlsym(RTLD_NEXT, name); aborts when libc lacks it (nothing sensible could follow). */
void *fy_next(const char *name);

/* Racing threads store the same pointer; the atomics only keep that race defined. */
#define FY_LIBC_ACCESSOR(ret, name, params)                                                  \
    static inline fy_libc_##name##_t *fy_libc_##name(void)                                  \
    {                                                                                        \
        fy_libc_##name##_t *f = __atomic_load_n(&fy_libc.name, __ATOMIC_RELAXED);           \
        if (__builtin_expect(!f, 0)) {                                                       \
            f = (fy_libc_##name##_t *)fy_next(#name);                                       \
            __atomic_store_n(&fy_libc.name, f, __ATOMIC_RELAXED);                            \
        }                                                                                    \
        return f;                                                                            \
    }
FY_LIBC_TABLE(FY_LIBC_ACCESSOR)
#undef FY_LIBC_ACCESSOR

/* The real `name`, past every hook: LIBC(open)(path, flags, mode). */
#define LIBC(name) (*fy_libc_##name())

#endif
