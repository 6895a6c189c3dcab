"""Offline algorithms: the protocol the engine runs (``protocol``), names to builders (``registry``),
the shared Sable pieces (``common``, ``reductions``) and one module per algorithm."""
