"""Paper-study tools, each runnable as `python -m jaxadv.tools.<name>`:
robust accuracy vs eps (sweep), black-box transfer matrices (transfer),
attacker strength (attacker_strength), staleness (staleness), GREAT's
Table 1 (great_table), saliency maps (saliency) and --mode viz (viz)."""
