# CUDA for Atoll: where the toolkit's headers and nvcc are, and how CUDA binaries are compiled.
# Nothing here links a CUDA library: the cuda backend loads the driver at run time, and kernels
# are built into fatbins with nvcc.
#
#   ATOLL_CUDA_INCLUDE_DIR   folder of cuda.h; the cuda backend is built when it is found
#   ATOLL_NVCC               nvcc; CUDA accelerators and test binaries are built when it is found
#   ATOLL_CUDA_ARCHITECTURES SM versions to compile machine code for ("90" or "80;90"); PTX of the
#                            last one is embedded too, so newer GPUs JIT-compile it
include_guard(GLOBAL)

find_path(ATOLL_CUDA_INCLUDE_DIR cuda.h
  HINTS ${CUDAToolkit_ROOT} ENV CUDA_PATH ENV CUDA_HOME /usr/local/cuda
  PATH_SUFFIXES include
  DOC "Folder holding the CUDA toolkit's cuda.h (the cuda backend needs only its declarations)")
find_program(ATOLL_NVCC nvcc
  HINTS ${CUDAToolkit_ROOT} ENV CUDA_PATH ENV CUDA_HOME /usr/local/cuda
  PATH_SUFFIXES bin
  DOC "nvcc, which compiles the CUDA accelerators")
set(ATOLL_CUDA_ARCHITECTURES "90" CACHE STRING
    "SM versions the CUDA accelerators hold machine code for; PTX of the last is added")

# atoll_nvcc_binary(OUTPUT file SOURCE file.cu [KIND fatbin|cubin|ptx] [ARCHITECTURES 80 ...]
#                   [NO_PTX] [FLAGS ...])
# Compiles SOURCE into OUTPUT with nvcc at build time. A fatbin holds sm_XX code for each
# architecture (ATOLL_CUDA_ARCHITECTURES by default) and, unless NO_PTX, the PTX of the last one.
function(atoll_nvcc_binary)
  cmake_parse_arguments(A "NO_PTX" "OUTPUT;SOURCE;KIND" "ARCHITECTURES;FLAGS" ${ARGN})
  if(NOT A_KIND)
    set(A_KIND fatbin)
  endif()
  if(NOT A_ARCHITECTURES)
    set(A_ARCHITECTURES ${ATOLL_CUDA_ARCHITECTURES})
  endif()
  list(GET A_ARCHITECTURES -1 last)
  set(targets)
  if(A_KIND STREQUAL "fatbin")
    foreach(arch IN LISTS A_ARCHITECTURES)
      if(arch STREQUAL last AND NOT A_NO_PTX)
        list(APPEND targets -gencode "arch=compute_${arch},code=[sm_${arch},compute_${arch}]")
      else()
        list(APPEND targets -gencode "arch=compute_${arch},code=sm_${arch}")
      endif()
    endforeach()
  else()
    list(APPEND targets -arch=sm_${last})
  endif()
  get_filename_component(folder ${A_OUTPUT} DIRECTORY)
  add_custom_command(OUTPUT ${A_OUTPUT}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${folder}
    COMMAND ${ATOLL_NVCC} -${A_KIND} ${targets} -O3 -std=c++17 ${A_FLAGS} -o ${A_OUTPUT}
            ${A_SOURCE}
    DEPENDS ${A_SOURCE}
    COMMENT "nvcc -${A_KIND} ${A_SOURCE} (sm ${A_ARCHITECTURES})"
    VERBATIM)
endfunction()
