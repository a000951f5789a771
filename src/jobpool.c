/*
 * Job node pool: per-thread caches of 64-byte job nodes, exchanged in whole
 * "magazines" through a global depot (Bonwick's magazine allocator, as in
 * Solaris' kmem and Linux' slab caches).
 *
 * A producer thread that queues jobs allocates nodes; a worker thread frees
 * them after running them. With plain per-thread free lists the producer's
 * list would always be empty and the worker's always full, so full lists
 * (MAG nodes) move to the depot and empty caches take one back: one mutex
 * operation per MAG jobs instead of a malloc/free pair per job.
 *
 * Invariants: a thread's cache holds at most 2*MAG nodes; the depot holds at
 * most DEPOT_MAX magazines (beyond that, nodes go back to malloc). A thread's
 * cache is returned to the depot (or freed) when the thread exits.
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

#define MAG 64
#define DEPOT_MAX 256

/* A free node reuses its own memory: `next` chains the nodes of a magazine,
 * `mag_next` (only in a magazine's first node) chains magazines in the depot. */
typedef struct free_node {
    struct free_node *next;
    struct free_node *mag_next;
} free_node;

_Static_assert(sizeof(dsy_job) == 64, "job nodes are one cache line");

static struct {
    pthread_mutex_t lock;
    free_node *mags; /* full magazines of exactly MAG nodes */
    unsigned count;
} depot = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

typedef struct {
    free_node *list;
    unsigned n;
    bool registered;
} cache_t;

static DSY_TLS cache_t cache;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static void free_chain(free_node *f) {
    while (f) {
        free_node *next = f->next;
        free(f);
        f = next;
    }
}

/* Moves the MAG most recently freed nodes of the cache out as one magazine:
 * into the depot, or back to malloc when the depot is full. */
static void cache_spill(void) {
    free_node *mag = cache.list, *last = mag;
    for (unsigned i = 1; i < MAG; i++)
        last = last->next;
    cache.list = last->next;
    cache.n -= MAG;
    last->next = NULL;
    pthread_mutex_lock(&depot.lock);
    if (depot.count < DEPOT_MAX) {
        mag->mag_next = depot.mags;
        depot.mags = mag;
        depot.count++;
        mag = NULL;
    }
    pthread_mutex_unlock(&depot.lock);
    free_chain(mag);
}

/* Thread exit: whole magazines go to the depot, the rest back to malloc. */
static void cache_destroy(void *unused) {
    (void)unused;
    while (cache.n >= MAG)
        cache_spill();
    free_chain(cache.list);
    cache.list = NULL;
    cache.n = 0;
}

static void cache_key_init(void) { pthread_key_create(&cache_key, cache_destroy); }

static void cache_register(void) {
    pthread_once(&cache_key_once, cache_key_init);
    pthread_setspecific(cache_key, &cache);
    cache.registered = true;
}

dsy_job *dsy_job_alloc(void) {
    free_node *f = cache.list;
    if (DSY_LIKELY(f != NULL)) {
        cache.list = f->next;
        cache.n--;
        return (dsy_job *)(void *)f;
    }
    if (!cache.registered)
        cache_register();
    pthread_mutex_lock(&depot.lock);
    f = depot.mags;
    if (f) {
        depot.mags = f->mag_next;
        depot.count--;
    }
    pthread_mutex_unlock(&depot.lock);
    if (f) {
        cache.list = f->next;
        cache.n = MAG - 1;
        return (dsy_job *)(void *)f;
    }
    return malloc(sizeof(dsy_job));
}

void dsy_job_free(dsy_job *j) {
    if (DSY_UNLIKELY(!cache.registered))
        cache_register(); /* so the cache is handed back when the thread exits */
    free_node *f = (free_node *)(void *)j;
    f->next = cache.list;
    cache.list = f;
    if (DSY_LIKELY(++cache.n < 2 * MAG))
        return;
    cache_spill();
}
