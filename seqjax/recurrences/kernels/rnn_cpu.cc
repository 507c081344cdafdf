// Fused recurrent loops for XLA:CPU, called through XLA's FFI (see seqjax/cpu_kernel.py).
//
// XLA:CPU runs a lax.scan step as a sequence of separate thunks: the recurrent
// matmul, a few elementwise fusions and the writes of each step's outputs into
// stacked buffers; at the sizes of recurrent networks that per-step overhead
// costs as much as the matmul itself. Here one call runs the whole time loop of
// one layer and direction: per step one register-blocked matmul of [h, x_t]
// against the recurrent and input weights (packed once per call), fused with the
// cell's elementwise update, on all cores with one barrier per step. Projecting
// the input inside the loop reads x_t ([b, d], cache-resident) instead of
// streaming a [t, b, g*h] projection through memory.
//
// Work is split over threads by chunks of 16 hidden units. A thread computes all
// gates of its units (forward) and the state gradient of its units (backward), so
// it only ever waits for the other threads' half of h (forward) or of the gate
// gradients (backward).
//
// Layouts (float32, row-major; t = time, b = batch, d = input, h = hidden,
// g = gates in PyTorch's order, C = ceil(h / 16) chunks):
//   xs [t, b, d], w_ih [d, g*h], w_hh [h, g*h], b_ih, b_hh [g*h], h0/c0 [b, h],
//   lengths [b] int32; hs [t, b, h] outputs, zero past an example's length. With
//   time_major false, xs, hs and their gradients are [b, t, *] instead (rows read
//   with a stride), which saves the caller two transposes per direction.
//   Residuals for the backward pass, chunk-major so that each thread reads and
//   writes them contiguously: acts [t, C, b, 4, 16] (LSTM: i, f, g, o after their
//   nonlinearities; GRU: r, z, n and h @ w_hn + b_hn) and the LSTM's cell states
//   cs [t, C, b, 16]. The RNN needs only its outputs.
// The backward loop computes the gate pre-activation gradients of a step into a
// small ring buffer, and from there d_xs (in the step) and the weight and bias
// gradients (every few steps, each thread for the gate columns it owns). Formed
// by XLA after the loop instead, as one large matmul each, they cost more: the
// [t, b, g*h] gate gradients then make four round trips through memory.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "fast_math.h"

#ifndef SEQJAX_NO_FFI  // a build without XLA, for C++ benchmarks of the loops
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;
#endif

namespace {

using seqjax::Exp;
using seqjax::Sigmoid;

enum Kind : int64_t { kRnnTanh = 0, kRnnRelu = 1, kRnnIdentity = 2, kLstm = 3, kGru = 4 };

constexpr int kChunk = 16;  // hidden units per work item; two 8-lane vectors
constexpr int kRows = 6;    // batch rows per register tile: 6 x 16 accumulators
constexpr int kSlots = 4;   // residual slots per unit (LSTM gates; GRU r, z, n, h_n)
constexpr int kPrefetchRows = 4;  // how far ahead the backward loop fetches its [t, b, *] rows

int NumGates(int64_t kind) { return kind == kLstm ? 4 : (kind == kGru ? 3 : 1); }

// Accumulators per unit in the forward matmul: the GRU keeps the x and h parts of
// its n gate apart (the reset gate multiplies only the h part).
int NumProjections(int64_t kind) { return kind == kGru ? 4 : NumGates(kind); }

// ---------------------------------------------------------------- math
// (Exp and Sigmoid: fast_math.h.)
// tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)); below |x| = 0.3 that cancels, so an odd
// Taylor polynomial takes over (its error there is below float32 rounding).
inline float Tanh(float x) {
  const float a = std::fabs(x);
  const float big = 1.0f - 2.0f / (Exp(2.0f * a) + 1.0f);
  const float x2 = x * x;
  const float small = a * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315 + x2 * (62.0f / 2835)))));
  const float y = a < 0.3f ? small : big;
  return x < 0.0f ? -y : y;
}

// ---------------------------------------------------------------- matmul
typedef float V8 __attribute__((vector_size(32)));
typedef float V8u __attribute__((vector_size(32), aligned(4)));

// out[r, 0:16] = a[r, 0:ka] @ panel[0:ka] + x[r, 0:kx] @ panel[ka:ka+kx] for R rows;
// panel is [ka + kx, 16] with rows ldp apart (kChunk: a packed panel). With add,
// out += instead.
template <int R>
inline void Tile(const float* __restrict a, int64_t lda, int64_t ka, const float* __restrict x, int64_t ldx,
                 int64_t kx, const float* __restrict panel, int64_t ldp, float* __restrict out, int64_t ldo,
                 bool add) {
  V8 acc[R][2];
  for (int r = 0; r < R; ++r) {
    acc[r][0] = add ? *reinterpret_cast<const V8u*>(out + r * ldo) : V8{};
    acc[r][1] = add ? *reinterpret_cast<const V8u*>(out + r * ldo + 8) : V8{};
  }
  for (int64_t k = 0; k < ka; ++k) {
    const V8 w0 = *reinterpret_cast<const V8u*>(panel + k * ldp);
    const V8 w1 = *reinterpret_cast<const V8u*>(panel + k * ldp + 8);
    for (int r = 0; r < R; ++r) {
      const float v = a[r * lda + k];
      acc[r][0] += v * w0;
      acc[r][1] += v * w1;
    }
  }
  panel += ka * ldp;
  for (int64_t k = 0; k < kx; ++k) {
    const V8 w0 = *reinterpret_cast<const V8u*>(panel + k * ldp);
    const V8 w1 = *reinterpret_cast<const V8u*>(panel + k * ldp + 8);
    for (int r = 0; r < R; ++r) {
      const float v = x[r * ldx + k];
      acc[r][0] += v * w0;
      acc[r][1] += v * w1;
    }
  }
  for (int r = 0; r < R; ++r) {
    *reinterpret_cast<V8u*>(out + r * ldo) = acc[r][0];
    *reinterpret_cast<V8u*>(out + r * ldo + 8) = acc[r][1];
  }
}

// Tile for rows <= kRows rows.
inline void TileRows(int rows, const float* a, int64_t lda, int64_t ka, const float* x, int64_t ldx, int64_t kx,
                     const float* panel, int64_t ldp, float* out, int64_t ldo, bool add = false) {
  switch (rows) {
    case 6: return Tile<6>(a, lda, ka, x, ldx, kx, panel, ldp, out, ldo, add);
    case 5: return Tile<5>(a, lda, ka, x, ldx, kx, panel, ldp, out, ldo, add);
    case 4: return Tile<4>(a, lda, ka, x, ldx, kx, panel, ldp, out, ldo, add);
    case 3: return Tile<3>(a, lda, ka, x, ldx, kx, panel, ldp, out, ldo, add);
    case 2: return Tile<2>(a, lda, ka, x, ldx, kx, panel, ldp, out, ldo, add);
    default: return Tile<1>(a, lda, ka, x, ldx, kx, panel, ldp, out, ldo, add);
  }
}

// out[r, 0:n] = tile[r, 0:n] for rows x n <= 16 units; tile is [rows, 16].
inline void Store(int64_t rows, int64_t n, const float* tile, float* out, int64_t ldo) {
  for (int64_t r = 0; r < rows; ++r) std::copy_n(tile + r * kChunk, n, out + r * ldo);
}

// The backward loop reads [t, b, *] rows 16 units at a time: a stride that the
// hardware prefetcher misses. It fetches a few rows ahead, in its own order.
inline void Prefetch(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i);
}

// ---------------------------------------------------------------- threads
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  // Every thread counts its own waits; the barrier never resets, so a fast thread
  // cannot overtake a slow one. Spins briefly, then yields: on a machine with more
  // threads than cores a pure spin would starve the thread it waits for.
  void Wait(int64_t& waits) {
    ++waits;
    arrived_.fetch_add(1, std::memory_order_acq_rel);
    for (int spin = 0; arrived_.load(std::memory_order_acquire) < n_ * waits; ++spin) {
      if (spin > 2000) std::this_thread::yield();
    }
  }

 private:
  const int n_;
  std::atomic<int64_t> arrived_{0};
};

int NumThreads(int64_t chunks) {
  int n = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("SEQJAX_CPU_THREADS")) n = std::atoi(env);
  return static_cast<int>(std::clamp<int64_t>(n, 1, chunks));
}

// Runs fn(thread, num_threads, barrier) on num_threads threads, the caller's included.
template <typename Fn>
void Parallel(int num_threads, Fn fn) {
  Barrier barrier(num_threads);
  std::vector<std::thread> threads;
  for (int i = 1; i < num_threads; ++i) threads.emplace_back([&, i] { fn(i, barrier); });
  fn(0, barrier);
  for (auto& thread : threads) thread.join();
}

// ---------------------------------------------------------------- packing
struct Shape {
  int64_t t, b, d, h;
  int64_t kind;
  bool time_major;  // layout of xs, hs, d_hs and d_xs: [t, b, *], else [b, t, *]
  // Row of (time, example) in those arrays, and the rows between consecutive examples.
  int64_t Row(int64_t time, int64_t example) const { return time_major ? time * b + example : example * t + time; }
  int64_t BatchStride() const { return time_major ? 1 : t; }
  int64_t g() const { return NumGates(kind); }
  int64_t gh() const { return g() * h; }
  int64_t chunks() const { return (h + kChunk - 1) / kChunk; }
  int64_t k() const { return h + d; }  // rows of a forward panel: h, then x
};

// Forward panels: for chunk c and gate j, a [h + d, 16] panel of w_hh[:, j*h + 16c : +16]
// over w_ih[:, j*h + 16c : +16], zero past h; panel (c, j) starts at (c*g + j)*(h + d)*16.
std::vector<float> PackForward(const float* w_ih, const float* w_hh, const Shape& s) {
  std::vector<float> packed(s.chunks() * s.g() * s.k() * kChunk, 0.0f);
  for (int64_t c = 0; c < s.chunks(); ++c)
    for (int64_t j = 0; j < s.g(); ++j) {
      float* panel = packed.data() + (c * s.g() + j) * s.k() * kChunk;
      for (int64_t u = 0; u < kChunk && c * kChunk + u < s.h; ++u) {
        const int64_t col = j * s.h + c * kChunk + u;
        for (int64_t k = 0; k < s.h; ++k) panel[k * kChunk + u] = w_hh[k * s.gh() + col];
        for (int64_t k = 0; k < s.d; ++k) panel[(s.h + k) * kChunk + u] = w_ih[k * s.gh() + col];
      }
    }
  return packed;
}

// Biases in the order of the forward accumulators, [C, projections, 16]: b_ih + b_hh
// per gate, except the GRU's n gate, whose h part (slot 2) takes b_hn and x part
// (slot 3) b_in.
std::vector<float> PackBias(const float* b_ih, const float* b_hh, const Shape& s) {
  const int64_t slots = NumProjections(s.kind);
  std::vector<float> packed(s.chunks() * slots * kChunk, 0.0f);
  for (int64_t c = 0; c < s.chunks(); ++c)
    for (int64_t u = 0; u < kChunk && c * kChunk + u < s.h; ++u)
      for (int64_t q = 0; q < slots; ++q) {
        const bool gru_n = s.kind == kGru && q >= 2;
        const int64_t col = (gru_n ? 2 : q) * s.h + c * kChunk + u;
        packed[(c * slots + q) * kChunk + u] = gru_n ? (q == 2 ? b_hh[col] : b_ih[col]) : b_ih[col] + b_hh[col];
      }
  return packed;
}

// Backward panels: for each block c of 16 rows of w ([rows, gh]: w_hh or w_ih), a
// [gh, 16] panel of w[16c : +16, :] transposed, zero past the last row.
std::vector<float> PackTransposed(const float* w, int64_t rows, int64_t gh) {
  const int64_t chunks = (rows + kChunk - 1) / kChunk;
  std::vector<float> packed(chunks * gh * kChunk, 0.0f);
  for (int64_t c = 0; c < chunks; ++c) {
    float* panel = packed.data() + c * gh * kChunk;
    for (int64_t u = 0; u < kChunk && c * kChunk + u < rows; ++u)
      for (int64_t k = 0; k < gh; ++k) panel[k * kChunk + u] = w[(c * kChunk + u) * gh + k];
  }
  return packed;
}

// Time index of loop step `step`.
inline int64_t TimeAt(int64_t step, int64_t t, bool reverse) { return reverse ? t - 1 - step : step; }

// The position `ahead` rows after (step, chunk, row) in a thread's walk over its
// chunks [c_begin, c_end); false past the last step.
inline bool Ahead(int64_t& step, int64_t& chunk, int64_t& row, int64_t ahead, const Shape& s, int64_t c_begin,
                  int64_t c_end) {
  row += ahead;
  while (row >= s.b) {
    row -= s.b;
    if (++chunk == c_end) {
      chunk = c_begin;
      if (++step == s.t) return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------- cell updates
// One row of one chunk: n <= 16 units. N = 16 gives loops of known length that
// compile to straight vector code; N = 0 is the general (last, partial) chunk.
// p: the row's accumulators [projections, 16]; bias: the chunk's, alike;
// act, c_save: the row's residuals ([4, 16], [16]) or null.
#define SEQJAX_UNITS for (int64_t u = 0; u < (N ? N : n); ++u)

template <int N>
inline void LstmForward(int64_t n, const float* __restrict p, const float* __restrict bias, float* __restrict c,
                        float* __restrict h_next, float* __restrict y, float* __restrict act,
                        float* __restrict c_save) {
  float i[kChunk], f[kChunk], g[kChunk], o[kChunk], hv[kChunk];
  SEQJAX_UNITS i[u] = Sigmoid(p[u] + bias[u]);
  SEQJAX_UNITS f[u] = Sigmoid(p[kChunk + u] + bias[kChunk + u]);
  SEQJAX_UNITS g[u] = Tanh(p[2 * kChunk + u] + bias[2 * kChunk + u]);
  SEQJAX_UNITS o[u] = Sigmoid(p[3 * kChunk + u] + bias[3 * kChunk + u]);
  SEQJAX_UNITS c[u] = f[u] * c[u] + i[u] * g[u];
  SEQJAX_UNITS hv[u] = o[u] * Tanh(c[u]);
  SEQJAX_UNITS h_next[u] = hv[u];
  SEQJAX_UNITS y[u] = hv[u];
  if (act) {
    SEQJAX_UNITS act[u] = i[u];
    SEQJAX_UNITS act[kChunk + u] = f[u];
    SEQJAX_UNITS act[2 * kChunk + u] = g[u];
    SEQJAX_UNITS act[3 * kChunk + u] = o[u];
    SEQJAX_UNITS c_save[u] = c[u];
  }
}

template <int N>
inline void GruForward(int64_t n, const float* __restrict p, const float* __restrict bias,
                       const float* __restrict h_prev, float* __restrict h_next, float* __restrict y,
                       float* __restrict act) {
  float r[kChunk], z[kChunk], hn[kChunk], nn[kChunk], hv[kChunk];
  SEQJAX_UNITS r[u] = Sigmoid(p[u] + bias[u]);
  SEQJAX_UNITS z[u] = Sigmoid(p[kChunk + u] + bias[kChunk + u]);
  SEQJAX_UNITS hn[u] = p[2 * kChunk + u] + bias[2 * kChunk + u];
  SEQJAX_UNITS nn[u] = Tanh(p[3 * kChunk + u] + bias[3 * kChunk + u] + r[u] * hn[u]);
  SEQJAX_UNITS hv[u] = (1.0f - z[u]) * nn[u] + z[u] * h_prev[u];
  SEQJAX_UNITS h_next[u] = hv[u];
  SEQJAX_UNITS y[u] = hv[u];
  if (act) {
    SEQJAX_UNITS act[u] = r[u];
    SEQJAX_UNITS act[kChunk + u] = z[u];
    SEQJAX_UNITS act[2 * kChunk + u] = nn[u];
    SEQJAX_UNITS act[3 * kChunk + u] = hn[u];
  }
}

template <int N>
inline void RnnForward(int64_t n, int64_t kind, const float* __restrict p, const float* __restrict bias,
                       float* __restrict h_next, float* __restrict y) {
  float hv[kChunk];
  SEQJAX_UNITS hv[u] = p[u] + bias[u];
  if (kind == kRnnTanh) {
    SEQJAX_UNITS hv[u] = Tanh(hv[u]);
  } else if (kind == kRnnRelu) {
    SEQJAX_UNITS hv[u] = hv[u] < 0.0f ? 0.0f : hv[u];  // NaN passes through, as in jax.nn.relu
  }
  SEQJAX_UNITS h_next[u] = hv[u];
  SEQJAX_UNITS y[u] = hv[u];
}

// Backward of one row of one chunk. dh: the gradient of h after the step, from
// the later steps (the output's gradient dy is added here). Writes the gate
// pre-activation gradients into d_gx (and d_gh, GRU), gates h apart, and
// `direct`, the part of the previous h's gradient that bypasses w_hh.
template <int N>
inline void LstmBackward(int64_t n, int64_t h, const float* __restrict a, const float* __restrict c,
                         const float* __restrict c_prev, const float* __restrict dh, const float* __restrict dy,
                         float* __restrict dc, float* __restrict d_gx, float* __restrict direct) {
  const float *i = a, *f = a + kChunk, *g = a + 2 * kChunk, *o = a + 3 * kChunk;
  float d[kChunk], tc[kChunk], dcell[kChunk];
  SEQJAX_UNITS d[u] = dh[u] + dy[u];
  SEQJAX_UNITS tc[u] = Tanh(c[u]);
  SEQJAX_UNITS dcell[u] = dc[u] + d[u] * o[u] * (1.0f - tc[u] * tc[u]);
  SEQJAX_UNITS d_gx[u] = dcell[u] * g[u] * i[u] * (1.0f - i[u]);
  SEQJAX_UNITS d_gx[h + u] = dcell[u] * c_prev[u] * f[u] * (1.0f - f[u]);
  SEQJAX_UNITS d_gx[2 * h + u] = dcell[u] * i[u] * (1.0f - g[u] * g[u]);
  SEQJAX_UNITS d_gx[3 * h + u] = d[u] * tc[u] * o[u] * (1.0f - o[u]);
  SEQJAX_UNITS dc[u] = dcell[u] * f[u];
  SEQJAX_UNITS direct[u] = 0.0f;
}

template <int N>
inline void GruBackward(int64_t n, int64_t h, const float* __restrict a, const float* __restrict h_prev,
                        const float* __restrict dh, const float* __restrict dy, float* __restrict d_gx,
                        float* __restrict d_gh, float* __restrict direct) {
  const float *r = a, *z = a + kChunk, *nn = a + 2 * kChunk, *hn = a + 3 * kChunk;
  float d[kChunk], dn[kChunk], dr[kChunk], dz[kChunk];
  SEQJAX_UNITS d[u] = dh[u] + dy[u];
  SEQJAX_UNITS dn[u] = d[u] * (1.0f - z[u]) * (1.0f - nn[u] * nn[u]);
  SEQJAX_UNITS dr[u] = dn[u] * hn[u] * r[u] * (1.0f - r[u]);
  SEQJAX_UNITS dz[u] = d[u] * (h_prev[u] - nn[u]) * z[u] * (1.0f - z[u]);
  SEQJAX_UNITS d_gx[u] = dr[u];
  SEQJAX_UNITS d_gh[u] = dr[u];
  SEQJAX_UNITS d_gx[h + u] = dz[u];
  SEQJAX_UNITS d_gh[h + u] = dz[u];
  SEQJAX_UNITS d_gx[2 * h + u] = dn[u];
  SEQJAX_UNITS d_gh[2 * h + u] = dn[u] * r[u];
  SEQJAX_UNITS direct[u] = d[u] * z[u];
}

template <int N>
inline void RnnBackward(int64_t n, int64_t kind, const float* __restrict y, const float* __restrict dh,
                        const float* __restrict dy, float* __restrict d_gx, float* __restrict direct) {
  if (kind == kRnnTanh) {
    SEQJAX_UNITS d_gx[u] = (dh[u] + dy[u]) * (1.0f - y[u] * y[u]);
  } else if (kind == kRnnRelu) {
    SEQJAX_UNITS d_gx[u] = y[u] > 0.0f ? dh[u] + dy[u] : 0.0f;
  } else {
    SEQJAX_UNITS d_gx[u] = dh[u] + dy[u];
  }
  SEQJAX_UNITS direct[u] = 0.0f;
}
#undef SEQJAX_UNITS

// Calls F<16> for a full chunk, else F<0>.
#define SEQJAX_DISPATCH(F, n, ...) ((n) == kChunk ? F<kChunk>(n, __VA_ARGS__) : F<0>(n, __VA_ARGS__))

// ---------------------------------------------------------------- forward
struct ForwardArgs {
  const float *xs, *w_ih, *w_hh, *b_ih, *b_hh, *h0, *c0;
  const int32_t* lengths;
  float *hs, *h_n, *c_n, *acts, *cs;  // acts (LSTM, GRU) and cs (LSTM) only when saving
};

void RunForward(const Shape& s, bool reverse, bool save, const ForwardArgs& args) {
  const bool lstm = s.kind == kLstm, gru = s.kind == kGru;
  const int64_t slots = NumProjections(s.kind);
  const std::vector<float> packed = PackForward(args.w_ih, args.w_hh, s);
  const std::vector<float> bias = PackBias(args.b_ih, args.b_hh, s);
  // h is double-buffered: step n reads h[n % 2] and writes h[(n + 1) % 2]. The LSTM's
  // c is read and written only by the thread owning its units.
  std::vector<float> h(2 * s.b * s.h);
  std::copy_n(args.h0, s.b * s.h, h.data());
  std::vector<float> c(s.b * s.h);
  if (lstm) std::copy_n(args.c0, s.b * s.h, c.data());
  const int num_threads = NumThreads(s.chunks());

  Parallel(num_threads, [&](int thread, Barrier& barrier) {
    const int64_t c_begin = s.chunks() * thread / num_threads, c_end = s.chunks() * (thread + 1) / num_threads;
    std::vector<float> tile(kRows * slots * kChunk);  // [rows, slots, 16]
    int64_t waits = 0;
    for (int64_t step = 0; step < s.t; ++step) {
      const int64_t t = TimeAt(step, s.t, reverse);
      const float* x_t = args.xs + s.Row(t, 0) * s.d;
      const int64_t ldx = s.BatchStride() * s.d;
      const float* h_prev = h.data() + (step % 2) * s.b * s.h;
      float* h_next = h.data() + ((step + 1) % 2) * s.b * s.h;
      for (int64_t ch = c_begin; ch < c_end; ++ch) {
        const int64_t u0 = ch * kChunk, nu = std::min<int64_t>(kChunk, s.h - u0);
        const float* panels = packed.data() + ch * s.g() * s.k() * kChunk;
        for (int64_t row = 0; row < s.b; row += kRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kRows, s.b - row));
          const float *a = h_prev + row * s.h, *x = x_t + row * ldx;
          for (int64_t j = 0; j < s.g(); ++j) {
            const float* panel = panels + j * s.k() * kChunk;
            if (gru && j == 2) {  // n: the h part, then the x part, apart
              TileRows(rows, a, s.h, s.h, x, ldx, 0, panel, kChunk, tile.data() + 2 * kChunk, slots * kChunk);
              TileRows(rows, a, s.h, 0, x, ldx, s.d, panel + s.h * kChunk, kChunk, tile.data() + 3 * kChunk,
                       slots * kChunk);
            } else {
              TileRows(rows, a, s.h, s.h, x, ldx, s.d, panel, kChunk, tile.data() + j * kChunk, slots * kChunk);
            }
          }
          for (int r = 0; r < rows; ++r) {
            const int64_t bi = row + r;
            const float* hp = h_prev + bi * s.h + u0;
            float* hn = h_next + bi * s.h + u0;
            float* y = args.hs + s.Row(t, bi) * s.h + u0;
            if (t >= args.lengths[bi]) {  // padding: the carry stays, the output is zero
              std::copy_n(hp, nu, hn);
              std::fill_n(y, nu, 0.0f);
              continue;
            }
            const float* p = tile.data() + r * slots * kChunk;
            const float* b = bias.data() + ch * slots * kChunk;
            const int64_t res = (t * s.chunks() + ch) * s.b + bi;
            float* act = save && (lstm || gru) ? args.acts + res * kSlots * kChunk : nullptr;
            if (lstm) {
              SEQJAX_DISPATCH(LstmForward, nu, p, b, c.data() + bi * s.h + u0, hn, y, act,
                              save ? args.cs + res * kChunk : nullptr);
            } else if (gru) {
              SEQJAX_DISPATCH(GruForward, nu, p, b, hp, hn, y, act);
            } else {
              SEQJAX_DISPATCH(RnnForward, nu, s.kind, p, b, hn, y);
            }
          }
        }
      }
      barrier.Wait(waits);
    }
  });
  std::copy_n(h.data() + (s.t % 2) * s.b * s.h, s.b * s.h, args.h_n);
  if (lstm) std::copy_n(c.data(), s.b * s.h, args.c_n);
}

// ---------------------------------------------------------------- backward
struct BackwardArgs {
  const float *xs, *w_ih, *w_hh, *h0, *c0;
  const int32_t* lengths;
  const float *hs, *acts, *cs, *d_hs, *d_hn, *d_cn;
  float *d_xs, *d_w_ih, *d_w_hh, *d_b_ih, *d_b_hh, *d_h0, *d_c0;  // d_c0 only for the LSTM
};

// Rows of gate gradients per weight-gradient block. Small blocks reduce the gate
// gradients while they are still in L1/L2; the price is one pass over the thread's
// dW accumulators per block. Measured on a 2-core EPYC (LSTM, b 64, h 256,
// backward): 64-128 rows 170 ms, 256 rows 179, 512 rows 194.
constexpr int64_t kBlockRows = 128;

// Adds one block of `steps` loop steps from step0 to the weight and bias gradients
// of chunks [c_begin, c_end) in every gate: dW[:, cols] += [h_prev, x]^T @ grad[:, cols],
// with grad = gh (recurrent side) or gx (input side), [steps * b, g*h]. These are
// the columns that this thread wrote, so no other thread reads or writes them.
//   dw: the thread's accumulators, [chunk - c_begin, g, h + d, 16] (dW's rows 16
//     columns at a time: dW's own rows are g*h floats apart, a stride that maps them
//     all to the same cache set);
//   a: scratch for the block's [h_prev, x] rows transposed, feature f of row k at f * rows + k;
//   panel: scratch for [rows, 16] of grad, copied contiguous for the same reason;
//   sources: scratch for 2 * rows pointers.
void WeightBlock(const Shape& s, bool reverse, const BackwardArgs& args, int64_t step0, int64_t steps,
                 const float* gx, const float* gh, int64_t c_begin, int64_t c_end, float* dw, float* a,
                 float* panel, const float** sources) {
  const int64_t rows = steps * s.b;
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t t = TimeAt(s.t - 1 - (step0 + i), s.t, reverse), t_prev = reverse ? t + 1 : t - 1;
    for (int64_t bi = 0; bi < s.b; ++bi) {
      // The state the step's matmul read (as in the backward loop).
      const bool from_init = reverse ? t_prev >= args.lengths[bi] : t_prev < 0;
      sources[2 * (i * s.b + bi)] = from_init ? args.h0 + bi * s.h : args.hs + s.Row(t_prev, bi) * s.h;
      sources[2 * (i * s.b + bi) + 1] = args.xs + s.Row(t, bi) * s.d;
    }
  }
  // Transposed 16 features at a time: 16 rows of a written in order.
  for (const bool input : {false, true}) {
    const int64_t features = input ? s.d : s.h;
    float* out = a + (input ? s.h * rows : 0);
    for (int64_t f0 = 0; f0 < features; f0 += kChunk) {
      const int64_t nf = std::min<int64_t>(kChunk, features - f0);
      for (int64_t k = 0; k < rows; ++k) {
        const float* src = sources[2 * k + input] + f0;
        for (int64_t f = 0; f < nf; ++f) out[(f0 + f) * rows + k] = src[f];
      }
    }
  }
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    for (int64_t j = 0; j < s.g(); ++j) {
      const int64_t col = j * s.h + ch * kChunk;
      float* acc = dw + ((ch - c_begin) * s.g() + j) * s.k() * kChunk;
      for (const bool input : {false, true}) {
        if (!input || gh != gx) {  // the RNN and LSTM read one panel on both sides
          const float* grad = (input ? gx : gh) + col;
          for (int64_t k = 0; k < rows; ++k) std::copy_n(grad + k * s.gh(), kChunk, panel + k * kChunk);
        }
        for (int64_t f = input ? s.h : 0; f < (input ? s.k() : s.h); f += kRows) {
          const int n = static_cast<int>(std::min<int64_t>(kRows, (input ? s.k() : s.h) - f));
          TileRows(n, a + f * rows, rows, rows, nullptr, 0, 0, panel, kChunk, acc + f * kChunk, kChunk, true);
        }
        if (!input && gh == gx) continue;  // one bias gradient, copied to b_hh at the end
        float sum[kChunk] = {};
        for (int64_t k = 0; k < rows; ++k)
          for (int64_t u = 0; u < kChunk; ++u) sum[u] += panel[k * kChunk + u];
        float* db = (input ? args.d_b_ih : args.d_b_hh) + col;
        for (int64_t u = 0; u < kChunk && ch * kChunk + u < s.h; ++u) db[u] += sum[u];
      }
    }
  }
}

void RunBackward(const Shape& s, bool reverse, const BackwardArgs& args) {
  const bool lstm = s.kind == kLstm, gru = s.kind == kGru;
  const std::vector<float> packed_h = PackTransposed(args.w_hh, s.h, s.gh());
  const std::vector<float> packed_x = PackTransposed(args.w_ih, s.d, s.gh());
  const int64_t chunks_x = (s.d + kChunk - 1) / kChunk;
  // The gate gradients of the last `ring` steps, [ring, b, g*h], one slot per step,
  // reduced into the weight gradients every `block` steps: they never leave the
  // cache. A slot is rewritten `ring` >= 2 steps later, after every thread has
  // passed the barrier that follows its last read. The GRU's recurrent side
  // differs in the n gate and gets its own ring. kChunk floats of padding: a
  // partial last chunk's tiles read 16 columns.
  const int64_t block = (kBlockRows + s.b - 1) / s.b, ring = std::max<int64_t>(2, block);
  std::vector<float> gx_ring(ring * s.b * s.gh() + kChunk, 0.0f), gh_ring(gru ? gx_ring.size() : 0, 0.0f);
  float* const gx_base = gx_ring.data();
  float* const gh_base = gru ? gh_ring.data() : gx_base;
  std::fill_n(args.d_b_ih, s.gh(), 0.0f);
  std::fill_n(args.d_b_hh, s.gh(), 0.0f);
  // dh: gradient of h after the current step; direct: the part of the previous
  // h's gradient that bypasses w_hh. A thread reads and writes only its units of
  // both, and of dc.
  std::vector<float> dh(args.d_hn, args.d_hn + s.b * s.h);
  std::vector<float> dc(s.b * s.h, 0.0f);
  if (lstm) std::copy_n(args.d_cn, s.b * s.h, dc.data());
  std::vector<float> direct(s.b * s.h);
  const int num_threads = NumThreads(s.chunks());

  Parallel(num_threads, [&](int thread, Barrier& barrier) {
    const int64_t c_begin = s.chunks() * thread / num_threads, c_end = s.chunks() * (thread + 1) / num_threads;
    std::vector<float> tile(kRows * kChunk);
    std::vector<float> dw((c_end - c_begin) * s.g() * s.k() * kChunk, 0.0f);
    std::vector<float> a(s.k() * block * s.b), panel(block * s.b * kChunk);
    std::vector<const float*> sources(2 * block * s.b);
    int64_t waits = 0;
    for (int64_t step = 0; step < s.t; ++step) {
      const int64_t t = TimeAt(s.t - 1 - step, s.t, reverse);  // the forward's steps, last first
      const int64_t t_prev = reverse ? t + 1 : t - 1;          // the step that produced the carry
      float* const gx_t = gx_base + step % ring * s.b * s.gh();
      float* const gh_t = gh_base + step % ring * s.b * s.gh();
      // 1. Elementwise: gate pre-activation gradients of this thread's units.
      for (int64_t ch = c_begin; ch < c_end; ++ch) {
        const int64_t u0 = ch * kChunk, nu = std::min<int64_t>(kChunk, s.h - u0);
        for (int64_t bi = 0; bi < s.b; ++bi) {
          int64_t a_step = step, a_chunk = ch, a_row = bi;
          if (Ahead(a_step, a_chunk, a_row, kPrefetchRows, s, c_begin, c_end)) {
            const int64_t a_t = TimeAt(s.t - 1 - a_step, s.t, reverse), a_u0 = a_chunk * kChunk;
            Prefetch(args.d_hs + s.Row(a_t, a_row) * s.h + a_u0, nu);
            // The outputs that the update reads: the RNN its own, the GRU the previous step's.
            const int64_t h_t = gru ? (reverse ? a_t + 1 : a_t - 1) : a_t;
            if (!lstm && h_t >= 0 && h_t < s.t) Prefetch(args.hs + s.Row(h_t, a_row) * s.h + a_u0, nu);
          }
          const int64_t row = s.Row(t, bi);
          float* gx = gx_t + bi * s.gh() + u0;
          float* gh = gh_t + bi * s.gh() + u0;
          float* dh_ = dh.data() + bi * s.h + u0;
          float* dir = direct.data() + bi * s.h + u0;
          if (t >= args.lengths[bi]) {  // padding passes the carry's gradient through
            for (int64_t j = 0; j < s.g(); ++j) {
              std::fill_n(gx + j * s.h, nu, 0.0f);
              if (gru) std::fill_n(gh + j * s.h, nu, 0.0f);
            }
            std::copy_n(dh_, nu, dir);
            continue;
          }
          // The carry entering step t: the previous step's, or the initial state.
          const bool from_init = reverse ? t_prev >= args.lengths[bi] : t_prev < 0;
          const float* dy = args.d_hs + row * s.h + u0;
          const int64_t res = (t * s.chunks() + ch) * s.b + bi, res_prev = (t_prev * s.chunks() + ch) * s.b + bi;
          if (lstm) {
            const float* cp = from_init ? args.c0 + bi * s.h + u0 : args.cs + res_prev * kChunk;
            SEQJAX_DISPATCH(LstmBackward, nu, s.h, args.acts + res * kSlots * kChunk, args.cs + res * kChunk,
                            cp, dh_, dy, dc.data() + bi * s.h + u0, gx, dir);
          } else if (gru) {
            const float* hp = from_init ? args.h0 + bi * s.h + u0 : args.hs + s.Row(t_prev, bi) * s.h + u0;
            SEQJAX_DISPATCH(GruBackward, nu, s.h, args.acts + res * kSlots * kChunk, hp, dh_, dy, gx, gh, dir);
          } else {
            SEQJAX_DISPATCH(RnnBackward, nu, s.kind, args.hs + row * s.h + u0, dh_, dy, gx, dir);
          }
        }
      }
      barrier.Wait(waits);
      // 2. dh for this thread's units = d_gh[t] @ w_hh^T + direct. No second barrier:
      // the next step writes another slot, and reads only this thread's units of dh.
      for (int64_t ch = c_begin; ch < c_end; ++ch) {
        const int64_t u0 = ch * kChunk, nu = std::min<int64_t>(kChunk, s.h - u0);
        for (int64_t row = 0; row < s.b; row += kRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kRows, s.b - row));
          TileRows(rows, gh_t + row * s.gh(), s.gh(), s.gh(), nullptr, 0, 0, packed_h.data() + ch * s.gh() * kChunk,
                   kChunk, tile.data(), kChunk);
          for (int r = 0; r < rows; ++r) {
            float* dh_ = dh.data() + (row + r) * s.h + u0;
            const float* dir = direct.data() + (row + r) * s.h + u0;
            const float* p = tile.data() + r * kChunk;
            for (int64_t u = 0; u < nu; ++u) dh_[u] = p[u] + dir[u];
          }
        }
      }
      // d_xs[t] = d_gx[t] @ w_ih^T, 16 inputs at a time, the chunks dealt round the threads.
      for (int64_t ch = thread; ch < chunks_x; ch += num_threads) {
        const int64_t f0 = ch * kChunk, nf = std::min<int64_t>(kChunk, s.d - f0);
        for (int64_t row = 0; row < s.b; row += kRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kRows, s.b - row));
          TileRows(rows, gx_t + row * s.gh(), s.gh(), s.gh(), nullptr, 0, 0, packed_x.data() + ch * s.gh() * kChunk,
                   kChunk, tile.data(), kChunk);
          Store(rows, nf, tile.data(), args.d_xs + s.Row(t, row) * s.d + f0, s.BatchStride() * s.d);
        }
      }
      // 3. At the end of a block, its weight gradients.
      if ((step + 1) % block == 0 || step + 1 == s.t) {
        const int64_t steps = step % block + 1, first = (step + 1 - steps) % ring * s.b * s.gh();
        WeightBlock(s, reverse, args, step + 1 - steps, steps, gx_base + first, gh_base + first, c_begin, c_end, dw.data(), a.data(),
                    panel.data(), sources.data());
      }
    }
    for (int64_t ch = c_begin; ch < c_end; ++ch)
      for (int64_t j = 0; j < s.g(); ++j) {
        const float* acc = dw.data() + ((ch - c_begin) * s.g() + j) * s.k() * kChunk;
        const int64_t col = j * s.h + ch * kChunk, nu = std::min<int64_t>(kChunk, s.h - ch * kChunk);
        Store(s.h, nu, acc, args.d_w_hh + col, s.gh());
        Store(s.d, nu, acc + s.h * kChunk, args.d_w_ih + col, s.gh());
      }
  });
  std::copy_n(dh.data(), s.b * s.h, args.d_h0);
  if (lstm) std::copy_n(dc.data(), s.b * s.h, args.d_c0);
  if (!gru) std::copy_n(args.d_b_ih, s.gh(), args.d_b_hh);
}

// ---------------------------------------------------------------- FFI
#ifndef SEQJAX_NO_FFI
using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 xs, F32 w_ih, F32 w_hh, F32 b_ih, F32 b_hh, F32 h0, F32 c0, ffi::Buffer<ffi::S32> lengths,
                   F32Out hs, F32Out h_n, F32Out c_n, F32Out acts, F32Out cs, int64_t kind, bool reverse,
                   bool save, bool time_major) {
  if (kind < kRnnTanh || kind > kGru) return ffi::Error::InvalidArgument("unknown cell kind");
  const auto x_dims = xs.dimensions(), h_dims = h0.dimensions();
  if (x_dims.size() != 3 || h_dims.size() != 2) return ffi::Error::InvalidArgument("xs must be 3-D, h0 [b, h]");
  const int64_t t = x_dims[time_major ? 0 : 1], b = x_dims[time_major ? 1 : 0];
  RunForward({t, b, x_dims[2], h_dims[1], kind, time_major}, reverse, save,
             {xs.typed_data(), w_ih.typed_data(), w_hh.typed_data(), b_ih.typed_data(), b_hh.typed_data(),
              h0.typed_data(), c0.typed_data(), lengths.typed_data(), hs->typed_data(), h_n->typed_data(),
              c_n->typed_data(), acts->typed_data(), cs->typed_data()});
  return ffi::Error::Success();
}

ffi::Error Backward(F32 xs, F32 w_ih, F32 w_hh, F32 h0, F32 c0, ffi::Buffer<ffi::S32> lengths, F32 hs, F32 acts,
                    F32 cs, F32 d_hs, F32 d_hn, F32 d_cn, F32Out d_xs, F32Out d_w_ih, F32Out d_w_hh, F32Out d_b_ih,
                    F32Out d_b_hh, F32Out d_h0, F32Out d_c0, int64_t kind, bool reverse, bool time_major) {
  if (kind < kRnnTanh || kind > kGru) return ffi::Error::InvalidArgument("unknown cell kind");
  const auto x_dims = xs.dimensions(), h_dims = hs.dimensions();
  if (x_dims.size() != 3 || h_dims.size() != 3) return ffi::Error::InvalidArgument("xs and hs must be 3-D");
  const int64_t t = x_dims[time_major ? 0 : 1], b = x_dims[time_major ? 1 : 0];
  RunBackward({t, b, x_dims[2], h_dims[2], kind, time_major}, reverse,
              {xs.typed_data(), w_ih.typed_data(), w_hh.typed_data(), h0.typed_data(), c0.typed_data(),
               lengths.typed_data(), hs.typed_data(), acts.typed_data(), cs.typed_data(), d_hs.typed_data(),
               d_hn.typed_data(), d_cn.typed_data(), d_xs->typed_data(), d_w_ih->typed_data(), d_w_hh->typed_data(),
               d_b_ih->typed_data(), d_b_hh->typed_data(), d_h0->typed_data(), d_c0->typed_data()});
  return ffi::Error::Success();
}
#endif

}  // namespace

#ifndef SEQJAX_NO_FFI
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxRnnForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // xs
                                  .Arg<F32>()  // w_ih
                                  .Arg<F32>()  // w_hh
                                  .Arg<F32>()  // b_ih
                                  .Arg<F32>()  // b_hh
                                  .Arg<F32>()  // h0
                                  .Arg<F32>()  // c0
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths
                                  .Ret<F32>()  // hs
                                  .Ret<F32>()  // h_n
                                  .Ret<F32>()  // c_n
                                  .Ret<F32>()  // acts
                                  .Ret<F32>()  // cs
                                  .Attr<int64_t>("kind")
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("save")
                                  .Attr<bool>("time_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxRnnBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // xs
                                  .Arg<F32>()  // w_ih
                                  .Arg<F32>()  // w_hh
                                  .Arg<F32>()  // h0
                                  .Arg<F32>()  // c0
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths
                                  .Arg<F32>()  // hs
                                  .Arg<F32>()  // acts
                                  .Arg<F32>()  // cs
                                  .Arg<F32>()  // d_hs
                                  .Arg<F32>()  // d_hn
                                  .Arg<F32>()  // d_cn
                                  .Ret<F32>()  // d_xs
                                  .Ret<F32>()  // d_w_ih
                                  .Ret<F32>()  // d_w_hh
                                  .Ret<F32>()  // d_b_ih
                                  .Ret<F32>()  // d_b_hh
                                  .Ret<F32>()  // d_h0
                                  .Ret<F32>()  // d_c0
                                  .Attr<int64_t>("kind")
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("time_major"));
#endif
