"""Offline algorithms: small modules of pure functions (init, loss, act) over the shared Sable network."""
