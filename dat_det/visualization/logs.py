"""mmengine json logs (``<timestamp>/vis_data/<timestamp>.json``): curves and iteration time.

Each line is one record: training lines carry ``iter``/``lr``/``loss*``/``time``, validation
lines the metrics (``coco/bbox_mAP``...) with ``step`` the epoch (or iteration) validated.
"""
import json
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dat_det.utils.errors import UserInputError


@dataclass
class RunLog:
    """Records of one run, split into training and validation lines."""

    path: str
    train: List[Dict] = field(default_factory=list)
    val: List[Dict] = field(default_factory=list)

    def keys(self) -> List[str]:
        return sorted({k for r in self.train + self.val for k in r})


def load_json_log(path: str) -> RunLog:
    """Parse an mmengine json log.

    Raises:
        UserInputError: missing file, a line that is not json, or no records.
    """
    log = RunLog(path)
    try:
        with open(path) as f:
            lines = [line for line in f if line.strip()]
    except FileNotFoundError as err:
        raise UserInputError(f'log file not found: {path}') from err
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserInputError(f'{path}:{number} is not a json log line') from err
        (log.train if 'lr' in record or 'loss' in record else log.val).append(record)
    if not log.train and not log.val:
        raise UserInputError(f'no log records in {path}')
    return log


def curve(log: RunLog, key: str):
    """``(xs, ys, x_label)`` of ``key``: training keys over iterations, metrics over ``step``."""
    train = [r for r in log.train if key in r]
    if train:
        return [r['step'] if 'step' in r else i for i, r in enumerate(train)], \
            [r[key] for r in train], 'iteration'
    val = [r for r in log.val if key in r]
    return [r.get('step', i) for i, r in enumerate(val)], [r[key] for r in val], 'validation step'


def plot_curves(logs: Sequence[RunLog], keys: Sequence[str], legends: Sequence[str],
                title: str = '') -> Figure:
    """One subplot per key, one line per run.

    Raises:
        UserInputError: a key that no run logged.
    """
    for key in keys:
        if not any(curve(log, key)[0] for log in logs):
            known = sorted({k for log in logs for k in log.keys()})
            raise UserInputError(f"key '{key}' is in none of the logs; logged keys: {known}")
    fig = Figure(figsize=(6, 3.2 * len(keys)), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), 1, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        for log, legend in zip(logs, legends):
            xs, ys, x_label = curve(log, key)
            if xs:
                ax.plot(xs, ys, marker='o' if len(xs) < 30 else None, markersize=3,
                        label=legend)
                ax.set_xlabel(x_label)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def iteration_time(log: RunLog) -> Dict[str, float]:
    """Mean training-iteration ``time`` (s) over the run and per epoch (first line of each
    epoch dropped: it includes the data-loader start)."""
    by_epoch: Dict[int, List[float]] = {}
    for record in log.train:
        if 'time' in record:
            by_epoch.setdefault(record.get('epoch', 0), []).append(record['time'])
    if not by_epoch:
        raise UserInputError(f'{log.path} has no training iteration times')
    steady = {e: (t[1:] or t) for e, t in by_epoch.items()}
    means = {e: statistics.mean(t) for e, t in steady.items()}
    times = [t for ts in steady.values() for t in ts]
    return dict(mean=statistics.mean(times), std=statistics.pstdev(times),
                slowest_epoch=max(means, key=means.get), fastest_epoch=min(means, key=means.get),
                **{f'epoch_{e}': m for e, m in means.items()})
