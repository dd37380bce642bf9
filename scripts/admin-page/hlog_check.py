"""The switch's .hlog read by another HdrHistogram implementation (PyPI's
hdrhistogram, module hdrh): every interval's decoded count and percentiles
equal what /admin/timeline says of the same interval.

    python hlog_check.py BASE_URL OPERATOR_KEY

Run by scripts/test-admin-page once the switch has served load.
"""

import json
import math
import sys
import tempfile
import urllib.request

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

base, key = sys.argv[1], sys.argv[2]
STAGES = ["total", "journal_wait", "decide", "decode"]
# As quantiles, so the target count is the same floating-point product the
# switch computes.
QUANTILES = [("p50_us", 0.5), ("p90_us", 0.9), ("p99_us", 0.99), ("p999_us", 0.999)]


def get(path):
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.read()


def value_at(histogram, quantile):
    """The value at `quantile` as HdrHistogram's Java reference (and the
    Rust crate the switch uses) define it: the first value whose cumulative
    count reaches ceil(quantile * count). hdrh rounds that target
    half up instead, so it is asked for the percentile whose rounded target
    is the ceiling."""
    count = histogram.get_total_count()
    target = max(1, math.ceil(quantile * count))
    return histogram.get_value_at_percentile(100 * (target - 0.5 + 1e-6) / count)


def fail(message):
    print(f"hlog: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


timeline = json.loads(get("/admin/timeline?resolution=1s"))
checked = 0
for stage in STAGES:
    log = get(f"/admin/timeline.hlog?resolution=1s&channel=iso&stage={stage}")
    with tempfile.NamedTemporaryFile(suffix=".hlog") as file:
        file.write(log)
        file.flush()
        reader = HistogramLogReader(file.name, HdrHistogram(1, 60_000_000, 2))
        decoded = {}
        while (histogram := reader.get_next_interval_histogram()) is not None:
            decoded[round(histogram.get_start_time_stamp())] = histogram
    if len(decoded) < 5:
        fail(f"{stage}: only {len(decoded)} intervals in the .hlog")
    busy = 0
    for interval in timeline["intervals"]:
        histogram = decoded.get(interval["start_ms"])
        if histogram is None:
            # An interval closed between the two requests.
            continue
        shown = next(p for p in interval["latency_us"] if p["channel"] == "iso" and p["stage"] == stage)
        count = histogram.get_total_count()
        if count != shown["count"]:
            fail(f"{stage} at {interval['start_ms']}: hlog count {count}, JSON {shown['count']}")
        if count == 0:
            continue
        busy += 1
        read = {name: value_at(histogram, q) for name, q in QUANTILES}
        read["max_us"] = histogram.get_max_value()
        for name, value in read.items():
            if value != shown[name]:
                fail(f"{stage} at {interval['start_ms']}: hlog {name} {value}, JSON {shown[name]}")
        checked += 1
    if busy < 5:
        fail(f"{stage}: only {busy} intervals with traffic matched the JSON")
print(f"hlog: {checked} busy intervals of 4 stages: counts, p50/p90/p99/p99.9 and max equal the JSON")
