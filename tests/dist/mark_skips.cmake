# Run by ctest after doctest's discovery script for test_dist has added the tests: a test whose output
# says it was skipped (no mpirun on PATH, or a build without MPI) is reported as Skipped, not Passed.
foreach(test IN LISTS test_dist_TESTS)
  set_tests_properties("${test}" PROPERTIES SKIP_REGULAR_EXPRESSION "skipped: (no mpirun|built without MPI)")
endforeach()
