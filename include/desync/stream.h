/**
 * @file
 * libdesync streams: sequences of items that arrive over time, channels that
 * feed them, and pipes that process them on a Desync object's queue.
 * Included by <desync.h>; do not include directly.
 *
 * A stream yields void * items (ownership passes to the reader) until it ends
 * (DESYNC_EOF). Streams never busy-wait: a pending stream calls the waker it
 * was last polled with when it may have an item. A stream has one reader at a
 * time (calls on one stream must not overlap).
 */
#ifndef DESYNC_STREAM_H
#define DESYNC_STREAM_H

#ifndef DESYNC_H
#error "include <desync.h>, not <desync/stream.h>"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** A stream of void * items (desync_stream_next). */
typedef struct desync_stream desync_stream_t;
/** The sending end of a channel (desync_channel_new). */
typedef struct desync_channel desync_channel_t;

/** A user-defined stream. poll_next returns 0 with *item set, DESYNC_EAGAIN
 * after arranging for waker->wake(waker->ctx) to be called when an item may
 * be ready (waker may be NULL: then just report), or DESYNC_EOF at the end.
 * free releases self (may be NULL). */
typedef struct desync_stream_ops {
    /** The next item, DESYNC_EAGAIN or DESYNC_EOF, as said above. */
    int (*poll_next)(void *self, void **item, const desync_waker_t *waker);
    /** Releases self (may be NULL). */
    void (*free)(void *self);
} desync_stream_ops_t;

/** A stream over ops/self (ops is not copied: keep it alive, e.g.\ static).
 * NULL for NULL ops or poll_next, or on ENOMEM (self is then not freed). */
DESYNC_API desync_stream_t *desync_stream_new(const desync_stream_ops_t *ops, void *self);

/** A stream yielding the count pointers of items (copied), then DESYNC_EOF.
 * NULL for items == NULL with count > 0, or on ENOMEM. */
DESYNC_API desync_stream_t *desync_stream_from_array(void *const *items, size_t count);

/* -------------------------------------------------------------- channels */

/**
 * A channel holding up to `capacity` items (0: a rendezvous channel, where a
 * send completes only once the reader has taken the item). The returned
 * handle is the sending end; *receiver gets the reading stream.
 * NULL for NULL receiver, or on ENOMEM.
 *
 * Handles: the channel has one sending handle from new plus one per retain
 * (all are the same pointer); each is closed once. The memory goes once
 * every handle is closed and the reader freed; after that any call on c is
 * undefined (ASan reports it). While the reader exists, misuses of closed
 * handles are checked: an extra close is ignored, a retain returns NULL and
 * sends return DESYNC_EPIPE.
 * Concurrency: send, try_send and send_future may run on any number of
 * threads at once on the same handle. A close must not overlap other calls
 * made through the handle it closes; a thread that sends while another may
 * close should own a handle of its own (retain). A retain needs an open
 * handle for the whole call: it must not race with the close of the last
 * one.
 */
DESYNC_API desync_channel_t *desync_channel_new(size_t capacity, desync_stream_t **receiver);

/** Another sending handle of the same channel (each is closed separately);
 * returns c. NULL for NULL c, or when no handle of c is open (every one
 * was closed). */
DESYNC_API desync_channel_t *desync_channel_retain(desync_channel_t *c);

/**
 * Blocks while the channel is full, then queues item: 0. A send that had to
 * wait is let in once the reader has taken the channel down to half its
 * capacity or less (rounded down; with several sends waiting, as many as
 * fit then, in order), so a sender that keeps the channel full wakes once
 * per capacity/2 items rather than once per item. DESYNC_EPIPE if the
 * reader was freed, or if every sending handle was already closed (a send
 * after close; the reader may have seen the end): the item is not taken and
 * stays the caller's. DESYNC_ENOMEM if the buffer could not grow (item not
 * taken). DESYNC_EINVAL for NULL c. Concurrency: see desync_channel_new.
 */
DESYNC_API int desync_channel_send(desync_channel_t *c, void *item);

/** As send, but DESYNC_EAGAIN instead of blocking when full or while other
 * sends wait to be let in (the same other errors: DESYNC_EPIPE,
 * DESYNC_ENOMEM, DESYNC_EINVAL). */
DESYNC_API int desync_channel_try_send(desync_channel_t *c, void *item);

/** A future that completes (value NULL) once item was accepted (when the
 * channel is full, as a waiting send is: see desync_channel_send), or with
 * DESYNC_ECANCELED if the reader went away first or every sending handle
 * was closed (the item then was not taken). NULL for NULL c or on ENOMEM. */
DESYNC_API desync_future_t *desync_channel_send_future(desync_channel_t *c, void *item);

/**
 * Closes and frees this sending handle. Once every handle is closed, the
 * reader gets the items still queued, then DESYNC_EOF. Ignores NULL, and a
 * close when every handle is closed already (while the reader exists).
 */
DESYNC_API void desync_channel_close(desync_channel_t *c);

/* --------------------------------------------------------------- reading */

/** Blocks until an item (0, *item set) or the end (DESYNC_EOF).
 * DESYNC_EINVAL for NULL s or item. The output of a pipe that ran out of
 * memory ends with DESYNC_ENOMEM instead of DESYNC_EOF (see desync_pipe);
 * a user stream's own error codes are passed on. The same holds for the
 * other reading calls below. */
DESYNC_API int desync_stream_next(desync_stream_t *s, void **item);

/** As next, but DESYNC_ETIMEDOUT after timeout_ns. */
DESYNC_API int desync_stream_next_for(desync_stream_t *s, uint64_t timeout_ns, void **item);

/** Never blocks: 0 with an item, DESYNC_EAGAIN when none is ready, DESYNC_EOF. */
DESYNC_API int desync_stream_try_next(desync_stream_t *s, void **item);

/** As try_next, but when pending calls waker->wake(ctx) once an item may be
 * ready (a later poll replaces the waker). */
DESYNC_API int desync_stream_poll_next(desync_stream_t *s, void **item,
                                       const desync_waker_t *waker);

/** A future for the next item: value = the item, status 0; at the end it
 * completes with DESYNC_EOF as status (DESYNC_ENOMEM for a failed pipe's
 * output, DESYNC_ECANCELED for another error of the stream). The stream
 * must not be read or freed until that future completes. NULL for NULL s
 * or on ENOMEM. A user stream's wakes need no memory afterwards. */
DESYNC_API desync_future_t *desync_stream_next_future(desync_stream_t *s);

/** Items still buffered in s when it is freed are passed to item_free. */
DESYNC_API void desync_stream_set_item_free(desync_stream_t *s, void (*item_free)(void *item));

/** Frees the stream (and its source). Ignores NULL. */
DESYNC_API void desync_stream_free(desync_stream_t *s);

/* ----------------------------------------------------------------- pipes */

/** @{ */
/** Process functions: run on the object's queue with its data, for each item
 * in order. desync_pipe_fn returns the output item; desync_pipe_async_fn
 * returns a future of it (NULL: done, with value NULL). */
typedef void (*desync_pipe_in_fn)(void *data, void *item, void *arg);
typedef void *(*desync_pipe_fn)(void *data, void *item, void *arg);
typedef desync_future_t *(*desync_pipe_async_fn)(void *data, void *item, void *arg);
/** @} */

/**
 * Takes ownership of `input`. Each item it yields is processed as
 * process(data, item, arg) on d's queue, in order with every other job of d.
 * The pipe holds only a weak reference to d: once the last user reference to
 * d is released, the pipe stops and frees the input. The pipe parks no thread
 * while it waits for items. DESYNC_EINVAL for NULL arguments (input is freed),
 * DESYNC_ENOMEM (input is freed).
 *
 * Out of memory while the pipe runs (after this call returned): the pipe
 * needs memory only for the job that processes each batch of items (pooled)
 * and, with a backpressure depth set above 64, for its item queues.
 * If that fails, the pipe stops rather than wait: items it has taken from
 * the input but not processed, and the input with what it still buffers,
 * are freed (the input's item_free gets each item), and an output (below)
 * ends with DESYNC_ENOMEM instead of DESYNC_EOF after the items already
 * produced. Stopping and freeing the pipe need no memory.
 */
DESYNC_API int desync_pipe_in(desync_t *d, desync_stream_t *input, desync_pipe_in_fn process,
                              void *arg);

/**
 * As pipe_in, but each process() return value is put, in order, on the
 * returned output stream. The pipe keeps d alive while the output exists;
 * freeing the output closes the pipe (input freed, no more processing). When
 * the input ends, the output ends after the last processed item. Reading
 * stops while the output holds `depth` unread items: the pipe never holds
 * more (items taken from the input and not processed yet count too), and
 * once stopped it reads again when the reader has left half the depth
 * (rounded up) free, a batch at a time. The default depth starts at 5 and
 * doubles, up to 64, whenever reading stops on it right after a batch of
 * items that took under about 20 microseconds each: quick items then move
 * in larger batches (fewer hand-offs between threads), slow ones keep the
 * small depth, and no pipe holds more than 64 items at the default.
 * NULL for NULL arguments or on ENOMEM (input is freed either way). Out of
 * memory later: see desync_pipe_in (the output reports DESYNC_ENOMEM; an
 * item process returned that cannot be queued goes to the output's
 * item_free). A pipe reading a failed pipe's output fails the same way.
 */
DESYNC_API desync_stream_t *desync_pipe(desync_t *d, desync_stream_t *input, desync_pipe_fn process,
                                        void *arg);

/** @{ */
/** Async forms: process returns a future and d's queue is held until it
 * completes (blocking no thread). For desync_pipe_async the future's value is
 * the output item; a cancelled future produces no output item. Their
 * default depth stays 5 (one item per job: larger batches gain nothing). */
DESYNC_API int desync_pipe_in_async(desync_t *d, desync_stream_t *input,
                                    desync_pipe_async_fn process, void *arg);
DESYNC_API desync_stream_t *desync_pipe_async(desync_t *d, desync_stream_t *input,
                                              desync_pipe_async_fn process, void *arg);
/** @} */

/** @{ */
/**
 * desync_pipe_in and desync_pipe_in_async (same arguments, ownership of
 * input, order and backpressure; never blocks), with a way to learn that
 * the pipe has finished: the returned future completes once the pipe has
 * stopped and none of its jobs is left, its value the number n of items
 * the pipe did not process, as (void *)(uintptr_t)n. Its status:
 *   0                 the input reached its end and the job of its last item
 *                     has run: every item was processed (n is 0);
 *   DESYNC_ECANCELED  the pipe stopped early because d's last reference was
 *                     released: n counts the items taken from the input and
 *                     not processed, plus those a channel, an array or a
 *                     pipe output still held (a user stream's buffered items
 *                     go to its free, uncounted);
 *   DESYNC_ENOMEM     the pipe ran out of memory (see desync_pipe_in); n as
 *                     for ECANCELED;
 *   another code      a user stream ended with that error from poll_next.
 * The weak-reference rule: the pipe does not keep d alive. To have every
 * item processed, wait on the future (status 0) before releasing d; a
 * release before that stops the pipe at its next step (the next item, job
 * end or input event) and drops the rest (ECANCELED with the count). The
 * future is the caller's (wait on it, poll it or free it; freeing it does
 * not stop the pipe); the pipe never blocks on it.
 * NULL for NULL arguments or on ENOMEM (input is freed either way).
 */
DESYNC_API desync_future_t *desync_pipe_in_future(desync_t *d, desync_stream_t *input,
                                                  desync_pipe_in_fn process, void *arg);
DESYNC_API desync_future_t *desync_pipe_in_async_future(desync_t *d, desync_stream_t *input,
                                                        desync_pipe_async_fn process, void *arg);
/** @} */

/** Sets how many unread output items make a pipe stop reading its input
 * (at least 1; 0 is taken as 1). Ignores streams that are not pipe outputs.
 * The depth set is kept (the default's growth stops). A depth above 64
 * makes the pipe allocate queue room as it fills (see desync_pipe_in for
 * what happens if that fails). */
DESYNC_API void desync_pipe_set_backpressure_depth(desync_stream_t *pipe_output, size_t depth);

#ifdef __cplusplus
}
#endif

#endif /* DESYNC_STREAM_H */
