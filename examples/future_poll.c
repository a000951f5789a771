/*
 * future_poll: waiting for libdesync futures inside a poll(2) event loop.
 *
 * A Desync object owns a small word index. Requests are async jobs on it
 * (desync_future_desync): counting a document finishes at once, while a
 * "lookup" has to ask a slow backend (a thread standing in for a network
 * service) and returns a promise's future, which holds the index's queue
 * until the answer is in, without blocking any thread. The event loop owns
 * no lock and never blocks on a future: it polls a timer fd and the fd of
 * every outstanding future (desync_future_fd), and collects each result with
 * desync_future_poll once its fd is readable.
 *
 *   make examples && ./build/future_poll
 */
#include <desync.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/timerfd.h>
#endif

#define TICK_MS 40

/* ------------------------------------------------------ the word index */

struct word_index {
    long words;     /* words counted so far */
    int documents;  /* documents counted so far */
    int backend_id; /* answer of the last lookup */
};

static desync_future_t *count_words(void *data, void *arg) {
    struct word_index *ix = data;
    const char *text = arg;
    long n = 0;
    int in_word = 0;
    for (const char *c = text; *c; c++) {
        int letter = *c != ' ' && *c != '\n' && *c != '\t';
        n += letter && !in_word;
        in_word = letter;
    }
    ix->words += n;
    ix->documents++;
    return desync_future_ready((void *)(intptr_t)n);
}

/* The slow backend: answers a lookup after a while, on its own thread. */
struct backend_call {
    desync_promise_t *reply;
    pthread_t thread;
};

static struct backend_call g_call;

static void *backend_main(void *arg) {
    struct backend_call *c = arg;
    struct timespec ts = {0, 150 * 1000000L};
    nanosleep(&ts, NULL);
    desync_promise_complete(c->reply, (void *)(intptr_t)4711);
    return NULL;
}

/* Records the backend's answer in the index, still holding its queue. */
static void *store_answer(void *data, int status, void *value, void *arg) {
    (void)arg;
    struct word_index *ix = data;
    ix->backend_id = status == 0 ? (int)(intptr_t)value : -1;
    return value;
}

static desync_future_t *lookup(void *data, void *arg) {
    (void)data;
    (void)arg;
    desync_future_t *answer = NULL;
    g_call.reply = desync_promise_new(&answer);
    if (!g_call.reply || pthread_create(&g_call.thread, NULL, backend_main, &g_call) != 0) {
        fprintf(stderr, "cannot start the backend\n");
        exit(1);
    }
    return answer; /* the index's queue waits for it; no thread does */
}

static void read_index(void *data, void *arg) {
    *(struct word_index *)arg = *(struct word_index *)data;
}

/* ------------------------------------------------------- the event loop */

struct request {
    const char *label;
    desync_future_t *f;
    int fd;
};

int main(void) {
    atexit(desync_shutdown); /* at exit: finish background work, stop threads */
    static struct word_index index;
    desync_t *ix = desync_new(&index, NULL);
    if (!ix)
        return 1;

    static const char *docs[] = {
        "the quick brown fox jumps over the lazy dog",
        "futures complete exactly once",
        "no locks\nno blocked threads\n",
    };
    struct request req[5];
    int nreq = 0;
    req[nreq++] =
        (struct request){"doc 1", desync_future_desync(ix, count_words, (void *)docs[0]), -1};
    req[nreq++] = (struct request){"lookup", desync_future_desync(ix, lookup, NULL), -1};
    /* Queued behind the lookup: runs only once the backend has answered. */
    req[nreq++] =
        (struct request){"doc 2", desync_future_desync(ix, count_words, (void *)docs[1]), -1};
    desync_future_t *answer = NULL;
    desync_promise_t *echo = desync_promise_new(&answer);
    req[nreq++] = (struct request){"after", desync_after(ix, answer, store_answer, NULL), -1};
    req[nreq++] =
        (struct request){"doc 3", desync_future_desync(ix, count_words, (void *)docs[2]), -1};
    for (int i = 0; i < nreq; i++) {
        if (!req[i].f || (req[i].fd = desync_future_fd(req[i].f)) < 0) {
            fprintf(stderr, "cannot queue %s\n", req[i].label);
            return 1;
        }
    }
    printf("queued %d requests on the index\n", nreq);

    int timer = -1;
#if defined(__linux__)
    timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (timer >= 0) {
        struct itimerspec its = {{0, TICK_MS * 1000000L}, {0, TICK_MS * 1000000L}};
        timerfd_settime(timer, 0, &its, NULL);
    }
#endif

    int outstanding = nreq, ticks = 0, echoed = 0;
    while (outstanding > 0) {
        struct pollfd pfd[6];
        int map[6], n = 0;
        for (int i = 0; i < nreq; i++) {
            if (req[i].f) {
                pfd[n] = (struct pollfd){req[i].fd, POLLIN, 0};
                map[n++] = i;
            }
        }
        if (timer >= 0) {
            pfd[n] = (struct pollfd){timer, POLLIN, 0};
            map[n++] = -1;
        }
        int r = poll(pfd, (nfds_t)n, timer >= 0 ? 5000 : TICK_MS);
        if (r < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        if (r == 0 && timer >= 0) {
            fprintf(stderr, "nothing happened for 5 s\n");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            if (!(pfd[k].revents & POLLIN))
                continue;
            if (map[k] < 0) {
                uint64_t expirations;
                if (read(timer, &expirations, sizeof expirations) > 0)
                    ticks++;
                if (ticks <= 3)
                    printf("tick %d: %d request(s) outstanding\n", ticks, outstanding);
                continue;
            }
            struct request *q = &req[map[k]];
            void *v = NULL;
            int rc = desync_future_poll(q->f, &v, NULL);
            if (rc == DESYNC_EAGAIN)
                continue; /* cannot happen: the fd is readable only once f is complete */
            if (rc != 0)
                printf("%s: %s\n", q->label, desync_strerror(rc));
            else if (strcmp(q->label, "lookup") == 0)
                printf("%s: backend answered %d\n", q->label, (int)(intptr_t)v);
            else if (strcmp(q->label, "after") == 0)
                printf("%s: index stored backend id %d\n", q->label, (int)(intptr_t)v);
            else
                printf("%s: %d words\n", q->label, (int)(intptr_t)v);
            if (strcmp(q->label, "lookup") == 0 && !echoed) {
                /* Feed the answer to the waiting after-job. */
                desync_promise_complete(echo, v);
                echoed = 1;
            }
            desync_future_free(q->f); /* also closes its fd */
            q->f = NULL;
            outstanding--;
        }
    }
    if (timer >= 0)
        close(timer);
    pthread_join(g_call.thread, NULL);

    struct word_index seen;
    desync_sync(ix, read_index, &seen);
    printf("index: %ld words in %d documents, backend id %d\n", seen.words, seen.documents,
           seen.backend_id);
    desync_release(ix);
    return 0;
}
