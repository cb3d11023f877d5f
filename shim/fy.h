/* libferry internals shared by the hook families (io.c, stat.c, dir.c, stdio.c, proc.c).
 *
 * A call reaches the shim, `fy_surely_local` (most local names, by their first two bytes)
 * or else `fy_resolve` decides whether its path (or `fy_fd_get` whether its fd) is ferry's,
 * and only then does anything else happen.
 * Ferry paths are normalised absolute strings such as "/REMOTE@host:port/a/b" or
 * "<mount prefix>/a/b"; the agent routes them to nodes.
 *
 * Two data modes:
 *  - cache: the agent keeps a partial replica under FERRY_CACHE; the program gets real
 *    fds on cache files, so data calls never come here.  Opens ask the agent once
 *    (CACHE_OPEN), metadata calls run on the replica, mutations run locally and are sent
 *    to the agent one-way, and a written file's fd goes to the agent on close (upload).
 *  - direct: every call is a request to the agent; the program holds a placeholder fd
 *    (the write end of a pipe whose read end the agent holds, so the agent learns from
 *    the kernel when the last dup/fork copy is closed).
 */
#ifndef FY_H
#define FY_H

#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "fy_codec.h"
#include "libc.h"

#define FY_EXPORT __attribute__((visibility("default")))

/* ---- init.c: configuration ---- */
enum fy_mode { FY_MODE_OFF = 0, FY_MODE_CACHE, FY_MODE_DIRECT };

struct fy_config {
    enum fy_mode mode;
    char sock[108];
    char cache[PATH_MAX];    /* cache root, no trailing slash */
    size_t cache_len;
    int nprefix;
    char *prefix[32];        /* mount prefixes (no trailing slash); "/REMOTE@" is implicit */
    size_t prefix_len[32];
    size_t probe_len;        /* bytes of a path the prefix compare may read: the longest prefix + 1 */
    unsigned char lead[256]; /* 1 for each byte a ferry absolute path may have after its first "/" */
};
extern struct fy_config fy_cfg;
extern mode_t fy_umask;  /* the process's umask, for modes sent to the node in direct mode */

/* ---- path.c: deciding what is ferry's ---- */
struct fy_path {
    char ferry[PATH_MAX];        /* normalised ferry path */
    char cache[PATH_MAX + 256];  /* FERRY_CACHE + ferry (cache mode) */
};
/* 0: not ferry's (call libc with *path, which is rewritten to an absolute local path when
 * a name relative to a ferry directory climbs out of its mount with ".."); 1: ferry's,
 * `out` filled; -1: ferry's but invalid, errno set. */
int fy_resolve(int dirfd, const char **path, struct fy_path *out);
/* The same; *unreadable says the 0 came from a string the shim could not read whole (a
 * wild pointer: libc lets the kernel answer EFAULT). */
int fy_resolve_r(int dirfd, const char **path, struct fy_path *out, int *unreadable);
/* Both paths of a rename or link: 0 both local, 1 both ferry's on one mount (po, pn
 * filled), -1 errno set (EXDEV when they lie on two sides, or on two mounts). */
int fy_resolve_pair(int olddirfd, const char **old, struct fy_path *po, int newdirfd, const char **new,
                    struct fy_path *pn);
int fy_pair(int ro, const struct fy_path *po, int rn, const struct fy_path *pn);  /* the same, resolved */
/* One of the pair could not be read (u*, from fy_resolve_r): 0, go to libc; -1, errno set. */
int fy_unreadable_pair(const char *old, int ro, int uo, const char *new, int rn, int un);

/* A symlink on the way leads out of its mount (an absolute target, or one climbing above
 * the mount's root): the node never follows it, and the agent answers STATUS_LINK_OUT
 * with the client path to go on with, as the kernel would resolve it here.  wire.c keeps
 * that path in `fy_redirect` and the call returns -FY_EREDIRECT (not an errno: a hook
 * that let it through would fail visibly with "Unknown error 65536"). */
#define FY_EREDIRECT 0x10000
struct fy_redirect {
    int which;              /* which path of the request: 0 (the one, or old), 1 (new) */
    char path[PATH_MAX];
};
extern __thread struct fy_redirect fy_redirect;
/* A lookup of a prefix of the path a hook works on was redirected: put the rest of that
 * path (`rest`, "" or "/name...") after the redirect, so it answers for the whole path. */
int fy_redirect_extend(int rc, const char *rest);
/* Answer a path hook as the agent's redirect would: go on with `path`; -FY_EREDIRECT. */
int fy_redirect_to(const char *path, int which);
/* A two-path op's lookup for its `new` path (asked alone) was redirected: say so. */
static inline int fy_redirect_new(int rc) { if (rc == -FY_EREDIRECT) fy_redirect.which = 1; return rc; }
/* link.c: readlink of a replica symlink, as the node holds it (a marked one unmarked). */
ssize_t fy_replica_readlink(const char *cache_path, char *buf, size_t size);

/* How a path hook begins: `path` (relative to dirfd) is resolved; a name that is not
 * ferry's goes to `libc_call` (with `path` made absolute if it climbed out of a ferry
 * directory), an invalid one returns `fail` (errno set), and a ferry one runs
 * `body(&p, ...)`, the hook's ferry half.  A body that fails with errno FY_EREDIRECT
 * starts the hook over on the client path the agent gave (absolute, so dirfd no longer
 * matters; it may be local — libc — or another ferry path), at most FY_MAX_REDIRECTS
 * times, then ELOOP.  FY_PATH2_HOOK is the same for two paths (rename, link). */
#define FY_PATH_HOOK(dirfd, path, fail, libc_call, body, ...)                         \
    do {                                                                              \
        if (fy_surely_local((dirfd), (path))) return libc_call;                       \
        char fy_next_[PATH_MAX];                                                      \
        for (int fy_hops_ = 0;; fy_hops_++) {                                         \
            struct fy_path fy_p_;                                                     \
            int fy_r_ = fy_resolve((dirfd), &(path), &fy_p_);                         \
            if (fy_r_ == 0) return libc_call;                                         \
            if (fy_r_ < 0) return fail;                                               \
            __typeof__(libc_call) fy_v_ = body(&fy_p_, ##__VA_ARGS__);                \
            if (fy_v_ != (fail) || errno != FY_EREDIRECT) return fy_v_;               \
            if (fy_hops_ >= FY_MAX_REDIRECTS) { errno = ELOOP; return fail; }         \
            path = strcpy(fy_next_, fy_redirect.path);                                \
        }                                                                             \
    } while (0)
#define FY_PATH2_HOOK(olddirfd, old, newdirfd, new, fail, libc_call, body, ...)                    \
    do {                                                                                           \
        char fy_next_[2][PATH_MAX];                                                                \
        for (int fy_hops_ = 0;; fy_hops_++) {                                                      \
            struct fy_path fy_po_, fy_pn_;                                                         \
            int fy_r_ = fy_resolve_pair((olddirfd), &(old), &fy_po_, (newdirfd), &(new), &fy_pn_); \
            if (fy_r_ == 0) return libc_call;                                                      \
            __typeof__(libc_call) fy_v_ = fy_r_ < 0 ? (fail) : body(&fy_po_, &fy_pn_, ##__VA_ARGS__); \
            if (fy_v_ != (fail) || errno != FY_EREDIRECT) return fy_v_;                            \
            if (fy_hops_ >= FY_MAX_REDIRECTS) { errno = ELOOP; return fail; }                      \
            if (fy_redirect.which) new = strcpy(fy_next_[1], fy_redirect.path);                    \
            else old = strcpy(fy_next_[0], fy_redirect.path);                                      \
        }                                                                                          \
    } while (0)
/* After a local open(at) succeeded: remember a directory fd that lies above a mount root,
 * so names relative to it can enter the mount.  Returns fd. */
int fy_note_dirfd_(int fd, int dirfd, const char *path, int flags);
static inline int fy_note_dirfd(int fd, int dirfd, const char *path, int flags)
{
    return fd < 0 || !(flags & (O_DIRECTORY | O_PATH)) ? fd : fy_note_dirfd_(fd, dirfd, path, flags);
}
/* Length of the mount root ("/REMOTE@h:p" or the prefix) that `ferry_path` lies under, or 0. */
size_t fy_mount_root(const char *ferry_path);
/* Lexically normalise absolute `in` ("." "..", "//" removed) into out: 0 or -ENAMETOOLONG. */
int fy_normalize(const char *in, char *out, size_t cap);
/* Cache path -> ferry path (for getcwd); 0 when `cache_path` is not in the cache. */
int fy_uncache(const char *cache_path, char *out, size_t cap);
/* Is p[0..n) a proper ancestor of a mount prefix ("/mnt" of "/mnt/x")? */
int fy_above_mount(const char *p, size_t n);
/* After the cwd changed locally: remember it if it is an ancestor of a mount root. */
void fy_note_real_cwd(void);
/* walk.c: resolve every symlink, "." and ".." of a path with the hooked calls; 0 or -errno. */
int fy_realpath(const char *path, char *out);

/* ---- cwd.c: the virtual current directory, set while the cwd is a ferry directory ---- */
extern char fy_vcwd[PATH_MAX];
extern int fy_vcwd_set;

/* ---- fdtable.c: which fds are ferry's ---- */
enum fy_fd_kind { FY_FD_NONE = 0, FY_FD_CACHE, FY_FD_DIRECT };
struct fy_dirlist;  /* dir.c: a fetched LISTDIR for getdents/readdir in direct mode */
struct fy_fd {
    uint8_t kind;
    uint8_t dirty;      /* cache mode: opened for writing, upload on close */
    int owner;          /* cache mode: pid that opened it, which uploads it at exit if never closed */
    int flags;          /* open(2) flags as the program asked */
    uint64_t handle;    /* direct mode: the agent's handle; cache mode: the description's id (lock.c) */
    char *path;         /* ferry path (malloc'd) */
    struct fy_dirlist *dl;
};
#define FY_MAXFD 65536
extern struct fy_fd *fy_fd_table_[FY_MAXFD];  /* fdtable.c's table, read inline below */
/* NULL when fd is not ferry's: one bounds check and one load */
static inline struct fy_fd *fy_fd_get(int fd) { return (unsigned)fd < FY_MAXFD ? fy_fd_table_[fd] : NULL; }
/* the same, for a direct-mode fd only */
static inline struct fy_fd *fy_fd_direct(int fd)
{
    struct fy_fd *f = fy_fd_get(fd);
    return f && f->kind == FY_FD_DIRECT ? f : NULL;
}
extern int fy_rcwd_above_, fy_nabove_;       /* path.c's: the real cwd is above a mount; dirfds noted above one */
long fy_probe_str(const char *s, size_t max);
/* The common case of every path hook, decided before the hook sets anything up: 1 when
 * `path` (relative to dirfd) is surely not ferry's, from its first two bytes (probed) and
 * whether there is a ferry directory it could be relative to; 0 when fy_resolve must look.
 * A name that cannot be read goes to libc as well (the kernel says EFAULT), as
 * fy_resolve would send it: only a pair (rename, link) must know more, and those call
 * fy_resolve_pair directly. */
static inline int fy_surely_local(int dirfd, const char *path)
{
    if (fy_cfg.mode == FY_MODE_OFF || !path) return 1;
    long n = fy_probe_str(path, 2);
    if (n < 0) return 1;
    if (n == 0) return 0;
    if (path[0] == '/') return !fy_cfg.lead[(unsigned char)path[1]];
    if (dirfd == AT_FDCWD) return !fy_vcwd_set && !fy_rcwd_above_;
    return (unsigned)dirfd < FY_MAXFD && !fy_fd_table_[dirfd] && fy_nabove_ == 0;
}
struct fy_fd *fy_fd_set(int fd, int kind, int flags, uint64_t handle, const char *path);
void fy_fd_clear(int fd);
void fy_fd_copy(int from, int to);
int fy_fd_limit(void);  /* every ferry fd is below this */
/* Encode the table for a new program image and read it back (format in fdtable.c). */
char *fy_fd_export(void);
void fy_fd_import(const char *s);

/* ---- wire.c: requests to the agent (built with fy_codec.h's fy_enc_<op>) ---- */
/* Send the request `e` holds and wait for its reply: the status, 0 or -errno (-EIO when the
 * connection failed, or a successful reply is shorter than rep_len).  The reply's first
 * rep_len bytes go to `rep` (the op's struct fy_rep_<op>), the rest up to tail_cap to
 * `tail` (*tail_got says how many; any more are read and dropped).  `pass_fd` >= 0 rides
 * along as SCM_RIGHTS. */
int fy_call(const struct fy_enc *e, int pass_fd, void *rep, size_t rep_len, void *tail, size_t tail_cap,
            size_t *tail_got);
/* Same, the rest of the reply in a malloc'd buffer (the caller frees it, on error too). */
int fy_call_alloc(const struct fy_enc *e, void *rep, size_t rep_len, char **tail, size_t *tail_len);
/* A request answered by its status alone. */
static inline int fy_ask(const struct fy_enc *e) { return fy_call(e, -1, NULL, 0, NULL, 0, NULL); }
/* One-way (FY_FLAG_ONEWAY): a change already made locally, which the agent applies in order
 * and never answers. */
void fy_tell(const struct fy_enc *e, int pass_fd);
/* Around a replica change and its fy_tell: one step between threads (wire.c). */
void fy_order_begin(void);
void fy_order_end(void);
/* A request whose answer may take any time (a lock wait), on a connection of its own. */
int fy_call_waiting(const struct fy_enc *e);

/* ---- reply.c: parsing replies, apart from the socket (tests/c/fuzz_reply.c fuzzes it) ---- */
/* Where a reply's bytes come from: read(ctx, iov, cnt) fills every iov whole, 0, or -1. */
struct fy_src { int (*read)(void *ctx, struct iovec *iov, int cnt); void *ctx; };
/* A reply's status for a successful fixed part of rep_len bytes: 0 or -errno (-EIO). */
int fy_reply_status(const struct fy_rep_header *r, size_t rep_len);
/* The rest of the reply whose header is *r, as fy_call / fy_call_alloc take it: the call's
 * result; *lost says the stream can no longer be trusted (the connection must go). */
int fy_reply_body(const struct fy_src *s, const struct fy_rep_header *r, void *rep, size_t rep_len, void *tail,
                  size_t tail_cap, size_t *tail_got, int *lost);
int fy_reply_body_alloc(const struct fy_src *s, const struct fy_rep_header *r, void *rep, size_t rep_len,
                        char **tail, size_t *tail_len, int *lost);
/* The smallest LISTDIR entry: two string lengths, a one-byte name, the attributes. */
#define FY_ENTRY_MIN (2 * sizeof(uint32_t) + 1 + sizeof(struct fy_attr))
/* A LISTDIR tail of `count` entries into ent[0..count) (ent NULL: only check): 0, or -EIO
 * unless it holds exactly `count` entries, each a name a directory can hold. */
int fy_dec_listdir(const char *data, size_t len, uint32_t count, struct fy_entry *ent);
/* A GETXATTR value / LISTXATTR name list (names) of n bytes in a tail of len: n or -EIO. */
#define FY_XATTR_MAX 65536  /* Linux's XATTR_SIZE_MAX and XATTR_LIST_MAX */
ssize_t fy_dec_xattr(const char *val, size_t len, uint32_t n, int names);
/* A fixed reply's fields against the request (READ: the data received, WRITE: the bytes
 * sent): 0, or -EIO for a count, offset or lock no answer to it can carry. */
int fy_check_rep(uint16_t op, const void *rep, uint64_t asked);
extern int fy_conn_;  /* wire.c: the connection to the agent, -1 when none */
static inline int fy_conn_fd(void) { return fy_conn_; }
void fy_conn_forget(void);
void fy_after_fork_child(void);  /* pthread_atfork: a forked child opens a connection of its own */

/* ---- stat.c ---- */
void fy_attr_to_stat(const struct fy_attr *a, const char *ferry_path, struct stat *st);
int fy_remote_stat(const char *ferry_path, int nofollow, struct stat *st);
/* cache mode: make sure ferry path's cache entry is present and populated; 0 or -errno */
/* table.c: what the agent's shared table answers without a round trip (0: don't know). */
int fy_table_trusted(const struct stat *st);  /* a directory's listing, a file's content */
int fy_table_ident(const struct stat *st, struct fy_table_ident *out);
void fy_table_note_ident(const struct stat *st, const struct fy_table_ident *id);
int fy_cache_lookup(const struct fy_path *p);
int fy_cache_absent(const struct fy_path *p);
extern int fy_root_fd_;  /* stat.c: the replica tree's O_PATH fd, -1 when none is open */
static inline int fy_replica_root_fd(void) { return __atomic_load_n(&fy_root_fd_, __ATOMIC_ACQUIRE); }
void fy_replica_root_forget(void);  /* the program closed (or dup2'ed onto) its number */
int fy_cache_stat(const struct fy_path *p, struct stat *st, int nofollow);
int fy_cache_list_parent(const struct fy_path *p);
/* cache mode: a file is about to be made in the replica without asking the agent (an
 * exclusive create, an O_TMPFILE given a name): tell it the directory (CACHE_CREATED) */
void fy_cache_creating(const struct fy_path *p);
int fy_parent_redirect(const struct fy_path *p);

/* ---- io.c: open, close ---- */
int fy_open_path(const struct fy_path *p, int flags, mode_t mode);
int fy_close_fd(int fd);
void fy_close_fd_keep(int fd);

/* ---- direct.c: data on direct-mode fds (off -1: at, and advancing, the file position) ---- */
ssize_t fy_direct_read(struct fy_fd *f, void *buf, size_t n, int64_t off);
ssize_t fy_direct_write(struct fy_fd *f, const void *buf, size_t n, int64_t off);
off_t fy_direct_lseek(struct fy_fd *f, off_t off, int whence);

/* ---- lock.c ---- */
uint64_t fy_new_desc_id(void);
void fy_lock_on_close(struct fy_fd *f, int fd);
int fy_lock_fcntl(struct fy_fd *f, int fd, int cmd, void *arg);  /* -2: not a lock command */

/* ---- tmp.c ---- */
/* An O_TMPFILE open whose directory is ferry's: an anonymous local file (see tmp.c). */
int fy_open_tmpfile(const struct fy_path *p, int flags, mode_t mode);
/* 0 when the anonymous file `st` describes was opened O_EXCL (never to be linked). */
int fy_tmpfile_linkable(const struct stat *st);

/* ---- stdio.c ---- */
void fy_stdio_adopt(void);

/* ---- env.c: the environment of a new program image ---- */
/* A copy of envp for exec (leaked by a successful exec; free it with fy_env_free otherwise). */
char **fy_env_for_exec(char *const envp[]);
void fy_env_free(char **env, char *const orig[]);
/* Put fy_env_for_exec(environ) in environ for a call that spawns with it (system, popen). */
char **fy_environ_swap(void);
void fy_environ_restore(char **saved);

/* ---- link.c ---- */
/* `path` itself when it is no ferry symlink, else its target (malloc'd), followed. */
const char *fy_follow_links(const char *path);

/* ---- fault.c: reading the program's memory as the kernel does (EFAULT, not SIGSEGV) ---- */
/* strnlen(s, max), or -1 when a byte before the NUL (or max) cannot be read. */
long fy_probe_str(const char *s, size_t max);
/* memcpy(dst, src, n), or -1 when either side faulted (dst then partly written). */
int fy_probe_copy(void *dst, const void *src, size_t n);
/* Can every byte of [p, p+n) be read (rd) or written (wr)?  0, or -1.  One access a page. */
int fy_probe_rd(const void *p, size_t n);
int fy_probe_wr(void *p, size_t n);
/* Fill a program buffer: 0, or -1 with errno EFAULT. */
static inline int fy_copy_out(void *prog, const void *src, size_t n)
{
    if (fy_probe_copy(prog, src, n) == 0) return 0;
    errno = EFAULT;
    return -1;
}
/* Is `path` readable and ""?  (The AT_EMPTY_PATH test, before anything else reads it.) */
static inline int fy_empty_path(const char *path) { return path && fy_probe_str(path, 1) == 0; }
void fy_fault_init(void);          /* init.c: install the SIGSEGV/SIGBUS handler */
void fy_fault_before_exec(void);   /* proc.c: SIG_IGN crosses exec as the kernel keeps it */
void fy_fault_after_exec(void);    /* proc.c: the exec failed */

/* ---- errno helpers ---- */
static inline int fy_fail(int neg_errno) { extern int *__errno_location(void); *__errno_location() = -neg_errno; return -1; }
/* A status (0 or -errno) as a libc call answers: 0, or -1 with errno set. */
static inline int fy_result(int status) { return status < 0 ? fy_fail(status) : 0; }

#endif
