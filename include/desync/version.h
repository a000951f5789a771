/**
 * @file
 * libdesync version: the one place the version is written. The Makefile,
 * CMakeLists.txt, the pkg-config and CMake package files and the shared
 * library's soname all read the three numbers below (keep each on its own
 * "#define NAME number" line: they are parsed). debian/changelog must name
 * the same version (`make check-version`).
 *
 * Policy (README "Versions and ABI"): while MAJOR is 0, every minor release
 * may change the ABI, so the soname carries the minor (libdesync.so.0.1);
 * from 1.0 it is libdesync.so.MAJOR and the ABI follows semantic versioning.
 *
 * Included by <desync.h>; may also be included on its own (macros only).
 * The macros give the version a program was compiled against;
 * desync_version() and desync_version_string() (in <desync.h>) give the one
 * of the library it runs with.
 */
#ifndef DESYNC_VERSION_H
#define DESYNC_VERSION_H

/** @{ */
/** The version of these headers: major, minor and patch numbers. */
#define DESYNC_VERSION_MAJOR 0
#define DESYNC_VERSION_MINOR 1
#define DESYNC_VERSION_PATCH 0
/** @} */

/** @{ */
/** MAJOR * 10000 + MINOR * 100 + PATCH (0.1.0 is 100, 1.2.3 is 10203): minor
 * and patch stay below 100. Compares with DESYNC_VERSION_ENCODE. */
#define DESYNC_VERSION_ENCODE(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))
#define DESYNC_VERSION_NUMBER \
    DESYNC_VERSION_ENCODE(DESYNC_VERSION_MAJOR, DESYNC_VERSION_MINOR, DESYNC_VERSION_PATCH)
/** @} */

/** @{ */
/** Helpers for DESYNC_VERSION_STRING: a macro's value as a string. */
#define DESYNC_VERSION_STRINGIFY_(x) #x
#define DESYNC_VERSION_STRINGIFY(x) DESYNC_VERSION_STRINGIFY_(x)
/** @} */

/** "MAJOR.MINOR.PATCH", e.g.\ "0.1.0". */
#define DESYNC_VERSION_STRING                                                  \
    DESYNC_VERSION_STRINGIFY(DESYNC_VERSION_MAJOR) "."                         \
    DESYNC_VERSION_STRINGIFY(DESYNC_VERSION_MINOR) "."                         \
    DESYNC_VERSION_STRINGIFY(DESYNC_VERSION_PATCH)

/** True when the headers are at least version major.minor.patch, for code
 * that must build against several releases:
 *   `#if DESYNC_VERSION_AT_LEAST(0, 2, 0) ... #endif` */
#define DESYNC_VERSION_AT_LEAST(major, minor, patch) \
    (DESYNC_VERSION_NUMBER >= DESYNC_VERSION_ENCODE(major, minor, patch))

#endif /* DESYNC_VERSION_H */
