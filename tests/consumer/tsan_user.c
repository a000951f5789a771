/*
 * A race-free user program for ThreadSanitizer, built by `make
 * check-tsan-user` (tests/consumer/tsan_user.sh) with -fsanitize=thread
 * against the library installed from a `make install SAN=thread` build.
 * Every piece of plain (non-atomic) memory here is handed between threads
 * only through the library: an object's data touched only by its jobs, a
 * job's argument written before the desync and read in the job, a value
 * written in a job and read after waiting on its future, a promise's value
 * written before completing it. So TSan must report nothing: a report means
 * the library's own synchronisation is invisible to it (a false report for
 * the user). Prints "tsan_user ok" and exits 0.
 *
 * Built with -DRACY it also increments a plain global counter from every
 * thread with no synchronisation at all: a real race, which TSan must
 * report (the check expects that, to show the setup would catch one).
 */
#include <desync.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define ROUNDS 300

struct account {
    long balance;
    long ops;
};

struct message {
    int from;
    long amount;
    char text[32];
};

static desync_t *accounts[2];
static desync_t *inbox; /* data: a plain long, the sum of the messages */

#ifdef RACY
static long racy_counter; /* touched by every thread without any ordering */
#endif

static void deposit(void *data, void *arg) {
    struct account *a = data;
    a->balance += *(const long *)arg;
    a->ops++;
}

static void read_account(void *data, void *arg) { *(struct account *)arg = *(struct account *)data; }

/* The message was written by the thread that queued this job and is freed
 * here, on whichever thread runs the job. */
static void receive(void *data, void *arg) {
    struct message *m = arg;
    if (strncmp(m->text, "from ", 5) != 0)
        abort(); /* the job must see what the sender wrote */
    *(long *)data += m->amount;
    free(m);
}

/* Moves 1 from accounts[0] to accounts[1] in one job over both. */
static void transfer(void *const *datas, void *arg) {
    (void)arg;
    struct account *from = datas[0], *to = datas[1];
    from->balance -= 1;
    to->balance += 1;
}

/* An async job: its result lives in memory this job writes and the waiter
 * reads after desync_future_wait. */
static desync_future_t *snapshot(void *data, void *arg) {
    (void)arg;
    long *copy = malloc(sizeof *copy);
    if (copy)
        *copy = ((struct account *)data)->balance;
    return desync_future_ready(copy);
}

struct handoff {
    desync_promise_t *promise;
    long payload[8];
};

/* Completes a promise from a thread of its own with memory it wrote. */
static void *producer(void *arg) {
    struct handoff *h = arg;
    for (int i = 0; i < 8; i++)
        h->payload[i] = i * 10;
    desync_promise_complete(h->promise, h->payload);
    return NULL;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    long failures = 0;
    for (int r = 0; r < ROUNDS; r++) {
        long one = 1;
        failures += desync_desync_copy(accounts[r % 2], deposit, &one, sizeof one) != 0;
        struct message *m = malloc(sizeof *m);
        if (!m)
            return (void *)1;
        m->from = id;
        m->amount = 2;
        snprintf(m->text, sizeof m->text, "from %d round %d", id, r);
        failures += desync_desync(inbox, receive, m) != 0;
        failures += desync_sync_all(accounts, 2, transfer, NULL) != 0;
        if (r % 10 == 0) {
            desync_future_t *f = desync_future_desync(accounts[0], snapshot, NULL);
            void *v = NULL;
            failures += !f || desync_future_wait(f, &v) != 0 || !v;
            free(v);
            desync_future_free(f);
            struct account seen;
            failures += desync_sync(accounts[1], read_account, &seen) != 0 || seen.ops < 0;
        }
#ifdef RACY
        racy_counter++;
#endif
    }
    return (void *)(intptr_t)failures;
}

static void read_long(void *data, void *arg) { *(long *)arg = *(long *)data; }

int main(void) {
    static struct account a0, a1;
    static long inbox_sum;
    accounts[0] = desync_new(&a0, NULL);
    accounts[1] = desync_new(&a1, NULL);
    inbox = desync_new(&inbox_sum, NULL);
    if (!accounts[0] || !accounts[1] || !inbox)
        return 1;

    /* A promise completed on another thread, waited for here. */
    struct handoff h;
    desync_future_t *ready = NULL;
    h.promise = desync_promise_new(&ready);
    pthread_t p;
    if (!h.promise || pthread_create(&p, NULL, producer, &h) != 0)
        return 1;

    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) != 0)
            return 1;
    long failures = 0;
    void *payload = NULL;
    failures += desync_future_wait(ready, &payload) != 0 || ((long *)payload)[7] != 70;
    desync_future_free(ready);
    pthread_join(p, NULL);
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        failures += (long)(intptr_t)r;
    }

    struct account s0, s1;
    long sum = 0;
    desync_sync(accounts[0], read_account, &s0);
    desync_sync(accounts[1], read_account, &s1);
    desync_sync(inbox, read_long, &sum);
    long deposits = (long)THREADS * ROUNDS;
    if (failures || s0.balance + s1.balance != deposits || sum != 2 * deposits) {
        fprintf(stderr, "tsan_user: wrong results (%ld failures, balances %ld + %ld, inbox %ld)\n",
                failures, s0.balance, s1.balance, sum);
        return 1;
    }
    desync_release(accounts[0]);
    desync_release(accounts[1]);
    desync_release(inbox);
    desync_shutdown();
#ifdef RACY
    printf("tsan_user ok (racy counter %ld)\n", racy_counter);
#else
    printf("tsan_user ok\n");
#endif
    return 0;
}
