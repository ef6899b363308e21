# Third-party dependencies, all from Debian packages (scripts/setup installs them).
#
# Read by the build and, installed next to it, by lowrankConfig.cmake. There the config sets
# LOWRANK_PACKAGE_CONFIG and each dependency goes through find_dependency: a missing one makes the
# consumer's find_package(lowrank) report lowrank as not found (with the reason, and quietly under QUIET)
# instead of stopping the consumer's configure with a FATAL_ERROR. find_dependency returns from this file
# on failure, so the config checks lowrank_FOUND after including it.
if(LOWRANK_PACKAGE_CONFIG)
  include(CMakeFindDependencyMacro)
  macro(lowrank_find_dependency)
    find_dependency(${ARGV})
  endmacro()
else()
  macro(lowrank_find_dependency)
    find_package(${ARGV} REQUIRED)
  endmacro()
endif()

# A dependency found by hand (no CMake package) is missing: in the package config lowrank is then not
# found, with `reason`; in the build, configure stops. A macro, so that return() leaves this file.
macro(lowrank_dependency_missing reason)
  if(LOWRANK_PACKAGE_CONFIG)
    set(lowrank_NOT_FOUND_MESSAGE "${reason}")
    set(lowrank_FOUND FALSE)
    return()
  endif()
  message(FATAL_ERROR "${reason}")
endmacro()

lowrank_find_dependency(OpenMP COMPONENTS CXX)
lowrank_find_dependency(Boost 1.74)  # Hana is header-only
lowrank_find_dependency(fmt)
lowrank_find_dependency(nlohmann_json 3.10)

# BLIS (libblis-openmp-dev). The static archive is preferred: it exports bli_gks_lookup_id, which lets
# lowrank pick BLIS's kernel set per GEMM shape (docs/building.md); the shared library hides it.
find_path(BLIS_INCLUDE_DIR blis.h PATH_SUFFIXES blis-openmp x86_64-linux-gnu/blis-openmp blis
          PATHS /usr/include /usr/local/include)
find_library(BLIS_STATIC_LIBRARY NAMES libblis.a PATH_SUFFIXES blis-openmp x86_64-linux-gnu/blis-openmp
             PATHS /usr/lib /usr/lib/x86_64-linux-gnu /usr/local/lib)
find_library(BLIS_SHARED_LIBRARY NAMES blis PATH_SUFFIXES blis-openmp x86_64-linux-gnu/blis-openmp
             PATHS /usr/lib /usr/lib/x86_64-linux-gnu /usr/local/lib)
if(NOT BLIS_INCLUDE_DIR OR (NOT BLIS_STATIC_LIBRARY AND NOT BLIS_SHARED_LIBRARY))
  lowrank_dependency_missing("BLIS not found: install libblis-openmp-dev (scripts/setup does)")
endif()
if(NOT TARGET lowrank::blis)
  add_library(lowrank::blis INTERFACE IMPORTED)
  set_target_properties(lowrank::blis PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${BLIS_INCLUDE_DIR}")
  lowrank_find_dependency(Threads)
  if(BLIS_STATIC_LIBRARY)
    set_target_properties(lowrank::blis PROPERTIES
      INTERFACE_LINK_LIBRARIES "${BLIS_STATIC_LIBRARY};OpenMP::OpenMP_CXX;Threads::Threads;m"
      INTERFACE_COMPILE_DEFINITIONS LOWRANK_BLIS_STATIC)
  else()
    set_target_properties(lowrank::blis PROPERTIES INTERFACE_LINK_LIBRARIES "${BLIS_SHARED_LIBRARY}")
  endif()
endif()

# SLEEF (libsleef-dev): vectorised exp for the softmax and cross-entropy kernels, one binary for every
# x86-64 level (core/cpu/vector_math.cpp picks AVX-512, AVX2 or SSE2 at run time).
find_path(SLEEF_INCLUDE_DIR sleef.h PATH_SUFFIXES x86_64-linux-gnu PATHS /usr/include /usr/local/include)
find_library(SLEEF_LIBRARY NAMES sleef PATHS /usr/lib /usr/lib/x86_64-linux-gnu /usr/local/lib)
if(NOT SLEEF_INCLUDE_DIR OR NOT SLEEF_LIBRARY)
  lowrank_dependency_missing("SLEEF not found: install libsleef-dev (scripts/setup does)")
endif()
if(NOT TARGET lowrank::sleef)
  add_library(lowrank::sleef INTERFACE IMPORTED)
  # sleef.h lives in Debian's multiarch include directory, which the compiler searches already: no
  # include directory is added (that would change every translation unit's command line).
  set_target_properties(lowrank::sleef PROPERTIES INTERFACE_LINK_LIBRARIES "${SLEEF_LIBRARY}")
endif()
