"""Paper-study tools, each runnable as `python -m jaxadv.tools.<name>`:
robust accuracy vs eps (sweep), black-box transfer matrices (transfer),
attacker strength (attacker_strength), GREAT's Table 1 (great_table) and
saliency maps (saliency)."""
