"""Where a compiled seccomp filter can end for one system call: the set of
return values (SECCOMP_RET_ALLOW, _ERRNO, _USER_NOTIF, ...) its paths reach
when the architecture and the call's number are known and every other field of
struct seccomp_data (the instruction pointer, the six arguments) may be anything.

Why by hand: a recycled cell keeps its network namespace only if the program
could not have made a socket without the init knowing (init.c, renew). That is a
fact about the filter the kernel runs, not about the JSON it came from (its
includes and excludes, its default action, what libseccomp made of it), and
libseccomp offers no query for it (its bpf simulator is a test tool, not in
Debian's package). So this reads the BPF: a walk of the program's paths, which
follows both branches of a jump whose operand is unknown. It can only say too
much (a path no real data takes), never too little, which is the safe way round.

It knows the instructions libseccomp emits (load a word of seccomp_data, AND
with a constant, the constant jumps, return a constant); a program with any
other (a hand-made filter) is answered None: nothing known.
"""

from __future__ import annotations

import struct

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
_INSTRUCTION = struct.Struct("<HBBI")
_LD_W_ABS = 0x20
_ALU_AND_K = 0x54
_JA = 0x05
_JEQ_K, _JGT_K, _JGE_K, _JSET_K = 0x15, 0x25, 0x35, 0x45
_RET_K = 0x06
_NR_OFFSET, _ARCH_OFFSET = 0, 4  # offsets in struct seccomp_data


def reachable_returns(bpf: bytes, arch: int, nr: int) -> frozenset[int] | None:
    """Every value the filter can return for system call `nr` of `arch`, with
    any arguments; None when the program holds an instruction this walk does not
    know (or a jump out of it, which the kernel would have refused)."""
    program = [_INSTRUCTION.unpack_from(bpf, at) for at in range(0, len(bpf), 8)]
    returns: set[int] = set()
    seen: set[tuple[int, int | None]] = set()
    # (pc, the accumulator: an int when known, None when it may be anything)
    pending: list[tuple[int, int | None]] = [(0, None)]
    while pending:
        state = pending.pop()
        if state in seen:
            continue
        seen.add(state)
        pc, acc = state
        if not 0 <= pc < len(program):
            return None
        code, jt, jf, k = program[pc]
        if code == _RET_K:
            returns.add(k)
        elif code == _LD_W_ABS:
            known = {_NR_OFFSET: nr, _ARCH_OFFSET: arch}
            pending.append((pc + 1, known.get(k)))
        elif code == _ALU_AND_K:
            pending.append((pc + 1, None if acc is None else acc & k))
        elif code == _JA:
            pending.append((pc + 1 + k, acc))
        elif code in (_JEQ_K, _JGT_K, _JGE_K, _JSET_K):
            taken = None if acc is None else _jump_taken(code, acc, k)
            if taken is not False:
                pending.append((pc + 1 + jt, acc))
            if taken is not True:
                pending.append((pc + 1 + jf, acc))
        else:
            return None
    return frozenset(returns)


def _jump_taken(code: int, acc: int, k: int) -> bool:
    if code == _JEQ_K:
        return acc == k
    if code == _JGT_K:
        return acc > k
    if code == _JGE_K:
        return acc >= k
    return acc & k != 0
