/*
 * Channels: a bounded multi-producer queue whose reading end is a stream.
 *
 * One mutex guards the state; every call holds it for a few instructions
 * (no allocation on the send/take paths once the ring has grown) and calls
 * wakers, completes promises and wakes blocked senders only after dropping
 * it. State:
 *   ring     accepted items, at most `cap` (grown by doubling up to cap);
 *   waitq    sends not accepted yet, in arrival order: blocking sends (a node
 *            on the sender's stack with a dsy_swaiter) and send futures (a
 *            heap node with a promise). Once the reader's takes leave the
 *            ring at half the capacity or less (cap > 0), the waiting sends
 *            move into the ring while it has room and are told they were
 *            accepted; with cap 0 the first one is handed to the reader
 *            directly. Letting senders in by half a ring rather than per
 *            item wakes a sender that keeps the channel full once per cap/2
 *            items instead of once per item (for cap 1 and 2, the two are
 *            the same).
 *   rslot    the reader's waker (set when its poll found nothing).
 *
 * Rendezvous (cap 0): send and send_future complete only once the reader has
 * taken the item. try_send succeeds only while the reader is waiting, i.e.
 * its last poll found the channel empty and left a waker (a blocked next, a
 * pending next_future, or a pipe reading the channel): the item is then
 * handed over in a one-item slot and the reader is woken; it is the item the
 * reader's next poll returns.
 *
 * Handles: desync_channel_t is the channel itself; retain counts one more
 * sending handle, close one less. The memory goes when every handle is
 * closed and the receiver freed (`refs` counts both). Misuses seen while the
 * receiver still holds the memory are checked under the lock: with no
 * handle open (senders == 0), a close is ignored, a retain returns NULL and
 * a send gets DESYNC_EPIPE.
 */
#include "ring.h"
#include "stream_internal.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct snode {
    struct snode *next;
    void *item;
    desync_promise_t *promise; /* send_future; NULL for a blocking send */
    dsy_swaiter w;             /* blocking send waits here */
    int status;                /* blocking send: 0 accepted, DESYNC_EPIPE */
} snode;

struct desync_channel {
    desync_stream_t rx; /* the receiving stream; first member */
    pthread_mutex_t mu;
    size_t cap;
    dsy_ring ring; /* accepted items */
    snode *wq_head, *wq_tail;
    size_t senders;
    bool reader_gone;
    bool reader_waiting; /* last poll found nothing and left a waker */
    dsy_refcount refs;
    dsy_wslot rslot;
};

static void chan_unref(desync_channel_t *c) {
    if (!dsy_ref_dec(&c->refs))
        return;
    pthread_mutex_destroy(&c->mu);
    dsy_ring_destroy(&c->ring);
    dsy_handle_free(c, sizeof *c);
}

/* The ring's first size; it doubles up to the capacity (a rendezvous
 * channel hands items over in a one-item ring). */
#define RING_FIRST 16u

/* Makes room for one more item (len < cap); false on ENOMEM. Lock held. */
static bool ring_room(desync_channel_t *c) {
    return dsy_ring_reserve(&c->ring, RING_FIRST, c->cap ? c->cap : 1);
}

static void wq_append(desync_channel_t *c, snode *n) {
    n->next = NULL;
    if (c->wq_tail)
        c->wq_tail->next = n;
    else
        c->wq_head = n;
    c->wq_tail = n;
}

static snode *wq_pop(desync_channel_t *c) {
    snode *n = c->wq_head;
    if (n && !(c->wq_head = n->next))
        c->wq_tail = NULL;
    return n;
}

/* Tells a waiting send its outcome (lock not held). The node may vanish as
 * soon as a blocking sender sees the signal. */
static void resolve(snode *n, int status) {
    if (n->promise) {
        desync_promise_t *p = n->promise;
        free(n);
        if (status == 0)
            desync_promise_complete(p, NULL);
        else
            desync_promise_cancel(p);
        return;
    }
    n->status = status;
    dsy_swaiter_wake(&n->w);
}

/* Tells the sends let_in returned that they were accepted. */
static void resolve_all(snode *done) {
    while (done) {
        snode *n = done;
        done = n->next; /* n may vanish once resolved */
        resolve(n, 0);
    }
}

/* ---------------------------------------------------------------- reader */

/* Moves waiting sends into the ring while it has room (lock held); returns
 * them, linked through `next`, to be resolved once the lock is dropped. */
static snode *let_in(desync_channel_t *c) {
    snode *first = NULL, **link = &first;
    while (c->wq_head && c->ring.len < c->cap && ring_room(c)) {
        snode *n = wq_pop(c);
        dsy_ring_put(&c->ring, n->item);
        *link = n;
        link = &n->next;
    }
    *link = NULL;
    return first;
}

static int chan_poll(desync_stream_t *s, void **item, const desync_waker_t *w) {
    desync_channel_t *c = (desync_channel_t *)s;
    snode *done = NULL;
    int r = 0;
    dsy_wslot_clear(&c->rslot); /* a new poll replaces the old waker */
    pthread_mutex_lock(&c->mu);
    c->reader_waiting = false;
    if (c->ring.len) {
        *item = dsy_ring_take(&c->ring);
        if (c->wq_head && c->ring.len <= c->cap / 2)
            done = let_in(c);
    } else if (c->wq_head) {
        done = wq_pop(c); /* cap 0 (or no memory to let it in) */
        done->next = NULL;
        *item = done->item;
    } else if (c->senders == 0) {
        r = DESYNC_EOF;
    } else {
        r = DESYNC_EAGAIN;
        if (w && w->wake) {
            dsy_wslot_set(&c->rslot, w); /* under the lock: no send slips by */
            c->reader_waiting = true;
        }
    }
    pthread_mutex_unlock(&c->mu);
    resolve_all(done);
    return r;
}

static size_t chan_take(desync_stream_t *s, void **items, size_t max) {
    desync_channel_t *c = (desync_channel_t *)s;
    snode *done = NULL;
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    if (c->ring.len) {
        c->reader_waiting = false;
        while (n < max && c->ring.len)
            items[n++] = dsy_ring_take(&c->ring);
        if (c->wq_head && c->ring.len <= c->cap / 2)
            done = let_in(c);
    }
    pthread_mutex_unlock(&c->mu);
    resolve_all(done);
    return n;
}

static void chan_free(desync_stream_t *s) {
    desync_channel_t *c = (desync_channel_t *)s;
    pthread_mutex_lock(&c->mu);
    c->reader_gone = true;
    c->reader_waiting = false;
    snode *wq = c->wq_head;
    c->wq_head = c->wq_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    dsy_wslot_quiesce(&c->rslot);
    /* Senders see reader_gone and leave the ring alone from now on. */
    while (c->ring.len) {
        void *item = dsy_ring_take(&c->ring);
        if (s->item_free)
            s->item_free(item);
    }
    while (wq) {
        snode *n = wq;
        wq = n->next;
        resolve(n, DESYNC_EPIPE);
    }
    chan_unref(c);
}

static const dsy_stream_vt chan_vt = {chan_poll, chan_free, NULL, NULL, chan_take, true};

/* --------------------------------------------------------------- senders */

desync_channel_t *desync_channel_new(size_t capacity, desync_stream_t **receiver) {
    if (!receiver)
        return NULL;
    desync_channel_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cap = capacity;
    dsy_ring_init(&c->ring);
    if (!ring_room(c) || pthread_mutex_init(&c->mu, NULL) != 0) {
        dsy_ring_destroy(&c->ring);
        free(c);
        return NULL;
    }
    dsy_stream_init(&c->rx, &chan_vt);
    dsy_wslot_init(&c->rslot);
    c->senders = 1;
    dsy_ref_init(&c->refs, 2); /* the handle and the receiver */
    *receiver = &c->rx;
    return c;
}

desync_channel_t *desync_channel_retain(desync_channel_t *c) {
    if (!c)
        return NULL;
    pthread_mutex_lock(&c->mu);
    bool open = c->senders > 0; /* else a misuse: no handle to copy */
    if (open) {
        c->senders++;
        dsy_ref_inc(&c->refs);
    }
    pthread_mutex_unlock(&c->mu);
    return open ? c : NULL;
}

void desync_channel_close(desync_channel_t *c) {
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    /* A close beyond the handles that exist is a misuse; while the reader
     * keeps the memory alive it is ignored (and holds no reference). */
    bool extra = c->senders == 0;
    bool last = !extra && --c->senders == 0;
    pthread_mutex_unlock(&c->mu);
    if (extra)
        return;
    if (last)
        dsy_wslot_fire(&c->rslot); /* the reader may now see the end */
    chan_unref(c);
}

/* A send cannot be delivered (lock held): the reader is gone, or no sending
 * handle is open (a send after the last close, a misuse: the reader may
 * already have seen the end). */
static bool send_closed(desync_channel_t *c) { return c->reader_gone || c->senders == 0; }

/* Queues item if the channel has room (with the lock held): 1 queued,
 * 0 full, DESYNC_ENOMEM. Rendezvous channels have room only for a waiting
 * reader. */
static int try_put(desync_channel_t *c, void *item) {
    if (c->wq_head)
        return 0;
    if (c->cap == 0) {
        if (!c->reader_waiting || c->ring.len)
            return 0;
    } else if (c->ring.len >= c->cap) {
        return 0;
    } else if (!ring_room(c)) {
        return DESYNC_ENOMEM;
    }
    dsy_ring_put(&c->ring, item);
    c->reader_waiting = false;
    return 1;
}

int desync_channel_try_send(desync_channel_t *c, void *item) {
    if (!c)
        return DESYNC_EINVAL;
    pthread_mutex_lock(&c->mu);
    int r = send_closed(c) ? DESYNC_EPIPE : try_put(c, item);
    pthread_mutex_unlock(&c->mu);
    if (r == 1) {
        dsy_wslot_fire(&c->rslot);
        return 0;
    }
    return r == 0 ? DESYNC_EAGAIN : r;
}

int desync_channel_send(desync_channel_t *c, void *item) {
    if (!c)
        return DESYNC_EINVAL;
    snode n;
    pthread_mutex_lock(&c->mu);
    int r = send_closed(c) ? DESYNC_EPIPE : c->cap ? try_put(c, item) : 0;
    if (r == 0) {
        /* Full (or rendezvous): wait in line until the reader accepts it. */
        n.item = item;
        n.promise = NULL;
        n.status = 0;
        dsy_swaiter_reset(&n.w);
        wq_append(c, &n);
    }
    pthread_mutex_unlock(&c->mu);
    if (r < 0)
        return r;
    dsy_wslot_fire(&c->rslot);
    if (r == 1)
        return 0;
    dsy_swaiter_wait(&n.w, 0);
    return n.status;
}

desync_future_t *desync_channel_send_future(desync_channel_t *c, void *item) {
    if (!c)
        return NULL;
    desync_future_t *f = NULL;
    desync_promise_t *p = desync_promise_new(&f);
    snode *n = malloc(sizeof *n);
    if (!p || !n) {
        free(n);
        if (p) {
            desync_promise_cancel(p);
            desync_future_free(f);
        }
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    int r = send_closed(c) ? DESYNC_EPIPE : c->cap ? try_put(c, item) : 0;
    if (r == 0) {
        n->item = item;
        n->promise = p;
        wq_append(c, n);
    }
    pthread_mutex_unlock(&c->mu);
    if (r == DESYNC_ENOMEM) {
        free(n);
        desync_promise_cancel(p);
        desync_future_free(f);
        return NULL;
    }
    if (r == DESYNC_EPIPE) {
        free(n);
        desync_promise_cancel(p);
        return f;
    }
    dsy_wslot_fire(&c->rslot);
    if (r == 1) {
        free(n);
        desync_promise_complete(p, NULL);
    }
    return f;
}
