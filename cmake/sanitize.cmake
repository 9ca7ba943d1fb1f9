# sanitize.cmake: ctest "sanitize_suite" (label sanitize) builds drtune again with AddressSanitizer (leaks
# included) and UndefinedBehaviorSanitizer in a folder of its own (BUILD/sanitize, DRTUNE_SANITIZE=ON, no CUDA) and
# runs the core, io, gradcheck and train tests and dist_collectives there; any report fails it. Open MPI's own
# leaks are the only ones suppressed (tests/sanitize/lsan.supp). tests/sanitize/run.sh does the work and can be
# run by hand: tests/sanitize/run.sh DIR.
if(NOT DRTUNE_SANITIZE)
  add_test(NAME sanitize_suite COMMAND ${CMAKE_SOURCE_DIR}/tests/sanitize/run.sh ${CMAKE_BINARY_DIR}/sanitize
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(sanitize_suite PROPERTIES LABELS sanitize TIMEOUT 2400 SKIP_RETURN_CODE 77)
endif()
