include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS lowrank EXPORT lowrankTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
foreach(dir core ops autodiff dist lora nn optim io text)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${dir})
    install(DIRECTORY ${dir} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lowrank FILES_MATCHING PATTERN "*.hpp")
  endif()
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/lowrank.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lowrank)
install(EXPORT lowrankTargets NAMESPACE lowrank:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowrank)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/lowrankConfig.cmake.in
  ${PROJECT_BINARY_DIR}/lowrankConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowrank)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/lowrankConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/lowrankConfig.cmake ${PROJECT_BINARY_DIR}/lowrankConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/LowrankDependencies.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowrank)
