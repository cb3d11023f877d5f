/* tcpclient connect HOST PORT N  : N × (connect, send 1 byte, read the echo, close);
 *                                  prints one latency in ns per connection.
 * tcpclient send HOST PORT BYTES : connect, send BYTES, shut down writing, read the
 *                                  server's 8-byte count; prints "ns bytes_counted". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int dial(const char *host, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); exit(2); }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); exit(1); }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return s;
}

static void full_read(int s, char *buf, size_t n) {
    while (n) {
        ssize_t r = read(s, buf, n);
        if (r <= 0) { perror("read"); exit(1); }
        buf += r; n -= (size_t)r;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: tcpclient connect|send HOST PORT N|BYTES\n"); return 2; }
    const char *host = argv[2];
    int port = atoi(argv[3]);
    long long n = atoll(argv[4]);
    if (strcmp(argv[1], "connect") == 0) {
        for (long long i = 0; i < n; i++) {
            long long t0 = now();
            int s = dial(host, port);
            char c = 'E', e;
            if (write(s, &c, 1) != 1) { perror("write"); return 1; }
            full_read(s, &e, 1);
            close(s);
            if (e != 'E') { fprintf(stderr, "bad echo\n"); return 1; }
            printf("%lld\n", now() - t0);
        }
        return 0;
    }
    static char buf[1 << 18];
    memset(buf, 'x', sizeof buf);
    buf[0] = 'S';
    long long t0 = now(), left = n;
    int s = dial(host, port);
    while (left > 0) {
        ssize_t w = write(s, buf, left < (long long)sizeof buf ? (size_t)left : sizeof buf);
        if (w <= 0) { perror("write"); return 1; }
        left -= w;
    }
    shutdown(s, SHUT_WR);
    unsigned char cnt[8];
    full_read(s, (char *)cnt, 8);
    long long got = 0;
    for (int i = 0; i < 8; i++) got = (got << 8) | cnt[i];
    printf("%lld %lld\n", now() - t0, got);
    close(s);
    return 0;
}
