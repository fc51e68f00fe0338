/*
 * switch_aarch64.S — the coroutine context switch for AArch64 (AAPCS64).
 *
 * rt_ctx_switch(void **save_sp, void *load_sp) saves the callee-saved
 * registers x19-x28, the frame pointer x29, the link register x30, the low
 * halves of v8-v15 (d8-d15: the only callee-saved FP state) and FPCR on the
 * current stack, stores sp in *save_sp, loads load_sp and restores the same
 * frame from the other stack. No signal mask, no syscall.
 *
 * rt_ctx_start(void **save_sp, void *stack_top, void *(*entry)(void *),
 * void *arg) saves the same frame, then calls entry(arg) on the new stack;
 * entry runs the coroutine to its end and returns the stack pointer of the
 * context to resume, which is restored as rt_ctx_switch restores one. The
 * coroutine is entered by a call and left by a return, which the return
 * predictor gets right (see switch_x86_64.S).
 *
 * Frame (176 bytes, 16-byte aligned), from the saved sp upwards:
 *   +0 x19 x20 ... +72 x28  +80 x29  +88 x30  +96 d8 ... +152 d15  +160 fpcr
 * frame_init (sched.c) builds the first frame of a queued coroutine so
 * that `ret` lands in rt_ctx_trampoline with x19 = argument, x20 = entry.
 */
    /* Stores the frame described above below sp and its address in *x0. */
    .macro SAVE_FRAME
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    .endm

    .text
    .p2align 4
    .globl rt_ctx_switch
    .hidden rt_ctx_switch
    .type rt_ctx_switch,%function
rt_ctx_switch:
    .cfi_startproc
    SAVE_FRAME
    mov sp, x1
.Lresume:
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    ldr x9, [sp, #160]
    msr fpcr, x9
    add sp, sp, #176
    ret
    .cfi_endproc
    .size rt_ctx_switch, .-rt_ctx_switch

    .p2align 4
    .globl rt_ctx_start
    .hidden rt_ctx_start
    .type rt_ctx_start,%function
rt_ctx_start:
    .cfi_startproc
    SAVE_FRAME
    /* stack_top is 16-byte aligned; x29 = 0 ends the frame chain. */
    mov sp, x1
    mov x29, #0
    mov x0, x3
    blr x2
    /* x0: the stack pointer to resume; this stack is dead. */
.Lenter:
    mov sp, x0
    b .Lresume
    .cfi_endproc
    .size rt_ctx_start, .-rt_ctx_start

    .p2align 4
    .globl rt_ctx_trampoline
    .hidden rt_ctx_trampoline
    .type rt_ctx_trampoline,%function
rt_ctx_trampoline:
    .cfi_startproc
    .cfi_undefined x30
    /* x29 = 0 ends the frame chain; the entry function returns the
     * context to resume. */
    mov x29, #0
    mov x0, x19
    blr x20
    b .Lenter
    .cfi_endproc
    .size rt_ctx_trampoline, .-rt_ctx_trampoline

    .section .note.GNU-stack,"",%progbits
