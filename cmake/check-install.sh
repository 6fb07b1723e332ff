#!/usr/bin/env bash
# cmake/check-install.sh BUILD_DIR - install BUILD_DIR to a temporary prefix and prove that a
# consumer can build against it: with pkg-config (shared) and with find_package(shmq)
# (shmq::shmq and shmq::shmq_static), that no installed library has crash points or the
# I/O layer's fault injection (src/io.h), both test-build only, and that the man pages are
# installed and render without a warning (man -l, groff -ww), and that libshmq.so's soname is
# libshmq.so.MAJOR of the installed version.h.
# Run by tests/run; exits non-zero on the first failure. Leaves nothing behind.
set -euo pipefail

build=$(cd "${1:?usage: check-install.sh BUILD_DIR}" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmq-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { echo "check-install: $*"; }

step "cmake --install to $prefix"
if ! cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"; then
    cat "$tmp/install.log"
    exit 1
fi

pc=$(find "$prefix" -name shmq.pc -path '*/pkgconfig/*' | head -n1)
[[ -n "$pc" ]] || { echo "check-install: no shmq.pc installed" >&2; exit 1; }
libdir=$(dirname "$(dirname "$pc")")
for f in "$prefix/include/shmq/shmq.h" "$prefix/include/shmq/version.h" "$libdir/libshmq.so" \
    "$libdir/libshmq.a" \
    "$libdir/cmake/shmq/shmqConfig.cmake"; do
    [[ -e "$f" ]] || { echo "check-install: missing $f" >&2; exit 1; }
done

step "man pages installed and rendered without warnings"
mandir=$prefix/share/man
pages=("$mandir/man3/shmq.3")
if grep -q '^SHMQ_HELP2MAN:FILEPATH=.*NOTFOUND' "$build/CMakeCache.txt"; then
    echo "  help2man was missing at build time: shmq(1), shmq-watchdog(8), shmq-bridge(1) not built"
else
    pages+=("$mandir/man1/shmq.1" "$mandir/man8/shmq-watchdog.8")
    [[ ! -e "$prefix/bin/shmq-bridge" ]] || pages+=("$mandir/man1/shmq-bridge.1")
fi
for page in "${pages[@]}"; do
    [[ -s "$page" ]] || { echo "check-install: missing man page $page" >&2; exit 1; }
    warnings=$( { MANWIDTH=80 man -l "$page" >/dev/null; } 2>&1; groff -ww -z -man "$page" 2>&1)
    if [[ -n "$warnings" ]]; then
        echo "check-install: $page renders with warnings:" >&2
        echo "$warnings" >&2
        exit 1
    fi
    echo "  ${page#"$prefix"/}"
done

step "installed libraries have no crash points and no I/O fault injection"
if nm -A --defined-only "$libdir/libshmq.a" "$libdir/libshmq.so" |
    grep -wE 'crashpoint_hit|io_fault_[a-z_]+'; then
    echo "check-install: an installed library has crash points or I/O faults compiled in" >&2
    exit 1
fi

step "libshmq.so exports the public API (shmq_*) only"
others=$(nm -D --defined-only "$libdir/libshmq.so" | awk '{print $3}' | grep -v '^shmq_' || true)
if [[ -n "$others" ]]; then
    echo "check-install: libshmq.so exports names outside shmq_*:" $others >&2
    exit 1
fi

step "libshmq.so's soname is libshmq.so.MAJOR (README \"ABI and versions\")"
major=$(sed -n 's/^#define SHMQ_VERSION_MAJOR \([0-9]*\).*/\1/p' "$prefix/include/shmq/version.h")
soname=$(readelf -d "$libdir/libshmq.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
if [[ -z "$major" || "$soname" != "libshmq.so.$major" ]]; then
    echo "check-install: soname '$soname', expected libshmq.so.$major" >&2
    exit 1
fi
[[ -e "$libdir/$soname" ]] || { echo "check-install: $libdir/$soname missing" >&2; exit 1; }

cat >"$tmp/consumer.c" <<'C'
/* A tiny program that uses the installed shmq, written by cmake/check-install.sh. */
#include <errno.h>
#include <shmq/shmq.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    const char *text = shmq_strerror(-EINVAL);
    printf("shmq %s (headers %s), capacity %u, -EINVAL: %s\n", shmq_version(),
           SHMQ_VERSION_STRING, (unsigned)cfg.capacity, text ? text : "(null)");
    if (strcmp(shmq_version(), SHMQ_VERSION_STRING) != 0)
        return 1; /* the installed library and headers are of one version */
    return cfg.capacity > 0 && text != NULL ? 0 : 1;
}
C

step "pkg-config --cflags --libs shmq"
export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
flags=$(pkg-config --cflags --libs shmq)
echo "  $flags"
# shellcheck disable=SC2086 # word splitting of the flags is wanted
cc -std=c11 -Wall -Werror -o "$tmp/consumer-pc" "$tmp/consumer.c" $flags
LD_LIBRARY_PATH="$libdir" "$tmp/consumer-pc"
pkg-config --static --libs shmq >/dev/null # Requires.private must resolve too

step "find_package(shmq): shmq::shmq and shmq::shmq_static"
mkdir -p "$tmp/cmake-consumer"
cat >"$tmp/cmake-consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(shmq_consumer LANGUAGES C)
find_package(shmq 0.1 REQUIRED CONFIG)
add_executable(consumer_shared ../consumer.c)
target_link_libraries(consumer_shared PRIVATE shmq::shmq)
add_executable(consumer_static ../consumer.c)
target_link_libraries(consumer_static PRIVATE shmq::shmq_static)
CM
cmake -S "$tmp/cmake-consumer" -B "$tmp/cmake-consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
    >"$tmp/cmake.log" || { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/cmake-consumer/build" >"$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
"$tmp/cmake-consumer/build/consumer_shared"
"$tmp/cmake-consumer/build/consumer_static"
if ldd "$tmp/cmake-consumer/build/consumer_static" | grep -q libshmq; then
    echo "check-install: consumer_static links libshmq.so" >&2
    exit 1
fi
step "ok"
