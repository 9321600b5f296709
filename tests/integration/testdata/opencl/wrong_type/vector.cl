// The `vector` accelerator in OpenCL C: float vector addition and subtraction with the signature
// of InAccel's Coral vector bitstream. NDRange kernels, one work-item per element; the backend may
// round the global size up, so work-items past `size` do nothing.

__kernel void vadd(__global const float* a, __global const float* b, __global float* c,
                   int size) {
  int i = get_global_id(0);
  if (i < size) c[i] = a[i] + b[i];
}

__kernel void vsub(__global const float* a, __global const float* b, __global float* c,
                   int size) {
  int i = get_global_id(0);
  if (i < size) c[i] = a[i] - b[i];
}
