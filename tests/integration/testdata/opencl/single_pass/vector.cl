// Single work-item kernels, as an FPGA kernel is written: one work-item loops over the data.
__kernel void vadd_1(__global const float* a, __global const float* b, __global float* c,
                     int size) {
  for (int i = 0; i < size; ++i) c[i] = a[i] + b[i];
}

__kernel void vadd_2(__global const float* a, __global const float* b, __global float* c,
                     int size) {
  for (int i = 0; i < size; ++i) c[i] = a[i] + b[i];
}
