"""Points the official Alpaca SDK (alpaca-py) at signal9-api and at the
simulator behind it, and compares what each returns.

Usage: python sdk_against_api.py API_BASE TOKEN SIM_BASE START END

Reads multi-symbol minute bars (several pages of 10,000), one symbol's
daily bars, crypto bars, and assets, through:
- StockHistoricalDataClient(api_key="signal9", secret_key=TOKEN, url_override=API_BASE)
- StockHistoricalDataClient(oauth_token=TOKEN, url_override=API_BASE) (a Bearer token)
- TradingClient("signal9", TOKEN, url_override=API_BASE)
and the same requests against the simulator with its own key. Prints one
JSON object with the counts and every difference found; exits non-zero on
a difference.
"""

import json
import sys
from datetime import datetime

from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetClass
from alpaca.trading.requests import GetAssetsRequest

SYMBOLS = ["AAPL", "MSFT", "BRK.B"]


def bars_of(result, symbols):
    out = {}
    for s in symbols:
        out[s] = [
            (b.timestamp.isoformat(), b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.vwap)
            for b in result.data.get(s, [])
        ]
    return out


def main() -> None:
    api, token, sim, start, end = sys.argv[1:6]
    start, end = datetime.fromisoformat(start), datetime.fromisoformat(end)
    differences = []

    def compare(what, ours, theirs):
        if ours != theirs:
            for s in sorted(set(ours) | set(theirs)):
                a, b = ours.get(s, []), theirs.get(s, [])
                if a != b:
                    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    differences.append(f"{what} {s}: {len(a)} bars from signal9, {len(b)} from the simulator; first difference at {first}")

    minute = StockBarsRequest(symbol_or_symbols=SYMBOLS, timeframe=TimeFrame.Minute, start=start, end=end)
    daily = StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Day, start=start, end=end)
    direct = StockHistoricalDataClient("sim-key", "sim-secret", url_override=sim)
    keyed = StockHistoricalDataClient("signal9", token, url_override=api)
    bearer = StockHistoricalDataClient(oauth_token=token, url_override=api)

    ours = bars_of(keyed.get_stock_bars(minute), SYMBOLS)
    theirs = bars_of(direct.get_stock_bars(minute), SYMBOLS)
    compare("1Min", ours, theirs)
    again = bars_of(bearer.get_stock_bars(minute), SYMBOLS)
    compare("1Min (Bearer, from the store)", again, theirs)
    compare("1Day", bars_of(bearer.get_stock_bars(daily), ["AAPL"]), bars_of(direct.get_stock_bars(daily), ["AAPL"]))

    crypto_req = CryptoBarsRequest(symbol_or_symbols=["BTC/USD"], timeframe=TimeFrame.Hour, start=start, end=end)
    crypto_ours = bars_of(CryptoHistoricalDataClient("signal9", token, url_override=api).get_crypto_bars(crypto_req), ["BTC/USD"])
    crypto_theirs = bars_of(CryptoHistoricalDataClient("sim-key", "sim-secret", url_override=sim).get_crypto_bars(crypto_req), ["BTC/USD"])
    compare("crypto 1Hour", crypto_ours, crypto_theirs)

    trading = TradingClient("signal9", token, paper=True, url_override=api)
    trading_sim = TradingClient("sim-key", "sim-secret", paper=True, url_override=sim)
    equities = trading.get_all_assets(GetAssetsRequest(asset_class=AssetClass.US_EQUITY))
    equities_sim = trading_sim.get_all_assets(GetAssetsRequest(asset_class=AssetClass.US_EQUITY))
    ids, ids_sim = sorted(a.id for a in equities), sorted(a.id for a in equities_sim)
    if ids != ids_sim:
        differences.append(f"assets: {len(ids)} from signal9, {len(ids_sim)} from the simulator")
    aapl, aapl_sim = trading.get_asset("AAPL"), trading_sim.get_asset("AAPL")
    if (aapl.id, aapl.symbol, aapl.status, aapl.exchange) != (aapl_sim.id, aapl_sim.symbol, aapl_sim.status, aapl_sim.exchange):
        differences.append(f"asset AAPL: {aapl!r} vs {aapl_sim!r}")
    by_id = trading.get_asset(str(aapl.id))
    if by_id.symbol != "AAPL":
        differences.append(f"asset by id: {by_id.symbol}")

    print(
        json.dumps(
            {
                "minute_bars": {s: len(v) for s, v in ours.items()},
                "daily_bars": len(bars_of(keyed.get_stock_bars(daily), ["AAPL"])["AAPL"]),
                "crypto_bars": len(crypto_ours["BTC/USD"]),
                "assets": len(equities),
                "differences": differences,
            }
        )
    )
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
