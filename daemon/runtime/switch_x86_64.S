/*
 * switch_x86_64.S — the coroutine context switch for x86-64 (SysV ABI).
 *
 * rt_ctx_switch(void **save_sp, void *load_sp) pushes the callee-saved
 * registers and the MXCSR / x87 control words on the current stack, stores
 * the stack pointer in *save_sp, loads load_sp and pops the same frame from
 * the other stack. Caller-saved registers are the compiler's business
 * because this is an ordinary call; no signal mask is saved (coroutines
 * share their thread's mask), so no syscall is made.
 *
 * rt_ctx_start(void **save_sp, void *stack_top, void *(*entry)(void *),
 * void *arg) saves the same frame, then calls entry(arg) on the new stack.
 * entry runs the coroutine to its end and returns the stack pointer of the
 * context to resume, which is loaded as rt_ctx_switch loads one. A
 * coroutine started this way is entered by a direct call and leaves by an
 * ordinary return, both of which the return-stack predictor gets right;
 * through rt_ctx_switch each would be a mispredicted return (~5 ns each, a
 * fifth of a spawn-and-join).
 *
 * Frame, from the saved stack pointer upwards:
 *   +0 mxcsr(4) x87cw(2) pad(2)  +8 r15  +16 r14  +24 r13  +32 r12
 *   +40 rbx  +48 rbp  +56 return address
 * frame_init (sched.c) builds the first frame of a coroutine that is
 * queued rather than started at once, so that the final `ret` lands in
 * rt_ctx_trampoline with r12 = argument and r13 = entry function.
 */
    /* Pushes the frame described above and stores its address in *rdi. */
    .macro SAVE_FRAME
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
    .endm

    .text
    .p2align 4
    .globl rt_ctx_switch
    .hidden rt_ctx_switch
    .type rt_ctx_switch,@function
rt_ctx_switch:
    .cfi_startproc
    SAVE_FRAME
    /* Loading the control words stalls (ldmxcsr and fldcw serialize),
     * and coroutines of one thread almost always share them: load only
     * what differs. Each read matches the size of its store, so it is
     * forwarded from the store buffer. */
    movl (%rsp), %eax
    movzwl 4(%rsp), %ecx
    movq %rsi, %rsp
    /* rsp: the frame to resume; eax, ecx: the control words in force. */
.Lresume:
    cmpl (%rsp), %eax
    jne 2f
1:  cmpw 4(%rsp), %cx
    jne 3f
4:  addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
2:  ldmxcsr (%rsp)
    jmp 1b
3:  fldcw 4(%rsp)
    jmp 4b
    .cfi_endproc
    .size rt_ctx_switch, .-rt_ctx_switch

    .p2align 4
    .globl rt_ctx_start
    .hidden rt_ctx_start
    .type rt_ctx_start,@function
rt_ctx_start:
    .cfi_startproc
    SAVE_FRAME
    /* stack_top is 16-byte aligned, so the call leaves entry with the
     * ABI's alignment. rbp = 0 ends the frame chain for debuggers. */
    movq %rsi, %rsp
    xorl %ebp, %ebp
    movq %rcx, %rdi
    callq *%rdx
    /* rax: the stack pointer to resume; this stack is dead. */
.Lenter:
    movq %rax, %rsp
    /* The control words in force, below the frame (the red zone). */
    stmxcsr -8(%rsp)
    fnstcw -4(%rsp)
    movl -8(%rsp), %eax
    movzwl -4(%rsp), %ecx
    jmp .Lresume
    .cfi_endproc
    .size rt_ctx_start, .-rt_ctx_start

    .p2align 4
    .globl rt_ctx_trampoline
    .hidden rt_ctx_trampoline
    .type rt_ctx_trampoline,@function
rt_ctx_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    /* rsp is 16-byte aligned here, so the call leaves the entry function
     * with the ABI's alignment. rbp = 0 ends the frame chain for debuggers
     * and unwinders. The entry function returns the context to resume. */
    xorl %ebp, %ebp
    movq %r12, %rdi
    callq *%r13
    jmp .Lenter
    .cfi_endproc
    .size rt_ctx_trampoline, .-rt_ctx_trampoline

    .section .note.GNU-stack,"",@progbits
