/* The table a cache-mode agent shares with its shims: the file `table` beside the replica
 * tree (FERRY_CACHE), mapped once per process on first use.  Layout and rules are in
 * src/ferry/protocol/spec.py (TABLE_*); the agent's side is agent/table.py.
 *
 * Two questions are answered here without a round trip to the agent:
 *   - is a replica directory listed, or a replica file's content the node's, under a
 *     lease this shim may trust?  (a mark the agent wrote, whose lane's epoch is unchanged
 *     and whose trust has not run out: stat.c and io.c then skip CACHE_LOOKUP and
 *     CACHE_OPEN for it, or for a name missing in it);
 *   - what is a replica entry's node identity?  (what its `user.ferry.node` xattr held at
 *     the entry's present ctime: stat.c skips the lgetxattr, ~2 µs, on every stat).
 * Identities are written by the shims themselves (fy_table_note_ident).
 *
 * Every record is a seqlock: a reader takes it only when the word is even and the same
 * before and after; a writer of identities takes the word with a compare-and-swap (the
 * shims of many processes write them), the agent alone writes marks and adds a check word.
 * No table (an older agent, direct mode, a file system refusing the map): every answer is
 * "don't know", and the callers ask as before.
 */
#include "fy.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TABLE_SIZE (sizeof(struct fy_table_header) + FY_TABLE_LANES * sizeof(struct fy_table_lane) + \
                    FY_TABLE_MARKS * sizeof(struct fy_table_mark) + FY_TABLE_IDENTS * sizeof(struct fy_table_ident))

static char *base;  /* NULL: no table */
static pthread_once_t mapped = PTHREAD_ONCE_INIT;
static int64_t settle_ns = FY_TABLE_SETTLE_NS;  /* from the header: see spec.py */

static void map_table(void)
{
    if (fy_cfg.mode != FY_MODE_CACHE || !fy_cfg.cache_len) return;
    char path[PATH_MAX + 16];
    memcpy(path, fy_cfg.cache, fy_cfg.cache_len + 1);
    char *slash = strrchr(path, '/');
    if (!slash) return;
    strcpy(slash + 1, "table");
    int fd = LIBC(open)(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    void *p = MAP_FAILED;
    if (LIBC(fstat)(fd, &st) == 0 && (size_t)st.st_size == TABLE_SIZE)
        p = mmap(NULL, TABLE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    LIBC(close)(fd);
    if (p == MAP_FAILED) return;
    const struct fy_table_header *h = p;
    if (h->magic != FY_TABLE_MAGIC || h->version != FY_TABLE_VERSION || h->lanes != FY_TABLE_LANES ||
        h->marks != FY_TABLE_MARKS || h->idents != FY_TABLE_IDENTS) {
        munmap(p, TABLE_SIZE);
        return;
    }
    settle_ns = h->settle_ns;
    base = p;
}

static char *table(void)
{
    pthread_once(&mapped, map_table);
    return base;
}

/* Records by address (char *: their words are aligned, the packed structs say nothing of it). */
#define LANES_AT sizeof(struct fy_table_header)
#define MARKS_AT (LANES_AT + FY_TABLE_LANES * sizeof(struct fy_table_lane))
#define IDENTS_AT (MARKS_AT + FY_TABLE_MARKS * sizeof(struct fy_table_mark))
static char *lane_at(uint32_t i) { return base + LANES_AT + i * sizeof(struct fy_table_lane); }
static char *mark_at(uint32_t i) { return base + MARKS_AT + (i & (FY_TABLE_MARKS - 1)) * sizeof(struct fy_table_mark); }
static char *ident_at(uint32_t i) { return base + IDENTS_AT + (i & (FY_TABLE_IDENTS - 1)) * sizeof(struct fy_table_ident); }
static uint32_t *word32(char *p) { return (uint32_t *)(void *)p; }
static uint64_t *word64(char *p) { return (uint64_t *)(void *)p; }

/* As spec.table_slot: the first of a record's TABLE_WAYS slots among `count`. */
static uint32_t slot_of(uint64_t dev, uint64_t ino, uint32_t count)
{
    return (uint32_t)((ino + dev * 0x9E3779B97F4A7C15ULL) & (count - 1));
}

/* As spec.table_check. */
static uint32_t check_of(uint32_t lane, uint64_t ino, int64_t ctime_ns, uint32_t epoch)
{
    uint64_t c = (uint64_t)ctime_ns;
    return (uint32_t)(ino ^ (ino >> 32) ^ c ^ (c >> 32) ^ ((uint64_t)lane << 16) ^ epoch ^ 0x5EED);
}

static int64_t ns_of(const struct timespec *t) { return t->tv_sec * 1000000000LL + t->tv_nsec; }

static int64_t now_ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return ns_of(&t);
}

/* Copy record `rec` (seqlock word first) into `out` if it is stable; 0 if being written. */
static int read_stable(char *rec, void *out, size_t len)
{
    const uint32_t *seq = word32(rec);
    uint32_t before = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
    if (before & 1) return 0;
    memcpy(out, rec, len);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(seq, __ATOMIC_RELAXED) == before;
}

int fy_table_trusted(const struct stat *st)
{
    if (!(S_ISDIR(st->st_mode) || S_ISREG(st->st_mode)) || !table()) return 0;
    int64_t ctime = ns_of(&st->st_ctim);
    uint32_t first = slot_of(st->st_dev, st->st_ino, FY_TABLE_MARKS);
    for (uint32_t k = 0; k < FY_TABLE_WAYS; k++) {
        struct fy_table_mark d;
        if (!read_stable(mark_at(first + k), &d, sizeof d)) continue;
        if (d.dev != st->st_dev || d.ino != st->st_ino) continue;
        if (d.ctime_ns != ctime || d.lane == 0 || d.lane >= FY_TABLE_LANES ||
            d.check != check_of(d.lane, d.ino, d.ctime_ns, d.epoch)) return 0;
        /* The lane after the mark: the agent bumps its epoch before it lets a change through. */
        char *l = lane_at(d.lane);
        if (__atomic_load_n(word32(l), __ATOMIC_ACQUIRE) != d.epoch) return 0;
        return now_ns(CLOCK_MONOTONIC) < (int64_t)__atomic_load_n(word64(l + 8), __ATOMIC_RELAXED);
    }
    return 0;
}

int fy_table_ident(const struct stat *st, struct fy_table_ident *out)
{
    if (!table()) return 0;
    int64_t ctime = ns_of(&st->st_ctim);
    uint32_t first = slot_of(st->st_dev, st->st_ino, FY_TABLE_IDENTS);
    for (uint32_t k = 0; k < FY_TABLE_WAYS; k++) {
        if (!read_stable(ident_at(first + k), out, sizeof *out)) continue;
        if (out->dev == st->st_dev && out->ino == st->st_ino && out->ctime_ns == ctime) return 1;
    }
    return 0;
}

void fy_table_note_ident(const struct stat *st, const struct fy_table_ident *id)
{
    int64_t ctime = ns_of(&st->st_ctim);
    if (!table() || (settle_ns && ctime > now_ns(CLOCK_REALTIME) - settle_ns)) return;  /* not settled: see spec.py */
    uint32_t first = slot_of(st->st_dev, st->st_ino, FY_TABLE_IDENTS);
    char *slot = NULL;
    for (uint32_t k = 0; k < FY_TABLE_WAYS && !slot; k++) {  /* this entry's, else a free one, else the first */
        char *r = ident_at(first + k);
        uint64_t dev = __atomic_load_n(word64(r + 8), __ATOMIC_RELAXED);
        uint64_t ino = __atomic_load_n(word64(r + 16), __ATOMIC_RELAXED);
        if ((dev == st->st_dev && ino == st->st_ino) || (dev == 0 && ino == 0)) slot = r;
    }
    if (!slot) slot = ident_at(first);
    uint32_t *seq = word32(slot);
    uint32_t even = __atomic_load_n(seq, __ATOMIC_RELAXED);
    if ((even & 1) || !__atomic_compare_exchange_n(seq, &even, even + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return;  /* another writer has it: its record will do */
    struct fy_table_ident rec = *id;
    rec.seq = even + 1;
    rec.dev = st->st_dev;
    rec.ino = st->st_ino;
    rec.ctime_ns = ctime;
    memcpy(slot + sizeof rec.seq, (char *)&rec + sizeof rec.seq, sizeof rec - sizeof rec.seq);
    __atomic_store_n(seq, even + 2, __ATOMIC_RELEASE);
}
