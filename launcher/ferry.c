/* ferry.c -- the installed `ferry` command: `ferry run` in C, everything else in Python.
 *
 * A Python interpreter alone takes ~40 ms to start, which every `ferry run` paid before
 * its program ran.  The work of a run is small once a host agent is up (agent/host.py):
 * two round trips on its control socket (HELLO, SESSION_OPEN), a fork and exec, a wait,
 * and one more round trip (SESSION_END) for the write-back.  This file does exactly that
 * and nothing else; it is what run.py's `run()` does, step for step, with the same exit
 * statuses and messages.
 *
 * Anything it is not sure about it hands to the Python CLI, unchanged, by exec'ing
 * `PYTHON -m ferry ARGS...` (PYTHON: the interpreter that built it, FERRY_PYTHON):
 *
 *   - every subcommand but `run`, and `run` with an option other than --mount/-m,
 *     --mode, --no-wait and -- (so --help, --token-file, --tls... are Python's);
 *   - a mount spec that does not plainly look like /PREFIX=ferry://HOST:PORT[/SUB]
 *     (Python names what is wrong with it, exit 125), overlapping mounts, a URL with
 *     options (token files are checked up front by Python), a mode other than
 *     cache/direct, no command;
 *   - FERRY_AGENT=private (the run's own agent lives in the Python process);
 *   - no agent answering on the control socket (ENOENT, ECONNREFUSED, or its directory
 *     missing or not ours): Python starts one (control.spawn_agent) and waits for it to
 *     answer before the program starts.  Starting it here would duplicate that logic for
 *     a case that costs an agent's start-up anyway; handing off keeps one copy of it.
 *     Either way the program's first ferry call cannot race the agent's start: the
 *     session is open, its socket listening, before the program is forked;
 *   - anything that cannot go into the session config as it is: arguments, cwd or
 *     environment values that are not UTF-8, a config larger than one frame buffer;
 *   - an editable install whose shim sources are newer than the library built next to
 *     this binary (Python rebuilds the shim from a checkout; we would run a stale one).
 *
 * The wire format is generated from src/ferry/protocol/spec.py into fy_launch.h (and the
 * shim's fy_codec.h, which it includes): one definition for C and Python.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fy_launch.h"

/* Baked in by shimlib.build_launcher (setup.py, or a checkout's tests). */
#ifndef FERRY_PYTHON
#define FERRY_PYTHON "python3"
#endif
#ifndef FERRY_PYVER
#define FERRY_PYVER "3"
#endif

#define EXIT_FERRY_FAILED 125
#define REMOTE_TAG "/REMOTE@"
#define LINK_OUT_PREFIX "/.ferry-link-out"

extern char **environ;

static int g_argc;
static char **g_argv;
static char g_log[PATH_MAX]; /* agent.log beside the control socket, for messages */

/* ------------------------------------------------------------------------------------ */
/* Handing off to Python                                                                  */
/* ------------------------------------------------------------------------------------ */

static char g_exe_dir[PATH_MAX]; /* this binary's directory ("" if unknown) */

static void find_exe_dir(void)
{
    ssize_t n = readlink("/proc/self/exe", g_exe_dir, sizeof g_exe_dir - 1);
    if (n <= 0) n = 0;
    g_exe_dir[n] = '\0';
    char *slash = strrchr(g_exe_dir, '/');
    if (slash) *slash = '\0';
    else g_exe_dir[0] = '\0';
}

/* dir/rel if it exists with access `mode`. */
static int file_at(char *out, size_t size, const char *dir, const char *rel, int mode)
{
    return *dir && (size_t)snprintf(out, size, "%s/%s", dir, rel) < size && access(out, mode) == 0;
}

/* The same, made canonical (no "..": LD_PRELOAD names it as Python would).  Not for an
 * interpreter: a venv's python is a symlink that must stay one. */
static int real_file_at(char *out, size_t size, const char *dir, const char *rel)
{
    char real[PATH_MAX];
    if (!file_at(out, size, dir, rel, R_OK)) return 0;
    if (realpath(out, real) && strlen(real) < size) strcpy(out, real);
    return 1;
}

/* The interpreter whose ferry package this binary belongs to.  A wheel may be built by
 * one Python and installed in another's venv, so in a venv (pyvenv.cfg above our bin/)
 * the venv's python comes first; then the one that built us; then one beside us. */
static const char *python_path(void)
{
#ifndef FERRY_CHECKOUT
    static char buf[PATH_MAX];
    char cfg[PATH_MAX];
    if (file_at(cfg, sizeof cfg, g_exe_dir, "../pyvenv.cfg", R_OK) &&
        file_at(buf, sizeof buf, g_exe_dir, "python" FERRY_PYVER, X_OK))
        return buf;
    if (access(FERRY_PYTHON, X_OK) != 0 && file_at(buf, sizeof buf, g_exe_dir, "python" FERRY_PYVER, X_OK))
        return buf;
#endif
    return FERRY_PYTHON;
}

/* exec `PYTHON -m ferry ARGS...`: the environment (PYTHONPATH included) goes as it is, so
 * a front built from a checkout hands off to that checkout's Python code. */
static void __attribute__((noreturn)) handoff(void)
{
    const char *python = python_path();
    char **args = calloc((size_t)g_argc + 3, sizeof *args);
    if (!args) _exit(EXIT_FERRY_FAILED);
    args[0] = (char *)python;
    args[1] = (char *)"-m";
    args[2] = (char *)"ferry";
    for (int i = 1; i < g_argc; i++) args[i + 2] = g_argv[i];
    execv(python, args);
    if (!strchr(python, '/')) execvp(python, args);
    fprintf(stderr, "ferry: cannot start %s: %s (reinstall ferry)\n", python, strerror(errno));
    _exit(EXIT_FERRY_FAILED);
}

/* ------------------------------------------------------------------------------------ */
/* A growing string, for the session config                                              */
/* ------------------------------------------------------------------------------------ */

struct buf { char *p; size_t len, cap; };

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) handoff();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_s(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* Is s valid UTF-8 (what json.loads on the agent's side will accept as the string)? */
static int utf8_ok(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s, n;
        uint32_t cp;
        if (c < 0x80) { s++; continue; }
        if ((c & 0xe0) == 0xc0) { n = 1; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { n = 2; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { n = 3; cp = c & 0x07; }
        else return 0;
        for (unsigned i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        s += n + 1;
    }
    return 1;
}

/* A JSON string: `"`, `\` and control characters escaped; anything not UTF-8 is Python's
 * business (it would send it surrogate-escaped). */
static void buf_json(struct buf *b, const char *s)
{
    if (!utf8_ok((const unsigned char *)s)) handoff();
    buf_s(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_add(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            buf_s(b, esc);
        } else {
            buf_add(b, (const char *)p, 1);
        }
    }
    buf_s(b, "\"");
}

/* ------------------------------------------------------------------------------------ */
/* The arguments                                                                          */
/* ------------------------------------------------------------------------------------ */

/* A prefix we can vouch for: /a/b with plain components (no '.', '..', '//', trailing
 * slash, ':' or '@'), not ferry's own /.ferry-link-out.  Anything else may still be valid
 * (Python normalises it) or not: Python decides. */
static int plain_prefix(const char *p, size_t n)
{
    if (n < 2 || p[0] != '/' || p[n - 1] == '/') return 0;
    if (n >= strlen(LINK_OUT_PREFIX) && !strncmp(p, LINK_OUT_PREFIX, strlen(LINK_OUT_PREFIX))) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '/') {
            if (p[i + 1] == '/') return 0;
            if (p[i + 1] == '.' && (i + 2 == n || p[i + 2] == '/')) return 0;
            if (p[i + 1] == '.' && p[i + 2] == '.' && (i + 3 == n || p[i + 3] == '/')) return 0;
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '.' || c == '_' || c == '-' || c == '+')) {
            return 0;
        }
    }
    return 1;
}

/* ferry://HOST:PORT[/SUB] with a plain host name or IPv4 address, a port in range, no
 * options (`?`: token files and TLS settings are checked by Python up front) and no '..'
 * in SUB: what Mount.parse accepts without a question. */
static int plain_url(const char *u)
{
    if (strncmp(u, "ferry://", 8)) return 0;
    const char *h = u + 8, *p = h;
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) return 0;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
           *p == '-')
        p++;
    if (*p++ != ':') return 0;
    long port = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 6) port = port * 10 + (*p++ - '0'), digits++;
    if (digits < 1 || digits > 5 || port < 1 || port > 65535) return 0;
    if (*p == '\0') return 1;
    if (*p != '/') return 0;
    for (const char *s = p; *s; s++) {
        if (*s <= 0x20 || *s >= 0x7f || *s == '?' || *s == '%' || *s == '\\' || *s == '"') return 0;
        if (*s == '/' && s[1] == '.' && s[2] == '.' && (s[3] == '/' || s[3] == '\0')) return 0;
    }
    return 1;
}

/* Overlapping prefixes (routes.check_mounts) are refused by Python with its message. */
static int overlap(const char *a, size_t an, const char *b, size_t bn)
{
    if (an == bn) return !memcmp(a, b, an);
    if (an > bn) return !memcmp(a, b, bn) && a[bn] == '/';
    return !memcmp(a, b, an) && b[an] == '/';
}

struct run_args {
    const char **mounts;
    int nmounts;
    const char *mode;
    int no_wait; /* --no-wait: exit with the program, the agent writes back behind */
    char **cmd; /* NULL-terminated, from argv */
};

/* `ferry run [--mount X | -m X | --mount=X | --mode M | --mode=M | --no-wait]... [--] CMD...`, as
 * click parses it for cli.run (options stop at the first non-option); anything else is
 * handed off. */
static void parse_run(int argc, char **argv, struct run_args *r)
{
    r->mounts = calloc((size_t)argc, sizeof *r->mounts);
    if (!r->mounts) handoff();
    r->nmounts = 0;
    r->no_wait = 0;
    r->mode = getenv("FERRY_RUN_MODE");
    if (!r->mode) r->mode = "cache";
    int i = 2;
    while (i < argc) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) { i++; break; }
        if (!strcmp(a, "--mount") || !strcmp(a, "-m")) {
            if (i + 1 >= argc) handoff();
            r->mounts[r->nmounts++] = argv[i + 1];
            i += 2;
        } else if (!strncmp(a, "--mount=", 8)) {
            r->mounts[r->nmounts++] = a + 8;
            i++;
        } else if (!strcmp(a, "--mode")) {
            if (i + 1 >= argc) handoff();
            r->mode = argv[i + 1];
            i += 2;
        } else if (!strncmp(a, "--mode=", 7)) {
            r->mode = a + 7;
            i++;
        } else if (!strcmp(a, "--no-wait")) {
            r->no_wait = 1;
            i++;
        } else if (a[0] == '-') {
            handoff(); /* an option we leave to click: --help, --token-file, -mX, ... */
        } else {
            break;
        }
    }
    if (i >= argc) handoff(); /* no command: click's usage error */
    r->cmd = argv + i;
    if (strcmp(r->mode, "cache") && strcmp(r->mode, "direct")) handoff();
    for (int k = 0; k < r->nmounts; k++) {
        const char *m = r->mounts[k], *eq = strchr(m, '=');
        if (!eq || !plain_prefix(m, (size_t)(eq - m)) || !plain_url(eq + 1)) handoff();
        for (int j = 0; j < k; j++) {
            const char *o = r->mounts[j];
            if (overlap(m, (size_t)(eq - m), o, (size_t)(strchr(o, '=') - o))) handoff();
        }
    }
}

/* control.SessionConfig.to_json() for this run: mounts as given, mode, no URL-option
 * defaults (runs with any are Python's), cwd, the SESSION_ENV that is set, holder 0. */
static char *session_config(const struct run_args *r)
{
    static const char *const session_env[] = {"HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR",
                                              "FERRY_CACHE_DIR", "FERRY_CONNECT_TIMEOUT", "FERRY_CALL_TIMEOUT"};
    struct buf b = {0};
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) handoff(); /* removed, or too long: Python says */
    buf_s(&b, "{\"mounts\": [");
    for (int k = 0; k < r->nmounts; k++) {
        if (k) buf_s(&b, ", ");
        buf_json(&b, r->mounts[k]);
    }
    buf_s(&b, "], \"mode\": ");
    buf_json(&b, r->mode);
    buf_s(&b, ", \"options\": {}, \"cwd\": ");
    buf_json(&b, cwd);
    buf_s(&b, ", \"env\": {");
    int n = 0;
    for (size_t k = 0; k < sizeof session_env / sizeof *session_env; k++) {
        const char *v = getenv(session_env[k]);
        if (!v) continue;
        if (n++) buf_s(&b, ", ");
        buf_json(&b, session_env[k]);
        buf_s(&b, ": ");
        buf_json(&b, v);
    }
    buf_s(&b, "}, \"holder\": 0}");
    return b.p;
}

/* ------------------------------------------------------------------------------------ */
/* Where things are                                                                       */
/* ------------------------------------------------------------------------------------ */

/* control.control_path(): FERRY_AGENT_SOCK, else agent.sock in $XDG_RUNTIME_DIR/ferry or
 * /tmp/ferry-UID.  A directory that is missing (no agent ever started) or that is not
 * ours alone (Python refuses it, saying how to fix it) is Python's to handle. */
static void control_path(char *out, size_t size)
{
    const char *sock = getenv("FERRY_AGENT_SOCK");
    char dir[PATH_MAX];
    struct stat st;
    if (sock && *sock) {
        if (strlen(sock) >= size) handoff();
        strcpy(out, sock);
    } else {
        const char *rt = getenv("XDG_RUNTIME_DIR");
        if (rt && *rt && stat(rt, &st) == 0 && S_ISDIR(st.st_mode))
            snprintf(dir, sizeof dir, "%s/ferry", rt);
        else
            snprintf(dir, sizeof dir, "/tmp/ferry-%u", (unsigned)getuid());
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
            handoff();
        if ((size_t)snprintf(out, size, "%s/agent.sock", dir) >= size) handoff();
    }
    /* log_path(): agent.log in the socket's directory */
    const char *slash = strrchr(out, '/');
    size_t dn = slash ? (size_t)(slash - out + 1) : 0;
    snprintf(g_log, sizeof g_log, "%.*sagent.log", (int)dn, out);
}

/* libferry.so: FERRY_SHIM (tests from a checkout); else beside this binary (the package's
 * ferry/_lib/, where setup.py puts both); else, for the copy a wheel installs as
 * <prefix>/bin/ferry, in the package: the checkout's src/ferry/_lib for an editable
 * install, <bin>/FERRY_PLATLIB/ferry/_lib (../lib/python3.X/site-packages/...) for a
 * normal one.  Not found: Python says it is missing and what to do. */
static void shim_path(char *out, size_t size)
{
    const char *env = getenv("FERRY_SHIM");
    if (env && *env) {
        if (strlen(env) >= size) handoff();
        strcpy(out, env);
        return;
    }
    if (real_file_at(out, size, g_exe_dir, "libferry.so")) return;
#ifdef FERRY_CHECKOUT
    if (real_file_at(out, size, FERRY_CHECKOUT, "src/ferry/_lib/libferry.so")) return;
#endif
#ifdef FERRY_PLATLIB
    if (real_file_at(out, size, g_exe_dir, FERRY_PLATLIB "/ferry/_lib/libferry.so")) return;
#endif
    if (real_file_at(out, size, g_exe_dir, "../lib/python" FERRY_PYVER "/site-packages/ferry/_lib/libferry.so"))
        return;
    handoff();
}

#ifdef FERRY_CHECKOUT
/* An editable install (`pip install -e .`) built this binary and the shim beside it from
 * the checkout FERRY_CHECKOUT.  If a source there changed since, the library is stale:
 * hand off, so Python runs with the shim it rebuilds (shimlib.path()) until the next
 * `pip install -e .`.  Some 40 stats: tens of microseconds. */
static int newer_than(const char *dir, const struct timespec *t)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int newer = 0;
    while (!newer && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        struct stat st;
        if (n < 3 || e->d_name[n - 2] != '.' || (e->d_name[n - 1] != 'c' && e->d_name[n - 1] != 'h')) continue;
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 &&
            (st.st_mtim.tv_sec > t->tv_sec || (st.st_mtim.tv_sec == t->tv_sec && st.st_mtim.tv_nsec > t->tv_nsec)))
            newer = 1;
    }
    closedir(d);
    return newer;
}

static void check_fresh(const char *shim)
{
    struct stat st;
    if (getenv("FERRY_SHIM") && *getenv("FERRY_SHIM")) return;
    if (stat(shim, &st) != 0) handoff();
    if (newer_than(FERRY_CHECKOUT "/shim", &st.st_mtim) || newer_than(FERRY_CHECKOUT "/launcher", &st.st_mtim))
        handoff();
}
#endif

/* ------------------------------------------------------------------------------------ */
/* The control connection                                                                 */
/* ------------------------------------------------------------------------------------ */

static uint64_t g_rid;

struct reply {
    int32_t status;
    char *payload;
    uint32_t len;
};

/* Why a call failed, as run.py prints it after "ferry run: ". */
static char g_err[PATH_MAX + 256];

static void set_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
}

static int read_all(int fd, void *p, size_t n, const char *op)
{
    char *c = p;
    while (n) {
        ssize_t k = read(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            set_err("[Errno %d] %s", errno, strerror(errno));
            return -1;
        }
        if (k == 0) { /* control.AgentError, shown by its message */
            set_err("the ferry agent closed the connection during %s: see %s", op, g_log);
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* One request (with `pass_fd` as SCM_RIGHTS when >= 0) and its reply, as Control.call. */
static int call(int sock, struct fy_enc *e, const char *op, int pass_fd, struct reply *rep)
{
    struct fy_req_header h = {(uint32_t)e->len, e->op, 0, ++g_rid};
    struct iovec iov[2] = {{&h, sizeof h}, {e->buf, e->len}};
    union { struct cmsghdr c; char space[CMSG_SPACE(sizeof(int))]; } anc;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    if (pass_fd >= 0) {
        memset(&anc, 0, sizeof anc);
        msg.msg_control = anc.space;
        msg.msg_controllen = sizeof anc.space;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    size_t total = sizeof h + e->len;
    ssize_t sent;
    do sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        set_err("[Errno %d] %s", errno, strerror(errno));
        return -1;
    }
    if ((size_t)sent < total) { /* the rest, without the fd (sent once, with the first byte) */
        const char *all = (const char *)&h;
        char tmp[sizeof h + sizeof e->buf];
        memcpy(tmp, all, sizeof h);
        memcpy(tmp + sizeof h, e->buf, e->len);
        for (size_t off = (size_t)sent; off < total;) {
            ssize_t k = send(sock, tmp + off, total - off, MSG_NOSIGNAL);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) {
                set_err("[Errno %d] %s", errno, strerror(errno));
                return -1;
            }
            off += (size_t)k;
        }
    }
    struct fy_rep_header rh;
    if (read_all(sock, &rh, sizeof rh, op)) return -1;
    if (rh.rid != h.rid || rh.length > FY_MAX_FRAME) {
        set_err("[Errno %d] the ferry agent broke the protocol during %s: see %s", EPROTO, op, g_log);
        return -1;
    }
    rep->status = rh.status;
    rep->len = rh.length;
    rep->payload = malloc(rh.length + 1);
    if (!rep->payload) handoff();
    if (read_all(sock, rep->payload, rh.length, op)) return -1;
    if (rh.status < 0) { /* Control.call's OSError, printed with str() */
        set_err("[Errno %d] ferry agent: %s: %s (see %s)", -rh.status, op, strerror(-rh.status), g_log);
        return -1;
    }
    return 0;
}

static char *dup_n(const char *p, uint32_t n)
{
    char *s = malloc((size_t)n + 1);
    if (!s) handoff();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* The program                                                                            */
/* ------------------------------------------------------------------------------------ */

static volatile pid_t g_child = -1;

/* run.py's FORWARDED: the signals a terminal or a supervisor sends to `ferry run` are the
 * program's (its status then says what it did about them). */
static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void forward(int sig)
{
    int saved = errno;
    if (g_child > 0) kill(g_child, sig);
    errno = saved;
}

static void setenv_list(char ***envp, size_t *n, const char *key, const char *value)
{
    size_t len = strlen(key) + strlen(value) + 2;
    char *kv = malloc(len);
    if (!kv) handoff();
    snprintf(kv, len, "%s=%s", key, value);
    (*envp)[(*n)++] = kv;
}

/* run._program_env: ours, with the shim preloaded first and the session's variables;
 * FERRY_FDS and FERRY_CWD (the shim's hand-over across exec) removed. */
static char **program_env(const char *shim, const char *sock, const char *mode, const char *tree,
                          const char *prefixes)
{
    static const char *const drop[] = {"LD_PRELOAD", "FERRY_SOCK", "FERRY_MODE", "FERRY_CACHE",
                                       "FERRY_PREFIXES", "FERRY_FDS", "FERRY_CWD"};
    size_t count = 0, n = 0;
    while (environ[count]) count++;
    char **envp = calloc(count + 8, sizeof *envp);
    if (!envp) handoff();
    for (size_t i = 0; i < count; i++) {
        int keep = 1;
        for (size_t k = 0; k < sizeof drop / sizeof *drop && keep; k++) {
            size_t kl = strlen(drop[k]);
            if (!strncmp(environ[i], drop[k], kl) && environ[i][kl] == '=') keep = 0;
        }
        if (keep) envp[n++] = environ[i];
    }
    const char *old = getenv("LD_PRELOAD");
    if (old && *old) {
        size_t len = strlen(shim) + strlen(old) + 2;
        char *both = malloc(len);
        if (!both) handoff();
        snprintf(both, len, "%s %s", shim, old);
        setenv_list(&envp, &n, "LD_PRELOAD", both);
    } else {
        setenv_list(&envp, &n, "LD_PRELOAD", shim);
    }
    setenv_list(&envp, &n, "FERRY_SOCK", sock);
    setenv_list(&envp, &n, "FERRY_MODE", mode);
    setenv_list(&envp, &n, "FERRY_CACHE", tree);
    setenv_list(&envp, &n, "FERRY_PREFIXES", prefixes);
    envp[n] = NULL;
    return envp;
}

/* run._is_ferry_path */
static int is_ferry_path(const char *path, const char *prefixes)
{
    if (!strncmp(path, REMOTE_TAG, strlen(REMOTE_TAG))) return 1;
    for (const char *p = prefixes; *p;) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n && !strncmp(path, p, n) && (path[n] == '\0' || path[n] == '/')) return 1;
        p += n + (end ? 1 : 0);
    }
    return 0;
}

/* In the child: exec cmd[0] as subprocess.Popen does (PATH from the program's own
 * environment, /bin:/usr/bin without one; no shell fallback for scripts without #!), the
 * errno of the most telling failure returned. */
static int exec_search(char **cmd, char **envp)
{
    if (strchr(cmd[0], '/')) {
        execve(cmd[0], cmd, envp);
        return errno;
    }
    const char *path = "/bin:/usr/bin";
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, "PATH=", 5)) path = *e + 5;
    int saved = 0, last = ENOENT;
    char full[PATH_MAX];
    for (const char *p = path;;) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0)
            snprintf(full, sizeof full, "%s", cmd[0]);
        else
            snprintf(full, sizeof full, "%.*s/%s", (int)n, p, cmd[0]);
        execve(full, cmd, envp);
        last = errno;
        if (!saved && errno != ENOENT && errno != ENOTDIR) saved = errno;
        if (!end) break;
        p = end + 1;
    }
    return saved ? saved : last;
}

/* Fork and exec the program; its status as run._status has it (128+N for signal N), or
 * 127/126 after saying why it could not start. */
static int run_program(char **cmd, char **envp, const char *prefixes)
{
    char **argv = cmd;
    if (is_ferry_path(cmd[0], prefixes)) {
        /* The program itself is a ferry path: a preloaded shell's exec hook fetches it. */
        int n = 0;
        while (cmd[n]) n++;
        argv = calloc((size_t)n + 4, sizeof *argv);
        if (!argv) handoff();
        argv[0] = (char *)"/bin/sh";
        argv[1] = (char *)"-c";
        argv[2] = (char *)"exec \"$0\" \"$@\"";
        memcpy(argv + 3, cmd, (size_t)n * sizeof *cmd);
    }
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC)) {
        fprintf(stderr, "ferry run: cannot start %s: %s\n", argv[0], strerror(errno));
        return EXIT_FERRY_FAILED;
    }
    /* Signals that arrive before the handlers are in place wait (blocked), then reach the
     * child: the child itself starts with them blocked and unblocks them with default
     * handlers, so a signal never runs our handler in the child. */
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) sigaddset(&block, forwarded[i]);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t pid = fork();
    if (pid == 0) {
        close(errpipe[0]);
        sigprocmask(SIG_SETMASK, &old, NULL);
        /* Popen's close_fds: the program gets 0, 1, 2 only (the control socket is CLOEXEC
         * already; so is errpipe[1], which says the exec worked by closing). */
#ifdef SYS_close_range
        if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0)
#endif
        {
            long max = sysconf(_SC_OPEN_MAX);
            for (int fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
                if (fd != errpipe[1]) fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
        int err = exec_search(argv, envp);
        ssize_t ignored = write(errpipe[1], &err, sizeof err);
        (void)ignored;
        _exit(127);
    }
    if (pid < 0) {
        int err = errno;
        sigprocmask(SIG_SETMASK, &old, NULL);
        close(errpipe[0]);
        close(errpipe[1]);
        fprintf(stderr, "ferry run: cannot start %s: %s\n", argv[0], strerror(err));
        return EXIT_FERRY_FAILED;
    }
    g_child = pid;
    close(errpipe[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) sigaction(forwarded[i], &sa, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);

    int err = 0;
    ssize_t k;
    do k = read(errpipe[0], &err, sizeof err);
    while (k < 0 && errno == EINTR);
    close(errpipe[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    g_child = -1; /* as Popen.send_signal after wait: later signals go nowhere */
    if (k == (ssize_t)sizeof err) {
        if (err == ENOENT || err == ENOTDIR) {
            fprintf(stderr, "ferry run: %s: command not found\n", argv[0]);
            return 127;
        }
        if (err == EACCES || err == EPERM)
            fprintf(stderr, "ferry run: %s: not executable\n", argv[0]);
        else
            fprintf(stderr, "ferry run: %s: %s\n", argv[0], strerror(err));
        return 126;
    }
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
    find_exe_dir();
    if (argc < 2 || strcmp(argv[1], "run")) handoff();
    const char *agent = getenv("FERRY_AGENT");
    if (agent && strcmp(agent, "host")) handoff(); /* "private", or something Python names */

    struct run_args r;
    parse_run(argc, argv, &r);
    char *config = session_config(&r);
    static struct fy_enc e; /* ~8 KiB: a config that does not fit is Python's (see fy_codec.h) */
    fy_enc_session_open(&e, config);
    if (e.len > sizeof e.buf) handoff();
    if (fcntl(2, F_GETFD) < 0) handoff(); /* no stderr to hand the agent */

    char shim[PATH_MAX], ctl[sizeof ((struct sockaddr_un *)0)->sun_path];
    shim_path(shim, sizeof shim);
#ifdef FERRY_CHECKOUT
    check_fresh(shim);
#endif
    control_path(ctl, sizeof ctl);

    /* Connect; no agent answering is Python's case (it starts one). */
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) handoff();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, ctl);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) handoff();

    struct reply rep;
    static struct fy_enc hello;
    fy_enc_hello(&hello, FY_PROTOCOL_VERSION, FY_MAX_FRAME, 0, "");
    struct fy_dec_hello h;
    if (call(sock, &hello, "HELLO", -1, &rep) ||
        !fy_dec_hello(rep.payload, rep.payload + rep.len, &h)) {
        fprintf(stderr, "ferry run: %s\n", g_err[0] ? g_err : "bad HELLO reply from the ferry agent");
        return EXIT_FERRY_FAILED;
    }
    struct fy_dec_session_open s;
    if (call(sock, &e, "SESSION_OPEN", 2, &rep) || !fy_dec_session_open(rep.payload, rep.payload + rep.len, &s)) {
        fprintf(stderr, "ferry run: %s\n", g_err[0] ? g_err : "bad SESSION_OPEN reply from the ferry agent");
        return EXIT_FERRY_FAILED;
    }
    char *sock_path = dup_n(s.sock, s.sock_len), *tree = dup_n(s.tree, s.tree_len);
    char *prefixes = dup_n(s.prefixes, s.prefixes_len);

    char **envp = program_env(shim, sock_path, r.mode, tree, prefixes);
    int rc = run_program(r.cmd, envp, prefixes);

    /* --no-wait: closing the control connection without SESSION_END ends the session all
     * the same (the agent writes it back behind; failures go to this run's stderr while it
     * is open, and to `ferry sync` / `ferry agent status`). */
    if (r.no_wait) {
        close(sock);
        return rc;
    }
    /* The write-back: SESSION_END answers once the session's changes are on their nodes. */
    struct fy_enc end;
    fy_enc_session_end(&end, s.session);
    struct fy_dec_session_end f;
    g_err[0] = '\0';
    if (call(sock, &end, "SESSION_END", -1, &rep) || !fy_dec_session_end(rep.payload, rep.payload + rep.len, &f)) {
        fprintf(stderr, "ferry run: the agent was lost before this run's changes were confirmed on their nodes: %s\n",
                g_err[0] ? g_err : "bad SESSION_END reply");
        return EXIT_FERRY_FAILED;
    }
    close(sock);
    if (f.failures_len) {
        /* As run.report_failures: what waits for a node and what was refused as a conflict
         * are said line by line; the rest are failures, counted, the first named. */
        char *failures = dup_n(f.failures, f.failures_len), *first = NULL, *save = NULL;
        size_t n = 0;
        for (char *line = strtok_r(failures, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (strstr(line, " wait for node ") || strncmp(line, "conflict: ", 10) == 0)
                fprintf(stderr, "ferry run: %s\n", line);
            else if (n++ == 0)
                first = line;
        }
        if (n) {
            fprintf(stderr, "ferry run: %zu change(s) could not be written back; first: %s\n", n, first);
            fprintf(stderr, "ferry run: the local copies are kept in %s; the agent sends them when it next starts "
                            "(see ferry agent status)\n", tree);
        }
        return EXIT_FERRY_FAILED;
    }
    return rc;
}
