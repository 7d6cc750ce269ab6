// The SIMT emulation behind simt.h: fibers, barriers, warp collectives, deferred cp.async, address checks.
#include "runtime/kernels/emu/simt.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

// AddressSanitizer must be told when the stack changes under it (the fibers' stacks are heap blocks), or it
// reports the fibers' frames as overflows of that block.
#if defined(__SANITIZE_ADDRESS__)
#define CPS_SIMT_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// ThreadSanitizer likewise keeps a shadow stack and a clock per execution context: each fiber is one of its fibers,
// switched to with synchronisation (a CTA's threads run one at a time on the launching thread). Creating one costs
// a large zeroed allocation, so they are pooled per host thread and reused from CTA to CTA; fiber_main and
// switch_context are left uninstrumented so that a finished fiber leaves no frame on its shadow stack.
#if defined(__SANITIZE_THREAD__)
#define CPS_SIMT_TSAN 1
#include <sanitizer/tsan_interface.h>
#define CPS_SIMT_NO_TSAN __attribute__((no_sanitize_thread))
#else
#define CPS_SIMT_NO_TSAN
#endif

#if defined(__x86_64__)
// A fiber switch that saves only what the System V ABI makes callee-saved (rbx, rbp, r12-r15, the MXCSR and x87
// control words): glibc's swapcontext also saves the signal mask with a system call each time, which made the
// emulation several times slower. cps_simt_switch(&save_sp, new_sp) stores this stack's pointer in save_sp and
// resumes the one in new_sp.
extern "C" void cps_simt_switch(void** save_sp, void* new_sp);
asm(R"(
.pushsection .text
.globl cps_simt_switch
.type cps_simt_switch, @function
cps_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cps_simt_switch, .-cps_simt_switch
.popsection
)");
#endif

namespace cpscope::simt {
namespace {

constexpr int kWarpSize = 32;
constexpr std::size_t kStackBytes = 128 * 1024;

struct Copy {
  void* dst;
  const void* src;
  int bytes, src_bytes;
};

// A suspended execution context: a stack pointer (x86-64) or a ucontext (elsewhere); under ASan the bounds of
// its stack (the scheduler's are learnt when the first fiber starts), under TSan its sanitizer fiber.
struct Context {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc{};
#endif
#if defined(CPS_SIMT_ASAN)
  const void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
#endif
#if defined(CPS_SIMT_TSAN)
  void* tsan_fiber = nullptr;  // from the pool for a fiber, the launching thread's own for the scheduler
#endif
};

struct Fiber {
  Context ctx;
  Dim3 tid;
  int linear = 0;
  bool done = false;
  bool failed = false;  // stopped by an error part-way through the kernel
  std::vector<std::vector<Copy>> groups;  // committed cp.async groups, oldest first
  std::vector<Copy> open;                 // issued since the last commit
};

enum class Coll : std::uint8_t { Syncwarp, Shfl, Ldmatrix, LdmatrixTrans, MmaBf16, MmaFp16 };
const char* coll_name(Coll c) {
  switch (c) {
    case Coll::Syncwarp: return "__syncwarp";
    case Coll::Shfl: return "__shfl_xor_sync";
    case Coll::Ldmatrix: return "ldmatrix.x4";
    case Coll::LdmatrixTrans: return "ldmatrix.x4.trans";
    case Coll::MmaBf16: return "mma.m16n8k16.bf16";
    case Coll::MmaFp16: return "mma.m16n8k16.f16";
  }
  return "?";
}

struct Warp {
  int arrived = 0;
  int at_barrier = 0;  // lanes waiting at __syncthreads
  unsigned gen = 0;
  Coll kind = Coll::Syncwarp;
  std::uint32_t in_u[kWarpSize][6];
  float in_f[kWarpSize][4];
  int in_i[kWarpSize];
  std::uint32_t out_u[kWarpSize][4];
  float out_f[kWarpSize][4];
};

struct Launch {
  Dim3 grid, block, cta;
  int threads = 0, live = 0;
  std::vector<unsigned char> smem;
  std::vector<Fiber> fibers;
  std::unique_ptr<char[]> stacks;
  std::vector<Warp> warps;
  int bar_arrived = 0;
  unsigned bar_gen = 0;
  Fiber* cur = nullptr;
  Context sched;
  const std::function<void()>* kernel = nullptr;
  std::vector<GlobalBuffer> globals;
  bool progress = false;
  std::string error;
};
Launch* g_launch = nullptr;
Options g_options;
std::vector<GlobalBuffer> g_registered;  // cudaMalloc'd buffers
// Launches from several host threads (the loopback transport's ranks) run one at a time, and the registry
// does not change under a running kernel.
std::mutex g_mutex;

CPS_SIMT_NO_TSAN void switch_context(Context& save, Context& to) {
#if defined(CPS_SIMT_ASAN)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, to.stack_bottom, to.stack_size);
#endif
#if defined(CPS_SIMT_TSAN)
  __tsan_switch_to_fiber(to.tsan_fiber, 0);
#endif
#if defined(__x86_64__)
  cps_simt_switch(&save.sp, to.sp);
#else
  swapcontext(&save.uc, &to.uc);
#endif
#if defined(CPS_SIMT_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

#if defined(CPS_SIMT_TSAN)
struct TsanFiberPool {
  std::vector<void*> free;
  ~TsanFiberPool() {
    for (void* f : free) __tsan_destroy_fiber(f);
  }
};
thread_local TsanFiberPool t_tsan_fibers;
#endif

// Gives back what a fiber's context holds beyond its stack (ThreadSanitizer's fiber state): to the pool when the
// fiber finished its kernel (its shadow stack is empty again), destroyed when it was stopped part-way.
void release_context(Context& c, bool finished) {
#if defined(CPS_SIMT_TSAN)
  if (c.tsan_fiber != nullptr) {
    if (finished) {
      t_tsan_fibers.free.push_back(c.tsan_fiber);
    } else {
      __tsan_destroy_fiber(c.tsan_fiber);
    }
  }
  c.tsan_fiber = nullptr;
#else
  (void)c;
  (void)finished;
#endif
}

void fiber_main();

// A fresh context on [stack, stack + bytes) that starts in fiber_main.
void make_context(Context& c, char* stack, std::size_t bytes) {
#if defined(CPS_SIMT_ASAN)
  // The previous CTA's fibers were abandoned mid-frame: their redzones must not outlive them.
  __asan_unpoison_memory_region(stack, bytes);
  c.stack_bottom = stack;
  c.stack_size = bytes;
#endif
#if defined(CPS_SIMT_TSAN)
  if (t_tsan_fibers.free.empty()) {
    c.tsan_fiber = __tsan_create_fiber(0);
  } else {
    c.tsan_fiber = t_tsan_fibers.free.back();
    t_tsan_fibers.free.pop_back();
  }
#endif
#if defined(__x86_64__)
  auto top = reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t{15};
  auto* w = reinterpret_cast<std::uint64_t*>(top);
  w[-1] = 0;                                            // fiber_main's return address: it never returns
  w[-2] = reinterpret_cast<std::uint64_t>(&fiber_main);  // where cps_simt_switch's ret goes
  for (int i = 3; i <= 8; ++i) w[-i] = 0;               // rbp, rbx, r12..r15
  std::uint32_t mxcsr;
  std::uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  w[-9] = mxcsr | static_cast<std::uint64_t>(fpucw) << 32;
  c.sp = &w[-9];
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fiber_main, 0);
#endif
}

Launch& L() {
  if (g_launch == nullptr || g_launch->cur == nullptr) throw std::logic_error("simt: CUDA built-in called outside simt::launch");
  return *g_launch;
}

std::string where() {
  const Launch& l = *g_launch;
  return "CTA (" + std::to_string(l.cta.x) + "," + std::to_string(l.cta.y) + "," + std::to_string(l.cta.z) +
         ") thread " + std::to_string(l.cur->linear) + ": ";
}

void yield() {
  Launch& l = *g_launch;
  switch_context(l.cur->ctx, l.sched);
}

// Thrown by fail() to unwind the failing thread's frames (so its temporaries are destroyed) up to fiber_main.
// Not a std::exception, so a kernel's own handlers of those do not catch it.
struct Abandon {};

// Records the first error and leaves this fiber for good (the scheduler stops the launch).
[[noreturn]] void fail(const std::string& msg) {
  Launch& l = *g_launch;
  if (l.error.empty()) l.error = where() + msg;
  throw Abandon{};
}

void release_barrier_if_complete() {
  Launch& l = *g_launch;
  if (l.bar_arrived > 0 && l.bar_arrived == l.live) {
    l.bar_arrived = 0;
    ++l.bar_gen;
    for (Warp& w : l.warps) w.at_barrier = 0;
  }
}

CPS_SIMT_NO_TSAN void fiber_main() {
#if defined(CPS_SIMT_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &g_launch->sched.stack_bottom, &g_launch->sched.stack_size);
#endif
  Launch& l = *g_launch;
  l.progress = true;
  bool failed = false;
  try {
    (*l.kernel)();
  } catch (const Abandon&) {
    failed = true;
  } catch (const std::exception& e) {
    if (l.error.empty()) l.error = where() + "exception in the kernel: " + e.what();
    failed = true;
  }
  l.cur->done = true;
  l.cur->failed = failed;
  if (!failed) {  // after a failure the scheduler sees the error and stops the launch
    --l.live;
    l.progress = true;
    release_barrier_if_complete();  // an exited thread no longer holds up __syncthreads
  }
  for (;;) switch_context(l.cur->ctx, l.sched);  // never resumed
}

void perform(const Copy& c) {
  std::memcpy(c.dst, c.src, static_cast<std::size_t>(c.src_bytes));
  std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, static_cast<std::size_t>(c.bytes - c.src_bytes));
}

// Arrive at a warp collective: fill() writes this lane's inputs, the last lane runs compute() for all.
template <typename Fill, typename Compute>
void collective(Coll kind, Fill fill, Compute compute, int& lane_out) {
  Launch& l = L();
  Warp& w = l.warps[static_cast<std::size_t>(l.cur->linear / kWarpSize)];
  const int lane = l.cur->linear % kWarpSize;
  if (w.at_barrier > 0) {
    fail(std::string("divergent warp: this lane is at ") + coll_name(kind) + " while lanes of its warp wait at __syncthreads");
  }
  if (w.arrived == 0) {
    w.kind = kind;
  } else if (w.kind != kind) {
    fail(std::string("divergent warp: this lane is at ") + coll_name(kind) + " while lanes of its warp wait at " +
         coll_name(w.kind));
  }
  fill(w, lane);
  l.progress = true;
  const unsigned gen = w.gen;
  if (++w.arrived == kWarpSize) {
    compute(w);
    w.arrived = 0;
    ++w.gen;
  } else {
    while (w.gen == gen) yield();
  }
  lane_out = lane;
}

std::uint16_t smem_u16(std::uint32_t row_addr, int col) {
  std::uint16_t v;
  std::memcpy(&v, g_launch->smem.data() + row_addr + 2 * col, 2);
  return v;
}

// fp16 -> fp32 for all 65536 bit patterns (the mma emulation decodes every operand it multiplies).
const std::vector<float>& f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (std::uint32_t i = 0; i < 65536; ++i) t[i] = rt::kernels::host::f16_to_f32(static_cast<std::uint16_t>(i));
    return t;
  }();
  return table;
}

float decode(std::uint32_t reg, int half, Coll kind) {
  const auto bits = static_cast<std::uint16_t>(half ? reg >> 16 : reg);
  return kind == Coll::MmaBf16 ? rt::kernels::host::bf16_to_f32(bits) : f16_table()[bits];
}

void run_cta(Launch& l) {
  const std::size_t n = static_cast<std::size_t>(l.threads);
  if (!l.smem.empty()) std::memset(l.smem.data(), 0xff, l.smem.size());  // memset(nullptr, .., 0) is undefined
  l.live = l.threads;
  l.bar_arrived = 0;
  l.warps.assign(n / kWarpSize, Warp{});
  for (std::size_t i = 0; i < n; ++i) {
    Fiber& f = l.fibers[i];
    release_context(f.ctx, f.done && !f.failed);
    f = Fiber{};
    f.linear = static_cast<int>(i);
    f.tid = {static_cast<unsigned>(i % l.block.x), static_cast<unsigned>(i / l.block.x % l.block.y),
             static_cast<unsigned>(i / (l.block.x * l.block.y))};
    make_context(f.ctx, l.stacks.get() + i * kStackBytes, kStackBytes);
  }
  // One pass resumes every live fiber of [begin, end) once; returns whether any of them moved on.
  auto pass = [&l](std::size_t begin, std::size_t end) {
    bool moved = false;
    for (std::size_t i = begin; i < end; ++i) {
      Fiber& f = l.fibers[i];
      if (f.done) continue;
      l.progress = false;
      l.cur = &f;
      switch_context(l.sched, f.ctx);
      if (!l.error.empty()) throw std::runtime_error("simt: " + l.error);
      moved = moved || l.progress;
    }
    return moved;
  };
  while (l.live > 0) {
    bool moved = false;
    if (g_options.warp_by_warp) {
      for (std::size_t w = 0; w < n / kWarpSize; ++w) {
        while (pass(w * kWarpSize, (w + 1) * kWarpSize)) moved = true;  // this warp as far as it goes alone
      }
    } else {
      moved = pass(0, n);
    }
    if (!moved) {
      int at_bar = l.bar_arrived, in_warp = 0;
      for (const Warp& w : l.warps) in_warp += w.arrived;
      l.cur = &l.fibers[0];
      throw std::runtime_error("simt: CTA (" + std::to_string(l.cta.x) + "," + std::to_string(l.cta.y) + "," +
                               std::to_string(l.cta.z) + ") deadlocked: " + std::to_string(l.live) +
                               " threads alive, " + std::to_string(at_bar) + " at __syncthreads, " +
                               std::to_string(in_warp) + " at warp collectives whose warps never complete");
    }
  }
}

}  // namespace

void launch(Dim3 grid, Dim3 block, std::size_t smem_bytes, const std::function<void()>& kernel,
            const std::vector<GlobalBuffer>& globals) {
  thread_local bool t_launching = false;  // this host thread is inside launch()
  if (t_launching) throw std::logic_error("simt::launch from inside a kernel");
  const std::lock_guard<std::mutex> lock(g_mutex);
  t_launching = true;
  struct Done {
    bool& flag;
    ~Done() { flag = false; }
  } done{t_launching};
  const long threads = static_cast<long>(block.x) * block.y * block.z;
  if (threads <= 0 || threads % kWarpSize != 0 || threads > 1024) {
    throw std::invalid_argument("simt::launch: a block must have a multiple of 32 threads, at most 1024");
  }
  Launch l;
  l.grid = grid;
  l.block = block;
  l.threads = static_cast<int>(threads);
  l.smem.assign(smem_bytes, 0);
  l.fibers.resize(static_cast<std::size_t>(threads));
  l.stacks.reset(new char[static_cast<std::size_t>(threads) * kStackBytes]);
  l.kernel = &kernel;
  l.globals = globals;
#if defined(CPS_SIMT_TSAN)
  l.sched.tsan_fiber = __tsan_get_current_fiber();
#endif
  struct Release {  // the fibers' contexts, however the launch ends
    Launch& l;
    ~Release() {
      for (Fiber& f : l.fibers) release_context(f.ctx, f.done && !f.failed);
    }
  } release{l};
  g_launch = &l;
  try {
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          l.cta = {x, y, z};
          run_cta(l);
        }
      }
    }
  } catch (...) {
    g_launch = nullptr;
    throw;
  }
  g_launch = nullptr;
}

void set_options(const Options& o) { g_options = o; }

void register_global(const void* p, std::size_t bytes) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_registered.push_back({p, bytes});
}
bool is_global(const void* p) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  return std::any_of(g_registered.begin(), g_registered.end(), [a](const GlobalBuffer& b) {
    return a >= reinterpret_cast<std::uintptr_t>(b.p) && a < reinterpret_cast<std::uintptr_t>(b.p) + b.bytes;
  });
}
bool is_global_range(const void* p, std::size_t bytes) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  return std::any_of(g_registered.begin(), g_registered.end(), [a, bytes](const GlobalBuffer& b) {
    const auto begin = reinterpret_cast<std::uintptr_t>(b.p);
    return a >= begin && a - begin <= b.bytes && bytes <= b.bytes - (a - begin);
  });
}
void unregister_global(const void* p) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  for (auto it = g_registered.begin(); it != g_registered.end(); ++it) {
    if (it->p == p) {
      g_registered.erase(it);
      return;
    }
  }
}

const Dim3& thread_idx() { return L().cur->tid; }
const Dim3& block_idx() { return L().cta; }
const Dim3& grid_dim() { return L().grid; }
const Dim3& block_dim() { return L().block; }
unsigned char* shared_memory() { return L().smem.data(); }

void syncthreads() {
  Launch& l = L();
  Warp& w = l.warps[static_cast<std::size_t>(l.cur->linear / kWarpSize)];
  if (w.arrived > 0) {
    fail(std::string("divergent warp: this lane is at __syncthreads while lanes of its warp wait at ") + coll_name(w.kind));
  }
  ++w.at_barrier;
  l.progress = true;
  const unsigned gen = l.bar_gen;
  ++l.bar_arrived;
  release_barrier_if_complete();
  while (l.bar_gen == gen) yield();
}

void syncwarp() {
  int lane;
  collective(Coll::Syncwarp, [](Warp&, int) {}, [](Warp&) {}, lane);
}

float shfl_xor(float x, int lane_mask) {
  int lane;
  collective(
      Coll::Shfl,
      [&](Warp& w, int ln) {
        w.in_f[ln][0] = x;
        w.in_i[ln] = lane_mask;
      },
      [](Warp& w) {
        for (int i = 0; i < kWarpSize; ++i) w.out_f[i][0] = w.in_f[(i ^ w.in_i[i]) & (kWarpSize - 1)][0];
      },
      lane);
  return g_launch->warps[static_cast<std::size_t>(g_launch->cur->linear / kWarpSize)].out_f[lane][0];
}

std::uint32_t smem_offset(const void* p) {
  Launch& l = L();
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < l.smem.data() || c > l.smem.data() + l.smem.size()) fail("shared-memory address of a pointer outside shared memory");
  return static_cast<std::uint32_t>(c - l.smem.data());
}

void check_global(const void* p, std::size_t bytes, const char* what) {
  Launch& l = L();
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  // A vector access of 8 or 16 bytes must be aligned to its size (cudaErrorMisalignedAddress on the GPU).
  if ((bytes == 8 || bytes == 16) && a % bytes != 0)
    fail(std::string(what) + " at a global address not aligned to its " + std::to_string(bytes) + " bytes");
  for (const auto* list : {&l.globals, &g_registered}) {
    for (const GlobalBuffer& b : *list) {
      const auto lo = reinterpret_cast<std::uintptr_t>(b.p);
      if (a >= lo && a + bytes <= lo + b.bytes) return;
    }
  }
  fail(std::string(what) + " touches global memory outside every buffer of the launch");
}

void cp_async(void* smem, const void* gmem, int bytes, int src_bytes) {
  Launch& l = L();
  const std::uint32_t off = smem_offset(smem);
  if (off % static_cast<std::uint32_t>(bytes) != 0 || off + static_cast<std::size_t>(bytes) > l.smem.size()) {
    fail("cp.async of " + std::to_string(bytes) + " bytes to shared offset " + std::to_string(off) +
         " (misaligned or past the " + std::to_string(l.smem.size()) + " bytes of shared memory)");
  }
  if (src_bytes < 0 || src_bytes > bytes) fail("cp.async src-size outside [0, cp-size]");
  if (src_bytes > 0) {
    if (reinterpret_cast<std::uintptr_t>(gmem) % static_cast<std::uintptr_t>(bytes) != 0) fail("cp.async from a misaligned global address");
    check_global(gmem, static_cast<std::size_t>(src_bytes), "cp.async");
  }
  if (g_options.cp_async_lands_at_issue) {
    perform({smem, gmem, bytes, src_bytes});
  } else {
    l.cur->open.push_back({smem, gmem, bytes, src_bytes});
  }
}

void cp_async_commit() {
  Fiber& f = *L().cur;
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}

void cp_async_wait(int pending) {
  Fiber& f = *L().cur;
  while (static_cast<int>(f.groups.size()) > pending) {
    for (const Copy& c : f.groups.front()) perform(c);
    f.groups.erase(f.groups.begin());
  }
}

void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr, bool trans) {
  trans = trans && !g_options.ldmatrix_ignores_trans;
  int lane;
  collective(
      trans ? Coll::LdmatrixTrans : Coll::Ldmatrix, [&](Warp& w, int ln) { w.in_u[ln][0] = addr; },
      [trans](Warp& w) {
        // Lanes 8m..8m+7 hold the addresses of rows 0..7 of matrix m; each row is 8 contiguous b16.
        for (int i = 0; i < kWarpSize; ++i) {
          const std::uint32_t a = w.in_u[i][0];
          if (a % 16 != 0 || a + 16 > g_launch->smem.size()) {
            fail("ldmatrix row address " + std::to_string(a) + " (from lane " + std::to_string(i) +
                 ") misaligned or past the " + std::to_string(g_launch->smem.size()) + " bytes of shared memory");
          }
        }
        for (int ln = 0; ln < kWarpSize; ++ln) {
          const int gi = ln / 4, t = ln % 4;
          for (int m = 0; m < 4; ++m) {
            std::uint16_t lo, hi;
            if (!trans) {  // row gi, columns 2t and 2t+1
              lo = smem_u16(w.in_u[8 * m + gi][0], 2 * t);
              hi = smem_u16(w.in_u[8 * m + gi][0], 2 * t + 1);
            } else {  // the transposed matrix's row gi: column gi of rows 2t and 2t+1
              lo = smem_u16(w.in_u[8 * m + 2 * t][0], gi);
              hi = smem_u16(w.in_u[8 * m + 2 * t + 1][0], gi);
            }
            w.out_u[ln][m] = lo | static_cast<std::uint32_t>(hi) << 16;
          }
        }
      },
      lane);
  const Warp& w = g_launch->warps[static_cast<std::size_t>(g_launch->cur->linear / kWarpSize)];
  for (int m = 0; m < 4; ++m) r[m] = w.out_u[lane][m];
}

void mma_m16n8k16(Mma16 type, float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  const Coll kind = type == Mma16::BF16 ? Coll::MmaBf16 : Coll::MmaFp16;
  int lane;
  collective(
      kind,
      [&](Warp& w, int ln) {
        for (int i = 0; i < 4; ++i) {
          w.in_u[ln][i] = a[i];
          w.in_f[ln][i] = c[i];
        }
        w.in_u[ln][4] = b0;
        w.in_u[ln][5] = b1;
      },
      [kind](Warp& w) {
        // PTX ISA fragments of mma.m16n8k16 (.row.col, 16-bit inputs, f32 accumulators); lane = 4 * gi + t.
        float A[16][16], B[16][8], C[16][8];
        for (int ln = 0; ln < kWarpSize; ++ln) {
          const int gi = ln / 4, t = ln % 4;
          const std::uint32_t* u = w.in_u[ln];
          for (int h = 0; h < 2; ++h) {
            A[gi][2 * t + h] = decode(u[0], h, kind);
            A[gi + 8][2 * t + h] = decode(u[1], h, kind);
            A[gi][2 * t + 8 + h] = decode(u[2], h, kind);
            A[gi + 8][2 * t + 8 + h] = decode(u[3], h, kind);
            B[2 * t + h][gi] = decode(u[4], h, kind);
            B[2 * t + 8 + h][gi] = decode(u[5], h, kind);
            C[gi][2 * t + h] = w.in_f[ln][h];
            C[gi + 8][2 * t + h] = w.in_f[ln][2 + h];
          }
        }
        for (int row = 0; row < 16; ++row) {  // D = C + A B, summed over k in order (vectorises over columns)
          for (int k = 0; k < 16; ++k) {
            const float a_rk = A[row][k];
            for (int col = 0; col < 8; ++col) C[row][col] += a_rk * B[k][col];
          }
        }
        for (int ln = 0; ln < kWarpSize; ++ln) {
          const int gi = ln / 4, t = ln % 4;
          for (int e = 0; e < 4; ++e) w.out_f[ln][e] = C[gi + 8 * (e >> 1)][2 * t + (e & 1)];
        }
      },
      lane);
  const Warp& w = g_launch->warps[static_cast<std::size_t>(g_launch->cur->linear / kWarpSize)];
  for (int e = 0; e < 4; ++e) c[e] = w.out_f[lane][e];
}

}  // namespace cpscope::simt
