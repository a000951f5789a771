/*
 * Misused handles, as a new user would misuse them, and calls that may run
 * concurrently on one handle.
 *
 * Where the state is still alive the library checks cheaply: an extra
 * channel close is ignored, a send with no open sending handle gets
 * DESYNC_EPIPE, a second complete or cancel of a promise gets DESYNC_EINVAL,
 * a second free of a future that its producer still holds is ignored.
 *
 * Once the memory is gone, a use is undefined; the NOPOOL build (`make test
 * NOPOOL=1 SAN=address,undefined`, -DDESYNC_NOPOOL: no block pool, no job
 * segments, freed handles poisoned) lets AddressSanitizer see it. Those
 * tests run the misuse in a forked child and check that AddressSanitizer
 * reported it; they skip in builds that cannot see it (no ASan, or the pools
 * hide the memory).
 */
#include "desync.h"
#include "test.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The Makefile defines DESYNC_TEST_NOPOOL when the library is built with
 * NOPOOL=1. */
#ifdef DESYNC_TEST_NOPOOL
#define TEST_NOPOOL 1
#else
#define TEST_NOPOOL 0
#endif

/* ------------------------------------------------------------ helpers */

/*
 * Runs misuse() in a forked child whose stderr goes to a temporary file.
 * 1 if the child died (a non-zero exit or a signal) after AddressSanitizer
 * reported `kind` ("heap-use-after-free", "double-free", ...); else prints
 * what happened and returns 0. A child that hangs is killed after 20 s.
 * The child starts the library's threads itself: this process has not used
 * the library, so the child inherits no half-started state.
 */
static int asan_reports(void (*misuse)(void), const char *kind) {
    char path[] = "/tmp/desync-misuse-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    unlink(path);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return 0;
    }
    if (pid == 0) {
        dup2(fd, 2);
        misuse();
        _exit(0); /* no report: the parent fails the test */
    }
    int status = 0;
    uint64_t end = test_now_ns() + 20 * SEC;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (test_now_ns() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "the misuse hung (killed)\n");
            close(fd);
            return 0;
        }
        test_sleep_ms(5);
    }
    static char report[1 << 16];
    ssize_t n = pread(fd, report, sizeof report - 1, 0);
    close(fd);
    report[n > 0 ? n : 0] = '\0';
    bool died = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
    if (died && strstr(report, "ERROR: AddressSanitizer") && strstr(report, kind))
        return 1;
    fprintf(stderr, "child %s %d, wanted an AddressSanitizer %s report; its stderr:\n%.2000s\n",
            WIFSIGNALED(status) ? "killed by signal" : "exited with",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), kind, report);
    return 0;
}

/* Skips unless AddressSanitizer can see the misuse: always needs ASan, and
 * for memory from the library's pools (futures, promises, job nodes) the
 * NOPOOL build. */
#define NEED_ASAN(pooled)                                                                 \
    do {                                                                                  \
        if (!TEST_ASAN)                                                                   \
            TEST_SKIP("needs AddressSanitizer: make test SAN=address,undefined NOPOOL=1"); \
        if ((pooled) && !TEST_NOPOOL)                                                     \
            TEST_SKIP("pooled memory: needs make test SAN=address,undefined NOPOOL=1");    \
    } while (0)

/* ----------------------------------------------------- checked misuses */

/* Closing more handles than exist (one from new plus one per retain) is
 * ignored while the reader exists, and so is a retain with no handle open
 * (NULL): the reader still gets every item, then EOF, and the channel is
 * freed with the reader. (Before: the extra close freed the channel under
 * the reader.) */
TEST(misuse_channel_extra_close_ignored) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(4, &rx);
    CHECK(c);
    CHECK(desync_channel_retain(c) == c);
    CHECK_EQ(desync_channel_send(c, IV(1)), 0);
    desync_channel_close(c);
    CHECK_EQ(desync_channel_send(c, IV(2)), 0); /* one handle is still open */
    desync_channel_close(c);
    desync_channel_close(c); /* no handle left: ignored */
    desync_channel_close(c);
    CHECK(desync_channel_retain(c) == NULL); /* no open handle to copy */
    desync_channel_close(c);
    void *v = NULL;
    CHECK_EQ(desync_stream_next_for(rx, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 1);
    CHECK_EQ(desync_stream_next_for(rx, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 2);
    CHECK_EQ(desync_stream_next_for(rx, LONG_NS, &v), DESYNC_EOF);
    CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EOF);
    desync_stream_free(rx);

    /* A rendezvous channel whose reader waits in a next_future. */
    c = desync_channel_new(0, &rx);
    CHECK(c);
    desync_future_t *f = desync_stream_next_future(rx);
    CHECK(f);
    desync_channel_close(c);
    desync_channel_close(c);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_EOF);
    desync_future_free(f);
    desync_stream_free(rx);
    return 0;
}

/* Once every sending handle is closed, sends get DESYNC_EPIPE and the
 * reader never sees their items (the caller keeps them). (Before: the send
 * returned 0 and the reader got the item after the end.) */
TEST(misuse_channel_send_after_close_epipe) {
    for (size_t cap = 0; cap <= 4; cap += 4) {
        desync_stream_t *rx;
        desync_channel_t *c = desync_channel_new(cap, &rx);
        CHECK(c);
        desync_stream_set_item_free(rx, heap_free);
        desync_channel_close(c);
        void *item = heap_item(7);
        CHECK_EQ(desync_channel_send(c, item), DESYNC_EPIPE);
        CHECK_EQ(desync_channel_try_send(c, item), DESYNC_EPIPE);
        desync_future_t *f = desync_channel_send_future(c, item);
        CHECK(f);
        CHECK_EQ(desync_future_wait_for(f, LONG_NS, NULL), DESYNC_ECANCELED);
        desync_future_free(f);
        void *v = NULL;
        CHECK_EQ(desync_stream_try_next(rx, &v), DESYNC_EOF);
        CHECK_EQ(desync_stream_next_for(rx, LONG_NS, &v), DESYNC_EOF);
        desync_stream_free(rx);
        CHECK_EQ(atomic_load(&g_freed), 0); /* the channel never took it */
        free(item);
    }
    return 0;
}

/* A promise is consumed once: a second complete or cancel, while the future
 * is alive, returns DESYNC_EINVAL and changes nothing. (Before: it returned
 * 0 and dropped the future's last reference, so a wait then hung on freed
 * memory.) */
TEST(misuse_promise_complete_twice_einval) {
    for (int first = 0; first < 2; first++) {
        for (int second = 0; second < 2; second++) {
            desync_future_t *f = NULL;
            desync_promise_t *p = desync_promise_new(&f);
            CHECK(p);
            CHECK_EQ(first ? desync_promise_cancel(p) : desync_promise_complete(p, IV(1)), 0);
            CHECK_EQ(second ? desync_promise_cancel(p) : desync_promise_complete(p, IV(2)),
                     DESYNC_EINVAL);
            CHECK_EQ(desync_promise_complete(p, IV(3)), DESYNC_EINVAL);
            void *v = NULL;
            CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), first ? DESYNC_ECANCELED : 0);
            CHECK(v == (first ? NULL : IV(1)));
            CHECK_EQ(desync_future_poll(f, &v, NULL), first ? DESYNC_ECANCELED : 0);
            desync_future_free(f);
        }
    }
    return 0;
}

/* Two threads race to complete one promise: exactly one wins. */
struct race {
    desync_promise_t *p;
    int v;
    int rc;
};

static void *race_complete(void *a) {
    struct race *r = a;
    gate_wait();
    r->rc = r->v ? desync_promise_complete(r->p, IV(r->v)) : desync_promise_cancel(r->p);
    return NULL;
}

TEST(misuse_promise_complete_race_one_wins) {
    for (int i = 0; i < TEST_SCALED(2000); i++) {
        desync_future_t *f = NULL;
        desync_promise_t *p = desync_promise_new(&f);
        CHECK(p);
        struct race r[3] = {{p, 1, 9}, {p, 2, 9}, {p, 0, 9}};
        pthread_t th[3];
        atomic_store(&g_gate, 0);
        for (int k = 0; k < 3; k++)
            CHECK_EQ(pthread_create(&th[k], NULL, race_complete, &r[k]), 0);
        atomic_store(&g_gate, 1);
        test_join_threads(th, 3);
        int wins = 0, winner = -1;
        for (int k = 0; k < 3; k++) {
            if (r[k].rc == 0) {
                wins++;
                winner = k;
            } else {
                CHECK_EQ(r[k].rc, DESYNC_EINVAL);
            }
        }
        CHECK_EQ(wins, 1);
        void *v = NULL;
        int st = desync_future_wait_for(f, LONG_NS, &v);
        CHECK_EQ(st, r[winner].v ? 0 : DESYNC_ECANCELED);
        CHECK(v == (r[winner].v ? IV(r[winner].v) : NULL));
        desync_future_free(f);
    }
    return 0;
}

struct then_count {
    atomic_int calls;
    int status;
    void *value;
};

static void then_count_cb(int status, void *value, void *arg) {
    struct then_count *t = arg;
    t->status = status;
    t->value = value;
    atomic_fetch_add(&t->calls, 1);
}

/* A second free (or detach) of a future that its producer still holds is
 * ignored. (Before: it dropped the producer's reference, the memory went
 * back to the pool while the promise still pointed at it, and the next
 * future came out at the same address: two live futures at one address.) */
TEST(misuse_future_free_twice_ignored) {
    for (int k = 0; k < 3; k++) {
        struct then_count t = {0};
        desync_future_t *f = NULL;
        desync_promise_t *p = desync_promise_new(&f);
        CHECK(p);
        if (k == 0) {
            desync_future_free(f);
            desync_future_free(f);
        } else if (k == 1) {
            desync_future_detach(f);
            desync_future_free(f);
        } else {
            CHECK_EQ(desync_future_then(f, then_count_cb, &t), 0);
            desync_future_detach(f);
            CHECK_EQ(atomic_load(&t.calls), 0);
        }
        desync_future_t *g = desync_future_ready(IV(9));
        CHECK(g);
        CHECK(g != f); /* f is still alive: its memory is not handed out */
        CHECK_EQ(desync_promise_complete(p, IV(1)), 0);
        CHECK_EQ(atomic_load(&t.calls), k == 2);
        void *v = NULL;
        CHECK_EQ(desync_future_wait_for(g, LONG_NS, &v), 0);
        CHECK(v == IV(9));
        desync_future_free(g);
    }
    return 0;
}

/* ------------------------------------- misuses AddressSanitizer reports */

static void future_double_free(void) {
    desync_future_t *f = desync_future_ready(IV(1));
    desync_future_free(f);
    desync_future_free(f);
}

/* A future freed twice once its memory is gone. */
TEST(misuse_future_double_free_reported) {
    NEED_ASAN(true);
    CHECK(asan_reports(future_double_free, "heap-use-after-free"));
    return 0;
}

static void future_stale_handle(void) {
    desync_future_t *f = desync_future_ready(IV(1));
    desync_future_free(f);
    desync_future_t *g = desync_future_ready(IV(2)); /* with pools: f's memory */
    void *v;
    desync_future_wait(f, &v); /* with pools: g's value */
    desync_future_free(f);
    desync_future_free(g);
}

/* A stale future handle used after its memory could have been reused. */
TEST(misuse_future_stale_handle_reported) {
    NEED_ASAN(true);
    CHECK(asan_reports(future_stale_handle, "heap-use-after-free"));
    return 0;
}

static void promise_completed_after_gone(void) {
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    desync_future_free(f);
    desync_promise_complete(p, IV(1)); /* the last reference: f is gone */
    desync_promise_complete(p, IV(2));
}

/* A promise completed again after its future was freed. */
TEST(misuse_promise_complete_after_gone_reported) {
    NEED_ASAN(true);
    CHECK(asan_reports(promise_completed_after_gone, "heap-use-after-free"));
    return 0;
}

static void channel_closed_after_gone(void) {
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(2, &rx);
    desync_stream_free(rx);
    desync_channel_close(c); /* the last reference: c is gone */
    desync_channel_close(c);
}

/* A channel closed again after both ends are gone. */
TEST(misuse_channel_close_after_gone_reported) {
    NEED_ASAN(false);
    CHECK(asan_reports(channel_closed_after_gone, "heap-use-after-free"));
    return 0;
}

static void stream_double_free(void) {
    void *items[2] = {IV(1), IV(2)};
    desync_stream_t *s = desync_stream_from_array(items, 2);
    desync_stream_free(s);
    desync_stream_free(s);
}

/* A stream freed twice. */
TEST(misuse_stream_double_free_reported) {
    NEED_ASAN(false);
    CHECK(asan_reports(stream_double_free, "heap-use-after-free"));
    return 0;
}

static void desync_after_release(void) {
    static int data;
    desync_t *d = desync_new(&data, NULL);
    desync_sync(d, noop_job, NULL);
    desync_release(d);
    desync_desync(d, count_job, NULL);
}

/* desync_desync after the last release. (Without ASan: a crash some
 * seconds later, on a pool thread.) */
TEST(misuse_desync_after_release_reported) {
    NEED_ASAN(false);
    CHECK(asan_reports(desync_after_release, "heap-use-after-free"));
    return 0;
}

static void release_twice(void) {
    static int data;
    desync_t *d = desync_new(&data, NULL);
    desync_release(d);
    desync_release(d);
}

/* An object released once more than it was retained. */
TEST(misuse_release_twice_reported) {
    NEED_ASAN(false);
    CHECK(asan_reports(release_twice, "heap-use-after-free"));
    return 0;
}

/* ------------------------------------- concurrent calls on one handle */

enum { WAITERS = 4 };

struct waiter {
    desync_future_t *f;
    int mode; /* 0 wait, 1 wait_for, 2 poll with a waker, then wait */
    int rc;
    void *v;
};

static void *wait_main(void *a) {
    struct waiter *w = a;
    gate_wait();
    if (w->mode == 2) {
        void *v = NULL;
        int r = desync_future_poll(w->f, &v, NULL);
        if (r != DESYNC_EAGAIN) {
            w->rc = r;
            w->v = v;
            return NULL;
        }
    }
    w->rc = w->mode == 1 ? desync_future_wait_for(w->f, LONG_NS, &w->v)
                         : desync_future_wait(w->f, &w->v);
    return NULL;
}

static desync_future_t *ready_42(void *arg) {
    atomic_fetch_add((atomic_int *)arg, 1);
    return desync_future_ready(IV(42));
}

/* wait, wait_for and poll may run on several threads at once on one future
 * (each gets the result): a promise's future, and queue-bound futures on a
 * scheduler with no threads, which the waiters drive themselves. */
TEST(future_wait_concurrent_same_handle) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    desync_queue_t *q = desync_queue_new(s);
    CHECK(q);
    for (int kind = 0; kind < 3; kind++) {
        for (int round = 0; round < TEST_SCALED(200); round++) {
            atomic_int ran = 0;
            desync_future_t *f = NULL;
            desync_promise_t *p = NULL;
            if (kind == 0)
                p = desync_promise_new(&f);
            else if (kind == 1)
                f = desync_queue_future_desync(q, ready_42, &ran);
            else
                f = desync_queue_future_sync(q, ready_42, &ran);
            CHECK(f);
            struct waiter w[WAITERS];
            pthread_t th[WAITERS];
            atomic_store(&g_gate, 0);
            for (int i = 0; i < WAITERS; i++) {
                w[i] = (struct waiter){f, i % 3, 99, NULL};
                CHECK_EQ(pthread_create(&th[i], NULL, wait_main, &w[i]), 0);
            }
            atomic_store(&g_gate, 1);
            if (p)
                CHECK_EQ(desync_promise_complete(p, IV(42)), 0);
            test_join_threads(th, WAITERS);
            for (int i = 0; i < WAITERS; i++) {
                CHECK_EQ(w[i].rc, 0);
                CHECK(w[i].v == IV(42));
            }
            if (kind)
                CHECK_EQ(atomic_load(&ran), 1);
            desync_future_free(f);
        }
    }
    desync_queue_release(q);
    desync_scheduler_free(s);
    return 0;
}

struct same_sender {
    desync_channel_t *c;
    int from, to;
    int rc;
};

static void *same_send_main(void *a) {
    struct same_sender *s = a;
    gate_wait();
    s->rc = 0;
    for (int i = s->from; i < s->to && s->rc == 0; i++) {
        if (i % 2) {
            s->rc = desync_channel_send(s->c, IV(i));
            continue;
        }
        /* try_send until accepted (the reader keeps taking items). */
        while ((s->rc = desync_channel_try_send(s->c, IV(i))) == DESYNC_EAGAIN)
            sched_yield();
    }
    return NULL;
}

/* send and try_send may run on several threads at once on one handle
 * (no retain): every item arrives once, each thread's in order. */
TEST(channel_send_concurrent_same_handle) {
    enum { SENDERS = 3, PER = TEST_SCALED(3000) };
    desync_stream_t *rx;
    desync_channel_t *c = desync_channel_new(8, &rx);
    CHECK(c);
    struct same_sender s[SENDERS];
    pthread_t th[SENDERS];
    atomic_store(&g_gate, 0);
    for (int i = 0; i < SENDERS; i++) {
        s[i] = (struct same_sender){c, i * PER, (i + 1) * PER, 99};
        CHECK_EQ(pthread_create(&th[i], NULL, same_send_main, &s[i]), 0);
    }
    atomic_store(&g_gate, 1);
    int last[SENDERS];
    for (int i = 0; i < SENDERS; i++)
        last[i] = -1;
    void *v;
    for (int got = 0; got < SENDERS * PER; got++) {
        CHECK_EQ(desync_stream_next_for(rx, LONG_NS, &v), 0);
        int x = VI(v), who = x / PER;
        CHECK(who >= 0 && who < SENDERS);
        CHECK(x > last[who]);
        last[who] = x;
    }
    test_join_threads(th, SENDERS);
    for (int i = 0; i < SENDERS; i++)
        CHECK_EQ(s[i].rc, 0);
    desync_channel_close(c);
    CHECK_EQ(desync_stream_next_for(rx, LONG_NS, &v), DESYNC_EOF);
    desync_stream_free(rx);
    return 0;
}
