/*
 * Schedulers: thread limits, spawning and despawning threads, fairness
 * between queues, idle threads (they sleep, and the default scheduler's go
 * away), scheduler_free, and a process ending with threads still alive.
 * Every wait is bounded; nothing asserts on timing except the generous
 * idle-CPU check in core_idle_threads_sleep.
 */
#include <desync.h>

#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "test.h"

/* -------------------------------------------------------------- threads */

TEST(core_scheduler_basics) {
    desync_scheduler_t *def = desync_scheduler_default();
    CHECK(def);
    CHECK(desync_scheduler_default() == def);
    CHECK(desync_scheduler_max_threads(def) >= 8);
    CHECK(desync_scheduler_thread_count(def) <= desync_scheduler_max_threads(def));

    desync_scheduler_t *s = desync_scheduler_new(3);
    CHECK(s);
    CHECK(s != def);
    CHECK_EQ(desync_scheduler_max_threads(s), 3);
    CHECK_EQ(desync_scheduler_thread_count(s), 0); /* threads start on demand */
    desync_scheduler_set_max_threads(s, 5);
    CHECK_EQ(desync_scheduler_max_threads(s), 5);
    desync_scheduler_free(s);

    /* Freeing NULL or the default scheduler is ignored. */
    desync_scheduler_free(NULL);
    desync_scheduler_free(def);
    int x = 0;
    desync_t *d = desync_new(&x, NULL);
    CHECK(d);
    CHECK_EQ(desync_desync(d, set_int, (void *)(intptr_t)9), 0);
    int v = 0;
    CHECK_EQ(desync_sync(d, get_int, &v), 0);
    CHECK_EQ(v, 9);
    desync_release(d);

    desync_scheduler_t *unused = desync_scheduler_new(0);
    CHECK(unused);
    desync_scheduler_free(unused);
    return 0;
}

TEST(core_despawn_extra_threads) {
    desync_scheduler_t *s = desync_scheduler_new(10);
    CHECK(s);
    CHECK_EQ(desync_scheduler_spawn_thread(NULL), DESYNC_EINVAL);
    for (int i = 0; i < 20; i++)
        CHECK_EQ(desync_scheduler_spawn_thread(s), 0); /* even above the maximum */
    CHECK_EQ(desync_scheduler_thread_count(s), 20);
    desync_scheduler_despawn_threads_if_overloaded(s);
    size_t n = desync_scheduler_thread_count(s);
    CHECK(n <= 10);

    /* The remaining threads still run work. */
    int x = 0;
    desync_t *d = desync_new_on(s, &x, NULL);
    CHECK(d);
    struct handshake h = {0};
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    atomic_store(&h.go, 1);
    CHECK(test_wait_flag(&h.done, 5000));
    CHECK_EQ(atomic_load(&h.saw_go), 1);
    desync_release(d);

    /* Nothing surplus: despawn returns at once and changes nothing. */
    desync_scheduler_despawn_threads_if_overloaded(s);
    CHECK(desync_scheduler_thread_count(s) <= 10);
    desync_scheduler_free(s);
    return 0;
}

struct despawn_ctx {
    desync_scheduler_t *s;
    int spawn_rc[2];
    size_t before, after;
    atomic_int done;
};

static void despawn_job(void *data, void *arg) {
    (void)data;
    struct despawn_ctx *c = arg;
    c->spawn_rc[0] = desync_scheduler_spawn_thread(c->s);
    c->spawn_rc[1] = desync_scheduler_spawn_thread(c->s);
    c->before = desync_scheduler_thread_count(c->s);
    desync_scheduler_despawn_threads_if_overloaded(c->s);
    c->after = desync_scheduler_thread_count(c->s);
    atomic_store(&c->done, 1);
}

TEST(core_despawn_from_job) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    int x = 0;
    desync_t *d = desync_new_on(s, &x, NULL);
    CHECK(d);
    static struct despawn_ctx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    CHECK_EQ(desync_desync(d, despawn_job, &c), 0);
    CHECK(test_wait_flag(&c.done, 5000));
    CHECK_EQ(c.spawn_rc[0], 0);
    CHECK_EQ(c.spawn_rc[1], 0);
    CHECK(c.before >= 3);
    /* The calling thread is not stoppable, the two others are. */
    CHECK_EQ(c.after, 1);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

TEST(core_set_max_threads_raise) {
    desync_scheduler_t *s = desync_scheduler_new(0);
    CHECK(s);
    int x = 0;
    desync_t *d = desync_new_on(s, &x, NULL);
    CHECK(d);
    static atomic_int flag;
    atomic_store(&flag, 0);
    CHECK_EQ(desync_desync(d, set_flag_job, &flag), 0);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&flag), 0); /* 0 threads: nothing in the background */

    /* Raising the limit starts threads for the work already waiting. */
    desync_scheduler_set_max_threads(s, 2);
    CHECK_EQ(desync_scheduler_max_threads(s), 2);
    CHECK(test_wait_flag(&flag, 5000));
    CHECK(desync_scheduler_thread_count(s) <= 2);

    /* And for later work as well. */
    static atomic_int flag2;
    atomic_store(&flag2, 0);
    CHECK_EQ(desync_desync(d, set_flag_job, &flag2), 0);
    CHECK(test_wait_flag(&flag2, 5000));
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* ------------------------------------------------------------- fairness */

struct fair {
    desync_queue_t *a;
    atomic_int stop;
    atomic_int a_runs;
    atomic_int a_done;
    atomic_int a_errors;
    atomic_int b_ran;
    int a_runs_when_b_ran;
};

static void fair_a_job(void *arg) {
    struct fair *f = arg;
    atomic_fetch_add(&f->a_runs, 1);
    if (atomic_load(&f->stop)) {
        atomic_store(&f->a_done, 1);
        return;
    }
    if (desync_queue_desync(f->a, fair_a_job, f) != 0) {
        atomic_fetch_add(&f->a_errors, 1);
        atomic_store(&f->a_done, 1);
    }
}

static void fair_b_job(void *arg) {
    struct fair *f = arg;
    f->a_runs_when_b_ran = atomic_load(&f->a_runs);
    atomic_store(&f->b_ran, 1);
}

static int fair_a_moved(void *arg) {
    struct fair *f = arg;
    return atomic_load(&f->a_runs) > f->a_runs_when_b_ran + 100;
}

TEST(core_fairness) {
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    static struct fair f;
    memset(&f, 0, sizeof f);
    f.a = desync_queue_new(s);
    desync_queue_t *b = desync_queue_new(s);
    CHECK(f.a && b);

    /* A never runs dry; with one thread, B only runs if A yields it. */
    CHECK_EQ(desync_queue_desync(f.a, fair_a_job, &f), 0);
    CHECK(test_wait_until(fair_a_moved, &f, 5000)); /* A is going */
    CHECK_EQ(desync_queue_desync(b, fair_b_job, &f), 0);
    int b_ran = test_wait_flag(&f.b_ran, 5000);
    /* ...and A is still going afterwards. */
    int a_moved = b_ran && test_wait_until(fair_a_moved, &f, 5000);
    atomic_store(&f.stop, 1);
    int a_stopped = test_wait_flag(&f.a_done, 5000);
    if (!b_ran)
        fprintf(stderr, "queue B starved by a self-requeuing queue A (%d runs of A)\n",
                atomic_load(&f.a_runs));
    CHECK(b_ran);
    CHECK(a_moved);
    CHECK(a_stopped);
    CHECK_EQ(atomic_load(&f.a_errors), 0);
    desync_queue_release(f.a);
    desync_queue_release(b);
    desync_scheduler_free(s);
    return 0;
}

/* ---------------------------------------------------------- idle threads */

static uint64_t process_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

TEST(core_idle_threads_sleep) {
    /* Make threads on the default and on a private scheduler, then stop. */
    desync_scheduler_t *s = desync_scheduler_new(4);
    CHECK(s);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(desync_scheduler_spawn_thread(s), 0);
    static int counters[8];
    desync_t *objs[8];
    for (int i = 0; i < 8; i++) {
        counters[i] = 0;
        objs[i] = i < 4 ? desync_new(&counters[i], NULL) : desync_new_on(s, &counters[i], NULL);
        CHECK(objs[i]);
    }
    for (int round = 0; round < 500; round++)
        for (int i = 0; i < 8; i++)
            CHECK_EQ(desync_desync(objs[i], count_job, NULL), 0);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(desync_sync(objs[i], noop_job, NULL), 0);
        CHECK_EQ(counters[i], 500);
        desync_release(objs[i]);
    }

    /* Give spinning threads time to go to sleep, then measure. */
    test_sleep_ms(300);
    uint64_t cpu0 = process_cpu_ns(), t0 = test_now_ns();
    test_sleep_ms(300);
    uint64_t cpu = process_cpu_ns() - cpu0, wall = test_now_ns() - t0;
#ifdef DESYNC_TEST_SANITIZED
    const uint64_t limit = 100000000u; /* sanitizer runtimes have their own threads */
#else
    const uint64_t limit = 50000000u;
#endif
    fprintf(stderr, "idle: %.1f ms CPU in %.1f ms (%zu + %zu threads alive)\n", cpu / 1e6,
            wall / 1e6, desync_scheduler_thread_count(s),
            desync_scheduler_thread_count(desync_scheduler_default()));
    desync_scheduler_free(s);
    CHECK(cpu < limit); /* a busy-looping idle thread would use ~all of wall */
    return 0;
}

/* ------------------------------------------- default threads go away */

static int default_has_no_threads(void *unused) {
    (void)unused;
    return desync_scheduler_thread_count(desync_scheduler_default()) == 0;
}

TEST(core_default_threads_exit_when_idle) {
    /* Start several default-scheduler threads, then leave them idle. */
    enum { N = 6 };
    static int counters[N];
    desync_t *objs[N];
    for (int i = 0; i < N; i++) {
        objs[i] = desync_new(&counters[i], NULL);
        CHECK(objs[i]);
    }
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < N; i++)
            CHECK_EQ(desync_desync(objs[i], count_job, NULL), 0);
    for (int i = 0; i < N; i++)
        desync_release(objs[i]);
    CHECK_EQ(counters[0], 200);
    /* "exit after a few seconds without work": allow plenty. */
    int gone = test_wait_until(default_has_no_threads, NULL, 20000);
    if (!gone)
        fprintf(stderr, "%zu default threads still alive after 20 s idle\n",
                desync_scheduler_thread_count(desync_scheduler_default()));
    CHECK(gone);

    /* And it starts threads again on demand. */
    int y = 0;
    desync_t *d = desync_new(&y, NULL);
    CHECK(d);
    static struct handshake h;
    memset(&h, 0, sizeof h);
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    atomic_store(&h.go, 1);
    CHECK(test_wait_flag(&h.done, 5000));
    CHECK_EQ(atomic_load(&h.saw_go), 1);
    desync_release(d);
    return 0;
}

/* ------------------------------------------------------ scheduler_free */

struct slow_counter {
    atomic_int count;
    int order_errors;
    int next;
};

static void slow_counter_job(void *data, void *arg) {
    struct slow_counter *c = data;
    int i = (int)(intptr_t)arg;
    if (i % 20 == 0)
        test_sleep_ms(1);
    if (i != c->next)
        c->order_errors++;
    c->next++;
    atomic_fetch_add(&c->count, 1);
}

static void counter_queue_job(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

TEST(core_scheduler_free_waits) {
    /* With threads: free waits until the queued work has run. */
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    static struct slow_counter c;
    memset(&c, 0, sizeof c);
    desync_t *d = desync_new_on(s, &c, NULL);
    CHECK(d);
    for (int i = 0; i < 200; i++)
        CHECK_EQ(desync_desync(d, slow_counter_job, (void *)(intptr_t)i), 0);
    desync_scheduler_free(s);
    CHECK_EQ(atomic_load(&c.count), 200);
    CHECK_EQ(desync_sync(d, noop_job, NULL), 0);
    CHECK_EQ(c.order_errors, 0);
    desync_release(d);

    /* With 0 threads: free runs the backlog on the calling thread, including
     * that of a queue whose last reference was already dropped. */
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    static struct slow_counter c0;
    memset(&c0, 0, sizeof c0);
    desync_t *d0 = desync_new_on(s0, &c0, NULL);
    CHECK(d0);
    for (int i = 0; i < 10; i++)
        CHECK_EQ(desync_desync(d0, slow_counter_job, (void *)(intptr_t)i), 0);
    desync_queue_t *q0 = desync_queue_new(s0);
    CHECK(q0);
    static atomic_int qcount;
    atomic_store(&qcount, 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(desync_queue_desync(q0, counter_queue_job, &qcount), 0);
    desync_queue_release(q0);
    desync_scheduler_free(s0);
    CHECK_EQ(atomic_load(&c0.count), 10);
    CHECK_EQ(atomic_load(&qcount), 3);
    desync_release(d0);
    return 0;
}

TEST(core_objects_outlive_scheduler) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    static struct thread_log l;
    memset(&l, 0, sizeof l);
    desync_t *d = desync_new_on(s, &l, NULL);
    CHECK(d);
    desync_queue_t *q = desync_queue_new(s);
    CHECK(q);
    CHECK_EQ(desync_desync(d, thread_log_job, (void *)(intptr_t)0), 0);
    CHECK_EQ(desync_sync(d, thread_log_job, (void *)(intptr_t)1), 0);
    desync_scheduler_free(s);

    /* Still usable: work runs on the threads that sync (or queue) it. */
    pthread_t th;
    CHECK_EQ(desync_sync(d, record_thread, &th), 0);
    CHECK(pthread_equal(th, pthread_self()));
    CHECK_EQ(desync_desync(d, thread_log_job, (void *)(intptr_t)2), 0);
    CHECK_EQ(desync_desync(d, thread_log_job, (void *)(intptr_t)3), 0);
    CHECK_EQ(desync_sync(d, thread_log_job, (void *)(intptr_t)4), 0);
    CHECK_EQ(l.n, 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(l.order[i], i);
    struct try_probe p = {0};
    CHECK_EQ(desync_try_sync(d, try_probe_job, &p), 0);
    CHECK_EQ(atomic_load(&p.ran), 1);

    static atomic_int qcount;
    atomic_store(&qcount, 0);
    CHECK_EQ(desync_queue_desync(q, counter_queue_job, &qcount), 0);
    CHECK_EQ(desync_queue_sync(q, counter_queue_job, &qcount), 0);
    CHECK_EQ(atomic_load(&qcount), 2);

    desync_queue_release(q);
    desync_release(d); /* the scheduler's memory goes with the last queue */
    return 0;
}

/* ------------------------------------- scheduler_free from its own job */

struct free_self {
    desync_scheduler_t *s;
    atomic_int returned;
};

static void free_self_job(void *data, void *arg) {
    (void)data;
    struct free_self *f = arg;
    desync_scheduler_free(f->s); /* not allowed here: must return, not free */
    atomic_store(&f->returned, 1);
}

TEST(core_scheduler_free_from_own_job) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    int x = 0;
    desync_t *d = desync_new_on(s, &x, NULL);
    CHECK(d);
    static struct free_self f;
    memset(&f, 0, sizeof f);
    f.s = s;
    CHECK_EQ(desync_desync(d, free_self_job, &f), 0);
    CHECK(test_wait_flag(&f.returned, 5000));
    /* The scheduler was not freed: it still runs background work. */
    CHECK_EQ(desync_scheduler_max_threads(s), 2);
    static struct handshake h;
    memset(&h, 0, sizeof h);
    CHECK_EQ(desync_desync(d, handshake_job, &h), 0);
    atomic_store(&h.go, 1);
    CHECK(test_wait_flag(&h.done, 5000));
    CHECK_EQ(atomic_load(&h.saw_go), 1);
    desync_release(d);
    desync_scheduler_free(s);
    return 0;
}

/* --------------------------------------------------- process exit */

/* Set in the forked child: it leaks on purpose (as real programs do at exit),
 * so LeakSanitizer must not turn that into a failing exit status. */
static volatile int g_lsan_off;
int __lsan_is_turned_off(void);
__attribute__((visibility("default"))) int __lsan_is_turned_off(void) { return g_lsan_off; }

static void exit_slow_job(void *data, void *arg) {
    (void)data;
    test_sleep_ms((unsigned)(intptr_t)arg);
}

/* Uses the library like a small program would, then returns. */
static int exit_child_body(int variant) {
    static int x, y;
    desync_t *d = desync_new(&x, NULL);
    desync_scheduler_t *s = desync_scheduler_new(3);
    if (!d || !s)
        return 2;
    desync_t *e = desync_new_on(s, &y, NULL);
    if (!e)
        return 2;
    for (int i = 0; i < 100; i++) {
        desync_desync(d, count_job, NULL);
        desync_desync(e, count_job, NULL);
    }
    if (desync_scheduler_spawn_thread(s) != 0)
        return 3;
    int v = 0;
    desync_sync(d, get_int, &v);
    desync_sync(e, get_int, &v);
    if (variant == 1) {
        /* Still busy in the background when the program ends. */
        desync_desync(d, exit_slow_job, (void *)(intptr_t)200);
        desync_desync(e, exit_slow_job, (void *)(intptr_t)200);
    } else {
        desync_release(d);
        desync_release(e);
        test_sleep_ms(20); /* threads idle (spinning or asleep) */
    }
    return 0; /* scheduler s intentionally never freed */
}

TEST(core_exit_with_idle_threads) {
    for (int variant = 0; variant < 2; variant++) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            g_lsan_off = 1;
            exit(exit_child_body(variant)); /* same as returning from main */
        }
        int status = 0;
        uint64_t end = test_now_ns() + 10000000000u;
        pid_t r;
        while ((r = waitpid(pid, &status, WNOHANG)) == 0 && test_now_ns() < end)
            test_sleep_ms(2);
        if (r == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "variant %d: process did not exit within 10 s\n", variant);
            return 1;
        }
        CHECK_EQ(r, pid);
        CHECK(WIFEXITED(status));
        CHECK_EQ(WEXITSTATUS(status), 0);
    }
    return 0;
}

/* Two entries submitted while one worker spins: the submitter wakes nobody
 * (the spinner will look), and the spinner takes only one of them. Here the
 * first job waits for the second to start, so the second must get another
 * thread. It waited, with the other threads asleep, before the spinner
 * learned to wake one for the backlog. */
typedef struct pair_probe {
    atomic_int b_started;
    atomic_int a_saw_b;
} pair_probe;

static void pair_job_a(void *data, void *arg) {
    (void)data;
    pair_probe *p = arg;
    atomic_store(&p->a_saw_b, test_wait_flag(&p->b_started, 5000));
}

static void pair_job_b(void *data, void *arg) {
    (void)data;
    atomic_store(&((pair_probe *)arg)->b_started, 1);
}

TEST(core_backlog_wakes_second_worker) {
    desync_scheduler_t *s = desync_scheduler_new(4);
    CHECK(s);
    desync_t *x = desync_new_on(s, NULL, NULL);
    CHECK(x);
    for (int round = 0; round < TEST_SCALED(100); round++) {
        desync_t *a = desync_new_on(s, NULL, NULL), *b = desync_new_on(s, NULL, NULL);
        CHECK(a && b);
        /* Every worker asleep; then a job on one of them, then at once two
         * more: that worker now spins, alone. */
        test_sleep_ms(2);
        atomic_int warm = 0;
        CHECK_EQ(desync_desync(x, set_flag_job, &warm), 0);
        CHECK(test_wait_flag(&warm, LONG_MS));
        pair_probe p = {0, 0};
        CHECK_EQ(desync_desync(a, pair_job_a, &p), 0);
        CHECK_EQ(desync_desync(b, pair_job_b, &p), 0);
        desync_release(a); /* waits for pair_job_a */
        desync_release(b);
        CHECK(atomic_load(&p.a_saw_b));
    }
    desync_release(x);
    desync_scheduler_free(s);
    return 0;
}

/* ------------------------------------------------------------ awake cap */

struct cap_probe {
    atomic_int started, go, ran;
};

static void cap_block_job(void *data, void *arg) {
    (void)data;
    struct cap_probe *p = arg;
    atomic_fetch_add(&p->started, 1);
    test_wait_flag(&p->go, LONG_MS);
}

static void cap_count_job(void *data, void *arg) {
    (void)data;
    atomic_fetch_add(&((struct cap_probe *)arg)->ran, 1);
}

/* One job per core blocks every awake worker: a burst of jobs queued then
 * still runs (an idle worker watches the run list and takes it), without a
 * thread started per job (the awake workers are enough: before the cap,
 * each job of the burst found no worker looking and started one, up to
 * the limit). */
TEST(core_awake_cap_burst) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    enum { BURST = 64 };
    size_t max = (size_t)ncpu + 8, nobj = (size_t)ncpu + BURST;
    desync_scheduler_t *s = desync_scheduler_new(max);
    desync_t **d = calloc(nobj, sizeof *d);
    CHECK(s && d);
    for (size_t i = 0; i < nobj; i++)
        CHECK((d[i] = desync_new_on(s, NULL, NULL)));
    struct cap_probe p = {0, 0, 0};
    for (long i = 0; i < ncpu; i++)
        CHECK_EQ(desync_desync(d[i], cap_block_job, &p), 0);
    CHECK(test_wait_count(&p.started, (int)ncpu, LONG_MS));
    for (size_t i = (size_t)ncpu; i < nobj; i++)
        CHECK_EQ(desync_desync(d[i], cap_count_job, &p), 0);
    CHECK(test_wait_count(&p.ran, BURST, LONG_MS));
    desync_scheduler_stats_t st;
    CHECK_EQ(desync_scheduler_stats(s, &st), 0);
    atomic_store(&p.go, 1);
    for (size_t i = 0; i < nobj; i++)
        desync_release(d[i]);
    free(d);
    desync_scheduler_free(s);
    /* The blocked ones, the watcher, the one that took over from it and its
     * own watcher; a few more if threads were preempted for a whole watch. */
    CHECK(st.threads_peak <= (size_t)ncpu + 5);
    return 0;
}

/* ------------------------------------------------- work made ready inside a job */

struct strand {
    desync_t *b;
    desync_queue_t *c;
    atomic_int c_ran, before_sync, synced;
};

static desync_future_t *strand_c_job(void *arg) {
    atomic_store(&((struct strand *)arg)->c_ran, 1);
    return NULL;
}

/* On b: queues a job on the idle queue c and holds b until it has run. */
static desync_future_t *strand_b_job(void *data, void *arg) {
    (void)data;
    struct strand *s = arg;
    return desync_queue_future_desync(s->c, strand_c_job, s);
}

static void strand_noop(void *data, void *arg) {
    (void)data;
    (void)arg;
}

/* On a: syncs b, which runs b's pending async job on this worker. */
static void strand_a_job(void *data, void *arg) {
    (void)data;
    struct strand *s = arg;
    atomic_store(&s->before_sync, 1);
    if (desync_sync(s->b, strand_noop, NULL) == 0)
        atomic_store(&s->synced, 1);
}

/* A job on a worker syncs b and so runs b's pending work itself; that work
 * makes the idle queue c ready and waits for it. c must run on another
 * thread (the scheduler may start one) while the job waits. Found by
 * fuzz/fuzz_api.c: c went into the blocked worker's next slot, which only a
 * spinning worker takes over, so with the other thread asleep or never
 * started the sync never returned. (If the job has not reached its sync when
 * b is resumed, c runs elsewhere and the test passes without showing it.) */
TEST(core_queue_made_ready_by_a_blocked_job_runs) {
    desync_scheduler_t *sch = desync_scheduler_new(2);
    CHECK(sch);
    int va = 0, vb = 0;
    desync_t *a = desync_new_on(sch, &va, NULL), *b = desync_new_on(sch, &vb, NULL);
    desync_queue_t *c = desync_queue_new(sch);
    CHECK(a && b && c);
    struct strand s;
    memset(&s, 0, sizeof s);
    s.b = b;
    s.c = c;
    /* b is suspended, so a's job finds it busy and waits in line. */
    desync_future_t *sf = desync_queue_suspend(desync_get_queue(b));
    CHECK(sf);
    void *resumer = NULL;
    CHECK_EQ(desync_future_wait_for(sf, LONG_NS, &resumer), 0);
    desync_future_free(sf);
    desync_future_t *bf = desync_future_desync(b, strand_b_job, &s);
    CHECK(bf);
    CHECK_EQ(desync_desync(a, strand_a_job, &s), 0);
    CHECK(test_wait_flag(&s.before_sync, 5000));
    test_sleep_ms(30); /* let it reach the sync */
    /* The token goes to the waiting sync: b's async job runs on a's worker. */
    desync_resumer_resume(resumer);
    CHECK(test_wait_flag(&s.synced, 5000));
    CHECK_EQ(atomic_load(&s.c_ran), 1);
    CHECK_EQ(desync_future_wait_for(bf, LONG_NS, NULL), 0);
    desync_future_free(bf);
    desync_release(a);
    desync_release(b);
    desync_queue_release(c);
    desync_scheduler_free(sch);
    return 0;
}

/* ------------------------------------------------------- concurrent despawns */

struct despawner {
    pthread_t th;
    desync_scheduler_t *s;
};

static void *despawn_main(void *arg) {
    desync_scheduler_despawn_threads_if_overloaded(((struct despawner *)arg)->s);
    return NULL;
}

struct held_job {
    atomic_int started, release;
};

static void held_queue_job(void *arg) {
    struct held_job *h = arg;
    atomic_fetch_add(&h->started, 1);
    while (!atomic_load(&h->release))
        test_sleep_ms(1);
}

static void count_queue_job(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

/* Two despawns at once, one thread above the limit: they stop one thread,
 * not both, and work queued meanwhile still runs. Found by fuzz/fuzz_api.c:
 * each despawn counted the threads the other was already stopping, so both
 * stopped one and no thread was left; the work in the run list (queued while
 * the count was above the limit, so no thread was started for it) then
 * waited for good. (If the second despawn comes after the first has joined
 * its thread, the test passes without showing it.) */
TEST(core_despawn_concurrent_keeps_a_thread) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    desync_queue_t *q1 = desync_queue_new(s), *q2 = desync_queue_new(s), *q3 = desync_queue_new(s);
    CHECK(q1 && q2 && q3);
    struct held_job h;
    memset(&h, 0, sizeof h);
    CHECK_EQ(desync_queue_desync(q1, held_queue_job, &h), 0);
    CHECK_EQ(desync_queue_desync(q2, held_queue_job, &h), 0);
    CHECK(test_wait_count(&h.started, 2, 5000)); /* both threads busy */
    desync_scheduler_set_max_threads(s, 1);
    struct despawner d1 = {0, s}, d2 = {0, s};
    CHECK_EQ(pthread_create(&d1.th, NULL, despawn_main, &d1), 0);
    test_sleep_ms(30); /* d1 has stopped one busy thread and waits for it */
    CHECK_EQ(pthread_create(&d2.th, NULL, despawn_main, &d2), 0);
    test_sleep_ms(30);
    atomic_int ran = 0;
    CHECK_EQ(desync_queue_desync(q3, count_queue_job, &ran), 0);
    atomic_store(&h.release, 1);
    pthread_join(d1.th, NULL);
    pthread_join(d2.th, NULL);
    CHECK(test_wait_count(&ran, 1, 5000));
    CHECK(desync_scheduler_thread_count(s) <= 1);
    desync_queue_release(q1);
    desync_queue_release(q2);
    desync_queue_release(q3);
    desync_scheduler_free(s);
    return 0;
}

/* ------------------------------------------- one blocking job per thread */

struct all_started {
    atomic_int started, failed;
    int n;
};

/* Blocks outside the library until every job of the round has started. */
static void all_started_job(void *arg) {
    struct all_started *a = arg;
    atomic_fetch_add(&a->started, 1);
    if (!test_wait_count(&a->started, a->n, 3000))
        atomic_store(&a->failed, 1);
}

/* As many jobs as the pool has threads, each blocking outside the library
 * until all of them have started: every one must get a thread. A worker
 * must never hold a second entry back behind a job that blocks while
 * another thread is free. Found by the fork test in CI: a worker facing a
 * backlog took two entries at once (paired pops), the second into its next
 * slot, and it waited there behind the first, blocked, while the last
 * thread slept. Each round holds every thread first, so the entries wait
 * together when the threads come for them (the holds are such a round
 * too). */
TEST(core_every_thread_gets_a_blocking_job) {
    enum { N = 4, ROUNDS = 20 };
    desync_scheduler_t *s = desync_scheduler_new(N);
    CHECK(s);
    desync_queue_t *hold[N], *q[N];
    for (int i = 0; i < N; i++) {
        CHECK((hold[i] = desync_queue_new(s)) != NULL);
        CHECK((q[i] = desync_queue_new(s)) != NULL);
    }
    int failed = 0;
    for (int round = 0; round < ROUNDS && !failed; round++) {
        struct held_job h;
        memset(&h, 0, sizeof h);
        for (int i = 0; i < N; i++)
            CHECK_EQ(desync_queue_desync(hold[i], held_queue_job, &h), 0);
        CHECK(test_wait_count(&h.started, N, 5000)); /* every thread busy */
        struct all_started a;
        memset(&a, 0, sizeof a);
        a.n = N;
        for (int i = 0; i < N; i++)
            CHECK_EQ(desync_queue_desync(q[i], all_started_job, &a), 0);
        atomic_store(&h.release, 1);
        for (int i = 0; i < N; i++) { /* this round's jobs have returned */
            CHECK_EQ(desync_queue_sync(hold[i], count_queue_job, &h.started), 0);
            CHECK_EQ(desync_queue_sync(q[i], count_queue_job, &a.started), 0);
        }
        failed = atomic_load(&a.failed);
    }
    CHECK_EQ(failed, 0);
    for (int i = 0; i < N; i++) {
        desync_queue_release(hold[i]);
        desync_queue_release(q[i]);
    }
    desync_scheduler_free(s);
    return 0;
}

/* ------------------------------------------- next slot behind a blocked job */

struct next_behind {
    desync_queue_t *q2;
    atomic_int started, go, q2_ran, saw_q2, desync_rc;
    int finishing; /* the pool's other thread is in a job that ends at `go` */
};

static void next_q2_job(void *arg) { atomic_store(&((struct next_behind *)arg)->q2_ran, 1); }

/* Holds the pool's other thread until q1's job says go, then returns at
 * once: that thread looks for work while q1's job stashes q2's entry. */
static void next_finishing_job(void *arg) {
    struct next_behind *n = arg;
    atomic_fetch_add(&n->started, 1);
    uint64_t end = test_now_ns() + 5000000000ull;
    while (!atomic_load(&n->go) && test_now_ns() < end) {
    }
}

/* On q1: makes q2 ready from inside the job (its entry goes to this
 * worker's next slot), then blocks outside the library until q2's job has
 * run. */
static void next_q1_job(void *arg) {
    struct next_behind *n = arg;
    atomic_fetch_add(&n->started, 1);
    if (n->finishing) {
        (void)test_wait_count(&n->started, 2, 5000); /* main checks it too */
        atomic_store(&n->go, 1);
        test_spin_ns(5000); /* the other thread is now spinning, or about to */
    }
    atomic_store(&n->desync_rc, desync_queue_desync(n->q2, next_q2_job, n));
    atomic_store(&n->saw_q2, test_wait_flag(&n->q2_ran, 10000));
}

/* A job makes another queue ready, then blocks outside the library (its
 * own lock, a read): the queue it made ready must not wait for it while
 * the pool has another thread free, or room for one. Before the next-slot
 * watch (scheduler.c) it waited the whole block, as only a spinning worker
 * took a next slot over: the pool's other thread was asleep (finishing =
 * 0), or had begun its spin just before the entry was stashed, and then
 * slept (finishing = 1; if that thread comes to look only after the entry
 * was stashed, its spin takes it over and the case passes without showing
 * it), or had not been started (fresh = 1). */
static int next_slot_case(int finishing, int fresh) {
    desync_scheduler_t *s = desync_scheduler_new(2);
    CHECK(s);
    desync_queue_t *h1 = desync_queue_new(s), *h2 = desync_queue_new(s);
    desync_queue_t *q1 = desync_queue_new(s), *q2 = desync_queue_new(s);
    CHECK(h1 && h2 && q1 && q2);
    struct held_job h;
    memset(&h, 0, sizeof h);
    if (!fresh) {
        CHECK_EQ(desync_queue_desync(h1, held_queue_job, &h), 0);
        CHECK_EQ(desync_queue_desync(h2, held_queue_job, &h), 0);
        CHECK(test_wait_count(&h.started, 2, 5000)); /* both threads started */
        atomic_store(&h.release, 1);
        CHECK_EQ(desync_queue_sync(h1, count_queue_job, &h.started), 0);
        CHECK_EQ(desync_queue_sync(h2, count_queue_job, &h.started), 0);
        test_sleep_ms(50); /* both asleep */
    }
    struct next_behind n;
    memset(&n, 0, sizeof n);
    n.q2 = q2;
    n.finishing = finishing;
    atomic_store(&n.desync_rc, -1);
    if (finishing)
        CHECK_EQ(desync_queue_desync(h1, next_finishing_job, &n), 0);
    CHECK_EQ(desync_queue_desync(q1, next_q1_job, &n), 0);
    /* On a worker: a sync now would take q1 over and run it here. */
    CHECK(test_wait_count(&n.started, 1 + finishing, 5000));
    CHECK_EQ(desync_queue_sync(q1, count_queue_job, &n.q2_ran), 0); /* q1's job returned */
    CHECK_EQ(atomic_load(&n.desync_rc), 0);
    CHECK_EQ(atomic_load(&n.saw_q2), 1);
    if (fresh) /* q1's job started the first thread, q2 the second */
        CHECK_EQ(desync_scheduler_thread_count(s), 2);
    desync_queue_release(h1);
    desync_queue_release(h2);
    desync_queue_release(q1);
    desync_queue_release(q2);
    desync_scheduler_free(s);
    return 0;
}

TEST(core_next_slot_taken_over_from_a_blocked_job) { return next_slot_case(0, 0); }

TEST(core_next_slot_taken_over_by_a_thread_going_idle) { return next_slot_case(1, 0); }

TEST(core_next_slot_taken_over_by_a_new_thread) { return next_slot_case(0, 1); }

/* ---------------------------------------------------------------- grace */

/* GRACE (scheduler.c): a spinning worker leaves a lone ready queue alone
 * while the thread that queued its jobs runs them itself (a sync after a
 * burst of desyncs), and starts the grace again each time it sees that.
 * Once that thread stops waiting, a worker must still take the queue's next
 * job: the grace starts again only when the queue's jobs ran elsewhere. */
struct grace_probe {
    atomic_int ran;
};

static void grace_inc_job(void *data, void *arg) {
    (void)arg;
    ++*(uint64_t *)data;
}

static void grace_read_job(void *data, void *arg) { *(uint64_t *)arg = *(uint64_t *)data; }

static void grace_last_job(void *data, void *arg) {
    (void)data;
    atomic_store(&((struct grace_probe *)arg)->ran, 1);
}

/* Bursts of desyncs, each followed by a sync, then one desync nobody waits
 * for, which a worker must run. `crowded`: the library's yields return late
 * every fourth time (tests/fault.h), as on a core shared with a busy thread,
 * so that the spinning worker stops there and, having seen the waiter run
 * the queue, leaves it to the watcher (CROWDED: itself here), which must
 * take the queue's last job once the waiter stops. */
static int grace_case(bool crowded) {
    if (crowded)
        fault_set(FAULT_YIELD, FAULT_EVERY, 4);
    /* One thread: no other worker (a watcher) to take the job instead. */
    desync_scheduler_t *s = desync_scheduler_new(1);
    CHECK(s);
    uint64_t *count = calloc(1, sizeof *count);
    CHECK(count);
    desync_t *d = desync_new_on(s, count, free);
    CHECK(d);
    uint64_t want = 0;
    for (int round = 0; round < TEST_SCALED(50); round++) {
        for (int burst = 0; burst < 200; burst++) {
            for (int k = 0; k < 10; k++)
                CHECK_EQ(desync_desync(d, grace_inc_job, NULL), 0);
            want += 10;
            uint64_t v = 0;
            CHECK_EQ(desync_sync(d, grace_read_job, &v), 0);
            CHECK_EQ(v, want);
        }
        /* One more job, and nobody waits on d: a worker must run it. */
        struct grace_probe p = {0};
        CHECK_EQ(desync_desync(d, grace_last_job, &p), 0);
        CHECK(test_wait_flag(&p.ran, LONG_MS));
    }
    desync_release(d);
    desync_scheduler_free(s);
    fault_reset();
    return 0;
}

TEST(core_grace_ends_when_the_waiter_stops) { return grace_case(false); }

TEST(core_crowded_spinner_leaves_the_queue_to_the_watcher) { return grace_case(true); }
