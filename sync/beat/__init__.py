"""Beat: the scheduler that sends each connection's sync on time, and the lease that lets one of two beats send."""
