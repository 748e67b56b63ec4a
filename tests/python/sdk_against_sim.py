"""Runs the official Alpaca SDK (alpaca-py) against an Alpaca-compatible
base URL and fails on the first answer it cannot parse.

Usage: python sdk_against_sim.py BASE_URL KEY SECRET START END

Prints one JSON object: how many assets, bars and pages each call saw.
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


def main() -> None:
    base, key, secret, start, end = sys.argv[1:6]
    start, end = datetime.fromisoformat(start), datetime.fromisoformat(end)
    trading = TradingClient(key, secret, paper=True, url_override=base)
    equities = trading.get_all_assets(GetAssetsRequest(asset_class=AssetClass.US_EQUITY))
    crypto = trading.get_all_assets(GetAssetsRequest(asset_class=AssetClass.CRYPTO))
    aapl = trading.get_asset("AAPL")
    account = trading.get_account()

    stocks = StockHistoricalDataClient(key, secret, url_override=base)
    symbols = ["AAPL", "MSFT", "BRK.B"]
    # A page limit far below the bars asked for makes the SDK follow
    # next_page_token across many pages.
    stock_bars = stocks.get_stock_bars(
        StockBarsRequest(symbol_or_symbols=symbols, timeframe=TimeFrame.Minute, start=start, end=end)
    )
    crypto_client = CryptoHistoricalDataClient(key, secret, url_override=base)
    crypto_bars = crypto_client.get_crypto_bars(
        CryptoBarsRequest(symbol_or_symbols=["BTC/USD"], timeframe=TimeFrame.Day, start=start, end=end)
    )
    print(
        json.dumps(
            {
                "equities": len(equities),
                "crypto_assets": len(crypto),
                "aapl_symbol": aapl.symbol,
                "account_status": str(account.status.value),
                "stock_bars": {s: len(stock_bars.data.get(s, [])) for s in symbols},
                "crypto_bars": len(crypto_bars.data.get("BTC/USD", [])),
            }
        )
    )


if __name__ == "__main__":
    main()
