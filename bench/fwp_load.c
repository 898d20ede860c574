/*
 * fwp_load: Faktory's load-test shape, driven by a client that costs next to nothing.
 *
 * Speaks what Faktory's own load generator (test/load in contribsys/faktory, `make load`)
 * speaks, over plain PUSH, FETCH, ACK and FAIL of the Faktory Work Protocol:
 *
 *   - one control connection: HI/HELLO, FLUSH, kept open for the run, END at the end;
 *   - N connections (default 10), each its own thread, one command in flight at a time;
 *     even ones PUSH a job to a random one of 5 queues, odd ones FETCH from all 5 (in an
 *     order shuffled once per connection) and ACK the job, or FAIL it 1 time in 100;
 *   - the job is the load tool's: {"retry":25,"jid":<16 base64url chars>,"queue":"queueN",
 *     "jobtype":"SomeJob","created_at":<RFC 3339, ns, trailing zeros cut>,
 *     "args":[[1,"string",3]]} (the tool hands NewJob one slice, so args nest);
 *   - every HELLO has an empty wid, like the tool's (`--wids` gives the fetchers one);
 *   - pushers stop once the pushes reach --jobs, fetchers once the fetches do (an empty
 *     FETCH counts, as in the tool); the rate is --jobs over the wall time from before the
 *     first connection of the workers opens to after the last one closes.
 *
 * Prints one JSON object: the counts, the rate, and this process's own CPU (getrusage,
 * everything it did, connection set-up included). Bounded: --timeout seconds at most.
 *
 *   cc -O2 -pthread -o fwp_load fwp_load.c
 *   ./fwp_load --port 7419 --jobs 30000 --connections 10
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define QUEUES 5
#define BUF_SIZE 65536
#define IO_TIMEOUT_SECONDS 15

enum reply { REPLY_OK, REPLY_BULK, REPLY_NIL, REPLY_ERROR, REPLY_IO };

struct options {
    const char *host;
    const char *port;
    long jobs;
    int connections;
    int fail_percent;
    int flush;
    int wids;
    int results;
    double timeout;
};

struct conn {
    int fd;
    size_t start, end;
    char buf[BUF_SIZE];
};

static struct options opt = {"127.0.0.1", "7419", 30000, 10, 1, 1, 0, 0, 120.0};
static atomic_long pushes, pops, empties, acks, fails, errors;
static atomic_int stop_all;
static double deadline;
static char hostname[256];

static double now(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void complain(const char *fmt, ...) {
    /* the first few errors go to stderr; all are counted */
    if (atomic_fetch_add(&errors, 1) >= 5)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("fwp_load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* xorshift64*: per-thread, seeded from the kernel; jids need to be unique, not secret */
static uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t seed(void) {
    uint64_t s = 0;
    while (s == 0)
        if (getrandom(&s, sizeof s, 0) != sizeof s)
            s = (uint64_t)now(CLOCK_REALTIME) ^ (uint64_t)pthread_self();
    return s;
}

static int send_all(struct conn *c, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The next CRLF-ended line in the buffer (NUL-terminated in place), reading as needed. */
static char *read_line(struct conn *c, size_t *len) {
    for (;;) {
        char *base = c->buf + c->start;
        char *nl = memchr(base, '\n', c->end - c->start);
        if (nl != NULL) {
            *len = (size_t)(nl - base);
            if (*len > 0 && base[*len - 1] == '\r')
                (*len)--;
            base[*len] = '\0';
            c->start = (size_t)(nl - c->buf) + 1;
            return base;
        }
        if (c->start > 0) {
            memmove(c->buf, c->buf + c->start, c->end - c->start);
            c->end -= c->start;
            c->start = 0;
        }
        if (c->end >= BUF_SIZE - 1)
            return NULL;
        ssize_t n = recv(c->fd, c->buf + c->end, BUF_SIZE - 1 - c->end, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        c->end += (size_t)n;
    }
}

/* One reply: +simple, -error, $-1 (nil) or $N bulk (its body returned in *body). */
static enum reply read_reply(struct conn *c, char **body, size_t *len) {
    char *line = read_line(c, len);
    if (line == NULL)
        return REPLY_IO;
    *body = line;
    if (line[0] == '+')
        return REPLY_OK;
    if (line[0] == '-')
        return REPLY_ERROR;
    if (line[0] != '$')
        return REPLY_IO;
    long size = strtol(line + 1, NULL, 10);
    if (size < 0)
        return REPLY_NIL;
    line = read_line(c, len);
    if (line == NULL || (long)*len != size)
        return REPLY_IO; /* a body with a newline inside is not what this driver expects */
    *body = line;
    return REPLY_BULK;
}

static int command(struct conn *c, const char *text, size_t len, const char *what) {
    char *body;
    size_t blen;
    if (send_all(c, text, len) < 0) {
        complain("%s: send failed: %s", what, strerror(errno));
        return -1;
    }
    enum reply r = read_reply(c, &body, &blen);
    if (r == REPLY_OK)
        return 0;
    if (r == REPLY_ERROR) {
        complain("%s: %s", what, body);
        return 0; /* the tool prints the error and goes on */
    }
    complain("%s: connection lost or unexpected reply", what);
    return -1;
}

static struct conn *dial(const char *wid) {
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(opt.host, opt.port, &hints, &res);
    if (rc != 0) {
        complain("%s:%s: %s", opt.host, opt.port, gai_strerror(rc));
        return NULL;
    }
    struct conn *c = calloc(1, sizeof *c);
    c->fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    int one = 1; /* Go's net package sets TCP_NODELAY on every TCP connection */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {IO_TIMEOUT_SECONDS, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    rc = connect(c->fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    char *line;
    size_t len;
    if (rc != 0 || read_reply(c, &line, &len) != REPLY_OK || strncmp(line, "+HI ", 4) != 0) {
        complain("%s:%s: no HI from the server", opt.host, opt.port);
        goto fail;
    }
    if (strstr(line, "\"s\"") != NULL) {
        complain("the server wants a password; fwp_load talks to password-less servers only");
        goto fail;
    }
    char hello[512];
    int n = snprintf(hello, sizeof hello,
                     "HELLO {\"hostname\":\"%s\",\"wid\":\"%s\",\"username\":\"\",\"pwdhash\":\"\","
                     "\"labels\":[\"fwp-load\"],\"pid\":%d,\"v\":2}\r\n",
                     hostname, wid, (int)getpid());
    if (command(c, hello, (size_t)n, "HELLO") == 0)
        return c;
fail:
    close(c->fd);
    free(c);
    return NULL;
}

static void hang_up(struct conn *c) {
    send_all(c, "END\r\n", 5);
    close(c->fd);
    free(c);
}

static int over(void) {
    if (atomic_load(&stop_all))
        return 1;
    if (now(CLOCK_MONOTONIC) > deadline) {
        atomic_store(&stop_all, 1);
        return 1;
    }
    return 0;
}

static size_t jid(uint64_t *rng, char *out) {
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint64_t a = next_random(rng), b = next_random(rng);
    /* 12 random bytes = 96 bits = 16 base64url characters, no padding */
    for (int i = 0; i < 10; i++)
        out[i] = b64[(a >> (6 * i)) & 63];
    for (int i = 0; i < 6; i++)
        out[10 + i] = b64[(b >> (6 * i)) & 63];
    return 16;
}

/* RFC 3339 in UTC with nanoseconds, trailing zeros of the fraction cut (Go's RFC3339Nano). */
static size_t created_at(char *out) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    if (ts.tv_nsec != 0) {
        n += (size_t)sprintf(out + n, ".%09ld", ts.tv_nsec);
        while (out[n - 1] == '0')
            n--;
    }
    out[n++] = 'Z';
    out[n] = '\0';
    return n;
}

static void *pusher(void *arg) {
    (void)arg;
    uint64_t rng = seed();
    struct conn *c = dial("");
    if (c == NULL)
        return NULL;
    char line[512], id[17] = {0}, stamp[40];
    while (!over()) {
        jid(&rng, id);
        created_at(stamp);
        /* --results: the job asks for its result to be kept an hour (custom.result_ttl) */
        int n = snprintf(line, sizeof line,
                         "PUSH {\"retry\":25,\"jid\":\"%s\",\"queue\":\"queue%d\",\"jobtype\":"
                         "\"SomeJob\",\"created_at\":\"%s\",\"args\":[[1,\"string\",3]]%s}\r\n",
                         id, (int)(next_random(&rng) % QUEUES), stamp,
                         opt.results ? ",\"custom\":{\"result_ttl\":3600}" : "");
        if (command(c, line, (size_t)n, "PUSH") < 0)
            break;
        if (atomic_fetch_add(&pushes, 1) + 1 >= opt.jobs)
            break;
    }
    hang_up(c);
    return NULL;
}

/* The job's jid, read from the FETCH reply: the first "jid":"..." of the object. */
static int jid_of(const char *job, char *out, size_t size) {
    const char *p = strstr(job, "\"jid\":\"");
    if (p == NULL)
        return -1;
    p += 7;
    const char *q = strchr(p, '"');
    if (q == NULL || (size_t)(q - p) >= size)
        return -1;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return 0;
}

static int finish(struct conn *c, uint64_t *rng, const char *id) {
    char line[256];
    int n;
    if ((int)(next_random(rng) % 100) >= 100 - opt.fail_percent) {
        /* what Go's json.Marshal makes of the tool's failure map: keys sorted */
        n = snprintf(line, sizeof line,
                     "FAIL {\"errtype\":\"unknown\",\"jid\":\"%s\",\"message\":\"file already "
                     "closed\"}\r\n", id);
        atomic_fetch_add(&fails, 1);
        return command(c, line, (size_t)n, "FAIL");
    }
    if (opt.results) /* the handler's return value, as conveyor's worker sends it */
        n = snprintf(line, sizeof line,
                     "ACK {\"jid\":\"%s\",\"result\":\"{\\\"n\\\":1,\\\"ok\\\":true}\"}\r\n", id);
    else
        n = snprintf(line, sizeof line, "ACK {\"jid\":\"%s\"}\r\n", id);
    atomic_fetch_add(&acks, 1);
    return command(c, line, (size_t)n, "ACK");
}

static void *fetcher(void *arg) {
    long index = (long)arg;
    uint64_t rng = seed();
    char wid[32] = "";
    if (opt.wids)
        snprintf(wid, sizeof wid, "fwp-load-%d-%ld", (int)getpid(), index);
    struct conn *c = dial(wid);
    if (c == NULL)
        return NULL;
    int order[QUEUES];
    for (int i = 0; i < QUEUES; i++)
        order[i] = i;
    for (int i = QUEUES - 1; i > 0; i--) {
        int j = (int)(next_random(&rng) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    char fetch[128];
    size_t flen = (size_t)sprintf(fetch, "FETCH");
    for (int i = 0; i < QUEUES; i++)
        flen += (size_t)sprintf(fetch + flen, " queue%d", order[i]);
    flen += (size_t)sprintf(fetch + flen, "\r\n");
    char id[128], *body;
    size_t blen;
    while (!over()) {
        if (send_all(c, fetch, flen) < 0) {
            complain("FETCH: send failed: %s", strerror(errno));
            break;
        }
        enum reply r = read_reply(c, &body, &blen);
        if (r == REPLY_BULK) {
            if (jid_of(body, id, sizeof id) < 0)
                complain("FETCH: no jid in %.80s", body);
            else if (finish(c, &rng, id) < 0)
                break;
        } else if (r == REPLY_NIL) {
            atomic_fetch_add(&empties, 1);
        } else if (r == REPLY_ERROR) {
            complain("FETCH: %s", body);
        } else {
            complain("FETCH: connection lost or unexpected reply");
            break;
        }
        if (atomic_fetch_add(&pops, 1) + 1 >= opt.jobs)
            break;
    }
    hang_up(c);
    return NULL;
}

static void usage(void) {
    fputs("usage: fwp_load [--host H] [--port P] [--jobs N] [--connections N]\n"
          "                [--fail-percent N] [--no-flush] [--wids] [--results]\n"
          "                [--timeout SECONDS]\n",
          stderr);
    exit(2);
}

static void parse(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-flush") == 0)
            opt.flush = 0;
        else if (strcmp(a, "--wids") == 0)
            opt.wids = 1;
        else if (strcmp(a, "--results") == 0)
            opt.results = 1;
        else if (v == NULL)
            usage();
        else if (strcmp(a, "--host") == 0)
            opt.host = v, i++;
        else if (strcmp(a, "--port") == 0)
            opt.port = v, i++;
        else if (strcmp(a, "--jobs") == 0)
            opt.jobs = atol(v), i++;
        else if (strcmp(a, "--connections") == 0)
            opt.connections = atoi(v), i++;
        else if (strcmp(a, "--fail-percent") == 0)
            opt.fail_percent = atoi(v), i++;
        else if (strcmp(a, "--timeout") == 0)
            opt.timeout = atof(v), i++;
        else
            usage();
    }
    if (opt.jobs < 1 || opt.connections < 2 || opt.connections > 4096 || opt.fail_percent < 0 ||
        opt.fail_percent > 100 || opt.timeout <= 0)
        usage();
}

int main(int argc, char **argv) {
    parse(argc, argv);
    if (gethostname(hostname, sizeof hostname - 1) != 0)
        strcpy(hostname, "localhost");
    deadline = now(CLOCK_MONOTONIC) + opt.timeout;
    struct conn *control = dial("");
    if (control == NULL)
        return 1;
    if (opt.flush && command(control, "FLUSH\r\n", 7, "FLUSH") < 0)
        return 1;
    pthread_t *threads = calloc((size_t)opt.connections, sizeof *threads);
    double started = now(CLOCK_MONOTONIC);
    for (long i = 0; i < opt.connections; i++)
        pthread_create(&threads[i], NULL, i % 2 ? fetcher : pusher, (void *)i);
    for (int i = 0; i < opt.connections; i++)
        pthread_join(threads[i], NULL);
    double seconds = now(CLOCK_MONOTONIC) - started;
    hang_up(control);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("{\"driver\":\"fwp_load\",\"jobs\":%ld,\"connections\":%d,\"pushes\":%ld,"
           "\"fetches\":%ld,\"empty_fetches\":%ld,\"acks\":%ld,\"fails\":%ld,\"errors\":%ld,"
           "\"timed_out\":%s,\"seconds\":%.6f,\"jobs_per_s\":%.1f,\"cpu_user_s\":%.6f,"
           "\"cpu_sys_s\":%.6f}\n",
           opt.jobs, opt.connections, atomic_load(&pushes), atomic_load(&pops),
           atomic_load(&empties), atomic_load(&acks), atomic_load(&fails),
           atomic_load(&errors), atomic_load(&stop_all) ? "true" : "false", seconds,
           (double)opt.jobs / seconds, user, sys);
    return atomic_load(&errors) > 0 || atomic_load(&stop_all) ? 1 : 0;
}
