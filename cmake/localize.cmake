# Run by `cmake --install` (CMakeLists.txt): makes the installed libsluice.a
# one object whose only global symbols are sl_* (and the C++ runtime's
# _Z*, DW.ref.* that llama.cpp's pieces need). libsluice's own functions
# without the prefix (template_fill, coord_new, stage_read, ...) are local
# then, so a program that defines one of those names links ("multiple
# definition" before). The build tree's archive keeps them: the unit tests
# call them.
#   cmake -DLIB=PATH -DLD=ld -DOBJCOPY=objcopy -DNM=nm -DAR=ar -P localize.cmake
# In a folder of its own, so that the archive's one member is "libsluice.o".
set(work "${LIB}.localize")
file(REMOVE_RECURSE "${work}")
file(MAKE_DIRECTORY "${work}")
set(obj "${work}/libsluice.o")
set(keep "${work}/keep.txt")
execute_process(COMMAND ${LD} -r --whole-archive "${LIB}" -o "${obj}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "localize: ${LD} -r ${LIB} failed (${rc})")
endif()
execute_process(COMMAND ${NM} -g --defined-only "${obj}" OUTPUT_VARIABLE listed RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "localize: ${NM} ${obj} failed (${rc})")
endif()
string(REGEX MATCHALL "[^\n]+" lines "${listed}")
set(names "")
foreach(line IN LISTS lines)
  string(REGEX REPLACE "^.* " "" name "${line}")
  if(name MATCHES "^(sl_|_Z|DW\\.ref\\.)")
    string(APPEND names "${name}\n")
  endif()
endforeach()
file(WRITE "${keep}" "${names}")
execute_process(COMMAND ${OBJCOPY} "--keep-global-symbols=${keep}" "${obj}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "localize: ${OBJCOPY} ${obj} failed (${rc})")
endif()
file(REMOVE "${LIB}")
execute_process(COMMAND ${AR} rcs "${LIB}" "${obj}" RESULT_VARIABLE rc)
file(REMOVE_RECURSE "${work}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "localize: ${AR} ${LIB} failed (${rc})")
endif()
