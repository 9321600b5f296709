# One warning list for every target of the project.
set(ATOLL_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Wunused -Woverloaded-virtual -Wnull-dereference -Wformat=2 -Wimplicit-fallthrough)
set(ATOLL_C_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wformat=2)
if(ATOLL_WERROR)
  list(APPEND ATOLL_WARNINGS -Werror)
  list(APPEND ATOLL_C_WARNINGS -Werror)
endif()

if(ATOLL_SANITIZE)
  add_compile_options(-fsanitize=${ATOLL_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${ATOLL_SANITIZE})
endif()

function(atoll_target_options target)
  get_target_property(type ${target} TYPE)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${ATOLL_WARNINGS}>
    $<$<COMPILE_LANGUAGE:C>:${ATOLL_C_WARNINGS}>)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/src)
endfunction()

# atoll_cc_library(NAME name SRCS ... DEPS ...): a static internal library of src/.
function(atoll_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(${A_NAME} STATIC ${A_SRCS})
  atoll_target_options(${A_NAME})
  target_include_directories(${A_NAME} PUBLIC ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS})
  set_target_properties(${A_NAME} PROPERTIES CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
endfunction()

# atoll_cc_test(NAME name SRCS ... DEPS ... [LABELS ...]): a GoogleTest binary registered with ctest.
function(atoll_cc_test)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT ATOLL_BUILD_TESTS)
    return()
  endif()
  add_executable(${A_NAME} ${A_SRCS})
  atoll_target_options(${A_NAME})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  gtest_discover_tests(${A_NAME} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS "${A_LABELS}")
endfunction()
include(GoogleTest)
