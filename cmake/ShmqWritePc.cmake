# ShmqWritePc.cmake - run at install time (see ShmqInstall.cmake): writes shmq.pc for the
# prefix being installed to and installs it into LIBDIR/pkgconfig. Inputs: SHMQ_PC_IN,
# SHMQ_PC_OUT, SHMQ_PC_VERSION, SHMQ_PC_LIBDIR, SHMQ_PC_INCLUDEDIR, CMAKE_INSTALL_PREFIX.
set(prefix "${CMAKE_INSTALL_PREFIX}")
foreach(d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${SHMQ_PC_${d}}")
    set(pc_${d} "${SHMQ_PC_${d}}")
  else()
    set(pc_${d} "\${prefix}/${SHMQ_PC_${d}}")
  endif()
endforeach()
if(IS_ABSOLUTE "${SHMQ_PC_LIBDIR}")
  set(pc_dest "${SHMQ_PC_LIBDIR}/pkgconfig")
else()
  set(pc_dest "${prefix}/${SHMQ_PC_LIBDIR}/pkgconfig")
endif()
configure_file("${SHMQ_PC_IN}" "${SHMQ_PC_OUT}" @ONLY)
file(INSTALL DESTINATION "${pc_dest}" TYPE FILE FILES "${SHMQ_PC_OUT}")
