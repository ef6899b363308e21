# Run by ctest after doctest's discovery script for test_cuda has added the tests (it is appended to
# the same directory's TEST_INCLUDE_FILES later): a test whose output says it was skipped for want of
# a device is reported as Skipped rather than Passed.
foreach(test IN LISTS test_cuda_TESTS)
  set_tests_properties("${test}" PROPERTIES SKIP_REGULAR_EXPRESSION "skipped: no CUDA device")
endforeach()
