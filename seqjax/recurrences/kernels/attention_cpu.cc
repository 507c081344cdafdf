// Softmax attention for XLA:CPU, forward and backward (flash attention, Dao et al. 2022),
// through XLA's FFI (see `attention` in seqjax/models/transformer.py).
//
// As XLA ops, attention in cache-sized blocks is many small ops a block: slices of Q,
// K, V and dO are copied out, accumulators are read and written back, the heads are
// transposed to and from [b, n, t, d] around it, and independent ops share the cores.
// Here one call runs each (batch, head) pair on one thread, reading the model's
// [b, t, n, d] layout in place, with each step's scores, probabilities and gradients
// in cache; the threads take whole pairs.
//
// S = scale * Q K^T over the keys a query sees: those before the pair's length and
// (causal) at or before the query. Forward, per query row, one step of kKeys keys at a
// time: the running max m, l = sum exp(S - m) and O = sum exp(S - m) V; then
// out = O / l and lse = m + log l. Backward, with P = exp(S - lse) and
// D = rowsum(dO * out): dV = P^T dO, dS = P * (dO V^T - D), dQ = scale dS K,
// dK = scale dS^T Q. A query that sees no key (length 0) gets the mean of all s values,
// as a softmax over scores that are all masked does (jax.nn.dot_product_attention).
//
// Layouts (row-major): q, out, d_out, dq [B, t, n, d]; k, v, dk, dv [B, s, n, d];
// lengths [B] int32; lse [B, n, t]. float32 or float64.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "fast_math.h"
#include "threads.h"

#ifndef SEQJAX_NO_FFI
#include "ffi_buffers.h"
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;
#endif

namespace {

using seqjax::Exp;
using seqjax::ForRanges;
using seqjax::NumThreads;

// A vector of kBytes bytes (GCC/Clang vector extensions; a 64-byte one is one AVX-512
// register, two AVX or four NEON registers).
template <typename R, int kBytes>
struct Vector {
  typedef R type __attribute__((vector_size(kBytes)));
};

template <typename V, typename R>
inline V Load(const R* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename R>
inline void Store(R* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// The vector registers: a tile of accumulators takes at most half of them.
#if defined(__AVX512F__)
constexpr int kRegisters = 32, kRegisterBytes = 32 * 64;
#elif defined(__aarch64__)
constexpr int kRegisters = 32, kRegisterBytes = 32 * 16;
#elif defined(__AVX__)
constexpr int kRegisters = 16, kRegisterBytes = 16 * 32;
#else
constexpr int kRegisters = 16, kRegisterBytes = 16 * 16;
#endif

// Columns [j, ...) of c[i, j] (+)= sum_p a(i, p) b[p, j] in blocks of kVecs vectors of
// kBytes bytes, while whole blocks fit in n; returns the first column left. A tile of
// kRows rows by the block stays in registers over p.
template <typename R, bool kTransA, int kBytes, int kVecs>
int64_t GemmColumns(int64_t j, int64_t m, int64_t n, int64_t depth, const R* a, int64_t lda, const R* b,
                    int64_t ldb, R* c, int64_t ldc, bool accumulate) {
  using V = typename Vector<R, kBytes>::type;
  constexpr int64_t kLanes = kBytes / sizeof(R);
  constexpr int kRows = std::max(1, std::min(kRegisterBytes / 2 / (kVecs * kBytes), kRegisters / 2 / kVecs));
  auto at = [&](int64_t i, int64_t p) { return kTransA ? a[p * lda + i] : a[i * lda + p]; };
  auto tile = [&](auto rows, int64_t i) {
    constexpr int kTile = decltype(rows)::value;
    V acc[kTile][kVecs];
    for (int r = 0; r < kTile; ++r)
      for (int h = 0; h < kVecs; ++h) acc[r][h] = accumulate ? Load<V>(c + (i + r) * ldc + j + h * kLanes) : V{};
    for (int64_t p = 0; p < depth; ++p) {
      V bv[kVecs];
      for (int h = 0; h < kVecs; ++h) bv[h] = Load<V>(b + p * ldb + j + h * kLanes);
      for (int r = 0; r < kTile; ++r) {
        const R x = at(i + r, p);
        for (int h = 0; h < kVecs; ++h) acc[r][h] += x * bv[h];
      }
    }
    for (int r = 0; r < kTile; ++r)
      for (int h = 0; h < kVecs; ++h) Store(c + (i + r) * ldc + j + h * kLanes, acc[r][h]);
  };
  for (; j + kVecs * kLanes <= n; j += kVecs * kLanes) {
    int64_t i = 0;
    for (; i + kRows <= m; i += kRows) tile(std::integral_constant<int, kRows>{}, i);
    for (; i < m; ++i) tile(std::integral_constant<int, 1>{}, i);
  }
  return j;
}

// c[i, j] (+)= sum_p a(i, p) b[p, j] for i < m, j < n, p < depth, with a(i, p) = a[i * lda + p],
// or a[p * lda + i] if kTransA: blocks of two 64-byte vectors (8 rows with AVX-512: the
// backward at t=1024 ran at 154 GF/s on 2 Zen 4 cores, against 116 with 4 rows and 137
// with 12), then narrower vectors for the columns left (a head of 4 or 8 floats), then
// scalars.
template <typename R, bool kTransA>
void Gemm(int64_t m, int64_t n, int64_t depth, const R* a, int64_t lda, const R* b, int64_t ldb, R* c,
          int64_t ldc, bool accumulate) {
  int64_t j = GemmColumns<R, kTransA, 64, 2>(0, m, n, depth, a, lda, b, ldb, c, ldc, accumulate);
  j = GemmColumns<R, kTransA, 64, 1>(j, m, n, depth, a, lda, b, ldb, c, ldc, accumulate);
  j = GemmColumns<R, kTransA, 32, 1>(j, m, n, depth, a, lda, b, ldb, c, ldc, accumulate);
  j = GemmColumns<R, kTransA, 16, 1>(j, m, n, depth, a, lda, b, ldb, c, ldc, accumulate);
  for (; j < n; ++j)  // columns past the last vector
    for (int64_t i = 0; i < m; ++i) {
      R sum = accumulate ? c[i * ldc + j] : R(0);
      for (int64_t p = 0; p < depth; ++p) sum += (kTransA ? a[p * lda + i] : a[i * lda + p]) * b[p * ldb + j];
      c[i * ldc + j] = sum;
    }
}

constexpr int64_t kQueryRows = 32;  // query rows per step: with kKeys, a step's [32, 64] tile
constexpr int64_t kKeys = 64;       // keys per step (a multiple of every vector's lanes)

// The largest and the sum of kKeys values, in vectors (a scalar loop would not vectorise
// these reductions without -ffast-math).
template <typename R>
R MaxOf(const R* x) {
  using V = typename Vector<R, 64>::type;
  constexpr int64_t kLanes = sizeof(V) / sizeof(R);
  V acc = Load<V>(x);
  for (int64_t j = kLanes; j < kKeys; j += kLanes) {
    const V y = Load<V>(x + j);
    acc = acc > y ? acc : y;
  }
  R out = acc[0];
  for (int64_t j = 1; j < kLanes; ++j) out = std::max(out, acc[j]);
  return out;
}

template <typename R>
R SumOf(const R* x) {
  using V = typename Vector<R, 64>::type;
  constexpr int64_t kLanes = sizeof(V) / sizeof(R);
  V acc = Load<V>(x);
  for (int64_t j = kLanes; j < kKeys; j += kLanes) acc += Load<V>(x + j);
  R out = 0;
  for (int64_t j = 0; j < kLanes; ++j) out += acc[j];
  return out;
}

struct Shape {
  int64_t batch, t, s, n, d;
  bool causal;
  double scale;
  int64_t Pairs() const { return batch * n; }
  int64_t Row() const { return n * d; }  // elements between a pair's consecutive rows
  // The keys query row r sees, [0, Seen(r, len)), for a length len > 0.
  int64_t Seen(int64_t r, int64_t len) const { return causal ? std::min(r + 1, len) : len; }
};

// One pair's rows: q, out, d_out, dq start at query row 0 and k, v, dk, dv at key row 0
// of their (batch, head); rows are Shape::Row() apart. lse is the pair's [t].
template <typename R>
struct PairArrays {
  const R *q, *k, *v, *d_out;
  R *out, *lse, *dq, *dk, *dv;
  int64_t len;
};

template <typename R>
PairArrays<R> PairAt(const Shape& sh, int64_t pair, const R* q, const R* k, const R* v, const int32_t* lengths) {
  const int64_t b = pair / sh.n, h = pair % sh.n;
  const int64_t q_at = b * sh.t * sh.Row() + h * sh.d, k_at = b * sh.s * sh.Row() + h * sh.d;
  return {q + q_at, k + k_at, v + k_at, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
          std::clamp<int64_t>(lengths[b], 0, sh.s)};
}

// A pair's K (or V) transposed in blocks of kKeys keys: [ceil(s / kKeys), d, kKeys], so
// that a step's rows are 256 bytes apart (rows s apart could share a cache set).
template <typename R>
void PackTransposed(const Shape& sh, const R* x, R* out) {
  for (int64_t c = 0; c < sh.s; ++c)
    for (int64_t j = 0; j < sh.d; ++j) out[(c / kKeys * sh.d + j) * kKeys + c % kKeys] = x[c * sh.Row() + j];
}

// A step's columns rounded up to whole pairs of vectors (at most kKeys): the scores'
// products run on whole vectors of the packed blocks (whose padding is zero), and the
// columns past `cols` are masked out.
template <typename R>
int64_t PaddedColumns(int64_t cols) {
  constexpr int64_t kPair = 2 * sizeof(typename Vector<R, 64>::type) / sizeof(R);
  return std::min(kKeys, (cols + kPair - 1) / kPair * kPair);
}

template <typename R>
struct Scratch {
  explicit Scratch(const Shape& sh)
      : kt(sh.d * PaddedKeys(sh)),
        vt(sh.d * PaddedKeys(sh)),
        rows(kQueryRows * sh.d),
        p(kQueryRows * kKeys),
        ds(kQueryRows * kKeys),
        m(kQueryRows),
        l(kQueryRows) {}
  static int64_t PaddedKeys(const Shape& sh) { return (sh.s + kKeys - 1) / kKeys * kKeys; }
  std::vector<R> kt, vt, rows, p, ds, m, l;  // rows: a step's O (forward) or D (backward)
};

template <typename R>
void PairForward(const Shape& sh, PairArrays<R> x, Scratch<R>& w) {
  const int64_t t = sh.t, s = sh.s, d = sh.d, ld = sh.Row();
  const R scale = R(sh.scale), lowest = std::numeric_limits<R>::lowest();
  if (x.len == 0) {  // every score masked: the mean of the values
    std::fill_n(w.rows.data(), d, R(0));
    for (int64_t c = 0; c < s; ++c)
      for (int64_t j = 0; j < d; ++j) w.rows[j] += x.v[c * ld + j];
    for (int64_t r = 0; r < t; ++r) {
      for (int64_t j = 0; j < d; ++j) x.out[r * ld + j] = w.rows[j] / R(s);
      x.lse[r] = std::log(R(s));
    }
    return;
  }
  PackTransposed(sh, x.k, w.kt.data());
  R *p = w.p.data(), *o = w.rows.data();
  for (int64_t r0 = 0; r0 < t; r0 += kQueryRows) {
    const int64_t rows = std::min(kQueryRows, t - r0);
    std::fill_n(w.m.begin(), rows, lowest);
    std::fill_n(w.l.begin(), rows, R(0));
    std::fill_n(o, rows * d, R(0));
    const int64_t keys = sh.Seen(r0 + rows - 1, x.len);  // the most any of these rows sees
    for (int64_t c0 = 0; c0 < keys; c0 += kKeys) {
      const int64_t cols = std::min(kKeys, keys - c0);
      Gemm<R, false>(rows, PaddedColumns<R>(cols), d, x.q + r0 * ld, ld, w.kt.data() + c0 * d, kKeys, p, kKeys,
                     false);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t seen = std::min(sh.Seen(r0 + i, x.len), c0 + cols) - c0;
        R* __restrict pi = p + i * kKeys;
        for (int64_t j = 0; j < kKeys; ++j) pi[j] = j < seen ? scale * pi[j] : lowest;
        const R top = std::max(w.m[i], MaxOf(pi));
        const R rescale = Exp(w.m[i] - top);
        for (int64_t j = 0; j < kKeys; ++j) pi[j] = j < seen ? Exp(pi[j] - top) : R(0);
        w.l[i] = w.l[i] * rescale + SumOf(pi);
        w.m[i] = top;
        for (int64_t j = 0; j < d; ++j) o[i * d + j] *= rescale;
      }
      Gemm<R, false>(rows, d, cols, p, kKeys, x.v + c0 * ld, ld, o, d, true);  // O += P V
    }
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < d; ++j) x.out[(r0 + i) * ld + j] = o[i * d + j] / w.l[i];
      x.lse[r0 + i] = w.m[i] + std::log(w.l[i]);
    }
  }
}

template <typename R>
void PairBackward(const Shape& sh, PairArrays<R> x, Scratch<R>& w) {
  const int64_t t = sh.t, s = sh.s, d = sh.d, ld = sh.Row();
  const R scale = R(sh.scale);
  for (int64_t r = 0; r < t; ++r) std::fill_n(x.dq + r * ld, d, R(0));
  for (int64_t c = 0; c < s; ++c) {
    std::fill_n(x.dk + c * ld, d, R(0));
    std::fill_n(x.dv + c * ld, d, R(0));
  }
  if (x.len == 0) {  // out = mean of the values: each value gets 1/s of every dO
    for (int64_t r = 0; r < t; ++r)
      for (int64_t j = 0; j < d; ++j) x.dv[j] += x.d_out[r * ld + j] / R(s);
    for (int64_t c = 1; c < s; ++c) std::copy_n(x.dv, d, x.dv + c * ld);
    return;
  }
  PackTransposed(sh, x.k, w.kt.data());
  PackTransposed(sh, x.v, w.vt.data());
  R *p = w.p.data(), *ds = w.ds.data(), *rowsum = w.rows.data();
  for (int64_t r0 = 0; r0 < t; r0 += kQueryRows) {
    const int64_t rows = std::min(kQueryRows, t - r0);
    for (int64_t i = 0; i < rows; ++i) {
      R sum = 0;
      for (int64_t j = 0; j < d; ++j) sum += x.d_out[(r0 + i) * ld + j] * x.out[(r0 + i) * ld + j];
      rowsum[i] = sum;
    }
    const int64_t keys = sh.Seen(r0 + rows - 1, x.len);
    for (int64_t c0 = 0; c0 < keys; c0 += kKeys) {
      const int64_t cols = std::min(kKeys, keys - c0);
      const int64_t padded = PaddedColumns<R>(cols);
      Gemm<R, false>(rows, padded, d, x.q + r0 * ld, ld, w.kt.data() + c0 * d, kKeys, p, kKeys, false);  // Q K^T
      Gemm<R, false>(rows, padded, d, x.d_out + r0 * ld, ld, w.vt.data() + c0 * d, kKeys, ds, kKeys,
                     false);  // dO V^T
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t seen = std::min(sh.Seen(r0 + i, x.len), c0 + cols) - c0;
        const R row_lse = x.lse[r0 + i], row_sum = rowsum[i];
        R* __restrict pi = p + i * kKeys;
        R* __restrict dsi = ds + i * kKeys;
        for (int64_t j = 0; j < cols; ++j) {  // unconditional loads, so that it vectorises
          const R score = pi[j], dp = dsi[j];
          const R prob = j < seen ? Exp(scale * score - row_lse) : R(0);
          pi[j] = prob;
          dsi[j] = scale * prob * (dp - row_sum);
        }
      }
      Gemm<R, true>(cols, d, rows, p, kKeys, x.d_out + r0 * ld, ld, x.dv + c0 * ld, ld, true);  // dV += P^T dO
      Gemm<R, true>(cols, d, rows, ds, kKeys, x.q + r0 * ld, ld, x.dk + c0 * ld, ld, true);     // dK += dS^T Q
      Gemm<R, false>(rows, d, cols, ds, kKeys, x.k + c0 * ld, ld, x.dq + r0 * ld, ld, true);    // dQ += dS K
    }
  }
}

// Runs fn(pair, scratch) over every (batch, head) pair, the threads taking whole pairs.
template <typename R, typename Fn>
void ForPairs(const Shape& sh, Fn fn) {
  ForRanges(sh.Pairs(), NumThreads(sh.Pairs() * sh.t * sh.s, sh.Pairs()), 1, [&](int, int64_t begin, int64_t end) {
    Scratch<R> scratch(sh);
    for (int64_t pair = begin; pair < end; ++pair) fn(pair, scratch);
  });
}

#ifndef SEQJAX_NO_FFI
// The shape of q [..., t, n, d] and k [..., s, n, d], checked against the other buffers.
ffi::Error ShapeOf(const ffi::AnyBuffer& q, const ffi::AnyBuffer& k, const ffi::AnyBuffer& v, size_t lengths,
                   size_t lse, std::initializer_list<const ffi::AnyBuffer*> like_q, bool causal, double scale,
                   Shape& sh) {
  const auto qd = q.dimensions(), kd = k.dimensions();
  if (qd.size() < 3 || kd.size() != qd.size())
    return ffi::Error::InvalidArgument("attention: q must be [..., t, n, d] and k [..., s, n, d]");
  sh = {1, qd[qd.size() - 3], kd[kd.size() - 3], qd[qd.size() - 2], qd.back(), causal, scale};
  for (size_t i = 0; i + 3 < qd.size(); ++i) sh.batch *= qd[i];
  const auto dtype = q.element_type();
  if (dtype != ffi::F32 && dtype != ffi::F64) return ffi::Error::InvalidArgument("attention: f32 or f64 only");
  for (const ffi::AnyBuffer* x : like_q)
    if (x->element_type() != dtype || x->element_count() != q.element_count())
      return ffi::Error::InvalidArgument("attention: out and d_out must be like q");
  if (k.element_type() != dtype || v.element_type() != dtype || v.element_count() != k.element_count() ||
      k.element_count() != size_t(sh.batch * sh.s * sh.n * sh.d) || lengths != size_t(sh.batch) ||
      lse != size_t(sh.Pairs() * sh.t))
    return ffi::Error::InvalidArgument("attention: k, v [B, s, n, d], lengths [B] and lse [B, n, t] for q [B, t, n, d]");
  return ffi::Error::Success();
}

using seqjax::In;
using seqjax::Out;

ffi::Error ForwardFfi(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::Buffer<ffi::S32> lengths,
                      ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse, bool causal, double scale) {
  Shape sh;
  if (ffi::Error e = ShapeOf(q, k, v, lengths.element_count(), lse->element_count(), {}, causal, scale, sh);
      e.failure())
    return e;
  auto run = [&](auto real) {
    using R = decltype(real);
    ForPairs<R>(sh, [&](int64_t pair, Scratch<R>& w) {
      PairArrays<R> x = PairAt(sh, pair, In<R>(q), In<R>(k), In<R>(v), lengths.typed_data());
      x.out = Out<R>(out) + (x.q - In<R>(q));
      x.lse = Out<R>(lse) + pair * sh.t;
      PairForward(sh, x, w);
    });
  };
  q.element_type() == ffi::F32 ? run(float{}) : run(double{});
  return ffi::Error::Success();
}

ffi::Error BackwardFfi(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::Buffer<ffi::S32> lengths,
                       ffi::AnyBuffer out, ffi::AnyBuffer lse, ffi::AnyBuffer d_out, ffi::Result<ffi::AnyBuffer> dq,
                       ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv, bool causal, double scale) {
  Shape sh;
  if (ffi::Error e = ShapeOf(q, k, v, lengths.element_count(), lse.element_count(), {&out, &d_out}, causal, scale, sh);
      e.failure())
    return e;
  if (lse.element_type() != q.element_type()) return ffi::Error::InvalidArgument("attention: lse must be like q");
  auto run = [&](auto real) {
    using R = decltype(real);
    ForPairs<R>(sh, [&](int64_t pair, Scratch<R>& w) {
      PairArrays<R> x = PairAt(sh, pair, In<R>(q), In<R>(k), In<R>(v), lengths.typed_data());
      const int64_t q_at = x.q - In<R>(q), k_at = x.k - In<R>(k);
      x.out = const_cast<R*>(In<R>(out)) + q_at;  // read only, as lse
      x.d_out = In<R>(d_out) + q_at;
      x.lse = const_cast<R*>(In<R>(lse)) + pair * sh.t;
      x.dq = Out<R>(dq) + q_at;
      x.dk = Out<R>(dk) + k_at;
      x.dv = Out<R>(dv) + k_at;
      PairBackward(sh, x, w);
    });
  };
  q.element_type() == ffi::F32 ? run(float{}) : run(double{});
  return ffi::Error::Success();
}
#endif

}  // namespace

#ifndef SEQJAX_NO_FFI
// The arguments both passes take first.
static auto AttentionInputs() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()          // q
      .Arg<ffi::AnyBuffer>()          // k
      .Arg<ffi::AnyBuffer>()          // v
      .Arg<ffi::Buffer<ffi::S32>>();  // lengths
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxAttentionForward, ForwardFfi,
                              AttentionInputs()
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Ret<ffi::AnyBuffer>()  // lse
                                  .Attr<bool>("causal")
                                  .Attr<double>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxAttentionBackward, BackwardFfi,
                              AttentionInputs()
                                  .Arg<ffi::AnyBuffer>()  // out
                                  .Arg<ffi::AnyBuffer>()  // lse
                                  .Arg<ffi::AnyBuffer>()  // d_out
                                  .Ret<ffi::AnyBuffer>()  // dq
                                  .Ret<ffi::AnyBuffer>()  // dk
                                  .Ret<ffi::AnyBuffer>()  // dv
                                  .Attr<bool>("causal")
                                  .Attr<double>("scale"));
#endif
