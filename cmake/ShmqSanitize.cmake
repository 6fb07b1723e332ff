# ShmqSanitize.cmake - the SHMQ_SANITIZE option: compile and link everything with sanitizers.
#
#   SHMQ_SANITIZE=address  ASan + UBSan; any UB report stops the test (-fno-sanitize-recover)
#   SHMQ_SANITIZE=thread   TSan (use clang-14 if gcc's TSan misbehaves: CC=clang-14)
#
# Included before the first target, so the flags reach the library, the tests, the CLI and the
# benchmarks alike. A sanitized tree is for testing: do not install it.
set(SHMQ_SANITIZE "" CACHE STRING "Sanitizers: empty, 'address' (ASan+UBSan) or 'thread' (TSan)")
set_property(CACHE SHMQ_SANITIZE PROPERTY STRINGS "" address thread)

if(SHMQ_SANITIZE STREQUAL "")
  set(SHMQ_SANITIZE_FLAGS "")
elseif(SHMQ_SANITIZE STREQUAL "address")
  set(SHMQ_SANITIZE_FLAGS
    -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(SHMQ_SANITIZE STREQUAL "thread")
  set(SHMQ_SANITIZE_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
else()
  message(FATAL_ERROR "SHMQ_SANITIZE='${SHMQ_SANITIZE}': use '', 'address' or 'thread'")
endif()

if(SHMQ_SANITIZE_FLAGS)
  add_compile_options(${SHMQ_SANITIZE_FLAGS})
  add_link_options(${SHMQ_SANITIZE_FLAGS})
  message(STATUS "shmq: sanitizers ${SHMQ_SANITIZE}: ${SHMQ_SANITIZE_FLAGS}")
endif()
