// Kernels that exercise the opencl backend: opencl_backend_test.cpp runs them.

// NDRange: one work-item per element; items past n do nothing.
__kernel void vadd(__global const float* a, __global const float* b, __global float* c, int n) {
  int i = get_global_id(0);
  if (i < n) c[i] = a[i] + b[i];
}

// Adds `delta` to the first n elements of x, in place.
__kernel void add_in_place(__global int* x, int delta, int n) {
  int i = get_global_id(0);
  if (i < n) x[i] += delta;
}

// One work-item: counts one launch in counters[index].
__kernel void count(__global uint* counters, uint index) { counters[index] += 1; }

// Writes each scalar, widened, to out[0..7] and the float4's lanes to out[8..11].
__kernel void echo_scalars(__global long* out, char c, short s, int i, long l, float f, uchar uc,
                           ushort us, uint ui, float4 v) {
  out[0] = c;
  out[1] = s;
  out[2] = i;
  out[3] = l;
  out[4] = as_int(f);
  out[5] = uc;
  out[6] = us;
  out[7] = ui;
  out[8] = as_int(v.x);
  out[9] = as_int(v.y);
  out[10] = as_int(v.z);
  out[11] = as_int(v.w);
}

// A task, the way FPGA kernels run: one work-item loops over the data.
__kernel void fill_task(__global int* out, int n, int first) {
  for (int i = 0; i < n; ++i) out[i] = first + i;
}

// Two dimensions: out[y][x] = 1000 * y + x.
__kernel void coords(__global int* out, int width, int height) {
  int x = get_global_id(0);
  int y = get_global_id(1);
  if (x < width && y < height) out[y * width + x] = 1000 * y + x;
}

// Reports the launch's shape.
__kernel void shape(__global uint* out) {
  if (get_global_id(0) == 0 && get_global_id(1) == 0 && get_global_id(2) == 0) {
    out[0] = get_work_dim();
    out[1] = get_global_size(0);
    out[2] = get_local_size(0);
    out[3] = get_global_size(1);
    out[4] = get_local_size(1);
  }
}

// Keeps a compute unit busy for a while.
__kernel void spin(__global volatile int* sink, int iterations) {
  int value = 0;
  for (int i = 0; i < iterations; ++i) value = value * 1664525 + 1013904223;
  sink[0] = value;
}

// A __local argument, which a manifest cannot describe.
__kernel void with_local(__global float* x, __local float* scratch) {
  scratch[get_local_id(0)] = x[get_global_id(0)];
  barrier(CLK_LOCAL_MEM_FENCE);
  x[get_global_id(0)] = scratch[get_local_id(0)] * 2.0f;
}

// Reads a __constant array.
__kernel void sum_constant(__constant int* values, int n, __global int* out) {
  int sum = 0;
  for (int i = 0; i < n; ++i) sum += values[i];
  out[0] = sum;
}

// Exists only when built with -DATOLL_TEST_VALUE=...: the manifest's buildOptions reach the
// compiler.
#ifdef ATOLL_TEST_VALUE
__kernel void option_value(__global int* out) { out[0] = ATOLL_TEST_VALUE; }
#endif
