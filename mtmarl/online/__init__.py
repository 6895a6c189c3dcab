"""Online MARL (Anakin-style MAPPO) used to collect the offline datasets and reference returns."""
