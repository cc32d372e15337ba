"""The bottom layer: counters, beat's heartbeat and the one Redis client factory; imports no app and no config."""
