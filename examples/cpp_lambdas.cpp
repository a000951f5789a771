// The C++ wrapper (include/desync.hpp) with lambdas: an account book that
// several threads update without a lock, a transfer over two objects, a
// future, and a pipe. Prints the final state; exits 1 if anything is off.
#include <desync.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

struct account {
    std::string owner;
    long balance = 0;
    std::vector<std::string> history;
};

int main() {
    std::atexit(desync_shutdown); // run what is still queued, give the pools back

    desync::object<account> alice(account{"alice", 100, {}});
    desync::object<account> bob(account{"bob", 50, {}});

    // desync: queued and returns at once; capturing lambdas are fine.
    std::vector<std::thread> tellers;
    for (int t = 0; t < 4; t++)
        tellers.emplace_back([alice, t] { // copying the handle retains the object
            for (int i = 0; i < 25; i++)
                alice.desync([t, i](account &a) {
                    a.balance += 1;
                    a.history.push_back("deposit by teller " + std::to_string(t) + " #" + std::to_string(i));
                });
        });
    for (auto &t : tellers)
        t.join();

    // sync: waits, returns the lambda's value.
    long balance = alice.sync([](account &a) { return a.balance; });
    std::printf("alice after 100 deposits: %ld\n", balance);

    // sync_all: both accounts at once, no lock order to choose.
    desync::sync_all(alice, bob, [](account &from, account &to) {
        from.balance -= 30;
        to.balance += 30;
    });

    // A sync job's exception comes back to the caller.
    try {
        bob.sync([](account &b) {
            if (b.balance < 1000)
                throw std::runtime_error("insufficient funds for " + b.owner);
        });
    } catch (const std::runtime_error &e) {
        std::printf("refused: %s\n", e.what());
    }

    // A sync from inside a job of the same object would never end: the C
    // library refuses it, and the wrapper throws desync::error.
    alice.sync([&alice](account &) {
        try {
            alice.sync([](account &) {});
        } catch (const desync::error &e) {
            std::printf("nested sync: %s\n", e.code().message().c_str());
        }
    });

    // A future: queued like desync, read later.
    desync::future<std::size_t> entries = alice.future_desync([](account &a) { return a.history.size(); });

    // A pipe: amounts from a stream, applied in order on bob's queue.
    std::vector<void *> amounts;
    for (std::uintptr_t x = 1; x <= 10; x++)
        amounts.push_back(reinterpret_cast<void *>(x));
    desync::future<std::size_t> piped =
        bob.pipe_in(desync::stream::from_array(amounts.data(), amounts.size()),
                    [](account &b, void *item) { b.balance += long(reinterpret_cast<std::uintptr_t>(item)); });
    piped.get(); // every amount applied

    std::size_t n = entries.get();
    long a = alice.sync([](account &x) { return x.balance; });
    long b = bob.sync([](account &x) { return x.balance; });
    std::printf("alice: %ld (%zu entries), bob: %ld, total: %ld\n", a, n, b, a + b);
    return a == 170 && b == 135 && n == 100 ? 0 : 1;
}
