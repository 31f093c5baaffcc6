__global__ void fkdiff_placeholder_kernel() {}
