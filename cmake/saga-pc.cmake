# Runs at install time (install(SCRIPT) in the top CMakeLists.txt): writes
# saga.pc for the prefix actually installed to, so that
# `cmake --install build --prefix DIR` gives a .pc naming DIR. The SAGA_PC_*
# variables are set by the install(CODE) just before this script.
set(PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${SAGA_PC_${d}}")
    set(PC_${d} "${SAGA_PC_${d}}")
  else()
    set(PC_${d} "\${prefix}/${SAGA_PC_${d}}")
  endif()
endforeach()
configure_file("${SAGA_PC_IN}" "${SAGA_PC_OUT}" @ONLY)
if(IS_ABSOLUTE "${SAGA_PC_LIBDIR}")
  set(dest "${SAGA_PC_LIBDIR}/pkgconfig")
else()
  set(dest "${CMAKE_INSTALL_PREFIX}/${SAGA_PC_LIBDIR}/pkgconfig")
endif()
# file(INSTALL) prepends $ENV{DESTDIR} and records the install manifest.
file(INSTALL DESTINATION "${dest}" TYPE FILE FILES "${SAGA_PC_OUT}")
