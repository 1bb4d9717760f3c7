//! Boot code: the PVH entry note, the 32-bit entry that builds the boot page tables and enters
//! long mode, the real-mode trampoline the application processors start in, and the
//! exception stubs.
//!
//! Layout facts the rest of the kernel relies on (numbered so `SAFETY` comments can cite them):
//! 1. The kernel runs at its physical address (linked at 1 MiB); `boot_pml4` identity-maps
//!    the low 4 GiB with 2 MiB pages (writable, supervisor), so the kernel image, the local
//!    APIC and every low physical address are reachable at their own address.
//! 2. `boot_pml4`, `boot_pdpt`, `boot_pd` (4 pages), `pd_pool` and the fixmap tables
//!    (`fix_pdpt`, `fix_pd`, `fix_pt`) are page-aligned, zeroed and owned by `arch::paging`
//!    after entry; every CPU shares them (one address space).
//! 3. The BSP enters `kmain(start_info)` on `boot_stack` (256 KiB), 16-byte aligned before
//!    the call; AP `i` (0-based among APs) enters `ap_main(i)` on its own 64 KiB slice of
//!    `ap_stacks`; an AP beyond `MAX_KCPUS - 1` halts in the trampoline path.
//! 4. SSE is enabled (CR0.EM=0, CR0.MP=1, CR4.OSFXSR|OSXMMEXCPT) before any Rust code runs.
//! 5. The GDT (`gdt64`): 0x08 64-bit code, 0x10 flat data, 0x18 32-bit code, then one 16-byte
//!    TSS descriptor per CPU from 0x20 (`arch` fills them in).

use core::arch::global_asm;

/// Most CPUs this kernel brings up (stacks and per-CPU areas are static).
pub const MAX_KCPUS: usize = 16;
/// Physical address the AP trampoline is copied to (start vector 0x08).
pub const TRAMPOLINE: u64 = 0x8000;
/// Bytes of each AP's stack.
pub const AP_STACK: usize = 64 * 1024;

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32
    .p2align 2

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov %esi, boot_info_ptr

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD[0..4]; 2048 2 MiB identity pages. */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $3, %eax
    mov %eax, boot_pdpt
    add $4096, %eax
    mov %eax, boot_pdpt + 8
    add $4096, %eax
    mov %eax, boot_pdpt + 16
    add $4096, %eax
    mov %eax, boot_pdpt + 24
    mov $boot_pd, %edi
    mov $0x83, %eax
    mov $2048, %ecx
1:
    mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    dec %ecx
    jnz 1b
    mov $boot_stack_top, %esp
    jmp enter_long_mode32

    /* Shared by the BSP and the APs: paging, SSE, long mode. Expects %esp usable. */
enter_long_mode32:
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    wrmsr
    mov %cr0, %eax
    and $~((1 << 2) | (1 << 3)), %eax
    or $((1 << 31) | (1 << 1) | 1), %eax
    mov %eax, %cr0
    lgdt gdt_ptr
    ljmp $0x08, $long_entry

    .code64
long_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    fninit
    cmpl $0, ap_mode
    jne ap_long
    movabs $boot_stack_top, %rsp
    and $-16, %rsp
    mov boot_info_ptr, %edi
    xor %ebp, %ebp
    call kmain
2:
    cli
    hlt
    jmp 2b

ap_long:
    mov $1, %eax
    lock xadd %eax, ap_counter
    cmp ${maxap}, %eax
    jae 2b
    mov %eax, %edi
    lea 1(%rax), %rax
    shl $16, %rax
    movabs $ap_stacks, %rsp
    add %rax, %rsp
    and $-16, %rsp
    xor %ebp, %ebp
    call ap_main
    jmp 2b

    /* The APs' 32-bit entry from the trampoline: a stack is not needed before long mode. */
    .code32
    .global ap_start32
ap_start32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    jmp enter_long_mode32

    /* Real-mode trampoline, copied to TRAMPOLINE; the AP starts at CS=0x0800, IP=0. */
    .code16
    .global ap_tramp_start
    .global ap_tramp_end
ap_tramp_start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl ({tramp} + tramp_gdt_ptr - ap_tramp_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, $({tramp} + tramp32 - ap_tramp_start)
    .code32
tramp32:
    mov $ap_start32, %eax
    jmp *%eax
    .p2align 2
tramp_gdt_ptr:
    .word gdt_end - gdt64 - 1
    .long gdt64
ap_tramp_end:

    /* Exception stubs: push a zero error code where the CPU pushes none, then the vector. */
    .code64
    .macro FSTUB n, err
    .p2align 4
fault_stub_\n:
    .if \err == 0
    pushq $0
    .endif
    pushq $\n
    jmp fault_common
    .endm
    FSTUB 0, 0
    FSTUB 1, 0
    FSTUB 2, 0
    FSTUB 3, 0
    FSTUB 4, 0
    FSTUB 5, 0
    FSTUB 6, 0
    FSTUB 7, 0
    FSTUB 8, 1
    FSTUB 9, 0
    FSTUB 10, 1
    FSTUB 11, 1
    FSTUB 12, 1
    FSTUB 13, 1
    FSTUB 14, 1
    FSTUB 15, 0
    FSTUB 16, 0
    FSTUB 17, 1
    FSTUB 18, 0
    FSTUB 19, 0
    FSTUB 20, 0
    FSTUB 21, 1
    FSTUB 22, 0
    FSTUB 23, 0
    FSTUB 24, 0
    FSTUB 25, 0
    FSTUB 26, 0
    FSTUB 27, 0
    FSTUB 28, 0
    FSTUB 29, 1
    FSTUB 30, 1
    FSTUB 31, 0
fault_common:
    mov %rsp, %rsi
    mov (%rsi), %rdi
    and $-16, %rsp
    call kernel_fault
3:
    cli
    hlt
    jmp 3b

    .section .rodata
    .p2align 3
    .global fault_stubs
fault_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad fault_stub_\n
    .endr

    .section .data
    .p2align 4
    .global gdt64
gdt64:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cf9a000000ffff
    .fill {ntss}, 8, 0
gdt_end:
    .p2align 4
gdt_ptr:
    .word gdt_end - gdt64 - 1
    .quad gdt64
    .global boot_info_ptr
boot_info_ptr:
    .quad 0
    .global ap_mode
ap_mode:
    .long 0
    .global ap_counter
ap_counter:
    .long 0

    .section .bss.boot, "aw", @nobits
    .p2align 12
    .global boot_pml4
boot_pml4: .skip 4096
    .global boot_pdpt
boot_pdpt: .skip 4096
    .global boot_pd
boot_pd: .skip 4096 * 4
    .global fix_pdpt
fix_pdpt: .skip 4096
    .global fix_pd
fix_pd: .skip 4096
    .global fix_pt
fix_pt: .skip 4096
    .global pd_pool
pd_pool: .skip 4096 * {pdpool}
    .p2align 4
boot_stack: .skip 256 * 1024
boot_stack_top:
    .p2align 4
    .global ap_stacks
ap_stacks: .skip {apstacks}
    .text
"#,
    maxap = const MAX_KCPUS - 1,
    tramp = const TRAMPOLINE,
    ntss = const MAX_KCPUS * 2,
    pdpool = const PD_POOL,
    apstacks = const MAX_KCPUS * AP_STACK,
    options(att_syntax)
);

/// Page directories available for the direct map above 4 GiB (one per GiB of RAM).
pub const PD_POOL: usize = 60;

extern "C" {
    /// The PML4 every CPU runs on (item 2).
    pub static mut boot_pml4: [u64; 512];
    /// The PDPT of the low 512 GiB (item 2).
    pub static mut boot_pdpt: [u64; 512];
    /// Spare page directories for RAM above 4 GiB (item 2).
    pub static mut pd_pool: [[u64; 512]; PD_POOL];
    /// The four page directories of the low 4 GiB (item 2).
    pub static mut boot_pd: [[u64; 512]; 4];
    /// Fixmap tables for `map_local` (item 2).
    pub static mut fix_pdpt: [u64; 512];
    /// Fixmap page directory (item 2).
    pub static mut fix_pd: [u64; 512];
    /// Fixmap page table (item 2).
    pub static mut fix_pt: [u64; 512];
    /// The GDT (item 5).
    pub static mut gdt64: [u64; 4 + MAX_KCPUS * 2];
    /// Nonzero once the BSP is up: the long-mode entry then takes the AP path.
    pub static mut ap_mode: u32;
    /// Trampoline bytes (copied to [`TRAMPOLINE`]).
    pub static ap_tramp_start: u8;
    /// End of the trampoline bytes.
    pub static ap_tramp_end: u8;
    /// The 32 exception entry points.
    pub static fault_stubs: [u64; 32];
    /// First byte of the kernel image.
    pub static __kernel_start: u8;
    /// One past the kernel image, bss included.
    pub static __kernel_end: u8;
}
