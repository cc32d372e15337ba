"""The ccxt family: about 95 crypto exchanges as providers, one class each, from one catalog (exchanges.json)."""
