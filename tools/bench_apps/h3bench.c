/* h3bench: tools/bench_h3.py's HTTP/3 load client in C, on the libcurl + ngtcp2 + nghttp3 that
 * curl_cffi ships (its _wrapper module exports libcurl's C API).
 *
 *   cc -O2 -o h3bench tools/bench_apps/h3bench.c -ldl
 *   h3bench --lib .../curl_cffi/_wrapper.abi3.so [--preload .../libpython3.11.so.1.0]
 *           --url https://127.0.0.1:PORT/path --concurrency 20 --duration 4 [--warmup 1]
 *           [--method POST --body-size 256]
 *
 * Why: tools/bench_apps/h3_load.py drives the same libcurl from Python asyncio and spends
 * ~150-260 us of CPU per request doing it, as much as the server it measures, so its rows
 * said as much about the client as about the server. This keeps the peer (libcurl's HTTP/3,
 * which found real bugs in rr) and drops the Python: one thread, one multi handle.
 *
 * The load: --concurrency easy handles, each a closed loop (when its transfer ends it is
 * added again at once) until the deadline, all multiplexed as streams of ONE QUIC connection
 * (CURLOPT_PIPEWAIT, CURLMOPT_MAX_HOST_CONNECTIONS 1, HTTP/3 only: no fallback). A POST sends
 * --body-size bytes of 'x' as its body. Completions in the first --warmup seconds are not
 * counted; at warmup + duration no transfer is started again and the ones in flight finish
 * (bounded: 10 s, then they are counted as errors).
 *
 * Each completion is checked: curl's result, the HTTP version curl used (3, else `not_h3`),
 * the status (200, else counted per status), the body bytes (min and max reported, so the
 * caller can check every response had the route's length).
 *
 * Output: one JSON line, the fields of h3_load.py's line (requests, errors, seconds,
 * client_cpu, client_idle) and: statuses, not_h3, body_min, body_max, connections (new
 * connections curl made while counting), first_error, libcurl (curl_version()).
 * Exit 0 when at least one request was counted, 1 otherwise, 2 on bad arguments or when
 * the library cannot be loaded.
 *
 * The library is loaded with dlopen: curl_cffi's module references a few CPython symbols
 * (its Python glue, never called here), so --preload loads libpython first (RTLD_GLOBAL) to
 * resolve them; no interpreter is started. The option and info numbers below are libcurl's
 * stable ABI numbers (curl/curl.h), declared here so no libcurl headers are needed.
 *
 * Must never: talk to anything but the URL given (tools/bench_h3.py gives loopback only),
 * wait without a bound, or run past warmup + duration + 10 s.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef void CURL;
typedef void CURLM;
typedef int CURLcode;
typedef int CURLMcode;
typedef struct {
    int msg;
    CURL *easy_handle;
    union { void *whatever; CURLcode result; } data;
} CURLMsg;

/* libcurl's ABI numbers (curl/curl.h, multi.h) */
enum {
    OPT_URL = 10002, OPT_WRITEFUNCTION = 20011, OPT_POSTFIELDS = 10015, OPT_POSTFIELDSIZE = 60,
    OPT_SSL_VERIFYPEER = 64, OPT_SSL_VERIFYHOST = 81, OPT_HTTP_VERSION = 84, OPT_NOSIGNAL = 99,
    OPT_PRIVATE = 10103, OPT_PIPEWAIT = 237, OPT_CUSTOMREQUEST = 10036, OPT_WRITEDATA = 10001,
    HTTP_VERSION_3 = 30, HTTP_VERSION_3ONLY = 31,
    INFO_RESPONSE_CODE = 0x200002, INFO_PRIVATE = 0x100015, INFO_HTTP_VERSION = 0x20002E,
    INFO_NUM_CONNECTS = 0x20001A,
    MOPT_PIPELINING = 3, MOPT_MAX_HOST_CONNECTIONS = 7, MOPT_MAX_CONCURRENT_STREAMS = 16,
    PIPE_MULTIPLEX = 2, MSG_DONE = 1, GLOBAL_DEFAULT = 3,
};

static struct {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, int, ...);
    CURLcode (*easy_getinfo)(CURL *, int, ...);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_setopt)(CURLM *, int, ...);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_perform)(CURLM *, int *);
    CURLMcode (*multi_poll)(CURLM *, void *, unsigned, int, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_cleanup)(CURLM *);
    char *(*version)(void);
} c;

typedef struct {
    size_t body;   /* bytes of the current response */
} Xfer;

static size_t on_body(char *ptr, size_t size, size_t n, void *user) {
    (void)ptr;
    ((Xfer *)user)->body += size * n;
    return size * n;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* seconds this process has run on a CPU plus waited for one (/proc/self/schedstat; 0 elsewhere) */
static double sched_busy(void) {
    unsigned long long run = 0, wait = 0;
    FILE *f = fopen("/proc/self/schedstat", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &run, &wait) != 2)
        run = wait = 0;
    fclose(f);
    return (run + wait) / 1e9;
}

static int load(const char *lib, const char *preload) {
    if (preload && !dlopen(preload, RTLD_NOW | RTLD_GLOBAL)) {
        fprintf(stderr, "h3bench: %s\n", dlerror());
        return -1;
    }
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "h3bench: %s\n", dlerror());
        return -1;
    }
#define SYM(field, name)                                                       \
    if (!(*(void **)&c.field = dlsym(h, name))) {                              \
        fprintf(stderr, "h3bench: %s has no %s\n", lib, name);                 \
        return -1;                                                             \
    }
    SYM(global_init, "curl_global_init") SYM(easy_init, "curl_easy_init") SYM(easy_setopt, "curl_easy_setopt")
    SYM(easy_getinfo, "curl_easy_getinfo") SYM(easy_cleanup, "curl_easy_cleanup")
    SYM(easy_strerror, "curl_easy_strerror") SYM(multi_init, "curl_multi_init")
    SYM(multi_setopt, "curl_multi_setopt") SYM(multi_add_handle, "curl_multi_add_handle")
    SYM(multi_remove_handle, "curl_multi_remove_handle") SYM(multi_perform, "curl_multi_perform")
    SYM(multi_poll, "curl_multi_poll") SYM(multi_info_read, "curl_multi_info_read")
    SYM(multi_cleanup, "curl_multi_cleanup") SYM(version, "curl_version")
#undef SYM
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: h3bench --lib LIBCURL.so [--preload LIB.so] --url URL [--concurrency N] "
                    "[--duration S] [--warmup S] [--method GET|POST] [--body-size N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *lib = NULL, *preload = NULL, *url = NULL, *method = "GET";
    long concurrency = 20, body_size = 0;
    double duration = 5, warmup = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--lib")) lib = v;
        else if (!strcmp(a, "--preload")) preload = v;
        else if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--method")) method = v;
        else if (!strcmp(a, "--concurrency")) concurrency = atol(v);
        else if (!strcmp(a, "--body-size")) body_size = atol(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else usage();
        i++;
    }
    if (!lib || !url || concurrency < 1 || concurrency > 10000 || body_size < 0 || duration <= 0 || warmup < 0
        || (strcmp(method, "GET") && strcmp(method, "POST")))
        usage();
    if (load(lib, preload))
        return 2;
    c.global_init(GLOBAL_DEFAULT);
    char *body = NULL;
    if (body_size) {
        body = malloc(body_size);
        memset(body, 'x', body_size);
    }
    CURLM *m = c.multi_init();
    c.multi_setopt(m, MOPT_PIPELINING, (long)PIPE_MULTIPLEX);
    c.multi_setopt(m, MOPT_MAX_HOST_CONNECTIONS, 1L);
    c.multi_setopt(m, MOPT_MAX_CONCURRENT_STREAMS, concurrency > 100 ? concurrency : 100L);
    CURL **easy = calloc(concurrency, sizeof *easy);
    Xfer *xf = calloc(concurrency, sizeof *xf);
    for (long i = 0; i < concurrency; i++) {
        CURL *e = easy[i] = c.easy_init();
        c.easy_setopt(e, OPT_URL, url);
        c.easy_setopt(e, OPT_HTTP_VERSION, (long)HTTP_VERSION_3ONLY);
        c.easy_setopt(e, OPT_SSL_VERIFYPEER, 0L);
        c.easy_setopt(e, OPT_SSL_VERIFYHOST, 0L);
        c.easy_setopt(e, OPT_NOSIGNAL, 1L);
        c.easy_setopt(e, OPT_PIPEWAIT, 1L);
        c.easy_setopt(e, OPT_WRITEFUNCTION, on_body);
        c.easy_setopt(e, OPT_WRITEDATA, &xf[i]);
        c.easy_setopt(e, OPT_PRIVATE, &xf[i]);
        if (!strcmp(method, "POST")) {
            c.easy_setopt(e, OPT_POSTFIELDSIZE, body_size);
            c.easy_setopt(e, OPT_POSTFIELDS, body ? body : "");
        }
        c.multi_add_handle(m, e);
    }
    long requests = 0, errors = 0, not_h3 = 0, connections = 0, statuses[600] = {0}, other_status = 0;
    size_t body_min = SIZE_MAX, body_max = 0;
    char first_error[256] = "";
    double t0 = now(), count_at = t0 + warmup, stop_at = count_at + duration, hard_stop = stop_at + 10;
    double cpu0 = 0, busy0 = 0, started = 0;
    int counting = 0, in_flight = (int)concurrency;
    while (in_flight > 0) {
        double t = now();
        if (!counting && t >= count_at) {
            counting = 1;
            cpu0 = cpu_seconds();
            busy0 = sched_busy();
            started = t;
        }
        if (t >= hard_stop)
            break;
        int running = 0, numfds = 0;
        c.multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = c.multi_info_read(m, &left))) {
            if (msg->msg != MSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            CURLcode res = msg->data.result;
            Xfer *x = NULL;
            long status = 0, version = 0, connects = 0;
            c.easy_getinfo(e, INFO_PRIVATE, (char **)&x);
            c.easy_getinfo(e, INFO_RESPONSE_CODE, &status);
            c.easy_getinfo(e, INFO_HTTP_VERSION, &version);
            c.easy_getinfo(e, INFO_NUM_CONNECTS, &connects);
            c.multi_remove_handle(m, e);
            in_flight--;
            if (counting) {
                connections += connects;
                if (res != 0) {
                    errors++;
                    if (!first_error[0])
                        snprintf(first_error, sizeof first_error, "curl %d: %s", res, c.easy_strerror(res));
                } else if (version != HTTP_VERSION_3) {
                    errors++;
                    not_h3++;
                } else {
                    if (status >= 0 && status < 600)
                        statuses[status]++;
                    else
                        other_status++;
                    if (status == 200) {
                        requests++;
                        if (x->body < body_min) body_min = x->body;
                        if (x->body > body_max) body_max = x->body;
                    } else {
                        errors++;
                    }
                }
            }
            x->body = 0;
            if (now() < stop_at) {
                c.multi_add_handle(m, e);
                in_flight++;
            }
        }
        if (in_flight > 0)
            c.multi_poll(m, NULL, 0, 50, &numfds);
    }
    double elapsed = counting ? now() - started : 0;
    double cpu = counting ? cpu_seconds() - cpu0 : 0, busy = counting ? sched_busy() - busy0 : 0;
    if (in_flight > 0) {  /* past the bound: what is still in flight failed */
        errors += in_flight;
        if (!first_error[0])
            snprintf(first_error, sizeof first_error, "%d transfers still running 10 s after the deadline",
                     in_flight);
    }
    double idle = elapsed > 0 ? 1 - busy / elapsed : 0;
    printf("{\"requests\": %ld, \"errors\": %ld, \"seconds\": %.6f, \"client_cpu\": %.6f, \"client_idle\": %.4f, "
           "\"statuses\": {",
           requests, errors, elapsed, cpu, idle < 0 ? 0 : idle);
    const char *sep = "";
    for (int s = 0; s < 600; s++)
        if (statuses[s]) {
            printf("%s\"%d\": %ld", sep, s, statuses[s]);
            sep = ", ";
        }
    if (other_status)
        printf("%s\"other\": %ld", sep, other_status);
    printf("}, \"not_h3\": %ld, \"connections\": %ld, \"body_min\": %zu, \"body_max\": %zu, \"first_error\": \"", not_h3,
           connections, requests ? body_min : 0, body_max);
    for (const char *p = first_error; *p; p++)  /* a JSON string: curl's messages are plain ASCII */
        putchar(*p == '"' || *p == '\\' ? '\'' : (*p < 0x20 ? ' ' : *p));
    printf("\", \"libcurl\": \"%s\"}\n", c.version());
    fflush(stdout);
    _exit(requests > 0 ? 0 : 1);  /* no cleanup walk: the process ends here */
}
