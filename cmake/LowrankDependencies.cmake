# Third-party dependencies, all from Debian packages (scripts/setup installs them).
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(Boost 1.74 REQUIRED)  # Hana is header-only
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)

# BLIS (libblis-openmp-dev). The static archive is preferred: it exports bli_gks_lookup_id, which lets
# lowrank pick BLIS's kernel set per GEMM shape (docs/building.md); the shared library hides it.
find_path(BLIS_INCLUDE_DIR blis.h PATH_SUFFIXES blis-openmp x86_64-linux-gnu/blis-openmp blis
          PATHS /usr/include /usr/local/include)
find_library(BLIS_STATIC_LIBRARY NAMES libblis.a PATH_SUFFIXES blis-openmp x86_64-linux-gnu/blis-openmp
             PATHS /usr/lib /usr/lib/x86_64-linux-gnu /usr/local/lib)
find_library(BLIS_SHARED_LIBRARY NAMES blis PATH_SUFFIXES blis-openmp x86_64-linux-gnu/blis-openmp
             PATHS /usr/lib /usr/lib/x86_64-linux-gnu /usr/local/lib)
if(NOT BLIS_INCLUDE_DIR OR (NOT BLIS_STATIC_LIBRARY AND NOT BLIS_SHARED_LIBRARY))
  message(FATAL_ERROR "BLIS not found: install libblis-openmp-dev (scripts/setup does)")
endif()
if(NOT TARGET lowrank::blis)
  add_library(lowrank::blis INTERFACE IMPORTED)
  set_target_properties(lowrank::blis PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${BLIS_INCLUDE_DIR}")
  find_package(Threads REQUIRED)
  if(BLIS_STATIC_LIBRARY)
    set_target_properties(lowrank::blis PROPERTIES
      INTERFACE_LINK_LIBRARIES "${BLIS_STATIC_LIBRARY};OpenMP::OpenMP_CXX;Threads::Threads;m"
      INTERFACE_COMPILE_DEFINITIONS LOWRANK_BLIS_STATIC)
  else()
    set_target_properties(lowrank::blis PROPERTIES INTERFACE_LINK_LIBRARIES "${BLIS_SHARED_LIBRARY}")
  endif()
endif()
