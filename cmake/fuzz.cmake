# fuzz.cmake: ctest "fuzz_safetensors" (label fuzz) attacks the safetensors parser. Where clang ships libFuzzer
# (Debian: clang, libclang-rt-14-dev) it is a bounded coverage-guided session under ASan and UBSan; elsewhere a
# deterministic mutation driver runs the same target, so the test exercises the parser on every machine.
# The fuzz binary is built by the fixture test "fuzz_safetensors_build" (or by `make fuzz_safetensors`), not by
# `make all`, unless DRTUNE_FUZZ=ON, which also makes a missing libFuzzer a configuration error.

set(DRTUNE_FUZZ_SECONDS 45 CACHE STRING "Length of the ctest libFuzzer session in seconds")
set(DRTUNE_FUZZ_MUTATIONS 300000 CACHE STRING "Inputs the fallback fuzz driver generates")

set(DRTUNE_FUZZ_DIR ${CMAKE_SOURCE_DIR}/tests/fuzz)
set(DRTUNE_FUZZ_SOURCES ${DRTUNE_FUZZ_DIR}/fuzz_safetensors.c ${CMAKE_SOURCE_DIR}/src/io/safetensors.c
    ${CMAKE_SOURCE_DIR}/src/core/common.c ${CMAKE_SOURCE_DIR}/src/core/tensor.c ${CMAKE_SOURCE_DIR}/src/core/device.c
    ${DRTUNE_FUZZ_DIR}/no_gpu.c)
set(DRTUNE_FUZZ_HEADERS ${CMAKE_SOURCE_DIR}/src/io/safetensors.h ${CMAKE_SOURCE_DIR}/src/io/utf8.h
    ${CMAKE_SOURCE_DIR}/src/core/common.h ${CMAKE_SOURCE_DIR}/src/core/tensor.h ${CMAKE_SOURCE_DIR}/src/core/device.h
    ${CMAKE_SOURCE_DIR}/src/core/device_cuda.h)
set(DRTUNE_FUZZ_OUT ${CMAKE_BINARY_DIR}/fuzz)
file(MAKE_DIRECTORY ${DRTUNE_FUZZ_OUT}/corpus_safetensors)

# does clang link a libFuzzer binary with the sanitizers?
find_program(DRTUNE_FUZZ_CLANG NAMES clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14
             DOC "clang used for the libFuzzer target (set to OFF to use the fallback driver)")
set(DRTUNE_HAVE_LIBFUZZER OFF)
if(DRTUNE_FUZZ_CLANG)
  set(_probe ${CMAKE_BINARY_DIR}/CMakeFiles/libfuzzer_probe)
  file(WRITE ${_probe}.c "#include <stddef.h>\n#include <stdint.h>\n"
       "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
  execute_process(COMMAND ${DRTUNE_FUZZ_CLANG} -fsanitize=fuzzer,address,undefined ${_probe}.c -o ${_probe}
                  RESULT_VARIABLE _probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(_probe_rc EQUAL 0)
    set(DRTUNE_HAVE_LIBFUZZER ON)
  endif()
endif()
if(DRTUNE_FUZZ AND NOT DRTUNE_HAVE_LIBFUZZER)
  message(FATAL_ERROR "DRTUNE_FUZZ=ON needs clang with libFuzzer (Debian 12: apt-get install clang libclang-rt-14-dev)")
endif()
message(STATUS "safetensors fuzz test: ${DRTUNE_HAVE_LIBFUZZER} libFuzzer (otherwise the mutation driver)")

if(DRTUNE_FUZZ)
  set(_fuzz_all ALL)
else()
  set(_fuzz_all "")
endif()

if(DRTUNE_HAVE_LIBFUZZER)
  set(_fuzz_bin ${DRTUNE_FUZZ_OUT}/fuzz_safetensors)
  set(_cjson_includes ${CJSON_INCLUDE_DIRS})
  list(TRANSFORM _cjson_includes PREPEND -I)
  add_custom_command(
    OUTPUT ${_fuzz_bin}
    COMMAND ${DRTUNE_FUZZ_CLANG} -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I${CMAKE_SOURCE_DIR}/src
            ${_cjson_includes} ${DRTUNE_FUZZ_SOURCES} ${CJSON_LINK_LIBRARIES} -lm -o ${_fuzz_bin}
    DEPENDS ${DRTUNE_FUZZ_SOURCES} ${DRTUNE_FUZZ_HEADERS}
    COMMENT "Building the libFuzzer target fuzz_safetensors with ${DRTUNE_FUZZ_CLANG}"
    VERBATIM)
  add_custom_target(fuzz_safetensors ${_fuzz_all} DEPENDS ${_fuzz_bin})
  # new inputs go to the build folder's corpus; the seeds in the source tree are only read
  set(_fuzz_cmd ${_fuzz_bin} -max_total_time=${DRTUNE_FUZZ_SECONDS} -max_len=4096 -timeout=10 -rss_limit_mb=2048
      -print_final_stats=1 -dict=${DRTUNE_FUZZ_DIR}/safetensors.dict -artifact_prefix=${DRTUNE_FUZZ_OUT}/
      ${DRTUNE_FUZZ_OUT}/corpus_safetensors ${DRTUNE_FUZZ_DIR}/corpus_safetensors)
  math(EXPR _fuzz_timeout "${DRTUNE_FUZZ_SECONDS} + 120")
else()
  if(DRTUNE_FUZZ)
    add_executable(fuzz_safetensors ${DRTUNE_FUZZ_DIR}/fuzz_driver.c ${DRTUNE_FUZZ_SOURCES})
  else()
    add_executable(fuzz_safetensors EXCLUDE_FROM_ALL ${DRTUNE_FUZZ_DIR}/fuzz_driver.c ${DRTUNE_FUZZ_SOURCES})
  endif()
  target_include_directories(fuzz_safetensors PRIVATE ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(fuzz_safetensors PRIVATE PkgConfig::CJSON m)
  set_target_properties(fuzz_safetensors PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${DRTUNE_FUZZ_OUT})
  include(CheckCCompilerFlag)
  set(CMAKE_REQUIRED_LINK_OPTIONS -fsanitize=address,undefined)
  check_c_compiler_flag(-fsanitize=address,undefined DRTUNE_HAVE_ASAN_UBSAN)
  unset(CMAKE_REQUIRED_LINK_OPTIONS)
  if(DRTUNE_HAVE_ASAN_UBSAN)
    target_compile_options(fuzz_safetensors PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all
                           -fno-omit-frame-pointer)
    target_link_options(fuzz_safetensors PRIVATE -fsanitize=address,undefined)
  endif()
  set(_fuzz_cmd $<TARGET_FILE:fuzz_safetensors> ${DRTUNE_FUZZ_DIR}/corpus_safetensors ${DRTUNE_FUZZ_MUTATIONS})
  set(_fuzz_timeout 600)
endif()

add_test(NAME fuzz_safetensors_build COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target fuzz_safetensors)
set_tests_properties(fuzz_safetensors_build PROPERTIES LABELS fuzz FIXTURES_SETUP fuzz_safetensors_binary)
add_test(NAME fuzz_safetensors COMMAND ${_fuzz_cmd} WORKING_DIRECTORY ${DRTUNE_FUZZ_OUT})
set_tests_properties(fuzz_safetensors PROPERTIES LABELS fuzz FIXTURES_REQUIRED fuzz_safetensors_binary
                     TIMEOUT ${_fuzz_timeout})
