// The C++17 consumer (see consumer.c): the C API from C++ with
// -Wall -Wextra -pedantic -Werror, jobs as captureless lambdas, and the
// installed C++ wrapper <desync.hpp> with capturing ones.
#include <desync.h>
#include <desync.hpp>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

int main() {
    static_assert(DESYNC_VERSION_NUMBER >= DESYNC_VERSION_ENCODE(0, 1, 0), "version macros");
    if (desync_version() != DESYNC_VERSION_NUMBER)
        return 1;
    auto *text = new std::string;
    desync_t *d = desync_new(text, [](void *data) { delete static_cast<std::string *>(data); });
    if (!d)
        return 1;
    for (int i = 0; i < 10; i++)
        if (desync_desync_copy(d, [](void *data, void *arg) {
                static_cast<std::string *>(data)->append(std::to_string(*static_cast<int *>(arg)));
            }, &i, sizeof i) != 0)
            return 1;
    std::string out;
    if (desync_sync(d, [](void *data, void *arg) {
            *static_cast<std::string *>(arg) = *static_cast<std::string *>(data);
        }, &out) != 0 || out != "0123456789") {
        std::fprintf(stderr, "consumer: got '%s'\n", out.c_str());
        return 1;
    }
    desync_release(d);
    {
        desync::object<std::string> s(std::string("a"));
        for (int i = 0; i < 3; i++)
            s.desync([i](std::string &v) { v += std::to_string(i); });
        if (s.sync([](std::string &v) { return v; }) != "a012") {
            std::fprintf(stderr, "consumer: desync.hpp gave the wrong text\n");
            return 1;
        }
    }
    desync_shutdown();
    std::printf("consumer ok %s (C++)\n", desync_version_string());
    return 0;
}
