#pragma once
// The CUDA-on-CPU emulator, device side: what a kernels/cuda/*.cu source needs to compile as
// C++ with g++ and run on the CPU (docs/cuda-backend.md). Each CUDA thread of a block is a fiber
// (Boost.Context) on one OS thread; the blocks of a launch run one after another.
//
//  - __global__/__device__/__host__/__forceinline__/__launch_bounds__: dropped.
//  - __shared__ is `thread_local` (block scope ⇒ static): one instance per OS thread, which
//    is exactly one per running block. Dynamic shared memory has no `extern` form here: use
//    EQUIVAE_DYNAMIC_SHARED(T, name) from kernels/cuda/launch.h (a per-block buffer that the
//    emulator fills with 0xFF bytes, a NaN pattern, before every block).
//  - threadIdx/blockIdx/blockDim/gridDim are thread_local globals the scheduler sets.
//  - __syncthreads() suspends the fiber; when every thread of the block waits at a barrier
//    the scheduler resumes them all, in a freshly shuffled order (emu::set_schedule_seed).
//    Threads that exit while others wait, or warps stuck in a shuffle while the rest waits at
//    __syncthreads, are reported as emu::Error instead of hanging.
//  - Warp shuffles and votes publish the lane's value, meet a barrier among the lanes of
//    `mask`, read, and meet a second barrier. Reading a lane that is not in `mask` or does not
//    exist gives all-ones bits (NaN for float), as undefined as on the GPU.
//  - Atomics are std::atomic_ref operations; math intrinsics map to libm.
//  - Checked shared memory: emu::SharedArray<T, N> / SharedArray2D / SharedArray3D (what
//    EQUIVAE_SHARED / _2D / _3D of kernels/cuda/shared.cuh declare here) and
//    emu::dynamic_shared<T>() index through proxies that check bounds and record, per word,
//    who wrote and read it in the current barrier phase; a race throws emu::Error (the rule:
//    emu_runtime.h, set_race_check). So does a read of a word that no thread of the running
//    block has written (reported when its barrier phase ends): static arrays outlive the block
//    (thread_local), so a block would otherwise read the previous block's values where a GPU
//    gives garbage. A row of a 2-D or 3-D array plus an offset (`a[i] + j`, `a[s][i] + j`)
//    is an emu::SharedPtr, a checked pointer that the emulator's cp.async (AsyncCopies) and
//    wmma load/store accept, so their accesses are checked too.
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/emu/emu_runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ thread_local
#define __constant__
#define __managed__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))  // GNU form: allowed after thread_local
// __restrict__ is already a g++ keyword.

constexpr int warpSize = 32;

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local uint3 blockDim;
extern thread_local uint3 gridDim;

namespace emu {
namespace detail {

using Body = void (*)(void*);
// Runs body(ctx) once per CUDA thread of every block of the grid; throws emu::Error. The blocks
// run one after another, or, `cooperative`, all at once, one OS thread each (at most
// kMaxCooperativeBlocks), so that they can meet at grid-wide barriers (grid_spin_wait).
constexpr unsigned kMaxCooperativeBlocks = 64;
void run_grid(const char* name, dim3 grid, dim3 block, size_t dynamic_shared_bytes, Body body,
              void* ctx, bool cooperative = false);
// A spin-wait step of a grid-wide barrier (kernels/cuda/grid_sync.cuh): hands the run on to
// another block (emu.cpp, CooperativeRun); throws when another block of the launch has failed
// (the launch reports that block's error), when the kernel was not launched cooperatively, or
// when every block still running waits at a barrier none will pass (a deadlock).
void grid_spin_wait();

void syncthreads();
// Block-wide barrier that also combines one predicate per thread (0: count, 1: and, 2: or).
int syncthreads_combine(int predicate, int how);
void syncwarp(unsigned mask);
// Publishes `mine`, meets the lanes of `mask`, returns the bits of lane `src_lane` (0..31 of
// this warp), meets them again.
uint64_t warp_exchange(unsigned mask, uint64_t mine, int src_lane);
unsigned warp_ballot(unsigned mask, bool predicate);
// Publishes `mine`, meets all 32 lanes of the warp, calls use(lanes, ctx) with every lane's
// pointer (lanes[k] from lane k), meets them again: a warp-wide operation on the lanes' data
// (the tensor-core MMA of emu_wmma.h). A warp of fewer than 32 threads is an error.
void warp_collective(const void* mine, void (*use)(const void* const* lanes, void* ctx), void* ctx);
unsigned lane_id();
unsigned active_mask();
void* dynamic_shared_memory();
[[noreturn]] void fail(const char* what);

// ---- the shared-memory race check's state (set by the scheduler, read inline by accessors)
struct RaceClock {
  uint64_t phase = 0;                   // advances at every block start and block barrier
  uint64_t block_start = 0;             // the phase at which the running block started
  unsigned thread = 0;                  // linear index of the running CUDA thread
  const uint32_t* warp_sync = nullptr;  // per warp: full-warp syncs completed in this block
  bool on = true;
};
extern thread_local RaceClock t_race;

// Shadow of one shared word: ids are linear thread index + 1 (0: none); *_sync is the warp's
// full-warp sync count at the time of the access. `written` outlives the phase (and the block:
// static arrays keep their shadow), so a write before RaceClock::block_start is no write.
// `async`: the thread whose cp.async to the word is in flight (issued, not yet landed at its
// wait); it counts only while `written` (set by the issue) is of the running block.
struct SharedWord {
  uint64_t phase;    // of the accesses recorded below
  uint64_t written;  // phase of the latest write (0: never)
  uint32_t writer, writer_sync, r1, r1_sync, r2, r2_sync, async;
};

// A string as a template argument (C++20): a static array's name for error messages.
template <size_t K>
struct Name {
  char s[K];
  constexpr Name(const char (&v)[K]) {
    for (size_t i = 0; i < K; ++i) s[i] = v[i];
  }
};
struct SharedShape {  // a static array's name ("" if unnamed) and shape, for error messages
  const char* name;
  int rank;         // 1, 2 or 3
  size_t inner[2];  // the extents after the first: {N} of [M][N], {M, N} of [L][M][N]
};

struct SharedSite {   // what an error message needs about the array
  const char* kind;   // "__shared__ array" or "dynamic shared memory"
  size_t index;       // element index
  size_t count;       // elements in the array (or the dynamic buffer, in this element type)
  size_t elem_bytes;  // element size
  size_t word;        // word offset reported (element index, or 4-byte word of the buffer)
  size_t words = 1;   // shadow words the element covers (tracked on the first)
  const SharedShape* shape = nullptr;  // a static array's name and shape (null: dynamic)
};
// this_does: "reads", "writes", "issues a cp.async to" (the message's verb for this access).
[[noreturn]] void shared_race(const SharedSite& site, unsigned other, bool other_wrote,
                              const char* this_does);
// An access to a word while a cp.async of thread `issuer` to it is in flight.
[[noreturn]] void shared_in_flight(const SharedSite& site, unsigned issuer, const char* this_does);
[[noreturn]] void shared_out_of_bounds(const SharedSite& site, long long index);
// Records a read of a word that no thread of the running block has written. The scheduler
// reports it when the barrier phase ends, unless a write of another thread in the same phase
// races with the read first: then the diagnosis is the race (a missing barrier, not a missing
// store), which the write reports at once.
void note_uninitialised_read(const SharedSite& site);
struct SharedBuffer {
  unsigned char* data;
  SharedWord* shadow;  // one per 4-byte word
  size_t bytes;
};
SharedBuffer dynamic_shared_buffer();

inline bool race_ordered(const RaceClock& c, uint32_t id, uint32_t sync) {
  const unsigned other = id - 1;
  return other == c.thread ||
         ((other >> 5) == (c.thread >> 5) && c.warp_sync[c.thread >> 5] > sync);
}

// A cp.async to the word is in flight: its value is undefined to every thread until it lands.
inline void check_in_flight(const SharedWord& w, const SharedSite& site, const char* does) {
  if (w.async && w.written >= t_race.block_start) shared_in_flight(site, w.async - 1, does);
}

inline void note_read(SharedWord& w, const SharedSite& site) {
  const RaceClock& c = t_race;
  if (!c.on || !c.warp_sync) return;
  check_in_flight(w, site, "reads");
  // Nothing this block wrote: on a GPU, whatever an earlier block or kernel left there.
  if (w.written < c.block_start) note_uninitialised_read(site);
  const uint32_t me = c.thread + 1, sync = c.warp_sync[c.thread >> 5];
  if (w.phase != c.phase) {
    w.phase = c.phase;
    w.writer = w.writer_sync = w.r2 = w.r2_sync = 0;
    w.r1 = me, w.r1_sync = sync;
    return;
  }
  if (w.writer && !race_ordered(c, w.writer, w.writer_sync))
    shared_race(site, w.writer - 1, true, "reads");
  if (!w.r1 || w.r1 == me) {
    w.r1 = me, w.r1_sync = sync;
  } else if (!w.r2 || w.r2 == me || ((w.r2 - 1) >> 5) == ((w.r1 - 1) >> 5)) {
    w.r2 = me, w.r2_sync = sync;  // the second slot keeps a reader of another warp than r1's
  }
}

inline void note_write(SharedWord& w, const SharedSite& site, const char* does = "writes") {
  const RaceClock& c = t_race;
  if (!c.on || !c.warp_sync) return;
  check_in_flight(w, site, does);
  const uint32_t me = c.thread + 1, sync = c.warp_sync[c.thread >> 5];
  if (w.phase == c.phase) {
    if (w.writer && !race_ordered(c, w.writer, w.writer_sync))
      shared_race(site, w.writer - 1, true, does);
    if (w.r1 && !race_ordered(c, w.r1, w.r1_sync)) shared_race(site, w.r1 - 1, false, does);
    if (w.r2 && !race_ordered(c, w.r2, w.r2_sync)) shared_race(site, w.r2 - 1, false, does);
  }
  // Every earlier access is ordered before this write, so a later access that is ordered
  // after it is ordered after them too: only this write needs remembering.
  w = SharedWord{c.phase, c.phase, me, sync, 0, 0, 0, 0, 0};
  // A wide element of the dynamic buffer initialises every word it covers (read, say, as floats).
  for (size_t k = 1; k < site.words; ++k) (&w)[k].written = c.phase, (&w)[k].async = 0;
}

// cp.async (kernels/cuda/async_copy.cuh) writes the word at some moment between its issue and
// the wait that covers it: the issue is a write (racing with this phase's unordered accesses),
// and until the landing any access, by any thread, is a race (check_in_flight). The landing is
// the issuing thread's write in the phase of its wait: other threads need a barrier after it.
inline void note_async_issue(SharedWord& w, const SharedSite& site) {
  note_write(w, site, "issues a cp.async to");
  if (t_race.on && t_race.warp_sync) w.async = t_race.thread + 1;
}
inline void note_async_land(SharedWord& w, const SharedSite& site) {
  w.async = 0;
  note_write(w, site, "lands a cp.async in");
}

// A raw address (`&ref`, for atomics) may be written through untracked: the word counts as
// written, so a word initialised by an atomic is not read as uninitialised.
inline void note_address(SharedWord& w, const SharedSite& site) {
  const RaceClock& c = t_race;
  if (!c.on || !c.warp_sync) return;
  check_in_flight(w, site, "takes the address of");
  w.written = c.phase, w.async = 0;
}

}  // namespace detail

// A checked reference to one shared element: reads and writes go through the race check.
// `&ref` gives the raw address (for atomics; such accesses are not tracked, but taking it
// counts as writing the word for the uninitialised-read check).
template <class T>
class SharedRef {
 public:
  SharedRef(T* p, detail::SharedWord* w, const detail::SharedSite& site)
      : p_(p), w_(w), site_(site) {}
  operator T() const {
    detail::note_read(*w_, site_);
    return *p_;
  }
  const SharedRef& operator=(const T& v) const {
    detail::note_write(*w_, site_);
    *p_ = v;
    return *this;
  }
  const SharedRef& operator=(const SharedRef& o) const { return *this = T(o); }
#define EMU_SHARED_COMPOUND(op)                       \
  template <class U>                                  \
  const SharedRef& operator op##=(const U& v) const { \
    T x = T(*this);                                   \
    x = T(x op v);                                    \
    return *this = x;                                 \
  }
  EMU_SHARED_COMPOUND(+)
  EMU_SHARED_COMPOUND(-)
  EMU_SHARED_COMPOUND(*)
  EMU_SHARED_COMPOUND(/)
  EMU_SHARED_COMPOUND(%)
  EMU_SHARED_COMPOUND(&)
  EMU_SHARED_COMPOUND(|)
  EMU_SHARED_COMPOUND(^)
  EMU_SHARED_COMPOUND(<<)
  EMU_SHARED_COMPOUND(>>)
#undef EMU_SHARED_COMPOUND
  const SharedRef& operator++() const {
    return *this += 1;
  }
  const SharedRef& operator--() const {
    return *this -= 1;
  }
  T operator++(int) const {
    const T old = T(*this);
    *this = old + 1;
    return old;
  }
  T operator--(int) const {
    const T old = T(*this);
    *this = old - 1;
    return old;
  }
  T* operator&() const {
    detail::note_address(*w_, site_);
    return p_;
  }
  // cp.async into this element (kernels/cuda/async_copy.cuh): its issue, and its landing of v.
  void async_issue() const {
    detail::note_async_issue(*w_, site_);
  }
  void async_land(const T& v) const {
    detail::note_async_land(*w_, site_);
    *p_ = v;
  }

 private:
  T* p_;
  detail::SharedWord* w_;
  detail::SharedSite site_;
};

// A checked pointer into a static shared array: what `a[i] + j` (or `&a[i][j]`) is under
// nvcc, for the emulator's cp.async and wmma, which check every element they touch. Indexing
// gives SharedRef; indices and arithmetic are bounds-checked against the whole array.
template <class T>
class SharedPtr {
 public:
  SharedPtr() = default;
  SharedPtr(T* data, detail::SharedWord* shadow, size_t count, size_t at,
            const detail::SharedShape* shape)
      : data_(data), shadow_(shadow), count_(count), at_(at), shape_(shape) {}
  SharedRef<T> operator[](long long i) const {
    const long long k = (long long)at_ + i;
    if (k < 0 || size_t(k) >= count_) detail::shared_out_of_bounds(site(i), k);
    return SharedRef<T>(data_ + k, shadow_ + k, site(i));
  }
  SharedPtr operator+(long long i) const {
    const long long k = (long long)at_ + i;
    if (k < 0 || size_t(k) > count_) {
      detail::SharedSite s = site(i);
      s.kind = "__shared__ array (pointer arithmetic)";
      detail::shared_out_of_bounds(s, k);
    }
    return SharedPtr(data_, shadow_, count_, size_t(k), shape_);
  }
  T* address() const { return data_ + at_; }    // untracked: for alignment checks only
  detail::SharedSite site(long long i) const {  // of element at + i
    const size_t k = size_t((long long)at_ + i);
    return {"__shared__ array", k, count_, sizeof(T), k, 1, shape_};
  }
  // An outer index i (a row, or a 3-D array's first index) outside [0, extent), whose blocks
  // hold `stride` elements each from here.
  [[noreturn]] void outer_out_of_bounds(long long i, size_t extent, size_t stride,
                                        const char* kind) const {
    detail::SharedSite s = site(i * (long long)stride);
    s.kind = kind, s.index = size_t(i), s.count = extent, s.elem_bytes = sizeof(T) * stride;
    detail::shared_out_of_bounds(s, i);
  }

 private:
  T* data_;  // the array's first element (uninitialised by default: trivial, like a T*)
  detail::SharedWord* shadow_;
  size_t count_, at_;
  const detail::SharedShape* shape_;
};

// A row of N elements of a 2-D or 3-D array (`a[i]`, `a[s][i]`): [j] is bounds-checked
// against the row, `row + j` is a SharedPtr (which may run on into the next rows, as the
// pointer does on a GPU).
template <class T, size_t N>
class SharedRow {
 public:
  explicit SharedRow(SharedPtr<T> p) : p_(p) {}
  SharedRef<T> operator[](long long j) const {
    if (j < 0 || size_t(j) >= N) detail::shared_out_of_bounds(p_.site(j), j);
    return p_[j];
  }
  SharedPtr<T> operator+(long long j) const { return p_ + j; }
  operator SharedPtr<T>() const { return p_; }

 private:
  SharedPtr<T> p_;
};

// M rows of N elements (a 2-D array, or `a[s]` of a 3-D one: `T (*)[N]` under nvcc).
template <class T, size_t M, size_t N>
class SharedRows {
 public:
  explicit SharedRows(SharedPtr<T> p) : p_(p) {}
  SharedRow<T, N> operator[](long long i) const {
    if (i < 0 || size_t(i) >= M) p_.outer_out_of_bounds(i, M, N, "__shared__ array (row index)");
    return SharedRow<T, N>(p_ + i * (long long)N);
  }

 private:
  SharedPtr<T> p_;
};

// `__shared__ T name[N]` under the race check (EQUIVAE_SHARED). Static storage (thread_local,
// one per running block), zero-initialised shadow.
template <class T, size_t N, detail::Name kName = "">
class SharedArray {
 public:
  SharedRef<T> operator[](long long i) { return SharedPtr<T>(data_, shadow_, N, 0, &kShape)[i]; }
  static constexpr size_t size() { return N; }

 private:
  static constexpr detail::SharedShape kShape{kName.s, 1, {0, 0}};
  T data_[N];
  detail::SharedWord shadow_[N];
};

// `__shared__ T name[M][N]` under the race check (EQUIVAE_SHARED_2D): name[i][j], name[i] + j.
template <class T, size_t M, size_t N, detail::Name kName = "">
class SharedArray2D {
 public:
  SharedRow<T, N> operator[](long long i) {
    return SharedRows<T, M, N>(SharedPtr<T>(&data_[0][0], shadow_, M * N, 0, &kShape))[i];
  }

 private:
  static constexpr detail::SharedShape kShape{kName.s, 2, {N, 0}};
  T data_[M][N];
  detail::SharedWord shadow_[M * N];
};

// `__shared__ T name[L][M][N]` under the race check (EQUIVAE_SHARED_3D): name[s][i][j],
// name[s][i] + j, and name[s] where the kernel takes a `T (*)[N]`.
template <class T, size_t L, size_t M, size_t N, detail::Name kName = "">
class SharedArray3D {
 public:
  SharedRows<T, M, N> operator[](long long s) {
    const SharedPtr<T> all(&data_[0][0][0], shadow_, L * M * N, 0, &kShape);
    if (s < 0 || size_t(s) >= L)
      all.outer_out_of_bounds(s, L, M * N, "__shared__ array (first index)");
    return SharedRows<T, M, N>(all + s * (long long)(M * N));
  }

 private:
  static constexpr detail::SharedShape kShape{kName.s, 3, {M, N}};
  T data_[L][M][N];
  detail::SharedWord shadow_[L * M * N];
};

// The block's dynamic shared memory as a checked T array (shadowed per 4-byte word; an
// element is tracked on its first word). `span + k` offsets it, like a pointer.
template <class T>
class SharedSpan {
 public:
  explicit SharedSpan(detail::SharedBuffer b, size_t offset = 0) : b_(b), offset_(offset) {}
  SharedRef<T> operator[](long long i) const {
    const size_t count = (b_.bytes - offset_) / sizeof(T);
    const size_t byte = offset_ + size_t(i) * sizeof(T);
    const detail::SharedSite site{"dynamic shared memory",
                                  size_t(i),
                                  count,
                                  sizeof(T),
                                  byte / 4,
                                  (byte + sizeof(T) + 3) / 4 - byte / 4};
    if (i < 0 || size_t(i) >= count) detail::shared_out_of_bounds(site, i);
    return SharedRef<T>(reinterpret_cast<T*>(b_.data + byte), &b_.shadow[byte / 4], site);
  }
  SharedSpan operator+(long long k) const {
    const long long at = (long long)offset_ + k * (long long)sizeof(T);
    if (at < 0 || size_t(at) > b_.bytes) {
      const detail::SharedSite site{"dynamic shared memory (pointer arithmetic)", size_t(k),
                                    (b_.bytes - offset_) / sizeof(T), sizeof(T), size_t(at) / 4};
      detail::shared_out_of_bounds(site, k);
    }
    return SharedSpan(b_, size_t(at));
  }
  size_t size() const { return (b_.bytes - offset_) / sizeof(T); }

 private:
  detail::SharedBuffer b_;
  size_t offset_;
};

template <class T>
inline SharedSpan<T> dynamic_shared() {
  return SharedSpan<T>(detail::dynamic_shared_buffer());
}

namespace detail {

template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>,
                "warp shuffles move types of at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
inline void check_width(int width) {
  if (width <= 0 || width > 32 || (width & (width - 1)))
    fail("warp shuffle width must be a power of two in [1, 32]");
}

}  // namespace detail

// A test's view of the launches: called with each kernel's name and stream before it runs, on
// the launching thread (empty: none). The emulator runs every launch at once whatever its
// stream, so which stream a kernel was given is what shows where a GPU would run it.
using LaunchObserver = std::function<void(const char* kernel, cudaStream_t stream)>;
void set_launch_observer(LaunchObserver observer);
namespace detail {
const LaunchObserver& launch_observer();
}  // namespace detail

// The emulator's kernel launch (kernels/cuda/launch.h wraps it). Arguments are converted to
// the kernel's parameter types once, as a CUDA launch does, and every thread receives copies.
// `cooperative`: every block runs at once (cudaLaunchAttributeCooperative's guarantee).
template <class... P, class... A>
void launch_grid(bool cooperative, const char* name, void (*kernel)(P...), dim3 grid, dim3 block,
                 size_t shmem, cudaStream_t stream, A&&... args) {
  if (const LaunchObserver& observe = detail::launch_observer()) observe(name, stream);
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of args");
  using Params = std::tuple<std::decay_t<P>...>;
  Params params(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
  struct Ctx {
    void (*kernel)(P...);
    Params* params;
  } ctx{kernel, &params};
  detail::run_grid(
      name, grid, block, shmem,
      [](void* c) {
        Ctx* x = static_cast<Ctx*>(c);
        std::apply(x->kernel, *x->params);
      },
      &ctx, cooperative);
}
template <class... P, class... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t shmem,
            cudaStream_t stream, A&&... args) {
  launch_grid(false, name, kernel, grid, block, shmem, stream, std::forward<A>(args)...);
}

inline void* dynamic_shared_memory() {
  return detail::dynamic_shared_memory();
}

}  // namespace emu

// ---- synchronisation
inline void __syncthreads() {
  emu::detail::syncthreads();
}
inline int __syncthreads_count(int p) {
  return emu::detail::syncthreads_combine(p, 0);
}
inline int __syncthreads_and(int p) {
  return emu::detail::syncthreads_combine(p, 1);
}
inline int __syncthreads_or(int p) {
  return emu::detail::syncthreads_combine(p, 2);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::detail::syncwarp(mask);
}
inline void __threadfence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence_block() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline unsigned __activemask() {
  return emu::detail::active_mask();
}

// ---- warp shuffles (CUDA's lane arithmetic, sub-warp `width` included). shfl.sync reads only
// bits 4:0 of the lane / offset operand, so an offset of 33 is an offset of 1.
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  emu::detail::check_width(width);
  const int lane = int(emu::detail::lane_id());
  const int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
  return emu::detail::from_bits<T>(
      emu::detail::warp_exchange(mask, emu::detail::to_bits(var), src));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  emu::detail::check_width(width);
  const int lane = int(emu::detail::lane_id()), d = int(delta & 31u);
  const int src = (lane & (width - 1)) + d < width ? lane + d : lane;
  return emu::detail::from_bits<T>(
      emu::detail::warp_exchange(mask, emu::detail::to_bits(var), src));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  emu::detail::check_width(width);
  const int lane = int(emu::detail::lane_id()), d = int(delta & 31u);
  const int src = (lane & (width - 1)) >= d ? lane - d : lane;
  return emu::detail::from_bits<T>(
      emu::detail::warp_exchange(mask, emu::detail::to_bits(var), src));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  emu::detail::check_width(width);
  const int lane = int(emu::detail::lane_id());
  int src = lane ^ (lane_mask & 31);
  if (src >= (lane & ~(width - 1)) + width) src = lane;  // later groups: own value
  return emu::detail::from_bits<T>(
      emu::detail::warp_exchange(mask, emu::detail::to_bits(var), src));
}

// ---- votes
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return emu::detail::warp_ballot(mask, predicate != 0);
}
inline int __any_sync(unsigned mask, int predicate) {
  return emu::detail::warp_ballot(mask, predicate != 0) != 0;
}
inline int __all_sync(unsigned mask, int predicate) {
  return emu::detail::warp_ballot(mask, predicate == 0) == 0;
}

// ---- atomics (return the old value, like CUDA's)
namespace emu::detail {
template <class T>
inline std::atomic_ref<T> ref(T* p) {
  return std::atomic_ref<T>(*p);
}
template <class T, class F>
inline T atomic_update(T* p, F f) {
  std::atomic_ref<T> r(*p);
  T old = r.load(std::memory_order_relaxed);
  while (!r.compare_exchange_weak(old, f(old), std::memory_order_relaxed)) {
  }
  return old;
}
}  // namespace emu::detail
inline float atomicAdd(float* p, float v) {
  return emu::detail::ref(p).fetch_add(v);
}
inline double atomicAdd(double* p, double v) {
  return emu::detail::ref(p).fetch_add(v);
}
inline int atomicAdd(int* p, int v) {
  return emu::detail::ref(p).fetch_add(v);
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  return emu::detail::ref(p).fetch_add(v);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return emu::detail::ref(p).fetch_add(v);
}
inline int atomicSub(int* p, int v) {
  return emu::detail::ref(p).fetch_sub(v);
}
inline unsigned atomicSub(unsigned* p, unsigned v) {
  return emu::detail::ref(p).fetch_sub(v);
}
template <class T>
inline T atomicExch(T* p, T v) {
  return emu::detail::ref(p).exchange(v);
}
template <class T>
inline T atomicCAS(T* p, T compare, T value) {
  emu::detail::ref(p).compare_exchange_strong(compare, value);
  return compare;  // the old value either way
}
template <class T>
inline T atomicMax(T* p, T v) {
  static_assert(std::is_integral_v<T>, "CUDA's atomicMax is for integers");
  return emu::detail::atomic_update(p, [v](T old) { return old < v ? v : old; });
}
template <class T>
inline T atomicMin(T* p, T v) {
  static_assert(std::is_integral_v<T>, "CUDA's atomicMin is for integers");
  return emu::detail::atomic_update(p, [v](T old) { return v < old ? v : old; });
}
template <class T>
inline T atomicAnd(T* p, T v) {
  return emu::detail::ref(p).fetch_and(v);
}
template <class T>
inline T atomicOr(T* p, T v) {
  return emu::detail::ref(p).fetch_or(v);
}
template <class T>
inline T atomicXor(T* p, T v) {
  return emu::detail::ref(p).fetch_xor(v);
}

// ---- loads and math intrinsics (libm; the GPU's fast variants are a few ulp off these)
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T __ldcg(const T* p) {  // the GPU's load that skips L1: here an ordinary load
  return *p;
}
// glibc's math.h already declares (but libm does not export) __expf, __logf ...: name them
// through macros so no definition clashes with those declarations.
#define __expf(x) ::expf(x)
#define __exp10f(x) ::exp10f(x)
#define __logf(x) ::logf(x)
#define __log2f(x) ::log2f(x)
#define __log10f(x) ::log10f(x)
#define __sinf(x) ::sinf(x)
#define __cosf(x) ::cosf(x)
#define __tanf(x) ::tanf(x)
#define __powf(x, y) ::powf(x, y)
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline double rsqrt(double x) {
  return 1.0 / std::sqrt(x);
}
inline float __frsqrt_rn(float x) {
  return 1.0f / std::sqrt(x);
}
inline float __fsqrt_rn(float x) {
  return std::sqrt(x);
}
inline float __frcp_rn(float x) {
  return 1.0f / x;
}
inline float __saturatef(float x) {
  return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
}
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fmaf_rn(float a, float b, float c) {
  return std::fma(a, b, c);
}
inline double __dadd_rn(double a, double b) {
  return a + b;
}
inline double __dmul_rn(double a, double b) {
  return a * b;
}
inline double __fma_rn(double a, double b, double c) {
  return std::fma(a, b, c);
}
inline int __float_as_int(float x) {
  return std::bit_cast<int>(x);
}
inline unsigned __float_as_uint(float x) {
  return std::bit_cast<unsigned>(x);
}
inline float __int_as_float(int x) {
  return std::bit_cast<float>(x);
}
inline float __uint_as_float(unsigned x) {
  return std::bit_cast<float>(x);
}
inline long long __double_as_longlong(double x) {
  return std::bit_cast<long long>(x);
}
inline double __longlong_as_double(long long x) {
  return std::bit_cast<double>(x);
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __popcll(unsigned long long x) {
  return __builtin_popcountll(x);
}
inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz(unsigned(x));
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
inline int __ffsll(long long x) {
  return __builtin_ffsll(x);
}
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned __umulhi(unsigned a, unsigned b) {
  return unsigned((uint64_t(a) * b) >> 32);
}
