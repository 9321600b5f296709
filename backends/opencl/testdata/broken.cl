// Does not compile: the build log must reach the error.
__kernel void broken(__global int* x) { x[0] = atoll_undeclared_identifier; }
