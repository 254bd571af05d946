# Run by `cmake --install` (CMakeLists.txt, install(SCRIPT)): copies into
# the prefix's private library folder the llama.cpp shared libraries that
# sluice loads, so that the installed sluice (run path $ORIGIN/../lib/sluice)
# and a program linked through sluice.pc need nothing of the build machine's
# llama.cpp prefix (~/.cache/sluice/...). The list is not written down here:
# it is what the built sluice's ELF dependencies resolve to inside that
# prefix, so a CUDA build's libggml-cuda comes along and llama.cpp's tools
# (llama-server, libllama-server-impl) and headers do not.
# Each library goes in as its soname chain (libllama.so.0 -> libllama.so.0.5.0)
# plus the unversioned name (libllama.so) that -lllama looks for.
#
# Set by the install(CODE) before it: SLUICE_BUNDLE_EXE (the built sluice),
# SLUICE_BUNDLE_FROM (llama.cpp's lib folder), SLUICE_BUNDLE_TO (the
# destination, under CMAKE_INSTALL_PREFIX, without DESTDIR).

# Libraries of the host that sluice must not carry: the GPU driver and the
# CUDA toolkit's runtime (their versions go with the host's driver; the same
# set bench/gpu/pack.sh leaves out). A CUDA build made on a machine without
# a GPU driver cannot resolve libcuda.so.1 here, which is fine.
set(host_only "^lib(cuda|cudart|cublas|cublasLt|nvidia-[a-z]+|nvrtc[-a-z]*)\\.so")
file(GET_RUNTIME_DEPENDENCIES
  EXECUTABLES "${SLUICE_BUNDLE_EXE}"
  DIRECTORIES "${SLUICE_BUNDLE_FROM}"
  PRE_EXCLUDE_REGEXES "${host_only}"
  RESOLVED_DEPENDENCIES_VAR resolved
  UNRESOLVED_DEPENDENCIES_VAR unresolved)
if(unresolved)
  message(FATAL_ERROR "bundle: ${SLUICE_BUNDLE_EXE} needs ${unresolved}, not found here (nor in "
                      "${SLUICE_BUNDLE_FROM}): install the package that has it, or rebuild sluice")
endif()
get_filename_component(from "${SLUICE_BUNDLE_FROM}" REALPATH)
set(copied "")
foreach(lib IN LISTS resolved)
  get_filename_component(dir "${lib}" DIRECTORY)
  get_filename_component(dir "${dir}" REALPATH)
  get_filename_component(soname "${lib}" NAME)
  # By folder and by name: a system llama.cpp's folder (SLUICE_LLAMA_PREFIX=/usr)
  # holds the Debian libraries too, which the node's packages provide.
  if(NOT dir STREQUAL from OR NOT soname MATCHES "^lib(llama|mtmd|ggml)[-a-z0-9_]*\\.so")
    continue()
  endif()
  # file(INSTALL) adds DESTDIR and prints "-- Installing:" as the rest of the install does.
  file(INSTALL "${lib}" DESTINATION "${SLUICE_BUNDLE_TO}" FOLLOW_SYMLINK_CHAIN USE_SOURCE_PERMISSIONS)
  string(REGEX REPLACE "\\.so\\..*$" ".so" devname "${soname}")
  set(target "")
  if(IS_SYMLINK "${dir}/${devname}")
    file(READ_SYMLINK "${dir}/${devname}" target)
  endif()
  if(target STREQUAL soname)
    # llama.cpp's own link, copied as a link: listed in install_manifest.txt
    file(INSTALL "${dir}/${devname}" DESTINATION "${SLUICE_BUNDLE_TO}")
  elseif(NOT devname STREQUAL soname)
    file(CREATE_LINK "${soname}" "$ENV{DESTDIR}${SLUICE_BUNDLE_TO}/${devname}" SYMBOLIC)
  endif()
  list(APPEND copied "${soname}")
endforeach()
if(NOT copied MATCHES "libllama\\.so")
  message(FATAL_ERROR "bundle: none of ${SLUICE_BUNDLE_EXE}'s libraries came from "
                      "${SLUICE_BUNDLE_FROM} (libllama expected): is it the llama.cpp sluice was built with?")
endif()
