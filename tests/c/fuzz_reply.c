/* libFuzzer target: the agent's replies as the shim parses them.
 *
 * It lives in tests/c, not shim/: every .c file in shim/ is linked into libferry.so (shimlib.py),
 * which must not carry a fuzzer entry point.  It compiles shim/reply.c itself, the file
 * wire.c hands every reply to (header checks, statuses, lengths, redirects) and that
 * dir.c, link.c, xattr.c, direct.c and lock.c check their tails, counts and offsets with,
 * so what runs here is the shim's own parser over a fy_src reading the fuzzer's bytes
 * instead of the agent's socket.  Built by scripts/fuzz-shim.sh:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Ishim tests/c/fuzz_reply.c shim/reply.c
 *
 * and, with -DFUZZ_STANDALONE, as a plain program (gcc works) that replays inputs given
 * as files: `fuzz_reply_replay crash-1234 ...` (tests/test_fuzz_shim.py's hostile set).
 *
 * Input: a stream of replies, each one selector byte (which call is waiting for it: its
 * low 4 bits mod 12; for READ/WRITE the high 4 bits say how much was asked), then the reply as the agent sends it: the 16-byte
 * header and its payload.  Replies are taken one after another from the same stream, as
 * on the one connection, until the bytes run out or the stream is lost; so a reply that
 * was drained wrongly shows up as garbage in the next one.  Besides the sanitizers, the
 * driver aborts when a call's result breaks what the shim's callers rely on (a status
 * that is no errno, a tail larger than asked, a listing name they could not hold...).
 */
#include "fy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mem { const uint8_t *p; size_t left; };

/* As io_full on a socket: every iov filled whole, or -1 (the peer closed mid-reply). */
static int mem_read(void *ctx, struct iovec *iov, int cnt)
{
    struct mem *m = ctx;
    for (int i = 0; i < cnt; i++) {
        if (iov[i].iov_len > m->left) { m->p += m->left; m->left = 0; return -1; }
        if (iov[i].iov_len) memcpy(iov[i].iov_base, m->p, iov[i].iov_len);
        m->p += iov[i].iov_len;
        m->left -= iov[i].iov_len;
    }
    return 0;
}

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "fuzz_reply: %s:%d: broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                \
        }                                                                           \
    } while (0)

/* What every call's result must be: 0, -errno, or -FY_EREDIRECT for a LINK_OUT reply
 * with a usable path in fy_redirect. */
static void check_rc(int rc, const struct fy_rep_header *h)
{
    CHECK(rc == 0 || (rc < 0 && rc >= -4095) || rc == -FY_EREDIRECT);
    if (rc == 0) CHECK(h->status == 0);
    if (rc == -FY_EREDIRECT) {
        CHECK(h->status == FY_STATUS_LINK_OUT);
        size_t n = strnlen(fy_redirect.path, sizeof fy_redirect.path);
        CHECK(n > 0 && n < sizeof fy_redirect.path && fy_redirect.path[0] == '/');
        CHECK(fy_redirect.which == 0 || fy_redirect.which == 1);
        /* what link.c and stat.c do with it next: the rest of the path after the lookup */
        int r2 = fy_redirect_extend(rc, "/rest/of/it");
        CHECK(r2 == rc || r2 == -ENAMETOOLONG);
        CHECK(strnlen(fy_redirect.path, sizeof fy_redirect.path) < sizeof fy_redirect.path);
    }
}

/* The fixed-size replies, as their fy_call callers take them. */
struct fixed { uint16_t op; size_t len; };
static const struct fixed fixed_ops[] = {
    {FY_OP_STAT, sizeof(struct fy_rep_stat)},       {FY_OP_OPEN, sizeof(struct fy_rep_open)},
    {FY_OP_WRITE, sizeof(struct fy_rep_write)},     {FY_OP_LSEEK, sizeof(struct fy_rep_lseek)},
    {FY_OP_GETLK, sizeof(struct fy_rep_getlk)},     {FY_OP_STATFS, sizeof(struct fy_rep_statfs)},
    {FY_OP_CACHE_OPEN, 0},                          /* fy_ask: cache_open, cache_lookup, lock... */
};
#define NFIXED (sizeof fixed_ops / sizeof fixed_ops[0])

/* One reply; 0 to go on with the next, -1 when the stream is gone. */
static int one_reply(uint8_t sel, const struct fy_src *s)
{
    struct fy_rep_header h;
    struct iovec hv = {&h, sizeof h};
    if (s->read(s->ctx, &hv, 1) < 0) return -1;  /* call_locked: -EIO, connection dropped */
    int lost = 0, rc;
    unsigned kind = (sel & 15) % 12;
    int eff;  /* what the shim's caller makes of it: rc, or its own check's verdict */
    if (kind < NFIXED) {
        /* fy_call with no tail (stat.c, io.c, direct.c, lock.c, statfs.c, fy_ask) */
        union { char b[128]; struct fy_rep_write w; } rep;
        const struct fixed *f = &fixed_ops[kind];
        uint64_t asked = 1 + (uint64_t)(sel >> 4) * 65536;  /* a WRITE chunk */
        rc = fy_reply_body(s, &h, &rep, f->len, NULL, 0, NULL, &lost);
        eff = rc;
        if (rc == 0) {
            int c = eff = fy_check_rep(f->op, &rep, asked);
            CHECK(c == 0 || c == -EIO);
            if (c == 0 && f->op == FY_OP_WRITE) CHECK(rep.w.count <= asked);
        }
        CHECK(rc == 0 || h.status != 0 || h.length < f->len || lost);
    } else if (kind == 7) {
        /* READ: the data straight into the program's buffer, at most `want` bytes */
        size_t want = (size_t)(sel >> 4) * 300;
        char *buf = malloc(want ? want : 1);  /* exactly as large as asked: ASan sees any overrun */
        struct fy_rep_read rep;
        size_t got = 12345;
        rc = fy_reply_body(s, &h, &rep, sizeof rep, buf, want, &got, &lost);
        CHECK(got <= want);
        eff = rc;
        if (rc == 0) {
            int c = eff = fy_check_rep(FY_OP_READ, &rep, got);
            if (c == 0) CHECK(rep.data_len == got && got <= want);
        }
        free(buf);
    } else if (kind == 8 || kind == 9) {
        /* LISTDIR (dir.c's listing, link.c's readlink) */
        struct fy_rep_listdir rep;
        char *tail;
        size_t len;
        rc = fy_reply_body_alloc(s, &h, &rep, sizeof rep, &tail, &len, &lost);
        eff = rc;
        if (rc == 0) {
            CHECK(tail != NULL);
            eff = -EIO;
            /* dir.c: the count is checked before the entry array is allocated */
            if (rep.entries_count <= len / FY_ENTRY_MIN) {
                struct fy_entry *ent = malloc(((size_t)rep.entries_count + 1) * sizeof *ent);
                CHECK(ent != NULL);
                if ((eff = fy_dec_listdir(tail, len, rep.entries_count, kind == 8 ? ent : NULL)) == 0 && kind == 8) {
                    for (uint32_t i = 0; i < rep.entries_count; i++) {
                        /* what getdents64 and readdir build from each entry */
                        CHECK(ent[i].name_len >= 1 && ent[i].name_len <= NAME_MAX);
                        CHECK(ent[i].name >= tail && ent[i].name + ent[i].name_len <= tail + len);
                        CHECK(!memchr(ent[i].name, '/', ent[i].name_len));
                        CHECK(ent[i].target >= tail && ent[i].target + ent[i].target_len <= tail + len);
                        char d_name[256];
                        memcpy(d_name, ent[i].name, ent[i].name_len);
                        d_name[ent[i].name_len] = 0;
                        CHECK(strlen(d_name) == ent[i].name_len);
                        size_t reclen = (19 + ent[i].name_len + 1 + 7) & ~(size_t)7;
                        CHECK(reclen == (unsigned short)reclen);
                    }
                }
                free(ent);
            } else {
                CHECK(fy_dec_listdir(tail, len, rep.entries_count, NULL) == -EIO);
            }
        }
        free(tail);
    } else {
        /* GETXATTR value (10) or LISTXATTR names (11), as xattr.c's remote_get */
        union { struct fy_rep_getxattr get; struct fy_rep_listxattr list; } rep;
        char *tail;
        size_t len;
        rc = fy_reply_body_alloc(s, &h, &rep, sizeof rep, &tail, &len, &lost);
        eff = rc;
        if (rc == 0) {
            int names = kind == 11;
            ssize_t n = fy_dec_xattr(tail, len, names ? rep.list.names_len : rep.get.value_len, names);
            eff = n < 0 ? (int)n : 0;
            CHECK(n == -EIO || (n >= 0 && (size_t)n == len && n <= FY_XATTR_MAX));
            if (n > 0 && names) CHECK(tail[n - 1] == 0);
            if (n > 0) {
                char *out = malloc((size_t)n);  /* the program's buffer of `size` >= n */
                memcpy(out, tail, (size_t)n);
                free(out);
            }
        }
        free(tail);
    }
    check_rc(rc, &h);
    CHECK(eff == rc || (rc == 0 && eff == -EIO));
    CHECK(!lost || rc == -EIO);
#ifdef FUZZ_STANDALONE
    printf("reply kind %u: %d%s\n", kind, eff, lost ? " (stream lost)" : "");
#endif
    return lost ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mem m = {data, size};
    struct fy_src s = {mem_read, &m};
    while (m.left) {
        uint8_t sel = *m.p++;
        m.left--;
        if (one_reply(sel, &s) < 0) break;
    }
    return 0;
}

#ifdef FUZZ_STANDALONE
/* Replay: each argument is one input file; each reply's result is printed ("reply kind
 * K: R", R what the shim's caller returns: 0 or -errno); exit 0 when all ran (a sanitizer
 * report or a broken CHECK aborts first). */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); return 2; }
        size_t cap = 1 << 16, n = 0;
        uint8_t *buf = malloc(cap);
        for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
            n += r;
            if (n == cap) buf = realloc(buf, cap *= 2);
        }
        fclose(f);
        if (!buf) { fprintf(stderr, "out of memory\n"); return 2; }
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
        printf("replayed %s (%zu bytes)\n", argv[i], n);
    }
    return 0;
}
#endif
