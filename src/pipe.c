/*
 * Pipes: items of an input stream processed on a Desync object's queue.
 *
 * THE PUMP. No thread ever waits in a pipe. The pipe owns a "pump": the
 * right to poll the input, held by at most one thread at a time (the RUN bit
 * of `state`). Whoever has a reason to pump calls pump_kick: the input's
 * waker, the reader taking an output item, a process job that finished, the
 * output being freed. If another thread is pumping, the kick only sets AGAIN
 * and that thread goes round once more; no one ever waits for the pump.
 * Pumping polls the input (with the pipe's waker) while the backpressure
 * budget allows, puts the items in `pending` (an SPSC FIFO: the pump
 * produces, the object's jobs consume) and queues ONE job on the object's
 * queue for the whole batch. The pump then stops, in one of three ways:
 *   - the input said EAGAIN: its waker will kick us;
 *   - the budget is used up and a job is in flight: that job's end kicks
 *     (WANT_JOB; takes by the reader do not, so batches stay large);
 *   - the budget is used up and no job is in flight: the reader's take
 *     that leaves half the depth (rounded up) free kicks (WANT_TAKE), so
 *     the pump refills in batches of half the depth, not one per take.
 * Both WANT bits are re-checked after they are published (the other side
 * does "change the count, then read state", seq_cst on both sides), so a
 * kick cannot be lost.
 *
 * ORDERING. An item is polled BEFORE the job that processes it is queued,
 * and a job processes exactly the items polled before it was queued (it
 * carries their count; jobs run in FIFO order, so each pops its own). Hence:
 *   - a job the user queued on d before an item was sent is ahead of the
 *     job processing that item (which is queued after the item was polled,
 *     which is after it was sent): it runs first;
 *   - when the input wakes us from inside send (channels do; a pipe output
 *     wakes at the end of the batch that produced the item), the pump
 *     polls the item and queues its job before send returns,
 *     so a job the user queues after send returned runs after the item is
 *     processed. This holds whenever the pipe is not held back by
 *     backpressure and no other thread is pumping it at that instant (then
 *     that thread queues the item's job a moment later).
 * A job must never poll the input itself and process what it finds: an item
 * sent after the job was queued, but after the user also queued a job X,
 * would then be processed before X although it was sent after X (the race
 * the reference crate has). Batching only what was polled before queueing
 * keeps batches free of that race.
 *
 * Backpressure: `held` (polled, not yet processed) + unread outputs may not
 * exceed `depth`; pipe_in counts `held` only (against DSY_PIPE_IN_DEPTH).
 * A pipe's default depth adapts (tuning.h): each batch records whether its
 * items were quick (`quick`), and a pump that finds the budget used up
 * right after a quick batch doubles the depth, up to DSY_PIPE_DEPTH_MAX
 * (both queues reserve room for that at creation, so growing needs no
 * memory). Small batches of quick items cost more in hand-offs than in
 * work (R2: a 5-item depth cost a quarter of the run). A depth set with
 * desync_pipe_set_backpressure_depth carries DEPTH_FIXED and never changes
 * again; growth is a CAS from the unfixed value, so it cannot undo a set.
 *
 * SPEED. A hand-off between cores costs more than a whole batch of depth 5,
 * so two shortcuts keep the work on one core when it can:
 *   - a reader blocked in desync_stream_next(_for) on the output, whose take
 *     kicks the pump, runs the batch itself with desync_queue_try_sync if d
 *     is idle (it would only wait for that job otherwise; items are passed
 *     on its stack and no counter is touched, as it holds the pump and no
 *     other job of the pipe exists). try_sync never blocks: a busy d gets
 *     the batch queued as usual.
 *   - a job whose end finds the output full waits up to DSY_PUMP_SPIN_NS for
 *     the reader to take half of it before parking the pump, so a reader
 *     that keeps up finds the next batch already queued on the same worker.
 *   - a job wakes its output's reader once, after its batch (see
 *     process_job), so a pipe reading this one polls the whole batch and
 *     queues one job for it.
 *
 * Wakes of the input: internal streams (channels, pipe outputs, arrays) wake
 * without their own locks held, so the waker pumps right there. A user
 * stream may wake with its lock held: its wakes queue a job on d's queue
 * that pumps (still polling before queueing the processing job).
 *
 * THE END. The output ends (`ended`) once the input is closed and no job
 * of the pipe is left, so every output is pushed before it: whichever of the
 * two comes last (close_input or a job's end) ends it (maybe_end).
 *
 * COMPLETION (pipe_in_future). The pipe completes `done_pr` where the output
 * would end (maybe_end: the input closed and no job left), with the number
 * of items it dropped (`dropped`: freed by jobs that found d dead, by the
 * pipe failing, and, when it stopped early, what an internal input still
 * held: close_input reads it out and frees it). Every drop is counted before
 * the `jobs` decrement or the `in_closed` store that maybe_end reads, so
 * the count is final when the future completes. Status 0 only if the input
 * reached its end (`saw_end`) and nothing was dropped.
 *
 * LIFETIME. `refs`: the input side (dropped once the input is freed), the
 * output stream (pipes with outputs), each queued job, and each pump run.
 * The pipe holds a weak reference to d (queue memory stays valid for its
 * jobs); desync_pipe also holds a strong one, dropped by a job queued when
 * the output is freed (so freeing never blocks). Every job checks, on d's
 * queue, that the pipe is open and d alive (reliable there) before calling
 * process; otherwise it frees its items with the input's item_free. A
 * pipe_in whose object died notices at its next input event or job.
 *
 * OUT OF MEMORY. Only the pump and the jobs it queues allocate while a pipe
 * runs: a job node per batch (pooled), and queue segments beyond the
 * reserve made at creation (none while the backpressure depth is the
 * default). When one fails, the pipe fails (pipe_fail): it stops as if its
 * output had been freed (later jobs free their items, the pump frees the
 * input, whose buffered items go to its item_free), and the output, after
 * the items already produced, reports DESYNC_ENOMEM instead of DESYNC_EOF.
 * What must not fail needs no memory: the end (above), the jobs that pump
 * for a user stream's wakes and that drop d when the output is freed (nodes
 * embedded in the pipe: wake_kick, release_node).
 *
 * Async forms: one async job per item (desync_queue_future_desync). The job
 * calls process and returns a promise's future that completes once the
 * user's future has completed and its value was put on the output, so the
 * queue is held for exactly that long and outputs stay in order.
 */
#include "stream_internal.h"

#include <stdlib.h>

#define PS_RUN 1u
#define PS_AGAIN 2u
#define PS_WANT_TAKE 4u
#define PS_WANT_JOB 8u

/* In `depth`: set by the program, never adapted. */
#define DEPTH_FIXED ((size_t)1 << (sizeof(size_t) * 8 - 1))

/* The four kinds of pipe (one constructor). */
typedef enum pipe_kind {
    PIPE_IN,        /* desync_pipe_in */
    PIPE_OUT,       /* desync_pipe */
    PIPE_IN_ASYNC,  /* desync_pipe_in_async */
    PIPE_OUT_ASYNC, /* desync_pipe_async */
} pipe_kind;

typedef struct dsy_pipe {
    desync_stream_t out; /* the output stream (desync_pipe*); first member */
    desync_t *d;
    desync_queue_t *q;
    desync_pipe_fn fn;
    desync_pipe_in_fn fn_in;
    desync_pipe_async_fn fn_async;
    void *arg;
    bool has_output, is_async, inline_input;
    /* Touched only by the pump holder. */
    desync_stream_t *input;
    bool input_done;
    void (*in_item_free)(void *item);
    desync_waker_t in_waker;
    /* The async item in progress: one at a time, as it holds d's queue. */
    desync_promise_t *async_pr;
    /* pipe_in_future: completed once, at the end (see COMPLETION); set at
     * creation and never cleared (maybe_end reads it on any thread). */
    desync_promise_t *done_pr;
    bool saw_end;           /* pump holder: the input reported its end */
    int in_err;             /* pump holder: a user input's error, if it ended so */
    _Atomic size_t dropped; /* items taken or held by the input, not processed */
    dsy_refcount refs;
    _Atomic uint32_t state;  /* PS_* */
    _Atomic uint32_t closed; /* output freed, object dead or pipe failed: stop */
    _Atomic uint32_t in_closed; /* the input is freed: no job will be queued */
    _Atomic uint32_t ended;  /* output: nothing more will be pushed */
    _Atomic int error;       /* 0, or why the pipe failed (DESYNC_ENOMEM) */
    _Atomic uint32_t jobs;   /* process jobs queued or running */
    _Atomic size_t held;     /* items polled and not yet processed */
    _Atomic size_t depth;    /* the depth, | DEPTH_FIXED once the program set it */
    _Atomic uint32_t quick;  /* the last batch's items were quick (adaptive depth) */
    dsy_wslot out_slot;
    dsy_spsc pending;
    dsy_spsc outq;
    dsy_kick wake_kick;    /* pumps from d's queue for a user stream's wakes */
    dsy_node release_node; /* drops the pipe's strong reference to d */
} dsy_pipe;

static void pump_kick(dsy_pipe *p);
static void pump_kick_from(dsy_pipe *p, bool in_job);
static const dsy_stream_vt pipe_out_vt;

static void pipe_ref(dsy_pipe *p) { dsy_ref_inc(&p->refs); }

static void pipe_unref(dsy_pipe *p) {
    if (!dsy_ref_dec(&p->refs))
        return;
    dsy_spsc_destroy(&p->pending, p->in_item_free);
    dsy_spsc_destroy(&p->outq, p->out.item_free);
    desync_t *d = p->d;
    dsy_handle_free(p, sizeof *p);
    dsy_object_weak_release(d);
}

/* The pipe cannot go on (see OUT OF MEMORY): it stops like a closed one,
 * and its output will end with err. The pump frees the input at its next
 * step (a job that fails kicks it). */
static void pipe_fail(dsy_pipe *p, int err) {
    int none = 0;
    atomic_compare_exchange_strong_explicit(&p->error, &none, err, memory_order_seq_cst,
                                            memory_order_relaxed);
    atomic_store_explicit(&p->closed, 1, memory_order_seq_cst);
}

static void note_dropped(dsy_pipe *p, size_t n) {
    if (n)
        atomic_fetch_add_explicit(&p->dropped, n, memory_order_seq_cst);
}

/* pipe_in_future's end: see COMPLETION. */
static void complete_done(dsy_pipe *p) {
    size_t dropped = atomic_load_explicit(&p->dropped, memory_order_seq_cst);
    int err = atomic_load_explicit(&p->error, memory_order_seq_cst);
    int status = err ? err : p->in_err ? p->in_err
                         : p->saw_end && !dropped ? 0
                                                  : DESYNC_ECANCELED;
    dsy_promise_complete_status(p->done_pr, status, (void *)(uintptr_t)dropped);
}

/* Ends the output (or completes pipe_in_future's future) once the input is
 * closed and no job is left. seq_cst on `in_closed` and `jobs`, as on the
 * WANT bits: of close_input and the last job's end, at least one sees the
 * other's store. */
static void maybe_end(dsy_pipe *p) {
    if ((!p->has_output && !p->done_pr) ||
        !atomic_load_explicit(&p->in_closed, memory_order_seq_cst) ||
        atomic_load_explicit(&p->jobs, memory_order_seq_cst))
        return;
    if (atomic_exchange_explicit(&p->ended, 1, memory_order_seq_cst))
        return;
    if (p->has_output)
        dsy_wslot_fire(&p->out_slot);
    else
        complete_done(p);
}

/* Puts a processed item on the output (fire: wake the reader). False if
 * there was no memory: the item went to the output's item_free and the
 * pipe failed. */
static bool put_output(dsy_pipe *p, void *v, bool fire) {
    if (DSY_UNLIKELY(dsy_spsc_push(&p->outq, v, fire) != 0)) {
        if (v && p->out.item_free)
            p->out.item_free(v);
        pipe_fail(p, DESYNC_ENOMEM);
        return false;
    }
    if (fire)
        dsy_wslot_fire(&p->out_slot);
    return true;
}

/* Pump only: keeps a polled item for the job that will process it. False
 * if there was no memory: the item went to the input's item_free and the
 * pipe failed. */
static bool put_pending(dsy_pipe *p, void *item) {
    if (DSY_LIKELY(dsy_spsc_push(&p->pending, item, false) == 0))
        return true;
    if (p->in_item_free)
        p->in_item_free(item);
    note_dropped(p, 1);
    pipe_fail(p, DESYNC_ENOMEM);
    return false;
}

/* The pump, stopped by a full budget with no job in flight, resumes once
 * at least half the depth (rounded up) is free again: it then refills in
 * one batch instead of one item per take. */
static size_t depth_of(dsy_pipe *p) {
    return atomic_load_explicit(&p->depth, memory_order_relaxed) & ~DEPTH_FIXED;
}

static bool refill_ok(dsy_pipe *p) {
    size_t used = atomic_load_explicit(&p->held, memory_order_seq_cst);
    if (p->has_output)
        used += dsy_spsc_count(&p->outq);
    return used <= depth_of(p) / 2;
}

/* A batch of n items that started at t0 ended: were its items quick? */
static void note_batch(dsy_pipe *p, uint64_t t0, size_t n) {
    bool quick = dsy_now_ns() - t0 < n * (uint64_t)DSY_PIPE_SLOW_ITEM_NS;
    if (atomic_load_explicit(&p->quick, memory_order_relaxed) != quick)
        atomic_store_explicit(&p->quick, quick, memory_order_relaxed);
}

/* Pump only, the budget used up: doubles an adaptive depth after a quick
 * batch (see Backpressure). True if the depth grew. */
static bool depth_grow(dsy_pipe *p, size_t depth) {
    if (depth >= DSY_PIPE_DEPTH_MAX || !atomic_load_explicit(&p->quick, memory_order_relaxed))
        return false;
    size_t want = depth * 2 < DSY_PIPE_DEPTH_MAX ? depth * 2 : DSY_PIPE_DEPTH_MAX;
    /* Fails if the program set a depth meanwhile (DEPTH_FIXED). */
    return atomic_compare_exchange_strong_explicit(&p->depth, &depth, want, memory_order_relaxed,
                                                   memory_order_relaxed);
}

/* Is the job running on d's queue allowed to call process? */
static bool job_live(dsy_pipe *p) {
    return !atomic_load_explicit(&p->closed, memory_order_acquire) && dsy_object_alive(p->d);
}

/* A process job ended (n items done); stop is true when it found the pipe
 * dead and the pump must free the input. */
static void job_done(dsy_pipe *p, size_t n, bool stop) {
    atomic_fetch_sub_explicit(&p->held, n, memory_order_seq_cst);
    atomic_fetch_sub_explicit(&p->jobs, 1, memory_order_seq_cst);
    maybe_end(p);
    if (stop || (atomic_load_explicit(&p->state, memory_order_seq_cst) & PS_WANT_JOB))
        pump_kick_from(p, true);
    pipe_unref(p);
}

/* ------------------------------------------------------------------ jobs */

typedef struct batch_arg {
    dsy_pipe *p;
    size_t n;
} batch_arg;

static void process_job(void *a) {
    dsy_pipe *p = ((batch_arg *)a)->p;
    size_t n = ((batch_arg *)a)->n;
    /* Reliable for the whole job: d cannot be destroyed while it runs. */
    bool live = job_live(p);
    void *data = live ? desync_data(p->d) : NULL;
    /* The output's reader is woken once, after the batch (a reader that
     * keeps up sees each item through `ready` anyway), unless the first
     * item took long enough that waiting for the batch would hold items
     * back: then after each item. */
    bool each = n == 1;
    uint64_t t0 = p->has_output ? dsy_now_ns() : 0;
    void *items[DSY_PIPE_MAX_BATCH];
    DSY_ASSERT(n <= DSY_PIPE_MAX_BATCH);
    size_t got = dsy_spsc_pop_n(&p->pending, items, n); /* queued before this job */
    DSY_ASSERT(got == n);
    (void)got;
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++) {
        void *item = items[i];
        if (!live) {
            if (p->in_item_free)
                p->in_item_free(item);
            dropped++;
        } else if (p->has_output) {
            live = put_output(p, p->fn(data, item, p->arg), each || i + 1 == n);
            if (i == 0 && !each)
                each = dsy_now_ns() - t0 >= DSY_PIPE_SLOW_ITEM_NS;
        } else {
            p->fn_in(data, item, p->arg);
        }
    }
    if (t0)
        note_batch(p, t0, n);
    note_dropped(p, dropped);
    if (!live)
        atomic_store_explicit(&p->closed, 1, memory_order_release);
    job_done(p, n, !live);
}

/* A batch run by the blocked reader itself (try_sync on an idle queue, see
 * pump_inline): the items come on its stack, and since the reader holds the
 * pump and d's queue was idle, no other job of this pipe exists, so the
 * shared counters need no update and no waker can be waiting on the output
 * (its one reader is here). */
typedef struct inline_arg {
    dsy_pipe *p;
    void **items;
    size_t n;
} inline_arg;

static void inline_job(void *a) {
    inline_arg *ia = a;
    dsy_pipe *p = ia->p;
    bool live = job_live(p);
    void *data = live ? desync_data(p->d) : NULL;
    uint64_t t0 = dsy_now_ns();
    for (size_t i = 0; i < ia->n; i++) {
        if (!live) {
            if (p->in_item_free)
                p->in_item_free(ia->items[i]);
            continue;
        }
        live = put_output(p, p->fn(data, ia->items[i], p->arg), false);
    }
    note_batch(p, t0, ia->n);
    if (!live)
        atomic_store_explicit(&p->closed, 1, memory_order_release);
}

/* A user stream woke us: pump from d's queue (wake_kick). */
static void wake_kick_run(dsy_kick *k) { pump_kick(DSY_CONTAINER_OF(k, dsy_pipe, wake_kick)); }

static void wake_kick_done(dsy_kick *k) { pipe_unref(DSY_CONTAINER_OF(k, dsy_pipe, wake_kick)); }

/* The output was freed: drop the pipe's strong reference to d from d's own
 * queue (release then does not block). Holds the output's pipe reference. */
static enum dsy_run_result release_run(dsy_node *n, desync_queue_t *q, void *data) {
    (void)q;
    (void)data;
    desync_release(DSY_CONTAINER_OF(n, dsy_pipe, release_node)->d);
    return DSY_DONE;
}

static void release_finish(dsy_node *n) { pipe_unref(DSY_CONTAINER_OF(n, dsy_pipe, release_node)); }

static const dsy_node_ops release_ops = {release_run, release_finish, NULL};

/* The user's future of the item in progress completed. */
static void async_done(int status, void *value, void *arg) {
    dsy_pipe *p = arg;
    desync_promise_t *pr = p->async_pr;
    p->async_pr = NULL;
    bool failed = status == 0 && p->has_output && !put_output(p, value, true);
    atomic_fetch_sub_explicit(&p->held, 1, memory_order_seq_cst);
    atomic_fetch_sub_explicit(&p->jobs, 1, memory_order_seq_cst);
    maybe_end(p);
    bool kick = failed || (atomic_load_explicit(&p->state, memory_order_seq_cst) & PS_WANT_JOB);
    desync_promise_complete(pr, NULL); /* lets d's queue go on */
    if (kick)
        pump_kick(p);
    pipe_unref(p);
}

static desync_future_t *async_job(void *a) {
    dsy_pipe *p = a;
    void *item = NULL;
    dsy_spsc_pop(&p->pending, &item);
    /* The promise that holds d's queue is made before process is called,
     * so that running out of memory fails the pipe, not the item's job. */
    desync_future_t *g = NULL;
    desync_promise_t *pr = NULL;
    if (job_live(p) && !(pr = desync_promise_new(&g)))
        pipe_fail(p, DESYNC_ENOMEM);
    if (!pr) {
        if (p->in_item_free)
            p->in_item_free(item);
        note_dropped(p, 1);
        atomic_store_explicit(&p->closed, 1, memory_order_release);
        job_done(p, 1, true);
        return NULL;
    }
    desync_future_t *f = p->fn_async(desync_data(p->d), item, p->arg);
    if (!f) {
        /* NULL future: done, with value NULL. */
        desync_promise_cancel(pr);
        desync_future_free(g);
        bool failed = p->has_output && !put_output(p, NULL, true);
        job_done(p, 1, failed);
        return NULL;
    }
    p->async_pr = pr;
    desync_future_then(f, async_done, p); /* may run async_done at once */
    return g;
}

/* ------------------------------------------------------------------ pump */

/* The input ended, or the pipe stopped: free the input; the output ends
 * once the jobs in flight are done (maybe_end). */
static void close_input(dsy_pipe *p) {
    desync_stream_t *in = p->input;
    p->input = NULL;
    p->input_done = true;
    if (p->done_pr && !p->saw_end && !p->in_err && in->vt->inline_wake) {
        /* Stopped early: count what the input still holds (an internal
         * stream's buffer is finite; a user stream's is freed uncounted). */
        void *items[DSY_PIPE_MAX_BATCH];
        int r;
        do {
            size_t n = dsy_stream_poll_n(in, items, DSY_PIPE_MAX_BATCH, NULL, &r);
            for (size_t i = 0; i < n; i++)
                if (p->in_item_free)
                    p->in_item_free(items[i]);
            note_dropped(p, n);
        } while (r == 0);
        p->saw_end = r == DESYNC_EOF;
    }
    desync_stream_free(in); /* waits for its wakes on other threads */
    atomic_store_explicit(&p->in_closed, 1, memory_order_seq_cst);
    maybe_end(p);
    pipe_unref(p); /* the input side's reference (the pump run holds one) */
}

/* Queues the job for the last n items put in `pending`. False if there was
 * no memory for it: the pipe failed, and the items stay in `pending` (freed
 * with the pipe; no later job will pop them). */
static bool queue_batch(dsy_pipe *p, size_t n) {
    atomic_fetch_add_explicit(&p->held, n, memory_order_seq_cst);
    atomic_fetch_add_explicit(&p->jobs, 1, memory_order_seq_cst);
    pipe_ref(p);
    bool ok;
    if (p->is_async) {
        desync_future_t *f = desync_queue_future_desync(p->q, async_job, p);
        if ((ok = f != NULL))
            desync_future_detach(f);
    } else {
        batch_arg a = {p, n};
        ok = desync_queue_desync_copy(p->q, process_job, &a, sizeof a) == 0;
    }
    if (DSY_UNLIKELY(!ok)) {
        note_dropped(p, n); /* they stay in `pending`, freed with the pipe */
        atomic_fetch_sub_explicit(&p->held, n, memory_order_seq_cst);
        atomic_fetch_sub_explicit(&p->jobs, 1, memory_order_seq_cst);
        pipe_fail(p, DESYNC_ENOMEM);
        pipe_unref(p); /* not the last: the pump run holds one */
    }
    return ok;
}

/* Pump only: keeps n polled items for the job that will process them.
 * False if there was no memory: those items went to the input's item_free
 * and the pipe failed. */
static bool put_pending_n(dsy_pipe *p, void **items, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!put_pending(p, items[i])) {
            note_dropped(p, n - i - 1);
            while (++i < n) /* items[i] went to item_free already */
                if (p->in_item_free)
                    p->in_item_free(items[i]);
            return false;
        }
    return true;
}

/* One round of pumping; true if it stopped on the budget (not on the
 * input's waker or the end). */
static bool pump_step(dsy_pipe *p) {
    if (p->input_done)
        return false;
    if (atomic_load_explicit(&p->closed, memory_order_acquire) ||
        (!p->has_output && !dsy_object_alive(p->d))) {
        close_input(p);
        return false;
    }
    size_t used = atomic_load_explicit(&p->held, memory_order_seq_cst);
    if (p->has_output)
        used += dsy_spsc_count(&p->outq);
    size_t depth = depth_of(p);
    if (used >= depth && !(p->has_output && !p->is_async && depth_grow(p, depth)))
        return true;
    depth = depth_of(p);
    if (used >= depth)
        return true;
    size_t budget = depth - used, n = 0;
    int r = 0;
    if (!p->is_async && dsy_tls_blocking_reader == &p->out && budget <= DSY_PIPE_INLINE_MAX) {
        /* Pumped for a reader blocked in next on our output: it would only
         * wait for the batch, so run it right here if d is idle (handing it
         * to another core costs more than the whole batch). */
        void *items[DSY_PIPE_INLINE_MAX];
        n = dsy_stream_poll_n(p->input, items, budget, &p->in_waker, &r);
        if (n) {
            inline_arg a = {p, items, n};
            if (desync_queue_try_sync(p->q, inline_job, &a) != 0 && put_pending_n(p, items, n))
                queue_batch(p, n);
        }
    } else {
        /* Batches of up to DSY_PIPE_MAX_BATCH items, taken from the input at
         * once where it can (one lock or count update per batch); async
         * pipes queue one job per item. */
        size_t max = p->is_async ? 1 : DSY_PIPE_MAX_BATCH;
        while (budget) {
            void *items[DSY_PIPE_MAX_BATCH];
            n = dsy_stream_poll_n(p->input, items, budget < max ? budget : max, &p->in_waker, &r);
            if (n && (!put_pending_n(p, items, n) || !queue_batch(p, n)))
                break;
            budget -= n;
            if (r != 0)
                break;
        }
    }
    if (atomic_load_explicit(&p->closed, memory_order_acquire)) {
        close_input(p); /* failed (or closed) meanwhile */
        return false;
    }
    if (r == 0)
        return true;
    if (r != DESYNC_EAGAIN) {
        /* EOF (or a user stream's error): the end. A pipe reading a failed
         * pipe's output fails too. */
        if (r == DESYNC_ENOMEM)
            pipe_fail(p, r);
        else if (r == DESYNC_EOF)
            p->saw_end = true;
        else
            p->in_err = r;
        close_input(p);
    }
    return false;
}

/* Called at the end of a job (on d's queue) that found the output full and
 * nothing else in flight: the reader is usually just behind, so wait for it
 * a little instead of parking the pump (a parked pump costs the reader a
 * kick and the next batch a trip through the scheduler). */
static bool wait_for_take(dsy_pipe *p) {
    /* Not while this worker has other work waiting: that may be the reader
     * (a pipe reading ours, whose job sits in our next slot). */
    if (!dsy_sched_nothing_else())
        return false;
    dsy_spin sp = dsy_spin_for(DSY_PUMP_SPIN_NS, 0);
    do {
        if (refill_ok(p) || atomic_load_explicit(&p->closed, memory_order_relaxed))
            return true;
    } while (dsy_spin_round(&sp));
    return false;
}

static void pump_run(dsy_pipe *p, bool in_job) {
    for (;;) {
        uint32_t want = 0;
        if (pump_step(p)) {
            want = atomic_load_explicit(&p->jobs, memory_order_seq_cst) ? PS_WANT_JOB
                                                                        : PS_WANT_TAKE;
            if (want == PS_WANT_TAKE && in_job && p->has_output && wait_for_take(p))
                continue;
        }
        uint32_t s = atomic_load_explicit(&p->state, memory_order_seq_cst);
        bool again = false;
        for (;;) {
            if (s & PS_AGAIN) {
                /* Kickers only add AGAIN while RUN is set. */
                atomic_store_explicit(&p->state, PS_RUN, memory_order_relaxed);
                again = true;
                break;
            }
            if (atomic_compare_exchange_weak_explicit(&p->state, &s, want, memory_order_seq_cst,
                                                      memory_order_relaxed))
                break;
        }
        if (again)
            continue;
        if (!want)
            return;
        /* Re-check what we wait for, now that the others can see it. */
        bool retry = want == PS_WANT_JOB
                         ? atomic_load_explicit(&p->jobs, memory_order_seq_cst) == 0
                         : refill_ok(p) || atomic_load_explicit(&p->closed, memory_order_seq_cst);
        uint32_t e = want;
        if (!retry || !atomic_compare_exchange_strong_explicit(&p->state, &e, PS_RUN,
                                                               memory_order_seq_cst,
                                                               memory_order_relaxed))
            return;
    }
}

static void pump_kick_from(dsy_pipe *p, bool in_job) {
    uint32_t s = atomic_load_explicit(&p->state, memory_order_seq_cst);
    for (;;) {
        if (s & PS_RUN) {
            if ((s & PS_AGAIN) ||
                atomic_compare_exchange_weak_explicit(&p->state, &s, s | PS_AGAIN,
                                                      memory_order_seq_cst, memory_order_relaxed))
                return;
        } else if (atomic_compare_exchange_weak_explicit(
                       &p->state, &s, PS_RUN, memory_order_seq_cst, memory_order_relaxed)) {
            break;
        }
    }
    /* The reader's output reference keeps p alive; others need their own,
     * as pumping may drop the input's reference. */
    bool reader = dsy_tls_blocking_reader == &p->out;
    if (!reader)
        pipe_ref(p);
    pump_run(p, in_job);
    if (!reader)
        pipe_unref(p);
}

static void pump_kick(dsy_pipe *p) { pump_kick_from(p, false); }

/* The input's waker. */
static void input_wake(void *ctx) {
    dsy_pipe *p = ctx;
    if (p->inline_input) {
        pump_kick(p);
        return;
    }
    if (dsy_kick_arm(&p->wake_kick)) {
        pipe_ref(p); /* the kick's, dropped by wake_kick_done */
        dsy_kick_push(&p->wake_kick);
    }
}

/* ---------------------------------------------------------------- output */

/* The reader took items: kick a pump parked on WANT_TAKE if the refill is
 * due. The pump publishes WANT_TAKE, then re-reads the count (seq_cst), so
 * the take must be published seq_cst before `state` is read (Dekker). Only
 * a take that may leave half the depth or less needs it: while the reader
 * itself knows of more items still queued (a lower bound of the count), the
 * refill cannot be due, and that store, the main cost of a take, is
 * skipped (pops store their count with a release only). A
 * depth grown meanwhile (read stale here) only delays the kick to a later
 * take, at the latest the one that empties the queue. */
static void after_take(dsy_pipe *p) {
    size_t half = depth_of(p) / 2;
    if (dsy_spsc_known(&p->outq, half) > half)
        return;
    dsy_spsc_publish(&p->outq);
    if ((atomic_load_explicit(&p->state, memory_order_seq_cst) & PS_WANT_TAKE) && refill_ok(p))
        pump_kick(p);
}

static int out_poll(desync_stream_t *s, void **item, const desync_waker_t *w) {
    dsy_pipe *p = (dsy_pipe *)s;
    dsy_wslot_clear(&p->out_slot);
    if (dsy_spsc_pop(&p->outq, item)) {
        after_take(p);
        return 0;
    }
    if (atomic_load_explicit(&p->ended, memory_order_acquire)) {
        /* Everything was pushed before `ended`: look once more. */
        if (dsy_spsc_pop(&p->outq, item)) {
            after_take(p);
            return 0;
        }
        int err = atomic_load_explicit(&p->error, memory_order_acquire);
        return err ? err : DESYNC_EOF;
    }
    if (w && w->wake) {
        dsy_wslot_set(&p->out_slot, w);
        /* An item pushed just before the waker was visible would not fire
         * it: fire it ourselves (we must not pop here, a waker may poll). */
        if (dsy_spsc_count(&p->outq) || atomic_load_explicit(&p->ended, memory_order_seq_cst))
            dsy_wslot_fire(&p->out_slot);
    }
    return DESYNC_EAGAIN;
}

static size_t out_take(desync_stream_t *s, void **items, size_t max) {
    dsy_pipe *p = (dsy_pipe *)s;
    size_t n = dsy_spsc_pop_n(&p->outq, items, max);
    if (n)
        after_take(p);
    return n;
}

static bool out_ready(desync_stream_t *s) {
    dsy_pipe *p = (dsy_pipe *)s;
    return dsy_spsc_count(&p->outq) || atomic_load_explicit(&p->ended, memory_order_acquire);
}

static void out_free(desync_stream_t *s) {
    dsy_pipe *p = (dsy_pipe *)s;
    atomic_store_explicit(&p->closed, 1, memory_order_seq_cst);
    dsy_wslot_quiesce(&p->out_slot);
    pump_kick(p); /* frees the input (here, or on the thread pumping) */
    /* Buffered outputs go to item_free now (we are the reader); one that a
     * job still running pushes later goes when the pipe is freed. */
    void *v;
    while (dsy_spsc_pop(&p->outq, &v))
        if (p->out.item_free)
            p->out.item_free(v);
    /* The output's pipe reference goes to release_node, which needs it
     * (it is part of the pipe) until it has run. */
    dsy_queue_push_schedule(p->q, &p->release_node);
}

/* A reader about to sleep: if d's jobs (process jobs, the end) wait for a
 * runner (0 threads, or all busy), run them here rather than wait for a
 * thread that may never come. */
static void out_help(desync_stream_t *s) { dsy_queue_help(((dsy_pipe *)s)->q); }

static const dsy_stream_vt pipe_out_vt = {out_poll, out_free, out_ready, out_help, out_take, true};

void desync_pipe_set_backpressure_depth(desync_stream_t *pipe_output, size_t depth) {
    if (!pipe_output || pipe_output->vt != &pipe_out_vt)
        return;
    dsy_pipe *p = (dsy_pipe *)pipe_output;
    depth = depth ? depth : 1;
    if (depth > ~DEPTH_FIXED)
        depth = ~DEPTH_FIXED;
    /* Queues that long need no memory (see pipe_new). */
    size_t reserve = depth > DSY_PIPE_DEPTH_MAX ? depth : DSY_PIPE_DEPTH_MAX;
    dsy_spsc_set_reserve(&p->pending, reserve);
    dsy_spsc_set_reserve(&p->outq, reserve);
    atomic_store_explicit(&p->depth, depth | DEPTH_FIXED, memory_order_seq_cst);
    if (atomic_load_explicit(&p->state, memory_order_seq_cst) & PS_WANT_TAKE)
        pump_kick(p);
}

/* -------------------------------------------------------------- creating */

/* The one constructor: takes ownership of input (freed on every error) and
 * starts pumping. process is the kind's function type. NULL on EINVAL (NULL
 * arguments) or ENOMEM: *err says which. */
static dsy_pipe *pipe_new(desync_t *d, desync_stream_t *input, pipe_kind kind,
                          void (*process)(void), void *arg, desync_promise_t *done_pr, int *err) {
    *err = DESYNC_EINVAL;
    dsy_pipe *p = NULL;
    if (d && input && process) {
        *err = DESYNC_ENOMEM;
        p = calloc(1, sizeof *p);
    }
    /* Backpressure bounds both queues by the depth: reserved now (up to
     * what the adaptive depth may grow to), they need no memory while the
     * pipe runs (only job nodes do). */
    bool has_output = kind == PIPE_OUT || kind == PIPE_OUT_ASYNC;
    size_t depth = has_output ? DSY_PIPE_DEPTH : DSY_PIPE_IN_DEPTH;
    size_t reserve = has_output && DSY_PIPE_DEPTH_MAX > depth ? DSY_PIPE_DEPTH_MAX : depth;
    if (p && dsy_spsc_init(&p->pending, reserve) != 0) {
        free(p);
        p = NULL;
    }
    if (p && dsy_spsc_init(&p->outq, has_output ? reserve : 0) != 0) {
        dsy_spsc_destroy(&p->pending, NULL);
        free(p);
        p = NULL;
    }
    if (!p) {
        desync_stream_free(input);
        return NULL;
    }
    dsy_stream_init(&p->out, &pipe_out_vt);
    dsy_wslot_init(&p->out_slot);
    p->d = d;
    p->q = desync_get_queue(d);
    p->has_output = has_output;
    p->is_async = kind == PIPE_IN_ASYNC || kind == PIPE_OUT_ASYNC;
    if (p->is_async)
        p->fn_async = (desync_pipe_async_fn)process;
    else if (has_output)
        p->fn = (desync_pipe_fn)process;
    else
        p->fn_in = (desync_pipe_in_fn)process;
    p->arg = arg;
    p->done_pr = done_pr;
    atomic_init(&p->dropped, 0);
    p->input = input;
    p->in_item_free = input->item_free;
    p->inline_input = input->vt->inline_wake;
    p->in_waker.wake = input_wake;
    p->in_waker.ctx = p;
    dsy_ref_init(&p->refs, has_output ? 2u : 1u);
    atomic_init(&p->state, 0);
    atomic_init(&p->closed, 0);
    atomic_init(&p->in_closed, 0);
    atomic_init(&p->ended, 0);
    atomic_init(&p->error, 0);
    atomic_init(&p->jobs, 0);
    atomic_init(&p->held, 0);
    atomic_init(&p->depth, depth);
    atomic_init(&p->quick, 0);
    dsy_kick_init(&p->wake_kick, p->q, wake_kick_run, wake_kick_done);
    p->release_node.ops = &release_ops;
    dsy_object_weak_retain(d);
    if (has_output)
        desync_retain(d);
    *err = 0;
    pump_kick(p);
    return p;
}

int desync_pipe_in(desync_t *d, desync_stream_t *input, desync_pipe_in_fn process, void *arg) {
    int err;
    pipe_new(d, input, PIPE_IN, (void (*)(void))process, arg, NULL, &err);
    return err;
}

desync_stream_t *desync_pipe(desync_t *d, desync_stream_t *input, desync_pipe_fn process,
                             void *arg) {
    int err;
    dsy_pipe *p = pipe_new(d, input, PIPE_OUT, (void (*)(void))process, arg, NULL, &err);
    return p ? &p->out : NULL;
}

int desync_pipe_in_async(desync_t *d, desync_stream_t *input, desync_pipe_async_fn process,
                         void *arg) {
    int err;
    pipe_new(d, input, PIPE_IN_ASYNC, (void (*)(void))process, arg, NULL, &err);
    return err;
}

desync_stream_t *desync_pipe_async(desync_t *d, desync_stream_t *input,
                                   desync_pipe_async_fn process, void *arg) {
    int err;
    dsy_pipe *p = pipe_new(d, input, PIPE_OUT_ASYNC, (void (*)(void))process, arg, NULL, &err);
    return p ? &p->out : NULL;
}

/* The pipe_in forms with a completion future (see COMPLETION). */
static desync_future_t *pipe_in_future(desync_t *d, desync_stream_t *input, pipe_kind kind,
                                       void (*process)(void), void *arg) {
    desync_future_t *f = NULL;
    desync_promise_t *pr = d && input && process ? desync_promise_new(&f) : NULL;
    if (!pr) {
        desync_stream_free(input);
        return NULL;
    }
    int err;
    if (!pipe_new(d, input, kind, process, arg, pr, &err)) {
        desync_promise_cancel(pr);
        desync_future_free(f);
        return NULL;
    }
    return f;
}

desync_future_t *desync_pipe_in_future(desync_t *d, desync_stream_t *input,
                                       desync_pipe_in_fn process, void *arg) {
    return pipe_in_future(d, input, PIPE_IN, (void (*)(void))process, arg);
}

desync_future_t *desync_pipe_in_async_future(desync_t *d, desync_stream_t *input,
                                             desync_pipe_async_fn process, void *arg) {
    return pipe_in_future(d, input, PIPE_IN_ASYNC, (void (*)(void))process, arg);
}
