/* Calls given a wild pointer (0xDEADC0DE), which the kernel answers with EFAULT: a path,
 * or a buffer the call fills or reads.  Each call runs in a child of its own, so a crash
 * shows as one line ("killed by signal 11") and the rest still run; the parent prints
 * one line per call.  tests/test_wild_pointers.py compares the transcript of a run on a
 * local directory with runs under ferry on a ferry directory and on a local one.
 *
 *   wild_pointers DIR      DIR: an empty directory (f, l -> f and d are made in it)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <utime.h>

#define W ((char *)0xDEADC0DEUL)
#define WS ((void *)0xDEADC0DEUL)

extern char **environ;
static char F[PATH_MAX], L[PATH_MAX], D[PATH_MAX], X[PATH_MAX];
/* Globals, so the calls below (nested functions) need no trampolines on the stack. */
static char *args[] = {"true", NULL};
static struct stat st;
static struct timeval tv[2];
static struct timespec ts[2];
static char buf[256];
static pid_t pid;

static void said(const char *what, long rc, int err)
{
    if (rc < 0) printf("%s: %s\n", what, strerrorname_np(err));
    else printf("%s: %ld\n", what, rc);
}

/* Run `expr` (a call returning < 0 with errno on failure) in a child and report it. */
#define CALL(what, expr) run(what, ({ long fn_(void) { return (long)(expr); } fn_; }), 0)
/* The same for a call that returns an error number (posix_spawn, pthread_*). */
#define CALL_ERRNUM(what, expr) run(what, ({ long fn_(void) { return (long)(expr); } fn_; }), 1)
/* A call returning a pointer: NULL is the failure. */
#define CALL_PTR(what, expr) run(what, ({ long fn_(void) { return (expr) ? 0 : -1; } fn_; }), 0)

static void run(const char *what, long (*fn)(void), int errnum)
{
    fflush(stdout);
    int pfd[2];
    if (pipe(pfd) < 0) { perror("pipe"); exit(2); }
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        errno = 0;
        long rc = fn();
        int err = errno;
        if (errnum && rc > 0) { err = (int)rc; rc = -1; }
        long msg[2] = {rc, err};
        if (write(pfd[1], msg, sizeof msg) != sizeof msg) _exit(3);
        _exit(0);
    }
    close(pfd[1]);
    long msg[2];
    ssize_t n = read(pfd[0], msg, sizeof msg);
    close(pfd[0]);
    int status;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) printf("%s: killed by signal %d\n", what, WTERMSIG(status));
    else if (n != sizeof msg) printf("%s: no answer (exit %d)\n", what, WEXITSTATUS(status));
    else said(what, msg[0], (int)msg[1]);
}

/* A name in a shared mapping past the end of its file: reading it is SIGBUS, where the
 * kernel says EFAULT. */
static const char *past_eof(void)
{
    char tmpl[] = "/tmp/wild_pointers.XXXXXX";
    int fd = mkstemp(tmpl);
    unlink(tmpl);
    if (fd < 0 || ftruncate(fd, 4096) < 0) return W;
    char *m = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
    return m == MAP_FAILED ? W : m + 4096;
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: wild_pointers DIR\n"); return 2; }
    snprintf(F, sizeof F, "%s/f", argv[1]);
    snprintf(L, sizeof L, "%s/l", argv[1]);
    snprintf(D, sizeof D, "%s/d", argv[1]);
    snprintf(X, sizeof X, "%s/x", argv[1]);
    int fd = open(F, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "hello\n", 6) != 6 || close(fd) < 0) { perror(F); return 2; }
    if (symlink("f", L) < 0 || mkdir(D, 0755) < 0) { perror(L); return 2; }

    /* A wild path: the kernel reads it and says EFAULT. */
    CALL("open", open(W, O_RDONLY));
    CALL("open past EOF", open(past_eof(), O_RDONLY));
    CALL("stat past EOF", stat(past_eof(), &st));
    CALL("open O_CREAT", open(W, O_CREAT | O_WRONLY, 0644));
    CALL("openat", openat(AT_FDCWD, W, O_RDONLY));
    CALL("creat", creat(W, 0644));
    CALL("stat", stat(W, &st));
    CALL("lstat", lstat(W, &st));
    CALL("fstatat", fstatat(AT_FDCWD, W, &st, 0));
    CALL("fstatat AT_EMPTY_PATH", fstatat(AT_FDCWD, W, &st, AT_EMPTY_PATH));
    CALL("statx", statx(AT_FDCWD, W, 0, STATX_BASIC_STATS, (struct statx *)buf));
    CALL("statx AT_EMPTY_PATH", statx(AT_FDCWD, W, AT_EMPTY_PATH, STATX_BASIC_STATS, (struct statx *)buf));
    CALL("access", access(W, F_OK));
    CALL("faccessat", faccessat(AT_FDCWD, W, R_OK, 0));
    CALL("euidaccess", euidaccess(W, F_OK));
    CALL("chmod", chmod(W, 0644));
    CALL("fchmodat", fchmodat(AT_FDCWD, W, 0644, 0));
    CALL("chown", chown(W, -1, -1));
    CALL("lchown", lchown(W, -1, -1));
    CALL("fchownat", fchownat(AT_FDCWD, W, -1, -1, 0));
    CALL("utime", utime(W, NULL));
    CALL("utimes", utimes(W, tv));
    CALL("lutimes", lutimes(W, tv));
    CALL("utimensat", utimensat(AT_FDCWD, W, ts, 0));
    CALL("truncate", truncate(W, 0));
    CALL("mkdir", mkdir(W, 0755));
    CALL("mkdirat", mkdirat(AT_FDCWD, W, 0755));
    CALL("rmdir", rmdir(W));
    CALL("unlink", unlink(W));
    CALL("unlinkat", unlinkat(AT_FDCWD, W, 0));
    CALL("mknod", mknod(W, S_IFIFO | 0644, 0));
    CALL("mkfifo", mkfifo(W, 0644));
    CALL("chdir", chdir(W));
    CALL("readlink", readlink(W, buf, sizeof buf));
    CALL("readlinkat", readlinkat(AT_FDCWD, W, buf, sizeof buf));
    CALL("statfs", statfs(W, (struct statfs *)buf));
    CALL("statvfs", statvfs(W, (struct statvfs *)buf));
    CALL("getxattr", getxattr(W, "user.x", buf, sizeof buf));
    CALL("lgetxattr", lgetxattr(W, "user.x", buf, sizeof buf));
    CALL("listxattr", listxattr(W, buf, sizeof buf));
    CALL("setxattr", setxattr(W, "user.x", "v", 1, 0));
    CALL("removexattr", removexattr(W, "user.x"));
    CALL("rename from", rename(W, X));
    CALL("rename to", rename(F, W));
    CALL("renameat2 to", renameat2(AT_FDCWD, F, AT_FDCWD, W, RENAME_NOREPLACE));
    CALL("link from", link(W, X));
    CALL("link to", link(F, W));
    CALL("linkat to", linkat(AT_FDCWD, F, AT_FDCWD, W, 0));
    CALL("symlink target", symlink(W, X));
    CALL("symlink name", symlink("f", W));
    CALL("execve", execve(W, args, environ));
    CALL("execv", execv(W, args));
    CALL("execve wild argv", execve("/bin/true", (char **)WS, environ));
    CALL("execve wild envp", execve("/bin/true", args, (char **)WS));
    CALL("execve wild arg", ({ char *a_[] = {"true", W, NULL}; execve("/bin/true", a_, environ); }));
    CALL_ERRNUM("posix_spawn", posix_spawn(&pid, W, NULL, NULL, args, environ));
    CALL_PTR("fopen", fopen(W, "r"));
    CALL_PTR("freopen", freopen(W, "r", stdin));

    /* A name under DIR and a wild buffer the call fills or reads. */
    CALL("stat buf", stat(F, (struct stat *)WS));
    CALL("lstat buf", lstat(L, (struct stat *)WS));
    CALL("fstatat buf", fstatat(AT_FDCWD, F, (struct stat *)WS, 0));
    CALL("statx buf", statx(AT_FDCWD, F, 0, STATX_BASIC_STATS, (struct statx *)WS));
    CALL("fstat buf", ({ int f_ = open(F, O_RDONLY); fstat(f_, (struct stat *)WS); }));
    CALL("statfs buf", statfs(D, (struct statfs *)WS));
    CALL("statvfs buf", statvfs(D, (struct statvfs *)WS));
    CALL("readlink buf", readlink(L, W, 64));
    CALL("utimes times", utimes(F, (struct timeval *)WS));
    CALL("utimensat times", utimensat(AT_FDCWD, F, (struct timespec *)WS, 0));
    CALL("getcwd buf", ({ chdir(D) < 0 ? -1 : (getcwd(W, PATH_MAX) ? 0 : -1); }));
    CALL("read buf", ({ int f_ = open(F, O_RDONLY); read(f_, W, 4); }));
    CALL("write buf", ({ int f_ = open(X, O_CREAT | O_WRONLY, 0644); write(f_, W, 4); }));
    CALL("pread buf", ({ int f_ = open(F, O_RDONLY); pread(f_, W, 4, 0); }));
    CALL("readv iov", ({ int f_ = open(F, O_RDONLY); readv(f_, (struct iovec *)WS, 1); }));
    CALL("readv base", ({ int f_ = open(F, O_RDONLY); struct iovec v_ = {W, 4}; readv(f_, &v_, 1); }));
    CALL("writev iov", ({ int f_ = open(X, O_CREAT | O_WRONLY, 0644); writev(f_, (struct iovec *)WS, 1); }));
    CALL("pwritev base", ({ int f_ = open(X, O_CREAT | O_WRONLY, 0644); struct iovec v_ = {W, 4}; pwritev(f_, &v_, 1, 0); }));
    CALL("read then", ({ int f_ = open(F, O_RDONLY); read(f_, W, 4) < 0 ? read(f_, buf, sizeof buf) : -2; }));
    CALL("sigaction act", sigaction(SIGSEGV, (struct sigaction *)WS, NULL));
    CALL("sigaction oldact", sigaction(SIGSEGV, NULL, (struct sigaction *)WS));

    /* The files are as they were. */
    CALL("stat f", ({ stat(F, &st) < 0 ? -1 : (long)st.st_size; }));
    CALL("readlink l", readlink(L, buf, sizeof buf));
    return 0;
}
