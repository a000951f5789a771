/*
 * kvserver: a small TCP key-value server on an epoll loop, with no lock.
 *
 * Each connection is a Desync object owning its socket and input buffer; the
 * store (a hash table) is one more object. The event loop (main thread) only
 * watches file descriptors: when a socket is readable it queues an async job
 * on that connection, which reads and parses the requests and hands them to
 * the store as one job, returning the store's future. The connection's queue
 * is then held, without blocking a thread, until the store has answered; a
 * desync_after job on the connection then writes the replies in order. The
 * loop watches the fd of that last future (desync_future_fd) and re-arms the
 * socket when it completes.
 *
 * Protocol, one request per line: "SET key value" -> "OK", "GET key" ->
 * "VALUE value" or "NOT_FOUND", anything else -> "ERROR".
 *
 *   ./build/kvserver         serves 127.0.0.1 on a free port and runs test
 *                            clients against it (5,000 requests, each reply
 *                            checked); exits 0 if every reply was right
 *   ./build/kvserver 7000    only serves 127.0.0.1:7000, until killed
 *                            (try: printf 'SET a 1\nGET a\n' | nc -q1 127.0.0.1 7000)
 */
#include <desync.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLIENTS 4
#define ROUNDS 25 /* per client: each round sends PAIRS SETs and PAIRS GETs */
#define PAIRS 25
#define KEYS 50 /* distinct keys per client: later rounds overwrite */

/* Out of memory in a job: the store gives up (to stay short); the event
 * loop shows how to drop just one connection instead. */
static void out_of_memory(void) {
    fputs("kvserver: out of memory\n", stderr);
    exit(1);
}

/* A growable byte buffer. */
struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        if (!(b->p = realloc(b->p, b->cap)))
            out_of_memory();
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* ----------------------------------------------------------- the store */

struct entry {
    char *key, *value;
    struct entry *next;
};

struct store {
    struct entry *bucket[1024];
    long keys;
};

static struct entry **find(struct store *s, const char *key) {
    unsigned h = 5381;
    for (const char *c = key; *c; c++)
        h = h * 33 + (unsigned char)*c;
    struct entry **e = &s->bucket[h % 1024];
    while (*e && strcmp((*e)->key, key) != 0)
        e = &(*e)->next;
    return e;
}

static void store_free(void *data) {
    struct store *s = data;
    for (int i = 0; i < 1024; i++) {
        for (struct entry *e = s->bucket[i], *next; e; e = next) {
            next = e->next;
            free(e->key), free(e->value), free(e);
        }
    }
    free(s);
}

/* A batch of requests from one connection: complete lines, each ending in
 * '\0' instead of '\n' (the store parses them), and the replies. */
struct batch {
    struct buf lines, replies;
};

/* A job on the store: runs a whole batch in order, so a client's SET is
 * seen by its next GET even within one write. */
static desync_future_t *store_run(void *data, void *arg) {
    struct store *s = data;
    struct batch *b = arg;
    for (size_t at = 0, next; at < b->lines.len; at = next) {
        next = at + strlen(b->lines.p + at) + 1; /* before strtok_r cuts the line */
        char *save, *op = strtok_r(b->lines.p + at, " ", &save);
        char *key = strtok_r(NULL, " ", &save), *value = strtok_r(NULL, "", &save);
        const char *reply = "ERROR", *rest = "";
        if (op && key && !value && strcmp(op, "GET") == 0) {
            struct entry *e = *find(s, key);
            reply = e ? "VALUE " : "NOT_FOUND";
            rest = e ? e->value : "";
        } else if (op && key && value && strcmp(op, "SET") == 0) {
            struct entry **e = find(s, key);
            if (!*e) {
                if (!(*e = calloc(1, sizeof **e)) || !((*e)->key = strdup(key)))
                    out_of_memory();
                s->keys++;
            }
            free((*e)->value);
            if (!((*e)->value = strdup(value)))
                out_of_memory();
            reply = "OK";
        }
        buf_add(&b->replies, reply, strlen(reply));
        buf_add(&b->replies, rest, strlen(rest));
        buf_add(&b->replies, "\n", 1);
    }
    return NULL; /* done: the future completes with NULL */
}

static desync_t *store; /* the store object, shared by every connection */

/* ---------------------------------------------------- the connections */

/* A connection's data: touched only by its own jobs. */
struct conn_state {
    int fd;
    struct buf in; /* bytes read, not yet a complete line */
    struct batch batch;
    int closing; /* the peer closed, or the socket failed */
};

static void conn_free(void *data) {
    struct conn_state *cs = data;
    close(cs->fd);
    free(cs->in.p);
    free(cs->batch.lines.p);
    free(cs->batch.replies.p);
    free(cs);
}

/* Async job on a connection: reads what the socket has, passes the complete
 * lines to the store and returns the store's future, so the connection's
 * queue waits for the store's answer without holding a thread. */
static desync_future_t *conn_read(void *data, void *arg) {
    (void)arg;
    struct conn_state *cs = data;
    char chunk[4096];
    ssize_t n;
    while ((n = read(cs->fd, chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR))
        buf_add(&cs->in, chunk, n > 0 ? (size_t)n : 0);
    cs->closing = n == 0 || errno != EAGAIN; /* EAGAIN: all read for now */
    size_t used = 0;
    for (size_t i = 0; i < cs->in.len; i++) {
        if (cs->in.p[i] == '\n') {
            cs->in.p[i] = '\0';
            buf_add(&cs->batch.lines, cs->in.p + used, i + 1 - used);
            used = i + 1;
        }
    }
    memmove(cs->in.p, cs->in.p + used, cs->in.len - used);
    cs->in.len -= used;
    if (cs->batch.lines.len == 0)
        return NULL;
    /* The store may use the batch: no job of ours runs until it answers. */
    desync_future_t *answer = desync_future_desync(store, store_run, &cs->batch);
    cs->closing |= !answer; /* out of memory: drop the client */
    return answer;
}

/* Writes all of p to a socket, waiting (at most 10 s each time) while a
 * non-blocking socket's buffer is full. MSG_NOSIGNAL: a peer that has gone
 * is an error here, not a SIGPIPE that ends the process. */
static int write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        struct pollfd pfd = {fd, POLLOUT, 0};
        if (n > 0)
            p += n, len -= (size_t)n;
        else if (errno != EINTR && (errno != EAGAIN || poll(&pfd, 1, 10000) <= 0))
            return -1;
    }
    return 0;
}

/* Runs on the connection once conn_read's future (the store's) completed:
 * writes the replies, in order. Its value tells the loop to close or not. */
static void *conn_reply(void *data, int status, void *value, void *arg) {
    (void)value;
    (void)arg;
    struct conn_state *cs = data;
    if (status != 0 || write_all(cs->fd, cs->batch.replies.p, cs->batch.replies.len) != 0)
        cs->closing = 1;
    cs->batch.lines.len = cs->batch.replies.len = 0;
    return (void *)(intptr_t)cs->closing;
}

/* ------------------------------------------------------ the event loop */

/* What an epoll event is about: the listening socket, a connection's
 * socket, or the future of a connection's turn. */
enum kind { LISTENER, SOCKET, TURN };
struct watch {
    enum kind kind;
    struct conn *c;
};

/* The loop's side of a connection (the loop thread's only). */
struct conn {
    desync_t *obj;
    int fd;                 /* for epoll only: the object owns and closes it */
    desync_future_t *turn;  /* the reply job's future, while one is pending */
    struct watch on_socket, on_turn;
};

static int ep;

static void arm(int op, int fd, struct watch *w, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(ep, op, fd, &ev) != 0) {
        perror("epoll_ctl");
        exit(1);
    }
}

static void conn_close(struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    desync_release(c->obj); /* runs conn_free after its last job */
    free(c);
}

/* The socket is readable: read, ask the store, reply; one turn at a time
 * (EPOLLONESHOT: the socket is not watched again until the turn is over). */
static void conn_turn(struct conn *c) {
    desync_future_t *read = desync_future_desync(c->obj, conn_read, NULL);
    c->turn = read ? desync_after(c->obj, read, conn_reply, NULL) : NULL;
    int fd = c->turn ? desync_future_fd(c->turn) : -1;
    if (fd < 0) {
        fprintf(stderr, "kvserver: out of memory, closing a connection\n");
        desync_future_free(c->turn);
        conn_close(c);
        return;
    }
    arm(EPOLL_CTL_ADD, fd, &c->on_turn, EPOLLIN);
}

/* The turn's future completed: close the connection, or watch it again. */
static int turn_done(struct conn *c) {
    void *closing = NULL;
    if (desync_future_poll(c->turn, &closing, NULL) == DESYNC_EAGAIN)
        return 0; /* cannot happen: the fd is readable once it is complete */
    epoll_ctl(ep, EPOLL_CTL_DEL, desync_future_fd(c->turn), NULL); /* before free closes it */
    desync_future_free(c->turn);
    c->turn = NULL;
    if (closing) {
        conn_close(c);
        return 1;
    }
    arm(EPOLL_CTL_MOD, c->fd, &c->on_socket, EPOLLIN | EPOLLONESHOT);
    return 0;
}

static void accept_all(int listener) {
    int fd;
    while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct conn_state *cs = calloc(1, sizeof *cs);
        struct conn *c = calloc(1, sizeof *c);
        if (cs)
            cs->fd = fd;
        if (!cs || !c || !(c->obj = desync_new(cs, conn_free))) {
            fprintf(stderr, "kvserver: out of memory, refusing a connection\n");
            close(fd);
            free(cs);
            free(c);
            continue;
        }
        *c = (struct conn){c->obj, fd, NULL, {SOCKET, c}, {TURN, c}};
        arm(EPOLL_CTL_ADD, fd, &c->on_socket, EPOLLIN | EPOLLONESHOT);
    }
}

/* Serves until `until_closed` connections have come and gone (0: for ever). */
static int serve(int listener, int until_closed) {
    struct watch on_listener = {LISTENER, NULL};
    arm(EPOLL_CTL_ADD, listener, &on_listener, EPOLLIN);
    int closed = 0;
    while (until_closed == 0 || closed < until_closed) {
        struct epoll_event ev[64];
        int n = epoll_wait(ep, ev, 64, until_closed ? 10000 : -1);
        if (n == 0) {
            fprintf(stderr, "kvserver: nothing happened for 10 s\n");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = ev[i].data.ptr;
            if (w->kind == LISTENER)
                accept_all(listener);
            else if (w->kind == SOCKET)
                conn_turn(w->c);
            else
                closed += turn_done(w->c);
        }
    }
    return 0;
}

/* ----------------------------------------------------- the test clients */

struct client {
    int id, port;
    pthread_t thread;
    long checked, wrong;
};

/* Reads until `lines` lines are in buf (the socket times out after 10 s). */
static int read_lines(int fd, struct buf *b, int lines) {
    b->len = 0;
    for (int seen = 0; seen < lines;) {
        char chunk[4096];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n <= 0)
            return -1;
        buf_add(b, chunk, (size_t)n);
        for (ssize_t i = 0; i < n; i++)
            seen += chunk[i] == '\n';
    }
    return 0;
}

static void *client_main(void *arg) {
    struct client *cl = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl->port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {10, 0};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("client");
        cl->wrong++;
        return NULL;
    }
    struct buf req = {0}, want = {0}, got = {0};
    for (int r = 0; r < ROUNDS; r++) {
        /* One write with PAIRS SET/GET pairs: the server must keep their
         * order, so each GET sees the value its SET just wrote. */
        req.len = want.len = 0;
        for (int j = 0; j < PAIRS; j++) {
            char line[128];
            int k = (r * PAIRS + j) % KEYS;
            int n = snprintf(line, sizeof line, "SET c%d-k%d v%d-%d\nGET c%d-k%d\n", cl->id, k, r, j,
                             cl->id, k);
            buf_add(&req, line, (size_t)n);
            buf_add(&want, line, (size_t)snprintf(line, sizeof line, "OK\nVALUE v%d-%d\n", r, j));
        }
        if (write_all(fd, req.p, req.len) != 0 || read_lines(fd, &got, 2 * PAIRS) != 0) {
            fprintf(stderr, "client %d: the server did not answer\n", cl->id);
            cl->wrong++;
            break;
        }
        cl->checked += 2 * PAIRS;
        if (got.len != want.len || memcmp(got.p, want.p, want.len) != 0)
            cl->wrong += 2 * PAIRS; /* the whole round counts as wrong */
    }
    close(fd);
    free(req.p);
    free(want.p);
    free(got.p);
    return NULL;
}

static void count_keys(void *data, void *out) { *(long *)out = ((struct store *)data)->keys; }

int main(int argc, char **argv) {
    atexit(desync_shutdown); /* at exit: finish background work, stop threads */
    struct store *s = calloc(1, sizeof *s);
    store = s ? desync_new(s, store_free) : NULL;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                               .sin_port = htons((uint16_t)(argc > 1 ? atoi(argv[1]) : 0))};
    socklen_t len = sizeof addr;
    if (!store || listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 64) != 0 || getsockname(listener, (struct sockaddr *)&addr, &len) != 0 ||
        (ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        perror("kvserver");
        return 1;
    }
    printf("kvserver: listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    if (argc > 1)
        return serve(listener, 0);

    struct client cl[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = (struct client){.id = i, .port = ntohs(addr.sin_port)};
        if (pthread_create(&cl[i].thread, NULL, client_main, &cl[i]) != 0)
            return 1;
    }
    int rc = serve(listener, CLIENTS);
    long checked = 0, wrong = 0, keys = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(cl[i].thread, NULL);
        checked += cl[i].checked;
        wrong += cl[i].wrong;
    }
    desync_sync(store, count_keys, &keys);
    printf("kvserver: %d clients, %ld replies checked, %ld wrong; the store has %ld keys\n", CLIENTS,
           checked, wrong, keys);
    close(listener);
    close(ep);
    desync_release(store);
    return rc != 0 || wrong != 0 || checked != CLIENTS * ROUNDS * PAIRS * 2 || keys != CLIENTS * KEYS;
}
