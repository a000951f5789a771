/*
 * Promises and reading a future: poll and its wakers, wait_for and its
 * timeout, the file descriptor, then-callbacks, cancellation, and every
 * future call given bad input.
 * See test_future.h for how waits are bounded.
 */
#include <desync.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "test_future.h"

TEST(future_poll_waker) {
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p && f);
    struct wake_count a = {0}, b = {0}, c = {0};
    desync_waker_t wa = {count_wake, &a}, wb = {count_wake, &b}, wc = {count_wake, &c};
    void *v = IV(-1);
    CHECK_EQ(desync_future_poll(f, &v, &wa), DESYNC_EAGAIN);
    CHECK_EQ(VI(v), -1); /* untouched while pending */
    CHECK_EQ(desync_future_poll(f, &v, &wb), DESYNC_EAGAIN); /* replaces wa */
    CHECK_EQ(atomic_load(&a.n), 0);
    CHECK_EQ(atomic_load(&b.n), 0);
    CHECK_EQ(desync_promise_complete(p, IV(7)), 0);
    CHECK_EQ(atomic_load(&a.n), 0); /* replaced: never called */
    CHECK_EQ(atomic_load(&b.n), 1); /* exactly once */
    CHECK_EQ(desync_future_poll(f, &v, &wc), 0);
    CHECK_EQ(VI(v), 7);
    CHECK_EQ(desync_future_poll(f, NULL, NULL), 0);
    CHECK_EQ(atomic_load(&b.n), 1);
    CHECK_EQ(atomic_load(&c.n), 0); /* complete already: no waker arranged */
    desync_future_free(f);

    /* A NULL waker replaces the old one too. */
    p = desync_promise_new(&f);
    CHECK(p);
    CHECK_EQ(desync_future_poll(f, NULL, &wa), DESYNC_EAGAIN);
    CHECK_EQ(desync_future_poll(f, NULL, NULL), DESYNC_EAGAIN);
    CHECK_EQ(desync_promise_complete(p, IV(8)), 0);
    CHECK_EQ(atomic_load(&a.n), 0);
    CHECK_EQ(desync_future_poll(f, &v, NULL), 0);
    CHECK_EQ(VI(v), 8);
    desync_future_free(f);

    /* Completed by another thread, on a queue-bound future. */
    int val = 5;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    struct blocker bl = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
    desync_future_t *fq = desync_future_desync(d, ready_int, NULL);
    CHECK(fq);
    struct wake_count q = {0};
    desync_waker_t wq = {count_wake, &q};
    CHECK_EQ(desync_future_poll(fq, &v, &wq), DESYNC_EAGAIN);
    atomic_store(&bl.go, 1);
    CHECK(test_wait_count(&q.n, 1, LONG_MS));
    CHECK_EQ(desync_future_poll(fq, &v, NULL), 0);
    CHECK_EQ(VI(v), 5);
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&q.n), 1);
    desync_future_free(fq);
    desync_release(d);
    return 0;
}

TEST(future_wait_for_timeout) {
    /* A promise. */
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    void *v = IV(-1);
    CHECK_EQ(desync_future_wait_for(f, 20 * 1000000ull, &v), DESYNC_ETIMEDOUT);
    CHECK_EQ(VI(v), -1);
    CHECK_EQ(desync_future_wait_for(f, 0, &v), DESYNC_ETIMEDOUT);
    struct completer c;
    CHECK(completer_start(&c, p, IV(3), 20, 0));
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 3);
    CHECK_EQ(desync_future_wait_for(f, 0, &v), 0); /* complete: no wait at all */
    completer_join(&c);
    desync_future_free(f);

    /* A queue-bound future behind a busy job. */
    int val = 9;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    struct blocker bl = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
    /* On a worker: a waiter that found the queue unclaimed would run the
     * blocker itself. */
    CHECK(test_wait_flag(&bl.started, LONG_MS));
    desync_future_t *fq = desync_future_desync(d, ready_int, NULL);
    CHECK(fq);
    CHECK_EQ(desync_future_wait_for(fq, 20 * 1000000ull, &v), DESYNC_ETIMEDOUT);
    atomic_store(&bl.go, 1);
    CHECK_EQ(desync_future_wait_for(fq, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 9);
    desync_future_free(fq);

    /* future_sync behind a busy job: a timed-out wait must not strand the
     * job (the next wait runs it here). */
    struct blocker bl2 = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl2), 0);
    CHECK(test_wait_flag(&bl2.started, LONG_MS));
    struct sync_probe pr = {0};
    desync_future_t *fs = desync_future_sync(d, probe_ready_int, &pr);
    CHECK(fs);
    CHECK_EQ(desync_future_wait_for(fs, 20 * 1000000ull, &v), DESYNC_ETIMEDOUT);
    atomic_store(&bl2.go, 1);
    CHECK(test_wait_flag(&bl2.finished, LONG_MS));
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&pr.ran), 0); /* nobody waits: it does not run */
    CHECK_EQ(desync_future_wait_for(fs, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 9);
    CHECK_EQ(atomic_load(&pr.ran), 1);
    CHECK(pthread_equal(pr.thread, pthread_self()));
    desync_future_free(fs);
    desync_release(d);

    /* 0 threads: the waiter runs the job, which awaits a promise. */
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    int val0 = 0;
    desync_t *d0 = desync_new_on(s, &val0, NULL);
    CHECK(d0);
    desync_future_t *pf = NULL;
    desync_promise_t *p0 = desync_promise_new(&pf);
    CHECK(p0);
    desync_future_t *f0 = desync_future_desync(d0, return_arg_future, pf);
    CHECK(f0);
    CHECK_EQ(desync_future_wait_for(f0, 20 * 1000000ull, &v), DESYNC_ETIMEDOUT);
    CHECK(completer_start(&c, p0, IV(11), 20, 0));
    CHECK_EQ(desync_future_wait_for(f0, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 11);
    completer_join(&c);
    desync_future_free(f0);
    desync_release(d0);
    desync_scheduler_free(s);
    return 0;
}

static int fd_readable(int fd, int timeout_ms) {
    struct pollfd pfd = {fd, POLLIN, 0};
    int r;
    do {
        r = poll(&pfd, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r == 1 && (pfd.revents & POLLIN);
}

TEST(future_fd) {
    /* Pending, then completed by another thread. */
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    int fd = desync_future_fd(f);
    CHECK(fd >= 0);
    CHECK_EQ(desync_future_fd(f), fd); /* one descriptor per future */
    CHECK(!fd_readable(fd, 0));
    struct completer c;
    CHECK(completer_start(&c, p, IV(1), 20, 0));
    CHECK(fd_readable(fd, (int)LONG_MS));
    void *v = NULL;
    CHECK_EQ(desync_future_poll(f, &v, NULL), 0);
    CHECK_EQ(VI(v), 1);
    CHECK(fd_readable(fd, 0)); /* stays readable */
    completer_join(&c);
    desync_future_free(f);
    /* Both ends are gone: the descriptor was closed (no other thread of this
     * process opens descriptors meanwhile). */
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);

    /* Already complete: readable at once. */
    desync_future_t *r = desync_future_ready(IV(2));
    CHECK(r);
    int rfd = desync_future_fd(r);
    CHECK(rfd >= 0);
    CHECK(fd_readable(rfd, 0));
    desync_future_free(r);

    /* Completed before the descriptor was asked for. */
    p = desync_promise_new(&f);
    CHECK(p);
    CHECK_EQ(desync_promise_complete(p, IV(3)), 0);
    fd = desync_future_fd(f);
    CHECK(fd >= 0);
    CHECK(fd_readable(fd, 0));
    desync_future_free(f);

    /* A queue-bound future. */
    int val = 4;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    struct blocker bl = {0};
    CHECK_EQ(desync_desync(d, blocker_job, &bl), 0);
    desync_future_t *fq = desync_future_desync(d, ready_int, NULL);
    CHECK(fq);
    fd = desync_future_fd(fq);
    CHECK(fd >= 0);
    CHECK(!fd_readable(fd, (int)SHORT_MS));
    atomic_store(&bl.go, 1);
    CHECK(fd_readable(fd, (int)LONG_MS));
    CHECK_EQ(desync_future_wait_for(fq, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 4);
    desync_future_free(fq);
    desync_release(d);
    return 0;
}

/* Records a then-callback. */
struct then_rec {
    atomic_int calls;
    int status;
    void *value;
    pthread_t thread;
};

static void then_record(int status, void *value, void *arg) {
    struct then_rec *r = arg;
    r->status = status;
    r->value = value;
    r->thread = pthread_self();
    atomic_fetch_add(&r->calls, 1);
}

TEST(future_then) {
    /* Already complete: runs at once, on this thread. */
    struct then_rec r1 = {0};
    desync_future_t *f = desync_future_ready(IV(5));
    CHECK(f);
    CHECK_EQ(desync_future_then(f, then_record, &r1), 0);
    CHECK_EQ(atomic_load(&r1.calls), 1);
    CHECK_EQ(r1.status, 0);
    CHECK_EQ(VI(r1.value), 5);
    CHECK(pthread_equal(r1.thread, pthread_self()));

    /* Pending: runs once on completion, on the completing thread. */
    struct then_rec r2 = {0};
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    CHECK_EQ(desync_future_then(f, then_record, &r2), 0);
    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&r2.calls), 0);
    struct completer c;
    CHECK(completer_start(&c, p, IV(6), 0, 0));
    completer_join(&c);
    CHECK_EQ(atomic_load(&r2.calls), 1);
    CHECK_EQ(r2.status, 0);
    CHECK_EQ(VI(r2.value), 6);
    CHECK(pthread_equal(r2.thread, c.self));

    /* Cancelled. */
    struct then_rec r3 = {0};
    p = desync_promise_new(&f);
    CHECK(p);
    CHECK_EQ(desync_future_then(f, then_record, &r3), 0);
    desync_promise_cancel(p);
    CHECK_EQ(atomic_load(&r3.calls), 1);
    CHECK_EQ(r3.status, DESYNC_ECANCELED);

    /* A future_desync future. */
    int val = 8;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    struct then_rec r4 = {0};
    f = desync_future_desync(d, ready_int, NULL);
    CHECK(f);
    CHECK_EQ(desync_future_then(f, then_record, &r4), 0);
    CHECK(test_wait_count(&r4.calls, 1, LONG_MS));
    CHECK_EQ(VI(r4.value), 8);

    /* A future_sync future: nobody waits on it any more, so its job runs
     * on the queue. */
    struct then_rec r5 = {0};
    struct sync_probe pr = {0};
    f = desync_future_sync(d, probe_ready_int, &pr);
    CHECK(f);
    CHECK_EQ(desync_future_then(f, then_record, &r5), 0);
    CHECK(test_wait_count(&r5.calls, 1, LONG_MS));
    CHECK_EQ(VI(r5.value), 8);
    CHECK_EQ(atomic_load(&pr.ran), 1);

    test_sleep_ms(SHORT_MS);
    CHECK_EQ(atomic_load(&r2.calls), 1);
    CHECK_EQ(atomic_load(&r4.calls), 1);
    CHECK_EQ(atomic_load(&r5.calls), 1);
    desync_release(d);
    return 0;
}

static desync_future_t *return_cancelled(void *data, void *arg) {
    (void)data;
    (void)arg;
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    desync_promise_cancel(p);
    return f;
}

TEST(future_promise_cancel) {
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    struct wake_count w = {0};
    desync_waker_t wk = {count_wake, &w};
    CHECK_EQ(desync_future_poll(f, NULL, &wk), DESYNC_EAGAIN);
    CHECK_EQ(desync_promise_cancel(p), 0);
    CHECK_EQ(atomic_load(&w.n), 1);
    void *v = IV(-1);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_ECANCELED);
    CHECK(v == NULL);
    CHECK_EQ(desync_future_wait(f, NULL), DESYNC_ECANCELED);
    CHECK_EQ(desync_future_poll(f, &v, NULL), DESYNC_ECANCELED);
    desync_future_free(f);

    /* Cancelled from another thread while this one waits. */
    p = desync_promise_new(&f);
    CHECK(p);
    struct completer c;
    CHECK(completer_start(&c, p, NULL, 20, 1));
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_ECANCELED);
    completer_join(&c);
    desync_future_free(f);

    /* An async job returning a cancelled future: so is its future. */
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    f = desync_future_desync(d, return_cancelled, NULL);
    CHECK(f);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), DESYNC_ECANCELED);
    desync_future_free(f);

    /* after: the job sees the cancellation and its future has its value. */
    struct after_seen seen = {1, IV(-1)};
    desync_future_t *pf = NULL;
    p = desync_promise_new(&pf);
    CHECK(p);
    f = desync_after(d, pf, record_after, &seen);
    CHECK(f);
    desync_promise_cancel(p);
    CHECK_EQ(desync_future_wait_for(f, LONG_NS, &v), 0);
    CHECK_EQ(VI(v), 77);
    CHECK_EQ(seen.status, DESYNC_ECANCELED);
    CHECK(seen.value == NULL);
    desync_future_free(f);
    /* The queue goes on. */
    int out = -1;
    CHECK_EQ(desync_sync(d, get_int, &out), 0);
    desync_release(d);
    return 0;
}

static desync_future_t *set_flag_queue_async(void *arg) { return set_flag_async(NULL, arg); }

static void *queue_after_noop(int status, void *value, void *arg) {
    (void)status;
    (void)arg;
    return value;
}

static void then_noop(int status, void *value, void *arg) {
    (void)status;
    (void)value;
    (void)arg;
}

TEST(future_bad_input) {
    int val = 0;
    desync_t *d = desync_new(&val, NULL);
    CHECK(d);
    desync_queue_t *q = desync_get_queue(d);
    atomic_int flag = 0;

    CHECK(desync_future_desync(NULL, set_flag_async, &flag) == NULL);
    CHECK(desync_future_desync(d, NULL, NULL) == NULL);
    CHECK(desync_future_sync(NULL, set_flag_async, &flag) == NULL);
    CHECK(desync_future_sync(d, NULL, NULL) == NULL);
    CHECK(desync_queue_future_desync(NULL, set_flag_queue_async, &flag) == NULL);
    CHECK(desync_queue_future_desync(q, NULL, NULL) == NULL);
    CHECK(desync_queue_future_sync(NULL, set_flag_queue_async, &flag) == NULL);
    CHECK(desync_queue_future_sync(q, NULL, NULL) == NULL);
    CHECK(desync_after(d, NULL, after_noop, NULL) == NULL);
    CHECK(desync_queue_after(q, NULL, queue_after_noop, NULL) == NULL);
    /* after takes ownership of `after` even on failure (ASan: no leak). */
    desync_future_t *pf = NULL;
    desync_promise_t *p = desync_promise_new(&pf);
    CHECK(p);
    CHECK(desync_after(NULL, pf, after_noop, NULL) == NULL);
    CHECK_EQ(desync_promise_complete(p, NULL), 0);
    p = desync_promise_new(&pf);
    CHECK(p);
    CHECK(desync_after(d, pf, NULL, NULL) == NULL);
    CHECK_EQ(desync_promise_cancel(p), 0);
    CHECK(desync_queue_after(NULL, desync_future_ready(NULL), queue_after_noop, NULL) == NULL);
    CHECK(desync_queue_after(q, desync_future_ready(NULL), NULL, NULL) == NULL);
    CHECK(desync_queue_suspend(NULL) == NULL);
    desync_resumer_resume(NULL);

    CHECK(desync_promise_new(NULL) == NULL);
    CHECK_EQ(desync_promise_complete(NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_promise_cancel(NULL), DESYNC_EINVAL);
    void *v = NULL;
    CHECK_EQ(desync_future_wait(NULL, &v), DESYNC_EINVAL);
    CHECK_EQ(desync_future_wait_for(NULL, 1, &v), DESYNC_EINVAL);
    CHECK_EQ(desync_future_poll(NULL, &v, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_future_then(NULL, then_noop, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_future_fd(NULL), DESYNC_EINVAL);
    desync_future_detach(NULL);
    desync_future_free(NULL);

    /* then with a NULL callback does not consume the future. */
    desync_future_t *f = desync_future_ready(IV(3));
    CHECK(f);
    CHECK_EQ(desync_future_then(f, NULL, NULL), DESYNC_EINVAL);
    CHECK_EQ(desync_future_wait(f, NULL), 0); /* value may be NULL */
    CHECK_EQ(desync_future_wait(f, &v), 0);
    CHECK_EQ(VI(v), 3);
    desync_future_free(f);

    /* Nothing was queued by the failed calls. */
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(atomic_load(&flag), 0);
    desync_release(d);
    return 0;
}
