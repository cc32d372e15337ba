"""Broker adapters: the contract, the shared HTTP and rate-limit layers, one module per broker."""
