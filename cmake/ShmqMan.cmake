# ShmqMan.cmake - the man pages, installed by `cmake --install` under CMAKE_INSTALL_MANDIR:
#   shmq(1), shmq-watchdog(8), shmq-bridge(1)  generated at build time by help2man from each
#       tool's own --help and --version (shmq(1) also holds `shmq help CMD` of every command,
#       through cmake/ShmqManCommands.cmake), so a page cannot drift from its tool. Built only
#       where help2man is installed (Debian package help2man; tools/install-deps installs it);
#       without it the build says so and those pages are left out.
#   shmq(3)  the API overview, plain man source in docs/man/shmq.3.
# In the build tree they sit in man/manN/ (a MANPATH: `man -M BUILD/man shmq-watchdog`), where
# the tests find them; cmake/check-install.sh checks the installed ones render without warnings.
# With SHMQ_PACKAGE (Debian packages, cmake/ShmqPackage.cmake) they are installed compressed,
# as Debian policy wants (gzip -9n: no name or time inside).
set(SHMQ_MAN_BUILD_DIR ${PROJECT_BINARY_DIR}/man)
find_program(SHMQ_HELP2MAN help2man)
set(_gz_pages "")

# shmq_man_install(PAGE SECTION COMPONENT): install PAGE (gzipped for a package).
function(shmq_man_install page section component)
  if(SHMQ_PACKAGE)
    add_custom_command(OUTPUT ${page}.gz COMMAND gzip -9nf -k ${page} DEPENDS ${page} VERBATIM)
    set(_gz_pages ${_gz_pages} ${page}.gz PARENT_SCOPE)
    set(page ${page}.gz)
  endif()
  install(FILES ${page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} COMPONENT ${component})
endfunction()

configure_file(${PROJECT_SOURCE_DIR}/docs/man/shmq.3 ${SHMQ_MAN_BUILD_DIR}/man3/shmq.3 COPYONLY)
shmq_man_install(${SHMQ_MAN_BUILD_DIR}/man3/shmq.3 3 dev)

if(NOT SHMQ_HELP2MAN)
  message(STATUS "help2man not found: the man pages of shmq, shmq-watchdog and shmq-bridge are "
                 "not built (install help2man, or run tools/install-deps)")
  add_custom_target(shmq_man_pages ALL DEPENDS ${_gz_pages})
  return()
endif()

# shmq_man(TARGET SECTION "WHAT IT DOES" [INCLUDE_SCRIPT]): man/manSECTION/OUTPUT_NAME.SECTION
# from help2man over the built TARGET; INCLUDE_SCRIPT (cmake -P) writes an --include file first.
set(_pages "")
function(shmq_man target section what)
  if(NOT TARGET ${target})
    return()
  endif()
  get_target_property(name ${target} OUTPUT_NAME)
  set(page ${SHMQ_MAN_BUILD_DIR}/man${section}/${name}.${section})
  set(include_args "")
  set(include_cmd "")
  if(ARGN)
    set(inc ${PROJECT_BINARY_DIR}/man/${name}.h2m)
    set(include_cmd COMMAND ${CMAKE_COMMAND} -DTOOL=$<TARGET_FILE:${target}> -DOUT=${inc}
                            -P ${ARGN})
    set(include_args --include=${inc})
  endif()
  add_custom_command(OUTPUT ${page}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${SHMQ_MAN_BUILD_DIR}/man${section}
    ${include_cmd}
    COMMAND ${SHMQ_HELP2MAN} --no-info --section=${section} --name=${what}
            ${include_args} --output=${page} $<TARGET_FILE:${target}>
    DEPENDS ${target} ${ARGN}
    COMMENT "help2man: ${name}(${section})"
    VERBATIM)
  shmq_man_install(${page} ${section} tools)
  set(_pages ${_pages} ${page} ${_gz_pages} PARENT_SCOPE)
endfunction()
shmq_man(shmq_cli 1 "inspect and operate shmq shared-memory message queues"
         ${PROJECT_SOURCE_DIR}/cmake/ShmqManCommands.cmake)
shmq_man(shmq-watchdog 8 "maintain shmq queues: redeliver, repair, alert, serve metrics")
shmq_man(shmq-bridge 1 "bridge shmq queues and NATS JetStream, at least once both ways")
add_custom_target(shmq_man_pages ALL DEPENDS ${_pages} ${_gz_pages})
