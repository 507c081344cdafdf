// Branch-free float32 math that the compiler vectorises, shared by the CPU kernels.
#ifndef SEQJAX_FAST_MATH_H_
#define SEQJAX_FAST_MATH_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace seqjax {

// Vectorisable float32 exp: exp(x) = 2^n * exp(r), |r| <= ln2 / 2, with Cephes'
// expf polynomial (relative error about 1e-7) and ln 2 split in two for an exact
// reduction. Branch-free so that loops vectorise.
inline float Exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float n = __builtin_floorf(x * 1.44269504f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }

// float64 (the kernels' reference precision, for tests): the library's own.
inline double Exp(double x) { return std::exp(x); }
inline double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace seqjax

#endif  // SEQJAX_FAST_MATH_H_
