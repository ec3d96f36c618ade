"""The seccomp compiler: a profile in Docker's JSON format to a classic-BPF filter.

sandbox/seccomp.py finds the profile, reads it and asks here only when the
program is in neither of its caches; this module is the only one that imports
pyseccomp, whose import alone costs milliseconds (ctypes.util.find_library runs
`ldconfig -p` twice) that a run served from the cache does not pay.

How the entries are turned into a filter (x86_64 only):

* Only the native x86_64 ABI is ever in the filter, whatever the profile's
  architectures say. The bad-arch action is KILL_PROCESS, so i386 syscalls
  (`int $0x80`, sysenter) are killed. x32 shares x86_64's AUDIT_ARCH value and
  is told apart only by bit 30 of the syscall number: libseccomp 2.5 puts a
  check right after the arch check of an x86_64 filter that sends any number
  >= 0x40000000 (other than -1) to the bad-arch action, so x32 is killed too
  (tests/test_seccomp.py checks both on the running kernel).
* The cell has no capabilities: an entry that `includes` caps never applies,
  one that `excludes` caps always does. `minKernel` is compared with the
  running kernel; `arches` with x86_64 (amd64).
* Names the local libseccomp does not know, or that are not x86_64 syscalls
  (socketcall, _llseek...), are skipped as Docker does; a profile in which no
  name resolves is an error.

Rule order. libseccomp does NOT apply rules in file order:
  1. An unconditional rule for a syscall (no args) replaces every conditional
     rule of that syscall, whether added before or after it. A comparison that
     is always true (MASKED_EQ with mask 0) counts as no comparison at all.
  2. Two unconditional rules with different actions: the first one added wins
     silently.
  3. Conditional rules are merged into one decision tree per syscall whose
     levels libseccomp sorts: higher argument index first, then EQ/MASKED_EQ/NE
     before LT/LE before GT/GE, then by value; the first chain that matches
     decides and a failed chain falls through to the next one on its level.
  4. A rule whose action is the filter's default action is refused (EACCES).
So "allow ioctl, except TIOCSTI -> EPERM" written naively allows TIOCSTI. This
module gives the Docker format one meaning that libseccomp can express: for a
syscall, the conditional entries are exceptions to its unconditional entry,
whatever their order in the file. The unconditional rule is emitted as the
catch-all condition `arg0 >= 0` (true for every value, but not recognised as
"always true", so it is kept), which by point 3 sorts after every exception;
exceptions may therefore not compare arg 0 with GE/GT (they would merge with
the catch-all) and may not use the default action (point 4). Conflicting
unconditional actions and two comparisons of one argument in one entry (runc
would silently turn that AND into an OR) are errors rather than surprises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import pyseccomp as seccomp

__all__ = ["NOTIFIED_SYSCALLS", "compile_json"]


class _Where(Protocol):
    """What the caller (sandbox/seccomp.py) gives for messages: every error names
    the profile and where in it. Its errors are the caller's ProfileError."""

    def error(self, where: str, problem: str) -> Exception: ...


_ACTIONS: dict[str, int | None] = {
    "SCMP_ACT_ALLOW": seccomp.ALLOW,
    "SCMP_ACT_ERRNO": None,  # needs errnoRet
    "SCMP_ACT_KILL": seccomp.KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": seccomp.KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": seccomp.KILL_PROCESS,
    "SCMP_ACT_TRAP": seccomp.TRAP,
    "SCMP_ACT_LOG": seccomp.LOG,
    # The cell's init decides (a seccomp user notification): fcntl's byte-range
    # lock commands, which it counts against the cell's cap (locks.py), and
    # socket and socketpair, which it lets through and notes (init.c, renew).
    "SCMP_ACT_NOTIFY": seccomp.NOTIFY,
}
SOCKET_SYSCALLS = ("socket", "socketpair")
NOTIFIED_SYSCALLS = ("fcntl", *SOCKET_SYSCALLS)  # what SCMP_ACT_NOTIFY may apply to
_UNSUPPORTED_ACTIONS = {
    "SCMP_ACT_TRACE": "it needs a ptrace tracer, which cellblock has not (and ptrace is denied)",
}
_OPS = {
    "SCMP_CMP_NE": seccomp.NE,
    "SCMP_CMP_LT": seccomp.LT,
    "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_EQ": seccomp.EQ,
    "SCMP_CMP_GE": seccomp.GE,
    "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}
# Every arch name libseccomp has (pyseccomp lists all but the newest few).
_ARCHES = {f"SCMP_ARCH_{n}" for n in vars(seccomp.Arch) if n.isupper()} | {
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
}
# How includes/excludes "arches" may name the one arch we build for (Docker
# uses Go's names there, "amd64"; some profiles use the SCMP_ARCH_ ones).
_OUR_ARCH_NAMES = {"amd64", "x86_64", "SCMP_ARCH_X86_64"}
_TOP_KEYS = {
    "comment",
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "archMap",
    "syscalls",
    "flags",
    "listenerPath",
    "listenerMetadata",
}
_ENTRY_KEYS = {
    "comment",
    "name",
    "names",
    "action",
    "errnoRet",
    "args",
    "includes",
    "excludes",
}
_ARG_KEYS = {"index", "value", "valueTwo", "op", "comment"}
_FILTER_KEYS = {"arches", "caps", "minKernel", "comment"}
_U64 = (1 << 64) - 1
_MAX_ERRNO = 4095  # the kernel clamps larger SECCOMP_RET_ERRNO data to this


@dataclass(frozen=True)
class _Rule:
    nr: int
    name: str
    action: int
    args: tuple[tuple[int, int, int, int], ...]  # (index, op, value, valueTwo)
    where: str  # "syscalls[3]", for messages


def compile_json(prof: _Where, raw: bytes, sockets_to_init: bool = True) -> bytes:
    """The BPF program (an array of 8-byte struct sock_filter) for a profile's
    JSON text; raises prof.error(...) for anything wrong with it.
    Without `sockets_to_init`, the socket and socketpair calls the profile
    sends to the init are allowed instead (for where no listener can be made:
    seccomp.compile_profile says when)."""
    return _build(prof, _parse(prof, raw), sockets_to_init)


def _parse(prof: _Where, raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise prof.error("", f"not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise prof.error(
            "", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    if not isinstance(data, dict):
        raise prof.error("", f"expected a JSON object at the top, got {_kind(data)}")
    return data


def _build(prof: _Where, data: dict[str, Any], sockets_to_init: bool) -> bytes:
    _check_keys(prof, "", data, _TOP_KEYS)
    for key in ("listenerPath", "listenerMetadata"):
        if data.get(key):
            raise prof.error(key, "notify listeners are not supported by cellblock")
    if data.get("flags"):
        raise prof.error("flags", "filter flags are not supported (cellblock installs with none)")
    _check_arches(prof, data)

    default_errno = _errno_value(prof, "defaultErrnoRet", data.get("defaultErrnoRet"))
    default = _action(prof, "defaultAction", data.get("defaultAction"), default_errno)

    entries = data.get("syscalls", [])
    if not isinstance(entries, list):
        raise prof.error("syscalls", f"expected a list, got {_kind(entries)}")
    rules: list[_Rule] = []
    unknown: list[str] = []
    for i, entry in enumerate(entries):
        rules.extend(_parse_entry(prof, f"syscalls[{i}]", entry, unknown))
    if not sockets_to_init:
        rules = [
            dataclasses.replace(r, action=seccomp.ALLOW)
            if r.action == seccomp.NOTIFY and r.name in SOCKET_SYSCALLS
            else r
            for r in rules
        ]
    if not rules:
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise prof.error(
                "syscalls",
                f"none of its {len(unknown)} syscall name(s) is known to libseccomp on x86_64 "
                f"({shown})",
            )
        raise prof.error(
            "syscalls",
            "no rule applies: the list is empty or includes/excludes leave out every entry",
        )

    filt = seccomp.SyscallFilter(default)
    # Only the native arch is in the filter; everything else (i386, and x32
    # which libseccomp filters out of an x86_64 filter) gets this action.
    filt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    # A binary search over syscall numbers instead of a linear chain: ~9
    # comparisons instead of up to ~300 on every syscall of the cell. libseccomp
    # older than 2.5 lacks it; the linear filter does the same, more slowly.
    with contextlib.suppress(OSError):
        filt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    by_nr: dict[int, list[_Rule]] = {}
    for rule in rules:
        by_nr.setdefault(rule.nr, []).append(rule)
    for nr in sorted(by_nr):
        _add_syscall(prof, filt, default, by_nr[nr])
    return _export(filt)


def _add_syscall(
    prof: _Where, filt: seccomp.SyscallFilter, default: int, rules: list[_Rule]
) -> None:
    """Add all the rules of one syscall, with the exception semantics of the module doc."""
    name = rules[0].name
    plain = [r for r in rules if not r.args]
    conditional = [r for r in rules if r.args]
    base: _Rule | None = None
    for rule in plain:
        if base is None:
            base = rule
        elif rule.action != base.action:
            raise prof.error(
                rule.where,
                f"{name}: unconditional action {_action_name(rule.action)} conflicts with "
                f"{_action_name(base.action)} given by {base.where}",
            )
    # The default action is what a syscall gets when no rule matches, so a rule
    # with it is redundant, unless it is an exception to a different base action:
    # libseccomp cannot express that one (it refuses default-action rules).
    if base is not None and base.action != default:
        for rule in conditional:
            if rule.action == default:
                raise prof.error(
                    rule.where,
                    f"{name}: this exception to {base.where} has the profile's default action "
                    f"{_action_name(default)}, which libseccomp cannot add as a rule; give it a "
                    "different action or errnoRet",
                )
        exceptions = [r for r in conditional if r.action != base.action]
        for rule in exceptions:
            for index, op, _, _ in rule.args:
                if index == 0 and op in (seccomp.GE, seccomp.GT):
                    raise prof.error(
                        rule.where,
                        f"{name}: an exception to the unconditional {base.where} cannot compare "
                        "argument 0 with SCMP_CMP_GE/GT (it would merge with the catch-all "
                        "rule); rewrite it with other operators",
                    )
        for rule in exceptions:
            _add_rule(prof, filt, rule.action, rule)
        if exceptions:
            # The base as a catch-all comparison, so the exceptions are not wiped out.
            _add_rule(prof, filt, base.action, base, (seccomp.Arg(0, seccomp.GE, 0),))
        else:
            _add_rule(prof, filt, base.action, base)
        return
    for rule in conditional:
        if rule.action != default:
            _add_rule(prof, filt, rule.action, rule)


def _add_rule(
    prof: _Where,
    filt: seccomp.SyscallFilter,
    action: int,
    rule: _Rule,
    args: tuple[seccomp.Arg, ...] | None = None,
) -> None:
    if args is None:
        args = tuple(seccomp.Arg(i, op, a, b) for i, op, a, b in rule.args)
    try:
        filt.add_rule(action, rule.nr, *args)
    except OSError as e:
        raise prof.error(rule.where, f"libseccomp refused the rule for {rule.name}: {e}") from None


def _export(filt: seccomp.SyscallFilter) -> bytes:
    # A memfd rather than a pipe: the program can be larger than a pipe buffer,
    # and rather than a temporary file: nothing touches the disk.
    fd = os.memfd_create("cellblock-seccomp", os.MFD_CLOEXEC)
    with open(fd, "w+b") as f:
        filt.export_bpf(f)
        f.seek(0)
        bpf = f.read()
    if not bpf or len(bpf) % 8:
        raise RuntimeError(f"libseccomp exported {len(bpf)} bytes, not a BPF program")
    return bpf


# ---------------------------------------------------------------------------
# Parsing the JSON


def _parse_entry(prof: _Where, where: str, entry: Any, unknown: list[str]) -> list[_Rule]:
    if not isinstance(entry, dict):
        raise prof.error(where, f"expected an object, got {_kind(entry)}")
    _check_keys(prof, where, entry, _ENTRY_KEYS)
    names: list[str] = []
    if "names" in entry and entry["names"] is not None:
        value = entry["names"]
        if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
            raise prof.error(f"{where}.names", "expected a list of syscall names")
        names.extend(value)
    if "name" in entry and entry["name"] is not None:
        if not isinstance(entry["name"], str) or not entry["name"]:
            raise prof.error(f"{where}.name", "expected a syscall name")
        names.append(entry["name"])
    if not names:
        raise prof.error(where, "no syscall named (give 'names': [...] or 'name')")

    errno_ret = entry.get("errnoRet")
    action_str = entry.get("action")
    if errno_ret is not None and action_str != "SCMP_ACT_ERRNO":
        raise prof.error(f"{where}.errnoRet", "only meaningful with action SCMP_ACT_ERRNO")
    action = _action(
        prof, f"{where}.action", action_str, _errno_value(prof, f"{where}.errnoRet", errno_ret)
    )
    if action == seccomp.NOTIFY and set(names) - set(NOTIFIED_SYSCALLS):
        raise prof.error(
            f"{where}.action",
            f"SCMP_ACT_NOTIFY is for {', '.join(NOTIFIED_SYSCALLS)} only (the cell's init "
            "answers byte-range lock requests and notes sockets; it has no policy for "
            "other calls)",
        )
    args = _parse_args(prof, f"{where}.args", entry.get("args"))
    if not _applies(prof, where, entry):
        return []

    rules = []
    for name in names:
        # Negative numbers are libseccomp's pseudo-syscalls: names that exist on
        # some other arch (socketcall, _llseek) but not on x86_64.
        nr = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        if nr < 0:
            unknown.append(name)
            continue
        rules.append(_Rule(nr, name, action, args, where))
    return rules


def _parse_args(prof: _Where, where: str, value: Any) -> tuple[tuple[int, int, int, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise prof.error(where, f"expected a list, got {_kind(value)}")
    args: list[tuple[int, int, int, int]] = []
    for i, arg in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(arg, dict):
            raise prof.error(at, f"expected an object, got {_kind(arg)}")
        _check_keys(prof, at, arg, _ARG_KEYS)
        for key in ("index", "value", "op"):
            if key not in arg:
                raise prof.error(at, f"missing '{key}'")
        index = arg["index"]
        if not _is_int(index) or not 0 <= index <= 5:
            raise prof.error(f"{at}.index", f"{index!r} is not a syscall argument index (0..5)")
        op_name = arg["op"]
        if not isinstance(op_name, str) or op_name not in _OPS:
            raise prof.error(
                f"{at}.op", f"unknown operator {op_name!r} (expected one of {', '.join(_OPS)})"
            )
        op = _OPS[op_name]
        values = []
        for key in ("value", "valueTwo"):
            v = arg.get(key, 0)
            if not _is_int(v) or not 0 <= v <= _U64:
                raise prof.error(f"{at}.{key}", f"{v!r} is not an unsigned 64-bit integer")
            values.append(v)
        if op == seccomp.MASKED_EQ and values[1] & ~values[0]:
            raise prof.error(
                at,
                f"valueTwo {values[1]:#x} has bits outside the mask value {values[0]:#x}: "
                "this comparison can never be true",
            )
        if any(index == a[0] for a in args):
            # libseccomp rejects it, and runc's workaround (one rule per
            # comparison) silently turns the AND into an OR.
            raise prof.error(
                at,
                f"argument {index} is compared twice in one entry; libseccomp allows one "
                "comparison per argument per rule (use separate entries, which are ORed)",
            )
        args.append((index, op, values[0], values[1]))
    return tuple(args)


def _applies(prof: _Where, where: str, entry: dict[str, Any]) -> bool:
    """Whether an entry's includes/excludes select it for this cell."""
    for kind in ("includes", "excludes"):
        filt = entry.get(kind)
        if filt is None:
            continue
        at = f"{where}.{kind}"
        if not isinstance(filt, dict):
            raise prof.error(at, f"expected an object, got {_kind(filt)}")
        _check_keys(prof, at, filt, _FILTER_KEYS)
        for key in ("arches", "caps"):
            v = filt.get(key)
            if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise prof.error(f"{at}.{key}", "expected a list of strings")
        if filt.get("minKernel") is not None:
            _kernel_version(prof, f"{at}.minKernel", filt["minKernel"])

    inc = entry.get("includes") or {}
    exc = entry.get("excludes") or {}
    if exc.get("arches") and _OUR_ARCH_NAMES & set(exc["arches"]):
        return False
    # excludes.caps: excluded when the cell has one of them; it has none.
    min_kernel = exc.get("minKernel")
    if min_kernel is not None and _running_kernel() >= _kernel_version(prof, where, min_kernel):
        return False
    if inc.get("arches") and not _OUR_ARCH_NAMES & set(inc["arches"]):
        return False
    if inc.get("caps"):
        return False  # needs capabilities, and the cell has none
    min_kernel = inc.get("minKernel")
    return min_kernel is None or _running_kernel() >= _kernel_version(prof, where, min_kernel)


def _action(prof: _Where, where: str, name: Any, errno_ret: int | None) -> int:
    if not isinstance(name, str):
        raise prof.error(where, f"expected an action name, got {_kind(name)}")
    if name in _UNSUPPORTED_ACTIONS:
        raise prof.error(where, f"{name} is not supported: {_UNSUPPORTED_ACTIONS[name]}")
    if name not in _ACTIONS:
        raise prof.error(where, f"unknown action {name!r} (expected one of {', '.join(_ACTIONS)})")
    action = _ACTIONS[name]
    if action is None:  # SCMP_ACT_ERRNO: Docker's default errno is EPERM
        return seccomp.ERRNO(errno.EPERM if errno_ret is None else errno_ret)
    return action


def _errno_value(prof: _Where, where: str, value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= _MAX_ERRNO:
        raise prof.error(where, f"{value!r} is not an errno number (0..{_MAX_ERRNO})")
    return value


def _check_arches(prof: _Where, data: dict[str, Any]) -> None:
    """Validate architectures/archMap. They are never used: we build for x86_64 only."""
    arches = data.get("architectures")
    if arches is not None:
        if not isinstance(arches, list):
            raise prof.error("architectures", f"expected a list, got {_kind(arches)}")
        _check_arch_names(prof, "architectures", arches)
    arch_map = data.get("archMap")
    if arch_map is None:
        return
    if not isinstance(arch_map, list):
        raise prof.error("archMap", f"expected a list, got {_kind(arch_map)}")
    for i, item in enumerate(arch_map):
        at = f"archMap[{i}]"
        if not isinstance(item, dict):
            raise prof.error(at, f"expected an object, got {_kind(item)}")
        _check_keys(prof, at, item, {"architecture", "subArchitectures", "comment"})
        _check_arch_names(prof, f"{at}.architecture", [item.get("architecture")])
        subs = item.get("subArchitectures") or []
        if not isinstance(subs, list):
            raise prof.error(f"{at}.subArchitectures", f"expected a list, got {_kind(subs)}")
        _check_arch_names(prof, f"{at}.subArchitectures", subs)


def _check_arch_names(prof: _Where, where: str, names: Iterable[Any]) -> None:
    for name in names:
        if name not in _ARCHES:
            raise prof.error(where, f"unknown architecture {name!r}")


def _check_keys(prof: _Where, where: str, obj: dict[str, Any], allowed: set[str]) -> None:
    # Unknown keys are refused: a typo ("defaultErrno") would otherwise silently
    # change what the filter does.
    extra = sorted(set(obj) - allowed)
    if extra:
        unknown = ", ".join(map(repr, extra))
        raise prof.error(where, f"unknown key(s) {unknown} (known: {', '.join(sorted(allowed))})")


_KERNEL_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def _kernel_version(prof: _Where, where: str, value: Any) -> tuple[int, int, int]:
    match = _KERNEL_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise prof.error(where, f'{value!r} is not a kernel version like "5.10"')
    return (int(match[1]), int(match[2]), int(match[3] or 0))


def _running_kernel() -> tuple[int, int, int]:
    match = _KERNEL_RE.match(os.uname().release)
    if not match:  # pragma: no cover - every Linux release starts with X.Y
        return (0, 0, 0)
    return (int(match[1]), int(match[2]), int(match[3] or 0))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _action_name(action: int) -> str:
    names = {
        seccomp.ALLOW: "SCMP_ACT_ALLOW",
        seccomp.KILL_THREAD: "SCMP_ACT_KILL_THREAD",
        seccomp.KILL_PROCESS: "SCMP_ACT_KILL_PROCESS",
        seccomp.TRAP: "SCMP_ACT_TRAP",
        seccomp.LOG: "SCMP_ACT_LOG",
        seccomp.NOTIFY: "SCMP_ACT_NOTIFY",
    }
    if action in names:
        return names[action]
    return f"SCMP_ACT_ERRNO({action & 0xFFFF})"
