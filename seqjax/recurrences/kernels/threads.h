// Splitting a kernel's independent work over threads, shared by the CPU kernels.
#ifndef SEQJAX_THREADS_H_
#define SEQJAX_THREADS_H_

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

namespace seqjax {

// Work below this per thread does not pay for starting the thread.
constexpr int64_t kMinWorkPerThread = 1 << 16;  // elements

// Threads for `work` elements split into `units` independent parts: no more than the
// cores ($SEQJAX_CPU_THREADS), the parts, or one per kMinWorkPerThread elements.
inline int NumThreads(int64_t work, int64_t units) {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("SEQJAX_CPU_THREADS")) threads = std::atoi(env);
  const int64_t by_work = std::max<int64_t>(1, work / kMinWorkPerThread);
  return static_cast<int>(std::clamp<int64_t>(threads, 1, std::min(by_work, std::max<int64_t>(1, units))));
}

// Runs fn(i, begin, end) on `threads` threads over ranges of [0, count) whose bounds
// (but the last) are multiples of `align`.
template <typename Fn>
void ForRanges(int64_t count, int threads, int64_t align, Fn fn) {
  auto range = [&](int i) {
    const int64_t begin = (count * i / threads) / align * align;
    fn(i, begin, i + 1 == threads ? count : (count * (i + 1) / threads) / align * align);
  };
  std::vector<std::thread> workers;
  for (int i = 1; i < threads; ++i) workers.emplace_back(range, i);
  range(0);
  for (auto& worker : workers) worker.join();
}

}  // namespace seqjax

#endif  // SEQJAX_THREADS_H_
