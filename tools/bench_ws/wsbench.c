/* wsbench: rr's WebSocket load client for tools/bench.py's websocket_msg_throughput row.
 *
 *   cc -O2 -o wsbench tools/bench_ws/wsbench.c
 *   wsbench --url ws://127.0.0.1:8000/ws --connections 50 --duration 10 [--size 1024]
 *
 * The same load and the same output as tools/bench_ws/client.js (node's `ws`),
 * at a fraction of its CPU per message, so that the client is not what limits
 * the row. One thread, one epoll set, plain libc:
 *
 * - every connection: a non-blocking TCP connect with TCP_NODELAY, the HTTP/1.1
 *   Upgrade handshake (random Sec-WebSocket-Key from getrandom, no extension
 *   or subprotocol offered, the 101's Sec-WebSocket-Accept checked with the
 *   SHA-1 and base64 below), then a closed loop: one masked text frame of
 *   --size 'x' bytes (a fresh mask per frame from a xorshift PRNG), wait for
 *   the whole echo, compare it byte by byte, record the round trip, send the
 *   next; at the deadline a close frame (1000) and a bounded wait for the
 *   server's close or EOF.
 * - the reader is a streaming frame parser: a frame may be split over any
 *   number of reads and a read may hold several frames; 7/16/64-bit lengths;
 *   a message may come fragmented (continuation frames); a ping is answered
 *   with a pong carrying its payload; pongs are ignored.
 *
 * Errors, as client.js counts them: `connect` (connect refused, handshake
 * timeout of 5 s, a 101 whose Accept, Upgrade or Connection is wrong, or that
 * names an extension or subprotocol), `status` (an answer other than 101; an
 * echo that is binary, of another length or other bytes; a frame breaking
 * RFC 6455 5.2, e.g. RSV bits, a masked server frame, a bad control frame),
 * `read` (recv failed, EOF or a server close frame before the deadline),
 * `write` (send failed), `timeout` (connections still open 5 s after the
 * deadline). A connection that errs is closed and stays closed.
 *
 * Output, two lines: `BENCH_JSON {...}` (requests = echoed messages,
 * duration_us from the first completed handshake to min(now, deadline),
 * bytes, errors, latency_us min/mean/p50/p90/p99/max of the round trips)
 * and `msg/s N`. Exit 0 when at least one message was echoed, 1 otherwise,
 * 2 on bad arguments.
 *
 * Must never: talk to anything but a loopback address, wait without a bound,
 * or run past deadline + 5 s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GRACE_NS 5000000000LL          /* after the deadline, and for each handshake */
#define HANDSHAKE_MAX 8192             /* the 101 response head */
#define OUT_SLACK (64 * 1024)          /* room for pongs queued behind a frame */
#define RECV_BUF (256 * 1024)

/* ------------------------------------------------------------------ SHA-1 (FIPS 180-4) */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6; }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol32(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t whole = len - len % 64;
    for (size_t i = 0; i < whole; i += 64) sha1_block(h, msg + i);
    unsigned char tail[128] = {0};
    size_t rest = len - whole;
    memcpy(tail, msg + whole, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t i = 0; i < tail_len; i += 64) sha1_block(h, tail + i);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24); out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8); out[4 * i + 3] = (unsigned char)h[i];
    }
}

static void base64(const unsigned char *in, size_t len, char *out) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < len ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? abc[v & 63] : '=';
    }
    out[o] = 0;
}

/* ------------------------------------------------------------------ state */

enum phase { CONNECTING, HANDSHAKE, OPEN, CLOSING, DONE };
enum err { E_CONNECT, E_READ, E_WRITE, E_STATUS, E_TIMEOUT, E_COUNT };
static const char *err_names[E_COUNT] = {"connect", "read", "write", "status", "timeout"};

struct conn {
    int fd;
    enum phase phase;
    /* output: whole frames appended, sent from out_off */
    unsigned char *out;
    size_t out_len, out_off, out_cap;
    int want_write;              /* EPOLLOUT registered */
    /* handshake */
    char *head;                  /* the request, then the response head */
    size_t head_len;
    char accept[32];
    /* frame parser */
    unsigned char hdr[14];
    int hdr_len;
    int opcode, fin;
    uint64_t remaining;          /* payload bytes of the current frame still to come */
    int in_payload;
    int in_message;              /* a text message is under way (continuations allowed) */
    size_t msg_off;              /* bytes of the echo compared so far */
    unsigned char ctl[125];
    size_t ctl_len;
    int awaiting;                /* a message is in flight */
    int64_t sent_at;
};

static struct {
    char host[64], path[1024];
    int port;
    int connections;
    double duration;
    size_t size;
    unsigned char *payload;      /* --size bytes of 'x' */
    struct conn *conns;
    int epfd;
    int open;                    /* connections not DONE */
    int pending_handshakes;
    int64_t t0, started, deadline;
    uint64_t count;
    uint64_t errors[E_COUNT];
    uint32_t *lat;               /* round trips in ns (saturating) */
    size_t lat_len, lat_cap;
    uint64_t rng;
} g;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t next_random(void) { /* xorshift64* */
    g.rng ^= g.rng >> 12; g.rng ^= g.rng << 25; g.rng ^= g.rng >> 27;
    return g.rng * 0x2545F4914F6CDD1DULL;
}

static void fill_random(void *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom((char *)buf + got, len - got, 0);
        if (n <= 0) { /* getrandom cannot really fail for small sizes; fall back to the PRNG */
            for (; got < len; got++) ((unsigned char *)buf)[got] = (unsigned char)next_random();
            return;
        }
        got += (size_t)n;
    }
}

/* ------------------------------------------------------------------ result */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct(double q) { /* client.js: sorted[min(n - 1, round(q * n))] */
    if (!g.lat_len) return 0;
    size_t i = (size_t)(q * (double)g.lat_len + 0.5);
    if (i > g.lat_len - 1) i = g.lat_len - 1;
    return g.lat[i] / 1000.0;
}

static void finish(void) {
    int64_t now = now_ns();
    int64_t end = g.started && g.deadline < now ? g.deadline : now;
    int64_t elapsed = g.started ? end - g.started : 0;
    qsort(g.lat, g.lat_len, sizeof *g.lat, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < g.lat_len; i++) sum += g.lat[i];
    double mean = g.lat_len ? sum / (double)g.lat_len / 1000.0 : 0;
    printf("BENCH_JSON {\"requests\":%llu,\"duration_us\":%lld,\"bytes\":%llu,\"errors\":{",
           (unsigned long long)g.count, (long long)((elapsed + 500) / 1000),
           (unsigned long long)(g.count * g.size));
    for (int e = 0; e < E_COUNT; e++)
        printf("%s\"%s\":%llu", e ? "," : "", err_names[e], (unsigned long long)g.errors[e]);
    printf("},\"latency_us\":{\"min\":%.3f,\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
           pct(0), mean, pct(0.5), pct(0.9), pct(0.99), pct(1));
    printf("msg/s %lld\n", elapsed > 0 ? (long long)((double)g.count / ((double)elapsed / 1e9) + 0.5) : 0LL);
    fflush(stdout);
    exit(g.count > 0 ? 0 : 1);
}

/* ------------------------------------------------------------------ connections */

static void end_conn(struct conn *c, int err) {
    if (c->phase == DONE) return;
    if (err >= 0) g.errors[err]++;
    if (c->phase == CONNECTING || c->phase == HANDSHAKE) g.pending_handshakes--;
    close(c->fd); /* also drops it from the epoll set */
    c->fd = -1;
    c->phase = DONE;
    free(c->head); c->head = NULL;
    free(c->out); c->out = NULL;
    if (--g.open == 0) finish();
}

static void set_events(struct conn *c, int want_write) {
    if (c->want_write == want_write) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_write ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_write = want_write;
}

/* Send what is queued; 0 when all went or the rest waits for EPOLLOUT, -1 when the connection ended. */
static int flush_out(struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) { set_events(c, 1); return 0; }
            end_conn(c, E_WRITE);
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    set_events(c, 0);
    return 0;
}

/* Append one masked client frame (RFC 6455 5.2/5.3) of opcode with payload data[len] to the output. */
static int queue_frame(struct conn *c, int opcode, const unsigned char *data, size_t len) {
    size_t need = 14 + len;
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + need > c->out_cap) { end_conn(c, E_WRITE); return -1; } /* a peer that never reads */
    unsigned char *p = c->out + c->out_len;
    size_t h = 0;
    p[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) p[h++] = (unsigned char)(0x80 | len);
    else if (len < 65536) { p[h++] = 0x80 | 126; p[h++] = (unsigned char)(len >> 8); p[h++] = (unsigned char)len; }
    else { p[h++] = 0x80 | 127; for (int i = 7; i >= 0; i--) p[h++] = (unsigned char)((uint64_t)len >> (8 * i)); }
    uint32_t mask32 = (uint32_t)next_random();
    unsigned char mask[4];
    memcpy(mask, &mask32, 4);
    memcpy(p + h, mask, 4);
    h += 4;
    unsigned char *dst = p + h;
    uint64_t mask64 = (uint64_t)mask32 << 32 | mask32; /* the same 4 bytes twice, in memory order */
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, data + i, 8);
        v ^= mask64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < len; i++) dst[i] = data[i] ^ mask[i & 3];
    c->out_len += h + len;
    return 0;
}

static void send_message(struct conn *c) {
    c->awaiting = 1;
    c->msg_off = 0;
    c->sent_at = now_ns();
    if (queue_frame(c, 0x1, g.payload, g.size) == 0) flush_out(c);
}

static void start_closing(struct conn *c) {
    static const unsigned char normal[2] = {0x03, 0xE8}; /* 1000 */
    c->phase = CLOSING;
    if (queue_frame(c, 0x8, normal, 2) == 0) flush_out(c);
}

static void message_done(struct conn *c) {
    int64_t now = now_ns();
    int64_t rtt = now - c->sent_at;
    if (g.lat_len == g.lat_cap) {
        g.lat_cap = g.lat_cap ? g.lat_cap * 2 : 1 << 16;
        uint32_t *grown = realloc(g.lat, g.lat_cap * sizeof *g.lat);
        if (!grown) { fprintf(stderr, "wsbench: out of memory\n"); finish(); }
        g.lat = grown;
    }
    g.lat[g.lat_len++] = rtt > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)rtt;
    g.count++;
    c->awaiting = 0;
    if (now < g.deadline) send_message(c);
    else start_closing(c);
}

static void opened(struct conn *c) {
    c->phase = OPEN;
    g.pending_handshakes--;
    free(c->head); c->head = NULL;
    if (!g.started) {
        g.started = now_ns();
        g.deadline = g.started + (int64_t)(g.duration * 1e9);
    }
    send_message(c);
}

/* One complete frame's end: 0 to go on, -1 when the connection ended. */
static int frame_done(struct conn *c) {
    switch (c->opcode) {
    case 0x0: case 0x1:
        if (!c->fin) return 0;
        c->in_message = 0;
        if (c->msg_off != g.size) { end_conn(c, E_STATUS); return -1; }
        message_done(c);
        return c->phase == DONE ? -1 : 0;
    case 0x9: /* ping: pong with the same payload */
        if (c->phase != OPEN) return 0;
        if (queue_frame(c, 0xA, c->ctl, c->ctl_len) || flush_out(c)) return -1;
        return 0;
    case 0xA:
        return 0;
    default: /* 0x8 close: the end when we asked for it, a lost connection before */
        end_conn(c, c->phase == CLOSING ? -1 : E_READ);
        return -1;
    }
}

/* A frame header is complete in c->hdr: check it (RFC 6455 5.2, 5.4, 5.5). */
static int frame_header(struct conn *c) {
    unsigned char b0 = c->hdr[0], b1 = c->hdr[1];
    c->fin = b0 >> 7;
    c->opcode = b0 & 0x0F;
    uint64_t len = b1 & 0x7F;
    if (len == 126) len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
    else if (len == 127) { len = 0; for (int i = 0; i < 8; i++) len = len << 8 | c->hdr[2 + i]; }
    if ((b0 & 0x70) || (b1 & 0x80) || (len >> 63)) { end_conn(c, E_STATUS); return -1; }
    c->remaining = len;
    c->ctl_len = 0;
    switch (c->opcode) {
    case 0x1: /* a text message's first frame: only as the echo of the message in flight */
        if (c->in_message || !c->awaiting) { end_conn(c, E_STATUS); return -1; }
        c->in_message = 1;
        c->msg_off = 0;
        break;
    case 0x0:
        if (!c->in_message) { end_conn(c, E_STATUS); return -1; }
        break;
    case 0x8: case 0x9: case 0xA:
        if (!c->fin || len > 125) { end_conn(c, E_STATUS); return -1; }
        break;
    default: /* binary (client.js counts it as a wrong echo) or a reserved opcode */
        end_conn(c, E_STATUS);
        return -1;
    }
    if ((c->opcode == 0x0 || c->opcode == 0x1) && len > g.size - c->msg_off) { end_conn(c, E_STATUS); return -1; }
    return 0;
}

/* Feed received bytes to the frame parser. */
static void feed(struct conn *c, const unsigned char *p, size_t n) {
    while (n > 0 && c->phase != DONE) {
        if (!c->in_payload) {
            /* the header: 2 bytes, then 2 or 8 more for the length (servers do not mask) */
            c->hdr[c->hdr_len++] = *p++;
            n--;
            if (c->hdr_len < 2) continue;
            int code = c->hdr[1] & 0x7F;
            int need = 2 + (code == 126 ? 2 : code == 127 ? 8 : 0);
            if (c->hdr_len < need) continue;
            c->hdr_len = 0;
            if (frame_header(c)) return;
            if (c->remaining == 0) {
                if (frame_done(c)) return;
                continue;
            }
            c->in_payload = 1;
        }
        size_t take = c->remaining < n ? (size_t)c->remaining : n;
        if (c->opcode <= 0x1) {
            if (memcmp(p, g.payload + c->msg_off, take)) { end_conn(c, E_STATUS); return; }
            c->msg_off += take;
        } else {
            memcpy(c->ctl + c->ctl_len, p, take);
            c->ctl_len += take;
        }
        p += take;
        n -= take;
        c->remaining -= take;
        if (c->remaining == 0) {
            c->in_payload = 0;
            if (frame_done(c)) return;
        }
    }
}

/* The response head is complete: 101 with the right Upgrade, Connection and Accept, nothing else offered. */
static int check_handshake(struct conn *c, char *head) {
    if (strncmp(head, "HTTP/1.1 101 ", 13) && strncmp(head, "HTTP/1.1 101\r", 13)) return E_STATUS;
    int upgrade = 0, connection = 0, accept = 0;
    char *line = strstr(head, "\r\n");
    while (line && line[2] != '\r') {
        line += 2;
        char *eol = strstr(line, "\r\n");
        if (!eol) break;
        *eol = 0;
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = 0;
            char *value = colon + 1;
            while (*value == ' ' || *value == '\t') value++;
            char *tail = value + strlen(value);
            while (tail > value && (tail[-1] == ' ' || tail[-1] == '\t')) *--tail = 0;
            if (!strcasecmp(line, "upgrade")) upgrade = !strcasecmp(value, "websocket");
            else if (!strcasecmp(line, "connection")) connection = strcasestr(value, "upgrade") != NULL;
            else if (!strcasecmp(line, "sec-websocket-accept")) accept = !strcmp(value, c->accept);
            else if (!strcasecmp(line, "sec-websocket-extensions") || !strcasecmp(line, "sec-websocket-protocol"))
                return E_CONNECT;
        }
        *eol = '\r';
        line = eol;
    }
    return upgrade && connection && accept ? -1 : E_CONNECT;
}

static void on_handshake_readable(struct conn *c) {
    ssize_t n = recv(c->fd, c->head + c->head_len, HANDSHAKE_MAX - 1 - c->head_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) { end_conn(c, E_CONNECT); return; }
    c->head_len += (size_t)n;
    c->head[c->head_len] = 0;
    char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->head_len >= HANDSHAKE_MAX - 1) end_conn(c, E_CONNECT);
        return;
    }
    size_t head_size = (size_t)(end - c->head) + 4;
    size_t extra = c->head_len - head_size;
    unsigned char early[HANDSHAKE_MAX];
    memcpy(early, c->head + head_size, extra);
    end[2] = 0;
    int err = check_handshake(c, c->head);
    if (err >= 0) { end_conn(c, err); return; }
    opened(c);
    if (extra && c->phase != DONE) feed(c, early, extra);
}

static void on_connected(struct conn *c) {
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) { end_conn(c, E_CONNECT); return; }
    unsigned char nonce[16], digest[20];
    char key[32], material[128];
    fill_random(nonce, sizeof nonce);
    base64(nonce, sizeof nonce, key);
    snprintf(material, sizeof material, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    sha1((unsigned char *)material, strlen(material), digest);
    base64(digest, sizeof digest, c->accept);
    int len = snprintf((char *)c->out, c->out_cap,
                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", g.path, g.host, g.port, key);
    c->out_off = 0;
    c->out_len = (size_t)len;
    c->phase = HANDSHAKE;
    c->want_write = 1;
    flush_out(c);
}

static unsigned char recv_buf[RECV_BUF];

static void on_event(struct conn *c, uint32_t events) {
    if (c->phase == CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        return;
    }
    if ((events & EPOLLOUT) && flush_out(c)) return;
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    if (c->phase == HANDSHAKE) { on_handshake_readable(c); return; }
    ssize_t n = recv(c->fd, recv_buf, sizeof recv_buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) { end_conn(c, c->phase == CLOSING ? -1 : E_READ); return; }
    feed(c, recv_buf, (size_t)n);
}

/* ------------------------------------------------------------------ set-up */

static void usage(const char *why) {
    if (why) fprintf(stderr, "wsbench: %s\n", why);
    fprintf(stderr, "usage: wsbench --url ws://127.0.0.1:PORT/PATH [--connections N] [--duration S] [--size B]\n");
    exit(2);
}

static void parse_args(int argc, char **argv) {
    const char *url = NULL;
    g.connections = 50; g.duration = 10; g.size = 1024;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) usage("every option takes a value");
        char *end;
        if (!strcmp(argv[i], "--url")) url = argv[i + 1];
        else if (!strcmp(argv[i], "--connections")) {
            long v = strtol(argv[i + 1], &end, 10);
            if (*end || v < 1 || v > 100000) usage("--connections must be 1..100000");
            g.connections = (int)v;
        } else if (!strcmp(argv[i], "--duration")) {
            g.duration = strtod(argv[i + 1], &end);
            if (*end || !(g.duration > 0) || g.duration > 86400) usage("--duration must be > 0 seconds");
        } else if (!strcmp(argv[i], "--size")) {
            long long v = strtoll(argv[i + 1], &end, 10);
            if (*end || v < 0 || v > (64LL << 20)) usage("--size must be 0..67108864 bytes");
            g.size = (size_t)v;
        } else usage("unknown option");
    }
    if (!url || strncmp(url, "ws://", 5)) usage("--url must be ws://HOST:PORT/PATH");
    const char *hp = url + 5, *slash = strchr(hp, '/'), *colon = strchr(hp, ':');
    if (!slash) slash = hp + strlen(hp);
    if (!colon || colon > slash || (size_t)(colon - hp) >= sizeof g.host) usage("--url must name a port");
    memcpy(g.host, hp, (size_t)(colon - hp));
    g.port = atoi(colon + 1);
    if (g.port < 1 || g.port > 65535) usage("bad port in --url");
    snprintf(g.path, sizeof g.path, "%s", *slash ? slash : "/");
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g.port)};
    const char *ip = strcmp(g.host, "localhost") ? g.host : "127.0.0.1";
    if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127)
        usage("--url must be a loopback IPv4 address (127.x.x.x or localhost)");
    fill_random(&g.rng, sizeof g.rng);
    g.rng |= 1;
    g.payload = malloc(g.size + 1);
    g.conns = calloc((size_t)g.connections, sizeof *g.conns);
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!g.payload || !g.conns || g.epfd < 0) { perror("wsbench"); return 1; }
    memset(g.payload, 'x', g.size);
    g.t0 = now_ns();
    g.open = g.pending_handshakes = g.connections;
    for (int i = 0; i < g.connections; i++) {
        struct conn *c = &g.conns[i];
        c->phase = CONNECTING;
        c->out_cap = 14 + g.size + OUT_SLACK;
        c->out = malloc(c->out_cap);
        c->head = malloc(HANDSHAKE_MAX);
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (!c->out || !c->head || c->fd < 0) { end_conn(c, E_CONNECT); continue; }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        c->want_write = 1;
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) && errno != EINPROGRESS) {
            end_conn(c, E_CONNECT);
            continue;
        }
        epoll_ctl(g.epfd, EPOLL_CTL_ADD, c->fd, &ev);
    }
    struct epoll_event events[256];
    for (;;) {
        int64_t now = now_ns();
        if (g.pending_handshakes > 0 && now >= g.t0 + GRACE_NS) /* handshakes not done in 5 s */
            for (int i = 0; i < g.connections; i++)
                if (g.conns[i].phase == CONNECTING || g.conns[i].phase == HANDSHAKE) end_conn(&g.conns[i], E_CONNECT);
        if (g.started && now >= g.deadline + GRACE_NS) { /* stuck connections: count them and stop */
            g.errors[E_TIMEOUT] += (uint64_t)g.open;
            finish();
        }
        int64_t wake = g.started ? g.deadline + GRACE_NS : g.t0 + GRACE_NS;
        if (g.pending_handshakes > 0 && g.t0 + GRACE_NS < wake) wake = g.t0 + GRACE_NS;
        int timeout_ms = (int)((wake - now) / 1000000 + 1);
        if (timeout_ms > 1000) timeout_ms = 1000;
        int n = epoll_wait(g.epfd, events, 256, timeout_ms);
        if (n < 0 && errno != EINTR) { perror("wsbench: epoll_wait"); finish(); }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->phase != DONE) on_event(c, events[i].events);
        }
    }
}
