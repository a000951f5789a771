/*
 * Races around the completion of a future, each repeated many times: a
 * timed-out waiter that the completer must no longer touch, a waker replaced
 * (or the future freed) while it completes, and a future_sync dropped just as
 * its queue reaches it.
 * Loops shrink 10x in sanitizer builds (-DDESYNC_TEST_SANITIZED).
 */
#include <desync.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "test.h"

/*
 * A waiter whose timed wait runs out just as another thread completes the
 * future must not be touched by the completer once wait_for has returned:
 * its record lives on the waiter's stack. After each timeout the waiter
 * fills the same stack area with zeros and checks, once the completer has
 * finished, that nothing wrote into it.
 */
struct race {
    desync_future_t *f;
    desync_promise_t *p;
    atomic_int round;     /* set by the waiter: round r may start */
    atomic_int completed; /* set by the completer: round r is complete */
    uint64_t delay_ns[1]; /* completer's delay for this round */
    atomic_int stop;
};

static struct race g_race;

static void *race_completer(void *arg) {
    (void)arg;
    int r = 0;
    for (;;) {
        while (atomic_load(&g_race.round) == r) {
            if (atomic_load(&g_race.stop))
                return NULL;
            sched_yield();
        }
        r = atomic_load(&g_race.round);
        test_spin_ns(g_race.delay_ns[0]);
        desync_promise_complete(g_race.p, IV(r));
        atomic_store(&g_race.completed, r);
    }
}

/* Zeros a stack area as deep as a wait_for call, waits for the completer
 * of round r, and returns how many words changed meanwhile. */
__attribute__((noinline)) static int stack_probe(int r) {
    volatile uint32_t buf[1024];
    for (int i = 0; i < 1024; i++)
        buf[i] = 0;
    uint64_t end = test_now_ns() + 5000000000ull;
    while (atomic_load(&g_race.completed) != r && test_now_ns() < end)
        sched_yield();
    int bad = 0;
    for (int i = 0; i < 1024; i++)
        bad += buf[i] != 0;
    return bad;
}

__attribute__((noinline)) static int timed_wait(desync_future_t *f, uint64_t ns, void **v) {
    return desync_future_wait_for(f, ns, v);
}

TEST(future_stress_wait_timeout_race) {
    int rounds = TEST_SCALED(20000);
    memset(&g_race, 0, sizeof g_race);
    /* How long does a wait_for that times out at once take? */
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    CHECK(p);
    uint64_t per = UINT64_MAX;
    for (int i = 0; i < 20; i++) {
        uint64_t t0 = test_now_ns();
        CHECK_EQ(desync_future_wait_for(f, 1, NULL), DESYNC_ETIMEDOUT);
        uint64_t t = test_now_ns() - t0;
        if (t < per)
            per = t;
    }
    if (per > 200000)
        per = 200000;
    desync_promise_complete(p, NULL);
    desync_future_free(f);

    pthread_t th;
    CHECK(pthread_create(&th, NULL, race_completer, NULL) == 0);
    uint32_t seed = 777;
    int timeouts = 0, corrupted = 0;
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, rounds, start); r++) {
        g_race.p = desync_promise_new(&g_race.f);
        CHECK(g_race.p);
        /* An fd makes completion write to it between taking the waiter list
         * and signalling the waiters. */
        if (r % 2)
            CHECK(desync_future_fd(g_race.f) >= 0);
        g_race.delay_ns[0] = test_rnd(&seed) % (2 * per + 1);
        atomic_store(&g_race.round, r);
        void *v = NULL;
        int rc = timed_wait(g_race.f, 1, &v);
        if (rc == DESYNC_ETIMEDOUT) {
            timeouts++;
            int bad = stack_probe(r);
            if (bad) {
                corrupted++;
                if (corrupted < 5)
                    fprintf(stderr, "round %d: %d stack words written after wait_for returned\n",
                            r, bad);
            }
        } else {
            CHECK_EQ(rc, 0);
            CHECK_EQ(VI(v), r);
        }
        CHECK_EQ(desync_future_wait_for(g_race.f, LONG_NS, &v), 0);
        CHECK_EQ(VI(v), r);
        /* The completer is done with this round before the future goes. */
        uint64_t end = test_now_ns() + LONG_NS;
        while (atomic_load(&g_race.completed) != r && test_now_ns() < end)
            sched_yield();
        CHECK_EQ(atomic_load(&g_race.completed), r);
        desync_future_free(g_race.f);
    }
    atomic_store(&g_race.stop, 1);
    pthread_join(th, NULL);
    if (corrupted)
        fprintf(stderr, "%d of %d timed-out waits were written to after returning\n", corrupted,
                timeouts);
    CHECK_EQ(corrupted, 0);
    return 0;
}

/*
 * "A later poll replaces the waker (the old one is then never called)": once
 * a later poll (or free) has returned, the waker's context may be gone. The
 * reader here marks the context dead right after that and counts calls that
 * arrive later.
 */
struct wctx {
    atomic_int dead;
    atomic_int calls;
    atomic_int late;
};

static void wctx_wake(void *ctx) {
    struct wctx *w = ctx;
    if (atomic_load(&w->dead))
        atomic_fetch_add(&w->late, 1);
    atomic_fetch_add(&w->calls, 1);
}

struct wrace {
    desync_promise_t *p;
    atomic_int round;
    atomic_int completed;
    uint64_t delay_ns;
    atomic_int stop;
};

static struct wrace g_wrace;

static void *wrace_completer(void *arg) {
    (void)arg;
    int r = 0;
    for (;;) {
        while (atomic_load(&g_wrace.round) == r) {
            if (atomic_load(&g_wrace.stop))
                return NULL;
            sched_yield();
        }
        r = atomic_load(&g_wrace.round);
        test_spin_ns(g_wrace.delay_ns);
        desync_promise_complete(g_wrace.p, IV(r));
        atomic_store(&g_wrace.completed, r);
    }
}

TEST(future_stress_replaced_waker_race) {
    int rounds = TEST_SCALED(20000);
    memset(&g_wrace, 0, sizeof g_wrace);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, wrace_completer, NULL) == 0);
    static struct wctx ctxs[2];
    int late = 0;
    uint32_t seed = 4242;
    uint64_t start = test_now_ns();
    for (int r = 1; test_rounds_left(r, rounds, start); r++) {
        desync_future_t *f = NULL;
        g_wrace.p = desync_promise_new(&f);
        CHECK(g_wrace.p);
        if (r % 2)
            CHECK(desync_future_fd(f) >= 0);
        struct wctx *w = &ctxs[r % 2];
        atomic_store(&w->dead, 0);
        atomic_store(&w->calls, 0);
        atomic_store(&w->late, 0);
        desync_waker_t wk = {wctx_wake, w};
        g_wrace.delay_ns = test_rnd(&seed) % 4000;
        CHECK_EQ(desync_future_poll(f, NULL, &wk), DESYNC_EAGAIN);
        atomic_store(&g_wrace.round, r);
        void *v = NULL;
        int rc;
        if (r % 4 < 2) {
            /* Poll again (with the same waker, as an executor re-polling a
             * task does) until complete; then the task may go. */
            uint64_t end = test_now_ns() + LONG_NS;
            while ((rc = desync_future_poll(f, &v, &wk)) == DESYNC_EAGAIN && test_now_ns() < end) {
            }
            CHECK_EQ(rc, 0);
            atomic_store(&w->dead, 1);
        } else {
            /* Drop the future while it may be completing. */
            test_spin_ns(test_rnd(&seed) % 4000);
            desync_future_free(f);
            f = NULL;
            atomic_store(&w->dead, 1);
        }
        uint64_t end = test_now_ns() + LONG_NS;
        while (atomic_load(&g_wrace.completed) != r && test_now_ns() < end)
            sched_yield();
        CHECK_EQ(atomic_load(&g_wrace.completed), r);
        CHECK(atomic_load(&w->calls) <= 1);
        late += atomic_load(&w->late);
        if (f)
            desync_future_free(f);
    }
    atomic_store(&g_wrace.stop, 1);
    pthread_join(th, NULL);
    if (late)
        fprintf(stderr, "%d of %d wakers were called after a later poll/free returned\n", late,
                rounds);
    CHECK_EQ(late, 0);
    return 0;
}

/*
 * A future_sync freed or detached just as its queue reaches it: the queue
 * must neither stall (a token parked in a future nobody will poll) nor run a
 * freed job. A job queued right before it stamps the moment the queue gets
 * there, and the handle is dropped a random few hundred ns later.
 */
struct drop_race {
    atomic_int reached;
    atomic_int ran;
};

static void mark_reached(void *data, void *arg) {
    (void)data;
    atomic_store(&((struct drop_race *)arg)->reached, 1);
}

static desync_future_t *mark_ran(void *data, void *arg) {
    (void)data;
    atomic_fetch_add(&((struct drop_race *)arg)->ran, 1);
    return NULL;
}

static desync_future_t *ready_null(void *data, void *arg) {
    (void)data;
    (void)arg;
    return desync_future_ready(NULL);
}

TEST(future_stress_sync_drop_race) {
    int rounds = TEST_SCALED(10000);
    desync_t *d = desync_new(NULL, NULL);
    CHECK(d);
    uint32_t seed = 99;
    int stalls = 0;
    uint64_t start = test_now_ns();
    for (int r = 0; test_rounds_left(r + 1, rounds, start) && stalls == 0; r++) {
        struct drop_race x;
        atomic_init(&x.reached, 0);
        atomic_init(&x.ran, 0);
        CHECK_EQ(desync_desync(d, mark_reached, &x), 0);
        desync_future_t *f = desync_future_sync(d, mark_ran, &x);
        CHECK(f);
        uint64_t end = test_now_ns() + LONG_NS;
        while (!atomic_load(&x.reached) && test_now_ns() < end) {
        }
        test_spin_ns(test_rnd(&seed) % 1500);
        int detach = r % 2;
        if (detach)
            desync_future_detach(f);
        else
            desync_future_free(f);
        /* The queue goes on past it. */
        desync_future_t *g = desync_future_desync(d, ready_null, NULL);
        CHECK(g);
        int rc = desync_future_wait_for(g, 5000000000ull, NULL);
        desync_future_free(g);
        if (rc != 0) {
            fprintf(stderr, "round %d (%s): the queue stalled behind a dropped future_sync\n", r,
                    detach ? "detach" : "free");
            stalls++;
            break;
        }
        /* Detached: runs on the queue. Freed: nobody drives it, so it was
         * cancelled whenever the queue got there. */
        CHECK_EQ(atomic_load(&x.ran), detach ? 1 : 0);
    }
    CHECK_EQ(stalls, 0);
    desync_release(d);
    return 0;
}
