/*
 * Jobs over several objects (bench/README.md):
 *
 *   W9 sync-all-idle: desync_sync_all on two idle objects, beside
 *      desync_sync on one idle object (the target: at most 3x).
 *   R3 bank: 1,000 accounts, 8 threads, 1,000,000 transfers in all of a
 *      random amount between two random accounts (refused when the source
 *      holds less). libdesync: one object per account, owning it
 *      (desync_new_copy), each transfer a desync_sync_all over both;
 *      baseline: one pthread mutex per account, taken in address order. The total of the balances is checked after
 *      each run.
 */
#include "bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------ W9 sync-all-idle */

static void w9_inc_both(void *const datas[], void *arg) {
    (void)arg;
    ++*(uint64_t *)datas[0];
    ++*(uint64_t *)datas[1];
}

static sample_t w9_sync_all(uint64_t n) {
    desync_t *o[2] = {lib_counter(), lib_counter()};
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        if (desync_sync_all(o, 2, w9_inc_both, NULL) != 0)
            die("desync_sync_all failed at op %" PRIu64, i);
        if ((i & 0xffff) == 0)
            PROGRESS(i);
    }
    uint64_t t1 = now_ns();
    expect_eq("first counter", lib_read(o[0]), n);
    expect_eq("second counter", lib_read(o[1]), n);
    desync_release(o[0]);
    desync_release(o[1]);
    return per_op(t1 - t0, n);
}

void w9_sync_all_idle(row_t *row) {
    variant_t v[] = {{"desync_sync_all, 2 objects", w9_sync_all, scaled(5000000), 0, 0},
                     {"desync_sync, 1 object", w1_desync, scaled(5000000), 0, 0}};
    printf("  1 thread, %" PRIu64 " desync_sync_all (counter++ on each) over two idle "
           "objects,\n  beside as many desync_sync (counter++) on one idle object; ns per "
           "call\n",
           v[0].n);
    measure("W9", v, 2);
    set_row(row, &v[0], &v[1]);
    snprintf(row->extra, sizeof row->extra,
             "desync_sync on one idle object (W9's target: libdesync <= 3x this)");
}

/* -------------------------------------------------------------- R3 bank */

#define R3_ACCOUNTS 1000
#define R3_THREADS 8
#define R3_START 1000 /* each account's opening balance */

typedef struct {
    pthread_mutex_t m; /* baseline only */
    int64_t balance;
} r3_account_t;

typedef struct {
    r3_account_t acc[R3_ACCOUNTS];
    desync_t *obj[R3_ACCOUNTS]; /* libdesync: each owns a copy of its account */
    uint64_t n;                 /* transfers per thread */
    pthread_barrier_t bar;
} r3_t;

typedef struct {
    r3_t *b;
    int t;
} r3_arg_t;

static uint32_t r3_rnd(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* from pays to, unless from holds less than amount (the same account when
 * both are one: no change). */
static void r3_transfer(r3_account_t *from, r3_account_t *to, int64_t amount) {
    if (from->balance < amount)
        return;
    from->balance -= amount;
    to->balance += amount;
}

static void r3_transfer_job(void *const datas[], void *arg) {
    r3_transfer(datas[0], datas[1], *(const int64_t *)arg);
}

static void *r3_desync_thread(void *p) {
    r3_arg_t *a = p;
    r3_t *b = a->b;
    uint32_t s = 2654435761u * (uint32_t)(a->t + 1);
    pthread_barrier_wait(&b->bar);
    for (uint64_t i = 0; i < b->n; i++) {
        uint32_t from = r3_rnd(&s) % R3_ACCOUNTS, to = r3_rnd(&s) % R3_ACCOUNTS;
        int64_t amount = 1 + r3_rnd(&s) % 100;
        desync_t *pair[2] = {b->obj[from], b->obj[to]};
        CHECK_DS(desync_sync_all(pair, 2, r3_transfer_job, &amount));
        if (a->t == 0 && (i & 0xfff) == 0)
            PROGRESS(i);
    }
    return NULL;
}

static void *r3_mutex_thread(void *p) {
    r3_arg_t *a = p;
    r3_t *b = a->b;
    uint32_t s = 2654435761u * (uint32_t)(a->t + 1);
    pthread_barrier_wait(&b->bar);
    for (uint64_t i = 0; i < b->n; i++) {
        uint32_t from = r3_rnd(&s) % R3_ACCOUNTS, to = r3_rnd(&s) % R3_ACCOUNTS;
        int64_t amount = 1 + r3_rnd(&s) % 100;
        r3_account_t *x = &b->acc[from], *y = &b->acc[to];
        r3_account_t *lo = x < y ? x : y, *hi = x < y ? y : x;
        pthread_mutex_lock(&lo->m);
        if (hi != lo)
            pthread_mutex_lock(&hi->m);
        r3_transfer(x, y, amount);
        if (hi != lo)
            pthread_mutex_unlock(&hi->m);
        pthread_mutex_unlock(&lo->m);
        if (a->t == 0 && (i & 0xfff) == 0)
            PROGRESS(i);
    }
    return NULL;
}

static void r3_read_job(void *data, void *arg) {
    *(int64_t *)arg = ((r3_account_t *)data)->balance;
}

static sample_t r3_run(uint64_t total, int use_lib) {
    r3_t *b = calloc(1, sizeof *b);
    if (!b)
        die("out of memory");
    b->n = total / R3_THREADS;
    CHECK_PT(pthread_barrier_init(&b->bar, NULL, R3_THREADS + 1));
    for (int i = 0; i < R3_ACCOUNTS; i++) {
        b->acc[i].balance = R3_START;
        CHECK_PT(pthread_mutex_init(&b->acc[i].m, NULL));
        /* Each object owns its account (its data in the object's own line,
         * as the baseline's balance sits beside its mutex). */
        r3_account_t a = {.balance = R3_START};
        if (use_lib && !(b->obj[i] = desync_new_copy(&a, sizeof a, NULL)))
            die("desync_new_copy returned NULL");
    }
    pthread_t th[R3_THREADS];
    r3_arg_t args[R3_THREADS];
    for (int t = 0; t < R3_THREADS; t++) {
        args[t] = (r3_arg_t){b, t};
        CHECK_PT(pthread_create(&th[t], NULL, use_lib ? r3_desync_thread : r3_mutex_thread,
                                &args[t]));
    }
    pthread_barrier_wait(&b->bar);
    uint64_t t0 = now_ns();
    for (int t = 0; t < R3_THREADS; t++)
        CHECK_PT(pthread_join(th[t], NULL));
    uint64_t t1 = now_ns();
    int64_t sum = 0;
    for (int i = 0; i < R3_ACCOUNTS; i++) {
        int64_t v = b->acc[i].balance;
        if (use_lib) {
            CHECK_DS(desync_sync(b->obj[i], r3_read_job, &v));
            desync_release(b->obj[i]);
        }
        sum += v;
        pthread_mutex_destroy(&b->acc[i].m);
    }
    expect_eq("total of the balances", (uint64_t)sum, (uint64_t)R3_ACCOUNTS * R3_START);
    pthread_barrier_destroy(&b->bar);
    free(b);
    return per_op(t1 - t0, (total / R3_THREADS) * R3_THREADS);
}

static sample_t r3_desync(uint64_t n) { return r3_run(n, 1); }
static sample_t r3_mutex(uint64_t n) { return r3_run(n, 0); }

void r3_bank(row_t *row) {
    uint64_t n = scaled(1000000);
    variant_t v[] = {{"libdesync desync_sync_all", r3_desync, n, 0, 0},
                     {"mutex per account, address order", r3_mutex, n, 0, 0}};
    printf("  %d accounts of %d, %d threads, %" PRIu64 " transfers in all of 1..100 between "
           "two random accounts\n"
           "  (possibly the same one; refused when the source holds less). libdesync: one "
           "object per account,\n  each transfer a desync_sync_all\n"
           "  over both; baseline: one pthread mutex per account, both taken in address "
           "order.\n"
           "  The total is checked after each run. ns per transfer (lower is better)\n",
           R3_ACCOUNTS, R3_START, R3_THREADS, n);
    measure("R3", v, 2);
    set_row(row, &v[0], &v[1]);
    printf("    transfers/s: libdesync %.2f M, mutex %.2f M\n", 1e3 / v[0].med_ns,
           1e3 / v[1].med_ns);
    snprintf(row->extra, sizeof row->extra,
             "mutex per account in address order; transfers/s: libdesync %.2f M, mutex %.2f M",
             1e3 / v[0].med_ns, 1e3 / v[1].med_ns);
}
