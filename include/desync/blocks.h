/*
 * libdesync with clang's blocks: `_b` forms of sync and desync that take a
 * block instead of a function and an argument, as libdispatch's
 * dispatch_sync / dispatch_async do. Include it yourself (<desync.h> does
 * not), and build with `clang -fblocks`, linking the BlocksRuntime
 * (`-lBlocksRuntime`, Debian package libblocksruntime-dev; built into the
 * C library on macOS).
 *
 * Everything here is a static inline function over the C API: the library
 * itself is built without blocks and does not depend on the runtime. A sync
 * calls the caller's block through a small trampoline (the block lives on the
 * caller's stack, which outlives the sync); a desync copies the block to the
 * heap (Block_copy) and the job releases the copy after calling it, so
 * whatever the block captured (__block variables, copied blocks) is released
 * once the job has run.
 *
 * Without blocks (gcc, or clang without -fblocks) including this header is an
 * #error, rather than a header that silently declares nothing: the `_b`
 * calls would then fail later as undeclared functions, further from the cause.
 */
#ifndef DESYNC_BLOCKS_H
#define DESYNC_BLOCKS_H

#if !defined(__BLOCKS__)
#error "<desync/blocks.h> needs the blocks extension: compile with clang -fblocks and link -lBlocksRuntime"
#else

#include <Block.h>

#include "../desync.h"

/** @file
 * Blocks forms of desync_sync, desync_desync, desync_queue_sync and
 * desync_queue_desync (clang -fblocks; header-only).
 */

/** A job on an object, as a block: receives the object's data pointer. */
typedef void (^desync_block_t)(void *data);

/** A job on a bare queue, as a block (receives nothing). */
typedef void (^desync_queue_block_t)(void);

/** @cond DESYNC_INTERNAL */
/* The trampolines: the job's arg is the block itself. */
static inline void desync_blocks_call_(void *data, void *arg) { ((desync_block_t)arg)(data); }

static inline void desync_blocks_call_release_(void *data, void *arg) {
    desync_block_t block = (desync_block_t)arg;
    block(data);
    Block_release(block);
}

static inline void desync_blocks_queue_call_(void *arg) { ((desync_queue_block_t)arg)(); }

static inline void desync_blocks_queue_call_release_(void *arg) {
    desync_queue_block_t block = (desync_queue_block_t)arg;
    block();
    Block_release(block);
}
/** @endcond */

/**
 * Runs block(data) as a job on d and blocks until it has run, exactly as
 * desync_sync does (same ordering, same blocking, same errors): on an idle
 * object the block runs on the calling thread.
 *
 * The block is not copied: it is called while this call waits, so a block
 * literal on the caller's stack and the __block variables it writes are used
 * in place, and the caller sees every write when this returns.
 *
 * @param d     the object (the caller owns a reference for the whole call).
 * @param block the job; called once with d's data, or not at all on error.
 * @return 0 once the block has run; DESYNC_EINVAL for a NULL d or block;
 *         DESYNC_EDEADLK when called from a job of d (directly or through
 *         nested syncs) or when the wait would close a cycle of threads (see
 *         "Deadlocks" in desync.h); DESYNC_EFORKED on an object forked off in
 *         a fork() child. On error the block has not run.
 */
static inline int desync_sync_b(desync_t *d, desync_block_t block) {
    if (!block)
        return DESYNC_EINVAL;
    return desync_sync(d, desync_blocks_call_, (void *)block);
}

/**
 * Queues block(data) as a job on d and returns, as desync_desync does: the
 * block runs after every job queued on d before it, in the background. Never
 * blocks, except on an object with a limit on pending jobs
 * (desync_set_max_pending) that is full: then as desync_desync says.
 *
 * Ownership: the block is copied to the heap (Block_copy), so a block literal
 * from the caller's stack is fine; the copy, and what it captured, is
 * released (Block_release) by the job right after the block returns, on the
 * thread that ran it. If this call fails, the copy is released before it
 * returns and the block never runs. (In a fork() child, the blocks queued on
 * an object that was forked off never run and are never released, like the
 * library's own memory there.)
 *
 * @param d     the object (the caller owns a reference for the whole call).
 * @param block the job; called once with d's data, or never if this fails.
 * @return 0 once queued; DESYNC_EINVAL for a NULL d or block;
 *         DESYNC_ENOMEM if the block could not be copied or the job not
 *         allocated; on a full object with a limit, DESYNC_EAGAIN (called from
 *         a job of d, or from a job on a scheduler's thread), DESYNC_EDEADLK
 *         or DESYNC_EFORKED as desync_queue_set_max_pending says;
 *         DESYNC_EFORKED on an object forked off in a fork() child. Nothing is
 *         queued on error.
 */
static inline int desync_desync_b(desync_t *d, desync_block_t block) {
    if (!block)
        return DESYNC_EINVAL;
    desync_block_t copy = Block_copy(block);
    if (!copy)
        return DESYNC_ENOMEM;
    int rc = desync_desync(d, desync_blocks_call_release_, (void *)copy);
    if (rc != 0)
        Block_release(copy);
    return rc;
}

/**
 * desync_sync_b on a bare queue: runs block() as a job on q and blocks until
 * it has run, as desync_queue_sync does. The block is not copied.
 *
 * @param q     the queue (the caller owns a reference for the whole call).
 * @param block the job; called once, or not at all on error.
 * @return 0 once the block has run; DESYNC_EINVAL for a NULL q or block;
 *         DESYNC_EDEADLK when called from a job of q (directly or through
 *         nested syncs) or when the wait would close a cycle of threads;
 *         DESYNC_EFORKED on a queue forked off in a fork() child. On error
 *         the block has not run.
 */
static inline int desync_queue_sync_b(desync_queue_t *q, desync_queue_block_t block) {
    if (!block)
        return DESYNC_EINVAL;
    return desync_queue_sync(q, desync_blocks_queue_call_, (void *)block);
}

/**
 * desync_desync_b on a bare queue: queues block() on q and returns, as
 * desync_queue_desync does (never blocks, except on a full queue with a
 * limit). The block is copied, and the copy released by the job after the
 * block returns, or by this call if it fails.
 *
 * @param q     the queue (the caller owns a reference for the whole call).
 * @param block the job; called once, or never if this fails.
 * @return 0 once queued; DESYNC_EINVAL for a NULL q or block; DESYNC_ENOMEM
 *         if the block could not be copied or the job not allocated; on a
 *         full queue with a limit, DESYNC_EAGAIN, DESYNC_EDEADLK or
 *         DESYNC_EFORKED as desync_queue_set_max_pending says; DESYNC_EFORKED
 *         on a queue forked off in a fork() child. Nothing is queued on error.
 */
static inline int desync_queue_desync_b(desync_queue_t *q, desync_queue_block_t block) {
    if (!block)
        return DESYNC_EINVAL;
    desync_queue_block_t copy = Block_copy(block);
    if (!copy)
        return DESYNC_ENOMEM;
    int rc = desync_queue_desync(q, desync_blocks_queue_call_release_, (void *)copy);
    if (rc != 0)
        Block_release(copy);
    return rc;
}

#endif /* __BLOCKS__ */
#endif /* DESYNC_BLOCKS_H */
