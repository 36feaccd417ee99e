"""The chaos run's table: one row per scenario, the columns issue 13 asks for."""

from __future__ import annotations

from chaos.load import Tally

COLUMNS = ("scenario", "sent", "ok", "shed 503", "409", "errors", "p99", "max latency",
           "lost", "dup", "recovered", "recover in")  # fmt: skip


def row(t: Tally) -> tuple[str, ...]:
    return (
        t.scenario,
        str(t.sent),
        str(t.ok),
        str(t.shed),
        str(t.in_flight),
        str(t.errors),
        f"{t.p99_s:.2f}s",
        f"{t.max_latency_s:.2f}s",
        "-" if t.lost is None else str(t.lost),
        "-" if t.duplicates is None else str(t.duplicates),
        {True: "yes", False: "NO", None: "-"}[t.recovered],
        "-" if t.recover_s is None else f"{t.recover_s:.2f}s",
    )


def render(tallies: list[Tally]) -> str:
    rows = [COLUMNS, *(row(t) for t in tallies)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {t.scenario}: {note}" for t in tallies for note in t.notes]
    notes += [
        f"  {t.scenario}: answers {dict(t.statuses)} {'; '.join(t.transport_errors)}"
        for t in tallies
        if t.errors
    ]
    return "\n".join(lines + (["notes:", *notes] if notes else []))
