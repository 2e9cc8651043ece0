// The floor under issue 4's int4 m=1 goal: how long merely reading N bytes from DRAM takes on
// this GPU (16-byte loads, grid-stride, one or four loads in flight a thread), for 31.3 MB (the
// int4 weight of 4,096 x 14,336, group 128), 64 MB and 256 MB. Each timed launch follows a read
// of an unrelated 200 MB buffer (read, not written: a memset leaves dirty L2 lines whose write-back
// slows the next kernel), so the weight is not in L2. Best and mean of 50, cudaEvent timing.
// Plain CUDA (the device machine has nvcc, not Rust): nvcc -O3 -arch=sm_90 read_floor.cu && ./a.out
// (ncu -k regex:^rd gives the kernel alone). Numbers: BENCHMARKS.md, session 25.
#include <cstdio>
#include <cuda_runtime.h>
__global__ void rd(const uint4* __restrict__ p, size_t n, unsigned* out) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint4 v = __ldg(p + i); acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) out[0] = acc;
}
__global__ void rd4(const uint4* __restrict__ p, size_t n, unsigned* out) {
  // 4 independent loads per thread per step
  unsigned acc = 0; size_t st = (size_t)gridDim.x * blockDim.x;
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  for (; i + 3 * st < n; i += 4 * st) {
    uint4 a = __ldg(p + i), b = __ldg(p + i + st), c = __ldg(p + i + 2 * st), d = __ldg(p + i + 3 * st);
    acc ^= a.x ^ b.y ^ c.z ^ d.w ^ a.w ^ b.x ^ c.y ^ d.z;
  }
  for (; i < n; i += st) { uint4 v = __ldg(p + i); acc ^= v.x ^ v.w; }
  if (acc == 0x12345678u) out[0] = acc;
}
int main() {
  size_t bytes[] = {31300000, 64u<<20, 256u<<20};
  uint4* p; unsigned* o; cudaMalloc(&p, 256u<<20); cudaMalloc(&o, 4); cudaMemset(p, 1, 256u<<20);
  // big buffer to flush L2 between reps
  char* fl; cudaMalloc(&fl, 200u<<20); cudaMemset(fl, 3, 200u<<20);
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  for (size_t bi = 0; bi < 3; bi++) for (int kind = 0; kind < 2; kind++) for (int blocks : {528, 2112}) {
    size_t n = bytes[bi] / 16; float best = 1e9, tot = 0; int reps = 50;
    for (int r = 0; r < reps; r++) {
      rd<<<1056, 512>>>((const uint4*)fl, (200u<<20) / 16, o);
      cudaEventRecord(a);
      if (kind == 0) rd<<<blocks, 512>>>(p, n, o); else rd4<<<blocks, 512>>>(p, n, o);
      cudaEventRecord(b); cudaEventSynchronize(b);
      float ms; cudaEventElapsedTime(&ms, a, b); best = ms < best ? ms : best; tot += ms;
    }
    printf("bytes %9zu kind %d blocks %4d: best %6.2f us (%5.0f GB/s) mean %6.2f us\n", bytes[bi], kind, blocks, best * 1e3, bytes[bi] / (best * 1e-3) / 1e9, tot / reps * 1e3);
  }
  return 0;
}
