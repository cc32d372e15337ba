"""The bottom layer: counters, beat's heartbeat, the one Redis client factory and the client's address behind
our proxies; imports no app and no config."""
