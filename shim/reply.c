/* Parsing the agent's replies, apart from the socket they arrive on.
 *
 * wire.c reads a reply's header from its socket and hands the rest of the reply to
 * fy_reply_body / fy_reply_body_alloc with a `fy_src` that reads from that socket; the
 * consumers of replies with a variable tail (dir.c, link.c, xattr.c) and of counts and
 * offsets (direct.c, lock.c) check them with the fy_dec_* / fy_check_rep functions below.
 * The file exists as its own unit so that tests/c/fuzz_reply.c can compile it alone and
 * drive the very same code with a fy_src over the fuzzer's bytes: nothing here touches a
 * socket, a hooked libc call or the shim's configuration.
 *
 * The agent is trusted not to lie on purpose, but a reply that breaks the protocol (a
 * length past the frame limit, a status that is no errno, a count or a string length past
 * the end of its tail, a listing name no directory could hold) must make the call fail
 * with EIO, never hand the program data the agent did not mean.
 */
#include "fy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The largest errno a status may carry (as the kernel's MAX_ERRNO). */
#define FY_ERRNO_MAX 4095

__thread struct fy_redirect fy_redirect;

int fy_redirect_to(const char *path, int which)
{
    if (strlen(path) >= sizeof fy_redirect.path) return -ENAMETOOLONG;
    strcpy(fy_redirect.path, path);
    fy_redirect.which = which;
    return -FY_EREDIRECT;
}

int fy_redirect_extend(int rc, const char *rest)
{
    if (rc != -FY_EREDIRECT || !*rest) return rc;
    size_t n = strlen(fy_redirect.path), m = strlen(rest);
    if (n + m >= sizeof fy_redirect.path) return -ENAMETOOLONG;
    memcpy(fy_redirect.path + n - (n == 1), rest, m + 1);  /* "/" + "/x" is "/x" */
    return rc;
}

/* A reply's status as the call's result: 0 or -errno.  A successful reply must carry at
 * least its fixed part; a status that is neither 0 nor an errno (positive ones other than
 * STATUS_LINK_OUT, which never gets here, or below -FY_ERRNO_MAX, where -FY_EREDIRECT
 * would pass for a redirect the agent never sent) is the agent's fault: EIO. */
int fy_reply_status(const struct fy_rep_header *r, size_t rep_len)
{
    if (r->status > 0 || r->status < -FY_ERRNO_MAX) return -EIO;
    if (r->status == 0 && r->length < rep_len) return -EIO;
    return r->status;
}

/* Read a reply payload of `len` bytes: the first head_len into head, then up to tail_cap
 * into tail (*tail_got: how many), and drop the rest.  0, or -1 when the stream failed. */
int fy_reply_payload(const struct fy_src *s, uint32_t len, void *head, size_t head_len, void *tail, size_t tail_cap,
                     size_t *tail_got)
{
    size_t h = len < head_len ? len : head_len;
    size_t t = len - h < tail_cap ? len - h : tail_cap;
    struct iovec v[2] = {{head, h}, {tail, t}};
    if (h + t && s->read(s->ctx, h ? v : v + 1, h ? 2 : 1) < 0) return -1;
    if (tail_got) *tail_got = t;
    char sink[4096];
    for (size_t want = len - h - t; want;) {
        struct iovec d = {sink, want < sizeof sink ? want : sizeof sink};
        size_t n = d.iov_len;
        if (s->read(s->ctx, &d, 1) < 0) return -1;
        want -= n;
    }
    return 0;
}

/* The agent's STATUS_LINK_OUT reply (spec.REDIRECT: u32 which, str path): keep the path
 * to go on with in fy_redirect for the hook that asked (FY_PATH_HOOK), and say
 * -FY_EREDIRECT.  -1: the stream failed.  The path must be what the agent sends (an
 * absolute client path, no NUL inside, filling the payload exactly, which 0 or 1):
 * anything else is -EIO, and fy_redirect then means nothing. */
int fy_reply_redirect(const struct fy_src *s, uint32_t len)
{
    struct { uint32_t which, n; } __attribute__((packed)) h;
    if (len < sizeof h || fy_reply_payload(s, sizeof h, &h, sizeof h, NULL, 0, NULL) < 0) return -1;
    len -= sizeof h;
    if (h.n > len || h.n >= sizeof fy_redirect.path) {
        if (fy_reply_payload(s, len, NULL, 0, NULL, 0, NULL) < 0) return -1;
        return h.n > len ? -EIO : -ENAMETOOLONG;  /* past the payload's end: no path at all */
    }
    if (fy_reply_payload(s, len, fy_redirect.path, h.n, NULL, 0, NULL) < 0) return -1;
    fy_redirect.path[h.n] = 0;
    if (h.n != len || h.which > 1 || h.n == 0 || fy_redirect.path[0] != '/' || strlen(fy_redirect.path) != h.n)
        return -EIO;
    fy_redirect.which = (int)h.which;
    return -FY_EREDIRECT;
}

/* A payload larger than a frame may be (spec.MAX_FRAME) is no reply of the protocol's:
 * the stream is not read any further (and no buffer of that size is allocated). */
static int too_long(const struct fy_rep_header *r, int *lost)
{
    if (r->length <= FY_MAX_FRAME) return 0;
    *lost = 1;
    return 1;
}

int fy_reply_body(const struct fy_src *s, const struct fy_rep_header *r, void *rep, size_t rep_len, void *tail,
                  size_t tail_cap, size_t *tail_got, int *lost)
{
    *lost = 0;
    if (tail_got) *tail_got = 0;
    if (too_long(r, lost)) return -EIO;
    if (r->status == FY_STATUS_LINK_OUT) {
        int rc = fy_reply_redirect(s, r->length);
        if (rc == -1) { *lost = 1; return -EIO; }
        return rc;
    }
    if (fy_reply_payload(s, r->length, rep, rep_len, tail, tail_cap, tail_got) < 0) { *lost = 1; return -EIO; }
    return fy_reply_status(r, rep_len);
}

int fy_reply_body_alloc(const struct fy_src *s, const struct fy_rep_header *r, void *rep, size_t rep_len,
                        char **tail, size_t *tail_len, int *lost)
{
    *lost = 0;
    *tail = NULL;
    *tail_len = 0;
    if (too_long(r, lost)) return -EIO;
    if (r->status == FY_STATUS_LINK_OUT) {
        int rc = fy_reply_redirect(s, r->length);
        if (rc == -1) { *lost = 1; return -EIO; }
        return rc;
    }
    size_t n = r->length > rep_len ? r->length - rep_len : 0;
    char *buf = malloc(n ? n : 1);
    if (!buf) {
        if (fy_reply_payload(s, r->length, NULL, 0, NULL, 0, NULL) < 0) *lost = 1;
        return -ENOMEM;
    }
    if (fy_reply_payload(s, r->length, rep, rep_len, buf, n, NULL) < 0) { free(buf); *lost = 1; return -EIO; }
    *tail = buf;
    *tail_len = n;
    return fy_reply_status(r, rep_len);
}

/* A name a directory can hold: 1 to NAME_MAX bytes, no '/' or NUL, not "." or "..". */
static int good_name(const char *s, uint32_t n)
{
    if (n == 0 || n > NAME_MAX || memchr(s, '/', n) || memchr(s, 0, n)) return 0;
    return !(s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.')));
}

int fy_dec_listdir(const char *data, size_t len, uint32_t count, struct fy_entry *ent)
{
    if (count > len / FY_ENTRY_MIN) return -EIO;  /* before anything is allocated for them */
    const char *p = data, *end = data + len;
    for (uint32_t i = 0; i < count; i++) {
        struct fy_entry e;
        p = fy_dec_entry(p, end, &e);
        if (!p || !good_name(e.name, e.name_len) || e.target_len >= PATH_MAX || memchr(e.target, 0, e.target_len))
            return -EIO;
        if (ent) ent[i] = e;
    }
    return p == end ? 0 : -EIO;  /* bytes after the last entry: a count that says too few */
}

ssize_t fy_dec_xattr(const char *val, size_t len, uint32_t n, int names)
{
    if (n != len || n > FY_XATTR_MAX) return -EIO;
    if (!names || n == 0) return (ssize_t)n;
    /* "name\0name\0...": every name 1..255 bytes, the last one terminated too */
    for (size_t at = 0; at < n;) {
        const char *z = memchr(val + at, 0, n - at);
        if (!z || z == val + at || (size_t)(z - (val + at)) > 255) return -EIO;
        at = (size_t)(z - val) + 1;
    }
    return (ssize_t)n;
}

int fy_check_rep(uint16_t op, const void *rep, uint64_t asked)
{
    switch (op) {
    case FY_OP_READ: {  /* data_len says what the tail holds, at most what was asked */
        const struct fy_rep_read *r = rep;
        return r->data_len == asked ? 0 : -EIO;
    }
    case FY_OP_WRITE: {  /* never more written than sent */
        const struct fy_rep_write *r = rep;
        return r->count <= asked ? 0 : -EIO;
    }
    case FY_OP_LSEEK: {
        const struct fy_rep_lseek *r = rep;
        return r->offset >= 0 ? 0 : -EIO;
    }
    case FY_OP_GETLK: {
        const struct fy_rep_getlk *r = rep;
        if (r->type == FY_LOCK_UNLOCK) return 0;
        return (r->type == FY_LOCK_READ || r->type == FY_LOCK_WRITE) && r->start >= 0 && r->len >= 0 ? 0 : -EIO;
    }
    default:
        return 0;
    }
}
