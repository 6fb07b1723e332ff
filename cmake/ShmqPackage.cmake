# ShmqPackage.cmake - Debian packages with CPack, one per install component
# (cmake/ShmqInstall.cmake):
#   libshmqMAJOR  lib    the shared library libshmq.so.MAJOR (its soname: README "ABI and versions")
#   libshmq-dev   dev    headers, libshmq.so, libshmq.a, shmq.pc, the CMake package, shmq(3)
#   shmq-tools    tools  shmq, shmq-watchdog, shmq-bridge (if built), their man pages, bash
#                        completion, the watchdog's systemd units
# tools/check-packages builds them from a clean tree configured with -DSHMQ_PACKAGE=ON
# -DCMAKE_INSTALL_PREFIX=/usr -DSHMQ_TESTS=OFF -DSHMQ_BENCH=OFF and Debian's build flags, then
# runs lintian on them (and, with --install, dpkg -i and a smoke test). SHMQ_PACKAGE=ON adds
# what a Debian package must carry and a plain install does not want: each package's
# /usr/share/doc/PACKAGE/copyright and changelog.gz, and gzipped man pages (ShmqMan.cmake).

set(SHMQ_DEB_LIB libshmq${PROJECT_VERSION_MAJOR})
set(SHMQ_DEB_PACKAGES ${SHMQ_DEB_LIB} libshmq-dev shmq-tools)
set(SHMQ_DEB_COMPONENTS lib dev tools)

if(SHMQ_PACKAGE)
  if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    message(WARNING "SHMQ_PACKAGE: packages install under /usr; CMAKE_INSTALL_PREFIX is "
                    "${CMAKE_INSTALL_PREFIX} (the systemd units would name it)")
  endif()
  find_program(SHMQ_GZIP gzip REQUIRED)
  string(TIMESTAMP SHMQ_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
  # The changelog's date is the configure time (SOURCE_DATE_EPOCH, if set, makes it
  # reproducible); gzip -n leaves the name and time out of the file.
  foreach(pkg ${SHMQ_DEB_PACKAGES})
    list(FIND SHMQ_DEB_PACKAGES ${pkg} i)
    list(GET SHMQ_DEB_COMPONENTS ${i} comp)
    set(SHMQ_DEB_PACKAGE ${pkg})
    configure_file(${PROJECT_SOURCE_DIR}/cmake/debian/changelog.in
      ${PROJECT_BINARY_DIR}/debian/${pkg}/changelog @ONLY)
    add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/debian/${pkg}/changelog.gz
      COMMAND ${SHMQ_GZIP} -9nf -k ${PROJECT_BINARY_DIR}/debian/${pkg}/changelog
      DEPENDS ${PROJECT_BINARY_DIR}/debian/${pkg}/changelog VERBATIM)
    list(APPEND SHMQ_DEB_CHANGELOGS ${PROJECT_BINARY_DIR}/debian/${pkg}/changelog.gz)
    install(FILES ${PROJECT_SOURCE_DIR}/cmake/debian/copyright
                  ${PROJECT_BINARY_DIR}/debian/${pkg}/changelog.gz
      DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${pkg} COMPONENT ${comp})
  endforeach()
  add_custom_target(shmq_deb_changelogs ALL DEPENDS ${SHMQ_DEB_CHANGELOGS})
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME shmq)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "shmq")
set(CPACK_PACKAGE_CONTACT "shmq maintainers <shmq-maintainers@users.noreply.github.com>")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL ${SHMQ_DEB_COMPONENTS})
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # NAME_VERSION_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Descriptions: a summary line, then plain lines; CPack indents them and turns an empty line
# into " ." (Debian's paragraph break).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON) # liburcu8, libmicrohttpd12, libnats3.3 from the binaries
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON) # the library's shlibs file and ldconfig trigger
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

set(CPACK_DEBIAN_LIB_PACKAGE_NAME ${SHMQ_DEB_LIB})
set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
# dpkg's ldconfig trigger (lintian: lacks-ldconfig-trigger). CPack also writes a postinst and
# postrm calling ldconfig for a library under /usr/lib; they are kept (lintian warns,
# maintscript-calls-ldconfig): replacing them with empty scripts is warned about as well.
set(CPACK_DEBIAN_LIB_PACKAGE_CONTROL_EXTRA ${PROJECT_SOURCE_DIR}/cmake/debian/triggers)
set(CPACK_COMPONENT_LIB_DESCRIPTION
"crash-safe lock-free shared-memory message queue (library)
shmq is a message queue for processes on one host: messages live in shared
memory, any process may be killed or stopped at any instruction without
stalling the others, and a write-ahead log lets the queue survive the loss
of its segment or a power failure.

This package holds the shared library.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libshmq-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "${SHMQ_DEB_LIB} (= ${PROJECT_VERSION}), liburcu-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_SHLIBDEPS OFF) # only libshmq.a and headers: nothing to scan
set(CPACK_COMPONENT_DEV_DESCRIPTION
"crash-safe lock-free shared-memory message queue (development files)
shmq is a message queue for processes on one host: messages live in shared
memory, any process may be killed or stopped at any instruction without
stalling the others, and a write-ahead log lets the queue survive the loss
of its segment or a power failure.

This package holds the headers, the static library, the pkg-config file
(shmq.pc), the CMake package (find_package(shmq)) and shmq(3).")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME shmq-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_COMPONENT_TOOLS_DESCRIPTION
"crash-safe lock-free shared-memory message queue (tools and watchdog)
shmq is a message queue for processes on one host: messages live in shared
memory, any process may be killed or stopped at any instruction without
stalling the others, and a write-ahead log lets the queue survive the loss
of its segment or a power failure.

This package holds the shmq command (create, publish, receive, inspect,
recover queues), the shmq-watchdog daemon with its systemd units, and
shmq-bridge (NATS JetStream) where it was built.")

include(CPack)
