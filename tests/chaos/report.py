"""What a case found: facts (acknowledged, found after recovery) and invariants that held or not."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    invariant: str
    held: bool
    detail: str = ""


@dataclass
class CaseReport:
    name: str
    title: str
    facts: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def fact(self, text: str) -> None:
        self.facts.append(text)

    def check(self, invariant: str, held: bool, detail: str = "") -> None:
        self.checks.append(Check(invariant, held, detail))

    @property
    def failed(self) -> bool:
        """A violated invariant, or a case that could not finish, fails the run; a skip does not."""
        return self.error is not None or any(not c.held for c in self.checks)


def render(report: CaseReport) -> str:
    if report.skipped is not None:
        status = "SKIPPED"
    elif report.error is not None:
        status = "ERROR"
    else:
        status = "FAIL" if report.failed else "ok"
    lines = [f"== {report.name}: {report.title}  [{status}, {report.seconds:.0f} s]"]
    if report.skipped is not None:
        lines.append(f"   skipped: {report.skipped}")
    lines.extend(f"   {fact}" for fact in report.facts)
    for check in report.checks:
        mark = "ok  " if check.held else "FAIL"
        lines.append(
            f"   {mark} {check.invariant}" + (f": {check.detail}" if check.detail and not check.held else "")
        )
    if report.error is not None:
        lines.append(f"   ERROR the case could not finish: {report.error}")
    return "\n".join(lines)


def summary(reports: list[CaseReport]) -> str:
    failed = [r.name for r in reports if r.failed]
    skipped = [r.name for r in reports if r.skipped is not None]
    passed = [r.name for r in reports if not r.failed and r.skipped is None]
    parts = [f"{len(passed)} held", f"{len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")]
    if skipped:
        parts.append(f"{len(skipped)} skipped ({', '.join(skipped)})")
    return "chaos: " + ", ".join(parts)
