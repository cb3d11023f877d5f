/* Requests to the agent over its Unix socket: one connection per process, opened on
 * first use (and again in a forked child), one request in flight at a time under a lock.
 *
 * The socket fd is moved high so programs that dup2 onto low numbers or close "all fds
 * above 2" rarely hit it; close/dup2/dup3 on it make us forget it rather than break.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int fy_conn_ = -1;
#define conn fy_conn_
static pid_t conn_pid;
static uint64_t next_rid = 1;
static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;

void fy_conn_forget(void) { conn = -1; }

static int io_full(int write_side, int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t n = write_side ? LIBC(writev)(fd, iov, cnt) : LIBC(readv)(fd, iov, cnt);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        while (cnt > 0 && (size_t)n >= iov->iov_len) { n -= (ssize_t)iov->iov_len; iov++; cnt--; }
        if (cnt > 0) { iov->iov_base = (char *)iov->iov_base + n; iov->iov_len -= (size_t)n; }
    }
    return 0;
}

static int hello(int fd)
{
    struct fy_enc e;
    fy_enc_hello(&e, FY_PROTOCOL_VERSION, FY_MAX_FRAME, 0, "");
    struct fy_req_header h = {(uint32_t)e.len, e.op, 0, 0};
    struct iovec iov[2] = {{&h, sizeof h}, {e.buf, e.len}};
    if (io_full(1, fd, iov, 2) < 0) return -1;
    struct fy_rep_header r;
    struct fy_rep_hello rep;
    struct iovec rv[1] = {{&r, sizeof r}};
    if (io_full(0, fd, rv, 1) < 0 || r.status != 0 || r.length != sizeof rep) return -1;
    struct iovec bv[1] = {{&rep, sizeof rep}};
    return io_full(0, fd, bv, 1);
}

static int connect_agent(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, fy_cfg.sock, sizeof fy_cfg.sock < sizeof a.sun_path ? sizeof fy_cfg.sock : sizeof a.sun_path);
    int rc;
    do rc = connect(fd, (struct sockaddr *)&a, sizeof a); while (rc < 0 && errno == EINTR);
    if (rc < 0) { LIBC(close)(fd); return -1; }
    struct rlimit rl;
    int lo = 700;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 256 && rl.rlim_cur - 64 < (rlim_t)lo)
        lo = (int)rl.rlim_cur - 64;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, lo);
    if (high >= 0) { LIBC(close)(fd); fd = high; }
    /* Never hang a program forever on a wedged agent. */
    struct timeval tv = {120, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (hello(fd) < 0) { LIBC(close)(fd); return -1; }
    return fd;
}

static void drop_conn(void)
{
    if (conn >= 0) LIBC(close)(conn);
    conn = -1;
}

static int send_request(const struct fy_req_header *h, const struct fy_enc *e, int pass_fd)
{
    /* header, buf up to the bytes field, the field from the caller's memory, the rest of buf */
    size_t at = e->data_len ? e->data_at : e->len;
    struct iovec iov[4] = {{(void *)h, sizeof *h}, {(void *)e->buf, at}};
    int cnt = 2;
    if (e->data_len) {
        iov[cnt++] = (struct iovec){(void *)e->data, e->data_len};
        iov[cnt++] = (struct iovec){(void *)(e->buf + at), e->len - at};
    }
    if (pass_fd < 0) return io_full(1, conn, iov, cnt);
    /* The fd rides with the first byte; the rest follows as plain stream data. */
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)cnt, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    ssize_t n;
    do n = sendmsg(conn, &m, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
    if (n <= 0) return -1;
    /* Partial: finish the rest without the fd. */
    struct iovec *v = iov;
    while (cnt > 0 && (size_t)n >= v->iov_len) { n -= (ssize_t)v->iov_len; v++; cnt--; }
    if (cnt == 0) return 0;
    v->iov_base = (char *)v->iov_base + n;
    v->iov_len -= (size_t)n;
    return io_full(1, conn, v, cnt);
}

/* Replies are parsed by reply.c (so the fuzzer runs the same code) from this source. */
static int sock_read(void *ctx, struct iovec *iov, int cnt)
{
    (void)ctx;
    return io_full(0, conn, iov, cnt);
}
static const struct fy_src sock = {sock_read, NULL};

static int ensure_conn(void)
{
    pid_t me = getpid();
    if (conn >= 0 && conn_pid == me) return 0;
    if (conn_pid != me) drop_conn();  /* a forked child must not share its parent's stream */
    conn = connect_agent();
    conn_pid = me;
    return conn >= 0 ? 0 : -1;
}

static int call_locked(const struct fy_enc *e, uint16_t flags, int pass_fd, struct fy_rep_header *r)
{
    if (e->len > sizeof e->buf) return -ENAMETOOLONG;
    if (ensure_conn() < 0) return -EIO;
    struct fy_req_header h = {(uint32_t)(e->len + e->data_len), e->op, flags, next_rid++};
    if (send_request(&h, e, pass_fd) < 0) { drop_conn(); return -EIO; }
    if (flags & FY_FLAG_ONEWAY) return 1;
    struct iovec hv = {r, sizeof *r};
    if (io_full(0, conn, &hv, 1) < 0 || r->rid != h.rid) { drop_conn(); return -EIO; }
    return 0;
}

int fy_call(const struct fy_enc *e, int pass_fd, void *rep, size_t rep_len, void *tail, size_t tail_cap,
            size_t *tail_got)
{
    int saved = errno;
    struct fy_rep_header r;
    pthread_mutex_lock(&conn_lock);
    int rc = call_locked(e, 0, pass_fd, &r);
    if (rc == 0) {
        int lost;
        rc = fy_reply_body(&sock, &r, rep, rep_len, tail, tail_cap, tail_got, &lost);
        if (lost) drop_conn();
    }
    pthread_mutex_unlock(&conn_lock);
    errno = saved;
    return rc;
}

void fy_tell(const struct fy_enc *e, int pass_fd)
{
    int saved = errno;
    pthread_mutex_lock(&conn_lock);
    call_locked(e, FY_FLAG_ONEWAY, pass_fd, NULL);
    pthread_mutex_unlock(&conn_lock);
    errno = saved;
}

int fy_call_alloc(const struct fy_enc *e, void *rep, size_t rep_len, char **tail, size_t *tail_len)
{
    int saved = errno;
    struct fy_rep_header r;
    *tail = NULL;
    *tail_len = 0;
    pthread_mutex_lock(&conn_lock);
    int rc = call_locked(e, 0, -1, &r);
    if (rc == 0) {
        int lost;
        rc = fy_reply_body_alloc(&sock, &r, rep, rep_len, tail, tail_len, &lost);
        if (lost) drop_conn();
    }
    pthread_mutex_unlock(&conn_lock);
    errno = saved;
    return rc;
}

int fy_call_waiting(const struct fy_enc *e)
{
    if (e->len > sizeof e->buf) return -ENAMETOOLONG;
    int saved = errno;
    int fd = connect_agent();
    if (fd < 0) { errno = saved; return -EIO; }
    struct timeval forever = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &forever, sizeof forever);
    struct fy_req_header h = {(uint32_t)e->len, e->op, 0, 1};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)e->buf, e->len}};
    struct fy_rep_header r;
    struct iovec rv = {&r, sizeof r};
    int rc = io_full(1, fd, iov, 2) < 0 || io_full(0, fd, &rv, 1) < 0 || r.rid != h.rid ? -EIO : fy_reply_status(&r, 0);
    LIBC(close)(fd);
    errno = saved;
    return rc;
}

/* Cache mode: a change made on the replica and its one-way message are one step between
 * threads, so the agent replays changes in the order the replica took them (threads that
 * mkdir -p at once: a child directory's MKDIR must not reach the node before its parent's). */
static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
void fy_order_begin(void) { pthread_mutex_lock(&order_lock); }
void fy_order_end(void) { pthread_mutex_unlock(&order_lock); }

void fy_after_fork_child(void)
{
    pthread_mutex_t fresh_order = PTHREAD_MUTEX_INITIALIZER;
    memcpy(&order_lock, &fresh_order, sizeof fresh_order);
    /* The parent's lock may have been held by another thread at fork time, and the
     * child must not read replies meant for the parent: drop the inherited stream. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    memcpy(&conn_lock, &fresh, sizeof fresh);
    drop_conn();
    conn_pid = getpid();
}
