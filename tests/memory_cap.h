#pragma once
// Runs a function in a child process whose address space may grow by `headroom` bytes at
// most, so an attempt at a large allocation fails there (std::bad_alloc) instead of
// succeeding lazily: the readers' tests use it to show that a lying header is refused
// without the allocation it declares. Tests skip it under AddressSanitizer (its shadow
// memory needs the address space).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>

#include "runtime/error.h"

namespace equivae::test {

// The child's exit status: 0 when fn threw an Error holding `part`, 1 when it returned, 2
// another Error, 3 another exception (the allocation failed); negative: fork/wait failed.
inline int exit_under_memory_cap(const std::function<void()>& fn, const std::string& part,
                                 size_t headroom) {
  const pid_t child = ::fork();
  if (child < 0) return -1;
  if (child == 0) {
    size_t pages = 0;
    if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%zu", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    const rlim_t cap = pages * size_t(::sysconf(_SC_PAGESIZE)) + headroom;
    rlimit limit{cap, cap};
    ::setrlimit(RLIMIT_AS, &limit);
    try {
      fn();
      ::_exit(1);
    } catch (const Error& e) {
      ::_exit(std::string(e.what()).find(part) != std::string::npos ? 0 : 2);
    } catch (...) {
      ::_exit(3);
    }
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -2;
  return WEXITSTATUS(status);
}

}  // namespace equivae::test
