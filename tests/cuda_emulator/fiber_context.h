// Stackful coroutines for the emulator, one per emulated thread. On x86-64 a switch saves and
// restores the callee-saved registers and the stack pointer (a few nanoseconds); elsewhere it is
// ucontext's swapcontext (also with -DCUDA_EMULATOR_UCONTEXT), which saves the signal mask with a
// system call on every switch.
#pragma once
#include <cstddef>

#if !defined(__x86_64__) || defined(CUDA_EMULATOR_UCONTEXT)
#include <ucontext.h>
#endif

namespace cuda_emulator {

struct FiberContext {
#if defined(__x86_64__) && !defined(CUDA_EMULATOR_UCONTEXT)
  void* stack_pointer = nullptr;
#else
  ucontext_t context;
#endif
};

// Makes the first switch to `context` run entry() on [stack, stack + size). entry never returns:
// it ends by switching away for good.
void prepare_context(FiberContext& context, char* stack, size_t size, void (*entry)());

// Saves the running context into `from` and resumes `to`.
void switch_context(FiberContext& from, FiberContext& to);

}  // namespace cuda_emulator
