// openloop: a constant-rate (open-loop) HTTP/1.1 load generator, in the spirit of wrk2.
//
// Request i is due at t0 + i/rate (evenly spaced, not in bursts) and is sent on the first idle
// keep-alive connection; when every connection is busy it waits in a FIFO. Latency is measured from
// the due time (so a stalled server shows up as latency instead of silently lowering the offered
// load: no coordinated omission) and also from the actual send. One thread, epoll, nanosecond timer.
//
// Why not h2load --rps: it fires every client's request at the same instant (64 connections → bursts
// of 64 every 1/rps s), which measures burst queueing. wrk2 is not packaged by Debian; Node's timers
// have a 1 ms granularity, which is more than the latency being measured.
//
// Usage: openloop HOST PORT PATH RATE CONNECTIONS DURATION_S WARMUP_S [HEADER_LINE...]
// Prints one JSON object on stdout. Bounded: stops after WARMUP_S + DURATION_S (+ 2 s drain).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define BUF 65536

typedef struct {
  int fd;
  int busy;      // a request is outstanding
  double due;    // when the outstanding request was due (s, monotonic)
  double sent;   // when it was written
  int measured;  // due after the warm-up
  char buf[BUF];
  size_t len;
} conn_t;

static conn_t conns[MAX_CONNS];
static int nconns;
static struct sockaddr_in addr;
static char req[8192];
static size_t reqlen;

static double *lat_due, *lat_sent;
static size_t nlat, caplat;
static uint64_t sent, sent_all, done_all, done2xx, non2xx, errors, reconnects, skipped;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int open_conn(int ep, int i) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  conns[i].fd = fd;
  conns[i].busy = 0;
  conns[i].len = 0;
  return 0;
}

static void fail_conn(int ep, int i) {
  errors++;
  epoll_ctl(ep, EPOLL_CTL_DEL, conns[i].fd, NULL);
  close(conns[i].fd);
  conns[i].fd = -1;
  conns[i].busy = 0;
  if (reconnects++ < 10000) open_conn(ep, i);
}

// Returns the length of a complete response at the start of buf (Content-Length or chunked), 0 if
// incomplete, -1 if malformed. *status gets the status code.
static long response_len(const char *b, size_t n, int *status) {
  const char *end = memmem(b, n, "\r\n\r\n", 4);
  if (!end) return n > 16384 ? -1 : 0;
  size_t head = (size_t)(end - b) + 4;
  if (n < 12 || memcmp(b, "HTTP/1.", 7) != 0) return -1;
  *status = atoi(b + 9);
  long clen = -1;
  int chunked = 0;
  for (const char *p = b; p < end;) {
    const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
    if (!eol) break;
    if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) clen = atol(p + 15);
    if ((size_t)(eol - p) > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0 && strcasestr(p + 18, "chunked") && strcasestr(p + 18, "chunked") < eol) chunked = 1;
    p = eol + 2;
  }
  if (*status == 204 || *status == 304) return (long)head;
  if (!chunked) return clen < 0 ? -1 : (n >= head + (size_t)clen ? (long)(head + clen) : 0);
  size_t p = head;
  for (;;) {
    const char *eol = memmem(b + p, n - p, "\r\n", 2);
    if (!eol) return 0;
    long size = strtol(b + p, NULL, 16);
    p = (size_t)(eol - b) + 2;
    if (size == 0) {  // last chunk; no trailers expected from the peers measured
      return n >= p + 2 ? (long)(p + 2) : 0;
    }
    if (n < p + (size_t)size + 2) return 0;
    p += (size_t)size + 2;
  }
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void print_summary(const char *name, double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += v[i];
#define Q(p) (n ? v[(size_t)((p) * (n - 1) + 0.5)] * 1e6 : -1)
  printf("\"%s\":{\"meanUs\":%.1f,\"p50Us\":%.1f,\"p90Us\":%.1f,\"p99Us\":%.1f,\"p999Us\":%.1f,\"maxUs\":%.1f}", name,
         n ? sum / n * 1e6 : -1, Q(0.5), Q(0.9), Q(0.99), Q(0.999), n ? v[n - 1] * 1e6 : -1);
}

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: %s HOST PORT PATH RATE CONNECTIONS DURATION_S WARMUP_S [HEADER...]\n", argv[0]);
    return 64;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]);
  const char *path = argv[3];
  double rate = atof(argv[4]);
  nconns = atoi(argv[5]);
  double duration = atof(argv[6]), warmup = atof(argv[7]);
  if (rate <= 0 || rate > 200000 || nconns < 1 || nconns > MAX_CONNS || duration <= 0 || duration > 600 || warmup < 0 || warmup > 60) {
    fprintf(stderr, "openloop: rate 0..200000, connections 1..%d, duration 0..600 s, warmup 0..60 s\n", MAX_CONNS);
    return 64;
  }
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "openloop: HOST must be an IPv4 address\n");
    return 64;
  }
  int off = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: isomesh-openloop\r\n", path, host, port);
  for (int i = 8; i < argc && off < (int)sizeof req - 64; i++) off += snprintf(req + off, sizeof req - off, "%s\r\n", argv[i]);
  off += snprintf(req + off, sizeof req - off, "\r\n");
  reqlen = (size_t)off;

  caplat = (size_t)(rate * duration * 1.1) + 1024;
  lat_due = malloc(caplat * sizeof(double));
  lat_sent = malloc(caplat * sizeof(double));
  // Requests due while every connection is busy wait here; bounded (a stalled server skips, counted).
  size_t qcap = (size_t)rate + 1024, qhead = 0, qlen = 0;
  double *queue = malloc(qcap * sizeof(double));
  if (!lat_due || !lat_sent || !queue) return 70;

  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < nconns; i++) {
    if (open_conn(ep, i) < 0) {
      fprintf(stderr, "openloop: connect: %s\n", strerror(errno));
      return 69;
    }
  }
  double t0 = now() + 0.05, measure_from = t0 + warmup, stop = measure_from + duration, hard_stop = stop + 2.0;
  uint64_t next = 0;
  int idle_hint = 0;
  struct epoll_event evs[256];
  for (;;) {
    double t = now();
    // Enqueue everything that has come due (evenly spaced schedule).
    while (t0 + next / rate <= t && t0 + next / rate < stop) {
      double due = t0 + next / rate;
      next++;
      if (qlen == qcap) skipped++;
      else queue[(qhead + qlen++) % qcap] = due;
    }
    // Dispatch waiting requests onto idle connections.
    for (int k = 0; k < nconns && qlen > 0; k++) {
      int i = (idle_hint + k) % nconns;
      if (conns[i].busy || conns[i].fd < 0) continue;
      double due = queue[qhead];
      ssize_t w = send(conns[i].fd, req, reqlen, MSG_NOSIGNAL);
      if (w != (ssize_t)reqlen) {
        if (w < 0 && errno == EAGAIN) continue;  // connect still in progress; try another
        fail_conn(ep, i);
        continue;
      }
      qhead = (qhead + 1) % qcap;
      qlen--;
      conns[i].busy = 1;
      conns[i].due = due;
      conns[i].sent = now();
      conns[i].measured = due >= measure_from;
      sent_all++;
      if (conns[i].measured) sent++;
      idle_hint = (i + 1) % nconns;
    }
    int outstanding = 0;
    for (int i = 0; i < nconns; i++) outstanding += conns[i].busy;
    t = now();
    if ((t >= stop && outstanding == 0 && qlen == 0) || t >= hard_stop) break;
    double wake = t0 + next / rate;
    if (wake >= stop || qlen > 0) wake = t + 0.001;  // no more arrivals (or waiting for a connection): poll
    double dt = wake - t;
    if (dt < 0) dt = 0;
    struct timespec ts = {.tv_sec = (time_t)dt, .tv_nsec = (long)((dt - (time_t)dt) * 1e9)};
    int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
    for (int e = 0; e < n; e++) {
      int i = (int)evs[e].data.u32;
      conn_t *c = &conns[i];
      if (c->fd < 0) continue;
      ssize_t r = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN) continue;
        if (c->busy) fail_conn(ep, i);
        else {  // idle keep-alive connection closed by the server: reopen quietly
          epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
          close(c->fd);
          open_conn(ep, i);
        }
        continue;
      }
      c->len += (size_t)r;
      int status = 0;
      long len = response_len(c->buf, c->len, &status);
      if (len < 0 || (len == 0 && c->len == BUF)) {
        fail_conn(ep, i);
        continue;
      }
      if (len == 0) continue;
      double t1 = now();
      if (c->busy) done_all++;
      if (c->busy && c->measured) {
        if (status >= 200 && status < 300) {
          done2xx++;
          if (nlat < caplat) {
            lat_due[nlat] = t1 - c->due;
            lat_sent[nlat] = t1 - c->sent;
            nlat++;
          }
        } else non2xx++;
      }
      memmove(c->buf, c->buf + len, c->len - (size_t)len);
      c->len -= (size_t)len;
      c->busy = 0;
    }
  }
  uint64_t timeouts = 0;
  for (int i = 0; i < nconns; i++) {
    if (conns[i].busy && conns[i].measured) timeouts++;
    if (conns[i].fd >= 0) close(conns[i].fd);
  }
  printf("{\"rate\":%.1f,\"connections\":%d,\"durationSec\":%.1f,\"sentAll\":%lu,\"answeredAll\":%lu,\"sent\":%lu,\"ok\":%lu,\"non2xx\":%lu,\"errors\":%lu,\"timeouts\":%lu,\"skipped\":%lu,\"achievedRps\":%.1f,",
         rate, nconns, duration, sent_all, done_all, sent, done2xx, non2xx, errors, timeouts, skipped, done2xx / duration);
  print_summary("fromDue", lat_due, nlat);
  printf(",");
  print_summary("fromSend", lat_sent, nlat);
  printf("}\n");
  return 0;
}
