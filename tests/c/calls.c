/* A tour of the calls issue 4 lists, each called by its own name (not through a wrapper that
 * glibc might implement with another).  Run in a directory: locally, then on a ferry path in
 * each mode; tests/test_calls.py compares the transcripts line by line, so everything
 * printed is something a file system must agree on (no inode numbers, no clock times).
 *
 *   calls DIR
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <utime.h>

static const char *dir;
static char buf[PATH_MAX];

static const char *P(const char *name)
{
    static char slots[4][PATH_MAX];
    static int next;
    char *s = slots[next++ % 4];
    snprintf(s, PATH_MAX, "%s/%s", dir, name);
    return s;
}

/* Print what a call returned: "ok", a value, or the errno's name. */
static void said(const char *what, long rc)
{
    if (rc < 0) printf("%s: %s\n", what, strerrorname_np(errno));
    else printf("%s: %ld\n", what, rc);
}

static void mode_of(const char *what, const char *path, int follow)
{
    struct stat st;
    int rc = follow ? stat(path, &st) : lstat(path, &st);
    if (rc < 0) { said(what, rc); return; }
    if (S_ISDIR(st.st_mode))  /* a directory's size and link count are its file system's own */
        printf("%s: mode %o\n", what, st.st_mode);
    else
        printf("%s: mode %o size %lld nlink %lu\n", what, st.st_mode, (long long)st.st_size, (unsigned long)st.st_nlink);
}

static void times_of(const char *what, const char *path, int follow)
{
    struct stat st;
    int rc = follow ? stat(path, &st) : lstat(path, &st);
    if (rc < 0) { said(what, rc); return; }
    printf("%s: atime %lld.%09ld mtime %lld.%09ld\n", what, (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* Walks visit in readdir order, which is each file system's own: collect, sort, print. */
static char *walked[64];
static int nwalked;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void print_walk(void)
{
    qsort(walked, (size_t)nwalked, sizeof walked[0], cmp_str);
    for (int i = 0; i < nwalked; i++) { printf("%s\n", walked[i]); free(walked[i]); }
    nwalked = 0;
}

static int ftw_cb(const char *path, const struct stat *st, int flag)
{
    if (nwalked < 64 && asprintf(&walked[nwalked], "ftw: %s %o %d", path + strlen(dir), st->st_mode & S_IFMT, flag) > 0)
        nwalked++;
    return 0;
}

static int nftw_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    if (nwalked < 64 && asprintf(&walked[nwalked], "nftw: %s %o %d level %d base %s", path + strlen(dir),
                                 st->st_mode & S_IFMT, flag, f->level, path + f->base) > 0)
        nwalked++;
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: calls DIR\n"); return 2; }
    dir = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    umask(022);
    printf("umask: %o\n", umask(027));  /* 022 back; 027 from here on */

    /* ---- open flags ---- */
    int fd = open(P("f"), O_CREAT | O_EXCL | O_WRONLY, 0666);
    said("open O_CREAT|O_EXCL", fd >= 0 ? 0 : -1);
    said("write", write(fd, "hello world\n", 12));
    close(fd);
    mode_of("umask applied", P("f"), 1);
    said("open O_EXCL existing", open(P("f"), O_CREAT | O_EXCL | O_WRONLY, 0666));
    fd = open(P("f"), O_WRONLY | O_APPEND);
    lseek(fd, 0, SEEK_SET);
    said("write O_APPEND", write(fd, "more\n", 5));
    said("lseek O_APPEND offset", lseek(fd, 0, SEEK_CUR));
    close(fd);
    mode_of("after append", P("f"), 1);
    said("open O_DIRECTORY on file", open(P("f"), O_RDONLY | O_DIRECTORY));
    said("symlink", symlink("f", P("ln")));
    said("open O_NOFOLLOW on link", open(P("ln"), O_RDONLY | O_NOFOLLOW));
    fd = open(P("f"), O_RDONLY | O_CLOEXEC);
    said("O_CLOEXEC sets FD_CLOEXEC", fcntl(fd, F_GETFD) & FD_CLOEXEC);
    said("F_GETFL access", fcntl(fd, F_GETFL) & O_ACCMODE);
    close(fd);
    fd = open(P("f"), O_RDWR | O_TRUNC);
    mode_of("after O_TRUNC", P("f"), 1);
    said("writev", writev(fd, (struct iovec[]){{"abc", 3}, {"defgh", 5}}, 2));
    char a[4] = {0}, b[5] = {0};
    said("preadv", preadv(fd, (struct iovec[]){{a, 3}, {b, 4}}, 2, 1));
    printf("preadv data: %s %s\n", a, b);
    said("pwritev", pwritev(fd, (struct iovec[]){{"XY", 2}}, 1, 6));
    said("pread", pread(fd, buf, 100, 0));
    printf("pread data: %.8s\n", buf);
    said("fsync", fsync(fd));
    said("fdatasync", fdatasync(fd));
    close(fd);

    /* ---- sizes, sparse files, space ---- */
    fd = open(P("sparse"), O_CREAT | O_RDWR, 0644);
    const off_t big = (off_t)5 << 30;  /* past 4 GiB */
    said("pwrite at 5 GiB", pwrite(fd, "end", 3, big));
    struct stat st;
    fstat(fd, &st);
    printf("sparse size: %lld\n", (long long)st.st_size);
    memset(buf, 'x', 8);
    said("pread in the hole", pread(fd, buf, 4, (off_t)1 << 32));
    printf("hole reads zeros: %d\n", buf[0] == 0 && buf[3] == 0);
    said("ftruncate64", ftruncate64(fd, 4096));
    said("posix_fallocate", posix_fallocate(fd, 0, 8192));
    said("fallocate KEEP_SIZE", fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 16384));
    fstat(fd, &st);
    printf("after fallocate size: %lld\n", (long long)st.st_size);
    close(fd);
    said("truncate", truncate(P("sparse"), 10));
    mode_of("after truncate", P("sparse"), 1);

    /* ---- copies ---- */
    int in = open(P("f"), O_RDONLY), out = open(P("copy1"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    said("copy_file_range", copy_file_range(in, NULL, out, NULL, 100, 0));
    close(out);
    out = open(P("copy2"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    off_t off = 2;
    said("sendfile", sendfile(out, in, &off, 5));
    printf("sendfile offset: %lld\n", (long long)off);
    close(out);
    close(in);
    mode_of("copy1", P("copy1"), 1);
    mode_of("copy2", P("copy2"), 1);

    /* ---- links ---- */
    said("link", link(P("f"), P("hard")));
    said("linkat", linkat(AT_FDCWD, P("f"), AT_FDCWD, P("hard2"), 0));
    mode_of("nlink", P("f"), 1);
    said("symlinkat", symlinkat("copy1", AT_FDCWD, P("ln2")));
    ssize_t n = readlink(P("ln"), buf, sizeof buf);
    printf("readlink: %.*s\n", (int)(n > 0 ? n : 0), buf);
    n = readlinkat(AT_FDCWD, P("ln2"), buf, sizeof buf);
    printf("readlinkat: %.*s\n", (int)(n > 0 ? n : 0), buf);
    said("readlink on a file", readlink(P("f"), buf, sizeof buf));
    mode_of("lstat link", P("ln"), 0);

    /* ---- modes and owners ---- */
    said("chmod", chmod(P("f"), 0600));
    fd = open(P("copy1"), O_RDONLY);
    said("fchmod", fchmod(fd, 0640));
    said("fchown", fchown(fd, getuid(), getgid()));
    close(fd);
    said("fchmodat", fchmodat(AT_FDCWD, P("copy2"), 0604, 0));
    said("chown", chown(P("f"), getuid(), getgid()));
    said("lchown", lchown(P("ln"), getuid(), getgid()));
    said("fchownat", fchownat(AT_FDCWD, P("ln"), getuid(), getgid(), AT_SYMLINK_NOFOLLOW));
    mode_of("f", P("f"), 1);
    mode_of("copy1", P("copy1"), 1);
    mode_of("copy2", P("copy2"), 1);

    /* ---- times ---- */
    said("utime", utime(P("f"), &(struct utimbuf){1000000000, 1100000000}));
    times_of("utime", P("f"), 1);
    said("utimes", utimes(P("f"), (struct timeval[]){{1200000000, 5}, {1300000000, 7}}));
    times_of("utimes", P("f"), 1);
    fd = open(P("f"), O_RDONLY);
    said("futimes", futimes(fd, (struct timeval[]){{1400000000, 0}, {1500000000, 0}}));
    times_of("futimes", P("f"), 1);
    said("futimens", futimens(fd, (struct timespec[]){{1600000000, 123456789}, {1600000001, 987654321}}));
    times_of("futimens", P("f"), 1);
    close(fd);
    said("utimensat", utimensat(AT_FDCWD, P("f"), (struct timespec[]){{1, 0}, {0, UTIME_OMIT}}, 0));
    times_of("utimensat", P("f"), 1);
    said("lutimes", lutimes(P("ln"), (struct timeval[]){{1700000000, 0}, {1700000002, 0}}));
    times_of("lutimes link", P("ln"), 0);

    /* ---- access ---- */
    said("access R_OK", access(P("f"), R_OK));
    said("access missing", access(P("nope"), F_OK));
    said("euidaccess", euidaccess(P("f"), R_OK | W_OK));
    said("eaccess", eaccess(P("copy2"), R_OK));
    said("faccessat", faccessat(AT_FDCWD, P("f"), F_OK, AT_EACCESS));

    /* ---- file systems ---- */
    struct statfs sfs;
    struct statvfs svfs;
    said("statfs", statfs(P("f"), &sfs) < 0 ? -1 : sfs.f_namelen);
    fd = open(P("f"), O_RDONLY);
    said("fstatfs", fstatfs(fd, &sfs) < 0 ? -1 : sfs.f_namelen);
    said("fstatvfs", fstatvfs(fd, &svfs) < 0 ? -1 : (long)svfs.f_namemax);
    close(fd);
    said("statvfs", statvfs(P("f"), &svfs) < 0 ? -1 : (long)svfs.f_namemax);

    /* ---- locks (one process: its own view) ---- */
    fd = open(P("f"), O_RDWR);
    said("flock LOCK_EX", flock(fd, LOCK_EX | LOCK_NB));
    said("flock LOCK_UN", flock(fd, LOCK_UN));
    said("flock bad op", flock(fd, LOCK_SH | LOCK_EX));
    said("lockf F_TLOCK", lockf(fd, F_TLOCK, 10));
    said("lockf F_TEST own", lockf(fd, F_TEST, 10));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 5};
    said("F_SETLK", fcntl(fd, F_SETLK, &fl));
    fl.l_type = F_WRLCK;
    said("F_GETLK own", fcntl(fd, F_GETLK, &fl));
    printf("F_GETLK type unlocked: %d\n", fl.l_type == F_UNLCK);
    fl = (struct flock){.l_type = 7, .l_whence = SEEK_SET};
    said("F_SETLK bad type", fcntl(fd, F_SETLK, &fl));
    fl = (struct flock){.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_pid = 1};
    said("F_OFD_SETLK l_pid", fcntl(fd, F_OFD_SETLK, &fl));
    fl.l_pid = 0;
    said("F_OFD_SETLK", fcntl(fd, F_OFD_SETLK, &fl));
    said("lockf F_ULOCK", lockf(fd, F_ULOCK, 0));
    close(fd);
    fd = open(P("f"), O_RDONLY);
    fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET};
    said("F_SETLK write lock on O_RDONLY", fcntl(fd, F_SETLK, &fl));
    close(fd);

    /* ---- xattrs ---- */
    said("setxattr", setxattr(P("f"), "user.colour", "blue", 4, 0));
    said("setxattr XATTR_CREATE existing", setxattr(P("f"), "user.colour", "red", 3, XATTR_CREATE));
    said("setxattr XATTR_REPLACE missing", setxattr(P("f"), "user.size", "1", 1, XATTR_REPLACE));
    said("getxattr size", getxattr(P("f"), "user.colour", NULL, 0));
    n = getxattr(P("f"), "user.colour", buf, sizeof buf);
    printf("getxattr: %.*s\n", (int)(n > 0 ? n : 0), buf);
    said("getxattr small buffer", getxattr(P("f"), "user.colour", buf, 2));
    said("getxattr missing", getxattr(P("f"), "user.none", buf, sizeof buf));
    fd = open(P("f"), O_RDONLY);
    said("fsetxattr", fsetxattr(fd, "user.k", "v", 1, 0));
    n = flistxattr(fd, buf, sizeof buf);
    said("flistxattr", n);
    said("fremovexattr", fremovexattr(fd, "user.k"));
    said("fgetxattr removed", fgetxattr(fd, "user.k", buf, sizeof buf));
    close(fd);
    n = listxattr(P("f"), buf, sizeof buf);
    printf("listxattr: ");
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1) printf("%s;", buf + i);
    printf("\n");
    said("removexattr", removexattr(P("f"), "user.colour"));
    said("lsetxattr user. on a symlink", lsetxattr(P("ln"), "user.x", "1", 1, 0));
    said("lgetxattr", lgetxattr(P("ln"), "user.x", buf, sizeof buf));
    said("llistxattr", llistxattr(P("ln"), buf, sizeof buf));
    said("lremovexattr", lremovexattr(P("ln"), "user.x"));

    /* ---- directories ---- */
    said("mkdir", mkdir(P("d"), 0755));
    said("mkdirat", mkdirat(AT_FDCWD, P("d/sub"), 0700));
    close(open(P("d/one"), O_CREAT | O_WRONLY, 0644));
    close(open(P("d/two"), O_CREAT | O_WRONLY, 0644));
    close(open(P("d/sub/three"), O_CREAT | O_WRONLY, 0644));
    said("rmdir non-empty", rmdir(P("d")));
    said("unlink a directory", unlink(P("d")));
    said("rename dir into itself", rename(P("d"), P("d/sub/x")));
    said("renameat2 NOREPLACE", renameat2(AT_FDCWD, P("copy1"), AT_FDCWD, P("copy2"), RENAME_NOREPLACE));
    said("renameat", renameat(AT_FDCWD, P("copy2"), AT_FDCWD, P("d/copy2")));
    DIR *d = opendir(P("d"));
    int names = 0;
    struct dirent *e;
    while ((e = readdir(d))) names++;
    printf("readdir entries: %d\n", names);
    rewinddir(d);
    long mark = -1;
    char first_after[256] = "";
    for (int i = 0; (e = readdir(d)); i++) {
        if (i == 1) mark = telldir(d);
        if (i == 2) { snprintf(first_after, sizeof first_after, "%s", e->d_name); break; }
    }
    seekdir(d, mark);
    e = readdir(d);
    printf("seekdir/telldir repeat: %d\n", e && strcmp(e->d_name, first_after) == 0);
    rewinddir(d);
    struct dirent ent, *res;
    names = 0;
    while (readdir_r(d, &ent, &res) == 0 && res) names++;
    printf("readdir_r entries: %d\n", names);
    closedir(d);
    struct dirent **list;
    int cnt = scandir(P("d"), &list, NULL, by_name);
    printf("scandir:");
    for (int i = 0; i < cnt; i++) { printf(" %s", list[i]->d_name); free(list[i]); }
    printf(" (%d)\n", cnt);
    if (cnt >= 0) free(list);
    said("ftw", ftw(P("d"), ftw_cb, 8));
    print_walk();
    said("nftw", nftw(P("d"), nftw_cb, 8, FTW_PHYS | FTW_DEPTH));
    print_walk();
    glob_t g;
    snprintf(buf, sizeof buf, "%s/d/*o*", dir);
    said("glob", glob(buf, 0, NULL, &g));
    for (size_t i = 0; i < g.gl_pathc; i++) printf("glob: %s\n", g.gl_pathv[i] + strlen(dir));
    globfree(&g);
    char *rp = realpath(P("ln2"), NULL);
    printf("realpath: %s\n", rp ? rp + strlen(dir) : strerrorname_np(errno));
    free(rp);
    rp = canonicalize_file_name(P("d/sub/../one"));
    printf("canonicalize_file_name: %s\n", rp ? rp + strlen(dir) : strerrorname_np(errno));
    free(rp);

    /* ---- temporaries ---- */
    snprintf(buf, sizeof buf, "%s/tmpXXXXXX", dir);
    fd = mkstemp(buf);
    said("mkstemp", fd >= 0 ? 0 : -1);
    mode_of("mkstemp file", buf, 1);
    close(fd);
    unlink(buf);
    snprintf(buf, sizeof buf, "%s/tmpXXXXXX", dir);
    fd = mkostemp(buf, O_CLOEXEC);
    said("mkostemp cloexec", fd >= 0 ? fcntl(fd, F_GETFD) & FD_CLOEXEC : -1);
    close(fd);
    unlink(buf);
    snprintf(buf, sizeof buf, "%s/dtmpXXXXXX", dir);
    char *dt = mkdtemp(buf);
    mode_of("mkdtemp", dt ? dt : "", 1);
    if (dt) rmdir(dt);
    fd = open(dir, O_TMPFILE | O_RDWR, 0600);
    said("O_TMPFILE write", fd >= 0 ? write(fd, "anon", 4) : -1);
    said("O_TMPFILE pread", fd >= 0 ? pread(fd, buf, 10, 0) : -1);
    close(fd);
    FILE *t = tmpfile();
    said("tmpfile", t ? fputs("x", t) : -1);
    if (t) fclose(t);

    /* ---- mappings ---- */
    fd = open(P("f"), O_RDWR);
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    said("mmap shared", m == MAP_FAILED ? -1 : 0);
    if (m != MAP_FAILED) {
        m[0] = 'H';
        said("msync", msync(m, 4096, MS_SYNC));
        said("munmap", munmap(m, 4096));
    }
    said("pread after msync", pread(fd, buf, 5, 0));
    printf("mapped write: %.5s\n", buf);
    close(fd);

    /* ---- stdio ---- */
    FILE *s = fopen(P("stdio"), "w+");
    fprintf(s, "line one\nline two\n");
    fseek(s, 5, SEEK_SET);
    printf("fgets after fseek: %s", fgets(buf, sizeof buf, s));
    s = freopen(P("f"), "r", s);
    said("freopen", s ? (long)fread(buf, 1, 5, s) : -1);
    printf("freopen data: %.5s\n", buf);
    fclose(s);

    /* ---- cwd ---- */
    said("chdir", chdir(P("d")));
    said("stat relative", stat("one", &st));
    printf("getcwd tail: %s\n", getcwd(buf, sizeof buf) ? buf + strlen(dir) : strerrorname_np(errno));
    fd = open("..", O_RDONLY | O_DIRECTORY);
    said("fchdir", fchdir(fd));
    close(fd);
    said("stat after fchdir", stat("f", &st));
    return 0;
}
