"""Reads the same bars from signal9-api as JSON pages and as one Arrow IPC
stream, and reports whether they are the same bars; then reads the stream
into pandas and polars, as the README shows.

usage: arrow_against_api.py BASE_URL TOKEN SYMBOLS TIMEFRAME START END [SORT]
prints one JSON object: json_bars, arrow_bars, batches, differences (the
first few), pandas_rows, polars_rows, schema.
"""

import io
import json
import sys
import urllib.parse
import urllib.request

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc

base, token, symbols, timeframe, start, end = sys.argv[1:7]
sort = sys.argv[7] if len(sys.argv) > 7 else "asc"
auth = {"Authorization": f"Bearer {token}"}


def get(params, accept):
    url = f"{base}/v2/stocks/bars?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={**auth, "Accept": accept})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.headers.get("Content-Type"), response.read()


params = {"symbols": symbols, "timeframe": timeframe, "start": start, "end": end, "sort": sort}

# JSON: every page, in the order the API gives them.
json_rows = []
token_ = None
while True:
    page_params = dict(params, limit=10000)
    if token_:
        page_params["page_token"] = token_
    _, body = get(page_params, "application/json")
    page = json.loads(body)
    for symbol, bars in sorted((page.get("bars") or {}).items()):
        for b in bars:
            json_rows.append((symbol, b["t"], b["o"], b["h"], b["l"], b["c"], b["v"], b["n"], b["vw"]))
    token_ = page.get("next_page_token")
    if not token_:
        break

# Arrow: one stream, the whole range.
content_type, body = get(params, "application/vnd.apache.arrow.stream")
reader = pa.ipc.open_stream(io.BytesIO(body))
table = reader.read_all()
batches = len(table.to_batches())
arrow_rows = []
for row in table.to_pylist():
    t = row["timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ")
    arrow_rows.append(
        (
            row["symbol"],
            t,
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["volume"],
            row["trade_count"],
            row["vwap"],
        )
    )

differences = []
for i, (a, b) in enumerate(zip(json_rows, arrow_rows)):
    if a != b:
        differences.append({"row": i, "json": a, "arrow": b})
        if len(differences) >= 5:
            break

# The README's two lines: into pandas, into polars.
frame = pa.ipc.open_stream(io.BytesIO(body)).read_pandas()
polars_frame = pl.from_arrow(pa.ipc.open_stream(io.BytesIO(body)).read_all())
assert isinstance(frame, pd.DataFrame)

print(
    json.dumps(
        {
            "content_type": content_type,
            "json_bars": len(json_rows),
            "arrow_bars": len(arrow_rows),
            "batches": batches,
            "differences": differences,
            "pandas_rows": len(frame),
            "pandas_timestamp_dtype": str(frame["timestamp"].dtype),
            "polars_rows": polars_frame.height,
            "schema": [f"{f.name}:{f.type}" for f in table.schema],
        }
    )
)
