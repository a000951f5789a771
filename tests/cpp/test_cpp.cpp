// Tests of the C++ wrapper (include/desync.hpp), built by `make test` when
// a C++ compiler is present (build/run_tests_cpp).
//
//   run_tests_cpp [name...]
//
// Each test runs in its own forked child with a timeout (30 s times
// $DESYNC_TEST_TIMEOUT_SCALE, by alarm()), so a hang or a crash fails that
// test only. Prints "PASS name (N ms)", "FAIL name (why)" or "SKIP name"
// (a test that returns SKIP, 77) per test and ends with "N passed, N failed,
// N skipped" (the C runner's format, which .ci/run adds up); exits 1 if any
// failed. Every wait is bounded.
#include <desync.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// ------------------------------------------------------------ allocation count
//
// operator new replaced for the whole binary: counts the calls made by the
// calling thread (the C library allocates with malloc, not counted). Not
// inlined: g++ would see free() of what `new` returned and warn. clang links
// its sanitizers' runtimes statically, with their own operator new that
// cannot be replaced: no count there (the test skips).
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define NO_NEW_COUNT 1
#endif
#endif

static thread_local unsigned long g_news = 0;

#ifndef NO_NEW_COUNT
[[gnu::noinline]] void *operator new(std::size_t n) {
    g_news++;
    if (void *p = std::malloc(n ? n : 1))
        return p;
    throw std::bad_alloc();
}
[[gnu::noinline]] void *operator new[](std::size_t n) { return ::operator new(n); }
[[gnu::noinline]] void operator delete(void *p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void *p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void *p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void *p, std::size_t) noexcept { std::free(p); }
#endif

// ------------------------------------------------------------------ harness

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

// Runs stmt, which must throw desync::error with code `code`.
#define CHECK_THROWS_CODE(stmt, want)                                                              \
    do {                                                                                           \
        int got_ = 0;                                                                              \
        try {                                                                                      \
            stmt;                                                                                  \
        } catch (const desync::error &e_) {                                                        \
            got_ = e_.code().value();                                                              \
            CHECK(e_.code().category() == desync::category());                                     \
        }                                                                                          \
        if (got_ != (want)) {                                                                      \
            std::fprintf(stderr, "%s:%d: %s: expected desync::error %d, got %d\n", __FILE__,       \
                         __LINE__, #stmt, (want), got_);                                           \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

using namespace std::chrono_literals;

// A test's return value (and its process's exit code) when it cannot run here.
static const int SKIP = 77;

// Spins (yielding) until pred() or 10 s: false on timeout.
template <class P> static bool wait_until(P pred) {
    auto end = std::chrono::steady_clock::now() + 10s;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::yield();
    }
    return true;
}

#ifdef DESYNC_TEST_SANITIZED
static const int SCALE = 1; // TSan is ~10x slower: smaller loops
#else
static const int SCALE = 4;
#endif

// ------------------------------------------------------------------- tests

struct counted {
    static std::atomic<int> alive;
    int value;
    explicit counted(int v) : value(v) { alive++; }
    counted(counted &&o) noexcept : value(o.value) { alive++; }
    ~counted() { alive--; }
};
std::atomic<int> counted::alive{0};

static int test_handles() {
    {
        desync::object<counted> a(counted(7));
        CHECK(counted::alive == 1); // the temporary is gone, the object's T remains
        desync::object<counted> b = a; // retain: the same object
        CHECK(b.c_handle() == a.c_handle());
        b.sync([](counted &c) { c.value++; });
        CHECK(a.sync([](counted &c) { return c.value; }) == 8);
        desync::object<counted> c = std::move(a);
        CHECK(!a && c && c.c_handle() == b.c_handle());
        CHECK_THROWS_CODE(a.sync([](counted &) {}), DESYNC_EINVAL);
        CHECK_THROWS_CODE(a.desync([](counted &) {}), DESYNC_EINVAL);
        a = c; // copy-assign into an empty handle
        CHECK(a.c_handle() == c.c_handle());
        b = desync::object<counted>(std::in_place, 1); // releases one reference of the first
        CHECK(counted::alive == 2);
        CHECK(b.sync([](counted &x) { return x.value; }) == 1);
        CHECK(static_cast<counted *>(desync_data(c.c_handle()))->value == 8); // data is the T
    }
    CHECK(counted::alive == 0); // every last release deleted its T
    // On a scheduler with no threads: a sync runs the pending jobs itself.
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    {
        desync::object<counted> z(s0, std::in_place, 40);
        z.desync([](counted &c) { c.value += 2; });
        CHECK(z.sync([](counted &c) { return c.value; }) == 42);
    }
    desync_scheduler_free(s0);
    CHECK(counted::alive == 0);
    return 0;
}

// Several threads append to one std::string with capturing lambdas: every
// append lands, and each thread's appends in the order it queued them.
static int test_desync_order() {
    struct log {
        std::string text;
        int next[4] = {0, 0, 0, 0};
        bool in_order = true;
    };
    desync::object<log> l(std::in_place);
    int per = 250 * SCALE; // not const: both compilers then want it captured
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; t++)
        ts.emplace_back([&l, t, per] {
            std::string tag = "t" + std::to_string(t); // a non-trivial capture
            for (int i = 0; i < per; i++) {
                if (i % 2)
                    l.desync([t, i](log &g) { // trivially copyable: copied into the job
                        g.in_order &= g.next[t] == i;
                        g.next[t] = i + 1;
                        g.text += char('a' + t);
                    });
                else
                    l.desync([t, i, tag](log &g) { // moved into one new block
                        g.in_order &= g.next[t] == i && tag == "t" + std::to_string(t);
                        g.next[t] = i + 1;
                        g.text += char('a' + t);
                    });
            }
        });
    for (auto &t : ts)
        t.join();
    bool ok = l.sync([per](log &g) {
        for (int t = 0; t < 4; t++)
            if (g.next[t] != per)
                return false;
        return g.in_order && g.text.size() == std::size_t(4 * per);
    });
    CHECK(ok);
    return 0;
}

static int test_sync_values() {
    desync::object<std::vector<int>> v(std::vector<int>{1, 2, 3});
    int sum = v.sync([](std::vector<int> &x) {
        int s = 0;
        for (int i : x)
            s += i;
        return s;
    });
    CHECK(sum == 6);
    v.sync([](std::vector<int> &x) { x.push_back(4); }); // void
    std::string s = v.sync([](std::vector<int> &x) { return std::to_string(x.size()); });
    CHECK(s == "4");
    // A reference result refers into the object (only for use in its jobs).
    std::vector<int> *addr = &v.sync([](std::vector<int> &x) -> std::vector<int> & { return x; });
    CHECK(addr == desync_data(v.c_handle()));
    // A callable passed as an lvalue, mutable state kept by the caller.
    int calls = 0;
    auto f = [&calls](std::vector<int> &x) { calls++; return x.back(); };
    CHECK(v.sync(f) == 4 && v.sync(f) == 4 && calls == 2);
    return 0;
}

static int test_sync_exceptions() {
    desync::object<int> o(0);
    bool caught = false;
    try {
        o.sync([](int &x) -> int {
            x = 1;
            throw std::runtime_error("from the job");
        });
    } catch (const std::runtime_error &e) {
        caught = std::strcmp(e.what(), "from the job") == 0;
    }
    CHECK(caught);
    CHECK(o.sync([](int &x) { return x; }) == 1); // the job ran; the object goes on
    // A sync from a job of the same object is refused by the C library
    // (DESYNC_EDEADLK): desync::error inside the job, then out of the outer sync.
    int inner = 0;
    o.sync([&](int &) {
        try {
            o.sync([](int &) {});
        } catch (const desync::error &e) {
            inner = e.code().value();
        }
    });
    CHECK(inner == DESYNC_EDEADLK);
    CHECK_THROWS_CODE(o.sync([&](int &) { o.sync([](int &) {}); }), DESYNC_EDEADLK);
    // The message names the call and the C library's text.
    try {
        o.sync([&](int &) { o.sync([](int &) {}); });
    } catch (const desync::error &e) {
        CHECK(std::string(e.what()).find("desync_sync") != std::string::npos);
        CHECK(std::string(e.what()).find(desync_strerror(DESYNC_EDEADLK)) != std::string::npos);
        CHECK(e.code().message() == desync_strerror(DESYNC_EDEADLK));
        CHECK(std::string(e.code().category().name()) == "desync");
    }
    return 0;
}

// sync on an object busy on a scheduler thread: the job may then run on
// that thread, and its value or exception must still reach the caller.
static int test_sync_busy_object() {
    desync::object<int> o(0);
    for (int i = 0; i < 20 * SCALE; i++) {
        std::atomic<bool> started{false};
        o.desync([&started](int &x) {
            started = true;
            auto end = std::chrono::steady_clock::now() + 2ms;
            while (std::chrono::steady_clock::now() < end)
                std::this_thread::yield();
            x++;
        });
        CHECK(wait_until([&] { return started.load(); }));
        std::string what;
        try {
            o.sync([i](int &) { throw std::runtime_error(std::to_string(i)); });
        } catch (const std::runtime_error &e) {
            what = e.what();
        }
        CHECK(what == std::to_string(i));
        o.desync([](int &x) { x++; });
        std::string v = o.sync([](int &x) { return std::to_string(x); }); // behind the desync
        CHECK(v == std::to_string(2 * (i + 1)));
    }
    // Callables passed as lvalues (copied), const, and mutable ones.
    const auto add = [](int &x) { x += 10; };
    o.desync(add);
    int local = 5;
    auto mut = [local](int &x) mutable { x += local++; };
    o.desync(mut); // each job gets its own copy of mut: both add 5
    o.desync(mut);
    CHECK(o.sync([](int &x) { return x; }) == 40 * SCALE + 20);
    return 0;
}

// A desync on a full object with a limit, from a job on a scheduler thread,
// is refused (DESYNC_EAGAIN) rather than holding the thread: desync::error.
static int test_desync_full_eagain() {
    desync::object<int> o(0), p(0);
    CHECK(desync_set_max_pending(o.c_handle(), 1) == 0);
    std::atomic<bool> go{false}, started{false};
    o.desync([&](int &) {
        started = true;
        wait_until([&] { return go.load(); });
    });
    CHECK(wait_until([&] { return started.load(); }));
    // (Not a future waited on from here: the wait could run p's job on this
    // thread, which is no scheduler thread, and the desync would block.)
    std::atomic<int> result{1}, accepted{0};
    p.desync([&o, &result, &accepted](int &) {
        int code = 0;
        for (int k = 0; k < 4 && code == 0; k++) {
            try {
                o.desync([](int &x) { x++; });
                accepted++;
            } catch (const desync::error &e) {
                code = e.code().value();
            }
        }
        result = code;
    });
    CHECK(wait_until([&] { return result.load() != 1; }));
    int code = result;
    go = true;
    CHECK(code == DESYNC_EAGAIN);
    CHECK(o.sync([](int &x) { return x; }) == accepted); // what was accepted ran
    return 0;
}

static std::atomic<int> g_handled{0};
static std::string g_handled_what; // written by the handler, read after a sync

static void count_handler(std::exception_ptr e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception &x) {
        g_handled_what = x.what();
    }
    g_handled++;
}

static int test_job_exception_handler() {
    CHECK(desync::get_job_exception_handler() == nullptr);
    CHECK(desync::set_job_exception_handler(count_handler) == nullptr);
    desync::object<int> o(0);
    o.desync([](int &x) {
        x = 5;
        throw std::logic_error("lost job");
    });
    o.desync([](int &x) { x++; }); // runs after the handler returned
    CHECK(o.sync([](int &x) { return x; }) == 6);
    CHECK(g_handled == 1 && g_handled_what == "lost job");
    // A non-trivial callable (heap path) goes to the same handler.
    std::string big(100, 'x');
    o.desync([big](int &) { throw std::runtime_error(big); });
    o.sync([](int &) {});
    CHECK(g_handled == 2 && g_handled_what == big);
    CHECK(desync::set_job_exception_handler(nullptr) == count_handler);
    CHECK(desync::get_job_exception_handler() == nullptr);
    return 0;
}

// Without a handler, an exception out of a desync job terminates: checked
// in a child process (bounded by alarm).
static int test_job_exception_default_terminates() {
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(20);
        if (!std::freopen("/dev/null", "w", stderr)) // the "terminate called" line
            _exit(2);
        desync::object<int> o(0);
        o.desync([](int &) { throw 1; });
        o.sync([](int &) {});
        _exit(0); // not reached
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    return 0;
}

static int test_futures() {
    desync::object<std::string> s(std::string("ab"));
    auto f = s.future_desync([](std::string &v) { return v.size(); });
    CHECK(f.valid());
    CHECK(f.wait_for(10s));
    CHECK(f.get() == 2);
    CHECK(!f.valid());
    CHECK_THROWS_CODE(f.get(), DESYNC_EINVAL);
    CHECK_THROWS_CODE(f.wait_for(1s), DESYNC_EINVAL);
    // Timeouts too long for 64-bit nanoseconds, and negative ones, are fine.
    auto fmax = s.future_desync([](std::string &) { return 1; });
    CHECK(fmax.wait_for(std::chrono::hours::max()));
    CHECK(fmax.wait_for(-1s));
    CHECK(fmax.get() == 1);

    // Exceptions come out of get(); void futures.
    auto fe = s.future_desync([](std::string &) -> int { throw std::out_of_range("oops"); });
    bool caught = false;
    try {
        fe.get();
    } catch (const std::out_of_range &) {
        caught = true;
    }
    CHECK(caught);
    auto fv = s.future_desync([](std::string &v) { v += "c"; });
    fv.get();

    // wait_for times out while the object is busy, then succeeds.
    std::atomic<bool> go{false}, started{false};
    s.desync([&](std::string &) {
        started = true;
        wait_until([&] { return go.load(); });
    });
    auto f2 = s.future_desync([](std::string &v) { return v; });
    CHECK(wait_until([&] { return started.load(); }));
    CHECK(!f2.wait_for(1ms));
    go = true;
    CHECK(f2.wait_for(10s));
    CHECK(f2.get() == "abc");

    // Waiting from a job of the object on a job queued behind it: DESYNC_EDEADLK,
    // and the future stays valid.
    desync::future<int> f3;
    s.sync([&](std::string &) {
        f3 = s.future_desync([](std::string &) { return 3; });
        CHECK_THROWS_CODE(f3.get(), DESYNC_EDEADLK);
        return 0;
    });
    CHECK(f3.valid() && f3.get() == 3);

    // A dropped future: the job still runs.
    std::atomic<int> ran{0};
    { auto dropped = s.future_desync([&](std::string &) { ran = 1; return 0; }); }
    s.sync([](std::string &) {});
    CHECK(ran == 1);
    // Moves.
    auto f4 = s.future_desync([](std::string &) { return 4; });
    desync::future<int> f5(std::move(f4));
    CHECK(!f4.valid() && f5.get() == 4);
    return 0;
}

static int test_sync_all() {
    desync::object<int> a(10);
    desync::object<std::string> b(std::string("x"));
    desync::object<std::vector<int>> c(std::vector<int>{});
    a.desync([](int &x) { x += 1; });
    b.desync([](std::string &v) { v += "y"; });
    // Jobs queued before run first; the result is returned.
    std::string r = desync::sync_all(a, b, [](int &x, std::string &v) { return v + std::to_string(x); });
    CHECK(r == "xy11");
    desync::sync_all(a, b, c, [](int &x, std::string &v, std::vector<int> &w) {
        w.push_back(x);
        w.push_back(int(v.size()));
    });
    CHECK(c.sync([](std::vector<int> &w) { return w.size() == 2 && w[0] == 11 && w[1] == 2; }));
    // The same object twice: both positions are its T.
    CHECK(desync::sync_all(a, a, [](int &x, int &y) { return &x == &y; }));
    // Exceptions and errors.
    bool caught = false;
    try {
        desync::sync_all(a, b, [](int &, std::string &) { throw std::runtime_error("x"); });
    } catch (const std::runtime_error &) {
        caught = true;
    }
    CHECK(caught);
    CHECK_THROWS_CODE(a.sync([&](int &) { desync::sync_all(a, b, [](int &, std::string &) {}); }),
                      DESYNC_EDEADLK);
    desync::object<int> empty;
    CHECK_THROWS_CODE(desync::sync_all(a, empty, [](int &, int &) {}), DESYNC_EINVAL);
    // Transfers between accounts from several threads keep the total.
    desync::object<int> x(1000), y(1000);
    std::vector<std::thread> ts;
    for (int t = 0; t < 3; t++)
        ts.emplace_back([&, t] {
            for (int i = 0; i < 100 * SCALE; i++) {
                if ((i + t) % 2)
                    desync::sync_all(x, y, [](int &p, int &q) { p -= 3; q += 3; });
                else
                    desync::sync_all(y, x, [](int &p, int &q) { p -= 2; q += 2; });
            }
        });
    for (auto &t : ts)
        t.join();
    CHECK(desync::sync_all(x, y, [](int &p, int &q) { return p + q; }) == 2000);
    return 0;
}

static void *as_item(std::uintptr_t i) { return reinterpret_cast<void *>(i); }
static std::uintptr_t as_int(void *p) { return reinterpret_cast<std::uintptr_t>(p); }

static int test_pipes() {
    std::vector<void *> items;
    for (std::uintptr_t i = 1; i <= 100; i++)
        items.push_back(as_item(i));

    // pipe_in: items in order into the object; the future says when done.
    desync::object<std::vector<std::uintptr_t>> seen(std::in_place);
    std::uintptr_t offset = 1000; // a capture
    auto done = seen.pipe_in(desync::stream::from_array(items.data(), items.size()),
                             [offset](std::vector<std::uintptr_t> &v, void *item) { v.push_back(as_int(item) + offset); });
    CHECK(done.wait_for(10s));
    CHECK(done.get() == 0);
    CHECK(seen.sync([](std::vector<std::uintptr_t> &v) {
        for (std::size_t i = 0; i < v.size(); i++)
            if (v[i] != i + 1001)
                return false;
        return v.size() == 100;
    }));

    // pipe with an output, chained into a second pipe on another object.
    desync::object<int> doubler(0), adder(0);
    std::string name = "chained"; // a non-trivial capture
    desync::stream out1 = doubler.pipe(desync::stream::from_array(items.data(), items.size()),
                                       [](int &count, void *item) {
                                           count++;
                                           return as_item(as_int(item) * 2);
                                       });
    desync::stream out2 = adder.pipe(std::move(out1), [name](int &count, void *item) {
        count++;
        return as_item(as_int(item) + name.size());
    });
    CHECK(!out1);
    void *item = nullptr;
    for (std::uintptr_t i = 1; i <= 100; i++) {
        CHECK(out2.next_for(item, 10s) == desync::next_status::item);
        CHECK(as_int(item) == i * 2 + 7);
    }
    CHECK(out2.next_for(item, 10s) == desync::next_status::end);
    CHECK(doubler.sync([](int &n) { return n; }) == 100);
    CHECK(adder.sync([](int &n) { return n; }) == 100);

    // A pipe closed early by freeing its output: the callable is freed by a
    // job of the object (checked by ASan/LSan and valgrind), nothing hangs.
    {
        desync::stream early = doubler.pipe(desync::stream::from_array(items.data(), items.size()),
                                            [name](int &, void *it) { return it; });
        CHECK(early.next_for(item, 10s) == desync::next_status::item && as_int(item) == 1);
    }
    doubler.sync([](int &) {});

    // Read directly, the output is the C pipe's own: on a scheduler with no
    // threads the reader runs the object's process jobs itself.
    desync_scheduler_t *s0 = desync_scheduler_new(0);
    CHECK(s0);
    {
        desync::object<int> idle(s0, std::in_place, 0);
        desync::stream o0 = idle.pipe(desync::stream::from_array(items.data(), items.size()),
                                      [](int &n, void *it) { n++; return it; });
        for (std::uintptr_t i = 1; i <= 100; i++)
            CHECK(o0.next_for(item, 10s) == desync::next_status::item && as_int(item) == i);
        CHECK(o0.next_for(item, 10s) == desync::next_status::end);
        CHECK(idle.sync([](int &n) { return n; }) == 100);
    }
    desync_scheduler_free(s0);

    // Given up to C code with release(): a user stream whose free (by C)
    // also frees the process function.
    {
        desync::stream o1 = doubler.pipe(desync::stream::from_array(items.data(), 3),
                                         [name](int &, void *it) { return as_item(as_int(it) + name.size()); });
        desync_stream_t *c_out = o1.release();
        CHECK(c_out && !o1);
        CHECK(desync_stream_next_for(c_out, 10000000000ull, &item) == 0 && as_int(item) == 8);
        desync_stream_free(c_out);
    }
    doubler.sync([](int &) {});

    // An exception in a process function goes to the handler; its output is nullptr.
    desync::set_job_exception_handler(count_handler);
    int before = g_handled;
    desync::stream out3 = adder.pipe(desync::stream::from_array(items.data(), 3), [](int &, void *it) {
        if (as_int(it) == 2)
            throw std::runtime_error("item 2");
        return it;
    });
    std::vector<std::uintptr_t> got;
    while (out3.next_for(item, 10s) == desync::next_status::item)
        got.push_back(as_int(item));
    desync::set_job_exception_handler(nullptr);
    CHECK(got.size() == 3 && got[0] == 1 && got[1] == 0 && got[2] == 3);
    CHECK(g_handled == before + 1 && g_handled_what == "item 2");

    // Empty inputs and objects are refused.
    desync::object<int> empty;
    CHECK_THROWS_CODE(empty.pipe(desync::stream::from_array(items.data(), 1), [](int &, void *it) { return it; }),
                      DESYNC_EINVAL);
    CHECK_THROWS_CODE(adder.pipe_in(desync::stream(), [](int &, void *) {}), DESYNC_EINVAL);

    // pipe_in stopped by the release of its object: the future says ECANCELED.
    desync_stream_t *rx = nullptr;
    desync_channel_t *tx = desync_channel_new(4, &rx);
    CHECK(tx && rx);
    desync::future<std::size_t> stopped;
    {
        desync::object<int> gone(0);
        stopped = gone.pipe_in(desync::stream(rx), [](int &n, void *) { n++; });
        CHECK(desync_channel_send(tx, as_item(1)) == 0);
    }
    (void)desync_channel_send(tx, as_item(2)); // refused (DESYNC_EPIPE) if the pipe stopped already
    desync_channel_close(tx);
    CHECK(stopped.wait_for(10s));
    CHECK_THROWS_CODE(stopped.get(), DESYNC_ECANCELED);
    return 0;
}

// sync and desync with small trivially copyable captures allocate nothing
// with operator new; other callables once per desync.
static int test_allocations() {
#ifdef NO_NEW_COUNT
    std::printf("cpp_allocations: operator new cannot be replaced under clang's sanitizers\n");
    return SKIP;
#endif
    desync::object<long> o(0);
    o.sync([](long &) {}); // warm up whatever the first call sets up
    long a = 1, b = 2, c = 3;
    unsigned long before = g_news;
    for (int i = 0; i < 100; i++) {
        o.desync([a, b, c, i](long &x) { x += a + b + c + i; });
        long r = o.sync([&a, b](long &x) { return x + a + b; });
        (void)r;
    }
    std::string tag("short"); // no allocation to copy (small string)
    CHECK(g_news == before);
    struct big {
        char bytes[200];
    } blob{};
    for (int i = 0; i < 10; i++)
        o.sync([blob, tag](long &x) { x += blob.bytes[0] + long(tag.size()); }); // on the stack
    CHECK(g_news == before);
    for (int i = 0; i < 10; i++)
        o.desync([tag](long &x) { x += long(tag.size()); }); // not trivially copyable
    CHECK(g_news == before + 10);
    for (int i = 0; i < 10; i++)
        o.desync([blob](long &x) { x += blob.bytes[1]; }); // too large to copy inline
    CHECK(g_news == before + 20);
    CHECK(desync::sync_all(o, o, [&a](long &x, long &) { return x + a; }) > 0);
    CHECK(g_news == before + 20);
    return 0;
}

// ------------------------------------------------------------------- runner

struct test_case {
    const char *name;
    int (*fn)();
};

static const test_case tests[] = {
    {"cpp_handles", test_handles},
    {"cpp_desync_order", test_desync_order},
    {"cpp_sync_values", test_sync_values},
    {"cpp_sync_exceptions", test_sync_exceptions},
    {"cpp_sync_busy_object", test_sync_busy_object},
    {"cpp_desync_full_eagain", test_desync_full_eagain},
    {"cpp_job_exception_handler", test_job_exception_handler},
    {"cpp_job_exception_default_terminates", test_job_exception_default_terminates},
    {"cpp_futures", test_futures},
    {"cpp_sync_all", test_sync_all},
    {"cpp_pipes", test_pipes},
    {"cpp_allocations", test_allocations},
};

static double now_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) / 1e6;
}

int main(int argc, char **argv) {
    double scale = 1;
    if (const char *s = std::getenv("DESYNC_TEST_TIMEOUT_SCALE"))
        scale = std::atof(s) > 0 ? std::atof(s) : 1;
    unsigned limit = unsigned(30 * scale);
    int passed = 0, failed = 0, skipped = 0;
    for (const test_case &t : tests) {
        bool wanted = argc < 2;
        for (int i = 1; i < argc; i++)
            wanted |= std::strcmp(argv[i], t.name) == 0;
        if (!wanted)
            continue;
        std::fflush(stdout);
        std::fflush(stderr);
        double start = now_ms();
        pid_t pid = fork();
        if (pid < 0) {
            std::perror("fork");
            return 1;
        }
        if (pid == 0) {
            alarm(limit); // a hung test is killed by SIGALRM
            int rc = t.fn();
            desync_shutdown();
            std::fflush(stdout);
            std::fflush(stderr);
            std::exit(rc); // exit(), not _exit(): leak checkers must run
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0) {
        }
        double ms = now_ms() - start;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            std::printf("PASS %s (%.0f ms)\n", t.name, ms);
            passed++;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP) {
            std::printf("SKIP %s\n", t.name);
            skipped++;
        } else {
            if (WIFSIGNALED(status))
                std::printf("FAIL %s (signal %d: %s%s)\n", t.name, WTERMSIG(status), strsignal(WTERMSIG(status)),
                            WTERMSIG(status) == SIGALRM ? ", timeout" : "");
            else
                std::printf("FAIL %s (exit %d)\n", t.name, WEXITSTATUS(status));
            failed++;
        }
    }
    std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
