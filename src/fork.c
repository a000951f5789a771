/*
 * fork(): the pthread_atfork handlers, and the registry of the threads that
 * use the library (see the fork section of internal.h).
 *
 * The child of a fork keeps only the thread that called fork. So that it can
 * use the library:
 *   - prepare takes every global lock of the library: the registry mutex,
 *     the timer heaps' list and every heap's lock (timer.c), the scheduler
 *     list and every scheduler's lock, the multi-object link lock, the
 *     queues' cold-part list (both leaves), the pools' depot and
 *     free-segment mutexes, the OS layer's (in this order); parent releases
 *     them; child releases or resets them, with the state they guard whole.
 *   - child then looks at the record of every thread that vanished: queues
 *     whose token it held, or that it waited for or was linking a node into,
 *     are forked off (their jobs never run in the child: the thread that was
 *     running them is gone, and the nodes of vanished waiters live on stacks
 *     that new threads may reuse); an entry it was handing to a scheduler is
 *     listed; it is taken off the waiter list of the future it waited on;
 *     its deadlock-detection slot is freed (waitgraph.c).
 *   - the schedulers keep their run lists (work that was queued, not
 *     running, stays runnable) but lose their workers; threads start again
 *     on demand (dsy_sched_fork_restart).
 * Per-object locks (a future's, a channel's, a stream's waker slot) are not
 * taken: an object another thread was in the middle of a call on at the
 * instant of fork may stay locked in the child (documented in desync.h).
 */
#include "internal.h"

#include <pthread.h>

DSY_TLS dsy_thread dsy_self;
_Atomic unsigned dsy_forked;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static dsy_thread *registry;
static pthread_key_t exit_key;
static bool exit_key_ok;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------------- registry */

static void unregister_locked(dsy_thread *t) {
    DSY_DLIST_UNLINK(&registry, t, prev, next);
    t->prev = t->next = NULL;
}

/* Thread exit: the record's memory goes with the thread. */
static void thread_exit(void *arg) {
    dsy_thread *t = arg;
    pthread_mutex_lock(&registry_lock);
    unregister_locked(t);
    pthread_mutex_unlock(&registry_lock);
    t->state = 0; /* a later call on this thread (another destructor) registers again */
}

static void exit_key_init(void) { exit_key_ok = pthread_key_create(&exit_key, thread_exit) == 0; }

void dsy_thread_register(void) {
    dsy_thread *t = &dsy_self;
    dsy_fork_init();
    /* Without the exit hook the record could outlive its thread in the
     * registry: such a thread is not tracked (a fork then treats it as if it
     * held nothing). */
    t->state = 2;
    pthread_once(&exit_key_once, exit_key_init);
    if (!exit_key_ok || pthread_setspecific(exit_key, t) != 0)
        return;
    pthread_mutex_lock(&registry_lock);
    t->prev = NULL;
    t->next = registry;
    if (registry)
        registry->prev = t;
    registry = t;
    pthread_mutex_unlock(&registry_lock);
    t->state = 1;
}

/* ------------------------------------------------------------- handlers */

static void fork_prepare(void) {
    pthread_mutex_lock(&registry_lock);
    dsy_timers_fork_prepare();
    dsy_sched_fork_prepare();
    dsy_multi_fork_prepare();
    dsy_queue_fork_prepare();
    dsy_pool_fork_prepare();
    dsy_os_fork_prepare();
}

static void fork_parent(void) {
    dsy_os_fork_parent();
    dsy_pool_fork_parent();
    dsy_queue_fork_parent();
    dsy_multi_fork_parent();
    dsy_sched_fork_parent();
    dsy_timers_fork_parent();
    pthread_mutex_unlock(&registry_lock);
}

static void fork_child(void) {
    dsy_os_fork_child();
    dsy_queue_fork_child();
    dsy_pool_fork_child();
    dsy_wait_fork_child();
    /* Before any thread starts here: a new thread may reuse a vanished one's
     * stack, where its record and frames are. */
    dsy_thread *self = &dsy_self;
    for (dsy_thread *t = registry; t; t = t->next) {
        if (t == self)
            continue;
        dsy_queue_fork_vanished(t);
        dsy_future_fork_vanished(t);
        dsy_sched_fork_vanished(t);
    }
    if (self->state == 1) {
        dsy_queue_fork_survivor(self);
        self->prev = self->next = NULL;
        registry = self;
    } else {
        registry = NULL;
    }
    self->survivor = true;
    atomic_fetch_add_explicit(&dsy_forked, 1, memory_order_relaxed);
    dsy_sched_fork_child();
    dsy_multi_fork_child();
    dsy_timers_fork_child();
    pthread_mutex_unlock(&registry_lock);
}

static void atfork_register(void) {
    /* On failure (ENOMEM) fork is handled as before this file existed. */
    (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void dsy_fork_init(void) { pthread_once(&atfork_once, atfork_register); }
