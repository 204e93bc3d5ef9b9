# How lanner obtains ggml. Defines the imported target `ggml::ggml` either way.
#  - default: the pinned PyPI package libggml-python (see third_party/README.md). Its wheel
#    registers a scikit-build-core `cmake.prefix` entry point, so find_package(ggml CONFIG)
#    finds ggml-config.cmake inside site-packages/libggml/lib64/cmake/ggml.
#  - -DLANNER_GGML_SOURCE_DIR=<ggml checkout>: add that tree to this build (for people who
#    vendor ggml, e.g. with -DGGML_CUDA=ON or -DGGML_METAL=ON); its libraries are installed
#    next to the extension.

if(LANNER_GGML_SOURCE_DIR)
  set(BUILD_SHARED_LIBS ON CACHE BOOL "" FORCE)
  set(GGML_BUILD_TESTS OFF CACHE BOOL "" FORCE)
  set(GGML_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
  add_subdirectory(${LANNER_GGML_SOURCE_DIR} ${CMAKE_BINARY_DIR}/ggml EXCLUDE_FROM_ALL)
  if(NOT TARGET ggml::ggml)
    add_library(ggml::ggml ALIAS ggml)
  endif()
  set(LANNER_GGML_VENDORED ON)
else()
  if(NOT ggml_DIR)
    # Outside scikit-build-core (plain cmake), ask the Python that will import us where the package is.
    if(NOT Python_EXECUTABLE)
      find_package(Python COMPONENTS Interpreter QUIET)
    endif()
    if(Python_EXECUTABLE)
      execute_process(
        COMMAND ${Python_EXECUTABLE} -c "import libggml, os; print(os.path.join(os.path.dirname(libggml.__file__), 'lib64', 'cmake', 'ggml'))"
        OUTPUT_VARIABLE _lanner_ggml_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
      if(_lanner_ggml_dir)
        set(ggml_DIR ${_lanner_ggml_dir})
      endif()
    endif()
  endif()
  find_package(ggml CONFIG)
  if(NOT ggml_FOUND)
    message(FATAL_ERROR "lanner: ggml not found. Install the pinned package into the Python that builds "
                        "lanner (pip install libggml-python==0.20.2.post1) and pass -DPython_EXECUTABLE=<that python>, "
                        "or give -Dggml_DIR=<dir with ggml-config.cmake>, or -DLANNER_GGML_SOURCE_DIR=<ggml checkout>.")
  endif()
  set(LANNER_GGML_VENDORED OFF)
  message(STATUS "lanner: ggml ${ggml_VERSION} from ${ggml_DIR}")
endif()
