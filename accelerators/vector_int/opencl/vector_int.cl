// The `vector.int` accelerator in OpenCL C: int vector addition and subtraction. Results wrap
// around on overflow, as on the cpu backend; the arithmetic is unsigned because signed overflow is
// undefined in OpenCL C as in C.

__kernel void vadd_int(__global const int* a, __global const int* b, __global int* c, int size) {
  int i = get_global_id(0);
  if (i < size) c[i] = as_int(as_uint(a[i]) + as_uint(b[i]));
}

__kernel void vsub_int(__global const int* a, __global const int* b, __global int* c, int size) {
  int i = get_global_id(0);
  if (i < size) c[i] = as_int(as_uint(a[i]) - as_uint(b[i]));
}
