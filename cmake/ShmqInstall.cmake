# ShmqInstall.cmake - install rules: headers, libraries, the CLI, shmq.pc and the CMake package.
#
# Every rule names its component, which is also its Debian package (cmake/ShmqPackage.cmake):
#   lib    libshmq.so.MAJOR (package libshmqMAJOR)
#   dev    headers, libshmq.so, libshmq.a, shmq.pc, the CMake package, shmq(3) (libshmq-dev)
#   tools  shmq, shmq-watchdog, shmq-bridge, their man pages, bash completion, systemd units
#          (shmq-tools)
#
# After `cmake --install BUILD --prefix P`, a consumer builds against shmq with either
#   cc app.c $(pkg-config --cflags --libs shmq)          (PKG_CONFIG_PATH=P/lib/pkgconfig)
#   find_package(shmq) + target_link_libraries(app shmq::shmq)   (CMAKE_PREFIX_PATH=P)
# tests/run checks both (cmake/check-install.sh). The installed libraries are built from the
# crash-point-free objects (see CMakeLists.txt).
include(CMakePackageConfigHelpers)

set(SHMQ_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/shmq)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/shmq
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
  FILES_MATCHING PATTERN "*.h")
install(FILES ${SHMQ_GENERATED_INCLUDE}/shmq/version.h # generated (CMakeLists.txt)
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/shmq COMPONENT dev)

install(TARGETS shmq shmq_static EXPORT shmqTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tools
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(SHMQ_INSTALLED_TOOLS) # shmq, shmq-watchdog (CMakeLists.txt)
  install(TARGETS ${SHMQ_INSTALLED_TOOLS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
    COMPONENT tools)
endif()

install(EXPORT shmqTargets NAMESPACE shmq:: DESTINATION ${SHMQ_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/shmqConfig.cmake.in
  ${PROJECT_BINARY_DIR}/shmqConfig.cmake INSTALL_DESTINATION ${SHMQ_CMAKE_DIR})
# 0.x: a minor release may break the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/shmqConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/shmqConfig.cmake ${PROJECT_BINARY_DIR}/shmqConfigVersion.cmake
  DESTINATION ${SHMQ_CMAKE_DIR} COMPONENT dev)

# shmq.pc is written at install time, so that its prefix is the one given to
# `cmake --install --prefix`, not the one known when the tree was configured.
install(CODE "
  set(SHMQ_PC_IN \"${PROJECT_SOURCE_DIR}/cmake/shmq.pc.in\")
  set(SHMQ_PC_OUT \"${PROJECT_BINARY_DIR}/shmq.pc\")
  set(SHMQ_PC_VERSION \"${PROJECT_VERSION}\")
  set(SHMQ_PC_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(SHMQ_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/ShmqWritePc.cmake\")
" COMPONENT dev)
