// Single-pass optimizer steps for XLA's CPU backend, called through jax.ffi.
//
// A custom call updates a group of leaves of a parameter tree (gradtx calls
// one per 16 leaves; apply.py says why): each element of params, grads and
// state is read once and params and state are written once, in place (the
// outputs alias the donated inputs). XLA's own code for the same step makes
// one loop per quantity per leaf, so it moves ~40 bytes per f32 parameter for
// AdamW where 28 are needed.
//
// Exactness. Every element is computed with the operations, operand order and
// roundings of the pure-JAX formula as XLA compiles it for the CPU: IEEE
// division and square root (never approximations), no reassociation, a
// multiplication by the reciprocal where XLA turns a division by a scalar into
// one, and a fused multiply-add exactly where XLA's LLVM backend contracts one
// (it always allows contraction; see fma_or_madd). The scalar coefficients
// (1 - b1, bias corrections, -learning_rate, ...) are computed by JAX and
// passed in as a small f32 buffer, so the results are bitwise those of the
// plain path and a new learning rate never recompiles. This is why the file
// must not be built with -ffast-math (it would reassociate and replace division
// and sqrt by approximations) but needs -fno-math-errno (without it std::sqrt
// cannot be vectorized) and -ffp-contract=off (so the compiler adds no fused
// multiply-add of its own).
//
// Threads. Work is split into fixed-size chunks over the concatenation of the
// group's leaves and handed out by an atomic counter to the calling thread and
// to tasks scheduled on XLA's intra-op thread pool; the caller works too, so
// the call completes even if the pool never runs a task.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

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

ffi::Error CollectInputs(const ffi::RemainingArgs& args, size_t first, size_t count,
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

ffi::Error CollectOutputs(const ffi::RemainingRets& rets, size_t first, size_t count,
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

std::vector<int64_t> LeafSizes(const ffi::RemainingArgs& args, size_t first, size_t count,
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

// ---------------------------------------------------------------------------
// Adam, AdamW, NAdam, NAdamW.

// Positions of the coefficients in the scalar buffer (see gradtx/fused/apply.py).
// XLA rewrites a division by a broadcast scalar into a multiplication by its
// reciprocal, so the bias corrections arrive as 1 / (1 - b**t).
enum AdamScalar {
  kOneMinusB1, kB1, kOneMinusB2, kB2, kInvCorrection1, kInvCorrection2,
  kInvNextCorrection1, kEpsRoot, kEps, kWeightDecay, kNegLearningRate, kAdamScalars
};

// Per-leaf flags (the leaf_flags attribute).
constexpr int8_t kDecayFlag = 1;

template <bool kNesterov, bool kDecay>
void AdamLeaf(const float* s, float* __restrict p, const float* __restrict g,
              float* __restrict mu, float* __restrict nu, int64_t n) {
  const float one_minus_b1 = s[kOneMinusB1], b1 = s[kB1];
  const float one_minus_b2 = s[kOneMinusB2], b2 = s[kB2];
  const float inv_correction1 = s[kInvCorrection1], inv_correction2 = s[kInvCorrection2];
  const float inv_next_correction1 = s[kInvNextCorrection1];
  const float eps_root = s[kEpsRoot], eps = s[kEps];
  const float weight_decay = s[kWeightDecay], neg_lr = s[kNegLearningRate];
  for (int64_t i = 0; i < n; ++i) {
    const float grad = g[i];
    // (1 - b1) * g + b1 * mu, then (1 - b2) * g * g + b2 * nu.
    const float first = fma_or_madd(one_minus_b1, grad, b1 * mu[i]);
    const float second = fma_or_madd(one_minus_b2, grad * grad, b2 * nu[i]);
    mu[i] = first;
    nu[i] = second;
    float first_hat;
    if constexpr (kNesterov) {
      // b1 * (mu / (1 - b1**(t+1))) + (1 - b1) * (g / (1 - b1**t)).
      first_hat = fma_or_madd(b1, first * inv_next_correction1,
                              one_minus_b1 * (grad * inv_correction1));
    } else {
      first_hat = first * inv_correction1;
    }
    // sqrt(nu / (1 - b2**t) + eps_root) + eps.
    const float denominator = std::sqrt(fma_or_madd(second, inv_correction2, eps_root)) + eps;
    float update = first_hat / denominator;
    if constexpr (kDecay) update = fma_or_madd(weight_decay, p[i], update);
    p[i] = fma_or_madd(neg_lr, update, p[i]);
  }
}

template <bool kNesterov>
void AdamLeafDispatch(int8_t flags, const float* s, float* p, const float* g, float* mu,
                      float* nu, int64_t n) {
  (flags & kDecayFlag) ? AdamLeaf<kNesterov, true>(s, p, g, mu, nu, n)
                       : AdamLeaf<kNesterov, false>(s, p, g, mu, nu, n);
}

ffi::Error AdamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                    ffi::RemainingArgs args, ffi::RemainingRets rets, bool nesterov,
                    ffi::Span<const int8_t> leaf_flags) {
  if (scalars.element_count() != kAdamScalars) {
    return ffi::Error::InvalidArgument("gradtx adam kernel: wrong number of scalars");
  }
  const size_t leaves = leaf_flags.size();
  if (args.size() != 4 * leaves || rets.size() != 3 * leaves) {
    return ffi::Error::InvalidArgument("gradtx adam kernel: wrong number of buffers");
  }
  std::vector<int64_t> offsets;
  const std::vector<int64_t> sizes = LeafSizes(args, 0, leaves, offsets);
  Group p, g, mu, nu;
  for (auto [group, index] : {std::pair{&p, 0}, {&g, 1}, {&mu, 2}, {&nu, 3}}) {
    if (auto error = CollectInputs(args, index * leaves, leaves, &sizes, *group);
        error.failure()) {
      return error;
    }
  }
  for (auto [group, index] : {std::pair{&p, 0}, {&mu, 1}, {&nu, 2}}) {
    if (auto error = CollectOutputs(rets, index * leaves, leaves, *group); error.failure()) {
      return error;
    }
  }
  const float* s = scalars.typed_data();
  ParallelChunks(pool, offsets.back(), [&](int64_t begin, int64_t end) {
    ForLeavesIn(offsets, begin, end, [&](size_t leaf, int64_t lo, int64_t hi) {
      CopyIfDistinct(p, leaf, lo, hi);
      CopyIfDistinct(mu, leaf, lo, hi);
      CopyIfDistinct(nu, leaf, lo, hi);
      float* pp = p.out[leaf] + lo;
      const float* gg = g.in[leaf] + lo;
      float* mm = mu.out[leaf] + lo;
      float* vv = nu.out[leaf] + lo;
      const int64_t n = hi - lo;
      nesterov ? AdamLeafDispatch<true>(leaf_flags[leaf], s, pp, gg, mm, vv, n)
               : AdamLeafDispatch<false>(leaf_flags[leaf], s, pp, gg, mm, vv, n);
    });
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------
// SGD with optional L2 weight decay and (Nesterov) momentum.

enum SgdScalar { kSgdWeightDecay, kMomentum, kSgdNegLearningRate, kSgdScalars };

template <bool kDecay, bool kHasMomentum, bool kNesterov>
void SgdLeaf(const float* s, float* __restrict p, const float* __restrict g,
             float* __restrict trace, int64_t n) {
  const float weight_decay = s[kSgdWeightDecay], momentum = s[kMomentum];
  const float neg_lr = s[kSgdNegLearningRate];
  for (int64_t i = 0; i < n; ++i) {
    float grad = g[i];
    if constexpr (kDecay) grad = fma_or_madd(weight_decay, p[i], grad);
    float direction = grad;
    if constexpr (kHasMomentum) {
      const float new_trace = fma_or_madd(momentum, trace[i], grad);
      trace[i] = new_trace;
      direction = kNesterov ? fma_or_madd(momentum, new_trace, grad) : new_trace;
    }
    p[i] = fma_or_madd(neg_lr, direction, p[i]);
  }
}

template <bool kDecay, bool kHasMomentum>
void SgdLeafDispatch(bool nesterov, const float* s, float* p, const float* g, float* trace,
                     int64_t n) {
  nesterov ? SgdLeaf<kDecay, kHasMomentum, true>(s, p, g, trace, n)
           : SgdLeaf<kDecay, kHasMomentum, false>(s, p, g, trace, n);
}

ffi::Error SgdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                   ffi::RemainingArgs args, ffi::RemainingRets rets, bool has_momentum,
                   bool nesterov, ffi::Span<const int8_t> leaf_flags) {
  if (scalars.element_count() != kSgdScalars) {
    return ffi::Error::InvalidArgument("gradtx sgd kernel: wrong number of scalars");
  }
  const size_t leaves = leaf_flags.size();
  const size_t state_groups = has_momentum ? 1 : 0;
  if (args.size() != (2 + state_groups) * leaves || rets.size() != (1 + state_groups) * leaves) {
    return ffi::Error::InvalidArgument("gradtx sgd kernel: wrong number of buffers");
  }
  std::vector<int64_t> offsets;
  const std::vector<int64_t> sizes = LeafSizes(args, 0, leaves, offsets);
  Group p, g, trace;
  if (auto e = CollectInputs(args, 0, leaves, &sizes, p); e.failure()) return e;
  if (auto e = CollectInputs(args, leaves, leaves, &sizes, g); e.failure()) return e;
  if (auto e = CollectOutputs(rets, 0, leaves, p); e.failure()) return e;
  if (has_momentum) {
    if (auto e = CollectInputs(args, 2 * leaves, leaves, &sizes, trace); e.failure()) return e;
    if (auto e = CollectOutputs(rets, leaves, leaves, trace); e.failure()) return e;
  }
  const float* s = scalars.typed_data();
  ParallelChunks(pool, offsets.back(), [&](int64_t begin, int64_t end) {
    ForLeavesIn(offsets, begin, end, [&](size_t leaf, int64_t lo, int64_t hi) {
      CopyIfDistinct(p, leaf, lo, hi);
      float* pp = p.out[leaf] + lo;
      const float* gg = g.in[leaf] + lo;
      float* tt = nullptr;
      if (has_momentum) {
        CopyIfDistinct(trace, leaf, lo, hi);
        tt = trace.out[leaf] + lo;
      }
      const int64_t n = hi - lo;
      const bool decay = (leaf_flags[leaf] & kDecayFlag) != 0;
      if (has_momentum) {
        decay ? SgdLeafDispatch<true, true>(nesterov, s, pp, gg, tt, n)
              : SgdLeafDispatch<false, true>(nesterov, s, pp, gg, tt, n);
      } else {
        decay ? SgdLeafDispatch<true, false>(nesterov, s, pp, gg, tt, n)
              : SgdLeafDispatch<false, false>(nesterov, s, pp, gg, tt, n);
      }
    });
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GradtxAdam, AdamImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<bool>("nesterov")
                                  .Attr<ffi::Span<const int8_t>>("leaf_flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GradtxSgd, SgdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<bool>("has_momentum")
                                  .Attr<bool>("nesterov")
                                  .Attr<ffi::Span<const int8_t>>("leaf_flags"));
