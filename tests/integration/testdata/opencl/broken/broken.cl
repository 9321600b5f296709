__kernel void broken(__global int* x) { x[0] = atoll_undeclared_identifier; }
