// PYLENET_HD marks a function that nvcc compiles for the host and the device alike; g++ sees a
// plain inline function. The per-element formulas shared by the CPU kernels and the GPU
// kernels (ops/elementwise.h, ops/loss_rows.h, ops/noise.h) are written with it, once.
#pragma once

#if defined(__CUDACC__)
#define PYLENET_HD __host__ __device__
#else
#define PYLENET_HD
#endif
