#include "fiber_context.h"

#include <cstdint>

#if defined(__x86_64__) && !defined(CUDA_EMULATOR_UCONTEXT)

// void cuda_emulator_switch(void** save_stack_pointer, void* load_stack_pointer): pushes the
// System V callee-saved registers, swaps stacks, pops the other context's and returns into it.
asm(R"(
  .text
  .p2align 4
  .globl cuda_emulator_switch
  .hidden cuda_emulator_switch
  .type cuda_emulator_switch, @function
cuda_emulator_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emulator_switch, .-cuda_emulator_switch
)");

extern "C" void cuda_emulator_switch(void** save_stack_pointer, void* load_stack_pointer);

namespace cuda_emulator {

void prepare_context(FiberContext& context, char* stack, size_t size, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t{15};
  auto* slot = reinterpret_cast<uintptr_t*>(top);
  *--slot = 0;  // entry's return address: it never returns; entry then starts with rsp = 8 mod 16, as after a call
  *--slot = reinterpret_cast<uintptr_t>(entry);  // where the first switch's `ret` goes
  for (int i = 0; i < 6; ++i) *--slot = 0;  // rbp, rbx, r12-r15
  context.stack_pointer = slot;
}

void switch_context(FiberContext& from, FiberContext& to) {
  cuda_emulator_switch(&from.stack_pointer, to.stack_pointer);
}

}  // namespace cuda_emulator

#else

namespace cuda_emulator {

void prepare_context(FiberContext& context, char* stack, size_t size, void (*entry)()) {
  getcontext(&context.context);
  context.context.uc_stack.ss_sp = stack;
  context.context.uc_stack.ss_size = size;
  context.context.uc_link = nullptr;
  makecontext(&context.context, entry, 0);
}

void switch_context(FiberContext& from, FiberContext& to) { swapcontext(&from.context, &to.context); }

}  // namespace cuda_emulator

#endif
