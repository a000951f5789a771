/*
 * libdesync bank: 8 threads move money between 100 accounts at random. Each
 * account is an object; a transfer is one job over the two accounts it
 * touches (desync_sync_all), so it sees and changes both balances at once.
 * There is no lock and no lock order: any thread may name any two accounts
 * in any order (even the same account twice) and nothing deadlocks. An
 * audit (desync_desync_all over every account) runs between transfers and
 * always finds the same total.
 */
#include <desync.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ACCOUNTS 100
#define THREADS 8
#define TRANSFERS 20000 /* per thread */
#define OPENING 1000    /* each account's opening balance */

static desync_t *accounts[ACCOUNTS]; /* each one's data is a long balance */

/* datas[0] pays datas[1] `*amount`, unless it holds less. */
static void transfer(void *const datas[], void *arg) {
    long *from = datas[0], *to = datas[1], amount = *(long *)arg;
    if (*from >= amount) {
        *from -= amount;
        *to += amount;
    }
}

/* Runs with every account to itself: no transfer is half done. */
static void audit(void *const datas[], void *arg) {
    long total = 0;
    for (int i = 0; i < ACCOUNTS; i++)
        total += *(long *)datas[i];
    if (total != (long)ACCOUNTS * OPENING) {
        fprintf(stderr, "audit %d: the total is %ld!\n", (int)(intptr_t)arg, total);
        abort();
    }
}

static void *teller(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1u;
    for (int i = 0; i < TRANSFERS; i++) {
        long amount = 1 + rand_r(&seed) % 50;
        desync_t *pair[2] = {accounts[rand_r(&seed) % ACCOUNTS],
                             accounts[rand_r(&seed) % ACCOUNTS]};
        /* Blocks until the transfer has run; amount may live on our stack. */
        int rc = desync_sync_all(pair, 2, transfer, &amount);
        if (rc != 0) {
            fprintf(stderr, "transfer: %s\n", desync_strerror(rc));
            abort();
        }
        /* Now and then an audit, queued and left to run in the background
         * (the array is copied; the argument is passed as it is). */
        if (i % 5000 == 0)
            desync_desync_all(accounts, ACCOUNTS, audit, (void *)(intptr_t)i);
    }
    return NULL;
}

static void read_balance(void *data, void *out) { *(long *)out = *(long *)data; }

int main(void) {
    atexit(desync_shutdown); /* at exit: finish background work, stop threads */
    for (int i = 0; i < ACCOUNTS; i++) {
        /* Each account object owns its balance: a copy in the object's own
         * memory, on the cache line its queue uses. */
        long opening = OPENING;
        if (!(accounts[i] = desync_new_copy(&opening, sizeof opening, NULL)))
            return 1;
    }
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, teller, (void *)(uintptr_t)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);

    long total = 0, richest = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        long b;
        desync_sync(accounts[i], read_balance, &b); /* after every queued job */
        total += b;
        if (b > richest)
            richest = b;
        desync_release(accounts[i]);
    }
    printf("%d transfers between %d accounts: total %ld (opened with %ld), richest %ld\n",
           THREADS * TRANSFERS, ACCOUNTS, total, (long)ACCOUNTS * OPENING, richest);
    return total == (long)ACCOUNTS * OPENING ? 0 : 1;
}
