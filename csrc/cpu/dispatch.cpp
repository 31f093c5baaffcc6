// Run-time choice of the CPU kernel path. kernels.cpp is compiled once per instruction set
// (namespaces fkdiff::cpu::generic / avx2 / avx512); at first use the widest path this processor
// supports is chosen with __builtin_cpu_supports. FKDIFF_CPU_ISA=generic|avx2|avx512 forces a
// narrower (or equal) path; asking for one the processor lacks (or one not built) is refused:
// the automatic choice stays, and env_warning() says why (bind_cpu.cpp turns it into a Python
// warning at import).
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu_kernels.h"

namespace fkdiff {
namespace cpu {
namespace {

struct Path {
  const char* name;
  const Table* (*get)();
  bool (*runs)();
};

#if defined(FKDIFF_HAVE_ISA_generic)
const Table* get_generic() { return &generic::table(); }
#endif
#if defined(FKDIFF_HAVE_ISA_avx2)
const Table* get_avx2() { return &avx2::table(); }
#endif
#if defined(FKDIFF_HAVE_ISA_avx512)
const Table* get_avx512() { return &avx512::table(); }
#endif

bool runs_always() { return true; }
#if defined(__x86_64__) || defined(__i386__)
bool runs_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
bool runs_avx512() {
  __builtin_cpu_init();
  return runs_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#else
bool runs_avx2() { return false; }
bool runs_avx512() { return false; }
#endif

// Narrowest first.
const Path kPaths[] = {
#if defined(FKDIFF_HAVE_ISA_generic)
    {"generic", &get_generic, &runs_always},
#endif
#if defined(FKDIFF_HAVE_ISA_avx2)
    {"avx2", &get_avx2, &runs_avx2},
#endif
#if defined(FKDIFF_HAVE_ISA_avx512)
    {"avx512", &get_avx512, &runs_avx512},
#endif
};
constexpr int kNumPaths = sizeof(kPaths) / sizeof(kPaths[0]);

struct State {
  const Table* active = nullptr;
  const char* names[kNumPaths];
  int count = 0;
  std::string warning;
  State() {
    for (const Path& p : kPaths)
      if (p.runs()) {
        names[count++] = p.name;
        active = p.get();  // widest supported wins
      }
    const char* env = std::getenv("FKDIFF_CPU_ISA");
    if (env && *env && std::strcmp(env, "auto") != 0) {
      bool known = false;
      for (const Path& p : kPaths)
        if (std::strcmp(p.name, env) == 0) {
          known = true;
          if (p.runs())
            active = p.get();
          else
            warning = std::string("FKDIFF_CPU_ISA=") + env + " refused: this processor lacks it; using " +
                      active->name;
        }
      if (!known)
        warning = std::string("FKDIFF_CPU_ISA=") + env + " is not a CPU path of this build (built: " +
                  FKDIFF_CPU_ISAS + "); using " + active->name;
    }
  }
};

State& state() {
  static State s;
  return s;
}

}  // namespace

const Table& active() { return *state().active; }

const char* const* supported_names(int* count) {
  *count = state().count;
  return state().names;
}

bool set_active(const char* name) {
  for (const Path& p : kPaths)
    if (std::strcmp(p.name, name) == 0 && p.runs()) {
      state().active = p.get();
      return true;
    }
  return false;
}

const char* env_warning() { return state().warning.c_str(); }

}  // namespace cpu
}  // namespace fkdiff
