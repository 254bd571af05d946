# Run at every build (CMakeLists.txt, target sluice_build_id): writes
# generated/build_id.h with the git commit the sources are at, so that
# `sluice --version`, _summary.json and Parquet's created_by tell one
# build from another (the version number alone, 0.1.0, named every
# build). The file is rewritten only when its text changes, so a build
# of the same commit recompiles nothing. "-dirty" marks sources with
# uncommitted changes; SLUICE_BUILD_ID (a packager's, from a tarball
# without .git) is taken as given; "unknown" otherwise.
#
# Set by the caller: SRC (the source folder), OUT (the header), and
# SLUICE_BUILD_ID (may be empty).
set(id "${SLUICE_BUILD_ID}")
if(id STREQUAL "")
  set(id "unknown")
  find_program(GIT git)
  if(GIT AND EXISTS "${SRC}/.git")
    execute_process(COMMAND "${GIT}" -C "${SRC}" rev-parse --short=12 HEAD
                    OUTPUT_VARIABLE head OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE rc ERROR_QUIET)
    if(rc EQUAL 0 AND head MATCHES "^[0-9a-f]+$")
      set(id "git ${head}")
      # (tracked files only: a build folder or a venv in the tree is no change)
      execute_process(COMMAND "${GIT}" -C "${SRC}" status --porcelain --untracked-files=no
                      OUTPUT_VARIABLE changes OUTPUT_STRIP_TRAILING_WHITESPACE
                      RESULT_VARIABLE rc ERROR_QUIET)
      if(rc EQUAL 0 AND NOT changes STREQUAL "")
        string(APPEND id "-dirty")
      endif()
    endif()
  endif()
endif()
string(REGEX REPLACE "[\"\\\\]" "" id "${id}")
set(text "#define SL_BUILD_ID \"${id}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
