# Installs the client as the CMake package `cab` (component cab-dev):
#   find_package(cab CONFIG REQUIRED)  +  target_link_libraries(app PRIVATE cab::client)
# cab_client is static, so its dependencies (cab_proto, cab_wire, cab_kernels) travel with it.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
set(CAB_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/cab)

install(TARGETS cab_client cab_wire cab_proto cab_kernels EXPORT cabTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT cab-dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT cab-dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS cab-client RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cab-dev)
install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/include/cab ${PROJECT_SOURCE_DIR}/kernels/include/cab
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT cab-dev FILES_MATCHING PATTERN "*.h")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/proto/wire DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT cab-dev FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/proto/gen/cab/v1/cab.pb.h ${PROJECT_BINARY_DIR}/proto/gen/cab/v1/cab.grpc.pb.h
  ${PROJECT_SOURCE_DIR}/proto/cab/v1/cab.proto
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cab/v1 COMPONENT cab-dev)
install(EXPORT cabTargets NAMESPACE cab:: DESTINATION ${CAB_CMAKE_DIR} COMPONENT cab-dev)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/cabConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/cabConfig.cmake INSTALL_DESTINATION ${CAB_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/cabConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cabConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/cabConfigVersion.cmake
  DESTINATION ${CAB_CMAKE_DIR} COMPONENT cab-dev)
