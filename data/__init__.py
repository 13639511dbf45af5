"""nanoalign data: the assistant world (world.py), our BPE tokenizer (tokenizer.py),
HH-RLHF loading (hh.py), prepared token streams (prepare.py) and the calibration metrics
shared by the scripts (calibration.py)."""
