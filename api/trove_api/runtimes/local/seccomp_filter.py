"""The syscall filter every local sandbox runs under, compiled once at start-up to a BPF file.

The rules follow Docker's default profile (moby/profiles, seccomp/default_linux.go,
https://github.com/moby/profiles/blob/main/seccomp/default_linux.go) for a container holding
none of the capabilities that profile keys on (CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_TIME, …),
which is what a sandbox is. Moby writes it as an allowlist with EPERM as the default; this is the
same boundary written as a denylist (default ALLOW), because an allowlist compiled by an older
libseccomp than the kernel would refuse every syscall newer than the library, breaking glibc's
fast paths (fchmodat2, futex_wait, …) on newer kernels. Where this list goes past moby it says so.
bubblewrap loads the filter last, after it has built the sandbox, so bwrap itself is not bound
by it; everything the command runs is, and a filter cannot be removed once loaded.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

# Allowed in moby only with CAP_SYS_ADMIN: mounts, namespaces, tracing, kernel logs.
_NEEDS_SYS_ADMIN = (
    "bpf", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
    "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount", "mount_setattr",
    "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
    "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
)  # fmt: skip
# Allowed in moby only with another capability the sandbox does not hold.
_NEEDS_OTHER_CAPS = (
    "open_by_handle_at",  # CAP_DAC_READ_SEARCH
    "reboot",  # CAP_SYS_BOOT
    "chroot",  # CAP_SYS_CHROOT
    "delete_module", "init_module", "finit_module",  # CAP_SYS_MODULE
    "acct",  # CAP_SYS_PACCT
    "kcmp", "pidfd_getfd", "process_madvise",  # CAP_SYS_PTRACE
    "iopl", "ioperm",  # CAP_SYS_RAWIO
    "settimeofday", "stime", "clock_settime", "clock_settime64",  # CAP_SYS_TIME
    "vhangup",  # CAP_SYS_TTY_CONFIG
    "get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node",  # CAP_SYS_NICE
)  # fmt: skip
# Not in moby's allowlist at all.
_NEVER = (
    "add_key", "keyctl", "request_key",  # the kernel keyring is not namespaced
    "kexec_load", "kexec_file_load", "create_module", "get_kernel_syms", "query_module",
    "pivot_root", "swapon", "swapoff", "userfaultfd", "uselib", "ustat", "sysfs", "_sysctl",
    "nfsservctl", "vm86", "vm86old", "migrate_pages", "move_pages",
    "io_uring_setup", "io_uring_enter", "io_uring_register",  # dropped by moby in 2023
    # Stricter than today's moby, which allows it again: a file handle is a way around path
    # checks, and nothing a sandboxed command runs needs one.
    "name_to_handle_at",
)  # fmt: skip

# Namespace flags clone(2) must not carry (moby: MaskedEqual 0 on argument 0 without
# CAP_SYS_ADMIN); clone3's flags sit behind a pointer seccomp cannot read, so moby answers
# ENOSYS and libc falls back to clone.
_CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
# personality(2): moby allows exactly PER_LINUX, PER_LINUX32, UNAME26, their union and the
# 0xffffffff query. libseccomp takes one comparison per argument in a rule, so this refuses
# everything above PER_LINUX32|UNAME26 instead: every flag that weakens the process
# (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, …) lies above it; stricter than moby
# in that the 0xffffffff query is refused too.
_PERSONALITY_MAX = 0x20008
# Socket families moby leaves out: AF_ALG (kernel crypto API), AF_VSOCK (host/guest sockets,
# not isolated by network namespaces).
_BLOCKED_SOCKET_FAMILIES = (38, 40)
# Past moby: TIOCSTI (push input into a terminal) and TIOCLINUX; bwrap --new-session already
# keeps the sandbox off the server's terminal, this refuses the calls themselves.
_BLOCKED_IOCTLS = (0x5412, 0x541C)


class SeccompUnavailableError(RuntimeError):
    pass


def compile_filter(target: Path) -> None:
    """Write the BPF program to ``target`` (mode 0600), replacing it atomically."""
    try:
        import pyseccomp as seccomp  # type: ignore[import-untyped]
    except (ImportError, OSError, RuntimeError) as exc:  # the library loads libseccomp.so.2
        raise SeccompUnavailableError(f"libseccomp cannot be loaded ({exc})") from exc

    deny = seccomp.ERRNO(errno.EPERM)
    syscall_filter = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    if seccomp.system_arch() == seccomp.Arch.X86_64:
        # A 64-bit process can still enter through the i386 and x32 syscall tables; without
        # these, their calls would bypass the rules (bad-arch calls kill the process instead).
        for arch in (seccomp.Arch.X86, seccomp.Arch.X32):
            if not syscall_filter.exist_arch(arch):
                syscall_filter.add_arch(arch)
    for name in (*_NEEDS_SYS_ADMIN, *_NEEDS_OTHER_CAPS, *_NEVER):
        _add(syscall_filter, deny, name)
    for flag in _CLONE_NAMESPACE_FLAGS:
        _add(syscall_filter, deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    _add(syscall_filter, seccomp.ERRNO(errno.ENOSYS), "clone3")
    _add(syscall_filter, deny, "personality", seccomp.Arg(0, seccomp.GT, _PERSONALITY_MAX))
    for family in _BLOCKED_SOCKET_FAMILIES:
        _add(syscall_filter, deny, "socket", seccomp.Arg(0, seccomp.EQ, family))
    for request in _BLOCKED_IOCTLS:
        _add(syscall_filter, deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    # A maintenance command may compile beside a live server: each writes its own temp file.
    temp = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(temp, "wb", opener=lambda path, flags: os.open(path, flags, 0o600)) as out:
        syscall_filter.export_bpf(out)
    os.replace(temp, target)


def _add(syscall_filter: object, action: int, name: str, *args: object) -> None:
    try:
        syscall_filter.add_rule(action, name, *args)  # type: ignore[attr-defined]
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # A syscall newer than this libseccomp (e.g. lsm_* with 2.5.4): the library cannot name
        # it, so it stays allowed until libseccomp is upgraded. Said once per start-up.
        log.info("seccomp: libseccomp does not know %s; it is not filtered", name)
