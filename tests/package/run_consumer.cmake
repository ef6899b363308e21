# Builds and runs tests/package/consumer against lowrank, as a user would: cmake -P with
#   MODE          find_package (install BUILD_DIR to a prefix first) or add_subdirectory (SOURCE_DIR)
#   SOURCE_DIR    lowrank source root;  BUILD_DIR  the lowrank build tree (find_package mode)
#   WORK_DIR      scratch folder, emptied first
#   GENERATOR, CXX_COMPILER, BUILD_TYPE, CUDA (ON/OFF), SANITIZE (ON/OFF), UNITY (ON/OFF): match the lowrank build
foreach(var MODE SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER BUILD_TYPE CUDA SANITIZE UNITY)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package test (${MODE}): ${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(consumer_flags -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=${BUILD_TYPE}
                   -DLOWRANK_CONSUMER_MODE=${MODE})
if(MODE STREQUAL "find_package")
  if(NOT DEFINED BUILD_DIR)
    message(FATAL_ERROR "run_consumer.cmake: find_package mode needs -DBUILD_DIR=...")
  endif()
  set(prefix ${WORK_DIR}/prefix)
  run_step("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
  foreach(installed include/lowrank/lowrank.hpp include/lowrank/core/tensor.hpp)
    if(NOT EXISTS ${prefix}/${installed})
      message(FATAL_ERROR "package test: ${installed} is missing from the installation")
    endif()
  endforeach()
  list(APPEND consumer_flags -DCMAKE_PREFIX_PATH=${prefix})
elseif(MODE STREQUAL "add_subdirectory")
  # This mode compiles the whole library again; without optimisation and without debug information that
  # takes a fraction of the time, and the wiring under test depends on neither; nor does it depend on
  # CUDA, whose nvcc objects would add minutes to this test on a 2-core CI machine. A unity build of
  # lowrank (as scripts/test configures) stays one here, which halves the compile again.
  list(APPEND consumer_flags -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O0 -DLOWRANK_SOURCE_DIR=${SOURCE_DIR}
                             -DLOWRANK_CUDA=OFF -DLOWRANK_SANITIZE=${SANITIZE} -DCMAKE_UNITY_BUILD=${UNITY})
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

run_step("configure" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/consumer -B ${WORK_DIR}/build ${consumer_flags})
# scripts/test's LOWRANK_JOBS limits this nested build too.
set(parallel "")
if(DEFINED ENV{LOWRANK_JOBS})
  set(parallel --parallel $ENV{LOWRANK_JOBS})
endif()
run_step("build" ${CMAKE_COMMAND} --build ${WORK_DIR}/build --target consumer ${parallel})
run_step("run" ${WORK_DIR}/build/consumer)
if(NOT step_output MATCHES "consumer: ok")
  message(FATAL_ERROR "package test (${MODE}): the consumer ran but did not report ok:\n${step_output}")
endif()
message(STATUS "${step_output}")
