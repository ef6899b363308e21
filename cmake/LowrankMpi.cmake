# LOWRANK_MPI=AUTO builds the data-parallel communicator on MPI (dist/) when an MPI C++ library is found
# (Debian: openmpi-bin libopenmpi-dev); ON requires it; OFF (or none found) leaves the single-process
# communicator only, and `lowrank train` refuses to run under mpirun with more than one rank.
set(LOWRANK_WITH_MPI OFF)
if(NOT LOWRANK_MPI STREQUAL "OFF")
  if(LOWRANK_MPI STREQUAL "ON")
    find_package(MPI REQUIRED COMPONENTS CXX)
  else()
    find_package(MPI QUIET COMPONENTS CXX)
  endif()
  if(MPI_CXX_FOUND)
    set(LOWRANK_WITH_MPI ON)
  endif()
endif()
message(STATUS "lowrank: MPI ${LOWRANK_WITH_MPI}")
