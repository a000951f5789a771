/**
 * @file desync.hpp
 * libdesync for C++17: a header-only wrapper over the C API of <desync.h>.
 *
 *   desync::object<std::string> s(std::string("a"));
 *   for (int i = 0; i < 3; i++)
 *       s.desync([i](std::string &v) { v += std::to_string(i); }); // queued, returns at once
 *   std::size_t n = s.sync([](std::string &v) { return v.size(); }); // waits: 4
 *
 * Nothing here is compiled into the library: it stays a C library with no
 * C++ runtime dependency; a C++ program includes this header and links
 * -ldesync as a C program does.
 *
 * Errors. Every C error code (DESYNC_E*) becomes a desync::error, a
 * std::system_error whose code() holds the DESYNC_E* value (negative, as in
 * C) in desync::category(). Exceptions thrown by the user's callables:
 *   - in a sync (object::sync, sync_all) or a future (object::future_desync):
 *     caught inside the job and rethrown in the caller (by sync itself, or by
 *     future::get); the job counts as run and the object goes on;
 *   - in a desync job or a pipe's process function, which nobody waits for:
 *     caught inside the job and passed to the handler set with
 *     desync::set_job_exception_handler, std::terminate by default; the
 *     object goes on with its next job when the handler returns.
 * No exception ever crosses the C library's frames: every callback the C
 * library calls is noexcept (an exception thrown by a job exception handler,
 * or by T's destructor, calls std::terminate).
 *
 * Memory. object::sync and sync_all keep the callable and the result on the
 * caller's stack: no allocation. object::desync copies a trivially copyable,
 * trivially destructible callable of up to desync::inline_copy_size bytes
 * into the C library's job node (desync_desync_copy): no allocation beyond
 * the C call's (a pooled node); any other callable is moved into one `new`
 * block, deleted after the job. future_desync and pipes allocate one block
 * for the callable and the result. Allocation failures throw std::bad_alloc
 * (a `new` of the wrapper) or desync::error(DESYNC_ENOMEM) (the C library).
 *
 * Blocking, ordering, deadlock detection and threads are the C library's:
 * see the comments of the C calls named at each entity (desync.h).
 */
#ifndef DESYNC_HPP
#define DESYNC_HPP

#include "desync.h"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

/** The C++ wrapper of libdesync (see the top of desync.hpp). */
namespace desync {

/* ---------------------------------------------------------------- errors */

/**
 * The error category of libdesync's codes: name() is "desync", message(c)
 * is desync_strerror(c). The codes are the negative DESYNC_E* values.
 * Never throws; the object is a function-local static.
 */
inline const std::error_category &category() noexcept {
    struct desync_category final : std::error_category {
        const char *name() const noexcept override { return "desync"; }
        std::string message(int code) const override { return desync_strerror(code); }
    };
    static desync_category instance;
    return instance;
}

/**
 * A C error code as an exception: code().value() is the DESYNC_E* value
 * (e.g. DESYNC_EDEADLK) and code().category() is desync::category();
 * what() names the call that failed and the code's description.
 */
class error : public std::system_error {
public:
    /** Wraps `code` (a negative DESYNC_E* value) from the C call `where`. */
    error(int code, const char *where) : std::system_error(code, category(), where) {}
};

/// @cond DETAIL
namespace detail {
/* Throws desync::error for a negative C return code. */
inline void check(int rc, const char *where) {
    if (rc < 0)
        throw error(rc, where);
}

/* A timeout for the C calls: negative is 0, too long for 64 bits is the
 * longest there is (no overflow for durations::max()). */
template <class Rep, class Period> std::uint64_t timeout_ns(const std::chrono::duration<Rep, Period> &d) {
    long double ns = std::chrono::duration_cast<std::chrono::duration<long double, std::nano>>(d).count();
    if (!(ns > 0))
        return 0;
    if (ns >= 18e18L)
        return UINT64_MAX;
    return static_cast<std::uint64_t>(ns);
}
} // namespace detail
/// @endcond

/* ------------------------------------------------- job exception handler */

/**
 * Called with the exception that escaped a desync job or a pipe's process
 * function, on the thread that ran the job, inside the job (the object's
 * later jobs wait until it returns). Must not throw (std::terminate).
 */
using job_exception_handler = void (*)(std::exception_ptr);

/// @cond DETAIL
namespace detail {
inline std::atomic<job_exception_handler> job_handler{nullptr};

/* An exception that escaped a job nobody waits for. */
inline void job_exception(std::exception_ptr e) noexcept {
    job_exception_handler h = job_handler.load(std::memory_order_acquire);
    if (!h)
        std::terminate();
    h(std::move(e)); /* noexcept caller: a throwing handler terminates */
}

/* Runs a desync job's body; exceptions go to the handler. */
template <class Body> void run_job(Body &&body) noexcept {
    try {
        body();
    } catch (...) {
        job_exception(std::current_exception());
    }
}
} // namespace detail
/// @endcond

/**
 * Sets the handler for exceptions that escape desync jobs and pipe process
 * functions (see job_exception_handler); nullptr restores the default,
 * std::terminate. Returns the previous handler (nullptr for the default).
 * Process-wide; may be called from any thread at any time (a job already
 * failing may still call the previous handler). Never blocks, never throws.
 */
inline job_exception_handler set_job_exception_handler(job_exception_handler h) noexcept {
    return detail::job_handler.exchange(h, std::memory_order_acq_rel);
}

/** The current handler (nullptr: the default, std::terminate). Never throws. */
inline job_exception_handler get_job_exception_handler() noexcept {
    return detail::job_handler.load(std::memory_order_acquire);
}

/**
 * The most bytes of a callable that object::desync copies into the C job
 * node without allocating (desync_desync_copy's "up to 96 bytes need no
 * allocation beyond the job itself", include/desync.h), for trivially
 * copyable, trivially destructible callables aligned at most as
 * std::max_align_t (the copy is aligned for any type).
 */
inline constexpr std::size_t inline_copy_size = 96;

/// @cond DETAIL
namespace detail {

/* Whether object::desync copies callable Fn into the job node. */
template <class Fn>
inline constexpr bool copy_inline = std::is_trivially_copyable_v<Fn> &&
                                    std::is_trivially_destructible_v<Fn> &&
                                    sizeof(Fn) <= inline_copy_size &&
                                    alignof(Fn) <= alignof(std::max_align_t);

/* The result of a callable run in a job, handed to the thread that waits:
 * the value (or nothing for void, a pointer for a reference) or the
 * exception. */
template <class R> struct result_box {
    std::optional<R> value;
    std::exception_ptr ex;
    template <class Body> void run(Body &&body) noexcept {
        try {
            value.emplace(body());
        } catch (...) {
            ex = std::current_exception();
        }
    }
    void set_exception(std::exception_ptr e) noexcept { ex = std::move(e); }
    R take() {
        if (ex)
            std::rethrow_exception(ex);
        return std::move(*value);
    }
};

template <class R> struct result_box<R &> {
    R *value = nullptr;
    std::exception_ptr ex;
    template <class Body> void run(Body &&body) noexcept {
        try {
            value = &body();
        } catch (...) {
            ex = std::current_exception();
        }
    }
    void set_exception(std::exception_ptr e) noexcept { ex = std::move(e); }
    R &take() {
        if (ex)
            std::rethrow_exception(ex);
        return *value;
    }
};

template <> struct result_box<void> {
    std::exception_ptr ex;
    template <class Body> void run(Body &&body) noexcept {
        try {
            body();
        } catch (...) {
            ex = std::current_exception();
        }
    }
    void set_exception(std::exception_ptr e) noexcept { ex = std::move(e); }
    void take() {
        if (ex)
            std::rethrow_exception(ex);
    }
};

/* A result shared by a job (or a pipe) and a future: freed by whichever of
 * the two lets go last. Derived classes also hold the callable. */
template <class R> struct shared_result {
    result_box<R> box;
    std::atomic<int> refs{2};
    virtual ~shared_result() = default;
    void drop() noexcept {
        /* acq_rel: the last one to drop sees every write of the other. */
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
            delete this;
    }
};

template <class R, class Fn> struct task : shared_result<R> {
    Fn fn;
    explicit task(Fn f) : fn(std::move(f)) {}
};

} // namespace detail
/// @endcond

/* ---------------------------------------------------------------- future */

/**
 * The result of a job that runs later (object::future_desync, pipe_in): a
 * value of type R (void allowed) or an exception, read once with get().
 * Owns a C future (desync_future_t) and its share of the result. Movable,
 * not copyable. Destroying it does not cancel the job: the job still runs
 * and its result is dropped. Calls on one future must not overlap, except
 * wait_for on several threads at once (as desync_future_wait_for).
 */
template <class R> class future {
public:
    /** An empty future (valid() is false). */
    future() noexcept = default;

    /** Takes o's handle and result; o becomes empty. Never throws. */
    future(future &&o) noexcept : f_(std::exchange(o.f_, nullptr)), st_(std::exchange(o.st_, nullptr)) {}

    /** Drops this future's handle (as the destructor), then takes o's. */
    future &operator=(future &&o) noexcept {
        if (this != &o) {
            reset();
            f_ = std::exchange(o.f_, nullptr);
            st_ = std::exchange(o.st_, nullptr);
        }
        return *this;
    }

    /** Not copyable: the result is read once. */
    future(const future &) = delete;
    /** Not copyable. */
    future &operator=(const future &) = delete;

    /** Drops the handle (desync_future_free); never blocks. */
    ~future() { reset(); }

    /** True until get() has returned or thrown, or the future was moved from. */
    bool valid() const noexcept { return f_ != nullptr; }

    /**
     * Blocks until the result is there (desync_future_wait: on a scheduler
     * with no thread free, the caller runs the object's pending jobs), then
     * returns the callable's value or rethrows its exception. Either way
     * the future is then empty (valid() false). Throws desync::error:
     * DESYNC_EINVAL on an empty future, DESYNC_EDEADLK when waiting could
     * never end (called from a job of the object the result waits for; the
     * future stays valid), DESYNC_ECANCELED or DESYNC_EFORKED if the job
     * will never run (the future is then empty); a pipe_in future also
     * throws the pipe's non-zero status (see object::pipe_in).
     */
    R get() {
        if (!f_)
            throw error(DESYNC_EINVAL, "desync::future::get");
        int rc = desync_future_wait(f_, nullptr);
        if (rc == DESYNC_EDEADLK || rc == DESYNC_EINVAL)
            throw error(rc, "desync_future_wait");
        /* Past here the result is final: the future is used up. */
        detail::shared_result<R> *st = std::exchange(st_, nullptr);
        desync_future_free(std::exchange(f_, nullptr));
        /* A job that never ran never drops its share: the result is kept. */
        if (rc < 0)
            throw error(rc, "desync_future_wait");
        std::unique_ptr<detail::shared_result<R>, dropper> hold(st);
        return st->box.take();
    }

    /**
     * Blocks until the result is there or `timeout` has passed
     * (desync_future_wait_for): true if it is there (get() then returns at
     * once), false on timeout. A negative timeout is taken as zero. Throws
     * desync::error: DESYNC_EINVAL on an empty future, DESYNC_EDEADLK as
     * for get(). A cancelled job (DESYNC_ECANCELED) counts as there (get
     * throws it).
     */
    template <class Rep, class Period> bool wait_for(const std::chrono::duration<Rep, Period> &timeout) {
        if (!f_)
            throw error(DESYNC_EINVAL, "desync::future::wait_for");
        int rc = desync_future_wait_for(f_, detail::timeout_ns(timeout), nullptr);
        if (rc == DESYNC_ETIMEDOUT)
            return false;
        if (rc == DESYNC_EDEADLK || rc == DESYNC_EINVAL)
            throw error(rc, "desync_future_wait_for");
        return true;
    }

    /** The C future, borrowed (for desync_future_fd, poll or combinators). */
    desync_future_t *c_handle() const noexcept { return f_; }

private:
    template <class> friend class object;

    struct dropper {
        void operator()(detail::shared_result<R> *s) const noexcept { s->drop(); }
    };

    future(desync_future_t *f, detail::shared_result<R> *st) noexcept : f_(f), st_(st) {}

    void reset() noexcept {
        if (f_)
            desync_future_free(std::exchange(f_, nullptr));
        if (st_)
            std::exchange(st_, nullptr)->drop();
    }

    desync_future_t *f_ = nullptr;
    detail::shared_result<R> *st_ = nullptr;
};

/* ---------------------------------------------------------------- stream */

/** What stream::next_for found. */
enum class next_status {
    item,    /**< an item was stored */
    end,     /**< the stream has ended (DESYNC_EOF) */
    timeout, /**< nothing came within the timeout */
};

/// @cond DETAIL
namespace detail {

/* What a pipe output made by object::pipe needs freed after it: its
 * process function, which must outlive every process call. after_free runs
 * once the C output is freed (see object::pipe). */
struct output_owner {
    desync_stream_t *inner = nullptr; /* the C pipe's output */
    void (*after_free)(output_owner *) = nullptr;
};

/* A user stream over an owner's output, for handing the output to C code
 * (another pipe, stream::release): freeing it frees the output, then runs
 * after_free. */
inline const desync_stream_ops_t *owner_ops() noexcept {
    static const desync_stream_ops_t ops = {
        [](void *self, void **item, const desync_waker_t *waker) {
            return desync_stream_poll_next(static_cast<output_owner *>(self)->inner, item, waker);
        },
        [](void *self) {
            output_owner *o = static_cast<output_owner *>(self);
            desync_stream_free(o->inner);
            o->after_free(o);
        },
    };
    return &ops;
}

} // namespace detail
/// @endcond

/**
 * Owns a C stream (desync_stream_t) of void * items: a channel's receiving
 * end, an array stream, a pipe's output. Movable, not copyable; the
 * destructor frees the stream (desync_stream_free). A stream has one reader
 * at a time (calls on one stream must not overlap). Items belong to the
 * reader once read.
 */
class stream {
public:
    /** An empty stream. */
    stream() noexcept = default;
    /** Adopts s (may be NULL: an empty stream, which pipes refuse). */
    explicit stream(desync_stream_t *s) noexcept : s_(s) {}
    /** Takes o's stream; o becomes empty. */
    stream(stream &&o) noexcept : s_(std::exchange(o.s_, nullptr)), owner_(std::exchange(o.owner_, nullptr)) {}
    /** Frees this stream (as the destructor), then takes o's. */
    stream &operator=(stream &&o) noexcept {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
            owner_ = std::exchange(o.owner_, nullptr);
        }
        return *this;
    }
    /** Not copyable: a stream has one reader. */
    stream(const stream &) = delete;
    /** Not copyable. */
    stream &operator=(const stream &) = delete;
    /**
     * Frees the stream (desync_stream_free); for a pipe output, closes the
     * pipe. Never blocks.
     */
    ~stream() { reset(); }

    /**
     * A stream yielding the n pointers of items (copied), then its end
     * (desync_stream_from_array). Throws desync::error(DESYNC_ENOMEM), or
     * DESYNC_EINVAL for a NULL items with n > 0.
     */
    static stream from_array(void *const *items, std::size_t n) {
        if (!items && n)
            throw error(DESYNC_EINVAL, "desync_stream_from_array");
        desync_stream_t *s = desync_stream_from_array(items, n);
        if (!s)
            throw error(DESYNC_ENOMEM, "desync_stream_from_array");
        return stream(s);
    }

    /**
     * Blocks until an item (stored in `item`; returns true) or the end
     * (returns false) (desync_stream_next). Throws desync::error for other
     * codes: DESYNC_EINVAL (empty stream), DESYNC_ENOMEM (a pipe that ran out
     * of memory), a user stream's own code.
     */
    bool next(void *&item) {
        int rc = desync_stream_next(s_, &item);
        if (rc == DESYNC_EOF)
            return false;
        detail::check(rc, "desync_stream_next");
        return true;
    }

    /** As next, but waits at most `timeout` (desync_stream_next_for); throws as next. */
    template <class Rep, class Period>
    next_status next_for(void *&item, const std::chrono::duration<Rep, Period> &timeout) {
        int rc = desync_stream_next_for(s_, detail::timeout_ns(timeout), &item);
        if (rc == DESYNC_EOF)
            return next_status::end;
        if (rc == DESYNC_ETIMEDOUT)
            return next_status::timeout;
        detail::check(rc, "desync_stream_next_for");
        return next_status::item;
    }

    /**
     * The C stream, borrowed: for the C reading calls and
     * desync_pipe_set_backpressure_depth; do not free it.
     */
    desync_stream_t *c_handle() const noexcept { return s_; }

    /**
     * Gives the C stream up to the caller, who must free it (the stream is
     * then empty). For the output of object::pipe, that is a user stream
     * over the pipe's output (desync_stream_new), whose free also frees the
     * process function: throws desync::error(DESYNC_ENOMEM) if it cannot be
     * made (the stream is then unchanged). Never blocks.
     */
    desync_stream_t *release() {
        if (!owner_)
            return std::exchange(s_, nullptr);
        desync_stream_t *w = desync_stream_new(detail::owner_ops(), owner_);
        if (!w)
            throw error(DESYNC_ENOMEM, "desync_stream_new");
        s_ = nullptr;
        owner_ = nullptr;
        return w;
    }

    /** True unless empty. */
    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    template <class> friend class object;

    stream(desync_stream_t *s, detail::output_owner *owner) noexcept : s_(s), owner_(owner) {}

    void reset() noexcept {
        desync_stream_free(std::exchange(s_, nullptr));
        if (detail::output_owner *o = std::exchange(owner_, nullptr))
            o->after_free(o);
    }

    desync_stream_t *s_ = nullptr;
    detail::output_owner *owner_ = nullptr; /* for a pipe output: freed after s_ */
};

/* ---------------------------------------------------------------- object */

/**
 * A Desync object owning a T: a reference to a C desync_t whose data is a
 * T allocated by the wrapper (`new T`) and deleted by the C library's
 * destroy callback after the object's last job. Jobs queued on the object
 * run one at a time, in the order their calls returned, and receive the
 * T &. Copying retains (desync_retain: both handles name the same object);
 * destroying or assigning over a handle releases it (desync_release: the
 * last reference BLOCKS until every job queued so far has run, except when
 * released from one of the object's own jobs). Moving leaves the source
 * empty; calls on an empty object throw desync::error(DESYNC_EINVAL).
 * Member functions are const: like a shared_ptr, constness of the handle
 * is not constness of the T. Calls may come from any thread at once, each
 * on a handle of its own or the same handle, but the assignments and the
 * destructor of one handle must not overlap other calls on that handle.
 */
template <class T> class object {
    static_assert(std::is_object_v<T> && !std::is_array_v<T>, "desync::object<T>: T must be an object type");

public:
    /** The type of the owned data. */
    using value_type = T;

    /** An empty handle (no object). */
    object() noexcept = default;

    /**
     * A new object owning T(std::move(value)), on the default scheduler
     * (desync_new). Throws std::bad_alloc (the T) or desync::error
     * (DESYNC_ENOMEM: the C object; the T is deleted), and whatever T's
     * move constructor throws.
     */
    explicit object(T value) : object(nullptr, std::in_place, std::move(value)) {}

    /** As object(T), but T is constructed in place from args. */
    template <class... Args>
    explicit object(std::in_place_t, Args &&...args) : object(nullptr, std::in_place, std::forward<Args>(args)...) {}

    /**
     * As object(std::in_place, args...), on scheduler `s` (a C scheduler
     * from desync_scheduler_new; nullptr = the default) (desync_new_on).
     */
    template <class... Args> object(desync_scheduler_t *s, std::in_place_t, Args &&...args) {
        T *data = new T(std::forward<Args>(args)...);
        d_ = s ? desync_new_on(s, data, destroy) : desync_new(data, destroy);
        if (!d_) {
            delete data;
            throw error(DESYNC_ENOMEM, "desync_new");
        }
    }

    /** Another reference to the same object (desync_retain). Never throws. */
    object(const object &o) noexcept : d_(desync_retain(o.d_)) {}
    /** Takes o's reference; o becomes empty. */
    object(object &&o) noexcept : d_(std::exchange(o.d_, nullptr)) {}

    /** Retains o's object, then releases this one's (may block: see the class). */
    object &operator=(const object &o) noexcept {
        desync_t *old = std::exchange(d_, desync_retain(o.d_));
        desync_release(old);
        return *this;
    }
    /** Releases this one's object (may block: see the class), then takes o's. */
    object &operator=(object &&o) noexcept {
        if (this != &o)
            desync_release(std::exchange(d_, std::exchange(o.d_, nullptr)));
        return *this;
    }

    /**
     * Releases the reference (desync_release). The last one BLOCKS until the
     * jobs queued so far have run and the T is deleted (from one of the
     * object's own jobs it does not block: the T goes after that job).
     */
    ~object() { desync_release(d_); }

    /**
     * Runs f(T &) on the object after every job queued before, and BLOCKS
     * until it has run (desync_sync: on an idle object it runs at once on
     * the calling thread); returns what f returns (void allowed, references
     * too). f may capture anything: it stays on the caller's stack, so this
     * allocates nothing. If f throws, the exception is rethrown here (the
     * job counts as run). Throws desync::error: DESYNC_EDEADLK when called
     * from a job of this object (directly or through nested syncs) or when
     * the wait would close a cycle of waiting threads (f did not run);
     * DESYNC_EINVAL on an empty object; DESYNC_EFORKED in a fork child for
     * a forked-off object.
     */
    template <class F> std::invoke_result_t<F &, T &> sync(F &&f) const {
        static_assert(std::is_invocable_v<F &, T &>, "desync::object<T>::sync: f must be callable as f(T &)");
        using R = std::invoke_result_t<F &, T &>;
        using Fn = std::remove_reference_t<F>;
        struct ctx {
            Fn *fn;
            detail::result_box<R> box;
        } c{&f, {}};
        auto job = [](void *data, void *arg) noexcept {
            ctx *cp = static_cast<ctx *>(arg);
            cp->box.run([&]() -> R { return std::invoke(*cp->fn, *static_cast<T *>(data)); });
        };
        detail::check(desync_sync(d_, job, &c), "desync_sync");
        return c.box.take();
    }

    /**
     * Queues f(T &) to run on the object after every job queued before, and
     * returns at once (desync_desync / desync_desync_copy): f runs later on
     * a scheduler thread (or a thread that syncs). Only BLOCKS on an object
     * with a limit on pending jobs (desync_set_max_pending) that is full. f
     * is copied or moved into the job: a trivially copyable, trivially
     * destructible callable of up to inline_copy_size bytes goes into the C
     * job node (no allocation); any other is moved into one `new` block
     * (std::bad_alloc). An exception thrown by f goes to the job exception
     * handler (std::terminate by default; see set_job_exception_handler).
     * Throws desync::error (nothing queued, f not run): DESYNC_ENOMEM,
     * DESYNC_EINVAL on an empty object, DESYNC_EAGAIN / DESYNC_EDEADLK /
     * DESYNC_EFORKED on a full object with a limit (see
     * desync_queue_set_max_pending).
     */
    template <class F> void desync(F &&f) const {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_v<Fn &, T &>, "desync::object<T>::desync: f must be callable as f(T &)");
        if constexpr (detail::copy_inline<Fn>) {
            auto job = [](void *data, void *arg) noexcept {
                Fn *fn = std::launder(static_cast<Fn *>(arg));
                detail::run_job([&] { std::invoke(*fn, *static_cast<T *>(data)); });
            };
            /* A local copy: F may be an lvalue of another cv-type. */
            Fn fn(std::forward<F>(f));
            detail::check(desync_desync_copy(d_, job, std::addressof(fn), sizeof(Fn)), "desync_desync_copy");
        } else {
            auto job = [](void *data, void *arg) noexcept {
                std::unique_ptr<Fn> fn(static_cast<Fn *>(arg));
                detail::run_job([&] { std::invoke(*fn, *static_cast<T *>(data)); });
            };
            auto fn = std::make_unique<Fn>(std::forward<F>(f));
            detail::check(desync_desync(d_, job, fn.get()), "desync_desync");
            fn.release(); /* the job owns it now */
        }
    }

    /**
     * Queues f(T &) in order with the object's other jobs and returns at
     * once with a future of its result (desync_future_desync; never blocks,
     * also on an object with a limit on pending jobs, which futures do not
     * count): future::get returns f's value or rethrows its exception. The
     * job runs even if the future is dropped. f and the result share one
     * `new` block (std::bad_alloc). Throws desync::error (nothing queued):
     * DESYNC_ENOMEM, DESYNC_EINVAL on an empty object; in a fork child, for
     * a forked-off object, DESYNC_ENOMEM too (the C call's NULL does not
     * say which).
     */
    template <class F> future<std::invoke_result_t<std::decay_t<F> &, T &>> future_desync(F &&f) const {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_v<Fn &, T &>,
                      "desync::object<T>::future_desync: f must be callable as f(T &)");
        using R = std::invoke_result_t<Fn &, T &>;
        static_assert(!std::is_reference_v<R>, "desync::object<T>::future_desync: f must return a value");
        using st_t = detail::task<R, Fn>;
        auto job = [](void *data, void *arg) noexcept -> desync_future_t * {
            st_t *st = static_cast<st_t *>(arg);
            st->box.run([&]() -> R { return std::invoke(st->fn, *static_cast<T *>(data)); });
            st->drop(); /* before the future completes: get() may then delete it */
            return nullptr;
        };
        if (!d_)
            throw error(DESYNC_EINVAL, "desync_future_desync");
        auto *st = new st_t(Fn(std::forward<F>(f)));
        desync_future_t *cf = desync_future_desync(d_, job, st);
        if (!cf) {
            delete st;
            throw error(DESYNC_ENOMEM, "desync_future_desync");
        }
        return future<R>(cf, st);
    }

    /**
     * Feeds the items of `input` (taken over) to f(T &, void *item) on the
     * object's queue, in order with its other jobs, never blocking
     * (desync_pipe_in_future). The pipe does not keep the object alive:
     * releasing its last reference stops the pipe. Returns a future of the
     * end of the pipe: get() returns once every item has been processed
     * (the value is 0) or throws desync::error with the pipe's status
     * (DESYNC_ECANCELED: stopped by the object's release, DESYNC_ENOMEM, or
     * a user stream's error). Dropping the future does not stop the pipe.
     * Items are the process function's to free. An exception thrown by f
     * goes to the job exception handler. f and the result share one `new`
     * block, freed when both the pipe has finished and the future is gone
     * (std::bad_alloc).
     * Throws desync::error (input freed): DESYNC_EINVAL for an empty object
     * or input, DESYNC_ENOMEM.
     */
    template <class F> future<std::size_t> pipe_in(stream input, F &&f) const {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_v<Fn &, T &, void *>,
                      "desync::object<T>::pipe_in: f must be callable as f(T &, void *)");
        /* The callable, the result and the promise whose future the C++
         * future owns (the pipe's own future is consumed by then). */
        struct st_t : detail::task<std::size_t, Fn> {
            using detail::task<std::size_t, Fn>::task;
            desync_promise_t *pr = nullptr;
        };
        auto process = [](void *data, void *item, void *arg) noexcept {
            st_t *st = static_cast<st_t *>(arg);
            detail::run_job([&] { std::invoke(st->fn, *static_cast<T *>(data), item); });
        };
        /* The pipe has finished: no process call is left. */
        auto on_end = [](int status, void *value, void *arg) noexcept {
            st_t *st = static_cast<st_t *>(arg);
            if (status == 0)
                st->box.value.emplace(static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(value)));
            else
                st->box.set_exception(std::make_exception_ptr(error(status, "desync_pipe_in")));
            desync_promise_t *pr = st->pr;
            st->drop(); /* before the promise: get() may then delete st */
            desync_promise_complete(pr, nullptr);
        };
        if (!d_ || !input)
            throw error(DESYNC_EINVAL, "desync_pipe_in_future");
        auto st = std::make_unique<st_t>(Fn(std::forward<F>(f)));
        desync_stream_t *in = input.release(); /* may throw: input unchanged */
        desync_future_t *user_f = nullptr;
        st->pr = desync_promise_new(&user_f);
        if (!st->pr) {
            desync_stream_free(in);
            throw error(DESYNC_ENOMEM, "desync_promise_new");
        }
        desync_future_t *pf = desync_pipe_in_future(d_, in, process, st.get());
        if (!pf) {
            desync_promise_cancel(st->pr);
            desync_future_free(user_f);
            throw error(DESYNC_ENOMEM, "desync_pipe_in_future");
        }
        /* Cannot fail: pf and on_end are not NULL. */
        desync_future_then(pf, on_end, st.get());
        return future<std::size_t>(user_f, st.release());
    }

    /**
     * A pipe with an output (desync_pipe): each item of `input` (taken over)
     * is processed as f(T &, void *item) on the object's queue, in order
     * with its other jobs, and what f returns (a void *) is put, in order,
     * on the returned stream, with the C pipe's backpressure (reading stops
     * while the output holds `depth` unread items). The output keeps the
     * object alive; destroying it closes the pipe. The output ends after the
     * last item, or reports the C pipe's error (stream::next throws it). An
     * exception thrown by f goes to the job exception handler; the item's
     * output is then nullptr. f lives in one `new` block (std::bad_alloc),
     * freed by a job queued on the object once the output is freed (that
     * job runs after any process call still under way). Handed to C code
     * (as the input of another pipe, or by stream::release), the output is
     * wrapped in a user stream (desync_stream_new) whose free does the
     * same; a pipe reading a user stream queues a job on its object for
     * each wake. Never blocks. Throws desync::error (input freed):
     * DESYNC_EINVAL for an empty object or input, DESYNC_ENOMEM.
     */
    template <class F> stream pipe(stream input, F &&f) const {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_r_v<void *, Fn &, T &, void *>,
                      "desync::object<T>::pipe: f must be callable as void *f(T &, void *)");
        struct state : detail::output_owner {
            Fn fn;
            desync_t *d = nullptr; /* our own reference, for the deleting job */
            explicit state(Fn f) : fn(std::move(f)) {}
        };
        auto process = [](void *data, void *item, void *arg) noexcept -> void * {
            state *st = static_cast<state *>(arg);
            void *out = nullptr;
            detail::run_job([&] { out = std::invoke(st->fn, *static_cast<T *>(data), item); });
            return out;
        };
        /* The output is freed: no process call starts after that, and one
         * under way is ahead of this job on d's queue. */
        auto after_free = [](detail::output_owner *o) noexcept {
            state *st = static_cast<state *>(o);
            auto del = [](void *, void *arg) noexcept {
                state *s = *static_cast<state **>(arg);
                desync_t *d = s->d;
                delete s;
                desync_release(d); /* from d's own job: never blocks */
            };
            if (desync_desync_copy(st->d, del, &st, sizeof st) != 0)
                desync_release(st->d); /* no memory for the job: st is leaked */
        };
        if (!d_ || !input)
            throw error(DESYNC_EINVAL, "desync_pipe");
        auto st = std::make_unique<state>(Fn(std::forward<F>(f)));
        st->after_free = after_free;
        st->d = d_;
        desync_stream_t *inner = desync_pipe(d_, input.release(), process, st.get());
        if (!inner)
            throw error(DESYNC_ENOMEM, "desync_pipe");
        st->inner = inner;
        desync_retain(d_);
        return stream(inner, st.release());
    }

    /** The C object, borrowed (NULL if empty); its data is the T *. */
    desync_t *c_handle() const noexcept { return d_; }

    /** True unless empty. */
    explicit operator bool() const noexcept { return d_ != nullptr; }

private:
    static void destroy(void *data) noexcept { delete static_cast<T *>(data); }

    desync_t *d_ = nullptr;
};

/// @cond DETAIL
namespace detail {

template <class F, class Tuple, std::size_t... I>
decltype(auto) sync_all_impl(F &f, Tuple &objs, std::index_sequence<I...>) {
    using R = std::invoke_result_t<F &, typename std::decay_t<std::tuple_element_t<I, Tuple>>::value_type &...>;
    struct ctx {
        F *fn;
        result_box<R> box;
    } c{&f, {}};
    auto job = [](void *const datas[], void *arg) noexcept {
        ctx *cp = static_cast<ctx *>(arg);
        cp->box.run([&]() -> R {
            return std::invoke(
                *cp->fn,
                *static_cast<typename std::decay_t<std::tuple_element_t<I, Tuple>>::value_type *>(datas[I])...);
        });
    };
    desync_t *const ds[] = {std::get<I>(objs).c_handle()...};
    detail::check(desync_sync_all(ds, sizeof...(I), job, &c), "desync_sync_all");
    if constexpr (std::is_void_v<R>)
        c.box.take();
    else
        return static_cast<R>(c.box.take());
}

} // namespace detail
/// @endcond

/**
 * sync_all(a, b, ..., f): runs f(A &, B &, ...) with the objects a, b, ...
 * (desync::object handles, at least one; the same object may be named more
 * than once, and each position then gets a reference to its T) to itself
 * at once, after every job queued on any of them before the call, and
 * BLOCKS until it has run (desync_sync_all); returns what f returns. f
 * stays on the caller's stack (no allocation beyond the C call's, which
 * has none for up to 8 distinct objects). f's exception is rethrown here.
 * Throws desync::error: DESYNC_EDEADLK (called from a job of one of the
 * objects, or the wait would close a cycle), DESYNC_EINVAL (an empty
 * object), DESYNC_ENOMEM (more than 8 objects), DESYNC_EFORKED.
 */
template <class... Args> decltype(auto) sync_all(Args &&...args) {
    static_assert(sizeof...(Args) >= 2, "desync::sync_all(objects..., f)");
    constexpr std::size_t n = sizeof...(Args) - 1;
    auto refs = std::forward_as_tuple(std::forward<Args>(args)...);
    auto &f = std::get<n>(refs);
    return detail::sync_all_impl(f, refs, std::make_index_sequence<n>{});
}

} // namespace desync

#endif /* DESYNC_HPP */
