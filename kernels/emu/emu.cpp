// The emulator's runtime: one Boost.Context fiber per CUDA thread, a scheduler per block that
// resumes fibers in a freshly shuffled order after every barrier, and deadlock detection.
// The system headers come first, before emu.h defines CUDA's keywords as macros.
// clang-format off
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <new>
#include <sstream>
#include <thread>
#include <vector>

#include <boost/context/fiber.hpp>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "kernels/emu/emu.h"
// clang-format on

thread_local uint3 threadIdx{0, 0, 0};
thread_local uint3 blockIdx{0, 0, 0};
thread_local uint3 blockDim{1, 1, 1};
thread_local uint3 gridDim{1, 1, 1};

namespace emu {
namespace {

namespace ctx = boost::context;

std::atomic<uint64_t> g_seed{0x5EED};
std::atomic<uint64_t> g_launch{0};
std::atomic<size_t> g_stack_size{64 << 10};
// On unless the environment says EQUIVAE_EMU_RACE_CHECK=0 (set_race_check overrides).
bool race_check_from_environment() {
  const char* v = std::getenv("EQUIVAE_EMU_RACE_CHECK");
  return !(v && std::strcmp(v, "0") == 0);
}
std::atomic<bool> g_race_check{race_check_from_environment()};
struct AtomicStats {
  std::atomic<uint64_t> launches{0}, blocks{0}, threads{0}, block_barriers{0}, warp_syncs{0};
} g_stats;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Fiber stacks: mmap-ed with a PROT_NONE guard page below, recycled per OS thread (a block
// of 1024 threads needs 1024 of them; pages a fiber never touches are never committed).
class StackPool {
 public:
  StackPool() : page_(size_t(sysconf(_SC_PAGESIZE))) {}
  ~StackPool() {
    for (const Stack& s : free_) unmap(s);
  }
  ctx::stack_context allocate() {
    const size_t want = (g_stack_size.load() + page_ - 1) / page_ * page_;
    while (!free_.empty()) {
      Stack s = free_.back();
      free_.pop_back();
      if (s.size == want) {
#if defined(__SANITIZE_ADDRESS__)
        // A fiber unwound by an exception (an emu::Error in a kernel) leaves its frames'
        // poisoning behind; the next fiber on this stack would trip over it.
        __asan_unpoison_memory_region(s.base + page_, s.size);
#endif
        return context_of(s);
      }
      unmap(s);
    }
    void* base = mmap(nullptr, want + page_, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) throw std::bad_alloc();
    mprotect(base, page_, PROT_NONE);
#if defined(__SANITIZE_ADDRESS__)
    // Memory mapped again where a stack unwound by an exception was may keep its poisoning.
    __asan_unpoison_memory_region(static_cast<char*>(base) + page_, want);
#endif
    return context_of({static_cast<char*>(base), want});
  }
  void deallocate(ctx::stack_context& sc) noexcept {
    free_.push_back({static_cast<char*>(sc.sp) - sc.size - page_, sc.size});
  }

 private:
  struct Stack {
    char* base;  // start of the mapping (the guard page)
    size_t size;
  };
  ctx::stack_context context_of(Stack s) const {
    ctx::stack_context sc;
    sc.size = s.size;
    sc.sp = s.base + page_ + s.size;  // stacks grow down from the top
    return sc;
  }
  void unmap(const Stack& s) const {
#if defined(__SANITIZE_ADDRESS__)
    __asan_unpoison_memory_region(s.base + page_, s.size);  // no poisoning outlives the stack
#endif
    munmap(s.base, s.size + page_);
  }
  size_t page_;
  std::vector<Stack> free_;
};

struct PoolAllocator {
  StackPool* pool;
  char** lowest = nullptr;  // where to note the stack's lowest address (for unpoison_below)
  ctx::stack_context allocate() {
    ctx::stack_context sc = pool->allocate();
    if (lowest) *lowest = static_cast<char*>(sc.sp) - sc.size;
    return sc;
  }
  void deallocate(ctx::stack_context& sc) noexcept { pool->deallocate(sc); }
};

// Frames an exception unwound leave their redzones poisoned below the catching frame: ASan
// would clear them (__asan_handle_no_return) but cannot on a fiber's stack, which it does
// not know, and the unwinder's own frames of the next throw land there (a false
// stack-buffer-overflow). Clears the fiber's stack below the caller's frame.
[[maybe_unused]] inline void unpoison_below([[maybe_unused]] char* lowest,
                                            [[maybe_unused]] void* frame) {
#if defined(__SANITIZE_ADDRESS__)
  if (lowest && static_cast<char*>(frame) > lowest)
    __asan_unpoison_memory_region(lowest, size_t(static_cast<char*>(frame) - lowest));
#endif
}

enum class State : uint8_t { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Thread {
  ctx::fiber fiber;  // the CUDA thread, while suspended
  ctx::fiber sched;  // the scheduler, while the thread runs
  uint3 idx{};
  unsigned linear = 0;
  State state = State::Ready;
  unsigned mask = 0;  // of the warp barrier it waits at
  uint64_t slot = 0;  // value published to a shuffle / vote
  std::exception_ptr error;
  char* stack_lowest = nullptr;  // of its fiber's stack
};

struct BlockRun {
  const char* name = "";
  detail::Body body = nullptr;
  void* ctx = nullptr;
  dim3 dims;
  unsigned n = 0;
  std::vector<Thread> threads;
  std::vector<unsigned> runnable, now, later;
  std::vector<unsigned char> dynamic_shared;
  std::vector<detail::SharedWord> dynamic_shadow;  // one per 4-byte word of dynamic_shared
  std::vector<uint32_t> warp_sync;                 // per warp: full-warp syncs completed
  uint64_t rng = 0;
  uint64_t slow_warps = 0;  // bit w % 64: warp w is slow in this phase
  struct {
    bool pending = false;
    detail::SharedSite site{};
    unsigned thread = 0;
  } uninitialised;  // the phase's first read of a word the block had not written
};

thread_local StackPool t_pool;
thread_local BlockRun* t_run = nullptr;
thread_local Thread* t_self = nullptr;

std::string where(const BlockRun& r) {
  std::ostringstream s;
  s << "kernel '" << r.name << "' block (" << blockIdx.x << "," << blockIdx.y << "," << blockIdx.z
    << ") of grid (" << gridDim.x << "," << gridDim.y << "," << gridDim.z << "), block dims ("
    << r.dims.x << "," << r.dims.y << "," << r.dims.z << ")";
  return s.str();
}

std::string thread_name(const BlockRun& r, unsigned linear) {
  std::ostringstream s;
  s << "thread (" << linear % r.dims.x << "," << linear / r.dims.x % r.dims.y << ","
    << linear / (r.dims.x * r.dims.y) << ")";
  return s.str();
}

// " (array 'As')": a named static array, for the message's headline.
std::string array_name(const detail::SharedSite& site) {
  return site.shape && *site.shape->name ? std::string(" (array '") + site.shape->name + "')" : "";
}

// "word W of KIND (element I of C, B-byte elements: As[i][j][k])".
std::string shared_word(const detail::SharedSite& site) {
  std::ostringstream s;
  s << "word " << site.word << " of " << site.kind << " (element " << site.index << " of "
    << site.count << ", " << site.elem_bytes << "-byte elements";
  if (const detail::SharedShape* a = site.shape; a && *a->name) {
    s << ": " << a->name;
    const size_t i = site.index;
    if (a->rank == 1) s << "[" << i << "]";
    if (a->rank == 2) s << "[" << i / a->inner[0] << "][" << i % a->inner[0] << "]";
    if (a->rank == 3)
      s << "[" << i / (a->inner[0] * a->inner[1]) << "][" << i / a->inner[1] % a->inner[0] << "]["
        << i % a->inner[1] << "]";
  }
  s << ")";
  return s.str();
}

std::string uninitialised_read_message(const BlockRun& r) {
  const detail::SharedSite& site = r.uninitialised.site;
  std::ostringstream s;
  s << "emu: read of uninitialised shared memory" << array_name(site) << " in " << where(r) << ": "
    << thread_name(r, r.uninitialised.thread) << " read " << shared_word(site)
    << ", which no thread of this block had written (on a GPU it holds whatever an earlier block "
       "or kernel left there)";
  return s.str();
}

Thread& self(const char* what) {
  if (!t_self) {
    std::string m = std::string("emu: ") + what + " called outside a kernel";
    throw Error(m);
  }
  return *t_self;
}

void suspend(Thread& th, State s) {
  th.state = s;
  th.sched = std::move(th.sched).resume();
}

void resume(BlockRun& r, unsigned i) {
  Thread& th = r.threads[i];
  th.state = State::Ready;
  t_self = &th;
  threadIdx = th.idx;
  detail::t_race.thread = i;
  th.fiber = std::move(th.fiber).resume();
  t_self = nullptr;
}

void warp_wait(unsigned mask) {
  Thread& th = self("a warp-synchronous primitive");
  const unsigned lane = th.linear & 31u;
  if (!((mask >> lane) & 1u)) {
    std::ostringstream s;
    s << "emu: lane " << lane << " of warp " << (th.linear >> 5)
      << " calls a warp-synchronous primitive with a mask that excludes it (0x" << std::hex << mask
      << ")";
    detail::fail(s.str().c_str());
  }
  th.mask = mask;
  g_stats.warp_syncs.fetch_add(1, std::memory_order_relaxed);
  suspend(th, State::AtWarpBarrier);
}

// Releases every warp group whose lanes (those of its mask that exist) all wait at a warp
// barrier with the same mask. Returns whether any was released.
bool release_warp_groups(BlockRun& r) {
  bool any = false;
  for (unsigned base = 0; base < r.n; base += 32) {
    const unsigned lanes = std::min(32u, r.n - base);
    for (unsigned l = 0; l < lanes; ++l) {
      const Thread& t = r.threads[base + l];
      if (t.state != State::AtWarpBarrier) continue;
      const unsigned m = t.mask;
      bool complete = true;
      for (unsigned k = 0; k < lanes && complete; ++k)
        if ((m >> k) & 1u) {
          const Thread& u = r.threads[base + k];
          complete = u.state == State::AtWarpBarrier && u.mask == m;
        }
      if (!complete) continue;
      for (unsigned k = 0; k < lanes; ++k)
        if ((m >> k) & 1u) {
          r.threads[base + k].state = State::Ready;
          r.runnable.push_back(base + k);
        }
      // A sync of every lane of the warp orders the lanes' shared accesses (race check).
      const unsigned all = lanes == 32 ? ~0u : (1u << lanes) - 1u;
      if ((m & all) == all) ++r.warp_sync[base / 32];
      any = true;
    }
  }
  return any;
}

std::string describe_stuck(const BlockRun& r) {
  unsigned done = 0, at_block = 0, at_warp = 0;
  for (const Thread& t : r.threads) {
    done += t.state == State::Done;
    at_block += t.state == State::AtBlockBarrier;
    at_warp += t.state == State::AtWarpBarrier;
  }
  std::ostringstream s;
  s << "emu: deadlock in " << where(r) << ": ";
  if (at_warp == 0) {
    s << at_block << " of " << r.n << " threads wait at __syncthreads() while " << done
      << " have exited (a barrier inside a divergent branch, or an early return before it)";
    return s.str();
  }
  s << at_warp << " threads wait at warp-synchronous primitives (shuffle/vote/__syncwarp), "
    << at_block << " at __syncthreads(), " << done << " have exited; ";
  for (const Thread& t : r.threads)
    if (t.state == State::AtWarpBarrier) {
      const unsigned base = t.linear & ~31u;
      s << "e.g. lane " << (t.linear & 31u) << " of warp " << (t.linear >> 5)
        << " waits with mask 0x" << std::hex << t.mask << std::dec << " for lanes:";
      for (unsigned k = 0; k < 32 && base + k < r.n; ++k)
        if ((t.mask >> k) & 1u) {
          const Thread& u = r.threads[base + k];
          if (u.state == State::AtWarpBarrier && u.mask == t.mask) continue;
          s << " " << k
            << (u.state == State::Done             ? "(exited)"
                : u.state == State::AtBlockBarrier ? "(at __syncthreads)"
                                                   : "(other warp mask)");
        }
      break;
    }
  return s.str();
}

[[noreturn]] void abort_block(BlockRun& r, const std::string& message) {
  // Destroying a suspended fiber unwinds its stack (boost's forced_unwind).
  for (Thread& t : r.threads) t.fiber = ctx::fiber{};
  throw Error(message);
}

void run_block(BlockRun& r) {
  for (unsigned z = 0, i = 0; z < r.dims.z; ++z)
    for (unsigned y = 0; y < r.dims.y; ++y)
      for (unsigned x = 0; x < r.dims.x; ++x, ++i) {
        Thread& t = r.threads[i];
        t.idx = {x, y, z};
        t.linear = i;
        t.state = State::Ready;
        t.mask = 0;
        t.slot = 0;
        t.error = nullptr;
        t.fiber = ctx::fiber(std::allocator_arg, PoolAllocator{&t_pool, &t.stack_lowest},
                             [th = &t, run = &r](ctx::fiber&& sched) {
                               th->sched = std::move(sched);
                               try {
                                 run->body(run->ctx);
                               } catch (const ctx::detail::forced_unwind&) {
                                 unpoison_below(th->stack_lowest, __builtin_frame_address(0));
                                 throw;
                               } catch (...) {
                                 unpoison_below(th->stack_lowest, __builtin_frame_address(0));
                                 th->error = std::current_exception();
                               }
                               th->state = State::Done;
                               return std::move(th->sched);
                             });
      }
  if (!r.dynamic_shared.empty()) std::fill(r.dynamic_shared.begin(), r.dynamic_shared.end(), 0xFF);
  // A new block starts a new barrier phase: every shadow word recorded before is stale, and
  // every word written before counts as unwritten.
  detail::t_race.block_start = ++detail::t_race.phase;
  std::fill(r.warp_sync.begin(), r.warp_sync.end(), 0u);

  r.runnable.resize(r.n);
  for (unsigned i = 0; i < r.n; ++i) r.runnable[i] = i;
  r.slow_warps = splitmix64(r.rng);
  const unsigned warps = (r.n + 31) / 32;
  for (;;) {
    // A fresh order every phase (Fisher-Yates).
    for (size_t i = r.runnable.size(); i > 1; --i)
      std::swap(r.runnable[i - 1], r.runnable[splitmix64(r.rng) % i]);
    // Random delays, as independent warps have on the GPU: in each phase (between block
    // barriers) about half of the warps are slow and run only when no fast thread can; on
    // top of that any warp sits out a pass with probability 1/4. Fast warps thus run ahead
    // by many warp-synchronous steps, and a missing barrier between warps shows up even
    // where each warp must pass shuffles or votes before it reaches the conflicting access.
    r.now.clear();
    r.later.clear();
    if (warps > 1) {
      const uint64_t sitting_out = splitmix64(r.rng) & splitmix64(r.rng);
      auto bit = [](uint64_t mask, unsigned i) { return ((mask >> ((i / 32) % 64)) & 1u) != 0; };
      for (unsigned i : r.runnable)
        (bit(r.slow_warps | sitting_out, i) ? r.later : r.now).push_back(i);
      if (r.now.empty()) {  // fast warps that sat out go first, the slow ones last
        for (unsigned i : r.later)
          if (!bit(r.slow_warps, i)) r.now.push_back(i);
        if (r.now.empty())
          r.now.swap(r.later);
        else
          std::erase_if(r.later, [&](unsigned i) { return !bit(r.slow_warps, i); });
      }
    } else {
      r.now.swap(r.runnable);
    }
    for (unsigned i : r.now) {
      resume(r, i);
      if (Thread& t = r.threads[i]; t.error) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(t.error);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        std::ostringstream s;
        s << what << " [in " << where(r) << ", thread (" << t.idx.x << "," << t.idx.y << ","
          << t.idx.z << ")]";
        abort_block(r, s.str());
      }
    }
    r.runnable.swap(r.later);  // the held-back threads run in the next pass
    if (release_warp_groups(r) || !r.runnable.empty()) continue;
    unsigned done = 0, at_block = 0;
    for (const Thread& t : r.threads) {
      done += t.state == State::Done;
      at_block += t.state == State::AtBlockBarrier;
    }
    const bool phase_over = done == r.n || (done == 0 && at_block == r.n);
    // A read of an unwritten word that no racing write explained by the phase's end is the bug.
    if (phase_over && r.uninitialised.pending) abort_block(r, uninitialised_read_message(r));
    if (done == r.n) break;
    if (done == 0 && at_block == r.n) {
      g_stats.block_barriers.fetch_add(1, std::memory_order_relaxed);
      ++detail::t_race.phase;            // a new barrier phase for the race check
      r.slow_warps = splitmix64(r.rng);  // a new phase: new slow warps
      for (unsigned i = 0; i < r.n; ++i) r.runnable.push_back(i);
      continue;
    }
    abort_block(r, describe_stuck(r));
  }
  for (Thread& t : r.threads) t.fiber = ctx::fiber{};  // already finished: frees the stacks
}

}  // namespace

void set_schedule_seed(uint64_t seed) {
  g_seed = seed;
  g_launch = 0;
}
uint64_t schedule_seed() {
  return g_seed;
}
void set_race_check(bool on) {
  g_race_check = on;
}
bool race_check() {
  return g_race_check;
}
void set_fiber_stack_size(size_t bytes) {
  g_stack_size = std::max<size_t>(bytes, 16 << 10);
}
Stats stats() {
  return {g_stats.launches.load(), g_stats.blocks.load(), g_stats.threads.load(),
          g_stats.block_barriers.load(), g_stats.warp_syncs.load()};
}
void reset_stats() {
  g_stats.launches = 0, g_stats.blocks = 0, g_stats.threads = 0;
  g_stats.block_barriers = 0, g_stats.warp_syncs = 0;
}

namespace detail {

thread_local RaceClock t_race;

void fail(const char* what) {
  throw Error(what);
}

void shared_race(const SharedSite& site, unsigned other, bool other_wrote, const char* this_does) {
  const BlockRun& r = *t_run;
  std::ostringstream s;
  s << "emu: shared-memory race" << array_name(site) << " in " << where(r) << ": "
    << thread_name(r, other) << (other_wrote ? " wrote " : " read ") << shared_word(site) << " and "
    << thread_name(r, t_race.thread) << " " << this_does
    << " it in the same barrier phase, with no __syncthreads() (nor, within a warp, a "
       "full-warp __syncwarp/shuffle/vote) between them";
  throw Error(s.str());
}

void shared_in_flight(const SharedSite& site, unsigned issuer, const char* this_does) {
  const BlockRun& r = *t_run;
  std::ostringstream s;
  s << "emu: shared-memory race" << array_name(site) << " in " << where(r) << ": "
    << thread_name(r, t_race.thread) << " " << this_does << " " << shared_word(site)
    << " while the cp.async that " << (issuer == t_race.thread ? "it" : thread_name(r, issuer))
    << " issued to it is in flight (no cp.async wait of the issuing thread covers it yet"
    << (issuer == t_race.thread ? ")" : "; other threads also need a __syncthreads() after it)");
  throw Error(s.str());
}

void shared_out_of_bounds(const SharedSite& site, long long index) {
  std::ostringstream s;
  s << "emu: out-of-bounds shared-memory access" << array_name(site);
  if (t_run) s << " in " << where(*t_run) << " by " << thread_name(*t_run, t_race.thread);
  s << ": index " << index << " of " << site.kind << " of " << site.count << " elements ("
    << site.elem_bytes << " bytes each)";
  throw Error(s.str());
}

void note_uninitialised_read(const SharedSite& site) {
  auto& u = t_run->uninitialised;
  if (!u.pending) u.pending = true, u.site = site, u.thread = t_race.thread;
}

SharedBuffer dynamic_shared_buffer() {
  self("dynamic shared memory");
  return {t_run->dynamic_shared.data(), t_run->dynamic_shadow.data(), t_run->dynamic_shared.size()};
}

LaunchObserver& observer_slot() {
  static LaunchObserver observer;
  return observer;
}
const LaunchObserver& launch_observer() {
  return observer_slot();
}

namespace {

// A launch's block state (threads, dynamic shared memory and their shadows), made once per
// launch on an OS thread and reused by every block it runs there (run_block resets it).
void prepare_run(BlockRun& r, const char* name, dim3 block, size_t shmem, Body body, void* ctx) {
  r.name = name;
  r.body = body;
  r.ctx = ctx;
  r.dims = block;
  r.n = block.x * block.y * block.z;
  r.threads.resize(r.n);
  r.dynamic_shared.resize(shmem);
  r.dynamic_shadow.assign((shmem + 3) / 4, detail::SharedWord{});
  r.warp_sync.assign((r.n + 31) / 32, 0u);
}

// One block of a launch, run to its end on the calling OS thread (its fibers, its shared memory).
void run_one_block(BlockRun& r, dim3 grid, uint64_t launch, uint64_t seed, uint3 index) {
  struct Scope {
    explicit Scope(BlockRun* run) {
      t_run = run;
      t_race.on = g_race_check.load();
      t_race.warp_sync = run->warp_sync.data();
    }
    ~Scope() {
      t_run = nullptr;
      t_race.warp_sync = nullptr;  // shared accesses outside a launch are not tracked
    }
  } scope(&r);
  gridDim = {grid.x, grid.y, grid.z};
  blockDim = {r.dims.x, r.dims.y, r.dims.z};
  blockIdx = index;
  uint64_t s = seed ^ (launch * 0xD1B54A32D192ED03ull);
  s = splitmix64(s) ^ ((uint64_t(index.z) * 65536 + index.y) << 32 | index.x);
  r.rng = splitmix64(s);
  run_block(r);
  g_stats.blocks.fetch_add(1, std::memory_order_relaxed);
  g_stats.threads.fetch_add(r.n, std::memory_order_relaxed);
}

// A cooperative launch: its blocks are all alive at once, one OS thread each, so that they can
// meet at grid-wide barriers (kernels/cuda/grid_sync.cuh), but one runs at a time: a baton
// passes, to a block drawn from the schedule's generator, only when the block holding it
// spin-waits at a grid barrier (grid_spin_wait) or returns. So a run is as reproducible as a
// block's schedule, and a missing grid barrier shows: the first block runs on past it before
// any other block has started.
struct CooperativeRun {
  std::mutex m;
  std::condition_variable cv;
  unsigned holder = 0;               // the block that may run
  std::vector<uint8_t> done;         // per block: returned (or never to start)
  std::vector<uint64_t> spin_phase;  // per block: its barrier phase at its latest spin-wait
  // Progress: bumped when a block returns or spin-waits at a barrier it had not waited at
  // before. Only the block holding the run can release a barrier (by arriving last), and it
  // then runs on until it returns or waits at its next barrier, which bumps the epoch; so when
  // every live block has spin-waited since the last bump, none can ever move on: a deadlock.
  uint64_t epoch = 0;
  std::vector<uint64_t> spun;  // per block: the epoch of its latest spin-wait (~0: none)
  bool failed = false;         // a block threw: the others stop
  uint64_t rng = 0;

  // Hands the run on from block `from` (lock held): to another live block that has not waited
  // since the last progress if there is one (one the progress may have released), else to any.
  void pass(unsigned from) {
    std::vector<unsigned> fresh, waiting;
    for (unsigned b = 0; b < done.size(); ++b)
      if (!done[b] && b != from) (spun[b] == epoch ? waiting : fresh).push_back(b);
    const std::vector<unsigned>& pick = fresh.empty() ? waiting : fresh;
    if (!pick.empty()) holder = pick[splitmix64(rng) % pick.size()];
    cv.notify_all();
  }
  bool deadlocked() const {
    for (unsigned b = 0; b < done.size(); ++b)
      if (!done[b] && spun[b] != epoch) return false;
    return true;
  }
  void wait_turn(std::unique_lock<std::mutex>& lock, unsigned block) {
    cv.wait(lock, [&] { return holder == block || failed; });
  }
};
thread_local CooperativeRun* t_cooperative = nullptr;
thread_local unsigned t_cooperative_block = 0;
// This block stopped because another failed (its error, wrapped by the block's report, is not
// the launch's).
thread_local bool t_cooperative_aborted = false;

[[noreturn]] void cooperative_abort() {
  t_cooperative_aborted = true;
  throw Error("emu: another block of this cooperative launch failed");
}

void run_cooperative(const char* name, dim3 grid, dim3 block_dims, size_t shmem, Body body,
                     void* ctx, uint64_t launch, uint64_t seed) {
  CooperativeRun run;
  const unsigned blocks = grid.x * grid.y * grid.z;
  run.done.assign(blocks, 0);
  run.spin_phase.assign(blocks, 0);
  run.spun.assign(blocks, ~uint64_t(0));
  run.rng = seed ^ (launch * 0x9E3779B97F4A7C15ull);
  run.holder = unsigned(splitmix64(run.rng) % blocks);
  std::vector<std::exception_ptr> errors(blocks);
  std::vector<uint8_t> aborted(blocks, 0);
  std::vector<std::thread> workers;
  workers.reserve(blocks);
  const auto block = [&](unsigned b) {
    t_cooperative = &run;
    t_cooperative_block = b;
    t_cooperative_aborted = false;
    bool start;
    {
      std::unique_lock<std::mutex> lock(run.m);
      run.wait_turn(lock, b);
      start = !run.failed;
    }
    try {
      if (start) {
        BlockRun r;
        prepare_run(r, name, block_dims, shmem, body, ctx);
        run_one_block(r, grid, launch, seed,
                      {b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y)});
      }
    } catch (...) {
      errors[b] = std::current_exception();
      aborted[b] = t_cooperative_aborted;
    }
    std::lock_guard<std::mutex> lock(run.m);
    if (errors[b]) run.failed = true;
    run.done[b] = 1;
    ++run.epoch;
    run.pass(b);
    t_cooperative = nullptr;
  };
  std::string not_started;
  for (unsigned b = 0; b < blocks && not_started.empty(); ++b) {
    try {
      workers.emplace_back(block, b);
    } catch (const std::exception& e) {  // the blocks started so far stop, then the launch fails
      not_started = e.what();
      std::lock_guard<std::mutex> lock(run.m);
      run.failed = true;
      run.cv.notify_all();
    }
  }
  for (std::thread& w : workers) w.join();
  if (!not_started.empty())
    throw Error(std::string("emu: kernel '") + name + "': cannot start a thread for each of the " +
                std::to_string(blocks) + " blocks of a cooperative launch: " + not_started);
  // The failing block's own error, not that of a block that stopped because of it.
  for (unsigned b = 0; b < blocks; ++b)
    if (errors[b] && !aborted[b]) std::rethrow_exception(errors[b]);
  for (unsigned b = 0; b < blocks; ++b)
    if (errors[b]) std::rethrow_exception(errors[b]);
}

}  // namespace

void run_grid(const char* name, dim3 grid, dim3 block, size_t shmem, Body body, void* ctx,
              bool cooperative) {
  if (t_run) throw Error(std::string("emu: kernel '") + name + "' launched from device code");
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  std::ostringstream bad;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    bad << "block (" << block.x << "," << block.y << "," << block.z
        << ") is not a valid CUDA block (at most 1024 threads; z at most 64)";
  else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7FFFFFFFu || grid.y > 65535 ||
           grid.z > 65535)
    bad << "grid (" << grid.x << "," << grid.y << "," << grid.z << ") is not a valid CUDA grid";
  else if (shmem > 48 * 1024)
    bad << shmem << " bytes of dynamic shared memory exceed the 48 KiB available without "
        << "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)";
  else if (cooperative && uint64_t(grid.x) * grid.y * grid.z > kMaxCooperativeBlocks)
    bad << "a cooperative grid of " << uint64_t(grid.x) * grid.y * grid.z
        << " blocks: the emulator runs at most " << kMaxCooperativeBlocks
        << " at once (a GPU: as many as fit on its SMs together)";
  if (!bad.str().empty())
    throw Error(std::string("emu: invalid launch of kernel '") + name + "': " + bad.str());

  const uint64_t launch = g_launch.fetch_add(1);
  const uint64_t seed = g_seed.load();
  g_stats.launches.fetch_add(1, std::memory_order_relaxed);
  if (cooperative) return run_cooperative(name, grid, block, shmem, body, ctx, launch, seed);
  BlockRun r;
  prepare_run(r, name, block, shmem, body, ctx);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) run_one_block(r, grid, launch, seed, {x, y, z});
}

void grid_spin_wait() {
  self("a grid-wide barrier");
  CooperativeRun* run = t_cooperative;
  if (!run) fail("emu: a grid-wide barrier in a kernel not launched cooperatively");
  const unsigned me = t_cooperative_block;
  std::unique_lock<std::mutex> lock(run->m);
  if (run->failed) cooperative_abort();
  const uint64_t phase = t_race.phase;  // a new barrier phase: this block moved on since it waited
  if (run->spin_phase[me] != phase) {
    run->spin_phase[me] = phase;
    ++run->epoch;
  }
  run->spun[me] = run->epoch;
  if (run->deadlocked()) {
    run->failed = true;
    run->cv.notify_all();
    fail(
        "emu: deadlock at a grid-wide barrier: the blocks still running wait for one that has "
        "returned (it left the kernel early, or skipped a barrier the others met)");
  }
  run->pass(me);
  run->wait_turn(lock, me);
  if (run->failed) cooperative_abort();
}

void syncthreads() {
  Thread& th = self("__syncthreads()");
  suspend(th, State::AtBlockBarrier);
}

int syncthreads_combine(int predicate, int how) {
  Thread& th = self("__syncthreads_count/and/or()");
  th.slot = predicate != 0;
  suspend(th, State::AtBlockBarrier);
  int count = 0;
  for (const Thread& t : t_run->threads) count += int(t.slot);
  suspend(th, State::AtBlockBarrier);
  const int n = int(t_run->n);
  return how == 0 ? count : how == 1 ? int(count == n) : int(count > 0);
}

void syncwarp(unsigned mask) {
  warp_wait(mask);
}

uint64_t warp_exchange(unsigned mask, uint64_t mine, int src_lane) {
  Thread& th = self("a warp shuffle");
  th.slot = mine;
  warp_wait(mask);
  const unsigned base = th.linear & ~31u;
  uint64_t value = ~uint64_t(0);  // an absent or non-participating source: undefined bits
  if (src_lane >= 0 && src_lane < 32 && ((mask >> src_lane) & 1u) &&
      base + unsigned(src_lane) < t_run->n)
    value = t_run->threads[base + unsigned(src_lane)].slot;
  warp_wait(mask);
  return value;
}

void warp_collective(const void* mine, void (*use)(const void* const* lanes, void* ctx),
                     void* ctx) {
  Thread& th = self("a warp-wide matrix operation");
  const unsigned base = th.linear & ~31u;
  if (base + 32 > t_run->n) fail("a warp-wide matrix operation needs all 32 lanes of the warp");
  th.slot = reinterpret_cast<uintptr_t>(mine);
  warp_wait(~0u);
  const void* lanes[32];
  for (unsigned k = 0; k < 32; ++k)
    lanes[k] = reinterpret_cast<const void*>(uintptr_t(t_run->threads[base + k].slot));
  use(lanes, ctx);
  warp_wait(~0u);
}

unsigned warp_ballot(unsigned mask, bool predicate) {
  Thread& th = self("a warp vote");
  th.slot = predicate;
  warp_wait(mask);
  const unsigned base = th.linear & ~31u;
  unsigned bits = 0;
  for (unsigned k = 0; k < 32 && base + k < t_run->n; ++k)
    if (((mask >> k) & 1u) && t_run->threads[base + k].slot) bits |= 1u << k;
  warp_wait(mask);
  return bits;
}

unsigned lane_id() {
  return self("laneid").linear & 31u;
}

unsigned active_mask() {
  const Thread& th = self("__activemask()");
  const unsigned base = th.linear & ~31u;
  unsigned bits = 0;
  for (unsigned k = 0; k < 32 && base + k < t_run->n; ++k)
    if (t_run->threads[base + k].state != State::Done) bits |= 1u << k;
  return bits;
}

void* dynamic_shared_memory() {
  self("dynamic shared memory");
  return t_run->dynamic_shared.empty() ? nullptr : t_run->dynamic_shared.data();
}

}  // namespace detail

void set_launch_observer(LaunchObserver observer) {
  detail::observer_slot() = std::move(observer);
}

}  // namespace emu
