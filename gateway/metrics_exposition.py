"""The Prometheus text of /metrics, written as prometheus-client's generate_latest writes it (same lines, same
order: tests/gateway/test_metrics_exposition.py compares them) for a fraction of the cost, and with every value read
on each scrape (nothing is served from an earlier one).

What a scrape used to spend its ~4 ms (one process) to ~8 ms (two, merging their files) on, and what is now done
once instead:
- each series' name and labels, escaped and joined: written once per series and kept;
- with one process, collect() built a sample object and a label dict per histogram bucket: the counters, gauges
  and histograms are read straight from their children here;
- with several processes (PROMETHEUS_MULTIPROC_DIR), prometheus-client re-read every process's file, parsed every
  key's JSON and rebuilt the merge on each scrape. A file's keys are only ever appended, so here they are parsed
  once, the values are read in one struct call per file, and the merge's plan (which values add up to which
  series) is worked out again only when a file or a key appears.
"""
from __future__ import annotations

import glob
import json
import mmap
import os
import struct
import threading

import prometheus_client.metrics as client_metrics
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as om
from prometheus_client.utils import floatToGoString

OPENMETRICS_SUFFIXES = ("_created", "_gsum", "_gcount")  # generate_latest puts these in gauges after their family
PROMETHEUS_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_CACHED_SERIES_AT_MOST = 100_000  # a bound on the kept series (label values are the gateway's, but still)


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _name(name: str) -> str:
    return om.escape_metric_name(name, om.UNDERSCORES)


class Exposition:
    """Writes families as generate_latest does, keeping each series' escaped name and labels and each family's
    HELP and TYPE lines."""

    def __init__(self):
        self._series: dict[tuple, str] = {}
        self._heads: dict[tuple, tuple[str, dict[str, str], dict[str, str]]] = {}

    def series(self, key: tuple, name: str, labels: dict) -> str:
        """`name{labels} ` (label names escaped, values quoted, in name order), kept under `key`."""
        found = self._series.get(key)
        if found is None:
            if len(self._series) > _CACHED_SERIES_AT_MOST:
                self._series.clear()
            labelled = ",".join(f'{om.escape_label_name(k, om.UNDERSCORES)}="{om._escape(v, om.ALLOWUTF8, False)}"'
                                for k, v in sorted(labels.items()))
            found = self._series[key] = f"{_name(name)}{{{labelled}}} " if labelled else f"{_name(name)} "
        return found

    def head(self, name: str, kind: str, documentation: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """The family's HELP and TYPE lines; its OpenMetrics samples' names -> suffix; each suffix's own lines."""
        key = (name, kind, documentation)
        found = self._heads.get(key)
        if found is None:
            shown = name + "_total" if kind == "counter" else name + "_info" if kind == "info" else name
            text = f"# HELP {_name(shown)} {_help(documentation)}\n# TYPE {_name(shown)} " \
                   f"{PROMETHEUS_TYPES.get(kind, kind)}\n"
            suffixes = {name + suffix: suffix for suffix in OPENMETRICS_SUFFIXES}
            heads = {suffix: f"# HELP {_name(name + suffix)} {_help(documentation)}\n"
                             f"# TYPE {_name(name + suffix)} gauge\n" for suffix in OPENMETRICS_SUFFIXES}
            found = self._heads[key] = (text, suffixes, heads)
        return found

    def families(self, families, out: list[str]) -> None:
        """Any collector's families (Metric objects), line by line."""
        for family in families:
            text, suffixes, heads = self.head(family.name, family.type, family.documentation)
            out.append(text)
            later: dict[str, list[str]] = {}
            for sample in family.samples:
                labels = sample.labels
                line = self.series((sample.name, tuple(labels.items())), sample.name, labels) + \
                    floatToGoString(sample.value)
                if sample.timestamp is not None:
                    line += f" {int(float(sample.timestamp) * 1000):d}"
                suffix = suffixes.get(sample.name)
                if suffix is None:
                    out.append(line + "\n")
                else:
                    later.setdefault(suffix, []).append(line + "\n")
            for suffix, lines in sorted(later.items()):
                out.append(heads[suffix])
                out.extend(lines)

    def registry(self, registry, out: list[str]) -> None:
        """A registry of this process's metrics: counters, gauges and histograms read from their children, any
        other collector through collect()."""
        with registry._lock:
            collectors = list(registry._collector_to_names)
            target_info = registry._target_info_metric() if registry._target_info else None
        if target_info is not None:
            self.families([target_info], out)
        created = client_metrics._use_created
        for collector in collectors:
            if type(collector) in (Counter, Gauge, Histogram):
                self._metric(collector, created, out)
            else:
                self.families(collector.collect(), out)

    def _metric(self, metric, created: bool, out: list[str]) -> None:
        name, names, kind = metric._name, metric._labelnames, metric._type
        text, _, heads = self.head(name, kind, metric._documentation)
        out.append(text)
        if metric._is_parent():
            with metric._lock:
                children = list(metric._metrics.items())
        else:
            children = [((), metric)]
        series, go = self.series, floatToGoString
        later: list[str] = []
        if kind == "counter":
            total, created_name = name + "_total", name + "_created"
            for values, child in children:
                out.append(series((total, values), total, dict(zip(names, values))) + go(child._value.get()) + "\n")
                if created:
                    later.append(series((created_name, values), created_name, dict(zip(names, values))) +
                                 go(child._created) + "\n")
        elif kind == "gauge":
            for values, child in children:
                out.append(series((name, values), name, dict(zip(names, values))) + go(child._value.get()) + "\n")
        else:  # histogram
            bucket, count, total, created_name = name + "_bucket", name + "_count", name + "_sum", name + "_created"
            bounds = [go(bound) for bound in metric._upper_bounds]
            with_sum = metric._upper_bounds[0] >= 0
            for values, child in children:
                labels = None
                acc = 0.0
                for le, value in zip(bounds, child._buckets):
                    acc += value.get()
                    line = self._series.get((bucket, values, le))
                    if line is None:
                        labels = labels or dict(zip(names, values))
                        line = series((bucket, values, le), bucket, {**labels, "le": le})
                    out.append(line + go(acc) + "\n")
                out.append(series((count, values), count, dict(zip(names, values))) + go(acc) + "\n")
                if with_sum:
                    out.append(series((total, values), total, dict(zip(names, values))) + go(child._sum.get()) +
                               "\n")
                if created:
                    later.append(series((created_name, values), created_name, dict(zip(names, values))) +
                                 go(child._created) + "\n")
        if later:
            out.append(heads["_created"])
            out.extend(later)


class _ProcessFile:
    """One process's file of values (prometheus-client's MmapedDict: a used-bytes count, then entries of a key, its
    value and a timestamp, only ever appended), mapped and parsed as far as it is used."""

    def __init__(self, path: str):
        self.path = path
        parts = os.path.basename(path).split("_")
        self.kind = parts[0]
        self.mode = parts[1] if self.kind == "gauge" else None
        self.pid = parts[2][:-3] if self.kind == "gauge" else None
        self.live_gauge = self.kind == "gauge" and parts[1].startswith("live")
        self._file = open(path, "rb")
        self.inode = os.fstat(self._file.fileno()).st_ino
        self._map = None
        self.keys: list[str] = []
        self._offsets: list[int] = []
        self._parsed = 8
        self._values = struct.Struct("=")

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()

    def refresh(self) -> bool:
        """Read the keys appended since the last look; whether there were any."""
        used = self._used()
        if used <= self._parsed:
            return False
        data, position = self._map, self._parsed
        while position < used:
            length = struct.unpack_from("i", data, position)[0]
            if length + position > used:
                raise RuntimeError(f"Read beyond file size detected, {self.path} is corrupted.")
            position += 4
            self.keys.append(data[position:position + length].decode("utf-8"))
            position += length + (8 - (length + 4) % 8)
            self._offsets.append(position)
            position += 16
        self._parsed = position
        gaps, end = [], self._offsets[0]
        for offset in self._offsets:
            gaps.append(f"{offset - end}xd")
            end = offset + 8
        self._values = struct.Struct("=" + "".join(gaps))
        return True

    def values(self) -> tuple[float, ...]:
        """Each key's value, in the keys' order."""
        return self._values.unpack_from(self._map, self._offsets[0]) if self._offsets else ()

    def _used(self) -> int:
        size = os.fstat(self._file.fileno()).st_size
        if size < 8:
            return 8
        if self._map is None or len(self._map) != size:
            if self._map is not None:
                self._map.close()
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        used = struct.unpack_from("i", self._map, 0)[0]
        if used > len(self._map):  # grown since the size was read
            self._map.close()
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return min(used, len(self._map))


# The gauge modes merged here; others (the most recent value) go through prometheus-client's own merge.
_GAUGE_MODES = {"all": "last", "liveall": "last", "sum": "sum", "livesum": "sum", "min": "min", "livemin": "min",
                "max": "max", "livemax": "max"}
_PER_PROCESS_MODES = ("all", "liveall")


class ProcessFiles:
    """Every process's values from the files of PROMETHEUS_MULTIPROC_DIR, merged as prometheus-client's
    MultiProcessCollector merges them (counters and histograms summed, gauges per their mode)."""

    def __init__(self, folder: str, exposition: Exposition):
        self.folder = folder
        self.exposition = exposition
        self._lock = threading.Lock()
        self._files: dict[str, _ProcessFile] = {}
        self._plan_of: tuple | None = None
        self._plan: tuple[list, list] | None = None  # (cells, families), or None: prometheus-client merges
        self._keys: dict[str, tuple] = {}

    def render(self, out: list[str]) -> None:
        with self._lock:
            files = self._look()
            plan_of = tuple((file.path, file.inode, len(file.keys)) for file in files)
            if plan_of != self._plan_of:
                self._plan = self._compile(files)
                self._plan_of = plan_of
            if self._plan is None:
                self.exposition.families(MultiProcessCollector.merge([file.path for file in files]), out)
                return
            values: list[float] = []
            for file in files:
                values.extend(file.values())
            cells, families = self._plan
            self._write(cells, families, values, out)

    def _look(self) -> list[_ProcessFile]:
        """The folder's files, in glob's order (the merge's order), each read as far as it is used."""
        paths = glob.glob(os.path.join(self.folder, "*.db"))
        for gone in set(self._files) - set(paths):
            self._files.pop(gone).close()
        files = []
        for path in paths:
            file = self._files.get(path)
            try:
                if file is not None and os.stat(path).st_ino != file.inode:  # replaced
                    self._files.pop(path).close()
                    file = None
                if file is None:
                    file = self._files[path] = _ProcessFile(path)
            except FileNotFoundError:
                if os.path.basename(path).startswith("gauge_live"):  # a dead process's, dropped meanwhile
                    continue
                raise
            file.refresh()
            files.append(file)
        return files

    def _key(self, key: str) -> tuple:
        found = self._keys.get(key)
        if found is None:
            metric_name, name, labels, help_text = json.loads(key)
            found = self._keys[key] = (metric_name, name, tuple(sorted(labels.items())), help_text)
        return found

    def _compile(self, files: list[_ProcessFile]):
        """Which values make each series, as MultiProcessCollector._read_metrics and _accumulate_metrics do it:
        `cells` are worked out in order from the values (a sum, the last, the least or greatest of some, or a
        bucket's running total), `families` say which cell each line shows. None when a gauge keeps the most
        recent value (left to prometheus-client)."""
        families: dict[str, list] = {}  # name -> [Metric, mode, [(sample name, labels, value index)]]
        index = 0
        for file in files:
            for key in file.keys:
                metric_name, name, labels, help_text = self._key(key)
                family = families.get(metric_name)
                if family is None:
                    family = families[metric_name] = [Metric(metric_name, help_text, file.kind), None, []]
                if file.kind == "gauge":
                    family[1] = file.mode
                    family[2].append((name, labels + (("pid", file.pid),), index))
                else:
                    family[2].append((name, labels, index))
                index += 1
        cells: list[tuple] = []

        def cell(operation: str, *arguments) -> list:
            made = [len(cells), operation, *arguments]
            cells.append(made)
            return made

        shown = []
        for metric, mode, samples in families.values():
            gauge = metric.type == "gauge"
            if gauge and mode not in _GAUGE_MODES:
                return None
            series: dict[tuple, dict[tuple, list]] = {}
            buckets: dict[tuple, dict[float, list]] = {}
            for name, labels, value in samples:
                if gauge and mode not in _PER_PROCESS_MODES:
                    labels = tuple(label for label in labels if label[0] != "pid")
                if gauge and _GAUGE_MODES[mode] == "last":
                    series.setdefault(labels, {})[(name, labels)] = cell("last", value)
                elif metric.type == "histogram" and any(label[0] == "le" for label in labels):
                    bound = float(next(label[1] for label in labels if label[0] == "le"))
                    without_le = tuple(label for label in labels if label[0] != "le")
                    buckets.setdefault(without_le, {}).setdefault(bound, []).append(value)
                else:
                    operation = _GAUGE_MODES[mode] if gauge else "sum"
                    group = series.setdefault(labels, {})
                    if (name, labels) not in group:
                        group[(name, labels)] = cell(operation, [])
                    group[(name, labels)][2].append(value)
            for labels, by_bound in buckets.items():
                group = series.setdefault(labels, {})
                running = None
                for bound in sorted(by_bound):
                    running = group[(metric.name + "_bucket", labels + (("le", floatToGoString(bound)),))] = \
                        cell("running", running[0] if running else None, by_bound[bound])
                group[(metric.name + "_count", labels)] = cell("same", running[0])
            text, suffixes, heads = self.exposition.head(metric.name, metric.type, metric.documentation)
            lines, later = [], {}
            for group in series.values():
                for (name, labels), made in group.items():
                    line = (self.exposition.series((name, labels), name, dict(labels)), made[0])
                    suffix = suffixes.get(name)
                    (lines if suffix is None else later.setdefault(suffix, [])).append(line)
            for suffix, more in sorted(later.items()):
                lines.append((heads[suffix], None))
                lines.extend(more)
            shown.append((text, lines))
        return [tuple(made[1:]) for made in cells], shown

    @staticmethod
    def _write(cells: list[tuple], families: list, values: list[float], out: list[str]) -> None:
        worked: list[float] = []
        for operation, *arguments in cells:
            if operation == "sum":
                acc = 0.0
                for index in arguments[0]:
                    acc += values[index]
            elif operation == "running":
                acc = 0.0
                for index in arguments[1]:
                    acc += values[index]
                if arguments[0] is not None:
                    acc = worked[arguments[0]] + acc
            elif operation == "last":
                acc = values[arguments[0]]
            elif operation == "same":
                acc = worked[arguments[0]]
            else:  # min, max: the first value, replaced by each later one that is less (greater)
                indices = arguments[0]
                acc = values[indices[0]]
                for index in indices[1:]:
                    if (values[index] < acc) if operation == "min" else (values[index] > acc):
                        acc = values[index]
            worked.append(acc)
        go = floatToGoString
        for text, lines in families:
            out.append(text)
            for prefix, made in lines:
                out.append(prefix if made is None else prefix + go(worked[made]) + "\n")
