// The diagonal linear recurrence h_t = a_t * h_{t-1} + b_t for XLA:CPU, through XLA's FFI
// (see seqjax/recurrences/linear.py).
//
// A lax.scan of this recurrence spends its time in XLA's per-step overhead, and
// lax.associative_scan does ~log2(t) times the memory traffic of one pass; the
// recurrence itself is one multiply-add per element, bound by memory bandwidth.
// Here one call runs the whole time loop: the columns (batch x state, independent
// of each other) are split over threads, and each thread walks time over its
// contiguous slice, reading the previous row of h from its own output (in cache).
//
// The backward pass is the same recurrence run the other way, fused with the
// coefficient gradients: dh_t = g_t + a_{t+1} dh_{t+1}, da_t = dh_t h_{t-1},
// db_t = dh_t, dh0 = a_first dh_first, in JAX's convention for complex numbers
// (cotangents are not conjugated, as jax.vjp of a product).
//
// Layouts (row-major, time-major; N = the product of the other axes):
//   a, b, hs, g, da, db [t, N]; h0, dh0 [N]. One dtype for all: f32, f64, c64, c128
//   (complex numbers interleaved: N complex columns are 2N reals).
// With reverse, time runs from t-1 down to 0: h_t = a_t h_{t+1} + b_t.
//
// Gated forms (minGRU, minLSTM of Feng et al. 2024) take the gate pre-activations
// k [t, b, G*h] + bias [G*h] instead of (a, b): adding the bias and computing the coefficients in the loop saves
// writing and reading them ([t, b, h] each, forward and backward), which on a CPU
// costs more than the arithmetic. They handle lengths themselves (lengths [b]):
// past a sequence's end the state stops and outputs are zero.
//   minGRU  (G = 2, k = [k_z | k_h]):        z = sigmoid(k_z), a = 1 - z, b = z g(k_h)
//   minLSTM (G = 3, k = [k_f | k_i | k_h]):  a = f / (f + i), b = i / (f + i) g(k_h),
//           f = sigmoid(k_f), i = sigmoid(k_i), the ratio formed from exponentials
//           scaled by their largest, so it never overflows nor divides 0 by 0
//   g(x) = x + 1/2 for x >= 0, sigmoid(x) otherwise (positive and continuous).
//
// The selective scan (Mamba's S6, below) takes Delta, x, A, B and C and returns the
// readout y = h C: its [t, b, E, N] coefficients and states never reach memory.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <thread>
#include <vector>

#include "fast_math.h"
#include "threads.h"

#ifndef SEQJAX_NO_FFI
#include "ffi_buffers.h"
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;
#endif

namespace {

using seqjax::ForRanges;
using seqjax::NumThreads;

constexpr int64_t kAlign = 16;  // columns per thread, a multiple of this

// Runs fn(begin, end) over column ranges [begin, end) of [0, n), one per thread.
template <typename Fn>
void ForColumns(int64_t t, int64_t n, Fn fn) {
  ForRanges(n, NumThreads(t * n, n / kAlign), kAlign, [&](int, int64_t begin, int64_t end) { fn(begin, end); });
}

// out = a * h + b over columns [begin, end) (reals; complex as interleaved pairs).
template <typename R, bool kComplex>
inline void MulAdd(const R* a, const R* h, const R* b, R* out, int64_t begin, int64_t end) {
  if constexpr (kComplex) {
    for (int64_t j = begin; j < end; j += 2) {
      const R ar = a[j], ai = a[j + 1], hr = h[j], hi = h[j + 1];
      out[j] = ar * hr - ai * hi + b[j];
      out[j + 1] = ar * hi + ai * hr + b[j + 1];
    }
  } else {
    for (int64_t j = begin; j < end; ++j) out[j] = a[j] * h[j] + b[j];
  }
}

// Steps in the order the recurrence runs: step s is time index Index(s).
struct Order {
  int64_t t;
  bool reverse;
  int64_t Index(int64_t s) const { return reverse ? t - 1 - s : s; }
};

template <typename R, bool kComplex>
void RunForward(const R* a, const R* b, const R* h0, R* hs, int64_t t, int64_t n, bool reverse) {
  const Order order{t, reverse};
  ForColumns(t, n, [&](int64_t begin, int64_t end) {
    const R* prev = h0;
    for (int64_t s = 0; s < t; ++s) {
      const int64_t row = order.Index(s) * n;
      MulAdd<R, kComplex>(a + row, prev, b + row, hs + row, begin, end);
      prev = hs + row;
    }
  });
}

// dh (kept in db's rows) = g + a_next * dh_next, from the last step to the first.
template <typename R, bool kComplex>
void RunBackward(const R* a, const R* hs, const R* h0, const R* g, R* da, R* db, R* dh0, int64_t t,
                 int64_t n, bool reverse) {
  const Order order{t, reverse};
  ForColumns(t, n, [&](int64_t begin, int64_t end) {
    std::vector<R> zeros(end - begin, R(0));
    // carry = a_{s+1} * dh_{s+1}, the gradient reaching step s from the step after it.
    std::vector<R> carry(zeros);
    R* c = carry.data() - begin;  // indexed by column
    for (int64_t s = t - 1; s >= 0; --s) {
      const int64_t row = order.Index(s) * n;
      const R* h_prev = s == 0 ? h0 : hs + order.Index(s - 1) * n;
      R* dh = db + row;
      for (int64_t j = begin; j < end; ++j) dh[j] = g[row + j] + c[j];
      if constexpr (kComplex) {
        for (int64_t j = begin; j < end; j += 2) {
          const R dr = dh[j], di = dh[j + 1], hr = h_prev[j], hi = h_prev[j + 1];
          const R ar = a[row + j], ai = a[row + j + 1];
          da[row + j] = dr * hr - di * hi;
          da[row + j + 1] = dr * hi + di * hr;
          c[j] = ar * dr - ai * di;
          c[j + 1] = ar * di + ai * dr;
        }
      } else {
        for (int64_t j = begin; j < end; ++j) {
          da[row + j] = dh[j] * h_prev[j];
          c[j] = a[row + j] * dh[j];
        }
      }
    }
    std::copy(c + begin, c + end, dh0 + begin);
  });
}


// ---------------------------------------------------------------- gated forms
using seqjax::Exp;
using seqjax::Sigmoid;

enum GateForm : int64_t { kMinGru = 0, kMinLstm = 1 };

constexpr int kBlock = 16;  // units per block: loops of known length vectorise

// The loops below run over a block of n <= kBlock units; N = kBlock gives loops of
// known length (straight vector code), N = 0 the general (last) block.
#define SEQJAX_BLOCK for (int64_t j = 0; j < (N ? N : n); ++j)

template <typename R>
inline R G(R x) {
  const R s = Sigmoid(x);
  return x >= R(0) ? x + R(0.5) : s;
}

// The coefficients a of a block of units and the values they mix in: h = a h_prev + (1 - a) v,
// from the block's pre-activations pre [G, kBlock].
template <typename R, int64_t kForm, int N>
inline void Coefficients(int64_t n, const R* __restrict pre, R* __restrict a, R* __restrict v) {
  constexpr int64_t kValue = kForm == kMinLstm ? 2 : 1;  // the gate of k_h
  SEQJAX_BLOCK v[j] = G(pre[kValue * kBlock + j]);
  if constexpr (kForm == kMinGru) {
    SEQJAX_BLOCK a[j] = R(1) - Sigmoid(pre[j]);
  } else {
    // f / (f + i) = D / (N + D), N = (1 + e^-kf) e^-m, D = (1 + e^-ki) e^-m, m = max(0, -kf, -ki).
    SEQJAX_BLOCK {
      const R kf = pre[j], ki = pre[kBlock + j];
      const R m0 = -kf > -ki ? -kf : -ki;
      const R m = m0 > R(0) ? m0 : R(0);
      const R em = Exp(-m), num = em + Exp(-kf - m), den = em + Exp(-ki - m);
      a[j] = den / (num + den);
    }
  }
}

// pre [G, kBlock] = k + bias for a block; k and bias point at the block's first
// unit of gate 0, h is the gate stride.
template <typename R, int64_t kForm, int N>
inline void PreActivations(int64_t n, const R* __restrict k, const R* __restrict bias, int64_t h,
                           R* __restrict pre) {
  constexpr int kGates = kForm == kMinLstm ? 3 : 2;
  for (int gate = 0; gate < kGates; ++gate) SEQJAX_BLOCK pre[gate * kBlock + j] = k[gate * h + j] + bias[gate * h + j];
}

template <typename R, int64_t kForm, int N>
inline void ForwardBlock(int64_t n, const R* __restrict k, const R* __restrict bias, int64_t h,
                         R* __restrict state, R* __restrict out) {
  R pre[3 * kBlock], a[kBlock], v[kBlock];
  PreActivations<R, kForm, N>(n, k, bias, h, pre);
  Coefficients<R, kForm, N>(n, pre, a, v);
  SEQJAX_BLOCK state[j] = a[j] * state[j] + (R(1) - a[j]) * v[j];
  SEQJAX_BLOCK out[j] = state[j];
}

// d loss / d pre-activation of a block into dk (k's layout) and added to d_bias, given
// g (the gradient of the step's output) and carry (of its new state, from later
// steps); carry becomes the gradient of the previous state.
template <typename R, int64_t kForm, int N>
inline void BackwardBlock(int64_t n, const R* __restrict k, const R* __restrict bias, int64_t h,
                          const R* __restrict h_prev, const R* __restrict g, R* __restrict carry, R* __restrict dk,
                          R* __restrict d_bias) {
  constexpr int64_t kValue = kForm == kMinLstm ? 2 : 1;
  R pre[3 * kBlock], d_pre[3 * kBlock], a[kBlock], v[kBlock], dh[kBlock], da[kBlock];
  PreActivations<R, kForm, N>(n, k, bias, h, pre);
  Coefficients<R, kForm, N>(n, pre, a, v);
  SEQJAX_BLOCK dh[j] = g[j] + carry[j];
  SEQJAX_BLOCK da[j] = dh[j] * (h_prev[j] - v[j]) * a[j] * (R(1) - a[j]);  // times d a / d logit(a)
  SEQJAX_BLOCK {
    const R x = pre[kValue * kBlock + j], s = Sigmoid(x);
    d_pre[kValue * kBlock + j] = dh[j] * (R(1) - a[j]) * (x >= R(0) ? R(1) : s * (R(1) - s));  // g'(x)
  }
  if constexpr (kForm == kMinGru) {
    SEQJAX_BLOCK d_pre[j] = -da[j];  // a = 1 - sigmoid(k_z)
  } else {
    // logit(a) = log f - log i: d/dk_f = sigmoid(-k_f), d/dk_i = -sigmoid(-k_i).
    SEQJAX_BLOCK d_pre[j] = da[j] * Sigmoid(-pre[j]);
    SEQJAX_BLOCK d_pre[kBlock + j] = -da[j] * Sigmoid(-pre[kBlock + j]);
  }
  SEQJAX_BLOCK carry[j] = dh[j] * a[j];
  for (int gate = 0; gate <= kValue; ++gate) {
    SEQJAX_BLOCK dk[gate * h + j] = d_pre[gate * kBlock + j];
    SEQJAX_BLOCK d_bias[gate * h + j] += d_pre[gate * kBlock + j];
  }
}

#undef SEQJAX_BLOCK

struct GatedShape {
  int64_t t, b, h, gates;
  bool reverse;
  int64_t Index(int64_t s) const { return reverse ? t - 1 - s : s; }
};

// Runs fn(u_begin, u_end) over ranges of hidden units, one per thread.
template <typename Fn>
void ForUnits(const GatedShape& s, Fn fn) {
  ForRanges(s.h, NumThreads(s.t * s.b * s.h, s.h / kAlign), kAlign,
            [&](int, int64_t begin, int64_t end) { fn(begin, end); });
}

template <typename R, int64_t kForm>
void GatedForward(const GatedShape& s, const R* k, const R* bias, const R* h0, const int32_t* lengths, R* hs,
                  R* h_n) {
  ForUnits(s, [&](int64_t u0, int64_t u1) {
    for (int64_t r = 0; r < s.b; ++r) std::copy(h0 + r * s.h + u0, h0 + r * s.h + u1, h_n + r * s.h + u0);
    for (int64_t step = 0; step < s.t; ++step) {
      const int64_t t = s.Index(step);
      for (int64_t r = 0; r < s.b; ++r) {
        R* out = hs + (t * s.b + r) * s.h;
        if (t >= lengths[r]) {
          std::fill(out + u0, out + u1, R(0));
          continue;
        }
        const R* kr = k + (t * s.b + r) * s.gates * s.h;
        R* state = h_n + r * s.h;
        for (int64_t u = u0; u < u1; u += kBlock) {
          if (u + kBlock <= u1) {
            ForwardBlock<R, kForm, kBlock>(kBlock, kr + u, bias + u, s.h, state + u, out + u);
          } else {
            ForwardBlock<R, kForm, 0>(u1 - u, kr + u, bias + u, s.h, state + u, out + u);
          }
        }
      }
    }
  });
}

template <typename R, int64_t kForm>
void GatedBackward(const GatedShape& s, const R* k, const R* bias, const R* hs, const R* h0, const int32_t* lengths,
                   const R* g, const R* d_hn, R* dk, R* d_bias, R* dh0) {
  ForUnits(s, [&](int64_t u0, int64_t u1) {
    // Each thread owns its units' columns of d_bias.
    for (int64_t gate = 0; gate < s.gates; ++gate) std::fill(d_bias + gate * s.h + u0, d_bias + gate * s.h + u1, R(0));
    // dh0 carries the gradient reaching each step from the one after it.
    for (int64_t r = 0; r < s.b; ++r) std::copy(d_hn + r * s.h + u0, d_hn + r * s.h + u1, dh0 + r * s.h + u0);
    for (int64_t step = s.t - 1; step >= 0; --step) {
      const int64_t t = s.Index(step);
      for (int64_t r = 0; r < s.b; ++r) {
        R* dkr = dk + (t * s.b + r) * s.gates * s.h;
        if (t >= lengths[r]) {
          for (int64_t gate = 0; gate < s.gates; ++gate) std::fill(dkr + gate * s.h + u0, dkr + gate * s.h + u1, R(0));
          continue;
        }
        const int64_t prev = step > 0 ? s.Index(step - 1) : -1;
        const R* h_prev = prev >= 0 && prev < lengths[r] ? hs + (prev * s.b + r) * s.h : h0 + r * s.h;
        const R* kr = k + (t * s.b + r) * s.gates * s.h;
        const R* gr = g + (t * s.b + r) * s.h;
        R* carry = dh0 + r * s.h;
        for (int64_t u = u0; u < u1; u += kBlock) {
          if (u + kBlock <= u1) {
            BackwardBlock<R, kForm, kBlock>(kBlock, kr + u, bias + u, s.h, h_prev + u, gr + u, carry + u, dkr + u,
                                            d_bias + u);
          } else {
            BackwardBlock<R, kForm, 0>(u1 - u, kr + u, bias + u, s.h, h_prev + u, gr + u, carry + u, dkr + u,
                                       d_bias + u);
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------- the selective scan (Mamba's S6)
// Per example r, channel e and state index n (Gu & Dao 2023, Algorithm 2):
//   h_t[e, n] = exp(delta_t[e] A[e, n]) h_{t-1}[e, n] + delta_t[e] x_t[e] B_t[n]
//   y_t[e] = sum_n h_t[e, n] C_t[n]
// As linear_recurrence would run it, the [t, b, E, N] coefficients and states are
// written and read several times over, forward and backward; here they never leave
// the cache: each thread takes whole examples, walks time over a block of kBlock
// channels with the block's [N, kBlock] state in registers and L1, and writes only y.
// The backward pass recomputes the block's states into a buffer of [t, N, kBlock]
// (as Mamba's CUDA kernel recomputes them in SRAM), then runs time backwards.
// Layouts: delta, x, y [t, b, E]; A [E, N]; B, C [t, b, N]; h0, h_n [b, E, N];
// lengths [b]: past an example's length the state stops and y is zero.

struct SelectiveShape {
  int64_t t, b, e, n;
};

// A transposed to [N, E], so that a block of channels is contiguous.
template <typename R>
std::vector<R> Transposed(const R* a, int64_t rows, int64_t cols) {
  std::vector<R> out(rows * cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[j * rows + i] = a[i * cols + j];
  return out;
}

#define SEQJAX_BLOCK for (int64_t j = 0; j < (W ? W : w); ++j)

// One example's block of w <= kBlock channels from state (its [N, kBlock] layout) over
// steps [0, len): y of the block, and every state into hist ([len, N, kBlock]) if given.
template <typename R, int W>
void SelectiveForwardBlock(const SelectiveShape& s, int64_t w, const R* __restrict delta, const R* __restrict x,
                           const R* __restrict at, const R* __restrict bm, const R* __restrict cm, int64_t len,
                           R* __restrict state, R* __restrict y, R* __restrict hist) {
  const int64_t row = s.b * s.e, row_n = s.b * s.n;  // one step of delta, x, y; of B, C
  for (int64_t t = 0; t < len; ++t) {
    R d[kBlock], u[kBlock], out[kBlock] = {};
    SEQJAX_BLOCK d[j] = delta[t * row + j];
    SEQJAX_BLOCK u[j] = d[j] * x[t * row + j];
    for (int64_t k = 0; k < s.n; ++k) {
      const R bk = bm[t * row_n + k], ck = cm[t * row_n + k];
      R* h = state + k * kBlock;
      SEQJAX_BLOCK h[j] = Exp(d[j] * at[k * s.e + j]) * h[j] + u[j] * bk;
      SEQJAX_BLOCK out[j] += h[j] * ck;
    }
    if (y) SEQJAX_BLOCK y[t * row + j] = out[j];
    if (hist) std::copy(state, state + s.n * kBlock, hist + t * s.n * kBlock);
  }
}

// The block's gradients, time backwards from len - 1: carry holds d loss / d h_t
// coming from later steps ([N, kBlock]; d h_n on entry, d h0 on exit); h0 is the
// block's first state and hist its states. d_delta, dx are the block's; dB, dC the
// example's, kept per lane ([len, N, kBlock], summed over blocks and reduced over
// lanes once per example: no horizontal sum in the loop); da the [N, E] gradient of A.
template <typename R, int W>
void SelectiveBackwardBlock(const SelectiveShape& s, int64_t w, const R* __restrict delta, const R* __restrict x,
                            const R* __restrict at, const R* __restrict bm, const R* __restrict cm,
                            const R* __restrict gy, int64_t len, const R* __restrict h0, const R* __restrict hist,
                            R* __restrict carry, R* __restrict d_delta, R* __restrict dx, R* __restrict db_lanes,
                            R* __restrict dc_lanes, R* __restrict da) {
  const int64_t row = s.b * s.e, row_n = s.b * s.n;
  for (int64_t t = len - 1; t >= 0; --t) {
    const R* h = hist + t * s.n * kBlock;
    const R* h_prev = t > 0 ? hist + (t - 1) * s.n * kBlock : h0;
    R d[kBlock], xv[kBlock], u[kBlock], g[kBlock], dd[kBlock] = {}, du[kBlock] = {};
    SEQJAX_BLOCK d[j] = delta[t * row + j];
    SEQJAX_BLOCK xv[j] = x[t * row + j];
    SEQJAX_BLOCK u[j] = d[j] * xv[j];
    SEQJAX_BLOCK g[j] = gy[t * row + j];
    for (int64_t k = 0; k < s.n; ++k) {
      const R bk = bm[t * row_n + k], ck = cm[t * row_n + k];
      const R* ak = at + k * s.e;
      R* c = carry + k * kBlock;
      R* dak = da + k * s.e;
      R* dbk = db_lanes + (t * s.n + k) * kBlock;
      R* dck = dc_lanes + (t * s.n + k) * kBlock;
      SEQJAX_BLOCK {
        const R dh = g[j] * ck + c[j];
        const R a = Exp(d[j] * ak[j]);
        const R d_log_a = dh * h_prev[k * kBlock + j] * a;  // d loss / d (delta A)
        dck[j] += g[j] * h[k * kBlock + j];
        dbk[j] += dh * u[j];
        du[j] += dh * bk;
        dd[j] += d_log_a * ak[j];
        dak[j] += d_log_a * d[j];
        c[j] = dh * a;
      }
    }
    SEQJAX_BLOCK d_delta[t * row + j] = dd[j] + du[j] * xv[j];
    SEQJAX_BLOCK dx[t * row + j] = du[j] * d[j];
  }
}

#undef SEQJAX_BLOCK

// A block's [N, kBlock] state from / to the [E, N] layout of h0, h_n, dh0.
template <typename R>
void LoadBlock(const R* src, int64_t n, int64_t w, R* block) {
  for (int64_t j = 0; j < w; ++j)
    for (int64_t k = 0; k < n; ++k) block[k * kBlock + j] = src[j * n + k];
}

template <typename R>
void StoreBlock(const R* block, int64_t n, int64_t w, R* dst) {
  for (int64_t j = 0; j < w; ++j)
    for (int64_t k = 0; k < n; ++k) dst[j * n + k] = block[k * kBlock + j];
}

// Threads over examples (each thread takes whole examples).
int SelectiveThreads(const SelectiveShape& s) { return NumThreads(s.t * s.b * s.e * s.n, s.b); }

template <typename R>
void SelectiveForward(const SelectiveShape& s, const R* delta, const R* x, const R* a, const R* bm, const R* cm,
                      const R* h0, const int32_t* lengths, R* y, R* h_n) {
  const std::vector<R> at = Transposed(a, s.e, s.n);
  ForRanges(s.b, SelectiveThreads(s), 1, [&](int, int64_t r0, int64_t r1) {
    std::vector<R> block(s.n * kBlock);
    R* state = block.data();
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t len = std::clamp<int64_t>(lengths[r], 0, s.t);
      for (int64_t t = len; t < s.t; ++t) std::fill_n(y + (t * s.b + r) * s.e, s.e, R(0));
      for (int64_t u = 0; u < s.e; u += kBlock) {
        const int64_t w = std::min<int64_t>(kBlock, s.e - u);
        const int64_t at_row = r * s.e + u;
        LoadBlock(h0 + at_row * s.n, s.n, w, state);
        auto run = [&](auto width) {
          SelectiveForwardBlock<R, decltype(width)::value>(s, w, delta + at_row, x + at_row, at.data() + u,
                                                           bm + r * s.n, cm + r * s.n, len, state, y + at_row,
                                                           nullptr);
        };
        w == kBlock ? run(std::integral_constant<int, kBlock>{}) : run(std::integral_constant<int, 0>{});
        StoreBlock(state, s.n, w, h_n + at_row * s.n);
      }
    }
  });
}

template <typename R>
void SelectiveBackward(const SelectiveShape& s, const R* delta, const R* x, const R* a, const R* bm, const R* cm,
                       const R* h0, const int32_t* lengths, const R* gy, const R* g_hn, R* d_delta, R* dx, R* da,
                       R* db, R* dc, R* dh0) {
  const std::vector<R> at = Transposed(a, s.e, s.n);
  const int threads = SelectiveThreads(s);
  std::vector<std::vector<R>> da_parts(threads, std::vector<R>(s.n * s.e, R(0)));  // [N, E] per thread
  ForRanges(s.b, threads, 1, [&](int i, int64_t r0, int64_t r1) {
    std::vector<R> first(s.n * kBlock), carry(s.n * kBlock);
    std::vector<R> hist(s.t * s.n * kBlock), db_lanes(s.t * s.n * kBlock), dc_lanes(s.t * s.n * kBlock);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t len = std::clamp<int64_t>(lengths[r], 0, s.t);
      std::fill_n(db_lanes.begin(), len * s.n * kBlock, R(0));
      std::fill_n(dc_lanes.begin(), len * s.n * kBlock, R(0));
      for (int64_t t = len; t < s.t; ++t) {
        std::fill_n(d_delta + (t * s.b + r) * s.e, s.e, R(0));
        std::fill_n(dx + (t * s.b + r) * s.e, s.e, R(0));
      }
      for (int64_t u = 0; u < s.e; u += kBlock) {
        const int64_t w = std::min<int64_t>(kBlock, s.e - u);
        const int64_t at_row = r * s.e + u;
        auto run = [&](auto width) {
          constexpr int W = decltype(width)::value;
          LoadBlock(h0 + at_row * s.n, s.n, w, first.data());
          std::copy(first.begin(), first.end(), carry.begin());  // the forward pass's running state
          SelectiveForwardBlock<R, W>(s, w, delta + at_row, x + at_row, at.data() + u, bm + r * s.n, cm + r * s.n,
                                      len, carry.data(), nullptr, hist.data());
          LoadBlock(g_hn + at_row * s.n, s.n, w, carry.data());
          SelectiveBackwardBlock<R, W>(s, w, delta + at_row, x + at_row, at.data() + u, bm + r * s.n, cm + r * s.n,
                                       gy + at_row, len, first.data(), hist.data(), carry.data(), d_delta + at_row, dx + at_row,
                                       db_lanes.data(), dc_lanes.data(), da_parts[i].data() + u);
        };
        w == kBlock ? run(std::integral_constant<int, kBlock>{}) : run(std::integral_constant<int, 0>{});
        StoreBlock(carry.data(), s.n, w, dh0 + at_row * s.n);
      }
      for (int64_t t = 0; t < s.t; ++t)
        for (int64_t k = 0; k < s.n; ++k) {
          const R* db_k = db_lanes.data() + (t * s.n + k) * kBlock;
          const R* dc_k = dc_lanes.data() + (t * s.n + k) * kBlock;
          db[(t * s.b + r) * s.n + k] = t < len ? std::accumulate(db_k, db_k + kBlock, R(0)) : R(0);
          dc[(t * s.b + r) * s.n + k] = t < len ? std::accumulate(dc_k, dc_k + kBlock, R(0)) : R(0);
        }
    }
  });
  for (int64_t e = 0; e < s.e; ++e)
    for (int64_t k = 0; k < s.n; ++k) {
      R sum = 0;
      for (const auto& part : da_parts) sum += part[k * s.e + e];
      da[e * s.n + k] = sum;
    }
}

#ifndef SEQJAX_NO_FFI
// [t, N] from a buffer of shape [t, ...]; for complex dtypes N counts reals.
struct Dims {
  int64_t t, n;
};

Dims RowsOf(const ffi::AnyBuffer& x, bool complex) {
  const auto dims = x.dimensions();
  int64_t n = complex ? 2 : 1;
  for (size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return {dims.size() == 0 ? 0 : dims[0], n};
}

template <typename Fn>
ffi::Error Dispatch(ffi::DataType dtype, Fn fn) {
  switch (dtype) {
    case ffi::F32:
      fn(float{}, std::false_type{});
      return ffi::Error::Success();
    case ffi::F64:
      fn(double{}, std::false_type{});
      return ffi::Error::Success();
    case ffi::C64:
      fn(float{}, std::true_type{});
      return ffi::Error::Success();
    case ffi::C128:
      fn(double{}, std::true_type{});
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("linear recurrence: dtype must be f32, f64, c64 or c128");
  }
}

bool IsComplex(ffi::DataType dtype) { return dtype == ffi::C64 || dtype == ffi::C128; }

ffi::Error Forward(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer h0, ffi::Result<ffi::AnyBuffer> hs,
                   bool reverse) {
  const auto dtype = a.element_type();
  if (b.element_type() != dtype || h0.element_type() != dtype || hs->element_type() != dtype)
    return ffi::Error::InvalidArgument("linear recurrence: a, b, h0 must share one dtype");
  const Dims d = RowsOf(a, IsComplex(dtype));
  if (b.element_count() != a.element_count() || hs->element_count() != a.element_count() ||
      h0.element_count() * (IsComplex(dtype) ? 2 : 1) != size_t(d.n))
    return ffi::Error::InvalidArgument("linear recurrence: a, b must be [t, N] and h0 [N]");
  return Dispatch(dtype, [&](auto real, auto complex) {
    using R = decltype(real);
    RunForward<R, decltype(complex)::value>(static_cast<const R*>(a.untyped_data()),
                                            static_cast<const R*>(b.untyped_data()),
                                            static_cast<const R*>(h0.untyped_data()),
                                            static_cast<R*>(hs->untyped_data()), d.t, d.n, reverse);
  });
}

ffi::Error Backward(ffi::AnyBuffer a, ffi::AnyBuffer hs, ffi::AnyBuffer h0, ffi::AnyBuffer g,
                    ffi::Result<ffi::AnyBuffer> da, ffi::Result<ffi::AnyBuffer> db,
                    ffi::Result<ffi::AnyBuffer> dh0, bool reverse) {
  const auto dtype = a.element_type();
  const Dims d = RowsOf(a, IsComplex(dtype));
  if (hs.element_count() != a.element_count() || g.element_count() != a.element_count() ||
      h0.element_count() * (IsComplex(dtype) ? 2 : 1) != size_t(d.n))
    return ffi::Error::InvalidArgument("linear recurrence: a, hs, g must be [t, N] and h0 [N]");
  return Dispatch(dtype, [&](auto real, auto complex) {
    using R = decltype(real);
    RunBackward<R, decltype(complex)::value>(
        static_cast<const R*>(a.untyped_data()), static_cast<const R*>(hs.untyped_data()),
        static_cast<const R*>(h0.untyped_data()), static_cast<const R*>(g.untyped_data()),
        static_cast<R*>(da->untyped_data()), static_cast<R*>(db->untyped_data()),
        static_cast<R*>(dh0->untyped_data()), d.t, d.n, reverse);
  });
}

template <typename Fn>
ffi::Error DispatchGated(ffi::DataType dtype, int64_t form, Fn fn) {
  if (form != kMinGru && form != kMinLstm) return ffi::Error::InvalidArgument("gated recurrence: unknown form");
  if (dtype == ffi::F32) {
    form == kMinGru ? fn(float{}, std::integral_constant<int64_t, kMinGru>{})
                    : fn(float{}, std::integral_constant<int64_t, kMinLstm>{});
  } else if (dtype == ffi::F64) {
    form == kMinGru ? fn(double{}, std::integral_constant<int64_t, kMinGru>{})
                    : fn(double{}, std::integral_constant<int64_t, kMinLstm>{});
  } else {
    return ffi::Error::InvalidArgument("gated recurrence: dtype must be f32 or f64");
  }
  return ffi::Error::Success();
}

GatedShape ShapeOf(const ffi::AnyBuffer& k, int64_t form, bool reverse) {
  const auto dims = k.dimensions();
  const int64_t gates = form == kMinGru ? 2 : 3;
  return {dims[0], dims[1], dims[2] / gates, gates, reverse};
}

ffi::Error GatedForwardFfi(ffi::AnyBuffer k, ffi::AnyBuffer bias, ffi::AnyBuffer h0, ffi::Buffer<ffi::S32> lengths,
                           ffi::Result<ffi::AnyBuffer> hs, ffi::Result<ffi::AnyBuffer> h_n, int64_t form,
                           bool reverse) {
  if (k.dimensions().size() != 3) return ffi::Error::InvalidArgument("gated recurrence: k must be [t, b, G*h]");
  const GatedShape s = ShapeOf(k, form, reverse);
  if (h0.element_count() != size_t(s.b * s.h) || lengths.element_count() != size_t(s.b) ||
      bias.element_count() != size_t(s.gates * s.h))
    return ffi::Error::InvalidArgument("gated recurrence: h0 must be [b, h], bias [G*h] and lengths [b]");
  return DispatchGated(k.element_type(), form, [&](auto real, auto kind) {
    using R = decltype(real);
    GatedForward<R, decltype(kind)::value>(s, static_cast<const R*>(k.untyped_data()),
                                            static_cast<const R*>(bias.untyped_data()),
                                            static_cast<const R*>(h0.untyped_data()), lengths.typed_data(),
                                            static_cast<R*>(hs->untyped_data()), static_cast<R*>(h_n->untyped_data()));
  });
}

ffi::Error GatedBackwardFfi(ffi::AnyBuffer k, ffi::AnyBuffer bias, ffi::AnyBuffer hs, ffi::AnyBuffer h0,
                            ffi::Buffer<ffi::S32> lengths, ffi::AnyBuffer g, ffi::AnyBuffer d_hn,
                            ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> d_bias,
                            ffi::Result<ffi::AnyBuffer> dh0, int64_t form, bool reverse) {
  if (k.dimensions().size() != 3) return ffi::Error::InvalidArgument("gated recurrence: k must be [t, b, G*h]");
  const GatedShape s = ShapeOf(k, form, reverse);
  return DispatchGated(k.element_type(), form, [&](auto real, auto kind) {
    using R = decltype(real);
    GatedBackward<R, decltype(kind)::value>(
        s, static_cast<const R*>(k.untyped_data()), static_cast<const R*>(bias.untyped_data()),
        static_cast<const R*>(hs.untyped_data()), static_cast<const R*>(h0.untyped_data()), lengths.typed_data(),
        static_cast<const R*>(g.untyped_data()), static_cast<const R*>(d_hn.untyped_data()),
        static_cast<R*>(dk->untyped_data()), static_cast<R*>(d_bias->untyped_data()),
        static_cast<R*>(dh0->untyped_data()));
  });
}

ffi::Error SelectiveCheck(const SelectiveShape& s, const ffi::AnyBuffer& x, const ffi::AnyBuffer& a,
                          const ffi::AnyBuffer& bm, const ffi::AnyBuffer& cm, const ffi::AnyBuffer& h0,
                          const ffi::Buffer<ffi::S32>& lengths) {
  const auto dtype = x.element_type();
  if (dtype != ffi::F32 && dtype != ffi::F64) return ffi::Error::InvalidArgument("selective scan: f32 or f64 only");
  for (const ffi::AnyBuffer* other : {&x, &a, &bm, &cm, &h0})
    if (other->element_type() != dtype) return ffi::Error::InvalidArgument("selective scan: one dtype for all");
  if (x.element_count() != size_t(s.t * s.b * s.e) || a.element_count() != size_t(s.e * s.n) ||
      cm.element_count() != size_t(s.t * s.b * s.n) || h0.element_count() != size_t(s.b * s.e * s.n) ||
      lengths.element_count() != size_t(s.b))
    return ffi::Error::InvalidArgument(
        "selective scan: delta, x must be [t, b, E], A [E, N], B, C [t, b, N], h0 [b, E, N], lengths [b]");
  return ffi::Error::Success();
}

SelectiveShape SelectiveShapeOf(const ffi::AnyBuffer& delta, const ffi::AnyBuffer& bm) {
  const auto d = delta.dimensions(), n = bm.dimensions();
  if (d.size() != 3 || n.size() != 3) return {0, 0, 0, 0};
  return {d[0], d[1], d[2], n[2]};
}

using seqjax::In;
using seqjax::Out;

ffi::Error SelectiveForwardFfi(ffi::AnyBuffer delta, ffi::AnyBuffer x, ffi::AnyBuffer a, ffi::AnyBuffer bm,
                               ffi::AnyBuffer cm, ffi::AnyBuffer h0, ffi::Buffer<ffi::S32> lengths,
                               ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> h_n) {
  const SelectiveShape s = SelectiveShapeOf(delta, bm);
  if (ffi::Error error = SelectiveCheck(s, x, a, bm, cm, h0, lengths); error.failure()) return error;
  auto run = [&](auto real) {
    using R = decltype(real);
    SelectiveForward<R>(s, In<R>(delta), In<R>(x), In<R>(a), In<R>(bm), In<R>(cm), In<R>(h0), lengths.typed_data(),
                        Out<R>(y), Out<R>(h_n));
  };
  x.element_type() == ffi::F32 ? run(float{}) : run(double{});
  return ffi::Error::Success();
}

ffi::Error SelectiveBackwardFfi(ffi::AnyBuffer delta, ffi::AnyBuffer x, ffi::AnyBuffer a, ffi::AnyBuffer bm,
                                ffi::AnyBuffer cm, ffi::AnyBuffer h0, ffi::Buffer<ffi::S32> lengths,
                                ffi::AnyBuffer gy, ffi::AnyBuffer g_hn, ffi::Result<ffi::AnyBuffer> d_delta,
                                ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> da,
                                ffi::Result<ffi::AnyBuffer> db, ffi::Result<ffi::AnyBuffer> dc,
                                ffi::Result<ffi::AnyBuffer> dh0) {
  const SelectiveShape s = SelectiveShapeOf(delta, bm);
  if (ffi::Error error = SelectiveCheck(s, x, a, bm, cm, h0, lengths); error.failure()) return error;
  auto run = [&](auto real) {
    using R = decltype(real);
    SelectiveBackward<R>(s, In<R>(delta), In<R>(x), In<R>(a), In<R>(bm), In<R>(cm), In<R>(h0),
                         lengths.typed_data(), In<R>(gy), In<R>(g_hn), Out<R>(d_delta), Out<R>(dx), Out<R>(da),
                         Out<R>(db), Out<R>(dc), Out<R>(dh0));
  };
  x.element_type() == ffi::F32 ? run(float{}) : run(double{});
  return ffi::Error::Success();
}
#endif

}  // namespace

#ifndef SEQJAX_NO_FFI
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLinearForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // b
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Ret<ffi::AnyBuffer>()  // hs
                                  .Attr<bool>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLinearBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // hs
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::AnyBuffer>()  // g
                                  .Ret<ffi::AnyBuffer>()  // da
                                  .Ret<ffi::AnyBuffer>()  // db
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Attr<bool>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxGatedForward, GatedForwardFfi,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths
                                  .Ret<ffi::AnyBuffer>()  // hs
                                  .Ret<ffi::AnyBuffer>()  // h_n
                                  .Attr<int64_t>("form")
                                  .Attr<bool>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxGatedBackward, GatedBackwardFfi,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // hs
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths
                                  .Arg<ffi::AnyBuffer>()  // g
                                  .Arg<ffi::AnyBuffer>()  // d_hn
                                  .Ret<ffi::AnyBuffer>()  // dk
                                  .Ret<ffi::AnyBuffer>()  // d_bias
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Attr<int64_t>("form")
                                  .Attr<bool>("reverse"));

// The selective scan's inputs, shared by its forward and backward handlers.
static auto SelectiveBinding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()          // delta
      .Arg<ffi::AnyBuffer>()          // x
      .Arg<ffi::AnyBuffer>()          // A
      .Arg<ffi::AnyBuffer>()          // B
      .Arg<ffi::AnyBuffer>()          // C
      .Arg<ffi::AnyBuffer>()          // h0
      .Arg<ffi::Buffer<ffi::S32>>();  // lengths
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxSelectiveForward, SelectiveForwardFfi,
                              SelectiveBinding()
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::AnyBuffer>());  // h_n

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxSelectiveBackward, SelectiveBackwardFfi,
                              SelectiveBinding()
                                  .Arg<ffi::AnyBuffer>()  // gy
                                  .Arg<ffi::AnyBuffer>()  // g_hn
                                  .Ret<ffi::AnyBuffer>()  // d_delta
                                  .Ret<ffi::AnyBuffer>()  // dx
                                  .Ret<ffi::AnyBuffer>()  // dA
                                  .Ret<ffi::AnyBuffer>()  // dB
                                  .Ret<ffi::AnyBuffer>()  // dC
                                  .Ret<ffi::AnyBuffer>());  // dh0
#endif
