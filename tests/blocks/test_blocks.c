/*
 * Tests of <desync/blocks.h> (the `_b` calls taking clang blocks). A program
 * of its own, not part of build/run_tests: it needs clang -fblocks and the
 * BlocksRuntime, which the library and the main suite do not. `make test`
 * builds and runs it when both are there (and skips it with a message
 * otherwise), plainly and with AddressSanitizer's leak checker.
 *
 * Whether each heap copy of a block is released exactly once is checked by
 * counting: this program defines _Block_copy and _Block_release (the
 * functions behind the Block_copy / Block_release macros the header uses),
 * counts the calls and forwards them to the runtime's (dlsym RTLD_NEXT). The
 * blocks here capture only plain values and __block variables, so the
 * runtime makes no such calls of its own and every counted call is the
 * header's. ASan's leak checker then sees that the released copies are
 * really freed.
 *
 * Each test returns 0 or 1; a hang is ended by alarm() (60 s, times
 * DESYNC_TEST_TIMEOUT_SCALE). Ends with the line "N passed, N failed".
 */
#include <desync/blocks.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../test.h" /* CHECK and the bounded waits */


/* ------------------------------------------- counting copies and releases */

static void *(*real_copy)(const void *);
static void (*real_release)(const void *);
static atomic_long copies, releases;

void *_Block_copy(const void *block) {
    atomic_fetch_add(&copies, 1);
    return real_copy(block);
}

void _Block_release(const void *block) {
    atomic_fetch_add(&releases, 1);
    real_release(block);
}

/* Every copy made so far has been released. */
static int balanced(void) { return atomic_load(&copies) == atomic_load(&releases); }

/* --------------------------------------------------------------- tests */

/* desync_b blocks run in the order they were queued, each once, and see
 * the object's data; a __block counter they all capture ends at N. */
static int test_desync_b_order(void) {
    enum { N = 5000 };
    static long data;
    desync_t *d = desync_new(&data, NULL);
    CHECK(d);
    __block long counter = 0;
    __block long out_of_order = 0, wrong_data = 0;
    long copies_before = atomic_load(&copies);
    for (long i = 0; i < N; i++) {
        CHECK(desync_desync_b(d, ^(void *p) {
                  out_of_order += counter != i;
                  wrong_data += p != &data;
                  counter++;
              }) == 0);
    }
    __block long seen = -1;
    CHECK(desync_sync_b(d, ^(void *p) {
              (void)p;
              seen = counter;
          }) == 0);
    CHECK(seen == N);
    CHECK(counter == N);
    CHECK(out_of_order == 0);
    CHECK(wrong_data == 0);
    CHECK(atomic_load(&copies) - copies_before == N); /* one copy per desync_b, none per sync_b */
    CHECK(balanced());
    desync_release(d);
    return 0;
}

/* sync_b from several threads at once, mixed with desync_b: every
 * increment lands, and each sync_b sees the writes of the jobs before it. */
struct shared {
    desync_t *d;
    atomic_int failures;
};

static void *hammer(void *arg) {
    struct shared *s = arg;
    for (int i = 0; i < 2000; i++) {
        __block long before = -1, after = -1;
        int rc = desync_sync_b(s->d, ^(void *p) {
            long *v = p;
            before = *v;
            *v += 1;
            after = *v;
        });
        if (rc != 0 || after != before + 1)
            atomic_fetch_add(&s->failures, 1);
        if (desync_desync_b(s->d, ^(void *p) { *(long *)p += 1; }) != 0)
            atomic_fetch_add(&s->failures, 1);
    }
    return NULL;
}

static int test_sync_b_threads(void) {
    enum { THREADS = 4 };
    static long value;
    struct shared s = {desync_new(&value, NULL), 0};
    CHECK(s.d);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, hammer, &s) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    __block long total = 0;
    CHECK(desync_sync_b(s.d, ^(void *p) { total = *(long *)p; }) == 0);
    CHECK(atomic_load(&s.failures) == 0);
    CHECK(total == THREADS * 2000 * 2);
    CHECK(balanced());
    desync_release(s.d);
    return 0;
}

/* The queue forms: in order, and the sync sees the earlier jobs' writes. */
static int test_queue_b(void) {
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    __block int next = 0, out_of_order = 0;
    for (int i = 0; i < 1000; i++) {
        CHECK(desync_queue_desync_b(q, ^{
                  out_of_order += next != i;
                  next++;
              }) == 0);
    }
    __block int seen = -1;
    CHECK(desync_queue_sync_b(q, ^{ seen = next; }) == 0);
    CHECK(seen == 1000);
    CHECK(out_of_order == 0);
    CHECK(balanced());
    desync_queue_release(q);
    return 0;
}

/* Every refused call: the error the header names, the block not run, and a
 * copy made by a refused desync_b released before the call returns. */
static int test_errors(void) {
    __block int ran = 0;
    desync_block_t job = ^(void *p) {
        (void)p;
        ran++;
    };
    desync_queue_block_t qjob = ^{ ran++; };
    long c = atomic_load(&copies), r = atomic_load(&releases);
    CHECK(desync_desync_b(NULL, job) == DESYNC_EINVAL);
    CHECK(atomic_load(&copies) == c + 1 && atomic_load(&releases) == r + 1);
    CHECK(desync_queue_desync_b(NULL, qjob) == DESYNC_EINVAL);
    CHECK(atomic_load(&copies) == c + 2 && atomic_load(&releases) == r + 2);
    CHECK(desync_sync_b(NULL, job) == DESYNC_EINVAL);
    CHECK(desync_queue_sync_b(NULL, qjob) == DESYNC_EINVAL);
    CHECK(ran == 0);

    static int data;
    desync_t *d = desync_new(&data, NULL);
    CHECK(d);
    desync_queue_t *q = desync_queue_new(NULL);
    CHECK(q);
    CHECK(desync_desync_b(d, NULL) == DESYNC_EINVAL);
    CHECK(desync_sync_b(d, NULL) == DESYNC_EINVAL);
    CHECK(desync_queue_desync_b(q, NULL) == DESYNC_EINVAL);
    CHECK(desync_queue_sync_b(q, NULL) == DESYNC_EINVAL);

    /* From d's own job: a sync on d could never run (EDEADLK), and with a
     * limit of 1 pending job the second desync finds d full (EAGAIN). */
    CHECK(desync_set_max_pending(d, 1) == 0);
    __block int inner_sync = 1, first = 1, second = 1;
    CHECK(desync_sync_b(d, ^(void *p) {
              (void)p;
              inner_sync = desync_sync_b(d, job);
              first = desync_desync_b(d, job);
              second = desync_desync_b(d, job);
          }) == 0);
    CHECK(inner_sync == DESYNC_EDEADLK);
    CHECK(first == 0);
    CHECK(second == DESYNC_EAGAIN);
    __block int ran_then = -1;
    CHECK(desync_sync_b(d, ^(void *p) {
              (void)p;
              ran_then = ran;
          }) == 0);
    CHECK(ran_then == 1); /* only the accepted one */

    CHECK(desync_queue_sync_b(q, ^{
              inner_sync = desync_queue_sync_b(q, qjob);
          }) == 0);
    CHECK(inner_sync == DESYNC_EDEADLK);
    CHECK(ran == 1);
    CHECK(balanced());
    desync_queue_release(q);
    desync_release(d);
    return 0;
}

/* A block queued on an object whose last reference is dropped meanwhile
 * still runs (the release waits for it), and its copy is released. */
static int test_release_runs_pending(void) {
    static long data;
    desync_t *d = desync_new(&data, NULL);
    CHECK(d);
    __block int ran = 0;
    for (int i = 0; i < 100; i++)
        CHECK(desync_desync_b(d, ^(void *p) {
                  (void)p;
                  ran++;
              }) == 0);
    desync_release(d); /* the last reference: returns after the jobs ran */
    CHECK(ran == 100);
    CHECK(balanced());
    return 0;
}

int main(void) {
    real_copy = (void *(*)(const void *))dlsym(RTLD_NEXT, "_Block_copy");
    real_release = (void (*)(const void *))dlsym(RTLD_NEXT, "_Block_release");
    if (!real_copy || !real_release) {
        fprintf(stderr, "test_blocks: the BlocksRuntime's _Block_copy/_Block_release not found\n");
        return 1;
    }
    const char *scale = getenv("DESYNC_TEST_TIMEOUT_SCALE");
    alarm(60 * (unsigned)(scale && atoi(scale) > 0 ? atoi(scale) : 1));

    static const struct {
        const char *name;
        int (*fn)(void);
    } tests[] = {
        {"blocks_desync_b_order", test_desync_b_order},
        {"blocks_sync_b_threads", test_sync_b_threads},
        {"blocks_queue_b", test_queue_b},
        {"blocks_errors", test_errors},
        {"blocks_release_runs_pending", test_release_runs_pending},
    };
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (tests[i].fn() == 0) {
            printf("PASS %s\n", tests[i].name);
            passed++;
        } else {
            printf("FAIL %s\n", tests[i].name);
            failed++;
        }
        fflush(stdout);
    }
    desync_shutdown(); /* the pools' memory back, for the leak checker */
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
