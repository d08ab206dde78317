// The runtime shared by gradtx's generated one-pass kernels (see codegen.py).
//
// A generated kernel updates a group of leaves of a parameter tree: each
// element of the arrays it reads is read once and each array it writes is
// written once, in place when XLA aliases an output to a donated input.
//
// Exactness. The generated code repeats XLA's operations for the CPU in the
// same order and rounding: IEEE division and square root (never
// approximations), no reassociation, and a fused multiply-add exactly where
// XLA's LLVM backend contracts one (it always allows contraction; see
// fma_or_madd). This is why kernels must not be built with -ffast-math, but
// with -fno-math-errno (without it std::sqrt cannot be vectorized) and
// -ffp-contract=off (so the compiler adds no fused multiply-add of its own).
//
// Threads. Work is split into fixed-size chunks over the concatenation of the
// group's leaves and handed out by an atomic counter to the calling thread and
// to tasks scheduled on XLA's intra-op thread pool; the caller works too, so
// the call completes even if the pool never runs a task.

#ifndef GRADTX_RUNTIME_H_
#define GRADTX_RUNTIME_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <limits>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace gradtx {

// Elements per work item: large enough to amortize the atomic counter, small
// enough to balance the threads.
constexpr int64_t kChunk = int64_t{1} << 15;

// Below this many elements a call runs on the calling thread alone: waking a
// pool thread costs tens of microseconds, and one thread already draws most
// of the memory bandwidth (measured: 4.8 ms on one thread, 4.3 ms on two for
// a 10M-parameter AdamW step; 1,000 leaves of 10K were faster on one).
constexpr int64_t kParallelMin = int64_t{1} << 20;

// a * b + c rounded once where the target has FMA (as XLA's backend emits it),
// else rounded twice (as XLA's backend emits it there).
inline float fma_or_madd(float a, float b, float c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// Runs body(begin, end) over [0, total) in chunks on the caller and the pool.
template <typename Body>
void ParallelChunks(ffi::ThreadPool& pool, int64_t total, const Body& body) {
  const int64_t chunks = (total + kChunk - 1) / kChunk;
  const int64_t helpers =
      total < kParallelMin ? 0 : std::min<int64_t>(pool.num_threads(), chunks) - 1;
  if (helpers <= 0) {
    body(0, total);
    return;
  }
  struct Progress {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto progress = std::make_shared<Progress>();
#if defined(__SSE__)
  // XLA runs its own code with the caller's denormal mode (flush to zero);
  // helpers must round the same way.
  const unsigned int csr = _mm_getcsr();
#endif
  // A helper that starts after all chunks are claimed touches only
  // `progress`, which it co-owns, so it may outlive this call safely.
  auto work = [progress, chunks, total, &body] {
    for (int64_t c = progress->next.fetch_add(1); c < chunks;
         c = progress->next.fetch_add(1)) {
      body(c * kChunk, std::min(total, (c + 1) * kChunk));
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t i = 0; i < helpers; ++i) {
    pool.Schedule([work
#if defined(__SSE__)
                   , csr
#endif
    ] {
#if defined(__SSE__)
      const unsigned int saved = _mm_getcsr();
      _mm_setcsr(csr);
      work();
      _mm_setcsr(saved);
#else
      work();
#endif
    });
  }
  work();
  while (progress->done.load(std::memory_order_acquire) < chunks) {
    std::this_thread::yield();
  }
}

// Calls leaf_body(leaf, lo, hi) for the part of each leaf inside [begin, end)
// of the concatenated index space described by `offsets`.
template <typename LeafBody>
void ForLeavesIn(const std::vector<int64_t>& offsets, int64_t begin, int64_t end,
                 const LeafBody& leaf_body) {
  size_t leaf = std::upper_bound(offsets.begin(), offsets.end(), begin) - offsets.begin() - 1;
  for (; leaf + 1 < offsets.size() && offsets[leaf] < end; ++leaf) {
    const int64_t lo = std::max(begin, offsets[leaf]) - offsets[leaf];
    const int64_t hi = std::min(end, offsets[leaf + 1]) - offsets[leaf];
    if (lo < hi) leaf_body(leaf, lo, hi);
  }
}

// The f32 data of `count` consecutive buffers starting at `first`.
struct Group {
  std::vector<const float*> in;
  std::vector<float*> out;  // empty for inputs that are not updated
};

inline ffi::Error CollectInputs(const ffi::RemainingArgs& args, size_t first, size_t count,
                         const std::vector<int64_t>* sizes, Group& group) {
  group.in.resize(count);
  for (size_t i = 0; i < count; ++i) {
    auto buffer = args.get<ffi::AnyBuffer>(first + i);
    if (!buffer.has_value()) return buffer.error();
    if (buffer->element_type() != ffi::DataType::F32) {
      return ffi::Error::InvalidArgument("gradtx fused kernel: leaves must be float32");
    }
    if (sizes != nullptr &&
        static_cast<int64_t>(buffer->element_count()) != (*sizes)[i]) {
      return ffi::Error::InvalidArgument("gradtx fused kernel: leaf sizes differ");
    }
    group.in[i] = static_cast<const float*>(buffer->untyped_data());
  }
  return ffi::Error::Success();
}

inline ffi::Error CollectOutputs(const ffi::RemainingRets& rets, size_t first, size_t count,
                          Group& group) {
  group.out.resize(count);
  for (size_t i = 0; i < count; ++i) {
    auto buffer = rets.get<ffi::AnyBuffer>(first + i);
    if (!buffer.has_value()) return buffer.error();
    group.out[i] = static_cast<float*>((*buffer)->untyped_data());
  }
  return ffi::Error::Success();
}

// The outputs alias the inputs when the caller donates them; otherwise the
// input range is copied first and the update then runs in place.
inline void CopyIfDistinct(const Group& group, size_t leaf, int64_t lo, int64_t hi) {
  if (group.out[leaf] != group.in[leaf]) {
    std::memcpy(group.out[leaf] + lo, group.in[leaf] + lo, (hi - lo) * sizeof(float));
  }
}

inline std::vector<int64_t> LeafSizes(const ffi::RemainingArgs& args, size_t first, size_t count,
                               std::vector<int64_t>& offsets) {
  std::vector<int64_t> sizes(count);
  offsets.assign(count + 1, 0);
  for (size_t i = 0; i < count; ++i) {
    auto buffer = args.get<ffi::AnyBuffer>(first + i);
    sizes[i] = buffer.has_value() ? static_cast<int64_t>(buffer->element_count()) : 0;
    offsets[i + 1] = offsets[i] + sizes[i];
  }
  return sizes;
}

// XLA's maximum and minimum of floats: NaN if either operand is NaN.
inline float xla_max(float a, float b) { return (a != a || a >= b) ? a : b; }
inline float xla_min(float a, float b) { return (a != a || a <= b) ? a : b; }

// XLA's sign of a float: -1, +1, or the operand itself for zeros and NaN.
inline float xla_sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); }

// XLA's rsqrt on x86 with AVX (xla/codegen/intrinsic/rsqrt.cc): the CPU's
// estimate, refined by `Steps` Newton steps (two on Intel, one on AMD without
// AVX-512), and the estimate itself below the smallest normal and at
// infinity. Without AVX, XLA computes 1 / sqrt(x). Which form this machine's
// XLA uses is found by comparing both (gradtx/fused/apply.py).
template <int Steps>
inline float xla_rsqrt(float x) {
#if defined(__AVX__)
  const float estimate = _mm_cvtss_f32(_mm_rsqrt_ss(_mm_set_ss(x)));
  float r = estimate;
  for (int step = 0; step < Steps; ++step) {
    const float half_r = r * -0.5f;
    const float h = fma_or_madd(x * r, r, -1.0f);
    r = fma_or_madd(half_r, h, r);
  }
  const bool estimate_only =
      x < std::numeric_limits<float>::min() || x == std::numeric_limits<float>::infinity();
  return estimate_only ? estimate : r;
#else
  return 1.0f / std::sqrt(x);
#endif
}

// xla_rsqrt of 8 elements, in one vector as XLA computes them.
template <int Steps>
inline void xla_rsqrt8(const float* x, float* out) {
#if defined(__AVX__)
  const __m256 v = _mm256_loadu_ps(x);
  const __m256 estimate = _mm256_rsqrt_ps(v);
  const __m256 minus_half = _mm256_set1_ps(-0.5f), minus_one = _mm256_set1_ps(-1.0f);
  __m256 r = estimate;
  for (int step = 0; step < Steps; ++step) {
    const __m256 r2 = _mm256_mul_ps(v, r);
    const __m256 half_r = _mm256_mul_ps(r, minus_half);
#if defined(__FMA__)
    const __m256 h = _mm256_fmadd_ps(r2, r, minus_one);
    r = _mm256_fmadd_ps(half_r, h, r);
#else
    const __m256 h = _mm256_add_ps(_mm256_mul_ps(r2, r), minus_one);
    r = _mm256_add_ps(_mm256_mul_ps(half_r, h), r);
#endif
  }
  const __m256 small =
      _mm256_cmp_ps(v, _mm256_set1_ps(std::numeric_limits<float>::min()), _CMP_LT_OQ);
  const __m256 infinite =
      _mm256_cmp_ps(v, _mm256_set1_ps(std::numeric_limits<float>::infinity()), _CMP_EQ_OQ);
  _mm256_storeu_ps(out, _mm256_blendv_ps(r, estimate, _mm256_or_ps(small, infinite)));
#else
  for (int k = 0; k < 8; ++k) out[k] = xla_rsqrt<Steps>(x[k]);
#endif
}

}  // namespace gradtx

#endif  // GRADTX_RUNTIME_H_
