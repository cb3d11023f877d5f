/* The *at calls, each relative to a directory fd: one on the test directory itself, then
 * one on a directory above it (ABOVE, with REL leading down to the test directory), and
 * last the fds an O_PATH walk opens one component at a time from ABOVE, as rsync does.
 * Under ferry the first is a ferry fd and ABOVE a local directory above the mount (/mnt of
 * /mnt/x, or / of /REMOTE@...); tests/test_at_family.py compares the transcript with a
 * local run line by line, so only what every file system must agree on is printed.
 *
 *   at_family ABOVE REL
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *prefix;  /* put before every name: "" or REL + "/" */

static const char *N(const char *name)
{
    static char slots[4][PATH_MAX];
    static int next;
    char *s = slots[next++ % 4];
    snprintf(s, PATH_MAX, "%s%s", prefix, name);
    return s;
}

static void said(const char *what, long rc)
{
    if (rc < 0) printf("%s: %s\n", what, strerrorname_np(errno));
    else printf("%s: %ld\n", what, rc);
}

static void stat_at(const char *what, int d, const char *name, int flags)
{
    struct stat st;
    if (fstatat(d, name, &st, flags) < 0) { said(what, -1); return; }
    if (S_ISDIR(st.st_mode))  /* a directory's size and link count are its file system's own */
        printf("%s: mode %o\n", what, st.st_mode);
    else
        printf("%s: mode %o size %lld nlink %lu\n", what, st.st_mode, (long long)st.st_size, (unsigned long)st.st_nlink);
}

static void times_at(const char *what, int d, const char *name)
{
    struct stat st;
    if (fstatat(d, name, &st, 0) < 0) { said(what, -1); return; }
    printf("%s: atime %lld mtime %lld\n", what, (long long)st.st_atim.tv_sec, (long long)st.st_mtim.tv_sec);
}

static void write_at(const char *what, int d, const char *name, int flags, const char *text)
{
    int fd = openat(d, name, flags, 0644);
    said(what, fd < 0 ? -1 : 0);
    if (fd < 0) return;
    said("  write", write(fd, text, strlen(text)));
    said("  close", close(fd));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The names in directory fd d, sorted (readdir order is each file system's own). */
static void list(const char *what, int d)
{
    int fd = openat(d, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) { said(what, -1); return; }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < 64)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names[n++] = strdup(e->d_name);
    closedir(dir);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    printf("%s:", what);
    for (int i = 0; i < n; i++) { printf(" %s", names[i]); free(names[i]); }
    printf("\n");
}

/* Every call relative to d, names prefixed by `prefix`. */
static void tour(int d)
{
    char buf[PATH_MAX];
    write_at("openat create", d, N("f"), O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, "hello\n");
    said("openat exclusive again", openat(d, N("f"), O_CREAT | O_WRONLY | O_EXCL, 0644));
    said("openat missing", openat(d, N("missing"), O_RDONLY));
    stat_at("fstatat f", d, N("f"), 0);
    said("mkdirat", mkdirat(d, N("sub"), 0755));
    said("mkdirat again", mkdirat(d, N("sub"), 0755));
    int sd = openat(d, N("sub"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    said("openat sub", sd < 0 ? -1 : 0);
    write_at("openat in sub", sd, "g", O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, "gg\n");
    stat_at("fstatat sub/g", sd, "g", 0);
    stat_at("fstatat sub/..", sd, "..", 0);
    stat_at("fstatat sub/../f", sd, "../f", 0);
    said("renameat into sub", renameat(d, N("f"), sd, "f2"));
    stat_at("fstatat f after", d, N("f"), 0);
    stat_at("fstatat sub/f2", sd, "f2", 0);
    said("linkat", linkat(sd, "f2", d, N("hard"), 0));
    stat_at("fstatat hard", d, N("hard"), 0);
    said("symlinkat", symlinkat("sub/f2", d, N("ln")));
    ssize_t n = readlinkat(d, N("ln"), buf, sizeof buf - 1);
    if (n >= 0) printf("readlinkat: %.*s\n", (int)n, buf);
    else said("readlinkat", n);
    said("readlinkat not a link", readlinkat(d, N("hard"), buf, sizeof buf));
    stat_at("fstatat ln nofollow", d, N("ln"), AT_SYMLINK_NOFOLLOW);
    stat_at("fstatat ln", d, N("ln"), 0);
    said("faccessat rw", faccessat(d, N("hard"), R_OK | W_OK, 0));
    said("faccessat missing", faccessat(d, N("nope"), F_OK, 0));
    said("faccessat eaccess", faccessat(d, N("hard"), F_OK, AT_EACCESS));
    said("fchmodat", fchmodat(d, N("hard"), 0600, 0));
    stat_at("fstatat hard after chmod", d, N("hard"), 0);
    said("fchownat", fchownat(d, N("hard"), getuid(), getgid(), 0));
    said("fchownat link", fchownat(d, N("ln"), getuid(), getgid(), AT_SYMLINK_NOFOLLOW));
    said("utimensat", utimensat(d, N("hard"), (struct timespec[]){{1000, 0}, {2000, 0}}, 0));
    times_at("times after utimensat", d, N("hard"));
    said("utimensat omit atime", utimensat(d, N("hard"), (struct timespec[]){{0, UTIME_OMIT}, {3000, 0}}, 0));
    times_at("times after omit", d, N("hard"));
    list("sub lists", sd);
    said("unlinkat hard", unlinkat(d, N("hard"), 0));
    said("unlinkat missing", unlinkat(d, N("hard"), 0));
    said("unlinkat dir without AT_REMOVEDIR", unlinkat(d, N("sub"), 0));
    said("rmdir not empty", unlinkat(d, N("sub"), AT_REMOVEDIR));
    said("unlinkat sub/f2", unlinkat(sd, "f2", 0));
    said("unlinkat sub/g", unlinkat(sd, "g", 0));
    said("close sub", close(sd));
    said("rmdir", unlinkat(d, N("sub"), AT_REMOVEDIR));
    said("unlinkat ln", unlinkat(d, N("ln"), 0));
    stat_at("fstatat sub gone", d, N("sub"), 0);
    /* ferry keeps no special files: EOPNOTSUPP there (the test expects that line to differ) */
    said("mknodat fifo", mknodat(d, N("fifo"), S_IFIFO | 0644, 0));
    said("mkfifoat", mkfifoat(d, N("fifo2"), 0644));
    unlinkat(d, N("fifo"), 0);
    unlinkat(d, N("fifo2"), 0);
}

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: at_family ABOVE REL\n"); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    char dir[PATH_MAX];
    size_t al = strlen(argv[1]);
    snprintf(dir, sizeof dir, "%s%s%s", argv[1], al && argv[1][al - 1] == '/' ? "" : "/", argv[2]);

    printf("-- a directory fd on the test directory\n");
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    said("open dir", d < 0 ? -1 : 0);
    prefix = "";
    stat_at("fstatat empty path", d, "", AT_EMPTY_PATH);
    tour(d);
    list("dir lists", d);
    close(d);

    printf("-- a directory fd above it\n");
    int above = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    said("open above", above < 0 ? -1 : 0);
    char rel[PATH_MAX];
    snprintf(rel, sizeof rel, "%s/", argv[2]);
    prefix = rel;
    tour(above);

    printf("-- O_PATH fds one component at a time from above\n");
    int cur = open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
    char comps[PATH_MAX];
    snprintf(comps, sizeof comps, "%s", argv[2]);
    for (char *c = strtok(comps, "/"); c && cur >= 0; c = strtok(NULL, "/")) {
        int next = openat(cur, c, O_PATH | O_DIRECTORY | O_CLOEXEC);
        close(cur);
        cur = next;
    }
    said("walk down", cur < 0 ? -1 : 0);
    prefix = "";
    write_at("openat from the walk", cur, "w", O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, "walked\n");
    stat_at("fstatat from the walk", cur, "w", 0);
    said("unlinkat from the walk", unlinkat(cur, "w", 0));
    close(cur);
    close(above);
    return 0;
}
