/* mmap of direct-mode fds.  The placeholder is a socket the kernel cannot map, so a
 * mapping is anonymous memory filled by READ; a shared writable one is written back with
 * WRITE on msync and munmap (cache-mode fds are real files and never come here).
 */
#include "fy.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

struct fy_map { void *addr; size_t len; size_t valid; off_t off; int fd; };
static struct fy_map maps[64];
static int nmaps;  /* zero in every program that never maps a direct-mode fd */
static pthread_mutex_t map_lock = PTHREAD_MUTEX_INITIALIZER;

/* Write a shared mapping's bytes that lay inside the file back to the node. */
static int write_back(const struct fy_map *m)
{
    struct fy_fd *f = fy_fd_get(m->fd);
    if (!f || !m->valid) return 0;
    return fy_direct_write(f, m->addr, m->valid, m->off) < 0 ? -1 : 0;
}

static void *map_direct(struct fy_fd *f, int fd, void *addr, size_t len, int prot, int flags, off_t off)
{
    int anon = (flags & ~(MAP_SHARED | MAP_SHARED_VALIDATE)) | MAP_PRIVATE | MAP_ANONYMOUS;
    void *p = LIBC(mmap)(addr, len, PROT_READ | PROT_WRITE, anon, -1, 0);
    if (p == MAP_FAILED) return p;
    ssize_t n = fy_direct_read(f, p, len, off);
    if (n < 0 || mprotect(p, len, prot) < 0) {
        int e = errno;
        munmap(p, len);
        errno = e;
        return MAP_FAILED;
    }
    if ((flags & MAP_SHARED) && (prot & PROT_WRITE)) {
        pthread_mutex_lock(&map_lock);
        int slot = -1;
        for (int i = 0; i < 64 && slot < 0; i++)
            if (!maps[i].addr) slot = i;
        int keep = slot >= 0 ? dup(fd) : -1;  /* the node handle must outlive close(fd) */
        if (keep >= 0) {
            maps[slot] = (struct fy_map){p, len, (size_t)n, off, keep};
            nmaps++;
        }
        pthread_mutex_unlock(&map_lock);
        if (keep < 0) {
            munmap(p, len);
            errno = ENOMEM;
            return MAP_FAILED;
        }
    }
    return p;
}

FY_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    struct fy_fd *f = (flags & MAP_ANONYMOUS) ? NULL : fy_fd_get(fd);
    if (!f || f->kind != FY_FD_DIRECT) {
        return LIBC(mmap)(addr, len, prot, flags, fd, off);
    }
    return map_direct(f, fd, addr, len, prot, flags, off);
}

FY_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

/* The tracked mapping starting at addr, or NULL. */
static struct fy_map *tracked(void *addr)
{
    for (int i = 0; i < 64; i++)
        if (maps[i].addr == addr) return &maps[i];
    return NULL;
}

FY_EXPORT int msync(void *addr, size_t len, int flags)
{
    if (!nmaps) return LIBC(msync)(addr, len, flags);
    pthread_mutex_lock(&map_lock);
    struct fy_map *m = tracked(addr);
    int rc = m ? write_back(m) : LIBC(msync)(addr, len, flags);
    pthread_mutex_unlock(&map_lock);
    return rc;
}

FY_EXPORT int munmap(void *addr, size_t len)
{
    if (nmaps) {
        pthread_mutex_lock(&map_lock);
        struct fy_map *m = tracked(addr);
        if (m) {
            int rc = write_back(m);
            fy_close_fd(m->fd);
            *m = (struct fy_map){0};
            nmaps--;
            pthread_mutex_unlock(&map_lock);
            int un = LIBC(munmap)(addr, len);
            return rc < 0 ? -1 : un;
        }
        pthread_mutex_unlock(&map_lock);
    }
    return LIBC(munmap)(addr, len);
}
