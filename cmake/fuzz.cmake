# fuzz.cmake: ctest "fuzz_<name>" (label fuzz) attacks an untrusted-file parser: "safetensors" (the safetensors
# reader) and "torchzip" (the torch checkpoint reader of drtune convert). Where clang ships libFuzzer (Debian:
# clang, libclang-rt-14-dev) each is a bounded coverage-guided session under ASan and UBSan; elsewhere a
# deterministic mutation driver runs the same target, so the test exercises the parser on every machine.
# A fuzz binary is built by the fixture test "fuzz_<name>_build" (or by `make fuzz_<name>`), not by `make all`,
# unless DRTUNE_FUZZ=ON, which also makes a missing libFuzzer a configuration error.

set(DRTUNE_FUZZ_SECONDS 45 CACHE STRING "Length of each ctest libFuzzer session in seconds")
set(DRTUNE_FUZZ_MUTATIONS 300000 CACHE STRING "Inputs the fallback fuzz driver generates")

set(DRTUNE_FUZZ_DIR ${CMAKE_SOURCE_DIR}/tests/fuzz)
set(DRTUNE_FUZZ_OUT ${CMAKE_BINARY_DIR}/fuzz)
# the core the parsers use, with a stand-in for the CUDA runtime (no device in a fuzz binary)
set(_fuzz_core ${CMAKE_SOURCE_DIR}/src/core/common.c ${CMAKE_SOURCE_DIR}/src/core/tensor.c
    ${CMAKE_SOURCE_DIR}/src/core/device.c ${DRTUNE_FUZZ_DIR}/no_gpu.c)
set(_fuzz_core_headers ${CMAKE_SOURCE_DIR}/src/core/common.h ${CMAKE_SOURCE_DIR}/src/core/tensor.h
    ${CMAKE_SOURCE_DIR}/src/core/device.h ${CMAKE_SOURCE_DIR}/src/core/device_cuda.h)

# does clang link a libFuzzer binary with the sanitizers?
find_program(DRTUNE_FUZZ_CLANG NAMES clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14
             DOC "clang used for the libFuzzer targets (set to OFF to use the fallback driver)")
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
message(STATUS "fuzz tests: ${DRTUNE_HAVE_LIBFUZZER} libFuzzer (otherwise the mutation driver)")

if(DRTUNE_FUZZ)
  set(_fuzz_all ALL)
else()
  set(_fuzz_all "")
endif()
set(_cjson_includes ${CJSON_INCLUDE_DIRS})
list(TRANSFORM _cjson_includes PREPEND -I)

# drtune_fuzz_target(NAME SOURCES HEADERS DEFINES): target fuzz_NAME from tests/fuzz/fuzz_NAME.c, the seeds in
# tests/fuzz/corpus_NAME and the dictionary tests/fuzz/NAME.dict; DEFINES are extra -D flags of the fuzz build.
function(drtune_fuzz_target name sources headers defines)
  set(_src ${DRTUNE_FUZZ_DIR}/fuzz_${name}.c ${sources} ${_fuzz_core})
  set(_hdr ${headers} ${_fuzz_core_headers})
  set(_defs ${defines})
  list(TRANSFORM _defs PREPEND -D)
  file(MAKE_DIRECTORY ${DRTUNE_FUZZ_OUT}/corpus_${name})
  if(DRTUNE_HAVE_LIBFUZZER)
    set(_bin ${DRTUNE_FUZZ_OUT}/fuzz_${name})
    add_custom_command(
      OUTPUT ${_bin}
      COMMAND ${DRTUNE_FUZZ_CLANG} -std=c11 -D_GNU_SOURCE ${_defs} -g -O1 -fno-omit-frame-pointer
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I${CMAKE_SOURCE_DIR}/src
              ${_cjson_includes} ${_src} ${CJSON_LINK_LIBRARIES} -lm -o ${_bin}
      DEPENDS ${_src} ${_hdr}
      COMMENT "Building the libFuzzer target fuzz_${name} with ${DRTUNE_FUZZ_CLANG}"
      VERBATIM)
    add_custom_target(fuzz_${name} ${_fuzz_all} DEPENDS ${_bin})
    # new inputs go to the build folder's corpus; the seeds in the source tree are only read
    set(_cmd ${_bin} -max_total_time=${DRTUNE_FUZZ_SECONDS} -max_len=4096 -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -dict=${DRTUNE_FUZZ_DIR}/${name}.dict -artifact_prefix=${DRTUNE_FUZZ_OUT}/
        ${DRTUNE_FUZZ_OUT}/corpus_${name} ${DRTUNE_FUZZ_DIR}/corpus_${name})
    math(EXPR _timeout "${DRTUNE_FUZZ_SECONDS} + 120")
  else()
    if(DRTUNE_FUZZ)
      add_executable(fuzz_${name} ${DRTUNE_FUZZ_DIR}/fuzz_driver.c ${_src})
    else()
      add_executable(fuzz_${name} EXCLUDE_FROM_ALL ${DRTUNE_FUZZ_DIR}/fuzz_driver.c ${_src})
    endif()
    target_include_directories(fuzz_${name} PRIVATE ${CMAKE_SOURCE_DIR}/src)
    target_compile_definitions(fuzz_${name} PRIVATE ${defines})
    target_link_libraries(fuzz_${name} PRIVATE PkgConfig::CJSON m)
    set_target_properties(fuzz_${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${DRTUNE_FUZZ_OUT})
    include(CheckCCompilerFlag)
    set(CMAKE_REQUIRED_LINK_OPTIONS -fsanitize=address,undefined)
    check_c_compiler_flag(-fsanitize=address,undefined DRTUNE_HAVE_ASAN_UBSAN)
    unset(CMAKE_REQUIRED_LINK_OPTIONS)
    if(DRTUNE_HAVE_ASAN_UBSAN)
      target_compile_options(fuzz_${name} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all
                             -fno-omit-frame-pointer)
      target_link_options(fuzz_${name} PRIVATE -fsanitize=address,undefined)
    endif()
    set(_cmd $<TARGET_FILE:fuzz_${name}> ${DRTUNE_FUZZ_DIR}/corpus_${name} ${DRTUNE_FUZZ_MUTATIONS})
    set(_timeout 600)
  endif()
  add_test(NAME fuzz_${name}_build COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target fuzz_${name})
  set_tests_properties(fuzz_${name}_build PROPERTIES LABELS fuzz FIXTURES_SETUP fuzz_${name}_binary)
  add_test(NAME fuzz_${name} COMMAND ${_cmd} WORKING_DIRECTORY ${DRTUNE_FUZZ_OUT})
  set_tests_properties(fuzz_${name} PROPERTIES LABELS fuzz FIXTURES_REQUIRED fuzz_${name}_binary
                       TIMEOUT ${_timeout})
endfunction()

drtune_fuzz_target(safetensors "${CMAKE_SOURCE_DIR}/src/io/safetensors.c"
                   "${CMAKE_SOURCE_DIR}/src/io/safetensors.h;${CMAKE_SOURCE_DIR}/src/io/utf8.h" "")
drtune_fuzz_target(torchzip "${CMAKE_SOURCE_DIR}/src/io/torchzip.c" "${CMAKE_SOURCE_DIR}/src/io/torchzip.h"
                   "TORCHZIP_NO_CRC")
