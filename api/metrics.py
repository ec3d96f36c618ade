"""GET /metrics: Prometheus text, from counters every worker keeps in Redis.

So the figures are the service's, not one API process's: queue depth,
running submissions, live workers, submissions, cells run, verdicts,
recoveries, callbacks, a histogram of judging time (worker side), and the
image pulls workers made of images they lacked (worker/imagepull.py).
"""

from __future__ import annotations

from typing import Any

from rq.queue import Queue

from worker.store import DURATION_BUCKETS, LEASES, METRICS, PULL_BUCKETS, QUEUE


def render(
    counters: dict[str, str], queued: int, running: int, workers: list[dict[str, Any]]
) -> str:
    def number(key: str) -> float:
        return float(counters.get(key, 0) or 0)

    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {value:g}")

    metric("cellblock_queue_depth", "gauge", "Submissions waiting in the queue.", [("", queued)])
    metric("cellblock_running", "gauge", "Submissions being judged (leases held).", [("", running)])
    metric("cellblock_workers", "gauge", "Live workers (heartbeat seen).", [("", len(workers))])
    contained = sum(1 for w in workers if (w.get("selfcheck") or {}).get("contained"))
    metric(
        "cellblock_workers_selfcheck_contained",
        "gauge",
        "Live workers whose last escape self-check stayed contained.",
        [("", contained)],
    )
    metric(
        "cellblock_submissions_total",
        "counter",
        "Submissions accepted.",
        [("", number("submissions"))],
    )
    metric(
        "cellblock_runs_total",
        "counter",
        "Cells run for submissions (compiles + tests).",
        [("", number("runs"))],
    )
    metric(
        "cellblock_finished_total",
        "counter",
        "Submissions finished, by status.",
        [(f'{{status="{s}"}}', number(f"finished:{s}")) for s in ("done", "failed")],
    )
    verdicts = sorted(k.split(":", 1)[1] for k in counters if k.startswith("verdict:"))
    metric(
        "cellblock_verdicts_total",
        "counter",
        "Finished submissions by verdict.",
        [(f'{{verdict="{v}"}}', number(f"verdict:{v}")) for v in verdicts],
    )
    metric(
        "cellblock_recovered_total",
        "counter",
        "Runs presumed lost (worker killed) and queued again or failed.",
        [("", number("recovered"))],
    )
    metric(
        "cellblock_callbacks_total",
        "counter",
        "Callbacks by outcome.",
        [
            ('{outcome="delivered"}', number("callbacks_delivered")),
            ('{outcome="failed"}', number("callbacks_failed")),
        ],
    )
    metric(
        "cellblock_image_pulls_total",
        "counter",
        "Pulls workers made of images they lacked, by result.",
        [(f'{{result="{r}"}}', number(f"image_pulls:{r}")) for r in ("ok", "failed")],
    )

    def histogram(name: str, help_text: str, key: str, buckets: tuple[float, ...]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} histogram")
        cumulative = 0.0
        for bound in buckets:
            cumulative += number(f"{key}_bucket:{bound!r}")
            out.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative:g}')
        cumulative += number(f"{key}_bucket:+Inf")
        out.append(f'{name}_bucket{{le="+Inf"}} {cumulative:g}')
        out.append(f"{name}_sum {number(f'{key}_sum'):g}")
        out.append(f"{name}_count {number(f'{key}_count'):g}")

    histogram(
        "cellblock_judge_seconds",
        "Time a worker spent on a submission.",
        "duration",
        DURATION_BUCKETS,
    )
    histogram(
        "cellblock_image_pull_seconds",
        "Time a worker spent pulling an image it lacked (ok or failed).",
        "image_pull",
        PULL_BUCKETS,
    )
    return "\n".join(out) + "\n"


async def collect(aredis, workers: list[dict[str, Any]]) -> str:
    raw = await aredis.hgetall(METRICS)
    counters = {k.decode(): v.decode() for k, v in raw.items()}
    queued = await aredis.llen(Queue.redis_queue_namespace_prefix + QUEUE)
    running = await aredis.zcard(LEASES)
    return render(counters, queued, running, workers)
