# The watchdog's systemd units (tools/systemd/*.in): ExecStart gets the shmq-watchdog of
# CMAKE_INSTALL_PREFIX as configured (the prefix at configure time, as for every installed path
# written into a file), and they go to SHMQ_SYSTEMD_UNIT_DIR (default PREFIX/lib/systemd/system;
# a package for /usr sets /usr/lib/systemd/system, which is where systemd looks). metrics.conf, a drop-in that
# lets a unit serve --metrics, goes to the documentation directory beside README.md.
# A second copy in the build tree (systemd/ under it) runs the tree's shmq-watchdog: the tests
# check it with `systemd-analyze verify`.
if(NOT TARGET shmq-watchdog)
  return()
endif()
set(SHMQ_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
    "Where cmake --install puts the watchdog's systemd units (relative: under the prefix)")
set(_units shmq-watchdog@.service shmq-watchdog-all.service metrics.conf)
foreach(unit ${_units})
  set(SHMQ_UNIT_BINDIR "${CMAKE_INSTALL_FULL_BINDIR}")
  configure_file(${PROJECT_SOURCE_DIR}/tools/systemd/${unit}.in
    ${PROJECT_BINARY_DIR}/systemd-install/${unit} @ONLY)
  set(SHMQ_UNIT_BINDIR "${PROJECT_BINARY_DIR}")
  configure_file(${PROJECT_SOURCE_DIR}/tools/systemd/${unit}.in
    ${PROJECT_BINARY_DIR}/systemd/${unit} @ONLY)
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/systemd-install/shmq-watchdog@.service
              ${PROJECT_BINARY_DIR}/systemd-install/shmq-watchdog-all.service
        DESTINATION ${SHMQ_SYSTEMD_UNIT_DIR} COMPONENT tools)
install(FILES ${PROJECT_BINARY_DIR}/systemd-install/metrics.conf
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/systemd COMPONENT tools)
