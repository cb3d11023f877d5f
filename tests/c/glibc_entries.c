/* glibc public entries that reach the file system through glibc's own internal calls:
 * scandir, ftw/nftw, glob, realpath, euidaccess, opendir/readdir, freopen, preadv/pwritev.
 *
 * Usage: glibc_entries ROOT.  ROOT must hold the tree test_glibc_entries.py makes.  Every
 * line printed names paths relative to ROOT and is in a fixed order (walks are sorted),
 * so the output on a local copy and on a ferry path must be identical.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

extern char *__realpath_chk(const char *, char *, size_t);

static const char *root;
static size_t rootlen;

static const char *rel(const char *p)
{
    if (strncmp(p, root, rootlen) == 0 && (p[rootlen] == '/' || p[rootlen] == 0)) return p[rootlen] ? p + rootlen + 1 : ".";
    return p;
}

static char *at(const char *name)
{
    static char buf[4][PATH_MAX];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", root, name);
    return buf[i];
}

/* ---- sorted line collection for walks whose order is the file system's ---- */
static char *lines[1024];
static int nlines;

static void add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (nlines < 1024 && vasprintf(&lines[nlines], fmt, ap) >= 0) nlines++;
    va_end(ap);
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void flush(const char *title)
{
    qsort(lines, (size_t)nlines, sizeof *lines, cmp);
    for (int i = 0; i < nlines; i++) { printf("%s: %s\n", title, lines[i]); free(lines[i]); }
    nlines = 0;
}

static char kind(mode_t m) { return S_ISDIR(m) ? 'd' : S_ISLNK(m) ? 'l' : S_ISREG(m) ? 'f' : '?'; }

/* ---- scandir ---- */
static int no_dots(const struct dirent *d) { return strcmp(d->d_name, ".") && strcmp(d->d_name, ".."); }
static int no_dots64(const struct dirent64 *d) { return strcmp(d->d_name, ".") && strcmp(d->d_name, ".."); }

static void scandirs(void)
{
    struct dirent **list;
    int n = scandir(root, &list, no_dots, alphasort);
    printf("scandir: %d%s\n", n, n < 0 ? strerror(errno) : "");
    for (int i = 0; i < n; i++) { printf("scandir: %s %d\n", list[i]->d_name, list[i]->d_type); free(list[i]); }
    if (n >= 0) free(list);

    struct dirent64 **l64;
    n = scandir64(at("sub"), &l64, no_dots64, alphasort64);
    printf("scandir64: %d%s\n", n, n < 0 ? strerror(errno) : "");
    for (int i = 0; i < n; i++) { printf("scandir64: %s\n", l64[i]->d_name); free(l64[i]); }
    if (n >= 0) free(l64);

    n = scandir(at("nope"), &list, NULL, alphasort);
    printf("scandir missing: %d %s\n", n, strerror(errno));
    n = scandir(at("a.txt"), &list, NULL, alphasort);
    printf("scandir file: %d %s\n", n, strerror(errno));

    int dfd = open(root, O_RDONLY | O_DIRECTORY);
    n = scandirat(dfd, "sub/deeper", &list, no_dots, alphasort);
    printf("scandirat: %d%s\n", n, n < 0 ? strerror(errno) : "");
    for (int i = 0; i < n; i++) { printf("scandirat: %s\n", list[i]->d_name); free(list[i]); }
    if (n >= 0) free(list);
    n = scandirat(AT_FDCWD, at("sub"), &list, no_dots, versionsort);
    printf("scandirat cwd: %d\n", n);
    for (int i = 0; i < n; i++) { printf("scandirat cwd: %s\n", list[i]->d_name); free(list[i]); }
    if (n >= 0) free(list);
    close(dfd);
}

/* ---- ftw / nftw ---- */
static int ftw_cb(const char *p, const struct stat *st, int flag)
{
    add("%s %c %d %lld", rel(p), kind(st->st_mode), flag, S_ISDIR(st->st_mode) ? 0LL : (long long)st->st_size);
    return 0;
}

static int ftw64_cb(const char *p, const struct stat64 *st, int flag)
{
    add("%s %c %d", rel(p), kind(st->st_mode), flag);
    return 0;
}

static int nftw_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    add("%s %c flag=%d level=%d base=%s", rel(p), flag == FTW_NS ? '-' : kind(st->st_mode), flag, f->level, f->level ? p + f->base : "(top)");
    return 0;
}

static int nftw64_cb(const char *p, const struct stat64 *st, int flag, struct FTW *f)
{
    add("%s %c flag=%d level=%d", rel(p), flag == FTW_NS ? '-' : kind(st->st_mode), flag, f->level);
    return 0;
}

static int stop_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return strstr(p, "deeper") ? 42 : 0;
}

static int depth_order(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)f;
    /* FTW_DEPTH: a directory comes after everything in it. */
    printf("nftw depth: %s %d\n", rel(p), flag);
    return 0;
}

static void walks(void)
{
    /* Following symlinks, a directory reached twice is walked once, under whichever name
     * the listing gives first: walk "sub", which links only to a file. */
    int rc = ftw(at("sub"), ftw_cb, 4);
    printf("ftw rc=%d\n", rc);
    flush("ftw");
    rc = ftw64(at("sub"), ftw64_cb, 4);
    printf("ftw64 rc=%d\n", rc);
    flush("ftw64");
    rc = nftw(root, nftw_cb, 4, FTW_PHYS);
    printf("nftw phys rc=%d\n", rc);
    flush("nftw phys");
    rc = nftw(at("sub"), nftw_cb, 4, 0);
    printf("nftw follow rc=%d\n", rc);
    flush("nftw follow");
    rc = nftw64(root, nftw64_cb, 4, FTW_PHYS | FTW_MOUNT);
    printf("nftw64 rc=%d\n", rc);
    flush("nftw64");
    rc = nftw(root, stop_cb, 4, FTW_PHYS);
    printf("nftw stop rc=%d\n", rc);
    rc = nftw(at("nope"), nftw_cb, 4, 0);
    printf("nftw missing rc=%d %s\n", rc, strerror(errno));
    /* Depth order within one chain is fixed whatever the listing order. */
    rc = nftw(at("sub/deeper"), depth_order, 4, FTW_DEPTH | FTW_PHYS);
    printf("nftw depth rc=%d\n", rc);
    /* FTW_CHDIR: the callback runs in the entry's directory. */
    char here[PATH_MAX];
    if (!getcwd(here, sizeof here)) return;
    rc = nftw(at("sub"), nftw_cb, 4, FTW_CHDIR | FTW_PHYS);
    printf("nftw chdir rc=%d\n", rc);
    flush("nftw chdir");
    if (chdir(here) != 0) printf("chdir back failed\n");
}

/* ---- glob ---- */
static void show_glob(const char *title, const char *pattern, int flags)
{
    glob_t g;
    int rc = glob(at(pattern), flags, NULL, &g);
    printf("%s %s rc=%d n=%zu\n", title, pattern, rc, rc == 0 ? g.gl_pathc : 0);
    if (rc == 0 || rc == GLOB_NOMATCH) {
        for (size_t i = 0; i < g.gl_pathc; i++) printf("%s: %s\n", title, rel(g.gl_pathv[i]));
        globfree(&g);
    }
}

static void globs(void)
{
    show_glob("glob", "*", 0);
    show_glob("glob", "*.txt", 0);
    show_glob("glob", "sub/*", GLOB_MARK);
    show_glob("glob", "*/*.txt", 0);
    show_glob("glob", "s?b/d*/*", 0);
    show_glob("glob", "*/", 0);
    show_glob("glob", "nothing*", 0);
    show_glob("glob", "nothing*", GLOB_NOCHECK);
    show_glob("glob", "{a,b}.txt", GLOB_BRACE);
    show_glob("glob", "sub/.*", GLOB_PERIOD);
    show_glob("glob", "*", GLOB_ONLYDIR);
    show_glob("glob", "link*", 0);
    glob64_t g;
    int rc = glob64(at("sub/*.txt"), 0, NULL, &g);
    printf("glob64 rc=%d\n", rc);
    if (rc == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) printf("glob64: %s\n", rel(g.gl_pathv[i]));
        globfree64(&g);
    }
}

/* ---- realpath and friends ---- */
static void show_real(const char *title, char *r)
{
    if (r) { printf("%s: %s\n", title, rel(r)); } else printf("%s: NULL %s\n", title, strerror(errno));
}

static void realpaths(void)
{
    char buf[PATH_MAX];
    show_real("realpath file", realpath(at("a.txt"), buf));
    show_real("realpath dots", realpath(at("sub/../sub/./deeper/../x.txt"), buf));
    show_real("realpath link", realpath(at("link-to-sub/x.txt"), buf));
    show_real("realpath rel link", realpath(at("sub/up-link"), buf));
    show_real("realpath dangling", realpath(at("dangling"), buf));
    show_real("realpath missing", realpath(at("nope/x"), buf));
    show_real("realpath notdir", realpath(at("a.txt/x"), buf));
    show_real("realpath root", realpath(root, buf));
    char *m = realpath(at("link-to-sub/deeper"), NULL);
    show_real("realpath alloc", m);
    free(m);
    m = canonicalize_file_name(at("link-to-sub/../b.txt"));
    show_real("canonicalize", m);
    free(m);
    m = canonicalize_file_name(at("nope"));
    show_real("canonicalize missing", m);
    show_real("__realpath_chk", __realpath_chk(at("link-to-sub"), buf, sizeof buf));
    /* From a ferry cwd: a relative name. */
    char here[PATH_MAX];
    if (getcwd(here, sizeof here) && chdir(at("sub")) == 0) {
        show_real("realpath relative", realpath("deeper/../x.txt", buf));
        show_real("realpath dot", realpath(".", buf));
        if (chdir(here) != 0) printf("chdir back failed\n");
    }
}

/* ---- euidaccess ---- */
static void accesses(void)
{
    const char *names[] = {"a.txt", "exec.sh", "sub", "nope", "a.txt/x", "dangling"};
    int modes[] = {F_OK, R_OK, W_OK, X_OK};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        for (size_t j = 0; j < 4; j++) {
            errno = 0;
            int a = euidaccess(at(names[i]), modes[j]);
            int ea = errno;
            errno = 0;
            int b = eaccess(at(names[i]), modes[j]);
            printf("euidaccess %s %d: %d %s / eaccess %d %s\n", names[i], modes[j], a, a ? strerror(ea) : "",
                   b, b ? strerror(errno) : "");
        }
}

/* ---- opendir/readdir family ---- */
static void readdirs(void)
{
    DIR *d = opendir(at("sub"));
    if (!d) { printf("opendir: %s\n", strerror(errno)); return; }
    struct dirent *e;
    while ((e = readdir(d))) add("%s type=%d", e->d_name, e->d_type);
    flush("readdir");
    rewinddir(d);
    struct dirent64 *e64;
    while ((e64 = readdir64(d))) add("%s", e64->d_name);
    flush("readdir64 after rewind");
    int fd = dirfd(d);
    struct stat st;
    int frc = fstat(fd, &st);
    printf("dirfd fstat: %d %c\n", frc, kind(st.st_mode));
    closedir(d);
    int dfd = open(at("sub/deeper"), O_RDONLY | O_DIRECTORY);
    d = fdopendir(dfd);
    while (d && (e = readdir(d))) add("%s", e->d_name);
    flush("fdopendir");
    if (d) closedir(d);
    d = opendir(at("a.txt"));
    printf("opendir file: %p %s\n", (void *)d, strerror(errno));
    d = opendir(at("nope"));
    printf("opendir missing: %p %s\n", (void *)d, strerror(errno));
}

/* ---- freopen ---- */
static void freopens(void)
{
    char line[128];
    FILE *f = fopen(at("a.txt"), "r");
    if (!f) { printf("fopen: %s\n", strerror(errno)); return; }
    f = freopen(at("b.txt"), "r", f);
    printf("freopen read: %s", f && fgets(line, sizeof line, f) ? line : "(null)\n");
    if (!f) return;
    f = freopen(at("fresh.txt"), "w", f);
    if (!f) { printf("freopen w: %s\n", strerror(errno)); return; }
    fprintf(f, "written through freopen\n");
    fclose(f);
    f = fopen(at("fresh.txt"), "r");
    printf("freopen write: %s", f && fgets(line, sizeof line, f) ? line : "(null)\n");
    if (!f) return;
    /* freopen with no name: change the mode of the same file */
    f = freopen(NULL, "a", f);
    if (!f) { printf("freopen NULL: %s\n", strerror(errno)); return; }
    fprintf(f, "appended\n");
    fclose(f);
    f = fopen(at("fresh.txt"), "r");
    while (f && fgets(line, sizeof line, f)) printf("freopen same: %s", line);
    if (f) fclose(f);
    errno = 0;
    f = fopen(at("a.txt"), "r");
    FILE *g = freopen(at("nope/x"), "r", f);
    printf("freopen missing: %p %s\n", (void *)g, strerror(errno));
    /* stdout onto a ferry file and back, as shells and daemons do */
    fflush(stdout);
    int saved = dup(1);
    if (freopen(at("stdout.txt"), "w", stdout)) {
        printf("this line went to stdout.txt\n");
        fflush(stdout);
        dup2(saved, 1);
        close(saved);
        f = fopen(at("stdout.txt"), "r");
        fprintf(stderr, "%s", "");
        char l2[128] = "";
        if (f && fgets(l2, sizeof l2, f)) { dprintf(1, "freopen stdout: %s", l2); }
        if (f) fclose(f);
    }
}

/* ---- vectored positional I/O ---- */
static void vectored(void)
{
    int fd = open(at("vec.bin"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    char a[] = "0123456789", b[] = "abcdefghij";
    struct iovec w[2] = {{a, 10}, {b, 10}};
    printf("pwritev: %zd\n", pwritev(fd, w, 2, 5));
    printf("pwritev64: %zd\n", pwritev64(fd, w, 1, 30));
    printf("pwritev2: %zd\n", pwritev2(fd, w + 1, 1, 40, 0));
    printf("pwritev64v2: %zd\n", pwritev64v2(fd, w, 2, 50, 0));
    printf("pwritev2 cur: %zd\n", pwritev2(fd, w, 1, -1, 0));
    printf("lseek: %lld\n", (long long)lseek(fd, 0, SEEK_CUR));
    char r1[8], r2[12];
    struct iovec r[2] = {{r1, sizeof r1}, {r2, sizeof r2}};
    for (int i = 0; i < 4; i++) {
        memset(r1, '.', sizeof r1);
        memset(r2, '.', sizeof r2);
        ssize_t n = i == 0 ? preadv(fd, r, 2, 0) : i == 1 ? preadv64(fd, r, 2, 28)
                  : i == 2 ? preadv2(fd, r, 2, 55, 0) : preadv64v2(fd, r, 2, 0, 0);
        for (int k = 0; k < 8; k++) if (!r1[k]) r1[k] = '_';
        for (int k = 0; k < 12; k++) if (!r2[k]) r2[k] = '_';
        printf("preadv%d: %zd %.8s|%.12s\n", i, n, r1, r2);
    }
    printf("preadv past end: %zd\n", preadv(fd, r, 2, 1000));
    ssize_t n = preadv(fd, r, 2, -5);
    printf("preadv negative: %zd %s\n", n, strerror(errno));
    close(fd);
    fd = open(at("a.txt"), O_RDONLY);
    n = pwritev(fd, w, 2, 0);
    printf("pwritev on O_RDONLY: %zd %s\n", n, strerror(errno));
    close(fd);
    struct stat st;
    stat(at("vec.bin"), &st);
    printf("vec.bin size %lld\n", (long long)st.st_size);
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s ROOT\n", argv[0]); return 2; }
    root = argv[1];
    rootlen = strlen(root);
    setvbuf(stdout, NULL, _IOLBF, 0);
    scandirs();
    walks();
    globs();
    realpaths();
    accesses();
    readdirs();
    freopens();
    vectored();
    return 0;
}
