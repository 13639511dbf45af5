"""nanoalign data: the assistant world (world.py), our BPE tokenizer (tokenizer.py),
HH-RLHF loading (hh.py) and prepared token streams (prepare.py)."""
